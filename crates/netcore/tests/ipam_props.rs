//! Property tests: random request / request-specific / release sequences against a plain model
//! (a sorted set of addresses and a cursor, over an explicit list of assignable addresses).

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use netcore::ipam::{IpAllocator, IpamError};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Request,
    /// An offset from the bridge network address; may fall outside the network.
    RequestSpecific(u32),
    /// Release the n-th allocated address (modulo), or a random offset when none is allocated.
    ReleaseAllocated(usize),
    ReleaseOffset(u32),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => Just(Op::Request),
        2 => (0u32..5000).prop_map(Op::RequestSpecific),
        2 => any::<usize>().prop_map(Op::ReleaseAllocated),
        1 => (0u32..5000).prop_map(Op::ReleaseOffset),
    ]
}

/// A bridge (/20 to /32, random host address) and maybe a fixed-cidr nested in it.
fn setup() -> impl Strategy<Value = (Ipv4Net, Option<Ipv4Net>)> {
    (
        20u8..=32,
        any::<u32>(),
        any::<u32>(),
        any::<bool>(),
        0u8..=12,
    )
        .prop_map(|(plen, addr, sub_seed, with_fixed, extra)| {
            let bridge = Ipv4Net::new(Ipv4Addr::from_bits(addr), plen).expect("prefix <= 32");
            let fixed = with_fixed.then(|| {
                let sub_len = (plen + extra).min(32);
                let host_bits = u32::from(32 - plen);
                let off = if host_bits == 0 {
                    0
                } else {
                    sub_seed % (1u32 << host_bits)
                };
                let base = bridge.network().to_bits() + off;
                Ipv4Net::new(Ipv4Addr::from_bits(base), sub_len)
                    .expect("prefix <= 32")
                    .trunc()
            });
            (bridge, fixed)
        })
}

struct Model {
    /// Every address that may be handed out, ascending, computed independently of the
    /// allocator: the pool minus the network and broadcast addresses of the bridge network and
    /// of the pool, and minus the bridge IP.
    assignable: Vec<Ipv4Addr>,
    allocated: BTreeSet<Ipv4Addr>,
    /// The last address handed out; `None` means "before the first address".
    last: Option<Ipv4Addr>,
}

impl Model {
    fn new(bridge: Ipv4Net, fixed: Option<Ipv4Net>) -> Self {
        let network = bridge.trunc();
        let pool = fixed.unwrap_or(network);
        let excluded = [
            network.network(),
            network.broadcast(),
            pool.network(),
            pool.broadcast(),
            bridge.addr(),
        ];
        let assignable = (pool.network().to_bits()..=pool.broadcast().to_bits())
            .map(Ipv4Addr::from_bits)
            .filter(|a| !excluded.contains(a))
            .collect();
        Model {
            assignable,
            allocated: BTreeSet::new(),
            last: None,
        }
    }

    /// Next-fit: the first free assignable address after `last`, cyclically.
    fn next_fit(&self) -> Option<Ipv4Addr> {
        let start = match self.last {
            None => 0,
            Some(l) => self.assignable.partition_point(|&a| a <= l),
        };
        let n = self.assignable.len();
        (0..n)
            .map(|i| self.assignable[(start + i) % n])
            .find(|a| !self.allocated.contains(a))
    }
}

fn check_invariants(a: &IpAllocator, m: &Model, bridge: Ipv4Net) -> Result<(), TestCaseError> {
    let listed: Vec<Ipv4Addr> = a.iter().collect();
    let want: Vec<Ipv4Addr> = m.allocated.iter().copied().collect();
    prop_assert_eq!(&listed, &want);
    prop_assert_eq!(a.allocated_count() as usize, m.allocated.len());
    let network = bridge.trunc();
    for x in &listed {
        prop_assert!(a.pool().contains(x), "{} outside the pool", x);
        prop_assert!(*x != network.network() && *x != network.broadcast());
        prop_assert!(*x != a.pool().network() && *x != a.pool().broadcast());
        prop_assert!(*x != bridge.addr(), "the bridge IP was handed out");
        prop_assert!(a.is_allocated(*x));
    }
    prop_assert_eq!(a.capacity() as usize, m.assignable.len());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn allocations_follow_the_model(
        (bridge, fixed) in setup(),
        ops in proptest::collection::vec(op(), 1..120),
    ) {
        let mut a = IpAllocator::new(bridge, fixed).expect("nested fixed-cidr");
        let mut m = Model::new(bridge, fixed);
        let base = bridge.network().to_bits();
        for op in ops {
            match op {
                Op::Request => {
                    let got = a.request(None);
                    match m.next_fit() {
                        Some(want) => {
                            prop_assert_eq!(got, Ok(want));
                            m.allocated.insert(want);
                            m.last = Some(want);
                        }
                        None => {
                            // Fails iff nothing is free.
                            prop_assert_eq!(got, Err(IpamError::NoAvailable { pool: a.pool() }));
                        }
                    }
                }
                Op::RequestSpecific(off) => {
                    let want = Ipv4Addr::from_bits(base.wrapping_add(off));
                    let got = a.request(Some(want));
                    if !m.assignable.contains(&want) {
                        prop_assert!(
                            matches!(got, Err(IpamError::OutOfRange { .. }) | Err(IpamError::BridgeAddress { .. })),
                            "{}: {:?}", want, got
                        );
                        if want == bridge.addr() && a.pool().contains(&want)
                            && want != a.pool().network() && want != a.pool().broadcast() {
                            prop_assert_eq!(got, Err(IpamError::BridgeAddress { ip: want }));
                        }
                    } else if m.allocated.contains(&want) {
                        prop_assert_eq!(got, Err(IpamError::AlreadyAllocated { ip: want }));
                    } else {
                        prop_assert_eq!(got, Ok(want));
                        m.allocated.insert(want);
                        m.last = Some(want);
                    }
                }
                Op::ReleaseAllocated(n) => {
                    if m.allocated.is_empty() {
                        prop_assert!(!a.release(Ipv4Addr::from_bits(base.wrapping_add(n as u32 % 64))));
                    } else {
                        let x = *m.allocated.iter().nth(n % m.allocated.len()).expect("non-empty");
                        prop_assert!(a.release(x));
                        m.allocated.remove(&x);
                    }
                }
                Op::ReleaseOffset(off) => {
                    let x = Ipv4Addr::from_bits(base.wrapping_add(off));
                    prop_assert_eq!(a.release(x), m.allocated.remove(&x));
                }
            }
            check_invariants(&a, &m, bridge)?;
        }
        // The persisted form restores the same allocator.
        let json = serde_json::to_string(&a).expect("serialise");
        let mut b: IpAllocator = serde_json::from_str(&json).expect("deserialise");
        prop_assert_eq!(&b, &a);
        prop_assert_eq!(b.request(None), a.request(None));
    }

    /// Draining a pool hands out every assignable address exactly once, then fails.
    #[test]
    fn drain_hands_out_each_assignable_address_once((bridge, fixed) in setup()) {
        let mut a = IpAllocator::new(bridge, fixed).expect("nested fixed-cidr");
        let m = Model::new(bridge, fixed);
        let mut got = Vec::new();
        while let Ok(x) = a.request(None) {
            got.push(x);
            prop_assert!(got.len() <= m.assignable.len());
        }
        prop_assert_eq!(got, m.assignable);
    }
}
