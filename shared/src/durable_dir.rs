//! Directories that survive a power cut (std only; used by the gateway's
//! buffer and report store and by the receiver's file archive).
//!
//! `create_dir_all` makes directories, but a new directory's name lives in
//! its parent, which must be fsynced before the name is durable; until
//! then a power cut can take the directory and everything fsynced inside it
//! away (found by the power-cut tests: a fresh data dir vanished with every
//! acked frame). [`create_dir_all_durable`] creates what is missing and
//! fsyncs the parent of each directory it created, top down.

use std::path::Path;
use std::vec::Vec;

/// `create_dir_all(path)`, then fsyncs the parent of every directory it
/// created (nothing when `path` already existed).
pub fn create_dir_all_durable(path: &Path) -> std::io::Result<()> {
    let mut missing = Vec::new();
    let mut p = Some(path);
    while let Some(d) = p {
        if d.as_os_str().is_empty() || d.is_dir() {
            break;
        }
        missing.push(d.to_path_buf());
        p = d.parent();
    }
    std::fs::create_dir_all(path)?;
    for d in missing.iter().rev() {
        let parent = match d.parent() {
            Some(q) if !q.as_os_str().is_empty() => q,
            _ => Path::new("."),
        };
        std::fs::File::open(parent)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_every_missing_level_and_accepts_an_existing_dir() {
        let dir = tempfile::tempdir().expect("tempdir");
        let deep = dir.path().join("a").join("b").join("c");
        create_dir_all_durable(&deep).expect("create");
        assert!(deep.is_dir());
        create_dir_all_durable(&deep).expect("again");
        let file = dir.path().join("f");
        std::fs::write(&file, b"x").expect("write");
        assert!(create_dir_all_durable(&file.join("below")).is_err());
    }
}
