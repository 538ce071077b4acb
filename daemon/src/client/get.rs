//! get: fetch every segment, verify its hash before decrypting, decrypt and
//! check every tag, write to a temporary file beside the destination, and
//! rename it into place only when all of it verified.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use tracing::{Instrument, info, info_span, warn};

use super::manifest::{Manifest, parse_file_id};
use super::put::{PIPELINE, short};
use super::{ClientService, peer_from_str};
use crate::crypto::{FileKey, random_bytes, sha256};
use crate::error::{Error, Result};
use crate::network::Client as NetClient;
use crate::progress::Op;
use crate::protocol::*;

impl ClientService {
    pub async fn get(
        &self,
        file_id: &str,
        dest: &str,
        op_id: Option<String>,
    ) -> Result<p2pstore_rpc::GetResult> {
        let id = parse_file_id(file_id)?;
        let manifest = self.manifests.get(&id)?;
        manifest.validate()?;
        let dest = resolve_dest(Path::new(dest), &manifest.name)?;
        let parent = dest
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let tmp = parent.join(format!(
            ".p2pstore-{}-{}.part",
            short(&id),
            hex::encode(random_bytes::<4>()?)
        ));
        let file = std::fs::File::create(&tmp).map_err(|e| {
            Error::InvalidPath(format!("cannot write in {}: {e}", parent.display()))
        })?;
        let span = info_span!("get", file_id = %short(&id));
        let job = Arc::new(DownloadJob {
            key: FileKey::derive(&self.keys.file_master, &id),
            manifest,
            file,
        });
        let progress = Arc::new(self.progress.start(op_id, job.manifest.size));
        let result = futures::stream::iter(0..job.manifest.segments.len())
            .map(|i| {
                let job = job.clone();
                let net = self.net.clone();
                let progress = progress.clone();
                async move { job.download(&net, i, &progress).await }
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
            file_id: hex::encode(id),
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
}

impl DownloadJob {
    /// Fetches one segment from the first shard holder that returns bytes
    /// matching the manifest, then decrypts and writes it in place.
    async fn download(self: Arc<Self>, net: &NetClient, i: usize, progress: &Op) -> Result<()> {
        let seg = &self.manifest.segments[i];
        let mut last_err = None;
        for shard in &seg.shards {
            let peer = peer_from_str(&shard.provider)?;
            let sid = short(&shard.shard_id);
            let data = match net
                .shard(
                    peer,
                    ShardRequest::Fetch {
                        shard_id: shard.shard_id,
                    },
                )
                .await
            {
                Ok(ShardResponse::Data(d)) => d,
                Ok(ShardResponse::Error(e)) => {
                    last_err = Some(Error::ProviderRejected {
                        peer: peer.to_string(),
                        reason: format!("shard {sid}: {}", e.message),
                    });
                    continue;
                }
                Ok(ShardResponse::Stored(_)) => {
                    last_err = Some(Error::ProviderRejected {
                        peer: peer.to_string(),
                        reason: "unexpected response".into(),
                    });
                    continue;
                }
                Err(Error::ProviderUnreachable { peer, reason }) => {
                    last_err = Some(Error::ProviderUnreachable {
                        peer,
                        reason: format!("shard {sid}: {reason}"),
                    });
                    continue;
                }
                Err(e) => return Err(e),
            };
            let job = self.clone();
            let expected = shard.shard_id;
            let res = tokio::task::spawn_blocking(move || -> Result<()> {
                // Hash before decrypting: bytes that are not exactly what we
                // stored are never fed to the cipher.
                if sha256(&data) != expected {
                    return Err(Error::Integrity(format!(
                        "shard {sid} from provider {peer} does not match its hash"
                    )));
                }
                let seg = &job.manifest.segments[i];
                let mut buf = data;
                let count = job.manifest.segments.len() as u64;
                job.key
                    .open(&job.manifest.file_id, i as u64, count, &seg.nonce, &mut buf)?;
                if buf.len() as u64 != seg.plain_len {
                    return Err(Error::Integrity(format!(
                        "segment {i} has the wrong length"
                    )));
                }
                job.file
                    .write_all_at(&buf, i as u64 * job.manifest.segment_size)?;
                Ok(())
            })
            .await
            .map_err(|e| Error::Internal(e.to_string()))?;
            match res {
                Ok(()) => {
                    progress.add(seg.plain_len);
                    return Ok(());
                }
                Err(e @ Error::Integrity(_)) => last_err = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_err.unwrap_or_else(|| Error::Internal(format!("segment {i} has no shards"))))
    }
}
