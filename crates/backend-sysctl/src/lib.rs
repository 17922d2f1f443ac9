//! [`SysctlOps`] over the files below `/proc/sys`.
//!
//! # Network namespaces
//!
//! The `net/*` part of `/proc/sys` is per network namespace, and the kernel picks the namespace
//! **when the file is opened, from the opening thread** (`current->nsproxy->net_ns`), not from
//! the process's main thread and not from the path. So a thread that has entered a namespace
//! (`unshare(CLONE_NEWNET)` or `setns`) and then calls [`ProcSys::read`] / [`ProcSys::write`]
//! reads and writes that namespace's keys, while the rest of the process keeps seeing the host's.
//! This is what lets the kernel tests write `net/ipv4/ip_forward` inside a private namespace
//! without touching the machine's own value. Each call opens the file afresh, so a `ProcSys`
//! never carries a handle from one namespace into another.
//!
//! (Contrast `/proc/self/net/...`, which follows the main thread; `/proc/sys` has no such
//! indirection.)
//!
//! # Format
//!
//! Docker 1.x enabled forwarding with `ioutil.WriteFile("/proc/sys/net/ipv4/ip_forward",
//! []byte{'1', '\n'}, 0644)`; [`ProcSys::write`] does the same (`value` plus a newline, in one
//! `write(2)`, which procfs needs: a sysctl value split over two writes is not reassembled).

pub mod netns;

use std::fs::OpenOptions;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use netcore::ops::{AttachOps, LinkOps, OpsError, OpsErrorKind, SysctlOps};

/// The real location of the kernel parameters.
pub const PROC_SYS: &str = "/proc/sys";

/// Kernel parameters as files below a root directory, `/proc/sys` unless told otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcSys {
    root: PathBuf,
}

impl Default for ProcSys {
    fn default() -> Self {
        Self::new()
    }
}

impl ProcSys {
    /// Keys under `/proc/sys`.
    pub fn new() -> Self {
        Self::with_root(PROC_SYS)
    }

    /// Keys under another directory laid out like `/proc/sys` (for tests: a temporary
    /// directory holding `net/ipv4/ip_forward` and so on). Files are never created: a key
    /// that is not there is [`OpsErrorKind::NotFound`](netcore::ops::OpsErrorKind::NotFound),
    /// as in procfs.
    pub fn with_root(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The directory keys are resolved against.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The file behind `key` (e.g. `net/ipv4/ip_forward`).
    ///
    /// Only plain relative components are accepted: a key is a name, and a `..` or an absolute
    /// path would let a caller read or write any file on the machine.
    pub fn path_of(&self, key: &str) -> io::Result<PathBuf> {
        // Checked on the raw text, not `Path::components`, which silently drops inner `.` and
        // repeated slashes: a key is either exactly a name or rejected.
        let plain = key
            .split('/')
            .all(|seg| !seg.is_empty() && seg != "." && seg != "..");
        if !plain {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "invalid sysctl key {key:?}: expected a relative path such as net/ipv4/ip_forward"
                ),
            ));
        }
        Ok(self.root.join(key))
    }

    fn read_key(&self, key: &str) -> io::Result<String> {
        let path = self.path_of(key)?;
        let mut text = String::new();
        std::fs::File::open(&path)?.read_to_string(&mut text)?;
        Ok(text.trim().to_owned())
    }

    /// Writes `value` (and a newline, in one `write(2)`) to `key`, as [`SysctlOps::write`]
    /// does, with the plain I/O error.
    pub fn write_key(&self, key: &str, value: &str) -> io::Result<()> {
        let path = self.path_of(key)?;
        let line = format!("{value}\n");
        // No `create`: procfs cannot create keys, and a temp-dir root should behave the same.
        // `truncate` is what `echo 1 > /proc/sys/...` does; procfs accepts it, and a plain file
        // needs it when the new value is shorter than the old.
        let mut file = OpenOptions::new().write(true).truncate(true).open(&path)?;
        let n = file.write(line.as_bytes())?;
        if n != line.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("short write: {n} of {} bytes", line.len()),
            ));
        }
        Ok(())
    }
}

impl SysctlOps for ProcSys {
    fn read(&mut self, key: &str) -> Result<String, OpsError> {
        let value = self
            .read_key(key)
            .map_err(|e| OpsError::from_io(format!("read sysctl {key}"), e))?;
        tracing::debug!(key, value, root = %self.root.display(), "sysctl read");
        Ok(value)
    }

    fn write(&mut self, key: &str, value: &str) -> Result<(), OpsError> {
        tracing::debug!(key, value, root = %self.root.display(), "sysctl write");
        self.write_key(key, value)
            .map_err(|e| OpsError::from_io(format!("write sysctl {key}={value}"), e))
    }
}

/// The key [`AttachOps::disable_ipv6`] writes `1` to: `net/ipv6/conf/LINK/disable_ipv6`.
/// The names `all` and `default`, which the kernel refuses for links, are
/// [`OpsErrorKind::NotFound`]: their keys are the settings of every link, not of one.
///
/// [`AttachOps::disable_ipv6`]: netcore::ops::AttachOps::disable_ipv6
pub fn disable_ipv6_key(link: &str) -> Result<String, OpsError> {
    if matches!(link, "all" | "default") {
        return Err(OpsError::new(
            format!("turn IPv6 off on {link}"),
            OpsErrorKind::NotFound,
            format!(
                "there is no link named {link}: net/ipv6/conf/{link} holds the setting of \
                 every link, not of one"
            ),
        ));
    }
    Ok(format!("net/ipv6/conf/{link}/disable_ipv6"))
}

/// Finishes [`AttachOps::disable_ipv6`] for a link backend, once it has tried to write `1`
/// to [`disable_ipv6_key`] in the link's network namespace ([`netns::Netns::write_key`]:
/// `/proc/sys/net` follows the calling thread) and got `written`:
/// - written: done;
/// - no such key: a link without IPv6 state (a kernel without IPv6, an MTU below 1280) has
///   nothing to turn off (`Ok`), while a missing link ([`LinkOps::link`]) is
///   [`OpsErrorKind::NotFound`];
/// - refused (a read-only or forbidden `/proc/sys`, as in some containers): falls back to
///   [`AttachOps::set_ipv6_autoconf_off`], which still keeps the link from starting IPv6
///   autoconfiguration.
///
/// [`AttachOps::disable_ipv6`]: netcore::ops::AttachOps::disable_ipv6
/// [`AttachOps::set_ipv6_autoconf_off`]: netcore::ops::AttachOps::set_ipv6_autoconf_off
/// [`LinkOps::link`]: netcore::ops::LinkOps::link
pub fn finish_disable_ipv6<T: LinkOps + AttachOps + ?Sized>(
    ops: &mut T,
    link: &str,
    written: io::Result<()>,
) -> Result<(), OpsError> {
    let op = || format!("turn IPv6 off on {link}");
    match written {
        Ok(()) => {
            tracing::debug!(link, "IPv6 off");
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if ops.link(link)?.is_some() {
                tracing::debug!(link, "no IPv6 on the link: nothing to turn off");
                Ok(())
            } else {
                Err(OpsError::new(op(), OpsErrorKind::NotFound, e))
            }
        }
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::ReadOnlyFilesystem | io::ErrorKind::PermissionDenied
            ) =>
        {
            tracing::debug!(link, error = %e, "/proc/sys not writable: IPv6 autoconfiguration off instead");
            ops.set_ipv6_autoconf_off(link)
        }
        Err(e) => Err(OpsError::from_io(op(), e)),
    }
}
