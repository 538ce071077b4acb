//! The client's provider directory: the providers it knows of from the
//! DHT, with the offers they last gave, so that a put asks nobody for an
//! offer and contacts only the providers it places shards on.
//!
//! Providers announce under one of [`PROVIDER_BUCKETS`] DHT keys
//! ([`ProviderBucket`]). A refresh looks up a few buckets (all of them
//! while the directory knows fewer than [`MIN_KNOWN`] providers, at most
//! every [`FULL_SCAN_INTERVAL`] unless a put is short of providers) and
//! asks a random sample of providers whose offer is older than
//! [`OFFER_TTL`] for a new one. The client never asks every provider in
//! the network, and never holds a connection to each.
//!
//! The background refresh starts only once the directory is first used
//! (a put, `providers`, `find-providers`): a node that only provides
//! never looks for providers. Before that rule, every provider of a
//! 60-node network scanned all 256 buckets a minute after it started,
//! and the network spent two minutes at full CPU answering the lookups
//! (scripts/scale.sh).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use libp2p::PeerId;
use rand::seq::SliceRandom;
use tracing::{debug, warn};

use super::FoundProvider;
use crate::error::{Error, Result};
use crate::network::Client as NetClient;
#[cfg(doc)]
use crate::protocol::PROVIDER_BUCKETS;
use crate::protocol::ProviderBucket;

/// An offer older than this is asked again before it is relied on.
pub const OFFER_TTL: Duration = Duration::from_secs(600);
/// How often the background task refreshes the directory.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(60);
/// Below this many known providers, a refresh looks up every bucket.
pub const MIN_KNOWN: usize = 32;
/// A refresh with few providers known looks up every bucket at most this
/// often: in a small network most buckets are empty, and each empty
/// bucket's lookup still walks the DHT. A put short of providers scans
/// at once regardless ([`Directory::ensure`]).
pub const FULL_SCAN_INTERVAL: Duration = Duration::from_secs(600);
/// Buckets a routine refresh looks up, to learn of newcomers.
pub const LOOKUPS_PER_REFRESH: usize = 4;
/// DHT lookups run at once.
pub const LOOKUP_PARALLEL: usize = 8;
/// Providers a refresh asks for an offer.
pub const OFFER_SAMPLE: usize = 16;
/// Providers the directory remembers; past it, newly found ones are not
/// added until others are forgotten.
pub const MAX_KNOWN: usize = 4096;
/// A provider that failed us (no offer, a transfer cut off) is not asked
/// again for this long after its first failure, four times as long after
/// each next one, and is forgotten after [`FORGET_AFTER_FAILURES`]. Short
/// at first because the common failure is a restart, and in a small
/// network the one spare provider may be the one that restarted: a
/// repair then has nowhere else to go (a 5-minute backoff failed the chaos
/// test's repairs).
pub const FAILURE_BACKOFF: Duration = Duration::from_secs(10);
/// The longest a provider is left alone.
pub const MAX_FAILURE_BACKOFF: Duration = Duration::from_secs(300);
pub const FORGET_AFTER_FAILURES: u32 = 3;
/// Refreshes one call to [`Directory::ensure`] runs at most.
pub const MAX_ENSURE_ROUNDS: usize = 4;

#[derive(Default)]
struct Entry {
    /// The provider as its last offer showed it, and when.
    offer: Option<(FoundProvider, Instant)>,
    failures: u32,
    failed_at: Option<Instant>,
}

impl Entry {
    fn fresh(&self, now: Instant) -> Option<&FoundProvider> {
        self.offer
            .as_ref()
            .filter(|(_, at)| now.duration_since(*at) < OFFER_TTL)
            .map(|(f, _)| f)
    }

    fn backing_off(&self, now: Instant) -> bool {
        let growth = 4u32.saturating_pow(self.failures.saturating_sub(1));
        let backoff = FAILURE_BACKOFF
            .saturating_mul(growth)
            .min(MAX_FAILURE_BACKOFF);
        self.failed_at
            .is_some_and(|at| now.duration_since(at) < backoff)
    }
}

/// One bucket's lookup: what it found and how long it took.
#[derive(Debug, Clone)]
pub struct Lookup {
    pub bucket: ProviderBucket,
    pub peers: Vec<PeerId>,
    pub elapsed: Duration,
}

#[derive(Clone)]
pub struct Directory {
    net: NetClient,
    entries: Arc<Mutex<HashMap<PeerId, Entry>>>,
    /// One refresh at a time: concurrent puts wait for it rather than
    /// start lookups of their own. Holds when the last full scan began.
    refreshing: Arc<tokio::sync::Mutex<Option<Instant>>>,
    /// Set the first time the directory is used; the background refresh
    /// waits for it.
    in_use: Arc<tokio::sync::watch::Sender<bool>>,
}

/// How far a refresh looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scan {
    /// A few buckets, or every one when few providers are known and no
    /// full scan ran for [`FULL_SCAN_INTERVAL`].
    Routine,
    /// Every bucket.
    Full,
}

impl Directory {
    pub fn new(net: NetClient) -> Self {
        Directory {
            net,
            entries: Arc::default(),
            refreshing: Arc::default(),
            in_use: Arc::new(tokio::sync::watch::Sender::new(false)),
        }
    }

    /// Marks the directory used, which starts its background refresh.
    fn activate(&self) {
        self.in_use
            .send_if_modified(|used| !std::mem::replace(used, true));
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, HashMap<PeerId, Entry>>> {
        self.entries
            .lock()
            .map_err(|_| Error::Internal("provider directory poisoned".into()))
    }

    /// Providers known, with a fresh offer or not.
    pub fn known(&self) -> usize {
        self.lock().map(|e| e.len()).unwrap_or(0)
    }

    /// Every provider with a fresh offer.
    pub fn fresh(&self) -> Result<Vec<FoundProvider>> {
        let now = Instant::now();
        Ok(self
            .lock()?
            .values()
            .filter_map(|e| e.fresh(now).cloned())
            .collect())
    }

    /// Providers not asked for an offer now because they failed lately.
    pub fn backing_off(&self) -> usize {
        let now = Instant::now();
        self.lock()
            .map(|e| e.values().filter(|e| e.backing_off(now)).count())
            .unwrap_or(0)
    }

    /// When `peer`'s offer was taken, if the directory has one.
    pub fn offer_age(&self, peer: &PeerId) -> Option<Duration> {
        let e = self.lock().ok()?;
        e.get(peer)
            .and_then(|e| e.offer.as_ref())
            .map(|(_, at)| at.elapsed())
    }

    /// We bought `bytes` of a provider's space: its cached offer shows
    /// that much less free, so the next put does not count on it.
    pub fn used(&self, peer: &PeerId, bytes: u64) {
        if let Ok(mut entries) = self.lock()
            && let Some((f, _)) = entries.get_mut(peer).and_then(|e| e.offer.as_mut())
        {
            f.offer.free_bytes = f.offer.free_bytes.saturating_sub(bytes);
        }
    }

    /// A provider failed us (no offer, a refused proposal): its offer is
    /// no longer trusted, and it is left alone for a while.
    pub fn failed(&self, peer: &PeerId) {
        let Ok(mut entries) = self.lock() else {
            return;
        };
        let Some(e) = entries.get_mut(peer) else {
            return;
        };
        e.offer = None;
        e.failures += 1;
        e.failed_at = Some(Instant::now());
        if e.failures >= FORGET_AFTER_FAILURES {
            debug!(%peer, "forgetting a provider that keeps failing");
            entries.remove(peer);
        }
    }

    /// Looks up `buckets` in the DHT, [`LOOKUP_PARALLEL`] at a time, and
    /// adds every provider found.
    pub async fn look_up(&self, buckets: Vec<ProviderBucket>) -> Vec<Lookup> {
        self.activate();
        let me = self.net.local_peer_id();
        let lookups: Vec<(ProviderBucket, Result<_>, Duration)> =
            futures::stream::iter(buckets.into_iter().map(|bucket| async move {
                let started = Instant::now();
                let r = self.net.get_providers(bucket).await;
                (bucket, r, started.elapsed())
            }))
            .buffer_unordered(LOOKUP_PARALLEL)
            .collect()
            .await;
        let mut out = Vec::with_capacity(lookups.len());
        let Ok(mut entries) = self.lock() else {
            return out;
        };
        for (bucket, r, elapsed) in lookups {
            let found = match r {
                Ok(peers) => peers,
                Err(e) => {
                    warn!(bucket = bucket.index(), "provider lookup failed: {e}");
                    Default::default()
                }
            };
            let peers: Vec<PeerId> = found.into_iter().filter(|p| *p != me).collect();
            for peer in &peers {
                if entries.len() < MAX_KNOWN || entries.contains_key(peer) {
                    entries.entry(*peer).or_default();
                }
            }
            out.push(Lookup {
                bucket,
                peers,
                elapsed,
            });
        }
        out
    }

    /// Looks up some buckets (every one while few providers are known, at
    /// most every [`FULL_SCAN_INTERVAL`]), then asks up to `sample`
    /// providers without a fresh offer for one. Returns the providers
    /// that gave one.
    pub async fn refresh(&self, sample: usize) -> Result<Vec<FoundProvider>> {
        Ok(self.refresh_with(sample, Scan::Routine).await?.0)
    }

    /// [`Directory::refresh`], scanning every bucket when `scan` is
    /// [`Scan::Full`], and then asking providers backing off too: a put
    /// short of providers asks everyone it knows, since in a small network
    /// the one that just restarted may be the only one left. Also says
    /// whether it scanned every bucket.
    async fn refresh_with(&self, sample: usize, scan: Scan) -> Result<(Vec<FoundProvider>, Scan)> {
        let short = scan == Scan::Full;
        let mut last_full = self.refreshing.lock().await;
        let now = Instant::now();
        let full_due = last_full.is_none_or(|at| now.duration_since(at) >= FULL_SCAN_INTERVAL);
        let scan = if scan == Scan::Full || (self.known() < MIN_KNOWN && full_due) {
            Scan::Full
        } else {
            Scan::Routine
        };
        let mut buckets: Vec<ProviderBucket> = ProviderBucket::all().collect();
        buckets.shuffle(&mut rand::rng());
        match scan {
            Scan::Full => *last_full = Some(now),
            Scan::Routine => buckets.truncate(LOOKUPS_PER_REFRESH),
        }
        self.look_up(buckets).await;
        let now = Instant::now();
        let mut stale: Vec<PeerId> = self
            .lock()?
            .iter()
            .filter(|(_, e)| e.fresh(now).is_none() && (short || !e.backing_off(now)))
            .map(|(p, _)| *p)
            .collect();
        stale.shuffle(&mut rand::rng());
        stale.truncate(sample);
        let asked = futures::future::join_all(stale.into_iter().map(|peer| self.ask(peer))).await;
        Ok((asked.into_iter().flatten().collect(), scan))
    }

    /// Makes sure at least `want` providers have a fresh offer, refreshing
    /// as long as each round finds more; a round that finds none is
    /// followed by one over every bucket, unless it was one. Returns the
    /// fresh offers.
    pub async fn ensure(&self, want: usize) -> Result<Vec<FoundProvider>> {
        self.activate();
        let mut fresh = self.fresh()?;
        let mut scan = Scan::Routine;
        for _ in 0..MAX_ENSURE_ROUNDS {
            if fresh.len() >= want {
                break;
            }
            let before = fresh.len();
            let (_, scanned) = self
                .refresh_with(OFFER_SAMPLE.max(want - before), scan)
                .await?;
            fresh = self.fresh()?;
            if fresh.len() <= before {
                if scanned == Scan::Full {
                    break;
                }
                scan = Scan::Full;
            }
        }
        Ok(fresh)
    }

    async fn ask(&self, peer: PeerId) -> Option<FoundProvider> {
        match self.net.offer(peer).await {
            Ok(offer) => {
                let addrs = self.net.peer_addresses(peer).await.unwrap_or_default();
                let ip = self.net.observed_ip(peer).await.ok().flatten();
                let found = FoundProvider {
                    peer,
                    offer,
                    addrs,
                    ip,
                };
                if let Ok(mut entries) = self.lock() {
                    let e = entries.entry(peer).or_default();
                    e.offer = Some((found.clone(), Instant::now()));
                    e.failures = 0;
                    e.failed_at = None;
                }
                Some(found)
            }
            Err(e) => {
                debug!(%peer, "no offer: {e}");
                self.failed(&peer);
                None
            }
        }
    }

    /// Refreshes the directory every [`REFRESH_INTERVAL`] from its first
    /// use on, for as long as the node runs.
    pub fn spawn_refresh(&self) -> tokio::task::JoinHandle<()> {
        let dir = self.clone();
        let mut in_use = self.in_use.subscribe();
        tokio::spawn(async move {
            if in_use.wait_for(|used| *used).await.is_err() {
                return;
            }
            // Not at once: the use that started it just looked.
            let start = tokio::time::Instant::now() + REFRESH_INTERVAL;
            let mut tick = tokio::time::interval_at(start, REFRESH_INTERVAL);
            loop {
                tick.tick().await;
                if let Err(e) = dir.refresh(OFFER_SAMPLE).await {
                    warn!("provider directory refresh failed: {e}");
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_provider_is_left_alone_longer_each_time() {
        let t0 = Instant::now();
        let mut e = Entry {
            failures: 1,
            failed_at: Some(t0),
            ..Default::default()
        };
        assert!(e.backing_off(t0 + FAILURE_BACKOFF - Duration::from_millis(1)));
        assert!(!e.backing_off(t0 + FAILURE_BACKOFF));
        e.failures = 2;
        assert!(e.backing_off(t0 + FAILURE_BACKOFF * 3));
        assert!(!e.backing_off(t0 + FAILURE_BACKOFF * 4));
        e.failures = 30;
        assert!(e.backing_off(t0 + MAX_FAILURE_BACKOFF - Duration::from_millis(1)));
        assert!(!e.backing_off(t0 + MAX_FAILURE_BACKOFF));
    }
}
