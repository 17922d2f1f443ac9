//! `cargo xtask bench attach`: what plugging containers into the bridge costs, per container,
//! as the number of containers in one namespace grows (issue 5).
//!
//! For N = 1, 10, 100 and 1000 containers in one host namespace, each tool sets up every
//! container (a fresh network namespace) with one published port, then tears every one down;
//! each container's setup and teardown is timed on its own, and the per-container median is
//! reported with the growth from N = 10 to N = 1000 (flat growth: the cost of one container
//! does not depend on how many are already there).
//!
//! Teardown is reported twice. **Detach latency** is what a client waits for one detach
//! (dockerd-net answers once the container is unplugged and released; its reaper deletes the
//! veth pairs in the background, in batches). **Amortized teardown** is the wall time from
//! the first teardown of a round until its last veth is gone, divided by N: what tearing a
//! container down costs in all, background deletion included. For the peers, which delete
//! synchronously, the two describe the same work.
//!
//! - **dockerd-net** (release build): the daemon in the round's fresh namespace; setup is
//!   `POST /v1/attach` + `POST /v1/allocate_port`, teardown `POST /v1/detach` (see [`ours`]).
//! - **netavark** and **CNI** bridge + host-local + portmap, as their users run them, in
//!   fresh namespaces too (see [`peers`]).
//!
//! Small N are repeated in fresh namespaces until each tool has at least `--min-samples`
//! samples. Rounds alternate between the tools, so a drift of the machine affects all alike;
//! between rounds the kernel is given time to destroy the finished rounds' namespaces
//! ([`ns::Graveyard`]). Every round checks its work (one veth per container after setup,
//! none after teardown; for dockerd-net, every container and port in its state and none left).
//!
//! Output: a table on stdout and `target/bench/attach.json`. This is a measurement program,
//! not a test: it needs root (namespaces), and prints what it saw.

mod ns;
mod ours;
mod peers;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use clap::Parser;
use serde::Serialize;

use crate::ns::{Graveyard, Netns};
use bench_init::build;
use bench_init::stats::{Summary, ratio};

/// The aim: at least this many times faster per container than each peer.
const TARGET_RATIO: f64 = 10.0;

/// Growth from N = 10 to N = 1000 still called flat.
const FLAT: f64 = 1.25;

/// Namespaces kept alive at most before the benchmark pauses to let the kernel destroy them.
const KEEP_AT_MOST: usize = 256;

/// One round's timings, and its container namespaces (kept alive until the graveyard
/// settles, see [`Graveyard`]).
#[derive(Debug)]
pub struct Round {
    pub setup: Vec<Duration>,
    pub teardown: Vec<Duration>,
    /// From the first teardown until the last veth of the round is gone.
    pub teardown_total: Duration,
    pub containers: Vec<Netns>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Tool {
    #[serde(rename = "dockerd-net")]
    Ours,
    Netavark,
    Cni,
}

impl Tool {
    fn name(self) -> &'static str {
        match self {
            Tool::Ours => "dockerd-net",
            Tool::Netavark => "netavark",
            Tool::Cni => "CNI",
        }
    }
}

#[derive(Debug, Parser)]
#[command(
    name = "bench-attach",
    about = "Times attach + one published port, then detach, per container, for growing \
             container counts; against netavark and the CNI plugins"
)]
struct Args {
    /// Container counts to measure
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 10, 100, 1000])]
    counts: Vec<usize>,
    /// Measure no count above this (for every tool)
    #[arg(long, default_value_t = 1000)]
    max: usize,
    /// Measure the peers on no count above this (each takes ~0.1 s a container)
    #[arg(long)]
    peers_max: Option<usize>,
    /// Repeat small counts in fresh namespaces until each tool has this many samples
    #[arg(long, default_value_t = 30)]
    min_samples: usize,
    /// Measure dockerd-net only
    #[arg(long)]
    no_peers: bool,
    /// Use the dockerd-net release binary built before instead of building it
    #[arg(long)]
    no_build: bool,
    /// A global flag for dockerd-net, e.g. --daemon-arg=--userland-proxy=false (repeatable)
    #[arg(long = "daemon-arg", value_name = "FLAG", allow_hyphen_values = true)]
    daemon_args: Vec<String>,
    /// netavark [default: /usr/lib/podman/netavark, else netavark on PATH]
    #[arg(long)]
    netavark: Option<PathBuf>,
    /// Where the CNI plugins are
    #[arg(long, default_value = "/usr/lib/cni")]
    cni_path: PathBuf,
    /// Where to write the JSON summary [default: <workspace>/target/bench/attach.json]
    #[arg(long)]
    json: Option<PathBuf>,
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-attach: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Raises this process's open-file limit to its hard limit (inherited by the daemon, which
/// holds a listening socket per published port with the userland proxy): a service runs with
/// the limit its unit gives it (Docker's unit: `LimitNOFILE=infinity`), not a login shell's 1024.
fn raise_nofile_limit() -> Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit struct through a pointer to a live local.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    ensure!(rc == 0, "getrlimit: {}", std::io::Error::last_os_error());
    lim.rlim_cur = lim.rlim_max;
    // SAFETY: setrlimit reads one rlimit struct through a pointer to a live local.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) };
    ensure!(rc == 0, "setrlimit: {}", std::io::Error::last_os_error());
    Ok(lim.rlim_cur)
}

/// The 1, 5 and 15 minute load averages: other work on the machine skews the figures.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|t| t.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn command_output(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// All samples of one tool at one count.
#[derive(Debug)]
struct Cell {
    tool: Tool,
    n: usize,
    rounds: usize,
    /// In the order the containers were set up (round after round).
    setup: Vec<Duration>,
    /// In the order the containers were torn down.
    teardown: Vec<Duration>,
    /// Per round: the whole teardown (until the last veth is gone) divided by N.
    teardown_amortized: Vec<Duration>,
    /// The first and the last tenth of each round, for the trend within a round.
    setup_tenths: (Vec<Duration>, Vec<Duration>),
    teardown_tenths: (Vec<Duration>, Vec<Duration>),
}

impl Cell {
    fn add(&mut self, round: &Round) {
        self.rounds += 1;
        self.setup.extend(&round.setup);
        self.teardown.extend(&round.teardown);
        if let Some(per) = u32::try_from(round.teardown.len())
            .ok()
            .filter(|&n| n > 0)
            .map(|n| round.teardown_total / n)
        {
            self.teardown_amortized.push(per);
        }
        tenths(&round.setup, &mut self.setup_tenths);
        tenths(&round.teardown, &mut self.teardown_tenths);
    }
}

/// Appends the first and the last tenth of `samples` (rounds of fewer than 10 have none).
fn tenths(samples: &[Duration], into: &mut (Vec<Duration>, Vec<Duration>)) {
    let tenth = samples.len() / 10;
    if tenth == 0 {
        return;
    }
    into.0.extend(&samples[..tenth]);
    into.1.extend(&samples[samples.len() - tenth..]);
}

/// The trend within rounds: does a container cost more when many are already there?
#[derive(Debug, Serialize)]
struct Trend {
    /// Median of the first tenth of each round's setups (few containers present) and of
    /// the last tenth (nearly all present), and their ratio.
    setup_first_tenth_us: f64,
    setup_last_tenth_us: f64,
    setup_growth: f64,
    /// Likewise for teardown (the first tenth torn down while nearly all are present).
    teardown_first_tenth_us: f64,
    teardown_last_tenth_us: f64,
    teardown_growth: f64,
}

impl Trend {
    fn of(c: &Cell) -> Option<Self> {
        let med = |v: &[Duration]| Summary::of(v).map(|s| s.median_us);
        let (sf, sl) = (med(&c.setup_tenths.0)?, med(&c.setup_tenths.1)?);
        let (tf, tl) = (med(&c.teardown_tenths.0)?, med(&c.teardown_tenths.1)?);
        Some(Trend {
            setup_first_tenth_us: sf,
            setup_last_tenth_us: sl,
            setup_growth: ratio(Some(sl), Some(sf))?,
            teardown_first_tenth_us: tf,
            teardown_last_tenth_us: tl,
            teardown_growth: ratio(Some(tl), Some(tf))?,
        })
    }
}

#[derive(Debug, Serialize)]
struct CellReport {
    tool: Tool,
    containers: usize,
    rounds: usize,
    /// Per container: attach + publish one port (dockerd-net), `setup` (netavark),
    /// bridge ADD + portmap ADD (CNI).
    setup: Summary,
    /// Per container: detach, `teardown`, portmap DEL + bridge DEL, as the client waits.
    teardown: Summary,
    /// Per round: the time from the first teardown until the round's last veth was gone,
    /// divided by the round's containers (dockerd-net: its reaper's background deletions
    /// included).
    teardown_amortized: Option<Summary>,
    /// For 100 containers and more: first tenth against last tenth of each round.
    within_round: Option<Trend>,
    /// Every sample, in order, in microseconds.
    setup_us: Vec<f64>,
    teardown_us: Vec<f64>,
}

#[derive(Debug, Serialize)]
struct RatioReport {
    peer: Tool,
    containers: usize,
    /// Peer's median / dockerd-net's median.
    setup: Option<f64>,
    teardown: Option<f64>,
    /// Of the amortized teardowns (background deletion included).
    teardown_amortized: Option<f64>,
    /// Of the sums of the two medians.
    total: Option<f64>,
    meets_target: bool,
}

#[derive(Debug, Serialize)]
struct GrowthReport {
    tool: Tool,
    /// Median per container at N=1000 / at N=10.
    setup: Option<f64>,
    teardown: Option<f64>,
    flat: bool,
}

#[derive(Debug, Serialize)]
struct Report {
    kernel: String,
    cpus: usize,
    iptables: String,
    netavark: Option<String>,
    cni_path: Option<String>,
    daemon_args: Vec<String>,
    counts: Vec<usize>,
    min_samples: usize,
    target_ratio: f64,
    flat_growth_at_most: f64,
    load_before: String,
    load_after: String,
    seconds: f64,
    results: Vec<CellReport>,
    ratios: Vec<RatioReport>,
    growth_10_to_1000: Vec<GrowthReport>,
}

fn run(args: Args) -> Result<()> {
    if !testns::is_root() {
        bail!("needs root: every round creates network namespaces");
    }
    let root = build::workspace_root();
    let bin = build::binary(&root, build::Backend::Netlink, args.no_build)?;
    let nofile = raise_nofile_limit()?;
    let mut counts: Vec<usize> = args
        .counts
        .iter()
        .copied()
        .filter(|&n| n >= 1 && n <= args.max)
        .collect();
    counts.sort_unstable();
    counts.dedup();
    ensure!(
        !counts.is_empty(),
        "no container count to measure (--counts, --max)"
    );
    let peers_max = args.peers_max.unwrap_or(args.max);
    let netavark = match (
        args.no_peers,
        args.netavark.clone().or_else(peers::find_netavark),
    ) {
        (true, _) => None,
        (false, None) => {
            eprintln!("bench-attach: netavark not found; skipped");
            None
        }
        (false, Some(b)) => Some(b),
    };
    let cni =
        (!args.no_peers && args.cni_path.join("bridge").is_file()).then(|| args.cni_path.clone());
    if !args.no_peers && cni.is_none() {
        eprintln!(
            "bench-attach: no CNI plugins in {}; skipped",
            args.cni_path.display()
        );
    }

    let scratch = root.join("target/bench/attach-scratch");
    let _ = std::fs::remove_dir_all(&scratch);
    let load_before = loadavg();
    let started = Instant::now();
    eprintln!(
        "bench-attach: counts {counts:?}, at least {} samples each; open-file limit {nofile}",
        args.min_samples
    );

    let mut cells: Vec<Cell> = Vec::new();
    let mut graveyard = Graveyard::default();
    let mut seq = 0usize;
    for &n in &counts {
        let rounds = args.min_samples.div_ceil(n).max(1);
        let mut tools = vec![Tool::Ours];
        if n <= peers_max {
            if netavark.is_some() {
                tools.push(Tool::Netavark);
            }
            if cni.is_some() {
                tools.push(Tool::Cni);
            }
        }
        for &tool in &tools {
            cells.push(Cell {
                tool,
                n,
                rounds: 0,
                setup: Vec::new(),
                teardown: Vec::new(),
                teardown_amortized: Vec::new(),
                setup_tenths: (Vec::new(), Vec::new()),
                teardown_tenths: (Vec::new(), Vec::new()),
            });
        }
        let t_n = Instant::now();
        for r in 0..rounds {
            for &tool in &tools {
                seq += 1;
                let dir = scratch.join(format!("{}-{n}-{r}-{seq}", tool.name()));
                let what = format!("{} with {n} containers, round {}", tool.name(), r + 1);
                let (bin, netavark, cni) = (bin.clone(), netavark.clone(), cni.clone());
                let flags = args.daemon_args.clone();
                let d = dir.clone();
                let (round, host) = ns::in_fresh_host(move || match tool {
                    Tool::Ours => ours::round(&bin, &flags, n, &d),
                    Tool::Netavark => {
                        let nv = netavark.context("netavark not found")?;
                        peers::netavark_round(&nv, n, &d)
                    }
                    Tool::Cni => {
                        let plugins = cni.context("CNI plugins not found")?;
                        peers::cni_round(&plugins, n, &d)
                    }
                })
                .with_context(|| what.clone())?;
                let _ = std::fs::remove_dir_all(&dir);
                let cell = cells
                    .iter_mut()
                    .find(|c| c.tool == tool && c.n == n)
                    .context("internal: no cell")?;
                cell.add(&round);
                graveyard.bury(host, round.containers);
                if graveyard.len() >= KEEP_AT_MOST {
                    graveyard.settle();
                }
            }
        }
        graveyard.settle();
        eprintln!(
            "bench-attach: N={n} done in {:.1} s ({:.1} s so far)",
            t_n.elapsed().as_secs_f64(),
            started.elapsed().as_secs_f64()
        );
    }
    let _ = std::fs::remove_dir_all(&scratch);

    let report = report(
        &args,
        &counts,
        cells,
        netavark.as_deref(),
        cni.as_deref(),
        load_before,
        started,
    )?;
    print_table(&report);
    let json_path = args
        .json
        .clone()
        .unwrap_or_else(|| root.join("target/bench/attach.json"));
    if let Some(dir) = json_path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&json_path, serde_json::to_string_pretty(&report)? + "\n")
        .with_context(|| format!("writing {}", json_path.display()))?;
    println!("\nJSON summary: {}", json_path.display());
    Ok(())
}

fn report(
    args: &Args,
    counts: &[usize],
    cells: Vec<Cell>,
    netavark: Option<&Path>,
    cni: Option<&Path>,
    load_before: String,
    started: Instant,
) -> Result<Report> {
    let mut results = Vec::new();
    for c in cells {
        let (Some(setup), Some(teardown)) = (Summary::of(&c.setup), Summary::of(&c.teardown))
        else {
            continue;
        };
        let us = |v: &[Duration]| v.iter().map(|d| d.as_secs_f64() * 1e6).collect();
        results.push(CellReport {
            tool: c.tool,
            containers: c.n,
            rounds: c.rounds,
            setup,
            teardown,
            teardown_amortized: Summary::of(&c.teardown_amortized),
            within_round: if c.n >= 100 { Trend::of(&c) } else { None },
            setup_us: us(&c.setup),
            teardown_us: us(&c.teardown),
        });
    }
    let median = |tool: Tool, n: usize, setup: bool| -> Option<f64> {
        results
            .iter()
            .find(|c| c.tool == tool && c.containers == n)
            .map(|c| {
                if setup {
                    c.setup.median_us
                } else {
                    c.teardown.median_us
                }
            })
    };
    let amortized = |tool: Tool, n: usize| -> Option<f64> {
        results
            .iter()
            .find(|c| c.tool == tool && c.containers == n)
            .and_then(|c| c.teardown_amortized.as_ref().map(|a| a.median_us))
    };
    let total = |tool: Tool, n: usize| -> Option<f64> {
        Some(median(tool, n, true)? + median(tool, n, false)?)
    };
    let mut ratios = Vec::new();
    for peer in [Tool::Netavark, Tool::Cni] {
        for &n in counts {
            if median(peer, n, true).is_none() {
                continue;
            }
            let setup = ratio(median(peer, n, true), median(Tool::Ours, n, true));
            let teardown = ratio(median(peer, n, false), median(Tool::Ours, n, false));
            let teardown_amortized = ratio(amortized(peer, n), amortized(Tool::Ours, n));
            let total = ratio(total(peer, n), total(Tool::Ours, n));
            ratios.push(RatioReport {
                peer,
                containers: n,
                setup,
                teardown,
                teardown_amortized,
                total,
                meets_target: [setup, teardown]
                    .iter()
                    .all(|r| r.is_some_and(|r| r >= TARGET_RATIO)),
            });
        }
    }
    let mut growth = Vec::new();
    for tool in [Tool::Ours, Tool::Netavark, Tool::Cni] {
        let setup = ratio(median(tool, 1000, true), median(tool, 10, true));
        let teardown = ratio(median(tool, 1000, false), median(tool, 10, false));
        if setup.is_some() || teardown.is_some() {
            growth.push(GrowthReport {
                tool,
                setup,
                teardown,
                flat: [setup, teardown]
                    .iter()
                    .all(|g| g.is_some_and(|g| g <= FLAT)),
            });
        }
    }
    Ok(Report {
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_owned(),
        cpus: std::thread::available_parallelism().map_or(0, usize::from),
        iptables: command_output("iptables", &["--version"]),
        netavark: netavark.map(peers::version),
        cni_path: cni.map(|p| p.display().to_string()),
        daemon_args: args.daemon_args.clone(),
        counts: counts.to_vec(),
        min_samples: args.min_samples,
        target_ratio: TARGET_RATIO,
        flat_growth_at_most: FLAT,
        load_before,
        load_after: loadavg(),
        seconds: started.elapsed().as_secs_f64(),
        results,
        ratios,
        growth_10_to_1000: growth,
    })
}

fn ms(us: f64) -> String {
    format!("{:.3}", us / 1000.0)
}

fn times(r: Option<f64>) -> String {
    r.map_or_else(|| "-".to_owned(), |r| format!("{r:.1}x"))
}

fn print_table(r: &Report) {
    println!(
        "\nattach + publish one port, then detach: per-container figures in ms \
         (kernel {}, {} CPUs, {}; load {} -> {})",
        r.kernel, r.cpus, r.iptables, r.load_before, r.load_after
    );
    if !r.daemon_args.is_empty() {
        println!("dockerd-net flags: {}", r.daemon_args.join(" "));
    }
    println!(
        "teardown: detach latency = one detach as the client waits for it; amortized = the \
         round's whole teardown,\n          from the first detach until its last veth is gone \
         (background deletion included), / N"
    );
    println!(
        "\n{:<12} {:>5} {:>6} {:>7} | {:>9} {:>9} {:>9} | {:>9} {:>9} {:>9} | {:>10}",
        "tool",
        "N",
        "rounds",
        "samples",
        "setup",
        "p90",
        "max",
        "detach",
        "p90",
        "max",
        "amortized"
    );
    println!(
        "{:<12} {:>5} {:>6} {:>7} | {:>9} {:>9} {:>9} | {:>9} {:>9} {:>9} | {:>10}",
        "", "", "", "", "", "", "", "latency", "", "", "teardown"
    );
    for c in &r.results {
        println!(
            "{:<12} {:>5} {:>6} {:>7} | {:>9} {:>9} {:>9} | {:>9} {:>9} {:>9} | {:>10}",
            c.tool.name(),
            c.containers,
            c.rounds,
            c.setup.n,
            ms(c.setup.median_us),
            ms(c.setup.p90_us),
            ms(c.setup.max_us),
            ms(c.teardown.median_us),
            ms(c.teardown.p90_us),
            ms(c.teardown.max_us),
            c.teardown_amortized
                .as_ref()
                .map_or_else(|| "-".to_owned(), |a| ms(a.median_us)),
        );
    }
    let trends: Vec<(&CellReport, &Trend)> = r
        .results
        .iter()
        .filter_map(|c| c.within_round.as_ref().map(|t| (c, t)))
        .collect();
    if !trends.is_empty() {
        println!("\nwithin a round: median of the first tenth -> the last tenth (ms)");
        for (c, t) in trends {
            println!(
                "{:<12} {:>5} | setup {:>8} -> {:>8} ({:.1}x) | teardown {:>8} -> {:>8} ({:.1}x)",
                c.tool.name(),
                c.containers,
                ms(t.setup_first_tenth_us),
                ms(t.setup_last_tenth_us),
                t.setup_growth,
                ms(t.teardown_first_tenth_us),
                ms(t.teardown_last_tenth_us),
                t.teardown_growth,
            );
        }
    }
    if !r.ratios.is_empty() {
        println!(
            "\nhow many times faster dockerd-net is (peer median / dockerd-net median; aim: >= {:.0}x)",
            r.target_ratio
        );
        println!(
            "{:<10} {:>5} | {:>8} {:>9} {:>10} {:>8} | meets",
            "peer", "N", "setup", "detach", "amortized", "total"
        );
        for x in &r.ratios {
            println!(
                "{:<10} {:>5} | {:>8} {:>9} {:>10} {:>8} | {}",
                x.peer.name(),
                x.containers,
                times(x.setup),
                times(x.teardown),
                times(x.teardown_amortized),
                times(x.total),
                if x.meets_target { "yes" } else { "NO" }
            );
        }
    }
    if !r.growth_10_to_1000.is_empty() {
        println!(
            "\ngrowth of the per-container median from N=10 to N=1000 (flat: <= {:.2}x)",
            r.flat_growth_at_most
        );
        for g in &r.growth_10_to_1000 {
            println!(
                "{:<12} setup {:>7}  teardown {:>7}  {}",
                g.tool.name(),
                times(g.setup),
                times(g.teardown),
                if g.flat { "flat" } else { "NOT flat" }
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|&m| Duration::from_millis(m)).collect()
    }

    #[test]
    fn tenths_take_both_ends_of_each_round() {
        let mut into = (Vec::new(), Vec::new());
        tenths(
            &ms(&[
                1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20,
            ]),
            &mut into,
        );
        assert_eq!(into, (ms(&[1, 2]), ms(&[19, 20])));
        // A round of fewer than ten has no tenth.
        tenths(&ms(&[1, 2, 3]), &mut into);
        assert_eq!(into, (ms(&[1, 2]), ms(&[19, 20])));
    }

    #[test]
    fn trend_compares_last_tenth_with_first() {
        let mut c = Cell {
            tool: Tool::Ours,
            n: 10,
            rounds: 0,
            setup: Vec::new(),
            teardown: Vec::new(),
            teardown_amortized: Vec::new(),
            setup_tenths: (Vec::new(), Vec::new()),
            teardown_tenths: (Vec::new(), Vec::new()),
        };
        c.add(&Round {
            setup: ms(&[2, 3, 3, 3, 3, 3, 3, 3, 3, 8]),
            teardown: ms(&[5, 5, 5, 5, 5, 5, 5, 5, 5, 5]),
            teardown_total: Duration::from_millis(70),
            containers: Vec::new(),
        });
        let t = Trend::of(&c).expect("a trend");
        assert_eq!(
            (t.setup_first_tenth_us, t.setup_last_tenth_us),
            (2000.0, 8000.0)
        );
        assert_eq!((t.setup_growth, t.teardown_growth), (4.0, 1.0));
        assert_eq!((c.rounds, c.setup.len()), (1, 10));
        assert_eq!(c.teardown_amortized, ms(&[7]), "70 ms for 10 containers");
    }
}
