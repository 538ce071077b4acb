//! The typed peer API: one method per request a client sends a provider,
//! each returning its own result type or a [`PeerError`]. The raw
//! request/response enums are matched here and nowhere else, so an answer
//! that does not fit its question is caught in one place.

use std::future::Future;
use std::time::Duration;

use libp2p::PeerId;

use super::Client;
use crate::error::Error;
use crate::ids::{ContractId, ShardId};
use crate::protocol::*;

/// Why a request to a peer did not get the answer it asked for.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PeerError {
    /// No answer: dial failure, timeout, reset stream, or our network task
    /// is gone.
    #[error("{0}")]
    Unreachable(String),
    /// The peer answered with a refusal.
    #[error("{}", sanitize(&.0.message))]
    Refused(WireError),
    /// The peer answered with something that is not an answer to this
    /// request.
    #[error("unexpected answer to {0}")]
    Unexpected(&'static str),
}

impl PeerError {
    /// The refusal's kind, if the peer refused.
    pub fn refusal(&self) -> Option<WireErrorKind> {
        match self {
            PeerError::Refused(e) => Some(e.kind),
            _ => None,
        }
    }

    /// The peer refused for want of room, not for anything about the
    /// request: trying again later can succeed.
    pub fn is_busy(&self) -> bool {
        matches!(
            self.refusal(),
            Some(WireErrorKind::Unavailable | WireErrorKind::RateLimited)
        )
    }

    /// The library error for a failed request to `peer`: its text is
    /// sanitized, since a peer wrote it.
    pub fn at(self, peer: PeerId) -> Error {
        match self {
            PeerError::Unreachable(reason) => Error::ProviderUnreachable { peer, reason },
            other => Error::ProviderRejected {
                peer,
                reason: other.to_string(),
            },
        }
    }
}

/// Attempts at a request a provider answers busy (over our share of its
/// workers, or every slot taken) before its refusal stands.
pub const BUSY_ATTEMPTS: u32 = 5;
/// Wait before the first retry of a busy answer; doubled each time
/// (0.25 + 0.5 + 1 + 2 s in all), so a flood at the provider is waited
/// out rather than failing an honest transfer.
pub const BUSY_BACKOFF: Duration = Duration::from_millis(250);

/// Runs `call` again, with backoff, while the peer answers that it is
/// busy; any other outcome is returned as it is.
pub async fn retry_busy<T, F, Fut>(mut call: F) -> Result<T, PeerError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, PeerError>>,
{
    let mut wait = BUSY_BACKOFF;
    for _ in 1..BUSY_ATTEMPTS {
        match call().await {
            Err(e) if e.is_busy() => {
                tracing::debug!("peer busy, retrying in {wait:?}: {e}");
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
            other => return other,
        }
    }
    call().await
}

/// Unwraps the one response variant a request expects.
macro_rules! expect {
    ($resp:expr, $what:literal, $ok:pat => $val:expr, $err:path) => {
        match $resp? {
            $ok => Ok($val),
            $err(e) => Err(PeerError::Refused(e)),
            #[allow(unreachable_patterns)]
            _ => Err(PeerError::Unexpected($what)),
        }
    };
}

impl Client {
    /// What a provider offers now.
    pub async fn offer(&self, peer: PeerId) -> Result<Offer, PeerError> {
        expect!(self.control(peer, ControlRequest::GetOffer).await, "an offer request",
            ControlResponse::Offer(o) => o, ControlResponse::Error)
    }

    /// Proposes more allowance (or a new contract); the quote must name
    /// the proposed contract.
    pub async fn propose(&self, peer: PeerId, p: Proposal) -> Result<Quote, PeerError> {
        let id = p.contract_id;
        let quote = expect!(self.control(peer, ControlRequest::Propose(p)).await, "a proposal",
            ControlResponse::Quote(q) => q, ControlResponse::Error)?;
        if quote.contract_id != id {
            return Err(PeerError::Unexpected("a proposal (another contract id)"));
        }
        Ok(quote)
    }

    /// Tells a provider that an output pays its contract; the answer is
    /// the contract as the provider now holds it.
    pub async fn payment_notice(
        &self,
        peer: PeerId,
        notice: PaymentNotice,
    ) -> Result<ContractStatus, PeerError> {
        let id = notice.contract_id;
        let status = expect!(self.control(peer, ControlRequest::PaymentNotice(notice)).await,
            "a payment notice", ControlResponse::Paid(s) => s, ControlResponse::Error)?;
        if status.contract_id != id {
            return Err(PeerError::Unexpected(
                "a payment notice (another contract id)",
            ));
        }
        Ok(status)
    }

    /// Deletes shards of a contract; returns how many the provider
    /// deleted, and their bytes.
    pub async fn delete(
        &self,
        peer: PeerId,
        contract_id: ContractId,
        shard_ids: Vec<ShardId>,
    ) -> Result<(u64, u64), PeerError> {
        let req = ControlRequest::Delete {
            contract_id,
            shard_ids,
        };
        expect!(self.control(peer, req).await, "a delete",
            ControlResponse::Deleted { count, bytes } => (count, bytes), ControlResponse::Error)
    }

    /// One page of the shards the provider holds under a contract, after
    /// `after`, and whether more follow. A page must be in id order, past
    /// `after`, and within [`MAX_LIST_SHARDS`], so a walk always ends.
    pub async fn list(
        &self,
        peer: PeerId,
        contract_id: ContractId,
        after: Option<ShardId>,
    ) -> Result<(Vec<(ShardId, u64)>, bool), PeerError> {
        let req = ControlRequest::List { contract_id, after };
        let (shards, more) = expect!(self.control(peer, req).await, "a list",
            ControlResponse::Listed { shards, more } => (shards, more), ControlResponse::Error)?;
        let ordered = shards.len() <= MAX_LIST_SHARDS
            && shards.windows(2).all(|w| w[0].0 < w[1].0)
            && match (after, shards.first()) {
                (Some(a), Some((first, _))) => a < *first,
                _ => true,
            }
            && !(more && shards.is_empty());
        if !ordered {
            return Err(PeerError::Unexpected("a list (out of order or too long)"));
        }
        Ok((shards, more))
    }

    /// The provider's answers to an audit, one per challenge, in order;
    /// not yet verified.
    pub async fn audit(
        &self,
        peer: PeerId,
        contract_id: ContractId,
        challenges: Vec<Challenge>,
    ) -> Result<Vec<AuditAnswer>, PeerError> {
        let n = challenges.len();
        let req = ControlRequest::Audit {
            contract_id,
            challenges,
        };
        let answers = expect!(self.control(peer, req).await, "an audit",
            ControlResponse::Audited { answers } => answers, ControlResponse::Error)?;
        if answers.len() != n {
            return Err(PeerError::Unexpected("an audit (wrong number of answers)"));
        }
        Ok(answers)
    }

    /// The contract as the provider holds it.
    pub async fn contract_status(
        &self,
        peer: PeerId,
        contract_id: ContractId,
    ) -> Result<ContractStatus, PeerError> {
        let status = expect!(self.control(peer, ControlRequest::Contract { contract_id }).await,
            "a contract request", ControlResponse::Contract(s) => s, ControlResponse::Error)?;
        if status.contract_id != contract_id {
            return Err(PeerError::Unexpected(
                "a contract request (another contract id)",
            ));
        }
        Ok(status)
    }

    /// Hands a provider our signed index pointer to republish; the
    /// sequence number it now holds.
    pub async fn publish_pointer(&self, peer: PeerId, record: Vec<u8>) -> Result<u64, PeerError> {
        expect!(self.control(peer, ControlRequest::PublishPointer { record }).await,
            "a pointer", ControlResponse::PointerKept { seq } => seq, ControlResponse::Error)
    }

    /// Stores one shard under a contract; returns the provider's receipt,
    /// not yet verified.
    pub async fn store(
        &self,
        peer: PeerId,
        contract_id: ContractId,
        shard_id: ShardId,
        data: impl Into<bytes::Bytes>,
    ) -> Result<Receipt, PeerError> {
        let req = ShardRequest::Store {
            contract_id,
            shard_id,
            data: data.into(),
        };
        expect!(self.shard(peer, req).await, "a store",
            ShardResponse::Stored(r) => r, ShardResponse::Error)
    }

    /// A shard's bytes, not yet checked against its id.
    pub async fn fetch(&self, peer: PeerId, shard_id: ShardId) -> Result<Vec<u8>, PeerError> {
        expect!(self.shard(peer, ShardRequest::Fetch { shard_id }).await, "a fetch",
            ShardResponse::Data(d) => d, ShardResponse::Error)
    }
}
