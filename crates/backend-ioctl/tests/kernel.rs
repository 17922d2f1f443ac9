//! What is particular to the ioctl backend, checked against the kernel in private network
//! namespaces: its documented limits, its rollback, and its ethtool-based `kind`. The
//! behaviour every backend shares is in the workspace's conformance suite
//! (`tests/tests/linkops_conformance.rs`).

use backend_ioctl::IoctlLinks;
use ipnet::Ipv4Net;
use netcore::mac::MacAddr;
use netcore::ops::{BridgeSpec, LinkOps, OpsErrorKind};
use testns::{in_netns, ip_addrs4, ip_link, ip_links, run, try_run};

const MAC: MacAddr = MacAddr([0x02, 0x42, 0xac, 0x11, 0x00, 0x01]);

fn net(s: &str) -> Ipv4Net {
    s.parse().expect("test network")
}

fn spec(name: &str, mac: MacAddr, mtu: Option<u32>) -> BridgeSpec {
    BridgeSpec {
        name: name.into(),
        mac,
        mtu,
    }
}

fn link_names() -> Vec<String> {
    ip_links()
        .iter()
        .map(|l| l["ifname"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[test]
fn a_second_address_is_refused_not_swapped_in() {
    if !testns::can_run_kernel_tests("a_second_address_is_refused_not_swapped_in") {
        return;
    }
    in_netns(|| {
        let mut ops = IoctlLinks::new().expect("socket");
        ops.create_bridge(&spec("iobr0", MAC, None))
            .expect("create");
        ops.add_addr("iobr0", net("172.17.0.1/16")).expect("add");
        // SIOCSIFADDR would silently replace 172.17.0.1; the backend refuses instead.
        let err = ops
            .add_addr("iobr0", net("10.1.0.1/24"))
            .expect_err("second address");
        assert_eq!(err.kind, OpsErrorKind::AlreadyExists, "{err}");
        let text = err.to_string();
        assert!(
            text.starts_with("add address 10.1.0.1/24 to iobr0: iobr0 already has 172.17.0.1/16"),
            "{text}"
        );
        assert!(text.contains("alias label such as iobr0:1"), "{text}");
        assert_eq!(ip_addrs4("iobr0"), ["172.17.0.1/16"]);
        // 0.0.0.0 would mean "delete" to the kernel.
        let err = ops
            .add_addr("iobr0", net("0.0.0.0/8"))
            .expect_err("unspecified");
        assert_eq!(err.kind, OpsErrorKind::Other, "{err}");
        assert_eq!(ip_addrs4("iobr0"), ["172.17.0.1/16"]);
    });
}

#[test]
fn address_gets_the_subnet_broadcast() {
    if !testns::can_run_kernel_tests("address_gets_the_subnet_broadcast") {
        return;
    }
    in_netns(|| {
        let mut ops = IoctlLinks::new().expect("socket");
        ops.create_bridge(&spec("iobr0", MAC, None))
            .expect("create");
        // 10.x is class A: SIOCSIFADDR alone would give /8 and 10.255.255.255.
        ops.add_addr("iobr0", net("10.1.2.3/24")).expect("add");
        let out = run(&["ip", "-j", "-4", "addr", "show", "dev", "iobr0"]);
        let v: serde_json::Value = serde_json::from_str(&out).expect("json");
        let a = &v[0]["addr_info"][0];
        assert_eq!(
            (&a["local"], &a["prefixlen"]),
            (&"10.1.2.3".into(), &24.into())
        );
        assert_eq!(a["broadcast"], "10.1.2.255", "{a}");
    });
}

#[test]
fn del_addr_only_removes_the_first_of_a_label() {
    if !testns::can_run_kernel_tests("del_addr_only_removes_the_first_of_a_label") {
        return;
    }
    in_netns(|| {
        let mut ops = IoctlLinks::new().expect("socket");
        run(&["ip", "link", "add", "iobr0", "type", "bridge"]);
        run(&["ip", "addr", "add", "10.0.0.1/24", "dev", "iobr0"]);
        run(&["ip", "addr", "add", "10.0.0.2/24", "dev", "iobr0"]);
        run(&[
            "ip",
            "addr",
            "add",
            "10.5.0.1/16",
            "dev",
            "iobr0",
            "label",
            "iobr0:x",
        ]);
        // The secondary cannot be targeted: SIOCSIFADDR 0.0.0.0 would remove 10.0.0.1.
        let err = ops
            .del_addr("iobr0", net("10.0.0.2/24"))
            .expect_err("secondary");
        assert_eq!(err.kind, OpsErrorKind::Other, "{err}");
        assert!(
            err.to_string()
                .contains("first address labelled iobr0 (10.0.0.1/24)"),
            "{err}"
        );
        assert_eq!(
            ip_addrs4("iobr0"),
            ["10.0.0.1/24", "10.5.0.1/16", "10.0.0.2/24"]
        );
        // The alias is first under its own label, so it can go.
        ops.del_addr("iobr0", net("10.5.0.1/16")).expect("alias");
        assert_eq!(ip_addrs4("iobr0"), ["10.0.0.1/24", "10.0.0.2/24"]);
        // Same address, other prefix: not what the link has.
        let err = ops
            .del_addr("iobr0", net("10.0.0.1/16"))
            .expect_err("wrong prefix");
        assert_eq!(err.kind, OpsErrorKind::NotFound, "{err}");
        ops.del_addr("iobr0", net("10.0.0.1/24")).expect("primary");
        // The kernel promotes or drops the secondary (promote_secondaries); either way
        // 10.0.0.1 is gone.
        assert!(!ip_addrs4("iobr0").contains(&"10.0.0.1/24".to_owned()));
    });
}

#[test]
fn failed_steps_leave_no_half_made_bridge() {
    if !testns::can_run_kernel_tests("failed_steps_leave_no_half_made_bridge") {
        return;
    }
    in_netns(|| {
        let mut ops = IoctlLinks::new().expect("socket");
        // A multicast MAC is refused by the bridge (EADDRNOTAVAIL) after SIOCBRADDBR.
        let multicast = MacAddr([0x01, 0x00, 0x5e, 0x00, 0x00, 0x01]);
        let err = ops
            .create_bridge(&spec("iobr0", multicast, None))
            .expect_err("multicast MAC");
        assert!(
            err.to_string()
                .starts_with("create bridge iobr0: set MAC 01:00:5e:00:00:01: "),
            "{err}"
        );
        assert!(ip_link("iobr0").is_none(), "half-made bridge left behind");
        // An MTU above the bridge's maximum (65535) fails after the MAC was set.
        let err = ops
            .create_bridge(&spec("iobr0", MAC, Some(70000)))
            .expect_err("MTU too big");
        assert!(
            err.to_string()
                .starts_with("create bridge iobr0: set MTU 70000: "),
            "{err}"
        );
        assert!(ip_link("iobr0").is_none(), "half-made bridge left behind");
        // And the name is still usable.
        ops.create_bridge(&spec("iobr0", MAC, Some(9000)))
            .expect("create");
        assert_eq!(ip_link("iobr0").expect("bridge")["mtu"], 9000);
    });
}

#[test]
fn too_long_name_is_refused_not_truncated() {
    if !testns::can_run_kernel_tests("too_long_name_is_refused_not_truncated") {
        return;
    }
    in_netns(|| {
        let mut ops = IoctlLinks::new().expect("socket");
        let long = "abcdefghijklmnop";
        let err = ops
            .create_bridge(&spec(long, MAC, None))
            .expect_err("16 bytes");
        assert_eq!(
            err.to_string(),
            format!("create bridge {long}: Interface name {long} too long")
        );
        // SIOCBRADDBR itself would have made "abcdefghijklmno".
        assert_eq!(link_names(), ["lo"]);
    });
}

#[test]
fn delete_link_removes_a_veth_pair_with_netlink() {
    if !testns::can_run_kernel_tests("delete_link_removes_a_veth_pair_with_netlink") {
        return;
    }
    in_netns(|| {
        let mut ops = IoctlLinks::new().expect("socket");
        run(&[
            "ip", "link", "add", "iov0", "type", "veth", "peer", "name", "iov1",
        ]);
        run(&["ip", "link", "set", "iov0", "up"]);
        // SIOCBRDELBR would refuse a veth; RTM_DELLINK takes it, and its peer with it.
        ops.delete_link("iov0").expect("delete veth");
        assert!(ip_link("iov0").is_none(), "veth still there");
        assert!(ip_link("iov1").is_none(), "peer still there");
        assert_eq!(link_names(), ["lo"]);
        let err = ops.delete_link("iov0").expect_err("gone");
        assert_eq!(err.kind, OpsErrorKind::NotFound, "{err}");
    });
}

#[test]
fn kind_matches_netlinks_info_kind() {
    if !testns::can_run_kernel_tests("kind_matches_netlinks_info_kind") {
        return;
    }
    in_netns(|| {
        let mut ops = IoctlLinks::new().expect("socket");
        run(&["ip", "link", "add", "iobr0", "type", "bridge"]);
        run(&[
            "ip", "link", "add", "iov0", "type", "veth", "peer", "name", "iov1",
        ]);
        // Kinds this kernel may lack: each is compared if it could be made.
        for argv in [
            &[
                "ip", "link", "add", "iovx0", "type", "vxlan", "id", "5", "dstport", "4789",
            ][..],
            &[
                "ip", "link", "add", "iomv0", "link", "iov0", "type", "macvlan",
            ],
            &["ip", "tuntap", "add", "iotap0", "mode", "tap"],
            &["ip", "link", "add", "ioifb0", "type", "ifb"],
            &["ip", "link", "add", "iodum0", "type", "dummy"],
            &["ip", "link", "add", "iobond0", "type", "bond"],
        ] {
            let _ = try_run(argv);
        }
        let got = ops.links().expect("links");
        let kernel = ip_links();
        assert!(kernel.len() >= 4, "lo, bridge and veth pair at least");
        for k in &kernel {
            let name = k["ifname"].as_str().expect("ifname");
            let want = k["linkinfo"]["info_kind"].as_str();
            let mine = got
                .iter()
                .find(|l| l.name == name)
                .unwrap_or_else(|| panic!("links() lacks {name}"));
            assert_eq!(mine.kind.as_deref(), want, "{name}: {k}");
        }
    });
}

#[test]
fn links_refuse_a_thread_in_another_namespace() {
    if !testns::can_run_kernel_tests("links_refuse_a_thread_in_another_namespace") {
        return;
    }
    // Opened here, in this test thread's namespace (read only: nothing is changed there),
    // then used from a thread in a new namespace: /proc/thread-self would describe the
    // new namespace while the ioctls describe this one.
    let mut ops = IoctlLinks::new().expect("socket");
    let (links, routes) = in_netns(move || (ops.links().map(|_| ()), ops.routes_v4().map(|_| ())));
    for (what, res) in [("links", links), ("routes_v4", routes)] {
        let err = res.expect_err(what);
        assert_eq!(err.kind, OpsErrorKind::Other, "{what}: {err}");
        assert!(
            err.to_string().contains("network namespace"),
            "{what}: {err}"
        );
    }
}
