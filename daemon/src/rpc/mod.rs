//! The JSON-RPC server: the `P2pstoreApi` trait implemented over the node,
//! on one port for HTTP and WebSocket, behind bearer-token auth.
//!
//! This is the one place where a caller's text becomes typed values (file
//! ids, paths, schemes, addresses); the services below take only types.

pub mod auth;
pub mod dashboard;
pub mod error;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use jsonrpsee::core::{RpcResult, async_trait};
use jsonrpsee::server::{Server, ServerConfig, ServerHandle};
use p2pstore_rpc::*;
use zeroize::Zeroizing;

use crate::client::RepairScope;
use crate::client::manifest::Term;
use crate::erasure::Scheme;
use crate::error::{Error, Result};
use crate::ids::FileId;
use crate::node::Node;

/// Largest JSON-RPC request body: calls are small; files go by path.
const MAX_REQUEST_BODY: u32 = 1024 * 1024;
/// Bitcoin's 21 million coins, the largest amount anyone can send.
const MAX_MONEY_SAT: u64 = 21_000_000 * 100_000_000;
/// Operation ids are the caller's; this bounds what the node keeps of them.
const MAX_OP_ID_LEN: usize = 128;
/// A budget looks at most this far ahead (years of daily periods).
const MAX_BUDGET_PERIODS: u32 = 10_000;

/// A file id from a caller. Text that is no id names no file.
fn file_id(text: &str) -> Result<FileId> {
    text.trim()
        .parse()
        .map_err(|_| Error::FileNotFound(format!("{text} (not a file id)")))
}

/// Most peers one `find_providers` call may name.
pub const MAX_FIND_PEERS: usize = 1024;

/// A peer id, from a caller.
fn peer_id(text: &str) -> Result<libp2p::PeerId> {
    text.trim().parse().map_err(|_| {
        Error::InvalidParams(format!(
            "{} is not a peer id",
            crate::protocol::sanitize(text)
        ))
    })
}

/// A path on the daemon's machine, from a caller.
fn path(text: &str) -> Result<PathBuf> {
    if text.is_empty() {
        return Err(Error::InvalidPath("the path is empty".into()));
    }
    Ok(PathBuf::from(text))
}

pub struct RpcImpl {
    node: Node,
    logins: Arc<dashboard::Logins>,
}

impl RpcImpl {
    pub fn new(node: Node, logins: Arc<dashboard::Logins>) -> Self {
        RpcImpl { node, logins }
    }
}

#[async_trait]
impl P2pstoreApiServer for RpcImpl {
    async fn init(
        &self,
        password: String,
        mnemonic: Option<String>,
        birthday_height: Option<u32>,
    ) -> RpcResult<InitResult> {
        let created = self
            .node
            .init(
                Zeroizing::new(password),
                mnemonic.map(Zeroizing::new),
                birthday_height,
            )
            .await?;
        Ok(InitResult {
            mnemonic: created.mnemonic.map(|m| m.to_string()),
            peer_id: created.peer_id,
            birthday_height: created.birthday_height,
        })
    }

    async fn restore_index(&self) -> RpcResult<RestoreResult> {
        let r = self.node.client().await?.restore_index().await?;
        Ok(RestoreResult {
            index_seq: r.index_seq,
            index_file_id: r.index_file.to_string(),
            files: r.files as u64,
            contracts: r.contracts as u64,
            birthday_height: r.birthday_height,
            rejected_records: r.rejected_records as u64,
        })
    }

    async fn unlock(&self, password: String) -> RpcResult<UnlockResult> {
        Ok(UnlockResult {
            peer_id: self.node.unlock(Zeroizing::new(password)).await?,
        })
    }

    async fn put(
        &self,
        path: String,
        redundancy: Option<String>,
        term_blocks: Option<u32>,
        keep: Option<bool>,
        force: Option<bool>,
        op_id: Option<String>,
    ) -> RpcResult<PutResult> {
        if let Some(id) = &op_id
            && (id.is_empty()
                || id.len() > MAX_OP_ID_LEN
                || !id.bytes().all(|b| b.is_ascii_graphic()))
        {
            return Err(Error::InvalidParams(format!(
                "op_id must be 1 to {MAX_OP_ID_LEN} printable ASCII characters"
            ))
            .into());
        }
        let scheme = redundancy.as_deref().map(Scheme::parse).transpose()?;
        let path = self::path(&path)?;
        let client = self.node.client().await?;
        let term = match (term_blocks, keep.unwrap_or(false)) {
            (Some(_), true) => {
                return Err(
                    Error::InvalidParams("give term_blocks or keep, not both".into()).into(),
                );
            }
            (Some(0), false) => {
                return Err(Error::InvalidParams("term_blocks must be at least 1".into()).into());
            }
            (Some(blocks), false) => Some(Term::Until(client.tip_height().saturating_add(blocks))),
            (None, true) => Some(Term::Keep),
            (None, false) => None,
        };
        // Detached from this call: a caller that goes away (Ctrl-C on the
        // CLI) does not cut the put half-way. It finishes, and the same op
        // id asked again returns its result.
        let put = tokio::spawn(async move {
            client
                .put(&path, scheme, term, force.unwrap_or(false), op_id)
                .await
        });
        Ok(put
            .await
            .map_err(|e| Error::Internal(format!("the put stopped: {e}")))??)
    }

    async fn stat(&self, file_id: String) -> RpcResult<FileStat> {
        let id = self::file_id(&file_id)?;
        Ok(self.node.client().await?.stat(id)?)
    }

    async fn audit(&self, file_id: Option<String>) -> RpcResult<Vec<ProviderAudit>> {
        let id = file_id.as_deref().map(self::file_id).transpose()?;
        Ok(self.node.client().await?.audit(id).await?)
    }

    async fn audits(&self) -> RpcResult<Vec<ProviderAudits>> {
        Ok(self.node.client().await?.audits()?)
    }

    async fn repair(&self, file_id: Option<String>) -> RpcResult<RepairResult> {
        let scope = RepairScope::Full(file_id.as_deref().map(self::file_id).transpose()?);
        Ok(self.node.client().await?.repair(scope).await?)
    }

    async fn get(
        &self,
        file_id: String,
        dest: String,
        op_id: Option<String>,
    ) -> RpcResult<GetResult> {
        let id = self::file_id(&file_id)?;
        let dest = self::path(&dest)?;
        Ok(self.node.client().await?.get(id, &dest, op_id).await?)
    }

    async fn ls(&self) -> RpcResult<Vec<FileEntry>> {
        Ok(self.node.client().await?.ls()?)
    }

    async fn rm(&self, file_id: String) -> RpcResult<RmResult> {
        let id = self::file_id(&file_id)?;
        Ok(self.node.client().await?.rm(id).await?)
    }

    async fn status(&self) -> RpcResult<Status> {
        Ok(self.node.status().await?)
    }

    async fn providers(&self) -> RpcResult<Vec<ProviderInfo>> {
        let client = self.node.client().await?;
        let offers = client.discover_offers().await?;
        Ok(offers
            .into_iter()
            .map(|f| ProviderInfo {
                peer_id: f.peer.to_string(),
                addrs: f.addrs.iter().map(|a| a.to_string()).collect(),
                free_bytes: f.offer.free_bytes,
                price_sat_per_gib_month: f.offer.price_sat_per_gib_month,
                min_term_blocks: f.offer.min_term_blocks,
                max_term_blocks: f.offer.max_term_blocks,
                protocol_version: f.offer.protocol_version,
                audit_score: client.audit_score(&f.peer),
                offer_age_secs: client
                    .directory
                    .offer_age(&f.peer)
                    .unwrap_or_default()
                    .as_secs(),
            })
            .collect())
    }

    async fn find_providers(&self, peers: Option<Vec<String>>) -> RpcResult<FindProvidersResult> {
        use crate::protocol::ProviderBucket;
        let buckets: Vec<ProviderBucket> = match peers {
            None => ProviderBucket::all().collect(),
            Some(peers) => {
                if peers.len() > MAX_FIND_PEERS {
                    return Err(Error::InvalidParams(format!(
                        "at most {MAX_FIND_PEERS} peers, not {}",
                        peers.len()
                    ))
                    .into());
                }
                let mut buckets = std::collections::BTreeSet::new();
                for p in &peers {
                    buckets.insert(ProviderBucket::of(&peer_id(p)?));
                }
                buckets.into_iter().collect()
            }
        };
        let client = self.node.client().await?;
        let mut lookups = client.directory.look_up(buckets).await;
        lookups.sort_by_key(|l| l.bucket);
        let providers: std::collections::BTreeSet<String> = lookups
            .iter()
            .flat_map(|l| l.peers.iter().map(|p| p.to_string()))
            .collect();
        Ok(FindProvidersResult {
            providers: providers.into_iter().collect(),
            lookups: lookups
                .iter()
                .map(|l| BucketLookup {
                    bucket: l.bucket.index(),
                    found: l.peers.len() as u64,
                    millis: l.elapsed.as_millis() as u64,
                })
                .collect(),
            directory_size: client.directory.known() as u64,
        })
    }

    async fn wallet_balance(&self) -> RpcResult<WalletBalance> {
        Ok(self.node.wallet().await?.balance())
    }

    async fn wallet_address(&self) -> RpcResult<AddressResult> {
        let a = self
            .node
            .wallet()
            .await?
            .new_address()
            .map_err(Error::from)?;
        Ok(AddressResult {
            address: a.to_string(),
        })
    }

    async fn perf(&self) -> RpcResult<Vec<StageTime>> {
        Ok(crate::perf::snapshot())
    }

    async fn dashboard_login(&self) -> RpcResult<DashboardLogin> {
        Ok(DashboardLogin {
            code: self.logins.issue()?,
            expires_in_secs: dashboard::LOGIN_CODE_TTL.as_secs(),
        })
    }

    async fn wallet_budget(&self, periods: Option<u32>) -> RpcResult<Budget> {
        if periods.is_some_and(|p| p == 0 || p > MAX_BUDGET_PERIODS) {
            return Err(
                Error::InvalidParams(format!("periods must be 1 to {MAX_BUDGET_PERIODS}")).into(),
            );
        }
        Ok(self.node.client().await?.budget(periods).await?)
    }

    async fn wallet_send(&self, address: String, amount_sat: u64) -> RpcResult<SendResult> {
        if amount_sat == 0 || amount_sat > MAX_MONEY_SAT {
            return Err(Error::InvalidParams(format!(
                "amount {amount_sat} sat is not a valid amount"
            ))
            .into());
        }
        let wallet = self.node.wallet().await?;
        let address = wallet.parse_address(&address).map_err(Error::from)?;
        let txid = wallet
            .send_to(&address, amount_sat, None)
            .await
            .map_err(Error::from)?;
        Ok(SendResult {
            txid: txid.to_string(),
        })
    }

    async fn wallet_txs(&self) -> RpcResult<Vec<WalletTx>> {
        Ok(self.node.wallet().await?.txs())
    }

    async fn contracts(&self) -> RpcResult<Vec<ContractInfo>> {
        let s = self.node.services().await?;
        let mut out = Vec::new();
        if let Some(c) = &s.client {
            out.extend(c.contract_infos()?);
        }
        out.extend(s.provider.contract_infos()?);
        Ok(out)
    }

    async fn progress(&self, op_id: String) -> RpcResult<Option<Progress>> {
        Ok(self.node.progress().get(&op_id))
    }

    async fn discover(&self) -> RpcResult<serde_json::Value> {
        serde_json::from_str(OPENRPC_JSON).map_err(|e| Error::Internal(e.to_string()).into())
    }
}

/// The event subscription, over WebSocket.
struct EventsImpl {
    node: Node,
}

#[async_trait]
impl P2pstoreEventsServer for EventsImpl {
    async fn subscribe_events(
        &self,
        pending: jsonrpsee::PendingSubscriptionSink,
    ) -> jsonrpsee::core::SubscriptionResult {
        use tokio::sync::broadcast::error::RecvError;
        // Subscribed before accepting: nothing that happens once the
        // caller hears "subscribed" is missed.
        let mut rx = self.node.events().subscribe();
        let sink = pending.accept().await?;
        loop {
            tokio::select! {
                _ = sink.closed() => return Ok(()),
                event = rx.recv() => match event {
                    Ok(e) => {
                        let msg = serde_json::value::to_raw_value(&e)?;
                        if sink.send(msg).await.is_err() {
                            return Ok(());
                        }
                    }
                    Err(RecvError::Lagged(missed)) => {
                        tracing::debug!(missed, "an event subscriber fell behind");
                    }
                    Err(RecvError::Closed) => return Ok(()),
                },
            }
        }
    }
}

/// Every method the server answers: the API and the event subscription.
fn methods(node: Node, logins: Arc<dashboard::Logins>) -> Result<jsonrpsee::Methods> {
    let mut methods: jsonrpsee::Methods = RpcImpl::new(node.clone(), logins).into_rpc().into();
    methods
        .merge(EventsImpl { node }.into_rpc())
        .map_err(|e| Error::Internal(e.to_string()))?;
    Ok(methods)
}

/// Starts the RPC server; returns its handle and the bound address.
pub async fn start(
    node: Node,
    bind: SocketAddr,
    token: &str,
) -> Result<(ServerHandle, SocketAddr)> {
    let logins = Arc::new(dashboard::Logins::default());
    let http =
        tower::ServiceBuilder::new().layer(auth::BearerAuthLayer::new(token, logins.clone()));
    let server = Server::builder()
        .set_config(
            ServerConfig::builder()
                .max_request_body_size(MAX_REQUEST_BODY)
                .build(),
        )
        .set_http_middleware(http)
        .build(bind)
        .await
        .map_err(|e| Error::Bind {
            addr: bind.to_string(),
            reason: e.to_string(),
        })?;
    let addr = server
        .local_addr()
        .map_err(|e| Error::Internal(e.to_string()))?;
    Ok((server.start(methods(node, logins)?), addr))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// The OpenRPC document and the trait describe the same methods, and
    /// the document lists exactly the error codes the daemon can return.
    #[tokio::test]
    async fn openrpc_matches_trait() {
        let doc: serde_json::Value = serde_json::from_str(OPENRPC_JSON).unwrap();
        let documented: BTreeSet<String> = doc["methods"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["name"].as_str().unwrap().to_string())
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let args = crate::config::Args {
            datadir: Some(dir.path().into()),
            ..Default::default()
        };
        let (node, _) = Node::start(crate::config::Config::load(args).unwrap())
            .await
            .unwrap();
        let implemented: BTreeSet<String> = methods(node, Default::default())
            .unwrap()
            .method_names()
            .map(str::to_string)
            .collect();
        assert_eq!(documented, implemented);
        let codes: BTreeSet<(i64, String)> = doc["components"]["errors"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (v["code"].as_i64().unwrap(), k.clone()))
            .collect();
        let expected: BTreeSet<(i64, String)> = p2pstore_rpc::codes::ALL
            .iter()
            .map(|(c, n)| (*c as i64, n.to_string()))
            .collect();
        assert_eq!(codes, expected);
    }
}
