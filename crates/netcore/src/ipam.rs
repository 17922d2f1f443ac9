//! Which IPv4 address a container gets on the bridge network (Docker's `ipallocator`).
//!
//! One [`IpAllocator`] serves one bridge. Its *pool* is `--fixed-cidr` when given, else the
//! bridge's whole network. Decisions, each with the Docker version that forced it:
//!
//! - **Never hand out the network address, the broadcast address or the bridge's own IP.**
//!   Docker 1.3/1.4 used the range `[network + 2, broadcast - 1]` and did *not* reserve the
//!   bridge IP, so with `--bip 172.17.42.1/16` a container eventually got `172.17.42.1`
//!   (moby/moby#9938). Docker 1.5 fixed it (commit f4551b8a48, "Remove BridgeIP from
//!   ipallocation pool"): the range became `[network + 1, broadcast - 1]` and the bridge IP is
//!   reserved. We do what the fix does. The network and broadcast addresses of the pool are
//!   excluded too (1.3's `RegisterSubnet` range is `[subnet first + 1, subnet last - 1]`), and
//!   since the pool lies inside the bridge network, so are the bridge network's.
//! - **A fixed-cidr must lie inside the bridge network**, else Docker's
//!   `network does not contain specified subnet`. One that *starts at the bridge network
//!   address* (bridge `172.17.0.1/16`, fixed-cidr `172.17.0.0/24`) is accepted: 1.3 rejected it
//!   because its containment check compared `[subnet + 1, ...]` against `[network + 2, ...]`
//!   (the "nested +1" quirk, moby/moby#10382); modern Docker (libnetwork's sub-pool) accepts it.
//!   The address `172.17.0.0` is simply never handed out.
//! - **Next-fit with wrap-around** (1.3's `getNextIP`): a dynamic request takes the first free
//!   address *after* the last one handed out, wrapping to the start of the pool. Releasing `.9`
//!   and requesting again gives `.10`, not `.9` (upstream `TestRequestNewIps`); this spreads
//!   reuse of a released address out in time, so a stale ARP entry or connection aimed at a dead
//!   container is less likely to reach its successor. A specific request that succeeds also
//!   moves `last` (1.3's `checkIP`).
//! - **Specific requests are range-checked** (1.3; 1.2 accepted any address, even outside the
//!   network, which its `TestRequesetSpecificIp` asserted).
//!
//! The state is a bitmap of `u64` words, in lazily allocated chunks of 2^16 addresses, each
//! chunk with a count of its set bits. A request is O(1) when the pool is exhausted (the
//! allocation count says so) and otherwise a scan for the next zero bit from `last`, skipping
//! full chunks by their count. A chunk whose count drops to zero is freed, so the representation
//! is canonical (derived equality is equality of allocations) and a huge, mostly empty pool
//! (a `/8`) costs little memory.

use std::fmt;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

/// Why an address could not be handed out, or an allocator not built.
///
/// Each text keeps Docker's phrase (`ip already allocated`, `requested ip is out of range`,
/// `no available ip addresses on network`, `network does not contain specified subnet`) and
/// names the values involved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpamError {
    /// Docker's `ErrIPAlreadyAllocated`: the requested address is in use.
    #[error("ip {ip} already allocated")]
    AlreadyAllocated {
        /// The requested address.
        ip: Ipv4Addr,
    },
    /// The requested address is the bridge's own IP, which is never handed out
    /// (moby/moby#9938, fixed in Docker 1.5). Docker 1.5 reserved it by allocating it, so its
    /// answer was `ip already allocated`; we keep that phrase.
    #[error("ip {ip} already allocated: it is the bridge's own address")]
    BridgeAddress {
        /// The requested address (the bridge IP).
        ip: Ipv4Addr,
    },
    /// Docker's `ErrIPOutOfRange`: the requested address is outside the assignable range
    /// (which excludes the pool's network and broadcast addresses).
    #[error("requested ip {ip} is out of range {range}")]
    OutOfRange {
        /// The requested address.
        ip: Ipv4Addr,
        /// The addresses that can be handed out.
        range: AddrRange,
    },
    /// Docker's `ErrNoAvailableIPs`: every assignable address is in use.
    #[error("no available ip addresses on network {pool}")]
    NoAvailable {
        /// The pool: the fixed-cidr if given, else the bridge network.
        pool: Ipv4Net,
    },
    /// Docker's `ErrBadSubnet`: the fixed-cidr is not inside the bridge network.
    #[error("network {network} does not contain specified subnet {subnet}")]
    BadSubnet {
        /// The bridge network (masked).
        network: Ipv4Net,
        /// The fixed-cidr (masked).
        subnet: Ipv4Net,
    },
}

/// An inclusive range of IPv4 addresses, possibly empty; used to name a range in errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AddrRange {
    /// The first and the last address, or `None` when the range is empty.
    pub bounds: Option<(Ipv4Addr, Ipv4Addr)>,
}

impl fmt::Display for AddrRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.bounds {
            Some((first, last)) => write!(f, "{first}-{last}"),
            None => f.write_str("(empty: the pool has no host addresses)"),
        }
    }
}

/// Addresses per bitmap chunk.
const CHUNK_BITS: u32 = 1 << 16;
/// `u64` words per bitmap chunk.
const CHUNK_WORDS: usize = (CHUNK_BITS / 64) as usize;

/// 2^16 bits of the bitmap; `words` is `None` exactly when `set == 0`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Chunk {
    set: u32,
    words: Option<Box<[u64]>>,
}

/// A bitmap over positions `0..len`, chunked so that empty regions cost no memory.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Bitmap {
    len: u32,
    chunks: Vec<Chunk>,
}

impl Bitmap {
    fn new(len: u32) -> Self {
        let n = len.div_ceil(CHUNK_BITS) as usize;
        Bitmap {
            len,
            chunks: vec![Chunk::default(); n],
        }
    }

    /// How many positions chunk `c` covers (the last one may be partial).
    fn chunk_capacity(&self, c: usize) -> u32 {
        let base = c as u64 * u64::from(CHUNK_BITS);
        (u64::from(self.len) - base).min(u64::from(CHUNK_BITS)) as u32
    }

    fn get(&self, pos: u32) -> bool {
        let c = (pos / CHUNK_BITS) as usize;
        let i = pos % CHUNK_BITS;
        match self.chunks.get(c).and_then(|ch| ch.words.as_ref()) {
            Some(w) => w[(i / 64) as usize] >> (i % 64) & 1 == 1,
            None => false,
        }
    }

    /// Sets `pos`; false if it was already set (or out of bounds).
    fn set(&mut self, pos: u32) -> bool {
        if pos >= self.len {
            return false;
        }
        let c = (pos / CHUNK_BITS) as usize;
        let i = pos % CHUNK_BITS;
        let Some(chunk) = self.chunks.get_mut(c) else {
            return false;
        };
        let words = chunk
            .words
            .get_or_insert_with(|| vec![0u64; CHUNK_WORDS].into_boxed_slice());
        let w = &mut words[(i / 64) as usize];
        let bit = 1u64 << (i % 64);
        if *w & bit != 0 {
            return false;
        }
        *w |= bit;
        chunk.set += 1;
        true
    }

    /// Clears `pos`; false if it was not set.
    fn clear(&mut self, pos: u32) -> bool {
        let c = (pos / CHUNK_BITS) as usize;
        let i = pos % CHUNK_BITS;
        let Some(chunk) = self.chunks.get_mut(c) else {
            return false;
        };
        let Some(words) = chunk.words.as_mut() else {
            return false;
        };
        let w = &mut words[(i / 64) as usize];
        let bit = 1u64 << (i % 64);
        if *w & bit == 0 {
            return false;
        }
        *w &= !bit;
        chunk.set -= 1;
        if chunk.set == 0 {
            // Keep the representation canonical (and give the memory back).
            chunk.words = None;
        }
        true
    }

    /// The first clear position in `lo..hi`.
    fn find_zero_in(&self, lo: u32, hi: u32) -> Option<u32> {
        let hi = hi.min(self.len);
        let mut p = lo;
        while p < hi {
            let c = (p / CHUNK_BITS) as usize;
            let base = c as u32 * CHUNK_BITS;
            let chunk = self.chunks.get(c)?;
            // A full chunk is skipped by its count, without reading its words.
            if chunk.set < self.chunk_capacity(c) {
                let Some(words) = &chunk.words else {
                    return Some(p);
                };
                let chunk_end = (hi - base).min(CHUNK_BITS);
                let mut i = p - base;
                while i < chunk_end {
                    let wi = (i / 64) as usize;
                    // Treat the bits below `i` in this word as taken.
                    let word = words[wi] | ((1u64 << (i % 64)) - 1);
                    if word != u64::MAX {
                        let found = wi as u32 * 64 + (!word).trailing_zeros();
                        return (found < chunk_end).then_some(base + found);
                    }
                    i = (wi as u32 + 1) * 64;
                }
            }
            // The last chunk of a /0 ends at 2^32.
            p = base.checked_add(CHUNK_BITS)?;
        }
        None
    }

    /// Set positions in ascending order.
    fn iter_set(&self) -> impl Iterator<Item = u32> + '_ {
        self.chunks.iter().enumerate().flat_map(|(c, chunk)| {
            let base = c as u32 * CHUNK_BITS;
            chunk
                .words
                .iter()
                .flat_map(|w| w.iter().enumerate())
                .flat_map(move |(wi, &word)| SetBits {
                    word,
                    base: base + wi as u32 * 64,
                })
        })
    }
}

/// The set bits of one word, as positions.
struct SetBits {
    word: u64,
    base: u32,
}

impl Iterator for SetBits {
    type Item = u32;
    fn next(&mut self) -> Option<u32> {
        if self.word == 0 {
            return None;
        }
        let tz = self.word.trailing_zeros();
        self.word &= self.word - 1;
        Some(self.base + tz)
    }
}

/// The address allocator of one bridge network.
///
/// Serialises to `{bridge, fixed_cidr, last, allocated: [..]}` (addresses as strings);
/// deserialising rebuilds and re-validates it, so a tampered or stale state file is refused
/// with the same errors a request would get.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "IpAllocatorState")]
pub struct IpAllocator {
    /// The bridge's address with its prefix, as given (e.g. `172.17.42.1/16`).
    bridge: Ipv4Net,
    /// The fixed-cidr, masked.
    fixed_cidr: Option<Ipv4Net>,
    /// The first assignable address, as an integer; position 0 of the bitmap.
    begin: u32,
    /// Assignable positions: the addresses `begin .. begin + bits.len`. The bridge IP's bit is
    /// set when it falls in this range (it is reserved, not allocated).
    bits: Bitmap,
    /// Position of the bridge IP in the bitmap, when inside the range.
    gateway_pos: Option<u32>,
    /// Position of the last address handed out; starts at the end of the range so that the
    /// first dynamic request returns the first address.
    last: u32,
    /// Addresses handed out (the reserved bridge IP excluded).
    allocated: u32,
}

/// The serialised form of an [`IpAllocator`].
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct IpAllocatorState {
    bridge: Ipv4Net,
    fixed_cidr: Option<Ipv4Net>,
    /// The last address handed out (the next-fit cursor); `None` for an empty range.
    last: Option<Ipv4Addr>,
    allocated: Vec<Ipv4Addr>,
}

impl IpAllocator {
    /// An allocator for the bridge whose address and prefix are `bridge`
    /// (e.g. `172.17.42.1/16`), handing out addresses from `fixed_cidr` if given, else from the
    /// bridge network.
    ///
    /// The network and broadcast addresses (of the bridge network and of the fixed-cidr) and the
    /// bridge's own IP are never handed out. A `/31` or `/32` pool is accepted but has no
    /// assignable address, so every request fails with [`IpamError::NoAvailable`].
    ///
    /// # Errors
    /// [`IpamError::BadSubnet`] when `fixed_cidr` is not inside the bridge network.
    pub fn new(bridge: Ipv4Net, fixed_cidr: Option<Ipv4Net>) -> Result<Self, IpamError> {
        let network = bridge.trunc();
        let fixed_cidr = fixed_cidr.map(|f| f.trunc());
        let pool = match fixed_cidr {
            Some(sub) => {
                let inside =
                    sub.prefix_len() >= network.prefix_len() && network.contains(&sub.network());
                if !inside {
                    return Err(IpamError::BadSubnet {
                        network,
                        subnet: sub,
                    });
                }
                sub
            }
            None => network,
        };
        // [pool network + 1, pool broadcast - 1], in u64 so that /32 at the ends of the address
        // space does not overflow.
        let first = u64::from(pool.network().to_bits()) + 1;
        let end_exclusive = u64::from(pool.broadcast().to_bits());
        let len = end_exclusive.saturating_sub(first) as u32;
        let begin = if len == 0 {
            pool.network().to_bits()
        } else {
            first as u32
        };
        let mut bits = Bitmap::new(len);
        let gw = bridge.addr().to_bits();
        let gateway_pos = gw
            .checked_sub(begin)
            .filter(|&p| len > 0 && p < len)
            .inspect(|&p| {
                bits.set(p);
            });
        Ok(IpAllocator {
            bridge,
            fixed_cidr,
            begin,
            bits,
            gateway_pos,
            last: len.saturating_sub(1),
            allocated: 0,
        })
    }

    /// Hands out `requested` if given (it must be free and assignable), else the next free
    /// address after the last one handed out, wrapping around (next-fit, as Docker 1.3).
    /// Either way the address becomes the new `last`.
    ///
    /// # Errors
    /// [`IpamError::AlreadyAllocated`], [`IpamError::BridgeAddress`] or
    /// [`IpamError::OutOfRange`] for a requested address; [`IpamError::NoAvailable`] when a
    /// dynamic request finds the pool full.
    pub fn request(&mut self, requested: Option<Ipv4Addr>) -> Result<Ipv4Addr, IpamError> {
        let pos = match requested {
            Some(ip) => {
                let pos = self.position(ip).ok_or(IpamError::OutOfRange {
                    ip,
                    range: self.range(),
                })?;
                if Some(pos) == self.gateway_pos {
                    return Err(IpamError::BridgeAddress { ip });
                }
                if !self.bits.set(pos) {
                    return Err(IpamError::AlreadyAllocated { ip });
                }
                pos
            }
            None => {
                let pool = self.pool();
                let no_available = || IpamError::NoAvailable { pool };
                // O(1) exhaustion check: no scan of a full table.
                if self.allocated >= self.capacity() {
                    tracing::debug!(%pool, "no free address");
                    return Err(no_available());
                }
                let len = self.bits.len;
                // Search (last, end], then wrap to [begin, last]. 1.3's loop stopped *before*
                // `last`, so a released `last` that was the only free address was never found;
                // we include it, so a dynamic request fails only when the pool is full.
                let start = if self.last + 1 >= len {
                    0
                } else {
                    self.last + 1
                };
                let pos = self
                    .bits
                    .find_zero_in(start, len)
                    .or_else(|| self.bits.find_zero_in(0, start))
                    .ok_or_else(no_available)?;
                if !self.bits.set(pos) {
                    return Err(no_available());
                }
                pos
            }
        };
        self.last = pos;
        self.allocated += 1;
        let ip = self.address(pos);
        tracing::trace!(%ip, "address allocated");
        Ok(ip)
    }

    /// Gives `ip` back. Returns true if it was allocated; releasing an address that is free,
    /// out of range or the bridge's own IP changes nothing and returns false (Docker's
    /// `ReleaseIP` never fails either). `last` is not moved.
    pub fn release(&mut self, ip: Ipv4Addr) -> bool {
        let Some(pos) = self.position(ip) else {
            return false;
        };
        if Some(pos) == self.gateway_pos || !self.bits.clear(pos) {
            return false;
        }
        self.allocated -= 1;
        tracing::trace!(%ip, "address released");
        true
    }

    /// The bridge network, masked (e.g. `172.17.0.0/16` for a bridge at `172.17.42.1/16`).
    pub fn network(&self) -> Ipv4Net {
        self.bridge.trunc()
    }

    /// The bridge's address and prefix as given (e.g. `172.17.42.1/16`).
    pub fn bridge(&self) -> Ipv4Net {
        self.bridge
    }

    /// The bridge's own IP: the containers' gateway.
    pub fn gateway(&self) -> Ipv4Addr {
        self.bridge.addr()
    }

    /// The bridge network's prefix length (Docker's `IPPrefixLen`).
    pub fn prefix_len(&self) -> u8 {
        self.bridge.prefix_len()
    }

    /// The bridge network's netmask (Docker's `Mask`, which 1.x printed as hex, `ffff0000`).
    pub fn mask(&self) -> Ipv4Addr {
        self.bridge.netmask()
    }

    /// The fixed-cidr (masked), if one was given.
    pub fn fixed_cidr(&self) -> Option<Ipv4Net> {
        self.fixed_cidr
    }

    /// Where addresses come from: the fixed-cidr if given, else the bridge network.
    pub fn pool(&self) -> Ipv4Net {
        self.fixed_cidr.unwrap_or_else(|| self.network())
    }

    /// The assignable range: the pool without its network and broadcast addresses. The bridge
    /// IP may lie inside it; it is reserved all the same.
    pub fn range(&self) -> AddrRange {
        AddrRange {
            bounds: (self.bits.len > 0).then(|| (self.address(0), self.address(self.bits.len - 1))),
        }
    }

    /// How many addresses can be handed out at once (the range without the bridge IP).
    pub fn capacity(&self) -> u32 {
        self.bits.len - u32::from(self.gateway_pos.is_some())
    }

    /// Whether `ip` is currently handed out (the bridge IP is reserved, not allocated: false).
    pub fn is_allocated(&self, ip: Ipv4Addr) -> bool {
        self.position(ip)
            .is_some_and(|p| Some(p) != self.gateway_pos && self.bits.get(p))
    }

    /// How many addresses are handed out.
    pub fn allocated_count(&self) -> u32 {
        self.allocated
    }

    /// The next-fit cursor: the last address handed out, where the next dynamic request starts
    /// searching (just after it). Before the first request it is the end of the range, so the
    /// first dynamic request gets the range's first free address. `None` for an empty range.
    pub fn last(&self) -> Option<Ipv4Addr> {
        (self.bits.len > 0).then(|| self.address(self.last))
    }

    /// The addresses handed out, in ascending order.
    pub fn iter(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        let gw = self.gateway_pos;
        self.bits
            .iter_set()
            .filter(move |&p| Some(p) != gw)
            .map(|p| self.address(p))
    }

    fn position(&self, ip: Ipv4Addr) -> Option<u32> {
        ip.to_bits()
            .checked_sub(self.begin)
            .filter(|&p| p < self.bits.len)
    }

    fn address(&self, pos: u32) -> Ipv4Addr {
        Ipv4Addr::from_bits(self.begin.wrapping_add(pos))
    }
}

impl fmt::Debug for IpAllocator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The bitmap would be thousands of words: show the summary.
        f.debug_struct("IpAllocator")
            .field("bridge", &self.bridge)
            .field("fixed_cidr", &self.fixed_cidr)
            .field("range", &self.range().to_string())
            .field("last", &self.last())
            .field("allocated", &self.allocated)
            .finish()
    }
}

impl Serialize for IpAllocator {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        IpAllocatorState {
            bridge: self.bridge,
            fixed_cidr: self.fixed_cidr,
            last: self.last(),
            allocated: self.iter().collect(),
        }
        .serialize(s)
    }
}

impl TryFrom<IpAllocatorState> for IpAllocator {
    type Error = IpamError;
    fn try_from(state: IpAllocatorState) -> Result<Self, IpamError> {
        let mut a = IpAllocator::new(state.bridge, state.fixed_cidr)?;
        for ip in state.allocated {
            a.request(Some(ip))?;
        }
        // Replaying moved `last`; put the saved cursor back.
        a.last = match state.last {
            Some(ip) => a.position(ip).ok_or(IpamError::OutOfRange {
                ip,
                range: a.range(),
            })?,
            None => a.bits.len.saturating_sub(1),
        };
        Ok(a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bitmap_finds_zero_across_words_and_chunks() {
        let len = 3 * CHUNK_BITS + 100;
        let mut b = Bitmap::new(len);
        for p in 0..CHUNK_BITS + 70 {
            assert!(b.set(p));
        }
        assert_eq!(b.find_zero_in(0, len), Some(CHUNK_BITS + 70));
        assert_eq!(b.find_zero_in(5, CHUNK_BITS + 70), None);
        // Fill the second chunk entirely: the search must skip it by its count.
        for p in CHUNK_BITS + 70..2 * CHUNK_BITS {
            assert!(b.set(p));
        }
        assert_eq!(b.chunks[1].set, CHUNK_BITS);
        assert_eq!(b.find_zero_in(3, len), Some(2 * CHUNK_BITS));
        // The partial last chunk: its capacity is 100.
        for p in 3 * CHUNK_BITS..len {
            assert!(b.set(p));
        }
        assert_eq!(b.chunk_capacity(3), 100);
        assert_eq!(b.find_zero_in(3 * CHUNK_BITS, len), None);
        assert!(!b.set(len), "out of bounds");
        // Clearing a bit in a word's top position is found.
        assert!(b.clear(CHUNK_BITS + 63));
        assert_eq!(b.find_zero_in(0, len), Some(CHUNK_BITS + 63));
        assert!(!b.clear(CHUNK_BITS + 63));
    }

    #[test]
    fn emptied_chunk_is_freed_so_equality_is_semantic() {
        let mut a = Bitmap::new(2 * CHUNK_BITS);
        let b = a.clone();
        assert!(a.set(CHUNK_BITS + 5));
        assert!(a.chunks[1].words.is_some());
        assert_ne!(a, b);
        assert!(a.clear(CHUNK_BITS + 5));
        assert!(a.chunks[1].words.is_none());
        assert_eq!(a, b);
    }

    #[test]
    fn iter_set_lists_positions_in_order() {
        let mut b = Bitmap::new(2 * CHUNK_BITS);
        let want = [
            0,
            1,
            63,
            64,
            127,
            CHUNK_BITS - 1,
            CHUNK_BITS,
            2 * CHUNK_BITS - 1,
        ];
        for &p in want.iter().rev() {
            assert!(b.set(p));
        }
        assert_eq!(b.iter_set().collect::<Vec<_>>(), want);
    }

    #[test]
    fn whole_address_space_does_not_overflow() {
        let mut a = IpAllocator::new("0.0.0.1/0".parse().expect("cidr"), None).expect("new");
        assert_eq!(a.capacity(), u32::MAX - 2);
        assert_eq!(a.request(None), Ok(Ipv4Addr::new(0, 0, 0, 2)));
        assert_eq!(
            a.request(Some(Ipv4Addr::new(255, 255, 255, 254))),
            Ok(Ipv4Addr::new(255, 255, 255, 254))
        );
        // Wrap-around from the very last assignable address.
        assert_eq!(a.request(None), Ok(Ipv4Addr::new(0, 0, 0, 3)));
        assert!(matches!(
            a.request(Some(Ipv4Addr::BROADCAST)),
            Err(IpamError::OutOfRange { .. })
        ));
        // Only the touched chunks hold memory.
        let used = a.bits.chunks.iter().filter(|c| c.words.is_some()).count();
        assert_eq!(used, 2);
    }
}
