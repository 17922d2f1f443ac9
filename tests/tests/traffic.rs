//! Real traffic through dockerd-net's bridge (issue 5).
//!
//! Every test builds its own small world (see `tests/world.rs`): the test's thread is the
//! **host** where `dockerd-net daemon` runs; **outside** (standing for the internet) is a
//! namespace linked to it by a veth (192.0.2.1 ↔ 192.0.2.2, the host's default route goes
//! there, outside has no route back to the bridge); **containers** are namespaces plugged in
//! with `POST /v1/attach`. In-test echo servers (TCP and UDP on one port) answer with their
//! tag and the address they saw the client come from, so each check says who answered and
//! through which address translation.
//!
//! "Works" is an answer within 5 s; "dropped" is silence for 300 ms *and* the server having
//! seen nothing; "gone" is a refusal (TCP RST or ICMP port unreachable: nothing listens and
//! nothing translates). Every negative check has a positive one beside it in the same world,
//! so a world that is merely broken cannot pass for a firewall that works.
//!
//! Every test runs twice, once per firewall backend: `<test>::iptables` (the default) and
//! `<test>::nftables` (`--firewall-backend=nftables`, with the host's `ip_forward` turned on
//! first, as dockerd-net leaves that to the admin in that mode: see `world::prepare_host`).
//! The packets must fare the same either way; where a test reads the firewall back, the
//! nftables run reads `table ip docker-bridges` and checks that iptables was left alone.

#[path = "../world.rs"]
mod world;

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::Path;

use e2e_tests::{NsState, Tables, dockerd_net, ip_forward};
use netcore::nftables::{DNAT_ADDR_PORTS, DNAT_PORTS, LINKS, PUBLISHED};
use world::{
    Answer, DROPPED, Echo, HOST_ADDR, Host, Netns, OUTSIDE_ADDR, Place, Proto, Reach, WORKS, World,
    exchange, nft_elements, nft_ruleset,
};

/// The port the echo servers listen on unless a test says otherwise.
const ECHO: u16 = 7;

const BOTH: [Proto; 2] = [Proto::Tcp, Proto::Udp];

/// Runs `f` in a fresh namespace (the host) with the binary built (outside the namespace:
/// cargo must not run in it).
fn world_test(test: &str, f: impl FnOnce(&'static Path) + Send + 'static) {
    if !testns::can_run_kernel_tests(test) {
        return;
    }
    let bin = dockerd_net();
    testns::in_netns(move || f(bin));
}

/// The firewall backend a test runs the daemon with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fw {
    /// The default (no flag, as `--firewall-backend=iptables`): what the tests ran before.
    Iptables,
    /// `--firewall-backend=nftables`: `table ip docker-bridges`, iptables untouched.
    Nftables,
}

impl Fw {
    /// The daemon's global flags in this mode: `extra`, after the backend's flag.
    fn flags<'a>(self, extra: &[&'a str]) -> Vec<&'a str> {
        let mut v = match self {
            Fw::Iptables => Vec::new(),
            Fw::Nftables => vec!["--firewall-backend=nftables"],
        };
        v.extend_from_slice(extra);
        v
    }

    /// In nftables mode: the set or map `set` of `table ip docker-bridges` in the host holds
    /// `element` (as `nft list` prints it) if `present`, and does not otherwise. Nothing in
    /// iptables mode (the packets are the check there).
    #[track_caller]
    fn assert_element(self, set: &str, element: &str, present: bool) {
        if self == Fw::Iptables {
            return;
        }
        let elements = nft_elements(set);
        assert_eq!(
            elements.iter().any(|e| e == element),
            present,
            "{set} {} {element:?}: {elements:?}",
            if present {
                "must hold"
            } else {
                "must not hold"
            }
        );
    }

    /// In nftables mode, after the daemon's init: iptables is as it was `before` (this mode
    /// never touches it) and the only nftables table is `ip docker-bridges`.
    #[track_caller]
    fn assert_initialised(self, before: &NsState, now: &NsState) {
        if self == Fw::Iptables {
            return;
        }
        assert_eq!(
            (&now.filter, &now.nat, &now.forward_policy),
            (&before.filter, &before.nat, &before.forward_policy),
            "--firewall-backend=nftables changed iptables"
        );
        let tables = world::nft(&["list", "tables"]);
        assert_eq!(
            tables.trim(),
            format!("table ip {}", netcore::nftables::TABLE),
            "nftables tables in the host"
        );
    }

    /// `nft list table ip docker-bridges` in nftables mode; empty in iptables mode.
    fn table(self) -> String {
        match self {
            Fw::Iptables => String::new(),
            Fw::Nftables => world::nft(&["list", "table", "ip", netcore::nftables::TABLE]),
        }
    }

    /// In nftables mode, after teardown: no nftables table is left in the host.
    #[track_caller]
    fn assert_torn_down(self) {
        if self == Fw::Nftables {
            assert_eq!(nft_ruleset(), "", "nft list ruleset after teardown");
        }
    }
}

/// Declares the two tests of the body `fn $name(fw: Fw, bin: &'static Path)`, each in a world
/// of its own: `$name::iptables` and `$name::nftables` (a module shares the function's name).
macro_rules! in_both_modes {
    ($($name:ident),+ $(,)?) => {$(
        mod $name {
            #[test]
            fn iptables() {
                super::world_test(concat!(stringify!($name), "::iptables"), |bin| {
                    super::$name(super::Fw::Iptables, bin)
                });
            }

            #[test]
            fn nftables() {
                super::world_test(concat!(stringify!($name), "::nftables"), |bin| {
                    super::$name(super::Fw::Nftables, bin)
                });
            }
        }
    )+};
}

fn v4(ip: Ipv4Addr, port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(ip, port)
}

/// `from` reaches `to` over `proto` and the server tagged `server` answers, having seen the
/// client come from `peer`.
#[track_caller]
fn assert_answers<P: Place>(
    from: &P,
    proto: Proto,
    to: SocketAddrV4,
    server: &str,
    peer: Ipv4Addr,
) -> Answer {
    let what = format!("{} → {to}/{}", from.name(), proto.as_str());
    match from.enter(|| exchange(proto, to, WORKS)) {
        Reach::Answered(a) => {
            assert_eq!(a.server, server, "{what}: answered by the wrong server");
            assert_eq!(
                *a.peer.ip(),
                peer,
                "{what}: {server} saw the client come from {}",
                a.peer
            );
            a
        }
        other => panic!("{what}: expected {server} to answer, got {other:?}"),
    }
}

/// `from` sends to `to` over `proto` and hears nothing (the firewall dropped it), and the
/// server `echo` listening there saw nothing arrive.
#[track_caller]
fn assert_dropped<P: Place>(from: &P, proto: Proto, to: SocketAddrV4, echo: &Echo) {
    let what = format!("{} → {to}/{}", from.name(), proto.as_str());
    let before = echo.seen(proto).len();
    let r = from.enter(|| exchange(proto, to, DROPPED));
    assert!(
        matches!(r, Reach::Silent),
        "{what}: must be dropped, got {r:?}"
    );
    let seen = echo.seen(proto);
    assert_eq!(
        seen.len(),
        before,
        "{what}: dropped for the client, yet {} saw {seen:?}",
        echo.tag()
    );
}

/// `from` is refused at `to` over `proto` (nothing listens there, nothing forwards it), and
/// the server `echo` behind the former mapping saw nothing arrive.
#[track_caller]
fn assert_refused<P: Place>(from: &P, proto: Proto, to: SocketAddrV4, echo: &Echo) {
    let what = format!("{} → {to}/{}", from.name(), proto.as_str());
    let before = echo.seen(proto).len();
    let r = from.enter(|| exchange(proto, to, WORKS));
    assert!(
        matches!(r, Reach::Refused),
        "{what}: must be refused (nothing published), got {r:?}"
    );
    assert_eq!(
        echo.seen(proto).len(),
        before,
        "{what}: refused, yet {} saw it",
        echo.tag()
    );
}

/// The network is IPv4-only: neither end of a container's veth autoconfigures IPv6 (no
/// link-local address, so no DAD, router solicitation or MLD flooding the bridge), while the
/// container's loopback keeps `::1`. docker0, which attach does not touch, is the control: its
/// link-local address comes through the same asynchronous link-watch work as the veth ends'
/// would, so once it is there and the veth is operationally up, theirs would be too.
#[track_caller]
fn assert_no_ipv6_autoconf(c: &world::Container, host_veth: &str) {
    let within = std::time::Duration::from_secs(5);
    let link_local = |addrs: Vec<String>| addrs.iter().any(|a| a.starts_with("fe80:"));
    let oper_up = |name: &str| testns::ip_link(name).is_some_and(|l| l["operstate"] == "UP");
    testns::wait_until("docker0's link-local address", within, || {
        link_local(testns::ip_addrs6("docker0"))
    });
    testns::wait_until("the veth to be operationally up", within, || {
        oper_up(host_veth) && c.run(|| oper_up("eth0"))
    });
    // The host end has IPv6 off altogether (this thread is in the world's host namespace,
    // which /proc/sys/net follows), and so no IPv6 route either.
    assert_eq!(
        testns::disable_ipv6(host_veth),
        "1",
        "IPv6 off on {host_veth}"
    );
    assert_eq!(
        testns::ip_routes6("all", host_veth),
        Vec::<serde_json::Value>::new(),
        "no IPv6 route via {host_veth}"
    );
    assert_eq!(
        testns::ip_addrs6(host_veth),
        Vec::<String>::new(),
        "the host end {host_veth} has no IPv6 address"
    );
    let (mode, eth0, lo) = c.run(|| {
        (
            testns::ip_addr_gen_mode("eth0"),
            testns::ip_addrs6("eth0"),
            testns::ip_addrs6("lo"),
        )
    });
    assert_eq!(mode.as_deref(), Some("none"));
    assert_eq!(eth0, Vec::<String>::new(), "eth0 has no IPv6 address");
    assert_eq!(lo, ["::1/128"], "lo keeps its IPv6");
}

// ---------------------------------------------------------------------------------------------
// Container to container
// ---------------------------------------------------------------------------------------------

fn containers_talk_over_the_bridge_with_icc(fw: Fw, bin: &'static Path) {
    let mut w = World::new(bin, "icc-on");
    w.start(&fw.flags(&[]));
    let c1 = w.container("c1");
    let c2 = w.container("c2");

    // The attach answer, and the container as the kernel shows it from inside.
    let a = &c1.attached;
    assert_eq!(a["id"], "c1", "{a}");
    assert_eq!(a["ifname"], "eth0", "{a}");
    assert_eq!(a["netns"], c1.ns.path_str(), "{a}");
    assert_eq!(a["interface"]["bridge"], "docker0", "{a}");
    assert_ne!(c1.ip, c2.ip);
    let prefix = &a["interface"]["prefix_len"];
    let (addrs, routes) = c1.run(|| (testns::ip_addrs4("eth0"), testns::ip_routes4()));
    assert_eq!(addrs, [format!("{}/{prefix}", c1.ip)]);
    assert!(
        routes
            .iter()
            .any(|r| r["dst"] == "default" && r["gateway"] == c1.gateway.to_string()),
        "no default route via {} in c1: {routes:?}",
        c1.gateway
    );
    let host_veth = a["host_veth"].as_str().expect("host_veth");
    let port = testns::ip_link(host_veth).expect("the host end of c1's veth");
    assert_eq!(port["master"], "docker0", "{port}");
    assert_no_ipv6_autoconf(&c1, host_veth);
    // The bridge init made has multicast snooping off (--bridge-mcast-snooping defaults to
    // false; see netcore::init::plan).
    let details: serde_json::Value = serde_json::from_str(&testns::run(&[
        "ip", "-j", "-d", "link", "show", "dev", "docker0",
    ]))
    .expect("ip -j");
    assert_eq!(
        details[0]["linkinfo"]["info_data"]["mcast_snooping"], 0,
        "{details}"
    );

    let e1 = c1.run(|| Echo::start("c1", ECHO));
    let e2 = c2.run(|| Echo::start("c2", ECHO));
    for proto in BOTH {
        // Bridged, not routed: each sees the other's own address.
        assert_answers(&c1, proto, c2.at(ECHO), "c2", c1.ip);
        assert_answers(&c2, proto, c1.at(ECHO), "c1", c2.ip);
    }
    drop((e1, e2));
    w.stop();
}
in_both_modes!(containers_talk_over_the_bridge_with_icc);

fn icc_false_drops_container_to_container(fw: Fw, bin: &'static Path) {
    let mut w = World::new(bin, "icc-off");
    w.start(&fw.flags(&["--icc=false"]));
    let c1 = w.container("c1");
    let c2 = w.container("c2");
    let e1 = c1.run(|| Echo::start("c1", ECHO));
    let e2 = c2.run(|| Echo::start("c2", ECHO));
    let host = Echo::start("host", ECHO);
    for proto in BOTH {
        // Both are plugged in and up: each reaches the host through its gateway...
        assert_answers(&c1, proto, v4(c1.gateway, ECHO), "host", c1.ip);
        assert_answers(&c2, proto, v4(c2.gateway, ECHO), "host", c2.ip);
        // ...but not each other.
        assert_dropped(&c1, proto, c2.at(ECHO), &e2);
        assert_dropped(&c2, proto, c1.at(ECHO), &e1);
    }
    drop(host);
    w.stop();
}
in_both_modes!(icc_false_drops_container_to_container);

fn link_opens_exactly_the_linked_ports_in_the_linked_direction(fw: Fw, bin: &'static Path) {
    let mut w = World::new(bin, "links");
    w.start(&fw.flags(&["--icc=false"]));
    let parent = w.container("parent");
    let child = w.container("child");
    let db = child.run(|| Echo::start("child:5432", 5432));
    let dns = child.run(|| Echo::start("child:5353", 5353));
    let other = child.run(|| Echo::start("child:5433", 5433));
    let back = parent.run(|| Echo::start("parent:5432", 5432));

    // ICC off: closed before the link.
    assert_dropped(&parent, Proto::Tcp, child.at(5432), &db);
    assert_dropped(&parent, Proto::Udp, child.at(5353), &dns);

    let linked = [
        format!("{} . {} . tcp . 5432", parent.ip, child.ip),
        format!("{} . {} . udp . 5353", parent.ip, child.ip),
    ];
    let r = w.link(&parent, &child, &["5432/tcp", "5353/udp"], true);
    assert_eq!(r["changed"].as_array().map(Vec::len), Some(2), "{r}");
    for e in &linked {
        fw.assert_element(LINKS, e, true);
    }
    // The linked ports, parent → child, each on its own protocol.
    assert_answers(&parent, Proto::Tcp, child.at(5432), "child:5432", parent.ip);
    assert_answers(&parent, Proto::Udp, child.at(5353), "child:5353", parent.ip);
    // Not the other protocol on a linked port.
    assert_dropped(&parent, Proto::Udp, child.at(5432), &db);
    assert_dropped(&parent, Proto::Tcp, child.at(5353), &dns);
    // Not a port that was not linked.
    for proto in BOTH {
        assert_dropped(&parent, proto, child.at(5433), &other);
    }
    // Not the other direction: child → parent on the linked port.
    assert_dropped(&child, Proto::Tcp, parent.at(5432), &back);

    // Disabling the link closes them again.
    let r = w.link(&parent, &child, &["5432/tcp", "5353/udp"], false);
    assert_eq!(r["changed"].as_array().map(Vec::len), Some(2), "{r}");
    for e in &linked {
        fw.assert_element(LINKS, e, false);
    }
    assert_dropped(&parent, Proto::Tcp, child.at(5432), &db);
    assert_dropped(&parent, Proto::Udp, child.at(5353), &dns);
    w.stop();
}
in_both_modes!(link_opens_exactly_the_linked_ports_in_the_linked_direction);

// ---------------------------------------------------------------------------------------------
// Container to outside
// ---------------------------------------------------------------------------------------------

fn container_reaches_outside_from_the_hosts_address(fw: Fw, bin: &'static Path) {
    let mut w = World::new(bin, "masq");
    w.start(&fw.flags(&[]));
    let c1 = w.container("c1");
    let out = w.outside.run(|| Echo::start("outside", ECHO));
    for proto in BOTH {
        // Masqueraded: outside sees the host's address (and can answer it).
        assert_answers(&c1, proto, v4(OUTSIDE_ADDR, ECHO), "outside", HOST_ADDR);
    }
    drop(out);
    w.stop();
}
in_both_modes!(container_reaches_outside_from_the_hosts_address);

fn ip_masq_false_arrives_from_the_containers_address(fw: Fw, bin: &'static Path) {
    let mut w = World::new(bin, "nomasq");
    w.start(&fw.flags(&["--ip-masq=false"]));
    let c1 = w.container("c1");
    let out = w.outside.run(|| Echo::start("outside", ECHO));
    let r = c1.run(|| world::udp(v4(OUTSIDE_ADDR, ECHO), DROPPED));
    let seen = out
        .wait_seen(Proto::Udp)
        .unwrap_or_else(|| panic!("c1's datagram never reached outside ({r:?})"));
    assert_eq!(
        *seen.ip(),
        c1.ip,
        "not masqueraded: the container's address"
    );
    // And so no answer comes back: outside has no route to the bridge's subnet.
    assert!(!matches!(r, Reach::Answered(_)), "{r:?}");
    drop(out);
    w.stop();
}
in_both_modes!(ip_masq_false_arrives_from_the_containers_address);

fn ip_forward_false_keeps_containers_in(fw: Fw, bin: &'static Path) {
    let mut w = World::new(bin, "nofwd");
    w.start(&fw.flags(&["--ip-forward=false"]));
    assert_eq!(
        ip_forward(),
        "0",
        "--ip-forward=false must leave forwarding off"
    );
    let c1 = w.container("c1");
    let out = w.outside.run(|| Echo::start("outside", ECHO));
    let host = Echo::start("host", ECHO);
    for proto in BOTH {
        // Plugged in: the host itself answers...
        assert_answers(&c1, proto, v4(c1.gateway, ECHO), "host", c1.ip);
        // ...but nothing is forwarded beyond it.
        assert_dropped(&c1, proto, v4(OUTSIDE_ADDR, ECHO), &out);
    }
    drop((out, host));
    w.stop();
}
in_both_modes!(ip_forward_false_keeps_containers_in);

// ---------------------------------------------------------------------------------------------
// Published ports
// ---------------------------------------------------------------------------------------------

/// Publishes port 80/`proto` of c1 and checks it from outside at the host's address, from the
/// host on 127.0.0.1 and from c2 at the host's address; then unpublishes it and checks that it
/// is gone from all three. `via_c2` is the address c1 sees c2 come from (the gateway when the
/// userland proxy relays it, c2's own in hairpin mode).
/// In nftables mode the mapping is also read back: its DNAT and forward elements are in
/// `table ip docker-bridges` while published, and gone after.
fn published_port_cycle(
    w: &World,
    fw: Fw,
    proto: Proto,
    via_c2: impl Fn(&world::Container) -> Ipv4Addr,
) {
    let c1 = w.container("c1");
    let c2 = w.container("c2");
    let web = c1.run(|| Echo::start("c1", 80));
    let map = w.publish("c1", 80, proto, None);
    assert_eq!(map["host_ip"], "0.0.0.0", "{map}");
    assert_eq!(map["container_ip"], c1.ip.to_string(), "{map}");
    assert_eq!(map["container_port"], 80, "{map}");
    assert_eq!(map["proto"], proto.as_str(), "{map}");
    let port = World::host_port(&map);
    let p = proto.as_str();
    let dnat = format!("{p} . {port} : {} . 80", c1.ip);
    let published = format!("{} . {p} . 80", c1.ip);
    fw.assert_element(DNAT_PORTS, &dnat, true);
    fw.assert_element(PUBLISHED, &published, true);
    // From outside, at the host's address: DNAT keeps the client's address.
    assert_answers(&w.outside, proto, v4(HOST_ADDR, port), "c1", OUTSIDE_ADDR);
    // From the host itself on 127.0.0.1: relayed (proxy) or NATed (hairpin) from the bridge's
    // address either way.
    assert_answers(
        &Host,
        proto,
        v4(Ipv4Addr::LOCALHOST, port),
        "c1",
        c1.gateway,
    );
    // From another container, at the host's address: the answer must come back from that
    // address too, or the client's socket (connected to it) never sees it.
    assert_answers(&c2, proto, v4(HOST_ADDR, port), "c1", via_c2(&c2));

    w.unpublish("c1", &map);
    fw.assert_element(DNAT_PORTS, &dnat, false);
    fw.assert_element(PUBLISHED, &published, false);
    assert_refused(&w.outside, proto, v4(HOST_ADDR, port), &web);
    assert_refused(&Host, proto, v4(Ipv4Addr::LOCALHOST, port), &web);
    assert_refused(&c2, proto, v4(HOST_ADDR, port), &web);
    // The container itself still answers on its own address: only the mapping went.
    assert_answers(&c2, proto, c1.at(80), "c1", c2.ip);
}

/// With the userland proxy (the default), the DNAT skips traffic that comes from docker0 (nat
/// DOCKER's `! -i docker0`, nftables' `iifname != "docker0"`), so c2 reaches the proxy on the
/// host, which connects to c1 from the gateway.
fn with_userland_proxy(fw: Fw, bin: &'static Path, proto: Proto) {
    let mut w = World::new(bin, &format!("proxy-{}", proto.as_str()));
    w.start(&fw.flags(&[]));
    published_port_cycle(&w, fw, proto, |c2| c2.gateway);
    w.stop();
}

/// In hairpin mode (no proxy) the DNAT applies on docker0 too, and c1 sees c2 itself.
fn in_hairpin_mode(fw: Fw, bin: &'static Path, proto: Proto) {
    let mut w = World::new(bin, &format!("hairpin-{}", proto.as_str()));
    w.start(&fw.flags(&["--userland-proxy=false"]));
    published_port_cycle(&w, fw, proto, |c2| c2.ip);
    w.stop();
}

fn published_tcp_port_with_the_userland_proxy(fw: Fw, bin: &'static Path) {
    with_userland_proxy(fw, bin, Proto::Tcp);
}
in_both_modes!(published_tcp_port_with_the_userland_proxy);

/// The proxy's answers to c2 must leave from the host address c2 wrote to, not from the
/// address the route to c2 prefers (docker0's): Docker 1.x got this wrong (moby/moby#11998,
/// moby/libnetwork#1729) and Docker 28 fixed it with IP_PKTINFO (moby/moby#48571).
fn published_udp_port_with_the_userland_proxy(fw: Fw, bin: &'static Path) {
    with_userland_proxy(fw, bin, Proto::Udp);
}
in_both_modes!(published_udp_port_with_the_userland_proxy);

fn published_tcp_port_in_hairpin_mode(fw: Fw, bin: &'static Path) {
    in_hairpin_mode(fw, bin, Proto::Tcp);
}
in_both_modes!(published_tcp_port_in_hairpin_mode);

fn published_udp_port_in_hairpin_mode(fw: Fw, bin: &'static Path) {
    in_hairpin_mode(fw, bin, Proto::Udp);
}
in_both_modes!(published_udp_port_in_hairpin_mode);

fn ip_127_0_0_1_is_not_reachable_from_outside(fw: Fw, bin: &'static Path) {
    let mut w = World::new(bin, "ip-lo");
    w.start(&fw.flags(&["--ip", "127.0.0.1"]));
    let c1 = w.container("c1");
    let web = c1.run(|| Echo::start("c1", 80));
    for proto in BOTH {
        let map = w.publish("c1", 80, proto, None);
        assert_eq!(map["host_ip"], "127.0.0.1", "--ip is the default: {map}");
        let port = World::host_port(&map);
        let p = proto.as_str();
        let dnat = format!("127.0.0.1 . {p} . {port} : {} . 80", c1.ip);
        fw.assert_element(DNAT_ADDR_PORTS, &dnat, true);
        fw.assert_element(DNAT_PORTS, &format!("{p} . {port} : {} . 80", c1.ip), false);
        assert_answers(
            &Host,
            proto,
            v4(Ipv4Addr::LOCALHOST, port),
            "c1",
            c1.gateway,
        );
        assert_refused(&w.outside, proto, v4(HOST_ADDR, port), &web);
    }
    w.stop();
}
in_both_modes!(ip_127_0_0_1_is_not_reachable_from_outside);

// ---------------------------------------------------------------------------------------------
// Leaving no trace
// ---------------------------------------------------------------------------------------------

fn detach_release_and_teardown_restore_every_namespace(fw: Fw, bin: &'static Path) {
    let mut w = World::new(bin, "restore");
    let flags = fw.flags(&["--icc=false"]);
    // The host as the admin readied it (nftables mode: forwarding on), before the daemon.
    world::prepare_host(&flags);
    let host_before = NsState::capture(Tables::Host);
    let outside_before = w.outside.state();
    w.start(&flags);
    let host_initialised = NsState::capture(Tables::Host);
    fw.assert_initialised(&host_before, &host_initialised);
    let table_initialised = fw.table();

    let (n1, n2) = (Netns::new("c1"), Netns::new("c2"));
    let (s1, s2) = (n1.state(), n2.state());
    let attached = w.attach("c1", &n1, 201);
    let c1 = World::container_of("c1", n1, attached);
    // Attaching again changes nothing and says so.
    assert_eq!(w.attach("c1", &c1.ns, 200), c1.attached);
    let c2 = w.container("c2");
    let veths = [&c1, &c2].map(|c| c.attached["host_veth"].as_str().map(str::to_owned));
    let m1 = w.publish("c1", 80, Proto::Tcp, None);
    w.publish("c2", 53, Proto::Udp, None);
    w.link(&c1, &c2, &["5432/tcp"], true);
    let web = c1.run(|| Echo::start("c1", 80));
    let port = World::host_port(&m1);
    assert_answers(
        &w.outside,
        Proto::Tcp,
        v4(HOST_ADDR, port),
        "c1",
        OUTSIDE_ADDR,
    );

    // A container with an interface and a port but no namespace: release_interface.
    w.call(
        "/v1/allocate_interface",
        &serde_json::json!({"id": "c3"}),
        201,
    );
    w.publish("c3", 8080, Proto::Tcp, None);
    w.call(
        "/v1/release_interface",
        &serde_json::json!({"id": "c3"}),
        200,
    );

    // Detach (answered once the veth is deleted): the container's namespace is as it
    // started, its port is gone.
    w.detach("c1", true);
    assert_eq!(c1.ns.state(), s1, "c1's namespace after detach");
    assert_refused(&w.outside, Proto::Tcp, v4(HOST_ADDR, port), &web);
    // c1's link to c2 went with it: no rule may name an address that is free again.
    let state = w.daemon().state();
    assert_eq!(state["links"], serde_json::json!([]), "{state}");
    w.detach("c2", true);
    assert_eq!(c2.ns.state(), s2, "c2's namespace after detach");
    for v in veths.iter().flatten() {
        assert!(testns::ip_link(v).is_none(), "{v} left on the host");
    }
    let state = w.daemon().state();
    assert_eq!(state["containers"], serde_json::json!({}), "{state}");
    assert_eq!(state["links"], serde_json::json!([]), "{state}");
    // Everything per container is gone: the host is as the daemon's init left it.
    assert_eq!(
        NsState::capture(Tables::Host),
        host_initialised,
        "the host after detaching and releasing everything"
    );
    assert_eq!(
        fw.table(),
        table_initialised,
        "table ip docker-bridges after detaching and releasing everything"
    );

    w.teardown();
    assert_eq!(
        NsState::capture(Tables::Host),
        host_before,
        "host after teardown"
    );
    fw.assert_torn_down();
    assert_eq!(w.outside.state(), outside_before, "outside after teardown");
    assert_eq!(c1.ns.state(), s1, "c1 after teardown");
    assert_eq!(c2.ns.state(), s2, "c2 after teardown");
}
in_both_modes!(detach_release_and_teardown_restore_every_namespace);

fn teardown_with_containers_attached_restores_every_namespace(fw: Fw, bin: &'static Path) {
    let mut w = World::new(bin, "teardown-attached");
    let flags = fw.flags(&[]);
    world::prepare_host(&flags);
    let host_before = NsState::capture(Tables::Host);
    let outside_before = w.outside.state();
    w.start(&flags);
    fw.assert_initialised(&host_before, &NsState::capture(Tables::Host));
    let n1 = Netns::new("c1");
    let s1 = n1.state();
    let attached = w.attach("c1", &n1, 201);
    let c1 = World::container_of("c1", n1, attached);
    let m = w.publish("c1", 80, Proto::Tcp, None);
    let web = c1.run(|| Echo::start("c1", 80));
    let port = World::host_port(&m);
    assert_answers(
        &w.outside,
        Proto::Tcp,
        v4(HOST_ADDR, port),
        "c1",
        OUTSIDE_ADDR,
    );

    // Stop and tear down with c1 still plugged in: teardown releases all it recorded.
    w.teardown();
    assert_eq!(
        NsState::capture(Tables::Host),
        host_before,
        "host after teardown"
    );
    fw.assert_torn_down();
    assert_eq!(c1.ns.state(), s1, "c1 after teardown");
    assert_eq!(w.outside.state(), outside_before, "outside after teardown");
    drop(web);
}
in_both_modes!(teardown_with_containers_attached_restores_every_namespace);

fn cli_attach_and_detach(fw: Fw, bin: &'static Path) {
    let mut w = World::new(bin, "cli-attach");
    w.start(&fw.flags(&[]));
    let host = Echo::start("host", ECHO);

    // By path, with the default interface name.
    let n1 = Netns::new("c1");
    let s1 = n1.state();
    w.cli(&["attach", "c1", n1.path_str()]).assert_success();
    // By process id, with another interface name.
    let n2 = Netns::new("c2");
    let s2 = n2.state();
    let tid = n2.tid().to_string();
    w.cli(&["attach", "c2", &tid, "--ifname", "net1"])
        .assert_success();

    let state = w.daemon().state();
    for (id, ns, ifname) in [("c1", &n1, "eth0"), ("c2", &n2, "net1")] {
        let ip: Ipv4Addr = state["containers"][id]["ip"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no ip for {id} in {state}"));
        let addrs = ns.run(|| testns::ip_addrs4(ifname));
        assert_eq!(addrs.len(), 1, "{id}: {ifname} {addrs:?}");
        assert!(addrs[0].starts_with(&format!("{ip}/")), "{id}: {addrs:?}");
        let gateway = state["address"]
            .as_str()
            .and_then(|a| a.split('/').next())
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no bridge address in {state}"));
        assert_answers(ns, Proto::Tcp, v4(gateway, ECHO), "host", ip);
    }

    // --wait: answered once the veth is deleted.
    let out = w.cli(&["detach", "c1", "--wait"]);
    out.assert_success();
    assert_eq!(n1.state(), s1, "c1 after detach --wait");
    // Without: answered once unplugged; the pair goes soon after.
    w.cli(&["detach", "c2"]).assert_success();
    eventually("c2's namespace as it started", || n2.state() == s2);
    drop(host);
    w.stop();
}
in_both_modes!(cli_attach_and_detach);

/// Like Docker 29, `--firewall-backend=nftables` does not turn IPv4 forwarding on: with
/// `ip_forward` off in the host and no `--ip-forward=false`, `init` and `daemon` refuse to
/// start, say why and what to do, and leave the host exactly as it was.
#[test]
fn nftables_refuses_to_start_while_forwarding_is_off() {
    world_test("nftables_refuses_to_start_while_forwarding_is_off", |bin| {
        let w = World::new(bin, "nft-nofwd");
        e2e_tests::set_ip_forward(false);
        let before = NsState::capture(Tables::Host);
        assert_eq!(before.ip_forward, "0");
        assert_eq!(nft_ruleset(), "", "nft list ruleset before");
        let host = w.inst.host_url();
        for cmd in ["init", "daemon"] {
            let out = run_briefly(&w, &["-H", &host, "--firewall-backend=nftables", cmd]);
            let err = out.assert_failure();
            assert!(
                err.contains("ip_forward") && err.contains("--ip-forward=false"),
                "{cmd}: the error must name ip_forward and --ip-forward=false:\n{out}"
            );
            assert!(testns::ip_link("docker0").is_none(), "{cmd} made docker0");
            assert_eq!(nft_ruleset(), "", "nft list ruleset after {cmd}");
            assert_eq!(
                NsState::capture(Tables::Host),
                before,
                "the host after {cmd}"
            );
        }
    });
}

/// Runs `dockerd-net <args>` of `w`'s instance, which must exit within 30 s (a daemon that
/// starts after all is killed, and the test fails rather than hangs).
fn run_briefly(w: &World, args: &[&str]) -> e2e_tests::Outcome {
    let out_path = w.inst.dir().join("briefly.out");
    let err_path = w.inst.dir().join("briefly.err");
    let create = |p: &Path| std::fs::File::create(p).unwrap_or_else(|e| panic!("{p:?}: {e}"));
    let mut cmd = w.inst.command(args);
    cmd.stdin(std::process::Stdio::null())
        .stdout(create(&out_path))
        .stderr(create(&err_path));
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "dockerd-net {args:?} still runs after 30 s:\n{}",
                std::fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    e2e_tests::Outcome {
        status,
        stdout: read(&out_path),
        stderr: read(&err_path),
    }
}

/// Polls for at most five seconds.
#[track_caller]
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !f() {
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: not within 5 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

fn detach_unplugs_at_once_and_the_veth_is_gone_soon_after(fw: Fw, bin: &'static Path) {
    let mut w = World::new(bin, "detach-reap");
    w.start(&fw.flags(&[]));
    let host_initialised = NsState::capture(Tables::Host);
    let host = Echo::start("host", ECHO);
    let n1 = Netns::new("c1");
    let s1 = n1.state();
    let attached = w.attach("c1", &n1, 201);
    let c1 = World::container_of("c1", n1, attached);
    let veth = c1.attached["host_veth"]
        .as_str()
        .expect("host_veth")
        .to_owned();
    assert_answers(&c1, Proto::Tcp, v4(c1.gateway, ECHO), "host", c1.ip);

    let d = w.detach("c1", false);
    assert_eq!(d["detached"], true, "{d}");
    assert_eq!(d["host_veth"], veth.as_str(), "{d}");
    // (a) Right after the answer: the host end is unplugged and down, or already gone.
    if let Some(l) = testns::ip_link(&veth) {
        assert!(l.get("master").is_none(), "still on the bridge: {l}");
        assert!(!e2e_tests::has_flag(&l, "UP"), "still up: {l}");
        assert_eq!(
            l["group"],
            netcore::ops::REAP_GROUP.to_string(),
            "retired: {l}"
        );
    }
    // ...so the container reaches nothing any more.
    let r = c1.run(|| world::exchange(Proto::Tcp, v4(c1.gateway, ECHO), DROPPED));
    assert!(
        !matches!(r, Reach::Answered(_)),
        "c1 still connected: {r:?}"
    );
    // Its allocations are released at once.
    let state = w.daemon().state();
    assert_eq!(state["containers"], serde_json::json!({}), "{state}");
    // (b) The reaper deletes both ends soon after.
    eventually("the host end deleted", || testns::ip_link(&veth).is_none());
    eventually("the container end deleted", || c1.ns.state() == s1);
    assert_eq!(
        NsState::capture(Tables::Host),
        host_initialised,
        "the host as the daemon's init left it"
    );

    drop(host);
    w.stop();
}
in_both_modes!(detach_unplugs_at_once_and_the_veth_is_gone_soon_after);

/// An attach of the same container into the same namespace with the same interface name
/// right after its detach: the old pair may still wait for the reaper (eth0 taken inside,
/// the old host end still there), and the attach must succeed all the same.
fn immediate_reattach_into_the_same_namespace_works(fw: Fw, bin: &'static Path) {
    let mut w = World::new(bin, "reattach-now");
    w.start(&fw.flags(&[]));
    let host = Echo::start("host", ECHO);
    let c1 = w.container("c1");
    let veth1 = c1.attached["host_veth"]
        .as_str()
        .expect("host_veth")
        .to_owned();
    w.detach("c1", false);
    let again = w.attach("c1", &c1.ns, 201);
    let ip: Ipv4Addr = again["interface"]["ip"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no ip in {again}"));
    assert_answers(&c1.ns, Proto::Tcp, v4(c1.gateway, ECHO), "host", ip);
    let port =
        testns::ip_link(again["host_veth"].as_str().expect("host_veth")).expect("the new host end");
    assert_eq!(port["master"], "docker0", "{port}");
    eventually("the old pair deleted", || {
        veth1 == again["host_veth"] || testns::ip_link(&veth1).is_none()
    });
    drop(host);
    w.stop();
}
in_both_modes!(immediate_reattach_into_the_same_namespace_works);
