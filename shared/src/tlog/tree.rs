//! The backend's append-only RFC 6962 Merkle tree, computed from stored
//! *complete subtrees* so that roots and proofs cost O(log n) node reads,
//! whatever the size of the log.
//!
//! A [`NodeId`] `(level, index)` names the complete, aligned subtree over
//! leaves `[index * 2^level, (index + 1) * 2^level)`; level 0 is the leaf
//! hash itself. Appending leaf `i` completes node `(0, i)` and every
//! `(l, ((i + 1) >> l) - 1)` with `2^l` dividing `i + 1`
//! ([`completed_by_append`]): about two nodes per leaf, each written once
//! and never changed.
//!
//! Every range that RFC 6962's `MTH`, `PATH` and `SUBPROOF` recurse into
//! starts at a multiple of its own length's next power of two, so its hash
//! is the right fold of the complete subtrees given by the binary
//! decomposition of its length ([`range_nodes`], [`range_hash`]).
//! Computing a proof is pure and two-phase: [`inclusion_ranges`] /
//! [`consistency_ranges`] say which ranges the proof consists of,
//! [`nodes_for`] which stored nodes those need (fetch them in one query),
//! then [`hash_ranges`] folds them. [`Frontier`] is the log's compact state
//! (the complete subtrees of `[0, size)`): appending to it needs no reads
//! and yields the new root and the newly completed nodes.
//!
//! Verification ([`verify_inclusion`], [`verify_consistency`]) follows
//! RFC 9162 sections 2.1.3.2 and 2.1.4.2.

use crate::report::merkle::{Hash, leaf_hash, node_hash};
use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use sha2::{Digest, Sha256};

/// A complete, aligned subtree: leaves `[index << level, (index + 1) << level)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId {
    /// Height: 0 for a leaf, `l` for a subtree of `2^l` leaves.
    pub level: u8,
    /// Position among the subtrees of that level, from 0.
    pub index: u64,
}

/// A leaf range `[start, end)` of the tree.
pub type Range = (u64, u64);

/// The leaf hash of a log entry whose data is `entry` (for the report log:
/// the 32-byte SHA-256 of the stored JWS bytes).
pub fn entry_leaf_hash(entry: &[u8]) -> Hash {
    leaf_hash(entry)
}

/// The hash of the empty tree, `SHA-256("")`.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// Largest power of two strictly below `n` (`n >= 2`).
fn split(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1u64 << (63 - (n - 1).leading_zeros())
}

/// The complete subtrees of range `[start, end)`, left to right (largest
/// first). `start` must be aligned (a multiple of the power of two at or
/// above `end - start`), which every range used here is.
pub fn range_nodes(start: u64, end: u64) -> Vec<NodeId> {
    let mut out = Vec::new();
    let mut at = start;
    while at < end {
        let len = end - at;
        let level = 63 - len.leading_zeros() as u8;
        out.push(NodeId {
            level,
            index: at >> level,
        });
        at += 1u64 << level;
    }
    out
}

/// The hash of a range from the hashes of its [`range_nodes`], in order.
pub fn fold_nodes(hashes: &[Hash]) -> Hash {
    match hashes.split_last() {
        None => empty_root(),
        Some((last, rest)) => rest.iter().rev().fold(*last, |acc, h| node_hash(h, &acc)),
    }
}

/// The hash of range `[start, end)` given a lookup of stored nodes; `None`
/// when a node is missing.
pub fn range_hash(start: u64, end: u64, node: &impl Fn(NodeId) -> Option<Hash>) -> Option<Hash> {
    let hashes: Option<Vec<Hash>> = range_nodes(start, end).into_iter().map(node).collect();
    Some(fold_nodes(&hashes?))
}

/// The ranges whose hashes form the inclusion proof of leaf `index` in a
/// tree of `size` leaves (RFC 6962 `PATH`), in proof order (leaf side
/// first). Empty when `index >= size` or `size == 1`.
pub fn inclusion_ranges(index: u64, size: u64) -> Vec<Range> {
    fn path(m: u64, start: u64, end: u64, out: &mut Vec<Range>) {
        let n = end - start;
        if n <= 1 {
            return;
        }
        let k = split(n);
        if m < k {
            path(m, start, start + k, out);
            out.push((start + k, end));
        } else {
            path(m - k, start + k, end, out);
            out.push((start, start + k));
        }
    }
    let mut out = Vec::new();
    if index < size {
        path(index, 0, size, &mut out);
    }
    out
}

/// The ranges whose hashes form the consistency proof from tree size `old`
/// to tree size `new` (RFC 6962 `PROOF` = `SUBPROOF(m, D[n], true)`).
/// Empty when `old == 0`, `old >= new`.
pub fn consistency_ranges(old: u64, new: u64) -> Vec<Range> {
    fn sub(m: u64, start: u64, end: u64, whole: bool, out: &mut Vec<Range>) {
        let n = end - start;
        if m == n {
            if !whole {
                out.push((start, end));
            }
            return;
        }
        let k = split(n);
        if m <= k {
            sub(m, start, start + k, whole, out);
            out.push((start + k, end));
        } else {
            sub(m - k, start + k, end, false, out);
            out.push((start, start + k));
        }
    }
    let mut out = Vec::new();
    if old > 0 && old < new {
        sub(old, 0, new, true, &mut out);
    }
    out
}

/// Every stored node the `ranges` need, sorted and without repeats.
pub fn nodes_for(ranges: &[Range]) -> Vec<NodeId> {
    let mut ids: Vec<NodeId> = ranges
        .iter()
        .flat_map(|&(s, e)| range_nodes(s, e))
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// The hashes of `ranges` from `nodes` (fetched for [`nodes_for`]); `None`
/// when a node is missing.
pub fn hash_ranges(ranges: &[Range], nodes: &BTreeMap<NodeId, Hash>) -> Option<Vec<Hash>> {
    let look = |id: NodeId| nodes.get(&id).copied();
    ranges
        .iter()
        .map(|&(s, e)| range_hash(s, e, &look))
        .collect()
}

/// The nodes completed by appending leaf number `index` (0-based): the
/// leaf itself, then each parent it closes (see [`Frontier::append`]).
pub fn completed_by_append(index: u64) -> impl Iterator<Item = NodeId> {
    let top = (index + 1).trailing_zeros() as u8;
    (0..=top).map(move |level| NodeId {
        level,
        index: ((index + 1) >> level) - 1,
    })
}

/// The compact state of a log of `size` leaves: the hashes of the complete
/// subtrees of `[0, size)` (the [`range_nodes`] of `(0, size)`), largest
/// first. Enough to append and to compute the root without any reads.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Frontier {
    size: u64,
    hashes: Vec<Hash>,
}

impl Frontier {
    /// The empty log.
    pub fn new() -> Frontier {
        Frontier::default()
    }

    /// A frontier from its parts; `None` when `hashes` does not have one
    /// hash per set bit of `size`.
    pub fn from_parts(size: u64, hashes: Vec<Hash>) -> Option<Frontier> {
        (hashes.len() == size.count_ones() as usize).then_some(Frontier { size, hashes })
    }

    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The subtree hashes, largest first.
    pub fn hashes(&self) -> &[Hash] {
        &self.hashes
    }

    /// The node ids of [`Frontier::hashes`].
    pub fn ids(&self) -> Vec<NodeId> {
        range_nodes(0, self.size)
    }

    /// The tree hash (RFC 6962 `MTH`).
    pub fn root(&self) -> Hash {
        fold_nodes(&self.hashes)
    }

    /// Appends a leaf hash; returns the nodes it completed (the leaf
    /// itself first, then each parent it closed), to be stored.
    pub fn append(&mut self, leaf: Hash) -> Vec<(NodeId, Hash)> {
        let index = self.size;
        let mut done = Vec::new();
        let mut h = leaf;
        for id in completed_by_append(index) {
            if id.level > 0 {
                let left = self.hashes.pop().expect("a set bit of size has a subtree");
                h = node_hash(&left, &h);
            }
            done.push((id, h));
        }
        self.hashes.push(h);
        self.size += 1;
        done
    }

    /// The stored nodes known from the frontier alone, by id.
    pub fn known_nodes(&self) -> BTreeMap<NodeId, Hash> {
        self.ids()
            .into_iter()
            .zip(self.hashes.iter().copied())
            .collect()
    }
}

/// Checks that `leaf` is entry `index` of the tree of `size` leaves with
/// root `root` (RFC 9162 2.1.3.2).
pub fn verify_inclusion(leaf: &Hash, index: u64, size: u64, proof: &[Hash], root: &Hash) -> bool {
    if index >= size {
        return false;
    }
    let (mut f, mut s) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if s == 0 {
            return false;
        }
        if f & 1 == 1 || f == s {
            r = node_hash(p, &r);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    s == 0 && r == *root
}

/// Checks that the tree of `new_size` leaves with root `new_root` extends
/// the tree of `old_size` leaves with root `old_root` (RFC 9162 2.1.4.2).
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    proof: &[Hash],
    old_root: &Hash,
    new_root: &Hash,
) -> bool {
    if old_size > new_size {
        return false;
    }
    if old_size == new_size {
        return proof.is_empty() && old_root == new_root;
    }
    if old_size == 0 {
        // The empty tree is a prefix of every tree.
        return proof.is_empty();
    }
    if proof.is_empty() {
        return false;
    }
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if old_size.is_power_of_two() {
        path.push(*old_root);
    }
    path.extend_from_slice(proof);
    let (mut f, mut s) = (old_size - 1, new_size - 1);
    while f & 1 == 1 {
        f >>= 1;
        s >>= 1;
    }
    let (mut fr, mut sr) = (path[0], path[0]);
    for c in &path[1..] {
        if s == 0 {
            return false;
        }
        if f & 1 == 1 || f == s {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        f >>= 1;
        s >>= 1;
    }
    fr == *old_root && sr == *new_root && s == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn h(s: &str) -> Hash {
        let mut out = [0u8; 32];
        for (i, b) in out.iter_mut().enumerate() {
            *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).expect("hex");
        }
        out
    }

    /// RFC 6962 `MTH` straight from the definition (the model).
    fn mth(leaves: &[Hash]) -> Hash {
        match leaves.len() {
            0 => empty_root(),
            1 => leaves[0],
            n => {
                let k = split(n as u64) as usize;
                node_hash(&mth(&leaves[..k]), &mth(&leaves[k..]))
            }
        }
    }

    /// RFC 6962 `PATH` from the definition.
    fn path(m: usize, leaves: &[Hash]) -> Vec<Hash> {
        let n = leaves.len();
        if n <= 1 {
            return Vec::new();
        }
        let k = split(n as u64) as usize;
        let mut p = if m < k {
            path(m, &leaves[..k])
        } else {
            path(m - k, &leaves[k..])
        };
        p.push(if m < k {
            mth(&leaves[k..])
        } else {
            mth(&leaves[..k])
        });
        p
    }

    /// RFC 6962 `SUBPROOF` from the definition.
    fn subproof(m: usize, leaves: &[Hash], b: bool) -> Vec<Hash> {
        let n = leaves.len();
        if m == n {
            return if b {
                Vec::new()
            } else {
                alloc::vec![mth(leaves)]
            };
        }
        let k = split(n as u64) as usize;
        if m <= k {
            let mut p = subproof(m, &leaves[..k], b);
            p.push(mth(&leaves[k..]));
            p
        } else {
            let mut p = subproof(m - k, &leaves[k..], false);
            p.push(mth(&leaves[..k]));
            p
        }
    }

    /// Builds a log of `n` leaves the way a store does: every completed
    /// node kept, plus the frontier.
    fn build(n: usize) -> (Vec<Hash>, BTreeMap<NodeId, Hash>, Frontier) {
        let leaves: Vec<Hash> = (0..n as u64)
            .map(|i| entry_leaf_hash(&i.to_be_bytes()))
            .collect();
        let mut f = Frontier::new();
        let mut nodes = BTreeMap::new();
        for l in &leaves {
            nodes.extend(f.append(*l));
        }
        (leaves, nodes, f)
    }

    const LEAVES: [&str; 8] = [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ];
    const ROOTS: [&str; 8] = [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len() / 2)
            .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).expect("hex"))
            .collect()
    }

    #[test]
    fn frontier_roots_match_the_certificate_transparency_vectors() {
        let mut f = Frontier::new();
        assert_eq!(f.root(), empty_root());
        for (i, l) in LEAVES.iter().enumerate() {
            f.append(entry_leaf_hash(&unhex(l)));
            assert_eq!(f.root(), h(ROOTS[i]), "size {}", i + 1);
        }
    }

    #[test]
    fn proofs_match_the_certificate_transparency_vectors() {
        let mut f = Frontier::new();
        let mut nodes = BTreeMap::new();
        for l in LEAVES {
            nodes.extend(f.append(entry_leaf_hash(&unhex(l))));
        }
        let incl = hash_ranges(&inclusion_ranges(5, 8), &nodes).expect("nodes");
        assert_eq!(
            incl,
            [
                h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
                h("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
                h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
            ]
        );
        let leaf5 = entry_leaf_hash(&unhex(LEAVES[5]));
        assert!(verify_inclusion(&leaf5, 5, 8, &incl, &h(ROOTS[7])));
        assert!(!verify_inclusion(&leaf5, 4, 8, &incl, &h(ROOTS[7])));
        let cons = hash_ranges(&consistency_ranges(6, 8), &nodes).expect("nodes");
        assert_eq!(
            cons,
            [
                h("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
                h("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
                h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
            ]
        );
        assert!(verify_consistency(6, 8, &cons, &h(ROOTS[5]), &h(ROOTS[7])));
        assert!(!verify_consistency(6, 8, &cons, &h(ROOTS[4]), &h(ROOTS[7])));
        let nodes5: BTreeMap<NodeId, Hash> = nodes
            .iter()
            .filter(|(id, _)| (id.index + 1) << id.level <= 5)
            .map(|(k, v)| (*k, *v))
            .collect();
        let cons = hash_ranges(&consistency_ranges(2, 5), &nodes5).expect("nodes");
        assert_eq!(
            cons,
            [
                h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
                h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
            ]
        );
        assert!(verify_consistency(2, 5, &cons, &h(ROOTS[1]), &h(ROOTS[4])));
    }

    #[test]
    fn appending_completes_each_node_exactly_once() {
        let (leaves, nodes, f) = build(100);
        // Every complete aligned subtree of 100 leaves, no more, no less.
        let mut want = 0;
        for level in 0..8u8 {
            want += 100u64 >> level;
        }
        assert_eq!(nodes.len() as u64, want);
        assert_eq!(f.root(), mth(&leaves));
        assert_eq!(f.known_nodes().len(), 100u64.count_ones() as usize);
        for (id, hash) in f.known_nodes() {
            assert_eq!(nodes.get(&id), Some(&hash));
        }
    }

    #[test]
    fn proofs_need_only_logarithmically_many_nodes() {
        let n = 1u64 << 40;
        for i in [0, 1, n / 3, n - 2, n - 1] {
            assert!(nodes_for(&inclusion_ranges(i, n)).len() <= 40, "{i}");
        }
        assert!(nodes_for(&consistency_ranges(n / 3 + 7, n - 5)).len() <= 2 * 41);
    }

    #[test]
    fn a_missing_node_is_reported_not_guessed() {
        let (_, mut nodes, _) = build(9);
        nodes.remove(&NodeId { level: 3, index: 0 });
        assert_eq!(hash_ranges(&inclusion_ranges(8, 9), &nodes), None);
    }

    proptest! {
        #[test]
        fn node_based_proofs_equal_the_rfc_definitions_and_verify(
            n in 1usize..300, a in 0usize..300, b in 0usize..300
        ) {
            let (leaves, nodes, f) = build(n);
            let i = a % n;
            let incl = hash_ranges(&inclusion_ranges(i as u64, n as u64), &nodes).expect("nodes");
            prop_assert_eq!(&incl, &path(i, &leaves));
            let root = f.root();
            prop_assert!(verify_inclusion(&leaves[i], i as u64, n as u64, &incl, &root));
            let wrong = entry_leaf_hash(b"not in the log");
            prop_assert!(!verify_inclusion(&wrong, i as u64, n as u64, &incl, &root));
            let m = 1 + b % n;
            let cons = hash_ranges(&consistency_ranges(m as u64, n as u64), &nodes).expect("nodes");
            let want = if m < n { subproof(m, &leaves, true) } else { Vec::new() };
            prop_assert_eq!(&cons, &want);
            let old_root = mth(&leaves[..m]);
            prop_assert!(verify_consistency(m as u64, n as u64, &cons, &old_root, &root));
            // A rewritten history is caught: change one old leaf.
            let mut forged = leaves.clone();
            forged[(a + b) % m] = wrong;
            prop_assert!(!verify_consistency(m as u64, n as u64, &cons, &mth(&forged[..m]), &root));
        }
    }
}
