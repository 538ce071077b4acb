//! The provider's side of storage contracts: accepting proposals with a
//! fresh payout address, verifying payment notices against its own wallet,
//! and deleting the shards of contracts left unpaid past their deadline.

use std::time::Duration;

use bdk_wallet::bitcoin::Txid;
use libp2p::PeerId;
use tracing::{info, warn};

use super::ProviderService;
use crate::contracts::{Contract, Role, State};
use crate::ids::{ContractId, ShardId};
use crate::protocol::*;

const MAX_UNPAID_PER_PEER: usize = 32;
const MAX_UNPAID_TOTAL: usize = 1024;

fn err(kind: WireErrorKind, msg: impl Into<String>) -> ControlResponse {
    ControlResponse::Error(WireError::new(kind, msg))
}

impl ProviderService {
    pub(super) async fn propose(&self, peer: PeerId, p: Proposal) -> ControlResponse {
        let (Some(store), Some(wallet)) = (&self.store, &self.wallet) else {
            return err(
                WireErrorKind::Forbidden,
                "this node is not a storage provider",
            );
        };
        let t = &self.terms;
        if p.term_blocks < t.min_term_blocks || p.term_blocks > t.max_term_blocks {
            return err(
                WireErrorKind::BadTerms,
                format!(
                    "term {} outside {}..={} blocks",
                    p.term_blocks, t.min_term_blocks, t.max_term_blocks
                ),
            );
        }
        if p.shards.is_empty() || p.shards.len() > MAX_SHARDS_PER_CONTRACT {
            return err(
                WireErrorKind::BadTerms,
                format!("a contract holds 1 to {MAX_SHARDS_PER_CONTRACT} shards"),
            );
        }
        if p.shards.iter().any(|s| s.size == 0) {
            return err(WireErrorKind::BadTerms, "a shard cannot be empty");
        }
        if p.shards.iter().any(|s| s.size > MAX_SHARD_BYTES) {
            return err(
                WireErrorKind::TooLarge,
                format!("a shard exceeds {MAX_SHARD_BYTES} bytes"),
            );
        }
        let bytes = p.bytes();
        let Some(due) = contract_amount(t.price_sat_per_gib_month, bytes, p.term_blocks) else {
            return err(WireErrorKind::BadTerms, "amount overflows");
        };
        if p.amount_sat < due {
            return err(
                WireErrorKind::BadTerms,
                format!(
                    "amount {} sat is below {due} sat at {} sat/GiB/month",
                    p.amount_sat, t.price_sat_per_gib_month
                ),
            );
        }
        if bytes > store.free() {
            return err(
                WireErrorKind::NoSpace,
                format!("need {bytes} bytes, {} free", store.free()),
            );
        }
        // Unpaid proposals cost a peer nothing, so they are capped: per peer,
        // and in all, until they are paid or expire.
        let pending = match self.contracts.list() {
            Ok(all) => all
                .into_iter()
                .filter(|c| c.state == State::Accepted)
                .map(|c| c.peer)
                .collect::<Vec<_>>(),
            Err(e) => return err(WireErrorKind::Internal, e.to_string()),
        };
        let mine = pending.iter().filter(|p| **p == peer).count();
        if mine >= MAX_UNPAID_PER_PEER || pending.len() >= MAX_UNPAID_TOTAL {
            return err(
                WireErrorKind::BadTerms,
                "too many unpaid contracts; pay or wait for them to expire",
            );
        }
        match self.contracts.get(&p.contract_id) {
            Ok(None) => {}
            Ok(Some(_)) => return err(WireErrorKind::BadTerms, "contract id already used"),
            Err(e) => return err(WireErrorKind::Internal, e.to_string()),
        }
        // A contract whose deadline we could not judge is one we cannot
        // enforce; refuse rather than guess the height.
        // The deadline counts from bitcoind's tip, not the wallet's, which
        // may still be catching up.
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
        let address = match wallet.new_address() {
            Ok(a) => a,
            Err(e) => return err(WireErrorKind::Internal, e.to_string()),
        };
        let deadline_height = tip.saturating_add(self.payment_window_blocks);
        let contract = Contract::accepted(
            Role::Provider,
            peer,
            None,
            &p,
            address.clone(),
            deadline_height,
        );
        if let Err(e) = self.contracts.put(&contract) {
            return err(WireErrorKind::Internal, e.to_string());
        }
        info!(contract = %p.contract_id.short(), bytes, amount_sat = p.amount_sat, deadline_height, "contract accepted");
        ControlResponse::Accepted(Accepted {
            contract_id: p.contract_id,
            payout_address: address.as_unchecked().clone(),
            deadline_height,
        })
    }

    /// Whether `peer` may upload this shard: it must be listed, with this
    /// size, in a live contract of that peer's.
    pub(super) fn may_store(
        &self,
        peer: &PeerId,
        contract_id: &ContractId,
        shard_id: &ShardId,
        size: u64,
    ) -> Result<(), WireError> {
        let unknown = || {
            WireError::new(
                WireErrorKind::UnknownContract,
                "no such contract for this client",
            )
        };
        let c = self
            .contracts
            .get(contract_id)
            .map_err(|e| WireError::new(WireErrorKind::Internal, e.to_string()))?
            .ok_or_else(unknown)?;
        if c.peer != *peer {
            return Err(unknown());
        }
        if !matches!(c.state, State::Accepted | State::Paid | State::Active) {
            return Err(WireError::new(
                WireErrorKind::Forbidden,
                format!("contract is {}", c.state.as_str()),
            ));
        }
        if !c.holds(shard_id, size) {
            return Err(WireError::new(
                WireErrorKind::Forbidden,
                "shard is not part of the contract",
            ));
        }
        Ok(())
    }

    pub(super) async fn payment_notice(
        &self,
        peer: PeerId,
        contract_id: ContractId,
        txid: Txid,
        vout: u32,
    ) -> ControlResponse {
        let Some(wallet) = &self.wallet else {
            return err(
                WireErrorKind::Forbidden,
                "this node is not a storage provider",
            );
        };
        let contract = match self.contracts.get(&contract_id) {
            Ok(Some(c)) if c.peer == peer => c,
            Ok(_) => {
                return err(
                    WireErrorKind::UnknownContract,
                    "no such contract for this client",
                );
            }
            Err(e) => return err(WireErrorKind::Internal, e.to_string()),
        };
        if contract.state == State::Active
            && contract.txid == Some(txid)
            && contract.vout == Some(vout)
        {
            return self.payment_accepted(&contract);
        }
        if contract.state != State::Accepted {
            return err(
                WireErrorKind::BadTerms,
                format!("contract is {}", contract.state.as_str()),
            );
        }
        let address = &contract.payout_address;
        let mut seen = wallet.received_at(txid, vout, address);
        if seen.is_none() {
            // The notice can beat our mempool poll; look once more now.
            if wallet.sync_now().await.is_err() {
                return err(
                    WireErrorKind::Unavailable,
                    "provider's bitcoind is unreachable; try later",
                );
            }
            seen = wallet.received_at(txid, vout, address);
        }
        let Some((value, _height)) = seen else {
            return err(
                WireErrorKind::PaymentNotFound,
                format!("{txid}:{vout} does not pay {}", contract.payout_address),
            );
        };
        if value < contract.amount_sat {
            return err(
                WireErrorKind::PaymentInsufficient,
                format!(
                    "{txid}:{vout} pays {value} sat, the contract is for {} sat",
                    contract.amount_sat
                ),
            );
        }
        let start = wallet.tip_height();
        // Only an accepted contract becomes active: the GC may have expired
        // it while we looked at the payment.
        let updated = self.contracts.update(&contract_id, |c| {
            if c.state == State::Accepted {
                c.state = State::Active;
                c.txid = Some(txid);
                c.vout = Some(vout);
                c.start_height = Some(start);
            }
        });
        match updated {
            Ok(Some(c)) if c.state != State::Active => err(
                WireErrorKind::BadTerms,
                format!("contract is {}", c.state.as_str()),
            ),
            Ok(Some(c)) => {
                info!(contract = %contract_id.short(), %txid, value, "contract paid and active");
                self.payment_accepted(&c)
            }
            Ok(None) => err(WireErrorKind::UnknownContract, "contract vanished"),
            Err(e) => err(WireErrorKind::Internal, e.to_string()),
        }
    }

    fn payment_accepted(&self, c: &Contract) -> ControlResponse {
        let start_height = c.start_height.unwrap_or(0);
        ControlResponse::PaymentAccepted(PaymentAccepted {
            contract_id: c.contract_id,
            start_height,
            expiry_height: start_height.saturating_add(c.term_blocks),
        })
    }

    /// Deletes the shards of contracts unpaid past their deadline. Before
    /// deleting, it looks for a payment whose notice never arrived (the
    /// client crashed, or we were offline) and activates the contract
    /// instead; and it expires active contracts whose unconfirmed payment
    /// vanished from the mempool (replaced or double-spent). Returns how
    /// many contracts it expired.
    pub fn collect_unpaid(&self) -> crate::Result<u64> {
        let (Some(store), Some(wallet)) = (&self.store, &self.wallet) else {
            return Ok(0);
        };
        let tip = wallet.tip_height();
        let mut expired = 0;
        for c in self.contracts.list()? {
            if tip <= c.deadline_height || !matches!(c.state, State::Accepted | State::Active) {
                continue;
            }
            let address = &c.payout_address;
            if c.state == State::Active {
                let still_paid = match (c.txid, c.vout) {
                    (Some(txid), Some(vout)) => wallet.received_at(txid, vout, address).is_some(),
                    _ => false,
                };
                if still_paid {
                    continue;
                }
            } else if let Some((txid, vout, value)) = wallet.largest_payment_to(address)
                && value >= c.amount_sat
            {
                self.contracts.update(&c.contract_id, |c| {
                    c.state = State::Active;
                    c.txid = Some(txid);
                    c.vout = Some(vout);
                    c.start_height = Some(tip);
                })?;
                info!(contract = %c.contract_id.short(), %txid, "found the payment of a contract without notice; active");
                continue;
            }
            // Mark first, then delete: a notice racing with us now sees the
            // contract expired instead of being overwritten after acceptance.
            let mut was = None;
            self.contracts.update(&c.contract_id, |stored| {
                was = Some(stored.state);
                if stored.state == c.state {
                    stored.state = State::ExpiredUnpaid;
                    // The shard list is only needed while shards exist.
                    stored.shards.clear();
                }
            })?;
            if was != Some(c.state) {
                continue;
            }
            let ids: Vec<ShardId> = c.shards.iter().map(|s| s.id).collect();
            let freed = store
                .delete(&c.peer, &c.contract_id, &ids)
                .map_err(|e| crate::Error::Internal(e.message))?;
            info!(contract = %c.contract_id.short(), shards = freed, deadline = c.deadline_height, tip, "unpaid contract expired; shards deleted");
            expired += 1;
        }
        Ok(expired)
    }

    pub fn spawn_gc(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let worker = this.clone();
                match tokio::task::spawn_blocking(move || worker.collect_unpaid()).await {
                    Ok(Err(e)) => warn!("contract GC failed: {e}"),
                    Err(e) => warn!("contract GC panicked: {e}"),
                    Ok(Ok(_)) => {}
                }
            }
        })
    }
}
