//! Iptables against the real kernel, once per flavour, each case in a fresh network namespace.
//! The result is read back with the flavour's own `iptables-save`, run directly (not through
//! the backend), so a backend that reports success without doing the work fails here.

// Test code: a failed step should panic with its error, which is what unwrap does.
#![allow(clippy::unwrap_used)]

use backend_iptables::{Flavor, Iptables};
use netcore::firewall::{Batch, Policy, Table};
use netcore::ops::FirewallOps;

const FLAVORS: [Flavor; 2] = [Flavor::Nft, Flavor::Legacy];

/// `iptables-save -t <table>` of the flavour, in the calling thread's namespace, without the
/// `# Generated/Completed` comments (they carry a timestamp).
fn saved(flavor: Flavor, table: Table) -> String {
    let save = flavor.tools().save;
    strip_comments(&testns::run(&[&save, "-t", table.name()]))
}

fn strip_comments(text: &str) -> String {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect()
}

fn batch(table: Table, lines: &[&str]) -> Batch {
    Batch {
        table,
        lines: lines.iter().map(|l| l.to_string()).collect(),
    }
}

const FRESH_FILTER: &str =
    "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n";
const FRESH_NAT: &str = "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n\
                         :OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\nCOMMIT\n";

#[test]
fn apply_creates_exactly_the_batch() {
    if !testns::can_run_kernel_tests("apply_creates_exactly_the_batch") {
        return;
    }
    for flavor in FLAVORS {
        testns::in_netns(move || {
            let mut ipt = Iptables::new(flavor);
            // Written the way iptables-save prints them, so the listing must match verbatim.
            let filter = [
                ":DOCKER - [0:0]",
                "-A FORWARD -o docker0 -j DOCKER",
                "-A FORWARD -o docker0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
                "-A DOCKER -d 172.17.0.2/32 ! -i docker0 -o docker0 -p tcp -m tcp --dport 80 -j ACCEPT",
            ];
            ipt.apply(&batch(Table::Filter, &filter)).unwrap();
            assert_eq!(
                saved(flavor, Table::Filter),
                "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
                 :DOCKER - [0:0]\n\
                 -A FORWARD -o docker0 -j DOCKER\n\
                 -A FORWARD -o docker0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n\
                 -A DOCKER -d 172.17.0.2/32 ! -i docker0 -o docker0 -p tcp -m tcp --dport 80 -j ACCEPT\n\
                 COMMIT\n",
                "{flavor}"
            );

            let nat = [
                ":DOCKER - [0:0]",
                "-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER",
                "-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE",
            ];
            ipt.apply(&batch(Table::Nat, &nat)).unwrap();
            assert_eq!(
                saved(flavor, Table::Nat),
                "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
                 :POSTROUTING ACCEPT [0:0]\n:DOCKER - [0:0]\n\
                 -A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER\n\
                 -A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE\n\
                 COMMIT\n",
                "{flavor}"
            );

            // --noflush: a second batch edits, it does not replace.
            ipt.apply(&batch(
                Table::Filter,
                &[
                    "-D FORWARD -o docker0 -j DOCKER",
                    "-I FORWARD 1 -i docker0 -o docker0 -j ACCEPT",
                ],
            ))
            .unwrap();
            let after = saved(flavor, Table::Filter);
            let rules: Vec<&str> = after.lines().filter(|l| l.starts_with("-A")).collect();
            assert_eq!(
                rules,
                [
                    "-A FORWARD -i docker0 -o docker0 -j ACCEPT",
                    "-A FORWARD -o docker0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
                    "-A DOCKER -d 172.17.0.2/32 ! -i docker0 -o docker0 -p tcp -m tcp --dport 80 -j ACCEPT",
                ],
                "{flavor}"
            );
        });
    }
}

#[test]
fn a_bad_line_applies_nothing_and_is_named() {
    if !testns::can_run_kernel_tests("a_bad_line_applies_nothing_and_is_named") {
        return;
    }
    for flavor in FLAVORS {
        testns::in_netns(move || {
            let mut ipt = Iptables::new(flavor);

            // A line iptables-restore cannot parse: reported at its own line (input line 4,
            // after "*filter" and two good lines), which the error quotes back.
            let err = ipt
                .apply(&batch(
                    Table::Filter,
                    &[
                        ":DOCKER - [0:0]",
                        "-A DOCKER -j ACCEPT",
                        "-A DOCKER --no-such-option",
                        "-A FORWARD -j DOCKER",
                    ],
                ))
                .unwrap_err();
            let text = err.to_string();
            assert!(text.contains("table filter"), "{flavor}: {text}");
            assert!(
                text.contains("Error occurred at line: 4"),
                "{flavor}: {text}"
            );
            assert!(
                text.contains("failing line: -A DOCKER --no-such-option"),
                "{flavor}: {text}"
            );
            assert_eq!(
                saved(flavor, Table::Filter),
                FRESH_FILTER,
                "{flavor}: partly applied"
            );

            // A line that parses but the kernel rejects (a jump to a chain that does not
            // exist): still nothing of the batch lands, and iptables' reason is in the error.
            let err = ipt
                .apply(&batch(
                    Table::Nat,
                    &[
                        ":DOCKER - [0:0]",
                        "-A PREROUTING -j DOCKER",
                        "-A DOCKER -j NOSUCHCHAIN",
                    ],
                ))
                .unwrap_err();
            let text = err.to_string();
            assert!(text.contains("table nat"), "{flavor}: {text}");
            assert!(text.contains("NOSUCHCHAIN"), "{flavor}: {text}");
            assert!(text.contains("Error occurred at line:"), "{flavor}: {text}");
            assert_eq!(
                saved(flavor, Table::Nat),
                FRESH_NAT,
                "{flavor}: partly applied"
            );
        });
    }
}

#[test]
fn save_of_a_fresh_namespace_lists_the_builtin_chains() {
    if !testns::can_run_kernel_tests("save_of_a_fresh_namespace_lists_the_builtin_chains") {
        return;
    }
    for flavor in FLAVORS {
        testns::in_netns(move || {
            let mut ipt = Iptables::new(flavor);
            assert_eq!(
                strip_comments(&ipt.save(Table::Filter).unwrap()),
                FRESH_FILTER,
                "{flavor}"
            );
            assert_eq!(
                strip_comments(&ipt.save(Table::Nat).unwrap()),
                FRESH_NAT,
                "{flavor}"
            );
        });
    }
}

#[test]
fn save_returns_what_was_applied() {
    if !testns::can_run_kernel_tests("save_returns_what_was_applied") {
        return;
    }
    for flavor in FLAVORS {
        testns::in_netns(move || {
            let mut ipt = Iptables::new(flavor);
            ipt.apply(&batch(
                Table::Nat,
                &[
                    ":DOCKER - [0:0]",
                    "-A OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j DOCKER",
                ],
            ))
            .unwrap();
            let listing = ipt.save(Table::Nat).unwrap();
            assert_eq!(
                strip_comments(&listing),
                saved(flavor, Table::Nat),
                "{flavor}"
            );
            assert!(
                listing.contains(
                    "-A OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j DOCKER\n"
                ),
                "{flavor}: {listing}"
            );
        });
    }
}

#[test]
fn set_policy_shows_in_iptables_save() {
    if !testns::can_run_kernel_tests("set_policy_shows_in_iptables_save") {
        return;
    }
    for flavor in FLAVORS {
        testns::in_netns(move || {
            let mut ipt = Iptables::new(flavor);
            ipt.set_policy(Table::Filter, "FORWARD", Policy::Drop)
                .unwrap();
            assert_eq!(
                saved(flavor, Table::Filter),
                "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n",
                "{flavor}"
            );
            ipt.set_policy(Table::Filter, "FORWARD", Policy::Accept)
                .unwrap();
            assert_eq!(saved(flavor, Table::Filter), FRESH_FILTER, "{flavor}");

            // Only built-in chains have a policy; iptables' complaint comes back as an error.
            ipt.apply(&batch(Table::Filter, &[":DOCKER - [0:0]"]))
                .unwrap();
            let err = ipt
                .set_policy(Table::Filter, "DOCKER", Policy::Drop)
                .unwrap_err();
            assert!(err.to_string().contains("DOCKER"), "{flavor}: {err}");
        });
    }
}

/// The two flavours write to different kernel subsystems: what one applies, the other's save
/// does not show. This is why the flavour must match the host's.
#[test]
fn flavours_do_not_see_each_other() {
    if !testns::can_run_kernel_tests("flavours_do_not_see_each_other") {
        return;
    }
    testns::in_netns(|| {
        Iptables::new(Flavor::Legacy)
            .apply(&batch(Table::Filter, &[":LEGACYONLY - [0:0]"]))
            .unwrap();
        Iptables::new(Flavor::Nft)
            .apply(&batch(Table::Filter, &[":NFTONLY - [0:0]"]))
            .unwrap();
        let legacy = saved(Flavor::Legacy, Table::Filter);
        let nft = saved(Flavor::Nft, Table::Filter);
        assert!(
            legacy.contains(":LEGACYONLY") && !legacy.contains(":NFTONLY"),
            "{legacy}"
        );
        assert!(
            nft.contains(":NFTONLY") && !nft.contains(":LEGACYONLY"),
            "{nft}"
        );
    });
}

#[test]
fn detect_matches_the_host_iptables() {
    if !testns::can_run_kernel_tests("detect_matches_the_host_iptables") {
        return;
    }
    let version = testns::run(&["iptables", "--version"]);
    let ipt = Iptables::detect().unwrap();
    let expected = if version.contains("(nf_tables)") {
        Flavor::Nft
    } else {
        Flavor::Legacy
    };
    assert_eq!(ipt.flavor(), expected, "{version}");
    assert_eq!(ipt.tools().restore, "iptables-restore");
}

#[test]
fn batches_for_several_tables_go_in_one_restore_and_tables_come_back_in_one_save() {
    if !testns::can_run_kernel_tests("batches_for_several_tables") {
        return;
    }
    for flavor in FLAVORS {
        testns::in_netns(move || {
            let mut ipt = Iptables::new(flavor);
            let nat = batch(
                Table::Nat,
                &[
                    ":DOCKER - [0:0]",
                    "-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER",
                ],
            );
            let filter = batch(
                Table::Filter,
                &[":DOCKER - [0:0]", "-A FORWARD -o docker0 -j DOCKER"],
            );
            ipt.apply_batches(&[nat, filter]).unwrap();
            let direct = [saved(flavor, Table::Filter), saved(flavor, Table::Nat)];
            assert!(
                direct[0].contains("-A FORWARD -o docker0 -j DOCKER"),
                "{flavor}"
            );
            assert!(direct[1].contains("-A PREROUTING -m addrtype"), "{flavor}");
            let both = ipt.save_tables(&[Table::Filter, Table::Nat]).unwrap();
            assert_eq!(
                both.iter().map(|t| strip_comments(t)).collect::<Vec<_>>(),
                direct,
                "{flavor}"
            );

            // A bad line in the second table's batch: the error names it.
            let ok = batch(Table::Nat, &["-A DOCKER -j RETURN"]);
            let bad = batch(Table::Filter, &["-A DOCKER --no-such-option"]);
            let err = ipt.apply_batches(&[ok, bad]).unwrap_err().to_string();
            assert!(err.contains("--no-such-option"), "{flavor}: {err}");
        });
    }
}

#[test]
fn save_tables_fills_in_tables_the_kernel_does_not_have_yet() {
    if !testns::can_run_kernel_tests("save_tables_fills_in") {
        return;
    }
    for flavor in FLAVORS {
        testns::in_netns(move || {
            let mut ipt = Iptables::new(flavor);
            let both = ipt.save_tables(&[Table::Filter, Table::Nat]).unwrap();
            assert_eq!(strip_comments(&both[0]), FRESH_FILTER, "{flavor}");
            assert_eq!(strip_comments(&both[1]), FRESH_NAT, "{flavor}");
        });
    }
}
