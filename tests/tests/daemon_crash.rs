//! Crash safety of `dockerd-net daemon` (issue 4): SIGKILL at random moments during a stream
//! of allocations, then a restart, many rounds in one namespace.
//!
//! Each round a client thread allocates interfaces and ports (one request at a time, each
//! on its own connection) until the daemon disappears; the test kills the daemon after a
//! random 0-30 ms, waits for its orphans (an `iptables-restore` it started may still be
//! committing, as systemd would kill the service's cgroup), and starts it again. Every few
//! rounds it is also killed during start-up (while it re-applies rules and rewrites its
//! snapshot). After each restart:
//! - every allocation that was answered 2xx is in `GET /v1/state` with the values answered;
//! - everything the previous restart found is still there, unchanged (ports only added);
//! - no IP and no (host IP, port, protocol) is held twice;
//! - the kernel's per-container rules are exactly those the state implies (as multisets:
//!   the rules beyond the bridge's own, against `port_rules` of every mapping).
//!
//! The random delays come from a seeded generator; the seed is printed, and
//! `DAEMON_CRASH_SEED=<n>` repeats a run.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::thread;
use std::time::Duration;

use e2e_tests::{
    Instance, Tables, TestRng, added_rules, dockerd_net, expected_rules, raw_request,
    wait_netns_idle,
};
use serde_json::{Value, json};

const ROUNDS: usize = 60;

/// What the client was told.
#[derive(Debug)]
enum Answered {
    Interface { id: String, reply: Value },
    Port { id: String, reply: Value },
}

/// Allocates until the daemon goes away; returns what was answered. Any answer other than
/// success is a failure of the daemon (nothing here is invalid or conflicting).
fn stream(socket: PathBuf, round: usize) -> Vec<Answered> {
    let mut got = Vec::new();
    for n in 0.. {
        let id = format!("r{round}n{n}");
        let body = format!(r#"{{"id":"{id}"}}"#);
        let Ok(r) = raw_request(&socket, "POST", "/v1/allocate_interface", Some(&body)) else {
            break;
        };
        assert_eq!(r.status, 201, "allocate_interface {id}: {}", r.body);
        got.push(Answered::Interface {
            id: id.clone(),
            reply: r.json(),
        });
        // Mostly dynamic tcp ports; every third one udp on an explicit host IP.
        let body = if n % 3 == 2 {
            format!(r#"{{"id":"{id}","host_ip":"127.0.0.1","container_port":53,"proto":"udp"}}"#)
        } else {
            format!(r#"{{"id":"{id}","container_port":80}}"#)
        };
        let Ok(r) = raw_request(&socket, "POST", "/v1/allocate_port", Some(&body)) else {
            break;
        };
        assert_eq!(r.status, 200, "allocate_port {body}: {}", r.body);
        got.push(Answered::Port {
            id,
            reply: r.json(),
        });
    }
    got
}

/// Checks a restarted daemon's state against everything known; returns its containers.
fn verify(
    state: &Value,
    answered: &[Answered],
    previous: &BTreeMap<String, Value>,
    baseline: &str,
    round: usize,
) -> BTreeMap<String, Value> {
    let containers: BTreeMap<String, Value> =
        serde_json::from_value(state["containers"].clone()).expect("containers");

    for a in answered {
        match a {
            Answered::Interface { id, reply } => {
                let c = containers.get(id).unwrap_or_else(|| {
                    panic!("round {round}: answered interface of {id} lost: {reply}")
                });
                assert_eq!(
                    (&c["ip"], &c["mac"]),
                    (&reply["ip"], &reply["mac"]),
                    "round {round}: {id}"
                );
            }
            Answered::Port { id, reply } => {
                let ports = containers
                    .get(id)
                    .and_then(|c| c["ports"].as_array())
                    .unwrap_or_else(|| panic!("round {round}: {id} lost"));
                assert!(
                    ports.contains(reply),
                    "round {round}: answered port of {id} lost: {reply} not in {ports:?}"
                );
            }
        }
    }

    // What the previous restart found survives unchanged; ports are only ever added.
    for (id, before) in previous {
        let now = containers
            .get(id)
            .unwrap_or_else(|| panic!("round {round}: {id} vanished ({before})"));
        assert_eq!(
            (&now["ip"], &now["mac"]),
            (&before["ip"], &before["mac"]),
            "round {round}: {id}"
        );
        let (old, new) = (
            before["ports"].as_array().expect("ports"),
            now["ports"].as_array().expect("ports"),
        );
        assert!(
            new.starts_with(old),
            "round {round}: ports of {id} changed: {old:?} -> {new:?}"
        );
    }

    // Nothing held twice; every mapping points at its container.
    let mut ips = HashSet::new();
    let mut ports = HashSet::new();
    for (id, c) in &containers {
        assert!(
            ips.insert(c["ip"].clone()),
            "round {round}: IP {} held twice",
            c["ip"]
        );
        for m in c["ports"].as_array().expect("ports") {
            assert_eq!(m["container_ip"], c["ip"], "round {round}: {id}: {m}");
            let key = (
                m["host_ip"].clone(),
                m["host_port"].clone(),
                m["proto"].clone(),
            );
            assert!(ports.insert(key), "round {round}: host port {m} held twice");
        }
    }

    // The kernel's container rules are exactly the state's.
    let tables = Tables::Host.filter_and_nat();
    assert_eq!(
        added_rules(baseline, &tables),
        expected_rules(state, false, true),
        "round {round}: the rules do not match the state"
    );
    containers
}

#[test]
fn answered_allocations_survive_sigkill_at_random_moments() {
    if !testns::can_run_kernel_tests("answered_allocations_survive_sigkill_at_random_moments") {
        return;
    }
    let bin = dockerd_net();
    testns::in_netns(move || {
        let mut rng = TestRng::from_env("DAEMON_CRASH_SEED");
        let inst = Instance::new(bin, "daemon-crash");
        let mut d = inst.start_daemon(&[]);
        let baseline = Tables::Host.filter_and_nat();
        let mut known: BTreeMap<String, Value> = BTreeMap::new();
        let (mut answered_total, mut killed_in_start, mut reapplied) = (0, 0, 0);

        for round in 0..ROUNDS {
            let socket = inst.socket();
            let client = thread::spawn(move || stream(socket, round));
            thread::sleep(Duration::from_millis(rng.below(31)));
            d.kill();
            let answered = match client.join() {
                Ok(a) => a,
                Err(panic) => std::panic::resume_unwind(panic),
            };
            answered_total += answered.len();
            wait_netns_idle();

            if round % 4 == 3 {
                // Killed again while it starts: re-applying rules, rewriting the snapshot.
                let starting = inst.spawn_daemon(&[]);
                thread::sleep(Duration::from_millis(rng.below(60)));
                starting.kill();
                killed_in_start += 1;
                wait_netns_idle();
            }

            d = inst.start_daemon(&[]);
            // A kill between journalling a request and applying its rules: the restart
            // re-applied them (reported, not required: the moments are random).
            if d.log_text().contains("re-applied the saved state's rules") {
                reapplied += 1;
            }
            let state = d.state();
            known = verify(&state, &answered, &known, &baseline, round);
        }

        // The stream did run: the rounds answered requests, and they are all there.
        assert!(
            answered_total >= ROUNDS,
            "only {answered_total} answers in {ROUNDS} rounds: the kills came too early"
        );
        eprintln!(
            "{ROUNDS} rounds ({killed_in_start} also killed in start-up, {reapplied} restarts \
             re-applied rules): {answered_total} answered requests, {} containers survive",
            known.len()
        );

        // A clean stop and start changes nothing.
        let state = d.state();
        let tables = Tables::Host.filter_and_nat();
        let (status, log) = d.terminate();
        assert!(status.success(), "{status}\n{log}");
        let d = inst.start_daemon(&[]);
        assert_eq!(d.state(), state);
        assert_eq!(Tables::Host.filter_and_nat(), tables);
        // And the next allocation collides with nothing.
        let r = d.post("/v1/allocate_interface", r#"{"id":"last"}"#);
        assert_eq!(r.status, 201, "{}", r.body);
        let ip = r.json()["ip"].clone();
        assert!(
            known.values().all(|c| c["ip"] != ip),
            "{ip} handed out twice"
        );
        let r = d.post("/v1/allocate_port", r#"{"id":"last","container_port":80}"#);
        assert_eq!(r.status, 200, "{}", r.body);
        let port = r.json()["host_port"].clone();
        assert!(
            known
                .values()
                .all(|c| c["ports"].as_array().is_none_or(|ps| ps
                    .iter()
                    .all(|m| m["host_port"] != port
                        || m["host_ip"] != json!("0.0.0.0")
                        || m["proto"] != json!("tcp")))),
            "port {port} handed out twice"
        );
    });
}
