//! The daemon's network options: Docker's flags, defaults and compatibility checks.
//!
//! (Skeleton: the validated configuration. Parsing and checks are filled in below.)

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::ifname::IfName;

/// The bridge Docker uses when `-b` is not given.
pub const DEFAULT_BRIDGE: &str = "docker0";

/// A validated bridge-network configuration (networking enabled).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    /// `--iptables` (default true).
    pub iptables: bool,
    /// `--ip-forward` (default true).
    pub ip_forward: bool,
    /// `--ip-forward-no-drop` (default false): do not set FORWARD's policy to DROP.
    pub ip_forward_no_drop: bool,
    /// `--ip-masq` (default true; forced false when `iptables` is false, as Docker ≥ 1.3.1 does).
    pub ip_masq: bool,
    /// `--bip`: the bridge's host address with its prefix, e.g. `172.17.42.1/16`.
    pub bip: Option<Ipv4Net>,
    /// `-b/--bridge`: a pre-existing bridge. `None` means the default bridge `docker0`.
    pub bridge: Option<IfName>,
    /// `--fixed-cidr`: the sub-range containers get addresses from (masked).
    pub fixed_cidr: Option<Ipv4Net>,
    /// `--icc` (default true).
    pub icc: bool,
    /// `--mtu`; `None` when not given.
    pub mtu: Option<u32>,
    /// `--ip`: the default host IP for published ports (default 0.0.0.0).
    pub default_ip: Ipv4Addr,
    /// `--userland-proxy` (default true); false means hairpin NAT.
    pub userland_proxy: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            iptables: true,
            ip_forward: true,
            ip_forward_no_drop: false,
            ip_masq: true,
            bip: None,
            bridge: None,
            fixed_cidr: None,
            icc: true,
            mtu: None,
            default_ip: Ipv4Addr::UNSPECIFIED,
            userland_proxy: true,
        }
    }
}

impl Config {
    /// The bridge name: `-b` if given, else `docker0`.
    pub fn bridge_name(&self) -> &str {
        self.bridge.as_ref().map_or(DEFAULT_BRIDGE, IfName::as_str)
    }

    /// True when the user named the bridge with `-b` (which must then exist).
    pub fn user_named_bridge(&self) -> bool {
        self.bridge.is_some()
    }
}
