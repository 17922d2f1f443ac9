//! `docs/openapi.json` describes the API of `src/api.rs`, exactly: the endpoints and their
//! status codes, each schema's fields (taken from the structs by serialising them), what is
//! required, and what a request may contain (checked by validating documents against the
//! schemas with a small validator, and comparing its verdict with serde's).

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use dockerd_net::api;
use netcore::firewall::PortMapping;
use netcore::handlers::{Endpoint, Interface, LinkSpec};
use netcore::mac::MacAddr;
use netcore::ports::Proto;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

fn spec() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json");
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn schema<'a>(doc: &'a Value, name: &str) -> &'a Value {
    let s = &doc["components"]["schemas"][name];
    assert!(s.is_object(), "no schema {name}");
    s
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}

fn strings(v: &Value) -> BTreeSet<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn to_json<T: Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

// ----- samples ---------------------------------------------------------------------------------

const C2: Ipv4Addr = Ipv4Addr::new(172, 17, 0, 2);
const C3: Ipv4Addr = Ipv4Addr::new(172, 17, 0, 3);

fn mac() -> MacAddr {
    MacAddr([0x02, 0x42, 0xac, 0x11, 0x00, 0x02])
}

fn mapping() -> PortMapping {
    PortMapping {
        host_ip: Ipv4Addr::UNSPECIFIED,
        host_port: 49153,
        container_ip: C2,
        container_port: 80,
        proto: Proto::Sctp,
    }
}

fn link_spec() -> LinkSpec {
    LinkSpec {
        parent: C3,
        child: C2,
        port: 5432,
        proto: Proto::Udp,
    }
}

/// Every request type, fully populated and with only what is required.
fn requests() -> Vec<(&'static str, Value, Value)> {
    vec![
        (
            "AllocateInterface",
            to_json(&api::AllocateInterface {
                id: "c1".into(),
                requested_ip: Some("172.17.0.9".into()),
                requested_mac: Some("02:42:ac:11:00:09".into()),
            }),
            to_json(&api::AllocateInterface {
                id: "c1".into(),
                requested_ip: None,
                requested_mac: None,
            }),
        ),
        (
            "ReleaseInterface",
            to_json(&api::ReleaseInterface { id: "c1".into() }),
            to_json(&api::ReleaseInterface { id: "c1".into() }),
        ),
        (
            "AllocatePort",
            to_json(&api::AllocatePort {
                id: "c1".into(),
                host_ip: Some("127.0.0.1".into()),
                host_port: Some(8080),
                container_port: 80,
                proto: Some("udp".into()),
            }),
            to_json(&api::AllocatePort {
                id: "c1".into(),
                host_ip: None,
                host_port: None,
                container_port: 80,
                proto: None,
            }),
        ),
        (
            "ReleasePort",
            to_json(&api::ReleasePort {
                id: "c1".into(),
                host_ip: "0.0.0.0".into(),
                host_port: 49153,
                proto: Some("sctp".into()),
            }),
            to_json(&api::ReleasePort {
                id: "c1".into(),
                host_ip: "0.0.0.0".into(),
                host_port: 49153,
                proto: None,
            }),
        ),
        (
            "Link",
            to_json(&api::Link {
                parent_ip: C3.to_string(),
                child_ip: C2.to_string(),
                ports: vec!["5432/tcp".into(), "53".into()],
                enable: true,
            }),
            to_json(&api::Link {
                parent_ip: C3.to_string(),
                child_ip: C2.to_string(),
                ports: vec![],
                enable: false,
            }),
        ),
        (
            "Attach",
            to_json(&api::Attach {
                id: "c1".into(),
                netns: "/proc/4242/ns/net".into(),
                ifname: Some("eth1".into()),
            }),
            to_json(&api::Attach {
                id: "c1".into(),
                netns: "4242".into(),
                ifname: None,
            }),
        ),
        (
            "Detach",
            to_json(&api::Detach {
                id: "c1".into(),
                wait: true,
            }),
            to_json(&api::Detach {
                id: "c1".into(),
                wait: false,
            }),
        ),
    ]
}

fn interface() -> Interface {
    Interface {
        ip: C2,
        prefix_len: 16,
        mask: Ipv4Addr::new(255, 255, 0, 0),
        gateway: Ipv4Addr::new(172, 17, 42, 1),
        bridge: "docker0".into(),
        mac: mac(),
    }
}

fn attached() -> api::Attached {
    api::Attached {
        id: "c1".into(),
        interface: interface(),
        host_veth: "veth1a2b3c4".into(),
        netns: "/proc/4242/ns/net".into(),
        ifname: "eth0".into(),
        mtu: 1500,
    }
}

/// Every answer type (and the types nested in them), populated, with the fields an answer
/// may leave out (see [`optional_reply_fields`]).
fn replies() -> Vec<(&'static str, Value)> {
    let endpoint = Endpoint {
        ip: C2,
        mac: mac(),
        ports: vec![mapping()],
    };
    vec![
        ("Interface", to_json(&interface())),
        ("PortMapping", to_json(&mapping())),
        (
            "Released",
            to_json(&api::Released {
                id: "c1".into(),
                ip: C2,
                ports: vec![mapping()],
            }),
        ),
        ("LinkSpec", to_json(&link_spec())),
        (
            "LinkReply",
            to_json(&api::LinkReply {
                changed: vec![link_spec()],
            }),
        ),
        ("Endpoint", to_json(&endpoint)),
        (
            "State",
            to_json(&api::State {
                bridge: "docker0".into(),
                address: "172.17.42.1/16".into(),
                containers: BTreeMap::from([("c1".to_owned(), endpoint.clone())]),
                links: vec![link_spec()],
                attachments: BTreeMap::from([("c1".to_owned(), attached())]),
            }),
        ),
        ("Attached", to_json(&attached())),
        (
            "Detached",
            to_json(&api::Detached {
                id: "c1".into(),
                detached: true,
                host_veth: Some("veth1a2b3c4".into()),
                released: Some(api::Released {
                    id: "c1".into(),
                    ip: C2,
                    ports: vec![mapping()],
                }),
            }),
        ),
        (
            "Health",
            to_json(&api::Health {
                status: "ok".into(),
                version: "0.1.0".into(),
                link_backend: "netlink".into(),
                containers: 1,
            }),
        ),
        (
            "Error",
            to_json(&api::ErrorReply {
                message: "ip 172.17.0.2 already allocated".into(),
            }),
        ),
    ]
}

// ----- a validator for the subset of JSON Schema the spec uses ---------------------------------

/// Keywords the validator checks.
const CHECKED: &[&str] = &[
    "$ref",
    "allOf",
    "type",
    "enum",
    "format",
    "minimum",
    "maximum",
    "minLength",
    "properties",
    "required",
    "additionalProperties",
    "items",
];
/// Keywords that only annotate (`pattern` is documentation here: no regex engine; the MAC and
/// link-port strings are parsed by the daemon, whose tests cover them).
const ANNOTATIONS: &[&str] = &["description", "example", "default", "pattern"];

fn resolve<'a>(doc: &'a Value, r: &str) -> &'a Value {
    let name = r
        .strip_prefix("#/components/schemas/")
        .unwrap_or_else(|| panic!("unexpected $ref {r}"));
    schema(doc, name)
}

fn validate(doc: &Value, s: &Value, v: &Value, at: &str) -> Result<(), String> {
    if let Some(r) = s.get("$ref").and_then(Value::as_str) {
        return validate(doc, resolve(doc, r), v, at);
    }
    for sub in s
        .get("allOf")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        validate(doc, sub, v, at)?;
    }
    if let Some(t) = s.get("type").and_then(Value::as_str) {
        let ok = match t {
            "object" => v.is_object(),
            "array" => v.is_array(),
            "string" => v.is_string(),
            "integer" => v.is_i64() || v.is_u64(),
            "boolean" => v.is_boolean(),
            other => panic!("type {other} not handled"),
        };
        if !ok {
            return Err(format!("{at}: {v} is not {t}"));
        }
    }
    if let Some(options) = s.get("enum").and_then(Value::as_array)
        && !options.contains(v)
    {
        return Err(format!("{at}: {v} is not one of {options:?}"));
    }
    if let Some(f) = s.get("format").and_then(Value::as_str) {
        assert_eq!(f, "ipv4", "format {f} not handled");
        if v.as_str()
            .and_then(|s| s.parse::<Ipv4Addr>().ok())
            .is_none()
        {
            return Err(format!("{at}: {v} is not an IPv4 address"));
        }
    }
    if let (Some(min), Some(n)) = (s.get("minimum").and_then(Value::as_i64), v.as_i64())
        && n < min
    {
        return Err(format!("{at}: {n} < {min}"));
    }
    if let Some(max) = s.get("maximum").and_then(Value::as_i64)
        && v.as_i64().is_none_or(|n| n > max)
        && v.is_number()
    {
        return Err(format!("{at}: {v} > {max}"));
    }
    if let (Some(min), Some(text)) = (s.get("minLength").and_then(Value::as_u64), v.as_str())
        && (text.chars().count() as u64) < min
    {
        return Err(format!("{at}: {v} shorter than {min}"));
    }
    if let Some(obj) = v.as_object() {
        for name in strings(&s["required"]) {
            if !obj.contains_key(&name) {
                return Err(format!("{at}: missing {name}"));
            }
        }
        let props = s.get("properties").and_then(Value::as_object);
        for (name, value) in obj {
            let here = format!("{at}.{name}");
            match (
                props.and_then(|p| p.get(name)),
                s.get("additionalProperties"),
            ) {
                (Some(p), _) => validate(doc, p, value, &here)?,
                (None, Some(Value::Bool(false))) => {
                    return Err(format!("{at}: unknown field {name}"));
                }
                (None, Some(extra)) if extra.is_object() => validate(doc, extra, value, &here)?,
                (None, _) => {}
            }
        }
    }
    if let (Some(items), Some(arr)) = (s.get("items"), v.as_array()) {
        for (i, item) in arr.iter().enumerate() {
            validate(doc, items, item, &format!("{at}[{i}]"))?;
        }
    }
    Ok(())
}

/// Every keyword in every schema of the spec, recursively.
fn schema_keywords(s: &Value, out: &mut BTreeSet<String>) {
    let Some(obj) = s.as_object() else { return };
    for (k, v) in obj {
        out.insert(k.clone());
        match k.as_str() {
            "properties" => v
                .as_object()
                .into_iter()
                .flat_map(|o| o.values())
                .for_each(|p| schema_keywords(p, out)),
            "items" | "additionalProperties" => schema_keywords(v, out),
            "allOf" => v
                .as_array()
                .into_iter()
                .flatten()
                .for_each(|p| schema_keywords(p, out)),
            _ => {}
        }
    }
}

// ----- the tests -------------------------------------------------------------------------------

#[test]
fn the_spec_is_openapi_3_for_api_v1() {
    let doc = spec();
    assert!(
        doc["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.0.")),
        "{}",
        doc["openapi"]
    );
    assert_eq!(
        doc["info"]["version"],
        json!(api::PREFIX.trim_start_matches("/v"))
    );
}

/// One operation as api.rs defines it.
struct Op {
    method: &'static str,
    endpoint: &'static str,
    request: Option<&'static str>,
    ok: &'static [&'static str],
    reply: &'static str,
    errors: &'static [&'static str],
}

#[test]
fn endpoints_and_status_codes_are_the_api() {
    let doc = spec();
    let post = |endpoint, request, ok, reply, errors| Op {
        method: "post",
        endpoint,
        request: Some(request),
        ok,
        reply,
        errors,
    };
    let get = |endpoint, reply| Op {
        method: "get",
        endpoint,
        request: None,
        ok: &["200"],
        reply,
        errors: &["500"],
    };
    let endpoints = [
        post(
            "allocate_interface",
            "AllocateInterface",
            &["200", "201"],
            "Interface",
            &["400", "409", "413", "500"],
        ),
        post(
            "release_interface",
            "ReleaseInterface",
            &["200"],
            "Released",
            &["400", "404", "413", "500"],
        ),
        post(
            "allocate_port",
            "AllocatePort",
            &["201"],
            "PortMapping",
            &["400", "404", "409", "413", "500"],
        ),
        post(
            "release_port",
            "ReleasePort",
            &["200"],
            "PortMapping",
            &["400", "404", "413", "500"],
        ),
        post(
            "link",
            "Link",
            &["200"],
            "LinkReply",
            &["400", "404", "413", "500"],
        ),
        post(
            "attach",
            "Attach",
            &["200", "201"],
            "Attached",
            &["400", "404", "409", "413", "500"],
        ),
        // Idempotent: nothing to detach is 200 (detached=false), never 404.
        post(
            "detach",
            "Detach",
            &["200"],
            "Detached",
            &["400", "413", "500"],
        ),
        get("state", "State"),
        get("health", "Health"),
    ];
    let paths: BTreeSet<String> = endpoints
        .iter()
        .map(|e| format!("{}/{}", api::PREFIX, e.endpoint))
        .collect();
    assert_eq!(keys(&doc["paths"]), paths, "the spec's paths");

    for Op {
        method,
        endpoint: name,
        request,
        ok: ok_codes,
        reply,
        errors: error_codes,
    } in &endpoints
    {
        let path = format!("{}/{name}", api::PREFIX);
        assert_eq!(
            keys(&doc["paths"][&path]),
            BTreeSet::from([method.to_string()]),
            "{path}'s methods"
        );
        let op = &doc["paths"][&path][method];
        assert_eq!(op["operationId"], json!(name), "{path}");
        match request {
            Some(req) => {
                let body = &op["requestBody"];
                assert_eq!(body["required"], json!(true), "{path}");
                assert_eq!(
                    keys(&body["content"]),
                    BTreeSet::from(["application/json".into()])
                );
                assert_eq!(
                    body["content"]["application/json"]["schema"]["$ref"],
                    json!(format!("#/components/schemas/{req}")),
                    "{path}'s request"
                );
            }
            None => assert!(op.get("requestBody").is_none(), "{path} takes no body"),
        }
        let mut codes: BTreeSet<String> = ok_codes.iter().map(|c| c.to_string()).collect();
        codes.extend(error_codes.iter().map(|c| c.to_string()));
        assert_eq!(keys(&op["responses"]), codes, "{path}'s status codes");
        for code in *ok_codes {
            assert_eq!(
                op["responses"][code]["content"]["application/json"]["schema"]["$ref"],
                json!(format!("#/components/schemas/{reply}")),
                "{path} {code}"
            );
        }
        for code in error_codes.iter() {
            let r = &op["responses"][code];
            let r = match r["$ref"].as_str() {
                Some(target) => {
                    let name = target
                        .strip_prefix("#/components/responses/")
                        .unwrap_or_else(|| panic!("{path} {code}: {target}"));
                    &doc["components"]["responses"][name]
                }
                None => r,
            };
            assert_eq!(
                r["content"]["application/json"]["schema"]["$ref"],
                json!("#/components/schemas/Error"),
                "{path} {code} must answer the error object"
            );
        }
    }
}

#[test]
fn request_schemas_list_exactly_the_struct_fields() {
    let doc = spec();
    for (name, full, minimal) in requests() {
        let s = schema(&doc, name);
        assert_eq!(keys(&s["properties"]), keys(&full), "{name}: properties");
        assert_eq!(strings(&s["required"]), keys(&minimal), "{name}: required");
        assert_eq!(
            s["additionalProperties"],
            json!(false),
            "{name}: unknown fields must be refused (serde(deny_unknown_fields))"
        );
    }
}

/// The answers with fields that may be absent, and a sample without them.
fn optional_reply_fields() -> Vec<(&'static str, Value)> {
    vec![(
        "Detached",
        to_json(&api::Detached {
            id: "c1".into(),
            detached: false,
            host_veth: None,
            released: None,
        }),
    )]
}

#[test]
fn reply_schemas_list_exactly_the_struct_fields() {
    let doc = spec();
    let minimal: BTreeMap<&str, Value> = optional_reply_fields().into_iter().collect();
    for (name, sample) in replies() {
        let s = schema(&doc, name);
        assert_eq!(keys(&s["properties"]), keys(&sample), "{name}: properties");
        // Answers carry every field, but for the few that say "absent when ...".
        let required = minimal.get(name).unwrap_or(&sample);
        assert_eq!(strings(&s["required"]), keys(required), "{name}: required");
    }
}

#[test]
fn every_sample_validates() {
    let doc = spec();
    for (name, full, minimal) in requests() {
        for v in [full, minimal] {
            assert_eq!(validate(&doc, schema(&doc, name), &v, name), Ok(()), "{v}");
        }
    }
    for (name, v) in replies().into_iter().chain(optional_reply_fields()) {
        assert_eq!(validate(&doc, schema(&doc, name), &v, name), Ok(()), "{v}");
    }
    // A state from a daemon older than attach (no `attachments`) still reads.
    let mut old = to_json(&api::State {
        bridge: "docker0".into(),
        address: "172.17.42.1/16".into(),
        containers: BTreeMap::new(),
        links: vec![],
        attachments: BTreeMap::new(),
    });
    if let Some(o) = old.as_object_mut() {
        o.remove("attachments");
    }
    assert!(serde_accepts::<api::State>(&old));
    // Every protocol as serde spells it is in the enum.
    for p in Proto::ALL {
        assert_eq!(
            validate(&doc, schema(&doc, "Proto"), &to_json(&p), "Proto"),
            Ok(())
        );
    }
}

fn serde_accepts<T: DeserializeOwned>(v: &Value) -> bool {
    serde_json::from_value::<T>(v.clone()).is_ok()
}

#[test]
fn the_schema_and_serde_agree_on_malformed_requests() {
    let doc = spec();
    type Check = fn(&Value) -> bool;
    let cases: Vec<(&str, Check, Value)> = vec![
        (
            "AllocateInterface",
            serde_accepts::<api::AllocateInterface>,
            json!({"id": "c1", "requested_ip": "172.17.0.9", "bogus": 1}),
        ),
        (
            "AllocateInterface",
            serde_accepts::<api::AllocateInterface>,
            json!({"requested_ip": "172.17.0.9"}),
        ),
        (
            "AllocateInterface",
            serde_accepts::<api::AllocateInterface>,
            json!({"id": 7}),
        ),
        (
            "ReleaseInterface",
            serde_accepts::<api::ReleaseInterface>,
            json!({"id": "c1", "ports": []}),
        ),
        (
            "ReleaseInterface",
            serde_accepts::<api::ReleaseInterface>,
            json!({}),
        ),
        (
            "AllocatePort",
            serde_accepts::<api::AllocatePort>,
            json!({"id": "c1", "container_port": "80"}),
        ),
        (
            "AllocatePort",
            serde_accepts::<api::AllocatePort>,
            json!({"id": "c1", "container_port": 65536}),
        ),
        (
            "AllocatePort",
            serde_accepts::<api::AllocatePort>,
            json!({"id": "c1", "container_port": -1}),
        ),
        (
            "AllocatePort",
            serde_accepts::<api::AllocatePort>,
            json!({"id": "c1", "container_port": 80, "host_port": 70000}),
        ),
        (
            "AllocatePort",
            serde_accepts::<api::AllocatePort>,
            json!({"id": "c1", "container_port": 80.5}),
        ),
        (
            "AllocatePort",
            serde_accepts::<api::AllocatePort>,
            json!({"id": "c1"}),
        ),
        (
            "AllocatePort",
            serde_accepts::<api::AllocatePort>,
            json!({"id": "c1", "container_port": 80, "hostport": 8080}),
        ),
        (
            "AllocatePort",
            serde_accepts::<api::AllocatePort>,
            json!({"id": "c1", "container_port": 80, "host_port": 0}),
        ),
        (
            "ReleasePort",
            serde_accepts::<api::ReleasePort>,
            json!({"id": "c1", "host_ip": "0.0.0.0"}),
        ),
        (
            "ReleasePort",
            serde_accepts::<api::ReleasePort>,
            json!({"id": "c1", "host_ip": "0.0.0.0", "host_port": 80, "container_port": 80}),
        ),
        (
            "Link",
            serde_accepts::<api::Link>,
            json!({"parent_ip": "172.17.0.3", "child_ip": "172.17.0.2", "ports": ["80"], "enable": "yes"}),
        ),
        (
            "Link",
            serde_accepts::<api::Link>,
            json!({"parent_ip": "172.17.0.3", "child_ip": "172.17.0.2", "ports": "80", "enable": true}),
        ),
        (
            "Link",
            serde_accepts::<api::Link>,
            json!({"parent_ip": "172.17.0.3", "child_ip": "172.17.0.2", "ports": ["80"]}),
        ),
        (
            "Link",
            serde_accepts::<api::Link>,
            json!({"parent_ip": "172.17.0.3", "child_ip": "172.17.0.2", "ports": [80], "enable": true}),
        ),
        ("Attach", serde_accepts::<api::Attach>, json!({"id": "c1"})),
        (
            "Attach",
            serde_accepts::<api::Attach>,
            json!({"id": "c1", "netns": 4242}),
        ),
        (
            "Attach",
            serde_accepts::<api::Attach>,
            json!({"id": "c1", "netns": "4242", "mtu": 1400}),
        ),
        (
            "Detach",
            serde_accepts::<api::Detach>,
            json!({"id": "c1", "netns": "4242"}),
        ),
        (
            "Detach",
            serde_accepts::<api::Detach>,
            json!({"id": "c1", "wait": "yes"}),
        ),
    ];
    let mut refused = 0;
    for (name, serde_ok, v) in &cases {
        let schema_ok = validate(&doc, schema(&doc, name), v, name).is_ok();
        assert_eq!(
            schema_ok,
            serde_ok(v),
            "{name} {v}: schema and serde disagree"
        );
        refused += usize::from(!schema_ok);
    }
    // All but `host_port: 0` (a dynamic port) are malformed.
    assert_eq!(refused, cases.len() - 1);
}

#[test]
fn the_schema_refuses_what_the_daemon_refuses_with_400() {
    // Well-typed, so serde takes them; the daemon then refuses them, and the spec says so.
    let doc = spec();
    for (name, v) in [
        ("AllocateInterface", json!({"id": ""})),
        (
            "AllocateInterface",
            json!({"id": "c1", "requested_ip": "172.17.0"}),
        ),
        ("AllocatePort", json!({"id": "c1", "container_port": 0})),
        (
            "AllocatePort",
            json!({"id": "c1", "container_port": 80, "proto": "icmp"}),
        ),
        (
            "AllocatePort",
            json!({"id": "c1", "container_port": 80, "proto": "TCP"}),
        ),
        (
            "AllocatePort",
            json!({"id": "c1", "container_port": 80, "host_ip": "localhost"}),
        ),
        (
            "ReleasePort",
            json!({"id": "c1", "host_ip": "::1", "host_port": 80}),
        ),
        (
            "Link",
            json!({"parent_ip": "parent", "child_ip": "172.17.0.2", "ports": [], "enable": true}),
        ),
        ("Attach", json!({"id": "", "netns": "4242"})),
        ("Attach", json!({"id": "c1", "netns": ""})),
        ("Attach", json!({"id": "c1", "netns": "4242", "ifname": ""})),
        ("Detach", json!({"id": ""})),
    ] {
        assert!(
            validate(&doc, schema(&doc, name), &v, name).is_err(),
            "{name} {v}"
        );
    }
}

#[test]
fn the_validator_understands_every_keyword_of_the_spec() {
    let doc = spec();
    let mut used = BTreeSet::new();
    for s in doc["components"]["schemas"]
        .as_object()
        .into_iter()
        .flat_map(|o| o.values())
    {
        schema_keywords(s, &mut used);
    }
    let known: BTreeSet<String> = CHECKED
        .iter()
        .chain(ANNOTATIONS)
        .map(|k| k.to_string())
        .collect();
    let unknown: Vec<&String> = used.difference(&known).collect();
    assert!(
        unknown.is_empty(),
        "keywords the validator ignores: {unknown:?}"
    );
    // And it does check: a known-bad document fails for each checked keyword's reason.
    let bad = json!({"host_ip": "0.0.0.0", "host_port": 0, "container_ip": "x",
                     "container_port": 80, "proto": "tcp"});
    assert!(validate(&doc, schema(&doc, "PortMapping"), &bad, "PortMapping").is_err());
}
