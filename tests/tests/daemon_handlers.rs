//! Each handler of `dockerd-net daemon` through its socket (issue 4), success and every
//! error, in a fresh network namespace per test.
//!
//! After every step the test checks three things against its own model, written out here
//! independently of netcore: the HTTP status and JSON answer, the daemon's state
//! (`GET /v1/state`; and the same again after a restart at the end), and the exact
//! `iptables-save -t filter` + `-t nat` (normalised): the listing of a fresh daemon (which
//! must be init's golden listing) with the container rules of the model appended to their
//! chains, in the order they were published. An error must change neither the state nor the
//! firewall.

use std::collections::BTreeMap;

use e2e_tests::{Daemon, HttpReply, Instance, Tables, dockerd_net, golden, with_rules};
use serde_json::{Value, json};

const BRIDGE_ADDR: &str = "172.17.42.1/16";

/// The three rules of a published port as Docker 20.10 writes them (`ChainInfo.Forward`),
/// spelled out here rather than taken from netcore: nat DOCKER DNAT (`-d` only for a specific
/// host IP, `! -i docker0` only with the userland proxy), filter DOCKER ACCEPT, nat
/// POSTROUTING hairpin MASQUERADE.
fn published(
    host_ip: &str,
    host_port: u16,
    cip: &str,
    cport: u16,
    proto: &str,
    userland_proxy: bool,
) -> Vec<(&'static str, String)> {
    let dst = if host_ip == "0.0.0.0" {
        String::new()
    } else {
        format!("-d {host_ip}/32 ")
    };
    let not_in = if userland_proxy { "! -i docker0 " } else { "" };
    vec![
        (
            "nat",
            format!(
                "-A DOCKER {dst}{not_in}-p {proto} -m {proto} --dport {host_port} -j DNAT --to-destination {cip}:{cport}"
            ),
        ),
        (
            "filter",
            format!(
                "-A DOCKER -d {cip}/32 ! -i docker0 -o docker0 -p {proto} -m {proto} --dport {cport} -j ACCEPT"
            ),
        ),
        (
            "nat",
            format!(
                "-A POSTROUTING -s {cip}/32 -d {cip}/32 -p {proto} -m {proto} --dport {cport} -j MASQUERADE"
            ),
        ),
    ]
}

/// The two filter DOCKER rules of one port of a link (`--icc=false` only).
fn linked(parent: &str, child: &str, port: u16, proto: &str) -> Vec<(&'static str, String)> {
    let rule = |s: &str, d: &str, dir: &str| {
        (
            "filter",
            format!(
                "-A DOCKER -s {s}/32 -d {d}/32 -i docker0 -o docker0 -p {proto} -m {proto} {dir} {port} -j ACCEPT"
            ),
        )
    };
    vec![
        rule(parent, child, "--dport"),
        rule(child, parent, "--sport"),
    ]
}

/// What the test expects the daemon to hold.
#[derive(Debug, Default)]
struct Model {
    containers: BTreeMap<String, Value>,
    links: Vec<Value>,
    /// Container rules in the order they were applied.
    rules: Vec<(&'static str, String)>,
}

impl Model {
    fn state(&self) -> Value {
        let mut links = self.links.clone();
        // The daemon lists links in (parent, child, port, proto) order; addresses compare
        // as addresses, which for the 172.17.0.x used here is their last byte.
        links.sort_by_key(|l| {
            let last = |k: &str| {
                l[k].as_str()
                    .and_then(|s| s.parse::<std::net::Ipv4Addr>().ok())
                    .map(u32::from)
            };
            (
                last("parent"),
                last("child"),
                l["port"].as_u64(),
                l["proto"].as_str().map(str::to_owned),
            )
        });
        json!({
            "bridge": "docker0",
            "address": BRIDGE_ADDR,
            "containers": self.containers,
            "links": links,
        })
    }

    fn add_rules(&mut self, rules: Vec<(&'static str, String)>) {
        self.rules.extend(rules);
    }

    fn remove_rules(&mut self, rules: &[(&'static str, String)]) {
        for r in rules {
            let at = self
                .rules
                .iter()
                .position(|x| x == r)
                .unwrap_or_else(|| panic!("model has no rule {r:?}"));
            self.rules.remove(at);
        }
    }

    fn tables(&self, baseline: &str) -> String {
        let lines: Vec<(&str, &str)> = self.rules.iter().map(|(t, l)| (*t, l.as_str())).collect();
        with_rules(baseline, &lines)
    }
}

/// Checks the daemon's state and the firewall against the model.
#[track_caller]
fn check(d: &Daemon, model: &Model, baseline: &str, step: &str) {
    assert_eq!(
        state_without_attachments(d),
        model.state(),
        "state after {step}"
    );
    assert_eq!(
        Tables::Host.filter_and_nat(),
        model.tables(baseline),
        "iptables-save after {step}"
    );
}

/// `GET /v1/state` without its `attachments` (namespaces plugged in with `/v1/attach`, which
/// these tests never call), which must then be empty.
#[track_caller]
fn state_without_attachments(d: &Daemon) -> Value {
    let mut s = d.state();
    if let Some(obj) = s.as_object_mut()
        && let Some(a) = obj.remove("attachments")
    {
        assert_eq!(a, json!({}), "no attachments expected");
    }
    s
}

/// A JSON success answer with this status.
#[track_caller]
fn ok(r: &HttpReply, status: u16) -> Value {
    assert_eq!(r.status, status, "{}", r.body);
    assert_eq!(r.header("content-type"), Some("application/json"));
    r.json()
}

/// Sends a request that must be refused with `status` and exactly `{"message": message}`,
/// and checks that it changed nothing.
#[track_caller]
fn refused(d: &Daemon, path: &str, body: &str, status: u16, message: &str) {
    let before = d.snapshot(Tables::Host);
    let r = d.post(path, body);
    assert_eq!(
        (r.status, r.json()),
        (status, json!({ "message": message })),
        "{path} {body}"
    );
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(
        d.snapshot(Tables::Host),
        before,
        "{path} {body} changed something"
    );
}

fn iface(ip: &str, mac: &str) -> Value {
    json!({
        "ip": ip,
        "prefix_len": 16,
        "mask": "255.255.0.0",
        "gateway": "172.17.42.1",
        "bridge": "docker0",
        "mac": mac,
    })
}

fn mapping(host_ip: &str, host_port: u16, cip: &str, cport: u16, proto: &str) -> Value {
    json!({
        "host_ip": host_ip,
        "host_port": host_port,
        "container_ip": cip,
        "container_port": cport,
        "proto": proto,
    })
}

fn endpoint(ip: &str, mac: &str, ports: &[&Value]) -> Value {
    json!({ "ip": ip, "mac": mac, "ports": ports })
}

fn in_ns(test: &str, f: impl FnOnce(&'static std::path::Path) + Send + 'static) {
    if !testns::can_run_kernel_tests(test) {
        return;
    }
    let bin = dockerd_net();
    testns::in_netns(move || f(bin));
}

/// allocate_interface, allocate_port (tcp/udp, dynamic/explicit, default and explicit host
/// IP), release_port, link with ICC on (recorded, no rules) and release_interface, with every
/// error each can give; then a restart that finds the same state and rules.
#[test]
fn handlers_answer_persist_and_program_the_firewall() {
    in_ns("handlers_answer_persist_and_program_the_firewall", |bin| {
        let inst = Instance::new(bin, "daemon-handlers");
        let d = inst.start_daemon(&[]);
        let baseline = Tables::Host.filter_and_nat();
        assert_eq!(
            baseline,
            golden("e2e/default.txt"),
            "a fresh daemon's rules are init's"
        );
        let mut m = Model::default();
        check(&d, &m, &baseline, "start");

        // --- allocate_interface
        let r = d.post("/v1/allocate_interface", r#"{"id":"c1"}"#);
        assert_eq!(ok(&r, 201), iface("172.17.0.1", "02:42:ac:11:00:01"));
        m.containers.insert(
            "c1".into(),
            endpoint("172.17.0.1", "02:42:ac:11:00:01", &[]),
        );
        check(&d, &m, &baseline, "allocate_interface c1");

        // Asked again (a retry): the same interface, 200, nothing new.
        let r = d.post("/v1/allocate_interface", r#"{"id":"c1"}"#);
        assert_eq!(ok(&r, 200), iface("172.17.0.1", "02:42:ac:11:00:01"));
        let r = d.post(
            "/v1/allocate_interface",
            r#"{"id":"c1","requested_ip":"172.17.0.1","requested_mac":"02:42:ac:11:00:01"}"#,
        );
        assert_eq!(ok(&r, 200), iface("172.17.0.1", "02:42:ac:11:00:01"));
        check(&d, &m, &baseline, "allocate_interface c1 again");

        // A requested IP and MAC.
        let r = d.post(
            "/v1/allocate_interface",
            r#"{"id":"c2","requested_ip":"172.17.0.5","requested_mac":"02:00:00:00:00:0c"}"#,
        );
        assert_eq!(ok(&r, 201), iface("172.17.0.5", "02:00:00:00:00:0c"));
        m.containers.insert(
            "c2".into(),
            endpoint("172.17.0.5", "02:00:00:00:00:0c", &[]),
        );
        check(&d, &m, &baseline, "allocate_interface c2 172.17.0.5");

        // Errors.
        refused(
            &d,
            "/v1/allocate_interface",
            r#"{"id":"c3","requested_ip":"172.17.0.5"}"#,
            409,
            "ip 172.17.0.5 already allocated",
        );
        refused(
            &d,
            "/v1/allocate_interface",
            r#"{"id":"c3","requested_ip":"172.17.42.1"}"#,
            409,
            "ip 172.17.42.1 already allocated: it is the bridge's own address",
        );
        refused(
            &d,
            "/v1/allocate_interface",
            r#"{"id":"c1","requested_ip":"172.17.0.9"}"#,
            409,
            "container c1 already has an interface with IP 172.17.0.1",
        );
        refused(
            &d,
            "/v1/allocate_interface",
            r#"{"id":"c1","requested_mac":"02:42:ac:11:00:09"}"#,
            409,
            "container c1 already has an interface with IP 172.17.0.1",
        );
        for ip in ["10.0.0.1", "172.17.0.0", "172.17.255.255"] {
            refused(
                &d,
                "/v1/allocate_interface",
                &format!(r#"{{"id":"c3","requested_ip":"{ip}"}}"#),
                400,
                &format!("requested ip {ip} is out of range 172.17.0.1-172.17.255.254"),
            );
        }
        refused(
            &d,
            "/v1/allocate_interface",
            r#"{"id":""}"#,
            400,
            "container id must not be empty",
        );
        refused(
            &d,
            "/v1/allocate_interface",
            r#"{"id":"c3","requested_ip":"300.1.1.1"}"#,
            400,
            r#"invalid requested_ip "300.1.1.1": not an IPv4 address"#,
        );

        // --- allocate_port: dynamic tcp on the default host IP (0.0.0.0).
        let r = d.post(
            "/v1/allocate_port",
            r#"{"id":"c1","container_port":80,"proto":"tcp"}"#,
        );
        let p1 = mapping("0.0.0.0", 49153, "172.17.0.1", 80, "tcp");
        assert_eq!(ok(&r, 200), p1);
        // Explicit tcp port, proto defaulting to tcp.
        let r = d.post(
            "/v1/allocate_port",
            r#"{"id":"c1","host_port":8080,"container_port":8000}"#,
        );
        let p2 = mapping("0.0.0.0", 8080, "172.17.0.1", 8000, "tcp");
        assert_eq!(ok(&r, 200), p2);
        // The same host port for udp is another port.
        let r = d.post(
            "/v1/allocate_port",
            r#"{"id":"c2","host_port":8080,"container_port":53,"proto":"udp"}"#,
        );
        let p3 = mapping("0.0.0.0", 8080, "172.17.0.5", 53, "udp");
        assert_eq!(ok(&r, 200), p3);
        // A dynamic udp port on an explicit host IP: the udp range starts at 49153 too.
        let r = d.post(
            "/v1/allocate_port",
            r#"{"id":"c2","host_ip":"127.0.0.1","container_port":5353,"proto":"udp"}"#,
        );
        let p4 = mapping("127.0.0.1", 49153, "172.17.0.5", 5353, "udp");
        assert_eq!(ok(&r, 200), p4);
        // The next dynamic tcp port follows the first.
        let r = d.post(
            "/v1/allocate_port",
            r#"{"id":"c2","host_ip":"127.0.0.1","container_port":443}"#,
        );
        let p5 = mapping("127.0.0.1", 49154, "172.17.0.5", 443, "tcp");
        assert_eq!(ok(&r, 200), p5);
        m.containers.insert(
            "c1".into(),
            endpoint("172.17.0.1", "02:42:ac:11:00:01", &[&p1, &p2]),
        );
        m.containers.insert(
            "c2".into(),
            endpoint("172.17.0.5", "02:00:00:00:00:0c", &[&p3, &p4, &p5]),
        );
        m.add_rules(published("0.0.0.0", 49153, "172.17.0.1", 80, "tcp", true));
        m.add_rules(published("0.0.0.0", 8080, "172.17.0.1", 8000, "tcp", true));
        m.add_rules(published("0.0.0.0", 8080, "172.17.0.5", 53, "udp", true));
        m.add_rules(published(
            "127.0.0.1",
            49153,
            "172.17.0.5",
            5353,
            "udp",
            true,
        ));
        m.add_rules(published(
            "127.0.0.1",
            49154,
            "172.17.0.5",
            443,
            "tcp",
            true,
        ));
        check(&d, &m, &baseline, "five allocate_port");
        // The first one spelled out, as Docker 20.10 lists it.
        let nat = Tables::Host.save_table("nat");
        assert!(
            nat.contains(
                "-A DOCKER ! -i docker0 -p tcp -m tcp --dport 49153 -j DNAT --to-destination 172.17.0.1:80\n"
            ),
            "{nat}"
        );

        // Errors.
        refused(
            &d,
            "/v1/allocate_port",
            r#"{"id":"c2","host_port":8080,"container_port":80}"#,
            409,
            "Bind for 0.0.0.0:8080 failed: port is already allocated",
        );
        // A specific IP's port is taken while the wildcard holds it (the kernel would refuse
        // the bind too).
        refused(
            &d,
            "/v1/allocate_port",
            r#"{"id":"c2","host_ip":"127.0.0.1","host_port":8080,"container_port":80}"#,
            409,
            "Bind for 127.0.0.1:8080 failed: port is already allocated",
        );
        refused(
            &d,
            "/v1/allocate_port",
            r#"{"id":"nope","container_port":80}"#,
            404,
            "no network information for container nope: allocate its interface first",
        );
        refused(
            &d,
            "/v1/allocate_port",
            r#"{"id":"c1","container_port":0}"#,
            400,
            "invalid container port 0: a published port needs a container port in 1-65535",
        );
        refused(
            &d,
            "/v1/allocate_port",
            r#"{"id":"c1","container_port":80,"proto":"tcpp"}"#,
            400,
            r#"unknown protocol "tcpp": expected tcp, udp or sctp"#,
        );
        refused(
            &d,
            "/v1/allocate_port",
            r#"{"id":"c1","host_ip":"localhost","container_port":80}"#,
            400,
            "Bad parameter: invalid host ip localhost",
        );

        // --- release_port
        let r = d.post(
            "/v1/release_port",
            r#"{"id":"c1","host_ip":"0.0.0.0","host_port":8080,"proto":"tcp"}"#,
        );
        assert_eq!(ok(&r, 200), p2);
        m.containers.insert(
            "c1".into(),
            endpoint("172.17.0.1", "02:42:ac:11:00:01", &[&p1]),
        );
        m.remove_rules(&published("0.0.0.0", 8080, "172.17.0.1", 8000, "tcp", true));
        check(&d, &m, &baseline, "release_port 0.0.0.0:8080/tcp");
        refused(
            &d,
            "/v1/release_port",
            r#"{"id":"c1","host_ip":"0.0.0.0","host_port":8080,"proto":"tcp"}"#,
            404,
            "port 0.0.0.0:8080/tcp is not mapped for container c1",
        );
        // Held, but by another container.
        refused(
            &d,
            "/v1/release_port",
            r#"{"id":"c1","host_ip":"0.0.0.0","host_port":8080,"proto":"udp"}"#,
            404,
            "port 0.0.0.0:8080/udp is not mapped for container c1",
        );
        refused(
            &d,
            "/v1/release_port",
            r#"{"id":"c1","host_ip":"localhost","host_port":49153}"#,
            400,
            "Bad parameter: invalid host ip localhost",
        );
        // The released port can be taken again.
        let r = d.post(
            "/v1/allocate_port",
            r#"{"id":"c2","host_port":8080,"container_port":80}"#,
        );
        let p6 = mapping("0.0.0.0", 8080, "172.17.0.5", 80, "tcp");
        assert_eq!(ok(&r, 200), p6);
        m.containers.insert(
            "c2".into(),
            endpoint("172.17.0.5", "02:00:00:00:00:0c", &[&p3, &p4, &p5, &p6]),
        );
        m.add_rules(published("0.0.0.0", 8080, "172.17.0.5", 80, "tcp", true));
        check(&d, &m, &baseline, "allocate_port 8080 again");

        // --- link with ICC on: recorded (so it survives a restart), no rules.
        let r = d.post(
            "/v1/link",
            r#"{"parent_ip":"172.17.0.1","child_ip":"172.17.0.5","ports":["5432/tcp","53/udp"],"enable":true}"#,
        );
        let l1 = json!({"parent":"172.17.0.1","child":"172.17.0.5","port":5432,"proto":"tcp"});
        let l2 = json!({"parent":"172.17.0.1","child":"172.17.0.5","port":53,"proto":"udp"});
        assert_eq!(ok(&r, 200), json!({ "changed": [l1, l2] }));
        m.links = vec![l1.clone(), l2.clone()];
        check(&d, &m, &baseline, "link enable (icc)");
        let r = d.post(
            "/v1/link",
            r#"{"parent_ip":"172.17.0.1","child_ip":"172.17.0.5","ports":["5432"],"enable":true}"#,
        );
        assert_eq!(ok(&r, 200), json!({ "changed": [] }), "already enabled");
        let r = d.post(
            "/v1/link",
            r#"{"parent_ip":"172.17.0.1","child_ip":"172.17.0.5","ports":["5432/tcp"],"enable":false}"#,
        );
        assert_eq!(ok(&r, 200), json!({ "changed": [l1] }));
        m.links = vec![l2.clone()];
        check(&d, &m, &baseline, "link disable (icc)");
        refused(
            &d,
            "/v1/link",
            r#"{"parent_ip":"172.17.0.1","child_ip":"172.17.0.99","ports":["80"],"enable":true}"#,
            404,
            "172.17.0.99 is not the IP of a container on this network",
        );
        refused(
            &d,
            "/v1/link",
            r#"{"parent_ip":"172.17.0.1","child_ip":"172.17.0.5","ports":["0/tcp"],"enable":true}"#,
            400,
            r#"invalid port "0/tcp": expected PORT or PORT/PROTO with PORT in 1-65535 (e.g. 5432/tcp)"#,
        );

        // --- release_interface: its ports' rules go, its link goes, its IP is free again.
        let r = d.post("/v1/release_interface", r#"{"id":"c1"}"#);
        assert_eq!(
            ok(&r, 200),
            json!({ "id": "c1", "ip": "172.17.0.1", "ports": [p1] })
        );
        m.containers.remove("c1");
        m.links.clear();
        m.remove_rules(&published("0.0.0.0", 49153, "172.17.0.1", 80, "tcp", true));
        check(&d, &m, &baseline, "release_interface c1");
        refused(
            &d,
            "/v1/release_interface",
            r#"{"id":"c1"}"#,
            404,
            "No network information to release for c1",
        );
        refused(
            &d,
            "/v1/allocate_port",
            r#"{"id":"c1","container_port":80}"#,
            404,
            "no network information for container c1: allocate its interface first",
        );

        // A restart finds exactly this (state and rules, nothing twice).
        let (status, log) = d.terminate();
        assert!(status.success(), "{status}\n{log}");
        let d = inst.start_daemon(&[]);
        check(&d, &m, &baseline, "restart");

        let r = d.post("/v1/release_interface", r#"{"id":"c2"}"#);
        assert_eq!(
            ok(&r, 200),
            json!({ "id": "c2", "ip": "172.17.0.5", "ports": [p3, p4, p5, p6] })
        );
        m.containers.clear();
        m.rules.clear();
        check(&d, &m, &baseline, "release_interface c2");
        assert_eq!(
            Tables::Host.filter_and_nat(),
            baseline,
            "back to init's rules"
        );

        // Released addresses can be asked for again.
        let r = d.post(
            "/v1/allocate_interface",
            r#"{"id":"c9","requested_ip":"172.17.0.1"}"#,
        );
        assert_eq!(ok(&r, 201), iface("172.17.0.1", "02:42:ac:11:00:01"));
        let (status, log) = d.terminate();
        assert!(status.success(), "{status}\n{log}");
    });
}

/// With `--icc=false`, a link opens its ports with two filter DOCKER rules each; disabling
/// removes them; releasing either container removes its links' rules too.
#[test]
fn links_program_rules_only_with_icc_off() {
    in_ns("links_program_rules_only_with_icc_off", |bin| {
        let inst = Instance::new(bin, "daemon-links");
        let d = inst.start_daemon(&["--icc=false"]);
        let baseline = Tables::Host.filter_and_nat();
        assert_eq!(baseline, golden("e2e/icc-false.txt"));
        let mut m = Model::default();
        for (id, ip, mac) in [
            ("web", "172.17.0.1", "02:42:ac:11:00:01"),
            ("db", "172.17.0.2", "02:42:ac:11:00:02"),
            ("dns", "172.17.0.3", "02:42:ac:11:00:03"),
        ] {
            let r = d.post("/v1/allocate_interface", &format!(r#"{{"id":"{id}"}}"#));
            assert_eq!(ok(&r, 201), iface(ip, mac));
            m.containers.insert(id.into(), endpoint(ip, mac, &[]));
        }
        check(&d, &m, &baseline, "three interfaces");

        let r = d.post(
            "/v1/link",
            r#"{"parent_ip":"172.17.0.1","child_ip":"172.17.0.2","ports":["5432","53/udp"],"enable":true}"#,
        );
        let l1 = json!({"parent":"172.17.0.1","child":"172.17.0.2","port":5432,"proto":"tcp"});
        let l2 = json!({"parent":"172.17.0.1","child":"172.17.0.2","port":53,"proto":"udp"});
        assert_eq!(ok(&r, 200), json!({ "changed": [l1, l2] }));
        m.links = vec![l1.clone(), l2.clone()];
        m.add_rules(linked("172.17.0.1", "172.17.0.2", 5432, "tcp"));
        m.add_rules(linked("172.17.0.1", "172.17.0.2", 53, "udp"));
        check(&d, &m, &baseline, "link enable");
        // The first pair spelled out.
        let filter = Tables::Host.save_table("filter");
        assert!(
            filter.contains(
                "-A DOCKER -s 172.17.0.1/32 -d 172.17.0.2/32 -i docker0 -o docker0 -p tcp -m tcp --dport 5432 -j ACCEPT\n\
                 -A DOCKER -s 172.17.0.2/32 -d 172.17.0.1/32 -i docker0 -o docker0 -p tcp -m tcp --sport 5432 -j ACCEPT\n"
            ),
            "{filter}"
        );

        // Enabling again changes nothing (no second pair of rules).
        let r = d.post(
            "/v1/link",
            r#"{"parent_ip":"172.17.0.1","child_ip":"172.17.0.2","ports":["5432/tcp"],"enable":true}"#,
        );
        assert_eq!(ok(&r, 200), json!({ "changed": [] }));
        check(&d, &m, &baseline, "link enable again");

        // A published port next to the links: its rules as with ICC on.
        let r = d.post("/v1/allocate_port", r#"{"id":"db","container_port":5432}"#);
        let p = mapping("0.0.0.0", 49153, "172.17.0.2", 5432, "tcp");
        assert_eq!(ok(&r, 200), p);
        m.containers.insert(
            "db".into(),
            endpoint("172.17.0.2", "02:42:ac:11:00:02", &[&p]),
        );
        m.add_rules(published("0.0.0.0", 49153, "172.17.0.2", 5432, "tcp", true));
        check(&d, &m, &baseline, "publish next to links");

        let r = d.post(
            "/v1/link",
            r#"{"parent_ip":"172.17.0.1","child_ip":"172.17.0.2","ports":["5432"],"enable":false}"#,
        );
        assert_eq!(ok(&r, 200), json!({ "changed": [l1] }));
        m.links = vec![l2.clone()];
        m.remove_rules(&linked("172.17.0.1", "172.17.0.2", 5432, "tcp"));
        check(&d, &m, &baseline, "link disable");
        let r = d.post(
            "/v1/link",
            r#"{"parent_ip":"172.17.0.1","child_ip":"172.17.0.2","ports":["5432"],"enable":false}"#,
        );
        assert_eq!(ok(&r, 200), json!({ "changed": [] }), "disabled twice");
        check(&d, &m, &baseline, "link disable again");

        // web -> dns too; releasing dns (a child) removes that link and its rules only.
        let r = d.post(
            "/v1/link",
            r#"{"parent_ip":"172.17.0.1","child_ip":"172.17.0.3","ports":["53/udp"],"enable":true}"#,
        );
        let l3 = json!({"parent":"172.17.0.1","child":"172.17.0.3","port":53,"proto":"udp"});
        assert_eq!(ok(&r, 200), json!({ "changed": [l3] }));
        m.links.push(l3.clone());
        m.add_rules(linked("172.17.0.1", "172.17.0.3", 53, "udp"));
        check(&d, &m, &baseline, "second link");
        let r = d.post("/v1/release_interface", r#"{"id":"dns"}"#);
        assert_eq!(
            ok(&r, 200),
            json!({ "id": "dns", "ip": "172.17.0.3", "ports": [] })
        );
        m.containers.remove("dns");
        m.links.retain(|l| *l != l3);
        m.remove_rules(&linked("172.17.0.1", "172.17.0.3", 53, "udp"));
        check(&d, &m, &baseline, "release a child");

        // Errors change nothing.
        refused(
            &d,
            "/v1/link",
            r#"{"parent_ip":"172.17.0.3","child_ip":"172.17.0.2","ports":["80"],"enable":true}"#,
            404,
            "172.17.0.3 is not the IP of a container on this network",
        );
        refused(
            &d,
            "/v1/link",
            r#"{"parent_ip":"web","child_ip":"172.17.0.2","ports":["80"],"enable":true}"#,
            400,
            r#"invalid parent_ip "web": not an IPv4 address"#,
        );
        refused(
            &d,
            "/v1/link",
            r#"{"parent_ip":"172.17.0.1","child_ip":"172.17.0.2","ports":["80/icmp"],"enable":true}"#,
            400,
            r#"unknown protocol "icmp": expected tcp, udp or sctp"#,
        );

        // A restart: the same links and rules.
        let (status, log) = d.terminate();
        assert!(status.success(), "{status}\n{log}");
        let d = inst.start_daemon(&["--icc=false"]);
        check(&d, &m, &baseline, "restart");

        // Releasing the parent removes the last link, the container's port goes with db.
        let r = d.post("/v1/release_interface", r#"{"id":"web"}"#);
        assert_eq!(
            ok(&r, 200),
            json!({ "id": "web", "ip": "172.17.0.1", "ports": [] })
        );
        m.containers.remove("web");
        m.links.clear();
        m.remove_rules(&linked("172.17.0.1", "172.17.0.2", 53, "udp"));
        check(&d, &m, &baseline, "release the parent");
        let r = d.post("/v1/release_interface", r#"{"id":"db"}"#);
        assert_eq!(ok(&r, 200)["ports"], json!([p]));
        m.containers.clear();
        m.rules.clear();
        check(&d, &m, &baseline, "release the last");
        assert_eq!(Tables::Host.filter_and_nat(), baseline);
    });
}

/// `--ip` is the default host IP of a published port; an explicit host IP overrides it.
#[test]
fn default_binding_ip_comes_from_the_ip_flag() {
    in_ns("default_binding_ip_comes_from_the_ip_flag", |bin| {
        let inst = Instance::new(bin, "daemon-ip");
        let d = inst.start_daemon(&["--ip", "127.0.0.1"]);
        let baseline = Tables::Host.filter_and_nat();
        let mut m = Model::default();
        let r = d.post("/v1/allocate_interface", r#"{"id":"c1"}"#);
        assert_eq!(ok(&r, 201), iface("172.17.0.1", "02:42:ac:11:00:01"));
        let r = d.post("/v1/allocate_port", r#"{"id":"c1","container_port":80}"#);
        let p1 = mapping("127.0.0.1", 49153, "172.17.0.1", 80, "tcp");
        assert_eq!(ok(&r, 200), p1);
        let r = d.post(
            "/v1/allocate_port",
            r#"{"id":"c1","host_ip":"0.0.0.0","host_port":8443,"container_port":443}"#,
        );
        let p2 = mapping("0.0.0.0", 8443, "172.17.0.1", 443, "tcp");
        assert_eq!(ok(&r, 200), p2);
        m.containers.insert(
            "c1".into(),
            endpoint("172.17.0.1", "02:42:ac:11:00:01", &[&p1, &p2]),
        );
        m.add_rules(published("127.0.0.1", 49153, "172.17.0.1", 80, "tcp", true));
        m.add_rules(published("0.0.0.0", 8443, "172.17.0.1", 443, "tcp", true));
        check(&d, &m, &baseline, "two ports");
        let nat = Tables::Host.save_table("nat");
        assert!(
            nat.contains(
                "-A DOCKER -d 127.0.0.1/32 ! -i docker0 -p tcp -m tcp --dport 49153 -j DNAT --to-destination 172.17.0.1:80\n"
            ),
            "{nat}"
        );
        // The wildcard cannot take a port a specific IP holds.
        refused(
            &d,
            "/v1/allocate_port",
            r#"{"id":"c1","host_ip":"0.0.0.0","host_port":49153,"container_port":81}"#,
            409,
            "Bind for 0.0.0.0:49153 failed: port is already allocated",
        );
        let r = d.post(
            "/v1/release_port",
            r#"{"id":"c1","host_ip":"127.0.0.1","host_port":49153}"#,
        );
        assert_eq!(ok(&r, 200), p1);
        m.containers.insert(
            "c1".into(),
            endpoint("172.17.0.1", "02:42:ac:11:00:01", &[&p2]),
        );
        m.remove_rules(&published(
            "127.0.0.1",
            49153,
            "172.17.0.1",
            80,
            "tcp",
            true,
        ));
        check(&d, &m, &baseline, "release_port");
    });
}

/// A pool with no address left is a conflict (409) with Docker's text.
#[test]
fn an_exhausted_pool_is_a_conflict() {
    in_ns("an_exhausted_pool_is_a_conflict", |bin| {
        let inst = Instance::new(bin, "daemon-pool");
        let d = inst.start_daemon(&["--fixed-cidr", "172.17.0.0/30"]);
        let baseline = Tables::Host.filter_and_nat();
        let mut m = Model::default();
        for (id, ip, mac) in [
            ("c1", "172.17.0.1", "02:42:ac:11:00:01"),
            ("c2", "172.17.0.2", "02:42:ac:11:00:02"),
        ] {
            let r = d.post("/v1/allocate_interface", &format!(r#"{{"id":"{id}"}}"#));
            assert_eq!(ok(&r, 201), iface(ip, mac));
            m.containers.insert(id.into(), endpoint(ip, mac, &[]));
        }
        check(&d, &m, &baseline, "two interfaces");
        refused(
            &d,
            "/v1/allocate_interface",
            r#"{"id":"c3"}"#,
            409,
            "no available ip addresses on network 172.17.0.0/30",
        );
        // In the bridge network but outside --fixed-cidr.
        refused(
            &d,
            "/v1/allocate_interface",
            r#"{"id":"c3","requested_ip":"172.17.0.9"}"#,
            400,
            "requested ip 172.17.0.9 is out of range 172.17.0.1-172.17.0.2",
        );
        let r = d.post("/v1/release_interface", r#"{"id":"c1"}"#);
        assert_eq!(ok(&r, 200)["ip"], "172.17.0.1");
        let r = d.post("/v1/allocate_interface", r#"{"id":"c3"}"#);
        assert_eq!(ok(&r, 201)["ip"], "172.17.0.1", "the freed address");
    });
}
