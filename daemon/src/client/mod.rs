//! The client role: finds providers, and puts, gets and removes files.
//!
//! Files are streamed segment by segment with positional reads and writes,
//! a few segments in flight at once, so memory stays bounded by the
//! pipeline depth whatever the file size.

pub mod manifest;

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use futures::{StreamExt, TryStreamExt};
use libp2p::{Multiaddr, PeerId};
use tracing::{Instrument, info, info_span, warn};

use crate::crypto::{FileKey, Hash, TAG_LEN, random_bytes, sha256};
use crate::error::{Error, Result};
use crate::keys::AccountKeys;
use crate::network::Client as NetClient;
use crate::progress::{self, Op};
use crate::protocol::*;
use crate::provider::store::now_secs;
use manifest::{MANIFEST_VERSION, Manifest, ManifestStore, Segment, ShardRef, parse_file_id};

/// Segments in flight per transfer: enough to overlap disk, crypto and
/// network, few enough to keep memory near PIPELINE * SEGMENT_SIZE * 3.
const PIPELINE: usize = 4;

#[derive(Clone)]
pub struct ClientService {
    net: NetClient,
    keys: Arc<AccountKeys>,
    manifests: ManifestStore,
    peers: sled::Tree,
    progress: progress::Registry,
}

fn peer_from_str(s: &str) -> Result<PeerId> {
    PeerId::from_str(s).map_err(|_| Error::Internal(format!("bad peer id {s} in manifest")))
}

fn short(id: &Hash) -> String {
    hex::encode(&id[..8])
}

fn rejected(peer: &PeerId, e: WireError) -> Error {
    Error::ProviderRejected {
        peer: peer.to_string(),
        reason: e.message,
    }
}

impl ClientService {
    pub async fn new(
        db: &sled::Db,
        net: NetClient,
        keys: Arc<AccountKeys>,
        progress: progress::Registry,
    ) -> Result<Self> {
        let peers = db.open_tree("peers")?;
        // Known provider addresses let a restarted client reach its
        // providers before the DHT has been walked again.
        for item in peers.iter() {
            let (k, v) = item?;
            let (Ok(peer), Ok(addrs)) = (
                PeerId::from_bytes(&k),
                serde_json::from_slice::<Vec<String>>(&v),
            ) else {
                continue;
            };
            let addrs = addrs
                .iter()
                .filter_map(|a| a.parse::<Multiaddr>().ok())
                .collect();
            net.add_addresses(peer, addrs).await;
        }
        Ok(ClientService {
            net,
            keys,
            manifests: ManifestStore::open(db)?,
            peers,
            progress,
        })
    }

    pub fn manifests(&self) -> &ManifestStore {
        &self.manifests
    }

    async fn remember_addresses(&self, peer: PeerId) {
        let Ok(addrs) = self.net.peer_addresses(peer).await else {
            return;
        };
        if addrs.is_empty() {
            return;
        }
        let addrs: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
        if let Ok(v) = serde_json::to_vec(&addrs) {
            let _ = self.peers.insert(peer.to_bytes(), v);
        }
    }

    /// Providers in the DHT right now, each with the offer it just gave.
    /// Silent or misbehaving providers are left out.
    pub async fn discover_offers(&self) -> Result<Vec<(PeerId, Offer, Vec<Multiaddr>)>> {
        let me = self.net.local_peer_id();
        let peers: Vec<PeerId> = self
            .net
            .get_providers()
            .await?
            .into_iter()
            .filter(|p| *p != me)
            .collect();
        let asks = peers.into_iter().map(|peer| async move {
            match self.net.control(peer, ControlRequest::GetOffer).await {
                Ok(ControlResponse::Offer(offer)) => {
                    self.remember_addresses(peer).await;
                    let addrs = self.net.peer_addresses(peer).await.unwrap_or_default();
                    Some((peer, offer, addrs))
                }
                Ok(_) => None,
                Err(e) => {
                    warn!(%peer, "no offer: {e}");
                    None
                }
            }
        });
        let mut offers: Vec<_> = futures::future::join_all(asks)
            .await
            .into_iter()
            .flatten()
            .collect();
        offers.sort_by_key(|(p, o, _)| (o.price_sat_per_gib_month, u64::MAX - o.free_bytes, *p));
        Ok(offers)
    }

    /// Cheapest provider with room for `needed` bytes of shards.
    fn choose(offers: &[(PeerId, Offer, Vec<Multiaddr>)], needed: u64) -> Result<PeerId> {
        if offers.is_empty() {
            return Err(Error::NoProvider("no providers found in the DHT".into()));
        }
        offers
            .iter()
            .find(|(_, o, _)| {
                o.protocol_version == PROTOCOL_VERSION
                    && o.free_bytes >= needed
                    && o.max_shard_bytes >= MAX_SHARD_BYTES
            })
            .map(|(p, _, _)| *p)
            .ok_or_else(|| {
                let best = offers
                    .iter()
                    .map(|(_, o, _)| o.free_bytes)
                    .max()
                    .unwrap_or(0);
                Error::NoProvider(format!(
                    "{} provider(s) found, none has {needed} bytes free (most free: {best})",
                    offers.len()
                ))
            })
    }

    pub async fn put(&self, path: &str, op_id: Option<String>) -> Result<p2pstore_rpc::PutResult> {
        let path = PathBuf::from(path);
        let meta = tokio::fs::metadata(&path)
            .await
            .map_err(|e| Error::InvalidPath(format!("cannot read {}: {e}", path.display())))?;
        if meta.is_dir() {
            return Err(Error::InvalidPath(format!(
                "{} is a directory",
                path.display()
            )));
        }
        if !meta.is_file() {
            return Err(Error::InvalidPath(format!(
                "{} is not a regular file",
                path.display()
            )));
        }
        let file = std::fs::File::open(&path)
            .map_err(|e| Error::InvalidPath(format!("cannot open {}: {e}", path.display())))?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "file".into());
        let size = meta.len();
        let seg = SEGMENT_SIZE as u64;
        let count = size.div_ceil(seg).max(1);
        let needed = count
            .checked_mul(TAG_LEN as u64)
            .and_then(|t| t.checked_add(size))
            .ok_or_else(|| Error::InvalidPath("file too large".into()))?;

        let offers = self.discover_offers().await?;
        let provider = Self::choose(&offers, needed)?;
        let file_id: Hash = random_bytes()?;
        let contract_id: ContractId = random_bytes()?;
        let span = info_span!("put", file_id = %short(&file_id), peer = %provider, contract = %short(&contract_id));
        info!(parent: &span, size, segments = count, "put started");

        let job = Arc::new(UploadJob {
            file,
            key: FileKey::derive(&self.keys.file_master, &file_id),
            file_id,
            size,
            count,
            provider,
            contract_id,
            client: self.net.local_peer_id(),
            stored: Mutex::new(Vec::new()),
        });
        let progress = Arc::new(self.progress.start(op_id, size));
        let result = futures::stream::iter(0..count)
            .map(|i| {
                let job = job.clone();
                let net = self.net.clone();
                let progress = progress.clone();
                async move { job.upload(&net, i, &progress).await }
            })
            .buffered(PIPELINE)
            .try_collect::<Vec<Segment>>()
            .instrument(span.clone())
            .await;
        let segments = match result {
            Ok(s) => s,
            Err(e) => {
                // Nothing references these shards: free the provider's space.
                let stored = job.stored.lock().map(|s| s.clone()).unwrap_or_default();
                if !stored.is_empty() {
                    let req = ControlRequest::Delete {
                        contract_id,
                        shard_ids: stored,
                    };
                    let _ = self.net.control(provider, req).await;
                }
                warn!(parent: &span, "put failed: {e}");
                return Err(e);
            }
        };
        let manifest = Manifest {
            version: MANIFEST_VERSION,
            file_id,
            name: name.clone(),
            size,
            created_at: now_secs(),
            segment_size: seg,
            segments,
        };
        self.manifests.insert(&manifest)?;
        info!(parent: &span, "put finished");
        Ok(p2pstore_rpc::PutResult {
            file_id: hex::encode(file_id),
            name,
            size,
            segments: count,
            providers: manifest.providers(),
        })
    }

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

    pub async fn rm(&self, file_id: &str) -> Result<p2pstore_rpc::RmResult> {
        let id = parse_file_id(file_id)?;
        let manifest = self.manifests.get(&id)?;
        let mut groups: Vec<((String, ContractId), Vec<ShardId>)> = Vec::new();
        for s in manifest.segments.iter().flat_map(|s| &s.shards) {
            let key = (s.provider.clone(), s.contract_id);
            match groups.iter_mut().find(|(k, _)| *k == key) {
                Some((_, ids)) => ids.push(s.shard_id),
                None => groups.push((key, vec![s.shard_id])),
            }
        }
        let mut deleted = 0;
        let mut unreachable = Vec::new();
        for ((provider, contract_id), shard_ids) in groups {
            let peer = peer_from_str(&provider)?;
            match self
                .net
                .control(
                    peer,
                    ControlRequest::Delete {
                        contract_id,
                        shard_ids,
                    },
                )
                .await
            {
                Ok(ControlResponse::Deleted { count }) => deleted += count,
                Ok(_) | Err(_) => unreachable.push(provider),
            }
        }
        self.manifests.remove(&id)?;
        Ok(p2pstore_rpc::RmResult {
            file_id: hex::encode(id),
            deleted_shards: deleted,
            unreachable_providers: unreachable,
        })
    }

    pub fn ls(&self) -> Result<Vec<p2pstore_rpc::FileEntry>> {
        Ok(self
            .manifests
            .list()?
            .into_iter()
            .map(|m| p2pstore_rpc::FileEntry {
                file_id: hex::encode(m.file_id),
                providers: m.providers(),
                name: m.name,
                size: m.size,
                created_at: m.created_at,
                segments: m.segments.len() as u64,
            })
            .collect())
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

struct UploadJob {
    file: std::fs::File,
    key: FileKey,
    file_id: Hash,
    size: u64,
    count: u64,
    provider: PeerId,
    contract_id: ContractId,
    client: PeerId,
    /// Shards the provider acknowledged, for cleanup if the put fails.
    stored: Mutex<Vec<ShardId>>,
}

impl UploadJob {
    async fn upload(self: Arc<Self>, net: &NetClient, i: u64, progress: &Op) -> Result<Segment> {
        let seg = SEGMENT_SIZE as u64;
        let offset = i * seg;
        let len = seg.min(self.size - offset);
        let job = self.clone();
        let (nonce, data, shard_id) = tokio::task::spawn_blocking(move || -> Result<_> {
            let mut buf = vec![0u8; len as usize];
            buf.reserve_exact(TAG_LEN);
            job.file.read_exact_at(&mut buf, offset).map_err(|e| {
                Error::InvalidPath(format!(
                    "reading segment {i}: {e} (did the file change during put?)"
                ))
            })?;
            let nonce = job.key.seal(&job.file_id, i, job.count, &mut buf)?;
            let id = sha256(&buf);
            Ok((nonce, buf, id))
        })
        .await
        .map_err(|e| Error::Internal(e.to_string()))??;
        let size = data.len() as u64;
        let peer = self.provider;
        let request = ShardRequest::Store {
            contract_id: self.contract_id,
            shard_id,
            data,
        };
        let receipt = match net.shard(peer, request).await? {
            ShardResponse::Stored(r) => r,
            ShardResponse::Error(e) => return Err(rejected(&peer, e)),
            ShardResponse::Data(_) => {
                return Err(Error::ProviderRejected {
                    peer: peer.to_string(),
                    reason: "unexpected response".into(),
                });
            }
        };
        if !receipt.verify(&peer, &self.client, &self.contract_id, &shard_id, size) {
            return Err(Error::Integrity(format!(
                "provider {peer} sent an invalid receipt for shard {}",
                short(&shard_id)
            )));
        }
        if let Ok(mut s) = self.stored.lock() {
            s.push(shard_id);
        }
        progress.add(len);
        Ok(Segment {
            nonce,
            plain_len: len,
            shards: vec![ShardRef {
                shard_id,
                size,
                provider: peer.to_string(),
                contract_id: self.contract_id,
                receipt,
            }],
        })
    }
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
