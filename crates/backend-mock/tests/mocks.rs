//! The mockall mocks can be told what to expect, and they notice when it does not happen.
#![allow(clippy::unwrap_used)]

use backend_mock::{MockFirewallOps, MockLinkOps, MockSysctlOps};
use mockall::Sequence;
use mockall::predicate::eq;
use netcore::firewall::{Batch, Table};
use netcore::ops::{IP_FORWARD, LinkOps, OpsError, OpsErrorKind, SysctlOps};

/// Code under test: turn forwarding on if it is off.
fn enable_forwarding(sys: &mut impl SysctlOps) -> Result<bool, OpsError> {
    if sys.read(IP_FORWARD)? == "1" {
        return Ok(false);
    }
    sys.write(IP_FORWARD, "1")?;
    Ok(true)
}

#[test]
fn sysctl_mock_sees_a_read_then_a_write() {
    let mut sys = MockSysctlOps::new();
    let mut seq = Sequence::new();
    sys.expect_read()
        .with(eq(IP_FORWARD))
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_| Ok("0".to_owned()));
    sys.expect_write()
        .with(eq(IP_FORWARD), eq("1"))
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| Ok(()));
    assert!(enable_forwarding(&mut sys).unwrap());
}

#[test]
fn sysctl_mock_forbids_a_write_that_is_not_expected() {
    let mut sys = MockSysctlOps::new();
    sys.expect_read().returning(|_| Ok("1".to_owned()));
    sys.expect_write().never();
    assert!(!enable_forwarding(&mut sys).unwrap());

    // The same mock set up for "already on" fails when the code writes anyway. (The mock
    // lives inside the closure, so its own drop-time check runs there too.)
    let outcome = std::panic::catch_unwind(|| {
        let mut sys = MockSysctlOps::new();
        sys.expect_read().returning(|_| Ok("0".to_owned()));
        sys.expect_write().never();
        let _ = enable_forwarding(&mut sys);
    });
    assert!(outcome.is_err(), "an unexpected write must fail the test");
}

#[test]
fn link_mock_returns_errors_it_is_given() {
    let mut link = MockLinkOps::new();
    link.expect_set_up()
        .withf(|name| name == "docker0")
        .times(1)
        .returning(|name| {
            Err(OpsError::new(
                format!("set {name} up"),
                OpsErrorKind::PermissionDenied,
                "operation not permitted",
            ))
        });
    let err = link.set_up("docker0").unwrap_err();
    assert_eq!(err.kind, OpsErrorKind::PermissionDenied);
    link.checkpoint();
}

#[test]
fn firewall_mock_checks_the_batch() {
    use netcore::ops::FirewallOps;
    let mut fw = MockFirewallOps::new();
    fw.expect_apply()
        .withf(|b: &Batch| b.table == Table::Nat && b.lines.len() == 1)
        .times(1)
        .returning(|_| Ok(()));
    fw.apply(&Batch {
        table: Table::Nat,
        lines: vec!["-N DOCKER".to_owned()],
    })
    .unwrap();

    // An expectation that is never met is reported at the checkpoint.
    fw.expect_save().times(1).returning(|_| Ok(String::new()));
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| fw.checkpoint()));
    assert!(outcome.is_err(), "an unmet expectation must fail the test");
}
