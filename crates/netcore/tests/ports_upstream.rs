//! Docker's `portallocator/portallocator_test.go` (identical in v1.2.0 and v1.3.2) re-expressed
//! for [`PortAllocator`], plus the allocator half of `portmapper`'s
//! `TestMapAllPortsSingleInterface`. 1.x requests without a host IP used `0.0.0.0`.

use std::net::Ipv4Addr;

use netcore::ports::{
    BEGIN_PORT_RANGE, END_PORT_RANGE, PortAllocator, PortError, Proto, UnknownProtocol,
};

const ANY: Ipv4Addr = Ipv4Addr::UNSPECIFIED;

/// `TestRequestNewPort`.
#[test]
fn request_new_port() {
    let mut p = PortAllocator::new();
    assert_eq!(p.request(ANY, Proto::Tcp, 0), Ok(BEGIN_PORT_RANGE));
    assert_eq!(BEGIN_PORT_RANGE, 49153);
    assert_eq!(END_PORT_RANGE, 65535);
}

/// `TestRequestSpecificPort`.
#[test]
fn request_specific_port() {
    let mut p = PortAllocator::new();
    assert_eq!(p.request(ANY, Proto::Tcp, 5000), Ok(5000));
    assert!(p.is_allocated(ANY, Proto::Tcp, 5000));
}

/// `TestReleasePort`.
#[test]
fn release_port() {
    let mut p = PortAllocator::new();
    assert_eq!(p.request(ANY, Proto::Tcp, 5000), Ok(5000));
    assert!(p.release(ANY, Proto::Tcp, 5000));
    assert!(!p.is_allocated(ANY, Proto::Tcp, 5000));
    assert!(!p.release(ANY, Proto::Tcp, 5000), "nothing left to release");
}

/// `TestReuseReleasedPort`.
#[test]
fn reuse_released_port() {
    let mut p = PortAllocator::new();
    assert_eq!(p.request(ANY, Proto::Tcp, 5000), Ok(5000));
    assert!(p.release(ANY, Proto::Tcp, 5000));
    assert_eq!(p.request(ANY, Proto::Tcp, 5000), Ok(5000));
}

/// `TestReleaseUnreadledPort`: the same explicit port twice.
#[test]
fn release_unreadled_port() {
    let mut p = PortAllocator::new();
    assert_eq!(p.request(ANY, Proto::Tcp, 5000), Ok(5000));
    let err = p.request(ANY, Proto::Tcp, 5000);
    assert_eq!(
        err,
        Err(PortError::AlreadyAllocated {
            ip: ANY,
            port: 5000,
            proto: Proto::Tcp,
            held_by: ANY,
        })
    );
    assert_eq!(
        err.map_err(|e| e.to_string()),
        Err("Bind for 0.0.0.0:5000 failed: port is already allocated".to_owned())
    );
}

/// `TestUnknowProtocol`.
#[test]
fn unknown_protocol() {
    assert_eq!(
        "tcpp".parse::<Proto>(),
        Err(UnknownProtocol("tcpp".to_owned()))
    );
    assert_eq!(
        "tcpp".parse::<Proto>().map_err(|e| e.to_string()),
        Err("unknown protocol \"tcpp\"".to_owned())
    );
    for proto in Proto::ALL {
        assert_eq!(proto.name().parse::<Proto>(), Ok(proto));
    }
}

/// `TestAllocateAllPorts`: 16383 dynamic ports in order, then exhaustion; udp unaffected; a
/// released port is the next one handed out.
#[test]
fn allocate_all_ports() {
    let mut p = PortAllocator::new();
    let count = END_PORT_RANGE - BEGIN_PORT_RANGE + 1;
    assert_eq!(count, 16383);
    for i in 0..count {
        assert_eq!(p.request(ANY, Proto::Tcp, 0), Ok(BEGIN_PORT_RANGE + i));
    }
    let err = p.request(ANY, Proto::Tcp, 0);
    assert_eq!(
        err,
        Err(PortError::AllPortsAllocated {
            ip: ANY,
            proto: Proto::Tcp
        })
    );
    assert!(
        err.map_err(|e| e.to_string())
            .err()
            .is_some_and(|t| t.starts_with("all ports are allocated")),
        "keeps Docker's phrase"
    );
    assert_eq!(p.request(ANY, Proto::Udp, 0), Ok(BEGIN_PORT_RANGE));
    assert!(p.release(ANY, Proto::Tcp, BEGIN_PORT_RANGE + 5));
    assert_eq!(p.request(ANY, Proto::Tcp, 0), Ok(BEGIN_PORT_RANGE + 5));
    assert_eq!(p.allocated_count(ANY, Proto::Tcp), u32::from(count));
}

/// `TestPortAllocation`.
#[test]
fn port_allocation() {
    let mut p = PortAllocator::new();
    let ip1 = Ipv4Addr::new(192, 168, 0, 1);
    let ip2 = Ipv4Addr::new(192, 168, 0, 2);

    assert_eq!(p.request(ip1, Proto::Tcp, 80), Ok(80));
    let port = p.request(ip1, Proto::Tcp, 0).expect("a dynamic port");
    assert!(port > 0);
    assert!(matches!(
        p.request(ip1, Proto::Tcp, port),
        Err(PortError::AlreadyAllocated { .. })
    ));
    let another = p.request(ip1, Proto::Tcp, 0).expect("a dynamic port");
    assert_ne!(another, port);
    assert!(matches!(
        p.request(ip1, Proto::Tcp, 80),
        Err(PortError::AlreadyAllocated { .. })
    ));
    // Different specific IPs are independent.
    assert_eq!(p.request(ip2, Proto::Tcp, 80), Ok(80));
    assert!(matches!(
        p.request(ip2, Proto::Tcp, 80),
        Err(PortError::AlreadyAllocated { .. })
    ));
    assert!(p.release(ip1, Proto::Tcp, 80));
    assert_eq!(p.request(ip1, Proto::Tcp, 80), Ok(80));

    let port = p.request(ip1, Proto::Tcp, 0).expect("a dynamic port");
    assert_eq!(p.request(ip1, Proto::Tcp, port + 1), Ok(port + 1));
    let next = p.request(ip1, Proto::Tcp, 0).expect("a dynamic port");
    assert_ne!(
        next,
        port + 1,
        "a dynamic request skips an explicitly taken port"
    );
}

/// `TestMapAllPortsSingleInterface` (portmapper), its allocator half: ten rounds of 16382
/// dynamic ports on the wildcard (one short of the range), after which an explicit 49153 must
/// fail; then everything is released.
#[test]
fn map_all_ports_single_interface() {
    let mut p = PortAllocator::new();
    for round in 0..10 {
        let mut got = Vec::new();
        for _ in BEGIN_PORT_RANGE..END_PORT_RANGE {
            got.push(p.request(ANY, Proto::Tcp, 0).expect("a dynamic port"));
        }
        assert!(
            matches!(
                p.request(ANY, Proto::Tcp, BEGIN_PORT_RANGE),
                Err(PortError::AlreadyAllocated { .. })
            ),
            "round {round}"
        );
        let mut sorted = got.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), got.len(), "no port twice");
        for port in got {
            assert!(p.release(ANY, Proto::Tcp, port));
        }
        assert_eq!(p.allocated_count(ANY, Proto::Tcp), 0);
    }
}
