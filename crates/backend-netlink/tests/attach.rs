//! NetlinkLinks' `AttachOps` and `new_in` against a real kernel. Each test runs in a network
//! namespace of its own (the "host", `testns::in_netns`) and makes a second one for the
//! "container" ([`Container`]); what the kernel did is read back with `ip -j`, run in the
//! right namespace, never through the backend under test.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::thread::{self};

use backend_netlink::NetlinkLinks;
use netcore::mac::MacAddr;
use netcore::ops::{AttachOps, LinkOps, OpsErrorKind, RouteV4, VethSpec};
use serde_json::Value;
use testns::{Netns as Container, in_netns, ip_addrs4, ip_link, ip_links, ip_routes4, run};

fn names() -> Vec<String> {
    ip_links()
        .iter()
        .map(|l| l["ifname"].as_str().unwrap().to_owned())
        .collect()
}

fn is_up(link: &Value) -> bool {
    link["flags"].as_array().unwrap().iter().any(|f| f == "UP")
}

const MAC: MacAddr = MacAddr([0x02, 0x42, 0xac, 0x11, 0x00, 0x02]);

fn veth(ctr: &Container, host: &str, peer: &str, mtu: u32) -> VethSpec {
    VethSpec {
        host: host.into(),
        peer: peer.into(),
        peer_netns: ctr.path().to_path_buf(),
        peer_mac: MAC,
        mtu,
    }
}

fn ns_inode(path: &str) -> u64 {
    std::fs::metadata(path).unwrap().ino()
}

#[test]
fn create_veth_puts_the_peer_directly_in_the_container() {
    if !testns::can_run_kernel_tests("create_veth_puts_the_peer_directly_in_the_container") {
        return;
    }
    in_netns(|| {
        let ctr = Container::new();
        let mut nl = NetlinkLinks::new().unwrap();
        nl.create_veth(&veth(&ctr, "vethnl0", "ceth0", 1450))
            .unwrap();

        let host = ip_link("vethnl0").expect("host end in the host namespace");
        assert_eq!(host["linkinfo"]["info_kind"], "veth", "{host}");
        assert_eq!(host["mtu"], 1450, "{host}");
        assert!(!is_up(&host), "host end down: {host}");
        // Its peer lives in another namespace (`link_netnsid` is only set for that).
        assert!(host.get("link_netnsid").is_some(), "{host}");
        assert_ne!(host["address"], MAC.to_string(), "the MAC is the peer's");
        assert_eq!(names(), ["lo", "vethnl0"], "no peer in the host namespace");

        ctr.run(|| {
            let peer = ip_link("ceth0").expect("peer in the container");
            assert_eq!(peer["linkinfo"]["info_kind"], "veth", "{peer}");
            assert_eq!(peer["address"], MAC.to_string(), "{peer}");
            assert_eq!(peer["mtu"], 1450, "{peer}");
            assert!(!is_up(&peer), "peer down: {peer}");
            assert!(ip_addrs4("ceth0").is_empty());
            assert_eq!(names(), ["lo", "ceth0"], "no host end in the container");
        });
    });
}

#[test]
fn peer_name_taken_in_the_container_is_already_exists_naming_the_namespace() {
    if !testns::can_run_kernel_tests(
        "peer_name_taken_in_the_container_is_already_exists_naming_the_namespace",
    ) {
        return;
    }
    in_netns(|| {
        let ctr = Container::new();
        ctr.run(|| run(&["ip", "link", "add", "ceth0", "type", "bridge"]));
        let mut nl = NetlinkLinks::new().unwrap();
        let err = nl
            .create_veth(&veth(&ctr, "vethnl0", "ceth0", 1500))
            .unwrap_err();
        assert_eq!(err.kind, OpsErrorKind::AlreadyExists, "{err}");
        assert_eq!(
            err.to_string(),
            format!(
                "create veth vethnl0 with peer ceth0 in {}: File exists (os error 17)",
                ctr.path().display()
            )
        );
        assert_eq!(names(), ["lo"], "no host end left behind");
        ctr.run(|| {
            assert_eq!(names(), ["lo", "ceth0"]);
            assert_eq!(ip_link("ceth0").unwrap()["linkinfo"]["info_kind"], "bridge");
        });
        // The same request with a free name works: the failure was about the name only.
        nl.create_veth(&veth(&ctr, "vethnl0", "ceth1", 1500))
            .unwrap();
        ctr.run(|| assert!(ip_link("ceth1").is_some()));
    });
}

#[test]
fn host_name_taken_is_already_exists_and_creates_no_peer() {
    if !testns::can_run_kernel_tests("host_name_taken_is_already_exists_and_creates_no_peer") {
        return;
    }
    in_netns(|| {
        let ctr = Container::new();
        run(&["ip", "link", "add", "vethnl0", "type", "bridge"]);
        let mut nl = NetlinkLinks::new().unwrap();
        let err = nl
            .create_veth(&veth(&ctr, "vethnl0", "ceth0", 1500))
            .unwrap_err();
        assert_eq!(err.kind, OpsErrorKind::AlreadyExists, "{err}");
        assert_eq!(
            ip_link("vethnl0").unwrap()["linkinfo"]["info_kind"],
            "bridge"
        );
        ctr.run(|| assert_eq!(names(), ["lo"]));
    });
}

#[test]
fn missing_netns_is_not_found_naming_the_path() {
    if !testns::can_run_kernel_tests("missing_netns_is_not_found_naming_the_path") {
        return;
    }
    in_netns(|| {
        let missing = Path::new("/run/netns-nl-test-missing/ctr0");
        let mut nl = NetlinkLinks::new().unwrap();
        let err = nl
            .create_veth(&VethSpec {
                host: "vethnl0".into(),
                peer: "ceth0".into(),
                peer_netns: missing.into(),
                peer_mac: MAC,
                mtu: 1500,
            })
            .unwrap_err();
        assert_eq!(err.kind, OpsErrorKind::NotFound, "{err}");
        assert!(err.to_string().contains(missing.to_str().unwrap()), "{err}");
        assert_eq!(names(), ["lo"]);

        let err = NetlinkLinks::new_in(missing).unwrap_err();
        assert_eq!(err.kind, OpsErrorKind::NotFound, "{err}");
        assert_eq!(
            err.to_string(),
            format!(
                "open netlink connection in {}: No such file or directory (os error 2)",
                missing.display()
            )
        );
    });
}

#[test]
fn a_file_that_is_not_a_namespace_is_refused() {
    if !testns::can_run_kernel_tests("a_file_that_is_not_a_namespace_is_refused") {
        return;
    }
    in_netns(|| {
        let not_ns = Path::new("/proc/self/status");
        let err = NetlinkLinks::new_in(not_ns).unwrap_err();
        assert_eq!(err.kind, OpsErrorKind::Other, "{err}");
        assert!(
            err.to_string()
                .starts_with("open netlink connection in /proc/self/status: "),
            "{err}"
        );
        let mut nl = NetlinkLinks::new().unwrap();
        let err = nl
            .create_veth(&VethSpec {
                host: "vethnl0".into(),
                peer: "ceth0".into(),
                peer_netns: not_ns.into(),
                peer_mac: MAC,
                mtu: 1500,
            })
            .unwrap_err();
        assert_eq!(err.kind, OpsErrorKind::Other, "{err}");
        assert_eq!(names(), ["lo"]);
    });
}

#[test]
fn long_names_are_refused_before_the_kernel() {
    if !testns::can_run_kernel_tests("long_names_are_refused_before_the_kernel") {
        return;
    }
    in_netns(|| {
        let ctr = Container::new();
        let mut nl = NetlinkLinks::new().unwrap();
        for (host, peer) in [
            ("vethnl0123456789", "ceth0"),
            ("vethnl0", "ceth0123456789ab"),
        ] {
            let err = nl.create_veth(&veth(&ctr, host, peer, 1500)).unwrap_err();
            let long = if host.len() > 15 { host } else { peer };
            assert!(
                err.to_string()
                    .ends_with(&format!("interface name {long} too long")),
                "{err}"
            );
        }
        assert_eq!(names(), ["lo"]);
        ctr.run(|| assert_eq!(names(), ["lo"]));
    });
}

#[test]
fn new_in_talks_to_the_other_namespace_and_leaves_the_caller_where_it_was() {
    if !testns::can_run_kernel_tests(
        "new_in_talks_to_the_other_namespace_and_leaves_the_caller_where_it_was",
    ) {
        return;
    }
    in_netns(|| {
        let ctr = Container::new();
        let before = ns_inode("/proc/thread-self/ns/net");
        let mut inside = NetlinkLinks::new_in(ctr.path()).unwrap();
        assert_eq!(ns_inode("/proc/thread-self/ns/net"), before);
        assert_ne!(ns_inode(ctr.path().to_str().unwrap()), before);

        run(&["ip", "link", "add", "hostonly0", "type", "bridge"]);
        let seen: Vec<String> = inside
            .links()
            .unwrap()
            .into_iter()
            .map(|l| l.name)
            .collect();
        assert_eq!(seen, ["lo"], "the container's links, not the host's");
        inside.set_up("lo").unwrap();
        ctr.run(|| assert!(is_up(&ip_link("lo").unwrap())));

        // The value works from another thread too (it is not tied to the calling thread's
        // namespace, nor to the helper thread that made it).
        thread::scope(|s| {
            s.spawn(|| {
                testns::unshare_net().unwrap();
                inside.set_down("lo").unwrap();
            });
        });
        ctr.run(|| assert!(!is_up(&ip_link("lo").unwrap())));
    });
}

#[test]
fn set_master_enslaves_the_host_end() {
    if !testns::can_run_kernel_tests("set_master_enslaves_the_host_end") {
        return;
    }
    in_netns(|| {
        let ctr = Container::new();
        run(&["ip", "link", "add", "nlbr0", "type", "bridge"]);
        let mut nl = NetlinkLinks::new().unwrap();
        nl.create_veth(&veth(&ctr, "vethnl0", "ceth0", 1500))
            .unwrap();
        assert!(ip_link("vethnl0").unwrap().get("master").is_none());
        nl.set_master("vethnl0", "nlbr0").unwrap();
        let l = ip_link("vethnl0").unwrap();
        assert_eq!(l["master"], "nlbr0", "{l}");
        assert_eq!(l["linkinfo"]["info_slave_kind"], "bridge", "{l}");

        let err = nl.set_master("vethnl0", "nlnosuch0").unwrap_err();
        assert_eq!(err.kind, OpsErrorKind::NotFound, "{err}");
        assert!(
            err.to_string().starts_with("attach vethnl0 to nlnosuch0: "),
            "{err}"
        );
        let err = nl.set_master("nlnosuch1", "nlbr0").unwrap_err();
        assert_eq!(err.kind, OpsErrorKind::NotFound, "{err}");
        assert!(err.to_string().contains("nlnosuch1"), "{err}");
        assert_eq!(ip_link("vethnl0").unwrap()["master"], "nlbr0");
    });
}

#[test]
fn set_hairpin_flips_the_port_flag() {
    if !testns::can_run_kernel_tests("set_hairpin_flips_the_port_flag") {
        return;
    }
    in_netns(|| {
        let ctr = Container::new();
        run(&["ip", "link", "add", "nlbr0", "type", "bridge"]);
        let mut nl = NetlinkLinks::new().unwrap();
        nl.create_veth(&veth(&ctr, "vethnl0", "ceth0", 1500))
            .unwrap();

        // Not a bridge port yet: refused, not ignored.
        let err = nl.set_hairpin("vethnl0", true).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("set hairpin mode on on vethnl0: "),
            "{err}"
        );

        nl.set_master("vethnl0", "nlbr0").unwrap();
        let hairpin =
            || ip_link("vethnl0").unwrap()["linkinfo"]["info_slave_data"]["hairpin"].clone();
        assert_eq!(hairpin(), Value::Bool(false), "kernel default");
        nl.set_hairpin("vethnl0", true).unwrap();
        assert_eq!(hairpin(), Value::Bool(true));
        nl.set_hairpin("vethnl0", false).unwrap();
        assert_eq!(hairpin(), Value::Bool(false));
        let err = nl.set_hairpin("nlnosuch0", true).unwrap_err();
        assert_eq!(err.kind, OpsErrorKind::NotFound, "{err}");
    });
}

#[test]
fn add_route_through_new_in_lands_in_the_container() {
    if !testns::can_run_kernel_tests("add_route_through_new_in_lands_in_the_container") {
        return;
    }
    in_netns(|| {
        let ctr = Container::new();
        let mut host = NetlinkLinks::new().unwrap();
        host.create_veth(&veth(&ctr, "vethnl0", "ceth0", 1500))
            .unwrap();
        host.set_up("vethnl0").unwrap();
        let mut inside = NetlinkLinks::new_in(ctr.path()).unwrap();
        inside
            .add_addr("ceth0", "172.17.0.2/16".parse().unwrap())
            .unwrap();
        inside.set_up("ceth0").unwrap();
        let gw = "172.17.42.1".parse().unwrap();
        inside
            .add_route(&RouteV4 {
                dst: None,
                gateway: Some(gw),
                oif: None,
            })
            .unwrap();
        let ceth0 = ctr.run(|| {
            ip_link("ceth0").unwrap()["ifindex"]
                .as_u64()
                .and_then(|i| u32::try_from(i).ok())
                .unwrap()
        });
        inside
            .add_route(&RouteV4 {
                dst: Some("10.50.0.0/24".parse().unwrap()),
                gateway: None,
                oif: Some(ceth0),
            })
            .unwrap();

        let routes = ctr.run(ip_routes4);
        let default: Vec<&Value> = routes.iter().filter(|r| r["dst"] == "default").collect();
        assert_eq!(default.len(), 1, "{routes:?}");
        assert_eq!(default[0]["gateway"], "172.17.42.1");
        assert_eq!(default[0]["dev"], "ceth0");
        // protocol boot, as `ip route add` makes (ip shows the protocol only when it is not).
        assert!(default[0].get("protocol").is_none(), "{}", default[0]);
        let dev_route = routes
            .iter()
            .find(|r| r["dst"] == "10.50.0.0/24")
            .unwrap_or_else(|| panic!("{routes:?}"));
        assert_eq!(dev_route["dev"], "ceth0");
        assert_eq!(dev_route["scope"], "link");
        assert!(dev_route.get("gateway").is_none());
        assert!(ip_routes4().is_empty(), "nothing in the host namespace");

        let err = inside
            .add_route(&RouteV4 {
                dst: None,
                gateway: Some(gw),
                oif: None,
            })
            .unwrap_err();
        assert_eq!(err.kind, OpsErrorKind::AlreadyExists, "{err}");
        assert!(
            err.to_string()
                .starts_with("add route default via 172.17.42.1: "),
            "{err}"
        );
        let err = inside
            .add_route(&RouteV4 {
                dst: Some("10.60.0.0/16".parse().unwrap()),
                gateway: Some("10.9.9.9".parse().unwrap()),
                oif: None,
            })
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "add route 10.60.0.0/16 via 10.9.9.9: Network is unreachable (os error 101)"
        );
        assert_eq!(ctr.run(ip_routes4).len(), routes.len());
    });
}

/// The host end with IPv6 off gets neither a link-local address nor the `ff00::/8` multicast
/// route that every link with IPv6 gets when its carrier comes up (the route whose insertion
/// walks all the other veths' on a bridge with N containers). A twin veth without it shows
/// the difference is real; the kernel adds that route asynchronously, hence the wait.
#[test]
fn disable_ipv6_on_the_host_end_leaves_it_without_ipv6_routes() {
    if !testns::can_run_kernel_tests("disable_ipv6_on_the_host_end_leaves_it_without_ipv6_routes") {
        return;
    }
    in_netns(|| {
        let (ctr_a, ctr_b) = (Container::new(), Container::new());
        let mut nl = NetlinkLinks::new().unwrap();
        nl.create_veth(&veth(&ctr_a, "vethv6a", "ceth0", 1500))
            .unwrap();
        nl.create_veth(&veth(&ctr_b, "vethv6b", "ceth0", 1500))
            .unwrap();
        assert_eq!(testns::disable_ipv6("vethv6a"), "0");
        nl.disable_ipv6("vethv6a").unwrap();
        assert_eq!(testns::disable_ipv6("vethv6a"), "1");
        assert_eq!(
            testns::disable_ipv6("vethv6b"),
            "0",
            "only the link asked for"
        );

        for (ctr, link) in [(&ctr_a, "vethv6a"), (&ctr_b, "vethv6b")] {
            nl.set_up(link).unwrap();
            ctr.run(|| run(&["ip", "link", "set", "ceth0", "up"]));
        }
        testns::wait_until(
            "the twin's ff00::/8 route",
            std::time::Duration::from_secs(5),
            || {
                testns::ip_routes6("local", "vethv6b")
                    .iter()
                    .any(|r| r["dst"] == "ff00::/8")
            },
        );
        assert_eq!(testns::ip_routes6("local", "vethv6a"), Vec::<Value>::new());
        assert_eq!(testns::ip_addrs6("vethv6a"), Vec::<String>::new());
        assert!(
            is_up(&ip_link("vethv6a").unwrap()),
            "still up and bridged-capable"
        );

        let err = nl.disable_ipv6("nosuchveth").unwrap_err();
        assert_eq!(err.kind, OpsErrorKind::NotFound, "{err}");
        assert!(err.to_string().contains("nosuchveth"), "{err}");
    });
}

/// `/proc/sys/net` follows the calling thread's namespace, not the handle's: a handle made
/// with `new_in` and called from the host must still turn IPv6 off in the container. A link
/// of the same name in the host proves which namespace was written.
#[test]
fn disable_ipv6_through_new_in_writes_the_handles_namespace() {
    if !testns::can_run_kernel_tests("disable_ipv6_through_new_in_writes_the_handles_namespace") {
        return;
    }
    in_netns(|| {
        let ctr = Container::new();
        run(&["ip", "link", "add", "twin0", "type", "bridge"]);
        ctr.run(|| run(&["ip", "link", "add", "twin0", "type", "bridge"]));
        let mut inside = NetlinkLinks::new_in(ctr.path()).unwrap();
        inside.disable_ipv6("twin0").unwrap();
        ctr.run(|| assert_eq!(testns::disable_ipv6("twin0"), "1", "the container's link"));
        assert_eq!(
            testns::disable_ipv6("twin0"),
            "0",
            "the host's link untouched"
        );
    });
}
