//! A quick, criterion-free measurement of the proxy on loopback, direct vs proxied:
//! TCP bulk throughput, TCP connection setups per second, UDP round trips per second.
//!
//! `cargo run --release -p userland-proxy --example measure`
//!
//! Not a benchmark of record (those are criterion benches); it prints figures to compare.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::thread;
use std::time::{Duration, Instant};

use netcore::ports::Proto;
use userland_proxy::Proxy;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn v4(addr: SocketAddr) -> Result<SocketAddrV4> {
    match addr {
        SocketAddr::V4(v4) => Ok(v4),
        SocketAddr::V6(_) => Err("not IPv4".into()),
    }
}

fn loopback() -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0)
}

/// Reads every connection to EOF, then answers with one byte.
fn tcp_sink() -> Result<SocketAddrV4> {
    let listener = TcpListener::bind(loopback())?;
    let addr = v4(listener.local_addr()?)?;
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            thread::spawn(move || {
                let mut stream = stream;
                let mut buf = vec![0_u8; 256 * 1024];
                while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
                let _ = stream.write_all(b"k");
            });
        }
    });
    Ok(addr)
}

fn udp_echo() -> Result<SocketAddrV4> {
    let socket = UdpSocket::bind(loopback())?;
    let addr = v4(socket.local_addr()?)?;
    thread::spawn(move || {
        let mut buf = vec![0_u8; 65536];
        while let Ok((n, peer)) = socket.recv_from(&mut buf) {
            let _ = socket.send_to(&buf[..n], peer);
        }
    });
    Ok(addr)
}

fn bulk(target: SocketAddrV4, bytes: usize) -> Result<f64> {
    let chunk = vec![0x5a_u8; 256 * 1024];
    let started = Instant::now();
    let mut stream = TcpStream::connect(target)?;
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len());
        stream.write_all(&chunk[..n])?;
        left -= n;
    }
    stream.shutdown(Shutdown::Write)?;
    let mut ack = [0_u8; 1];
    stream.read_exact(&mut ack)?;
    Ok(bytes as f64 / started.elapsed().as_secs_f64() / (1024.0 * 1024.0))
}

fn setups(target: SocketAddrV4, count: u32) -> Result<f64> {
    let started = Instant::now();
    for _ in 0..count {
        let mut stream = TcpStream::connect(target)?;
        stream.shutdown(Shutdown::Write)?;
        let mut ack = [0_u8; 1];
        stream.read_exact(&mut ack)?;
    }
    Ok(f64::from(count) / started.elapsed().as_secs_f64())
}

fn udp_round_trips(target: SocketAddrV4, count: u32) -> Result<f64> {
    let socket = UdpSocket::bind(loopback())?;
    socket.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut buf = [0_u8; 64];
    let started = Instant::now();
    for _ in 0..count {
        socket.send_to(b"ping", target)?;
        socket.recv_from(&mut buf)?;
    }
    Ok(f64::from(count) / started.elapsed().as_secs_f64())
}

fn main() -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let sink = tcp_sink()?;
    let echo = udp_echo()?;
    let tcp = Proxy::start(rt.handle(), Proto::Tcp, loopback(), sink)?;
    let udp = Proxy::start(rt.handle(), Proto::Udp, loopback(), echo)?;

    let bytes = 1024 * 1024 * 1024;
    println!(
        "tcp bulk 1 GiB:        direct {:8.0} MiB/s   proxied {:8.0} MiB/s",
        bulk(sink, bytes)?,
        bulk(tcp.local_addr(), bytes)?
    );
    println!(
        "tcp connection setups: direct {:8.0} /s      proxied {:8.0} /s",
        setups(sink, 2000)?,
        setups(tcp.local_addr(), 2000)?
    );
    println!(
        "udp round trips:       direct {:8.0} /s      proxied {:8.0} /s",
        udp_round_trips(echo, 20000)?,
        udp_round_trips(udp.local_addr(), 20000)?
    );
    Ok(())
}
