//! Test doubles for netcore's host traits ([`LinkOps`](netcore::ops::LinkOps),
//! [`FirewallOps`](netcore::ops::FirewallOps), [`SysctlOps`](netcore::ops::SysctlOps),
//! [`AttachOps`](netcore::ops::AttachOps)).
//!
//! Two kinds, for two kinds of test:
//!
//! - **mockall mocks** ([`MockLinkOps`], [`MockFirewallOps`], [`MockSysctlOps`]) when the test
//!   is about the exact calls: "reads ip_forward once and never writes it".
//! - **[`FakeHost`]**, an in-memory host that behaves like the kernel, when the test is about
//!   the outcome: "after init the host has docker0 with these rules", "after a failure at any
//!   step, the host is exactly as before", "running init twice changes nothing".
//!
//! # FakeHost in short
//!
//! - **State**: links ([`LinkInfo`](netcore::ops::LinkInfo)), the IPv4 main routing table, the
//!   iptables `filter` and `nat` tables, and sysctls. [`FakeHost::new`] is a fresh machine:
//!   `lo` only, empty tables with ACCEPT policies, `net/ipv4/ip_forward = 0`.
//! - **Kernel rules**: an existing name gives `AlreadyExists`, an unknown link or key
//!   `NotFound`; names of 16 bytes or more are refused; an address's prefix route is in the
//!   main table while its link is up (so after `add_addr` + `set_up`), and goes with the
//!   address or the link. Firewall batches are `iptables-restore --noflush` bodies, applied
//!   all or nothing; rules are stored in `iptables-save`'s canonical form (see [`iptables`]).
//! - **Namespaces and containers**: each `FakeHost` is one network namespace.
//!   [`FakeHost::new_netns`] is a container's (`lo` down, no address until it is up), and
//!   [`FakeHost::with_netns`] registers one under a path so that `create_veth` puts the peer
//!   there. Deleting either end of a veth deletes both, across namespaces. `retire_link`
//!   takes a link off its bridge, down and into a device group; `delete_group` deletes every
//!   link of a group (veth peers with them) and refuses groups holding loopback or a device. `set_master` makes
//!   bridge ports (a bridge's MTU follows its ports' unless `set_mtu` set it, as in the kernel);
//!   `add_route` needs the gateway on a connected network ("Network is unreachable").
//! - **Recording**: every trait call is logged as a [`Call`] ([`FakeHost::calls`],
//!   [`FakeHost::mutations`], [`FakeHost::history`], [`FakeHost::clear_calls`]).
//! - **Faults**: [`FakeHost::fail_nth`] fails the nth call of one [`Op`],
//!   [`FakeHost::fail_nth_mutation`] the nth call that could change the host; a failed call
//!   changes nothing.
//! - **Snapshots**: [`FakeHost::snapshot`] is the whole state of one namespace as a comparable
//!   value, bridge ports, hairpin flags, veth peers and the links with IPv6 autoconfiguration
//!   off (`set_ipv6_autoconf_off`, also [`FakeHost::ipv6_autoconf_off`]) included.
//!
//! The host is a cheap handle (clones share the state). Code that takes three `&mut impl`
//! trait objects at once gets one handle per trait from [`FakeHost::ops`].
//!
//! # Example: a step sequence that must roll back at every failure point
//!
//! ```
//! use backend_mock::{Call, FakeHost, Op};
//! use netcore::firewall::{Batch, Table};
//! use netcore::mac::MacAddr;
//! use netcore::ops::{BridgeSpec, FirewallOps, LinkOps, OpsError, SysctlOps, IP_FORWARD};
//!
//! const MASQ: &str = "POSTROUTING -s 172.17.42.1/16 ! -o docker0 -j MASQUERADE";
//!
//! fn nat(line: String) -> Batch {
//!     Batch { table: Table::Nat, lines: vec![line] }
//! }
//!
//! // Stand-in for the code under test: create a bridge, address it, add a rule, forward;
//! // on failure, undo what was done.
//! fn setup(
//!     link: &mut impl LinkOps,
//!     fw: &mut impl FirewallOps,
//!     sys: &mut impl SysctlOps,
//! ) -> Result<(), OpsError> {
//!     let spec = BridgeSpec {
//!         name: "docker0".into(),
//!         mac: MacAddr([0x02, 0x42, 0, 0, 0, 1]),
//!         mtu: None,
//!         mcast_snooping: true,
//!     };
//!     link.create_bridge(&spec)?;
//!     let mut rest = || -> Result<(), OpsError> {
//!         link.add_addr("docker0", "172.17.42.1/16".parse().expect("valid CIDR"))?;
//!         link.set_up("docker0")?;
//!         fw.apply(&nat(format!("-A {MASQ}")))?;
//!         if let Err(e) = sys.write(IP_FORWARD, "1") {
//!             let _ = fw.apply(&nat(format!("-D {MASQ}")));
//!             return Err(e);
//!         }
//!         Ok(())
//!     };
//!     rest().inspect_err(|_| {
//!         // Deleting the bridge takes its address and route with it.
//!         let _ = link.delete_link("docker0");
//!     })
//! }
//!
//! // One clean run tells how many mutating steps there are.
//! let host = FakeHost::new();
//! let (mut link, mut fw, mut sys) = host.ops();
//! setup(&mut link, &mut fw, &mut sys).unwrap();
//! assert_eq!(host.link("docker0").map(|l| l.up), Some(true));
//! assert!(host.rules(Table::Nat).contains("-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE"));
//! let steps = host.mutations().len();
//! assert_eq!(steps, 5);
//!
//! // Then fail each step in turn on a fresh host: each time, nothing may be left behind.
//! for n in 1..=steps {
//!     let host = FakeHost::new();
//!     let before = host.snapshot();
//!     host.fail_nth_mutation(n);
//!     let (mut link, mut fw, mut sys) = host.ops();
//!     assert!(setup(&mut link, &mut fw, &mut sys).is_err());
//!     assert_eq!(host.snapshot(), before, "failure at step {n} left changes behind");
//! }
//!
//! // The log shows what happened, e.g. that the bridge was created first.
//! assert!(matches!(host.calls().first(), Some(Call::CreateBridge(spec)) if spec.name == "docker0"));
//!
//! // A single operation can be failed too: here the second `set_up` from now.
//! host.fail_nth(Op::SetUp, 2);
//! ```

// Tests may unwrap: a panic is how they fail (the project's rule bans it outside tests only).
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod host;
pub mod iptables;
mod mocks;
mod record;

pub use host::{FakeFirewall, FakeHost, FakeLink, FakeSysctl, INIT_NETNS, Snapshot, VethPeer};
pub use iptables::{FwTable, RestoreError, RestoreErrorReason, Rule, SaveTextError};
pub use mocks::{MockFirewallOps, MockLinkOps, MockSysctlOps};
pub use record::{Call, CallRecord, InjectedFault, Op};
