//! What is particular to the ioctl backend, checked against the kernel in private network
//! namespaces: its documented limits, its rollback, its ethtool-based `kind`, the netlink
//! and `/proc/sys` steps it adds to the ioctls (multicast snooping, `disable_ipv6`) and their
//! namespace handling. The behaviour every backend shares is in the workspace's conformance
//! suite (`tests/tests/linkops_conformance.rs`).

use std::time::Duration;

use backend_ioctl::IoctlLinks;
use ipnet::Ipv4Net;
use netcore::mac::MacAddr;
use netcore::ops::{AttachOps, BridgeSpec, LinkOps, OpsErrorKind};
use testns::{Netns, in_netns, ip_addrs4, ip_link, ip_links, json_array, run, try_run};

const MAC: MacAddr = MacAddr([0x02, 0x42, 0xac, 0x11, 0x00, 0x01]);

fn net(s: &str) -> Ipv4Net {
    s.parse().expect("test network")
}

/// A bridge as dockerd-net makes it by default: multicast snooping off.
fn spec(name: &str, mac: MacAddr, mtu: Option<u32>) -> BridgeSpec {
    BridgeSpec {
        name: name.into(),
        mac,
        mtu,
        mcast_snooping: false,
    }
}

/// `linkinfo.info_data.mcast_snooping` of `ip -j -d link show dev NAME`.
fn mcast_snooping(name: &str) -> serde_json::Value {
    let link = ip_link(name).unwrap_or_else(|| panic!("no link {name}"));
    link["linkinfo"]["info_data"]["mcast_snooping"].clone()
}

/// Whether `ip -6 route show table local` has the `multicast ff00::/8` route of `link`,
/// which a link with IPv6 on gets when its carrier comes up.
fn has_ipv6_mroute(link: &str) -> bool {
    testns::ip_routes6("local", link)
        .iter()
        .any(|r| r["dst"] == "ff00::/8")
}

/// The families of `link`'s addresses (`ip -j addr show dev LINK`).
fn addr_families(link: &str) -> Vec<String> {
    json_array(&run(&["ip", "-j", "addr", "show", "dev", link]))
        .iter()
        .flat_map(|l| l["addr_info"].as_array().cloned().unwrap_or_default())
        .map(|a| a["family"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// `ip link add HOST type veth peer name PEER`, both ends here and down.
fn veth_pair(host: &str, peer: &str) {
    run(&[
        "ip", "link", "add", host, "type", "veth", "peer", "name", peer,
    ]);
}

/// Brings both ends of a veth pair up (each needs the other up for a carrier) and checks,
/// in the calling thread's namespace, that `off` (IPv6 turned off) got neither an IPv6
/// address nor an `ff00::/8` route while `on` (IPv6 left on) got both: waiting for `on`'s
/// route shows that the kernel has handled the carrier, so `off`'s absence is not a race.
fn up_and_compare(off: &str, on: &str) {
    run(&["ip", "link", "set", off, "up"]);
    run(&["ip", "link", "set", on, "up"]);
    testns::wait_until(
        &format!("the ff00::/8 route of {on}"),
        Duration::from_secs(5),
        || has_ipv6_mroute(on),
    );
    assert!(
        addr_families(on).iter().any(|f| f == "inet6"),
        "{on} has IPv6 on: a link-local address"
    );
    assert!(
        !has_ipv6_mroute(off),
        "{off} has IPv6 off but got a multicast route"
    );
    assert_eq!(
        addr_families(off),
        Vec::<String>::new(),
        "{off}: no address"
    );
    assert_eq!(testns::disable_ipv6(off), "1", "{off} still off once up");
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

#[test]
fn bridge_is_created_with_the_asked_multicast_snooping() {
    if !testns::can_run_kernel_tests("bridge_is_created_with_the_asked_multicast_snooping") {
        return;
    }
    in_netns(|| {
        let mut ops = IoctlLinks::new().expect("socket");
        ops.create_bridge(&spec("iobr0", MAC, None))
            .expect("create without snooping");
        assert_eq!(mcast_snooping("iobr0"), 0);
        let mut on = spec("iobr1", MacAddr([2, 0x42, 0xac, 0x11, 0, 9]), Some(9000));
        on.mcast_snooping = true;
        ops.create_bridge(&on).expect("create with snooping");
        assert_eq!(mcast_snooping("iobr1"), 1);
        // The other steps still happened, after the netlink one.
        let b = ip_link("iobr1").expect("bridge");
        assert_eq!(
            (&b["address"], &b["mtu"]),
            (&"02:42:ac:11:00:09".into(), &9000.into())
        );
        assert_eq!(
            ip_link("iobr0").expect("bridge")["address"],
            MAC.to_string()
        );
    });
}

#[test]
fn disable_ipv6_turns_ipv6_off_on_a_down_link() {
    if !testns::can_run_kernel_tests("disable_ipv6_turns_ipv6_off_on_a_down_link") {
        return;
    }
    in_netns(|| {
        let mut ops = IoctlLinks::new().expect("socket");
        veth_pair("iov0", "iov1");
        ops.disable_ipv6("iov0").expect("disable_ipv6");
        assert_eq!(testns::disable_ipv6("iov0"), "1");
        assert_eq!(testns::disable_ipv6("iov1"), "0", "the peer is left alone");
        up_and_compare("iov0", "iov1");

        let err = ops.disable_ipv6("nosuch0").expect_err("missing link");
        assert_eq!(err.kind, OpsErrorKind::NotFound, "{err}");
        // Their keys are every link's settings, not a link's.
        for name in ["all", "default"] {
            let err = ops.disable_ipv6(name).expect_err(name);
            assert_eq!(err.kind, OpsErrorKind::NotFound, "{err}");
            assert_eq!(testns::disable_ipv6(name), "0", "{name} untouched");
        }
    });
}

#[test]
fn disable_ipv6_acts_in_the_handles_namespace_not_the_callers() {
    if !testns::can_run_kernel_tests("disable_ipv6_acts_in_the_handles_namespace_not_the_callers") {
        return;
    }
    // The handle's namespace, standing in for a container's.
    let ctr = Netns::new();
    ctr.run(|| {
        veth_pair("iov0", "iov1");
        veth_pair("iov2", "iov3");
    });
    let path = ctr.path().to_path_buf();
    // Called from a thread in another private namespace that has a link of the same name:
    // a write that followed the calling thread would land on this one.
    in_netns(move || {
        veth_pair("iov0", "iov1");
        run(&[
            "ip", "link", "add", "ioonly0", "type", "veth", "peer", "name", "ioonly1",
        ]);
        let mut ops = IoctlLinks::new_in(&path).expect("sockets in the namespace");
        ops.disable_ipv6("iov0")
            .expect("disable_ipv6 through new_in");
        // A link only the caller's namespace has is missing in the handle's.
        let err = ops
            .disable_ipv6("ioonly0")
            .expect_err("not in the handle's namespace");
        assert_eq!(err.kind, OpsErrorKind::NotFound, "{err}");
        assert_eq!(
            testns::disable_ipv6("iov0"),
            "0",
            "the caller's namespace was written"
        );
        assert_eq!(testns::disable_ipv6("ioonly0"), "0");
        // The handle, moved onto a thread that is in its namespace, writes directly.
        testns::in_netns_at(&path, || ops.disable_ipv6("iov2").expect("from inside"));
    });
    ctr.run(|| {
        assert_eq!(testns::disable_ipv6("iov0"), "1");
        assert_eq!(testns::disable_ipv6("iov2"), "1");
        assert_eq!(testns::disable_ipv6("iov1"), "0", "the peer is left alone");
        up_and_compare("iov0", "iov1");
    });
}
