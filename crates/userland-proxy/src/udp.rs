//! The UDP proxy: Docker's `udp_proxy.go`.
//!
//! UDP has no connections, so, like Docker, we track *flows*: per client address and local
//! address the client wrote to, a UDP socket connected to the container. Datagrams from the
//! client go out through that socket, so the container sees one stable peer per flow and its
//! replies come back on that socket; a task per flow sends them to the client from the
//! listening socket. A flow that is silent in both directions for
//! [`ProxyOptions::udp_idle_timeout`] is closed.
//!
//! The client must see replies come from the address and port it wrote to, or a connected
//! client socket drops them. The port is the listening socket's; the address is not obvious
//! when the proxy listens on 0.0.0.0 of a multi-homed host (every Docker host: eth0 and
//! docker0): a plain `sendto` lets the kernel pick the source by route, so a container writing
//! to the host's address 192.0.2.1 got its replies from the bridge address. Docker 1.x had
//! that bug (moby/moby#11998); modern Docker fixed it with IP_PKTINFO (moby/moby#48571), and
//! so do we: the listening socket learns each datagram's local address (see [`pktinfo`]),
//! the flow remembers it, and replies are sent from it.

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::pktinfo;
use crate::{Counters, MAX_BACKOFF, MIN_BACKOFF, ProxyOptions, Tracked, Tracker};

/// The largest UDP payload over IPv4 (65535 - 20 - 8). Docker 1.x used 2048 bytes and silently
/// truncated longer datagrams; moby/moby#8895 raised it to this. We never truncate: every
/// datagram IPv4 can carry fits.
pub(crate) const UDP_BUF_SIZE: usize = 65507;

/// Binds `host`, with IP_PKTINFO on so replies can be sent from each datagram's local address.
/// No SO_REUSEADDR for UDP: on a datagram socket it would let a second socket bind the same
/// port and take part of its traffic, instead of failing with EADDRINUSE.
pub(crate) fn bind(host: SocketAddrV4) -> io::Result<std::net::UdpSocket> {
    let socket = std::net::UdpSocket::bind(host)?;
    // Needed only on a wildcard address, but harmless on a specific one (its local address is
    // always that one), so every listener gets it and there is one code path.
    pktinfo::enable(std::os::fd::AsFd::as_fd(&socket))?;
    socket.set_nonblocking(true)?;
    Ok(socket)
}

/// What a flow is keyed by: who wrote, and to which local address. A client writing to two
/// addresses of the host (from one port) gets two flows, so the container's replies on each
/// go back out from the address that flow's datagrams were sent to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct FlowKey {
    client: SocketAddrV4,
    /// The local address the client wrote to, the source of the flow's replies; `None` when
    /// the kernel did not say (then the kernel picks the source by route, as Docker 1.x did).
    local: Option<Ipv4Addr>,
}

/// State shared by the listening task and the flow tasks.
struct Shared {
    listener: UdpSocket,
    container: SocketAddrV4,
    idle_timeout: Duration,
    /// The origin of [`Flow::last_active`].
    epoch: Instant,
    flows: Mutex<HashMap<FlowKey, Arc<Flow>>>,
    counters: Arc<Counters>,
}

/// One client's flow.
struct Flow {
    /// Connected to the container.
    socket: UdpSocket,
    /// Nanoseconds from [`Shared::epoch`] to the flow's last datagram, either direction.
    last_active: AtomicU64,
}

impl Shared {
    fn flows(&self) -> MutexGuard<'_, HashMap<FlowKey, Arc<Flow>>> {
        // The map is consistent after every statement, so a poisoned lock is still usable.
        self.flows.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn touch(&self, flow: &Flow) {
        let now = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        flow.last_active.store(now, Ordering::Relaxed);
    }

    /// When `flow` expires if nothing more happens.
    fn deadline(&self, flow: &Flow) -> Instant {
        let last = Duration::from_nanos(flow.last_active.load(Ordering::Relaxed));
        last.checked_add(self.idle_timeout)
            .and_then(|after| self.epoch.checked_add(after))
            // An idle timeout too large to represent means "never"; a year is as good.
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(365 * 24 * 3600))
    }

    /// Removes `key`'s flow if it is still `flow`.
    fn forget(&self, flows: &mut HashMap<FlowKey, Arc<Flow>>, key: FlowKey, flow: &Arc<Flow>) {
        if flows.get(&key).is_some_and(|f| Arc::ptr_eq(f, flow)) {
            flows.remove(&key);
            self.counters.udp_sessions.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Receives client datagrams until aborted. Flow tasks live in a `JoinSet` owned here, so
/// aborting this task closes every flow too.
pub(crate) async fn serve(
    listener: UdpSocket,
    container: SocketAddrV4,
    options: ProxyOptions,
    tracker: Arc<Tracker>,
    counters: Arc<Counters>,
) {
    let shared = Arc::new(Shared {
        listener,
        container,
        idle_timeout: options.udp_idle_timeout,
        epoch: Instant::now(),
        flows: Mutex::new(HashMap::new()),
        counters,
    });
    let mut buf = vec![0_u8; UDP_BUF_SIZE];
    let mut flow_tasks = JoinSet::new();
    let mut backoff = MIN_BACKOFF;
    loop {
        let received = tokio::select! {
            received = pktinfo::recv_from(&shared.listener, &mut buf) => received,
            Some(done) = flow_tasks.join_next(), if !flow_tasks.is_empty() => {
                if let Err(e) = done
                    && e.is_panic()
                {
                    tracing::error!(error = %e, "userland proxy: a udp flow task panicked");
                }
                continue;
            }
        };
        let (n, key) = match received {
            Ok(datagram) => (
                datagram.len,
                FlowKey {
                    client: datagram.peer,
                    local: datagram.local,
                },
            ),
            Err(e) => {
                tracing::warn!(
                    %container,
                    error = %e,
                    "userland proxy: udp receive failed; retrying in {backoff:?}"
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        backoff = MIN_BACKOFF;
        let Some(flow) = flow_for(&shared, key, &mut flow_tasks, &tracker) else {
            continue;
        };
        let Some(datagram) = buf.get(..n) else {
            continue;
        };
        // A datagram's send is never partial: it goes whole or fails.
        if let Err(e) = flow.socket.send(datagram).await {
            // ECONNREFUSED here reports an ICMP port unreachable for an earlier datagram
            // (nothing listens in the container yet); the datagram is lost, as it would be
            // without the proxy.
            tracing::debug!(client = %key.client, %container, error = %e, "can't proxy a datagram");
        }
    }
}

/// The flow of `key`, created (with its reply task) if there is none. The flow is touched
/// under the map's lock, so a reply task deciding, under the same lock, that its flow is idle
/// either sees this datagram and keeps the flow, or has removed it already and we make a new
/// one: a datagram is never sent on a flow nobody reads replies from.
fn flow_for(
    shared: &Arc<Shared>,
    key: FlowKey,
    flow_tasks: &mut JoinSet<()>,
    tracker: &Arc<Tracker>,
) -> Option<Arc<Flow>> {
    let mut flows = shared.flows();
    if let Some(flow) = flows.get(&key) {
        shared.touch(flow);
        return Some(Arc::clone(flow));
    }
    let socket = match connect(shared.container) {
        Ok(socket) => socket,
        Err(e) => {
            tracing::warn!(
                client = %key.client,
                container = %shared.container,
                error = %e,
                "can't proxy a datagram: no socket to the container"
            );
            return None;
        }
    };
    let flow = Arc::new(Flow {
        socket,
        last_active: AtomicU64::new(0),
    });
    shared.touch(&flow);
    flows.insert(key, Arc::clone(&flow));
    shared.counters.udp_sessions.fetch_add(1, Ordering::Relaxed);
    tracing::debug!(
        client = %key.client,
        local = ?key.local,
        container = %shared.container,
        "userland proxy: new udp flow"
    );
    let replies = reply_loop(Arc::clone(shared), key, Arc::clone(&flow));
    flow_tasks.spawn(Tracked::new(replies, tracker.enter()));
    Some(flow)
}

/// A UDP socket connected to the container. Both calls are plain syscalls that never block,
/// so this runs synchronously (under the flow map's lock).
fn connect(container: SocketAddrV4) -> io::Result<UdpSocket> {
    let socket = std::net::UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0))?;
    socket.connect(container)?;
    socket.set_nonblocking(true)?;
    UdpSocket::from_std(socket)
}

/// Sends the container's replies on `flow` to the client, from the local address it wrote to,
/// until the flow has been idle for the idle timeout, then removes it.
async fn reply_loop(shared: Arc<Shared>, key: FlowKey, flow: Arc<Flow>) {
    let client = key.client;
    let mut buf = vec![0_u8; UDP_BUF_SIZE];
    loop {
        let deadline = shared.deadline(&flow);
        match tokio::time::timeout_at(deadline, flow.socket.recv(&mut buf)).await {
            Ok(Ok(n)) => {
                shared.touch(&flow);
                let Some(datagram) = buf.get(..n) else {
                    continue;
                };
                // A failed reply (the client's route is gone, a full send buffer) loses that
                // datagram only; Docker ended the whole flow.
                let sent = pktinfo::send_to(&shared.listener, datagram, client, key.local).await;
                if let Err(e) = sent {
                    tracing::debug!(%client, error = %e, "can't send a udp reply to the client");
                }
            }
            // An ICMP port unreachable for a datagram we sent: nothing listens in the
            // container (yet). Like Docker, keep the flow until it times out.
            Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => {}
            Ok(Err(e)) => {
                tracing::debug!(%client, error = %e, "userland proxy: udp flow failed");
                break;
            }
            Err(_elapsed) => {
                let mut flows = shared.flows();
                // Checked under the lock the listening task touches flows under; see
                // `flow_for`.
                if Instant::now() >= shared.deadline(&flow) {
                    shared.forget(&mut flows, key, &flow);
                    tracing::debug!(%client, "userland proxy: udp flow idle, closed");
                    return;
                }
            }
        }
    }
    let mut flows = shared.flows();
    shared.forget(&mut flows, key, &flow);
}
