//! The provider's side of storage contracts: quoting proposals, crediting
//! payments against its own wallet, enforcing the paid allowance on every
//! upload, and ending contracts that stop being paid.
//!
//! A quote costs the provider one small record ([`Revision`]) until it is
//! paid or lapses; nothing is stored against it. Contracts and their byte
//! counts live in memory too ([`Ledger`]), so an upload is checked without
//! touching sled, and the ledger is rebuilt from sled at start-up.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use bdk_wallet::bitcoin::Address;
use libp2p::PeerId;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::ProviderService;
use crate::contracts::{Contract, PaymentKind, PaymentRecord, Role, State};
use crate::ids::{ContractId, RevisionId, as_text, checked_address};
use crate::protocol::*;
use crate::provider::store::now_secs;

/// Unpaid quotes one peer may hold at once.
pub const MAX_QUOTES_PER_PEER: usize = 8;
/// Unpaid quotes held in all. When full, the oldest is dropped: an honest
/// client pays within seconds of its quote, so a flood from many peer ids
/// only churns through its own quotes.
pub const MAX_QUOTES: usize = 1024;

/// Blocks past its deadline a quote on a running contract is still
/// credited. A client only broadcasts before the deadline, but its notice
/// can reach a provider that was down much later; the money is then
/// already ours, so the bytes it bought are honoured. New contracts'
/// quotes lapse at the deadline: they hold a fresh address, and anyone
/// may ask for one.
pub const LATE_REVISION_KEEP_BLOCKS: u32 = 144;

/// A quoted allowance, held until paid or past its deadline.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Revision {
    pub revision_id: RevisionId,
    pub contract_id: ContractId,
    #[serde(with = "as_text")]
    pub peer: PeerId,
    pub add_bytes: u64,
    pub amount_sat: u64,
    pub term_end_height: u32,
    pub paid_through_height: u32,
    pub deadline_height: u32,
    #[serde(with = "checked_address")]
    pub payout_address: Address,
    /// Set when paying this quote forms the contract.
    pub formation: Option<Formation>,
    pub created_at: u64,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Formation {
    pub price_sat_per_gib_month: u64,
    pub period_blocks: u32,
    pub start_height: u32,
}

/// What the provider checks on every upload, in memory.
#[derive(Debug, Clone, Copy)]
struct Account {
    peer: PeerId,
    allowance: u64,
    /// Stored bytes, and bytes of uploads in progress.
    used: u64,
}

/// Running contracts' allowances and usage, and the queue of unpaid quotes.
#[derive(Default)]
pub struct Ledger {
    accounts: Mutex<HashMap<ContractId, Account>>,
    /// Unpaid quotes, oldest first.
    quotes: Mutex<VecDeque<(RevisionId, PeerId)>>,
}

fn err(kind: WireErrorKind, msg: impl Into<String>) -> ControlResponse {
    ControlResponse::Error(WireError::new(kind, msg))
}

fn internal(e: impl std::fmt::Display) -> WireError {
    WireError::new(WireErrorKind::Internal, e.to_string())
}

impl Ledger {
    /// Claims `size` bytes of `peer`'s allowance under `contract_id`.
    pub fn reserve(
        &self,
        peer: &PeerId,
        contract_id: &ContractId,
        size: u64,
    ) -> Result<(), WireError> {
        let mut accounts = self.accounts.lock().map_err(internal)?;
        let Some(a) = accounts.get_mut(contract_id).filter(|a| a.peer == *peer) else {
            return Err(WireError::new(
                WireErrorKind::UnknownContract,
                "no running contract for this client",
            ));
        };
        let after = a.used.saturating_add(size);
        if after > a.allowance {
            return Err(WireError::new(
                WireErrorKind::OverAllowance,
                format!(
                    "over the paid allowance: {} of {} bytes used",
                    a.used, a.allowance
                ),
            ));
        }
        a.used = after;
        Ok(())
    }

    pub fn release(&self, contract_id: &ContractId, size: u64) {
        if let Ok(mut accounts) = self.accounts.lock()
            && let Some(a) = accounts.get_mut(contract_id)
        {
            a.used = a.used.saturating_sub(size);
        }
    }

    fn used(&self, contract_id: &ContractId) -> u64 {
        self.accounts
            .lock()
            .ok()
            .and_then(|a| a.get(contract_id).map(|a| a.used))
            .unwrap_or(0)
    }

    /// Whether uploads are still accepted under this contract.
    pub fn is_open(&self, contract_id: &ContractId) -> bool {
        self.accounts
            .lock()
            .is_ok_and(|a| a.contains_key(contract_id))
    }

    fn open(&self, c: &Contract, used: u64) {
        if let Ok(mut accounts) = self.accounts.lock() {
            let a = accounts.entry(c.contract_id).or_insert(Account {
                peer: c.peer,
                allowance: 0,
                used,
            });
            a.allowance = c.allowance_bytes;
        }
    }

    /// Stops uploads under a contract; later stores of it are refused.
    fn close(&self, contract_id: &ContractId) {
        if let Ok(mut accounts) = self.accounts.lock() {
            accounts.remove(contract_id);
        }
    }

    /// Allowance promised but not yet used, which free space must cover.
    fn promised(&self) -> u64 {
        self.accounts.lock().map_or(0, |a| {
            a.values().fold(0u64, |t, a| {
                t.saturating_add(a.allowance.saturating_sub(a.used))
            })
        })
    }
}

impl ProviderService {
    /// Rebuilds the ledger from sled, and finishes collecting contracts a
    /// crash left half ended: delete first, then mark, so a crash in
    /// between leaves a record whose shards the next start deletes.
    pub fn load_ledger(&self) -> crate::Result<()> {
        let Some(store) = &self.store else {
            return Ok(());
        };
        for c in self.contracts.list()? {
            let held = store.contract_shards(&c.contract_id)?;
            if c.is_live() {
                self.ledger.open(&c, held.iter().map(|(_, s)| s).sum());
            } else if !held.is_empty() {
                store
                    .delete_contract(&c.peer, &c.contract_id)
                    .map_err(|e| crate::Error::Internal(e.message))?;
                info!(contract = %c.contract_id.short(), shards = held.len(), "finished collecting an ended contract");
            }
        }
        let mut quotes: Vec<Revision> = self.revisions.values()?;
        quotes.sort_by_key(|r| r.created_at);
        if let Ok(mut q) = self.ledger.quotes.lock() {
            q.extend(quotes.iter().map(|r| (r.revision_id, r.peer)));
        }
        Ok(())
    }

    /// The provider's contracts, with the bytes held under each.
    pub fn contract_infos(&self) -> crate::Result<Vec<p2pstore_rpc::ContractInfo>> {
        let Some(store) = &self.store else {
            return Ok(Vec::new());
        };
        self.contracts
            .list()?
            .iter()
            .map(|c| {
                let held: u64 = store
                    .contract_shards(&c.contract_id)?
                    .iter()
                    .map(|(_, s)| s)
                    .sum();
                // A provider is paid when the client pays: no notice period.
                Ok(c.to_rpc(held, 0))
            })
            .collect()
    }

    pub(super) async fn propose(&self, peer: PeerId, p: Proposal) -> ControlResponse {
        let (Some(store), Some(wallet)) = (&self.store, &self.wallet) else {
            return err(
                WireErrorKind::Forbidden,
                "this node is not a storage provider",
            );
        };
        let t = &self.terms;
        if p.add_bytes == 0 {
            return err(WireErrorKind::BadTerms, "a revision adds at least one byte");
        }
        let free = store.free().saturating_sub(self.ledger.promised());
        if p.add_bytes > free {
            return err(
                WireErrorKind::NoSpace,
                format!("need {} bytes, {free} free", p.add_bytes),
            );
        }
        // The deadline and the pro-rata share count from bitcoind's tip,
        // not the wallet's, which may still be catching up; a quote we
        // could not time is one we could not enforce.
        let tip = match wallet.check_bitcoind().await {
            Ok(h) => u32::try_from(h)
                .unwrap_or(u32::MAX)
                .max(wallet.tip_height()),
            Err(e) => {
                warn!("refusing proposal, bitcoind unreachable: {e}");
                return err(
                    WireErrorKind::Unavailable,
                    "provider's bitcoind is unreachable; try later",
                );
            }
        };
        let max_end = tip.saturating_add(t.max_term_blocks);
        if p.term_end_height > max_end {
            return err(
                WireErrorKind::BadTerms,
                format!(
                    "term ends past {max_end} ({} blocks from now)",
                    t.max_term_blocks
                ),
            );
        }
        let existing = match self.contracts.get(&p.contract_id) {
            Ok(c) => c,
            Err(e) => return err(WireErrorKind::Internal, e.to_string()),
        };
        let (paid_through, address, formation) = match existing {
            Some(c) if c.peer != peer => {
                return err(WireErrorKind::BadTerms, "contract id already used");
            }
            Some(c) if !c.is_live() => {
                return err(
                    WireErrorKind::BadTerms,
                    format!("contract is {}", c.state.as_str()),
                );
            }
            Some(c) => {
                if p.price_sat_per_gib_month != c.price_sat_per_gib_month
                    || p.period_blocks != c.period_blocks
                {
                    return err(
                        WireErrorKind::BadTerms,
                        "price and period are the contract's",
                    );
                }
                if c.paid_through_height <= tip {
                    return err(
                        WireErrorKind::BadTerms,
                        "the contract is behind on payment; pay the period first",
                    );
                }
                (c.paid_through_height, c.payout_address, None)
            }
            None => {
                if p.price_sat_per_gib_month != t.price_sat_per_gib_month {
                    return err(
                        WireErrorKind::BadTerms,
                        format!("the price is {} sat/GiB/month", t.price_sat_per_gib_month),
                    );
                }
                let term = p.term_end_height.saturating_sub(tip);
                if term < t.min_term_blocks || p.period_blocks == 0 || p.period_blocks > term {
                    return err(
                        WireErrorKind::BadTerms,
                        format!(
                            "a contract runs at least {} blocks, in periods no longer than its term",
                            t.min_term_blocks
                        ),
                    );
                }
                let address = match self.payout_address() {
                    Ok(a) => a,
                    Err(e) => return err(WireErrorKind::Internal, e.to_string()),
                };
                let formation = Formation {
                    price_sat_per_gib_month: p.price_sat_per_gib_month,
                    period_blocks: p.period_blocks,
                    start_height: tip,
                };
                (
                    tip.saturating_add(p.period_blocks),
                    address,
                    Some(formation),
                )
            }
        };
        let Some(amount_sat) =
            payment_amount(p.price_sat_per_gib_month, p.add_bytes, paid_through - tip)
        else {
            return err(WireErrorKind::BadTerms, "amount overflows");
        };
        let revision_id = match RevisionId::random() {
            Ok(id) => id,
            Err(e) => return err(WireErrorKind::Internal, e.to_string()),
        };
        let rev = Revision {
            revision_id,
            contract_id: p.contract_id,
            peer,
            add_bytes: p.add_bytes,
            amount_sat,
            term_end_height: p.term_end_height,
            paid_through_height: paid_through,
            deadline_height: tip.saturating_add(self.payment_window_blocks),
            payout_address: address,
            formation,
            created_at: now_secs(),
        };
        if let Err(e) = self.hold_quote(&rev) {
            return ControlResponse::Error(e);
        }
        info!(contract = %p.contract_id.short(), add_bytes = p.add_bytes, amount_sat, "quoted");
        ControlResponse::Quote(Quote {
            revision_id,
            contract_id: p.contract_id,
            payout_address: rev.payout_address.as_unchecked().clone(),
            amount_sat,
            paid_through_height: paid_through,
            deadline_height: rev.deadline_height,
        })
    }

    /// Unpaid quotes held, as recorded on disk.
    pub fn pending_quotes(&self) -> usize {
        self.revisions.len()
    }

    /// An address for a new contract: one a lapsed quote left unused if
    /// there is one, so that quotes nobody pays cannot grow the wallet.
    fn payout_address(&self) -> crate::Result<Address> {
        let wallet = self
            .wallet
            .as_ref()
            .ok_or_else(|| crate::Error::Internal("no wallet".into()))?;
        if let Some(Ok((text, ()))) = self.spare_addresses.iter().next() {
            self.spare_addresses.remove(&text)?;
            if let Ok(a) = wallet.parse_address(&text) {
                return Ok(a);
            }
        }
        Ok(wallet.new_address()?)
    }

    /// Records a quote under the per-peer and global caps, dropping the
    /// oldest quote when the provider holds [`MAX_QUOTES`].
    fn hold_quote(&self, rev: &Revision) -> Result<(), WireError> {
        let mut evicted = Vec::new();
        {
            let mut q = self.ledger.quotes.lock().map_err(internal)?;
            if q.iter().filter(|(_, p)| *p == rev.peer).count() >= MAX_QUOTES_PER_PEER {
                return Err(WireError::new(
                    WireErrorKind::RateLimited,
                    "too many unpaid quotes; pay or wait for them to lapse",
                ));
            }
            while q.len() >= MAX_QUOTES {
                evicted.extend(q.pop_front().map(|(id, _)| id));
            }
            q.push_back((rev.revision_id, rev.peer));
        }
        for id in evicted {
            self.drop_quote(&id).map_err(internal)?;
        }
        self.revisions
            .insert(&rev.revision_id, rev)
            .map_err(internal)
    }

    /// Forgets an unpaid quote; a new contract's address goes back to the pool.
    fn drop_quote(&self, id: &RevisionId) -> crate::Result<()> {
        if let Some(r) = self.revisions.get(id)? {
            if r.formation.is_some() {
                self.spare_addresses
                    .insert_lazy(&r.payout_address.to_string(), &())?;
            }
            self.revisions.remove(id)?;
        }
        if let Ok(mut q) = self.ledger.quotes.lock() {
            q.retain(|(r, _)| r != id);
        }
        Ok(())
    }

    pub(super) async fn payment_notice(&self, peer: PeerId, n: PaymentNotice) -> ControlResponse {
        let Some(wallet) = &self.wallet else {
            return err(
                WireErrorKind::Forbidden,
                "this node is not a storage provider",
            );
        };
        // One notice at a time: each reads, checks and rewrites a contract.
        let _guard = self.notice_lock.lock().await;
        let contract = match self.contracts.get(&n.contract_id) {
            Ok(c) => c.filter(|c| c.peer == peer),
            Err(e) => return err(WireErrorKind::Internal, e.to_string()),
        };
        // A notice sent again (the client did not hear our answer).
        if let Some(c) = &contract
            && c.has_payment(&n.txid, n.vout)
        {
            return self.status(c);
        }
        // A bumped payment (RBF) takes the place of the one it replaced.
        if let Some(c) = &contract
            && c.payments.iter().any(|p| !p.final_)
        {
            if wallet
                .received_at(n.txid, n.vout, &c.payout_address)
                .is_none()
                && wallet.sync_now().await.is_err()
            {
                return err(
                    WireErrorKind::Unavailable,
                    "provider's bitcoind is unreachable; try later",
                );
            }
            match self.adopt_replacements(c.clone()) {
                Ok((c, _)) if c.has_payment(&n.txid, n.vout) => return self.status(&c),
                Ok(_) => {}
                Err(e) => return err(WireErrorKind::Internal, e.to_string()),
            }
        }
        let (address, due, revision, kind, through) = match n.purpose {
            Purpose::Revision(id) => {
                let rev = match self.revisions.get(&id) {
                    Ok(Some(r)) if r.peer == peer && r.contract_id == n.contract_id => r,
                    Ok(_) => {
                        return err(
                            WireErrorKind::UnknownContract,
                            "no such quote: it lapsed or was never given",
                        );
                    }
                    Err(e) => return err(WireErrorKind::Internal, e.to_string()),
                };
                let through = rev.paid_through_height;
                (
                    rev.payout_address.clone(),
                    rev.amount_sat,
                    Some(rev),
                    PaymentKind::Revision,
                    through,
                )
            }
            Purpose::Period {
                allowance_bytes,
                paid_through_height,
                term_end_height,
            } => {
                let Some(c) = contract.as_ref().filter(|c| c.is_live()) else {
                    return err(
                        WireErrorKind::UnknownContract,
                        "no running contract for this client",
                    );
                };
                if let Err(e) =
                    self.check_period(c, allowance_bytes, paid_through_height, term_end_height)
                {
                    return ControlResponse::Error(e);
                }
                let Some(due) =
                    payment_amount(c.price_sat_per_gib_month, allowance_bytes, c.period_blocks)
                else {
                    return err(WireErrorKind::BadTerms, "amount overflows");
                };
                (
                    c.payout_address.clone(),
                    due,
                    None,
                    PaymentKind::Period,
                    paid_through_height,
                )
            }
        };
        let mut seen = wallet.received_at(n.txid, n.vout, &address);
        if seen.is_none() {
            // The notice can beat our mempool poll; look once more now.
            if wallet.sync_now().await.is_err() {
                return err(
                    WireErrorKind::Unavailable,
                    "provider's bitcoind is unreachable; try later",
                );
            }
            seen = wallet.received_at(n.txid, n.vout, &address);
        }
        let Some((value, height)) = seen else {
            return err(
                WireErrorKind::PaymentNotFound,
                format!("{}:{} does not pay {address}", n.txid, n.vout),
            );
        };
        if value < due {
            return err(
                WireErrorKind::PaymentInsufficient,
                format!("{}:{} pays {value} sat, {due} sat are due", n.txid, n.vout),
            );
        }
        let final_ = self.is_final(height);
        let record = PaymentRecord {
            txid: n.txid,
            vout: n.vout,
            amount_sat: value,
            kind,
            through_height: through,
            final_,
        };
        let updated = match (revision, contract) {
            (Some(rev), None) => self.form(peer, rev, record),
            (Some(rev), Some(_)) => self.contracts.update(&n.contract_id, |c| {
                // The collector may have ended it meanwhile; it stays ended.
                if c.is_live() && !c.has_payment(&record.txid, record.vout) {
                    c.allowance_bytes = c.allowance_bytes.saturating_add(rev.add_bytes);
                    c.term_end_height = c.term_end_height.max(rev.term_end_height);
                    c.payments.push(record.clone());
                    if !record.final_ {
                        c.state = State::Provisional;
                    }
                }
            }),
            (None, Some(_)) => self.contracts.update(&n.contract_id, |c| {
                if let Purpose::Period {
                    allowance_bytes,
                    paid_through_height,
                    term_end_height,
                } = n.purpose
                    && c.is_live()
                    && !c.has_payment(&record.txid, record.vout)
                {
                    c.allowance_bytes = allowance_bytes;
                    c.paid_through_height = paid_through_height;
                    c.term_end_height = c.term_end_height.max(term_end_height);
                    c.payments.push(record.clone());
                    if !record.final_ {
                        c.state = State::Provisional;
                    }
                }
            }),
            (None, None) => return err(WireErrorKind::UnknownContract, "no such contract"),
        };
        let c = match updated {
            Ok(Some(c)) => c,
            Ok(None) => return err(WireErrorKind::UnknownContract, "contract vanished"),
            Err(e) => return err(WireErrorKind::Internal, e.to_string()),
        };
        if let Purpose::Revision(id) = n.purpose {
            // Credited: the quote is spent. Its address now belongs to the
            // contract, so it must not return to the pool.
            let _ = self.revisions.remove(&id);
            if let Ok(mut q) = self.ledger.quotes.lock() {
                q.retain(|(r, _)| *r != id);
            }
        }
        if !c.is_live() {
            return err(
                WireErrorKind::BadTerms,
                format!("contract is {}", c.state.as_str()),
            );
        }
        self.ledger.open(&c, self.ledger.used(&c.contract_id));
        info!(contract = %c.contract_id.short(), txid = %n.txid, value, kind = %kind, final_, allowance = c.allowance_bytes, paid_through = c.paid_through_height, "payment credited");
        self.events.emit(p2pstore_rpc::EventKind::PaymentReceived {
            txid: n.txid.to_string(),
            contract_id: c.contract_id.to_string(),
            peer_id: c.peer.to_string(),
            amount_sat: value,
            kind,
        });
        self.status(&c)
    }

    fn form(
        &self,
        peer: PeerId,
        rev: Revision,
        record: PaymentRecord,
    ) -> crate::Result<Option<Contract>> {
        let Some(f) = rev.formation else {
            return Ok(None);
        };
        let c = Contract {
            contract_id: rev.contract_id,
            role: Role::Provider,
            peer,
            price_sat_per_gib_month: f.price_sat_per_gib_month,
            period_blocks: f.period_blocks,
            start_height: f.start_height,
            term_end_height: rev.term_end_height,
            allowance_bytes: rev.add_bytes,
            paid_through_height: rev.paid_through_height,
            payout_address: rev.payout_address,
            state: if record.final_ {
                State::Active
            } else {
                State::Provisional
            },
            payments: vec![record],
            created_at: now_secs(),
        };
        self.contracts.put(&c)?;
        Ok(Some(c))
    }

    /// A period payment must pay the very next period, for at least what
    /// is stored, within the term the provider accepts.
    fn check_period(
        &self,
        c: &Contract,
        allowance: u64,
        through: u32,
        term_end: u32,
    ) -> Result<(), WireError> {
        let bad = |m: String| Err(WireError::new(WireErrorKind::BadTerms, m));
        let next = c.paid_through_height.saturating_add(c.period_blocks);
        if through != next {
            return bad(format!("the next period runs to {next}, not {through}"));
        }
        let term_end = term_end.max(c.term_end_height);
        if through > term_end {
            return bad(format!("the term ends at {term_end}; renew it to pay on"));
        }
        let tip = self.wallet.as_ref().map_or(0, |w| w.tip_height());
        if term_end > tip.saturating_add(self.terms.max_term_blocks) {
            return bad(format!(
                "a term may end at most {} blocks from now",
                self.terms.max_term_blocks
            ));
        }
        let used = self.ledger.used(&c.contract_id);
        if allowance < used {
            return bad(format!(
                "{used} bytes are stored; the allowance cannot be less"
            ));
        }
        Ok(())
    }

    fn is_final(&self, height: Option<u32>) -> bool {
        let tip = self.wallet.as_ref().map_or(0, |w| w.tip_height());
        match height {
            Some(h) => tip.saturating_sub(h).saturating_add(1) >= self.min_confirmations,
            None => self.min_confirmations == 0,
        }
    }

    fn status(&self, c: &Contract) -> ControlResponse {
        ControlResponse::Paid(self.contract_status(c))
    }

    /// The contract as this provider holds it, for its client.
    pub(super) fn contract_status(&self, c: &Contract) -> ContractStatus {
        ContractStatus {
            contract_id: c.contract_id,
            allowance_bytes: c.allowance_bytes,
            stored_bytes: self.ledger.used(&c.contract_id),
            paid_through_height: c.paid_through_height,
            term_end_height: c.term_end_height,
        }
    }

    /// One collection round: lapsed quotes go; payments gain finality or,
    /// gone from the mempool, end their contract; contracts unpaid past
    /// their grace or past their term end. Returns how many contracts ended.
    pub fn collect(&self) -> crate::Result<u64> {
        let Some(wallet) = &self.wallet else {
            return Ok(0);
        };
        if self.store.is_none() {
            return Ok(0);
        }
        let tip = wallet.tip_height();
        for r in self.revisions.values()? {
            if tip <= r.deadline_height {
                continue;
            }
            let late_ok = r.formation.is_none()
                && tip <= r.deadline_height.saturating_add(LATE_REVISION_KEEP_BLOCKS);
            if late_ok {
                // Lapsed for new payments: it no longer counts against
                // the peer's unpaid quotes.
                if let Ok(mut q) = self.ledger.quotes.lock() {
                    q.retain(|(id, _)| *id != r.revision_id);
                }
            } else {
                self.drop_quote(&r.revision_id)?;
            }
        }
        let mut ended = 0;
        for c in self.contracts.list()? {
            if !c.is_live() {
                continue;
            }
            let (c, dropped) = self.adopt_replacements(c)?;
            let mut now_final = Vec::new();
            for p in c.payments.iter().filter(|p| !p.final_) {
                if let Some((_, h)) = wallet.received_at(p.txid, p.vout, &c.payout_address)
                    && self.is_final(h)
                {
                    now_final.push((p.txid, p.vout));
                }
            }
            let end = if dropped {
                Some(State::Dropped)
            } else if tip >= c.term_end_height {
                Some(State::Expired)
            } else if tip > c.paid_through_height.saturating_add(self.grace_blocks) {
                Some(State::Lapsed)
            } else {
                None
            };
            if let Some(state) = end {
                self.end(&c, state, tip)?;
                ended += 1;
            } else if !now_final.is_empty() {
                self.contracts.update(&c.contract_id, |c| {
                    for p in &mut c.payments {
                        if now_final.contains(&(p.txid, p.vout)) {
                            p.final_ = true;
                        }
                    }
                    if c.state == State::Provisional && c.payments.iter().all(|p| p.final_) {
                        c.state = State::Active;
                    }
                })?;
            }
        }
        Ok(ended)
    }

    /// Follows payments the client replaced (RBF) to the transaction that
    /// replaced them, when it pays the contract as much. Returns the
    /// contract as recorded now, and whether some unconfirmed payment is
    /// gone without a replacement (double-spent, or dropped from the
    /// mempool).
    fn adopt_replacements(&self, c: Contract) -> crate::Result<(Contract, bool)> {
        let Some(wallet) = &self.wallet else {
            return Ok((c, false));
        };
        let mut swaps = Vec::new();
        let mut gone = false;
        for p in c.payments.iter().filter(|p| !p.final_) {
            if wallet
                .received_at(p.txid, p.vout, &c.payout_address)
                .is_some()
            {
                continue;
            }
            match wallet.replacement_of(p.txid, &c.payout_address) {
                Some((txid, vout, value)) if value >= p.amount_sat => {
                    swaps.push((p.txid, txid, vout));
                }
                _ => gone = true,
            }
        }
        if swaps.is_empty() {
            return Ok((c, gone));
        }
        let updated = self.contracts.update(&c.contract_id, |c| {
            for (old, txid, vout) in &swaps {
                if let Some(p) = c.payments.iter_mut().find(|p| p.txid == *old) {
                    p.txid = *txid;
                    p.vout = *vout;
                }
            }
        })?;
        for (old, txid, _) in &swaps {
            info!(contract = %c.contract_id.short(), %old, new = %txid, "payment replaced by its payer");
        }
        Ok((updated.unwrap_or(c), gone))
    }

    /// Ends a contract: uploads stop, the shards go, then the record says
    /// why. A crash before the mark leaves a live record whose shards the
    /// next round deletes again.
    fn end(&self, c: &Contract, state: State, tip: u32) -> crate::Result<()> {
        let Some(store) = &self.store else {
            return Ok(());
        };
        self.ledger.close(&c.contract_id);
        let (shards, bytes) = store
            .delete_contract(&c.peer, &c.contract_id)
            .map_err(|e| crate::Error::Internal(e.message))?;
        // Shards gone, contract still live: the next round ends it again.
        crate::failpoint::hit("gc-before-mark");
        self.contracts.update(&c.contract_id, |c| c.state = state)?;
        info!(contract = %c.contract_id.short(), state = %state, shards, bytes, tip, paid_through = c.paid_through_height, term_end = c.term_end_height, "contract ended; shards deleted");
        self.events.emit(p2pstore_rpc::EventKind::ContractEnded {
            contract_id: c.contract_id.to_string(),
            peer_id: c.peer.to_string(),
            role: Role::Provider,
            state,
        });
        Ok(())
    }

    pub fn spawn_gc(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let worker = this.clone();
                match tokio::task::spawn_blocking(move || worker.collect()).await {
                    Ok(Err(e)) => warn!("contract collection failed: {e}"),
                    Err(e) => warn!("contract collection panicked: {e}"),
                    Ok(Ok(_)) => {}
                }
            }
        })
    }
}
