//! Restarting `dockerd-net daemon` (issue 4): after SIGTERM, SIGINT or SIGKILL, a daemon
//! started again with the same flags serves the same state, the kernel holds the same rules
//! (each once: re-applying is idempotent), and the next allocations continue where the
//! previous daemon stopped instead of handing out an address or port again.

use std::collections::BTreeSet;

use e2e_tests::{Daemon, Instance, Tables, added_rules, dockerd_net, expected_rules, golden};
use serde_json::Value;

/// Every rule line appears once.
#[track_caller]
fn assert_no_duplicates(save: &str) {
    let mut seen = BTreeSet::new();
    for line in save.lines().filter(|l| l.starts_with("-A ")) {
        assert!(seen.insert(line), "rule listed twice: {line}\n{save}");
    }
}

#[track_caller]
fn post_ok(d: &Daemon, path: &str, body: &str) -> Value {
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
fn restarts_keep_state_and_rules_and_never_hand_out_twice() {
    if !testns::can_run_kernel_tests("restarts_keep_state_and_rules_and_never_hand_out_twice") {
        return;
    }
    let bin = dockerd_net();
    testns::in_netns(move || {
        let inst = Instance::new(bin, "daemon-restart");
        let flags = ["--icc=false"];
        let d = inst.start_daemon(&flags);
        let baseline = Tables::Host.filter_and_nat();
        assert_eq!(baseline, golden("e2e/icc-false.txt"));

        // Everything ever handed out, to check the next allocations against.
        let mut ips: BTreeSet<String> = BTreeSet::new();
        let mut tcp_ports: BTreeSet<u64> = BTreeSet::new();
        for i in 1..=5 {
            let iface = post_ok(&d, "/v1/allocate_interface", &format!(r#"{{"id":"c{i}"}}"#));
            ips.insert(iface["ip"].as_str().expect("ip").to_owned());
            let m = post_ok(
                &d,
                "/v1/allocate_port",
                &format!(r#"{{"id":"c{i}","container_port":80}}"#),
            );
            tcp_ports.insert(m["host_port"].as_u64().expect("port"));
        }
        post_ok(
            &d,
            "/v1/allocate_port",
            r#"{"id":"c1","host_port":8080,"container_port":8080}"#,
        );
        post_ok(
            &d,
            "/v1/allocate_port",
            r#"{"id":"c2","host_ip":"127.0.0.1","container_port":53,"proto":"udp"}"#,
        );
        post_ok(
            &d,
            "/v1/link",
            r#"{"parent_ip":"172.17.0.1","child_ip":"172.17.0.2","ports":["5432","53/udp"],"enable":true}"#,
        );
        post_ok(
            &d,
            "/v1/link",
            r#"{"parent_ip":"172.17.0.4","child_ip":"172.17.0.5","ports":["6379"],"enable":true}"#,
        );
        // Freed before the restart: next-fit must not hand these out right after it either.
        post_ok(&d, "/v1/release_interface", r#"{"id":"c3"}"#);
        post_ok(
            &d,
            "/v1/release_port",
            r#"{"id":"c5","host_ip":"0.0.0.0","host_port":49157}"#,
        );

        let state = d.state();
        let tables = Tables::Host.filter_and_nat();
        assert_no_duplicates(&tables);
        let rules = added_rules(&baseline, &tables);
        assert_eq!(rules, expected_rules(&state, false, false));
        // 5 published ports + 1 + 1, minus c3's and c5's: 5 x 3 rules; 3 link ports x 2.
        assert_eq!(rules.len(), 5 * 3 + 3 * 2, "{rules:#?}");

        // SIGTERM, SIGINT and SIGKILL: each time the same state and the same rules.
        let mut d = d;
        for how in ["TERM", "INT", "KILL"] {
            if how == "KILL" {
                d.kill();
                e2e_tests::wait_netns_idle();
            } else {
                let (status, log) = d.stop_with(how);
                assert!(status.success(), "SIG{how}: {status}\n{log}");
            }
            d = inst.start_daemon(&flags);
            assert_eq!(d.state(), state, "state after SIG{how} and a restart");
            assert_eq!(
                Tables::Host.filter_and_nat(),
                tables,
                "rules after SIG{how} and a restart\n{}",
                d.log_text()
            );
        }

        // The next allocations collide with nothing handed out before (released ones
        // included: next-fit continues after the last one, as before the restarts).
        let iface = post_ok(&d, "/v1/allocate_interface", r#"{"id":"new"}"#);
        let ip = iface["ip"].as_str().expect("ip").to_owned();
        assert!(!ips.contains(&ip), "{ip} handed out again ({ips:?})");
        assert_eq!(ip, "172.17.0.6");
        let m = post_ok(
            &d,
            "/v1/allocate_port",
            r#"{"id":"new","container_port":80}"#,
        );
        let port = m["host_port"].as_u64().expect("port");
        assert!(
            !tcp_ports.contains(&port) && port != 8080,
            "port {port} handed out again ({tcp_ports:?})"
        );
        assert_eq!(port, 49158);
        let state = d.state();
        let tables = Tables::Host.filter_and_nat();
        assert_no_duplicates(&tables);
        assert_eq!(
            added_rules(&baseline, &tables),
            expected_rules(&state, false, false)
        );

        // Started with ICC on instead: the links stay recorded, their rules go (ICC opens
        // everything), the port rules stay, nothing twice.
        let (status, log) = d.terminate();
        assert!(status.success(), "{status}\n{log}");
        let d = inst.start_daemon(&[]);
        let after = d.state();
        assert_eq!(after, state, "{}", d.log_text());
        let tables = Tables::Host.filter_and_nat();
        assert_no_duplicates(&tables);
        assert_eq!(
            added_rules(&golden("e2e/default.txt"), &tables),
            expected_rules(&after, false, true),
            "{}",
            d.log_text()
        );
    });
}

/// A daemon killed between detach's two steps (the host veth retired: off the bridge, down,
/// in the reap group; not yet deleted) leaves the veth unplugged; the next start deletes it,
/// with its container end, and nothing of another group. Shutdown leaves none either.
#[test]
fn veths_left_retired_by_a_crash_are_deleted_at_start() {
    if !testns::can_run_kernel_tests("veths_left_retired_by_a_crash_are_deleted_at_start") {
        return;
    }
    let bin = dockerd_net();
    testns::in_netns(move || {
        let inst = Instance::new(bin, "daemon-reap");
        let ctr = testns::Netns::new();
        let ns = ctr.path().display().to_string();
        let group = netcore::ops::REAP_GROUP.to_string();
        let d = inst.start_daemon(&[]);
        let a = post_ok(
            &d,
            "/v1/attach",
            &serde_json::json!({"id": "c1", "netns": ns}).to_string(),
        );
        let veth = a["host_veth"].as_str().expect("host_veth").to_owned();
        assert!(
            d.log_text()
                .contains("deleted the veths a previous run left retired")
        );
        d.kill();

        // What the killed daemon's detach had done to c1's veth before the crash; a veth of
        // an earlier detach, retired and not reaped; an administrator's veth in group 7.
        testns::run(&[
            "ip", "link", "set", "dev", &veth, "nomaster", "down", "group", &group,
        ]);
        testns::run(&[
            "ip", "link", "add", "vethold", "group", &group, "type", "veth", "peer", "name",
            "eth1", "netns", &ns,
        ]);
        testns::run(&[
            "ip",
            "link",
            "add",
            "vethadmin",
            "group",
            "7",
            "type",
            "veth",
            "peer",
            "name",
            "eth2",
            "netns",
            &ns,
        ]);
        let ctr_links = || -> Vec<String> {
            ctr.run(|| {
                e2e_tests::kernel_links()
                    .into_iter()
                    .map(|l| l.name)
                    .collect()
            })
        };
        assert_eq!(ctr_links(), ["lo", "eth0", "eth1", "eth2"]);

        let d = inst.start_daemon(&[]);
        assert!(testns::ip_link(&veth).is_none(), "{}", d.log_text());
        assert!(testns::ip_link("vethold").is_none(), "{}", d.log_text());
        assert_eq!(
            testns::ip_link("vethadmin").map(|l| l["group"].clone()),
            Some(Value::from("7")),
            "another group is left alone"
        );
        assert_eq!(ctr_links(), ["lo", "eth2"], "their container ends went too");
        // c1's record survived the crash; its veth is gone: detach releases it.
        let d1 = post_ok(&d, "/v1/detach", r#"{"id":"c1"}"#);
        assert_eq!(d1["detached"], true, "{d1}");
        assert!(d1["released"].is_object(), "{d1}");

        // A detach without wait right before a shutdown: the daemon deletes the veth before
        // it exits.
        let a = post_ok(
            &d,
            "/v1/attach",
            &serde_json::json!({"id": "c2", "netns": ns}).to_string(),
        );
        let veth = a["host_veth"].as_str().expect("host_veth").to_owned();
        post_ok(&d, "/v1/detach", r#"{"id":"c2"}"#);
        let (status, log) = d.terminate();
        assert!(status.success(), "{status}\n{log}");
        assert!(testns::ip_link(&veth).is_none(), "{log}");
        assert_eq!(ctr_links(), ["lo", "eth2"]);
    });
}
