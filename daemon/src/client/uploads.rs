//! Shard stores under way, and the pruning that needs to know them.
//!
//! A provider counts every shard it holds under a contract against the
//! allowance, including shards the client has no record of: a store a
//! crash cut short that still landed, or an old copy a repair could not
//! delete while its provider was away. A period paid for less than the
//! provider holds is refused after the money went out, so before paying
//! one [`ClientService::prune`] deletes every shard of the contract that
//! no manifest and no upload under way keeps. Each store passes a gate
//! that a prune closes, so no store is on its way while a prune decides.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use libp2p::PeerId;
use tracing::info;

use super::ClientService;
use crate::contracts::Contract;
use crate::error::{Error, Result};
use crate::ids::{ContractId, ShardId};
use crate::network::{Client as NetClient, PeerError, retry_busy};
use crate::protocol::*;

/// One shard's destination.
#[derive(Clone, Copy)]
pub(super) struct Target {
    pub peer: PeerId,
    pub contract_id: ContractId,
}

/// A shard's id (the hash of its bytes) and size.
#[derive(Debug, Clone, Copy)]
pub(super) struct ShardSpec {
    pub id: ShardId,
    pub size: u64,
}

/// A shard a provider acknowledged, for cleanup if the upload fails.
#[derive(Debug, Clone, Copy)]
pub(super) struct StoredShard {
    pub contract_id: ContractId,
    pub shard_id: ShardId,
}

/// A shard under a contract.
type Placed = (ContractId, ShardId);

/// The client's book of stores under way, shared by every upload.
#[derive(Clone, Default)]
pub(super) struct Uploads(Arc<Book>);

#[derive(Default)]
struct Book {
    /// Held shared by each store for the length of its request, and alone
    /// by a prune.
    gate: tokio::sync::RwLock<()>,
    /// Shards of uploads not yet recorded in a manifest nor given up, by
    /// contract (a repair sends a shard id again, under another), with
    /// how many uploads send each.
    pending: Mutex<HashMap<Placed, usize>>,
    gaps: Mutex<GapBook>,
}

/// Allowance a provider counts as used by shards the client has no record
/// of, between a store refused as over the allowance and the next prune.
#[derive(Default)]
struct GapBook {
    /// Contracts whose provider refused a store as over the allowance,
    /// not yet measured.
    refused: HashSet<ContractId>,
    /// Bytes of allowance, per contract, known to be used by the provider
    /// but by no manifest.
    hidden: HashMap<ContractId, u64>,
}

impl Uploads {
    /// A new upload's handle: its stores pass through it.
    pub fn start(&self) -> Upload {
        Upload {
            book: self.clone(),
            sent: Mutex::new(Vec::new()),
            stored: Mutex::new(Vec::new()),
        }
    }

    /// A store under `contract_id` was refused as over the allowance.
    fn refused(&self, contract_id: ContractId) {
        if let Ok(mut gaps) = self.0.gaps.lock() {
            gaps.refused.insert(contract_id);
        }
    }

    /// Takes what the providers hold unrecorded out of `spare`: a refused
    /// contract's whole spare, measured now, until the contract is pruned.
    pub fn apply_gaps(&self, spare: &mut HashMap<ContractId, u64>) {
        let Ok(mut gaps) = self.0.gaps.lock() else {
            return;
        };
        let refused: Vec<ContractId> = gaps.refused.drain().collect();
        for id in refused {
            let gap = spare.get(&id).copied().unwrap_or(0);
            *gaps.hidden.entry(id).or_default() += gap;
        }
        for (id, s) in spare.iter_mut() {
            *s = s.saturating_sub(gaps.hidden.get(id).copied().unwrap_or(0));
        }
    }

    /// The contract holds nothing unrecorded any more.
    fn pruned(&self, contract_id: &ContractId) {
        if let Ok(mut gaps) = self.0.gaps.lock() {
            gaps.refused.remove(contract_id);
            gaps.hidden.remove(contract_id);
        }
    }

    fn pending(&self) -> HashSet<Placed> {
        self.0
            .pending
            .lock()
            .map(|p| p.keys().copied().collect())
            .unwrap_or_default()
    }
}

/// One upload (a put or a repair): the shards it sent stay pending, safe
/// from a prune, until it is dropped, after its manifest is written or
/// its failure cleaned up.
pub(super) struct Upload {
    book: Uploads,
    sent: Mutex<Vec<Placed>>,
    stored: Mutex<Vec<StoredShard>>,
}

impl Upload {
    /// Stores one shard under a contract and returns the provider's
    /// verified receipt.
    pub async fn store(
        &self,
        net: &NetClient,
        client: PeerId,
        t: Target,
        spec: &ShardSpec,
        data: Vec<u8>,
    ) -> Result<Receipt> {
        let _open = self.book.0.gate.read().await;
        self.pend((t.contract_id, spec.id));
        let peer = t.peer;
        let data = bytes::Bytes::from(data);
        let receipt = retry_busy(|| net.store(peer, t.contract_id, spec.id, data.clone()))
            .await
            .map_err(|e| {
                if let PeerError::Refused(w) = &e
                    && w.kind == WireErrorKind::OverAllowance
                {
                    self.book.refused(t.contract_id);
                }
                e.at(peer)
            })?;
        if !receipt.verify(&peer, &client, &t.contract_id, &spec.id, spec.size) {
            return Err(Error::Integrity(format!(
                "provider {peer} sent an invalid receipt for shard {}",
                spec.id.short()
            )));
        }
        if let Ok(mut s) = self.stored.lock() {
            s.push(StoredShard {
                contract_id: t.contract_id,
                shard_id: spec.id,
            });
        }
        Ok(receipt)
    }

    fn pend(&self, id: Placed) {
        if let (Ok(mut pending), Ok(mut sent)) = (self.book.0.pending.lock(), self.sent.lock()) {
            *pending.entry(id).or_default() += 1;
            sent.push(id);
        }
    }

    /// The shards providers acknowledged, for cleanup if the upload fails.
    pub fn stored(&self) -> Vec<StoredShard> {
        self.stored.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        let (Ok(mut pending), Ok(sent)) = (self.book.0.pending.lock(), self.sent.lock()) else {
            return;
        };
        for id in sent.iter() {
            if let Some(n) = pending.get_mut(id) {
                *n -= 1;
                if *n == 0 {
                    pending.remove(id);
                }
            }
        }
    }
}

impl ClientService {
    /// Deletes every shard the providers of `contracts` hold under them
    /// that no manifest and no upload under way keeps; one result per
    /// contract, in order. Stores wait while it runs.
    pub(super) async fn prune(&self, contracts: &[Contract]) -> Result<Vec<Result<()>>> {
        let _closed = self.uploads.0.gate.write().await;
        // Pending first, manifests second: an upload records its manifest
        // before it stops pending, so every shard is in one or the other.
        let mut keep = self.uploads.pending();
        for m in self.manifests.list()? {
            keep.extend(
                m.segments
                    .iter()
                    .flat_map(|s| &s.shards)
                    .map(|r| (r.contract_id, r.shard_id)),
            );
        }
        let keep = &keep;
        let runs = contracts.iter().map(|c| async move {
            let peer = c.peer;
            self.prune_one(c, keep).await.map_err(|e| e.at(peer))
        });
        let results = futures::future::join_all(runs).await;
        for (c, r) in contracts.iter().zip(&results) {
            if r.is_ok() {
                self.uploads.pruned(&c.contract_id);
            }
        }
        Ok(results)
    }

    async fn prune_one(&self, c: &Contract, keep: &HashSet<Placed>) -> Result<(), PeerError> {
        let peer = c.peer;
        let (mut after, mut extra) = (None, Vec::new());
        loop {
            let (page, more) = self.net.list(peer, c.contract_id, after).await?;
            after = page.last().map(|(id, _)| *id);
            extra.extend(
                page.into_iter()
                    .map(|(id, _)| id)
                    .filter(|id| !keep.contains(&(c.contract_id, *id))),
            );
            if !more {
                break;
            }
        }
        let mut freed = 0u64;
        for ids in extra.chunks(MAX_DELETE_IDS) {
            let (_, bytes) = self.net.delete(peer, c.contract_id, ids.to_vec()).await?;
            freed = freed.saturating_add(bytes);
        }
        if !extra.is_empty() {
            info!(%peer, contract = %c.contract_id.short(), shards = extra.len(), freed, "deleted shards no file keeps");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A refusal takes the contract's whole spare at that moment out of
    /// every later count, until a prune; other contracts and later
    /// purchases are spare as before.
    #[test]
    fn a_refused_store_hides_the_spare_it_found_until_a_prune() {
        let (a, b) = (
            ContractId::from_bytes([1; 32]),
            ContractId::from_bytes([2; 32]),
        );
        let uploads = Uploads::default();
        let mut spare: HashMap<ContractId, u64> = [(a, 700), (b, 300)].into();
        uploads.apply_gaps(&mut spare);
        assert_eq!(spare, [(a, 700), (b, 300)].into());
        uploads.refused(a);
        let mut spare: HashMap<ContractId, u64> = [(a, 700), (b, 300)].into();
        uploads.apply_gaps(&mut spare);
        assert_eq!(spare, [(a, 0), (b, 300)].into());
        // 500 bytes bought later are spare.
        let mut spare: HashMap<ContractId, u64> = [(a, 1200), (b, 300)].into();
        uploads.apply_gaps(&mut spare);
        assert_eq!(spare, [(a, 500), (b, 300)].into());
        uploads.pruned(&a);
        let mut spare: HashMap<ContractId, u64> = [(a, 1200), (b, 300)].into();
        uploads.apply_gaps(&mut spare);
        assert_eq!(spare, [(a, 1200), (b, 300)].into());
    }

    /// A shard stays pending while any upload that sent it is alive.
    #[test]
    fn shards_pend_until_their_last_upload_ends() {
        let uploads = Uploads::default();
        let id = (
            ContractId::from_bytes([1; 32]),
            ShardId::from_bytes([7; 32]),
        );
        let (one, two) = (uploads.start(), uploads.start());
        one.pend(id);
        two.pend(id);
        drop(one);
        assert!(uploads.pending().contains(&id));
        drop(two);
        assert!(uploads.pending().is_empty());
    }
}
