//! Storage contracts: one per provider per put, on both sides of it.
//!
//! The client and the provider each keep their own record in sled (two
//! trees, so a node that is both never confuses the roles). A contract's
//! state only moves forward: proposed → accepted → paid → active, or to
//! rejected / expired.

use bdk_wallet::bitcoin::{Address, Txid};
use libp2p::PeerId;
use serde::{Deserialize, Serialize};

use crate::db::{self, Tree};
use crate::error::Result;
use crate::ids::{ContractId, FileId, ShardId, as_text, checked_address};
use crate::protocol::{Proposal, ShardSpec};

/// A contract's side and life-cycle state are the RPC's enums, defined once
/// in `p2pstore-rpc`; sled stores the same snake_case text the API shows.
pub use p2pstore_rpc::{ContractRole as Role, ContractState as State};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Contract {
    pub contract_id: ContractId,
    pub role: Role,
    /// The other side: the provider for a client, the client for a provider.
    #[serde(with = "as_text")]
    pub peer: PeerId,
    #[serde(default)]
    pub file_id: Option<FileId>,
    pub shards: Vec<ShardSpec>,
    pub bytes: u64,
    pub term_blocks: u32,
    pub price_sat_per_gib_month: u64,
    pub amount_sat: u64,
    #[serde(with = "checked_address")]
    pub payout_address: Address,
    pub deadline_height: u32,
    #[serde(default, with = "as_text::opt")]
    pub txid: Option<Txid>,
    pub vout: Option<u32>,
    pub start_height: Option<u32>,
    pub state: State,
    pub created_at: u64,
}

impl Contract {
    /// A contract just accepted by the provider, as either side records it.
    pub fn accepted(
        role: Role,
        peer: PeerId,
        file_id: Option<FileId>,
        p: &Proposal,
        payout_address: Address,
        deadline_height: u32,
    ) -> Self {
        Contract {
            contract_id: p.contract_id,
            role,
            peer,
            file_id,
            bytes: p.bytes(),
            shards: p.shards.clone(),
            term_blocks: p.term_blocks,
            price_sat_per_gib_month: p.price_sat_per_gib_month,
            amount_sat: p.amount_sat,
            payout_address,
            deadline_height,
            txid: None,
            vout: None,
            start_height: None,
            state: State::Accepted,
            created_at: crate::provider::store::now_secs(),
        }
    }

    pub fn expiry_height(&self) -> Option<u32> {
        self.start_height
            .map(|h| h.saturating_add(self.term_blocks))
    }

    pub fn holds(&self, id: &ShardId, size: u64) -> bool {
        self.shards.iter().any(|s| s.id == *id && s.size == size)
    }

    pub fn to_rpc(&self) -> p2pstore_rpc::ContractInfo {
        p2pstore_rpc::ContractInfo {
            contract_id: self.contract_id.to_string(),
            role: self.role,
            peer_id: self.peer.to_string(),
            file_id: self.file_id.map(|f| f.to_string()),
            shards: self.shards.len() as u64,
            bytes: self.bytes,
            amount_sat: self.amount_sat,
            price_sat_per_gib_month: self.price_sat_per_gib_month,
            term_blocks: self.term_blocks,
            payout_address: self.payout_address.to_string(),
            txid: self.txid.map(|t| t.to_string()),
            vout: self.vout,
            state: self.state,
            deadline_height: self.deadline_height,
            expiry_height: self.expiry_height(),
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

    pub fn remove(&self, id: &ContractId) -> Result<()> {
        self.tree.remove(id)
    }

    pub fn list(&self) -> Result<Vec<Contract>> {
        let mut out = self.tree.values()?;
        out.sort_by_key(|c| c.created_at);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_round_trip_and_update() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let store = ContractStore::open(&db, Role::Client).unwrap();
        let other_side = ContractStore::open(&db, Role::Provider).unwrap();
        let shard = ShardId::from_bytes([3; 32]);
        let c = Contract {
            contract_id: ContractId::from_bytes([1; 32]),
            role: Role::Client,
            peer: PeerId::random(),
            file_id: Some(FileId::from_bytes([2; 32])),
            shards: vec![ShardSpec {
                id: shard,
                size: 10,
            }],
            bytes: 10,
            term_blocks: 100,
            price_sat_per_gib_month: 1000,
            amount_sat: 1000,
            payout_address: "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"
                .parse::<Address<_>>()
                .unwrap()
                .assume_checked(),
            deadline_height: 50,
            txid: None,
            vout: None,
            start_height: None,
            state: State::Accepted,
            created_at: 1,
        };
        store.put(&c).unwrap();
        assert_eq!(store.get(&c.contract_id).unwrap(), Some(c.clone()));
        assert!(other_side.get(&c.contract_id).unwrap().is_none());
        let updated = store
            .update(&c.contract_id, |c| {
                c.state = State::Active;
                c.start_height = Some(60);
            })
            .unwrap()
            .unwrap();
        assert_eq!(updated.expiry_height(), Some(160));
        assert!(updated.holds(&shard, 10) && !updated.holds(&shard, 11));
        assert_eq!(store.list().unwrap().len(), 1);
        assert_eq!(updated.to_rpc().state, p2pstore_rpc::ContractState::Active);
    }
}
