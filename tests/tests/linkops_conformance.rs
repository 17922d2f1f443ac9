//! The `LinkOps` conformance suite: one set of checks every kernel backend must pass.
//!
//! Each case runs in a fresh network namespace with a backend made inside it, and asserts
//! through the kernel (`ip -j`, via `testns` and `e2e_tests::kernel_*`), never through the
//! backend under test: a backend that agreed with itself but not with the kernel would fail.
//!
//! Adding a backend is one more `#[test]` calling [`conformance`].
//!
//! backend-mock's `FakeHost` runs the same cases: it has no kernel, so its read-back is its
//! own inspector (`FakeHost::snapshot`), which is not the `LinkOps` interface under test
//! either. The links and addresses a case sets up "behind the backend's back" are made with
//! `ip` on the kernel and with the fake's builders on the fake; the two cases whose setup is
//! kernel routing itself (multipath, blackhole, other tables) and alias labels run on the
//! kernel backends only.

use std::cell::RefCell;
use std::net::Ipv4Addr;
use std::panic::{AssertUnwindSafe, catch_unwind};

use backend_mock::FakeHost;

use e2e_tests::{KernelRoute, kernel_index, kernel_links, kernel_routes_v4, route_key};
use ipnet::Ipv4Net;
use netcore::mac::MacAddr;
use netcore::ops::{BridgeSpec, LinkInfo, LinkOps, OpsErrorKind, RouteV4};
use testns::run;

#[test]
fn ioctl_backend_conforms() {
    if !testns::can_run_kernel_tests("ioctl_backend_conforms") {
        return;
    }
    conformance("backend-ioctl", || {
        backend_ioctl::IoctlLinks::new().expect("open the ioctl socket")
    });
}

#[test]
fn netlink_backend_conforms() {
    if !testns::can_run_kernel_tests("netlink_backend_conforms") {
        return;
    }
    conformance("backend-netlink", || {
        backend_netlink::NetlinkLinks::new().expect("open the netlink socket")
    });
}

#[test]
fn fake_host_conforms() {
    let mut failed = Vec::new();
    for &(name, case) in CASES {
        if KERNEL_ONLY.contains(&name) {
            continue;
        }
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            let host = FakeHost::new();
            FAKE.with(|f| *f.borrow_mut() = Some(host.clone()));
            let mut ops = host.clone();
            case(&mut ops);
            FAKE.with(|f| *f.borrow_mut() = None);
        }));
        if outcome.is_err() {
            FAKE.with(|f| *f.borrow_mut() = None);
            eprintln!("backend-mock: conformance case {name} FAILED");
            failed.push(name);
        }
    }
    assert!(failed.is_empty(), "backend-mock: cases failed: {failed:?}");
}

/// Cases whose setup is the kernel's own routing (multipath, blackhole and other tables)
/// or alias labels, which the fake host does not model.
const KERNEL_ONLY: &[&str] = &["links_report_what_ip_reports", "routes_are_the_main_table"];

thread_local! {
    /// Set while a case runs against the fake host: the read-back goes to its inspector.
    static FAKE: RefCell<Option<FakeHost>> = const { RefCell::new(None) };
}

/// The links as the host shows them: `ip -j` on the kernel, the inspector on the fake.
fn observed_links() -> Vec<LinkInfo> {
    FAKE.with(|f| match &*f.borrow() {
        Some(host) => host.snapshot().links,
        None => kernel_links(),
    })
}

fn observed(name: &str) -> Option<LinkInfo> {
    observed_links().into_iter().find(|l| l.name == name)
}

fn observed_link(name: &str) -> LinkInfo {
    observed(name).unwrap_or_else(|| panic!("the host has no link {name}"))
}

fn observed_addrs4(name: &str) -> Vec<String> {
    observed_link(name)
        .addrs
        .iter()
        .map(ToString::to_string)
        .collect()
}

/// A veth pair made behind the backend's back.
fn foreign_veth(name: &str, peer: &str) {
    let fake = FAKE.with(|f| f.borrow().clone());
    match fake {
        Some(host) => {
            for n in [name, peer] {
                let index = host
                    .snapshot()
                    .links
                    .iter()
                    .map(|l| l.index)
                    .max()
                    .unwrap_or(0)
                    + 1;
                let _ = host.clone().with_link(LinkInfo {
                    name: n.into(),
                    index,
                    kind: Some("veth".into()),
                    mac: Some(MacAddr([0x02, 0, 0, 0, 0, index as u8])),
                    mtu: 1500,
                    up: false,
                    addrs: Vec::new(),
                });
            }
        }
        None => {
            run(&[
                "ip", "link", "add", name, "type", "veth", "peer", "name", peer,
            ]);
        }
    }
}

type Case = (&'static str, fn(&mut dyn LinkOps));

const CASES: &[Case] = &[
    (
        "create_bridge_is_down_with_its_mac",
        create_bridge_is_down_with_its_mac,
    ),
    (
        "create_bridge_sets_mtu_when_given",
        create_bridge_sets_mtu_when_given,
    ),
    (
        "create_twice_is_already_exists",
        create_twice_is_already_exists,
    ),
    ("long_name_creates_nothing", long_name_creates_nothing),
    ("add_addr_shows_in_kernel", add_addr_shows_in_kernel),
    (
        "add_same_addr_twice_is_already_exists",
        add_same_addr_twice_is_already_exists,
    ),
    ("del_addr_removes_it", del_addr_removes_it),
    (
        "set_up_and_down_flip_the_flag",
        set_up_and_down_flip_the_flag,
    ),
    ("set_mtu_changes_mtu", set_mtu_changes_mtu),
    ("links_report_what_ip_reports", links_report_what_ip_reports),
    ("routes_are_the_main_table", routes_are_the_main_table),
    ("unknown_link_is_not_found", unknown_link_is_not_found),
    (
        "delete_link_removes_an_up_bridge",
        delete_link_removes_an_up_bridge,
    ),
];

/// Runs every case, each in a fresh namespace with a backend from `make` (called inside it,
/// so the backend's sockets belong to that namespace). Reports all failing cases at the end
/// rather than stopping at the first; each failure's panic message is printed as it happens.
fn conformance<L: LinkOps>(backend: &str, make: impl Fn() -> L + Copy + Send + 'static) {
    let mut failed = Vec::new();
    for &(name, case) in CASES {
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            testns::in_netns(move || {
                let mut ops = make();
                case(&mut ops);
            })
        }));
        if outcome.is_err() {
            eprintln!("{backend}: conformance case {name} FAILED");
            failed.push(name);
        }
    }
    assert!(
        failed.is_empty(),
        "{backend}: {} of {} conformance cases failed: {failed:?}",
        failed.len(),
        CASES.len()
    );
}

const MAC: MacAddr = MacAddr([0x02, 0x42, 0xde, 0xad, 0xbe, 0x01]);
const OTHER_MAC: MacAddr = MacAddr([0x02, 0x42, 0xde, 0xad, 0xbe, 0x02]);

fn net(s: &str) -> Ipv4Net {
    s.parse().expect("test network")
}

fn spec(name: &str, mtu: Option<u32>) -> BridgeSpec {
    BridgeSpec {
        name: name.into(),
        mac: MAC,
        mtu,
        mcast_snooping: true,
    }
}

/// A bridge made by the backend under test (the case fails if creation does).
fn bridge(ops: &mut dyn LinkOps, name: &str) {
    ops.create_bridge(&spec(name, None))
        .unwrap_or_else(|e| panic!("create_bridge {name}: {e}"));
}

fn create_bridge_is_down_with_its_mac(ops: &mut dyn LinkOps) {
    bridge(ops, "cfbr0");
    let l = observed_link("cfbr0");
    assert_eq!(l.kind.as_deref(), Some("bridge"), "{l:?}");
    assert_eq!(l.mac, Some(MAC), "{l:?}");
    assert_eq!(l.mtu, 1500, "kernel default MTU: {l:?}");
    assert!(!l.up, "a new bridge is down: {l:?}");
    assert_eq!(observed_addrs4("cfbr0"), Vec::<String>::new());
    // Nothing else was made.
    let names: Vec<String> = observed_links().into_iter().map(|l| l.name).collect();
    assert_eq!(names, ["lo", "cfbr0"]);
}

fn create_bridge_sets_mtu_when_given(ops: &mut dyn LinkOps) {
    for (name, mtu) in [("cfbr0", 1400), ("cfbr1", 9000)] {
        ops.create_bridge(&spec(name, Some(mtu)))
            .unwrap_or_else(|e| panic!("create {name} mtu {mtu}: {e}"));
        let l = observed_link(name);
        assert_eq!(l.mtu, mtu, "{l:?}");
        assert_eq!(l.mac, Some(MAC), "{l:?}");
        assert!(!l.up, "{l:?}");
    }
}

fn create_twice_is_already_exists(ops: &mut dyn LinkOps) {
    bridge(ops, "cfbr0");
    let err = ops
        .create_bridge(&BridgeSpec {
            name: "cfbr0".into(),
            mac: OTHER_MAC,
            mtu: Some(1400),
            mcast_snooping: true,
        })
        .expect_err("second create");
    assert_eq!(err.kind, OpsErrorKind::AlreadyExists, "{err}");
    assert!(
        err.to_string().starts_with("create bridge cfbr0: "),
        "error names op and link: {err}"
    );
    // The failed attempt neither changed nor removed the existing bridge.
    let l = observed_link("cfbr0");
    assert_eq!(l.mac, Some(MAC), "{l:?}");
    assert_eq!(l.mtu, 1500, "{l:?}");
}

fn long_name_creates_nothing(ops: &mut dyn LinkOps) {
    let long = "cfbr0123456789ab"; // 16 bytes: one too many
    let err = ops
        .create_bridge(&spec(long, None))
        .expect_err("16-byte name");
    assert!(err.to_string().contains(long), "{err}");
    let names: Vec<String> = observed_links().into_iter().map(|l| l.name).collect();
    assert_eq!(names, ["lo"], "not even a truncated {:?}", &long[..15]);
}

fn add_addr_shows_in_kernel(ops: &mut dyn LinkOps) {
    bridge(ops, "cfbr0");
    ops.add_addr("cfbr0", net("172.30.0.1/16"))
        .expect("add_addr");
    assert_eq!(observed_addrs4("cfbr0"), ["172.30.0.1/16"]);
}

fn add_same_addr_twice_is_already_exists(ops: &mut dyn LinkOps) {
    bridge(ops, "cfbr0");
    ops.add_addr("cfbr0", net("172.30.0.1/16"))
        .expect("add_addr");
    let err = ops
        .add_addr("cfbr0", net("172.30.0.1/16"))
        .expect_err("same address again");
    assert_eq!(err.kind, OpsErrorKind::AlreadyExists, "{err}");
    assert!(err.to_string().contains("cfbr0"), "{err}");
    assert_eq!(observed_addrs4("cfbr0"), ["172.30.0.1/16"]);
}

fn del_addr_removes_it(ops: &mut dyn LinkOps) {
    bridge(ops, "cfbr0");
    ops.add_addr("cfbr0", net("172.30.0.1/16"))
        .expect("add_addr");
    ops.del_addr("cfbr0", net("172.30.0.1/16"))
        .expect("del_addr");
    assert_eq!(observed_addrs4("cfbr0"), Vec::<String>::new());
    let err = ops
        .del_addr("cfbr0", net("172.30.0.1/16"))
        .expect_err("already gone");
    assert!(err.to_string().contains("cfbr0"), "{err}");
}

fn set_up_and_down_flip_the_flag(ops: &mut dyn LinkOps) {
    bridge(ops, "cfbr0");
    ops.set_up("cfbr0").expect("set_up");
    assert!(observed_link("cfbr0").up);
    ops.set_up("cfbr0").expect("set_up again is fine");
    ops.set_down("cfbr0").expect("set_down");
    assert!(!observed_link("cfbr0").up);
}

fn set_mtu_changes_mtu(ops: &mut dyn LinkOps) {
    bridge(ops, "cfbr0");
    ops.set_mtu("cfbr0", 1400).expect("set_mtu");
    assert_eq!(observed_link("cfbr0").mtu, 1400);
    // A link the backend did not create, too.
    foreign_veth("cfv0", "cfv1");
    ops.set_mtu("cfv0", 1300).expect("set_mtu on veth");
    assert_eq!(observed_link("cfv0").mtu, 1300);
}

fn links_report_what_ip_reports(ops: &mut dyn LinkOps) {
    bridge(ops, "cfbr0");
    ops.add_addr("cfbr0", net("172.30.0.1/16"))
        .expect("add_addr");
    ops.set_up("cfbr0").expect("set_up");
    // Links, addresses and flags the backend did not make: a veth pair, one end up with a
    // primary and a secondary address, the other down with an address under an alias label.
    run(&[
        "ip", "link", "add", "cfv0", "type", "veth", "peer", "name", "cfv1",
    ]);
    run(&["ip", "link", "set", "cfv0", "mtu", "1400", "up"]);
    run(&["ip", "addr", "add", "10.20.0.1/24", "dev", "cfv0"]);
    run(&["ip", "addr", "add", "10.20.0.2/24", "dev", "cfv0"]);
    run(&[
        "ip",
        "addr",
        "add",
        "10.21.0.1/28",
        "dev",
        "cfv1",
        "label",
        "cfv1:a",
    ]);

    let mut got: Vec<LinkInfo> = ops.links().expect("links");
    got.sort_by_key(|l| l.index);
    let want = kernel_links();
    // Guard against a vacuous comparison: the setup is really there.
    let names: Vec<&str> = want.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["lo", "cfbr0", "cfv1", "cfv0"]);
    let br = &want[1];
    assert_eq!(
        (br.kind.as_deref(), br.mac, br.up, br.addrs.clone()),
        (Some("bridge"), Some(MAC), true, vec![net("172.30.0.1/16")])
    );
    assert_eq!(got, want);
}

fn routes_are_the_main_table(ops: &mut dyn LinkOps) {
    bridge(ops, "cfbr0");
    ops.add_addr("cfbr0", net("10.8.0.1/24")).expect("add_addr");
    ops.set_up("cfbr0").expect("set_up");
    let idx = kernel_index("cfbr0");
    run(&["ip", "route", "add", "10.9.0.0/24", "dev", "cfbr0"]);
    run(&["ip", "route", "add", "10.10.0.0/16", "via", "10.8.0.254"]);
    run(&["ip", "route", "add", "10.13.0.5", "dev", "cfbr0"]);
    run(&["ip", "route", "add", "default", "via", "10.8.0.254"]);
    run(&["ip", "route", "add", "blackhole", "10.12.0.0/24"]);
    run(&[
        "ip",
        "route",
        "add",
        "10.14.0.0/24",
        "nexthop",
        "via",
        "10.8.0.2",
        "nexthop",
        "via",
        "10.8.0.3",
    ]);
    run(&[
        "ip",
        "route",
        "add",
        "10.11.0.0/24",
        "dev",
        "cfbr0",
        "table",
        "100",
    ]);

    let got = ops.routes_v4().expect("routes_v4");
    let want = kernel_routes_v4();

    let r = |dst: Option<&str>, gateway: Option<[u8; 4]>, oif: Option<u32>| RouteV4 {
        dst: dst.map(net),
        gateway: gateway.map(Ipv4Addr::from),
        oif,
    };
    // The kernel really has what the case set up (so the comparison below is not vacuous),
    // and the other table's route is not in the main table.
    let plain: Vec<RouteV4> = want.iter().map(|k| k.route).collect();
    for expected in [
        r(Some("10.8.0.0/24"), None, Some(idx)),
        r(Some("10.9.0.0/24"), None, Some(idx)),
        r(Some("10.10.0.0/16"), Some([10, 8, 0, 254]), Some(idx)),
        r(Some("10.13.0.5/32"), None, Some(idx)),
        r(None, Some([10, 8, 0, 254]), Some(idx)),
        r(Some("10.12.0.0/24"), None, None),
    ] {
        assert!(
            plain.contains(&expected),
            "kernel lacks {expected:?}: {plain:?}"
        );
    }
    assert!(
        got.iter().all(|g| g.dst != Some(net("10.11.0.0/24"))),
        "a route of table 100 leaked into the main table: {got:?}"
    );
    assert_same_routes(&got, &want);
}

/// Every kernel route has exactly one backend route and vice versa; a multipath route is
/// matched on its destination only (see [`KernelRoute`]).
fn assert_same_routes(got: &[RouteV4], want: &[KernelRoute]) {
    let mut left: Vec<RouteV4> = got.to_vec();
    for k in want {
        let pos = left.iter().position(|g| {
            if k.multipath {
                g.dst == k.route.dst
            } else {
                *g == k.route
            }
        });
        match pos {
            Some(i) => {
                left.remove(i);
            }
            None => panic!("backend lacks kernel route {k:?}; backend has {got:?}"),
        }
    }
    left.sort_by_key(route_key);
    assert!(
        left.is_empty(),
        "backend has routes the kernel does not: {left:?}"
    );
}

fn unknown_link_is_not_found(ops: &mut dyn LinkOps) {
    let l = "cfnosuch0";
    let a = net("172.30.0.1/16");
    let results = [
        ("add_addr", ops.add_addr(l, a)),
        ("del_addr", ops.del_addr(l, a)),
        ("set_mtu", ops.set_mtu(l, 1400)),
        ("set_up", ops.set_up(l)),
        ("set_down", ops.set_down(l)),
        ("delete_link", ops.delete_link(l)),
    ];
    for (what, res) in results {
        let err = res.expect_err(what);
        assert_eq!(err.kind, OpsErrorKind::NotFound, "{what}: {err}");
        assert!(err.to_string().contains(l), "{what} names the link: {err}");
    }
}

fn delete_link_removes_an_up_bridge(ops: &mut dyn LinkOps) {
    bridge(ops, "cfbr0");
    ops.add_addr("cfbr0", net("172.30.0.1/16"))
        .expect("add_addr");
    ops.set_up("cfbr0").expect("set_up");
    ops.delete_link("cfbr0").expect("delete_link");
    assert!(observed("cfbr0").is_none(), "bridge still there");
    let err = ops.delete_link("cfbr0").expect_err("gone");
    assert_eq!(err.kind, OpsErrorKind::NotFound, "{err}");
    // The name is free again.
    bridge(ops, "cfbr0");
    assert!(observed("cfbr0").is_some());
}
