//! The backends chosen at build time (cargo features `netlink`, `ioctl`).

use anyhow::{Context, Result};
use netcore::ops::{FirewallOps, LinkOps, SysctlOps};

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

/// One instance of each trait, opened in the calling thread's network namespace.
#[allow(missing_debug_implementations)] // trait objects of the backends
pub struct Backends {
    pub link: Box<dyn LinkOps>,
    pub fw: Box<dyn FirewallOps>,
    pub sys: Box<dyn SysctlOps>,
}

impl Backends {
    /// Opens the link backend, and the iptables flavour `flavor` (`auto`, `nft`, `legacy`).
    /// When iptables is disabled the firewall backend is still built but never called.
    pub fn open(flavor: &str, iptables: bool) -> Result<Self> {
        tracing::debug!(backend = LINK_BACKEND, "opening link backend");
        let link = open_link()?;
        let fw: Box<dyn FirewallOps> = Box::new(match flavor {
            "nft" => backend_iptables::Iptables::new(backend_iptables::Flavor::Nft),
            "legacy" => backend_iptables::Iptables::new(backend_iptables::Flavor::Legacy),
            _ if iptables => backend_iptables::Iptables::detect()
                .context("choosing iptables (use --iptables-backend=nft|legacy to force one)")?,
            _ => backend_iptables::Iptables::new(backend_iptables::Flavor::Nft),
        });
        Ok(Self {
            link,
            fw,
            sys: Box::new(backend_sysctl::ProcSys::new()),
        })
    }
}

#[cfg(feature = "netlink")]
fn open_link() -> Result<Box<dyn LinkOps>> {
    Ok(Box::new(
        backend_netlink::NetlinkLinks::new().context("opening a netlink socket")?,
    ))
}

#[cfg(all(feature = "ioctl", not(feature = "netlink")))]
fn open_link() -> Result<Box<dyn LinkOps>> {
    Ok(Box::new(
        backend_ioctl::IoctlLinks::new().context("opening an ioctl socket")?,
    ))
}
