//! The `AttachOps` conformance suite (issue 5): one set of checks every kernel backend must pass
//! to plug a container's network namespace into the bridge.
//!
//! Each case runs in a fresh network namespace (the "host", `testns::in_netns`) with a second
//! one standing in for the container ([`Container`]: a parked thread that unshared its network
//! namespace, named by `/proc/<pid>/task/<tid>/ns/net`). The backend is opened in the host
//! namespace with `open_here` and, where a case needs the container side, inside the container
//! with `open_in(path)`. Everything is read back from the kernel with `ip -j` run in the right
//! namespace (`e2e_tests::kernel_*` and `testns::ip_*` on a thread that joined it), never through
//! the backend under test. The full attach case also moves real TCP traffic both ways.
//!
//! Adding a backend is one more `#[test]` with one call, e.g.
//! `attach_conformance(|| IoctlLinks::new().expect("ioctl"), |ns| IoctlLinks::new_in(ns).expect("ioctl in ns"));`

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::thread::{self};
use std::time::Duration;

use e2e_tests::{has_flag, kernel_index, kernel_links, kernel_routes_v4};
use ipnet::Ipv4Net;
use netcore::attach::{AttachRequest, AttachSide, apply, host_veth_name, plan};
use netcore::mac::MacAddr;
use netcore::ops::{AttachOps, LinkOps, OpsErrorKind, REAP_GROUP, RouteV4, VethSpec};
use testns::{Netns as Container, ip_addr_gen_mode, ip_addrs6, ip_link, run, try_run, wait_until};

#[test]
fn netlink_attach_conforms() {
    attach_conformance(
        || backend_netlink::NetlinkLinks::new().expect("open netlink in the host namespace"),
        |ns| backend_netlink::NetlinkLinks::new_in(ns).expect("open netlink in the container"),
    );
}

/// Everything a case gets: the container, and ways to open the backend under test on either
/// side (each call opens a new one).
struct Env<'a> {
    ctr: &'a Container,
    here: &'a dyn Fn() -> Box<dyn AttachSide>,
    inside: &'a dyn Fn(&Path) -> Box<dyn AttachSide>,
}

impl Env<'_> {
    fn host(&self) -> Box<dyn AttachSide> {
        (self.here)()
    }

    fn inside(&self) -> Box<dyn AttachSide> {
        (self.inside)(self.ctr.path())
    }
}

type Case = (&'static str, fn(&Env<'_>));

const CASES: &[Case] = &[
    (
        "create_veth_puts_the_peer_in_the_container",
        create_veth_puts_the_peer_in_the_container,
    ),
    (
        "peer_name_taken_in_the_container_is_already_exists",
        peer_name_taken_in_the_container_is_already_exists,
    ),
    (
        "missing_netns_is_not_found_naming_the_path",
        missing_netns_is_not_found_naming_the_path,
    ),
    ("set_master_enslaves_the_port", set_master_enslaves_the_port),
    (
        "set_hairpin_flips_the_port_flag",
        set_hairpin_flips_the_port_flag,
    ),
    (
        "ipv6_autoconf_off_leaves_both_ends_without_ipv6_addresses",
        ipv6_autoconf_off_leaves_both_ends_without_ipv6_addresses,
    ),
    (
        "ipv6_autoconf_off_without_ipv6_on_the_link_is_ok",
        ipv6_autoconf_off_without_ipv6_on_the_link_is_ok,
    ),
    (
        "add_route_lands_in_the_container",
        add_route_lands_in_the_container,
    ),
    (
        "attach_plugs_containers_into_the_bridge",
        attach_plugs_containers_into_the_bridge,
    ),
    (
        "attach_failing_at_create_leaves_no_veth",
        attach_failing_at_create_leaves_no_veth,
    ),
    (
        "attach_failing_late_removes_the_veth",
        attach_failing_late_removes_the_veth,
    ),
    (
        "retire_unplugs_and_delete_group_takes_both_ends",
        retire_unplugs_and_delete_group_takes_both_ends,
    ),
    (
        "delete_group_of_an_empty_group_is_ok",
        delete_group_of_an_empty_group_is_ok,
    ),
];

/// Runs every case against one backend, each in a fresh host namespace with a fresh container,
/// and reports all failing cases at the end (each failure's panic message is printed as it
/// happens). Skips (or, under CI's `DOCKERD_NET_ROOT_TESTS`, fails) without root.
fn attach_conformance<H: LinkOps + AttachOps + 'static>(
    open_here: impl Fn() -> H + Copy + Send + 'static,
    open_in: impl Fn(&Path) -> H + Copy + Send + 'static,
) {
    let backend = std::any::type_name::<H>();
    if !testns::can_run_kernel_tests(&format!("attach conformance of {backend}")) {
        return;
    }
    let mut failed = Vec::new();
    for &(name, case) in CASES {
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            testns::in_netns(move || {
                let ctr = Container::new();
                let here = move || -> Box<dyn AttachSide> { Box::new(open_here()) };
                let inside = move |ns: &Path| -> Box<dyn AttachSide> { Box::new(open_in(ns)) };
                case(&Env {
                    ctr: &ctr,
                    here: &here,
                    inside: &inside,
                });
            })
        }));
        if outcome.is_err() {
            eprintln!("{backend}: attach conformance case {name} FAILED");
            failed.push(name);
        }
    }
    assert!(
        failed.is_empty(),
        "{backend}: {} of {} attach conformance cases failed: {failed:?}",
        failed.len(),
        CASES.len()
    );
}

// ---------------------------------------------------------------------------------------------
// The container and reading the kernel inside it.
// ---------------------------------------------------------------------------------------------

fn names() -> Vec<String> {
    kernel_links().into_iter().map(|l| l.name).collect()
}

fn kernel_link(name: &str) -> serde_json::Value {
    ip_link(name).unwrap_or_else(|| panic!("the kernel has no link {name}"))
}

fn net(s: &str) -> Ipv4Net {
    s.parse().expect("test network")
}

const MAC: MacAddr = MacAddr([0x02, 0x42, 0xac, 0x11, 0x00, 0x02]);
const MTU: u32 = 1450;

fn veth(env: &Env<'_>, host: &str, peer: &str) -> VethSpec {
    VethSpec {
        host: host.into(),
        peer: peer.into(),
        peer_netns: env.ctr.path().to_path_buf(),
        peer_mac: MAC,
        mtu: MTU,
    }
}

/// `docker0` with the gateway address, up, as init leaves it.
fn docker0() {
    run(&["ip", "link", "add", "docker0", "type", "bridge"]);
    run(&["ip", "addr", "add", "172.17.42.1/16", "dev", "docker0"]);
    run(&["ip", "link", "set", "docker0", "up"]);
}

// ---------------------------------------------------------------------------------------------
// The operations one by one.
// ---------------------------------------------------------------------------------------------

fn create_veth_puts_the_peer_in_the_container(env: &Env<'_>) {
    env.host()
        .create_veth(&veth(env, "vethcf0", "eth0"))
        .expect("create_veth");
    let host = kernel_link("vethcf0");
    assert_eq!(host["linkinfo"]["info_kind"], "veth", "{host}");
    assert_eq!(host["mtu"], MTU, "{host}");
    assert!(!has_flag(&host, "UP"), "host end down: {host}");
    assert!(
        host.get("link_netnsid").is_some(),
        "peer in another namespace: {host}"
    );
    assert_eq!(names(), ["lo", "vethcf0"], "no peer in the host namespace");
    env.ctr.run(|| {
        let peer = kernel_link("eth0");
        assert_eq!(peer["linkinfo"]["info_kind"], "veth", "{peer}");
        assert_eq!(peer["address"], MAC.to_string(), "{peer}");
        assert_eq!(peer["mtu"], MTU, "{peer}");
        assert!(!has_flag(&peer, "UP"), "peer down: {peer}");
        assert_eq!(names(), ["lo", "eth0"], "no host end in the container");
    });
}

fn peer_name_taken_in_the_container_is_already_exists(env: &Env<'_>) {
    env.ctr
        .run(|| run(&["ip", "link", "add", "eth0", "type", "bridge"]));
    let err = env
        .host()
        .create_veth(&veth(env, "vethcf0", "eth0"))
        .expect_err("eth0 is taken in the container");
    assert_eq!(err.kind, OpsErrorKind::AlreadyExists, "{err}");
    let text = err.to_string();
    assert!(
        text.contains(&env.ctr.path().display().to_string()),
        "names the namespace: {text}"
    );
    assert_eq!(names(), ["lo"], "no host end left behind");
    env.ctr.run(|| {
        assert_eq!(names(), ["lo", "eth0"]);
        assert_eq!(kernel_link("eth0")["linkinfo"]["info_kind"], "bridge");
    });
}

fn missing_netns_is_not_found_naming_the_path(env: &Env<'_>) {
    let missing = "/run/netns-cf-missing/ctr0";
    let err = env
        .host()
        .create_veth(&VethSpec {
            peer_netns: missing.into(),
            ..veth(env, "vethcf0", "eth0")
        })
        .expect_err("no such namespace");
    assert_eq!(err.kind, OpsErrorKind::NotFound, "{err}");
    assert!(err.to_string().contains(missing), "{err}");
    assert_eq!(names(), ["lo"]);
}

fn set_master_enslaves_the_port(env: &Env<'_>) {
    docker0();
    let mut host = env.host();
    host.create_veth(&veth(env, "vethcf0", "eth0"))
        .expect("create_veth");
    host.set_master("vethcf0", "docker0").expect("set_master");
    let l = kernel_link("vethcf0");
    assert_eq!(l["master"], "docker0", "{l}");
    assert_eq!(l["linkinfo"]["info_slave_kind"], "bridge", "{l}");

    let err = host
        .set_master("vethcf0", "cfnosuch0")
        .expect_err("no such bridge");
    assert_eq!(err.kind, OpsErrorKind::NotFound, "{err}");
    assert!(err.to_string().contains("cfnosuch0"), "{err}");
    let err = host
        .set_master("cfnosuch1", "docker0")
        .expect_err("no such link");
    assert_eq!(err.kind, OpsErrorKind::NotFound, "{err}");
    assert!(err.to_string().contains("cfnosuch1"), "{err}");
    assert_eq!(kernel_link("vethcf0")["master"], "docker0");
}

fn hairpin(link: &str) -> serde_json::Value {
    kernel_link(link)["linkinfo"]["info_slave_data"]["hairpin"].clone()
}

fn set_hairpin_flips_the_port_flag(env: &Env<'_>) {
    docker0();
    let mut host = env.host();
    host.create_veth(&veth(env, "vethcf0", "eth0"))
        .expect("create_veth");
    host.set_master("vethcf0", "docker0").expect("set_master");
    assert_eq!(hairpin("vethcf0"), false, "kernel default");
    host.set_hairpin("vethcf0", true).expect("hairpin on");
    assert_eq!(hairpin("vethcf0"), true);
    host.set_hairpin("vethcf0", false).expect("hairpin off");
    assert_eq!(hairpin("vethcf0"), false);
    let err = host
        .set_hairpin("cfnosuch0", true)
        .expect_err("no such link");
    assert!(err.to_string().contains("cfnosuch0"), "{err}");
}

/// How long the kernel may take to give a link that came up its link-local address: the
/// carrier reaches addrconf through the link-watch work, which runs asynchronously.
const LINK_LOCAL_WITHIN: Duration = Duration::from_secs(5);

fn link_local(addrs: &[String]) -> bool {
    addrs.iter().any(|a| a.starts_with("fe80:"))
}

/// The link's operational state is up: the carrier change went through link-watch, the
/// same work that gives a link its IPv6 link-local address.
fn oper_up(name: &str) -> bool {
    kernel_link(name)["operstate"] == "UP"
}

fn ipv6_autoconf_off_leaves_both_ends_without_ipv6_addresses(env: &Env<'_>) {
    docker0();
    let mut host = env.host();
    // vethcf0/eth0 get autoconfiguration turned off; vethcf1/eth1 are the control, left as
    // the kernel makes them, so that a check for "no address" cannot pass merely because
    // the kernel was slow.
    for (h, p) in [("vethcf0", "eth0"), ("vethcf1", "eth1")] {
        host.create_veth(&veth(env, h, p)).expect("create_veth");
    }
    host.set_ipv6_autoconf_off("vethcf0")
        .expect("host end, while down");
    let mut inside = env.inside();
    inside
        .set_ipv6_autoconf_off("eth0")
        .expect("container end, while down");
    assert_eq!(ip_addr_gen_mode("vethcf0").as_deref(), Some("none"));
    assert_eq!(
        ip_addr_gen_mode("vethcf1").as_deref(),
        Some("eui64"),
        "only the link asked for"
    );
    assert_eq!(ip_addr_gen_mode("docker0").as_deref(), Some("eui64"));
    env.ctr.run(|| {
        assert_eq!(ip_addr_gen_mode("eth0").as_deref(), Some("none"));
        assert_eq!(ip_addr_gen_mode("eth1").as_deref(), Some("eui64"));
        assert_eq!(ip_addr_gen_mode("lo").as_deref(), Some("eui64"));
    });

    // Up, on the bridge, as attach leaves them.
    for h in ["vethcf0", "vethcf1"] {
        host.set_master(h, "docker0").expect("set_master");
        host.set_up(h).expect("host end up");
    }
    for l in ["lo", "eth0", "eth1"] {
        inside.set_up(l).expect("up inside");
    }
    wait_until(
        "the control veth's link-local addresses",
        LINK_LOCAL_WITHIN,
        || link_local(&ip_addrs6("vethcf1")) && env.ctr.run(|| link_local(&ip_addrs6("eth1"))),
    );
    wait_until(
        "vethcf0 and eth0 to be operationally up",
        LINK_LOCAL_WITHIN,
        || oper_up("vethcf0") && env.ctr.run(|| oper_up("eth0")),
    );
    assert_eq!(ip_addrs6("vethcf0"), Vec::<String>::new(), "host end");
    assert_eq!(ip_addr_gen_mode("vethcf0").as_deref(), Some("none"));
    env.ctr.run(|| {
        assert_eq!(ip_addrs6("eth0"), Vec::<String>::new(), "container end");
        assert_eq!(ip_addrs6("lo"), ["::1/128"], "loopback keeps its IPv6");
        // IPv6 itself is still on: an address added by hand works.
        run(&[
            "ip",
            "-6",
            "addr",
            "add",
            "fd00:cf::2/64",
            "dev",
            "eth0",
            "nodad",
        ]);
        assert_eq!(ip_addrs6("eth0"), ["fd00:cf::2/64"]);
    });

    let err = host
        .set_ipv6_autoconf_off("cfnosuch0")
        .expect_err("no such link");
    assert_eq!(err.kind, OpsErrorKind::NotFound, "{err}");
    assert!(err.to_string().contains("cfnosuch0"), "{err}");
}

/// A link without IPv6 state answers `EAFNOSUPPORT`, as every link does on a kernel booted
/// with `ipv6.disable=1`: nothing to turn off, so it is not an error. Here the link has no
/// IPv6 state because its MTU is below IPv6's minimum (1280).
fn ipv6_autoconf_off_without_ipv6_on_the_link_is_ok(env: &Env<'_>) {
    let mut host = env.host();
    host.create_veth(&VethSpec {
        mtu: 1200,
        ..veth(env, "vethcf0", "eth0")
    })
    .expect("create_veth");
    assert_eq!(
        ip_addr_gen_mode("vethcf0"),
        None,
        "no IPv6 state on the link"
    );
    let (ok, out) = try_run(&["ip", "link", "set", "vethcf0", "addrgenmode", "none"]);
    assert!(
        !ok && out.contains("Address family not supported"),
        "the kernel answers EAFNOSUPPORT: {out}"
    );
    host.set_ipv6_autoconf_off("vethcf0")
        .expect("EAFNOSUPPORT is success");
    env.inside()
        .set_ipv6_autoconf_off("eth0")
        .expect("EAFNOSUPPORT is success inside too");
    assert_eq!(names(), ["lo", "vethcf0"], "the link is untouched");
}

fn add_route_lands_in_the_container(env: &Env<'_>) {
    let mut host = env.host();
    host.create_veth(&veth(env, "vethcf0", "eth0"))
        .expect("create_veth");
    host.set_up("vethcf0").expect("host end up");
    let mut inside = env.inside();
    inside
        .add_addr("eth0", net("172.17.0.2/16"))
        .expect("add_addr inside");
    inside.set_up("eth0").expect("set_up inside");
    let gw = Ipv4Addr::new(172, 17, 42, 1);
    let default = RouteV4 {
        dst: None,
        gateway: Some(gw),
        oif: None,
    };
    inside.add_route(&default).expect("default route");
    let eth0 = env.ctr.run(|| kernel_index("eth0"));
    inside
        .add_route(&RouteV4 {
            dst: Some(net("10.50.0.0/24")),
            gateway: None,
            oif: Some(eth0),
        })
        .expect("device route");

    let routes: Vec<RouteV4> = env
        .ctr
        .run(kernel_routes_v4)
        .iter()
        .map(|k| k.route)
        .collect();
    let want = [
        RouteV4 {
            dst: None,
            gateway: Some(gw),
            oif: Some(eth0),
        },
        RouteV4 {
            dst: Some(net("10.50.0.0/24")),
            gateway: None,
            oif: Some(eth0),
        },
        RouteV4 {
            dst: Some(net("172.17.0.0/16")),
            gateway: None,
            oif: Some(eth0),
        },
    ];
    assert_eq!(routes, want, "the container's main table");
    assert!(
        kernel_routes_v4().is_empty(),
        "nothing in the host namespace"
    );

    let err = inside.add_route(&default).expect_err("same route again");
    assert_eq!(err.kind, OpsErrorKind::AlreadyExists, "{err}");
    let err = inside
        .add_route(&RouteV4 {
            dst: Some(net("10.60.0.0/16")),
            gateway: Some(Ipv4Addr::new(10, 9, 9, 9)),
            oif: None,
        })
        .expect_err("gateway off every connected network");
    assert!(err.to_string().contains("Network is unreachable"), "{err}");
    assert_eq!(env.ctr.run(kernel_routes_v4).len(), want.len());
}

// ---------------------------------------------------------------------------------------------
// A whole attach: netcore's plan, applied through the backend on both sides.
// ---------------------------------------------------------------------------------------------

const GATEWAY: Ipv4Addr = Ipv4Addr::new(172, 17, 42, 1);

fn request(
    env_ctr: &Container,
    id: &str,
    ip: Ipv4Addr,
    mac: MacAddr,
    hairpin: bool,
) -> AttachRequest {
    AttachRequest {
        bridge: "docker0".into(),
        host_veth: host_veth_name(id, 0),
        netns: env_ctr.path().to_path_buf(),
        ifname: "eth0".into(),
        ip,
        prefix_len: 16,
        gateway: GATEWAY,
        mac,
        mtu: MTU,
        hairpin,
    }
}

fn attach(
    env: &Env<'_>,
    ctr: &Container,
    req: &AttachRequest,
) -> Result<(), netcore::attach::AttachError> {
    let mut host = env.host();
    let mut inside = (env.inside)(ctr.path());
    apply(&plan(req), host.as_mut(), inside.as_mut())
}

/// What a container must look like after a successful attach, read inside it.
fn assert_container_plugged(ctr: &Container, req: &AttachRequest) {
    ctr.run(|| {
        let links = kernel_links();
        let got: Vec<&str> = links.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(got, ["lo", "eth0"], "{links:?}");
        assert!(links[0].up, "lo up: {links:?}");
        let eth0 = &links[1];
        assert_eq!(eth0.kind.as_deref(), Some("veth"));
        assert_eq!(eth0.mac, Some(req.mac));
        assert_eq!(eth0.mtu, req.mtu);
        assert!(eth0.up, "{eth0:?}");
        assert_eq!(eth0.addrs, [Ipv4Net::new(req.ip, 16).expect("prefix")]);
        let routes: Vec<RouteV4> = kernel_routes_v4().iter().map(|k| k.route).collect();
        assert_eq!(
            routes,
            [
                RouteV4 {
                    dst: None,
                    gateway: Some(GATEWAY),
                    oif: Some(eth0.index),
                },
                RouteV4 {
                    dst: Some(net("172.17.0.0/16")),
                    gateway: None,
                    oif: Some(eth0.index),
                },
            ],
            "default route via the gateway"
        );
    });
}

/// What the host end must look like after a successful attach.
fn assert_port(req: &AttachRequest) {
    let l = kernel_link(&req.host_veth);
    assert_eq!(l["linkinfo"]["info_kind"], "veth", "{l}");
    assert_eq!(l["master"], "docker0", "{l}");
    assert_eq!(l["mtu"], req.mtu, "{l}");
    assert!(has_flag(&l, "UP"), "{l}");
    assert_eq!(hairpin(&req.host_veth), req.hairpin, "{l}");
}

/// After attach, neither end of the veth has an IPv6 address (IPv6 was turned off on the host
/// end, autoconfiguration on the container end, while they were down), and the host end has
/// no `ff00::/8` route either, while the container's loopback keeps `::1` and the bridge,
/// which attach does not touch, gets its link-local address as usual. The bridge is the
/// control: its address comes through the same asynchronous link-watch work that would
/// have given the veth ends theirs, so once it is there theirs would be too.
fn assert_no_ipv6_on_the_veth(ctr: &Container, req: &AttachRequest) {
    wait_until("docker0's link-local address", LINK_LOCAL_WITHIN, || {
        link_local(&ip_addrs6("docker0"))
    });
    wait_until("the veth to be operationally up", LINK_LOCAL_WITHIN, || {
        oper_up(&req.host_veth) && ctr.run(|| oper_up(&req.ifname))
    });
    assert_eq!(
        testns::disable_ipv6(&req.host_veth),
        "1",
        "IPv6 off on the host end"
    );
    assert_eq!(
        ip_addrs6(&req.host_veth),
        Vec::<String>::new(),
        "host end {}",
        req.host_veth
    );
    assert_eq!(
        testns::ip_routes6("local", &req.host_veth),
        Vec::<serde_json::Value>::new(),
        "no IPv6 route for the host end"
    );
    ctr.run(|| {
        assert_eq!(ip_addr_gen_mode(&req.ifname).as_deref(), Some("none"));
        assert_eq!(
            ip_addrs6(&req.ifname),
            Vec::<String>::new(),
            "container end"
        );
        assert_eq!(ip_addrs6("lo"), ["::1/128"], "loopback keeps its IPv6");
    });
}

/// One TCP exchange: `connect` (run wherever the caller likes) reaches `listener`, sends a
/// line, gets it back reversed. Returns the address the listener saw the client come from.
fn exchange(listener: TcpListener, connect: impl FnOnce(SocketAddr) -> TcpStream) -> SocketAddr {
    let to = listener.local_addr().expect("local_addr");
    thread::scope(|s| {
        let server = s.spawn(move || {
            let (mut conn, from) = listener.accept().expect("accept");
            conn.set_read_timeout(Some(Duration::from_secs(10)))
                .expect("timeout");
            let mut buf = [0u8; 5];
            conn.read_exact(&mut buf).expect("read the request");
            buf.reverse();
            conn.write_all(&buf).expect("write the reply");
            from
        });
        let mut client = connect(to);
        client
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        client.write_all(b"hello").expect("send");
        let mut buf = [0u8; 5];
        client.read_exact(&mut buf).expect("receive");
        assert_eq!(&buf, b"olleh");
        server.join().expect("server thread")
    })
}

/// Generous: the first SYN can meet a bridge port that is not forwarding yet (the carrier
/// event reaches the bridge asynchronously), and TCP retries after a second.
fn connect(to: SocketAddr) -> TcpStream {
    TcpStream::connect_timeout(&to, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("connect to {to}: {e}"))
}

fn attach_plugs_containers_into_the_bridge(env: &Env<'_>) {
    docker0();
    // An address of the host outside the containers' subnet: a container reaches it only
    // through its default route.
    run(&["ip", "addr", "add", "192.0.2.1/32", "dev", "lo"]);

    let ip1 = Ipv4Addr::new(172, 17, 0, 2);
    let req1 = request(env.ctr, "container-one", ip1, MAC, true);
    attach(env, env.ctr, &req1).expect("attach the first container");
    assert_container_plugged(env.ctr, &req1);
    assert_port(&req1);
    assert_no_ipv6_on_the_veth(env.ctr, &req1);

    // A second container, without hairpin mode.
    let ctr2 = Container::new();
    let ip2 = Ipv4Addr::new(172, 17, 0, 3);
    let mac2 = MacAddr([0x02, 0x42, 0xac, 0x11, 0x00, 0x03]);
    let req2 = request(&ctr2, "container-two", ip2, mac2, false);
    attach(env, &ctr2, &req2).expect("attach the second container");
    assert_container_plugged(&ctr2, &req2);
    assert_port(&req2);
    assert_no_ipv6_on_the_veth(&ctr2, &req2);
    let host_names = names();
    assert_eq!(
        host_names.len(),
        4,
        "lo, docker0 and two veths: {host_names:?}"
    );

    // Host -> container, over the bridge.
    let listener = env
        .ctr
        .run(|| TcpListener::bind((ip1, 0)).expect("bind in the container"));
    let from = exchange(listener, connect);
    assert_eq!(
        from.ip(),
        GATEWAY,
        "the host speaks from the bridge address"
    );

    // Container -> host, through the container's default route.
    let listener = TcpListener::bind((Ipv4Addr::new(192, 0, 2, 1), 0)).expect("bind on the host");
    let from = exchange(listener, |to| env.ctr.run(|| connect(to)));
    assert_eq!(from.ip(), ip1);

    // Container -> container, across the bridge.
    let listener = ctr2.run(|| TcpListener::bind((ip2, 0)).expect("bind in the second container"));
    let from = exchange(listener, |to| env.ctr.run(|| connect(to)));
    assert_eq!(from.ip(), ip1);
}

fn attach_failing_at_create_leaves_no_veth(env: &Env<'_>) {
    docker0();
    env.ctr
        .run(|| run(&["ip", "link", "add", "eth0", "type", "bridge"]));
    let req = request(
        env.ctr,
        "container-one",
        Ipv4Addr::new(172, 17, 0, 2),
        MAC,
        true,
    );
    let err = attach(env, env.ctr, &req).expect_err("eth0 is taken in the container");
    assert_eq!(err.source.kind, OpsErrorKind::AlreadyExists, "{err}");
    assert!(err.step.starts_with("create veth "), "{err}");
    assert!(err.cleanup.is_none(), "{err}");
    assert_eq!(names(), ["lo", "docker0"], "no veth in the host namespace");
    env.ctr.run(|| {
        let links = kernel_links();
        let got: Vec<&str> = links.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(got, ["lo", "eth0"]);
        assert_eq!(
            links[1].kind.as_deref(),
            Some("bridge"),
            "the container's own eth0"
        );
        assert!(!links[0].up, "nothing was done inside");
    });
}

fn attach_failing_late_removes_the_veth(env: &Env<'_>) {
    docker0();
    // A gateway outside the container's subnet: the last step (the default route) fails
    // after the veth exists, is on the bridge, and eth0 is configured.
    let req = AttachRequest {
        gateway: Ipv4Addr::new(10, 99, 0, 1),
        ..request(
            env.ctr,
            "container-one",
            Ipv4Addr::new(172, 17, 0, 2),
            MAC,
            true,
        )
    };
    let err = attach(env, env.ctr, &req).expect_err("unreachable gateway");
    assert_eq!(
        err.step, "add default route via 10.99.0.1 in the container",
        "{err}"
    );
    assert!(
        err.source.to_string().contains("Network is unreachable"),
        "{err}"
    );
    assert!(err.cleanup.is_none(), "{err}");
    assert_eq!(names(), ["lo", "docker0"], "host end deleted");
    assert!(kernel_link("docker0").get("master").is_none());
    env.ctr.run(|| {
        assert_eq!(names(), ["lo"], "the peer went with the host end");
        assert!(kernel_routes_v4().is_empty());
    });
}

#[test]
fn ioctl_attach_conforms() {
    attach_conformance(
        || backend_ioctl::IoctlLinks::new().expect("ioctl"),
        |ns| backend_ioctl::IoctlLinks::new_in(ns).expect("ioctl in ns"),
    );
}

// ---------------------------------------------------------------------------------------------
// Retiring a veth and deleting the reap group (detach's two steps).
// ---------------------------------------------------------------------------------------------

fn group_of(link: &serde_json::Value) -> String {
    link["group"].as_str().unwrap_or_default().to_owned()
}

fn retire_unplugs_and_delete_group_takes_both_ends(env: &Env<'_>) {
    docker0();
    // An administrator's link in a group of its own: not ours to delete.
    run(&[
        "ip", "link", "add", "cfadmin0", "group", "7", "type", "bridge",
    ]);
    let mut host = env.host();
    for (h, p) in [("vethcf0", "eth0"), ("vethcf1", "eth1")] {
        host.create_veth(&veth(env, h, p)).expect("create_veth");
        host.set_master(h, "docker0").expect("set_master");
        host.set_up(h).expect("set_up");
    }
    let mut inside = env.inside();
    inside.set_up("eth0").expect("eth0 up inside");
    env.ctr.run(|| {
        let eth0 = kernel_link("eth0");
        assert!(!has_flag(&eth0, "NO-CARRIER"), "carrier before: {eth0}");
    });

    host.retire_link("vethcf0", REAP_GROUP)
        .expect("retire_link");
    let l = kernel_link("vethcf0");
    assert!(l.get("master").is_none(), "off the bridge: {l}");
    assert!(!has_flag(&l, "UP"), "down: {l}");
    assert_eq!(group_of(&l), REAP_GROUP.to_string(), "{l}");
    let other = kernel_link("vethcf1");
    assert_eq!(other["master"], "docker0", "the other port stays: {other}");
    assert_eq!(group_of(&other), "default", "{other}");
    env.ctr.run(|| {
        let eth0 = kernel_link("eth0");
        assert!(
            has_flag(&eth0, "NO-CARRIER"),
            "the container end lost its carrier: {eth0}"
        );
    });
    let err = host
        .retire_link("cfnosuch0", REAP_GROUP)
        .expect_err("no such link");
    assert_eq!(err.kind, OpsErrorKind::NotFound, "{err}");
    assert!(err.to_string().contains("cfnosuch0"), "{err}");

    host.retire_link("vethcf1", REAP_GROUP)
        .expect("retire_link");
    host.delete_group(REAP_GROUP).expect("delete_group");
    assert_eq!(
        names(),
        ["lo", "docker0", "cfadmin0"],
        "both host ends gone, the rest stays"
    );
    assert_eq!(group_of(&kernel_link("cfadmin0")), "7");
    env.ctr
        .run(|| assert_eq!(names(), ["lo"], "both container ends gone"));
    // Nothing left in the group: still fine.
    host.delete_group(REAP_GROUP)
        .expect("delete_group of an emptied group");
}

fn delete_group_of_an_empty_group_is_ok(env: &Env<'_>) {
    run(&["ip", "link", "add", "cfbr1", "type", "bridge"]);
    let mut host = env.host();
    host.delete_group(REAP_GROUP)
        .expect("nothing in the group is not an error");
    assert_eq!(names(), ["lo", "cfbr1"], "nothing deleted");
    // A group holding a link that cannot be deleted is refused whole: nothing goes.
    host.create_veth(&veth(env, "vethcf0", "eth0"))
        .expect("create_veth");
    host.retire_link("vethcf0", REAP_GROUP)
        .expect("retire_link");
    host.retire_link("lo", REAP_GROUP)
        .expect("lo into the group");
    let err = host
        .delete_group(REAP_GROUP)
        .expect_err("loopback cannot be deleted");
    assert_ne!(err.kind, OpsErrorKind::NotFound, "{err}");
    assert_eq!(names(), ["lo", "cfbr1", "vethcf0"]);
    env.ctr.run(|| assert_eq!(names(), ["lo", "eth0"]));
    run(&["ip", "link", "set", "lo", "group", "default", "up"]);
    host.delete_group(REAP_GROUP).expect("delete_group");
    assert_eq!(names(), ["lo", "cfbr1"]);
    env.ctr.run(|| assert_eq!(names(), ["lo"]));
}
