//! plan_add / plan_remove / undo_of against listings with the user's own rules, driven
//! through `Listing::apply` (the model of `iptables-restore --noflush`).

use netcore::firewall::{
    Batch, BridgeFirewall, Listing, Place, RuleSet, Table, bridge_rules, plan_add, plan_remove,
    undo_of,
};
use proptest::prelude::*;

fn fw(icc: bool, ip_masq: bool, hairpin: bool) -> BridgeFirewall {
    BridgeFirewall {
        bridge: "docker0".to_owned(),
        subnet: "172.17.0.1/16".parse().expect("valid net"),
        icc,
        ip_masq,
        hairpin,
    }
}

fn all_combos() -> Vec<BridgeFirewall> {
    let mut v = Vec::new();
    for icc in [true, false] {
        for ip_masq in [true, false] {
            for hairpin in [true, false] {
                v.push(fw(icc, ip_masq, hairpin));
            }
        }
    }
    v
}

fn apply(l: &Listing, batch: Option<Batch>) -> Listing {
    match batch {
        Some(b) => l
            .apply(&b)
            .unwrap_or_else(|e| panic!("{e}\nbatch:\n{}", b.render())),
        None => l.clone(),
    }
}

fn add(set: &RuleSet, l: &Listing) -> Listing {
    apply(l, plan_add(set, l.table, l))
}

/// A table with the user's own rules (and one user chain), as a host with ufw-like rules has.
fn user_tables() -> [Listing; 2] {
    let filter = "*filter\n:INPUT DROP [10:600]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
                  :ufw-before-forward - [0:0]\n\
                  -A INPUT -i lo -j ACCEPT\n\
                  -A FORWARD -j ufw-before-forward\n\
                  -A FORWARD -i eth0 -o eth1 -j ACCEPT\n\
                  -A ufw-before-forward -p icmp -j ACCEPT\nCOMMIT\n";
    let nat = "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n\
               -A PREROUTING -i eth0 -p tcp -m tcp --dport 2222 -j DNAT --to-destination 10.0.0.5:22\n\
               -A POSTROUTING -o eth0 -j MASQUERADE\nCOMMIT\n";
    [
        Listing::parse(Table::Filter, filter).expect("parses"),
        Listing::parse(Table::Nat, nat).expect("parses"),
    ]
}

fn rules_of<'a>(l: &'a Listing, chain: &str) -> &'a [String] {
    &l.chain(chain)
        .unwrap_or_else(|| panic!("no chain {chain}"))
        .rules
}

#[test]
fn a_complete_listing_needs_nothing() {
    for f in all_combos() {
        let set = bridge_rules(&f);
        for l in user_tables() {
            let done = add(&set, &l);
            assert_ne!(done, l, "{f:?}: something was added");
            assert_eq!(
                plan_add(&set, done.table, &done),
                None,
                "{f:?} {}",
                done.table
            );
        }
    }
}

#[test]
fn top_rules_go_above_the_users_forward_rules_in_order() {
    let set = bridge_rules(&fw(false, true, false));
    let [filter, _] = user_tables();
    let done = add(&set, &filter);
    assert_eq!(
        rules_of(&done, "FORWARD"),
        [
            "-j DOCKER-USER",
            "-j DOCKER-ISOLATION-STAGE-1",
            "-o docker0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
            "-o docker0 -j DOCKER",
            "-i docker0 ! -o docker0 -j ACCEPT",
            // the user's, untouched and in their order
            "-j ufw-before-forward",
            "-i eth0 -o eth1 -j ACCEPT",
            // icc=false: appended, as Docker 20.10 does
            "-i docker0 -o docker0 -j DROP",
        ]
    );
    // The user's chains and policies are untouched.
    assert_eq!(done.policy("INPUT"), Some(netcore::firewall::Policy::Drop));
    assert_eq!(rules_of(&done, "ufw-before-forward"), ["-p icmp -j ACCEPT"]);
    assert_eq!(rules_of(&done, "INPUT"), ["-i lo -j ACCEPT"]);
}

#[test]
fn a_missing_top_rule_goes_back_to_its_place() {
    let set = bridge_rules(&fw(true, true, false));
    let [filter, nat] = user_tables();
    let full = add(&set, &filter);
    // Someone deleted the conntrack rule and the ICC rule.
    let broken = full
        .apply(&Batch {
            table: Table::Filter,
            lines: vec![
                "-D FORWARD -o docker0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT".into(),
                "-D FORWARD -i docker0 -o docker0 -j ACCEPT".into(),
            ],
        })
        .expect("deletes");
    let batch = plan_add(&set, Table::Filter, &broken).expect("two rules are missing");
    assert_eq!(
        batch.lines,
        [
            "-I FORWARD 3 -o docker0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
            "-I FORWARD 6 -i docker0 -o docker0 -j ACCEPT",
        ]
    );
    assert_eq!(apply(&broken, Some(batch)), full);

    // nat: the DOCKER chain already holds a container's DNAT; RETURN goes above it and the
    // chain is not re-declared (which would flush it).
    let with_chain = nat
        .apply(&Batch {
            table: Table::Nat,
            lines: vec![
                ":DOCKER - [0:0]".into(),
                "-A DOCKER ! -i docker0 -p tcp -m tcp --dport 49153 -j DNAT --to-destination 172.17.0.2:80".into(),
            ],
        })
        .expect("applies");
    let batch = plan_add(&set, Table::Nat, &with_chain).expect("rules are missing");
    assert!(!batch.lines.iter().any(|l| l.starts_with(':')), "{batch:?}");
    let done = apply(&with_chain, Some(batch));
    assert_eq!(
        rules_of(&done, "DOCKER"),
        [
            "-i docker0 -j RETURN",
            "! -i docker0 -p tcp -m tcp --dport 49153 -j DNAT --to-destination 172.17.0.2:80"
        ]
    );
    assert_eq!(
        rules_of(&done, "POSTROUTING"),
        [
            "-s 172.17.0.0/16 ! -o docker0 -j MASQUERADE",
            "-o eth0 -j MASQUERADE"
        ]
    );
}

#[test]
fn declared_chains_are_only_the_missing_ones() {
    let set = bridge_rules(&fw(true, true, false));
    let empty = Listing::empty(Table::Filter);
    let batch = plan_add(&set, Table::Filter, &empty).expect("everything is missing");
    let decls: Vec<&String> = batch.lines.iter().filter(|l| l.starts_with(':')).collect();
    assert_eq!(
        decls,
        [
            ":DOCKER - [0:0]",
            ":DOCKER-ISOLATION-STAGE-1 - [0:0]",
            ":DOCKER-ISOLATION-STAGE-2 - [0:0]",
            ":DOCKER-USER - [0:0]"
        ]
    );
    // Declarations come before any rule that jumps to them.
    let first_rule = batch
        .lines
        .iter()
        .position(|l| !l.starts_with(':'))
        .expect("rules");
    assert_eq!(first_rule, 4);
}

#[test]
fn switching_options_gives_the_fresh_layout_and_undo_restores_the_old_one() {
    for from in all_combos() {
        for to in all_combos() {
            let (from_set, to_set) = (bridge_rules(&from), bridge_rules(&to));
            for user in user_tables() {
                let table = user.table;
                let before = add(&from_set, &user);
                let batch = plan_add(&to_set, table, &before);
                let after = apply(&before, batch.clone());
                // Same as installing `to` on the user's tables directly.
                assert_eq!(after, add(&to_set, &user), "{from:?} -> {to:?} {table}");
                if let Some(b) = batch {
                    let undone = apply(&after, Some(undo_of(&b)));
                    assert_eq!(
                        undone,
                        before,
                        "undo of {from:?} -> {to:?} {table}:\n{}",
                        b.render()
                    );
                }
            }
        }
    }
}

#[test]
fn icc_switch_deletes_the_opposite_rule() {
    let [filter, _] = user_tables();
    let on = add(&bridge_rules(&fw(true, true, false)), &filter);
    let batch =
        plan_add(&bridge_rules(&fw(false, true, false)), Table::Filter, &on).expect("changes");
    assert_eq!(
        batch.lines,
        [
            "# position 6",
            "-D FORWARD -i docker0 -o docker0 -j ACCEPT",
            "-A FORWARD -i docker0 -o docker0 -j DROP"
        ]
    );
    assert_eq!(
        undo_of(&batch).lines,
        [
            "-D FORWARD -i docker0 -o docker0 -j DROP",
            "-I FORWARD 6 -i docker0 -o docker0 -j ACCEPT"
        ]
    );
}

#[test]
fn undo_of_a_fresh_install_is_its_exact_reverse() {
    let set = bridge_rules(&fw(true, true, true));
    let batch = plan_add(&set, Table::Nat, &Listing::empty(Table::Nat)).expect("missing");
    assert_eq!(
        batch.lines,
        [
            ":DOCKER - [0:0]",
            "-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER",
            "-A OUTPUT -m addrtype --dst-type LOCAL -j DOCKER",
            "-I POSTROUTING 1 -o docker0 -m addrtype --src-type LOCAL -j MASQUERADE",
            "-I POSTROUTING 2 -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE",
        ]
    );
    assert_eq!(
        undo_of(&batch).lines,
        [
            "-D POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE",
            "-D POSTROUTING -o docker0 -m addrtype --src-type LOCAL -j MASQUERADE",
            "-D OUTPUT -m addrtype --dst-type LOCAL -j DOCKER",
            "-D PREROUTING -m addrtype --dst-type LOCAL -j DOCKER",
            "-X DOCKER",
        ]
    );
}

#[test]
fn remove_takes_back_everything_of_ours_and_nothing_of_the_users() {
    for f in all_combos() {
        let set = bridge_rules(&f);
        for user in user_tables() {
            let installed = add(&set, &user);
            let batch = plan_remove(&set, user.table, &installed).expect("our rules are there");
            assert_eq!(apply(&installed, Some(batch)), user, "{f:?} {}", user.table);
            assert_eq!(
                plan_remove(&set, user.table, &user),
                None,
                "nothing of ours on a clean table"
            );
        }
    }
}

#[test]
fn remove_keeps_the_users_docker_user_rules_and_their_hook() {
    let set = bridge_rules(&fw(true, true, false));
    let [filter, _] = user_tables();
    let installed = add(&set, &filter);
    let customised = installed
        .apply(&Batch {
            table: Table::Filter,
            lines: vec!["-I DOCKER-USER ! -s 192.168.1.0/24 -i eth0 -j DROP".into()],
        })
        .expect("the user's rule applies");
    let batch = plan_remove(&set, Table::Filter, &customised).expect("our rules are there");
    assert!(
        !batch.lines.iter().any(|l| l.contains("DOCKER-USER")),
        "{batch:?}"
    );
    let after = apply(&customised, Some(batch));
    assert_eq!(
        rules_of(&after, "DOCKER-USER"),
        ["! -s 192.168.1.0/24 -i eth0 -j DROP", "-j RETURN"]
    );
    assert_eq!(
        rules_of(&after, "FORWARD"),
        [
            "-j DOCKER-USER",
            "-j ufw-before-forward",
            "-i eth0 -o eth1 -j ACCEPT"
        ]
    );
    let chains: Vec<&str> = after.chains.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        chains,
        [
            "INPUT",
            "FORWARD",
            "OUTPUT",
            "DOCKER-USER",
            "ufw-before-forward"
        ]
    );
}

#[test]
fn remove_leaves_a_chain_that_is_not_empty_or_still_jumped_to() {
    let set = bridge_rules(&fw(true, true, false));
    let [filter, _] = user_tables();
    let installed = add(&set, &filter)
        .apply(&Batch {
            table: Table::Filter,
            lines: vec![
                // A container's port rule (not part of the bridge set) in DOCKER…
                "-A DOCKER -d 172.17.0.2/32 ! -i docker0 -o docker0 -p tcp -m tcp --dport 80 -j ACCEPT".into(),
                // …and a user's jump to the isolation chain.
                "-A INPUT -j DOCKER-ISOLATION-STAGE-2".into(),
            ],
        })
        .expect("applies");
    let batch = plan_remove(&set, Table::Filter, &installed).expect("ours are there");
    assert!(!batch.lines.contains(&"-X DOCKER".to_owned()), "{batch:?}");
    assert!(
        !batch
            .lines
            .contains(&"-X DOCKER-ISOLATION-STAGE-2".to_owned()),
        "{batch:?}"
    );
    assert!(
        batch
            .lines
            .contains(&"-X DOCKER-ISOLATION-STAGE-1".to_owned()),
        "{batch:?}"
    );
    let after = apply(&installed, Some(batch));
    assert_eq!(rules_of(&after, "DOCKER").len(), 1);
    assert!(rules_of(&after, "DOCKER-ISOLATION-STAGE-2").is_empty());
    assert_eq!(
        rules_of(&after, "FORWARD"),
        ["-j ufw-before-forward", "-i eth0 -o eth1 -j ACCEPT"]
    );
}

#[test]
fn remove_deletes_every_copy_of_a_rule() {
    let set = bridge_rules(&fw(true, true, false));
    let installed = add(&set, &Listing::empty(Table::Nat));
    let doubled = installed
        .apply(&Batch {
            table: Table::Nat,
            lines: vec!["-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE".into()],
        })
        .expect("applies");
    let after = apply(&doubled, plan_remove(&set, Table::Nat, &doubled));
    assert_eq!(after, Listing::empty(Table::Nat));
}

#[test]
fn every_rule_has_a_known_place_and_table() {
    // Top rules are exactly the ones Docker inserts with -I.
    let set = bridge_rules(&fw(false, true, true));
    let top: Vec<String> = set
        .rules
        .iter()
        .filter(|r| r.place == Place::Top)
        .map(|r| r.save_line())
        .collect();
    assert_eq!(
        top,
        [
            "-A FORWARD -j DOCKER-USER",
            "-A FORWARD -j DOCKER-ISOLATION-STAGE-1",
            "-A FORWARD -o docker0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
            "-A FORWARD -o docker0 -j DOCKER",
            "-A FORWARD -i docker0 ! -o docker0 -j ACCEPT",
            "-A DOCKER-ISOLATION-STAGE-1 -i docker0 ! -o docker0 -j DOCKER-ISOLATION-STAGE-2",
            "-A DOCKER-ISOLATION-STAGE-2 -o docker0 -j DROP",
            "-A POSTROUTING -o docker0 -m addrtype --src-type LOCAL -j MASQUERADE",
            "-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE",
        ]
    );
    // No superseded rule is also wanted.
    for s in &set.superseded {
        assert!(!set.rules.iter().any(|r| r.same_as(s)), "{s}");
    }
}

/// One of the user's rules to scatter into a table.
fn user_rule() -> impl Strategy<Value = (Table, &'static str, String)> {
    prop_oneof![
        (0u8..=255).prop_map(|n| (
            Table::Filter,
            "FORWARD",
            format!("-s 10.9.{n}.0/24 -j ACCEPT")
        )),
        (0u8..=255).prop_map(|n| (
            Table::Filter,
            "DOCKER-USER",
            format!("-d 10.8.{n}.1/32 -j DROP")
        )),
        (0u8..=255).prop_map(|n| (
            Table::Nat,
            "POSTROUTING",
            format!("-s 10.7.{n}.0/24 -o eth0 -j MASQUERADE")
        )),
        (0u8..=255).prop_map(|n| (
            Table::Nat,
            "PREROUTING",
            format!("-d 10.6.{n}.1/32 -j RETURN")
        )),
    ]
}

proptest! {
    /// Whatever mix of the user's rules and leftovers of ours a table holds, plan_add ends with
    /// every rule of ours present, the Top rules first in their order, the user's rules in their
    /// order, a second plan empty, and undo restoring the table exactly.
    #[test]
    fn plan_add_converges_around_user_rules(
        combo in 0usize..8,
        user in proptest::collection::vec((user_rule(), any::<prop::sample::Index>()), 0..12),
        drop_mask in any::<u32>(),
    ) {
        let f = &all_combos()[combo];
        let set = bridge_rules(f);
        for table in Table::ALL {
            // Start from our full install, drop some of our rules, scatter user rules.
            let mut l = add(&set, &Listing::empty(table));
            let ours: Vec<_> = set.rules_in(table).cloned().collect();
            let mut lines = Vec::new();
            for (i, r) in ours.iter().enumerate() {
                if drop_mask & (1 << (i % 32)) != 0 {
                    lines.push(format!("-D {} {}", r.chain, r.spec()));
                }
            }
            l = l.apply(&Batch { table, lines }).expect("our rules are there to delete");
            let mut mine: Vec<(String, String)> = Vec::new();
            for ((t, chain, spec), at) in &user {
                if *t != table || l.chain(chain).is_none() { continue; }
                let len = l.chain(chain).map_or(0, |c| c.rules.len());
                let pos = at.index(len + 1) + 1;
                l = l.apply(&Batch { table, lines: vec![format!("-I {chain} {pos} {spec}")] }).expect("user rule applies");
                mine.push((chain.to_string(), spec.clone()));
            }

            let batch = plan_add(&set, table, &l);
            let done = apply(&l, batch.clone());
            for r in &ours {
                prop_assert!(done.contains(r), "missing {}", r);
            }
            prop_assert_eq!(plan_add(&set, table, &done), None);
            for chain in done.chains.iter() {
                let tops: Vec<String> = ours.iter()
                    .filter(|r| r.chain == chain.name && r.place == Place::Top)
                    .map(|r| r.spec()).collect();
                // Top rules that were already present may sit below a user rule that was
                // inserted above them; the ones we add always follow their predecessor. In
                // every case they keep their relative order.
                let order: Vec<&String> = chain.rules.iter().filter(|r| tops.contains(r)).collect();
                prop_assert_eq!(order.len(), tops.len());
                for (got, want) in order.iter().zip(&tops) { prop_assert_eq!(*got, want); }
                // The user's rules keep their relative order.
                let theirs: Vec<&String> = mine.iter().filter(|(c, _)| *c == chain.name).map(|(_, s)| s).collect();
                let kept: Vec<&String> = chain.rules.iter().filter(|r| theirs.contains(r)).collect();
                let before: Vec<&String> = l.chain(&chain.name).map_or(Vec::new(), |c| c.rules.iter().filter(|r| theirs.contains(r)).collect());
                prop_assert_eq!(kept, before);
            }
            if let Some(b) = batch {
                prop_assert_eq!(apply(&done, Some(undo_of(&b))), l);
            }
        }
    }
}
