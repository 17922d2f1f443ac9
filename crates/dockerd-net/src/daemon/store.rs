//! Crash-safe persistence of the network state under `--data-root`: a snapshot and an
//! append-only journal.
//!
//! # Design
//!
//! - `network.state` is a **snapshot**: the whole [`Network`] and the attachments (issue 5;
//!   absent when there are none, so a state without attachments reads as before) with the
//!   sequence number of the last operation it includes. It is only ever replaced atomically (write
//!   `network.state.tmp`, fsync, rename over, fsync the directory), so it is either the old
//!   or the new one, never a mix.
//! - `network.journal` is an **append-only journal** of the operations ([`Op`]) made since
//!   that snapshot, one JSON record per line, each with its sequence number and the values
//!   the handler resolved (IP, MAC, host port). A request's record is written with a single
//!   `write` and `fdatasync`ed *before* the daemon answers, so an answered request is on
//!   disk. The cost of a request is one small append, whatever the number of containers.
//! - Every line carries a CRC-32 of its JSON, so a damaged line is recognised, not
//!   misread.
//! - **Compaction** writes a new snapshot and starts a new, empty journal (also by atomic
//!   rename). It runs at start and when the journal has grown past
//!   `max(min_compact_bytes, 2 × snapshot size)`: the O(state) cost of a snapshot is then
//!   paid once per at least as many journal bytes as the snapshot holds, so its cost per
//!   request stays constant as the state grows, and replay on start reads at most about
//!   twice the state's size of journal.
//!
//! Why not one file rewritten per request: that costs O(containers) per request. Why not an
//! embedded transactional store (SQLite, sled, redb): each is a large dependency for what
//! is one record type written by one thread; the journal needs ~300 lines and its
//! crash-recovery rules are spelled out below and tested.
//!
//! # Recovery rules (on start)
//!
//! - The last journal line, when incomplete or failing its checksum, is a write that was
//!   torn by a crash. It was never acknowledged (the answer follows the fdatasync), so it
//!   is not replayed: it is moved into `network.journal.torn-<time>` for inspection, the
//!   journal is cut before it, and the daemon starts (with a warning in the log).
//! - A damaged line anywhere else, a sequence gap, a record that does not replay on the
//!   state, an unknown format version, or a state for another bridge or subnet: the daemon
//!   refuses to start with an error naming the file, and moves the file aside
//!   (`<file>.corrupt-<time>`, `<file>.version-<time>`, ...) so that nothing is ever
//!   silently dropped nor deleted.
//! - Records whose sequence number is not above the snapshot's are skipped: a crash between
//!   the two renames of a compaction leaves the old journal next to the new snapshot.
//!
//! Replay makes exactly the handler calls the daemon made ([`Op::replay`]), so the state
//! after a restart equals the state before it, allocator cursors included.

use std::borrow::Cow;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use netcore::handlers::Network;
use serde::{Deserialize, Serialize};

use super::op::{Attachments, Op};

/// The on-disk format version of both files. Another version is refused, never guessed at.
pub const STATE_VERSION: u32 = 1;
/// The snapshot's file name under the data root.
pub const SNAPSHOT: &str = "network.state";
/// The journal's file name under the data root.
pub const JOURNAL: &str = "network.journal";
/// Default lower bound of the journal size that triggers a compaction.
pub const MIN_COMPACT_BYTES: u64 = 1 << 20;

const SNAPSHOT_FORMAT: &str = "dockerd-net-state";
const JOURNAL_FORMAT: &str = "dockerd-net-journal";

/// Why the state could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The state on disk cannot be used; the files were moved aside (never deleted).
    #[error("{reason}{}", moved_text(moved))]
    Refused {
        reason: String,
        /// (from, to) for every file moved aside.
        moved: Vec<(PathBuf, PathBuf)>,
    },
    /// An earlier failed append could not be taken back: until a compaction rewrites the
    /// journal, nothing more may be appended after the damaged tail.
    #[error(
        "the state journal is unusable since an earlier write failed ({0}); no change is accepted until it can be rewritten"
    )]
    Broken(String),
    #[error("encoding the state: {0}")]
    Encode(#[from] serde_json::Error),
}

fn moved_text(moved: &[(PathBuf, PathBuf)]) -> String {
    moved
        .iter()
        .map(|(from, to)| {
            format!(
                "; {} was moved to {} (kept for inspection, not deleted)",
                from.display(),
                to.display()
            )
        })
        .collect()
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> StoreError {
    let path = path.to_path_buf();
    move |source| StoreError::Io { what, path, source }
}

/// Tuning (tests compact early).
#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub min_compact_bytes: u64,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            min_compact_bytes: MIN_COMPACT_BYTES,
        }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Snapshot<'a, N> {
    format: String,
    version: u32,
    seq: u64,
    network: N,
    #[serde(default, skip_serializing_if = "no_attachments")]
    attachments: Cow<'a, Attachments>,
}

fn no_attachments(a: &Attachments) -> bool {
    a.is_empty()
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct JournalHeader {
    format: String,
    version: u32,
    /// The sequence number of the snapshot this journal continues.
    base: u64,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Record<O> {
    seq: u64,
    ops: O,
}

/// Just the format and version of a file, read before the rest so that a future version is
/// reported as such rather than as a parse error.
#[derive(Deserialize)]
struct Probe {
    format: String,
    version: u32,
}

/// What [`open`] found.
#[derive(Debug)]
pub struct Opened {
    pub store: Store,
    /// The state: the snapshot (or the given fresh state) with the journal replayed.
    pub network: Network,
    /// The attachments, likewise.
    pub attachments: Attachments,
    /// How many journal records were replayed.
    pub replayed: u64,
    /// Where a torn final record was put aside, if there was one.
    pub torn: Option<PathBuf>,
}

/// The open state files. One owner (the daemon's worker thread) appends to it.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    journal: File,
    journal_bytes: u64,
    snapshot_bytes: u64,
    seq: u64,
    opts: Options,
    broken: Option<String>,
}

/// Loads the state in `dir` (created if missing): the snapshot, or `fresh` when there is
/// none, with the journal replayed on it. See the module doc for what is refused.
pub fn open(dir: &Path, fresh: Network, opts: Options) -> Result<Opened, StoreError> {
    fs::create_dir_all(dir).map_err(io_err("creating data root", dir))?;
    for tmp in [tmp_path(dir, SNAPSHOT), tmp_path(dir, JOURNAL)] {
        // Our own half-written temporary files: never the state itself.
        if let Err(e) = fs::remove_file(&tmp)
            && e.kind() != io::ErrorKind::NotFound
        {
            return Err(io_err("removing", &tmp)(e));
        }
    }
    let snap_path = dir.join(SNAPSHOT);
    let journal_path = dir.join(JOURNAL);

    let (mut network, mut attachments, snap_seq, snapshot_bytes, has_snapshot) =
        match fs::read(&snap_path) {
            Ok(bytes) => match parse_snapshot(&bytes) {
                Ok((net, att, seq)) => (net, att, seq, bytes.len() as u64, true),
                Err(bad) => {
                    // The journal only makes sense on top of its snapshot: both go aside.
                    let reason = bad.describe(&snap_path);
                    return Err(refuse(reason, bad.kind(), &[&snap_path, &journal_path]));
                }
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                (fresh, Attachments::new(), 0, 0, false)
            }
            Err(e) => return Err(io_err("reading", &snap_path)(e)),
        };

    let journal_bytes = match fs::read(&journal_path) {
        Ok(b) => Some(b),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(io_err("reading", &journal_path)(e)),
    };
    let mut seq = snap_seq;
    let mut replayed = 0;
    let mut torn = None;
    let journal = match journal_bytes {
        None => {
            if has_snapshot {
                tracing::warn!(
                    "{} is missing: starting from the snapshot alone",
                    journal_path.display()
                );
            }
            write_journal_header(dir, seq)?
        }
        Some(bytes) => {
            let scan = scan_journal(
                &bytes,
                &mut network,
                &mut attachments,
                snap_seq,
                has_snapshot,
            )
            .map_err(|bad| refuse(bad.describe(&journal_path), bad.kind(), &[&journal_path]))?;
            seq = scan.seq;
            replayed = scan.replayed;
            if scan.good_len < bytes.len() {
                let tail = &bytes[scan.good_len..];
                let aside = keep_torn_tail(&journal_path, tail, scan.good_len as u64)?;
                tracing::warn!(
                    "{}: its last record ({} bytes) was torn by a crash before it was acknowledged; \
                     it is not replayed and was kept in {}",
                    journal_path.display(),
                    tail.len(),
                    aside.display()
                );
                torn = Some(aside);
            }
            OpenOptions::new()
                .append(true)
                .open(&journal_path)
                .map_err(io_err("opening", &journal_path))?
        }
    };
    let journal_len = journal
        .metadata()
        .map_err(io_err("reading size of", &journal_path))?
        .len();
    Ok(Opened {
        store: Store {
            dir: dir.to_path_buf(),
            journal,
            journal_bytes: journal_len,
            snapshot_bytes,
            seq,
            opts,
            broken: None,
        },
        network,
        attachments,
        replayed,
        torn,
    })
}

impl Store {
    /// Appends one record (the operations of one request, or of one compensation) and
    /// makes it durable. On failure nothing is recorded: a partial line is cut off again.
    pub fn append(&mut self, ops: &[Op]) -> Result<u64, StoreError> {
        if let Some(why) = &self.broken {
            return Err(StoreError::Broken(why.clone()));
        }
        let seq = self.seq + 1;
        let line = encode(&serde_json::to_string(&Record { seq, ops })?);
        let path = self.dir.join(JOURNAL);
        let written = self
            .journal
            .write_all(line.as_bytes())
            .and_then(|()| self.journal.sync_data());
        if let Err(e) = written {
            // Cut back to the last good record so that the next one does not follow a
            // fragment (which replay would have to refuse as corruption in the middle).
            let cut = self
                .journal
                .set_len(self.journal_bytes)
                .and_then(|()| self.journal.sync_data());
            if let Err(e2) = cut {
                let why = format!(
                    "appending to {} failed ({e}) and cutting it back failed ({e2})",
                    path.display()
                );
                tracing::error!("{why}");
                self.broken = Some(why);
            }
            return Err(io_err("appending to", &path)(e));
        }
        self.seq = seq;
        self.journal_bytes += line.len() as u64;
        Ok(seq)
    }

    /// True when the journal is long enough to be folded into a new snapshot.
    pub fn wants_compaction(&self) -> bool {
        self.journal_bytes
            > self
                .opts
                .min_compact_bytes
                .max(self.snapshot_bytes.saturating_mul(2))
    }

    /// Forbids appends until the next successful [`Store::compact`]: the journal no longer
    /// describes the state (a compensating record could not be written).
    pub fn mark_broken(&mut self, why: String) {
        self.broken = Some(why);
    }

    /// True after an append failed in a way that left the journal unusable.
    pub fn is_broken(&self) -> bool {
        self.broken.is_some()
    }

    /// Writes `network` and `attachments` (which must be the state after every appended
    /// record) as the new snapshot and starts an empty journal. Also repairs a broken journal.
    pub fn compact(
        &mut self,
        network: &Network,
        attachments: &Attachments,
    ) -> Result<(), StoreError> {
        let snapshot = Snapshot {
            format: SNAPSHOT_FORMAT.to_owned(),
            version: STATE_VERSION,
            seq: self.seq,
            network,
            attachments: Cow::Borrowed(attachments),
        };
        let text = encode(&serde_json::to_string(&snapshot)?);
        write_atomic(&self.dir, SNAPSHOT, text.as_bytes())?;
        self.snapshot_bytes = text.len() as u64;
        // Until the new journal is open, the old handle may point at a replaced file:
        // appending there would be lost, so the store counts as broken if this fails.
        self.journal = write_journal_header(&self.dir, self.seq).inspect_err(|e| {
            self.broken = Some(format!("starting a new journal failed: {e}"));
        })?;
        let path = self.dir.join(JOURNAL);
        self.journal_bytes = self
            .journal
            .metadata()
            .map_err(io_err("reading size of", &path))?
            .len();
        if self.broken.take().is_some() {
            tracing::info!("state journal rewritten: changes are accepted again");
        }
        tracing::debug!(
            seq = self.seq,
            snapshot_bytes = self.snapshot_bytes,
            "state compacted"
        );
        Ok(())
    }

    /// Refuses the loaded state (e.g. it is for another bridge): moves both files aside and
    /// returns the error to report.
    pub fn reject(self, reason: String) -> StoreError {
        let files = [self.dir.join(SNAPSHOT), self.dir.join(JOURNAL)];
        drop(self.journal);
        refuse(reason, "rejected", &[&files[0], &files[1]])
    }

    /// The sequence number of the last record.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The journal's size in bytes.
    pub fn journal_bytes(&self) -> u64 {
        self.journal_bytes
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Removes the state files after a teardown. Unreadable files are not deleted: the caller
/// decides (teardown moves them aside with [`move_aside_all`]).
pub fn remove(dir: &Path) -> Result<(), StoreError> {
    for name in [JOURNAL, SNAPSHOT] {
        let p = dir.join(name);
        match fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("removing", &p)(e)),
        }
    }
    sync_dir(dir)
}

/// Moves both state files aside with `kind` in their new names; returns (from, to) pairs.
pub fn move_aside_all(dir: &Path, kind: &str) -> Vec<(PathBuf, PathBuf)> {
    let mut moved = Vec::new();
    for name in [SNAPSHOT, JOURNAL] {
        let p = dir.join(name);
        if p.exists() {
            match move_aside(&p, kind) {
                Ok(to) => moved.push((p, to)),
                Err(e) => tracing::error!("cannot move {} aside: {e}", p.display()),
            }
        }
    }
    moved
}

/// True when a state exists in `dir`.
pub fn exists(dir: &Path) -> bool {
    dir.join(SNAPSHOT).exists() || dir.join(JOURNAL).exists()
}

/// A state read back without a store ([`read_only`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Saved {
    pub network: Network,
    pub attachments: Attachments,
}

/// Reads the state in `dir` without changing anything (teardown's view); `None` when there
/// is none. A torn final record is ignored, as on start; anything else wrong is an error.
pub fn read_only(dir: &Path, fresh: Network) -> Result<Option<Saved>, String> {
    let snap_path = dir.join(SNAPSHOT);
    let journal_path = dir.join(JOURNAL);
    if !exists(dir) {
        return Ok(None);
    }
    let (mut network, mut attachments, snap_seq, has_snapshot) = match fs::read(&snap_path) {
        Ok(bytes) => {
            let (n, a, s) = parse_snapshot(&bytes).map_err(|b| b.describe(&snap_path))?;
            (n, a, s, true)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => (fresh, Attachments::new(), 0, false),
        Err(e) => return Err(format!("reading {}: {e}", snap_path.display())),
    };
    match fs::read(&journal_path) {
        Ok(bytes) => {
            scan_journal(
                &bytes,
                &mut network,
                &mut attachments,
                snap_seq,
                has_snapshot,
            )
            .map_err(|b| b.describe(&journal_path))?;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("reading {}: {e}", journal_path.display())),
    }
    Ok(Some(Saved {
        network,
        attachments,
    }))
}

// ---------------------------------------------------------------------------------------------
// Reading

/// Why a file was refused.
enum Bad {
    Corrupt(String),
    Version(u32),
}

impl Bad {
    fn describe(&self, path: &Path) -> String {
        match self {
            Bad::Corrupt(why) => format!("state file {} is corrupt: {why}", path.display()),
            Bad::Version(v) => format!(
                "state file {} has format version {v}; this dockerd-net reads version {STATE_VERSION}",
                path.display()
            ),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Bad::Corrupt(_) => "corrupt",
            Bad::Version(_) => "version",
        }
    }
}

fn parse_snapshot(bytes: &[u8]) -> Result<(Network, Attachments, u64), Bad> {
    let text = std::str::from_utf8(bytes).map_err(|e| Bad::Corrupt(format!("not UTF-8: {e}")))?;
    let line = text
        .strip_suffix('\n')
        .ok_or_else(|| Bad::Corrupt("it does not end with a newline".to_owned()))?;
    let json = decode(line).map_err(Bad::Corrupt)?;
    probe(json, SNAPSHOT_FORMAT)?;
    let snap: Snapshot<'_, Network> = serde_json::from_str(json)
        .map_err(|e| Bad::Corrupt(format!("unreadable snapshot: {e}")))?;
    for (id, a) in snap.attachments.iter() {
        if !snap.network.endpoints().contains_key(id) {
            return Err(Bad::Corrupt(format!(
                "container {id} is attached ({}) but has no interface",
                a.host_veth
            )));
        }
    }
    Ok((snap.network, snap.attachments.into_owned(), snap.seq))
}

fn probe(json: &str, format: &str) -> Result<(), Bad> {
    let p: Probe = serde_json::from_str(json)
        .map_err(|e| Bad::Corrupt(format!("no format and version: {e}")))?;
    if p.format != format {
        return Err(Bad::Corrupt(format!(
            "it is a {:?} file, not a {format:?} file",
            p.format
        )));
    }
    if p.version != STATE_VERSION {
        return Err(Bad::Version(p.version));
    }
    Ok(())
}

struct Scan {
    seq: u64,
    replayed: u64,
    /// The length of the journal up to the last good record.
    good_len: usize,
}

fn scan_journal(
    bytes: &[u8],
    network: &mut Network,
    attachments: &mut Attachments,
    snap_seq: u64,
    has_snapshot: bool,
) -> Result<Scan, Bad> {
    // Complete lines with their start offsets; a final fragment without newline is torn.
    let mut lines: Vec<(usize, &[u8])> = Vec::new();
    let mut start = 0;
    while let Some(nl) = bytes[start..].iter().position(|&b| b == b'\n') {
        lines.push((start, &bytes[start..start + nl]));
        start += nl + 1;
    }
    let complete_len = start;
    let Some(&(_, header)) = lines.first() else {
        return Err(Bad::Corrupt("the journal has no header line".to_owned()));
    };
    let header = std::str::from_utf8(header)
        .map_err(|e| e.to_string())
        .and_then(decode)
        .map_err(|e| Bad::Corrupt(format!("line 1 (header): {e}")))?;
    probe(header, JOURNAL_FORMAT)?;
    let header: JournalHeader =
        serde_json::from_str(header).map_err(|e| Bad::Corrupt(format!("line 1 (header): {e}")))?;
    if !has_snapshot && header.base != 0 {
        return Err(Bad::Corrupt(format!(
            "it continues snapshot {} but there is no snapshot ({SNAPSHOT})",
            header.base
        )));
    }
    if header.base > snap_seq {
        return Err(Bad::Corrupt(format!(
            "it continues snapshot {}, newer than the snapshot present ({snap_seq})",
            header.base
        )));
    }

    let mut seq = snap_seq;
    let mut last_seen = header.base;
    let mut replayed = 0;
    let n = lines.len();
    for (i, &(off, raw)) in lines.iter().enumerate().skip(1) {
        let lineno = i + 1;
        let parsed = std::str::from_utf8(raw)
            .map_err(|e| e.to_string())
            .and_then(decode)
            .and_then(|json| {
                serde_json::from_str::<Record<Vec<Op>>>(json).map_err(|e| e.to_string())
            });
        let rec = match parsed {
            Ok(r) => r,
            // The last line, complete or not, may be a torn write: see the module doc.
            Err(_) if i == n - 1 && complete_len == bytes.len() => {
                return Ok(Scan {
                    seq,
                    replayed,
                    good_len: off,
                });
            }
            Err(e) => return Err(Bad::Corrupt(format!("line {lineno}: {e}"))),
        };
        if rec.seq != last_seen + 1 {
            return Err(Bad::Corrupt(format!(
                "line {lineno}: record {} follows record {last_seen}",
                rec.seq
            )));
        }
        last_seen = rec.seq;
        if rec.seq <= snap_seq {
            // Already in the snapshot (a compaction was cut short before the new journal).
            continue;
        }
        for op in &rec.ops {
            op.replay(network, attachments).map_err(|e| {
                Bad::Corrupt(format!(
                    "line {lineno}: record {} does not apply to the state: {e}",
                    rec.seq
                ))
            })?;
        }
        seq = rec.seq;
        replayed += 1;
    }
    Ok(Scan {
        seq,
        replayed,
        // A fragment after the last newline is a torn write.
        good_len: complete_len,
    })
}

// ---------------------------------------------------------------------------------------------
// Writing

/// A line: the CRC-32 of the JSON in 8 hex digits, a space, the JSON, a newline.
fn encode(json: &str) -> String {
    format!("{:08x} {json}\n", crc32(json.as_bytes()))
}

/// The JSON of a line (without its newline), if its checksum matches.
fn decode(line: &str) -> Result<&str, String> {
    let (sum, json) = line
        .split_once(' ')
        .ok_or_else(|| "no checksum".to_owned())?;
    let want = (sum.len() == 8)
        .then(|| u32::from_str_radix(sum, 16).ok())
        .flatten()
        .ok_or_else(|| format!("bad checksum field {sum:?}"))?;
    let got = crc32(json.as_bytes());
    if got != want {
        return Err(format!(
            "checksum mismatch (recorded {want:08x}, computed {got:08x})"
        ));
    }
    Ok(json)
}

fn tmp_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.tmp"))
}

fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
    let tmp = tmp_path(dir, name);
    let dest = dir.join(name);
    let mut f = File::create(&tmp).map_err(io_err("creating", &tmp))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(io_err("writing", &tmp))?;
    drop(f);
    fs::rename(&tmp, &dest).map_err(io_err("renaming into place", &dest))?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("syncing directory", dir))
}

/// Starts a journal continuing snapshot `base`; returns it open for appending.
fn write_journal_header(dir: &Path, base: u64) -> Result<File, StoreError> {
    let header = JournalHeader {
        format: JOURNAL_FORMAT.to_owned(),
        version: STATE_VERSION,
        base,
    };
    write_atomic(
        dir,
        JOURNAL,
        encode(&serde_json::to_string(&header)?).as_bytes(),
    )?;
    let path = dir.join(JOURNAL);
    OpenOptions::new()
        .append(true)
        .open(&path)
        .map_err(io_err("opening", &path))
}

/// Saves the torn tail in a file of its own, then cuts the journal before it.
fn keep_torn_tail(journal: &Path, tail: &[u8], good_len: u64) -> Result<PathBuf, StoreError> {
    let aside = aside_path(journal, "torn");
    let mut f = File::create(&aside).map_err(io_err("creating", &aside))?;
    f.write_all(tail)
        .and_then(|()| f.sync_all())
        .map_err(io_err("writing", &aside))?;
    let j = OpenOptions::new()
        .write(true)
        .open(journal)
        .map_err(io_err("opening", journal))?;
    j.set_len(good_len)
        .and_then(|()| j.sync_all())
        .map_err(io_err("cutting the torn record off", journal))?;
    if let Some(dir) = journal.parent() {
        sync_dir(dir)?;
    }
    Ok(aside)
}

/// `<file>.<kind>-<unix seconds>`, with `.N` added if that exists already.
fn aside_path(path: &Path, kind: &str) -> PathBuf {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let name = path
        .file_name()
        .map_or_else(|| "state".into(), |n| n.to_string_lossy().into_owned());
    let base = path.with_file_name(format!("{name}.{kind}-{secs}"));
    let mut candidate = base.clone();
    let mut n = 1;
    while candidate.exists() {
        candidate = PathBuf::from(format!("{}.{n}", base.display()));
        n += 1;
    }
    candidate
}

fn move_aside(path: &Path, kind: &str) -> io::Result<PathBuf> {
    let to = aside_path(path, kind);
    fs::rename(path, &to)?;
    if let Some(dir) = path.parent() {
        File::open(dir).and_then(|d| d.sync_all())?;
    }
    Ok(to)
}

/// Moves the existing ones of `files` aside and builds the refusal.
fn refuse(reason: String, kind: &str, files: &[&Path]) -> StoreError {
    let mut moved = Vec::new();
    let mut reason = reason;
    for f in files {
        if !f.exists() {
            continue;
        }
        match move_aside(f, kind) {
            Ok(to) => moved.push((f.to_path_buf(), to)),
            Err(e) => reason.push_str(&format!("; moving {} aside failed too: {e}", f.display())),
        }
    }
    tracing::error!("{reason}");
    StoreError::Refused { reason, moved }
}

// ---------------------------------------------------------------------------------------------
// CRC-32 (IEEE 802.3, reflected polynomial 0xEDB88320), as zlib and `cksum -a crc32b`.

const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

/// The CRC-32 of `bytes`.
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in bytes {
        c = CRC_TABLE[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8);
    }
    !c
}

#[cfg(test)]
mod tests {

    use netcore::config::Config;
    use netcore::ports::Proto;

    use testns::TempDir;

    use super::*;

    /// A temporary directory, removed when dropped.
    fn tmp(tag: &str) -> TempDir {
        TempDir::new(&format!("dockerd-net-store-{tag}"))
    }

    fn fresh() -> Network {
        Network::new(
            &Config::default(),
            "docker0",
            "172.17.42.1/16".parse().expect("valid"),
        )
        .expect("network")
    }

    fn small() -> Options {
        Options {
            min_compact_bytes: 600,
        }
    }

    /// Makes the live calls a daemon would and journals them as it does.
    struct Live {
        net: Network,
        att: Attachments,
        store: Store,
    }

    impl Live {
        fn open(dir: &Path, opts: Options) -> Self {
            let o = open(dir, fresh(), opts).expect("opens");
            Live {
                net: o.network,
                att: o.attachments,
                store: o.store,
            }
        }

        fn iface(&mut self, id: &str) -> Ipv4Addr {
            let i = self.net.allocate_interface(id, None, None).expect("ip");
            self.store
                .append(&[Op::AllocateInterface {
                    id: id.into(),
                    ip: i.ip,
                    mac: i.mac,
                }])
                .expect("append");
            i.ip
        }

        fn port(&mut self, id: &str, port: u16) -> u16 {
            let m = self
                .net
                .allocate_port(id, None, port, 80, Proto::Tcp)
                .expect("port")
                .value;
            self.store
                .append(&[Op::AllocatePort {
                    id: id.into(),
                    host_ip: m.host_ip,
                    host_port: m.host_port,
                    container_port: 80,
                    proto: Proto::Tcp,
                    dynamic: port == 0,
                }])
                .expect("append");
            m.host_port
        }

        fn release_port(&mut self, id: &str, port: u16) {
            self.net
                .release_port(id, Ipv4Addr::UNSPECIFIED, port, Proto::Tcp)
                .expect("mapped");
            self.store
                .append(&[Op::ReleasePort {
                    id: id.into(),
                    host_ip: Ipv4Addr::UNSPECIFIED,
                    host_port: port,
                    proto: Proto::Tcp,
                }])
                .expect("append");
        }

        fn release(&mut self, id: &str) {
            self.net.release_interface(id).expect("known");
            self.store
                .append(&[Op::ReleaseInterface { id: id.into() }])
                .expect("append");
        }
    }

    use std::net::Ipv4Addr;

    impl Live {
        fn attach(&mut self, id: &str, veth: &str) {
            let a = super::super::op::Attachment {
                host_veth: veth.into(),
                netns: format!("/proc/{}/ns/net", 4000 + self.att.len()).into(),
                ifname: "eth0".into(),
                mtu: 1500,
                allocated: true,
            };
            let i = self.net.allocate_interface(id, None, None).expect("ip");
            let ops = [
                Op::AllocateInterface {
                    id: id.into(),
                    ip: i.ip,
                    mac: i.mac,
                },
                Op::attach(id, &a),
            ];
            self.store.append(&ops).expect("append");
            self.att.insert(id.into(), a);
        }

        fn detach(&mut self, id: &str) {
            self.att.remove(id);
            self.net.release_interface(id).expect("known");
            self.store
                .append(&[
                    Op::Detach { id: id.into() },
                    Op::ReleaseInterface { id: id.into() },
                ])
                .expect("append");
        }
    }

    #[test]
    fn attachments_survive_replay_and_compaction() {
        let t = tmp("attach");
        let mut live = Live::open(t.path(), Options::default());
        live.store.compact(&live.net, &live.att).expect("start");
        // A snapshot without attachments reads as a state of issue 4's daemon does.
        let snap = fs::read_to_string(t.path().join(SNAPSHOT)).expect("snapshot");
        assert!(!snap.contains("attachments"), "{snap}");
        live.attach("c1", "veth1111111");
        live.attach("c2", "veth2222222");
        live.detach("c1");
        let (net, att) = (live.net.clone(), live.att.clone());
        assert_eq!(att.keys().collect::<Vec<_>>(), ["c2"]);
        drop(live);
        // From the journal.
        let o = open(t.path(), fresh(), Options::default()).expect("reopens");
        assert_eq!((&o.network, &o.attachments), (&net, &att));
        let mut live = Live {
            net: o.network,
            att: o.attachments,
            store: o.store,
        };
        // From the snapshot.
        live.store.compact(&live.net, &live.att).expect("compact");
        let snap = fs::read_to_string(t.path().join(SNAPSHOT)).expect("snapshot");
        assert!(snap.contains("\"attachments\":{\"c2\""), "{snap}");
        drop(live);
        let o = open(t.path(), fresh(), Options::default()).expect("reopens");
        assert_eq!((&o.network, &o.attachments), (&net, &att));
        assert_eq!(
            read_only(t.path(), fresh()).expect("reads"),
            Some(Saved {
                network: net,
                attachments: att,
            })
        );
    }

    #[test]
    fn attach_records_that_do_not_fit_the_state_are_refused() {
        let t = tmp("attachbad");
        let mut live = Live::open(t.path(), Options::default());
        let a = super::super::op::Attachment {
            host_veth: "veth1111111".into(),
            netns: "/proc/1/ns/net".into(),
            ifname: "eth0".into(),
            mtu: 1500,
            allocated: false,
        };
        // Attaching a container without an interface.
        live.store
            .append(&[Op::attach("ghost", &a)])
            .expect("append");
        drop(live);
        let msg = open(t.path(), fresh(), Options::default())
            .expect_err("refused")
            .to_string();
        assert!(
            msg.contains("line 2: record 1 does not apply")
                && msg.contains("attach ghost (veth1111111 -> eth0 in /proc/1/ns/net): the container has no interface"),
            "{msg}"
        );

        // Detaching what is not attached.
        let t = tmp("detachbad");
        let mut live = Live::open(t.path(), Options::default());
        live.iface("c1");
        live.store
            .append(&[Op::Detach { id: "c1".into() }])
            .expect("append");
        drop(live);
        let msg = open(t.path(), fresh(), Options::default())
            .expect_err("refused")
            .to_string();
        assert!(
            msg.contains("detach c1: the container is not attached"),
            "{msg}"
        );
    }

    fn aside_files(dir: &Path, marker: &str) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = fs::read_dir(dir)
            .expect("dir")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.to_string_lossy().contains(marker))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn crc32_is_the_ieee_one() {
        // The standard check value, and zlib's crc32("hello world").
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b"hello world"), 0x0D4A_1185);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn journal_replays_to_the_same_state_cursors_included() {
        let t = tmp("replay");
        let mut live = Live::open(t.path(), Options::default());
        live.store
            .compact(&live.net, &live.att)
            .expect("snapshot on start");
        live.iface("c1");
        live.iface("c2");
        let p1 = live.port("c1", 0);
        let p2 = live.port("c2", 0);
        live.port("c2", 8080);
        live.release_port("c2", p2); // the cursor stays on p2
        live.release("c1");
        let seq = live.store.seq();
        assert_eq!(seq, 7);
        let expected = live.net.clone();
        drop(live);

        let o = open(t.path(), fresh(), Options::default()).expect("reopens");
        assert_eq!(o.replayed, 7);
        assert!(o.torn.is_none());
        assert_eq!(o.network, expected);
        assert_eq!(o.store.seq(), seq);
        // Same next answers as without the restart: the dynamic port after p2, the IP after
        // c2's (next-fit), not the released ones.
        let mut restarted = Live {
            net: o.network,
            att: o.attachments,
            store: o.store,
        };
        assert_eq!(
            restarted.iface("c3"),
            "172.17.0.3".parse::<Ipv4Addr>().expect("ip")
        );
        assert_eq!(restarted.port("c3", 0), p2 + 1);
        assert_ne!(p1, p2);
    }

    #[test]
    fn torn_final_record_is_kept_aside_and_not_replayed() {
        for torn in [
            &b"0badc0de {\"seq\":3,\"ops\":[{\"op\":\"rel"[..], // no newline: cut mid-write
            &b"00000000 \0\0\0\0\0\0\0\0\0\n"[..],              // newline landed, data did not
        ] {
            let t = tmp("torn");
            let mut live = Live::open(t.path(), Options::default());
            live.iface("c1");
            live.iface("c2");
            let expected = live.net.clone();
            drop(live);
            let journal = t.path().join(JOURNAL);
            let good = fs::read(&journal).expect("journal");
            let mut f = OpenOptions::new()
                .append(true)
                .open(&journal)
                .expect("open");
            f.write_all(torn).expect("write");
            drop(f);

            let o = open(t.path(), fresh(), Options::default()).expect("starts");
            assert_eq!(o.network, expected);
            assert_eq!(o.replayed, 2);
            let aside = o.torn.clone().expect("kept aside");
            assert_eq!(fs::read(&aside).expect("aside"), torn);
            assert!(aside.to_string_lossy().contains("network.journal.torn-"));
            // The journal was cut back to its good part, and appends continue after it.
            assert_eq!(fs::read(&journal).expect("journal"), good);
            let mut live = Live {
                net: o.network,
                att: o.attachments,
                store: o.store,
            };
            live.iface("c3");
            let expected = live.net.clone();
            drop(live);
            let o = open(t.path(), fresh(), Options::default()).expect("clean now");
            assert!(o.torn.is_none());
            assert_eq!(o.network, expected);
        }
    }

    #[test]
    fn corruption_in_the_middle_is_refused_and_moved_aside() {
        let t = tmp("corrupt");
        let mut live = Live::open(t.path(), Options::default());
        live.iface("c1");
        live.iface("c2");
        live.iface("c3");
        drop(live);
        let journal = t.path().join(JOURNAL);
        let text = fs::read_to_string(&journal).expect("journal");
        // Change one digit of record 2's IP: the line still parses, its checksum does not.
        let bad = text.replacen("172.17.0.2", "172.17.0.9", 1);
        assert_ne!(bad, text);
        fs::write(&journal, &bad).expect("write");

        let err = open(t.path(), fresh(), Options::default()).expect_err("refused");
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("state file {} is corrupt", journal.display())),
            "{msg}"
        );
        assert!(msg.contains("line 3: checksum mismatch"), "{msg}");
        assert!(msg.contains("kept for inspection, not deleted"), "{msg}");
        assert!(!journal.exists(), "moved aside");
        let aside = aside_files(t.path(), "network.journal.corrupt-");
        assert_eq!(aside.len(), 1, "{aside:?}");
        assert_eq!(fs::read_to_string(&aside[0]).expect("kept"), bad);
    }

    #[test]
    fn gaps_and_records_that_do_not_apply_are_refused() {
        let t = tmp("gap");
        let mut live = Live::open(t.path(), Options::default());
        live.iface("c1");
        live.iface("c2");
        drop(live);
        let journal = t.path().join(JOURNAL);
        let text = fs::read_to_string(&journal).expect("journal");
        let lines: Vec<&str> = text.lines().collect();
        // Drop record 1: record 2 follows the header directly.
        fs::write(
            &journal,
            format!("{}\n{}\n{}\n", lines[0], lines[2], lines[2]),
        )
        .expect("write");
        let msg = open(t.path(), fresh(), Options::default())
            .expect_err("gap")
            .to_string();
        assert!(msg.contains("record 2 follows record 0"), "{msg}");

        // A well-formed record that contradicts the state (releasing an unknown container).
        let t = tmp("noapply");
        let mut live = Live::open(t.path(), Options::default());
        live.iface("c1");
        live.store
            .append(&[Op::ReleaseInterface { id: "ghost".into() }])
            .expect("append");
        live.iface("c2");
        drop(live);
        let msg = open(t.path(), fresh(), Options::default())
            .expect_err("does not apply")
            .to_string();
        assert!(
            msg.contains("line 3: record 2 does not apply to the state")
                && msg.contains("No network information to release for ghost"),
            "{msg}"
        );
    }

    #[test]
    fn unknown_versions_are_refused_and_moved_aside() {
        let t = tmp("version");
        let mut live = Live::open(t.path(), Options::default());
        live.iface("c1");
        live.store.compact(&live.net, &live.att).expect("compact");
        drop(live);
        let snap = t.path().join(SNAPSHOT);
        let text = fs::read_to_string(&snap).expect("snapshot");
        let json =
            decode(text.trim_end())
                .expect("valid")
                .replacen("\"version\":1", "\"version\":7", 1);
        fs::write(&snap, encode(&json)).expect("write");
        let msg = open(t.path(), fresh(), Options::default())
            .expect_err("future version")
            .to_string();
        assert!(
            msg.contains(&format!(
                "state file {} has format version 7; this dockerd-net reads version 1",
                snap.display()
            )),
            "{msg}"
        );
        // The snapshot and the journal that continues it both went aside.
        assert!(!snap.exists() && !t.path().join(JOURNAL).exists());
        assert_eq!(aside_files(t.path(), ".version-").len(), 2);
        // A fresh start is possible afterwards, from nothing.
        let o = open(t.path(), fresh(), Options::default()).expect("fresh");
        assert!(o.network.endpoints().is_empty());

        // The journal's own header version.
        let t = tmp("jversion");
        let live = Live::open(t.path(), Options::default());
        drop(live);
        let journal = t.path().join(JOURNAL);
        let header = fs::read_to_string(&journal).expect("journal");
        let json =
            decode(header.trim_end())
                .expect("valid")
                .replacen("\"version\":1", "\"version\":2", 1);
        fs::write(&journal, encode(&json)).expect("write");
        let msg = open(t.path(), fresh(), Options::default())
            .expect_err("future version")
            .to_string();
        assert!(msg.contains("has format version 2"), "{msg}");
        assert_eq!(aside_files(t.path(), "network.journal.version-").len(), 1);
    }

    #[test]
    fn compaction_folds_the_journal_into_the_snapshot() {
        let t = tmp("compact");
        let mut live = Live::open(t.path(), small());
        live.store.compact(&live.net, &live.att).expect("start");
        let mut compactions = 0;
        for i in 0..30 {
            live.iface(&format!("c{i}"));
            if live.store.wants_compaction() {
                live.store.compact(&live.net, &live.att).expect("compact");
                compactions += 1;
                // A new journal: just its header.
                assert_eq!(
                    fs::read_to_string(t.path().join(JOURNAL))
                        .expect("j")
                        .lines()
                        .count(),
                    1
                );
            }
        }
        assert!(compactions >= 2, "{compactions}");
        assert!(
            live.store.journal_bytes()
                <= 600.max(2 * fs::metadata(t.path().join(SNAPSHOT)).expect("s").len())
        );
        let expected = live.net.clone();
        let seq = live.store.seq();
        drop(live);
        let o = open(t.path(), fresh(), small()).expect("reopens");
        assert_eq!(o.network, expected);
        assert_eq!(o.store.seq(), seq);
        assert!(o.replayed < 30);
    }

    #[test]
    fn a_compaction_cut_short_before_the_new_journal_loses_nothing() {
        let t = tmp("cut");
        let mut live = Live::open(t.path(), Options::default());
        live.iface("c1");
        live.iface("c2");
        let old_journal = fs::read(t.path().join(JOURNAL)).expect("journal");
        live.store.compact(&live.net, &live.att).expect("compact");
        live.iface("c3");
        let expected = live.net.clone();
        let after = fs::read_to_string(t.path().join(JOURNAL)).expect("journal");
        drop(live);
        // The crash: the new snapshot is in place, the journal is still the old one (whose
        // records are all in the snapshot), plus c3's record which continues from it.
        let mut j = old_journal.clone();
        j.extend_from_slice(after.lines().nth(1).expect("c3").as_bytes());
        j.push(b'\n');
        fs::write(t.path().join(JOURNAL), &j).expect("write");
        let o = open(t.path(), fresh(), Options::default()).expect("starts");
        assert_eq!(o.network, expected);
        assert_eq!(o.replayed, 1);
    }

    #[test]
    fn reject_moves_both_files_and_a_broken_journal_waits_for_compaction() {
        let t = tmp("reject");
        let mut live = Live::open(t.path(), Options::default());
        live.iface("c1");
        live.store.compact(&live.net, &live.att).expect("compact");
        let err = live
            .store
            .reject("it is for bridge br0, but the bridge is docker0".into());
        let msg = err.to_string();
        assert!(msg.starts_with("it is for bridge br0"), "{msg}");
        assert!(!t.path().join(SNAPSHOT).exists() && !t.path().join(JOURNAL).exists());
        assert_eq!(aside_files(t.path(), ".rejected-").len(), 2);

        // mark_broken forbids appends until a compaction rewrites the journal.
        let mut live = Live::open(t.path(), Options::default());
        live.store.mark_broken("test".into());
        assert!(matches!(
            live.store
                .append(&[Op::ReleaseInterface { id: "x".into() }]),
            Err(StoreError::Broken(_))
        ));
        live.store.compact(&live.net, &live.att).expect("repairs");
        assert!(!live.store.is_broken());
        live.iface("c9");
    }

    #[test]
    fn read_only_sees_the_state_without_changing_files() {
        let t = tmp("ro");
        assert_eq!(read_only(t.path(), fresh()).expect("nothing"), None);
        let mut live = Live::open(t.path(), Options::default());
        live.iface("c1");
        let expected = live.net.clone();
        drop(live);
        let before = fs::read(t.path().join(JOURNAL)).expect("journal");
        assert_eq!(
            read_only(t.path(), fresh()).expect("reads"),
            Some(Saved {
                network: expected,
                attachments: Attachments::new(),
            })
        );
        assert_eq!(fs::read(t.path().join(JOURNAL)).expect("journal"), before);
        remove(t.path()).expect("removes");
        assert!(!exists(t.path()));
    }
}
