//! Paying providers: prepaid revisions for puts and repairs, and period
//! payments for every running contract, each round in one transaction,
//! with a record that makes paying twice impossible.
//!
//! The signed transaction is written to sled *before* it is broadcast. After
//! a crash, reconciliation finds the intent and either sees the transaction
//! in the wallet or rebroadcasts the very same bytes; it never builds a new
//! transaction for an output that already has one. A contract is credited
//! (its allowance and paid-through height move) only when its provider
//! confirms the payment, and each output is credited once.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use bdk_wallet::bitcoin::consensus::encode::{deserialize_hex, serialize_hex};
use bdk_wallet::bitcoin::{Address, Transaction, Txid};
use libp2p::PeerId;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::ClientService;
use super::manifest::{Manifest, Term};
use crate::contracts::{Contract, PaymentKind, PaymentRecord, State};
use crate::db::Tree;
use crate::error::{Error, Result};
use crate::failpoint;
use crate::ids::{ContractId, as_text, checked_address};
use crate::network::PeerError;
use crate::protocol::*;
use crate::wallet::{WalletError, WalletService};
use p2pstore_rpc::EventKind;

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

/// One output of a payment: which contract it pays, and for what.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IntentOutput {
    pub contract_id: ContractId,
    #[serde(with = "as_text")]
    pub peer: PeerId,
    #[serde(with = "checked_address")]
    pub address: Address,
    pub vout: u32,
    pub amount_sat: u64,
    pub purpose: Purpose,
    /// Bytes a revision adds to the allowance.
    pub add_bytes: u64,
    /// Past this height an unbroadcast payment is abandoned, not sent.
    pub deadline_height: u32,
    /// The provider credited it, or refused it for good.
    pub settled: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PaymentIntent {
    #[serde(with = "as_text")]
    pub txid: Txid,
    pub tx_hex: String,
    pub outputs: Vec<IntentOutput>,
    pub state: IntentState,
    /// The rate it was built at, in sat/vB.
    #[serde(default)]
    pub fee_rate_sat_vb: u64,
    /// The tip when it went out: it is bumped `fee_bump_blocks` later if
    /// still unconfirmed.
    #[serde(default)]
    pub broadcast_height: Option<u32>,
    /// Seen in a block: nothing more to watch.
    #[serde(default)]
    pub confirmed: bool,
    /// The payments this one replaces by RBF, oldest first: same outputs,
    /// lower fees. At most one of them, or this, confirms.
    #[serde(default)]
    pub replaces: Vec<Txid>,
    /// The payment that replaced this one, once it went out.
    #[serde(default, with = "as_text::opt")]
    pub replaced_by: Option<Txid>,
}

/// What paying did, as far as the client can know. Rollback is decided
/// from this alone: nothing to undo when not paid; nothing may be undone
/// when maybe paid (reconciliation settles it); and when paid, the
/// allowance bought stays bought.
pub(super) enum PayOutcome {
    Paid(PaymentIntent),
    NotPaid(Error),
    MaybePaid(Error),
}

/// One output to pay.
pub(super) struct Due {
    pub contract: Contract,
    pub amount_sat: u64,
    pub purpose: Purpose,
    pub add_bytes: u64,
    pub deadline_height: u32,
}

/// How often a provider is asked to confirm a payment before the notice is
/// left to the periodic reconciliation.
const NOTICE_ATTEMPTS: u32 = 5;
/// Pause between payment notice attempts.
const NOTICE_RETRY: Duration = Duration::from_secs(1);
/// A notice not yet credited is sent again with the next reconciliation
/// round, then after twice as long each time, up to [`NOTICE_BACKOFF_MAX`]:
/// a provider that stays away for days is asked a few times an hour, not
/// every round for ever.
const NOTICE_BACKOFF_MIN: Duration = Duration::from_secs(5);
const NOTICE_BACKOFF_MAX: Duration = Duration::from_secs(600);

/// When each uncredited payment output's notice is next due, in memory: a
/// restart asks every provider again at once, which is what a restart
/// should do.
#[derive(Clone, Default)]
pub(super) struct NoticeBackoff(std::sync::Arc<std::sync::Mutex<NoticeSchedule>>);

/// (txid, vout) → (notices left uncredited so far, when the next is due).
type NoticeSchedule = std::collections::HashMap<(Txid, u32), (u32, Instant)>;

impl NoticeBackoff {
    fn due(&self, txid: Txid, vout: u32, now: Instant) -> bool {
        self.0
            .lock()
            .map(|m| m.get(&(txid, vout)).is_none_or(|(_, at)| now >= *at))
            .unwrap_or(true)
    }

    /// The notice went unanswered (or "not yet"): the next waits longer.
    fn later(&self, txid: Txid, vout: u32, now: Instant) -> Duration {
        let Ok(mut m) = self.0.lock() else {
            return NOTICE_BACKOFF_MIN;
        };
        let (tries, at) = m.entry((txid, vout)).or_insert((0, now));
        let wait = NOTICE_BACKOFF_MIN
            .saturating_mul(1u32 << (*tries).min(16))
            .min(NOTICE_BACKOFF_MAX);
        *tries = tries.saturating_add(1);
        *at = now + wait;
        wait
    }

    /// Makes the notice due now: its provider is back.
    fn wake(&self, txid: Txid, vout: u32) {
        if let Ok(mut m) = self.0.lock()
            && let Some((_, at)) = m.get_mut(&(txid, vout))
        {
            *at = Instant::now();
        }
    }

    fn settled(&self, txid: Txid, vout: u32) {
        if let Ok(mut m) = self.0.lock() {
            m.remove(&(txid, vout));
        }
    }
}
/// Blocks a period payment may wait unbroadcast before it is rebuilt.
const PERIOD_PAYMENT_WINDOW: u32 = 6;
/// The least rate a bump starts from: an original recorded without its
/// rate counts as paying the fallback, so its bump still clears
/// bitcoind's incremental relay fee.
const MIN_BUMPED_RATE: u64 = crate::wallet::DEFAULT_FEE_RATE_SAT_VB;

enum Notice {
    Credited(ContractStatus),
    Refused(String),
    Later,
}

/// The files with shards under contract `c`.
pub(super) fn files_on<'a>(c: &Contract, manifests: &'a [Manifest]) -> Vec<&'a Manifest> {
    manifests
        .iter()
        .filter(|m| {
            m.segments
                .iter()
                .flat_map(|s| &s.shards)
                .any(|r| r.contract_id == c.contract_id)
        })
        .collect()
}

/// The height until which `files` need contract `c`, seen from a payment
/// through `through`: a kept file needs every next period.
pub(super) fn needed_until(c: &Contract, files: &[&Manifest], through: u32) -> u32 {
    files
        .iter()
        .map(|m| match m.term {
            Term::Until(h) => h,
            Term::Keep => through.saturating_add(c.period_blocks),
        })
        .max()
        .unwrap_or(0)
}

impl ClientService {
    fn save_intent(&self, intent: &PaymentIntent) -> Result<()> {
        self.payments.insert(&intent.txid, intent)
    }

    /// The fee rate for a payment now (see [`FeePolicy::choose`]).
    pub(super) async fn fee_rate(&self) -> u64 {
        let estimate = match self.fees.fixed_rate {
            Some(_) => Ok(None),
            None => self.wallet.estimate_fee_rate(self.fees.target_blocks).await,
        };
        let (rate, source) = self.fees.choose(estimate);
        info!(rate, source = source.as_str(), "payment fee rate");
        rate
    }

    /// Builds, records and broadcasts one transaction paying every `due`.
    /// Must run under `pay_lock`.
    pub(super) async fn pay(&self, dues: Vec<Due>) -> PayOutcome {
        let rate = self.fee_rate().await;
        let outputs: Vec<_> = dues
            .iter()
            .map(|d| (d.contract.payout_address.clone(), d.amount_sat))
            .collect();
        let tx = match self.wallet.build_signed_tx(&outputs, Some(rate)) {
            Ok(tx) => tx,
            Err(e) => return PayOutcome::NotPaid(e.into()),
        };
        let outputs = dues
            .into_iter()
            .map(|d| IntentOutput {
                contract_id: d.contract.contract_id,
                peer: d.contract.peer,
                address: d.contract.payout_address,
                // Set from the built transaction by `record_and_send`.
                vout: 0,
                amount_sat: d.amount_sat,
                purpose: d.purpose,
                add_bytes: d.add_bytes,
                deadline_height: d.deadline_height,
                settled: false,
            })
            .collect();
        self.record_and_send(tx, outputs, rate, Vec::new()).await
    }

    /// Records the signed `tx` paying `outputs` (a replacement of the
    /// payments `replaces`, if any), then broadcasts it. The one place a
    /// payment goes out.
    async fn record_and_send(
        &self,
        tx: Transaction,
        mut outputs: Vec<IntentOutput>,
        rate: u64,
        replaces: Vec<Txid>,
    ) -> PayOutcome {
        for o in &mut outputs {
            let spk = o.address.script_pubkey();
            // Two outputs never share an address (one per contract), so the
            // output is the one with this script.
            let Some(vout) = tx.output.iter().position(|x| x.script_pubkey == spk) else {
                self.wallet.cancel_tx(&tx);
                return PayOutcome::NotPaid(Error::Internal(
                    "payment output missing from the built transaction".into(),
                ));
            };
            o.vout = vout as u32;
        }
        let txid = tx.compute_txid();
        let mut intent = PaymentIntent {
            txid,
            tx_hex: serialize_hex(&tx),
            outputs,
            state: IntentState::Signed,
            fee_rate_sat_vb: rate,
            broadcast_height: None,
            confirmed: false,
            replaces,
            replaced_by: None,
        };
        if let Err(e) = self.save_intent(&intent) {
            self.wallet.cancel_tx(&tx);
            return PayOutcome::NotPaid(e);
        }
        failpoint::hit("before-broadcast");
        match self.wallet.broadcast(&tx).await {
            Ok(_) => {}
            Err(WalletError::BitcoindUnreachable(e)) => {
                // It may or may not have reached bitcoind; reconciliation
                // settles it with these same bytes, never with new ones.
                return PayOutcome::MaybePaid(Error::BitcoindUnreachable(format!(
                    "payment {txid} signed but not confirmed broadcast ({e}); it will be retried automatically"
                )));
            }
            Err(e) => {
                self.wallet.cancel_tx(&tx);
                // Durable before the caller hears "not paid": an intent
                // back from the dead after a crash would be broadcast
                // again, paying for a put its caller was told failed.
                if let Err(e) = self.payments.remove(&txid) {
                    return PayOutcome::MaybePaid(e);
                }
                failpoint::hit("after-intent-removed");
                return PayOutcome::NotPaid(e.into());
            }
        }
        failpoint::hit("after-broadcast");
        if let Err(e) = self.went_out(&mut intent) {
            return PayOutcome::MaybePaid(e);
        }
        info!(%txid, outputs = intent.outputs.len(), fee_rate = rate, "payment broadcast");
        self.events.emit(EventKind::PaymentSent {
            txid: txid.to_string(),
            amount_sat: intent.outputs.iter().map(|o| o.amount_sat).sum(),
            fee_rate_sat_vb: rate,
            outputs: intent.outputs.len() as u32,
            replaces: intent.replaces.last().map(ToString::to_string),
        });
        PayOutcome::Paid(intent)
    }

    /// Sends the notices of an intent's unsettled outputs and credits the
    /// contracts their providers confirm. Returns the outputs' errors:
    /// refused for good, or not confirmed yet (left to reconciliation).
    pub(super) async fn notify(&self, intent: &mut PaymentIntent) -> Result<Vec<(PeerId, Error)>> {
        let txid = intent.txid;
        let now = Instant::now();
        let sends = intent.outputs.iter().map(|o| async move {
            if o.settled || !self.notice_backoff.due(txid, o.vout, now) {
                return None;
            }
            let notice = PaymentNotice {
                contract_id: o.contract_id,
                txid,
                vout: o.vout,
                purpose: o.purpose,
            };
            Some(self.send_notice(o.peer, notice).await)
        });
        let answers = futures::future::join_all(sends).await;
        let mut problems = Vec::new();
        for (o, answer) in intent.outputs.iter_mut().zip(answers) {
            match answer {
                None => {}
                Some(Notice::Credited(status)) => {
                    self.notice_backoff.settled(txid, o.vout);
                    self.credit(o, txid, &intent.replaces, &status)?;
                    // Credited, but the intent does not say so yet.
                    failpoint::hit("after-credit");
                    o.settled = true;
                }
                Some(Notice::Refused(reason)) => {
                    self.notice_backoff.settled(txid, o.vout);
                    warn!(peer = %o.peer, %txid, "payment refused: {reason}");
                    // The money went out all the same: the books say so.
                    let refused = self.contracts.update(&o.contract_id, |c| {
                        if c.state == State::Pending {
                            c.state = State::Rejected;
                        }
                        if !c.has_payment(&txid, o.vout) {
                            c.payments.push(PaymentRecord {
                                txid,
                                vout: o.vout,
                                amount_sat: o.amount_sat,
                                kind: PaymentKind::Refused,
                                through_height: c.paid_through_height,
                                final_: false,
                            });
                        }
                    })?;
                    // A provider that refuses a period's money already sent
                    // is not paid again each round: its contract ends here
                    // and its shards move.
                    if let (Purpose::Period { .. }, Some(c)) = (o.purpose, refused)
                        && c.is_live()
                    {
                        let manifests = self.manifests.list()?;
                        self.fail_contract(
                            &c,
                            &files_on(&c, &manifests),
                            "refused its period payment",
                        )?;
                    }
                    o.settled = true;
                    problems.push((
                        o.peer,
                        Error::PaymentRejected {
                            peer: o.peer,
                            reason,
                        },
                    ));
                }
                Some(Notice::Later) => {
                    let wait = self.notice_backoff.later(txid, o.vout, Instant::now());
                    tracing::debug!(peer = %o.peer, %txid, ?wait, "payment notice not credited yet");
                    problems.push((
                        o.peer,
                        Error::ProviderRejected {
                            peer: o.peer,
                            reason: format!(
                                "has not confirmed payment {txid} yet; it will be retried"
                            ),
                        },
                    ));
                }
            }
        }
        if intent.outputs.iter().all(|o| o.settled) {
            intent.state = IntentState::Done;
        }
        self.save_intent(intent)?;
        Ok(problems)
    }

    /// Applies a confirmed payment to the client's record, once. A
    /// replacement takes the place of the payment it replaced.
    fn credit(
        &self,
        o: &IntentOutput,
        txid: Txid,
        replaces: &[Txid],
        status: &ContractStatus,
    ) -> Result<()> {
        let (kind, through) = match o.purpose {
            Purpose::Revision(_) => (PaymentKind::Revision, status.paid_through_height),
            Purpose::Period {
                paid_through_height,
                ..
            } => (PaymentKind::Period, paid_through_height),
        };
        // What this credit changed, told once it is stored.
        let mut formed = false;
        let mut renewed = false;
        let mut applied = false;
        let updated = self.contracts.update(&o.contract_id, |c| {
            if c.has_payment(&txid, o.vout) {
                return;
            }
            if let Some(p) = c.payments.iter_mut().find(|p| replaces.contains(&p.txid)) {
                p.txid = txid;
                p.vout = o.vout;
                return;
            }
            applied = true;
            formed = c.state == State::Pending;
            renewed = status.term_end_height > c.term_end_height && !formed;
            match o.purpose {
                Purpose::Revision(_) => {
                    c.allowance_bytes = c.allowance_bytes.saturating_add(o.add_bytes)
                }
                Purpose::Period {
                    allowance_bytes, ..
                } => c.allowance_bytes = allowance_bytes,
            }
            c.paid_through_height = status.paid_through_height;
            c.term_end_height = status.term_end_height;
            if c.state == State::Pending {
                c.state = State::Active;
            }
            c.payments.push(PaymentRecord {
                txid,
                vout: o.vout,
                amount_sat: o.amount_sat,
                kind,
                through_height: through,
                final_: false,
            });
        })?;
        if let (true, Some(c)) = (applied, updated) {
            let (contract_id, peer_id) = (c.contract_id.to_string(), c.peer.to_string());
            if formed {
                self.events.emit(EventKind::ContractFormed {
                    contract_id: contract_id.clone(),
                    peer_id: peer_id.clone(),
                    allowance_bytes: c.allowance_bytes,
                    term_end_height: c.term_end_height,
                });
            }
            if kind == PaymentKind::Period {
                self.events.emit(EventKind::ContractPaid {
                    contract_id: contract_id.clone(),
                    peer_id: peer_id.clone(),
                    amount_sat: o.amount_sat,
                    paid_through_height: c.paid_through_height,
                });
            }
            if renewed {
                self.events.emit(EventKind::ContractRenewed {
                    contract_id,
                    peer_id,
                    term_end_height: c.term_end_height,
                });
            }
        }
        Ok(())
    }

    async fn send_notice(&self, peer: PeerId, notice: PaymentNotice) -> Notice {
        for attempt in 0..NOTICE_ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(NOTICE_RETRY).await;
            }
            match self.net.payment_notice(peer, notice.clone()).await {
                Ok(status) => return Notice::Credited(status),
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

    /// Outputs of payments not yet settled: their contracts must not be
    /// paid again until they settle.
    fn unsettled(&self) -> Result<Vec<IntentOutput>> {
        let mut out = Vec::new();
        for intent in self.payments.values()? {
            if intent.state != IntentState::Done {
                out.extend(intent.outputs.into_iter().filter(|o| !o.settled));
            }
        }
        Ok(out)
    }

    /// Providers with a period payment not yet credited. A period sets
    /// the allowance to what it paid for, so allowance bought from them
    /// meanwhile would be undone, or the period refused: no new shards
    /// go to them until it settles.
    pub(super) fn paying_period(&self) -> Result<HashSet<PeerId>> {
        Ok(self
            .unsettled()?
            .into_iter()
            .filter(|o| matches!(o.purpose, Purpose::Period { .. }))
            .map(|o| o.peer)
            .collect())
    }

    /// Sends now the notices of period payments to `peers` still waiting
    /// out their backoff: they answer again, and until their period is
    /// credited they get no new shards.
    pub(super) async fn renotify_periods(&self, peers: &HashSet<PeerId>) -> Result<()> {
        let _guard = self.pay_lock.lock().await;
        for mut intent in self.payments.values()? {
            if intent.state != IntentState::Broadcast {
                continue;
            }
            let mut waiting = false;
            for o in &intent.outputs {
                if !o.settled
                    && peers.contains(&o.peer)
                    && matches!(o.purpose, Purpose::Period { .. })
                {
                    self.notice_backoff.wake(intent.txid, o.vout);
                    waiting = true;
                }
            }
            if waiting && let Err(e) = self.notify(&mut intent).await {
                warn!(txid = %intent.txid, "{e}");
            }
        }
        Ok(())
    }

    /// Pays the next period of every contract that is due within
    /// `renew_before_blocks`, still holds data the client keeps, and whose
    /// provider passes its audits, in one transaction. A provider failing
    /// its audits is not paid: its contract ends and its shards are marked
    /// lost, for the repair to move. Returns the number of contracts paid.
    pub async fn pay_periods(&self) -> Result<usize> {
        let _guard = self.pay_lock.lock().await;
        let tip = self.wallet.tip_height();
        let manifests = self.manifests.list()?;
        let unsettled: HashSet<ContractId> = self
            .unsettled()?
            .into_iter()
            .map(|o| o.contract_id)
            .collect();
        let mut due = Vec::new();
        for c in self.contracts.list()? {
            if !c.is_live()
                || tip.saturating_add(self.renew_before_blocks) < c.paid_through_height
                || unsettled.contains(&c.contract_id)
            {
                continue;
            }
            let files = files_on(&c, &manifests);
            let through = c.paid_through_height.saturating_add(c.period_blocks);
            let needed = needed_until(&c, &files, through);
            if needed <= c.paid_through_height || c.allowance_bytes == 0 {
                // Nothing kept past this period: let it run out.
                if tip >= c.paid_through_height {
                    self.contracts
                        .update(&c.contract_id, |c| c.state = State::Expired)?;
                    info!(peer = %c.peer, contract = %c.contract_id.short(), "contract ran out unrenewed");
                    self.contract_ended(&c, State::Expired);
                }
                continue;
            }
            if !self.audits.passing(&c.peer) {
                self.fail_contract(&c, &files, "failed its audits")?;
                continue;
            }
            due.push((c, through, needed));
        }
        if due.is_empty() {
            // Most rounds: no prune, so stores never wait on its gate.
            return Ok(0);
        }
        // What a provider holds is what its period must pay for: shards no
        // file keeps go first. A provider that cannot be asked is not paid
        // this round; the next round asks again, within the renewal window.
        let contracts: Vec<Contract> = due.iter().map(|(c, ..)| c.clone()).collect();
        let pruned = self.prune(&contracts).await?;
        let booked = self.booked_bytes()?;
        let mut dues = Vec::new();
        for ((c, through, needed), pruned) in due.into_iter().zip(pruned) {
            if let Err(e) = pruned {
                warn!(peer = %c.peer, contract = %c.contract_id.short(), "not paying its period yet: {e}");
                continue;
            }
            let term_end = c.term_end_height.max(needed).max(through);
            let allowance = c
                .allowance_bytes
                .max(booked.get(&c.contract_id).copied().unwrap_or(0));
            let Some(amount) =
                payment_amount(c.price_sat_per_gib_month, allowance, c.period_blocks)
            else {
                warn!(contract = %c.contract_id.short(), "period amount overflows; not paying");
                continue;
            };
            dues.push(Due {
                purpose: Purpose::Period {
                    allowance_bytes: allowance,
                    paid_through_height: through,
                    term_end_height: term_end,
                },
                amount_sat: amount,
                add_bytes: 0,
                deadline_height: tip.saturating_add(PERIOD_PAYMENT_WINDOW),
                contract: c,
            });
        }
        if dues.is_empty() {
            return Ok(0);
        }
        let count = dues.len();
        let outcome = self.pay(dues).await;
        // Each round of period payments, paid or not, looks ahead.
        self.warn_if_short().await;
        match outcome {
            PayOutcome::Paid(mut intent) => {
                for (peer, e) in self.notify(&mut intent).await? {
                    warn!(%peer, "period payment: {e}");
                }
                Ok(count)
            }
            PayOutcome::NotPaid(e) | PayOutcome::MaybePaid(e) => Err(e),
        }
    }

    /// Tells subscribers and the metrics that a client contract ended.
    fn contract_ended(&self, c: &Contract, state: State) {
        self.events.emit(EventKind::ContractEnded {
            contract_id: c.contract_id.to_string(),
            peer_id: c.peer.to_string(),
            role: crate::contracts::Role::Client,
            state,
        });
    }

    /// Stops paying a provider (it failed its audits, or refused a
    /// period's money): the contract ends and every shard it holds is
    /// marked lost, so the repair moves them before the provider deletes
    /// them. `why` completes the log line.
    fn fail_contract(&self, c: &Contract, files: &[&Manifest], why: &str) -> Result<()> {
        self.contracts
            .update(&c.contract_id, |c| c.state = State::Failed)?;
        self.contract_ended(c, State::Failed);
        let mut shards = 0;
        for r in files
            .iter()
            .flat_map(|m| &m.segments)
            .flat_map(|s| &s.shards)
            .filter(|r| r.contract_id == c.contract_id)
        {
            self.audits.mark_lost(&r.shard_id, r.provider);
            shards += 1;
        }
        warn!(peer = %c.peer, contract = %c.contract_id.short(), shards, "provider {why}: not paid again; its shards will move");
        Ok(())
    }

    /// Whether a reconciliation round has anything to do: a contract to
    /// pay or watch, or a payment not yet done.
    fn has_payment_work(&self) -> Result<bool> {
        if !self.contracts.is_empty() {
            return Ok(true);
        }
        for item in self.payments.iter() {
            if item?.1.state != IntentState::Done {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Finishes every payment a crash or an outage interrupted, then pays
    /// the periods due. Safe to run at any time, any number of times.
    pub async fn reconcile_payments(&self) -> Result<()> {
        {
            let _guard = self.pay_lock.lock().await;
            let mut intents = Vec::new();
            for intent in self.payments.values()? {
                if intent.state != IntentState::Done {
                    intents.push(intent);
                }
            }
            for mut intent in intents {
                if intent.state == IntentState::Signed && !self.resume(&mut intent).await? {
                    continue;
                }
                if let Err(e) = self.notify(&mut intent).await {
                    warn!(txid = %intent.txid, "{e}");
                }
            }
            self.watch_unconfirmed().await?;
        }
        self.pay_periods().await?;
        Ok(())
    }

    /// A signed intent after a crash: broadcast it again (the same bytes),
    /// or give it up if its deadline passed unbroadcast, or, for a
    /// replacement, if what it replaces confirmed first. True when it is
    /// out and its notices are due.
    async fn resume(&self, intent: &mut PaymentIntent) -> Result<bool> {
        let txid = intent.txid;
        let tx: Transaction = deserialize_hex(&intent.tx_hex)
            .map_err(|e| Error::CorruptRecord(format!("stored tx: {e}")))?;
        if self.wallet.find_tx(txid).is_none() {
            let tip = self.wallet.tip_height();
            // A replacement's original is out already, so the quotes'
            // deadline is not its to meet; the original confirming is.
            let too_late = if intent.replaces.is_empty() {
                intent.outputs.iter().any(|o| tip >= o.deadline_height)
            } else {
                intent.replaces.iter().any(|t| self.is_confirmed(*t))
            };
            if too_late {
                warn!(%txid, "payment not broadcast in time; abandoning it");
                self.wallet.cancel_tx(&tx);
                self.abandon(intent)?;
                return Ok(false);
            }
            if let Err(e) = self.wallet.broadcast(&tx).await {
                warn!(%txid, "rebroadcast failed, will retry: {e}");
                return Ok(false);
            }
        } else {
            // Out already (broadcast releases its own): the reservation
            // restored at start is no longer needed.
            self.wallet.release_inputs(&tx);
        }
        info!(%txid, "recovered an interrupted payment");
        self.went_out(intent)?;
        Ok(true)
    }

    fn is_confirmed(&self, txid: Txid) -> bool {
        self.wallet
            .find_tx(txid)
            .is_some_and(|t| t.height.is_some())
    }

    /// Gives an intent up: nothing of it is owed or to be notified.
    fn abandon(&self, intent: &mut PaymentIntent) -> Result<()> {
        for o in &mut intent.outputs {
            o.settled = true;
        }
        intent.state = IntentState::Done;
        self.save_intent(intent)
    }

    /// Records that an intent reached bitcoind; a replacement also marks
    /// the payments it replaced, whose notices it now carries.
    fn went_out(&self, intent: &mut PaymentIntent) -> Result<()> {
        intent.state = IntentState::Broadcast;
        intent.broadcast_height = Some(self.wallet.tip_height());
        self.save_intent(intent)?;
        for old in &intent.replaces {
            self.mark_replaced(old, intent.txid)?;
        }
        Ok(())
    }

    /// A payment another of its family stands for: nothing of it is owed
    /// or to be notified any more.
    fn mark_replaced(&self, txid: &Txid, by: Txid) -> Result<()> {
        self.payments.update(txid, |p| {
            p.replaced_by = Some(by);
            p.state = IntentState::Done;
            for o in &mut p.outputs {
                o.settled = true;
            }
        })?;
        Ok(())
    }

    /// Watches unconfirmed payments: bumps (RBF) those unconfirmed
    /// `fee_bump_blocks` after they went out, and when one of a family of
    /// replacements confirms, makes it the payment of record. Must run
    /// under `pay_lock`.
    async fn watch_unconfirmed(&self) -> Result<()> {
        let tip = self.wallet.tip_height();
        let snapshot = self.payments.values()?;
        // Replacements signed but not out yet: their originals wait.
        let pending: Vec<Txid> = snapshot
            .iter()
            .filter(|i| i.state == IntentState::Signed)
            .flat_map(|i| i.replaces.iter().copied())
            .collect();
        for mut intent in snapshot.iter().cloned() {
            if intent.confirmed || intent.state == IntentState::Signed {
                continue;
            }
            match self.wallet.find_tx(intent.txid) {
                Some(t) if t.height.is_some() => {
                    self.confirmed(&mut intent, &snapshot)?;
                    continue;
                }
                Some(_) => {}
                // Replaced, or gone from the mempool: nothing to bump.
                None => continue,
            }
            if intent.replaced_by.is_some() || pending.contains(&intent.txid) {
                continue;
            }
            let Some(since) = intent.broadcast_height else {
                // Recorded before heights were: start counting now.
                intent.broadcast_height = Some(tip);
                self.save_intent(&intent)?;
                continue;
            };
            if tip >= since.saturating_add(self.fees.bump_after_blocks)
                && let Err(e) = self.bump(&intent).await
            {
                warn!(txid = %intent.txid, "fee bump failed: {e}");
            }
        }
        Ok(())
    }

    /// A payment confirmed. If it belongs to a family of replacements, it
    /// is the one that counts: the others are given up, and the contracts
    /// it pays name it again.
    fn confirmed(&self, intent: &mut PaymentIntent, others: &[PaymentIntent]) -> Result<()> {
        intent.confirmed = true;
        let mut family = Vec::new();
        for p in others {
            if p.txid == intent.txid
                || !(intent.replaces.contains(&p.txid) || p.replaces.contains(&intent.txid))
            {
                continue;
            }
            if p.state == IntentState::Signed
                && let Ok(tx) = deserialize_hex::<Transaction>(&p.tx_hex)
            {
                self.wallet.cancel_tx(&tx);
            }
            self.mark_replaced(&p.txid, intent.txid)?;
            family.push(p.txid);
        }
        if !family.is_empty() {
            intent.replaced_by = None;
            for o in &intent.outputs {
                self.contracts.update(&o.contract_id, |c| {
                    if let Some(p) = c.payments.iter_mut().find(|p| family.contains(&p.txid)) {
                        p.txid = intent.txid;
                        p.vout = o.vout;
                    }
                })?;
            }
            info!(txid = %intent.txid, replaced = family.len(), "payment confirmed; its replacements are void");
        }
        self.save_intent(intent)
    }

    /// Replaces a stuck payment by one paying the same outputs at a
    /// higher rate, records it, sends it and tells the providers.
    async fn bump(&self, old: &PaymentIntent) -> Result<()> {
        let floor = old.fee_rate_sat_vb.max(MIN_BUMPED_RATE);
        let rate = self
            .fee_rate()
            .await
            .max(floor.saturating_add((floor / 2).max(2)))
            .min(self.fees.max_rate);
        if rate <= old.fee_rate_sat_vb {
            warn!(txid = %old.txid, rate, "payment unconfirmed, and the fee rate is at max_fee_rate_sat_vb already");
            return Ok(());
        }
        let tx = self.wallet.build_fee_bump(old.txid, rate)?;
        let mut outputs = old.outputs.clone();
        for o in &mut outputs {
            o.settled = false;
        }
        let mut replaces = old.replaces.clone();
        replaces.push(old.txid);
        // Refused for good: forgotten, and the original is bumped again
        // next round. Unsure: it stays signed, and the next round sends it
        // again, or gives it up if the original confirms first.
        let mut intent = match self.record_and_send(tx, outputs, rate, replaces).await {
            PayOutcome::Paid(intent) => intent,
            PayOutcome::NotPaid(e) | PayOutcome::MaybePaid(e) => return Err(e),
        };
        info!(old = %old.txid, new = %intent.txid, rate, "payment bumped");
        for (peer, e) in self.notify(&mut intent).await? {
            warn!(%peer, "bumped payment: {e}");
        }
        Ok(())
    }

    pub fn spawn_reconciler(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                // Every round with payments to look after waits for a
                // wallet sync, so a payment that reached the mempool before
                // a crash is seen, not resent. When the sync fails the
                // wallet's view is stale (a payment may look unbroadcast,
                // or unconfirmed for ever), so no payment is decided from
                // it this round. A node that has never formed a contract
                // and has no payment under way skips the sync: it would be
                // a bitcoind poll every round, whatever
                // --bitcoind-poll-secs says, and 200 such nodes on one
                // bitcoind overflow its RPC queue (scripts/scale.sh).
                match this.has_payment_work() {
                    Ok(false) => {}
                    Ok(true) => match this.wallet.sync_now().await {
                        Ok(()) => {
                            if let Err(e) = this.reconcile_payments().await {
                                warn!("payment reconciliation: {e}");
                            }
                        }
                        Err(e) => {
                            warn!("wallet sync failed; payments not reconciled this round: {e}")
                        }
                    },
                    Err(e) => warn!("payment reconciliation: {e}"),
                }
                if let Err(e) = this.expire_files().await {
                    warn!("expiring files: {e}");
                }
            }
        })
    }
}

/// A stored payment intent as start-up reads it (the fuzz target's entry):
/// the record, then its transaction.
#[cfg(feature = "fuzz")]
pub fn read_intent_record(bytes: &[u8]) -> Result<Transaction> {
    let intent: PaymentIntent = crate::db::decode(bytes)?;
    deserialize_hex(&intent.tx_hex)
        .map_err(|e| Error::CorruptRecord(format!("stored tx {}: {e}", intent.txid)))
}

/// A stored payment intent's bytes (a fuzz seed): one output, a real
/// transaction.
#[cfg(feature = "fuzz")]
pub fn sample_intent_record() -> Vec<u8> {
    use bdk_wallet::bitcoin::{Amount, TxOut, absolute::LockTime, transaction::Version};
    let address: Address = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"
        .parse::<Address<_>>()
        .expect("a valid address")
        .assume_checked();
    let tx = Transaction {
        version: Version::TWO,
        lock_time: LockTime::ZERO,
        input: vec![],
        output: vec![TxOut {
            value: Amount::from_sat(5000),
            script_pubkey: address.script_pubkey(),
        }],
    };
    let intent = PaymentIntent {
        txid: tx.compute_txid(),
        tx_hex: serialize_hex(&tx),
        outputs: vec![IntentOutput {
            contract_id: ContractId::from_bytes([7; 32]),
            peer: PeerId::random(),
            address,
            vout: 0,
            amount_sat: 5000,
            purpose: Purpose::Period {
                allowance_bytes: 1 << 20,
                paid_through_height: 300,
                term_end_height: 1000,
            },
            add_bytes: 0,
            deadline_height: 200,
            settled: false,
        }],
        state: IntentState::Signed,
        fee_rate_sat_vb: 2,
        broadcast_height: None,
        confirmed: false,
        replaces: vec![],
        replaced_by: None,
    };
    serde_json::to_vec(&intent).unwrap_or_default()
}

/// Reserves, in the wallet, the inputs of every payment signed and
/// recorded but maybe not broadcast, as they were before a restart: until
/// reconciliation broadcasts or abandons each, no other spend (another
/// payment, `wallet send`) may take its coins, or the payment, once sent,
/// would be a double spend of our own.
pub(super) fn restore_reservations(
    payments: &Tree<Txid, PaymentIntent>,
    wallet: &WalletService,
) -> Result<usize> {
    let mut n = 0;
    for intent in payments.values()? {
        if intent.state != IntentState::Signed {
            continue;
        }
        let tx: Transaction = deserialize_hex(&intent.tx_hex)
            .map_err(|e| Error::CorruptRecord(format!("stored tx {}: {e}", intent.txid)))?;
        wallet.reserve_inputs(&tx);
        n += 1;
    }
    if n > 0 {
        info!(
            payments = n,
            "coins of signed payments reserved until they go out"
        );
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;
    use std::time::Duration;

    use bdk_wallet::bitcoin::Network;

    use super::*;
    use crate::db::trees;
    use crate::testutil::{self, AuthMode, Bitcoind};

    const COIN: u64 = 100_000_000;

    /// Each uncredited notice waits twice as long as the last, from the
    /// next round up to the cap; a credit resets it; outputs are apart.
    #[test]
    fn notices_back_off_to_a_bound() {
        let b = NoticeBackoff::default();
        let txid = Txid::from_str(&"ab".repeat(32)).unwrap();
        let t0 = Instant::now();
        assert!(b.due(txid, 0, t0));
        let waits: Vec<Duration> = (0..10).map(|_| b.later(txid, 0, t0)).collect();
        assert_eq!(waits[0], NOTICE_BACKOFF_MIN);
        assert_eq!(waits[1], NOTICE_BACKOFF_MIN * 2);
        assert_eq!(waits[9], NOTICE_BACKOFF_MAX);
        assert!(waits.windows(2).all(|w| w[0] <= w[1]));
        assert!(!b.due(txid, 0, t0 + NOTICE_BACKOFF_MAX - Duration::from_secs(1)));
        assert!(b.due(txid, 0, t0 + NOTICE_BACKOFF_MAX));
        assert!(b.due(txid, 1, t0));
        // Its provider is back: due now, and the next wait keeps growing.
        b.wake(txid, 0);
        assert!(b.due(txid, 0, Instant::now()));
        assert_eq!(b.later(txid, 0, t0), NOTICE_BACKOFF_MAX);
        b.settled(txid, 0);
        assert!(b.due(txid, 0, t0));
    }

    fn open_wallet(db: &sled::Db, node: &Bitcoind) -> WalletService {
        WalletService::open(
            db,
            &testutil::seed(9),
            Network::Regtest,
            0,
            node.config(Duration::from_millis(200)),
        )
        .expect("open wallet")
    }

    /// The crash window between signing a payment and broadcasting it: a
    /// restarted client must not let another spend take that payment's
    /// coins before reconciliation sends it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_signed_payment_keeps_its_coins_across_a_restart() {
        let node = Bitcoind::start(AuthMode::Cookie);
        let dir = tempfile::tempdir().expect("tempdir");
        let db = sled::open(dir.path().join("db")).expect("sled");
        let foreign = Address::from_str("bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080")
            .expect("address")
            .require_network(Network::Regtest)
            .expect("regtest");
        let out = [(foreign, 30 * COIN)];
        let payments: Tree<Txid, PaymentIntent> = Tree::open(&db, trees::PAYMENTS).unwrap();
        let signed = {
            let w = open_wallet(&db, &node);
            node.mine(101, &w.new_address().expect("address"));
            w.sync_now().await.expect("sync");
            // Two spendable coinbases; the payment takes one of them.
            let tx = w.build_signed_tx(&out, Some(3)).expect("payment");
            let intent = PaymentIntent {
                txid: tx.compute_txid(),
                tx_hex: serialize_hex(&tx),
                outputs: vec![],
                state: IntentState::Signed,
                fee_rate_sat_vb: 3,
                broadcast_height: None,
                confirmed: false,
                replaces: vec![],
                replaced_by: None,
            };
            payments.insert(&intent.txid, &intent).unwrap();
            tx
        };
        // Restarted: nothing reserved until the intents are read back.
        let w = open_wallet(&db, &node);
        w.sync_now().await.expect("sync");
        assert_eq!(restore_reservations(&payments, &w).unwrap(), 1);
        for input in &signed.input {
            assert!(w.is_reserved(&input.previous_output));
        }
        let other = w.build_signed_tx(&out, Some(3)).expect("the other coin");
        assert!(
            other.input.iter().all(|i| !signed
                .input
                .iter()
                .any(|s| s.previous_output == i.previous_output)),
            "a restarted wallet spent a signed payment's coin"
        );
        match w.build_signed_tx(&out, Some(3)) {
            Err(WalletError::InsufficientFunds { .. }) => {}
            other => panic!(
                "both coins are taken, got {:?}",
                other.map(|t| t.compute_txid())
            ),
        }
    }
}
