//! NetlinkLinks against a real kernel. Each test runs in a network namespace of its own
//! (`testns::in_netns`) and checks the kernel's state through `ip -j`, never through the
//! backend under test, except where the backend's own reading (`links`, `routes_v4`) is what
//! is being checked, and then against what `ip` shows.
#![allow(clippy::unwrap_used)]

use std::fs::File;
use std::os::fd::AsRawFd;

use backend_netlink::NetlinkLinks;
use ipnet::Ipv4Net;
use netcore::mac::MacAddr;
use netcore::ops::{BridgeSpec, LinkInfo, LinkOps, OpsError, OpsErrorKind, RouteV4};
use serde_json::Value;
use testns::{in_netns, ip_addrs4, ip_link, ip_links, ip_routes4, run};

fn spec(name: &str, mac: &str, mtu: Option<u32>) -> BridgeSpec {
    BridgeSpec {
        name: name.to_owned(),
        mac: mac.parse().unwrap(),
        mtu,
        mcast_snooping: true,
    }
}

fn net(s: &str) -> Ipv4Net {
    s.parse().unwrap()
}

fn flags(link: &Value) -> Vec<String> {
    link["flags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap().to_owned())
        .collect()
}

/// `ip -j -4 addr show dev NAME` entries (`local`, `prefixlen`, `broadcast`, ...).
fn ip_addr_info(name: &str) -> Vec<Value> {
    let out = run(&["ip", "-j", "-4", "addr", "show", "dev", name]);
    let v: Value = serde_json::from_str(&out).unwrap();
    v[0]["addr_info"].as_array().cloned().unwrap_or_default()
}

#[test]
fn create_bridge_sets_exact_mac_and_mtu_and_leaves_it_down() {
    if !testns::can_run_kernel_tests("create_bridge_sets_exact_mac_and_mtu_and_leaves_it_down") {
        return;
    }
    in_netns(|| {
        let mut nl = NetlinkLinks::new().unwrap();
        nl.create_bridge(&spec("nlbr0", "02:42:ac:11:00:07", Some(1400)))
            .unwrap();
        let link = ip_link("nlbr0").expect("bridge exists");
        assert_eq!(link["linkinfo"]["info_kind"], "bridge");
        assert_eq!(link["address"], "02:42:ac:11:00:07");
        assert_eq!(link["mtu"], 1400);
        assert!(!flags(&link).contains(&"UP".to_owned()), "{link}");
        assert!(ip_addrs4("nlbr0").is_empty());
    });
}

#[test]
fn create_bridge_without_mtu_keeps_the_kernel_default() {
    if !testns::can_run_kernel_tests("create_bridge_without_mtu_keeps_the_kernel_default") {
        return;
    }
    in_netns(|| {
        let mut nl = NetlinkLinks::new().unwrap();
        nl.create_bridge(&spec("nlbr1", "02:42:00:00:00:01", None))
            .unwrap();
        let link = ip_link("nlbr1").unwrap();
        assert_eq!(link["mtu"], 1500);
        assert_eq!(link["address"], "02:42:00:00:00:01");
    });
}

/// The MAC given at creation is the bridge's own: a port with a numerically lower MAC does not
/// replace it (moby/moby#3200). The second bridge, created by `ip` without a MAC, shows that
/// the kernel would otherwise adopt the port's address, so this test can fail.
#[test]
fn bridge_mac_survives_a_port_with_a_lower_mac() {
    if !testns::can_run_kernel_tests("bridge_mac_survives_a_port_with_a_lower_mac") {
        return;
    }
    in_netns(|| {
        let mut nl = NetlinkLinks::new().unwrap();
        nl.create_bridge(&spec("nlbr2", "02:42:ff:ff:ff:01", None))
            .unwrap();
        run(&[
            "ip",
            "link",
            "add",
            "vp0",
            "address",
            "00:00:00:00:00:01",
            "type",
            "veth",
            "peer",
            "name",
            "vp1",
            "address",
            "00:00:00:00:00:02",
        ]);
        run(&["ip", "link", "set", "vp0", "master", "nlbr2"]);
        assert_eq!(ip_link("nlbr2").unwrap()["address"], "02:42:ff:ff:ff:01");

        run(&["ip", "link", "add", "ipbr", "type", "bridge"]);
        run(&["ip", "link", "set", "vp1", "master", "ipbr"]);
        assert_eq!(ip_link("ipbr").unwrap()["address"], "00:00:00:00:00:02");
    });
}

#[test]
fn add_addr_sets_local_prefix_and_broadcast() {
    if !testns::can_run_kernel_tests("add_addr_sets_local_prefix_and_broadcast") {
        return;
    }
    in_netns(|| {
        let mut nl = NetlinkLinks::new().unwrap();
        nl.create_bridge(&spec("nlbr3", "02:42:00:00:00:03", None))
            .unwrap();
        nl.add_addr("nlbr3", net("172.17.0.1/16")).unwrap();
        nl.add_addr("nlbr3", net("10.9.9.9/32")).unwrap();
        let info = ip_addr_info("nlbr3");
        assert_eq!(info.len(), 2, "{info:?}");
        assert_eq!(info[0]["local"], "172.17.0.1");
        assert_eq!(info[0]["prefixlen"], 16);
        // Docker 1.x left this out and showed `brd 0.0.0.0` (flannel-io/flannel#166).
        assert_eq!(info[0]["broadcast"], "172.17.255.255");
        assert_eq!(info[0]["scope"], "global");
        // A /32 has no broadcast address.
        assert_eq!(info[1]["local"], "10.9.9.9");
        assert_eq!(info[1]["prefixlen"], 32);
        assert!(info[1].get("broadcast").is_none(), "{:?}", info[1]);
    });
}

#[test]
fn del_addr_removes_only_the_exact_address() {
    if !testns::can_run_kernel_tests("del_addr_removes_only_the_exact_address") {
        return;
    }
    in_netns(|| {
        let mut nl = NetlinkLinks::new().unwrap();
        nl.create_bridge(&spec("nlbr4", "02:42:00:00:00:04", None))
            .unwrap();
        nl.add_addr("nlbr4", net("172.18.0.1/16")).unwrap();
        nl.add_addr("nlbr4", net("192.168.7.1/24")).unwrap();

        // Same IP, other prefix: not this address.
        let err = nl.del_addr("nlbr4", net("172.18.0.1/24")).unwrap_err();
        assert_eq!(err.kind, OpsErrorKind::NotFound, "{err}");
        assert_eq!(ip_addrs4("nlbr4"), ["172.18.0.1/16", "192.168.7.1/24"]);

        nl.del_addr("nlbr4", net("172.18.0.1/16")).unwrap();
        assert_eq!(ip_addrs4("nlbr4"), ["192.168.7.1/24"]);
    });
}

#[test]
fn set_mtu_and_set_up_change_the_link() {
    if !testns::can_run_kernel_tests("set_mtu_and_set_up_change_the_link") {
        return;
    }
    in_netns(|| {
        let mut nl = NetlinkLinks::new().unwrap();
        nl.create_bridge(&spec("nlbr5", "02:42:00:00:00:05", None))
            .unwrap();
        nl.set_mtu("nlbr5", 1450).unwrap();
        let link = ip_link("nlbr5").unwrap();
        assert_eq!(link["mtu"], 1450);
        assert!(!flags(&link).contains(&"UP".to_owned()));

        nl.set_up("nlbr5").unwrap();
        let link = ip_link("nlbr5").unwrap();
        assert!(flags(&link).contains(&"UP".to_owned()), "{link}");
        assert_eq!(link["mtu"], 1450);
        assert_eq!(link["address"], "02:42:00:00:00:05");

        nl.set_down("nlbr5").unwrap();
        let link = ip_link("nlbr5").unwrap();
        assert!(!flags(&link).contains(&"UP".to_owned()), "{link}");
        // Only IFF_UP was in the change mask: the other flags are as before.
        assert!(flags(&link).contains(&"MULTICAST".to_owned()), "{link}");
    });
}

#[test]
fn delete_link_removes_it() {
    if !testns::can_run_kernel_tests("delete_link_removes_it") {
        return;
    }
    in_netns(|| {
        let mut nl = NetlinkLinks::new().unwrap();
        nl.create_bridge(&spec("nlbr6", "02:42:00:00:00:06", None))
            .unwrap();
        run(&["ip", "link", "add", "nlkeep", "type", "bridge"]);
        nl.delete_link("nlbr6").unwrap();
        assert!(ip_link("nlbr6").is_none());
        assert!(ip_link("nlkeep").is_some());
    });
}

/// What `ip -j -d link` and `ip -j -4 addr` show, as `LinkInfo`s.
fn links_per_ip() -> Vec<LinkInfo> {
    ip_links()
        .iter()
        .map(|l| {
            let name = l["ifname"].as_str().unwrap().to_owned();
            LinkInfo {
                index: l["ifindex"].as_u64().unwrap() as u32,
                kind: l["linkinfo"]["info_kind"].as_str().map(str::to_owned),
                mac: l["address"].as_str().map(|a| a.parse::<MacAddr>().unwrap()),
                mtu: l["mtu"].as_u64().unwrap() as u32,
                up: flags(l).contains(&"UP".to_owned()),
                addrs: ip_addrs4(&name).iter().map(|a| net(a)).collect(),
                name,
            }
        })
        .collect()
}

#[test]
fn links_equal_what_ip_shows() {
    if !testns::can_run_kernel_tests("links_equal_what_ip_shows") {
        return;
    }
    in_netns(|| {
        let mut nl = NetlinkLinks::new().unwrap();
        nl.create_bridge(&spec("nlbr7", "02:42:ac:11:00:01", Some(1480)))
            .unwrap();
        nl.add_addr("nlbr7", net("172.17.0.1/16")).unwrap();
        nl.add_addr("nlbr7", net("172.17.0.2/16")).unwrap(); // a secondary
        nl.add_addr("nlbr7", net("10.20.0.1/24")).unwrap();
        nl.set_up("nlbr7").unwrap();
        run(&[
            "ip", "link", "add", "nlv0", "type", "veth", "peer", "name", "nlv1",
        ]);
        run(&["ip", "addr", "add", "192.168.3.4/24", "dev", "nlv0"]);
        run(&["ip", "link", "set", "nlv1", "up"]);

        let links = nl.links().unwrap();
        assert_eq!(links, links_per_ip());

        let names: Vec<&str> = links.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["lo", "nlbr7", "nlv1", "nlv0"]);
        let br = &links[1];
        assert_eq!(br.kind.as_deref(), Some("bridge"));
        assert_eq!(br.mac, Some("02:42:ac:11:00:01".parse().unwrap()));
        assert_eq!(br.mtu, 1480);
        assert!(br.up);
        // Kernel order, not insertion order: 172.17.0.2/16 is a secondary of 172.17.0.1/16,
        // and the kernel lists secondaries after the primaries.
        assert_eq!(
            br.addrs,
            [
                net("172.17.0.1/16"),
                net("10.20.0.1/24"),
                net("172.17.0.2/16")
            ]
        );
        assert!(links[0].up && links[0].addrs == [net("127.0.0.1/8")]);
    });
}

/// What `ip -j -4 route show table main` shows, as `RouteV4`s.
fn routes_per_ip() -> Vec<RouteV4> {
    ip_routes4()
        .iter()
        .map(|r| {
            let dst = match r["dst"].as_str().unwrap() {
                "default" => None,
                d if d.contains('/') => Some(net(d)),
                host => Some(net(&format!("{host}/32"))),
            };
            let gateway = r["gateway"].as_str().map(|g| g.parse().unwrap());
            let oif = r["dev"]
                .as_str()
                .map(|d| ip_link(d).unwrap()["ifindex"].as_u64().unwrap() as u32);
            RouteV4 { dst, gateway, oif }
        })
        .collect()
}

#[test]
fn routes_v4_is_the_main_table_only() {
    if !testns::can_run_kernel_tests("routes_v4_is_the_main_table_only") {
        return;
    }
    in_netns(|| {
        run(&[
            "ip", "link", "add", "rv0", "type", "veth", "peer", "name", "rv1",
        ]);
        run(&["ip", "link", "set", "rv0", "up"]);
        run(&["ip", "link", "set", "rv1", "up"]);
        run(&["ip", "addr", "add", "10.1.0.1/24", "dev", "rv0"]);
        run(&["ip", "route", "add", "default", "via", "10.1.0.254"]);
        run(&["ip", "route", "add", "192.168.50.0/24", "via", "10.1.0.254"]);
        run(&["ip", "route", "add", "10.2.3.4", "dev", "rv0"]);
        run(&[
            "ip",
            "route",
            "add",
            "10.99.0.0/16",
            "dev",
            "rv0",
            "table",
            "100",
        ]);
        // Above 255 the header byte says RT_TABLE_COMPAT; only RTA_TABLE has the id.
        run(&[
            "ip",
            "route",
            "add",
            "10.98.0.0/16",
            "dev",
            "rv0",
            "table",
            "1000",
        ]);

        let mut nl = NetlinkLinks::new().unwrap();
        let routes = nl.routes_v4().unwrap();
        assert_eq!(routes, routes_per_ip());

        let rv0 = ip_link("rv0").unwrap()["ifindex"].as_u64().unwrap() as u32;
        let gw = "10.1.0.254".parse().unwrap();
        assert!(routes.contains(&RouteV4 {
            dst: Some(net("192.168.50.0/24")),
            gateway: Some(gw),
            oif: Some(rv0),
        }));
        assert!(routes.contains(&RouteV4 {
            dst: None,
            gateway: Some(gw),
            oif: Some(rv0),
        }));
        assert!(routes.contains(&RouteV4 {
            dst: Some(net("10.1.0.0/24")),
            gateway: None,
            oif: Some(rv0),
        }));
        assert!(routes.contains(&RouteV4 {
            dst: Some(net("10.2.3.4/32")),
            gateway: None,
            oif: Some(rv0),
        }));
        for other in [
            "10.99.0.0/16",
            "10.98.0.0/16",
            "10.1.0.1/32",
            "10.1.0.255/32",
        ] {
            assert!(
                !routes.iter().any(|r| r.dst == Some(net(other))),
                "{other} is not in the main table: {routes:?}"
            );
        }
        assert_eq!(routes.len(), 4, "{routes:?}");
    });
}

#[test]
fn errors_map_to_kinds_and_name_the_op_and_link() {
    if !testns::can_run_kernel_tests("errors_map_to_kinds_and_name_the_op_and_link") {
        return;
    }
    in_netns(|| {
        let mut nl = NetlinkLinks::new().unwrap();
        let s = spec("docker0", "02:42:00:00:00:08", None);
        nl.create_bridge(&s).unwrap();

        let err = nl.create_bridge(&s).unwrap_err();
        assert_eq!(err.kind, OpsErrorKind::AlreadyExists);
        assert_eq!(
            err.to_string(),
            "create bridge docker0: File exists (os error 17)"
        );
        // The failed create changed nothing.
        assert_eq!(ip_link("docker0").unwrap()["address"], "02:42:00:00:00:08");

        nl.add_addr("docker0", net("172.17.0.1/16")).unwrap();
        let err = nl.add_addr("docker0", net("172.17.0.1/16")).unwrap_err();
        assert_eq!(err.kind, OpsErrorKind::AlreadyExists, "{err}");
        assert!(
            err.to_string()
                .starts_with("add address 172.17.0.1/16 to docker0: ")
        );

        type Call = fn(&mut NetlinkLinks) -> Result<(), OpsError>;
        let missing: [(&str, Call); 6] = [
            ("add address 10.0.0.1/8 to nope0", |n| {
                n.add_addr("nope0", net("10.0.0.1/8"))
            }),
            ("delete address 10.0.0.1/8 from nope0", |n| {
                n.del_addr("nope0", net("10.0.0.1/8"))
            }),
            ("set mtu 1400 on nope0", |n| n.set_mtu("nope0", 1400)),
            ("set up nope0", |n| n.set_up("nope0")),
            ("set down nope0", |n| n.set_down("nope0")),
            ("delete link nope0", |n| n.delete_link("nope0")),
        ];
        for (op, call) in missing {
            let err = call(&mut nl).unwrap_err();
            assert_eq!(err.kind, OpsErrorKind::NotFound, "{err}");
            assert_eq!(
                err.to_string(),
                format!("{op}: No such device (os error 19)")
            );
        }
        assert!(ip_link("nope0").is_none());

        let long = "nlbr0123456789ab"; // 16 bytes: IFNAMSIZ counts the NUL
        let err = nl
            .create_bridge(&spec(long, "02:42:00:00:00:0d", None))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("create bridge {long}: interface name {long} too long")
        );
        assert!(ip_link(&long[..15]).is_none());
        nl.create_bridge(&spec(&long[..15], "02:42:00:00:00:0d", None))
            .unwrap();
        assert!(ip_link(&long[..15]).is_some());
    });
}

/// Capabilities are per thread on Linux: this drops CAP_NET_ADMIN from the calling thread's
/// effective set only, so the rest of the test process keeps its privileges.
fn drop_net_admin_on_this_thread() {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Default, Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    const CAP_NET_ADMIN: u32 = 12;
    let mut header = Header {
        version: VERSION_3,
        pid: 0,
    };
    let mut data = [Data::default(); 2];
    // SAFETY: capget writes one header and two data structs (version 3), both live and
    // laid out as the kernel's `__user_cap_header_struct` / `__user_cap_data_struct`.
    let rc = unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) };
    assert_eq!(rc, 0, "capget: {}", std::io::Error::last_os_error());
    data[0].effective &= !(1 << CAP_NET_ADMIN);
    // SAFETY: as above; capset only reads them, and pid 0 means the calling thread.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) };
    assert_eq!(rc, 0, "capset: {}", std::io::Error::last_os_error());
}

#[test]
fn missing_privilege_is_permission_denied() {
    if !testns::can_run_kernel_tests("missing_privilege_is_permission_denied") {
        return;
    }
    in_netns(|| {
        let mut nl = NetlinkLinks::new().unwrap();
        drop_net_admin_on_this_thread();
        let err = nl
            .create_bridge(&spec("nlbr9", "02:42:00:00:00:09", None))
            .unwrap_err();
        assert_eq!(err.kind, OpsErrorKind::PermissionDenied, "{err}");
        assert_eq!(
            err.to_string(),
            "create bridge nlbr9: Operation not permitted (os error 1)"
        );
        let err = nl.set_up("lo").unwrap_err();
        assert_eq!(err.kind, OpsErrorKind::PermissionDenied, "{err}");
        // Reading needs no privilege.
        assert!(nl.links().unwrap().iter().any(|l| l.name == "lo"));
        assert!(ip_link("nlbr9").is_none());
    });
}

/// The connection belongs to the namespace of the thread that made it, and stays there when
/// that thread moves to another namespace.
#[test]
fn connection_stays_in_the_namespace_it_was_made_in() {
    if !testns::can_run_kernel_tests("connection_stays_in_the_namespace_it_was_made_in") {
        return;
    }
    in_netns(|| {
        let mut first = NetlinkLinks::new().unwrap();
        let first_ns = File::open("/proc/thread-self/ns/net").unwrap();
        testns::unshare_net().unwrap();

        first
            .create_bridge(&spec("nlns0", "02:42:00:00:00:0a", None))
            .unwrap();
        assert!(
            ip_link("nlns0").is_none(),
            "made in the thread's new namespace"
        );
        let ns_path = format!(
            "--net=/proc/{}/fd/{}",
            std::process::id(),
            first_ns.as_raw_fd()
        );
        let out = run(&["nsenter", &ns_path, "ip", "-j", "link", "show", "nlns0"]);
        let shown: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(shown[0]["address"], "02:42:00:00:00:0a");

        let mut second = NetlinkLinks::new().unwrap();
        second
            .create_bridge(&spec("nlns1", "02:42:00:00:00:0b", None))
            .unwrap();
        assert!(ip_link("nlns1").is_some());
    });
}

#[test]
fn a_call_from_inside_an_async_runtime_is_an_error_not_a_panic() {
    if !testns::can_run_kernel_tests("a_call_from_inside_an_async_runtime_is_an_error_not_a_panic")
    {
        return;
    }
    in_netns(|| {
        let mut nl = NetlinkLinks::new().unwrap();
        let outer = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let err = outer
            .block_on(async { nl.create_bridge(&spec("nlbr10", "02:42:00:00:00:0c", None)) })
            .unwrap_err();
        assert_eq!(err.kind, OpsErrorKind::Other);
        assert!(
            err.to_string().starts_with("create bridge nlbr10: "),
            "{err}"
        );
        assert!(ip_link("nlbr10").is_none());
        // Outside the runtime the same value works.
        nl.create_bridge(&spec("nlbr10", "02:42:00:00:00:0c", None))
            .unwrap();
        assert!(ip_link("nlbr10").is_some());
    });
}

/// `mcast_snooping` as `ip -d link` shows it (`IFLA_BR_MCAST_SNOOPING`).
fn mcast_snooping(name: &str) -> Value {
    let out = run(&["ip", "-j", "-d", "link", "show", "dev", name]);
    let v: Value = serde_json::from_str(&out).unwrap();
    v[0]["linkinfo"]["info_data"]["mcast_snooping"].clone()
}

#[test]
fn create_bridge_sets_multicast_snooping_as_asked() {
    if !testns::can_run_kernel_tests("create_bridge_sets_multicast_snooping_as_asked") {
        return;
    }
    in_netns(|| {
        let mut nl = NetlinkLinks::new().unwrap();
        let mut off = spec("nlbrs0", "02:42:00:00:00:10", None);
        off.mcast_snooping = false;
        nl.create_bridge(&off).unwrap();
        nl.create_bridge(&spec("nlbrs1", "02:42:00:00:00:11", None))
            .unwrap();
        assert_eq!(mcast_snooping("nlbrs0"), 0);
        assert_eq!(mcast_snooping("nlbrs1"), 1);
    });
}
