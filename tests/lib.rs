//! Helpers shared by the end-to-end tests (namespaces, `ip -j`, `iptables-save`).
//!
//! The `kernel_*` functions describe the calling thread's network namespace as netcore's own
//! types, read with `ip -j` only, so a backend's answer can be compared with the kernel's
//! without trusting any backend.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};

use ipnet::Ipv4Net;
use netcore::mac::MacAddr;
use netcore::ops::{LinkInfo, RouteV4};

/// Every link as `ip -j -d link show` and `ip -j -4 addr show` report it, sorted by index.
///
/// `kind` is `linkinfo.info_kind`; `mac` is the link's address when it is six bytes
/// (Ethernet-like and loopback links; a tunnel's `0.0.0.0` or a 20-byte InfiniBand address
/// is `None`); `addrs` are the IPv4 addresses in kernel order, alias labels included.
pub fn kernel_links() -> Vec<LinkInfo> {
    let mut addrs: HashMap<String, Vec<Ipv4Net>> = HashMap::new();
    let out = testns::run(&["ip", "-j", "-4", "addr", "show"]);
    for link in testns::json_array(&out) {
        let name = str_field(&link, "ifname").to_owned();
        let list = addrs.entry(name).or_default();
        for a in link["addr_info"].as_array().cloned().unwrap_or_default() {
            if a["family"] != "inet" {
                continue;
            }
            let ip: Ipv4Addr = str_field(&a, "local")
                .parse()
                .unwrap_or_else(|e| panic!("bad address in {a}: {e}"));
            let prefix = a["prefixlen"]
                .as_u64()
                .and_then(|p| u8::try_from(p).ok())
                .unwrap_or_else(|| panic!("bad prefixlen in {a}"));
            list.push(Ipv4Net::new(ip, prefix).unwrap_or_else(|e| panic!("{a}: {e}")));
        }
    }
    let mut links: Vec<LinkInfo> = testns::ip_links()
        .iter()
        .map(|l| {
            let name = str_field(l, "ifname").to_owned();
            LinkInfo {
                index: u32_field(l, "ifindex"),
                kind: l["linkinfo"]["info_kind"].as_str().map(str::to_owned),
                mac: l["address"]
                    .as_str()
                    .and_then(|a| a.parse::<MacAddr>().ok()),
                mtu: u32_field(l, "mtu"),
                up: has_flag(l, "UP"),
                addrs: addrs.remove(&name).unwrap_or_default(),
                name,
            }
        })
        .collect();
    links.sort_by_key(|l| l.index);
    links
}

/// One route of `ip -j -4 route show table main`, as a [`RouteV4`] the way a netlink dump
/// describes it. A multipath route (`nexthops`) has no top-level device or gateway, so
/// `oif` and `gateway` are `None` and `multipath` is set: backends that cannot see the
/// difference (`/proc/net/route` prints the first nexthop) are compared on `dst` only there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelRoute {
    pub route: RouteV4,
    pub multipath: bool,
}

/// The main table's IPv4 routes, sorted with [`route_key`].
pub fn kernel_routes_v4() -> Vec<KernelRoute> {
    let index: HashMap<String, u32> = kernel_links()
        .into_iter()
        .map(|l| (l.name, l.index))
        .collect();
    let mut routes: Vec<KernelRoute> = testns::ip_routes4()
        .iter()
        .map(|r| {
            let dst = match str_field(r, "dst") {
                "default" => None,
                d if d.contains('/') => Some(d.parse().unwrap_or_else(|e| panic!("{r}: {e}"))),
                d => Some(
                    Ipv4Net::new(d.parse().unwrap_or_else(|e| panic!("{r}: {e}")), 32)
                        .unwrap_or_else(|e| panic!("{r}: {e}")),
                ),
            };
            let gateway = r["gateway"]
                .as_str()
                .map(|g| g.parse().unwrap_or_else(|e| panic!("{r}: {e}")));
            let oif = r["dev"].as_str().map(|d| {
                *index
                    .get(d)
                    .unwrap_or_else(|| panic!("route {r} names unknown device {d}"))
            });
            KernelRoute {
                route: RouteV4 { dst, gateway, oif },
                multipath: r.get("nexthops").is_some(),
            }
        })
        .collect();
    routes.sort_by_key(|r| route_key(&r.route));
    routes
}

/// A total order on routes, to compare lists regardless of the order a source gives.
pub fn route_key(r: &RouteV4) -> (Option<Ipv4Net>, Option<Ipv4Addr>, Option<u32>) {
    (r.dst, r.gateway, r.oif)
}

/// The index of a link, from `ip -j link show dev NAME`.
pub fn kernel_index(name: &str) -> u32 {
    let link = testns::ip_link(name).unwrap_or_else(|| panic!("no link {name}"));
    u32_field(&link, "ifindex")
}

fn str_field<'a>(v: &'a serde_json::Value, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("no string {key:?} in {v}"))
}

fn u32_field(v: &serde_json::Value, key: &str) -> u32 {
    v[key]
        .as_u64()
        .and_then(|n| u32::try_from(n).ok())
        .unwrap_or_else(|| panic!("no u32 {key:?} in {v}"))
}

/// Whether an `ip -j link` entry has `flag` in its flags.
pub fn has_flag(link: &serde_json::Value, flag: &str) -> bool {
    link["flags"]
        .as_array()
        .is_some_and(|f| f.iter().any(|x| x == flag))
}

// ---------------------------------------------------------------------------------------------
// End-to-end support: the `dockerd-net` binary, run in a test's namespace, and snapshots of
// that namespace to compare before and after.
// ---------------------------------------------------------------------------------------------

/// The `dockerd-net` binary as a user gets it (default features: the netlink link backend),
/// built for this test run's profile into the workspace's own target directory.
///
/// Why a nested `cargo build`: `env!("CARGO_BIN_EXE_dockerd-net")` exists only for tests of
/// the binary's own package, and a dev-dependency on `dockerd-net` would build its library
/// only (it has none), never its binary. So the first test that needs the binary runs
/// `$CARGO build -p dockerd-net` once (cargo releases its build lock before it runs test
/// binaries, so this does not dead-lock); with `cargo test --workspace` it is a no-op
/// re-check, with `cargo test -p e2e-tests` it builds what is missing. The result is
/// checked with `--version`, so a stale or wrong binary cannot pass unnoticed.
pub fn dockerd_net() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| build_dockerd_net(&[], None, "netlink"))
}

/// `dockerd-net` built with `--no-default-features --features ioctl` (the ioctl link
/// backend), in its own target directory `<target>/e2e-ioctl`: with the same directory the
/// two builds would overwrite each other's `dockerd-net` while tests run both in parallel.
pub fn dockerd_net_ioctl() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        build_dockerd_net(
            &["--no-default-features", "--features", "ioctl"],
            Some("e2e-ioctl"),
            "ioctl",
        )
    })
}

/// Runs one `cargo build` of dockerd-net and returns the binary's path. Builds are
/// serialised: two concurrent cargo builds on a 2-core machine only slow each other down.
fn build_dockerd_net(features: &[&str], subdir: Option<&str>, backend: &str) -> PathBuf {
    static BUILDING: Mutex<()> = Mutex::new(());
    let _one_at_a_time = BUILDING.lock().unwrap_or_else(|e| e.into_inner());

    // This test executable is `<target>/<profile dir>/deps/<name>-<hash>`.
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .unwrap_or_else(|| panic!("unexpected test executable path {}", exe.display()));
    let target = profile_dir
        .parent()
        .unwrap_or_else(|| panic!("unexpected test executable path {}", exe.display()));
    let profile_name = profile_dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_else(|| panic!("unexpected profile dir {}", profile_dir.display()));
    // The directory name is the profile's, except that `dev` builds into `debug`.
    let profile = match profile_name {
        "debug" => "dev",
        other => other,
    };
    let target_dir = match subdir {
        Some(s) => target.join(s),
        None => target.to_path_buf(),
    };
    let workspace = workspace_root();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(&cargo)
        .current_dir(workspace)
        .args([
            "build",
            "--quiet",
            "-p",
            "dockerd-net",
            "--bin",
            "dockerd-net",
        ])
        .args(["--profile", profile])
        .args(features)
        .arg("--target-dir")
        .arg(&target_dir)
        .output()
        .unwrap_or_else(|e| panic!("spawn {cargo:?} build: {e}"));
    assert!(
        out.status.success(),
        "building dockerd-net {features:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bin = target_dir.join(profile_name).join("dockerd-net");
    let version = testns::run(&[path_str(&bin), "--version"]);
    assert!(
        version.contains(&format!("(link backend: {backend})")),
        "{} is not the {backend} build: {version}",
        bin.display()
    );
    bin
}

fn path_str(p: &Path) -> &str {
    p.to_str()
        .unwrap_or_else(|| panic!("non-UTF-8 path {}", p.display()))
}

pub use testns::TempDir;

/// The resolv.conf every instance starts with: one nameserver (TEST-NET-1, RFC 5737) that
/// collides with none of Docker's candidate subnets.
pub const NEUTRAL_RESOLV_CONF: &str = "nameserver 192.0.2.53\n";

/// One "installation" of dockerd-net: a binary with its own temporary `--data-root` and
/// `--resolv-conf`, run as a child of the calling thread (hence in its network namespace).
#[derive(Debug)]
pub struct Instance {
    bin: PathBuf,
    dir: TempDir,
}

/// What a run of the binary did.
#[derive(Debug)]
pub struct Outcome {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Outcome {
    /// Panics, showing the output, unless the run exited 0.
    #[track_caller]
    pub fn assert_success(&self) -> &Self {
        assert!(
            self.status.success(),
            "dockerd-net failed ({}):\n{self}",
            self.status
        );
        self
    }

    /// Panics, showing the output, unless the run exited non-zero; returns stderr.
    #[track_caller]
    pub fn assert_failure(&self) -> &str {
        assert!(
            !self.status.success() && self.status.code().is_some(),
            "dockerd-net should have failed with an exit code ({}):\n{self}",
            self.status
        );
        &self.stderr
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "--- stdout\n{}--- stderr\n{}", self.stdout, self.stderr)
    }
}

impl Instance {
    pub fn new(bin: &Path, tag: &str) -> Self {
        let dir = TempDir::new(tag);
        dir.write("resolv.conf", NEUTRAL_RESOLV_CONF);
        Self {
            bin: bin.to_path_buf(),
            dir,
        }
    }

    /// Replaces the instance's resolv.conf.
    pub fn set_resolv_conf(&self, text: &str) {
        self.dir.write("resolv.conf", text);
    }

    /// Writes a file next to the data root (e.g. a daemon.json) and returns its path.
    pub fn write_file(&self, name: &str, text: &str) -> PathBuf {
        self.dir.write(name, text)
    }

    pub fn data_root(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The scratch directory the instance's files live in.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn bin(&self) -> &Path {
        &self.bin
    }

    /// The full argument list for `args` (e.g. `["--icc=false", "init"]`): the instance's
    /// own `--data-root` and `--resolv-conf` come first.
    pub fn argv(&self, args: &[&str]) -> Vec<String> {
        let mut v = vec![
            "--data-root".to_owned(),
            path_str(&self.data_root()).to_owned(),
            "--resolv-conf".to_owned(),
            path_str(&self.dir.path().join("resolv.conf")).to_owned(),
        ];
        v.extend(args.iter().map(|a| (*a).to_owned()));
        v
    }

    /// The command for `args`, ready to adjust (environment) and run. Logs are uncoloured
    /// (`NO_COLOR`, honoured by tracing-subscriber) so tests can read them, and `RUST_LOG`
    /// from the test's environment is dropped so that `--log-level` decides.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.args(self.argv(args))
            .env("NO_COLOR", "1")
            .env_remove("RUST_LOG");
        c
    }

    /// Runs the binary with `args` and waits for it.
    pub fn run(&self, args: &[&str]) -> Outcome {
        run_command(self.command(args))
    }
}

/// Runs a prepared command and collects its outcome.
pub fn run_command(mut c: Command) -> Outcome {
    let out = c.output().unwrap_or_else(|e| panic!("spawn {c:?}: {e}"));
    Outcome {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Which iptables implementation a test reads back with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tables {
    /// The host's plain `iptables`/`iptables-save` (what `--iptables-backend auto` drives).
    Host,
    /// `iptables-legacy`/`iptables-legacy-save`.
    Legacy,
}

impl Tables {
    pub fn save(self) -> &'static str {
        match self {
            Tables::Host => "iptables-save",
            Tables::Legacy => "iptables-legacy-save",
        }
    }

    pub fn iptables(self) -> &'static str {
        match self {
            Tables::Host => "iptables",
            Tables::Legacy => "iptables-legacy",
        }
    }

    /// `iptables-save -t <table>` with comment lines removed and chain counters zeroed.
    ///
    /// Comments carry timestamps (and nft's "legacy tables present" warning). Counters are
    /// traffic, not configuration: a new bridge's own IGMP/MLD reports pass through nat
    /// OUTPUT/POSTROUTING and legacy iptables counts them (`[1:40]`) at random moments.
    pub fn save_table(self, table: &str) -> String {
        normalize_save(&testns::run(&[self.save(), "-t", table]))
    }

    /// `iptables-save -t filter` followed by `-t nat`, normalised: the shape of the golden files.
    pub fn filter_and_nat(self) -> String {
        format!("{}{}", self.save_table("filter"), self.save_table("nat"))
    }

    /// The filter table's FORWARD policy (`ACCEPT`/`DROP`), from `iptables -S FORWARD`.
    pub fn forward_policy(self) -> String {
        let out = testns::run(&[self.iptables(), "-w", "-t", "filter", "-S", "FORWARD"]);
        out.lines()
            .find_map(|l| l.strip_prefix("-P FORWARD "))
            .unwrap_or_else(|| panic!("no FORWARD policy in {out:?}"))
            .trim()
            .to_owned()
    }
}

/// iptables-save text without `#` lines and with every chain's `[packets:bytes]` set to `[0:0]`.
pub fn normalize_save(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        match (line.starts_with(':'), line.rfind(" [")) {
            (true, Some(i)) if line.ends_with(']') => {
                out.push_str(&line[..i]);
                out.push_str(" [0:0]");
            }
            _ => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// The workspace's root directory.
pub fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives in the workspace root")
}

/// A listing file (iptables-save shape), with its `#` lines removed and counters zeroed.
pub fn listing(path: &Path) -> String {
    normalize_save(
        &std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display())),
    )
}

/// A golden listing of this crate: `tests/golden/<rel>`, read with [`listing`].
pub fn golden(rel: &str) -> String {
    listing(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("golden")
            .join(rel),
    )
}

/// Where `prog` is: the first match on `PATH`, then in `/usr/sbin` and `/sbin` (where the
/// iptables and ip tools live even when a user's `PATH` lacks them).
pub fn which(prog: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|d| d.join(prog))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{prog} is not installed"))
}

/// `net.ipv4.ip_forward` of the calling thread's namespace, read by a child `cat` (a child
/// process is unambiguous about which namespace's /proc/sys/net it sees).
pub fn ip_forward() -> String {
    testns::run(&["cat", "/proc/sys/net/ipv4/ip_forward"])
        .trim()
        .to_owned()
}

/// Sets `net.ipv4.ip_forward` in the calling thread's namespace (through a child `sh`).
pub fn set_ip_forward(on: bool) {
    let cmd = format!(
        "echo {} > /proc/sys/net/ipv4/ip_forward",
        if on { 1 } else { 0 }
    );
    testns::run(&["sh", "-c", &cmd]);
}

/// Everything dockerd-net may change in a namespace, read through `ip -j`, iptables-save and
/// /proc (by child processes): equal snapshots mean "the namespace is as it was".
#[derive(Debug, Clone, PartialEq)]
pub struct NsState {
    pub links: Vec<LinkInfo>,
    pub routes: Vec<KernelRoute>,
    pub filter: String,
    pub nat: String,
    pub forward_policy: String,
    pub ip_forward: String,
    /// `route_localnet` of every `/proc/sys/net/ipv4/conf/*` entry (`all`, `default` and each
    /// link), one `path:value` line each: hairpin mode (`--userland-proxy=false`) sets it.
    pub route_localnet: String,
}

impl NsState {
    pub fn capture(tables: Tables) -> Self {
        Self {
            links: kernel_links(),
            routes: kernel_routes_v4(),
            filter: tables.save_table("filter"),
            nat: tables.save_table("nat"),
            forward_policy: tables.forward_policy(),
            ip_forward: ip_forward(),
            route_localnet: testns::run(&[
                "sh",
                "-c",
                "grep -H . /proc/sys/net/ipv4/conf/*/route_localnet",
            ]),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The daemon: `dockerd-net daemon` run as a child in the test's namespace, and raw HTTP/1.1
// requests over its Unix socket (no HTTP client crate: the bytes on the wire are the test).
// ---------------------------------------------------------------------------------------------

/// A running `dockerd-net daemon`, started by [`Instance::start_daemon`]. Dropping it kills
/// the process (SIGKILL) if it still runs.
#[derive(Debug)]
pub struct Daemon {
    child: std::process::Child,
    socket: PathBuf,
    log: PathBuf,
}

/// A raw HTTP answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpReply {
    pub status: u16,
    /// Header names in lower case, values trimmed.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpReply {
    /// The body as JSON (panics with the body when it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {} body is not JSON ({e}): {}",
                self.status, self.body
            )
        })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

impl Instance {
    /// The API socket the instance's daemon listens on (in its scratch directory).
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("api.sock")
    }

    /// The `-H` value for [`Instance::socket`].
    pub fn host_url(&self) -> String {
        format!("unix://{}", path_str(&self.socket()))
    }

    /// Starts `dockerd-net [args] daemon` with this instance's data root, resolv.conf and
    /// socket, and returns once it is ready: it has sent systemd's `READY=1` to a
    /// `NOTIFY_SOCKET` datagram socket of the test's (which also checks that readiness
    /// protocol) and answers `GET /v1/health`. Panics with the daemon's log if it exits or
    /// is not ready within 60 s.
    pub fn start_daemon(&self, args: &[&str]) -> Daemon {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let log = self.dir.path().join(format!("daemon-{n}.log"));
        let notify_path = self.dir.path().join(format!("notify-{n}.sock"));
        let notify = std::os::unix::net::UnixDatagram::bind(&notify_path)
            .unwrap_or_else(|e| panic!("bind {}: {e}", notify_path.display()));
        notify
            .set_read_timeout(Some(std::time::Duration::from_millis(100)))
            .expect("set_read_timeout");
        let host = self.host_url();
        let mut argv: Vec<&str> = vec!["-H", &host, "--log-level", "debug"];
        argv.extend_from_slice(args);
        argv.push("daemon");
        let out = std::fs::File::create(&log).unwrap_or_else(|e| panic!("create log: {e}"));
        let err = out.try_clone().expect("clone log");
        let mut cmd = self.command(&argv);
        cmd.env("NOTIFY_SOCKET", &notify_path)
            .stdin(std::process::Stdio::null())
            .stdout(out)
            .stderr(err);
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        let mut d = Daemon {
            child,
            socket: self.socket(),
            log,
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let mut buf = [0u8; 256];
        loop {
            match notify.recv(&mut buf) {
                Ok(len) if &buf[..len] == b"READY=1" => break,
                Ok(len) => panic!(
                    "unexpected notification {:?}\n{}",
                    String::from_utf8_lossy(&buf[..len]),
                    d.log_text()
                ),
                Err(_) => {}
            }
            if let Ok(Some(status)) = d.child.try_wait() {
                panic!(
                    "dockerd-net daemon exited ({status}) before it was ready:\n{}",
                    d.log_text()
                );
            }
            assert!(
                std::time::Instant::now() < deadline,
                "dockerd-net daemon not ready after 60 s:\n{}",
                d.log_text()
            );
        }
        let _ = std::fs::remove_file(&notify_path);
        let health = d.request("GET", "/v1/health", None);
        assert_eq!(
            health.status,
            200,
            "health: {}\n{}",
            health.body,
            d.log_text()
        );
        d
    }
}

impl Daemon {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Everything the daemon logged so far (stdout and stderr).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// One request on a new connection: `body` is sent as `application/json`.
    pub fn request(&self, method: &str, path: &str, body: Option<&str>) -> HttpReply {
        raw_request(&self.socket, method, path, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}\n{}", self.log_text()))
    }

    /// `POST path` with a JSON body.
    pub fn post(&self, path: &str, body: &str) -> HttpReply {
        self.request("POST", path, Some(body))
    }

    /// Sends a signal (`TERM`, `INT`, `KILL`, ...) with `kill(1)`.
    pub fn signal(&self, sig: &str) {
        let pid = self.pid().to_string();
        testns::run(&["kill", &format!("-{sig}"), &pid]);
    }

    /// SIGTERM, then waits (up to 30 s) for the exit; returns the exit status and the log.
    pub fn terminate(mut self) -> (ExitStatus, String) {
        self.signal("TERM");
        let status = self.wait(std::time::Duration::from_secs(30));
        (status, self.log_text())
    }

    /// SIGKILL (a crash), then reaps the process.
    pub fn kill(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.log_text()
    }

    fn wait(&mut self, timeout: std::time::Duration) -> ExitStatus {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            if std::time::Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "dockerd-net did not exit within {timeout:?}:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One HTTP/1.1 request over a Unix socket (`Connection: close`), read to the end.
pub fn raw_request(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> std::io::Result<HttpReply> {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(socket)?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(60)))?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: dockerd-net\r\nConnection: close\r\n");
    if let Some(b) = body {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            b.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(body.unwrap_or(""));
    s.write_all(req.as_bytes())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    parse_http_reply(&raw).ok_or_else(|| {
        std::io::Error::other(format!(
            "not an HTTP reply: {:?}",
            String::from_utf8_lossy(&raw)
        ))
    })
}

/// Parses a complete HTTP/1.1 answer (`Content-Length`, chunked, or read to close).
pub fn parse_http_reply(raw: &[u8]) -> Option<HttpReply> {
    let text = std::str::from_utf8(raw).ok()?;
    let (head, rest) = text.split_once("\r\n\r\n")?;
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let body = if chunked {
        let mut out = String::new();
        let mut rest = rest;
        loop {
            let (size, after) = rest.split_once("\r\n")?;
            let size = usize::from_str_radix(size.trim(), 16).ok()?;
            if size == 0 {
                break;
            }
            out.push_str(after.get(..size)?);
            rest = after.get(size + 2..)?;
        }
        out
    } else {
        match headers.iter().find(|(n, _)| n == "content-length") {
            Some((_, len)) => rest.get(..len.parse::<usize>().ok()?)?.to_owned(),
            None => rest.to_owned(),
        }
    };
    Some(HttpReply {
        status,
        headers,
        body,
    })
}

// ---------------------------------------------------------------------------------------------
// Daemon tests (issue 4): requests of any shape, snapshots of "what the daemon owns" (its
// state and the firewall), the per-container rules the kernel holds against the rules a
// state implies, and waiting for a crashed daemon's orphans.
// ---------------------------------------------------------------------------------------------

/// The bytes of one HTTP/1.1 request (`Connection: close`), with `body` as `application/json`.
pub fn http_request(method: &str, path: &str, body: Option<&[u8]>) -> Vec<u8> {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: dockerd-net\r\nConnection: close\r\n");
    if let Some(b) = body {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            b.len()
        ));
    }
    req.push_str("\r\n");
    let mut out = req.into_bytes();
    out.extend_from_slice(body.unwrap_or_default());
    out
}

/// Sends `request` (any bytes) on a new connection and reads the answer.
///
/// Unlike [`raw_request`], this keeps an answer the server sent before it stopped reading:
/// a server that refuses a huge body answers 413 and closes with the rest of the body unread,
/// and Linux then reports `ECONNRESET` to the writer (on a write still in progress, or on the
/// read after the answer: `unix_release_sock` sets the peer's error when unread data is
/// dropped). Those errors end the exchange; whatever answer arrived is parsed.
pub fn send_raw(socket: &Path, request: &[u8]) -> std::io::Result<HttpReply> {
    use std::io::{ErrorKind, Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(socket)?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(60)))?;
    let closed = |e: &std::io::Error| {
        matches!(
            e.kind(),
            ErrorKind::BrokenPipe | ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
        )
    };
    // The answer may come while the body is still being written: read it on another thread.
    let mut reader = s.try_clone()?;
    let read = std::thread::spawn(move || {
        let mut raw = Vec::new();
        let mut buf = [0u8; 16 * 1024];
        loop {
            match reader.read(&mut buf) {
                Ok(0) => return Ok(raw),
                Ok(n) => raw.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if closed(&e) => return Ok(raw),
                Err(e) => return Err(e),
            }
        }
    });
    match s.write_all(request) {
        Ok(()) => {}
        Err(e) if closed(&e) => {}
        Err(e) => return Err(e),
    }
    // No shutdown(Write): hyper (without half-close support) drops a connection whose
    // client half-closes before the answer is written.
    let raw = read
        .join()
        .map_err(|_| std::io::Error::other("reader thread panicked"))??;
    parse_http_reply(&raw).ok_or_else(|| {
        std::io::Error::other(format!(
            "not an HTTP reply: {:?}",
            String::from_utf8_lossy(&raw)
        ))
    })
}

impl Daemon {
    /// `GET /v1/state` as JSON; panics (with the log) unless it answers 200.
    pub fn state(&self) -> serde_json::Value {
        let r = self.request("GET", "/v1/state", None);
        assert_eq!(
            r.status,
            200,
            "GET /v1/state: {}\n{}",
            r.body,
            self.log_text()
        );
        r.json()
    }

    /// Sends raw bytes with [`send_raw`]; panics (with the log) if no answer arrives.
    pub fn send(&self, request: &[u8]) -> HttpReply {
        send_raw(&self.socket, request).unwrap_or_else(|e| {
            panic!(
                "{:?}...: {e}\n{}",
                String::from_utf8_lossy(&request[..request.len().min(80)]),
                self.log_text()
            )
        })
    }

    /// Everything the daemon owns and may change: its state and the firewall.
    pub fn snapshot(&self, tables: Tables) -> Snapshot {
        Snapshot {
            state: self.state(),
            tables: tables.filter_and_nat(),
        }
    }
}

/// The daemon's state (`GET /v1/state`) and `iptables-save` (filter and nat, normalised):
/// equal snapshots mean a request changed nothing.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub state: serde_json::Value,
    pub tables: String,
}

impl Instance {
    /// Starts `dockerd-net [args] daemon` like [`Instance::start_daemon`] but returns at once,
    /// without waiting for readiness: for crashing a daemon while it starts.
    pub fn spawn_daemon(&self, args: &[&str]) -> Daemon {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let log = self.dir.path().join(format!("daemon-spawned-{n}.log"));
        let host = self.host_url();
        let mut argv: Vec<&str> = vec!["-H", &host, "--log-level", "debug"];
        argv.extend_from_slice(args);
        argv.push("daemon");
        let out = std::fs::File::create(&log).unwrap_or_else(|e| panic!("create log: {e}"));
        let err = out.try_clone().expect("clone log");
        let mut cmd = self.command(&argv);
        cmd.env_remove("NOTIFY_SOCKET")
            .stdin(std::process::Stdio::null())
            .stdout(out)
            .stderr(err);
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        Daemon {
            child,
            socket: self.socket(),
            log,
        }
    }
}

/// The rule lines (`-A ...`) of normalised `iptables-save` text, each as
/// `-t <table> -A <chain> <spec>` (the shape of [`netcore::firewall::Rule`]'s `Display`).
pub fn rule_lines(save: &str) -> Vec<String> {
    let mut table = String::new();
    let mut out = Vec::new();
    for line in save.lines() {
        if let Some(t) = line.strip_prefix('*') {
            table = t.to_owned();
        } else if line.starts_with("-A ") {
            out.push(format!("-t {table} {line}"));
        }
    }
    out
}

/// The rule lines of `current` that `baseline` lacks, as a sorted multiset; panics if a
/// rule of `baseline` is missing from `current` (the bridge's own rules must stay).
pub fn added_rules(baseline: &str, current: &str) -> Vec<String> {
    let mut extra = rule_lines(current);
    for line in rule_lines(baseline) {
        let at = extra
            .iter()
            .position(|l| *l == line)
            .unwrap_or_else(|| panic!("baseline rule gone: {line}\n--- current\n{current}"));
        extra.remove(at);
    }
    extra.sort();
    extra
}

/// The per-container rules a `GET /v1/state` answer implies, as a sorted multiset of
/// [`rule_lines`] entries: each published port's rules (`port_rules`) and, with ICC off,
/// each link's (`link_rules`). `hairpin` is `--userland-proxy=false`.
pub fn expected_rules(state: &serde_json::Value, hairpin: bool, icc: bool) -> Vec<String> {
    use netcore::firewall::{link_rules, port_rules};
    use netcore::handlers::{Endpoint, LinkSpec};
    let bridge = state["bridge"]
        .as_str()
        .unwrap_or_else(|| panic!("no bridge in {state}"));
    let containers: std::collections::BTreeMap<String, Endpoint> =
        serde_json::from_value(state["containers"].clone())
            .unwrap_or_else(|e| panic!("containers of {state}: {e}"));
    let links: Vec<LinkSpec> = serde_json::from_value(state["links"].clone())
        .unwrap_or_else(|e| panic!("links of {state}: {e}"));
    let mut rules = Vec::new();
    for ep in containers.values() {
        for m in &ep.ports {
            rules.extend(port_rules(bridge, m, hairpin));
        }
    }
    if !icc {
        for l in &links {
            rules.extend(link_rules(bridge, l.parent, l.child, l.port, l.proto));
        }
    }
    let mut out: Vec<String> = rules.iter().map(ToString::to_string).collect();
    out.sort();
    out
}

/// `save` (normalised `iptables-save` text of one or more tables) with `lines` appended to
/// their chains, as `iptables -A` would put them: each `(table, "-A CHAIN spec")` goes after
/// the last rule of its chain, or, if the chain has none, where its rules would start (the
/// save lists rules chain by chain in the order the chains are declared).
pub fn with_rules(save: &str, lines: &[(&str, &str)]) -> String {
    let mut out: Vec<String> = save.lines().map(str::to_owned).collect();
    for (table, line) in lines {
        let chain = line
            .strip_prefix("-A ")
            .and_then(|l| l.split_whitespace().next())
            .unwrap_or_else(|| panic!("not an -A line: {line}"));
        let start = out
            .iter()
            .position(|l| *l == format!("*{table}"))
            .unwrap_or_else(|| panic!("no table {table} in\n{save}"));
        let end = start
            + out[start..]
                .iter()
                .position(|l| l == "COMMIT")
                .unwrap_or_else(|| panic!("table {table} has no COMMIT"));
        let chains: Vec<&str> = out[start..end]
            .iter()
            .filter_map(|l| l.strip_prefix(':'))
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        let rank = |c: &str| chains.iter().position(|x| *x == c);
        let want = rank(chain).unwrap_or_else(|| panic!("no chain {chain} in table {table}"));
        // After the last line that is a declaration or a rule of a chain ranked <= ours.
        let mut at = start + 1;
        for (i, l) in out[start..end].iter().enumerate() {
            let keep = if l.starts_with(':') {
                true
            } else if let Some(rest) = l.strip_prefix("-A ") {
                let c = rest.split_whitespace().next().unwrap_or_default();
                rank(c).is_some_and(|r| r <= want)
            } else {
                false
            };
            if keep {
                at = start + i + 1;
            }
        }
        out.insert(at, (*line).to_owned());
    }
    let mut text = out.join("\n");
    text.push('\n');
    text
}

/// The calling thread's network namespace, as `/proc/thread-self/ns/net` names it.
pub fn current_netns() -> String {
    std::fs::read_link("/proc/thread-self/ns/net")
        .unwrap_or_else(|e| panic!("readlink /proc/thread-self/ns/net: {e}"))
        .to_string_lossy()
        .into_owned()
}

/// The processes (other than this one) whose main thread is in network namespace `ns`.
pub fn processes_in_netns(ns: &str) -> Vec<(u32, String)> {
    let me = std::process::id();
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let link = std::fs::read_link(entry.path().join("ns/net"));
        if link.is_ok_and(|l| l.to_string_lossy() == ns) {
            let cmd = std::fs::read(entry.path().join("cmdline"))
                .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
                .unwrap_or_default();
            out.push((pid, cmd));
        }
    }
    out
}

/// Waits (up to 10 s) until no process but this one is in the calling thread's network
/// namespace: after a daemon is SIGKILLed, an `iptables-restore` it started may still be
/// running (orphaned, committing the batch it was given). systemd kills a crashed service's
/// whole cgroup before restarting it; a test restarting the daemon must wait likewise.
pub fn wait_netns_idle() {
    let ns = current_netns();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let left = processes_in_netns(&ns);
        if left.is_empty() {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "processes still in the test namespace after 10 s: {left:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

/// A small deterministic random generator (SplitMix64) for tests that need random moments:
/// seeded from the environment or the clock, and printed, so a failing run can be repeated.
#[derive(Debug, Clone)]
pub struct TestRng(u64);

impl TestRng {
    /// Seeded from `$var` if set (a decimal u64), else from the clock; prints the seed.
    pub fn from_env(var: &str) -> Self {
        let seed = std::env::var(var)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
            });
        eprintln!("random seed: {var}={seed}");
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A value in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

impl Daemon {
    /// Sends `sig` (`TERM`, `INT`) and waits (up to 30 s) for the exit; returns the exit
    /// status and the log.
    pub fn stop_with(mut self, sig: &str) -> (ExitStatus, String) {
        self.signal(sig);
        let status = self.wait(std::time::Duration::from_secs(30));
        (status, self.log_text())
    }
}
