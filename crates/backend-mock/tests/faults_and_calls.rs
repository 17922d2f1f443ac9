//! FakeHost's call log, fault injection, snapshots and handles.
#![allow(clippy::unwrap_used)]

use backend_mock::{Call, CallRecord, FakeHost, InjectedFault, Op};
use ipnet::Ipv4Net;
use netcore::firewall::{Batch, Policy, Table};
use netcore::mac::MacAddr;
use netcore::ops::{
    BridgeSpec, FirewallOps, IP_FORWARD, LinkOps, OpsError, OpsErrorKind, SysctlOps,
};

fn net(s: &str) -> Ipv4Net {
    s.parse().unwrap()
}

fn spec() -> BridgeSpec {
    BridgeSpec {
        name: "docker0".to_owned(),
        mac: MacAddr([0x02, 0x42, 0, 0, 0, 1]),
        mtu: None,
        mcast_snooping: true,
    }
}

fn nat_masq() -> Batch {
    Batch {
        table: Table::Nat,
        lines: vec!["-A POSTROUTING -s 172.17.42.1/16 ! -o docker0 -j MASQUERADE".to_owned()],
    }
}

/// A six-step sequence through all three traits that stops at the first error, like an init.
fn sequence(
    link: &mut impl LinkOps,
    fw: &mut impl FirewallOps,
    sys: &mut impl SysctlOps,
) -> Result<(), OpsError> {
    link.links()?;
    link.create_bridge(&spec())?;
    link.add_addr("docker0", net("172.17.42.1/16"))?;
    link.set_up("docker0")?;
    fw.save(Table::Nat)?;
    fw.apply(&nat_masq())?;
    fw.set_policy(Table::Filter, "FORWARD", Policy::Drop)?;
    sys.read(IP_FORWARD)?;
    sys.write(IP_FORWARD, "1")
}

#[test]
fn every_call_is_recorded_in_order_with_its_arguments() {
    let host = FakeHost::new();
    let (mut link, mut fw, mut sys) = host.ops();
    sequence(&mut link, &mut fw, &mut sys).unwrap();
    assert_eq!(
        host.calls(),
        vec![
            Call::Links,
            Call::CreateBridge(spec()),
            Call::AddAddr("docker0".to_owned(), net("172.17.42.1/16")),
            Call::SetUp("docker0".to_owned()),
            Call::FwSave(Table::Nat),
            Call::FwApply(nat_masq()),
            Call::SetPolicy(Table::Filter, "FORWARD".to_owned(), Policy::Drop),
            Call::SysctlRead(IP_FORWARD.to_owned()),
            Call::SysctlWrite(IP_FORWARD.to_owned(), "1".to_owned()),
        ]
    );
    let ops: Vec<_> = host.mutations().iter().map(Call::op).collect();
    assert_eq!(
        ops,
        [
            Op::CreateBridge,
            Op::AddAddr,
            Op::SetUp,
            Op::FwApply,
            Op::SetPolicy,
            Op::SysctlWrite
        ]
    );
    assert!(host.history().iter().all(|r| r.error.is_none()));
    host.clear_calls();
    assert!(host.calls().is_empty());
    host.link_ops().routes_v4().unwrap();
    assert_eq!(host.calls(), vec![Call::RoutesV4]);
}

#[test]
fn failed_calls_are_recorded_with_their_error_kind() {
    let mut host = FakeHost::new();
    assert!(host.set_up("nope").is_err());
    assert_eq!(
        host.history(),
        vec![CallRecord {
            call: Call::SetUp("nope".to_owned()),
            error: Some(OpsErrorKind::NotFound),
            injected: false,
        }]
    );
}

#[test]
fn fail_nth_fails_exactly_the_nth_call_of_that_op() {
    let mut host = FakeHost::new()
        .with_bridge("br1", net("10.1.0.1/24"))
        .with_bridge("br2", net("10.2.0.1/24"))
        .with_bridge("br3", net("10.3.0.1/24"));
    host.set_up("br1").unwrap(); // calls before arming are not counted
    host.fail_nth(Op::SetUp, 2);
    assert_eq!(host.pending_faults(), 1);
    host.set_up("br1").unwrap();
    host.set_mtu("br1", 1400).unwrap();
    let err = host.set_up("br2").unwrap_err();
    assert_eq!(err.kind, OpsErrorKind::Other);
    assert!(err.source.downcast_ref::<InjectedFault>().is_some());
    assert!(err.to_string().contains("set br2 up"), "{err}");
    host.set_up("br3").unwrap();
    assert_eq!(host.pending_faults(), 0);
    let failed: Vec<_> = host
        .history()
        .into_iter()
        .filter(|r| r.error.is_some())
        .collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].call, Call::SetUp("br2".to_owned()));
    assert!(failed[0].injected);
}

#[test]
fn an_injected_failure_changes_nothing() {
    let host = FakeHost::new();
    let before = host.snapshot();
    let (mut link, mut fw, mut sys) = host.ops();
    host.fail_nth(Op::CreateBridge, 1);
    host.fail_nth(Op::FwApply, 1);
    host.fail_nth(Op::SysctlWrite, 1);
    host.fail_nth(Op::SetPolicy, 1);
    assert!(link.create_bridge(&spec()).is_err());
    assert!(fw.apply(&nat_masq()).is_err());
    assert!(sys.write(IP_FORWARD, "1").is_err());
    assert!(
        fw.set_policy(Table::Filter, "FORWARD", Policy::Drop)
            .is_err()
    );
    assert_eq!(host.snapshot(), before);
    // And the same calls succeed afterwards.
    link.create_bridge(&spec()).unwrap();
    fw.apply(&nat_masq()).unwrap();
    sys.write(IP_FORWARD, "1").unwrap();
    assert_ne!(host.snapshot(), before);
}

#[test]
fn fail_nth_with_uses_the_given_kind() {
    let mut host = FakeHost::new();
    host.fail_nth_with(Op::SysctlRead, 1, OpsErrorKind::PermissionDenied);
    assert_eq!(
        host.read(IP_FORWARD).unwrap_err().kind,
        OpsErrorKind::PermissionDenied
    );
    assert_eq!(host.read(IP_FORWARD).unwrap(), "0");
}

#[test]
fn fail_nth_mutation_walks_every_step_of_a_sequence() {
    let clean = FakeHost::new();
    let (mut link, mut fw, mut sys) = clean.ops();
    sequence(&mut link, &mut fw, &mut sys).unwrap();
    let steps = clean.mutations();
    assert_eq!(steps.len(), 6);

    for (n, step) in steps.iter().enumerate().map(|(i, s)| (i + 1, s)) {
        let host = FakeHost::new();
        host.fail_nth_mutation_with(n, OpsErrorKind::Unavailable);
        let (mut link, mut fw, mut sys) = host.ops();
        let err = sequence(&mut link, &mut fw, &mut sys).unwrap_err();
        assert_eq!(err.kind, OpsErrorKind::Unavailable, "step {n}");
        let history = host.history();
        let last = history.last().unwrap();
        // The sequence stopped at the nth mutation, which is the one that failed...
        assert_eq!(&last.call, step, "step {n}");
        assert!(last.injected);
        // ...and every call before it succeeded, reads included.
        assert!(
            history[..history.len() - 1]
                .iter()
                .all(|r| r.error.is_none())
        );
        assert_eq!(host.mutations().len(), n);
    }
}

#[test]
fn fail_every_fails_until_cleared() {
    let host = FakeHost::new();
    let mut fw = host.firewall_ops();
    host.fail_every(Op::FwApply, OpsErrorKind::PermissionDenied);
    for _ in 0..3 {
        assert_eq!(
            fw.apply(&nat_masq()).unwrap_err().kind,
            OpsErrorKind::PermissionDenied
        );
    }
    fw.save(Table::Nat).unwrap();
    host.clear_faults();
    fw.apply(&nat_masq()).unwrap();
}

#[test]
fn two_faults_on_one_call_fire_once() {
    let mut host = FakeHost::new();
    host.fail_nth(Op::CreateBridge, 1);
    host.fail_nth_mutation(1);
    assert!(host.create_bridge(&spec()).is_err());
    assert_eq!(host.pending_faults(), 0);
    host.create_bridge(&spec()).unwrap();
}

#[test]
fn snapshots_compare_the_whole_state() {
    let host = FakeHost::new()
        .with_device("eth0", &[net("10.0.2.15/24")])
        .with_route(net("10.0.42.0/24"));
    let before = host.snapshot();
    assert_eq!(host.snapshot(), before);

    let (mut link, mut fw, mut sys) = host.ops();
    // Reads change nothing.
    link.links().unwrap();
    fw.save(Table::Filter).unwrap();
    sys.read(IP_FORWARD).unwrap();
    assert_eq!(host.snapshot(), before);

    sys.write(IP_FORWARD, "1").unwrap();
    assert_ne!(host.snapshot(), before);
    sys.write(IP_FORWARD, "0").unwrap();
    assert_eq!(host.snapshot(), before);

    fw.set_policy(Table::Filter, "FORWARD", Policy::Drop)
        .unwrap();
    assert_ne!(host.snapshot(), before);
    fw.set_policy(Table::Filter, "FORWARD", Policy::Accept)
        .unwrap();
    assert_eq!(host.snapshot(), before);

    link.set_mtu("eth0", 1400).unwrap();
    assert_ne!(host.snapshot(), before);
    link.set_mtu("eth0", 1500).unwrap();

    link.create_bridge(&spec()).unwrap();
    link.add_addr("docker0", net("172.17.42.1/16")).unwrap();
    link.set_up("docker0").unwrap();
    fw.apply(&nat_masq()).unwrap();
    let after = host.snapshot();
    assert_eq!(after.links.len(), before.links.len() + 1);
    assert_eq!(after.routes.len(), before.routes.len() + 1);
    link.delete_link("docker0").unwrap();
    fw.apply(&Batch {
        table: Table::Nat,
        lines: vec!["-D POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE".to_owned()],
    })
    .unwrap();
    assert_eq!(host.snapshot(), before);
}

#[test]
fn the_host_and_its_handles_share_one_state() {
    let mut host = FakeHost::new();
    let (mut link, _fw, _sys) = host.ops();
    link.create_bridge(&spec()).unwrap();
    let clone = host.clone();
    clone.link_ops().set_up("docker0").unwrap();
    assert!(host.link("docker0").unwrap().up);
    // FakeHost implements the traits itself too.
    host.delete_link("docker0").unwrap();
    assert!(link.links().unwrap().iter().all(|l| l.name != "docker0"));
    assert_eq!(host.calls().len(), 4);
}

#[test]
fn the_fake_can_cross_threads() {
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<FakeHost>();
    assert_send_sync::<backend_mock::FakeLink>();
    assert_send_sync::<backend_mock::FakeFirewall>();
    assert_send_sync::<backend_mock::FakeSysctl>();
    let host = FakeHost::new();
    let mut sys = host.sysctl_ops();
    std::thread::spawn(move || sys.write(IP_FORWARD, "1").unwrap())
        .join()
        .unwrap();
    assert_eq!(host.sysctl(IP_FORWARD).as_deref(), Some("1"));
}
