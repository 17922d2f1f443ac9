//! The HTTP API's messages (version 1), shared by the daemon and the CLI client.
//! `docs/openapi.json` describes the same shapes; keep the two in step.
//!
//! Requests refuse unknown fields: a typo in a field name must be an error, not a silently
//! ignored option.

use std::net::Ipv4Addr;

use netcore::firewall::PortMapping;
use netcore::handlers::{Endpoint, Interface, LinkSpec};
use serde::{Deserialize, Serialize};

/// The API version prefix.
pub const PREFIX: &str = "/v1";

/// The default socket.
pub const DEFAULT_HOST: &str = "unix:///run/dockerd-net.sock";

/// Largest request body accepted (anything larger is refused with 413).
pub const MAX_BODY: usize = 64 * 1024;

/// `POST /v1/allocate_interface`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllocateInterface {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_mac: Option<String>,
}

/// Answer to `allocate_interface` (201 when new, 200 when the container had it already).
pub type InterfaceReply = Interface;

/// `POST /v1/release_interface`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseInterface {
    pub id: String,
}

/// Answer to `release_interface`: what the container had.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Released {
    pub id: String,
    pub ip: Ipv4Addr,
    pub ports: Vec<PortMapping>,
}

/// `POST /v1/allocate_port`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllocatePort {
    pub id: String,
    /// Default: the daemon's `--ip` (0.0.0.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<String>,
    /// Absent or 0: the next free port of 49153-65535.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_port: Option<u16>,
    pub container_port: u16,
    /// `tcp` (default), `udp` or `sctp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proto: Option<String>,
}

/// `POST /v1/release_port`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleasePort {
    pub id: String,
    pub host_ip: String,
    pub host_port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proto: Option<String>,
}

/// Answer to `allocate_port` / `release_port`.
pub type PortReply = PortMapping;

/// `POST /v1/link`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Link {
    pub parent_ip: String,
    pub child_ip: String,
    /// Docker's `"port/proto"` strings, e.g. `"5432/tcp"` (a bare port means tcp).
    pub ports: Vec<String>,
    pub enable: bool,
}

/// Answer to `link`: the link specs that changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkReply {
    pub changed: Vec<LinkSpec>,
}

/// `GET /v1/state`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub bridge: String,
    /// The bridge's address with prefix.
    pub address: String,
    pub containers: std::collections::BTreeMap<String, Endpoint>,
    pub links: Vec<LinkSpec>,
    /// The containers plugged into the bridge by `attach`, by id (absent from a daemon
    /// older than attach, hence the default).
    #[serde(default)]
    pub attachments: std::collections::BTreeMap<String, Attached>,
}

/// `GET /v1/health`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    pub status: String,
    pub version: String,
    pub link_backend: String,
    pub containers: usize,
}

/// Every error answer: `{"message": "..."}` (as Docker's API), with a 4xx/5xx status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReply {
    pub message: String,
}

/// `POST /v1/attach`: plug a network namespace into the bridge as the container `id`
/// (allocating its interface first if it has none).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Attach {
    pub id: String,
    /// A namespace path (`/proc/<pid>/ns/net`, `/run/netns/<name>`) or a process id.
    pub netns: String,
    /// The interface name inside the namespace (default `eth0`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ifname: Option<String>,
}

/// Answer to `attach` (201 when plugged in now, 200 when it already was).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attached {
    pub id: String,
    pub interface: Interface,
    /// The host end of the veth pair, on the bridge.
    pub host_veth: String,
    pub netns: String,
    pub ifname: String,
    pub mtu: u32,
}

/// `POST /v1/detach`: unplug the container (its host veth off the bridge and down, then
/// deleted in the background) and release what attach allocated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Detach {
    pub id: String,
    /// Answer only once the veth pair is deleted (default: answer once the container is
    /// unplugged and its allocations released; the kernel's deletion, which waits for an RCU
    /// grace period, is finished by the daemon's reaper in the background).
    #[serde(default, skip_serializing_if = "is_false")]
    pub wait: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Answer to `detach` (200 also when there was nothing to detach, so that a retried
/// detach succeeds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Detached {
    pub id: String,
    /// False when the container was not attached: nothing changed.
    pub detached: bool,
    /// The host end of the veth pair: off the bridge and down when answered, and deleted
    /// (with its container end) by the reaper; already deleted when `wait` was asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_veth: Option<String>,
    /// What was released with it: only when `attach` had allocated the interface.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub released: Option<Released>,
}
