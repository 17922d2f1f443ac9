//! Network namespaces for the benchmark: the "host" of a round (a thread that unshared its
//! namespace, whose children inherit it) and the "containers" (parked threads, each in a
//! namespace of its own, named by `/proc/<pid>/task/<tid>/ns/net`).
//!
//! Nothing here touches the machine's own namespace: every round runs on a thread that has
//! just unshared, and the programs it starts (dockerd-net, netavark, the CNI plugins) inherit
//! that namespace.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};

/// A container's namespace: a parked thread that keeps it alive until the value is dropped.
#[derive(Debug)]
pub struct Netns {
    path: PathBuf,
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Netns {
    /// A fresh namespace (only a down loopback, as a new container has before its runtime
    /// configures it).
    pub fn new() -> Result<Self> {
        let (ready_tx, ready_rx) = mpsc::channel::<std::io::Result<PathBuf>>();
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let thread = thread::Builder::new()
            .name("bench-container".into())
            // It only waits: a small stack lets a round hold a thousand of them.
            .stack_size(64 * 1024)
            .spawn(move || {
                let made = testns::unshare_net()
                    .and_then(|()| std::fs::read_link("/proc/thread-self"))
                    .map(|me| Path::new("/proc").join(me).join("ns/net"));
                let ok = made.is_ok();
                let _ = ready_tx.send(made);
                if ok {
                    // Returns once the sender is dropped.
                    let _ = stop_rx.recv();
                }
            })
            .context("spawning a container thread")?;
        let path = ready_rx
            .recv()
            .map_err(|_| anyhow!("a container thread ended before reporting"))?
            .context("unshare(CLONE_NEWNET) for a container (the benchmark needs root)")?;
        Ok(Self {
            path,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// `n` fresh namespaces.
    pub fn many(n: usize) -> Result<Vec<Self>> {
        (0..n).map(|_| Self::new()).collect()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn path_str(&self) -> Result<&str> {
        self.path
            .to_str()
            .ok_or_else(|| anyhow!("non-UTF-8 path {}", self.path.display()))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
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
        let Some(mut last) = netns_objects() else {
            thread::sleep(Duration::from_secs(2));
            return;
        };
        let started = Instant::now();
        let mut stable_since = Instant::now();
        while started.elapsed() < Duration::from_secs(120) {
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
}

/// Active objects of the `net_namespace` slab.
fn netns_objects() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/slabinfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("net_namespace "))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Runs `f` on a new thread that has just moved into a fresh network namespace (the round's
/// host, loopback up); returns `f`'s result and a handle that keeps the namespace alive.
pub fn in_fresh_host<T, F>(f: F) -> Result<(T, File)>
where
    F: FnOnce() -> Result<T> + Send + 'static,
    T: Send + 'static,
{
    thread::Builder::new()
        .name("bench-host".into())
        .spawn(move || {
            testns::unshare_net().context("unshare(CLONE_NEWNET) (the benchmark needs root)")?;
            let ns = File::open("/proc/thread-self/ns/net")
                .context("opening /proc/thread-self/ns/net")?;
            let (ok, out) = testns::try_run(&["ip", "link", "set", "lo", "up"]);
            anyhow::ensure!(ok, "ip link set lo up: {out}");
            Ok((f()?, ns))
        })
        .context("spawning a round's host thread")?
        .join()
        .map_err(|_| anyhow!("a round's host thread panicked"))?
}

/// How many veth interfaces the calling thread's namespace has (`ip -o link show type veth`):
/// every round checks it after setup (one per container) and after teardown (none), so a
/// figure can never come from work that was not done.
pub fn veth_count() -> Result<usize> {
    let (ok, out) = testns::try_run(&["ip", "-o", "link", "show", "type", "veth"]);
    anyhow::ensure!(ok, "ip -o link show type veth: {out}");
    Ok(out.lines().filter(|l| !l.trim().is_empty()).count())
}
