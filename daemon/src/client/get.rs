//! get: fetch every segment, verify its hash before decrypting, decrypt and
//! check every tag, write to a temporary file beside the destination, and
//! rename it into place only when all of it verified.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use tracing::{Instrument, info, info_span, warn};

use std::time::{Duration, Instant};

use futures::stream::FuturesUnordered;

use super::ClientService;
use super::manifest::{Manifest, Segment, ShardRef};
use super::put::PIPELINE;
use super::reliability::{PeerStats, Reliability};
use crate::crypto::{FileKey, random_bytes};
use crate::error::{Error, Result};
use crate::ids::{FileId, ShardId};
use crate::network::{Client as NetClient, PeerError, retry_busy};
use crate::perf::{self, Stage};
use crate::progress::{Guard, Op};
use p2pstore_rpc::{TransferKind, TransferPhase};

impl ClientService {
    /// Fetches, verifies and decrypts a file into `dest` (a file path, or
    /// a directory to put it in under its stored name).
    pub async fn get(
        &self,
        id: FileId,
        dest: &Path,
        op_id: Option<String>,
    ) -> Result<p2pstore_rpc::GetResult> {
        let manifest = self.manifests.get(&id)?;
        let dest = resolve_dest(dest, &manifest.name)?;
        self.fetch_into(manifest, &dest, op_id).await
    }

    /// Fetches the file `manifest` describes into `dest`, with the get's
    /// checks: the index backup a restore fetches has no stored manifest.
    pub(super) async fn fetch_manifest(
        &self,
        manifest: Manifest,
        dest: &Path,
    ) -> Result<p2pstore_rpc::GetResult> {
        self.fetch_into(manifest, dest, None).await
    }

    async fn fetch_into(
        &self,
        manifest: Manifest,
        dest: &Path,
        op_id: Option<String>,
    ) -> Result<p2pstore_rpc::GetResult> {
        let progress = Arc::new(self.progress.start(
            op_id,
            TransferKind::Get,
            TransferPhase::Download,
            manifest.size,
        ));
        progress.file(&manifest.file_id);
        let result = self.fetch_tracked(manifest, dest, &progress).await;
        progress.finish(&result);
        result
    }

    async fn fetch_tracked(
        &self,
        manifest: Manifest,
        dest: &Path,
        progress: &Arc<Guard>,
    ) -> Result<p2pstore_rpc::GetResult> {
        manifest.validate()?;
        let id = manifest.file_id;
        let parent = dest
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let tmp = parent.join(format!(
            ".p2pstore-{}-{}.part",
            id.short(),
            hex::encode(random_bytes::<4>()?)
        ));
        let file = std::fs::File::create(&tmp).map_err(|e| {
            Error::InvalidPath(format!("cannot write in {}: {e}", parent.display()))
        })?;
        // However the get ends short of the rename (an error, or its caller
        // gone and this future dropped), the part file goes.
        let mut part = PartFile(Some(tmp.clone()));
        let span = info_span!("get", file_id = %id.short());
        let job = Arc::new(DownloadJob {
            key: FileKey::derive(&self.keys.file_master, &id),
            manifest,
            file,
            fetcher: self.fetcher(),
        });
        let result = futures::stream::iter(0..job.manifest.segments.len())
            .map(|i| {
                let job = job.clone();
                let progress = progress.clone();
                async move { job.download(i, &progress).await }
            })
            // Each segment is written at its own offset, in any order.
            .buffer_unordered(PIPELINE)
            .try_collect::<Vec<()>>()
            .instrument(span.clone())
            .await
            .and_then(|_| {
                progress.phase(TransferPhase::Verify);
                crate::blocking::run(|| {
                    job.file.sync_all()?;
                    std::fs::rename(&tmp, dest)?;
                    std::fs::File::open(&parent)?.sync_all()
                })?;
                Ok(())
            });
        if let Err(e) = result {
            warn!(parent: &span, "get failed: {e}");
            return Err(e);
        }
        part.0 = None;
        info!(parent: &span, "get finished");
        Ok(p2pstore_rpc::GetResult {
            file_id: id.to_string(),
            path: dest.to_string_lossy().into_owned(),
            size: job.manifest.size,
        })
    }
}

/// A get's part file, removed when dropped unless taken (after its rename).
struct PartFile(Option<PathBuf>);

impl Drop for PartFile {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Where a get writes: into `dest`, or `dest/<name>` when it is a directory.
fn resolve_dest(dest: &Path, name: &str) -> Result<PathBuf> {
    let dest = if dest.is_dir() {
        // The stored name came from a file name, but never trust it as a path.
        let safe = Path::new(name)
            .file_name()
            .ok_or_else(|| Error::InvalidPath(format!("bad file name {name:?}")))?;
        dest.join(safe)
    } else {
        dest.to_path_buf()
    };
    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !parent.is_dir() {
        return Err(Error::InvalidPath(format!(
            "directory {} does not exist",
            parent.display()
        )));
    }
    Ok(dest)
}

struct DownloadJob {
    key: FileKey,
    manifest: Manifest,
    file: std::fs::File,
    fetcher: Fetcher,
}

impl DownloadJob {
    async fn download(self: Arc<Self>, i: usize, progress: &Op) -> Result<()> {
        let seg = &self.manifest.segments[i];
        let cipher = self.fetcher.segment(&self.manifest, i).await?;
        let job = self.clone();
        tokio::task::spawn_blocking(move || -> Result<()> {
            let seg = &job.manifest.segments[i];
            let mut buf = cipher;
            let count = job.manifest.segments.len() as u64;
            perf::time(Stage::Seal, || {
                job.key
                    .open(&job.manifest.file_id, i as u64, count, &seg.nonce, &mut buf)
            })?;
            if buf.len() as u64 != seg.plain_len {
                return Err(Error::Integrity(format!(
                    "segment {i} has the wrong length"
                )));
            }
            perf::time(Stage::Output, || {
                job.file
                    .write_all_at(&buf, i as u64 * job.manifest.segment_size)
            })?;
            Ok(())
        })
        .await??;
        progress.add(seg.plain_len);
        Ok(())
    }
}

/// Reliability scores closer than this count as equal when ranking.
const SCORE_STEP: f64 = 0.05;
/// Bounds of the wait before a spare shard is asked for (see
/// [`hedge_delay`]); the floor also serves providers never timed.
const HEDGE_MIN: Duration = Duration::from_millis(250);
const HEDGE_MAX: Duration = Duration::from_secs(10);

/// How long the first K fetches of a segment may take before a spare is
/// asked for: twice the slowest chosen provider's usual fetch time.
fn hedge_delay<'a>(chosen: impl Iterator<Item = &'a PeerStats>) -> Duration {
    let slowest = chosen.map(|s| s.latency_ms).fold(0.0, f64::max);
    Duration::try_from_secs_f64(2.0 * slowest / 1000.0)
        .unwrap_or(HEDGE_MAX)
        .clamp(HEDGE_MIN, HEDGE_MAX)
}

/// Fetches shards and rebuilds sealed segments from any K valid ones.
#[derive(Clone)]
pub(super) struct Fetcher {
    pub net: NetClient,
    pub reliability: Reliability,
}

impl Fetcher {
    /// One shard's bytes, only if they hash to the id in the manifest.
    pub async fn shard(&self, shard: &ShardRef) -> Result<Vec<u8>> {
        let peer = shard.provider;
        let sid = shard.shard_id.short();
        let started = Instant::now();
        let result = match retry_busy(|| self.net.fetch(peer, shard.shard_id)).await {
            Ok(d) => {
                let expected = shard.shard_id;
                // Hash before anything else: bytes that are not exactly
                // what we stored are never fed to the decoder or cipher.
                let ok = tokio::task::spawn_blocking(move || {
                    perf::time(Stage::Hash, || ShardId::of(&d) == expected).then_some(d)
                })
                .await?;
                ok.ok_or_else(|| {
                    Error::Integrity(format!(
                        "shard {sid} from provider {peer} does not match its hash"
                    ))
                })
            }
            Err(PeerError::Unreachable(reason)) => Err(Error::ProviderUnreachable {
                peer,
                reason: format!("shard {sid}: {reason}"),
            }),
            Err(e) => Err(Error::ProviderRejected {
                peer,
                reason: format!("shard {sid}: {e}"),
            }),
        };
        match &result {
            Ok(_) => self.reliability.success(&peer, started.elapsed()),
            Err(_) => self.reliability.failure(&peer),
        }
        result
    }

    /// Shards of a segment, most reliable providers first; among equally
    /// reliable ones (scores within [`SCORE_STEP`]) data shards first,
    /// since K data shards rebuild the segment without decoding, then the
    /// faster provider.
    fn ranked<'a>(&self, seg: &'a Segment, k: u16) -> Vec<(&'a ShardRef, PeerStats)> {
        let mut refs: Vec<(&ShardRef, PeerStats)> = seg
            .shards
            .iter()
            .map(|r| (r, self.reliability.get(&r.provider)))
            .collect();
        let step = |s: &PeerStats| (s.score() / SCORE_STEP).floor() as i64;
        refs.sort_by(|(ra, sa), (rb, sb)| {
            step(sb)
                .cmp(&step(sa))
                .then((ra.index >= k).cmp(&(rb.index >= k)))
                .then(sa.latency_ms.total_cmp(&sb.latency_ms))
        });
        refs
    }

    /// Valid shards of segment `i`, at least K of them. Asks the K best
    /// providers, and one more for each that fails or, so that one slow
    /// provider cannot stall the read, when they have not all answered
    /// after twice the slowest one's usual time ([`hedge_delay`]); until
    /// K are in hand or none are left to ask. Asking K+1 from the start
    /// would cost every read half a shard more of network and hashing.
    pub async fn gather<'a>(
        &'a self,
        manifest: &'a Manifest,
        i: usize,
        skip: &[u16],
    ) -> Result<Vec<(usize, Vec<u8>)>> {
        let seg = &manifest.segments[i];
        let k = manifest.scheme.k as usize;
        let ranked: Vec<_> = self
            .ranked(seg, manifest.scheme.k)
            .into_iter()
            .filter(|(r, _)| !skip.contains(&r.index))
            .collect();
        let hedge = tokio::time::sleep(hedge_delay(ranked.iter().take(k).map(|(_, s)| s)));
        tokio::pin!(hedge);
        let mut hedged = false;
        let mut queue = ranked.into_iter().map(|(r, _)| r);
        let fetch = |r: &'a ShardRef| async move { (r.index, self.shard(r).await) };
        let mut running = FuturesUnordered::new();
        for r in queue.by_ref().take(k) {
            running.push(fetch(r));
        }
        let mut good = Vec::with_capacity(k);
        let mut errors = Vec::new();
        loop {
            tokio::select! {
                Some((index, result)) = running.next() => match result {
                    Ok(bytes) => {
                        good.push((index as usize, bytes));
                        if good.len() == k {
                            return Ok(good);
                        }
                    }
                    Err(e) => {
                        warn!(segment = i, "{e}");
                        errors.push(e);
                        if let Some(r) = queue.next() {
                            running.push(fetch(r));
                        }
                    }
                },
                () = &mut hedge, if !hedged => {
                    hedged = true;
                    if let Some(r) = queue.next() {
                        running.push(fetch(r));
                    }
                }
                else => break,
            }
        }
        // Fewer than K: the file cannot be read. Name what failed.
        let detail: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        let kind_integrity = errors.iter().all(|e| matches!(e, Error::Integrity(_)));
        let msg = format!(
            "segment {i}: {} of {k} needed shards available ({})",
            good.len(),
            detail.join("; ")
        );
        match errors.into_iter().next() {
            Some(Error::ProviderUnreachable { peer, .. }) if !kind_integrity => {
                Err(Error::ProviderUnreachable { peer, reason: msg })
            }
            Some(Error::ProviderRejected { peer, .. }) if !kind_integrity => {
                Err(Error::ProviderRejected { peer, reason: msg })
            }
            _ => Err(Error::Integrity(msg)),
        }
    }

    /// The sealed bytes of segment `i`.
    pub async fn segment(&self, manifest: &Manifest, i: usize) -> Result<Vec<u8>> {
        let started = Instant::now();
        let shards = self.gather(manifest, i, &[]).await?;
        // Includes the hashing of each shard as it arrives (also counted
        // under hash): the wait for the segment's K shards.
        perf::add(Stage::Network, started.elapsed());
        let scheme = manifest.scheme;
        let cipher_len = manifest.segments[i].cipher_len as usize;
        tokio::task::spawn_blocking(move || {
            perf::time(Stage::Code, || scheme.decode(&shards, cipher_len))
        })
        .await?
    }
}
