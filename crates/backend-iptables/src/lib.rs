//! [`FirewallOps`] through the iptables command-line tools.
//!
//! - [`FirewallOps::save`] runs `iptables-save -t <table>`.
//! - [`FirewallOps::apply`] runs **one** `iptables-restore --noflush --wait` per batch, so a
//!   batch is applied atomically: the kernel (legacy: one table replace; nf_tables: one
//!   transaction) gets all of its lines or none of them. Docker 1.x ran one `iptables` process
//!   per rule, so a failure half-way left half a rule set behind.
//! - [`FirewallOps::set_policy`] runs `iptables -w -t <table> -P <chain> <policy>`.
//!
//! # Flavours
//!
//! iptables 1.8 ships two programs with the same command line: the `nf_tables` one and the
//! `legacy` (x_tables) one, which write to different kernel subsystems. Rules written with one
//! are invisible to the other, so the daemon must use the one the rest of the host uses.
//! [`Iptables::detect`] does what Docker does, using the host's plain `iptables`,
//! `iptables-save`, `iptables-restore` (whichever flavour the distribution's alternatives
//! point at) and reading `iptables --version` to record which flavour that is.
//! [`Iptables::new`] forces a flavour and therefore names its programs explicitly:
//! `iptables-nft*` or `iptables-legacy*`, because the plain names may point at the other one.
//!
//! # Locking and namespaces
//!
//! The legacy tools serialise on the file `/run/xtables.lock`, which is shared by every
//! network namespace on the machine (it lives in the filesystem, not the namespace). Without
//! `--wait` a second writer fails at once with "Another app is currently holding the xtables
//! lock"; Docker 1.x `pkg/iptables` probes `iptables --wait -L -n` at start-up
//! (`supportsXlock`) and prefixes every call with `--wait` when it works, for this reason.
//! Every write here passes it. The nf_tables tools accept and ignore it.
//!
//! Each call spawns its program from the calling thread, and a child inherits that thread's
//! network namespace: a thread that entered a namespace edits that namespace's tables.
//!
//! # Finding the programs
//!
//! Programs are looked up on `PATH` and then in `/usr/sbin` and `/sbin` (Docker used
//! `exec.LookPath`, which fails for a non-root user whose `PATH` lacks the sbin directories).
//! [`Iptables::with_search_dirs`] replaces that list, e.g. to point tests at a directory of
//! stand-ins or at an empty one. A missing program is [`OpsErrorKind::Unavailable`] with the
//! text `iptables not found: ...`, after Docker's `Iptables not found`.
//!
//! The `iptables` crate is not used: it runs one `iptables` process per rule with no batch
//! form, and the one place it would help (`exists`, i.e. `iptables -C`) is replaced here by
//! reading [`FirewallOps::save`] once and deciding in netcore.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

use netcore::firewall::{Batch, Policy, Table};
use netcore::ops::{FirewallOps, OpsError, OpsErrorKind};

/// Which iptables implementation to drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Flavor {
    /// iptables over nf_tables (`iptables v1.8.9 (nf_tables)`).
    Nft,
    /// iptables over the x_tables kernel API (`iptables v1.8.9 (legacy)`).
    Legacy,
}

impl Flavor {
    /// The flavour a `iptables --version` line names. Versions before 1.8 had only the x_tables
    /// implementation and print no flavour (`iptables v1.6.1`), so they are `Legacy`.
    /// `None` when the text is not an iptables version line at all.
    pub fn from_version(text: &str) -> Option<Flavor> {
        let line = text
            .lines()
            .map(str::trim)
            .find(|l| l.starts_with("iptables v"))?;
        if line.contains("(nf_tables)") {
            Some(Flavor::Nft)
        } else {
            // "(legacy)", or no marker at all before 1.8.
            Some(Flavor::Legacy)
        }
    }

    /// The programs that always mean this flavour.
    pub fn tools(self) -> Tools {
        match self {
            Flavor::Nft => Tools {
                iptables: "iptables-nft".into(),
                save: "iptables-nft-save".into(),
                restore: "iptables-nft-restore".into(),
            },
            Flavor::Legacy => Tools {
                iptables: "iptables-legacy".into(),
                save: "iptables-legacy-save".into(),
                restore: "iptables-legacy-restore".into(),
            },
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Flavor::Nft => "nf_tables",
            Flavor::Legacy => "legacy",
        }
    }
}

impl fmt::Display for Flavor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The three program names a flavour uses (looked up in the search directories).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tools {
    pub iptables: String,
    pub save: String,
    pub restore: String,
}

impl Tools {
    /// The host's default programs, whatever flavour they are.
    pub fn plain() -> Self {
        Tools {
            iptables: "iptables".into(),
            save: "iptables-save".into(),
            restore: "iptables-restore".into(),
        }
    }
}

/// Why an iptables program failed; the `source` of the [`OpsError`]s this crate returns.
#[derive(Debug, thiserror::Error)]
pub enum IptablesError {
    /// The program is in none of the search directories.
    #[error("iptables not found: {program} is not in {}", display_dirs(.searched))]
    NotFound {
        program: String,
        searched: Vec<PathBuf>,
    },
    /// The program could not be started or talked to.
    #[error("iptables failed: {command}: {source}")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    /// The program exited non-zero. `stderr` is iptables' own message, which for
    /// `iptables-restore` ends with `Error occurred at line: N`.
    #[error("iptables failed: {command}: {} ({status}){}", .stderr.trim(), display_line(.failed_line))]
    Failed {
        command: String,
        status: ExitStatus,
        stderr: String,
        /// For a restore, the batch line iptables-restore reported, when it reported one and
        /// it is a line of the batch (not the `*table` header or `COMMIT`).
        failed_line: Option<String>,
    },
    /// `iptables --version` printed something that is not an iptables version.
    #[error("cannot tell the iptables flavour from {command}: {output:?}")]
    UnknownVersion { command: String, output: String },
}

fn display_dirs(dirs: &[PathBuf]) -> String {
    let dirs: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    format!("[{}]", dirs.join(", "))
}

fn display_line(line: &Option<String>) -> String {
    match line {
        Some(l) => format!("; failing line: {l}"),
        None => String::new(),
    }
}

/// [`FirewallOps`] through `iptables-save`, `iptables-restore` and `iptables`.
#[derive(Debug, Clone)]
pub struct Iptables {
    flavor: Flavor,
    tools: Tools,
    dirs: Vec<PathBuf>,
}

impl Iptables {
    /// The given flavour's explicitly named programs (`iptables-nft*` / `iptables-legacy*`),
    /// looked up on `PATH`, `/usr/sbin` and `/sbin`. Nothing is run or looked up yet: a missing
    /// program shows as [`OpsErrorKind::Unavailable`] from the first operation.
    pub fn new(flavor: Flavor) -> Self {
        Self {
            flavor,
            tools: flavor.tools(),
            dirs: default_search_dirs(),
        }
    }

    /// The host's default `iptables`, `iptables-save` and `iptables-restore`, as Docker uses
    /// them, with the flavour `iptables --version` reports.
    pub fn detect() -> Result<Self, OpsError> {
        Self::detect_in(default_search_dirs())
    }

    /// [`Iptables::detect`] looking for the programs only in `dirs`.
    pub fn detect_in(dirs: Vec<PathBuf>) -> Result<Self, OpsError> {
        let tools = Tools::plain();
        let op = "detect iptables flavour";
        let program = find_program(&tools.iptables, &dirs)
            .map_err(|e| OpsError::new(op, OpsErrorKind::Unavailable, e))?;
        // Distributions switch flavours with a symlink (update-alternatives): reading where it
        // points costs a syscall where `--version` costs a process (~1.5 ms).
        if let Some(flavor) = flavor_from_link(&program) {
            tracing::debug!(%flavor, program = %program.display(), "iptables flavour from its link");
            return Ok(Self {
                flavor,
                tools,
                dirs,
            });
        }
        let out = run(&program, &["--version"], None).map_err(|e| classify(op, e))?;
        let flavor = Flavor::from_version(&out).ok_or_else(|| {
            OpsError::new(
                op,
                OpsErrorKind::Unavailable,
                IptablesError::UnknownVersion {
                    command: format!("{} --version", program.display()),
                    output: out.clone(),
                },
            )
        })?;
        tracing::debug!(%flavor, program = %program.display(), "detected iptables flavour");
        Ok(Self {
            flavor,
            tools,
            dirs,
        })
    }

    /// Looks for the programs only in `dirs`, in order (no `PATH`).
    pub fn with_search_dirs<I, P>(mut self, dirs: I) -> Self
    where
        I: IntoIterator<Item = P>,
        P: Into<PathBuf>,
    {
        self.dirs = dirs.into_iter().map(Into::into).collect();
        self
    }

    /// Uses other program names (e.g. a distribution's own naming).
    pub fn with_tools(mut self, tools: Tools) -> Self {
        self.tools = tools;
        self
    }

    pub fn flavor(&self) -> Flavor {
        self.flavor
    }

    pub fn tools(&self) -> &Tools {
        &self.tools
    }

    pub fn search_dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    fn program(&self, name: &str, op: &str) -> Result<PathBuf, OpsError> {
        find_program(name, &self.dirs).map_err(|e| OpsError::new(op, OpsErrorKind::Unavailable, e))
    }
}

impl FirewallOps for Iptables {
    fn save(&mut self, table: Table) -> Result<String, OpsError> {
        let op = format!("save iptables table {table}");
        let program = self.program(&self.tools.save, &op)?;
        let out = run(&program, &["-t", table.name()], None).map_err(|e| classify(&op, e))?;
        if out.trim().is_empty() {
            // Some setups print nothing for a table the kernel has not instantiated yet (legacy
            // without its module loaded, nf_tables without the table). That is the same state
            // as an empty table, which is what callers compare against.
            return Ok(empty_listing(table));
        }
        Ok(out)
    }

    fn apply(&mut self, batch: &Batch) -> Result<(), OpsError> {
        let table = batch.table;
        let op = format!("apply iptables batch to table {table}");
        let program = self.program(&self.tools.restore, &op)?;
        let input = restore_input(batch);
        run(&program, &["--noflush", "--wait"], Some(&input))
            .map(drop)
            .map_err(|e| classify(&op, with_failed_line(e, batch)))
    }

    /// One `iptables-save` for all tables (one process instead of one per table), split
    /// by its `*table` sections.
    fn save_tables(&mut self, tables: &[Table]) -> Result<Vec<String>, OpsError> {
        let op = "save iptables tables";
        let program = self.program(&self.tools.save, op)?;
        let out = run(&program, &[], None).map_err(|e| classify(op, e))?;
        Ok(tables
            .iter()
            .map(|t| section(&out, *t).unwrap_or_else(|| empty_listing(*t)))
            .collect())
    }

    /// One `iptables-restore --noflush` for all batches: each `*table ... COMMIT` section is
    /// committed on its own (nf_tables may commit them together).
    fn apply_batches(&mut self, batches: &[Batch]) -> Result<(), OpsError> {
        if let [one] = batches {
            return self.apply(one);
        }
        let names: Vec<&str> = batches.iter().map(|b| b.table.name()).collect();
        let op = format!("apply iptables batches to tables {}", names.join(", "));
        let program = self.program(&self.tools.restore, &op)?;
        let input: String = batches.iter().map(restore_input).collect();
        run(&program, &["--noflush", "--wait"], Some(&input))
            .map(drop)
            .map_err(|e| classify(&op, with_failed_line_in(e, batches)))
    }

    fn set_policy(&mut self, table: Table, chain: &str, policy: Policy) -> Result<(), OpsError> {
        let op = format!("set policy of {table} {chain} to {}", policy.name());
        let program = self.program(&self.tools.iptables, &op)?;
        run(
            &program,
            &["-w", "-t", table.name(), "-P", chain, policy.name()],
            None,
        )
        .map(drop)
        .map_err(|e| classify(&op, e))
    }
}

/// The flavour named by the file an `iptables` symlink finally points to
/// (`xtables-nft-multi` / `iptables-nft` or `xtables-legacy-multi` / `iptables-legacy`);
/// `None` when it is not a link or the name says neither.
fn flavor_from_link(program: &Path) -> Option<Flavor> {
    std::fs::symlink_metadata(program)
        .ok()
        .filter(|m| m.file_type().is_symlink())?;
    let target = std::fs::canonicalize(program).ok()?;
    let name = target.file_name()?.to_str()?;
    if name.contains("nft") {
        Some(Flavor::Nft)
    } else if name.contains("legacy") {
        Some(Flavor::Legacy)
    } else {
        None
    }
}

/// The input of `iptables-restore --noflush` for a batch.
pub fn restore_input(batch: &Batch) -> String {
    let mut input = format!("*{}\n", batch.table.name());
    for line in &batch.lines {
        input.push_str(line);
        input.push('\n');
    }
    input.push_str("COMMIT\n");
    input
}

/// What `iptables-save -t <table>` prints for a table with only its built-in chains, all
/// accepting (the kernel's defaults).
pub fn empty_listing(table: Table) -> String {
    let chains: &[&str] = match table {
        Table::Filter => &["INPUT", "FORWARD", "OUTPUT"],
        Table::Nat => &["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"],
    };
    let mut text = format!("*{}\n", table.name());
    for chain in chains {
        text.push_str(&format!(":{chain} ACCEPT [0:0]\n"));
    }
    text.push_str("COMMIT\n");
    text
}

/// `PATH`'s directories, then `/usr/sbin` and `/sbin`.
pub fn default_search_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    for extra in ["/usr/sbin", "/sbin"] {
        let extra = PathBuf::from(extra);
        if !dirs.contains(&extra) {
            dirs.push(extra);
        }
    }
    dirs
}

/// The first executable regular file called `name` in `dirs`.
pub fn find_program(name: &str, dirs: &[PathBuf]) -> Result<PathBuf, IptablesError> {
    use std::os::unix::fs::PermissionsExt;
    dirs.iter()
        .map(|d| d.join(name))
        .find(|p| {
            // metadata follows symlinks, so the alternatives links resolve to their target.
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .ok_or_else(|| IptablesError::NotFound {
            program: name.to_owned(),
            searched: dirs.to_vec(),
        })
}

/// Runs a program, feeding it `stdin` if given; its stdout on success.
fn run(program: &Path, args: &[&str], stdin: Option<&str>) -> Result<String, IptablesError> {
    let command = format!("{} {}", program.display(), args.join(" "));
    match stdin {
        Some(input) => tracing::debug!(%command, stdin = %input, "running"),
        None => tracing::debug!(%command, "running"),
    }
    let spawn_err = |source| IptablesError::Spawn {
        command: command.clone(),
        source,
    };
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_err)?;

    // Feed stdin from another thread while this one collects the output, so neither side can
    // block on a full pipe. iptables-restore stops reading at the first bad line and exits;
    // the resulting EPIPE is expected, and the exit status below reports the real error.
    let output = std::thread::scope(|scope| {
        let writer = match (stdin, child.stdin.take()) {
            (Some(input), Some(mut pipe)) => {
                Some(scope.spawn(move || match pipe.write_all(input.as_bytes()) {
                    Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e),
                    _ => Ok(()),
                }))
            }
            _ => None,
        };
        let output = child.wait_with_output();
        let written = match writer.map(|w| w.join()) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(std::io::Error::other("stdin writer thread panicked")),
            None => Ok(()),
        };
        output.and_then(|o| written.map(|()| o))
    })
    .map_err(spawn_err)?;

    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        tracing::debug!(%command, status = %output.status, %stderr, "failed");
        return Err(IptablesError::Failed {
            command,
            status: output.status,
            stderr,
            failed_line: None,
        });
    }
    Ok(stdout)
}

/// Adds the batch line iptables-restore names in `Error occurred at line: N` to the error.
/// Line 1 of the input is `*table`, so input line N is batch line N-2 (0-based).
/// The `*table ... COMMIT` section of one table in a full `iptables-save` output.
fn section(save: &str, table: Table) -> Option<String> {
    let header = format!("*{}", table.name());
    let mut out = String::new();
    let mut inside = false;
    for line in save.lines() {
        if !inside {
            inside = line.trim_end() == header;
        }
        if inside {
            out.push_str(line);
            out.push('\n');
            if line.trim_end() == "COMMIT" {
                return Some(out);
            }
        }
    }
    None
}

/// Like [`with_failed_line`] for an input made of several batches, each with its own
/// `*table` header and `COMMIT` line.
fn with_failed_line_in(err: IptablesError, batches: &[Batch]) -> IptablesError {
    match err {
        IptablesError::Failed {
            command,
            status,
            stderr,
            failed_line: None,
        } => {
            let failed_line = restore_error_line(&stderr).and_then(|n| {
                let mut first = 1; // the line number of this batch's `*table` header
                for b in batches {
                    let last = first + b.lines.len() + 1; // its COMMIT
                    if (first + 1..last).contains(&n) {
                        return b.lines.get(n - first - 1).cloned();
                    }
                    first = last + 1;
                }
                None
            });
            IptablesError::Failed {
                command,
                status,
                stderr,
                failed_line,
            }
        }
        other => other,
    }
}

fn with_failed_line(err: IptablesError, batch: &Batch) -> IptablesError {
    with_failed_line_in(err, std::slice::from_ref(batch))
}

/// The input line number in iptables-restore's `Error occurred at line: N`.
pub fn restore_error_line(stderr: &str) -> Option<usize> {
    stderr.lines().find_map(|l| {
        l.trim()
            .strip_prefix("Error occurred at line:")
            .and_then(|n| n.trim().parse().ok())
    })
}

/// Wraps a failure with its kind: a non-root caller gets iptables' "Permission denied (you
/// must be root)", which netcore treats differently from a bad rule.
fn classify(op: &str, err: IptablesError) -> OpsError {
    let kind = match &err {
        IptablesError::NotFound { .. } => OpsErrorKind::Unavailable,
        IptablesError::Spawn { source, .. } => match source.kind() {
            std::io::ErrorKind::NotFound => OpsErrorKind::Unavailable,
            std::io::ErrorKind::PermissionDenied => OpsErrorKind::PermissionDenied,
            _ => OpsErrorKind::Other,
        },
        IptablesError::Failed { stderr, .. } if stderr.contains("Permission denied") => {
            OpsErrorKind::PermissionDenied
        }
        IptablesError::Failed { .. } => OpsErrorKind::Other,
        IptablesError::UnknownVersion { .. } => OpsErrorKind::Unavailable,
    };
    OpsError::new(op, kind, err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flavour_from_version_line() {
        assert_eq!(
            Flavor::from_version("iptables v1.8.9 (nf_tables)\n"),
            Some(Flavor::Nft)
        );
        assert_eq!(
            Flavor::from_version("iptables v1.8.9 (legacy)\n"),
            Some(Flavor::Legacy)
        );
        // Before 1.8 there was only x_tables and no marker.
        assert_eq!(
            Flavor::from_version("iptables v1.6.1\n"),
            Some(Flavor::Legacy)
        );
        assert_eq!(Flavor::from_version("bash: iptables: not found"), None);
        assert_eq!(Flavor::from_version(""), None);
    }

    #[test]
    fn restore_input_wraps_the_lines() {
        let batch = Batch {
            table: Table::Nat,
            lines: vec![":DOCKER - [0:0]".into(), "-A DOCKER -j RETURN".into()],
        };
        assert_eq!(
            restore_input(&batch),
            "*nat\n:DOCKER - [0:0]\n-A DOCKER -j RETURN\nCOMMIT\n"
        );
    }

    #[test]
    fn empty_listings_have_the_builtin_chains() {
        assert_eq!(
            empty_listing(Table::Filter),
            "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n"
        );
        assert_eq!(
            empty_listing(Table::Nat),
            "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
             :POSTROUTING ACCEPT [0:0]\nCOMMIT\n"
        );
    }

    #[test]
    fn restore_error_line_is_parsed() {
        let stderr = "iptables-restore v1.8.9 (legacy): Couldn't load target `BOGUS'\n\n\
                      Error occurred at line: 4\nTry `iptables-restore -h' for more information.\n";
        assert_eq!(restore_error_line(stderr), Some(4));
        assert_eq!(restore_error_line("iptables-restore: line 3 failed"), None);
    }

    #[test]
    fn failed_line_maps_back_to_the_batch() {
        let batch = Batch {
            table: Table::Filter,
            lines: vec![":A - [0:0]".into(), "-A A -j BOGUS".into()],
        };
        let failed = |n: usize| IptablesError::Failed {
            command: "iptables-restore --noflush --wait".into(),
            status: std::process::ExitStatus::default(),
            stderr: format!("oops\nError occurred at line: {n}\n"),
            failed_line: None,
        };
        let line_of = |e: IptablesError| match e {
            IptablesError::Failed { failed_line, .. } => failed_line,
            _ => None,
        };
        // Input: 1 "*filter", 2 ":A", 3 "-A A -j BOGUS", 4 "COMMIT".
        assert_eq!(
            line_of(with_failed_line(failed(3), &batch)).as_deref(),
            Some("-A A -j BOGUS")
        );
        assert_eq!(line_of(with_failed_line(failed(1), &batch)), None);
        assert_eq!(line_of(with_failed_line(failed(4), &batch)), None);
    }

    #[test]
    fn permission_denied_is_classified() {
        let err = IptablesError::Failed {
            command: "iptables-save -t filter".into(),
            status: std::process::ExitStatus::default(),
            stderr: "iptables-save v1.8.9 (nf_tables): Could not fetch rule set generation id: \
                     Permission denied (you must be root)\n"
                .into(),
            failed_line: None,
        };
        assert_eq!(classify("save", err).kind, OpsErrorKind::PermissionDenied);
    }

    #[test]
    fn default_search_adds_sbin() {
        let dirs = default_search_dirs();
        assert!(dirs.contains(&PathBuf::from("/usr/sbin")));
        assert!(dirs.contains(&PathBuf::from("/sbin")));
    }
}
