//! Port allocation speed: the whole dynamic range (16383 ports) on one IP and protocol.

use std::hint::black_box;
use std::net::Ipv4Addr;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use netcore::ports::{BEGIN_PORT_RANGE, END_PORT_RANGE, PortAllocator, Proto};

fn bench(c: &mut Criterion) {
    let count = usize::from(END_PORT_RANGE - BEGIN_PORT_RANGE) + 1;
    let mut group = c.benchmark_group("ports");
    group.sample_size(30);
    for (name, ip) in [
        ("allocate_all_dynamic_wildcard", Ipv4Addr::UNSPECIFIED),
        ("allocate_all_dynamic_specific", Ipv4Addr::LOCALHOST),
    ] {
        group.bench_function(name, |b| {
            b.iter_batched_ref(
                PortAllocator::new,
                |p| {
                    let mut n = 0;
                    while p.request(black_box(ip), Proto::Tcp, 0).is_ok() {
                        n += 1;
                    }
                    assert_eq!(n, count);
                },
                BatchSize::LargeInput,
            );
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
