//! What init changed, remembered, and how to take it back.
//!
//! Init is idempotent, so a second run may change nothing; its record must therefore be
//! merged with the first one's, never replace it. Teardown removes our rules whoever added
//! them (they are ours by name), but the bridge, `ip_forward` and the FORWARD policy only
//! when a record says we changed them: a bridge the admin made, or forwarding the admin
//! turned on, is not ours to undo.

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::config::FirewallBackend;
use crate::firewall::{self, BridgeFirewall, Policy, Table};
use crate::init::{Applied, HostFacts, Plan, Step};

/// The record's format version; a record of another version is refused, not guessed at.
pub const RECORD_VERSION: u32 = 1;

/// What init changed on the host, kept until teardown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InitRecord {
    pub version: u32,
    pub bridge: String,
    /// The bridge's address with prefix.
    pub addr: Ipv4Net,
    /// We created the bridge (teardown deletes it).
    pub created_bridge: bool,
    /// We added the address to an existing bridge (teardown removes it).
    pub added_addr: bool,
    /// We brought an existing bridge up (teardown brings it down).
    pub set_up: bool,
    /// The MTU the existing bridge had before we changed it.
    pub previous_mtu: Option<u32>,
    /// We turned the bridge's `route_localnet` on (teardown turns it off).
    #[serde(default)]
    pub enabled_route_localnet: bool,
    /// We turned `ip_forward` on (teardown turns it off).
    pub enabled_ip_forward: bool,
    /// The FORWARD policy before we set it to DROP.
    pub previous_forward_policy: Option<Policy>,
    /// The parameters of the rule set we installed (teardown removes exactly these rules).
    pub firewall: Option<BridgeFirewall>,
    /// Where those rules are (records written before the option existed: iptables).
    #[serde(default)]
    pub firewall_backend: FirewallBackend,
}

impl InitRecord {
    /// The record of one init run, merged into the record of earlier runs (if any, and if it
    /// is for the same bridge): what an earlier run changed stays recorded.
    pub fn after_init(
        plan: &Plan,
        applied: &Applied,
        firewall: Option<BridgeFirewall>,
        earlier: Option<&InitRecord>,
    ) -> Self {
        let mut rec = match earlier {
            Some(e) if e.bridge == plan.bridge => e.clone(),
            _ => InitRecord {
                version: RECORD_VERSION,
                bridge: plan.bridge.clone(),
                addr: plan.addr,
                created_bridge: false,
                added_addr: false,
                set_up: false,
                previous_mtu: None,
                enabled_route_localnet: false,
                enabled_ip_forward: false,
                previous_forward_policy: None,
                firewall: None,
                firewall_backend: FirewallBackend::Iptables,
            },
        };
        for step in &applied.done {
            match step {
                Step::CreateBridge { .. } => rec.created_bridge = true,
                Step::AddAddr { .. } if !rec.created_bridge => rec.added_addr = true,
                Step::SetUp { .. } if !rec.created_bridge => rec.set_up = true,
                Step::SetMtu { previous, .. } if !rec.created_bridge => {
                    rec.previous_mtu.get_or_insert(*previous);
                }
                Step::IpForward { enable: true } => rec.enabled_ip_forward = true,
                Step::RouteLocalnet { enable: true, .. } if !rec.created_bridge => {
                    rec.enabled_route_localnet = true;
                }
                Step::ForwardPolicy { previous, .. } => {
                    rec.previous_forward_policy.get_or_insert(*previous);
                }
                Step::NftReplace(_) => rec.firewall_backend = FirewallBackend::Nftables,
                Step::Firewall(_) => rec.firewall_backend = FirewallBackend::Iptables,
                _ => {}
            }
        }
        rec.addr = plan.addr;
        if firewall.is_some() {
            rec.firewall = firewall;
        }
        rec
    }
}

/// The steps that take back what the record says init changed, against the host as it is
/// now (`facts` must include the firewall listings when the record has rules).
pub fn plan(record: &InitRecord, facts: &HostFacts) -> Plan {
    let mut steps = Vec::new();
    if let Some(params) = &record.firewall
        && record.firewall_backend == FirewallBackend::Nftables
    {
        steps.push(Step::NftDelete(params.clone()));
    } else if let Some(params) = &record.firewall {
        let rules = firewall::bridge_rules(params);
        // filter first: its FORWARD jumps reference nothing in nat, but removing the
        // filter DOCKER chain needs its jump gone, which plan_remove orders itself.
        for (table, listing) in [(Table::Filter, &facts.filter), (Table::Nat, &facts.nat)] {
            if let Some(listing) = listing
                && let Some(batch) = firewall::plan_remove(&rules, table, listing)
            {
                steps.push(Step::Firewall(batch));
            }
        }
    }
    if let Some(previous) = record.previous_forward_policy {
        steps.push(Step::ForwardPolicy {
            policy: previous,
            previous: Policy::Drop,
        });
    }
    if record.enabled_ip_forward && facts.ip_forward != Some(false) {
        steps.push(Step::IpForward { enable: false });
    }
    let exists = facts.links.iter().find(|l| l.name == record.bridge);
    if let Some(link) = exists {
        if record.created_bridge {
            steps.push(Step::DeleteLink {
                name: record.bridge.clone(),
            });
        } else {
            if record.added_addr && link.addrs.contains(&record.addr) {
                steps.push(Step::DelAddr {
                    link: record.bridge.clone(),
                    addr: record.addr,
                });
            }
            if let Some(mtu) = record.previous_mtu {
                steps.push(Step::SetMtu {
                    link: record.bridge.clone(),
                    mtu,
                    previous: link.mtu,
                });
            }
            if record.enabled_route_localnet {
                steps.push(Step::RouteLocalnet {
                    link: record.bridge.clone(),
                    enable: false,
                });
            }
            if record.set_up && link.up {
                steps.push(Step::SetDown {
                    link: record.bridge.clone(),
                });
            }
        }
    }
    Plan {
        bridge: record.bridge.clone(),
        addr: record.addr,
        creates_bridge: false,
        steps,
    }
}
