//! The start-up sequence: what `InitDriver` did, as a plan of steps each with its undo.
//!
//! `init` runs in three phases, so that each can be tested on its own:
//! 1. [`HostFacts::gather`] reads the host once through the traits (links, routes, the
//!    firewall tables, `ip_forward`); the caller adds the resolv.conf text.
//! 2. [`plan`] decides everything from those facts and the [`Config`], purely: which bridge,
//!    which address, which rules are missing, whether forwarding changes. A plan for a host
//!    that is already configured is empty, which makes init idempotent.
//! 3. [`apply`] drives the traits step by step in Docker's order (bridge: create with MAC,
//!    address, up; firewall; forwarding). When a step fails, the steps already done are undone
//!    in reverse order, so the host is left as it was.

use std::fmt;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::bridge::{self, BridgeDecision, BridgeError};
use crate::config::{Config, FirewallBackend};
use crate::firewall::{self, Batch, BridgeFirewall, FirewallError, Listing, Policy, Table};
use crate::mac::{self, MacAddr};
use crate::nftables::{self, NftOp};
use crate::ops::{
    BridgeSpec, FirewallOps, IP_FORWARD, LinkInfo, LinkOps, OpsError, RouteV4, SysctlOps,
};
use crate::resolvconf;

/// Everything init needs to know about the host, read once.
#[derive(Debug, Clone, PartialEq)]
pub struct HostFacts {
    pub links: Vec<LinkInfo>,
    pub routes: Vec<RouteV4>,
    pub nameservers: Vec<Ipv4Addr>,
    /// `None` when `ip_forward` could not be read (Docker then just tries to write it).
    pub ip_forward: Option<bool>,
    /// `net.ipv4.conf.<bridge>.route_localnet`, read only in hairpin mode
    /// (`--userland-proxy=false`); `None` when not read or the bridge does not exist yet.
    pub route_localnet: Option<bool>,
    /// The current `filter` and `nat` tables; `None` when iptables is disabled.
    pub filter: Option<Listing>,
    pub nat: Option<Listing>,
}

impl HostFacts {
    /// Reads the host through the traits. `resolv_conf` is the text of `/etc/resolv.conf`
    /// (empty if unreadable: Docker ignores that error too).
    pub fn gather(
        config: &Config,
        resolv_conf: &str,
        link: &mut dyn LinkOps,
        fw: &mut dyn FirewallOps,
        sys: &mut dyn SysctlOps,
    ) -> Result<Self, InitError> {
        let links = link.links().map_err(InitError::read("list links"))?;
        let routes = link.routes_v4().map_err(InitError::read("list routes"))?;
        let ip_forward = if config.ip_forward {
            match sys.read(IP_FORWARD) {
                Ok(v) => Some(v.trim() == "1"),
                Err(e) => {
                    tracing::warn!("cannot read {IP_FORWARD}: {e}");
                    None
                }
            }
        } else {
            None
        };
        let route_localnet = if config.userland_proxy {
            None
        } else {
            sys.read(&route_localnet_key(config.bridge_name()))
                .ok()
                .map(|v| v.trim() == "1")
        };
        // With --firewall-backend nftables, iptables' tables are not ours to read or write.
        let (filter, nat) =
            if config.iptables && config.firewall_backend == FirewallBackend::Iptables {
                let texts = fw
                    .save_tables(&[Table::Filter, Table::Nat])
                    .map_err(InitError::read("read iptables tables filter and nat"))?;
                match texts.as_slice() {
                    [filter, nat] => (
                        Some(Listing::parse(Table::Filter, filter)?),
                        Some(Listing::parse(Table::Nat, nat)?),
                    ),
                    other => {
                        return Err(InitError::Read {
                            what: "read iptables tables filter and nat".into(),
                            source: OpsError::new(
                                "save iptables tables",
                                crate::ops::OpsErrorKind::Other,
                                format!("expected 2 listings, got {}", other.len()),
                            ),
                        });
                    }
                }
            } else {
                (None, None)
            };
        Ok(Self {
            links,
            routes,
            nameservers: resolvconf::nameservers(resolv_conf),
            ip_forward,
            route_localnet,
            filter,
            nat,
        })
    }
}

/// One change to the host. Each has an exact undo ([`Step::undo`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Step {
    /// Create the bridge with its MAC (and MTU), down and without address.
    CreateBridge {
        name: String,
        mac: MacAddr,
        mtu: Option<u32>,
        /// A record written before this field existed made its bridge with the kernel's
        /// default, snooping on.
        #[serde(default = "snooping_kernel_default")]
        mcast_snooping: bool,
    },
    /// Add the bridge's IPv4 address.
    AddAddr { link: String, addr: Ipv4Net },
    /// Set an existing bridge's MTU (`previous` is restored on undo).
    SetMtu {
        link: String,
        mtu: u32,
        previous: u32,
    },
    /// Bring the bridge up.
    SetUp { link: String },
    /// Apply one `iptables-restore --noflush` batch.
    Firewall(Batch),
    /// `--firewall-backend nftables`: create (or replace) table ip docker-bridges for these
    /// parameters, in one transaction.
    NftReplace(BridgeFirewall),
    /// Undo of [`Step::NftReplace`]: delete the table (and every element in it).
    NftDelete(BridgeFirewall),
    /// Set `net.ipv4.conf.<link>.route_localnet`: in hairpin mode, DNAT of 127.0.0.1 to a
    /// container must be routable (modern Docker, `setupLoopbackAddresses`).
    RouteLocalnet { link: String, enable: bool },
    /// Write `ip_forward`. Failing to turn it on is a warning, not an error (as in Docker).
    IpForward { enable: bool },
    /// Set the FORWARD policy of the filter table (`previous` is restored on undo).
    ForwardPolicy { policy: Policy, previous: Policy },
    /// Undo of [`Step::CreateBridge`].
    DeleteLink { name: String },
    /// Undo of [`Step::AddAddr`].
    DelAddr { link: String, addr: Ipv4Net },
    /// Undo of [`Step::SetUp`] on a bridge we did not create.
    SetDown { link: String },
}

impl Step {
    /// The step that reverses this one.
    pub fn undo(&self) -> Step {
        match self {
            Step::CreateBridge { name, .. } => Step::DeleteLink { name: name.clone() },
            Step::AddAddr { link, addr } => Step::DelAddr {
                link: link.clone(),
                addr: *addr,
            },
            Step::SetMtu {
                link,
                mtu,
                previous,
            } => Step::SetMtu {
                link: link.clone(),
                mtu: *previous,
                previous: *mtu,
            },
            Step::SetUp { link } => Step::SetDown { link: link.clone() },
            Step::Firewall(batch) => Step::Firewall(firewall::undo_of(batch)),
            Step::NftReplace(fw) => Step::NftDelete(fw.clone()),
            // The table comes back without elements: teardown runs with no containers left.
            Step::NftDelete(fw) => Step::NftReplace(fw.clone()),
            Step::IpForward { enable } => Step::IpForward { enable: !enable },
            Step::RouteLocalnet { link, enable } => Step::RouteLocalnet {
                link: link.clone(),
                enable: !enable,
            },
            Step::ForwardPolicy { policy, previous } => Step::ForwardPolicy {
                policy: *previous,
                previous: *policy,
            },
            Step::DeleteLink { name } => Step::DeleteLink { name: name.clone() },
            Step::DelAddr { link, addr } => Step::AddAddr {
                link: link.clone(),
                addr: *addr,
            },
            Step::SetDown { link } => Step::SetUp { link: link.clone() },
        }
    }

    /// Runs the step against the host.
    fn run(
        &self,
        link: &mut dyn LinkOps,
        fw: &mut dyn FirewallOps,
        sys: &mut dyn SysctlOps,
    ) -> Result<(), OpsError> {
        match self {
            Step::CreateBridge {
                name,
                mac,
                mtu,
                mcast_snooping,
            } => link.create_bridge(&BridgeSpec {
                name: name.clone(),
                mac: *mac,
                mtu: *mtu,
                mcast_snooping: *mcast_snooping,
            }),
            Step::AddAddr { link: l, addr } => link.add_addr(l, *addr),
            Step::SetMtu { link: l, mtu, .. } => link.set_mtu(l, *mtu),
            Step::SetUp { link: l } => link.set_up(l),
            Step::SetDown { link: l } => link.set_down(l),
            Step::DeleteLink { name } => link.delete_link(name),
            Step::DelAddr { link: l, addr } => link.del_addr(l, *addr),
            Step::Firewall(batch) => fw.apply(batch),
            Step::NftReplace(params) => fw.nft_apply(&[NftOp::ReplaceTable {
                table: nftables::bridge_table(params),
                elements: Vec::new(),
            }]),
            Step::NftDelete(_) => fw.nft_apply(&[NftOp::DeleteTable]),
            Step::IpForward { enable } => sys.write(IP_FORWARD, if *enable { "1" } else { "0" }),
            Step::RouteLocalnet { link: l, enable } => {
                sys.write(&route_localnet_key(l), if *enable { "1" } else { "0" })
            }
            Step::ForwardPolicy { policy, .. } => fw.set_policy(Table::Filter, "FORWARD", *policy),
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::CreateBridge {
                name,
                mac,
                mtu,
                mcast_snooping,
            } => {
                write!(f, "create bridge {name} with MAC {mac}")?;
                if let Some(mtu) = mtu {
                    write!(f, " and MTU {mtu}")?;
                }
                if !mcast_snooping {
                    write!(f, ", multicast snooping off")?;
                }
                Ok(())
            }
            Step::AddAddr { link, addr } => write!(f, "add address {addr} to {link}"),
            Step::SetMtu { link, mtu, .. } => write!(f, "set MTU of {link} to {mtu}"),
            Step::SetUp { link } => write!(f, "bring {link} up"),
            Step::SetDown { link } => write!(f, "bring {link} down"),
            Step::DeleteLink { name } => write!(f, "delete link {name}"),
            Step::DelAddr { link, addr } => write!(f, "remove address {addr} from {link}"),
            Step::Firewall(batch) => {
                writeln!(
                    f,
                    "iptables-restore --noflush, table {} ({} lines):",
                    batch.table,
                    batch.lines.len()
                )?;
                for line in &batch.lines {
                    writeln!(f, "    {line}")?;
                }
                Ok(())
            }
            Step::NftReplace(params) => {
                write!(
                    f,
                    "nft -f - <<EOF\n{}EOF",
                    nftables::bridge_table(params).render()
                )
            }
            Step::NftDelete(_) => write!(f, "nft delete table ip {}", nftables::TABLE),
            Step::IpForward { enable } => {
                write!(f, "set {IP_FORWARD} to {}", if *enable { 1 } else { 0 })
            }
            Step::ForwardPolicy { policy, .. } => {
                write!(f, "set filter FORWARD policy to {}", policy.name())
            }
            Step::RouteLocalnet { link, enable } => write!(
                f,
                "set {} to {}",
                route_localnet_key(link),
                if *enable { 1 } else { 0 }
            ),
        }
    }
}

/// What init decided: the bridge and the steps that make the host match.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub bridge: String,
    /// The bridge's host address with its prefix, e.g. `172.17.42.1/16`.
    pub addr: Ipv4Net,
    /// True when the plan creates the bridge.
    pub creates_bridge: bool,
    pub steps: Vec<Step>,
}

impl Plan {
    /// The bridge network, masked (e.g. `172.17.0.0/16`).
    pub fn subnet(&self) -> Ipv4Net {
        self.addr.trunc()
    }
}

/// What a bridge made before [`Step::CreateBridge`] recorded its snooping had: the kernel's
/// default.
fn snooping_kernel_default() -> bool {
    true
}

/// Decides every step of init from the configuration and the host's facts.
pub fn plan(config: &Config, facts: &HostFacts, random: [u8; 6]) -> Result<Plan, InitError> {
    let decision = bridge::resolve(config, &facts.links, &facts.routes, &facts.nameservers)?;
    let mut steps = Vec::new();
    let (name, addr) = (decision.name().to_owned(), decision.addr());
    match &decision {
        BridgeDecision::Create { .. } => {
            tracing::debug!("creating bridge {name} with network {addr}");
            steps.push(Step::CreateBridge {
                name: name.clone(),
                // Always set our own MAC: the 1.x kernel-version gate was a bug
                // (libnetwork PR #421); without it the bridge takes its lowest port's MAC
                // and changes as containers come and go (moby/moby#3200).
                mac: mac::bridge_mac(random),
                mtu: config.mtu,
                // Off unless --bridge-mcast-snooping=true, where Docker keeps the kernel's
                // default (on). Why: with snooping on, every port state change (each
                // attach, each detach) makes the kernel's br_port_state_selection re-arm two
                // multicast query timers on *every* port, which then all fire: O(containers)
                // work per container, measured as the main part of attach and detach growth
                // from 10 to 1000 containers (`cargo xtask bench attach`, issue 5). And it buys
                // nothing on Docker's bridge: snooping only filters once a multicast querier
                // is seen, Docker's bridge runs none (mcast_querier 0), and without one the
                // kernel floods multicast to every port anyway (kernel commit c5c23260594c,
                // "bridge: disable snooping if there is no querier"). So delivery is the same
                // for containers; with a querier on the segment, multicast is flooded rather
                // than pruned. A bridge that already exists (-b, or docker0 from an earlier
                // run) is never changed.
                mcast_snooping: config.bridge_mcast_snooping,
            });
            steps.push(Step::AddAddr {
                link: name.clone(),
                addr,
            });
            steps.push(Step::SetUp { link: name.clone() });
        }
        BridgeDecision::AddAddress { .. } => {
            // docker0 exists without an IPv4 address: 1.2/1.3 failed with EEXIST here; v1.4
            // configures the existing bridge instead (moby/moby#8444).
            steps.extend(mtu_step(config, facts, &name));
            steps.push(Step::AddAddr {
                link: name.clone(),
                addr,
            });
            if !link_up(facts, &name) {
                steps.push(Step::SetUp { link: name.clone() });
            }
        }
        BridgeDecision::Reuse { .. } => {
            // A bridge named with -b belongs to the user: Docker never changes its MTU.
            if !config.user_named_bridge() {
                steps.extend(mtu_step(config, facts, &name));
            }
            if !link_up(facts, &name) {
                steps.push(Step::SetUp { link: name.clone() });
            }
        }
    }

    // Hairpin mode: containers and the host reach published ports through the DNAT rules
    // even from 127.0.0.1, which the kernel only routes with route_localnet.
    if !config.userland_proxy && facts.route_localnet != Some(true) {
        steps.push(Step::RouteLocalnet {
            link: name.clone(),
            enable: true,
        });
    }

    let nft = config.iptables && config.firewall_backend == FirewallBackend::Nftables;
    if nft {
        steps.push(Step::NftReplace(BridgeFirewall::from_config(
            config, &name, addr,
        )));
        // Docker 29 with nftables does not turn forwarding on (nor set any FORWARD policy):
        // it refuses to start while forwarding is off, unless --ip-forward=false says the
        // admin knows (docs.docker.com, "Docker with nftables", IP forwarding).
        if config.ip_forward && facts.ip_forward == Some(false) {
            return Err(InitError::ForwardingDisabled);
        }
    } else if let (Some(filter), Some(nat)) = (&facts.filter, &facts.nat) {
        let rules = firewall::bridge_rules(&BridgeFirewall::from_config(config, &name, addr));
        // nat first, as Docker's setupIPTables starts with the masquerade rule.
        for (table, listing) in [(Table::Nat, nat), (Table::Filter, filter)] {
            if let Some(batch) = firewall::plan_add(&rules, table, listing) {
                steps.push(Step::Firewall(batch));
            }
        }
    }

    if !nft && config.ip_forward && facts.ip_forward != Some(true) {
        steps.push(Step::IpForward { enable: true });
        // When it is us who turn forwarding on, FORWARD's policy may change too (see
        // `firewall::forward_policy`); when forwarding was already on, it stays untouched.
        if let Some(policy) = firewall::forward_policy(config, false) {
            let previous = facts
                .filter
                .as_ref()
                .and_then(|l| l.policy("FORWARD"))
                .unwrap_or(Policy::Accept);
            if previous != policy {
                steps.push(Step::ForwardPolicy { policy, previous });
            }
        }
    }

    Ok(Plan {
        creates_bridge: matches!(decision, BridgeDecision::Create { .. }),
        bridge: name,
        addr,
        steps,
    })
}

/// The sysctl key of a link's `route_localnet`.
pub fn route_localnet_key(link: &str) -> String {
    format!("net/ipv4/conf/{link}/route_localnet")
}

fn link_up(facts: &HostFacts, name: &str) -> bool {
    facts.links.iter().any(|l| l.name == name && l.up)
}

fn mtu_step(config: &Config, facts: &HostFacts, name: &str) -> Option<Step> {
    let mtu = config.mtu?;
    let current = facts.links.iter().find(|l| l.name == name)?.mtu;
    (current != mtu).then(|| Step::SetMtu {
        link: name.to_owned(),
        mtu,
        previous: current,
    })
}

/// What [`apply`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// The steps that took effect, in order (their undos reverse init exactly).
    pub done: Vec<Step>,
    /// Non-fatal problems, e.g. `ip_forward` could not be written.
    pub warnings: Vec<String>,
}

/// Runs the plan. On failure, undoes the completed steps in reverse order and returns the
/// error (with any failure of the rollback itself).
pub fn apply(
    plan: &Plan,
    link: &mut dyn LinkOps,
    fw: &mut dyn FirewallOps,
    sys: &mut dyn SysctlOps,
) -> Result<Applied, InitError> {
    let mut done: Vec<Step> = Vec::new();
    let mut warnings = Vec::new();
    let mut forward_failed = false;
    let mut i = 0;
    while i < plan.steps.len() {
        let step = &plan.steps[i];
        i += 1;
        if forward_failed && matches!(step, Step::ForwardPolicy { .. }) {
            // We did not turn forwarding on, so there is nothing to protect with DROP.
            continue;
        }
        if let Step::Firewall(first) = step
            && first.is_additive()
        {
            // Consecutive additive firewall steps go to the backend together: one
            // iptables-restore for all tables instead of one per table.
            let mut group = vec![first.clone()];
            while let Some(Step::Firewall(next)) = plan.steps.get(i)
                && next.is_additive()
            {
                group.push(next.clone());
                i += 1;
            }
            tracing::debug!(batches = group.len(), "init step: firewall");
            if let Err(source) = crate::ops::apply_additive(fw, &group) {
                let rollback_errors = rollback(&done, link, fw, sys);
                let tables: Vec<&str> = group.iter().map(|b| b.table.name()).collect();
                return Err(InitError::Step {
                    step: format!(
                        "iptables-restore --noflush, tables {} (see --dry-run for the rules)",
                        tables.join(", ")
                    ),
                    source,
                    rollback_errors,
                });
            }
            done.extend(group.into_iter().map(Step::Firewall));
            continue;
        }
        tracing::debug!(%step, "init step");
        match step.run(link, fw, sys) {
            Ok(()) => done.push(step.clone()),
            Err(e) if matches!(step, Step::IpForward { enable: true }) => {
                // Docker: "WARNING: unable to enable IPv4 forwarding" and carry on.
                let msg = format!("unable to enable IPv4 forwarding: {e}");
                tracing::warn!("{msg}");
                warnings.push(msg);
                forward_failed = true;
            }
            Err(source) => {
                let rollback_errors = rollback(&done, link, fw, sys);
                return Err(InitError::Step {
                    step: step.to_string(),
                    source,
                    rollback_errors,
                });
            }
        }
    }
    Ok(Applied { done, warnings })
}

/// Undoes `done` in reverse order; returns the failures (and keeps going past them, so as
/// much as possible is restored).
pub fn rollback(
    done: &[Step],
    link: &mut dyn LinkOps,
    fw: &mut dyn FirewallOps,
    sys: &mut dyn SysctlOps,
) -> Vec<String> {
    let mut errors = Vec::new();
    // Deleting a bridge we created also removes its address and its up state: skip those
    // undos, which would only cost syscalls.
    let created: Vec<&str> = done
        .iter()
        .filter_map(|s| match s {
            Step::CreateBridge { name, .. } => Some(name.as_str()),
            _ => None,
        })
        .collect();
    for step in done.iter().rev() {
        let covered = match step {
            Step::AddAddr { link, .. }
            | Step::SetUp { link }
            | Step::SetMtu { link, .. }
            | Step::RouteLocalnet { link, .. } => created.contains(&link.as_str()),
            _ => false,
        };
        if covered {
            continue;
        }
        let undo = step.undo();
        tracing::debug!(step = %undo, "rollback");
        if let Err(e) = undo.run(link, fw, sys) {
            tracing::error!("rollback step failed: {undo}: {e}");
            errors.push(format!("{undo}: {e}"));
        }
    }
    errors
}

/// Why init failed.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error(transparent)]
    Bridge(#[from] BridgeError),
    #[error(transparent)]
    Firewall(#[from] FirewallError),
    #[error(
        "IPv4 forwarding is disabled (net.ipv4.ip_forward=0); with --firewall-backend=nftables dockerd-net does not enable it: run `sysctl -w net.ipv4.ip_forward=1` (and block unwanted forwarding between other interfaces), or start with --ip-forward=false"
    )]
    ForwardingDisabled,
    #[error("{what}: {source}")]
    Read {
        what: String,
        #[source]
        source: OpsError,
    },
    #[error("{step}: {source}{}", rollback_suffix(.rollback_errors))]
    Step {
        step: String,
        #[source]
        source: OpsError,
        /// Undo steps that failed in turn; empty when the host was fully restored.
        rollback_errors: Vec<String>,
    },
}

impl InitError {
    fn read(what: impl Into<String>) -> impl FnOnce(OpsError) -> InitError {
        let what = what.into();
        move |source| InitError::Read { what, source }
    }
}

fn rollback_suffix(errors: &[String]) -> String {
    if errors.is_empty() {
        String::new()
    } else {
        format!(" (rollback was incomplete: {})", errors.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An init record written before `--bridge-mcast-snooping` existed made its bridge with
    /// the kernel's default: reading it back says snooping was on.
    #[test]
    fn an_old_create_bridge_step_means_snooping_on() {
        let old = r#"{"CreateBridge":{"name":"docker0","mac":"02:42:ac:11:00:01","mtu":null}}"#;
        let step: Step = serde_json::from_str(old).expect("old record");
        assert!(
            matches!(
                step,
                Step::CreateBridge {
                    mcast_snooping: true,
                    ..
                }
            ),
            "{step:?}"
        );
    }
}
