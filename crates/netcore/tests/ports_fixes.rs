//! The port allocator beyond the upstream tests: the 1.2 first-dynamic-port bug it does not
//! repeat, the wildcard rule (a deliberate change from 1.x), cursors, and the persisted form.

use std::net::Ipv4Addr;

use netcore::ports::{
    BEGIN_PORT_RANGE, END_PORT_RANGE, PortAllocator, PortError, PortStateError, Proto,
};

const ANY: Ipv4Addr = Ipv4Addr::UNSPECIFIED;
const LO: Ipv4Addr = Ipv4Addr::LOCALHOST;
const IP2: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 2);

/// 1.2/1.3 returned 49153 on the first dynamic request without checking it; fixed in 1.5 by
/// starting the cursor at EndPortRange.
#[test]
fn first_dynamic_request_checks_the_first_port() {
    let mut p = PortAllocator::new();
    assert_eq!(
        p.request(ANY, Proto::Tcp, BEGIN_PORT_RANGE),
        Ok(BEGIN_PORT_RANGE)
    );
    assert_eq!(p.request(ANY, Proto::Tcp, 0), Ok(BEGIN_PORT_RANGE + 1));
}

/// 1.x let `0.0.0.0:80` and `127.0.0.1:80` coexist; the kernel bind and DNAT rules for both
/// would collide, so we refuse the second, in either order.
#[test]
fn wildcard_conflicts_with_specific_ips() {
    let mut p = PortAllocator::new();
    assert_eq!(p.request(ANY, Proto::Tcp, 80), Ok(80));
    assert_eq!(
        p.request(LO, Proto::Tcp, 80),
        Err(PortError::AlreadyAllocated {
            ip: LO,
            port: 80,
            proto: Proto::Tcp,
            held_by: ANY
        })
    );
    assert_eq!(p.conflict(LO, Proto::Tcp, 80), Some(ANY));
    // Other protocols are independent.
    assert_eq!(p.request(LO, Proto::Udp, 80), Ok(80));
    assert_eq!(p.request(LO, Proto::Sctp, 80), Ok(80));

    let mut q = PortAllocator::new();
    assert_eq!(q.request(LO, Proto::Tcp, 80), Ok(80));
    let err = q.request(ANY, Proto::Tcp, 80);
    assert_eq!(
        err,
        Err(PortError::AlreadyAllocated {
            ip: ANY,
            port: 80,
            proto: Proto::Tcp,
            held_by: LO
        })
    );
    assert_eq!(
        err.map_err(|e| e.to_string()),
        Err("Bind for 0.0.0.0:80 failed: port is already allocated".to_owned())
    );
    // A second specific IP does not mind.
    assert_eq!(q.request(IP2, Proto::Tcp, 80), Ok(80));
    // The wildcard is blocked until *every* specific holder is gone.
    assert!(q.release(LO, Proto::Tcp, 80));
    assert_eq!(q.conflict(ANY, Proto::Tcp, 80), Some(IP2));
    assert!(q.release(IP2, Proto::Tcp, 80));
    assert_eq!(q.conflict(ANY, Proto::Tcp, 80), None);
    assert_eq!(q.request(ANY, Proto::Tcp, 80), Ok(80));
}

/// Dynamic allocation skips ports the wildcard rule blocks.
#[test]
fn dynamic_requests_follow_the_wildcard_rule() {
    let mut p = PortAllocator::new();
    assert_eq!(
        p.request(LO, Proto::Tcp, BEGIN_PORT_RANGE),
        Ok(BEGIN_PORT_RANGE)
    );
    assert_eq!(
        p.request(IP2, Proto::Tcp, BEGIN_PORT_RANGE + 1),
        Ok(BEGIN_PORT_RANGE + 1)
    );
    // The wildcard skips both.
    assert_eq!(p.request(ANY, Proto::Tcp, 0), Ok(BEGIN_PORT_RANGE + 2));
    // A specific IP skips what the wildcard holds, not what another specific IP holds.
    assert_eq!(p.request(LO, Proto::Tcp, 0), Ok(BEGIN_PORT_RANGE + 1));
    assert_eq!(p.request(LO, Proto::Tcp, 0), Ok(BEGIN_PORT_RANGE + 3));
}

/// A specific IP runs out when the wildcard holds the rest of the range.
#[test]
fn specific_ip_exhausted_by_the_wildcard() {
    let mut p = PortAllocator::new();
    for _ in BEGIN_PORT_RANGE..END_PORT_RANGE {
        p.request(ANY, Proto::Udp, 0).expect("a dynamic port");
    }
    // One port left: END_PORT_RANGE.
    assert_eq!(p.request(LO, Proto::Udp, 0), Ok(END_PORT_RANGE));
    assert_eq!(
        p.request(IP2, Proto::Udp, 0),
        Ok(END_PORT_RANGE),
        "another specific IP may share it"
    );
    assert_eq!(
        p.request(LO, Proto::Udp, 0),
        Err(PortError::AllPortsAllocated {
            ip: LO,
            proto: Proto::Udp
        })
    );
    assert_eq!(
        p.request(ANY, Proto::Udp, 0),
        Err(PortError::AllPortsAllocated {
            ip: ANY,
            proto: Proto::Udp
        })
    );
}

/// Next-fit with wrap-around from the last dynamic port; explicit requests leave the cursor.
#[test]
fn dynamic_ports_wrap_around() {
    let mut p = PortAllocator::new();
    assert_eq!(
        p.request(LO, Proto::Tcp, END_PORT_RANGE - 1),
        Ok(END_PORT_RANGE - 1)
    );
    for _ in BEGIN_PORT_RANGE..=END_PORT_RANGE - 2 {
        p.request(LO, Proto::Tcp, 0).expect("a dynamic port");
    }
    // The cursor is at END - 2; END - 1 is taken explicitly, so END comes next.
    assert_eq!(p.request(LO, Proto::Tcp, 0), Ok(END_PORT_RANGE));
    assert!(p.release(LO, Proto::Tcp, BEGIN_PORT_RANGE + 7));
    assert!(p.release(LO, Proto::Tcp, BEGIN_PORT_RANGE + 3));
    assert_eq!(p.request(LO, Proto::Tcp, 0), Ok(BEGIN_PORT_RANGE + 3));
    assert!(p.release(LO, Proto::Tcp, BEGIN_PORT_RANGE + 1));
    // Next-fit: after +3 comes +7, not the lower +1.
    assert_eq!(p.request(LO, Proto::Tcp, 0), Ok(BEGIN_PORT_RANGE + 7));
    assert_eq!(p.request(LO, Proto::Tcp, 0), Ok(BEGIN_PORT_RANGE + 1));
    // An explicit port below the dynamic range is tracked but does not move the cursor.
    assert_eq!(p.request(LO, Proto::Tcp, 1), Ok(1));
    assert!(p.release(LO, Proto::Tcp, BEGIN_PORT_RANGE));
    assert_eq!(p.request(LO, Proto::Tcp, 0), Ok(BEGIN_PORT_RANGE));
}

/// The last dynamic port is found again when it is the only free one.
#[test]
fn released_cursor_is_found_again() {
    let mut p = PortAllocator::new();
    for _ in BEGIN_PORT_RANGE..=END_PORT_RANGE {
        p.request(ANY, Proto::Sctp, 0).expect("a dynamic port");
    }
    // Put the cursor in the middle of the range, on the only free port.
    let mid = BEGIN_PORT_RANGE + 100;
    assert!(p.release(ANY, Proto::Sctp, mid));
    assert_eq!(p.request(ANY, Proto::Sctp, 0), Ok(mid));
    assert!(p.release(ANY, Proto::Sctp, mid));
    assert_eq!(p.request(ANY, Proto::Sctp, 0), Ok(mid));
    assert_eq!(
        p.request(ANY, Proto::Sctp, 0),
        Err(PortError::AllPortsAllocated {
            ip: ANY,
            proto: Proto::Sctp
        })
    );
}

#[test]
fn release_of_unknown_things_is_false() {
    let mut p = PortAllocator::new();
    assert!(!p.release(LO, Proto::Tcp, 80));
    assert_eq!(p.request(LO, Proto::Tcp, 80), Ok(80));
    assert!(!p.release(LO, Proto::Udp, 80));
    assert!(!p.release(IP2, Proto::Tcp, 80));
    assert!(
        !p.release(ANY, Proto::Tcp, 80),
        "the wildcard does not hold it"
    );
    assert!(!p.release(LO, Proto::Tcp, 0));
    assert!(p.is_allocated(LO, Proto::Tcp, 80));
}

/// `ReleaseAll` forgets allocations and cursors.
#[test]
fn release_all_resets_everything() {
    let mut p = PortAllocator::new();
    p.request(ANY, Proto::Tcp, 0).expect("dynamic");
    p.request(LO, Proto::Udp, 53).expect("explicit");
    p.release_all();
    assert_eq!(p.iter().count(), 0);
    assert_eq!(p, PortAllocator::new());
    assert_eq!(p.request(ANY, Proto::Tcp, 0), Ok(BEGIN_PORT_RANGE));
    assert_eq!(p.request(ANY, Proto::Udp, 53), Ok(53));
}

#[test]
fn listing() {
    let mut p = PortAllocator::new();
    p.request(LO, Proto::Udp, 53).expect("explicit");
    p.request(LO, Proto::Tcp, 8080).expect("explicit");
    p.request(LO, Proto::Tcp, 22).expect("explicit");
    p.request(ANY, Proto::Tcp, 0).expect("dynamic");
    assert_eq!(p.ports(LO, Proto::Tcp).collect::<Vec<_>>(), [22, 8080]);
    assert_eq!(p.allocated_count(LO, Proto::Tcp), 2);
    assert_eq!(p.allocated_count(IP2, Proto::Tcp), 0);
    assert_eq!(
        p.iter().collect::<Vec<_>>(),
        [
            (ANY, Proto::Tcp, BEGIN_PORT_RANGE),
            (LO, Proto::Tcp, 22),
            (LO, Proto::Tcp, 8080),
            (LO, Proto::Udp, 53),
        ]
    );
}

#[test]
fn serde_round_trip_keeps_ports_and_cursors() {
    let mut p = PortAllocator::new();
    p.request(ANY, Proto::Tcp, 0).expect("dynamic");
    p.request(ANY, Proto::Tcp, 0).expect("dynamic");
    p.request(LO, Proto::Udp, 53).expect("explicit");
    let json = serde_json::to_value(&p).expect("serialise");
    assert_eq!(
        json,
        serde_json::json!({"tables": [
            {"ip": "0.0.0.0", "proto": "tcp", "last": 49154, "ports": [49153, 49154]},
            {"ip": "127.0.0.1", "proto": "udp", "last": 65535, "ports": [53]},
        ]})
    );
    let mut q: PortAllocator = serde_json::from_value(json).expect("deserialise");
    assert_eq!(q, p);
    assert_eq!(q.request(ANY, Proto::Tcp, 0), Ok(BEGIN_PORT_RANGE + 2));
    // The rebuilt wildcard bookkeeping works: 53/udp on the wildcard clashes with 127.0.0.1.
    assert_eq!(q.conflict(ANY, Proto::Udp, 53), Some(LO));
}

#[test]
fn serde_refuses_bad_state() {
    let parse = |v: serde_json::Value| serde_json::from_value::<PortAllocator>(v);
    let clash = serde_json::json!({"tables": [
        {"ip": "0.0.0.0", "proto": "tcp", "last": 65535, "ports": [80]},
        {"ip": "127.0.0.1", "proto": "tcp", "last": 65535, "ports": [80]},
    ]});
    let err = parse(clash).map_err(|e| e.to_string());
    assert!(
        err.as_ref().err().is_some_and(|e| e.contains(
            "saved port state is inconsistent: Bind for 127.0.0.1:80 failed: port is already allocated"
        )),
        "{err:?}"
    );
    let cases = [
        (
            serde_json::json!({"tables": [{"ip": "10.0.0.1", "proto": "udp", "last": 65535, "ports": [5, 5]}]}),
            "Bind for 10.0.0.1:5 failed",
        ),
        (
            serde_json::json!({"tables": [{"ip": "10.0.0.1", "proto": "udp", "last": 65535, "ports": [0]}]}),
            "port 0",
        ),
        (
            serde_json::json!({"tables": [{"ip": "10.0.0.1", "proto": "udp", "last": 80, "ports": []}]}),
            "last dynamic port 80",
        ),
        (
            serde_json::json!({"tables": [
                {"ip": "10.0.0.1", "proto": "udp", "last": 65535, "ports": []},
                {"ip": "10.0.0.1", "proto": "udp", "last": 65535, "ports": []}]}),
            "twice",
        ),
        (
            serde_json::json!({"tables": [{"ip": "10.0.0.1", "proto": "icmp", "last": 65535, "ports": []}]}),
            "unknown variant",
        ),
    ];
    for (value, want) in cases {
        let got = parse(value.clone()).map_err(|e| e.to_string());
        assert!(
            got.as_ref().err().is_some_and(|e| e.contains(want)),
            "{value}: {got:?}, want an error containing {want:?}"
        );
    }
    // The typed error, for callers that build the allocator from a state themselves.
    let typed: PortStateError = PortError::AllPortsAllocated {
        ip: ANY,
        proto: Proto::Tcp,
    }
    .into();
    assert!(
        typed
            .to_string()
            .starts_with("saved port state is inconsistent: all ports")
    );
}
