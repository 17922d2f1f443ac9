//! Fresh network namespaces for the benchmarks, and waiting for the kernel to tear the used
//! ones down.
//!
//! A benchmark keeps the namespaces of its runs alive (by the handle [`in_fresh_netns`]
//! returns) and lets them go between batches: the kernel destroys a namespace on a
//! workqueue, taking `rtnl_lock` and waiting for RCU grace periods, and on a small machine
//! that work lands in the middle of the next run's timed calls (it showed as 30 ms outliers).

use std::fs::File;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, ensure};

/// Runs `f` on a new thread called `name` that has just moved into a fresh network namespace
/// (with its loopback up when `lo_up`); returns `f`'s result and a handle that keeps the
/// namespace alive (an open `/proc/thread-self/ns/net`).
pub fn in_fresh_netns<T, F>(name: &str, lo_up: bool, f: F) -> Result<(T, File)>
where
    F: FnOnce() -> Result<T> + Send + 'static,
    T: Send + 'static,
{
    thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            testns::unshare_net().context("unshare(CLONE_NEWNET) (the benchmark needs root)")?;
            let ns = File::open("/proc/thread-self/ns/net")
                .context("opening /proc/thread-self/ns/net")?;
            if lo_up {
                let (ok, out) = testns::try_run(&["ip", "link", "set", "lo", "up"]);
                ensure!(ok, "ip link set lo up: {out}");
            }
            Ok((f()?, ns))
        })
        .context("spawning a benchmark thread")?
        .join()
        .map_err(|_| anyhow!("a benchmark thread panicked"))?
}

/// Waits (at most `max`) until the kernel has torn down the namespaces just let go: until
/// the `net_namespace` slab stops changing for 300 ms; a fixed 2 s pause where
/// /proc/slabinfo cannot be read.
pub fn wait_for_teardown(max: Duration) {
    let Some(mut last) = netns_objects() else {
        thread::sleep(Duration::from_secs(2));
        return;
    };
    let started = Instant::now();
    let mut stable_since = Instant::now();
    while started.elapsed() < max {
        thread::sleep(Duration::from_millis(50));
        let now = netns_objects().unwrap_or(last);
        if now != last {
            last = now;
            stable_since = Instant::now();
        } else if stable_since.elapsed() >= Duration::from_millis(300) {
            break;
        }
    }
}

/// Active objects of the `net_namespace` slab.
fn netns_objects() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/slabinfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("net_namespace "))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
