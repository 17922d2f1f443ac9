//! Datagrams with their local address: `IP_PKTINFO` on a UDP socket bound to 0.0.0.0.
//!
//! A socket bound to the wildcard address receives datagrams sent to any local address, but a
//! plain `sendto` on it lets the kernel pick the reply's source address by route. On a host
//! with several addresses that is often not the address the client wrote to: a container on
//! docker0 writing to the host's other address 192.0.2.1:49153 gets the reply from the bridge
//! address 172.17.42.1, and its connected UDP socket (what most resolvers and clients use)
//! drops it. Docker 1.x's proxy had this bug (moby/moby#11998, moby/libnetwork#1729); modern
//! docker-proxy sets `IP_PKTINFO` and replies from the client's original destination
//! (moby/moby#48571, 2024), and so do we:
//!
//! - [`enable`] sets `IP_PKTINFO`, so every received datagram carries a `struct in_pktinfo`
//!   control message;
//! - [`recv_from`] reads a datagram with `recvmsg(2)` and returns, with the sender, the local
//!   address it was sent to (`ipi_spec_dst`);
//! - [`send_to`] sends with `sendmsg(2)` and an `IP_PKTINFO` control message whose
//!   `ipi_spec_dst` is that address and `ipi_ifindex` 0, which makes the kernel use it as the
//!   source address while still routing the reply normally (`ip(7)`).
//!
//! On a socket bound to one address, the local address is always that address, so the control
//! message changes nothing.
//!
//! Both calls run on tokio's readiness API (`UdpSocket::async_io`): the closure makes one
//! non-blocking syscall on the socket's descriptor, and a `WouldBlock` from it clears the
//! readiness and waits for the next event, exactly as tokio's own `recv_from`/`send_to` do.

use std::io;
use std::mem::{self, MaybeUninit};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::ptr;

use tokio::io::Interest;
use tokio::net::UdpSocket;

/// `CMSG_SPACE(sizeof(struct in_pktinfo))`: room for one `IP_PKTINFO` control message,
/// header, padding and all.
const PKTINFO_SPACE: usize = {
    // SAFETY: CMSG_SPACE only does arithmetic on its argument (it is a macro in C); it is
    // `unsafe` in libc merely because it is declared among the other CMSG_* functions.
    let space = unsafe { libc::CMSG_SPACE(mem::size_of::<libc::in_pktinfo>() as libc::c_uint) };
    space as usize
};

/// A control-message buffer aligned for `struct cmsghdr`, as `CMSG_FIRSTHDR` and
/// `CMSG_NXTHDR` require (they cast the buffer to `cmsghdr *`). The byte array is large
/// enough for one `IP_PKTINFO` message, and twice that for safety: `IP_PKTINFO` is the only
/// control message we ask for, and one that did not fit would only set `MSG_CTRUNC`.
#[repr(C)]
union CmsgBuffer {
    _align: libc::cmsghdr,
    bytes: [u8; 2 * PKTINFO_SPACE],
}

impl CmsgBuffer {
    fn zeroed() -> Self {
        CmsgBuffer {
            bytes: [0; 2 * PKTINFO_SPACE],
        }
    }

    fn as_mut_ptr(&mut self) -> *mut libc::c_void {
        ptr::from_mut(self).cast()
    }
}

/// Sets `IP_PKTINFO` on `socket`, so [`recv_from`] learns each datagram's local address.
pub(crate) fn enable(socket: BorrowedFd<'_>) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: `socket` is an open descriptor for the duration of the borrow; the option value
    // points to a live `c_int` and its exact size is passed.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_PKTINFO,
            ptr::from_ref(&on).cast(),
            socklen_of::<libc::c_int>(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// One datagram received by [`recv_from`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Received {
    /// The payload's length, at the start of the buffer.
    pub(crate) len: usize,
    /// The sender.
    pub(crate) peer: SocketAddrV4,
    /// The local address the datagram was delivered to (`ipi_spec_dst`), to send replies
    /// from. `None` if the kernel attached no `IP_PKTINFO` message (the option is off).
    pub(crate) local: Option<Ipv4Addr>,
}

/// Receives one datagram into `buf`, with its sender and local address.
///
/// The local address is `ipi_spec_dst`, not `ipi_addr` (the header's destination): they are
/// the same for a unicast datagram, but for one sent to a broadcast or multicast address
/// `ipi_spec_dst` is a local unicast address, which a reply can be sent from.
///
/// A datagram longer than `buf` is truncated, as with `recv_from`.
pub(crate) async fn recv_from(socket: &UdpSocket, buf: &mut [u8]) -> io::Result<Received> {
    socket
        .async_io(Interest::READABLE, || recvmsg(socket.as_fd(), buf))
        .await
}

/// Sends `datagram` to `peer`, from the local address `local` if given (else the kernel
/// chooses by route, as `send_to` does). A datagram is sent whole or not at all.
pub(crate) async fn send_to(
    socket: &UdpSocket,
    datagram: &[u8],
    peer: SocketAddrV4,
    local: Option<Ipv4Addr>,
) -> io::Result<usize> {
    socket
        .async_io(Interest::WRITABLE, || {
            sendmsg(socket.as_fd(), datagram, peer, local)
        })
        .await
}

/// One non-blocking `recvmsg(2)`. `WouldBlock` when nothing is queued.
fn recvmsg(socket: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<Received> {
    let mut name = MaybeUninit::<libc::sockaddr_in>::zeroed();
    let mut control = CmsgBuffer::zeroed();
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: `msghdr` is plain data (pointers and integers, plus private padding fields on
    // some libcs), for which all-zero bytes are a valid value: null pointers, zero lengths.
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_name = name.as_mut_ptr().cast();
    msg.msg_namelen = socklen_of::<libc::sockaddr_in>();
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr();
    msg.msg_controllen = mem::size_of::<CmsgBuffer>() as _;

    let n = loop {
        // SAFETY: `socket` is open for the borrow. Every pointer in `msg` points into a local
        // that outlives the call (`name`, `iov`, `control`) or into `buf` (through `iov`),
        // with the lengths of those objects; the kernel writes at most those many bytes into
        // each. MSG_DONTWAIT keeps the call non-blocking whatever the descriptor's flags.
        let n = unsafe { libc::recvmsg(socket.as_raw_fd(), &raw mut msg, libc::MSG_DONTWAIT) };
        if n >= 0 {
            break n;
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    };
    let len = usize::try_from(n).map_err(io::Error::other)?;

    // The kernel sets `msg_namelen` to the sender's address length; an AF_INET socket reports
    // a full `sockaddr_in` for every datagram.
    if (msg.msg_namelen as usize) < mem::size_of::<libc::sockaddr_in>() {
        return Err(io::Error::other("recvmsg returned no IPv4 sender address"));
    }
    // SAFETY: the buffer was zero-initialised, so it holds a valid `sockaddr_in` whatever the
    // kernel wrote, and it is now known to hold the sender's.
    let name = unsafe { name.assume_init() };
    if libc::c_int::from(name.sin_family) != libc::AF_INET {
        return Err(io::Error::other(format!(
            "recvmsg returned a sender of address family {}",
            name.sin_family
        )));
    }
    let peer = SocketAddrV4::new(
        Ipv4Addr::from(u32::from_be(name.sin_addr.s_addr)),
        u16::from_be(name.sin_port),
    );
    Ok(Received {
        len,
        peer,
        local: local_address(&msg),
    })
}

/// The `ipi_spec_dst` of the first `IP_PKTINFO` message in `msg`'s control data.
fn local_address(msg: &libc::msghdr) -> Option<Ipv4Addr> {
    // SAFETY: `msg` describes a control buffer that `recvmsg` just filled (and set
    // `msg_controllen` to the length of); CMSG_FIRSTHDR returns null when that is too short
    // for a header.
    let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(msg) };
    while !cmsg.is_null() {
        // SAFETY: CMSG_FIRSTHDR/CMSG_NXTHDR return null or a pointer to a whole, aligned
        // `cmsghdr` inside the control buffer, which lives as long as `msg` borrows it.
        let header = unsafe { &*cmsg };
        let wanted = header.cmsg_level == libc::IPPROTO_IP
            && header.cmsg_type == libc::IP_PKTINFO
            && header.cmsg_len as usize >= pktinfo_len();
        if wanted {
            // SAFETY: `cmsg_len` covers the header and a whole `in_pktinfo` (checked above),
            // and the kernel never reports more than the buffer holds, so CMSG_DATA points to
            // `size_of::<in_pktinfo>()` initialised bytes in the buffer. They need not be
            // aligned for `in_pktinfo`, hence `read_unaligned`.
            let info =
                unsafe { ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::in_pktinfo>()) };
            return Some(Ipv4Addr::from(u32::from_be(info.ipi_spec_dst.s_addr)));
        }
        // SAFETY: `cmsg` is a header inside `msg`'s control buffer (above); CMSG_NXTHDR
        // returns the next one, or null when it would not fit in `msg_controllen`.
        cmsg = unsafe { libc::CMSG_NXTHDR(msg, cmsg) };
    }
    None
}

/// One non-blocking `sendmsg(2)`. `WouldBlock` when the send buffer is full.
fn sendmsg(
    socket: BorrowedFd<'_>,
    datagram: &[u8],
    peer: SocketAddrV4,
    local: Option<Ipv4Addr>,
) -> io::Result<usize> {
    // SAFETY: `sockaddr_in` is plain integers; all zeroes is a valid value (and zeroes
    // `sin_zero`, as the kernel expects).
    let mut name: libc::sockaddr_in = unsafe { mem::zeroed() };
    name.sin_family = libc::AF_INET as libc::sa_family_t;
    name.sin_port = peer.port().to_be();
    name.sin_addr = libc::in_addr {
        s_addr: u32::from(*peer.ip()).to_be(),
    };
    let mut iov = libc::iovec {
        // sendmsg only reads through it; the iovec type has no const pointer.
        iov_base: datagram.as_ptr().cast_mut().cast(),
        iov_len: datagram.len(),
    };
    let mut control = CmsgBuffer::zeroed();
    // SAFETY: as in `recvmsg`, all-zero bytes are a valid `msghdr`.
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_name = (&raw mut name).cast();
    msg.msg_namelen = socklen_of::<libc::sockaddr_in>();
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    if let Some(local) = local {
        msg.msg_control = control.as_mut_ptr();
        // Exactly one message: a length covering trailing zero bytes would make the kernel
        // read them as a (malformed) second header and fail the send with EINVAL.
        msg.msg_controllen = PKTINFO_SPACE as _;
        // SAFETY: `msg_control` points to `control`, aligned for `cmsghdr` and at least
        // `msg_controllen` (= CMSG_SPACE(in_pktinfo)) bytes long, so CMSG_FIRSTHDR returns a
        // non-null pointer to a header-sized, aligned region of it.
        let cmsg = unsafe { libc::CMSG_FIRSTHDR(&raw const msg) };
        if cmsg.is_null() {
            return Err(io::Error::other(
                "no room for an IP_PKTINFO control message",
            ));
        }
        let info = libc::in_pktinfo {
            // 0: no outgoing interface imposed; the kernel routes the reply as usual and only
            // its source address is fixed.
            ipi_ifindex: 0,
            ipi_spec_dst: libc::in_addr {
                s_addr: u32::from(local).to_be(),
            },
            // Ignored by sendmsg.
            ipi_addr: libc::in_addr { s_addr: 0 },
        };
        // SAFETY: `cmsg` is a valid, aligned header in `control` (above), and CMSG_SPACE of
        // `in_pktinfo` bytes fit after it, so CMSG_DATA(cmsg) has room for an `in_pktinfo`;
        // it is written unaligned as CMSG_DATA promises no alignment for the payload type.
        unsafe {
            (*cmsg).cmsg_level = libc::IPPROTO_IP;
            (*cmsg).cmsg_type = libc::IP_PKTINFO;
            (*cmsg).cmsg_len = pktinfo_len() as _;
            ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::in_pktinfo>(), info);
        }
    }
    loop {
        // SAFETY: `socket` is open for the borrow; every pointer in `msg` points into a local
        // (`name`, `iov`, `control`) or `datagram` that outlives the call, with their lengths,
        // and the kernel only reads through them. MSG_DONTWAIT: never block the runtime.
        let n = unsafe { libc::sendmsg(socket.as_raw_fd(), &raw const msg, libc::MSG_DONTWAIT) };
        if n >= 0 {
            return usize::try_from(n).map_err(io::Error::other);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// `CMSG_LEN(sizeof(struct in_pktinfo))`: a header plus one `in_pktinfo`, unpadded.
fn pktinfo_len() -> usize {
    // SAFETY: CMSG_LEN only does arithmetic on its argument.
    let len = unsafe { libc::CMSG_LEN(mem::size_of::<libc::in_pktinfo>() as libc::c_uint) };
    len as usize
}

fn socklen_of<T>() -> libc::socklen_t {
    // The socket structures are a few dozen bytes: never near socklen_t's limit.
    mem::size_of::<T>() as libc::socklen_t
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_control_buffer_holds_one_pktinfo_message_aligned() {
        assert!(mem::size_of::<CmsgBuffer>() >= PKTINFO_SPACE);
        assert_eq!(
            mem::align_of::<CmsgBuffer>(),
            mem::align_of::<libc::cmsghdr>()
        );
        assert!(pktinfo_len() <= PKTINFO_SPACE);
        assert!(
            pktinfo_len() >= mem::size_of::<libc::cmsghdr>() + mem::size_of::<libc::in_pktinfo>()
        );
    }

    /// Without IP_PKTINFO there is no local address, and sending without one is a plain
    /// `sendto`: the sender and payload still come through.
    #[test]
    fn without_the_option_no_local_address_is_reported() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let a = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let b = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let (std::net::SocketAddr::V4(a_addr), std::net::SocketAddr::V4(b_addr)) =
                (a.local_addr().unwrap(), b.local_addr().unwrap())
            else {
                panic!("IPv4 sockets with IPv6 addresses");
            };
            send_to(&a, b"plain", b_addr, None).await.unwrap();
            let mut buf = [0_u8; 16];
            let got = recv_from(&b, &mut buf).await.unwrap();
            assert_eq!(&buf[..got.len], b"plain");
            assert_eq!(got.peer, a_addr);
            assert_eq!(got.local, None);

            enable(b.as_fd()).unwrap();
            send_to(&a, b"info", b_addr, None).await.unwrap();
            let got = recv_from(&b, &mut buf).await.unwrap();
            assert_eq!(&buf[..got.len], b"info");
            assert_eq!(got.local, Some(Ipv4Addr::LOCALHOST));
        });
    }

    /// The IP_PKTINFO message on a send sets the source address: a wildcard socket's send to
    /// 127.0.0.1, which the kernel would source from 127.0.0.1, leaves from 127.0.0.2 (local,
    /// as all of 127/8 is on loopback), from the socket's own port.
    #[test]
    fn a_send_with_a_local_address_leaves_from_it() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let wildcard = UdpSocket::bind("0.0.0.0:0").await.unwrap();
            let port = wildcard.local_addr().unwrap().port();
            let b = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let std::net::SocketAddr::V4(b_addr) = b.local_addr().unwrap() else {
                panic!("an IPv4 socket with an IPv6 address");
            };
            let mut buf = [0_u8; 16];
            for source in [Ipv4Addr::new(127, 0, 0, 2), Ipv4Addr::new(127, 0, 0, 3)] {
                let n = send_to(&wildcard, b"from", b_addr, Some(source))
                    .await
                    .unwrap();
                assert_eq!(n, 4);
                let got = recv_from(&b, &mut buf).await.unwrap();
                assert_eq!(&buf[..got.len], b"from");
                assert_eq!(got.peer, SocketAddrV4::new(source, port));
            }
        });
    }
}
