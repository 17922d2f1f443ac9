//! The TCP proxy on loopback: echo, large transfers, half-close in both directions, many
//! connections at once, bind conflicts, stop, refused and timed-out connects to the container.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddrV4, TcpListener, TcpStream};
use std::sync::{Arc, Barrier, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use common::{eventually, loopback, runtime};
use netcore::ports::Proto;
use userland_proxy::{Proxy, ProxyOptions};

/// Generous bound for anything that should happen "at once"; only a broken proxy reaches it.
const PROMPTLY: Duration = Duration::from_secs(10);

/// A TCP echo server on an ephemeral loopback port: per connection, echoes until EOF, then
/// shuts down its write side (so a client sees EOF only after all its data came back).
fn echo_server() -> SocketAddrV4 {
    let listener = TcpListener::bind(loopback(0)).unwrap();
    let addr = v4(listener.local_addr().unwrap());
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            thread::spawn(move || {
                let mut reader = stream.try_clone().unwrap();
                if std::io::copy(&mut reader, &mut stream).is_ok() {
                    let _ = stream.shutdown(Shutdown::Write);
                }
            });
        }
    });
    addr
}

fn v4(addr: std::net::SocketAddr) -> SocketAddrV4 {
    match addr {
        std::net::SocketAddr::V4(v4) => v4,
        std::net::SocketAddr::V6(v6) => panic!("expected IPv4, got {v6}"),
    }
}

/// A loopback port nothing listens on (bound, then released).
fn closed_port() -> SocketAddrV4 {
    let listener = TcpListener::bind(loopback(0)).unwrap();
    v4(listener.local_addr().unwrap())
}

fn connect(addr: SocketAddrV4) -> TcpStream {
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(PROMPTLY)).unwrap();
    stream.set_write_timeout(Some(PROMPTLY)).unwrap();
    stream
}

/// Deterministic, non-repeating-looking test data (xorshift).
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()[0]
        })
        .collect()
}

/// Reads until EOF; panics on a timeout or error, which a connection the proxy forgot to
/// close would cause.
fn read_to_eof(stream: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    stream.read_to_end(&mut out).unwrap();
    out
}

/// Whether the peer closed `stream` (EOF or reset) rather than leaving it open.
fn closed_by_peer(stream: &mut TcpStream) -> bool {
    let mut byte = [0_u8; 1];
    match stream.read(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => matches!(
            e.kind(),
            ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe
        ),
    }
}

#[test]
fn small_message_round_trips_and_port_zero_reports_the_chosen_port() {
    let rt = runtime();
    let backend = echo_server();
    let proxy = Proxy::start(rt.handle(), Proto::Tcp, loopback(0), backend).unwrap();
    let local = proxy.local_addr();
    assert_ne!(local.port(), 0);
    assert_eq!(*local.ip(), *loopback(0).ip());
    assert_eq!(proxy.container_addr(), backend);
    assert_eq!(proxy.proto(), Proto::Tcp);

    let mut client = connect(local);
    client.write_all(b"hello through the proxy").unwrap();
    let mut reply = [0_u8; 23];
    client.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"hello through the proxy");
}

#[test]
fn large_transfer_is_intact_and_eof_arrives_after_the_data() {
    let rt = runtime();
    let proxy = Proxy::start(rt.handle(), Proto::Tcp, loopback(0), echo_server()).unwrap();
    let data = pattern(24 * 1024 * 1024, 0x5eed);

    let mut client = connect(proxy.local_addr());
    let mut writer = client.try_clone().unwrap();
    let sent = data.clone();
    let writing = thread::spawn(move || {
        writer.write_all(&sent).unwrap();
        // Half-close: the echo server sees EOF only if the proxy passes it on, and keeps
        // sending back what it still holds.
        writer.shutdown(Shutdown::Write).unwrap();
    });
    let echoed = read_to_eof(&mut client);
    writing.join().unwrap();
    assert_eq!(echoed.len(), data.len());
    assert!(
        echoed == data,
        "the echoed bytes differ from the bytes sent"
    );
}

#[test]
fn client_half_close_still_gets_the_answer_sent_after_eof() {
    // The server answers only after reading to EOF, as in moby/moby#27539: Docker 1.x's proxy
    // closed the connection on the client's FIN and the answer was lost.
    let rt = runtime();
    let listener = TcpListener::bind(loopback(0)).unwrap();
    let backend = v4(listener.local_addr().unwrap());
    thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let request = read_to_eof(&mut stream);
        let answer = format!("got {} bytes", request.len());
        stream.write_all(answer.as_bytes()).unwrap();
    });
    let proxy = Proxy::start(rt.handle(), Proto::Tcp, loopback(0), backend).unwrap();

    let mut client = connect(proxy.local_addr());
    client.write_all(&pattern(100_000, 7)).unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_eof(&mut client), b"got 100000 bytes");
}

#[test]
fn server_half_close_leaves_the_client_to_server_direction_open() {
    let rt = runtime();
    let listener = TcpListener::bind(loopback(0)).unwrap();
    let backend = v4(listener.local_addr().unwrap());
    let (received_tx, received_rx) = mpsc::channel();
    thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        stream.write_all(b"greeting").unwrap();
        stream.shutdown(Shutdown::Write).unwrap();
        received_tx.send(read_to_eof(&mut stream)).unwrap();
    });
    let proxy = Proxy::start(rt.handle(), Proto::Tcp, loopback(0), backend).unwrap();

    let mut client = connect(proxy.local_addr());
    assert_eq!(read_to_eof(&mut client), b"greeting");
    // The server's EOF reached us; what we send now must still reach the server.
    let upload = pattern(300_000, 11);
    client.write_all(&upload).unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    assert!(received_rx.recv_timeout(PROMPTLY).unwrap() == upload);
}

#[test]
fn many_concurrent_connections_are_forwarded_each_to_its_own_backend_connection() {
    const CLIENTS: usize = 200;
    let rt = runtime();
    let proxy = Proxy::start(rt.handle(), Proto::Tcp, loopback(0), echo_server()).unwrap();
    let local = proxy.local_addr();
    // Every client connects and sends, then waits until the test has seen all connections
    // forwarded at the same time; only then do they read their echoes and close.
    let all_open = Arc::new(Barrier::new(CLIENTS + 1));
    let counted = Arc::new(Barrier::new(CLIENTS + 1));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let all_open = Arc::clone(&all_open);
            let counted = Arc::clone(&counted);
            thread::spawn(move || {
                let message = pattern(4096 + i, i as u64 + 1);
                let mut client = connect(local);
                client.write_all(&message).unwrap();
                all_open.wait();
                counted.wait();
                let mut echoed = vec![0_u8; message.len()];
                client.read_exact(&mut echoed).unwrap();
                client.shutdown(Shutdown::Write).unwrap();
                assert!(read_to_eof(&mut client).is_empty());
                echoed == message
            })
        })
        .collect();
    all_open.wait();
    assert!(
        eventually(PROMPTLY, || proxy.tcp_connections() == CLIENTS),
        "{} connections forwarded, {CLIENTS} open",
        proxy.tcp_connections()
    );
    counted.wait();
    let intact = clients
        .into_iter()
        .map(|c| c.join().unwrap())
        .filter(|ok| *ok)
        .count();
    assert_eq!(intact, CLIENTS);
    assert!(
        eventually(PROMPTLY, || proxy.tcp_connections() == 0),
        "{} connections still counted after every client closed",
        proxy.tcp_connections()
    );
}

#[test]
fn a_port_in_use_fails_start_with_addr_in_use() {
    let rt = runtime();
    let backend = echo_server();
    // Another program listening (std sets SO_REUSEADDR too, which does not allow a second
    // listener on the same port).
    let other = TcpListener::bind(loopback(0)).unwrap();
    let taken = v4(other.local_addr().unwrap());
    let err = Proxy::start(rt.handle(), Proto::Tcp, taken, backend).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AddrInUse);

    // Another proxy.
    let first = Proxy::start(rt.handle(), Proto::Tcp, loopback(0), backend).unwrap();
    let err = Proxy::start(rt.handle(), Proto::Tcp, first.local_addr(), backend).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AddrInUse);
    // The failed start left the first proxy working.
    let mut client = connect(first.local_addr());
    client.write_all(b"x").unwrap();
    let mut one = [0_u8; 1];
    client.read_exact(&mut one).unwrap();
    assert_eq!(&one, b"x");
}

#[test]
fn stop_closes_the_listener_and_open_connections_and_frees_the_port() {
    let rt = runtime();
    let backend = echo_server();
    let proxy = Proxy::start(rt.handle(), Proto::Tcp, loopback(0), backend).unwrap();
    let local = proxy.local_addr();
    let mut open = connect(local);
    open.write_all(b"ping").unwrap();
    let mut reply = [0_u8; 4];
    open.read_exact(&mut reply).unwrap();
    assert_eq!(proxy.tcp_connections(), 1);

    proxy.stop();

    // stop() returned after the socket was closed: a connect now is refused, with no wait.
    let err = TcpStream::connect(local).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused);
    // The forwarded connection was closed too.
    assert!(
        closed_by_peer(&mut open),
        "the open connection survived stop"
    );
    // And the port can be published again at once.
    let again = Proxy::start(rt.handle(), Proto::Tcp, local, backend).unwrap();
    let mut client = connect(again.local_addr());
    client.write_all(b"pong").unwrap();
    client.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"pong");
}

#[test]
fn dropping_the_handle_stops_the_proxy() {
    let rt = runtime();
    let proxy = Proxy::start(rt.handle(), Proto::Tcp, loopback(0), echo_server()).unwrap();
    let local = proxy.local_addr();
    drop(proxy);
    let err = TcpStream::connect(local).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused);
}

#[test]
fn stop_async_inside_a_runtime_waits_for_the_close() {
    let rt = runtime();
    let proxy = Proxy::start(rt.handle(), Proto::Tcp, loopback(0), echo_server()).unwrap();
    let local = proxy.local_addr();
    rt.block_on(proxy.stop_async());
    let err = TcpStream::connect(local).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused);
}

#[test]
fn a_refused_container_connect_closes_the_client_and_the_proxy_keeps_serving() {
    let rt = runtime();
    let container = closed_port();
    let proxy = Proxy::start(rt.handle(), Proto::Tcp, loopback(0), container).unwrap();

    for _ in 0..3 {
        let mut client = connect(proxy.local_addr());
        assert!(
            closed_by_peer(&mut client),
            "client left open after a refused connect"
        );
    }
    assert!(eventually(PROMPTLY, || proxy.tcp_connections() == 0));

    // The container's service comes up: the same proxy now forwards.
    let listener = TcpListener::bind(container).unwrap();
    thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        stream.write_all(b"up").unwrap();
    });
    let mut client = connect(proxy.local_addr());
    assert_eq!(read_to_eof(&mut client), b"up");
}

#[test]
fn a_container_that_never_answers_the_connect_is_cut_off_at_the_connect_timeout() {
    let rt = runtime();
    // A listener with a backlog of 0 that never accepts: once one connection waits in its
    // queue, the kernel drops further SYNs, so a connect hangs as it does when a container
    // drops SYNs.
    let full = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    full.bind(&loopback(0).into()).unwrap();
    full.listen(0).unwrap();
    let container = v4(full.local_addr().unwrap().as_socket().unwrap());
    let mut queued = Vec::new();
    let mut hangs = false;
    for _ in 0..8 {
        match TcpStream::connect_timeout(&container.into(), Duration::from_millis(300)) {
            Ok(stream) => queued.push(stream),
            Err(e) if e.kind() == ErrorKind::TimedOut => {
                hangs = true;
                break;
            }
            Err(e) => panic!("unexpected connect error {e}"),
        }
    }
    assert!(hangs, "could not fill the backlog");

    let connect_timeout = Duration::from_millis(300);
    let options = ProxyOptions {
        connect_timeout,
        ..ProxyOptions::default()
    };
    let proxy =
        Proxy::start_with(rt.handle(), Proto::Tcp, loopback(0), container, options).unwrap();
    let started = Instant::now();
    let mut client = connect(proxy.local_addr());
    assert!(
        closed_by_peer(&mut client),
        "client left open after a connect timeout"
    );
    assert!(
        started.elapsed() >= connect_timeout,
        "closed before the connect timed out"
    );
    assert!(eventually(PROMPTLY, || proxy.tcp_connections() == 0));
}

#[test]
fn sctp_is_refused_with_a_clear_error_and_container_port_zero_is_invalid() {
    let rt = runtime();
    let err = Proxy::start(rt.handle(), Proto::Sctp, loopback(0), loopback(80)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unsupported);
    assert_eq!(
        err.to_string(),
        "sctp userland proxy is not supported; use --userland-proxy=false"
    );

    let err = Proxy::start(rt.handle(), Proto::Tcp, loopback(0), loopback(0)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
}
