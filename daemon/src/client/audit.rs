//! Audits: the client asks providers for random leaves of the shards they
//! hold for it, checks each Merkle proof against the shard id it already
//! has, and keeps what it learns: a score per provider and the shards that
//! failed. Health and repair read this book; nothing else is trusted.
//!
//! Outcomes stay distinct. A wrong proof, a leaf reported missing, or a
//! contract the provider no longer knows is a **failure**, and lowers the
//! score. A timeout, no connection or a refusal to answer now is
//! **unknown**: it leaves the score alone, and only a run of
//! [`AuditPolicy::offline_after`] unknown audits in a row marks the
//! provider offline.
//!
//! The score is Storj's alpha/beta reputation: every audited shard is one
//! observation, `alpha ← λ·alpha + w·pass`, `beta ← λ·beta + w·fail`, and
//! the score is `alpha / (alpha + beta)`. A provider starts at the steady
//! state of a perfect record (`alpha = w / (1 − λ)`), so each failure in a
//! row multiplies its score by about λ.

use std::collections::{BTreeMap, HashMap};

use futures::StreamExt;
use libp2p::PeerId;
use p2pstore_rpc::{AuditCounts, AuditRecord, EventKind, ProviderAudit, ProviderAudits};
use rand::seq::{IndexedRandom, index};
use serde::{Deserialize, Serialize};
use tracing::{Instrument, debug, info_span, warn};

use super::manifest::{Manifest, ShardRef};
use crate::db::{Tree, trees};
use crate::error::Result;
use crate::ids::{ContractId, ShardId, as_text};
use crate::merkle;
use crate::network::{Client as NetClient, PeerError};
use crate::protocol::{AuditAnswer, Challenge, MAX_AUDIT_CHALLENGES, WireErrorKind};
use crate::provider::store::now_secs;

/// λ: how fast old audits are forgotten (Storj's default).
pub const SCORE_LAMBDA: f64 = 0.95;
/// w: the weight of one audited shard.
pub const SCORE_WEIGHT: f64 = 1.0;
/// A new provider's alpha: the steady state of a perfect record, so one
/// early failure costs it what it would cost a veteran (score × λ).
pub const INITIAL_ALPHA: f64 = SCORE_WEIGHT / (1.0 - SCORE_LAMBDA);
/// Shards of each provider a background round audits, at random.
pub const SHARDS_PER_ROUND: usize = 4;
/// Audits of each provider kept in its history.
pub const HISTORY_LEN: usize = 20;
/// Providers audited at once; each one's requests go one at a time.
const CONCURRENT_PROVIDERS: usize = 16;
/// A provider refusing an audit as over our budget (`AUDITS_PER_MINUTE`)
/// is asked again after this pause, this many times, before the rest of
/// that request counts as unknown: a long explicit audit paces itself.
const RATE_LIMIT_PAUSE: std::time::Duration = std::time::Duration::from_millis(600);
const RATE_LIMIT_RETRIES: u32 = 5;

/// How the client audits and judges, from config.
#[derive(Debug, Clone, Copy)]
pub struct AuditPolicy {
    /// Leaves challenged per audited shard (all of them, if fewer).
    pub leaves_per_shard: u32,
    /// Below this score a provider gets no new shards and its shards are
    /// moved.
    pub min_score: f64,
    /// Unknown audits in a row after which a provider counts as offline.
    pub offline_after: u32,
}

/// What the client knows of one provider's audits, persisted.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ProviderRecord {
    pub alpha: f64,
    pub beta: f64,
    /// Challenges over all audits, by outcome.
    pub passed: u64,
    pub failed: u64,
    pub unknown: u64,
    /// Audits in a row that got no answer at all.
    pub unknown_in_a_row: u32,
    pub last_audit_at: Option<u64>,
    /// The latest audits, oldest first.
    pub history: Vec<AuditEvent>,
}

impl Default for ProviderRecord {
    fn default() -> Self {
        ProviderRecord {
            alpha: INITIAL_ALPHA,
            beta: 0.0,
            passed: 0,
            failed: 0,
            unknown: 0,
            unknown_in_a_row: 0,
            last_audit_at: None,
            history: Vec::new(),
        }
    }
}

impl ProviderRecord {
    pub fn score(&self) -> f64 {
        let total = self.alpha + self.beta;
        if total > 0.0 { self.alpha / total } else { 1.0 }
    }

    fn observe(&mut self, passed: bool) {
        let v = if passed { 1.0 } else { 0.0 };
        self.alpha = SCORE_LAMBDA * self.alpha + SCORE_WEIGHT * v;
        self.beta = SCORE_LAMBDA * self.beta + SCORE_WEIGHT * (1.0 - v);
    }
}

/// One audit of one provider.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AuditEvent {
    pub at: u64,
    pub challenges: u32,
    pub passed: u32,
    pub failed: u32,
    pub unknown: u32,
    /// The score after this audit.
    pub score: f64,
}

impl AuditEvent {
    pub fn counts(&self) -> AuditCounts {
        AuditCounts {
            challenges: self.challenges as u64,
            passed: self.passed as u64,
            failed: self.failed as u64,
            unknown: self.unknown as u64,
            score: self.score,
        }
    }
}

/// A shard a provider failed to prove.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FailedShard {
    #[serde(with = "as_text")]
    pub provider: PeerId,
    pub at: u64,
}

/// What the latest audits say of one shard where the manifest puts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShardStatus {
    Good,
    /// Its provider has been silent for too many audits: maybe back soon.
    Offline,
    /// Proven gone: it failed an audit, or its provider's score fell below
    /// the minimum. Repaired even when the segment has margin left.
    Lost,
}

/// The client's audit results, in sled.
#[derive(Clone)]
pub struct AuditBook {
    providers: Tree<PeerId, ProviderRecord>,
    failed: Tree<ShardId, FailedShard>,
    pub policy: AuditPolicy,
}

impl AuditBook {
    pub fn open(db: &sled::Db, policy: AuditPolicy) -> Result<Self> {
        Ok(AuditBook {
            providers: Tree::open(db, trees::AUDITS)?,
            failed: Tree::open(db, trees::FAILED_SHARDS)?,
            policy,
        })
    }

    /// A provider's record; a stranger's is a perfect one.
    pub fn record(&self, peer: &PeerId) -> ProviderRecord {
        self.providers.get(peer).ok().flatten().unwrap_or_default()
    }

    /// Whether a provider may get new shards: its score is at least the
    /// minimum. An offline one is not asked anyway: it made no offer.
    pub fn eligible(&self, peer: &PeerId) -> bool {
        self.record(peer).score() >= self.policy.min_score
    }

    fn provider_status(&self, peer: &PeerId) -> ShardStatus {
        let r = self.record(peer);
        if r.score() < self.policy.min_score {
            ShardStatus::Lost
        } else if r.unknown_in_a_row >= self.policy.offline_after {
            ShardStatus::Offline
        } else {
            ShardStatus::Good
        }
    }

    /// The status of every shard of a manifest, by segment, from local
    /// state only.
    pub fn statuses(&self, m: &Manifest) -> Vec<Vec<ShardStatus>> {
        let by_provider: HashMap<PeerId, ShardStatus> = m
            .providers()
            .into_iter()
            .map(|p| (p, self.provider_status(&p)))
            .collect();
        m.segments
            .iter()
            .map(|s| {
                s.shards
                    .iter()
                    .map(|r| {
                        let failed = self
                            .failed
                            .get(&r.shard_id)
                            .ok()
                            .flatten()
                            .is_some_and(|f| f.provider == r.provider);
                        match by_provider.get(&r.provider) {
                            _ if failed => ShardStatus::Lost,
                            Some(s) => *s,
                            None => ShardStatus::Good,
                        }
                    })
                    .collect()
            })
            .collect()
    }

    /// The least recent of the latest audits of a file's providers: every
    /// provider's health is at least this fresh. None until all were audited.
    pub fn last_audit(&self, m: &Manifest) -> Option<u64> {
        m.providers()
            .iter()
            .map(|p| self.record(p).last_audit_at)
            .try_fold(u64::MAX, |acc, t| t.map(|t| acc.min(t)))
            .filter(|&t| t != u64::MAX)
    }

    /// Whether `peer` has passed its audits: its score is at or above
    /// the minimum and no shard it holds stands failed. Only such a
    /// provider is paid another period.
    pub fn passing(&self, peer: &PeerId) -> bool {
        self.eligible(peer)
            && !self
                .failed
                .iter()
                .any(|f| f.is_ok_and(|(_, f)| f.provider == *peer))
    }

    /// Marks a shard lost at `provider` without an audit: its contract
    /// ended, so the provider will delete it. The repair moves it.
    pub fn mark_lost(&self, id: &ShardId, provider: PeerId) {
        let _ = self.failed.insert_lazy(
            id,
            &FailedShard {
                provider,
                at: crate::provider::store::now_secs(),
            },
        );
    }

    /// Forgets a shard's failure once it has a new home (or is deleted).
    pub fn forget_shard(&self, id: &ShardId) {
        let _ = self.failed.remove_lazy(id);
    }

    pub fn list(&self) -> Result<Vec<(PeerId, ProviderRecord)>> {
        self.providers.iter().collect()
    }

    /// Records one audit of `peer` and returns the provider's new record.
    fn apply(&self, peer: &PeerId, outcome: &Outcome) -> Result<ProviderRecord> {
        let at = now_secs();
        for (id, ok) in &outcome.shards {
            match ok {
                Some(false) => self.failed.insert_lazy(
                    id,
                    &FailedShard {
                        provider: *peer,
                        at,
                    },
                )?,
                // A later pass clears an earlier failure at the same place.
                Some(true) if self.failed.get(id)?.is_some_and(|f| f.provider == *peer) => {
                    self.failed.remove_lazy(id)?;
                }
                Some(true) => {}
                None => {}
            }
        }
        self.failed.flush()?;
        let update = |r: &mut ProviderRecord| {
            for ok in outcome.shards.values().flatten() {
                r.observe(*ok);
            }
            r.passed += outcome.passed as u64;
            r.failed += outcome.failed as u64;
            r.unknown += outcome.unknown as u64;
            if outcome.passed + outcome.failed > 0 {
                r.unknown_in_a_row = 0;
            } else {
                r.unknown_in_a_row = r.unknown_in_a_row.saturating_add(1);
            }
            r.last_audit_at = Some(at);
            let event = AuditEvent {
                at,
                challenges: outcome.passed + outcome.failed + outcome.unknown,
                passed: outcome.passed,
                failed: outcome.failed,
                unknown: outcome.unknown,
                score: r.score(),
            };
            r.history.push(event);
            let excess = r.history.len().saturating_sub(HISTORY_LEN);
            r.history.drain(..excess);
        };
        self.providers.upsert_lazy(peer, update)?;
        self.providers.flush()?;
        Ok(self.record(peer))
    }
}

/// One shard to audit where the manifest puts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Held {
    contract_id: ContractId,
    shard_id: ShardId,
    size: u64,
}

/// Which shards of which providers to audit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditScope {
    /// Every shard of these manifests (an explicit audit).
    Every,
    /// [`SHARDS_PER_ROUND`] random shards per provider (the background).
    Sample,
}

/// The challenges for one provider, as requests of at most
/// [`MAX_AUDIT_CHALLENGES`], each for one contract.
fn plan(
    held: &[Held],
    scope: AuditScope,
    leaves_per_shard: u32,
) -> Vec<(ContractId, Vec<Challenge>)> {
    // ThreadRng is a CSPRNG (ChaCha, seeded and reseeded from the OS): a
    // provider cannot guess which leaves come next.
    let mut rng = rand::rng();
    let chosen: Vec<&Held> = match scope {
        AuditScope::Every => held.iter().collect(),
        AuditScope::Sample => held.choose_multiple(&mut rng, SHARDS_PER_ROUND).collect(),
    };
    let mut by_contract: BTreeMap<ContractId, Vec<Challenge>> = BTreeMap::new();
    for h in chosen {
        let leaves = merkle::leaf_count(h.size).min(u32::MAX as u64) as usize;
        let take = (leaves_per_shard as usize).min(leaves);
        for leaf in index::sample(&mut rng, leaves, take) {
            by_contract
                .entry(h.contract_id)
                .or_default()
                .push(Challenge {
                    shard_id: h.shard_id,
                    leaf: leaf as u32,
                });
        }
    }
    by_contract
        .into_iter()
        .flat_map(|(c, all)| {
            all.chunks(MAX_AUDIT_CHALLENGES)
                .map(|chunk| (c, chunk.to_vec()))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// What one audit of one provider found.
#[derive(Debug, Default)]
struct Outcome {
    passed: u32,
    failed: u32,
    unknown: u32,
    /// Per shard: Some(true) every answered challenge passed, Some(false)
    /// one failed, None no answer.
    shards: BTreeMap<ShardId, Option<bool>>,
}

impl Outcome {
    /// The audit as an event: passed only when every challenge was
    /// proved; silence fails it too (the score counts it apart).
    fn event(&self, peer: &PeerId) -> EventKind {
        if self.failed == 0 && self.unknown == 0 {
            return EventKind::AuditPassed {
                peer_id: peer.to_string(),
                challenges: u64::from(self.passed),
            };
        }
        EventKind::AuditFailed {
            peer_id: peer.to_string(),
            failed: u64::from(self.failed),
            unanswered: u64::from(self.unknown),
        }
    }

    fn note(&mut self, shard: ShardId, ok: Option<bool>) {
        match ok {
            Some(true) => self.passed += 1,
            Some(false) => self.failed += 1,
            None => self.unknown += 1,
        }
        let entry = self.shards.entry(shard).or_insert(None);
        *entry = match (*entry, ok) {
            (Some(false), _) | (_, Some(false)) => Some(false),
            (Some(true), _) | (_, Some(true)) => Some(true),
            (None, None) => None,
        };
    }
}

/// Whether a provider's refusal means it lost what it was paid to keep
/// (a failure) or only cannot answer now (unknown).
fn refusal_is_failure(kind: WireErrorKind) -> bool {
    matches!(
        kind,
        WireErrorKind::UnknownContract | WireErrorKind::NotFound | WireErrorKind::Forbidden
    )
}

/// Whether `answer` proves challenge `c` of a shard of `size` bytes (None:
/// a shard the client does not know, which nothing proves). The shard id
/// is the Merkle root the proof must reach.
pub fn proves(c: &Challenge, answer: &AuditAnswer, size: Option<u64>) -> bool {
    match (answer, size) {
        (AuditAnswer::Proof { leaf, path }, Some(size)) => {
            merkle::verify(c.shard_id.as_bytes(), size, c.leaf as u64, leaf, path)
        }
        _ => false,
    }
}

/// Sends one provider its audit, request by request, and checks every
/// answer against the shard ids and sizes the client holds.
async fn audit_provider(
    net: &NetClient,
    peer: PeerId,
    requests: Vec<(ContractId, Vec<Challenge>)>,
    sizes: &HashMap<ShardId, u64>,
) -> Outcome {
    let mut out = Outcome::default();
    for (contract_id, challenges) in requests {
        let mut res = net.audit(peer, contract_id, challenges.clone()).await;
        for _ in 0..RATE_LIMIT_RETRIES {
            match &res {
                Err(PeerError::Refused(e)) if e.kind == WireErrorKind::RateLimited => {
                    tokio::time::sleep(RATE_LIMIT_PAUSE).await;
                    res = net.audit(peer, contract_id, challenges.clone()).await;
                }
                _ => break,
            }
        }
        let answers: Vec<Option<bool>> = match res {
            Ok(answers) => challenges
                .iter()
                .zip(&answers)
                .map(|(c, a)| Some(proves(c, a, sizes.get(&c.shard_id).copied())))
                .collect(),
            Err(PeerError::Refused(e)) if refusal_is_failure(e.kind) => {
                debug!(%peer, "audit refused: {}", e.message);
                vec![Some(false); challenges.len()]
            }
            // Garbage where proofs belong is as good as no proof.
            Err(PeerError::Unexpected(what)) => {
                debug!(%peer, "audit answered with {what}");
                vec![Some(false); challenges.len()]
            }
            Err(e) => {
                debug!(%peer, "audit unanswered: {e}");
                vec![None; challenges.len()]
            }
        };
        for (c, ok) in challenges.iter().zip(answers) {
            out.note(c.shard_id, ok);
        }
    }
    out
}

/// Audits the providers of `manifests` as `scope` says, records the
/// results in `book`, and reports each provider's audit.
pub(super) async fn run(
    net: &NetClient,
    book: &AuditBook,
    events: &crate::events::Events,
    manifests: &[Manifest],
    scope: AuditScope,
) -> Result<Vec<ProviderAudit>> {
    let mut held: BTreeMap<PeerId, Vec<Held>> = BTreeMap::new();
    let mut sizes: HashMap<ShardId, u64> = HashMap::new();
    for r in manifests
        .iter()
        .flat_map(|m| m.segments.iter().flat_map(|s| &s.shards))
    {
        let ShardRef {
            provider,
            contract_id,
            shard_id,
            size,
            ..
        } = *r;
        sizes.insert(shard_id, size);
        held.entry(provider).or_default().push(Held {
            contract_id,
            shard_id,
            size,
        });
    }
    let leaves = book.policy.leaves_per_shard;
    let sizes = &sizes;
    let audits = held.into_iter().map(|(peer, mut shards)| {
        shards.sort();
        shards.dedup();
        let requests = plan(&shards, scope, leaves);
        let span = info_span!("audit", %peer);
        async move {
            let outcome = audit_provider(net, peer, requests, sizes).await;
            (peer, outcome)
        }
        .instrument(span)
    });
    let outcomes: Vec<(PeerId, Outcome)> = futures::stream::iter(audits)
        .buffer_unordered(CONCURRENT_PROVIDERS)
        .collect()
        .await;
    let mut report = Vec::with_capacity(outcomes.len());
    for (peer, o) in outcomes {
        let record = book.apply(&peer, &o)?;
        if o.failed > 0 {
            warn!(%peer, failed = o.failed, score = record.score(), "provider failed an audit");
        }
        events.emit(o.event(&peer));
        // Said once, as it crosses the line, not at every silent audit.
        if o.passed == 0 && o.failed == 0 && record.unknown_in_a_row == book.policy.offline_after {
            events.emit(EventKind::ProviderOffline {
                peer_id: peer.to_string(),
                reason: format!("{} audits in a row unanswered", record.unknown_in_a_row),
            });
        }
        // The record's newest event is this audit.
        report.push(ProviderAudit {
            peer_id: peer.to_string(),
            counts: record
                .history
                .last()
                .map(AuditEvent::counts)
                .unwrap_or_default(),
        });
    }
    report.sort_by(|a, b| a.peer_id.cmp(&b.peer_id));
    Ok(report)
}

impl ProviderRecord {
    pub fn to_rpc(&self, peer: &PeerId, policy: &AuditPolicy) -> ProviderAudits {
        ProviderAudits {
            peer_id: peer.to_string(),
            score: self.score(),
            eligible: self.score() >= policy.min_score,
            offline: self.unknown_in_a_row >= policy.offline_after,
            passed: self.passed,
            failed: self.failed,
            unknown: self.unknown,
            last_audit_at: self.last_audit_at,
            history: self
                .history
                .iter()
                .map(|e| AuditRecord {
                    at: e.at,
                    counts: e.counts(),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_cost_score_and_unknowns_do_not() {
        let mut r = ProviderRecord::default();
        assert_eq!(r.score(), 1.0);
        r.observe(true);
        assert!((r.score() - 1.0).abs() < 1e-12);
        r.observe(false);
        let one = r.score();
        assert!((one - SCORE_LAMBDA).abs() < 1e-9, "{one}");
        for _ in 0..4 {
            r.observe(false);
        }
        assert!(r.score() < 0.8, "five failures in a row: {}", r.score());
        // Passes earn it back, slowly.
        for _ in 0..100 {
            r.observe(true);
        }
        assert!(r.score() > 0.99);
    }

    #[test]
    fn plans_respect_the_limits() {
        let held: Vec<Held> = (0..10u8)
            .map(|i| Held {
                contract_id: ContractId::from_bytes([i % 2; 32]),
                shard_id: ShardId::from_bytes([i; 32]),
                size: 100 * merkle::LEAF_SIZE,
            })
            .collect();
        let all = plan(&held, AuditScope::Every, 50);
        let total: usize = all.iter().map(|(_, c)| c.len()).sum();
        assert_eq!(total, 500);
        for (contract, chunk) in &all {
            assert!(chunk.len() <= MAX_AUDIT_CHALLENGES);
            let mut distinct: Vec<_> = chunk.clone();
            distinct.sort_by_key(|c| (c.shard_id, c.leaf));
            distinct.dedup();
            assert_eq!(distinct.len(), chunk.len());
            for c in chunk {
                let h = held.iter().find(|h| h.shard_id == c.shard_id).unwrap();
                assert_eq!(h.contract_id, *contract);
                assert!((c.leaf as u64) < 100);
            }
        }
        let some = plan(&held, AuditScope::Sample, 16);
        let shards: std::collections::HashSet<_> = some
            .iter()
            .flat_map(|(_, c)| c.iter().map(|c| c.shard_id))
            .collect();
        assert_eq!(shards.len(), SHARDS_PER_ROUND);
        // A shard of 3 leaves is audited at all 3, once each.
        let small = [Held {
            size: 3 * merkle::LEAF_SIZE - 1,
            ..held[0]
        }];
        let p = plan(&small, AuditScope::Every, 16);
        let mut leaves: Vec<u32> = p[0].1.iter().map(|c| c.leaf).collect();
        leaves.sort();
        assert_eq!(leaves, vec![0, 1, 2]);
    }
}
