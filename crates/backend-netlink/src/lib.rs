//! [`LinkOps`] over rtnetlink: the way modern Docker (libnetwork, through vishvananda/netlink)
//! talks to the kernel, one netlink message per operation.
//!
//! # Threads and network namespaces
//!
//! [`NetlinkLinks::new`] opens its `NETLINK_ROUTE` socket synchronously, on the calling thread,
//! so the socket belongs to that thread's network namespace, and a socket keeps its namespace
//! for life. The connection is driven by a current-thread tokio runtime owned by the struct:
//! each trait call is one `block_on` on the calling thread, and no worker thread ever exists.
//!
//! This avoids a known trap: with a multi-threaded runtime, a socket (or a `setns`) made from
//! inside a task can land on whichever worker runs it, so code that switches namespaces ends up
//! talking to the wrong one (the reason vishvananda/netlink pins with `LockOSThread`, and why
//! rtnetlink's own `NetworkNamespace` helpers fork). Here the namespace is fixed once, at
//! construction: create one `NetlinkLinks` per namespace, on a thread that is in it. Moving the
//! value to another thread afterwards is harmless (it keeps talking to the namespace it was
//! made in), but do not expect it to follow a later `setns`/`unshare` of any thread.
//!
//! The trait is synchronous; calling it from inside an async runtime would nest runtimes, so
//! such a call fails with [`OpsErrorKind::Other`] instead of panicking.
//!
//! # Another namespace: [`NetlinkLinks::new_in`]
//!
//! A container's side of an attach (its `lo`, `eth0`, default route) is configured over a
//! connection whose socket lives in the container's namespace. `new_in` opens the namespace
//! file, then, on a short-lived helper thread, `setns(CLONE_NEWNET)`s into it and builds the
//! whole `NetlinkLinks` there (socket, runtime, connection task), and hands the finished value
//! back; the helper thread ends right away and its namespace switch with it. The calling
//! thread's namespace is never touched, and later calls run on the caller's thread like any
//! other `NetlinkLinks` (a current-thread runtime is not tied to the thread that built it).
//! This was preferred over building the connection on the caller's thread from a socket made
//! on the helper (`rtnetlink::from_socket`): that needs an unsafe fd hand-off into
//! `TokioSocket::from_raw_fd`, which panics instead of failing if the fd cannot be registered,
//! and a permanent per-namespace thread with a request channel would add a thread per container
//! for no gain.

use std::collections::HashMap;
use std::fs::File;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::path::Path;

use backend_sysctl::netns::{self, Netns};
use futures::TryStreamExt;
use ipnet::Ipv4Net;
use netcore::mac::MacAddr;
use netcore::ops::{
    AttachOps, BridgeSpec, LinkInfo, LinkOps, OpsError, OpsErrorKind, RouteV4, VethSpec,
};
use netlink_packet_route::AddressFamily;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    AfSpecInet6, AfSpecUnspec, In6AddrGenMode, InfoBridge, InfoBridgePort, InfoData, InfoKind,
    InfoPortData, InfoPortKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo as NlLinkInfo,
    LinkMessage,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteProtocol, RouteScope,
    RouteType,
};

/// The kernel's buffer for a link name, NUL included.
const IFNAMSIZ: usize = 16;

/// [`LinkOps`] over one rtnetlink connection in the network namespace of the thread that
/// created it (see the crate documentation).
#[derive(Debug)]
pub struct NetlinkLinks {
    rt: tokio::runtime::Runtime,
    handle: rtnetlink::Handle,
    /// The network namespace the socket lives in (that of the thread that made it), for the
    /// one operation that is not netlink: [`AttachOps::disable_ipv6`] writes `/proc/sys`,
    /// which follows the *calling* thread's namespace.
    netns: Netns,
}

/// What this crate itself can fail with, besides the kernel's errno.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// A trait method was called from inside an async runtime, where `block_on` would panic.
    #[error("called from inside an async runtime; call NetlinkLinks from a plain thread")]
    NestedRuntime,
    /// A link name the kernel cannot hold (`IFNAMSIZ` is 16 bytes with the NUL).
    #[error("interface name {0} too long")]
    NameTooLong(String),
    /// A reply the kernel should never send (bad prefix length, missing attribute).
    #[error("unexpected netlink reply: {0}")]
    BadReply(String),
    /// The helper thread of [`NetlinkLinks::new_in`] could not be started or died.
    #[error("namespace helper thread: {0}")]
    Helper(String),
}

impl NetlinkLinks {
    /// Opens a netlink connection in the calling thread's network namespace.
    pub fn new() -> Result<Self, OpsError> {
        let op = "open netlink connection";
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .map_err(|e| OpsError::from_io(op, e))?;
        let (conn, handle, _unsolicited) = {
            // The socket is an `AsyncFd`, which registers with the runtime's I/O driver and
            // so needs the runtime's context; it is still created right here, on this thread.
            let _ctx = rt.enter();
            rtnetlink::new_connection().map_err(|e| OpsError::from_io(op, e))?
        };
        // On a current-thread runtime a spawned task only runs inside `block_on`, i.e. on the
        // thread that calls the trait: the connection never migrates.
        rt.spawn(conn);
        let netns = Netns::of_thread().map_err(|e| OpsError::from_io(op, e))?;
        tracing::debug!("netlink connection opened");
        Ok(Self { rt, handle, netns })
    }

    /// Opens a netlink connection in the network namespace `netns` (a path such as
    /// `/proc/<pid>/ns/net` or `/run/netns/<name>`), whatever namespace the calling thread is
    /// in; see the crate documentation for how. A missing path is [`OpsErrorKind::NotFound`],
    /// a file that is not a network namespace is [`OpsErrorKind::Other`] (EINVAL), and a
    /// namespace the process may not enter is [`OpsErrorKind::PermissionDenied`].
    pub fn new_in(netns: &Path) -> Result<Self, OpsError> {
        let op = || format!("open netlink connection in {}", netns.display());
        // Opened here rather than on the helper so that the error for a bad path is plain.
        let ns = File::open(netns).map_err(|e| OpsError::from_io(op(), e))?;
        let helper = std::thread::Builder::new()
            .name("netlink-setns".into())
            .spawn(move || -> Result<Self, OpsError> {
                netns::enter(&ns).map_err(|e| OpsError::from_io(String::new(), e))?;
                // From here on this thread is in `netns`; the socket `new` makes belongs to it
                // for life, and the thread itself ends (namespace switch and all) on return.
                Self::new()
            })
            .map_err(|e| OpsError::new(op(), OpsErrorKind::Other, e))?;
        let links = helper.join().map_err(|_| {
            OpsError::new(
                op(),
                OpsErrorKind::Other,
                NetlinkError::Helper("panicked".into()),
            )
        })?;
        let links = links.map_err(|mut e| {
            e.op = op();
            e
        })?;
        tracing::debug!(netns = %netns.display(), "netlink connection opened in namespace");
        Ok(links)
    }

    /// Runs one request to completion on this struct's runtime, naming `op` in any error.
    fn run<T>(
        &self,
        op: impl FnOnce() -> String,
        fut: impl Future<Output = Result<T, OpsError>>,
    ) -> Result<T, OpsError> {
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(OpsError::new(
                op(),
                OpsErrorKind::Other,
                NetlinkError::NestedRuntime,
            ));
        }
        self.rt.block_on(fut).map_err(|mut e| {
            e.op = op();
            e
        })
    }

    /// The index of a link, looked up by name (`RTM_GETLINK` with `IFLA_IFNAME`). A missing
    /// link comes back from the kernel as ENODEV, hence [`OpsErrorKind::NotFound`].
    async fn index_of(handle: &rtnetlink::Handle, name: &str) -> Result<u32, OpsError> {
        let mut replies = handle.link().get().match_name(name).execute();
        match replies.try_next().await.map_err(nl_error)? {
            Some(msg) => Ok(msg.header.index),
            None => Err(OpsError::new(
                String::new(),
                OpsErrorKind::NotFound,
                io::Error::from_raw_os_error(libc::ENODEV),
            )),
        }
    }
}

/// Fails unless the kernel can hold `name` (`IFNAMSIZ` is 16 bytes with the NUL). The kernel
/// would refuse a longer one too (EINVAL/ERANGE from its attribute policy), but with an errno
/// that does not say why; Docker 1.x's text was `Interface name %s too long`.
fn check_name(op: impl FnOnce() -> String, name: &str) -> Result<(), OpsError> {
    if name.len() >= IFNAMSIZ {
        return Err(OpsError::new(
            op(),
            OpsErrorKind::Other,
            NetlinkError::NameTooLong(name.to_owned()),
        ));
    }
    Ok(())
}

/// Maps an rtnetlink error; the operation's name is filled in by [`NetlinkLinks::run`].
fn nl_error(err: rtnetlink::Error) -> OpsError {
    match err {
        rtnetlink::Error::NetlinkError(msg) => {
            // `to_io` gives "File exists (os error 17)", the text `ip` and Docker show.
            let io = msg.to_io();
            let kind = errno_kind(io.raw_os_error().unwrap_or(0));
            OpsError::new(String::new(), kind, io)
        }
        other => OpsError::new(String::new(), OpsErrorKind::Other, other),
    }
}

/// The kind netcore cares about for a kernel errno.
pub fn errno_kind(errno: i32) -> OpsErrorKind {
    match errno {
        libc::EEXIST => OpsErrorKind::AlreadyExists,
        // ENODEV: no such link (by index or name). ENOENT: no such object in general.
        // EADDRNOTAVAIL: RTM_DELADDR for an address the link does not have.
        libc::ENODEV | libc::ENOENT | libc::EADDRNOTAVAIL => OpsErrorKind::NotFound,
        libc::EPERM | libc::EACCES => OpsErrorKind::PermissionDenied,
        _ => OpsErrorKind::Other,
    }
}

fn bad_reply(what: String) -> OpsError {
    OpsError::new(
        String::new(),
        OpsErrorKind::Other,
        NetlinkError::BadReply(what),
    )
}

/// A link from an `RTM_NEWLINK` dump entry, without addresses; `None` if it has no name.
fn link_from_message(msg: &LinkMessage) -> Option<LinkInfo> {
    let mut name = None;
    let mut kind = None;
    let mut mac = None;
    let mut mtu = 0;
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::IfName(n) => name = Some(n.clone()),
            LinkAttribute::Mtu(m) => mtu = *m,
            // Only Ethernet-style 6-byte addresses are MACs; tunnels report 4 or 16 bytes.
            LinkAttribute::Address(a) => {
                mac = <[u8; 6]>::try_from(a.as_slice()).ok().map(MacAddr);
            }
            LinkAttribute::LinkInfo(infos) => {
                kind = infos.iter().find_map(|i| match i {
                    NlLinkInfo::Kind(k) => Some(k.to_string()),
                    _ => None,
                });
            }
            _ => {}
        }
    }
    Some(LinkInfo {
        name: name?,
        index: msg.header.index,
        kind,
        mac,
        mtu,
        up: msg.header.flags.contains(LinkFlags::Up),
        addrs: Vec::new(),
    })
}

/// The link index and unmasked address of an IPv4 `RTM_NEWADDR` dump entry.
fn addr_from_message(msg: &AddressMessage) -> Result<Option<(u32, Ipv4Net)>, OpsError> {
    if msg.header.family != AddressFamily::Inet {
        return Ok(None);
    }
    // IFA_LOCAL is the interface's own address; IFA_ADDRESS is the peer on point-to-point
    // links and equal to IFA_LOCAL elsewhere. `ip addr` shows IFA_LOCAL too.
    let mut local = None;
    let mut address = None;
    for attr in &msg.attributes {
        match attr {
            AddressAttribute::Local(IpAddr::V4(a)) => local = Some(*a),
            AddressAttribute::Address(IpAddr::V4(a)) => address = Some(*a),
            _ => {}
        }
    }
    let Some(ip) = local.or(address) else {
        return Ok(None);
    };
    let net = Ipv4Net::new(ip, msg.header.prefix_len)
        .map_err(|e| bad_reply(format!("address {ip}/{}: {e}", msg.header.prefix_len)))?;
    Ok(Some((msg.header.index, net)))
}

/// The table a route belongs to. The header byte holds only ids below 256 (larger ones read
/// `RT_TABLE_COMPAT`); the `RTA_TABLE` attribute, when present, holds the real id.
fn route_table(msg: &RouteMessage) -> u32 {
    msg.attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(msg.header.table))
}

/// A main-table IPv4 route, or `None` for anything Docker's `NetworkGetRoutes` skips: other
/// families, other tables (local, broadcast, policy tables), cloned (cache) entries, and
/// non-default routes without a destination.
fn route_from_message(msg: &RouteMessage) -> Option<RouteV4> {
    if msg.header.address_family != AddressFamily::Inet
        || msg.header.flags.contains(RouteFlags::Cloned)
        || route_table(msg) != u32::from(RouteHeader::RT_TABLE_MAIN)
    {
        return None;
    }
    let mut dst_addr = None;
    let mut gateway = None;
    let mut oif = None;
    for attr in &msg.attributes {
        match attr {
            RouteAttribute::Destination(RouteAddress::Inet(a)) => dst_addr = Some(*a),
            RouteAttribute::Gateway(RouteAddress::Inet(a)) => gateway = Some(*a),
            RouteAttribute::Oif(i) => oif = Some(*i),
            _ => {}
        }
    }
    let dst_len = msg.header.destination_prefix_length;
    let dst = if dst_len == 0 {
        None
    } else {
        Some(Ipv4Net::new(dst_addr?, dst_len).ok()?)
    };
    Some(RouteV4 { dst, gateway, oif })
}

/// The broadcast address to send with a new IPv4 address.
///
/// Docker 1.x sent only IFA_LOCAL and IFA_ADDRESS, so docker0 showed `brd 0.0.0.0` and
/// subnet-directed broadcasts went nowhere (flannel-io/flannel#166). Modern Docker (through
/// vishvananda/netlink's `AddrAdd`) sends the network's broadcast, as `ip addr add ... brd +`
/// does; /31 and /32 have no broadcast address (RFC 3021), so none is sent for them.
pub fn broadcast_for(addr: Ipv4Net) -> Option<Ipv4Addr> {
    (addr.prefix_len() < 31).then(|| addr.broadcast())
}

fn link_by_name(name: &str) -> LinkMessage {
    let mut msg = LinkMessage::default();
    msg.attributes.push(LinkAttribute::IfName(name.to_owned()));
    msg
}

impl LinkOps for NetlinkLinks {
    fn links(&mut self) -> Result<Vec<LinkInfo>, OpsError> {
        let handle = &self.handle;
        self.run(|| "dump links".to_owned(), async move {
            // Two dumps, one after the other: a netlink socket runs one dump at a time.
            let mut links = Vec::new();
            let mut replies = handle.link().get().execute();
            while let Some(msg) = replies.try_next().await.map_err(nl_error)? {
                match link_from_message(&msg) {
                    Some(link) => links.push(link),
                    None => tracing::warn!(index = msg.header.index, "link without a name"),
                }
            }
            let mut addrs: HashMap<u32, Vec<Ipv4Net>> = HashMap::new();
            let mut req = handle.address().get();
            req.message_mut().header.family = AddressFamily::Inet;
            let mut replies = req.execute();
            while let Some(msg) = replies.try_next().await.map_err(nl_error)? {
                if let Some((index, net)) = addr_from_message(&msg)? {
                    addrs.entry(index).or_default().push(net);
                }
            }
            for link in &mut links {
                link.addrs = addrs.remove(&link.index).unwrap_or_default();
            }
            Ok(links)
        })
    }

    fn link(&mut self, name: &str) -> Result<Option<LinkInfo>, OpsError> {
        check_name(|| format!("look up link {name}"), name)?;
        let handle = &self.handle;
        self.run(|| format!("look up link {name}"), async move {
            let mut replies = handle.link().get().match_name(name.to_owned()).execute();
            let msg = match replies.try_next().await {
                Ok(Some(msg)) => msg,
                Ok(None) => return Ok(None),
                Err(e) => {
                    let e = nl_error(e);
                    return if e.kind == OpsErrorKind::NotFound {
                        Ok(None)
                    } else {
                        Err(e)
                    };
                }
            };
            let Some(mut link) = link_from_message(&msg) else {
                return Ok(None);
            };
            let mut req = handle.address().get().set_link_index_filter(link.index);
            req.message_mut().header.family = AddressFamily::Inet;
            let mut replies = req.execute();
            while let Some(msg) = replies.try_next().await.map_err(nl_error)? {
                if let Some((index, net)) = addr_from_message(&msg)?
                    && index == link.index
                {
                    link.addrs.push(net);
                }
            }
            Ok(Some(link))
        })
    }

    fn routes_v4(&mut self) -> Result<Vec<RouteV4>, OpsError> {
        let handle = &self.handle;
        self.run(|| "dump routes".to_owned(), async move {
            // The table in the request header is a filter only for sockets with
            // NETLINK_GET_STRICT_CHK; without it the kernel dumps every table, so the
            // filtering is done here, whatever the kernel did.
            let mut req = RouteMessage::default();
            req.header.address_family = AddressFamily::Inet;
            let mut replies = handle.route().get(req).execute();
            let mut routes = Vec::new();
            while let Some(msg) = replies.try_next().await.map_err(nl_error)? {
                routes.extend(route_from_message(&msg));
            }
            Ok(routes)
        })
    }

    fn create_bridge(&mut self, spec: &BridgeSpec) -> Result<(), OpsError> {
        tracing::debug!(
            bridge = %spec.name,
            mac = %spec.mac,
            mtu = ?spec.mtu,
            mcast_snooping = spec.mcast_snooping,
            "create bridge"
        );
        check_name(|| format!("create bridge {}", spec.name), &spec.name)?;
        // One RTM_NEWLINK (NLM_F_CREATE|NLM_F_EXCL) carrying the MAC and MTU. Docker 1.x did
        // SIOCBRADDBR then SIOCSIFHWADDR; setting IFLA_ADDRESS at creation has the same effect
        // (the kernel marks it NET_ADDR_SET, so the bridge never adopts a port's MAC,
        // moby/moby#3200) without a window in which the bridge has a kernel-chosen MAC.
        //
        // The MTU is NOT sent at creation: an IFLA_MTU in RTM_NEWLINK is stored without going
        // through the bridge's ndo_change_mtu, so the kernel does not mark it as set by the
        // user and `br_mtu_auto_adjust` would move it with the ports (e.g. back to 1500 when
        // the last container leaves). A separate change pins it, as the ioctl backend's
        // SIOCSIFMTU and modern Docker's LinkSetMTU do.
        let mut msg = link_by_name(&spec.name);
        msg.attributes
            .push(LinkAttribute::Address(spec.mac.octets().to_vec()));
        // IFLA_BR_MCAST_SNOOPING at creation too, before any port exists (see
        // `netcore::init::plan` for why it is off by default).
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            NlLinkInfo::Kind(InfoKind::Bridge),
            NlLinkInfo::Data(InfoData::Bridge(vec![InfoBridge::MulticastSnooping(
                spec.mcast_snooping,
            )])),
        ]));
        let req = self.handle.link().add(msg);
        self.run(|| format!("create bridge {}", spec.name), async move {
            req.execute().await.map_err(nl_error)
        })?;
        match spec.mtu {
            // A new bridge starts at 1500 and an equal value would be a no-op (not pinned).
            Some(mtu) if mtu != 1500 => self.set_mtu(&spec.name, mtu).inspect_err(|_| {
                // Leave nothing half-made.
                let _ = self.delete_link(&spec.name);
            }),
            _ => Ok(()),
        }
    }

    fn add_addr(&mut self, link: &str, addr: Ipv4Net) -> Result<(), OpsError> {
        tracing::debug!(link, %addr, "add address");
        let handle = &self.handle;
        self.run(|| format!("add address {addr} to {link}"), async move {
            let index = Self::index_of(handle, link).await?;
            let ip = IpAddr::V4(addr.addr());
            let mut req = handle.address().add(index, ip, addr.prefix_len());
            // Spelled out rather than left to rtnetlink's builder, so the message is
            // exactly what this comment and `broadcast_for` describe.
            let attrs = &mut req.message_mut().attributes;
            attrs.clear();
            attrs.push(AddressAttribute::Local(ip));
            attrs.push(AddressAttribute::Address(ip));
            if let Some(brd) = broadcast_for(addr) {
                attrs.push(AddressAttribute::Broadcast(brd));
            }
            req.execute().await.map_err(nl_error)
        })
    }

    fn del_addr(&mut self, link: &str, addr: Ipv4Net) -> Result<(), OpsError> {
        tracing::debug!(link, %addr, "delete address");
        let handle = &self.handle;
        self.run(
            || format!("delete address {addr} from {link}"),
            async move {
                let index = Self::index_of(handle, link).await?;
                let ip = IpAddr::V4(addr.addr());
                let mut msg = AddressMessage::default();
                msg.header.family = AddressFamily::Inet;
                msg.header.prefix_len = addr.prefix_len();
                msg.header.index = index;
                // The kernel matches IFA_LOCAL exactly and IFA_ADDRESS with the prefix length,
                // so 172.17.0.1/24 does not delete 172.17.0.1/16.
                msg.attributes.push(AddressAttribute::Local(ip));
                msg.attributes.push(AddressAttribute::Address(ip));
                handle.address().del(msg).execute().await.map_err(nl_error)
            },
        )
    }

    fn set_mtu(&mut self, link: &str, mtu: u32) -> Result<(), OpsError> {
        tracing::debug!(link, mtu, "set mtu");
        // Links are addressed by IFLA_IFNAME (index 0): one round trip, and a missing link is
        // the kernel's own ENODEV.
        let mut msg = link_by_name(link);
        msg.attributes.push(LinkAttribute::Mtu(mtu));
        let req = self.handle.link().change(msg);
        self.run(|| format!("set mtu {mtu} on {link}"), async move {
            req.execute().await.map_err(nl_error)
        })
    }

    fn set_up(&mut self, link: &str) -> Result<(), OpsError> {
        tracing::debug!(link, "set up");
        // RTM_NEWLINK without NLM_F_CREATE, flags = change = IFF_UP: what Docker's
        // `NetworkLinkUp` sends.
        let mut msg = link_by_name(link);
        msg.header.flags = LinkFlags::Up;
        msg.header.change_mask = LinkFlags::Up;
        let req = self.handle.link().change(msg);
        self.run(|| format!("set up {link}"), async move {
            req.execute().await.map_err(nl_error)
        })
    }

    fn set_down(&mut self, link: &str) -> Result<(), OpsError> {
        tracing::debug!(link, "set down");
        // IFF_UP in the change mask, clear in the flags.
        let mut msg = link_by_name(link);
        msg.header.flags = LinkFlags::empty();
        msg.header.change_mask = LinkFlags::Up;
        let req = self.handle.link().change(msg);
        self.run(|| format!("set down {link}"), async move {
            req.execute().await.map_err(nl_error)
        })
    }

    fn delete_link(&mut self, link: &str) -> Result<(), OpsError> {
        tracing::debug!(link, "delete link");
        let req = self.handle.link().del_with_message(link_by_name(link));
        self.run(|| format!("delete link {link}"), async move {
            req.execute().await.map_err(nl_error)
        })
    }
}

/// The `RTM_NEWLINK` (a change, no `NLM_F_CREATE`) that retires `link`: off its master
/// (`IFLA_MASTER` 0), down (`IFF_UP` in the change mask, clear in the flags), in `group`.
pub fn retire_message(link: &str, group: u32) -> LinkMessage {
    let mut msg = link_by_name(link);
    msg.header.flags = LinkFlags::empty();
    msg.header.change_mask = LinkFlags::Up;
    msg.attributes.push(LinkAttribute::Controller(0));
    msg.attributes.push(LinkAttribute::Group(group));
    msg
}

/// The `RTM_NEWLINK` (a change, no `NLM_F_CREATE`) that turns IPv6 address
/// autoconfiguration off on `link`: `IFLA_AF_SPEC { AF_INET6 { IFLA_INET6_ADDR_GEN_MODE =
/// IN6_ADDR_GEN_MODE_NONE } }`, as `ip link set LINK addrgenmode none` sends it (no
/// `NLA_F_NESTED` on either nest, as iproute2; the kernel parses them either way).
pub fn no_ipv6_autoconf_message(link: &str) -> LinkMessage {
    let mut msg = link_by_name(link);
    msg.attributes
        .push(LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet6(
            vec![AfSpecInet6::AddrGenMode(In6AddrGenMode::None)],
        )]));
    msg
}

/// The `RTM_DELLINK` body that deletes every link of `group`: index 0, no name, `IFLA_GROUP`
/// (what `ip link del group N` sends; the kernel takes the group path only without both).
pub fn group_message(group: u32) -> LinkMessage {
    let mut msg = LinkMessage::default();
    msg.attributes.push(LinkAttribute::Group(group));
    msg
}

/// The `RTM_NEWLINK` that creates `spec`'s veth pair: the host end named `spec.host` here,
/// the peer named `spec.peer` with its MAC in the namespace `peer_netns_fd` refers to; both
/// ends with `spec.mtu`, both down (no IFF_UP in the header flags).
pub fn veth_message(spec: &VethSpec, peer_netns_fd: i32) -> LinkMessage {
    let mut peer = link_by_name(&spec.peer);
    peer.attributes.extend([
        LinkAttribute::Address(spec.peer_mac.octets().to_vec()),
        LinkAttribute::Mtu(spec.mtu),
        LinkAttribute::NetNsFd(peer_netns_fd),
    ]);
    let mut msg = link_by_name(&spec.host);
    msg.attributes.extend([
        LinkAttribute::Mtu(spec.mtu),
        LinkAttribute::LinkInfo(vec![
            NlLinkInfo::Kind(InfoKind::Veth),
            NlLinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))),
        ]),
    ]);
    msg
}

/// The `RTM_NEWROUTE` body for `route` in the main table, as `ip route add` builds it
/// (protocol `boot`, type unicast; scope `link` for a route without a gateway, which is what
/// `ip route add 10.0.0.0/24 dev X` gets, `universe` otherwise).
pub fn route_message(route: &RouteV4) -> RouteMessage {
    let mut msg = RouteMessage::default();
    msg.header.address_family = AddressFamily::Inet;
    msg.header.table = RouteHeader::RT_TABLE_MAIN;
    msg.header.protocol = RouteProtocol::Boot;
    msg.header.kind = RouteType::Unicast;
    msg.header.scope = if route.gateway.is_some() {
        RouteScope::Universe
    } else {
        RouteScope::Link
    };
    if let Some(dst) = route.dst {
        // The network address, as `ip` sends it: the kernel rejects host bits (EINVAL).
        msg.header.destination_prefix_length = dst.prefix_len();
        msg.attributes
            .push(RouteAttribute::Destination(RouteAddress::Inet(
                dst.network(),
            )));
    }
    if let Some(gw) = route.gateway {
        msg.attributes
            .push(RouteAttribute::Gateway(RouteAddress::Inet(gw)));
    }
    if let Some(oif) = route.oif {
        msg.attributes.push(RouteAttribute::Oif(oif));
    }
    msg
}

/// How a route reads in an operation's name, e.g. `default via 172.17.42.1`.
fn describe_route(route: &RouteV4) -> String {
    let mut s = route
        .dst
        .map_or_else(|| "default".to_owned(), |d| d.trunc().to_string());
    if let Some(gw) = route.gateway {
        s.push_str(&format!(" via {gw}"));
    }
    if let Some(oif) = route.oif {
        s.push_str(&format!(" oif {oif}"));
    }
    s
}

impl AttachOps for NetlinkLinks {
    fn create_veth(&mut self, spec: &VethSpec) -> Result<(), OpsError> {
        tracing::debug!(host = %spec.host, peer = %spec.peer, netns = %spec.peer_netns.display(),
            mac = %spec.peer_mac, mtu = spec.mtu, "create veth");
        // The op names the namespace: an EEXIST may be about the peer's name in there.
        let op = || {
            format!(
                "create veth {} with peer {} in {}",
                spec.host,
                spec.peer,
                spec.peer_netns.display()
            )
        };
        check_name(op, &spec.host)?;
        check_name(op, &spec.peer)?;
        // O_RDONLY|O_CLOEXEC (std opens with O_CLOEXEC), held until the kernel has answered:
        // the kernel resolves IFLA_NET_NS_FD while it handles the request.
        let ns = File::open(&spec.peer_netns).map_err(|e| OpsError::from_io(op(), e))?;
        // One RTM_NEWLINK (NLM_F_CREATE|NLM_F_EXCL) makes both ends, the peer directly in the
        // container's namespace with its name, MAC and MTU. Docker 1.x (and libnetwork today)
        // create the pair in the host namespace and then move the container end
        // (IFLA_NET_NS_FD on an existing link, then a rename). A move is a second round of
        // device notifiers and RCU grace periods in the kernel (issue 5 puts it at ~20-40 ms)
        // and leaves a window in which the container end is visible in the host namespace.
        let req = self.handle.link().add(veth_message(spec, ns.as_raw_fd()));
        let res = self.run(op, async move { req.execute().await.map_err(nl_error) });
        drop(ns);
        res
    }

    fn set_master(&mut self, link: &str, master: &str) -> Result<(), OpsError> {
        tracing::debug!(link, master, "set master");
        let handle = &self.handle;
        self.run(|| format!("attach {link} to {master}"), async move {
            let index = Self::index_of(handle, master).await?;
            // IFLA_MASTER on RTM_NEWLINK, as `ip link set LINK master BRIDGE` (and
            // libnetwork's LinkSetMaster) sends; Docker 1.x used the SIOCBRADDIF ioctl.
            let mut msg = link_by_name(link);
            msg.attributes.push(LinkAttribute::Controller(index));
            handle.link().change(msg).execute().await.map_err(nl_error)
        })
    }

    fn set_hairpin(&mut self, link: &str, on: bool) -> Result<(), OpsError> {
        tracing::debug!(link, on, "set hairpin");
        let state = if on { "on" } else { "off" };
        // IFLA_LINKINFO { IFLA_INFO_SLAVE_KIND "bridge", IFLA_INFO_SLAVE_DATA {
        // IFLA_BRPORT_MODE } } on RTM_NEWLINK: `ip link set LINK type bridge_slave hairpin on`.
        // The kernel applies it through the master's slave_changelink, so a link that is not
        // a bridge port fails (EOPNOTSUPP) instead of being silently ignored. Docker 1.x wrote
        // /sys/class/net/LINK/brport/hairpin_mode, which reads the namespace sysfs was mounted
        // in, not the caller's. libnetwork sends IFLA_PROTINFO on an AF_BRIDGE RTM_SETLINK
        // instead; netlink-packet-route 0.34 has a typed IFLA_BRPORT_MODE only under
        // IFLA_INFO_SLAVE_DATA, and the kernel sets the same port flag either way.
        let mut msg = link_by_name(link);
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            NlLinkInfo::PortKind(InfoPortKind::Bridge),
            NlLinkInfo::PortData(InfoPortData::BridgePort(vec![InfoBridgePort::HairpinMode(
                on,
            )])),
        ]));
        let req = self.handle.link().change(msg);
        self.run(
            || format!("set hairpin mode {state} on {link}"),
            async move { req.execute().await.map_err(nl_error) },
        )
    }

    fn set_ipv6_autoconf_off(&mut self, link: &str) -> Result<(), OpsError> {
        tracing::debug!(link, "IPv6 autoconfiguration off");
        // A setlink of its own: the kernel refuses IFLA_AF_SPEC in the RTM_NEWLINK that
        // creates a veth (EAFNOSUPPORT, the device has no IPv6 state yet). See
        // `AttachOps::set_ipv6_autoconf_off` for why.
        let req = self.handle.link().change(no_ipv6_autoconf_message(link));
        self.run(
            || format!("turn IPv6 autoconfiguration off on {link}"),
            async move {
                match req.execute().await {
                    // No IPv6 on this link (ipv6.disable=1, or an MTU below 1280): nothing
                    // to turn off.
                    Err(rtnetlink::Error::NetlinkError(m))
                        if m.raw_code() == -libc::EAFNOSUPPORT =>
                    {
                        tracing::debug!(link, "no IPv6 on the link: nothing to turn off");
                        Ok(())
                    }
                    res => res.map_err(nl_error),
                }
            },
        )
    }

    fn disable_ipv6(&mut self, link: &str) -> Result<(), OpsError> {
        let key = backend_sysctl::disable_ipv6_key(link)?;
        let written = self.netns.write_key(&key, "1");
        backend_sysctl::finish_disable_ipv6(self, link, written)
    }

    fn add_route(&mut self, route: &RouteV4) -> Result<(), OpsError> {
        tracing::debug!(?route, "add route");
        // NLM_F_CREATE|NLM_F_EXCL: an identical route is EEXIST (AlreadyExists). A gateway
        // not reachable through a connected route is ENETUNREACH, "Network is unreachable".
        let req = self.handle.route().add(route_message(route));
        self.run(
            || format!("add route {}", describe_route(route)),
            async move { req.execute().await.map_err(nl_error) },
        )
    }

    fn retire_link(&mut self, link: &str, group: u32) -> Result<(), OpsError> {
        tracing::debug!(link, group, "retire link");
        // One RTM_NEWLINK without NLM_F_CREATE (`ip link set LINK nomaster down group N`):
        // the kernel's do_setlink applies all three. See `AttachOps::retire_link` for why the
        // link is not deleted here.
        let req = self.handle.link().change(retire_message(link, group));
        self.run(
            || format!("retire {link} (nomaster, down, group {group})"),
            async move { req.execute().await.map_err(nl_error) },
        )
    }

    fn delete_group(&mut self, group: u32) -> Result<(), OpsError> {
        tracing::debug!(group, "delete link group");
        let req = self.handle.link().del_with_message(group_message(group));
        let res = self.run(
            || format!("delete the links of group {group}"),
            async move { req.execute().await.map_err(nl_error) },
        );
        match res {
            // rtnl_group_dellink: no link in the group is ENODEV. Nothing to reap.
            Err(e) if e.kind == OpsErrorKind::NotFound => Ok(()),
            other => other,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn route(table: u8, attrs: Vec<RouteAttribute>, dst_len: u8) -> RouteMessage {
        let mut msg = RouteMessage::default();
        msg.header.address_family = AddressFamily::Inet;
        msg.header.table = table;
        msg.header.destination_prefix_length = dst_len;
        msg.attributes = attrs;
        msg
    }

    fn inet(a: [u8; 4]) -> RouteAddress {
        RouteAddress::Inet(Ipv4Addr::from(a))
    }

    #[test]
    fn main_table_route_is_kept_with_dst_gateway_and_oif() {
        let msg = route(
            254,
            vec![
                RouteAttribute::Table(254),
                RouteAttribute::Destination(inet([10, 1, 0, 0])),
                RouteAttribute::Gateway(inet([10, 0, 0, 1])),
                RouteAttribute::Oif(7),
            ],
            16,
        );
        assert_eq!(
            route_from_message(&msg),
            Some(RouteV4 {
                dst: Some("10.1.0.0/16".parse().unwrap()),
                gateway: Some(Ipv4Addr::new(10, 0, 0, 1)),
                oif: Some(7),
            })
        );
    }

    #[test]
    fn default_route_has_no_dst() {
        let msg = route(254, vec![RouteAttribute::Gateway(inet([10, 0, 0, 1]))], 0);
        let r = route_from_message(&msg).unwrap();
        assert_eq!(r.dst, None);
        assert_eq!(r.gateway, Some(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(r.oif, None);
    }

    #[test]
    fn rta_table_wins_over_the_header_byte() {
        // Table 1000 reads RT_TABLE_COMPAT (252) in the header; table 254 in RTA_TABLE with a
        // header saying otherwise must still count as main.
        let big = route(252, vec![RouteAttribute::Table(1000)], 0);
        assert_eq!(route_from_message(&big), None);
        let main_by_attr = route(252, vec![RouteAttribute::Table(254)], 0);
        assert!(route_from_message(&main_by_attr).is_some());
        let header_only = route(254, vec![], 0);
        assert!(route_from_message(&header_only).is_some());
        let local = route(255, vec![], 0);
        assert_eq!(route_from_message(&local), None);
    }

    #[test]
    fn cloned_and_non_ipv4_routes_are_skipped() {
        let mut cloned = route(254, vec![RouteAttribute::Table(254)], 0);
        cloned.header.flags = RouteFlags::Cloned;
        assert_eq!(route_from_message(&cloned), None);
        let mut v6 = route(254, vec![RouteAttribute::Table(254)], 0);
        v6.header.address_family = AddressFamily::Inet6;
        assert_eq!(route_from_message(&v6), None);
    }

    #[test]
    fn non_default_route_without_destination_is_skipped() {
        let msg = route(254, vec![RouteAttribute::Oif(3)], 24);
        assert_eq!(route_from_message(&msg), None);
    }

    #[test]
    fn errno_kinds() {
        assert_eq!(errno_kind(libc::EEXIST), OpsErrorKind::AlreadyExists);
        assert_eq!(errno_kind(libc::ENODEV), OpsErrorKind::NotFound);
        assert_eq!(errno_kind(libc::ENOENT), OpsErrorKind::NotFound);
        assert_eq!(errno_kind(libc::EADDRNOTAVAIL), OpsErrorKind::NotFound);
        assert_eq!(errno_kind(libc::EPERM), OpsErrorKind::PermissionDenied);
        assert_eq!(errno_kind(libc::EACCES), OpsErrorKind::PermissionDenied);
        assert_eq!(errno_kind(libc::EINVAL), OpsErrorKind::Other);
    }

    #[test]
    fn kernel_error_text_is_the_os_error() {
        let err = nl_error(rtnetlink::Error::NetlinkError({
            let mut m = rtnetlink::packet_core::ErrorMessage::default();
            m.code = std::num::NonZeroI32::new(-libc::EEXIST);
            m
        }));
        assert_eq!(err.kind, OpsErrorKind::AlreadyExists);
        assert_eq!(err.source.to_string(), "File exists (os error 17)");
    }

    #[test]
    fn broadcast_is_the_last_address_except_for_31_and_32() {
        let b = |s: &str| broadcast_for(s.parse().unwrap());
        assert_eq!(b("172.17.0.1/16"), Some(Ipv4Addr::new(172, 17, 255, 255)));
        assert_eq!(b("10.0.0.5/30"), Some(Ipv4Addr::new(10, 0, 0, 7)));
        assert_eq!(b("10.0.0.0/31"), None);
        assert_eq!(b("10.0.0.1/32"), None);
    }

    fn veth_spec() -> VethSpec {
        VethSpec {
            host: "veth1234567".into(),
            peer: "eth0".into(),
            peer_netns: "/proc/1/ns/net".into(),
            peer_mac: MacAddr([2, 0x42, 0xac, 0x11, 0, 2]),
            mtu: 1450,
        }
    }

    #[test]
    fn veth_message_puts_name_mac_mtu_and_netns_on_the_peer() {
        let msg = veth_message(&veth_spec(), 42);
        assert!(msg.header.flags.is_empty(), "created down");
        assert_eq!(msg.header.index, 0);
        assert_eq!(
            msg.attributes[0],
            LinkAttribute::IfName("veth1234567".into())
        );
        assert_eq!(msg.attributes[1], LinkAttribute::Mtu(1450));
        let LinkAttribute::LinkInfo(infos) = &msg.attributes[2] else {
            panic!("no IFLA_LINKINFO: {msg:?}");
        };
        assert_eq!(infos[0], NlLinkInfo::Kind(InfoKind::Veth));
        let NlLinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))) = &infos[1] else {
            panic!("no veth peer: {infos:?}");
        };
        assert!(peer.header.flags.is_empty(), "peer created down");
        assert_eq!(
            peer.attributes,
            vec![
                LinkAttribute::IfName("eth0".into()),
                LinkAttribute::Address(vec![2, 0x42, 0xac, 0x11, 0, 2]),
                LinkAttribute::Mtu(1450),
                LinkAttribute::NetNsFd(42),
            ]
        );
        // The host end has no namespace attribute: it stays where the socket is.
        assert!(
            !msg.attributes
                .iter()
                .any(|a| matches!(a, LinkAttribute::NetNsFd(_) | LinkAttribute::Address(_)))
        );
        assert_eq!(msg.attributes.len(), 3);
    }

    #[test]
    fn retire_and_group_messages() {
        let msg = retire_message("veth1234567", netcore::ops::REAP_GROUP);
        assert_eq!(msg.header.index, 0, "addressed by name");
        assert!(msg.header.flags.is_empty(), "down");
        assert_eq!(msg.header.change_mask, LinkFlags::Up, "only IFF_UP changes");
        assert_eq!(
            msg.attributes,
            vec![
                LinkAttribute::IfName("veth1234567".into()),
                LinkAttribute::Controller(0),
                LinkAttribute::Group(0x7265_6170),
            ]
        );
        let msg = group_message(77);
        assert_eq!(msg.header.index, 0, "index 0: the kernel's group path");
        assert_eq!(msg.attributes, vec![LinkAttribute::Group(77)]);
    }

    #[test]
    fn no_ipv6_autoconf_message_bytes() {
        use rtnetlink::packet_core::Emitable;
        let msg = no_ipv6_autoconf_message("veth0");
        assert_eq!(msg.header.index, 0, "addressed by name");
        assert!(msg.header.flags.is_empty(), "stays down");
        assert!(msg.header.change_mask.is_empty(), "no flag changes");
        let mut buf = vec![0u8; msg.buffer_len()];
        msg.emit(&mut buf);
        #[rustfmt::skip]
        let attrs: [u8; 28] = [
            // IFLA_IFNAME (3), len 4+6: "veth0\0" + 2 bytes of padding
            10, 0, 3, 0,   b'v', b'e', b't', b'h',   b'0', 0, 0, 0,
            // IFLA_AF_SPEC (26), len 16 = 4 + 12, no NLA_F_NESTED
            16, 0, 26, 0,
              // AF_INET6 (10), len 12 = 4 + 8
              12, 0, 10, 0,
                // IFLA_INET6_ADDR_GEN_MODE (8), len 5: IN6_ADDR_GEN_MODE_NONE (1) + padding
                5, 0, 8, 0,   1, 0, 0, 0,
        ];
        // After the 16-byte ifinfomsg: the same bytes backend-ioctl's nl.rs sends.
        assert_eq!(buf.len(), 16 + attrs.len());
        assert_eq!(buf[16..], attrs);
    }

    #[test]
    fn default_route_message_has_no_destination() {
        let msg = route_message(&RouteV4 {
            dst: None,
            gateway: Some(Ipv4Addr::new(172, 17, 42, 1)),
            oif: None,
        });
        assert_eq!(msg.header.address_family, AddressFamily::Inet);
        assert_eq!(msg.header.destination_prefix_length, 0);
        assert_eq!(msg.header.table, RouteHeader::RT_TABLE_MAIN);
        assert_eq!(msg.header.protocol, RouteProtocol::Boot);
        assert_eq!(msg.header.kind, RouteType::Unicast);
        assert_eq!(msg.header.scope, RouteScope::Universe);
        assert_eq!(
            msg.attributes,
            vec![RouteAttribute::Gateway(inet([172, 17, 42, 1]))]
        );
        // And it reads back as the same route.
        assert_eq!(
            route_from_message(&msg),
            Some(RouteV4 {
                dst: None,
                gateway: Some(Ipv4Addr::new(172, 17, 42, 1)),
                oif: None
            })
        );
    }

    #[test]
    fn device_route_message_is_link_scoped_with_the_network_address() {
        let msg = route_message(&RouteV4 {
            dst: Some("10.50.0.9/24".parse().unwrap()),
            gateway: None,
            oif: Some(3),
        });
        assert_eq!(msg.header.destination_prefix_length, 24);
        assert_eq!(msg.header.scope, RouteScope::Link);
        assert_eq!(
            msg.attributes,
            vec![
                RouteAttribute::Destination(inet([10, 50, 0, 0])),
                RouteAttribute::Oif(3)
            ]
        );
        assert_eq!(
            describe_route(&RouteV4 {
                dst: Some("10.50.0.9/24".parse().unwrap()),
                gateway: Some(Ipv4Addr::new(10, 0, 0, 1)),
                oif: Some(3),
            }),
            "10.50.0.0/24 via 10.0.0.1 oif 3"
        );
    }

    #[test]
    fn link_message_maps_name_kind_mac_mtu_and_up() {
        let mut msg = LinkMessage::default();
        msg.header.index = 4;
        msg.header.flags = LinkFlags::Up | LinkFlags::Broadcast;
        msg.attributes = vec![
            LinkAttribute::IfName("br0".into()),
            LinkAttribute::Mtu(1400),
            LinkAttribute::Address(vec![2, 0x42, 0xac, 0x11, 0, 1]),
            LinkAttribute::LinkInfo(vec![NlLinkInfo::Kind(InfoKind::Bridge)]),
        ];
        let link = link_from_message(&msg).unwrap();
        assert_eq!(link.name, "br0");
        assert_eq!(link.index, 4);
        assert_eq!(link.kind.as_deref(), Some("bridge"));
        assert_eq!(link.mac, Some(MacAddr([2, 0x42, 0xac, 0x11, 0, 1])));
        assert_eq!(link.mtu, 1400);
        assert!(link.up);

        let mut tun = LinkMessage::default();
        tun.attributes = vec![
            LinkAttribute::IfName("tun0".into()),
            LinkAttribute::Address(vec![10, 0, 0, 1]),
        ];
        let tun = link_from_message(&tun).unwrap();
        assert_eq!(tun.mac, None);
        assert!(!tun.up);
        assert_eq!(tun.kind, None);
    }

    #[test]
    fn address_message_uses_ifa_local_unmasked() {
        let mut msg = AddressMessage::default();
        msg.header.family = AddressFamily::Inet;
        msg.header.prefix_len = 16;
        msg.header.index = 3;
        msg.attributes = vec![
            AddressAttribute::Address(IpAddr::V4(Ipv4Addr::new(172, 17, 0, 9))),
            AddressAttribute::Local(IpAddr::V4(Ipv4Addr::new(172, 17, 0, 1))),
        ];
        assert_eq!(
            addr_from_message(&msg).unwrap(),
            Some((3, "172.17.0.1/16".parse().unwrap()))
        );
        msg.header.family = AddressFamily::Inet6;
        assert_eq!(addr_from_message(&msg).unwrap(), None);
    }
}
