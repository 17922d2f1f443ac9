//! Contributor commands: `cargo xtask <ci|deps|bench|demo>`.
//!
//! `ci` is exactly what CI runs (`.ci/run` calls it), so a green `cargo xtask ci` on a
//! contributor's machine means a green CI.

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context, Result, bail};

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  ci            everything CI checks: system packages (as root), fmt, clippy -D warnings,
                all tests (kernel tests in private network namespaces when root), the
                unprivileged run of netcore's and backend-mock's tests, the ioctl-only
                build, and cargo-deny (licenses, bans, sources)
  deps          install the system packages the tests need (iptables, iproute2, nftables), as root
  bench [what]  benchmarks; what = netcore (default: subnet, ipam, ports) | init | attach |
                handlers | all
  demo          build dockerd-net, run `init` in a throwaway network namespace, show the
                bridge and rules it made, then tear it down
";

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("ci") => ci(),
        Some("deps") => deps(),
        Some("bench") => bench(args.get(1).map(String::as_str).unwrap_or("netcore")),
        Some("demo") => demo(),
        Some("-h" | "--help" | "help") | None => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Some(other) => {
            eprint!("unknown command {other:?}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn have(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd} >/dev/null 2>&1")])
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Runs a command from the workspace root, echoing it, failing on a non-zero exit.
fn run(cmd: &mut Command) -> Result<()> {
    cmd.current_dir(root());
    eprintln!("+ {cmd:?}");
    let status = cmd.status().with_context(|| format!("spawn {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

fn cargo() -> Command {
    Command::new(env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

/// The packages the kernel tests need. Installed only when missing, only as root.
fn deps() -> Result<()> {
    let needed = [
        ("iptables-restore", "iptables"),
        ("ip", "iproute2"),
        ("setpriv", "util-linux"),
        // `nft list` is how the kernel tests read back --firewall-backend=nftables.
        ("nft", "nftables"),
    ];
    let missing: Vec<&str> = needed
        .iter()
        .filter(|(cmd, _)| !have(cmd))
        .map(|(_, pkg)| *pkg)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() {
        bail!(
            "missing system packages {missing:?}; install them as root (e.g. `sudo cargo xtask deps`)"
        );
    }
    run(Command::new("apt-get")
        .args(["install", "-y", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
    .or_else(|_| {
        // A fresh machine may have no package lists yet.
        run(Command::new("apt-get")
            .arg("update")
            .env("DEBIAN_FRONTEND", "noninteractive"))?;
        run(Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"))
    })
}

fn ci() -> Result<()> {
    let root_user = is_root();
    if root_user {
        deps()?;
    } else {
        eprintln!("xtask ci: not root: kernel tests will be skipped (CI runs them as root)");
    }
    run(cargo().args(["fmt", "--all", "--", "--check"]))?;
    run(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    // As root, kernel tests must run: DOCKERD_NET_ROOT_TESTS turns a skip into a failure.
    let mut test = cargo();
    test.args(["test", "--workspace"]);
    if root_user {
        test.env("DOCKERD_NET_ROOT_TESTS", "1");
    }
    run(&mut test)?;
    if root_user {
        unprivileged_tests()?;
    }
    ioctl_only_build()?;
    deny()
}

/// netcore's and backend-mock's tests must pass without any privilege: run their test
/// binaries as `nobody`.
fn unprivileged_tests() -> Result<()> {
    let out = cargo()
        .current_dir(root())
        .args([
            "test",
            "-p",
            "netcore",
            "-p",
            "backend-mock",
            "--no-run",
            "--message-format=json",
        ])
        .output()
        .context("cargo test --no-run")?;
    if !out.status.success() {
        bail!("building the test binaries failed");
    }
    let mut binaries = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        // {"reason":"compiler-artifact",...,"profile":{"test":true},...,"executable":"/path"}
        if line.contains("\"test\":true")
            && let Some(exe) = json_str(line, "executable")
        {
            binaries.push(exe);
        }
    }
    if binaries.is_empty() {
        bail!("found no test binaries for netcore and backend-mock");
    }
    for exe in binaries {
        // The binaries run from the crate dirs (golden files are found via CARGO_MANIFEST_DIR
        // at compile time), and must be readable by nobody.
        run(Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--reset-env",
            ])
            .arg(&exe)
            .env("HOME", "/tmp"))?;
    }
    Ok(())
}

fn json_str(line: &str, key: &str) -> Option<String> {
    let pat = format!("\"{key}\":\"");
    let start = line.find(&pat)? + pat.len();
    let end = line[start..].find('"')? + start;
    Some(line[start..end].to_owned())
}

/// A distributor choosing the ioctl backend must get a binary without rtnetlink: without
/// the daemon (`--features ioctl`: init, teardown, the client) also without tokio; with it
/// (`--features ioctl,daemon`) tokio is there for the API server only.
fn ioctl_only_build() -> Result<()> {
    for (features, forbidden) in [
        ("ioctl", &["rtnetlink ", "netlink-proto ", "tokio "][..]),
        ("ioctl,daemon", &["rtnetlink ", "netlink-proto "][..]),
    ] {
        run(cargo().args([
            "build",
            "-p",
            "dockerd-net",
            "--no-default-features",
            "--features",
            features,
        ]))?;
        let out = cargo()
            .current_dir(root())
            .args([
                "tree",
                "-p",
                "dockerd-net",
                "--no-default-features",
                "--features",
                features,
                "-e",
                "normal",
                "--prefix",
                "none",
            ])
            .output()
            .context("cargo tree")?;
        if !out.status.success() {
            bail!(
                "cargo tree failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let tree = String::from_utf8_lossy(&out.stdout);
        for crate_ in forbidden {
            if tree.lines().any(|l| l.starts_with(crate_)) {
                bail!(
                    "the build with --features {features} pulls in {}",
                    crate_.trim()
                );
            }
        }
        eprintln!("build with --features {features}: none of {forbidden:?} inside");
    }
    Ok(())
}

fn deny() -> Result<()> {
    if !have("cargo-deny") {
        eprintln!("cargo-deny not found: installing it (cargo install --locked cargo-deny)");
        if let Err(e) = run(cargo().args(["install", "--locked", "cargo-deny"])) {
            // The registry may be unreachable on a contributor's machine; CI has it.
            eprintln!("xtask ci: cargo-deny could not be installed ({e:#}); skipping it");
            return Ok(());
        }
    }
    run(cargo().args(["deny", "check", "licenses", "bans", "sources"]))
}

fn bench(what: &str) -> Result<()> {
    match what {
        "netcore" => run(cargo().args(["bench", "-p", "netcore"])),
        "init" => {
            // Anything after `bench init` (e.g. `--runs 50`, `--docker-runs 0`) is bench-init's.
            let extra: Vec<String> = env::args().skip(3).collect();
            run(cargo()
                .args(["run", "--release", "-p", "bench-init", "--"])
                .args(&extra))
        }
        "attach" => {
            // Anything after `bench attach` (e.g. `--max 100`, `--no-peers`) is bench-attach's.
            let extra: Vec<String> = env::args().skip(3).collect();
            run(cargo()
                .args(["run", "--release", "-p", "bench-attach", "--"])
                .args(&extra))
        }
        "handlers" => {
            // Anything after `bench handlers` (e.g. `--rounds 100`, `--containers 1,1000`) is
            // bench-handlers'.
            let extra: Vec<String> = env::args().skip(3).collect();
            run(cargo()
                .args(["run", "--release", "-p", "bench-handlers", "--"])
                .args(&extra))
        }
        "all" => {
            bench("netcore")?;
            bench("init")?;
            bench("attach")?;
            bench("handlers")
        }
        other => bail!("unknown benchmark {other:?} (netcore, init, attach, handlers, all)"),
    }
}

fn demo() -> Result<()> {
    run(cargo().args(["build", "--release", "-p", "dockerd-net"]))?;
    let bin = root().join("target/release/dockerd-net");
    // The record goes to a throwaway directory too, not the host's /var/lib/dockerd-net.
    let data = env::temp_dir().join(format!("dockerd-net-demo-{}", std::process::id()));
    let script = format!(
        r#"set -e
ip link set lo up
bin="{bin} --data-root {data}"
echo '== dockerd-net init (in a throwaway network namespace) =='
$bin init
echo
echo '== ip addr show docker0 =='
ip addr show docker0
echo
echo '== iptables-save =='
iptables-save -t filter | grep -v '^#'
iptables-save -t nat | grep -v '^#'
echo
echo '== dockerd-net teardown =='
$bin teardown
rm -rf {data}
echo
echo '== after teardown =='
ip -br link
iptables-save | grep -v '^#'
"#,
        bin = bin.display(),
        data = data.display()
    );
    // `unshare -n -m`: a private network namespace (and mount namespace, so nothing of
    // ours is visible outside); it vanishes with the shell.
    run(Command::new("unshare").args(["-n", "-m", "sh", "-c", &script]))
}
