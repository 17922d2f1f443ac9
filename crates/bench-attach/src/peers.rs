//! The peers, doing the same job the way their users run them: one process (or two) per
//! container, each started from the round's host namespace.
//!
//! - **netavark** (Debian's, as podman runs it): `netavark --config DIR setup NETNS` with the
//!   network options on stdin: one bridge network, the container's static address (podman's
//!   own IPAM decides it before calling netavark), one port mapping; `teardown` with the same
//!   options.
//! - **CNI** (containernetworking-plugins: `bridge` with `host-local` IPAM, then `portmap`),
//!   run as libcni runs a conflist: the plugins one after another with `CNI_*` in the
//!   environment and the plugin's config on stdin, `prevResult` chained on ADD and the cached
//!   result given to every plugin on DEL (in reverse order). host-local's `dataDir` is the
//!   round's scratch directory, not /var/lib/cni.
//!
//! Both program iptables rules in the round's namespace (the CNI bridge adds a masquerade
//! chain per container, portmap and netavark their DNAT chains), as dockerd-net does.

use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};

use crate::Round;
use crate::ns::{Netns, veth_count};

/// The first host port the peers publish on (container i gets `HOST_PORT_BASE + i`).
const HOST_PORT_BASE: u16 = 20000;

/// Runs `cmd` with `input` on stdin; returns stdout, or an error with stderr.
fn run_with_input(cmd: &mut Command, input: &[u8]) -> Result<Vec<u8>> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("spawning {cmd:?}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input)?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out.stdout)
}

/// Where Debian installs netavark (podman's helper directory), else `netavark` on PATH.
pub fn find_netavark() -> Option<PathBuf> {
    let debian = PathBuf::from("/usr/lib/podman/netavark");
    if debian.is_file() {
        return Some(debian);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("netavark"))
        .find(|p| p.is_file())
}

/// `netavark --version`'s text.
pub fn version(bin: &Path) -> String {
    Command::new(bin)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// The i-th container's address in 10.88.0.0/16 (the gateway is .0.1).
fn netavark_ip(i: usize) -> Result<Ipv4Addr> {
    let offset = u32::try_from(i + 2).context("too many containers")?;
    ensure!(offset < 65_535, "too many containers for a /16");
    Ok(Ipv4Addr::from(
        u32::from(Ipv4Addr::new(10, 88, 0, 0)) + offset,
    ))
}

/// netavark's network options for container `i`.
fn netavark_options(i: usize) -> Result<Value> {
    let port = HOST_PORT_BASE + u16::try_from(i).context("too many containers")?;
    Ok(json!({
        "container_id": format!("{:064x}", i + 1),
        "container_name": format!("c{i}"),
        "port_mappings": [{
            "host_ip": "",
            "container_port": 80,
            "host_port": port,
            "range": 1,
            "protocol": "tcp",
        }],
        "networks": {
            "bench": {
                "static_ips": [netavark_ip(i)?.to_string()],
                "interface_name": "eth0",
            }
        },
        "network_info": {
            "bench": {
                "name": "bench",
                "id": "b3e1c4a1d2f3e4b5a6c7d8e9f0a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8a9",
                "driver": "bridge",
                "network_interface": "nvbench0",
                "subnets": [{ "subnet": "10.88.0.0/16", "gateway": "10.88.0.1" }],
                "ipv6_enabled": false,
                "internal": false,
                "dns_enabled": false,
                "ipam_options": { "driver": "host-local" },
            }
        },
    }))
}

/// One netavark round with `n` containers, on the calling thread (in a fresh namespace).
pub fn netavark_round(bin: &Path, n: usize, dir: &Path) -> Result<Round> {
    let config = dir.join("netavark");
    std::fs::create_dir_all(&config)?;
    let containers = crate::ns::many(n)?;
    let options = (0..n)
        .map(|i| netavark_options(i).and_then(|v| Ok(serde_json::to_vec(&v)?)))
        .collect::<Result<Vec<_>>>()?;
    let call = |verb: &str, ns: &Netns, opts: &[u8]| -> Result<Duration> {
        let mut cmd = Command::new(bin);
        cmd.arg("--config")
            .arg(&config)
            .arg(verb)
            .arg(ns.path())
            .env_remove("RUST_LOG");
        let t = Instant::now();
        run_with_input(&mut cmd, opts)?;
        Ok(t.elapsed())
    };
    let mut setup = Vec::with_capacity(n);
    for (ns, opts) in containers.iter().zip(&options) {
        setup.push(call("setup", ns, opts)?);
    }
    let veths = veth_count()?;
    ensure!(
        veths == n,
        "netavark: {veths} veths after setting up {n} containers"
    );
    let mut teardown = Vec::with_capacity(n);
    let all = Instant::now();
    for (ns, opts) in containers.iter().zip(&options) {
        teardown.push(call("teardown", ns, opts)?);
    }
    // Synchronous: every veth is gone when its teardown returns.
    let teardown_total = all.elapsed();
    let veths = veth_count()?;
    ensure!(veths == 0, "netavark: {veths} veths left after teardown");
    Ok(Round {
        setup,
        teardown,
        teardown_total,
        containers,
    })
}

/// The CNI network's name and version.
const CNI_NAME: &str = "bench";
const CNI_VERSION: &str = "1.0.0";

/// The `bridge` plugin's config (host-local IPAM keeping its leases under `ipam_dir`).
fn cni_bridge(ipam_dir: &Path) -> Value {
    json!({
        "cniVersion": CNI_VERSION,
        "name": CNI_NAME,
        "type": "bridge",
        "bridge": "cnibench0",
        "isGateway": true,
        "ipMasq": true,
        "ipam": {
            "type": "host-local",
            "ranges": [[{ "subnet": "10.22.0.0/16" }]],
            "routes": [{ "dst": "0.0.0.0/0" }],
            "dataDir": ipam_dir,
        },
    })
}

/// The `portmap` plugin's config for container `i`, with libcni's runtime config for the
/// `portMappings` capability and the result it chains.
fn cni_portmap(i: usize, prev: &Value) -> Result<Value> {
    let port = HOST_PORT_BASE + u16::try_from(i).context("too many containers")?;
    Ok(json!({
        "cniVersion": CNI_VERSION,
        "name": CNI_NAME,
        "type": "portmap",
        "capabilities": { "portMappings": true },
        "runtimeConfig": {
            "portMappings": [{ "hostPort": port, "containerPort": 80, "protocol": "tcp" }],
        },
        "prevResult": prev,
    }))
}

/// `bridge`'s config with the cached result, as libcni passes it on DEL.
fn with_prev(conf: &Value, prev: &Value) -> Value {
    let mut c = conf.clone();
    c["prevResult"] = prev.clone();
    c
}

/// One plugin call: `CNI_COMMAND=verb`, the config on stdin; returns the result (ADD).
fn cni_call(plugins: &Path, verb: &str, id: &str, ns: &Netns, conf: &Value) -> Result<Value> {
    let kind = conf["type"]
        .as_str()
        .context("plugin config without a type")?;
    let mut cmd = Command::new(plugins.join(kind));
    cmd.env("CNI_COMMAND", verb)
        .env("CNI_CONTAINERID", id)
        .env("CNI_NETNS", ns.path())
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", plugins);
    let out = run_with_input(&mut cmd, &serde_json::to_vec(conf)?)?;
    if verb == "ADD" {
        serde_json::from_slice(&out).with_context(|| format!("{kind} ADD: result is not JSON"))
    } else {
        Ok(Value::Null)
    }
}

/// One CNI round with `n` containers, on the calling thread (in a fresh namespace).
pub fn cni_round(plugins: &Path, n: usize, dir: &Path) -> Result<Round> {
    let ipam = dir.join("cni-ipam");
    std::fs::create_dir_all(&ipam)?;
    let bridge = cni_bridge(&ipam);
    let containers = crate::ns::many(n)?;
    let ids: Vec<String> = (0..n).map(|i| format!("bench-{i}")).collect();
    let mut setup = Vec::with_capacity(n);
    let mut results = Vec::with_capacity(n);
    for (i, (id, ns)) in ids.iter().zip(&containers).enumerate() {
        let t = Instant::now();
        let prev = cni_call(plugins, "ADD", id, ns, &bridge)?;
        let portmap = cni_portmap(i, &prev)?;
        let result = cni_call(plugins, "ADD", id, ns, &portmap)?;
        setup.push(t.elapsed());
        results.push((portmap, result));
    }
    let veths = veth_count()?;
    ensure!(veths == n, "CNI: {veths} veths after adding {n} containers");
    let mut teardown = Vec::with_capacity(n);
    let all = Instant::now();
    for ((id, ns), (portmap, result)) in ids.iter().zip(&containers).zip(&results) {
        let t = Instant::now();
        cni_call(plugins, "DEL", id, ns, &with_prev(portmap, result))?;
        cni_call(plugins, "DEL", id, ns, &with_prev(&bridge, result))?;
        teardown.push(t.elapsed());
    }
    // Synchronous: every veth is gone when its DEL returns.
    let teardown_total = all.elapsed();
    let veths = veth_count()?;
    ensure!(veths == 0, "CNI: {veths} veths left after DEL");
    Ok(Round {
        setup,
        teardown,
        teardown_total,
        containers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netavark_addresses_skip_network_and_gateway() {
        assert_eq!(netavark_ip(0).ok(), Some(Ipv4Addr::new(10, 88, 0, 2)));
        assert_eq!(netavark_ip(254).ok(), Some(Ipv4Addr::new(10, 88, 1, 0)));
        assert!(netavark_ip(65_533).is_err());
    }

    #[test]
    fn netavark_options_carry_one_mapping_and_the_static_address() {
        let o = netavark_options(3).expect("options");
        assert_eq!(o["port_mappings"][0]["host_port"], 20003);
        assert_eq!(o["networks"]["bench"]["static_ips"][0], "10.88.0.5");
        assert_eq!(o["container_id"].as_str().map(str::len), Some(64));
    }

    #[test]
    fn portmap_chains_the_previous_result() {
        let prev = json!({ "cniVersion": "1.0.0", "ips": [{ "address": "10.22.0.2/16" }] });
        let c = cni_portmap(1, &prev).expect("portmap");
        assert_eq!(c["prevResult"], prev);
        assert_eq!(c["runtimeConfig"]["portMappings"][0]["hostPort"], 20001);
        let del = with_prev(&cni_bridge(Path::new("/x")), &prev);
        assert_eq!(
            (del["type"].clone(), del["prevResult"].clone()),
            (json!("bridge"), prev)
        );
    }
}
