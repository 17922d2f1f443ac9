//! `attach` and `detach` (issue 5) against the kernel: the daemon's worker ([`Service`]) runs
//! in-process with the real link backend, in a fresh network namespace (the "host"), and
//! plugs in a "container": an `unshare -n sleep 60` child, known by its pid. Everything is
//! read back with `ip -j` (inside the container through `nsenter --net=`), never through the
//! backend under test.
//!
//! iptables is off (the firewall is issue 4's and has its own tests); the bridge, the veth
//! pair, the container's addresses and routes are all real. The link backend is the one
//! compiled in: `cargo test -p dockerd-net --no-default-features --features ioctl` runs the
//! same checks on the ioctl backend.

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command as Process, Stdio};
use std::time::{Duration, Instant};

use dockerd_net::api;
use dockerd_net::backend::Backends;
use dockerd_net::daemon::proxy::NoProxies;
use dockerd_net::daemon::reaper::Reaper;
use dockerd_net::daemon::service::{Command, Reply, Service, ServiceError, Setup};
use dockerd_net::daemon::store;
use netcore::config::Config;
use serde_json::Value;
use testns::TempDir;
use testns::{ip_link, run, try_run};

/// A process in a network namespace of its own, killed on drop.
struct Container {
    child: Child,
}

impl Container {
    fn start() -> Self {
        let ours = std::fs::read_link("/proc/thread-self/ns/net").expect("our namespace");
        let child = Process::new("unshare")
            .args(["-n", "sleep", "60"])
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn unshare -n sleep 60");
        let c = Container { child };
        // Until unshare has run, the child is still in our namespace.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match std::fs::read_link(c.netns()) {
                Ok(ns) if ns != ours => return c,
                _ if Instant::now() > deadline => panic!("the container never left our namespace"),
                _ => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    }

    fn pid(&self) -> String {
        self.child.id().to_string()
    }

    fn netns(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/ns/net", self.child.id()))
    }

    /// `ip -j ARGS` inside the container.
    fn ip(&self, args: &[&str]) -> Vec<Value> {
        let ns = format!("--net={}", self.netns().display());
        let mut argv = vec!["nsenter", ns.as_str(), "ip", "-j"];
        argv.extend_from_slice(args);
        let out = run(&argv);
        serde_json::from_str::<Value>(&out)
            .ok()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
    }

    fn link(&self, name: &str) -> Option<Value> {
        self.ip(&["addr", "show"])
            .into_iter()
            .find(|l| l["ifname"] == name)
    }

    fn kill(&mut self) {
        // Our own child, by its pid.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A temporary directory, removed when dropped.
fn tmp(tag: &str) -> TempDir {
    TempDir::new(&format!("dockerd-net-attach-kernel-{tag}"))
}

fn setup(dir: &Path, userland_proxy: bool) -> Setup {
    Setup {
        config: Config {
            iptables: false,
            ip_masq: false,
            userland_proxy,
            ..Config::default()
        },
        data_root: dir.to_path_buf(),
        resolv_conf: dir.join("no-resolv.conf"),
        store: store::Options::default(),
    }
}

fn start(s: &Setup) -> Service {
    let b = Backends::open("auto", false, netcore::config::FirewallBackend::Iptables)
        .expect("backends");
    let reaper = Reaper::start().expect("the reaper starts");
    Service::start(s, b, Box::new(NoProxies), reaper).expect("starts")
}

fn attach(svc: &mut Service, id: &str, netns: &str) -> Result<(api::Attached, bool), ServiceError> {
    let cmd = Command::try_from(api::Attach {
        id: id.into(),
        netns: netns.into(),
        ifname: None,
    })?;
    match svc.handle(cmd)? {
        Reply::Attached { attached, created } => Ok((attached, created)),
        other => panic!("{other:?}"),
    }
}

/// Detaches `id` and waits until the reaper has deleted its veth pair.
fn detach(svc: &mut Service, id: &str) -> api::Detached {
    match svc.handle(Command::Detach {
        id: id.into(),
        wait: true,
    }) {
        Ok(Reply::Detached(d)) => d,
        other => panic!("{other:?}"),
    }
}

fn flags(link: &Value) -> Vec<String> {
    link["flags"]
        .as_array()
        .map(|f| {
            f.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn inet(link: &Value) -> Vec<String> {
    link["addr_info"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["family"] == "inet")
        .map(|a| {
            format!(
                "{}/{}",
                a["local"].as_str().unwrap_or_default(),
                a["prefixlen"]
            )
        })
        .collect()
}

fn host_veths() -> Vec<String> {
    let out = run(&["ip", "-j", "link", "show", "type", "veth"]);
    serde_json::from_str::<Value>(if out.trim().is_empty() { "[]" } else { &out })
        .ok()
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|l| l["ifname"].as_str().map(str::to_owned))
        .collect()
}

/// Polls for at most five seconds (the kernel destroys a dead namespace asynchronously).
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !f() {
        assert!(Instant::now() < deadline, "{what}: not within 5s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn attach_plugs_a_real_namespace_in_and_detach_leaves_no_veth() {
    if !testns::can_run_kernel_tests("attach_plugs_a_real_namespace_in_and_detach_leaves_no_veth") {
        return;
    }
    testns::in_netns(|| {
        let t = tmp("plug");
        let s = setup(t.path(), true);
        let mut svc = start(&s);
        let mut ctr = Container::start();

        // A process id stands for its namespace.
        let (a, created) = attach(&mut svc, "c1", &ctr.pid()).expect("attaches");
        assert!(created);
        assert_eq!(a.netns, ctr.netns().display().to_string());
        assert_eq!((a.ifname.as_str(), a.mtu), ("eth0", 1500));
        let gateway = a.interface.gateway.to_string();
        assert_eq!(gateway, "172.17.42.1");

        // The host end: a port of docker0, up, not in hairpin mode (userland proxy on).
        let host = ip_link(&a.host_veth).expect("host veth");
        assert_eq!(host["master"], "docker0", "{host}");
        assert!(flags(&host).contains(&"UP".to_owned()), "{host}");
        assert_eq!(host["mtu"], 1500);
        assert_eq!(
            host["linkinfo"]["info_slave_data"]["hairpin"],
            Value::Bool(false),
            "{host}"
        );

        // Inside: eth0 with the MAC and IP, up; lo up; the default route via the gateway.
        let eth0 = ctr.link("eth0").expect("eth0 in the container");
        assert_eq!(eth0["address"], a.interface.mac.to_string());
        assert_eq!(inet(&eth0), vec![format!("{}/16", a.interface.ip)]);
        assert!(flags(&eth0).contains(&"UP".to_owned()), "{eth0}");
        assert_eq!(eth0["mtu"], 1500);
        let lo = ctr.link("lo").expect("lo");
        assert!(flags(&lo).contains(&"UP".to_owned()), "{lo}");
        let routes = ctr.ip(&["route", "show"]);
        assert!(
            routes.iter().any(|r| r["dst"] == "default"
                && r["gateway"] == gateway.as_str()
                && r["dev"] == "eth0"),
            "{routes:?}"
        );

        // Traffic: the container reaches the bridge's address.
        let listener = TcpListener::bind((a.interface.gateway, 0)).expect("listen on docker0");
        let port = listener.local_addr().expect("addr").port();
        let ns = format!("--net={}", ctr.netns().display());
        let script = format!("exec 3<>/dev/tcp/{gateway}/{port}; echo hello >&3");
        run(&["nsenter", ns.as_str(), "bash", "-c", script.as_str()]);
        let (mut conn, peer) = listener.accept().expect("accept");
        assert_eq!(peer.ip(), a.interface.ip);
        conn.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut got = String::new();
        conn.read_to_string(&mut got).expect("read");
        assert_eq!(got, "hello\n");
        // Closed now: the container's end, half-closed, would otherwise wait in FIN_WAIT_2
        // and keep its namespace alive after the container exits.
        drop(conn);
        drop(listener);

        // Again: the same attachment, nothing re-created.
        let index = host["ifindex"].clone();
        assert_eq!(
            attach(&mut svc, "c1", &ctr.netns().display().to_string()).expect("again"),
            (a.clone(), false)
        );
        assert_eq!(ip_link(&a.host_veth).expect("veth")["ifindex"], index);
        // Another namespace for it is a conflict; a missing one is 404, before anything.
        let other = Container::start();
        let e = attach(&mut svc, "c1", &other.pid()).expect_err("conflict");
        assert!(matches!(e, ServiceError::Conflict(_)), "{e:?}");
        let e = attach(&mut svc, "c9", "999999999").expect_err("missing");
        assert_eq!(
            e,
            ServiceError::NotFound("network namespace /proc/999999999/ns/net not found".into())
        );
        let e = attach(&mut svc, "c9", "/proc/self/ns/uts").expect_err("not a netns");
        assert!(matches!(e, ServiceError::BadInput(_)), "{e:?}");
        assert!(!svc.network().endpoints().contains_key("c9"));

        // A restart keeps the attachment and re-creates nothing.
        drop(svc);
        let mut svc = start(&s);
        assert!(svc.attachments().contains_key("c1"));
        assert_eq!(ip_link(&a.host_veth).expect("veth")["ifindex"], index);

        // Detach: no veth left, inside or out; the IP released (attach allocated it).
        let d = detach(&mut svc, "c1");
        assert!(d.detached, "{d:?}");
        assert_eq!(d.released.as_ref().map(|r| r.ip), Some(a.interface.ip));
        assert!(host_veths().is_empty(), "{:?}", host_veths());
        assert!(ctr.link("eth0").is_none());
        assert!(!detach(&mut svc, "c1").detached, "nothing left to detach");

        // The container exits: the kernel deletes the pair with its namespace; the record
        // stays until detach, which then releases the IP.
        let (a2, _) = attach(&mut svc, "c2", &ctr.pid()).expect("attaches");
        ctr.kill();
        eventually("the veth goes with the namespace", || {
            ip_link(&a2.host_veth).is_none()
        });
        assert!(svc.attachments().contains_key("c2"));
        let d = detach(&mut svc, "c2");
        assert!(d.detached && d.released.is_some(), "{d:?}");
        assert!(svc.network().endpoints().is_empty());
    });
}

#[test]
fn hairpin_mode_and_teardown_on_a_real_bridge() {
    if !testns::can_run_kernel_tests("hairpin_mode_and_teardown_on_a_real_bridge") {
        return;
    }
    testns::in_netns(|| {
        let t = tmp("hairpin");
        let s = setup(t.path(), false);
        let mut svc = start(&s);
        let ctr = Container::start();
        let (a, _) = attach(&mut svc, "c1", &ctr.netns().display().to_string()).expect("attaches");
        let host = ip_link(&a.host_veth).expect("host veth");
        assert_eq!(
            host["linkinfo"]["info_slave_data"]["hairpin"],
            Value::Bool(true),
            "--userland-proxy=false: {host}"
        );
        drop(svc);

        // teardown deletes the recorded veths with the bridge.
        let data_root = t.path().display().to_string();
        let resolv = t.path().join("no-resolv.conf").display().to_string();
        let (ok, out) = try_run(&[
            env!("CARGO_BIN_EXE_dockerd-net"),
            "--data-root",
            &data_root,
            "--resolv-conf",
            &resolv,
            "teardown",
        ]);
        assert!(ok, "{out}");
        assert!(
            out.contains(&format!("deleted {} (c1's veth)", a.host_veth)),
            "{out}"
        );
        assert!(ip_link(&a.host_veth).is_none());
        assert!(ip_link("docker0").is_none());
        assert!(ctr.link("eth0").is_none());
    });
}
