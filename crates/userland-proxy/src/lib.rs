//! Docker's userland proxy (`docker-proxy`) as async tasks inside dockerd-net.
//!
//! Docker 1.x re-executed its own binary as `docker-proxy` once per published port (and modern
//! Docker still runs one `docker-proxy` process per port and address family). Hosts with many
//! published ports ended up with thousands of processes and hundreds of megabytes of RAM
//! (moby/moby#11185, #16284). Here every proxy is a handful of tasks on one tokio runtime the
//! daemon owns: [`Proxy::start`] binds the host socket synchronously, so "address already in use"
//! reaches the caller at once (it then refuses the port allocation, as Docker 1.3's start-up
//! handshake on fd 3 did), and hands the socket to the runtime.
//!
//! Behaviour follows Docker's `tcp_proxy.go` and `udp_proxy.go` (`cmd/docker-proxy` in modern
//! moby), including the fixes later Docker made to the 1.x code:
//!
//! - **TCP half-close is propagated.** Docker 1.x called `CloseRead` on the destination after
//!   copying, so a client that shut down its write side lost the server's answer
//!   (moby/moby#27539, fixed by moby/libnetwork#1598 in Docker 1.13). We shut down the write
//!   side of the other connection on EOF in each direction, and close both sockets only when
//!   both directions are done.
//! - **UDP datagrams are not truncated.** Docker 1.x read into a 2048-byte buffer and silently
//!   cut longer datagrams; moby/moby#8895 raised the buffer to 65507 bytes, the largest UDP
//!   payload over IPv4. We use 65507 bytes too.
//! - **A UDP flow stays alive while either side talks.** Docker 1.x dropped a client's flow 90 s
//!   after the container's last *reply*, even while the client kept sending; modern Docker
//!   also counts the client's writes. We count traffic in both directions.
//! - **UDP replies come from the address the client wrote to.** Docker 1.x's proxy, listening
//!   on 0.0.0.0, let the kernel choose the replies' source by route, so a client that wrote to
//!   one of the host's other addresses got them from another and its connected socket dropped
//!   them (moby/moby#11998, fixed with IP_PKTINFO by moby/moby#48571). We set IP_PKTINFO too.
//!
//! The runtime given to [`Proxy::start`] must have its IO and time drivers enabled
//! (`Builder::enable_all`).

use std::net::SocketAddrV4;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use netcore::ports::Proto;
use tokio::runtime::Handle;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

mod pktinfo;
mod tcp;
mod udp;

/// The message of the error [`Proxy::start`] returns for SCTP.
pub const SCTP_UNSUPPORTED: &str =
    "sctp userland proxy is not supported; use --userland-proxy=false";

/// How long [`ProxyHandle::stop`] waits for the proxy's sockets to be closed. The tasks are
/// aborted, so this is only reached when the runtime is stalled or shutting down.
const STOP_WAIT: Duration = Duration::from_secs(5);

/// Tunables of a proxy. `ProxyOptions::default()` is what the daemon uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyOptions {
    /// How long a TCP connection to the container may take before the client's connection is
    /// closed. Docker's proxy used no timeout of its own, so a client waited for the kernel's
    /// SYN retries (about two minutes) when the container dropped SYNs; on a local bridge a
    /// connect either completes or is refused within milliseconds, so 5 s only cuts off
    /// connections that would not have succeeded.
    pub connect_timeout: Duration,
    /// How long a UDP flow (one client address) may stay silent in both directions before its
    /// socket to the container is closed: Docker's `UDPConnTrackTimeout`, 90 s.
    pub udp_idle_timeout: Duration,
}

impl ProxyOptions {
    /// [`ProxyOptions::connect_timeout`] by default.
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
    /// [`ProxyOptions::udp_idle_timeout`] by default (Docker's `UDPConnTrackTimeout`).
    pub const DEFAULT_UDP_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
}

impl Default for ProxyOptions {
    fn default() -> Self {
        ProxyOptions {
            connect_timeout: Self::DEFAULT_CONNECT_TIMEOUT,
            udp_idle_timeout: Self::DEFAULT_UDP_IDLE_TIMEOUT,
        }
    }
}

/// Starts userland proxies. See the crate documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Proxy;

impl Proxy {
    /// Binds `host` for `proto` and forwards everything it receives to `container`, with
    /// [`ProxyOptions::default`].
    ///
    /// The socket is bound before this returns, so a port held by another program fails here
    /// with [`std::io::ErrorKind::AddrInUse`]. A host port of 0 binds an ephemeral port;
    /// [`ProxyHandle::local_addr`] tells which.
    ///
    /// # Errors
    ///
    /// The bind error, [`std::io::ErrorKind::Unsupported`] for SCTP, or
    /// [`std::io::ErrorKind::InvalidInput`] for container port 0.
    ///
    /// # Panics
    ///
    /// If `rt` has no IO driver (tokio panics when a socket is registered with it).
    pub fn start(
        rt: &Handle,
        proto: Proto,
        host: SocketAddrV4,
        container: SocketAddrV4,
    ) -> std::io::Result<ProxyHandle> {
        Self::start_with(rt, proto, host, container, ProxyOptions::default())
    }

    /// [`Proxy::start`] with explicit [`ProxyOptions`].
    ///
    /// # Errors
    ///
    /// As [`Proxy::start`].
    ///
    /// # Panics
    ///
    /// As [`Proxy::start`].
    pub fn start_with(
        rt: &Handle,
        proto: Proto,
        host: SocketAddrV4,
        container: SocketAddrV4,
        options: ProxyOptions,
    ) -> std::io::Result<ProxyHandle> {
        if container.port() == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("cannot proxy {proto}/{host} to container port 0 ({container})"),
            ));
        }
        let tracker = Arc::new(Tracker::default());
        let counters = Arc::new(Counters::default());
        let (local, task) = match proto {
            Proto::Tcp => {
                let listener = tcp::bind(host)?;
                let local = local_v4(listener.local_addr()?)?;
                // `from_std` registers the socket with the runtime's reactor, which needs the
                // runtime's context on this (plain) thread.
                let _entered = rt.enter();
                let listener = tokio::net::TcpListener::from_std(listener)?;
                let serve = tcp::serve(
                    listener,
                    container,
                    options,
                    Arc::clone(&tracker),
                    Arc::clone(&counters),
                );
                (local, rt.spawn(Tracked::new(serve, tracker.enter())))
            }
            Proto::Udp => {
                let socket = udp::bind(host)?;
                let local = local_v4(socket.local_addr()?)?;
                let _entered = rt.enter();
                let socket = tokio::net::UdpSocket::from_std(socket)?;
                let serve = udp::serve(
                    socket,
                    container,
                    options,
                    Arc::clone(&tracker),
                    Arc::clone(&counters),
                );
                (local, rt.spawn(Tracked::new(serve, tracker.enter())))
            }
            // Modern Docker proxies SCTP too (with a Go SCTP library); nothing in tokio or the
            // standard library speaks SCTP, and SCTP needs no userland proxy for its published
            // ports to work from other hosts, only for host-local access. With
            // --userland-proxy=false that access goes through the hairpin NAT rules instead.
            Proto::Sctp => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::Unsupported,
                    SCTP_UNSUPPORTED,
                ));
            }
        };
        tracing::info!(%proto, host = %local, %container, "userland proxy started");
        Ok(ProxyHandle {
            proto,
            host: local,
            container,
            task: Some(task),
            tracker,
            counters,
        })
    }
}

/// A running proxy. [`ProxyHandle::stop`] or dropping it stops it: the listening socket is
/// closed and so are the connections (TCP) and flows (UDP) it is forwarding, as Docker's proxy
/// closes them when it is told to stop.
#[derive(Debug)]
pub struct ProxyHandle {
    proto: Proto,
    host: SocketAddrV4,
    container: SocketAddrV4,
    task: Option<JoinHandle<()>>,
    tracker: Arc<Tracker>,
    counters: Arc<Counters>,
}

impl ProxyHandle {
    /// The protocol proxied.
    pub fn proto(&self) -> Proto {
        self.proto
    }

    /// The host address actually bound (the chosen port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddrV4 {
        self.host
    }

    /// The container address traffic is forwarded to.
    pub fn container_addr(&self) -> SocketAddrV4 {
        self.container
    }

    /// TCP connections being forwarded right now (including ones still connecting to the
    /// container). Always 0 for UDP.
    pub fn tcp_connections(&self) -> usize {
        self.counters.tcp_connections.load(Ordering::Relaxed)
    }

    /// UDP flows (client addresses with a socket to the container) alive right now. Always 0
    /// for TCP.
    pub fn udp_sessions(&self) -> usize {
        self.counters.udp_sessions.load(Ordering::Relaxed)
    }

    /// Stops the proxy. Called on a plain thread (the intended use: the daemon's worker thread),
    /// it returns once the listening socket and every forwarded connection are closed, so the
    /// port can be bound again at once. Called inside a tokio runtime it must not block that
    /// runtime, so it only starts the shutdown, which completes as soon as the proxy's runtime
    /// runs; use [`ProxyHandle::stop_async`] there to wait.
    pub fn stop(mut self) {
        self.stop_inner();
    }

    /// Stops the proxy and waits, without blocking, until its sockets are closed.
    pub async fn stop_async(mut self) {
        if self.abort() {
            self.tracker.wait().await;
        }
    }

    /// Aborts the tasks; false if that was done already.
    fn abort(&mut self) -> bool {
        let Some(task) = self.task.take() else {
            return false;
        };
        // Aborting the serving task drops its listening socket and its `JoinSet`, which
        // aborts every connection or flow task in turn.
        task.abort();
        tracing::info!(
            proto = %self.proto,
            host = %self.host,
            container = %self.container,
            "userland proxy stopped"
        );
        true
    }

    fn stop_inner(&mut self) {
        if !self.abort() {
            return;
        }
        if Handle::try_current().is_ok() {
            tracing::debug!(
                proto = %self.proto,
                host = %self.host,
                "proxy stopped from inside a runtime; not waiting for its sockets to close"
            );
            return;
        }
        if !self.tracker.wait_blocking(STOP_WAIT) {
            tracing::warn!(
                proto = %self.proto,
                host = %self.host,
                "proxy tasks still running {STOP_WAIT:?} after stop; is the runtime stalled?"
            );
        }
    }
}

impl Drop for ProxyHandle {
    fn drop(&mut self) {
        self.stop_inner();
    }
}

fn local_v4(addr: std::net::SocketAddr) -> std::io::Result<SocketAddrV4> {
    match addr {
        std::net::SocketAddr::V4(v4) => Ok(v4),
        std::net::SocketAddr::V6(v6) => Err(std::io::Error::other(format!(
            "an IPv4 socket reported the IPv6 address {v6}"
        ))),
    }
}

/// Live connection/flow counts, for [`ProxyHandle`]'s statistics.
#[derive(Debug, Default)]
struct Counters {
    tcp_connections: Arc<AtomicUsize>,
    udp_sessions: Arc<AtomicUsize>,
}

/// Counts the proxy's live tasks so that a stop can wait until all their sockets are closed.
#[derive(Debug, Default)]
struct Tracker {
    live: Mutex<usize>,
    all_done: Condvar,
    notify: Notify,
}

impl Tracker {
    /// Registers one more task. Call it before spawning, from a task that is itself counted
    /// (or before the first spawn), so the count never drops to 0 while tasks remain.
    fn enter(self: &Arc<Self>) -> TaskGuard {
        *self.lock() += 1;
        TaskGuard(Arc::clone(self))
    }

    fn lock(&self) -> MutexGuard<'_, usize> {
        // A poisoned count is still a count: the guards only add and subtract.
        self.live.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Blocks until no task is left, for at most `limit`. False on timeout.
    fn wait_blocking(&self, limit: Duration) -> bool {
        let live = self.lock();
        let (_live, result) = self
            .all_done
            .wait_timeout_while(live, limit, |n| *n > 0)
            .unwrap_or_else(PoisonError::into_inner);
        !result.timed_out()
    }

    async fn wait(&self) {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            // Register before checking, so a wake-up between the check and the await is kept.
            notified.as_mut().enable();
            if *self.lock() == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// One live task of a proxy; dropping it tells [`Tracker`].
#[derive(Debug)]
struct TaskGuard(Arc<Tracker>);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        let mut live = self.0.lock();
        *live = live.saturating_sub(1);
        if *live == 0 {
            self.0.all_done.notify_all();
            self.0.notify.notify_waiters();
        }
    }
}

/// A future that holds a [`TaskGuard`] and releases it only after the future itself (and every
/// socket it owns) has been dropped: struct fields are dropped in declaration order, which an
/// `async` block's captured locals do not promise.
struct Tracked<F> {
    future: std::pin::Pin<Box<F>>,
    _guard: TaskGuard,
}

impl<F> Tracked<F> {
    fn new(future: F, guard: TaskGuard) -> Self {
        Tracked {
            future: Box::pin(future),
            _guard: guard,
        }
    }
}

impl<F: Future> Future for Tracked<F> {
    type Output = F::Output;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        self.future.as_mut().poll(cx)
    }
}

/// Counts one live TCP connection in [`Counters`] until dropped.
#[derive(Debug)]
struct CountGuard(Arc<AtomicUsize>);

impl CountGuard {
    fn new(counter: &Arc<AtomicUsize>) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        CountGuard(Arc::clone(counter))
    }
}

impl Drop for CountGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Back-off after a failed `accept`/`recv_from` on the listening socket, doubling up to
/// [`MAX_BACKOFF`]. Docker's proxy stopped for good on the first such error (EMFILE when the
/// host ran out of descriptors left the port dead until the container restarted); we log and
/// retry, as Go's HTTP server does.
const MIN_BACKOFF: Duration = Duration::from_millis(5);
const MAX_BACKOFF: Duration = Duration::from_secs(1);
