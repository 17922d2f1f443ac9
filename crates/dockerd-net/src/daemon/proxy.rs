//! The userland proxies of published ports (`--userland-proxy`, Docker's default): one
//! async task set per mapping inside this process (crate `userland-proxy`), never a process
//! per port (moby/moby#16284: 12,000 docker-proxy processes for a port range).

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};

use netcore::firewall::PortMapping;
use netcore::ports::Proto;

/// Starting and stopping the proxy of a mapping. The worker thread owns one.
pub trait Proxies {
    /// Starts the proxy; the host port is bound before this returns.
    fn start(&mut self, m: &PortMapping) -> io::Result<()>;
    /// Stops the proxy of a mapping (nothing if it has none).
    fn stop(&mut self, m: &PortMapping);
    /// Stops every proxy (daemon shutdown).
    fn stop_all(&mut self);
    /// How many proxies run.
    fn running(&self) -> usize;
}

/// Hairpin mode (`--userland-proxy=false`): the DNAT rules do everything.
#[derive(Debug, Default)]
pub struct NoProxies;

impl Proxies for NoProxies {
    fn start(&mut self, _m: &PortMapping) -> io::Result<()> {
        Ok(())
    }
    fn stop(&mut self, _m: &PortMapping) {}
    fn stop_all(&mut self) {}
    fn running(&self) -> usize {
        0
    }
}

type Key = (Ipv4Addr, u16, Proto);

fn key(m: &PortMapping) -> Key {
    (m.host_ip, m.host_port, m.proto)
}

/// Proxies as tasks on the daemon's tokio runtime.
#[derive(Debug)]
pub struct Userland {
    handle: tokio::runtime::Handle,
    running: HashMap<Key, userland_proxy::ProxyHandle>,
}

impl Userland {
    pub fn new(handle: tokio::runtime::Handle) -> Self {
        Self {
            handle,
            running: HashMap::new(),
        }
    }
}

impl Proxies for Userland {
    fn start(&mut self, m: &PortMapping) -> io::Result<()> {
        if self.running.contains_key(&key(m)) {
            return Ok(());
        }
        if m.proto == Proto::Sctp {
            // Nothing in tokio speaks SCTP: the port is published by its DNAT rules (which
            // is all traffic from other hosts needs); only host-local access lacks a proxy.
            // Refusing the mapping would make SCTP unpublishable in the default mode.
            tracing::warn!(
                "{}:{}/sctp: {}",
                m.host_ip,
                m.host_port,
                userland_proxy::SCTP_UNSUPPORTED
            );
            return Ok(());
        }
        let host = SocketAddrV4::new(m.host_ip, m.host_port);
        let container = SocketAddrV4::new(m.container_ip, m.container_port);
        let proxy = userland_proxy::Proxy::start(&self.handle, m.proto, host, container)?;
        tracing::debug!(%host, %container, proto = %m.proto, "userland proxy started");
        self.running.insert(key(m), proxy);
        Ok(())
    }

    fn stop(&mut self, m: &PortMapping) {
        if let Some(p) = self.running.remove(&key(m)) {
            p.stop();
            tracing::debug!(host_ip = %m.host_ip, host_port = m.host_port, proto = %m.proto, "userland proxy stopped");
        }
    }

    fn stop_all(&mut self) {
        for (_, p) in self.running.drain() {
            p.stop();
        }
    }

    fn running(&self) -> usize {
        self.running.len()
    }
}
