//! daemon.json parsing, merging with flags, and validation, through the public API.

use std::net::Ipv4Addr;

use netcore::config::{ConfigError, NetworkMode, RawConfig};

fn parse(json: &str) -> RawConfig {
    serde_json::from_str(json).expect("valid daemon.json")
}

#[test]
fn every_networking_key_uses_dockers_name() {
    let raw = parse(
        r#"{
            "iptables": false,
            "ip-forward": false,
            "ip-forward-no-drop": true,
            "ip-masq": false,
            "bip": "10.20.0.1/16",
            "fixed-cidr": "10.20.5.0/24",
            "icc": true,
            "mtu": 1450,
            "ip": "127.0.0.1",
            "userland-proxy": false,
            "firewall-backend": "nftables",
            "bridge-mcast-snooping": true
        }"#,
    );
    assert_eq!(
        raw,
        RawConfig {
            iptables: Some(false),
            ip_forward: Some(false),
            ip_forward_no_drop: Some(true),
            ip_masq: Some(false),
            bip: Some("10.20.0.1/16".into()),
            bridge: None,
            fixed_cidr: Some("10.20.5.0/24".into()),
            icc: Some(true),
            mtu: Some(1450),
            ip: Some("127.0.0.1".into()),
            userland_proxy: Some(false),
            firewall_backend: Some("nftables".into()),
            bridge_mcast_snooping: Some(true),
        }
    );
    assert_eq!(parse(r#"{"bridge": "br0"}"#).bridge.as_deref(), Some("br0"));
}

#[test]
fn unknown_keys_are_ignored_and_absent_keys_are_none() {
    let raw = parse(
        r#"{
            "log-level": "debug",
            "storage-driver": "overlay2",
            "default-address-pools": [{"base": "10.10.0.0/16", "size": 24}],
            "ipv6": true,
            "icc": false
        }"#,
    );
    assert_eq!(
        raw,
        RawConfig {
            icc: Some(false),
            ..RawConfig::default()
        }
    );
    assert_eq!(parse("{}"), RawConfig::default());
}

#[test]
fn wrongly_typed_values_are_rejected() {
    assert!(serde_json::from_str::<RawConfig>(r#"{"mtu": "1500"}"#).is_err());
    assert!(serde_json::from_str::<RawConfig>(r#"{"iptables": "yes"}"#).is_err());
    assert!(serde_json::from_str::<RawConfig>(r#"{"mtu": -1}"#).is_err());
}

#[test]
fn snake_case_names_are_not_dockers_and_are_ignored() {
    assert_eq!(parse(r#"{"ip_masq": false}"#), RawConfig::default());
}

#[test]
fn flags_and_file_merge_then_validate() {
    let flags = RawConfig {
        bip: Some("192.168.77.1/24".into()),
        ..RawConfig::default()
    };
    let file = parse(r#"{"iptables": false, "icc": true, "mtu": 9000, "debug": true}"#);
    let merged = RawConfig::merge(flags, file).expect("no conflict");
    let NetworkMode::Bridge(config) = merged.validate().expect("valid") else {
        panic!("expected the bridge mode");
    };
    assert_eq!(config.bip, Some("192.168.77.1/24".parse().expect("cidr")));
    assert!(!config.iptables);
    assert!(!config.ip_masq, "ip-masq follows iptables=false");
    assert_eq!(config.mtu, Some(9000));
    assert_eq!(config.default_ip, Ipv4Addr::UNSPECIFIED);
    assert_eq!(config.bridge_name(), "docker0");
}

#[test]
fn a_key_in_both_places_is_a_conflict_even_with_the_same_value() {
    let flags = RawConfig {
        mtu: Some(1500),
        bridge: Some("br0".into()),
        ..RawConfig::default()
    };
    let file = parse(r#"{"mtu": 1500, "bridge": "br1"}"#);
    let err = RawConfig::merge(flags, file).expect_err("conflict");
    assert!(matches!(&err, ConfigError::Conflicts(c) if c.len() == 2));
    assert_eq!(
        err.to_string(),
        "the following directives are specified both as a flag and in the configuration file: \
         bridge: (from flag: br0, from file: br1), mtu: (from flag: 1500, from file: 1500)"
    );
}

#[test]
fn bridge_none_from_the_file_disables_networking() {
    let raw = RawConfig::merge(RawConfig::default(), parse(r#"{"bridge": "none"}"#))
        .expect("no conflict");
    assert_eq!(raw.validate(), Ok(NetworkMode::Disabled));
}

#[test]
fn validated_config_round_trips_through_serde() {
    let NetworkMode::Bridge(config) =
        parse(r#"{"bip": "10.9.0.1/16", "fixed-cidr": "10.9.128.0/17"}"#)
            .validate()
            .expect("valid")
    else {
        panic!("expected the bridge mode");
    };
    let json = serde_json::to_string(&config).expect("serialise");
    let back: netcore::config::Config = serde_json::from_str(&json).expect("deserialise");
    assert_eq!(back, config);
}
