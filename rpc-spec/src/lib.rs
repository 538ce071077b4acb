//! The JSON-RPC interface of `p2pstored`, defined once.
//!
//! The daemon implements [`P2pstoreApiServer`], the CLI (and tests) use
//! [`P2pstoreApiClient`], and `openrpc.json` documents the same methods; a
//! test in the daemon checks that the document and the trait agree. Amounts
//! are integer satoshis in fields ending `_sat`; sizes are bytes.

use jsonrpsee::core::RpcResult;
use jsonrpsee::proc_macros::rpc;
use serde::{Deserialize, Serialize};

pub mod codes;
pub mod conn;

/// The OpenRPC document served by `rpc.discover`.
pub const OPENRPC_JSON: &str = include_str!("../openrpc.json");

/// Name of the file in the data dir that holds the RPC bearer token.
pub const COOKIE_FILE: &str = ".cookie";
/// Name of the file in the data dir that holds the RPC listen address.
pub const RPC_ADDR_FILE: &str = "rpc.addr";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct InitResult {
    /// The new account's BIP39 mnemonic; `None` when restoring from one.
    /// Shown once: the daemon keeps it only inside the encrypted keystore.
    pub mnemonic: Option<String>,
    pub peer_id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct UnlockResult {
    pub peer_id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PutResult {
    pub file_id: String,
    pub name: String,
    pub size: u64,
    pub segments: u64,
    /// `K/N`: any K of each segment's N shards rebuild it.
    pub redundancy: String,
    pub providers: Vec<String>,
}

/// Shards reachable and valid, against shards needed and stored.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct Health {
    pub good: u32,
    pub needed: u32,
    pub total: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SegmentHealth {
    pub index: u64,
    pub good: u32,
    pub needed: u32,
    pub total: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FileStat {
    pub file_id: String,
    pub name: String,
    pub size: u64,
    pub created_at: u64,
    pub redundancy: String,
    pub providers: Vec<String>,
    /// The worst segment's health.
    pub health: Health,
    /// Every segment, worst first.
    pub segments: Vec<SegmentHealth>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct RepairResult {
    pub files_checked: u64,
    pub segments_repaired: u64,
    pub shards_rebuilt: u64,
    /// Segments with fewer than K valid shards: lost.
    pub unrecoverable_segments: u64,
    pub new_providers: Vec<String>,
    pub txid: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct GetResult {
    pub file_id: String,
    pub path: String,
    pub size: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FileEntry {
    pub file_id: String,
    pub name: String,
    pub size: u64,
    /// Seconds since the Unix epoch when the put finished.
    pub created_at: u64,
    pub segments: u64,
    pub providers: Vec<String>,
    pub redundancy: String,
    /// The worst segment's health, checked with the providers now.
    pub health: Health,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RmResult {
    pub file_id: String,
    /// Shards the providers confirmed deleting.
    pub deleted_shards: u64,
    /// Providers that could not be reached or refused; their shards were
    /// not deleted and stay with them.
    pub unreachable_providers: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Status {
    /// `locked`, `uninitialized` or `running`.
    pub state: String,
    pub peer_id: Option<String>,
    pub listen_addrs: Vec<String>,
    pub dht_peers: u64,
    pub connected_peers: u64,
    pub roles: Vec<String>,
    pub stored_bytes: u64,
    pub capacity_bytes: u64,
    pub free_bytes: u64,
    pub files: u64,
    /// Bitcoin network of the wallet; None on a bootstrap node.
    pub network: Option<String>,
    /// The wallet's view of the chain tip.
    pub tip_height: Option<u32>,
    /// The last bitcoind sync error, if the last attempt failed.
    pub bitcoind_error: Option<String>,
}

/// What a provider offers, as last answered over the network.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProviderInfo {
    pub peer_id: String,
    pub addrs: Vec<String>,
    pub free_bytes: u64,
    pub price_sat_per_gib_month: u64,
    pub min_term_blocks: u32,
    pub max_term_blocks: u32,
    pub protocol_version: u32,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct WalletBalance {
    pub confirmed_sat: u64,
    pub unconfirmed_sat: u64,
    pub immature_sat: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AddressResult {
    pub address: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SendResult {
    pub txid: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct WalletTx {
    pub txid: String,
    pub received_sat: u64,
    pub sent_sat: u64,
    pub fee_sat: Option<u64>,
    pub confirmations: u32,
    pub height: Option<u32>,
}

/// A storage contract as one side of it sees it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ContractInfo {
    pub contract_id: String,
    /// `client` or `provider`: which side this node is on.
    pub role: String,
    /// The other side.
    pub peer_id: String,
    pub file_id: Option<String>,
    pub shards: u64,
    pub bytes: u64,
    pub amount_sat: u64,
    pub price_sat_per_gib_month: u64,
    pub term_blocks: u32,
    pub payout_address: String,
    pub txid: Option<String>,
    pub vout: Option<u32>,
    /// accepted, paid, active, rejected, expired_unpaid, deleted or lost.
    pub state: String,
    pub deadline_height: u32,
    pub expiry_height: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Progress {
    pub done_bytes: u64,
    pub total_bytes: u64,
    pub finished: bool,
}

#[rpc(server, client)]
pub trait P2pstoreApi {
    /// Create the account: a new mnemonic, or `mnemonic` to restore one.
    #[method(name = "init")]
    async fn init(&self, password: String, mnemonic: Option<String>) -> RpcResult<InitResult>;

    /// Decrypt the keystore and start the node.
    #[method(name = "unlock")]
    async fn unlock(&self, password: String) -> RpcResult<UnlockResult>;

    /// Store the file at `path` (on the daemon's machine) at a redundancy
    /// level (`low`, `medium`, `high` or `K/N`; default from config).
    /// `op_id`, when given, lets `progress` report on this transfer.
    #[method(name = "put")]
    async fn put(
        &self,
        path: String,
        redundancy: Option<String>,
        op_id: Option<String>,
    ) -> RpcResult<PutResult>;

    /// Fetch, verify and decrypt a file into `dest`.
    #[method(name = "get")]
    async fn get(
        &self,
        file_id: String,
        dest: String,
        op_id: Option<String>,
    ) -> RpcResult<GetResult>;

    #[method(name = "ls")]
    async fn ls(&self) -> RpcResult<Vec<FileEntry>>;

    /// A file's health, segment by segment, worst first.
    #[method(name = "stat")]
    async fn stat(&self, file_id: String) -> RpcResult<FileStat>;

    /// Rebuild lost shards of one file, or of every file.
    #[method(name = "repair")]
    async fn repair(&self, file_id: Option<String>) -> RpcResult<RepairResult>;

    #[method(name = "rm")]
    async fn rm(&self, file_id: String) -> RpcResult<RmResult>;

    #[method(name = "status")]
    async fn status(&self) -> RpcResult<Status>;

    /// Providers the DHT knows now, each with a fresh offer.
    #[method(name = "providers")]
    async fn providers(&self) -> RpcResult<Vec<ProviderInfo>>;

    /// Progress of a put or get started with `op_id`.
    #[method(name = "progress")]
    async fn progress(&self, op_id: String) -> RpcResult<Option<Progress>>;

    #[method(name = "wallet_balance")]
    async fn wallet_balance(&self) -> RpcResult<WalletBalance>;

    /// A fresh receive address of this node's wallet.
    #[method(name = "wallet_address")]
    async fn wallet_address(&self) -> RpcResult<AddressResult>;

    #[method(name = "wallet_send")]
    async fn wallet_send(&self, address: String, amount_sat: u64) -> RpcResult<SendResult>;

    #[method(name = "wallet_txs")]
    async fn wallet_txs(&self) -> RpcResult<Vec<WalletTx>>;

    /// Contracts on both sides: as client and as provider.
    #[method(name = "contracts")]
    async fn contracts(&self) -> RpcResult<Vec<ContractInfo>>;

    /// The OpenRPC document of this API.
    #[method(name = "rpc.discover")]
    async fn discover(&self) -> RpcResult<serde_json::Value>;
}
