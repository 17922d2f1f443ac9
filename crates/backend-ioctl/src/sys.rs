//! The raw layer: request numbers, `struct ifreq`, and the one `ioctl` wrapper.
//!
//! Every `unsafe` ioctl in this crate lives here (the netlink socket's syscalls are in
//! `nl.rs`, the `setns` of `IoctlLinks::new_in` in `lib.rs`). The rest of the crate talks to the kernel through [`IfSocket`], whose methods
//! are safe because each pairs a request with the exact argument type the kernel expects
//! for it.

use std::ffi::{c_char, c_int, c_short, c_ulong, c_ushort, c_void};
use std::io;
use std::mem::size_of;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// `IFNAMSIZ` in `<linux/if.h>`: 15 bytes of name and the NUL.
pub(crate) const IFNAMSIZ: usize = 16;

// <linux/sockios.h>. The libc crate has these two for Android only, so they are spelled out
// here, as Docker 1.x's libcontainer did (`SIOC_BRADDBR = 0x89a0`).
/// Create a bridge; the argument is a pointer to its name (`IFNAMSIZ` bytes are read).
const SIOCBRADDBR: c_ulong = 0x89a0;
/// Delete a bridge; same argument.
const SIOCBRDELBR: c_ulong = 0x89a1;
/// Add a port to a bridge: `struct ifreq` with the bridge's name and the port's
/// `ifr_ifindex` (Docker 1.x `AddToBridge`).
const SIOCBRADDIF: c_ulong = 0x89a2;

/// `RTF_UP` and `RTF_GATEWAY` in `<net/route.h>`.
pub(crate) const RTF_UP: c_ushort = 0x0001;
pub(crate) const RTF_GATEWAY: c_ushort = 0x0002;

/// `ETHTOOL_GDRVINFO` in `<linux/ethtool.h>`.
const ETHTOOL_GDRVINFO: u32 = 0x0000_0003;

/// `ARPHRD_ETHER`: the `sa_family` of an Ethernet hardware address.
pub(crate) const ARPHRD_ETHER: u16 = libc::ARPHRD_ETHER;

/// The size of the union that follows the name in `struct ifreq`: 24 bytes where pointers
/// are 8 bytes (`struct ifmap` is the largest member), 16 otherwise.
#[cfg(target_pointer_width = "64")]
const IFRU_LEN: usize = 24;
#[cfg(not(target_pointer_width = "64"))]
const IFRU_LEN: usize = 16;

/// `struct ifreq` as plain bytes: a NUL-terminated name and the request's union.
///
/// Plain bytes instead of `libc::ifreq` so that it can be built and read without `unsafe`
/// (no union access, no `mem::zeroed`). Each accessor writes the union member the matching
/// request reads, in the C layout.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ifreq {
    name: [u8; IFNAMSIZ],
    ifru: [u8; IFRU_LEN],
}

// The kernel copies `sizeof(struct ifreq)` bytes, and SIOCGIFCONF fills an array of them:
// the size must match exactly.
const _: () = assert!(size_of::<Ifreq>() == size_of::<libc::ifreq>());

impl std::fmt::Debug for Ifreq {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ifreq")
            .field("name", &self.name())
            .field("ifru", &self.ifru)
            .finish()
    }
}

impl Ifreq {
    /// An all-zero request, used to size SIOCGIFCONF buffers.
    pub(crate) const fn zeroed() -> Self {
        Self {
            name: [0; IFNAMSIZ],
            ifru: [0; IFRU_LEN],
        }
    }

    /// A request for the interface (or address label) `name`.
    ///
    /// The caller validates names with a clear message first; this check only guarantees the
    /// name is NUL-terminated, because the bridge ioctls silently truncate a 16-byte name to
    /// 15 and would create a bridge under a name nobody asked for.
    pub(crate) fn new(name: &str) -> io::Result<Self> {
        let bytes = name.as_bytes();
        if bytes.is_empty() || bytes.len() >= IFNAMSIZ || bytes.contains(&0) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("interface name {name:?} must be 1 to 15 bytes without NUL"),
            ));
        }
        let mut req = Self::zeroed();
        req.name[..bytes.len()].copy_from_slice(bytes);
        Ok(req)
    }

    /// The raw, NUL-padded name field.
    pub(crate) fn name_bytes(&self) -> [u8; IFNAMSIZ] {
        self.name
    }

    /// The name up to its NUL.
    pub(crate) fn name(&self) -> String {
        let end = self.name.iter().position(|&b| b == 0).unwrap_or(IFNAMSIZ);
        String::from_utf8_lossy(&self.name[..end]).into_owned()
    }

    /// `ifr_ifindex` / `ifr_mtu` (both `int`).
    pub(crate) fn int(&self) -> i32 {
        i32::from_ne_bytes([self.ifru[0], self.ifru[1], self.ifru[2], self.ifru[3]])
    }

    pub(crate) fn set_int(&mut self, v: i32) {
        self.ifru[..4].copy_from_slice(&v.to_ne_bytes());
    }

    /// `ifr_flags` (`short`).
    pub(crate) fn flags(&self) -> i16 {
        i16::from_ne_bytes([self.ifru[0], self.ifru[1]])
    }

    pub(crate) fn set_flags(&mut self, v: i16) {
        self.ifru[..2].copy_from_slice(&v.to_ne_bytes());
    }

    /// `ifr_addr` as a `struct sockaddr_in`: family (host order), port 0, address (network
    /// order), 8 bytes of zero.
    pub(crate) fn set_inet(&mut self, addr: Ipv4Addr) {
        self.ifru[..16].fill(0);
        self.ifru[..2].copy_from_slice(&inet_family().to_ne_bytes());
        self.ifru[4..8].copy_from_slice(&addr.octets());
    }

    /// `ifr_addr` if it holds an `AF_INET` address.
    pub(crate) fn inet(&self) -> Option<Ipv4Addr> {
        if self.sa_family() != inet_family() {
            return None;
        }
        Some(Ipv4Addr::new(
            self.ifru[4],
            self.ifru[5],
            self.ifru[6],
            self.ifru[7],
        ))
    }

    /// `ifr_hwaddr`: `sa_family` (an `ARPHRD_*` type) and the first six bytes of `sa_data`.
    pub(crate) fn set_hwaddr(&mut self, family: u16, mac: [u8; 6]) {
        self.ifru[..16].fill(0);
        self.ifru[..2].copy_from_slice(&family.to_ne_bytes());
        self.ifru[2..8].copy_from_slice(&mac);
    }

    pub(crate) fn hwaddr(&self) -> (u16, [u8; 6]) {
        let mut mac = [0u8; 6];
        mac.copy_from_slice(&self.ifru[2..8]);
        (self.sa_family(), mac)
    }

    fn sa_family(&self) -> u16 {
        u16::from_ne_bytes([self.ifru[0], self.ifru[1]])
    }

    /// `ifr_data`: a user pointer, for SIOCETHTOOL.
    fn set_data_ptr(&mut self, ptr: *mut c_void) {
        let bytes = (ptr as usize).to_ne_bytes();
        self.ifru[..bytes.len()].copy_from_slice(&bytes);
    }
}

fn inet_family() -> u16 {
    // AF_INET is 2; the conversion cannot fail, the fallback only keeps clippy's
    // `unwrap_used` quiet.
    u16::try_from(libc::AF_INET).unwrap_or(2)
}

/// Requests whose argument is a single `struct ifreq` that the kernel reads and/or writes in
/// place, dereferencing no pointer stored inside it. That property is what makes
/// [`IfSocket::ifreq`] safe for every variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IfreqRequest {
    /// `SIOCBRADDBR`: the argument is a name pointer; `ifr_name` is the first field.
    AddBridge,
    /// `SIOCBRDELBR`: likewise.
    DelBridge,
    GetIndex,
    GetFlags,
    SetFlags,
    GetMtu,
    SetMtu,
    GetHwAddr,
    SetHwAddr,
    SetAddr,
    GetNetmask,
    SetNetmask,
    /// `SIOCBRADDIF`: the bridge's name, the port's index in `ifr_ifindex`.
    AddIf,
    /// `SIOCGIFNAME`: `ifr_ifindex` in, `ifr_name` out.
    GetName,
}

impl IfreqRequest {
    fn code(self) -> c_ulong {
        match self {
            Self::AddBridge => SIOCBRADDBR,
            Self::DelBridge => SIOCBRDELBR,
            Self::GetIndex => libc::SIOCGIFINDEX,
            Self::GetFlags => libc::SIOCGIFFLAGS,
            Self::SetFlags => libc::SIOCSIFFLAGS,
            Self::GetMtu => libc::SIOCGIFMTU,
            Self::SetMtu => libc::SIOCSIFMTU,
            Self::GetHwAddr => libc::SIOCGIFHWADDR,
            Self::SetHwAddr => libc::SIOCSIFHWADDR,
            Self::SetAddr => libc::SIOCSIFADDR,
            Self::GetNetmask => libc::SIOCGIFNETMASK,
            Self::SetNetmask => libc::SIOCSIFNETMASK,
            Self::AddIf => SIOCBRADDIF,
            Self::GetName => libc::SIOCGIFNAME,
        }
    }

    /// Whether the request is an IPv4 address request, which only `AF_INET` (and `AF_PACKET`,
    /// which forwards them to `inet_ioctl`) sockets understand. On an `AF_INET6` socket the
    /// same numbers mean IPv6 requests on a different struct.
    fn is_inet(self) -> bool {
        matches!(self, Self::SetAddr | Self::GetNetmask | Self::SetNetmask)
    }
}

/// `struct ifconf` for SIOCGIFCONF.
#[repr(C)]
struct Ifconf {
    len: c_int,
    buf: *mut Ifreq,
}

const _: () = assert!(size_of::<Ifconf>() == size_of::<libc::ifconf>());

/// `struct ethtool_drvinfo` in `<linux/ethtool.h>`.
#[repr(C)]
struct EthtoolDrvinfo {
    cmd: u32,
    driver: [u8; 32],
    version: [u8; 32],
    fw_version: [u8; 32],
    bus_info: [u8; 32],
    erom_version: [u8; 32],
    reserved2: [u8; 12],
    n_priv_flags: u32,
    n_stats: u32,
    testinfo_len: u32,
    eedump_len: u32,
    regdump_len: u32,
}

const _: () = assert!(size_of::<EthtoolDrvinfo>() == 196);

/// A `struct sockaddr` holding a `struct sockaddr_in`: family (host order), port 0, the
/// address (network order) and eight zero bytes. Byte arrays keep its alignment at 2, that
/// of `struct sockaddr`, which is what `struct rtentry` embeds.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SockaddrIn {
    family: u16,
    port: [u8; 2],
    addr: [u8; 4],
    zero: [u8; 8],
}

const _: () = assert!(size_of::<SockaddrIn>() == size_of::<libc::sockaddr>());
const _: () = assert!(align_of::<SockaddrIn>() == align_of::<libc::sockaddr>());

impl SockaddrIn {
    fn inet(addr: Ipv4Addr) -> Self {
        Self {
            family: inet_family(),
            port: [0; 2],
            addr: addr.octets(),
            zero: [0; 8],
        }
    }
}

/// `struct rtentry` as `<net/route.h>` declares it; the kernel's (`<linux/route.h>`) has a
/// `void *rt_pad4` where glibc has `rt_tos`, `rt_class` and `short rt_pad4[3]`: same size,
/// same offsets (checked below for 64-bit targets).
#[repr(C)]
struct Rtentry {
    rt_pad1: c_ulong,
    rt_dst: SockaddrIn,
    rt_gateway: SockaddrIn,
    rt_genmask: SockaddrIn,
    rt_flags: c_ushort,
    rt_pad2: c_short,
    rt_pad3: c_ulong,
    rt_tos: u8,
    rt_class: u8,
    #[cfg(target_pointer_width = "64")]
    rt_pad4: [c_short; 3],
    #[cfg(not(target_pointer_width = "64"))]
    rt_pad4: c_short,
    /// The priority plus one ("+1 for binary compatibility"); 0 means priority 0.
    rt_metric: c_short,
    /// The output device's name, or null.
    rt_dev: *mut c_char,
    rt_mtu: c_ulong,
    rt_window: c_ulong,
    rt_irtt: c_ushort,
}

#[cfg(target_pointer_width = "64")]
const _: () = {
    assert!(size_of::<Rtentry>() == 120);
    assert!(std::mem::offset_of!(Rtentry, rt_dst) == 8);
    assert!(std::mem::offset_of!(Rtentry, rt_flags) == 56);
    assert!(std::mem::offset_of!(Rtentry, rt_metric) == 80);
    assert!(std::mem::offset_of!(Rtentry, rt_dev) == 88);
    assert!(std::mem::offset_of!(Rtentry, rt_irtt) == 112);
};

/// An IPv4 route for `SIOCADDRT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RouteEntry {
    /// The destination network (`0.0.0.0` with mask `0.0.0.0` for the default route).
    pub(crate) dst: Ipv4Addr,
    pub(crate) genmask: Ipv4Addr,
    pub(crate) gateway: Option<Ipv4Addr>,
    /// The output device, NUL-padded to `IFNAMSIZ`: the kernel copies `IFNAMSIZ - 1`
    /// bytes from `rt_dev` whatever the name's length, so a shorter buffer would not do.
    pub(crate) dev: Option<[u8; IFNAMSIZ]>,
}

impl RouteEntry {
    /// The C struct, with `rt_dev` set to `dev` (null or a pointer to `self.dev`'s copy).
    fn rtentry(&self, dev: *mut c_char) -> Rtentry {
        let mut flags = RTF_UP;
        if self.gateway.is_some() {
            flags |= RTF_GATEWAY;
        }
        Rtentry {
            rt_pad1: 0,
            rt_dst: SockaddrIn::inet(self.dst),
            rt_gateway: SockaddrIn::inet(self.gateway.unwrap_or(Ipv4Addr::UNSPECIFIED)),
            rt_genmask: SockaddrIn::inet(self.genmask),
            rt_flags: flags,
            rt_pad2: 0,
            rt_pad3: 0,
            rt_tos: 0,
            rt_class: 0,
            #[cfg(target_pointer_width = "64")]
            rt_pad4: [0; 3],
            #[cfg(not(target_pointer_width = "64"))]
            rt_pad4: 0,
            rt_metric: 0,
            rt_dev: dev,
            rt_mtu: 0,
            rt_window: 0,
            rt_irtt: 0,
        }
    }
}

/// What `ETHTOOL_GDRVINFO` reports about a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DrvInfo {
    pub(crate) driver: String,
    pub(crate) bus_info: String,
}

fn c_str(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// # Safety
///
/// `arg` must point to memory laid out as `req` expects, valid for reads and writes of that
/// size for the whole call, and any pointer the kernel follows from it must be valid too.
unsafe fn ioctl(fd: BorrowedFd<'_>, req: c_ulong, arg: *mut c_void) -> io::Result<()> {
    // The request parameter is `unsigned long` on glibc and `int` on musl; every request used
    // here fits in 16 bits, so the conversion is lossless on both.
    #[allow(clippy::cast_possible_truncation, clippy::unnecessary_cast)]
    let req = req as libc::Ioctl;
    // SAFETY: `fd` is a live descriptor borrowed for the call; the caller guarantees that
    // `arg` matches `req`.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), req, arg) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// `NS_GET_NSTYPE` in `<linux/nsfs.h>`: `_IO(0xb7, 0x3)`.
const NS_GET_NSTYPE: c_ulong = 0xb703;

/// The `CLONE_NEW*` type of a namespace descriptor (Linux 4.11+); `ENOTTY` for a file that is
/// not a namespace.
pub(crate) fn ns_type(fd: BorrowedFd<'_>) -> io::Result<c_int> {
    #[allow(clippy::cast_possible_truncation, clippy::unnecessary_cast)]
    let req = NS_GET_NSTYPE as libc::Ioctl;
    // SAFETY: NS_GET_NSTYPE takes no argument and returns the type; `fd` is a live
    // descriptor borrowed for the call.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), req) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// Which address family the control socket has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SocketFamily {
    Inet,
    Packet,
    Inet6,
}

/// A datagram socket used only as a handle for interface ioctls. The kernel runs each
/// request in the network namespace the socket was created in, whatever thread calls it.
#[derive(Debug)]
pub(crate) struct IfSocket {
    fd: OwnedFd,
    family: SocketFamily,
}

impl IfSocket {
    /// Opens the socket the way Docker 1.x's `getIfSocket()` did: `AF_INET`, then
    /// `AF_PACKET`, then `AF_INET6`, all `SOCK_DGRAM` (here also `SOCK_CLOEXEC`, so the
    /// descriptor does not leak into spawned tools). Returns the last error if none opens.
    pub(crate) fn open() -> io::Result<Self> {
        let mut last = io::Error::from(io::ErrorKind::Unsupported);
        for (af, family) in [
            (libc::AF_INET, SocketFamily::Inet),
            (libc::AF_PACKET, SocketFamily::Packet),
            (libc::AF_INET6, SocketFamily::Inet6),
        ] {
            // SAFETY: socket() takes plain integers and returns a new descriptor or -1.
            let fd = unsafe { libc::socket(af, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
            if fd >= 0 {
                // SAFETY: `fd` was just returned by socket(), is open, and nothing else
                // owns it.
                let fd = unsafe { OwnedFd::from_raw_fd(fd) };
                return Ok(Self { fd, family });
            }
            last = io::Error::last_os_error();
        }
        Err(last)
    }

    pub(crate) fn family(&self) -> SocketFamily {
        self.family
    }

    /// Issues one ifreq request.
    pub(crate) fn ifreq(&self, req: IfreqRequest, ifr: &mut Ifreq) -> io::Result<()> {
        if req.is_inet() && self.family == SocketFamily::Inet6 {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "IPv4 address ioctls need an AF_INET or AF_PACKET socket, and only AF_INET6 \
                 could be opened",
            ));
        }
        let arg: *mut Ifreq = ifr;
        // SAFETY: every IfreqRequest takes exactly one `struct ifreq` (or, for the bridge
        // requests, a name pointer, which `ifr_name` at offset 0 satisfies with IFNAMSIZ
        // bytes); `Ifreq` has the kernel's size, is exclusively borrowed for the call, and
        // none of these requests follows a pointer stored in it.
        unsafe { ioctl(self.fd.as_fd(), req.code(), arg.cast()) }
    }

    /// `ETHTOOL_GDRVINFO` for `name`.
    pub(crate) fn drvinfo(&self, name: &str) -> io::Result<DrvInfo> {
        let mut info = EthtoolDrvinfo {
            cmd: ETHTOOL_GDRVINFO,
            driver: [0; 32],
            version: [0; 32],
            fw_version: [0; 32],
            bus_info: [0; 32],
            erom_version: [0; 32],
            reserved2: [0; 12],
            n_priv_flags: 0,
            n_stats: 0,
            testinfo_len: 0,
            eedump_len: 0,
            regdump_len: 0,
        };
        let mut ifr = Ifreq::new(name)?;
        let info_ptr: *mut EthtoolDrvinfo = &mut info;
        ifr.set_data_ptr(info_ptr.cast());
        let arg: *mut Ifreq = &mut ifr;
        // SAFETY: SIOCETHTOOL takes a `struct ifreq` whose `ifr_data` points to an ethtool
        // command; for ETHTOOL_GDRVINFO that is a `struct ethtool_drvinfo`, which `info`
        // is (same layout, size checked above). Both live on this stack frame, exclusively
        // borrowed, until the call returns.
        unsafe { ioctl(self.fd.as_fd(), libc::SIOCETHTOOL, arg.cast())? };
        Ok(DrvInfo {
            driver: c_str(&info.driver),
            bus_info: c_str(&info.bus_info),
        })
    }

    /// `SIOCADDRT`: adds the route to the main table of the socket's namespace.
    pub(crate) fn add_route(&self, route: &RouteEntry) -> io::Result<()> {
        if self.family == SocketFamily::Inet6 {
            // On an AF_INET6 socket SIOCADDRT takes a `struct in6_rtmsg` instead.
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "SIOCADDRT for IPv4 needs an AF_INET or AF_PACKET socket, and only AF_INET6 \
                 could be opened",
            ));
        }
        let mut dev = route.dev;
        let dev_ptr: *mut c_char = match dev.as_mut() {
            Some(name) => name.as_mut_ptr().cast(),
            None => std::ptr::null_mut(),
        };
        let mut rt = route.rtentry(dev_ptr);
        let arg: *mut Rtentry = &mut rt;
        // SAFETY: SIOCADDRT takes a `struct rtentry`, which `Rtentry` is (layout checked
        // above). Its one pointer, `rt_dev`, is null or points to `dev`: IFNAMSIZ bytes,
        // NUL-terminated, on this stack frame, of which the kernel reads IFNAMSIZ - 1. Both
        // outlive the call and nothing else touches them meanwhile.
        unsafe { ioctl(self.fd.as_fd(), libc::SIOCADDRT, arg.cast()) }
    }

    /// SIOCGIFCONF: every IPv4 address of the socket's namespace as (label, address), in
    /// kernel order (device by device, each device's list in order). A label is the device
    /// name, or `device:alias` for an alias.
    pub(crate) fn ifconf(&self) -> io::Result<Vec<(String, Ipv4Addr)>> {
        let mut cap = 16usize;
        loop {
            let mut buf = vec![Ifreq::zeroed(); cap];
            let bytes = cap * size_of::<Ifreq>();
            let mut conf = Ifconf {
                len: c_int::try_from(bytes)
                    .map_err(|_| io::Error::other("SIOCGIFCONF buffer too large"))?,
                buf: buf.as_mut_ptr(),
            };
            let arg: *mut Ifconf = &mut conf;
            // SAFETY: SIOCGIFCONF takes a `struct ifconf` whose buffer pointer and length
            // describe writable memory: `buf` holds `cap` requests of the kernel's size,
            // `len` is their byte count, and `buf` outlives the call.
            unsafe { ioctl(self.fd.as_fd(), libc::SIOCGIFCONF, arg.cast())? };
            let filled = usize::try_from(conf.len).unwrap_or(0) / size_of::<Ifreq>();
            // A full buffer may have been truncated: grow and ask again.
            if filled < cap {
                return Ok(buf[..filled]
                    .iter()
                    .filter_map(|r| r.inet().map(|a| (r.name(), a)))
                    .collect());
            }
            cap *= 2;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_must_fit_with_their_nul() {
        assert_eq!(
            Ifreq::new(&"a".repeat(15)).map(|r| r.name()).ok(),
            Some("a".repeat(15))
        );
        for bad in ["", "abcdefghijklmnop", "a\0b"] {
            let err = Ifreq::new(bad).expect_err(bad);
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{bad:?}");
        }
    }

    #[test]
    fn sockaddr_in_layout_matches_c() {
        let mut r = Ifreq::new("br0").expect("name");
        r.set_inet(Ipv4Addr::new(172, 17, 0, 1));
        let mut expected = [0u8; 16];
        expected[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
        expected[4..8].copy_from_slice(&[172, 17, 0, 1]);
        assert_eq!(r.ifru[..16], expected);
        assert_eq!(r.inet(), Some(Ipv4Addr::new(172, 17, 0, 1)));
        // An Ethernet address in the same bytes is not read back as IPv4.
        r.set_hwaddr(ARPHRD_ETHER, [2, 0x42, 0, 0, 0, 1]);
        assert_eq!(r.inet(), None);
        assert_eq!(r.hwaddr(), (1, [2, 0x42, 0, 0, 0, 1]));
        let mut hw = [0u8; 8];
        hw[..2].copy_from_slice(&1u16.to_ne_bytes());
        hw[2..].copy_from_slice(&[2, 0x42, 0, 0, 0, 1]);
        assert_eq!(r.ifru[..8], hw);
    }

    /// The bytes of a `struct sockaddr` (no padding: 2 + 2 + 4 + 8 bytes, alignment 2).
    fn sockaddr_bytes(sa: &SockaddrIn) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..2].copy_from_slice(&sa.family.to_ne_bytes());
        b[2..4].copy_from_slice(&sa.port);
        b[4..8].copy_from_slice(&sa.addr);
        b[8..].copy_from_slice(&sa.zero);
        b
    }

    fn inet_sa(a: [u8; 4]) -> [u8; 16] {
        let af = (libc::AF_INET as u16).to_ne_bytes();
        [
            af[0], af[1], 0, 0, a[0], a[1], a[2], a[3], 0, 0, 0, 0, 0, 0, 0, 0,
        ]
    }

    // The field offsets are asserted at compile time next to `Rtentry`; these check what
    // goes into each field.
    #[test]
    fn rtentry_for_a_default_route_via_a_gateway() {
        let r = RouteEntry {
            dst: Ipv4Addr::UNSPECIFIED,
            genmask: Ipv4Addr::UNSPECIFIED,
            gateway: Some(Ipv4Addr::new(172, 17, 0, 1)),
            dev: None,
        };
        let rt = r.rtentry(std::ptr::null_mut());
        assert_eq!(sockaddr_bytes(&rt.rt_dst), inet_sa([0, 0, 0, 0]));
        assert_eq!(sockaddr_bytes(&rt.rt_gateway), inet_sa([172, 17, 0, 1]));
        // A zero genmask with AF_INET: prefix length 0, the default route.
        assert_eq!(sockaddr_bytes(&rt.rt_genmask), inet_sa([0, 0, 0, 0]));
        assert_eq!(rt.rt_flags, RTF_UP | RTF_GATEWAY);
        assert_eq!(rt.rt_flags, 0x3);
        // Metric 0 is priority 0, as a netlink route without RTA_PRIORITY.
        assert_eq!(rt.rt_metric, 0);
        assert!(rt.rt_dev.is_null());
        assert_eq!(
            (rt.rt_pad1, rt.rt_pad2, rt.rt_pad3, rt.rt_tos, rt.rt_class),
            (0, 0, 0, 0, 0)
        );
        assert_eq!((rt.rt_mtu, rt.rt_window, rt.rt_irtt), (0, 0, 0));
    }

    #[test]
    fn rtentry_for_a_device_route() {
        let dev = Ifreq::new("eth0").expect("name").name_bytes();
        let r = RouteEntry {
            dst: Ipv4Addr::new(10, 9, 0, 0),
            genmask: Ipv4Addr::new(255, 255, 255, 0),
            gateway: None,
            dev: Some(dev),
        };
        let mut copy = dev;
        let ptr: *mut c_char = copy.as_mut_ptr().cast();
        let rt = r.rtentry(ptr);
        assert_eq!(sockaddr_bytes(&rt.rt_dst), inet_sa([10, 9, 0, 0]));
        assert_eq!(sockaddr_bytes(&rt.rt_genmask), inet_sa([255, 255, 255, 0]));
        assert_eq!(sockaddr_bytes(&rt.rt_gateway), inet_sa([0, 0, 0, 0]));
        assert_eq!(rt.rt_flags, RTF_UP);
        assert_eq!(rt.rt_dev, ptr);
        // The name the kernel reads IFNAMSIZ - 1 bytes of: NUL-padded to the full size.
        let mut want = [0u8; IFNAMSIZ];
        want[..4].copy_from_slice(b"eth0");
        assert_eq!(copy, want);
    }

    #[test]
    fn int_and_flags_share_the_union_start() {
        let mut r = Ifreq::zeroed();
        r.set_int(9000);
        assert_eq!(r.int(), 9000);
        assert_eq!(r.ifru[..4], 9000i32.to_ne_bytes());
        r.set_flags(0x1043);
        assert_eq!(r.flags(), 0x1043);
        assert_eq!(r.ifru[..2], 0x1043i16.to_ne_bytes());
    }
}
