//! FakeHost's namespaces, veth pairs, bridge ports and routes behave like the kernel's.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use backend_mock::{Call, FakeHost, INIT_NETNS, InjectedFault, Op, VethPeer};
use ipnet::Ipv4Net;
use netcore::mac::MacAddr;
use netcore::ops::{AttachOps, BridgeSpec, LinkOps, OpsErrorKind, RouteV4, VethSpec};

const NETNS: &str = "/run/netns/c1";
const PEER_MAC: MacAddr = MacAddr([0x02, 0x42, 0xac, 0x11, 0x00, 0x02]);

fn net(s: &str) -> Ipv4Net {
    s.parse().unwrap()
}

fn veth(host: &str, peer: &str, netns: &str) -> VethSpec {
    VethSpec {
        host: host.to_owned(),
        peer: peer.to_owned(),
        peer_netns: PathBuf::from(netns),
        peer_mac: PEER_MAC,
        mtu: 1450,
    }
}

/// A host with docker0 and a fresh container namespace at [`NETNS`].
fn world() -> (FakeHost, FakeHost) {
    let ctr = FakeHost::new_netns();
    let host = FakeHost::new()
        .with_bridge("docker0", net("172.17.0.1/16"))
        .with_netns(NETNS, ctr.clone());
    (host, ctr)
}

fn default_via(gw: &str) -> RouteV4 {
    RouteV4 {
        dst: None,
        gateway: Some(gw.parse().unwrap()),
        oif: None,
    }
}

// ---------------------------------------------------------------------------------------
// Namespaces

#[test]
fn a_fresh_namespace_has_lo_down_without_address_until_it_is_up() {
    let mut ns = FakeHost::new_netns();
    let lo = ns.link("lo").unwrap();
    assert_eq!(lo.index, 1);
    assert!(!lo.up);
    assert!(lo.addrs.is_empty());
    ns.set_up("lo").unwrap();
    assert_eq!(ns.link("lo").unwrap().addrs, vec![net("127.0.0.1/8")]);
    // Down and up again: still one address.
    ns.set_down("lo").unwrap();
    ns.set_up("lo").unwrap();
    assert_eq!(ns.link("lo").unwrap().addrs, vec![net("127.0.0.1/8")]);
    // Loopback's route is in the local table, not main.
    assert_eq!(ns.routes_v4().unwrap(), vec![]);
}

#[test]
fn namespaces_are_found_by_path_and_named_by_it() {
    let (host, ctr) = world();
    assert_eq!(host.netns_path(), PathBuf::from(INIT_NETNS));
    assert_eq!(ctr.netns_path(), PathBuf::from(NETNS));
    let found = host.netns(NETNS).unwrap();
    // A handle on the same namespace: a change through one shows in the other.
    found.clone().set_up("lo").unwrap();
    assert!(ctr.link("lo").unwrap().up);
    assert!(host.netns("/run/netns/other").is_none());
}

// ---------------------------------------------------------------------------------------
// create_veth

#[test]
fn create_veth_puts_the_peer_in_the_registered_namespace() {
    let (host, ctr) = world();
    let mut h = host.link_ops();
    h.create_veth(&veth("veth1", "eth0", NETNS)).unwrap();

    let end = host.link("veth1").unwrap();
    assert_eq!(end.kind.as_deref(), Some("veth"));
    assert_eq!(end.mtu, 1450);
    assert!(!end.up && end.addrs.is_empty());
    assert!(end.mac.is_some_and(|m| m.is_unicast() && m != PEER_MAC));
    assert!(ctr.link("veth1").is_none());

    let peer = ctr.link("eth0").unwrap();
    assert_eq!(peer.kind.as_deref(), Some("veth"));
    assert_eq!(peer.mac, Some(PEER_MAC));
    assert_eq!(peer.mtu, 1450);
    assert!(!peer.up && peer.addrs.is_empty());
    assert_eq!(peer.index, 2, "the container's own index space");
    assert!(host.link("eth0").is_none());

    assert_eq!(
        host.snapshot().peers.get("veth1"),
        Some(&VethPeer {
            name: "eth0".into(),
            netns: Some(NETNS.into())
        })
    );
    assert_eq!(
        ctr.snapshot().peers.get("eth0"),
        Some(&VethPeer {
            name: "veth1".into(),
            netns: Some(INIT_NETNS.into())
        })
    );
    // Each end gets its per-interface sysctls in its own namespace.
    assert!(host.sysctl("net/ipv4/conf/veth1/forwarding").is_some());
    assert!(ctr.sysctl("net/ipv4/conf/eth0/forwarding").is_some());
    assert!(host.sysctl("net/ipv4/conf/eth0/forwarding").is_none());
    // The call is recorded where it was made only.
    assert_eq!(
        host.calls(),
        vec![Call::CreateVeth(veth("veth1", "eth0", NETNS))]
    );
    assert!(ctr.calls().is_empty());
}

#[test]
fn create_veth_into_an_unknown_namespace_fails_not_found_naming_it() {
    let (mut host, ctr) = world();
    let before = (host.snapshot(), ctr.snapshot());
    let err = host
        .create_veth(&veth("veth1", "eth0", "/proc/77/ns/net"))
        .unwrap_err();
    assert_eq!(err.kind, OpsErrorKind::NotFound);
    assert!(err.to_string().contains("/proc/77/ns/net"), "{err}");
    assert!(
        err.to_string()
            .starts_with("create veth veth1 with peer eth0 in /proc/77/ns/net: "),
        "{err}"
    );
    assert_eq!((host.snapshot(), ctr.snapshot()), before);
    assert_eq!(host.history()[0].error, Some(OpsErrorKind::NotFound));
}

#[test]
fn create_veth_refuses_a_taken_name_on_either_side_and_creates_nothing() {
    let (mut host, ctr) = world();
    let mut c = ctr.clone();
    c.create_bridge(&BridgeSpec {
        name: "eth0".into(),
        mac: MacAddr([2, 0, 0, 0, 0, 5]),
        mtu: None,
        mcast_snooping: true,
    })
    .unwrap();
    let before = (host.snapshot(), ctr.snapshot());

    let err = host
        .create_veth(&veth("docker0", "eth1", NETNS))
        .unwrap_err();
    assert_eq!(err.kind, OpsErrorKind::AlreadyExists);
    assert!(err.to_string().contains("docker0"), "{err}");
    assert_eq!((host.snapshot(), ctr.snapshot()), before);

    let err = host.create_veth(&veth("veth1", "eth0", NETNS)).unwrap_err();
    assert_eq!(err.kind, OpsErrorKind::AlreadyExists);
    assert!(
        err.to_string().contains(&format!("eth0 in {NETNS}")),
        "{err}"
    );
    assert_eq!((host.snapshot(), ctr.snapshot()), before);

    // The same name on both sides is fine: they are different namespaces.
    host.create_veth(&veth("veth1", "veth1", NETNS)).unwrap();
    assert!(host.link("veth1").is_some() && ctr.link("veth1").is_some());
}

#[test]
fn create_veth_refuses_bad_names_macs_and_mtus() {
    let (mut host, ctr) = world();
    let before = (host.snapshot(), ctr.snapshot());
    let bad = [
        veth("sixteen-bytes-xx", "eth0", NETNS),
        veth("veth1", "eth0:1", NETNS),
        VethSpec {
            peer_mac: MacAddr([0x03, 0, 0, 0, 0, 1]),
            ..veth("veth1", "eth0", NETNS)
        },
        VethSpec {
            peer_mac: MacAddr([0; 6]),
            ..veth("veth1", "eth0", NETNS)
        },
        VethSpec {
            mtu: 67,
            ..veth("veth1", "eth0", NETNS)
        },
    ];
    for spec in &bad {
        let err = host.create_veth(spec).unwrap_err();
        assert_eq!(err.kind, OpsErrorKind::Other, "{spec:?}");
    }
    assert_eq!((host.snapshot(), ctr.snapshot()), before);
}

#[test]
fn a_veth_pair_can_live_in_one_namespace_through_its_own_path() {
    let mut host = FakeHost::new();
    host.create_veth(&veth("veth1", "veth2", INIT_NETNS))
        .unwrap();
    assert_eq!(
        host.peer("veth1"),
        Some(VethPeer {
            name: "veth2".into(),
            netns: None
        })
    );
    assert_eq!(host.link("veth2").unwrap().mac, Some(PEER_MAC));
    let err = host
        .create_veth(&veth("veth3", "veth3", INIT_NETNS))
        .unwrap_err();
    assert_eq!(err.kind, OpsErrorKind::AlreadyExists);

    host.delete_link("veth2").unwrap();
    assert!(
        host.link("veth1").is_none(),
        "deleting one end deletes both"
    );
    assert!(host.snapshot().peers.is_empty());

    // A host registered in itself: the path is an alias.
    let mut host = host.clone().with_netns("/run/netns/self", host);
    host.create_veth(&veth("veth1", "veth2", "/run/netns/self"))
        .unwrap();
    assert_eq!(host.peer("veth2").unwrap().netns, None);
}

// ---------------------------------------------------------------------------------------
// Deleting veths

#[test]
fn deleting_either_end_deletes_both_across_namespaces() {
    for delete_on_host in [true, false] {
        let (host, ctr) = world();
        let before = (host.snapshot(), ctr.snapshot());
        let mut h = host.link_ops();
        h.create_veth(&veth("veth1", "eth0", NETNS)).unwrap();
        h.set_master("veth1", "docker0").unwrap();
        h.set_up("veth1").unwrap();
        let mut c = ctr.link_ops();
        c.add_addr("eth0", net("172.17.0.2/16")).unwrap();
        c.set_up("eth0").unwrap();
        c.add_route(&default_via("172.17.0.1")).unwrap();

        if delete_on_host {
            h.delete_link("veth1").unwrap();
        } else {
            c.delete_link("eth0").unwrap();
        }
        // Addresses, routes, sysctls, the port and the peer records go with the pair.
        assert_eq!(host.snapshot(), before.0, "delete_on_host={delete_on_host}");
        assert_eq!(ctr.snapshot(), before.1, "delete_on_host={delete_on_host}");
        // Recorded only where it was called.
        let deletes = |ns: &FakeHost| {
            ns.calls()
                .iter()
                .filter(|c| c.op() == Op::DeleteLink)
                .count()
        };
        assert_eq!(deletes(&host), usize::from(delete_on_host));
        assert_eq!(deletes(&ctr), usize::from(!delete_on_host));
    }
}

#[test]
fn a_peer_whose_namespace_is_gone_does_not_stop_a_delete() {
    let mut host = FakeHost::new().with_netns(NETNS, FakeHost::new_netns());
    host.create_veth(&veth("veth1", "eth0", NETNS)).unwrap();
    // Another namespace takes the path; the first one, held by nobody now, is gone.
    let next = FakeHost::new_netns();
    let mut host = host.with_netns(NETNS, next.clone());
    host.create_veth(&veth("veth2", "eth0", NETNS)).unwrap();
    host.delete_link("veth1").unwrap();
    assert!(host.link("veth1").is_none());
    // The peer is not looked up by path: the new namespace's eth0 is another veth's.
    assert!(next.link("eth0").is_some());
    assert!(host.link("veth2").is_some());
}

#[test]
fn a_deleted_link_with_the_peers_name_is_not_mistaken_for_the_peer() {
    let (mut host, ctr) = world();
    host.create_veth(&veth("veth1", "eth0", NETNS)).unwrap();
    host.create_veth(&veth("veth2", "eth1", NETNS)).unwrap();
    assert_eq!(ctr.snapshot().peers.len(), 2);
    host.delete_link("veth1").unwrap();
    assert!(ctr.link("eth0").is_none());
    assert!(ctr.link("eth1").is_some(), "the other pair is untouched");
    assert!(host.link("veth2").is_some());
}

// ---------------------------------------------------------------------------------------
// Bridge ports

#[test]
fn set_master_makes_a_port_of_a_bridge_only() {
    let (mut host, _ctr) = world();
    let mut host2 = host.clone().with_device("eth9", &[]);
    host.create_veth(&veth("veth1", "eth0", NETNS)).unwrap();
    let before = host.snapshot();

    let cases = [
        ("nope0", "docker0", OpsErrorKind::NotFound),
        ("veth1", "nope0", OpsErrorKind::NotFound),
        ("veth1", "eth9", OpsErrorKind::Other),
        ("docker0", "docker0", OpsErrorKind::Other),
        ("lo", "docker0", OpsErrorKind::Other),
    ];
    for (link, master, kind) in cases {
        let err = host2.set_master(link, master).unwrap_err();
        assert_eq!(err.kind, kind, "{link} -> {master}: {err}");
        assert!(
            err.to_string()
                .starts_with(&format!("set master of {link} to {master}: ")),
            "{err}"
        );
    }
    assert_eq!(host.snapshot(), before);

    host.set_master("veth1", "docker0").unwrap();
    assert_eq!(host.master("veth1").as_deref(), Some("docker0"));
    assert_eq!(
        host.snapshot().masters.into_iter().collect::<Vec<_>>(),
        [("veth1".to_owned(), "docker0".to_owned())]
    );
    // A physical device can be a port too.
    host2.set_master("eth9", "docker0").unwrap();
}

#[test]
fn hairpin_needs_a_bridge_port_and_is_reset_when_the_port_moves() {
    let (mut host, _ctr) = world();
    host.create_veth(&veth("veth1", "eth0", NETNS)).unwrap();
    let err = host.set_hairpin("veth1", true).unwrap_err();
    assert_eq!(err.kind, OpsErrorKind::Other);
    assert!(err.to_string().contains("not a bridge port"), "{err}");
    assert_eq!(
        host.set_hairpin("nope0", true).unwrap_err().kind,
        OpsErrorKind::NotFound
    );
    assert!(!host.hairpin("veth1"));

    host.set_master("veth1", "docker0").unwrap();
    host.set_hairpin("veth1", true).unwrap();
    assert!(host.hairpin("veth1"));
    // Enslaving it to the same bridge again changes nothing.
    host.set_master("veth1", "docker0").unwrap();
    assert!(host.hairpin("veth1"));
    host.set_hairpin("veth1", false).unwrap();
    assert!(!host.hairpin("veth1"));
    host.set_hairpin("veth1", true).unwrap();

    host.create_bridge(&BridgeSpec {
        name: "br1".into(),
        mac: MacAddr([2, 0, 0, 0, 0, 0x11]),
        mtu: None,
        mcast_snooping: true,
    })
    .unwrap();
    host.set_master("veth1", "br1").unwrap();
    assert_eq!(host.master("veth1").as_deref(), Some("br1"));
    assert!(!host.hairpin("veth1"), "a new port starts without hairpin");
}

#[test]
fn ipv6_autoconf_off_is_recorded_per_link_and_goes_with_the_link() {
    let (mut host, ctr) = world();
    let before = (host.snapshot(), ctr.snapshot());
    assert_eq!(
        host.set_ipv6_autoconf_off("nope0").unwrap_err().kind,
        OpsErrorKind::NotFound
    );
    assert!(!host.ipv6_autoconf_off("nope0"));
    host.create_veth(&veth("veth1", "eth0", NETNS)).unwrap();
    // A new link has the kernel's default (eui64): autoconfiguration on.
    assert!(!host.ipv6_autoconf_off("veth1"));
    assert!(host.snapshot().ipv6_autoconf_off.is_empty());

    host.set_ipv6_autoconf_off("veth1").unwrap();
    assert!(host.ipv6_autoconf_off("veth1"));
    assert!(
        !ctr.ipv6_autoconf_off("eth0"),
        "per end: the peer keeps its own"
    );
    let mut c = ctr.clone();
    c.set_ipv6_autoconf_off("eth0").unwrap();
    assert!(ctr.ipv6_autoconf_off("eth0"));
    // Again: no change, no error (the kernel just sets the mode).
    host.set_ipv6_autoconf_off("veth1").unwrap();
    assert_eq!(
        host.snapshot()
            .ipv6_autoconf_off
            .into_iter()
            .collect::<Vec<_>>(),
        ["veth1"]
    );
    assert!(!host.ipv6_autoconf_off("docker0"));

    // Deleting the pair takes the mode of both ends with it: a new veth of the same names
    // starts with autoconfiguration on, and both namespaces are as before.
    host.delete_link("veth1").unwrap();
    assert_eq!((host.snapshot(), ctr.snapshot()), before);
    host.create_veth(&veth("veth1", "eth0", NETNS)).unwrap();
    assert!(!host.ipv6_autoconf_off("veth1") && !ctr.ipv6_autoconf_off("eth0"));
}

#[test]
fn deleting_a_bridge_releases_its_ports() {
    let (mut host, ctr) = world();
    host.create_veth(&veth("veth1", "eth0", NETNS)).unwrap();
    host.set_master("veth1", "docker0").unwrap();
    host.set_hairpin("veth1", true).unwrap();
    host.delete_link("docker0").unwrap();
    assert_eq!(host.master("veth1"), None);
    assert!(!host.hairpin("veth1"));
    let snap = host.snapshot();
    assert!(snap.masters.is_empty() && snap.hairpin.is_empty());
    // The veth itself stays, both ends.
    assert!(host.link("veth1").is_some() && ctr.link("eth0").is_some());
}

#[test]
fn a_bridge_mtu_follows_its_smallest_port_unless_it_was_set() {
    let (mut host, _ctr) = world();
    host.create_veth(&veth("veth1", "eth0", NETNS)).unwrap();
    host.create_veth(&VethSpec {
        mtu: 9000,
        ..veth("veth2", "eth1", NETNS)
    })
    .unwrap();
    host.set_master("veth2", "docker0").unwrap();
    assert_eq!(host.link("docker0").unwrap().mtu, 9000);
    host.set_master("veth1", "docker0").unwrap();
    assert_eq!(host.link("docker0").unwrap().mtu, 1450);
    // A port's MTU change re-tunes the bridge.
    host.set_mtu("veth1", 9000).unwrap();
    assert_eq!(host.link("docker0").unwrap().mtu, 9000);
    host.set_mtu("veth1", 1450).unwrap();
    host.delete_link("veth1").unwrap();
    assert_eq!(host.link("docker0").unwrap().mtu, 9000);
    host.delete_link("veth2").unwrap();
    assert_eq!(host.link("docker0").unwrap().mtu, 1500, "no ports: 1500");

    // Once set by the user, the bridge keeps its MTU.
    host.set_mtu("docker0", 1400).unwrap();
    host.create_veth(&veth("veth3", "eth2", NETNS)).unwrap();
    host.set_master("veth3", "docker0").unwrap();
    assert_eq!(host.link("docker0").unwrap().mtu, 1400);
    host.delete_link("veth3").unwrap();
    assert_eq!(host.link("docker0").unwrap().mtu, 1400);
}

// ---------------------------------------------------------------------------------------
// Routes

#[test]
fn add_route_needs_the_gateway_on_a_connected_network() {
    let (mut host, ctr) = world();
    host.create_veth(&veth("veth1", "eth0", NETNS)).unwrap();
    let mut c = ctr.clone();
    c.set_up("lo").unwrap();
    c.add_addr("eth0", net("172.17.0.2/16")).unwrap();
    let before = ctr.snapshot();

    // eth0 is down: no connected route yet.
    let err = c.add_route(&default_via("172.17.0.1")).unwrap_err();
    assert_eq!(err.kind, OpsErrorKind::Other);
    assert!(err.to_string().contains("Network is unreachable"), "{err}");
    assert!(
        err.to_string()
            .starts_with("add route default via 172.17.0.1: "),
        "{err}"
    );
    c.set_up("eth0").unwrap();
    // Up, but the gateway is on another network.
    let err = c.add_route(&default_via("10.0.0.1")).unwrap_err();
    assert!(err.to_string().contains("Network is unreachable"), "{err}");
    c.set_down("eth0").unwrap();
    assert_eq!(ctr.snapshot(), before);

    c.set_up("eth0").unwrap();
    c.add_route(&default_via("172.17.0.1")).unwrap();
    let index = ctr.link("eth0").unwrap().index;
    assert_eq!(
        ctr.routes()[0],
        RouteV4 {
            dst: None,
            gateway: Some("172.17.0.1".parse().unwrap()),
            oif: Some(index)
        },
        "the output interface is resolved"
    );
    // A second default route: EEXIST, whatever the gateway.
    let err = c.add_route(&default_via("172.17.0.254")).unwrap_err();
    assert_eq!(err.kind, OpsErrorKind::AlreadyExists);
    // The route goes when its link goes down (and is not restored by set_up).
    c.set_down("eth0").unwrap();
    c.set_up("eth0").unwrap();
    assert!(ctr.routes().iter().all(|r| r.dst.is_some()));
}

#[test]
fn add_route_checks_its_device_and_destination() {
    let mut host = FakeHost::new().with_device("eth0", &[net("10.0.2.15/24")]);
    let eth0 = host.link("eth0").unwrap().index;
    let before = host.snapshot();
    let cases = [
        (
            RouteV4 {
                dst: Some(net("10.9.0.0/16")),
                gateway: None,
                oif: None,
            },
            OpsErrorKind::NotFound,
        ),
        (
            RouteV4 {
                dst: Some(net("10.9.0.0/16")),
                gateway: None,
                oif: Some(99),
            },
            OpsErrorKind::NotFound,
        ),
        (
            RouteV4 {
                dst: Some(net("10.9.0.1/16")),
                gateway: None,
                oif: Some(eth0),
            },
            OpsErrorKind::Other,
        ),
        (
            // The prefix route of eth0's address is already there.
            RouteV4 {
                dst: Some(net("10.0.2.0/24")),
                gateway: None,
                oif: Some(eth0),
            },
            OpsErrorKind::AlreadyExists,
        ),
        (
            // Through eth0, but the gateway is not on eth0's network.
            RouteV4 {
                dst: Some(net("10.9.0.0/16")),
                gateway: Some("192.168.1.1".parse().unwrap()),
                oif: Some(eth0),
            },
            OpsErrorKind::Other,
        ),
    ];
    for (route, kind) in cases {
        assert_eq!(host.add_route(&route).unwrap_err().kind, kind, "{route:?}");
    }
    assert_eq!(host.snapshot(), before);

    host.add_route(&RouteV4 {
        dst: Some(net("10.9.0.0/16")),
        gateway: Some("10.0.2.2".parse().unwrap()),
        oif: Some(eth0),
    })
    .unwrap();
    host.add_route(&RouteV4 {
        dst: Some(net("10.8.0.0/16")),
        gateway: None,
        oif: Some(eth0),
    })
    .unwrap();
    // A device route makes its destination connected: a gateway in it is reachable.
    host.add_route(&RouteV4 {
        dst: Some(net("10.7.0.0/16")),
        gateway: Some("10.8.0.1".parse().unwrap()),
        oif: None,
    })
    .unwrap();
    assert_eq!(host.routes().len(), 4);

    // A down device takes no route at all.
    host.set_down("eth0").unwrap();
    let err = host
        .add_route(&RouteV4 {
            dst: Some(net("10.9.0.0/16")),
            gateway: None,
            oif: Some(eth0),
        })
        .unwrap_err();
    assert!(err.to_string().contains("Network is down"), "{err}");
}

// ---------------------------------------------------------------------------------------
// Retiring links and deleting a device group

#[test]
fn retire_unplugs_downs_and_groups_and_delete_group_takes_both_ends() {
    let (mut host, ctr) = world();
    let before = (host.snapshot(), ctr.snapshot());
    host.create_veth(&veth("veth1", "eth0", NETNS)).unwrap();
    host.set_master("veth1", "docker0").unwrap();
    host.set_up("veth1").unwrap();
    host.create_veth(&veth("veth2", "eth1", NETNS)).unwrap();
    host.set_master("veth2", "docker0").unwrap();
    // An administrator's link in another group, and one in ours that is not ours to judge.
    host.create_veth(&veth("veth3", "eth2", NETNS)).unwrap();
    host.retire_link("veth3", 7).unwrap();

    host.retire_link("veth1", 77).unwrap();
    let l = host.link("veth1").unwrap();
    assert!(!l.up, "down");
    assert_eq!(host.master("veth1"), None, "off the bridge");
    assert_eq!(host.group("veth1"), 77);
    assert_eq!(host.group("veth2"), 0, "others untouched");
    assert_eq!(host.master("veth2").as_deref(), Some("docker0"));
    assert!(ctr.link("eth0").is_some(), "the peer waits for the reaping");
    assert_eq!(host.snapshot().groups.get("veth1"), Some(&77));
    let e = host.retire_link("nosuch0", 77).unwrap_err();
    assert_eq!(e.kind, OpsErrorKind::NotFound);

    host.retire_link("veth2", 77).unwrap();
    host.delete_group(77).unwrap();
    assert!(host.link("veth1").is_none() && host.link("veth2").is_none());
    assert!(ctr.link("eth0").is_none() && ctr.link("eth1").is_none());
    assert_eq!(host.group("veth3"), 7, "another group stays");
    assert!(ctr.link("eth2").is_some());
    // Nothing left in the group: still fine.
    host.delete_group(77).unwrap();
    host.delete_group(7).unwrap();
    assert_eq!((host.snapshot(), ctr.snapshot()), before);
    assert_eq!(
        host.mutations()
            .iter()
            .filter(|m| matches!(m, Call::DeleteGroup(_)))
            .count(),
        3
    );
}

#[test]
fn delete_group_refuses_group_zero_and_groups_with_fixed_links() {
    let (mut host, ctr) = world();
    host.create_veth(&veth("veth1", "eth0", NETNS)).unwrap();
    host.retire_link("veth1", 9).unwrap();
    host.retire_link("lo", 9).unwrap();
    let before = (host.snapshot(), ctr.snapshot());
    let e = host.delete_group(9).unwrap_err();
    assert!(e.to_string().contains("not supported"), "{e}");
    assert_eq!((host.snapshot(), ctr.snapshot()), before, "nothing deleted");
    assert!(host.delete_group(0).is_err());
    // Moving lo back to the default group lets the rest go.
    host.retire_link("lo", 0).unwrap();
    host.delete_group(9).unwrap();
    assert!(host.link("veth1").is_none() && ctr.link("eth0").is_none());
}

// Recording and faults

#[test]
fn the_attach_operations_are_mutating_and_can_be_failed() {
    for op in [
        Op::CreateVeth,
        Op::SetMaster,
        Op::SetHairpin,
        Op::SetIpv6AutoconfOff,
        Op::AddRoute,
        Op::RetireLink,
        Op::DeleteGroup,
    ] {
        assert!(op.is_mutating(), "{op:?}");
        assert!(Op::ALL.contains(&op), "{op:?}");
    }

    let (mut host, ctr) = world();
    let before = (host.snapshot(), ctr.snapshot());
    host.fail_nth(Op::CreateVeth, 1);
    let err = host.create_veth(&veth("veth1", "eth0", NETNS)).unwrap_err();
    assert!(err.source.downcast_ref::<InjectedFault>().is_some());
    assert_eq!(
        (host.snapshot(), ctr.snapshot()),
        before,
        "nothing on either side"
    );
    assert!(host.history()[0].injected);

    host.create_veth(&veth("veth1", "eth0", NETNS)).unwrap();
    host.fail_nth_with(Op::SetMaster, 1, OpsErrorKind::PermissionDenied);
    assert_eq!(
        host.set_master("veth1", "docker0").unwrap_err().kind,
        OpsErrorKind::PermissionDenied
    );
    assert_eq!(host.master("veth1"), None);
    host.set_master("veth1", "docker0").unwrap();

    host.fail_nth_mutation(1);
    assert!(host.set_hairpin("veth1", true).is_err());
    assert!(!host.hairpin("veth1"));

    host.fail_nth(Op::SetIpv6AutoconfOff, 1);
    let err = host.set_ipv6_autoconf_off("veth1").unwrap_err();
    assert!(err.source.downcast_ref::<InjectedFault>().is_some());
    assert!(
        !host.ipv6_autoconf_off("veth1"),
        "a failed call changes nothing"
    );

    let mut c = ctr.clone();
    c.set_up("lo").unwrap();
    c.add_addr("eth0", net("172.17.0.2/16")).unwrap();
    c.set_up("eth0").unwrap();
    c.fail_every(Op::AddRoute, OpsErrorKind::Other);
    assert!(c.add_route(&default_via("172.17.0.1")).is_err());
    assert!(c.add_route(&default_via("172.17.0.1")).is_err());
    c.clear_faults();
    c.add_route(&default_via("172.17.0.1")).unwrap();

    assert_eq!(
        host.mutations(),
        vec![
            Call::CreateVeth(veth("veth1", "eth0", NETNS)),
            Call::CreateVeth(veth("veth1", "eth0", NETNS)),
            Call::SetMaster("veth1".into(), "docker0".into()),
            Call::SetMaster("veth1".into(), "docker0".into()),
            Call::SetHairpin("veth1".into(), true),
            Call::SetIpv6AutoconfOff("veth1".into()),
        ]
    );
    assert_eq!(
        c.mutations()
            .iter()
            .filter(|m| m.op() == Op::AddRoute)
            .count(),
        3
    );
}

#[test]
fn calls_display_as_the_operation_and_its_object() {
    let cases = [
        (
            Call::CreateVeth(veth("veth1", "eth0", NETNS)),
            "create veth veth1 with peer eth0 in /run/netns/c1",
        ),
        (
            Call::SetMaster("veth1".into(), "docker0".into()),
            "set master of veth1 to docker0",
        ),
        (
            Call::SetHairpin("veth1".into(), true),
            "set hairpin on on veth1",
        ),
        (
            Call::SetHairpin("veth1".into(), false),
            "set hairpin off on veth1",
        ),
        (
            Call::AddRoute(default_via("172.17.0.1")),
            "add route default via 172.17.0.1",
        ),
        (
            Call::AddRoute(RouteV4 {
                dst: Some(net("10.8.0.0/16")),
                gateway: None,
                oif: Some(3),
            }),
            "add route 10.8.0.0/16 dev index 3",
        ),
        (
            Call::RetireLink("veth1".into(), 77),
            "retire veth1 (nomaster, down, group 77)",
        ),
        (Call::DeleteGroup(77), "delete the links of group 77"),
        (
            Call::SetIpv6AutoconfOff("veth1".into()),
            "turn IPv6 autoconfiguration off on veth1",
        ),
    ];
    for (call, text) in cases {
        assert_eq!(call.to_string(), text);
    }
}

#[test]
fn opposite_cross_namespace_operations_do_not_deadlock() {
    // Each namespace registered in the other: one thread works host -> container, the other
    // container -> host, both taking two locks. The watchdog turns a deadlock into a failure
    // instead of a hung test run; it measures nothing.
    let ctr = FakeHost::new_netns();
    let host = FakeHost::new().with_netns(NETNS, ctr.clone());
    let ctr = ctr.with_netns(INIT_NETNS, host.clone());
    let (done, finished) = std::sync::mpsc::channel();
    for (ns, other, prefix) in [(host, NETNS, "h"), (ctr, INIT_NETNS, "c")] {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut ns = ns;
            for i in 0..300 {
                let spec = veth(&format!("{prefix}a{i}"), &format!("{prefix}b{i}"), other);
                ns.create_veth(&spec).unwrap();
                ns.delete_link(&spec.host).unwrap();
            }
            done.send(()).unwrap();
        });
    }
    for _ in 0..2 {
        finished
            .recv_timeout(std::time::Duration::from_secs(120))
            .expect("both threads finish: no deadlock");
    }
}
