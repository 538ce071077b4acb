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
            Error::Db(_) | Error::Keystore(_) | Error::Network(_) | Error::Internal(_) => {
                codes::INTERNAL
            }
        }
    }
}

impl From<Error> for ErrorObjectOwned {
    fn from(e: Error) -> Self {
        ErrorObjectOwned::owned(e.code(), e.to_string(), None::<()>)
    }
}

/// Encoding of our own metadata; a failure means a corrupt database.
impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::Internal(format!("corrupt record: {e}"))
    }
}
