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

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};

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

/// A second network namespace for a test, e.g. a stand-in for a container: a parked thread
/// that unshared its network namespace, so `/proc/<pid>/task/<tid>/ns/net` stays valid (and
/// the namespace alive) until the value is dropped. Its `lo` is left down, as a new
/// container's is.
#[derive(Debug)]
pub struct Netns {
    path: PathBuf,
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Netns {
    /// Makes the namespace (panics without the privilege, like [`in_netns`]).
    pub fn new() -> Self {
        Self::try_new("test").unwrap_or_else(|e| panic!("unshare(CLONE_NEWNET): {e}"))
    }

    /// Makes the namespace, on a thread called `netns-<name>`; fails without the privilege.
    pub fn try_new(name: &str) -> io::Result<Self> {
        let (ready_tx, ready_rx) = mpsc::channel::<io::Result<PathBuf>>();
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let thread = thread::Builder::new()
            .name(format!("netns-{name}"))
            // The thread only waits: a small stack lets a caller hold a thousand of them.
            .stack_size(64 * 1024)
            .spawn(move || {
                let made = unshare_net()
                    .and_then(|()| std::fs::read_link("/proc/thread-self"))
                    // "<pid>/task/<tid>": this thread's own entry, a path any process can open.
                    .map(|me| Path::new("/proc").join(me).join("ns/net"));
                let ok = made.is_ok();
                let _ = ready_tx.send(made);
                if ok {
                    // Returns once the sender is dropped.
                    let _ = stop_rx.recv();
                }
            })?;
        let path = ready_rx
            .recv()
            .map_err(|_| io::Error::other("the namespace's thread ended before reporting"))??;
        Ok(Self {
            path,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// The namespace's path, for `setns` or an API that takes one.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// [`Netns::path`] as a string (for JSON and argv).
    pub fn path_str(&self) -> &str {
        self.path
            .to_str()
            .unwrap_or_else(|| panic!("non-UTF-8 path {}", self.path.display()))
    }

    /// The id of the thread that holds the namespace: `/proc/<tid>/ns/net` names it too, so
    /// it serves where an API takes a process id.
    pub fn tid(&self) -> u32 {
        self.path
            .parent()
            .and_then(Path::parent)
            .and_then(Path::file_name)
            .and_then(|t| t.to_str())
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| panic!("no thread id in {}", self.path.display()))
    }

    /// Runs `f` on a thread inside this namespace (child processes such as `ip`, and sockets
    /// made there, belong to it); a panic in `f` is propagated.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        in_netns_at(&self.path, f)
    }
}

impl Default for Netns {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Runs `f` on a scoped thread that has joined the network namespace at `path`.
pub fn in_netns_at<T: Send>(path: &Path, f: impl FnOnce() -> T + Send) -> T {
    thread::scope(|s| {
        let h = s.spawn(|| {
            let ns = File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
            // SAFETY: setns takes a valid fd (borrowed from a live File) and a flag word, and
            // changes only this scoped thread's namespace, which ends with it.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", io::Error::last_os_error());
            f()
        });
        match h.join() {
            Ok(v) => v,
            Err(p) => std::panic::resume_unwind(p),
        }
    })
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
    ip_addrs("-4", name)
}

/// IPv6 addresses of a link as `addr/prefix` strings, in kernel order; tentative ones (still
/// in duplicate address detection) included.
pub fn ip_addrs6(name: &str) -> Vec<String> {
    ip_addrs("-6", name)
}

fn ip_addrs(family: &str, name: &str) -> Vec<String> {
    let out = run(&["ip", "-j", family, "addr", "show", "dev", name]);
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

/// How a link makes its IPv6 addresses, as `ip -d link` prints it (`"eui64"`, the kernel's
/// default, or `"none"`, ...); `None` for a link without IPv6 state (e.g. an MTU below
/// 1280) or no such link.
pub fn ip_addr_gen_mode(name: &str) -> Option<String> {
    ip_link(name)?["inet6_addr_gen_mode"]
        .as_str()
        .map(str::to_owned)
}

/// `net.ipv6.conf.NAME.disable_ipv6` (`"0"` or `"1"`) in the calling thread's namespace
/// (`/proc/sys/net` follows the thread); panics if the link has no such key.
pub fn disable_ipv6(name: &str) -> String {
    let path = format!("/proc/sys/net/ipv6/conf/{name}/disable_ipv6");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("read {path}: {e}"))
        .trim()
        .to_owned()
}

/// IPv6 routes through a link in one table (`local`, `main`, `all`, ...), as
/// `ip -j -6 route show table TABLE dev NAME` values.
pub fn ip_routes6(table: &str, name: &str) -> Vec<serde_json::Value> {
    json_array(&run(&[
        "ip", "-j", "-6", "route", "show", "table", table, "dev", name,
    ]))
}

/// Polls `ready` every 20 ms until it holds, for at most `timeout`; panics naming `what`
/// if it never does.
pub fn wait_until(what: &str, timeout: std::time::Duration, mut ready: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !ready() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// IPv4 main-table routes as `ip -j -4 route show table main` values.
pub fn ip_routes4() -> Vec<serde_json::Value> {
    json_array(&run(&["ip", "-j", "-4", "route", "show", "table", "main"]))
}

/// The JSON array `ip -j` printed (nothing printed: an empty array).
pub fn json_array(text: &str) -> Vec<serde_json::Value> {
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

/// A directory of its own under the system temp dir (named from `tag`, the process and a
/// sequence number), removed with its contents when dropped.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "{tag}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
        Self { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `name` in the directory and returns its path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path.join(name);
        std::fs::write(&p, text).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
