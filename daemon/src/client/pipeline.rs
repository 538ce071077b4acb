//! The pipeline put and repair share: place, contract, pay, upload,
//! record. This module owns its two money steps: [`ClientService::acquire`]
//! buys allowance (revising each provider's contract, or forming one) in
//! one prepaid transaction, and [`ClientService::release`] undoes what an
//! upload that failed after paying left behind. Rollback is decided here
//! alone, from the payment's [`PayOutcome`].

use std::collections::HashMap;

use libp2p::PeerId;
use tracing::{info, warn};

use super::ClientService;
use super::payment::{Due, PayOutcome};
use super::uploads::StoredShard;
use crate::contracts::{Contract, Role, State};
use crate::error::{Error, Result};
use crate::ids::{ContractId, ShardId};
use crate::protocol::*;
use crate::provider::store::now_secs;

/// Blocks a provider's chain tip may trail the client's when it quotes:
/// each block it trails adds one block of the added bytes to the quote.
const QUOTE_TIP_SLACK_BLOCKS: u32 = 2;

/// Why [`ClientService::acquire`] bought nothing, or not all of it.
pub(super) enum AcquireFailure {
    /// These providers gave no usable quote. Nothing was paid, so their
    /// shards can be placed at other providers.
    Quotes(Vec<PeerId>, Error),
    /// Anything else, as it stands.
    Other(Error),
}

impl From<Error> for AcquireFailure {
    fn from(e: Error) -> Self {
        AcquireFailure::Other(e)
    }
}

impl From<AcquireFailure> for Error {
    fn from(f: AcquireFailure) -> Self {
        match f {
            AcquireFailure::Quotes(_, e) | AcquireFailure::Other(e) => e,
        }
    }
}

/// Bytes to buy from one provider, at the offer it gave.
pub(super) struct Need {
    pub peer: PeerId,
    pub offer: Offer,
    pub bytes: u64,
}

/// Allowance for an upload under `contract_id`, newly bought or already
/// paid for and unused.
#[derive(Debug, Clone, Copy)]
pub(super) struct Acquired {
    pub peer: PeerId,
    pub contract_id: ContractId,
    /// Bytes held for this upload until it is recorded or released.
    pub held: u64,
}

/// The contract an upload to `peer` goes under.
pub(super) fn contract_with(acquired: &[Acquired], peer: &PeerId) -> ContractId {
    acquired
        .iter()
        .find(|a| a.peer == *peer)
        .map(|a| a.contract_id)
        .unwrap_or_default()
}

impl ClientService {
    /// Buys each need's bytes of allowance, running to at least
    /// `term_end`, and returns once every provider has credited it: only
    /// then may shards be uploaded. All providers are paid in one
    /// transaction.
    pub(super) async fn acquire(
        &self,
        needs: &[Need],
        term_end: u32,
        progress: Option<&crate::progress::Op>,
    ) -> std::result::Result<Vec<Acquired>, AcquireFailure> {
        // Quotes are priced to the current paid-through height, so no
        // period payment may slip in between a quote and its payment.
        let _guard = self.pay_lock.lock().await;
        let tip = self.wallet.tip_height();
        // Allowance paid for and unused (a put that died after paying left
        // it) is used before any is bought, so a retry never pays twice.
        let (mut covered, mut buy) = (Vec::new(), Vec::new());
        let spare = self.spare_allowance()?;
        // Chosen before a period payment started (see `paying_period`).
        let paying = self.paying_period()?;
        if let Some(n) = needs.iter().find(|n| paying.contains(&n.peer)) {
            return Err(Error::ProviderUnreachable {
                peer: n.peer,
                reason: "a period payment to it is being credited; try again shortly".into(),
            }
            .into());
        }
        for n in needs {
            match self.contracts.live_with(&n.peer)? {
                Some(c) if spare.get(&c.contract_id).copied().unwrap_or(0) >= n.bytes => covered
                    .push(Acquired {
                        peer: n.peer,
                        contract_id: c.contract_id,
                        held: n.bytes,
                    }),
                live => buy.push((n, live)),
            }
        }
        let buy_peers: Vec<PeerId> = buy.iter().map(|(n, _)| n.peer).collect();
        let asks = buy
            .into_iter()
            .map(|(n, live)| self.quote(n, live, term_end, tip));
        let mut dues = Vec::new();
        let mut first_err = None;
        let mut refused = Vec::new();
        for (r, n) in futures::future::join_all(asks)
            .await
            .into_iter()
            .zip(&buy_peers)
        {
            match r {
                Ok(d) => dues.push(d),
                Err(e) => {
                    refused.push(*n);
                    first_err = first_err.or(Some(e));
                }
            }
        }
        let mut acquired: Vec<Acquired> = dues
            .iter()
            .map(|d| Acquired {
                peer: d.contract.peer,
                contract_id: d.contract.contract_id,
                held: d.add_bytes,
            })
            .collect();
        if let Some(e) = first_err {
            self.forget_formations(&acquired)?;
            return Err(AcquireFailure::Quotes(refused, e));
        }
        // Providers that just quoted: a restarted client must reach them
        // before it has walked the DHT again.
        for d in &dues {
            self.remember_addresses(d.contract.peer).await;
        }
        if dues.is_empty() {
            self.hold(&covered);
            info!(
                providers = covered.len(),
                "allowance already paid covers the upload"
            );
            return Ok(covered);
        }
        let bought: Vec<(PeerId, u64)> = dues
            .iter()
            .map(|d| (d.contract.peer, d.add_bytes))
            .collect();
        acquired.extend(covered);
        if let Some(p) = progress {
            p.phase(p2pstore_rpc::TransferPhase::Payment);
        }
        match self.pay(dues).await {
            PayOutcome::NotPaid(e) => {
                self.forget_formations(&acquired)?;
                Err(e.into())
            }
            // Reconciliation sends these same bytes or gives them up at
            // the quotes' deadline; either way nothing is undone here.
            PayOutcome::MaybePaid(e) => Err(e.into()),
            PayOutcome::Paid(mut intent) => {
                let problems = self.notify(&mut intent).await?;
                match problems.into_iter().next() {
                    // Paid, but not (yet) credited: the allowance stays
                    // bought and is credited by reconciliation.
                    Some((_, e)) => Err(e.into()),
                    None => {
                        info!(txid = %intent.txid, providers = acquired.len(), "allowance paid");
                        // Their cached offers show the space as taken.
                        for (peer, bytes) in &bought {
                            self.directory.used(peer, *bytes);
                        }
                        self.hold(&acquired);
                        Ok(acquired)
                    }
                }
            }
        }
    }

    /// Asks one provider for a quote (a revision of `existing`, the
    /// running contract with it, or a new contract) and checks it against
    /// the price.
    async fn quote(
        &self,
        n: &Need,
        existing: Option<Contract>,
        term_end: u32,
        tip: u32,
    ) -> Result<Due> {
        let peer = n.peer;
        let proposal = match &existing {
            Some(c) => Proposal {
                contract_id: c.contract_id,
                add_bytes: n.bytes,
                price_sat_per_gib_month: c.price_sat_per_gib_month,
                period_blocks: c.period_blocks,
                term_end_height: c.term_end_height.max(term_end),
            },
            None => Proposal {
                contract_id: ContractId::random()?,
                add_bytes: n.bytes,
                price_sat_per_gib_month: n.offer.price_sat_per_gib_month,
                period_blocks: self.period_blocks,
                term_end_height: term_end,
            },
        };
        let quote = self
            .net
            .propose(peer, proposal.clone())
            .await
            .map_err(|e| e.at(peer))?;
        let rejected = |reason: String| Error::ProviderRejected { peer, reason };
        let address = self
            .wallet
            .check_network(quote.payout_address)
            .map_err(|e| rejected(format!("payout address: {e}")))?;
        // A new contract: never more than a whole period of the added
        // bytes. A running one: its allowance is paid to its paid-through
        // height, which a period payment made `renew_before_blocks` early
        // puts more than a period ahead; the provider's tip may trail ours.
        let blocks = match &existing {
            Some(c) => c
                .paid_through_height
                .saturating_sub(tip.saturating_sub(QUOTE_TIP_SLACK_BLOCKS)),
            None => proposal.period_blocks,
        };
        let most = payment_amount(proposal.price_sat_per_gib_month, n.bytes, blocks)
            .ok_or_else(|| rejected("its price overflows the amount".into()))?;
        if quote.amount_sat > most {
            return Err(rejected(format!(
                "quoted {} sat, more than {blocks} blocks of the bytes cost ({most} sat)",
                quote.amount_sat
            )));
        }
        let contract = match existing {
            Some(c) if c.payout_address != address => {
                return Err(rejected("quoted another address for its contract".into()));
            }
            Some(c) => c,
            None => {
                let c = Contract {
                    contract_id: proposal.contract_id,
                    role: Role::Client,
                    peer,
                    price_sat_per_gib_month: proposal.price_sat_per_gib_month,
                    period_blocks: proposal.period_blocks,
                    start_height: tip,
                    term_end_height: proposal.term_end_height,
                    allowance_bytes: 0,
                    paid_through_height: quote.paid_through_height,
                    payout_address: address,
                    payments: Vec::new(),
                    state: State::Pending,
                    created_at: now_secs(),
                };
                self.contracts.put(&c)?;
                c
            }
        };
        Ok(Due {
            contract,
            amount_sat: quote.amount_sat,
            purpose: Purpose::Revision(quote.revision_id),
            add_bytes: n.bytes,
            deadline_height: quote.deadline_height,
        })
    }

    /// Bytes the manifests keep under each contract.
    pub(super) fn recorded_bytes(&self) -> Result<HashMap<ContractId, u64>> {
        let mut used: HashMap<ContractId, u64> = HashMap::new();
        for m in self.manifests.list()? {
            for r in m.segments.iter().flat_map(|s| &s.shards) {
                *used.entry(r.contract_id).or_default() += r.size;
            }
        }
        Ok(used)
    }

    /// Bytes of allowance each contract needs: what recorded files use
    /// and uploads in progress hold.
    pub(super) fn booked_bytes(&self) -> Result<HashMap<ContractId, u64>> {
        let mut used = self.recorded_bytes()?;
        if let Ok(held) = self.held.lock() {
            for (id, bytes) in held.iter() {
                *used.entry(*id).or_default() += bytes;
            }
        }
        Ok(used)
    }

    /// Paid allowance not used by any recorded file nor held by an upload
    /// in progress, per contract.
    fn spare_allowance(&self) -> Result<HashMap<ContractId, u64>> {
        let used = self.booked_bytes()?;
        let mut spare = self
            .contracts
            .list()?
            .into_iter()
            .filter(|c| c.is_live())
            .map(|c| {
                let u = used.get(&c.contract_id).copied().unwrap_or(0);
                (c.contract_id, c.allowance_bytes.saturating_sub(u))
            })
            .collect();
        self.uploads.apply_gaps(&mut spare);
        Ok(spare)
    }

    fn hold(&self, acquired: &[Acquired]) {
        if let Ok(mut held) = self.held.lock() {
            for a in acquired {
                *held.entry(a.contract_id).or_default() += a.held;
            }
        }
    }

    /// Ends an upload's hold on its allowance: it is recorded in a
    /// manifest now, or released.
    pub(super) fn unhold(&self, acquired: &[Acquired]) {
        if let Ok(mut held) = self.held.lock() {
            for a in acquired {
                if let Some(h) = held.get_mut(&a.contract_id) {
                    *h = h.saturating_sub(a.held);
                }
            }
            held.retain(|_, h| *h > 0);
        }
    }

    /// Contracts that were being formed and will not be: unpaid, they
    /// never started.
    fn forget_formations(&self, acquired: &[Acquired]) -> Result<()> {
        for a in acquired {
            self.contracts.update(&a.contract_id, |c| {
                if c.state == State::Pending {
                    c.state = State::Rejected;
                }
            })?;
        }
        Ok(())
    }

    /// After a failed upload that was paid for: deletes what is known to
    /// be stored. The allowance stays as paid. A store cut short may still
    /// land at the provider after this (its request was on the way), and
    /// a period paid for less than the provider holds is refused after the
    /// money went out; unused allowance is spare, and the next put to the
    /// contract uses it without paying again.
    pub(super) async fn release(&self, acquired: &[Acquired], stored: &[StoredShard]) {
        for a in acquired {
            let ids: Vec<ShardId> = stored
                .iter()
                .filter(|s| s.contract_id == a.contract_id)
                .map(|s| s.shard_id)
                .collect();
            if ids.is_empty() {
                continue;
            }
            if let Err(e) = self.net.delete(a.peer, a.contract_id, ids).await {
                warn!(peer = %a.peer, contract = %a.contract_id.short(), "cleanup delete failed: {e}");
            }
        }
    }
}
