//! The ioctl backend's `AttachOps` (and `new_in`) against the kernel. Each test works in a
//! private network namespace (`in_netns`) and, for the container, a second one held by a
//! child `unshare -n sleep 60`, inspected with `nsenter --net=/proc/<pid>/ns/net ip ...`.

use std::fs;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use backend_ioctl::IoctlLinks;
use ipnet::Ipv4Net;
use netcore::attach::{AttachRequest, apply, plan};
use netcore::mac::MacAddr;
use netcore::ops::{AttachOps, LinkOps, OpsErrorKind, RouteV4, VethSpec};
use testns::{in_netns, ip_link, ip_routes4, run};

const MAC: MacAddr = MacAddr([0x02, 0x42, 0xac, 0x11, 0x00, 0x02]);

/// A process in a network namespace of its own, standing in for a container. Killed on drop,
/// so a failing test leaves nothing running.
struct Container {
    child: Child,
    ns: PathBuf,
}

impl Container {
    fn start() -> Self {
        let child = Command::new("unshare")
            .args(["-n", "sleep", "60"])
            .spawn()
            .expect("spawn unshare -n sleep 60");
        let pid = child.id();
        // Owned from here on: a failure below still kills and reaps it (Drop).
        let ctr = Self {
            child,
            ns: PathBuf::from(format!("/proc/{pid}/ns/net")),
        };
        let comm = format!("/proc/{pid}/comm");
        // unshare(1) enters the new namespace and then execs sleep: once the process is
        // `sleep`, /proc/<pid>/ns/net is the new namespace.
        for _ in 0..2000 {
            if fs::read_to_string(&comm).is_ok_and(|c| c.trim() == "sleep") {
                let mine = fs::read_link("/proc/thread-self/ns/net").expect("own netns");
                let theirs = fs::read_link(&ctr.ns).expect("child netns");
                assert_ne!(mine, theirs, "unshare -n did not make a namespace");
                return ctr;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        panic!("unshare -n sleep 60 (pid {pid}) never became sleep");
    }

    /// `ip ARGS` inside the container's namespace.
    fn ip(&self, args: &[&str]) -> String {
        let net = format!("--net={}", self.ns.display());
        let mut argv = vec!["nsenter", net.as_str(), "ip"];
        argv.extend_from_slice(args);
        run(&argv)
    }

    fn ip_json(&self, args: &[&str]) -> Vec<serde_json::Value> {
        let out = self.ip(args);
        if out.trim().is_empty() {
            return Vec::new();
        }
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("bad JSON from ip: {e}: {out}"))
    }

    /// `ip -j -d link show`, one link, or `None`.
    fn link(&self, name: &str) -> Option<serde_json::Value> {
        self.ip_json(&["-j", "-d", "link", "show"])
            .into_iter()
            .find(|l| l["ifname"] == name)
    }

    fn routes(&self) -> Vec<serde_json::Value> {
        self.ip_json(&["-j", "-4", "route", "show", "table", "main"])
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn veth(host: &str, peer: &str, ns: &Path, mtu: u32) -> VethSpec {
    VethSpec {
        host: host.into(),
        peer: peer.into(),
        peer_netns: ns.to_path_buf(),
        peer_mac: MAC,
        mtu,
    }
}

fn is_up(link: &serde_json::Value) -> bool {
    link["flags"]
        .as_array()
        .is_some_and(|f| f.iter().any(|x| x == "UP"))
}

fn net(s: &str) -> Ipv4Net {
    s.parse().expect("test network")
}

#[test]
fn veth_peer_is_born_in_the_container_with_its_mac_and_mtu() {
    if !testns::can_run_kernel_tests("veth_peer_is_born_in_the_container_with_its_mac_and_mtu") {
        return;
    }
    in_netns(|| {
        let ctr = Container::start();
        let mut host = IoctlLinks::new().expect("sockets");
        host.create_veth(&veth("vethio0", "eth0", &ctr.ns, 1450))
            .expect("create veth");

        let h = ip_link("vethio0").expect("host end here");
        assert_eq!(h["linkinfo"]["info_kind"], "veth", "{h}");
        assert_eq!(h["mtu"], 1450, "{h}");
        assert!(!is_up(&h), "created down: {h}");
        assert_ne!(
            h["address"],
            MAC.to_string(),
            "the host end has its own MAC"
        );
        // The peer lives in another namespace, which `ip` shows as a link-netnsid.
        assert!(h.get("link_netnsid").is_some(), "peer is elsewhere: {h}");
        assert!(
            ip_link("eth0").is_none(),
            "peer must not be in the host namespace"
        );

        let p = ctr.link("eth0").expect("peer inside the container");
        assert_eq!(p["address"], "02:42:ac:11:00:02", "{p}");
        assert_eq!(p["mtu"], 1450, "{p}");
        assert_eq!(p["linkinfo"]["info_kind"], "veth", "{p}");
        assert!(!is_up(&p), "created down: {p}");
    });
}

#[test]
fn set_master_puts_the_port_on_the_bridge() {
    if !testns::can_run_kernel_tests("set_master_puts_the_port_on_the_bridge") {
        return;
    }
    in_netns(|| {
        let ctr = Container::start();
        let mut host = IoctlLinks::new().expect("sockets");
        run(&["ip", "link", "add", "iobr0", "type", "bridge"]);
        run(&["ip", "link", "add", "iobr1", "type", "bridge"]);
        host.create_veth(&veth("vethio0", "eth0", &ctr.ns, 1500))
            .expect("create veth");
        assert!(ip_link("vethio0").expect("veth").get("master").is_none());

        host.set_master("vethio0", "iobr0").expect("set master");
        assert_eq!(ip_link("vethio0").expect("veth")["master"], "iobr0");
        // Again, same bridge: nothing to do (the kernel's EBUSY is recognised).
        host.set_master("vethio0", "iobr0").expect("idempotent");
        assert_eq!(ip_link("vethio0").expect("veth")["master"], "iobr0");
        // Another bridge: SIOCBRADDIF cannot move a port; refused, nothing changes.
        let err = host
            .set_master("vethio0", "iobr1")
            .expect_err("other bridge");
        assert_eq!(err.kind, OpsErrorKind::Other, "{err}");
        assert!(err.to_string().contains("already has a master"), "{err}");
        assert_eq!(ip_link("vethio0").expect("veth")["master"], "iobr0");

        // A master that is not a bridge.
        run(&[
            "ip", "link", "add", "iov0", "type", "veth", "peer", "name", "iov1",
        ]);
        let err = host.set_master("iov0", "iov1").expect_err("not a bridge");
        assert_eq!(err.kind, OpsErrorKind::Other, "{err}");
        assert!(err.to_string().contains("iov1 is not a bridge"), "{err}");
        assert!(ip_link("iov0").expect("veth").get("master").is_none());

        // Missing links are NotFound, naming the missing one.
        let err = host.set_master("vethio0", "nobr0").expect_err("no bridge");
        assert_eq!(err.kind, OpsErrorKind::NotFound, "{err}");
        assert!(err.to_string().contains("no link named nobr0"), "{err}");
        let err = host.set_master("noveth0", "iobr0").expect_err("no port");
        assert_eq!(err.kind, OpsErrorKind::NotFound, "{err}");
        assert!(err.to_string().contains("no link named noveth0"), "{err}");
    });
}

#[test]
fn hairpin_is_the_bridge_port_flag() {
    if !testns::can_run_kernel_tests("hairpin_is_the_bridge_port_flag") {
        return;
    }
    in_netns(|| {
        let ctr = Container::start();
        let mut host = IoctlLinks::new().expect("sockets");
        run(&["ip", "link", "add", "iobr0", "type", "bridge"]);
        host.create_veth(&veth("vethio0", "eth0", &ctr.ns, 1500))
            .expect("create veth");

        // Not a port yet: refused.
        let err = host.set_hairpin("vethio0", true).expect_err("not a port");
        assert_eq!(err.kind, OpsErrorKind::Other, "{err}");
        assert!(err.to_string().contains("not a bridge port"), "{err}");

        host.set_master("vethio0", "iobr0").expect("set master");
        let slave = |l: serde_json::Value| l["linkinfo"]["info_slave_data"].clone();
        let before = slave(ip_link("vethio0").expect("veth"));
        assert_eq!(before["hairpin"], false, "{before}");

        host.set_hairpin("vethio0", true).expect("hairpin on");
        let on = slave(ip_link("vethio0").expect("veth"));
        assert_eq!(on["hairpin"], true, "{on}");
        // Only the hairpin flag changed: without NLA_F_NESTED the bridge would have read
        // the attribute as an STP port state.
        assert_eq!(on["state"], before["state"], "{on}");
        assert_eq!(on["learning"], before["learning"], "{on}");

        host.set_hairpin("vethio0", false).expect("hairpin off");
        let off = slave(ip_link("vethio0").expect("veth"));
        assert_eq!(off["hairpin"], false, "{off}");

        let err = host.set_hairpin("noveth0", true).expect_err("missing");
        assert_eq!(err.kind, OpsErrorKind::NotFound, "{err}");
    });
}

#[test]
fn new_in_adds_routes_inside_the_container() {
    if !testns::can_run_kernel_tests("new_in_adds_routes_inside_the_container") {
        return;
    }
    in_netns(|| {
        let ctr = Container::start();
        let mut host = IoctlLinks::new().expect("sockets");
        host.create_veth(&veth("vethio0", "eth0", &ctr.ns, 1500))
            .expect("create veth");
        host.set_up("vethio0").expect("host end up");

        let mut inside = IoctlLinks::new_in(&ctr.ns).expect("sockets in the container");
        inside.set_up("eth0").expect("eth0 up");
        inside
            .add_addr("eth0", net("10.9.0.2/24"))
            .expect("address");
        let default = RouteV4 {
            dst: None,
            gateway: Some(Ipv4Addr::new(10, 9, 0, 1)),
            oif: None,
        };
        inside.add_route(&default).expect("default route");

        let routes = ctr.routes();
        let d = routes
            .iter()
            .find(|r| r["dst"] == "default")
            .unwrap_or_else(|| panic!("no default route in the container: {routes:?}"));
        assert_eq!(
            (&d["gateway"], &d["dev"]),
            (&"10.9.0.1".into(), &"eth0".into())
        );
        assert!(
            ip_routes4().iter().all(|r| r["dst"] != "default"),
            "the route went to the host namespace"
        );

        // The same route again.
        let err = inside.add_route(&default).expect_err("duplicate");
        assert_eq!(err.kind, OpsErrorKind::AlreadyExists, "{err}");

        // A device route: `oif` is the container's index of eth0, given to the kernel by
        // name (SIOCGIFNAME, in the container's namespace).
        let eth0 = ctr.link("eth0").expect("eth0");
        let index = u32::try_from(eth0["ifindex"].as_u64().expect("ifindex")).expect("u32");
        inside
            .add_route(&RouteV4 {
                dst: Some(net("10.10.0.0/16")),
                gateway: None,
                oif: Some(index),
            })
            .expect("device route");
        let routes = ctr.routes();
        let r = routes
            .iter()
            .find(|r| r["dst"] == "10.10.0.0/16")
            .unwrap_or_else(|| panic!("no 10.10.0.0/16: {routes:?}"));
        assert_eq!(r["dev"], "eth0", "{r}");
        assert!(r.get("gateway").is_none(), "{r}");

        let err = inside
            .add_route(&RouteV4 {
                dst: Some(net("10.11.0.0/16")),
                gateway: None,
                oif: Some(9999),
            })
            .expect_err("no such index");
        assert_eq!(err.kind, OpsErrorKind::NotFound, "{err}");
        // A gateway with no route to it.
        let err = inside
            .add_route(&RouteV4 {
                dst: Some(net("10.12.0.0/16")),
                gateway: Some(Ipv4Addr::new(192, 168, 77, 1)),
                oif: None,
            })
            .expect_err("unreachable gateway");
        assert!(
            err.to_string()
                .starts_with("add route 10.12.0.0/16 via 192.168.77.1: ")
        );
        assert!(
            !ctr.routes().iter().any(|r| r["dst"] == "10.12.0.0/16"),
            "refused route was added"
        );

        // Reading /proc from this thread would describe the test's namespace, not the
        // sockets': refused.
        let err = inside.links().expect_err("foreign thread");
        assert!(err.to_string().contains("network namespace"), "{err}");
    });
}

#[test]
fn new_in_reads_links_from_a_thread_inside_the_namespace() {
    if !testns::can_run_kernel_tests("new_in_reads_links_from_a_thread_inside_the_namespace") {
        return;
    }
    in_netns(|| {
        let ctr = Container::start();
        let mut host = IoctlLinks::new().expect("sockets");
        host.create_veth(&veth("vethio0", "eth0", &ctr.ns, 1400))
            .expect("create veth");
        let mut inside = IoctlLinks::new_in(&ctr.ns).expect("sockets in the container");
        let ns = fs::File::open(&ctr.ns).expect("open netns");
        let links = std::thread::spawn(move || {
            // SAFETY: setns on this short-lived test thread only; `ns` is open.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            inside.links()
        })
        .join()
        .expect("thread")
        .expect("links from inside");
        let names: Vec<&str> = links.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["lo", "eth0"]);
        let eth0 = &links[1];
        assert_eq!((eth0.mac, eth0.mtu), (Some(MAC), 1400));
        assert_eq!(eth0.kind.as_deref(), Some("veth"));
    });
}

#[test]
fn full_attach_through_netcore() {
    if !testns::can_run_kernel_tests("full_attach_through_netcore") {
        return;
    }
    in_netns(|| {
        let ctr = Container::start();
        run(&["ip", "link", "add", "iobr0", "type", "bridge"]);
        run(&["ip", "addr", "add", "172.30.0.1/16", "dev", "iobr0"]);
        run(&["ip", "link", "set", "iobr0", "up"]);
        let mut host = IoctlLinks::new().expect("sockets");
        let mut inside = IoctlLinks::new_in(&ctr.ns).expect("sockets in the container");
        let req = AttachRequest {
            bridge: "iobr0".into(),
            host_veth: "vethio0".into(),
            netns: ctr.ns.clone(),
            ifname: "eth0".into(),
            ip: Ipv4Addr::new(172, 30, 0, 2),
            prefix_len: 16,
            gateway: Ipv4Addr::new(172, 30, 0, 1),
            mac: MAC,
            mtu: 1500,
            hairpin: true,
        };
        apply(&plan(&req), &mut host, &mut inside).expect("attach");

        let h = ip_link("vethio0").expect("host end");
        assert_eq!(h["master"], "iobr0", "{h}");
        assert!(is_up(&h), "{h}");
        assert_eq!(h["linkinfo"]["info_slave_data"]["hairpin"], true, "{h}");
        let lo = ctr.link("lo").expect("lo");
        assert!(is_up(&lo), "{lo}");
        let e = ctr.link("eth0").expect("eth0");
        assert!(is_up(&e), "{e}");
        assert_eq!(e["address"], "02:42:ac:11:00:02");
        let addrs = ctr.ip_json(&["-j", "-4", "addr", "show", "dev", "eth0"]);
        let a = &addrs[0]["addr_info"][0];
        assert_eq!(
            (&a["local"], &a["prefixlen"]),
            (&"172.30.0.2".into(), &16.into())
        );
        let routes = ctr.routes();
        assert!(
            routes
                .iter()
                .any(|r| r["dst"] == "default" && r["gateway"] == "172.30.0.1"),
            "{routes:?}"
        );
    });
}

#[test]
fn create_veth_errors() {
    if !testns::can_run_kernel_tests("create_veth_errors") {
        return;
    }
    in_netns(|| {
        let ctr = Container::start();
        let mut host = IoctlLinks::new().expect("sockets");

        let missing = Path::new("/proc/nonexistent/ns/net");
        let err = host
            .create_veth(&veth("vethio0", "eth0", missing, 1500))
            .expect_err("missing namespace");
        assert_eq!(err.kind, OpsErrorKind::NotFound, "{err}");
        assert!(
            err.to_string().contains("open /proc/nonexistent/ns/net"),
            "{err}"
        );
        assert!(ip_link("vethio0").is_none());

        // A file that is not a namespace, and a namespace of another type: refused before
        // the request, with a message rather than the kernel's bare EINVAL.
        for path in ["/proc/self/stat", "/proc/self/ns/uts"] {
            let err = host
                .create_veth(&veth("vethio0", "eth0", Path::new(path), 1500))
                .expect_err(path);
            assert_eq!(err.kind, OpsErrorKind::Other, "{err}");
            assert!(
                err.to_string()
                    .contains(&format!("{path} is not a network namespace")),
                "{err}"
            );
            assert!(ip_link("vethio0").is_none());
        }

        host.create_veth(&veth("vethio0", "eth0", &ctr.ns, 1500))
            .expect("create veth");
        // The peer's name is taken in the container.
        let err = host
            .create_veth(&veth("vethio1", "eth0", &ctr.ns, 1500))
            .expect_err("peer exists");
        assert_eq!(err.kind, OpsErrorKind::AlreadyExists, "{err}");
        assert!(ip_link("vethio1").is_none(), "half a pair left behind");
        // The host end's name is taken here.
        let err = host
            .create_veth(&veth("vethio0", "eth1", &ctr.ns, 1500))
            .expect_err("host end exists");
        assert_eq!(err.kind, OpsErrorKind::AlreadyExists, "{err}");
        assert!(ctr.link("eth1").is_none(), "half a pair left behind");

        // Names are checked before anything reaches the kernel.
        let err = host
            .create_veth(&veth("vethio0123456789", "eth2", &ctr.ns, 1500))
            .expect_err("long name");
        assert_eq!(err.kind, OpsErrorKind::Other, "{err}");
        assert!(ctr.link("eth2").is_none());
    });
}

#[test]
fn new_in_errors() {
    if !testns::can_run_kernel_tests("new_in_errors") {
        return;
    }
    let err = IoctlLinks::new_in(Path::new("/run/netns/no-such-ns")).expect_err("missing");
    assert_eq!(err.kind, OpsErrorKind::NotFound, "{err}");
    assert!(err.to_string().contains("/run/netns/no-such-ns"), "{err}");
    for path in ["/proc/self/stat", "/proc/self/ns/uts"] {
        let err = IoctlLinks::new_in(Path::new(path)).expect_err(path);
        assert_eq!(err.kind, OpsErrorKind::Other, "{err}");
        assert!(
            err.to_string()
                .contains(&format!("{path} is not a network namespace")),
            "{err}"
        );
    }
}
