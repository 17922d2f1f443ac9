//! For comparison: Docker 20.10's (Debian `docker.io`) own network start-up.
//!
//! dockerd cannot be asked to set up networking alone, so it is started whole, with a private
//! data root, exec root and socket, in a fresh network namespace and a private mount
//! namespace, and its network start-up is read off its own debug log: in 20.10,
//! `daemon.restore()` logs "Loading containers: start." and, after `initNetworkController`
//! (libnetwork's bridge driver: docker0, its address, ~60 single `iptables` calls, FORWARD
//! DROP), "Loading containers: done."; with no containers to load, the interval is the
//! network start-up. The time from spawn to "API listen on" (the whole daemon, containerd
//! included) is reported for context.
//!
//! Nothing may leak to the host: `/run` and `/etc/docker` are covered with tmpfs in the
//! private mount namespace (dockerd writes `/run/docker/plugins` and `/etc/docker/key.json`
//! whatever its flags say), and [`Daemon`]'s drop stops dockerd and, if it survived, the
//! containerd it started, by their own process ids.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::measure::in_fresh_netns;

/// Where Debian's dockerd is, if it is installed and can be contained (see the module docs).
pub fn find() -> Option<PathBuf> {
    if !Path::new("/etc/docker").is_dir() {
        // Without an /etc/docker to cover, dockerd would create /etc/docker/key.json on the
        // host: skip rather than leave that behind.
        return None;
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|d| d.join("dockerd"))
        .find(|p| p.is_file())
}

/// `dockerd --version`, e.g. "Docker version 20.10.24+dfsg1, build 5d6db84".
pub fn version(dockerd: &Path) -> String {
    Command::new(dockerd)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// One start of dockerd.
#[derive(Debug, Clone, Copy)]
pub struct DockerSample {
    /// "Loading containers: start." to "Loading containers: done." in dockerd's log.
    pub network: Duration,
    /// Spawn to "API listen on" appearing in the log (polled every 2 ms).
    pub to_api: Duration,
}

const START_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// A running dockerd; dropping it stops it (and a containerd it left behind).
struct Daemon {
    child: Child,
    exec_root: PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        stop(&mut self.child);
        // dockerd stops the containerd it started; should it have died without doing so,
        // that containerd is found by the pid file in *our* exec root and only then killed.
        let pidfile = self.exec_root.join("containerd/containerd.pid");
        if let Some(pid) = fs::read_to_string(&pidfile)
            .ok()
            .and_then(|t| t.trim().parse::<libc::pid_t>().ok())
        {
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let ours =
                String::from_utf8_lossy(&cmdline).contains(&*self.exec_root.to_string_lossy());
            if ours {
                eprintln!("bench-init: containerd {pid} outlived dockerd; killing it");
                // SAFETY: kill takes a pid and a signal number and touches no memory; the pid
                // is a containerd whose command line names our private exec root.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

/// SIGTERM, then SIGKILL after [`STOP_TIMEOUT`]; always reaps the child.
fn stop(child: &mut Child) {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return;
    }
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: kill takes a pid and a signal number and touches no memory; the pid is our
        // own, not yet reaped, child.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
    let t = Instant::now();
    while t.elapsed() < STOP_TIMEOUT {
        if !matches!(child.try_wait(), Ok(None)) {
            return;
        }
        thread::sleep(Duration::from_millis(10));
    }
    eprintln!("bench-init: dockerd ignored SIGTERM for {STOP_TIMEOUT:?}; killing it");
    let _ = child.kill();
    let _ = child.wait();
}

/// Starts dockerd once in `dir` (which must not exist yet), waits until it serves its API,
/// stops it, and reads its network start-up time from its log.
pub fn run_once(dockerd: &Path, dir: PathBuf) -> Result<DockerSample> {
    let dockerd = dockerd.to_path_buf();
    in_fresh_netns(move || {
        let (data, exec) = (dir.join("data"), dir.join("exec"));
        fs::create_dir_all(&data)?;
        fs::create_dir_all(&exec)?;
        let log_path = dir.join("dockerd.log");
        let log = fs::File::create(&log_path)?;
        // unshare execs sh, which execs dockerd: the child's pid is dockerd's.
        let script =
            "mount -t tmpfs none /run && mount -t tmpfs none /etc/docker && exec \"$0\" \"$@\"";
        let mut cmd = Command::new("unshare");
        cmd.args(["-m", "--propagation", "private", "sh", "-c", script])
            .arg(&dockerd)
            .arg("--debug")
            .arg("--data-root")
            .arg(&data)
            .arg("--exec-root")
            .arg(&exec)
            .arg("--pidfile")
            .arg(dir.join("dockerd.pid"))
            .arg("--host")
            .arg(format!("unix://{}", dir.join("docker.sock").display()))
            .args(["--storage-driver", "vfs"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);

        let t = Instant::now();
        let child = cmd.spawn().context("spawning unshare ... dockerd")?;
        let mut daemon = Daemon {
            child,
            exec_root: exec,
        };
        let to_api = loop {
            let text = fs::read_to_string(&log_path).unwrap_or_default();
            if text.contains("msg=\"API listen on ") {
                break t.elapsed();
            }
            if let Ok(Some(status)) = daemon.child.try_wait() {
                bail!(
                    "dockerd exited ({status}) before serving its API; log: {}",
                    tail(&text)
                );
            }
            if t.elapsed() > START_TIMEOUT {
                bail!(
                    "dockerd did not serve its API within {START_TIMEOUT:?}; log: {}",
                    tail(&text)
                );
            }
            thread::sleep(Duration::from_millis(2));
        };
        drop(daemon);

        let text = fs::read_to_string(&log_path)?;
        let network = loading_containers_interval(&text).with_context(|| {
            format!(
                "no \"Loading containers\" start/done in dockerd's log: {}",
                tail(&text)
            )
        })?;
        fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        Ok(DockerSample { network, to_api })
    })
    .map(|(sample, _netns)| sample)
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(5)..].join("\n")
}

/// The time between dockerd's "Loading containers: start." and "...: done." log lines.
pub fn loading_containers_interval(log: &str) -> Option<Duration> {
    let at = |msg: &str| {
        log.lines()
            .find(|l| l.contains(msg))
            .and_then(log_time_of_day)
    };
    let start = at("msg=\"Loading containers: start.\"")?;
    let done = at("msg=\"Loading containers: done.\"")?;
    // Across midnight the time of day wraps.
    let secs = if done >= start {
        done - start
    } else {
        done + 86_400.0 - start
    };
    Some(Duration::from_secs_f64(secs))
}

/// Seconds since midnight of a logrus line's `time="2026-11-29T06:04:25.309749353Z"`.
fn log_time_of_day(line: &str) -> Option<f64> {
    let rest = &line[line.find("time=\"")? + 6..];
    let stamp = &rest[..rest.find('"')?];
    let clock = stamp.split_once('T')?.1.trim_end_matches('Z');
    let mut parts = clock.splitn(3, ':');
    let h: f64 = parts.next()?.parse().ok()?;
    let m: f64 = parts.next()?.parse().ok()?;
    let s: f64 = parts.next()?.parse().ok()?;
    Some(h * 3600.0 + m * 60.0 + s)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = r#"time="2026-11-29T06:04:25.295925155Z" level=debug msg="metrics API listening on /x/metrics.sock"
time="2026-11-29T06:04:25.309749353Z" level=info msg="Loading containers: start."
time="2026-11-29T06:04:25.310006753Z" level=debug msg="Option DefaultNetwork: bridge"
time="2026-11-29T06:04:25.493846666Z" level=info msg="Loading containers: done."
time="2026-11-29T06:04:25.520842196Z" level=info msg="API listen on /x/docker.sock"
"#;

    #[test]
    fn interval_from_dockerd_log() {
        let d = loading_containers_interval(LOG).unwrap();
        assert_eq!(d.as_micros(), 184_097);
    }

    #[test]
    fn interval_across_midnight() {
        let log = "time=\"2026-11-29T23:59:59.900000000Z\" level=info msg=\"Loading containers: start.\"\n\
                   time=\"2026-11-30T00:00:00.100000000Z\" level=info msg=\"Loading containers: done.\"\n";
        let d = loading_containers_interval(log).unwrap();
        assert_eq!(d.as_millis(), 200);
    }

    #[test]
    fn interval_needs_both_lines() {
        let start_only: String = LOG.lines().take(2).collect::<Vec<_>>().join("\n");
        assert!(loading_containers_interval(&start_only).is_none());
    }
}
