//! Network namespaces, veth pairs and bridge ports: the fake host's [`AttachOps`] side.
//!
//! Each [`FakeHost`] is one namespace with its own lock. Two operations act on two
//! namespaces at once: `create_veth` (the peer goes into the namespace registered under
//! `peer_netns`) and `delete_link` of a veth end (the kernel deletes the peer with it,
//! wherever it is). Both take the process-wide [`RTNL`] first and then the namespaces' locks,
//! this one before the peer's. A thread holding two namespace locks therefore always holds
//! `RTNL`, and every other operation holds a single lock and waits for nothing while holding
//! it, so two namespaces can never wait on each other.
//!
//! [`AttachOps`]: netcore::ops::AttachOps

use std::fmt;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use netcore::mac::MacAddr;
use netcore::ops::{LinkInfo, OpsError, OpsErrorKind, RouteV4, VethSpec};

use super::{DEFAULT_MTU, Fail, FakeHost, MTU_RANGE, State, fail, fake_mac, valid_ifname};
use crate::record::Call;

/// Serialises the operations that lock two namespaces, as the kernel's RTNL serialises
/// link changes.
static RTNL: Mutex<()> = Mutex::new(());

fn rtnl() -> MutexGuard<'static, ()> {
    RTNL.lock().unwrap_or_else(PoisonError::into_inner)
}

/// As `FakeHost::st`: every operation validates before it changes anything, so the state
/// behind a poisoned lock is consistent.
fn lock(state: &Arc<Mutex<State>>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A namespace registered under a path.
#[derive(Clone)]
pub(super) enum NsRef {
    /// An alias of the namespace's own path.
    Own,
    Other(FakeHost),
}

impl fmt::Debug for NsRef {
    // Not derived: a registered namespace's state is its own business, and printing it
    // would recurse if two hosts were registered in each other.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NsRef::Own => f.write_str("Own"),
            // try_lock: never block (or deadlock) for a debug print.
            NsRef::Other(ns) => match ns.state.try_lock() {
                Ok(st) => write!(f, "Other({})", st.path.display()),
                Err(_) => f.write_str("Other(<locked>)"),
            },
        }
    }
}

/// A bridge port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Port {
    pub master: String,
    pub hairpin: bool,
}

/// One end's record of the other end of its veth.
#[derive(Debug, Clone)]
pub(super) struct VethEnd {
    pub peer: String,
    /// With the name, identifies the peer even if a link of that name came and went.
    pub peer_index: u32,
    /// `None` when the peer is in the same namespace.
    pub ns: Option<OtherNs>,
}

/// The namespace a veth's peer lives in. Weak: a container namespace that holds the host's
/// end must not keep the host alive, nor the reverse.
#[derive(Debug, Clone)]
pub(super) struct OtherNs {
    pub state: Weak<Mutex<State>>,
    /// The path the namespace was known by when the pair was made.
    pub path: PathBuf,
}

impl VethEnd {
    pub fn as_peer(&self) -> VethPeer {
        VethPeer {
            name: self.peer.clone(),
            netns: self.ns.as_ref().map(|o| o.path.clone()),
        }
    }
}

/// The other end of a veth, as [`Snapshot::peers`](crate::Snapshot::peers) and
/// [`FakeHost::peer`] show it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VethPeer {
    pub name: String,
    /// The peer's namespace, by path; `None` when it is this namespace.
    pub netns: Option<PathBuf>,
}

/// Where `create_veth` puts the peer.
enum Target {
    Own,
    Other(Arc<Mutex<State>>),
    Missing,
}

pub(super) fn create_veth(state: &Arc<Mutex<State>>, spec: &VethSpec) -> Result<(), OpsError> {
    let _rtnl = rtnl();
    let mut st = lock(state);
    let target = match st.netns.get(&spec.peer_netns) {
        Some(NsRef::Other(ns)) if !Arc::ptr_eq(&ns.state, state) => {
            Target::Other(Arc::clone(&ns.state))
        }
        Some(_) => Target::Own,
        None if spec.peer_netns == st.path => Target::Own,
        None => Target::Missing,
    };
    let here = st.path.clone();
    st.call(Call::CreateVeth(spec.clone()), |st| {
        check_veth_spec(spec)?;
        let taken = |name: &str, ns: Option<&PathBuf>| {
            let place = ns
                .map(|p| format!(" in {}", p.display()))
                .unwrap_or_default();
            fail(
                OpsErrorKind::AlreadyExists,
                format!("file exists: {name}{place}"),
            )
        };
        match target {
            // The backend opens the path before anything else (ENOENT).
            Target::Missing => Err(fail(
                OpsErrorKind::NotFound,
                format!(
                    "no such file or directory: network namespace {}",
                    spec.peer_netns.display()
                ),
            )),
            Target::Own => {
                if st.find(&spec.host).is_ok() || spec.host == spec.peer {
                    return Err(taken(&spec.host, None));
                }
                if st.find(&spec.peer).is_ok() {
                    return Err(taken(&spec.peer, None));
                }
                let host_index = st.add_veth_end(&spec.host, None, spec.mtu);
                let peer_index = st.add_veth_end(&spec.peer, Some(spec.peer_mac), spec.mtu);
                st.veths.insert(
                    spec.host.clone(),
                    VethEnd {
                        peer: spec.peer.clone(),
                        peer_index,
                        ns: None,
                    },
                );
                st.veths.insert(
                    spec.peer.clone(),
                    VethEnd {
                        peer: spec.host.clone(),
                        peer_index: host_index,
                        ns: None,
                    },
                );
                Ok(())
            }
            Target::Other(other) => {
                // Lock order: this namespace, then the peer's, under RTNL (see module docs).
                let mut peer_st = lock(&other);
                if st.find(&spec.host).is_ok() {
                    return Err(taken(&spec.host, None));
                }
                if peer_st.find(&spec.peer).is_ok() {
                    return Err(taken(&spec.peer, Some(&spec.peer_netns)));
                }
                let host_index = st.add_veth_end(&spec.host, None, spec.mtu);
                let peer_index = peer_st.add_veth_end(&spec.peer, Some(spec.peer_mac), spec.mtu);
                st.veths.insert(
                    spec.host.clone(),
                    VethEnd {
                        peer: spec.peer.clone(),
                        peer_index,
                        ns: Some(OtherNs {
                            state: Arc::downgrade(&other),
                            path: spec.peer_netns.clone(),
                        }),
                    },
                );
                peer_st.veths.insert(
                    spec.peer.clone(),
                    VethEnd {
                        peer: spec.host.clone(),
                        peer_index: host_index,
                        ns: Some(OtherNs {
                            state: Arc::downgrade(state),
                            path: here,
                        }),
                    },
                );
                Ok(())
            }
        }
    })
}

/// What `veth_newlink` refuses before creating anything.
fn check_veth_spec(spec: &VethSpec) -> Result<(), Fail> {
    for name in [&spec.host, &spec.peer] {
        if !valid_ifname(name) {
            return Err(fail(
                OpsErrorKind::Other,
                format!("invalid argument: bad interface name {name:?}"),
            ));
        }
    }
    if !spec.peer_mac.is_unicast() || spec.peer_mac.0 == [0; 6] {
        return Err(fail(
            OpsErrorKind::Other,
            format!("cannot assign requested address: MAC {}", spec.peer_mac),
        ));
    }
    if !MTU_RANGE.contains(&spec.mtu) {
        return Err(fail(
            OpsErrorKind::Other,
            format!("invalid argument: mtu {}", spec.mtu),
        ));
    }
    Ok(())
}

pub(super) fn delete_link(state: &Arc<Mutex<State>>, link: &str) -> Result<(), OpsError> {
    let _rtnl = rtnl();
    let mut st = lock(state);
    // A peer whose namespace is gone went with it: nothing to delete there.
    let other = st
        .veths
        .get(link)
        .and_then(|end| end.ns.as_ref())
        .and_then(|ns| ns.state.upgrade())
        .filter(|other| !Arc::ptr_eq(other, state));
    st.call(Call::DeleteLink(link.to_owned()), |st| {
        let i = st.find(link)?;
        // rtnetlink cannot delete loopback or a physical device (EOPNOTSUPP).
        if st.links[i].kind.is_none() {
            return Err(fail(
                OpsErrorKind::Other,
                format!("operation not supported: {link} is not a virtual link"),
            ));
        }
        // Deleting either end of a veth deletes the pair (veth_dellink).
        if let Some(end) = st.remove_link_at(i) {
            match (&end.ns, &other) {
                (None, _) => st.remove_veth_peer(&end),
                (Some(_), Some(other)) => lock(other).remove_veth_peer(&end),
                (Some(_), None) => {}
            }
        }
        Ok(())
    })
}

/// `rtnl_group_dellink`: every link of `group` goes, veth peers with them wherever they are;
/// nothing is deleted if one of them cannot be (a link without `kind`: loopback or a
/// physical device). An empty group is `Ok` here (the kernel's `ENODEV`, which
/// [`AttachOps::delete_group`](netcore::ops::AttachOps::delete_group) turns into success).
pub(super) fn delete_group(state: &Arc<Mutex<State>>, group: u32) -> Result<(), OpsError> {
    let _rtnl = rtnl();
    let mut st = lock(state);
    st.call(Call::DeleteGroup(group), |st| {
        if group == 0 {
            return Err(fail(
                OpsErrorKind::Other,
                "operation not permitted: group 0 is every link's",
            ));
        }
        let members: Vec<String> = st
            .groups
            .iter()
            .filter(|(_, g)| **g == group)
            .map(|(name, _)| name.clone())
            .collect();
        if let Some(fixed) = members.iter().find(|name| {
            st.links
                .iter()
                .any(|l| l.name == **name && l.kind.is_none())
        }) {
            return Err(fail(
                OpsErrorKind::Other,
                format!("operation not supported: {fixed} (group {group}) is not a virtual link"),
            ));
        }
        for name in members {
            // A peer deleted with an earlier member (both ends in the group) is gone already.
            let Ok(i) = st.find(&name) else { continue };
            let Some(end) = st.remove_link_at(i) else {
                continue;
            };
            let other = end
                .ns
                .as_ref()
                .and_then(|ns| ns.state.upgrade())
                .filter(|other| !Arc::ptr_eq(other, state));
            match (&end.ns, other) {
                (None, _) => st.remove_veth_peer(&end),
                // One other namespace locked at a time, under RTNL (see module docs).
                (Some(_), Some(other)) => lock(&other).remove_veth_peer(&end),
                (Some(_), None) => {}
            }
        }
        Ok(())
    })
}

impl State {
    /// `do_setlink` with `IFLA_MASTER` 0, `IFF_UP` cleared and `IFLA_GROUP`: off its bridge
    /// (re-tuning the bridge's MTU), down (its routes flushed, as `set_down`), in `group`.
    pub(super) fn retire_link(&mut self, link: &str, group: u32) -> Result<(), OpsError> {
        self.call(Call::RetireLink(link.to_owned(), group), |st| {
            let i = st.find(link)?;
            if let Some(port) = st.ports.remove(link) {
                st.bridge_mtu_auto_adjust(&port.master);
            }
            st.links[i].up = false;
            let index = st.links[i].index;
            st.static_routes.retain(|r| r.oif != Some(index));
            if group == 0 {
                st.groups.remove(link);
            } else {
                st.groups.insert(link.to_owned(), group);
            }
            Ok(())
        })
    }

    /// Adds a down veth end with no address and returns its index. Without a MAC it gets a
    /// fake one (the kernel's is random).
    fn add_veth_end(&mut self, name: &str, mac: Option<MacAddr>, mtu: u32) -> u32 {
        let index = self.next_index;
        self.insert_link(LinkInfo {
            name: name.to_owned(),
            index,
            kind: Some("veth".to_owned()),
            mac: Some(mac.unwrap_or_else(|| fake_mac(index))),
            mtu,
            up: false,
            addrs: Vec::new(),
        });
        index
    }

    /// Removes the peer `end` points to, if it is still there.
    fn remove_veth_peer(&mut self, end: &VethEnd) {
        if let Some(i) = self
            .links
            .iter()
            .position(|l| l.name == end.peer && l.index == end.peer_index)
        {
            // Its own record points back at the end already gone.
            let _ = self.remove_link_at(i);
        }
    }

    /// `br_mtu_auto_adjust`: unless its MTU was set by the user, a bridge takes the smallest
    /// MTU of its ports, or 1500 without ports (Linux >= 4.17; before, it always did). So a
    /// bridge created with a big MTU drops to 1500 when its last port leaves.
    pub(super) fn bridge_mtu_auto_adjust(&mut self, bridge: &str) {
        if self.mtu_set_by_user.contains(bridge) {
            return;
        }
        let min = self
            .ports
            .iter()
            .filter(|(_, p)| p.master == bridge)
            .filter_map(|(name, _)| self.links.iter().find(|l| l.name == *name))
            .map(|l| l.mtu)
            .min()
            .unwrap_or(DEFAULT_MTU);
        if let Some(br) = self.links.iter_mut().find(|l| l.name == bridge) {
            br.mtu = min;
        }
    }

    pub(super) fn set_master(&mut self, link: &str, master: &str) -> Result<(), OpsError> {
        self.call(Call::SetMaster(link.to_owned(), master.to_owned()), |st| {
            let i = st.find(link)?;
            let m = st.find(master)?;
            // Only a bridge has ndo_add_slave among the links the fake knows.
            if st.links[m].kind.as_deref() != Some("bridge") {
                return Err(fail(
                    OpsErrorKind::Other,
                    format!("operation not supported: {master} is not a bridge"),
                ));
            }
            // br_add_if: a bridge (itself included) cannot be a port (ELOOP), nor can
            // loopback (EINVAL).
            if st.links[i].kind.as_deref() == Some("bridge") {
                return Err(fail(
                    OpsErrorKind::Other,
                    format!("too many levels of symbolic links: {link} is a bridge"),
                ));
            }
            if link == "lo" {
                return Err(fail(
                    OpsErrorKind::Other,
                    "invalid argument: loopback cannot be a bridge port",
                ));
            }
            if st.ports.get(link).is_some_and(|p| p.master == master) {
                // do_set_master: already there, nothing to do.
                return Ok(());
            }
            // A port of another bridge leaves it first (a new port starts without hairpin).
            let old = st.ports.insert(
                link.to_owned(),
                Port {
                    master: master.to_owned(),
                    hairpin: false,
                },
            );
            if let Some(old) = old {
                st.bridge_mtu_auto_adjust(&old.master);
            }
            st.bridge_mtu_auto_adjust(master);
            Ok(())
        })
    }

    pub(super) fn set_hairpin(&mut self, link: &str, on: bool) -> Result<(), OpsError> {
        self.call(Call::SetHairpin(link.to_owned(), on), |st| {
            st.find(link)?;
            let port = st.ports.get_mut(link).ok_or_else(|| {
                fail(
                    OpsErrorKind::Other,
                    format!("operation not supported: {link} is not a bridge port"),
                )
            })?;
            port.hairpin = on;
            Ok(())
        })
    }

    /// `ip link set LINK addrgenmode none`: recorded on the link (the snapshot's
    /// `ipv6_autoconf_off`), until the link goes. The kernel takes it on a link that is up as
    /// well (where it only keeps a future link-local address away), so the fake does too.
    pub(super) fn set_ipv6_autoconf_off(&mut self, link: &str) -> Result<(), OpsError> {
        self.call(Call::SetIpv6AutoconfOff(link.to_owned()), |st| {
            st.find(link)?;
            st.ipv6_autoconf_off.insert(link.to_owned());
            Ok(())
        })
    }

    /// `sysctl net.ipv6.conf.LINK.disable_ipv6=1`: the link's key in the sysctl model (which
    /// every link has, as a kernel with IPv6 gives it), until the link goes.
    pub(super) fn disable_ipv6(&mut self, link: &str) -> Result<(), OpsError> {
        self.call(Call::DisableIpv6(link.to_owned()), |st| {
            st.find(link)?;
            let key = format!("net/ipv6/conf/{link}/disable_ipv6");
            st.sysctls.insert(key, "1".to_owned());
            Ok(())
        })
    }

    /// `ip route add` (`NLM_F_CREATE | NLM_F_EXCL`) into the main table.
    pub(super) fn add_route(&mut self, route: &RouteV4) -> Result<(), OpsError> {
        self.call(Call::AddRoute(*route), |st| {
            let what = route
                .dst
                .map_or_else(|| "default".to_owned(), |d| d.to_string());
            if let Some(dst) = route.dst.filter(|d| *d != d.trunc()) {
                return Err(fail(
                    OpsErrorKind::Other,
                    format!("invalid argument: {dst} has host bits set"),
                ));
            }
            if let Some(oif) = route.oif {
                let dev = st.links.iter().find(|l| l.index == oif).ok_or_else(|| {
                    fail(
                        OpsErrorKind::NotFound,
                        format!("no such device: index {oif}"),
                    )
                })?;
                if !dev.up {
                    return Err(fail(
                        OpsErrorKind::Other,
                        format!("Network is down: {} is down", dev.name),
                    ));
                }
            }
            let oif = match (route.gateway, route.oif) {
                (Some(gw), oif) => st.connected_oif(gw, oif).ok_or_else(|| {
                    fail(
                        OpsErrorKind::Other,
                        format!("Network is unreachable: no connected route to gateway {gw}"),
                    )
                })?,
                (None, Some(oif)) => oif,
                (None, None) => {
                    return Err(fail(
                        OpsErrorKind::NotFound,
                        format!("no such device: route {what} has neither gateway nor device"),
                    ));
                }
            };
            // Same destination, same (default) metric: EEXIST, whatever the gateway.
            if st.routes().iter().any(|r| r.dst == route.dst) {
                return Err(fail(
                    OpsErrorKind::AlreadyExists,
                    format!("file exists: route {what}"),
                ));
            }
            st.static_routes.push(RouteV4 {
                dst: route.dst,
                gateway: route.gateway,
                oif: Some(oif),
            });
            Ok(())
        })
    }

    /// The link through which `gw` is directly reachable: the most specific route without a
    /// gateway through an up link (`fib_check_nh_v4_gw` looks the gateway up among link-scope
    /// routes), restricted to `oif` if given.
    fn connected_oif(&self, gw: Ipv4Addr, oif: Option<u32>) -> Option<u32> {
        self.routes()
            .into_iter()
            .filter(|r| r.gateway.is_none())
            .filter(|r| r.dst.is_none_or(|d| d.contains(&gw)))
            .filter_map(|r| Some((r.dst.map_or(0, |d| d.prefix_len()), r.oif?)))
            .filter(|(_, i)| oif.is_none_or(|o| o == *i))
            .filter(|(_, i)| self.links.iter().any(|l| l.index == *i && l.up))
            .max_by_key(|(len, _)| *len)
            .map(|(_, i)| i)
    }
}
