//! Properties of the subnet choice, over arbitrary routes and nameservers.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use netcore::netrange::network_overlaps;
use netcore::ops::RouteV4;
use netcore::subnet::{CANDIDATES, Collision, choose};
use proptest::prelude::*;

/// Routes biased towards the candidates' ranges, so that collisions are common, plus a few
/// default routes and arbitrary destinations.
fn route() -> impl Strategy<Value = RouteV4> {
    let near_candidate =
        (0..CANDIDATES.len(), any::<u32>(), 8u8..=32).prop_map(|(i, noise, len)| {
            let base = u32::from(CANDIDATES[i].network());
            // Stay inside the candidate's /16 neighbourhood most of the time.
            let addr = Ipv4Addr::from(base ^ (noise & 0x0000_ffff));
            Some(Ipv4Net::new(addr, len).expect("len <= 32").trunc())
        });
    let anywhere = (any::<u32>(), 0u8..=32).prop_map(|(a, len)| {
        Some(
            Ipv4Net::new(Ipv4Addr::from(a), len)
                .expect("len <= 32")
                .trunc(),
        )
    });
    let default = Just(None);
    prop_oneof![6 => near_candidate, 3 => anywhere, 1 => default].prop_map(|dst| RouteV4 {
        dst,
        gateway: None,
        oif: Some(2),
    })
}

fn nameserver() -> impl Strategy<Value = Ipv4Addr> {
    let near_candidate = (0..CANDIDATES.len(), any::<u16>()).prop_map(|(i, low)| {
        let base = u32::from(CANDIDATES[i].network()) & 0xffff_0000;
        Ipv4Addr::from(base | u32::from(low))
    });
    prop_oneof![near_candidate, any::<u32>().prop_map(Ipv4Addr::from)]
}

/// Whether a route with this destination claims addresses (default routes do not).
fn claims(dst: Option<Ipv4Net>) -> Option<Ipv4Net> {
    dst.filter(|d| d.prefix_len() != 0)
}

/// The reference: a candidate is free when no nameserver lies in it and no route destination
/// intersects it.
fn is_free(candidate: Ipv4Net, routes: &[RouteV4], nameservers: &[Ipv4Addr]) -> bool {
    let block = candidate.trunc();
    nameservers.iter().all(|ns| !block.contains(ns))
        && routes
            .iter()
            .filter_map(|r| claims(r.dst))
            .all(|dst| !network_overlaps(block, dst))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn the_choice_never_overlaps_a_route_or_a_nameserver(
        routes in prop::collection::vec(route(), 0..40),
        nameservers in prop::collection::vec(nameserver(), 0..4),
    ) {
        if let Ok(chosen) = choose("docker0", &routes, &nameservers) {
            let block = chosen.trunc();
            for ns in &nameservers {
                prop_assert!(!block.contains(ns), "{chosen} holds nameserver {ns}");
            }
            for dst in routes.iter().filter_map(|r| claims(r.dst)) {
                prop_assert!(!network_overlaps(block, dst), "{chosen} overlaps route {dst}");
            }
        }
    }

    #[test]
    fn the_choice_is_the_first_free_candidate_whenever_one_is_free(
        routes in prop::collection::vec(route(), 0..40),
        nameservers in prop::collection::vec(nameserver(), 0..4),
    ) {
        let first_free = CANDIDATES.iter().copied().find(|c| is_free(*c, &routes, &nameservers));
        match (choose("docker0", &routes, &nameservers), first_free) {
            (Ok(chosen), Some(want)) => prop_assert_eq!(chosen, want),
            (Err(err), None) => {
                // Every candidate is listed with a collision that is real.
                prop_assert_eq!(err.collisions.len(), CANDIDATES.len());
                for ((candidate, collision), want) in err.collisions.iter().zip(CANDIDATES) {
                    prop_assert_eq!(*candidate, want);
                    match collision {
                        Collision::Nameserver(ns) => {
                            prop_assert!(candidate.trunc().contains(ns));
                            prop_assert!(nameservers.contains(ns));
                        }
                        Collision::Route(dst) => {
                            prop_assert!(network_overlaps(candidate.trunc(), *dst));
                            prop_assert!(routes.iter().any(|r| r.dst == Some(*dst)));
                        }
                    }
                }
            }
            (got, want) => prop_assert!(false, "choose gave {got:?}, the first free candidate is {want:?}"),
        }
    }

    #[test]
    fn the_error_names_the_first_collision_of_each_candidate(
        routes in prop::collection::vec(route(), 0..40),
        nameservers in prop::collection::vec(nameserver(), 0..4),
    ) {
        // Add def1 routes so that nothing is free and the error is always produced.
        let mut all = routes.clone();
        all.push(RouteV4 { dst: Some("0.0.0.0/1".parse().expect("cidr")), gateway: None, oif: None });
        all.push(RouteV4 { dst: Some("128.0.0.0/1".parse().expect("cidr")), gateway: None, oif: None });
        let err = choose("docker0", &all, &nameservers).expect_err("def1 routes cover everything");
        for (candidate, collision) in &err.collisions {
            let block = candidate.trunc();
            let want = nameservers
                .iter()
                .find(|ns| block.contains(*ns))
                .map(|ns| Collision::Nameserver(*ns))
                .or_else(|| {
                    all.iter()
                        .filter_map(|r| claims(r.dst))
                        .find(|dst| network_overlaps(block, *dst))
                        .map(Collision::Route)
                });
            prop_assert_eq!(Some(*collision), want);
        }
    }
}
