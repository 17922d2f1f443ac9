//! The native backend against the real kernel and the real iptables-nft, each case in a fresh
//! network namespace. What is checked is read back with `iptables-nft-save` or by dumping the
//! kernel's rules, never through the backend's own bookkeeping.

// Test code: a failed step should panic with its error, which is what unwrap does.
#![allow(clippy::unwrap_used)]

use backend_nftables::Nftables;
use backend_nftables::expr::{Key, encode, without_counters};
use backend_nftables::nl::{self, Attrs, Nfnl};
use netcore::firewall::{Batch, Policy, Table};
use netcore::ops::FirewallOps;

/// Every rule shape netcore writes (bridge rules for each option, ports, links, hairpin),
/// plus the address and interface forms a user's flags can produce.
const SHAPES: &[(&str, &str, &str)] = &[
    ("filter", "FORWARD", "-j DOCKER-USER"),
    (
        "filter",
        "FORWARD",
        "-o docker0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
    ),
    ("filter", "FORWARD", "-o docker0 -j DOCKER"),
    ("filter", "FORWARD", "-i docker0 ! -o docker0 -j ACCEPT"),
    ("filter", "FORWARD", "-i docker0 -o docker0 -j DROP"),
    ("filter", "FORWARD", "-i docker0 -o docker0 -j ACCEPT"),
    (
        "filter",
        "DOCKER-ISOLATION-STAGE-1",
        "-i docker0 ! -o docker0 -j DOCKER-ISOLATION-STAGE-2",
    ),
    ("filter", "DOCKER-ISOLATION-STAGE-1", "-j RETURN"),
    ("filter", "DOCKER-ISOLATION-STAGE-2", "-o docker0 -j DROP"),
    (
        "filter",
        "DOCKER",
        "-d 172.17.0.2/32 ! -i docker0 -o docker0 -p tcp -m tcp --dport 80 -j ACCEPT",
    ),
    (
        "filter",
        "DOCKER",
        "-d 172.17.0.3/32 ! -i docker0 -o docker0 -p udp -m udp --dport 53 -j ACCEPT",
    ),
    (
        "filter",
        "DOCKER",
        "-s 172.17.0.3/32 -d 172.17.0.2/32 -i docker0 -o docker0 -p tcp -m tcp --dport 5432 -j ACCEPT",
    ),
    (
        "filter",
        "DOCKER",
        "-s 172.17.0.2/32 -d 172.17.0.3/32 -i docker0 -o docker0 -p tcp -m tcp --sport 5432 -j ACCEPT",
    ),
    (
        "nat",
        "PREROUTING",
        "-m addrtype --dst-type LOCAL -j DOCKER",
    ),
    (
        "nat",
        "OUTPUT",
        "! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j DOCKER",
    ),
    ("nat", "OUTPUT", "-m addrtype --dst-type LOCAL -j DOCKER"),
    (
        "nat",
        "POSTROUTING",
        "-s 172.17.0.0/16 ! -o docker0 -j MASQUERADE",
    ),
    (
        "nat",
        "POSTROUTING",
        "-o docker0 -m addrtype --src-type LOCAL -j MASQUERADE",
    ),
    (
        "nat",
        "POSTROUTING",
        "-s 172.17.0.2/32 -d 172.17.0.2/32 -p tcp -m tcp --dport 80 -j MASQUERADE",
    ),
    (
        "nat",
        "POSTROUTING",
        "-s 10.1.16.0/20 ! -o br-+ -j MASQUERADE",
    ),
    (
        "nat",
        "POSTROUTING",
        "! -s 10.1.16.0/23 -o br-abcdef012345 -j MASQUERADE",
    ),
    ("nat", "DOCKER", "-i docker0 -j RETURN"),
    (
        "nat",
        "DOCKER",
        "! -i docker0 -p tcp -m tcp --dport 49153 -j DNAT --to-destination 172.17.0.2:80",
    ),
    (
        "nat",
        "DOCKER",
        "-d 127.0.0.1/32 ! -i docker0 -p udp -m udp --dport 8080 -j DNAT --to-destination 172.17.0.3:53",
    ),
    (
        "nat",
        "DOCKER",
        "-p tcp -m tcp --dport 49153 -j DNAT --to-destination 172.17.0.2:80",
    ),
];

fn table_of(name: &str) -> Table {
    Table::from_name(name).unwrap()
}

fn ipt(args: &[&str]) {
    testns::run(&[&["iptables-nft", "-w"], args].concat());
}

fn saved() -> String {
    testns::run(&["iptables-nft-save"])
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// The rules of a chain as the kernel dumps them: (handle, expressions without counters).
fn dumped(table: &str, chain: &str) -> Vec<(u64, Key)> {
    let mut s = Nfnl::open().unwrap();
    let mut a = Attrs::new();
    a.str(1, table).str(2, chain);
    s.dump(nl::NFT_MSG_GETRULE, &a)
        .unwrap()
        .iter()
        .filter(|r| nl::attr(r, 2).map(nl::str_of) == Some(chain))
        .map(|r| {
            let h = nl::attr(r, 3).and_then(nl::be64_of).unwrap();
            (h, without_counters(nl::attr(r, 4).unwrap_or(&[])))
        })
        .collect()
}

fn hex(v: &Key) -> String {
    v.iter()
        .map(|(n, d)| {
            let h: String = d.iter().map(|b| format!("{b:02x}")).collect();
            format!("  {n}: {h}\n")
        })
        .collect()
}

fn args(spec: &str) -> Vec<String> {
    spec.split_whitespace().map(str::to_owned).collect()
}

fn user_chains() {
    for c in [
        "DOCKER",
        "DOCKER-USER",
        "DOCKER-ISOLATION-STAGE-1",
        "DOCKER-ISOLATION-STAGE-2",
    ] {
        ipt(&["-t", "filter", "-N", c]);
    }
    ipt(&["-t", "nat", "-N", "DOCKER"]);
}

#[test]
fn every_rule_shape_is_encoded_as_iptables_nft_makes_it() {
    if !testns::can_run_kernel_tests("every_rule_shape_is_encoded_as_iptables_nft_makes_it") {
        return;
    }
    testns::in_netns(|| {
        user_chains();
        let mut bad = String::new();
        for (table, chain, spec) in SHAPES {
            let before = dumped(table, chain).len();
            let mut argv = vec!["-t", table, "-A", chain];
            argv.extend(spec.split_whitespace());
            ipt(&argv);
            let rules = dumped(table, chain);
            assert_eq!(rules.len(), before + 1, "{table} {chain} {spec}");
            let theirs = &rules.last().unwrap().1;
            let ours = without_counters(&encode(&args(spec)).unwrap().exprs.buf);
            if *theirs != ours {
                bad.push_str(&format!(
                    "-t {table} -A {chain} {spec}\n iptables-nft:\n{}\n ours:\n{}\n",
                    hex(theirs),
                    hex(&ours)
                ));
            }
        }
        assert!(bad.is_empty(), "encodings differ:\n{bad}");
    });
}

/// Splits an `iptables-restore` file into batches.
fn batches_of(text: &str) -> Vec<Batch> {
    let mut out = Vec::new();
    let mut cur: Option<Batch> = None;
    for l in text.lines() {
        if let Some(t) = l.strip_prefix('*') {
            cur = Some(Batch {
                table: table_of(t),
                lines: Vec::new(),
            });
        } else if l == "COMMIT" {
            out.push(cur.take().unwrap());
        } else if let Some(b) = cur.as_mut() {
            b.lines.push(l.to_owned());
        }
    }
    out
}

fn golden(name: &str) -> String {
    let dir = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../netcore/tests/golden/rules/"
    );
    std::fs::read_to_string(format!("{dir}{name}")).unwrap()
}

#[test]
fn the_init_rule_sets_save_exactly_like_iptables_restore() {
    if !testns::can_run_kernel_tests("the_init_rule_sets_save_exactly_like_iptables_restore") {
        return;
    }
    for icc in ["true", "false"] {
        for masq in ["true", "false"] {
            for hairpin in ["true", "false"] {
                let name = format!("icc-{icc}_ip-masq-{masq}_hairpin-{hairpin}");
                let restore = golden(&format!("{name}.restore"));
                let input = restore.clone();
                let by_iptables = testns::in_netns(move || {
                    let mut child = std::process::Command::new("iptables-nft-restore")
                        .arg("--noflush")
                        .stdin(std::process::Stdio::piped())
                        .spawn()
                        .unwrap();
                    use std::io::Write;
                    child
                        .stdin
                        .take()
                        .unwrap()
                        .write_all(input.as_bytes())
                        .unwrap();
                    assert!(child.wait().unwrap().success());
                    (
                        saved(),
                        dumped("filter", "FORWARD"),
                        dumped("nat", "POSTROUTING"),
                    )
                });
                let ours = testns::in_netns(move || {
                    let mut fw = Nftables::open().unwrap();
                    fw.apply_batches(&batches_of(&restore)).unwrap();
                    (
                        saved(),
                        dumped("filter", "FORWARD"),
                        dumped("nat", "POSTROUTING"),
                    )
                });
                assert_eq!(ours.0, by_iptables.0, "{name}: iptables-save differs");
                let strip =
                    |v: Vec<(u64, Key)>| -> Vec<_> { v.into_iter().map(|(_, k)| k).collect() };
                assert_eq!(
                    strip(ours.1),
                    strip(by_iptables.1),
                    "{name}: FORWARD differs"
                );
                assert_eq!(
                    strip(ours.2),
                    strip(by_iptables.2),
                    "{name}: POSTROUTING differs"
                );
                assert_eq!(ours.0, golden(&format!("{name}.save")), "{name}: golden");
            }
        }
    }
}

fn batch(table: Table, lines: &[&str]) -> Batch {
    Batch {
        table,
        lines: lines.iter().map(|l| l.to_string()).collect(),
    }
}

#[test]
fn rules_added_by_either_are_deleted_by_the_other() {
    if !testns::can_run_kernel_tests("rules_added_by_either_are_deleted_by_the_other") {
        return;
    }
    testns::in_netns(|| {
        user_chains();
        let mut fw = Nftables::open().unwrap();
        let dnat =
            "! -i docker0 -p tcp -m tcp --dport 49153 -j DNAT --to-destination 172.17.0.2:80";
        let accept = "-d 172.17.0.2/32 ! -i docker0 -o docker0 -p tcp -m tcp --dport 80 -j ACCEPT";
        let empty = saved();
        // iptables adds, we delete.
        ipt(&[
            &["-t", "nat", "-A", "DOCKER"][..],
            &dnat.split(' ').collect::<Vec<_>>(),
        ]
        .concat());
        fw.apply(&batch(Table::Nat, &[&format!("-D DOCKER {dnat}")]))
            .unwrap();
        assert_eq!(saved(), empty);
        // We add, iptables deletes (`-D` finds it by its expressions).
        fw.apply(&batch(Table::Filter, &[&format!("-A DOCKER {accept}")]))
            .unwrap();
        assert!(saved().contains(&format!("-A DOCKER {accept}\n")));
        ipt(&[
            &["-t", "filter", "-D", "DOCKER"][..],
            &accept.split(' ').collect::<Vec<_>>(),
        ]
        .concat());
        assert_eq!(saved(), empty);
    });
}

#[test]
fn another_writer_between_requests_is_noticed() {
    if !testns::can_run_kernel_tests("another_writer_between_requests_is_noticed") {
        return;
    }
    testns::in_netns(|| {
        user_chains();
        let mut fw = Nftables::open().unwrap();
        let r1 = "-d 172.17.0.2/32 ! -i docker0 -o docker0 -p tcp -m tcp --dport 80 -j ACCEPT";
        let r2 = "-d 172.17.0.3/32 ! -i docker0 -o docker0 -p tcp -m tcp --dport 81 -j ACCEPT";
        fw.apply(&batch(
            Table::Filter,
            &[&format!("-A DOCKER {r1}"), &format!("-A DOCKER {r2}")],
        ))
        .unwrap();
        // The backend now knows DOCKER's handles. Someone deletes r1 and adds another rule
        // behind our back: our delete of r2 must still delete r2, and our insert at 2 must
        // land second.
        ipt(&[
            &["-t", "filter", "-D", "DOCKER"][..],
            &r1.split(' ').collect::<Vec<_>>(),
        ]
        .concat());
        ipt(&[
            "-t", "filter", "-I", "DOCKER", "1", "-i", "eth9", "-j", "DROP",
        ]);
        fw.apply(&batch(Table::Filter, &[&format!("-D DOCKER {r2}")]))
            .unwrap();
        fw.apply(&batch(Table::Filter, &[&format!("-I DOCKER 2 {r1}")]))
            .unwrap();
        fw.apply(&batch(Table::Filter, &[&format!("-I DOCKER 2 {r2}")]))
            .unwrap();
        let s = saved();
        let docker: Vec<&str> = s.lines().filter(|l| l.starts_with("-A DOCKER ")).collect();
        assert_eq!(
            docker,
            [
                "-A DOCKER -i eth9 -j DROP".to_owned(),
                format!("-A DOCKER {r2}"),
                format!("-A DOCKER {r1}"),
            ]
        );
    });
}

#[test]
fn a_failing_line_applies_nothing_of_its_transaction() {
    if !testns::can_run_kernel_tests("a_failing_line_applies_nothing_of_its_transaction") {
        return;
    }
    testns::in_netns(|| {
        user_chains();
        let before = saved();
        let mut fw = Nftables::open().unwrap();
        let nat = batch(
            Table::Nat,
            &["-A DOCKER -p tcp -m tcp --dport 1 -j DNAT --to-destination 172.17.0.2:80"],
        );
        // The rule to delete is not there: neither table changes.
        let filter = batch(
            Table::Filter,
            &[
                "-A DOCKER -o docker0 -j ACCEPT",
                "-D DOCKER -o docker9 -j ACCEPT",
            ],
        );
        let err = fw.apply_batches(&[nat.clone(), filter]).unwrap_err();
        assert!(err.to_string().contains("docker9"), "{err}");
        assert_eq!(saved(), before);
        // A jump to a chain that does not exist: refused by the kernel, nothing applied.
        let bad = batch(
            Table::Filter,
            &[
                "-A DOCKER -o docker0 -j ACCEPT",
                "-A FORWARD -j DOCKER-NOPE",
            ],
        );
        let err = fw.apply_batches(&[nat, bad]).unwrap_err();
        assert!(err.to_string().contains("FORWARD"), "{err}");
        assert_eq!(saved(), before);
    });
}

#[test]
fn policies_and_chains_on_a_fresh_namespace() {
    if !testns::can_run_kernel_tests("policies_and_chains_on_a_fresh_namespace") {
        return;
    }
    testns::in_netns(|| {
        let mut fw = Nftables::open().unwrap();
        fw.set_policy(Table::Filter, "FORWARD", Policy::Drop)
            .unwrap();
        assert!(saved().contains(":FORWARD DROP [0:0]\n"), "{}", saved());
        fw.apply(&batch(
            Table::Filter,
            &[":DOCKER - [0:0]", "-A DOCKER -j RETURN"],
        ))
        .unwrap();
        // Declaring an existing user chain flushes it, as iptables-restore --noflush does.
        fw.apply(&batch(Table::Filter, &[":DOCKER - [0:0]"]))
            .unwrap();
        assert!(!saved().contains("-A DOCKER"), "{}", saved());
        fw.apply(&batch(Table::Filter, &["-X DOCKER"])).unwrap();
        fw.set_policy(Table::Filter, "FORWARD", Policy::Accept)
            .unwrap();
        assert_eq!(
            saved(),
            "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n"
        );
    });
}

#[test]
fn what_the_encoder_does_not_know_goes_through_iptables_restore() {
    if !testns::can_run_kernel_tests("what_the_encoder_does_not_know_goes_through_iptables_restore")
    {
        return;
    }
    testns::in_netns(|| {
        user_chains();
        let mut fw = Nftables::open().unwrap();
        let sctp = "-d 172.17.0.3/32 ! -i docker0 -o docker0 -p sctp -m sctp --dport 98 -j ACCEPT";
        fw.apply(&batch(Table::Filter, &[&format!("-A DOCKER {sctp}")]))
            .unwrap();
        assert!(
            saved().contains(&format!("-A DOCKER {sctp}\n")),
            "{}",
            saved()
        );
        fw.apply(&batch(Table::Filter, &[&format!("-D DOCKER {sctp}")]))
            .unwrap();
        assert!(!saved().contains("sctp"), "{}", saved());
    });
}

#[test]
fn requests_after_the_first_read_nothing_while_nobody_else_writes() {
    if !testns::can_run_kernel_tests(
        "requests_after_the_first_read_nothing_while_nobody_else_writes",
    ) {
        return;
    }
    testns::in_netns(|| {
        user_chains();
        let mut fw = Nftables::open().unwrap();
        let rule = |p: u16| {
            format!("-d 172.17.0.2/32 ! -i docker0 -o docker0 -p tcp -m tcp --dport {p} -j ACCEPT")
        };
        fw.apply(&batch(Table::Filter, &[&format!("-A DOCKER {}", rule(1))]))
            .unwrap();
        fw.apply(&batch(Table::Filter, &[&format!("-D DOCKER {}", rule(1))]))
            .unwrap();
        let warm = fw.reads();
        for p in 2..50 {
            fw.apply(&batch(Table::Filter, &[&format!("-A DOCKER {}", rule(p))]))
                .unwrap();
        }
        for p in (2..50).rev() {
            fw.apply(&batch(Table::Filter, &[&format!("-D DOCKER {}", rule(p))]))
                .unwrap();
        }
        assert_eq!(fw.reads(), warm, "the cache was not used");
        assert!(!saved().contains("-A DOCKER"), "{}", saved());
        // Another writer: the next request reads again, and still does the right thing.
        ipt(&["-t", "filter", "-A", "DOCKER", "-j", "RETURN"]);
        fw.apply(&batch(Table::Filter, &["-D DOCKER -j RETURN"]))
            .unwrap();
        assert!(fw.reads() > warm);
        assert!(!saved().contains("-A DOCKER"), "{}", saved());
    });
}

/// `n` distinct port rules for DOCKER, as `-A` and as `-D` lines.
fn many(n: u32) -> (Batch, Batch) {
    let rules: Vec<String> = (0..n)
        .map(|i| {
            format!(
                "-d 172.17.{}.{}/32 ! -i docker0 -o docker0 -p tcp -m tcp --dport 80 -j ACCEPT",
                i / 250,
                i % 250 + 2
            )
        })
        .collect();
    let lines = |op: &str| Batch {
        table: Table::Filter,
        lines: rules.iter().map(|r| format!("{op} DOCKER {r}")).collect(),
    };
    (lines("-A"), lines("-D"))
}

#[test]
fn big_batches_apply_whole() {
    if !testns::can_run_kernel_tests("big_batches_apply_whole") {
        return;
    }
    testns::in_netns(|| {
        user_chains();
        // 1 MB, which 500 rules fit in: one transaction, without echoes (too many to buffer),
        // so the next request reads the chain again.
        let mut fw = Nftables::open().unwrap().with_batch_limit(1 << 20);
        let (add, del) = many(500);
        fw.apply(&add).unwrap();
        assert_eq!(dumped("filter", "DOCKER").len(), 500);
        fw.apply(&batch(Table::Filter, &["-A DOCKER -j RETURN"]))
            .unwrap();
        fw.apply(&del).unwrap();
        assert_eq!(fw.fallbacks(), 0);
        // 3000 do not: iptables-restore takes the batch, whole.
        let (add, del) = many(3000);
        fw.apply(&add).unwrap();
        assert_eq!(fw.fallbacks(), 1);
        assert_eq!(dumped("filter", "DOCKER").len(), 3001);
        fw.apply(&del).unwrap();
        let s = saved();
        let docker: Vec<&str> = s.lines().filter(|l| l.starts_with("-A DOCKER ")).collect();
        assert_eq!(docker, ["-A DOCKER -j RETURN"]);
    });
}
