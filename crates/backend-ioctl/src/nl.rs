//! A minimal rtnetlink client for the things no ioctl can do: create a veth pair, set a
//! bridge's multicast snooping, set a bridge port flag, turn IPv6 autoconfiguration off on a
//! link, retire a link into a device group and delete a whole group.
//!
//! Docker 1.x did the same: libcontainer carried a small hand-written `netlink` package for
//! `NetworkCreateVethPair` and `NetworkLinkDel` and used ioctls for the rest. This module
//! builds exactly eight requests (`RTM_NEWLINK` for a veth, `RTM_NEWLINK` that sets a
//! bridge's `IFLA_BR_MCAST_SNOOPING`, `RTM_DELLINK` of one link, `RTM_SETLINK` for
//! `IFLA_BRPORT_MODE`, `RTM_GETLINK` for one link's master, `RTM_NEWLINK` that sets
//! `IFLA_INET6_ADDR_GEN_MODE`, `RTM_NEWLINK` that retires a link, `RTM_DELLINK` of a device
//! group), sends each on a `NETLINK_ROUTE` socket and reads the one answer.
//! No dump, no multicast groups, no async runtime.
//!
//! Layout rules (`<linux/netlink.h>`): every integer is in host byte order; a message is a
//! 16-byte `nlmsghdr` followed by its payload; an attribute is a 4-byte header
//! (`nla_len`, `nla_type`) and its payload, where `nla_len` counts the header and the
//! *unpadded* payload, and the next attribute starts at the next multiple of 4.

use std::ffi::c_int;
use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

// The numbers below are the kernel's UAPI, copied from the headers named on each group
// (libc has most of them for Android only).

// <linux/netlink.h>
const NETLINK_ROUTE: c_int = 0;
const SOL_NETLINK: c_int = 270;
/// Errors echo only the request's header, not the whole request.
const NETLINK_CAP_ACK: c_int = 10;
/// Errors carry the kernel's message (`NLMSGERR_ATTR_MSG`).
const NETLINK_EXT_ACK: c_int = 11;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
/// On an `NLMSG_ERROR`: the request's payload was not echoed.
const NLM_F_CAPPED: u16 = 0x100;
/// On an `NLMSG_ERROR`: extended-ack attributes follow.
const NLM_F_ACK_TLVS: u16 = 0x200;
const NLMSG_ERROR: u16 = 0x2;
const NLA_F_NESTED: u16 = 0x8000;
const NLA_TYPE_MASK: u16 = !(0x8000 | 0x4000);
const NLMSGERR_ATTR_MSG: u16 = 1;
const NLMSG_HDRLEN: usize = 16;
const NLA_HDRLEN: usize = 4;

// <linux/rtnetlink.h>
const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_GETLINK: u16 = 18;
const RTM_SETLINK: u16 = 19;
/// `sizeof(struct ifinfomsg)`.
const IFINFOMSG_LEN: usize = 16;

// <linux/socket.h>
const AF_UNSPEC: u8 = 0;
const AF_BRIDGE: u8 = 7;
/// As the type of the per-family nest inside `IFLA_AF_SPEC`.
const AF_INET6: u16 = 10;

// <linux/if_link.h>
const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFLA_MASTER: u16 = 10;
const IFLA_PROTINFO: u16 = 12;
const IFLA_LINKINFO: u16 = 18;
const IFLA_AF_SPEC: u16 = 26;
const IFLA_GROUP: u16 = 27;
const IFLA_NET_NS_FD: u16 = 28;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
/// The port's hairpin flag (`/* mode (hairpin) */` in the header).
const IFLA_BRPORT_MODE: u16 = 4;
/// Inside `IFLA_AF_SPEC { AF_INET6 { ... } }`: how the link makes its IPv6 addresses (a u8).
const IFLA_INET6_ADDR_GEN_MODE: u16 = 8;
/// No address at all: no link-local, so no DAD, router solicitation or MLD for one.
const IN6_ADDR_GEN_MODE_NONE: u8 = 1;
/// Inside `IFLA_INFO_DATA` of a bridge: IGMP/MLD snooping on or off (a u8).
const IFLA_BR_MCAST_SNOOPING: u16 = 23;

// <linux/veth.h>
const VETH_INFO_PEER: u16 = 1;

/// What the kernel (or the socket) answered.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// The kernel refused the request: `errno` and, from kernels with extended acks
    /// (4.12+), its explanation.
    #[error("{}{}", io::Error::from_raw_os_error(*errno), message.as_ref().map(|m| format!(" (kernel: {m})")).unwrap_or_default())]
    Kernel { errno: i32, message: Option<String> },
    /// The socket itself failed.
    #[error("rtnetlink socket: {0}")]
    Io(#[from] io::Error),
    /// The answer does not parse; a bug here or in the kernel.
    #[error("malformed rtnetlink answer: {0}")]
    Malformed(&'static str),
}

impl NetlinkError {
    /// The errno behind the error, for mapping to an `OpsErrorKind`.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            Self::Kernel { errno, .. } => Some(*errno),
            Self::Io(e) => e.raw_os_error(),
            Self::Malformed(_) => None,
        }
    }
}

/// A netlink message under construction.
struct Msg {
    buf: Vec<u8>,
    /// Set when a length did not fit its `u16`/`u32` field; `finish` then fails instead of
    /// sending a corrupt message.
    overflow: bool,
}

impl Msg {
    fn new(ty: u16, flags: u16, seq: u32) -> Self {
        let mut buf = Vec::with_capacity(128);
        buf.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_len, set by finish
        buf.extend_from_slice(&ty.to_ne_bytes());
        buf.extend_from_slice(&flags.to_ne_bytes());
        buf.extend_from_slice(&seq.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_pid: 0, the kernel fills it in
        Self {
            buf,
            overflow: false,
        }
    }

    /// `struct ifinfomsg`: family, pad, type, index, flags, change.
    fn ifinfomsg(&mut self, family: u8, index: i32) {
        put_ifinfomsg(&mut self.buf, family, index);
    }

    fn attr(&mut self, ty: u16, payload: &[u8]) {
        let Ok(len) = u16::try_from(NLA_HDRLEN + payload.len()) else {
            self.overflow = true;
            return;
        };
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(payload);
        self.pad();
    }

    /// A string attribute with its NUL, as iproute2 sends `IFLA_IFNAME`.
    fn attr_cstr(&mut self, ty: u16, s: &str) {
        let mut v = Vec::with_capacity(s.len() + 1);
        v.extend_from_slice(s.as_bytes());
        v.push(0);
        self.attr(ty, &v);
    }

    fn attr_u32(&mut self, ty: u16, v: u32) {
        self.attr(ty, &v.to_ne_bytes());
    }

    /// Opens a nested attribute; returns where its header is, for `nest_end`.
    fn nest_start(&mut self, ty: u16) -> usize {
        let at = self.buf.len();
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        at
    }

    /// Closes a nest: its length covers everything since its header, inner padding included.
    fn nest_end(&mut self, at: usize) {
        match u16::try_from(self.buf.len() - at) {
            Ok(len) => self.buf[at..at + 2].copy_from_slice(&len.to_ne_bytes()),
            Err(_) => self.overflow = true,
        }
    }

    fn pad(&mut self) {
        self.buf.resize(align(self.buf.len()), 0);
    }

    fn finish(mut self) -> io::Result<Vec<u8>> {
        let len = u32::try_from(self.buf.len()).map_err(|_| self.too_long())?;
        if self.overflow {
            return Err(self.too_long());
        }
        self.buf[..4].copy_from_slice(&len.to_ne_bytes());
        Ok(self.buf)
    }

    fn too_long(&self) -> io::Error {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "netlink attribute longer than its length field",
        )
    }
}

fn put_ifinfomsg(buf: &mut Vec<u8>, family: u8, index: i32) {
    put_ifinfomsg_flags(buf, family, index, 0, 0);
}

/// `struct ifinfomsg` with `ifi_flags` and `ifi_change` (which flags to change).
fn put_ifinfomsg_flags(buf: &mut Vec<u8>, family: u8, index: i32, flags: u32, change: u32) {
    buf.push(family);
    buf.push(0); // __ifi_pad
    buf.extend_from_slice(&0u16.to_ne_bytes()); // ifi_type
    buf.extend_from_slice(&index.to_ne_bytes());
    buf.extend_from_slice(&flags.to_ne_bytes()); // ifi_flags
    buf.extend_from_slice(&change.to_ne_bytes()); // ifi_change
}

/// `IFF_UP` in `ifi_flags`/`ifi_change` (<linux/if.h>).
const IFF_UP: u32 = 0x1;

/// `NLMSG_ALIGN` / `NLA_ALIGN`: the next multiple of 4.
const fn align(len: usize) -> usize {
    (len + 3) & !3
}

/// The veth pair to create.
#[derive(Debug, Clone, Copy)]
pub(crate) struct VethRequest<'a> {
    pub(crate) host: &'a str,
    pub(crate) peer: &'a str,
    pub(crate) peer_mac: [u8; 6],
    pub(crate) mtu: u32,
    /// An open descriptor of the peer's network namespace.
    pub(crate) peer_netns: RawFd,
}

/// `ip link add HOST mtu M type veth peer name PEER address MAC mtu M netns FD`, in one
/// message: the peer is born inside its namespace (`IFLA_NET_NS_FD` in the peer's own
/// attributes), never created here and moved, which would cost the kernel a second
/// unregister/register of the device (~20-40 ms).
pub(crate) fn new_veth(seq: u32, req: &VethRequest<'_>) -> io::Result<Vec<u8>> {
    let mut m = Msg::new(
        RTM_NEWLINK,
        NLM_F_REQUEST | NLM_F_CREATE | NLM_F_EXCL | NLM_F_ACK,
        seq,
    );
    m.ifinfomsg(AF_UNSPEC, 0);
    m.attr_cstr(IFLA_IFNAME, req.host);
    m.attr_u32(IFLA_MTU, req.mtu);
    // The link-info nests carry no NLA_F_NESTED, as iproute2 and Docker's netlink package
    // send them; the kernel parses them either way.
    let info = m.nest_start(IFLA_LINKINFO);
    m.attr(IFLA_INFO_KIND, b"veth");
    let data = m.nest_start(IFLA_INFO_DATA);
    let peer = m.nest_start(VETH_INFO_PEER);
    // The peer's attributes are those of a whole RTM_NEWLINK, behind their own ifinfomsg.
    put_ifinfomsg(&mut m.buf, AF_UNSPEC, 0);
    m.attr_cstr(IFLA_IFNAME, req.peer);
    m.attr(IFLA_ADDRESS, &req.peer_mac);
    m.attr_u32(IFLA_MTU, req.mtu);
    // A descriptor is an `int`; a negative one would be a bug upstream, and the kernel
    // rejects it (EBADF) rather than misreading it.
    m.attr(IFLA_NET_NS_FD, &req.peer_netns.to_ne_bytes());
    m.nest_end(peer);
    m.nest_end(data);
    m.nest_end(info);
    m.finish()
}

/// `ip link set dev NAME type bridge mcast_snooping 0|1`: `RTM_NEWLINK` without
/// `NLM_F_CREATE` on the bridge named `name` (index 0), with `IFLA_LINKINFO {
/// IFLA_INFO_KIND "bridge", IFLA_INFO_DATA { IFLA_BR_MCAST_SNOOPING u8 } }`, which the
/// kernel hands to the bridge's `changelink`. `SIOCBRADDBR` cannot carry the setting, so
/// this follows it, before the bridge has any port. The kind is sent without its NUL and
/// the nests without `NLA_F_NESTED`, as iproute2 sends them. A missing link is ENODEV; a
/// link that is not a bridge, EOPNOTSUPP.
pub(crate) fn set_mcast_snooping(seq: u32, name: &str, on: bool) -> io::Result<Vec<u8>> {
    let mut m = Msg::new(RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK, seq);
    m.ifinfomsg(AF_UNSPEC, 0);
    m.attr_cstr(IFLA_IFNAME, name);
    let info = m.nest_start(IFLA_LINKINFO);
    m.attr(IFLA_INFO_KIND, b"bridge");
    let data = m.nest_start(IFLA_INFO_DATA);
    m.attr(IFLA_BR_MCAST_SNOOPING, &[u8::from(on)]);
    m.nest_end(data);
    m.nest_end(info);
    m.finish()
}

/// `bridge link set dev INDEX hairpin on|off`: `RTM_SETLINK` to the `AF_BRIDGE` family with
/// `IFLA_PROTINFO { IFLA_BRPORT_MODE }`. `IFLA_PROTINFO` must carry `NLA_F_NESTED`: without
/// it the bridge reads the attribute as the old one-byte port *state* (br_setlink's
/// "binary compatibility with old RSTP") and would set the STP state instead.
pub(crate) fn set_hairpin(seq: u32, index: i32, on: bool) -> io::Result<Vec<u8>> {
    let mut m = Msg::new(RTM_SETLINK, NLM_F_REQUEST | NLM_F_ACK, seq);
    m.ifinfomsg(AF_BRIDGE, index);
    let prot = m.nest_start(IFLA_PROTINFO | NLA_F_NESTED);
    m.attr(IFLA_BRPORT_MODE, &[u8::from(on)]);
    m.nest_end(prot);
    m.finish()
}

/// `ip link set dev INDEX addrgenmode none`: `RTM_NEWLINK` without `NLM_F_CREATE` on the
/// link's index, with `IFLA_AF_SPEC { AF_INET6 { IFLA_INET6_ADDR_GEN_MODE =
/// IN6_ADDR_GEN_MODE_NONE } }`. The nests carry no `NLA_F_NESTED`, as iproute2 sends them.
/// The kernel refuses it inside the request that creates a veth (`EAFNOSUPPORT`), hence a
/// request of its own; a link without IPv6 state (`ipv6.disable=1`, an MTU below 1280)
/// answers `EAFNOSUPPORT` too.
pub(crate) fn no_ipv6_autoconf(seq: u32, index: i32) -> io::Result<Vec<u8>> {
    let mut m = Msg::new(RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK, seq);
    m.ifinfomsg(AF_UNSPEC, index);
    let spec = m.nest_start(IFLA_AF_SPEC);
    let inet6 = m.nest_start(AF_INET6);
    m.attr(IFLA_INET6_ADDR_GEN_MODE, &[IN6_ADDR_GEN_MODE_NONE]);
    m.nest_end(inet6);
    m.nest_end(spec);
    m.finish()
}

/// `ip link del dev INDEX`: `RTM_DELLINK` (Docker 1.x `NetworkLinkDel`). Deleting one end
/// of a veth pair deletes the other, wherever it is.
pub(crate) fn del_link(seq: u32, index: i32) -> io::Result<Vec<u8>> {
    let mut m = Msg::new(RTM_DELLINK, NLM_F_REQUEST | NLM_F_ACK, seq);
    m.ifinfomsg(AF_UNSPEC, index);
    m.finish()
}

/// `ip link set dev NAME nomaster down group GROUP`: one `RTM_NEWLINK` without
/// `NLM_F_CREATE` on the link named `name` (index 0), which the kernel's `do_setlink` applies
/// as a whole: `IFLA_MASTER` 0 takes it off its bridge, `IFF_UP` in `ifi_change` but not in
/// `ifi_flags` brings it down, `IFLA_GROUP` moves it to the group. A missing link is ENODEV.
pub(crate) fn retire_link(seq: u32, name: &str, group: u32) -> io::Result<Vec<u8>> {
    let mut m = Msg::new(RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK, seq);
    put_ifinfomsg_flags(&mut m.buf, AF_UNSPEC, 0, 0, IFF_UP);
    m.attr_cstr(IFLA_IFNAME, name);
    m.attr_u32(IFLA_MASTER, 0);
    m.attr_u32(IFLA_GROUP, group);
    m.finish()
}

/// `ip link del group GROUP`: `RTM_DELLINK` with index 0, no name, and `IFLA_GROUP`; the
/// kernel deletes every link of the group with one `unregister_netdevice_many`. An empty
/// group is ENODEV.
pub(crate) fn del_group(seq: u32, group: u32) -> io::Result<Vec<u8>> {
    let mut m = Msg::new(RTM_DELLINK, NLM_F_REQUEST | NLM_F_ACK, seq);
    m.ifinfomsg(AF_UNSPEC, 0);
    m.attr_u32(IFLA_GROUP, group);
    m.finish()
}

/// `RTM_GETLINK` for one index; the answer is one `RTM_NEWLINK` (or an error).
pub(crate) fn get_link(seq: u32, index: i32) -> io::Result<Vec<u8>> {
    let mut m = Msg::new(RTM_GETLINK, NLM_F_REQUEST, seq);
    m.ifinfomsg(AF_UNSPEC, index);
    m.finish()
}

/// The `IFLA_MASTER` of an `RTM_NEWLINK` message (header included), if it has one.
pub(crate) fn link_master(msg: &[u8]) -> Result<Option<u32>, NetlinkError> {
    let attrs = msg
        .get(NLMSG_HDRLEN + IFINFOMSG_LEN..)
        .ok_or(NetlinkError::Malformed(
            "link message shorter than ifinfomsg",
        ))?;
    for (ty, payload) in Attrs(attrs) {
        if ty == IFLA_MASTER {
            let b: [u8; 4] = payload
                .get(..4)
                .and_then(|b| b.try_into().ok())
                .ok_or(NetlinkError::Malformed("IFLA_MASTER shorter than 4 bytes"))?;
            return Ok(Some(u32::from_ne_bytes(b)));
        }
    }
    Ok(None)
}

/// Iterates attributes as (type without flags, payload); stops at the first malformed one.
struct Attrs<'a>(&'a [u8]);

impl<'a> Iterator for Attrs<'a> {
    type Item = (u16, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let b = self.0;
        let len = usize::from(u16::from_ne_bytes([*b.first()?, *b.get(1)?]));
        let ty = u16::from_ne_bytes([*b.get(2)?, *b.get(3)?]) & NLA_TYPE_MASK;
        if len < NLA_HDRLEN || len > b.len() {
            self.0 = &[];
            return None;
        }
        let payload = &b[NLA_HDRLEN..len];
        self.0 = b.get(align(len)..).unwrap_or(&[]);
        Some((ty, payload))
    }
}

/// The kernel's answer to one request.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Reply {
    /// `NLMSG_ERROR` with error 0.
    Ack,
    /// Any other message, whole (header included).
    Message(Vec<u8>),
}

/// Finds the answer to request `seq` in one datagram. `Ok(None)`: nothing for `seq` in it.
pub(crate) fn find_reply(buf: &[u8], seq: u32) -> Result<Option<Reply>, NetlinkError> {
    let mut rest = buf;
    while !rest.is_empty() {
        let hdr = rest
            .get(..NLMSG_HDRLEN)
            .ok_or(NetlinkError::Malformed("truncated nlmsghdr"))?;
        let len = u32_at(hdr, 0) as usize;
        if len < NLMSG_HDRLEN || len > rest.len() {
            return Err(NetlinkError::Malformed("nlmsg_len out of bounds"));
        }
        let ty = u16::from_ne_bytes([hdr[4], hdr[5]]);
        let flags = u16::from_ne_bytes([hdr[6], hdr[7]]);
        let msg = &rest[..len];
        rest = rest.get(align(len)..).unwrap_or(&[]);
        if u32_at(hdr, 8) != seq {
            continue;
        }
        if ty != NLMSG_ERROR {
            return Ok(Some(Reply::Message(msg.to_vec())));
        }
        return parse_error(msg, flags).map(Some);
    }
    Ok(None)
}

/// `struct nlmsgerr { int error; struct nlmsghdr msg; }`, then (with `NLM_F_ACK_TLVS`) the
/// extended-ack attributes, after the echoed request payload unless `NLM_F_CAPPED`.
fn parse_error(msg: &[u8], flags: u16) -> Result<Reply, NetlinkError> {
    let body = &msg[NLMSG_HDRLEN..];
    if body.len() < 4 + NLMSG_HDRLEN {
        return Err(NetlinkError::Malformed("truncated nlmsgerr"));
    }
    let error = i32::from_ne_bytes([body[0], body[1], body[2], body[3]]);
    if error == 0 {
        return Ok(Reply::Ack);
    }
    let errno = error
        .checked_neg()
        .filter(|e| *e > 0)
        .ok_or(NetlinkError::Malformed("positive error in nlmsgerr"))?;
    let mut message = None;
    if flags & NLM_F_ACK_TLVS != 0 {
        let mut off = 4 + NLMSG_HDRLEN;
        if flags & NLM_F_CAPPED == 0 {
            // The whole request was echoed: skip its payload.
            let orig_len = u32_at(&body[4..], 0) as usize;
            off = 4 + align(orig_len.max(NLMSG_HDRLEN));
        }
        if let Some(tlvs) = body.get(off..) {
            message = Attrs(tlvs)
                .find(|(ty, _)| *ty == NLMSGERR_ATTR_MSG)
                .map(|(_, s)| {
                    let end = s.iter().position(|&b| b == 0).unwrap_or(s.len());
                    String::from_utf8_lossy(&s[..end]).into_owned()
                })
                .filter(|s| !s.is_empty());
        }
    }
    Err(NetlinkError::Kernel { errno, message })
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// `struct sockaddr_nl`.
#[repr(C)]
struct SockaddrNl {
    nl_family: u16,
    nl_pad: u16,
    nl_pid: u32,
    nl_groups: u32,
}

const _: () = assert!(size_of::<SockaddrNl>() == 12);

impl SockaddrNl {
    /// The kernel's address (port 0, no groups).
    fn kernel() -> Self {
        Self {
            // AF_NETLINK is 16; the fallback only keeps `unwrap_used` quiet.
            nl_family: u16::try_from(libc::AF_NETLINK).unwrap_or(16),
            nl_pad: 0,
            nl_pid: 0,
            nl_groups: 0,
        }
    }
}

/// A `NETLINK_ROUTE` socket. Like the ioctl socket, it acts in the network namespace it was
/// created in, whichever thread uses it.
#[derive(Debug)]
pub(crate) struct NlSocket {
    fd: OwnedFd,
    seq: u32,
}

/// Big enough for any answer to the requests above (an `RTM_NEWLINK` of one link is a few
/// KiB with all its statistics).
const RECV_BUF: usize = 32 * 1024;

impl NlSocket {
    pub(crate) fn open() -> io::Result<Self> {
        // SAFETY: socket() takes plain integers and returns a new descriptor or -1.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by socket(), is open, and nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // Both options are conveniences (shorter errors, the kernel's explanation); kernels
        // before 4.2 / 4.12 lack them and still answer correctly without.
        for opt in [NETLINK_CAP_ACK, NETLINK_EXT_ACK] {
            let one: c_int = 1;
            let p: *const c_int = &one;
            // SAFETY: the option value is a live `int` on this stack frame and its exact size
            // is passed; the kernel only reads it.
            let _ = unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    SOL_NETLINK,
                    opt,
                    p.cast(),
                    size_of::<c_int>() as libc::socklen_t,
                )
            };
        }
        let seq = std::process::id().wrapping_mul(0x9e37_79b9);
        Ok(Self { fd, seq })
    }

    /// Sends the request `build(seq)` makes and returns the kernel's answer to it.
    pub(crate) fn request(
        &mut self,
        build: impl FnOnce(u32) -> io::Result<Vec<u8>>,
    ) -> Result<Reply, NetlinkError> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let msg = build(seq)?;
        self.send(&msg)?;
        let mut buf = vec![0u8; RECV_BUF];
        loop {
            let n = self.recv(&mut buf)?;
            if let Some(reply) = find_reply(&buf[..n], seq)? {
                return Ok(reply);
            }
        }
    }

    fn send(&self, msg: &[u8]) -> io::Result<()> {
        let addr = SockaddrNl::kernel();
        let ap: *const SockaddrNl = &addr;
        loop {
            // SAFETY: `msg` is a live slice of `msg.len()` bytes and `addr` a live
            // `sockaddr_nl` of the size passed; the kernel only reads both.
            let rc = unsafe {
                libc::sendto(
                    self.fd.as_raw_fd(),
                    msg.as_ptr().cast(),
                    msg.len(),
                    0,
                    ap.cast(),
                    size_of::<SockaddrNl>() as libc::socklen_t,
                )
            };
            if rc < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if rc as usize != msg.len() {
                return Err(io::Error::other("short send on netlink socket"));
            }
            return Ok(());
        }
    }

    /// One datagram from the kernel; datagrams from anyone else are dropped (another
    /// privileged process could unicast to this port).
    fn recv(&self, buf: &mut [u8]) -> Result<usize, NetlinkError> {
        loop {
            let mut from = SockaddrNl {
                nl_family: 0,
                nl_pad: 0,
                nl_pid: u32::MAX,
                nl_groups: 0,
            };
            let mut from_len = size_of::<SockaddrNl>() as libc::socklen_t;
            let fp: *mut SockaddrNl = &mut from;
            // SAFETY: `buf` is writable for `buf.len()` bytes; `from` is a writable
            // `sockaddr_nl` whose size is in `from_len`; all live for the call.
            let rc = unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_TRUNC,
                    fp.cast(),
                    &mut from_len,
                )
            };
            if rc < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e.into());
            }
            // With MSG_TRUNC the return value is the datagram's real size.
            let n = rc as usize;
            if n > buf.len() {
                return Err(NetlinkError::Malformed(
                    "answer larger than the receive buffer",
                ));
            }
            if from.nl_pid != 0 {
                continue;
            }
            return Ok(n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hand-computed: the veth request for `veth0`/`eth0`, MAC 02:42:ac:11:00:02, MTU 1500
    /// (0x05dc), namespace fd 7, sequence 1. Little-endian hosts (x86_64, aarch64).
    #[cfg(target_endian = "little")]
    #[test]
    fn veth_request_bytes() {
        let got = new_veth(
            1,
            &VethRequest {
                host: "veth0",
                peer: "eth0",
                peer_mac: [0x02, 0x42, 0xac, 0x11, 0x00, 0x02],
                mtu: 1500,
                peer_netns: 7,
            },
        )
        .expect("builds");
        #[rustfmt::skip]
        let want: [u8; 128] = [
            // nlmsghdr: len 128, RTM_NEWLINK (16), REQUEST|ACK|EXCL|CREATE (0x605), seq 1, pid 0
            128, 0, 0, 0,   16, 0,   0x05, 0x06,   1, 0, 0, 0,   0, 0, 0, 0,
            // ifinfomsg: AF_UNSPEC, all zero
            0, 0, 0, 0,   0, 0, 0, 0,   0, 0, 0, 0,   0, 0, 0, 0,
            // IFLA_IFNAME (3), len 4+6: "veth0\0" + 2 bytes of padding
            10, 0, 3, 0,   b'v', b'e', b't', b'h',   b'0', 0, 0, 0,
            // IFLA_MTU (4), len 8: 1500
            8, 0, 4, 0,   0xdc, 0x05, 0, 0,
            // IFLA_LINKINFO (18), len 76 = 4 + 8 + 64
            76, 0, 18, 0,
              // IFLA_INFO_KIND (1), len 8: "veth", no NUL (as iproute2)
              8, 0, 1, 0,   b'v', b'e', b't', b'h',
              // IFLA_INFO_DATA (2), len 64 = 4 + 60
              64, 0, 2, 0,
                // VETH_INFO_PEER (1), len 60 = 4 + 16 + 12 + 12 + 8 + 8
                60, 0, 1, 0,
                  // the peer's ifinfomsg
                  0, 0, 0, 0,   0, 0, 0, 0,   0, 0, 0, 0,   0, 0, 0, 0,
                  // IFLA_IFNAME, len 4+5: "eth0\0" + 3 bytes of padding
                  9, 0, 3, 0,   b'e', b't', b'h', b'0',   0, 0, 0, 0,
                  // IFLA_ADDRESS (1), len 4+6: the MAC + 2 bytes of padding
                  10, 0, 1, 0,   0x02, 0x42, 0xac, 0x11,   0x00, 0x02, 0, 0,
                  // IFLA_MTU, len 8: 1500
                  8, 0, 4, 0,   0xdc, 0x05, 0, 0,
                  // IFLA_NET_NS_FD (28), len 8: fd 7
                  8, 0, 28, 0,   7, 0, 0, 0,
        ];
        assert_eq!(got, want);
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn hairpin_request_bytes() {
        #[rustfmt::skip]
        let on: [u8; 44] = [
            // nlmsghdr: len 44, RTM_SETLINK (19), REQUEST|ACK (5), seq 9, pid 0
            44, 0, 0, 0,   19, 0,   5, 0,   9, 0, 0, 0,   0, 0, 0, 0,
            // ifinfomsg: AF_BRIDGE (7), pad, type 0, index 5, flags 0, change 0
            7, 0, 0, 0,   5, 0, 0, 0,   0, 0, 0, 0,   0, 0, 0, 0,
            // IFLA_PROTINFO (12) | NLA_F_NESTED (0x8000), len 12 = 4 + 8
            12, 0, 0x0c, 0x80,
              // IFLA_BRPORT_MODE (4), len 5: 1 + 3 bytes of padding
              5, 0, 4, 0,   1, 0, 0, 0,
        ];
        assert_eq!(set_hairpin(9, 5, true).expect("builds"), on);
        let mut off = on;
        off[40] = 0; // the mode byte
        assert_eq!(set_hairpin(9, 5, false).expect("builds"), off);
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn mcast_snooping_request_bytes() {
        #[rustfmt::skip]
        let off: [u8; 72] = [
            // nlmsghdr: len 72, RTM_NEWLINK (16), REQUEST|ACK (5, no CREATE), seq 2, pid 0
            72, 0, 0, 0,   16, 0,   5, 0,   2, 0, 0, 0,   0, 0, 0, 0,
            // ifinfomsg: AF_UNSPEC, index 0 (by name), flags 0, change 0
            0, 0, 0, 0,   0, 0, 0, 0,   0, 0, 0, 0,   0, 0, 0, 0,
            // IFLA_IFNAME (3), len 4+6: "iobr0\0" + 2 bytes of padding
            10, 0, 3, 0,   b'i', b'o', b'b', b'r',   b'0', 0, 0, 0,
            // IFLA_LINKINFO (18), len 28 = 4 + 12 + 12
            28, 0, 18, 0,
              // IFLA_INFO_KIND (1), len 4+6: "bridge", no NUL, + 2 bytes of padding
              10, 0, 1, 0,   b'b', b'r', b'i', b'd',   b'g', b'e', 0, 0,
              // IFLA_INFO_DATA (2), len 12 = 4 + 8
              12, 0, 2, 0,
                // IFLA_BR_MCAST_SNOOPING (23), len 5: 0 + 3 bytes of padding
                5, 0, 23, 0,   0, 0, 0, 0,
        ];
        assert_eq!(set_mcast_snooping(2, "iobr0", false).expect("builds"), off);
        let mut on = off;
        on[68] = 1; // the snooping byte
        assert_eq!(set_mcast_snooping(2, "iobr0", true).expect("builds"), on);
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn get_link_request_bytes() {
        #[rustfmt::skip]
        let want: [u8; 32] = [
            // nlmsghdr: len 32, RTM_GETLINK (18), REQUEST, seq 3
            32, 0, 0, 0,   18, 0,   1, 0,   3, 0, 0, 0,   0, 0, 0, 0,
            // ifinfomsg with index 0x0102
            0, 0, 0, 0,   2, 1, 0, 0,   0, 0, 0, 0,   0, 0, 0, 0,
        ];
        assert_eq!(get_link(3, 0x0102).expect("builds"), want);
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn del_link_request_bytes() {
        #[rustfmt::skip]
        let want: [u8; 32] = [
            // nlmsghdr: len 32, RTM_DELLINK (17), REQUEST|ACK (5), seq 4
            32, 0, 0, 0,   17, 0,   5, 0,   4, 0, 0, 0,   0, 0, 0, 0,
            // ifinfomsg with index 9
            0, 0, 0, 0,   9, 0, 0, 0,   0, 0, 0, 0,   0, 0, 0, 0,
        ];
        assert_eq!(del_link(4, 9).expect("builds"), want);
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn retire_link_request_bytes() {
        #[rustfmt::skip]
        let want: [u8; 60] = [
            // nlmsghdr: len 60, RTM_NEWLINK (16), REQUEST|ACK (5, no CREATE), seq 6
            60, 0, 0, 0,   16, 0,   5, 0,   6, 0, 0, 0,   0, 0, 0, 0,
            // ifinfomsg: AF_UNSPEC, index 0 (by name), flags 0, change IFF_UP
            0, 0, 0, 0,   0, 0, 0, 0,   0, 0, 0, 0,   1, 0, 0, 0,
            // IFLA_IFNAME (3), len 4+6: "veth0\0" + 2 bytes of padding
            10, 0, 3, 0,   b'v', b'e', b't', b'h',   b'0', 0, 0, 0,
            // IFLA_MASTER (10), len 8: 0 (no master)
            8, 0, 10, 0,   0, 0, 0, 0,
            // IFLA_GROUP (27), len 8: 0x72656170
            8, 0, 27, 0,   0x70, 0x61, 0x65, 0x72,
        ];
        assert_eq!(retire_link(6, "veth0", 0x7265_6170).expect("builds"), want);
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn no_ipv6_autoconf_request_bytes() {
        #[rustfmt::skip]
        let want: [u8; 48] = [
            // nlmsghdr: len 48, RTM_NEWLINK (16), REQUEST|ACK (5, no CREATE), seq 8, pid 0
            48, 0, 0, 0,   16, 0,   5, 0,   8, 0, 0, 0,   0, 0, 0, 0,
            // ifinfomsg: AF_UNSPEC, index 0x0203, flags 0, change 0 (stays down)
            0, 0, 0, 0,   3, 2, 0, 0,   0, 0, 0, 0,   0, 0, 0, 0,
            // IFLA_AF_SPEC (26), len 16 = 4 + 12, no NLA_F_NESTED
            16, 0, 26, 0,
              // AF_INET6 (10), len 12 = 4 + 8 (the inner padding counts)
              12, 0, 10, 0,
                // IFLA_INET6_ADDR_GEN_MODE (8), len 5: IN6_ADDR_GEN_MODE_NONE (1) + padding
                5, 0, 8, 0,   1, 0, 0, 0,
        ];
        assert_eq!(no_ipv6_autoconf(8, 0x0203).expect("builds"), want);
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn del_group_request_bytes() {
        #[rustfmt::skip]
        let want: [u8; 40] = [
            // nlmsghdr: len 40, RTM_DELLINK (17), REQUEST|ACK (5), seq 7
            40, 0, 0, 0,   17, 0,   5, 0,   7, 0, 0, 0,   0, 0, 0, 0,
            // ifinfomsg: index 0
            0, 0, 0, 0,   0, 0, 0, 0,   0, 0, 0, 0,   0, 0, 0, 0,
            // IFLA_GROUP (27), len 8: 77
            8, 0, 27, 0,   77, 0, 0, 0,
        ];
        assert_eq!(del_group(7, 77).expect("builds"), want);
    }

    #[test]
    fn attributes_are_padded_to_four_bytes() {
        for (payload, total) in [(0usize, 4usize), (1, 8), (3, 8), (4, 8), (5, 12), (8, 12)] {
            let mut m = Msg::new(0, 0, 0);
            m.attr(1, &vec![0xff; payload]);
            assert_eq!(m.buf.len() - NLMSG_HDRLEN, total, "payload {payload}");
            let nla_len = u16::from_ne_bytes([m.buf[16], m.buf[17]]);
            assert_eq!(
                usize::from(nla_len),
                NLA_HDRLEN + payload,
                "nla_len is unpadded"
            );
        }
    }

    #[test]
    fn oversized_attribute_is_refused_not_truncated() {
        let mut m = Msg::new(0, 0, 0);
        m.attr(1, &vec![0; 70_000]);
        assert_eq!(
            m.finish().map_err(|e| e.kind()).err(),
            Some(io::ErrorKind::InvalidInput)
        );
    }

    /// An `NLMSG_ERROR` answer to `seq`, as the kernel lays it out.
    fn error_msg(seq: u32, error: i32, flags: u16, echoed: &[u8], tlvs: &[u8]) -> Vec<u8> {
        let mut m = Msg::new(NLMSG_ERROR, flags, seq);
        m.buf.extend_from_slice(&error.to_ne_bytes());
        // The echoed request header: len 16 + echoed payload, type RTM_NEWLINK.
        let orig_len = u32::try_from(NLMSG_HDRLEN + echoed.len()).expect("small");
        m.buf.extend_from_slice(&orig_len.to_ne_bytes());
        m.buf.extend_from_slice(&RTM_NEWLINK.to_ne_bytes());
        m.buf.extend_from_slice(&0u16.to_ne_bytes());
        m.buf.extend_from_slice(&seq.to_ne_bytes());
        m.buf.extend_from_slice(&0u32.to_ne_bytes());
        m.buf.extend_from_slice(echoed);
        m.pad();
        m.buf.extend_from_slice(tlvs);
        m.finish().expect("small")
    }

    fn msg_tlv(text: &str) -> Vec<u8> {
        let mut m = Msg::new(0, 0, 0);
        m.attr_cstr(NLMSGERR_ATTR_MSG, text);
        m.buf.split_off(NLMSG_HDRLEN)
    }

    #[test]
    fn ack_and_errno_are_read() {
        assert_eq!(
            find_reply(&error_msg(4, 0, 0, &[], &[]), 4).expect("ack"),
            Some(Reply::Ack)
        );
        let err = find_reply(&error_msg(4, -17, 0, &[1, 2, 3, 4, 5], &[]), 4).expect_err("EEXIST");
        assert!(
            matches!(
                err,
                NetlinkError::Kernel {
                    errno: 17,
                    message: None
                }
            ),
            "{err:?}"
        );
        assert_eq!(err.raw_os_error(), Some(17));
    }

    #[test]
    fn extended_ack_message_is_kept() {
        let tlvs = msg_tlv("Unknown device type");
        // Capped: the TLVs follow the echoed header directly.
        let capped = error_msg(5, -95, NLM_F_CAPPED | NLM_F_ACK_TLVS, &[], &tlvs);
        // Not capped: the whole request (here 20 bytes of payload) comes first.
        let full = error_msg(5, -95, NLM_F_ACK_TLVS, &[9; 20], &tlvs);
        for buf in [capped, full] {
            let err = find_reply(&buf, 5).expect_err("EOPNOTSUPP");
            assert!(
                matches!(&err, NetlinkError::Kernel { errno: 95, message: Some(m) } if m == "Unknown device type"),
                "{err:?}"
            );
            assert!(
                err.to_string().ends_with(" (kernel: Unknown device type)"),
                "{err}"
            );
        }
    }

    #[test]
    fn other_sequences_are_skipped() {
        let mut two = error_msg(7, -1, 0, &[], &[]);
        two.extend(error_msg(8, 0, 0, &[], &[]));
        assert_eq!(find_reply(&two, 8).expect("ack"), Some(Reply::Ack));
        assert_eq!(find_reply(&two[..20], 9).ok(), None, "truncated");
        assert_eq!(
            find_reply(&error_msg(7, 0, 0, &[], &[]), 8).expect("none"),
            None
        );
    }

    #[test]
    fn non_error_answer_is_returned_and_master_found() {
        let mut m = Msg::new(RTM_NEWLINK, 0, 11);
        m.ifinfomsg(AF_UNSPEC, 3);
        m.attr_cstr(IFLA_IFNAME, "veth0");
        m.attr_u32(IFLA_MTU, 1500);
        m.attr_u32(IFLA_MASTER, 42);
        let bytes = m.finish().expect("small");
        let Some(Reply::Message(msg)) = find_reply(&bytes, 11).expect("parses") else {
            panic!("expected a message");
        };
        assert_eq!(link_master(&msg).expect("parses"), Some(42));
        let mut m = Msg::new(RTM_NEWLINK, 0, 11);
        m.ifinfomsg(AF_UNSPEC, 3);
        m.attr_cstr(IFLA_IFNAME, "veth0");
        assert_eq!(
            link_master(&m.finish().expect("small")).expect("parses"),
            None
        );
    }

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        assert!(matches!(
            find_reply(&[1, 0, 0, 0], 1),
            Err(NetlinkError::Malformed(_))
        ));
        let mut bad = error_msg(1, 0, 0, &[], &[]);
        bad[0] = 200; // nlmsg_len beyond the datagram
        assert!(matches!(
            find_reply(&bad, 1),
            Err(NetlinkError::Malformed(_))
        ));
        assert!(matches!(
            find_reply(&error_msg(1, 5, 0, &[], &[]), 1),
            Err(NetlinkError::Malformed(_))
        ));
    }
}
