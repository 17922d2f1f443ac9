//! attach's pure decisions: the containers' MTU, the host veth's name, and the plan's order.

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use ipnet::Ipv4Net;
use netcore::attach::{self, AttachRequest, AttachStep, DEFAULT_MTU};
use netcore::handlers::Interface;
use netcore::ifname::IfName;
use netcore::mac::MacAddr;
use netcore::ops::{LinkInfo, RouteV4, VethSpec};
use proptest::prelude::*;

fn link(name: &str, index: u32, mtu: u32) -> LinkInfo {
    LinkInfo {
        name: name.to_owned(),
        index,
        kind: None,
        mac: None,
        mtu,
        up: true,
        addrs: Vec::new(),
    }
}

fn default_route(gw: [u8; 4], oif: Option<u32>) -> RouteV4 {
    RouteV4 {
        dst: None,
        gateway: Some(Ipv4Addr::from(gw)),
        oif,
    }
}

fn prefix_route(dst: &str, oif: u32) -> RouteV4 {
    RouteV4 {
        dst: Some(dst.parse().expect("valid CIDR in test")),
        gateway: None,
        oif: Some(oif),
    }
}

/// lo, eth0 (MTU 9001) and wlan0 (MTU 1400).
fn links() -> Vec<LinkInfo> {
    vec![
        link("lo", 1, 65536),
        link("eth0", 2, 9001),
        link("wlan0", 3, 1400),
    ]
}

// ---------------------------------------------------------------------------------------
// container_mtu

#[test]
fn a_configured_mtu_wins_over_the_default_route() {
    let routes = [default_route([10, 0, 2, 1], Some(2))];
    assert_eq!(attach::container_mtu(Some(1450), &links(), &routes), 1450);
    assert_eq!(attach::container_mtu(Some(9500), &links(), &routes), 9500);
    assert_eq!(attach::container_mtu(Some(1450), &[], &[]), 1450);
}

#[test]
fn without_configuration_the_default_routes_interface_mtu_is_used() {
    let routes = [
        prefix_route("192.168.1.0/24", 3),
        default_route([10, 0, 2, 1], Some(2)),
        prefix_route("10.0.2.0/24", 2),
    ];
    assert_eq!(attach::container_mtu(None, &links(), &routes), 9001);
    let routes = [default_route([192, 168, 1, 1], Some(3))];
    assert_eq!(attach::container_mtu(None, &links(), &routes), 1400);
}

#[test]
fn without_a_default_route_the_mtu_is_1500() {
    assert_eq!(DEFAULT_MTU, 1500);
    // Only prefix routes, on links with other MTUs.
    let routes = [
        prefix_route("10.0.2.0/24", 2),
        prefix_route("192.168.1.0/24", 3),
    ];
    assert_eq!(attach::container_mtu(None, &links(), &routes), 1500);
    assert_eq!(attach::container_mtu(None, &links(), &[]), 1500);
}

#[test]
fn a_default_route_without_an_interface_gives_1500() {
    // E.g. a multipath default route (Docker 1.x dereferenced nil here).
    let routes = [default_route([10, 0, 2, 1], None)];
    assert_eq!(attach::container_mtu(None, &links(), &routes), 1500);
    // An interface the link list does not have (it went away between the two reads).
    let routes = [default_route([10, 0, 2, 1], Some(42))];
    assert_eq!(attach::container_mtu(None, &links(), &routes), 1500);
}

#[test]
fn with_several_default_routes_the_first_decides() {
    let eth0_first = [
        default_route([10, 0, 2, 1], Some(2)),
        default_route([192, 168, 1, 1], Some(3)),
    ];
    assert_eq!(attach::container_mtu(None, &links(), &eth0_first), 9001);
    let wlan0_first = [eth0_first[1], eth0_first[0]];
    assert_eq!(attach::container_mtu(None, &links(), &wlan0_first), 1400);
    // The first one decides even when it has no interface.
    let first_without_oif = [default_route([10, 0, 2, 1], None), eth0_first[1]];
    assert_eq!(
        attach::container_mtu(None, &links(), &first_without_oif),
        1500
    );
}

// ---------------------------------------------------------------------------------------
// host_veth_name

#[test]
fn the_veth_name_is_stable_for_one_container() {
    let id = "4f1c2b7e9d0a6c3b8e5f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d";
    let name = attach::host_veth_name(id, 0);
    assert_eq!(attach::host_veth_name(id, 0), name);
    // Depends on the text only, not on where it lives.
    let copy = String::from(id);
    assert_eq!(attach::host_veth_name(&copy, 0), name);
    assert!(name.starts_with("veth"), "{name}");
    assert_eq!(name.len(), 11, "{name}");
    assert!(name[4..].bytes().all(|b| b.is_ascii_hexdigit()), "{name}");
}

#[test]
fn the_veth_name_differs_between_containers_and_salts() {
    let ids: Vec<String> = (0..500).map(|i| format!("container-{i:04}")).collect();
    let names: HashSet<_> = ids.iter().map(|id| attach::host_veth_name(id, 0)).collect();
    assert_eq!(names.len(), ids.len(), "distinct ids, distinct names");

    let salted: HashSet<_> = (0..500)
        .map(|salt| attach::host_veth_name("container-0000", salt))
        .collect();
    assert_eq!(salted.len(), 500, "distinct salts, distinct names");
    // Ids that differ in one character only.
    assert_ne!(
        attach::host_veth_name("abc", 0),
        attach::host_veth_name("abd", 0)
    );
    assert_ne!(attach::host_veth_name("", 0), attach::host_veth_name("", 1));
}

proptest! {
    #[test]
    fn the_veth_name_is_always_a_valid_interface_name(id in ".*", salt in any::<u32>()) {
        let name = attach::host_veth_name(&id, salt);
        prop_assert!(name.len() <= 15, "{}", name);
        prop_assert!(IfName::new(&name).is_ok(), "{}", name);
        prop_assert_eq!(attach::host_veth_name(&id, salt), name);
    }
}

// ---------------------------------------------------------------------------------------
// plan

fn request(hairpin: bool) -> AttachRequest {
    AttachRequest {
        bridge: "docker0".to_owned(),
        host_veth: "veth1a2b3c4".to_owned(),
        netns: PathBuf::from("/proc/4242/ns/net"),
        ifname: "eth0".to_owned(),
        ip: Ipv4Addr::new(172, 17, 0, 2),
        prefix_len: 16,
        gateway: Ipv4Addr::new(172, 17, 0, 1),
        mac: MacAddr([0x02, 0x42, 0xac, 0x11, 0x00, 0x02]),
        mtu: 1450,
        hairpin,
    }
}

/// The plan written out by hand: create, IPv6 autoconfiguration off on the host end, master,
/// [hairpin], host up, lo up, IPv6 autoconfiguration off on the container end, addr,
/// container up, default route.
fn expected_plan(hairpin: bool) -> Vec<AttachStep> {
    let mut steps = vec![
        AttachStep::CreateVeth(VethSpec {
            host: "veth1a2b3c4".to_owned(),
            peer: "eth0".to_owned(),
            peer_netns: PathBuf::from("/proc/4242/ns/net"),
            peer_mac: MacAddr([0x02, 0x42, 0xac, 0x11, 0x00, 0x02]),
            mtu: 1450,
        }),
        AttachStep::HostIpv6Off {
            link: "veth1a2b3c4".to_owned(),
        },
        AttachStep::SetMaster {
            link: "veth1a2b3c4".to_owned(),
            master: "docker0".to_owned(),
        },
    ];
    if hairpin {
        steps.push(AttachStep::SetHairpin {
            link: "veth1a2b3c4".to_owned(),
        });
    }
    steps.extend([
        AttachStep::HostUp {
            link: "veth1a2b3c4".to_owned(),
        },
        AttachStep::CtrUp {
            link: "lo".to_owned(),
        },
        AttachStep::CtrNoIpv6Autoconf {
            link: "eth0".to_owned(),
        },
        AttachStep::CtrAddAddr {
            link: "eth0".to_owned(),
            addr: "172.17.0.2/16".parse().expect("valid CIDR"),
        },
        AttachStep::CtrUp {
            link: "eth0".to_owned(),
        },
        AttachStep::CtrDefaultRoute {
            gateway: Ipv4Addr::new(172, 17, 0, 1),
        },
    ]);
    steps
}

#[test]
fn the_plan_without_hairpin_is_in_order() {
    assert_eq!(attach::plan(&request(false)), expected_plan(false));
}

#[test]
fn the_plan_with_hairpin_sets_it_right_after_the_master() {
    let plan = attach::plan(&request(true));
    assert_eq!(plan, expected_plan(true));
    assert_eq!(plan.len(), attach::plan(&request(false)).len() + 1);
}

#[test]
fn both_veth_ends_lose_ipv6_autoconfiguration_while_down_and_lo_keeps_it() {
    for hairpin in [false, true] {
        let req = AttachRequest {
            ifname: "net1".to_owned(),
            ..request(hairpin)
        };
        let plan = attach::plan(&req);
        let at = |step: AttachStep| {
            plan.iter()
                .position(|s| *s == step)
                .unwrap_or_else(|| panic!("no step {step:?} in {plan:?}"))
        };
        let veth = || req.host_veth.clone();
        let create = plan
            .iter()
            .position(|s| matches!(s, AttachStep::CreateVeth(_)))
            .expect("a create step");
        let host_off = at(AttachStep::HostIpv6Off { link: veth() });
        assert_eq!(host_off, create + 1, "right after the veth exists");
        assert!(
            host_off
                < at(AttachStep::SetMaster {
                    link: veth(),
                    master: "docker0".to_owned(),
                })
        );
        assert!(host_off < at(AttachStep::HostUp { link: veth() }));
        let ctr_off = at(AttachStep::CtrNoIpv6Autoconf {
            link: "net1".to_owned(),
        });
        assert!(
            ctr_off
                < at(AttachStep::CtrUp {
                    link: "net1".to_owned(),
                })
        );
        // Exactly these two, never loopback (its ::1 stays, as in Docker's containers).
        let offs: Vec<&AttachStep> = plan
            .iter()
            .filter(|s| {
                matches!(
                    s,
                    AttachStep::HostIpv6Off { .. } | AttachStep::CtrNoIpv6Autoconf { .. }
                )
            })
            .collect();
        assert_eq!(offs, [&plan[host_off], &plan[ctr_off]], "hairpin={hairpin}");
    }
}

#[test]
fn the_container_address_keeps_the_host_bits_and_the_prefix() {
    let req = AttachRequest {
        ip: Ipv4Addr::new(10, 1, 2, 3),
        prefix_len: 24,
        ..request(false)
    };
    let addr = attach::plan(&req).into_iter().find_map(|s| match s {
        AttachStep::CtrAddAddr { addr, .. } => Some(addr),
        _ => None,
    });
    assert_eq!(
        addr,
        Some(Ipv4Net::new(Ipv4Addr::new(10, 1, 2, 3), 24).expect("prefix"))
    );
}

#[test]
fn a_request_for_an_interface_carries_its_allocation() {
    let iface = Interface {
        ip: Ipv4Addr::new(172, 17, 0, 9),
        prefix_len: 16,
        mask: Ipv4Addr::new(255, 255, 0, 0),
        gateway: Ipv4Addr::new(172, 17, 0, 1),
        bridge: "br-test".to_owned(),
        mac: MacAddr([0x02, 0x42, 0xac, 0x11, 0x00, 0x09]),
    };
    let req = AttachRequest::for_interface(
        &iface,
        "vethabcdef0".to_owned(),
        PathBuf::from("/run/netns/c9"),
        "eth1".to_owned(),
        1400,
        true,
    );
    assert_eq!(
        req,
        AttachRequest {
            bridge: "br-test".to_owned(),
            host_veth: "vethabcdef0".to_owned(),
            netns: PathBuf::from("/run/netns/c9"),
            ifname: "eth1".to_owned(),
            ip: iface.ip,
            prefix_len: 16,
            gateway: iface.gateway,
            mac: iface.mac,
            mtu: 1400,
            hairpin: true,
        }
    );
}

#[test]
fn each_step_names_what_it_acts_on() {
    let texts: Vec<String> = attach::plan(&request(true))
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        texts,
        [
            "create veth veth1a2b3c4 with peer eth0 in /proc/4242/ns/net \
             (MAC 02:42:ac:11:00:02, MTU 1450)",
            "turn IPv6 off on veth1a2b3c4",
            "attach veth1a2b3c4 to docker0",
            "set hairpin mode on veth1a2b3c4",
            "bring veth1a2b3c4 up",
            "bring lo up in the container",
            "turn IPv6 autoconfiguration off on eth0 in the container",
            "add address 172.17.0.2/16 to eth0 in the container",
            "bring eth0 up in the container",
            "add default route via 172.17.0.1 in the container",
        ]
    );
}
