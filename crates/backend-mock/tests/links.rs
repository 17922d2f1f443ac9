//! FakeHost's links, addresses, routes and sysctls behave like the kernel's.
#![allow(clippy::unwrap_used)]

use backend_mock::FakeHost;
use ipnet::Ipv4Net;
use netcore::mac::MacAddr;
use netcore::ops::{BridgeSpec, IP_FORWARD, LinkOps, OpsErrorKind, RouteV4, SysctlOps};

fn net(s: &str) -> Ipv4Net {
    s.parse().unwrap()
}

fn bridge(name: &str) -> BridgeSpec {
    BridgeSpec {
        name: name.to_owned(),
        mac: MacAddr([0x02, 0x42, 0xac, 0x11, 0x00, 0x01]),
        mtu: None,
        mcast_snooping: true,
    }
}

#[test]
fn a_new_host_is_a_fresh_machine() {
    let mut host = FakeHost::new();
    let links = host.links().unwrap();
    assert_eq!(links.len(), 1);
    assert_eq!(links[0].name, "lo");
    assert_eq!(links[0].addrs, vec![net("127.0.0.1/8")]);
    // Loopback's prefix route lives in the local table, not the main one.
    assert_eq!(host.routes_v4().unwrap(), vec![]);
    assert_eq!(host.read(IP_FORWARD).unwrap(), "0");
}

#[test]
fn create_bridge_makes_a_down_bridge_with_its_mac_and_default_mtu() {
    let host = FakeHost::new();
    let (mut link, _, _) = host.ops();
    link.create_bridge(&bridge("docker0")).unwrap();
    let br = host.link("docker0").unwrap();
    assert_eq!(br.kind.as_deref(), Some("bridge"));
    assert_eq!(br.mac, Some(MacAddr([0x02, 0x42, 0xac, 0x11, 0x00, 0x01])));
    assert_eq!(br.mtu, 1500);
    assert!(!br.up);
    assert!(br.addrs.is_empty());

    let spec = BridgeSpec {
        mtu: Some(9000),
        mcast_snooping: true,
        ..bridge("jumbo0")
    };
    link.create_bridge(&spec).unwrap();
    assert_eq!(host.link("jumbo0").unwrap().mtu, 9000);
    assert!(host.link("jumbo0").unwrap().index > br.index);
}

#[test]
fn create_bridge_refuses_an_existing_name_and_changes_nothing() {
    let mut host = FakeHost::new().with_bridge("docker0", net("172.17.42.1/16"));
    let before = host.snapshot();
    let err = host.create_bridge(&bridge("docker0")).unwrap_err();
    assert_eq!(err.kind, OpsErrorKind::AlreadyExists);
    assert!(err.to_string().contains("docker0"), "{err}");
    let err = host.create_bridge(&bridge("lo")).unwrap_err();
    assert_eq!(err.kind, OpsErrorKind::AlreadyExists);
    assert_eq!(host.snapshot(), before);
}

#[test]
fn create_bridge_refuses_names_of_16_bytes_or_more() {
    let mut host = FakeHost::new();
    let before = host.snapshot();
    let err = host.create_bridge(&bridge("sixteen-bytes-xx")).unwrap_err();
    assert_eq!(err.kind, OpsErrorKind::Other);
    assert_eq!(host.snapshot(), before);
    host.create_bridge(&bridge("fifteen-bytes-x")).unwrap();
    assert!(host.link("fifteen-bytes-x").is_some());
}

#[test]
fn create_bridge_refuses_a_multicast_mac_and_a_bad_mtu() {
    let mut host = FakeHost::new();
    let spec = BridgeSpec {
        mac: MacAddr([0x03, 0, 0, 0, 0, 1]),
        ..bridge("br0")
    };
    assert_eq!(
        host.create_bridge(&spec).unwrap_err().kind,
        OpsErrorKind::Other
    );
    let spec = BridgeSpec {
        mtu: Some(67),
        mcast_snooping: true,
        ..bridge("br0")
    };
    assert_eq!(
        host.create_bridge(&spec).unwrap_err().kind,
        OpsErrorKind::Other
    );
    assert!(host.link("br0").is_none());
}

#[test]
fn an_address_route_appears_when_the_link_is_up() {
    let mut host = FakeHost::new();
    host.create_bridge(&bridge("docker0")).unwrap();
    host.add_addr("docker0", net("172.17.42.1/16")).unwrap();
    assert_eq!(
        host.link("docker0").unwrap().addrs,
        vec![net("172.17.42.1/16")]
    );
    assert_eq!(
        host.routes_v4().unwrap(),
        vec![],
        "a down link has no prefix route"
    );

    host.set_up("docker0").unwrap();
    let index = host.link("docker0").unwrap().index;
    assert_eq!(
        host.routes_v4().unwrap(),
        vec![RouteV4 {
            dst: Some(net("172.17.0.0/16")),
            gateway: None,
            oif: Some(index),
        }]
    );
}

#[test]
fn adding_an_existing_address_fails_already_exists() {
    let mut host = FakeHost::new().with_bridge("docker0", net("172.17.42.1/16"));
    let before = host.snapshot();
    let err = host.add_addr("docker0", net("172.17.42.1/16")).unwrap_err();
    assert_eq!(err.kind, OpsErrorKind::AlreadyExists);
    assert_eq!(host.snapshot(), before);
    // Same address, other prefix: the kernel accepts it.
    host.add_addr("docker0", net("172.17.42.1/24")).unwrap();
}

#[test]
fn del_addr_removes_the_address_and_its_route() {
    let mut host = FakeHost::new().with_bridge("docker0", net("172.17.42.1/16"));
    assert_eq!(host.routes_v4().unwrap().len(), 1);
    host.del_addr("docker0", net("172.17.42.1/16")).unwrap();
    assert!(host.link("docker0").unwrap().addrs.is_empty());
    assert_eq!(host.routes_v4().unwrap(), vec![]);

    let err = host.del_addr("docker0", net("172.17.42.1/16")).unwrap_err();
    assert_eq!(err.kind, OpsErrorKind::NotFound);
}

#[test]
fn operations_on_unknown_links_fail_not_found() {
    let mut host = FakeHost::new();
    let before = host.snapshot();
    assert_eq!(
        host.set_up("nope0").unwrap_err().kind,
        OpsErrorKind::NotFound
    );
    assert_eq!(
        host.set_mtu("nope0", 1400).unwrap_err().kind,
        OpsErrorKind::NotFound
    );
    assert_eq!(
        host.delete_link("nope0").unwrap_err().kind,
        OpsErrorKind::NotFound
    );
    assert_eq!(
        host.add_addr("nope0", net("10.0.0.1/24")).unwrap_err().kind,
        OpsErrorKind::NotFound
    );
    assert_eq!(
        host.del_addr("nope0", net("10.0.0.1/24")).unwrap_err().kind,
        OpsErrorKind::NotFound
    );
    assert_eq!(host.snapshot(), before);
}

#[test]
fn set_mtu_changes_the_mtu_within_the_kernel_range() {
    let mut host = FakeHost::new().with_bridge("docker0", net("172.17.42.1/16"));
    host.set_mtu("docker0", 1400).unwrap();
    assert_eq!(host.link("docker0").unwrap().mtu, 1400);
    assert_eq!(
        host.set_mtu("docker0", 65536).unwrap_err().kind,
        OpsErrorKind::Other
    );
    assert_eq!(host.link("docker0").unwrap().mtu, 1400);
}

#[test]
fn delete_link_takes_addresses_routes_and_interface_routes_with_it() {
    let host = FakeHost::new().with_device("eth0", &[net("10.0.2.15/24")]);
    let before = host.snapshot();
    let mut link = host.link_ops();
    link.create_bridge(&bridge("docker0")).unwrap();
    link.add_addr("docker0", net("172.17.42.1/16")).unwrap();
    link.set_up("docker0").unwrap();
    assert_eq!(link.routes_v4().unwrap().len(), 2);
    link.delete_link("docker0").unwrap();
    assert!(host.link("docker0").is_none());
    assert_eq!(host.snapshot(), before);
}

#[test]
fn a_static_route_through_a_deleted_link_goes_with_it() {
    let host = FakeHost::new().with_bridge("br1", net("10.1.0.1/24"));
    let index = host.link("br1").unwrap().index;
    let host = host.with_route_v4(RouteV4 {
        dst: Some(net("10.99.0.0/16")),
        gateway: Some("10.1.0.254".parse().unwrap()),
        oif: Some(index),
    });
    let mut link = host.link_ops();
    assert_eq!(link.routes_v4().unwrap().len(), 2);
    link.delete_link("br1").unwrap();
    assert_eq!(link.routes_v4().unwrap(), vec![]);
}

#[test]
fn physical_devices_and_loopback_cannot_be_deleted() {
    let mut host = FakeHost::new().with_device("eth0", &[]);
    assert_eq!(
        host.delete_link("eth0").unwrap_err().kind,
        OpsErrorKind::Other
    );
    assert_eq!(
        host.delete_link("lo").unwrap_err().kind,
        OpsErrorKind::Other
    );
    assert!(host.link("eth0").is_some() && host.link("lo").is_some());
}

#[test]
fn indexes_are_not_reused_after_a_delete() {
    let mut host = FakeHost::new();
    host.create_bridge(&bridge("br0")).unwrap();
    let first = host.link("br0").unwrap().index;
    host.delete_link("br0").unwrap();
    host.create_bridge(&bridge("br0")).unwrap();
    assert!(host.link("br0").unwrap().index > first);
}

#[test]
fn with_route_feeds_routes_v4() {
    let mut host = FakeHost::new()
        .with_route(net("10.0.42.0/24"))
        .with_route(net("10.0.2.0/32"));
    let dsts: Vec<_> = host
        .routes_v4()
        .unwrap()
        .into_iter()
        .map(|r| r.dst)
        .collect();
    assert_eq!(dsts, [Some(net("10.0.2.0/32")), Some(net("10.0.42.0/24"))]);
}

#[test]
fn sysctls_read_and_write_known_keys_only() {
    let host = FakeHost::new().with_sysctl("net/bridge/bridge-nf-call-iptables", "1");
    let mut sys = host.sysctl_ops();
    assert_eq!(sys.read(IP_FORWARD).unwrap(), "0");
    sys.write(IP_FORWARD, "1\n").unwrap();
    assert_eq!(sys.read(IP_FORWARD).unwrap(), "1");
    assert_eq!(sys.read("net/bridge/bridge-nf-call-iptables").unwrap(), "1");

    let before = host.snapshot();
    assert_eq!(
        sys.read("net/ipv4/nope").unwrap_err().kind,
        OpsErrorKind::NotFound
    );
    assert_eq!(
        sys.write("net/ipv4/nope", "1").unwrap_err().kind,
        OpsErrorKind::NotFound
    );
    assert_eq!(
        sys.write(IP_FORWARD, "yes").unwrap_err().kind,
        OpsErrorKind::Other
    );
    assert_eq!(host.snapshot(), before);
}

#[test]
fn with_link_replaces_by_name_and_assigns_a_free_index() {
    let host = FakeHost::new()
        .with_device("eth0", &[net("10.0.2.15/24")])
        .with_device("eth0", &[net("192.168.1.5/24")]);
    let snap = host.snapshot();
    let names: Vec<_> = snap.links.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["lo", "eth0"]);
    assert_eq!(snap.links[1].addrs, vec![net("192.168.1.5/24")]);
    assert_eq!(snap.routes.len(), 1);
    assert_eq!(snap.routes[0].dst, Some(net("192.168.1.0/24")));
}

#[test]
fn set_down_removes_the_routes_through_the_link_and_set_up_restores_prefix_routes() {
    let host = FakeHost::new().with_bridge("br1", net("10.1.0.1/24"));
    let index = host.link("br1").unwrap().index;
    let host = host.with_route_v4(RouteV4 {
        dst: Some(net("10.99.0.0/16")),
        gateway: Some("10.1.0.254".parse().unwrap()),
        oif: Some(index),
    });
    let mut link = host.link_ops();
    assert_eq!(link.routes_v4().unwrap().len(), 2);
    link.set_down("br1").unwrap();
    assert!(!host.link("br1").unwrap().up);
    assert_eq!(link.routes_v4().unwrap(), vec![]);
    assert_eq!(host.link("br1").unwrap().addrs, vec![net("10.1.0.1/24")]);
    link.set_up("br1").unwrap();
    let dsts: Vec<_> = link
        .routes_v4()
        .unwrap()
        .into_iter()
        .map(|r| r.dst)
        .collect();
    assert_eq!(dsts, [Some(net("10.1.0.0/24"))]);
}

#[test]
fn errors_name_the_operation_and_the_link() {
    let mut host = FakeHost::new();
    host.create_bridge(&bridge("docker0")).unwrap();
    let err = host.create_bridge(&bridge("docker0")).unwrap_err();
    assert!(
        err.to_string().starts_with("create bridge docker0: "),
        "{err}"
    );
    let err = host.set_down("nope0").unwrap_err();
    assert!(err.to_string().starts_with("set nope0 down: "), "{err}");
    let err = host.create_bridge(&bridge("sixteen-bytes-xx")).unwrap_err();
    assert!(err.to_string().contains("sixteen-bytes-xx"), "{err}");
}
