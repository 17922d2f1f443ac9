//! Smoke test of `dockerd-net daemon` (issue 4): the real binary in a fresh network
//! namespace, spoken to with raw HTTP/1.1 over its Unix socket.
//!
//! One allocate_interface and one allocate_port, checked in the answers, in `iptables-save`
//! and through the userland proxy's listening port; the socket's mode and owner; a second
//! instance refused; SIGTERM (exit 0, socket removed, rules kept); a restart that finds the
//! same state and rules (nothing added twice) and continues without collisions; teardown
//! removing the containers' rules and the state with the rest.

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use e2e_tests::{Instance, Tables, dockerd_net};

const DNAT: &str =
    "-A DOCKER ! -i docker0 -p tcp -m tcp --dport 49153 -j DNAT --to-destination 172.17.0.1:80";
const ACCEPT: &str =
    "-A DOCKER -d 172.17.0.1/32 ! -i docker0 -o docker0 -p tcp -m tcp --dport 80 -j ACCEPT";
const MASQ: &str =
    "-A POSTROUTING -s 172.17.0.1/32 -d 172.17.0.1/32 -p tcp -m tcp --dport 80 -j MASQUERADE";

fn count(haystack: &str, line: &str) -> usize {
    haystack.lines().filter(|l| *l == line).count()
}

#[test]
fn daemon_serves_persists_and_survives_a_restart() {
    if !testns::can_run_kernel_tests("daemon_serves_persists_and_survives_a_restart") {
        return;
    }
    let bin = dockerd_net();
    testns::in_netns(move || {
        let inst = Instance::new(bin, "daemon-smoke");
        let d = inst.start_daemon(&[]);
        assert!(
            d.log_text()
                .contains(&format!("dockerd-net ready on {}", inst.socket().display())),
            "{}",
            d.log_text()
        );

        // The socket: 0660, root:root.
        let meta = std::fs::metadata(inst.socket()).expect("socket");
        assert_eq!(meta.permissions().mode() & 0o777, 0o660);
        assert_eq!((meta.uid(), meta.gid()), (0, 0));

        // allocate_interface: 201 and the whole interface.
        let r = d.post("/v1/allocate_interface", r#"{"id":"c1"}"#);
        assert_eq!(r.status, 201, "{}", r.body);
        assert_eq!(r.header("content-type"), Some("application/json"));
        let iface = r.json();
        assert_eq!(
            iface,
            serde_json::json!({
                "ip": "172.17.0.1",
                "prefix_len": 16,
                "mask": "255.255.0.0",
                "gateway": "172.17.42.1",
                "bridge": "docker0",
                "mac": "02:42:ac:11:00:01",
            })
        );

        // allocate_port: the first dynamic port, its three rules, its proxy.
        let r = d.post(
            "/v1/allocate_port",
            r#"{"id":"c1","container_port":80,"proto":"tcp"}"#,
        );
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(
            r.json(),
            serde_json::json!({
                "host_ip": "0.0.0.0",
                "host_port": 49153,
                "container_ip": "172.17.0.1",
                "container_port": 80,
                "proto": "tcp",
            })
        );
        let nat = Tables::Host.save_table("nat");
        let filter = Tables::Host.save_table("filter");
        assert_eq!(count(&nat, DNAT), 1, "{nat}");
        assert_eq!(count(&nat, MASQ), 1, "{nat}");
        assert_eq!(count(&filter, ACCEPT), 1, "{filter}");
        std::net::TcpStream::connect("127.0.0.1:49153")
            .expect("the userland proxy listens on the published port");

        // A second instance on the same socket is refused, naming the lock.
        let second = inst.run(&["-H", &inst.host_url(), "daemon"]);
        let err = second.assert_failure();
        assert!(
            err.contains(&format!(
                "another dockerd-net is running (it holds {}.lock)",
                inst.socket().display()
            )),
            "{err}"
        );

        // SIGTERM: exit 0, socket gone, rules kept (as Docker leaves them).
        let saved = Tables::Host.filter_and_nat();
        let (status, log) = d.terminate();
        assert!(status.success(), "{status}\n{log}");
        assert!(log.contains("SIGTERM received"), "{log}");
        assert!(!inst.socket().exists(), "socket removed on exit");
        assert_eq!(Tables::Host.filter_and_nat(), saved);

        // Restart: the same state, the same rules (none twice), and the next allocations
        // continue after the restored ones.
        let d = inst.start_daemon(&[]);
        assert_eq!(Tables::Host.filter_and_nat(), saved, "{}", d.log_text());
        let state = d.request("GET", "/v1/state", None);
        assert_eq!(state.status, 200, "{}", state.body);
        let state = state.json();
        assert_eq!(state["bridge"], "docker0");
        assert_eq!(state["address"], "172.17.42.1/16");
        assert_eq!(state["containers"]["c1"]["ip"], "172.17.0.1");
        assert_eq!(state["containers"]["c1"]["ports"][0]["host_port"], 49153);
        let r = d.post("/v1/allocate_interface", r#"{"id":"c2"}"#);
        assert_eq!(
            (r.status, &r.json()["ip"]),
            (201, &serde_json::json!("172.17.0.2"))
        );
        let r = d.post("/v1/allocate_port", r#"{"id":"c2","container_port":80}"#);
        assert_eq!(
            (r.status, &r.json()["host_port"]),
            (200, &serde_json::json!(49154))
        );
        let (status, log) = d.terminate();
        assert!(status.success(), "{status}\n{log}");

        // Teardown releases everything recorded: no container rule and no state is left.
        inst.run(&["-H", &inst.host_url(), "teardown"])
            .assert_success();
        let all = Tables::Host.filter_and_nat();
        assert!(!all.contains("172.17.0."), "{all}");
        assert!(!inst.data_root().join("network.state").exists());
        assert!(!inst.data_root().join("network.journal").exists());
    });
}
