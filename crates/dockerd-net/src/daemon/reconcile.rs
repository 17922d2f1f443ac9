//! Making the kernel's per-container rules match the state, on start and at teardown.
//!
//! The state is persisted *before* its firewall batches are applied, so after a crash the
//! kernel can lack rules the state has (the crash came before the apply) and can hold rules
//! the state does not have (a release was persisted, its `-D` batch never ran; or a batch
//! was applied and the compensating revert was cut short). Start-up therefore compares, in
//! the three chains that hold per-container rules (nat `DOCKER`, nat `POSTROUTING`, filter
//! `DOCKER`), what the state wants with what is there, *counting copies*: two mappings of
//! the same container port (`8080:80` and `8081:80`) each append the same filter `ACCEPT`
//! and hairpin `MASQUERADE` rule, as Docker does, and releasing one removes one copy.
//!
//! A rule that the state does not want is removed only when it is one of ours: a rule that
//! [`firewall::port_rules`] or [`firewall::link_rules`] would generate for this bridge, for
//! container addresses inside the bridge's subnet. Anything else (a user's rule, another
//! tool's, the bridge's own rules) is never touched.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use netcore::firewall::{self, Batch, DOCKER_CHAIN, Listing, PortMapping, Rule, Table};
use netcore::ports::Proto;

/// The chains of `table` that hold per-container rules.
pub fn container_chains(table: Table) -> &'static [&'static str] {
    match table {
        Table::Nat => &[DOCKER_CHAIN, "POSTROUTING"],
        Table::Filter => &[DOCKER_CHAIN],
    }
}

/// The batch that makes the per-container rules of `table` in `listing` exactly `wanted`
/// (those of `wanted` in this table; other rules are ignored): missing copies are appended,
/// surplus copies of our rules deleted (deletions first). `None` when nothing differs.
pub fn plan(
    table: Table,
    listing: &Listing,
    wanted: &[Rule],
    bridge: &str,
    subnet: Ipv4Net,
) -> Option<Batch> {
    let mut removals = Vec::new();
    let mut additions = Vec::new();
    for &chain in container_chains(table) {
        let want: Vec<String> = wanted
            .iter()
            .filter(|r| r.table == table && r.chain == chain)
            .map(Rule::spec)
            .collect();
        let mut want_count: HashMap<&str, usize> = HashMap::new();
        for s in &want {
            *want_count.entry(s.as_str()).or_default() += 1;
        }
        let have: &[String] = listing.chain(chain).map_or(&[], |c| c.rules.as_slice());
        let mut have_count: HashMap<&str, usize> = HashMap::new();
        for s in have {
            *have_count.entry(s.as_str()).or_default() += 1;
        }
        // Surplus copies, in listing order (each `-D` deletes the first match).
        let mut kept: HashMap<&str, usize> = HashMap::new();
        for s in have {
            let k = kept.entry(s.as_str()).or_default();
            *k += 1;
            let allowed = want_count.get(s.as_str()).copied().unwrap_or(0);
            if *k > allowed && is_container_rule(table, chain, s, bridge, subnet) {
                removals.push(format!("-D {chain} {s}"));
            }
        }
        // Missing copies, in the state's order.
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for s in &want {
            let k = seen.entry(s.as_str()).or_default();
            *k += 1;
            if *k > have_count.get(s.as_str()).copied().unwrap_or(0) {
                additions.push(format!("-A {chain} {s}"));
            }
        }
    }
    removals.extend(additions);
    (!removals.is_empty()).then_some(Batch {
        table,
        lines: removals,
    })
}

/// True when `spec` in `table`/`chain` is a rule this daemon generates for a container of
/// `bridge` (in either proxy mode): it is regenerated from its own values with
/// [`firewall::port_rules`] / [`firewall::link_rules`] and must come out identical.
pub fn is_container_rule(
    table: Table,
    chain: &str,
    spec: &str,
    bridge: &str,
    subnet: Ipv4Net,
) -> bool {
    classify(table, chain, spec, bridge, subnet).unwrap_or(false)
}

fn classify(table: Table, chain: &str, spec: &str, bridge: &str, subnet: Ipv4Net) -> Option<bool> {
    let words: Vec<&str> = spec.split_whitespace().collect();
    let val = |flag: &str| words.windows(2).find(|w| w[0] == flag).map(|w| w[1]);
    let host = |v: &str| -> Option<Ipv4Addr> { v.strip_suffix("/32")?.parse().ok() };
    let inside = |ip: Ipv4Addr| subnet.contains(&ip).then_some(ip);
    let proto: Proto = val("-p")?.parse().ok()?;
    let mapping = |container_ip, container_port, host_ip, host_port| PortMapping {
        host_ip,
        host_port,
        container_ip,
        container_port,
        proto,
    };
    let same_in_any_mode = |m: &PortMapping, index: usize| {
        [false, true].into_iter().any(|hairpin| {
            firewall::port_rules(bridge, m, hairpin)
                .get(index)
                .is_some_and(|r| r.table == table && r.chain == chain && r.spec() == spec)
        })
    };
    match (table, chain) {
        (Table::Nat, DOCKER_CHAIN) => {
            let (ip, port) = val("--to-destination")?.split_once(':')?;
            let container_ip = inside(ip.parse().ok()?)?;
            let host_ip = match val("-d") {
                Some(d) => host(d)?,
                None => Ipv4Addr::UNSPECIFIED,
            };
            let m = mapping(
                container_ip,
                port.parse().ok()?,
                host_ip,
                val("--dport")?.parse().ok()?,
            );
            Some(same_in_any_mode(&m, 0))
        }
        (Table::Nat, "POSTROUTING") => {
            let c = inside(host(val("-s")?)?)?;
            let m = mapping(c, val("--dport")?.parse().ok()?, Ipv4Addr::UNSPECIFIED, 1);
            Some(same_in_any_mode(&m, 2))
        }
        (Table::Filter, DOCKER_CHAIN) => {
            let dst = inside(host(val("-d")?)?)?;
            match val("-s") {
                // A link rule: parent -> child on --dport, child -> parent from --sport.
                Some(s) => {
                    let src = inside(host(s)?)?;
                    let port: u16 = val("--dport").or_else(|| val("--sport"))?.parse().ok()?;
                    let matches = |parent, child| {
                        firewall::link_rules(bridge, parent, child, port, proto)
                            .iter()
                            .any(|r| r.table == table && r.chain == chain && r.spec() == spec)
                    };
                    Some(matches(src, dst) || matches(dst, src))
                }
                None => {
                    let m = mapping(dst, val("--dport")?.parse().ok()?, Ipv4Addr::UNSPECIFIED, 1);
                    Some(same_in_any_mode(&m, 1))
                }
            }
        }
        _ => Some(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netcore::firewall::Listing;

    const BR: &str = "docker0";

    fn subnet() -> Ipv4Net {
        "172.17.0.0/16".parse().expect("valid")
    }

    fn m(host_port: u16, c: &str, cport: u16) -> PortMapping {
        PortMapping {
            host_ip: Ipv4Addr::UNSPECIFIED,
            host_port,
            container_ip: c.parse().expect("valid"),
            container_port: cport,
            proto: Proto::Tcp,
        }
    }

    fn listing(table: Table, rules: &[Rule]) -> Listing {
        let mut lines: Vec<String> = vec![":DOCKER - [0:0]".into()];
        lines.extend(
            rules
                .iter()
                .filter(|r| r.table == table)
                .map(Rule::save_line),
        );
        Listing::empty(table)
            .apply(&Batch { table, lines })
            .expect("valid listing")
    }

    #[test]
    fn recognises_every_generated_rule_and_nothing_else() {
        for hairpin in [false, true] {
            let mut mapping = m(8080, "172.17.0.2", 80);
            mapping.host_ip = "127.0.0.1".parse().expect("valid");
            for r in firewall::port_rules(BR, &mapping, hairpin) {
                assert!(
                    is_container_rule(r.table, &r.chain, &r.spec(), BR, subnet()),
                    "{r}"
                );
                // A rule naming another bridge, or a container outside the subnet, is not
                // ours (the hairpin DNAT and MASQUERADE name no bridge: the subnet decides).
                assert_eq!(
                    is_container_rule(r.table, &r.chain, &r.spec(), "br1", subnet()),
                    !r.spec().contains(BR),
                    "{r}"
                );
                assert!(!is_container_rule(
                    r.table,
                    &r.chain,
                    &r.spec(),
                    BR,
                    "10.0.0.0/8".parse().expect("valid")
                ));
            }
        }
        for r in firewall::link_rules(
            BR,
            "172.17.0.2".parse().expect("valid"),
            "172.17.0.3".parse().expect("valid"),
            5432,
            Proto::Udp,
        ) {
            assert!(
                is_container_rule(r.table, &r.chain, &r.spec(), BR, subnet()),
                "{r}"
            );
        }
        let foreign = [
            (
                Table::Nat,
                "POSTROUTING",
                "-s 172.17.0.0/16 ! -o docker0 -j MASQUERADE",
            ),
            (Table::Nat, "POSTROUTING", "-o eth0 -j MASQUERADE"),
            (Table::Nat, "DOCKER", "-i docker0 -j RETURN"),
            (
                Table::Nat,
                "DOCKER",
                "-p tcp -m tcp --dport 80 -j DNAT --to-destination 172.17.0.2:80 --random",
            ),
            (Table::Filter, "DOCKER", "-d 172.17.0.2/32 -j ACCEPT"),
            (
                Table::Filter,
                "DOCKER",
                "-d 172.17.0.2/32 ! -i docker0 -o docker0 -p tcp -m tcp --dport 80 -j DROP",
            ),
        ];
        for (table, chain, spec) in foreign {
            assert!(
                !is_container_rule(table, chain, spec, BR, subnet()),
                "{spec}"
            );
        }
    }

    #[test]
    fn plan_adds_missing_copies_and_removes_only_our_surplus() {
        let a = m(8080, "172.17.0.2", 80);
        let b = m(8081, "172.17.0.2", 80); // same container port: shared filter/masq rules
        let stale = m(9000, "172.17.0.9", 90);
        let mut wanted = firewall::port_rules(BR, &a, false);
        wanted.extend(firewall::port_rules(BR, &b, false));
        // The kernel has a's rules, the stale mapping's rules, and a user rule.
        let mut present = firewall::port_rules(BR, &a, false);
        present.extend(firewall::port_rules(BR, &stale, false));
        let user = Rule::from_spec(
            Table::Nat,
            "POSTROUTING",
            netcore::firewall::Place::Append,
            "-o eth0 -j MASQUERADE",
        );
        present.push(user.clone());
        for table in [Table::Nat, Table::Filter] {
            let l = listing(table, &present);
            let batch = plan(table, &l, &wanted, BR, subnet()).expect("differs");
            let after = l.apply(&batch).expect("applies");
            for chain in container_chains(table) {
                let mut want: Vec<String> = wanted
                    .iter()
                    .filter(|r| r.table == table && r.chain == *chain)
                    .map(Rule::spec)
                    .collect();
                if table == Table::Nat && *chain == "POSTROUTING" {
                    want.insert(0, user.spec());
                }
                let mut got = after.chain(chain).expect("chain").rules.clone();
                got.sort();
                want.sort();
                assert_eq!(got, want, "{table} {chain}");
            }
            // Idempotent: nothing left to do.
            assert_eq!(plan(table, &after, &wanted, BR, subnet()), None);
        }
        // Teardown's use: nothing wanted removes all of ours, keeps the user's rule.
        let l = listing(Table::Nat, &present);
        let after = l
            .apply(&plan(Table::Nat, &l, &[], BR, subnet()).expect("removes"))
            .expect("applies");
        assert_eq!(
            after.chain("POSTROUTING").expect("builtin").rules,
            [user.spec()]
        );
        assert!(after.chain("DOCKER").expect("kept").rules.is_empty());
    }
}
