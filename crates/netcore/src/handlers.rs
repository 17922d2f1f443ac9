//! The per-container requests Docker's bridge driver served after init:
//! `allocate_interface`, `release_interface`, `allocate_port` (and its inverse) and `link`.
//!
//! [`Network`] is the whole state of the bridge network (serialisable, so the daemon can
//! persist it). Each handler changes the state and returns the firewall batches that make
//! the kernel match; the caller applies them. If applying fails, the caller reverses the
//! state change with the opposite handler (`release_port` for `allocate_port`, `link` with
//! the opposite `enable`, ...), whose batches it then does not apply.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::config::{Config, FirewallBackend};
use crate::firewall::{self, Batch, PortMapping, Rule, Table};
use crate::ipam::{IpAllocator, IpamError};
use crate::mac::{self, MacAddr};
use crate::nftables::{self, Element, NftOp};
use crate::ports::{PortAllocator, PortError, Proto};

/// A container's network interface, as `allocate_interface` answers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    pub ip: Ipv4Addr,
    pub prefix_len: u8,
    /// The netmask, dotted (Docker 1.x printed it as hex, see [`Interface::mask_hex`]).
    pub mask: Ipv4Addr,
    pub gateway: Ipv4Addr,
    pub bridge: String,
    pub mac: MacAddr,
}

impl Interface {
    /// The mask as Docker 1.x's `Mask` output printed it (`net.IPMask.String()`: `ffff0000`).
    pub fn mask_hex(&self) -> String {
        format!("{:08x}", u32::from(self.mask))
    }
}

/// One container's allocations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub ip: Ipv4Addr,
    pub mac: MacAddr,
    pub ports: Vec<PortMapping>,
}

/// A legacy link between two containers, for one port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct LinkSpec {
    pub parent: Ipv4Addr,
    pub child: Ipv4Addr,
    pub port: u16,
    pub proto: Proto,
}

/// A handler's answer and the firewall batches that make the kernel match it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Effect<T> {
    pub value: T,
    /// At most one batch per table, in the order to apply them.
    pub firewall: Vec<Batch>,
    /// With `--firewall-backend nftables` (and then `firewall` is empty): at most one op,
    /// adding or deleting set elements, applied as one transaction.
    pub nft: Vec<NftOp>,
}

/// Why a request was refused. [`HandlerError::kind`] classifies it for an API.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandlerError {
    /// Docker's text (`Release` in driver.go).
    #[error("No network information to release for {0}")]
    NothingToRelease(String),
    #[error("no network information for container {0}: allocate its interface first")]
    UnknownContainer(String),
    #[error("container {id} already has an interface with IP {ip}")]
    AlreadyAllocated { id: String, ip: Ipv4Addr },
    #[error("container id must not be empty")]
    EmptyId,
    #[error("invalid requested MAC {0}: a container needs a unicast, non-zero address")]
    BadMac(MacAddr),
    #[error("invalid container port 0: a published port needs a container port in 1-65535")]
    ContainerPortZero,
    #[error("port {host_ip}:{host_port}/{proto} is not mapped for container {id}")]
    NotMapped {
        id: String,
        host_ip: Ipv4Addr,
        host_port: u16,
        proto: Proto,
    },
    #[error("{0} is not the IP of a container on this network")]
    UnknownIp(Ipv4Addr),
    /// Docker 1.3's text for a host IP that does not parse (e.g. `localhost`).
    #[error("Bad parameter: invalid host ip {0}")]
    BadHostIp(String),
    #[error(transparent)]
    Ipam(#[from] IpamError),
    #[error(transparent)]
    Port(#[from] PortError),
}

/// How an API should answer an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request itself is wrong (400).
    BadInput,
    /// It names something that does not exist (404).
    NotFound,
    /// It collides with the current state (409).
    Conflict,
}

impl HandlerError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            HandlerError::NothingToRelease(_)
            | HandlerError::UnknownContainer(_)
            | HandlerError::NotMapped { .. }
            | HandlerError::UnknownIp(_) => ErrorKind::NotFound,
            HandlerError::AlreadyAllocated { .. } => ErrorKind::Conflict,
            HandlerError::EmptyId
            | HandlerError::BadMac(_)
            | HandlerError::ContainerPortZero
            | HandlerError::BadHostIp(_) => ErrorKind::BadInput,
            HandlerError::Ipam(e) => match e {
                IpamError::AlreadyAllocated { .. }
                | IpamError::BridgeAddress { .. }
                | IpamError::NoAvailable { .. } => ErrorKind::Conflict,
                IpamError::OutOfRange { .. } | IpamError::BadSubnet { .. } => ErrorKind::BadInput,
            },
            HandlerError::Port(e) => match e {
                PortError::AlreadyAllocated { .. } | PortError::AllPortsAllocated { .. } => {
                    ErrorKind::Conflict
                }
            },
        }
    }
}

/// Parses a host IP as `allocate_port` receives it: an IPv4 address, never a host name
/// (upstream `TestHostnameFormatChecking`: `localhost` is refused).
pub fn parse_host_ip(s: &str) -> Result<Ipv4Addr, HandlerError> {
    s.parse().map_err(|_| HandlerError::BadHostIp(s.to_owned()))
}

/// The bridge network's state: addresses, ports, links.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Network {
    bridge: String,
    iptables: bool,
    icc: bool,
    hairpin: bool,
    default_ip: Ipv4Addr,
    /// States saved before the option existed are iptables ones.
    #[serde(default)]
    firewall_backend: FirewallBackend,
    ipam: IpAllocator,
    ports: PortAllocator,
    endpoints: BTreeMap<String, Endpoint>,
    links: BTreeSet<LinkSpec>,
}

impl Network {
    /// The state of a fresh network on `bridge` whose address is `addr` (e.g. 172.17.42.1/16).
    pub fn new(config: &Config, bridge: &str, addr: Ipv4Net) -> Result<Self, IpamError> {
        Ok(Self {
            bridge: bridge.to_owned(),
            iptables: config.iptables,
            icc: config.icc,
            hairpin: !config.userland_proxy,
            default_ip: config.default_ip,
            firewall_backend: config.firewall_backend,
            ipam: IpAllocator::new(addr, config.fixed_cidr)?,
            ports: PortAllocator::new(),
            endpoints: BTreeMap::new(),
            links: BTreeSet::new(),
        })
    }

    pub fn bridge(&self) -> &str {
        &self.bridge
    }

    pub fn endpoints(&self) -> &BTreeMap<String, Endpoint> {
        &self.endpoints
    }

    pub fn links(&self) -> &BTreeSet<LinkSpec> {
        &self.links
    }

    fn interface(&self, ep: &Endpoint) -> Interface {
        Interface {
            ip: ep.ip,
            prefix_len: self.ipam.prefix_len(),
            mask: self.ipam.mask(),
            gateway: self.ipam.gateway(),
            bridge: self.bridge.clone(),
            mac: ep.mac,
        }
    }

    /// `allocate_interface`: an IP (the requested one, or the next free), and a MAC (the
    /// requested one, or `02:42:` + the IP). Asking again for a container that has an
    /// interface returns it when the request agrees with it (a retried request must not
    /// leak an address, as Docker 1.x's overwrite did), and is a conflict otherwise.
    pub fn allocate_interface(
        &mut self,
        id: &str,
        requested_ip: Option<Ipv4Addr>,
        requested_mac: Option<MacAddr>,
    ) -> Result<Interface, HandlerError> {
        if id.is_empty() {
            return Err(HandlerError::EmptyId);
        }
        if let Some(m) = requested_mac
            && (!m.is_unicast() || m.octets() == [0; 6])
        {
            return Err(HandlerError::BadMac(m));
        }
        if let Some(ep) = self.endpoints.get(id) {
            let agrees = requested_ip.is_none_or(|ip| ip == ep.ip)
                && requested_mac.is_none_or(|m| m == ep.mac);
            return if agrees {
                Ok(self.interface(ep))
            } else {
                Err(HandlerError::AlreadyAllocated {
                    id: id.to_owned(),
                    ip: ep.ip,
                })
            };
        }
        let ip = self.ipam.request(requested_ip)?;
        let ep = Endpoint {
            ip,
            mac: requested_mac.unwrap_or_else(|| mac::container_mac(ip)),
            ports: Vec::new(),
        };
        let iface = self.interface(&ep);
        self.endpoints.insert(id.to_owned(), ep);
        Ok(iface)
    }

    /// `release_interface`: unpublishes the container's ports, removes its links, releases
    /// its IP and forgets it (Docker 1.x forgot to forget: a later `allocate_port` on the
    /// released id then used a stale IP).
    pub fn release_interface(&mut self, id: &str) -> Result<Effect<Endpoint>, HandlerError> {
        if id.is_empty() {
            return Err(HandlerError::EmptyId);
        }
        let ep = self
            .endpoints
            .remove(id)
            .ok_or_else(|| HandlerError::NothingToRelease(id.to_owned()))?;
        let mut rules = Vec::new();
        let mut elements = Vec::new();
        for m in &ep.ports {
            self.ports.release(m.host_ip, m.proto, m.host_port);
            rules.extend(firewall::port_rules(&self.bridge, m, self.hairpin));
            elements.extend(self.port_elements(m, Change::Remove));
        }
        let gone: Vec<LinkSpec> = self
            .links
            .iter()
            .filter(|l| l.parent == ep.ip || l.child == ep.ip)
            .copied()
            .collect();
        for l in gone {
            self.links.remove(&l);
            rules.extend(self.link_rules(&l));
            elements.extend(self.link_element(&l));
        }
        self.ipam.release(ep.ip);
        let firewall = self.batches(&rules, Change::Remove);
        Ok(Effect {
            value: ep,
            firewall,
            nft: self.nft_ops(elements, Change::Remove),
        })
    }

    /// `allocate_port`: a host port (the given one, or the next free dynamic one) on the
    /// given host IP (default `--ip`), published to the container's port.
    pub fn allocate_port(
        &mut self,
        id: &str,
        host_ip: Option<Ipv4Addr>,
        host_port: u16,
        container_port: u16,
        proto: Proto,
    ) -> Result<Effect<PortMapping>, HandlerError> {
        if id.is_empty() {
            return Err(HandlerError::EmptyId);
        }
        if container_port == 0 {
            return Err(HandlerError::ContainerPortZero);
        }
        let container_ip = self
            .endpoints
            .get(id)
            .ok_or_else(|| HandlerError::UnknownContainer(id.to_owned()))?
            .ip;
        let host_ip = host_ip.unwrap_or(self.default_ip);
        let host_port = self.ports.request(host_ip, proto, host_port)?;
        let m = PortMapping {
            host_ip,
            host_port,
            container_ip,
            container_port,
            proto,
        };
        if let Some(ep) = self.endpoints.get_mut(id) {
            ep.ports.push(m);
        }
        let rules = firewall::port_rules(&self.bridge, &m, self.hairpin);
        Ok(Effect {
            value: m,
            firewall: self.batches(&rules, Change::Add),
            nft: self.nft_ops(self.port_elements(&m, Change::Add), Change::Add),
        })
    }

    /// Unpublishes one port of a container.
    pub fn release_port(
        &mut self,
        id: &str,
        host_ip: Ipv4Addr,
        host_port: u16,
        proto: Proto,
    ) -> Result<Effect<PortMapping>, HandlerError> {
        let not_mapped = || HandlerError::NotMapped {
            id: id.to_owned(),
            host_ip,
            host_port,
            proto,
        };
        let ep = self.endpoints.get_mut(id).ok_or_else(not_mapped)?;
        let pos = ep
            .ports
            .iter()
            .position(|m| m.host_ip == host_ip && m.host_port == host_port && m.proto == proto)
            .ok_or_else(not_mapped)?;
        let m = ep.ports.remove(pos);
        self.ports.release(m.host_ip, m.proto, m.host_port);
        let rules = firewall::port_rules(&self.bridge, &m, self.hairpin);
        Ok(Effect {
            value: m,
            firewall: self.batches(&rules, Change::Remove),
            nft: self.nft_ops(self.port_elements(&m, Change::Remove), Change::Remove),
        })
    }

    /// `link`: opens (enable) or closes the given ports from parent to child. Both must be
    /// containers of this network. Rules are only needed with `--icc=false` (with ICC on,
    /// everything is open anyway, and Docker programs none); the link is recorded either way.
    /// Enabling an enabled link, or disabling a disabled one, changes nothing.
    pub fn link(
        &mut self,
        parent: Ipv4Addr,
        child: Ipv4Addr,
        ports: &[(u16, Proto)],
        enable: bool,
    ) -> Result<Effect<Vec<LinkSpec>>, HandlerError> {
        for ip in [parent, child] {
            if !self.endpoints.values().any(|ep| ep.ip == ip) {
                return Err(HandlerError::UnknownIp(ip));
            }
        }
        let mut changed = Vec::new();
        let mut rules = Vec::new();
        let mut elements = Vec::new();
        for &(port, proto) in ports {
            let spec = LinkSpec {
                parent,
                child,
                port,
                proto,
            };
            let did = if enable {
                self.links.insert(spec)
            } else {
                self.links.remove(&spec)
            };
            if did {
                rules.extend(self.link_rules(&spec));
                elements.extend(self.link_element(&spec));
                changed.push(spec);
            }
        }
        let change = if enable { Change::Add } else { Change::Remove };
        Ok(Effect {
            firewall: self.batches(&rules, change),
            nft: self.nft_ops(elements, change),
            value: changed,
        })
    }

    /// Every rule the current state needs beyond the bridge's own rule set: the rules of
    /// published ports and links. A daemon re-applies these on start.
    pub fn rules(&self) -> Vec<Rule> {
        let mut rules = Vec::new();
        for ep in self.endpoints.values() {
            for m in &ep.ports {
                rules.extend(firewall::port_rules(&self.bridge, m, self.hairpin));
            }
        }
        for l in &self.links {
            rules.extend(self.link_rules(l));
        }
        rules
    }

    /// Every set element the current state needs (`--firewall-backend nftables`), sorted: a
    /// daemon re-adds these on start.
    pub fn elements(&self) -> Vec<Element> {
        let mut all = BTreeSet::new();
        for ep in self.endpoints.values() {
            for m in &ep.ports {
                all.insert(nftables::dnat_element(m));
                all.extend(nftables::shared_port_elements(m));
            }
        }
        for l in &self.links {
            all.extend(self.link_element(l));
        }
        all.into_iter().collect()
    }

    /// The firewall backend this state was made for.
    pub fn firewall_backend(&self) -> FirewallBackend {
        self.firewall_backend
    }

    /// The elements to add for a mapping just recorded, or to delete for one just removed:
    /// its DNAT element, plus the elements it shares with other mappings of the same
    /// container port when no other mapping is left (or, when adding, was there) to need
    /// them. Must be called after the state change.
    fn port_elements(&self, m: &PortMapping, change: Change) -> Vec<Element> {
        let mut els = vec![nftables::dnat_element(m)];
        let users = self
            .endpoints
            .values()
            .flat_map(|ep| &ep.ports)
            .filter(|o| {
                o.container_ip == m.container_ip
                    && o.proto == m.proto
                    && o.container_port == m.container_port
            })
            .count();
        // After an add, `m` itself is the one user; after a removal, nobody is left.
        let alone = match change {
            Change::Add => 1,
            Change::Remove => 0,
        };
        if users == alone {
            els.extend(nftables::shared_port_elements(m));
        }
        els
    }

    fn link_element(&self, l: &LinkSpec) -> Option<Element> {
        (!self.icc).then(|| nftables::link_element(l.parent, l.child, l.port, l.proto))
    }

    fn nft_ops(&self, elements: Vec<Element>, change: Change) -> Vec<NftOp> {
        if !self.iptables || self.firewall_backend != FirewallBackend::Nftables {
            return Vec::new();
        }
        // Two mappings released together may share elements: each goes once.
        let elements: Vec<Element> = elements
            .into_iter()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if elements.is_empty() {
            return Vec::new();
        }
        vec![match change {
            Change::Add => NftOp::AddElements(elements),
            Change::Remove => NftOp::DelElements(elements),
        }]
    }

    fn link_rules(&self, l: &LinkSpec) -> Vec<Rule> {
        if self.icc {
            return Vec::new();
        }
        firewall::link_rules(&self.bridge, l.parent, l.child, l.port, l.proto)
    }

    /// One batch per table: nat first (DNAT before the ACCEPT that lets it through).
    fn batches(&self, rules: &[Rule], change: Change) -> Vec<Batch> {
        if !self.iptables || self.firewall_backend == FirewallBackend::Nftables {
            // Docker: without iptables the portmapper's chain is nil and forwarding is a no-op.
            return Vec::new();
        }
        [Table::Nat, Table::Filter]
            .into_iter()
            .filter_map(|table| {
                let lines: Vec<String> = rules
                    .iter()
                    .filter(|r| r.table == table)
                    .map(|r| match change {
                        Change::Add => r.save_line(),
                        Change::Remove => format!("-D {} {}", r.chain, r.spec()),
                    })
                    .collect();
                (!lines.is_empty()).then_some(Batch { table, lines })
            })
            .collect()
    }
}

#[derive(Clone, Copy)]
enum Change {
    Add,
    Remove,
}
