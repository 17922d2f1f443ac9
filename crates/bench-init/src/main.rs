//! `cargo xtask bench init`: Docker's whole bridge-network start-up (docker0, its address,
//! the iptables rules, `ip_forward`, the FORWARD policy), each run in a fresh network
//! namespace, for the netlink and the ioctl link backend, with the firewall backend
//! `dockerd-net` uses by default (`--firewall` picks another: `nft-restore` is the
//! iptables-nft programs, one `iptables-restore` for both tables and `iptables -P`).
//!
//! Three measurements, each `--runs` times per backend (backends alternate run by run, so a
//! drift of the machine affects both alike), after `--warmup` unrecorded runs:
//! 1. **in-process**: `HostFacts::gather` + `init::plan` + `init::apply`, on a thread that has
//!    just unshared its network namespace (namespace creation untimed; the cost of opening
//!    the backends is reported apart);
//! 2. **breakdown**: the same init with gather's reads and the plan's steps timed one by one;
//! 3. **whole process**: `dockerd-net init` (release build), spawn to exit, from a thread in
//!    a fresh namespace, which the child inherits.
//!
//! 1 and 3 run in two scenarios: the fresh namespace as is (forwarding off, so init also
//! turns it on and sets FORWARD to DROP: the full init, the headline figure) and with
//! `ip_forward` already 1 (init then leaves forwarding and the policy alone).
//!
//! Each run's namespace is kept alive until the end of its batch (see
//! [`measure::in_fresh_netns`]), so the kernel's teardown of one run's namespace does not
//! land in the next run; `--no-keep-netns` shows the difference. For context, one RCU grace
//! period is timed too: it is what `iptables -P` waits for on nf_tables when its process
//! closes its socket (the native backend keeps its socket open).
//!
//! Optionally (`--docker-runs`, default 5, when Debian's dockerd is installed) Docker 20.10's
//! own network start-up, for comparison; see [`docker`].
//!
//! The figures go to stdout as a table and to `target/bench/init.json`. This is a
//! measurement program, not a test: it needs root (namespaces), and it prints what it saw.

mod docker;
mod measure;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use netcore::config::Config;
use serde::Serialize;

use crate::measure::{Backend, Inputs, Scenario};
use bench_init::build;
use bench_init::stats::{Series, Summary};

/// The target for the whole init, in process.
const TARGET_US: f64 = 5_000.0;

/// The whole-process metric.
const WHOLE: &str = "dockerd-net init: spawn to exit";

/// Namespaces kept alive at most before a pause to release them (each holds a descriptor).
const KEEP_AT_MOST: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    InProcess,
    Breakdown,
    WholeProcess,
}

impl Kind {
    fn scenarios(self) -> &'static [Scenario] {
        match self {
            Kind::Breakdown => &[Scenario::Fresh],
            Kind::InProcess | Kind::WholeProcess => &[Scenario::Fresh, Scenario::ForwardingOn],
        }
    }
}

/// Lets the kept namespaces go and waits until the kernel has torn them down.
fn release_and_settle(graveyard: &mut Vec<measure::NetnsHandle>) {
    if graveyard.is_empty() {
        return;
    }
    graveyard.clear();
    bench_init::netns::wait_for_teardown(Duration::from_secs(30));
}

/// The 1, 5 and 15 minute load averages: other work on the machine skews the figures.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|t| t.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

#[derive(Debug, Parser)]
#[command(
    name = "bench-init",
    about = "Times dockerd-net's whole init in fresh network namespaces, per link backend"
)]
struct Args {
    /// Measured runs per backend and measurement
    #[arg(long, default_value_t = 200)]
    runs: usize,
    /// Unrecorded runs per backend and measurement first (page cache, lazy kernel set-up)
    #[arg(long, default_value_t = 5)]
    warmup: usize,
    /// Use the dockerd-net release binaries built before instead of building them
    #[arg(long)]
    no_build: bool,
    /// Runs of Docker's own dockerd for comparison (0: none; skipped when not installed)
    #[arg(long, default_value_t = 5)]
    docker_runs: usize,
    /// Let each run's namespace die as soon as its run ends (the kernel's teardown then
    /// overlaps the next run; for comparison only)
    #[arg(long)]
    no_keep_netns: bool,
    /// The firewall backend, as dockerd-net's --iptables-backend: auto (the binary's default:
    /// nf_tables netlink on iptables-nft hosts), nft, nft-restore (the iptables-nft programs,
    /// as Docker), legacy
    #[arg(long, default_value = "auto", value_parser = ["auto", "nft", "nft-restore", "legacy"])]
    firewall: String,
    /// Where to write the JSON summary [default: <workspace>/target/bench/init.json]
    #[arg(long)]
    json: Option<PathBuf>,
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-init: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[derive(Debug, Serialize)]
struct Metric {
    name: String,
    #[serde(flatten)]
    summary: Summary,
}

fn metrics(series: &Series) -> Vec<Metric> {
    series
        .summaries()
        .into_iter()
        .map(|(name, summary)| Metric { name, summary })
        .collect()
}

#[derive(Debug, Serialize)]
struct BackendReport {
    backend: &'static str,
    binary: String,
    /// Median of gather + plan + apply, in process.
    in_process_median_us: f64,
    /// Median of `dockerd-net init`, spawn to exit.
    whole_process_median_us: f64,
    meets_target: bool,
    /// The same two medians when `ip_forward` was already 1 (no forwarding/policy steps).
    in_process_median_forwarding_on_us: f64,
    whole_process_median_forwarding_on_us: f64,
    in_process: Vec<Metric>,
    breakdown: Vec<Metric>,
    whole_process: Vec<Metric>,
}

#[derive(Debug, Serialize)]
struct DockerReport {
    version: String,
    network_start: Summary,
    spawn_to_api: Summary,
}

#[derive(Debug, Serialize)]
struct Report {
    runs: usize,
    warmup: usize,
    target_in_process_us: f64,
    kernel: String,
    iptables: String,
    cpus: usize,
    /// Namespaces kept alive during a batch (see `measure::in_fresh_netns`).
    keep_netns: bool,
    load_before: String,
    load_after: String,
    /// One RCU grace period (`membarrier(MEMBARRIER_CMD_GLOBAL)`), for context.
    rcu_grace_period: Option<Summary>,
    backends: Vec<BackendReport>,
    docker: Option<DockerReport>,
}

struct PerBackend {
    backend: Backend,
    binary: PathBuf,
    in_process: Series,
    breakdown: Series,
    whole: Series,
}

fn run(args: Args) -> Result<()> {
    if !testns::is_root() {
        bail!("needs root: every run creates a network namespace");
    }
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let root = build::workspace_root();
    let mut per: Vec<PerBackend> = Vec::new();
    for backend in Backend::ALL {
        let binary = build::binary(&root, backend, args.no_build)?;
        per.push(PerBackend {
            backend,
            binary,
            in_process: Series::default(),
            breakdown: Series::default(),
            whole: Series::default(),
        });
    }

    let inputs = Inputs {
        config: Config::default(),
        // As dockerd-net: an unreadable resolv.conf means no nameservers.
        resolv_conf: std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
        firewall: args.firewall.clone(),
    };
    let scratch = root.join("target/bench/scratch");
    let total = args.warmup + args.runs;
    let load_before = loadavg();

    eprintln!(
        "bench-init: {} warm-up + {} measured runs per backend, scenario and measurement",
        args.warmup, args.runs
    );
    let started = Instant::now();
    let mut graveyard: Vec<measure::NetnsHandle> = Vec::new();
    for kind in [Kind::InProcess, Kind::Breakdown, Kind::WholeProcess] {
        for i in 0..total {
            let record = i >= args.warmup;
            let verify = i == 0;
            // Alternate which backend goes first, so a drift of the machine hits both alike.
            let order: [usize; 2] = if i % 2 == 0 { [0, 1] } else { [1, 0] };
            for b in order {
                for &scenario in kind.scenarios() {
                    let p = &mut per[b];
                    let what = || format!("{kind:?} run {i} ({}, {scenario:?})", p.backend.name());
                    let netns = match kind {
                        Kind::InProcess => {
                            let (s, ns) = measure::in_process(p.backend, scenario, &inputs, i)
                                .with_context(what)?;
                            if record {
                                p.in_process.extend(&s);
                            }
                            ns
                        }
                        Kind::Breakdown => {
                            let (s, ns) =
                                measure::breakdown(p.backend, &inputs, i).with_context(what)?;
                            if record {
                                p.breakdown.extend(&s);
                            }
                            ns
                        }
                        Kind::WholeProcess => {
                            let dir = scratch.join(format!("{}-{i}", p.backend.name()));
                            let (d, ns) = measure::whole_process(
                                &p.binary,
                                scenario,
                                dir,
                                verify,
                                &args.firewall,
                            )
                            .with_context(what)?;
                            if record {
                                p.whole.push(&format!("{WHOLE}{}", scenario.suffix()), d);
                            }
                            ns
                        }
                    };
                    if args.no_keep_netns {
                        drop(netns);
                    } else {
                        graveyard.push(netns);
                    }
                }
            }
            if graveyard.len() >= KEEP_AT_MOST {
                release_and_settle(&mut graveyard);
            }
        }
        release_and_settle(&mut graveyard);
        eprintln!(
            "bench-init: {kind:?} done ({:.1} s so far)",
            started.elapsed().as_secs_f64()
        );
    }
    let _ = std::fs::remove_dir_all(&scratch);
    let load_after = loadavg();
    let rcu: Vec<Duration> = (0..args.runs.min(50))
        .map_while(|_| measure::rcu_grace_period())
        .collect();

    let docker = match (args.docker_runs, docker::find()) {
        (0, _) => None,
        (_, None) => {
            eprintln!(
                "bench-init: no dockerd to compare with (or no /etc/docker to cover); skipped"
            );
            None
        }
        (n, Some(dockerd)) => Some(docker_report(&dockerd, n, &root)?),
    };

    let report = Report {
        runs: args.runs,
        warmup: args.warmup,
        target_in_process_us: TARGET_US,
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_owned(),
        iptables: command_output("iptables", &["--version"]),
        cpus: std::thread::available_parallelism().map_or(0, usize::from),
        keep_netns: !args.no_keep_netns,
        load_before,
        load_after,
        rcu_grace_period: Summary::of(&rcu),
        backends: per.iter().map(backend_report).collect(),
        docker,
    };
    print_table(&report);

    let json_path = args
        .json
        .unwrap_or_else(|| root.join("target/bench/init.json"));
    if let Some(dir) = json_path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&json_path, serde_json::to_string_pretty(&report)? + "\n")
        .with_context(|| format!("writing {}", json_path.display()))?;
    println!("\nJSON summary: {}", json_path.display());
    Ok(())
}

fn docker_report(
    dockerd: &std::path::Path,
    runs: usize,
    root: &std::path::Path,
) -> Result<DockerReport> {
    let version = docker::version(dockerd);
    eprintln!("bench-init: {runs} start(s) of {version} for comparison");
    let (mut network, mut to_api) = (Vec::new(), Vec::new());
    for i in 0..runs {
        let dir = root.join(format!("target/bench/dockerd-{i}"));
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        let s = docker::run_once(dockerd, dir).with_context(|| format!("dockerd run {i}"))?;
        network.push(s.network);
        to_api.push(s.to_api);
    }
    let summary = |v: &[Duration]| Summary::of(v).context("no dockerd runs");
    Ok(DockerReport {
        version,
        network_start: summary(&network)?,
        spawn_to_api: summary(&to_api)?,
    })
}

fn command_output(cmd: &str, args: &[&str]) -> String {
    std::process::Command::new(cmd)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

fn median_of(metrics: &[Metric], name: &str) -> f64 {
    metrics
        .iter()
        .find(|m| m.name == name)
        .map_or(f64::NAN, |m| m.summary.median_us)
}

fn backend_report(p: &PerBackend) -> BackendReport {
    let in_process = metrics(&p.in_process);
    let whole_process = metrics(&p.whole);
    let in_process_median_us = median_of(&in_process, measure::TOTAL);
    BackendReport {
        backend: p.backend.name(),
        binary: p.binary.display().to_string(),
        in_process_median_us,
        whole_process_median_us: median_of(&whole_process, WHOLE),
        meets_target: in_process_median_us < TARGET_US,
        in_process_median_forwarding_on_us: median_of(
            &in_process,
            &format!("{}{}", measure::TOTAL, Scenario::ForwardingOn.suffix()),
        ),
        whole_process_median_forwarding_on_us: median_of(
            &whole_process,
            &format!("{WHOLE}{}", Scenario::ForwardingOn.suffix()),
        ),
        in_process,
        breakdown: metrics(&p.breakdown),
        whole_process,
    }
}

fn ms(us: f64) -> String {
    format!("{:.3}", us / 1000.0)
}

/// Width of the metric column, enough for the longest metric name.
const NAME_WIDTH: usize = 48;

fn row(name: &str, backend: &str, s: &Summary) {
    println!(
        "{name:<NAME_WIDTH$} {backend:<8} {:>9} {:>9} {:>9} {:>9} {:>9}",
        ms(s.median_us),
        ms(s.p10_us),
        ms(s.p90_us),
        ms(s.min_us),
        ms(s.max_us)
    );
}

fn section(title: &str, report: &Report, pick: impl Fn(&BackendReport) -> &Vec<Metric>) {
    println!("\n{title}");
    println!(
        "{:<NAME_WIDTH$} {:<8} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "metric (ms)", "backend", "median", "p10", "p90", "min", "max"
    );
    // Metric by metric, the backends side by side.
    let Some(first) = report.backends.first() else {
        return;
    };
    for m in pick(first) {
        for b in &report.backends {
            if let Some(x) = pick(b).iter().find(|x| x.name == m.name) {
                row(&x.name, b.backend, &x.summary);
            }
        }
    }
}

fn print_table(report: &Report) {
    println!(
        "bench init: {} runs per backend (+{} warm-up), fresh network namespace per run",
        report.runs, report.warmup
    );
    println!(
        "kernel {}, {}, {} CPUs, load average {} before / {} after",
        report.kernel, report.iptables, report.cpus, report.load_before, report.load_after
    );
    if !report.keep_netns {
        println!("namespaces freed after each run: their teardown overlaps the next run");
    }
    section(
        "1. in process (thread just unshared; namespace creation untimed)",
        report,
        |b| &b.in_process,
    );
    section(
        "2. breakdown (gather's reads and the plan's steps, one at a time)",
        report,
        |b| &b.breakdown,
    );
    section(
        "3. whole process (dockerd-net init, release build, spawn to exit)",
        report,
        |b| &b.whole_process,
    );
    if let Some(g) = &report.rcu_grace_period {
        println!("\ncontext: the kernel");
        row("RCU grace period (membarrier)", "kernel", g);
    }
    if let Some(d) = &report.docker {
        println!(
            "\n4. for comparison: {} ({} starts)",
            d.version, d.network_start.n
        );
        row("dockerd network start-up", "docker", &d.network_start);
        row("dockerd spawn to API listen", "docker", &d.spawn_to_api);
    }

    println!(
        "\nsummary (target: whole init under {} in process)",
        ms_label(TARGET_US)
    );
    for b in &report.backends {
        println!(
            "  {:<8} in process {} ms median ({}), whole process {} ms median",
            b.backend,
            ms(b.in_process_median_us),
            if b.meets_target {
                "meets target"
            } else {
                "MISSES target"
            },
            ms(b.whole_process_median_us),
        );
        println!(
            "           with ip_forward already 1: in process {} ms, whole process {} ms",
            ms(b.in_process_median_forwarding_on_us),
            ms(b.whole_process_median_forwarding_on_us),
        );
        // What dominates: the breakdown's individual parts, by median, largest first.
        let mut parts: Vec<&Metric> = b.breakdown.iter().filter(|m| is_leaf(&m.name)).collect();
        parts.sort_by(|x, y| y.summary.median_us.total_cmp(&x.summary.median_us));
        let sum: f64 = parts.iter().map(|m| m.summary.median_us).sum();
        let top: Vec<String> = parts
            .iter()
            .take(4)
            .map(|m| {
                format!(
                    "{} {} ms ({:.0}%)",
                    m.name,
                    ms(m.summary.median_us),
                    100.0 * m.summary.median_us / sum
                )
            })
            .collect();
        println!("           largest parts: {}", top.join(", "));
    }
}

fn ms_label(us: f64) -> String {
    format!("{} ms", us / 1000.0)
}

/// The breakdown's individual parts, not its sums.
fn is_leaf(name: &str) -> bool {
    !(name.starts_with("bridge (")
        || name.starts_with("gather (")
        || name.starts_with("apply (")
        || name.starts_with("total"))
}
