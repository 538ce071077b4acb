//! How library errors reach JSON-RPC callers: each variant's stable code
//! (`p2pstore_rpc::codes`, which scripts match on) and, where numbers help
//! a script, structured `data`.

use jsonrpsee::types::ErrorObjectOwned;
use p2pstore_rpc::codes;

use crate::error::Error;

/// The stable code of a library error.
pub fn code(e: &Error) -> i32 {
    match e {
        Error::NotInitialized => codes::NOT_INITIALIZED,
        Error::Locked => codes::KEYSTORE_LOCKED,
        Error::WrongPassword => codes::WRONG_PASSWORD,
        Error::AlreadyInitialized => codes::ALREADY_INITIALIZED,
        Error::InvalidMnemonic(_) => codes::INVALID_MNEMONIC,
        Error::IndexNotFound(_) => codes::INDEX_NOT_FOUND,
        Error::IndexUnreadable(_) => codes::INDEX_UNREADABLE,
        Error::NoAccount(_) | Error::InvalidParams(_) => codes::INVALID_PARAMS,
        Error::FileNotFound(_) => codes::FILE_NOT_FOUND,
        // A source that changed mid-put is a problem with the path given.
        Error::InvalidPath(_) | Error::SourceChanged(_) => codes::INVALID_PATH,
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
        Error::Wallet(_) | Error::PaymentDeadlinePassed { .. } => codes::WALLET,
        // Startup-only and internal failures: nothing a caller can fix.
        Error::Config(_)
        | Error::AlreadyRunning { .. }
        | Error::Bind { .. }
        | Error::Db(_)
        | Error::CorruptRecord(_)
        | Error::CorruptManifest(_)
        | Error::Keystore(_)
        | Error::Network(_)
        | Error::Internal(_) => codes::INTERNAL,
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
        ErrorObjectOwned::owned(code(&e), e.to_string(), data)
    }
}
