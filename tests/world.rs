//! A small world for traffic tests (issue 5): namespaces the test makes, wired like a machine
//! on the internet, with `dockerd-net daemon` plugging "containers" into it, and a tiny echo
//! server and client that run in any of them.
//!
//! ```text
//!   outside (the internet)                    host (the test's thread; dockerd-net runs here)
//!   wan0 192.0.2.2/24  <───── veth ─────>  uplink0 192.0.2.1/24, default via 192.0.2.2
//!   no route to the bridge's subnet                docker0 172.17.42.1/16 (made by the daemon)
//!                                                    ├─ veth ── container c1: eth0 (attach)
//!                                                    └─ veth ── container c2: eth0 (attach)
//! ```
//!
//! - The **host** is the calling thread's namespace (`testns::in_netns` made it): the daemon is
//!   its child, so it runs there, and `ip`/`iptables-save` run from the test's thread read it.
//! - **outside** and every **container** are [`Netns`]: a parked thread that unshared its
//!   network namespace, named by `/proc/<pid>/task/<tid>/ns/net` (the daemon's attach opens
//!   that path). Nothing outlives the test: when the values drop, the threads end and the
//!   kernel removes the namespaces with everything in them.
//! - outside answers only on 192.0.2.0/24: a packet from a container reaches it with the
//!   container's own address only if the host did not masquerade it, and outside's echo
//!   server reports the address it saw ([`Echo::seen`], and the answer's [`Answer::peer`]).
//!
//! Sockets belong to the namespace they were created in, whichever thread uses them later:
//! an [`Echo`] is bound on a thread in its namespace (e.g. `c1.run(|| Echo::start(..))`) and
//! then served by a plain thread; a client call ([`tcp`], [`udp`]) runs where it is called.
//!
//! This file is a module of the traffic test crate (`#[path = "../world.rs"] mod world;`), so
//! it shares that crate's dev-dependencies (`libc` for `setns` and `poll`).

#![allow(dead_code)] // Each test crate that includes the module uses a part of it.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use e2e_tests::{Daemon, Instance, NsState, Tables};

/// The host's address towards outside (TEST-NET-1, RFC 5737: never a Docker candidate).
pub const HOST_ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
/// outside's address.
pub const OUTSIDE_ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
/// The host's end of the link to outside.
pub const UPLINK: &str = "uplink0";
/// outside's end of that link.
pub const WAN: &str = "wan0";

/// How long a connection that must work may take (it takes milliseconds when it works).
pub const WORKS: Duration = Duration::from_secs(5);
/// How long to wait before calling a connection dropped: a packet the firewall passes
/// arrives in well under a millisecond here (veths and a bridge, no wire), so silence for
/// this long means the packet was dropped. Every such check also asks the server whether
/// anything arrived ([`Echo::seen`]), so a packet that got through but whose answer was lost
/// cannot pass for a dropped one.
pub const DROPPED: Duration = Duration::from_millis(300);

// ---------------------------------------------------------------------------------------------
// Namespaces
// ---------------------------------------------------------------------------------------------

/// A network namespace of the test's own ([`testns::Netns`]: a parked thread that keeps it
/// alive until the value is dropped), with a name for messages. Its loopback is up.
#[derive(Debug)]
pub struct Netns {
    name: String,
    ns: testns::Netns,
}

impl Netns {
    /// A fresh namespace named `name` (the name is only for messages).
    pub fn new(name: &str) -> Self {
        let ns = testns::Netns::try_new(name)
            .unwrap_or_else(|e| panic!("namespace {name}: unshare(CLONE_NEWNET): {e}"));
        let ns = Self {
            name: name.to_owned(),
            ns,
        };
        ns.run(|| testns::run(&["ip", "link", "set", "lo", "up"]));
        ns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/proc/<pid>/task/<tid>/ns/net`.
    pub fn path(&self) -> &Path {
        self.ns.path()
    }

    /// The id of the thread that holds the namespace (see [`testns::Netns::tid`]).
    pub fn tid(&self) -> u32 {
        self.ns.tid()
    }

    /// [`Netns::path`] as a string (for JSON and argv).
    pub fn path_str(&self) -> &str {
        self.ns.path_str()
    }

    /// Runs `f` on a thread that joined the namespace: child processes (`ip`, `iptables-save`)
    /// and sockets made there belong to it. A panic in `f` is propagated.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        self.ns.run(f)
    }

    /// Everything in the namespace that attach/detach or the daemon could change.
    pub fn state(&self) -> NsState {
        self.run(|| NsState::capture(Tables::Host))
    }
}

// ---------------------------------------------------------------------------------------------
// Echo server and client
// ---------------------------------------------------------------------------------------------

/// A transport protocol, as the API spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// What an echo server answered: its tag and the address it saw the client come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub server: String,
    pub peer: SocketAddrV4,
}

/// What became of one attempt to reach a server.
#[derive(Debug)]
pub enum Reach {
    /// A server answered.
    Answered(Answer),
    /// The destination refused: a TCP RST, or ICMP port unreachable for UDP (nothing listens).
    Refused,
    /// No answer within the timeout: the packets were dropped on the way.
    Silent,
    /// Anything else (e.g. no route), with the error.
    Failed(io::Error),
}

impl Reach {
    fn from_error(e: io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::ConnectionRefused => Reach::Refused,
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => Reach::Silent,
            _ => Reach::Failed(e),
        }
    }
}

/// Peers one server has seen, per protocol.
#[derive(Debug, Default)]
struct Seen {
    tcp: Vec<SocketAddrV4>,
    udp: Vec<SocketAddrV4>,
}

/// An echo server on one port for both TCP and UDP. Every client sends a line; the server
/// answers `"<tag> <peer address>\n"` (TCP: then closes) and records the peer, so a test can
/// ask who came even when the answer cannot go back.
#[derive(Debug)]
pub struct Echo {
    tag: String,
    port: u16,
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Echo {
    /// Binds `0.0.0.0:port` (TCP and UDP) in the calling thread's namespace and serves it
    /// from a thread of its own until dropped.
    pub fn start(tag: &str, port: u16) -> Self {
        let any = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port);
        let tcp = TcpListener::bind(any).unwrap_or_else(|e| panic!("{tag}: bind tcp {any}: {e}"));
        let udp = UdpSocket::bind(any).unwrap_or_else(|e| panic!("{tag}: bind udp {any}: {e}"));
        let seen = Arc::new(Mutex::new(Seen::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (tag, seen, stop) = (tag.to_owned(), Arc::clone(&seen), Arc::clone(&stop));
            thread::Builder::new()
                .name(format!("echo-{tag}"))
                .spawn(move || serve(&tag, &tcp, &udp, &seen, &stop))
                .unwrap_or_else(|e| panic!("spawn echo thread: {e}"))
        };
        Self {
            tag: tag.to_owned(),
            port,
            seen,
            stop,
            thread: Some(thread),
        }
    }

    pub fn tag(&self) -> &str {
        &self.tag
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The peers seen so far over `proto`, in arrival order.
    pub fn seen(&self, proto: Proto) -> Vec<SocketAddrV4> {
        let s = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        match proto {
            Proto::Tcp => s.tcp.clone(),
            Proto::Udp => s.udp.clone(),
        }
    }

    /// Waits (up to [`WORKS`]) until a peer has been seen over `proto`; returns the first.
    pub fn wait_seen(&self, proto: Proto) -> Option<SocketAddrV4> {
        let deadline = Instant::now() + WORKS;
        loop {
            if let Some(p) = self.seen(proto).first() {
                return Some(*p);
            }
            if Instant::now() > deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The server loop: waits (poll, 50 ms at a time, so it notices `stop`) on both sockets.
fn serve(tag: &str, tcp: &TcpListener, udp: &UdpSocket, seen: &Mutex<Seen>, stop: &AtomicBool) {
    let record = |proto: Proto, peer: SocketAddrV4| {
        let mut s = seen.lock().unwrap_or_else(|e| e.into_inner());
        match proto {
            Proto::Tcp => s.tcp.push(peer),
            Proto::Udp => s.udp.push(peer),
        }
    };
    while !stop.load(Ordering::Relaxed) {
        let [tcp_ready, udp_ready] = poll2(tcp.as_raw_fd(), udp.as_raw_fd(), 50);
        if tcp_ready && let Ok((mut conn, SocketAddr::V4(peer))) = tcp.accept() {
            record(Proto::Tcp, peer);
            let _ = conn.set_read_timeout(Some(WORKS));
            let _ = read_line(&mut conn);
            let _ = conn.write_all(format!("{tag} {peer}\n").as_bytes());
            let _ = conn.shutdown(Shutdown::Both);
        }
        if udp_ready {
            let mut buf = [0u8; 512];
            if let Ok((_, SocketAddr::V4(peer))) = udp.recv_from(&mut buf) {
                record(Proto::Udp, peer);
                // The answer may have no way back (outside has no route to the bridge's
                // subnet); the record above is what such a test reads.
                let _ = udp.send_to(format!("{tag} {peer}\n").as_bytes(), peer);
            }
        }
    }
}

/// Which of two descriptors are readable, waiting at most `ms` milliseconds.
fn poll2(a: RawFd, b: RawFd, ms: i32) -> [bool; 2] {
    let mut fds = [
        libc::pollfd {
            fd: a,
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: b,
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    // SAFETY: `fds` is a live array of two pollfd structs and 2 is its length; poll only
    // writes their `revents` fields.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, ms) };
    if n <= 0 {
        return [false, false];
    }
    [fds[0].revents != 0, fds[1].revents != 0]
}

/// Reads up to a newline (or the end, or 512 bytes).
fn read_line(conn: &mut TcpStream) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut byte = [0u8; 1];
    while out.len() < 512 {
        match conn.read(&mut byte)? {
            0 => break,
            _ if byte[0] == b'\n' => break,
            _ => out.push(byte[0]),
        }
    }
    Ok(out)
}

/// Parses `"<tag> <ip:port>\n"`.
fn parse_answer(text: &str) -> io::Result<Answer> {
    let bad = || io::Error::other(format!("not an echo answer: {text:?}"));
    let (tag, peer) = text.trim_end().split_once(' ').ok_or_else(bad)?;
    Ok(Answer {
        server: tag.to_owned(),
        peer: peer.parse().map_err(|_| bad())?,
    })
}

/// One TCP exchange with an echo server at `to`, from the calling thread's namespace:
/// connect (at most `timeout`), send a line, read the answer.
pub fn tcp(to: SocketAddrV4, timeout: Duration) -> Reach {
    let exchange = || -> io::Result<Answer> {
        let mut s = TcpStream::connect_timeout(&SocketAddr::V4(to), timeout)?;
        s.set_read_timeout(Some(timeout))?;
        s.write_all(b"hello\n")?;
        let mut text = String::new();
        s.read_to_string(&mut text)?;
        parse_answer(&text)
    };
    match exchange() {
        Ok(a) => Reach::Answered(a),
        Err(e) => Reach::from_error(e),
    }
}

/// One UDP exchange with an echo server at `to`, from the calling thread's namespace: a
/// datagram from a connected socket (so an ICMP port unreachable reads as [`Reach::Refused`]),
/// then the answer, waited for at most `timeout`.
pub fn udp(to: SocketAddrV4, timeout: Duration) -> Reach {
    let exchange = || -> io::Result<Answer> {
        let s = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0))?;
        s.connect(to)?;
        s.set_read_timeout(Some(timeout))?;
        s.send(b"hello\n")?;
        let mut buf = [0u8; 512];
        let n = s.recv(&mut buf)?;
        parse_answer(&String::from_utf8_lossy(&buf[..n]))
    };
    match exchange() {
        Ok(a) => Reach::Answered(a),
        Err(e) => Reach::from_error(e),
    }
}

/// [`tcp`] or [`udp`].
pub fn exchange(proto: Proto, to: SocketAddrV4, timeout: Duration) -> Reach {
    match proto {
        Proto::Tcp => tcp(to, timeout),
        Proto::Udp => udp(to, timeout),
    }
}

/// Somewhere a client can run: a namespace of the test's, a container, or the host.
pub trait Place {
    /// For messages.
    fn name(&self) -> String;
    /// Runs `f` in this place's namespace.
    fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T;
}

/// The host: the calling thread's own namespace (see [`World`]).
#[derive(Debug, Clone, Copy)]
pub struct Host;

impl Place for Host {
    fn name(&self) -> String {
        "host".to_owned()
    }

    fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        f()
    }
}

impl Place for Netns {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        self.run(f)
    }
}

impl Place for Container {
    fn name(&self) -> String {
        format!("{} ({})", self.id, self.ip)
    }

    fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        self.ns.run(f)
    }
}

// ---------------------------------------------------------------------------------------------
// The world
// ---------------------------------------------------------------------------------------------

// ---------------------------------------------------------------------------------------------
// Firewall backends
// ---------------------------------------------------------------------------------------------

/// Whether `flags` select `--firewall-backend=nftables` (either spelling).
pub fn nftables_mode(flags: &[&str]) -> bool {
    flag_value(flags, "--firewall-backend").is_some_and(|v| v == "nftables")
}

/// The value of the global flag `name` in `flags` (`--name=value` or `--name value`), the
/// last one winning as with clap.
fn flag_value<'a>(flags: &[&'a str], name: &str) -> Option<&'a str> {
    let mut value = None;
    for (i, f) in flags.iter().enumerate() {
        if let Some(v) = f.strip_prefix(name).and_then(|rest| rest.strip_prefix('=')) {
            value = Some(v);
        } else if *f == name {
            value = flags.get(i + 1).copied();
        }
    }
    value
}

/// What an admin does in the calling thread's namespace (the host) before starting
/// `dockerd-net [flags]`: with `--firewall-backend=nftables`, dockerd-net (like Docker 29)
/// does not turn IPv4 forwarding on and refuses to start while it is off, so the admin turns
/// it on, unless `--ip-forward=false` says the host must not forward. A child process writes
/// it ([`e2e_tests::set_ip_forward`]): /proc/sys/net is the writer's namespace's, and the
/// child of the test's thread is in the host, never in the machine's namespace.
pub fn prepare_host(flags: &[&str]) {
    if nftables_mode(flags) && flag_value(flags, "--ip-forward") != Some("false") {
        e2e_tests::set_ip_forward(true);
    }
}

/// `nft <args>` in the calling thread's namespace; its stdout.
pub fn nft(args: &[&str]) -> String {
    let mut argv = vec!["nft"];
    argv.extend_from_slice(args);
    testns::run(&argv)
}

/// `nft list ruleset` of the calling thread's namespace.
pub fn nft_ruleset() -> String {
    nft(&["list", "ruleset"])
}

/// The elements of set or map `name` of `table ip docker-bridges`, as `nft list` prints them
/// (`tcp . 32768 : 172.17.0.2 . 80`), from `nft list table ip docker-bridges` in the calling
/// thread's namespace. Panics if the table or the set is missing.
pub fn nft_elements(name: &str) -> Vec<String> {
    let table = nft(&["list", "table", "ip", netcore::nftables::TABLE]);
    let start = [format!("\tset {name} {{"), format!("\tmap {name} {{")]
        .iter()
        .find_map(|h| table.find(h.as_str()))
        .unwrap_or_else(|| panic!("no set or map {name} in\n{table}"));
    let block = &table[start..];
    let block = &block[..block.find("\n\t}").unwrap_or(block.len())];
    let Some(i) = block.find("elements = {") else {
        return Vec::new();
    };
    let elements = &block[i + "elements = {".len()..];
    let elements = &elements[..elements.find('}').unwrap_or(elements.len())];
    elements
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(str::to_owned)
        .collect()
}

/// A container: its namespace and what attach answered.
#[derive(Debug)]
pub struct Container {
    pub id: String,
    pub ns: Netns,
    /// The `POST /v1/attach` answer.
    pub attached: serde_json::Value,
    pub ip: Ipv4Addr,
    pub gateway: Ipv4Addr,
}

impl Container {
    /// Runs `f` in the container's namespace.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        self.ns.run(f)
    }

    /// `ip:port` of this container.
    pub fn at(&self, port: u16) -> SocketAddrV4 {
        SocketAddrV4::new(self.ip, port)
    }
}

/// outside and the link to it, around the calling thread's namespace (the host), plus one
/// dockerd-net instance (its data root, resolv.conf and socket in a temporary directory).
#[derive(Debug)]
pub struct World {
    pub outside: Netns,
    pub inst: Instance,
    daemon: Option<Daemon>,
    /// The global flags the daemon was started with (teardown gets the same).
    flags: Vec<String>,
}

impl World {
    /// Builds outside and links it to the calling thread's namespace, which becomes the host.
    /// Call it on a thread in a fresh namespace (`testns::in_netns`).
    pub fn new(bin: &Path, tag: &str) -> Self {
        let outside = Netns::new(&format!("{tag}-outside"));
        // The peer is born in outside's namespace: no moment where wan0 is in the host.
        testns::run(&[
            "ip",
            "link",
            "add",
            UPLINK,
            "type",
            "veth",
            "peer",
            "name",
            WAN,
            "netns",
            outside.path_str(),
        ]);
        testns::run(&["ip", "addr", "add", "192.0.2.1/24", "dev", UPLINK]);
        testns::run(&["ip", "link", "set", UPLINK, "up"]);
        testns::run(&["ip", "route", "add", "default", "via", "192.0.2.2"]);
        outside.run(|| {
            testns::run(&["ip", "addr", "add", "192.0.2.2/24", "dev", WAN]);
            testns::run(&["ip", "link", "set", WAN, "up"]);
        });
        Self {
            outside,
            inst: Instance::new(bin, tag),
            daemon: None,
            flags: Vec::new(),
        }
    }

    /// Starts `dockerd-net [flags] daemon` in the host and waits until it is ready, having
    /// first done what an admin does for those flags ([`prepare_host`]).
    pub fn start(&mut self, flags: &[&str]) {
        assert!(self.daemon.is_none(), "the daemon runs already");
        prepare_host(flags);
        self.flags = flags.iter().map(|f| (*f).to_owned()).collect();
        self.daemon = Some(self.inst.start_daemon(flags));
    }

    pub fn daemon(&self) -> &Daemon {
        self.daemon
            .as_ref()
            .unwrap_or_else(|| panic!("the daemon is not running"))
    }

    /// `POST path body`, which must answer `status`; returns the answer's JSON.
    #[track_caller]
    pub fn call(&self, path: &str, body: &serde_json::Value, status: u16) -> serde_json::Value {
        let d = self.daemon();
        let r = d.post(path, &body.to_string());
        assert_eq!(
            r.status,
            status,
            "POST {path} {body}: {}\n{}",
            r.body,
            d.log_text()
        );
        r.json()
    }

    /// A fresh namespace, attached as container `id` through `POST /v1/attach` (201).
    #[track_caller]
    pub fn container(&self, id: &str) -> Container {
        let ns = Netns::new(id);
        let attached = self.attach(id, &ns, 201);
        Self::container_of(id, ns, attached)
    }

    /// `POST /v1/attach` of `ns` as `id`, which must answer `status`.
    #[track_caller]
    pub fn attach(&self, id: &str, ns: &Netns, status: u16) -> serde_json::Value {
        self.call(
            "/v1/attach",
            &serde_json::json!({"id": id, "netns": ns.path_str()}),
            status,
        )
    }

    /// A [`Container`] from an attach answer.
    pub fn container_of(id: &str, ns: Netns, attached: serde_json::Value) -> Container {
        let ip = |k: &str| -> Ipv4Addr {
            attached["interface"][k]
                .as_str()
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("no interface.{k} in the attach answer {attached}"))
        };
        Container {
            id: id.to_owned(),
            ip: ip("ip"),
            gateway: ip("gateway"),
            ns,
            attached,
        }
    }

    /// `POST /v1/detach` (200). With `wait`, the daemon answers once the veth pair is
    /// deleted; without, once the container is unplugged (the pair is deleted soon after).
    #[track_caller]
    pub fn detach(&self, id: &str, wait: bool) -> serde_json::Value {
        let body = if wait {
            serde_json::json!({ "id": id, "wait": true })
        } else {
            serde_json::json!({ "id": id })
        };
        self.call("/v1/detach", &body, 200)
    }

    /// Publishes `container_port/proto` of `id` on a dynamic host port (and on `host_ip`, if
    /// given); returns the mapping (`host_ip`, `host_port`, ...).
    #[track_caller]
    pub fn publish(
        &self,
        id: &str,
        container_port: u16,
        proto: Proto,
        host_ip: Option<&str>,
    ) -> serde_json::Value {
        let mut req = serde_json::json!({
            "id": id,
            "container_port": container_port,
            "proto": proto.as_str(),
        });
        if let Some(ip) = host_ip {
            req["host_ip"] = ip.into();
        }
        self.call("/v1/allocate_port", &req, 200)
    }

    /// Releases a mapping [`World::publish`] returned.
    #[track_caller]
    pub fn unpublish(&self, id: &str, mapping: &serde_json::Value) -> serde_json::Value {
        self.call(
            "/v1/release_port",
            &serde_json::json!({
                "id": id,
                "host_ip": mapping["host_ip"],
                "host_port": mapping["host_port"],
                "proto": mapping["proto"],
            }),
            200,
        )
    }

    /// `POST /v1/link` from `parent` to `child` on `ports` (`"5432/tcp"`).
    #[track_caller]
    pub fn link(
        &self,
        parent: &Container,
        child: &Container,
        ports: &[&str],
        enable: bool,
    ) -> serde_json::Value {
        self.call(
            "/v1/link",
            &serde_json::json!({
                "parent_ip": parent.ip.to_string(),
                "child_ip": child.ip.to_string(),
                "ports": ports,
                "enable": enable,
            }),
            200,
        )
    }

    /// SIGTERM to the daemon; it must exit 0.
    pub fn stop(&mut self) {
        if let Some(d) = self.daemon.take() {
            let (status, log) = d.terminate();
            assert!(status.success(), "the daemon exited with {status}:\n{log}");
        }
    }

    /// Stops the daemon (if it runs) and runs `dockerd-net [flags] teardown`.
    pub fn teardown(&mut self) {
        self.stop();
        let host = self.inst.host_url();
        let mut argv: Vec<&str> = vec!["-H", &host];
        argv.extend(self.flags.iter().map(String::as_str));
        argv.push("teardown");
        self.inst.run(&argv).assert_success();
    }

    /// Runs a client command of the binary (`-H` set), e.g. `["attach", "c1", path]`.
    pub fn cli(&self, args: &[&str]) -> e2e_tests::Outcome {
        let host = self.inst.host_url();
        let mut argv: Vec<&str> = vec!["-H", &host];
        argv.extend_from_slice(args);
        self.inst.run(&argv)
    }

    /// The mapping's host port.
    pub fn host_port(mapping: &serde_json::Value) -> u16 {
        mapping["host_port"]
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .unwrap_or_else(|| panic!("no host_port in {mapping}"))
    }
}
