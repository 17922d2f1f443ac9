//! Property tests: random request / request-specific / release sequences (and the occasional
//! fill-to-exhaustion) against a plain model: a set of (proto, ip, port) and a cursor per
//! (proto, ip), with the wildcard rule written out directly.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use netcore::ports::{BEGIN_PORT_RANGE, END_PORT_RANGE, PortAllocator, PortError, Proto};
use proptest::prelude::*;

const IPS: [Ipv4Addr; 3] = [
    Ipv4Addr::UNSPECIFIED,
    Ipv4Addr::new(127, 0, 0, 1),
    Ipv4Addr::new(10, 0, 0, 1),
];

#[derive(Debug, Clone)]
enum Op {
    Dynamic(usize, Proto),
    Explicit(usize, Proto, u16),
    Release(usize, Proto, u16),
    /// Release the n-th held port (modulo) of any IP and protocol.
    ReleaseHeld(usize),
    /// Dynamic requests until one fails.
    Fill(usize, Proto),
    ReleaseAll,
}

fn proto() -> impl Strategy<Value = Proto> {
    prop_oneof![Just(Proto::Tcp), Just(Proto::Udp), Just(Proto::Sctp)]
}

fn port() -> impl Strategy<Value = u16> {
    prop_oneof![
        3 => prop::sample::select(vec![
            1u16, 80, 443, BEGIN_PORT_RANGE - 1, BEGIN_PORT_RANGE, BEGIN_PORT_RANGE + 1,
            BEGIN_PORT_RANGE + 2, 50000, END_PORT_RANGE - 1, END_PORT_RANGE,
        ]),
        1 => 1u16..=u16::MAX,
    ]
}

/// `fill`: the weight of fill-to-exhaustion operations (each costs ~16k requests).
fn op(fill: u32) -> impl Strategy<Value = Op> {
    let ip = 0..IPS.len();
    prop_oneof![
        6 => (ip.clone(), proto()).prop_map(|(i, p)| Op::Dynamic(i, p)),
        6 => (ip.clone(), proto(), port()).prop_map(|(i, p, n)| Op::Explicit(i, p, n)),
        2 => (ip.clone(), proto(), port()).prop_map(|(i, p, n)| Op::Release(i, p, n)),
        3 => any::<usize>().prop_map(Op::ReleaseHeld),
        fill => (ip, proto()).prop_map(|(i, p)| Op::Fill(i, p)),
        1 => Just(Op::ReleaseAll),
    ]
}

#[derive(Default)]
struct Model {
    held: BTreeSet<(Proto, Ipv4Addr, u16)>,
    count: BTreeMap<(Proto, Ipv4Addr), u32>,
    last: BTreeMap<(Proto, Ipv4Addr), u16>,
}

impl Model {
    fn insert(&mut self, proto: Proto, ip: Ipv4Addr, port: u16) {
        if self.held.insert((proto, ip, port)) {
            *self.count.entry((proto, ip)).or_insert(0) += 1;
        }
    }

    fn remove(&mut self, proto: Proto, ip: Ipv4Addr, port: u16) -> bool {
        let was = self.held.remove(&(proto, ip, port));
        if was && let Some(n) = self.count.get_mut(&(proto, ip)) {
            *n -= 1;
        }
        was
    }

    /// Whether `port` on `ip` is free under the wildcard rule.
    fn free(&self, ip: Ipv4Addr, proto: Proto, port: u16) -> bool {
        if ip.is_unspecified() {
            !IPS.iter()
                .any(|&other| self.held.contains(&(proto, other, port)))
        } else {
            !self.held.contains(&(proto, ip, port))
                && !self.held.contains(&(proto, Ipv4Addr::UNSPECIFIED, port))
        }
    }

    /// Next-fit over the dynamic range, starting after the cursor (END before the first).
    fn next_dynamic(&self, ip: Ipv4Addr, proto: Proto) -> Option<u16> {
        let last = self
            .last
            .get(&(proto, ip))
            .copied()
            .unwrap_or(END_PORT_RANGE);
        let size = u32::from(END_PORT_RANGE - BEGIN_PORT_RANGE) + 1;
        (1..=size)
            .map(|i| {
                let off = (u32::from(last - BEGIN_PORT_RANGE) + i) % size;
                BEGIN_PORT_RANGE + off as u16
            })
            .find(|&p| self.free(ip, proto, p))
    }

    fn dynamic(
        &mut self,
        a: &mut PortAllocator,
        ip: Ipv4Addr,
        proto: Proto,
    ) -> Result<bool, TestCaseError> {
        let got = a.request(ip, proto, 0);
        match self.next_dynamic(ip, proto) {
            Some(want) => {
                prop_assert_eq!(got, Ok(want));
                prop_assert!((BEGIN_PORT_RANGE..=END_PORT_RANGE).contains(&want));
                self.insert(proto, ip, want);
                self.last.insert((proto, ip), want);
                Ok(true)
            }
            None => {
                // Fails iff no port of the range is free for this IP.
                prop_assert_eq!(got, Err(PortError::AllPortsAllocated { ip, proto }));
                Ok(false)
            }
        }
    }
}

/// Cheap, after every operation: the per-(IP, protocol) counts.
fn check_counts(a: &PortAllocator, m: &Model) -> Result<(), TestCaseError> {
    for proto in Proto::ALL {
        for ip in IPS {
            let n = m.count.get(&(proto, ip)).copied().unwrap_or(0);
            prop_assert_eq!(a.allocated_count(ip, proto), n, "{}/{}", ip, proto);
        }
    }
    Ok(())
}

/// Full: the whole listing against the model, and the wildcard rule on the listing. Run after
/// every operation while the tables are small, and at the end.
fn check_invariants(a: &PortAllocator, m: &Model) -> Result<(), TestCaseError> {
    let listed: BTreeSet<(Proto, Ipv4Addr, u16)> = a
        .iter()
        .map(|(ip, proto, port)| (proto, ip, port))
        .collect();
    prop_assert_eq!(a.iter().count(), listed.len(), "no duplicate listing");
    prop_assert_eq!(&listed, &m.held);
    for &(proto, ip, port) in &listed {
        prop_assert!(port >= 1);
        prop_assert!(a.is_allocated(ip, proto, port));
        // The wildcard rule, checked on the allocator's own listing.
        if ip.is_unspecified() {
            for other in IPS.iter().filter(|o| !o.is_unspecified()) {
                prop_assert!(
                    !listed.contains(&(proto, *other, port)),
                    "0.0.0.0 and {} both hold {}/{}",
                    other,
                    port,
                    proto
                );
            }
        }
    }
    check_counts(a, m)
}

/// Runs `ops` against the allocator and the model, checking after each step.
fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut a = PortAllocator::new();
    let mut m = Model::default();
    for op in ops {
        match op {
            Op::Dynamic(i, proto) => {
                m.dynamic(&mut a, IPS[i], proto)?;
            }
            Op::Explicit(i, proto, port) => {
                let ip = IPS[i];
                let got = a.request(ip, proto, port);
                if m.free(ip, proto, port) {
                    prop_assert_eq!(got, Ok(port));
                    m.insert(proto, ip, port);
                } else {
                    match got {
                        Err(PortError::AlreadyAllocated {
                            ip: eip,
                            port: eport,
                            proto: eproto,
                            held_by,
                        }) => {
                            prop_assert_eq!((eip, eport, eproto), (ip, port, proto));
                            prop_assert!(m.held.contains(&(proto, held_by, port)));
                            prop_assert!(
                                held_by == ip || held_by.is_unspecified() || ip.is_unspecified()
                            );
                        }
                        other => prop_assert!(false, "expected AlreadyAllocated, got {:?}", other),
                    }
                }
            }
            Op::Release(i, proto, port) => {
                let ip = IPS[i];
                prop_assert_eq!(a.release(ip, proto, port), m.remove(proto, ip, port));
            }
            Op::ReleaseHeld(n) => {
                if let Some(&(proto, ip, port)) = m.held.iter().nth(n % m.held.len().max(1)) {
                    prop_assert!(a.release(ip, proto, port));
                    m.remove(proto, ip, port);
                }
            }
            Op::Fill(i, proto) => while m.dynamic(&mut a, IPS[i], proto)? {},
            Op::ReleaseAll => {
                a.release_all();
                m = Model::default();
            }
        }
        if m.held.len() <= 1000 {
            check_invariants(&a, &m)?;
        } else {
            check_counts(&a, &m)?;
        }
    }
    check_invariants(&a, &m)?;
    // The persisted form restores the same allocator, cursors included.
    let json = serde_json::to_string(&a).expect("serialise");
    let mut b: PortAllocator = serde_json::from_str(&json).expect("deserialise");
    prop_assert_eq!(&b, &a);
    for ip in IPS {
        for proto in Proto::ALL {
            prop_assert_eq!(b.request(ip, proto, 0), a.request(ip, proto, 0));
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Many short histories of requests and releases, no exhaustion.
    #[test]
    fn allocations_follow_the_model(ops in proptest::collection::vec(op(0), 1..100)) {
        run(ops)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Fewer histories that also fill (IP, protocol) pairs to exhaustion: a dynamic request
    /// fails exactly when the model has no free port for it, the wildcard rule included.
    #[test]
    fn exhaustion_follows_the_model(ops in proptest::collection::vec(op(2), 1..40)) {
        run(ops)?;
    }
}
