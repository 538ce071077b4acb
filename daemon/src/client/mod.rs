//! The client role: finds providers, and puts, gets and removes files,
//! paying for storage through contracts ([`put`], [`get`], [`payment`]).

mod get;
mod health;
pub mod manifest;
mod payment;
mod put;
pub mod reliability;

use std::str::FromStr;
use std::sync::Arc;

use libp2p::{Multiaddr, PeerId};
use tracing::warn;

use crate::contracts::{ContractStore, Role, State};
use crate::erasure::Scheme;
use crate::error::{Error, Result};
use crate::keys::AccountKeys;
use crate::network::Client as NetClient;
use crate::progress;
use crate::protocol::*;
use crate::wallet::WalletService;
use manifest::{ManifestStore, parse_file_id};
use reliability::Reliability;

/// What the client asks of providers, from config.
#[derive(Clone, Debug)]
pub struct ClientTerms {
    pub max_price_sat_per_gib_month: u64,
    pub term_blocks: u32,
    pub fee_rate_sat_vb: Option<u64>,
    pub default_scheme: Scheme,
    /// Repair a segment once its valid shards fall below K + this margin.
    pub repair_margin: u16,
}

#[derive(Clone)]
pub struct ClientService {
    net: NetClient,
    keys: Arc<AccountKeys>,
    manifests: ManifestStore,
    pub contracts: ContractStore,
    payments: sled::Tree,
    peers: sled::Tree,
    progress: progress::Registry,
    wallet: WalletService,
    max_price_sat_per_gib_month: u64,
    term_blocks: u32,
    fee_rate_sat_vb: Option<u64>,
    default_scheme: Scheme,
    repair_margin: u16,
    reliability: Reliability,
    /// One repair at a time, whether from RPC or the background check.
    repair_lock: Arc<tokio::sync::Mutex<()>>,
    /// Serializes building and broadcasting payments.
    pay_lock: Arc<tokio::sync::Mutex<()>>,
}

fn peer_from_str(s: &str) -> Result<PeerId> {
    PeerId::from_str(s).map_err(|_| Error::Internal(format!("bad peer id {s} in manifest")))
}

impl ClientService {
    pub async fn new(
        db: &sled::Db,
        net: NetClient,
        keys: Arc<AccountKeys>,
        wallet: WalletService,
        terms: ClientTerms,
        progress: progress::Registry,
    ) -> Result<Self> {
        let peers = db.open_tree("peers")?;
        // Known provider addresses let a restarted client reach its
        // providers before the DHT has been walked again.
        for item in peers.iter() {
            let (k, v) = item?;
            let (Ok(peer), Ok(addrs)) = (
                PeerId::from_bytes(&k),
                serde_json::from_slice::<Vec<String>>(&v),
            ) else {
                continue;
            };
            let addrs = addrs
                .iter()
                .filter_map(|a| a.parse::<Multiaddr>().ok())
                .collect();
            net.add_addresses(peer, addrs).await;
        }
        Ok(ClientService {
            net,
            keys,
            manifests: ManifestStore::open(db)?,
            contracts: ContractStore::open(db, Role::Client)?,
            payments: db.open_tree("payments")?,
            peers,
            progress,
            wallet,
            max_price_sat_per_gib_month: terms.max_price_sat_per_gib_month,
            term_blocks: terms.term_blocks,
            fee_rate_sat_vb: terms.fee_rate_sat_vb,
            default_scheme: terms.default_scheme,
            repair_margin: terms.repair_margin,
            reliability: Reliability::open(db)?,
            repair_lock: Arc::new(tokio::sync::Mutex::new(())),
            pay_lock: Arc::new(tokio::sync::Mutex::new(())),
        })
    }

    pub fn manifests(&self) -> &ManifestStore {
        &self.manifests
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
        if let Ok(v) = serde_json::to_vec(&addrs) {
            let _ = self.peers.insert(peer.to_bytes(), v);
        }
    }

    /// Providers in the DHT right now, each with the offer it just gave,
    /// cheapest first. Silent or misbehaving providers are left out.
    pub async fn discover_offers(&self) -> Result<Vec<(PeerId, Offer, Vec<Multiaddr>)>> {
        let me = self.net.local_peer_id();
        let peers: Vec<PeerId> = self
            .net
            .get_providers()
            .await?
            .into_iter()
            .filter(|p| *p != me)
            .collect();
        let asks = peers.into_iter().map(|peer| async move {
            match self.net.control(peer, ControlRequest::GetOffer).await {
                Ok(ControlResponse::Offer(offer)) => {
                    self.remember_addresses(peer).await;
                    let addrs = self.net.peer_addresses(peer).await.unwrap_or_default();
                    Some((peer, offer, addrs))
                }
                Ok(_) => None,
                Err(e) => {
                    warn!(%peer, "no offer: {e}");
                    None
                }
            }
        });
        let mut offers: Vec<_> = futures::future::join_all(asks)
            .await
            .into_iter()
            .flatten()
            .collect();
        offers.sort_by_key(|(p, o, _)| (o.price_sat_per_gib_month, u64::MAX - o.free_bytes, *p));
        Ok(offers)
    }

    pub async fn rm(&self, file_id: &str) -> Result<p2pstore_rpc::RmResult> {
        let id = parse_file_id(file_id)?;
        let manifest = self.manifests.get(&id)?;
        manifest.validate()?;
        let mut groups: Vec<((String, ContractId), Vec<ShardId>)> = Vec::new();
        for s in manifest.segments.iter().flat_map(|s| &s.shards) {
            let key = (s.provider.clone(), s.contract_id);
            match groups.iter_mut().find(|(k, _)| *k == key) {
                Some((_, ids)) => ids.push(s.shard_id),
                None => groups.push((key, vec![s.shard_id])),
            }
        }
        let mut deleted = 0;
        let mut unreachable = Vec::new();
        for ((provider, contract_id), shard_ids) in groups {
            let peer = peer_from_str(&provider)?;
            match self
                .net
                .control(
                    peer,
                    ControlRequest::Delete {
                        contract_id,
                        shard_ids,
                    },
                )
                .await
            {
                Ok(ControlResponse::Deleted { count }) => deleted += count,
                Ok(_) | Err(_) => unreachable.push(provider),
            }
            self.contracts
                .update(&contract_id, |c| c.state = State::Deleted)?;
        }
        self.manifests.remove(&id)?;
        Ok(p2pstore_rpc::RmResult {
            file_id: hex::encode(id),
            deleted_shards: deleted,
            unreachable_providers: unreachable,
        })
    }
}
