//! The reaper (issue 5): deletes, on a thread of its own, the host veths that `detach`
//! retired.
//!
//! Deleting a link costs the kernel an RCU barrier before it acknowledges the `RTM_DELLINK`
//! (`netdev_run_todo`: 15-28 ms here), whatever else it does. So `detach` only retires the
//! host end ([`AttachOps::retire_link`]: off the bridge, down, in [`REAP_GROUP`]; the
//! container is unplugged from that moment) and answers; this thread then deletes the whole
//! group at once ([`AttachOps::delete_group`]): one barrier for every link retired meanwhile.
//!
//! The worker tells the reaper about each retired link ([`Reaper::retired`], never blocks)
//! and can ask to be told once everything retired so far is gone ([`Reaper::after_reap`],
//! also non-blocking, which `detach` with `wait` uses to answer late without holding up the
//! requests behind it; [`Reaper::flush`] blocks, for the few places that must wait). Notices
//! that arrive while a deletion runs are gathered into the next one.
//!
//! The reaper has its own link backend, opened on its own thread in the daemon's network
//! namespace: the worker's keeps serving requests while a deletion waits in the kernel.
//!
//! [`AttachOps::retire_link`]: netcore::ops::AttachOps::retire_link
//! [`AttachOps::delete_group`]: netcore::ops::AttachOps::delete_group

use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::Instant;

use anyhow::{Context, Result, anyhow};
use netcore::attach::AttachSide;
use netcore::ops::REAP_GROUP;

use crate::backend;

/// Why the links retired so far could not be confirmed gone.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReapError {
    /// The kernel refused to delete the group; the links stay retired (unplugged, down) and
    /// the next reap, or the next start, tries again.
    #[error("deleting the retired veths failed: {0}")]
    Delete(String),
    /// The reaper thread is gone (it panicked).
    #[error("the reaper thread is gone")]
    Gone,
}

/// Called once the links retired before it was queued are deleted, or deleting them failed.
type Done = Box<dyn FnOnce(Result<(), ReapError>) + Send>;

enum Msg {
    /// A link was retired (its name, for the log).
    Retired(String),
    /// Call this after the next deletion.
    After(Done),
}

/// The handle of the reaper thread. Dropping it lets the thread finish what is queued (so
/// nothing retired is left behind) and joins it.
pub struct Reaper {
    tx: Option<mpsc::Sender<Msg>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Reaper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reaper")
            .field("running", &self.thread.is_some())
            .finish()
    }
}

impl Reaper {
    /// Starts the reaper thread; `open` runs on it and opens its link backend (so the
    /// backend's sockets belong to the namespace of the thread calling `spawn`). Fails if
    /// `open` does.
    pub fn spawn<F>(open: F) -> Result<Self>
    where
        F: FnOnce() -> Result<Box<dyn AttachSide>> + Send + 'static,
    {
        let (tx, rx) = mpsc::channel::<Msg>();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<()>>();
        let thread = thread::Builder::new()
            .name("dockerd-net-reaper".into())
            .spawn(move || match open() {
                Ok(link) => {
                    let _ = ready_tx.send(Ok(()));
                    serve(link, &rx);
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            })
            .context("starting the reaper thread")?;
        let opened = ready_rx
            .recv()
            .map_err(|_| anyhow!("the reaper thread ended while opening its link backend"))
            .and_then(|r| r.context("opening the reaper's link backend"));
        if let Err(e) = opened {
            let _ = thread.join();
            return Err(e);
        }
        Ok(Self {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    /// The reaper with the compiled-in link backend (the one [`backend::Backends::open`] opens for
    /// the host side, [`backend::open_link`]), opened on the reaper thread, in the network namespace of the thread
    /// calling this.
    pub fn start() -> Result<Self> {
        Self::spawn(backend::open_link)
    }

    /// The link `name` was retired into [`REAP_GROUP`]: delete it soon. Never blocks.
    pub fn retired(&self, name: &str) {
        let sent = self
            .tx
            .as_ref()
            .is_some_and(|tx| tx.send(Msg::Retired(name.to_owned())).is_ok());
        if !sent {
            tracing::error!(
                veth = name,
                "the reaper thread is gone: the retired veth stays until the next start"
            );
        }
    }

    /// Runs `done` (on the reaper thread) once every link retired before this call is
    /// deleted, or with the error if deleting failed. Never blocks.
    pub fn after_reap(&self, done: impl FnOnce(Result<(), ReapError>) + Send + 'static) {
        let msg = Msg::After(Box::new(done));
        let Some(tx) = &self.tx else {
            if let Msg::After(done) = msg {
                done(Err(ReapError::Gone));
            }
            return;
        };
        if let Err(mpsc::SendError(Msg::After(done))) = tx.send(msg) {
            done(Err(ReapError::Gone));
        }
    }

    /// Waits until every link retired before this call is deleted.
    pub fn flush(&self) -> Result<(), ReapError> {
        let (tx, rx) = mpsc::channel();
        self.after_reap(move |r| {
            let _ = tx.send(r);
        });
        rx.recv().unwrap_or(Err(ReapError::Gone))
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        // The thread drains what is queued, then sees the channel closed and returns.
        drop(self.tx.take());
        if let Some(t) = self.thread.take()
            && t.join().is_err()
        {
            tracing::error!("the reaper thread panicked");
        }
    }
}

/// The reaper's loop: waits for a notice, gathers every notice queued behind it, deletes the
/// group once, answers the waiters; until the channel closes.
fn serve(mut link: Box<dyn AttachSide>, rx: &mpsc::Receiver<Msg>) {
    while let Ok(first) = rx.recv() {
        let mut retired = Vec::new();
        let mut waiting: Vec<Done> = Vec::new();
        let mut take = |m: Msg| match m {
            Msg::Retired(name) => retired.push(name),
            Msg::After(done) => waiting.push(done),
        };
        take(first);
        while let Ok(m) = rx.try_recv() {
            take(m);
        }
        let started = Instant::now();
        // Even with only waiters: a deletion that failed earlier is retried, and a waiter is
        // answered by a deletion that started after it was queued.
        let result = link
            .delete_group(REAP_GROUP)
            .map_err(|e| ReapError::Delete(e.to_string()));
        match &result {
            Ok(()) => tracing::debug!(
                count = retired.len(),
                waiters = waiting.len(),
                us = started.elapsed().as_micros() as u64,
                veths = ?retired,
                "reaped retired veths"
            ),
            Err(e) => tracing::error!(
                count = retired.len(),
                veths = ?retired,
                "{e}; they stay unplugged and are retried at the next detach or start"
            ),
        }
        for done in waiting {
            done(result.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use backend_mock::{Call, FakeHost, Op};
    use netcore::ops::{AttachOps, OpsErrorKind, VethSpec};

    use super::*;

    const CTR: &str = "/proc/4242/ns/net";

    fn world() -> (FakeHost, FakeHost, Reaper) {
        let ctr = FakeHost::new_netns();
        let host = FakeHost::new().with_netns(CTR, ctr.clone());
        let link = host.link_ops();
        let reaper = Reaper::spawn(move || Ok(Box::new(link) as Box<dyn AttachSide>))
            .expect("the reaper starts");
        (host, ctr, reaper)
    }

    fn retire_veth(host: &FakeHost, name: &str, peer: &str) {
        let mut h = host.clone();
        h.create_veth(&VethSpec {
            host: name.into(),
            peer: peer.into(),
            peer_netns: CTR.into(),
            peer_mac: netcore::mac::MacAddr([2, 0x42, 0xac, 0x11, 0, 2]),
            mtu: 1500,
        })
        .expect("veth");
        h.retire_link(name, REAP_GROUP).expect("retire");
    }

    #[test]
    fn flush_returns_once_every_retired_link_is_gone() {
        let (host, ctr, reaper) = world();
        let before = (host.snapshot(), ctr.snapshot());
        retire_veth(&host, "veth1", "eth0");
        retire_veth(&host, "veth2", "eth1");
        reaper.retired("veth1");
        reaper.retired("veth2");
        reaper.flush().expect("reaped");
        assert_eq!((host.snapshot(), ctr.snapshot()), before);
        // Nothing retired: a flush still answers.
        reaper.flush().expect("nothing to reap");
    }

    #[test]
    fn waiters_are_answered_after_the_deletion_and_errors_reach_them() {
        let (host, _ctr, reaper) = world();
        retire_veth(&host, "veth1", "eth0");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (s, h) = (Arc::clone(&seen), host.clone());
        reaper.retired("veth1");
        reaper.after_reap(move |r| {
            let gone = h.link("veth1").is_none();
            s.lock().unwrap_or_else(|p| p.into_inner()).push((r, gone));
        });
        reaper.flush().expect("reaped");
        assert_eq!(
            *seen.lock().unwrap_or_else(|p| p.into_inner()),
            vec![(Ok(()), true)]
        );

        retire_veth(&host, "veth2", "eth0");
        host.fail_nth_with(Op::DeleteGroup, 1, OpsErrorKind::Other);
        // No `retired` notice: the reaper could take it and spend the injected failure on
        // its own before the flush's waiter is queued. A flush deletes the group anyway.
        let e = reaper.flush().expect_err("the deletion fails");
        assert!(matches!(e, ReapError::Delete(_)), "{e:?}");
        assert!(host.link("veth2").is_some(), "still retired");
        // The next flush retries.
        reaper.flush().expect("retried");
        assert!(host.link("veth2").is_none());
    }

    #[test]
    fn dropping_the_reaper_reaps_what_is_queued() {
        let (host, ctr, reaper) = world();
        retire_veth(&host, "veth1", "eth0");
        reaper.retired("veth1");
        drop(reaper);
        assert!(host.link("veth1").is_none() && ctr.link("eth0").is_none());
        assert!(host.calls().contains(&Call::DeleteGroup(REAP_GROUP)));
    }

    #[test]
    fn a_backend_that_cannot_open_fails_the_spawn() {
        let e = Reaper::spawn(|| Err(anyhow!("no netlink here"))).expect_err("fails");
        assert!(format!("{e:#}").contains("no netlink here"), "{e:#}");
    }
}
