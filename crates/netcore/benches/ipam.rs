//! IP allocation speed: every address of a /16 handed out, then all released.

use std::hint::black_box;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use ipnet::Ipv4Net;
use netcore::ipam::IpAllocator;

fn bench(c: &mut Criterion) {
    let bridge: Ipv4Net = "172.17.42.1/16".parse().expect("bench CIDR");
    let fresh = IpAllocator::new(bridge, None).expect("allocator");
    let capacity = fresh.capacity();

    let mut group = c.benchmark_group("ipam");
    group.sample_size(30);
    group.bench_function("allocate_release_all_slash16", |b| {
        b.iter_batched_ref(
            || fresh.clone(),
            |a| {
                let mut got = Vec::with_capacity(capacity as usize);
                while let Ok(ip) = a.request(None) {
                    got.push(ip);
                }
                assert_eq!(got.len(), capacity as usize);
                for ip in got {
                    a.release(black_box(ip));
                }
                assert_eq!(a.allocated_count(), 0);
            },
            BatchSize::LargeInput,
        );
    });
    // The worst case for next-fit: one free address, just behind the cursor.
    let mut full = fresh.clone();
    while full.request(None).is_ok() {}
    group.bench_function("request_last_free_slash16", |b| {
        b.iter_batched_ref(
            || {
                let mut a = full.clone();
                let hole = a.last().expect("non-empty range");
                let before = std::net::Ipv4Addr::from_bits(hole.to_bits() - 1);
                a.release(before);
                a
            },
            |a| black_box(a.request(None)),
            BatchSize::LargeInput,
        );
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
