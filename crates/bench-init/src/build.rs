//! Release builds of `dockerd-net` for the `cargo xtask bench` binaries: one per link
//! backend, each checked (`--version`) to have that backend inside.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail, ensure};

/// The link backends `dockerd-net` can be built with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Netlink,
    Ioctl,
}

impl Backend {
    pub const ALL: [Backend; 2] = [Backend::Netlink, Backend::Ioctl];

    pub fn name(self) -> &'static str {
        match self {
            Backend::Netlink => "netlink",
            Backend::Ioctl => "ioctl",
        }
    }
}

/// The workspace root (the bench crates live in `crates/`).
pub fn workspace_root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.ancestors()
        .nth(2)
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// Cargo's target directory: `CARGO_TARGET_DIR`, else `<root>/target`.
pub fn cargo_target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from)
}

/// Where a backend's binary is built. netlink is the default build, in the workspace's own
/// target dir; ioctl gets a separate target dir, so the two builds never overwrite each
/// other's `target/release/dockerd-net`.
fn target_dir(root: &Path, backend: Backend) -> Option<PathBuf> {
    match backend {
        Backend::Netlink => None,
        Backend::Ioctl => Some(root.join("target/bench-ioctl")),
    }
}

/// `cargo build --release -p dockerd-net` for `backend`; returns the binary, after checking
/// (`--version`) that it has that backend inside.
pub fn build(root: &Path, backend: Backend) -> Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root).args([
        "build",
        "--release",
        "-p",
        "dockerd-net",
        "--message-format=json-render-diagnostics",
    ]);
    if backend == Backend::Ioctl {
        cmd.args(["--no-default-features", "--features", "ioctl"]);
    }
    if let Some(dir) = target_dir(root, backend) {
        cmd.arg("--target-dir").arg(dir);
    }
    eprintln!("+ {cmd:?}");
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .context("running cargo build")?;
    ensure!(
        out.status.success(),
        "building dockerd-net ({}) failed",
        backend.name()
    );
    let bin = executable(&String::from_utf8_lossy(&out.stdout))
        .context("cargo build reported no dockerd-net executable")?;
    check_backend(&bin, backend)?;
    Ok(bin)
}

/// [`existing`] when `no_build`, else [`build`].
pub fn binary(root: &Path, backend: Backend, no_build: bool) -> Result<PathBuf> {
    if no_build {
        existing(root, backend)
    } else {
        build(root, backend)
    }
}

/// The binary a previous [`build`] made, without building.
pub fn existing(root: &Path, backend: Backend) -> Result<PathBuf> {
    let bin = target_dir(root, backend)
        .unwrap_or_else(|| cargo_target_dir(root))
        .join("release/dockerd-net");
    ensure!(
        bin.is_file(),
        "{} not found: run without --no-build first",
        bin.display()
    );
    check_backend(&bin, backend)?;
    Ok(bin)
}

/// The `executable` of the `dockerd-net` binary artifact in cargo's JSON messages.
fn executable(json_lines: &str) -> Option<PathBuf> {
    json_lines
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "dockerd-net")
        .filter(|m| {
            m["target"]["kind"]
                .as_array()
                .is_some_and(|k| k.iter().any(|k| k == "bin"))
        })
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
}

/// `dockerd-net --version` names its link backend.
fn check_backend(bin: &Path, backend: Backend) -> Result<()> {
    let out = Command::new(bin)
        .arg("--version")
        .output()
        .with_context(|| format!("running {} --version", bin.display()))?;
    let version = String::from_utf8_lossy(&out.stdout);
    let want = format!("link backend: {}", backend.name());
    if !version.contains(&want) {
        bail!(
            "{} is not the {} build: --version says {:?}",
            bin.display(),
            backend.name(),
            version.trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_binary_artifact_only() {
        let lines = r#"{"reason":"compiler-artifact","target":{"name":"netcore","kind":["lib"]},"executable":null}
{"reason":"compiler-artifact","target":{"name":"dockerd-net","kind":["bin"]},"executable":"/w/target/release/dockerd-net"}
{"reason":"build-finished","success":true}"#;
        assert_eq!(
            executable(lines),
            Some(PathBuf::from("/w/target/release/dockerd-net"))
        );
        assert_eq!(
            executable(r#"{"reason":"build-finished","success":true}"#),
            None
        );
    }
}
