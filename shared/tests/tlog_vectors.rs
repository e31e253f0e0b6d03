//! Test vectors of the receiver's public log (`docs/RECEIVER-API.md`, "The
//! log"), rebuilt here from fixed inputs and compared byte for byte with the
//! committed files in `shared/tests/tlog_vectors/`, so that another
//! implementation can check itself against them. `MRV_REGENERATE_VECTORS=1`
//! rewrites the files (review the diff).
//!
//! Inputs: log key seed = 32 bytes of 0x01, origin `example.org/mrv-log`;
//! the "reports" are the ASCII strings `report-0` .. `report-6`; entry i is
//! SHA-256 of report i.

use ed25519_dalek::SigningKey;
use mrv_shared::report::hex;
use mrv_shared::tlog::checkpoint::Checkpoint;
use mrv_shared::tlog::note::NoteSigner;
use mrv_shared::tlog::receipt::{
    ConsistencyProof, Receipt, hex_hashes, verify_consistency_between, verify_receipt,
};
use mrv_shared::tlog::tree::{
    Frontier, NodeId, consistency_ranges, entry_leaf_hash, hash_ranges, inclusion_ranges,
};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::PathBuf;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/tlog_vectors")
}

fn check(name: &str, content: &str) {
    let path = dir().join(name);
    if std::env::var_os("MRV_REGENERATE_VECTORS").is_some() {
        std::fs::write(&path, content).expect("write vector");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (MRV_REGENERATE_VECTORS=1 writes it)",
            path.display()
        )
    });
    assert_eq!(
        committed, content,
        "{name} differs from what the code produces"
    );
}

#[test]
fn the_committed_log_vectors_are_what_the_code_produces_and_they_verify() {
    let signer =
        NoteSigner::new("example.org/mrv-log", SigningKey::from_bytes(&[1; 32])).expect("signer");
    let reports: Vec<Vec<u8>> = (0..7).map(|i| format!("report-{i}").into_bytes()).collect();
    let mut frontier = Frontier::new();
    let mut nodes: BTreeMap<NodeId, [u8; 32]> = BTreeMap::new();
    let mut entries = Vec::new();
    let mut roots = Vec::new();
    let mut notes = BTreeMap::new();
    for r in &reports {
        let entry: [u8; 32] = Sha256::digest(r).into();
        entries.push(hex(&entry));
        nodes.extend(frontier.append(entry_leaf_hash(&entry)));
        roots.push(hex(&frontier.root()));
        let cp = Checkpoint {
            origin: String::from("example.org/mrv-log"),
            size: frontier.size(),
            root: frontier.root(),
            extensions: vec![],
        };
        notes.insert(
            frontier.size(),
            (cp.clone(), cp.sign(&signer).expect("sign")),
        );
    }
    let log = serde_json::json!({
        "origin": "example.org/mrv-log",
        "log_key_seed_hex": hex(&[1u8; 32]),
        "verifier_key": signer.verifier().to_string(),
        "reports_ascii": (0..7).map(|i| format!("report-{i}")).collect::<Vec<_>>(),
        "entries": entries,
        "leaf_hashes": entries.iter().map(|e| {
            let b: [u8; 32] = mrv_shared::tlog::receipt::parse_hash(e).expect("hex");
            hex(&entry_leaf_hash(&b))
        }).collect::<Vec<_>>(),
        "roots_by_size": roots,
    });
    check(
        "log.json",
        &(serde_json::to_string_pretty(&log).expect("json") + "\n"),
    );
    let (cp7, note7) = &notes[&7];
    check("checkpoint-7.txt", note7);
    let receipt = Receipt {
        report_hash: entries[3].clone(),
        log_index: 3,
        tree_size: 7,
        inclusion_proof: hex_hashes(&hash_ranges(&inclusion_ranges(3, 7), &nodes).expect("nodes")),
        checkpoint: note7.clone(),
    };
    assert_eq!(
        verify_receipt(&receipt, Some(&reports[3]), signer.verifier()).expect("verifies"),
        *cp7
    );
    check(
        "receipt-3-of-7.json",
        &(serde_json::to_string_pretty(&receipt).expect("json") + "\n"),
    );
    let (cp3, note3) = &notes[&3];
    let nodes3: BTreeMap<NodeId, [u8; 32]> = nodes
        .iter()
        .filter(|(id, _)| (id.index + 1) << id.level <= 7)
        .map(|(k, v)| (*k, *v))
        .collect();
    let proof = ConsistencyProof {
        old_size: 3,
        new_size: 7,
        proof: hex_hashes(&hash_ranges(&consistency_ranges(3, 7), &nodes3).expect("nodes")),
    };
    verify_consistency_between(cp3, cp7, &proof).expect("consistent");
    let cons = serde_json::json!({
        "old_checkpoint": note3,
        "new_checkpoint": note7,
        "proof": proof,
    });
    check(
        "consistency-3-to-7.json",
        &(serde_json::to_string_pretty(&cons).expect("json") + "\n"),
    );
}
