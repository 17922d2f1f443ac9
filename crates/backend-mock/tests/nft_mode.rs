//! `--firewall-backend nftables` against the fake host: init creates the table and nothing
//! else of the firewall (no iptables read or write, no forwarding change), refuses to start
//! with forwarding off, rolls everything back when the table is refused, and teardown deletes
//! it; the handlers change only set elements, shared elements counted across mappings.

use std::net::Ipv4Addr;

use backend_mock::{FakeHost, Op};
use netcore::config::{Config, FirewallBackend, NetworkMode, RawConfig};
use netcore::firewall::{BridgeFirewall, PortMapping};
use netcore::handlers::Network;
use netcore::init::{self, HostFacts, InitError, Step};
use netcore::nftables::{self, NftOp};
use netcore::ops::{FirewallOps, IP_FORWARD};
use netcore::ports::Proto;
use netcore::teardown::{self, InitRecord};

const RANDOM: [u8; 6] = [0x13, 0x57, 0x9b, 0xdf, 0x24, 0x68];

fn config(extra: impl FnOnce(&mut RawConfig)) -> Config {
    let mut raw = RawConfig {
        firewall_backend: Some("nftables".into()),
        ..RawConfig::default()
    };
    extra(&mut raw);
    match raw.validate().expect("valid config in test") {
        NetworkMode::Bridge(c) => c,
        NetworkMode::Disabled => panic!("networking disabled"),
    }
}

fn forwarding_host() -> FakeHost {
    FakeHost::new().with_sysctl(IP_FORWARD, "1")
}

fn init_on(host: &FakeHost, cfg: &Config) -> Result<(init::Plan, init::Applied), InitError> {
    let (mut link, mut fw, mut sys) = host.ops();
    let facts = HostFacts::gather(cfg, "", &mut link, &mut fw, &mut sys)?;
    let plan = init::plan(cfg, &facts, RANDOM)?;
    let applied = init::apply(&plan, &mut link, &mut fw, &mut sys)?;
    Ok((plan, applied))
}

#[test]
fn the_option_is_checked_with_dockers_values() {
    let err = RawConfig {
        firewall_backend: Some("ipfw".into()),
        ..RawConfig::default()
    }
    .validate()
    .expect_err("bad value");
    assert_eq!(
        err.to_string(),
        "invalid firewall-backend \"ipfw\": allowed values are \"iptables\" and \"nftables\""
    );
    assert_eq!(config(|_| {}).firewall_backend, FirewallBackend::Nftables);
}

#[test]
fn init_creates_the_table_and_leaves_iptables_and_forwarding_alone() {
    let host = forwarding_host();
    let before = host.snapshot();
    let cfg = config(|_| {});
    let (plan, _) = init_on(&host, &cfg).expect("init");
    let after = host.snapshot();
    assert_eq!(after.tables, before.tables, "iptables untouched");
    assert_eq!(after.sysctls.get(IP_FORWARD).map(String::as_str), Some("1"));
    let model = after.nft.expect("table created");
    let fw = BridgeFirewall::from_config(&cfg, "docker0", plan.addr);
    assert_eq!(model.table, nftables::bridge_table(&fw));
    assert!(model.elements.is_empty());
    assert!(
        host.calls()
            .iter()
            .all(|c| !matches!(c.op(), Op::FwSave | Op::FwApply | Op::SetPolicy)),
        "no iptables call"
    );

    // Teardown deletes the table, and the host is as before init.
    let rec = InitRecord::after_init(&plan, &init_applied(&plan), Some(fw), None);
    assert_eq!(rec.firewall_backend, FirewallBackend::Nftables);
    let (mut link, mut fwops, mut sys) = host.ops();
    let read_all = Config {
        firewall_backend: rec.firewall_backend,
        ..Config::default()
    };
    let facts = HostFacts::gather(&read_all, "", &mut link, &mut fwops, &mut sys).expect("facts");
    let down = teardown::plan(&rec, &facts);
    assert!(matches!(down.steps.first(), Some(Step::NftDelete(_))));
    init::apply(&down, &mut link, &mut fwops, &mut sys).expect("teardown");
    assert_eq!(host.snapshot(), before);
}

/// The applied record of a plan that ran in full.
fn init_applied(plan: &init::Plan) -> init::Applied {
    init::Applied {
        done: plan.steps.clone(),
        warnings: Vec::new(),
    }
}

#[test]
fn forwarding_off_is_refused_unless_ip_forward_false() {
    let host = FakeHost::new().with_sysctl(IP_FORWARD, "0");
    let before = host.snapshot();
    let err = init_on(&host, &config(|_| {})).expect_err("forwarding off");
    assert!(matches!(err, InitError::ForwardingDisabled), "{err}");
    assert!(err.to_string().contains("--ip-forward=false"), "{err}");
    assert_eq!(host.snapshot(), before, "nothing done");

    let cfg = config(|r| r.ip_forward = Some(false));
    init_on(&host, &cfg).expect("the admin said so");
    assert_eq!(
        host.snapshot().sysctls.get(IP_FORWARD).map(String::as_str),
        Some("0"),
        "still off"
    );
    assert!(host.snapshot().nft.is_some());
}

#[test]
fn a_refused_table_rolls_back_the_bridge_and_route_localnet() {
    let host = forwarding_host();
    let before = host.snapshot();
    // Hairpin mode: bridge, address, up, route_localnet, then the table (the last step).
    let cfg = config(|r| r.userland_proxy = Some(false));
    host.fail_nth(Op::NftApply, 1);
    init_on(&host, &cfg).expect_err("table refused");
    assert_eq!(host.snapshot(), before, "bridge and sysctls rolled back");
}

fn mapping(host_ip: Ipv4Addr, host_port: u16, ip: Ipv4Addr, port: u16) -> PortMapping {
    PortMapping {
        host_ip,
        host_port,
        container_ip: ip,
        container_port: port,
        proto: Proto::Tcp,
    }
}

#[test]
fn handlers_change_elements_only_and_share_what_two_mappings_share() {
    let cfg = config(|r| r.icc = Some(false));
    let mut net =
        Network::new(&cfg, "docker0", "172.17.0.1/16".parse().expect("cidr")).expect("network");
    let a = net.allocate_interface("a", None, None).expect("a").ip;
    let b = net.allocate_interface("b", None, None).expect("b").ip;

    let first = net
        .allocate_port("a", None, 8080, 80, Proto::Tcp)
        .expect("publish");
    assert!(first.firewall.is_empty(), "no iptables batch");
    let m1 = mapping(Ipv4Addr::UNSPECIFIED, 8080, a, 80);
    let mut want = vec![nftables::dnat_element(&m1)];
    want.extend(nftables::shared_port_elements(&m1));
    want.sort();
    assert_eq!(first.nft, [NftOp::AddElements(want)]);

    // A second host port for the same container port adds only its DNAT element.
    let second = net
        .allocate_port("a", Some(Ipv4Addr::LOCALHOST), 8081, 80, Proto::Tcp)
        .expect("publish again");
    let m2 = mapping(Ipv4Addr::LOCALHOST, 8081, a, 80);
    assert_eq!(
        second.nft,
        [NftOp::AddElements(vec![nftables::dnat_element(&m2)])]
    );
    // Releasing the first keeps the shared elements for the second ...
    let rel = net
        .release_port("a", Ipv4Addr::UNSPECIFIED, 8080, Proto::Tcp)
        .expect("unpublish");
    assert_eq!(
        rel.nft,
        [NftOp::DelElements(vec![nftables::dnat_element(&m1)])]
    );

    // A link under icc=false is one element.
    let link = net.link(b, a, &[(80, Proto::Tcp)], true).expect("link");
    let link_el = nftables::link_element(b, a, 80, Proto::Tcp);
    assert_eq!(link.nft, [NftOp::AddElements(vec![link_el.clone()])]);
    assert_eq!(net.elements().len(), 4, "dnat + 2 shared + link");

    // ... and releasing the container removes everything left, once each.
    let gone = net.release_interface("a").expect("release");
    let mut left = vec![nftables::dnat_element(&m2), link_el];
    left.extend(nftables::shared_port_elements(&m2));
    left.sort();
    assert_eq!(gone.nft, [NftOp::DelElements(left)]);
    assert!(net.elements().is_empty());
}

#[test]
fn the_fake_hosts_transactions_are_all_or_nothing() {
    let host = forwarding_host();
    init_on(&host, &config(|_| {})).expect("init");
    let (_, mut fw, _) = host.ops();
    let m = mapping(
        Ipv4Addr::UNSPECIFIED,
        8080,
        "172.17.0.2".parse().expect("ip"),
        80,
    );
    let el = nftables::dnat_element(&m);
    fw.nft_apply(&[NftOp::AddElements(vec![el.clone()])])
        .expect("add");
    let other = nftables::dnat_element(&mapping(
        Ipv4Addr::UNSPECIFIED,
        8081,
        "172.17.0.2".parse().expect("ip"),
        80,
    ));
    fw.nft_apply(&[NftOp::AddElements(vec![other, el.clone()])])
        .expect_err("duplicate");
    assert_eq!(fw.nft_elements().expect("list"), Some(vec![el]));
}
