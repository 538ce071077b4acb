//! One error type for everything the wallet does, so RPC handlers can map
//! each variant to a user-facing message (and `put` can tell "bitcoind is
//! down" apart from "you are out of money") without knowing about bdk.

use bdk_bitcoind_rpc::bitcoincore_rpc;
use bdk_wallet::error::CreateTxError;

/// Errors returned by [`super::WalletService`].
#[derive(Debug, thiserror::Error)]
pub enum WalletError {
    /// Coin selection could not cover outputs plus fee.
    #[error("insufficient funds: {required_sat} sat required, {available_sat} sat available")]
    InsufficientFunds {
        required_sat: u64,
        available_sat: u64,
    },
    /// bitcoind could not be reached, refused our credentials, or is still
    /// starting up; the string never contains credentials.
    #[error("bitcoind unreachable: {0}")]
    BitcoindUnreachable(String),
    #[error("invalid address: {0}")]
    InvalidAddress(String),
    #[error("amount is below the dust limit")]
    AmountBelowDust,
    #[error("cannot persist wallet state: {0}")]
    Persist(String),
    #[error("cannot load wallet: {0}")]
    Load(String),
    #[error("{0}")]
    Other(String),
}

impl From<CreateTxError> for WalletError {
    fn from(e: CreateTxError) -> Self {
        match e {
            CreateTxError::CoinSelection(f) => WalletError::InsufficientFunds {
                required_sat: f.needed.to_sat(),
                available_sat: f.available.to_sat(),
            },
            CreateTxError::OutputBelowDustLimit(_) => WalletError::AmountBelowDust,
            other => WalletError::Other(format!("cannot build transaction: {other}")),
        }
    }
}

/// RPC error codes that mean "bitcoind is there but not usable yet"; the
/// caller should treat them like a connection failure and retry later.
const RPC_IN_WARMUP: i32 = -28;

/// Classifies a bitcoind RPC error: transport-level failures (refused,
/// timeout, HTTP 401, unreadable cookie) become `BitcoindUnreachable` so `put`
/// can fail fast; anything bitcoind actually answered becomes `Other`.
pub(crate) fn from_rpc(context: &str, e: bitcoincore_rpc::Error) -> WalletError {
    use bitcoincore_rpc::Error as E;
    use bitcoincore_rpc::jsonrpc::Error as J;
    match e {
        E::JsonRpc(J::Rpc(ref r)) if r.code == RPC_IN_WARMUP => {
            WalletError::BitcoindUnreachable(format!("{context}: bitcoind is starting up"))
        }
        E::JsonRpc(J::Rpc(r)) => WalletError::Other(format!(
            "{context}: bitcoind error {}: {}",
            r.code, r.message
        )),
        E::JsonRpc(J::Transport(t)) => WalletError::BitcoindUnreachable(format!("{context}: {t}")),
        E::Io(io) => WalletError::BitcoindUnreachable(format!("{context}: {io}")),
        E::InvalidCookieFile => WalletError::BitcoindUnreachable(format!(
            "{context}: cannot read bitcoind cookie file (is bitcoind running?)"
        )),
        other => WalletError::Other(format!("{context}: {other}")),
    }
}
