//! The per-container handlers: state changes and the firewall batches they return.
//! Includes upstream `bridge/driver_test.go` and `portmapper/mapper_test.go` cases.

use std::net::Ipv4Addr;

use netcore::config::{Config, NetworkMode, RawConfig};
use netcore::firewall::{Batch, Table};
use netcore::handlers::{ErrorKind, HandlerError, Network, parse_host_ip};
use netcore::mac::MacAddr;
use netcore::ports::{BEGIN_PORT_RANGE, END_PORT_RANGE, Proto};

fn ip(s: &str) -> Ipv4Addr {
    s.parse().expect("valid IP in test")
}

fn network_with(raw: RawConfig) -> Network {
    let NetworkMode::Bridge(cfg) = raw.validate().expect("valid config") else {
        panic!("disabled");
    };
    Network::new(&cfg, "docker0", "172.17.42.1/16".parse().expect("cidr")).expect("network")
}

fn network() -> Network {
    network_with(RawConfig::default())
}

fn lines(batches: &[Batch]) -> Vec<String> {
    batches
        .iter()
        .flat_map(|b| b.lines.iter().map(move |l| format!("{} {l}", b.table)))
        .collect()
}

#[test]
fn allocate_interface_answers_like_docker() {
    let mut n = network();
    let iface = n.allocate_interface("c1", None, None).expect("allocate");
    // The bridge's own IP (.42.1) is never handed out (moby/moby#9938); next-fit starts
    // at the first host address.
    assert_eq!(iface.ip, ip("172.17.0.1"));
    assert_eq!(iface.prefix_len, 16);
    assert_eq!(iface.mask, ip("255.255.0.0"));
    assert_eq!(iface.mask_hex(), "ffff0000");
    assert_eq!(iface.gateway, ip("172.17.42.1"));
    assert_eq!(iface.bridge, "docker0");
    assert_eq!(iface.mac.to_string(), "02:42:ac:11:00:01");
    let second = n.allocate_interface("c2", None, None).expect("allocate");
    assert_eq!(second.ip, ip("172.17.0.2"));
}

#[test]
fn requested_ip_and_mac_are_honoured_and_conflicts_refused() {
    let mut n = network();
    let mac: MacAddr = "02:aa:bb:cc:dd:ee".parse().expect("mac");
    let iface = n
        .allocate_interface("c1", Some(ip("172.17.5.5")), Some(mac))
        .expect("allocate");
    assert_eq!((iface.ip, iface.mac), (ip("172.17.5.5"), mac));
    let err = n
        .allocate_interface("c2", Some(ip("172.17.5.5")), None)
        .expect_err("taken");
    assert_eq!(err.kind(), ErrorKind::Conflict);
    assert!(err.to_string().contains("already allocated"), "{err}");
    let err = n
        .allocate_interface("c3", Some(ip("10.0.0.5")), None)
        .expect_err("outside");
    assert_eq!(err.kind(), ErrorKind::BadInput);
    assert!(err.to_string().contains("out of range"), "{err}");
    let err = n
        .allocate_interface("c4", Some(ip("172.17.42.1")), None)
        .expect_err("bridge ip");
    assert_eq!(err.kind(), ErrorKind::Conflict);
}

#[test]
fn allocating_twice_for_one_container_returns_the_same_interface_or_conflicts() {
    let mut n = network();
    let first = n.allocate_interface("c1", None, None).expect("allocate");
    let again = n.allocate_interface("c1", None, None).expect("retry");
    assert_eq!(first, again);
    assert_eq!(n.endpoints().len(), 1, "a retry must not leak an address");
    let err = n
        .allocate_interface("c1", Some(ip("172.17.9.9")), None)
        .expect_err("different request");
    assert_eq!(err.kind(), ErrorKind::Conflict);
    assert!(matches!(err, HandlerError::AlreadyAllocated { .. }));
    assert_eq!(
        n.allocate_interface("", None, None),
        Err(HandlerError::EmptyId)
    );
    assert_eq!(
        n.release_interface("").map(|_| ()),
        Err(HandlerError::EmptyId)
    );
    assert_eq!(
        n.allocate_port("", None, 0, 80, Proto::Tcp).map(|_| ()),
        Err(HandlerError::EmptyId)
    );
}

#[test]
fn requested_macs_must_be_unicast_and_non_zero() {
    let mut n = network();
    for bad in [
        "01:00:5e:00:00:01",
        "00:00:00:00:00:00",
        "ff:ff:ff:ff:ff:ff",
    ] {
        let mac: MacAddr = bad.parse().expect("mac");
        let err = n.allocate_interface("c", None, Some(mac)).expect_err(bad);
        assert_eq!(err.kind(), ErrorKind::BadInput);
        assert!(err.to_string().contains(bad), "{err}");
    }
    assert!(n.endpoints().is_empty(), "nothing allocated");
}

#[test]
fn release_interface_unmaps_unlinks_releases_and_forgets() {
    let mut n = network_with(RawConfig {
        icc: Some(false),
        ..Default::default()
    });
    let a = n.allocate_interface("a", None, None).expect("a").ip;
    let b = n.allocate_interface("b", None, None).expect("b").ip;
    n.allocate_port("a", None, 8080, 80, Proto::Tcp)
        .expect("port");
    n.link(b, a, &[(80, Proto::Tcp)], true).expect("link");
    let eff = n.release_interface("a").expect("release");
    assert_eq!(eff.value.ip, a);
    let removed = lines(&eff.firewall);
    assert_eq!(
        removed,
        vec![
            "nat -D DOCKER ! -i docker0 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 172.17.0.1:80",
            "nat -D POSTROUTING -s 172.17.0.1/32 -d 172.17.0.1/32 -p tcp -m tcp --dport 80 -j MASQUERADE",
            "filter -D DOCKER -d 172.17.0.1/32 ! -i docker0 -o docker0 -p tcp -m tcp --dport 80 -j ACCEPT",
            "filter -D DOCKER -s 172.17.0.2/32 -d 172.17.0.1/32 -i docker0 -o docker0 -p tcp -m tcp --dport 80 -j ACCEPT",
            "filter -D DOCKER -s 172.17.0.1/32 -d 172.17.0.2/32 -i docker0 -o docker0 -p tcp -m tcp --sport 80 -j ACCEPT",
        ]
    );
    assert!(n.links().is_empty());
    // Forgotten (Docker 1.x kept the entry): releasing again is Docker's error...
    let err = n.release_interface("a").expect_err("gone");
    assert_eq!(err.to_string(), "No network information to release for a");
    assert_eq!(err.kind(), ErrorKind::NotFound);
    // ...its port is free again, and its IP is free again.
    let c = n
        .allocate_interface("c", Some(a), None)
        .expect("ip reusable");
    assert_eq!(c.ip, a);
    n.allocate_port("c", None, 8080, 80, Proto::Tcp)
        .expect("port reusable");
}

#[test]
fn allocate_port_publishes_with_docker_20_10_rules() {
    let mut n = network();
    n.allocate_interface("c1", Some(ip("172.17.0.2")), None)
        .expect("iface");
    let eff = n
        .allocate_port("c1", None, 0, 80, Proto::Tcp)
        .expect("dynamic port");
    assert_eq!(eff.value.host_port, BEGIN_PORT_RANGE);
    assert_eq!(eff.value.host_ip, Ipv4Addr::UNSPECIFIED);
    assert_eq!(
        lines(&eff.firewall),
        vec![
            "nat -A DOCKER ! -i docker0 -p tcp -m tcp --dport 49153 -j DNAT --to-destination 172.17.0.2:80",
            "nat -A POSTROUTING -s 172.17.0.2/32 -d 172.17.0.2/32 -p tcp -m tcp --dport 80 -j MASQUERADE",
            "filter -A DOCKER -d 172.17.0.2/32 ! -i docker0 -o docker0 -p tcp -m tcp --dport 80 -j ACCEPT",
        ]
    );
    assert_eq!(eff.firewall.len(), 2, "one batch per table");
    let eff = n
        .allocate_port("c1", Some(ip("127.0.0.1")), 8080, 53, Proto::Udp)
        .expect("explicit");
    assert!(
        lines(&eff.firewall)[0].contains("-d 127.0.0.1/32 ! -i docker0 -p udp -m udp --dport 8080")
    );
}

#[test]
fn allocate_port_detection() {
    // Upstream TestAllocatePortDetection: the same explicit port twice must fail.
    let mut n = network();
    n.allocate_interface("c1", None, None).expect("iface");
    n.allocate_port("c1", Some(ip("127.0.0.1")), 8080, 80, Proto::Tcp)
        .expect("first");
    let err = n
        .allocate_port("c1", Some(ip("127.0.0.1")), 8080, 80, Proto::Tcp)
        .expect_err("second");
    assert_eq!(
        err.to_string(),
        "Bind for 127.0.0.1:8080 failed: port is already allocated"
    );
    assert_eq!(err.kind(), ErrorKind::Conflict);
}

#[test]
fn hostname_format_checking() {
    // Upstream TestHostnameFormatChecking: HostIP "localhost" fails.
    let err = parse_host_ip("localhost").expect_err("not an IP");
    assert_eq!(err.to_string(), "Bad parameter: invalid host ip localhost");
    assert_eq!(err.kind(), ErrorKind::BadInput);
    assert_eq!(parse_host_ip("127.0.0.1"), Ok(ip("127.0.0.1")));
}

#[test]
fn map_ports_like_the_portmapper_test() {
    // Upstream TestMapPorts, with containers instead of raw addresses.
    let mut n = network();
    n.allocate_interface("a", None, None).expect("a");
    n.allocate_interface("b", None, None).expect("b");
    let host1 = ip("192.168.0.1");
    n.allocate_port("a", Some(host1), 80, 1080, Proto::Tcp)
        .expect("map");
    assert!(
        n.allocate_port("a", Some(host1), 80, 1080, Proto::Tcp)
            .is_err()
    );
    assert!(
        n.allocate_port("b", Some(host1), 80, 1080, Proto::Tcp)
            .is_err()
    );
    n.allocate_port("a", Some(ip("192.168.0.2")), 80, 1080, Proto::Tcp)
        .expect("other host ip");
    n.release_port("a", host1, 80, Proto::Tcp).expect("unmap");
    n.release_port("a", ip("192.168.0.2"), 80, Proto::Tcp)
        .expect("unmap");
    let err = n
        .release_port("a", host1, 80, Proto::Tcp)
        .expect_err("unmap again");
    assert_eq!(err.kind(), ErrorKind::NotFound);
}

#[test]
fn map_all_ports_on_one_interface_then_explicit_fails() {
    // Upstream TestMapAllPortsSingleInterface (one round): every dynamic port but the last,
    // then an explicit map of the first must fail.
    let mut n = network_with(RawConfig {
        iptables: Some(false),
        ..Default::default()
    });
    n.allocate_interface("a", None, None).expect("a");
    for i in BEGIN_PORT_RANGE..END_PORT_RANGE {
        let eff = n
            .allocate_port("a", None, 0, 80, Proto::Tcp)
            .expect("dynamic");
        assert_eq!(eff.value.host_port, i);
        assert!(eff.firewall.is_empty(), "no rules without iptables");
    }
    assert!(
        n.allocate_port("a", None, BEGIN_PORT_RANGE, 80, Proto::Tcp)
            .is_err()
    );
    let last = n
        .allocate_port("a", None, 0, 80, Proto::Tcp)
        .expect("the last one is free");
    assert_eq!(last.value.host_port, END_PORT_RANGE);
}

#[test]
fn allocate_port_errors() {
    let mut n = network();
    let err = n
        .allocate_port("ghost", None, 80, 80, Proto::Tcp)
        .expect_err("unknown container");
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(err.to_string().contains("ghost"));
    n.allocate_interface("c", None, None).expect("iface");
    let err = n
        .allocate_port("c", None, 80, 0, Proto::Tcp)
        .expect_err("port 0");
    assert_eq!(err.kind(), ErrorKind::BadInput);
}

#[test]
fn default_ip_flag_is_the_default_host_ip() {
    let mut n = network_with(RawConfig {
        ip: Some("127.0.0.1".into()),
        ..Default::default()
    });
    n.allocate_interface("c", None, None).expect("iface");
    let m = n
        .allocate_port("c", None, 8080, 80, Proto::Tcp)
        .expect("port")
        .value;
    assert_eq!(m.host_ip, ip("127.0.0.1"));
}

#[test]
fn links_need_rules_only_without_icc_and_are_idempotent() {
    let mut n = network_with(RawConfig {
        icc: Some(false),
        ..Default::default()
    });
    let p = n.allocate_interface("p", None, None).expect("p").ip;
    let c = n.allocate_interface("c", None, None).expect("c").ip;
    let on = n.link(p, c, &[(5432, Proto::Tcp)], true).expect("enable");
    assert_eq!(
        lines(&on.firewall),
        vec![
            "filter -A DOCKER -s 172.17.0.1/32 -d 172.17.0.2/32 -i docker0 -o docker0 -p tcp -m tcp --dport 5432 -j ACCEPT",
            "filter -A DOCKER -s 172.17.0.2/32 -d 172.17.0.1/32 -i docker0 -o docker0 -p tcp -m tcp --sport 5432 -j ACCEPT",
        ]
    );
    let again = n.link(p, c, &[(5432, Proto::Tcp)], true).expect("again");
    assert!(again.firewall.is_empty() && again.value.is_empty());
    let off = n.link(p, c, &[(5432, Proto::Tcp)], false).expect("disable");
    assert!(
        lines(&off.firewall)
            .iter()
            .all(|l| l.starts_with("filter -D DOCKER "))
    );
    assert_eq!(off.firewall[0].table, Table::Filter);
    assert!(n.links().is_empty());

    let mut open = network();
    let p = open.allocate_interface("p", None, None).expect("p").ip;
    let c = open.allocate_interface("c", None, None).expect("c").ip;
    let eff = open
        .link(p, c, &[(5432, Proto::Tcp)], true)
        .expect("icc on");
    assert!(
        eff.firewall.is_empty(),
        "ICC on: Docker programs no link rules"
    );
    assert_eq!(open.links().len(), 1);

    let err = open
        .link(p, ip("172.17.200.200"), &[(1, Proto::Tcp)], true)
        .expect_err("unknown child");
    assert_eq!(err.kind(), ErrorKind::NotFound);
}

#[test]
fn rules_of_the_state_are_what_was_published() {
    let mut n = network_with(RawConfig {
        icc: Some(false),
        ..Default::default()
    });
    let a = n.allocate_interface("a", None, None).expect("a").ip;
    let b = n.allocate_interface("b", None, None).expect("b").ip;
    let mut expected = Vec::new();
    for eff in [
        n.allocate_port("a", None, 0, 80, Proto::Tcp).expect("p"),
        n.allocate_port("b", None, 0, 53, Proto::Udp).expect("p"),
    ] {
        expected.extend(lines(&eff.firewall));
    }
    expected.extend(lines(
        &n.link(a, b, &[(80, Proto::Tcp)], true).expect("l").firewall,
    ));
    let mut state: Vec<String> = n
        .rules()
        .iter()
        .map(|r| format!("{} {}", r.table, r.save_line()))
        .collect();
    state.sort();
    expected.sort();
    assert_eq!(state, expected);
}

#[test]
fn state_round_trips_through_json() {
    let mut n = network();
    n.allocate_interface("a", None, None).expect("a");
    n.allocate_port("a", None, 0, 80, Proto::Tcp).expect("p");
    let json = serde_json::to_string(&n).expect("serialise");
    let mut back: Network = serde_json::from_str(&json).expect("deserialise");
    assert_eq!(back, n);
    // The restored state continues where it stopped: no address or port handed out twice.
    let b = back.allocate_interface("b", None, None).expect("b");
    assert_eq!(b.ip, ip("172.17.0.2"));
    let p = back.allocate_port("b", None, 0, 80, Proto::Tcp).expect("p");
    assert_eq!(p.value.host_port, BEGIN_PORT_RANGE + 1);
}

#[test]
fn fresh_config_default_is_docker_default() {
    assert_eq!(Config::default().default_ip, Ipv4Addr::UNSPECIFIED);
}
