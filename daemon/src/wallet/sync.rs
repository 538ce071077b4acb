//! Keeps the wallet in step with a bitcoind node (blocks and mempool) using
//! bdk's RPC `Emitter`, which needs no bitcoind wallet. The RPC client is
//! blocking, so every round runs on tokio's blocking pool; the wallet lock is
//! only taken to apply what one RPC call returned, never across the call.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bdk_bitcoind_rpc::Emitter;
use bdk_bitcoind_rpc::bitcoincore_rpc::{Auth, Client, RpcApi};
use serde::Serialize;

use super::error::from_rpc;
use super::{Inner, WalletError};

/// How to reach bitcoind's JSON-RPC port.
#[derive(Clone)]
pub struct BitcoindConfig {
    /// e.g. `http://127.0.0.1:18443`
    pub url: String,
    pub auth: BitcoindAuth,
    /// How often the background task polls when bitcoind is healthy.
    pub poll_interval: Duration,
}

#[derive(Clone)]
pub enum BitcoindAuth {
    /// bitcoind's `.cookie` file, re-read on every reconnect because bitcoind
    /// writes a new one each time it starts.
    Cookie(PathBuf),
    UserPass {
        user: String,
        password: String,
    },
}

// Hand-written so a `{:?}` of the config can never leak the RPC password.
impl fmt::Debug for BitcoindAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BitcoindAuth::Cookie(p) => f.debug_tuple("Cookie").field(p).finish(),
            BitcoindAuth::UserPass { user, .. } => f
                .debug_struct("UserPass")
                .field("user", user)
                .field("password", &"<redacted>")
                .finish(),
        }
    }
}

impl fmt::Debug for BitcoindConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BitcoindConfig")
            .field("url", &self.url)
            .field("auth", &self.auth)
            .field("poll_interval", &self.poll_interval)
            .finish()
    }
}

impl BitcoindConfig {
    /// A fresh client per (re)connect: a cookie file is only valid for one
    /// bitcoind run, so caching the credentials would break after a restart.
    pub(crate) fn client(&self) -> Result<Client, WalletError> {
        let auth = match &self.auth {
            BitcoindAuth::Cookie(path) => Auth::CookieFile(path.clone()),
            BitcoindAuth::UserPass { user, password } => {
                Auth::UserPass(user.clone(), password.clone())
            }
        };
        Client::new(&self.url, auth).map_err(|e| from_rpc("connect", e))
    }

    /// bitcoind's block count now, asked off the async workers.
    pub async fn block_count(&self) -> Result<u64, WalletError> {
        let rpc = self.clone();
        tokio::task::spawn_blocking(move || {
            rpc.client()?
                .get_block_count()
                .map_err(|e| from_rpc("getblockcount", e))
        })
        .await
        .map_err(|e| WalletError::Other(format!("bitcoind check failed: {e}")))?
    }
}

/// Sync health, for `status` and for failing fast when bitcoind is down.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SyncStatus {
    /// Unix seconds of the last round that reached bitcoind's tip.
    pub last_sync_unix: Option<u64>,
    /// Unix seconds of the last attempt, successful or not.
    pub last_attempt_unix: Option<u64>,
    /// The wallet's chain tip after the last successful round.
    pub tip_height: u32,
    /// Why the most recent round failed; `None` once a round succeeds.
    pub last_error: Option<String>,
    pub consecutive_failures: u32,
}

/// Sync state that lives between rounds. The emitter remembers which blocks
/// and mempool txs it already emitted, so keeping it avoids re-downloading.
pub(crate) type RpcEmitter = Emitter<Arc<Client>>;

/// Persist at least this often while catching up on many blocks, so a
/// restart mid-catch-up does not start over.
const BLOCKS_PER_PERSIST: u32 = 1000;

/// The first backoff after a failure and its cap.
pub(crate) const BACKOFF_MIN: Duration = Duration::from_secs(1);
pub(crate) const BACKOFF_MAX: Duration = Duration::from_secs(30);

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Builds an emitter that continues from what the wallet already knows, so
/// a restart only fetches blocks after the persisted tip, and a new wallet
/// starts at its birthday rather than at genesis (years of blocks on
/// mainnet that cannot hold its coins).
fn new_emitter(inner: &Inner) -> Result<RpcEmitter, WalletError> {
    let client = Arc::new(inner.rpc.client()?);
    let state = inner.lock();
    let tip = state.wallet.latest_checkpoint();
    let start_height = tip.height().max(inner.birthday_height);
    let unconfirmed: Vec<_> = state
        .wallet
        .transactions()
        .filter(|tx| !tx.chain_position.is_confirmed())
        .map(|tx| tx.tx_node.tx.clone())
        .collect();
    Ok(Emitter::new(client, tip, start_height, unconfirmed))
}

/// One catch-up: every new block, then the mempool. Blocking; runs on the
/// blocking pool. Returns the wallet tip height afterwards.
pub(crate) fn run_round(
    inner: &Inner,
    emitter: &mut Option<RpcEmitter>,
) -> Result<u32, WalletError> {
    let em = match emitter {
        Some(em) => em,
        None => emitter.insert(new_emitter(inner)?),
    };

    let mut since_persist = 0u32;
    while let Some(ev) = em.next_block().map_err(|e| from_rpc("fetch block", e))? {
        let height = ev.block_height();
        let mut state = inner.lock();
        state
            .wallet
            .apply_block_connected_to(&ev.block, height, ev.connected_to())
            .map_err(|e| WalletError::Other(format!("cannot apply block {height}: {e}")))?;
        since_persist += 1;
        if since_persist >= BLOCKS_PER_PERSIST {
            state.persist()?;
            since_persist = 0;
        }
    }
    if since_persist > 0 {
        inner.lock().persist()?;
    }

    let mempool = em.mempool().map_err(|e| from_rpc("fetch mempool", e))?;
    let mut state = inner.lock();
    state.wallet.apply_evicted_txs(mempool.evicted);
    state.wallet.apply_unconfirmed_txs(mempool.update);
    state.persist()?;
    Ok(state.wallet.latest_checkpoint().height())
}

impl Inner {
    pub(crate) fn record_sync(&self, result: &Result<u32, WalletError>) {
        let now = unix_now();
        let mut st = self
            .status
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        st.last_attempt_unix = Some(now);
        match result {
            Ok(tip) => {
                st.last_sync_unix = Some(now);
                st.tip_height = *tip;
                st.last_error = None;
                st.consecutive_failures = 0;
            }
            Err(e) => {
                st.last_error = Some(e.to_string());
                st.consecutive_failures = st.consecutive_failures.saturating_add(1);
            }
        }
    }
}

/// Doubles the wait after each failure, from [`BACKOFF_MIN`] to [`BACKOFF_MAX`].
pub(crate) fn next_backoff(current: Duration) -> Duration {
    (current * 2).clamp(BACKOFF_MIN, BACKOFF_MAX)
}
