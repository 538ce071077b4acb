//! put: plan, contract, upload, pay.
//!
//! 1. Plan: seal every segment once to learn its shard id (the contract
//!    must name its shards), keeping only nonces and hashes.
//! 2. Place segments on the cheapest providers with room, and agree one
//!    contract per provider.
//! 3. Check the wallet can pay, before anything is uploaded.
//! 4. Upload: seal again with the planned nonce, check the hash matches the
//!    plan (a file that changed meanwhile aborts the put), send.
//! 5. Record the manifest, then pay all providers in one transaction.

use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use futures::{StreamExt, TryStreamExt};
use libp2p::{Multiaddr, PeerId};
use tracing::{Instrument, info, info_span, warn};

use super::ClientService;
use super::manifest::{MANIFEST_VERSION, Manifest, Segment, ShardRef};
use crate::contracts::{Contract, Role, State};
use crate::crypto::{FileKey, Hash, NONCE_LEN, TAG_LEN, random_bytes, sha256};
use crate::error::{Error, Result};
use crate::network::Client as NetClient;
use crate::progress::Op;
use crate::protocol::*;
use crate::provider::store::now_secs;

/// Segments in flight per transfer: enough to overlap disk, crypto and
/// network, few enough to keep memory near PIPELINE * SEGMENT_SIZE * 3.
pub(super) const PIPELINE: usize = 4;

pub(super) fn short(id: &Hash) -> String {
    hex::encode(&id[..8])
}

#[derive(Clone, Copy)]
struct Planned {
    nonce: [u8; NONCE_LEN],
    shard_id: ShardId,
    plain_len: u64,
    size: u64,
}

type OfferList = [(PeerId, Offer, Vec<Multiaddr>)];

struct Placement {
    peer: PeerId,
    offer: Offer,
    segments: Vec<usize>,
}

impl ClientService {
    pub async fn put(&self, path: &str, op_id: Option<String>) -> Result<p2pstore_rpc::PutResult> {
        let (file, name, size) = open_source(path)?;
        // Fail fast: without bitcoind nothing could be paid for.
        self.wallet.check_bitcoind().await?;
        let offers = self.discover_offers().await?;
        let offers = self.affordable(offers)?;

        let file_id: Hash = random_bytes()?;
        let count = size.div_ceil(SEGMENT_SIZE as u64).max(1);
        let span = info_span!("put", file_id = %short(&file_id));
        let job = Arc::new(UploadJob {
            file,
            key: FileKey::derive(&self.keys.file_master, &file_id),
            file_id,
            size,
            count,
            client: self.net.local_peer_id(),
            stored: Mutex::new(Vec::new()),
        });
        let plan = job.clone().plan().instrument(span.clone()).await?;
        let placement = place(&plan, &offers)?;
        let contracts = self
            .propose_all(file_id, &plan, &placement)
            .instrument(span.clone())
            .await?;

        let result = self
            .upload_and_pay(&job, &plan, &placement, &contracts, name, op_id)
            .instrument(span.clone())
            .await;
        if let Err(e) = &result {
            warn!(parent: &span, "put failed: {e}");
            if !matches!(
                e,
                Error::BitcoindUnreachable(_) | Error::PaymentRejected { .. }
            ) {
                self.abandon(&job, &contracts).await;
            }
        }
        result
    }

    async fn upload_and_pay(
        &self,
        job: &Arc<UploadJob>,
        plan: &[Planned],
        placement: &[Placement],
        contracts: &[Contract],
        name: String,
        op_id: Option<String>,
    ) -> Result<p2pstore_rpc::PutResult> {
        // Insufficient funds must stop the put before any byte is sent.
        let mut outputs = Vec::new();
        for c in contracts {
            outputs.push((self.wallet.parse_address(&c.payout_address)?, c.amount_sat));
        }
        let probe = self.wallet.build_signed_tx(&outputs, self.fee_rate())?;
        self.wallet.cancel_tx(&probe);

        let mut owner = vec![0usize; plan.len()];
        for (pi, p) in placement.iter().enumerate() {
            for &s in &p.segments {
                owner[s] = pi;
            }
        }
        let progress = Arc::new(self.progress.start(op_id, job.size));
        let segments = futures::stream::iter(0..plan.len())
            .map(|i| {
                let job = job.clone();
                let net = self.net.clone();
                let progress = progress.clone();
                let peer = placement[owner[i]].peer;
                let contract_id = contracts[owner[i]].contract_id;
                let planned = plan[i];
                async move {
                    job.upload(&net, i as u64, planned, peer, contract_id, &progress)
                        .await
                }
            })
            .buffered(PIPELINE)
            .try_collect::<Vec<Segment>>()
            .await?;
        let manifest = Manifest {
            version: MANIFEST_VERSION,
            file_id: job.file_id,
            name: name.clone(),
            size: job.size,
            created_at: now_secs(),
            segment_size: SEGMENT_SIZE as u64,
            segments,
        };
        // The manifest is durable before the payment, so a crash after
        // paying never loses track of a paid-for file.
        self.manifests.insert(&manifest)?;
        crate::failpoint::hit("before-pay");
        if let Err(e) = self.pay(job.file_id, contracts).await {
            if matches!(
                e,
                Error::InsufficientFunds { .. } | Error::Wallet(_) | Error::InvalidAddress(_)
            ) {
                self.manifests.remove(&job.file_id)?;
            }
            return Err(e);
        }
        info!(size = job.size, providers = contracts.len(), "put finished");
        Ok(p2pstore_rpc::PutResult {
            file_id: hex::encode(job.file_id),
            name,
            size: job.size,
            segments: job.count,
            providers: manifest.providers(),
        })
    }

    /// Offers the client accepts: its protocol, its term, its price cap.
    fn affordable(
        &self,
        offers: Vec<(PeerId, Offer, Vec<Multiaddr>)>,
    ) -> Result<Vec<(PeerId, Offer, Vec<Multiaddr>)>> {
        if offers.is_empty() {
            return Err(Error::NoProvider("no providers found in the DHT".into()));
        }
        let term = self.term_blocks;
        let usable: Vec<_> = offers
            .iter()
            .filter(|(_, o, _)| {
                o.protocol_version == PROTOCOL_VERSION
                    && o.max_shard_bytes >= MAX_SHARD_BYTES
                    && (o.min_term_blocks..=o.max_term_blocks).contains(&term)
            })
            .cloned()
            .collect();
        if usable.is_empty() {
            return Err(Error::NoProvider(format!(
                "{} provider(s) found, none accepts a {term}-block term",
                offers.len()
            )));
        }
        let max = self.max_price_sat_per_gib_month;
        let cheap: Vec<_> = usable
            .iter()
            .filter(|(_, o, _)| o.price_sat_per_gib_month <= max)
            .cloned()
            .collect();
        if cheap.is_empty() {
            let lowest = usable
                .iter()
                .map(|(_, o, _)| o.price_sat_per_gib_month)
                .min()
                .unwrap_or(0);
            return Err(Error::PriceTooHigh(format!(
                "the cheapest offer is {lowest} sat/GiB/month, above the maximum of {max} (--max-price-sat-per-gib-month)"
            )));
        }
        Ok(cheap)
    }

    async fn propose_all(
        &self,
        file_id: Hash,
        plan: &[Planned],
        placement: &[Placement],
    ) -> Result<Vec<Contract>> {
        let term = self.term_blocks;
        let asks = placement.iter().map(|p| async move {
            let shards: Vec<ShardSpec> = p.segments.iter().map(|&i| ShardSpec { id: plan[i].shard_id, size: plan[i].size }).collect();
            let bytes = shards.iter().map(|s| s.size).sum();
            let price = p.offer.price_sat_per_gib_month;
            let amount = contract_amount(price, bytes, term).ok_or_else(|| Error::InvalidParams("amount overflows".into()))?;
            let contract_id: ContractId = random_bytes()?;
            let proposal = Proposal { contract_id, shards: shards.clone(), term_blocks: term, price_sat_per_gib_month: price, amount_sat: amount };
            match self.net.control(p.peer, ControlRequest::Propose(proposal)).await? {
                ControlResponse::Accepted { contract_id: id, payout_address, deadline_height } if id == contract_id => {
                    let address = self.wallet.parse_address(&payout_address).map_err(|_| Error::ProviderRejected {
                        peer: p.peer.to_string(),
                        reason: format!("payout address {payout_address} is not valid here"),
                    })?;
                    let contract = Contract {
                        contract_id,
                        role: Role::Client,
                        peer: p.peer.to_string(),
                        file_id: Some(file_id),
                        shards,
                        bytes,
                        term_blocks: term,
                        price_sat_per_gib_month: price,
                        amount_sat: amount,
                        payout_address: address.to_string(),
                        deadline_height,
                        txid: None,
                        vout: None,
                        start_height: None,
                        state: State::Accepted,
                        created_at: now_secs(),
                    };
                    self.contracts.put(&contract)?;
                    info!(peer = %p.peer, contract = %short(&contract_id), bytes, amount_sat = amount, "contract accepted");
                    Ok(contract)
                }
                ControlResponse::Error(e) => Err(Error::ProviderRejected { peer: p.peer.to_string(), reason: e.message }),
                _ => Err(Error::ProviderRejected { peer: p.peer.to_string(), reason: "unexpected response to proposal".into() }),
            }
        });
        let results = futures::future::join_all(asks).await;
        let mut contracts = Vec::new();
        let mut first_err = None;
        for r in results {
            match r {
                Ok(c) => contracts.push(c),
                Err(e) => first_err = first_err.or(Some(e)),
            }
        }
        if let Some(e) = first_err {
            for c in &contracts {
                self.contracts.remove(&c.contract_id)?;
            }
            return Err(e);
        }
        Ok(contracts)
    }

    /// Undoes a put that will not be paid: deletes what was uploaded and
    /// forgets its contracts, so neither side keeps a dangling record.
    async fn abandon(&self, job: &UploadJob, contracts: &[Contract]) {
        let stored = job.stored.lock().map(|s| s.clone()).unwrap_or_default();
        for c in contracts {
            let ids: Vec<ShardId> = stored
                .iter()
                .filter(|(cid, _)| *cid == c.contract_id)
                .map(|(_, s)| *s)
                .collect();
            if let Ok(peer) = c.peer.parse::<PeerId>()
                && !ids.is_empty()
            {
                let _ = self
                    .net
                    .control(
                        peer,
                        ControlRequest::Delete {
                            contract_id: c.contract_id,
                            shard_ids: ids,
                        },
                    )
                    .await;
            }
            let _ = self.contracts.remove(&c.contract_id);
        }
    }
}

fn open_source(path: &str) -> Result<(std::fs::File, String, u64)> {
    let path = PathBuf::from(path);
    let meta = std::fs::metadata(&path)
        .map_err(|e| Error::InvalidPath(format!("cannot read {}: {e}", path.display())))?;
    if meta.is_dir() {
        return Err(Error::InvalidPath(format!(
            "{} is a directory",
            path.display()
        )));
    }
    if !meta.is_file() {
        return Err(Error::InvalidPath(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    let file = std::fs::File::open(&path)
        .map_err(|e| Error::InvalidPath(format!("cannot open {}: {e}", path.display())))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".into());
    Ok((file, name, meta.len()))
}

/// Fills the cheapest providers first, in segment order; fails when all of
/// them together lack room.
fn place(plan: &[Planned], offers: &OfferList) -> Result<Vec<Placement>> {
    let mut free: Vec<u64> = offers.iter().map(|(_, o, _)| o.free_bytes).collect();
    let mut out: Vec<Placement> = Vec::new();
    let mut current = 0;
    for (i, seg) in plan.iter().enumerate() {
        while current < offers.len() && free[current] < seg.size {
            current += 1;
        }
        if current == offers.len() {
            let needed: u64 = plan.iter().map(|p| p.size).sum();
            let total: u64 = offers.iter().map(|(_, o, _)| o.free_bytes).sum();
            return Err(Error::NoProvider(format!(
                "{} provider(s) found, none has room: the file needs {needed} bytes, they have {total} free in all",
                offers.len()
            )));
        }
        free[current] -= seg.size;
        let (peer, offer, _) = &offers[current];
        match out.last_mut() {
            Some(p) if p.peer == *peer => p.segments.push(i),
            _ => out.push(Placement {
                peer: *peer,
                offer: offer.clone(),
                segments: vec![i],
            }),
        }
    }
    Ok(out)
}

struct UploadJob {
    file: std::fs::File,
    key: FileKey,
    file_id: Hash,
    size: u64,
    count: u64,
    client: PeerId,
    /// Shards providers acknowledged, for cleanup if the put fails.
    stored: Mutex<Vec<(ContractId, ShardId)>>,
}

impl UploadJob {
    fn read_segment(&self, i: u64) -> Result<Vec<u8>> {
        let seg = SEGMENT_SIZE as u64;
        let offset = i * seg;
        let len = seg.min(self.size - offset);
        let mut buf = vec![0u8; len as usize];
        buf.reserve_exact(TAG_LEN);
        self.file.read_exact_at(&mut buf, offset).map_err(|e| {
            Error::InvalidPath(format!(
                "reading segment {i}: {e} (did the file change during put?)"
            ))
        })?;
        Ok(buf)
    }

    async fn plan(self: Arc<Self>) -> Result<Vec<Planned>> {
        futures::stream::iter(0..self.count)
            .map(|i| {
                let job = self.clone();
                async move {
                    tokio::task::spawn_blocking(move || -> Result<Planned> {
                        let mut buf = job.read_segment(i)?;
                        let plain_len = buf.len() as u64;
                        let nonce = job.key.seal(&job.file_id, i, job.count, &mut buf)?;
                        Ok(Planned {
                            nonce,
                            shard_id: sha256(&buf),
                            plain_len,
                            size: buf.len() as u64,
                        })
                    })
                    .await
                    .map_err(|e| Error::Internal(e.to_string()))?
                }
            })
            .buffered(2)
            .try_collect()
            .await
    }

    async fn upload(
        self: Arc<Self>,
        net: &NetClient,
        i: u64,
        planned: Planned,
        peer: PeerId,
        contract_id: ContractId,
        progress: &Op,
    ) -> Result<Segment> {
        let job = self.clone();
        let data = tokio::task::spawn_blocking(move || -> Result<Vec<u8>> {
            let mut buf = job.read_segment(i)?;
            job.key
                .seal_with_nonce(&job.file_id, i, job.count, &planned.nonce, &mut buf)?;
            if sha256(&buf) != planned.shard_id {
                return Err(Error::InvalidPath(format!(
                    "segment {i} changed during put; nothing was sent for it"
                )));
            }
            Ok(buf)
        })
        .await
        .map_err(|e| Error::Internal(e.to_string()))??;
        let shard_id = planned.shard_id;
        let request = ShardRequest::Store {
            contract_id,
            shard_id,
            data,
        };
        let receipt = match net.shard(peer, request).await? {
            ShardResponse::Stored(r) => r,
            ShardResponse::Error(e) => {
                return Err(Error::ProviderRejected {
                    peer: peer.to_string(),
                    reason: e.message,
                });
            }
            ShardResponse::Data(_) => {
                return Err(Error::ProviderRejected {
                    peer: peer.to_string(),
                    reason: "unexpected response".into(),
                });
            }
        };
        if !receipt.verify(&peer, &self.client, &contract_id, &shard_id, planned.size) {
            return Err(Error::Integrity(format!(
                "provider {peer} sent an invalid receipt for shard {}",
                short(&shard_id)
            )));
        }
        if let Ok(mut s) = self.stored.lock() {
            s.push((contract_id, shard_id));
        }
        progress.add(planned.plain_len);
        Ok(Segment {
            nonce: planned.nonce,
            plain_len: planned.plain_len,
            shards: vec![ShardRef {
                shard_id,
                size: planned.size,
                provider: peer.to_string(),
                contract_id,
                receipt,
            }],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(free: u64, price: u64) -> Offer {
        Offer {
            protocol_version: PROTOCOL_VERSION,
            free_bytes: free,
            price_sat_per_gib_month: price,
            min_term_blocks: 1,
            max_term_blocks: 10_000,
            max_shard_bytes: MAX_SHARD_BYTES,
        }
    }

    fn planned(size: u64) -> Planned {
        Planned {
            nonce: [0; NONCE_LEN],
            shard_id: [0; 32],
            plain_len: size - 16,
            size,
        }
    }

    #[test]
    fn placement_fills_cheapest_first_and_spills() {
        let a = PeerId::random();
        let b = PeerId::random();
        let offers = vec![(a, offer(250, 1), vec![]), (b, offer(1000, 2), vec![])];
        let plan = vec![planned(100), planned(100), planned(100)];
        let p = place(&plan, &offers).unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!((p[0].peer, p[0].segments.clone()), (a, vec![0, 1]));
        assert_eq!((p[1].peer, p[1].segments.clone()), (b, vec![2]));
        let too_big = vec![planned(2000)];
        assert!(matches!(
            place(&too_big, &offers),
            Err(Error::NoProvider(_))
        ));
    }
}
