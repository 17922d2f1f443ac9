//! The UDP proxy on loopback: per-client flows, replies to the right client, no truncation,
//! idle timeout in both directions, a container port with nothing listening, stop, and
//! replies from the very address the client wrote to when the proxy listens on 0.0.0.0.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::Duration;

use common::{eventually, loopback, runtime};
use netcore::ports::Proto;
use userland_proxy::{Proxy, ProxyOptions};

const PROMPTLY: Duration = Duration::from_secs(10);

/// Source addresses a test server has seen.
type Peers = Arc<Mutex<BTreeSet<SocketAddr>>>;

/// A UDP echo server on an ephemeral loopback port, recording its peers.
fn echo_server() -> (SocketAddrV4, Peers) {
    echo_server_on(loopback(0))
}

fn echo_server_on(addr: SocketAddrV4) -> (SocketAddrV4, Peers) {
    let socket = UdpSocket::bind(addr).unwrap();
    let addr = v4(socket.local_addr().unwrap());
    let peers = Peers::default();
    let seen = Arc::clone(&peers);
    thread::spawn(move || {
        let mut buf = vec![0_u8; 65536];
        loop {
            let Ok((n, peer)) = socket.recv_from(&mut buf) else {
                continue;
            };
            seen.lock().unwrap().insert(peer);
            let _ = socket.send_to(&buf[..n], peer);
        }
    });
    (addr, peers)
}

/// A UDP server that never replies; it reports each datagram with its source.
fn sink_server() -> (SocketAddrV4, mpsc::Receiver<(SocketAddr, Vec<u8>)>) {
    let socket = UdpSocket::bind(loopback(0)).unwrap();
    let addr = v4(socket.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut buf = vec![0_u8; 65536];
        while let Ok((n, peer)) = socket.recv_from(&mut buf) {
            if tx.send((peer, buf[..n].to_vec())).is_err() {
                return;
            }
        }
    });
    (addr, rx)
}

fn v4(addr: SocketAddr) -> SocketAddrV4 {
    match addr {
        SocketAddr::V4(v4) => v4,
        SocketAddr::V6(v6) => panic!("expected IPv4, got {v6}"),
    }
}

fn client() -> UdpSocket {
    let socket = UdpSocket::bind(loopback(0)).unwrap();
    socket.set_read_timeout(Some(PROMPTLY)).unwrap();
    socket
}

/// Receives one datagram; panics on timeout.
fn recv(socket: &UdpSocket) -> (Vec<u8>, SocketAddr) {
    let mut buf = vec![0_u8; 65536];
    let (n, from) = socket.recv_from(&mut buf).unwrap();
    buf.truncate(n);
    (buf, from)
}

fn short_idle(idle: Duration) -> ProxyOptions {
    ProxyOptions {
        udp_idle_timeout: idle,
        ..ProxyOptions::default()
    }
}

#[test]
fn two_clients_each_get_their_own_replies_from_the_proxy_address() {
    let rt = runtime();
    let (backend, peers) = echo_server();
    let proxy = Proxy::start(rt.handle(), Proto::Udp, loopback(0), backend).unwrap();
    let local = proxy.local_addr();
    assert_ne!(local.port(), 0);

    let (a, b) = (client(), client());
    for i in 0..20 {
        // Both in flight before either reads, so replies interleave at the proxy.
        a.send_to(format!("a-{i}").as_bytes(), local).unwrap();
        b.send_to(format!("b-{i}").as_bytes(), local).unwrap();
        let (reply_a, from_a) = recv(&a);
        let (reply_b, from_b) = recv(&b);
        assert_eq!(reply_a, format!("a-{i}").into_bytes());
        assert_eq!(reply_b, format!("b-{i}").into_bytes());
        assert_eq!(from_a, SocketAddr::V4(local));
        assert_eq!(from_b, SocketAddr::V4(local));
    }
    assert_eq!(proxy.udp_sessions(), 2);
    // One socket to the container per client, kept for all of its datagrams.
    assert_eq!(peers.lock().unwrap().len(), 2);
}

/// 0.0.0.0:0, for a proxy listening on every local address.
fn wildcard() -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)
}

/// `ip`:`port`; every 127/8 address is local on the loopback interface, but the kernel's route
/// to any of them has the source 127.0.0.1, so they stand in for a host's other addresses.
fn on(ip: [u8; 4], port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::from(ip), port)
}

#[test]
fn a_wildcard_proxy_replies_from_the_address_a_connected_client_wrote_to() {
    // A container on docker0 that writes to the host's other address (192.0.2.1:49153) with a
    // connected socket only accepts replies from 192.0.2.1; without IP_PKTINFO the kernel
    // sends them from the bridge address and the socket drops them. Here 127.0.0.2 plays the
    // other address and 127.0.0.1 the route's source.
    let rt = runtime();
    let (backend, _) = echo_server();
    let proxy = Proxy::start(rt.handle(), Proto::Udp, wildcard(), backend).unwrap();
    let port = proxy.local_addr().port();

    let a = client();
    a.connect(on([127, 0, 0, 2], port)).unwrap();
    for i in 0..3 {
        let sent = format!("connected-{i}");
        a.send(sent.as_bytes()).unwrap();
        let mut buf = vec![0_u8; 65536];
        let n = a
            .recv(&mut buf)
            .expect("the reply never reached the connected client: wrong source address?");
        assert_eq!(&buf[..n], sent.as_bytes());
    }
}

#[test]
fn one_client_writing_to_two_local_addresses_gets_replies_from_each() {
    let rt = runtime();
    let (backend, peers) = echo_server();
    let proxy = Proxy::start(rt.handle(), Proto::Udp, wildcard(), backend).unwrap();
    let port = proxy.local_addr().port();

    // One unconnected socket, so it sees every reply and which address it came from.
    let a = client();
    for i in 0..5 {
        for ip in [[127, 0, 0, 1], [127, 0, 0, 2], [127, 0, 0, 3]] {
            let to = on(ip, port);
            let sent = format!("{to}-{i}");
            a.send_to(sent.as_bytes(), to).unwrap();
            let (reply, from) = recv(&a);
            assert_eq!(reply, sent.into_bytes());
            assert_eq!(from, SocketAddr::V4(to), "a reply to {to} came from {from}");
        }
    }
    // One flow per (client, local address), each with its own socket to the container, so the
    // container's replies on each go back out from the right address.
    assert_eq!(proxy.udp_sessions(), 3);
    assert_eq!(peers.lock().unwrap().len(), 3);
}

#[test]
fn a_proxy_bound_to_one_address_replies_from_it() {
    let rt = runtime();
    let (backend, _) = echo_server();
    let proxy = Proxy::start(rt.handle(), Proto::Udp, on([127, 0, 0, 2], 0), backend).unwrap();
    let local = proxy.local_addr();
    assert_eq!(*local.ip(), Ipv4Addr::new(127, 0, 0, 2));
    let a = client();
    a.connect(local).unwrap();
    a.send(b"specific").unwrap();
    let mut buf = vec![0_u8; 64];
    let n = a.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"specific");
}

#[test]
fn the_largest_ipv4_datagram_passes_untruncated_both_ways() {
    let rt = runtime();
    let (backend, _) = echo_server();
    let proxy = Proxy::start(rt.handle(), Proto::Udp, wildcard(), backend).unwrap();
    let big: Vec<u8> = (0..65507_u32).map(|i| (i % 251) as u8).collect();
    let a = client();
    // Through the wildcard socket, so the reply goes out by sendmsg with IP_PKTINFO too.
    a.send_to(&big, on([127, 0, 0, 1], proxy.local_addr().port()))
        .unwrap();
    let (reply, _) = recv(&a);
    assert_eq!(reply.len(), big.len());
    assert!(reply == big);
}

#[test]
fn an_idle_flow_is_closed_after_the_timeout_and_remade_on_demand() {
    let rt = runtime();
    let (backend, peers) = echo_server();
    let idle = Duration::from_secs(1);
    let proxy = Proxy::start_with(
        rt.handle(),
        Proto::Udp,
        loopback(0),
        backend,
        short_idle(idle),
    )
    .unwrap();
    let a = client();
    a.send_to(b"first", proxy.local_addr()).unwrap();
    assert_eq!(recv(&a).0, b"first");
    assert_eq!(proxy.udp_sessions(), 1);

    assert!(
        eventually(PROMPTLY, || proxy.udp_sessions() == 0),
        "the idle flow was never closed"
    );

    // The same client again: a new flow, hence a new socket (source port) to the container.
    a.send_to(b"second", proxy.local_addr()).unwrap();
    assert_eq!(recv(&a).0, b"second");
    assert_eq!(proxy.udp_sessions(), 1);
    assert_eq!(peers.lock().unwrap().len(), 2);
}

#[test]
fn client_traffic_alone_keeps_a_flow_alive() {
    // Docker 1.x expired a flow 90 s after the container's last reply even while the client
    // kept sending; modern Docker (and we) count the client's datagrams too.
    let rt = runtime();
    let (backend, received) = sink_server();
    let idle = Duration::from_secs(1);
    let proxy = Proxy::start_with(
        rt.handle(),
        Proto::Udp,
        loopback(0),
        backend,
        short_idle(idle),
    )
    .unwrap();
    let a = client();
    // 2.5 idle timeouts' worth of one-way traffic.
    for i in 0..25_u8 {
        a.send_to(&[i], proxy.local_addr()).unwrap();
        thread::sleep(Duration::from_millis(100));
    }
    let mut sources = BTreeSet::new();
    for i in 0..25_u8 {
        let (source, payload) = received.recv_timeout(PROMPTLY).unwrap();
        assert_eq!(payload, [i]);
        sources.insert(source);
    }
    assert_eq!(sources.len(), 1, "the flow was recreated: {sources:?}");
    assert!(eventually(PROMPTLY, || proxy.udp_sessions() == 0));
}

#[test]
fn nothing_listening_in_the_container_keeps_the_flow_until_the_service_starts() {
    let rt = runtime();
    let container = {
        let probe = UdpSocket::bind(loopback(0)).unwrap();
        v4(probe.local_addr().unwrap())
    };
    let proxy = Proxy::start(rt.handle(), Proto::Udp, loopback(0), container).unwrap();
    let a = client();
    // Each datagram draws an ICMP port unreachable, reported as ECONNREFUSED on the flow's
    // socket; the flow must shrug it off, as Docker's does.
    for _ in 0..3 {
        a.send_to(b"anyone?", proxy.local_addr()).unwrap();
    }
    thread::sleep(Duration::from_millis(300));
    assert_eq!(proxy.udp_sessions(), 1);

    let (_, peers) = echo_server_on(container);
    a.send_to(b"now?", proxy.local_addr()).unwrap();
    assert_eq!(recv(&a).0, b"now?");
    assert_eq!(proxy.udp_sessions(), 1);
    assert_eq!(peers.lock().unwrap().len(), 1);
}

#[test]
fn a_port_in_use_fails_start_with_addr_in_use() {
    let rt = runtime();
    let (backend, _) = echo_server();
    let other = UdpSocket::bind(loopback(0)).unwrap();
    let taken = v4(other.local_addr().unwrap());
    let err = Proxy::start(rt.handle(), Proto::Udp, taken, backend).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AddrInUse);

    let first = Proxy::start(rt.handle(), Proto::Udp, loopback(0), backend).unwrap();
    let err = Proxy::start(rt.handle(), Proto::Udp, first.local_addr(), backend).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AddrInUse);
    // The failed start left the first proxy working.
    let a = client();
    a.send_to(b"still here", first.local_addr()).unwrap();
    assert_eq!(recv(&a).0, b"still here");
}

#[test]
fn stop_closes_the_listening_socket_and_every_flow() {
    let rt = runtime();
    let (backend, peers) = echo_server();
    let proxy = Proxy::start(rt.handle(), Proto::Udp, loopback(0), backend).unwrap();
    let local = proxy.local_addr();
    let a = client();
    a.send_to(b"hi", local).unwrap();
    assert_eq!(recv(&a).0, b"hi");
    let flow_port = match peers.lock().unwrap().first() {
        Some(peer) => peer.port(),
        None => panic!("the echo server saw no peer"),
    };

    proxy.stop();

    // Both sockets are closed once stop() returns: their ports can be bound again.
    UdpSocket::bind(local).unwrap();
    UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, flow_port)).unwrap();
}
