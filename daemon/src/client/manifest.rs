//! What the client must remember to get a file back: its manifest.
//!
//! A segment holds a list of shards so that erasure coding can later spread
//! one segment over several providers without changing the format.

use libp2p::PeerId;
use serde::{Deserialize, Serialize};

use crate::crypto::{NONCE_LEN, TAG_LEN};
use crate::db::{Tree, trees};
use crate::erasure::{MAX_SHARDS, Scheme};
use crate::error::{Error, Result};
use crate::ids::{ContractId, FileId, ShardId, as_text};
use crate::protocol::{Receipt, SEGMENT_SIZE};

/// 3: shard ids are Merkle roots (protocol 2); older manifests name shards
/// by SHA-256 and cannot be audited, so they are refused as corrupt.
/// 4: a file has a term, and a content digest for deduplication.
/// 5: shard ids and the content digest are BLAKE3 (protocol 4).
pub const MANIFEST_VERSION: u32 = 5;

/// How long a file is kept (and paid for).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Term {
    /// Until this height; then the client stops paying and forgets it.
    Until(u32),
    /// Renewed for as long as the file exists.
    Keep,
}

/// What a stored file is to the client.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FileKind {
    /// A user's file: listed, got and removed by the user.
    #[default]
    File,
    /// A backup of the client's own index (`client::backup`): stored,
    /// paid for and audited like a file, but not listed.
    Index,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ShardRef {
    /// Position in the segment's erasure code: 0..k data, k..n parity.
    pub index: u16,
    pub shard_id: ShardId,
    pub size: u64,
    #[serde(with = "as_text")]
    pub provider: PeerId,
    pub contract_id: ContractId,
    pub receipt: Receipt,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Segment {
    #[serde(with = "hex::serde")]
    pub nonce: [u8; NONCE_LEN],
    /// Plaintext length, so a file's layout is explicit, not inferred.
    pub plain_len: u64,
    /// Sealed length; shards carry it padded to equal sizes.
    pub cipher_len: u64,
    pub shards: Vec<ShardRef>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Manifest {
    pub version: u32,
    pub file_id: FileId,
    pub name: String,
    pub size: u64,
    pub created_at: u64,
    pub segment_size: u64,
    pub scheme: Scheme,
    pub term: Term,
    /// Manifests from before index backups have none: they are files.
    #[serde(default)]
    pub kind: FileKind,
    /// SHA-256 over the segments' plaintext SHA-256s: equal for equal
    /// content, so a put of a file already stored can be spotted.
    #[serde(with = "hex::serde")]
    pub content_digest: [u8; 32],
    pub segments: Vec<Segment>,
}

impl Manifest {
    /// Distinct providers holding this file, in first-use order.
    pub fn providers(&self) -> Vec<PeerId> {
        let mut out: Vec<PeerId> = Vec::new();
        for s in self.segments.iter().flat_map(|s| &s.shards) {
            if !out.contains(&s.provider) {
                out.push(s.provider);
            }
        }
        out
    }

    /// Checks the internal consistency a get relies on.
    pub fn validate(&self) -> Result<()> {
        let bad = || Error::CorruptManifest(self.file_id);
        let s = self.scheme;
        if self.version != MANIFEST_VERSION
            || s.k == 0
            || s.k > s.n
            || s.n > MAX_SHARDS
            || self.segment_size != SEGMENT_SIZE as u64
        {
            return Err(bad());
        }
        let n = s.n as usize;
        let mut total = 0u64;
        for seg in &self.segments {
            total = total.checked_add(seg.plain_len).ok_or_else(bad)?;
            let cipher = seg.plain_len.checked_add(TAG_LEN as u64).ok_or_else(bad)?;
            let shard_len = s.shard_len(cipher as usize) as u64;
            let mut seen = vec![false; n];
            let shards_ok = seg.shards.len() == n
                && seg.shards.iter().all(|r| {
                    let i = r.index as usize;
                    i < n && !std::mem::replace(&mut seen[i], true) && r.size == shard_len
                });
            if seg.plain_len > self.segment_size || seg.cipher_len != cipher || !shards_ok {
                return Err(bad());
            }
        }
        if total != self.size {
            return Err(bad());
        }
        Ok(())
    }
}

/// Manifests keyed by file id in the client's sled database.
#[derive(Clone)]
pub struct ManifestStore {
    tree: Tree<FileId, Manifest>,
}

impl ManifestStore {
    pub fn open(db: &sled::Db) -> Result<Self> {
        Ok(ManifestStore {
            tree: Tree::open(db, trees::MANIFESTS)?,
        })
    }

    /// Durable before it returns: a put is not reported done otherwise.
    pub fn insert(&self, m: &Manifest) -> Result<()> {
        self.tree.insert(&m.file_id, m)
    }

    pub fn get(&self, id: &FileId) -> Result<Manifest> {
        self.tree
            .get(id)?
            .ok_or_else(|| Error::FileNotFound(id.to_string()))
    }

    pub fn remove(&self, id: &FileId) -> Result<()> {
        self.tree.remove(id)
    }

    /// Every manifest, index backups among them: what is paid for,
    /// audited and repaired.
    pub fn list(&self) -> Result<Vec<Manifest>> {
        let mut out = self.tree.values()?;
        out.sort_by_key(|m: &Manifest| m.created_at);
        Ok(out)
    }

    /// Moves whenever a manifest may have changed.
    pub fn changes(&self) -> u64 {
        self.tree.changes()
    }

    /// The user's files: every manifest but index backups.
    pub fn files(&self) -> Result<Vec<Manifest>> {
        let mut out = self.list()?;
        out.retain(|m| m.kind == FileKind::File);
        Ok(out)
    }
}

/// A manifest for tests and fuzz seeds.
#[cfg(any(test, feature = "fuzz"))]
impl Manifest {
    pub fn sample() -> Manifest {
        let provider = libp2p::identity::Keypair::generate_ed25519();
        let (contract, shard) = (
            ContractId::from_bytes([3; 32]),
            ShardId::from_bytes([4; 32]),
        );
        let receipt = Receipt::sign(&provider, contract, shard, 20, &PeerId::random(), 1)
            .expect("a receipt signs");
        Manifest {
            version: MANIFEST_VERSION,
            file_id: FileId::from_bytes([1; 32]),
            name: "a.bin".into(),
            size: 10,
            created_at: 5,
            segment_size: SEGMENT_SIZE as u64,
            scheme: Scheme::LOW,
            term: Term::Until(1000),
            kind: FileKind::File,
            content_digest: [5; 32],
            segments: vec![Segment {
                nonce: [2; NONCE_LEN],
                plain_len: 10,
                cipher_len: 26,
                shards: vec![ShardRef {
                    index: 0,
                    shard_id: shard,
                    size: 26,
                    provider: provider.public().to_peer_id(),
                    contract_id: contract,
                    receipt,
                }],
            }],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn persists_and_validates() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let store = ManifestStore::open(&db).unwrap();
        let m = Manifest::sample();
        m.validate().unwrap();
        store.insert(&m).unwrap();
        assert_eq!(store.get(&m.file_id).unwrap(), m);
        assert_eq!(store.list().unwrap().len(), 1);
        assert_eq!(m.providers().len(), 1);
        store.remove(&m.file_id).unwrap();
        assert!(matches!(store.get(&m.file_id), Err(Error::FileNotFound(_))));
        let mut bad = m.clone();
        bad.size = 11;
        assert!(bad.validate().is_err());
    }
}
