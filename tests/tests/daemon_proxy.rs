//! Localhost access to published ports (issue 4).
//!
//! With the userland proxy (Docker's default) the daemon itself listens on each published
//! host address (no process per port), from the moment the port is published until it is
//! released, and again after a restart; a port another program holds is refused (409) and
//! the refusal changes nothing. With `--userland-proxy=false` nothing listens: the kernel
//! does it (hairpin NAT): `route_localnet=1` on docker0, DNAT rules without `! -i docker0`,
//! and the POSTROUTING masquerade for locally sourced traffic into docker0.

use std::io::ErrorKind;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use e2e_tests::{
    Daemon, Instance, Tables, added_rules, current_netns, dockerd_net, expected_rules, golden,
    processes_in_netns, with_rules,
};
use serde_json::json;

/// Local addresses (`addr:port`) of `ss -H -ln` sockets of one kind (`-t` or `-u`), sorted.
fn listening(kind: &str) -> Vec<String> {
    let mut v: Vec<String> = testns::run(&["ss", "-H", "-ln", kind])
        .lines()
        .filter_map(|l| l.split_whitespace().nth(3).map(str::to_owned))
        .collect();
    v.sort();
    v
}

fn connects(addr: &str) -> bool {
    TcpStream::connect(addr).is_ok()
}

/// How a TCP connection to `addr` fails within 300 ms (`None`: it succeeds).
fn connect_error(addr: &str) -> Option<ErrorKind> {
    let addr: SocketAddr = addr.parse().expect("socket address");
    TcpStream::connect_timeout(&addr, Duration::from_millis(300))
        .err()
        .map(|e| e.kind())
}

#[track_caller]
fn post_ok(d: &Daemon, path: &str, body: &str) -> serde_json::Value {
    let r = d.post(path, body);
    assert!(
        r.status == 200 || r.status == 201,
        "{path} {body}: {} {}",
        r.status,
        r.body
    );
    r.json()
}

#[test]
fn userland_proxy_listens_while_a_port_is_published() {
    if !testns::can_run_kernel_tests("userland_proxy_listens_while_a_port_is_published") {
        return;
    }
    let bin = dockerd_net();
    testns::in_netns(move || {
        let inst = Instance::new(bin, "daemon-proxy");
        let d = inst.start_daemon(&[]);
        assert!(listening("-t").is_empty() && listening("-u").is_empty());
        post_ok(&d, "/v1/allocate_interface", r#"{"id":"c1"}"#);
        post_ok(
            &d,
            "/v1/allocate_port",
            r#"{"id":"c1","host_ip":"127.0.0.1","host_port":8080,"container_port":80}"#,
        );
        post_ok(
            &d,
            "/v1/allocate_port",
            r#"{"id":"c1","host_port":5353,"container_port":53,"proto":"udp"}"#,
        );
        let dynamic = post_ok(
            &d,
            "/v1/allocate_port",
            r#"{"id":"c1","container_port":443}"#,
        );
        assert_eq!(dynamic["host_port"], 49153);

        // Each published address is listened on, exactly there.
        assert_eq!(listening("-t"), ["0.0.0.0:49153", "127.0.0.1:8080"]);
        assert_eq!(listening("-u"), ["0.0.0.0:5353"]);
        assert!(connects("127.0.0.1:8080"));
        assert!(connects("127.0.0.1:49153"));
        assert!(!connects("127.0.0.2:8080"), "bound to 127.0.0.1 only");
        // By the daemon itself: no other process in the namespace.
        let procs = processes_in_netns(&current_netns());
        assert_eq!(
            procs.iter().map(|p| p.0).collect::<Vec<_>>(),
            [d.pid()],
            "{procs:?}"
        );

        // A host port another program holds: 409, and nothing changes.
        let holder = std::net::TcpListener::bind("0.0.0.0:9090").expect("bind 9090");
        let before = d.snapshot(Tables::Host);
        let r = d.post(
            "/v1/allocate_port",
            r#"{"id":"c1","host_port":9090,"container_port":90}"#,
        );
        assert_eq!(r.status, 409, "{}", r.body);
        let message = r.json()["message"].as_str().unwrap_or_default().to_owned();
        assert!(
            message.starts_with("Error starting userland proxy: listen tcp 0.0.0.0:9090: "),
            "{message}"
        );
        assert_eq!(d.snapshot(Tables::Host), before);
        drop(holder);

        // Released: no longer listened on.
        post_ok(
            &d,
            "/v1/release_port",
            r#"{"id":"c1","host_ip":"127.0.0.1","host_port":8080}"#,
        );
        assert!(!connects("127.0.0.1:8080"));
        assert_eq!(listening("-t"), ["0.0.0.0:49153"]);
        post_ok(
            &d,
            "/v1/release_port",
            r#"{"id":"c1","host_ip":"0.0.0.0","host_port":5353,"proto":"udp"}"#,
        );
        assert!(listening("-u").is_empty());

        // After a restart the remaining mapping is listened on again.
        let (status, log) = d.terminate();
        assert!(status.success(), "{status}\n{log}");
        assert!(listening("-t").is_empty(), "stopped with the daemon");
        let d = inst.start_daemon(&[]);
        assert_eq!(listening("-t"), ["0.0.0.0:49153"]);
        assert!(connects("127.0.0.1:49153"));

        // Releasing the interface stops its proxies.
        post_ok(&d, "/v1/release_interface", r#"{"id":"c1"}"#);
        assert!(listening("-t").is_empty());
        assert!(!connects("127.0.0.1:49153"));
    });
}

#[test]
fn hairpin_mode_without_the_userland_proxy() {
    if !testns::can_run_kernel_tests("hairpin_mode_without_the_userland_proxy") {
        return;
    }
    let bin = dockerd_net();
    testns::in_netns(move || {
        let inst = Instance::new(bin, "daemon-hairpin");
        let flags = ["--userland-proxy=false"];
        let d = inst.start_daemon(&flags);
        let baseline = Tables::Host.filter_and_nat();
        assert_eq!(baseline, golden("e2e/userland-proxy-false.txt"));
        assert_eq!(
            testns::run(&["cat", "/proc/sys/net/ipv4/conf/docker0/route_localnet"]).trim(),
            "1"
        );
        assert!(
            baseline
                .contains("-A POSTROUTING -o docker0 -m addrtype --src-type LOCAL -j MASQUERADE\n"),
            "{baseline}"
        );

        post_ok(&d, "/v1/allocate_interface", r#"{"id":"c1"}"#);
        let m1 = post_ok(
            &d,
            "/v1/allocate_port",
            r#"{"id":"c1","host_port":8080,"container_port":80}"#,
        );
        let m2 = post_ok(
            &d,
            "/v1/allocate_port",
            r#"{"id":"c1","host_ip":"127.0.0.1","container_port":53,"proto":"udp"}"#,
        );
        assert_eq!(m2["host_port"], 49153);
        // The DNAT rules match traffic from docker0 too (no `! -i docker0`).
        let expected = with_rules(
            &baseline,
            &[
                (
                    "nat",
                    "-A DOCKER -p tcp -m tcp --dport 8080 -j DNAT --to-destination 172.17.0.1:80",
                ),
                (
                    "filter",
                    "-A DOCKER -d 172.17.0.1/32 ! -i docker0 -o docker0 -p tcp -m tcp --dport 80 -j ACCEPT",
                ),
                (
                    "nat",
                    "-A POSTROUTING -s 172.17.0.1/32 -d 172.17.0.1/32 -p tcp -m tcp --dport 80 -j MASQUERADE",
                ),
                (
                    "nat",
                    "-A DOCKER -d 127.0.0.1/32 -p udp -m udp --dport 49153 -j DNAT --to-destination 172.17.0.1:53",
                ),
                (
                    "filter",
                    "-A DOCKER -d 172.17.0.1/32 ! -i docker0 -o docker0 -p udp -m udp --dport 53 -j ACCEPT",
                ),
                (
                    "nat",
                    "-A POSTROUTING -s 172.17.0.1/32 -d 172.17.0.1/32 -p udp -m udp --dport 53 -j MASQUERADE",
                ),
            ],
        );
        let tables = Tables::Host.filter_and_nat();
        assert_eq!(tables, expected);
        assert!(
            !tables.contains("! -i docker0 -p tcp -m tcp --dport 8080"),
            "{tables}"
        );
        let state = d.state();
        assert_eq!(
            added_rules(&baseline, &tables),
            expected_rules(&state, true, true)
        );
        assert_eq!(state["containers"]["c1"]["ports"], json!([m1, m2]));

        // Nothing listens: the kernel does the forwarding. A connection to 127.0.0.1:8080 is
        // DNATed to 172.17.0.1:80 (route_localnet lets a loopback source leave), where no
        // container answers ARP: it hangs instead of being refused at once.
        assert!(listening("-t").is_empty(), "{:?}", listening("-t"));
        assert!(listening("-u").is_empty(), "{:?}", listening("-u"));
        assert_eq!(connect_error("127.0.0.1:8080"), Some(ErrorKind::TimedOut));
        assert_eq!(
            connect_error("127.0.0.1:8081"),
            Some(ErrorKind::ConnectionRefused),
            "an unpublished port"
        );

        // A restart keeps hairpin mode's rules as they are.
        let (status, log) = d.terminate();
        assert!(status.success(), "{status}\n{log}");
        let d = inst.start_daemon(&flags);
        assert_eq!(Tables::Host.filter_and_nat(), expected);
        assert_eq!(d.state(), state);
        assert!(listening("-t").is_empty());

        post_ok(&d, "/v1/release_interface", r#"{"id":"c1"}"#);
        assert_eq!(Tables::Host.filter_and_nat(), baseline);
        assert_eq!(
            connect_error("127.0.0.1:8080"),
            Some(ErrorKind::ConnectionRefused),
            "no DNAT any more"
        );
        assert_eq!(
            testns::run(&["cat", "/proc/sys/net/ipv4/conf/docker0/route_localnet"]).trim(),
            "1"
        );
    });
}
