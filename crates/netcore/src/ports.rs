//! Host ports for published container ports (Docker's `portallocator`).
//!
//! A [`PortAllocator`] keeps, per host IP and per [`Proto`], which ports are taken. A request
//! names a port explicitly, or asks for 0 and gets a *dynamic* port from
//! [`BEGIN_PORT_RANGE`]`..=`[`END_PORT_RANGE`]. Decisions, each with the Docker version that
//! forced it:
//!
//! - **Dynamic ports are next-fit with wrap-around** from the last dynamic port given on that
//!   IP and protocol (Docker 1.x `findPort`). Explicit requests do not move the cursor, as in 1.x.
//! - **The first dynamic request checks 49153 too.** Docker 1.2/1.3 returned 49153 on the first
//!   dynamic request without checking whether it was already taken (`last == 0` special case),
//!   so an explicit `-p 49153:..` followed by `-p ..` handed out 49153 twice. Docker 1.5 fixed it
//!   by initialising `last = EndPortRange`, so the first search starts at `BeginPortRange` like
//!   every other; we do the same.
//! - **The wildcard conflicts with every specific IP.** A deliberate improvement over 1.x,
//!   where host IPs were independent, so `0.0.0.0:80` and `127.0.0.1:80` could both be
//!   allocated. Both would then need the same kernel socket (`bind` of 0.0.0.0:80 fails with
//!   EADDRINUSE once 127.0.0.1:80 is bound, and vice versa) and their DNAT rules (`-d 0/0` and
//!   `-d 127.0.0.1 --dport 80`) overlap, so the second mapping could only fail later, half set
//!   up, or silently steal the other's traffic. So an explicit request on `0.0.0.0` fails if the
//!   port is taken on *any* IP of that protocol, one on a specific IP fails if the wildcard holds
//!   it, and dynamic searches skip those ports likewise. Different specific IPs stay independent
//!   (upstream `TestPortAllocation`), as do different protocols.
//!
//! Each (IP, protocol) holds a bitmap of all 65536 ports (1024 `u64` words), so explicit ports
//! outside the dynamic range are tracked too. For the wildcard rule each protocol also keeps
//! the union of the specific IPs' bitmaps (with a count for ports held by several IPs), so a
//! check or a dynamic search on the wildcard reads two bitmaps, never one per IP.

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A transport protocol a port can be published for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// SCTP (modern Docker; 1.x knew only tcp and udp).
    Sctp,
}

impl Proto {
    /// Every protocol, in the order of the allocator's tables.
    pub const ALL: [Proto; 3] = [Proto::Tcp, Proto::Udp, Proto::Sctp];

    /// The protocol's lower-case name, as Docker and iptables spell it.
    pub fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Sctp => "sctp",
        }
    }

    fn index(self) -> usize {
        match self {
            Proto::Tcp => 0,
            Proto::Udp => 1,
            Proto::Sctp => 2,
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Docker's `ErrUnknownProtocol`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown protocol {0:?}")]
pub struct UnknownProtocol(pub String);

impl FromStr for Proto {
    type Err = UnknownProtocol;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "tcp" => Ok(Proto::Tcp),
            "udp" => Ok(Proto::Udp),
            "sctp" => Ok(Proto::Sctp),
            other => Err(UnknownProtocol(other.to_owned())),
        }
    }
}

/// The first port handed out dynamically (Docker's `BeginPortRange`).
pub const BEGIN_PORT_RANGE: u16 = 49153;
/// The last port handed out dynamically (Docker's `EndPortRange`).
pub const END_PORT_RANGE: u16 = 65535;

/// Why a port could not be allocated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortError {
    /// Docker's `ErrPortAlreadyAllocated`, verbatim: the explicit port is taken on this IP, or
    /// (wildcard rule) on the wildcard / on a specific IP.
    #[error("Bind for {ip}:{port} failed: port is already allocated")]
    AlreadyAllocated {
        /// The requested host IP.
        ip: Ipv4Addr,
        /// The requested port.
        port: u16,
        /// The protocol.
        proto: Proto,
        /// The host IP that holds the port: `ip` itself, the wildcard, or (for a wildcard
        /// request) a specific IP.
        held_by: Ipv4Addr,
    },
    /// Docker's `ErrAllPortsAllocated`: no dynamic port is free for this IP and protocol.
    #[error(
        "all ports are allocated: no free {proto} port in {BEGIN_PORT_RANGE}-{END_PORT_RANGE} on {ip}"
    )]
    AllPortsAllocated {
        /// The requested host IP.
        ip: Ipv4Addr,
        /// The protocol.
        proto: Proto,
    },
}

/// Why a saved port state was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortStateError {
    /// Two saved ports collide (the same port twice, or a wildcard/specific clash).
    #[error("saved port state is inconsistent: {0}")]
    Conflict(#[from] PortError),
    /// Port 0 is "dynamic", never an allocation.
    #[error("saved port state lists port 0 for {ip}/{proto}")]
    ZeroPort {
        /// The host IP.
        ip: Ipv4Addr,
        /// The protocol.
        proto: Proto,
    },
    /// The dynamic cursor lies outside the dynamic range.
    #[error(
        "saved port state has last dynamic port {last} for {ip}/{proto}, outside {BEGIN_PORT_RANGE}-{END_PORT_RANGE}"
    )]
    LastOutOfRange {
        /// The host IP.
        ip: Ipv4Addr,
        /// The protocol.
        proto: Proto,
        /// The saved cursor.
        last: u16,
    },
    /// The same (IP, protocol) appears twice.
    #[error("saved port state lists {ip}/{proto} twice")]
    Duplicate {
        /// The host IP.
        ip: Ipv4Addr,
        /// The protocol.
        proto: Proto,
    },
}

/// `u64` words covering every port 0..=65535.
const WORDS: usize = 65536 / 64;

/// A set of ports, as a bitmap over 0..=65535.
#[derive(Clone, PartialEq, Eq)]
struct PortBits(Box<[u64]>);

impl PortBits {
    fn new() -> Self {
        PortBits(vec![0u64; WORDS].into_boxed_slice())
    }

    fn get(&self, port: u16) -> bool {
        self.0[usize::from(port / 64)] >> (port % 64) & 1 == 1
    }

    /// Sets `port`; false if it was set already.
    fn set(&mut self, port: u16) -> bool {
        let w = &mut self.0[usize::from(port / 64)];
        let bit = 1u64 << (port % 64);
        let was_clear = *w & bit == 0;
        *w |= bit;
        was_clear
    }

    /// Clears `port`; false if it was not set.
    fn clear(&mut self, port: u16) -> bool {
        let w = &mut self.0[usize::from(port / 64)];
        let bit = 1u64 << (port % 64);
        let was_set = *w & bit != 0;
        *w &= !bit;
        was_set
    }

    fn word(&self, i: usize) -> u64 {
        self.0[i]
    }

    fn iter(&self) -> impl Iterator<Item = u16> + '_ {
        self.0.iter().enumerate().flat_map(|(wi, &word)| {
            let mut word = word;
            std::iter::from_fn(move || {
                if word == 0 {
                    return None;
                }
                let tz = word.trailing_zeros();
                word &= word - 1;
                // wi < 1024 and tz < 64: the port fits in u16.
                Some((wi as u32 * 64 + tz) as u16)
            })
        })
    }
}

/// First port in `lo..=hi` whose bit is clear in `taken(word index)`.
fn find_free(lo: u16, hi: u16, taken: impl Fn(usize) -> u64) -> Option<u16> {
    let hi = u32::from(hi);
    let mut p = u32::from(lo);
    while p <= hi {
        let wi = (p / 64) as usize;
        // Treat the bits below `p` in this word as taken.
        let word = taken(wi) | ((1u64 << (p % 64)) - 1);
        if word != u64::MAX {
            let found = wi as u32 * 64 + (!word).trailing_zeros();
            return (found <= hi).then_some(found as u16);
        }
        p = (wi as u32 + 1) * 64;
    }
    None
}

/// The ports one host IP holds for one protocol.
#[derive(Clone, PartialEq, Eq)]
struct PortTable {
    bits: PortBits,
    /// The last dynamic port handed out, always in the dynamic range; starts at
    /// `END_PORT_RANGE` (the 1.5 fix) so the first search starts at `BEGIN_PORT_RANGE`.
    last: u16,
    count: u32,
}

impl PortTable {
    fn new() -> Self {
        PortTable {
            bits: PortBits::new(),
            last: END_PORT_RANGE,
            count: 0,
        }
    }
}

/// Everything one protocol holds.
#[derive(Clone, PartialEq, Eq)]
struct ProtoTables {
    by_ip: BTreeMap<Ipv4Addr, PortTable>,
    /// Bit set iff at least one specific (non-wildcard) IP holds the port.
    specific_union: PortBits,
    /// For ports held by several specific IPs: how many *beyond the first*. Absent means one
    /// (when the union bit is set) or none.
    specific_extra: BTreeMap<u16, u32>,
}

impl ProtoTables {
    fn new() -> Self {
        ProtoTables {
            by_ip: BTreeMap::new(),
            specific_union: PortBits::new(),
            specific_extra: BTreeMap::new(),
        }
    }

    fn held_on(&self, ip: Ipv4Addr, port: u16) -> bool {
        self.by_ip.get(&ip).is_some_and(|t| t.bits.get(port))
    }

    /// Which IP blocks `port` for a request on `ip`, under the wildcard rule.
    fn holder(&self, ip: Ipv4Addr, port: u16) -> Option<Ipv4Addr> {
        if self.held_on(ip, port) {
            return Some(ip);
        }
        if ip.is_unspecified() {
            if self.specific_union.get(port) {
                // Error path only: find one holder to name.
                return self
                    .by_ip
                    .iter()
                    .find(|(_, t)| t.bits.get(port))
                    .map(|(&holder, _)| holder);
            }
        } else if self.held_on(Ipv4Addr::UNSPECIFIED, port) {
            return Some(Ipv4Addr::UNSPECIFIED);
        }
        None
    }

    /// Marks `port` on `ip`, which must be free under the wildcard rule.
    fn take(&mut self, ip: Ipv4Addr, port: u16) {
        let table = self.by_ip.entry(ip).or_insert_with(PortTable::new);
        if table.bits.set(port) {
            table.count += 1;
            if !ip.is_unspecified() && !self.specific_union.set(port) {
                *self.specific_extra.entry(port).or_insert(0) += 1;
            }
        }
    }

    /// The next free dynamic port for `ip`, next-fit from its cursor.
    fn find_dynamic(&self, ip: Ipv4Addr) -> Option<u16> {
        let own = self.by_ip.get(&ip);
        let last = own.map_or(END_PORT_RANGE, |t| t.last);
        let other = if ip.is_unspecified() {
            Some(&self.specific_union)
        } else {
            self.by_ip.get(&Ipv4Addr::UNSPECIFIED).map(|t| &t.bits)
        };
        let taken =
            |wi: usize| own.map_or(0, |t| t.bits.word(wi)) | other.map_or(0, |b| b.word(wi));
        // Scan (last, END], then wrap to [BEGIN, last]: `last` itself is checked too (it may
        // have been released), so a dynamic request fails only when no port of the range is
        // free for this IP.
        let after = if last == END_PORT_RANGE {
            None
        } else {
            find_free(last + 1, END_PORT_RANGE, taken)
        };
        after.or_else(|| find_free(BEGIN_PORT_RANGE, last, taken))
    }
}

/// The host-port allocator: per host IP (`0.0.0.0` is the wildcard) and per protocol.
///
/// Serialises to `{tables: [{ip, proto, last, ports: [..]}, ..]}`; deserialising rebuilds and
/// re-validates it (no port 0, no duplicates, no wildcard clash, cursors in range).
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "PortAllocatorState")]
pub struct PortAllocator {
    protos: [ProtoTables; 3],
}

/// The serialised form of a [`PortAllocator`].
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PortAllocatorState {
    tables: Vec<PortTableState>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PortTableState {
    ip: Ipv4Addr,
    proto: Proto,
    last: u16,
    ports: Vec<u16>,
}

impl Default for PortAllocator {
    fn default() -> Self {
        Self::new()
    }
}

impl PortAllocator {
    /// An allocator with nothing taken.
    pub fn new() -> Self {
        PortAllocator {
            protos: [ProtoTables::new(), ProtoTables::new(), ProtoTables::new()],
        }
    }

    /// Takes `port` on `ip` for `proto`, or a dynamic port when `port` is 0.
    ///
    /// # Errors
    /// [`PortError::AlreadyAllocated`] when an explicit port is taken on `ip`, or on the
    /// wildcard (for a specific `ip`), or on any IP (for the wildcard `ip`);
    /// [`PortError::AllPortsAllocated`] when no dynamic port is free for `ip`.
    pub fn request(&mut self, ip: Ipv4Addr, proto: Proto, port: u16) -> Result<u16, PortError> {
        let tables = &mut self.protos[proto.index()];
        if port != 0 {
            if let Some(held_by) = tables.holder(ip, port) {
                return Err(PortError::AlreadyAllocated {
                    ip,
                    port,
                    proto,
                    held_by,
                });
            }
            tables.take(ip, port);
            tracing::trace!(%ip, %proto, port, "port allocated");
            return Ok(port);
        }
        let Some(port) = tables.find_dynamic(ip) else {
            tracing::debug!(%ip, %proto, "no free dynamic port");
            return Err(PortError::AllPortsAllocated { ip, proto });
        };
        tables.take(ip, port);
        if let Some(t) = tables.by_ip.get_mut(&ip) {
            t.last = port;
        }
        tracing::trace!(%ip, %proto, port, "dynamic port allocated");
        Ok(port)
    }

    /// Gives `port` on `ip` back. Returns true if it was taken there; otherwise nothing
    /// changes (Docker's `ReleasePort` never fails). The dynamic cursor is not moved.
    pub fn release(&mut self, ip: Ipv4Addr, proto: Proto, port: u16) -> bool {
        let tables = &mut self.protos[proto.index()];
        let Some(table) = tables.by_ip.get_mut(&ip) else {
            return false;
        };
        if port == 0 || !table.bits.clear(port) {
            return false;
        }
        table.count -= 1;
        if !ip.is_unspecified() {
            match tables.specific_extra.get_mut(&port) {
                Some(n) if *n > 1 => *n -= 1,
                Some(_) => {
                    tables.specific_extra.remove(&port);
                }
                None => {
                    tables.specific_union.clear(port);
                }
            }
        }
        tracing::trace!(%ip, %proto, port, "port released");
        true
    }

    /// Forgets every allocation and every dynamic cursor (Docker's `ReleaseAll`).
    pub fn release_all(&mut self) {
        *self = PortAllocator::new();
    }

    /// Whether `port` is taken on exactly `ip` for `proto`.
    pub fn is_allocated(&self, ip: Ipv4Addr, proto: Proto, port: u16) -> bool {
        self.protos[proto.index()].held_on(ip, port)
    }

    /// Which host IP would block a request for `port` on `ip` (see [`PortError::AlreadyAllocated`]),
    /// or `None` when the port is free for it.
    pub fn conflict(&self, ip: Ipv4Addr, proto: Proto, port: u16) -> Option<Ipv4Addr> {
        if port == 0 {
            return None;
        }
        self.protos[proto.index()].holder(ip, port)
    }

    /// How many ports `ip` holds for `proto`.
    pub fn allocated_count(&self, ip: Ipv4Addr, proto: Proto) -> u32 {
        self.protos[proto.index()]
            .by_ip
            .get(&ip)
            .map_or(0, |t| t.count)
    }

    /// The ports `ip` holds for `proto`, ascending.
    pub fn ports(&self, ip: Ipv4Addr, proto: Proto) -> impl Iterator<Item = u16> + '_ {
        self.protos[proto.index()]
            .by_ip
            .get(&ip)
            .into_iter()
            .flat_map(|t| t.bits.iter())
    }

    /// Every allocation as (IP, protocol, port), by protocol, then IP, then port.
    pub fn iter(&self) -> impl Iterator<Item = (Ipv4Addr, Proto, u16)> + '_ {
        Proto::ALL.into_iter().flat_map(move |proto| {
            self.protos[proto.index()]
                .by_ip
                .iter()
                .flat_map(move |(&ip, t)| t.bits.iter().map(move |port| (ip, proto, port)))
        })
    }
}

impl fmt::Debug for PortAllocator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The bitmaps are 1024 words each: show counts and cursors.
        let mut m = f.debug_map();
        for proto in Proto::ALL {
            for (ip, t) in &self.protos[proto.index()].by_ip {
                m.entry(
                    &format_args!("{ip}/{proto}"),
                    &format_args!("{} ports, last dynamic {}", t.count, t.last),
                );
            }
        }
        m.finish()
    }
}

impl Serialize for PortAllocator {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut tables = Vec::new();
        for proto in Proto::ALL {
            for (&ip, t) in &self.protos[proto.index()].by_ip {
                tables.push(PortTableState {
                    ip,
                    proto,
                    last: t.last,
                    ports: t.bits.iter().collect(),
                });
            }
        }
        PortAllocatorState { tables }.serialize(s)
    }
}

impl TryFrom<PortAllocatorState> for PortAllocator {
    type Error = PortStateError;
    fn try_from(state: PortAllocatorState) -> Result<Self, PortStateError> {
        let mut a = PortAllocator::new();
        for t in state.tables {
            let (ip, proto) = (t.ip, t.proto);
            let tables = &mut a.protos[proto.index()];
            if tables.by_ip.contains_key(&ip) {
                return Err(PortStateError::Duplicate { ip, proto });
            }
            if !(BEGIN_PORT_RANGE..=END_PORT_RANGE).contains(&t.last) {
                return Err(PortStateError::LastOutOfRange {
                    ip,
                    proto,
                    last: t.last,
                });
            }
            // An IP that held ports once keeps its table (and cursor) even when empty.
            tables.by_ip.insert(ip, PortTable::new());
            for port in t.ports {
                if port == 0 {
                    return Err(PortStateError::ZeroPort { ip, proto });
                }
                a.request(ip, proto, port)?;
            }
            if let Some(table) = a.protos[proto.index()].by_ip.get_mut(&ip) {
                table.last = t.last;
            }
        }
        Ok(a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn find_free_respects_bounds_and_word_edges() {
        let mut b = PortBits::new();
        for p in 60..=130 {
            b.set(p);
        }
        let taken = |wi: usize| b.word(wi);
        assert_eq!(find_free(60, 200, taken), Some(131));
        assert_eq!(find_free(60, 130, taken), None);
        assert_eq!(find_free(0, 200, taken), Some(0));
        assert_eq!(find_free(65535, 65535, taken), Some(65535));
        b.set(65535);
        assert_eq!(find_free(65535, 65535, |wi| b.word(wi)), None);
    }

    #[test]
    fn union_counts_ports_held_by_several_specific_ips() {
        let mut a = PortAllocator::new();
        let ips = [Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2)];
        for ip in ips {
            assert_eq!(a.request(ip, Proto::Tcp, 80), Ok(80));
        }
        let t = &a.protos[0];
        assert!(t.specific_union.get(80));
        assert_eq!(t.specific_extra.get(&80), Some(&1));
        assert!(a.release(ips[0], Proto::Tcp, 80));
        assert!(a.protos[0].specific_union.get(80), "still held by one IP");
        assert!(a.protos[0].specific_extra.is_empty());
        assert!(a.release(ips[1], Proto::Tcp, 80));
        assert!(!a.protos[0].specific_union.get(80));
    }
}
