//! put: plan, contract, upload, pay.
//!
//! 1. Plan: seal and erasure-code every segment once to learn its shard
//!    ids (a contract names its shards); keep only nonces and hashes.
//! 2. Place each segment's N shards on N distinct providers, ranked by
//!    price, reliability and free space; agree one contract per provider.
//! 3. Check the wallet can pay, before anything is uploaded.
//! 4. Upload: re-read each segment, check its plaintext hash against the
//!    plan (a file that changed meanwhile aborts the put, so a nonce never
//!    seals two different plaintexts), seal, encode, send.
//! 5. Record the manifest, then pay all providers in one transaction.

use std::collections::HashSet;
use std::net::IpAddr;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::{StreamExt, TryStreamExt};
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use tracing::{Instrument, info, info_span, warn};

use super::manifest::{MANIFEST_VERSION, Manifest, Segment, ShardRef};
use super::reliability::Reliability;
use super::{ClientService, FoundProvider};
use crate::contracts::{Contract, Role};
use crate::crypto::{FileKey, Hash, NONCE_LEN, TAG_LEN, sha256};
use crate::erasure::Scheme;
use crate::error::{Error, Result};
use crate::ids::{ContractId, FileId, ShardId};
use crate::network::Client as NetClient;
use crate::progress::Op;
use crate::protocol::*;
use crate::provider::store::now_secs;

/// Segments in flight per transfer: enough to overlap disk, crypto and
/// network, few enough to bound memory (each holds a segment and its shards).
pub(super) const PIPELINE: usize = 4;

#[derive(Clone)]
pub(super) struct Planned {
    nonce: [u8; NONCE_LEN],
    plain_hash: Hash,
    plain_len: u64,
    cipher_len: u64,
    /// The segment's n shards, in erasure-code order.
    shards: Vec<ShardSpec>,
}

/// A provider the client is willing to use, with what it offered.
#[derive(Clone)]
pub(super) struct Candidate {
    pub peer: PeerId,
    pub offer: Offer,
    pub ip: Option<IpAddr>,
    pub score: f64,
}

impl Candidate {
    /// Price weighted by reliability: a provider that fails half the time
    /// costs, in effect, twice its asking price.
    fn effective_price(&self) -> f64 {
        self.offer.price_sat_per_gib_month.max(1) as f64 / self.score
    }
}

fn first_ip(addrs: &[Multiaddr]) -> Option<IpAddr> {
    addrs.iter().flat_map(|a| a.iter()).find_map(|p| match p {
        Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
        Protocol::Ip6(ip) => Some(IpAddr::V6(ip)),
        _ => None,
    })
}

/// One shard's destination.
#[derive(Clone, Copy)]
pub(super) struct Target {
    pub peer: PeerId,
    pub contract_id: ContractId,
}

impl ClientService {
    /// Stores the file at `path` at `scheme` (the configured default when
    /// None), and pays for it.
    pub async fn put(
        &self,
        path: &Path,
        scheme: Option<Scheme>,
        op_id: Option<String>,
    ) -> Result<p2pstore_rpc::PutResult> {
        let scheme = scheme.unwrap_or(self.default_scheme);
        let (file, name, size) = open_source(path)?;
        // Fail fast: without bitcoind nothing could be paid for.
        self.wallet.check_bitcoind().await?;
        let candidates = self.candidates().await?;
        if candidates.len() < scheme.n as usize {
            return Err(Error::NoProvider(format!(
                "found {} suitable provider(s); {}-of-{} redundancy needs {}",
                candidates.len(),
                scheme.k,
                scheme.n,
                scheme.n
            )));
        }

        let count = size.div_ceil(SEGMENT_SIZE as u64).max(1);
        // Refuse a file that cannot fit before spending a pass sealing it.
        let seg = SEGMENT_SIZE as u64;
        let shard_bytes: u64 = (0..count)
            .map(|i| {
                scheme.shard_len((seg.min(size - i * seg) + TAG_LEN as u64) as usize) as u64
                    * scheme.n as u64
            })
            .sum();
        // Offers are a peer's word: add them without trusting them not to overflow.
        let free = candidates
            .iter()
            .fold(0u64, |a, c| a.saturating_add(c.offer.free_bytes));
        if shard_bytes > free {
            return Err(Error::NoProvider(format!(
                "{} provider(s) found, not enough room: the file needs {shard_bytes} bytes of shards, they have {free} free in all",
                candidates.len()
            )));
        }
        let file_id = FileId::random()?;
        let span = info_span!("put", file_id = %file_id.short(), scheme = %scheme.label());
        let job = Arc::new(UploadJob {
            file,
            key: FileKey::derive(&self.keys.file_master, &file_id),
            file_id,
            size,
            count,
            scheme,
            client: self.net.local_peer_id(),
            reliability: self.reliability.clone(),
            stored: Mutex::new(Vec::new()),
        });
        let plan = job.clone().plan().instrument(span.clone()).await?;
        let assignment = place(&plan, &candidates, scheme)?;
        let mut groups: Vec<(PeerId, Offer, Vec<ShardSpec>)> = candidates
            .iter()
            .map(|c| (c.peer, c.offer.clone(), Vec::new()))
            .collect();
        for (seg, chosen) in plan.iter().zip(&assignment) {
            for (shard, &c) in seg.shards.iter().zip(chosen) {
                groups[c].2.push(shard.clone());
            }
        }
        // Only candidates that got shards get a contract.
        groups.retain(|g| !g.2.is_empty());
        let contracts = self
            .propose_all(file_id, &groups)
            .instrument(span.clone())
            .await?;
        let contract_of = |peer: &PeerId| contract_for(&groups, &contracts, peer);
        let targets: Vec<Vec<Target>> = assignment
            .iter()
            .map(|chosen| {
                chosen
                    .iter()
                    .map(|&c| Target {
                        peer: candidates[c].peer,
                        contract_id: contract_of(&candidates[c].peer),
                    })
                    .collect()
            })
            .collect();

        let result = self
            .upload_and_pay(&job, &plan, &targets, &contracts, name, op_id)
            .instrument(span.clone())
            .await;
        if let Err(e) = &result {
            warn!(parent: &span, "put failed: {e}");
            if !matches!(
                e,
                Error::BitcoindUnreachable(_) | Error::PaymentRejected { .. }
            ) {
                self.abandon(&job.stored_shards(), &contracts).await;
            }
        }
        result
    }

    async fn upload_and_pay(
        &self,
        job: &Arc<UploadJob>,
        plan: &[Planned],
        targets: &[Vec<Target>],
        contracts: &[Contract],
        name: String,
        op_id: Option<String>,
    ) -> Result<p2pstore_rpc::PutResult> {
        self.check_funds(contracts)?;
        let progress = Arc::new(self.progress.start(op_id, job.size));
        let segments = futures::stream::iter(0..plan.len())
            .map(|i| {
                let job = job.clone();
                let net = self.net.clone();
                let progress = progress.clone();
                let planned = plan[i].clone();
                let targets = targets[i].clone();
                async move {
                    job.upload(&net, i as u64, planned, &targets, &progress)
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
            scheme: job.scheme,
            segments,
        };
        // The manifest is durable before the payment, so a crash after
        // paying never loses track of a paid-for file.
        self.manifests.insert(&manifest)?;
        crate::failpoint::hit("before-pay");
        if let Err(e) = self.pay(job.file_id, contracts).await {
            if matches!(
                e,
                Error::InsufficientFunds { .. }
                    | Error::Wallet(_)
                    | Error::PaymentDeadlinePassed { .. }
                    | Error::InvalidAddress(_)
            ) {
                self.manifests.remove(&job.file_id)?;
            }
            return Err(e);
        }
        info!(size = job.size, providers = contracts.len(), "put finished");
        Ok(p2pstore_rpc::PutResult {
            file_id: job.file_id.to_string(),
            name,
            size: job.size,
            segments: job.count,
            redundancy: job.scheme.label(),
            providers: manifest.providers().iter().map(|p| p.to_string()).collect(),
        })
    }

    /// Insufficient funds must stop a put or repair before any byte is sent.
    pub(super) fn check_funds(&self, contracts: &[Contract]) -> Result<()> {
        let mut outputs = Vec::new();
        for c in contracts {
            outputs.push((c.payout_address.clone(), c.amount_sat));
        }
        let probe = self.wallet.build_signed_tx(&outputs, self.fee_rate())?;
        self.wallet.cancel_tx(&probe);
        Ok(())
    }

    /// Providers the client will use, best first: protocol, term, price
    /// cap and audit score filter them; price weighted by reliability
    /// ranks them.
    pub(super) async fn candidates(&self) -> Result<Vec<Candidate>> {
        let offers = self.affordable(self.discover_offers().await?)?;
        let mut out: Vec<Candidate> = offers
            .into_iter()
            // Below the minimum audit score: no new shards.
            .filter(|f| self.audits.eligible(&f.peer))
            .map(|f| Candidate {
                ip: first_ip(&f.addrs),
                score: self.reliability.get(&f.peer).score(),
                peer: f.peer,
                offer: f.offer,
            })
            .collect();
        out.sort_by(|a, b| {
            a.effective_price()
                .total_cmp(&b.effective_price())
                .then(b.offer.free_bytes.cmp(&a.offer.free_bytes))
                .then(a.peer.cmp(&b.peer))
        });
        Ok(out)
    }

    /// Offers the client accepts: its protocol, its term, its price cap.
    fn affordable(&self, offers: Vec<FoundProvider>) -> Result<Vec<FoundProvider>> {
        if offers.is_empty() {
            return Err(Error::NoProvider("no providers found in the DHT".into()));
        }
        let term = self.term_blocks;
        let usable: Vec<_> = offers
            .iter()
            .filter(|f| {
                let o = &f.offer;
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
            .filter(|f| f.offer.price_sat_per_gib_month <= max)
            .cloned()
            .collect();
        if cheap.is_empty() {
            let lowest = usable
                .iter()
                .map(|f| f.offer.price_sat_per_gib_month)
                .min()
                .unwrap_or(0);
            return Err(Error::PriceTooHigh(format!(
                "the cheapest offer is {lowest} sat/GiB/month, above the maximum of {max} (--max-price-sat-per-gib-month)"
            )));
        }
        Ok(cheap)
    }

    /// Agrees one contract per provider for the given shards, all or
    /// nothing; results are in the order of `groups`.
    pub(super) async fn propose_all(
        &self,
        file_id: FileId,
        groups: &[(PeerId, Offer, Vec<ShardSpec>)],
    ) -> Result<Vec<Contract>> {
        let term = self.term_blocks;
        let asks = groups.iter().map(|(peer, offer, shards)| async move {
            let peer = *peer;
            let bytes = shards.iter().map(|s| s.size).sum();
            let price = offer.price_sat_per_gib_month;
            let amount = contract_amount(price, bytes, term).ok_or_else(|| {
                Error::ProviderRejected {
                    peer,
                    reason: format!("its price of {price} sat/GiB/month overflows the amount"),
                }
            })?;
            let contract_id = ContractId::random()?;
            let proposal = Proposal {
                contract_id,
                shards: shards.clone(),
                term_blocks: term,
                price_sat_per_gib_month: price,
                amount_sat: amount,
            };
            let accepted = self
                .net
                .propose(peer, proposal.clone())
                .await
                .map_err(|e| e.at(peer))?;
            let address = self
                .wallet
                .check_network(accepted.payout_address)
                .map_err(|e| Error::ProviderRejected {
                    peer,
                    reason: format!("payout address: {e}"),
                })?;
            let contract = Contract::accepted(
                Role::Client,
                peer,
                Some(file_id),
                &proposal,
                address,
                accepted.deadline_height,
            );
            self.contracts.put(&contract)?;
            info!(%peer, contract = %contract_id.short(), bytes, amount_sat = amount, "contract accepted");
            Ok::<_, Error>(contract)
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

    /// Undoes work that will not be paid: deletes what was uploaded and
    /// forgets the contracts, so neither side keeps a dangling record.
    pub(super) async fn abandon(&self, stored: &[(ContractId, ShardId)], contracts: &[Contract]) {
        for c in contracts {
            let ids: Vec<ShardId> = stored
                .iter()
                .filter(|(cid, _)| *cid == c.contract_id)
                .map(|(_, s)| *s)
                .collect();
            if !ids.is_empty()
                && let Err(e) = self.net.delete(c.peer, c.contract_id, ids).await
            {
                warn!(peer = %c.peer, contract = %c.contract_id.short(), "cleanup delete failed: {e}");
            }
            let _ = self.contracts.remove(&c.contract_id);
        }
    }
}

impl ClientService {
    /// Undoes contracts any of whose shards may have been uploaded.
    pub(super) async fn abandon_contracts(&self, contracts: &[Contract]) {
        let all: Vec<(ContractId, ShardId)> = contracts
            .iter()
            .flat_map(|c| c.shards.iter().map(move |s| (c.contract_id, s.id)))
            .collect();
        self.abandon(&all, contracts).await
    }
}

fn open_source(path: &Path) -> Result<(std::fs::File, String, u64)> {
    let meta = std::fs::metadata(path)
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
    let file = std::fs::File::open(path)
        .map_err(|e| Error::InvalidPath(format!("cannot open {}: {e}", path.display())))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".into());
    Ok((file, name, meta.len()))
}

/// The contract agreed with `peer`, given `propose_all`'s input and output.
pub(super) fn contract_for(
    groups: &[(PeerId, Offer, Vec<ShardSpec>)],
    contracts: &[Contract],
    peer: &PeerId,
) -> ContractId {
    groups
        .iter()
        .position(|g| g.0 == *peer)
        .map(|g| contracts[g].contract_id)
        .unwrap_or_default()
}

/// Picks `n` distinct candidates with `size` bytes free, best first,
/// preferring distinct IP addresses while there are enough of them.
pub(super) fn pick_distinct(
    cands: &[Candidate],
    free: &[u64],
    size: u64,
    n: usize,
    exclude: &[PeerId],
) -> Option<Vec<usize>> {
    let eligible: Vec<usize> = (0..cands.len())
        .filter(|&i| free[i] >= size && !exclude.contains(&cands[i].peer))
        .collect();
    let mut chosen: Vec<usize> = Vec::with_capacity(n);
    let mut ips = HashSet::new();
    for &i in &eligible {
        if chosen.len() < n && cands[i].ip.is_none_or(|ip| ips.insert(ip)) {
            chosen.push(i);
        }
    }
    for &i in &eligible {
        if chosen.len() < n && !chosen.contains(&i) {
            chosen.push(i);
        }
    }
    (chosen.len() == n).then_some(chosen)
}

/// For each segment, the candidate index of each of its n shards. Fills
/// the best providers first; fails when space runs out anywhere.
fn place(plan: &[Planned], cands: &[Candidate], scheme: Scheme) -> Result<Vec<Vec<usize>>> {
    let mut free: Vec<u64> = cands.iter().map(|c| c.offer.free_bytes).collect();
    let mut out = Vec::with_capacity(plan.len());
    for (i, seg) in plan.iter().enumerate() {
        let size = seg.shards.first().map(|s| s.size).unwrap_or(0);
        let chosen = pick_distinct(cands, &free, size, scheme.n as usize, &[]).ok_or_else(|| {
            let total: u64 = plan.iter().flat_map(|p| &p.shards).map(|s| s.size).sum();
            Error::NoProvider(format!(
                "{} provider(s) found, not enough room: the file needs {total} bytes of shards, \
                 and segment {i} needs {} provider(s) with {size} bytes free each",
                cands.len(),
                scheme.n
            ))
        })?;
        for &c in &chosen {
            free[c] -= size;
        }
        out.push(chosen);
    }
    Ok(out)
}

struct UploadJob {
    file: std::fs::File,
    key: FileKey,
    file_id: FileId,
    size: u64,
    count: u64,
    scheme: Scheme,
    client: PeerId,
    reliability: Reliability,
    /// Shards providers acknowledged, for cleanup if the put fails.
    stored: Mutex<Vec<(ContractId, ShardId)>>,
}

impl UploadJob {
    fn stored_shards(&self) -> Vec<(ContractId, ShardId)> {
        self.stored.lock().map(|s| s.clone()).unwrap_or_default()
    }

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
                        let plain_hash = sha256(&buf);
                        let plain_len = buf.len() as u64;
                        let nonce = job.key.seal(&job.file_id, i, job.count, &mut buf)?;
                        let shards = job.scheme.encode(&buf)?;
                        Ok(Planned {
                            nonce,
                            plain_hash,
                            plain_len,
                            cipher_len: buf.len() as u64,
                            shards: shards
                                .iter()
                                .map(|s| ShardSpec {
                                    id: ShardId::of(s),
                                    size: s.len() as u64,
                                })
                                .collect(),
                        })
                    })
                    .await?
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
        targets: &[Target],
        progress: &Op,
    ) -> Result<Segment> {
        let job = self.clone();
        let nonce = planned.nonce;
        let plain_hash = planned.plain_hash;
        let shards = tokio::task::spawn_blocking(move || -> Result<Vec<Vec<u8>>> {
            let mut buf = job.read_segment(i)?;
            if sha256(&buf) != plain_hash {
                return Err(Error::SourceChanged(format!(
                    "segment {i} of the file (nothing was sent for it)"
                )));
            }
            job.key
                .seal_with_nonce(&job.file_id, i, job.count, &nonce, &mut buf)?;
            job.scheme.encode(&buf)
        })
        .await??;
        let sends = shards
            .into_iter()
            .zip(targets)
            .zip(&planned.shards)
            .enumerate()
            .map(|(j, ((data, t), spec))| {
                let job = self.clone();
                async move {
                    let started = Instant::now();
                    let r = job.send_shard(net, *t, spec, data).await;
                    match &r {
                        Ok(_) => job.reliability.success(&t.peer, started.elapsed()),
                        Err(_) => job.reliability.failure(&t.peer),
                    }
                    r.map(|receipt| ShardRef {
                        index: j as u16,
                        shard_id: spec.id,
                        size: spec.size,
                        provider: t.peer,
                        contract_id: t.contract_id,
                        receipt,
                    })
                }
            });
        let refs = futures::future::try_join_all(sends).await?;
        progress.add(planned.plain_len);
        Ok(Segment {
            nonce,
            plain_len: planned.plain_len,
            cipher_len: planned.cipher_len,
            shards: refs,
        })
    }

    async fn send_shard(
        &self,
        net: &NetClient,
        t: Target,
        spec: &ShardSpec,
        data: Vec<u8>,
    ) -> Result<Receipt> {
        let receipt = store_shard(net, self.client, t, spec, data).await?;
        if let Ok(mut s) = self.stored.lock() {
            s.push((t.contract_id, spec.id));
        }
        Ok(receipt)
    }
}

/// Stores one shard under a contract and returns the provider's verified
/// receipt.
pub(super) async fn store_shard(
    net: &NetClient,
    client: PeerId,
    t: Target,
    spec: &ShardSpec,
    data: Vec<u8>,
) -> Result<Receipt> {
    let peer = t.peer;
    let receipt = net
        .store(peer, t.contract_id, spec.id, data)
        .await
        .map_err(|e| e.at(peer))?;
    if !receipt.verify(&peer, &client, &t.contract_id, &spec.id, spec.size) {
        return Err(Error::Integrity(format!(
            "provider {peer} sent an invalid receipt for shard {}",
            spec.id.short()
        )));
    }
    Ok(receipt)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(free: u64, ip: [u8; 4]) -> Candidate {
        Candidate {
            peer: PeerId::random(),
            offer: Offer {
                protocol_version: PROTOCOL_VERSION,
                free_bytes: free,
                price_sat_per_gib_month: 1,
                min_term_blocks: 1,
                max_term_blocks: 10_000,
                max_shard_bytes: MAX_SHARD_BYTES,
            },
            ip: Some(IpAddr::from(ip)),
            score: 0.5,
        }
    }

    fn planned(n: usize, size: u64) -> Planned {
        Planned {
            nonce: [0; NONCE_LEN],
            plain_hash: [0; 32],
            plain_len: 1,
            cipher_len: 17,
            shards: (0..n)
                .map(|_| ShardSpec {
                    id: ShardId::default(),
                    size,
                })
                .collect(),
        }
    }

    #[test]
    fn single_copy_fills_best_first_and_spills() {
        let cands = vec![cand(250, [1, 1, 1, 1]), cand(1000, [1, 1, 1, 1])];
        let plan = vec![planned(1, 100), planned(1, 100), planned(1, 100)];
        let p = place(&plan, &cands, Scheme::LOW).unwrap();
        assert_eq!(p, vec![vec![0], vec![0], vec![1]]);
        assert!(matches!(
            place(&[planned(1, 2000)], &cands, Scheme::LOW),
            Err(Error::NoProvider(_))
        ));
    }

    #[test]
    fn shards_of_a_segment_go_to_distinct_providers_and_ips() {
        // Two on one IP, three elsewhere: 3 distinct IPs are preferred.
        let cands = vec![
            cand(1000, [1, 1, 1, 1]),
            cand(1000, [1, 1, 1, 1]),
            cand(1000, [2, 2, 2, 2]),
            cand(1000, [3, 3, 3, 3]),
            cand(1000, [4, 4, 4, 4]),
        ];
        let p = place(&[planned(3, 10)], &cands, Scheme { k: 2, n: 3 }).unwrap();
        assert_eq!(p, vec![vec![0, 2, 3]]);
        // With too few distinct IPs, the same IP is used again.
        let p = place(&[planned(5, 10)], &cands, Scheme { k: 2, n: 5 }).unwrap();
        let mut got = p[0].clone();
        got.sort();
        assert_eq!(got, vec![0, 1, 2, 3, 4]);
        assert!(place(&[planned(4, 10)], &cands[..3], Scheme::MEDIUM).is_err());
    }
}
