//! The library's one error type: flat, each variant documented and meaning
//! what its name says. How a variant reaches an RPC caller (its stable code
//! and data) is the RPC layer's business (`rpc::error`), not this module's.

use libp2p::PeerId;

use crate::ids::FileId;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No keystore yet: the account must be created first.
    #[error("the node has no account yet: run `p2pstore-cli init`")]
    NotInitialized,
    /// The keystore exists but has not been unlocked.
    #[error("the keystore is locked: run `p2pstore-cli unlock`")]
    Locked,
    /// The keystore password does not decrypt it.
    #[error("wrong keystore password")]
    WrongPassword,
    /// init was asked of a node that has an account (or is a bootstrap node).
    #[error("the node already has an account")]
    AlreadyInitialized,
    /// The node runs without the role the call needs (a bootstrap node has
    /// no account, wallet or files).
    #[error("this node runs as a bootstrap node and has no {0}")]
    NoAccount(&'static str),
    #[error("invalid mnemonic: {0}")]
    InvalidMnemonic(String),
    /// A caller's parameter does not parse or is out of range.
    #[error("invalid parameter: {0}")]
    InvalidParams(String),
    /// The config file or flags are wrong; the daemon does not start.
    #[error("configuration: {0}")]
    Config(String),
    /// Another daemon holds this data dir's lock; `pid` is what its pid
    /// file says, when it says anything.
    #[error("another p2pstored{} is running with this data dir; stop it first", .pid.map(|p| format!(" (pid {p})")).unwrap_or_default())]
    AlreadyRunning { pid: Option<u32> },
    /// A listen or RPC address could not be bound.
    #[error("cannot listen on {addr}: {reason}")]
    Bind { addr: String, reason: String },
    /// No file with this id in the client's index (or the text is not an id).
    #[error("file not found: {0}")]
    FileNotFound(String),
    /// A path the caller named cannot be read or written as asked.
    #[error("{0}")]
    InvalidPath(String),
    /// The file being put changed under us; nothing was sent for the
    /// changed part, so no nonce sealed two plaintexts.
    #[error("{0} changed during put; start the put again")]
    SourceChanged(String),
    /// Too few providers, or too little room among them.
    #[error("no provider with enough space: {0}")]
    NoProvider(String),
    /// A provider did not answer (dial, timeout, stream reset).
    #[error("provider {peer} unreachable: {reason}")]
    ProviderUnreachable { peer: PeerId, reason: String },
    /// A provider answered, but refused or answered nonsense.
    #[error("provider {peer} rejected the request: {reason}")]
    ProviderRejected { peer: PeerId, reason: String },
    /// Bytes that came back do not match what was stored.
    #[error("integrity check failed: {0}")]
    Integrity(String),
    #[error("insufficient funds: {required_sat} sat required, {available_sat} sat available")]
    InsufficientFunds {
        required_sat: u64,
        available_sat: u64,
    },
    #[error("bitcoind unreachable: {0}")]
    BitcoindUnreachable(String),
    /// Every offer is above the client's price cap.
    #[error("price too high: {0}")]
    PriceTooHigh(String),
    /// A provider refused a payment notice for good.
    #[error("provider {peer} rejected the payment: {reason}")]
    PaymentRejected { peer: PeerId, reason: String },
    /// The providers' payment deadline passed before the client could pay;
    /// nothing was paid.
    #[error(
        "the providers' payment deadline (height {deadline}) passed before payment (tip {tip}); nothing was paid"
    )]
    PaymentDeadlinePassed { deadline: u32, tip: u32 },
    #[error("invalid address: {0}")]
    InvalidAddress(String),
    /// Any other wallet failure (building, signing, a dust amount).
    #[error("wallet: {0}")]
    Wallet(String),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("database error: {0}")]
    Db(#[from] sled::Error),
    /// A database record that does not decode: a corrupt or foreign db.
    #[error("corrupt database record: {0}")]
    CorruptRecord(String),
    /// The client's manifest of a file is internally inconsistent.
    #[error("manifest of {0} is inconsistent")]
    CorruptManifest(FileId),
    #[error("keystore error: {0}")]
    Keystore(String),
    /// A restore found no index pointer signed by this account.
    #[error("no index backup found: {0}")]
    IndexNotFound(String),
    /// A restore found the account's pointer, but not a readable index.
    #[error("index backup unreadable: {0}")]
    IndexUnreadable(String),
    /// The network task is gone (shutting down).
    #[error("network error: {0}")]
    Network(String),
    /// A bug or an OS failure with nothing better to say.
    #[error("{0}")]
    Internal(String),
}

impl From<crate::wallet::WalletError> for Error {
    fn from(e: crate::wallet::WalletError) -> Self {
        use crate::wallet::WalletError as W;
        match e {
            W::InsufficientFunds {
                required_sat,
                available_sat,
            } => Error::InsufficientFunds {
                required_sat,
                available_sat,
            },
            W::BitcoindUnreachable(s) => Error::BitcoindUnreachable(s),
            W::InvalidAddress(s) => Error::InvalidAddress(s),
            W::AmountBelowDust => Error::InvalidParams("amount is below the dust limit".into()),
            other => Error::Wallet(other.to_string()),
        }
    }
}

/// A blocking task that panicked or was cancelled.
impl From<tokio::task::JoinError> for Error {
    fn from(e: tokio::task::JoinError) -> Self {
        Error::Internal(format!("background task failed: {e}"))
    }
}
