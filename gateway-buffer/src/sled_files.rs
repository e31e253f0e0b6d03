//! # sled's own files: what a crash or a full disk leaves behind, and the repair at open
//!
//! sled 0.34.7 keeps, in the buffer directory:
//!
//! | file | written | what a crash / ENOSPC can leave |
//! |---|---|---|
//! | `db` | the log (segments), `pwrite` + our `fdatasync` per commit | a torn tail: sled's recovery stops at the first torn message and zeroes the rest (it writes `db` at open) |
//! | `blobs/<lsn>` | large pages, one file each; we fsync them and `blobs/` per commit | an orphan blob of an unacked commit (sled ignores and later removes it) |
//! | `conf` | at the first open only, no fsync: settings + CRC-32 | a short file (sled treats it as missing and writes it again) or, after a torn write, one whose CRC fails (sled warns, parses it anyway and may refuse to open: "cannot change ...") |
//! | `snap.<lsn, 16 hex>` | at **every** open whose log advanced, and every million operations: written to `snap.<lsn>.generating`, `sync_all`, renamed, older snapshots removed (no directory fsync) | `snap.<lsn>.generating` — empty or partial — after ENOSPC or a crash while writing; a complete-named file that fails its CRC after media damage |
//!
//! The snapshot is derived data: a summary of the log up to its LSN, so
//! that open need not replay the whole log. sled picks the lexically last
//! `snap.*` name, which is the unfinished `.generating` one if present, and
//! refuses to open when that file is empty or fails its CRC (sled issue
//! 1527): `empty/corrupt snapshot file found`, `Read corrupted data at file
//! offset None`, for good, even after space returns.
//!
//! ## The repair (before sled opens)
//!
//! - every `snap.*.generating` is deleted: sled renames a snapshot only after
//!   writing and fsyncing it, so that name is unfinished by construction and
//!   sled never needs it;
//! - every `snap.<lsn>` whose length or CRC-32 (sled's layout: bytes, u64 LE
//!   length, u32 LE CRC-32 of the bytes) is wrong is deleted: sled then uses
//!   the newest good snapshot, or none, and replays the log from there;
//! - a `conf` longer than 8 bytes whose CRC-32 fails is deleted: sled writes
//!   it again from the settings the gateway always uses (sled's defaults for
//!   segment size and compression, never changed here), i.e. the same bytes.
//!
//! If sled still reports corruption after that while snapshots exist, open
//! deletes every snapshot and tries once more: the log alone is the truth
//! (a snapshot can be ahead of the log after a power cut that lost log
//! writes read back from the page cache). Each repair is logged at WARN and
//! reported in [`super::Buffer::repairs`]; the runtime records a
//! `buffer_repaired` event for it. Nothing that holds frames (`db`, `blobs/`)
//! is ever deleted or rewritten here.
//!
//! [`plan`] only reads (the CLI uses it to say what a gateway start would
//! repair); [`apply`] deletes what it lists.

use std::io::Read;
use std::path::Path;

/// One thing the repair does to sled's files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repair {
    /// The file concerned (relative to the buffer directory).
    pub file: String,
    /// Its size in bytes when found.
    pub bytes: u64,
    /// Why it goes.
    pub why: RepairReason,
}

/// Why a file is removed at open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepairReason {
    /// `snap.*.generating`: sled was interrupted while writing a snapshot.
    UnfinishedSnapshot,
    /// `snap.<lsn>` with a wrong length or CRC.
    CorruptSnapshot,
    /// `conf` whose CRC fails.
    CorruptConf,
    /// A good-looking snapshot sled still refused; the log is replayed whole.
    SnapshotRefused,
}

impl std::fmt::Display for Repair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match self.why {
            RepairReason::UnfinishedSnapshot => {
                "unfinished sled snapshot (interrupted by a crash or a full disk) removed"
            }
            RepairReason::CorruptSnapshot => {
                "sled snapshot failing its checksum removed; the log is replayed from the previous one"
            }
            RepairReason::CorruptConf => "sled conf failing its checksum removed; sled rewrites it",
            RepairReason::SnapshotRefused => {
                "sled snapshot refused at open removed; the whole log is replayed"
            }
        };
        write!(f, "{} ({} bytes): {what}", self.file, self.bytes)
    }
}

fn is_snapshot_name(name: &str) -> bool {
    name.strip_prefix("snap.")
        .is_some_and(|lsn| lsn.len() == 16 && lsn.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn read_all(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    std::fs::File::open(path)?.read_to_end(&mut buf)?;
    Ok(buf)
}

/// True if `bytes` is a whole snapshot as sled 0.34.7 writes it.
fn snapshot_is_sound(bytes: &[u8]) -> bool {
    let len = bytes.len();
    if len <= 12 {
        return false;
    }
    let crc = u32::from_le_bytes(bytes[len - 4..].try_into().expect("4 bytes"));
    crc32fast::hash(&bytes[..len - 12]) == crc
}

/// True if `bytes` is a conf sled would parse with a good CRC (or treat as missing).
fn conf_is_sound(bytes: &[u8]) -> bool {
    let len = bytes.len();
    if len <= 8 {
        // sled ignores a file this short and writes it again.
        return true;
    }
    let crc = u32::from_le_bytes(bytes[len - 4..].try_into().expect("4 bytes"));
    crc32fast::hash(&bytes[..len - 4]) == crc
}

/// What [`apply`] would remove in `dir`; reads only.
pub fn plan(dir: &Path) -> std::io::Result<Vec<Repair>> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    let mut names: Vec<(String, u64)> = Vec::new();
    for e in entries {
        let e = e?;
        let Some(name) = e.file_name().to_str().map(String::from) else {
            continue;
        };
        let len = e.metadata().map_or(0, |m| m.len());
        names.push((name, len));
    }
    names.sort();
    for (name, bytes) in names {
        let why = if name.starts_with("snap.") && name.ends_with(".generating") {
            Some(RepairReason::UnfinishedSnapshot)
        } else if is_snapshot_name(&name) {
            (!snapshot_is_sound(&read_all(&dir.join(&name))?))
                .then_some(RepairReason::CorruptSnapshot)
        } else if name == "conf" {
            (!conf_is_sound(&read_all(&dir.join(&name))?)).then_some(RepairReason::CorruptConf)
        } else {
            None
        };
        if let Some(why) = why {
            out.push(Repair {
                file: name,
                bytes,
                why,
            });
        }
    }
    Ok(out)
}

/// Every complete-named snapshot in `dir`, for the second-level repair.
pub fn snapshots(dir: &Path) -> std::io::Result<Vec<Repair>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let Some(name) = e.file_name().to_str().map(String::from) else {
            continue;
        };
        if is_snapshot_name(&name) {
            out.push(Repair {
                bytes: e.metadata().map_or(0, |m| m.len()),
                file: name,
                why: RepairReason::SnapshotRefused,
            });
        }
    }
    out.sort_by(|a, b| a.file.cmp(&b.file));
    Ok(out)
}

/// Removes every file `repairs` lists, then fsyncs `dir` (so a removal is
/// not undone by a power cut after sled wrote a new snapshot).
pub fn apply(dir: &Path, repairs: &[Repair]) -> std::io::Result<()> {
    for r in repairs {
        match std::fs::remove_file(dir.join(&r.file)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    if !repairs.is_empty() {
        sync_dir(dir)?;
    }
    Ok(())
}

/// Takes sled's own lock on the buffer in `dir`: an exclusive `flock` on
/// `db` (sled takes the same with `fs2`), held while the returned file
/// lives. `create` makes `db` if missing (else a missing `db` is an error);
/// the file is opened read-only otherwise, so locking never writes. Waits up
/// to `wait`, then fails with `ErrorKind::WouldBlock` (another process, e.g.
/// a running gateway, holds it).
pub fn lock(dir: &Path, create: bool, wait: std::time::Duration) -> std::io::Result<std::fs::File> {
    let db = dir.join("db");
    let file = if create {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&db)?
    } else {
        std::fs::File::open(&db)?
    };
    let started = std::time::Instant::now();
    loop {
        match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => return Ok(file),
            Err(rustix::io::Errno::WOULDBLOCK) if started.elapsed() < wait => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// fsyncs a directory (its entries: new, renamed and removed files).
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot_bytes(body: &[u8]) -> Vec<u8> {
        let mut v = body.to_vec();
        v.extend_from_slice(&(body.len() as u64).to_le_bytes());
        v.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
        v
    }

    #[test]
    fn unfinished_and_corrupt_snapshots_and_a_bad_conf_are_planned_for_removal() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        std::fs::write(
            d.join("snap.00000000000000A0"),
            snapshot_bytes(b"good snapshot"),
        )
        .expect("write");
        std::fs::write(d.join("snap.00000000000000B0.generating"), b"").expect("write");
        let mut bad = snapshot_bytes(b"flipped");
        bad[0] ^= 1;
        std::fs::write(d.join("snap.00000000000000C0"), bad).expect("write");
        let mut conf = b"segment_size: 524288".to_vec();
        conf.extend_from_slice(&0u32.to_le_bytes());
        std::fs::write(d.join("conf"), &conf).expect("write");
        std::fs::write(d.join("db"), b"log").expect("write");
        let planned = plan(d).expect("plan");
        let got: Vec<_> = planned.iter().map(|r| (r.file.as_str(), r.why)).collect();
        assert_eq!(
            got,
            vec![
                ("conf", RepairReason::CorruptConf),
                (
                    "snap.00000000000000B0.generating",
                    RepairReason::UnfinishedSnapshot
                ),
                ("snap.00000000000000C0", RepairReason::CorruptSnapshot),
            ]
        );
        // Planning reads only.
        assert!(d.join("snap.00000000000000B0.generating").exists());
        apply(d, &planned).expect("apply");
        let mut left: Vec<_> = std::fs::read_dir(d)
            .expect("ls")
            .map(|e| e.expect("entry").file_name().into_string().expect("utf-8"))
            .collect();
        left.sort();
        assert_eq!(left, vec!["db", "snap.00000000000000A0"]);
        assert!(plan(d).expect("plan").is_empty());
    }

    #[test]
    fn a_short_conf_is_left_to_sled_and_a_good_one_is_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("conf"), b"1234").expect("write");
        assert!(plan(dir.path()).expect("plan").is_empty());
        let mut conf = b"segment_size: 524288".to_vec();
        conf.extend_from_slice(&crc32fast::hash(&conf).to_le_bytes());
        std::fs::write(dir.path().join("conf"), &conf).expect("write");
        assert!(plan(dir.path()).expect("plan").is_empty());
        assert!(plan(&dir.path().join("missing")).expect("plan").is_empty());
    }
}
