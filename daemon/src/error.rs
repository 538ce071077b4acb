//! The daemon's one error type, and how each variant reaches an RPC caller.

use jsonrpsee::types::ErrorObjectOwned;
use p2pstore_rpc::codes;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the node has no account yet: run `p2pstore-cli init`")]
    NotInitialized,
    #[error("the keystore is locked: run `p2pstore-cli unlock`")]
    Locked,
    #[error("wrong keystore password")]
    WrongPassword,
    #[error("the node already has an account")]
    AlreadyInitialized,
    #[error("invalid mnemonic: {0}")]
    InvalidMnemonic(String),
    #[error("file not found: {0}")]
    FileNotFound(String),
    #[error("{0}")]
    InvalidPath(String),
    #[error("invalid parameter: {0}")]
    InvalidParams(String),
    #[error("no provider with enough space: {0}")]
    NoProvider(String),
    #[error("provider {peer} unreachable: {reason}")]
    ProviderUnreachable { peer: String, reason: String },
    #[error("provider {peer} rejected the request: {reason}")]
    ProviderRejected { peer: String, reason: String },
    #[error("integrity check failed: {0}")]
    Integrity(String),
    #[error("insufficient funds: {required_sat} sat required, {available_sat} sat available")]
    InsufficientFunds {
        required_sat: u64,
        available_sat: u64,
    },
    #[error("bitcoind unreachable: {0}")]
    BitcoindUnreachable(String),
    #[error("price too high: {0}")]
    PriceTooHigh(String),
    #[error("provider {peer} rejected the payment: {reason}")]
    PaymentRejected { peer: String, reason: String },
    #[error("invalid address: {0}")]
    InvalidAddress(String),
    #[error("wallet: {0}")]
    Wallet(String),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("database error: {0}")]
    Db(#[from] sled::Error),
    #[error("keystore error: {0}")]
    Keystore(String),
    #[error("network error: {0}")]
    Network(String),
    #[error("{0}")]
    Internal(String),
}

impl Error {
    pub fn code(&self) -> i32 {
        match self {
            Error::NotInitialized => codes::NOT_INITIALIZED,
            Error::Locked => codes::KEYSTORE_LOCKED,
            Error::WrongPassword => codes::WRONG_PASSWORD,
            Error::AlreadyInitialized => codes::ALREADY_INITIALIZED,
            Error::InvalidMnemonic(_) => codes::INVALID_MNEMONIC,
            Error::FileNotFound(_) => codes::FILE_NOT_FOUND,
            Error::InvalidPath(_) => codes::INVALID_PATH,
            Error::InvalidParams(_) => codes::INVALID_PARAMS,
            Error::NoProvider(_) => codes::NO_PROVIDER,
            Error::ProviderUnreachable { .. } => codes::PROVIDER_UNREACHABLE,
            Error::ProviderRejected { .. } => codes::PROVIDER_REJECTED,
            Error::Integrity(_) => codes::INTEGRITY,
            Error::Io(_) => codes::IO,
            Error::InsufficientFunds { .. } => codes::INSUFFICIENT_FUNDS,
            Error::BitcoindUnreachable(_) => codes::BITCOIND_UNREACHABLE,
            Error::PriceTooHigh(_) => codes::PRICE_TOO_HIGH,
            Error::PaymentRejected { .. } => codes::PAYMENT_REJECTED,
            Error::InvalidAddress(_) => codes::INVALID_ADDRESS,
            Error::Wallet(_) => codes::WALLET,
            Error::Db(_) | Error::Keystore(_) | Error::Network(_) | Error::Internal(_) => {
                codes::INTERNAL
            }
        }
    }
}

impl From<Error> for ErrorObjectOwned {
    fn from(e: Error) -> Self {
        // Scripts get the numbers, not just a sentence.
        let data = match &e {
            Error::InsufficientFunds {
                required_sat,
                available_sat,
            } => Some(
                serde_json::json!({ "required_sat": required_sat, "available_sat": available_sat }),
            ),
            _ => None,
        };
        ErrorObjectOwned::owned(e.code(), e.to_string(), data)
    }
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

/// Encoding of our own metadata; a failure means a corrupt database.
impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::Internal(format!("corrupt record: {e}"))
    }
}
