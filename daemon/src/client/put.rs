//! put, in a single pass over the file.
//!
//! 1. Place: each segment's N shards go to N distinct providers, ranked by
//!    price, reliability and free space. The file's size and the scheme
//!    give every shard's size, so each provider's byte count is known
//!    before anything is sealed.
//! 2. Contract and pay ([`super::pipeline`]): one revision per provider
//!    (or a new contract), all prepaid in one transaction, credited by
//!    the providers before any byte is sent.
//! 3. Upload: read, seal, erasure-code and send each segment once.
//! 4. Record the manifest. A put that fails after paying lets the stores
//!    under way finish, then deletes what it uploaded; the allowance it
//!    bought stays paid, and the next put uses it.

use std::collections::HashSet;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use futures::StreamExt;
use libp2p::PeerId;
use tracing::{Instrument, info, info_span, warn};

use super::manifest::{FileKind, MANIFEST_VERSION, Manifest, Segment, ShardRef, Term};
use super::pipeline::{AcquireFailure, Need, contract_with};
use super::reliability::Reliability;
use super::uploads::{ShardSpec, Target, Upload};
use super::{ClientService, FoundProvider};
use crate::crypto::{FileKey, Hash, TAG_LEN, content_hash};
use crate::erasure::Scheme;
use crate::error::{Error, Result};
use crate::ids::{FileId, ShardId};
use crate::network::Client as NetClient;
use crate::network::netgroup::NetGroup;
use crate::perf::{self, Stage};
use crate::progress::{Guard, Op};
use crate::protocol::*;
use crate::provider::store::now_secs;
use p2pstore_rpc::{TransferKind, TransferPhase};

/// Segments in flight per transfer: enough to overlap disk, crypto and
/// network, few enough to bound memory (each holds a segment and its shards).
pub(super) const PIPELINE: usize = 6;
/// Providers a put may replace after they gave no usable quote.
pub const PLACEMENT_SPARES: usize = 3;

/// A provider the client is willing to use, with what it offered.
#[derive(Clone)]
pub(super) struct Candidate {
    pub peer: PeerId,
    pub offer: Offer,
    /// The /16 or /48 of the IP we reached it at.
    pub group: Option<NetGroup>,
    pub score: f64,
}

impl Candidate {
    /// Price weighted by standing and audit score: a provider that fails
    /// half the time costs, in effect, twice its asking price.
    fn effective_price(&self) -> f64 {
        self.offer.price_sat_per_gib_month.max(1) as f64 / self.score
    }
}

/// Orders candidates best first: lowest effective price, then most free
/// space; candidates equal on both are in random order, so that equally
/// good providers share the load instead of the same few taking it all.
pub(super) fn rank(cands: &mut [Candidate]) {
    use rand::seq::SliceRandom;
    cands.shuffle(&mut rand::rng());
    // A stable sort keeps the shuffled order among equals.
    cands.sort_by(|a, b| {
        a.effective_price()
            .total_cmp(&b.effective_price())
            .then(b.offer.free_bytes.cmp(&a.offer.free_bytes))
    });
}

/// A finished put, kept under its operation id.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct PutOp {
    pub result: p2pstore_rpc::PutResult,
    pub finished_at: u64,
}

/// How long a finished put answers a retry with its operation id.
pub const PUT_OP_TTL_SECS: u64 = 7 * 24 * 3600;
/// Finished puts remembered at most; the oldest are forgotten first.
pub const MAX_PUT_OPS: usize = 10_000;

/// Frees an operation id when its put ends, however it ends.
struct RunningOp<'a> {
    running: &'a std::sync::Mutex<HashSet<String>>,
    id: String,
}

impl Drop for RunningOp<'_> {
    fn drop(&mut self) {
        if let Ok(mut r) = self.running.lock() {
            r.remove(&self.id);
        }
    }
}

impl ClientService {
    /// Stores the file at `path` at `scheme` (the configured default when
    /// None) for `term` (the configured term when None), and pays for it.
    /// Idempotent by `op_id`, and by content unless `force`.
    pub async fn put(
        &self,
        path: &Path,
        scheme: Option<Scheme>,
        term: Option<Term>,
        force: bool,
        op_id: Option<String>,
    ) -> Result<p2pstore_rpc::PutResult> {
        let Some(id) = op_id else {
            return self
                .put_once(path, scheme, term, force, None, FileKind::File, None)
                .await;
        };
        if let Some(op) = self.put_ops.get(&id)? {
            info!(op_id = %id, file_id = %op.result.file_id, "put retried: returning its result");
            return Ok(p2pstore_rpc::PutResult {
                existing: true,
                ..op.result
            });
        }
        let _running = {
            let mut running = self
                .running_ops
                .lock()
                .map_err(|_| Error::Internal("operation registry poisoned".into()))?;
            if !running.insert(id.clone()) {
                return Err(Error::InvalidParams(format!(
                    "a put with op_id {id} is running already"
                )));
            }
            RunningOp {
                running: &self.running_ops,
                id: id.clone(),
            }
        };
        let result = self
            .put_once(
                path,
                scheme,
                term,
                force,
                Some(id.clone()),
                FileKind::File,
                None,
            )
            .await?;
        self.remember_op(id, &result)?;
        Ok(result)
    }

    /// Keeps a finished put's result for retries, within the bounds.
    fn remember_op(&self, id: String, result: &p2pstore_rpc::PutResult) -> Result<()> {
        let now = now_secs();
        let mut ops: Vec<(String, u64)> = Vec::new();
        for item in self.put_ops.iter() {
            let (k, op) = item?;
            if now.saturating_sub(op.finished_at) > PUT_OP_TTL_SECS {
                self.put_ops.remove_lazy(&k)?;
            } else {
                ops.push((k, op.finished_at));
            }
        }
        if ops.len() >= MAX_PUT_OPS {
            ops.sort_by_key(|(_, at)| *at);
            for (k, _) in &ops[..=ops.len() - MAX_PUT_OPS] {
                self.put_ops.remove_lazy(k)?;
            }
        }
        self.put_ops.insert(
            &id,
            &PutOp {
                result: result.clone(),
                finished_at: now,
            },
        )
    }

    /// The file of this name already stored with exactly this content.
    async fn stored_copy(
        &self,
        file: &std::fs::File,
        name: &str,
        size: u64,
    ) -> Result<Option<Manifest>> {
        let same: Vec<Manifest> = self
            .manifests
            .files()?
            .into_iter()
            .filter(|m| m.name == name && m.size == size)
            .collect();
        if same.is_empty() {
            return Ok(None);
        }
        // Only now is the file read twice: once to compare, once to put.
        let file = file
            .try_clone()
            .map_err(|e| Error::InvalidPath(format!("cannot read the file: {e}")))?;
        let digest = tokio::task::spawn_blocking(move || content_digest(&file, size)).await??;
        Ok(same.into_iter().find(|m| m.content_digest == digest))
    }

    /// Stores a file of the client's own `kind` at the default scheme,
    /// on providers among `prefer` if there are enough of them.
    pub(super) async fn put_as(
        &self,
        path: &Path,
        term: Option<Term>,
        kind: FileKind,
        prefer: Option<HashSet<PeerId>>,
    ) -> Result<p2pstore_rpc::PutResult> {
        self.put_once(path, None, term, true, None, kind, prefer)
            .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn put_once(
        &self,
        path: &Path,
        scheme: Option<Scheme>,
        term: Option<Term>,
        force: bool,
        op_id: Option<String>,
        kind: FileKind,
        prefer: Option<HashSet<PeerId>>,
    ) -> Result<p2pstore_rpc::PutResult> {
        let progress =
            Arc::new(
                self.progress
                    .start(op_id, TransferKind::Put, TransferPhase::Planning, 0),
            );
        let result = self
            .put_tracked(path, scheme, term, force, kind, prefer, &progress)
            .await;
        progress.finish(&result);
        result
    }

    #[allow(clippy::too_many_arguments)]
    async fn put_tracked(
        &self,
        path: &Path,
        scheme: Option<Scheme>,
        term: Option<Term>,
        force: bool,
        kind: FileKind,
        prefer: Option<HashSet<PeerId>>,
        progress: &Arc<Guard>,
    ) -> Result<p2pstore_rpc::PutResult> {
        let scheme = scheme.unwrap_or(self.default_scheme);
        let (file, name, size) = open_source(path)?;
        progress.set_total(size);
        if !force && let Some(m) = self.stored_copy(&file, &name, size).await? {
            info!(file_id = %m.file_id.short(), "content stored already: nothing to put");
            progress.file(&m.file_id);
            progress.add(size);
            return Ok(put_result(&m, true));
        }
        // Fail fast: without bitcoind nothing could be paid for.
        let tip = u32::try_from(self.wallet.check_bitcoind().await?).unwrap_or(u32::MAX);
        let mut candidates = self.candidates(scheme.n as usize).await?;
        if let Some(prefer) = prefer {
            let preferred: Vec<Candidate> = candidates
                .iter()
                .filter(|c| prefer.contains(&c.peer))
                .cloned()
                .collect();
            if preferred.len() >= scheme.n as usize {
                candidates = preferred;
            }
        }
        let count = size.div_ceil(SEGMENT_SIZE as u64).max(1);
        // A put knows every shard's size from the file's size and the
        // scheme, so it contracts before it seals anything, and seals and
        // codes each segment exactly once.
        let seg = SEGMENT_SIZE as u64;
        let sizes: Vec<u64> = (0..count)
            .map(|i| scheme.shard_len((seg.min(size - i * seg) + TAG_LEN as u64) as usize) as u64)
            .collect();
        let term = term.unwrap_or(Term::Until(tip.saturating_add(self.term_blocks)));
        let term_end = match term {
            Term::Until(h) if h <= tip => {
                return Err(Error::InvalidParams(format!(
                    "the term must end after the current height {tip}"
                )));
            }
            Term::Until(h) => h,
            // Renewed period by period for as long as the file exists.
            Term::Keep => tip.saturating_add(self.term_blocks),
        };
        let file_id = FileId::random()?;
        progress.file(&file_id);
        progress.phase(TransferPhase::Contracts);
        let span = info_span!("put", file_id = %file_id.short(), scheme = %scheme.label());
        // Shards go to the best providers; one that gives no usable quote
        // is replaced by the next best, up to PLACEMENT_SPARES of them.
        // Nothing has been paid when a quote fails.
        let mut spares_used = 0;
        let (assignment, acquired) = loop {
            if candidates.len() < scheme.n as usize {
                return Err(Error::NoProvider(format!(
                    "found {} suitable provider(s); {}-of-{} redundancy needs {}",
                    candidates.len(),
                    scheme.k,
                    scheme.n,
                    scheme.n
                )));
            }
            let assignment = place(&sizes, &candidates, scheme)?;
            let needs = needs_of(&sizes, &assignment, &candidates);
            match self
                .acquire(&needs, term_end, Some(progress))
                .instrument(span.clone())
                .await
            {
                Ok(acquired) => break (assignment, acquired),
                Err(AcquireFailure::Quotes(refused, e))
                    if spares_used + refused.len() <= PLACEMENT_SPARES =>
                {
                    warn!(parent: &span, providers = refused.len(), "no usable quote ({e}); placing their shards at spares");
                    spares_used += refused.len();
                    for peer in &refused {
                        self.directory.failed(peer);
                    }
                    candidates.retain(|c| !refused.contains(&c.peer));
                }
                Err(f) => return Err(f.into()),
            }
        };
        let targets: Vec<Vec<Target>> = assignment
            .iter()
            .map(|chosen| {
                chosen
                    .iter()
                    .map(|&c| Target {
                        peer: candidates[c].peer,
                        contract_id: contract_with(&acquired, &candidates[c].peer),
                    })
                    .collect()
            })
            .collect();
        let job = Arc::new(UploadJob {
            file,
            key: FileKey::derive(&self.keys.file_master, &file_id),
            file_id,
            size,
            count,
            scheme,
            client: self.net.local_peer_id(),
            reliability: self.reliability.clone(),
            upload: self.uploads.start(),
        });
        let result = self
            .upload_and_record(&job, &targets, name, term, kind, progress)
            .instrument(span.clone())
            .await;
        if let Err(e) = &result {
            warn!(parent: &span, "put failed: {e}");
            self.release(&acquired, &job.upload.stored()).await;
        }
        self.unhold(&acquired);
        result
    }

    async fn upload_and_record(
        &self,
        job: &Arc<UploadJob>,
        targets: &[Vec<Target>],
        name: String,
        term: Term,
        kind: FileKind,
        progress: &Arc<Guard>,
    ) -> Result<p2pstore_rpc::PutResult> {
        progress.phase(TransferPhase::Upload);
        // After a failure no segment starts, but those under way finish:
        // a store dropped half-way may still land at its provider, where
        // the cleanup would not know to delete it.
        let failed = Arc::new(AtomicBool::new(false));
        let results = futures::stream::iter(0..job.count)
            .map(|i| {
                let job = job.clone();
                let net = self.net.clone();
                let progress = progress.clone();
                let targets = targets[i as usize].clone();
                let failed = failed.clone();
                async move {
                    if failed.load(Ordering::Relaxed) {
                        return Ok(None);
                    }
                    let r = job.upload(&net, i, &targets, &progress).await;
                    if r.is_err() {
                        failed.store(true, Ordering::Relaxed);
                    }
                    r.map(|r| Some((i, r)))
                }
            })
            // Unordered: a segment held up by one slow shard does not stop
            // the next from starting; the manifest is sorted afterwards.
            .buffer_unordered(PIPELINE)
            .collect::<Vec<Result<Option<(u64, (Segment, Hash))>>>>()
            .await;
        let mut uploaded = Vec::with_capacity(results.len());
        for r in results {
            if let Some(done) = r? {
                uploaded.push(done);
            }
        }
        uploaded.sort_unstable_by_key(|(i, _)| *i);
        let (segments, hashes): (Vec<Segment>, Vec<Hash>) =
            uploaded.into_iter().map(|(_, r)| r).unzip();
        let manifest = Manifest {
            version: MANIFEST_VERSION,
            file_id: job.file_id,
            name: name.clone(),
            size: job.size,
            created_at: now_secs(),
            segment_size: SEGMENT_SIZE as u64,
            scheme: job.scheme,
            term,
            kind,
            content_digest: digest_of(&hashes),
            segments,
        };
        // Every shard is at its provider, and no record says so.
        crate::failpoint::hit("before-put-recorded");
        self.manifests.insert(&manifest)?;
        crate::failpoint::hit("after-put-recorded");
        info!(size = job.size, "put finished");
        Ok(put_result(&manifest, false))
    }

    /// Providers the client will use, from the directory's fresh offers
    /// (refreshed until `want` are fresh, if it can), best first:
    /// protocol, term, price cap and audit score filter them; price
    /// weighted by audit score and standing ranks them, then free space,
    /// and providers equal on both are shuffled, so load spreads.
    pub(super) async fn candidates(&self, want: usize) -> Result<Vec<Candidate>> {
        let offers = self.affordable(self.directory.ensure(want).await?)?;
        let mut paying = self.paying_period()?;
        let back: HashSet<PeerId> = offers
            .iter()
            .map(|f| f.peer)
            .filter(|p| paying.contains(p))
            .collect();
        if !back.is_empty() {
            self.renotify_periods(&back).await?;
            paying = self.paying_period()?;
        }
        let mut out: Vec<Candidate> = offers
            .into_iter()
            // Below the minimum audit score, or a period being paid: no
            // new shards.
            .filter(|f| self.audits.eligible(&f.peer) && !paying.contains(&f.peer))
            .map(|f| Candidate {
                group: f.ip.map(NetGroup::of),
                score: self.reliability.get(&f.peer).standing() * self.audit_score(&f.peer),
                peer: f.peer,
                offer: f.offer,
            })
            .collect();
        rank(&mut out);
        Ok(out)
    }

    /// Offers the client accepts: its protocol, its term, its price cap.
    fn affordable(&self, offers: Vec<FoundProvider>) -> Result<Vec<FoundProvider>> {
        if offers.is_empty() {
            return Err(Error::NoProvider("no providers found in the DHT".into()));
        }
        let term = self.term_blocks;
        let usable: Vec<_> = offers
            .iter()
            .filter(|f| {
                let o = &f.offer;
                o.protocol_version == PROTOCOL_VERSION
                    && o.max_shard_bytes >= MAX_SHARD_BYTES
                    && (o.min_term_blocks..=o.max_term_blocks).contains(&term)
            })
            .cloned()
            .collect();
        if usable.is_empty() {
            return Err(Error::NoProvider(format!(
                "{} provider(s) found, none accepts a {term}-block term",
                offers.len()
            )));
        }
        let max = self.max_price_sat_per_gib_month;
        let cheap: Vec<_> = usable
            .iter()
            .filter(|f| f.offer.price_sat_per_gib_month <= max)
            .cloned()
            .collect();
        if cheap.is_empty() {
            let lowest = usable
                .iter()
                .map(|f| f.offer.price_sat_per_gib_month)
                .min()
                .unwrap_or(0);
            return Err(Error::PriceTooHigh(format!(
                "the cheapest offer is {lowest} sat/GiB/month, above the maximum of {max} (--max-price-sat-per-gib-month)"
            )));
        }
        Ok(cheap)
    }
}

fn put_result(m: &Manifest, existing: bool) -> p2pstore_rpc::PutResult {
    p2pstore_rpc::PutResult {
        file_id: m.file_id.to_string(),
        name: m.name.clone(),
        size: m.size,
        segments: m.segments.len() as u64,
        redundancy: m.scheme.label(),
        providers: m.providers().iter().map(|p| p.to_string()).collect(),
        existing,
    }
}

/// A file's content digest: BLAKE3 over its segments' plaintext hashes.
fn digest_of(hashes: &[Hash]) -> [u8; 32] {
    let mut digest = blake3::Hasher::new();
    for h in hashes {
        digest.update(h);
    }
    *digest.finalize().as_bytes()
}

/// The content digest of `size` bytes of `file`, as put records it.
fn content_digest(file: &std::fs::File, size: u64) -> Result<[u8; 32]> {
    let seg = SEGMENT_SIZE as u64;
    let mut buf = vec![0u8; SEGMENT_SIZE];
    let mut hashes = Vec::with_capacity(size.div_ceil(seg) as usize);
    for offset in (0..size).step_by(SEGMENT_SIZE) {
        let len = seg.min(size - offset) as usize;
        file.read_exact_at(&mut buf[..len], offset)
            .map_err(|e| Error::InvalidPath(format!("reading the file: {e}")))?;
        hashes.push(content_hash(&buf[..len]));
    }
    if size == 0 {
        hashes.push(content_hash(&[]));
    }
    Ok(digest_of(&hashes))
}

fn open_source(path: &Path) -> Result<(std::fs::File, String, u64)> {
    let meta = std::fs::metadata(path)
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
    let file = std::fs::File::open(path)
        .map_err(|e| Error::InvalidPath(format!("cannot open {}: {e}", path.display())))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".into());
    Ok((file, name, meta.len()))
}

/// What to buy from each candidate `assignment` uses: the bytes of the
/// shards placed on it, at its offer.
fn needs_of(sizes: &[u64], assignment: &[Vec<usize>], cands: &[Candidate]) -> Vec<Need> {
    let mut bytes = vec![0u64; cands.len()];
    for (size, chosen) in sizes.iter().zip(assignment) {
        for &c in chosen {
            bytes[c] += size;
        }
    }
    cands
        .iter()
        .zip(&bytes)
        .filter(|(_, b)| **b > 0)
        .map(|(c, b)| Need {
            peer: c.peer,
            offer: c.offer.clone(),
            bytes: *b,
        })
        .collect()
}

/// Picks `n` distinct candidates with `size` bytes free, best first,
/// preferring distinct IP addresses while there are enough of them.
pub(super) fn pick_distinct(
    cands: &[Candidate],
    free: &[u64],
    size: u64,
    n: usize,
    exclude: &[PeerId],
) -> Option<Vec<usize>> {
    let eligible: Vec<usize> = (0..cands.len())
        .filter(|&i| free[i] >= size && !exclude.contains(&cands[i].peer))
        .collect();
    let mut chosen: Vec<usize> = Vec::with_capacity(n);
    let mut groups = HashSet::new();
    for &i in &eligible {
        if chosen.len() < n && cands[i].group.is_none_or(|g| groups.insert(g)) {
            chosen.push(i);
        }
    }
    for &i in &eligible {
        if chosen.len() < n && !chosen.contains(&i) {
            chosen.push(i);
        }
    }
    (chosen.len() == n).then_some(chosen)
}

/// Why a rebuilt shard has nowhere to go: each suitable provider already
/// holds a shard of the segment or has too little room; and how many
/// providers are backing off after failing again when asked (in a small
/// network they may be the only spares).
pub(super) fn no_home(
    segment: usize,
    need: usize,
    size: u64,
    cands: &[Candidate],
    free: &[u64],
    holders: &[PeerId],
    backing_off: usize,
) -> Error {
    let holding = cands.iter().filter(|c| holders.contains(&c.peer)).count();
    let small = cands
        .iter()
        .zip(free)
        .filter(|(c, f)| !holders.contains(&c.peer) && **f < size)
        .count();
    let mut why = format!(
        "repair of segment {segment} needs {need} more provider(s) with {size} bytes free: \
         of {} suitable provider(s), {holding} hold a shard of it and {small} have less room",
        cands.len()
    );
    if backing_off > 0 {
        why.push_str(&format!(
            "; {backing_off} more failed lately and are asked again after a backoff"
        ));
    }
    Error::NoProvider(why)
}

/// For each segment (of shards of `sizes[i]` bytes), the candidate index
/// of each of its n shards. Fills the best providers first; fails when
/// space runs out anywhere.
fn place(sizes: &[u64], cands: &[Candidate], scheme: Scheme) -> Result<Vec<Vec<usize>>> {
    let mut free: Vec<u64> = cands.iter().map(|c| c.offer.free_bytes).collect();
    let mut out = Vec::with_capacity(sizes.len());
    for (i, &size) in sizes.iter().enumerate() {
        let chosen = pick_distinct(cands, &free, size, scheme.n as usize, &[]).ok_or_else(|| {
            let total = sizes
                .iter()
                .fold(0u64, |a, s| a.saturating_add(s.saturating_mul(scheme.n as u64)));
            Error::NoProvider(format!(
                "{} provider(s) found, not enough room: the file needs {total} bytes of shards, \
                 and segment {i} needs {} provider(s) with {size} bytes free each",
                cands.len(),
                scheme.n
            ))
        })?;
        for &c in &chosen {
            free[c] -= size;
        }
        out.push(chosen);
    }
    Ok(out)
}

struct UploadJob {
    file: std::fs::File,
    key: FileKey,
    file_id: FileId,
    size: u64,
    count: u64,
    scheme: Scheme,
    client: PeerId,
    reliability: Reliability,
    /// The stores: pending until the put is recorded or cleaned up.
    upload: Upload,
}

impl UploadJob {
    fn read_segment(&self, i: u64) -> Result<Vec<u8>> {
        // The buffer has room for the tag, so sealing never reallocates.
        let seg = SEGMENT_SIZE as u64;
        let offset = i * seg;
        let len = seg.min(self.size - offset);
        let mut buf = Vec::with_capacity(len as usize + TAG_LEN);
        buf.resize(len as usize, 0);
        self.file.read_exact_at(&mut buf, offset).map_err(|e| {
            Error::InvalidPath(format!(
                "reading segment {i}: {e} (did the file change during put?)"
            ))
        })?;
        Ok(buf)
    }

    /// Reads, seals, codes and sends segment `i`, once; returns the
    /// manifest's segment and the plaintext's hash.
    async fn upload(
        self: Arc<Self>,
        net: &NetClient,
        i: u64,
        targets: &[Target],
        progress: &Op,
    ) -> Result<(Segment, Hash)> {
        let job = self.clone();
        let (nonce, plain_hash, plain_len, cipher_len, shards) =
            tokio::task::spawn_blocking(move || -> Result<_> {
                let mut buf = perf::time(Stage::Read, || job.read_segment(i))?;
                let plain_hash = perf::time(Stage::Hash, || content_hash(&buf));
                let plain_len = buf.len() as u64;
                let nonce = perf::time(Stage::Seal, || {
                    job.key.seal(&job.file_id, i, job.count, &mut buf)
                })?;
                let coded = perf::time(Stage::Code, || job.scheme.encode(&buf))?;
                let shards: Vec<(ShardId, Vec<u8>)> = perf::time(Stage::Hash, || {
                    coded.into_iter().map(|s| (ShardId::of(&s), s)).collect()
                });
                Ok((nonce, plain_hash, plain_len, buf.len() as u64, shards))
            })
            .await??;
        let n = shards.len().max(1) as u64;
        let sends = shards
            .into_iter()
            .zip(targets)
            .enumerate()
            .map(|(j, ((id, data), t))| {
                let job = self.clone();
                async move {
                    let spec = ShardSpec {
                        id,
                        size: data.len() as u64,
                    };
                    let started = Instant::now();
                    let r = job.upload.store(net, job.client, *t, &spec, data).await;
                    match &r {
                        Ok(_) => {
                            job.reliability.success(&t.peer, started.elapsed());
                            // The bar moves as shards land, not per segment.
                            progress.add(plain_len / n);
                        }
                        Err(_) => job.reliability.failure(&t.peer),
                    }
                    r.map(|receipt| ShardRef {
                        index: j as u16,
                        shard_id: spec.id,
                        size: spec.size,
                        provider: t.peer,
                        contract_id: t.contract_id,
                        receipt,
                    })
                }
            });
        let started = Instant::now();
        // Every send finishes, so that a failure leaves no store in flight
        // (see upload_and_record).
        let refs = futures::future::join_all(sends)
            .await
            .into_iter()
            .collect::<Result<Vec<ShardRef>>>()?;
        perf::add(Stage::Network, started.elapsed());
        progress.add(plain_len - plain_len / n * n);
        Ok((
            Segment {
                nonce,
                plain_len,
                cipher_len,
                shards: refs,
            },
            plain_hash,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    #[test]
    fn a_repair_with_nowhere_to_go_says_why() {
        let cands = [
            cand(10, [10, 0, 0, 1]),
            cand(1, [10, 1, 0, 1]),
            cand(10, [10, 2, 0, 1]),
        ];
        let free: Vec<u64> = cands.iter().map(|c| c.offer.free_bytes).collect();
        let holders = [cands[0].peer, cands[2].peer];
        assert!(pick_distinct(&cands, &free, 5, 1, &holders).is_none());
        let msg = no_home(3, 1, 5, &cands, &free, &holders, 2).to_string();
        assert!(
            msg.contains("of 3 suitable provider(s), 2 hold a shard of it and 1 have less room"),
            "{msg}"
        );
        assert!(msg.contains("2 more failed lately"), "{msg}");
        let msg = no_home(3, 1, 5, &cands, &free, &holders, 0).to_string();
        assert!(!msg.contains("failed lately"), "{msg}");
    }

    fn cand(free: u64, ip: [u8; 4]) -> Candidate {
        Candidate {
            peer: PeerId::random(),
            offer: Offer {
                protocol_version: PROTOCOL_VERSION,
                free_bytes: free,
                price_sat_per_gib_month: 1,
                min_term_blocks: 1,
                max_term_blocks: 10_000,
                max_shard_bytes: MAX_SHARD_BYTES,
            },
            group: Some(NetGroup::of(IpAddr::from(ip))),
            score: 0.5,
        }
    }

    #[test]
    fn single_copy_fills_best_first_and_spills() {
        let cands = vec![cand(250, [1, 1, 1, 1]), cand(1000, [1, 1, 1, 1])];
        let p = place(&[100, 100, 100], &cands, Scheme::LOW).unwrap();
        assert_eq!(p, vec![vec![0], vec![0], vec![1]]);
        assert!(matches!(
            place(&[2000], &cands, Scheme::LOW),
            Err(Error::NoProvider(_))
        ));
    }

    #[test]
    fn shards_of_a_segment_go_to_distinct_providers_and_networks() {
        // Two in one /16, three elsewhere: 3 distinct /16s are preferred.
        let cands = vec![
            cand(1000, [1, 1, 1, 1]),
            cand(1000, [1, 1, 9, 9]),
            cand(1000, [2, 2, 2, 2]),
            cand(1000, [3, 3, 3, 3]),
            cand(1000, [4, 4, 4, 4]),
        ];
        let p = place(&[10], &cands, Scheme { k: 2, n: 3 }).unwrap();
        assert_eq!(p, vec![vec![0, 2, 3]]);
        // With too few distinct IPs, the same IP is used again.
        let p = place(&[10], &cands, Scheme { k: 2, n: 5 }).unwrap();
        let mut got = p[0].clone();
        got.sort();
        assert_eq!(got, vec![0, 1, 2, 3, 4]);
        assert!(place(&[10], &cands[..3], Scheme::MEDIUM).is_err());
    }
}
