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
//!   Measured in both firewall modes in the same run (`--modes`, default both), as two tools
//!   with their own growth and ratios: `dockerd-net` (default flags: iptables rules, Docker's
//!   layout) and `dockerd-net/nft` (`--firewall-backend=nftables`: its own nftables table,
//!   published ports as set elements; the round's namespace gets `ip_forward=1` first, as
//!   that mode requires).
//! - **netavark** and **CNI** bridge + host-local + portmap, as their users run them, in
//!   fresh namespaces too (see [`peers`]).
//!
//! Small N are repeated in fresh namespaces until each dockerd-net variant has at least
//! `--min-samples` samples and each peer `--peer-min-samples` (see [`Args::min_samples`]).
//! Rounds interleave the tools (see [`round_plan`]), so a drift of the machine affects all alike;
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
    /// dockerd-net in its default firewall mode (iptables rules).
    #[serde(rename = "dockerd-net")]
    Ours,
    /// dockerd-net with `--firewall-backend=nftables`.
    #[serde(rename = "dockerd-net/nft")]
    OursNft,
    Netavark,
    Cni,
}

impl Tool {
    fn name(self) -> &'static str {
        match self {
            Tool::Ours => "dockerd-net",
            Tool::OursNft => "dockerd-net/nft",
            Tool::Netavark => "netavark",
            Tool::Cni => "CNI",
        }
    }

    /// The firewall mode of a dockerd-net variant; `None` for a peer.
    fn mode(self) -> Option<Mode> {
        match self {
            Tool::Ours => Some(Mode::Iptables),
            Tool::OursNft => Some(Mode::Nftables),
            Tool::Netavark | Tool::Cni => None,
        }
    }
}

/// dockerd-net's firewall modes, each measured as a tool of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
enum Mode {
    /// The default: iptables rules in Docker's layout.
    #[value(alias = "ipt", alias = "default")]
    Iptables,
    /// `--firewall-backend=nftables`: dockerd-net's own nftables table.
    #[value(alias = "nft")]
    Nftables,
}

impl Mode {
    fn tool(self) -> Tool {
        match self {
            Mode::Iptables => Tool::Ours,
            Mode::Nftables => Tool::OursNft,
        }
    }

    /// The daemon's global flags for this mode (before `--daemon-arg`'s).
    fn flags(self) -> &'static [&'static str] {
        match self {
            Mode::Iptables => &[],
            Mode::Nftables => &["--firewall-backend=nftables"],
        }
    }

    /// Whether the round's namespace needs `net.ipv4.ip_forward=1` before the daemon starts:
    /// in nftables mode dockerd-net (like Docker 29) refuses to start while it is 0, and never
    /// turns it on itself; a fresh namespace starts with 0.
    fn needs_forwarding(self) -> bool {
        self == Mode::Nftables
    }
}

/// The modes to measure, in the order given, each once.
fn dedup_modes(modes: &[Mode]) -> Vec<Mode> {
    let mut out: Vec<Mode> = Vec::new();
    for &m in modes {
        if !out.contains(&m) {
            out.push(m);
        }
    }
    out
}

/// `--daemon-arg` applies to every variant, so it must not choose the firewall mode itself.
fn check_daemon_args(flags: &[String]) -> Result<()> {
    for f in flags {
        ensure!(
            f != "--firewall-backend" && !f.starts_with("--firewall-backend="),
            "--daemon-arg={f}: the firewall mode is chosen with --modes (iptables, nftables)"
        );
    }
    Ok(())
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
    /// dockerd-net's firewall modes to measure, each as a tool of its own: iptables
    /// (`dockerd-net`, the default flags) and nftables (`dockerd-net/nft`,
    /// --firewall-backend=nftables)
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Mode::Iptables, Mode::Nftables])]
    modes: Vec<Mode>,
    /// Repeat small counts in fresh namespaces until each dockerd-net variant has this many
    /// samples
    // 100, not 30: the N=10 median is the denominator of the growth figure, and from 30
    // samples (3 rounds of 10, each with a fresh daemon) it wandered 1.6-2.2 ms between runs
    // of one build, the growth 1.0x-1.5x. A dockerd-net round of 10 costs well under a second,
    // so 10 rounds per variant cost little; the peers (~0.1 s a container, and their ratios
    // are far from the target's edge) keep --peer-min-samples.
    #[arg(long, default_value_t = 100)]
    min_samples: usize,
    /// Likewise for each peer (netavark, CNI)
    #[arg(long, default_value_t = 30)]
    peer_min_samples: usize,
    /// Measure dockerd-net only
    #[arg(long)]
    no_peers: bool,
    /// Use the dockerd-net release binary built before instead of building it
    #[arg(long)]
    no_build: bool,
    /// A global flag for dockerd-net in every mode, e.g. --daemon-arg=--userland-proxy=false
    /// (repeatable; the firewall mode is --modes')
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

/// Rounds needed for at least `min_samples` samples of `n` containers each (at least one).
fn rounds_for(min_samples: usize, n: usize) -> usize {
    min_samples.div_ceil(n.max(1)).max(1)
}

/// The rounds of one count: for each, the tools that run one, in order. Every tool gets its
/// `(tool, rounds)`; a tool with k rounds of the R the most has runs in round r when
/// floor((r+1)k/R) > floor(rk/R): k rounds spread evenly (the last one included), not bunched
/// at the start, so slow drift of the machine hits every tool alike. The dockerd-net variants (listed first in `tools`) swap
/// places from round to round, so neither is always the one run right after a peer or a
/// settle of the graveyard.
fn round_plan(tools: &[(Tool, usize)]) -> Vec<Vec<Tool>> {
    let total = tools.iter().map(|&(_, k)| k).max().unwrap_or(0);
    (0..total)
        .map(|r| {
            let here = |&&(_, k): &&(Tool, usize)| (r + 1) * k / total > r * k / total;
            let mut ours: Vec<Tool> = tools
                .iter()
                .filter(|t| t.0.mode().is_some())
                .filter(here)
                .map(|&(t, _)| t)
                .collect();
            if !ours.is_empty() {
                let shift = r % ours.len();
                ours.rotate_left(shift);
            }
            ours.extend(
                tools
                    .iter()
                    .filter(|t| t.0.mode().is_none())
                    .filter(here)
                    .map(|&(t, _)| t),
            );
            ours
        })
        .collect()
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

/// `net.ipv4.ip_forward` as the calling thread's namespace has it (`/proc/sys/net` follows
/// the calling thread's namespace); from the main thread, the machine's own.
fn machine_ip_forward() -> Option<String> {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")
        .ok()
        .map(|t| t.trim().to_owned())
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
    fn new(tool: Tool, n: usize) -> Self {
        Cell {
            tool,
            n,
            rounds: 0,
            setup: Vec::new(),
            teardown: Vec::new(),
            teardown_amortized: Vec::new(),
            setup_tenths: (Vec::new(), Vec::new()),
            teardown_tenths: (Vec::new(), Vec::new()),
        }
    }

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
    /// The dockerd-net variant compared.
    tool: Tool,
    peer: Tool,
    containers: usize,
    /// Peer's median / the dockerd-net variant's median.
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
struct VariantReport {
    tool: Tool,
    mode: Mode,
    flags: Vec<String>,
}

#[derive(Debug, Serialize)]
struct Report {
    kernel: String,
    cpus: usize,
    iptables: String,
    netavark: Option<String>,
    cni_path: Option<String>,
    /// `--daemon-arg`s, given to every variant.
    daemon_args: Vec<String>,
    /// The dockerd-net variants measured, with all their global flags.
    variants: Vec<VariantReport>,
    counts: Vec<usize>,
    /// At least this many samples per count for each dockerd-net variant, and for each peer.
    min_samples: usize,
    peer_min_samples: usize,
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

    let modes = dedup_modes(&args.modes);
    ensure!(
        !modes.is_empty(),
        "no dockerd-net mode to measure (--modes)"
    );
    check_daemon_args(&args.daemon_args)?;
    // Read from this (the main) thread, which never leaves the machine's namespace: the
    // rounds set ip_forward in their own namespaces only, and this checks they did.
    let machine_forwarding = machine_ip_forward();

    let scratch = root.join("target/bench/attach-scratch");
    let _ = std::fs::remove_dir_all(&scratch);
    let load_before = loadavg();
    let started = Instant::now();
    eprintln!(
        "bench-attach: counts {counts:?}, modes {modes:?}, at least {} samples each for \
         dockerd-net, {} for the peers; open-file limit {nofile}",
        args.min_samples, args.peer_min_samples
    );

    let mut cells: Vec<Cell> = Vec::new();
    let mut graveyard = Graveyard::default();
    let mut seq = 0usize;
    for &n in &counts {
        let mut tools: Vec<(Tool, usize)> = modes
            .iter()
            .map(|m| (m.tool(), rounds_for(args.min_samples, n)))
            .collect();
        if n <= peers_max {
            let k = rounds_for(args.peer_min_samples, n);
            if netavark.is_some() {
                tools.push((Tool::Netavark, k));
            }
            if cni.is_some() {
                tools.push((Tool::Cni, k));
            }
        }
        for &(tool, _) in &tools {
            cells.push(Cell::new(tool, n));
        }
        let t_n = Instant::now();
        let mut done: Vec<(Tool, usize)> = Vec::new();
        for round_tools in round_plan(&tools) {
            for tool in round_tools {
                let r = match done.iter_mut().find(|(t, _)| *t == tool) {
                    Some((_, r)) => {
                        *r += 1;
                        *r
                    }
                    None => {
                        done.push((tool, 1));
                        1
                    }
                };
                seq += 1;
                let dir = scratch.join(format!("{}-{n}-{r}-{seq}", tool.name().replace('/', "-")));
                let what = format!("{} with {n} containers, round {r}", tool.name());
                let (bin, netavark, cni) = (bin.clone(), netavark.clone(), cni.clone());
                let mut flags: Vec<String> = tool
                    .mode()
                    .map(|m| m.flags().iter().map(|&f| f.to_owned()).collect())
                    .unwrap_or_default();
                flags.extend(args.daemon_args.iter().cloned());
                let d = dir.clone();
                let (round, host) = ns::in_fresh_host(move || match tool.mode() {
                    Some(mode) => ours::round(&bin, &flags, mode.needs_forwarding(), n, &d),
                    None if tool == Tool::Netavark => {
                        let nv = netavark.context("netavark not found")?;
                        peers::netavark_round(&nv, n, &d)
                    }
                    None => {
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
    if machine_ip_forward() != machine_forwarding {
        eprintln!(
            "bench-attach: WARNING: the machine's net.ipv4.ip_forward changed during the run \
             ({machine_forwarding:?} -> {:?}); the benchmark sets it only in its own namespaces",
            machine_ip_forward()
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
    );
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

/// What the samples say: every cell's summary, each dockerd-net variant's ratios against each
/// peer, and every tool's growth from N = 10 to N = 1000. Pure: [`report`] adds the machine.
#[derive(Debug)]
struct Analysis {
    results: Vec<CellReport>,
    ratios: Vec<RatioReport>,
    growth: Vec<GrowthReport>,
}

/// The dockerd-net variants and the peers, in the order the tables list them.
const TOOLS: [Tool; 4] = [Tool::Ours, Tool::OursNft, Tool::Netavark, Tool::Cni];

fn analyse(counts: &[usize], cells: Vec<Cell>) -> Analysis {
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
    let cell = |tool: Tool, n: usize| results.iter().find(|c| c.tool == tool && c.containers == n);
    let setup = |tool: Tool, n: usize| cell(tool, n).map(|c| c.setup.median_us);
    let detach = |tool: Tool, n: usize| cell(tool, n).map(|c| c.teardown.median_us);
    let amortized = |tool: Tool, n: usize| {
        cell(tool, n).and_then(|c| c.teardown_amortized.as_ref().map(|a| a.median_us))
    };
    let total = |tool: Tool, n: usize| Some(setup(tool, n)? + detach(tool, n)?);
    let mut ratios = Vec::new();
    for peer in TOOLS.into_iter().filter(|t| t.mode().is_none()) {
        for &n in counts {
            for tool in TOOLS.into_iter().filter(|t| t.mode().is_some()) {
                if cell(peer, n).is_none() || cell(tool, n).is_none() {
                    continue;
                }
                let s = ratio(setup(peer, n), setup(tool, n));
                let t = ratio(detach(peer, n), detach(tool, n));
                ratios.push(RatioReport {
                    tool,
                    peer,
                    containers: n,
                    setup: s,
                    teardown: t,
                    teardown_amortized: ratio(amortized(peer, n), amortized(tool, n)),
                    total: ratio(total(peer, n), total(tool, n)),
                    meets_target: [s, t].iter().all(|r| r.is_some_and(|r| r >= TARGET_RATIO)),
                });
            }
        }
    }
    let mut growth = Vec::new();
    for tool in TOOLS {
        let s = ratio(setup(tool, 1000), setup(tool, 10));
        let t = ratio(detach(tool, 1000), detach(tool, 10));
        if s.is_some() || t.is_some() {
            growth.push(GrowthReport {
                tool,
                setup: s,
                teardown: t,
                flat: [s, t].iter().all(|g| g.is_some_and(|g| g <= FLAT)),
            });
        }
    }
    Analysis {
        results,
        ratios,
        growth,
    }
}

fn report(
    args: &Args,
    counts: &[usize],
    cells: Vec<Cell>,
    netavark: Option<&Path>,
    cni: Option<&Path>,
    load_before: String,
    started: Instant,
) -> Report {
    let Analysis {
        results,
        ratios,
        growth,
    } = analyse(counts, cells);
    Report {
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_owned(),
        cpus: std::thread::available_parallelism().map_or(0, usize::from),
        iptables: command_output("iptables", &["--version"]),
        netavark: netavark.map(peers::version),
        cni_path: cni.map(|p| p.display().to_string()),
        daemon_args: args.daemon_args.clone(),
        variants: dedup_modes(&args.modes)
            .into_iter()
            .map(|m| VariantReport {
                tool: m.tool(),
                mode: m,
                flags: m
                    .flags()
                    .iter()
                    .map(|&f| f.to_owned())
                    .chain(args.daemon_args.iter().cloned())
                    .collect(),
            })
            .collect(),
        counts: counts.to_vec(),
        min_samples: args.min_samples,
        peer_min_samples: args.peer_min_samples,
        target_ratio: TARGET_RATIO,
        flat_growth_at_most: FLAT,
        load_before,
        load_after: loadavg(),
        seconds: started.elapsed().as_secs_f64(),
        results,
        ratios,
        growth_10_to_1000: growth,
    }
}

fn ms(us: f64) -> String {
    format!("{:.3}", us / 1000.0)
}

fn times(r: Option<f64>) -> String {
    r.map_or_else(|| "-".to_owned(), |r| format!("{r:.1}x"))
}

/// Width of the tool column (`dockerd-net/nft`).
const TOOL_W: usize = 15;

fn print_table(r: &Report) {
    println!(
        "\nattach + publish one port, then detach: per-container figures in ms \
         (kernel {}, {} CPUs, {}; load {} -> {})",
        r.kernel, r.cpus, r.iptables, r.load_before, r.load_after
    );
    for v in &r.variants {
        println!(
            "{:<w$} flags: {}",
            v.tool.name(),
            if v.flags.is_empty() {
                "(none: iptables rules)".to_owned()
            } else {
                v.flags.join(" ")
            },
            w = TOOL_W
        );
    }
    println!(
        "teardown: detach latency = one detach as the client waits for it; amortized = the \
         round's whole teardown,\n          from the first detach until its last veth is gone \
         (background deletion included), / N"
    );
    println!(
        "\n{:<w$} {:>5} {:>6} {:>7} | {:>9} {:>9} {:>9} | {:>9} {:>9} {:>9} | {:>10}",
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
        "amortized",
        w = TOOL_W
    );
    println!(
        "{:<w$} {:>5} {:>6} {:>7} | {:>9} {:>9} {:>9} | {:>9} {:>9} {:>9} | {:>10}",
        "",
        "",
        "",
        "",
        "",
        "",
        "",
        "latency",
        "",
        "",
        "teardown",
        w = TOOL_W
    );
    for c in &r.results {
        println!(
            "{:<w$} {:>5} {:>6} {:>7} | {:>9} {:>9} {:>9} | {:>9} {:>9} {:>9} | {:>10}",
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
            w = TOOL_W
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
                "{:<w$} {:>5} | setup {:>8} -> {:>8} ({:.1}x) | teardown {:>8} -> {:>8} ({:.1}x)",
                c.tool.name(),
                c.containers,
                ms(t.setup_first_tenth_us),
                ms(t.setup_last_tenth_us),
                t.setup_growth,
                ms(t.teardown_first_tenth_us),
                ms(t.teardown_last_tenth_us),
                t.teardown_growth,
                w = TOOL_W
            );
        }
    }
    if !r.ratios.is_empty() {
        println!(
            "\nhow many times faster dockerd-net is (peer median / dockerd-net median; aim: >= {:.0}x)",
            r.target_ratio
        );
        println!(
            "{:<10} {:>5} {:<w$} | {:>8} {:>9} {:>10} {:>8} | meets",
            "peer",
            "N",
            "against",
            "setup",
            "detach",
            "amortized",
            "total",
            w = TOOL_W
        );
        for x in &r.ratios {
            println!(
                "{:<10} {:>5} {:<w$} | {:>8} {:>9} {:>10} {:>8} | {}",
                x.peer.name(),
                x.containers,
                x.tool.name(),
                times(x.setup),
                times(x.teardown),
                times(x.teardown_amortized),
                times(x.total),
                if x.meets_target { "yes" } else { "NO" },
                w = TOOL_W
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
                "{:<w$} setup {:>7}  teardown {:>7}  {}",
                g.tool.name(),
                times(g.setup),
                times(g.teardown),
                if g.flat { "flat" } else { "NOT flat" },
                w = TOOL_W
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
        let mut c = Cell::new(Tool::Ours, 10);
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

    #[test]
    fn modes_default_to_both_and_parse_a_list() {
        let parse = |argv: &[&str]| {
            Args::try_parse_from(std::iter::once("bench-attach").chain(argv.iter().copied()))
        };
        let a = parse(&[]).expect("no flags");
        assert_eq!(a.modes, [Mode::Iptables, Mode::Nftables]);
        assert_eq!((a.min_samples, a.peer_min_samples), (100, 30));
        let a = parse(&["--modes", "nftables"]).expect("one mode");
        assert_eq!(a.modes, [Mode::Nftables]);
        let a = parse(&["--modes=nft,iptables,nftables"]).expect("aliases");
        assert_eq!(
            dedup_modes(&a.modes),
            [Mode::Nftables, Mode::Iptables],
            "each once, in the order given"
        );
        assert!(parse(&["--modes", "legacy"]).is_err());
        let a = parse(&["--daemon-arg=--userland-proxy=false"]).expect("daemon arg");
        assert_eq!(a.daemon_args, ["--userland-proxy=false"]);
    }

    #[test]
    fn daemon_args_may_not_choose_the_firewall_mode() {
        let args = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert!(check_daemon_args(&args(&["--userland-proxy=false"])).is_ok());
        assert!(check_daemon_args(&args(&["--firewall-backend=nftables"])).is_err());
        assert!(check_daemon_args(&args(&["--firewall-backend"])).is_err());
    }

    #[test]
    fn modes_map_to_tools_flags_and_forwarding() {
        assert_eq!(Mode::Iptables.tool(), Tool::Ours);
        assert_eq!(Mode::Nftables.tool(), Tool::OursNft);
        assert!(Mode::Iptables.flags().is_empty());
        assert_eq!(Mode::Nftables.flags(), ["--firewall-backend=nftables"]);
        assert!(Mode::Nftables.needs_forwarding() && !Mode::Iptables.needs_forwarding());
        assert_eq!(Tool::OursNft.mode(), Some(Mode::Nftables));
        assert_eq!(Tool::Cni.mode(), None);
        assert_eq!(
            serde_json::to_value([Tool::Ours, Tool::OursNft, Tool::Netavark, Tool::Cni])
                .expect("json"),
            serde_json::json!(["dockerd-net", "dockerd-net/nft", "netavark", "cni"])
        );
    }

    #[test]
    fn rounds_cover_the_minimum_samples() {
        assert_eq!(rounds_for(100, 1), 100);
        assert_eq!(rounds_for(100, 10), 10);
        assert_eq!(rounds_for(30, 10), 3);
        assert_eq!(rounds_for(100, 1000), 1);
        assert_eq!(rounds_for(0, 10), 1);
    }

    #[test]
    fn round_plan_interleaves_variants_and_spreads_peers() {
        let plan = round_plan(&[
            (Tool::Ours, 10),
            (Tool::OursNft, 10),
            (Tool::Netavark, 3),
            (Tool::Cni, 3),
        ]);
        assert_eq!(plan.len(), 10);
        let count = |t: Tool| plan.iter().flatten().filter(|&&x| x == t).count();
        assert_eq!(
            [Tool::Ours, Tool::OursNft, Tool::Netavark, Tool::Cni].map(count),
            [10, 10, 3, 3]
        );
        // The variants take turns at going first; a peer comes after them.
        assert_eq!(plan[0][..2], [Tool::Ours, Tool::OursNft]);
        assert_eq!(plan[1][..2], [Tool::OursNft, Tool::Ours]);
        let with_peer: Vec<usize> = (0..10)
            .filter(|&r| plan[r].contains(&Tool::Netavark))
            .collect();
        assert_eq!(with_peer, [3, 6, 9], "spread out, not bunched at the start");
        assert_eq!(
            plan[9],
            [Tool::OursNft, Tool::Ours, Tool::Netavark, Tool::Cni]
        );
        // One round each (large N): every tool once.
        assert_eq!(
            round_plan(&[(Tool::Ours, 1), (Tool::OursNft, 1), (Tool::Cni, 1)]),
            [vec![Tool::Ours, Tool::OursNft, Tool::Cni]]
        );
        // A peer asked for more rounds than dockerd-net still gets them all.
        let plan = round_plan(&[(Tool::OursNft, 2), (Tool::Netavark, 4)]);
        assert_eq!(
            plan,
            [
                vec![Tool::Netavark],
                vec![Tool::OursNft, Tool::Netavark],
                vec![Tool::Netavark],
                vec![Tool::OursNft, Tool::Netavark]
            ]
        );
        assert!(round_plan(&[]).is_empty());
    }

    fn cell(tool: Tool, n: usize, setup_ms: u64, teardown_ms: u64) -> Cell {
        let mut c = Cell::new(tool, n);
        c.add(&Round {
            setup: vec![Duration::from_millis(setup_ms); n],
            teardown: vec![Duration::from_millis(teardown_ms); n],
            teardown_total: Duration::from_millis(teardown_ms) * u32::try_from(n).expect("n"),
            containers: Vec::new(),
        });
        c
    }

    #[test]
    fn analysis_compares_each_variant_with_each_peer() {
        let cells = vec![
            cell(Tool::Ours, 10, 2, 1),
            cell(Tool::OursNft, 10, 1, 1),
            cell(Tool::Netavark, 10, 40, 20),
            cell(Tool::Ours, 1000, 4, 1),
            cell(Tool::OursNft, 1000, 1, 1),
        ];
        let a = analyse(&[10, 1000], cells);
        assert_eq!(a.results.len(), 5);
        // The peer ran at N=10 only: two rows, one per variant.
        let rows: Vec<(Tool, Tool, usize, Option<f64>, bool)> = a
            .ratios
            .iter()
            .map(|r| (r.peer, r.tool, r.containers, r.setup, r.meets_target))
            .collect();
        assert_eq!(
            rows,
            [
                (Tool::Netavark, Tool::Ours, 10, Some(20.0), true),
                (Tool::Netavark, Tool::OursNft, 10, Some(40.0), true),
            ]
        );
        assert_eq!(a.ratios[0].total, Some(20.0), "60 ms against 3 ms");
        assert_eq!(a.ratios[1].teardown_amortized, Some(20.0));
        // Growth for each variant; none for the peer without N=1000.
        let growth: Vec<(Tool, Option<f64>, bool)> =
            a.growth.iter().map(|g| (g.tool, g.setup, g.flat)).collect();
        assert_eq!(
            growth,
            [
                (Tool::Ours, Some(2.0), false),
                (Tool::OursNft, Some(1.0), true)
            ]
        );
        // The JSON names both variants.
        let json = serde_json::to_value(&a.ratios).expect("json");
        assert_eq!(json[1]["tool"], "dockerd-net/nft");
        assert_eq!(json[1]["peer"], "netavark");
    }

    #[test]
    fn analysis_of_one_variant_has_only_its_rows() {
        let cells = vec![cell(Tool::OursNft, 10, 1, 1), cell(Tool::Cni, 10, 50, 30)];
        let a = analyse(&[10], cells);
        assert_eq!(a.ratios.len(), 1);
        assert_eq!(
            (a.ratios[0].tool, a.ratios[0].peer),
            (Tool::OursNft, Tool::Cni)
        );
        assert!(a.growth.is_empty(), "no N=1000");
    }
}
