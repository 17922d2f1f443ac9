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
