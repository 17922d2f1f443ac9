//! The init record on disk: `<data-root>/init.json`, replaced atomically.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use netcore::teardown::{InitRecord, RECORD_VERSION};

fn path(data_root: &Path) -> PathBuf {
    data_root.join("init.json")
}

/// Loads the record, if there is one. A record we cannot read is an error, never ignored:
/// teardown would otherwise forget what init changed.
pub fn load(data_root: &Path) -> Result<Option<InitRecord>> {
    let p = path(data_root);
    let text = match fs::read_to_string(&p) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", p.display())),
    };
    let rec: InitRecord = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a dockerd-net init record", p.display()))?;
    if rec.version != RECORD_VERSION {
        bail!(
            "{} has record version {}, this dockerd-net understands {}",
            p.display(),
            rec.version,
            RECORD_VERSION
        );
    }
    Ok(Some(rec))
}

/// Writes the record crash-safely: a temporary file, fsync, rename, fsync of the directory.
pub fn save(data_root: &Path, rec: &InitRecord) -> Result<()> {
    fs::create_dir_all(data_root)
        .with_context(|| format!("creating data root {}", data_root.display()))?;
    let p = path(data_root);
    let tmp = data_root.join(".init.json.tmp");
    let text = serde_json::to_string_pretty(rec).context("encoding the init record")?;
    let mut f = fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, &p).with_context(|| format!("renaming to {}", p.display()))?;
    fs::File::open(data_root)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing {}", data_root.display()))?;
    Ok(())
}

/// Removes the record after a complete teardown.
pub fn remove(data_root: &Path) -> Result<()> {
    let p = path(data_root);
    match fs::remove_file(&p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing {}", p.display())),
    }
}
