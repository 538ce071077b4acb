//! The provider's shard store: shard bytes as content-addressed files, their
//! metadata in sled, and a quota counted in bytes actually stored.
//!
//! Beside each shard file `<id>` lies `<id>.tree`, its Merkle tree
//! ([`merkle::Tree::to_bytes`]), so that an audit reads one leaf of the
//! shard and the path's few hashes, never the whole shard.
//!
//! A shard is acknowledged only after its file is fsynced, renamed into
//! place (its directory fsynced), and its index entries flushed, so a
//! receipt always means durable. Its tree is not fsynced: it is derived
//! from the shard, so a tree lost or torn by a crash is rebuilt, at start-up
//! when its length is wrong and at the first proof that does not check
//! out against the shard's id. That saves two of a shard's five fsyncs. Two index trees: shard → [`ShardMeta`] (who may fetch
//! it) and (contract, shard) → size (what a contract holds).

use std::fs;
use std::io::Write;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use libp2p::PeerId;
use serde::{Deserialize, Serialize};

use crate::crypto::random_bytes;
use crate::db::{Tree, trees};
use crate::error::{Error, Result};
use crate::ids::{ContractId, ShardId, as_text};
use crate::merkle::{self, HASH_LEN};
use crate::perf::{self, Stage};
use crate::protocol::{AuditAnswer, Challenge, MAX_SHARD_BYTES, WireError, WireErrorKind};

/// Suffix of the file holding a shard's Merkle tree.
const TREE_SUFFIX: &str = ".tree";
/// Where uploads are written before they are renamed into place.
const TMP_DIR: &str = "tmp";
/// Where start-up moves shard files the index does not know.
pub const QUARANTINE_DIR: &str = "quarantine";
/// How long a quarantined file is kept.
pub const QUARANTINE_KEEP: std::time::Duration = std::time::Duration::from_secs(30 * 24 * 3600);

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ShardMeta {
    pub contract_id: ContractId,
    /// The client that stored it: the only peer served.
    #[serde(with = "as_text")]
    pub owner: PeerId,
    pub size: u64,
    pub stored_at: u64,
}

pub struct ShardStore {
    dir: PathBuf,
    index: Tree<ShardId, ShardMeta>,
    by_contract: Tree<(ContractId, ShardId), u64>,
    capacity: u64,
    /// Bytes stored or reserved by uploads in progress.
    used: Mutex<u64>,
    /// Index flushes asked for, and the last ticket a flush covered; the
    /// lock is held across the flush ([`ShardStore::flush_index`]).
    flush_requests: AtomicU64,
    flushed: Mutex<u64>,
}

pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn wire(kind: WireErrorKind, msg: impl Into<String>) -> WireError {
    WireError::new(kind, msg)
}

fn internal(e: impl std::fmt::Display) -> WireError {
    wire(WireErrorKind::Internal, e.to_string())
}

impl ShardStore {
    pub fn open(db: &sled::Db, dir: &Path, capacity: u64) -> Result<Self> {
        fs::create_dir_all(dir.join(TMP_DIR))?;
        fs::create_dir_all(dir.join(QUARANTINE_DIR))?;
        // Leftovers of uploads interrupted by a crash were never acknowledged.
        for entry in fs::read_dir(dir.join(TMP_DIR))? {
            let _ = fs::remove_file(entry?.path());
        }
        let index = Tree::open(db, trees::SHARDS)?;
        let store = ShardStore {
            dir: dir.to_path_buf(),
            index,
            by_contract: Tree::open(db, trees::CONTRACT_SHARDS)?,
            capacity,
            used: Mutex::new(0),
            flush_requests: AtomicU64::new(0),
            flushed: Mutex::new(0),
        };
        let used = store.reconcile()?;
        *store
            .used
            .lock()
            .map_err(|_| Error::Internal("poisoned".into()))? = used;
        Ok(store)
    }

    /// Moves a shard file the index does not know into [`QUARANTINE_DIR`]
    /// instead of deleting it: it is most likely an upload never
    /// acknowledged or a delete cut short, but after a database restored
    /// from a backup or rolled back it is paid data, which an operator can
    /// still put back. Kept [`QUARANTINE_KEEP`], then pruned at start-up.
    fn quarantine(&self, path: &Path) -> Result<()> {
        let Some(name) = path.file_name() else {
            return Ok(());
        };
        let dest = self.dir.join(QUARANTINE_DIR).join(name);
        tracing::warn!(file = %path.display(), to = %dest.display(), "quarantining a shard file the index does not know");
        fs::rename(path, &dest)?;
        Ok(())
    }

    /// Prunes quarantined files older than [`QUARANTINE_KEEP`].
    fn prune_quarantine(&self) -> Result<()> {
        for entry in fs::read_dir(self.dir.join(QUARANTINE_DIR))? {
            let entry = entry?;
            let old = entry
                .metadata()?
                .modified()?
                .elapsed()
                .is_ok_and(|age| age > QUARANTINE_KEEP);
            if old {
                tracing::info!(file = %entry.path().display(), "pruning a quarantined file");
                fs::remove_file(entry.path())?;
            }
        }
        Ok(())
    }

    /// Makes the files and the index agree after a crash: a file with no
    /// entry was never acknowledged, or its delete was cut short, or the
    /// database lost it, and is quarantined ([`ShardStore::quarantine`]);
    /// an entry with no file is dropped, so its bytes stop counting against
    /// the quota. Returns the bytes stored.
    fn reconcile(&self) -> Result<u64> {
        self.prune_quarantine()?;
        for sub in fs::read_dir(&self.dir)? {
            let sub = sub?;
            let name = sub.file_name();
            if name == TMP_DIR || name == QUARANTINE_DIR || !sub.file_type()?.is_dir() {
                continue;
            }
            for f in fs::read_dir(sub.path())? {
                let f = f?;
                let id = f.file_name().to_str().and_then(|n| {
                    n.strip_suffix(TREE_SUFFIX)
                        .unwrap_or(n)
                        .parse::<ShardId>()
                        .ok()
                });
                let known = match id {
                    Some(id) => self.index.contains(&id)?,
                    None => false,
                };
                if !known {
                    self.quarantine(&f.path())?;
                }
            }
        }
        let mut used = 0u64;
        for item in self.index.iter() {
            let (id, meta) = item?;
            if !self.path(&id).exists() {
                tracing::warn!(shard = %id, "index entry without its file; dropping it");
                self.index.remove_lazy(&id)?;
                self.by_contract.remove_lazy(&(meta.contract_id, id))?;
                let _ = fs::remove_file(self.tree_path(&id));
                continue;
            }
            let tree_len = fs::metadata(self.tree_path(&id)).map(|m| m.len()).ok();
            if tree_len != Some(merkle::tree_bytes(meta.size)) {
                // Audits need it; the shard has it all, if it is intact.
                tracing::warn!(shard = %id, "rebuilding a missing or cut Merkle tree");
                match fs::read(self.path(&id)) {
                    Ok(data) if ShardId::of(&data) == id => {
                        self.write_tree(&id, &merkle::Tree::build(&data))?
                    }
                    _ => tracing::warn!(shard = %id, "shard no longer matches its id"),
                }
            }
            // The two trees are written together but not atomically: a
            // crash may leave this entry missing.
            let key = (meta.contract_id, id);
            if self.by_contract.get(&key)?.is_none() {
                self.by_contract.insert_lazy(&key, &meta.size)?;
            }
            used = used.saturating_add(meta.size);
        }
        for item in self.by_contract.iter() {
            let ((contract, id), _) = item?;
            if self
                .index
                .get(&id)?
                .is_none_or(|m| m.contract_id != contract)
            {
                self.by_contract.remove_lazy(&(contract, id))?;
            }
        }
        self.index.flush()?;
        Ok(used)
    }

    pub fn path(&self, id: &ShardId) -> PathBuf {
        let hex = id.to_string();
        self.dir.join(&hex[..2]).join(hex)
    }

    /// The shard's path with [`TREE_SUFFIX`]: beside it, in its directory.
    pub fn tree_path(&self, id: &ShardId) -> PathBuf {
        let mut path = self.path(id).into_os_string();
        path.push(TREE_SUFFIX);
        path.into()
    }

    pub fn used(&self) -> u64 {
        self.used.lock().map(|u| *u).unwrap_or(u64::MAX)
    }

    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    pub fn free(&self) -> u64 {
        self.capacity.saturating_sub(self.used())
    }

    /// Shards held. Counts the index (sled's `len` walks it), so it is
    /// for occasional reads such as a metrics scrape.
    pub fn shards(&self) -> u64 {
        self.index.len() as u64
    }

    pub fn meta(&self, id: &ShardId) -> Result<Option<ShardMeta>> {
        self.index.get(id)
    }

    fn reserve(&self, size: u64) -> Result<(), WireError> {
        let mut used = self.used.lock().map_err(internal)?;
        let total = used
            .checked_add(size)
            .ok_or_else(|| wire(WireErrorKind::NoSpace, "size overflow"))?;
        if total > self.capacity {
            return Err(wire(
                WireErrorKind::NoSpace,
                format!(
                    "need {size} bytes, {} free",
                    self.capacity.saturating_sub(*used)
                ),
            ));
        }
        *used = total;
        Ok(())
    }

    fn release(&self, size: u64) {
        if let Ok(mut used) = self.used.lock() {
            *used = used.saturating_sub(size);
        }
    }

    /// Verifies and durably stores one shard. Storing the same shard again
    /// for the same owner and contract is a no-op, so a client may safely
    /// retry; the flag says whether the bytes are new to the contract.
    pub fn store(
        &self,
        owner: &PeerId,
        contract_id: ContractId,
        shard_id: ShardId,
        data: &[u8],
    ) -> Result<(ShardMeta, bool), WireError> {
        let size = data.len() as u64;
        if size > MAX_SHARD_BYTES {
            return Err(wire(
                WireErrorKind::TooLarge,
                format!("shard of {size} bytes exceeds {MAX_SHARD_BYTES}"),
            ));
        }
        let tree = perf::time(Stage::Verify, || merkle::Tree::build(data));
        if tree.root() != *shard_id.as_bytes() {
            return Err(wire(
                WireErrorKind::HashMismatch,
                "shard bytes do not match the shard id (their Merkle root)",
            ));
        }
        if let Some(existing) = self.meta(&shard_id).map_err(internal)? {
            if existing.owner != *owner || existing.contract_id != contract_id {
                return Err(wire(
                    WireErrorKind::Forbidden,
                    "shard id already held under another contract",
                ));
            }
            // A retry: a receipt must still mean the bytes are on disk.
            if self.intact(&shard_id) {
                return Ok((existing, false));
            }
            let meta = ShardMeta {
                stored_at: now_secs(),
                ..existing
            };
            return self
                .write(&shard_id, data, &tree, &meta)
                .map(|()| (meta, false))
                .map_err(internal);
        }
        self.reserve(size)?;
        let meta = ShardMeta {
            contract_id,
            owner: *owner,
            size,
            stored_at: now_secs(),
        };
        match self.write(&shard_id, data, &tree, &meta) {
            Ok(()) => Ok((meta, true)),
            Err(e) => {
                self.release(size);
                let _ = fs::remove_file(self.path(&shard_id));
                let _ = fs::remove_file(self.tree_path(&shard_id));
                Err(internal(e))
            }
        }
    }

    /// The tree goes first: a shard file in place always has its tree.
    fn write(
        &self,
        shard_id: &ShardId,
        data: &[u8],
        tree: &merkle::Tree,
        meta: &ShardMeta,
    ) -> Result<()> {
        self.write_tree(shard_id, tree)?;
        self.write_file(&self.path(shard_id), data, true)?;
        self.put_meta(shard_id, meta)
    }

    /// Not fsynced: see the module doc.
    fn write_tree(&self, shard_id: &ShardId, tree: &merkle::Tree) -> Result<()> {
        self.write_file(&self.tree_path(shard_id), &tree.to_bytes(), false)
    }

    /// Writes through a temp file renamed into place, so the file is
    /// absent or whole; when `durable`, fsyncs it and its directory first,
    /// so it is also there after a crash.
    fn write_file(&self, final_path: &Path, data: &[u8], durable: bool) -> Result<()> {
        let parent = final_path
            .parent()
            .ok_or_else(|| Error::Internal("shard path has no parent".into()))?;
        if !parent.is_dir() {
            fs::create_dir_all(parent)?;
            // The new subdirectory's own entry must survive a crash too.
            perf::time(Stage::Fsync, || fs::File::open(&self.dir)?.sync_all())?;
        }
        let tmp = self
            .dir
            .join(TMP_DIR)
            .join(hex::encode(random_bytes::<16>()?));
        let mut f = fs::File::create(&tmp)?;
        perf::time(Stage::Write, || f.write_all(data))?;
        if durable {
            perf::time(Stage::Fsync, || f.sync_data())?;
        }
        drop(f);
        fs::rename(&tmp, final_path)?;
        if durable {
            perf::time(Stage::Fsync, || fs::File::open(parent)?.sync_all())?;
        }
        Ok(())
    }

    fn put_meta(&self, shard_id: &ShardId, meta: &ShardMeta) -> Result<()> {
        self.by_contract
            .insert_lazy(&(meta.contract_id, *shard_id), &meta.size)?;
        self.index.insert_lazy(shard_id, meta)?;
        perf::time(Stage::Fsync, || self.flush_index())
    }

    /// Group commit: flushes the index so that every write made before the
    /// call is durable, sharing one flush among concurrent uploads. A
    /// caller that finds a flush started after its write already finished
    /// returns without another.
    fn flush_index(&self) -> Result<()> {
        let ticket = self.flush_requests.fetch_add(1, Ordering::SeqCst) + 1;
        let mut flushed = self
            .flushed
            .lock()
            .map_err(|_| Error::Internal("poisoned".into()))?;
        if *flushed >= ticket {
            return Ok(());
        }
        // Every write whose ticket is at most this one came before it.
        let upto = self.flush_requests.load(Ordering::SeqCst);
        self.index.flush()?;
        *flushed = upto;
        Ok(())
    }

    /// The shards held under a contract, with their sizes.
    pub fn contract_shards(&self, contract_id: &ContractId) -> Result<Vec<(ShardId, u64)>> {
        Ok(self.contract_shards_page(contract_id, None, usize::MAX)?.0)
    }

    /// One page of the shards held under a contract, after `after` in id
    /// order: at most `limit`, and whether more follow.
    pub fn contract_shards_page(
        &self,
        contract_id: &ContractId,
        after: Option<ShardId>,
        limit: usize,
    ) -> Result<(Vec<(ShardId, u64)>, bool)> {
        let after = after.map(|id| (*contract_id, id));
        let mut page = Vec::new();
        for r in self
            .by_contract
            .iter_prefix_after(contract_id, after.as_ref())
        {
            let ((_, id), size) = r?;
            if page.len() == limit {
                return Ok((page, true));
            }
            page.push((id, size));
        }
        Ok((page, false))
    }

    /// Deletes every shard held under a contract; returns (count, bytes).
    pub fn delete_contract(
        &self,
        owner: &PeerId,
        contract_id: &ContractId,
    ) -> Result<(u64, u64), WireError> {
        let ids: Vec<ShardId> = self
            .contract_shards(contract_id)
            .map_err(internal)?
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        self.delete(owner, contract_id, &ids)
    }

    /// Returns a shard's bytes, only to the client that stored it. Other
    /// peers get NotFound, so shard ids leak nothing about who stores what.
    pub fn fetch(&self, requester: &PeerId, shard_id: &ShardId) -> Result<Vec<u8>, WireError> {
        let not_found = || wire(WireErrorKind::NotFound, format!("no shard {shard_id}"));
        let meta = self
            .meta(shard_id)
            .map_err(internal)?
            .ok_or_else(not_found)?;
        if meta.owner != *requester {
            return Err(not_found());
        }
        fs::read(self.path(shard_id)).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => not_found(),
            _ => internal(e),
        })
    }

    /// Deletes the requester's shards of one contract; returns how many,
    /// and their bytes.
    pub fn delete(
        &self,
        requester: &PeerId,
        contract_id: &ContractId,
        shard_ids: &[ShardId],
    ) -> Result<(u64, u64), WireError> {
        // Index entries go first and durably, files after: a crash in
        // between leaves orphan files (harmless), never entries without bytes.
        let mut gone = Vec::new();
        for id in shard_ids {
            let Some(meta) = self.meta(id).map_err(internal)? else {
                continue;
            };
            if meta.owner != *requester || meta.contract_id != *contract_id {
                continue;
            }
            self.index.remove_lazy(id).map_err(internal)?;
            self.by_contract
                .remove_lazy(&(*contract_id, *id))
                .map_err(internal)?;
            gone.push((*id, meta.size));
        }
        self.index.flush().map_err(internal)?;
        // Entries gone, files still there: start-up quarantines them.
        crate::failpoint::hit("delete-after-index");
        for (id, size) in &gone {
            for path in [self.path(id), self.tree_path(id)] {
                match fs::remove_file(path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(internal(e)),
                }
            }
            self.release(*size);
        }
        Ok((gone.len() as u64, gone.iter().map(|(_, s)| s).sum()))
    }

    /// Answers an audit's challenges, already checked for count and
    /// duplicates, with positioned reads: one leaf of the shard and the
    /// path's hashes from its tree. A shard that is not the requester's
    /// under this contract, or whose bytes are gone, is `Missing`; a leaf
    /// past a shard's end refuses the whole request.
    pub fn prove(
        &self,
        requester: &PeerId,
        contract_id: &ContractId,
        challenges: &[Challenge],
    ) -> Result<Vec<AuditAnswer>, WireError> {
        // Every challenge is checked before any disk is read.
        let mut ranges = Vec::with_capacity(challenges.len());
        for c in challenges {
            let meta = self
                .meta(&c.shard_id)
                .map_err(internal)?
                .filter(|m| m.owner == *requester && m.contract_id == *contract_id);
            let range = match &meta {
                Some(m) => Some(merkle::leaf_range(m.size, c.leaf as u64).ok_or_else(|| {
                    wire(
                        WireErrorKind::BadRequest,
                        format!(
                            "shard {} has {} leaves; leaf {} asked",
                            c.shard_id.short(),
                            merkle::leaf_count(m.size),
                            c.leaf
                        ),
                    )
                })?),
                None => None,
            };
            ranges.push(meta.zip(range));
        }
        Ok(challenges
            .iter()
            .zip(ranges)
            .map(|(c, found)| match found {
                Some((m, range)) => self.read_proof(&c.shard_id, m.size, c.leaf as u64, range),
                None => AuditAnswer::Missing,
            })
            .collect())
    }

    /// Leaf `index` (at `range`) of a shard of `size` bytes and its path,
    /// or `Missing` when either cannot be read whole.
    ///
    /// The provider checks its own proof first: a tree torn by a crash
    /// (it is never fsynced) is rebuilt from the shard and read again, so
    /// only a shard that really lost bytes fails an audit.
    fn read_proof(&self, id: &ShardId, size: u64, index: u64, range: Range<u64>) -> AuditAnswer {
        let read = || -> std::io::Result<(Vec<u8>, Vec<u8>)> {
            let mut leaf = vec![0u8; (range.end - range.start) as usize];
            fs::File::open(self.path(id))?.read_exact_at(&mut leaf, range.start)?;
            let tree = fs::File::open(self.tree_path(id))?;
            let positions = merkle::path_positions(merkle::leaf_count(size), index);
            let mut path = vec![0u8; positions.len() * HASH_LEN];
            for (p, out) in positions.iter().zip(path.chunks_exact_mut(HASH_LEN)) {
                tree.read_exact_at(out, p * HASH_LEN as u64)?;
            }
            Ok((leaf, path))
        };
        let checked = || {
            let (leaf, path) = read()?;
            if merkle::verify(id.as_bytes(), size, index, &leaf, &path) {
                return Ok((leaf, path));
            }
            tracing::warn!(shard = %id.short(), "proof does not check out; rebuilding the Merkle tree");
            match fs::read(self.path(id)) {
                Ok(data) if ShardId::of(&data) == *id => self
                    .write_tree(id, &merkle::Tree::build(&data))
                    .map_err(std::io::Error::other)?,
                // The shard itself lost bytes: answer what it holds.
                _ => return Ok((leaf, path)),
            }
            read()
        };
        match checked() {
            Ok((leaf, path)) => AuditAnswer::Proof { leaf, path },
            Err(e) => {
                tracing::warn!(shard = %id.short(), leaf = index, "cannot prove: {e}");
                AuditAnswer::Missing
            }
        }
    }

    /// Whether the shard's file is present and still hashes to its id.
    fn intact(&self, id: &ShardId) -> bool {
        self.tree_path(id).exists() && fs::read(self.path(id)).is_ok_and(|d| ShardId::of(&d) == *id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cid(n: u8) -> ContractId {
        ContractId::from_bytes([n; 32])
    }

    fn sid(data: &[u8]) -> ShardId {
        ShardId::of(data)
    }

    fn store(capacity: u64) -> (tempfile::TempDir, ShardStore) {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path().join("db")).unwrap();
        let s = ShardStore::open(&db, &dir.path().join("shards"), capacity).unwrap();
        (dir, s)
    }

    #[test]
    fn store_fetch_delete() {
        let (_d, s) = store(1000);
        let owner = PeerId::random();
        let data = b"ciphertext".to_vec();
        let id = sid(&data);
        s.store(&owner, cid(1), id, &data).unwrap();
        assert_eq!(s.used(), data.len() as u64);
        assert_eq!(s.fetch(&owner, &id).unwrap(), data);
        // Idempotent retry does not double-count.
        s.store(&owner, cid(1), id, &data).unwrap();
        assert_eq!(s.used(), data.len() as u64);
        // Another peer can neither read nor delete it.
        let other = PeerId::random();
        assert_eq!(
            s.fetch(&other, &id).unwrap_err().kind,
            WireErrorKind::NotFound
        );
        let n = data.len() as u64;
        assert_eq!(s.contract_shards(&cid(1)).unwrap(), vec![(id, n)]);
        assert_eq!(s.delete(&other, &cid(1), &[id]).unwrap(), (0, 0));
        assert_eq!(s.delete(&owner, &cid(2), &[id]).unwrap(), (0, 0));
        assert_eq!(s.delete(&owner, &cid(1), &[id]).unwrap(), (1, n));
        assert!(s.contract_shards(&cid(1)).unwrap().is_empty());
        assert_eq!(s.used(), 0);
        assert!(!s.path(&id).exists());
    }

    /// Pages walk one contract's shards in id order, resume after the last
    /// id seen, and never run into the next contract's.
    #[test]
    fn contract_pages_resume_and_stay_in_their_contract() {
        let (_d, s) = store(10_000);
        let owner = PeerId::random();
        let mut mine = Vec::new();
        for i in 0..5u8 {
            let data = vec![i; 10 + i as usize];
            s.store(&owner, cid(1), sid(&data), &data).unwrap();
            mine.push((sid(&data), data.len() as u64));
            let other = vec![i; 100];
            s.store(&owner, cid(2), sid(&other), &other).unwrap();
        }
        mine.sort();
        let (first, more) = s.contract_shards_page(&cid(1), None, 2).unwrap();
        assert_eq!((first.as_slice(), more), (&mine[..2], true));
        let (second, more) = s
            .contract_shards_page(&cid(1), Some(first[1].0), 2)
            .unwrap();
        assert_eq!((second.as_slice(), more), (&mine[2..4], true));
        let (last, more) = s
            .contract_shards_page(&cid(1), Some(second[1].0), 2)
            .unwrap();
        assert_eq!((last.as_slice(), more), (&mine[4..], false));
        let (all, more) = s.contract_shards_page(&cid(1), None, 5).unwrap();
        assert_eq!((all, more), (mine, false));
        assert_eq!(
            s.contract_shards_page(&cid(3), None, 5).unwrap(),
            (vec![], false)
        );
    }

    #[test]
    fn rejects_bad_hash_oversize_and_over_quota() {
        let (_d, s) = store(10);
        let owner = PeerId::random();
        let e = s
            .store(&owner, cid(0), ShardId::from_bytes([0; 32]), b"abc")
            .unwrap_err();
        assert_eq!(e.kind, WireErrorKind::HashMismatch);
        let big = vec![0u8; MAX_SHARD_BYTES as usize + 1];
        assert_eq!(
            s.store(&owner, cid(0), sid(&big), &big).unwrap_err().kind,
            WireErrorKind::TooLarge
        );
        let data = vec![7u8; 11];
        assert_eq!(
            s.store(&owner, cid(0), sid(&data), &data).unwrap_err().kind,
            WireErrorKind::NoSpace
        );
        assert_eq!(s.used(), 0);
    }

    #[test]
    fn reopen_quarantines_orphan_files_and_drops_fileless_entries() {
        let dir = tempfile::tempdir().unwrap();
        let owner = PeerId::random();
        let (a, b) = (vec![1u8; 100], vec![2u8; 50]);
        {
            let db = sled::open(dir.path().join("db")).unwrap();
            let s = ShardStore::open(&db, &dir.path().join("shards"), 1000).unwrap();
            s.store(&owner, cid(0), sid(&a), &a).unwrap();
            s.store(&owner, cid(0), sid(&b), &b).unwrap();
            // As after a crash: a file the index never recorded, and an
            // entry whose file is gone.
            let orphan = s.path(&ShardId::from_bytes([0xab; 32]));
            std::fs::create_dir_all(orphan.parent().unwrap()).unwrap();
            std::fs::write(&orphan, b"x").unwrap();
            std::fs::remove_file(s.path(&sid(&b))).unwrap();
        }
        let db = sled::open(dir.path().join("db")).unwrap();
        let s = ShardStore::open(&db, &dir.path().join("shards"), 1000).unwrap();
        assert_eq!(s.used(), 100);
        // The orphan is moved aside, not destroyed: after a database
        // rolled back, it may be paid data.
        let orphan = ShardId::from_bytes([0xab; 32]);
        assert!(!s.path(&orphan).exists());
        let kept = dir
            .path()
            .join("shards")
            .join(QUARANTINE_DIR)
            .join(orphan.to_string());
        assert_eq!(std::fs::read(&kept).unwrap(), b"x");
        assert!(s.meta(&sid(&b)).unwrap().is_none());
        assert_eq!(s.fetch(&owner, &sid(&a)).unwrap(), a);
        drop(s);
        // Pruned once older than QUARANTINE_KEEP, and only then.
        let reopen = || ShardStore::open(&db, &dir.path().join("shards"), 1000).unwrap();
        drop(reopen());
        assert!(kept.exists());
        let old =
            std::time::SystemTime::now() - QUARANTINE_KEEP - std::time::Duration::from_secs(60);
        std::fs::File::options()
            .write(true)
            .open(&kept)
            .unwrap()
            .set_modified(old)
            .unwrap();
        drop(reopen());
        assert!(!kept.exists());
    }

    fn verified(s: &ShardStore, owner: &PeerId, id: ShardId, size: u64) -> usize {
        let challenges: Vec<Challenge> = (0..merkle::leaf_count(size) as u32)
            .map(|leaf| Challenge { shard_id: id, leaf })
            .collect();
        let answers = s.prove(owner, &cid(0), &challenges).unwrap();
        challenges
            .iter()
            .zip(&answers)
            .filter(|(c, a)| match a {
                AuditAnswer::Proof { leaf, path } => {
                    merkle::verify(id.as_bytes(), size, c.leaf as u64, leaf, path)
                }
                AuditAnswer::Missing => false,
            })
            .count()
    }

    #[test]
    fn proves_leaves_and_rebuilds_a_lost_or_cut_tree() {
        let dir = tempfile::tempdir().unwrap();
        let owner = PeerId::random();
        let data: Vec<u8> = (0..5 * merkle::LEAF_SIZE as usize - 7)
            .map(|i| (i % 251) as u8)
            .collect();
        let (id, size) = (sid(&data), data.len() as u64);
        let open = || {
            let db = sled::open(dir.path().join("db")).unwrap();
            ShardStore::open(&db, &dir.path().join("shards"), 1 << 20).unwrap()
        };
        {
            let s = open();
            s.store(&owner, cid(0), id, &data).unwrap();
            assert_eq!(verified(&s, &owner, id, size), 5);
            // Not the owner, or not this contract: missing, never served.
            let c = [Challenge {
                shard_id: id,
                leaf: 0,
            }];
            assert_eq!(
                s.prove(&PeerId::random(), &cid(0), &c).unwrap(),
                vec![AuditAnswer::Missing]
            );
            assert_eq!(
                s.prove(&owner, &cid(1), &c).unwrap(),
                vec![AuditAnswer::Missing]
            );
            let past = [Challenge {
                shard_id: id,
                leaf: 5,
            }];
            assert_eq!(
                s.prove(&owner, &cid(0), &past).unwrap_err().kind,
                WireErrorKind::BadRequest
            );
            // A tree cut short answers nothing it cannot read whole.
            let tree = std::fs::OpenOptions::new()
                .write(true)
                .open(s.tree_path(&id))
                .unwrap();
            tree.set_len(merkle::tree_bytes(size) / 2).unwrap();
            assert!(verified(&s, &owner, id, size) < 5);
        }
        // Reopening rebuilds the cut tree from the intact shard...
        assert_eq!(verified(&open(), &owner, id, size), 5);
        // ...and a missing one.
        std::fs::remove_file(open().tree_path(&id)).unwrap();
        assert_eq!(verified(&open(), &owner, id, size), 5);
        // A tree of the right length but torn (it is never fsynced) is
        // rebuilt at the first proof that does not check out.
        let s = open();
        std::fs::write(
            s.tree_path(&id),
            vec![0u8; merkle::tree_bytes(size) as usize],
        )
        .unwrap();
        assert_eq!(verified(&s, &owner, id, size), 5);
        assert_eq!(
            std::fs::read(s.tree_path(&id)).unwrap(),
            merkle::Tree::build(&data).to_bytes()
        );
        // A shard that lost bytes is not papered over: its leaf fails.
        let mut bad = data.clone();
        bad[0] ^= 1;
        std::fs::write(s.path(&id), &bad).unwrap();
        assert_eq!(verified(&s, &owner, id, size), 4);
    }

    #[test]
    fn quota_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let owner = PeerId::random();
        let data = vec![1u8; 100];
        {
            let db = sled::open(dir.path().join("db")).unwrap();
            let s = ShardStore::open(&db, &dir.path().join("shards"), 1000).unwrap();
            s.store(&owner, cid(0), sid(&data), &data).unwrap();
        }
        let db = sled::open(dir.path().join("db")).unwrap();
        let s = ShardStore::open(&db, &dir.path().join("shards"), 1000).unwrap();
        assert_eq!(s.used(), 100);
        assert_eq!(s.fetch(&owner, &sid(&data)).unwrap(), data);
    }
}
