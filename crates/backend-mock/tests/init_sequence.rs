//! netcore's init sequence against the fake host and the mocks: every branch of Docker's
//! `InitDriver` (reference §2), the exact calls in order, rollback at every failure point,
//! idempotence, and teardown.

use backend_mock::{Call, FakeHost, MockFirewallOps, MockLinkOps, MockSysctlOps, Op};
use ipnet::Ipv4Net;
use netcore::config::{Config, NetworkMode, RawConfig};
use netcore::firewall::{BridgeFirewall, Table};
use netcore::init::{self, HostFacts, InitError, Plan};
use netcore::ops::{IP_FORWARD, OpsErrorKind};
use netcore::teardown::{self, InitRecord};

const RANDOM: [u8; 6] = [0x13, 0x57, 0x9b, 0xdf, 0x24, 0x68];

fn net(s: &str) -> Ipv4Net {
    s.parse().expect("valid CIDR in test")
}

fn config(raw: RawConfig) -> Config {
    match raw.validate().expect("valid config in test") {
        NetworkMode::Bridge(c) => c,
        NetworkMode::Disabled => panic!("networking disabled"),
    }
}

fn default_config() -> Config {
    config(RawConfig::default())
}

fn plan_on(host: &FakeHost, cfg: &Config, resolv: &str) -> Result<Plan, InitError> {
    let (mut link, mut fw, mut sys) = host.ops();
    let facts = HostFacts::gather(cfg, resolv, &mut link, &mut fw, &mut sys)?;
    init::plan(cfg, &facts, RANDOM)
}

/// gather + plan + apply, as `dockerd-net init` does.
fn run_init(host: &FakeHost, cfg: &Config, resolv: &str) -> Result<init::Applied, InitError> {
    let plan = plan_on(host, cfg, resolv)?;
    let (mut link, mut fw, mut sys) = host.ops();
    init::apply(&plan, &mut link, &mut fw, &mut sys)
}

/// A bridge that exists but is down (as after a reboot with a persisted netdev config).
fn down_bridge(name: &str, addrs: &[&str]) -> FakeHost {
    FakeHost::new().with_link(netcore::ops::LinkInfo {
        name: name.into(),
        index: 7,
        kind: Some("bridge".into()),
        mac: Some(netcore::mac::MacAddr([0x02, 0, 0, 0, 0, 7])),
        mtu: 1500,
        up: false,
        addrs: addrs.iter().map(|a| net(a)).collect(),
    })
}

fn calls(host: &FakeHost) -> Vec<String> {
    host.calls().iter().map(ToString::to_string).collect()
}

const READS: [&str; 5] = [
    "list links",
    "list routes",
    "read sysctl net/ipv4/ip_forward",
    "iptables-save -t filter",
    "iptables-save -t nat",
];

fn with_reads(rest: &[&str]) -> Vec<String> {
    READS.iter().chain(rest).map(|s| (*s).to_owned()).collect()
}

// ---------------------------------------------------------------------------------------
// Branches, exact calls

#[test]
fn docker0_missing_is_created_in_dockers_order() {
    let host = FakeHost::new();
    let applied = run_init(&host, &default_config(), "").expect("init");
    assert_eq!(
        calls(&host),
        with_reads(&[
            "create bridge docker0",
            "add address 172.17.42.1/16 to docker0",
            "set docker0 up",
            "iptables-restore --noflush -t nat",
            "iptables-restore --noflush -t filter",
            "write 1 to sysctl net/ipv4/ip_forward",
            "iptables -t filter -P FORWARD DROP",
        ])
    );
    assert!(applied.warnings.is_empty());
    let br = host.link("docker0").expect("docker0 made");
    assert!(br.up);
    assert_eq!(br.addrs, vec![net("172.17.42.1/16")]);
    let mac = br.mac.expect("bridge MAC set");
    assert!(mac.is_unicast() && mac.is_local(), "{mac}");
    // The MAC is set at creation, whatever the kernel version (libnetwork#421).
    match &host.calls()[5] {
        Call::CreateBridge(spec) => {
            assert_eq!(spec.mac, mac);
            assert!(!spec.mcast_snooping, "multicast snooping off by default");
        }
        other => panic!("expected create bridge, got {other}"),
    }
    assert!(
        host.rules(Table::Nat)
            .contains("-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE")
    );
    assert_eq!(host.sysctl(IP_FORWARD).as_deref(), Some("1"));
}

/// `--bridge-mcast-snooping=true` keeps the kernel's default on the bridge init creates; the
/// plan says which (off by default: see `netcore::init::plan`).
#[test]
fn bridge_mcast_snooping_reaches_the_created_bridge() {
    for (asked, want) in [(None, false), (Some(true), true), (Some(false), false)] {
        let host = FakeHost::new();
        let cfg = config(RawConfig {
            bridge_mcast_snooping: asked,
            ..RawConfig::default()
        });
        let plan = plan_on(&host, &cfg, "").unwrap();
        let shown = plan.steps[0].to_string();
        assert_eq!(
            shown.ends_with(", multicast snooping off"),
            !want,
            "{asked:?}: {shown}"
        );
        run_init(&host, &cfg, "").unwrap();
        let specs: Vec<_> = host
            .calls()
            .into_iter()
            .filter_map(|c| match c {
                Call::CreateBridge(spec) => Some(spec),
                _ => None,
            })
            .collect();
        assert_eq!(specs.len(), 1, "{asked:?}");
        assert_eq!(specs[0].mcast_snooping, want, "{asked:?}");
    }
}

#[test]
fn bip_is_used_verbatim_without_overlap_checks() {
    // Docker's createBridge: with --bip, only ParseCIDR; no route or nameserver check.
    let host = FakeHost::new().with_route(net("10.20.30.0/24"));
    let cfg = config(RawConfig {
        bip: Some("10.20.30.1/24".into()),
        ..Default::default()
    });
    run_init(&host, &cfg, "nameserver 10.20.30.53\n").expect("init");
    let br = host.link("docker0").expect("docker0");
    assert_eq!(br.addrs, vec![net("10.20.30.1/24")]);
}

#[test]
fn route_and_nameserver_overlaps_skip_candidates() {
    let host = FakeHost::new().with_route(net("172.17.0.0/16"));
    run_init(&host, &default_config(), "nameserver 10.0.1.1\n").expect("init");
    // 172.17.42.1/16 overlaps the route, 10.0.42.1/16 the nameserver.
    assert_eq!(
        host.link("docker0").expect("docker0").addrs,
        vec![net("10.1.42.1/16")]
    );
}

#[test]
fn no_free_subnet_fails_before_touching_anything() {
    // OpenVPN's def1 routes overlap every candidate (moby/libnetwork#779).
    let host = FakeHost::new()
        .with_route(net("0.0.0.0/1"))
        .with_route(net("128.0.0.0/1"));
    let before = host.snapshot();
    let err = run_init(&host, &default_config(), "").expect_err("no subnet");
    let text = err.to_string();
    assert!(
        text.starts_with(
            "Could not find a free IP address range for interface 'docker0'. \
             Please configure its address manually and run 'docker -b docker0'"
        ),
        "{text}"
    );
    assert!(text.contains("172.17.42.1/16"), "{text}");
    assert!(text.contains("128.0.0.0/1"), "{text}");
    assert!(host.mutations().is_empty());
    assert_eq!(host.snapshot(), before);
}

#[test]
fn existing_docker0_is_reused_without_link_changes() {
    let host = FakeHost::new().with_bridge("docker0", net("172.17.0.1/16"));
    run_init(&host, &default_config(), "").expect("init");
    assert_eq!(
        calls(&host),
        with_reads(&[
            "iptables-restore --noflush -t nat",
            "iptables-restore --noflush -t filter",
            "write 1 to sysctl net/ipv4/ip_forward",
            "iptables -t filter -P FORWARD DROP",
        ])
    );
    // The existing address decides the subnet of the rules (no overlap checks, as Docker).
    assert!(
        host.rules(Table::Nat)
            .contains("-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE")
    );
}

#[test]
fn existing_docker0_down_is_brought_up() {
    let host = down_bridge("docker0", &["172.17.0.1/16"]);
    let cfg = config(RawConfig {
        iptables: Some(false),
        ip_forward: Some(false),
        ..Default::default()
    });
    run_init(&host, &cfg, "").expect("init");
    assert_eq!(
        calls(&host),
        vec!["list links", "list routes", "set docker0 up"]
    );
}

#[test]
fn bip_matching_existing_docker0_is_accepted_and_mismatch_is_dockers_error() {
    let host = FakeHost::new().with_bridge("docker0", net("172.17.0.1/16"));
    // Only the IP is compared, never the mask (Docker 1.x).
    let same_ip = config(RawConfig {
        bip: Some("172.17.0.1/24".into()),
        ..Default::default()
    });
    run_init(&host, &same_ip, "").expect("same IP is a match");

    let host = FakeHost::new().with_bridge("docker0", net("172.17.0.1/16"));
    let before = host.snapshot();
    let other = config(RawConfig {
        bip: Some("10.9.0.1/16".into()),
        ..Default::default()
    });
    let err = run_init(&host, &other, "").expect_err("mismatch");
    assert_eq!(
        err.to_string(),
        "bridge ip (172.17.0.1) does not match existing bridge configuration 10.9.0.1"
    );
    assert_eq!(host.snapshot(), before);
    assert!(host.mutations().is_empty());
}

#[test]
fn docker0_without_address_is_configured_not_an_error() {
    // 1.2/1.3 failed with EEXIST here; v1.4 configures it (moby/moby#8444).
    let host = down_bridge("docker0", &[]);
    let cfg = config(RawConfig {
        iptables: Some(false),
        ip_forward: Some(false),
        ..Default::default()
    });
    run_init(&host, &cfg, "").expect("init");
    assert_eq!(
        calls(&host),
        vec![
            "list links",
            "list routes",
            "add address 172.17.42.1/16 to docker0",
            "set docker0 up"
        ]
    );
}

#[test]
fn user_named_bridge_must_exist_and_have_an_address() {
    let missing = config(RawConfig {
        bridge: Some("br-user".into()),
        ..Default::default()
    });
    let host = FakeHost::new();
    let before = host.snapshot();
    let err = run_init(&host, &missing, "").expect_err("missing -b bridge");
    assert!(err.to_string().contains("br-user"), "{err}");
    assert!(host.mutations().is_empty(), "a -b bridge is never created");
    assert_eq!(host.snapshot(), before);

    let host = FakeHost::new().with_device("br-user", &[]);
    let err = run_init(&host, &missing, "").expect_err("no address");
    assert_eq!(err.to_string(), "Interface br-user has no IP addresses");
    assert!(host.mutations().is_empty());

    let host = FakeHost::new().with_bridge("br-user", net("192.168.5.1/24"));
    run_init(&host, &missing, "").expect("existing -b bridge");
    assert!(
        host.rules(Table::Filter)
            .contains("-A FORWARD -i br-user -o br-user -j ACCEPT")
    );
}

#[test]
fn iptables_false_never_touches_the_firewall() {
    let host = FakeHost::new();
    let cfg = config(RawConfig {
        iptables: Some(false),
        ..Default::default()
    });
    run_init(&host, &cfg, "").expect("init");
    assert!(
        host.calls()
            .iter()
            .all(|c| !matches!(c.op(), Op::FwSave | Op::FwApply | Op::SetPolicy)),
        "{:?}",
        calls(&host)
    );
    // Forwarding is still turned on; without iptables there is no policy to set.
    assert_eq!(host.sysctl(IP_FORWARD).as_deref(), Some("1"));
}

#[test]
fn ip_forward_false_never_touches_the_sysctl_or_policy() {
    let host = FakeHost::new();
    let cfg = config(RawConfig {
        ip_forward: Some(false),
        ..Default::default()
    });
    run_init(&host, &cfg, "").expect("init");
    assert!(
        host.calls()
            .iter()
            .all(|c| !matches!(c.op(), Op::SysctlRead | Op::SysctlWrite | Op::SetPolicy)),
        "{:?}",
        calls(&host)
    );
}

#[test]
fn ip_forward_already_on_leaves_the_forward_policy_alone() {
    let host = FakeHost::new().with_sysctl(IP_FORWARD, "1");
    run_init(&host, &default_config(), "").expect("init");
    assert!(
        host.calls()
            .iter()
            .all(|c| !matches!(c.op(), Op::SysctlWrite | Op::SetPolicy))
    );
    assert!(host.rules(Table::Filter).contains(":FORWARD ACCEPT"));
}

#[test]
fn ip_forward_no_drop_keeps_the_policy() {
    let host = FakeHost::new();
    let cfg = config(RawConfig {
        ip_forward_no_drop: Some(true),
        ..Default::default()
    });
    run_init(&host, &cfg, "").expect("init");
    assert_eq!(host.sysctl(IP_FORWARD).as_deref(), Some("1"));
    assert!(host.calls().iter().all(|c| c.op() != Op::SetPolicy));
}

#[test]
fn failing_to_enable_forwarding_is_a_warning_and_skips_the_policy() {
    // Docker: "WARNING: unable to enable IPv4 forwarding" and carry on.
    let host = FakeHost::new();
    host.fail_nth(Op::SysctlWrite, 1);
    let applied = run_init(&host, &default_config(), "").expect("init still succeeds");
    assert_eq!(applied.warnings.len(), 1);
    assert!(
        applied.warnings[0].starts_with("unable to enable IPv4 forwarding"),
        "{:?}",
        applied.warnings
    );
    assert!(host.calls().iter().all(|c| c.op() != Op::SetPolicy));
    assert!(host.link("docker0").is_some());
}

#[test]
fn mtu_is_set_on_a_new_bridge_and_on_docker0_but_never_on_a_users_bridge() {
    let cfg = config(RawConfig {
        mtu: Some(1400),
        iptables: Some(false),
        ip_forward: Some(false),
        ..Default::default()
    });
    let host = FakeHost::new();
    run_init(&host, &cfg, "").expect("init");
    assert_eq!(host.link("docker0").expect("docker0").mtu, 1400);

    let host = FakeHost::new().with_bridge("docker0", net("172.17.0.1/16"));
    run_init(&host, &cfg, "").expect("init");
    assert!(calls(&host).contains(&"set mtu 1400 on docker0".to_owned()));

    let user = config(RawConfig {
        bridge: Some("br-user".into()),
        mtu: Some(1400),
        iptables: Some(false),
        ip_forward: Some(false),
        ..Default::default()
    });
    let host = FakeHost::new().with_bridge("br-user", net("192.168.5.1/24"));
    run_init(&host, &user, "").expect("init");
    assert!(host.calls().iter().all(|c| c.op() != Op::SetMtu));
}

// ---------------------------------------------------------------------------------------
// Idempotence

#[test]
fn second_run_changes_nothing() {
    let host = FakeHost::new();
    let cfg = default_config();
    run_init(&host, &cfg, "").expect("first");
    let after_first = host.snapshot();
    host.clear_calls();
    let second = plan_on(&host, &cfg, "").expect("plan");
    assert!(second.steps.is_empty(), "{:#?}", second.steps);
    run_init(&host, &cfg, "").expect("second");
    assert!(host.mutations().is_empty(), "{:?}", host.mutations());
    assert_eq!(host.snapshot(), after_first);
}

#[test]
fn switching_icc_off_replaces_the_accept_rule() {
    let host = FakeHost::new();
    run_init(&host, &default_config(), "").expect("icc on");
    let off = config(RawConfig {
        icc: Some(false),
        ..Default::default()
    });
    run_init(&host, &off, "").expect("icc off");
    let filter = host.rules(Table::Filter);
    assert!(
        filter.contains("-A FORWARD -i docker0 -o docker0 -j DROP"),
        "{filter}"
    );
    assert!(
        !filter.contains("-A FORWARD -i docker0 -o docker0 -j ACCEPT"),
        "{filter}"
    );
}

// ---------------------------------------------------------------------------------------
// Rollback: every mutating step fails in turn; the host must be exactly as before.

fn rollback_at_every_step(host_before: impl Fn() -> FakeHost, cfg: &Config) {
    let clean = host_before();
    run_init(&clean, cfg, "").expect("clean run");
    let steps = clean.mutations().len();
    assert!(steps > 0);
    for n in 1..=steps {
        let host = host_before();
        let before = host.snapshot();
        host.fail_nth_mutation(n);
        let failed_op = clean.mutations()[n - 1].op();
        match run_init(&host, cfg, "") {
            Err(InitError::Step {
                rollback_errors, ..
            }) => {
                assert!(rollback_errors.is_empty(), "step {n}: {rollback_errors:?}");
                assert_eq!(
                    host.snapshot(),
                    before,
                    "step {n} ({failed_op:?}) left changes"
                );
            }
            Ok(applied) => {
                // Only the ip_forward write may fail without failing init; then the policy
                // step is skipped and everything else stays.
                assert_eq!(failed_op, Op::SysctlWrite, "step {n} failed silently");
                assert_eq!(applied.warnings.len(), 1);
            }
            Err(other) => panic!("step {n}: unexpected error {other}"),
        }
    }
}

#[test]
fn rollback_when_creating_docker0() {
    rollback_at_every_step(FakeHost::new, &default_config());
}

#[test]
fn rollback_when_configuring_an_existing_docker0_without_address() {
    let cfg = config(RawConfig {
        mtu: Some(1400),
        icc: Some(false),
        ..Default::default()
    });
    rollback_at_every_step(|| down_bridge("docker0", &[]), &cfg);
}

#[test]
fn rollback_with_hairpin_and_user_rules_present() {
    let cfg = config(RawConfig {
        userland_proxy: Some(false),
        ..Default::default()
    });
    let with_user_rules = || {
        FakeHost::new()
            .with_rules(
                Table::Filter,
                "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
                 -A FORWARD -i eth0 -j ACCEPT\nCOMMIT\n",
            )
            .expect("valid save text")
    };
    rollback_at_every_step(with_user_rules, &cfg);
}

#[test]
fn a_failing_read_changes_nothing_and_names_what_failed() {
    let host = FakeHost::new();
    host.fail_nth(Op::FwSave, 2);
    let err = run_init(&host, &default_config(), "").expect_err("read fails");
    assert!(
        err.to_string()
            .starts_with("read iptables tables filter and nat: iptables-save -t nat"),
        "{err}"
    );
    assert!(host.mutations().is_empty());
}

// ---------------------------------------------------------------------------------------
// Teardown

fn record_of(host: &FakeHost, cfg: &Config, earlier: Option<&InitRecord>) -> InitRecord {
    let plan = plan_on(host, cfg, "").expect("plan");
    let (mut link, mut fw, mut sys) = host.ops();
    let applied = init::apply(&plan, &mut link, &mut fw, &mut sys).expect("apply");
    let params = cfg
        .iptables
        .then(|| BridgeFirewall::from_config(cfg, &plan.bridge, plan.addr));
    InitRecord::after_init(&plan, &applied, params, earlier)
}

fn run_teardown(host: &FakeHost, rec: &InitRecord) {
    let all = Config::default();
    let (mut link, mut fw, mut sys) = host.ops();
    let facts = HostFacts::gather(&all, "", &mut link, &mut fw, &mut sys).expect("facts");
    let plan = teardown::plan(rec, &facts);
    init::apply(&plan, &mut link, &mut fw, &mut sys).expect("teardown");
}

#[test]
fn teardown_restores_the_host_even_after_a_second_init() {
    let host = FakeHost::new()
        .with_rules(
            Table::Filter,
            "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
             -A FORWARD -i eth0 -j ACCEPT\nCOMMIT\n",
        )
        .expect("valid save text");
    let before = host.snapshot();
    let cfg = default_config();
    let first = record_of(&host, &cfg, None);
    // The second run changes nothing; its record must still remember the first's changes.
    let second = record_of(&host, &cfg, Some(&first));
    assert_eq!(second, first);
    run_teardown(&host, &second);
    assert_eq!(host.snapshot(), before);
}

#[test]
fn teardown_leaves_an_admins_bridge_and_forwarding_alone() {
    let host = FakeHost::new()
        .with_bridge("docker0", net("172.17.0.1/16"))
        .with_sysctl(IP_FORWARD, "1");
    let before = host.snapshot();
    let rec = record_of(&host, &default_config(), None);
    assert!(!rec.created_bridge && !rec.enabled_ip_forward);
    run_teardown(&host, &rec);
    assert_eq!(host.snapshot(), before);
}

#[test]
fn teardown_keeps_a_users_docker_user_rules() {
    let host = FakeHost::new();
    let rec = record_of(&host, &default_config(), None);
    let (_, mut fw, _) = host.ops();
    use netcore::ops::FirewallOps;
    fw.apply(&netcore::firewall::Batch {
        table: Table::Filter,
        lines: vec!["-I DOCKER-USER 1 -s 10.0.0.0/8 -j DROP".into()],
    })
    .expect("user rule");
    run_teardown(&host, &rec);
    let filter = host.rules(Table::Filter);
    assert!(filter.contains(":DOCKER-USER - [0:0]"), "{filter}");
    assert!(
        filter.contains("-A DOCKER-USER -s 10.0.0.0/8 -j DROP"),
        "{filter}"
    );
    assert!(!filter.contains("docker0"), "{filter}");
    assert!(host.link("docker0").is_none());
}

// ---------------------------------------------------------------------------------------
// The same sequence through mockall: the exact trait calls, nothing else.

#[test]
fn mocks_see_exactly_dockers_sequence_for_a_reused_bridge_without_iptables() {
    use mockall::{Sequence, predicate::eq};
    use netcore::ops::LinkInfo;

    let mut seq = Sequence::new();
    let mut link = MockLinkOps::new();
    let mut fw = MockFirewallOps::new();
    let mut sys = MockSysctlOps::new();
    link.expect_links()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|| {
            Ok(vec![LinkInfo {
                name: "docker0".into(),
                index: 2,
                kind: Some("bridge".into()),
                mac: None,
                mtu: 1500,
                up: true,
                addrs: vec!["172.17.0.1/16".parse().expect("cidr")],
            }])
        });
    link.expect_routes_v4()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|| Ok(Vec::new()));
    sys.expect_read()
        .with(eq(IP_FORWARD))
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_| Ok("0".into()));
    sys.expect_write()
        .with(eq(IP_FORWARD), eq("1"))
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| {
            Err(netcore::ops::OpsError::new(
                "write net/ipv4/ip_forward",
                OpsErrorKind::PermissionDenied,
                "read-only /proc/sys",
            ))
        });
    fw.expect_save().never();
    fw.expect_apply().never();
    fw.expect_set_policy().never();

    let cfg = config(RawConfig {
        iptables: Some(false),
        icc: Some(true),
        ..Default::default()
    });
    let facts = HostFacts::gather(&cfg, "", &mut link, &mut fw, &mut sys).expect("facts");
    let plan = init::plan(&cfg, &facts, RANDOM).expect("plan");
    let applied = init::apply(&plan, &mut link, &mut fw, &mut sys).expect("apply");
    assert_eq!(applied.warnings.len(), 1);
}
