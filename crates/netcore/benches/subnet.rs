//! Subnet choice against 10, 1 000 and 100 000 routes.
//!
//! The routes are generated deterministically: consecutive /24s from 100.64.0.0 (none touching a
//! candidate) followed by three routes that cover every candidate but the last. Nothing overlaps
//! the last candidate, so every route is scanned and the last candidate is the one chosen.

use std::hint::black_box;
use std::net::Ipv4Addr;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use ipnet::Ipv4Net;
use netcore::netrange::network_overlaps;
use netcore::ops::RouteV4;
use netcore::subnet::{CANDIDATES, choose};

fn routes(n: usize) -> Vec<RouteV4> {
    let cidr = |s: &str| -> Ipv4Net { s.parse().expect("bench CIDR") };
    let last = CANDIDATES[CANDIDATES.len() - 1].trunc();
    // Three routes cover the first eleven candidates (172.16/12, 10/8, 192.168.42.0/23). They
    // come last, so the scan cannot stop early and the last candidate is the one chosen.
    let blockers = [
        cidr("172.16.0.0/12"),
        cidr("10.0.0.0/8"),
        cidr("192.168.42.0/23"),
    ];
    // Filler: consecutive /24s upwards from 100.64.0.0, skipping any that touch a candidate.
    let filler = (0u32..)
        .map(|i| {
            let addr = Ipv4Addr::from(u32::from(Ipv4Addr::new(100, 64, 0, 0)) + (i << 8));
            Ipv4Net::new(addr, 24).expect("/24")
        })
        .filter(|net| {
            CANDIDATES
                .iter()
                .all(|c| !network_overlaps(c.trunc(), *net))
        });
    let all: Vec<RouteV4> = filler
        .take(n - blockers.len())
        .chain(blockers)
        .map(|dst| RouteV4 {
            dst: Some(dst),
            gateway: None,
            oif: Some(3),
        })
        .collect();
    assert!(
        all.iter()
            .all(|r| r.dst.is_some_and(|d| !network_overlaps(d, last)))
    );
    all
}

fn bench(c: &mut Criterion) {
    let nameservers = [Ipv4Addr::new(8, 8, 8, 8), Ipv4Addr::new(1, 1, 1, 1)];
    let mut group = c.benchmark_group("subnet_choose");
    for n in [10usize, 1_000, 100_000] {
        let routes = routes(n);
        assert_eq!(routes.len(), n);
        assert_eq!(
            choose("docker0", &routes, &nameservers),
            Ok(CANDIDATES[CANDIDATES.len() - 1])
        );
        group.bench_with_input(BenchmarkId::from_parameter(n), &routes, |b, routes| {
            b.iter(|| {
                choose(
                    black_box("docker0"),
                    black_box(routes),
                    black_box(&nameservers),
                )
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
