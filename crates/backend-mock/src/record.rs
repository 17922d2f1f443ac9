//! What the fake host records about each call, and the faults it can be told to inject.

use std::fmt;

use ipnet::Ipv4Net;
use netcore::firewall::{Batch, Policy, Table};
use netcore::ops::{BridgeSpec, OpsErrorKind, RouteV4, VethSpec};

/// One trait method, without its arguments: what [`crate::FakeHost::fail_nth`] counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Op {
    Links,
    RoutesV4,
    CreateBridge,
    AddAddr,
    DelAddr,
    SetMtu,
    SetUp,
    SetDown,
    DeleteLink,
    FwSave,
    FwApply,
    SetPolicy,
    SysctlRead,
    SysctlWrite,
    CreateVeth,
    SetMaster,
    SetHairpin,
    SetIpv6AutoconfOff,
    DisableIpv6,
    AddRoute,
    RetireLink,
    DeleteGroup,
    NftApply,
    NftElements,
}

impl Op {
    /// Every operation, in trait order (`LinkOps`, `FirewallOps`, `SysctlOps`, `AttachOps`).
    pub const ALL: [Op; 24] = [
        Op::Links,
        Op::RoutesV4,
        Op::CreateBridge,
        Op::AddAddr,
        Op::DelAddr,
        Op::SetMtu,
        Op::SetUp,
        Op::SetDown,
        Op::DeleteLink,
        Op::FwSave,
        Op::FwApply,
        Op::SetPolicy,
        Op::SysctlRead,
        Op::SysctlWrite,
        Op::CreateVeth,
        Op::SetMaster,
        Op::SetHairpin,
        Op::SetIpv6AutoconfOff,
        Op::DisableIpv6,
        Op::AddRoute,
        Op::RetireLink,
        Op::DeleteGroup,
        Op::NftApply,
        Op::NftElements,
    ];

    /// Whether the operation can change the host (everything but the four reads).
    pub fn is_mutating(self) -> bool {
        !matches!(
            self,
            Op::Links | Op::RoutesV4 | Op::FwSave | Op::SysctlRead | Op::NftElements
        )
    }
}

/// One trait call with its arguments, as recorded by the fake host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Links,
    RoutesV4,
    CreateBridge(BridgeSpec),
    /// `(link, addr)`
    AddAddr(String, Ipv4Net),
    /// `(link, addr)`
    DelAddr(String, Ipv4Net),
    /// `(link, mtu)`
    SetMtu(String, u32),
    SetUp(String),
    SetDown(String),
    DeleteLink(String),
    FwSave(Table),
    FwApply(Batch),
    /// `(table, chain, policy)`
    SetPolicy(Table, String, Policy),
    SysctlRead(String),
    /// `(key, value)`
    SysctlWrite(String, String),
    CreateVeth(VethSpec),
    /// `(link, master)`
    SetMaster(String, String),
    /// `(link, on)`
    SetHairpin(String, bool),
    /// IPv6 address autoconfiguration off on the link (`addrgenmode none`).
    SetIpv6AutoconfOff(String),
    /// IPv6 off on the link (`net.ipv6.conf.LINK.disable_ipv6 = 1`).
    DisableIpv6(String),
    /// The route as given (`oif` is usually `None`; the host resolves it).
    AddRoute(RouteV4),
    /// `(link, group)`
    RetireLink(String, u32),
    DeleteGroup(u32),
    /// One nftables transaction (`--firewall-backend nftables`).
    NftApply(Vec<netcore::nftables::NftOp>),
    NftElements,
}

impl Call {
    pub fn op(&self) -> Op {
        match self {
            Call::Links => Op::Links,
            Call::RoutesV4 => Op::RoutesV4,
            Call::CreateBridge(_) => Op::CreateBridge,
            Call::AddAddr(..) => Op::AddAddr,
            Call::DelAddr(..) => Op::DelAddr,
            Call::SetMtu(..) => Op::SetMtu,
            Call::SetUp(_) => Op::SetUp,
            Call::SetDown(_) => Op::SetDown,
            Call::DeleteLink(_) => Op::DeleteLink,
            Call::FwSave(_) => Op::FwSave,
            Call::FwApply(_) => Op::FwApply,
            Call::SetPolicy(..) => Op::SetPolicy,
            Call::SysctlRead(_) => Op::SysctlRead,
            Call::SysctlWrite(..) => Op::SysctlWrite,
            Call::CreateVeth(_) => Op::CreateVeth,
            Call::SetMaster(..) => Op::SetMaster,
            Call::SetHairpin(..) => Op::SetHairpin,
            Call::SetIpv6AutoconfOff(_) => Op::SetIpv6AutoconfOff,
            Call::DisableIpv6(_) => Op::DisableIpv6,
            Call::AddRoute(_) => Op::AddRoute,
            Call::RetireLink(..) => Op::RetireLink,
            Call::DeleteGroup(_) => Op::DeleteGroup,
            Call::NftApply(_) => Op::NftApply,
            Call::NftElements => Op::NftElements,
        }
    }

    pub fn is_mutating(&self) -> bool {
        self.op().is_mutating()
    }
}

/// The operation and its object, as used for [`netcore::ops::OpsError::op`].
impl fmt::Display for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Call::Links => write!(f, "list links"),
            Call::RoutesV4 => write!(f, "list routes"),
            Call::CreateBridge(spec) => write!(f, "create bridge {}", spec.name),
            Call::AddAddr(link, addr) => write!(f, "add address {addr} to {link}"),
            Call::DelAddr(link, addr) => write!(f, "delete address {addr} from {link}"),
            Call::SetMtu(link, mtu) => write!(f, "set mtu {mtu} on {link}"),
            Call::SetUp(link) => write!(f, "set {link} up"),
            Call::SetDown(link) => write!(f, "set {link} down"),
            Call::DeleteLink(link) => write!(f, "delete link {link}"),
            Call::FwSave(table) => write!(f, "iptables-save -t {table}"),
            Call::FwApply(batch) => write!(f, "iptables-restore --noflush -t {}", batch.table),
            Call::SetPolicy(table, chain, policy) => {
                write!(f, "iptables -t {table} -P {chain} {}", policy.name())
            }
            Call::SysctlRead(key) => write!(f, "read sysctl {key}"),
            Call::SysctlWrite(key, value) => write!(f, "write {value} to sysctl {key}"),
            Call::CreateVeth(spec) => write!(
                f,
                "create veth {} with peer {} in {}",
                spec.host,
                spec.peer,
                spec.peer_netns.display()
            ),
            Call::SetMaster(link, master) => write!(f, "set master of {link} to {master}"),
            Call::SetHairpin(link, on) => {
                write!(
                    f,
                    "set hairpin {} on {link}",
                    if *on { "on" } else { "off" }
                )
            }
            Call::AddRoute(route) => {
                match route.dst {
                    Some(dst) => write!(f, "add route {dst}")?,
                    None => write!(f, "add route default")?,
                }
                if let Some(gw) = route.gateway {
                    write!(f, " via {gw}")?;
                }
                if let Some(oif) = route.oif {
                    write!(f, " dev index {oif}")?;
                }
                Ok(())
            }
            Call::RetireLink(link, group) => {
                write!(f, "retire {link} (nomaster, down, group {group})")
            }
            Call::DeleteGroup(group) => write!(f, "delete the links of group {group}"),
            Call::NftApply(ops) => write!(f, "nftables transaction of {} change(s)", ops.len()),
            Call::NftElements => write!(f, "list the elements of table ip docker-bridges"),
            Call::SetIpv6AutoconfOff(link) => {
                write!(f, "turn IPv6 autoconfiguration off on {link}")
            }
            Call::DisableIpv6(link) => write!(f, "turn IPv6 off on {link}"),
        }
    }
}

/// A recorded call and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallRecord {
    pub call: Call,
    /// `None` if the call succeeded, else the kind of error it returned.
    pub error: Option<OpsErrorKind>,
    /// Whether the error was injected by a fault rather than by the host's own rules.
    pub injected: bool,
}

/// The error source of a call failed on purpose by a fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("injected fault ({trigger})")]
pub struct InjectedFault {
    /// Which fault fired, e.g. `call 2 of AddAddr` or `mutating call 3`.
    pub trigger: String,
}

/// When a fault fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Trigger {
    /// When the per-op counter of `op` reaches `at`.
    OpCall { op: Op, at: u64 },
    /// When the mutation counter reaches `at`.
    Mutation { at: u64 },
    /// On every call of `op`.
    Every(Op),
}

#[derive(Debug, Clone)]
pub(crate) struct Fault {
    pub trigger: Trigger,
    pub kind: OpsErrorKind,
}

/// Call counters (never reset, so armed faults keep their meaning across `clear_calls`) and
/// the armed faults.
#[derive(Debug, Default, Clone)]
pub(crate) struct Faults {
    per_op: [u64; Op::ALL.len()],
    mutations: u64,
    armed: Vec<Fault>,
}

impl Faults {
    fn index(op: Op) -> usize {
        Op::ALL.iter().position(|o| *o == op).unwrap_or(0)
    }

    /// Arms a fault on the `n`th call of `op` from now (1-based). `n == 0` arms nothing.
    pub fn arm_op(&mut self, op: Op, n: usize, kind: OpsErrorKind) {
        if n == 0 {
            return;
        }
        let at = self.per_op[Self::index(op)] + n as u64;
        self.armed.push(Fault {
            trigger: Trigger::OpCall { op, at },
            kind,
        });
    }

    /// Arms a fault on the `n`th mutating call from now (1-based). `n == 0` arms nothing.
    pub fn arm_mutation(&mut self, n: usize, kind: OpsErrorKind) {
        if n == 0 {
            return;
        }
        let at = self.mutations + n as u64;
        self.armed.push(Fault {
            trigger: Trigger::Mutation { at },
            kind,
        });
    }

    pub fn arm_every(&mut self, op: Op, kind: OpsErrorKind) {
        self.armed.push(Fault {
            trigger: Trigger::Every(op),
            kind,
        });
    }

    pub fn clear(&mut self) {
        self.armed.clear();
    }

    /// Counts a call of `op` and returns the fault that fires on it, if any. One-shot faults
    /// that fire are disarmed.
    pub fn on_call(&mut self, op: Op) -> Option<(OpsErrorKind, InjectedFault)> {
        let i = Self::index(op);
        self.per_op[i] += 1;
        let count = self.per_op[i];
        if op.is_mutating() {
            self.mutations += 1;
        }
        let mutations = self.mutations;
        let pos = self.armed.iter().position(|f| match f.trigger {
            Trigger::OpCall { op: o, at } => o == op && at == count,
            Trigger::Mutation { at } => op.is_mutating() && at == mutations,
            Trigger::Every(o) => o == op,
        })?;
        let fault = self.armed.get(pos)?.clone();
        let trigger = match fault.trigger {
            Trigger::OpCall { .. } => format!("call {count} of {op:?}"),
            Trigger::Mutation { .. } => format!("mutating call {mutations} ({op:?})"),
            Trigger::Every(_) => format!("every call of {op:?}"),
        };
        if !matches!(fault.trigger, Trigger::Every(_)) {
            self.armed.remove(pos);
        }
        // Other one-shot faults aimed at this same call can never fire again: drop them too,
        // so `pending_faults` tells the truth.
        self.armed.retain(|f| match f.trigger {
            Trigger::OpCall { op: o, at } => !(o == op && at == count),
            Trigger::Mutation { at } => !(op.is_mutating() && at == mutations),
            Trigger::Every(_) => true,
        });
        Some((fault.kind, InjectedFault { trigger }))
    }

    /// How many one-shot faults have not fired yet.
    pub fn pending(&self) -> usize {
        self.armed
            .iter()
            .filter(|f| !matches!(f.trigger, Trigger::Every(_)))
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn op_index_matches_all() {
        for (i, op) in Op::ALL.iter().enumerate() {
            assert_eq!(Faults::index(*op), i);
        }
    }

    #[test]
    fn nth_op_fault_fires_once_on_the_nth_call() {
        let mut f = Faults::default();
        f.on_call(Op::SetUp); // before arming: not counted towards n
        f.arm_op(Op::SetUp, 2, OpsErrorKind::Other);
        assert!(f.on_call(Op::SetUp).is_none());
        assert!(f.on_call(Op::AddAddr).is_none());
        let (kind, _) = f.on_call(Op::SetUp).unwrap();
        assert_eq!(kind, OpsErrorKind::Other);
        assert!(f.on_call(Op::SetUp).is_none());
        assert_eq!(f.pending(), 0);
    }

    #[test]
    fn mutation_fault_ignores_reads() {
        let mut f = Faults::default();
        f.arm_mutation(2, OpsErrorKind::PermissionDenied);
        assert!(f.on_call(Op::Links).is_none());
        assert!(f.on_call(Op::CreateBridge).is_none());
        assert!(f.on_call(Op::FwSave).is_none());
        let (kind, fault) = f.on_call(Op::FwApply).unwrap();
        assert_eq!(kind, OpsErrorKind::PermissionDenied);
        assert!(fault.trigger.contains("mutating call 2"));
    }

    #[test]
    fn zero_arms_nothing() {
        let mut f = Faults::default();
        f.arm_op(Op::Links, 0, OpsErrorKind::Other);
        f.arm_mutation(0, OpsErrorKind::Other);
        assert_eq!(f.pending(), 0);
        assert!(f.on_call(Op::Links).is_none());
    }
}
