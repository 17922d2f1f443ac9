//! The journal's operations: each handler call that changed the state, with every value the
//! call resolved (the IP and MAC handed out, the host IP and port), so that replaying the
//! journal makes exactly the calls the daemon made, with the same results.

use std::net::Ipv4Addr;

use netcore::handlers::{HandlerError, Network};
use netcore::mac::MacAddr;
use netcore::ports::Proto;
use serde::{Deserialize, Serialize};

/// One state change, as the journal records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Op {
    /// `allocate_interface` that created an endpoint, with the IP and MAC it got.
    AllocateInterface {
        id: String,
        ip: Ipv4Addr,
        mac: MacAddr,
    },
    ReleaseInterface {
        id: String,
    },
    /// `allocate_port` with the host IP and port it got. `dynamic` says the port was picked
    /// by the allocator: replay then asks for a dynamic port again, so the allocator's
    /// next-fit cursor moves exactly as it did (an explicit request does not move it), and
    /// checks that the same port comes back.
    AllocatePort {
        id: String,
        host_ip: Ipv4Addr,
        host_port: u16,
        container_port: u16,
        proto: Proto,
        dynamic: bool,
    },
    ReleasePort {
        id: String,
        host_ip: Ipv4Addr,
        host_port: u16,
        proto: Proto,
    },
    Link {
        parent: Ipv4Addr,
        child: Ipv4Addr,
        ports: Vec<(u16, Proto)>,
        enable: bool,
    },
}

/// Why a recorded operation could not be replayed: the journal does not fit the state it
/// is replayed on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    #[error("{op}: {source}")]
    Refused {
        op: String,
        #[source]
        source: HandlerError,
    },
    #[error("{0}: the container already has an interface")]
    Exists(String),
}

impl Op {
    /// Makes the recorded call on `net`. The firewall batches are not wanted: on start the
    /// daemon reconciles the kernel with the whole state at once.
    pub fn replay(&self, net: &mut Network) -> Result<(), ReplayError> {
        let refused = |source| ReplayError::Refused {
            op: self.describe(),
            source,
        };
        match self {
            Op::AllocateInterface { id, ip, mac } => {
                if net.endpoints().contains_key(id) {
                    return Err(ReplayError::Exists(self.describe()));
                }
                net.allocate_interface(id, Some(*ip), Some(*mac))
                    .map_err(refused)?;
            }
            Op::ReleaseInterface { id } => {
                net.release_interface(id).map_err(refused)?;
            }
            Op::AllocatePort {
                id,
                host_ip,
                host_port,
                container_port,
                proto,
                dynamic,
            } => {
                if *dynamic {
                    match net.allocate_port(id, Some(*host_ip), 0, *container_port, *proto) {
                        Ok(e) if e.value.host_port == *host_port => return Ok(()),
                        Ok(e) => {
                            // Only a different allocator (another dockerd-net version) picks
                            // another port from the same state: keep the recorded one, which
                            // the container is known by.
                            tracing::warn!(
                                "replay of {}: the allocator now picks port {}, keeping the recorded one",
                                self.describe(),
                                e.value.host_port
                            );
                            net.release_port(id, *host_ip, e.value.host_port, *proto)
                                .map_err(refused)?;
                        }
                        Err(e) => {
                            tracing::warn!(
                                "replay of {}: a dynamic request now fails ({e}), requesting the recorded port",
                                self.describe()
                            );
                        }
                    }
                }
                net.allocate_port(id, Some(*host_ip), *host_port, *container_port, *proto)
                    .map_err(refused)?;
            }
            Op::ReleasePort {
                id,
                host_ip,
                host_port,
                proto,
            } => {
                net.release_port(id, *host_ip, *host_port, *proto)
                    .map_err(refused)?;
            }
            Op::Link {
                parent,
                child,
                ports,
                enable,
            } => {
                net.link(*parent, *child, ports, *enable).map_err(refused)?;
            }
        }
        Ok(())
    }

    /// A one-line description for logs and errors.
    pub fn describe(&self) -> String {
        match self {
            Op::AllocateInterface { id, ip, mac } => {
                format!("allocate_interface {id} ({ip}, {mac})")
            }
            Op::ReleaseInterface { id } => format!("release_interface {id}"),
            Op::AllocatePort {
                id,
                host_ip,
                host_port,
                container_port,
                proto,
                ..
            } => format!("allocate_port {id} {host_ip}:{host_port}->{container_port}/{proto}"),
            Op::ReleasePort {
                id,
                host_ip,
                host_port,
                proto,
            } => format!("release_port {id} {host_ip}:{host_port}/{proto}"),
            Op::Link {
                parent,
                child,
                ports,
                enable,
            } => format!(
                "link {parent} -> {child} ({} port(s), enable={enable})",
                ports.len()
            ),
        }
    }
}
