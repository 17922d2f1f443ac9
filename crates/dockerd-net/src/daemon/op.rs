//! The journal's operations: each handler call that changed the state, with every value the
//! call resolved (the IP and MAC handed out, the host IP and port, the host veth's name and
//! MTU), so that replaying the journal makes exactly the calls the daemon made, with the
//! same results.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use netcore::handlers::{HandlerError, Network};
use netcore::mac::MacAddr;
use netcore::ports::Proto;
use serde::{Deserialize, Serialize};

/// A container plugged into the bridge by `attach`: what `detach` must remove, and what a
/// repeated `attach` compares with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Attachment {
    /// The host end of the veth pair, a port of the bridge.
    pub host_veth: String,
    /// The container's network namespace, as resolved at attach (`/proc/<pid>/ns/net` for
    /// a pid).
    pub netns: PathBuf,
    /// The container end's name inside the namespace.
    pub ifname: String,
    pub mtu: u32,
    /// True when attach allocated the interface (the container had none): detach then
    /// releases it. An interface allocated before attach outlives detach.
    pub allocated: bool,
}

/// The attachments by container id.
pub type Attachments = BTreeMap<String, Attachment>;

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
    /// `attach`, recorded *before* the veth is made (so that a crash half-way leaves a
    /// record naming the veth to remove). When attach allocated the interface, its
    /// `AllocateInterface` precedes this in the same record.
    Attach {
        id: String,
        host_veth: String,
        netns: PathBuf,
        ifname: String,
        mtu: u32,
        allocated: bool,
    },
    /// `detach` (and `release_interface` of an attached container): the attachment is
    /// forgotten; a `ReleaseInterface` follows in the same record when the interface goes too.
    Detach {
        id: String,
    },
}

impl Op {
    /// The record of attaching `id` as `a`.
    pub fn attach(id: &str, a: &Attachment) -> Op {
        Op::Attach {
            id: id.to_owned(),
            host_veth: a.host_veth.clone(),
            netns: a.netns.clone(),
            ifname: a.ifname.clone(),
            mtu: a.mtu,
            allocated: a.allocated,
        }
    }
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
    #[error("{0}: the container has no interface")]
    NoInterface(String),
    #[error("{0}: the container is attached already")]
    Attached(String),
    #[error("{0}: the container is not attached")]
    NotAttached(String),
}

impl Op {
    /// Makes the recorded call on `net` (and `attachments`). The firewall batches are not
    /// wanted: on start the daemon reconciles the kernel with the whole state at once. Nor
    /// is any veth made or removed: replay rebuilds the record, the kernel is left as it is.
    pub fn replay(
        &self,
        net: &mut Network,
        attachments: &mut Attachments,
    ) -> Result<(), ReplayError> {
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
            Op::Attach {
                id,
                host_veth,
                netns,
                ifname,
                mtu,
                allocated,
            } => {
                if !net.endpoints().contains_key(id) {
                    return Err(ReplayError::NoInterface(self.describe()));
                }
                if attachments.contains_key(id) {
                    return Err(ReplayError::Attached(self.describe()));
                }
                attachments.insert(
                    id.clone(),
                    Attachment {
                        host_veth: host_veth.clone(),
                        netns: netns.clone(),
                        ifname: ifname.clone(),
                        mtu: *mtu,
                        allocated: *allocated,
                    },
                );
            }
            Op::Detach { id } => {
                if attachments.remove(id).is_none() {
                    return Err(ReplayError::NotAttached(self.describe()));
                }
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
            Op::Attach {
                id,
                host_veth,
                netns,
                ifname,
                ..
            } => format!(
                "attach {id} ({host_veth} -> {ifname} in {})",
                netns.display()
            ),
            Op::Detach { id } => format!("detach {id}"),
        }
    }
}
