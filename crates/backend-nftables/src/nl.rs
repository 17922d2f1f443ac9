//! A minimal nfnetlink client: build nf_tables messages, send a batch, read the acks, dump
//! rules.
//!
//! Layout (`<linux/netlink.h>`, `<linux/netfilter/nfnetlink.h>`): a message is a 16-byte
//! `nlmsghdr` (host byte order), a 4-byte `nfgenmsg` (family, version, big-endian `res_id`)
//! and attributes. An attribute is a 4-byte header (`nla_len` counting the header and the
//! unpadded payload, `nla_type`) and its payload padded to 4 bytes. nf_tables integers
//! inside attributes are big-endian.

use std::io::{self, Read};

use socket2::{Domain, Protocol, Socket, Type};

// <linux/netlink.h>
const AF_NETLINK: i32 = 16;
const SOCK_RAW: i32 = 3;
const NETLINK_NETFILTER: i32 = 12;
pub const NLM_F_REQUEST: u16 = 0x1;
pub const NLM_F_ACK: u16 = 0x4;
pub const NLM_F_ECHO: u16 = 0x8;
pub const NLM_F_DUMP: u16 = 0x300;
pub const NLM_F_APPEND: u16 = 0x800;
pub const NLM_F_CREATE: u16 = 0x400;
pub const NLM_F_EXCL: u16 = 0x200;
const NLMSG_ERROR: u16 = 0x2;
const NLMSG_DONE: u16 = 0x3;
const NLMSG_HDRLEN: usize = 16;
const NFGENMSG_LEN: usize = 4;

// <linux/netfilter/nfnetlink.h>
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_BATCH_GENID: u16 = 1;
/// `NFPROTO_IPV4`: iptables' tables live in the `ip` family.
pub const NFPROTO_IPV4: u8 = 2;
const NFPROTO_UNSPEC: u8 = 0;

// <linux/netfilter/nf_tables.h>: message types
pub const NFT_MSG_NEWTABLE: u16 = 0;
pub const NFT_MSG_GETTABLE: u16 = 1;
pub const NFT_MSG_DELTABLE: u16 = 2;
pub const NFT_MSG_NEWCHAIN: u16 = 3;
pub const NFT_MSG_GETCHAIN: u16 = 4;
pub const NFT_MSG_DELCHAIN: u16 = 5;
pub const NFT_MSG_NEWRULE: u16 = 6;
pub const NFT_MSG_GETRULE: u16 = 7;
pub const NFT_MSG_DELRULE: u16 = 8;
pub const NFT_MSG_NEWSET: u16 = 9;
pub const NFT_MSG_NEWSETELEM: u16 = 12;
pub const NFT_MSG_GETSETELEM: u16 = 13;
pub const NFT_MSG_DELSETELEM: u16 = 14;
const NFT_MSG_NEWGEN: u16 = 15;
const NFT_MSG_GETGEN: u16 = 16;
// <linux/netfilter/nf_tables.h>, the attributes of tables, chains and rules both the
// iptables-nft encoder (lib.rs) and the native table (native.rs) send.
pub(crate) const NFTA_TABLE_NAME: u16 = 1;
pub(crate) const NFTA_CHAIN_TABLE: u16 = 1;
pub(crate) const NFTA_CHAIN_NAME: u16 = 3;
pub(crate) const NFTA_CHAIN_HOOK: u16 = 4;
pub(crate) const NFTA_CHAIN_POLICY: u16 = 5;
pub(crate) const NFTA_CHAIN_TYPE: u16 = 7;
pub(crate) const NFTA_HOOK_HOOKNUM: u16 = 1;
pub(crate) const NFTA_HOOK_PRIORITY: u16 = 2;
pub(crate) const NFTA_RULE_TABLE: u16 = 1;
pub(crate) const NFTA_RULE_CHAIN: u16 = 2;
pub(crate) const NFTA_RULE_EXPRESSIONS: u16 = 4;
pub(crate) const NFTA_RULE_HANDLE: u16 = 3;
const NFTA_GEN_ID: u16 = 1;

/// What the kernel or the socket answered.
#[derive(Debug, thiserror::Error)]
pub enum NlError {
    /// The kernel refused a message of the batch (the whole batch was aborted).
    #[error("nf_tables refused {what}: {}", io::Error::from_raw_os_error(*errno))]
    Kernel { errno: i32, what: String },
    #[error("nfnetlink socket: {0}")]
    Io(#[from] io::Error),
    #[error("malformed nfnetlink answer: {0}")]
    Malformed(&'static str),
    /// The batch is larger than one message on this socket may be (its send buffer).
    #[error("a batch of {0} bytes does not fit in one netlink message")]
    TooBig(usize),
}

impl NlError {
    pub fn errno(&self) -> Option<i32> {
        match self {
            Self::Kernel { errno, .. } => Some(*errno),
            Self::Io(e) => e.raw_os_error(),
            Self::Malformed(_) | Self::TooBig(_) => None,
        }
    }
}

/// Attributes under construction (a message's payload after `nfgenmsg`, or a nest's).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Attrs {
    pub buf: Vec<u8>,
}

impl Attrs {
    pub fn new() -> Self {
        Self::default()
    }

    /// One attribute with a raw payload. Payloads here are at most a few hundred bytes
    /// (a compat match's info), far below `u16::MAX`.
    pub fn put(&mut self, ty: u16, payload: &[u8]) -> &mut Self {
        let len = u16::try_from(4 + payload.len()).unwrap_or(u16::MAX);
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(payload);
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
        self
    }

    /// A NUL-terminated string, as the kernel dumps `nla_put_string`.
    pub fn str(&mut self, ty: u16, s: &str) -> &mut Self {
        let mut v = Vec::with_capacity(s.len() + 1);
        v.extend_from_slice(s.as_bytes());
        v.push(0);
        self.put(ty, &v)
    }

    pub fn be32(&mut self, ty: u16, v: u32) -> &mut Self {
        self.put(ty, &v.to_be_bytes())
    }

    pub fn be64(&mut self, ty: u16, v: u64) -> &mut Self {
        self.put(ty, &v.to_be_bytes())
    }

    /// A nest. No `NLA_F_NESTED` flag: nf_tables dumps its nests without it
    /// (`nla_nest_start_noflag`), and rules are matched against dumps byte for byte.
    pub fn nest(&mut self, ty: u16, inner: &Attrs) -> &mut Self {
        self.put(ty, &inner.buf)
    }
}

/// One parsed attribute: type (flags masked off) and payload.
#[derive(Debug, Clone, Copy)]
pub struct Attr<'a> {
    pub ty: u16,
    pub payload: &'a [u8],
}

/// Iterates over the attributes in `buf`; stops at the first malformed one.
pub fn attrs(buf: &[u8]) -> impl Iterator<Item = Attr<'_>> {
    let mut rest = buf;
    std::iter::from_fn(move || {
        if rest.len() < 4 {
            return None;
        }
        let len = usize::from(u16::from_ne_bytes([rest[0], rest[1]]));
        let ty = u16::from_ne_bytes([rest[2], rest[3]]) & 0x3fff;
        if len < 4 || len > rest.len() {
            return None;
        }
        let payload = &rest[4..len];
        let next = (len + 3) & !3;
        rest = rest.get(next..).unwrap_or(&[]);
        Some(Attr { ty, payload })
    })
}

/// The first attribute of type `ty` in `buf`.
pub fn attr(buf: &[u8], ty: u16) -> Option<&[u8]> {
    attrs(buf).find(|a| a.ty == ty).map(|a| a.payload)
}

pub fn be32_of(payload: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(payload.get(..4)?.try_into().ok()?))
}

pub fn be64_of(payload: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(payload.get(..8)?.try_into().ok()?))
}

/// A string attribute's text, without its NUL.
pub fn str_of(payload: &[u8]) -> &str {
    let end = payload
        .iter()
        .position(|b| *b == 0)
        .unwrap_or(payload.len());
    std::str::from_utf8(&payload[..end]).unwrap_or("")
}

/// One nf_tables message of a batch: its type, flags, family and attributes, and what to call
/// it in an error.
#[derive(Debug, Clone)]
pub struct Request {
    pub msg: u16,
    pub flags: u16,
    pub attrs: Attrs,
    pub what: String,
}

/// What a committed batch echoed.
#[derive(Debug, Clone, Default)]
pub struct Committed {
    /// The handle of each rule added with `NLM_F_ECHO`, in the order of the requests.
    pub rule_handles: Vec<u64>,
    /// The generation after the commit, when the kernel announced it.
    pub genid: Option<u32>,
    /// The last message was acknowledged.
    acked: bool,
    /// The first failure: errno and the request it answered.
    failure: Option<(i32, String)>,
}

/// A netlink socket on `NETLINK_NETFILTER`, opened in the calling thread's network namespace
/// and kept open: closing one after a commit that queued work for after an RCU grace period
/// (a chain policy change, any rule deletion) waits for that grace period in `close()`
/// (nf_tables' `NETLINK_URELEASE` handler flushes its destroy work), ~10-16 ms measured here.
/// iptables pays it in every process; a socket that stays open does not.
#[derive(Debug)]
pub struct Nfnl {
    sock: Socket,
    seq: u32,
    buf: Vec<u8>,
    limit: Option<usize>,
}

impl Nfnl {
    pub fn open() -> Result<Self, NlError> {
        let sock = Socket::new(
            Domain::from(AF_NETLINK),
            Type::from(SOCK_RAW),
            Some(Protocol::from(NETLINK_NETFILTER)),
        )?;
        // Dumps of a thousand rules run to a few hundred kilobytes.
        sock.set_recv_buffer_size(1 << 20)?;
        // A batch is one message: as large as the system allows (`net.core.wmem_max`;
        // larger batches go through iptables-restore, see `NlError::TooBig`).
        sock.set_send_buffer_size(4 << 20)?;
        Ok(Self {
            sock,
            seq: 0,
            buf: vec![0; 1 << 16],
            limit: None,
        })
    }

    /// The largest batch this socket can send: `netlink_sendmsg` refuses a message larger
    /// than the send buffer less 32 bytes; `limit` lowers it.
    pub fn max_batch_bytes(&self) -> Result<usize, NlError> {
        let buf = self.sock.send_buffer_size()?.saturating_sub(32);
        Ok(self.limit.map_or(buf, |l| l.min(buf)))
    }

    /// Sends batches larger than `bytes` nowhere ([`NlError::TooBig`]).
    pub fn set_batch_limit(&mut self, bytes: usize) {
        self.limit = Some(bytes);
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    fn header(out: &mut Vec<u8>, ty: u16, flags: u16, seq: u32, family: u8, res_id: u16) {
        out.extend_from_slice(&0u32.to_ne_bytes()); // length, patched below
        out.extend_from_slice(&ty.to_ne_bytes());
        out.extend_from_slice(&flags.to_ne_bytes());
        out.extend_from_slice(&seq.to_ne_bytes());
        out.extend_from_slice(&0u32.to_ne_bytes());
        out.push(family);
        out.push(0); // NFNETLINK_V0
        out.extend_from_slice(&res_id.to_be_bytes());
    }

    fn message(
        out: &mut Vec<u8>,
        ty: u16,
        flags: u16,
        seq: u32,
        family: u8,
        res_id: u16,
        a: &[u8],
    ) {
        let start = out.len();
        Self::header(out, ty, flags, seq, family, res_id);
        out.extend_from_slice(a);
        let len = u32::try_from(out.len() - start).unwrap_or(u32::MAX);
        out[start..start + 4].copy_from_slice(&len.to_ne_bytes());
    }

    fn recv(&mut self) -> Result<usize, NlError> {
        loop {
            match (&self.sock).read(&mut self.buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Sends `reqs` as one transaction (`BATCH_BEGIN` ... `BATCH_END`): all or nothing. With
    /// `genid`, the kernel refuses the batch with `ERESTART` when the ruleset changed since
    /// that generation (what positions and handles were read from). Returns what the kernel
    /// echoed: the handles of the rules added with `NLM_F_ECHO`, in order, and the new
    /// generation.
    pub fn batch(&mut self, reqs: &[Request], genid: Option<u32>) -> Result<Committed, NlError> {
        let mut done = Committed::default();
        if reqs.is_empty() {
            return Ok(done);
        }
        let mut out = Vec::with_capacity(256 * reqs.len());
        let begin_seq = self.next_seq();
        let mut begin = Attrs::new();
        if let Some(g) = genid {
            begin.be32(NFNL_BATCH_GENID, g);
        }
        Self::message(
            &mut out,
            NFNL_MSG_BATCH_BEGIN,
            NLM_F_REQUEST,
            begin_seq,
            NFPROTO_UNSPEC,
            NFNL_SUBSYS_NFTABLES,
            &begin.buf,
        );
        let first = self.seq.wrapping_add(1);
        for (i, r) in reqs.iter().enumerate() {
            let seq = self.next_seq();
            let ack = if i + 1 == reqs.len() { NLM_F_ACK } else { 0 };
            Self::message(
                &mut out,
                (NFNL_SUBSYS_NFTABLES << 8) | r.msg,
                NLM_F_REQUEST | ack | r.flags,
                seq,
                NFPROTO_IPV4,
                0,
                &r.attrs.buf,
            );
        }
        let end_seq = self.next_seq();
        Self::message(
            &mut out,
            NFNL_MSG_BATCH_END,
            NLM_F_REQUEST,
            end_seq,
            NFPROTO_UNSPEC,
            NFNL_SUBSYS_NFTABLES,
            &[],
        );
        if out.len() > self.max_batch_bytes()? {
            return Err(NlError::TooBig(out.len()));
        }
        self.sock.send(&out)?;
        // nfnetlink handles the whole batch inside that send (module loads and replays
        // included), so every answer is queued by now: read until the queue is empty rather
        // than count on answers that an abort may never send. Only the last message asks
        // for an ack (a positive answer); failures are reported whatever the flags, and acks
        // of every message would echo every request whole (hundreds of kilobytes for a big
        // batch, beyond the socket's buffer).
        self.sock.set_nonblocking(true)?;
        let answers = self.drain(|m| {
            if let Some(code) = m.error {
                let idx = m.seq.wrapping_sub(first) as usize;
                if idx + 1 == reqs.len() && code == 0 {
                    done.acked = true;
                } else if code != 0 && done.failure.is_none() {
                    let what = match reqs.get(idx) {
                        Some(r) => r.what.clone(),
                        // The batch as a whole (e.g. ERESTART on a stale generation).
                        None => "the batch".to_owned(),
                    };
                    done.failure = Some((-code, what));
                }
            } else if m.ty == (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWRULE {
                let handle = attr(m.attrs, NFTA_RULE_HANDLE).and_then(be64_of);
                done.rule_handles.push(handle.unwrap_or(0));
            } else if m.ty == (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWGEN {
                done.genid = attr(m.attrs, NFTA_GEN_ID).and_then(be32_of);
            }
        });
        self.sock.set_nonblocking(false)?;
        answers?;
        if let Some((errno, what)) = done.failure.take() {
            return Err(NlError::Kernel { errno, what });
        }
        if !done.acked {
            return Err(NlError::Malformed("no answer to the batch"));
        }
        Ok(done)
    }

    /// Reads every queued message (the socket is non-blocking) and hands each to `f`.
    fn drain(&mut self, mut f: impl FnMut(&Msg<'_>)) -> Result<(), NlError> {
        loop {
            let n = match self.recv() {
                Ok(n) => n,
                Err(NlError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            };
            for m in split(&self.buf[..n])? {
                f(&m);
            }
        }
    }

    /// The ruleset's generation id.
    pub fn genid(&mut self) -> Result<u32, NlError> {
        let seq = self.next_seq();
        let mut out = Vec::with_capacity(32);
        Self::message(
            &mut out,
            (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETGEN,
            NLM_F_REQUEST,
            seq,
            NFPROTO_UNSPEC,
            0,
            &[],
        );
        self.sock.send(&out)?;
        let replies = self.read_replies(seq, false)?;
        replies
            .iter()
            .find_map(|r| attr(r, NFTA_GEN_ID).and_then(be32_of))
            .ok_or(NlError::Malformed("no generation id"))
    }

    /// A dump request (`GETRULE`, `GETCHAIN`...) filtered by `attrs`; the replies.
    pub fn dump(&mut self, msg: u16, attrs: &Attrs) -> Result<Vec<Vec<u8>>, NlError> {
        let seq = self.next_seq();
        let mut out = Vec::with_capacity(64);
        Self::message(
            &mut out,
            (NFNL_SUBSYS_NFTABLES << 8) | msg,
            NLM_F_REQUEST | NLM_F_DUMP,
            seq,
            NFPROTO_IPV4,
            0,
            &attrs.buf,
        );
        self.sock.send(&out)?;
        self.read_replies(seq, true)
    }

    /// Reads the answers to `seq` until `NLMSG_DONE` (a dump) or the first answer.
    fn read_replies(&mut self, seq: u32, dump: bool) -> Result<Vec<Vec<u8>>, NlError> {
        let mut replies = Vec::new();
        loop {
            let n = self.recv()?;
            for m in split(&self.buf[..n])? {
                if m.seq != seq {
                    continue; // a late answer to something earlier
                }
                match (m.ty, m.error) {
                    (NLMSG_DONE, _) => return Ok(replies),
                    (_, Some(0)) => return Ok(replies),
                    (_, Some(code)) => {
                        return Err(NlError::Kernel {
                            errno: -code,
                            what: "a read".to_owned(),
                        });
                    }
                    _ => {
                        replies.push(m.attrs.to_vec());
                        if !dump {
                            return Ok(replies);
                        }
                    }
                }
            }
        }
    }
}

/// One message of a datagram.
#[derive(Debug)]
struct Msg<'a> {
    ty: u16,
    seq: u32,
    /// For `NLMSG_ERROR`: the error code (0 for an ack).
    error: Option<i32>,
    /// The attributes after `nfgenmsg` (empty for acks and `NLMSG_DONE`).
    attrs: &'a [u8],
}

/// Splits a received datagram into its messages.
fn split(buf: &[u8]) -> Result<Vec<Msg<'_>>, NlError> {
    let mut out = Vec::new();
    let mut off = 0;
    while off + NLMSG_HDRLEN <= buf.len() {
        let b = &buf[off..];
        let len = u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize;
        if len < NLMSG_HDRLEN || len > b.len() {
            return Err(NlError::Malformed("message length"));
        }
        let ty = u16::from_ne_bytes([b[4], b[5]]);
        let error = if ty == NLMSG_ERROR {
            let c = b.get(16..20).ok_or(NlError::Malformed("short error"))?;
            Some(i32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
        } else {
            None
        };
        let has_body = error.is_none() && ty != NLMSG_DONE && len >= NLMSG_HDRLEN + NFGENMSG_LEN;
        out.push(Msg {
            ty,
            seq: u32::from_ne_bytes([b[8], b[9], b[10], b[11]]),
            error,
            attrs: if has_body {
                &b[NLMSG_HDRLEN + NFGENMSG_LEN..len]
            } else {
                &[]
            },
        });
        off += (len + 3) & !3;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_padded_and_parse_back() {
        let mut a = Attrs::new();
        a.str(1, "filter").be32(2, 7).put(3, &[1, 2, 3, 4, 5]);
        assert_eq!(a.buf.len(), (4 + 8) + (4 + 4) + (4 + 8));
        let v: Vec<_> = attrs(&a.buf).collect();
        assert_eq!(v.len(), 3);
        assert_eq!(str_of(v[0].payload), "filter");
        assert_eq!(be32_of(v[1].payload), Some(7));
        assert_eq!(v[2].payload, &[1, 2, 3, 4, 5]);
        assert_eq!(attr(&a.buf, 2).and_then(be32_of), Some(7));
    }

    #[test]
    fn a_datagram_splits_into_its_messages() {
        let mut buf = Vec::new();
        let mut a = Attrs::new();
        a.be64(NFTA_RULE_HANDLE, 42);
        Nfnl::message(
            &mut buf,
            (10 << 8) | NFT_MSG_NEWRULE,
            0,
            7,
            NFPROTO_IPV4,
            3,
            &a.buf,
        );
        // An ack: NLMSG_ERROR with code 0, then the echoed request header.
        let start = buf.len();
        Nfnl::message(&mut buf, NLMSG_ERROR, 0, 8, 0, 0, &[0; 16]);
        buf[start + 16..start + 20].copy_from_slice(&(-17i32).to_ne_bytes());
        let m = split(&buf).expect("splits");
        assert_eq!(m.len(), 2);
        assert_eq!((m[0].seq, m[0].error), (7, None));
        assert_eq!(
            attr(m[0].attrs, NFTA_RULE_HANDLE).and_then(be64_of),
            Some(42)
        );
        assert_eq!((m[1].seq, m[1].error), (8, Some(-17)));
        let mut bad = buf.clone();
        bad[0] = 200; // longer than the datagram
        assert!(split(&bad).is_err());
    }

    #[test]
    fn a_truncated_attribute_stops_the_walk() {
        let mut a = Attrs::new();
        a.be32(1, 1);
        let mut buf = a.buf.clone();
        buf.extend_from_slice(&[40, 0, 2, 0, 9]); // claims 40 bytes, has 5
        assert_eq!(attrs(&buf).count(), 1);
    }
}
