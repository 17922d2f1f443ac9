//! The command line: Docker's flags, the subcommands, and what they print.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use netcore::config::{Config, NetworkMode};
use netcore::init::{self, HostFacts, Plan};
use netcore::teardown::{self, InitRecord};

use crate::backend::{self, Backends};
use crate::flags::{self, NetFlags};
use crate::record;

#[derive(Debug, Parser)]
#[command(
    name = "dockerd-net",
    version = backend::VERSION,
    about = "Docker's bridge networking, reimplemented: builds docker0, its address, \
             firewall rules and forwarding exactly as the Docker daemon does.",
    after_help = "Flags use Docker's spellings; boolean flags take =false (e.g. --icc=false)."
)]
struct Cli {
    #[command(flatten)]
    net: NetFlags,

    /// Read network options from a daemon.json (Docker's keys); a key also given as a flag is an error
    #[arg(long, global = true, value_name = "FILE")]
    config_file: Option<PathBuf>,

    /// Where dockerd-net keeps what it changed (for teardown)
    #[arg(long, global = true, default_value = "/var/lib/dockerd-net")]
    data_root: PathBuf,

    /// The resolv.conf whose nameservers a new bridge's subnet must not overlap
    #[arg(long, global = true, default_value = "/etc/resolv.conf")]
    resolv_conf: PathBuf,

    /// Which iptables to drive: auto (what `iptables` is on this host), nft or legacy
    #[arg(long, global = true, default_value = "auto", value_parser = ["auto", "nft", "legacy"])]
    iptables_backend: String,

    /// Log level (error, warn, info, debug, trace); RUST_LOG overrides it
    #[arg(long, global = true, default_value = "info")]
    log_level: String,

    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Build the bridge network once (bridge, address, rules, forwarding) and exit
    Init {
        /// Print the plan and change nothing
        #[arg(long)]
        dry_run: bool,
    },
    /// Remove what init made: our rules and chains, and the bridge, forwarding and FORWARD
    /// policy if init changed them
    Teardown {
        /// Print the plan and change nothing
        #[arg(long)]
        dry_run: bool,
    },
}

/// The binary's entry point.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.log_level);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dockerd-net: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn run(cli: Cli) -> Result<()> {
    let mode = flags::resolve(&cli.net, cli.config_file.as_deref())?;
    match cli.cmd {
        Cmd::Init { dry_run } => match mode {
            NetworkMode::Disabled => {
                println!("networking disabled (--bridge=none): nothing to do");
                Ok(())
            }
            NetworkMode::Bridge(config) => cmd_init(&cli_paths(&cli), &config, dry_run),
        },
        Cmd::Teardown { dry_run } => cmd_teardown(&cli_paths(&cli), dry_run),
    }
}

struct Paths {
    data_root: PathBuf,
    resolv_conf: PathBuf,
    iptables_backend: String,
}

fn cli_paths(cli: &Cli) -> Paths {
    Paths {
        data_root: cli.data_root.clone(),
        resolv_conf: cli.resolv_conf.clone(),
        iptables_backend: cli.iptables_backend.clone(),
    }
}

fn read_resolv_conf(path: &Path) -> String {
    // Docker ignores an unreadable resolv.conf: the nameserver list is then empty.
    std::fs::read_to_string(path).unwrap_or_else(|e| {
        tracing::debug!(
            "cannot read {}: {e}; assuming no nameservers",
            path.display()
        );
        String::new()
    })
}

fn cmd_init(paths: &Paths, config: &Config, dry_run: bool) -> Result<()> {
    let mut b = Backends::open(&paths.iptables_backend, config.iptables)?;
    let resolv = read_resolv_conf(&paths.resolv_conf);
    let facts = HostFacts::gather(config, &resolv, &mut *b.link, &mut *b.fw, &mut *b.sys)
        .context("reading the host")?;
    let plan = init::plan(config, &facts, rand::random()).context("planning init")?;
    if dry_run {
        print_plan("init", &plan);
        return Ok(());
    }
    let earlier = record::load(&paths.data_root)?;
    let applied = init::apply(&plan, &mut *b.link, &mut *b.fw, &mut *b.sys)
        .context("init failed; the host was restored to its previous state")?;
    let params = config
        .iptables
        .then(|| netcore::firewall::BridgeFirewall::from_config(config, &plan.bridge, plan.addr));
    let rec = InitRecord::after_init(&plan, &applied, params, earlier.as_ref());
    if let Err(e) = record::save(&paths.data_root, &rec) {
        // Without the record, teardown could not know what to undo: undo now instead.
        let errors = init::rollback(&applied.done, &mut *b.link, &mut *b.fw, &mut *b.sys);
        for err in &errors {
            tracing::error!("rollback: {err}");
        }
        return Err(e.context("init was rolled back because its record could not be saved"));
    }
    print_summary(&plan, &applied);
    Ok(())
}

fn cmd_teardown(paths: &Paths, dry_run: bool) -> Result<()> {
    let Some(rec) = record::load(&paths.data_root)? else {
        println!(
            "nothing to tear down: no init record in {}",
            paths.data_root.display()
        );
        return Ok(());
    };
    let read_all = Config {
        iptables: rec.firewall.is_some(),
        ..Config::default()
    };
    let mut b = Backends::open(&paths.iptables_backend, read_all.iptables)?;
    let facts = HostFacts::gather(&read_all, "", &mut *b.link, &mut *b.fw, &mut *b.sys)
        .context("reading the host")?;
    let plan = teardown::plan(&rec, &facts);
    if dry_run {
        print_plan("teardown", &plan);
        return Ok(());
    }
    let applied = init::apply(&plan, &mut *b.link, &mut *b.fw, &mut *b.sys)
        .context("teardown failed; the host was restored to its state before teardown")?;
    record::remove(&paths.data_root)?;
    for step in &applied.done {
        println!("{}", step.to_string().trim_end());
    }
    println!("teardown of {} complete", rec.bridge);
    Ok(())
}

fn print_plan(what: &str, plan: &Plan) {
    println!(
        "{what} plan for bridge {} ({}, subnet {}):",
        plan.bridge,
        plan.addr,
        plan.subnet()
    );
    if plan.steps.is_empty() {
        println!("  nothing to change: the host is already configured");
    }
    for (i, step) in plan.steps.iter().enumerate() {
        println!("  {}. {}", i + 1, step.to_string().trim_end());
    }
}

fn print_summary(plan: &Plan, applied: &init::Applied) {
    let verb = if plan.creates_bridge {
        "created"
    } else {
        "using existing"
    };
    println!("bridge: {verb} {}", plan.bridge);
    println!("address: {}", plan.addr);
    println!("subnet: {}", plan.subnet());
    let (mut batches, mut lines) = (0, 0);
    for step in &applied.done {
        match step {
            init::Step::Firewall(batch) => {
                batches += 1;
                lines += batch.lines.len();
            }
            init::Step::IpForward { .. } | init::Step::ForwardPolicy { .. } => {
                println!("{}", step);
            }
            _ => {}
        }
    }
    if batches == 0 {
        println!("firewall: nothing to add");
    } else {
        println!("firewall: {lines} lines applied in {batches} iptables-restore batch(es)");
    }
    for w in &applied.warnings {
        println!("warning: {w}");
    }
}
