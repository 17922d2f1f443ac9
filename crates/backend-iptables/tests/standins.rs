//! Iptables against stand-in programs in a temporary directory (no root needed): the exact
//! command lines and input, error passing, and a missing program.

// Test code: a failed step should panic with its error, which is what unwrap does.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::sync::Mutex;

use backend_iptables::{Flavor, Iptables};
use netcore::firewall::{Batch, Policy, Table};
use netcore::ops::{FirewallOps, OpsErrorKind};
use testns::TempDir;

/// Writing a script while another thread of this process forks can leave the script open for
/// writing in the child for a moment, and exec then fails with ETXTBSY. The tests that write
/// and run scripts take this lock, so none of them forks while another writes.
static SCRIPTS: Mutex<()> = Mutex::new(());

/// A directory for stand-in programs.
fn temp_dir() -> TempDir {
    TempDir::new("backend-iptables-test")
}

/// An executable shell script called `name` in `dir`.
fn script(dir: &TempDir, name: &str, body: &str) {
    let path = dir.path().join(name);
    fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
}

fn read(dir: &TempDir, name: &str) -> String {
    fs::read_to_string(dir.path().join(name)).unwrap()
}

fn batch(table: Table, lines: &[&str]) -> Batch {
    Batch {
        table,
        lines: lines.iter().map(|l| l.to_string()).collect(),
    }
}

#[test]
fn apply_runs_one_restore_with_noflush_wait_and_the_batch_on_stdin() {
    let _guard = SCRIPTS.lock().unwrap_or_else(|e| e.into_inner());
    let dir = temp_dir();
    let log = dir.path().join("log");
    script(
        &dir,
        "iptables-legacy-restore",
        &format!(
            "echo \"$@\" >> '{0}.args'\ncat >> '{0}.stdin'",
            log.display()
        ),
    );
    let mut ipt = Iptables::new(Flavor::Legacy).with_search_dirs([dir.path()]);
    ipt.apply(&batch(
        Table::Nat,
        &[
            ":DOCKER - [0:0]",
            "-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE",
        ],
    ))
    .unwrap();
    assert_eq!(read(&dir, "log.args"), "--noflush --wait\n");
    assert_eq!(
        read(&dir, "log.stdin"),
        "*nat\n:DOCKER - [0:0]\n-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE\nCOMMIT\n"
    );
}

#[test]
fn save_and_set_policy_command_lines() {
    let _guard = SCRIPTS.lock().unwrap_or_else(|e| e.into_inner());
    let dir = temp_dir();
    let log = dir.path().join("log");
    script(
        &dir,
        "iptables-nft-save",
        &format!(
            "echo \"$@\" >> '{}'\necho '*nat'\necho 'COMMIT'",
            log.display()
        ),
    );
    script(
        &dir,
        "iptables-nft",
        &format!("echo \"$@\" >> '{}'", log.display()),
    );
    let mut ipt = Iptables::new(Flavor::Nft).with_search_dirs([dir.path()]);
    assert_eq!(ipt.save(Table::Nat).unwrap(), "*nat\nCOMMIT\n");
    ipt.set_policy(Table::Filter, "FORWARD", Policy::Drop)
        .unwrap();
    assert_eq!(read(&dir, "log"), "-t nat\n-w -t filter -P FORWARD DROP\n");
}

#[test]
fn empty_save_output_is_an_empty_listing() {
    let _guard = SCRIPTS.lock().unwrap_or_else(|e| e.into_inner());
    let dir = temp_dir();
    script(&dir, "iptables-legacy-save", "exit 0");
    let mut ipt = Iptables::new(Flavor::Legacy).with_search_dirs([dir.path()]);
    assert_eq!(
        ipt.save(Table::Filter).unwrap(),
        "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n"
    );
    assert_eq!(
        ipt.save(Table::Nat).unwrap(),
        "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
         :POSTROUTING ACCEPT [0:0]\nCOMMIT\n"
    );
}

#[test]
fn failures_carry_the_table_and_iptables_stderr() {
    let _guard = SCRIPTS.lock().unwrap_or_else(|e| e.into_inner());
    let dir = temp_dir();
    script(
        &dir,
        "iptables-legacy-restore",
        "cat > /dev/null\necho \"iptables-restore: Bad argument \\`--bogus'\" >&2\n\
         echo 'Error occurred at line: 3' >&2\nexit 2",
    );
    script(
        &dir,
        "iptables-legacy-save",
        "echo 'iptables-save v1.8.9 (legacy): cannot initialize iptables table `nat`: Permission denied (you must be root)' >&2\nexit 1",
    );
    let mut ipt = Iptables::new(Flavor::Legacy).with_search_dirs([dir.path()]);

    let err = ipt
        .apply(&batch(Table::Filter, &[":A - [0:0]", "-A A --bogus"]))
        .unwrap_err();
    assert_eq!(err.kind, OpsErrorKind::Other);
    let text = err.to_string();
    assert!(text.contains("table filter"), "{text}");
    assert!(
        text.starts_with("apply iptables batch to table filter: iptables failed: "),
        "{text}"
    );
    assert!(text.contains("Bad argument `--bogus'"), "{text}");
    assert!(text.contains("failing line: -A A --bogus"), "{text}");

    let err = ipt.save(Table::Nat).unwrap_err();
    assert_eq!(err.kind, OpsErrorKind::PermissionDenied, "{err}");
    assert!(err.to_string().contains("table nat"), "{err}");
}

#[test]
fn restore_that_stops_reading_early_still_reports_its_error() {
    let _guard = SCRIPTS.lock().unwrap_or_else(|e| e.into_inner());
    let dir = temp_dir();
    // Exits without reading stdin, as iptables-restore does at a bad first line; a large
    // batch then meets a closed pipe, which must not hide the real error.
    script(
        &dir,
        "iptables-legacy-restore",
        "echo 'Error occurred at line: 2' >&2\nexit 1",
    );
    let lines: Vec<String> = (0..20_000)
        .map(|i| format!("-A FORWARD -s 10.0.{}.{}/32 -j ACCEPT", i / 256, i % 256))
        .collect();
    let mut ipt = Iptables::new(Flavor::Legacy).with_search_dirs([dir.path()]);
    let err = ipt
        .apply(&Batch {
            table: Table::Filter,
            lines,
        })
        .unwrap_err();
    assert_eq!(err.kind, OpsErrorKind::Other);
    assert!(
        err.to_string()
            .contains("failing line: -A FORWARD -s 10.0.0.0/32 -j ACCEPT"),
        "{err}"
    );
}

#[test]
fn detect_reads_the_flavour_from_iptables_version() {
    let _guard = SCRIPTS.lock().unwrap_or_else(|e| e.into_inner());
    for (printed, flavor) in [
        ("iptables v1.8.9 (nf_tables)", Flavor::Nft),
        ("iptables v1.8.9 (legacy)", Flavor::Legacy),
    ] {
        let dir = temp_dir();
        script(
            &dir,
            "iptables",
            &format!("[ \"$1\" = --version ] && echo '{printed}'"),
        );
        let ipt = Iptables::detect_in(vec![dir.path().to_owned()]).unwrap();
        assert_eq!(ipt.flavor(), flavor);
        // Detected means the host's own programs, whatever they point at.
        assert_eq!(ipt.tools().save, "iptables-save");
        assert_eq!(ipt.tools().restore, "iptables-restore");
        assert_eq!(ipt.tools().iptables, "iptables");
    }

    let dir = temp_dir();
    script(&dir, "iptables", "echo 'something else'");
    let err = Iptables::detect_in(vec![dir.path().to_owned()]).unwrap_err();
    assert_eq!(err.kind, OpsErrorKind::Unavailable);
    assert!(err.to_string().contains("something else"), "{err}");
}

#[test]
fn missing_programs_are_unavailable() {
    let empty = temp_dir();
    // A file with the right name but no execute bit does not count either.
    fs::write(empty.path().join("iptables-legacy-save"), "#!/bin/sh\n").unwrap();

    for flavor in [Flavor::Nft, Flavor::Legacy] {
        let tools = flavor.tools();
        let mut ipt = Iptables::new(flavor).with_search_dirs([empty.path()]);
        let checks = [
            (ipt.save(Table::Filter).unwrap_err(), tools.save.clone()),
            (
                ipt.apply(&batch(Table::Filter, &[":A - [0:0]"]))
                    .unwrap_err(),
                tools.restore.clone(),
            ),
            (
                ipt.set_policy(Table::Filter, "FORWARD", Policy::Drop)
                    .unwrap_err(),
                tools.iptables.clone(),
            ),
        ];
        for (err, program) in checks {
            assert_eq!(err.kind, OpsErrorKind::Unavailable, "{err}");
            let text = err.to_string();
            assert!(text.contains("iptables not found: "), "{text}");
            assert!(text.contains(&format!("{program} is not in")), "{text}");
            assert!(text.contains(&empty.path().display().to_string()), "{text}");
        }
    }

    let err = Iptables::detect_in(vec![empty.path().to_owned()]).unwrap_err();
    assert_eq!(err.kind, OpsErrorKind::Unavailable);
    assert!(
        err.to_string()
            .contains("iptables not found: iptables is not in"),
        "{err}"
    );
}

#[test]
fn new_names_the_flavours_programs() {
    let nft = Iptables::new(Flavor::Nft);
    assert_eq!(nft.tools().restore, "iptables-nft-restore");
    assert_eq!(nft.tools().save, "iptables-nft-save");
    assert_eq!(nft.tools().iptables, "iptables-nft");
    let legacy = Iptables::new(Flavor::Legacy);
    assert_eq!(legacy.tools().restore, "iptables-legacy-restore");
    assert_eq!(legacy.tools().save, "iptables-legacy-save");
    assert_eq!(legacy.tools().iptables, "iptables-legacy");
    assert_eq!(legacy.flavor(), Flavor::Legacy);
}
