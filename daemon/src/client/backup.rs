//! The index backup, and an account's restore from it.
//!
//! A client's index (every manifest and contract, and the wallet's
//! birthday) lives in its sled database: lose the data dir and every file
//! is lost, though providers still hold the shards and the mnemonic still
//! derives the keys. So, a while after every change ([`ClientService::spawn_backup`]),
//! the client stores its index in the network as a file of its own kind
//! ([`FileKind::Index`]): encrypted under a key the mnemonic derives,
//! paid for, audited and repaired like any file, but not listed. It then
//! signs a pointer to it ([`crate::pointer`]) and publishes it in the DHT
//! under a key the account derives, and hands it to the providers holding
//! the index, which republish it while their contracts run.
//!
//! A restore (`init --restore`, then [`ClientService::restore_index`])
//! looks the pointer up, takes the newest validly signed one, fetches and
//! verifies the index, and puts every manifest and contract back, each
//! contract brought up to date by asking its provider.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use libp2p::PeerId;
use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};

use super::ClientService;
use super::manifest::{FileKind, Manifest, Term};
use crate::contracts::Contract;
use crate::crypto::sha256;
use crate::error::{Error, Result};
use crate::ids::FileId;
use crate::pointer::{self, IndexPointer};
use crate::provider::store::now_secs;

/// Version of the index format.
pub const INDEX_VERSION: u32 = 1;
/// Largest index a restore fetches: far above any real index (about
/// 3 KB per file), so a pointer naming a huge "index" cannot make a
/// restoring client download without bound.
pub const MAX_INDEX_BYTES: u64 = 256 << 20;
/// Lookups of the pointer a restore makes before it gives up, and the
/// wait between them: a node just started may not have joined the DHT.
pub const RESTORE_LOOKUP_ATTEMPTS: u32 = 12;
pub const RESTORE_LOOKUP_WAIT: Duration = Duration::from_secs(5);
/// How often the backup task looks for changes.
const BACKUP_POLL: Duration = Duration::from_secs(1);
/// A backup is never put off for longer than this many debounce
/// intervals, however often the index changes.
const MAX_DEFER_INTERVALS: u32 = 10;
/// Least wait before a failed backup is tried again.
const BACKUP_RETRY: Duration = Duration::from_secs(30);
/// The one key of the backup state record.
const STATE_KEY: &str = "state";

/// What a backup holds: everything a client needs to carry on.
#[derive(Debug, Serialize, Deserialize)]
pub struct IndexBackup {
    pub version: u32,
    pub birthday_height: u32,
    pub created_at: u64,
    pub manifests: Vec<Manifest>,
    pub contracts: Vec<Contract>,
}

/// The client's record of its backups.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BackupState {
    /// Sequence number of the newest pointer: the next is higher.
    pub seq: u64,
    /// What the newest index holds ([`index_digest`]).
    #[serde(with = "hex::serde")]
    pub digest: [u8; 32],
    pub index_file: Option<FileId>,
    pub backed_up_at: u64,
    /// The newest signed pointer, to republish.
    #[serde(default, with = "hex::serde")]
    pub pointer: Vec<u8>,
    /// SHA-256 of the index manifest that pointer names: a repair of the
    /// index moves shards, and the pointer must then name the new places.
    #[serde(default, with = "hex::serde")]
    pub pointed: [u8; 32],
}

/// Where backups are written before they are put, and how long the index
/// must be left unchanged before one is made (None: never).
#[derive(Clone, Debug)]
pub struct BackupPolicy {
    pub dir: PathBuf,
    pub debounce: Option<Duration>,
}

/// What a restore brought back.
#[derive(Debug, Clone)]
pub struct Restored {
    pub index_seq: u64,
    pub index_file: FileId,
    pub files: usize,
    pub contracts: usize,
    pub birthday_height: u32,
    /// Records found under the pointer key that were not validly signed
    /// by this account, and ignored.
    pub rejected_records: usize,
}

/// The user's file count and whether a backup is pending, as `status`
/// shows them.
#[derive(Debug, Clone, Copy)]
pub struct IndexSummary {
    pub files: u64,
    pub pending: bool,
}

/// A digest of what a backup would hold that matters to a restore: the
/// user's manifests, and each contract's identity, state, paid-through
/// height and term. A backup's own payment changes contracts' allowance
/// and payment lists, not this, so it does not set off another backup.
fn index_digest(files: &[Manifest], contracts: &[Contract]) -> Result<[u8; 32]> {
    let contracts: Vec<_> = contracts
        .iter()
        .map(|c| {
            (
                c.contract_id,
                c.peer.to_string(),
                c.state,
                c.paid_through_height,
                c.term_end_height,
            )
        })
        .collect();
    let bytes = serde_json::to_vec(&(files, contracts))
        .map_err(|e| Error::Internal(format!("index digest: {e}")))?;
    Ok(sha256(&bytes))
}

/// Nothing to back up before the first file.
fn worth_backing_up(state: &BackupState, files: &[Manifest]) -> bool {
    state.seq > 0 || !files.is_empty()
}

impl ClientService {
    pub fn backup_state(&self) -> Result<BackupState> {
        Ok(self
            .backup
            .state
            .get(&STATE_KEY.into())?
            .unwrap_or_default())
    }

    /// Moves whenever the index or its backup state may have changed.
    fn index_changes(&self) -> u64 {
        self.manifests.changes() + self.contracts.changes() + self.backup.state.changes()
    }

    /// The user's file count, and whether the index changed since its
    /// last backup. Recomputed only when something changed: `status` is
    /// polled, and the digest reads every manifest.
    pub fn index_summary(&self) -> Result<IndexSummary> {
        let changes = self.index_changes();
        if let Ok(cache) = self.backup.summary.lock()
            && let Some((at, summary)) = *cache
            && at == changes
        {
            return Ok(summary);
        }
        let state = self.backup_state()?;
        let files = self.manifests.files()?;
        let digest = index_digest(&files, &self.contracts.list()?)?;
        let summary = IndexSummary {
            files: files.len() as u64,
            pending: digest != state.digest && worth_backing_up(&state, &files),
        };
        if let Ok(mut cache) = self.backup.summary.lock() {
            *cache = Some((changes, summary));
        }
        Ok(summary)
    }

    /// The manifest of the newest index backup and its SHA-256.
    fn current_index(&self, state: &BackupState) -> Result<Option<(Manifest, [u8; 32])>> {
        let Some(id) = state.index_file else {
            return Ok(None);
        };
        let m = match self.manifests.get(&id) {
            Ok(m) => m,
            Err(Error::FileNotFound(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        let bytes = serde_json::to_vec(&m)
            .map_err(|e| Error::Internal(format!("encoding the index manifest: {e}")))?;
        Ok(Some((m, sha256(&bytes))))
    }

    /// Backs the index up now if it changed since the last backup (or
    /// points the pointer at the index's new places after a repair);
    /// returns the new pointer's sequence number, if one was made.
    pub async fn backup_index(&self) -> Result<Option<u64>> {
        let _one = self.backup.lock.lock().await;
        let state = self.backup_state()?;
        let files = self.manifests.files()?;
        let contracts = self.contracts.list()?;
        let digest = index_digest(&files, &contracts)?;
        let current = self.current_index(&state)?;
        if digest == state.digest
            && let Some((manifest, pointed)) = current
        {
            if pointed == state.pointed {
                return Ok(None);
            }
            // Same index, repaired: its pointer names the new places.
            let seq = state.seq + 1;
            let pointer = self.publish_pointer(&manifest, seq).await?;
            self.backup.state.insert(
                &STATE_KEY.into(),
                &BackupState {
                    seq,
                    pointer,
                    pointed,
                    ..state
                },
            )?;
            info!(seq, "index moved by a repair: pointer republished");
            return Ok(Some(seq));
        }
        if !worth_backing_up(&state, &files) {
            return Ok(None);
        }
        // On providers the client already has contracts with, if enough:
        // a new contract would change the index again.
        let live: HashSet<PeerId> = contracts
            .iter()
            .filter(|c| c.is_live())
            .map(|c| c.peer)
            .collect();
        let index = IndexBackup {
            version: INDEX_VERSION,
            birthday_height: self.keys.birthday_height,
            created_at: now_secs(),
            manifests: files,
            contracts,
        };
        let json = serde_json::to_vec(&index)
            .map_err(|e| Error::Internal(format!("encoding the index: {e}")))?;
        std::fs::create_dir_all(&self.backup.dir)?;
        let path = self.backup.dir.join("index-backup.json");
        crate::keys::write_private_file(&path, &json)?;
        let put = self
            .put_as(&path, Some(Term::Keep), FileKind::Index, Some(live))
            .await;
        let _ = std::fs::remove_file(&path);
        let file_id: FileId = put?
            .file_id
            .parse()
            .map_err(|_| Error::Internal("the index put returned a bad file id".into()))?;
        let new_state = BackupState {
            seq: state.seq + 1,
            digest,
            index_file: Some(file_id),
            backed_up_at: now_secs(),
            ..Default::default()
        };
        let Some((manifest, pointed)) = self.current_index(&new_state)? else {
            return Err(Error::Internal(
                "the index backup's manifest vanished".into(),
            ));
        };
        let seq = new_state.seq;
        let pointer = self.publish_pointer(&manifest, seq).await?;
        self.backup.state.insert(
            &STATE_KEY.into(),
            &BackupState {
                pointer,
                pointed,
                ..new_state
            },
        )?;
        // Older backups go once the pointer names the new one. Their
        // allowance is kept: the next backup fits in it unpaid.
        for old in self.manifests.list()? {
            if old.kind == FileKind::Index
                && old.file_id != file_id
                && let Err(e) = self.remove(old.file_id, true).await
            {
                warn!(file_id = %old.file_id.short(), "old index backup not removed: {e}");
            }
        }
        info!(seq, file_id = %file_id.short(), files = index.manifests.len(), contracts = index.contracts.len(), "index backed up");
        Ok(Some(seq))
    }

    /// Signs a pointer to `index` with sequence number `seq`, publishes
    /// it in the DHT and hands it to the index's providers; returns the
    /// signed record.
    async fn publish_pointer(&self, index: &Manifest, seq: u64) -> Result<Vec<u8>> {
        let account = self.net.local_peer_id();
        let plain = serde_json::to_vec(index)
            .map_err(|e| Error::Internal(format!("encoding the index manifest: {e}")))?;
        let sealed = pointer::seal_index(&self.keys.file_master, &account, &plain)?;
        let p = IndexPointer::sign(
            &self.keys.identity,
            seq,
            now_secs(),
            &index.providers(),
            sealed,
        )?;
        self.spread_pointer(&p).await;
        Ok(p.record)
    }

    /// Publishes a pointer in the DHT and hands it to the providers it
    /// names. Best effort: each provider and the DHT are asked again at
    /// every republish.
    async fn spread_pointer(&self, p: &IndexPointer) {
        if let Err(e) = self
            .net
            .put_record(pointer::key(&p.account), p.record.clone())
            .await
        {
            warn!("index pointer not published in the DHT yet: {e}");
        }
        let asks = p.providers.iter().map(|peer| async move {
            (
                *peer,
                self.net.publish_pointer(*peer, p.record.clone()).await,
            )
        });
        for (peer, r) in futures::future::join_all(asks).await {
            match r {
                Ok(held) => debug!(%peer, seq = p.seq, held, "provider keeps the index pointer"),
                Err(e) => warn!(%peer, "provider did not take the index pointer: {e}"),
            }
        }
    }

    /// Publishes the newest pointer again, here and at its providers.
    pub async fn republish_pointer(&self) -> Result<()> {
        let state = self.backup_state()?;
        if state.pointer.is_empty() {
            return Ok(());
        }
        let account = self.net.local_peer_id();
        let p = IndexPointer::verify(&pointer::key(&account), &state.pointer)
            .map_err(|e| Error::Internal(format!("our own index pointer: {e}")))?;
        self.spread_pointer(&p).await;
        Ok(())
    }

    /// Backs the index up `debounce` after its last change (at the latest
    /// [`MAX_DEFER_INTERVALS`] debounces after the first), and republishes
    /// the pointer every `republish`.
    pub fn spawn_backup(&self, republish: Duration) -> Option<tokio::task::JoinHandle<()>> {
        let debounce = self.backup.debounce?;
        let this = self.clone();
        Some(tokio::spawn(async move {
            let changes = || this.manifests.changes() + this.contracts.changes();
            // Checked once at start: a change may have come just before
            // a restart.
            let mut seen = u64::MAX;
            let mut quiet_since = tokio::time::Instant::now();
            let mut first_change: Option<tokio::time::Instant> = None;
            let mut next_republish = tokio::time::Instant::now() + republish;
            loop {
                tokio::time::sleep(BACKUP_POLL).await;
                let now = tokio::time::Instant::now();
                let c = changes();
                if c != seen {
                    seen = c;
                    quiet_since = now;
                    first_change.get_or_insert(now);
                }
                if let Some(first) = first_change
                    && (now - quiet_since >= debounce
                        || now - first >= debounce * MAX_DEFER_INTERVALS)
                {
                    match this.backup_index().await {
                        Ok(_) => first_change = None,
                        // Kept pending, and tried again a while later.
                        Err(e) => {
                            warn!("index backup failed: {e}");
                            tokio::time::sleep(BACKUP_RETRY.max(debounce)).await;
                            first_change = Some(tokio::time::Instant::now());
                        }
                    }
                    seen = changes();
                }
                if now >= next_republish {
                    next_republish = now + republish;
                    if let Err(e) = this.republish_pointer().await {
                        warn!("index pointer not republished: {e}");
                    }
                }
            }
        }))
    }

    /// Restores the index from the network: the newest validly signed
    /// pointer of this account, the index it names, then every manifest
    /// and contract in it, each contract as its provider now holds it.
    pub async fn restore_index(&self) -> Result<Restored> {
        let account = self.net.local_peer_id();
        let key = pointer::key(&account);
        let mut found = None;
        let mut rejected = 0;
        for attempt in 1..=RESTORE_LOOKUP_ATTEMPTS {
            let records = self.net.get_records(key.clone()).await?;
            let (best, bad) = pointer::newest(&account, records);
            rejected = rejected.max(bad);
            info!(
                attempt,
                found = best.is_some(),
                rejected = bad,
                "restore: index pointer lookup"
            );
            if best.is_some() {
                found = best;
                break;
            }
            if attempt < RESTORE_LOOKUP_ATTEMPTS {
                tokio::time::sleep(RESTORE_LOOKUP_WAIT).await;
            }
        }
        let Some(p) = found else {
            return Err(Error::IndexNotFound(format!(
                "no index pointer for account {account} in the DHT after {RESTORE_LOOKUP_ATTEMPTS} lookups{}: \
                 check the mnemonic (another phrase is another account), whether this account \
                 ever stored a file, and that the node has joined the network (bootstrap)",
                if rejected > 0 {
                    format!(" ({rejected} forged or damaged records ignored)")
                } else {
                    String::new()
                }
            )));
        };
        info!(
            seq = p.seq,
            providers = p.providers.len(),
            "restore: index pointer found"
        );
        let plain = pointer::open_index(&self.keys.file_master, &account, &p.sealed_index)
            .ok_or_else(|| {
                Error::IndexUnreadable(
                    "the pointer is signed by this account but its index location does not \
                     decrypt: the pointer is damaged"
                        .into(),
                )
            })?;
        let mut index: Manifest = serde_json::from_slice(&plain)
            .map_err(|e| Error::IndexUnreadable(format!("the index manifest: {e}")))?;
        index.kind = FileKind::Index;
        index
            .validate()
            .map_err(|_| Error::IndexUnreadable("the index manifest is inconsistent".into()))?;
        if index.size > MAX_INDEX_BYTES {
            return Err(Error::IndexUnreadable(format!(
                "the index is {} bytes, over the {MAX_INDEX_BYTES} a restore fetches",
                index.size
            )));
        }
        // A fresh node knows none of the providers: find them.
        for peer in index.providers() {
            if self.net.peer_addresses(peer).await?.is_empty() {
                let addrs = self.net.find_peer(peer).await?;
                debug!(%peer, found = addrs.len(), "restore: provider looked up");
            }
        }
        let backup = self.fetch_index(&index).await?;
        let restored = self.import(&p, index, backup, rejected).await?;
        info!(
            seq = restored.index_seq,
            files = restored.files,
            contracts = restored.contracts,
            "restore: index restored"
        );
        Ok(restored)
    }

    /// Fetches and decodes the index `index` names.
    async fn fetch_index(&self, index: &Manifest) -> Result<IndexBackup> {
        std::fs::create_dir_all(&self.backup.dir)?;
        let path = self.backup.dir.join("index-restore.json");
        let got = self.fetch_manifest(index.clone(), &path).await;
        let bytes = got.and_then(|_| Ok(std::fs::read(&path)?));
        let _ = std::fs::remove_file(&path);
        let bytes =
            bytes.map_err(|e| Error::IndexUnreadable(format!("fetching the index: {e}")))?;
        let backup: IndexBackup = serde_json::from_slice(&bytes)
            .map_err(|e| Error::IndexUnreadable(format!("decoding the index: {e}")))?;
        if backup.version != INDEX_VERSION {
            return Err(Error::IndexUnreadable(format!(
                "index version {} (this node reads {INDEX_VERSION})",
                backup.version
            )));
        }
        Ok(backup)
    }

    /// Puts a fetched index back: manifests first, so that no moment has
    /// a contract whose files are unknown (a prune would delete them at
    /// the provider); then each contract as its provider holds it now.
    async fn import(
        &self,
        p: &IndexPointer,
        index: Manifest,
        backup: IndexBackup,
        rejected_records: usize,
    ) -> Result<Restored> {
        let mut contracts = Vec::with_capacity(backup.contracts.len());
        for mut c in backup.contracts {
            // The index may predate the last period payment: the provider
            // knows what it was paid.
            match self.net.contract_status(c.peer, c.contract_id).await {
                Ok(s) => {
                    c.paid_through_height = c.paid_through_height.max(s.paid_through_height);
                    c.term_end_height = c.term_end_height.max(s.term_end_height);
                    c.allowance_bytes = c.allowance_bytes.max(s.allowance_bytes);
                }
                Err(e) => {
                    warn!(peer = %c.peer, contract = %c.contract_id.short(), "restore: contract kept as backed up: {e}")
                }
            }
            contracts.push(c);
        }
        let _pay = self.pay_lock.lock().await;
        let mut restored_files = 0;
        for m in &backup.manifests {
            if m.kind != FileKind::File || m.validate().is_err() {
                warn!(file_id = %m.file_id.short(), "restore: inconsistent manifest skipped");
                continue;
            }
            self.manifests.insert(m)?;
            restored_files += 1;
        }
        self.manifests.insert(&index)?;
        for c in &contracts {
            if self.contracts.get(&c.contract_id)?.is_none() {
                self.contracts.put(c)?;
            }
        }
        let index_file = index.file_id;
        let mut state = BackupState {
            seq: p.seq,
            digest: index_digest(&self.manifests.files()?, &self.contracts.list()?)?,
            index_file: Some(index_file),
            backed_up_at: p.created_at,
            pointer: p.record.clone(),
            pointed: [0; 32],
        };
        if let Some((_, pointed)) = self.current_index(&state)? {
            state.pointed = pointed;
        }
        self.backup.state.insert(&STATE_KEY.into(), &state)?;
        Ok(Restored {
            index_seq: p.seq,
            index_file,
            files: restored_files,
            contracts: contracts.len(),
            birthday_height: backup.birthday_height,
            rejected_records,
        })
    }
}
