//! The provider role: answers offers, stores and serves shards, deletes them.
//! Nodes that are not providers still run this, refusing storage, so every
//! inbound request gets an answer instead of a timeout.

mod contracts;
pub use contracts::{MAX_QUOTES, MAX_QUOTES_PER_PEER};
mod pointers;
pub mod store;

use std::collections::HashSet;
use std::sync::Arc;

use libp2p::PeerId;
use libp2p::identity::Keypair;
use tracing::{Instrument, debug, info_span, warn};

use crate::contracts::{ContractStore, Role};
use crate::db::{Tree, trees};
use crate::ids::{ContractId, RevisionId, ShardId};
use crate::network::{Client, Inbound, inbound};
use crate::protocol::*;
use crate::wallet::WalletService;
use store::ShardStore;

#[derive(Debug, Clone)]
pub struct ProviderTerms {
    pub price_sat_per_gib_month: u64,
    pub min_term_blocks: u32,
    pub max_term_blocks: u32,
}

/// How the provider holds clients to their payments, from config.
#[derive(Debug, Clone, Copy)]
pub struct PaymentRules {
    /// Blocks a quote stays open for payment.
    pub payment_window_blocks: u32,
    /// Blocks past its paid-through height before an unpaid contract ends.
    pub grace_blocks: u32,
    /// Confirmations before a payment is final.
    pub min_confirmations: u32,
}

#[derive(Clone)]
pub struct ProviderService {
    pub store: Option<Arc<ShardStore>>,
    pub terms: ProviderTerms,
    pub contracts: ContractStore,
    revisions: Tree<RevisionId, contracts::Revision>,
    spare_addresses: Tree<String, ()>,
    /// Clients' index pointers (hex), kept while their contracts run.
    pointers: Tree<PeerId, String>,
    ledger: Arc<contracts::Ledger>,
    /// Serializes payment notices: each reads, checks and rewrites a contract.
    notice_lock: Arc<tokio::sync::Mutex<()>>,
    key: Keypair,
    net: Client,
    events: crate::events::Events,
    /// Set at shutdown: requests that come now are turned away, those
    /// already taken are answered.
    stopping: Arc<std::sync::atomic::AtomicBool>,
    wallet: Option<WalletService>,
    payment_window_blocks: u32,
    grace_blocks: u32,
    min_confirmations: u32,
}

impl ProviderService {
    /// A provider when `store` and `wallet` are given; otherwise a node
    /// that refuses storage requests politely.
    // Each argument is a separate part the node owns and hands over once.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        db: &sled::Db,
        store: Option<Arc<ShardStore>>,
        wallet: Option<WalletService>,
        terms: ProviderTerms,
        rules: PaymentRules,
        key: Keypair,
        net: Client,
        events: crate::events::Events,
    ) -> crate::Result<Self> {
        let this = ProviderService {
            store,
            terms,
            contracts: ContractStore::open(db, Role::Provider)?,
            revisions: Tree::open(db, trees::REVISIONS)?,
            spare_addresses: Tree::open(db, trees::SPARE_ADDRESSES)?,
            pointers: Tree::open(db, trees::POINTERS)?,
            ledger: Arc::default(),
            notice_lock: Arc::default(),
            key,
            net,
            events,
            stopping: Arc::default(),
            wallet,
            payment_window_blocks: rules.payment_window_blocks,
            grace_blocks: rules.grace_blocks,
            min_confirmations: rules.min_confirmations,
        };
        this.load_ledger()?;
        Ok(this)
    }

    /// Serves inbound requests in the queue's fair order, each on its own
    /// task holding its worker slot until answered.
    pub fn spawn(self, mut inbound: inbound::Receiver) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            while let Some((req, ticket)) = inbound.next().await {
                let this = self.clone();
                tokio::spawn(async move {
                    this.handle(req).await;
                    drop(ticket);
                });
            }
        })
    }

    /// Turns away peer requests from now on: the node is shutting down.
    pub fn stop_accepting(&self) {
        self.stopping
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    async fn handle(&self, req: Inbound) {
        if self.stopping.load(std::sync::atomic::Ordering::Relaxed) {
            let busy = || WireError::new(WireErrorKind::Unavailable, "shutting down; try later");
            return match req {
                Inbound::Control { channel, .. } => {
                    self.net
                        .respond_control(channel, ControlResponse::Error(busy()))
                        .await
                }
                Inbound::Shard { channel, .. } => {
                    self.net
                        .respond_shard(channel, ShardResponse::Error(busy()))
                        .await
                }
            };
        }
        match req {
            Inbound::Control {
                peer,
                request,
                channel,
            } => {
                let span = info_span!("control", %peer);
                debug!(parent: &span, request = request.kind(), "control request");
                let response = self.on_control(peer, request).instrument(span).await;
                self.net.respond_control(channel, response).await;
            }
            Inbound::Shard {
                peer,
                request,
                channel,
            } => {
                let span = info_span!("shard", %peer);
                let response = self.on_shard(peer, request).instrument(span).await;
                self.net.respond_shard(channel, response).await;
            }
        }
    }

    fn not_provider() -> WireError {
        WireError::new(
            WireErrorKind::Forbidden,
            "this node is not a storage provider",
        )
    }

    pub fn offer(&self) -> Option<Offer> {
        let store = self.store.as_ref()?;
        self.wallet.as_ref()?;
        Some(Offer {
            protocol_version: PROTOCOL_VERSION,
            free_bytes: store.free(),
            price_sat_per_gib_month: self.terms.price_sat_per_gib_month,
            min_term_blocks: self.terms.min_term_blocks,
            max_term_blocks: self.terms.max_term_blocks,
            max_shard_bytes: MAX_SHARD_BYTES,
        })
    }

    async fn on_control(&self, peer: PeerId, request: ControlRequest) -> ControlResponse {
        let Some(store) = self.store.clone() else {
            return ControlResponse::Error(Self::not_provider());
        };
        match request {
            ControlRequest::GetOffer => match self.offer() {
                Some(o) => ControlResponse::Offer(o),
                None => ControlResponse::Error(Self::not_provider()),
            },
            ControlRequest::Propose(p) => self.propose(peer, p).await,
            ControlRequest::PaymentNotice(n) => self.payment_notice(peer, n).await,
            ControlRequest::Delete {
                contract_id,
                shard_ids,
            } => {
                if shard_ids.len() > MAX_DELETE_IDS {
                    return ControlResponse::Error(WireError::new(
                        WireErrorKind::TooLarge,
                        format!("at most {MAX_DELETE_IDS} ids per delete"),
                    ));
                }
                let res = tokio::task::spawn_blocking(move || {
                    store.delete(&peer, &contract_id, &shard_ids)
                })
                .await;
                match res {
                    Ok(Ok((count, bytes))) => {
                        self.ledger.release(&contract_id, bytes);
                        debug!(contract = %contract_id.short(), count, bytes, "deleted shards");
                        ControlResponse::Deleted { count, bytes }
                    }
                    Ok(Err(e)) => ControlResponse::Error(e),
                    Err(e) => ControlResponse::Error(WireError::new(
                        WireErrorKind::Internal,
                        e.to_string(),
                    )),
                }
            }
            ControlRequest::List { contract_id, after } => self
                .list(peer, contract_id, after, store)
                .await
                .unwrap_or_else(ControlResponse::Error),
            ControlRequest::Audit {
                contract_id,
                challenges,
            } => {
                let asked = challenges.len() as u64;
                let answer = self.audit(peer, contract_id, challenges, store).await;
                let missing = answer.as_ref().map_or(0, |a| {
                    a.iter()
                        .filter(|x| matches!(x, AuditAnswer::Missing))
                        .count() as u64
                });
                self.events.emit(p2pstore_rpc::EventKind::AuditAnswered {
                    peer_id: peer.to_string(),
                    contract_id: contract_id.to_string(),
                    challenges: asked,
                    missing,
                    refused: answer.as_ref().err().map(|e| e.message.clone()),
                });
                match answer {
                    Ok(answers) => ControlResponse::Audited { answers },
                    Err(e) => ControlResponse::Error(e),
                }
            }
            ControlRequest::Contract { contract_id } => {
                if let Err(e) = self.check_client(&peer, &contract_id) {
                    return ControlResponse::Error(e);
                }
                match self.contracts.get(&contract_id) {
                    Ok(Some(c)) => ControlResponse::Contract(self.contract_status(&c)),
                    Ok(None) => ControlResponse::Error(WireError::new(
                        WireErrorKind::UnknownContract,
                        "contract vanished",
                    )),
                    Err(e) => ControlResponse::Error(WireError::new(
                        WireErrorKind::Internal,
                        e.to_string(),
                    )),
                }
            }
            ControlRequest::PublishPointer { record } => self.keep_pointer(peer, record).await,
        }
    }

    /// Only a contract's client may audit or list it. Someone else's
    /// contract looks exactly like none, so ids leak nothing.
    fn check_client(&self, peer: &PeerId, contract_id: &ContractId) -> Result<(), WireError> {
        let owned = self
            .contracts
            .get(contract_id)
            .map_err(|e| WireError::new(WireErrorKind::Internal, e.to_string()))?
            .is_some_and(|c| c.peer == *peer);
        if owned {
            Ok(())
        } else {
            Err(WireError::new(
                WireErrorKind::UnknownContract,
                format!("no contract {} with you", contract_id.short()),
            ))
        }
    }

    /// One page of the shards the peer's contract holds.
    async fn list(
        &self,
        peer: PeerId,
        contract_id: ContractId,
        after: Option<ShardId>,
        store: Arc<ShardStore>,
    ) -> Result<ControlResponse, WireError> {
        self.check_client(&peer, &contract_id)?;
        let page = tokio::task::spawn_blocking(move || {
            store.contract_shards_page(&contract_id, after, MAX_LIST_SHARDS)
        })
        .await;
        match page {
            Ok(Ok((shards, more))) => Ok(ControlResponse::Listed { shards, more }),
            Ok(Err(e)) => Err(WireError::new(WireErrorKind::Internal, e.to_string())),
            Err(e) => Err(WireError::new(WireErrorKind::Internal, e.to_string())),
        }
    }

    /// Checks an audit's limits, then answers it from disk. Every check
    /// costs at most a sled read per challenge, before any shard is read.
    async fn audit(
        &self,
        peer: PeerId,
        contract_id: ContractId,
        challenges: Vec<Challenge>,
        store: Arc<ShardStore>,
    ) -> Result<Vec<AuditAnswer>, WireError> {
        if challenges.len() > MAX_AUDIT_CHALLENGES {
            return Err(WireError::new(
                WireErrorKind::TooLarge,
                format!(
                    "{} challenges; at most {MAX_AUDIT_CHALLENGES} per audit",
                    challenges.len()
                ),
            ));
        }
        let mut distinct = HashSet::with_capacity(challenges.len());
        if let Some(dup) = challenges.iter().find(|c| !distinct.insert(**c)) {
            return Err(WireError::new(
                WireErrorKind::BadRequest,
                format!(
                    "duplicate challenge: shard {} leaf {}",
                    dup.shard_id.short(),
                    dup.leaf
                ),
            ));
        }
        self.check_client(&peer, &contract_id)?;
        let span =
            info_span!("audit", contract = %contract_id.short(), challenges = challenges.len());
        tokio::task::spawn_blocking(move || store.prove(&peer, &contract_id, &challenges))
            .instrument(span)
            .await
            .map_err(|e| WireError::new(WireErrorKind::Internal, e.to_string()))?
    }

    async fn on_shard(&self, peer: PeerId, request: ShardRequest) -> ShardResponse {
        let Some(store) = self.store.clone() else {
            return ShardResponse::Error(Self::not_provider());
        };
        match request {
            ShardRequest::Store {
                contract_id,
                shard_id,
                data,
            } => {
                // Only against paid allowance: the bytes are claimed before
                // they are written, and given back if the write fails.
                let size = data.len() as u64;
                if let Err(e) = self.ledger.reserve(&peer, &contract_id, size) {
                    return ShardResponse::Error(e);
                }
                let span =
                    info_span!("store", shard = %shard_id.short(), contract = %contract_id.short());
                let worker = store.clone();
                let res = tokio::task::spawn_blocking(move || {
                    worker.store(&peer, contract_id, shard_id, &data)
                })
                .instrument(span)
                .await;
                if !matches!(res, Ok(Ok((_, true)))) {
                    self.ledger.release(&contract_id, size);
                }
                if matches!(res, Ok(Ok(_))) && !self.ledger.is_open(&contract_id) {
                    // The contract ended while the bytes were being
                    // written: they must not outlive it.
                    let _ = store.delete(&peer, &contract_id, &[shard_id]);
                    return ShardResponse::Error(WireError::new(
                        WireErrorKind::UnknownContract,
                        "the contract ended",
                    ));
                }
                match res {
                    Ok(Ok((meta, _))) => match Receipt::sign(
                        &self.key,
                        contract_id,
                        shard_id,
                        meta.size,
                        &peer,
                        meta.stored_at,
                    ) {
                        Some(r) => ShardResponse::Stored(r),
                        None => ShardResponse::Error(WireError::new(
                            WireErrorKind::Internal,
                            "signing failed",
                        )),
                    },
                    Ok(Err(e)) => {
                        warn!(%peer, "shard refused: {}", e.message);
                        ShardResponse::Error(e)
                    }
                    Err(e) => {
                        ShardResponse::Error(WireError::new(WireErrorKind::Internal, e.to_string()))
                    }
                }
            }
            ShardRequest::Fetch { shard_id } => {
                match tokio::task::spawn_blocking(move || store.fetch(&peer, &shard_id)).await {
                    Ok(Ok(data)) => ShardResponse::Data(data),
                    Ok(Err(e)) => ShardResponse::Error(e),
                    Err(e) => {
                        ShardResponse::Error(WireError::new(WireErrorKind::Internal, e.to_string()))
                    }
                }
            }
        }
    }
}
