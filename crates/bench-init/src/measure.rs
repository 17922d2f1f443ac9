//! One run of each kind, each in a network namespace of its own.
//!
//! A run happens on a new thread that calls `unshare(CLONE_NEWNET)` first: the kernel then
//! gives that thread (and only it) an empty namespace with just a down loopback, which is
//! what a freshly booted host looks like to init. Namespace creation is outside every timed
//! region; the namespace, its bridge and its rules vanish when the thread ends.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use backend_sysctl::ProcSys;
use dockerd_net::backend::open_firewall;
use netcore::config::Config;
use netcore::firewall::{Listing, Table};
use netcore::init::{self, HostFacts, Plan, Step};
use netcore::ops::{IP_FORWARD, LinkOps, OpsError, SysctlOps};

/// A run's timings, by name, in the order they happened.
pub type Sample = Vec<(String, Duration)>;

pub use bench_init::build::Backend;

/// Opens the link backend (both are compiled into this benchmark) in the calling thread's
/// namespace.
fn open_link(backend: Backend) -> Result<Box<dyn LinkOps>, OpsError> {
    Ok(match backend {
        Backend::Netlink => Box::new(backend_netlink::NetlinkLinks::new()?),
        Backend::Ioctl => Box::new(backend_ioctl::IoctlLinks::new()?),
    })
}

/// What every run starts from: the daemon's default configuration (docker0, iptables on,
/// ip-forward on) and the resolv.conf text, read once: `dockerd-net` reads it outside
/// `HostFacts::gather` too.
#[derive(Debug, Clone)]
pub struct Inputs {
    pub config: Config,
    pub resolv_conf: String,
    /// `--iptables-backend` of the runs: in process, the firewall backend `dockerd-net`
    /// opens for it; whole process, the flag.
    pub firewall: String,
}

/// The headline metric: gather + plan + apply.
pub const TOTAL: &str = "total: gather+plan+apply";

/// The plan init makes for a fresh namespace, step by step. Every run checks its plan
/// against this, so a figure can never come from a partial init (say, a namespace that
/// already had the rules).
pub const FRESH_PLAN: [&str; 7] = [
    "bridge: create",
    "bridge: address",
    "bridge: up",
    "firewall batch nat",
    "firewall batch filter",
    "sysctl ip_forward=1",
    "firewall policy FORWARD DROP",
];

/// A network namespace kept alive after its thread ended: an open `/proc/thread-self/ns/net`.
/// Dropping it lets the kernel tear the namespace down (asynchronously, in `cleanup_net`).
pub type NetnsHandle = File;

/// Runs `f` on a new thread that has just moved into a fresh network namespace; returns `f`'s
/// result and a handle that keeps the namespace alive.
///
/// The handle exists so that the caller decides when namespaces die: the kernel destroys a
/// namespace on a workqueue, taking `rtnl_lock` and waiting for RCU grace periods, and on a
/// small machine that work lands in the middle of the next run (it showed as 30 ms outliers
/// in bridge creation and in writing `ip_forward`, whose handler only `rtnl_trylock`s and
/// restarts the syscall). Keeping a batch of namespaces alive and releasing them between
/// batches keeps the measurements free of the benchmark's own garbage.
pub fn in_fresh_netns<T, F>(f: F) -> Result<(T, NetnsHandle)>
where
    F: FnOnce() -> Result<T> + Send + 'static,
    T: Send + 'static,
{
    bench_init::netns::in_fresh_netns("bench-netns", false, f)
}

/// The state of the namespace before init runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// As created: forwarding off, so init also turns it on and sets FORWARD to DROP.
    Fresh,
    /// `ip_forward` already 1 (set untimed before the run), as on most hosts that route:
    /// init then leaves forwarding and the FORWARD policy alone.
    ForwardingOn,
}

impl Scenario {
    /// The plan init must make in this scenario.
    fn expected_plan(self) -> &'static [&'static str] {
        match self {
            Scenario::Fresh => &FRESH_PLAN,
            Scenario::ForwardingOn => &FRESH_PLAN[..5],
        }
    }

    /// Appended to a metric's name.
    pub fn suffix(self) -> &'static str {
        match self {
            Scenario::Fresh => "",
            Scenario::ForwardingOn => " [ip_forward already 1]",
        }
    }

    fn prepare(self) -> Result<()> {
        if self == Scenario::ForwardingOn {
            ProcSys::new().write(IP_FORWARD, "1")?;
        }
        Ok(())
    }
}

/// A MAC seed per run, so no two runs' bridges share an address (they never meet, but a
/// constant would hide nothing either way; this keeps the plan realistic).
fn mac_seed(run: usize) -> [u8; 6] {
    let b = (run as u64).to_le_bytes();
    [0x5a, b[0], b[1], b[2], b[3], 0x01]
}

pub fn step_label(step: &Step) -> String {
    match step {
        Step::CreateBridge { .. } => "bridge: create".into(),
        Step::AddAddr { .. } => "bridge: address".into(),
        Step::SetUp { .. } => "bridge: up".into(),
        Step::Firewall(batch) => format!("firewall batch {}", batch.table),
        Step::IpForward { enable } => format!("sysctl ip_forward={}", u8::from(*enable)),
        Step::ForwardPolicy { policy, .. } => {
            format!("firewall policy FORWARD {}", policy.name())
        }
        other => format!("{other}"),
    }
}

fn check_plan(plan: &Plan, scenario: Scenario) -> Result<()> {
    let got: Vec<String> = plan.steps.iter().map(step_label).collect();
    let want = scenario.expected_plan();
    ensure!(
        got == want,
        "init's plan ({scenario:?}) was {got:?}, expected {want:?}: not a full init"
    );
    Ok(())
}

/// In-process: open the backends (timed apart), then `gather` + `plan` + `apply` exactly as
/// `dockerd-net init` wires them.
pub fn in_process(
    backend: Backend,
    scenario: Scenario,
    inputs: &Inputs,
    run: usize,
) -> Result<(Sample, NetnsHandle)> {
    let Inputs {
        config,
        resolv_conf,
        firewall,
    } = inputs.clone();
    in_fresh_netns(move || {
        scenario.prepare()?;
        let t = Instant::now();
        let mut link = open_link(backend)?;
        let open_link = t.elapsed();
        // As the binary opens it (`auto`: the flavour from the `iptables` link, then an
        // nf_tables socket on nft hosts).
        let t = Instant::now();
        let mut fw = open_firewall(&firewall, true)?;
        let open_fw = t.elapsed();
        let mut sys = ProcSys::new();

        let t0 = Instant::now();
        let facts = HostFacts::gather(&config, &resolv_conf, &mut *link, &mut *fw, &mut sys)?;
        let t1 = Instant::now();
        let plan = init::plan(&config, &facts, mac_seed(run))?;
        let t2 = Instant::now();
        let applied = init::apply(&plan, &mut *link, &mut *fw, &mut sys)?;
        let t3 = Instant::now();

        check_plan(&plan, scenario)?;
        ensure!(
            applied.done.len() == plan.steps.len() && applied.warnings.is_empty(),
            "init did not apply every step: {applied:?}"
        );
        let sfx = scenario.suffix();
        Ok(vec![
            (format!("open: {} backend{sfx}", backend.name()), open_link),
            (format!("open: firewall ({firewall}){sfx}"), open_fw),
            (format!("gather{sfx}"), t1 - t0),
            (format!("plan{sfx}"), t2 - t1),
            (format!("apply{sfx}"), t3 - t2),
            (format!("{TOTAL}{sfx}"), t3 - t0),
        ])
    })
}

/// Times `f`, adding its duration to `sample` under `name`.
fn timed<T>(sample: &mut Sample, name: &str, f: impl FnOnce() -> T) -> T {
    let t = Instant::now();
    let v = f();
    sample.push((name.to_owned(), t.elapsed()));
    v
}

/// The same init taken apart: the reads `HostFacts::gather` makes, timed one by one, then
/// `HostFacts::gather` itself (timed too; the plan is made from its facts, so this stays the
/// real init whatever netcore reads), then `plan`, then the plan applied one step at a time
/// through `init::apply`. The reads are idempotent, so doing them twice changes nothing.
pub fn breakdown(backend: Backend, inputs: &Inputs, run: usize) -> Result<(Sample, NetnsHandle)> {
    let Inputs {
        config,
        resolv_conf,
        firewall,
    } = inputs.clone();
    in_fresh_netns(move || {
        let mut link = open_link(backend)?;
        let mut fw = open_firewall(&firewall, true)?;
        let mut sys = ProcSys::new();
        let mut s = Sample::new();

        timed(&mut s, "gather: list links", || link.links())?;
        timed(&mut s, "gather: list routes", || link.routes_v4())?;
        timed(&mut s, "gather: read ip_forward", || sys.read(IP_FORWARD))?;
        for (name, table) in [
            ("gather: save filter", Table::Filter),
            ("gather: save nat", Table::Nat),
        ] {
            let text = timed(&mut s, name, || fw.save(table))?;
            timed(&mut s, &format!("gather: parse {table} listing"), || {
                Listing::parse(table, &text)
            })?;
        }
        let gather_sum: Duration = s.iter().map(|(_, d)| *d).sum();
        let facts = timed(
            &mut s,
            "gather (HostFacts::gather, after the reads)",
            || HostFacts::gather(&config, &resolv_conf, &mut *link, &mut *fw, &mut sys),
        )?;

        let plan = timed(&mut s, "plan", || {
            init::plan(&config, &facts, mac_seed(run))
        })?;
        check_plan(&plan, Scenario::Fresh)?;
        let mut apply_sum = Duration::ZERO;
        let mut bridge_sum = Duration::ZERO;
        for step in &plan.steps {
            let one = Plan {
                steps: vec![step.clone()],
                ..plan.clone()
            };
            let label = step_label(step);
            let t = Instant::now();
            let applied = init::apply(&one, &mut *link, &mut *fw, &mut sys)?;
            let d = t.elapsed();
            ensure!(
                applied.done.len() == 1 && applied.warnings.is_empty(),
                "step {label} did not take effect: {applied:?}"
            );
            if label.starts_with("bridge: ") {
                bridge_sum += d;
            }
            apply_sum += d;
            s.push((label, d));
        }
        let plan_time = s
            .iter()
            .find(|(n, _)| n == "plan")
            .map_or(Duration::ZERO, |(_, d)| *d);
        s.push(("bridge (create+addr+up)".into(), bridge_sum));
        s.push(("gather (sum of reads)".into(), gather_sum));
        s.push(("apply (sum of steps)".into(), apply_sum));
        s.push(("total (sum)".into(), gather_sum + plan_time + apply_sum));
        Ok(s)
    })
}

/// Whole process: `dockerd-net init` spawned from a thread already in a fresh namespace (the
/// child inherits it), timed from spawn to exit. The data root is made before and removed
/// after the timed region. With `verify`, the bridge is looked up in the namespace afterwards.
pub fn whole_process(
    bin: &Path,
    scenario: Scenario,
    data_root: PathBuf,
    verify: bool,
    firewall: &str,
) -> Result<(Duration, NetnsHandle)> {
    let bin = bin.to_path_buf();
    let firewall = firewall.to_owned();
    in_fresh_netns(move || {
        scenario.prepare()?;
        if data_root.exists() {
            std::fs::remove_dir_all(&data_root)
                .with_context(|| format!("removing {}", data_root.display()))?;
        }
        std::fs::create_dir_all(&data_root)
            .with_context(|| format!("creating {}", data_root.display()))?;
        let mut cmd = Command::new(&bin);
        cmd.arg("--data-root")
            .arg(&data_root)
            .args(["--iptables-backend", &firewall])
            .arg("init")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());

        let t = Instant::now();
        let out = cmd
            .spawn()
            .with_context(|| format!("spawning {}", bin.display()))?
            .wait_with_output()?;
        let elapsed = t.elapsed();

        if !out.status.success() {
            bail!(
                "{} init failed ({}): {}",
                bin.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        // Its summary says what it did: the whole init, forwarding included or not.
        let said = String::from_utf8_lossy(&out.stdout);
        let forwarding =
            said.contains("ip_forward to 1") && said.contains("FORWARD policy to DROP");
        ensure!(
            said.contains("bridge: created docker0")
                && said.contains("applied to tables nat, filter")
                && forwarding == (scenario == Scenario::Fresh),
            "{} init ({scenario:?}) did not do the expected init; it said:\n{said}",
            bin.display()
        );
        ensure!(
            data_root.join("init.json").is_file(),
            "{} init exited 0 but wrote no record",
            bin.display()
        );
        if verify {
            ensure!(
                testns::ip_link("docker0").is_some(),
                "{} init exited 0 but docker0 is not in its namespace",
                bin.display()
            );
        }
        std::fs::remove_dir_all(&data_root)
            .with_context(|| format!("removing {}", data_root.display()))?;
        Ok(elapsed)
    })
}

/// `MEMBARRIER_CMD_QUERY` and `MEMBARRIER_CMD_GLOBAL` (linux/membarrier.h).
const MEMBARRIER_CMD_QUERY: libc::c_int = 0;
const MEMBARRIER_CMD_GLOBAL: libc::c_int = 1;

/// How long one RCU grace period takes on this machine, for context: `membarrier(GLOBAL)` is
/// implemented as a single `synchronize_rcu()`. nf_tables makes the process that changed a
/// base chain's policy wait for one when it closes its netlink socket (see the report), so
/// this is the floor under `iptables -P FORWARD DROP`. `None` where membarrier is missing.
pub fn rcu_grace_period() -> Option<Duration> {
    // SAFETY: membarrier takes two integers and touches no memory; QUERY only returns a mask.
    let mask = unsafe { libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_QUERY, 0) };
    if mask < 0 || mask & libc::c_long::from(MEMBARRIER_CMD_GLOBAL) == 0 {
        return None;
    }
    let t = Instant::now();
    // SAFETY: as above; GLOBAL waits for a grace period and changes no state of ours.
    let rc = unsafe { libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_GLOBAL, 0) };
    (rc == 0).then(|| t.elapsed())
}
