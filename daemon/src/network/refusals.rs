//! Logging of refused peer requests, rate-limited per peer: a peer that
//! floods us must not flood the log too. The first refusal of a peer is
//! logged, then at most one line per [`LOG_EVERY`] with the count of those
//! not logged.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use libp2p::PeerId;
use tracing::info;

/// At most one line per peer this often.
pub const LOG_EVERY: Duration = Duration::from_secs(60);
/// Peers tracked at once; past it, refusals of new peers are counted but
/// not logged until [`RefusalLog::prune`] makes room.
const MAX_TRACKED: usize = 4096;

struct Entry {
    logged_at: Instant,
    unlogged: u64,
}

#[derive(Default)]
pub struct RefusalLog {
    peers: HashMap<PeerId, Entry>,
    /// Every refusal since start, logged or not.
    total: u64,
    /// Refusals of peers not tracked because the table was full.
    untracked: u64,
}

impl RefusalLog {
    /// Records that a request of `peer` was refused, and logs it unless
    /// this peer's line for the current interval is already written.
    /// `why` is our own text, never the peer's.
    pub fn refused(&mut self, peer: PeerId, what: &'static str, why: &str) {
        self.total += 1;
        let now = Instant::now();
        let full = self.peers.len() >= MAX_TRACKED;
        match self.peers.get_mut(&peer) {
            Some(e) if now.duration_since(e.logged_at) < LOG_EVERY => e.unlogged += 1,
            Some(e) => {
                info!(%peer, unlogged = e.unlogged, "refused {what}: {why}");
                e.logged_at = now;
                e.unlogged = 0;
            }
            None if full => self.untracked += 1,
            None => {
                info!(%peer, "refused {what}: {why} (further refusals of this peer are logged once a minute)");
                self.peers.insert(
                    peer,
                    Entry {
                        logged_at: now,
                        unlogged: 0,
                    },
                );
            }
        }
    }

    /// Forgets peers whose interval has passed, writing the count of what
    /// was not logged, so the table follows the peers refused now.
    pub fn prune(&mut self) {
        let now = Instant::now();
        self.peers.retain(|peer, e| {
            let keep = now.duration_since(e.logged_at) < LOG_EVERY;
            if !keep && e.unlogged > 0 {
                info!(%peer, unlogged = e.unlogged, "more refused requests");
            }
            keep
        });
        if self.untracked > 0 {
            info!(
                count = self.untracked,
                "refused requests of peers not tracked"
            );
            self.untracked = 0;
        }
    }

    pub fn total(&self) -> u64 {
        self.total
    }

    #[cfg(test)]
    fn unlogged(&self, peer: &PeerId) -> Option<u64> {
        self.peers.get(peer).map(|e| e.unlogged)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_is_counted_not_logged() {
        let mut log = RefusalLog::default();
        let peer = PeerId::random();
        for _ in 0..1000 {
            log.refused(peer, "a request", "queue full");
        }
        assert_eq!(log.total(), 1000);
        // One line written, the other 999 counted for the next.
        assert_eq!(log.unlogged(&peer), Some(999));
        log.prune();
        assert_eq!(log.unlogged(&peer), Some(999), "interval not over yet");
    }

    #[test]
    fn the_table_is_bounded() {
        let mut log = RefusalLog::default();
        for _ in 0..MAX_TRACKED + 10 {
            log.refused(PeerId::random(), "a request", "queue full");
        }
        assert_eq!(log.peers.len(), MAX_TRACKED);
        assert_eq!(log.untracked, 10);
    }
}
