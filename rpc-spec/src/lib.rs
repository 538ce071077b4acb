//! The JSON-RPC interface of `p2pstored`, defined once.
//!
//! The daemon implements [`P2pstoreApiServer`], the CLI (and tests) use
//! [`P2pstoreApiClient`], and `openrpc.json` documents the same methods. All
//! three come from one `api!` invocation below: the OpenRPC document is
//! generated from it and the types' schemas ([`openrpc::document`]), and a
//! test fails when the committed file is stale. Amounts are integer
//! satoshis in fields ending `_sat`; sizes are bytes.

use jsonrpsee::core::RpcResult;
use jsonrpsee::proc_macros::rpc;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub mod codes;
pub mod conn;
pub mod openrpc;

/// The OpenRPC document served by `rpc.discover`.
pub const OPENRPC_JSON: &str = include_str!("../openrpc.json");

/// Name of the file in the data dir that holds the RPC bearer token.
pub const COOKIE_FILE: &str = ".cookie";
/// Name of the file in the data dir that holds the RPC listen address.
pub const RPC_ADDR_FILE: &str = "rpc.addr";
/// Name of the file in the data dir whose advisory lock (flock) the running
/// daemon holds for its whole life, as bitcoind holds its `.lock`. The
/// kernel drops it when the process dies, however it dies, so unlike a pid
/// file it cannot go stale.
pub const LOCK_FILE: &str = ".lock";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, JsonSchema)]
pub struct InitResult {
    /// The new account's BIP39 mnemonic; `None` when restoring from one.
    /// Shown once: the daemon keeps it only inside the encrypted keystore.
    pub mnemonic: Option<String>,
    pub peer_id: String,
    /// The chain height the wallet scans from. Keep it with the phrase: a
    /// restore given it (`init --restore --birthday`) skips every block
    /// before it instead of scanning from genesis.
    pub birthday_height: u32,
}

/// What `restore_index` brought back from the network.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, JsonSchema)]
pub struct RestoreResult {
    /// Sequence number of the pointer restored from: the newest validly
    /// signed one found.
    pub index_seq: u64,
    /// The index backup's file id (not listed by `ls`).
    pub index_file_id: String,
    /// Files and contracts restored.
    pub files: u64,
    pub contracts: u64,
    /// The wallet birthday the index recorded.
    pub birthday_height: u32,
    /// Records under the account's pointer key that were not validly
    /// signed by it (forged or damaged), ignored.
    pub rejected_records: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, JsonSchema)]
pub struct UnlockResult {
    pub peer_id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, JsonSchema)]
pub struct PutResult {
    pub file_id: String,
    pub name: String,
    pub size: u64,
    pub segments: u64,
    /// `K/N`: any K of each segment's N shards rebuild it.
    pub redundancy: String,
    pub providers: Vec<String>,
    /// True when nothing was stored or paid: the same content under the
    /// same name was stored already (see `force`), or this answers a put
    /// with the same `op_id` that finished before.
    pub existing: bool,
}

/// Shards in good standing by the latest audits (not failed, provider not
/// offline or disqualified), against shards needed and stored.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, JsonSchema)]
pub struct Health {
    pub good: u32,
    pub needed: u32,
    pub total: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, JsonSchema)]
pub struct SegmentHealth {
    pub index: u64,
    pub good: u32,
    pub needed: u32,
    pub total: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, JsonSchema)]
pub struct FileStat {
    pub file_id: String,
    pub name: String,
    pub size: u64,
    pub created_at: u64,
    pub redundancy: String,
    pub providers: Vec<String>,
    /// The worst segment's health, from the latest audits.
    pub health: Health,
    /// Every segment, worst first.
    pub segments: Vec<SegmentHealth>,
    /// Seconds since the Unix epoch of the least recent of the latest
    /// audits of the file's providers; None until each was audited.
    pub last_audit_at: Option<u64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq, JsonSchema)]
pub struct RepairResult {
    pub files_checked: u64,
    pub segments_repaired: u64,
    pub shards_rebuilt: u64,
    /// Bytes of those shards, stored again at new providers.
    pub bytes_rebuilt: u64,
    /// Segments with fewer than K valid shards: lost.
    pub unrecoverable_segments: u64,
    pub new_providers: Vec<String>,
    pub txid: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, JsonSchema)]
pub struct GetResult {
    pub file_id: String,
    pub path: String,
    pub size: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, JsonSchema)]
pub struct FileEntry {
    pub file_id: String,
    pub name: String,
    pub size: u64,
    /// Seconds since the Unix epoch when the put finished.
    pub created_at: u64,
    pub segments: u64,
    pub providers: Vec<String>,
    pub redundancy: String,
    /// The worst segment's health, from the latest audits (no network).
    pub health: Health,
    /// As in [`FileStat::last_audit_at`].
    pub last_audit_at: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, JsonSchema)]
pub struct RmResult {
    pub file_id: String,
    /// Shards the providers confirmed deleting.
    pub deleted_shards: u64,
    /// Providers that could not be reached or refused; their shards were
    /// not deleted and stay with them.
    pub unreachable_providers: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, JsonSchema)]
pub struct Status {
    pub state: NodeState,
    pub peer_id: Option<String>,
    pub listen_addrs: Vec<String>,
    pub dht_peers: u64,
    pub connected_peers: u64,
    /// Peer requests refused since start: over a peer's quota or budget,
    /// malformed, or with every slot taken.
    pub refused_requests: u64,
    /// What this node does, in a fixed order: bootstrap, client, provider.
    pub roles: Vec<NodeRole>,
    /// Where Prometheus metrics are served (`http://<addr>/metrics`), if
    /// `metrics_bind` is set.
    pub metrics_addr: Option<String>,
    /// A provider's audit answers since start: challenges proved, missing
    /// (shards it could not prove), and audits refused.
    pub audit_challenges_proved: u64,
    pub audit_challenges_missing: u64,
    pub audits_refused: u64,
    pub stored_bytes: u64,
    pub capacity_bytes: u64,
    pub free_bytes: u64,
    /// Provider: quotes given and not yet paid (each a small record until
    /// it is paid or lapses; capped).
    pub pending_quotes: u64,
    pub files: u64,
    /// Bitcoin network of the wallet; None on a bootstrap node.
    pub network: Option<String>,
    /// The wallet's view of the chain tip.
    pub tip_height: Option<u32>,
    /// The first block the wallet scans (see `init`).
    pub birthday_height: Option<u32>,
    /// The last bitcoind sync error, if the last attempt failed.
    pub bitcoind_error: Option<String>,
    /// Client: sequence number of the newest index backup's pointer;
    /// None before the first backup.
    pub index_seq: Option<u64>,
    /// Client: unix time of the newest index backup.
    pub index_backed_up_at: Option<u64>,
    /// Client: files or contracts changed since the newest backup (one
    /// is made `index_backup_secs` after the last change).
    pub index_pending: bool,
}

/// What a provider offers, as last answered over the network.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
pub struct ProviderInfo {
    pub peer_id: String,
    pub addrs: Vec<String>,
    pub free_bytes: u64,
    pub price_sat_per_gib_month: u64,
    pub min_term_blocks: u32,
    pub max_term_blocks: u32,
    pub protocol_version: u32,
    /// This client's audit score of the provider, 0..=1 (1 until audited).
    pub audit_score: f64,
    /// Seconds since the provider gave this offer (the directory keeps
    /// offers for 10 minutes).
    pub offer_age_secs: u64,
}

/// One DHT lookup of one provider bucket.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
pub struct BucketLookup {
    /// The bucket, 0..256: providers announce under the bucket their peer
    /// id falls in.
    pub bucket: u16,
    /// Providers the lookup found.
    pub found: u64,
    pub millis: u64,
}

/// Provider buckets looked up in the DHT.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
pub struct FindProvidersResult {
    /// Distinct providers found, over the buckets looked up.
    pub providers: Vec<String>,
    /// Each bucket's lookup, in bucket order.
    pub lookups: Vec<BucketLookup>,
    /// Providers the client's directory knows after the lookups.
    pub directory_size: u64,
}

/// What one audit of one provider found, in challenges (one leaf of one
/// shard each).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, JsonSchema)]
pub struct AuditCounts {
    /// Challenges sent.
    pub challenges: u64,
    /// Answered with a valid Merkle proof.
    pub passed: u64,
    /// A wrong proof, a leaf reported missing, or a contract it does not know.
    pub failed: u64,
    /// No answer: a timeout, no connection, or over its rate limit.
    pub unknown: u64,
    /// The audit score after this audit, 0..=1.
    pub score: f64,
}

/// One provider's part in an audit just run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
pub struct ProviderAudit {
    pub peer_id: String,
    #[serde(flatten)]
    pub counts: AuditCounts,
}

/// One past audit of a provider.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
pub struct AuditRecord {
    /// Seconds since the Unix epoch.
    pub at: u64,
    #[serde(flatten)]
    pub counts: AuditCounts,
}

/// A provider's audit standing and recent audits.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
pub struct ProviderAudits {
    pub peer_id: String,
    /// 0..=1; Storj's alpha/beta reputation over audited shards.
    pub score: f64,
    /// At or above `min_audit_score`: it may get new shards.
    pub eligible: bool,
    /// Silent for `audit_offline_after` audits in a row.
    pub offline: bool,
    /// Challenges over all audits, by outcome.
    pub passed: u64,
    pub failed: u64,
    pub unknown: u64,
    pub last_audit_at: Option<u64>,
    /// The latest audits, oldest first.
    pub history: Vec<AuditRecord>,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq, JsonSchema)]
pub struct WalletBalance {
    pub confirmed_sat: u64,
    pub unconfirmed_sat: u64,
    pub immature_sat: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, JsonSchema)]
pub struct AddressResult {
    pub address: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, JsonSchema)]
pub struct SendResult {
    pub txid: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, JsonSchema)]
pub struct WalletTx {
    pub txid: String,
    pub received_sat: u64,
    pub sent_sat: u64,
    pub fee_sat: Option<u64>,
    pub confirmations: u32,
    pub height: Option<u32>,
}

/// Busy time of one stage of moving bytes, summed over threads since the
/// daemon started (see `perf`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
pub struct StageTime {
    /// read, hash, seal, code, network, output (client); verify, write,
    /// fsync (provider).
    pub stage: String,
    pub seconds: f64,
    pub count: u64,
}

/// What the coming periods of the client's running contracts will cost.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, JsonSchema)]
pub struct Budget {
    /// Periods looked ahead: the request's, else `budget_warn_periods`.
    pub periods: u32,
    pub contracts: Vec<BudgetLine>,
    /// Sum of the contracts' payments over those periods.
    pub payments_sat: u64,
    /// Estimated fees: one transaction a period at today's fee rate.
    pub fees_sat: u64,
    pub total_sat: u64,
    /// Confirmed and unconfirmed balance, immature coinbase excluded.
    pub spendable_sat: u64,
    /// What the wallet lacks to pay them all; 0 when it can.
    pub shortfall_sat: u64,
    /// Set when the wallet cannot pay them all.
    pub warning: Option<String>,
}

/// One contract's share of a [`Budget`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, JsonSchema)]
pub struct BudgetLine {
    pub contract_id: String,
    pub peer_id: String,
    /// What one period costs at the current allowance.
    pub period_sat: u64,
    /// Periods within the look-ahead that the files on it still need.
    pub periods: u32,
    pub total_sat: u64,
    pub next_payment_height: Option<u32>,
}

/// A storage contract as one side of it sees it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, JsonSchema)]
pub struct ContractInfo {
    pub contract_id: String,
    /// Which side of the contract this node is on.
    pub role: ContractRole,
    /// The other side.
    pub peer_id: String,
    pub state: ContractState,
    /// Fixed when the contract was formed.
    pub price_sat_per_gib_month: u64,
    /// Bytes paid for this period (the client: to be paid next period).
    pub allowance_bytes: u64,
    /// Bytes of shards held under the contract (the client: its manifests' view).
    pub stored_bytes: u64,
    pub period_blocks: u32,
    pub start_height: u32,
    pub paid_through_height: u32,
    pub term_end_height: u32,
    /// Total paid (client) or received (provider) so far, in sat.
    pub paid_sat: u64,
    /// When the next period payment is due, if the contract runs on.
    pub next_payment_height: Option<u32>,
    pub next_payment_sat: Option<u64>,
    pub payout_address: String,
    /// Every transaction that paid this contract, oldest first.
    pub payment_txids: Vec<String>,
    /// How many of those payments paid a period (the rest bought
    /// allowance for puts).
    pub period_payments: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, JsonSchema)]
pub struct Progress {
    pub done_bytes: u64,
    pub total_bytes: u64,
    pub finished: bool,
    /// What the transfer is doing now.
    pub phase: TransferPhase,
}

/// A one-time dashboard login (`dashboard_login`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, JsonSchema)]
pub struct DashboardLogin {
    pub code: String,
    pub expires_in_secs: u64,
}

/// The dashboard's path on the RPC port.
pub const DASHBOARD_PATH: &str = "/dashboard";

/// One thing that happened in the daemon, as `subscribe_events` sends it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, JsonSchema)]
pub struct Event {
    /// When it happened, in milliseconds since the Unix epoch.
    pub time_ms: u64,
    #[serde(flatten)]
    pub kind: EventKind,
}

/// What happened, by its `type`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKind {
    /// A put or get moved on: it entered a phase, or finished more bytes
    /// (sent at most every `PROGRESS_EVENT_MS` per transfer, and at its end).
    Progress {
        /// Tells this transfer's events from others' (counted from 1 at
        /// each start of the daemon).
        transfer_id: u64,
        /// The caller's operation id, if it gave one.
        op_id: Option<String>,
        transfer: TransferKind,
        /// The file, once it has an id (a put names it after planning).
        file_id: Option<String>,
        phase: TransferPhase,
        done_bytes: u64,
        total_bytes: u64,
        finished: bool,
        /// Set when the transfer ended in an error.
        error: Option<String>,
    },
    /// A client formed a contract with a provider (its first allowance
    /// is paid).
    ContractFormed {
        contract_id: String,
        peer_id: String,
        allowance_bytes: u64,
        term_end_height: u32,
    },
    /// A client paid a contract's next period.
    ContractPaid {
        contract_id: String,
        peer_id: String,
        amount_sat: u64,
        paid_through_height: u32,
    },
    /// A client extended a contract's term.
    ContractRenewed {
        contract_id: String,
        peer_id: String,
        term_end_height: u32,
    },
    /// A contract ended, on either side.
    ContractEnded {
        contract_id: String,
        peer_id: String,
        role: ContractRole,
        state: ContractState,
    },
    /// This node broadcast a payment to providers.
    PaymentSent {
        txid: String,
        /// Paid to providers, fees not included.
        amount_sat: u64,
        fee_rate_sat_vb: u64,
        /// Contracts it pays.
        outputs: u32,
        /// The payment this one replaces with a higher fee (the same
        /// money, sent again), if it is a replacement.
        replaces: Option<String>,
    },
    /// A provider credited a client's payment to a contract.
    PaymentReceived {
        txid: String,
        contract_id: String,
        peer_id: String,
        amount_sat: u64,
        kind: PaymentKind,
    },
    /// A provider proved every challenge of an audit.
    AuditPassed { peer_id: String, challenges: u64 },
    /// A provider failed an audit: wrong proofs, a refusal, or no answer.
    AuditFailed {
        peer_id: String,
        /// Challenges answered wrongly or refused.
        failed: u64,
        /// Challenges not answered at all (the provider may be offline).
        unanswered: u64,
    },
    /// A provider answered a client's audit: with a proof for each
    /// challenge it could prove, `missing` for the rest; or refused it.
    AuditAnswered {
        /// The client.
        peer_id: String,
        contract_id: String,
        challenges: u64,
        missing: u64,
        /// Why it was refused (a bad request, an unknown contract).
        refused: Option<String>,
    },
    /// A client began rebuilding a file's lost shards.
    RepairStarted { file_id: String, segments: u64 },
    /// A repair ended; `error` says why when it did not restore every shard.
    RepairFinished {
        file_id: String,
        shards: u64,
        /// Bytes of the shards rebuilt and stored again.
        bytes: u64,
        error: Option<String>,
    },
    /// A provider a client relies on stopped answering.
    ProviderOffline { peer_id: String, reason: String },
}

/// Longest time between two progress events of one transfer, in ms.
pub const PROGRESS_EVENT_MS: u64 = 200;

/// Defines a fieldless enum whose JSON form is its snake_case variant name,
/// with `as_str` and `Display` giving that same name, so the CLI prints
/// exactly what the wire carries.
macro_rules! wire_enum {
    (
        $(#[doc = $doc:literal])*
        pub enum $name:ident {
            $( $(#[doc = $vdoc:literal])* $variant:ident => $wire:literal, )+
        }
    ) => {
        $(#[doc = $doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $( $(#[doc = $vdoc])* $variant, )+
        }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The JSON wire form.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $wire,)+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                // `pad`, not `write_str`: the CLI aligns these in columns.
                f.pad(self.as_str())
            }
        }
    };
}

wire_enum! {
    /// Where the node is in its life cycle.
    pub enum NodeState {
        /// No keystore yet: call `init`.
        Uninitialized => "uninitialized",
        /// A keystore exists but is encrypted: call `unlock`.
        Locked => "locked",
        /// Unlocked and serving.
        Running => "running",
    }
}

wire_enum! {
    /// A job this node does on the network.
    pub enum NodeRole {
        /// A rendezvous point other nodes use to find peers.
        Bootstrap => "bootstrap",
        /// Stores files with providers and pays them.
        Client => "client",
        /// Stores other clients' shards for pay.
        Provider => "provider",
    }
}

wire_enum! {
    /// Which side of a storage contract this node is on.
    pub enum ContractRole {
        /// This node pays for the storage.
        Client => "client",
        /// This node stores the shards and is paid.
        Provider => "provider",
    }
}

wire_enum! {
    /// Where a storage contract is in its life cycle.
    pub enum ContractState {
        /// Client: formed or revised and being paid; the provider has not
        /// confirmed the payment yet.
        Pending => "pending",
        /// Paid, but the payment that formed it is still unconfirmed:
        /// uploads may go ahead; if the payment leaves the mempool the
        /// contract ends and its data is deleted.
        Provisional => "provisional",
        /// Paid with final payments, holding data.
        Active => "active",
        /// Not paid `grace_blocks` past its paid-through height: ended,
        /// data deleted.
        Lapsed => "lapsed",
        /// Its term ended without renewal: ended, data deleted.
        Expired => "expired",
        /// The provider failed its audits: not paid again, data moved.
        Failed => "failed",
        /// A payment of it left the mempool unconfirmed: ended, data deleted.
        Dropped => "dropped",
        /// Client: the provider refused its payment or formation failed.
        Rejected => "rejected",
    }
}

wire_enum! {
    /// What a contract payment paid for.
    pub enum PaymentKind {
        /// Allowance added by a put or repair, to the end of the period.
        Revision => "revision",
        /// A whole period of the allowance.
        Period => "period",
        /// Money the provider refused once it was sent: it bought nothing,
        /// and the contract ended.
        Refused => "refused",
    }
}

wire_enum! {
    /// Which way a transfer goes.
    pub enum TransferKind {
        Put => "put",
        Get => "get",
    }
}

wire_enum! {
    /// Where a put or get is: a put plans, forms contracts, pays, then
    /// uploads; a get downloads, then verifies and moves the file in place.
    pub enum TransferPhase {
        /// Reading the file and choosing providers.
        Planning => "planning",
        /// Asking providers for quotes.
        Contracts => "contracts",
        /// Paying for the allowance the upload needs.
        Payment => "payment",
        /// Sending shards.
        Upload => "upload",
        /// Fetching shards.
        Download => "download",
        /// Checking the whole file and moving it in place.
        Verify => "verify",
    }
}

/// Writes the API once: expands to the jsonrpsee trait (server and client)
/// and to [`openrpc::methods`], the table `openrpc.json` is generated from.
/// jsonrpsee's macro keeps no metadata we could read back, hence this.
///
/// Each method's parameter list is passed to `#[rpc]` as the very tokens
/// written here: jsonrpsee spots optional params by seeing `Option` in the
/// type's path, which a type re-emitted from a `$t:ty` fragment would hide.
/// `&self` is written here, not taken from the input, so that it has the
/// same hygiene as the `self` that jsonrpsee's generated bodies use.
/// What `subscribe_events` does, as `openrpc.json` says it.
const SUBSCRIBE_EVENTS_DOC: &[&str] = &[
    "Follow the daemon's events (WebSocket only; the same bearer token). Each",
    "notification, method `event`, carries one `Event` as `params.result`:",
    "transfer progress, contracts formed, paid, renewed and ended, payments",
    "sent and received, audits, repairs, providers going offline. Events",
    "start at the subscription; a subscriber that reads too slowly misses",
    "the oldest. End it with `unsubscribe_events`.",
];

/// Live events. Apart from [`P2pstoreApi`]: jsonrpsee's client for a trait
/// with a subscription needs a WebSocket, and the CLI calls over HTTP.
#[rpc(server, client)]
pub trait P2pstoreEvents {
    /// See [`SUBSCRIBE_EVENTS_DOC`].
    #[subscription(name = "subscribe_events" => "event", unsubscribe = "unsubscribe_events", item = Event)]
    async fn subscribe_events(&self) -> jsonrpsee::core::SubscriptionResult;
}

/// The event subscription's two methods, for the OpenRPC document.
pub(crate) fn event_methods(generator: &mut schemars::SchemaGenerator) -> Vec<openrpc::Method> {
    vec![
        openrpc::Method {
            name: "subscribe_events",
            doc: SUBSCRIBE_EVENTS_DOC,
            params: vec![],
            result: generator.subschema_for::<Event>(),
        },
        openrpc::Method {
            name: "unsubscribe_events",
            doc: &["End a `subscribe_events` subscription, by the id it returned."],
            params: vec![openrpc::Param::of::<String>("subscription", generator)],
            result: generator.subschema_for::<bool>(),
        },
    ]
}

macro_rules! api {
    (
        $(#[doc = $tdoc:literal])*
        pub trait $trait:ident {
            $(
                $(#[doc = $doc:literal])*
                #[method(name = $name:literal)]
                async fn $fn:ident(&self $($params:tt)*) -> RpcResult<$ret:ty>;
            )+
        }
    ) => {
        $(#[doc = $tdoc])*
        #[rpc(server, client)]
        pub trait $trait {
            $(
                $(#[doc = $doc])*
                #[method(name = $name)]
                async fn $fn(&self $($params)*) -> RpcResult<$ret>;
            )+
        }

        /// Every method of the API as the OpenRPC document lists it, with
        /// param and result schemas registered in `generator`.
        pub(crate) fn api_methods(
            generator: &mut schemars::SchemaGenerator,
        ) -> Vec<openrpc::Method> {
            vec![$(
                openrpc::Method {
                    name: $name,
                    doc: &[$($doc),*],
                    params: api!(@params generator ($($params)*)),
                    result: generator.subschema_for::<$ret>(),
                }
            ),+]
        }
    };
    (@params $generator:ident ($(, $param:ident : $ty:ty)* $(,)?)) => {
        vec![$(openrpc::Param::of::<$ty>(stringify!($param), $generator)),*]
    };
}

api! {
    /// The daemon's control API. Every method answers errors with a code
    /// from [`codes`].
    pub trait P2pstoreApi {
        /// Create the account keystore: a new BIP39 mnemonic (returned once),
        /// or restore `mnemonic`. The wallet scans the chain from
        /// `birthday_height`: by default bitcoind's tip for a new account
        /// and genesis for a restore; a height above the tip is refused.
        #[method(name = "init")]
        async fn init(
            &self,
            password: String,
            mnemonic: Option<String>,
            birthday_height: Option<u32>,
        ) -> RpcResult<InitResult>;

        /// After `init` with a mnemonic: find this account's newest index
        /// pointer in the DHT (retrying for about a minute while the node
        /// joins), fetch and verify the index it names, and restore every
        /// file's manifest and every contract, each as its provider now
        /// holds it. Fails with INDEX_NOT_FOUND when no pointer signed by
        /// this account is found (another mnemonic, or an account that
        /// never stored a file) and INDEX_UNREADABLE when the index cannot
        /// be fetched or decoded.
        #[method(name = "restore_index")]
        async fn restore_index(&self) -> RpcResult<RestoreResult>;

        /// Decrypt the keystore with `password` and start the node.
        #[method(name = "unlock")]
        async fn unlock(&self, password: String) -> RpcResult<UnlockResult>;

        /// Encrypt, erasure-code and store the file at `path` (a path on the
        /// daemon's machine) with providers found in the DHT, prepaying them
        /// in one transaction to the end of their contracts' period.
        /// `redundancy` is `low` (1 copy), `medium` (2-of-4), `high` (3-of-9)
        /// or `K/N`; the default comes from the config. `term_blocks` keeps
        /// the file that many blocks (default: the config's `term_blocks`);
        /// `keep` renews it for as long as it exists. `op_id`, a
        /// caller-chosen id, lets `progress` report on this put while it
        /// runs, and makes the put idempotent: a put with the `op_id` of one
        /// that finished returns that put's result, storing and paying
        /// nothing. Content already stored under the same name (same
        /// plaintext SHA-256) returns the stored file unless `force`.
        #[method(name = "put")]
        async fn put(
            &self,
            path: String,
            redundancy: Option<String>,
            term_blocks: Option<u32>,
            keep: Option<bool>,
            force: Option<bool>,
            op_id: Option<String>,
        ) -> RpcResult<PutResult>;

        /// Fetch, verify and decrypt a file into `dest`; nothing is written
        /// at `dest` unless every byte verified. `op_id` as for `put`.
        #[method(name = "get")]
        async fn get(
            &self,
            file_id: String,
            dest: String,
            op_id: Option<String>,
        ) -> RpcResult<GetResult>;

        /// Files this account has stored, with their health from the latest
        /// audits; answered from local state.
        #[method(name = "ls")]
        async fn ls(&self) -> RpcResult<Vec<FileEntry>>;

        /// A file's health from the latest audits: good shards over needed
        /// shards, every segment, worst first; answered from local state.
        #[method(name = "stat")]
        async fn stat(&self, file_id: String) -> RpcResult<FileStat>;

        /// Audit every shard of one file, or of every file when `file_id`
        /// is absent, now: random leaves of each, proven by Merkle paths.
        /// One entry per provider; the results feed health and scores.
        #[method(name = "audit")]
        async fn audit(&self, file_id: Option<String>) -> RpcResult<Vec<ProviderAudit>>;

        /// Audit scores and recent audits of every provider audited so far.
        #[method(name = "audits")]
        async fn audits(&self) -> RpcResult<Vec<ProviderAudits>>;

        /// Audit one file (or every file), then rebuild its lost, corrupt or
        /// unaudited-offline shards at new providers under new paid
        /// contracts.
        #[method(name = "repair")]
        async fn repair(&self, file_id: Option<String>) -> RpcResult<RepairResult>;

        /// Delete a file's shards at its providers, then forget the file.
        #[method(name = "rm")]
        async fn rm(&self, file_id: String) -> RpcResult<RmResult>;

        /// Node identity, network and storage state.
        #[method(name = "status")]
        async fn status(&self) -> RpcResult<Status>;

        /// The client's provider directory: providers found in the DHT with
        /// an offer less than 10 minutes old, cheapest first. Refreshes it
        /// first: a few DHT lookups, and new offers from a sample of the
        /// providers whose offer is stale, never from all of them.
        #[method(name = "providers")]
        async fn providers(&self) -> RpcResult<Vec<ProviderInfo>>;

        /// Look up provider buckets in the DHT now, asking no provider
        /// for an offer: which providers the network shows this node, and
        /// how long each lookup took. Every bucket, or with `peers` (peer
        /// ids, at most 1,024) only theirs: whether clients can find those
        /// providers.
        #[method(name = "find_providers")]
        async fn find_providers(&self, peers: Option<Vec<String>>) -> RpcResult<FindProvidersResult>;

        /// Progress of a put or get started with `op_id`; null when unknown.
        #[method(name = "progress")]
        async fn progress(&self, op_id: String) -> RpcResult<Option<Progress>>;

        /// Wallet balance in sats.
        #[method(name = "wallet_balance")]
        async fn wallet_balance(&self) -> RpcResult<WalletBalance>;

        /// A fresh receive address of this node's wallet.
        #[method(name = "wallet_address")]
        async fn wallet_address(&self) -> RpcResult<AddressResult>;

        /// Send `amount_sat` to `address`; returns the txid.
        #[method(name = "wallet_send")]
        async fn wallet_send(&self, address: String, amount_sat: u64) -> RpcResult<SendResult>;

        /// Wallet transactions, unconfirmed first.
        #[method(name = "wallet_txs")]
        async fn wallet_txs(&self) -> RpcResult<Vec<WalletTx>>;

        /// What the next `periods` periods (default `budget_warn_periods`)
        /// of every running contract will cost, fees included, against the
        /// wallet's balance.
        #[method(name = "wallet_budget")]
        async fn wallet_budget(&self, periods: Option<u32>) -> RpcResult<Budget>;

        /// Storage contracts on both sides: as client (what we pay for) and
        /// as provider (what we are paid for).
        #[method(name = "contracts")]
        async fn contracts(&self) -> RpcResult<Vec<ContractInfo>>;

        /// Where transfer time went since the daemon started: busy time per
        /// stage, summed over threads (stages overlap).
        #[method(name = "perf")]
        async fn perf(&self) -> RpcResult<Vec<StageTime>>;

        /// A one-time login code for the web dashboard at `/dashboard` on
        /// this port: open `http://<rpc address>/dashboard#login=<code>`.
        /// The page trades the code, once and within `expires_in_secs`,
        /// for the RPC token, which it then sends as the Bearer header.
        #[method(name = "dashboard_login")]
        async fn dashboard_login(&self) -> RpcResult<DashboardLogin>;

        /// This OpenRPC document.
        #[method(name = "rpc.discover")]
        async fn discover(&self) -> RpcResult<serde_json::Value>;
    }
}
