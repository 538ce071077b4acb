//! What a client remembers of each provider: stores and fetches that worked
//! or failed, and how fast they answered. Persisted in sled so a restart
//! does not forget who lost data.

use std::time::Duration;

use libp2p::PeerId;
use serde::{Deserialize, Serialize};

use crate::db::{Tree, trees};

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct PeerStats {
    pub ok: u64,
    pub failed: u64,
    /// Exponentially weighted latency of successful requests.
    pub latency_ms: f64,
}

impl PeerStats {
    /// Laplace-smoothed success rate in (0, 1]: a stranger scores 0.5,
    /// and every failure costs more than a success earns back.
    pub fn score(&self) -> f64 {
        (self.ok as f64 + 1.0) / (self.ok as f64 + 2.0 * self.failed as f64 + 2.0)
    }

    /// Standing for placement, in (0, 1]: 1 until a first failure, then
    /// lower with each failure against the successes. Unlike [`score`],
    /// a stranger is not marked down: a provider that is never chosen
    /// never builds a record, and load piles on the first ones tried.
    ///
    /// [`score`]: PeerStats::score
    pub fn standing(&self) -> f64 {
        (self.ok as f64 + 1.0) / (self.ok as f64 + 2.0 * self.failed as f64 + 1.0)
    }
}

#[derive(Clone)]
pub struct Reliability {
    tree: Tree<PeerId, PeerStats>,
}

impl Reliability {
    pub fn open(db: &sled::Db) -> crate::Result<Self> {
        Ok(Reliability {
            tree: Tree::open(db, trees::RELIABILITY)?,
        })
    }

    pub fn get(&self, peer: &PeerId) -> PeerStats {
        self.tree.get(peer).ok().flatten().unwrap_or_default()
    }

    /// Statistics are advisory: a failure to record one is not worth
    /// failing a transfer over, and sled flushes them in the background.
    fn update(&self, peer: &PeerId, f: impl Fn(&mut PeerStats)) {
        let _ = self.tree.upsert_lazy(peer, f);
    }

    pub fn success(&self, peer: &PeerId, took: Duration) {
        let ms = took.as_secs_f64() * 1000.0;
        self.update(peer, |s| {
            s.latency_ms = if s.ok == 0 {
                ms
            } else {
                0.8 * s.latency_ms + 0.2 * ms
            };
            s.ok = s.ok.saturating_add(1);
        });
    }

    pub fn failure(&self, peer: &PeerId) {
        self.update(peer, |s| s.failed = s.failed.saturating_add(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_lower_the_score_and_persist() {
        let dir = tempfile::tempdir().unwrap();
        let peer = PeerId::random();
        {
            let db = sled::open(dir.path()).unwrap();
            let r = Reliability::open(&db).unwrap();
            assert_eq!(r.get(&peer).score(), 0.5);
            assert_eq!(r.get(&peer).standing(), 1.0, "a stranger stands level");
            r.success(&peer, Duration::from_millis(10));
            r.success(&peer, Duration::from_millis(20));
            assert_eq!(r.get(&peer).standing(), 1.0);
            let good = r.get(&peer).score();
            r.failure(&peer);
            assert!(r.get(&peer).score() < good);
            assert!(r.get(&peer).standing() < 1.0);
            db.flush().unwrap();
        }
        let db = sled::open(dir.path()).unwrap();
        let s = Reliability::open(&db).unwrap().get(&peer);
        assert_eq!((s.ok, s.failed), (2, 1));
        assert!(s.latency_ms > 10.0 && s.latency_ms < 20.0);
    }
}
