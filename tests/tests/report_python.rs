//! An independent verifier, written in Python from docs/REPORT-FORMAT.md
//! alone (`tests/python/verify_report.py`: JWS, JCS, registry trust, Merkle
//! root, device signatures over the rebuilt binary frames, continuity,
//! series, bindings and the four methodologies in exact fractions, the
//! chain), agrees with the Rust verifier:
//! - on every vector of `shared/tests/vectors/`: the good chains with the
//!   same exact ER per calculation, each tamper case rejected with the
//!   reason and at the file `expect.json` states;
//! - on reports the gateway builds here and now, with the same exact figures
//!   the Rust verifier computes for them;
//! - on a corpus a stranger's builder (`tests/python/report_corpus.py`)
//!   writes from the spec alone, reaching rules the vectors do not (give-ups,
//!   late frames, rollovers, exclusions, withheld sides, every reason label):
//!   the real `verify` binary and the Python verifier give each case the
//!   verdict the corpus states;
//! - and its own unit tests (the spec's worked examples) pass.
//!
//! Needs `python3` with `joserfc` and `cryptography`
//! (`scripts/install-test-deps.sh`). Without them the test is skipped
//! loudly, except under `CI`, where it fails.

mod report_support;
mod vector_files;

use report_support::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use vector_files::{cases, cases_in, expect, files, vectors};

fn python_ready() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import joserfc, cryptography"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        if std::env::var_os("CI").is_some() {
            panic!(
                "python3 with joserfc and cryptography is required under CI (scripts/install-test-deps.sh)"
            );
        }
        eprintln!(
            "SKIPPED report_python: python3 with joserfc + cryptography not found; run scripts/install-test-deps.sh"
        );
    }
    ok
}

fn python_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python")
}

/// Runs the Python verifier; (exit code, one JSON verdict per report, stderr).
fn python_verify(
    keys: &Path,
    registry: &Path,
    files: &[PathBuf],
) -> (i32, Vec<serde_json::Value>, String) {
    let out = Command::new("python3")
        .arg(python_dir().join("verify_report.py"))
        .arg("--keys")
        .arg(keys)
        .arg("--devices")
        .arg(registry)
        .args(files)
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let verdicts = stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("verdict {l}: {e}")))
        .collect();
    (
        out.status.code().unwrap_or(-1),
        verdicts,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The file name a verdict is about.
fn verdict_file(v: &serde_json::Value) -> String {
    Path::new(v["file"].as_str().unwrap_or(""))
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[test]
fn python_accepts_the_good_vectors_with_the_same_exact_figures() {
    if !python_ready() {
        return;
    }
    let good = cases("good");
    assert!(!good.is_empty());
    for case in good {
        let files = files(&case);
        let (code, verdicts, err) = python_verify(
            &vectors().join("gateway.pub.jwk"),
            &vectors().join("registry.json"),
            &files,
        );
        assert_eq!(code, 0, "{}: {verdicts:?} {err}", case.display());
        let e = expect(&case);
        let reports = e["reports"].as_array().expect("reports");
        assert_eq!(verdicts.len(), reports.len(), "{}", case.display());
        for (v, r) in verdicts.iter().zip(reports) {
            assert_eq!(v["ok"], true, "{v}");
            let calcs = r["calculations"].as_object().expect("calculations");
            assert!(!calcs.is_empty());
            for (id, c) in calcs {
                for k in ["er_exact", "re_exact", "pe_exact"] {
                    assert_eq!(
                        v["calculations"][id][k],
                        c[k],
                        "{}: {} {id} {k}",
                        case.display(),
                        verdict_file(v)
                    );
                }
            }
        }
    }
}

#[test]
fn python_rejects_every_tampered_vector_with_its_reason_at_its_file() {
    if !python_ready() {
        return;
    }
    let tamper = cases("tamper");
    assert!(tamper.len() >= 10);
    for case in tamper {
        let e = expect(&case);
        let (code, verdicts, err) = python_verify(
            &vectors().join("gateway.pub.jwk"),
            &vectors().join("registry.json"),
            &files(&case),
        );
        assert_ne!(code, 0, "{}: accepted {verdicts:?}", case.display());
        assert_ne!(code, 2, "{}: usage error {err}", case.display());
        let first_bad = verdicts
            .iter()
            .find(|v| v["ok"] != true)
            .unwrap_or_else(|| panic!("{}: no rejection in {verdicts:?}", case.display()));
        assert_eq!(
            (
                first_bad["reason"].as_str(),
                verdict_file(first_bad).as_str()
            ),
            (e["reason"].as_str(), e["file"].as_str().expect("file")),
            "{}: {}; python said {first_bad}",
            case.display(),
            e["what"]
        );
    }
}

#[test]
fn python_and_rust_agree_on_reports_built_here_and_catch_an_altered_reading() {
    if !python_ready() {
        return;
    }
    let site = TestSite::new();
    for n in 0..3 {
        site.receive_period(n);
    }
    site.close_through(2);
    let files = site.report_files();
    assert_eq!(files.len(), 3);
    let registry = site.dir.path().join("registry.json");
    let reg = mrv_gateway::report::synthetic::pv_registry(&SITE);
    std::fs::write(&registry, serde_json::to_vec(&reg).expect("registry")).expect("write");

    // Rust's figures for the same files.
    let keys = keys(&site);
    let trust = trust();
    let mut chain = mrv_shared::report::Chain::new(false);
    let rust: Vec<_> = files
        .iter()
        .map(|f| {
            let v =
                mrv_shared::report::verify_report(&std::fs::read(f).expect("read"), &keys, &trust)
                    .expect("rust verifies");
            chain.push(&v).expect("chain");
            v
        })
        .collect();
    let (code, verdicts, err) = python_verify(&site.public_jwk, &registry, &files);
    assert_eq!(code, 0, "{verdicts:?} {err}");
    assert_eq!(verdicts.len(), 3);
    for (v, r) in verdicts.iter().zip(&rust) {
        assert_eq!(v["ok"], true, "{v}");
        assert_eq!(v["seq"], r.report.header.seq);
        let calcs = &r.report.calculations;
        assert!(!calcs.is_empty(), "the test site credits something");
        for c in calcs {
            let pc = &v["calculations"][c.id.as_str()];
            assert_eq!(pc["er_exact"], c.er.exact.to_string(), "{}: ER", c.id);
            assert_eq!(pc["re_exact"], c.re.exact.to_string(), "{}: RE", c.id);
            assert_eq!(pc["pe_exact"], c.pe.exact.to_string(), "{}: PE", c.id);
        }
    }

    // One reading altered in the middle report: both reject it.
    let bytes = std::fs::read(&files[1]).expect("read");
    let mut p = payload(&bytes);
    p["readings"]["frames"][0]["samples"][0][2] = serde_json::Value::from(7);
    std::fs::write(&files[1], swap_payload(&bytes, &p)).expect("write");
    let (code, verdicts, _) = python_verify(&site.public_jwk, &registry, &files);
    assert_eq!(code, 1, "{verdicts:?}");
    assert_eq!(verdicts[0]["ok"], true);
    assert_eq!(verdicts[1]["ok"], false, "{}", verdicts[1]);
    assert!(
        mrv_shared::report::verify_report(&std::fs::read(&files[1]).expect("read"), &keys, &trust)
            .is_err()
    );
}

/// Runs the gateway binary's `verify`; (exit code, stdout).
fn rust_verify(keys: &Path, registry: &Path, case: &Path) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_mrv-e2e-gateway"))
        .arg("verify")
        .arg("--keys")
        .arg(keys)
        .arg("--devices")
        .arg(registry)
        .arg(case)
        .output()
        .expect("verify runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn rust_and_python_give_the_strangers_corpus_the_verdicts_it_states() {
    if !python_ready() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new("python3")
        .arg(python_dir().join("report_corpus.py"))
        .arg(dir.path())
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let keys = dir.path().join("gateway.pub.jwk");
    let registry = dir.path().join("registry.json");
    let mut corpus = cases_in(dir.path(), "good");
    corpus.extend(cases_in(dir.path(), "tamper"));
    assert!(corpus.len() >= 20, "{} cases", corpus.len());
    for case in corpus {
        let e = expect(&case);
        let (code, text) = rust_verify(&keys, &registry, &case);
        let (py_code, verdicts, err) = python_verify(&keys, &registry, &files(&case));
        match e["reason"].as_str() {
            None => {
                assert_eq!(code, 0, "rust, {}: {text}", case.display());
                assert_eq!(py_code, 0, "python, {}: {verdicts:?} {err}", case.display());
            }
            Some(reason) => {
                let file = e["file"].as_str().expect("file");
                assert_eq!(code, 1, "rust, {}: {text}", case.display());
                let line = text
                    .lines()
                    .find(|l| l.starts_with("INVALID"))
                    .unwrap_or_else(|| panic!("rust, {}: no INVALID line: {text}", case.display()));
                assert!(
                    line.contains(file) && line.contains(&format!("  {reason}: ")),
                    "rust, {}: expected {reason} at {file}, got {line}",
                    case.display()
                );
                let first_bad = verdicts
                    .iter()
                    .find(|v| v["ok"] != true)
                    .unwrap_or_else(|| panic!("python, {}: accepted {verdicts:?}", case.display()));
                assert_eq!(
                    (
                        first_bad["reason"].as_str(),
                        verdict_file(first_bad).as_str()
                    ),
                    (Some(reason), file),
                    "python, {}: {first_bad}",
                    case.display()
                );
            }
        }
    }
}

#[test]
fn the_python_verifiers_own_unit_tests_pass() {
    if !python_ready() {
        return;
    }
    let out = Command::new("python3")
        .args(["-m", "unittest", "-q", "test_verify_report"])
        .current_dir(python_dir())
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
