//! Which bridge to use and what address it gets: reuse it, give it an address, create it, or
//! refuse (Docker 1.x `InitDriver` steps 2-5, with the v1.4 fix for an address-less docker0).

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::config::Config;
use crate::ops::{LinkInfo, RouteV4};
use crate::subnet::{self, NoFreeSubnet};

/// What to do about the bridge. `addr` is always the bridge's host address with its prefix,
/// unmasked (e.g. `172.17.42.1/16`), as Docker's `GetIfaceAddr` returned it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BridgeDecision {
    /// The bridge exists with an IPv4 address: use it as it is.
    Reuse {
        /// The bridge's name.
        name: String,
        /// Its first IPv4 address.
        addr: Ipv4Net,
    },
    /// `docker0` exists but has no IPv4 address: add one and use it.
    AddAddress {
        /// The bridge's name (always the default bridge).
        name: String,
        /// `--bip`, or the first free candidate.
        addr: Ipv4Net,
    },
    /// `docker0` does not exist: create it with this address.
    Create {
        /// The bridge's name (always the default bridge).
        name: String,
        /// `--bip`, or the first free candidate.
        addr: Ipv4Net,
    },
}

impl BridgeDecision {
    /// The bridge's name.
    pub fn name(&self) -> &str {
        match self {
            BridgeDecision::Reuse { name, .. }
            | BridgeDecision::AddAddress { name, .. }
            | BridgeDecision::Create { name, .. } => name,
        }
    }

    /// The bridge's host address with its prefix, unmasked.
    pub fn addr(&self) -> Ipv4Net {
        match self {
            BridgeDecision::Reuse { addr, .. }
            | BridgeDecision::AddAddress { addr, .. }
            | BridgeDecision::Create { addr, .. } => *addr,
        }
    }
}

/// Why no bridge can be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BridgeError {
    /// `-b X` names an interface that does not exist. Docker never creates a user-named bridge;
    /// v1.2.0 logged this text before failing.
    #[error("bridge not found: {0}")]
    NotFound(String),
    /// `-b X` names an interface without an IPv4 address (Docker's `GetIfaceAddr` text).
    #[error("Interface {0} has no IP addresses")]
    NoIpv4(String),
    /// `--bip` differs from the address docker0 already has. Docker's text, with (existing,
    /// requested) IPs; the prefix is never compared.
    #[error("bridge ip ({existing}) does not match existing bridge configuration {requested}")]
    BipMismatch {
        /// The bridge's current first IPv4 address.
        existing: Ipv4Addr,
        /// The address `--bip` asked for.
        requested: Ipv4Addr,
    },
    /// A new bridge is needed, no `--bip` was given and every candidate collides.
    #[error(transparent)]
    NoFreeSubnet(#[from] NoFreeSubnet),
}

/// Decides what to do about the bridge, given the host's links, main-table routes and
/// resolv.conf nameservers.
///
/// - The bridge is `-b`'s, else `docker0`.
/// - If it exists with IPv4 addresses, it is reused with its first one (a warning is logged when
///   there are several). With `--bip` (only possible for docker0: `-b` and `--bip` exclude each
///   other) the IPs must be equal; the prefix is not compared, as in Docker. No overlap checks
///   are done on an existing bridge.
/// - A `-b` bridge that is missing or has no IPv4 address is an error: Docker never creates or
///   configures a user-named bridge.
/// - docker0 without an IPv4 address gets one (`--bip`, or the first free candidate). Docker
///   1.2/1.3 failed here with EEXIST trying to create it again; v1.4 fixed that (issue #8444,
///   commit 1262b5f605), which is what this does.
/// - A missing docker0 is created with `--bip` verbatim (Docker checks no overlaps for an
///   explicit address) or the first free candidate.
pub fn resolve(
    config: &Config,
    links: &[LinkInfo],
    routes: &[RouteV4],
    nameservers: &[Ipv4Addr],
) -> Result<BridgeDecision, BridgeError> {
    let name = config.bridge_name();
    let link = links.iter().find(|l| l.name == name);

    if let Some(addr) = link.and_then(|l| l.addrs.first().copied()) {
        if let Some(link) = link.filter(|l| l.addrs.len() > 1) {
            tracing::warn!(
                "Interface {} has more than 1 IPv4 address. Defaulting to using {}",
                link.name,
                addr.addr()
            );
        }
        if let Some(bip) = config.bip
            && bip.addr() != addr.addr()
        {
            return Err(BridgeError::BipMismatch {
                existing: addr.addr(),
                requested: bip.addr(),
            });
        }
        return Ok(BridgeDecision::Reuse {
            name: name.to_owned(),
            addr,
        });
    }

    if config.user_named_bridge() {
        return Err(match link {
            None => BridgeError::NotFound(name.to_owned()),
            Some(_) => BridgeError::NoIpv4(name.to_owned()),
        });
    }

    let addr = match config.bip {
        Some(bip) => bip,
        None => subnet::choose(name, routes, nameservers)?,
    };
    let name = name.to_owned();
    Ok(match link {
        Some(_) => BridgeDecision::AddAddress { name, addr },
        None => BridgeDecision::Create { name, addr },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ifname::IfName;

    fn net(s: &str) -> Ipv4Net {
        s.parse().expect("test CIDR")
    }

    fn link(name: &str, addrs: &[&str]) -> LinkInfo {
        LinkInfo {
            name: name.to_owned(),
            index: 7,
            kind: Some("bridge".to_owned()),
            mac: None,
            mtu: 1500,
            up: true,
            addrs: addrs.iter().map(|a| net(a)).collect(),
        }
    }

    fn route(s: &str) -> RouteV4 {
        RouteV4 {
            dst: Some(net(s)),
            gateway: None,
            oif: Some(2),
        }
    }

    fn with_bip(bip: &str) -> Config {
        Config {
            bip: Some(net(bip)),
            ..Config::default()
        }
    }

    fn with_bridge(name: &str) -> Config {
        Config {
            bridge: Some(IfName::new(name).expect("test name")),
            ..Config::default()
        }
    }

    fn lo_eth0() -> Vec<LinkInfo> {
        vec![
            link("lo", &["127.0.0.1/8"]),
            link("eth0", &["192.168.1.20/24"]),
        ]
    }

    #[test]
    fn missing_docker0_is_created_on_the_first_free_candidate() {
        let routes = [route("192.168.1.0/24"), route("172.17.0.0/16")];
        let got = resolve(&Config::default(), &lo_eth0(), &routes, &[]);
        assert_eq!(
            got,
            Ok(BridgeDecision::Create {
                name: "docker0".into(),
                addr: net("10.0.42.1/16")
            })
        );
    }

    #[test]
    fn missing_docker0_with_bip_is_created_without_overlap_checks() {
        // The route covers the bip; Docker uses an explicit bip verbatim.
        let routes = [route("10.20.0.0/16")];
        let got = resolve(&with_bip("10.20.0.1/16"), &lo_eth0(), &routes, &[]);
        assert_eq!(
            got,
            Ok(BridgeDecision::Create {
                name: "docker0".into(),
                addr: net("10.20.0.1/16")
            })
        );
    }

    #[test]
    fn missing_docker0_without_a_free_candidate_fails() {
        let routes = [route("0.0.0.0/1"), route("128.0.0.0/1")];
        let err = resolve(&Config::default(), &lo_eth0(), &routes, &[]).expect_err("no subnet");
        assert!(matches!(err, BridgeError::NoFreeSubnet(_)));
        assert!(
            err.to_string()
                .starts_with("Could not find a free IP address range for interface 'docker0'.")
        );
    }

    #[test]
    fn existing_docker0_is_reused_without_overlap_checks() {
        let mut links = lo_eth0();
        links.push(link("docker0", &["172.17.0.1/16"]));
        // A route over the same range (its own link route) must not matter.
        let routes = [route("172.17.0.0/16")];
        let got = resolve(&Config::default(), &links, &routes, &[]);
        assert_eq!(
            got,
            Ok(BridgeDecision::Reuse {
                name: "docker0".into(),
                addr: net("172.17.0.1/16")
            })
        );
    }

    #[test]
    fn several_addresses_use_the_first() {
        let mut links = lo_eth0();
        links.push(link("docker0", &["172.17.42.1/16", "10.9.0.1/24"]));
        let got = resolve(&Config::default(), &links, &[], &[]).expect("reuse");
        assert_eq!(got.addr(), net("172.17.42.1/16"));
        assert_eq!(got.name(), "docker0");
    }

    #[test]
    fn bip_must_match_the_existing_ip_but_not_the_prefix() {
        let mut links = lo_eth0();
        links.push(link("docker0", &["172.17.42.1/16"]));
        let same_ip_other_prefix = resolve(&with_bip("172.17.42.1/24"), &links, &[], &[]);
        assert_eq!(
            same_ip_other_prefix,
            Ok(BridgeDecision::Reuse {
                name: "docker0".into(),
                addr: net("172.17.42.1/16")
            })
        );
        let err = resolve(&with_bip("10.20.0.1/16"), &links, &[], &[]).expect_err("mismatch");
        assert_eq!(
            err.to_string(),
            "bridge ip (172.17.42.1) does not match existing bridge configuration 10.20.0.1"
        );
    }

    #[test]
    fn docker0_without_ipv4_gets_an_address() {
        let mut links = lo_eth0();
        links.push(link("docker0", &[]));
        assert_eq!(
            resolve(&Config::default(), &links, &[], &[]),
            Ok(BridgeDecision::AddAddress {
                name: "docker0".into(),
                addr: net("172.17.42.1/16")
            })
        );
        assert_eq!(
            resolve(&with_bip("10.20.0.1/16"), &links, &[], &[]),
            Ok(BridgeDecision::AddAddress {
                name: "docker0".into(),
                addr: net("10.20.0.1/16")
            })
        );
    }

    #[test]
    fn docker0_without_ipv4_avoids_nameservers() {
        let mut links = lo_eth0();
        links.push(link("docker0", &[]));
        let got = resolve(
            &Config::default(),
            &links,
            &[],
            &["172.17.1.1".parse().expect("ip")],
        );
        assert_eq!(got.map(|d| d.addr()), Ok(net("10.0.42.1/16")));
    }

    #[test]
    fn user_named_bridge_is_never_created_or_configured() {
        let err = resolve(&with_bridge("br-ext"), &lo_eth0(), &[], &[]).expect_err("missing");
        assert_eq!(err, BridgeError::NotFound("br-ext".into()));
        assert_eq!(err.to_string(), "bridge not found: br-ext");

        let mut links = lo_eth0();
        links.push(link("br-ext", &[]));
        let err = resolve(&with_bridge("br-ext"), &links, &[], &[]).expect_err("no ipv4");
        assert_eq!(err.to_string(), "Interface br-ext has no IP addresses");
    }

    #[test]
    fn user_named_bridge_with_ipv4_is_reused() {
        let mut links = lo_eth0();
        links.push(link("br-ext", &["10.10.0.254/24"]));
        // docker0 also present: -b wins.
        links.push(link("docker0", &["172.17.42.1/16"]));
        assert_eq!(
            resolve(&with_bridge("br-ext"), &links, &[], &[]),
            Ok(BridgeDecision::Reuse {
                name: "br-ext".into(),
                addr: net("10.10.0.254/24")
            })
        );
    }

    #[test]
    fn accessors_cover_every_variant() {
        let a = net("10.0.0.1/24");
        for d in [
            BridgeDecision::Reuse {
                name: "x".into(),
                addr: a,
            },
            BridgeDecision::AddAddress {
                name: "x".into(),
                addr: a,
            },
            BridgeDecision::Create {
                name: "x".into(),
                addr: a,
            },
        ] {
            assert_eq!((d.name(), d.addr()), ("x", a));
        }
    }
}
