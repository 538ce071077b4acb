//! The node's bitcoin wallet: clients pay providers from it, providers
//! receive into it and verify payment notices against it.
//!
//! A BIP84 (native segwit) bdk wallet derived from the account seed, stored
//! in the daemon's sled database and kept current by polling bitcoind (see
//! [`sync`]). Everything goes through the cheap-to-clone [`WalletService`].
//! Secret keys stay in memory ([`keys`]); the database only ever holds public
//! descriptors and chain data.

mod error;
mod keys;
pub mod persist;
pub mod sync;
#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard};

use bdk_bitcoind_rpc::bitcoincore_rpc::{self, RpcApi};
use bdk_wallet::bitcoin::address::NetworkUnchecked;
use bdk_wallet::bitcoin::secp256k1::Secp256k1;
use bdk_wallet::bitcoin::{Address, Amount, FeeRate, Network, OutPoint, Transaction, Txid};
use bdk_wallet::chain::ChainPosition;
use bdk_wallet::{
    IsDust, KeychainKind, LoadError, LoadMismatch, LoadWithPersistError, PersistedWallet,
    SignOptions, Wallet,
};
use tokio::sync::watch;

pub use error::WalletError;
pub use sync::{BitcoindAuth, BitcoindConfig, SyncStatus};

use error::from_rpc;
use keys::SigningKey;
use persist::SledPersister;
use sync::RpcEmitter;

/// Used when the caller gives no fee rate and bitcoind has no estimate yet
/// (always the case on a fresh regtest chain).
pub const DEFAULT_FEE_RATE_SAT_VB: u64 = 2;
/// No payment is built below this rate, whatever bitcoind estimates: the
/// default minimum relay fee.
pub const MIN_FEE_RATE_SAT_VB: u64 = 1;
/// Confirmation target for `estimatesmartfee` when the caller gives no rate.
pub const DEFAULT_CONF_TARGET: u16 = 6;

/// Balances and transactions are reported in the RPC's own types, defined
/// once in rpc-spec. Unconfirmed counts trusted (our change) and untrusted
/// (incoming) mempool outputs; a tx's fee is unknown when some inputs are
/// not ours.
pub use p2pstore_rpc::{WalletBalance, WalletTx};

/// Handle to the wallet; clone freely, all clones share one wallet.
#[derive(Clone)]
pub struct WalletService {
    inner: Arc<Inner>,
}

pub(crate) struct State {
    wallet: PersistedWallet<SledPersister>,
    persister: SledPersister,
    /// Inputs of transactions signed but not yet broadcast (or cancelled).
    /// In memory; the client restores those of its recorded, signed
    /// payments at start ([`WalletService::reserve_inputs`]), and nothing
    /// else, so a crash can neither free a signed payment's coins for
    /// another spend nor lock coins forever.
    reserved: HashSet<OutPoint>,
}

impl State {
    fn persist(&mut self) -> Result<(), WalletError> {
        self.wallet
            .persist(&mut self.persister)
            .map(|_| ())
            .map_err(|e| WalletError::Persist(e.to_string()))
    }
}

pub(crate) struct Inner {
    network: Network,
    /// The first block a sync from scratch fetches.
    birthday_height: u32,
    key: SigningKey,
    rpc: BitcoindConfig,
    state: Mutex<State>,
    status: Mutex<SyncStatus>,
    /// Also serialises sync rounds: only one emitter may feed the wallet.
    emitter: tokio::sync::Mutex<Option<RpcEmitter>>,
    shutdown: watch::Sender<bool>,
    /// Every spend, from a put, a period payment, a fee bump or `wallet
    /// send`, holds this from choosing coins until it is recorded and
    /// broadcast ([`WalletService::spend_lock`]).
    spend_lock: Arc<tokio::sync::Mutex<()>>,
}

impl Inner {
    /// A panic elsewhere must not take the wallet down with it, so a
    /// poisoned lock is recovered rather than propagated.
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl fmt::Debug for WalletService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WalletService")
            .field("network", &self.inner.network)
            .field("rpc", &self.inner.rpc)
            .finish_non_exhaustive()
    }
}

fn load_error(e: LoadWithPersistError<persist::PersistError>) -> WalletError {
    match e {
        LoadWithPersistError::Persist(e) => WalletError::Load(format!("reading database: {e}")),
        LoadWithPersistError::InvalidChangeSet(LoadError::Mismatch(m)) => match m {
            LoadMismatch::Network { loaded, expected } => WalletError::Load(format!(
                "the wallet in this database is for network {loaded}, but the daemon runs on \
                 {expected}; use a separate data directory per network"
            )),
            LoadMismatch::Genesis { .. } => WalletError::Load(
                "the wallet in this database belongs to a different chain (genesis mismatch)"
                    .into(),
            ),
            LoadMismatch::Descriptor { keychain, .. } => WalletError::Load(format!(
                "the wallet in this database was created from a different seed ({keychain} \
                 descriptor differs); refusing to mix wallets"
            )),
        },
        LoadWithPersistError::InvalidChangeSet(e) => WalletError::Load(e.to_string()),
    }
}

fn is_revealed(wallet: &Wallet, address: &Address) -> bool {
    match wallet.derivation_of_spk(address.script_pubkey()) {
        Some((keychain, index)) => wallet
            .derivation_index(keychain)
            .is_some_and(|last| index <= last),
        None => false,
    }
}

/// bitcoind says "I already have it" in several ways depending on version
/// and on whether the tx is still in the mempool or already mined.
fn is_already_known(e: &bitcoincore_rpc::Error) -> bool {
    use bitcoincore_rpc::jsonrpc::Error as J;
    const RPC_VERIFY_ALREADY_IN_CHAIN: i32 = -27;
    const RPC_VERIFY_REJECTED: i32 = -26;
    match e {
        bitcoincore_rpc::Error::JsonRpc(J::Rpc(r)) => {
            r.code == RPC_VERIFY_ALREADY_IN_CHAIN
                || (r.code == RPC_VERIFY_REJECTED
                    && (r.message.contains("already-in-mempool")
                        || r.message.contains("already-known")))
        }
        _ => false,
    }
}

impl WalletService {
    /// Loads the wallet from `db` (tree [`persist::TREE_NAME`]) or creates it
    /// on first run. Does not contact bitcoind. A new wallet scans the
    /// chain from `birthday_height`: no block below it can pay the account
    /// (see [`crate::keys::AccountKeys::birthday_height`]).
    pub fn open(
        db: &sled::Db,
        seed: &[u8; 64],
        network: Network,
        birthday_height: u32,
        rpc: BitcoindConfig,
    ) -> Result<WalletService, WalletError> {
        let key = SigningKey::from_seed(seed, network)?;
        let secp = Secp256k1::new();
        let (external, internal) = key.descriptors(network, &secp)?;

        let mut persister =
            SledPersister::open(db).map_err(|e| WalletError::Load(format!("opening tree: {e}")))?;
        let loaded = Wallet::load()
            .check_network(network)
            .descriptor(KeychainKind::External, Some(external.clone()))
            .descriptor(KeychainKind::Internal, Some(internal.clone()))
            .load_wallet(&mut persister)
            .map_err(load_error)?;
        let wallet = match loaded {
            Some(w) => w,
            None => Wallet::create(external, internal)
                .network(network)
                .create_wallet(&mut persister)
                .map_err(|e| WalletError::Load(format!("creating wallet: {e}")))?,
        };
        let tip_height = wallet.latest_checkpoint().height();

        let (shutdown, _) = watch::channel(false);
        Ok(WalletService {
            inner: Arc::new(Inner {
                network,
                birthday_height,
                key,
                rpc,
                state: Mutex::new(State {
                    wallet,
                    persister,
                    reserved: HashSet::new(),
                }),
                status: Mutex::new(SyncStatus {
                    tip_height,
                    ..SyncStatus::default()
                }),
                emitter: tokio::sync::Mutex::new(None),
                spend_lock: Arc::default(),
                shutdown,
            }),
        })
    }

    pub fn network(&self) -> Network {
        self.inner.network
    }

    /// The first block this wallet scans when it starts from nothing.
    pub fn birthday_height(&self) -> u32 {
        self.inner.birthday_height
    }

    /// Starts the background sync loop: a round every `poll_interval` while
    /// bitcoind answers, exponential backoff (1 s to 30 s) while it does not.
    /// Ends on [`WalletService::shutdown`] or when the handle is aborted.
    pub fn spawn_sync(&self) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        let mut shutdown = self.inner.shutdown.subscribe();
        tokio::spawn(async move {
            let mut backoff = sync::BACKOFF_MIN;
            let mut failing = false;
            loop {
                if *shutdown.borrow_and_update() {
                    break;
                }
                let wait = match this.sync_now().await {
                    Ok(()) => {
                        if failing {
                            tracing::info!("wallet sync with bitcoind recovered");
                        }
                        failing = false;
                        backoff = sync::BACKOFF_MIN;
                        this.inner.rpc.poll_interval
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, retry_in = ?backoff, "wallet sync failed");
                        failing = true;
                        let wait = backoff;
                        backoff = sync::next_backoff(backoff);
                        wait
                    }
                };
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    changed = shutdown.changed() => {
                        if changed.is_err() || *shutdown.borrow() {
                            break;
                        }
                    }
                }
            }
            tracing::debug!("wallet sync task stopped");
        })
    }

    /// Stops the task(s) started by [`WalletService::spawn_sync`]. Final:
    /// a sync task spawned afterwards exits at once. `sync_now` still works.
    pub fn shutdown(&self) {
        self.inner.shutdown.send_replace(true);
    }

    /// Runs one full sync round now (waiting for a round already in
    /// progress first), so on `Ok` the wallet has seen bitcoind's current
    /// tip and mempool.
    pub async fn sync_now(&self) -> Result<(), WalletError> {
        let mut slot = self.inner.emitter.lock().await;
        let mut emitter = slot.take();
        let inner = self.inner.clone();
        let joined = tokio::task::spawn_blocking(move || {
            let result = sync::run_round(&inner, &mut emitter);
            (emitter, result)
        })
        .await;
        let result = match joined {
            Ok((emitter, result)) => {
                // After any failure start from a fresh connection (new cookie,
                // emitter rebuilt from the wallet's own checkpoint).
                if result.is_ok() {
                    *slot = emitter;
                }
                result
            }
            Err(e) => Err(WalletError::Other(format!("sync task failed: {e}"))),
        };
        self.inner.record_sync(&result);
        result.map(|_| ())
    }

    pub fn sync_status(&self) -> SyncStatus {
        self.inner
            .status
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Asks bitcoind for its block count right now. For callers (like
    /// `put`) that must fail fast rather than trust a possibly stale status.
    pub async fn check_bitcoind(&self) -> Result<u64, WalletError> {
        self.inner.rpc.block_count().await
    }

    /// bitcoind's fee estimate for `target_blocks`, in sat/vB (rounded up),
    /// or None when it has none yet (too little fee history, as on a fresh
    /// regtest chain).
    pub async fn estimate_fee_rate(&self, target_blocks: u16) -> Result<Option<u64>, WalletError> {
        let rpc = self.inner.rpc.clone();
        let estimate = tokio::task::spawn_blocking(move || {
            rpc.client()?
                .estimate_smart_fee(target_blocks, None)
                .map_err(|e| from_rpc("estimatesmartfee", e))
        })
        .await
        .map_err(|e| WalletError::Other(format!("fee estimation failed: {e}")))??;
        // bitcoind reports BTC per 1000 vB.
        Ok(estimate
            .fee_rate
            .map(|per_kvb| per_kvb.to_sat().div_ceil(1000).max(1)))
    }

    pub fn balance(&self) -> WalletBalance {
        let b = self.inner.lock().wallet.balance();
        WalletBalance {
            confirmed_sat: b.confirmed.to_sat(),
            unconfirmed_sat: b
                .trusted_pending
                .to_sat()
                .saturating_add(b.untrusted_pending.to_sat()),
            immature_sat: b.immature.to_sat(),
        }
    }

    /// Reveals the next receive address; it is on disk before it is handed
    /// out, so a restart can never give the same address to someone else.
    pub fn new_address(&self) -> Result<Address, WalletError> {
        let mut state = self.inner.lock();
        let info = state.wallet.reveal_next_address(KeychainKind::External);
        state.persist()?;
        Ok(info.address)
    }

    /// The index [`WalletService::new_address`] will reveal next.
    pub fn next_address_index(&self) -> u32 {
        self.inner
            .lock()
            .wallet
            .next_derivation_index(KeychainKind::External)
    }

    /// Parses user input as an address of this wallet's network.
    pub fn parse_address(&self, address: &str) -> Result<Address, WalletError> {
        let unchecked = Address::from_str(address.trim())
            .map_err(|e| WalletError::InvalidAddress(format!("{address}: {e}")))?;
        self.check_network(unchecked)
    }

    /// An address from elsewhere (a peer, a caller), if it is for this
    /// wallet's network.
    pub fn check_network(
        &self,
        address: Address<NetworkUnchecked>,
    ) -> Result<Address, WalletError> {
        let network = self.inner.network;
        let text = address.assume_checked_ref().to_string();
        address
            .require_network(network)
            .map_err(|_| WalletError::InvalidAddress(format!("{text} is not a {network} address")))
    }

    /// The one lock of every spend: the client's payments hold it, and so
    /// does [`WalletService::send_to`], so an operator's `wallet send`
    /// cannot take coins a payment has signed but not yet broadcast.
    pub fn spend_lock(&self) -> Arc<tokio::sync::Mutex<()>> {
        self.inner.spend_lock.clone()
    }

    /// Pays `amount_sat` to `address`; `None` fee rate asks bitcoind.
    pub async fn send(
        &self,
        address: &str,
        amount_sat: u64,
        fee_rate_sat_vb: Option<u64>,
    ) -> Result<Txid, WalletError> {
        let address = self.parse_address(address)?;
        self.send_to(&address, amount_sat, fee_rate_sat_vb).await
    }

    /// Pays `amount_sat` to a checked `address`; `None` fee rate asks bitcoind.
    pub async fn send_to(
        &self,
        address: &Address,
        amount_sat: u64,
        fee_rate_sat_vb: Option<u64>,
    ) -> Result<Txid, WalletError> {
        let _spending = self.inner.spend_lock.lock().await;
        self.pay_many(&[(address.clone(), amount_sat)], fee_rate_sat_vb)
            .await
    }

    /// Pays all `outputs` in one transaction; `None` fee rate asks bitcoind.
    pub async fn pay_many(
        &self,
        outputs: &[(Address, u64)],
        fee_rate_sat_vb: Option<u64>,
    ) -> Result<Txid, WalletError> {
        let fee_rate = match fee_rate_sat_vb {
            Some(rate) => rate,
            None => self
                .estimate_fee_rate(DEFAULT_CONF_TARGET)
                .await?
                .unwrap_or(DEFAULT_FEE_RATE_SAT_VB),
        };
        let tx = self.build_signed_tx(outputs, Some(fee_rate))?;
        match self.broadcast(&tx).await {
            Ok(txid) => Ok(txid),
            Err(e) => {
                self.cancel_tx(&tx);
                Err(e)
            }
        }
    }

    /// Builds and signs (but does not broadcast) one transaction paying
    /// `outputs`, so the caller can record it before it goes out. Its inputs
    /// stay reserved in memory until [`WalletService::broadcast`] or
    /// [`WalletService::cancel_tx`]. `None` fee rate means
    /// [`DEFAULT_FEE_RATE_SAT_VB`] (use [`WalletService::estimate_fee_rate`]
    /// for a market rate).
    pub fn build_signed_tx(
        &self,
        outputs: &[(Address, u64)],
        fee_rate_sat_vb: Option<u64>,
    ) -> Result<Transaction, WalletError> {
        let network = self.inner.network;
        if outputs.is_empty() {
            return Err(WalletError::Other("no outputs to pay".into()));
        }
        for (address, amount) in outputs {
            if !address.as_unchecked().is_valid_for_network(network) {
                return Err(WalletError::InvalidAddress(format!(
                    "{address} is not a {network} address"
                )));
            }
            if amount.is_dust(&address.script_pubkey()) {
                return Err(WalletError::AmountBelowDust);
            }
        }
        let rate = fee_rate_sat_vb.unwrap_or(DEFAULT_FEE_RATE_SAT_VB);
        let fee_rate = FeeRate::from_sat_per_vb(rate)
            .ok_or_else(|| WalletError::Other(format!("fee rate {rate} sat/vB is too large")))?;

        let mut guard = self.inner.lock();
        let state = &mut *guard;
        let psbt = {
            let mut builder = state.wallet.build_tx();
            for (address, amount) in outputs {
                builder.add_recipient(address.script_pubkey(), Amount::from_sat(*amount));
            }
            builder
                .fee_rate(fee_rate)
                .unspendable(state.reserved.iter().copied().collect());
            builder.finish()?
        };
        self.sign_and_reserve(state, psbt)
    }

    /// A replacement (BIP 125) of our unconfirmed `txid` at `fee_rate_sat_vb`:
    /// the same recipients and amounts, the fee taken from the change.
    /// Signed, not broadcast; its inputs reserved as for
    /// [`WalletService::build_signed_tx`].
    pub fn build_fee_bump(
        &self,
        txid: Txid,
        fee_rate_sat_vb: u64,
    ) -> Result<Transaction, WalletError> {
        let fee_rate = FeeRate::from_sat_per_vb(fee_rate_sat_vb).ok_or_else(|| {
            WalletError::Other(format!("fee rate {fee_rate_sat_vb} sat/vB is too large"))
        })?;
        let mut guard = self.inner.lock();
        let state = &mut *guard;
        let psbt = {
            let mut builder = state
                .wallet
                .build_fee_bump(txid)
                .map_err(|e| WalletError::Other(format!("cannot bump {txid}: {e}")))?;
            builder
                .fee_rate(fee_rate)
                .unspendable(state.reserved.iter().copied().collect());
            builder.finish()?
        };
        self.sign_and_reserve(state, psbt)
    }

    fn sign_and_reserve(
        &self,
        state: &mut State,
        mut psbt: bdk_wallet::bitcoin::Psbt,
    ) -> Result<Transaction, WalletError> {
        self.inner.key.sign(&mut psbt, state.wallet.secp_ctx())?;
        let finalized = state
            .wallet
            .finalize_psbt(&mut psbt, SignOptions::default())
            .map_err(|e| WalletError::Other(format!("cannot finalize transaction: {e}")))?;
        if !finalized {
            return Err(WalletError::Other(
                "transaction is not fully signed after signing".into(),
            ));
        }
        let tx = psbt
            .extract_tx()
            .map_err(|e| WalletError::Other(format!("cannot extract transaction: {e}")))?;
        state
            .reserved
            .extend(tx.input.iter().map(|input| input.previous_output));
        // Building revealed a change address; keep the index on disk so a
        // recorded tx broadcast after a restart is still recognised as ours.
        state.persist()?;
        Ok(tx)
    }

    /// Reserves the inputs of `tx`, signed before a restart and not yet
    /// known to be out, so no other spend takes them meanwhile.
    pub fn reserve_inputs(&self, tx: &Transaction) {
        let mut guard = self.inner.lock();
        guard
            .reserved
            .extend(tx.input.iter().map(|input| input.previous_output));
    }

    /// Drops the reservation of `tx`'s inputs once it is known to be out
    /// (its inputs are spent in the wallet's view from then on).
    pub fn release_inputs(&self, tx: &Transaction) {
        let mut guard = self.inner.lock();
        for input in &tx.input {
            guard.reserved.remove(&input.previous_output);
        }
    }

    /// Whether `outpoint` is reserved by a signed, unbroadcast payment.
    pub fn is_reserved(&self, outpoint: &OutPoint) -> bool {
        self.inner.lock().reserved.contains(outpoint)
    }

    /// Releases what [`WalletService::build_signed_tx`] reserved for a
    /// transaction that will not be broadcast.
    pub fn cancel_tx(&self, tx: &Transaction) {
        let mut guard = self.inner.lock();
        let state = &mut *guard;
        for input in &tx.input {
            state.reserved.remove(&input.previous_output);
        }
        for output in &tx.output {
            if let Some((KeychainKind::Internal, index)) =
                state.wallet.derivation_of_spk(output.script_pubkey.clone())
            {
                state.wallet.unmark_used(KeychainKind::Internal, index);
            }
        }
    }

    /// Sends `tx` through bitcoind and records it as unconfirmed. A tx
    /// bitcoind already has (mempool or chain) counts as success, so
    /// re-broadcasting a recorded payment is safe.
    pub async fn broadcast(&self, tx: &Transaction) -> Result<Txid, WalletError> {
        let rpc = self.inner.rpc.clone();
        let to_send = tx.clone();
        let txid = tokio::task::spawn_blocking(move || {
            let client = rpc.client()?;
            match client.send_raw_transaction(&to_send) {
                Ok(txid) => Ok(txid),
                Err(e) if is_already_known(&e) => Ok(to_send.compute_txid()),
                Err(e) => Err(from_rpc("broadcast", e)),
            }
        })
        .await
        .map_err(|e| WalletError::Other(format!("broadcast failed: {e}")))??;

        let mut guard = self.inner.lock();
        let state = &mut *guard;
        state
            .wallet
            .apply_unconfirmed_txs([(tx.clone(), sync::unix_now())]);
        for input in &tx.input {
            state.reserved.remove(&input.previous_output);
        }
        // The tx is out; failing here would invite the caller to pay again.
        // The change stays staged and is written by the next persist.
        if let Err(e) = state.persist() {
            tracing::error!(%txid, error = %e, "broadcast ok but wallet state not persisted");
        }
        Ok(txid)
    }

    pub fn find_tx(&self, txid: Txid) -> Option<WalletTx> {
        let state = self.inner.lock();
        let tip = state.wallet.latest_checkpoint().height();
        let ctx = state.wallet.get_tx(txid)?;
        Some(describe(&state.wallet, &ctx, tip))
    }

    /// All wallet transactions, mempool first, then newest block first.
    pub fn txs(&self) -> Vec<WalletTx> {
        let state = self.inner.lock();
        let tip = state.wallet.latest_checkpoint().height();
        let mut txs: Vec<WalletTx> = state
            .wallet
            .transactions()
            .map(|ctx| describe(&state.wallet, &ctx, tip))
            .collect();
        txs.sort_by(|a, b| {
            let key = |t: &WalletTx| t.height.unwrap_or(u32::MAX);
            key(b).cmp(&key(a)).then_with(|| a.txid.cmp(&b.txid))
        });
        txs
    }

    /// Whether `txid:vout` (mempool or confirmed, as far as this wallet has
    /// synced) pays `address`, which must be one of our revealed addresses.
    /// Returns the output value and its confirmation height.
    pub fn received_at(
        &self,
        txid: Txid,
        vout: u32,
        address: &Address,
    ) -> Option<(u64, Option<u32>)> {
        let state = self.inner.lock();
        if !is_revealed(&state.wallet, address) {
            return None;
        }
        let ctx = state.wallet.get_tx(txid)?;
        let output = ctx.tx_node.tx.output.get(usize::try_from(vout).ok()?)?;
        if output.script_pubkey != address.script_pubkey() {
            return None;
        }
        Some((output.value.to_sat(), confirmed_height(&ctx.chain_position)))
    }

    /// An output paying `address` in a transaction that replaced `txid`
    /// (spends one of its inputs) and is in the wallet's canonical view:
    /// (txid, vout, value). A payment bumped by its payer turns up here.
    pub fn replacement_of(&self, txid: Txid, address: &Address) -> Option<(Txid, u32, u64)> {
        let state = self.inner.lock();
        let old = state.wallet.tx_graph().get_tx(txid)?;
        let spent: HashSet<OutPoint> = old.input.iter().map(|i| i.previous_output).collect();
        let spk = address.script_pubkey();
        state
            .wallet
            .transactions()
            .filter(|ctx| ctx.tx_node.txid != txid)
            .filter(|ctx| {
                ctx.tx_node
                    .tx
                    .input
                    .iter()
                    .any(|i| spent.contains(&i.previous_output))
            })
            .find_map(|ctx| {
                let (vout, out) = ctx
                    .tx_node
                    .tx
                    .output
                    .iter()
                    .enumerate()
                    .find(|(_, o)| o.script_pubkey == spk)?;
                Some((ctx.tx_node.txid, vout as u32, out.value.to_sat()))
            })
    }

    /// The largest output, in the wallet's canonical view (mempool or
    /// confirmed), that pays `address`: (txid, vout, value). Lets a provider
    /// find a payment whose notice never arrived.
    pub fn largest_payment_to(&self, address: &Address) -> Option<(Txid, u32, u64)> {
        let state = self.inner.lock();
        if !is_revealed(&state.wallet, address) {
            return None;
        }
        let spk = address.script_pubkey();
        state
            .wallet
            .list_output()
            .filter(|o| o.txout.script_pubkey == spk)
            .map(|o| (o.outpoint.txid, o.outpoint.vout, o.txout.value.to_sat()))
            .max_by_key(|(_, _, v)| *v)
    }

    /// Height of the last block the wallet has processed.
    pub fn tip_height(&self) -> u32 {
        self.inner.lock().wallet.latest_checkpoint().height()
    }

    /// Whether `address` is one this wallet has handed out (receive or
    /// change); addresses only inside the lookahead window do not count.
    pub fn is_mine_address(&self, address: &Address) -> bool {
        is_revealed(&self.inner.lock().wallet, address)
    }
}

fn confirmed_height(
    position: &ChainPosition<bdk_wallet::chain::ConfirmationBlockTime>,
) -> Option<u32> {
    match position {
        ChainPosition::Confirmed { anchor, .. } => Some(anchor.block_id.height),
        ChainPosition::Unconfirmed { .. } => None,
    }
}

fn describe(wallet: &Wallet, ctx: &bdk_wallet::WalletTx<'_>, tip: u32) -> WalletTx {
    let tx = &ctx.tx_node.tx;
    let (sent, received) = wallet.sent_and_received(tx);
    let height = confirmed_height(&ctx.chain_position);
    WalletTx {
        txid: ctx.tx_node.txid.to_string(),
        received_sat: received.to_sat(),
        sent_sat: sent.to_sat(),
        fee_sat: wallet.calculate_fee(tx).ok().map(|fee| fee.to_sat()),
        confirmations: height.map_or(0, |h| tip.saturating_sub(h).saturating_add(1)),
        height,
    }
}
