//! ProcSys against a temporary directory laid out like /proc/sys (no root needed), plus the
//! read-only failure cases on the real /proc/sys.

// Test code: a failed step should panic with its error, which is what unwrap does.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use backend_mock::FakeHost;
use backend_sysctl::ProcSys;
use netcore::ops::{IP_FORWARD, OpsErrorKind, SysctlOps};

/// A private directory under the system temp dir, removed on drop.
struct TempRoot(PathBuf);

impl TempRoot {
    fn new() -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "backend-sysctl-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    /// Creates `key` with `content`, like a sysctl file.
    fn key(&self, key: &str, content: &str) -> PathBuf {
        let path = self.0.join(key);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, content).unwrap();
        path
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempRoot {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[test]
fn read_trims_the_value() {
    let root = TempRoot::new();
    root.key(IP_FORWARD, "1\n");
    root.key("net/ipv4/ip_local_port_range", "32768\t60999\n");
    let mut sys = ProcSys::with_root(root.path());
    assert_eq!(sys.read(IP_FORWARD).unwrap(), "1");
    // Inner whitespace is the kernel's format and stays; only the ends are trimmed.
    assert_eq!(
        sys.read("net/ipv4/ip_local_port_range").unwrap(),
        "32768\t60999"
    );
}

#[test]
fn write_puts_value_and_newline_replacing_the_old_value() {
    let root = TempRoot::new();
    let path = root.key(IP_FORWARD, "65536\n");
    let mut sys = ProcSys::with_root(root.path());
    sys.write(IP_FORWARD, "1").unwrap();
    // Exactly what Docker 1.x wrote: "1\n", with nothing of the longer old value left over.
    assert_eq!(fs::read(&path).unwrap(), b"1\n");
    assert_eq!(sys.read(IP_FORWARD).unwrap(), "1");
}

#[test]
fn missing_key_is_not_found_and_names_the_key() {
    let root = TempRoot::new();
    let mut sys = ProcSys::with_root(root.path());

    let err = sys.read("net/ipv4/no_such_key").unwrap_err();
    assert_eq!(err.kind, OpsErrorKind::NotFound);
    assert!(err.to_string().contains("net/ipv4/no_such_key"), "{err}");

    // Writing never creates a key, as in procfs.
    let err = sys.write("net/ipv4/no_such_key", "1").unwrap_err();
    assert_eq!(err.kind, OpsErrorKind::NotFound);
    assert!(err.to_string().contains("net/ipv4/no_such_key"), "{err}");
    assert!(!root.path().join("net/ipv4/no_such_key").exists());
}

#[test]
fn keys_cannot_escape_the_root() {
    let root = TempRoot::new();
    let outside = TempRoot::new();
    let victim = outside.key("victim", "old\n");
    let mut sys = ProcSys::with_root(root.path().join("sys"));
    fs::create_dir_all(root.path().join("sys")).unwrap();

    let relative = format!(
        "../../{}/victim",
        outside.path().file_name().unwrap().to_str().unwrap()
    );
    for key in [
        relative.as_str(),
        victim.to_str().unwrap(),
        "",
        "net/./ipv4",
    ] {
        let err = sys.write(key, "new").unwrap_err();
        assert_eq!(err.kind, OpsErrorKind::Other, "{key}: {err}");
        assert!(err.to_string().contains("invalid sysctl key"), "{err}");
        assert!(sys.read(key).is_err(), "{key}");
    }
    assert_eq!(fs::read_to_string(&victim).unwrap(), "old\n");
}

#[test]
fn default_root_is_proc_sys() {
    assert_eq!(ProcSys::new().root(), Path::new("/proc/sys"));
    assert_eq!(
        ProcSys::default().path_of(IP_FORWARD).unwrap(),
        Path::new("/proc/sys/net/ipv4/ip_forward")
    );
}

/// `route/flush` is write-only (mode 0200) for everyone, root included, so reading it is a
/// harmless way to see the kernel's EACCES mapped, as root or not.
#[test]
fn unreadable_key_is_permission_denied() {
    let mut sys = ProcSys::new();
    let err = sys.read("net/ipv4/route/flush").unwrap_err();
    assert_eq!(err.kind, OpsErrorKind::PermissionDenied, "{err}");
    assert!(err.to_string().contains("net/ipv4/route/flush"), "{err}");
}

/// A fake host with one link, `veth1`, and no call recorded yet.
fn host_with_veth1() -> FakeHost {
    let host = FakeHost::new().with_device("veth1", &[]);
    host.clear_calls();
    host
}

#[test]
fn disable_ipv6_key_names_the_link() {
    assert_eq!(
        backend_sysctl::disable_ipv6_key("veth1234567").unwrap(),
        "net/ipv6/conf/veth1234567/disable_ipv6"
    );
    // Not links: the settings of every link.
    for name in ["all", "default"] {
        let err = backend_sysctl::disable_ipv6_key(name).unwrap_err();
        assert_eq!(err.kind, OpsErrorKind::NotFound, "{err}");
        assert!(
            err.to_string().contains("holds the setting of every link"),
            "{err}"
        );
    }
}

#[test]
fn finish_disable_ipv6_after_a_write_asks_nothing_else() {
    let root = TempRoot::new();
    let key = root.key("net/ipv6/conf/veth1/disable_ipv6", "0\n");
    let sys = ProcSys::with_root(root.path());
    let mut host = host_with_veth1();
    let written = sys.write_key(&backend_sysctl::disable_ipv6_key("veth1").unwrap(), "1");
    backend_sysctl::finish_disable_ipv6(&mut host, "veth1", written).unwrap();
    assert_eq!(fs::read_to_string(key).unwrap(), "1\n");
    assert_eq!(host.calls(), vec![]);
}

#[test]
fn finish_disable_ipv6_without_the_key_is_ok_for_a_link_and_not_found_without_one() {
    let root = TempRoot::new();
    fs::create_dir_all(root.path().join("net/ipv6/conf")).unwrap();
    let sys = ProcSys::with_root(root.path());
    let mut host = host_with_veth1();
    // A link without IPv6 state (MTU below 1280, or no IPv6 in the kernel): nothing to do.
    let written = sys.write_key(&backend_sysctl::disable_ipv6_key("veth1").unwrap(), "1");
    backend_sysctl::finish_disable_ipv6(&mut host, "veth1", written).unwrap();
    assert!(!host.ipv6_autoconf_off("veth1"), "no fallback");
    // No link at all.
    let written = sys.write_key(&backend_sysctl::disable_ipv6_key("veth2").unwrap(), "1");
    let err = backend_sysctl::finish_disable_ipv6(&mut host, "veth2", written).unwrap_err();
    assert_eq!(err.kind, OpsErrorKind::NotFound, "{err}");
    assert!(err.to_string().contains("turn IPv6 off on veth2"), "{err}");
}

/// A `/proc/sys` that refuses the write falls back to turning autoconfiguration off. The
/// refusal is real: the key is a symlink to a read-only sysctl (mode 0444, which procfs
/// refuses to write even to root).
#[test]
fn finish_disable_ipv6_falls_back_when_proc_sys_refuses() {
    let root = TempRoot::new();
    let dir = root.path().join("net/ipv6/conf/veth1");
    fs::create_dir_all(&dir).unwrap();
    std::os::unix::fs::symlink("/proc/sys/kernel/ngroups_max", dir.join("disable_ipv6")).unwrap();
    let sys = ProcSys::with_root(root.path());
    let mut host = host_with_veth1();
    let written = sys.write_key(&backend_sysctl::disable_ipv6_key("veth1").unwrap(), "1");
    assert_eq!(
        written.as_ref().map_err(std::io::Error::kind),
        Err(std::io::ErrorKind::PermissionDenied)
    );
    backend_sysctl::finish_disable_ipv6(&mut host, "veth1", written).unwrap();
    assert!(
        host.ipv6_autoconf_off("veth1"),
        "fell back to addrgenmode none"
    );
}

#[test]
fn finish_disable_ipv6_keeps_any_other_error() {
    let mut host = host_with_veth1();
    let written = Err(std::io::Error::from_raw_os_error(22)); // EINVAL
    let err = backend_sysctl::finish_disable_ipv6(&mut host, "veth1", written).unwrap_err();
    assert_eq!(err.kind, OpsErrorKind::Other, "{err}");
    assert!(err.to_string().contains("turn IPv6 off on veth1"), "{err}");
    assert_eq!(host.calls(), vec![]);
}
