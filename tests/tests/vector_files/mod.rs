//! The committed report vectors (`shared/tests/vectors/`, layout in
//! docs/REPORT-FORMAT.md §13) and vector-shaped corpora: case directories
//! with `NN.jws` files and an `expect.json`.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// `shared/tests/vectors`.
pub fn vectors() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/tests/vectors")
}

/// The case directories under `root/kind` (`good` or `tamper`), sorted.
pub fn cases_in(root: &Path, kind: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root.join(kind))
        .unwrap_or_else(|e| panic!("{}: {e}", root.join(kind).display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    v.sort();
    v
}

/// The case directories of the committed vectors of `kind`.
pub fn cases(kind: &str) -> Vec<PathBuf> {
    cases_in(&vectors(), kind)
}

/// A case's report files (`*.jws`), in chain order.
pub fn files(case: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(case)
        .unwrap_or_else(|e| panic!("{}: {e}", case.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "jws"))
        .collect();
    v.sort();
    v
}

/// A case's `expect.json`.
pub fn expect(case: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(case.join("expect.json")).expect("expect.json"))
        .expect("expect.json is JSON")
}
