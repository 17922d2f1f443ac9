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
//!
//! `attach` (issue 5) follows the same order: decide (allocate the interface if the
//! container has none, pick the host veth's name), persist (one record: the allocation and
//! the attachment), apply ([`netcore::attach::apply`]: the veth with its peer born in the
//! container's namespace, then both ends configured). A failure half-way deletes the veth
//! (apply does), reverts the allocation if attach made it, and journals the revert, so it
//! leaves neither a veth nor an allocation behind. `detach` retires the host veth first (off
//! the bridge and down, in [`REAP_GROUP`]: the container is unplugged from that moment; the
//! one step that is not taken back), tells the reaper, then persists and releases, and
//! answers. The reaper ([`super::reaper`]) deletes the veth pair in the background: deleting
//! a link makes the kernel wait for an RCU grace period (15-28 ms), which would otherwise be
//! most of detach's time and hold up every request queued behind it. `detach` with `wait`
//! is answered once the reaper has deleted it, without holding up the worker ([`run`]).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, anyhow};
use ipnet::Ipv4Net;
use netcore::attach::{self, AttachRequest, AttachSide};
use netcore::config::Config;
use netcore::config::FirewallBackend;
use netcore::firewall::{self, Batch, Listing, PortMapping, Table};
use netcore::handlers::{Endpoint, HandlerError, Interface, LinkSpec, Network};
use netcore::ifname::IfName;
use netcore::mac::MacAddr;
use netcore::nftables::{self, Element, NftOp};
use netcore::ops::{OpsErrorKind, REAP_GROUP};
use netcore::ports::Proto;
use tokio::sync::{mpsc, oneshot};

use super::op::{Attachment, Attachments, Op};
use super::proxy::Proxies;
use super::reaper::Reaper;
use super::reconcile;
use super::store::{self, Store};
use crate::api;
use crate::backend::{self, Backends, NetnsError};

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
    Attach {
        id: String,
        /// An absolute path (a pid was resolved to `/proc/<pid>/ns/net`).
        netns: PathBuf,
        ifname: IfName,
    },
    Detach {
        id: String,
        /// Answer only once the veth pair is deleted (the reaper has run).
        wait: bool,
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
    /// `created` is false when the container was plugged in already.
    Attached {
        attached: api::Attached,
        created: bool,
    },
    Detached(api::Detached),
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
    /// Something the request names does not exist on the host, e.g. the network namespace
    /// to attach (404).
    #[error("{0}")]
    NotFound(String),
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
    /// The containers plugged in by `attach`; each has an endpoint in `net`.
    attachments: Attachments,
    store: Store,
    b: Backends,
    iptables: bool,
    bridge_addr: Ipv4Net,
    /// The containers' MTU: `--mtu`, else the default route's interface's at start.
    mtu: u32,
    /// `--userland-proxy=false`: hairpin mode on the containers' bridge ports.
    hairpin: bool,
    proxies: Box<dyn Proxies>,
    /// Deletes the veths that detach retired, on its own thread.
    reaper: Reaper,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("net", &self.net)
            .field("attachments", &self.attachments)
            .field("store", &self.store)
            .field("bridge_addr", &self.bridge_addr)
            .finish_non_exhaustive()
    }
}

impl Service {
    /// Brings the host and the state up: init (as `dockerd-net init`), load the state,
    /// delete the veths a previous run retired but did not reap (it stopped, or crashed, in
    /// between), reconcile the kernel's per-container rules with the state, restart the
    /// proxies. `reaper` deletes the veths this run's detaches retire.
    pub fn start(
        setup: &Setup,
        mut b: Backends,
        proxies: Box<dyn Proxies>,
        reaper: Reaper,
    ) -> Result<Self> {
        let resolv = super::host::read_resolv_conf(&setup.resolv_conf);
        let init = super::host::init_host(&mut b, &setup.data_root, &resolv, &setup.config)?;
        let (bridge, addr) = (init.plan.bridge.clone(), init.plan.addr);
        let fresh = Network::new(&setup.config, &bridge, addr)
            .with_context(|| format!("bridge {bridge} ({addr}) cannot hold containers"))?;

        let opened = store::open(&setup.data_root, fresh.clone(), setup.store)?;
        if let Some(torn) = &opened.torn {
            tracing::warn!("kept a torn journal record aside in {}", torn.display());
        }
        let mut store = opened.store;
        let attachments = opened.attachments;
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
        store
            .compact(&net, &attachments)
            .context("writing the state snapshot")?;
        tracing::info!(
            containers = net.endpoints().len(),
            attached = attachments.len(),
            replayed = opened.replayed,
            "state loaded from {}",
            setup.data_root.display()
        );

        // Docker 1.x read the default route's MTU once, at daemon start
        // (`GetDefaultNetworkMtu`); per attach it would mean dumping every link of a host
        // that has one veth per container.
        let mut b = b;
        let mtu = match setup.config.mtu {
            Some(mtu) => mtu,
            None => {
                let links = b.link.links().context("reading the host's links")?;
                let routes = b.link.routes_v4().context("reading the host's routes")?;
                attach::container_mtu(None, &links, &routes)
            }
        };
        let mut svc = Service {
            net,
            attachments,
            store,
            b,
            iptables: setup.config.iptables,
            bridge_addr: addr,
            mtu,
            hairpin: !setup.config.userland_proxy,
            proxies,
            reaper,
        };
        svc.reap_leftovers();
        svc.reconcile()
            .context("re-applying the rules of the saved state")?;
        svc.restart_proxies();
        svc.check_attachments();
        Ok(svc)
    }

    /// The state (for tests and the shutdown log).
    pub fn network(&self) -> &Network {
        &self.net
    }

    /// The attachments (for tests).
    pub fn attachments(&self) -> &Attachments {
        &self.attachments
    }

    /// Serves one request.
    pub fn handle(&mut self, cmd: Command) -> Result<Reply, ServiceError> {
        let mutating = !matches!(cmd, Command::State | Command::Health);
        if mutating && self.store.is_broken() {
            // An append failed and could not be cut back: rewrite the journal from the
            // (consistent) state before accepting anything.
            self.store
                .compact(&self.net, &self.attachments)
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
            Command::Attach { id, netns, ifname } => self.attach(id, netns, ifname),
            Command::Detach { id, wait } => self.detach(id, wait),
            Command::State => Ok(Reply::State(self.state())),
            Command::Health => Ok(Reply::Health(self.health())),
        }?;
        if mutating && self.store.wants_compaction() {
            let t = Instant::now();
            match self.store.compact(&self.net, &self.attachments) {
                Ok(()) => tracing::debug!(ms = t.elapsed().as_millis() as u64, "compacted"),
                // The record is durable in the journal already: only the compaction is lost.
                Err(e) => tracing::error!("compacting the state failed: {e}"),
            }
        }
        Ok(reply)
    }

    /// Lets the reaper delete what detach retired, and stops every proxy (the state and the
    /// rules stay, as Docker leaves them).
    pub fn shutdown(&mut self) {
        if let Err(e) = self.reaper.flush() {
            tracing::error!("{e}; the next start deletes them");
        }
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

    /// Releasing an attached container's interface detaches it too: its veth would
    /// otherwise carry an IP that the next container may be given.
    fn release_interface(&mut self, id: String) -> Result<Reply, ServiceError> {
        let attached = self.attachments.get(&id).cloned();
        if let Some(a) = &attached {
            self.retire_veth(&id, a)?;
        }
        self.release(&id, attached.as_ref()).map(Reply::Released)
    }

    /// Releases `id`'s interface (its ports, links and IP). `detaching` is its attachment,
    /// whose veth is retired already: the same record then forgets both.
    fn release(
        &mut self,
        id: &str,
        detaching: Option<&Attachment>,
    ) -> Result<api::Released, ServiceError> {
        let links: Vec<LinkSpec> = match self.net.endpoints().get(id) {
            Some(ep) => self
                .net
                .links()
                .iter()
                .filter(|l| l.parent == ep.ip || l.child == ep.ip)
                .copied()
                .collect(),
            None => Vec::new(),
        };
        let effect = self.net.release_interface(id)?;
        let ep = effect.value;
        let mut ops = Vec::new();
        if detaching.is_some() {
            ops.push(Op::Detach { id: id.to_owned() });
        }
        ops.push(Op::ReleaseInterface { id: id.to_owned() });
        if let Err(e) = self.persist(&ops) {
            self.restore_endpoint(id, &ep, &links, None);
            return Err(e);
        }
        if detaching.is_some() {
            self.attachments.remove(id);
        }
        if let Err(e) = self.apply_firewall(&effect.firewall, &effect.nft) {
            let ops = self.restore_endpoint(id, &ep, &links, detaching);
            self.compensate(&ops);
            return Err(e);
        }
        for m in &ep.ports {
            self.proxies.stop(m);
        }
        Ok(api::Released {
            id: id.to_owned(),
            ip: ep.ip,
            ports: ep.ports,
        })
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
        let applied = match self.apply_firewall(&effect.firewall, &effect.nft) {
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
        if let Err(e) = self.apply_firewall(&effect.firewall, &effect.nft) {
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
        if let Err(e) = self.apply_firewall(&effect.firewall, &effect.nft) {
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

    // -----------------------------------------------------------------------------------------
    // Attach and detach (issue 5)

    fn attach(
        &mut self,
        id: String,
        netns: PathBuf,
        ifname: IfName,
    ) -> Result<Reply, ServiceError> {
        if id.is_empty() {
            return Err(HandlerError::EmptyId.into());
        }
        let started = Instant::now();
        if let Some(a) = self.attachments.get(&id).cloned() {
            return self.reattach(&id, &a, &netns, &ifname);
        }
        // The namespace first: a wrong or vanished one changes nothing.
        let mut ctr = self.open_netns(&netns)?;
        let mtu = self.mtu;
        let host_veth = self.free_veth_name(&id)?;

        let existed = self.net.endpoints().contains_key(&id);
        let iface = self.net.allocate_interface(&id, None, None)?;
        let a = Attachment {
            host_veth,
            netns,
            ifname: ifname.to_string(),
            mtu,
            allocated: !existed,
        };
        let mut ops = Vec::new();
        if !existed {
            ops.push(Op::AllocateInterface {
                id: id.clone(),
                ip: iface.ip,
                mac: iface.mac,
            });
        }
        ops.push(Op::attach(&id, &a));
        if let Err(e) = self.persist(&ops) {
            if !existed {
                self.revert(|net| net.release_interface(&id).map(drop));
            }
            return Err(e);
        }
        self.attachments.insert(id.clone(), a.clone());

        if let Err(failure) = self.plug(&id, &a, &iface, &mut *ctr) {
            if failure.veth_left {
                // The veth could not be removed: keep the record that names it, so that
                // `detach` (or `teardown`) removes it later.
                return Err(failure.error);
            }
            self.attachments.remove(&id);
            let mut undo = vec![Op::Detach { id: id.clone() }];
            if !existed {
                self.revert(|net| net.release_interface(&id).map(drop));
                undo.push(Op::ReleaseInterface { id: id.clone() });
            }
            self.compensate(&undo);
            return Err(failure.error);
        }
        tracing::info!(
            %id,
            veth = %a.host_veth,
            netns = %a.netns.display(),
            ifname = %a.ifname,
            ip = %iface.ip,
            mtu = a.mtu,
            us = started.elapsed().as_micros() as u64,
            "attached"
        );
        Ok(Reply::Attached {
            attached: self.attached(&id, &a, iface),
            created: true,
        })
    }

    /// `attach` of an attached container: the same answer if it is still plugged in as
    /// recorded; plugged in again if its veth vanished (the kernel deletes the pair with
    /// the container's namespace, and a crash mid-attach can leave it half-configured).
    fn reattach(
        &mut self,
        id: &str,
        a: &Attachment,
        netns: &Path,
        ifname: &IfName,
    ) -> Result<Reply, ServiceError> {
        if a.netns != netns || a.ifname != ifname.as_str() {
            return Err(ServiceError::Conflict(format!(
                "container {id} is already attached to {} as {}; detach it first",
                a.netns.display(),
                a.ifname
            )));
        }
        let iface = self
            .net
            .endpoints()
            .get(id)
            .map(|ep| self.interface_of(ep))
            .ok_or_else(|| HandlerError::UnknownContainer(id.to_owned()))?;
        let mut ctr = self.open_netns(&a.netns)?;
        let host = self
            .b
            .link
            .link(&a.host_veth)
            .map_err(|e| ServiceError::host("reading the host's links", e))?;
        if let Some(host) = host {
            if host.up && container_side_ok(&mut *ctr, a, &iface) {
                return Ok(Reply::Attached {
                    attached: self.attached(id, a, iface),
                    created: false,
                });
            }
            tracing::warn!(%id, veth = %a.host_veth, "attachment half-configured: plugging it in again");
            self.remove_veth(id, a)?;
        } else {
            tracing::info!(%id, veth = %a.host_veth, "the host veth is gone: plugging the container in again");
        }
        // The record stands whatever happens: on failure the veth is gone, as it was.
        self.plug(id, a, &iface, &mut *ctr).map_err(|f| f.error)?;
        Ok(Reply::Attached {
            attached: self.attached(id, a, iface),
            created: true,
        })
    }

    /// Unplugs `id` (its veth retired: off the bridge and down), releases what attach
    /// allocated, and answers; the reaper deletes the veth pair. With `wait`, answers once
    /// the reaper has (when called directly: [`run`] defers that answer instead, so that
    /// the worker is not held up).
    fn detach(&mut self, id: String, wait: bool) -> Result<Reply, ServiceError> {
        if id.is_empty() {
            return Err(HandlerError::EmptyId.into());
        }
        let Some(a) = self.attachments.get(&id).cloned() else {
            // Idempotent: a retried detach (or one after a restart that lost nothing) is
            // not an error, and says that nothing changed. An earlier detach's veth may
            // still be waiting for the reaper: `wait` waits for it all the same.
            if wait {
                self.wait_for_reaper(&id)?;
            }
            return Ok(Reply::Detached(api::Detached {
                id,
                detached: false,
                host_veth: None,
                released: None,
            }));
        };
        let started = Instant::now();
        self.retire_veth(&id, &a)?;
        let released = if a.allocated {
            Some(self.release(&id, Some(&a))?)
        } else {
            // The interface was allocated before attach: it stays, ports and all.
            self.persist(&[Op::Detach { id: id.clone() }])?;
            self.attachments.remove(&id);
            None
        };
        tracing::info!(
            %id,
            veth = %a.host_veth,
            released = released.is_some(),
            us = started.elapsed().as_micros() as u64,
            "detached"
        );
        if wait {
            self.wait_for_reaper(&id)?;
        }
        Ok(Reply::Detached(api::Detached {
            id,
            detached: true,
            host_veth: Some(a.host_veth),
            released,
        }))
    }

    /// Blocks until the reaper has deleted everything retired so far (`detach` with `wait`,
    /// called directly).
    fn wait_for_reaper(&self, id: &str) -> Result<(), ServiceError> {
        self.reaper.flush().map_err(|e| reap_failed(id, &e))
    }

    /// On start: deletes the veths a previous run retired and did not reap (stopped or
    /// killed in between). A failure is logged: those links are unplugged already, and the
    /// reaper tries again with every detach.
    fn reap_leftovers(&mut self) {
        let t = Instant::now();
        match self.b.link.delete_group(REAP_GROUP) {
            Ok(()) => tracing::debug!(
                us = t.elapsed().as_micros() as u64,
                "deleted the veths a previous run left retired, if any"
            ),
            Err(e) => tracing::warn!(
                "cannot delete the veths a previous run left retired (group {REAP_GROUP}): {e}"
            ),
        }
    }

    /// Opens the link backend inside `netns`: 404 when it does not exist, 400 when it is
    /// not a network namespace.
    fn open_netns(&self, netns: &Path) -> Result<Box<dyn AttachSide>, ServiceError> {
        (self.b.open_netns)(netns).map_err(|e| match e {
            NetnsError::NotFound(_) => ServiceError::NotFound(e.to_string()),
            NetnsError::NotNetns { .. } => ServiceError::BadInput(e.to_string()),
            NetnsError::Ops(e) => ServiceError::host("opening the container's namespace", e),
        })
    }

    /// The host veth's name: derived from the id, salted further while the name is taken
    /// by another link or recorded for another container (whose veth may have vanished
    /// for now).
    fn free_veth_name(&mut self, id: &str) -> Result<String, ServiceError> {
        for salt in 0..=u32::MAX {
            let name = attach::host_veth_name(id, salt);
            if self.attachments.values().any(|a| a.host_veth == name) {
                continue;
            }
            // One lookup of that name, not a dump of every link.
            match self.b.link.link(&name) {
                Ok(None) => return Ok(name),
                Ok(Some(_)) => continue,
                Err(e) => return Err(ServiceError::host("reading the host's links", e)),
            }
        }
        Err(ServiceError::Host("no free host veth name".to_owned()))
    }

    /// Creates and configures the veth pair of `a`. On failure the veth is gone again
    /// (unless deleting it failed too, which the failure says).
    fn plug(
        &mut self,
        id: &str,
        a: &Attachment,
        iface: &Interface,
        ctr: &mut dyn AttachSide,
    ) -> Result<(), PlugFailure> {
        let req = AttachRequest::for_interface(
            iface,
            a.host_veth.clone(),
            a.netns.clone(),
            a.ifname.clone(),
            a.mtu,
            self.hairpin,
        );
        let steps = attach::plan(&req);
        let mut res = attach::apply(&steps, &mut *self.b.link, ctr);
        // The interface name is taken in the container: most likely by the container end of
        // the veth its last detach retired, which the reaper has not deleted yet (the host
        // end got another name: `free_veth_name` skips links that still exist). Wait for the
        // reaper, then try once more.
        if let Err(e) = &res
            && e.source.kind == OpsErrorKind::AlreadyExists
            && e.cleanup.is_none()
            && steps.first().is_some_and(|s| {
                matches!(s, attach::AttachStep::CreateVeth(_)) && e.step == s.to_string()
            })
        {
            tracing::debug!(%id, ifname = %a.ifname, "interface name taken in the container: waiting for the reaper, then trying again");
            match self.reaper.flush() {
                Ok(()) => res = attach::apply(&steps, &mut *self.b.link, ctr),
                Err(r) => tracing::warn!(%id, "{r}"),
            }
        }
        let Err(e) = res else {
            return Ok(());
        };
        let veth_left = e.cleanup.is_some();
        let what = format!(
            "cannot attach {id} to {} as {}",
            a.netns.display(),
            a.ifname
        );
        let error = if veth_left {
            ServiceError::Host(format!(
                "{what}: {e}; {} is recorded: detach {id} removes it",
                a.host_veth
            ))
        } else {
            match e.source.kind {
                // The name is taken in the namespace, or it has a default route already.
                OpsErrorKind::AlreadyExists => ServiceError::Conflict(format!("{what}: {e}")),
                OpsErrorKind::NotFound
                    if matches!((self.b.open_netns)(&a.netns), Err(NetnsError::NotFound(_))) =>
                {
                    ServiceError::NotFound(format!(
                        "{what}: network namespace {} vanished ({e})",
                        a.netns.display()
                    ))
                }
                _ => ServiceError::Host(format!("{what}: {e} (the veth was removed)")),
            }
        };
        Err(PlugFailure { error, veth_left })
    }

    /// Retires the host veth of `a` (off the bridge, down, in [`REAP_GROUP`]: the container
    /// has no connectivity from here on) and hands it to the reaper, which deletes it and its
    /// peer. Already gone is fine: the container's namespace may have died with it.
    fn retire_veth(&mut self, id: &str, a: &Attachment) -> Result<(), ServiceError> {
        match self.b.link.retire_link(&a.host_veth, REAP_GROUP) {
            Ok(()) => {
                self.reaper.retired(&a.host_veth);
                Ok(())
            }
            Err(e) if e.kind == OpsErrorKind::NotFound => {
                tracing::debug!(%id, veth = %a.host_veth, "host veth already gone");
                Ok(())
            }
            Err(e) => Err(ServiceError::host(
                &format!("unplugging {id}'s veth {}", a.host_veth),
                e,
            )),
        }
    }

    /// Deletes the host veth of `a` (which takes its peer along) at once, for a re-attach
    /// that makes it anew under the same name. Already gone is fine: the container's
    /// namespace may have died with it.
    fn remove_veth(&mut self, id: &str, a: &Attachment) -> Result<(), ServiceError> {
        match self.b.link.delete_link(&a.host_veth) {
            Ok(()) => Ok(()),
            Err(e) if e.kind == OpsErrorKind::NotFound => {
                tracing::debug!(%id, veth = %a.host_veth, "host veth already gone");
                Ok(())
            }
            Err(e) => Err(ServiceError::host(
                &format!("removing {id}'s veth {}", a.host_veth),
                e,
            )),
        }
    }

    /// The interface of an endpoint, as `allocate_interface` answers it.
    fn interface_of(&self, ep: &Endpoint) -> Interface {
        Interface {
            ip: ep.ip,
            prefix_len: self.bridge_addr.prefix_len(),
            mask: self.bridge_addr.netmask(),
            gateway: self.bridge_addr.addr(),
            bridge: self.net.bridge().to_owned(),
            mac: ep.mac,
        }
    }

    fn attached(&self, id: &str, a: &Attachment, interface: Interface) -> api::Attached {
        api::Attached {
            id: id.to_owned(),
            interface,
            host_veth: a.host_veth.clone(),
            netns: a.netns.display().to_string(),
            ifname: a.ifname.clone(),
            mtu: a.mtu,
        }
    }

    /// On start: a recorded attachment whose host veth is gone is logged and kept (its
    /// container may have exited; `detach` releases what it holds). Nothing is re-created:
    /// the namespace may be gone too.
    fn check_attachments(&mut self) {
        if self.attachments.is_empty() {
            return;
        }
        let links = match self.b.link.links() {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!("cannot check the attachments' veths: {e}");
                return;
            }
        };
        for (id, a) in &self.attachments {
            if !links.iter().any(|l| l.name == a.host_veth) {
                tracing::warn!(
                    %id,
                    veth = %a.host_veth,
                    netns = %a.netns.display(),
                    "attached container's veth is gone (its namespace may have exited); \
                     kept until detach, or re-created by attach"
                );
            }
        }
    }

    fn state(&self) -> api::State {
        api::State {
            bridge: self.net.bridge().to_owned(),
            address: self.bridge_addr.to_string(),
            containers: self.net.endpoints().clone(),
            links: self.net.links().iter().copied().collect(),
            attachments: self
                .attachments
                .iter()
                .filter_map(|(id, a)| {
                    let ep = self.net.endpoints().get(id)?;
                    Some((id.clone(), self.attached(id, a, self.interface_of(ep))))
                })
                .collect(),
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

    /// Gives a released container back everything it had (its attachment too, when the
    /// release detached it); returns the calls made, for the compensating record.
    fn restore_endpoint(
        &mut self,
        id: &str,
        ep: &Endpoint,
        links: &[LinkSpec],
        attachment: Option<&Attachment>,
    ) -> Vec<Op> {
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
        if let Some(a) = attachment {
            ops.push(Op::attach(id, a));
        }
        for op in &ops {
            if let Err(e) = op.replay(&mut self.net, &mut self.attachments) {
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
    /// Applies a handler's firewall changes: iptables batches, or (`--firewall-backend
    /// nftables`) element changes. On failure nothing of it is left applied.
    fn apply_firewall(
        &mut self,
        batches: &[Batch],
        nft: &[NftOp],
    ) -> Result<AppliedFirewall, ServiceError> {
        let mut applied = AppliedFirewall::default();
        for op in nft {
            let result = match self.b.fw.nft_apply(std::slice::from_ref(op)) {
                Ok(()) => Ok(Some(op.clone())),
                Err(e) => match op {
                    NftOp::DelElements(els) => self.del_present_elements(els).map_err(|e2| {
                        anyhow!(
                            "{e}; retrying with only the elements still present failed too: {e2:#}"
                        )
                    }),
                    _ => Err(anyhow!(e)),
                },
            };
            match result {
                Ok(Some(done)) => applied.nft.push(done),
                Ok(None) => {}
                Err(e) => {
                    self.undo_firewall(&applied);
                    return Err(ServiceError::host(
                        "applying the nftables changes (the request was reverted)",
                        format!("{e:#}"),
                    ));
                }
            }
        }
        match self.apply_batches(batches) {
            Ok(done) => {
                applied.batches = done;
                Ok(applied)
            }
            Err(e) => {
                self.undo_firewall(&applied);
                Err(e)
            }
        }
    }

    /// A deletion failed (someone removed an element behind our back): delete those still
    /// there, as the iptables path does with rules.
    fn del_present_elements(&mut self, els: &[Element]) -> Result<Option<NftOp>> {
        let present = self.b.fw.nft_elements()?.unwrap_or_default();
        let left: Vec<Element> = els
            .iter()
            .filter(|e| present.contains(e))
            .cloned()
            .collect();
        for gone in els.iter().filter(|e| !present.contains(e)) {
            tracing::warn!(set = gone.set, "element already gone: {}", gone.render());
        }
        if left.is_empty() {
            return Ok(None);
        }
        let op = NftOp::DelElements(left);
        self.b.fw.nft_apply(std::slice::from_ref(&op))?;
        Ok(Some(op))
    }

    fn apply_batches(&mut self, batches: &[Batch]) -> Result<Vec<Batch>, ServiceError> {
        // The common case, publishing: both tables in one iptables-restore (one process
        // instead of two). Only for additive batches, whose undo is safe whether or not
        // their table was committed before the failure (tables are committed one by one).
        if batches.len() > 1 && batches.iter().all(Batch::is_additive) {
            return match netcore::ops::apply_additive(&mut *self.b.fw, batches) {
                Ok(()) => Ok(batches.to_vec()),
                Err(e) => Err(ServiceError::host(
                    "applying the firewall rules (the request was reverted)",
                    format!("{e:#}"),
                )),
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
                    self.undo_batches(&done);
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

    fn undo_firewall(&mut self, applied: &AppliedFirewall) {
        self.undo_batches(&applied.batches);
        for op in applied.nft.iter().rev() {
            if let Some(undo) = op.undo_of_elements()
                && let Err(e) = self.b.fw.nft_apply(&[undo])
            {
                tracing::error!(
                    "undoing an nftables change failed: {e}; the next start re-applies the state"
                );
            }
        }
    }

    fn undo_batches(&mut self, applied: &[Batch]) {
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
        if self.net.firewall_backend() == FirewallBackend::Nftables {
            return self.reconcile_elements();
        }
        let wanted = self.net.rules();
        // nat first, as the handlers do: the DNAT before the ACCEPT that lets it through.
        // Both tables in one read (one iptables-save process).
        let tables = [Table::Nat, Table::Filter];
        let texts = self.b.fw.save_tables(&tables)?;
        for (table, text) in tables.into_iter().zip(texts) {
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

    /// The nftables counterpart of [`Self::reconcile`]: the table's elements become exactly
    /// the state's, in one transaction.
    fn reconcile_elements(&mut self) -> Result<()> {
        let wanted = self.net.elements();
        let present = self
            .b
            .fw
            .nft_elements()?
            .ok_or_else(|| anyhow!("table ip {} is missing after init", nftables::TABLE))?;
        let stale: Vec<Element> = present
            .iter()
            .filter(|e| !wanted.contains(e))
            .cloned()
            .collect();
        let missing: Vec<Element> = wanted
            .iter()
            .filter(|e| !present.contains(e))
            .cloned()
            .collect();
        let mut ops = Vec::new();
        if !stale.is_empty() {
            ops.push(NftOp::DelElements(stale.clone()));
        }
        if !missing.is_empty() {
            ops.push(NftOp::AddElements(missing.clone()));
        }
        if !ops.is_empty() {
            self.b.fw.nft_apply(&ops)?;
            tracing::info!(
                added = missing.len(),
                removed = stale.len(),
                "re-applied the saved state's nftables elements"
            );
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

/// Why plugging a container in failed, and whether its veth is still there.
struct PlugFailure {
    error: ServiceError,
    veth_left: bool,
}

/// Whether the container end of `a` is configured as attach leaves it: `lo` up, the
/// interface up with its IP and MAC, the default route via the gateway. Any error reading
/// it counts as no.
fn container_side_ok(ctr: &mut dyn AttachSide, a: &Attachment, iface: &Interface) -> bool {
    let (Ok(links), Ok(routes)) = (ctr.links(), ctr.routes_v4()) else {
        return false;
    };
    let lo_up = links.iter().any(|l| l.name == "lo" && l.up);
    let eth_ok = links.iter().any(|l| {
        l.name == a.ifname
            && l.up
            && l.mac == Some(iface.mac)
            && l.addrs
                .iter()
                .any(|n| n.addr() == iface.ip && n.prefix_len() == iface.prefix_len)
    });
    let route_ok = routes
        .iter()
        .any(|r| r.dst.is_none() && r.gateway == Some(iface.gateway));
    lo_up && eth_ok && route_ok
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

/// The answer to a `detach` with `wait` whose veth the reaper could not delete: the
/// container is unplugged and released all the same.
fn reap_failed(id: &str, e: &super::reaper::ReapError) -> ServiceError {
    ServiceError::Host(format!(
        "{id} is unplugged (its veth is down and off the bridge, its allocations released), \
         but {e}"
    ))
}

/// Serves jobs until every sender is gone, then lets the reaper finish and stops the
/// proxies.
///
/// A `detach` with `wait` is handled as one without, and its answer handed to the reaper,
/// which sends it once the veth is deleted: the worker serves the next requests meanwhile.
pub fn run(mut svc: Service, mut rx: mpsc::Receiver<Job>) {
    while let Some(job) = rx.blocking_recv() {
        let Job { cmd, reply } = job;
        if let Command::Detach { id, wait: true } = cmd {
            match svc.handle(Command::Detach {
                id: id.clone(),
                wait: false,
            }) {
                Ok(answer) => svc.reaper.after_reap(move |reaped| {
                    let _ = reply.send(reaped.map(|()| answer).map_err(|e| reap_failed(&id, &e)));
                }),
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            }
            continue;
        }
        let answer = svc.handle(cmd);
        // The client may have gone; a change it asked for stands (it is persisted).
        let _ = reply.send(answer);
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

/// The interface name inside the container when the request names none (Docker's).
pub const DEFAULT_IFNAME: &str = "eth0";

/// A network namespace as `attach` takes it: an absolute path (`/proc/<pid>/ns/net`,
/// `/run/netns/<name>`), or a process id, which means `/proc/<pid>/ns/net`. Whether it
/// exists and is a network namespace is checked by the worker.
pub fn parse_netns(s: &str) -> Result<PathBuf, ServiceError> {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return match s.parse::<u32>() {
            Ok(pid) if pid > 0 => Ok(PathBuf::from(format!("/proc/{pid}/ns/net"))),
            _ => Err(bad(format!("invalid netns {s:?}: not a process id"))),
        };
    }
    if !s.starts_with('/') || s.contains('\0') {
        return Err(bad(format!(
            "invalid netns {s:?}: expected an absolute path (/proc/<pid>/ns/net, /run/netns/<name>) or a process id"
        )));
    }
    Ok(PathBuf::from(s))
}

impl TryFrom<api::Attach> for Command {
    type Error = ServiceError;
    fn try_from(r: api::Attach) -> Result<Self, ServiceError> {
        let ifname = r.ifname.as_deref().unwrap_or(DEFAULT_IFNAME);
        Ok(Command::Attach {
            netns: parse_netns(&r.netns)?,
            ifname: IfName::new(ifname).map_err(|e| bad(format!("invalid ifname: {e}")))?,
            id: r.id,
        })
    }
}

impl TryFrom<api::Detach> for Command {
    type Error = ServiceError;
    fn try_from(r: api::Detach) -> Result<Self, ServiceError> {
        Ok(Command::Detach {
            id: r.id,
            wait: r.wait,
        })
    }
}

/// What [`Service::apply_firewall`] applied, for its undo.
#[derive(Debug, Default)]
struct AppliedFirewall {
    batches: Vec<Batch>,
    nft: Vec<NftOp>,
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::collections::BTreeSet;
    use std::path::Path;
    use std::rc::Rc;

    use backend_mock::{FakeHost, Op as HostOp};

    use testns::TempDir;

    use super::*;

    /// A temporary directory, removed when dropped.
    fn tmp(tag: &str) -> TempDir {
        TempDir::new(&format!("dockerd-net-service-{tag}"))
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
        let namespaces = host.clone();
        let b = Backends {
            link: Box::new(link),
            fw: Box::new(fw),
            sys: Box::new(sys),
            // The namespaces registered on the fake host (`with_netns`); one path stands for
            // a file that is not a namespace.
            open_netns: Box::new(move |p: &Path| {
                if p == Path::new(NOT_A_NETNS) {
                    return Err(NetnsError::NotNetns {
                        path: p.to_path_buf(),
                        why: "it is not a namespace file".into(),
                    });
                }
                namespaces
                    .netns(p)
                    .map(|ns| Box::new(ns.link_ops()) as Box<dyn AttachSide>)
                    .ok_or_else(|| NetnsError::NotFound(p.to_path_buf()))
            }),
        };
        // The reaper's own handle on the same host, as the daemon opens a second backend.
        let reaper_link = host.link_ops();
        let reaper = Reaper::spawn(move || Ok(Box::new(reaper_link) as Box<dyn AttachSide>))?;
        Service::start(s, b, Box::new(proxies.clone()), reaper)
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
        let t = tmp("restart");
        let host = FakeHost::new();
        let s = setup(t.path(), Config::default());
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
        let t = tmp("fwfail");
        let host = FakeHost::new();
        let s = setup(t.path(), Config::default());
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
        let t = tmp("bind");
        let host = FakeHost::new();
        let s = setup(t.path(), Config::default());
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
        let t = tmp("reconcile");
        let host = FakeHost::new();
        let s = setup(t.path(), Config::default());
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
        let t = tmp("mismatch");
        let s = setup(t.path(), Config::default());
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
        assert!(!t.path().join(store::SNAPSHOT).exists());
        let kept = std::fs::read_dir(t.path())
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
        let t = tmp("migrate");
        let host = FakeHost::new();
        let proxies = FakeProxies::default();
        let s = setup(t.path(), Config::default());
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
            t.path(),
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

    // ----- attach and detach (issue 5) --------------------------------------------------------

    const CTR: &str = "/proc/4242/ns/net";
    const OTHER_CTR: &str = "/proc/4343/ns/net";
    const NOT_A_NETNS: &str = "/etc/hostname";

    /// A host with two container namespaces registered, and a data root.
    struct AttachEnv {
        _t: TempDir,
        host: FakeHost,
        ctr: FakeHost,
        s: Setup,
        proxies: FakeProxies,
    }

    fn attach_env(tag: &str, config: Config) -> AttachEnv {
        attach_env_on(tag, config, FakeHost::new())
    }

    fn attach_env_on(tag: &str, config: Config, host: FakeHost) -> AttachEnv {
        let t = tmp(tag);
        let ctr = FakeHost::new_netns();
        let host = host
            .with_netns(CTR, ctr.clone())
            .with_netns(OTHER_CTR, FakeHost::new_netns());
        let s = setup(t.path(), config);
        AttachEnv {
            _t: t,
            host,
            ctr,
            s,
            proxies: FakeProxies::default(),
        }
    }

    impl AttachEnv {
        fn start(&self) -> Service {
            start(&self.host, &self.s, &self.proxies).expect("starts")
        }
    }

    fn attach_as(
        svc: &mut Service,
        id: &str,
        netns: &str,
        ifname: &str,
    ) -> Result<(api::Attached, bool), ServiceError> {
        match svc.handle(Command::Attach {
            id: id.into(),
            netns: netns.into(),
            ifname: IfName::new(ifname).expect("valid"),
        })? {
            Reply::Attached { attached, created } => Ok((attached, created)),
            other => panic!("{other:?}"),
        }
    }

    fn attach_c(svc: &mut Service, id: &str) -> Result<(api::Attached, bool), ServiceError> {
        attach_as(svc, id, CTR, "eth0")
    }

    /// Detaches `id` and waits for the reaper: the veth pair is deleted when this returns.
    fn detach_c(svc: &mut Service, id: &str) -> api::Detached {
        detach_as(svc, id, true)
    }

    fn detach_as(svc: &mut Service, id: &str, wait: bool) -> api::Detached {
        match svc.handle(Command::Detach {
            id: id.into(),
            wait,
        }) {
            Ok(Reply::Detached(d)) => d,
            other => panic!("{other:?}"),
        }
    }

    fn state_of(svc: &mut Service) -> api::State {
        match svc.handle(Command::State) {
            Ok(Reply::State(s)) => s,
            other => panic!("{other:?}"),
        }
    }

    /// The veth ends in a namespace.
    fn veths(ns: &FakeHost) -> Vec<String> {
        ns.snapshot().peers.into_keys().collect()
    }

    #[test]
    fn attach_allocates_and_plugs_the_container_in() {
        let env = attach_env("attach", Config::default());
        let mut svc = env.start();
        let (a, created) = attach_c(&mut svc, "c1").expect("attaches");
        assert!(created);
        let veth = netcore::attach::host_veth_name("c1", 0);
        assert_eq!(a.host_veth, veth);
        assert_eq!(
            (a.id.as_str(), a.netns.as_str(), a.ifname.as_str(), a.mtu),
            ("c1", CTR, "eth0", 1500)
        );
        // The interface allocate_interface would have given it.
        assert_eq!(
            a.interface.ip,
            "172.17.0.1".parse::<Ipv4Addr>().expect("ip")
        );
        assert_eq!(a.interface.gateway.to_string(), "172.17.42.1");
        assert_eq!(a.interface.mac.to_string(), "02:42:ac:11:00:01");
        assert_eq!(svc.network().endpoints()["c1"].ip, a.interface.ip);

        // The host end: on docker0, up, no hairpin (userland proxy on); its peer is eth0 in
        // the container's namespace.
        let host_end = env.host.link(&veth).expect("host veth");
        assert!(host_end.up);
        assert_eq!(host_end.mtu, 1500);
        assert_eq!(env.host.master(&veth).as_deref(), Some("docker0"));
        assert!(!env.host.hairpin(&veth));
        let peer = env.host.peer(&veth).expect("a veth");
        assert_eq!(peer.name, "eth0");
        assert_eq!(peer.netns.as_deref(), Some(Path::new(CTR)));
        // The container end: named, up, with the MAC and IP; lo up; the default route.
        let eth0 = env.ctr.link("eth0").expect("eth0");
        assert!(eth0.up);
        assert_eq!(eth0.mac, Some(a.interface.mac));
        assert_eq!(eth0.mtu, 1500);
        assert_eq!(
            eth0.addrs,
            vec!["172.17.0.1/16".parse::<Ipv4Net>().expect("net")]
        );
        assert!(env.ctr.link("lo").expect("lo").up);
        // IPv4-only: neither end of the veth autoconfigures IPv6 (the host end has IPv6 off
        // altogether); lo keeps its ::1.
        assert_eq!(
            env.host
                .sysctl(&format!("net/ipv6/conf/{veth}/disable_ipv6"))
                .as_deref(),
            Some("1")
        );
        assert!(env.ctr.ipv6_autoconf_off("eth0"));
        assert!(!env.ctr.ipv6_autoconf_off("lo"));
        assert!(
            env.ctr
                .routes()
                .iter()
                .any(|r| r.dst.is_none() && r.gateway == Some(a.interface.gateway)),
            "{:?}",
            env.ctr.routes()
        );
        // The state shows it.
        let st = state_of(&mut svc);
        assert_eq!(st.attachments.get("c1"), Some(&a));
        assert!(st.containers.contains_key("c1"));
    }

    #[test]
    fn attach_again_is_the_same_answer_and_changes_nothing() {
        let env = attach_env("reattach", Config::default());
        let mut svc = env.start();
        let (a, _) = attach_c(&mut svc, "c1").expect("attaches");
        let (host_before, ctr_before) = (env.host.snapshot(), env.ctr.snapshot());
        env.host.clear_calls();
        env.ctr.clear_calls();
        let (again, created) = attach_c(&mut svc, "c1").expect("again");
        assert!(!created, "answered 200, not 201");
        assert_eq!(again, a);
        assert!(
            env.host.mutations().is_empty(),
            "{:?}",
            env.host.mutations()
        );
        assert!(env.ctr.mutations().is_empty(), "{:?}", env.ctr.mutations());
        assert_eq!(env.host.snapshot(), host_before);
        assert_eq!(env.ctr.snapshot(), ctr_before);

        // Another namespace or another name is a conflict, and changes nothing.
        for (netns, ifname) in [(OTHER_CTR, "eth0"), (CTR, "eth1")] {
            let e = attach_as(&mut svc, "c1", netns, ifname).expect_err("conflict");
            assert!(matches!(e, ServiceError::Conflict(_)), "{e:?}");
            assert_eq!(
                e.to_string(),
                format!("container c1 is already attached to {CTR} as eth0; detach it first")
            );
        }
        assert_eq!(env.host.snapshot(), host_before);
        assert_eq!(svc.attachments().len(), 1);
    }

    #[test]
    fn a_vanished_or_half_configured_veth_is_plugged_in_again() {
        let env = attach_env("vanished", Config::default());
        let mut svc = env.start();
        let (a, _) = attach_c(&mut svc, "c1").expect("attaches");
        let host_before = env.host.snapshot();
        // The pair goes (as when the container's namespace dies): deleting one end in the
        // container deletes both.
        use netcore::ops::LinkOps;
        env.ctr.link_ops().delete_link("eth0").expect("delete");
        assert!(env.host.link(&a.host_veth).is_none());
        let (again, created) = attach_c(&mut svc, "c1").expect("re-plugs");
        assert!(created, "plugged in now: 201");
        assert_eq!(again, a, "same name, IP and MAC");
        assert!(env.ctr.link("eth0").is_some_and(|l| l.up));
        assert_eq!(env.host.master(&a.host_veth).as_deref(), Some("docker0"));
        assert_eq!(env.host.snapshot().masters, host_before.masters);

        // Half-configured (as after a crash between the veth and its route): started over.
        env.ctr.link_ops().set_down("eth0").expect("down");
        let (again, created) = attach_c(&mut svc, "c1").expect("re-plugs");
        assert!(created);
        assert_eq!(again, a);
        assert!(env.ctr.link("eth0").is_some_and(|l| l.up));
        let defaults: Vec<_> = env
            .ctr
            .routes()
            .into_iter()
            .filter(|r| r.dst.is_none())
            .collect();
        assert_eq!(defaults.len(), 1, "{defaults:?}");
        assert_eq!(defaults[0].gateway, Some(a.interface.gateway));
    }

    #[test]
    fn attach_refuses_bad_namespaces_and_taken_names_leaving_nothing() {
        let host = FakeHost::new();
        let env = attach_env_on("refuse", Config::default(), host);
        let busy = FakeHost::new_netns().with_device("eth0", &[]);
        let busy_path = "/proc/4444/ns/net";
        let host = env.host.clone().with_netns(busy_path, busy.clone());
        let mut svc = env.start();
        let before = host.snapshot();
        let busy_before = busy.snapshot();

        let e = attach_as(&mut svc, "c1", "/proc/99/ns/net", "eth0").expect_err("missing");
        assert_eq!(
            e,
            ServiceError::NotFound("network namespace /proc/99/ns/net not found".into())
        );
        let e = attach_as(&mut svc, "c1", NOT_A_NETNS, "eth0").expect_err("not a netns");
        assert!(matches!(e, ServiceError::BadInput(_)), "{e:?}");
        assert_eq!(
            e.to_string(),
            "/etc/hostname is not a network namespace: it is not a namespace file"
        );
        let e = attach_as(&mut svc, "c1", busy_path, "eth0").expect_err("eth0 taken");
        assert!(matches!(e, ServiceError::Conflict(_)), "{e:?}");
        let msg = e.to_string();
        assert!(
            msg.starts_with(&format!("cannot attach c1 to {busy_path} as eth0: ")),
            "{msg}"
        );
        assert!(msg.contains("file exists"), "{msg}");
        assert_eq!(host.snapshot(), before, "no veth left");
        assert_eq!(busy.snapshot().links, busy_before.links);
        assert!(svc.network().endpoints().is_empty(), "no allocation left");
        assert!(svc.attachments().is_empty());
        // The IP the failed attempt had is free again; as another name it works.
        assert_ip_free(&mut svc, "172.17.0.1");
        attach_as(&mut svc, "c1", busy_path, "eth1").expect("eth1 is free");
        // The journal agrees.
        let state = svc.network().clone();
        let attachments = svc.attachments().clone();
        drop(svc);
        let svc = env.start();
        assert_eq!(svc.network(), &state);
        assert_eq!(svc.attachments(), &attachments);
    }

    /// Fails each host-changing call of an attach in turn (on the host, then in the
    /// container): every failure leaves no veth, no allocation, no record.
    fn failures_leave_nothing(config: Config, host_steps: usize) {
        // Count the steps once.
        let env = attach_env("count", config.clone());
        let mut svc = env.start();
        env.host.clear_calls();
        env.ctr.clear_calls();
        attach_c(&mut svc, "c1").expect("attaches");
        let on_host = env.host.mutations().len();
        let in_ctr = env.ctr.mutations().len();
        assert_eq!(on_host, host_steps, "{:?}", env.host.mutations());
        assert_eq!(
            in_ctr,
            5,
            "lo up, IPv6 autoconfiguration off, address, eth0 up, route: {:?}",
            env.ctr.mutations()
        );
        drop(svc);

        for (side, n) in (1..=on_host)
            .map(|n| ("host", n))
            .chain((1..=in_ctr).map(|n| ("container", n)))
        {
            let env = attach_env("fail", config.clone());
            let mut svc = env.start();
            let host_before = env.host.snapshot();
            let target = if side == "host" { &env.host } else { &env.ctr };
            target.fail_nth_mutation(n);
            let e = attach_c(&mut svc, "c1").expect_err("fails");
            assert!(matches!(e, ServiceError::Host(_)), "{side} {n}: {e:?}");
            assert!(e.to_string().contains("the veth was removed"), "{e}");
            assert_eq!(target.pending_faults(), 0);
            assert_eq!(
                env.host.snapshot(),
                host_before,
                "{side} {n}: host unchanged"
            );
            assert!(veths(&env.ctr).is_empty(), "{side} {n}: no container end");
            assert!(env.ctr.link("eth0").is_none());
            assert!(
                svc.network().endpoints().is_empty(),
                "{side} {n}: allocation reverted"
            );
            assert!(svc.attachments().is_empty());
            // After a restart too: the revert was journalled.
            drop(svc);
            let mut svc = env.start();
            assert!(
                svc.network().endpoints().is_empty(),
                "{side} {n}: after restart"
            );
            assert!(svc.attachments().is_empty());
            // Nothing leaked: the IP the failed attach had is free, and a retry works.
            assert_ip_free(&mut svc, "172.17.0.1");
            let (_, created) = attach_c(&mut svc, "c1").expect("retry");
            assert!(created);
        }
    }

    #[test]
    fn a_failure_at_any_step_of_attach_leaves_neither_veth_nor_allocation() {
        // create_veth, set_ipv6_autoconf_off, set_master, set_up.
        failures_leave_nothing(Config::default(), 4);
    }

    #[test]
    fn hairpin_mode_is_set_without_the_userland_proxy_and_undone_on_failure() {
        let config = Config {
            userland_proxy: false,
            ..Config::default()
        };
        let env = attach_env("hairpin", config.clone());
        let mut svc = env.start();
        let (a, _) = attach_c(&mut svc, "c1").expect("attaches");
        assert!(env.host.hairpin(&a.host_veth));
        drop(svc);
        // create_veth, set_ipv6_autoconf_off, set_master, set_hairpin, set_up.
        failures_leave_nothing(config, 5);
    }

    #[test]
    fn an_interface_allocated_before_attach_outlives_detach() {
        let env = attach_env("prealloc", Config::default());
        let mut svc = env.start();
        let iface = alloc(&mut svc, "c1");
        let m = publish(&mut svc, "c1", 8080).expect("publish");
        let (a, created) = attach_c(&mut svc, "c1").expect("attaches");
        assert!(created);
        assert_eq!(a.interface, iface, "the allocated interface is used");
        assert!(!svc.attachments()["c1"].allocated);
        let rules = container_rules(&env.host);
        let d = detach_c(&mut svc, "c1");
        assert_eq!(
            d,
            api::Detached {
                id: "c1".into(),
                detached: true,
                host_veth: Some(a.host_veth.clone()),
                released: None,
            }
        );
        assert!(env.host.link(&a.host_veth).is_none());
        assert!(env.ctr.link("eth0").is_none());
        assert_eq!(svc.network().endpoints()["c1"].ports, vec![m]);
        assert_eq!(
            container_rules(&env.host),
            rules,
            "its port stays published"
        );
        assert_eq!(env.proxies.running(), 1);
    }

    #[test]
    fn detach_removes_the_veth_and_releases_what_attach_allocated() {
        let env = attach_env("detach", Config::default());
        let mut svc = env.start();
        let host_before = env.host.snapshot();
        let (a, _) = attach_c(&mut svc, "c1").expect("attaches");
        let m = publish(&mut svc, "c1", 8080).expect("publish");
        assert_eq!(env.proxies.running(), 1);
        let d = detach_c(&mut svc, "c1");
        assert_eq!(
            d,
            api::Detached {
                id: "c1".into(),
                detached: true,
                host_veth: Some(a.host_veth.clone()),
                released: Some(api::Released {
                    id: "c1".into(),
                    ip: a.interface.ip,
                    ports: vec![m],
                }),
            }
        );
        assert_eq!(env.host.snapshot(), host_before, "veth and rules gone");
        assert!(veths(&env.ctr).is_empty());
        assert!(container_rules(&env.host).is_empty());
        assert_eq!(env.proxies.running(), 0);
        assert!(svc.network().endpoints().is_empty());
        assert!(state_of(&mut svc).attachments.is_empty());
        // Idempotent: again, or for an id never seen, it answers that nothing was attached.
        for id in ["c1", "never-seen"] {
            assert_eq!(
                detach_c(&mut svc, id),
                api::Detached {
                    id: id.into(),
                    detached: false,
                    host_veth: None,
                    released: None,
                }
            );
        }
        // The journal agrees, and the IP is free again.
        drop(svc);
        let mut svc = env.start();
        assert!(svc.network().endpoints().is_empty());
        assert!(svc.attachments().is_empty());
        assert_ip_free(&mut svc, &a.interface.ip.to_string());
    }

    /// Polls the fake host for at most five seconds (the reaper runs on its own thread).
    fn eventually(what: &str, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + std::time::Duration::from_secs(5);
        while !f() {
            assert!(Instant::now() < deadline, "{what}: not within 5 s");
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    }

    #[test]
    fn detach_unplugs_at_once_and_the_reaper_leaves_the_host_as_before_attach() {
        let env = attach_env("reap", Config::default());
        let mut svc = env.start();
        let (host_before, ctr_before) = (env.host.snapshot(), env.ctr.snapshot());
        let (a, _) = attach_c(&mut svc, "c1").expect("attaches");
        publish(&mut svc, "c1", 8080).expect("publish");
        env.host.clear_calls();
        let d = detach_as(&mut svc, "c1", false);
        assert!(d.detached && d.released.is_some(), "{d:?}");
        assert_eq!(d.host_veth.as_deref(), Some(a.host_veth.as_str()));
        // As answered: one call unplugged the host end (no delete_link on the worker's
        // path), and it is down and off the bridge, or already reaped.
        let retire = backend_mock::Call::RetireLink(a.host_veth.clone(), REAP_GROUP);
        assert!(env.host.calls().contains(&retire), "{:?}", env.host.calls());
        assert!(
            !env.host
                .calls()
                .iter()
                .any(|c| matches!(c, backend_mock::Call::DeleteLink(_))),
            "{:?}",
            env.host.calls()
        );
        match env.host.link(&a.host_veth) {
            Some(l) => {
                assert!(!l.up, "down: {l:?}");
                assert_eq!(env.host.master(&a.host_veth), None);
            }
            None => assert!(env.ctr.link("eth0").is_none(), "the pair goes together"),
        }
        assert!(container_rules(&env.host).is_empty(), "released at once");
        assert!(svc.network().endpoints().is_empty());
        // Then the reaper deletes the pair, and nothing is left of the container.
        eventually("the reaper deletes the veth", || {
            env.host.link(&a.host_veth).is_none()
        });
        assert_eq!(env.host.snapshot(), host_before, "host as before attach");
        // The container as before attach, but for its lo, which attach brought up.
        let mut ctr_now = env.ctr.snapshot();
        let lo = ctr_now
            .links
            .iter_mut()
            .find(|l| l.name == "lo")
            .expect("lo");
        assert!(lo.up);
        (lo.up, lo.addrs) = (false, Vec::new());
        assert_eq!(ctr_now, ctr_before, "container as before attach");
    }

    #[test]
    fn reattach_right_after_detach_waits_for_the_reaper_once() {
        let env = attach_env("reattach-reap", Config::default());
        let mut svc = env.start();
        let (a, _) = attach_c(&mut svc, "c1").expect("attaches");
        // The reaper's first attempt fails, so the old pair is certainly still there when
        // the container is attached again (same namespace, same eth0).
        env.host.fail_nth(HostOp::DeleteGroup, 1);
        detach_as(&mut svc, "c1", false);
        eventually("the reaper tried once", || {
            env.host
                .history()
                .iter()
                .any(|r| matches!(r.call, backend_mock::Call::DeleteGroup(_)) && r.injected)
        });
        assert!(env.ctr.link("eth0").is_some(), "the old eth0 still waits");
        env.host.clear_calls();
        let (again, created) = attach_c(&mut svc, "c1").expect("attaches after waiting");
        assert!(created);
        // The old host end still existed when the name was picked: the new one is salted.
        assert_ne!(again.host_veth, a.host_veth);
        assert_eq!(again.host_veth, netcore::attach::host_veth_name("c1", 1));
        let history: Vec<(String, Option<OpsErrorKind>)> = env
            .host
            .history()
            .into_iter()
            .filter(|r| {
                matches!(
                    r.call,
                    backend_mock::Call::CreateVeth(_) | backend_mock::Call::DeleteGroup(_)
                )
            })
            .map(|r| (r.call.to_string(), r.error))
            .collect();
        let create = format!("create veth {} with peer eth0 in {CTR}", again.host_veth);
        assert_eq!(
            history,
            vec![
                (create.clone(), Some(OpsErrorKind::AlreadyExists)),
                (format!("delete the links of group {REAP_GROUP}"), None),
                (create, None),
            ]
        );
        assert!(
            env.host.link(&a.host_veth).is_none(),
            "the old pair is gone"
        );
        assert!(env.ctr.link("eth0").is_some_and(|l| l.up));
        assert_eq!(
            env.host.master(&again.host_veth).as_deref(),
            Some("docker0")
        );
    }

    #[test]
    fn start_and_shutdown_leave_no_retired_veth() {
        // A veth a previous run retired and did not reap (it crashed in between), and an
        // administrator's link in another group.
        let ctr = FakeHost::new_netns();
        let mut host = FakeHost::new().with_netns("/proc/77/ns/net", ctr.clone());
        let spec = |host: &str, peer: &str| netcore::ops::VethSpec {
            host: host.into(),
            peer: peer.into(),
            peer_netns: "/proc/77/ns/net".into(),
            peer_mac: "02:42:ac:11:00:09".parse().expect("mac"),
            mtu: 1500,
        };
        use netcore::ops::AttachOps;
        host.create_veth(&spec("vethdead", "eth0")).expect("veth");
        host.retire_link("vethdead", REAP_GROUP).expect("retire");
        host.create_veth(&spec("vethadmin", "eth1")).expect("veth");
        host.retire_link("vethadmin", 7).expect("group 7");
        let env = attach_env_on("leftover", Config::default(), host);
        let mut svc = env.start();
        assert!(env.host.link("vethdead").is_none(), "reaped at start");
        assert!(ctr.link("eth0").is_none(), "its peer too");
        assert_eq!(env.host.group("vethadmin"), 7, "another group is not ours");
        assert!(ctr.link("eth1").is_some());

        // Shutdown lets the reaper finish: nothing retired is left.
        let (a, _) = attach_c(&mut svc, "c1").expect("attaches");
        detach_as(&mut svc, "c1", false);
        svc.shutdown();
        assert!(env.host.link(&a.host_veth).is_none());
        assert!(env.ctr.link("eth0").is_none());
    }

    /// `ip` can be allocated (to a probe container, released again at once).
    fn assert_ip_free(svc: &mut Service, ip: &str) {
        let ip: Ipv4Addr = ip.parse().expect("ip");
        match svc.handle(Command::AllocateInterface {
            id: "probe".into(),
            ip: Some(ip),
            mac: None,
        }) {
            Ok(Reply::Interface { iface, created }) => assert!(created && iface.ip == ip),
            other => panic!("{ip} is not free: {other:?}"),
        }
        svc.handle(Command::ReleaseInterface { id: "probe".into() })
            .expect("released");
    }

    #[test]
    fn detach_of_a_container_whose_namespace_died_still_releases() {
        let env = attach_env("died", Config::default());
        let mut svc = env.start();
        let (a, _) = attach_c(&mut svc, "c1").expect("attaches");
        use netcore::ops::LinkOps;
        env.ctr.link_ops().delete_link("eth0").expect("pair gone");
        let d = detach_c(&mut svc, "c1");
        assert!(d.detached && d.released.is_some(), "{d:?}");
        assert!(env.host.link(&a.host_veth).is_none());
        assert!(svc.network().endpoints().is_empty());
    }

    #[test]
    fn release_interface_of_an_attached_container_detaches_it() {
        let env = attach_env("release", Config::default());
        let mut svc = env.start();
        let (a, _) = attach_c(&mut svc, "c1").expect("attaches");
        match svc.handle(Command::ReleaseInterface { id: "c1".into() }) {
            Ok(Reply::Released(r)) => assert_eq!(r.ip, a.interface.ip),
            other => panic!("{other:?}"),
        }
        assert!(env.host.link(&a.host_veth).is_none());
        assert!(svc.attachments().is_empty());
        drop(svc);
        let svc = env.start();
        assert!(svc.attachments().is_empty() && svc.network().endpoints().is_empty());
    }

    #[test]
    fn a_veth_that_cannot_be_removed_stays_recorded_for_detach() {
        let env = attach_env("stuck", Config::default());
        let mut svc = env.start();
        env.host.fail_nth(HostOp::SetMaster, 1);
        env.host.fail_nth(HostOp::DeleteLink, 1);
        let e = attach_c(&mut svc, "c1").expect_err("fails");
        let veth = netcore::attach::host_veth_name("c1", 0);
        assert!(matches!(e, ServiceError::Host(_)), "{e:?}");
        assert!(
            e.to_string()
                .contains(&format!("{veth} is recorded: detach c1 removes it")),
            "{e}"
        );
        assert!(env.host.link(&veth).is_some(), "the veth is still there");
        assert!(svc.attachments().contains_key("c1"), "and recorded");
        let d = detach_c(&mut svc, "c1");
        assert!(d.detached && d.released.is_some());
        assert!(env.host.link(&veth).is_none());
        assert!(svc.network().endpoints().is_empty());
    }

    #[test]
    fn a_taken_host_veth_name_is_salted() {
        let taken = netcore::attach::host_veth_name("c1", 0);
        let host = FakeHost::new().with_device(&taken, &[]);
        let env = attach_env_on("salt", Config::default(), host);
        let mut svc = env.start();
        let (a, _) = attach_c(&mut svc, "c1").expect("attaches");
        assert_eq!(a.host_veth, netcore::attach::host_veth_name("c1", 1));
        assert!(
            env.host.link(&taken).is_some_and(|l| l.kind.is_none()),
            "untouched"
        );
    }

    #[test]
    fn the_mtu_is_the_flag_else_the_default_route_interface() {
        let uplink = netcore::ops::LinkInfo {
            name: "ens3".into(),
            index: 0,
            kind: None,
            mac: Some("52:54:00:12:34:56".parse().expect("mac")),
            mtu: 9000,
            up: true,
            addrs: vec!["192.168.1.10/24".parse().expect("net")],
        };
        let host = FakeHost::new().with_link(uplink);
        let index = host.link("ens3").expect("ens3").index;
        let host = host.with_route_v4(netcore::ops::RouteV4 {
            dst: None,
            gateway: Some("192.168.1.1".parse().expect("ip")),
            oif: Some(index),
        });
        let env = attach_env_on("mtu", Config::default(), host.clone());
        let mut svc = env.start();
        let (a, _) = attach_c(&mut svc, "c1").expect("attaches");
        assert_eq!(a.mtu, 9000);
        assert_eq!(env.ctr.link("eth0").expect("eth0").mtu, 9000);
        assert_eq!(env.host.link(&a.host_veth).expect("veth").mtu, 9000);
        drop(svc);

        let env = attach_env_on(
            "mtuflag",
            Config {
                mtu: Some(1400),
                ..Config::default()
            },
            host,
        );
        let mut svc = env.start();
        let (a, _) = attach_c(&mut svc, "c1").expect("attaches");
        assert_eq!(a.mtu, 1400);
        assert_eq!(env.ctr.link("eth0").expect("eth0").mtu, 1400);
    }

    #[test]
    fn a_restart_keeps_attachments_and_recreates_no_veth() {
        let env = attach_env("attrestart", Config::default());
        let mut svc = env.start();
        let (a1, _) = attach_c(&mut svc, "c1").expect("c1");
        let (a2, _) = attach_as(&mut svc, "c2", OTHER_CTR, "eth0").expect("c2");
        let st = state_of(&mut svc);
        let before = env.host.snapshot();
        drop(svc);
        let mut svc = env.start();
        assert_eq!(state_of(&mut svc), st, "same state, attachments included");
        assert_eq!(env.host.snapshot(), before, "a restart changes nothing");
        assert_eq!(attach_c(&mut svc, "c1").expect("same"), (a1.clone(), false));

        // c1's namespace dies while the daemon is down: its record is kept, nothing is
        // re-created on start, and detach cleans up.
        drop(svc);
        use netcore::ops::LinkOps;
        env.ctr.link_ops().delete_link("eth0").expect("pair gone");
        env.host.clear_calls();
        let mut svc = env.start();
        assert!(
            !env.host
                .mutations()
                .iter()
                .any(|c| matches!(c, backend_mock::Call::CreateVeth(_))),
            "{:?}",
            env.host.mutations()
        );
        assert!(svc.attachments().contains_key("c1"));
        assert!(env.host.link(&a1.host_veth).is_none());
        let d = detach_c(&mut svc, "c1");
        assert!(d.detached);
        assert_eq!(
            d.released.map(|r| r.ip),
            Some(a1.interface.ip),
            "released on detach"
        );
        assert_eq!(
            state_of(&mut svc).attachments.keys().collect::<Vec<_>>(),
            ["c2"]
        );
        assert!(env.host.link(&a2.host_veth).is_some());
    }

    #[test]
    fn attach_requests_are_parsed_with_messages_naming_the_value() {
        assert_eq!(parse_netns("4242"), Ok(PathBuf::from("/proc/4242/ns/net")));
        assert_eq!(
            parse_netns("/run/netns/red"),
            Ok(PathBuf::from("/run/netns/red"))
        );
        for bad_value in ["", "0", "99999999999", "red", "run/netns/red", "-1", "12a"] {
            let e = parse_netns(bad_value).expect_err(bad_value);
            assert!(matches!(e, ServiceError::BadInput(_)), "{bad_value}");
            assert!(
                e.to_string()
                    .starts_with(&format!("invalid netns {bad_value:?}: ")),
                "{e}"
            );
        }
        let req = |ifname: Option<&str>| api::Attach {
            id: "c1".into(),
            netns: "4242".into(),
            ifname: ifname.map(str::to_owned),
        };
        assert_eq!(
            Command::try_from(req(None)),
            Ok(Command::Attach {
                id: "c1".into(),
                netns: "/proc/4242/ns/net".into(),
                ifname: IfName::new("eth0").expect("valid"),
            })
        );
        for (bad_name, why) in [
            ("", "empty"),
            ("a-very-long-interface", "too long"),
            ("eth0:1", "may not contain"),
            ("..", "reserved"),
        ] {
            let e = Command::try_from(req(Some(bad_name))).expect_err(bad_name);
            assert!(matches!(e, ServiceError::BadInput(_)), "{e:?}");
            let msg = e.to_string();
            assert!(
                msg.starts_with("invalid ifname: ") && msg.contains(why),
                "{msg}"
            );
        }
        // An empty id is refused by the worker, before anything is looked at.
        let env = attach_env("emptyid", Config::default());
        let mut svc = env.start();
        assert_eq!(
            attach_as(&mut svc, "", CTR, "eth0").expect_err("empty"),
            ServiceError::Handler(HandlerError::EmptyId)
        );
        assert_eq!(
            svc.handle(Command::Detach {
                id: String::new(),
                wait: false,
            }),
            Err(ServiceError::Handler(HandlerError::EmptyId))
        );
    }
}
