//! Network ranges and overlaps: Docker's `daemon/networkdriver/utils.go` (identical in v1.2.0 and
//! v1.3.2), over values the caller has already read from the host.
//!
//! Docker's `CheckRouteOverlaps` fetched the routes itself through a swappable function
//! (`networkGetRoutesFct`); here the routes are an argument, which is what made that function
//! swappable in the first place.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::ops::RouteV4;

/// Why a requested network cannot be used. The texts are Docker's
/// (`ErrNetworkOverlapsWithNameservers`, `ErrNetworkOverlaps`); the variant also carries what it
/// collided with, which Docker's error values did not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OverlapError {
    /// The network contains (or is contained in) a nameserver's `/32`.
    #[error("requested network overlaps with nameserver")]
    Nameserver(Ipv4Net),
    /// The network intersects the destination of a route.
    #[error("requested network overlaps with existing network")]
    Route(Ipv4Net),
}

/// The first and last address of `net`'s block: Docker's `NetworkRange`.
///
/// The host bits of `net` are ignored, so `10.1.2.3/8` gives `(10.0.0.0, 10.255.255.255)`.
pub fn network_range(net: Ipv4Net) -> (Ipv4Addr, Ipv4Addr) {
    (net.network(), net.broadcast())
}

/// The number of addresses in `net`'s block: Docker's `NetworkSize`.
///
/// Docker computed this in an `int32`, which wraps to 0 for a `/0`; a `u64` holds every size,
/// so a `/0` gives 2^32 here.
pub fn network_size(net: Ipv4Net) -> u64 {
    1u64 << (32 - u32::from(net.prefix_len()))
}

/// Whether two blocks share an address: Docker's `NetworkOverlaps`
/// (`Y contains first(X) || X contains first(Y)`, which for CIDR blocks is "they intersect").
pub fn network_overlaps(x: Ipv4Net, y: Ipv4Net) -> bool {
    y.contains(&x.network()) || x.contains(&y.network())
}

/// Docker's `CheckNameserverOverlaps`: fails on the first nameserver (as a `/32`, the form
/// [`crate::resolvconf::nameservers_as_cidr`] gives) that `net` overlaps.
///
/// Docker parsed the nameserver strings here and returned the parse error; these are parsed
/// values already, so only the overlap can fail.
pub fn check_nameserver_overlaps(
    nameservers: &[Ipv4Net],
    net: Ipv4Net,
) -> Result<(), OverlapError> {
    match nameservers.iter().find(|ns| network_overlaps(net, **ns)) {
        Some(ns) => Err(OverlapError::Nameserver(*ns)),
        None => Ok(()),
    }
}

/// Docker's `CheckRouteOverlaps`: fails on the first route whose destination `net` overlaps.
///
/// Default routes are skipped, as Docker skipped routes whose `IPNet` was nil: a route without
/// a destination, and also one whose destination has prefix length 0 (netlink reports
/// `dst_len == 0` for a default route and Docker flagged exactly those as `Default`).
pub fn check_route_overlaps(routes: &[RouteV4], net: Ipv4Net) -> Result<(), OverlapError> {
    match routes
        .iter()
        .filter_map(route_destination)
        .find(|dst| network_overlaps(net, *dst))
    {
        Some(dst) => Err(OverlapError::Route(dst)),
        None => Ok(()),
    }
}

/// The destination a route claims, or `None` for a default route.
pub(crate) fn route_destination(route: &RouteV4) -> Option<Ipv4Net> {
    route.dst.filter(|dst| dst.prefix_len() != 0)
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

    // network_test.go TestNonOverlapingNameservers / TestOverlapingNameservers.
    #[test]
    fn nameserver_outside_the_network_passes() {
        assert_eq!(
            check_nameserver_overlaps(&[net("127.0.0.1/32")], net("192.168.0.1/24")),
            Ok(())
        );
    }

    #[test]
    fn nameserver_inside_the_network_fails_with_dockers_text() {
        let err = check_nameserver_overlaps(&[net("192.168.0.1/32")], net("192.168.0.1/24"))
            .expect_err("overlap");
        assert_eq!(err, OverlapError::Nameserver(net("192.168.0.1/32")));
        assert_eq!(
            err.to_string(),
            "requested network overlaps with nameserver"
        );
    }

    // network_test.go TestCheckRouteOverlaps.
    #[test]
    fn route_overlaps_against_dockers_mock_routes() {
        let routes: Vec<RouteV4> = [
            "10.0.2.0/32",
            "10.0.3.0/24",
            "10.0.42.0/24",
            "172.16.42.0/24",
            "192.168.142.0/24",
        ]
        .into_iter()
        .map(route)
        .collect();
        assert_eq!(check_route_overlaps(&routes, net("172.16.0.1/24")), Ok(()));
        let err = check_route_overlaps(&routes, net("10.0.2.0/24")).expect_err("overlap");
        assert_eq!(err, OverlapError::Route(net("10.0.2.0/32")));
        assert_eq!(
            err.to_string(),
            "requested network overlaps with existing network"
        );
    }

    #[test]
    fn default_routes_are_skipped() {
        let default = RouteV4 {
            dst: None,
            gateway: Some(ip("10.0.0.1")),
            oif: Some(2),
        };
        let zero_len = route("0.0.0.0/0");
        assert_eq!(
            check_route_overlaps(&[default, zero_len], net("172.17.42.1/16")),
            Ok(())
        );
        // A def1-style /1 is not a default route and overlaps (moby/libnetwork#779).
        assert!(check_route_overlaps(&[route("128.0.0.0/1")], net("172.17.42.1/16")).is_err());
    }

    // network_test.go TestCheckNameserverOverlaps.
    #[test]
    fn nameserver_overlaps_of_host_networks() {
        let ns = [net("10.0.2.3/32"), net("192.168.102.1/32")];
        assert_eq!(
            check_nameserver_overlaps(&ns, net("10.0.2.3/32")),
            Err(OverlapError::Nameserver(net("10.0.2.3/32")))
        );
        assert_eq!(
            check_nameserver_overlaps(&ns, net("192.168.102.2/32")),
            Ok(())
        );
    }

    // network_test.go TestNetworkOverlaps.
    #[test]
    fn network_overlaps_table() {
        let cases = [
            ("172.16.0.1/24", "172.16.0.1/25", true),
            ("172.16.0.1/24", "172.16.0.128/25", true),
            ("172.16.0.1/24", "172.16.0.64/25", true),
            ("172.16.0.1/24", "172.16.0.1/23", true),
            ("172.16.1.1/24", "172.16.0.1/23", true),
            ("172.16.1.1/24", "172.16.0.1/22", true),
            ("172.16.1.1/25", "172.16.0.1/24", false),
            ("172.16.1.1/25", "172.16.2.1/24", false),
        ];
        for (x, y, want) in cases {
            assert_eq!(network_overlaps(net(x), net(y)), want, "{x} vs {y}");
            // The relation is symmetric.
            assert_eq!(network_overlaps(net(y), net(x)), want, "{y} vs {x}");
        }
    }

    // network_test.go TestNetworkRange.
    #[test]
    fn network_range_table() {
        let cases = [
            ("192.168.0.1/24", "192.168.0.0", "192.168.0.255", Some(256)),
            ("10.0.0.1/8", "10.0.0.0", "10.255.255.255", Some(16_777_216)),
            ("10.1.2.3/8", "10.0.0.0", "10.255.255.255", None),
            ("10.1.2.3/32", "10.1.2.3", "10.1.2.3", Some(1)),
            ("10.1.2.3/31", "10.1.2.2", "10.1.2.3", Some(2)),
            ("10.1.2.3/26", "10.1.2.0", "10.1.2.63", Some(64)),
        ];
        for (input, first, last, size) in cases {
            let n = net(input);
            assert_eq!(network_range(n), (ip(first), ip(last)), "{input}");
            if let Some(size) = size {
                assert_eq!(network_size(n), size, "{input}");
            }
        }
    }

    #[test]
    fn network_size_of_the_whole_space_does_not_wrap() {
        assert_eq!(network_size(net("0.0.0.0/0")), 1u64 << 32);
    }
}
