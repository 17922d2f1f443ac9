//! The CLI client in `dockerd-net` against a running daemon (issue 4): each handler's
//! subcommand, its human output and its `--json` output, and errors as the docker CLI prints
//! them (`Error response from daemon: <message>`, exit code 1).

use e2e_tests::{Instance, Outcome, dockerd_net};
use serde_json::{Value, json};

/// Runs `dockerd-net -H <the instance's socket> args...`.
fn cli(inst: &Instance, args: &[&str]) -> Outcome {
    let host = inst.host_url();
    let mut argv = vec!["-H", host.as_str()];
    argv.extend_from_slice(args);
    inst.run(&argv)
}

/// A successful run's stdout (nothing on stderr).
#[track_caller]
fn says(inst: &Instance, args: &[&str]) -> String {
    let out = cli(inst, args);
    out.assert_success();
    assert_eq!(out.stderr, "", "{args:?}");
    out.stdout
}

/// A successful `--json` run's output, parsed.
#[track_caller]
fn json_of(inst: &Instance, args: &[&str]) -> Value {
    let mut argv = vec!["--json"];
    argv.extend_from_slice(args);
    let text = says(inst, &argv);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {text}"))
}

/// A run refused by the daemon: exit code 1, nothing on stdout, exactly
/// `Error response from daemon: <message>` on stderr.
#[track_caller]
fn refused(inst: &Instance, args: &[&str], message: &str) {
    let out = cli(inst, args);
    assert_eq!(out.status.code(), Some(1), "{args:?}\n{out}");
    assert_eq!(out.stdout, "", "{args:?}");
    assert_eq!(
        out.stderr,
        format!("Error response from daemon: {message}\n"),
        "{args:?}"
    );
}

#[test]
fn cli_client_drives_every_handler() {
    if !testns::can_run_kernel_tests("cli_client_drives_every_handler") {
        return;
    }
    let bin = dockerd_net();
    testns::in_netns(move || {
        let inst = Instance::new(bin, "daemon-cli");
        let d = inst.start_daemon(&[]);

        // interface allocate
        assert_eq!(
            says(&inst, &["interface", "allocate", "c1"]),
            "172.17.0.1/16 gw 172.17.42.1 mac 02:42:ac:11:00:01 on docker0\n"
        );
        assert_eq!(
            json_of(
                &inst,
                &[
                    "interface",
                    "allocate",
                    "c2",
                    "--requested-ip",
                    "172.17.0.7",
                    "--requested-mac",
                    "02:00:00:00:00:07"
                ]
            ),
            json!({
                "ip": "172.17.0.7",
                "prefix_len": 16,
                "mask": "255.255.0.0",
                "gateway": "172.17.42.1",
                "bridge": "docker0",
                "mac": "02:00:00:00:00:07",
            })
        );

        // port publish: Docker's -p spellings.
        assert_eq!(
            says(&inst, &["port", "publish", "c1", "8080:80"]),
            "0.0.0.0:8080 -> 172.17.0.1:80/tcp\n"
        );
        assert_eq!(
            says(&inst, &["port", "publish", "c1", "127.0.0.1::53/udp"]),
            "127.0.0.1:49153 -> 172.17.0.1:53/udp\n"
        );
        assert_eq!(
            json_of(&inst, &["port", "publish", "c2", "80"]),
            json!({
                "host_ip": "0.0.0.0",
                "host_port": 49153,
                "container_ip": "172.17.0.7",
                "container_port": 80,
                "proto": "tcp",
            })
        );

        // link enable
        assert_eq!(
            says(
                &inst,
                &[
                    "link",
                    "enable",
                    "172.17.0.1",
                    "172.17.0.7",
                    "5432",
                    "53/udp"
                ]
            ),
            "linked 172.17.0.1 -> 172.17.0.7 5432/tcp\nlinked 172.17.0.1 -> 172.17.0.7 53/udp\n"
        );

        // state: the JSON is the API's; the text shows the same.
        let state = json_of(&inst, &["state"]);
        assert_eq!(state, d.state());
        assert_eq!(state["containers"]["c1"]["ports"][1]["host_port"], 49153);
        let text = says(&inst, &["state"]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines.first(),
            Some(&"bridge docker0 172.17.42.1/16"),
            "{text}"
        );
        let row = |id: &str| {
            lines
                .iter()
                .find(|l| l.split_whitespace().next() == Some(id))
                .unwrap_or_else(|| panic!("no row for {id}:\n{text}"))
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        };
        assert_eq!(
            row("c1"),
            "c1 172.17.0.1 02:42:ac:11:00:01 0.0.0.0:8080->80/tcp, 127.0.0.1:49153->53/udp"
        );
        assert_eq!(
            row("c2"),
            "c2 172.17.0.7 02:00:00:00:00:07 0.0.0.0:49153->80/tcp"
        );
        assert_eq!(row("172.17.0.1").matches("172.17.0.7").count(), 1, "{text}");
        assert_eq!(json_of(&inst, &["health"])["status"], "ok");

        // Errors: the daemon's message, exit code 1; --json does not change them.
        refused(
            &inst,
            &["port", "publish", "c3", "8081:80"],
            "no network information for container c3: allocate its interface first",
        );
        refused(
            &inst,
            &["port", "publish", "c2", "8080:80"],
            "Bind for 0.0.0.0:8080 failed: port is already allocated",
        );
        refused(
            &inst,
            &["--json", "port", "publish", "c2", "8080:80"],
            "Bind for 0.0.0.0:8080 failed: port is already allocated",
        );
        refused(
            &inst,
            &[
                "interface",
                "allocate",
                "c3",
                "--requested-ip",
                "172.17.0.7",
            ],
            "ip 172.17.0.7 already allocated",
        );
        refused(
            &inst,
            &["interface", "release", "c9"],
            "No network information to release for c9",
        );
        refused(
            &inst,
            &["port", "unpublish", "c1", "0.0.0.0:9999/tcp"],
            "port 0.0.0.0:9999/tcp is not mapped for container c1",
        );
        refused(
            &inst,
            &["link", "enable", "172.17.0.1", "172.17.0.99", "80"],
            "172.17.0.99 is not the IP of a container on this network",
        );
        assert_eq!(d.state(), state, "the refusals changed nothing");

        // A spec the client cannot parse never reaches the daemon: a usage error (exit 2).
        let out = cli(&inst, &["port", "publish", "c1", "70000:80"]);
        assert_eq!(out.status.code(), Some(2), "{out}");
        assert!(out.stderr.contains("70000"), "{out}");
        assert_eq!(d.state(), state);

        // unpublish, unlink, release.
        assert_eq!(
            says(&inst, &["port", "unpublish", "c1", "0.0.0.0:8080/tcp"]),
            "unpublished 0.0.0.0:8080 -> 172.17.0.1:80/tcp\n"
        );
        assert_eq!(
            says(
                &inst,
                &["link", "disable", "172.17.0.1", "172.17.0.7", "5432"]
            ),
            "unlinked 172.17.0.1 -> 172.17.0.7 5432/tcp\n"
        );
        assert_eq!(
            says(
                &inst,
                &["link", "disable", "172.17.0.1", "172.17.0.7", "5432"]
            ),
            "nothing changed: already disabled\n"
        );
        assert_eq!(
            says(&inst, &["interface", "release", "c1"]),
            "released 172.17.0.1 of c1\nunpublished 127.0.0.1:49153 -> 172.17.0.1:53/udp\n"
        );
        assert_eq!(
            json_of(&inst, &["interface", "release", "c2"]),
            json!({
                "id": "c2",
                "ip": "172.17.0.7",
                "ports": [{
                    "host_ip": "0.0.0.0",
                    "host_port": 49153,
                    "container_ip": "172.17.0.7",
                    "container_port": 80,
                    "proto": "tcp",
                }],
            })
        );
        let state = d.state();
        assert_eq!(state["containers"], json!({}));
        assert_eq!(state["links"], json!([]));

        // No daemon: a clear error, exit code 1.
        let (status, log) = d.terminate();
        assert!(status.success(), "{status}\n{log}");
        let out = cli(&inst, &["state"]);
        assert_eq!(out.status.code(), Some(1), "{out}");
        let want = format!(
            "cannot connect to dockerd-net at {}: ",
            inst.socket().display()
        );
        assert!(
            out.stderr.starts_with(&want) && out.stderr.ends_with("(is the daemon running?)\n"),
            "{out}"
        );
    });
}
