//! FakeHost's iptables model: iptables-save output, iptables-restore --noflush semantics.
#![allow(clippy::unwrap_used)]

use backend_mock::{FakeHost, RestoreError, RestoreErrorReason};
use netcore::firewall::{Batch, Policy, Table};
use netcore::ops::{FirewallOps, OpsError, OpsErrorKind};

fn batch(table: Table, lines: &[&str]) -> Batch {
    Batch {
        table,
        lines: lines.iter().map(|l| (*l).to_owned()).collect(),
    }
}

fn restore_error(err: &OpsError) -> &RestoreError {
    err.source
        .downcast_ref::<RestoreError>()
        .unwrap_or_else(|| panic!("not a RestoreError: {err}"))
}

fn rule_lines(save: &str) -> Vec<&str> {
    save.lines().filter(|l| l.starts_with("-A ")).collect()
}

// Docker 1.x's argument vectors for a fresh docker0 172.17.42.1/16 (reference §3, in the order
// the daemon runs them), as restore lines.
const DOCKER1_NAT: &[&str] = &[
    "-I POSTROUTING -s 172.17.42.1/16 ! -o docker0 -j MASQUERADE",
    "-N DOCKER",
    "-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER",
    "-A OUTPUT -m addrtype --dst-type LOCAL ! --dst 127.0.0.0/8 -j DOCKER",
];

fn docker1_filter(icc: &str) -> Vec<String> {
    vec![
        format!("-I FORWARD -i docker0 -o docker0 -j {icc}"),
        "-I FORWARD -i docker0 ! -o docker0 -j ACCEPT".to_owned(),
        "-I FORWARD -o docker0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT".to_owned(),
    ]
}

/// The replayed `iptables-save` output from the reference (iptables 1.8.9), icc=true.
const REFERENCE_FRESH: &str = "\
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A FORWARD -o docker0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A FORWARD -i docker0 ! -o docker0 -j ACCEPT
-A FORWARD -i docker0 -o docker0 -j ACCEPT
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:DOCKER - [0:0]
-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER
-A OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j DOCKER
-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE
COMMIT
";

#[test]
fn replaying_docker_1x_gives_the_reference_iptables_save() {
    let mut host = FakeHost::new();
    host.apply(&batch(Table::Nat, DOCKER1_NAT)).unwrap();
    host.apply(&Batch {
        table: Table::Filter,
        lines: docker1_filter("ACCEPT"),
    })
    .unwrap();
    let saved = host.save(Table::Filter).unwrap() + &host.save(Table::Nat).unwrap();
    assert_eq!(saved, REFERENCE_FRESH);
}

#[test]
fn replaying_docker_1x_ports_and_links_gives_the_reference_rules() {
    let mut host = FakeHost::new();
    host.apply(&batch(Table::Nat, DOCKER1_NAT)).unwrap();
    host.apply(&Batch {
        table: Table::Filter,
        lines: docker1_filter("DROP"),
    })
    .unwrap();
    // 0.0.0.0:49153 -> 172.17.0.2:80/tcp, 127.0.0.1:8080 -> 172.17.0.3:53/udp, then link
    // parent 172.17.0.3 to child 172.17.0.2 on 5432/tcp.
    host.apply(&batch(
        Table::Nat,
        &[
            "-A DOCKER -p tcp -d 0/0 --dport 49153 ! -i docker0 -j DNAT --to-destination 172.17.0.2:80",
            "-A DOCKER -p udp -d 127.0.0.1 --dport 8080 ! -i docker0 -j DNAT --to-destination 172.17.0.3:53",
        ],
    ))
    .unwrap();
    host.apply(&batch(
        Table::Filter,
        &[
            "-I FORWARD ! -i docker0 -o docker0 -p tcp -d 172.17.0.2 --dport 80 -j ACCEPT",
            "-I FORWARD ! -i docker0 -o docker0 -p udp -d 172.17.0.3 --dport 53 -j ACCEPT",
            "-I FORWARD -i docker0 -o docker0 -p tcp -s 172.17.0.3 --dport 5432 -d 172.17.0.2 -j ACCEPT",
            "-I FORWARD -i docker0 -o docker0 -p tcp -s 172.17.0.2 --sport 5432 -d 172.17.0.3 -j ACCEPT",
        ],
    ))
    .unwrap();
    let filter = host.save(Table::Filter).unwrap();
    assert_eq!(
        rule_lines(&filter),
        [
            "-A FORWARD -s 172.17.0.2/32 -d 172.17.0.3/32 -i docker0 -o docker0 -p tcp -m tcp --sport 5432 -j ACCEPT",
            "-A FORWARD -s 172.17.0.3/32 -d 172.17.0.2/32 -i docker0 -o docker0 -p tcp -m tcp --dport 5432 -j ACCEPT",
            "-A FORWARD -d 172.17.0.3/32 ! -i docker0 -o docker0 -p udp -m udp --dport 53 -j ACCEPT",
            "-A FORWARD -d 172.17.0.2/32 ! -i docker0 -o docker0 -p tcp -m tcp --dport 80 -j ACCEPT",
            "-A FORWARD -o docker0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
            "-A FORWARD -i docker0 ! -o docker0 -j ACCEPT",
            "-A FORWARD -i docker0 -o docker0 -j DROP",
        ]
    );
    let nat = host.save(Table::Nat).unwrap();
    let docker: Vec<_> = rule_lines(&nat)
        .into_iter()
        .filter(|l| l.starts_with("-A DOCKER "))
        .collect();
    assert_eq!(
        docker,
        [
            "-A DOCKER ! -i docker0 -p tcp -m tcp --dport 49153 -j DNAT --to-destination 172.17.0.2:80",
            "-A DOCKER -d 127.0.0.1/32 ! -i docker0 -p udp -m udp --dport 8080 -j DNAT --to-destination 172.17.0.3:53",
        ]
    );
}

#[test]
fn delete_matches_the_way_the_kernel_does() {
    let mut host = FakeHost::new();
    host.apply(&batch(Table::Nat, DOCKER1_NAT)).unwrap();
    // Docker deletes with the same unmasked text it added with.
    host.apply(&batch(
        Table::Nat,
        &[
            "-D POSTROUTING -s 172.17.42.1/16 ! -o docker0 -j MASQUERADE",
            "-D OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j DOCKER",
            "-D PREROUTING -m addrtype --dst-type LOCAL -j DOCKER",
            "-X DOCKER",
        ],
    ))
    .unwrap();
    assert_eq!(
        host.table(Table::Nat),
        Some(backend_mock::FwTable::new(Table::Nat))
    );
}

#[test]
fn a_failing_line_applies_nothing_of_its_batch() {
    let mut host = FakeHost::new();
    let before = host.snapshot();
    let err = host
        .apply(&batch(
            Table::Nat,
            &[
                ":DOCKER - [0:0]",
                "-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER",
                "-A OUTPUT -j NO-SUCH-CHAIN",
            ],
        ))
        .unwrap_err();
    assert_eq!(err.kind, OpsErrorKind::Other);
    let restore = restore_error(&err);
    assert_eq!(restore.line, 3);
    assert_eq!(
        restore.reason,
        RestoreErrorReason::UnknownTarget("NO-SUCH-CHAIN".to_owned())
    );
    assert_eq!(host.snapshot(), before);
}

#[test]
fn deleting_a_missing_rule_fails_and_leaves_everything_unchanged() {
    let mut host = FakeHost::new();
    host.apply(&batch(
        Table::Filter,
        &["-A FORWARD -i docker0 -o docker0 -j ACCEPT"],
    ))
    .unwrap();
    let before = host.snapshot();
    let err = host
        .apply(&batch(
            Table::Filter,
            &[
                "-A FORWARD -i docker0 ! -o docker0 -j ACCEPT",
                "-D FORWARD -i docker0 -o docker0 -j DROP",
            ],
        ))
        .unwrap_err();
    assert_eq!(restore_error(&err).reason, RestoreErrorReason::NoSuchRule);
    assert_eq!(restore_error(&err).line, 2);
    assert_eq!(host.snapshot(), before);
}

#[test]
fn declaring_an_existing_user_chain_flushes_it() {
    let mut host = FakeHost::new();
    host.apply(&batch(
        Table::Filter,
        &[":DOCKER - [0:0]", "-A DOCKER -d 172.17.0.2/32 -j ACCEPT"],
    ))
    .unwrap();
    assert_eq!(
        host.table(Table::Filter)
            .unwrap()
            .chain("DOCKER")
            .unwrap()
            .rules
            .len(),
        1
    );
    host.apply(&batch(Table::Filter, &[":DOCKER - [0:0]"]))
        .unwrap();
    assert!(
        host.table(Table::Filter)
            .unwrap()
            .chain("DOCKER")
            .unwrap()
            .rules
            .is_empty()
    );
}

#[test]
fn declaring_a_builtin_sets_its_policy_without_flushing() {
    let mut host = FakeHost::new();
    host.apply(&batch(Table::Filter, &["-A FORWARD -j ACCEPT"]))
        .unwrap();
    host.apply(&batch(Table::Filter, &[":FORWARD DROP [0:0]"]))
        .unwrap();
    let saved = host.save(Table::Filter).unwrap();
    assert!(saved.contains(":FORWARD DROP [0:0]\n"), "{saved}");
    assert!(saved.contains("-A FORWARD -j ACCEPT\n"), "{saved}");
    let err = host
        .apply(&batch(Table::Filter, &[":MINE DROP [0:0]"]))
        .unwrap_err();
    assert_eq!(
        restore_error(&err).reason,
        RestoreErrorReason::NotBuiltin("MINE".to_owned())
    );
}

#[test]
fn new_chain_fails_if_it_exists() {
    let mut host = FakeHost::new();
    host.apply(&batch(Table::Nat, &["-N DOCKER"])).unwrap();
    let err = host.apply(&batch(Table::Nat, &["-N DOCKER"])).unwrap_err();
    assert_eq!(
        restore_error(&err).reason,
        RestoreErrorReason::ChainExists("DOCKER".to_owned())
    );
    let err = host.apply(&batch(Table::Nat, &["-N OUTPUT"])).unwrap_err();
    assert_eq!(
        restore_error(&err).reason,
        RestoreErrorReason::ChainExists("OUTPUT".to_owned())
    );
    let long = format!("-N {}", "X".repeat(29));
    let err = host.apply(&batch(Table::Nat, &[&long])).unwrap_err();
    assert!(matches!(
        restore_error(&err).reason,
        RestoreErrorReason::BadChainName(_)
    ));
}

#[test]
fn delete_chain_fails_if_missing_not_empty_referenced_or_builtin() {
    let mut host = FakeHost::new();
    host.apply(&batch(
        Table::Nat,
        &[
            "-N FULL",
            "-A FULL -j RETURN",
            "-N USED",
            "-A PREROUTING -j USED",
            "-N FREE",
        ],
    ))
    .unwrap();
    let before = host.snapshot();
    let reason = |host: &mut FakeHost, line: &str| {
        let err = host
            .apply(&batch(Table::Nat, &["-X FREE", line]))
            .unwrap_err();
        restore_error(&err).reason.clone()
    };
    assert_eq!(
        reason(&mut host, "-X GONE"),
        RestoreErrorReason::NoSuchChain("GONE".to_owned())
    );
    assert_eq!(
        reason(&mut host, "-X FULL"),
        RestoreErrorReason::ChainNotEmpty("FULL".to_owned())
    );
    assert_eq!(
        reason(&mut host, "-X USED"),
        RestoreErrorReason::ChainReferenced("USED".to_owned())
    );
    assert_eq!(
        reason(&mut host, "-X OUTPUT"),
        RestoreErrorReason::BuiltinChain("OUTPUT".to_owned())
    );
    // Each failure also undid the successful `-X FREE` before it.
    assert_eq!(host.snapshot(), before);
    host.apply(&batch(Table::Nat, &["-X FREE", "-F FULL", "-X FULL"]))
        .unwrap();
    let saved = host.save(Table::Nat).unwrap();
    assert!(
        !saved.contains("FREE") && !saved.contains("FULL"),
        "{saved}"
    );
}

#[test]
fn jumps_need_an_existing_user_chain_or_a_known_target() {
    let mut host = FakeHost::new();
    // A chain declared earlier in the same batch is a valid target.
    host.apply(&batch(
        Table::Filter,
        &[":DOCKER - [0:0]", "-A FORWARD -o docker0 -j DOCKER"],
    ))
    .unwrap();
    for target in ["ACCEPT", "DROP", "RETURN", "REJECT", "LOG"] {
        host.apply(&batch(Table::Filter, &[&format!("-A DOCKER -j {target}")]))
            .unwrap();
    }
    let err = host
        .apply(&batch(Table::Filter, &["-A FORWARD -j DOCKER-USER"]))
        .unwrap_err();
    assert_eq!(
        restore_error(&err).reason,
        RestoreErrorReason::UnknownTarget("DOCKER-USER".to_owned())
    );
    let err = host
        .apply(&batch(Table::Filter, &["-A FORWARD -j INPUT"]))
        .unwrap_err();
    assert!(matches!(
        restore_error(&err).reason,
        RestoreErrorReason::UnknownTarget(_)
    ));
    // NAT targets belong to the nat table.
    let err = host
        .apply(&batch(Table::Filter, &["-A FORWARD -j MASQUERADE"]))
        .unwrap_err();
    assert!(matches!(
        restore_error(&err).reason,
        RestoreErrorReason::WrongTable { .. }
    ));
    for target in [
        "MASQUERADE",
        "SNAT --to-source 10.0.0.1",
        "DNAT --to-destination 10.0.0.2",
    ] {
        host.apply(&batch(
            Table::Nat,
            &[&format!("-A POSTROUTING -j {target}")],
        ))
        .unwrap();
    }
}

#[test]
fn appending_to_a_missing_chain_fails() {
    let mut host = FakeHost::new();
    let err = host
        .apply(&batch(Table::Nat, &["-A DOCKER -j RETURN"]))
        .unwrap_err();
    assert_eq!(
        restore_error(&err).reason,
        RestoreErrorReason::NoSuchChain("DOCKER".to_owned())
    );
}

#[test]
fn insert_honours_its_position_and_refuses_one_past_the_end() {
    let mut host = FakeHost::new();
    host.apply(&batch(
        Table::Filter,
        &[
            "-A FORWARD -i a -j ACCEPT",
            "-A FORWARD -i c -j ACCEPT",
            "-I FORWARD 2 -i b -j ACCEPT",
            "-I FORWARD -i first -j ACCEPT",
            "-I FORWARD 5 -i last -j ACCEPT",
        ],
    ))
    .unwrap();
    let saved = host.save(Table::Filter).unwrap();
    let ifaces: Vec<_> = rule_lines(&saved)
        .iter()
        .map(|l| l.split(' ').nth(3).unwrap())
        .collect();
    assert_eq!(ifaces, ["first", "a", "b", "c", "last"]);
    let err = host
        .apply(&batch(Table::Filter, &["-I FORWARD 7 -j ACCEPT"]))
        .unwrap_err();
    assert!(matches!(
        restore_error(&err).reason,
        RestoreErrorReason::BadIndex { .. }
    ));
}

#[test]
fn delete_by_number_and_flush() {
    let mut host = FakeHost::new();
    host.apply(&batch(
        Table::Filter,
        &[
            "-A INPUT -i a -j ACCEPT",
            "-A INPUT -i b -j ACCEPT",
            "-A OUTPUT -o c -j ACCEPT",
        ],
    ))
    .unwrap();
    host.apply(&batch(Table::Filter, &["-D INPUT 1"])).unwrap();
    assert_eq!(
        rule_lines(&host.save(Table::Filter).unwrap()),
        ["-A INPUT -i b -j ACCEPT", "-A OUTPUT -o c -j ACCEPT"]
    );
    host.apply(&batch(Table::Filter, &["-F INPUT"])).unwrap();
    assert_eq!(
        rule_lines(&host.save(Table::Filter).unwrap()),
        ["-A OUTPUT -o c -j ACCEPT"]
    );
    host.apply(&batch(Table::Filter, &["-F"])).unwrap();
    assert!(rule_lines(&host.save(Table::Filter).unwrap()).is_empty());
    let err = host
        .apply(&batch(Table::Filter, &["-D INPUT 1"]))
        .unwrap_err();
    assert!(matches!(
        restore_error(&err).reason,
        RestoreErrorReason::BadIndex { .. }
    ));
}

#[test]
fn a_batch_is_a_body_without_table_options() {
    let mut host = FakeHost::new();
    for line in [
        "-t nat -A POSTROUTING -j MASQUERADE",
        "*nat",
        "COMMIT",
        "-Q FORWARD",
    ] {
        let err = host.apply(&batch(Table::Nat, &[line])).unwrap_err();
        assert!(
            matches!(restore_error(&err).reason, RestoreErrorReason::Syntax(_)),
            "{line}: {err}"
        );
    }
    // Comments and blank lines are fine.
    host.apply(&batch(
        Table::Nat,
        &["# a comment", "", "-A POSTROUTING -j MASQUERADE"],
    ))
    .unwrap();
}

#[test]
fn set_policy_works_on_builtins_only() {
    let mut host = FakeHost::new();
    host.set_policy(Table::Filter, "FORWARD", Policy::Drop)
        .unwrap();
    assert!(
        host.save(Table::Filter)
            .unwrap()
            .contains(":FORWARD DROP [0:0]")
    );
    assert_eq!(
        host.table(Table::Filter)
            .unwrap()
            .chain("FORWARD")
            .unwrap()
            .policy,
        Some(Policy::Drop)
    );
    host.apply(&batch(Table::Filter, &["-N DOCKER"])).unwrap();
    let before = host.snapshot();
    let err = host
        .set_policy(Table::Filter, "DOCKER", Policy::Drop)
        .unwrap_err();
    assert_eq!(err.kind, OpsErrorKind::Other);
    let err = host
        .set_policy(Table::Filter, "NOPE", Policy::Drop)
        .unwrap_err();
    assert_eq!(err.kind, OpsErrorKind::NotFound);
    assert_eq!(host.snapshot(), before);
}

#[test]
fn an_unloaded_table_saves_empty_and_loads_on_first_change() {
    let mut host = FakeHost::new().without_table(Table::Nat);
    assert_eq!(host.save(Table::Nat).unwrap(), "");
    // A failed batch does not load it either.
    assert!(
        host.apply(&batch(Table::Nat, &["-A DOCKER -j RETURN"]))
            .is_err()
    );
    assert_eq!(host.save(Table::Nat).unwrap(), "");
    host.apply(&batch(Table::Nat, &["-N DOCKER"])).unwrap();
    assert_eq!(
        host.save(Table::Nat).unwrap(),
        "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
         :POSTROUTING ACCEPT [0:0]\n:DOCKER - [0:0]\nCOMMIT\n"
    );
}

#[test]
fn with_rules_loads_a_save_text_that_saves_back_identically() {
    let nat = REFERENCE_FRESH.split_once("COMMIT\n").unwrap().1;
    let mut host = FakeHost::new()
        .with_rules(
            Table::Nat,
            &format!("# Generated by iptables-save v1.8.9\n{nat}"),
        )
        .unwrap();
    assert_eq!(host.save(Table::Nat).unwrap(), nat);
    // The loaded rules behave as rules: the jump keeps DOCKER alive.
    let err = host.apply(&batch(Table::Nat, &["-X DOCKER"])).unwrap_err();
    assert_eq!(
        restore_error(&err).reason,
        RestoreErrorReason::ChainReferenced("DOCKER".to_owned())
    );
    assert!(
        FakeHost::new().with_rules(Table::Filter, nat).is_err(),
        "wrong table header"
    );
}

#[test]
fn user_chains_are_saved_by_name_after_builtins() {
    let mut host = FakeHost::new();
    host.apply(&batch(
        Table::Filter,
        &[
            "-N DOCKER-USER",
            "-N DOCKER",
            "-A DOCKER-USER -j RETURN",
            "-A DOCKER -j RETURN",
            "-A FORWARD -j DOCKER-USER",
        ],
    ))
    .unwrap();
    assert_eq!(
        host.save(Table::Filter).unwrap(),
        "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
         :DOCKER - [0:0]\n:DOCKER-USER - [0:0]\n-A FORWARD -j DOCKER-USER\n\
         -A DOCKER -j RETURN\n-A DOCKER-USER -j RETURN\nCOMMIT\n"
    );
}
