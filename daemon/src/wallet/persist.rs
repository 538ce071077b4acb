//! Stores the bdk wallet inside the daemon's sled database, so a node has
//! exactly one database to back up and one lock to hold.
//!
//! bdk hands us deltas (`ChangeSet`s). Each persist appends its delta as
//! one record under the next sequence number, so a persist writes what
//! changed (an address revealed, a block applied), not the whole wallet.
//! Load merges the records in order. Once [`COMPACT_AFTER`] records have
//! piled up, the next persist replaces them all with their merge in one
//! atomic batch, which bounds both the tree and the time a load takes.
//! Every persist is flushed before it returns: a payment the wallet
//! forgot after a crash could be paid twice.

use bdk_wallet::chain::Merge;
use bdk_wallet::{ChangeSet, WalletPersister};

/// The sled tree that holds the wallet; no other module may use it.
pub const TREE_NAME: &str = crate::db::trees::WALLET;
/// Where releases before incremental persistence kept the whole wallet as
/// one value. Read first on load (it predates every delta), removed by the
/// first compaction.
const LEGACY_KEY: &[u8] = b"changeset";
/// A delta's key: this byte, then its sequence number big-endian, so key
/// order is the order the deltas were written.
const DELTA_PREFIX: u8 = b'd';
/// Deltas kept before the next persist merges them into one.
pub const COMPACT_AFTER: u64 = 1000;

#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error("database: {0}")]
    Db(#[from] sled::Error),
    #[error("stored wallet state is corrupt: {0}")]
    Json(#[from] serde_json::Error),
    #[error("stored wallet state is corrupt: bad key {0}")]
    Key(String),
}

/// A [`WalletPersister`] over one sled tree.
pub struct SledPersister {
    tree: sled::Tree,
    /// The sequence number of the next delta.
    next: u64,
    /// Records in the tree (deltas, and the legacy value if present).
    records: u64,
}

fn delta_key(seq: u64) -> [u8; 9] {
    let mut k = [DELTA_PREFIX; 9];
    k[1..].copy_from_slice(&seq.to_be_bytes());
    k
}

/// What the tree holds, merged.
struct Stored {
    changeset: ChangeSet,
    next: u64,
    /// Every record's key, so a compaction removes them without a
    /// second scan.
    keys: Vec<sled::IVec>,
}

impl SledPersister {
    /// Opens the tree; bdk's load or create then reads it
    /// ([`WalletPersister::initialize`]).
    pub fn open(db: &sled::Db) -> Result<Self, PersistError> {
        Ok(Self {
            tree: db.open_tree(TREE_NAME)?,
            next: 0,
            records: 0,
        })
    }

    /// Records in the tree now, for tests and for the compaction rule.
    pub fn records(&self) -> u64 {
        self.records
    }

    fn append(&mut self, changeset: &ChangeSet) -> Result<(), PersistError> {
        let bytes = serde_json::to_vec(changeset)?;
        self.tree.insert(delta_key(self.next), bytes)?;
        self.next += 1;
        self.records += 1;
        crate::blocking::run(|| self.tree.flush())?;
        Ok(())
    }

    /// Replaces every record with their merge plus `changeset`, atomically:
    /// a crash leaves either all the old records or the one new one.
    fn compact(&mut self, changeset: &ChangeSet) -> Result<(), PersistError> {
        let mut stored = crate::blocking::run(|| read(&self.tree))?;
        stored.changeset.merge(changeset.clone());
        let mut batch = sled::Batch::default();
        for key in stored.keys {
            batch.remove(key);
        }
        batch.insert(
            &delta_key(stored.next),
            serde_json::to_vec(&stored.changeset)?,
        );
        self.tree.apply_batch(batch)?;
        self.next = stored.next + 1;
        self.records = 1;
        crate::blocking::run(|| self.tree.flush())?;
        Ok(())
    }
}

/// Merges the legacy value, then every delta in order.
fn read(tree: &sled::Tree) -> Result<Stored, PersistError> {
    let mut stored = Stored {
        changeset: ChangeSet::default(),
        next: 0,
        keys: Vec::new(),
    };
    if let Some(bytes) = tree.get(LEGACY_KEY)? {
        stored.changeset.merge(serde_json::from_slice(&bytes)?);
        stored.keys.push(LEGACY_KEY.into());
    }
    for item in tree.scan_prefix([DELTA_PREFIX]) {
        let (key, bytes) = item?;
        let seq = key
            .get(1..)
            .and_then(|s| <[u8; 8]>::try_from(s).ok())
            .map(u64::from_be_bytes)
            .ok_or_else(|| PersistError::Key(hex::encode(&key)))?;
        stored.changeset.merge(serde_json::from_slice(&bytes)?);
        stored.next = seq + 1;
        stored.keys.push(key);
    }
    Ok(stored)
}

impl WalletPersister for SledPersister {
    type Error = PersistError;

    fn initialize(persister: &mut Self) -> Result<ChangeSet, Self::Error> {
        let stored = crate::blocking::run(|| read(&persister.tree))?;
        persister.next = stored.next;
        persister.records = stored.keys.len() as u64;
        Ok(stored.changeset)
    }

    fn persist(persister: &mut Self, changeset: &ChangeSet) -> Result<(), Self::Error> {
        if changeset.is_empty() {
            return Ok(());
        }
        if persister.records >= COMPACT_AFTER {
            persister.compact(changeset)
        } else {
            persister.append(changeset)
        }
    }
}

#[cfg(test)]
mod tests {
    use bdk_wallet::bitcoin::hashes::Hash;
    use bdk_wallet::bitcoin::secp256k1::Secp256k1;
    use bdk_wallet::bitcoin::{Amount, Network, OutPoint, TxOut, Txid};
    use bdk_wallet::{KeychainKind, Wallet};

    use super::*;
    use crate::wallet::keys::SigningKey;

    fn wallet(persister: &mut SledPersister) -> bdk_wallet::PersistedWallet<SledPersister> {
        let key = SigningKey::from_seed(&crate::testutil::seed(3), Network::Regtest).unwrap();
        let (ext, int) = key
            .descriptors(Network::Regtest, &Secp256k1::new())
            .unwrap();
        match Wallet::load()
            .descriptor(KeychainKind::External, Some(ext.clone()))
            .descriptor(KeychainKind::Internal, Some(int.clone()))
            .load_wallet(persister)
            .unwrap()
        {
            Some(w) => w,
            None => Wallet::create(ext, int)
                .network(Network::Regtest)
                .create_wallet(persister)
                .unwrap(),
        }
    }

    type Fresh = (
        tempfile::TempDir,
        sled::Db,
        SledPersister,
        bdk_wallet::PersistedWallet<SledPersister>,
    );

    /// A new wallet in a new database.
    fn fresh() -> Fresh {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let mut p = SledPersister::open(&db).unwrap();
        let w = wallet(&mut p);
        (dir, db, p, w)
    }

    /// Each persist writes one small delta, not the whole wallet; a reload
    /// sees every one; past the bound they are merged into one record,
    /// and a reload after that still sees everything.
    #[test]
    fn deltas_append_reload_and_compact() {
        let (_dir, db, mut p, mut w) = fresh();
        let created = p.records();
        assert_eq!(created, 1, "creation is one delta");

        // Each persist adds one output the wallet learned of, as a sync
        // does: the wallet grows, each delta stays one output's size.
        for i in 0..10u8 {
            let addr = w.reveal_next_address(KeychainKind::External).address;
            let txout = TxOut {
                value: Amount::from_sat(1000),
                script_pubkey: addr.script_pubkey(),
            };
            let txid = Txid::from_byte_array([i; 32]);
            w.insert_txout(OutPoint::new(txid, 0), txout);
            w.persist(&mut p).unwrap();
        }
        assert_eq!(p.records(), created + 10);
        // The last persist wrote its own change, not the whole wallet.
        let tree = db.open_tree(TREE_NAME).unwrap();
        let last = tree.last().unwrap().unwrap().1.len();
        let merged = serde_json::to_vec(&read(&tree).unwrap().changeset)
            .unwrap()
            .len();
        assert!(
            last * 4 < merged,
            "the last delta took {last} bytes, the wallet {merged}"
        );

        drop(w);
        let mut p = SledPersister::open(&db).unwrap();
        let mut w = wallet(&mut p);
        assert_eq!(w.derivation_index(KeychainKind::External), Some(9));

        while p.records() < COMPACT_AFTER {
            w.reveal_next_address(KeychainKind::Internal);
            w.persist(&mut p).unwrap();
        }
        w.reveal_next_address(KeychainKind::External);
        w.persist(&mut p).unwrap();
        assert_eq!(p.records(), 1, "compacted into one record");
        assert_eq!(db.open_tree(TREE_NAME).unwrap().len(), 1);

        drop(w);
        let mut p = SledPersister::open(&db).unwrap();
        let w = wallet(&mut p);
        assert_eq!(w.derivation_index(KeychainKind::External), Some(10));
        assert_eq!(
            w.derivation_index(KeychainKind::Internal),
            Some(u32::try_from(COMPACT_AFTER).unwrap() - created as u32 - 10 - 1)
        );
    }

    /// A wallet stored whole by an earlier release loads, keeps what it
    /// had, and the legacy value goes at the first compaction.
    #[test]
    fn a_legacy_whole_wallet_loads_and_is_compacted_away() {
        let (_dir, db, mut p, mut w) = fresh();
        w.reveal_next_address(KeychainKind::External);
        w.persist(&mut p).unwrap();
        let tree = db.open_tree(TREE_NAME).unwrap();
        // Rewrite the tree as the old format: one merged value.
        let merged = read(&tree).unwrap().changeset;
        tree.clear().unwrap();
        tree.insert(LEGACY_KEY, serde_json::to_vec(&merged).unwrap())
            .unwrap();

        drop(w);
        let mut p = SledPersister::open(&db).unwrap();
        let mut w = wallet(&mut p);
        assert_eq!(p.records(), 1);
        assert_eq!(w.derivation_index(KeychainKind::External), Some(0));
        w.reveal_next_address(KeychainKind::External);
        w.persist(&mut p).unwrap();
        assert_eq!(p.records(), 2);
        p.compact(&ChangeSet::default()).unwrap();
        assert!(tree.get(LEGACY_KEY).unwrap().is_none());
        drop(w);
        let mut p = SledPersister::open(&db).unwrap();
        let w = wallet(&mut p);
        assert_eq!(w.derivation_index(KeychainKind::External), Some(1));
    }
}
