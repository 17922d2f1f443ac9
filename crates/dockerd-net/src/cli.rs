//! The command line: Docker's flags, the subcommands, and what they print.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use netcore::config::{Config, NetworkMode};
use netcore::firewall::Table;
use netcore::handlers::Network;
use netcore::init::{self, HostFacts, Plan};
use netcore::ops::REAP_GROUP;
use netcore::teardown;

use crate::api;
use crate::backend::{self, Backends};
use crate::client::{self, ClientCmd};
use crate::daemon::{self, reconcile, store, sys};
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

    /// Where dockerd-net keeps its state (allocations, and what init changed, for teardown)
    #[arg(long, global = true, default_value = "/var/lib/dockerd-net")]
    data_root: PathBuf,

    /// The resolv.conf whose nameservers a new bridge's subnet must not overlap
    #[arg(long, global = true, default_value = "/etc/resolv.conf")]
    resolv_conf: PathBuf,

    /// Which iptables to drive: auto (what `iptables` is on this host), nft (nf_tables,
    /// changed over netlink from this process), nft-restore (nf_tables through the
    /// iptables-nft programs) or legacy
    #[arg(long, global = true, default_value = "auto", value_parser = ["auto", "nft", "nft-restore", "legacy"])]
    iptables_backend: String,

    /// Log level (error, warn, info, debug, trace); RUST_LOG overrides it
    #[arg(long, global = true, default_value = "info")]
    log_level: String,

    /// The API socket, as Docker spells it: unix:///path/to.sock (only Unix sockets)
    #[arg(short = 'H', long, global = true, default_value = api::DEFAULT_HOST, value_name = "URL")]
    host: String,

    /// Client commands: print the daemon's answers as JSON
    #[arg(long, global = true)]
    json: bool,

    /// Without a command, dockerd-net runs the daemon.
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run the daemon (also what dockerd-net does without a command): init, then serve the
    /// API on the socket until SIGTERM/SIGINT
    Daemon,
    /// Build the bridge network once (bridge, address, rules, forwarding) and exit
    Init {
        /// Print the plan and change nothing
        #[arg(long)]
        dry_run: bool,
    },
    /// Remove what init and the daemon made: the recorded containers' veths and rules, our
    /// chains, and the bridge, forwarding and FORWARD policy if init changed them (stop the
    /// daemon first)
    Teardown {
        /// Print the plan and change nothing
        #[arg(long)]
        dry_run: bool,
    },
    #[command(flatten)]
    Client(ClientCmd),
}

/// The binary's entry point.
pub fn main() -> ExitCode {
    let mut cli = Cli::parse();
    init_logging(&cli.log_level);
    // Client commands talk to a running daemon: no flags or daemon.json to resolve.
    let result = match cli.cmd.take() {
        Some(Cmd::Client(cmd)) => client::run(&cli.host, cmd, cli.json),
        cmd => run(cli, cmd),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // Like the docker CLI: "Error response from daemon: ..." stands on its own.
        Err(e) if e.downcast_ref::<client::ClientError>().is_some() => {
            eprintln!("{}", error_chain(&e));
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("dockerd-net: {}", error_chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes, `: `-separated, each cause only once: our error types print
/// their source in their own message (so a bare `to_string()` is complete), which anyhow's
/// `{:#}` would otherwise repeat at every level.
pub fn error_chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

fn init_logging(level: &str) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

fn run(cli: Cli, cmd: Option<Cmd>) -> Result<()> {
    // Only `unix://` is served: the API has no authentication, so it must not be reachable
    // over TCP (Docker's `-H tcp://` without TLS is a classic hole).
    let socket = client::parse_host(&cli.host)?;
    let mode = flags::resolve(&cli.net, cli.config_file.as_deref())?;
    match cmd {
        Some(Cmd::Client(_)) => bail!("internal: client commands are dispatched in main"),
        None | Some(Cmd::Daemon) => match mode {
            NetworkMode::Disabled => {
                bail!("networking is disabled (--bridge=none): the daemon has nothing to serve")
            }
            NetworkMode::Bridge(config) => cmd_daemon(&cli_paths(&cli), config, socket),
        },
        Some(Cmd::Init { dry_run }) => match mode {
            NetworkMode::Disabled => {
                println!("networking disabled (--bridge=none): nothing to do");
                Ok(())
            }
            NetworkMode::Bridge(config) => cmd_init(&cli_paths(&cli), &config, dry_run),
        },
        Some(Cmd::Teardown { dry_run }) => cmd_teardown(&cli_paths(&cli), dry_run),
    }
}

#[cfg(feature = "daemon")]
fn cmd_daemon(paths: &Paths, config: Config, socket: PathBuf) -> Result<()> {
    daemon::run(daemon::Options {
        setup: daemon::service::Setup {
            config,
            data_root: paths.data_root.clone(),
            resolv_conf: paths.resolv_conf.clone(),
            store: store::Options::default(),
        },
        socket,
        iptables_backend: paths.iptables_backend.clone(),
    })
}

#[cfg(not(feature = "daemon"))]
fn cmd_daemon(_: &Paths, _: Config, socket: PathBuf) -> Result<()> {
    bail!(
        "this dockerd-net was built without the daemon (cargo feature `daemon`): it cannot \
         serve {}; use `init`/`teardown`, or a build with the feature",
        socket.display()
    )
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

fn cmd_init(paths: &Paths, config: &Config, dry_run: bool) -> Result<()> {
    let mut b = Backends::open(
        &paths.iptables_backend,
        config.iptables,
        config.firewall_backend,
    )?;
    let resolv = daemon::host::read_resolv_conf(&paths.resolv_conf);
    if dry_run {
        let facts = HostFacts::gather(config, &resolv, &mut *b.link, &mut *b.fw, &mut *b.sys)
            .context("reading the host")?;
        let plan = init::plan(config, &facts, rand::random()).context("planning init")?;
        print_plan("init", &plan);
        return Ok(());
    }
    let done = daemon::host::init_host(&mut b, &paths.data_root, &resolv, config)?;
    print_summary(&done.plan, &done.applied);
    Ok(())
}

fn cmd_teardown(paths: &Paths, dry_run: bool) -> Result<()> {
    // A running daemon would keep serving (and re-apply rules on its next start) from a
    // state that teardown deletes.
    let _shared = sys::lock_data_root(&paths.data_root, sys::LockMode::SharedIfExists)
        .map_err(|e| e.context("stop the daemon before teardown"))?;
    let Some(rec) = record::load(&paths.data_root)? else {
        println!(
            "nothing to tear down: no init record in {}",
            paths.data_root.display()
        );
        return Ok(());
    };
    let read_all = Config {
        iptables: rec.firewall.is_some(),
        firewall_backend: rec.firewall_backend,
        ..Config::default()
    };
    let mut b = Backends::open(
        &paths.iptables_backend,
        read_all.iptables,
        read_all.firewall_backend,
    )?;
    let mut facts = HostFacts::gather(&read_all, "", &mut *b.link, &mut *b.fw, &mut *b.sys)
        .context("reading the host")?;

    // What the daemon allocated: its per-container rules go first (the DOCKER chains can
    // only be deleted once empty), then the state itself after a complete teardown.
    let fresh = Network::new(&Config::default(), &rec.bridge, rec.addr)
        .with_context(|| format!("bridge {} ({})", rec.bridge, rec.addr))?;
    let state = store::read_only(&paths.data_root, fresh);
    match &state {
        Ok(Some(saved)) => println!(
            "releasing {} container(s) recorded in {}",
            saved.network.endpoints().len(),
            paths.data_root.display()
        ),
        Ok(None) => {}
        Err(e) => println!(
            "warning: {e}; removing every container rule of {} found in the firewall instead",
            rec.bridge
        ),
    }
    let mut steps = Vec::new();
    if rec.firewall.is_some() {
        // Nothing wanted: every rule of ours for this bridge goes, whether the state
        // recorded it or a crash left it behind.
        for (table, listing) in [
            (Table::Nat, facts.nat.as_mut()),
            (Table::Filter, facts.filter.as_mut()),
        ] {
            let Some(listing) = listing else { continue };
            if let Some(batch) = reconcile::plan(table, listing, &[], &rec.bridge, rec.addr.trunc())
            {
                *listing = listing.apply(&batch)?;
                steps.push(init::Step::Firewall(batch));
            }
        }
    }
    let mut plan = teardown::plan(&rec, &facts);
    plan.steps.splice(0..0, steps);
    // The attached containers' host veths (issue 5): the bridge's deletion would only
    // unplug them. Those already gone (with their namespace) are skipped.
    let veths: Vec<(String, String)> = match &state {
        Ok(Some(saved)) => saved
            .attachments
            .iter()
            .filter(|(_, a)| facts.links.iter().any(|l| l.name == a.host_veth))
            .map(|(id, a)| (id.clone(), a.host_veth.clone()))
            .collect(),
        _ => Vec::new(),
    };
    if dry_run {
        print_plan("teardown", &plan);
        for (id, veth) in &veths {
            println!("  then delete {veth} (the host end of {id}'s veth pair)");
        }
        println!(
            "  then delete every veth a daemon unplugged and left to delete (group {REAP_GROUP})"
        );
        return Ok(());
    }
    let applied = init::apply(&plan, &mut *b.link, &mut *b.fw, &mut *b.sys)
        .context("teardown failed; the host was restored to its state before teardown")?;
    // After the plan, which a failure rolls back: deleting a veth cannot be undone. The
    // recorded veths are retired into the daemon's reap group, and the group deleted at
    // once: one RCU barrier in the kernel for all of them (each deletion on its own waits
    // for one), and the veths a stopped daemon retired but did not delete go with them.
    let mut failed = Vec::new();
    let mut retired = Vec::new();
    for (id, veth) in &veths {
        match b.link.retire_link(veth, REAP_GROUP) {
            Ok(()) => retired.push((id, veth)),
            Err(e) if e.kind == netcore::ops::OpsErrorKind::NotFound => {}
            Err(e) => failed.push(format!("{veth} ({id}'s veth): {e}")),
        }
    }
    match b.link.delete_group(REAP_GROUP) {
        Ok(()) => {
            for (id, veth) in retired {
                println!("deleted {veth} ({id}'s veth)");
            }
        }
        Err(e) => failed.push(format!("the retired veths (group {REAP_GROUP}): {e}")),
    }
    if !failed.is_empty() {
        // The state and the init record stay, so that teardown can be run again.
        anyhow::bail!(
            "teardown of {} done, but deleting veths failed: {}; run teardown again",
            rec.bridge,
            failed.join("; ")
        );
    }
    match state {
        Ok(_) => store::remove(&paths.data_root)?,
        Err(_) => {
            // Never delete what could not be read: keep it for inspection.
            for (from, to) in store::move_aside_all(&paths.data_root, "teardown") {
                println!("kept unreadable {} as {}", from.display(), to.display());
            }
        }
    }
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
    let (mut tables, mut lines) = (Vec::new(), 0);
    for step in &applied.done {
        match step {
            init::Step::Firewall(batch) => {
                tables.push(batch.table.name());
                lines += batch.lines.len();
            }
            init::Step::IpForward { .. } | init::Step::ForwardPolicy { .. } => {
                println!("{}", step);
            }
            _ => {}
        }
    }
    if tables.is_empty() {
        println!("firewall: nothing to add");
    } else {
        println!(
            "firewall: {lines} lines applied to tables {} (iptables-restore --noflush)",
            tables.join(", ")
        );
    }
    for w in &applied.warnings {
        println!("warning: {w}");
    }
}
