//! One run of each kind, each in a network namespace of its own.
//!
//! A run happens on a new thread that calls `unshare(CLONE_NEWNET)` first: the kernel then
//! gives that thread (and only it) an empty namespace with just a down loopback, which is
//! what a freshly booted host looks like to init. Namespace creation is outside every timed
//! region; the namespace, its bridge and its rules vanish when the thread ends.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use backend_iptables::Iptables;
use backend_sysctl::ProcSys;
use netcore::config::Config;
use netcore::firewall::{Listing, Table};
use netcore::init::{self, HostFacts, Plan, Step};
use netcore::ops::{FirewallOps, IP_FORWARD, LinkOps, OpsError, SysctlOps};
use netcore::resolvconf;

/// A run's timings, by name, in the order they happened.
pub type Sample = Vec<(String, Duration)>;

/// The link backends, both compiled into this benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Netlink,
    Ioctl,
}

impl Backend {
    pub const ALL: [Backend; 2] = [Backend::Netlink, Backend::Ioctl];

    pub fn name(self) -> &'static str {
        match self {
            Backend::Netlink => "netlink",
            Backend::Ioctl => "ioctl",
        }
    }

    /// Opens the backend in the calling thread's namespace.
    fn open(self) -> Result<Box<dyn LinkOps>, OpsError> {
        Ok(match self {
            Backend::Netlink => Box::new(backend_netlink::NetlinkLinks::new()?),
            Backend::Ioctl => Box::new(backend_ioctl::IoctlLinks::new()?),
        })
    }
}

/// What every run starts from: the daemon's default configuration (docker0, iptables on,
/// ip-forward on) and the resolv.conf text, read once: `dockerd-net` reads it outside
/// `HostFacts::gather` too.
#[derive(Debug, Clone)]
pub struct Inputs {
    pub config: Config,
    pub resolv_conf: String,
}

/// The plan init makes for a fresh namespace, step by step. Every run checks its plan
/// against this, so a figure can never come from a partial init (say, a namespace that
/// already had the rules).
pub const FRESH_PLAN: [&str; 7] = [
    "bridge: create",
    "bridge: address",
    "bridge: up",
    "iptables-restore nat",
    "iptables-restore filter",
    "sysctl ip_forward=1",
    "iptables -P FORWARD DROP",
];

/// Runs `f` on a new thread that has just moved into a fresh network namespace.
pub fn in_fresh_netns<T, F>(f: F) -> Result<T>
where
    F: FnOnce() -> Result<T> + Send + 'static,
    T: Send + 'static,
{
    thread::Builder::new()
        .name("bench-netns".into())
        .spawn(move || {
            testns::unshare_net().context("unshare(CLONE_NEWNET) (the benchmark needs root)")?;
            f()
        })
        .context("spawning a benchmark thread")?
        .join()
        .map_err(|_| anyhow!("a benchmark thread panicked"))?
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
        Step::Firewall(batch) => format!("iptables-restore {}", batch.table),
        Step::IpForward { enable } => format!("sysctl ip_forward={}", u8::from(*enable)),
        Step::ForwardPolicy { policy, .. } => format!("iptables -P FORWARD {}", policy.name()),
        other => format!("{other}"),
    }
}

fn check_fresh_plan(plan: &Plan) -> Result<()> {
    let got: Vec<String> = plan.steps.iter().map(step_label).collect();
    ensure!(
        got == FRESH_PLAN,
        "init's plan in a fresh namespace was {got:?}, expected {FRESH_PLAN:?}: not a full init"
    );
    Ok(())
}

/// In-process: open the backends (timed apart), then `gather` + `plan` + `apply` exactly as
/// `dockerd-net init` wires them.
pub fn in_process(backend: Backend, inputs: &Inputs, run: usize) -> Result<Sample> {
    let Inputs {
        config,
        resolv_conf,
    } = inputs.clone();
    in_fresh_netns(move || {
        let t = Instant::now();
        let mut link = backend.open()?;
        let open_link = t.elapsed();
        // `auto`, as the binary's default: this runs `iptables --version` once.
        let t = Instant::now();
        let mut fw = Iptables::detect()?;
        let open_fw = t.elapsed();
        let mut sys = ProcSys::new();

        let t0 = Instant::now();
        let facts = HostFacts::gather(&config, &resolv_conf, &mut *link, &mut fw, &mut sys)?;
        let t1 = Instant::now();
        let plan = init::plan(&config, &facts, mac_seed(run))?;
        let t2 = Instant::now();
        let applied = init::apply(&plan, &mut *link, &mut fw, &mut sys)?;
        let t3 = Instant::now();

        check_fresh_plan(&plan)?;
        ensure!(
            applied.done.len() == plan.steps.len() && applied.warnings.is_empty(),
            "init did not apply every step: {applied:?}"
        );
        Ok(vec![
            (format!("open: {} backend", backend.name()), open_link),
            ("open: iptables detect".into(), open_fw),
            ("gather".into(), t1 - t0),
            ("plan".into(), t2 - t1),
            ("apply".into(), t3 - t2),
            ("total: gather+plan+apply".into(), t3 - t0),
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

/// The same init taken apart: `gather`'s reads one by one (rebuilding the facts the way
/// `HostFacts::gather` does), then `plan`, then the plan applied one step at a time through
/// `init::apply`. With `verify`, the rebuilt facts are checked against `HostFacts::gather`
/// (untimed), so the parts are known to be the whole.
pub fn breakdown(backend: Backend, inputs: &Inputs, run: usize, verify: bool) -> Result<Sample> {
    let Inputs {
        config,
        resolv_conf,
    } = inputs.clone();
    in_fresh_netns(move || {
        let mut link = backend.open()?;
        let mut fw = Iptables::detect()?;
        let mut sys = ProcSys::new();
        let mut s = Sample::new();

        let links = timed(&mut s, "gather: list links", || link.links())?;
        let routes = timed(&mut s, "gather: list routes", || link.routes_v4())?;
        let ip_forward = timed(&mut s, "gather: read ip_forward", || sys.read(IP_FORWARD))
            .ok()
            .map(|v| v.trim() == "1");
        let mut save = |name: &str, table: Table| -> Result<Listing> {
            let text = timed(&mut s, name, || fw.save(table))?;
            Ok(Listing::parse(table, &text)?)
        };
        let filter = save("gather: iptables-save filter", Table::Filter)?;
        let nat = save("gather: iptables-save nat", Table::Nat)?;
        let facts = HostFacts {
            links,
            routes,
            nameservers: resolvconf::nameservers(&resolv_conf),
            ip_forward,
            filter: Some(filter),
            nat: Some(nat),
        };
        if verify {
            let real = HostFacts::gather(&config, &resolv_conf, &mut *link, &mut fw, &mut sys)?;
            ensure!(
                real == facts,
                "the step-by-step reads differ from HostFacts::gather: {facts:?} vs {real:?}"
            );
        }
        let gather_sum: Duration = s.iter().map(|(_, d)| *d).sum();

        let plan = timed(&mut s, "plan", || {
            init::plan(&config, &facts, mac_seed(run))
        })?;
        check_fresh_plan(&plan)?;
        let mut apply_sum = Duration::ZERO;
        let mut bridge_sum = Duration::ZERO;
        for step in &plan.steps {
            let one = Plan {
                steps: vec![step.clone()],
                ..plan.clone()
            };
            let label = step_label(step);
            let t = Instant::now();
            let applied = init::apply(&one, &mut *link, &mut fw, &mut sys)?;
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
pub fn whole_process(bin: &Path, data_root: PathBuf, verify: bool) -> Result<Duration> {
    let bin = bin.to_path_buf();
    in_fresh_netns(move || {
        if data_root.exists() {
            std::fs::remove_dir_all(&data_root)
                .with_context(|| format!("removing {}", data_root.display()))?;
        }
        std::fs::create_dir_all(&data_root)
            .with_context(|| format!("creating {}", data_root.display()))?;
        let mut cmd = Command::new(&bin);
        cmd.arg("--data-root")
            .arg(&data_root)
            .arg("init")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
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
