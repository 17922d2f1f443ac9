//! The worker: one plain thread that owns the host backends, the [`Network`] state, the
//! store and the proxies, and serves the requests one at a time from a channel.
//!
//! One thread, because the host operations must not run inside the async runtime (the
//! netlink backend owns a runtime of its own) and because serialising the requests makes
//! each one's "decide → persist → apply" sequence atomic with respect to the others, so two
//! concurrent clients can never be handed the same IP or port.
//!
//! Each state-changing request goes:
//! 1. **decide** in [`Network`] (a refusal changes nothing and costs no I/O);
//! 2. **persist** the resolved operation ([`Op`]) to the journal, fdatasync'ed;
//! 3. **apply** the firewall batches in order (nat, then filter); if one fails, the earlier
//!    ones are undone ([`firewall::undo_of`]), the state is reverted with the opposite
//!    handler and the revert is journalled as a compensating record;
//! 4. **start/stop the proxy** (userland-proxy mode); a bind failure reverts 3, 2 and 1;
//! 5. answer.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, anyhow};
use ipnet::Ipv4Net;
use netcore::config::Config;
use netcore::firewall::{self, Batch, Listing, PortMapping, Table};
use netcore::handlers::{Endpoint, HandlerError, Interface, LinkSpec, Network};
use netcore::mac::MacAddr;
use netcore::ports::Proto;
use tokio::sync::{mpsc, oneshot};

use super::op::Op;
use super::proxy::Proxies;
use super::reconcile;
use super::store::{self, Store};
use crate::api;
use crate::backend::{self, Backends};

/// A parsed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    AllocateInterface {
        id: String,
        ip: Option<Ipv4Addr>,
        mac: Option<MacAddr>,
    },
    ReleaseInterface {
        id: String,
    },
    AllocatePort {
        id: String,
        host_ip: Option<Ipv4Addr>,
        /// 0: a dynamic port.
        host_port: u16,
        container_port: u16,
        proto: Proto,
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
    State,
    Health,
}

/// A successful answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `created` is false when the container had this interface already.
    Interface {
        iface: Interface,
        created: bool,
    },
    Released(api::Released),
    Port(PortMapping),
    Link(api::LinkReply),
    State(api::State),
    Health(api::Health),
}

/// Why a request failed; [`super::server`] maps each to an HTTP status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServiceError {
    /// The request is malformed (400).
    #[error("{0}")]
    BadInput(String),
    /// netcore refused it; [`HandlerError::kind`] decides the status.
    #[error(transparent)]
    Handler(#[from] HandlerError),
    /// The host refused something the state allowed, e.g. another program holds the port
    /// the proxy must bind (409).
    #[error("{0}")]
    Conflict(String),
    /// The host failed (500); the message is the whole error chain.
    #[error("{0}")]
    Host(String),
    /// The worker is gone (503).
    #[error("{0}")]
    Unavailable(String),
}

impl ServiceError {
    fn host(context: &str, e: impl std::fmt::Display) -> Self {
        ServiceError::Host(format!("{context}: {e}"))
    }
}

/// One queued request and where its answer goes.
#[derive(Debug)]
pub struct Job {
    pub cmd: Command,
    pub reply: oneshot::Sender<Result<Reply, ServiceError>>,
}

/// Where the daemon keeps things, and how it runs.
#[derive(Debug, Clone)]
pub struct Setup {
    pub config: Config,
    pub data_root: PathBuf,
    pub resolv_conf: PathBuf,
    pub store: store::Options,
}

/// The worker's state.
pub struct Service {
    net: Network,
    store: Store,
    b: Backends,
    iptables: bool,
    bridge_addr: Ipv4Net,
    proxies: Box<dyn Proxies>,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("net", &self.net)
            .field("store", &self.store)
            .field("bridge_addr", &self.bridge_addr)
            .finish_non_exhaustive()
    }
}

impl Service {
    /// Brings the host and the state up: init (as `dockerd-net init`), load the state,
    /// reconcile the kernel's per-container rules with it, restart the proxies.
    pub fn start(setup: &Setup, mut b: Backends, proxies: Box<dyn Proxies>) -> Result<Self> {
        let resolv = super::read_resolv_conf(&setup.resolv_conf);
        let init = super::host::init_host(&mut b, &setup.data_root, &resolv, &setup.config)?;
        let (bridge, addr) = (init.plan.bridge.clone(), init.plan.addr);
        let fresh = Network::new(&setup.config, &bridge, addr)
            .with_context(|| format!("bridge {bridge} ({addr}) cannot hold containers"))?;

        let opened = store::open(&setup.data_root, fresh.clone(), setup.store)?;
        if let Some(torn) = &opened.torn {
            tracing::warn!("kept a torn journal record aside in {}", torn.display());
        }
        let mut store = opened.store;
        let loaded = opened.network;
        let net = match check_params(&loaded, &fresh) {
            Params::Same => loaded,
            Params::Incompatible(why) => {
                return Err(store
                    .reject(format!(
                        "the state in {} {why}; refusing to start",
                        setup.data_root.display()
                    ))
                    .into());
            }
            Params::Changed(what) => {
                tracing::info!(
                    "the configuration changed since the state was saved ({what}): re-applying every allocation"
                );
                migrate(&loaded, fresh).map_err(|e| {
                    anyhow!(
                        "the state in {} does not fit the current configuration ({what}): {e}; \
                         start with the previous options, or move {} and {} away",
                        setup.data_root.display(),
                        store.dir().join(store::SNAPSHOT).display(),
                        store.dir().join(store::JOURNAL).display(),
                    )
                })?
            }
        };
        // Snapshot on start: the journal starts empty, replay next time is short.
        store.compact(&net).context("writing the state snapshot")?;
        tracing::info!(
            containers = net.endpoints().len(),
            replayed = opened.replayed,
            "state loaded from {}",
            setup.data_root.display()
        );

        let mut svc = Service {
            net,
            store,
            b,
            iptables: setup.config.iptables,
            bridge_addr: addr,
            proxies,
        };
        svc.reconcile()
            .context("re-applying the rules of the saved state")?;
        svc.restart_proxies();
        Ok(svc)
    }

    /// The state (for tests and the shutdown log).
    pub fn network(&self) -> &Network {
        &self.net
    }

    /// Serves one request.
    pub fn handle(&mut self, cmd: Command) -> Result<Reply, ServiceError> {
        let mutating = !matches!(cmd, Command::State | Command::Health);
        if mutating && self.store.is_broken() {
            // An append failed and could not be cut back: rewrite the journal from the
            // (consistent) state before accepting anything.
            self.store
                .compact(&self.net)
                .map_err(|e| ServiceError::host("saving the state", e))?;
        }
        let reply = match cmd {
            Command::AllocateInterface { id, ip, mac } => self.allocate_interface(id, ip, mac),
            Command::ReleaseInterface { id } => self.release_interface(id),
            Command::AllocatePort {
                id,
                host_ip,
                host_port,
                container_port,
                proto,
            } => self.allocate_port(id, host_ip, host_port, container_port, proto),
            Command::ReleasePort {
                id,
                host_ip,
                host_port,
                proto,
            } => self.release_port(id, host_ip, host_port, proto),
            Command::Link {
                parent,
                child,
                ports,
                enable,
            } => self.link(parent, child, ports, enable),
            Command::State => Ok(Reply::State(self.state())),
            Command::Health => Ok(Reply::Health(self.health())),
        }?;
        if mutating && self.store.wants_compaction() {
            let t = Instant::now();
            match self.store.compact(&self.net) {
                Ok(()) => tracing::debug!(ms = t.elapsed().as_millis() as u64, "compacted"),
                // The record is durable in the journal already: only the compaction is lost.
                Err(e) => tracing::error!("compacting the state failed: {e}"),
            }
        }
        Ok(reply)
    }

    /// Stops every proxy (the state and the rules stay, as Docker leaves them).
    pub fn shutdown(&mut self) {
        let n = self.proxies.running();
        self.proxies.stop_all();
        tracing::info!(
            proxies = n,
            containers = self.net.endpoints().len(),
            "worker stopped"
        );
    }

    // -----------------------------------------------------------------------------------------
    // Handlers

    fn allocate_interface(
        &mut self,
        id: String,
        ip: Option<Ipv4Addr>,
        mac: Option<MacAddr>,
    ) -> Result<Reply, ServiceError> {
        let existed = self.net.endpoints().contains_key(&id);
        let iface = self.net.allocate_interface(&id, ip, mac)?;
        if existed {
            return Ok(Reply::Interface {
                iface,
                created: false,
            });
        }
        let op = Op::AllocateInterface {
            id: id.clone(),
            ip: iface.ip,
            mac: iface.mac,
        };
        if let Err(e) = self.persist(&[op]) {
            self.revert(|net| net.release_interface(&id).map(drop));
            return Err(e);
        }
        Ok(Reply::Interface {
            iface,
            created: true,
        })
    }

    fn release_interface(&mut self, id: String) -> Result<Reply, ServiceError> {
        let links: Vec<LinkSpec> = match self.net.endpoints().get(&id) {
            Some(ep) => self
                .net
                .links()
                .iter()
                .filter(|l| l.parent == ep.ip || l.child == ep.ip)
                .copied()
                .collect(),
            None => Vec::new(),
        };
        let effect = self.net.release_interface(&id)?;
        let ep = effect.value;
        if let Err(e) = self.persist(&[Op::ReleaseInterface { id: id.clone() }]) {
            self.restore_endpoint(&id, &ep, &links);
            return Err(e);
        }
        if let Err(e) = self.apply_firewall(&effect.firewall) {
            let ops = self.restore_endpoint(&id, &ep, &links);
            self.compensate(&ops);
            return Err(e);
        }
        for m in &ep.ports {
            self.proxies.stop(m);
        }
        Ok(Reply::Released(api::Released {
            id,
            ip: ep.ip,
            ports: ep.ports,
        }))
    }

    fn allocate_port(
        &mut self,
        id: String,
        host_ip: Option<Ipv4Addr>,
        host_port: u16,
        container_port: u16,
        proto: Proto,
    ) -> Result<Reply, ServiceError> {
        let effect = self
            .net
            .allocate_port(&id, host_ip, host_port, container_port, proto)?;
        let m = effect.value;
        let op = Op::AllocatePort {
            id: id.clone(),
            host_ip: m.host_ip,
            host_port: m.host_port,
            container_port,
            proto,
            dynamic: host_port == 0,
        };
        let undo = Op::ReleasePort {
            id: id.clone(),
            host_ip: m.host_ip,
            host_port: m.host_port,
            proto,
        };
        let release = |net: &mut Network| {
            net.release_port(&id, m.host_ip, m.host_port, proto)
                .map(drop)
        };
        if let Err(e) = self.persist(&[op]) {
            self.revert(release);
            return Err(e);
        }
        let applied = match self.apply_firewall(&effect.firewall) {
            Ok(applied) => applied,
            Err(e) => {
                self.revert(release);
                self.compensate(&[undo]);
                return Err(e);
            }
        };
        if let Err(e) = self.proxies.start(&m) {
            self.undo_firewall(&applied);
            self.revert(release);
            self.compensate(&[undo]);
            return Err(proxy_error(&m, &e));
        }
        Ok(Reply::Port(m))
    }

    fn release_port(
        &mut self,
        id: String,
        host_ip: Ipv4Addr,
        host_port: u16,
        proto: Proto,
    ) -> Result<Reply, ServiceError> {
        let effect = self.net.release_port(&id, host_ip, host_port, proto)?;
        let m = effect.value;
        let reallocate = |net: &mut Network| {
            net.allocate_port(&id, Some(m.host_ip), m.host_port, m.container_port, m.proto)
                .map(drop)
        };
        if let Err(e) = self.persist(&[Op::ReleasePort {
            id: id.clone(),
            host_ip,
            host_port,
            proto,
        }]) {
            self.revert(reallocate);
            return Err(e);
        }
        if let Err(e) = self.apply_firewall(&effect.firewall) {
            self.revert(reallocate);
            self.compensate(&[Op::AllocatePort {
                id: id.clone(),
                host_ip: m.host_ip,
                host_port: m.host_port,
                container_port: m.container_port,
                proto: m.proto,
                dynamic: false,
            }]);
            return Err(e);
        }
        self.proxies.stop(&m);
        Ok(Reply::Port(m))
    }

    fn link(
        &mut self,
        parent: Ipv4Addr,
        child: Ipv4Addr,
        ports: Vec<(u16, Proto)>,
        enable: bool,
    ) -> Result<Reply, ServiceError> {
        let effect = self.net.link(parent, child, &ports, enable)?;
        let changed = effect.value;
        if changed.is_empty() {
            // Already as asked: nothing to record or apply.
            return Ok(Reply::Link(api::LinkReply { changed }));
        }
        let back: Vec<(u16, Proto)> = changed.iter().map(|l| (l.port, l.proto)).collect();
        let undo = |net: &mut Network| net.link(parent, child, &back, !enable).map(drop);
        if let Err(e) = self.persist(&[Op::Link {
            parent,
            child,
            ports,
            enable,
        }]) {
            self.revert(undo);
            return Err(e);
        }
        if let Err(e) = self.apply_firewall(&effect.firewall) {
            self.revert(undo);
            self.compensate(&[Op::Link {
                parent,
                child,
                ports: back.clone(),
                enable: !enable,
            }]);
            return Err(e);
        }
        Ok(Reply::Link(api::LinkReply { changed }))
    }

    fn state(&self) -> api::State {
        api::State {
            bridge: self.net.bridge().to_owned(),
            address: self.bridge_addr.to_string(),
            containers: self.net.endpoints().clone(),
            links: self.net.links().iter().copied().collect(),
        }
    }

    fn health(&self) -> api::Health {
        api::Health {
            status: if self.store.is_broken() {
                "degraded: the state journal needs rewriting".to_owned()
            } else {
                "ok".to_owned()
            },
            version: backend::VERSION.to_owned(),
            link_backend: backend::LINK_BACKEND.to_owned(),
            containers: self.net.endpoints().len(),
        }
    }

    // -----------------------------------------------------------------------------------------
    // Persistence and reverts

    fn persist(&mut self, ops: &[Op]) -> Result<(), ServiceError> {
        self.store
            .append(ops)
            .map(drop)
            .map_err(|e| ServiceError::host("saving the state", e))
    }

    /// Records a revert whose change was journalled already. If that fails, the journal
    /// says more than the state: force a rewrite from the state before the next change.
    fn compensate(&mut self, ops: &[Op]) {
        if let Err(e) = self.store.append(ops) {
            let what: Vec<String> = ops.iter().map(Op::describe).collect();
            tracing::error!(
                "recording the revert ({}) failed: {e}; the journal will be rewritten before the next change",
                what.join(", ")
            );
            self.store
                .mark_broken(format!("recording a revert failed: {e}"));
        }
    }

    /// Runs an opposite handler to take back a decision. It cannot fail on the state it
    /// reverts (the opposite of a change that just succeeded); if it does, it is logged.
    fn revert(&mut self, f: impl FnOnce(&mut Network) -> Result<(), HandlerError>) {
        if let Err(e) = f(&mut self.net) {
            tracing::error!("reverting a refused change failed: {e}");
        }
    }

    /// Gives a released container back everything it had; returns the calls made, for the
    /// compensating record.
    fn restore_endpoint(&mut self, id: &str, ep: &Endpoint, links: &[LinkSpec]) -> Vec<Op> {
        let mut ops = vec![Op::AllocateInterface {
            id: id.to_owned(),
            ip: ep.ip,
            mac: ep.mac,
        }];
        for m in &ep.ports {
            ops.push(Op::AllocatePort {
                id: id.to_owned(),
                host_ip: m.host_ip,
                host_port: m.host_port,
                container_port: m.container_port,
                proto: m.proto,
                dynamic: false,
            });
        }
        for l in links {
            ops.push(Op::Link {
                parent: l.parent,
                child: l.child,
                ports: vec![(l.port, l.proto)],
                enable: true,
            });
        }
        for op in &ops {
            if let Err(e) = op.replay(&mut self.net) {
                tracing::error!("restoring {id} failed: {e}");
            }
        }
        ops
    }

    // -----------------------------------------------------------------------------------------
    // The host

    /// Applies a request's batches in order; returns what was applied (for an undo). When a
    /// batch fails, the ones before it are undone and the error returned.
    ///
    /// A removal batch that fails is retried with only the lines whose rule is still there
    /// (someone may have flushed a chain): Docker 1.3's Unmap logs a failed delete and
    /// carries on, and a release must not be impossible because a rule is already gone.
    fn apply_firewall(&mut self, batches: &[Batch]) -> Result<Vec<Batch>, ServiceError> {
        // The common case, publishing: both tables in one iptables-restore (one process
        // instead of two). Only for additive batches, whose undo is safe whether or not
        // their table was committed before the failure (tables are committed one by one).
        if batches.len() > 1 && batches.iter().all(Batch::is_additive) {
            return match self.b.fw.apply_batches(batches) {
                Ok(()) => Ok(batches.to_vec()),
                Err(e) => {
                    for batch in batches.iter().rev() {
                        let _ = self.b.fw.apply(&firewall::undo_of(batch));
                    }
                    Err(ServiceError::host(
                        "applying the firewall rules (the request was reverted)",
                        format!("{e:#}"),
                    ))
                }
            };
        }
        let mut done: Vec<Batch> = Vec::new();
        for batch in batches {
            let result = match self.b.fw.apply(batch) {
                Ok(()) => Ok(Some(batch.clone())),
                Err(e) if is_removal(batch) => self.apply_present_removals(batch).map_err(|e2| {
                    anyhow!("{e}; retrying with only the rules still present failed too: {e2:#}")
                }),
                Err(e) => Err(anyhow!(e)),
            };
            match result {
                Ok(Some(applied)) => done.push(applied),
                Ok(None) => {}
                Err(e) => {
                    self.undo_firewall(&done);
                    return Err(ServiceError::host(
                        "applying the firewall rules (the request was reverted)",
                        format!("{e:#}"),
                    ));
                }
            }
        }
        Ok(done)
    }

    fn apply_present_removals(&mut self, batch: &Batch) -> Result<Option<Batch>> {
        let text = self.b.fw.save(batch.table)?;
        let mut sim = Listing::parse(batch.table, &text)?;
        let mut lines = Vec::new();
        for line in &batch.lines {
            let one = Batch {
                table: batch.table,
                lines: vec![line.clone()],
            };
            match sim.apply(&one) {
                Ok(next) => {
                    sim = next;
                    lines.push(line.clone());
                }
                Err(_) => tracing::warn!(table = %batch.table, "rule already gone: {line}"),
            }
        }
        if lines.is_empty() {
            return Ok(None);
        }
        let present = Batch {
            table: batch.table,
            lines,
        };
        self.b.fw.apply(&present)?;
        Ok(Some(present))
    }

    fn undo_firewall(&mut self, applied: &[Batch]) {
        for batch in applied.iter().rev() {
            let undo = firewall::undo_of(batch);
            if let Err(e) = self.b.fw.apply(&undo) {
                tracing::error!(
                    "undoing a firewall batch failed: {e}; the next start removes what is left"
                );
            }
        }
    }

    /// Makes the kernel's per-container rules match the state (see [`reconcile`]).
    fn reconcile(&mut self) -> Result<()> {
        if !self.iptables {
            return Ok(());
        }
        let wanted = self.net.rules();
        // nat first, as the handlers do: the DNAT before the ACCEPT that lets it through.
        for table in [Table::Nat, Table::Filter] {
            let text = self.b.fw.save(table)?;
            let listing = Listing::parse(table, &text)?;
            if let Some(batch) = reconcile::plan(
                table,
                &listing,
                &wanted,
                self.net.bridge(),
                self.bridge_addr.trunc(),
            ) {
                let (add, del) = batch.lines.iter().fold((0, 0), |(a, d), l| {
                    if l.starts_with("-D") {
                        (a, d + 1)
                    } else {
                        (a + 1, d)
                    }
                });
                tracing::info!(
                    %table,
                    added = add,
                    removed = del,
                    "re-applied the saved state's rules"
                );
                self.b.fw.apply(&batch)?;
            }
        }
        Ok(())
    }

    fn restart_proxies(&mut self) {
        let mappings: Vec<PortMapping> = self
            .net
            .endpoints()
            .values()
            .flat_map(|ep| ep.ports.iter().copied())
            .collect();
        for m in &mappings {
            if let Err(e) = self.proxies.start(m) {
                // The mapping stays (it is the container's); its rules work for traffic from
                // outside; only the proxy is missing. Docker logs and carries on likewise.
                tracing::error!("{}", proxy_error(m, &e));
            }
        }
    }
}

fn is_removal(batch: &Batch) -> bool {
    batch.lines.iter().all(|l| l.starts_with("-D "))
}

/// Docker's text for a proxy that cannot start (`Error starting userland proxy: ...`); a
/// port that another program holds is a conflict, anything else a host failure.
fn proxy_error(m: &PortMapping, e: &std::io::Error) -> ServiceError {
    let msg = format!(
        "Error starting userland proxy: listen {} {}:{}: {e}",
        m.proto, m.host_ip, m.host_port
    );
    if e.kind() == std::io::ErrorKind::AddrInUse {
        ServiceError::Conflict(msg)
    } else {
        ServiceError::Host(msg)
    }
}

/// How a loaded state's parameters compare with the current configuration's.
#[derive(Debug, PartialEq, Eq)]
enum Params {
    Same,
    /// Another bridge or bridge address: the state describes another network.
    Incompatible(String),
    /// Same bridge and address, other options (icc, hairpin, --ip, --fixed-cidr, iptables).
    Changed(String),
}

/// Compares the parts of two states that come from the configuration. `Network` keeps them
/// private, so they are read from its serialised form: every top-level field except the
/// allocations, and the address allocator's bridge and fixed-cidr.
fn check_params(loaded: &Network, fresh: &Network) -> Params {
    let (Ok(a), Ok(b)) = (serde_json::to_value(loaded), serde_json::to_value(fresh)) else {
        return Params::Incompatible("cannot be compared with the configuration".to_owned());
    };
    if loaded.bridge() != fresh.bridge() {
        return Params::Incompatible(format!(
            "is for bridge {}, but the bridge is {}",
            loaded.bridge(),
            fresh.bridge()
        ));
    }
    let (addr_a, addr_b) = (&a["ipam"]["bridge"], &b["ipam"]["bridge"]);
    if addr_a != addr_b {
        return Params::Incompatible(format!(
            "is for bridge address {addr_a}, but {} has {addr_b}",
            fresh.bridge()
        ));
    }
    const ALLOCATIONS: [&str; 4] = ["ipam", "ports", "endpoints", "links"];
    let mut changed = Vec::new();
    if let (Some(oa), Some(ob)) = (a.as_object(), b.as_object()) {
        for (k, va) in oa {
            if ALLOCATIONS.contains(&k.as_str()) {
                continue;
            }
            let vb = ob.get(k).unwrap_or(&serde_json::Value::Null);
            if va != vb {
                changed.push(format!("{k}: {va} -> {vb}"));
            }
        }
    }
    let (fa, fb) = (&a["ipam"]["fixed_cidr"], &b["ipam"]["fixed_cidr"]);
    if fa != fb {
        changed.push(format!("fixed_cidr: {fa} -> {fb}"));
    }
    if changed.is_empty() {
        Params::Same
    } else {
        Params::Changed(changed.join(", "))
    }
}

/// The allocations of `old` re-made on `fresh` (a state built from the current options).
/// The allocators' next-fit cursors start afresh.
fn migrate(old: &Network, mut fresh: Network) -> Result<Network, String> {
    for (id, ep) in old.endpoints() {
        fresh
            .allocate_interface(id, Some(ep.ip), Some(ep.mac))
            .map_err(|e| format!("container {id}: {e}"))?;
        for m in &ep.ports {
            fresh
                .allocate_port(id, Some(m.host_ip), m.host_port, m.container_port, m.proto)
                .map_err(|e| format!("container {id}: {e}"))?;
        }
    }
    for l in old.links() {
        fresh
            .link(l.parent, l.child, &[(l.port, l.proto)], true)
            .map_err(|e| format!("link {} -> {}: {e}", l.parent, l.child))?;
    }
    Ok(fresh)
}

/// Serves jobs until every sender is gone, then stops the proxies.
pub fn run(mut svc: Service, mut rx: mpsc::Receiver<Job>) {
    while let Some(job) = rx.blocking_recv() {
        let answer = svc.handle(job.cmd);
        // The client may have gone; a change it asked for stands (it is persisted).
        let _ = job.reply.send(answer);
    }
    svc.shutdown();
}

// ---------------------------------------------------------------------------------------------
// Parsing requests

fn bad(msg: String) -> ServiceError {
    ServiceError::BadInput(msg)
}

fn parse_ip(field: &str, s: &str) -> Result<Ipv4Addr, ServiceError> {
    s.parse()
        .map_err(|_| bad(format!("invalid {field} {s:?}: not an IPv4 address")))
}

/// A protocol name: `tcp` (the default when absent), `udp` or `sctp`.
pub fn parse_proto(s: Option<&str>) -> Result<Proto, ServiceError> {
    match s {
        None => Ok(Proto::Tcp),
        Some(p) => p
            .parse()
            .map_err(|_| bad(format!("unknown protocol {p:?}: expected tcp, udp or sctp"))),
    }
}

/// Docker's `"port/proto"` (a bare port means tcp).
pub fn parse_port_proto(s: &str) -> Result<(u16, Proto), ServiceError> {
    let (port, proto) = match s.split_once('/') {
        Some((p, proto)) => (p, Some(proto)),
        None => (s, None),
    };
    let port: u16 = port.parse().ok().filter(|&p| p != 0).ok_or_else(|| {
        bad(format!(
            "invalid port {s:?}: expected PORT or PORT/PROTO with PORT in 1-65535 (e.g. 5432/tcp)"
        ))
    })?;
    Ok((port, parse_proto(proto)?))
}

impl TryFrom<api::AllocateInterface> for Command {
    type Error = ServiceError;
    fn try_from(r: api::AllocateInterface) -> Result<Self, ServiceError> {
        Ok(Command::AllocateInterface {
            ip: r
                .requested_ip
                .as_deref()
                .map(|s| parse_ip("requested_ip", s))
                .transpose()?,
            mac: r
                .requested_mac
                .as_deref()
                .map(|s| {
                    s.parse::<MacAddr>()
                        .map_err(|e| bad(format!("invalid requested_mac {s:?}: {e}")))
                })
                .transpose()?,
            id: r.id,
        })
    }
}

impl TryFrom<api::ReleaseInterface> for Command {
    type Error = ServiceError;
    fn try_from(r: api::ReleaseInterface) -> Result<Self, ServiceError> {
        Ok(Command::ReleaseInterface { id: r.id })
    }
}

impl TryFrom<api::AllocatePort> for Command {
    type Error = ServiceError;
    fn try_from(r: api::AllocatePort) -> Result<Self, ServiceError> {
        Ok(Command::AllocatePort {
            host_ip: r
                .host_ip
                .as_deref()
                .map(netcore::handlers::parse_host_ip)
                .transpose()?,
            host_port: r.host_port.unwrap_or(0),
            container_port: r.container_port,
            proto: parse_proto(r.proto.as_deref())?,
            id: r.id,
        })
    }
}

impl TryFrom<api::ReleasePort> for Command {
    type Error = ServiceError;
    fn try_from(r: api::ReleasePort) -> Result<Self, ServiceError> {
        Ok(Command::ReleasePort {
            host_ip: netcore::handlers::parse_host_ip(&r.host_ip)?,
            host_port: r.host_port,
            proto: parse_proto(r.proto.as_deref())?,
            id: r.id,
        })
    }
}

impl TryFrom<api::Link> for Command {
    type Error = ServiceError;
    fn try_from(r: api::Link) -> Result<Self, ServiceError> {
        Ok(Command::Link {
            parent: parse_ip("parent_ip", &r.parent_ip)?,
            child: parse_ip("child_ip", &r.child_ip)?,
            ports: r
                .ports
                .iter()
                .map(|p| parse_port_proto(p))
                .collect::<Result<_, _>>()?,
            enable: r.enable,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::collections::BTreeSet;
    use std::path::Path;
    use std::rc::Rc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use backend_mock::{FakeHost, Op as HostOp};

    use super::*;

    struct Tmp(PathBuf);

    impl Tmp {
        fn new(tag: &str) -> Self {
            static N: AtomicU32 = AtomicU32::new(0);
            let p = std::env::temp_dir().join(format!(
                "dockerd-net-service-{tag}-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = std::fs::remove_dir_all(&p);
            Tmp(p)
        }
    }

    impl Drop for Tmp {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// Proxies that record what runs and fail when told to.
    #[derive(Default)]
    struct Fake {
        running: BTreeSet<(Ipv4Addr, u16, Proto)>,
        fail_next: Option<std::io::ErrorKind>,
    }

    #[derive(Clone, Default)]
    struct FakeProxies(Rc<RefCell<Fake>>);

    impl Proxies for FakeProxies {
        fn start(&mut self, m: &PortMapping) -> std::io::Result<()> {
            let mut f = self.0.borrow_mut();
            if let Some(kind) = f.fail_next.take() {
                return Err(std::io::Error::new(kind, "address already in use"));
            }
            f.running.insert((m.host_ip, m.host_port, m.proto));
            Ok(())
        }
        fn stop(&mut self, m: &PortMapping) {
            self.0
                .borrow_mut()
                .running
                .remove(&(m.host_ip, m.host_port, m.proto));
        }
        fn stop_all(&mut self) {
            self.0.borrow_mut().running.clear();
        }
        fn running(&self) -> usize {
            self.0.borrow().running.len()
        }
    }

    fn setup(dir: &Path, config: Config) -> Setup {
        Setup {
            config,
            data_root: dir.to_path_buf(),
            resolv_conf: dir.join("no-resolv.conf"),
            store: store::Options::default(),
        }
    }

    fn start(host: &FakeHost, s: &Setup, proxies: &FakeProxies) -> Result<Service> {
        let (link, fw, sys) = host.ops();
        let b = Backends {
            link: Box::new(link),
            fw: Box::new(fw),
            sys: Box::new(sys),
        };
        Service::start(s, b, Box::new(proxies.clone()))
    }

    fn alloc(svc: &mut Service, id: &str) -> Interface {
        match svc.handle(Command::AllocateInterface {
            id: id.into(),
            ip: None,
            mac: None,
        }) {
            Ok(Reply::Interface { iface, .. }) => iface,
            other => panic!("{other:?}"),
        }
    }

    fn publish(svc: &mut Service, id: &str, host_port: u16) -> Result<PortMapping, ServiceError> {
        svc.handle(Command::AllocatePort {
            id: id.into(),
            host_ip: None,
            host_port,
            container_port: 80,
            proto: Proto::Tcp,
        })
        .map(|r| match r {
            Reply::Port(m) => m,
            other => panic!("{other:?}"),
        })
    }

    /// The container rules in both tables, as iptables-save lines.
    fn container_rules(host: &FakeHost) -> Vec<String> {
        let mut v = Vec::new();
        for table in [Table::Nat, Table::Filter] {
            let l = Listing::parse(table, &host.rules(table)).expect("parses");
            for chain in reconcile::container_chains(table) {
                for r in &l.chain(chain).expect("chain").rules {
                    if reconcile::is_container_rule(
                        table,
                        chain,
                        r,
                        "docker0",
                        "172.17.0.0/16".parse().expect("valid"),
                    ) {
                        v.push(format!("{table} -A {chain} {r}"));
                    }
                }
            }
        }
        v
    }

    fn wanted_rules(net: &Network) -> Vec<String> {
        let mut v: Vec<String> = net
            .rules()
            .iter()
            .map(|r| format!("{} {}", r.table, r.save_line()))
            .collect();
        v.sort();
        v
    }

    fn sorted(mut v: Vec<String>) -> Vec<String> {
        v.sort();
        v
    }

    #[test]
    fn requests_persist_and_a_restart_gives_the_same_state_and_rules() {
        let t = Tmp::new("restart");
        let host = FakeHost::new();
        let s = setup(&t.0, Config::default());
        let proxies = FakeProxies::default();
        let mut svc = start(&host, &s, &proxies).expect("starts");
        let c1 = alloc(&mut svc, "c1");
        assert_eq!(c1.ip.to_string(), "172.17.0.1");
        let c2 = alloc(&mut svc, "c2");
        let m1 = publish(&mut svc, "c1", 0).expect("dynamic");
        let m2 = publish(&mut svc, "c2", 8080).expect("explicit");
        assert_eq!(m1.host_port, 49153);
        assert_eq!(
            publish(&mut svc, "c1", 8080)
                .expect_err("taken")
                .to_string(),
            "Bind for 0.0.0.0:8080 failed: port is already allocated"
        );
        svc.handle(Command::Link {
            parent: c1.ip,
            child: c2.ip,
            ports: vec![(80, Proto::Tcp)],
            enable: true,
        })
        .expect("link");
        assert_eq!(proxies.running(), 2);
        assert_eq!(sorted(container_rules(&host)), wanted_rules(svc.network()));
        let state = svc.network().clone();
        let before = host.snapshot();
        svc.shutdown();
        assert_eq!(proxies.running(), 0);
        drop(svc);

        // Restart on the same host: same state, no rule added twice, proxies back.
        let mut svc = start(&host, &s, &proxies).expect("restarts");
        assert_eq!(svc.network(), &state);
        assert_eq!(host.snapshot(), before, "a restart must change nothing");
        assert_eq!(proxies.running(), 2);
        // The next allocations do not collide with the restored ones.
        let c3 = alloc(&mut svc, "c3");
        assert!(c3.ip != c1.ip && c3.ip != c2.ip);
        assert_eq!(
            publish(&mut svc, "c3", 0).expect("dynamic").host_port,
            49154
        );
        // Asking again for an existing interface answers it, unchanged and uncreated.
        match svc.handle(Command::AllocateInterface {
            id: "c1".into(),
            ip: None,
            mac: None,
        }) {
            Ok(Reply::Interface { iface, created }) => {
                assert_eq!(iface, c1);
                assert!(!created);
            }
            other => panic!("{other:?}"),
        }
        // Releasing the container removes its rules (and its link's) and stops its proxy.
        match svc.handle(Command::ReleaseInterface { id: "c1".into() }) {
            Ok(Reply::Released(r)) => assert_eq!(r.ports, vec![m1]),
            other => panic!("{other:?}"),
        }
        assert_eq!(sorted(container_rules(&host)), wanted_rules(svc.network()));
        assert!(svc.network().links().is_empty());
        assert_eq!(proxies.running(), 2); // m2 and c3's
        let _ = m2;
    }

    #[test]
    fn a_failing_firewall_batch_reverts_the_request_everywhere() {
        let t = Tmp::new("fwfail");
        let host = FakeHost::new();
        let s = setup(&t.0, Config::default());
        let proxies = FakeProxies::default();
        let mut svc = start(&host, &s, &proxies).expect("starts");
        alloc(&mut svc, "c1");
        let rules_before = host.snapshot();
        let state_before = svc.network().clone();
        // allocate_port applies nat, then filter: fail the filter batch.
        host.fail_nth(HostOp::FwApply, 2);
        let err = publish(&mut svc, "c1", 8080).expect_err("fails");
        assert!(matches!(err, ServiceError::Host(_)), "{err:?}");
        assert!(err.to_string().contains("reverted"), "{err}");
        assert_eq!(host.snapshot(), rules_before, "the nat batch was undone");
        // Reverted: no mapping (the allocator keeps an empty table for the IP, as after any
        // release; replay does the same calls, so a restart gives this very state).
        assert_eq!(svc.network().endpoints(), state_before.endpoints());
        assert_eq!(proxies.running(), 0);
        // The port is free again, and the journal agrees after a restart.
        publish(&mut svc, "c1", 8080).expect("free again");
        let state = svc.network().clone();
        drop(svc);
        let svc = start(&host, &s, &proxies).expect("restarts");
        assert_eq!(svc.network(), &state);
    }

    #[test]
    fn a_proxy_that_cannot_bind_reverts_the_mapping_as_a_conflict() {
        let t = Tmp::new("bind");
        let host = FakeHost::new();
        let s = setup(&t.0, Config::default());
        let proxies = FakeProxies::default();
        let mut svc = start(&host, &s, &proxies).expect("starts");
        alloc(&mut svc, "c1");
        let before = host.snapshot();
        let state_before = svc.network().clone();
        proxies.0.borrow_mut().fail_next = Some(std::io::ErrorKind::AddrInUse);
        let err = publish(&mut svc, "c1", 8080).expect_err("in use");
        assert_eq!(
            err,
            ServiceError::Conflict(
                "Error starting userland proxy: listen tcp 0.0.0.0:8080: address already in use"
                    .into()
            )
        );
        assert_eq!(host.snapshot(), before, "rules undone");
        assert_eq!(svc.network().endpoints(), state_before.endpoints());
        assert_eq!(proxies.running(), 0);
        let live = svc.network().clone();
        drop(svc);
        let svc = start(&host, &s, &proxies).expect("restarts");
        assert_eq!(svc.network(), &live, "the compensation was journalled");
        assert!(svc.network().endpoints()["c1"].ports.is_empty());
    }

    #[test]
    fn start_removes_stale_rules_and_adds_missing_ones() {
        let t = Tmp::new("reconcile");
        let host = FakeHost::new();
        let s = setup(&t.0, Config::default());
        let proxies = FakeProxies::default();
        let mut svc = start(&host, &s, &proxies).expect("starts");
        alloc(&mut svc, "c1");
        alloc(&mut svc, "c2");
        let m = publish(&mut svc, "c1", 8080).expect("publish");
        publish(&mut svc, "c2", 9090).expect("publish");
        let state = svc.network().clone();
        drop(svc);
        // As after crashes: c1's rules vanished, a released container's rules linger, and
        // the user has a rule of their own in POSTROUTING.
        let stale = PortMapping {
            host_ip: Ipv4Addr::UNSPECIFIED,
            host_port: 7000,
            container_ip: "172.17.0.77".parse().expect("valid"),
            container_port: 70,
            proto: Proto::Udp,
        };
        let (_, mut fw, _) = host.ops();
        use netcore::ops::FirewallOps;
        for (table, lines) in [
            (
                Table::Nat,
                firewall::port_rules("docker0", &m, false)
                    .iter()
                    .chain(&firewall::port_rules("docker0", &stale, false))
                    .filter(|r| r.table == Table::Nat)
                    .map(|r| {
                        if r.container_ip_is(&stale) {
                            r.save_line()
                        } else {
                            format!("-D {} {}", r.chain, r.spec())
                        }
                    })
                    .chain(["-A POSTROUTING -o eth9 -j MASQUERADE".to_owned()])
                    .collect::<Vec<_>>(),
            ),
            (
                Table::Filter,
                firewall::port_rules("docker0", &stale, false)
                    .iter()
                    .filter(|r| r.table == Table::Filter)
                    .map(|r| r.save_line())
                    .collect(),
            ),
        ] {
            fw.apply(&Batch { table, lines }).expect("prepares");
        }
        assert_ne!(sorted(container_rules(&host)), wanted_rules(&state));
        let svc = start(&host, &s, &proxies).expect("restarts");
        assert_eq!(sorted(container_rules(&host)), wanted_rules(svc.network()));
        assert!(
            host.rules(Table::Nat)
                .contains("-A POSTROUTING -o eth9 -j MASQUERADE")
        );
    }

    trait ContainerIp {
        fn container_ip_is(&self, m: &PortMapping) -> bool;
    }

    impl ContainerIp for netcore::firewall::Rule {
        fn container_ip_is(&self, m: &PortMapping) -> bool {
            self.spec().contains(&m.container_ip.to_string())
        }
    }

    #[test]
    fn a_state_for_another_bridge_address_is_refused_and_kept_aside() {
        let t = Tmp::new("mismatch");
        let s = setup(&t.0, Config::default());
        let proxies = FakeProxies::default();
        let host = FakeHost::new();
        let mut svc = start(&host, &s, &proxies).expect("starts");
        alloc(&mut svc, "c1");
        drop(svc);
        // Another host (namespace) whose docker0 gets another address: same data root.
        let other = FakeHost::new().with_bridge("docker0", "10.1.0.1/16".parse().expect("valid"));
        let err = start(&other, &s, &proxies).expect_err("refused");
        let msg = format!("{err:#}");
        assert!(msg.contains("is for bridge address"), "{msg}");
        assert!(msg.contains("10.1.0.1/16"), "{msg}");
        assert!(msg.contains("kept for inspection, not deleted"), "{msg}");
        assert!(!t.0.join(store::SNAPSHOT).exists());
        let kept = std::fs::read_dir(&t.0)
            .expect("dir")
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.file_name().to_string_lossy().contains(".rejected-"))
            })
            .count();
        assert_eq!(kept, 2);
    }

    #[test]
    fn changed_options_re_apply_the_allocations_with_the_new_rules() {
        let t = Tmp::new("migrate");
        let host = FakeHost::new();
        let proxies = FakeProxies::default();
        let s = setup(&t.0, Config::default());
        let mut svc = start(&host, &s, &proxies).expect("starts");
        let c1 = alloc(&mut svc, "c1");
        let c2 = alloc(&mut svc, "c2");
        svc.handle(Command::Link {
            parent: c1.ip,
            child: c2.ip,
            ports: vec![(5432, Proto::Tcp)],
            enable: true,
        })
        .expect("link");
        publish(&mut svc, "c1", 8080).expect("publish");
        let endpoints = svc.network().endpoints().clone();
        drop(svc);
        // Restart with --icc=false: the link now needs its rules.
        let s = setup(
            &t.0,
            Config {
                icc: false,
                ..Config::default()
            },
        );
        let svc = start(&host, &s, &proxies).expect("migrates");
        assert_eq!(svc.network().endpoints(), &endpoints);
        assert_eq!(sorted(container_rules(&host)), wanted_rules(svc.network()));
        assert!(
            container_rules(&host)
                .iter()
                .any(|r| r.contains("--dport 5432")),
            "link rules applied"
        );
    }
}
