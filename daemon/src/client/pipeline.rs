//! The pipeline put and repair share: place, contract, pay, upload,
//! record. This module owns its two money steps: [`ClientService::acquire`]
//! buys allowance (revising each provider's contract, or forming one) in
//! one prepaid transaction, and [`ClientService::release`] undoes what an
//! upload that failed after paying left behind. Rollback is decided here
//! alone, from the payment's [`PayOutcome`].

use libp2p::PeerId;
use tracing::{info, warn};

use super::ClientService;
use super::payment::{Due, PayOutcome};
use crate::contracts::{Contract, Role, State};
use crate::error::{Error, Result};
use crate::ids::{ContractId, ShardId};
use crate::protocol::*;
use crate::provider::store::now_secs;

/// Bytes to buy from one provider, at the offer it gave.
pub(super) struct Need {
    pub peer: PeerId,
    pub offer: Offer,
    pub bytes: u64,
}

/// A shard a provider acknowledged, for cleanup if the upload fails.
#[derive(Debug, Clone, Copy)]
pub(super) struct StoredShard {
    pub contract_id: ContractId,
    pub shard_id: ShardId,
    pub size: u64,
}

/// Allowance bought: `bytes` more under `contract_id`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Acquired {
    pub peer: PeerId,
    pub contract_id: ContractId,
    pub bytes: u64,
}

impl ClientService {
    /// Buys each need's bytes of allowance, running to at least
    /// `term_end`, and returns once every provider has credited it: only
    /// then may shards be uploaded. All providers are paid in one
    /// transaction.
    pub(super) async fn acquire(&self, needs: &[Need], term_end: u32) -> Result<Vec<Acquired>> {
        // Quotes are priced to the current paid-through height, so no
        // period payment may slip in between a quote and its payment.
        let _guard = self.pay_lock.lock().await;
        let tip = self.wallet.tip_height();
        let asks = needs.iter().map(|n| self.quote(n, term_end, tip));
        let mut dues = Vec::new();
        let mut first_err = None;
        for r in futures::future::join_all(asks).await {
            match r {
                Ok(d) => dues.push(d),
                Err(e) => first_err = first_err.or(Some(e)),
            }
        }
        let acquired: Vec<Acquired> = dues
            .iter()
            .map(|d| Acquired {
                peer: d.contract.peer,
                contract_id: d.contract.contract_id,
                bytes: d.add_bytes,
            })
            .collect();
        if let Some(e) = first_err {
            self.forget_formations(&acquired)?;
            return Err(e);
        }
        match self.pay(dues).await {
            PayOutcome::NotPaid(e) => {
                self.forget_formations(&acquired)?;
                Err(e)
            }
            // Reconciliation sends these same bytes or gives them up at
            // the quotes' deadline; either way nothing is undone here.
            PayOutcome::MaybePaid(e) => Err(e),
            PayOutcome::Paid(mut intent) => {
                let problems = self.notify(&mut intent).await?;
                match problems.into_iter().next() {
                    // Paid, but not (yet) credited: the allowance stays
                    // bought and is credited by reconciliation.
                    Some((_, e)) => Err(e),
                    None => {
                        info!(txid = %intent.txid, providers = acquired.len(), "allowance paid");
                        Ok(acquired)
                    }
                }
            }
        }
    }

    /// Asks one provider for a quote and checks it against the price.
    async fn quote(&self, n: &Need, term_end: u32, tip: u32) -> Result<Due> {
        let peer = n.peer;
        let existing = self.contracts.live_with(&peer)?;
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
        // Never more than a whole period of the added bytes.
        let most = payment_amount(
            proposal.price_sat_per_gib_month,
            n.bytes,
            proposal.period_blocks,
        )
        .ok_or_else(|| rejected("its price overflows the amount".into()))?;
        if quote.amount_sat > most {
            return Err(rejected(format!(
                "quoted {} sat, more than a whole period ({most} sat)",
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

    /// After a failed upload that was paid for: deletes what was stored,
    /// and takes the bytes out of the allowance paid from the next period
    /// on (this period's payment is spent). Bytes a provider may still
    /// hold stay in the allowance: paying for less than it holds would
    /// get the whole contract refused.
    pub(super) async fn release(&self, acquired: &[Acquired], stored: &[StoredShard]) {
        for a in acquired {
            let mine: Vec<&StoredShard> = stored
                .iter()
                .filter(|s| s.contract_id == a.contract_id)
                .collect();
            let mut kept = 0u64;
            if !mine.is_empty() {
                let ids = mine.iter().map(|s| s.shard_id).collect();
                if let Err(e) = self.net.delete(a.peer, a.contract_id, ids).await {
                    warn!(peer = %a.peer, contract = %a.contract_id.short(), "cleanup delete failed: {e}");
                    kept = mine.iter().map(|s| s.size).sum();
                }
            }
            let _ = self.contracts.update(&a.contract_id, |c| {
                c.allowance_bytes = c
                    .allowance_bytes
                    .saturating_sub(a.bytes.saturating_sub(kept));
            });
        }
    }
}
