//! Helpers shared by the end-to-end tests (namespaces, `ip -j`, `iptables-save`).
//!
//! The `kernel_*` functions describe the calling thread's network namespace as netcore's own
//! types, read with `ip -j` only, so a backend's answer can be compared with the kernel's
//! without trusting any backend.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use netcore::mac::MacAddr;
use netcore::ops::{LinkInfo, RouteV4};

/// Every link as `ip -j -d link show` and `ip -j -4 addr show` report it, sorted by index.
///
/// `kind` is `linkinfo.info_kind`; `mac` is the link's address when it is six bytes
/// (Ethernet-like and loopback links; a tunnel's `0.0.0.0` or a 20-byte InfiniBand address
/// is `None`); `addrs` are the IPv4 addresses in kernel order, alias labels included.
pub fn kernel_links() -> Vec<LinkInfo> {
    let mut addrs: HashMap<String, Vec<Ipv4Net>> = HashMap::new();
    let out = testns::run(&["ip", "-j", "-4", "addr", "show"]);
    for link in json_array(&out) {
        let name = str_field(&link, "ifname").to_owned();
        let list = addrs.entry(name).or_default();
        for a in link["addr_info"].as_array().cloned().unwrap_or_default() {
            if a["family"] != "inet" {
                continue;
            }
            let ip: Ipv4Addr = str_field(&a, "local")
                .parse()
                .unwrap_or_else(|e| panic!("bad address in {a}: {e}"));
            let prefix = a["prefixlen"]
                .as_u64()
                .and_then(|p| u8::try_from(p).ok())
                .unwrap_or_else(|| panic!("bad prefixlen in {a}"));
            list.push(Ipv4Net::new(ip, prefix).unwrap_or_else(|e| panic!("{a}: {e}")));
        }
    }
    let mut links: Vec<LinkInfo> = testns::ip_links()
        .iter()
        .map(|l| {
            let name = str_field(l, "ifname").to_owned();
            LinkInfo {
                index: u32_field(l, "ifindex"),
                kind: l["linkinfo"]["info_kind"].as_str().map(str::to_owned),
                mac: l["address"]
                    .as_str()
                    .and_then(|a| a.parse::<MacAddr>().ok()),
                mtu: u32_field(l, "mtu"),
                up: has_flag(l, "UP"),
                addrs: addrs.remove(&name).unwrap_or_default(),
                name,
            }
        })
        .collect();
    links.sort_by_key(|l| l.index);
    links
}

/// One route of `ip -j -4 route show table main`, as a [`RouteV4`] the way a netlink dump
/// describes it. A multipath route (`nexthops`) has no top-level device or gateway, so
/// `oif` and `gateway` are `None` and `multipath` is set: backends that cannot see the
/// difference (`/proc/net/route` prints the first nexthop) are compared on `dst` only there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelRoute {
    pub route: RouteV4,
    pub multipath: bool,
}

/// The main table's IPv4 routes, sorted with [`route_key`].
pub fn kernel_routes_v4() -> Vec<KernelRoute> {
    let index: HashMap<String, u32> = kernel_links()
        .into_iter()
        .map(|l| (l.name, l.index))
        .collect();
    let mut routes: Vec<KernelRoute> = testns::ip_routes4()
        .iter()
        .map(|r| {
            let dst = match str_field(r, "dst") {
                "default" => None,
                d if d.contains('/') => Some(d.parse().unwrap_or_else(|e| panic!("{r}: {e}"))),
                d => Some(
                    Ipv4Net::new(d.parse().unwrap_or_else(|e| panic!("{r}: {e}")), 32)
                        .unwrap_or_else(|e| panic!("{r}: {e}")),
                ),
            };
            let gateway = r["gateway"]
                .as_str()
                .map(|g| g.parse().unwrap_or_else(|e| panic!("{r}: {e}")));
            let oif = r["dev"].as_str().map(|d| {
                *index
                    .get(d)
                    .unwrap_or_else(|| panic!("route {r} names unknown device {d}"))
            });
            KernelRoute {
                route: RouteV4 { dst, gateway, oif },
                multipath: r.get("nexthops").is_some(),
            }
        })
        .collect();
    routes.sort_by_key(|r| route_key(&r.route));
    routes
}

/// A total order on routes, to compare lists regardless of the order a source gives.
pub fn route_key(r: &RouteV4) -> (Option<Ipv4Net>, Option<Ipv4Addr>, Option<u32>) {
    (r.dst, r.gateway, r.oif)
}

/// The index of a link, from `ip -j link show dev NAME`.
pub fn kernel_index(name: &str) -> u32 {
    let link = testns::ip_link(name).unwrap_or_else(|| panic!("no link {name}"));
    u32_field(&link, "ifindex")
}

fn str_field<'a>(v: &'a serde_json::Value, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("no string {key:?} in {v}"))
}

fn u32_field(v: &serde_json::Value, key: &str) -> u32 {
    v[key]
        .as_u64()
        .and_then(|n| u32::try_from(n).ok())
        .unwrap_or_else(|| panic!("no u32 {key:?} in {v}"))
}

/// Whether an `ip -j link` entry has `flag` in its flags.
pub fn has_flag(link: &serde_json::Value, flag: &str) -> bool {
    link["flags"]
        .as_array()
        .is_some_and(|f| f.iter().any(|x| x == flag))
}

fn json_array(text: &str) -> Vec<serde_json::Value> {
    if text.trim().is_empty() {
        return Vec::new();
    }
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(serde_json::Value::Array(v)) => v,
        Ok(other) => panic!("expected a JSON array from ip, got {other}"),
        Err(e) => panic!("bad JSON from ip: {e}: {text}"),
    }
}
