//! dockerd-net's side: the release binary as a daemon in the round's host namespace, driven
//! through its HTTP API over the Unix socket with the project's own client.
//!
//! Per container, timed: `POST /v1/attach` (a fresh namespace; the daemon allocates the
//! interface, makes the veth, configures the container end) and `POST /v1/allocate_port`
//! (container port 80/tcp on the next free host port: DNAT and ACCEPT rules, and the userland
//! proxy unless `--userland-proxy=false` is among the daemon's flags); then, per container,
//! `POST /v1/detach` (container unplugged, interface and port released; the daemon's reaper
//! deletes the veth pairs in the background, in batches). Also timed: the whole teardown,
//! from the first detach until the last veth is gone (polled with `ip link`), which divided
//! by the number of containers is what a detach costs the kernel and the daemon in all.

use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use dockerd_net::client::Client;

use crate::Round;
use crate::ns::veth_count;

/// A running `dockerd-net daemon`; killed if dropped while it runs.
#[derive(Debug)]
pub struct Daemon {
    child: Child,
    client: Client,
    log: PathBuf,
}

impl Daemon {
    /// Starts `bin [flags] daemon` with its data root, resolv.conf and socket in `dir`, in
    /// the calling thread's namespace, and waits for its systemd readiness message.
    pub fn start(bin: &Path, dir: &Path, flags: &[String]) -> Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        // A nameserver in TEST-NET-1 (RFC 5737): overlaps none of Docker's candidate subnets,
        // so the machine's own resolv.conf cannot move the bridge between runs.
        let resolv = dir.join("resolv.conf");
        std::fs::write(&resolv, "nameserver 192.0.2.53\n")?;
        let socket = dir.join("api.sock");
        let notify_path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&notify_path);
        let notify = UnixDatagram::bind(&notify_path)
            .with_context(|| format!("binding {}", notify_path.display()))?;
        notify.set_read_timeout(Some(Duration::from_millis(100)))?;
        let log = dir.join("daemon.log");
        let out = std::fs::File::create(&log)?;
        let mut cmd = Command::new(bin);
        cmd.arg("-H")
            .arg(format!("unix://{}", socket.display()))
            .arg("--data-root")
            .arg(dir.join("data"))
            .arg("--resolv-conf")
            .arg(&resolv)
            .args(flags)
            .arg("daemon")
            .env("NOTIFY_SOCKET", &notify_path)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        let child = cmd
            .spawn()
            .with_context(|| format!("spawning {}", bin.display()))?;
        let mut d = Daemon {
            child,
            client: Client::new(&socket).with_timeout(Duration::from_secs(120)),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut buf = [0u8; 256];
        loop {
            if let Ok(len) = notify.recv(&mut buf)
                && &buf[..len] == b"READY=1"
            {
                break;
            }
            if let Some(status) = d.child.try_wait()? {
                bail!(
                    "dockerd-net exited ({status}) while starting:\n{}",
                    d.log_text()
                );
            }
            ensure!(
                Instant::now() < deadline,
                "dockerd-net not ready after 60 s:\n{}",
                d.log_text()
            );
        }
        let _ = std::fs::remove_file(&notify_path);
        Ok(d)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `POST path` with a JSON body; the answer must have status `want`.
    pub fn post(
        &self,
        path: &str,
        body: &serde_json::Value,
        want: u16,
    ) -> Result<serde_json::Value> {
        let bytes = serde_json::to_vec(body)?;
        let resp = self
            .client
            .send("POST", path, Some(&bytes))
            .with_context(|| format!("POST {path}"))?;
        if resp.status != want {
            bail!(
                "POST {path} {body}: status {} (want {want}): {}",
                resp.status,
                String::from_utf8_lossy(&resp.body)
            );
        }
        serde_json::from_slice(&resp.body).with_context(|| format!("POST {path}: not JSON"))
    }

    /// `GET /v1/state`.
    pub fn state(&self) -> Result<serde_json::Value> {
        let resp = self.client.send("GET", "/v1/state", None)?;
        ensure!(resp.status == 200, "GET /v1/state: status {}", resp.status);
        Ok(serde_json::from_slice(&resp.body)?)
    }

    /// SIGTERM, then waits for the exit (SIGKILL after 30 s).
    pub fn stop(mut self) -> Result<()> {
        let pid = libc::pid_t::try_from(self.child.id()).context("pid out of range")?;
        // SAFETY: kill takes a pid and a signal number; `pid` is our own child, not reaped yet
        // (we hold its Child), so the number cannot name another process.
        let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
        ensure!(rc == 0, "SIGTERM: {}", std::io::Error::last_os_error());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait()? {
                ensure!(
                    status.success(),
                    "dockerd-net exited with {status}:\n{}",
                    self.log_text()
                );
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("dockerd-net did not stop within 30 s:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Sets `net.ipv4.ip_forward=1` in the calling thread's network namespace, which must be a
/// private one (not the process's, which is the machine's): `/proc/sys/net` shows the sysctls
/// of the namespace of the thread that opens it, so written from the round's host thread it
/// changes that namespace only. `--firewall-backend=nftables` needs it on to start (as Docker
/// 29, it never turns forwarding on itself); a fresh namespace starts with it off.
pub fn enable_forwarding_here() -> Result<()> {
    let ns_id = |p: &str| -> Result<(u64, u64)> {
        let m = std::fs::metadata(p).with_context(|| format!("reading {p}"))?;
        Ok((m.dev(), m.ino()))
    };
    // The main thread never leaves the machine's namespace; /proc/self/ns/net is its.
    ensure!(
        ns_id("/proc/thread-self/ns/net")? != ns_id("/proc/self/ns/net")?,
        "refusing to set ip_forward: this thread is in the machine's own network namespace"
    );
    let sysctl = "/proc/sys/net/ipv4/ip_forward";
    std::fs::write(sysctl, "1\n").with_context(|| format!("writing 1 to {sysctl}"))?;
    let now = std::fs::read_to_string(sysctl).with_context(|| format!("reading {sysctl}"))?;
    ensure!(
        now.trim() == "1",
        "{sysctl} is {} after writing 1",
        now.trim()
    );
    Ok(())
}

/// One round with `n` containers, on the calling thread, which must be in a fresh namespace;
/// with `forwarding`, `ip_forward` is turned on in that namespace first.
pub fn round(
    bin: &Path,
    flags: &[String],
    forwarding: bool,
    n: usize,
    dir: &Path,
) -> Result<Round> {
    if forwarding {
        enable_forwarding_here()?;
    }
    let d = Daemon::start(bin, dir, flags)?;
    let containers = crate::ns::many(n)?;
    let mut setup = Vec::with_capacity(n);
    let mut teardown = Vec::with_capacity(n);
    let ids: Vec<String> = (0..n).map(|i| format!("c{i}")).collect();
    for (id, ns) in ids.iter().zip(&containers) {
        let attach = serde_json::json!({ "id": id, "netns": ns.path_str() });
        let publish = serde_json::json!({ "id": id, "container_port": 80, "proto": "tcp" });
        let t = Instant::now();
        d.post("/v1/attach", &attach, 201)?;
        d.post("/v1/allocate_port", &publish, 200)?;
        setup.push(t.elapsed());
    }
    let veths = veth_count()?;
    ensure!(
        veths == n,
        "{veths} veths on the host after attaching {n} containers"
    );
    let state = d.state()?;
    let ports = state["containers"].as_object().map_or(0, |m| {
        m.values()
            .filter(|c| c["ports"].as_array().is_some_and(|p| p.len() == 1))
            .count()
    });
    ensure!(
        ports == n,
        "{ports} of {n} containers have their port in the state"
    );
    let all = Instant::now();
    for id in &ids {
        let detach = serde_json::json!({ "id": id });
        let t = Instant::now();
        d.post("/v1/detach", &detach, 200)?;
        teardown.push(t.elapsed());
    }
    // Until the reaper has deleted the last veth pair.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let veths = veth_count()?;
        if veths == 0 {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "{veths} veths left on the host 60 s after detaching:\n{}",
            d.log_text()
        );
        std::thread::sleep(Duration::from_micros(200));
    }
    let teardown_total = all.elapsed();
    let state = d.state()?;
    ensure!(
        state["containers"]
            .as_object()
            .is_some_and(|m| m.is_empty()),
        "containers left in the state after detaching: {}",
        state["containers"]
    );
    d.stop()?;
    Ok(Round {
        setup,
        teardown,
        teardown_total,
        containers,
    })
}
