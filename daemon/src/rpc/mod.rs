//! The JSON-RPC server: the `P2pstoreApi` trait implemented over the node,
//! on one port for HTTP and WebSocket, behind bearer-token auth.

pub mod auth;

use std::net::SocketAddr;

use jsonrpsee::core::{RpcResult, async_trait};
use jsonrpsee::server::{Server, ServerConfig, ServerHandle};
use p2pstore_rpc::*;
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::node::Node;

pub struct RpcImpl {
    node: Node,
}

impl RpcImpl {
    pub fn new(node: Node) -> Self {
        RpcImpl { node }
    }
}

#[async_trait]
impl P2pstoreApiServer for RpcImpl {
    async fn init(&self, password: String, mnemonic: Option<String>) -> RpcResult<InitResult> {
        let (mnemonic, peer_id) = self
            .node
            .init(Zeroizing::new(password), mnemonic.map(Zeroizing::new))
            .await?;
        Ok(InitResult {
            mnemonic: mnemonic.map(|m| m.to_string()),
            peer_id,
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
        op_id: Option<String>,
    ) -> RpcResult<PutResult> {
        Ok(self
            .node
            .client()
            .await?
            .put(&path, redundancy.as_deref(), op_id)
            .await?)
    }

    async fn stat(&self, file_id: String) -> RpcResult<FileStat> {
        Ok(self.node.client().await?.stat(&file_id).await?)
    }

    async fn repair(&self, file_id: Option<String>) -> RpcResult<RepairResult> {
        Ok(self
            .node
            .client()
            .await?
            .repair(file_id.as_deref(), true)
            .await?)
    }

    async fn get(
        &self,
        file_id: String,
        dest: String,
        op_id: Option<String>,
    ) -> RpcResult<GetResult> {
        Ok(self
            .node
            .client()
            .await?
            .get(&file_id, &dest, op_id)
            .await?)
    }

    async fn ls(&self) -> RpcResult<Vec<FileEntry>> {
        Ok(self.node.client().await?.ls().await?)
    }

    async fn rm(&self, file_id: String) -> RpcResult<RmResult> {
        Ok(self.node.client().await?.rm(&file_id).await?)
    }

    async fn status(&self) -> RpcResult<Status> {
        Ok(self.node.status().await?)
    }

    async fn providers(&self) -> RpcResult<Vec<ProviderInfo>> {
        let offers = self.node.client().await?.discover_offers().await?;
        Ok(offers
            .into_iter()
            .map(|(peer, o, addrs)| ProviderInfo {
                peer_id: peer.to_string(),
                addrs: addrs.iter().map(|a| a.to_string()).collect(),
                free_bytes: o.free_bytes,
                price_sat_per_gib_month: o.price_sat_per_gib_month,
                min_term_blocks: o.min_term_blocks,
                max_term_blocks: o.max_term_blocks,
                protocol_version: o.protocol_version,
            })
            .collect())
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

    async fn wallet_send(&self, address: String, amount_sat: u64) -> RpcResult<SendResult> {
        const MAX_MONEY_SAT: u64 = 21_000_000 * 100_000_000;
        if amount_sat == 0 || amount_sat > MAX_MONEY_SAT {
            return Err(Error::InvalidParams(format!(
                "amount {amount_sat} sat is not a valid amount"
            ))
            .into());
        }
        let txid = self
            .node
            .wallet()
            .await?
            .send(&address, amount_sat, None)
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
            out.extend(c.contracts.list()?.iter().map(|c| c.to_rpc()));
        }
        out.extend(s.provider.contracts.list()?.iter().map(|c| c.to_rpc()));
        Ok(out)
    }

    async fn progress(&self, op_id: String) -> RpcResult<Option<Progress>> {
        Ok(self.node.progress().get(&op_id))
    }

    async fn discover(&self) -> RpcResult<serde_json::Value> {
        serde_json::from_str(OPENRPC_JSON).map_err(|e| Error::Internal(e.to_string()).into())
    }
}

/// Starts the RPC server; returns its handle and the bound address.
pub async fn start(
    node: Node,
    bind: SocketAddr,
    token: &str,
) -> Result<(ServerHandle, SocketAddr)> {
    let http = tower::ServiceBuilder::new().layer(auth::BearerAuthLayer::new(token));
    let server = Server::builder()
        .set_config(
            ServerConfig::builder()
                .max_request_body_size(1024 * 1024)
                .build(),
        )
        .set_http_middleware(http)
        .build(bind)
        .await
        .map_err(|e| Error::InvalidParams(format!("cannot bind RPC on {bind}: {e}")))?;
    let addr = server
        .local_addr()
        .map_err(|e| Error::Internal(e.to_string()))?;
    Ok((server.start(RpcImpl::new(node).into_rpc()), addr))
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
        let implemented: BTreeSet<String> = RpcImpl::new(node)
            .into_rpc()
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
