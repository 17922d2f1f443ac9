//! The daemon's network options: Docker's flags, defaults and compatibility checks.
//!
//! Options arrive as a [`RawConfig`] (every option optional, as typed on the command line or
//! read from daemon.json), are combined by [`RawConfig::merge`], and become a [`NetworkMode`]
//! through [`RawConfig::validate`], which applies Docker's defaults and checks.
//!
//! Check order, and why:
//! 1. values Docker parses while reading its flags: `--ip` (an `IPVar`) and `--mtu` (modern
//!    Docker's config validation runs before `verifyDaemonSettings`);
//! 2. Docker's compatibility checks, in its order (`NewDaemonFromDirectory` in 1.x,
//!    `verifyDaemonSettings` today): `-b` with `--bip`, then `--iptables=false` with `--icc=false`;
//! 3. `--ip-masq` silently forced off when `--iptables=false` (Docker >= 1.3.1; 1.3.0 refused);
//! 4. `-b none` disables networking, and nothing about the bridge is checked further;
//! 5. the values the bridge driver used, in the order it used them: the bridge name, `--bip`,
//!    `--fixed-cidr`.

use std::fmt;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::ifname::{IfName, IfNameError};

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
    /// `--firewall-backend` (Docker 29's option; default iptables).
    #[serde(default)]
    pub firewall_backend: FirewallBackend,
    /// `--bridge-mcast-snooping` (dockerd-net's option; default false): IGMP/MLD snooping on
    /// a bridge that init creates. See [`HELP_BRIDGE_MCAST_SNOOPING`] and
    /// [`crate::init::plan`] for why it is off by default.
    #[serde(default)]
    pub bridge_mcast_snooping: bool,
}

/// Where the rules live: iptables' tables (Docker's rules, `iptables-save` identical to
/// Docker's), or dockerd-net's own nftables table (see [`crate::nftables`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FirewallBackend {
    #[default]
    Iptables,
    Nftables,
}

impl FirewallBackend {
    /// The option's value.
    pub fn name(self) -> &'static str {
        match self {
            FirewallBackend::Iptables => "iptables",
            FirewallBackend::Nftables => "nftables",
        }
    }
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
            firewall_backend: FirewallBackend::Iptables,
            bridge_mcast_snooping: false,
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

/// The `-b` value that disables container networking.
pub const BRIDGE_NONE: &str = "none";

/// The smallest MTU accepted: IPv4's minimum datagram size (RFC 791).
pub const MIN_MTU: u32 = 68;
/// The largest MTU accepted.
pub const MAX_MTU: u32 = 65535;

/// Help text of `--iptables` (Docker 1.x, verbatim).
pub const HELP_IPTABLES: &str = "Enable Docker's addition of iptables rules";
/// Help text of `--ip-forward` (Docker 1.x, verbatim).
pub const HELP_IP_FORWARD: &str = "Enable net.ipv4.ip_forward";
/// Help text of `--ip-forward-no-drop` (modern Docker's option, which 1.x did not have).
pub const HELP_IP_FORWARD_NO_DROP: &str =
    "Do not set the filter FORWARD policy to DROP when enabling IP forwarding";
/// Help text of `--ip-masq` (Docker 1.3, verbatim).
pub const HELP_IP_MASQ: &str = "Enable IP masquerading for bridge's IP range";
/// Help text of `--bip` (Docker 1.x, verbatim).
pub const HELP_BIP: &str =
    "Use this CIDR notation address for the network bridge's IP, not compatible with -b";
/// Help text of `-b/--bridge` (Docker 1.x, verbatim).
pub const HELP_BRIDGE: &str = "Attach containers to a pre-existing network bridge\nuse 'none' to disable container networking";
/// Help text of `--fixed-cidr` (Docker 1.3, verbatim).
pub const HELP_FIXED_CIDR: &str = "IPv4 subnet for fixed IPs (ex: 10.20.0.0/16)\nthis subnet must be nested in the bridge subnet (which is defined by -b or --bip)";
/// Help text of `--icc` (Docker 1.x, verbatim).
pub const HELP_ICC: &str = "Enable inter-container communication";
/// Help text of `--mtu` (Docker 1.x, verbatim).
pub const HELP_MTU: &str = "Set the containers network MTU\nif no value is provided: default to the default route MTU or 1500 if no default route is available";
/// Help text of `--ip` (Docker 1.x, verbatim).
pub const HELP_IP: &str = "Default IP address to use when binding container ports";
/// Help text of `--userland-proxy` (modern Docker's, verbatim).
pub const HELP_USERLAND_PROXY: &str = "Use userland proxy for loopback traffic";
/// Help text of `--firewall-backend` (Docker 29's option; our text).
pub const HELP_FIREWALL_BACKEND: &str = "Where to put the firewall rules: \"iptables\" (Docker's rules in iptables' tables) or \"nftables\" (table ip docker-bridges, ports and links as set elements)";

/// Help text of `--bridge-mcast-snooping` (dockerd-net's option; our text).
pub const HELP_BRIDGE_MCAST_SNOOPING: &str = "Turn IGMP/MLD snooping on for a bridge this daemon creates (the kernel's default for new bridges). Off by default: Docker's bridge has no multicast querier, so the kernel floods multicast to every port either way, and snooping makes each container's attach and detach cost O(containers). An existing bridge is left as it is";

/// The network options as given, before defaults and checks: from the command line (only the
/// flags actually typed are `Some`) or from daemon.json, whose key names these are.
///
/// Unknown daemon.json keys are ignored by this type: the file configures a whole daemon, and
/// this project reads only its networking keys.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", default)]
pub struct RawConfig {
    /// `"iptables"` / `--iptables`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iptables: Option<bool>,
    /// `"ip-forward"` / `--ip-forward`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip_forward: Option<bool>,
    /// `"ip-forward-no-drop"` / `--ip-forward-no-drop`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip_forward_no_drop: Option<bool>,
    /// `"ip-masq"` / `--ip-masq`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip_masq: Option<bool>,
    /// `"bip"` / `--bip`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bip: Option<String>,
    /// `"bridge"` / `-b`, `--bridge`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bridge: Option<String>,
    /// `"fixed-cidr"` / `--fixed-cidr`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fixed_cidr: Option<String>,
    /// `"icc"` / `--icc`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub icc: Option<bool>,
    /// `"mtu"` / `--mtu`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// `"ip"` / `--ip`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// `"userland-proxy"` / `--userland-proxy`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub userland_proxy: Option<bool>,
    /// `"firewall-backend"` / `--firewall-backend`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub firewall_backend: Option<String>,
    /// `"bridge-mcast-snooping"` / `--bridge-mcast-snooping`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bridge_mcast_snooping: Option<bool>,
}

/// The outcome of validation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum NetworkMode {
    /// `-b none`: container networking is disabled and no bridge is touched.
    Disabled,
    /// The bridge network, configured.
    Bridge(Config),
}

/// One option given both as a flag and in daemon.json.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The daemon.json key (which is also the long flag's name).
    pub key: &'static str,
    /// The flag's value, as typed.
    pub flag: String,
    /// The file's value.
    pub file: String,
}

impl fmt::Display for Conflict {
    /// Docker's `printConflict`: `bip: (from flag: X, from file: Y)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: (from flag: {}, from file: {})",
            self.key, self.flag, self.file
        )
    }
}

/// Why the options cannot be used. Texts are Docker's where Docker had one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// Options given both as flags and in daemon.json, in key order (Docker's
    /// `findConfigurationConflicts`, which visits flags sorted by name).
    #[error(
        "the following directives are specified both as a flag and in the configuration file: {}",
        join(.0)
    )]
    Conflicts(Vec<Conflict>),
    /// `--firewall-backend` is neither value (Docker 29's `validateFirewallBackend`).
    #[error("invalid firewall-backend {0:?}: allowed values are \"iptables\" and \"nftables\"")]
    InvalidFirewallBackend(String),
    /// `--ip` is not an IPv4 address (Docker's `opts.IPVar` text).
    #[error("{0} is not an ip address")]
    InvalidIp(String),
    /// `--mtu` outside 68..=65535.
    #[error("invalid MTU number: {0}: it must be between 68 and 65535")]
    InvalidMtu(u32),
    /// Docker's first compatibility check (modern text, no trailing period).
    #[error("You specified -b & --bip, mutually exclusive options. Please specify only one")]
    BridgeWithBip,
    /// Docker's second compatibility check (modern text).
    #[error(
        "You specified --iptables=false with --icc=false. ICC=false uses iptables to function. Please set --icc or --iptables to true"
    )]
    IccWithoutIptables,
    /// `-b` is not a valid interface name. The name error is part of the text, not a `source()`,
    /// so that an error chain does not print it twice.
    #[error("invalid bridge name: {0}")]
    InvalidBridge(IfNameError),
    /// `--bip` is not an IPv4 CIDR (modern Docker's wrapping of Go's `ParseCIDR` error).
    #[error("parse bip failed: invalid CIDR address: {0}")]
    InvalidBip(String),
    /// `--bip` is the network address of its prefix, which the bridge cannot hold
    /// (moby/moby#22638: `failed to allocate gateway`).
    #[error(
        "invalid bip {value}: {addr} is the network address of {network}; give the bridge a host address such as {suggestion}"
    )]
    BipIsNetworkAddress {
        /// The value as given.
        value: String,
        /// Its address.
        addr: Ipv4Addr,
        /// Its network.
        network: Ipv4Net,
        /// The first host address with the same prefix.
        suggestion: Ipv4Net,
    },
    /// `--bip` is the broadcast address of its prefix.
    #[error(
        "invalid bip {value}: {addr} is the broadcast address of {network}; give the bridge a host address such as {suggestion}"
    )]
    BipIsBroadcastAddress {
        /// The value as given.
        value: String,
        /// Its address.
        addr: Ipv4Addr,
        /// Its network.
        network: Ipv4Net,
        /// The first host address with the same prefix.
        suggestion: Ipv4Net,
    },
    /// `--bip` is a /31 or /32: no address is left for containers.
    #[error(
        "invalid bip {0}: a /31 or /32 network leaves no address for containers; use a prefix of /30 or shorter"
    )]
    BipTooSmall(String),
    /// `--fixed-cidr` is not an IPv4 CIDR (modern Docker's text).
    #[error("parse fixed-cidr failed: invalid CIDR address: {0}")]
    InvalidFixedCidr(String),
    /// `--fixed-cidr` is not inside the network of `--bip`.
    #[error("fixed-cidr {fixed_cidr} is not inside the bridge network {network} (from bip {bip})")]
    FixedCidrOutsideBip {
        /// The fixed-cidr, masked.
        fixed_cidr: Ipv4Net,
        /// The bip as given (host address with prefix).
        bip: Ipv4Net,
        /// The bip's network.
        network: Ipv4Net,
    },
}

fn join(conflicts: &[Conflict]) -> String {
    conflicts
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

impl RawConfig {
    /// Combines the command-line flags with daemon.json. An option set in both is an error even
    /// when the values agree, as in Docker; all such options are reported at once, sorted by key.
    pub fn merge(flags: RawConfig, file: RawConfig) -> Result<RawConfig, ConfigError> {
        let mut conflicts = Vec::new();
        // Keys in lexicographic order, the order Docker's `flags.Visit` reports them in.
        let bip = pick("bip", flags.bip, file.bip, &mut conflicts);
        let bridge = pick("bridge", flags.bridge, file.bridge, &mut conflicts);
        let bridge_mcast_snooping = pick(
            "bridge-mcast-snooping",
            flags.bridge_mcast_snooping,
            file.bridge_mcast_snooping,
            &mut conflicts,
        );
        let firewall_backend = pick(
            "firewall-backend",
            flags.firewall_backend,
            file.firewall_backend,
            &mut conflicts,
        );
        let fixed_cidr = pick(
            "fixed-cidr",
            flags.fixed_cidr,
            file.fixed_cidr,
            &mut conflicts,
        );
        let icc = pick("icc", flags.icc, file.icc, &mut conflicts);
        let ip = pick("ip", flags.ip, file.ip, &mut conflicts);
        let ip_forward = pick(
            "ip-forward",
            flags.ip_forward,
            file.ip_forward,
            &mut conflicts,
        );
        let ip_forward_no_drop = pick(
            "ip-forward-no-drop",
            flags.ip_forward_no_drop,
            file.ip_forward_no_drop,
            &mut conflicts,
        );
        let ip_masq = pick("ip-masq", flags.ip_masq, file.ip_masq, &mut conflicts);
        let iptables = pick("iptables", flags.iptables, file.iptables, &mut conflicts);
        let mtu = pick("mtu", flags.mtu, file.mtu, &mut conflicts);
        let userland_proxy = pick(
            "userland-proxy",
            flags.userland_proxy,
            file.userland_proxy,
            &mut conflicts,
        );
        if !conflicts.is_empty() {
            return Err(ConfigError::Conflicts(conflicts));
        }
        Ok(RawConfig {
            iptables,
            ip_forward,
            ip_forward_no_drop,
            ip_masq,
            bip,
            bridge,
            fixed_cidr,
            icc,
            mtu,
            ip,
            userland_proxy,
            firewall_backend,
            bridge_mcast_snooping,
        })
    }

    /// Applies Docker's defaults and checks (in the order given in the module documentation).
    ///
    /// Defaults: iptables, ip-forward, ip-masq, icc and userland-proxy on; ip-forward-no-drop
    /// off; bridge `docker0`; `--ip` 0.0.0.0; no bip, fixed-cidr or MTU. An empty string for
    /// `bip`, `bridge` or `fixed-cidr` is Docker's default value and means "not given"; so does
    /// an MTU of 0 (Docker's flag default, "use the default MTU").
    pub fn validate(self) -> Result<NetworkMode, ConfigError> {
        // 1. Values Docker parses with its flags.
        let default_ip = match self.ip {
            None => Ipv4Addr::UNSPECIFIED,
            Some(ip) => ip
                .parse::<Ipv4Addr>()
                .map_err(|_| ConfigError::InvalidIp(ip))?,
        };
        let mtu = match self.mtu {
            None | Some(0) => None,
            Some(mtu) if (MIN_MTU..=MAX_MTU).contains(&mtu) => Some(mtu),
            Some(mtu) => return Err(ConfigError::InvalidMtu(mtu)),
        };
        let firewall_backend = match self.firewall_backend.as_deref() {
            None | Some("") | Some("iptables") => FirewallBackend::Iptables,
            Some("nftables") => FirewallBackend::Nftables,
            Some(other) => return Err(ConfigError::InvalidFirewallBackend(other.to_owned())),
        };
        let iptables = self.iptables.unwrap_or(true);
        let icc = self.icc.unwrap_or(true);
        let bridge = self.bridge.filter(|b| !b.is_empty());
        let bip = self.bip.filter(|b| !b.is_empty());
        let fixed_cidr = self.fixed_cidr.filter(|f| !f.is_empty());

        // 2. Docker's compatibility checks, in Docker's order.
        if bridge.is_some() && bip.is_some() {
            return Err(ConfigError::BridgeWithBip);
        }
        if !iptables && !icc {
            return Err(ConfigError::IccWithoutIptables);
        }

        // 3. Docker 1.3.0 refused --iptables=false with --ip-masq=true; 1.3.1 and every later
        // version turn masquerading off instead, since it needs iptables.
        let ip_masq = iptables && self.ip_masq.unwrap_or(true);

        // 4. `-b none` disables networking before anything about the bridge is looked at.
        if bridge.as_deref() == Some(BRIDGE_NONE) {
            return Ok(NetworkMode::Disabled);
        }

        // 5. The bridge driver's values.
        let bridge = bridge
            .map(|b| IfName::new(&b).map_err(ConfigError::InvalidBridge))
            .transpose()?;
        let bip = bip.map(|b| parse_bip(&b)).transpose()?;
        let fixed_cidr = fixed_cidr
            .map(|f| {
                parse_cidr(&f)
                    .map(|net| net.trunc())
                    .ok_or(ConfigError::InvalidFixedCidr(f))
            })
            .transpose()?;
        // With --bip the network is known now. With -b (or docker0 without --bip) it is known
        // only once the bridge is read, so that check belongs to the ipam. Docker 1.3 also
        // refused a fixed-cidr starting at the network address (moby/moby#10382); modern Docker
        // does not, and neither does this.
        if let (Some(fixed), Some(bip)) = (fixed_cidr, bip)
            && !bip.trunc().contains(&fixed)
        {
            return Err(ConfigError::FixedCidrOutsideBip {
                fixed_cidr: fixed,
                bip,
                network: bip.trunc(),
            });
        }

        Ok(NetworkMode::Bridge(Config {
            iptables,
            ip_forward: self.ip_forward.unwrap_or(true),
            ip_forward_no_drop: self.ip_forward_no_drop.unwrap_or(false),
            ip_masq,
            bip,
            bridge,
            fixed_cidr,
            icc,
            mtu,
            default_ip,
            userland_proxy: self.userland_proxy.unwrap_or(true),
            firewall_backend,
            bridge_mcast_snooping: self.bridge_mcast_snooping.unwrap_or(false),
        }))
    }
}

/// Keeps whichever of flag and file is set, recording a conflict when both are.
fn pick<T: ToString>(
    key: &'static str,
    flag: Option<T>,
    file: Option<T>,
    conflicts: &mut Vec<Conflict>,
) -> Option<T> {
    match (flag, file) {
        (Some(flag), Some(file)) => {
            conflicts.push(Conflict {
                key,
                flag: flag.to_string(),
                file: file.to_string(),
            });
            None
        }
        (flag, file) => flag.or(file),
    }
}

/// An IPv4 `address/prefix`, strict as Go's `net.ParseCIDR` (Go >= 1.17: no leading zeros in
/// the address) and IPv4 only.
fn parse_cidr(s: &str) -> Option<Ipv4Net> {
    let (addr, prefix) = s.split_once('/')?;
    let addr: Ipv4Addr = addr.parse().ok()?;
    if prefix.is_empty() || prefix.len() > 2 || !prefix.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let prefix: u8 = prefix.parse().ok()?;
    Ipv4Net::new(addr, prefix).ok()
}

/// `--bip`: a CIDR whose address is a host address of a network with room for containers.
///
/// Docker 1.x took any CIDR; modern Docker fails on a network or broadcast address only deep in
/// the IPAM ("failed to allocate gateway ... Address already in use", moby/moby#22638), so it is
/// refused here, up front, naming the value.
fn parse_bip(value: &str) -> Result<Ipv4Net, ConfigError> {
    let bip = parse_cidr(value).ok_or_else(|| ConfigError::InvalidBip(value.to_owned()))?;
    if bip.prefix_len() >= 31 {
        return Err(ConfigError::BipTooSmall(value.to_owned()));
    }
    let network = bip.trunc();
    // A /30 or shorter has at least two host addresses, so these never leave the network.
    let first_host = Ipv4Addr::from(u32::from(network.network()) + 1);
    let suggestion = Ipv4Net::new(first_host, bip.prefix_len()).unwrap_or(bip);
    if bip.addr() == network.network() {
        return Err(ConfigError::BipIsNetworkAddress {
            value: value.to_owned(),
            addr: bip.addr(),
            network,
            suggestion,
        });
    }
    if bip.addr() == network.broadcast() {
        return Err(ConfigError::BipIsBroadcastAddress {
            value: value.to_owned(),
            addr: bip.addr(),
            network,
            suggestion,
        });
    }
    Ok(bip)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().expect("test CIDR")
    }

    fn bridge(mode: NetworkMode) -> Config {
        match mode {
            NetworkMode::Bridge(c) => c,
            NetworkMode::Disabled => panic!("expected the bridge mode"),
        }
    }

    fn err(raw: RawConfig) -> String {
        raw.validate().expect_err("invalid config").to_string()
    }

    #[test]
    fn defaults_are_dockers() {
        let c = bridge(RawConfig::default().validate().expect("valid"));
        assert_eq!(c, Config::default());
        assert!(c.iptables && c.ip_forward && c.ip_masq && c.icc && c.userland_proxy);
        assert!(!c.bridge_mcast_snooping, "snooping off unless asked for");
        assert!(!c.ip_forward_no_drop);
        assert_eq!(c.bridge_name(), "docker0");
        assert!(!c.user_named_bridge());
        assert_eq!(c.default_ip, Ipv4Addr::UNSPECIFIED);
        assert_eq!((c.bip, c.fixed_cidr, c.mtu), (None, None, None));
    }

    #[test]
    fn values_are_carried_over() {
        let c = bridge(
            RawConfig {
                iptables: Some(true),
                ip_forward: Some(false),
                ip_forward_no_drop: Some(true),
                ip_masq: Some(false),
                bip: Some("10.20.0.1/16".into()),
                fixed_cidr: Some("10.20.1.7/24".into()),
                icc: Some(false),
                mtu: Some(9000),
                ip: Some("127.0.0.1".into()),
                userland_proxy: Some(false),
                bridge: None,
                firewall_backend: Some("nftables".into()),
                bridge_mcast_snooping: Some(true),
            }
            .validate()
            .expect("valid"),
        );
        assert!(c.iptables && !c.ip_forward && c.ip_forward_no_drop && !c.ip_masq && !c.icc);
        assert!(!c.userland_proxy);
        assert_eq!(c.firewall_backend, FirewallBackend::Nftables);
        assert!(c.bridge_mcast_snooping);
        assert_eq!(c.bip, Some(net("10.20.0.1/16")), "bip stays unmasked");
        assert_eq!(
            c.fixed_cidr,
            Some(net("10.20.1.0/24")),
            "fixed-cidr is masked"
        );
        assert_eq!(c.mtu, Some(9000));
        assert_eq!(c.default_ip, Ipv4Addr::LOCALHOST);
    }

    #[test]
    fn bridge_with_bip_is_refused_with_dockers_text() {
        let raw = RawConfig {
            bridge: Some("br0".into()),
            bip: Some("10.0.0.1/24".into()),
            ..RawConfig::default()
        };
        assert_eq!(
            err(raw),
            "You specified -b & --bip, mutually exclusive options. Please specify only one"
        );
    }

    #[test]
    fn icc_false_needs_iptables() {
        let raw = RawConfig {
            iptables: Some(false),
            icc: Some(false),
            ..RawConfig::default()
        };
        assert_eq!(
            err(raw),
            "You specified --iptables=false with --icc=false. ICC=false uses iptables to function. Please set --icc or --iptables to true"
        );
        // Each alone is fine.
        for (iptables, icc) in [(false, true), (true, false)] {
            let raw = RawConfig {
                iptables: Some(iptables),
                icc: Some(icc),
                ..RawConfig::default()
            };
            assert!(raw.validate().is_ok(), "iptables={iptables} icc={icc}");
        }
    }

    #[test]
    fn the_first_compatibility_check_comes_first() {
        let raw = RawConfig {
            bridge: Some("br0".into()),
            bip: Some("10.0.0.1/24".into()),
            iptables: Some(false),
            icc: Some(false),
            ..RawConfig::default()
        };
        assert_eq!(raw.validate(), Err(ConfigError::BridgeWithBip));
    }

    #[test]
    fn ip_masq_is_silently_off_without_iptables() {
        for masq in [None, Some(true), Some(false)] {
            let raw = RawConfig {
                iptables: Some(false),
                ip_masq: masq,
                ..RawConfig::default()
            };
            let c = bridge(raw.validate().expect("1.3.1+ accepts it"));
            assert!(!c.ip_masq, "ip-masq {masq:?}");
            assert!(!c.iptables);
        }
    }

    #[test]
    fn bridge_none_disables_networking() {
        let raw = RawConfig {
            bridge: Some("none".into()),
            // Invalid, but never looked at once networking is off.
            fixed_cidr: Some("garbage".into()),
            ..RawConfig::default()
        };
        assert_eq!(raw.validate(), Ok(NetworkMode::Disabled));
    }

    #[test]
    fn bridge_none_still_goes_through_the_compatibility_checks() {
        let raw = RawConfig {
            bridge: Some("none".into()),
            bip: Some("10.0.0.1/24".into()),
            ..RawConfig::default()
        };
        assert_eq!(raw.validate(), Err(ConfigError::BridgeWithBip));
        let raw = RawConfig {
            bridge: Some("none".into()),
            iptables: Some(false),
            icc: Some(false),
            ..RawConfig::default()
        };
        assert_eq!(raw.validate(), Err(ConfigError::IccWithoutIptables));
    }

    #[test]
    fn empty_strings_mean_not_given() {
        let raw = RawConfig {
            bridge: Some(String::new()),
            bip: Some(String::new()),
            fixed_cidr: Some(String::new()),
            mtu: Some(0),
            ..RawConfig::default()
        };
        assert_eq!(raw.validate().map(bridge), Ok(Config::default()));
    }

    #[test]
    fn a_named_bridge_is_kept() {
        let raw = RawConfig {
            bridge: Some("br-ext".into()),
            fixed_cidr: Some("10.99.0.0/24".into()),
            ..RawConfig::default()
        };
        let c = bridge(raw.validate().expect("valid"));
        assert_eq!(c.bridge_name(), "br-ext");
        assert!(c.user_named_bridge());
        // Not checkable yet: the bridge's network is unknown.
        assert_eq!(c.fixed_cidr, Some(net("10.99.0.0/24")));
    }

    #[test]
    fn bad_bridge_names_are_refused_naming_the_value() {
        let long = "a".repeat(16);
        let raw = RawConfig {
            bridge: Some(long.clone()),
            ..RawConfig::default()
        };
        assert_eq!(
            err(raw),
            format!("invalid bridge name: Interface name {long} too long")
        );
        let raw = RawConfig {
            bridge: Some("br/0".into()),
            ..RawConfig::default()
        };
        let text = err(raw);
        assert!(text.starts_with("invalid bridge name: "), "{text}");
        assert!(text.contains("\"br/0\""), "{text}");
    }

    #[test]
    fn bad_ip_is_refused_with_dockers_text() {
        for bad in ["localhost", "1.2.3", "::1", "", "1.2.3.256", "01.2.3.4"] {
            let raw = RawConfig {
                ip: Some(bad.into()),
                ..RawConfig::default()
            };
            assert_eq!(err(raw), format!("{bad} is not an ip address"));
        }
    }

    #[test]
    fn mtu_bounds() {
        for ok in [68, 1500, 65535] {
            let raw = RawConfig {
                mtu: Some(ok),
                ..RawConfig::default()
            };
            assert_eq!(raw.validate().map(|m| bridge(m).mtu), Ok(Some(ok)));
        }
        for bad in [1, 67, 65536, u32::MAX] {
            let raw = RawConfig {
                mtu: Some(bad),
                ..RawConfig::default()
            };
            assert_eq!(
                err(raw),
                format!("invalid MTU number: {bad}: it must be between 68 and 65535")
            );
        }
    }

    #[test]
    fn bad_bip_is_refused_naming_the_value() {
        for bad in [
            "172.17.42.1",
            "172.17.42.1/",
            "172.17.42.1/33",
            "172.17.42.1/016",
            "true",
            "fe80::1/64",
            "300.1.1.1/8",
            " 10.0.0.1/8",
        ] {
            let raw = RawConfig {
                bip: Some(bad.into()),
                ..RawConfig::default()
            };
            assert_eq!(
                err(raw),
                format!("parse bip failed: invalid CIDR address: {bad}")
            );
        }
    }

    #[test]
    fn bip_must_be_a_host_address() {
        let raw = RawConfig {
            bip: Some("172.17.0.0/16".into()),
            ..RawConfig::default()
        };
        assert_eq!(
            err(raw),
            "invalid bip 172.17.0.0/16: 172.17.0.0 is the network address of 172.17.0.0/16; \
             give the bridge a host address such as 172.17.0.1/16"
        );
        let raw = RawConfig {
            bip: Some("192.168.5.255/24".into()),
            ..RawConfig::default()
        };
        assert_eq!(
            err(raw),
            "invalid bip 192.168.5.255/24: 192.168.5.255 is the broadcast address of 192.168.5.0/24; \
             give the bridge a host address such as 192.168.5.1/24"
        );
        for small in ["10.0.0.1/31", "10.0.0.1/32"] {
            let raw = RawConfig {
                bip: Some(small.into()),
                ..RawConfig::default()
            };
            assert_eq!(
                raw.validate(),
                Err(ConfigError::BipTooSmall(small.into())),
                "{small}"
            );
        }
        // The smallest usable network: /30 with a host address.
        let raw = RawConfig {
            bip: Some("10.0.0.2/30".into()),
            ..RawConfig::default()
        };
        assert_eq!(
            raw.validate().map(|m| bridge(m).bip),
            Ok(Some(net("10.0.0.2/30")))
        );
    }

    #[test]
    fn bad_fixed_cidr_is_refused_naming_the_value() {
        let raw = RawConfig {
            fixed_cidr: Some("10.20.0.0".into()),
            ..RawConfig::default()
        };
        assert_eq!(
            err(raw),
            "parse fixed-cidr failed: invalid CIDR address: 10.20.0.0"
        );
    }

    #[test]
    fn fixed_cidr_must_be_inside_bip() {
        let outside = RawConfig {
            bip: Some("10.20.0.1/16".into()),
            fixed_cidr: Some("10.21.0.0/24".into()),
            ..RawConfig::default()
        };
        assert_eq!(
            err(outside),
            "fixed-cidr 10.21.0.0/24 is not inside the bridge network 10.20.0.0/16 (from bip 10.20.0.1/16)"
        );
        let bigger = RawConfig {
            bip: Some("10.20.0.1/24".into()),
            fixed_cidr: Some("10.20.0.0/16".into()),
            ..RawConfig::default()
        };
        assert!(matches!(
            bigger.validate(),
            Err(ConfigError::FixedCidrOutsideBip { .. })
        ));
        // Starting at the network address is fine (the 1.3 quirk of moby/moby#10382 is gone),
        // and so is the whole network.
        for ok in ["10.20.0.0/24", "10.20.0.0/16", "10.20.255.128/25"] {
            let raw = RawConfig {
                bip: Some("10.20.0.1/16".into()),
                fixed_cidr: Some(ok.into()),
                ..RawConfig::default()
            };
            assert!(raw.validate().is_ok(), "{ok}");
        }
    }

    #[test]
    fn flag_parse_errors_come_before_compatibility_checks() {
        let raw = RawConfig {
            ip: Some("nope".into()),
            bridge: Some("br0".into()),
            bip: Some("10.0.0.1/24".into()),
            ..RawConfig::default()
        };
        assert_eq!(raw.validate(), Err(ConfigError::InvalidIp("nope".into())));
        let raw = RawConfig {
            mtu: Some(10),
            iptables: Some(false),
            icc: Some(false),
            ..RawConfig::default()
        };
        assert_eq!(raw.validate(), Err(ConfigError::InvalidMtu(10)));
        let raw = RawConfig {
            ip: Some("nope".into()),
            mtu: Some(10),
            ..RawConfig::default()
        };
        assert_eq!(raw.validate(), Err(ConfigError::InvalidIp("nope".into())));
    }

    #[test]
    fn compatibility_checks_come_before_driver_values() {
        let raw = RawConfig {
            iptables: Some(false),
            icc: Some(false),
            bip: Some("garbage".into()),
            ..RawConfig::default()
        };
        assert_eq!(raw.validate(), Err(ConfigError::IccWithoutIptables));
        let raw = RawConfig {
            bridge: Some("a/b".into()),
            bip: Some("garbage".into()),
            ..RawConfig::default()
        };
        assert_eq!(raw.validate(), Err(ConfigError::BridgeWithBip));
    }

    #[test]
    fn driver_values_in_order_bridge_bip_fixed_cidr() {
        let raw = RawConfig {
            bridge: Some("a/b".into()),
            fixed_cidr: Some("garbage".into()),
            ..RawConfig::default()
        };
        assert!(matches!(raw.validate(), Err(ConfigError::InvalidBridge(_))));
        let raw = RawConfig {
            bip: Some("garbage".into()),
            fixed_cidr: Some("garbage".into()),
            ..RawConfig::default()
        };
        assert_eq!(
            raw.validate(),
            Err(ConfigError::InvalidBip("garbage".into()))
        );
    }

    #[test]
    fn merge_takes_each_key_from_where_it_is_set() {
        let flags = RawConfig {
            bip: Some("10.0.0.1/24".into()),
            icc: Some(false),
            ..RawConfig::default()
        };
        let file = RawConfig {
            mtu: Some(1400),
            iptables: Some(true),
            ..RawConfig::default()
        };
        let merged = RawConfig::merge(flags, file).expect("no conflict");
        assert_eq!(
            merged,
            RawConfig {
                bip: Some("10.0.0.1/24".into()),
                icc: Some(false),
                mtu: Some(1400),
                iptables: Some(true),
                ..RawConfig::default()
            }
        );
    }

    #[test]
    fn merge_refuses_a_key_set_twice_with_dockers_text() {
        let flags = RawConfig {
            bip: Some("10.0.0.1/24".into()),
            ..RawConfig::default()
        };
        let file = RawConfig {
            bip: Some("10.1.0.1/24".into()),
            ..RawConfig::default()
        };
        assert_eq!(
            RawConfig::merge(flags, file).map_err(|e| e.to_string()),
            Err("the following directives are specified both as a flag and in the configuration file: \
                 bip: (from flag: 10.0.0.1/24, from file: 10.1.0.1/24)"
                .to_owned())
        );
    }

    #[test]
    fn merge_reports_every_conflict_in_key_order_even_equal_ones() {
        let all = RawConfig {
            iptables: Some(true),
            ip_forward: Some(true),
            ip_forward_no_drop: Some(false),
            ip_masq: Some(true),
            bip: Some("10.0.0.1/24".into()),
            bridge: Some("br0".into()),
            fixed_cidr: Some("10.0.0.0/25".into()),
            icc: Some(true),
            mtu: Some(1500),
            ip: Some("0.0.0.0".into()),
            userland_proxy: Some(true),
            firewall_backend: Some("iptables".into()),
            bridge_mcast_snooping: Some(false),
        };
        let Err(ConfigError::Conflicts(conflicts)) = RawConfig::merge(all.clone(), all) else {
            panic!("expected conflicts");
        };
        let keys: Vec<&str> = conflicts.iter().map(|c| c.key).collect();
        assert_eq!(
            keys,
            [
                "bip",
                "bridge",
                "bridge-mcast-snooping",
                "firewall-backend",
                "fixed-cidr",
                "icc",
                "ip",
                "ip-forward",
                "ip-forward-no-drop",
                "ip-masq",
                "iptables",
                "mtu",
                "userland-proxy"
            ]
        );
        let mut sorted = keys.clone();
        sorted.sort_unstable();
        assert_eq!(keys, sorted);
        let text = ConfigError::Conflicts(conflicts).to_string();
        assert!(
            text.ends_with(
                "mtu: (from flag: 1500, from file: 1500), userland-proxy: (from flag: true, from file: true)"
            ),
            "{text}"
        );
    }

    #[test]
    fn help_texts_are_dockers() {
        assert_eq!(HELP_IPTABLES, "Enable Docker's addition of iptables rules");
        assert_eq!(
            HELP_BRIDGE.lines().collect::<Vec<_>>(),
            [
                "Attach containers to a pre-existing network bridge",
                "use 'none' to disable container networking"
            ]
        );
        assert!(HELP_FIXED_CIDR.starts_with("IPv4 subnet for fixed IPs (ex: 10.20.0.0/16)\n"));
        assert!(HELP_MTU.starts_with("Set the containers network MTU\n"));
    }
}
