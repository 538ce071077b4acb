//! Stores the bdk wallet inside the daemon's existing sled database, so a
//! node has exactly one database to back up and one lock to hold.
//!
//! bdk hands us deltas (`ChangeSet`s); we keep the merged aggregate as a
//! single JSON value under one key. That makes load trivial and keeps the
//! format readable, at the price of rewriting the whole value on each persist
//! (fine for regtest/signet-sized wallets).

use bdk_wallet::chain::Merge;
use bdk_wallet::{ChangeSet, WalletPersister};

/// The sled tree that holds the wallet; no other module may use it.
pub const TREE_NAME: &str = crate::db::trees::WALLET;
const CHANGESET_KEY: &[u8] = b"changeset";

#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error("database: {0}")]
    Db(#[from] sled::Error),
    #[error("stored wallet state is corrupt: {0}")]
    Json(#[from] serde_json::Error),
}

/// A [`WalletPersister`] over one sled tree.
pub struct SledPersister {
    tree: sled::Tree,
    /// What is on disk, so each persist only parses the delta rather than
    /// re-reading the whole aggregate. `None` means "unknown, re-read it".
    cached: Option<ChangeSet>,
}

impl SledPersister {
    pub fn open(db: &sled::Db) -> Result<Self, PersistError> {
        Ok(Self {
            tree: db.open_tree(TREE_NAME)?,
            cached: None,
        })
    }

    fn read(&self) -> Result<ChangeSet, PersistError> {
        match self.tree.get(CHANGESET_KEY)? {
            Some(bytes) => Ok(serde_json::from_slice(&bytes)?),
            None => Ok(ChangeSet::default()),
        }
    }

    fn write(&self, aggregate: &ChangeSet) -> Result<(), PersistError> {
        let bytes = serde_json::to_vec(aggregate)?;
        self.tree.insert(CHANGESET_KEY, bytes)?;
        // A payment we broadcast but forget after a crash could be paid twice.
        self.tree.flush()?;
        Ok(())
    }
}

impl WalletPersister for SledPersister {
    type Error = PersistError;

    fn initialize(persister: &mut Self) -> Result<ChangeSet, Self::Error> {
        let stored = persister.read()?;
        persister.cached = Some(stored.clone());
        Ok(stored)
    }

    fn persist(persister: &mut Self, changeset: &ChangeSet) -> Result<(), Self::Error> {
        let mut aggregate = match persister.cached.take() {
            Some(c) => c,
            None => persister.read()?,
        };
        aggregate.merge(changeset.clone());
        // On failure `cached` stays `None`, so the next call re-reads the
        // truth from disk instead of trusting a merge that never landed.
        persister.write(&aggregate)?;
        persister.cached = Some(aggregate);
        Ok(())
    }
}
