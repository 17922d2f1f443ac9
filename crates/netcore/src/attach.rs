//! Plugging a container's network namespace into the bridge: what Docker's exec driver did
//! for each container (a veth pair, one end on the bridge, the other configured inside).
//!
//! As with init, the plan is decided purely and applied step by step; a failure half-way
//! deletes the host end of the veth, which takes the container end with it, so neither a
//! veth nor a half-configured interface is left behind.

use std::fmt;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::handlers::Interface;
use crate::mac::MacAddr;
use crate::ops::{AttachOps, LinkInfo, LinkOps, OpsError, RouteV4, VethSpec};

/// Docker's fallback MTU when there is no `--mtu` and no default route.
pub const DEFAULT_MTU: u32 = 1500;

/// The containers' MTU: `--mtu`, else the MTU of the default route's interface, else 1500
/// (Docker 1.x `GetDefaultNetworkMtu`). A default route without an output interface (e.g.
/// multipath) falls back to 1500 where 1.x dereferenced nil.
pub fn container_mtu(configured: Option<u32>, links: &[LinkInfo], routes: &[RouteV4]) -> u32 {
    if let Some(mtu) = configured {
        return mtu;
    }
    routes
        .iter()
        .find(|r| r.dst.is_none())
        .and_then(|r| r.oif)
        .and_then(|oif| links.iter().find(|l| l.index == oif))
        .map_or(DEFAULT_MTU, |l| l.mtu)
}

/// The host end's name for a container: `veth` + 7 hex digits derived from the container id
/// (Docker picks random ones; deriving them makes a retried attach find its own veth).
/// `salt` is bumped by the caller in the unlikely case of a collision.
pub fn host_veth_name(id: &str, salt: u32) -> String {
    // FNV-1a, 32 bits: tiny, stable across versions and platforms.
    let mut h: u32 = 0x811c_9dc5;
    for b in id.bytes().chain(salt.to_le_bytes()) {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    format!("veth{:07x}", h & 0x0fff_ffff)
}

/// Everything attach needs to know.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachRequest {
    pub bridge: String,
    pub host_veth: String,
    pub netns: PathBuf,
    /// The interface name inside the container (default `eth0`).
    pub ifname: String,
    pub ip: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Ipv4Addr,
    pub mac: MacAddr,
    pub mtu: u32,
    /// Hairpin mode on the bridge port (`--userland-proxy=false`).
    pub hairpin: bool,
}

impl AttachRequest {
    /// The request for an allocated interface.
    pub fn for_interface(
        iface: &Interface,
        host_veth: String,
        netns: PathBuf,
        ifname: String,
        mtu: u32,
        hairpin: bool,
    ) -> Self {
        Self {
            bridge: iface.bridge.clone(),
            host_veth,
            netns,
            ifname,
            ip: iface.ip,
            prefix_len: iface.prefix_len,
            gateway: iface.gateway,
            mac: iface.mac,
            mtu,
            hairpin,
        }
    }
}

/// One step of attaching. `Host*` steps act in the host namespace, `Ctr*` inside the
/// container's. While an end of the veth is still down, `HostIpv6Off` turns IPv6 off on the
/// host end (a bridge port needs none; see [`AttachOps::disable_ipv6`]) and
/// `CtrNoIpv6Autoconf` turns IPv6 autoconfiguration off on the container end (see
/// [`AttachOps::set_ipv6_autoconf_off`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttachStep {
    CreateVeth(VethSpec),
    HostIpv6Off { link: String },
    SetMaster { link: String, master: String },
    SetHairpin { link: String },
    HostUp { link: String },
    CtrUp { link: String },
    CtrNoIpv6Autoconf { link: String },
    CtrAddAddr { link: String, addr: Ipv4Net },
    CtrDefaultRoute { gateway: Ipv4Addr },
}

impl fmt::Display for AttachStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttachStep::CreateVeth(s) => write!(
                f,
                "create veth {} with peer {} in {} (MAC {}, MTU {})",
                s.host,
                s.peer,
                s.peer_netns.display(),
                s.peer_mac,
                s.mtu
            ),
            AttachStep::HostIpv6Off { link } => write!(f, "turn IPv6 off on {link}"),
            AttachStep::SetMaster { link, master } => write!(f, "attach {link} to {master}"),
            AttachStep::SetHairpin { link } => write!(f, "set hairpin mode on {link}"),
            AttachStep::HostUp { link } => write!(f, "bring {link} up"),
            AttachStep::CtrUp { link } => write!(f, "bring {link} up in the container"),
            AttachStep::CtrNoIpv6Autoconf { link } => {
                write!(
                    f,
                    "turn IPv6 autoconfiguration off on {link} in the container"
                )
            }
            AttachStep::CtrAddAddr { link, addr } => {
                write!(f, "add address {addr} to {link} in the container")
            }
            AttachStep::CtrDefaultRoute { gateway } => {
                write!(f, "add default route via {gateway} in the container")
            }
        }
    }
}

/// The steps of attaching, in order: the container end is configured only once the host
/// end is on the bridge and up, so the first packet the container sends can go out.
///
/// Neither end of the veth starts IPv6 autoconfiguration: the network is IPv4-only, as
/// modern Docker does for the container interface of an IPv4-only network, and an end
/// brought up with autoconfiguration on would make the kernel flood DAD, router
/// solicitations and MLD reports to every port of the bridge (see
/// [`AttachOps::set_ipv6_autoconf_off`]). The host end, a mere bridge port, gets IPv6 turned
/// off altogether right after it is created, which also spares the kernel an O(containers)
/// IPv6 route insertion when it comes up (see [`AttachOps::disable_ipv6`]); the container
/// end keeps IPv6 with autoconfiguration off, turned off before it comes up, so an address
/// added by hand in the container still works. The container's loopback keeps its IPv6
/// (`::1`), as Docker's containers have it.
pub fn plan(req: &AttachRequest) -> Vec<AttachStep> {
    let mut steps = vec![
        AttachStep::CreateVeth(VethSpec {
            host: req.host_veth.clone(),
            peer: req.ifname.clone(),
            peer_netns: req.netns.clone(),
            peer_mac: req.mac,
            mtu: req.mtu,
        }),
        AttachStep::HostIpv6Off {
            link: req.host_veth.clone(),
        },
        AttachStep::SetMaster {
            link: req.host_veth.clone(),
            master: req.bridge.clone(),
        },
    ];
    if req.hairpin {
        steps.push(AttachStep::SetHairpin {
            link: req.host_veth.clone(),
        });
    }
    steps.extend([
        AttachStep::HostUp {
            link: req.host_veth.clone(),
        },
        AttachStep::CtrUp { link: "lo".into() },
        AttachStep::CtrNoIpv6Autoconf {
            link: req.ifname.clone(),
        },
        AttachStep::CtrAddAddr {
            link: req.ifname.clone(),
            addr: Ipv4Net::new(req.ip, req.prefix_len).unwrap_or_else(|_| {
                // prefix_len comes from the allocator and is always <= 32.
                Ipv4Net::from(req.ip)
            }),
        },
        AttachStep::CtrUp {
            link: req.ifname.clone(),
        },
        AttachStep::CtrDefaultRoute {
            gateway: req.gateway,
        },
    ]);
    steps
}

/// The host side and the container side of an attach.
pub trait AttachSide: LinkOps + AttachOps {}
impl<T: LinkOps + AttachOps + ?Sized> AttachSide for T {}

/// Why attaching failed (after the veth was removed again).
#[derive(Debug, thiserror::Error)]
#[error("{step}: {source}{}", cleanup.as_ref().map(|c| format!(" (cleanup failed too: {c})")).unwrap_or_default())]
pub struct AttachError {
    pub step: String,
    #[source]
    pub source: OpsError,
    /// Set when deleting the half-made veth failed in turn.
    pub cleanup: Option<String>,
}

/// Runs the steps; on failure deletes the host veth if it was created.
pub fn apply(
    steps: &[AttachStep],
    host: &mut dyn AttachSide,
    ctr: &mut dyn AttachSide,
) -> Result<(), AttachError> {
    let mut created: Option<&str> = None;
    for step in steps {
        tracing::debug!(%step, "attach step");
        let res = match step {
            AttachStep::CreateVeth(spec) => host.create_veth(spec),
            AttachStep::HostIpv6Off { link } => host.disable_ipv6(link),
            AttachStep::SetMaster { link, master } => host.set_master(link, master),
            AttachStep::SetHairpin { link } => host.set_hairpin(link, true),
            AttachStep::HostUp { link } => host.set_up(link),
            AttachStep::CtrUp { link } => ctr.set_up(link),
            AttachStep::CtrNoIpv6Autoconf { link } => ctr.set_ipv6_autoconf_off(link),
            AttachStep::CtrAddAddr { link, addr } => ctr.add_addr(link, *addr),
            AttachStep::CtrDefaultRoute { gateway } => ctr.add_route(&RouteV4 {
                dst: None,
                gateway: Some(*gateway),
                oif: None,
            }),
        };
        match res {
            Ok(()) => {
                if let AttachStep::CreateVeth(spec) = step {
                    created = Some(&spec.host);
                }
            }
            Err(source) => {
                let cleanup = created.and_then(|veth| {
                    host.delete_link(veth)
                        .err()
                        .map(|e| format!("delete {veth}: {e}"))
                });
                return Err(AttachError {
                    step: step.to_string(),
                    source,
                    cleanup,
                });
            }
        }
    }
    Ok(())
}
