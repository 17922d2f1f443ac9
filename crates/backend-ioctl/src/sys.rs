//! The raw layer: request numbers, `struct ifreq`, and the one `ioctl` wrapper.
//!
//! Everything `unsafe` in this crate lives here. The rest of the crate talks to the kernel
//! through [`IfSocket`], whose methods are safe because each pairs a request with the exact
//! argument type the kernel expects for it.

use std::ffi::{c_int, c_ulong, c_void};
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
