//! Network namespaces for the benchmark: the "host" of a round (a thread that unshared its
//! namespace, whose children inherit it) and the "containers" (parked threads, each in a
//! namespace of its own, named by `/proc/<pid>/task/<tid>/ns/net`).
//!
//! Nothing here touches the machine's own namespace: every round runs on a thread that has
//! just unshared, and the programs it starts (dockerd-net, netavark, the CNI plugins) inherit
//! that namespace.

use std::fs::File;
use std::time::Duration;

use anyhow::{Context, Result};

/// A container's namespace: a parked thread that keeps it alive until the value is dropped
/// (only a down loopback, as a new container has before its runtime configures it).
pub use testns::Netns;

/// `n` fresh container namespaces.
pub fn many(n: usize) -> Result<Vec<Netns>> {
    (0..n)
        .map(|_| {
            Netns::try_new("bench-container")
                .context("unshare(CLONE_NEWNET) for a container (the benchmark needs root)")
        })
        .collect()
}

/// Whatever keeps a finished round's namespaces alive (its host's and its containers'), so
/// that the kernel tears them down when the benchmark decides ([`Graveyard::settle`]), not
/// in the middle of the next round's timed calls.
#[derive(Debug, Default)]
pub struct Graveyard {
    hosts: Vec<File>,
    containers: Vec<Netns>,
}

impl Graveyard {
    pub fn bury(&mut self, host: File, containers: Vec<Netns>) {
        self.hosts.push(host);
        self.containers.extend(containers);
    }

    /// How many namespaces are kept.
    pub fn len(&self) -> usize {
        self.hosts.len() + self.containers.len()
    }

    /// Lets every namespace go and waits until the kernel has torn them down: the
    /// `net_namespace` slab no longer shrinks for 300 ms (a fixed 2 s pause where
    /// /proc/slabinfo cannot be read). Destroying a namespace takes `rtnl_lock` and RCU grace
    /// periods on a kernel workqueue; left to overlap the next round, that work shows up in
    /// its figures (the same reason bench-init keeps its namespaces, see there).
    pub fn settle(&mut self) {
        if self.len() == 0 {
            return;
        }
        self.containers.clear();
        self.hosts.clear();
        bench_init::netns::wait_for_teardown(Duration::from_secs(120));
    }
}

/// Runs `f` on a new thread that has just moved into a fresh network namespace (the round's
/// host, loopback up); returns `f`'s result and a handle that keeps the namespace alive.
pub fn in_fresh_host<T, F>(f: F) -> Result<(T, File)>
where
    F: FnOnce() -> Result<T> + Send + 'static,
    T: Send + 'static,
{
    bench_init::netns::in_fresh_netns("bench-host", true, f)
}

/// How many veth interfaces the calling thread's namespace has (`ip -o link show type veth`):
/// every round checks it after setup (one per container) and after teardown (none), so a
/// figure can never come from work that was not done.
pub fn veth_count() -> Result<usize> {
    let (ok, out) = testns::try_run(&["ip", "-o", "link", "show", "type", "veth"]);
    anyhow::ensure!(ok, "ip -o link show type veth: {out}");
    Ok(out.lines().filter(|l| !l.trim().is_empty()).count())
}
