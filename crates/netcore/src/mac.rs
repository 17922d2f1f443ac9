//! MAC addresses: the bridge's own (random, unicast, locally administered) and the
//! containers' (`02:42:` + the IPv4 address, unless one was requested).

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// An Ethernet MAC address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MacAddr(pub [u8; 6]);

/// A string that is not a MAC address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid MAC address {0:?}: expected six hex bytes separated by ':' (e.g. 02:42:ac:11:00:02)"
)]
pub struct MacParseError(pub String);

impl MacAddr {
    pub fn octets(&self) -> [u8; 6] {
        self.0
    }

    /// Bit 0 of the first byte clear: a unicast address.
    pub fn is_unicast(&self) -> bool {
        self.0[0] & 1 == 0
    }

    /// Bit 1 of the first byte set: a locally administered address.
    pub fn is_local(&self) -> bool {
        self.0[0] & 2 == 2
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MacAddr({self})")
    }
}

impl FromStr for MacAddr {
    type Err = MacParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || MacParseError(s.to_owned());
        let mut out = [0u8; 6];
        let mut parts = s.split([':', '-']);
        for byte in &mut out {
            let part = parts.next().ok_or_else(err)?;
            if part.len() != 2 {
                return Err(err());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| err())?;
        }
        if parts.next().is_some() {
            return Err(err());
        }
        Ok(MacAddr(out))
    }
}

impl TryFrom<String> for MacAddr {
    type Error = MacParseError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<MacAddr> for String {
    fn from(m: MacAddr) -> String {
        m.to_string()
    }
}

/// The bridge's own MAC from six random bytes: bit 0 of the first byte cleared (unicast), bit 1
/// set (locally administered), as Docker's `randMacAddr`/`setBridgeMacAddress` did.
///
/// The caller supplies the randomness so that netcore stays free of I/O. Docker 1.x drew each
/// byte from `rand.Intn(255)` (0..=254) of an unseeded generator; any random bytes will do.
/// The MAC is set whatever the kernel version: Docker 1.x's `>= 3.3` gate misread 4.x/5.x
/// kernels and was dropped in libnetwork PR #421. Without an own MAC, a bridge takes the lowest
/// MAC of its ports and changes as containers come and go (moby/moby#3200, PRs #3414/#4931).
pub fn bridge_mac(random: [u8; 6]) -> MacAddr {
    let mut bytes = random;
    bytes[0] &= !1;
    bytes[0] |= 2;
    MacAddr(bytes)
}

/// A container's MAC: `02:42:` followed by the four bytes of its IPv4 address, Docker 1.3's
/// `generateMacAddr` (172.17.0.2 gives `02:42:ac:11:00:02`).
///
/// It is stable for a given IP and distinct between IPs, so an ARP cache entry stays right when
/// an address is reused by another container. (Docker v28 switched to random MACs, PR #48808;
/// this project keeps the 1.x rule the allocate_interface handler documents.)
pub fn container_mac(ip: Ipv4Addr) -> MacAddr {
    let [a, b, c, d] = ip.octets();
    MacAddr([0x02, 0x42, a, b, c, d])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bridge_mac_is_unicast_and_local_and_keeps_the_rest() {
        for first in [0x00u8, 0x01, 0x02, 0x03, 0xfe, 0xff, 0x55, 0xaa] {
            let random = [first, 0x11, 0x22, 0x33, 0x44, 0x55];
            let mac = bridge_mac(random);
            assert!(mac.is_unicast(), "{mac}");
            assert!(mac.is_local(), "{mac}");
            assert_eq!(mac.octets()[0], (first & !1) | 2, "{mac}");
            assert_eq!(mac.octets()[1..], random[1..], "{mac}");
        }
        assert_eq!(bridge_mac([0xff; 6]).to_string(), "fe:ff:ff:ff:ff:ff");
        assert_eq!(bridge_mac([0; 6]).to_string(), "02:00:00:00:00:00");
    }

    #[test]
    fn container_mac_embeds_the_ip() {
        assert_eq!(
            container_mac(Ipv4Addr::new(172, 17, 0, 2)).to_string(),
            "02:42:ac:11:00:02"
        );
        assert_eq!(
            container_mac(Ipv4Addr::new(10, 255, 1, 200)).to_string(),
            "02:42:0a:ff:01:c8"
        );
        let mac = container_mac(Ipv4Addr::new(192, 168, 0, 1));
        assert!(mac.is_unicast() && mac.is_local());
    }

    // driver_test.go TestMacAddrGeneration: stable for one IP, different for two.
    #[test]
    fn upstream_mac_addr_generation() {
        let ip1 = Ipv4Addr::new(192, 168, 0, 1);
        let ip2 = Ipv4Addr::new(192, 168, 0, 2);
        assert_eq!(container_mac(ip1), container_mac(ip1));
        assert_ne!(container_mac(ip1), container_mac(ip2));
    }

    #[test]
    fn parse_and_display_round_trip() {
        let mac = container_mac(Ipv4Addr::new(172, 17, 0, 2));
        assert_eq!(mac.to_string().parse::<MacAddr>(), Ok(mac));
        assert!("02:42:ac:11:00".parse::<MacAddr>().is_err());
        assert!("02:42:ac:11:00:02:03".parse::<MacAddr>().is_err());
        assert!("02:42:ac:11:00:zz".parse::<MacAddr>().is_err());
    }
}
