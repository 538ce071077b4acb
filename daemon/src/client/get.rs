//! get: fetch every segment, verify its hash before decrypting, decrypt and
//! check every tag, write to a temporary file beside the destination, and
//! rename it into place only when all of it verified.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use tracing::{Instrument, info, info_span, warn};

use std::time::Instant;

use futures::stream::FuturesUnordered;

use super::ClientService;
use super::manifest::{Manifest, Segment, ShardRef};
use super::put::PIPELINE;
use super::reliability::Reliability;
use crate::crypto::{FileKey, random_bytes};
use crate::error::{Error, Result};
use crate::ids::{FileId, ShardId};
use crate::network::{Client as NetClient, PeerError};
use crate::perf::{self, Stage};
use crate::progress::Op;

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
        manifest.validate()?;
        let dest = resolve_dest(dest, &manifest.name)?;
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
        let span = info_span!("get", file_id = %id.short());
        let job = Arc::new(DownloadJob {
            key: FileKey::derive(&self.keys.file_master, &id),
            manifest,
            file,
            fetcher: self.fetcher(),
        });
        let progress = Arc::new(self.progress.start(op_id, job.manifest.size));
        let result = futures::stream::iter(0..job.manifest.segments.len())
            .map(|i| {
                let job = job.clone();
                let progress = progress.clone();
                async move { job.download(i, &progress).await }
            })
            .buffered(PIPELINE)
            .try_collect::<Vec<()>>()
            .instrument(span.clone())
            .await
            .and_then(|_| {
                job.file.sync_all()?;
                std::fs::rename(&tmp, &dest)?;
                std::fs::File::open(&parent)?.sync_all()?;
                Ok(())
            });
        if let Err(e) = result {
            let _ = std::fs::remove_file(&tmp);
            warn!(parent: &span, "get failed: {e}");
            return Err(e);
        }
        info!(parent: &span, "get finished");
        Ok(p2pstore_rpc::GetResult {
            file_id: id.to_string(),
            path: dest.to_string_lossy().into_owned(),
            size: job.manifest.size,
        })
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
        let result = match self.net.fetch(peer, shard.shard_id).await {
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

    /// Shards of a segment, most reliable providers first.
    fn ranked<'a>(&self, seg: &'a Segment) -> Vec<&'a ShardRef> {
        let mut refs: Vec<&ShardRef> = seg.shards.iter().collect();
        let score = |r: &ShardRef| self.reliability.get(&r.provider);
        refs.sort_by(|a, b| {
            let (sa, sb) = (score(a), score(b));
            sb.score()
                .total_cmp(&sa.score())
                .then(sa.latency_ms.total_cmp(&sb.latency_ms))
        });
        refs
    }

    /// Valid shards of segment `i`, at least K of them: asks K+1 providers
    /// at once so one slow provider cannot stall the read, and another for
    /// each that fails, until K are in hand or none are left to ask.
    pub async fn gather<'a>(
        &'a self,
        manifest: &'a Manifest,
        i: usize,
        skip: &[u16],
    ) -> Result<Vec<(usize, Vec<u8>)>> {
        let seg = &manifest.segments[i];
        let k = manifest.scheme.k as usize;
        let mut queue = self
            .ranked(seg)
            .into_iter()
            .filter(|r| !skip.contains(&r.index));
        let fetch = |r: &'a ShardRef| async move { (r.index, self.shard(r).await) };
        let mut running = FuturesUnordered::new();
        for r in queue.by_ref().take(k + 1) {
            running.push(fetch(r));
        }
        let mut good = Vec::with_capacity(k);
        let mut errors = Vec::new();
        while let Some((index, result)) = running.next().await {
            match result {
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
