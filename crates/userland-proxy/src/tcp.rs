//! The TCP proxy: Docker's `tcp_proxy.go`, one task per connection.

use std::io;
use std::net::{SocketAddr, SocketAddrV4};
use std::sync::Arc;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use crate::{CountGuard, Counters, MAX_BACKOFF, MIN_BACKOFF, ProxyOptions, Tracked, Tracker};

/// The backlog passed to `listen`. The kernel caps it at `net.core.somaxconn`, which is the
/// value Go's `net.Listen` (and so Docker's proxy) passes; std's fixed 128 would drop SYNs
/// under a burst of connections that Docker accepted.
const LISTEN_BACKLOG: i32 = 65535;

/// Bytes copied per read in each direction. Go's `io.Copy` uses 32 KiB when it cannot splice.
const COPY_BUF_SIZE: usize = 32 * 1024;

/// Binds and listens on `host`, with SO_REUSEADDR as Go's `net.Listen` sets it: a port whose
/// previous connections linger in TIME_WAIT (a container restarted, a mapping re-created) can
/// be bound again at once, while a port another socket is *listening* on still fails with
/// EADDRINUSE.
pub(crate) fn bind(host: SocketAddrV4) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.bind(&SockAddr::from(host))?;
    socket.listen(LISTEN_BACKLOG)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// Accepts connections until aborted; each one gets its own task in a `JoinSet`, so aborting
/// this task (dropping the set) closes every forwarded connection too.
pub(crate) async fn serve(
    listener: TcpListener,
    container: SocketAddrV4,
    options: ProxyOptions,
    tracker: Arc<Tracker>,
    counters: Arc<Counters>,
) {
    let mut connections = JoinSet::new();
    let mut backoff = MIN_BACKOFF;
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((client, peer)) => {
                    backoff = MIN_BACKOFF;
                    let counted = CountGuard::new(&counters.tcp_connections);
                    let forward = async move {
                        let _counted = counted;
                        forward(client, peer, container, options).await;
                    };
                    connections.spawn(Tracked::new(forward, tracker.enter()));
                }
                Err(e) => {
                    tracing::warn!(
                        container = %container,
                        error = %e,
                        "userland proxy: accept failed; retrying in {backoff:?}"
                    );
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            },
            Some(done) = connections.join_next(), if !connections.is_empty() => {
                if let Err(e) = done
                    && e.is_panic()
                {
                    tracing::error!(error = %e, "userland proxy: a connection task panicked");
                }
            }
        }
    }
}

/// Forwards one accepted connection to the container, then closes both.
async fn forward(
    mut client: TcpStream,
    peer: SocketAddr,
    container: SocketAddrV4,
    options: ProxyOptions,
) {
    let connecting = tokio::time::timeout(options.connect_timeout, TcpStream::connect(container));
    let mut backend = match connecting.await {
        Ok(Ok(backend)) => backend,
        // Dropping `client` closes it, as Docker's `clientLoop` does on a failed dial. A
        // refused connect is routine while the container's service starts, so it is only
        // logged at debug level; anything else deserves a warning.
        Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => {
            tracing::debug!(%peer, %container, error = %e, "can't forward traffic to backend");
            return;
        }
        Ok(Err(e)) => {
            tracing::warn!(%peer, %container, error = %e, "can't forward traffic to backend");
            return;
        }
        Err(_) => {
            tracing::warn!(
                %peer,
                %container,
                "can't forward traffic to backend: connect timed out after {:?}",
                options.connect_timeout
            );
            return;
        }
    };
    // Go enables TCP_NODELAY on every TCP connection, so Docker's proxy never delayed small
    // writes; interactive protocols must not get slower through us.
    for (side, stream) in [("client", &client), ("backend", &backend)] {
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(%peer, side, error = %e, "cannot set TCP_NODELAY");
        }
    }
    let (mut client_read, mut client_write) = client.split();
    let (mut backend_read, mut backend_write) = backend.split();
    let up = pipe(&mut client_read, &mut backend_write);
    let down = pipe(&mut backend_read, &mut client_write);
    tokio::pin!(up, down);
    let mut sent: Option<Piped> = None;
    let mut received: Option<Piped> = None;
    // A direction that ends with EOF leaves the other one running (half-close). One that ends
    // with an error (a reset, a write to a peer that is gone) ends the connection: the broken
    // side can neither deliver nor receive any more, and waiting for the healthy side's peer
    // to close on its own could take forever.
    while sent.is_none() || received.is_none() {
        let failed = tokio::select! {
            piped = &mut up, if sent.is_none() => sent.insert(piped).error.is_some(),
            piped = &mut down, if received.is_none() => received.insert(piped).error.is_some(),
        };
        if failed {
            break;
        }
    }
    tracing::debug!(
        %peer,
        %container,
        sent = sent.as_ref().map(|p| p.bytes),
        received = received.as_ref().map(|p| p.bytes),
        send_error = sent.as_ref().and_then(|p| p.error.as_ref()).map(ToString::to_string),
        receive_error = received
            .as_ref()
            .and_then(|p| p.error.as_ref())
            .map(ToString::to_string),
        "userland proxy: connection closed"
    );
}

/// What one direction of a connection did.
struct Piped {
    bytes: u64,
    error: Option<io::Error>,
}

/// Copies `from` into `to` until EOF or an error, then shuts down `to`'s write side: the
/// half-close reaches the other peer, which may still answer in the other direction
/// (moby/moby#27539). Both sockets are closed by the caller once both directions are done.
async fn pipe<R, W>(from: &mut R, to: &mut W) -> Piped
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0_u8; COPY_BUF_SIZE];
    let mut bytes = 0_u64;
    let error = loop {
        let n = match from.read(&mut buf).await {
            Ok(0) => break None,
            Ok(n) => n,
            Err(e) => break Some(e),
        };
        let Some(chunk) = buf.get(..n) else {
            break Some(io::Error::other(
                "read reported more bytes than the buffer holds",
            ));
        };
        if let Err(e) = to.write_all(chunk).await {
            break Some(e);
        }
        bytes += n as u64;
    };
    // After an error the write side may be gone already; the shutdown is best effort.
    let _ = to.shutdown().await;
    Piped { bytes, error }
}
