//! The client role: finds providers, and puts, gets and removes files,
//! paying for storage through one contract per provider, prepaid per put
//! and paid period by period while audits pass ([`put`], [`get`],
//! [`pipeline`], [`payment`]); and audits what it pays for ([`audit`],
//! [`health`]).

pub mod audit;
pub mod backup;
mod budget;
pub mod directory;
mod get;
mod health;
pub mod manifest;
mod payment;
#[cfg(feature = "fuzz")]
pub use payment::{read_intent_record, sample_intent_record};
mod pipeline;
mod put;
pub use put::PLACEMENT_SPARES;
pub mod reliability;
mod uploads;

use std::sync::Arc;

use libp2p::{Multiaddr, PeerId};
use tracing::{info, warn};

use crate::contracts::{ContractStore, Role};
use crate::db::{Tree, trees};
use crate::erasure::Scheme;
use crate::error::Result;
use crate::ids::{ContractId, FileId};
use crate::keys::AccountKeys;
use crate::network::Client as NetClient;
use crate::progress;
use crate::protocol::*;
use crate::wallet::WalletService;
use manifest::{ManifestStore, ShardRef};
use payment::PaymentIntent;
use reliability::Reliability;

use audit::AuditBook;
pub use audit::AuditPolicy;
use directory::Directory;
pub use health::RepairScope;

/// A provider found in the DHT, with the offer it just gave, the
/// addresses we know for it and the IP its connection came from.
#[derive(Debug, Clone)]
pub struct FoundProvider {
    pub peer: PeerId,
    pub offer: Offer,
    pub addrs: Vec<Multiaddr>,
    /// Observed on the connection the offer came over, so a provider
    /// cannot pass for another network by announcing other addresses.
    pub ip: Option<std::net::IpAddr>,
}

/// How the client sets and bumps the fees of its payments, from config.
#[derive(Clone, Copy, Debug)]
pub struct FeePolicy {
    /// A fixed rate in sat/vB; None asks bitcoind for `target_blocks`.
    pub fixed_rate: Option<u64>,
    pub target_blocks: u16,
    /// A payment unconfirmed this many blocks after it went out is bumped.
    pub bump_after_blocks: u32,
    /// No payment or bump pays more per vbyte.
    pub max_rate: u64,
}

/// Where a payment's fee rate came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeeSource {
    Fixed,
    Estimate,
    /// bitcoind had no estimate, or could not be asked.
    Fallback,
}

impl FeeSource {
    pub fn as_str(self) -> &'static str {
        match self {
            FeeSource::Fixed => "fixed",
            FeeSource::Estimate => "estimate",
            FeeSource::Fallback => "fallback",
        }
    }
}

impl FeePolicy {
    /// The configured rate, else bitcoind's `estimate`, else the fallback
    /// when it has none (a fresh regtest chain) or cannot be asked; never
    /// below the relay floor nor above `max_rate`.
    pub fn choose(
        &self,
        estimate: std::result::Result<Option<u64>, crate::wallet::WalletError>,
    ) -> (u64, FeeSource) {
        let (rate, source) = match (self.fixed_rate, estimate) {
            (Some(rate), _) => (rate, FeeSource::Fixed),
            (None, Ok(Some(rate))) => (rate, FeeSource::Estimate),
            (None, Ok(None)) => (crate::wallet::DEFAULT_FEE_RATE_SAT_VB, FeeSource::Fallback),
            (None, Err(e)) => {
                tracing::warn!("fee estimate unavailable: {e}");
                (crate::wallet::DEFAULT_FEE_RATE_SAT_VB, FeeSource::Fallback)
            }
        };
        (
            rate.clamp(crate::wallet::MIN_FEE_RATE_SAT_VB, self.max_rate),
            source,
        )
    }
}

/// What the client asks of providers, from config.
#[derive(Clone, Debug)]
pub struct ClientTerms {
    pub max_price_sat_per_gib_month: u64,
    /// A file's term when its put names none.
    pub term_blocks: u32,
    /// The period of new contracts.
    pub period_blocks: u32,
    /// Pay the next period this many blocks before the current one ends.
    pub renew_before_blocks: u32,
    pub fees: FeePolicy,
    /// `wallet budget` warns when the wallet cannot pay this many periods.
    pub budget_warn_periods: u32,
    pub default_scheme: Scheme,
    /// Repair a segment once its valid shards fall below K + this margin.
    pub repair_margin: u16,
    pub audit: AuditPolicy,
    pub backup: backup::BackupPolicy,
}

/// The index backup's settings and state (see [`backup`]).
#[derive(Clone)]
struct Backup {
    dir: std::path::PathBuf,
    debounce: Option<std::time::Duration>,
    state: Tree<String, backup::BackupState>,
    /// One backup at a time.
    lock: Arc<tokio::sync::Mutex<()>>,
    /// `status`'s summary, and the change count it was computed at.
    summary: Arc<std::sync::Mutex<Option<(u64, backup::IndexSummary)>>>,
}

#[derive(Clone)]
pub struct ClientService {
    net: NetClient,
    keys: Arc<AccountKeys>,
    manifests: ManifestStore,
    pub contracts: ContractStore,
    payments: Tree<bdk_wallet::bitcoin::Txid, PaymentIntent>,
    put_ops: Tree<String, put::PutOp>,
    /// Operation ids of puts running now.
    running_ops: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
    /// Where each provider was last seen, as text (a peer's multiaddr may
    /// use protocols a later version no longer parses).
    peers: Tree<PeerId, Vec<String>>,
    /// Providers found in the DHT and their last offers.
    pub directory: Directory,
    progress: progress::Registry,
    events: crate::events::Events,
    wallet: WalletService,
    max_price_sat_per_gib_month: u64,
    term_blocks: u32,
    period_blocks: u32,
    renew_before_blocks: u32,
    fees: FeePolicy,
    budget_warn_periods: u32,
    default_scheme: Scheme,
    repair_margin: u16,
    reliability: Reliability,
    audits: AuditBook,
    /// One repair at a time, whether from RPC or the background check.
    repair_lock: Arc<tokio::sync::Mutex<()>>,
    /// Serializes building and broadcasting payments: the wallet's one
    /// spend lock, which `wallet send` takes too.
    pay_lock: Arc<tokio::sync::Mutex<()>>,
    /// Allowance held by uploads in progress, per contract.
    held: Arc<std::sync::Mutex<std::collections::HashMap<ContractId, u64>>>,
    /// Stores under way, and what providers hold that no manifest records.
    uploads: uploads::Uploads,
    notice_backoff: payment::NoticeBackoff,
    backup: Backup,
}

impl ClientService {
    pub async fn new(
        db: &sled::Db,
        net: NetClient,
        keys: Arc<AccountKeys>,
        wallet: WalletService,
        terms: ClientTerms,
        progress: progress::Registry,
        events: crate::events::Events,
    ) -> Result<Self> {
        let peers: Tree<PeerId, Vec<String>> = Tree::open(db, trees::PEERS)?;
        // Known provider addresses let a restarted client reach its
        // providers before the DHT has been walked again. The book is
        // advisory: an entry that does not decode is skipped.
        for item in peers.iter() {
            let Ok((peer, addrs)) = item else {
                continue;
            };
            let addrs = addrs
                .iter()
                .filter_map(|a| a.parse::<Multiaddr>().ok())
                .collect();
            net.add_addresses(peer, addrs).await;
        }
        let pay_lock = wallet.spend_lock();
        let payments = Tree::open(db, trees::PAYMENTS)?;
        payment::restore_reservations(&payments, &wallet)?;
        Ok(ClientService {
            directory: Directory::new(net.clone()),
            net,
            keys,
            manifests: ManifestStore::open(db)?,
            contracts: ContractStore::open(db, Role::Client)?,
            payments,
            put_ops: Tree::open(db, trees::PUT_OPS)?,
            running_ops: Default::default(),
            peers,
            progress,
            events,
            wallet,
            max_price_sat_per_gib_month: terms.max_price_sat_per_gib_month,
            term_blocks: terms.term_blocks,
            period_blocks: terms.period_blocks,
            renew_before_blocks: terms.renew_before_blocks,
            fees: terms.fees,
            budget_warn_periods: terms.budget_warn_periods,
            default_scheme: terms.default_scheme,
            repair_margin: terms.repair_margin,
            reliability: Reliability::open(db)?,
            audits: AuditBook::open(db, terms.audit)?,
            repair_lock: Arc::new(tokio::sync::Mutex::new(())),
            pay_lock,
            held: Arc::default(),
            uploads: uploads::Uploads::default(),
            notice_backoff: payment::NoticeBackoff::default(),
            backup: Backup {
                dir: terms.backup.dir,
                debounce: terms.backup.debounce,
                state: Tree::open(db, trees::INDEX_BACKUP)?,
                lock: Arc::default(),
                summary: Arc::default(),
            },
        })
    }

    pub fn manifests(&self) -> &ManifestStore {
        &self.manifests
    }

    /// The chain height the wallet has synced to.
    pub fn tip_height(&self) -> u32 {
        self.wallet.tip_height()
    }

    /// The client's contracts, with the bytes its manifests keep under each.
    pub fn contract_infos(&self) -> Result<Vec<p2pstore_rpc::ContractInfo>> {
        let stored = self.recorded_bytes()?;
        Ok(self
            .contracts
            .list()?
            .iter()
            .map(|c| {
                let bytes = stored.get(&c.contract_id).copied().unwrap_or(0);
                c.to_rpc(bytes, self.renew_before_blocks)
            })
            .collect())
    }

    /// This client's audit score of a provider (1 until audited).
    pub fn audit_score(&self, peer: &PeerId) -> f64 {
        self.audits.record(peer).score()
    }

    fn fetcher(&self) -> get::Fetcher {
        get::Fetcher {
            net: self.net.clone(),
            reliability: self.reliability.clone(),
        }
    }

    async fn remember_addresses(&self, peer: PeerId) {
        let Ok(addrs) = self.net.peer_addresses(peer).await else {
            return;
        };
        if addrs.is_empty() {
            return;
        }
        let addrs: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
        let _ = self.peers.insert_lazy(&peer, &addrs);
    }

    /// The provider directory after a refresh (a few DHT lookups, and new
    /// offers from a sample of the providers whose offer is stale), best
    /// offer first: cheapest, then most free space.
    pub async fn discover_offers(&self) -> Result<Vec<FoundProvider>> {
        for f in self.directory.refresh(directory::OFFER_SAMPLE).await? {
            self.remember_addresses(f.peer).await;
        }
        let mut offers = self.directory.fresh()?;
        offers.sort_by_key(|f| {
            (
                f.offer.price_sat_per_gib_month,
                u64::MAX - f.offer.free_bytes,
                f.peer,
            )
        });
        Ok(offers)
    }

    pub async fn rm(&self, id: FileId) -> Result<p2pstore_rpc::RmResult> {
        self.remove(id, false).await
    }

    /// Deletes a file at its providers and forgets it. Its bytes leave
    /// their contracts' allowance from the next period on, unless
    /// `keep_allowance` (an old index backup: the next one fits there).
    async fn remove(&self, id: FileId, keep_allowance: bool) -> Result<p2pstore_rpc::RmResult> {
        let manifest = self.manifests.get(&id)?;
        manifest.validate()?;
        let shards: Vec<ShardRef> = manifest
            .segments
            .iter()
            .flat_map(|s| s.shards.iter().cloned())
            .collect();
        let (deleted, unreachable) = self.drop_shards(&shards, keep_allowance).await;
        self.manifests.remove(&id)?;
        for s in &shards {
            self.audits.forget_shard(&s.shard_id);
        }
        Ok(p2pstore_rpc::RmResult {
            file_id: id.to_string(),
            deleted_shards: deleted,
            unreachable_providers: unreachable.iter().map(|p| p.to_string()).collect(),
        })
    }

    /// Deletes shards at their providers; each acknowledged shard's bytes
    /// leave its contract's allowance, so they are not paid for from the
    /// next period on. Returns the count deleted and the providers that
    /// could not be reached (their bytes stay paid for: the provider may
    /// still hold them).
    async fn drop_shards(&self, shards: &[ShardRef], keep_allowance: bool) -> (u64, Vec<PeerId>) {
        let mut groups: Vec<((PeerId, ContractId), Vec<&ShardRef>)> = Vec::new();
        for s in shards {
            let key = (s.provider, s.contract_id);
            match groups.iter_mut().find(|(k, _)| *k == key) {
                Some((_, v)) => v.push(s),
                None => groups.push((key, vec![s])),
            }
        }
        let mut deleted = 0;
        let mut unreachable = Vec::new();
        for ((peer, contract_id), refs) in groups {
            let ids = refs.iter().map(|r| r.shard_id).collect();
            match self.net.delete(peer, contract_id, ids).await {
                Ok((count, freed)) => {
                    deleted += count;
                    // Only what the provider freed leaves the allowance: a
                    // shard it no longer had was not counted there, and a
                    // period paid for less than it holds is refused.
                    let asked: u64 = refs.iter().map(|r| r.size).sum();
                    if !keep_allowance {
                        let _ = self.contracts.update(&contract_id, |c| {
                            c.allowance_bytes = c.allowance_bytes.saturating_sub(freed.min(asked));
                        });
                    }
                }
                Err(e) => {
                    warn!(%peer, "delete failed: {e}");
                    unreachable.push(peer);
                }
            }
        }
        (deleted, unreachable)
    }

    /// Forgets files whose term has ended: they are deleted at their
    /// providers and no longer paid for.
    pub async fn expire_files(&self) -> Result<()> {
        let tip = self.wallet.tip_height();
        for m in self.manifests.files()? {
            if let manifest::Term::Until(h) = m.term
                && tip >= h
            {
                info!(file_id = %m.file_id.short(), term_end = h, "file term ended; removing it");
                self.rm(m.file_id).await?;
            }
        }
        Ok(())
    }
}
