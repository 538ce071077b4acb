//! Keeping files at their redundancy level: health and repair.
//!
//! Health is what the latest audits say ([`super::audit`]), read from local
//! state: a shard is good unless it failed an audit, its provider's score
//! fell below the minimum (both: lost), or its provider has been silent for
//! too many audits (offline). A segment is rebuilt from any K good shards:
//! the missing ones are re-encoded (Reed-Solomon is deterministic, so they
//! get their old ids), stored at new providers under allowance bought as a
//! put buys it ([`super::pipeline`]), and the manifest entry is swapped in
//! one write, so a crash leaves either the old manifest or the new one,
//! never a mix.

use std::time::Duration;

use libp2p::PeerId;
use p2pstore_rpc::{EventKind, FileEntry, FileStat, Health, RepairResult, SegmentHealth};
use tracing::{info, warn};

use super::ClientService;
use super::audit::{self, AuditScope, ShardStatus};
use super::manifest::Term;
use super::manifest::{Manifest, ShardRef};
use super::pipeline::{Need, contract_with};
use super::put::{no_home, pick_distinct};
use super::uploads::{ShardSpec, Target};
use crate::error::{Error, Result};
use crate::ids::{FileId, ShardId};

/// What a repair covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepairScope {
    /// An explicit repair: audit, then restore every shard not in good
    /// standing, of one file or (None) of every file.
    Full(Option<FileId>),
    /// The background repair, from the latest audits: segments whose good
    /// shards fell below K + margin, so a flaky provider causes no churn,
    /// and shards proven lost wherever they are.
    Background,
}

impl ClientService {
    fn segment_health(m: &Manifest, statuses: &[Vec<ShardStatus>]) -> Vec<SegmentHealth> {
        let mut out: Vec<SegmentHealth> = statuses
            .iter()
            .enumerate()
            .map(|(i, c)| SegmentHealth {
                index: i as u64,
                good: c.iter().filter(|s| **s == ShardStatus::Good).count() as u32,
                needed: m.scheme.k as u32,
                total: m.scheme.n as u32,
            })
            .collect();
        out.sort_by_key(|s| (s.good, s.index));
        out
    }

    fn worst(m: &Manifest, segs: &[SegmentHealth]) -> Health {
        let good = segs.first().map(|s| s.good).unwrap_or(0);
        Health {
            good,
            needed: m.scheme.k as u32,
            total: m.scheme.n as u32,
        }
    }

    pub fn stat(&self, file_id: FileId) -> Result<FileStat> {
        let m = self.manifests.get(&file_id)?;
        m.validate()?;
        let segments = Self::segment_health(&m, &self.audits.statuses(&m));
        Ok(FileStat {
            file_id: m.file_id.to_string(),
            name: m.name.clone(),
            size: m.size,
            created_at: m.created_at,
            redundancy: m.scheme.label(),
            providers: m.providers().iter().map(|p| p.to_string()).collect(),
            health: Self::worst(&m, &segments),
            segments,
            last_audit_at: self.audits.last_audit(&m),
        })
    }

    pub fn ls(&self) -> Result<Vec<FileEntry>> {
        let manifests = self.manifests.files()?;
        Ok(manifests
            .iter()
            .map(|m| FileEntry {
                file_id: m.file_id.to_string(),
                providers: m.providers().iter().map(|p| p.to_string()).collect(),
                name: m.name.clone(),
                size: m.size,
                created_at: m.created_at,
                segments: m.segments.len() as u64,
                redundancy: m.scheme.label(),
                health: Self::worst(m, &Self::segment_health(m, &self.audits.statuses(m))),
                last_audit_at: self.audits.last_audit(m),
            })
            .collect())
    }

    /// One file's manifest, or (None) every file's.
    fn manifests_of(&self, file: Option<FileId>) -> Result<Vec<Manifest>> {
        match file {
            Some(id) => Ok(vec![self.manifests.get(&id)?]),
            None => self.manifests.list(),
        }
    }

    /// Audits every shard of one file, or of every file, now.
    pub async fn audit(&self, file: Option<FileId>) -> Result<Vec<p2pstore_rpc::ProviderAudit>> {
        let manifests = self.manifests_of(file)?;
        self.audit_files(&manifests, AuditScope::Every).await
    }

    /// Audits the providers of `manifests`, recording and reporting it.
    async fn audit_files(
        &self,
        manifests: &[Manifest],
        scope: AuditScope,
    ) -> Result<Vec<p2pstore_rpc::ProviderAudit>> {
        audit::run(&self.net, &self.audits, &self.events, manifests, scope).await
    }

    /// Every provider's audit record.
    pub fn audits(&self) -> Result<Vec<p2pstore_rpc::ProviderAudits>> {
        Ok(self
            .audits
            .list()?
            .iter()
            .map(|(peer, r)| r.to_rpc(peer, &self.audits.policy))
            .collect())
    }

    /// One background audit: a few random shards of each provider.
    async fn audit_round(&self) -> Result<()> {
        let manifests = self.manifests.list()?;
        if manifests.is_empty() {
            return Ok(());
        }
        let report = self.audit_files(&manifests, AuditScope::Sample).await?;
        let failed: u64 = report.iter().map(|r| r.counts.failed).sum();
        let unknown: u64 = report.iter().map(|r| r.counts.unknown).sum();
        info!(providers = report.len(), failed, unknown, "audit round");
        Ok(())
    }

    /// Runs `round` every `every`, the first time one interval after
    /// start; a round that overruns delays the next instead of bunching.
    fn spawn_every<F, Fut>(&self, every: Duration, round: F) -> tokio::task::JoinHandle<()>
    where
        F: Fn(ClientService) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send,
    {
        let this = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                round(this.clone()).await;
            }
        })
    }

    pub fn spawn_auditor(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        self.spawn_every(every, |this| async move {
            if let Err(e) = this.audit_round().await {
                warn!("audit round: {e}");
            }
        })
    }

    /// Repairs what `scope` covers. A one-file repair reports its error;
    /// a repair of every file goes on past a file it cannot repair.
    pub async fn repair(&self, scope: RepairScope) -> Result<RepairResult> {
        let _guard = self.repair_lock.lock().await;
        let (one, full) = match scope {
            RepairScope::Full(one) => (one, true),
            RepairScope::Background => (None, false),
        };
        let manifests = self.manifests_of(one)?;
        if full {
            // Fresh evidence first: an explicit repair acts on what the
            // providers prove now, not on the last background round.
            self.audit_files(&manifests, AuditScope::Every).await?;
        }
        let mut result = RepairResult::default();
        for m in manifests {
            result.files_checked += 1;
            let id = m.file_id;
            if let Err(e) = self.repair_file(m, full, &mut result).await {
                warn!(file_id = %id.short(), "repair failed: {e}");
                if one.is_some() {
                    return Err(e);
                }
            }
        }
        Ok(result)
    }

    async fn repair_file(&self, m: Manifest, full: bool, result: &mut RepairResult) -> Result<()> {
        m.validate()?;
        let statuses = self.audits.statuses(&m);
        let (k, n) = (m.scheme.k as usize, m.scheme.n as usize);
        let threshold = if full {
            n
        } else {
            (k + self.repair_margin as usize).min(n)
        };
        let mut todo: Vec<(usize, Vec<usize>)> = Vec::new();
        for (i, c) in statuses.iter().enumerate() {
            let good = c.iter().filter(|s| **s == ShardStatus::Good).count();
            // Below the threshold every shard not in good standing goes;
            // above it only those proven lost (an offline provider may
            // come back, and moving its shards would cost for nothing).
            let redo: Vec<usize> = c
                .iter()
                .enumerate()
                .filter(|(_, s)| match s {
                    ShardStatus::Good => false,
                    ShardStatus::Lost => true,
                    ShardStatus::Offline => good < threshold,
                })
                .map(|(p, _)| p)
                .collect();
            if redo.is_empty() {
                continue;
            }
            if good < k {
                result.unrecoverable_segments += 1;
                warn!(file_id = %m.file_id.short(), segment = i, good, k, "segment cannot be rebuilt");
                continue;
            }
            todo.push((i, redo));
        }
        if todo.is_empty() {
            return Ok(());
        }
        info!(file_id = %m.file_id.short(), segments = todo.len(), "repairing");
        let file_id = m.file_id.to_string();
        self.events.emit(EventKind::RepairStarted {
            file_id: file_id.clone(),
            segments: todo.len() as u64,
        });
        let before = (result.shards_rebuilt, result.bytes_rebuilt);
        let rebuilt = self.rebuild(m, todo, result).await;
        self.events.emit(EventKind::RepairFinished {
            file_id,
            shards: result.shards_rebuilt - before.0,
            bytes: result.bytes_rebuilt - before.1,
            error: rebuilt.as_ref().err().map(ToString::to_string),
        });
        rebuilt
    }

    /// Rebuilds the shards `todo` names (per segment, the positions to
    /// redo), stores them at new providers, and records the new homes.
    async fn rebuild(
        &self,
        m: Manifest,
        todo: Vec<(usize, Vec<usize>)>,
        result: &mut RepairResult,
    ) -> Result<()> {
        // Rebuild the missing shards and pick a new home for each: a
        // provider that holds no shard of that segment, good or lost, so
        // up to 2n offers are wanted.
        let cands = self.candidates(2 * m.scheme.n as usize).await?;
        let mut free: Vec<u64> = cands.iter().map(|c| c.offer.free_bytes).collect();
        let fetcher = self.fetcher();
        let mut rebuilt: Vec<(usize, usize, usize, Vec<u8>)> = Vec::new(); // (segment, position, candidate, bytes)
        for (i, bad) in &todo {
            let seg = &m.segments[*i];
            let skip: Vec<u16> = bad.iter().map(|&p| seg.shards[p].index).collect();
            let shards = fetcher.gather(&m, *i, &skip).await?;
            let scheme = m.scheme;
            let cipher_len = seg.cipher_len as usize;
            let all = tokio::task::spawn_blocking(move || {
                scheme
                    .decode(&shards, cipher_len)
                    .and_then(|c| scheme.encode(&c))
            })
            .await??;
            let holders: Vec<PeerId> = seg.shards.iter().map(|r| r.provider).collect();
            let size = seg.shards[bad[0]].size;
            let chosen =
                pick_distinct(&cands, &free, size, bad.len(), &holders).ok_or_else(|| {
                    no_home(
                        *i,
                        bad.len(),
                        size,
                        &cands,
                        &free,
                        &holders,
                        self.directory.backing_off(),
                    )
                })?;
            for (&p, c) in bad.iter().zip(chosen) {
                let r = &seg.shards[p];
                let bytes = all[r.index as usize].clone();
                if ShardId::of(&bytes) != r.shard_id {
                    return Err(Error::Integrity(format!(
                        "rebuilt shard {} does not match its id",
                        r.shard_id.short()
                    )));
                }
                free[c] -= size;
                rebuilt.push((*i, p, c, bytes));
            }
        }

        // Contract and pay, as a put does: one prepaid revision per new
        // provider, all in one transaction, before any byte is sent.
        let mut needs: Vec<Need> = Vec::new();
        for (_, _, c, bytes) in &rebuilt {
            let peer = cands[*c].peer;
            match needs.iter_mut().find(|n| n.peer == peer) {
                Some(n) => n.bytes += bytes.len() as u64,
                None => needs.push(Need {
                    peer,
                    offer: cands[*c].offer.clone(),
                    bytes: bytes.len() as u64,
                }),
            }
        }
        let tip = self.wallet.tip_height();
        let term_end = match m.term {
            Term::Until(h) => h.max(tip.saturating_add(1)),
            Term::Keep => tip.saturating_add(self.term_blocks),
        };
        let acquired = self.acquire(&needs, term_end, None).await?;
        let client = self.net.local_peer_id();
        let upload = self.uploads.start();
        let sends = rebuilt.iter().map(|(i, p, c, bytes)| {
            let peer = cands[*c].peer;
            let old = &m.segments[*i].shards[*p];
            let t = Target {
                peer,
                contract_id: contract_with(&acquired, &peer),
            };
            let spec = ShardSpec {
                id: old.shard_id,
                size: old.size,
            };
            let upload = &upload;
            async move {
                let receipt = upload
                    .store(&self.net, client, t, &spec, bytes.clone())
                    .await?;
                Ok::<_, Error>((
                    *i,
                    *p,
                    ShardRef {
                        provider: peer,
                        contract_id: t.contract_id,
                        receipt,
                        ..old.clone()
                    },
                ))
            }
        });
        // Every store finishes before a failure is handled, so the cleanup
        // knows each shard that landed.
        let replacements = match futures::future::join_all(sends)
            .await
            .into_iter()
            .collect::<Result<Vec<_>>>()
        {
            Ok(r) => r,
            Err(e) => {
                self.release(&acquired, &upload.stored()).await;
                self.unhold(&acquired);
                return Err(e);
            }
        };

        let mut next = m.clone();
        let mut moved: Vec<ShardRef> = Vec::new();
        for (i, p, r) in replacements {
            let old = std::mem::replace(&mut next.segments[i].shards[p], r);
            self.reliability.failure(&old.provider);
            self.audits.forget_shard(&old.shard_id);
            moved.push(old);
        }
        next.validate()?;
        // The swap: one write replaces the whole manifest, so a crash
        // leaves the old one or the new one, never a mix.
        let swapped = self.manifests.insert(&next);
        drop(upload);
        self.unhold(&acquired);
        swapped?;
        // The old copies stop being paid for: deleted where the provider
        // still answers, their bytes out of its allowance.
        self.drop_shards(&moved, false).await;
        result.segments_repaired += todo.len() as u64;
        result.shards_rebuilt += rebuilt.len() as u64;
        result.bytes_rebuilt += rebuilt.iter().map(|r| r.3.len() as u64).sum::<u64>();
        for a in &acquired {
            let peer = a.peer.to_string();
            if !result.new_providers.contains(&peer) {
                result.new_providers.push(peer);
            }
        }
        result.txid = self
            .contracts
            .get(&acquired[0].contract_id)?
            .and_then(|c| c.payments.last().map(|p| p.txid.to_string()));
        info!(file_id = %m.file_id.short(), shards = rebuilt.len(), "repaired");
        Ok(())
    }

    /// The background repair, from the latest audits (no network unless
    /// something needs rebuilding).
    pub fn spawn_health_check(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        self.spawn_every(every, |this| async move {
            match this.repair(RepairScope::Background).await {
                Ok(r) if r.shards_rebuilt > 0 || r.unrecoverable_segments > 0 => {
                    info!(
                        rebuilt = r.shards_rebuilt,
                        unrecoverable = r.unrecoverable_segments,
                        "health check"
                    )
                }
                Ok(_) => {}
                Err(e) => warn!("health check: {e}"),
            }
        })
    }
}
