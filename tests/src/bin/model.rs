//! p2pstore-model: provider discovery at 1,000 and 5,000 nodes, where
//! `p2pstore-sim`'s real swarms do not fit one 2-core machine (at 1,000
//! swarms the nodes' own DHT upkeep keeps both cores busy and the first
//! full scan never ends; 5,000 would need about 35 GiB at the 7.35 MiB a
//! swarm measured at 200 nodes).
//!
//! It is a discrete-event model of the same network: a seed, N-2
//! providers announcing under their bucket key, and a client in
//! Kademlia client mode, each with
//!   - libp2p-kad's routing table (256 buckets of k = 20 by the XOR
//!     distance of `KBucketKey`, filled as connections are made, servers
//!     only, first come first kept as libp2p does while entries stay
//!     alive);
//!   - libp2p-kad's lookup (`ClosestPeersIter`, re-implemented step for
//!     step: α = 3, k = 20 results, stalled mode widening to k);
//!   - libp2p-kad's bootstrap (a lookup of its own id, then one of a
//!     random key in every bucket past its closest neighbour's; on start,
//!     every `KAD_BOOTSTRAP_INTERVAL`, and while the table holds fewer
//!     than k peers);
//!   - `MemoryStore`'s provider records (newcomers ignored at the cap,
//!     records expiring after `PROVIDER_RECORD_TTL`);
//!   - the daemon's announcements (at start, after every bootstrap,
//!     after 30 s, 1 min, 2 min, then every `PROVIDER_REPUBLISH_INTERVAL`)
//!     and the directory's scan (LOOKUP_PARALLEL bucket lookups at a
//!     time).
//!
//! Messages take a round-trip time drawn per pair of nodes from
//! `--rtt-ms`; a fresh connection costs `DIAL_RTTS` more (TCP, multistream
//! and Noise), and connections close after the daemon's idle timeout.
//! The client's outbound cap and its eviction past ¾ of it are modelled.
//!
//! Left out: CPU, and with it failure. No node is overloaded, so no
//! answer is late or lost and no lookup waits for a timeout. The model
//! says what the protocol does; the real swarms (`p2pstore-sim`) and
//! daemons (`scripts/scale.sh`) say what it costs. Checked against
//! `p2pstore-sim` at 200 nodes, it sends as many requests per lookup; at
//! 400 nodes with 4 buckets and 20 providers per key, where real swarms
//! are overloaded, it shows more providers than they do (README,
//! "Discovery at scale").
//!
//!   p2pstore-model --nodes N [--buckets B] [--per-key P] [--start-secs S]
//!                  [--rtt-ms LO-HI] [--seed X]

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};
use std::time::Instant;

use anyhow::{Result, bail};
use clap::Parser;
use libp2p::PeerId;
use libp2p::identity::Keypair;
use libp2p::kad::{KBucketDistance, KBucketKey};
use p2pstore_tests::measure::{Shape, percentile, rss_mib};
use p2pstored::protocol::{bucket_index, bucket_key};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

/// A discrete-event model of provider discovery at thousands of nodes
/// (the source's header says what it models and what it leaves out).
#[derive(Parser)]
struct Args {
    #[command(flatten)]
    shape: Shape,
    /// Providers start spread evenly over this many seconds; the client
    /// starts as the last one does
    #[arg(long, default_value_t = 120)]
    start_secs: u64,
    /// Round-trip time range in ms, drawn once per pair of nodes
    #[arg(long, default_value = "20-200", value_parser = parse_range)]
    rtt_ms: (u64, u64),
    /// Give up when the client has not found every provider this long
    /// after the last start (simulated seconds)
    #[arg(long, default_value_t = 900)]
    timeout_secs: u64,
    /// Random seed: the same seed gives the same run
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

fn parse_range(s: &str) -> Result<(u64, u64), String> {
    let (lo, hi) = s.split_once('-').ok_or("expected LO-HI")?;
    let lo: u64 = lo.parse().map_err(|e| format!("{e}"))?;
    let hi: u64 = hi.parse().map_err(|e| format!("{e}"))?;
    if lo == 0 || hi < lo {
        return Err("expected 0 < LO <= HI".into());
    }
    Ok((lo, hi))
}

/// libp2p-kad's k and α.
const K: usize = libp2p::kad::K_VALUE.get();
const ALPHA: usize = libp2p::kad::ALPHA_VALUE.get();
/// Round trips a fresh connection costs before its first request: TCP's
/// handshake, Noise XX (1.5) and the multistream negotiations, partly
/// pipelined.
const DIAL_RTTS: u64 = 3;
/// libp2p-kad's automatic bootstrap throttle.
const AUTO_BOOTSTRAP_THROTTLE: u64 = 500_000;
/// The sim's and scale.sh's pause between full scans that missed someone.
const RESCAN_AFTER: u64 = 5_000_000;
const SEED: u32 = 0;
const LOOKUP_PARALLEL: usize = p2pstored::client::directory::LOOKUP_PARALLEL;
const DIRECTORY_FILL: usize = p2pstored::client::directory::MIN_KNOWN;

fn us(d: std::time::Duration) -> u64 {
    d.as_micros() as u64
}

type Target = KBucketKey<Vec<u8>>;

#[derive(Clone, Copy, PartialEq)]
enum PState {
    NotContacted,
    Waiting,
    Succeeded,
    Failed,
}

#[derive(Clone, Copy, PartialEq)]
enum IState {
    Iterating(usize),
    Stalled,
    Finished,
}

/// libp2p-kad's `ClosestPeersIter` without peer timeouts (no node fails
/// to answer here).
struct Iter {
    closest: BTreeMap<KBucketDistance, (u32, PState)>,
    waiting: usize,
    state: IState,
}

enum Next {
    Contact(u32),
    Wait,
    Finished,
}

impl Iter {
    fn new(known: Vec<(KBucketDistance, u32)>) -> Self {
        Iter {
            closest: known
                .into_iter()
                .take(K)
                .map(|(d, n)| (d, (n, PState::NotContacted)))
                .collect(),
            waiting: 0,
            state: IState::Iterating(0),
        }
    }

    fn on_success(&mut self, peer: KBucketDistance, closer: Vec<(KBucketDistance, u32)>) {
        if self.state == IState::Finished {
            return;
        }
        match self.closest.get_mut(&peer) {
            Some(e) if e.1 == PState::Waiting => {
                self.waiting -= 1;
                e.1 = PState::Succeeded;
            }
            _ => return,
        }
        let cur_range = self
            .closest
            .keys()
            .nth(K - 1)
            .or_else(|| self.closest.keys().last())
            .copied()
            .unwrap_or(peer);
        let mut progress = self.closest.len() < K;
        for (d, n) in closer {
            if let std::collections::btree_map::Entry::Vacant(v) = self.closest.entry(d) {
                v.insert((n, PState::NotContacted));
                progress |= d < cur_range;
            }
        }
        self.state = match self.state {
            IState::Iterating(n) => {
                let n = if progress { 0 } else { n + 1 };
                if n >= ALPHA {
                    IState::Stalled
                } else {
                    IState::Iterating(n)
                }
            }
            IState::Stalled if progress => IState::Iterating(0),
            s => s,
        };
    }

    fn on_failure(&mut self, peer: KBucketDistance) {
        if let Some(e) = self.closest.get_mut(&peer)
            && e.1 == PState::Waiting
        {
            self.waiting -= 1;
            e.1 = PState::Failed;
        }
    }

    fn at_capacity(&self) -> bool {
        match self.state {
            IState::Stalled => self.waiting >= K.max(ALPHA),
            IState::Iterating(_) => self.waiting >= ALPHA,
            IState::Finished => true,
        }
    }

    fn next(&mut self) -> Next {
        if self.state == IState::Finished {
            return Next::Finished;
        }
        let mut results = Some(0);
        let at_capacity = self.at_capacity();
        for (n, s) in self.closest.values_mut() {
            match s {
                PState::Waiting => {
                    if at_capacity {
                        return Next::Wait;
                    }
                    results = None;
                }
                PState::Succeeded => {
                    if let Some(c) = results.as_mut() {
                        *c += 1;
                        if *c >= K {
                            self.state = IState::Finished;
                            return Next::Finished;
                        }
                    }
                }
                PState::NotContacted => {
                    if at_capacity {
                        return Next::Wait;
                    }
                    *s = PState::Waiting;
                    self.waiting += 1;
                    return Next::Contact(*n);
                }
                PState::Failed => {}
            }
        }
        if self.waiting > 0 {
            Next::Wait
        } else {
            self.state = IState::Finished;
            Next::Finished
        }
    }

    fn succeeded(&self) -> Vec<u32> {
        self.closest
            .values()
            .filter(|(_, s)| *s == PState::Succeeded)
            .map(|(n, _)| *n)
            .take(K)
            .collect()
    }
}

#[derive(Clone, Copy)]
enum Role {
    Seed,
    Provider(u16),
    Client,
}

struct Conn {
    opened: u64,
    used: u64,
}

struct Node {
    key: KBucketKey<PeerId>,
    role: Role,
    /// Routing table: 256 buckets by `ilog2` of the distance.
    table: Vec<Vec<u32>>,
    table_len: usize,
    /// Provider records: bucket key index -> (provider, expiry).
    store: HashMap<u16, Vec<(u32, u64)>>,
    conns: HashMap<u32, Conn>,
    bootstraps: usize,
    periodic_gen: u64,
    auto_gen: u64,
    requests_in: u64,
}

impl Node {
    fn server(&self) -> bool {
        !matches!(self.role, Role::Client)
    }
}

enum Kind {
    Bootstrap { refresh: Option<Vec<Target>> },
    Announce(u16),
    GetProviders(u16),
}

struct Query {
    node: u32,
    kind: Kind,
    target: Target,
    iter: Iter,
    started: u64,
    requests: u32,
}

enum Ev {
    Start(u32),
    Request {
        from: u32,
        to: u32,
        query: usize,
    },
    AddProvider {
        to: u32,
        bucket: u16,
        provider: u32,
    },
    Response {
        to: u32,
        from: u32,
        query: usize,
        closer: Vec<u32>,
        providers: Vec<u32>,
    },
    Failure {
        query: usize,
        peer: u32,
    },
    Tick(u32, u32),
    Republish(u32),
    PeriodicBootstrap(u32, u64),
    AutoBootstrap(u32, u64),
    Scan,
}

/// An event and when it happens; the heap pops the earliest first, in
/// the order scheduled among equals.
struct Scheduled {
    at: Reverse<(u64, u64)>,
    ev: Ev,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        self.at == other.at
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.at.cmp(&other.at)
    }
}

/// One full scan or directory fill by the client.
struct Scan {
    keys: Vec<u16>,
    enough: usize,
    running: usize,
    started: usize,
    found: BTreeSet<u32>,
}

struct Model {
    args: Args,
    nodes: Vec<Node>,
    bucket_targets: Vec<Target>,
    queries: Vec<Option<Query>>,
    queue: BinaryHeap<Scheduled>,
    seq: u64,
    now: u64,
    rng: StdRng,
    client: u32,
    max_outbound: usize,
    idle: u64,
    scan: Option<Scan>,
    /// Per bucket lookup of the client's full scans: (time, requests).
    lookups: Vec<(u64, u32)>,
    max_client_conns: usize,
    requests: u64,
}

impl Model {
    fn at(&mut self, t: u64, ev: Ev) {
        self.seq += 1;
        self.queue.push(Scheduled {
            at: Reverse((t, self.seq)),
            ev,
        });
    }

    /// A round trip between two nodes, fixed per pair.
    fn rtt(&self, a: u32, b: u32) -> u64 {
        let (lo, hi) = self.args.rtt_ms;
        let mut x = (a.min(b) as u64) << 32 | a.max(b) as u64;
        x ^= self.args.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        // splitmix64
        x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
        x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        x ^= x >> 31;
        (lo + x % (hi - lo + 1)) * 1000
    }

    fn live(&self, a: u32, b: u32) -> bool {
        self.nodes[a as usize]
            .conns
            .get(&b)
            .is_some_and(|c| self.now < c.used + self.idle)
    }

    fn live_count(&self, a: u32) -> usize {
        let now = self.now;
        let idle = self.idle;
        self.nodes[a as usize]
            .conns
            .values()
            .filter(|c| now < c.used + idle)
            .count()
    }

    /// Inserts `peer` in `node`'s routing table, as libp2p does on a
    /// connection to a DHT server: kept if its bucket has room.
    fn insert(&mut self, node: u32, peer: u32) {
        if node == peer || !self.nodes[peer as usize].server() {
            return;
        }
        let d = self.nodes[node as usize]
            .key
            .distance(&self.nodes[peer as usize].key);
        let Some(b) = d.ilog2() else { return };
        let n = &mut self.nodes[node as usize];
        let bucket = &mut n.table[b as usize];
        if bucket.contains(&peer) || bucket.len() >= K {
            return;
        }
        bucket.push(peer);
        n.table_len += 1;
        if n.table_len < K {
            n.auto_gen += 1;
            let g = n.auto_gen;
            self.at(
                self.now + AUTO_BOOTSTRAP_THROTTLE,
                Ev::AutoBootstrap(node, g),
            );
        }
    }

    /// The k peers of `node`'s table closest to `target`, but `except`.
    fn closest(&self, node: u32, target: &Target, except: u32) -> Vec<(KBucketDistance, u32)> {
        let mut all: Vec<(KBucketDistance, u32)> = self.nodes[node as usize]
            .table
            .iter()
            .flatten()
            .filter(|&&p| p != except)
            .map(|&p| (self.nodes[p as usize].key.distance(target), p))
            .collect();
        if all.len() > K {
            all.select_nth_unstable(K - 1);
            all.truncate(K);
        }
        all.sort_unstable();
        all
    }

    fn start_query(&mut self, node: u32, kind: Kind, target: Target) {
        let known = self.closest(node, &target, u32::MAX);
        let q = Query {
            node,
            kind,
            iter: Iter::new(known),
            target,
            started: self.now,
            requests: 0,
        };
        self.queries.push(Some(q));
        self.drive(self.queries.len() - 1);
    }

    fn bootstrap(&mut self, node: u32) {
        let n = &mut self.nodes[node as usize];
        if n.table_len == 0 {
            return; // NoKnownPeers
        }
        n.bootstraps += 1;
        n.periodic_gen += 1;
        let g = n.periodic_gen;
        self.at(
            self.now + us(p2pstored::network::KAD_BOOTSTRAP_INTERVAL),
            Ev::PeriodicBootstrap(node, g),
        );
        let target = KBucketKey::new(self.nodes[node as usize].key.preimage().to_bytes());
        self.start_query(node, Kind::Bootstrap { refresh: None }, target);
    }

    fn announce(&mut self, node: u32) {
        let Role::Provider(bucket) = self.nodes[node as usize].role else {
            return;
        };
        self.add_provider(node, bucket, node);
        let target = self.bucket_targets[bucket as usize].clone();
        self.start_query(node, Kind::Announce(bucket), target);
    }

    /// `MemoryStore::add_provider`: a known provider's record is renewed,
    /// a newcomer is kept only below the cap. Expired records are dropped
    /// first, as libp2p drops them when it answers.
    fn add_provider(&mut self, at: u32, bucket: u16, provider: u32) {
        let cap = self.args.shape.per_key;
        let (now, ttl) = (self.now, us(p2pstored::network::PROVIDER_RECORD_TTL));
        let list = self.nodes[at as usize].store.entry(bucket).or_default();
        list.retain(|r| r.1 > now);
        if let Some(r) = list.iter_mut().find(|r| r.0 == provider) {
            r.1 = now + ttl;
        } else if list.len() < cap {
            list.push((provider, now + ttl));
        }
    }

    /// Opens (or reuses) a connection and returns its set-up delay, or
    /// None when the client's cap refuses the dial.
    fn connect(&mut self, from: u32, to: u32) -> Option<u64> {
        if self.live(from, to) {
            let now = self.now;
            for (a, b) in [(from, to), (to, from)] {
                if let Some(c) = self.nodes[a as usize].conns.get_mut(&b) {
                    c.used = now;
                }
            }
            return Some(0);
        }
        if from == self.client {
            let count = self.live_count(from);
            if count >= self.max_outbound {
                return None;
            }
            // The daemon's `Dialed` eviction: past ¾ of the cap, a new
            // connection closes the oldest one (the seed is kept).
            if count >= self.max_outbound * 3 / 4 {
                let (now, idle) = (self.now, self.idle);
                let oldest = self.nodes[from as usize]
                    .conns
                    .iter()
                    .filter(|(p, c)| **p != SEED && now < c.used + idle)
                    // Ties (connections opened together) broken by node,
                    // not by the map's random order: a seed fixes a run.
                    .min_by_key(|(p, c)| (c.opened, **p))
                    .map(|(p, _)| *p);
                if let Some(p) = oldest {
                    self.nodes[from as usize].conns.remove(&p);
                    self.nodes[p as usize].conns.remove(&from);
                }
            }
        }
        let now = self.now;
        for (a, b) in [(from, to), (to, from)] {
            self.nodes[a as usize].conns.insert(
                b,
                Conn {
                    opened: now,
                    used: now,
                },
            );
        }
        if from == self.client {
            self.max_client_conns = self.max_client_conns.max(self.live_count(from));
        }
        Some(DIAL_RTTS * self.rtt(from, to))
    }

    fn drive(&mut self, qi: usize) {
        loop {
            let Some(q) = self.queries[qi].as_mut() else {
                return;
            };
            match q.iter.next() {
                Next::Contact(peer) => {
                    q.requests += 1;
                    let from = q.node;
                    self.requests += 1;
                    match self.connect(from, peer) {
                        Some(dial) => {
                            let half = self.rtt(from, peer) / 2;
                            self.at(
                                self.now + dial + half,
                                Ev::Request {
                                    from,
                                    to: peer,
                                    query: qi,
                                },
                            );
                        }
                        None => self.at(self.now, Ev::Failure { query: qi, peer }),
                    }
                }
                Next::Wait => return,
                Next::Finished => {
                    let q = self.queries[qi].take().expect("checked above");
                    self.finished(q);
                    return;
                }
            }
        }
    }

    fn finished(&mut self, q: Query) {
        let node = q.node;
        match q.kind {
            Kind::Bootstrap { refresh } => {
                let mut refresh = match refresh {
                    Some(r) => r,
                    None => self.refresh_targets(node),
                };
                match refresh.pop() {
                    Some(target) => self.start_query(
                        node,
                        Kind::Bootstrap {
                            refresh: Some(refresh),
                        },
                        target,
                    ),
                    None => {
                        self.nodes[node as usize].bootstraps -= 1;
                        // As the daemon does: a provider announces again
                        // after every bootstrap.
                        self.announce(node);
                    }
                }
            }
            Kind::Announce(bucket) => {
                for peer in q.iter.succeeded() {
                    if let Some(dial) = self.connect(node, peer) {
                        let half = self.rtt(node, peer) / 2;
                        self.requests += 1;
                        self.at(
                            self.now + dial + half,
                            Ev::AddProvider {
                                to: peer,
                                bucket,
                                provider: node,
                            },
                        );
                    }
                }
            }
            Kind::GetProviders(_) => {
                self.lookups.push((self.now - q.started, q.requests));
                if let Some(s) = self.scan.as_mut() {
                    s.running -= 1;
                }
                self.scan_step();
            }
        }
    }

    /// libp2p's refresh: a random key in every bucket past the one of
    /// the closest neighbour (16 tries to land in it, as libp2p does).
    fn refresh_targets(&mut self, node: u32) -> Vec<Target> {
        let n = &self.nodes[node as usize];
        let Some(first) = n.table.iter().position(|b| !b.is_empty()) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for b in (first + 1)..256 {
            let mut target = KBucketKey::new(self.rng.random::<[u8; 32]>().to_vec());
            for _ in 0..16 {
                if n.key.distance(&target).ilog2() == Some(b as u32) {
                    break;
                }
                target = KBucketKey::new(self.rng.random::<[u8; 32]>().to_vec());
            }
            out.push(target);
        }
        // Popped from the back: nearest bucket first, as libp2p runs them.
        out.reverse();
        out
    }

    fn scan_step(&mut self) {
        let Some(s) = self.scan.as_mut() else { return };
        let satisfied = s.enough > 0 && s.found.len() >= s.enough;
        let mut start = Vec::new();
        while !satisfied && s.running < LOOKUP_PARALLEL && !s.keys.is_empty() {
            start.push(s.keys.remove(0));
            s.running += 1;
            s.started += 1;
        }
        for b in start {
            let target = self.bucket_targets[b as usize].clone();
            self.start_query(self.client, Kind::GetProviders(b), target);
        }
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Start(node) => {
                if node == SEED {
                    // Its periodic bootstrap runs once it knows someone.
                    self.at(
                        self.now + us(p2pstored::network::KAD_BOOTSTRAP_INTERVAL),
                        Ev::PeriodicBootstrap(node, 0),
                    );
                } else {
                    // The seed is a configured bootstrap address: routable
                    // at once, then dialed by the first lookup.
                    self.insert(node, SEED);
                    self.bootstrap(node);
                    self.announce(node);
                    self.at(
                        self.now + us(p2pstored::network::DISCOVER_EVERY),
                        Ev::Tick(node, 1),
                    );
                    self.at(
                        self.now + us(p2pstored::network::PROVIDER_REPUBLISH_INTERVAL),
                        Ev::Republish(node),
                    );
                }
            }
            Ev::Tick(node, ticks) => {
                if p2pstored::network::announce_again(ticks) {
                    self.announce(node);
                }
                // The daemon's re-announcements end at 4 intervals (2
                // minutes); Kademlia's republish (`Republish`) follows.
                if ticks < 4 {
                    self.at(
                        self.now + us(p2pstored::network::DISCOVER_EVERY),
                        Ev::Tick(node, ticks + 1),
                    );
                }
            }
            Ev::Republish(node) => {
                self.announce(node);
                self.at(
                    self.now + us(p2pstored::network::PROVIDER_REPUBLISH_INTERVAL),
                    Ev::Republish(node),
                );
            }
            Ev::PeriodicBootstrap(node, g) => {
                let n = &self.nodes[node as usize];
                if g == n.periodic_gen {
                    if n.table_len == 0 {
                        self.at(
                            self.now + us(p2pstored::network::KAD_BOOTSTRAP_INTERVAL),
                            Ev::PeriodicBootstrap(node, g),
                        );
                    } else if n.bootstraps == 0 {
                        self.bootstrap(node);
                    } else {
                        self.at(
                            self.now + us(p2pstored::network::KAD_BOOTSTRAP_INTERVAL),
                            Ev::PeriodicBootstrap(node, g),
                        );
                    }
                }
            }
            Ev::AutoBootstrap(node, g) => {
                let n = &self.nodes[node as usize];
                if g == n.auto_gen && n.bootstraps == 0 {
                    self.bootstrap(node);
                }
            }
            Ev::Request { from, to, query } => {
                self.insert(to, from);
                self.nodes[to as usize].requests_in += 1;
                let Some(q) = self.queries[query].as_ref() else {
                    return;
                };
                let closer = self
                    .closest(to, &q.target, from)
                    .into_iter()
                    .map(|(_, p)| p)
                    .collect();
                let now = self.now;
                let providers = match q.kind {
                    Kind::GetProviders(b) => self.nodes[to as usize]
                        .store
                        .get(&b)
                        .map(|l| l.iter().filter(|r| r.1 > now).map(|r| r.0).collect())
                        .unwrap_or_default(),
                    _ => Vec::new(),
                };
                let half = self.rtt(from, to) - self.rtt(from, to) / 2;
                self.at(
                    self.now + half,
                    Ev::Response {
                        to: from,
                        from: to,
                        query,
                        closer,
                        providers,
                    },
                );
            }
            Ev::AddProvider {
                to,
                bucket,
                provider,
            } => {
                self.insert(to, provider);
                self.nodes[to as usize].requests_in += 1;
                self.add_provider(to, bucket, provider);
            }
            Ev::Response {
                to,
                from,
                query,
                closer,
                providers,
            } => {
                self.insert(to, from);
                let now = self.now;
                if let Some(c) = self.nodes[to as usize].conns.get_mut(&from) {
                    c.used = now;
                }
                let Some(q) = self.queries[query].as_mut() else {
                    return;
                };
                let d = self.nodes[from as usize].key.distance(&q.target);
                let closer = closer
                    .into_iter()
                    .map(|p| (self.nodes[p as usize].key.distance(&q.target), p))
                    .collect();
                q.iter.on_success(d, closer);
                if matches!(q.kind, Kind::GetProviders(_))
                    && let Some(s) = self.scan.as_mut()
                {
                    s.found.extend(providers);
                }
                self.drive(query);
            }
            Ev::Failure { query, peer } => {
                let Some(q) = self.queries[query].as_mut() else {
                    return;
                };
                let d = self.nodes[peer as usize].key.distance(&q.target);
                q.iter.on_failure(d);
                self.drive(query);
            }
            Ev::Scan => self.scan_step(),
        }
    }

    /// Runs events until `done` holds (checked after each event) or the
    /// clock passes `until`.
    fn run_until(&mut self, until: u64, done: impl Fn(&Model) -> bool) {
        while let Some(Reverse((t, _))) = self.queue.peek().map(|s| s.at) {
            if t > until || done(self) {
                return;
            }
            let Some(next) = self.queue.pop() else { return };
            self.now = t;
            self.handle(next.ev);
        }
    }

    /// Runs one scan of `keys` to its end; returns (found, lookups run).
    fn scan(&mut self, keys: Vec<u16>, enough: usize) -> (BTreeSet<u32>, usize) {
        self.scan = Some(Scan {
            keys,
            enough,
            running: 0,
            started: 0,
            found: BTreeSet::new(),
        });
        self.at(self.now, Ev::Scan);
        self.run_until(u64::MAX, |m| {
            m.scan.as_ref().is_some_and(|s| {
                s.running == 0 && (s.keys.is_empty() || (s.enough > 0 && s.found.len() >= s.enough))
            })
        });
        let s = self.scan.take().expect("set above");
        (s.found, s.started)
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    args.shape.check()?;
    let wall = Instant::now();
    let mut rng = StdRng::seed_from_u64(args.seed);
    let providers = args.shape.providers();
    let mut nodes = Vec::with_capacity(args.shape.nodes);
    for i in 0..args.shape.nodes {
        let key = Keypair::ed25519_from_bytes(rng.random::<[u8; 32]>())?;
        let id = key.public().to_peer_id();
        let role = match i {
            0 => Role::Seed,
            i if i == args.shape.nodes - 1 => Role::Client,
            _ => Role::Provider(bucket_index(&id, args.shape.buckets)),
        };
        nodes.push(Node {
            key: KBucketKey::from(id),
            role,
            table: vec![Vec::new(); 256],
            table_len: 0,
            store: HashMap::new(),
            conns: HashMap::new(),
            bootstraps: 0,
            periodic_gen: 0,
            auto_gen: 0,
            requests_in: 0,
        });
    }
    let client = (args.shape.nodes - 1) as u32;
    let bucket_targets = (0..args.shape.buckets)
        .map(|b| KBucketKey::new(bucket_key(b).to_vec()))
        .collect();
    let mut m = Model {
        nodes,
        bucket_targets,
        queries: Vec::new(),
        queue: BinaryHeap::new(),
        seq: 0,
        now: 0,
        rng,
        client,
        max_outbound: p2pstored::config::DEFAULT_MAX_OUTBOUND_CONNECTIONS as usize,
        idle: us(p2pstored::network::IDLE_CONNECTION_TIMEOUT),
        scan: None,
        lookups: Vec::new(),
        max_client_conns: 0,
        requests: 0,
        args,
    };
    // Providers start evenly over --start-secs, in random order of
    // their ids; the client starts with the last.
    let span = m.args.start_secs * 1_000_000;
    m.at(0, Ev::Start(SEED));
    for i in 1..=providers {
        m.at(span * i as u64 / providers as u64, Ev::Start(i as u32));
    }
    m.at(span, Ev::Start(client));
    // The client starts scanning a second after it starts.
    m.run_until(span + 1_000_000, |_| false);
    m.now = span + 1_000_000;

    let expected: BTreeSet<u32> = (1..=providers as u32).collect();
    let all: Vec<u16> = (0..m.args.shape.buckets).collect();
    let deadline = span + m.args.timeout_secs * 1_000_000;
    let (found, joined) = loop {
        m.lookups.clear();
        let (found, _) = m.scan(all.clone(), 0);
        let missing = expected.difference(&found).count();
        eprintln!(
            "model: {:>7.1} s: client finds {} of {providers}",
            m.now as f64 / 1e6,
            found.len()
        );
        if missing == 0 || m.now > deadline {
            break (found, m.now);
        }
        let next = m.now + RESCAN_AFTER;
        m.run_until(next, |_| false);
        m.now = next;
    };
    let mut times: Vec<u64> = m.lookups.iter().map(|l| l.0 / 1000).collect();
    let mut requests: Vec<u32> = m.lookups.iter().map(|l| l.1).collect();
    times.sort_unstable();
    requests.sort_unstable();

    let mut fills = Vec::new();
    for _ in 0..5 {
        let mut keys = all.clone();
        keys.shuffle(&mut m.rng);
        let (_, lookups) = m.scan(keys, DIRECTORY_FILL);
        fills.push(lookups);
    }
    fills.sort_unstable();

    let found_n = expected.intersection(&found).count();
    let servers = &m.nodes[1..m.nodes.len() - 1];
    let mut tables: Vec<usize> = servers.iter().map(|n| n.table_len).collect();
    tables.sort_unstable();
    let mut records: Vec<usize> = servers
        .iter()
        .map(|n| n.store.values().flatten().filter(|r| r.1 > m.now).count())
        .collect();
    records.sort_unstable();
    let minutes = m.now as f64 / 60e6;
    let mut load: Vec<u64> = m.nodes.iter().map(|n| n.requests_in).collect();
    load.sort_unstable();
    let a = &m.args;
    println!(
        "model: {} nodes ({providers} providers), {} buckets, {} providers/key, starts over {} s, rtt {}-{} ms",
        a.shape.nodes, a.shape.buckets, a.shape.per_key, a.start_secs, a.rtt_ms.0, a.rtt_ms.1
    );
    println!(
        "  every provider found after   {}",
        if found_n == providers {
            format!(
                "{:.0} s from the first start, {:.0} s from the last",
                joined as f64 / 1e6,
                (joined - span) as f64 / 1e6
            )
        } else {
            format!("never (gave up at {:.0} s)", joined as f64 / 1e6)
        }
    );
    println!("  providers discoverable       {found_n} of {providers}");
    println!(
        "  bucket lookup latency        median {} ms, p95 {} ms",
        percentile(&times, 0.5),
        percentile(&times, 0.95)
    );
    println!(
        "  requests per lookup          median {}, p95 {}",
        percentile(&requests, 0.5),
        percentile(&requests, 0.95)
    );
    println!(
        "  lookups to know {DIRECTORY_FILL} providers  median {} (of 5 tries: {fills:?})",
        fills[fills.len() / 2]
    );
    println!(
        "  client connections           at most {}",
        m.max_client_conns
    );
    println!(
        "  routing table per node       median {}, max {} peers",
        percentile(&tables, 0.5),
        tables.last().copied().unwrap_or(0)
    );
    println!(
        "  provider records per node    median {}, max {}",
        percentile(&records, 0.5),
        records.last().copied().unwrap_or(0)
    );
    println!(
        "  DHT requests in per node     median {:.1}/min, max {:.1}/min (over {:.0} s)",
        percentile(&load, 0.5) as f64 / minutes,
        load.last().copied().unwrap_or(0) as f64 / minutes,
        m.now as f64 / 1e6
    );
    println!(
        "  model: {} requests in {:.1} s wall, {} MiB",
        m.requests,
        wall.elapsed().as_secs_f64(),
        rss_mib()
    );
    if found_n < providers {
        bail!("the client found {found_n} of {providers} providers");
    }
    Ok(())
}
