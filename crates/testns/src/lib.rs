//! Test support for code that touches the kernel.
//!
//! Every kernel test runs inside a network namespace of its own, made on a dedicated thread
//! with `unshare(CLONE_NEWNET)`: the machine's own interfaces, routes, firewall and sysctls are
//! never touched, tests can run in parallel, and dropping the namespace (when the thread ends)
//! cleans everything up at once, which is far cheaper than deleting links one by one.
//!
//! Child processes spawned from that thread (`ip`, `iptables-save`, ...) inherit its namespace.
//! Read per-namespace files through `/proc/thread-self/...`, never `/proc/self/...`, which
//! follows the process's main thread.

use std::io;
use std::process::Command;
use std::thread;

/// Runs `f` on a new thread inside a fresh network namespace (loopback up) and returns its
/// result. A panic in `f` is propagated to the caller, so assertions work as usual.
pub fn in_netns<T, F>(f: F) -> T
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let handle = thread::Builder::new()
        .name("netns-test".into())
        .spawn(move || {
            if let Err(e) = unshare_net() {
                panic!("unshare(CLONE_NEWNET) failed (tests that touch the kernel need root): {e}");
            }
            run(&["ip", "link", "set", "lo", "up"]);
            f()
        })
        .unwrap_or_else(|e| panic!("spawn netns thread: {e}"));
    match handle.join() {
        Ok(v) => v,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Moves the calling thread into a new network namespace.
pub fn unshare_net() -> io::Result<()> {
    // SAFETY: unshare takes a flag word and touches only the calling thread's namespace set;
    // no memory is shared with Rust code.
    let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// True when this process may create namespaces (root, or CAP_SYS_ADMIN).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Whether a kernel test can run here. CI runs as root and sets `DOCKERD_NET_ROOT_TESTS=1`,
/// which turns a missing privilege into a failure instead of a skip, so a kernel test can never
/// pass silently there; a contributor without root sees a clear "skipped" line instead.
pub fn can_run_kernel_tests(test: &str) -> bool {
    if is_root() {
        return true;
    }
    assert!(
        std::env::var_os("DOCKERD_NET_ROOT_TESTS").is_none(),
        "{test}: DOCKERD_NET_ROOT_TESTS is set but this process is not root"
    );
    eprintln!("{test}: skipped, needs root (CI runs it as root)");
    false
}

/// Runs a command (in the calling thread's namespace), panicking with its stderr on failure;
/// returns stdout.
pub fn run(argv: &[&str]) -> String {
    let out = Command::new(argv[0])
        .args(&argv[1..])
        .output()
        .unwrap_or_else(|e| panic!("spawn {argv:?}: {e}"));
    assert!(
        out.status.success(),
        "{argv:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a command and returns whether it succeeded, with its combined output.
pub fn try_run(argv: &[&str]) -> (bool, String) {
    match Command::new(argv[0]).args(&argv[1..]).output() {
        Ok(out) => {
            let mut s = String::from_utf8_lossy(&out.stdout).into_owned();
            s.push_str(&String::from_utf8_lossy(&out.stderr));
            (out.status.success(), s)
        }
        Err(e) => (false, e.to_string()),
    }
}

/// `ip -j -d link show` as JSON values.
pub fn ip_links() -> Vec<serde_json::Value> {
    json_array(&run(&["ip", "-j", "-d", "link", "show"]))
}

/// One link from `ip -j -d link show dev NAME`, or `None` if it does not exist.
pub fn ip_link(name: &str) -> Option<serde_json::Value> {
    let (ok, out) = try_run(&["ip", "-j", "-d", "link", "show", "dev", name]);
    if !ok {
        return None;
    }
    json_array(&out).into_iter().next()
}

/// IPv4 addresses of a link as `addr/prefix` strings, in kernel order.
pub fn ip_addrs4(name: &str) -> Vec<String> {
    let out = run(&["ip", "-j", "-4", "addr", "show", "dev", name]);
    json_array(&out)
        .iter()
        .flat_map(|l| l["addr_info"].as_array().cloned().unwrap_or_default())
        .map(|a| {
            format!(
                "{}/{}",
                a["local"].as_str().unwrap_or_default(),
                a["prefixlen"]
            )
        })
        .collect()
}

/// IPv4 main-table routes as `ip -j -4 route show table main` values.
pub fn ip_routes4() -> Vec<serde_json::Value> {
    json_array(&run(&["ip", "-j", "-4", "route", "show", "table", "main"]))
}

fn json_array(text: &str) -> Vec<serde_json::Value> {
    if text.trim().is_empty() {
        return Vec::new();
    }
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(serde_json::Value::Array(v)) => v,
        Ok(other) => panic!("expected a JSON array from ip, got {other}"),
        Err(e) => panic!("bad JSON from ip: {e}: {text}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_is_private() {
        if !can_run_kernel_tests("namespace_is_private") {
            return;
        }
        let host_links = ip_links().len();
        in_netns(|| {
            run(&["ip", "link", "add", "tnsbr0", "type", "bridge"]);
            assert!(ip_link("tnsbr0").is_some());
        });
        assert!(
            ip_link("tnsbr0").is_none(),
            "leaked into the host namespace"
        );
        assert_eq!(ip_links().len(), host_links);
    }
}
