//! Bad requests to `dockerd-net daemon` (issue 4): malformed JSON, unknown fields, wrong
//! types, a JSON array or `null` instead of an object, a body over 64 KiB, out-of-range and
//! zero ports, unknown protocols, bad and out-of-range IPs, bad MACs, empty ids, unknown
//! paths and wrong methods.
//!
//! Each must be refused with a 4xx and a JSON `{"message"}` that says what is wrong (naming
//! the bad value where there is one), and must change nothing: the daemon's state and the
//! whole `iptables-save` (filter and nat) are the same before and after. The daemon holds a
//! container with a published port throughout, so a request that slipped through would
//! show. The bytes are sent raw, so requests no client would build can be sent.

use e2e_tests::{Daemon, Instance, Tables, dockerd_net, http_request};

/// How the message must read.
#[derive(Debug, Clone, Copy)]
enum Says {
    /// Exactly this.
    Exactly(&'static str),
    /// Contains each of these (serde's texts carry line and column numbers).
    Contains(&'static [&'static str]),
}

struct Case {
    method: &'static str,
    path: &'static str,
    body: Option<Vec<u8>>,
    status: u16,
    says: Says,
}

fn post(path: &'static str, body: &str, status: u16, says: Says) -> Case {
    Case {
        method: "POST",
        path,
        body: Some(body.as_bytes().to_vec()),
        status,
        says,
    }
}

fn bare(method: &'static str, path: &'static str, status: u16, says: Says) -> Case {
    Case {
        method,
        path,
        body: None,
        status,
        says,
    }
}

use Says::{Contains, Exactly};

const AI: &str = "/v1/allocate_interface";
const AP: &str = "/v1/allocate_port";
const RP: &str = "/v1/release_port";
const RI: &str = "/v1/release_interface";
const LINK: &str = "/v1/link";

fn cases() -> Vec<Case> {
    let huge = format!(r#"{{"id":"{}"}}"#, "x".repeat(70 * 1024));
    vec![
        // Not JSON, or not the JSON of a request.
        post(
            AI,
            r#"{"id":"c9""#,
            400,
            Contains(&["invalid request body: ", "EOF while parsing"]),
        ),
        post(
            AI,
            "id=c9",
            400,
            Contains(&["invalid request body: ", "expected value"]),
        ),
        post(
            AI,
            "",
            400,
            Contains(&["invalid request body: ", "EOF while parsing"]),
        ),
        post(
            AI,
            "null",
            400,
            Contains(&["invalid request body: ", "invalid type: null"]),
        ),
        // serde's derived Deserialize also accepts a struct as a sequence of its fields in
        // order; an API of JSON objects must not.
        post(AI, r#"["arr"]"#, 400, Contains(&["invalid request body: "])),
        post(
            AP,
            r#"["c1",null,null,81,"tcp"]"#,
            400,
            Contains(&["invalid request body: "]),
        ),
        post(
            AI,
            r#""c9""#,
            400,
            Contains(&["invalid request body: ", "invalid type: string"]),
        ),
        post(
            AI,
            r#"{"id":"c9"} {"id":"c10"}"#,
            400,
            Contains(&["invalid request body: ", "trailing characters"]),
        ),
        Case {
            method: "POST",
            path: AI,
            body: Some(b"{\"id\":\"c\xff9\"}".to_vec()),
            status: 400,
            says: Contains(&["invalid request body: "]),
        },
        // Unknown, missing and repeated fields.
        post(
            AI,
            r#"{"id":"c9","ip":"172.17.0.9"}"#,
            400,
            Contains(&["unknown field `ip`"]),
        ),
        post(
            AP,
            r#"{"id":"c1","container_port":81,"HostPort":8081}"#,
            400,
            Contains(&["unknown field `HostPort`"]),
        ),
        post(AI, r#"{}"#, 400, Contains(&["missing field `id`"])),
        post(
            AP,
            r#"{"id":"c1"}"#,
            400,
            Contains(&["missing field `container_port`"]),
        ),
        post(
            RP,
            r#"{"id":"c1","host_ip":"0.0.0.0"}"#,
            400,
            Contains(&["missing field `host_port`"]),
        ),
        post(
            AI,
            r#"{"id":"c9","id":"c10"}"#,
            400,
            Contains(&["duplicate field `id`"]),
        ),
        // Wrong types.
        post(
            AI,
            r#"{"id":9}"#,
            400,
            Contains(&["invalid type: integer `9`, expected a string"]),
        ),
        post(
            AP,
            r#"{"id":"c1","container_port":"81"}"#,
            400,
            Contains(&[r#"invalid type: string "81""#]),
        ),
        post(
            AP,
            r#"{"id":"c1","container_port":81.5}"#,
            400,
            Contains(&["invalid type: floating point `81.5`"]),
        ),
        post(
            LINK,
            r#"{"parent_ip":"172.17.0.1","child_ip":"172.17.0.1","ports":"80","enable":true}"#,
            400,
            Contains(&[r#"invalid type: string "80", expected a sequence"#]),
        ),
        post(
            LINK,
            r#"{"parent_ip":"172.17.0.1","child_ip":"172.17.0.1","ports":["80"],"enable":"yes"}"#,
            400,
            Contains(&[r#"invalid type: string "yes", expected a boolean"#]),
        ),
        // A body over the limit.
        post(
            AI,
            &huge,
            413,
            Exactly("request body too large: the limit is 65536 bytes"),
        ),
        // Ports.
        post(
            AP,
            r#"{"id":"c1","container_port":70000}"#,
            400,
            Contains(&["invalid value: integer `70000`"]),
        ),
        post(
            AP,
            r#"{"id":"c1","host_port":70000,"container_port":81}"#,
            400,
            Contains(&["invalid value: integer `70000`"]),
        ),
        post(
            AP,
            r#"{"id":"c1","host_port":-1,"container_port":81}"#,
            400,
            Contains(&["invalid value: integer `-1`"]),
        ),
        post(
            AP,
            r#"{"id":"c1","container_port":0}"#,
            400,
            Exactly("invalid container port 0: a published port needs a container port in 1-65535"),
        ),
        post(
            RP,
            r#"{"id":"c1","host_ip":"0.0.0.0","host_port":65536}"#,
            400,
            Contains(&["invalid value: integer `65536`"]),
        ),
        post(
            LINK,
            r#"{"parent_ip":"172.17.0.1","child_ip":"172.17.0.1","ports":["70000/tcp"],"enable":true}"#,
            400,
            Contains(&[r#"invalid port "70000/tcp""#]),
        ),
        post(
            LINK,
            r#"{"parent_ip":"172.17.0.1","child_ip":"172.17.0.1","ports":["http"],"enable":true}"#,
            400,
            Contains(&[r#"invalid port "http""#]),
        ),
        // Protocols.
        post(
            AP,
            r#"{"id":"c1","container_port":81,"proto":"tcpp"}"#,
            400,
            Exactly(r#"unknown protocol "tcpp": expected tcp, udp or sctp"#),
        ),
        post(
            AP,
            r#"{"id":"c1","container_port":81,"proto":""}"#,
            400,
            Exactly(r#"unknown protocol "": expected tcp, udp or sctp"#),
        ),
        post(
            RP,
            r#"{"id":"c1","host_ip":"0.0.0.0","host_port":49153,"proto":"icmp"}"#,
            400,
            Exactly(r#"unknown protocol "icmp": expected tcp, udp or sctp"#),
        ),
        post(
            LINK,
            r#"{"parent_ip":"172.17.0.1","child_ip":"172.17.0.1","ports":["80/tcpp"],"enable":true}"#,
            400,
            Exactly(r#"unknown protocol "tcpp": expected tcp, udp or sctp"#),
        ),
        // IPs.
        post(
            AP,
            r#"{"id":"c1","host_ip":"localhost","container_port":81}"#,
            400,
            Exactly("Bad parameter: invalid host ip localhost"),
        ),
        post(
            AP,
            r#"{"id":"c1","host_ip":"300.1.1.1","container_port":81}"#,
            400,
            Exactly("Bad parameter: invalid host ip 300.1.1.1"),
        ),
        post(
            AP,
            r#"{"id":"c1","host_ip":"::1","container_port":81}"#,
            400,
            Exactly("Bad parameter: invalid host ip ::1"),
        ),
        post(
            AI,
            r#"{"id":"c9","requested_ip":"localhost"}"#,
            400,
            Exactly(r#"invalid requested_ip "localhost": not an IPv4 address"#),
        ),
        post(
            AI,
            r#"{"id":"c9","requested_ip":"300.1.1.1"}"#,
            400,
            Exactly(r#"invalid requested_ip "300.1.1.1": not an IPv4 address"#),
        ),
        post(
            AI,
            r#"{"id":"c9","requested_ip":"172.17.0.9/16"}"#,
            400,
            Exactly(r#"invalid requested_ip "172.17.0.9/16": not an IPv4 address"#),
        ),
        post(
            AI,
            r#"{"id":"c9","requested_ip":"10.0.0.1"}"#,
            400,
            Exactly("requested ip 10.0.0.1 is out of range 172.17.0.1-172.17.255.254"),
        ),
        post(
            AI,
            r#"{"id":"c9","requested_ip":"172.17.255.255"}"#,
            400,
            Exactly("requested ip 172.17.255.255 is out of range 172.17.0.1-172.17.255.254"),
        ),
        post(
            LINK,
            r#"{"parent_ip":"172.17.0.300","child_ip":"172.17.0.1","ports":["80"],"enable":true}"#,
            400,
            Exactly(r#"invalid parent_ip "172.17.0.300": not an IPv4 address"#),
        ),
        post(
            LINK,
            r#"{"parent_ip":"172.17.0.1","child_ip":"","ports":["80"],"enable":true}"#,
            400,
            Exactly(r#"invalid child_ip "": not an IPv4 address"#),
        ),
        // MACs.
        post(
            AI,
            r#"{"id":"c9","requested_mac":"02:42"}"#,
            400,
            Contains(&[r#"invalid requested_mac "02:42""#]),
        ),
        post(
            AI,
            r#"{"id":"c9","requested_mac":"02:42:ac:11:00:zz"}"#,
            400,
            Contains(&[r#"invalid requested_mac "02:42:ac:11:00:zz""#]),
        ),
        post(
            AI,
            r#"{"id":"c9","requested_mac":"02:42:ac:11:00:09:01"}"#,
            400,
            Contains(&[r#"invalid requested_mac "02:42:ac:11:00:09:01""#]),
        ),
        // Empty ids.
        post(
            AI,
            r#"{"id":""}"#,
            400,
            Exactly("container id must not be empty"),
        ),
        post(
            RI,
            r#"{"id":""}"#,
            400,
            Exactly("container id must not be empty"),
        ),
        post(
            AI,
            r#"{"id":"c9","requested_mac":"01:00:5e:00:00:01"}"#,
            400,
            Exactly(
                "invalid requested MAC 01:00:5e:00:00:01: a container needs a unicast, \
                 non-zero address",
            ),
        ),
        // Paths and methods.
        bare(
            "GET",
            "/v1/nope",
            404,
            Exactly("page not found: GET /v1/nope"),
        ),
        post(
            "/v2/allocate_interface",
            r#"{"id":"c9"}"#,
            404,
            Exactly("page not found: POST /v2/allocate_interface"),
        ),
        bare("GET", "/", 404, Exactly("page not found: GET /")),
        bare(
            "GET",
            AI,
            405,
            Exactly("method GET not allowed on /v1/allocate_interface"),
        ),
        bare(
            "DELETE",
            LINK,
            405,
            Exactly("method DELETE not allowed on /v1/link"),
        ),
        post(
            "/v1/state",
            "{}",
            405,
            Exactly("method POST not allowed on /v1/state"),
        ),
        // A request with no body where one is needed.
        bare(
            "POST",
            AP,
            400,
            Contains(&["invalid request body: ", "EOF while parsing"]),
        ),
    ]
}

fn check(d: &Daemon, case: &Case) {
    let shown = case
        .body
        .as_ref()
        .map(|b| String::from_utf8_lossy(&b[..b.len().min(120)]).into_owned())
        .unwrap_or_default();
    let what = format!("{} {} {shown}", case.method, case.path);
    let before = d.snapshot(Tables::Host);
    let r = d.send(&http_request(case.method, case.path, case.body.as_deref()));
    assert_eq!(r.status, case.status, "{what}: {}", r.body);
    assert_eq!(r.header("content-type"), Some("application/json"), "{what}");
    let body = r.json();
    let fields: Vec<&String> = body
        .as_object()
        .map(|o| o.keys().collect())
        .unwrap_or_default();
    assert_eq!(fields, ["message"], "{what}: {body}");
    let message = body["message"].as_str().unwrap_or_default();
    match case.says {
        Exactly(text) => assert_eq!(message, text, "{what}"),
        Contains(parts) => {
            for p in parts {
                assert!(message.contains(p), "{what}: {message:?} lacks {p:?}");
            }
        }
    }
    assert_eq!(d.snapshot(Tables::Host), before, "{what} changed something");
}

#[test]
fn bad_requests_are_refused_with_a_message_and_change_nothing() {
    if !testns::can_run_kernel_tests("bad_requests_are_refused_with_a_message_and_change_nothing") {
        return;
    }
    let bin = dockerd_net();
    testns::in_netns(move || {
        let inst = Instance::new(bin, "daemon-bad-input");
        let d = inst.start_daemon(&[]);
        for body in [r#"{"id":"c1"}"#, r#"{"id":"c2"}"#] {
            assert_eq!(d.post(AI, body).status, 201);
        }
        let r = d.post(AP, r#"{"id":"c1","container_port":80}"#);
        assert_eq!(r.status, 200, "{}", r.body);
        let r = d.post(
            LINK,
            r#"{"parent_ip":"172.17.0.1","child_ip":"172.17.0.2","ports":["80"],"enable":true}"#,
        );
        assert_eq!(r.status, 200, "{}", r.body);

        let mut failures = Vec::new();
        for case in cases() {
            // Collect every failing case rather than stop at the first.
            if let Err(e) =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&d, &case)))
            {
                let msg = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_default();
                failures.push(msg);
            }
        }
        assert!(
            failures.is_empty(),
            "{} case(s) failed:\n{}",
            failures.len(),
            failures.join("\n\n")
        );

        // The daemon still serves, and the state survived all of it.
        let r = d.post(AI, r#"{"id":"c3"}"#);
        assert_eq!(
            (r.status, r.json()["ip"].clone()),
            (201, "172.17.0.3".into())
        );
    });
}
