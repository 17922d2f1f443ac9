//! Docker's network flags, with Docker's spellings and help texts, and `daemon.json`.

use std::path::Path;

use anyhow::{Context, Result};
use clap::Args;
use netcore::config::{
    HELP_BIP, HELP_BRIDGE, HELP_BRIDGE_MCAST_SNOOPING, HELP_FIREWALL_BACKEND, HELP_FIXED_CIDR,
    HELP_ICC, HELP_IP, HELP_IP_FORWARD, HELP_IP_FORWARD_NO_DROP, HELP_IP_MASQ, HELP_IPTABLES,
    HELP_MTU, HELP_USERLAND_PROXY, NetworkMode, RawConfig,
};

/// The network flags. Every one is optional here so that a flag can be told apart from a
/// daemon.json key (setting both is an error, as in Docker); defaults are netcore's.
#[derive(Debug, Args)]
pub struct NetFlags {
    #[arg(long, global = true, help = HELP_IPTABLES, value_name = "BOOL",
          num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    iptables: Option<bool>,

    #[arg(long = "ip-forward", global = true, help = HELP_IP_FORWARD, value_name = "BOOL",
          num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    ip_forward: Option<bool>,

    #[arg(long = "ip-forward-no-drop", global = true, help = HELP_IP_FORWARD_NO_DROP,
          value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true")]
    ip_forward_no_drop: Option<bool>,

    #[arg(long = "ip-masq", global = true, help = HELP_IP_MASQ, value_name = "BOOL",
          num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    ip_masq: Option<bool>,

    #[arg(long, global = true, help = HELP_BIP, value_name = "CIDR")]
    bip: Option<String>,

    #[arg(short = 'b', long, global = true, help = HELP_BRIDGE, value_name = "NAME")]
    bridge: Option<String>,

    #[arg(long = "fixed-cidr", global = true, help = HELP_FIXED_CIDR, value_name = "CIDR")]
    fixed_cidr: Option<String>,

    #[arg(long, global = true, help = HELP_ICC, value_name = "BOOL",
          num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    icc: Option<bool>,

    #[arg(long, global = true, help = HELP_MTU, value_name = "BYTES")]
    mtu: Option<u32>,

    #[arg(long, global = true, help = HELP_IP, value_name = "IP")]
    ip: Option<String>,

    #[arg(long = "userland-proxy", global = true, help = HELP_USERLAND_PROXY,
          value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true")]
    userland_proxy: Option<bool>,

    #[arg(long = "firewall-backend", global = true, help = HELP_FIREWALL_BACKEND,
          value_name = "iptables|nftables")]
    firewall_backend: Option<String>,

    #[arg(long = "bridge-mcast-snooping", global = true, help = HELP_BRIDGE_MCAST_SNOOPING,
          value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true")]
    bridge_mcast_snooping: Option<bool>,
}

impl NetFlags {
    fn raw(&self) -> RawConfig {
        RawConfig {
            iptables: self.iptables,
            ip_forward: self.ip_forward,
            ip_forward_no_drop: self.ip_forward_no_drop,
            ip_masq: self.ip_masq,
            bip: self.bip.clone(),
            bridge: self.bridge.clone(),
            fixed_cidr: self.fixed_cidr.clone(),
            icc: self.icc,
            mtu: self.mtu,
            ip: self.ip.clone(),
            userland_proxy: self.userland_proxy,
            firewall_backend: self.firewall_backend.clone(),
            bridge_mcast_snooping: self.bridge_mcast_snooping,
        }
    }
}

/// Flags merged with the config file (if any), checked as Docker checks them.
pub fn resolve(flags: &NetFlags, config_file: Option<&Path>) -> Result<NetworkMode> {
    let raw = match config_file {
        None => flags.raw(),
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading config file {}", path.display()))?;
            let file: RawConfig = serde_json::from_str(&text)
                .with_context(|| format!("parsing config file {}", path.display()))?;
            RawConfig::merge(flags.raw(), file).with_context(|| {
                format!(
                    "unable to configure the daemon with file {}",
                    path.display()
                )
            })?
        }
    };
    Ok(raw.validate()?)
}
