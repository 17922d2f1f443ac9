//! The backends chosen at build time (cargo features `netlink`, `ioctl`).

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use netcore::attach::AttachSide;
use netcore::config::FirewallBackend;
use netcore::ops::{FirewallOps, OpsError, SysctlOps};

#[cfg(not(any(feature = "netlink", feature = "ioctl")))]
compile_error!(
    "dockerd-net needs a link backend: build with --features netlink or --features ioctl"
);

/// Which link backend is compiled in.
#[cfg(feature = "netlink")]
pub const LINK_BACKEND: &str = "netlink";
#[cfg(all(feature = "ioctl", not(feature = "netlink")))]
pub const LINK_BACKEND: &str = "ioctl";

/// `--version` says which link backend is inside.
#[cfg(feature = "netlink")]
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (link backend: netlink)");
#[cfg(all(feature = "ioctl", not(feature = "netlink")))]
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (link backend: ioctl)");

/// Why the link backend could not be opened inside a container's network namespace.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// The path does not exist (the container is gone, or the pid was wrong).
    #[error("network namespace {} not found", .0.display())]
    NotFound(PathBuf),
    /// The path exists but is something else (a file, a directory, another namespace type).
    #[error("{} is not a network namespace: {why}", path.display())]
    NotNetns { path: PathBuf, why: String },
    /// Anything else (no permission, no memory, ...).
    #[error(transparent)]
    Ops(#[from] OpsError),
}

/// Opens the link backend with its sockets inside the network namespace at a path: the
/// container side of `attach`.
pub type OpenNetns = Box<dyn Fn(&Path) -> Result<Box<dyn AttachSide>, NetnsError>>;

/// One instance of each trait, opened in the calling thread's network namespace, and the
/// way to open the link backend in another one.
#[allow(missing_debug_implementations)] // trait objects of the backends
pub struct Backends {
    /// Links in the host namespace; also the host side of `attach`.
    pub link: Box<dyn AttachSide>,
    pub fw: Box<dyn FirewallOps>,
    pub sys: Box<dyn SysctlOps>,
    pub open_netns: OpenNetns,
}

impl Backends {
    /// Opens the link backend, and the iptables flavour `flavor` (`auto`, `nft`, `legacy`).
    /// When iptables is disabled the firewall backend is still built but never called.
    pub fn open(flavor: &str, iptables: bool, firewall: FirewallBackend) -> Result<Self> {
        tracing::debug!(backend = LINK_BACKEND, "opening link backend");
        let link = open_link()?;
        let fw = match firewall {
            FirewallBackend::Nftables if iptables => {
                // Our own table over nf_tables netlink; iptables' programs are never run.
                tracing::debug!("firewall: native nftables table");
                Box::new(
                    backend_nftables::Nftables::open()
                        .context("opening an nfnetlink socket for --firewall-backend=nftables")?,
                )
            }
            _ => open_firewall(flavor, iptables)?,
        };
        Ok(Self {
            link,
            fw,
            sys: Box::new(backend_sysctl::ProcSys::new()),
            open_netns: Box::new(open_link_in),
        })
    }
}

/// The firewall backend for `--iptables-backend`:
/// - `nft`, and `auto` where `iptables` is iptables-nft: nf_tables netlink from this process
///   (backend-nftables), with `iptables-nft-save`/`-restore` for saves and for what it does
///   not encode. A process per change costs 2-30 ms, one commit over an open socket well under
///   one (see that crate's documentation);
/// - `nft-restore`: the iptables-nft programs for everything, as Docker does;
/// - `legacy`, and `auto` where `iptables` is iptables-legacy: the legacy programs.
///
/// When iptables is disabled the backend is still built but never called.
pub fn open_firewall(flavor: &str, iptables: bool) -> Result<Box<dyn FirewallOps>> {
    use backend_iptables::{Flavor, Iptables};
    let tools = match flavor {
        "nft" | "nft-restore" => Iptables::new(Flavor::Nft),
        "legacy" => Iptables::new(Flavor::Legacy),
        _ if iptables => Iptables::detect()
            .context("choosing iptables (use --iptables-backend=nft|legacy to force one)")?,
        _ => return Ok(Box::new(Iptables::new(Flavor::Nft))),
    };
    if !iptables || flavor == "nft-restore" || tools.flavor() != Flavor::Nft {
        return Ok(Box::new(tools));
    }
    match backend_nftables::Nftables::with_iptables(tools.clone()) {
        Ok(native) => {
            tracing::debug!("firewall: nf_tables netlink");
            Ok(Box::new(native))
        }
        Err(e) => {
            tracing::warn!("cannot talk to nf_tables directly ({e}); using iptables-nft-restore");
            Ok(Box::new(tools))
        }
    }
}

/// The compiled-in link backend, in the calling thread's network namespace.
#[cfg(feature = "netlink")]
pub fn open_link() -> Result<Box<dyn AttachSide>> {
    Ok(Box::new(
        backend_netlink::NetlinkLinks::new().context("opening a netlink socket")?,
    ))
}

/// The compiled-in link backend, in the calling thread's network namespace.
#[cfg(all(feature = "ioctl", not(feature = "netlink")))]
pub fn open_link() -> Result<Box<dyn AttachSide>> {
    Ok(Box::new(
        backend_ioctl::IoctlLinks::new().context("opening an ioctl socket")?,
    ))
}

/// The compiled-in link backend inside the network namespace `netns`, after checking that
/// the path is one ([`check_netns`]).
pub fn open_link_in(netns: &Path) -> Result<Box<dyn AttachSide>, NetnsError> {
    check_netns(netns)?;
    #[cfg(feature = "netlink")]
    let links = backend_netlink::NetlinkLinks::new_in(netns);
    #[cfg(all(feature = "ioctl", not(feature = "netlink")))]
    let links = backend_ioctl::IoctlLinks::new_in(netns).map(|ops| ioctl_inside::Inside {
        ops,
        netns: netns.to_path_buf(),
    });
    match links {
        Ok(l) => Ok(Box::new(l)),
        // Gone between the check and the open (the container exited just now).
        Err(e) if e.kind == netcore::ops::OpsErrorKind::NotFound && !netns.exists() => {
            Err(NetnsError::NotFound(netns.to_path_buf()))
        }
        Err(e) => Err(e.into()),
    }
}

/// Checks that `path` names a network namespace, so that a wrong path is refused with a
/// message saying what it is instead of `setns`'s bare `EINVAL`.
///
/// A namespace file (`/proc/<pid>/ns/net`, or a bind mount of one such as
/// `/run/netns/<name>`) reads, through its open descriptor's `/proc/self/fd` link, as
/// `net:[<inode>]`; any other file reads as its path, another namespace as `uts:[...]` etc.
pub fn check_netns(path: &Path) -> Result<(), NetnsError> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(NetnsError::NotFound(path.to_path_buf()));
        }
        Err(e) => {
            return Err(NetnsError::Ops(OpsError::from_io(
                format!("open {}", path.display()),
                e,
            )));
        }
    };
    let link = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())).map_err(|e| {
        NetnsError::Ops(OpsError::from_io(
            format!("read what {} is", path.display()),
            e,
        ))
    })?;
    let what = link.to_string_lossy();
    if what.starts_with("net:[") {
        return Ok(());
    }
    let why = match what.split_once(":[") {
        Some((kind, _)) if !what.starts_with('/') => format!("it is a {kind} namespace"),
        _ => match file.metadata() {
            Ok(m) if m.is_dir() => "it is a directory".to_owned(),
            Ok(_) => "it is not a namespace file".to_owned(),
            Err(e) => format!("cannot read it: {e}"),
        },
    };
    Err(NetnsError::NotNetns {
        path: path.to_path_buf(),
        why,
    })
}

/// The ioctl backend inside a container's namespace, with the reads attach needs.
///
/// `IoctlLinks::new_in` makes sockets in the namespace, enough for every change, but it
/// reads links and routes from `/proc/thread-self/net`, which follows the calling thread,
/// so it refuses to list them from a thread elsewhere. A repeated `attach` reads the
/// container side to see whether it is configured; these reads run on a short-lived
/// thread that enters the namespace and opens a backend there.
#[cfg(all(feature = "ioctl", not(feature = "netlink")))]
mod ioctl_inside {
    use std::fs::File;
    use std::io;
    use std::os::fd::AsRawFd;
    use std::path::PathBuf;

    use backend_ioctl::IoctlLinks;
    use ipnet::Ipv4Net;
    use netcore::ops::{
        AttachOps, BridgeSpec, LinkInfo, LinkOps, OpsError, OpsErrorKind, RouteV4, VethSpec,
    };

    pub struct Inside {
        pub ops: IoctlLinks,
        pub netns: PathBuf,
    }

    impl Inside {
        fn read<T: Send + 'static>(
            &self,
            what: &str,
            f: fn(&mut IoctlLinks) -> Result<T, OpsError>,
        ) -> Result<T, OpsError> {
            let op = format!("{what} in {}", self.netns.display());
            let ns = File::open(&self.netns).map_err(|e| OpsError::from_io(&op, e))?;
            let helper = std::thread::Builder::new()
                .name("netns-read".into())
                .spawn(move || -> Result<T, OpsError> {
                    // SAFETY: setns takes a descriptor, open for the call, and a flag word; it
                    // moves only this helper thread, which ends after the read.
                    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                        return Err(OpsError::from_io("setns", io::Error::last_os_error()));
                    }
                    f(&mut IoctlLinks::new()?)
                })
                .map_err(|e| OpsError::from_io(&op, e))?;
            helper.join().map_err(|_| {
                OpsError::new(&op, OpsErrorKind::Other, "the helper thread panicked")
            })?
        }
    }

    impl LinkOps for Inside {
        fn links(&mut self) -> Result<Vec<LinkInfo>, OpsError> {
            self.read("list links", |l| l.links())
        }
        fn routes_v4(&mut self) -> Result<Vec<RouteV4>, OpsError> {
            self.read("list IPv4 routes", |l| l.routes_v4())
        }
        fn create_bridge(&mut self, spec: &BridgeSpec) -> Result<(), OpsError> {
            self.ops.create_bridge(spec)
        }
        fn add_addr(&mut self, link: &str, addr: Ipv4Net) -> Result<(), OpsError> {
            self.ops.add_addr(link, addr)
        }
        fn del_addr(&mut self, link: &str, addr: Ipv4Net) -> Result<(), OpsError> {
            self.ops.del_addr(link, addr)
        }
        fn set_mtu(&mut self, link: &str, mtu: u32) -> Result<(), OpsError> {
            self.ops.set_mtu(link, mtu)
        }
        fn set_up(&mut self, link: &str) -> Result<(), OpsError> {
            self.ops.set_up(link)
        }
        fn set_down(&mut self, link: &str) -> Result<(), OpsError> {
            self.ops.set_down(link)
        }
        fn delete_link(&mut self, link: &str) -> Result<(), OpsError> {
            self.ops.delete_link(link)
        }
    }

    impl AttachOps for Inside {
        fn create_veth(&mut self, spec: &VethSpec) -> Result<(), OpsError> {
            self.ops.create_veth(spec)
        }
        fn set_master(&mut self, link: &str, master: &str) -> Result<(), OpsError> {
            self.ops.set_master(link, master)
        }
        fn set_hairpin(&mut self, link: &str, on: bool) -> Result<(), OpsError> {
            self.ops.set_hairpin(link, on)
        }
        fn set_ipv6_autoconf_off(&mut self, link: &str) -> Result<(), OpsError> {
            self.ops.set_ipv6_autoconf_off(link)
        }
        fn disable_ipv6(&mut self, link: &str) -> Result<(), OpsError> {
            // The ioctl backend writes /proc/sys in its own namespace, whichever thread
            // calls it.
            self.ops.disable_ipv6(link)
        }
        fn add_route(&mut self, route: &RouteV4) -> Result<(), OpsError> {
            self.ops.add_route(route)
        }
        fn retire_link(&mut self, link: &str, group: u32) -> Result<(), OpsError> {
            self.ops.retire_link(link, group)
        }
        fn delete_group(&mut self, group: u32) -> Result<(), OpsError> {
            self.ops.delete_group(group)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_network_namespace_passes_the_check_and_anything_else_is_named() {
        // Our own namespace files: readable without privileges.
        check_netns(Path::new("/proc/self/ns/net")).expect("a network namespace");
        let e = check_netns(Path::new("/proc/self/ns/uts")).expect_err("uts");
        assert_eq!(
            e.to_string(),
            "/proc/self/ns/uts is not a network namespace: it is a uts namespace"
        );
        let e = check_netns(Path::new("/proc/self/ns")).expect_err("dir");
        assert_eq!(
            e.to_string(),
            "/proc/self/ns is not a network namespace: it is a directory"
        );
        let e = check_netns(Path::new("/proc/self/status")).expect_err("file");
        assert!(matches!(e, NetnsError::NotNetns { .. }), "{e:?}");
        assert!(e.to_string().contains("not a namespace file"), "{e}");
        let e = check_netns(Path::new("/proc/999999999/ns/net")).expect_err("missing");
        assert!(matches!(e, NetnsError::NotFound(_)), "{e:?}");
        assert_eq!(
            e.to_string(),
            "network namespace /proc/999999999/ns/net not found"
        );
    }
}
