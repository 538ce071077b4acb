//! Merkle trees over shards: a shard's id is the root of a binary BLAKE3
//! tree over its fixed [`LEAF_SIZE`] leaves, built as RFC 6962 (Certificate
//! Transparency) builds its trees, so that a provider can prove it holds
//! any one leaf with the leaf and its sibling path.
//!
//! - BLAKE3, not SHA-256: every byte of a shard is hashed by the client
//!   that makes it and again by the provider that stores it, and BLAKE3
//!   does that at twice SHA-256's speed here even with SHA extensions
//!   (scripts/bench.sh prints both).
//! - Leaves and nodes are domain-separated by their BLAKE3 keys, derived
//!   from two different context strings (RFC 6962's `0x00 ‖ leaf` and
//!   `0x01 ‖ left ‖ right`, done the BLAKE3 way, which keeps a 4 KiB leaf
//!   aligned to BLAKE3's 1 KiB chunks), so no root of one tree is the root
//!   of a tree of other leaves with the same bytes.
//! - The tree is built bottom up, level by level; a lone last node of a
//!   level is promoted unchanged. That is RFC 6962's split at the largest
//!   power of two below n, computed without recursion (a test checks the
//!   two agree).
//! - [`Tree::to_bytes`] lays every level out one after the other, leaves
//!   first, so a provider that keeps it beside the shard reads a proof's
//!   siblings at the offsets [`path_positions`] gives, never the shard.
//! - [`verify`] is RFC 9162's inclusion-proof check (section 2.1.3.2). It
//!   needs only the root, the shard's size and the index: the client keeps
//!   nothing per shard beyond what its manifest already has.

use std::ops::Range;

use std::sync::LazyLock;

pub use crate::crypto::Hash;

/// Bytes per leaf; the last leaf of a shard may be shorter.
pub const LEAF_SIZE: u64 = 4096;
/// Bytes of one hash in a serialized tree or proof path.
pub const HASH_LEN: usize = 32;
/// Deepest tree a proof may describe: 2^48 leaves is far past any shard,
/// so a longer path is a peer's lie and is refused before hashing.
pub const MAX_PATH_LEN: usize = 48;

/// BLAKE3 keys of leaves and of inner nodes; see the module doc.
static LEAF_KEY: LazyLock<[u8; 32]> =
    LazyLock::new(|| blake3::derive_key("p2pstore 2026-11 merkle leaf", &[]));
static NODE_KEY: LazyLock<[u8; 32]> =
    LazyLock::new(|| blake3::derive_key("p2pstore 2026-11 merkle node", &[]));

/// Leaves of a shard of `size` bytes. An empty shard is one empty leaf,
/// so every shard has a root.
pub fn leaf_count(size: u64) -> u64 {
    size.div_ceil(LEAF_SIZE).max(1)
}

/// Byte range of leaf `index` in a shard of `size` bytes; None past the end.
pub fn leaf_range(size: u64, index: u64) -> Option<Range<u64>> {
    if index >= leaf_count(size) {
        return None;
    }
    let start = index * LEAF_SIZE;
    Some(start..size.min(start + LEAF_SIZE))
}

pub fn leaf_hash(leaf: &[u8]) -> Hash {
    *blake3::keyed_hash(&LEAF_KEY, leaf).as_bytes()
}

pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut pair = [0u8; 2 * HASH_LEN];
    pair[..HASH_LEN].copy_from_slice(left);
    pair[HASH_LEN..].copy_from_slice(right);
    *blake3::keyed_hash(&NODE_KEY, &pair).as_bytes()
}

/// Number of nodes on each level of a tree of `n` leaves, leaves first,
/// ending with the root's level of 1.
fn level_sizes(n: u64) -> Vec<u64> {
    let mut sizes = vec![n.max(1)];
    while let Some(&c) = sizes.last().filter(|&&c| c > 1) {
        sizes.push(c.div_ceil(2));
    }
    sizes
}

/// Every level of a shard's tree, leaves first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tree {
    levels: Vec<Vec<Hash>>,
}

impl Tree {
    /// Hashes `data` once, leaf by leaf, then the ~n interior nodes.
    pub fn build(data: &[u8]) -> Tree {
        let mut leaves: Vec<Hash> = data.chunks(LEAF_SIZE as usize).map(leaf_hash).collect();
        if leaves.is_empty() {
            leaves.push(leaf_hash(&[]));
        }
        let mut levels = vec![leaves];
        while let Some(level) = levels.last().filter(|l| l.len() > 1) {
            let next = level
                .chunks(2)
                .map(|pair| match pair {
                    [l, r] => node_hash(l, r),
                    [lone] => *lone,
                    _ => unreachable!("chunks(2) yields one or two"),
                })
                .collect();
            levels.push(next);
        }
        Tree { levels }
    }

    pub fn root(&self) -> Hash {
        // build() always ends with a level of exactly one node.
        self.levels
            .last()
            .and_then(|l| l.first())
            .copied()
            .unwrap_or_default()
    }

    pub fn leaves(&self) -> u64 {
        self.levels.first().map_or(0, |l| l.len() as u64)
    }

    /// The sibling path of leaf `index`, bottom up, concatenated; empty
    /// past the end.
    pub fn proof(&self, index: u64) -> Vec<u8> {
        let mut out = Vec::new();
        if index >= self.leaves() {
            return out;
        }
        let mut i = index as usize;
        for level in &self.levels {
            if let Some(sibling) = level.get(i ^ 1).filter(|_| level.len() > 1) {
                out.extend_from_slice(sibling);
            }
            i >>= 1;
        }
        out
    }

    /// Every level, leaves first: the layout [`path_positions`] indexes.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.levels.iter().flatten().flatten().copied().collect()
    }
}

/// The root of a shard's tree: its id.
pub fn root(data: &[u8]) -> Hash {
    Tree::build(data).root()
}

/// Size in bytes of the serialized tree of a shard of `size` bytes.
pub fn tree_bytes(size: u64) -> u64 {
    level_sizes(leaf_count(size)).iter().sum::<u64>() * HASH_LEN as u64
}

/// Where, counted in hashes into [`Tree::to_bytes`], the siblings of leaf
/// `index` of a tree of `n` leaves are, bottom up. Empty past the end.
pub fn path_positions(n: u64, index: u64) -> Vec<u64> {
    if index >= n.max(1) {
        return Vec::new();
    }
    let mut out = Vec::new();
    let (mut offset, mut i) = (0u64, index);
    for count in level_sizes(n) {
        let sibling = i ^ 1;
        if count > 1 && sibling < count {
            out.push(offset + sibling);
        }
        offset += count;
        i >>= 1;
    }
    out
}

/// Whether `leaf` is leaf `index` of the shard of `size` bytes whose root
/// is `root`, given the sibling path `path` (32-byte hashes, bottom up).
/// The leaf must have exactly the length its index implies.
pub fn verify(root: &Hash, size: u64, index: u64, leaf: &[u8], path: &[u8]) -> bool {
    let Some(range) = leaf_range(size, index) else {
        return false;
    };
    if leaf.len() as u64 != range.end - range.start
        || !path.len().is_multiple_of(HASH_LEN)
        || path.len() / HASH_LEN > MAX_PATH_LEN
    {
        return false;
    }
    // RFC 9162, 2.1.3.2, with fn = index and sn = last index.
    let (mut fnode, mut snode) = (index, leaf_count(size) - 1);
    let mut r = leaf_hash(leaf);
    for p in path.chunks_exact(HASH_LEN) {
        let Ok(p) = <&Hash>::try_from(p) else {
            return false;
        };
        if snode == 0 {
            return false;
        }
        if fnode & 1 == 1 || fnode == snode {
            r = node_hash(p, &r);
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    snode == 0 && r == *root
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes with no repeating pattern (xorshift64), so no two leaves or
    /// subtrees are equal by accident.
    fn data(len: usize, seed: u8) -> Vec<u8> {
        let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ seed as u64;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    /// RFC 6962's recursive definition, MTH(D[n]), written as the RFC does.
    fn mth(leaves: &[&[u8]]) -> Hash {
        match leaves.len() {
            0 => crate::crypto::content_hash(&[]),
            1 => leaf_hash(leaves[0]),
            n => {
                let k = 1usize << (usize::BITS - 1 - (n - 1).leading_zeros());
                node_hash(&mth(&leaves[..k]), &mth(&leaves[k..]))
            }
        }
    }

    const SIZES: [u64; 5] = [1, 2, 3, 5, 1000];

    #[test]
    fn root_matches_rfc6962_definition() {
        for leaves in SIZES.iter().copied().chain([4, 7, 8, 9, 1024, 1025]) {
            for short in [0u64, 1, 100] {
                let len = (leaves * LEAF_SIZE).saturating_sub(short).max(1);
                let d = data(len as usize, leaves as u8);
                let chunks: Vec<&[u8]> = d.chunks(LEAF_SIZE as usize).collect();
                assert_eq!(root(&d), mth(&chunks), "{leaves} leaves, {len} bytes");
                assert_eq!(Tree::build(&d).to_bytes().len() as u64, tree_bytes(len));
            }
        }
    }

    #[test]
    fn every_leaf_of_every_shape_verifies() {
        for leaves in SIZES {
            // Full leaves, and a last leaf shorter than 4 KiB.
            for len in [leaves * LEAF_SIZE, leaves * LEAF_SIZE - 1000] {
                let d = data(len as usize, 7);
                let tree = Tree::build(&d);
                let r = tree.root();
                assert_eq!(tree.leaves(), leaves);
                for i in 0..leaves {
                    let range = leaf_range(len, i).unwrap();
                    let leaf = &d[range.start as usize..range.end as usize];
                    let path = tree.proof(i);
                    assert!(verify(&r, len, i, leaf, &path), "{leaves} leaves, leaf {i}");
                }
                assert!(leaf_range(len, leaves).is_none());
                assert!(!verify(&r, len, leaves, &[], &[]));
            }
        }
    }

    #[test]
    fn any_flipped_bit_fails() {
        for leaves in [2u64, 3, 5, 64] {
            let len = leaves * LEAF_SIZE - 5;
            let d = data(len as usize, 3);
            let tree = Tree::build(&d);
            let r = tree.root();
            for i in 0..leaves {
                let range = leaf_range(len, i).unwrap();
                let leaf = d[range.start as usize..range.end as usize].to_vec();
                let path = tree.proof(i);
                for bit in (0..leaf.len() * 8)
                    .step_by(61)
                    .chain([0, leaf.len() * 8 - 1])
                {
                    let mut bad = leaf.clone();
                    bad[bit / 8] ^= 1 << (bit % 8);
                    assert!(!verify(&r, len, i, &bad, &path), "leaf bit {bit}");
                }
                for bit in 0..path.len() * 8 {
                    let mut bad = path.clone();
                    bad[bit / 8] ^= 1 << (bit % 8);
                    assert!(!verify(&r, len, i, &leaf, &bad), "path bit {bit}");
                }
                for bit in 0..64 {
                    let j = i ^ (1 << bit);
                    assert!(!verify(&r, len, j, &leaf, &path), "index {i} as {j}");
                }
                // A path cut short or padded fails too.
                assert!(!verify(&r, len, i, &leaf, &path[..path.len() - HASH_LEN]));
                let mut long = path.clone();
                long.extend_from_slice(&[0; HASH_LEN]);
                assert!(!verify(&r, len, i, &leaf, &long));
            }
        }
    }

    #[test]
    fn leaves_and_nodes_are_separated() {
        // Two leaves, and one leaf holding the bytes of their two leaf
        // hashes: without the separate keys, the second would share the root.
        let d = data(2 * LEAF_SIZE as usize, 1);
        let two = Tree::build(&d);
        let mut fake = Vec::new();
        fake.extend_from_slice(&leaf_hash(&d[..LEAF_SIZE as usize]));
        fake.extend_from_slice(&leaf_hash(&d[LEAF_SIZE as usize..]));
        assert_ne!(root(&fake), two.root());
        // The same holds a level up: a leaf made of two node hashes.
        let d4 = data(4 * LEAF_SIZE as usize, 2);
        let four = Tree::build(&d4);
        let level1: Vec<u8> = four.levels[1].iter().flatten().copied().collect();
        assert_ne!(root(&level1), four.root());
    }

    #[test]
    fn positions_index_the_serialized_tree() {
        let d = data(13 * LEAF_SIZE as usize, 9);
        let tree = Tree::build(&d);
        let bytes = tree.to_bytes();
        for i in 0..13 {
            let expected: Vec<u8> = path_positions(13, i)
                .iter()
                .flat_map(|&p| bytes[p as usize * 32..p as usize * 32 + 32].to_vec())
                .collect();
            assert_eq!(expected, tree.proof(i));
        }
        assert!(path_positions(13, 13).is_empty());
    }
}
