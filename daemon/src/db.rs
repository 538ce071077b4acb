//! The node's metadata database (sled): every tree is named here once, and
//! [`Tree`] gives each a key type, a value type and one serde encoding.
//!
//! Values are JSON, so ids read as hex in a dump. Writes that acknowledge
//! something to a peer or a caller flush before they return ([`Tree::insert`],
//! [`Tree::remove`], [`Tree::update`]), off the async workers
//! ([`crate::blocking`]); advisory records use
//! [`Tree::insert_lazy`] and let sled flush in the background. Blobs never go
//! in here: shard bytes are files (see `provider::store`).

use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use libp2p::PeerId;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};
use crate::ids::{ContractId, FileId, RevisionId, ShardId};

/// Every sled tree the node opens.
pub mod trees {
    /// Client: file id → manifest.
    pub const MANIFESTS: &str = "manifests";
    /// Client: contract id → its side of a contract.
    pub const CLIENT_CONTRACTS: &str = "client_contracts";
    /// Provider: contract id → its side of a contract.
    pub const PROVIDER_CONTRACTS: &str = "provider_contracts";
    /// Client: txid → payment intent, written before broadcast.
    pub const PAYMENTS: &str = "payments";
    /// Client: put operation id → the finished put's result, so a retried
    /// put returns it instead of storing and paying again.
    pub const PUT_OPS: &str = "put_ops";
    /// Client: provider peer id → the addresses it was last seen at.
    pub const PEERS: &str = "peers";
    /// Client: provider peer id → successes, failures, latency.
    pub const RELIABILITY: &str = "reliability";
    /// Client: provider peer id → audit score, counts and recent history.
    pub const AUDITS: &str = "audits";
    /// Client: shard id → the provider that failed an audit of it.
    pub const FAILED_SHARDS: &str = "failed_shards";
    /// Provider: shard id → who stored it, under which contract.
    pub const SHARDS: &str = "shards";
    /// Provider: (contract id, shard id) → shard size: a contract's shards.
    pub const CONTRACT_SHARDS: &str = "contract_shards";
    /// Provider: revision id → a quoted, not yet paid allowance.
    pub const REVISIONS: &str = "revisions";
    /// Provider: payout addresses of quotes that lapsed unpaid, reused for
    /// the next new contract so unpaid quotes cannot grow the wallet.
    pub const SPARE_ADDRESSES: &str = "spare_addresses";
    /// Provider: client peer id → the newest index pointer it handed us
    /// (hex), republished in the DHT while its contract runs.
    pub const POINTERS: &str = "index_pointers";
    /// Client: the one record of its index backup (sequence number, what
    /// was last backed up).
    pub const INDEX_BACKUP: &str = "index_backup";
    /// The BDK wallet's change sets (its own encoding, `wallet::persist`).
    pub const WALLET: &str = "wallet";
}

/// A key type of a [`Tree`]: how it is laid out as sled key bytes.
pub trait Key: Sized {
    fn to_key(&self) -> Vec<u8>;
    /// None for bytes that are not a key of this type (a corrupt entry).
    fn from_key(bytes: &[u8]) -> Option<Self>;
}

macro_rules! id_key {
    ($($t:ty),*) => {$(
        impl Key for $t {
            fn to_key(&self) -> Vec<u8> {
                self.as_bytes().to_vec()
            }
            fn from_key(bytes: &[u8]) -> Option<Self> {
                <$t>::from_slice(bytes)
            }
        }
    )*};
}
id_key!(FileId, ShardId, ContractId, RevisionId);

/// A pair of ids, laid out one after the other, so that every entry of
/// one first id is found by a prefix scan ([`Tree::iter_prefix_after`]).
impl<A: Key, B: Key> Key for (A, B) {
    fn to_key(&self) -> Vec<u8> {
        let mut k = self.0.to_key();
        k.extend(self.1.to_key());
        k
    }
    fn from_key(bytes: &[u8]) -> Option<Self> {
        // Both halves of every pair used are 32-byte ids.
        let (a, b) = bytes.split_at_checked(32)?;
        Some((A::from_key(a)?, B::from_key(b)?))
    }
}

/// A text key: spare addresses, operation ids.
impl Key for String {
    fn to_key(&self) -> Vec<u8> {
        self.as_bytes().to_vec()
    }
    fn from_key(bytes: &[u8]) -> Option<Self> {
        String::from_utf8(bytes.to_vec()).ok()
    }
}

impl Key for PeerId {
    fn to_key(&self) -> Vec<u8> {
        self.to_bytes()
    }
    fn from_key(bytes: &[u8]) -> Option<Self> {
        PeerId::from_bytes(bytes).ok()
    }
}

impl Key for bdk_wallet::bitcoin::Txid {
    fn to_key(&self) -> Vec<u8> {
        self.to_string().into_bytes()
    }
    fn from_key(bytes: &[u8]) -> Option<Self> {
        std::str::from_utf8(bytes).ok()?.parse().ok()
    }
}

/// Opens the node's database at `path`.
pub fn open(path: &std::path::Path) -> Result<sled::Db> {
    // Metadata is small; sled's default 1 GiB page cache is not.
    Ok(sled::Config::new()
        .path(path)
        .cache_capacity(32 << 20)
        .open()?)
}

/// Marks the key and value types without owning either (so a `Tree` is
/// `Send` and `Sync` whatever they are).
type Types<K, V> = PhantomData<fn(K, V) -> (K, V)>;

/// One sled tree with typed keys and JSON values.
pub struct Tree<K, V> {
    tree: sled::Tree,
    /// Writes through this handle and its clones, so a watcher can tell
    /// cheaply that something changed ([`Tree::changes`]).
    changes: Arc<AtomicU64>,
    _types: Types<K, V>,
}

impl<K, V> Clone for Tree<K, V> {
    fn clone(&self) -> Self {
        Tree {
            tree: self.tree.clone(),
            changes: self.changes.clone(),
            _types: PhantomData,
        }
    }
}

/// A stored record's value, as every read decodes it.
pub(crate) fn decode<V: DeserializeOwned>(bytes: &[u8]) -> Result<V> {
    serde_json::from_slice(bytes).map_err(|e| Error::CorruptRecord(e.to_string()))
}

/// One raw sled entry as a typed (key, value).
fn decode_entry<K: Key, V: DeserializeOwned>(
    item: sled::Result<(sled::IVec, sled::IVec)>,
) -> Result<(K, V)> {
    let (k, v) = item?;
    let key = K::from_key(&k)
        .ok_or_else(|| Error::CorruptRecord(format!("bad key {}", hex::encode(&k))))?;
    Ok((key, decode(&v)?))
}

fn encode<V: Serialize>(v: &V) -> Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| Error::Internal(format!("encoding a record: {e}")))
}

impl<K: Key, V: Serialize + DeserializeOwned> Tree<K, V> {
    /// Opens the tree `name` (one of [`trees`]).
    pub fn open(db: &sled::Db, name: &'static str) -> Result<Self> {
        Ok(Tree {
            tree: db.open_tree(name)?,
            changes: Arc::default(),
            _types: PhantomData,
        })
    }

    /// How many writes this handle and its clones have made: a counter
    /// that moves whenever the tree may have changed.
    pub fn changes(&self) -> u64 {
        self.changes.load(Ordering::Relaxed)
    }

    fn changed(&self) {
        self.changes.fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self, key: &K) -> Result<Option<V>> {
        self.tree.get(key.to_key())?.map(|v| decode(&v)).transpose()
    }

    pub fn contains(&self, key: &K) -> Result<bool> {
        Ok(self.tree.contains_key(key.to_key())?)
    }

    /// Durable before it returns.
    pub fn insert(&self, key: &K, value: &V) -> Result<()> {
        self.insert_lazy(key, value)?;
        self.flush()
    }

    /// Written, but flushed by sled in the background: for advisory
    /// records that are not worth an fsync each.
    pub fn insert_lazy(&self, key: &K, value: &V) -> Result<()> {
        self.tree.insert(key.to_key(), encode(value)?)?;
        self.changed();
        Ok(())
    }

    /// Durable before it returns.
    pub fn remove(&self, key: &K) -> Result<()> {
        self.remove_lazy(key)?;
        self.flush()
    }

    /// Removed, not yet flushed: for batches that end with [`Tree::flush`].
    pub fn remove_lazy(&self, key: &K) -> Result<()> {
        self.tree.remove(key.to_key())?;
        self.changed();
        Ok(())
    }

    /// Makes every write so far durable. An fsync, so it runs through
    /// [`crate::blocking`].
    pub fn flush(&self) -> Result<()> {
        crate::blocking::run(|| self.tree.flush())?;
        Ok(())
    }

    /// Applies `f` to a stored value and saves it atomically (a
    /// compare-and-swap loop, so a concurrent update is never lost; `f` may
    /// run more than once). Durable before it returns; None if absent.
    pub fn update(&self, key: &K, mut f: impl FnMut(&mut V)) -> Result<Option<V>> {
        let k = key.to_key();
        loop {
            let Some(old) = self.tree.get(&k)? else {
                return Ok(None);
            };
            let mut v: V = decode(&old)?;
            f(&mut v);
            let new = encode(&v)?;
            if self
                .tree
                .compare_and_swap(&k, Some(old), Some(new))?
                .is_ok()
            {
                self.changed();
                self.flush()?;
                return Ok(Some(v));
            }
        }
    }

    /// Applies `f` to the stored value, or to the default when there is
    /// none or it does not decode, atomically but without a flush: for
    /// advisory counters.
    pub fn upsert_lazy(&self, key: &K, f: impl Fn(&mut V)) -> Result<()>
    where
        V: Default,
    {
        self.tree.fetch_and_update(key.to_key(), |old| {
            let mut v: V = old
                .and_then(|bytes| serde_json::from_slice(bytes).ok())
                .unwrap_or_default();
            f(&mut v);
            serde_json::to_vec(&v).ok()
        })?;
        Ok(())
    }

    /// Every entry, in key order. A record that does not decode is an
    /// error, so corruption is reported rather than skipped.
    pub fn iter(&self) -> impl Iterator<Item = Result<(K, V)>> + '_ {
        self.tree.iter().map(decode_entry)
    }

    /// The entries whose key starts with `prefix`'s key bytes and comes
    /// after `after`'s (or every one, if none), in order: a page's walk
    /// resumes where the last page ended without scanning what it saw.
    pub fn iter_prefix_after(
        &self,
        prefix: &impl Key,
        after: Option<&K>,
    ) -> impl Iterator<Item = Result<(K, V)>> + '_ {
        use std::ops::Bound;
        let prefix = prefix.to_key();
        let start = match after {
            Some(k) => Bound::Excluded(k.to_key()),
            None => Bound::Included(prefix.clone()),
        };
        self.tree
            .range::<Vec<u8>, _>((start, Bound::Unbounded))
            .take_while(move |r| r.as_ref().map_or(true, |(k, _)| k.starts_with(&prefix)))
            .map(decode_entry)
    }

    /// Every value, in key order. A whole-tree scan may read from disk,
    /// so it runs through [`crate::blocking`].
    pub fn values(&self) -> Result<Vec<V>> {
        crate::blocking::run(|| self.iter().map(|r| r.map(|(_, v)| v)).collect())
    }

    pub fn len(&self) -> usize {
        self.tree.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tree.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_round_trip_update_and_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let t: Tree<FileId, Vec<u32>> = Tree::open(&db, "test").unwrap();
        let id = FileId::from_bytes([1; 32]);
        assert_eq!(t.get(&id).unwrap(), None);
        t.insert(&id, &vec![1, 2]).unwrap();
        assert_eq!(t.get(&id).unwrap(), Some(vec![1, 2]));
        let v = t.update(&id, |v| v.push(3)).unwrap();
        assert_eq!(v, Some(vec![1, 2, 3]));
        assert_eq!(t.iter().count(), 1);
        assert!(
            t.update(&FileId::from_bytes([2; 32]), |_| ())
                .unwrap()
                .is_none()
        );
        // A record that is not what the tree holds is reported, not skipped.
        db.open_tree("test")
            .unwrap()
            .insert(b"short", b"{")
            .unwrap();
        assert!(t.values().is_err());
        t.remove(&id).unwrap();
        assert!(!t.contains(&id).unwrap());
    }
}
