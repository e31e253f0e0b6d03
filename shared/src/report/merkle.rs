//! RFC 6962 (Certificate Transparency) Merkle tree hash over a report's
//! readings.
//!
//! `leaf = SHA-256(0x00 || leaf bytes)`, `node = SHA-256(0x01 || left ||
//! right)`; for `n > 1` leaves the tree splits at the largest power of two
//! `k < n` (left subtree holds `k` leaves). The empty tree's hash is
//! `SHA-256("")`. The leaf bytes of a reading are defined in
//! [`super::model::reading_leaf`].

use alloc::vec::Vec;
use sha2::{Digest, Sha256};

/// A SHA-256 hash.
pub type Hash = [u8; 32];

/// `SHA-256(0x00 || data)`.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(data);
    h.finalize().into()
}

/// `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// Merkle tree hash of already-hashed leaves (RFC 6962 section 2.1).
///
/// Computed bottom-up: pairing adjacent nodes level by level and carrying an
/// odd last node up unchanged gives exactly the RFC's split at the largest
/// power of two.
pub fn root_of_leaf_hashes(mut level: Vec<Hash>) -> Hash {
    if level.is_empty() {
        return Sha256::digest([]).into();
    }
    while level.len() > 1 {
        let mut next = Vec::with_capacity(level.len().div_ceil(2));
        for pair in level.chunks(2) {
            match pair {
                [l, r] => next.push(node_hash(l, r)),
                [one] => next.push(*one),
                _ => unreachable!("chunks(2) yields one or two items"),
            }
        }
        level = next;
    }
    level[0]
}

/// Merkle tree hash of raw leaves.
pub fn root<'a>(leaves: impl IntoIterator<Item = &'a [u8]>) -> Hash {
    root_of_leaf_hashes(leaves.into_iter().map(leaf_hash).collect())
}

/// Audit path for leaf `index` of `n` leaves (RFC 6962 section 2.1.1).
pub fn inclusion_proof(leaf_hashes: &[Hash], index: usize) -> Vec<Hash> {
    fn path(leaves: &[Hash], m: usize, out: &mut Vec<Hash>) {
        let n = leaves.len();
        if n <= 1 {
            return;
        }
        let k = largest_power_of_two_below(n);
        if m < k {
            path(&leaves[..k], m, out);
            out.push(root_of_leaf_hashes(leaves[k..].to_vec()));
        } else {
            path(&leaves[k..], m - k, out);
            out.push(root_of_leaf_hashes(leaves[..k].to_vec()));
        }
    }
    let mut out = Vec::new();
    if index < leaf_hashes.len() {
        path(leaf_hashes, index, &mut out);
    }
    out
}

/// Checks an audit path (RFC 9162 section 2.1.3.2).
pub fn verify_inclusion(
    leaf: &Hash,
    index: usize,
    size: usize,
    proof: &[Hash],
    root: &Hash,
) -> bool {
    if index >= size {
        return false;
    }
    let (mut fn_, mut sn) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if sn == 0 {
            return false;
        }
        if fn_ & 1 == 1 || fn_ == sn {
            r = node_hash(p, &r);
            while fn_ & 1 == 0 && fn_ != 0 {
                fn_ >>= 1;
                sn >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    sn == 0 && r == *root
}

fn largest_power_of_two_below(n: usize) -> usize {
    let mut k = 1;
    while k * 2 < n {
        k *= 2;
    }
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The recursive definition, straight from RFC 6962, as a model.
    fn mth(leaves: &[&[u8]]) -> Hash {
        match leaves.len() {
            0 => Sha256::digest([]).into(),
            1 => leaf_hash(leaves[0]),
            n => {
                let k = largest_power_of_two_below(n);
                node_hash(&mth(&leaves[..k]), &mth(&leaves[k..]))
            }
        }
    }

    fn hex(h: &Hash) -> alloc::string::String {
        h.iter().map(|b| alloc::format!("{b:02x}")).collect()
    }

    #[test]
    fn bottom_up_root_matches_the_recursive_definition_for_every_size() {
        let data: Vec<Vec<u8>> = (0..40u8)
            .map(|i| alloc::vec![i; (i % 5) as usize])
            .collect();
        for n in 0..data.len() {
            let leaves: Vec<&[u8]> = data[..n].iter().map(|v| v.as_slice()).collect();
            assert_eq!(root(leaves.iter().copied()), mth(&leaves), "n={n}");
        }
    }

    #[test]
    fn certificate_transparency_reference_vectors() {
        // From the CT reference implementation (merkle_tree_test.cc): the
        // 8 leaves and the roots of their prefixes.
        let leaves: [&[u8]; 8] = [
            b"",
            b"\x00",
            b"\x10",
            b"\x20\x21",
            b"\x30\x31",
            b"\x40\x41\x42\x43",
            b"\x50\x51\x52\x53\x54\x55\x56\x57",
            b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f",
        ];
        assert_eq!(
            hex(&root(leaves[..1].iter().copied())),
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
        );
        assert_eq!(
            hex(&root(leaves.iter().copied())),
            "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"
        );
        assert_eq!(
            hex(&root([].iter().copied())),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn inclusion_proofs_verify_and_detect_a_changed_leaf() {
        let hashes: Vec<Hash> = (0..13u8).map(|i| leaf_hash(&[i])).collect();
        let r = root_of_leaf_hashes(hashes.clone());
        for i in 0..hashes.len() {
            let p = inclusion_proof(&hashes, i);
            assert!(
                verify_inclusion(&hashes[i], i, hashes.len(), &p, &r),
                "i={i}"
            );
            assert!(!verify_inclusion(&leaf_hash(b"x"), i, hashes.len(), &p, &r));
        }
    }
}
