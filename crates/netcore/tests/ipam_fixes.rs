//! The allocator's behaviour beyond the upstream tests: the Docker bugs it does not repeat,
//! its accessors, small pools, and its persisted form.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use netcore::ipam::{IpAllocator, IpamError};

fn net(s: &str) -> Ipv4Net {
    s.parse().expect("test CIDR")
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().expect("test address")
}

fn drain(a: &mut IpAllocator) -> Vec<Ipv4Addr> {
    std::iter::from_fn(|| a.request(None).ok()).collect()
}

/// moby/moby#9938: 1.3/1.4 eventually handed the bridge IP (172.17.42.1) to a container.
/// Fixed in 1.5 (f4551b8a48): never, even when every other address is taken.
#[test]
fn bridge_ip_is_never_handed_out() {
    let mut a = IpAllocator::new(net("172.17.42.1/16"), None).expect("allocator");
    let got = drain(&mut a);
    // 65536 - network - broadcast - bridge IP. (1.3 also had 65533, but that set *included*
    // 172.17.42.1 and excluded 172.17.0.1.)
    assert_eq!(got.len(), 65533);
    assert_eq!(a.capacity(), 65533);
    assert!(!got.contains(&ip("172.17.42.1")));
    assert!(
        got.contains(&ip("172.17.0.1")),
        "network + 1 is a host like any other"
    );
    assert!(!got.contains(&ip("172.17.0.0")));
    assert!(!got.contains(&ip("172.17.255.255")));
    let err = a.request(Some(ip("172.17.42.1")));
    assert_eq!(
        err,
        Err(IpamError::BridgeAddress {
            ip: ip("172.17.42.1")
        })
    );
    assert!(
        err.map_err(|e| e.to_string())
            .err()
            .is_some_and(|t| t.starts_with("ip 172.17.42.1 already allocated")),
        "keeps Docker's phrase"
    );
    assert!(
        !a.is_allocated(ip("172.17.42.1")),
        "reserved, not allocated"
    );
    assert!(
        !a.release(ip("172.17.42.1")),
        "cannot release the reservation"
    );
    assert_eq!(
        a.request(Some(ip("172.17.42.1"))),
        Err(IpamError::BridgeAddress {
            ip: ip("172.17.42.1")
        })
    );
}

/// Releasing everything and starting over on a fresh allocator of the same bridge gives the
/// same sequence: the reservation survives a full allocate/release cycle.
#[test]
fn full_cycle_keeps_the_reservation() {
    let mut a = IpAllocator::new(net("10.0.42.1/20"), None).expect("allocator");
    let got = drain(&mut a);
    for &g in &got {
        assert!(a.release(g));
    }
    assert_eq!(a.allocated_count(), 0);
    assert_eq!(a.iter().count(), 0);
    let again = drain(&mut a);
    let (mut s1, mut s2) = (got.clone(), again.clone());
    s1.sort();
    s2.sort();
    assert_eq!(s1, s2);
    assert!(!again.contains(&ip("10.0.42.1")));
}

/// moby/moby#10382: 1.3 refused a fixed-cidr starting at the bridge network address ("nested
/// +1"). Modern Docker accepts it; its network address is simply never handed out.
#[test]
fn fixed_cidr_at_network_address_is_accepted() {
    let mut a = IpAllocator::new(net("172.17.0.1/16"), Some(net("172.17.0.0/24")))
        .expect("accepted, unlike 1.3");
    assert!(matches!(
        a.request(Some(ip("172.17.0.0"))),
        Err(IpamError::OutOfRange { .. })
    ));
    // .0 is the network address, .1 the bridge: .2 comes first.
    assert_eq!(a.request(None), Ok(ip("172.17.0.2")));
    let rest = drain(&mut a);
    assert_eq!(rest.len(), 252, ".3 to .254");
    assert!(
        !rest.contains(&ip("172.17.0.255")),
        "the subnet's broadcast"
    );
    // A fixed-cidr equal to the whole network is fine too.
    let b = IpAllocator::new(net("172.17.0.1/16"), Some(net("172.17.0.0/16"))).expect("equal");
    assert_eq!(b.capacity(), 65533);
}

/// A fixed-cidr given with host bits is masked, as Docker's ParseCIDR does.
#[test]
fn fixed_cidr_is_masked() {
    let a = IpAllocator::new(net("10.1.42.1/16"), Some(net("10.1.7.9/24"))).expect("nested");
    assert_eq!(a.fixed_cidr(), Some(net("10.1.7.0/24")));
    assert_eq!(a.pool(), net("10.1.7.0/24"));
}

/// With the bridge IP outside the fixed-cidr, nothing in the pool is reserved.
#[test]
fn fixed_cidr_without_the_bridge_ip() {
    let mut a =
        IpAllocator::new(net("172.17.42.1/16"), Some(net("172.17.0.0/29"))).expect("nested");
    assert_eq!(a.capacity(), 6);
    let got = drain(&mut a);
    let want: Vec<Ipv4Addr> = (1..=6).map(|i| Ipv4Addr::new(172, 17, 0, i)).collect();
    assert_eq!(got, want);
    assert!(matches!(
        a.request(Some(ip("172.17.0.9"))),
        Err(IpamError::OutOfRange { .. })
    ));
}

#[test]
fn accessors_describe_the_bridge() {
    let a = IpAllocator::new(net("172.17.42.1/16"), None).expect("allocator");
    assert_eq!(a.network(), net("172.17.0.0/16"));
    assert_eq!(a.bridge(), net("172.17.42.1/16"));
    assert_eq!(a.gateway(), ip("172.17.42.1"));
    assert_eq!(a.prefix_len(), 16);
    assert_eq!(a.mask(), ip("255.255.0.0"));
    assert_eq!(a.fixed_cidr(), None);
    assert_eq!(a.pool(), net("172.17.0.0/16"));
    assert_eq!(
        a.range().bounds,
        Some((ip("172.17.0.1"), ip("172.17.255.254")))
    );
    assert_eq!(a.range().to_string(), "172.17.0.1-172.17.255.254");
}

/// A /31 or /32 pool has no host address: accepted, but every request fails.
#[test]
fn pools_without_host_addresses() {
    for (bridge, fixed) in [
        ("10.0.0.1/31", None),
        ("10.0.0.1/32", None),
        ("10.0.0.1/24", Some("10.0.0.8/31")),
        ("255.255.255.255/32", None),
        ("0.0.0.0/32", None),
    ] {
        let mut a = IpAllocator::new(net(bridge), fixed.map(net)).expect(bridge);
        assert_eq!(a.capacity(), 0, "{bridge}");
        assert_eq!(a.range().bounds, None);
        assert!(
            matches!(a.request(None), Err(IpamError::NoAvailable { .. })),
            "{bridge}"
        );
        let host = net(bridge).addr();
        assert!(
            matches!(a.request(Some(host)), Err(IpamError::OutOfRange { .. })),
            "{bridge}"
        );
        assert!(!a.release(host));
    }
}

/// A /30: one container next to the bridge.
#[test]
fn slash_30_has_one_container_address() {
    let mut a = IpAllocator::new(net("192.168.44.1/30"), None).expect("allocator");
    assert_eq!(a.request(None), Ok(ip("192.168.44.2")));
    assert!(matches!(
        a.request(None),
        Err(IpamError::NoAvailable { .. })
    ));
}

/// A specific request moves the next-fit cursor (1.3's `checkIP` sets `last`).
#[test]
fn specific_request_moves_the_cursor() {
    let mut a = IpAllocator::new(net("10.0.0.1/24"), None).expect("allocator");
    assert_eq!(a.last(), Some(ip("10.0.0.254")), "starts at the end");
    assert_eq!(a.request(Some(ip("10.0.0.100"))), Ok(ip("10.0.0.100")));
    assert_eq!(a.last(), Some(ip("10.0.0.100")));
    assert_eq!(a.request(None), Ok(ip("10.0.0.101")));
    // Wrap-around from the end of the range.
    assert_eq!(a.request(Some(ip("10.0.0.254"))), Ok(ip("10.0.0.254")));
    assert_eq!(a.request(None), Ok(ip("10.0.0.2")));
}

/// The last address handed out is found again when it is the only free one (1.3's loop
/// stopped before `last` and reported the pool full).
#[test]
fn released_cursor_is_found_again() {
    let mut a = IpAllocator::new(net("10.0.0.1/29"), None).expect("allocator");
    drain(&mut a);
    // Put the cursor in the middle of the range, on the only free address.
    assert!(a.release(ip("10.0.0.3")));
    assert_eq!(a.request(None), Ok(ip("10.0.0.3")));
    assert_eq!(a.last(), Some(ip("10.0.0.3")));
    assert!(a.release(ip("10.0.0.3")));
    assert_eq!(a.request(None), Ok(ip("10.0.0.3")));
}

#[test]
fn serde_round_trip_keeps_allocations_and_cursor() {
    let mut a =
        IpAllocator::new(net("172.17.42.1/16"), Some(net("172.17.0.0/24"))).expect("allocator");
    for _ in 0..5 {
        a.request(None).expect("free");
    }
    a.request(Some(ip("172.17.0.200"))).expect("free");
    assert!(a.release(ip("172.17.0.3")));
    let json = serde_json::to_value(&a).expect("serialise");
    assert_eq!(
        json,
        serde_json::json!({
            "bridge": "172.17.42.1/16",
            "fixed_cidr": "172.17.0.0/24",
            "last": "172.17.0.200",
            "allocated": ["172.17.0.1", "172.17.0.2", "172.17.0.4", "172.17.0.5", "172.17.0.200"],
        })
    );
    let mut b: IpAllocator = serde_json::from_value(json).expect("deserialise");
    assert_eq!(b, a);
    assert_eq!(b.allocated_count(), 5);
    assert_eq!(b.request(None), a.request(None));
    assert_eq!(b.request(None), Ok(ip("172.17.0.202")));
}

/// A fresh allocator round-trips to one whose first request is still the range's first.
#[test]
fn serde_round_trip_of_a_fresh_allocator() {
    let a = IpAllocator::new(net("192.168.0.1/24"), None).expect("allocator");
    let text = serde_json::to_string(&a).expect("serialise");
    let mut b: IpAllocator = serde_json::from_str(&text).expect("deserialise");
    assert_eq!(b, a);
    assert_eq!(b.request(None), Ok(ip("192.168.0.2")));
}

/// A tampered or stale state is refused with the error a request would have got.
#[test]
fn serde_refuses_bad_state() {
    let parse =
        |v: serde_json::Value| serde_json::from_value::<IpAllocator>(v).map_err(|e| e.to_string());
    let cases = [
        (
            serde_json::json!({"bridge": "10.0.0.1/24", "fixed_cidr": null, "last": "10.0.0.2",
                               "allocated": ["10.0.0.2", "10.0.0.2"]}),
            "ip 10.0.0.2 already allocated",
        ),
        (
            serde_json::json!({"bridge": "10.0.0.1/24", "fixed_cidr": null, "last": "10.0.0.2",
                               "allocated": ["10.0.0.1"]}),
            "ip 10.0.0.1 already allocated: it is the bridge's own address",
        ),
        (
            serde_json::json!({"bridge": "10.0.0.1/24", "fixed_cidr": null, "last": "10.0.0.2",
                               "allocated": ["10.0.0.255"]}),
            "requested ip 10.0.0.255 is out of range",
        ),
        (
            serde_json::json!({"bridge": "10.0.0.1/24", "fixed_cidr": null, "last": "10.0.1.9",
                               "allocated": []}),
            "requested ip 10.0.1.9 is out of range",
        ),
        (
            serde_json::json!({"bridge": "10.0.0.1/24", "fixed_cidr": "10.0.0.0/16", "last": null,
                               "allocated": []}),
            "does not contain specified subnet 10.0.0.0/16",
        ),
        (
            serde_json::json!({"bridge": "10.0.0.1/24", "fixed_cidr": null, "last": null,
                               "allocated": [], "extra": 1}),
            "unknown field",
        ),
    ];
    for (value, want) in cases {
        let got = parse(value.clone());
        assert!(
            got.as_ref().err().is_some_and(|e| e.contains(want)),
            "{value}: {got:?}, want an error containing {want:?}"
        );
    }
}
