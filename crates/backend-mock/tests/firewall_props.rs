//! Properties of the iptables model over random batches.
#![allow(clippy::unwrap_used)]

use backend_mock::{FakeHost, RestoreError, Rule};
use netcore::firewall::{Batch, Table};
use netcore::ops::FirewallOps;
use proptest::prelude::*;

/// Lines over a few chains, chosen so that random sequences hit every error path.
fn line() -> impl Strategy<Value = String> {
    let chain = prop::sample::select(vec!["A", "B", "FORWARD", "INPUT"]);
    let target = prop::sample::select(vec!["A", "B", "ACCEPT", "DROP", "RETURN", "C"]);
    let iface = prop::sample::select(vec!["eth0", "docker0", "br1"]);
    prop_oneof![
        chain.clone().prop_map(|c| format!(":{c} - [0:0]")),
        chain.clone().prop_map(|c| format!("-N {c}")),
        chain.clone().prop_map(|c| format!("-X {c}")),
        chain.clone().prop_map(|c| format!("-F {c}")),
        (chain.clone(), iface.clone(), target.clone())
            .prop_map(|(c, i, t)| format!("-A {c} -i {i} -j {t}")),
        (chain.clone(), 1usize..4, iface.clone(), target.clone())
            .prop_map(|(c, n, i, t)| format!("-I {c} {n} -i {i} -j {t}")),
        (chain.clone(), iface, target).prop_map(|(c, i, t)| format!("-D {c} -i {i} -j {t}")),
        (chain, 1usize..4).prop_map(|(c, n)| format!("-D {c} {n}")),
    ]
}

fn batch(lines: &[String]) -> Batch {
    Batch {
        table: Table::Filter,
        lines: lines.to_vec(),
    }
}

proptest! {
    /// A batch is its lines applied one after another, or, if one fails, nothing at all and
    /// an error naming the first line that fails on its own.
    #[test]
    fn a_batch_is_all_its_lines_or_none(
        setup in prop::collection::vec(line(), 0..8),
        lines in prop::collection::vec(line(), 1..8),
    ) {
        let host = FakeHost::new();
        let mut fw = host.firewall_ops();
        for l in &setup {
            let _ = fw.apply(&batch(std::slice::from_ref(l)));
        }
        let before = host.snapshot();

        let stepwise = FakeHost::new().with_rules(Table::Filter, &host.rules(Table::Filter)).unwrap();
        let mut step_fw = stepwise.firewall_ops();
        let first_failure = lines
            .iter()
            .position(|l| step_fw.apply(&batch(std::slice::from_ref(l))).is_err());

        match fw.apply(&batch(&lines)) {
            Ok(()) => {
                prop_assert_eq!(first_failure, None);
                prop_assert_eq!(host.rules(Table::Filter), stepwise.rules(Table::Filter));
            }
            Err(err) => {
                let restore = err.source.downcast_ref::<RestoreError>().unwrap();
                prop_assert_eq!(Some(restore.line - 1), first_failure);
                prop_assert_eq!(host.snapshot(), before);
            }
        }
    }

    /// What `save` prints loads back into the same table.
    #[test]
    fn save_output_loads_back_identically(lines in prop::collection::vec(line(), 0..16)) {
        let host = FakeHost::new();
        let mut fw = host.firewall_ops();
        for l in &lines {
            let _ = fw.apply(&batch(std::slice::from_ref(l)));
        }
        let saved = fw.save(Table::Filter).unwrap();
        let reloaded = FakeHost::new().with_rules(Table::Filter, &saved).unwrap();
        prop_assert_eq!(reloaded.table(Table::Filter), host.table(Table::Filter));
    }

    /// Canonicalising a canonical rule changes nothing.
    #[test]
    fn canonical_form_is_a_fixed_point(
        src in prop::option::of((any::<[u8; 4]>(), 0u8..=32)),
        neg_dst in any::<bool>(),
        dst in prop::option::of((any::<[u8; 4]>(), 0u8..=32)),
        proto in prop::option::of(prop::sample::select(vec!["tcp", "udp", "TCP", "6"])),
        dport in prop::option::of(1u16..),
        ctstate in prop::option::of(prop::sample::select(vec!["NEW", "ESTABLISHED,RELATED", "RELATED,NEW"])),
        target in prop::sample::select(vec!["ACCEPT", "DROP", "DOCKER"]),
    ) {
        let mut spec = String::new();
        if let Some((a, l)) = dst {
            let bang = if neg_dst { "! " } else { "" };
            spec += &format!("{bang}--dst {}.{}.{}.{}/{l} ", a[0], a[1], a[2], a[3]);
        }
        if let Some(state) = ctstate {
            spec += &format!("-m conntrack --ctstate {state} ");
        }
        if let Some((a, l)) = src {
            spec += &format!("-s {}.{}.{}.{}/{l} ", a[0], a[1], a[2], a[3]);
        }
        if let Some(p) = proto {
            spec += &format!("-p {p} ");
            if let Some(port) = dport {
                spec += &format!("--destination-port {port} ");
            }
        }
        spec += &format!("-j {target}");
        let once = Rule::parse(&spec).unwrap();
        let twice = Rule::parse(&once.to_string()).unwrap();
        prop_assert_eq!(&twice, &once);
        prop_assert_eq!(once.target(), Some(target));
    }
}
