//! Golden files for the rule sets: what init applies on empty tables, and what
//! `iptables-save` then prints, for every option combination; plus the per-port and link
//! rules. `UPDATE_GOLDEN=1 cargo test -p netcore --test firewall_golden` rewrites them.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use ipnet::Ipv4Net;
use netcore::firewall::{
    Batch, BridgeFirewall, Listing, Op, PortMapping, RuleSet, Table, bridge_rules, link_rules,
    plan_add, port_rules,
};
use netcore::ports::Proto;

/// Compares `actual` with the golden file `rel` (under tests/golden), or writes it when
/// `UPDATE_GOLDEN=1`. A mismatch fails with a line diff.
fn check_golden(rel: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(rel);
    if std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1") {
        std::fs::create_dir_all(path.parent().expect("golden files live in a directory"))
            .expect("create golden directory");
        std::fs::write(&path, actual).expect("write golden file");
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run with UPDATE_GOLDEN=1 to create it",
            path.display()
        )
    });
    if expected != actual {
        panic!(
            "{} differs from the golden file (- golden, + actual; UPDATE_GOLDEN=1 to accept):\n{}",
            path.display(),
            line_diff(&expected, actual)
        );
    }
}

/// A minimal line diff (longest common subsequence), enough to read a golden mismatch.
fn line_diff(old: &str, new: &str) -> String {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, String::new());
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            out.push_str(&format!("  {}\n", a[i]));
            i += 1;
            j += 1;
        } else if j < b.len() && (i == a.len() || lcs[i][j + 1] >= lcs[i + 1][j]) {
            out.push_str(&format!("+ {}\n", b[j]));
            j += 1;
        } else {
            out.push_str(&format!("- {}\n", a[i]));
            i += 1;
        }
    }
    if old.ends_with('\n') != new.ends_with('\n') {
        out.push_str("(the files differ in their final newline)\n");
    }
    out
}

fn subnet() -> Ipv4Net {
    "172.17.0.1/16".parse().expect("valid net")
}

fn combos() -> Vec<BridgeFirewall> {
    let mut v = Vec::new();
    for icc in [true, false] {
        for ip_masq in [true, false] {
            for hairpin in [false, true] {
                v.push(BridgeFirewall {
                    bridge: "docker0".to_owned(),
                    subnet: subnet(),
                    icc,
                    ip_masq,
                    hairpin,
                });
            }
        }
    }
    v
}

fn combo_name(fw: &BridgeFirewall) -> String {
    format!(
        "icc-{}_ip-masq-{}_hairpin-{}",
        fw.icc, fw.ip_masq, fw.hairpin
    )
}

/// The batches init applies to empty tables, and the listings they leave.
fn on_empty(set: &RuleSet) -> (Vec<Batch>, Vec<Listing>) {
    let mut batches = Vec::new();
    let mut listings = Vec::new();
    for table in Table::ALL {
        let empty = Listing::empty(table);
        let batch = plan_add(set, table, &empty).expect("empty tables lack every rule");
        listings.push(
            empty
                .apply(&batch)
                .expect("the batch applies to empty tables"),
        );
        batches.push(batch);
    }
    (batches, listings)
}

#[test]
fn bridge_rules_for_every_combination() {
    for fw in combos() {
        let (batches, listings) = on_empty(&bridge_rules(&fw));
        let restore: String = batches.iter().map(Batch::render).collect();
        let save: String = listings.iter().map(Listing::render).collect();
        let name = combo_name(&fw);
        check_golden(&format!("rules/{name}.restore"), &restore);
        check_golden(&format!("rules/{name}.save"), &save);
    }
}

#[test]
fn the_bridge_subnet_is_masked() {
    let mut fw = combos().remove(0);
    fw.subnet = "10.20.30.40/24".parse().expect("valid net");
    let (_, listings) = on_empty(&bridge_rules(&fw));
    let nat = listings[1].render();
    assert!(
        nat.contains("-A POSTROUTING -s 10.20.30.0/24 ! -o docker0 -j MASQUERADE\n"),
        "{nat}"
    );
    assert!(!nat.contains("10.20.30.40"), "{nat}");
}

fn mappings() -> [PortMapping; 2] {
    [
        PortMapping {
            host_ip: Ipv4Addr::UNSPECIFIED,
            host_port: 49153,
            container_ip: Ipv4Addr::new(172, 17, 0, 2),
            container_port: 80,
            proto: Proto::Tcp,
        },
        PortMapping {
            host_ip: Ipv4Addr::LOCALHOST,
            host_port: 8080,
            container_ip: Ipv4Addr::new(172, 17, 0, 3),
            container_port: 53,
            proto: Proto::Udp,
        },
    ]
}

fn argv_lines(rules: &[netcore::firewall::Rule]) -> String {
    rules
        .iter()
        .map(|r| format!("iptables {}\n", r.argv(Op::Append).join(" ")))
        .collect()
}

#[test]
fn port_mapping_rules() {
    let mut out = String::new();
    for hairpin in [false, true] {
        for m in mappings() {
            out.push_str(&format!(
                "## {} {}:{} -> {}:{}, {}\n",
                m.proto,
                m.host_ip,
                m.host_port,
                m.container_ip,
                m.container_port,
                if hairpin {
                    "hairpin (--userland-proxy=false)"
                } else {
                    "userland proxy"
                }
            ));
            out.push_str(&argv_lines(&port_rules("docker0", &m, hairpin)));
        }
    }
    check_golden("ports/mappings.txt", &out);
}

#[test]
fn link_rule_pairs() {
    let parent = Ipv4Addr::new(172, 17, 0, 3);
    let child = Ipv4Addr::new(172, 17, 0, 2);
    let mut out = String::new();
    for (port, proto) in [(5432, Proto::Tcp), (53, Proto::Udp)] {
        out.push_str(&format!(
            "## parent {parent} -> child {child}, {port}/{proto}\n"
        ));
        out.push_str(&argv_lines(&link_rules(
            "docker0", parent, child, port, proto,
        )));
    }
    check_golden("ports/links.txt", &out);
}

#[test]
fn line_diff_marks_changes() {
    let d = line_diff("a\nb\nc\n", "a\nx\nc\n");
    assert_eq!(d, "  a\n+ x\n- b\n  c\n");
}
