//! ProcSys in a private network namespace: a write from the thread that entered the namespace
//! changes that namespace's key and not the machine's.

// Test code: a failed step should panic with its error, which is what unwrap does.
#![allow(clippy::unwrap_used)]

use std::process::Command;

use backend_sysctl::ProcSys;
use netcore::ops::{IP_FORWARD, SysctlOps};

/// The host's ip_forward, read by a child spawned from a thread that never left the host
/// namespace (this test's own thread), so it cannot see the test namespace.
fn host_ip_forward() -> String {
    let out = Command::new("cat")
        .arg("/proc/sys/net/ipv4/ip_forward")
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[test]
fn ip_forward_write_stays_in_the_namespace() {
    if !testns::can_run_kernel_tests("ip_forward_write_stays_in_the_namespace") {
        return;
    }
    let host_before = host_ip_forward();
    // The last value written is the opposite of the host's, so a write that leaked to the host
    // would show below; the first is the host's own, so both writes change the namespace's
    // value at least once whatever it inherited.
    let other = if host_before == "1" { "0" } else { "1" };
    let writes = [host_before.clone(), other.to_owned()];

    let seen = testns::in_netns(move || {
        let mut sys = ProcSys::new();
        let mut seen = Vec::new();
        for value in &writes {
            sys.write(IP_FORWARD, value).unwrap();
            // A child inherits the calling thread's namespace, so this is the namespace's key.
            let by_child = testns::run(&["sysctl", "-n", "net.ipv4.ip_forward"]);
            seen.push((
                value.clone(),
                by_child.trim().to_owned(),
                sys.read(IP_FORWARD).unwrap(),
            ));
        }
        seen
    });

    for (written, by_child, by_read) in &seen {
        assert_eq!(by_child, written, "sysctl -n in the namespace");
        assert_eq!(by_read, written, "ProcSys::read in the namespace");
    }
    assert_eq!(
        host_ip_forward(),
        host_before,
        "the host's ip_forward changed"
    );
}
