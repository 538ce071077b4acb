//! The queue between the swarm and the services that answer peers: fair
//! across peers, bounded per peer and in all.
//!
//! One FIFO shared by every peer let a few peers that each keep many
//! valid requests in flight (fetches, stores, audits) take every worker
//! and every queue slot, so an honest peer's request waited behind theirs
//! or was dropped. Here
//! - each peer has its own queue, at most [`PEER_QUEUED`] long, and at
//!   most [`PEER_WORKERS`] of the [`WORKERS`] workers at once;
//! - workers take peers in turn (round robin), so a peer with one request
//!   waits for at most one request of each other peer;
//! - when all [`QUEUED`] slots are taken, a newcomer with fewer queued
//!   requests than the longest queue takes the newest slot of that queue
//!   (longest-queue drop, as fair queueing does), so floods refuse
//!   themselves rather than others;
//! - a refused request is handed back to be answered at once with a
//!   refusal the peer can tell from a dead node.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use libp2p::PeerId;
use libp2p::request_response::ResponseChannel;
use tokio::sync::Notify;

use crate::protocol::*;

/// Requests served at once, from all peers. Shard writes are fsync-bound;
/// a few in parallel keep the disk busy.
pub const WORKERS: usize = 16;
/// Requests of one peer served at once: half the workers, so one peer
/// never holds them all.
pub const PEER_WORKERS: usize = WORKERS / 2;
/// Requests waiting, from all peers. Each is fully read (a shard is up to
/// 4 MiB), so this bounds the memory peers can make us hold.
pub const QUEUED: usize = 32;
/// Requests of one peer waiting: a client's pipeline of stores or fetches
/// to one provider fits.
pub const PEER_QUEUED: usize = 12;

/// A request some peer sent us, with the channel to answer on.
pub enum Inbound {
    Control {
        peer: PeerId,
        request: ControlRequest,
        channel: ResponseChannel<ControlResponse>,
    },
    Shard {
        peer: PeerId,
        request: ShardRequest,
        channel: ResponseChannel<ShardResponse>,
    },
}

impl Inbound {
    pub fn peer(&self) -> PeerId {
        match self {
            Inbound::Control { peer, .. } | Inbound::Shard { peer, .. } => *peer,
        }
    }
}

/// Why a request was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The peer already has [`PEER_QUEUED`] requests waiting.
    PeerQuota,
    /// Every slot is taken by peers with no more waiting than this one.
    Full,
    /// Its slot went to a peer with fewer requests waiting.
    Evicted,
    /// Nothing serves requests any more.
    Closed,
}

impl Refusal {
    /// The answer the peer gets.
    pub fn wire_error(self) -> WireError {
        match self {
            Refusal::PeerQuota => WireError::new(
                WireErrorKind::RateLimited,
                format!("over this peer's quota of {PEER_QUEUED} waiting requests; retry later"),
            ),
            Refusal::Full | Refusal::Evicted => {
                WireError::new(WireErrorKind::Unavailable, "busy; retry later")
            }
            Refusal::Closed => WireError::new(WireErrorKind::Unavailable, "shutting down"),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::PeerQuota => "over its quota of waiting requests",
            Refusal::Full => "queue full",
            Refusal::Evicted => "evicted by a peer with fewer waiting",
            Refusal::Closed => "not serving",
        }
    }
}

struct PeerQueue<T> {
    waiting: VecDeque<T>,
    serving: usize,
}

impl<T> Default for PeerQueue<T> {
    fn default() -> Self {
        PeerQueue {
            waiting: VecDeque::new(),
            serving: 0,
        }
    }
}

struct State<T> {
    peers: HashMap<PeerId, PeerQueue<T>>,
    /// Peers with requests waiting, in the order they are served.
    turn: VecDeque<PeerId>,
    waiting: usize,
    serving: usize,
    closed: bool,
}

impl<T> State<T> {
    fn forget_if_idle(&mut self, peer: &PeerId) {
        if self
            .peers
            .get(peer)
            .is_some_and(|q| q.waiting.is_empty() && q.serving == 0)
        {
            self.peers.remove(peer);
        }
    }

    /// The waiting request to serve next, if a worker is free and some
    /// peer with a request waiting is under its share.
    fn next(&mut self) -> Option<(PeerId, T)> {
        if self.serving >= WORKERS {
            return None;
        }
        for _ in 0..self.turn.len() {
            let peer = self.turn.pop_front()?;
            let Some(q) = self.peers.get_mut(&peer) else {
                continue;
            };
            if q.serving >= PEER_WORKERS {
                self.turn.push_back(peer);
                continue;
            }
            let Some(item) = q.waiting.pop_front() else {
                continue;
            };
            q.serving += 1;
            if !q.waiting.is_empty() {
                self.turn.push_back(peer);
            }
            self.waiting -= 1;
            self.serving += 1;
            return Some((peer, item));
        }
        None
    }

    /// Queues `item`; Ok(Some) is another peer's request that gave up its
    /// slot for it.
    fn push(&mut self, peer: PeerId, item: T) -> Result<Option<(PeerId, T)>, (T, Refusal)> {
        if self.closed {
            return Err((item, Refusal::Closed));
        }
        let mine = self.peers.get(&peer).map_or(0, |q| q.waiting.len());
        if mine >= PEER_QUEUED {
            return Err((item, Refusal::PeerQuota));
        }
        let mut evicted = None;
        if self.waiting >= QUEUED {
            let longest = self
                .turn
                .iter()
                .filter_map(|p| self.peers.get(p).map(|q| (*p, q.waiting.len())))
                .max_by_key(|(_, n)| *n);
            match longest {
                // After the swap the victim still has at least as many
                // waiting as the newcomer.
                Some((victim, n)) if n > mine + 1 => {
                    if let Some(q) = self.peers.get_mut(&victim)
                        && let Some(old) = q.waiting.pop_back()
                    {
                        evicted = Some((victim, old));
                        self.waiting -= 1;
                    }
                }
                _ => return Err((item, Refusal::Full)),
            }
        }
        let q = self.peers.entry(peer).or_default();
        if q.waiting.is_empty() {
            self.turn.push_back(peer);
        }
        q.waiting.push_back(item);
        self.waiting += 1;
        Ok(evicted)
    }

    fn done(&mut self, peer: &PeerId) {
        self.serving -= 1;
        if let Some(q) = self.peers.get_mut(peer) {
            q.serving -= 1;
        }
        self.forget_if_idle(peer);
    }
}

struct Shared<T> {
    state: Mutex<State<T>>,
    /// Wakes the one consumer when a request or a worker becomes free.
    wake: Notify,
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // The state stays consistent at every unlock (no panics while held),
        // so a poisoned lock's data is still good.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The swarm's end: queues requests, never waits.
pub struct Sender<T = Inbound> {
    shared: Arc<Shared<T>>,
}

/// The services' end: takes requests in fair order.
pub struct Receiver<T = Inbound> {
    shared: Arc<Shared<T>>,
}

/// A worker's hold on its slot; dropping it frees the slot.
pub struct Ticket<T = Inbound> {
    shared: Arc<Shared<T>>,
    peer: PeerId,
}

pub fn queue<T>() -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            peers: HashMap::new(),
            turn: VecDeque::new(),
            waiting: 0,
            serving: 0,
            closed: false,
        }),
        wake: Notify::new(),
    });
    (
        Sender {
            shared: shared.clone(),
        },
        Receiver { shared },
    )
}

impl<T> Sender<T> {
    /// Queues `peer`'s request. Returns what must be answered with a
    /// refusal now: this request, or another peer's that gave up its slot.
    pub fn push(&self, peer: PeerId, item: T) -> Option<(PeerId, T, Refusal)> {
        let result = self.shared.lock().push(peer, item);
        match result {
            Ok(None) => {
                self.shared.wake.notify_one();
                None
            }
            Ok(Some((victim, evicted))) => {
                self.shared.wake.notify_one();
                Some((victim, evicted, Refusal::Evicted))
            }
            Err((item, why)) => Some((peer, item, why)),
        }
    }
}

impl Sender<Inbound> {
    /// Queues a request; what comes back must be refused now.
    pub fn send(&self, inbound: Inbound) -> Option<(Inbound, Refusal)> {
        let peer = inbound.peer();
        self.push(peer, inbound).map(|(_, item, why)| (item, why))
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_one();
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        // Nobody will serve what waits: refuse the rest at once.
        self.shared.lock().closed = true;
    }
}

impl<T> Receiver<T> {
    /// The next request to serve, with the ticket that holds its worker
    /// slot; None once the swarm is gone and nothing waits.
    pub async fn next(&mut self) -> Option<(T, Ticket<T>)> {
        loop {
            {
                let mut state = self.shared.lock();
                if let Some((peer, item)) = state.next() {
                    let ticket = Ticket {
                        shared: self.shared.clone(),
                        peer,
                    };
                    return Some((item, ticket));
                }
                if state.closed && state.waiting == 0 {
                    return None;
                }
            }
            // One consumer: a notify_one sent while we were not waiting is
            // kept as a permit, so no wake-up is lost between unlock and
            // here.
            self.shared.wake.notified().await;
        }
    }
}

impl<T> Drop for Ticket<T> {
    fn drop(&mut self) {
        self.shared.lock().done(&self.peer);
        self.shared.wake.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Everything servable now, with the tickets that hold the workers.
    fn drain(rx: &Receiver<u32>) -> Vec<(u32, Ticket<u32>)> {
        let mut out = Vec::new();
        loop {
            let next = rx.shared.lock().next();
            let Some((peer, item)) = next else {
                return out;
            };
            let shared = rx.shared.clone();
            out.push((item, Ticket { shared, peer }));
        }
    }

    #[test]
    fn peers_are_served_in_turn_and_within_their_share() {
        let (tx, rx) = queue::<u32>();
        let flood = PeerId::random();
        let honest = PeerId::random();
        for i in 0..PEER_QUEUED as u32 {
            assert!(tx.push(flood, i).is_none());
        }
        assert!(tx.push(honest, 100).is_none());
        let mut served = drain(&rx);
        // The flood gets its share of workers, no more; the honest peer's
        // one request is served second, not after the flood.
        let items: Vec<u32> = served.iter().map(|(i, _)| *i).collect();
        assert_eq!(items[..2], [0, 100]);
        assert_eq!(items.len(), PEER_WORKERS + 1);
        // Finishing one of the flood's requests lets its next one in.
        drop(served.remove(0));
        let next = drain(&rx);
        assert_eq!(next.len(), 1);
        assert_eq!(next[0].0, PEER_WORKERS as u32);
    }

    #[test]
    fn a_peer_over_its_quota_is_refused_and_a_flood_yields_to_newcomers() {
        let (tx, _rx) = queue::<u32>();
        let flood = PeerId::random();
        for i in 0..PEER_QUEUED as u32 {
            assert!(tx.push(flood, i).is_none());
        }
        let refused = tx.push(flood, 99).expect("over quota");
        assert_eq!((refused.1, refused.2), (99, Refusal::PeerQuota));
        // Fill the rest with peers of one request each.
        for i in PEER_QUEUED..QUEUED {
            assert!(tx.push(PeerId::random(), i as u32).is_none());
        }
        // Full: a newcomer takes the newest slot of the longest queue.
        let evicted = tx.push(PeerId::random(), 500).expect("someone evicted");
        assert_eq!(evicted.0, flood);
        assert_eq!(
            (evicted.1, evicted.2),
            (PEER_QUEUED as u32 - 1, Refusal::Evicted)
        );
        // When every queue is as short as the newcomer's would be, it is
        // the newcomer that is refused.
        let (tx, _rx) = queue::<u32>();
        for i in 0..QUEUED as u32 {
            assert!(tx.push(PeerId::random(), i).is_none());
        }
        let refused = tx.push(PeerId::random(), 7).expect("full");
        assert_eq!((refused.1, refused.2), (7, Refusal::Full));
    }

    #[tokio::test]
    async fn the_receiver_ends_when_the_sender_is_gone_and_wakes_on_push() {
        let (tx, mut rx) = queue::<u32>();
        let peer = PeerId::random();
        let waiter = tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some((item, _ticket)) = rx.next().await {
                got.push(item);
            }
            got
        });
        tokio::task::yield_now().await;
        assert!(tx.push(peer, 1).is_none());
        assert!(tx.push(peer, 2).is_none());
        drop(tx);
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("receiver ended")
            .expect("no panic");
        assert_eq!(got, vec![1, 2]);
    }
}
