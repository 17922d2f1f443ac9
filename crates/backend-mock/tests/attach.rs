//! netcore's attach (a container's namespace plugged into the bridge) against a fake host
//! namespace and a fake container namespace: the exact calls on each side, the end state,
//! hairpin mode, rollback at every failure point on either side, and retry.

use std::path::PathBuf;

use backend_mock::{Call, FakeHost, INIT_NETNS, InjectedFault, Op, Snapshot, VethPeer};
use ipnet::Ipv4Net;
use netcore::attach::{self, AttachError, AttachRequest, AttachStep};
use netcore::handlers::Interface;
use netcore::mac::{MacAddr, container_mac};
use netcore::ops::{LinkOps, RouteV4, VethSpec};

const NETNS: &str = "/proc/4242/ns/net";
const CONTAINER_ID: &str = "4f1c2b7e9d0a6c3b8e5f";

fn net(s: &str) -> Ipv4Net {
    s.parse().expect("valid CIDR in test")
}

/// A host with an uplink and a running docker0, and a fresh container namespace registered
/// under [`NETNS`].
fn world() -> (FakeHost, FakeHost) {
    world_with(FakeHost::new_netns())
}

fn world_with(ctr: FakeHost) -> (FakeHost, FakeHost) {
    let host = FakeHost::new()
        .with_device("eth0", &[net("10.0.2.15/24")])
        .with_bridge("docker0", net("172.17.0.1/16"))
        .with_netns(NETNS, ctr.clone());
    (host, ctr)
}

/// The interface the handlers would allocate for the first container.
fn interface() -> Interface {
    let ip = "172.17.0.2".parse().expect("IPv4");
    Interface {
        ip,
        prefix_len: 16,
        mask: "255.255.0.0".parse().expect("IPv4"),
        gateway: "172.17.0.1".parse().expect("IPv4"),
        bridge: "docker0".to_owned(),
        mac: container_mac(ip),
    }
}

fn request(hairpin: bool) -> AttachRequest {
    AttachRequest::for_interface(
        &interface(),
        attach::host_veth_name(CONTAINER_ID, 0),
        PathBuf::from(NETNS),
        "eth0".to_owned(),
        1500,
        hairpin,
    )
}

fn run(req: &AttachRequest, host: &FakeHost, ctr: &FakeHost) -> Result<(), AttachError> {
    let (mut h, mut c) = (host.clone(), ctr.clone());
    attach::apply(&attach::plan(req), &mut h, &mut c)
}

fn is_host_step(step: &AttachStep) -> bool {
    matches!(
        step,
        AttachStep::CreateVeth(_)
            | AttachStep::HostIpv6Off { .. }
            | AttachStep::SetMaster { .. }
            | AttachStep::SetHairpin { .. }
            | AttachStep::HostUp { .. }
    )
}

// ---------------------------------------------------------------------------------------
// Calls

#[test]
fn a_clean_attach_makes_exactly_these_calls_on_each_side() {
    for hairpin in [false, true] {
        let (host, ctr) = world();
        let req = request(hairpin);
        run(&req, &host, &ctr).expect("attach");

        let veth = req.host_veth.clone();
        let mut host_calls = vec![
            Call::CreateVeth(VethSpec {
                host: veth.clone(),
                peer: "eth0".to_owned(),
                peer_netns: PathBuf::from(NETNS),
                peer_mac: interface().mac,
                mtu: 1500,
            }),
            Call::DisableIpv6(veth.clone()),
            Call::SetMaster(veth.clone(), "docker0".to_owned()),
        ];
        if hairpin {
            host_calls.push(Call::SetHairpin(veth.clone(), true));
        }
        host_calls.push(Call::SetUp(veth.clone()));
        assert_eq!(host.calls(), host_calls, "hairpin={hairpin}");

        assert_eq!(
            ctr.calls(),
            vec![
                Call::SetUp("lo".to_owned()),
                Call::SetIpv6AutoconfOff("eth0".to_owned()),
                Call::AddAddr("eth0".to_owned(), net("172.17.0.2/16")),
                Call::SetUp("eth0".to_owned()),
                Call::AddRoute(RouteV4 {
                    dst: None,
                    gateway: Some("172.17.0.1".parse().expect("IPv4")),
                    oif: None,
                }),
            ],
            "hairpin={hairpin}"
        );
        // Nothing is read: attach decides from the request alone.
        assert!(
            host.calls()
                .iter()
                .chain(&ctr.calls())
                .all(Call::is_mutating)
        );
    }
}

// ---------------------------------------------------------------------------------------
// End state

/// Everything a successful attach of `req` leaves, checked on both sides. Indexes are read
/// from the namespaces, so this holds after a retry too (the retried veth has new indexes).
fn assert_attached(req: &AttachRequest, host: &FakeHost, ctr: &FakeHost) {
    let veth = host.link(&req.host_veth).expect("host end exists");
    assert_eq!(veth.kind.as_deref(), Some("veth"));
    assert!(veth.up, "host end is up");
    assert_eq!(veth.mtu, req.mtu);
    assert!(veth.addrs.is_empty(), "the host end has no address");
    assert_eq!(
        host.sysctl(&format!("net/ipv6/conf/{}/disable_ipv6", req.host_veth))
            .as_deref(),
        Some("1"),
        "no IPv6 at all on the host end"
    );
    assert_eq!(host.master(&req.host_veth).as_deref(), Some("docker0"));
    assert_eq!(host.hairpin(&req.host_veth), req.hairpin);
    assert_eq!(
        host.peer(&req.host_veth),
        Some(VethPeer {
            name: req.ifname.clone(),
            netns: Some(PathBuf::from(NETNS)),
        })
    );
    // The bridge is untouched but for its new port.
    let br = host.link("docker0").expect("docker0");
    assert!(br.up);
    assert_eq!(br.addrs, vec![net("172.17.0.1/16")]);

    let eth0 = ctr.link(&req.ifname).expect("container end exists");
    assert_eq!(eth0.kind.as_deref(), Some("veth"));
    assert!(eth0.up, "container end is up");
    assert_eq!(eth0.mac, Some(req.mac));
    assert_eq!(eth0.mtu, req.mtu);
    assert_eq!(
        eth0.addrs,
        vec![Ipv4Net::new(req.ip, req.prefix_len).expect("prefix")]
    );
    assert_eq!(
        ctr.peer(&req.ifname),
        Some(VethPeer {
            name: req.host_veth.clone(),
            netns: Some(PathBuf::from(INIT_NETNS)),
        })
    );
    assert!(
        ctr.ipv6_autoconf_off(&req.ifname),
        "no IPv6 autoconfiguration on the container end"
    );
    let lo = ctr.link("lo").expect("lo");
    assert!(lo.up, "lo is up");
    assert!(!ctr.ipv6_autoconf_off("lo"), "lo keeps its IPv6 (::1)");
    assert_eq!(lo.addrs, vec![net("127.0.0.1/8")]);
    assert_eq!(
        ctr.routes(),
        vec![
            RouteV4 {
                dst: None,
                gateway: Some(req.gateway),
                oif: Some(eth0.index),
            },
            RouteV4 {
                dst: Some(
                    Ipv4Net::new(req.ip, req.prefix_len)
                        .expect("prefix")
                        .trunc()
                ),
                gateway: None,
                oif: Some(eth0.index),
            },
        ]
    );
    let names: Vec<_> = ctr.snapshot().links.into_iter().map(|l| l.name).collect();
    assert_eq!(names, ["lo", req.ifname.as_str()]);
    // The snapshots show it too: IPv6 off on the host end (and on nothing else of the host's),
    // autoconfiguration off on the container end only.
    let host_snap = host.snapshot();
    let v6_off: Vec<&str> = host_snap
        .sysctls
        .iter()
        .filter(|(k, v)| {
            k.starts_with("net/ipv6/conf/") && k.ends_with("/disable_ipv6") && *v == "1"
        })
        .map(|(k, _)| k.as_str())
        .collect();
    let own = format!("net/ipv6/conf/{}/disable_ipv6", req.host_veth);
    assert!(v6_off.contains(&own.as_str()), "{v6_off:?}");
    for key in v6_off {
        let link = key
            .split('/')
            .nth(3)
            .expect("net/ipv6/conf/LINK/disable_ipv6");
        assert_eq!(
            host.link(link).and_then(|l| l.kind).as_deref(),
            Some("veth"),
            "IPv6 off only on host veths: {key}"
        );
    }
    assert!(host_snap.ipv6_autoconf_off.is_empty());
    assert_eq!(
        ctr.snapshot().ipv6_autoconf_off,
        std::collections::BTreeSet::from([req.ifname.clone()])
    );
}

#[test]
fn after_attach_the_veth_is_on_the_bridge_and_the_container_is_configured() {
    let (host, ctr) = world();
    let host_routes = host.routes();
    let req = request(false);
    run(&req, &host, &ctr).expect("attach");
    assert_attached(&req, &host, &ctr);
    // The host end has no address, so the host's routing table is unchanged.
    assert_eq!(host.routes(), host_routes);
}

#[test]
fn hairpin_mode_is_set_only_when_requested() {
    let (host, ctr) = world();
    let req = request(false);
    run(&req, &host, &ctr).expect("attach");
    assert!(!host.hairpin(&req.host_veth));
    assert!(host.snapshot().hairpin.is_empty());

    let (host, ctr) = world();
    let req = request(true);
    run(&req, &host, &ctr).expect("attach");
    assert!(host.hairpin(&req.host_veth));
    assert_eq!(
        host.snapshot().hairpin,
        std::collections::BTreeSet::from([req.host_veth.clone()])
    );
    assert_attached(&req, &host, &ctr);
}

#[test]
fn the_container_mtu_from_the_default_route_reaches_both_ends_and_the_bridge() {
    // A cloud host: the uplink has jumbo frames and carries the default route.
    let ctr = FakeHost::new_netns();
    let uplink = netcore::ops::LinkInfo {
        name: "ens5".to_owned(),
        index: 2,
        kind: None,
        mac: Some(MacAddr([0x02, 0, 0, 0, 0, 2])),
        mtu: 9001,
        up: true,
        addrs: vec![net("10.0.2.15/24")],
    };
    let host = FakeHost::new()
        .with_link(uplink)
        .with_route_v4(RouteV4 {
            dst: None,
            gateway: Some("10.0.2.1".parse().expect("IPv4")),
            oif: Some(2),
        })
        .with_bridge("docker0", net("172.17.0.1/16"))
        .with_netns(NETNS, ctr.clone());
    let before = (host.snapshot(), ctr.snapshot());

    let (mut h, _, _) = host.ops();
    let mtu = attach::container_mtu(
        None,
        &h.links().expect("links"),
        &h.routes_v4().expect("routes"),
    );
    assert_eq!(mtu, 9001);
    let req = AttachRequest {
        mtu,
        ..request(false)
    };
    run(&req, &host, &ctr).expect("attach");
    assert_attached(&req, &host, &ctr);
    // The kernel tunes a bridge whose MTU nobody set to its smallest port's.
    assert_eq!(host.link("docker0").map(|l| l.mtu), Some(9001));

    // Detaching (deleting the veth from either side) gives docker0 its 1500 back.
    let mut c = ctr.clone();
    c.delete_link("eth0").expect("delete the container end");
    assert!(host.link(&req.host_veth).is_none(), "the host end went too");
    assert_eq!(host.link("docker0").map(|l| l.mtu), Some(1500));
    assert_eq!(host.snapshot(), before.0);
    let after_ctr = ctr.snapshot();
    assert_eq!(after_ctr.links.len(), 1, "only lo is left");
    assert!(after_ctr.routes.is_empty() && after_ctr.peers.is_empty());
}

// ---------------------------------------------------------------------------------------
// Rollback and retry

/// What went wrong, checked: the step the error names, the operation and that it was the
/// injected fault.
fn assert_failed_at(err: &AttachError, step: &AttachStep, call: &Call) {
    assert_eq!(err.step, step.to_string());
    assert!(
        err.to_string().starts_with(&step.to_string()),
        "error does not start with the step: {err}"
    );
    assert_eq!(err.source.op, call.to_string());
    assert!(
        err.source.source.downcast_ref::<InjectedFault>().is_some(),
        "not the injected fault: {err}"
    );
    assert!(err.cleanup.is_none(), "cleanup failed: {err}");
}

/// Fails each mutating call of one side in turn on a fresh pair of namespaces; `expected`
/// gives, for the failing step's index in the plan, what each side must look like after.
fn rollback_at_every_step(
    new_ctr: fn() -> FakeHost,
    hairpin: bool,
    expected: impl Fn(usize, &Snapshot, &Snapshot) -> (Snapshot, Snapshot),
) {
    let req = request(hairpin);
    let steps = attach::plan(&req);
    let (clean_host, clean_ctr) = world_with(new_ctr());
    run(&req, &clean_host, &clean_ctr).expect("clean run");

    for fail_host in [true, false] {
        let clean = if fail_host { &clean_host } else { &clean_ctr };
        let side_steps: Vec<(usize, &AttachStep)> = steps
            .iter()
            .enumerate()
            .filter(|(_, s)| is_host_step(s) == fail_host)
            .collect();
        let mutations = clean.mutations();
        assert_eq!(mutations.len(), side_steps.len(), "one call per step");

        for (n, ((k, step), call)) in side_steps.iter().zip(&mutations).enumerate() {
            let (host, ctr) = world_with(new_ctr());
            let before = (host.snapshot(), ctr.snapshot());
            if fail_host {
                host.fail_nth_mutation(n + 1);
            } else {
                ctr.fail_nth_mutation(n + 1);
            }
            let err = run(&req, &host, &ctr).expect_err("the armed fault fails attach");
            assert_failed_at(&err, step, call);
            assert_eq!(host.pending_faults() + ctr.pending_faults(), 0);

            let (want_host, want_ctr) = expected(*k, &before.0, &before.1);
            assert_eq!(host.snapshot(), want_host, "host after failing at {step}");
            assert_eq!(
                ctr.snapshot(),
                want_ctr,
                "container after failing at {step}"
            );
            // Rollback deletes one link, the host end (its peer goes with it), and only
            // if it was created.
            let deletes: Vec<_> = host
                .mutations()
                .into_iter()
                .filter(|c| c.op() == Op::DeleteLink)
                .collect();
            let want_deletes = if *k == 0 {
                vec![]
            } else {
                vec![Call::DeleteLink(req.host_veth.clone())]
            };
            assert_eq!(deletes, want_deletes, "after failing at {step}");

            // The fault was one-shot: the same attach now succeeds.
            run(&req, &host, &ctr).expect("retry after a failure");
            assert_attached(&req, &host, &ctr);
        }
    }
}

#[test]
fn a_failure_at_any_step_leaves_both_namespaces_as_they_were() {
    // A container namespace whose lo is already up (as `FakeHost::new` has it): rollback
    // must restore everything, exactly.
    for hairpin in [false, true] {
        rollback_at_every_step(FakeHost::new, hairpin, |_, host, ctr| {
            (host.clone(), ctr.clone())
        });
    }
}

#[test]
fn in_a_fresh_namespace_a_failure_after_lo_up_leaves_only_lo_up() {
    // attach does not take lo down again: bringing lo up is harmless and any container
    // wants it. Everything else goes; the host is exactly as before.
    let steps = attach::plan(&request(false));
    let lo_up = steps
        .iter()
        .position(|s| *s == AttachStep::CtrUp { link: "lo".into() })
        .expect("the plan brings lo up");
    let fresh_with_lo_up = {
        let mut ns = FakeHost::new_netns();
        ns.set_up("lo").expect("lo up");
        ns.snapshot()
    };
    assert_ne!(fresh_with_lo_up, FakeHost::new_netns().snapshot());
    rollback_at_every_step(FakeHost::new_netns, false, |k, host, ctr| {
        let ctr = if k > lo_up {
            fresh_with_lo_up.clone()
        } else {
            ctr.clone()
        };
        (host.clone(), ctr)
    });
}

#[test]
fn a_failed_cleanup_is_reported_and_the_caller_can_finish_it() {
    let (host, ctr) = world();
    let req = request(false);
    host.fail_nth(Op::SetUp, 1);
    host.fail_nth(Op::DeleteLink, 1);
    let err = run(&req, &host, &ctr).expect_err("set up fails");
    assert_eq!(err.step, format!("bring {} up", req.host_veth));
    let cleanup = err.cleanup.as_deref().expect("cleanup failed too");
    assert!(cleanup.contains(&req.host_veth), "{cleanup}");
    assert!(err.to_string().contains("cleanup failed too"), "{err}");
    // The pair is still there, on both sides.
    assert!(host.link(&req.host_veth).is_some());
    assert!(ctr.link("eth0").is_some());

    // Deleting the host end by hand removes both ends; then attach works.
    let mut h = host.clone();
    h.delete_link(&req.host_veth).expect("delete");
    assert!(ctr.link("eth0").is_none());
    run(&req, &host, &ctr).expect("attach after cleanup");
    assert_attached(&req, &host, &ctr);
}

#[test]
fn a_missing_container_namespace_fails_the_first_step_and_changes_nothing() {
    let (host, ctr) = world();
    let before = (host.snapshot(), ctr.snapshot());
    let req = AttachRequest {
        netns: PathBuf::from("/proc/9999/ns/net"),
        ..request(false)
    };
    let err = run(&req, &host, &ctr).expect_err("no such namespace");
    assert_eq!(err.step, attach::plan(&req)[0].to_string());
    assert!(err.to_string().contains("/proc/9999/ns/net"), "{err}");
    assert_eq!(err.source.kind, netcore::ops::OpsErrorKind::NotFound);
    assert_eq!((host.snapshot(), ctr.snapshot()), before);
    assert!(ctr.calls().is_empty());
}

#[test]
fn a_second_container_gets_its_own_veth_on_the_same_bridge() {
    let (host, ctr) = world();
    let first = request(false);
    run(&first, &host, &ctr).expect("first attach");

    let ctr2 = FakeHost::new_netns();
    let host = host.with_netns("/run/netns/c2", ctr2.clone());
    let ip = "172.17.0.3".parse().expect("IPv4");
    let second = AttachRequest {
        host_veth: attach::host_veth_name("another-container", 0),
        netns: PathBuf::from("/run/netns/c2"),
        ip,
        mac: container_mac(ip),
        ..request(false)
    };
    assert_ne!(second.host_veth, first.host_veth);
    run(&second, &host, &ctr2).expect("second attach");
    assert_eq!(host.master(&second.host_veth).as_deref(), Some("docker0"));
    assert_eq!(
        ctr2.link("eth0").map(|l| l.addrs),
        Some(vec![net("172.17.0.3/16")])
    );
    assert_eq!(host.snapshot().masters.len(), 2);
    // The first container is untouched.
    assert_attached(&first, &host, &ctr);
}
