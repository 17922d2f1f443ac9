//! netcore's [`LinkOps`] the way Docker 1.x did it before netlink: interface ioctls on a
//! datagram socket, and `/proc` for what ioctls cannot list.
//!
//! | operation | mechanism |
//! |---|---|
//! | [`LinkOps::create_bridge`] | `SIOCBRADDBR`, rtnetlink `RTM_NEWLINK` with `IFLA_BR_MCAST_SNOOPING` (no ioctl sets it), then `SIOCSIFHWADDR` (and `SIOCSIFMTU`) |
//! | [`LinkOps::add_addr`] | `SIOCSIFADDR`, then `SIOCSIFNETMASK` |
//! | [`LinkOps::del_addr`] | `SIOCSIFADDR` with `0.0.0.0` (IPv4 has no `SIOCDIFADDR`) |
//! | [`LinkOps::set_up`], [`LinkOps::set_down`] | `SIOCGIFFLAGS` / `SIOCSIFFLAGS` |
//! | [`LinkOps::set_mtu`] | `SIOCSIFMTU` |
//! | [`LinkOps::delete_link`] | bridges: down, then `SIOCBRDELBR`; other links: rtnetlink `RTM_DELLINK` |
//! | [`LinkOps::links`] | names from `/proc/thread-self/net/dev`; `SIOCGIFINDEX`, `SIOCGIFFLAGS`, `SIOCGIFMTU`, `SIOCGIFHWADDR`, `SIOCETHTOOL` per name; addresses from `SIOCGIFCONF` + `SIOCGIFNETMASK` |
//! | [`LinkOps::routes_v4`] | `/proc/thread-self/net/route` |
//! | [`AttachOps::create_veth`] | rtnetlink `RTM_NEWLINK` (no ioctl makes a veth; Docker 1.x used its own netlink code too) |
//! | [`AttachOps::set_master`] | `SIOCBRADDIF` (Docker 1.x `AddToBridge`) |
//! | [`AttachOps::set_hairpin`] | rtnetlink `RTM_SETLINK` to `AF_BRIDGE`, `IFLA_BRPORT_MODE` |
//! | [`AttachOps::set_ipv6_autoconf_off`] | rtnetlink `RTM_NEWLINK` with `IFLA_AF_SPEC { AF_INET6 { IFLA_INET6_ADDR_GEN_MODE } }` (no ioctl sets it) |
//! | [`AttachOps::disable_ipv6`] | `/proc/sys/net/ipv6/conf/LINK/disable_ipv6`, written in the sockets' namespace |
//! | [`AttachOps::add_route`] | `SIOCADDRT` |
//! | [`AttachOps::retire_link`] | rtnetlink `RTM_NEWLINK`: `IFLA_MASTER` 0, `IFF_UP` cleared, `IFLA_GROUP` (no ioctl sets a device group) |
//! | [`AttachOps::delete_group`] | rtnetlink `RTM_DELLINK` with `IFLA_GROUP` |
//!
//! The netlink requests are built by a small module of this crate (`nl.rs`), not by a
//! netlink crate: a few fixed messages, no async runtime.
//!
//! # Namespaces
//!
//! The kernel runs every ioctl and netlink request in the network namespace the socket was
//! created in: the namespace of the thread that called [`IoctlLinks::new`], or the one
//! given to [`IoctlLinks::new_in`]. `/proc/thread-self/net` follows the *calling* thread
//! instead, and `/sys/class/net` follows the namespace `/sys` was mounted in (for a thread
//! that only unshared `CLONE_NEWNET`, still the original one), so `/sys` is never used,
//! not even for `hairpin_mode` or a bridge's `multicast_snooping`. [`LinkOps::links`] and
//! [`LinkOps::routes_v4`] refuse to run on a thread whose namespace differs from the
//! sockets', rather than mix two namespaces; every other operation works from any thread.
//!
//! `/proc/sys/net` follows the calling thread too, so [`AttachOps::disable_ipv6`] keeps the
//! sockets' namespace open (with its device and inode) from construction: it writes the key
//! directly when the calling thread is in that namespace (one `stat` of
//! `/proc/thread-self/ns/net` to tell), and otherwise from a short-lived helper thread that
//! `setns`es into it.
//!
//! # Limits of the ioctl interface (each documented at its method)
//!
//! - **One IPv4 address per label.** `SIOCSIFADDR` on `br0` *replaces* the first address
//!   labelled `br0`; a second address needs an alias label such as `br0:1`, which this backend
//!   does not create. So [`LinkOps::add_addr`] fails with [`OpsErrorKind::AlreadyExists`] if
//!   the link already has an address under its own name, naming that address.
//! - **Only the first address of a label can be deleted** (`SIOCSIFADDR 0.0.0.0` acts on it).
//! - **Only bridges can be deleted with an ioctl** (`SIOCBRDELBR`); any other link (a
//!   container's veth, on an attach that fails half-way) is deleted with rtnetlink
//!   `RTM_DELLINK`, as Docker 1.x's `NetworkLinkDel` did.
//! - **The kind** (`"bridge"`, `"veth"`) comes from ethtool's driver name, not from
//!   `IFLA_INFO_KIND`; see [`kind_from_drvinfo`].
//! - **Reads are not snapshots.** Each detail is its own ioctl; a link or address that goes
//!   away between the listing and the detail is skipped.
//! - **Broadcast.** `SIOCSIFADDR` sets the classful broadcast and `SIOCSIFNETMASK` recomputes
//!   it for the prefix, so the address gets the subnet broadcast (`172.17.255.255`), unlike
//!   Docker 1.x's netlink `NetworkLinkAddIp`, which sent none (`broadcast 0.0.0.0`,
//!   flannel-io/flannel#166).

mod nl;
mod procfs;
mod sys;

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd};
use std::path::Path;

use backend_sysctl::netns::{self, Netns};
use ipnet::Ipv4Net;
use netcore::ifname::IfName;
use netcore::mac::MacAddr;
use netcore::ops::{
    AttachOps, BridgeSpec, LinkInfo, LinkOps, OpsError, OpsErrorKind, RouteV4, VethSpec,
};
use tracing::{debug, warn};

pub use nl::NetlinkError;
use nl::{NlSocket, Reply, VethRequest};
pub use procfs::ProcParseError;
use sys::{ARPHRD_ETHER, IfSocket, Ifreq, IfreqRequest, RouteEntry};

const NET_DEV: &str = "/proc/thread-self/net/dev";
const NET_ROUTE: &str = "/proc/thread-self/net/route";

/// `IFF_UP`, as the `short` that `ifr_flags` is.
const IFF_UP: i16 = 0x1;

/// `ARPHRD_*` types whose hardware address is six bytes, i.e. a MAC address: Ethernet,
/// IEEE 802 and loopback (whose address is all zero, as `ip link` shows it).
const MAC_TYPES: [u16; 3] = [ARPHRD_ETHER, libc::ARPHRD_IEEE802, libc::ARPHRD_LOOPBACK];

/// `ENOPKG`: `SIOCBRADDBR` when the bridge module is neither loaded nor loadable.
const ENOPKG: i32 = 65;
/// `ENXIO`: `SIOCBRDELBR` for a bridge that does not exist.
const ENXIO: i32 = 6;

/// [`LinkOps`] over interface ioctls, and [`AttachOps`] over ioctls plus a little
/// rtnetlink. Opens an ioctl socket and a `NETLINK_ROUTE` socket, both in one network
/// namespace, and keeps that namespace's file open (for `/proc/sys`, see the crate
/// documentation); closes all three on drop.
#[derive(Debug)]
pub struct IoctlLinks {
    sock: IfSocket,
    /// Opened with `sock`; only [`LinkOps::create_bridge`] (for multicast snooping),
    /// [`AttachOps::create_veth`], [`AttachOps::set_hairpin`],
    /// [`AttachOps::set_ipv6_autoconf_off`], [`AttachOps::retire_link`],
    /// [`AttachOps::delete_group`], the deletion of a link that is not a bridge and the
    /// `EBUSY` check of [`AttachOps::set_master`] need it, so a failure to open it is
    /// reported by those.
    nl: Result<NlSocket, io::Error>,
    /// The sockets' namespace, if it could be opened (it always is by `new_in`).
    netns: Option<Netns>,
}

/// A step failed and undoing the steps before it failed as well.
#[derive(Debug, thiserror::Error)]
#[error("{cause}; undoing the earlier steps also failed: {cleanup}")]
pub struct UndoFailed {
    pub cause: Box<dyn std::error::Error + Send + Sync + 'static>,
    pub cleanup: io::Error,
}

impl IoctlLinks {
    /// Opens the control socket (`AF_INET`, falling back to `AF_PACKET` and `AF_INET6` as
    /// Docker 1.x's `getIfSocket()` did). Needs no privilege; the changes do.
    pub fn new() -> Result<Self, OpsError> {
        let sock =
            IfSocket::open().map_err(|e| OpsError::from_io("open interface ioctl socket", e))?;
        debug!(family = ?sock.family(), "opened interface ioctl socket");
        Ok(Self {
            sock,
            nl: NlSocket::open(),
            netns: Netns::of_thread().ok(),
        })
    }

    /// Like [`IoctlLinks::new`], but with the sockets in the network namespace at `netns`
    /// (e.g. `/proc/<pid>/ns/net` or `/run/netns/<name>`): a container's side of an attach.
    ///
    /// The sockets are made on a short-lived helper thread that `setns(CLONE_NEWNET)`s into
    /// the namespace; a socket keeps the namespace it was created in, so the caller's
    /// threads never change namespace. Needs `CAP_SYS_ADMIN` (for `setns`).
    ///
    /// All the changing operations, and [`LinkOps::links`]/[`LinkOps::routes_v4`] called
    /// from a thread inside that namespace, act there; `links`/`routes_v4` from any other
    /// thread fail, as for any instance used from a foreign namespace (see the crate
    /// documentation). A path that does not exist is [`OpsErrorKind::NotFound`], a file
    /// that is not a network namespace [`OpsErrorKind::Other`].
    pub fn new_in(netns: &Path) -> Result<Self, OpsError> {
        let op = format!("open sockets in network namespace {}", netns.display());
        let ns = open_netns(&op, netns)?;
        let ns = Netns::from_file(ns).map_err(|e| OpsError::from_io(&op, e))?;
        // `ns` is kept (see `disable_ipv6`), so the helper only borrows it.
        let joined = std::thread::scope(|scope| {
            std::thread::Builder::new()
                .name("netns-sockets".into())
                .spawn_scoped(
                    scope,
                    || -> io::Result<(IfSocket, Result<NlSocket, io::Error>)> {
                        // The thread ends right after making the sockets, and its namespace
                        // switch with it.
                        netns::enter(ns.file())?;
                        Ok((IfSocket::open()?, NlSocket::open()))
                    },
                )
                .map(|worker| worker.join())
        })
        .map_err(|e| OpsError::new(&op, OpsErrorKind::Other, e))?;
        let (sock, nl) = match joined {
            Ok(Ok(socks)) => socks,
            Ok(Err(e)) if e.raw_os_error() == Some(libc::EINVAL) => {
                return Err(OpsError::new(
                    op,
                    OpsErrorKind::Other,
                    format!("{} is not a network namespace ({e})", netns.display()),
                ));
            }
            Ok(Err(e)) => return Err(OpsError::from_io(op, e)),
            Err(_) => {
                return Err(OpsError::new(
                    op,
                    OpsErrorKind::Other,
                    "the helper thread panicked",
                ));
            }
        };
        debug!(netns = %netns.display(), family = ?sock.family(), "opened sockets in namespace");
        Ok(Self {
            sock,
            nl,
            netns: Some(ns),
        })
    }

    /// The netlink socket, or why there is none.
    fn nl(&mut self, op: &str) -> Result<&mut NlSocket, OpsError> {
        match &mut self.nl {
            Ok(s) => Ok(s),
            Err(e) => Err(OpsError::new(
                op,
                OpsErrorKind::Unavailable,
                format!("no rtnetlink socket could be opened: {e}"),
            )),
        }
    }

    /// The index of `name`, saying which link is missing (an operation on two links would
    /// otherwise only say "No such device").
    fn index_of(&self, op: &str, name: &str) -> Result<u32, OpsError> {
        let base = name_req(op, name)?;
        self.index(op, base).map_err(|e| match e.kind {
            OpsErrorKind::NotFound => OpsError::new(
                op,
                OpsErrorKind::NotFound,
                format!("there is no link named {name}: {}", e.source),
            ),
            _ => e,
        })
    }

    fn call(&self, op: &str, req: IfreqRequest, ifr: &mut Ifreq) -> Result<(), OpsError> {
        self.sock
            .ifreq(req, ifr)
            .map_err(|e| OpsError::from_io(op, e))
    }

    /// The link's index; also how operations find out early that a link does not exist.
    fn index(&self, op: &str, base: Ifreq) -> Result<u32, OpsError> {
        let mut r = base;
        self.call(op, IfreqRequest::GetIndex, &mut r)?;
        u32::try_from(r.int()).map_err(|_| {
            OpsError::new(
                op,
                OpsErrorKind::Other,
                "the kernel reported a negative index",
            )
        })
    }

    /// The IPv4 addresses grouped by device (alias labels such as `br0:1` folded into
    /// `br0`), each device's in kernel order.
    fn addrs_by_device(&self, op: &str) -> Result<HashMap<String, Vec<Ipv4Net>>, OpsError> {
        let mut addrs: HashMap<String, Vec<Ipv4Net>> = HashMap::new();
        for (label, net) in self
            .addr_entries()
            .map_err(|e| OpsError::from_io(format!("{op}: read IPv4 addresses"), e))?
        {
            addrs
                .entry(device_of(&label).to_owned())
                .or_default()
                .push(net);
        }
        Ok(addrs)
    }

    /// Every IPv4 address with its prefix, as (label, address), in kernel order.
    fn addr_entries(&self) -> io::Result<Vec<(String, Ipv4Net)>> {
        let mut out = Vec::new();
        for (label, ip) in self.sock.ifconf()? {
            // SIOCGIFNETMASK with the address filled in matches label *and* address
            // (devinet_ioctl's 4.4BSD-style lookup), so each address gets its own mask.
            let mut r = Ifreq::new(&label)?;
            r.set_inet(ip);
            match self.sock.ifreq(IfreqRequest::GetNetmask, &mut r) {
                Ok(()) => {}
                Err(e) if vanished(&e) => continue,
                Err(e) => return Err(e),
            }
            let mask = r
                .inet()
                .ok_or_else(|| io::Error::other("netmask is not AF_INET"))?;
            let net = Ipv4Net::with_netmask(ip, mask).map_err(|_| {
                io::Error::other(format!("{label}: {ip} has a non-contiguous netmask {mask}"))
            })?;
            out.push((label, net));
        }
        Ok(out)
    }

    fn set_flag_up(&self, op: &str, link: &str, up: bool) -> Result<(), OpsError> {
        let base = name_req(op, link)?;
        let mut r = base;
        self.call(op, IfreqRequest::GetFlags, &mut r)?;
        let flags = r.flags();
        let want = if up { flags | IFF_UP } else { flags & !IFF_UP };
        if want == flags {
            return Ok(());
        }
        let mut r = base;
        r.set_flags(want);
        self.call(op, IfreqRequest::SetFlags, &mut r)
    }

    /// Reads one link; an `ENODEV` error means it went away meanwhile.
    fn link_info(
        &self,
        name: &str,
        addrs: &mut HashMap<String, Vec<Ipv4Net>>,
    ) -> io::Result<LinkInfo> {
        let base = Ifreq::new(name)?;
        let mut r = base;
        self.sock.ifreq(IfreqRequest::GetIndex, &mut r)?;
        let index = u32::try_from(r.int()).map_err(|_| io::Error::other("negative index"))?;
        let mut r = base;
        self.sock.ifreq(IfreqRequest::GetFlags, &mut r)?;
        let up = r.flags() & IFF_UP != 0;
        let mut r = base;
        self.sock.ifreq(IfreqRequest::GetMtu, &mut r)?;
        let mtu = u32::try_from(r.int()).map_err(|_| io::Error::other("negative MTU"))?;
        let mut r = base;
        self.sock.ifreq(IfreqRequest::GetHwAddr, &mut r)?;
        let (hw_type, bytes) = r.hwaddr();
        let mac = MAC_TYPES.contains(&hw_type).then_some(MacAddr(bytes));
        let kind = match self.sock.drvinfo(name) {
            Ok(info) => kind_from_drvinfo(&info.driver, &info.bus_info),
            Err(e) if vanished(&e) => return Err(e),
            // EOPNOTSUPP: no driver info (loopback, for one).
            Err(_) => None,
        };
        Ok(LinkInfo {
            name: name.to_owned(),
            index,
            kind,
            mac,
            mtu,
            up,
            addrs: addrs.remove(name).unwrap_or_default(),
        })
    }

    /// `links` and `routes_v4` combine `/proc/thread-self` with ioctls; both must describe
    /// the same namespace.
    fn check_netns(&self, op: &str) -> Result<(), OpsError> {
        match (self.netns.as_ref().map(Netns::id), netns::thread_netns_id()) {
            (Some(mine), Some(now)) if mine != now => Err(OpsError::new(
                op,
                OpsErrorKind::Other,
                format!(
                    "this thread is in network namespace net:[{}] but the IoctlLinks was \
                     opened in net:[{}]; ioctls act in the socket's namespace and \
                     /proc/thread-self/net in the thread's, so the answer would mix the two",
                    now.1, mine.1
                ),
            )),
            _ => Ok(()),
        }
    }

    /// Undoes a half-made step: logs and folds an undo failure into the error.
    fn fail_with_undo(op: &str, cause: io::Error, undo: io::Result<()>) -> OpsError {
        Self::with_undo(OpsError::from_io(op, cause), undo)
    }

    /// `err`, with the failure of the undo that followed it folded in (same op and kind).
    fn with_undo(err: OpsError, undo: io::Result<()>) -> OpsError {
        match undo {
            Ok(()) => err,
            Err(cleanup) => {
                warn!(op = %err.op, cause = %err.source, %cleanup, "undo failed");
                OpsError::new(
                    err.op,
                    err.kind,
                    UndoFailed {
                        cause: err.source,
                        cleanup,
                    },
                )
            }
        }
    }
}

impl LinkOps for IoctlLinks {
    /// Every link, sorted by index. See [`kind_from_drvinfo`] for `kind`. `mac` is set for
    /// Ethernet-like and loopback links; addresses come in kernel order, alias labels
    /// (`br0:1`) included under their device.
    fn links(&mut self) -> Result<Vec<LinkInfo>, OpsError> {
        let op = "list links";
        self.check_netns(op)?;
        let text = read_proc(op, NET_DEV)?;
        let names =
            procfs::parse_net_dev(&text).map_err(|e| OpsError::new(op, OpsErrorKind::Other, e))?;
        let mut addrs = self.addrs_by_device(op)?;
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            match self.link_info(&name, &mut addrs) {
                Ok(info) => out.push(info),
                Err(e) if vanished(&e) => debug!(link = %name, "link went away while listing"),
                Err(e) => return Err(OpsError::from_io(format!("{op}: read {name}"), e)),
            }
        }
        out.sort_by_key(|l| l.index);
        Ok(out)
    }

    fn link(&mut self, name: &str) -> Result<Option<LinkInfo>, OpsError> {
        let op = format!("look up link {name}");
        if name.is_empty() || name.len() >= sys::IFNAMSIZ {
            return Ok(None);
        }
        let mut addrs = self.addrs_by_device(&op)?;
        match self.link_info(name, &mut addrs) {
            Ok(info) => Ok(Some(info)),
            Err(e) if vanished(&e) => Ok(None),
            Err(e) => Err(OpsError::from_io(op, e)),
        }
    }

    /// The main table as `/proc/thread-self/net/route` shows it (the kernel prints only
    /// `RT_TABLE_MAIN`, without broadcast/multicast entries, and there is no route cache).
    /// Default routes are kept, with `dst: None`. A route without a device (blackhole,
    /// unreachable, prohibit: `*` in the file) has `oif: None`, as its netlink dump has no
    /// `RTA_OIF`. A multipath route differs from netlink: the file prints only its first
    /// nexthop, so it comes with that nexthop's device and gateway, where a netlink dump has
    /// neither (only `RTA_MULTIPATH`).
    fn routes_v4(&mut self) -> Result<Vec<RouteV4>, OpsError> {
        let op = "list IPv4 routes";
        self.check_netns(op)?;
        let text = read_proc(op, NET_ROUTE)?;
        let parsed =
            procfs::parse_routes(&text).map_err(|e| OpsError::new(op, OpsErrorKind::Other, e))?;
        let mut indexes: HashMap<&str, Option<u32>> = HashMap::new();
        let mut out = Vec::with_capacity(parsed.len());
        for r in parsed {
            let oif = match r.iface {
                None => None,
                Some(dev) => {
                    let idx = match indexes.get(dev) {
                        Some(idx) => *idx,
                        None => {
                            let idx = match self.index(op, name_req(op, dev)?) {
                                Ok(i) => Some(i),
                                Err(e) if e.kind == OpsErrorKind::NotFound => None,
                                Err(e) => return Err(e),
                            };
                            indexes.insert(dev, idx);
                            idx
                        }
                    };
                    match idx {
                        Some(i) => Some(i),
                        // The device, and with it the route, went away meanwhile.
                        None => continue,
                    }
                }
            };
            let prefix = ipnet::ipv4_mask_to_prefix(r.mask).map_err(|_| {
                OpsError::new(
                    op,
                    OpsErrorKind::Other,
                    format!("route {} has a non-contiguous mask {}", r.dst, r.mask),
                )
            })?;
            let dst = match prefix {
                0 => None,
                p => Some(
                    Ipv4Net::new(r.dst, p)
                        .map_err(|e| OpsError::new(op, OpsErrorKind::Other, e))?,
                ),
            };
            out.push(RouteV4 {
                dst,
                gateway: r.gateway,
                oif,
            });
        }
        Ok(out)
    }

    /// `SIOCBRADDBR`, then rtnetlink `RTM_NEWLINK` with `IFLA_BR_MCAST_SNOOPING` (always
    /// sent, whatever the kernel's default: no ioctl carries it, and `/sys/class/net` would
    /// follow the mount's namespace, not the socket's), then `SIOCSIFHWADDR` with the MAC
    /// (before the bridge has ports, so it never takes a port's, moby/moby#3200), then
    /// `SIOCSIFMTU` if asked. If a later step fails the bridge is deleted again. A name of 16 bytes or more is refused before any
    /// ioctl with Docker's text (`Interface name X too long`): the kernel would silently
    /// truncate it to 15 and create a bridge nobody asked for.
    fn create_bridge(&mut self, spec: &BridgeSpec) -> Result<(), OpsError> {
        let name = spec.name.as_str();
        let op = format!("create bridge {name}");
        let base = name_req(&op, name)?;
        let mut r = base;
        if let Err(e) = self.sock.ifreq(IfreqRequest::AddBridge, &mut r) {
            if e.raw_os_error() == Some(ENOPKG) {
                return Err(OpsError::new(
                    op,
                    OpsErrorKind::Unavailable,
                    format!("the kernel has no bridge support (bridge module missing): {e}"),
                ));
            }
            return Err(OpsError::from_io(op, e));
        }
        let undo = |this: &Self| {
            let mut r = base;
            this.sock.ifreq(IfreqRequest::DelBridge, &mut r)
        };

        // Right after creation, while the bridge has no port yet.
        {
            let on = spec.mcast_snooping;
            let op = format!("{op}: set mcast_snooping {}", u8::from(on));
            let res = self.nl(&op).and_then(|nl| {
                expect_ack(&op, nl.request(|seq| nl::set_mcast_snooping(seq, name, on)))
            });
            if let Err(e) = res {
                return Err(Self::with_undo(e, undo(self)));
            }
        }

        let mut r = base;
        r.set_hwaddr(ARPHRD_ETHER, spec.mac.octets());
        if let Err(e) = self.sock.ifreq(IfreqRequest::SetHwAddr, &mut r) {
            let op = format!("{op}: set MAC {}", spec.mac);
            return Err(Self::fail_with_undo(&op, e, undo(self)));
        }
        if let Some(mtu) = spec.mtu {
            let op = format!("{op}: set MTU {mtu}");
            let mtu = match i32::try_from(mtu) {
                Ok(m) => m,
                Err(_) => {
                    let e = io::Error::new(io::ErrorKind::InvalidInput, "MTU exceeds a C int");
                    return Err(Self::fail_with_undo(&op, e, undo(self)));
                }
            };
            let mut r = base;
            r.set_int(mtu);
            if let Err(e) = self.sock.ifreq(IfreqRequest::SetMtu, &mut r) {
                return Err(Self::fail_with_undo(&op, e, undo(self)));
            }
        }
        debug!(bridge = name, mac = %spec.mac, mtu = ?spec.mtu,
               mcast_snooping = spec.mcast_snooping, "created bridge");
        Ok(())
    }

    /// `SIOCSIFADDR` then `SIOCSIFNETMASK` on the link's own label.
    ///
    /// With ioctls a label holds one address, and `SIOCSIFADDR` would silently *replace* it;
    /// so if the link already has an address labelled with its name (the requested one or
    /// another), this fails with [`OpsErrorKind::AlreadyExists`] naming it, like netlink's
    /// `EEXIST` for a duplicate. A second address would need an alias label (`br0:1`), which
    /// this backend does not create. `0.0.0.0` is refused (the kernel takes it as "remove").
    /// If the netmask step fails, the address is removed again.
    fn add_addr(&mut self, link: &str, addr: Ipv4Net) -> Result<(), OpsError> {
        let op = format!("add address {addr} to {link}");
        let base = name_req(&op, link)?;
        if addr.addr().is_unspecified() {
            return Err(OpsError::new(
                op,
                OpsErrorKind::Other,
                "0.0.0.0 cannot be added: SIOCSIFADDR takes it as \"remove the address\"",
            ));
        }
        self.index(&op, base)?;
        let entries = self.addr_entries().map_err(|e| OpsError::from_io(&op, e))?;
        if let Some((_, cur)) = entries.iter().find(|(label, _)| label == link) {
            let why = if *cur == addr {
                format!("{link} already has {cur}")
            } else {
                format!(
                    "{link} already has {cur}; with ioctls a link holds one IPv4 address under \
                     its own name (a second one would need an alias label such as {link}:1)"
                )
            };
            return Err(OpsError::new(op, OpsErrorKind::AlreadyExists, why));
        }
        let mut r = base;
        r.set_inet(addr.addr());
        self.call(&op, IfreqRequest::SetAddr, &mut r)?;
        let mut r = base;
        r.set_inet(addr.netmask());
        if let Err(e) = self.sock.ifreq(IfreqRequest::SetNetmask, &mut r) {
            let mut undo = base;
            undo.set_inet(Ipv4Addr::UNSPECIFIED);
            let undone = self.sock.ifreq(IfreqRequest::SetAddr, &mut undo);
            return Err(Self::fail_with_undo(&op, e, undone));
        }
        debug!(link, %addr, "added address");
        Ok(())
    }

    /// `SIOCSIFADDR` with `0.0.0.0` on the address's label: IPv4 has no `SIOCDIFADDR`, and
    /// the kernel drops an address whose local part becomes zero. That acts on the *first*
    /// address of the label, so an address that is not first under its label (a secondary
    /// added through netlink) cannot be removed this way: that is an [`OpsErrorKind::Other`]
    /// error rather than removing the wrong one. An address the link does not have is
    /// [`OpsErrorKind::NotFound`].
    fn del_addr(&mut self, link: &str, addr: Ipv4Net) -> Result<(), OpsError> {
        let op = format!("delete address {addr} from {link}");
        let base = name_req(&op, link)?;
        self.index(&op, base)?;
        let entries = self.addr_entries().map_err(|e| OpsError::from_io(&op, e))?;
        let Some((label, _)) = entries
            .iter()
            .find(|(label, net)| device_of(label) == link && *net == addr)
        else {
            let has: Vec<String> = entries
                .iter()
                .filter(|(label, _)| device_of(label) == link)
                .map(|(_, net)| net.to_string())
                .collect();
            return Err(OpsError::new(
                op,
                OpsErrorKind::NotFound,
                format!("{link} does not have {addr} (it has [{}])", has.join(", ")),
            ));
        };
        if let Some((_, first)) = entries.iter().find(|(l, _)| l == label)
            && *first != addr
        {
            return Err(OpsError::new(
                op,
                OpsErrorKind::Other,
                format!(
                    "with ioctls only the first address labelled {label} ({first}) can be \
                     removed; {addr} comes after it"
                ),
            ));
        }
        let mut r = Ifreq::new(label).map_err(|e| OpsError::from_io(&op, e))?;
        r.set_inet(Ipv4Addr::UNSPECIFIED);
        self.call(&op, IfreqRequest::SetAddr, &mut r)?;
        debug!(link, %addr, "deleted address");
        Ok(())
    }

    fn set_mtu(&mut self, link: &str, mtu: u32) -> Result<(), OpsError> {
        let op = format!("set MTU {mtu} on {link}");
        let mut r = name_req(&op, link)?;
        let v = i32::try_from(mtu)
            .map_err(|_| OpsError::new(&op, OpsErrorKind::Other, "MTU exceeds a C int"))?;
        r.set_int(v);
        self.call(&op, IfreqRequest::SetMtu, &mut r)?;
        debug!(link, mtu, "set MTU");
        Ok(())
    }

    fn set_up(&mut self, link: &str) -> Result<(), OpsError> {
        self.set_flag_up(&format!("set {link} up"), link, true)?;
        debug!(link, "link up");
        Ok(())
    }

    fn set_down(&mut self, link: &str) -> Result<(), OpsError> {
        self.set_flag_up(&format!("set {link} down"), link, false)?;
        debug!(link, "link down");
        Ok(())
    }

    /// A bridge: brought down, then `SIOCBRDELBR` (the kernel refuses to delete a bridge
    /// that is up; Docker 1.x's `DeleteBridge` cleared the flags first too). Any other link:
    /// rtnetlink `RTM_DELLINK`, since no ioctl deletes one (Docker 1.x's `NetworkLinkDel`);
    /// this is how a half-made attach removes its veth, and the veth's peer goes with it.
    fn delete_link(&mut self, link: &str) -> Result<(), OpsError> {
        let op = format!("delete link {link}");
        let base = name_req(&op, link)?;
        let index = self.index(&op, base)?;
        let driver = match self.sock.drvinfo(link) {
            Ok(info) => info.driver,
            Err(e) if vanished(&e) => return Err(OpsError::from_io(op, e)),
            Err(_) => String::new(),
        };
        if driver != "bridge" {
            let index = i32::try_from(index)
                .map_err(|_| OpsError::new(&op, OpsErrorKind::Other, "index exceeds a C int"))?;
            let res = self.nl(&op)?.request(|seq| nl::del_link(seq, index));
            expect_ack(&op, res)?;
            debug!(link, driver, "deleted link");
            return Ok(());
        }
        self.set_flag_up(&op, link, false)?;
        let mut r = base;
        match self.sock.ifreq(IfreqRequest::DelBridge, &mut r) {
            Ok(()) => {}
            // br_del_bridge answers ENXIO, not ENODEV, for a missing bridge.
            Err(e) if e.raw_os_error() == Some(ENXIO) => {
                return Err(OpsError::new(op, OpsErrorKind::NotFound, e));
            }
            Err(e) => return Err(OpsError::from_io(op, e)),
        }
        debug!(link, "deleted bridge");
        Ok(())
    }
}

impl AttachOps for IoctlLinks {
    /// One rtnetlink `RTM_NEWLINK` (`NLM_F_CREATE | NLM_F_EXCL`) with the peer's attributes
    /// (name, MAC, MTU, `IFLA_NET_NS_FD`) nested inside: the peer is born in the container's
    /// namespace, never created here and moved (a move costs the kernel ~20-40 ms). Both
    /// ends get the MTU; the host end gets a kernel-chosen random MAC, as in Docker 1.x. A
    /// namespace path that does not exist is [`OpsErrorKind::NotFound`]; either name
    /// already taken (the host end here, the peer in its namespace) is
    /// [`OpsErrorKind::AlreadyExists`], and then nothing is created.
    fn create_veth(&mut self, spec: &VethSpec) -> Result<(), OpsError> {
        let op = format!(
            "create veth {} with peer {} in {}",
            spec.host,
            spec.peer,
            spec.peer_netns.display()
        );
        name_req(&op, &spec.host)?;
        name_req(&op, &spec.peer)?;
        let ns = open_netns(&op, &spec.peer_netns)?;
        let req = VethRequest {
            host: &spec.host,
            peer: &spec.peer,
            peer_mac: spec.peer_mac.octets(),
            mtu: spec.mtu,
            peer_netns: ns.as_raw_fd(),
        };
        // `ns` stays open until the kernel has answered: it reads the descriptor while
        // handling the request.
        let res = self.nl(&op)?.request(|seq| nl::new_veth(seq, &req));
        drop(ns);
        expect_ack(&op, res)?;
        debug!(host = %spec.host, peer = %spec.peer, netns = %spec.peer_netns.display(),
               mac = %spec.peer_mac, mtu = spec.mtu, "created veth pair");
        Ok(())
    }

    /// `SIOCBRADDIF` on the bridge with the port's index (Docker 1.x `AddToBridge`). A link
    /// already on this bridge is left as it is (the kernel answers `EBUSY`, netlink's
    /// `IFLA_MASTER` makes it a no-op; so does this). A link with another master is an
    /// [`OpsErrorKind::Other`] error: the ioctl cannot move ports, where netlink would.
    /// A master that is not a bridge is [`OpsErrorKind::Other`]; either link missing is
    /// [`OpsErrorKind::NotFound`], naming it.
    fn set_master(&mut self, link: &str, master: &str) -> Result<(), OpsError> {
        let op = format!("attach {link} to {master}");
        let port = self.index_of(&op, link)?;
        let bridge = self.index_of(&op, master)?;
        let mut r = name_req(&op, master)?;
        let port_int = i32::try_from(port)
            .map_err(|_| OpsError::new(&op, OpsErrorKind::Other, "index exceeds a C int"))?;
        r.set_int(port_int);
        match self.sock.ifreq(IfreqRequest::AddIf, &mut r) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
                return Err(OpsError::new(
                    op,
                    OpsErrorKind::Other,
                    format!("{master} is not a bridge ({e})"),
                ));
            }
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                return Err(OpsError::new(
                    op,
                    OpsErrorKind::Other,
                    format!("{link} is a bridge itself ({e})"),
                ));
            }
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                let reply = self
                    .nl(&op)?
                    .request(|seq| nl::get_link(seq, port_int))
                    .map_err(|n| netlink_error(&op, n))?;
                let current = match reply {
                    Reply::Message(msg) => {
                        nl::link_master(&msg).map_err(|n| netlink_error(&op, n))?
                    }
                    Reply::Ack => None,
                };
                if current == Some(bridge) {
                    debug!(link, master, "already a port of the bridge");
                    return Ok(());
                }
                let why = match current {
                    Some(other) => format!(
                        "{link} already has a master (index {other}); SIOCBRADDIF does not \
                         move a port from one master to another ({e})"
                    ),
                    None => format!("{link} cannot be enslaved ({e})"),
                };
                return Err(OpsError::new(op, OpsErrorKind::Other, why));
            }
            Err(e) => return Err(OpsError::from_io(op, e)),
        }
        debug!(link, master, "attached to bridge");
        Ok(())
    }

    /// rtnetlink `RTM_SETLINK` to `AF_BRIDGE` with `IFLA_PROTINFO { IFLA_BRPORT_MODE }`, as
    /// `bridge link set dev LINK hairpin on` sends it. Not `/sys/class/net/LINK/brport/
    /// hairpin_mode`, which Docker 1.x wrote: `/sys` shows the namespace it was mounted in,
    /// not the socket's. A link that is not a bridge port is [`OpsErrorKind::Other`].
    fn set_hairpin(&mut self, link: &str, on: bool) -> Result<(), OpsError> {
        let op = format!(
            "set hairpin mode {} on {link}",
            if on { "on" } else { "off" }
        );
        let index = self.index_of(&op, link)?;
        let index = i32::try_from(index)
            .map_err(|_| OpsError::new(&op, OpsErrorKind::Other, "index exceeds a C int"))?;
        let res = self.nl(&op)?.request(|seq| nl::set_hairpin(seq, index, on));
        match res {
            // rtnl_bridge_setlink: the link has no master with bridge ops.
            Err(NetlinkError::Kernel { errno, .. }) if errno == libc::EOPNOTSUPP => {
                return Err(OpsError::new(
                    op,
                    OpsErrorKind::Other,
                    format!(
                        "{link} is not a bridge port ({})",
                        io::Error::from_raw_os_error(errno)
                    ),
                ));
            }
            other => expect_ack(&op, other)?,
        }
        debug!(link, on, "set hairpin mode");
        Ok(())
    }

    /// rtnetlink `RTM_NEWLINK` on the link's index (looked up with `SIOCGIFINDEX`, so a
    /// missing link is [`OpsErrorKind::NotFound`] naming it) with `IFLA_AF_SPEC { AF_INET6 {
    /// IFLA_INET6_ADDR_GEN_MODE = none } }`, as `ip link set LINK addrgenmode none` sends it;
    /// there is no ioctl or procfs knob for the mode. The kernel's `EAFNOSUPPORT` (no IPv6
    /// on the link) is success: nothing to turn off.
    fn set_ipv6_autoconf_off(&mut self, link: &str) -> Result<(), OpsError> {
        let op = format!("turn IPv6 autoconfiguration off on {link}");
        let index = self.index_of(&op, link)?;
        let index = i32::try_from(index)
            .map_err(|_| OpsError::new(&op, OpsErrorKind::Other, "index exceeds a C int"))?;
        let res = self
            .nl(&op)?
            .request(|seq| nl::no_ipv6_autoconf(seq, index));
        match res {
            Err(NetlinkError::Kernel { errno, .. }) if errno == libc::EAFNOSUPPORT => {
                debug!(link, "no IPv6 on the link: nothing to turn off");
            }
            other => {
                expect_ack(&op, other)?;
                debug!(link, "IPv6 autoconfiguration off");
            }
        }
        Ok(())
    }

    /// `1` to `/proc/sys/net/ipv6/conf/LINK/disable_ipv6` in the sockets' namespace (not
    /// necessarily the calling thread's: see the crate documentation), then
    /// [`backend_sysctl::finish_disable_ipv6`] for a missing key (no such link, or no IPv6
    /// on it) and a read-only `/proc/sys` (falls back to
    /// [`AttachOps::set_ipv6_autoconf_off`]). The names `all` and `default`, which the
    /// kernel refuses for links, are [`OpsErrorKind::NotFound`] without a write: their keys
    /// are the settings of every link.
    fn disable_ipv6(&mut self, link: &str) -> Result<(), OpsError> {
        let op = format!("turn IPv6 off on {link}");
        name_req(&op, link)?;
        let key = backend_sysctl::disable_ipv6_key(link)?;
        // In the sockets' namespace, whichever thread calls; from the calling thread when
        // it could not be remembered (no `/proc/thread-self` at construction).
        let written = match &self.netns {
            Some(ns) => ns.write_key(&key, "1"),
            None => backend_sysctl::ProcSys::new().write_key(&key, "1"),
        };
        backend_sysctl::finish_disable_ipv6(self, link, written)
    }

    /// `SIOCADDRT` with a `struct rtentry`: `RTF_UP`, plus `RTF_GATEWAY` with a gateway;
    /// `rt_dev` names the output link if `oif` is given (looked up with `SIOCGIFNAME`). The
    /// route goes to the main table with priority 0, as `ip route add` would put it.
    ///
    /// One difference from netlink: the kernel handles `SIOCADDRT` as `NLM_F_CREATE`
    /// without `NLM_F_EXCL`, so an identical route is [`OpsErrorKind::AlreadyExists`] but a
    /// second route to the same destination through another gateway is added beside the
    /// first (like `ip route prepend`), where `ip route add` would refuse it.
    fn add_route(&mut self, route: &RouteV4) -> Result<(), OpsError> {
        let mut op = match route.dst {
            Some(dst) => format!("add route {dst}"),
            None => "add default route".to_owned(),
        };
        if let Some(gw) = route.gateway {
            op.push_str(&format!(" via {gw}"));
        }
        if let Some(oif) = route.oif {
            op.push_str(&format!(" dev #{oif}"));
        }
        let dev = match route.oif {
            None => None,
            Some(oif) => {
                let mut r = Ifreq::zeroed();
                r.set_int(i32::try_from(oif).map_err(|_| {
                    OpsError::new(&op, OpsErrorKind::Other, "index exceeds a C int")
                })?);
                match self.sock.ifreq(IfreqRequest::GetName, &mut r) {
                    Ok(()) => Some(r.name_bytes()),
                    Err(e) if e.raw_os_error() == Some(libc::ENODEV) => {
                        return Err(OpsError::new(
                            op,
                            OpsErrorKind::NotFound,
                            format!("there is no link with index {oif}: {e}"),
                        ));
                    }
                    Err(e) => return Err(OpsError::from_io(op, e)),
                }
            }
        };
        let (dst, genmask) = match route.dst {
            Some(net) => (net.addr(), net.netmask()),
            None => (Ipv4Addr::UNSPECIFIED, Ipv4Addr::UNSPECIFIED),
        };
        let entry = RouteEntry {
            dst,
            genmask,
            gateway: route.gateway,
            dev,
        };
        self.sock
            .add_route(&entry)
            .map_err(|e| OpsError::from_io(&op, e))?;
        debug!(?route, "added route");
        Ok(())
    }

    /// One rtnetlink `RTM_NEWLINK` on the link by name: off its bridge, down, into `group`
    /// (no ioctl sets a device group, and doing it in one message spares two more round
    /// trips). A missing link is [`OpsErrorKind::NotFound`].
    fn retire_link(&mut self, link: &str, group: u32) -> Result<(), OpsError> {
        let op = format!("retire {link} (nomaster, down, group {group})");
        name_req(&op, link)?;
        let res = self
            .nl(&op)?
            .request(|seq| nl::retire_link(seq, link, group));
        expect_ack(&op, res)?;
        debug!(link, group, "retired link");
        Ok(())
    }

    /// One rtnetlink `RTM_DELLINK` with `IFLA_GROUP`: every link of the group goes, with one
    /// RCU barrier for all. An empty group (the kernel's `ENODEV`) is not an error.
    fn delete_group(&mut self, group: u32) -> Result<(), OpsError> {
        let op = format!("delete the links of group {group}");
        let res = self.nl(&op)?.request(|seq| nl::del_group(seq, group));
        match expect_ack(&op, res) {
            Ok(()) => {
                debug!(group, "deleted link group");
                Ok(())
            }
            Err(e) if e.kind == OpsErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// Opens a network namespace file; a missing one is `NotFound` with its path in the text,
/// and a file that is not a network namespace is refused here with a clear message (the
/// kernel would only answer `EINVAL`).
fn open_netns(op: &str, path: &Path) -> Result<File, OpsError> {
    let file = File::open(path).map_err(|e| {
        OpsError::new(
            op,
            kind_of(&e),
            io::Error::new(e.kind(), format!("open {}: {e}", path.display())),
        )
    })?;
    let not_netns = |what: String| {
        OpsError::new(
            op,
            OpsErrorKind::Other,
            format!("{} is not a network namespace ({what})", path.display()),
        )
    };
    match sys::ns_type(file.as_fd()) {
        Ok(t) if t == libc::CLONE_NEWNET => Ok(file),
        Ok(t) => Err(not_netns(format!("namespace type {t:#x}"))),
        Err(e) if e.raw_os_error() == Some(libc::ENOTTY) => Err(not_netns(e.to_string())),
        // A kernel before 4.11 has no NS_GET_NSTYPE: leave the check to the kernel's use.
        Err(_) => Ok(file),
    }
}

/// An `OpsError` for a netlink failure, with the kind its errno maps to.
fn netlink_error(op: &str, e: NetlinkError) -> OpsError {
    let kind = match e.raw_os_error() {
        Some(n) => kind_of(&io::Error::from_raw_os_error(n)),
        None => OpsErrorKind::Other,
    };
    OpsError::new(op, kind, e)
}

/// A request that must be acknowledged, not answered with a message.
fn expect_ack(op: &str, res: Result<Reply, NetlinkError>) -> Result<(), OpsError> {
    match res {
        Ok(Reply::Ack) => Ok(()),
        Ok(Reply::Message(_)) => Err(OpsError::new(
            op,
            OpsErrorKind::Other,
            NetlinkError::Malformed("expected an acknowledgement, got a message"),
        )),
        Err(e) => Err(netlink_error(op, e)),
    }
}

/// The kind of a link as far as ethtool's `ETHTOOL_GDRVINFO` tells, standing in for
/// netlink's `IFLA_INFO_KIND` (there is no procfs or plain ioctl for it).
///
/// Virtual devices report their driver, which for most is the link kind (`bridge`, `veth`,
/// `vxlan`, `tun`; the kernel even falls back to the rtnl kind for drivers without driver
/// info, e.g. `macvlan`); two well-known names differ and are translated (`bonding` → `bond`,
/// `802.1Q VLAN Support` → `vlan`). A device on a bus (PCI, USB, virtio) reports its parent
/// in `bus_info`: it is physical and has no kind, as netlink says. Virtual drivers leave
/// `bus_info` empty or put a placeholder there (`N/A` for a bridge, `tun`/`tap` for tun).
pub fn kind_from_drvinfo(driver: &str, bus_info: &str) -> Option<String> {
    if driver.is_empty() || !matches!(bus_info, "" | "N/A" | "tun" | "tap") {
        return None;
    }
    let kind = match driver {
        "bonding" => "bond",
        "802.1Q VLAN Support" => "vlan",
        other => other,
    };
    Some(kind.to_owned())
}

/// Validates a link name before it reaches an ioctl.
fn name_req(op: &str, link: &str) -> Result<Ifreq, OpsError> {
    IfName::new(link).map_err(|e| OpsError::new(op, OpsErrorKind::Other, e))?;
    if link.contains(':') {
        // dev_valid_name() refuses ':' in link names, and the ioctls would take `br0:1` as
        // an alias label of br0 and act on br0.
        return Err(OpsError::new(
            op,
            OpsErrorKind::Other,
            format!("invalid link name {link:?}: ':' marks an address alias label, not a link"),
        ));
    }
    Ifreq::new(link).map_err(|e| OpsError::from_io(op, e))
}

/// The device an address label belongs to: `br0:1` → `br0`.
fn device_of(label: &str) -> &str {
    label.split_once(':').map_or(label, |(dev, _)| dev)
}

/// The link (ENODEV) or address (EADDRNOTAVAIL) went away between two ioctls.
fn vanished(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENODEV) | Some(libc::EADDRNOTAVAIL)
    )
}

fn read_proc(op: &str, path: &str) -> Result<String, OpsError> {
    std::fs::read_to_string(path).map_err(|e| {
        // No such file means no procfs (or a kernel without the file), not a missing link.
        let kind = match e.kind() {
            io::ErrorKind::NotFound => OpsErrorKind::Unavailable,
            _ => kind_of(&e),
        };
        OpsError::new(
            op,
            kind,
            io::Error::new(e.kind(), format!("read {path}: {e}")),
        )
    })
}

/// The kind `OpsError::from_io` would give `e`, without consuming it.
fn kind_of(e: &io::Error) -> OpsErrorKind {
    let copy = match e.raw_os_error() {
        Some(n) => io::Error::from_raw_os_error(n),
        None => io::Error::from(e.kind()),
    };
    OpsError::from_io("", copy).kind
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_follows_virtual_drivers_and_hides_physical_ones() {
        let k = |d, b| kind_from_drvinfo(d, b);
        assert_eq!(k("bridge", "N/A").as_deref(), Some("bridge"));
        assert_eq!(k("veth", "").as_deref(), Some("veth"));
        assert_eq!(k("tun", "tap").as_deref(), Some("tun"));
        assert_eq!(k("bonding", "").as_deref(), Some("bond"));
        assert_eq!(k("802.1Q VLAN Support", "").as_deref(), Some("vlan"));
        assert_eq!(k("e1000e", "0000:00:19.0"), None);
        assert_eq!(k("virtio_net", "virtio0"), None);
        assert_eq!(k("", ""), None);
    }

    #[test]
    fn labels_map_to_devices() {
        assert_eq!(device_of("br0"), "br0");
        assert_eq!(device_of("br0:1"), "br0");
        assert_eq!(device_of("docker0:web"), "docker0");
    }

    #[test]
    fn bad_names_are_refused_before_any_ioctl() {
        // Runs as any user: the socket needs no privilege, and a name check that let the
        // request through would fail differently (EPERM as a user, a truncated bridge as root).
        let mut links = IoctlLinks::new().expect("open socket");
        let long = "abcdefghijklmnop";
        let err = links
            .create_bridge(&BridgeSpec {
                name: long.into(),
                mac: MacAddr([2, 0x42, 0, 0, 0, 1]),
                mtu: None,
                mcast_snooping: false,
            })
            .expect_err("16-byte name");
        assert_eq!(err.kind, OpsErrorKind::Other);
        assert_eq!(
            err.to_string(),
            format!("create bridge {long}: Interface name {long} too long")
        );
        let err = links.set_up("br0:1").expect_err("alias label");
        assert_eq!(err.kind, OpsErrorKind::Other);
        assert!(err.to_string().starts_with("set br0:1 up: "), "{err}");
        let err = links.set_mtu("a/b", 1500).expect_err("slash");
        assert!(err.to_string().contains("\"a/b\""), "{err}");
    }

    #[test]
    fn nonexistent_links_are_not_found() {
        // ENODEV needs no privilege: the lookup fails before any permission check.
        let mut links = IoctlLinks::new().expect("open socket");
        let err = links.set_up("nosuchlink0").expect_err("missing");
        assert_eq!(err.kind, OpsErrorKind::NotFound);
        assert!(err.to_string().starts_with("set nosuchlink0 up: "), "{err}");
    }
}
