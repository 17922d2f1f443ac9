//! `netcore`: every decision the Docker daemon makes for its bridge network, as pure code.
//!
//! Nothing here performs I/O, spawns a runtime or uses `unsafe`. The host is described to
//! netcore as plain values ([`ops::HostFacts`]) and acted upon only through the traits
//! [`ops::LinkOps`], [`ops::FirewallOps`] and [`ops::SysctlOps`], which the backend crates
//! implement. Each decision lives in the module named for it:
//!
//! | module | decides |
//! |---|---|
//! | [`config`] | the daemon's network options, their defaults and compatibility checks |
//! | [`ifname`] | what a valid interface name is |
//! | [`bridge`] | which bridge to use: reuse, create, or refuse |
//! | [`subnet`] | which candidate subnet a new bridge gets |
//! | [`netrange`] | network ranges and overlaps (Docker's `utils.go`) |
//! | [`resolvconf`] | which nameservers a resolv.conf names |
//! | [`kernel`] | how a kernel release string parses |
//! | [`mac`] | bridge and container MAC addresses |
//! | [`ipam`] | which IP a container gets |
//! | [`ports`] | which host port a mapping gets |
//! | [`firewall`] | the iptables rules, as data |
//! | [`nftables`] | the native nftables table (`--firewall-backend nftables`): sets, maps, chains |
//! | [`init`] | the start-up sequence, its rollback and idempotence |
//! | [`attach`] | plugging a container's namespace into the bridge |
//! | [`handlers`] | the per-container requests |
//! | [`teardown`] | what init changed, and how to take it back |
//! | [`ops`] | the traits over the host, and the facts read from it |
#![forbid(unsafe_code)]

pub mod attach;
pub mod bridge;
pub mod config;
pub mod firewall;
pub mod handlers;
pub mod ifname;
pub mod init;
pub mod ipam;
pub mod kernel;
pub mod mac;
pub mod netrange;
pub mod nftables;
pub mod ops;
pub mod ports;
pub mod resolvconf;
pub mod subnet;
pub mod teardown;
