//! Concurrent clients of `dockerd-net daemon` (issue 4): 200 threads, released together,
//! each allocating an interface and a dynamic port on its own connections. Every one must
//! succeed, the 200 IPs and the 200 host ports must be distinct, and the daemon's state, the
//! kernel's rules and (after a restart) the persisted state must all agree with the answers.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Barrier};
use std::thread;

use e2e_tests::{Instance, Tables, added_rules, dockerd_net, expected_rules, raw_request};
use serde_json::Value;

const CLIENTS: usize = 200;

#[test]
fn two_hundred_clients_at_once_get_distinct_ips_and_ports() {
    if !testns::can_run_kernel_tests("two_hundred_clients_at_once_get_distinct_ips_and_ports") {
        return;
    }
    let bin = dockerd_net();
    testns::in_netns(move || {
        let inst = Instance::new(bin, "daemon-concurrency");
        let d = inst.start_daemon(&[]);
        let baseline = Tables::Host.filter_and_nat();

        let start = Arc::new(Barrier::new(CLIENTS));
        let clients: Vec<_> = (0..CLIENTS)
            .map(|i| {
                let socket = inst.socket();
                let start = Arc::clone(&start);
                thread::spawn(move || {
                    let id = format!("c{i}");
                    start.wait();
                    let iface = raw_request(
                        &socket,
                        "POST",
                        "/v1/allocate_interface",
                        Some(&format!(r#"{{"id":"{id}"}}"#)),
                    )
                    .unwrap_or_else(|e| panic!("allocate_interface {id}: {e}"));
                    assert_eq!(iface.status, 201, "{id}: {}", iface.body);
                    let port = raw_request(
                        &socket,
                        "POST",
                        "/v1/allocate_port",
                        Some(&format!(r#"{{"id":"{id}","container_port":80}}"#)),
                    )
                    .unwrap_or_else(|e| panic!("allocate_port {id}: {e}"));
                    assert_eq!(port.status, 200, "{id}: {}", port.body);
                    (id, iface.json(), port.json())
                })
            })
            .collect();
        let answers: Vec<(String, Value, Value)> = clients
            .into_iter()
            .map(|c| match c.join() {
                Ok(a) => a,
                Err(panic) => std::panic::resume_unwind(panic),
            })
            .collect();

        let ips: BTreeSet<String> = answers
            .iter()
            .map(|(_, i, _)| i["ip"].as_str().expect("ip").to_owned())
            .collect();
        assert_eq!(ips.len(), CLIENTS, "an IP was handed out twice");
        let macs: BTreeSet<String> = answers
            .iter()
            .map(|(_, i, _)| i["mac"].as_str().expect("mac").to_owned())
            .collect();
        assert_eq!(macs.len(), CLIENTS, "a MAC was handed out twice");
        let ports: BTreeSet<u64> = answers
            .iter()
            .map(|(_, _, p)| p["host_port"].as_u64().expect("port"))
            .collect();
        assert_eq!(ports.len(), CLIENTS, "a port was handed out twice");
        // Serialised by the daemon: the first 200 addresses and dynamic ports, in some order.
        let want_ips: BTreeSet<String> = (1..=CLIENTS).map(|n| format!("172.17.0.{n}")).collect();
        assert_eq!(ips, want_ips);
        assert_eq!(ports, (49153..49153 + CLIENTS as u64).collect());
        for (id, iface, port) in &answers {
            assert_eq!(port["container_ip"], iface["ip"], "{id}");
        }

        // The state is the answers, exactly.
        let state = d.state();
        let containers: BTreeMap<String, Value> =
            serde_json::from_value(state["containers"].clone()).expect("containers");
        assert_eq!(containers.len(), CLIENTS);
        for (id, iface, port) in &answers {
            let c = &containers[id];
            assert_eq!((&c["ip"], &c["mac"]), (&iface["ip"], &iface["mac"]), "{id}");
            assert_eq!(c["ports"], Value::Array(vec![port.clone()]), "{id}");
        }
        // The rules are the state's, each once.
        let tables = Tables::Host.filter_and_nat();
        let rules = added_rules(&baseline, &tables);
        assert_eq!(rules.len(), 3 * CLIENTS);
        assert_eq!(rules, expected_rules(&state, false, true));

        // And it was all persisted.
        let (status, log) = d.terminate();
        assert!(status.success(), "{status}\n{log}");
        let d = inst.start_daemon(&[]);
        assert_eq!(d.state(), state);
        assert_eq!(Tables::Host.filter_and_nat(), tables);
    });
}
