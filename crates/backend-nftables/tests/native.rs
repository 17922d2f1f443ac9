//! The native nftables table (`--firewall-backend nftables`) against the real kernel and the
//! real `nft`, each case in a fresh network namespace. What is checked is read back with
//! `nft list` (and, for the encoding, by dumping what the kernel keeps for a table `nft -f`
//! made), never through the backend's own bookkeeping alone.
//!
//! The expected table texts are golden files under `tests/golden/nft/` at the workspace root;
//! `UPDATE_GOLDEN=1` rewrites them from `NftTable::render`.

// Test code: a failed step should panic with its error, which is what unwrap does.
#![allow(clippy::unwrap_used)]

use std::net::Ipv4Addr;
use std::path::PathBuf;

use backend_nftables::Nftables;
use backend_nftables::nl::{self, Attrs, Nfnl};
use netcore::firewall::{Batch, BridgeFirewall, PortMapping, Table};
use netcore::nftables::{
    self, Element, NftOp, NftTable, SetDef, bridge_table, dnat_element, link_element,
    shared_port_elements,
};
use netcore::ops::{FirewallOps, OpsErrorKind};
use netcore::ports::Proto;

fn fw(icc: bool, ip_masq: bool, hairpin: bool) -> BridgeFirewall {
    BridgeFirewall {
        bridge: "docker0".to_owned(),
        subnet: "172.17.0.1/16".parse().unwrap(),
        icc,
        ip_masq,
        hairpin,
    }
}

fn default_table() -> NftTable {
    bridge_table(&fw(true, true, false))
}

fn nft(args: &[&str]) -> String {
    testns::run(&[&["nft"], args].concat())
}

fn listed() -> String {
    nft(&["list", "table", "ip", nftables::TABLE])
}

fn replace(table: NftTable, elements: Vec<Element>) -> NftOp {
    NftOp::ReplaceTable { table, elements }
}

/// The option sets of the golden files: (file name, icc, ip_masq, hairpin).
const OPTION_SETS: &[(&str, bool, bool, bool)] = &[
    ("default", true, true, false),
    ("icc-false", false, true, false),
    ("userland-proxy-false", true, true, true),
    ("icc-false_userland-proxy-false", false, true, true),
    ("ip-masq-false", true, false, false),
];

/// Compares `actual` with `tests/golden/nft/<name>.nft`, or writes it with `UPDATE_GOLDEN=1`.
fn check_golden(name: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/golden/nft")
        .join(format!("{name}.nft"));
    if std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1") {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run with UPDATE_GOLDEN=1 to create it",
            path.display()
        )
    });
    assert_eq!(
        actual,
        expected,
        "{} differs from NftTable::render (UPDATE_GOLDEN=1 to accept)",
        path.display()
    );
}

#[test]
fn the_table_lists_exactly_as_rendered_for_every_option_set() {
    if !testns::can_run_kernel_tests("the_table_lists_exactly_as_rendered_for_every_option_set") {
        return;
    }
    for &(name, icc, ip_masq, hairpin) in OPTION_SETS {
        let table = bridge_table(&fw(icc, ip_masq, hairpin));
        let rendered = table.render();
        check_golden(name, &rendered);
        let listing = testns::in_netns(move || {
            let mut fw = Nftables::open().unwrap();
            fw.nft_apply(&[replace(table, vec![])]).unwrap();
            listed()
        });
        assert_eq!(listing, rendered, "{name}: nft list differs from render()");
    }
}

/// A dumped rule or set: its attributes (type, payload).
type Object = Vec<(u16, Vec<u8>)>;

/// What the kernel keeps of the table's rules and sets, handles left out: the same for a
/// table we made and one `nft -f` made means we sent what nft sends (registers, NAT flags,
/// set types: things `nft list` might print alike even if they differed).
fn kernel_objects() -> (Vec<Object>, Vec<Object>) {
    const NFT_MSG_GETSET: u16 = 10;
    const NFTA_RULE_HANDLE: u16 = 3;
    const NFTA_SET_HANDLE: u16 = 16;
    let mut s = Nfnl::open().unwrap();
    let mut a = Attrs::new();
    a.str(1, nftables::TABLE);
    let strip = |replies: Vec<Vec<u8>>, handle: u16| -> Vec<Object> {
        replies
            .iter()
            .map(|r| {
                nl::attrs(r)
                    .filter(|a| a.ty != handle)
                    .map(|a| (a.ty, a.payload.to_vec()))
                    .collect()
            })
            .collect()
    };
    let rules = strip(s.dump(nl::NFT_MSG_GETRULE, &a).unwrap(), NFTA_RULE_HANDLE);
    let sets = strip(s.dump(NFT_MSG_GETSET, &a).unwrap(), NFTA_SET_HANDLE);
    (rules, sets)
}

#[test]
fn rules_and_sets_are_kept_as_for_nft_itself() {
    if !testns::can_run_kernel_tests("rules_and_sets_are_kept_as_for_nft_itself") {
        return;
    }
    for &(name, icc, ip_masq, hairpin) in OPTION_SETS {
        let table = bridge_table(&fw(icc, ip_masq, hairpin));
        let text = table.render();
        let by_nft = testns::in_netns(move || {
            let path = std::env::temp_dir().join(format!(
                "dockerd-net-native-{}-{name}.nft",
                std::process::id()
            ));
            std::fs::write(&path, text).unwrap();
            nft(&["-f", path.to_str().unwrap()]);
            std::fs::remove_file(&path).unwrap();
            kernel_objects()
        });
        let ours = testns::in_netns(move || {
            let mut fw = Nftables::open().unwrap();
            fw.nft_apply(&[replace(table, vec![])]).unwrap();
            kernel_objects()
        });
        assert!(!by_nft.0.is_empty() && !by_nft.1.is_empty(), "{name}");
        assert_eq!(ours.0, by_nft.0, "{name}: rules differ");
        assert_eq!(ours.1, by_nft.1, "{name}: sets differ");
    }
}

fn mapping(host_ip: Ipv4Addr, host_port: u16, ip: [u8; 4], port: u16, proto: Proto) -> PortMapping {
    PortMapping {
        host_ip,
        host_port,
        container_ip: Ipv4Addr::from(ip),
        container_port: port,
        proto,
    }
}

/// One element of each set and map.
fn one_of_each() -> Vec<Element> {
    let wildcard = mapping(Ipv4Addr::UNSPECIFIED, 8080, [172, 17, 0, 2], 80, Proto::Tcp);
    let local = mapping(Ipv4Addr::LOCALHOST, 5353, [172, 17, 0, 3], 53, Proto::Udp);
    let mut v = vec![dnat_element(&wildcard), dnat_element(&local)];
    v.extend(shared_port_elements(&wildcard));
    v.push(link_element(
        Ipv4Addr::new(172, 17, 0, 4),
        Ipv4Addr::new(172, 17, 0, 2),
        5432,
        Proto::Sctp,
    ));
    v
}

/// `nft list set|map` of one set, with these elements (at most one: nft prints several in
/// its own order).
fn set_listing(set: &SetDef, elem: Option<&Element>) -> String {
    let types = |f: &[nftables::Field]| f.iter().map(|f| f.name()).collect::<Vec<_>>().join(" . ");
    let (kind, ty) = match &set.data {
        Some(d) => ("map", format!("{} : {}", types(&set.key), types(d))),
        None => ("set", types(&set.key)),
    };
    let elements = elem
        .map(|e| format!("\t\telements = {{ {} }}\n", e.render()))
        .unwrap_or_default();
    format!(
        "table ip {} {{\n\t{kind} {} {{\n\t\ttype {ty}\n{elements}\t}}\n}}\n",
        nftables::TABLE,
        set.name
    )
}

fn list_set(set: &SetDef) -> String {
    let kind = if set.data.is_some() { "map" } else { "set" };
    nft(&["list", kind, "ip", nftables::TABLE, set.name])
}

#[test]
fn elements_are_listed_read_back_and_deleted() {
    if !testns::can_run_kernel_tests("elements_are_listed_read_back_and_deleted") {
        return;
    }
    testns::in_netns(|| {
        let table = default_table();
        let sets = table.sets.clone();
        let mut fw = Nftables::open().unwrap();
        fw.nft_apply(&[replace(table, vec![])]).unwrap();
        assert_eq!(fw.nft_elements().unwrap(), Some(vec![]));
        let elems = one_of_each();
        assert_eq!(elems.len(), sets.len(), "one element per set");
        fw.nft_apply(&[NftOp::AddElements(elems.clone())]).unwrap();
        for set in &sets {
            let e = elems.iter().find(|e| e.set == set.name).unwrap();
            assert_eq!(list_set(set), set_listing(set, Some(e)), "{}", set.name);
        }
        let mut sorted = elems.clone();
        sorted.sort();
        assert_eq!(fw.nft_elements().unwrap(), Some(sorted));

        fw.nft_apply(&[NftOp::DelElements(elems)]).unwrap();
        for set in &sets {
            assert_eq!(list_set(set), set_listing(set, None), "{}", set.name);
        }
        assert_eq!(fw.nft_elements().unwrap(), Some(vec![]));
    });
}

#[test]
fn adding_a_present_element_fails_and_changes_nothing() {
    if !testns::can_run_kernel_tests("adding_a_present_element_fails_and_changes_nothing") {
        return;
    }
    testns::in_netns(|| {
        let mut fw = Nftables::open().unwrap();
        let m = mapping(Ipv4Addr::UNSPECIFIED, 8080, [172, 17, 0, 2], 80, Proto::Tcp);
        let present = shared_port_elements(&m)[0].clone();
        fw.nft_apply(&[replace(default_table(), vec![present.clone()])])
            .unwrap();

        let err = fw
            .nft_apply(&[NftOp::AddElements(vec![present.clone()])])
            .unwrap_err();
        assert_eq!(err.kind, OpsErrorKind::AlreadyExists, "{err}");
        assert_eq!(
            err.op, "add element 172.17.0.2 . tcp . 80 to filter-published",
            "{err}"
        );

        // A new element in the same set and one in another set, with the duplicate: neither
        // of the new ones stays.
        let new_same_set = shared_port_elements(&mapping(
            Ipv4Addr::UNSPECIFIED,
            8081,
            [172, 17, 0, 3],
            81,
            Proto::Tcp,
        ))[0]
            .clone();
        let new_other_set = dnat_element(&m);
        let err = fw
            .nft_apply(&[NftOp::AddElements(vec![
                new_other_set,
                new_same_set,
                present.clone(),
            ])])
            .unwrap_err();
        assert_eq!(err.kind, OpsErrorKind::AlreadyExists, "{err}");
        assert!(err.op.contains(&present.render()), "{err}");
        assert_eq!(fw.nft_elements().unwrap(), Some(vec![present]));
    });
}

#[test]
fn deleting_an_absent_element_fails_naming_it() {
    if !testns::can_run_kernel_tests("deleting_an_absent_element_fails_naming_it") {
        return;
    }
    testns::in_netns(|| {
        let mut fw = Nftables::open().unwrap();
        let m = mapping(Ipv4Addr::LOCALHOST, 8080, [172, 17, 0, 2], 80, Proto::Udp);
        let present = dnat_element(&m);
        fw.nft_apply(&[replace(default_table(), vec![present.clone()])])
            .unwrap();
        let absent = link_element(
            Ipv4Addr::new(172, 17, 0, 4),
            Ipv4Addr::new(172, 17, 0, 2),
            5432,
            Proto::Tcp,
        );
        // The present one goes in the same transaction: it must stay.
        let err = fw
            .nft_apply(&[
                NftOp::DelElements(vec![present.clone()]),
                NftOp::DelElements(vec![absent]),
            ])
            .unwrap_err();
        assert_eq!(err.kind, OpsErrorKind::NotFound, "{err}");
        assert_eq!(
            err.op,
            "delete element 172.17.0.4 . 172.17.0.2 . tcp . 5432 from filter-links"
        );
        // The errno is kept.
        let io = err.source.downcast_ref::<std::io::Error>();
        assert_eq!(io.and_then(|e| e.raw_os_error()), Some(2), "{err}");
        assert_eq!(fw.nft_elements().unwrap(), Some(vec![present]));
    });
}

#[test]
fn replacing_the_table_drops_the_old_elements() {
    if !testns::can_run_kernel_tests("replacing_the_table_drops_the_old_elements") {
        return;
    }
    testns::in_netns(|| {
        let mut fw = Nftables::open().unwrap();
        fw.nft_apply(&[replace(default_table(), one_of_each())])
            .unwrap();
        assert_eq!(fw.nft_elements().unwrap().unwrap().len(), 5);
        let icc_off = bridge_table(&fw_opts(false));
        let kept = vec![link_element(
            Ipv4Addr::new(172, 17, 0, 9),
            Ipv4Addr::new(172, 17, 0, 8),
            80,
            Proto::Tcp,
        )];
        fw.nft_apply(&[replace(icc_off.clone(), kept.clone())])
            .unwrap();
        assert_eq!(fw.nft_elements().unwrap(), Some(kept.clone()));
        // The rules are the new options' too (the listing has the elements in their set).
        let listing = listed();
        let with_elements = icc_off.render().replace(
            "\t\ttype ipv4_addr . ipv4_addr . inet_proto . inet_service\n\t}\n\n\tset nat-hairpin",
            &format!(
                "\t\ttype ipv4_addr . ipv4_addr . inet_proto . inet_service\n\t\telements = {{ {} }}\n\t}}\n\n\tset nat-hairpin",
                kept[0].render()
            ),
        );
        assert_ne!(with_elements, icc_off.render(), "the links set comes first");
        assert_eq!(listing, with_elements);
    });
}

fn fw_opts(icc: bool) -> BridgeFirewall {
    fw(icc, true, false)
}

#[test]
fn deleting_the_table_twice_succeeds() {
    if !testns::can_run_kernel_tests("deleting_the_table_twice_succeeds") {
        return;
    }
    testns::in_netns(|| {
        let mut fw = Nftables::open().unwrap();
        fw.nft_apply(&[replace(default_table(), one_of_each())])
            .unwrap();
        fw.nft_apply(&[NftOp::DeleteTable]).unwrap();
        fw.nft_apply(&[NftOp::DeleteTable]).unwrap();
        assert_eq!(nft(&["list", "tables"]), "");
        assert_eq!(fw.nft_elements().unwrap(), None);
    });
}

#[test]
fn a_failing_op_undoes_the_whole_slice() {
    if !testns::can_run_kernel_tests("a_failing_op_undoes_the_whole_slice") {
        return;
    }
    testns::in_netns(|| {
        let mut fw = Nftables::open().unwrap();
        let absent = one_of_each().remove(0);
        let err = fw
            .nft_apply(&[
                replace(default_table(), one_of_each()),
                NftOp::DelElements(vec![absent.clone()]),
                NftOp::DelElements(vec![absent]),
            ])
            .unwrap_err();
        assert_eq!(err.kind, OpsErrorKind::NotFound, "{err}");
        // Nothing of the slice stays: not even the table it created.
        assert_eq!(nft(&["list", "tables"]), "");
        assert_eq!(fw.nft_elements().unwrap(), None);
    });
}

#[test]
fn a_thousand_elements_added_one_by_one() {
    if !testns::can_run_kernel_tests("a_thousand_elements_added_one_by_one") {
        return;
    }
    testns::in_netns(|| {
        let mut fw = Nftables::open().unwrap();
        fw.nft_apply(&[replace(default_table(), vec![])]).unwrap();
        for i in 0..1000u16 {
            let m = mapping(
                Ipv4Addr::UNSPECIFIED,
                10_000 + i,
                [172, 17, (i >> 8) as u8, (i & 0xff) as u8],
                80,
                Proto::Tcp,
            );
            fw.nft_apply(&[NftOp::AddElements(vec![dnat_element(&m)])])
                .unwrap();
        }
        let all = fw.nft_elements().unwrap().unwrap();
        assert_eq!(all.len(), 1000);
        assert!(all.iter().all(|e| e.set == nftables::DNAT_PORTS));
    });
}

#[test]
fn the_iptables_path_still_works_after_native_changes() {
    if !testns::can_run_kernel_tests("the_iptables_path_still_works_after_native_changes") {
        return;
    }
    testns::in_netns(|| {
        let mut fw = Nftables::open().unwrap();
        let batch = |lines: &[&str]| Batch {
            table: Table::Filter,
            lines: lines.iter().map(|l| l.to_string()).collect(),
        };
        fw.apply(&batch(&[
            ":DOCKER - [0:0]",
            "-A DOCKER -i docker0 -j ACCEPT",
        ]))
        .unwrap();
        // The native commit moves the generation on between two iptables-path requests.
        fw.nft_apply(&[replace(default_table(), one_of_each())])
            .unwrap();
        fw.apply(&batch(&[
            "-A DOCKER -i docker1 -j ACCEPT",
            "-D DOCKER -i docker0 -j ACCEPT",
        ]))
        .unwrap();
        let saved = testns::run(&["iptables-nft-save", "-t", "filter"]);
        assert!(saved.contains("-A DOCKER -i docker1 -j ACCEPT"), "{saved}");
        assert!(!saved.contains("docker0"), "{saved}");
        assert_eq!(fw.nft_elements().unwrap().unwrap().len(), 5);
    });
}

#[test]
fn a_published_port_reaches_the_container_through_the_dnat_map() {
    if !testns::can_run_kernel_tests("a_published_port_reaches_the_container_through_the_dnat_map")
    {
        return;
    }
    use std::io::{Read, Write};
    use std::time::Duration;
    testns::in_netns(|| {
        let ip = |args: &[&str]| testns::run(&[&["ip"], args].concat());
        ip(&["link", "add", "docker0", "type", "bridge"]);
        ip(&["addr", "add", "172.17.0.1/16", "dev", "docker0"]);
        ip(&["link", "set", "docker0", "up"]);
        let container = testns::Netns::new();
        let tid = container.tid().to_string();
        ip(&[
            "link", "add", "veth0", "type", "veth", "peer", "name", "eth0", "netns", &tid,
        ]);
        ip(&["link", "set", "veth0", "master", "docker0", "up"]);
        let listener = container.run(|| {
            let ip = |args: &[&str]| testns::run(&[&["ip"], args].concat());
            ip(&["addr", "add", "172.17.0.2/16", "dev", "eth0"]);
            ip(&["link", "set", "eth0", "up"]);
            ip(&["link", "set", "lo", "up"]);
            std::net::TcpListener::bind("172.17.0.2:80").unwrap()
        });

        let mut fw = Nftables::open().unwrap();
        let m = mapping(Ipv4Addr::UNSPECIFIED, 8080, [172, 17, 0, 2], 80, Proto::Tcp);
        fw.nft_apply(&[replace(default_table(), vec![dnat_element(&m)])])
            .unwrap();

        // From the host to its own address: nat-OUTPUT sends it through the map.
        let mut client = std::net::TcpStream::connect_timeout(
            &"172.17.0.1:8080".parse().unwrap(),
            Duration::from_secs(5),
        )
        .unwrap();
        client.write_all(b"ping").unwrap();
        let (mut served, peer) = listener.accept().unwrap();
        assert_eq!(peer.ip(), Ipv4Addr::new(172, 17, 0, 1));
        let mut buf = [0u8; 4];
        served.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"ping");

        // Without the element, nothing answers on 8080 any more.
        fw.nft_apply(&[NftOp::DelElements(vec![dnat_element(&m)])])
            .unwrap();
        assert!(
            std::net::TcpStream::connect_timeout(
                &"172.17.0.1:8080".parse().unwrap(),
                Duration::from_secs(2),
            )
            .is_err()
        );
    });
}
