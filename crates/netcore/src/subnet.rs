//! Which address a new bridge gets when `--bip` is not given: the first of Docker 1.x's
//! candidates that collides with no nameserver and no route (`createBridge`, v1.2.0 = v1.3.2).
//!
//! Docker checked each candidate in turn against every nameserver and then every route. Here the
//! nameservers and the routes are each scanned once, checking all twelve candidates per entry,
//! so the cost is linear in the number of routes (12 comparisons per route) and the first
//! collision of every candidate is known for the error message.

use std::fmt;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::netrange::{self, OverlapError};
use crate::ops::RouteV4;

/// Docker 1.x's candidate bridge addresses, in the order they are tried (`addrs` in
/// `daemon/networkdriver/bridge/driver.go`).
///
/// The gateways are x.x.42.1 rather than the first address, to keep the addresses of the older
/// /24 ranges (Docker's own comment). 172.16.0.0/16 is skipped because of EC2's DNS at
/// 172.16.0.23, and no /8 is used because it is "too intrusive".
pub const CANDIDATES: [Ipv4Net; 12] = [
    Ipv4Net::new_assert(Ipv4Addr::new(172, 17, 42, 1), 16),
    Ipv4Net::new_assert(Ipv4Addr::new(10, 0, 42, 1), 16),
    Ipv4Net::new_assert(Ipv4Addr::new(10, 1, 42, 1), 16),
    Ipv4Net::new_assert(Ipv4Addr::new(10, 42, 42, 1), 16),
    Ipv4Net::new_assert(Ipv4Addr::new(172, 16, 42, 1), 24),
    Ipv4Net::new_assert(Ipv4Addr::new(172, 16, 43, 1), 24),
    Ipv4Net::new_assert(Ipv4Addr::new(172, 16, 44, 1), 24),
    Ipv4Net::new_assert(Ipv4Addr::new(10, 0, 42, 1), 24),
    Ipv4Net::new_assert(Ipv4Addr::new(10, 0, 43, 1), 24),
    Ipv4Net::new_assert(Ipv4Addr::new(192, 168, 42, 1), 24),
    Ipv4Net::new_assert(Ipv4Addr::new(192, 168, 43, 1), 24),
    Ipv4Net::new_assert(Ipv4Addr::new(192, 168, 44, 1), 24),
];

/// What a candidate collided with: the first nameserver it contains, else the first route
/// destination it overlaps (Docker checked nameservers first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Collision {
    /// A nameserver from resolv.conf lies inside the candidate.
    Nameserver(Ipv4Addr),
    /// A route's destination intersects the candidate.
    Route(Ipv4Net),
}

impl Collision {
    /// The same fact as Docker's error value for it.
    pub fn as_overlap_error(self) -> OverlapError {
        match self {
            Collision::Nameserver(ip) => OverlapError::Nameserver(Ipv4Net::from(ip)),
            Collision::Route(dst) => OverlapError::Route(dst),
        }
    }
}

impl fmt::Display for Collision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Collision::Nameserver(ip) => write!(f, "{} {ip}", self.as_overlap_error()),
            Collision::Route(dst) => write!(f, "{} {dst}", self.as_overlap_error()),
        }
    }
}

/// Every candidate collides. The first line is Docker's text; then one line per candidate, in
/// order, naming what it collided with, so the user can see which route or nameserver to move.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct NoFreeSubnet {
    /// The bridge that needed an address (`docker0`).
    pub bridge: String,
    /// Each candidate with the first thing it collided with, in candidate order.
    pub collisions: Vec<(Ipv4Net, Collision)>,
}

impl fmt::Display for NoFreeSubnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Could not find a free IP address range for interface '{0}'. \
             Please configure its address manually and run 'docker -b {0}'",
            self.bridge
        )?;
        for (candidate, collision) in &self.collisions {
            write!(f, "\n  {candidate}: {collision}")?;
        }
        Ok(())
    }
}

/// The first candidate that overlaps no nameserver and no route destination, as the host address
/// with its prefix (e.g. `172.17.42.1/16`).
///
/// Nameservers are compared as `/32`s, as Docker's `GetNameserversAsCIDR` made them. Default
/// routes (no destination, or a `/0` one) are skipped, as Docker's `CheckRouteOverlaps` did.
/// A rejected candidate is logged at debug level the way Docker logged `"<addr> <err>"`.
pub fn choose(
    bridge: &str,
    routes: &[RouteV4],
    nameservers: &[Ipv4Addr],
) -> Result<Ipv4Net, NoFreeSubnet> {
    let blocks = CANDIDATES.map(|c| Block::of(c.trunc()));
    let mut first_hit: [Option<Collision>; 12] = [None; 12];
    let mut free = CANDIDATES.len();

    for ns in nameservers {
        let ns_u = u32::from(*ns);
        for (hit, block) in first_hit.iter_mut().zip(&blocks) {
            if hit.is_none() && block.first <= ns_u && ns_u <= block.last {
                *hit = Some(Collision::Nameserver(*ns));
                free -= 1;
            }
        }
    }

    // Scanning stops early once every candidate has collided: later routes cannot change the
    // outcome, and each candidate keeps its first collision.
    for dst in routes.iter().filter_map(netrange::route_destination) {
        if free == 0 {
            break;
        }
        let route = Block::of(dst);
        for (hit, block) in first_hit.iter_mut().zip(&blocks) {
            if hit.is_none() && block.first <= route.last && route.first <= block.last {
                *hit = Some(Collision::Route(dst));
                free -= 1;
            }
        }
    }

    let mut collisions = Vec::with_capacity(CANDIDATES.len());
    for (candidate, hit) in CANDIDATES.iter().zip(first_hit) {
        match hit {
            None => return Ok(*candidate),
            Some(collision) => {
                tracing::debug!("{candidate} {}", collision.as_overlap_error());
                collisions.push((*candidate, collision));
            }
        }
    }
    Err(NoFreeSubnet {
        bridge: bridge.to_owned(),
        collisions,
    })
}

/// An address block as an inclusive `u32` interval.
#[derive(Clone, Copy)]
struct Block {
    first: u32,
    last: u32,
}

impl Block {
    fn of(net: Ipv4Net) -> Self {
        Self {
            first: u32::from(net.network()),
            last: u32::from(net.broadcast()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().expect("test CIDR")
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().expect("test IP")
    }

    fn route(s: &str) -> RouteV4 {
        RouteV4 {
            dst: Some(net(s)),
            gateway: None,
            oif: Some(2),
        }
    }

    #[test]
    fn candidates_are_dockers_list_in_order() {
        let want = [
            "172.17.42.1/16",
            "10.0.42.1/16",
            "10.1.42.1/16",
            "10.42.42.1/16",
            "172.16.42.1/24",
            "172.16.43.1/24",
            "172.16.44.1/24",
            "10.0.42.1/24",
            "10.0.43.1/24",
            "192.168.42.1/24",
            "192.168.43.1/24",
            "192.168.44.1/24",
        ];
        let got: Vec<String> = CANDIDATES.iter().map(ToString::to_string).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn empty_host_gets_the_first_candidate_unmasked() {
        assert_eq!(choose("docker0", &[], &[]), Ok(net("172.17.42.1/16")));
    }

    #[test]
    fn a_route_moves_the_choice_on() {
        let routes = [route("172.17.0.0/16"), route("10.0.0.0/16")];
        assert_eq!(choose("docker0", &routes, &[]), Ok(net("10.1.42.1/16")));
    }

    #[test]
    fn a_nameserver_moves_the_choice_on() {
        assert_eq!(
            choose("docker0", &[], &[ip("172.17.0.53")]),
            Ok(net("10.0.42.1/16"))
        );
        // A nameserver outside every candidate changes nothing.
        assert_eq!(
            choose("docker0", &[], &[ip("8.8.8.8")]),
            Ok(net("172.17.42.1/16"))
        );
    }

    #[test]
    fn default_routes_do_not_collide() {
        let default = RouteV4 {
            dst: None,
            gateway: Some(ip("192.168.1.1")),
            oif: Some(2),
        };
        assert_eq!(
            choose("docker0", &[default, route("0.0.0.0/0")], &[]),
            Ok(net("172.17.42.1/16"))
        );
    }

    #[test]
    fn a_smaller_route_inside_a_candidate_collides() {
        assert_eq!(
            choose("docker0", &[route("172.17.5.5/32")], &[]),
            Ok(net("10.0.42.1/16"))
        );
    }

    #[test]
    fn vpn_def1_routes_leave_nothing_free_and_the_error_says_why() {
        // OpenVPN's def1 routes cover the whole space (moby/libnetwork#779).
        let routes = [route("0.0.0.0/1"), route("128.0.0.0/1")];
        let err = choose("docker0", &routes, &[ip("10.0.42.53")]).expect_err("no free subnet");
        assert_eq!(err.bridge, "docker0");
        assert_eq!(err.collisions.len(), 12);
        let mut lines = err
            .to_string()
            .lines()
            .map(str::to_owned)
            .collect::<Vec<_>>();
        assert_eq!(
            lines.remove(0),
            "Could not find a free IP address range for interface 'docker0'. \
             Please configure its address manually and run 'docker -b docker0'"
        );
        assert_eq!(
            lines,
            vec![
                "  172.17.42.1/16: requested network overlaps with existing network 128.0.0.0/1",
                "  10.0.42.1/16: requested network overlaps with nameserver 10.0.42.53",
                "  10.1.42.1/16: requested network overlaps with existing network 0.0.0.0/1",
                "  10.42.42.1/16: requested network overlaps with existing network 0.0.0.0/1",
                "  172.16.42.1/24: requested network overlaps with existing network 128.0.0.0/1",
                "  172.16.43.1/24: requested network overlaps with existing network 128.0.0.0/1",
                "  172.16.44.1/24: requested network overlaps with existing network 128.0.0.0/1",
                "  10.0.42.1/24: requested network overlaps with nameserver 10.0.42.53",
                "  10.0.43.1/24: requested network overlaps with existing network 0.0.0.0/1",
                "  192.168.42.1/24: requested network overlaps with existing network 128.0.0.0/1",
                "  192.168.43.1/24: requested network overlaps with existing network 128.0.0.0/1",
                "  192.168.44.1/24: requested network overlaps with existing network 128.0.0.0/1",
            ]
        );
    }

    #[test]
    fn the_first_colliding_route_is_named() {
        let routes = [
            route("192.168.0.0/16"),
            route("10.0.0.0/8"),
            route("172.16.0.0/12"),
            route("172.17.0.0/16"),
        ];
        let err = choose("br0", &routes, &[]).expect_err("all taken");
        assert!(err.to_string().starts_with(
            "Could not find a free IP address range for interface 'br0'. \
             Please configure its address manually and run 'docker -b br0'\n"
        ));
        assert_eq!(
            err.collisions[0],
            (
                net("172.17.42.1/16"),
                Collision::Route(net("172.16.0.0/12"))
            )
        );
        assert_eq!(
            err.collisions[1],
            (net("10.0.42.1/16"), Collision::Route(net("10.0.0.0/8")))
        );
    }

    #[test]
    fn agrees_with_dockers_candidate_by_candidate_loop() {
        // The single-pass scan must pick what Docker's nested loop (check_nameserver_overlaps,
        // then check_route_overlaps, per candidate) picks.
        let routes = [
            route("172.17.0.0/17"),
            route("10.0.0.0/15"),
            route("10.42.0.0/16"),
            route("172.16.42.128/25"),
        ];
        let nameservers = [ip("172.16.43.9")];
        let ns_cidr: Vec<Ipv4Net> = nameservers.iter().map(|n| Ipv4Net::from(*n)).collect();
        let docker = CANDIDATES.iter().copied().find(|c| {
            netrange::check_nameserver_overlaps(&ns_cidr, c.trunc()).is_ok()
                && netrange::check_route_overlaps(&routes, c.trunc()).is_ok()
        });
        assert_eq!(docker, Some(net("172.16.44.1/24")));
        assert_eq!(choose("docker0", &routes, &nameservers).ok(), docker);
    }
}
