//! The traits through which netcore acts on a host, and the facts it reads from one.
//!
//! The traits are synchronous and take `&mut self`: a backend may keep a socket, a runtime
//! or a cache inside, and netcore never needs to share one between threads. Each operation
//! is one thing the kernel does, so a recording double can count calls and fail the Nth.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::firewall::{Batch, Policy, Table};
use crate::mac::MacAddr;

/// What went wrong, as far as netcore's decisions care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpsErrorKind {
    /// The object (link, chain, key) does not exist.
    NotFound,
    /// The object already exists.
    AlreadyExists,
    /// The caller lacks the privilege.
    PermissionDenied,
    /// A tool the backend needs (e.g. `iptables-restore`) is missing.
    Unavailable,
    /// Anything else.
    Other,
}

/// An error from a backend: which operation, what kind, and the underlying cause.
#[derive(Debug, thiserror::Error)]
#[error("{op}: {source}")]
pub struct OpsError {
    /// The operation and its object, e.g. `create bridge docker0`.
    pub op: String,
    pub kind: OpsErrorKind,
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync + 'static>,
}

impl OpsError {
    pub fn new(
        op: impl Into<String>,
        kind: OpsErrorKind,
        source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Self {
        Self {
            op: op.into(),
            kind,
            source: source.into(),
        }
    }

    /// Maps an `std::io::Error` (as from a syscall) to the matching kind.
    pub fn from_io(op: impl Into<String>, err: std::io::Error) -> Self {
        let kind = match err.kind() {
            std::io::ErrorKind::NotFound => OpsErrorKind::NotFound,
            std::io::ErrorKind::AlreadyExists => OpsErrorKind::AlreadyExists,
            std::io::ErrorKind::PermissionDenied => OpsErrorKind::PermissionDenied,
            // netcore has no libc: the errno values of Linux, named.
            _ => match err.raw_os_error() {
                Some(ENODEV | EADDRNOTAVAIL) => OpsErrorKind::NotFound,
                Some(EEXIST) => OpsErrorKind::AlreadyExists,
                Some(EPERM | EACCES) => OpsErrorKind::PermissionDenied,
                _ => OpsErrorKind::Other,
            },
        };
        Self::new(op, kind, err)
    }
}

const EPERM: i32 = 1;
const EACCES: i32 = 13;
const EEXIST: i32 = 17;
const ENODEV: i32 = 19;
const EADDRNOTAVAIL: i32 = 99;

/// One network interface as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkInfo {
    pub name: String,
    pub index: u32,
    /// `IFLA_INFO_KIND`: `"bridge"`, `"veth"`, ...; `None` for a physical device or loopback.
    pub kind: Option<String>,
    pub mac: Option<MacAddr>,
    pub mtu: u32,
    pub up: bool,
    /// IPv4 addresses with their prefix, unmasked (e.g. `172.17.0.1/16`), in kernel order.
    pub addrs: Vec<Ipv4Net>,
}

/// An IPv4 route of the main table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteV4 {
    /// `None` for a default route (`dst_len == 0`).
    pub dst: Option<Ipv4Net>,
    pub gateway: Option<Ipv4Addr>,
    /// Output interface index, if the route has one.
    pub oif: Option<u32>,
}

/// What to create for a new bridge, in one go where the backend can.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeSpec {
    pub name: String,
    /// Set before the bridge has ports, so it never takes a port's MAC (moby/moby#3200).
    pub mac: MacAddr,
    /// `None` leaves the kernel default (1500).
    pub mtu: Option<u32>,
    /// IGMP/MLD snooping (`IFLA_BR_MCAST_SNOOPING`, `ip link add ... type bridge
    /// mcast_snooping 0|1`), set at creation. The kernel's default is on; init's plan
    /// decides (see [`crate::init::plan`]).
    pub mcast_snooping: bool,
}

/// Links, addresses and routes.
pub trait LinkOps {
    /// Every link with its IPv4 addresses.
    fn links(&mut self) -> Result<Vec<LinkInfo>, OpsError>;
    /// One link by name, or `None` if there is none. The default searches [`LinkOps::links`];
    /// backends answer it with one lookup, so that per-container work does not dump every
    /// link (a host with 1000 containers has 1000 veths).
    fn link(&mut self, name: &str) -> Result<Option<LinkInfo>, OpsError> {
        Ok(self.links()?.into_iter().find(|l| l.name == name))
    }
    /// IPv4 routes of the main table (`RT_TABLE_MAIN`), cloned routes excluded.
    fn routes_v4(&mut self) -> Result<Vec<RouteV4>, OpsError>;
    /// Creates a bridge with its MAC (and MTU, if given), down and without addresses.
    fn create_bridge(&mut self, spec: &BridgeSpec) -> Result<(), OpsError>;
    /// Adds an IPv4 address (`addr` is the host address with its prefix).
    fn add_addr(&mut self, link: &str, addr: Ipv4Net) -> Result<(), OpsError>;
    /// Removes an IPv4 address.
    fn del_addr(&mut self, link: &str, addr: Ipv4Net) -> Result<(), OpsError>;
    /// Sets the MTU.
    fn set_mtu(&mut self, link: &str, mtu: u32) -> Result<(), OpsError>;
    /// Brings the link up.
    fn set_up(&mut self, link: &str) -> Result<(), OpsError>;
    /// Brings the link down (the undo of `set_up` on a bridge init did not create).
    fn set_down(&mut self, link: &str) -> Result<(), OpsError>;
    /// Deletes the link.
    fn delete_link(&mut self, link: &str) -> Result<(), OpsError>;
}

/// The packet filter, one table at a time.
pub trait FirewallOps {
    /// The table in `iptables-save` format (`*table`, `:CHAIN POLICY [p:b]`, `-A ...`, `COMMIT`).
    /// A table that the kernel does not have yet is returned as an empty listing.
    fn save(&mut self, table: Table) -> Result<String, OpsError>;
    /// Applies a batch atomically (`iptables-restore --noflush`): all of it or none of it.
    fn apply(&mut self, batch: &Batch) -> Result<(), OpsError>;
    /// Several tables at once, in the order given. The default reads them one by one; a
    /// backend that can read them in one go (one `iptables-save`) should: every process
    /// spawn costs ~2 ms, more than the rest of init's decisions together.
    fn save_tables(&mut self, tables: &[Table]) -> Result<Vec<String>, OpsError> {
        tables.iter().map(|t| self.save(*t)).collect()
    }
    /// Several batches (each for one table) in one go. Each batch on its own is atomic, but
    /// on failure the group may have been applied in part (legacy iptables commits table by
    /// table): callers undo the group batch by batch.
    fn apply_batches(&mut self, batches: &[Batch]) -> Result<(), OpsError> {
        batches.iter().try_for_each(|b| self.apply(b))
    }
    /// Sets the policy of a built-in chain.
    fn set_policy(&mut self, table: Table, chain: &str, policy: Policy) -> Result<(), OpsError>;
    /// Applies native nftables changes (`--firewall-backend nftables`) as one transaction:
    /// all of them or none. Backends without native nftables refuse.
    fn nft_apply(&mut self, ops: &[crate::nftables::NftOp]) -> Result<(), OpsError> {
        let _ = ops;
        Err(OpsError::new(
            "apply nftables changes",
            OpsErrorKind::Unavailable,
            "this firewall backend has no native nftables support (use --firewall-backend iptables)",
        ))
    }
    /// The elements of our table's sets and maps, sorted, or `None` when the table does not
    /// exist. Used at daemon start to compare the kernel with the saved state.
    fn nft_elements(&mut self) -> Result<Option<Vec<crate::nftables::Element>>, OpsError> {
        Err(OpsError::new(
            "list nftables elements",
            OpsErrorKind::Unavailable,
            "this firewall backend has no native nftables support",
        ))
    }
}

/// Applies additive batches (see [`Batch::is_additive`]) together with
/// [`FirewallOps::apply_batches`], all or nothing: tables are committed one by one, so when
/// the group fails, part of it may be in, and each batch is undone on its own (the undo of
/// an additive batch that was not applied fails atomically, harmlessly).
pub fn apply_additive(fw: &mut dyn FirewallOps, batches: &[Batch]) -> Result<(), OpsError> {
    debug_assert!(batches.iter().all(Batch::is_additive));
    fw.apply_batches(batches).inspect_err(|_| {
        for batch in batches.iter().rev() {
            let _ = fw.apply(&crate::firewall::undo_of(batch));
        }
    })
}

/// Kernel parameters under `/proc/sys`.
pub trait SysctlOps {
    /// Reads a key given as a path below `/proc/sys`, e.g. `net/ipv4/ip_forward`; trimmed.
    fn read(&mut self, key: &str) -> Result<String, OpsError>;
    /// Writes a value to a key.
    fn write(&mut self, key: &str, value: &str) -> Result<(), OpsError>;
}

/// The sysctl Docker turns on.
pub const IP_FORWARD: &str = "net/ipv4/ip_forward";

/// A veth pair for a container: the host end stays here, the peer is created directly in
/// the container's network namespace (creating it here and moving it would cost a second
/// kernel operation of ~20-40 ms).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VethSpec {
    /// The host end, e.g. `veth1a2b3c4`.
    pub host: String,
    /// The container end's name inside the container, e.g. `eth0`.
    pub peer: String,
    /// The container's network namespace: a path such as `/proc/<pid>/ns/net` or
    /// `/run/netns/<name>`.
    pub peer_netns: std::path::PathBuf,
    /// The container end's MAC.
    pub peer_mac: MacAddr,
    /// MTU of both ends.
    pub mtu: u32,
}

/// What plugging a container into the bridge needs beyond [`LinkOps`]. Kept apart so that
/// a backend (or test double) without container support still implements `LinkOps`.
pub trait AttachOps {
    /// Creates the veth pair described by `spec`, both ends down.
    fn create_veth(&mut self, spec: &VethSpec) -> Result<(), OpsError>;
    /// Enslaves `link` to the bridge `master`.
    fn set_master(&mut self, link: &str, master: &str) -> Result<(), OpsError>;
    /// Sets the bridge port's hairpin mode (`--userland-proxy=false`: a container reaches
    /// its own published port through the bridge).
    fn set_hairpin(&mut self, link: &str, on: bool) -> Result<(), OpsError>;
    /// Turns IPv6 address autoconfiguration off on `link`, which must still be down: one
    /// `RTM_NEWLINK` (setlink) with `IFLA_AF_SPEC { AF_INET6 { IFLA_INET6_ADDR_GEN_MODE =
    /// IN6_ADDR_GEN_MODE_NONE } }` (`ip link set LINK addrgenmode none`). Brought up later, the
    /// link gets no IPv6 link-local address, so it runs no duplicate address detection, sends
    /// no router solicitation and joins no solicited-node multicast group (no MLD report).
    /// IPv6 itself stays on (`disable_ipv6` is untouched), and an address added by hand
    /// still works. A missing link is [`OpsErrorKind::NotFound`].
    ///
    /// Why: dockerd-net's networks are IPv4-only, and modern Docker disables IPv6 on the
    /// container interface of an IPv4-only network too. With autoconfiguration on, every veth
    /// end that comes up (the host end on the bridge, the container end) sends DAD neighbour
    /// solicitations, router solicitations and MLD reports to multicast groups; the bridge
    /// floods each to all of its N ports, each copy is processed in a container namespace,
    /// and addrconf's work items take RTNL, which our own netlink requests then wait for:
    /// O(N) kernel work per attach. Measured with `cargo xtask bench attach` at N = 1000:
    /// per-container setup grew from 2 ms (first tenth) to 14-17 ms (last tenth), ~45% of
    /// the CPU in kworkers and ksoftirqd doing IPv6.
    ///
    /// The mode must be set after the link exists and before it is up: the kernel refuses
    /// `IFLA_AF_SPEC` inside the `RTM_NEWLINK` that creates a veth (`EAFNOSUPPORT`: the
    /// device has no IPv6 state yet), and a link already up keeps the link-local address it
    /// got. Where the link has no IPv6 state at all (a kernel booted with `ipv6.disable=1`,
    /// or a link whose MTU is below IPv6's minimum of 1280) the kernel answers
    /// `EAFNOSUPPORT`: there is nothing to turn off, and this returns `Ok`.
    fn set_ipv6_autoconf_off(&mut self, link: &str) -> Result<(), OpsError>;
    /// Turns IPv6 off on `link`, which must still be down: `net.ipv6.conf.LINK.disable_ipv6
    /// = 1`, written in the namespace the backend works in (not necessarily the calling
    /// thread's, whose namespace `/proc/sys/net` follows). For the host end of a
    /// container's veth, which is only a port of the bridge: frames of every protocol,
    /// IPv6 included, are bridged between containers whatever the port's own IP settings.
    ///
    /// Why more than [`AttachOps::set_ipv6_autoconf_off`]: a link with IPv6 on, even
    /// without any address, gets a route `multicast ff00::/8 table local` when its carrier
    /// comes up (addrconf_add_mroute). All N host veths' routes hang on the one node of the
    /// IPv6 FIB for ff00::/8, so adding one walks the other N (`fib6_add_rt2node`), in the
    /// linkwatch worker, holding RTNL, which our next netlink request waits for; and taking a
    /// link down walks the FIB again (`fib6_ifdown`). Measured at N = 1000 with `perf record
    /// -a -g` during `cargo xtask bench attach`: O(containers) kernel work per attach and
    /// detach.
    ///
    /// A link without IPv6 state (a kernel without IPv6, or an MTU below 1280) has nothing
    /// to turn off: `Ok`. Where `/proc/sys` cannot be written (read-only, as in some
    /// containers), the backend falls back to [`AttachOps::set_ipv6_autoconf_off`]. A
    /// missing link is [`OpsErrorKind::NotFound`].
    fn disable_ipv6(&mut self, link: &str) -> Result<(), OpsError>;
    /// Adds an IPv4 route to the main table (`dst: None` is the default route).
    fn add_route(&mut self, route: &RouteV4) -> Result<(), OpsError>;
    /// Unplugs `link` and marks it for reaping, in one `RTM_NEWLINK` (setlink) on it:
    /// `IFLA_MASTER = 0` (off its bridge), `IFF_UP` cleared (down: a veth's peer loses its
    /// carrier, so the container has no connectivity from here on) and `IFLA_GROUP = group`.
    /// A missing link is [`OpsErrorKind::NotFound`].
    ///
    /// Why not delete it right away: `RTM_DELLINK` answers only after the kernel's
    /// `netdev_run_todo` has waited for an RCU grace period (`rcu_barrier()`), 15-28 ms per
    /// deletion, most of what unplugging a container costs. Setting a link down and off its
    /// bridge waits for no full grace period, and [`AttachOps::delete_group`] later deletes
    /// every retired link with one barrier for all of them.
    fn retire_link(&mut self, link: &str, group: u32) -> Result<(), OpsError>;
    /// Deletes every link of the device group `group` in one `RTM_DELLINK` (index 0,
    /// `IFLA_GROUP`; `ip link del group N`): the kernel's `rtnl_group_dellink` queues them all
    /// and `unregister_netdevice_many` waits for one RCU barrier, however many there are. A
    /// veth's peer goes with it, in whichever namespace it is. A group with no link is not an
    /// error (the kernel answers `ENODEV`; this answers `Ok`). Group 0 (every link's default)
    /// is refused, as the kernel refuses it (`EPERM`). The kernel refuses the whole group
    /// (`EOPNOTSUPP`, nothing deleted) if a link in it cannot be deleted (loopback, a
    /// physical device): hence a group number of our own, [`REAP_GROUP`].
    fn delete_group(&mut self, group: u32) -> Result<(), OpsError>;
}

/// The device group (`IFLA_GROUP`, `ip link set DEV group N`) that marks a container's host
/// veth as retired by `detach` and waiting for [`AttachOps::delete_group`].
///
/// The value spells "reap" in ASCII (`0x72656170`): a number no administrator picks by
/// accident (iproute2's `/etc/iproute2/group` names only 0, `default`; groups people use are
/// small numbers), below `i32::MAX` because the kernel keeps `dev->group` as an `int`, and
/// never 0, which is every link's group and which the kernel refuses to delete.
pub const REAP_GROUP: u32 = 0x7265_6170;

const _: () = assert!(REAP_GROUP != 0 && REAP_GROUP <= i32::MAX as u32);
