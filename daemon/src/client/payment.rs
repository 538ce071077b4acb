//! Paying for a put: one transaction, one output per provider, and a
//! record that makes paying twice impossible.
//!
//! The signed transaction is written to sled *before* it is broadcast. After
//! a crash, reconciliation finds the intent and either sees the transaction
//! in the wallet or rebroadcasts the very same bytes; it never builds a new
//! transaction for a contract that already has one.

use std::time::Duration;

use bdk_wallet::bitcoin::consensus::encode::{deserialize_hex, serialize_hex};
use bdk_wallet::bitcoin::{Transaction, Txid};
use libp2p::PeerId;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::ClientService;
use crate::contracts::{Contract, State};
use crate::error::{Error, Result};
use crate::failpoint;
use crate::ids::{ContractId, FileId, as_text};
use crate::network::PeerError;
use crate::protocol::*;
use crate::wallet::WalletError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IntentState {
    /// Signed and recorded; maybe broadcast, maybe not.
    Signed,
    /// Known to bitcoind; providers not all notified yet.
    Broadcast,
    /// Every provider confirmed (or definitively refused) the payment.
    Done,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PaymentIntent {
    #[serde(with = "as_text")]
    pub txid: Txid,
    pub tx_hex: String,
    pub file_id: FileId,
    /// (contract id, output index) for every contract this tx pays.
    pub outputs: Vec<(ContractId, u32)>,
    pub state: IntentState,
}

/// How often a provider is asked to confirm a payment before the notice is
/// left to the periodic reconciliation.
const NOTICE_ATTEMPTS: u32 = 5;
/// Pause between payment notice attempts.
const NOTICE_RETRY: Duration = Duration::from_secs(1);

impl ClientService {
    fn save_intent(&self, intent: &PaymentIntent) -> Result<()> {
        self.payments.insert(&intent.txid, intent)
    }

    fn set_intent_state(&self, intent: &mut PaymentIntent, state: IntentState) -> Result<()> {
        intent.state = state;
        self.save_intent(intent)
    }

    /// Pays every contract of one put in one transaction and notifies the
    /// providers. Contracts must be accepted and their shards uploaded.
    pub(super) async fn pay(&self, file_id: FileId, contracts: &[Contract]) -> Result<()> {
        // One payment at a time, so concurrent puts never pick the same coins.
        let _guard = self.pay_lock.lock().await;
        // Paying after a deadline pays for shards the provider has deleted.
        let deadline = contracts
            .iter()
            .map(|c| c.deadline_height)
            .min()
            .unwrap_or(u32::MAX);
        let tip = self.wallet.tip_height();
        if tip >= deadline {
            return Err(Error::PaymentDeadlinePassed { deadline, tip });
        }
        let outputs: Vec<_> = contracts
            .iter()
            .map(|c| (c.payout_address.clone(), c.amount_sat))
            .collect();
        let tx = self.wallet.build_signed_tx(&outputs, self.fee_rate())?;
        let mut vouts = Vec::with_capacity(contracts.len());
        for (c, (addr, amount)) in contracts.iter().zip(&outputs) {
            let spk = addr.script_pubkey();
            let vout = tx
                .output
                .iter()
                .position(|o| o.script_pubkey == spk && o.value.to_sat() == *amount)
                .ok_or_else(|| {
                    Error::Internal("payment output missing from the built transaction".into())
                })?;
            vouts.push((c.contract_id, vout as u32));
        }
        let txid = tx.compute_txid();
        let mut intent = PaymentIntent {
            txid,
            tx_hex: serialize_hex(&tx),
            file_id,
            outputs: vouts,
            state: IntentState::Signed,
        };
        self.save_intent(&intent)?;
        for (id, vout) in &intent.outputs {
            self.contracts.update(id, |c| {
                c.txid = Some(txid);
                c.vout = Some(*vout);
            })?;
        }
        match self.wallet.broadcast(&tx).await {
            Ok(_) => {}
            Err(WalletError::BitcoindUnreachable(e)) => {
                // It may or may not have reached bitcoind; reconciliation
                // settles it with these same bytes, never with new ones.
                return Err(Error::BitcoindUnreachable(format!(
                    "payment {txid} signed but not confirmed broadcast ({e}); it will be retried automatically"
                )));
            }
            Err(e) => {
                self.wallet.cancel_tx(&tx);
                self.payments.remove(&txid)?;
                return Err(e.into());
            }
        }
        failpoint::hit("after-broadcast");
        self.mark_broadcast(&mut intent)?;
        info!(%txid, contracts = contracts.len(), "payment broadcast");
        self.notify(&mut intent).await
    }

    fn mark_broadcast(&self, intent: &mut PaymentIntent) -> Result<()> {
        self.set_intent_state(intent, IntentState::Broadcast)?;
        for (id, vout) in &intent.outputs {
            self.contracts.update(id, |c| {
                c.txid = Some(intent.txid);
                c.vout = Some(*vout);
                if c.state == State::Accepted {
                    c.state = State::Paid;
                }
            })?;
        }
        Ok(())
    }

    /// Sends payment notices for the intent's contracts that are not active
    /// yet. Transient failures leave the intent for reconciliation; a
    /// provider's definite refusal is an error.
    async fn notify(&self, intent: &mut PaymentIntent) -> Result<()> {
        let mut pending = false;
        let mut refused = None;
        for (contract_id, vout) in intent.outputs.clone() {
            let Some(c) = self.contracts.get(&contract_id)? else {
                continue;
            };
            if c.state != State::Paid {
                continue;
            }
            let peer = c.peer;
            match self.send_notice(peer, contract_id, intent.txid, vout).await {
                Notice::Accepted(start) => {
                    self.contracts.update(&contract_id, |c| {
                        c.state = State::Active;
                        c.start_height = Some(start);
                    })?;
                }
                Notice::Refused(reason) => {
                    warn!(%peer, txid = %intent.txid, "payment refused: {reason}");
                    self.contracts
                        .update(&contract_id, |c| c.state = State::Rejected)?;
                    refused = Some(Error::PaymentRejected { peer, reason });
                }
                Notice::Later => pending = true,
            }
        }
        if !pending {
            self.set_intent_state(intent, IntentState::Done)?;
        }
        refused.map_or(Ok(()), Err)
    }

    async fn send_notice(
        &self,
        peer: PeerId,
        contract_id: ContractId,
        txid: Txid,
        vout: u32,
    ) -> Notice {
        for attempt in 0..NOTICE_ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(NOTICE_RETRY).await;
            }
            match self.net.payment_notice(peer, contract_id, txid, vout).await {
                Ok(accepted) => return Notice::Accepted(accepted.start_height),
                // Not seen yet, or the provider's bitcoind is down: later.
                Err(PeerError::Unreachable(_)) => {}
                Err(e)
                    if matches!(
                        e.refusal(),
                        Some(WireErrorKind::PaymentNotFound | WireErrorKind::Unavailable)
                    ) => {}
                Err(e) => return Notice::Refused(e.to_string()),
            }
        }
        Notice::Later
    }

    /// Finishes every payment a crash or an outage interrupted. Safe to run
    /// at any time, any number of times.
    pub async fn reconcile_payments(&self) -> Result<()> {
        let _guard = self.pay_lock.lock().await;
        let mut intents = Vec::new();
        for intent in self.payments.values()? {
            if intent.state != IntentState::Done {
                intents.push(intent);
            }
        }
        for mut intent in intents {
            if intent.state == IntentState::Signed {
                let txid = intent.txid;
                if self.wallet.find_tx(txid).is_none() && self.intent_expired(&intent)? {
                    // Never broadcast, and too late now: the providers have
                    // dropped the shards. Give up on it rather than pay.
                    warn!(txid = %intent.txid, "payment deadline passed before broadcast; abandoning the payment");
                    self.wallet.cancel_tx(
                        &deserialize_hex(&intent.tx_hex)
                            .map_err(|e| Error::CorruptRecord(format!("stored tx: {e}")))?,
                    );
                    for (id, _) in &intent.outputs {
                        self.contracts.update(id, |c| {
                            c.txid = None;
                            c.vout = None;
                        })?;
                    }
                    self.set_intent_state(&mut intent, IntentState::Done)?;
                    continue;
                }
                if self.wallet.find_tx(txid).is_none() {
                    let tx: Transaction = deserialize_hex(&intent.tx_hex)
                        .map_err(|e| Error::CorruptRecord(format!("stored tx: {e}")))?;
                    if let Err(e) = self.wallet.broadcast(&tx).await {
                        warn!(txid = %intent.txid, "rebroadcast failed, will retry: {e}");
                        continue;
                    }
                }
                info!(txid = %intent.txid, "recovered an interrupted payment");
                self.mark_broadcast(&mut intent)?;
            }
            if let Err(e) = self.notify(&mut intent).await {
                warn!(txid = %intent.txid, "{e}");
            }
        }
        // After the intents: a contract with a recorded payment is never
        // mistaken for an unpaid one.
        self.forget_unpaid_puts()?;
        Ok(())
    }

    fn intent_expired(&self, intent: &PaymentIntent) -> Result<bool> {
        let tip = self.wallet.tip_height();
        for (id, _) in &intent.outputs {
            if let Some(c) = self.contracts.get(id)?
                && tip >= c.deadline_height
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// A put that died before paying left contracts that the providers
    /// expire at their deadline; past it, drop them and the file's manifest,
    /// since its shards are gone.
    fn forget_unpaid_puts(&self) -> Result<()> {
        let tip = self.wallet.tip_height();
        let mut files = Vec::new();
        for c in self.contracts.list()? {
            if c.state == State::Accepted && c.txid.is_none() && tip > c.deadline_height {
                self.contracts
                    .update(&c.contract_id, |c| c.state = State::ExpiredUnpaid)?;
                files.extend(c.file_id);
            }
        }
        for file_id in files {
            let Ok(m) = self.manifests.get(&file_id) else {
                continue;
            };
            let mut all_expired = true;
            for s in m.segments.iter().flat_map(|s| &s.shards) {
                let state = self.contracts.get(&s.contract_id)?.map(|c| c.state);
                all_expired &= state == Some(State::ExpiredUnpaid);
            }
            if all_expired {
                warn!(file_id = %file_id.short(), "put was never paid; forgetting the file");
                self.manifests.remove(&file_id)?;
            }
        }
        Ok(())
    }

    pub fn spawn_reconciler(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                // The first round waits for a wallet sync so a payment that
                // reached the mempool before a crash is seen, not resent.
                let _ = this.wallet.sync_now().await;
                if let Err(e) = this.reconcile_payments().await {
                    warn!("payment reconciliation: {e}");
                }
            }
        })
    }

    pub(super) fn fee_rate(&self) -> Option<u64> {
        self.fee_rate_sat_vb
            .or(Some(crate::wallet::DEFAULT_FEE_RATE_SAT_VB))
    }
}

enum Notice {
    Accepted(u32),
    Refused(String),
    Later,
}
