//! [`FakeHost`]: an in-memory host that behaves like the kernel for the operations netcore uses.

use std::collections::{BTreeMap, BTreeSet};
use std::error::Error;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use ipnet::Ipv4Net;
use netcore::firewall::{Batch, Policy, Table};
use netcore::mac::MacAddr;
use netcore::nftables::{Element, NftOp, NftTable};
use netcore::ops::{
    AttachOps, BridgeSpec, FirewallOps, LinkInfo, LinkOps, OpsError, OpsErrorKind, RouteV4,
    SysctlOps, VethSpec,
};

use crate::iptables::{FwTable, RestoreErrorReason, SaveTextError, table_from_save};
use crate::record::{Call, CallRecord, Faults, Op};

mod netns;

pub use netns::VethPeer;
use netns::{NsRef, Port, VethEnd};

/// The path a [`FakeHost::new`] host is known by: the initial network namespace, as a
/// container's side of a veth records its peer's namespace.
pub const INIT_NETNS: &str = "/proc/1/ns/net";

/// `IFNAMSIZ`: a name must fit in 15 bytes plus the NUL.
const IFNAMSIZ: usize = 16;
/// The MTU range the kernel accepts for a bridge without ports (`ETH_MIN_MTU`..`ETH_MAX_MTU`).
const MTU_RANGE: std::ops::RangeInclusive<u32> = 68..=65535;
/// The kernel's default MTU for a new bridge.
const DEFAULT_MTU: u32 = 1500;

/// Sysctls every fake host starts with (the values of a freshly booted machine).
const DEFAULT_SYSCTLS: &[(&str, &str)] = &[
    (netcore::ops::IP_FORWARD, "0"),
    ("net/ipv4/conf/all/route_localnet", "0"),
    ("net/ipv6/conf/all/forwarding", "0"),
    ("net/ipv6/conf/all/disable_ipv6", "0"),
];

/// The per-interface sysctls the kernel creates with each link (and removes with it).
fn link_sysctls(name: &str, ip_forward: &str) -> [(String, String); 3] {
    [
        (
            format!("net/ipv4/conf/{name}/forwarding"),
            ip_forward.to_owned(),
        ),
        (
            format!("net/ipv4/conf/{name}/route_localnet"),
            "0".to_owned(),
        ),
        (format!("net/ipv6/conf/{name}/disable_ipv6"), "0".to_owned()),
    ]
}

/// The whole observable state of a [`FakeHost`], for "the host is exactly as before" checks.
///
/// Interface indexes are part of it, as on a real host: deleting and recreating a bridge gives
/// it a new index, so a rollback test compares with a snapshot taken before the bridge existed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Links in index order.
    pub links: Vec<LinkInfo>,
    /// The main routing table, as [`LinkOps::routes_v4`] returns it.
    pub routes: Vec<RouteV4>,
    /// The loaded iptables tables.
    pub tables: BTreeMap<Table, FwTable>,
    pub sysctls: BTreeMap<String, String>,
    /// Bridge ports: port name -> its bridge (`IFLA_MASTER`).
    pub masters: BTreeMap<String, String>,
    /// The bridge ports in hairpin mode.
    pub hairpin: BTreeSet<String>,
    /// Veth ends of this namespace -> their peer.
    pub peers: BTreeMap<String, VethPeer>,
    /// Links in a device group other than 0 (the default) -> the group (`IFLA_GROUP`).
    pub groups: BTreeMap<String, u32>,
    /// The links with IPv6 address autoconfiguration off (`addrgenmode none`); every other
    /// link has the kernel's default (`eui64`).
    pub ipv6_autoconf_off: BTreeSet<String>,
    /// `table ip docker-bridges` with its elements, when it exists.
    pub nft: Option<NftModel>,
}

/// The fake host's `table ip docker-bridges`: its definition and its elements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NftModel {
    pub table: NftTable,
    pub elements: BTreeSet<Element>,
}

impl NftModel {
    /// Applies one op, as the kernel would within a transaction.
    fn apply(this: &mut Option<NftModel>, op: &NftOp) -> Result<(), Fail> {
        match op {
            NftOp::ReplaceTable { table, elements } => {
                *this = Some(NftModel {
                    table: table.clone(),
                    elements: elements.iter().cloned().collect(),
                });
            }
            NftOp::DeleteTable => *this = None,
            NftOp::AddElements(els) | NftOp::DelElements(els) => {
                let adding = matches!(op, NftOp::AddElements(_));
                let model = this.as_mut().ok_or_else(|| {
                    fail(OpsErrorKind::NotFound, "no such table: ip docker-bridges")
                })?;
                for e in els {
                    if !model.table.sets.iter().any(|s| s.name == e.set) {
                        return Err(fail(
                            OpsErrorKind::NotFound,
                            format!("no such set: {}", e.set),
                        ));
                    }
                    let done = if adding {
                        model.elements.insert(e.clone())
                    } else {
                        model.elements.remove(e)
                    };
                    if !done {
                        let (kind, what) = if adding {
                            (OpsErrorKind::AlreadyExists, "already in")
                        } else {
                            (OpsErrorKind::NotFound, "not in")
                        };
                        return Err(fail(
                            kind,
                            format!("element {} {what} {}", e.render(), e.set),
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

type Fail = (OpsErrorKind, Box<dyn Error + Send + Sync + 'static>);

fn fail(kind: OpsErrorKind, msg: impl Into<String>) -> Fail {
    (kind, msg.into().into())
}

fn no_device(name: &str) -> Fail {
    fail(OpsErrorKind::NotFound, format!("no such device: {name}"))
}

/// The kernel's `dev_valid_name()`.
fn valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() < IFNAMSIZ
        && name != "."
        && name != ".."
        && !name.contains(|c: char| c == '/' || c == ':' || c.is_whitespace())
}

#[derive(Debug)]
struct State {
    /// In index order.
    links: Vec<LinkInfo>,
    next_index: u32,
    /// Routes added by the test setup; prefix routes of addresses are derived from the links.
    static_routes: Vec<RouteV4>,
    tables: BTreeMap<Table, FwTable>,
    sysctls: BTreeMap<String, String>,
    log: Vec<CallRecord>,
    faults: Faults,
    /// The path this namespace is known by (what the other end of a veth records).
    path: PathBuf,
    /// Namespaces reachable by path from here, as `open(path)` + `setns` would find them.
    netns: BTreeMap<PathBuf, NsRef>,
    /// Bridge ports by name.
    ports: BTreeMap<String, Port>,
    /// Veth ends by name.
    veths: BTreeMap<String, VethEnd>,
    /// Device groups other than 0 (every link's default), by link name.
    groups: BTreeMap<String, u32>,
    /// Links whose IPv6 address generation mode is `none`, by name.
    ipv6_autoconf_off: BTreeSet<String>,
    /// Bridges whose MTU was changed by `set_mtu` (`BROPT_MTU_SET_BY_USER`): the kernel no
    /// longer tunes their MTU to their ports'. Not part of the snapshot: no read shows it.
    mtu_set_by_user: BTreeSet<String>,
    nft: Option<NftModel>,
}

impl State {
    fn new() -> Self {
        let mut st = State {
            links: Vec::new(),
            next_index: 1,
            static_routes: Vec::new(),
            tables: [Table::Filter, Table::Nat]
                .into_iter()
                .map(|t| (t, FwTable::new(t)))
                .collect(),
            sysctls: DEFAULT_SYSCTLS
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            log: Vec::new(),
            faults: Faults::default(),
            path: PathBuf::from(INIT_NETNS),
            netns: BTreeMap::new(),
            ports: BTreeMap::new(),
            veths: BTreeMap::new(),
            groups: BTreeMap::new(),
            ipv6_autoconf_off: BTreeSet::new(),
            nft: None,
            mtu_set_by_user: BTreeSet::new(),
        };
        st.insert_link(LinkInfo {
            name: "lo".to_owned(),
            index: 1,
            kind: None,
            mac: Some(MacAddr([0; 6])),
            mtu: 65536,
            up: true,
            addrs: vec![Ipv4Net::new(std::net::Ipv4Addr::LOCALHOST, 8).unwrap_or_default()],
        });
        st
    }

    /// Runs one trait call: counts it, fires a fault or runs `f`, and records the outcome.
    fn call<T>(
        &mut self,
        call: Call,
        f: impl FnOnce(&mut State) -> Result<T, Fail>,
    ) -> Result<T, OpsError> {
        let op_text = call.to_string();
        if let Some((kind, fault)) = self.faults.on_call(call.op()) {
            self.log.push(CallRecord {
                call,
                error: Some(kind),
                injected: true,
            });
            return Err(OpsError::new(op_text, kind, fault));
        }
        let result = f(self);
        self.log.push(CallRecord {
            call,
            error: result.as_ref().err().map(|(kind, _)| *kind),
            injected: false,
        });
        result.map_err(|(kind, source)| OpsError::new(op_text, kind, source))
    }

    fn find(&self, name: &str) -> Result<usize, Fail> {
        self.links
            .iter()
            .position(|l| l.name == name)
            .ok_or_else(|| no_device(name))
    }

    /// Adds (or replaces, by name) a link, keeping index order and the per-link sysctls.
    fn insert_link(&mut self, mut link: LinkInfo) {
        if let Ok(i) = self.find(&link.name) {
            self.links.remove(i);
            // A replaced link is a new device: it is nobody's port or peer.
            self.ports
                .retain(|name, p| *name != link.name && p.master != link.name);
            self.veths.remove(&link.name);
            self.groups.remove(&link.name);
            self.ipv6_autoconf_off.remove(&link.name);
            self.mtu_set_by_user.remove(&link.name);
        }
        if link.index == 0 || self.links.iter().any(|l| l.index == link.index) {
            link.index = self.next_index;
        }
        self.next_index = self.next_index.max(link.index.saturating_add(1));
        let forward = self
            .sysctls
            .get(netcore::ops::IP_FORWARD)
            .cloned()
            .unwrap_or_else(|| "0".to_owned());
        for (k, v) in link_sysctls(&link.name, &forward) {
            self.sysctls.insert(k, v);
        }
        let pos = self
            .links
            .iter()
            .position(|l| l.index > link.index)
            .unwrap_or(self.links.len());
        self.links.insert(pos, link);
    }

    /// The main table: static routes plus, for each address of an up link, the prefix route
    /// the kernel adds (`fib_add_ifaddr`: only while the link is up, one per prefix, none for
    /// a /32, and loopback's going to the local table), sorted by destination like a dump.
    fn routes(&self) -> Vec<RouteV4> {
        let mut out = self.static_routes.clone();
        for link in self.links.iter().filter(|l| l.up && l.name != "lo") {
            for addr in link.addrs.iter().filter(|a| a.prefix_len() < 32) {
                let route = RouteV4 {
                    dst: Some(addr.trunc()),
                    gateway: None,
                    oif: Some(link.index),
                };
                if !out.contains(&route) {
                    out.push(route);
                }
            }
        }
        out.sort_by_key(|r| {
            r.dst
                .map_or((0, 0), |d| (u32::from(d.addr()), d.prefix_len()))
        });
        out
    }

    fn snapshot(&self) -> Snapshot {
        Snapshot {
            links: self.links.clone(),
            routes: self.routes(),
            tables: self.tables.clone(),
            sysctls: self.sysctls.clone(),
            masters: self
                .ports
                .iter()
                .map(|(name, p)| (name.clone(), p.master.clone()))
                .collect(),
            hairpin: self
                .ports
                .iter()
                .filter(|(_, p)| p.hairpin)
                .map(|(name, _)| name.clone())
                .collect(),
            peers: self
                .veths
                .iter()
                .map(|(name, end)| (name.clone(), end.as_peer()))
                .collect(),
            groups: self.groups.clone(),
            ipv6_autoconf_off: self.ipv6_autoconf_off.clone(),
            nft: self.nft.clone(),
        }
    }

    // ---- LinkOps ----

    fn links(&mut self) -> Result<Vec<LinkInfo>, OpsError> {
        self.call(Call::Links, |st| Ok(st.links.clone()))
    }

    fn routes_v4(&mut self) -> Result<Vec<RouteV4>, OpsError> {
        self.call(Call::RoutesV4, |st| Ok(st.routes()))
    }

    fn create_bridge(&mut self, spec: &BridgeSpec) -> Result<(), OpsError> {
        self.call(Call::CreateBridge(spec.clone()), |st| {
            if !valid_ifname(&spec.name) {
                return Err(fail(
                    OpsErrorKind::Other,
                    format!("invalid argument: bad interface name {:?}", spec.name),
                ));
            }
            if st.find(&spec.name).is_ok() {
                return Err(fail(
                    OpsErrorKind::AlreadyExists,
                    format!("file exists: {}", spec.name),
                ));
            }
            if !spec.mac.is_unicast() || spec.mac.0 == [0; 6] {
                return Err(fail(
                    OpsErrorKind::Other,
                    format!("cannot assign requested address: MAC {}", spec.mac),
                ));
            }
            if let Some(mtu) = spec.mtu.filter(|m| !MTU_RANGE.contains(m)) {
                return Err(fail(
                    OpsErrorKind::Other,
                    format!("invalid argument: mtu {mtu}"),
                ));
            }
            st.insert_link(LinkInfo {
                name: spec.name.clone(),
                index: 0,
                kind: Some("bridge".to_owned()),
                mac: Some(spec.mac),
                mtu: spec.mtu.unwrap_or(DEFAULT_MTU),
                up: false,
                addrs: Vec::new(),
            });
            Ok(())
        })
    }

    fn add_addr(&mut self, link: &str, addr: Ipv4Net) -> Result<(), OpsError> {
        self.call(Call::AddAddr(link.to_owned(), addr), |st| {
            let i = st.find(link)?;
            let l = &mut st.links[i];
            // The kernel refuses the same local address with the same prefix (EEXIST).
            if l.addrs.contains(&addr) {
                return Err(fail(
                    OpsErrorKind::AlreadyExists,
                    format!("file exists: {addr} on {link}"),
                ));
            }
            l.addrs.push(addr);
            Ok(())
        })
    }

    fn del_addr(&mut self, link: &str, addr: Ipv4Net) -> Result<(), OpsError> {
        self.call(Call::DelAddr(link.to_owned(), addr), |st| {
            let i = st.find(link)?;
            let l = &mut st.links[i];
            // The kernel answers EADDRNOTAVAIL; NotFound is what it means to netcore.
            let pos = l.addrs.iter().position(|a| *a == addr).ok_or_else(|| {
                fail(
                    OpsErrorKind::NotFound,
                    format!("cannot assign requested address: {addr} is not on {link}"),
                )
            })?;
            l.addrs.remove(pos);
            Ok(())
        })
    }

    fn set_mtu(&mut self, link: &str, mtu: u32) -> Result<(), OpsError> {
        self.call(Call::SetMtu(link.to_owned(), mtu), |st| {
            let i = st.find(link)?;
            if !MTU_RANGE.contains(&mtu) {
                return Err(fail(
                    OpsErrorKind::Other,
                    format!("invalid argument: mtu {mtu}"),
                ));
            }
            // dev_set_mtu() returns early when nothing changes, so only a real change
            // reaches br_change_mtu() and marks a bridge's MTU as the user's.
            if st.links[i].mtu != mtu {
                st.links[i].mtu = mtu;
                if st.links[i].kind.as_deref() == Some("bridge") {
                    st.mtu_set_by_user.insert(link.to_owned());
                }
                // NETDEV_CHANGEMTU on a port re-tunes its bridge.
                if let Some(master) = st.ports.get(link).map(|p| p.master.clone()) {
                    st.bridge_mtu_auto_adjust(&master);
                }
            }
            Ok(())
        })
    }

    fn set_up(&mut self, link: &str) -> Result<(), OpsError> {
        self.call(Call::SetUp(link.to_owned()), |st| {
            let i = st.find(link)?;
            let l = &mut st.links[i];
            // NETDEV_UP on loopback gives it 127.0.0.1/8 (inetdev_event), which is how `lo` of
            // a fresh namespace gets its address.
            if !l.up && l.name == "lo" {
                let lo = Ipv4Net::new(std::net::Ipv4Addr::LOCALHOST, 8).unwrap_or_default();
                if !l.addrs.contains(&lo) {
                    l.addrs.push(lo);
                }
            }
            l.up = true;
            Ok(())
        })
    }

    fn set_down(&mut self, link: &str) -> Result<(), OpsError> {
        self.call(Call::SetDown(link.to_owned()), |st| {
            let i = st.find(link)?;
            st.links[i].up = false;
            // Going down flushes every route through the link (fib_disable_ip); the prefix
            // routes of its addresses come back with `set_up`, other routes do not.
            let index = st.links[i].index;
            st.static_routes.retain(|r| r.oif != Some(index));
            Ok(())
        })
    }

    /// Removes link `i` and everything that hangs off it in this namespace: its routes, its
    /// sysctls, its bridge port (re-tuning the bridge's MTU) or, for a bridge, its ports.
    /// Returns its veth record so that the caller can remove the peer, wherever it is.
    fn remove_link_at(&mut self, i: usize) -> Option<VethEnd> {
        let gone = self.links.remove(i);
        self.static_routes.retain(|r| r.oif != Some(gone.index));
        for (k, _) in link_sysctls(&gone.name, "") {
            self.sysctls.remove(&k);
        }
        self.mtu_set_by_user.remove(&gone.name);
        self.groups.remove(&gone.name);
        self.ipv6_autoconf_off.remove(&gone.name);
        // Deleting a bridge releases its ports (br_dev_delete -> del_nbp for each).
        self.ports.retain(|_, p| p.master != gone.name);
        // Deleting a port takes it off its bridge, which re-tunes its MTU (br_del_if).
        if let Some(port) = self.ports.remove(&gone.name) {
            self.bridge_mtu_auto_adjust(&port.master);
        }
        self.veths.remove(&gone.name)
    }

    // ---- FirewallOps ----

    fn save(&mut self, table: Table) -> Result<String, OpsError> {
        self.call(Call::FwSave(table), |st| {
            Ok(st
                .tables
                .get(&table)
                .map(FwTable::render)
                .unwrap_or_default())
        })
    }

    fn apply(&mut self, batch: &Batch) -> Result<(), OpsError> {
        self.call(Call::FwApply(batch.clone()), |st| {
            let mut t = st
                .tables
                .get(&batch.table)
                .cloned()
                .unwrap_or_else(|| FwTable::new(batch.table));
            t.apply(batch.lines.iter().map(String::as_str))
                .map_err(|e| (OpsErrorKind::Other, Box::new(e) as Box<_>))?;
            st.tables.insert(batch.table, t);
            Ok(())
        })
    }

    fn nft_apply(&mut self, ops: &[NftOp]) -> Result<(), OpsError> {
        self.call(Call::NftApply(ops.to_vec()), |st| {
            // One transaction: work on a copy, keep it only if every op applies.
            let mut next = st.nft.clone();
            for op in ops {
                NftModel::apply(&mut next, op)?;
            }
            st.nft = next;
            Ok(())
        })
    }

    fn nft_elements(&mut self) -> Result<Option<Vec<Element>>, OpsError> {
        self.call(Call::NftElements, |st| {
            Ok(st
                .nft
                .as_ref()
                .map(|m| m.elements.iter().cloned().collect()))
        })
    }

    fn set_policy(&mut self, table: Table, chain: &str, policy: Policy) -> Result<(), OpsError> {
        self.call(Call::SetPolicy(table, chain.to_owned(), policy), |st| {
            let mut t = st
                .tables
                .get(&table)
                .cloned()
                .unwrap_or_else(|| FwTable::new(table));
            t.set_policy(chain, policy).map_err(|reason| {
                let kind = match reason {
                    RestoreErrorReason::NoSuchChain(_) => OpsErrorKind::NotFound,
                    _ => OpsErrorKind::Other,
                };
                (kind, Box::new(reason) as Box<_>)
            })?;
            st.tables.insert(table, t);
            Ok(())
        })
    }

    // ---- SysctlOps ----

    fn read(&mut self, key: &str) -> Result<String, OpsError> {
        self.call(Call::SysctlRead(key.to_owned()), |st| {
            st.sysctls
                .get(key)
                .cloned()
                .ok_or_else(|| fail(OpsErrorKind::NotFound, format!("no such sysctl: {key}")))
        })
    }

    fn write(&mut self, key: &str, value: &str) -> Result<(), OpsError> {
        self.call(Call::SysctlWrite(key.to_owned(), value.to_owned()), |st| {
            let current = st
                .sysctls
                .get_mut(key)
                .ok_or_else(|| fail(OpsErrorKind::NotFound, format!("no such sysctl: {key}")))?;
            let value = value.trim();
            let numeric =
                |s: &str| !s.is_empty() && s.split_whitespace().all(|p| p.parse::<i64>().is_ok());
            // An integer sysctl refuses text (proc_dointvec: EINVAL).
            if numeric(current) && !numeric(value) {
                return Err(fail(
                    OpsErrorKind::Other,
                    format!("invalid argument: {value:?} for {key}"),
                ));
            }
            *current = value.to_owned();
            Ok(())
        })
    }
}

/// An in-memory host: links, IPv4 addresses and main-table routes, the iptables `filter` and
/// `nat` tables, and sysctls, with a log of every call and injectable faults.
///
/// `FakeHost` is a cheap handle: clones share one state. It implements [`LinkOps`],
/// [`FirewallOps`], [`SysctlOps`] and [`AttachOps`] itself, and [`FakeHost::ops`] hands out one
/// handle per trait for code that needs three `&mut` at once ([`FakeLink`] does `AttachOps`
/// too). See the crate docs for an example.
///
/// Each `FakeHost` is one network namespace. [`FakeHost::new_netns`] makes a container's,
/// and [`FakeHost::with_netns`] registers it under a path so that `create_veth` can put a
/// peer in it; deleting either end of a veth deletes both, across namespaces too.
///
/// Builder methods (`with_*`) and inspectors (`link`, `rules`, `sysctl`, `snapshot`) are not
/// recorded as calls and ignore faults; only trait calls are.
#[derive(Debug, Clone)]
pub struct FakeHost {
    state: Arc<Mutex<State>>,
}

impl Default for FakeHost {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeHost {
    /// A host like a freshly booted machine: only `lo` (index 1, up, `127.0.0.1/8`), an empty
    /// main table, empty `filter` and `nat` tables with ACCEPT policies, `ip_forward = 0`.
    pub fn new() -> Self {
        FakeHost {
            state: Arc::new(Mutex::new(State::new())),
        }
    }

    /// A network namespace as `unshare -n` or `ip netns add` leaves it: `lo` (index 1) down and
    /// without an address until it is brought up; otherwise as [`FakeHost::new`]. Register it
    /// with [`FakeHost::with_netns`] so that a veth peer can be created in it.
    pub fn new_netns() -> Self {
        let host = FakeHost::new();
        {
            let mut st = host.st();
            if let Some(lo) = st.links.iter_mut().find(|l| l.name == "lo") {
                lo.up = false;
                lo.addrs.clear();
            }
        }
        host
    }

    /// One handle per trait, all sharing this host's state.
    pub fn ops(&self) -> (FakeLink, FakeFirewall, FakeSysctl) {
        (self.link_ops(), self.firewall_ops(), self.sysctl_ops())
    }

    pub fn link_ops(&self) -> FakeLink {
        FakeLink {
            state: Arc::clone(&self.state),
        }
    }

    pub fn firewall_ops(&self) -> FakeFirewall {
        FakeFirewall {
            state: Arc::clone(&self.state),
        }
    }

    pub fn sysctl_ops(&self) -> FakeSysctl {
        FakeSysctl {
            state: Arc::clone(&self.state),
        }
    }

    // ---- builders ----

    /// Adds a link as given, replacing any link of the same name. An index of 0 (or one
    /// already taken) is replaced by the next free index. Its prefix routes follow from
    /// `up` and `addrs`.
    pub fn with_link(self, link: LinkInfo) -> Self {
        self.st().insert_link(link);
        self
    }

    /// Adds an up physical device (no `kind`, MTU 1500) with these addresses, e.g. `eth0`.
    pub fn with_device(self, name: &str, addrs: &[Ipv4Net]) -> Self {
        let index = self.st().next_index;
        self.with_link(LinkInfo {
            name: name.to_owned(),
            index,
            kind: None,
            mac: Some(fake_mac(index)),
            mtu: DEFAULT_MTU,
            up: true,
            addrs: addrs.to_vec(),
        })
    }

    /// Adds an up bridge (MTU 1500) with one address, e.g. a `docker0` left by a previous run.
    pub fn with_bridge(self, name: &str, addr: Ipv4Net) -> Self {
        let index = self.st().next_index;
        self.with_link(LinkInfo {
            name: name.to_owned(),
            index,
            kind: Some("bridge".to_owned()),
            mac: Some(fake_mac(index)),
            mtu: DEFAULT_MTU,
            up: true,
            addrs: vec![addr],
        })
    }

    /// Adds a main-table route to `dst` (no gateway, no interface: only the destination
    /// matters to overlap checks).
    pub fn with_route(self, dst: Ipv4Net) -> Self {
        self.with_route_v4(RouteV4 {
            dst: Some(dst),
            gateway: None,
            oif: None,
        })
    }

    /// Adds a main-table route as given. A route whose `oif` names a link goes away with it.
    pub fn with_route_v4(self, route: RouteV4) -> Self {
        self.st().static_routes.push(route);
        self
    }

    /// Sets (or creates) a sysctl key.
    pub fn with_sysctl(self, key: &str, value: &str) -> Self {
        self.st()
            .sysctls
            .insert(key.to_owned(), value.trim().to_owned());
        self
    }

    /// Replaces a table with the contents of an `iptables-save` text (header, `COMMIT` and
    /// comments optional), as a real host that already has these rules would show them.
    pub fn with_rules(self, table: Table, save_text: &str) -> Result<Self, SaveTextError> {
        let t = table_from_save(table, save_text)?;
        self.st().tables.insert(table, t);
        Ok(self)
    }

    /// Registers the network namespace `ns` under `path` (e.g. `/proc/4242/ns/net`), so that
    /// [`AttachOps::create_veth`] with that `peer_netns` creates the peer in `ns`. `ns` is
    /// from then on known by `path` (the last registration wins): its veth ends record this
    /// host under [`INIT_NETNS`] (or the path this host was itself registered under), and this
    /// host's ends record `ns` under `path`. Registering a host in itself makes `path` an
    /// alias of its own namespace.
    pub fn with_netns(self, path: impl Into<PathBuf>, ns: FakeHost) -> Self {
        let path = path.into();
        let entry = if Arc::ptr_eq(&self.state, &ns.state) {
            NsRef::Own
        } else {
            // Not nested with our own lock: see `netns` on lock order.
            ns.st().path = path.clone();
            NsRef::Other(ns)
        };
        self.st().netns.insert(path, entry);
        self
    }

    /// Unloads a table: `save` returns an empty listing until a batch or policy loads it again
    /// (as the kernel loads `iptable_nat` on first use).
    pub fn without_table(self, table: Table) -> Self {
        self.st().tables.remove(&table);
        self
    }

    // ---- inspection (not recorded) ----

    pub fn link(&self, name: &str) -> Option<LinkInfo> {
        let st = self.st();
        st.links.iter().find(|l| l.name == name).cloned()
    }

    /// The main table, as `routes_v4` would return it.
    pub fn routes(&self) -> Vec<RouteV4> {
        self.st().routes()
    }

    /// The table in `iptables-save` format, as `save` would return it.
    pub fn rules(&self, table: Table) -> String {
        self.st()
            .tables
            .get(&table)
            .map(FwTable::render)
            .unwrap_or_default()
    }

    /// The table as data, or `None` if it is not loaded.
    pub fn table(&self, table: Table) -> Option<FwTable> {
        self.st().tables.get(&table).cloned()
    }

    pub fn sysctl(&self, key: &str) -> Option<String> {
        self.st().sysctls.get(key).cloned()
    }

    /// The namespace registered under `path` (a handle sharing its state).
    pub fn netns(&self, path: impl AsRef<std::path::Path>) -> Option<FakeHost> {
        match self.st().netns.get(path.as_ref()) {
            Some(NsRef::Own) => Some(self.clone()),
            Some(NsRef::Other(ns)) => Some(ns.clone()),
            None => None,
        }
    }

    /// The path this namespace is known by: [`INIT_NETNS`] unless registered elsewhere.
    pub fn netns_path(&self) -> PathBuf {
        self.st().path.clone()
    }

    /// The bridge `link` is a port of.
    pub fn master(&self, link: &str) -> Option<String> {
        self.st().ports.get(link).map(|p| p.master.clone())
    }

    /// The device group of `link` (0, the default, for a link never moved, or none).
    pub fn group(&self, link: &str) -> u32 {
        self.st().groups.get(link).copied().unwrap_or(0)
    }

    /// Whether `link` is a bridge port in hairpin mode.
    pub fn hairpin(&self, link: &str) -> bool {
        self.st().ports.get(link).is_some_and(|p| p.hairpin)
    }

    /// Whether `link` has IPv6 address autoconfiguration off
    /// ([`AttachOps::set_ipv6_autoconf_off`]); `false` for a link without it or no link.
    pub fn ipv6_autoconf_off(&self, link: &str) -> bool {
        self.st().ipv6_autoconf_off.contains(link)
    }

    /// The other end of the veth `link`.
    pub fn peer(&self, link: &str) -> Option<VethPeer> {
        self.st().veths.get(link).map(VethEnd::as_peer)
    }

    /// Everything observable, for equality checks.
    pub fn snapshot(&self) -> Snapshot {
        self.st().snapshot()
    }

    // ---- recording ----

    /// Every trait call since creation or [`FakeHost::clear_calls`], in order, failed ones
    /// included.
    pub fn calls(&self) -> Vec<Call> {
        self.st().log.iter().map(|r| r.call.clone()).collect()
    }

    /// The calls that could change the host (everything but `links`, `routes_v4`, `save` and
    /// `read`), failed ones included.
    pub fn mutations(&self) -> Vec<Call> {
        self.st()
            .log
            .iter()
            .filter(|r| r.call.is_mutating())
            .map(|r| r.call.clone())
            .collect()
    }

    /// Every call with its outcome.
    pub fn history(&self) -> Vec<CallRecord> {
        self.st().log.clone()
    }

    /// Empties the log. Armed faults keep counting from when they were armed.
    pub fn clear_calls(&self) {
        self.st().log.clear();
    }

    // ---- faults ----

    /// Makes the `n`th call (1-based, counted from now) of `op` fail with
    /// [`OpsErrorKind::Other`]. The failed call changes nothing; later calls run normally.
    /// `n == 0` arms nothing.
    pub fn fail_nth(&self, op: Op, n: usize) {
        self.fail_nth_with(op, n, OpsErrorKind::Other);
    }

    /// As [`FakeHost::fail_nth`], with the given error kind.
    pub fn fail_nth_with(&self, op: Op, n: usize, kind: OpsErrorKind) {
        self.st().faults.arm_op(op, n, kind);
    }

    /// Makes the `n`th mutating call (1-based, counted from now, whatever the operation) fail
    /// with [`OpsErrorKind::Other`]. Run a sequence once to count its
    /// [`FakeHost::mutations`], then fail each in turn on a fresh host.
    pub fn fail_nth_mutation(&self, n: usize) {
        self.fail_nth_mutation_with(n, OpsErrorKind::Other);
    }

    /// As [`FakeHost::fail_nth_mutation`], with the given error kind.
    pub fn fail_nth_mutation_with(&self, n: usize, kind: OpsErrorKind) {
        self.st().faults.arm_mutation(n, kind);
    }

    /// Makes every call of `op` fail with `kind` until [`FakeHost::clear_faults`], e.g. a
    /// host where every firewall change is `PermissionDenied`.
    pub fn fail_every(&self, op: Op, kind: OpsErrorKind) {
        self.st().faults.arm_every(op, kind);
    }

    /// Disarms every fault.
    pub fn clear_faults(&self) {
        self.st().faults.clear();
    }

    /// How many one-shot faults have not fired yet (0 after a test that expected them all to).
    pub fn pending_faults(&self) -> usize {
        self.st().faults.pending()
    }
}

/// A stable, locally administered unicast MAC for links added by the builders.
fn fake_mac(index: u32) -> MacAddr {
    let [_, _, hi, lo] = index.to_be_bytes();
    MacAddr([0x02, 0x00, 0x00, 0x00, hi, lo])
}

/// The [`LinkOps`] handle of a [`FakeHost`].
#[derive(Debug, Clone)]
pub struct FakeLink {
    state: Arc<Mutex<State>>,
}

/// The [`FirewallOps`] handle of a [`FakeHost`].
#[derive(Debug, Clone)]
pub struct FakeFirewall {
    state: Arc<Mutex<State>>,
}

/// The [`SysctlOps`] handle of a [`FakeHost`].
#[derive(Debug, Clone)]
pub struct FakeSysctl {
    state: Arc<Mutex<State>>,
}

macro_rules! impl_ops {
    ($($ty:ty),*) => {$(
        impl $ty {
            /// Locks the shared state. A test that panicked while holding the lock leaves a
            /// consistent state (every operation validates before it changes anything), so a
            /// poisoned lock is used as is.
            fn st(&self) -> MutexGuard<'_, State> {
                self.state.lock().unwrap_or_else(PoisonError::into_inner)
            }
        }
    )*};
}
impl_ops!(FakeHost, FakeLink, FakeFirewall, FakeSysctl);

macro_rules! impl_link_ops {
    ($ty:ty) => {
        impl LinkOps for $ty {
            fn links(&mut self) -> Result<Vec<LinkInfo>, OpsError> {
                self.st().links()
            }
            fn routes_v4(&mut self) -> Result<Vec<RouteV4>, OpsError> {
                self.st().routes_v4()
            }
            fn create_bridge(&mut self, spec: &BridgeSpec) -> Result<(), OpsError> {
                self.st().create_bridge(spec)
            }
            fn add_addr(&mut self, link: &str, addr: Ipv4Net) -> Result<(), OpsError> {
                self.st().add_addr(link, addr)
            }
            fn del_addr(&mut self, link: &str, addr: Ipv4Net) -> Result<(), OpsError> {
                self.st().del_addr(link, addr)
            }
            fn set_mtu(&mut self, link: &str, mtu: u32) -> Result<(), OpsError> {
                self.st().set_mtu(link, mtu)
            }
            fn set_up(&mut self, link: &str) -> Result<(), OpsError> {
                self.st().set_up(link)
            }
            fn set_down(&mut self, link: &str) -> Result<(), OpsError> {
                self.st().set_down(link)
            }
            fn delete_link(&mut self, link: &str) -> Result<(), OpsError> {
                // May delete a veth peer in another namespace: needs both locks.
                netns::delete_link(&self.state, link)
            }
        }
    };
}

macro_rules! impl_attach_ops {
    ($ty:ty) => {
        impl AttachOps for $ty {
            fn create_veth(&mut self, spec: &VethSpec) -> Result<(), OpsError> {
                // Creates the peer in another namespace: needs both locks.
                netns::create_veth(&self.state, spec)
            }
            fn set_master(&mut self, link: &str, master: &str) -> Result<(), OpsError> {
                self.st().set_master(link, master)
            }
            fn set_hairpin(&mut self, link: &str, on: bool) -> Result<(), OpsError> {
                self.st().set_hairpin(link, on)
            }
            fn set_ipv6_autoconf_off(&mut self, link: &str) -> Result<(), OpsError> {
                self.st().set_ipv6_autoconf_off(link)
            }
            fn disable_ipv6(&mut self, link: &str) -> Result<(), OpsError> {
                self.st().disable_ipv6(link)
            }
            fn add_route(&mut self, route: &RouteV4) -> Result<(), OpsError> {
                self.st().add_route(route)
            }
            fn retire_link(&mut self, link: &str, group: u32) -> Result<(), OpsError> {
                self.st().retire_link(link, group)
            }
            fn delete_group(&mut self, group: u32) -> Result<(), OpsError> {
                // Deletes veth peers in other namespaces: needs their locks too.
                netns::delete_group(&self.state, group)
            }
        }
    };
}

macro_rules! impl_firewall_ops {
    ($ty:ty) => {
        impl FirewallOps for $ty {
            fn save(&mut self, table: Table) -> Result<String, OpsError> {
                self.st().save(table)
            }
            fn apply(&mut self, batch: &Batch) -> Result<(), OpsError> {
                self.st().apply(batch)
            }
            fn set_policy(
                &mut self,
                table: Table,
                chain: &str,
                policy: Policy,
            ) -> Result<(), OpsError> {
                self.st().set_policy(table, chain, policy)
            }
            fn nft_apply(&mut self, ops: &[NftOp]) -> Result<(), OpsError> {
                self.st().nft_apply(ops)
            }
            fn nft_elements(&mut self) -> Result<Option<Vec<Element>>, OpsError> {
                self.st().nft_elements()
            }
        }
    };
}

macro_rules! impl_sysctl_ops {
    ($ty:ty) => {
        impl SysctlOps for $ty {
            fn read(&mut self, key: &str) -> Result<String, OpsError> {
                self.st().read(key)
            }
            fn write(&mut self, key: &str, value: &str) -> Result<(), OpsError> {
                self.st().write(key, value)
            }
        }
    };
}

impl_link_ops!(FakeLink);
impl_link_ops!(FakeHost);
impl_firewall_ops!(FakeFirewall);
impl_firewall_ops!(FakeHost);
impl_sysctl_ops!(FakeSysctl);
impl_sysctl_ops!(FakeHost);
impl_attach_ops!(FakeLink);
impl_attach_ops!(FakeHost);

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn ifname_rules_match_the_kernel() {
        assert!(valid_ifname("docker0"));
        assert!(valid_ifname("fifteen-bytes-x"));
        assert!(!valid_ifname("sixteen-bytes-xx"));
        assert!(!valid_ifname(""));
        assert!(!valid_ifname(".."));
        assert!(!valid_ifname("a/b"));
        assert!(!valid_ifname("a b"));
        assert!(!valid_ifname("eth0:1"));
    }

    #[test]
    fn prefix_routes_follow_up_links_only_and_skip_lo_and_host_addresses() {
        let host = FakeHost::new()
            .with_device(
                "eth0",
                &[net("10.0.2.15/24"), net("10.0.2.16/24"), net("10.9.9.9/32")],
            )
            .with_link(LinkInfo {
                name: "down0".to_owned(),
                index: 0,
                kind: Some("dummy".to_owned()),
                mac: None,
                mtu: 1500,
                up: false,
                addrs: vec![net("192.168.5.1/24")],
            });
        let eth0 = host.link("eth0").unwrap().index;
        assert_eq!(
            host.routes(),
            vec![RouteV4 {
                dst: Some(net("10.0.2.0/24")),
                gateway: None,
                oif: Some(eth0)
            }]
        );
    }

    #[test]
    fn routes_are_sorted_by_destination_with_default_first() {
        let host = FakeHost::new()
            .with_route(net("192.168.0.0/16"))
            .with_route_v4(RouteV4 {
                dst: None,
                gateway: Some("10.0.0.1".parse().unwrap()),
                oif: None,
            })
            .with_route(net("10.0.0.0/8"));
        let dsts: Vec<_> = host.routes().iter().map(|r| r.dst).collect();
        assert_eq!(
            dsts,
            [None, Some(net("10.0.0.0/8")), Some(net("192.168.0.0/16"))]
        );
    }

    #[test]
    fn links_get_their_per_interface_sysctls_and_lose_them_on_delete() {
        let host = FakeHost::new().with_sysctl(netcore::ops::IP_FORWARD, "1");
        let mut link = host.link_ops();
        link.create_bridge(&BridgeSpec {
            name: "br0".to_owned(),
            mac: MacAddr([2, 0, 0, 0, 0, 9]),
            mtu: None,
            mcast_snooping: true,
        })
        .unwrap();
        assert_eq!(
            host.sysctl("net/ipv4/conf/br0/forwarding").as_deref(),
            Some("1")
        );
        link.delete_link("br0").unwrap();
        assert_eq!(host.sysctl("net/ipv4/conf/br0/forwarding"), None);
    }

    #[test]
    fn fake_macs_are_local_unicast_and_distinct() {
        assert!(fake_mac(2).is_local() && fake_mac(2).is_unicast());
        assert_ne!(fake_mac(2), fake_mac(3));
    }
}
