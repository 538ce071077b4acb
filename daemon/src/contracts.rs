//! Storage contracts: one running contract per client–provider pair, as
//! each side records it.
//!
//! A contract holds a byte allowance at a price fixed when it was formed,
//! paid period by period (`period_blocks`) up to `paid_through_height`,
//! until `term_end_height`. Puts raise the allowance by revisions, each
//! prepaid before its bytes are uploaded; the period payment names the
//! allowance it pays for, so an rm stops being paid from the next period
//! on. Both sides keep their record in sled (two trees, so a node that is
//! both never confuses the roles); the provider keeps the shards it holds
//! under a contract in a tree of their own ([`crate::db::trees::CONTRACT_SHARDS`]).

use bdk_wallet::bitcoin::{Address, Txid};
use libp2p::PeerId;
use serde::{Deserialize, Serialize};

use crate::db::{self, Tree};
use crate::error::Result;
use crate::ids::{ContractId, as_text, checked_address};

/// A contract's side and life-cycle state are the RPC's enums, defined once
/// in `p2pstore-rpc`; sled stores the same snake_case text the API shows.
pub use p2pstore_rpc::{ContractRole as Role, ContractState as State, PaymentKind};

/// One transaction output that paid (or, for the client, was sent to pay)
/// a contract.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PaymentRecord {
    #[serde(with = "as_text")]
    pub txid: Txid,
    pub vout: u32,
    pub amount_sat: u64,
    pub kind: PaymentKind,
    /// The paid-through height this payment brought the contract to.
    pub through_height: u32,
    /// Provider: whether it has the confirmations it needs to be final.
    #[serde(default)]
    pub final_: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Contract {
    pub contract_id: ContractId,
    pub role: Role,
    /// The other side: the provider for a client, the client for a provider.
    #[serde(with = "as_text")]
    pub peer: PeerId,
    pub price_sat_per_gib_month: u64,
    pub period_blocks: u32,
    /// The height it was formed at; periods count from here.
    pub start_height: u32,
    pub term_end_height: u32,
    /// Bytes paid for (or, for the client, to be paid for) this period.
    pub allowance_bytes: u64,
    pub paid_through_height: u32,
    #[serde(with = "checked_address")]
    pub payout_address: Address,
    /// Oldest first.
    pub payments: Vec<PaymentRecord>,
    pub state: State,
    pub created_at: u64,
}

impl Contract {
    /// Sats paid (or received) so far, over every recorded payment.
    pub fn paid_sat(&self) -> u64 {
        self.payments
            .iter()
            .fold(0u64, |a, p| a.saturating_add(p.amount_sat))
    }

    /// Whether this output already paid this contract.
    pub fn has_payment(&self, txid: &Txid, vout: u32) -> bool {
        self.payments
            .iter()
            .any(|p| p.txid == *txid && p.vout == vout)
    }

    /// Whether the contract still runs (holds data, may be paid).
    pub fn is_live(&self) -> bool {
        matches!(self.state, State::Active | State::Provisional)
    }

    /// The next period payment, if the contract runs past its paid-through
    /// height: (due height, amount) for `renew_before` blocks of notice.
    pub fn next_payment(&self, renew_before: u32) -> Option<(u32, u64)> {
        if !self.is_live() || self.paid_through_height >= self.term_end_height {
            return None;
        }
        let amount = crate::protocol::payment_amount(
            self.price_sat_per_gib_month,
            self.allowance_bytes,
            self.period_blocks,
        )?;
        Some((
            self.paid_through_height.saturating_sub(renew_before),
            amount,
        ))
    }

    pub fn to_rpc(&self, stored_bytes: u64, renew_before: u32) -> p2pstore_rpc::ContractInfo {
        let next = self.next_payment(renew_before);
        p2pstore_rpc::ContractInfo {
            contract_id: self.contract_id.to_string(),
            role: self.role,
            peer_id: self.peer.to_string(),
            state: self.state,
            price_sat_per_gib_month: self.price_sat_per_gib_month,
            allowance_bytes: self.allowance_bytes,
            stored_bytes,
            period_blocks: self.period_blocks,
            start_height: self.start_height,
            paid_through_height: self.paid_through_height,
            term_end_height: self.term_end_height,
            paid_sat: self.paid_sat(),
            next_payment_height: next.map(|n| n.0),
            next_payment_sat: next.map(|n| n.1),
            payout_address: self.payout_address.to_string(),
            payment_txids: self.payments.iter().map(|p| p.txid.to_string()).collect(),
            period_payments: self
                .payments
                .iter()
                .filter(|p| p.kind == PaymentKind::Period)
                .count() as u64,
        }
    }
}

/// One side's contracts, keyed by contract id.
#[derive(Clone)]
pub struct ContractStore {
    tree: Tree<ContractId, Contract>,
}

impl ContractStore {
    pub fn open(db: &sled::Db, role: Role) -> Result<Self> {
        let name = match role {
            Role::Client => db::trees::CLIENT_CONTRACTS,
            Role::Provider => db::trees::PROVIDER_CONTRACTS,
        };
        Ok(ContractStore {
            tree: Tree::open(db, name)?,
        })
    }

    /// Durable before it returns.
    pub fn put(&self, c: &Contract) -> Result<()> {
        self.tree.insert(&c.contract_id, c)
    }

    pub fn get(&self, id: &ContractId) -> Result<Option<Contract>> {
        self.tree.get(id)
    }

    /// Applies `f` to a stored contract and saves it atomically; `f` may
    /// run more than once. None if unknown.
    pub fn update(
        &self,
        id: &ContractId,
        f: impl FnMut(&mut Contract),
    ) -> Result<Option<Contract>> {
        self.tree.update(id, f)
    }

    pub fn list(&self) -> Result<Vec<Contract>> {
        let mut out = self.tree.values()?;
        out.sort_by_key(|c| c.created_at);
        Ok(out)
    }

    /// No contract, in any state.
    pub fn is_empty(&self) -> bool {
        self.tree.is_empty()
    }

    /// Moves whenever a contract may have changed.
    pub fn changes(&self) -> u64 {
        self.tree.changes()
    }

    /// The running contract with `peer`, if there is one.
    pub fn live_with(&self, peer: &PeerId) -> Result<Option<Contract>> {
        Ok(self
            .tree
            .values()?
            .into_iter()
            .find(|c| c.peer == *peer && c.is_live()))
    }
}

/// A contract for tests and fuzz seeds.
#[cfg(any(test, feature = "fuzz"))]
impl Contract {
    pub fn sample() -> Contract {
        Contract {
            contract_id: ContractId::from_bytes([1; 32]),
            role: Role::Client,
            peer: PeerId::random(),
            price_sat_per_gib_month: 30_000,
            period_blocks: 144,
            start_height: 100,
            term_end_height: 1000,
            allowance_bytes: 1 << 30,
            paid_through_height: 244,
            payout_address: "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"
                .parse::<Address<_>>()
                .expect("a valid address")
                .assume_checked(),
            payments: vec![],
            state: State::Active,
            created_at: 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_round_trip_update_and_next_payment() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let store = ContractStore::open(&db, Role::Client).unwrap();
        let other_side = ContractStore::open(&db, Role::Provider).unwrap();
        let c = Contract::sample();
        store.put(&c).unwrap();
        assert_eq!(store.get(&c.contract_id).unwrap(), Some(c.clone()));
        assert!(other_side.get(&c.contract_id).unwrap().is_none());
        assert_eq!(
            store.live_with(&c.peer).unwrap().map(|c| c.contract_id),
            Some(c.contract_id)
        );
        // 1 GiB for a day at 30,000 sat/GiB/month, due 10 blocks early.
        assert_eq!(c.next_payment(10), Some((234, 1000)));
        let txid: Txid = "a".repeat(64).parse().unwrap();
        let updated = store
            .update(&c.contract_id, |c| {
                c.payments.push(PaymentRecord {
                    txid,
                    vout: 1,
                    amount_sat: 1000,
                    kind: PaymentKind::Period,
                    through_height: 388,
                    final_: false,
                });
                c.paid_through_height = 1000;
            })
            .unwrap()
            .unwrap();
        assert!(updated.has_payment(&txid, 1) && !updated.has_payment(&txid, 0));
        assert_eq!(updated.paid_sat(), 1000);
        // Paid to the term's end: nothing more is due.
        assert_eq!(updated.next_payment(10), None);
        let rpc = updated.to_rpc(5, 10);
        assert_eq!(rpc.payment_txids, vec![txid.to_string()]);
        assert_eq!(rpc.stored_bytes, 5);
        store
            .update(&c.contract_id, |c| c.state = State::Lapsed)
            .unwrap();
        assert!(store.live_with(&c.peer).unwrap().is_none());
    }
}
