//! A network namespace held open, for writing its `/proc/sys/net` keys from any thread.
//!
//! `/proc/sys/net` shows the namespace of the thread that opens a key, not the one a socket
//! was made in. A link backend whose sockets live in another namespace (made with `new_in`)
//! remembers that namespace here and writes through [`Netns::write_key`]: directly when the
//! calling thread is already in it (the daemon's case: one stat more), else from a
//! short-lived helper thread that enters it.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;

use crate::ProcSys;

/// The calling thread's network namespace (`/proc/self/ns/net` would be the main thread's).
pub const THREAD_NETNS: &str = "/proc/thread-self/ns/net";

/// A namespace's identity: the device and inode of its `nsfs` file.
pub type NetnsId = (u64, u64);

/// A network namespace held open, with its identity.
#[derive(Debug)]
pub struct Netns {
    file: File,
    id: NetnsId,
}

impl Netns {
    /// The calling thread's namespace. Fails without `/proc/thread-self` (a kernel before
    /// 3.17, or no procfs).
    pub fn of_thread() -> io::Result<Self> {
        Self::from_file(File::open(THREAD_NETNS)?)
    }

    /// A namespace file already open (`/proc/PID/ns/net`, `/run/netns/NAME`).
    pub fn from_file(file: File) -> io::Result<Self> {
        let meta = file.metadata()?;
        Ok(Self {
            id: (meta.dev(), meta.ino()),
            file,
        })
    }

    pub fn id(&self) -> NetnsId {
        self.id
    }

    /// The open namespace file, for [`enter`].
    pub fn file(&self) -> &File {
        &self.file
    }

    /// [`ProcSys::write_key`] on `/proc/sys`, in this namespace, whichever thread calls.
    pub fn write_key(&self, key: &str, value: &str) -> io::Result<()> {
        let sys = ProcSys::new();
        if thread_netns_id() == Some(self.id) {
            return sys.write_key(key, value);
        }
        std::thread::scope(|scope| {
            std::thread::Builder::new()
                .name("sysctl-setns".into())
                .spawn_scoped(scope, || {
                    // The helper ends right after the write, its namespace switch with it.
                    enter(&self.file)?;
                    sys.write_key(key, value)
                })?
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("sysctl helper thread panicked")))
        })
    }
}

/// The calling thread's namespace identity, if `/proc/thread-self` can tell.
pub fn thread_netns_id() -> Option<NetnsId> {
    std::fs::metadata(THREAD_NETNS)
        .ok()
        .map(|m| (m.dev(), m.ino()))
}

/// Moves the calling thread into the network namespace `ns` refers to (`setns(2)` with
/// `CLONE_NEWNET`). Meant for helper threads that end right after their work.
pub fn enter(ns: &File) -> io::Result<()> {
    // SAFETY: setns takes a file descriptor, open for the whole call since `ns` is borrowed,
    // and a flag word; it changes only the calling thread's network namespace and shares no
    // memory with Rust code.
    let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
