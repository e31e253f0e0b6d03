//! CI smoke for the fuzz targets (stable, seconds): every file of the
//! committed, minimised corpus in `fuzz/corpus/<target>/` goes through the
//! same target body the fuzzer runs (`mrv_fuzz_targets::TARGETS`), so a
//! change that breaks an invariant on any input the fuzzer once found
//! interesting fails here. Crash reproducers that were fixed live in
//! `fuzz/regressions/<target>/` and are replayed too.

use std::path::{Path, PathBuf};

fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    v.sort();
    v
}

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

#[test]
fn every_committed_corpus_file_passes_its_target() {
    for (name, body) in mrv_fuzz_targets::TARGETS {
        let corpus = files(&fuzz_dir().join("corpus").join(name));
        assert!(
            corpus.len() >= 5,
            "fuzz/corpus/{name} holds {} files: the corpus is missing",
            corpus.len()
        );
        for f in corpus
            .iter()
            .chain(files(&fuzz_dir().join("regressions").join(name)).iter())
        {
            let data = std::fs::read(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            let r = std::panic::catch_unwind(|| body(&data));
            assert!(r.is_ok(), "{name}: {} fails its target", f.display());
        }
    }
}

#[test]
fn every_target_has_a_fuzz_binary() {
    for (name, _) in mrv_fuzz_targets::TARGETS {
        let src = fuzz_dir().join("fuzz_targets").join(format!("{name}.rs"));
        let text =
            std::fs::read_to_string(&src).unwrap_or_else(|e| panic!("{}: {e}", src.display()));
        assert!(
            text.contains("mrv_fuzz_targets::"),
            "{} calls the shared body",
            src.display()
        );
    }
}
