//! The daemon's few direct system calls: the instance lock, the socket file, and systemd's
//! readiness notification.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// An exclusive `flock` on `<socket>.lock`, held for the daemon's lifetime (released by the
/// kernel when the process ends, however it ends; so a stale lock file is harmless).
#[derive(Debug)]
pub struct InstanceLock {
    _file: File,
    path: PathBuf,
}

impl InstanceLock {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The lock file that guards `socket`.
pub fn lock_path(socket: &Path) -> PathBuf {
    let mut s = OsString::from(socket.as_os_str());
    s.push(".lock");
    PathBuf::from(s)
}

/// Takes the instance lock of `socket`, or says who holds it.
pub fn lock(socket: &Path) -> Result<InstanceLock> {
    let path = lock_path(socket);
    match take(&path, libc::LOCK_EX, true)? {
        Some(l) => Ok(l),
        None => bail!("{} vanished while being locked", path.display()),
    }
}

/// How [`lock_data_root`] locks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    /// The daemon: exclusive, creating the lock file.
    Exclusive,
    /// Teardown: shared (several may run, none while a daemon holds it); no lock file
    /// means no daemon ever used this data root, and none is created.
    SharedIfExists,
}

/// The lock of a data root (`<data-root>/.lock`): two daemons on different sockets must not
/// write the same journal, and teardown must not delete a running daemon's state.
pub fn lock_data_root(dir: &Path, mode: LockMode) -> Result<Option<InstanceLock>> {
    let path = dir.join(".lock");
    match mode {
        LockMode::Exclusive => take(&path, libc::LOCK_EX, true),
        LockMode::SharedIfExists => take(&path, libc::LOCK_SH, false),
    }
}

fn take(path: &Path, how: libc::c_int, create: bool) -> Result<Option<InstanceLock>> {
    if create && let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let opened = OpenOptions::new()
        .create(create)
        .truncate(false)
        .read(true)
        .write(true)
        .mode(0o600)
        .open(path);
    let file = match opened {
        Ok(f) => f,
        Err(e) if !create && e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("opening lock file {}", path.display())),
    };
    // SAFETY: flock only reads the descriptor number, which `file` owns and keeps open for
    // the duration of the call; no memory is passed.
    let rc = unsafe { libc::flock(file.as_raw_fd(), how | libc::LOCK_NB) };
    if rc != 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            bail!(
                "another dockerd-net is running (it holds {})",
                path.display()
            );
        }
        return Err(e).with_context(|| format!("locking {}", path.display()));
    }
    Ok(Some(InstanceLock {
        _file: file,
        path: path.to_path_buf(),
    }))
}

/// Removes a socket file left by an instance that did not exit cleanly. Only called with the
/// instance lock held, so the file cannot be a live instance's. Anything that is not a
/// socket is left alone, and refused.
pub fn remove_stale_socket(socket: &Path) -> Result<()> {
    match fs::symlink_metadata(socket) {
        Ok(meta) if meta.file_type().is_socket() => {
            tracing::info!("removing stale socket {}", socket.display());
            fs::remove_file(socket).with_context(|| format!("removing {}", socket.display()))
        }
        Ok(_) => bail!(
            "{} exists and is not a socket; refusing to replace it",
            socket.display()
        ),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("inspecting {}", socket.display())),
    }
}

/// Removes our own socket on exit (only a socket: the path may have been replaced).
pub fn remove_socket(socket: &Path) -> Result<()> {
    match fs::symlink_metadata(socket) {
        Ok(meta) if meta.file_type().is_socket() => {
            fs::remove_file(socket).with_context(|| format!("removing {}", socket.display()))
        }
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("inspecting {}", socket.display())),
    }
}

/// Mode 0660, owner root:root: only root and members of the root group may talk to the
/// daemon (as Docker's socket is root:docker 0660).
pub fn restrict_socket(socket: &Path) -> Result<()> {
    fs::set_permissions(socket, fs::Permissions::from_mode(0o660))
        .with_context(|| format!("setting the mode of {}", socket.display()))?;
    std::os::unix::fs::chown(socket, Some(0), Some(0))
        .with_context(|| format!("giving {} to root", socket.display()))
}

/// Sends `state` (e.g. `READY=1`) to systemd when `NOTIFY_SOCKET` is set; returns whether it
/// was. An address starting with `@` is in the abstract namespace (systemd's default).
pub fn notify(state: &str) -> io::Result<bool> {
    let Some(addr) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(false);
    };
    let sock = UnixDatagram::unbound()?;
    let bytes = std::os::unix::ffi::OsStrExt::as_bytes(addr.as_os_str());
    if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        let a = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
        sock.send_to_addr(state.as_bytes(), &a)?;
    } else {
        sock.send_to(state.as_bytes(), Path::new(&addr))?;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("dockerd-net-sys-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).expect("tmp dir");
        d
    }

    #[test]
    fn second_lock_is_refused_naming_the_file_and_freed_on_drop() {
        let d = tmp("lock");
        let sock = d.join("d.sock");
        let first = lock(&sock).expect("first lock");
        assert_eq!(first.path(), d.join("d.sock.lock"));
        let err = lock(&sock).expect_err("held").to_string();
        assert_eq!(
            err,
            format!(
                "another dockerd-net is running (it holds {})",
                d.join("d.sock.lock").display()
            )
        );
        drop(first);
        lock(&sock).expect("free again");
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn data_root_lock_lets_teardowns_share_but_not_with_a_daemon() {
        let d = tmp("root");
        // No daemon ever ran: nothing to lock, and no file is created.
        assert!(
            lock_data_root(&d, LockMode::SharedIfExists)
                .expect("free")
                .is_none()
        );
        assert!(!d.join(".lock").exists());
        let daemon = lock_data_root(&d, LockMode::Exclusive).expect("daemon");
        let err = lock_data_root(&d, LockMode::SharedIfExists).expect_err("daemon holds it");
        assert!(err.to_string().contains(".lock"), "{err}");
        drop(daemon);
        let a = lock_data_root(&d, LockMode::SharedIfExists).expect("free");
        let b = lock_data_root(&d, LockMode::SharedIfExists).expect("shared");
        assert!(a.is_some() && b.is_some());
        assert!(lock_data_root(&d, LockMode::Exclusive).is_err());
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn stale_socket_removed_but_never_a_regular_file() {
        let d = tmp("stale");
        let sock = d.join("s.sock");
        let l = std::os::unix::net::UnixListener::bind(&sock).expect("bind");
        drop(l);
        assert!(sock.exists());
        remove_stale_socket(&sock).expect("removes");
        assert!(!sock.exists());
        remove_stale_socket(&sock).expect("nothing to remove");
        fs::write(&sock, "data").expect("write");
        let err = remove_stale_socket(&sock).expect_err("a file");
        assert!(err.to_string().contains("is not a socket"), "{err}");
        assert_eq!(fs::read_to_string(&sock).expect("kept"), "data");
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn notify_sends_to_path_and_abstract_sockets() {
        let d = tmp("notify");
        let path = d.join("notify.sock");
        let rx = UnixDatagram::bind(&path).expect("bind");
        let name = format!("dockerd-net-test-{}", std::process::id());
        let abs = {
            use std::os::linux::net::SocketAddrExt;
            let a = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
                .expect("abstract");
            UnixDatagram::bind_addr(&a).expect("bind abstract")
        };
        // The environment is process-wide: both cases run in this one test, in sequence.
        // SAFETY: no other test of this crate reads or writes NOTIFY_SOCKET.
        unsafe { std::env::set_var("NOTIFY_SOCKET", &path) };
        assert!(notify("READY=1").expect("sent"));
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).expect("received");
        assert_eq!(&buf[..n], b"READY=1");
        // SAFETY: as above.
        unsafe { std::env::set_var("NOTIFY_SOCKET", format!("@{name}")) };
        assert!(notify("STOPPING=1").expect("sent"));
        let n = abs.recv(&mut buf).expect("received");
        assert_eq!(&buf[..n], b"STOPPING=1");
        // SAFETY: as above.
        unsafe { std::env::remove_var("NOTIFY_SOCKET") };
        assert!(!notify("READY=1").expect("nothing to do"));
        let _ = fs::remove_dir_all(&d);
    }
}
