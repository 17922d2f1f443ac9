//! `cargo xtask bench handlers`: the cost of the daemon's handlers, through its socket, as
//! the number of live containers grows.
//!
//! For each N (default 1, 100, 1000): a release `dockerd-net daemon` (default flags, so the
//! userland proxy runs too) in a fresh network namespace with its own data root, N
//! containers made first (an interface and a dynamic port each), then `--rounds` measured
//! rounds after `--warmup` unrecorded ones. A round is `allocate_interface` +
//! `allocate_port` (dynamic tcp) for a new container, timed as a pair and one by one, then
//! `release_interface` of it (timed apart), so N stays constant. Each call is the daemon's own
//! client ([`dockerd_net::client::Client`]): one connection per request, as the CLI makes.
//!
//! To show where time goes as N grows, each N also times, in the same namespace:
//! `GET /v1/health` (socket + HTTP + the worker queue, no I/O), and the host programs the
//! handlers run: `iptables-restore --noflush` of one published port's rules (nat + filter,
//! one input, as the daemon applies them) and of their removal, and `iptables-save` of each
//! table (its size is what the restore has to load).
//!
//! Figures go to stdout as a table and to `target/bench/handlers.json`. This is a
//! measurement program, not a test: it needs root (namespaces), and it prints what it saw.

use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use bench_init::build;
use clap::Parser;
use dockerd_net::api;
use dockerd_net::client::Client;
use serde::Serialize;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "bench-handlers",
    about = "Times allocate_interface + allocate_port through dockerd-net's socket for 1, 100 and 1000 live containers"
)]
struct Args {
    /// Live containers to measure with (comma-separated)
    #[arg(long, value_delimiter = ',', default_value = "1,100,1000")]
    containers: Vec<usize>,
    /// Measured rounds per size
    #[arg(long, default_value_t = 500)]
    rounds: usize,
    /// Unrecorded rounds per size first
    #[arg(long, default_value_t = 20)]
    warmup: usize,
    /// Runs of each host program (iptables-restore, iptables-save) per size
    #[arg(long, default_value_t = 50)]
    host_runs: usize,
    /// The daemon's --iptables-backend (auto, nft, nft-restore, legacy); the host programs
    /// timed beside it are the same flavour's (auto and nft drive nf_tables over netlink from
    /// the daemon; the programs are timed for comparison)
    #[arg(long, default_value = "auto", value_parser = ["auto", "nft", "nft-restore", "legacy"])]
    iptables_backend: String,
    /// Use the dockerd-net release binary built before instead of building it
    #[arg(long)]
    no_build: bool,
    /// Where to write the JSON summary [default: <workspace>/target/bench/handlers.json]
    #[arg(long)]
    json: Option<PathBuf>,
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-handlers: {e:#}");
            ExitCode::FAILURE
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Statistics

/// Order statistics of one measured quantity, in microseconds.
#[derive(Debug, Clone, Copy, Serialize)]
struct Summary {
    n: usize,
    mean_us: f64,
    median_us: f64,
    p90_us: f64,
    p99_us: f64,
    min_us: f64,
    max_us: f64,
}

impl Summary {
    fn of(samples: &[Duration]) -> Option<Summary> {
        let mut us: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e6).collect();
        us.sort_by(f64::total_cmp);
        let (&min_us, &max_us) = (us.first()?, us.last()?);
        Some(Summary {
            n: us.len(),
            mean_us: us.iter().sum::<f64>() / us.len() as f64,
            median_us: quantile(&us, 0.5),
            p90_us: quantile(&us, 0.9),
            p99_us: quantile(&us, 0.99),
            min_us,
            max_us,
        })
    }
}

/// The `p` quantile of sorted, non-empty values, interpolating between the nearest ranks.
fn quantile(sorted: &[f64], p: f64) -> f64 {
    let rank = p.clamp(0.0, 1.0) * sorted.len().saturating_sub(1) as f64;
    let (lo, hi) = (rank.floor() as usize, rank.ceil() as usize);
    match (sorted.get(lo), sorted.get(hi)) {
        (Some(&a), Some(&b)) => a + (b - a) * (rank - lo as f64),
        _ => f64::NAN,
    }
}

// ---------------------------------------------------------------------------------------------
// Building and running the daemon

/// A daemon started in the calling thread's network namespace; killed when dropped.
struct Daemon {
    child: Child,
    client: Client,
    dir: PathBuf,
}

impl Daemon {
    /// Starts `dockerd-net daemon` with a data root, resolv.conf and socket in `dir`, and
    /// waits for systemd's `READY=1` on a `NOTIFY_SOCKET` of ours.
    fn start(bin: &Path, dir: &Path, iptables_backend: &str) -> Result<Daemon> {
        if dir.exists() {
            std::fs::remove_dir_all(dir)?;
        }
        std::fs::create_dir_all(dir)?;
        // TEST-NET-1 (RFC 5737): collides with none of Docker's candidate subnets.
        std::fs::write(dir.join("resolv.conf"), "nameserver 192.0.2.53\n")?;
        let socket = dir.join("api.sock");
        let notify_path = dir.join("notify.sock");
        let notify = UnixDatagram::bind(&notify_path).context("binding the notify socket")?;
        notify.set_read_timeout(Some(Duration::from_millis(100)))?;
        let log = std::fs::File::create(dir.join("daemon.log"))?;
        let child = Command::new(bin)
            .arg("--data-root")
            .arg(dir.join("data"))
            .arg("--resolv-conf")
            .arg(dir.join("resolv.conf"))
            .arg("-H")
            .arg(format!("unix://{}", socket.display()))
            .args(["--iptables-backend", iptables_backend])
            .arg("daemon")
            .env("NOTIFY_SOCKET", &notify_path)
            .env("NO_COLOR", "1")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut d = Daemon {
            child,
            client: Client::new(&socket),
            dir: dir.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut buf = [0u8; 64];
        loop {
            if let Ok(n) = notify.recv(&mut buf)
                && &buf[..n] == b"READY=1"
            {
                return Ok(d);
            }
            if let Some(status) = d.child.try_wait()? {
                bail!(
                    "the daemon exited ({status}) before it was ready:\n{}",
                    d.log()
                );
            }
            if Instant::now() > deadline {
                bail!("the daemon was not ready within 60 s:\n{}", d.log());
            }
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default()
    }

    /// SIGTERM and wait.
    fn stop(mut self) -> Result<()> {
        let pid = self.child.id().to_string();
        let status = Command::new("kill").args(["-TERM", &pid]).status()?;
        ensure!(status.success(), "kill -TERM {pid} failed");
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                bail!("the daemon did not stop within 30 s");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
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

// ---------------------------------------------------------------------------------------------
// One size

/// Everything measured for one N.
#[derive(Debug, Serialize)]
struct SizeReport {
    containers: usize,
    rounds: usize,
    /// Rounds (allocate_interface + allocate_port) per second of time spent in them.
    rounds_per_s: f64,
    /// The pair, client-side, connection to last byte of both answers.
    pair: Summary,
    allocate_interface: Summary,
    allocate_port: Summary,
    /// Untimed in the pair: keeps N constant.
    release_interface: Summary,
    /// No I/O in the daemon: the socket, HTTP and the worker queue.
    health: Summary,
    /// `iptables-restore --noflush` adding one port's three rules (nat + filter, one input).
    restore_add: Summary,
    /// The same rules removed (`-D`).
    restore_delete: Summary,
    save_nat: Summary,
    save_filter: Summary,
    /// Rule lines in nat and filter while measuring.
    rules: usize,
    /// Time to create the N containers (2N requests).
    populate_s: f64,
}

fn us<T>(f: impl FnOnce() -> Result<T>) -> Result<(T, Duration)> {
    let t = Instant::now();
    let v = f()?;
    Ok((v, t.elapsed()))
}

/// Runs a program with `stdin`, checking it succeeds; returns its stdout.
fn run_with(program: &str, args: &[&str], stdin: &str) -> Result<String> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("spawning {program}"))?;
    child
        .stdin
        .take()
        .ok_or_else(|| anyhow!("no stdin"))?
        .write_all(stdin.as_bytes())?;
    let out = child.wait_with_output()?;
    ensure!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn measure_size(bin: &Path, dir: &Path, n: usize, args: &Args) -> Result<SizeReport> {
    let d = Daemon::start(bin, dir, &args.iptables_backend)?;
    let (restore, save) = programs(&args.iptables_backend);
    let c = &d.client;
    let err = |e: dockerd_net::client::ClientError| anyhow!("{e}\n{}", d.log());

    let t = Instant::now();
    for i in 0..n {
        let id = format!("live{i}");
        c.allocate_interface(&api::AllocateInterface {
            id: id.clone(),
            requested_ip: None,
            requested_mac: None,
        })
        .map_err(err)?;
        c.allocate_port(&api::AllocatePort {
            id,
            host_ip: None,
            host_port: None,
            container_port: 80,
            proto: None,
        })
        .map_err(err)?;
    }
    let populate_s = t.elapsed().as_secs_f64();
    eprintln!("bench-handlers: N={n}: {n} containers made in {populate_s:.1} s");

    let (mut pair, mut ai, mut ap, mut ri, mut health) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 0..args.warmup + args.rounds {
        let id = format!("bench{round}");
        let (_, t_ai) = us(|| {
            c.allocate_interface(&api::AllocateInterface {
                id: id.clone(),
                requested_ip: None,
                requested_mac: None,
            })
            .map_err(err)
        })?;
        let (_, t_ap) = us(|| {
            c.allocate_port(&api::AllocatePort {
                id: id.clone(),
                host_ip: None,
                host_port: None,
                container_port: 80,
                proto: None,
            })
            .map_err(err)
        })?;
        let (_, t_ri) = us(|| {
            c.release_interface(&api::ReleaseInterface { id: id.clone() })
                .map_err(err)
        })?;
        let (_, t_h) = us(|| c.health().map_err(err))?;
        if round >= args.warmup {
            pair.push(t_ai + t_ap);
            ai.push(t_ai);
            ap.push(t_ap);
            ri.push(t_ri);
            health.push(t_h);
        }
    }
    let state = c.state().map_err(err)?;
    ensure!(
        state.containers.len() == n,
        "N drifted: {} containers at the end",
        state.containers.len()
    );

    // The host programs, at this table size. The rules are a port's, for an address and
    // port no container has.
    let add = "*nat\n\
        -A DOCKER ! -i docker0 -p tcp -m tcp --dport 40000 -j DNAT --to-destination 172.17.250.1:80\n\
        -A POSTROUTING -s 172.17.250.1/32 -d 172.17.250.1/32 -p tcp -m tcp --dport 80 -j MASQUERADE\n\
        COMMIT\n*filter\n\
        -A DOCKER -d 172.17.250.1/32 ! -i docker0 -o docker0 -p tcp -m tcp --dport 80 -j ACCEPT\n\
        COMMIT\n";
    let delete = add.replace("-A ", "-D ");
    let (mut r_add, mut r_del, mut s_nat, mut s_filter) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut rules = 0;
    for _ in 0..args.host_runs {
        r_add.push(us(|| run_with(restore, &["--noflush", "--wait"], add))?.1);
        r_del.push(us(|| run_with(restore, &["--noflush", "--wait"], &delete))?.1);
        let (nat, t_nat) = us(|| run_with(save, &["-t", "nat"], ""))?;
        let (filter, t_filter) = us(|| run_with(save, &["-t", "filter"], ""))?;
        s_nat.push(t_nat);
        s_filter.push(t_filter);
        rules = nat
            .lines()
            .chain(filter.lines())
            .filter(|l| l.starts_with("-A "))
            .count();
    }
    d.stop()?;

    let summary = |v: &[Duration], what: &str| {
        Summary::of(v).ok_or_else(|| anyhow!("no samples of {what} (--rounds/--host-runs 0?)"))
    };
    let pair = summary(&pair, "the pair")?;
    Ok(SizeReport {
        containers: n,
        rounds: args.rounds,
        rounds_per_s: 1e6 / pair.mean_us,
        pair,
        allocate_interface: summary(&ai, "allocate_interface")?,
        allocate_port: summary(&ap, "allocate_port")?,
        release_interface: summary(&ri, "release_interface")?,
        health: summary(&health, "health")?,
        restore_add: summary(&r_add, "iptables-restore")?,
        restore_delete: summary(&r_del, "iptables-restore")?,
        save_nat: summary(&s_nat, "iptables-save")?,
        save_filter: summary(&s_filter, "iptables-save")?,
        rules,
        populate_s,
    })
}

/// The `iptables-restore` and `iptables-save` of a `--iptables-backend` value.
fn programs(backend: &str) -> (&'static str, &'static str) {
    match backend {
        "nft" | "nft-restore" => ("iptables-nft-restore", "iptables-nft-save"),
        "legacy" => ("iptables-legacy-restore", "iptables-legacy-save"),
        _ => ("iptables-restore", "iptables-save"),
    }
}

/// Runs `f` on a new thread that has just moved into a fresh network namespace (loopback
/// up), which dies when `f` returns.
fn in_fresh_netns<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    bench_init::netns::in_fresh_netns("bench-netns", true, f).map(|(v, _ns)| v)
}

// ---------------------------------------------------------------------------------------------
// The report

#[derive(Debug, Serialize)]
struct Report {
    iptables_backend: String,
    rounds: usize,
    warmup: usize,
    kernel: String,
    iptables: String,
    cpus: usize,
    load_before: String,
    load_after: String,
    sizes: Vec<SizeReport>,
    /// Median of the pair at the largest N over the smallest N's.
    median_ratio_largest_vs_smallest: f64,
    /// The same for allocate_interface (no iptables) and allocate_port (one iptables-restore).
    median_ratio_allocate_interface: f64,
    median_ratio_allocate_port: f64,
    /// ... and for the bare iptables-restore of one port's rules.
    median_ratio_restore_add: f64,
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|t| t.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn ms(us: f64) -> String {
    format!("{:.2}", us / 1000.0)
}

fn print_table(r: &Report) {
    println!(
        "bench handlers: {} rounds per size (+{} warm-up), release build, default flags (userland proxy on), \
         --iptables-backend {}",
        r.rounds, r.warmup, r.iptables_backend
    );
    println!(
        "kernel {}, {}, {} CPUs, load average {} before / {} after",
        r.kernel, r.iptables, r.cpus, r.load_before, r.load_after
    );
    println!("\nallocate_interface + allocate_port, through the socket (ms)");
    println!(
        "{:>6} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "N", "rounds/s", "median", "p90", "p99", "min", "max"
    );
    for s in &r.sizes {
        println!(
            "{:>6} {:>9.1} {:>8} {:>8} {:>8} {:>8} {:>8}",
            s.containers,
            s.rounds_per_s,
            ms(s.pair.median_us),
            ms(s.pair.p90_us),
            ms(s.pair.p99_us),
            ms(s.pair.min_us),
            ms(s.pair.max_us)
        );
    }
    println!("\nbreakdown, medians (p99) in ms");
    println!(
        "{:>6} {:>15} {:>15} {:>15} {:>13} {:>15} {:>15} {:>11} {:>11} {:>6}",
        "N",
        "alloc_iface",
        "alloc_port",
        "release_iface",
        "health",
        "restore add",
        "restore del",
        "save nat",
        "save filt",
        "rules"
    );
    let cell = |s: &Summary| format!("{} ({})", ms(s.median_us), ms(s.p99_us));
    for s in &r.sizes {
        println!(
            "{:>6} {:>15} {:>15} {:>15} {:>13} {:>15} {:>15} {:>11} {:>11} {:>6}",
            s.containers,
            cell(&s.allocate_interface),
            cell(&s.allocate_port),
            cell(&s.release_interface),
            cell(&s.health),
            cell(&s.restore_add),
            cell(&s.restore_delete),
            ms(s.save_nat.median_us),
            ms(s.save_filter.median_us),
            s.rules
        );
    }
    if let (Some(a), Some(b)) = (r.sizes.first(), r.sizes.last()) {
        println!(
            "\nmedian ratio N={} vs N={}: pair {:.2}x, allocate_interface {:.2}x, allocate_port {:.2}x, \
             bare iptables-restore (add) {:.2}x",
            b.containers,
            a.containers,
            r.median_ratio_largest_vs_smallest,
            r.median_ratio_allocate_interface,
            r.median_ratio_allocate_port,
            r.median_ratio_restore_add,
        );
    }
}

fn command_output(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

fn run(args: Args) -> Result<()> {
    if !testns::is_root() {
        bail!("needs root: each size runs in a network namespace of its own");
    }
    ensure!(!args.containers.is_empty(), "--containers is empty");
    let root = build::workspace_root();
    let bin = build::binary(&root, build::Backend::Netlink, args.no_build)?;
    let scratch = build::cargo_target_dir(&root).join("bench/handlers-scratch");
    let load_before = loadavg();
    let mut sizes = Vec::new();
    for &n in &args.containers {
        let dir = scratch.join(format!("n{n}"));
        let (bin, a) = (bin.clone(), args.clone());
        let report = in_fresh_netns(move || measure_size(&bin, &dir, n, &a))
            .with_context(|| format!("N={n}"))?;
        eprintln!(
            "bench-handlers: N={n}: pair median {} ms, p99 {} ms",
            ms(report.pair.median_us),
            ms(report.pair.p99_us)
        );
        sizes.push(report);
    }
    let _ = std::fs::remove_dir_all(&scratch);
    let ratio = |f: fn(&SizeReport) -> f64| match (sizes.first(), sizes.last()) {
        (Some(a), Some(b)) => f(b) / f(a),
        _ => f64::NAN,
    };
    let report = Report {
        iptables_backend: args.iptables_backend.clone(),
        rounds: args.rounds,
        warmup: args.warmup,
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_owned(),
        iptables: command_output("iptables", &["--version"]),
        cpus: std::thread::available_parallelism().map_or(0, usize::from),
        load_before,
        load_after: loadavg(),
        median_ratio_largest_vs_smallest: ratio(|s| s.pair.median_us),
        median_ratio_allocate_interface: ratio(|s| s.allocate_interface.median_us),
        median_ratio_allocate_port: ratio(|s| s.allocate_port.median_us),
        median_ratio_restore_add: ratio(|s| s.restore_add.median_us),
        sizes,
    };
    print_table(&report);
    let json_path = args
        .json
        .unwrap_or_else(|| build::cargo_target_dir(&root).join("bench/handlers.json"));
    if let Some(dir) = json_path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&json_path, serde_json::to_string_pretty(&report)? + "\n")
        .with_context(|| format!("writing {}", json_path.display()))?;
    println!("\nJSON summary: {}", json_path.display());
    Ok(())
}
