//! The one task that owns the Swarm. It turns commands into network actions,
//! network events into replies, and never panics on anything a peer sends.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use futures::StreamExt;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use hashlink::LruCache;
use libp2p::identity::Keypair;
use libp2p::kad::{self, GetProvidersOk, QueryId, QueryResult};
use libp2p::metrics::Recorder;
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, OutboundRequestId};
use libp2p::swarm::{ConnectionId, SwarmEvent};
use libp2p::{Multiaddr, PeerId, Swarm, identify, rendezvous};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use super::behaviour::{Behaviour, BehaviourEvent, build_swarm};
use super::codec::{Codec, Incoming};
use super::inbound::{self, Refusal};
use super::netgroup::ip_of;
use super::refusals::RefusalLog;
use super::{Command, Inbound, NetStatus, NetworkConfig, PeerError};
use crate::error::{Error, Result};
use crate::protocol::*;

pub const DISCOVER_EVERY: Duration = Duration::from_secs(30);
/// Registrations are re-sent every this many discover ticks (TTL is 2 h).
const REGISTER_EVERY_TICKS: u32 = 20;
const MAX_ADDRS_PER_PEER: usize = 8;
const MAX_BOOK_PEERS: usize = 10_000;
/// Records one lookup keeps: a key's record lives at about 20 nodes, and
/// anything past this many answers is a flood, not information.
const MAX_RECORDS_PER_LOOKUP: usize = 64;
/// A peer we sent a control or shard request to, or heard one from, this
/// recently is never disconnected to make room ([`Dialed`]): its longest
/// request (a shard) may still be under way.
const APP_QUIET: Duration = Duration::from_secs(60);

/// The connections this node dialed, oldest first, kept under the
/// outbound cap by closing the oldest that only the DHT used.
///
/// libp2p's connection limit refuses a dial at the cap, and an idle
/// connection stays for [`super::IDLE_CONNECTION_TIMEOUT`]; so a client
/// whose lookups had touched 64 peers in the last two minutes could
/// reach no one else, and its lookups quietly missed the nodes holding
/// the records it wanted (in a 200-node network it found 188-194 of 198
/// providers; with the cap lifted, all). Past three quarters of the cap,
/// each new outbound connection closes the oldest one whose peer has no
/// request of ours or theirs in the last [`APP_QUIET`] and is not a
/// bootstrap node: Kademlia keeps the peer's address, so a later lookup
/// dials it again.
///
/// Only on DHT clients. A DHT server's connections serve everyone's
/// lookups; closing them early on 200 servers made the whole network
/// dial again and again, and it started at half the speed.
struct Dialed {
    conns: VecDeque<(ConnectionId, PeerId)>,
    /// None: never close (a DHT server).
    evict_above: Option<usize>,
    app_used: HashMap<PeerId, std::time::Instant>,
}

impl Dialed {
    fn new(cap: u32, dht_server: bool) -> Self {
        let cap = cap as usize;
        Dialed {
            conns: VecDeque::new(),
            evict_above: (!dht_server).then_some(cap - cap / 4),
            app_used: HashMap::new(),
        }
    }

    /// A request to or from `peer`. Not kept on a DHT server, which never
    /// closes a connection to make room: every shard it serves would cost
    /// an insert for nothing.
    fn used(&mut self, peer: PeerId) {
        if self.evict_above.is_some() {
            self.app_used.insert(peer, std::time::Instant::now());
        }
    }

    fn prune(&mut self) {
        let now = std::time::Instant::now();
        self.app_used
            .retain(|_, at| now.duration_since(*at) < APP_QUIET);
    }

    fn closed(&mut self, id: ConnectionId) {
        self.conns.retain(|(c, _)| *c != id);
    }

    /// A new outbound connection; returns those to close.
    fn opened(
        &mut self,
        id: ConnectionId,
        peer: PeerId,
        pinned: &HashSet<PeerId>,
    ) -> Vec<(ConnectionId, PeerId)> {
        let Some(evict_above) = self.evict_above else {
            return Vec::new();
        };
        self.conns.push_back((id, peer));
        let now = std::time::Instant::now();
        let mut close = Vec::new();
        while self.conns.len() > evict_above {
            let idle = self.conns.iter().position(|(c, p)| {
                *c != id
                    && !pinned.contains(p)
                    && self
                        .app_used
                        .get(p)
                        .is_none_or(|at| now.duration_since(*at) >= APP_QUIET)
            });
            match idle.and_then(|i| self.conns.remove(i)) {
                Some(conn) => close.push(conn),
                None => break,
            }
        }
        close
    }
}

/// Where we last saw each peer listening. Bounded, because peers choose
/// what they announce: past [`MAX_BOOK_PEERS`] the peer least recently
/// learned or dialed is forgotten, so a flood of new identities pushes out
/// stale entries, not the peers we talk to. Bootstrap nodes are pinned:
/// we must always be able to dial them again.
struct AddressBook {
    peers: LruCache<PeerId, VecDeque<Multiaddr>>,
    pinned: HashMap<PeerId, Vec<Multiaddr>>,
}

impl Default for AddressBook {
    fn default() -> Self {
        AddressBook {
            peers: LruCache::new(MAX_BOOK_PEERS),
            pinned: HashMap::new(),
        }
    }
}

impl AddressBook {
    fn pin(&mut self, peer: PeerId, addr: Multiaddr) {
        let list = self.pinned.entry(peer).or_default();
        if !list.contains(&addr) && list.len() < MAX_ADDRS_PER_PEER {
            list.push(addr);
        }
    }

    fn add(&mut self, peer: PeerId, addr: Multiaddr) {
        let Some(list) = self.peers.get_mut(&peer) else {
            self.peers.insert(peer, VecDeque::from([addr]));
            return;
        };
        if list.contains(&addr) {
            return;
        }
        if list.len() >= MAX_ADDRS_PER_PEER {
            list.pop_front();
        }
        list.push_back(addr);
    }

    /// The peer's addresses, pinned first; marks it recently used.
    fn get(&mut self, peer: &PeerId) -> Vec<Multiaddr> {
        let mut out = self.pinned.get(peer).cloned().unwrap_or_default();
        if let Some(list) = self.peers.get(peer) {
            out.extend(
                list.iter()
                    .filter(|a| !out.contains(a))
                    .cloned()
                    .collect::<Vec<_>>(),
            );
        }
        out
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.peers.len()
    }
}

/// Where the values a record lookup found go.
type RecordsReply = oneshot::Sender<Vec<Vec<u8>>>;

pub(super) struct EventLoop {
    swarm: Swarm<Behaviour>,
    /// libp2p's recorders, in the node's metrics registry.
    p2p_metrics: libp2p::metrics::Metrics,
    commands: mpsc::Receiver<Command>,
    inbound: inbound::Sender,
    provide: bool,
    /// With no configured external address, our listen addresses are what
    /// we announce (right for loopback and LAN networks; behind NAT set
    /// `external_addrs`). Rendezvous registration needs at least one.
    announce_listen: bool,
    /// The configured bootstrap nodes: re-dialed whenever lost.
    bootstrap_peers: HashSet<PeerId>,
    /// Those of them that said (identify) they serve rendezvous. A plain
    /// Kademlia seed does not, and is never asked.
    rendezvous_peers: HashSet<PeerId>,
    book: AddressBook,
    pending_providers: HashMap<QueryId, (HashSet<PeerId>, oneshot::Sender<HashSet<PeerId>>)>,
    pending_records: HashMap<QueryId, (Vec<Vec<u8>>, RecordsReply)>,
    pending_puts: HashMap<QueryId, oneshot::Sender<Result<()>>>,
    pending_peers: HashMap<QueryId, (PeerId, oneshot::Sender<Vec<Multiaddr>>)>,
    pending_control: Pending<ControlResponse>,
    pending_shard: Pending<ShardResponse>,
    /// The slots of shard requests under way (see `Client::shard`).
    shard_slots: HashMap<OutboundRequestId, tokio::sync::OwnedSemaphorePermit>,
    rendezvous_cookies: HashMap<PeerId, rendezvous::Cookie>,
    ticks: u32,
    /// Each peer's budget of audits, spent here, before the inbound queue,
    /// so that a flood is answered at once and never crowds out the
    /// requests of other peers.
    audit_budget: DefaultKeyedRateLimiter<PeerId>,
    refusals: RefusalLog,
    /// The remote IP of a connection to each connected peer.
    observed: HashMap<PeerId, std::net::IpAddr>,
    dialed: Dialed,
}

/// Whether a provider announces itself again `intervals` discover ticks
/// ([`DISCOVER_EVERY`]) after it started. Its
/// first announcement, right after joining, reaches the nodes closest to
/// its key among the few it knows then; while the network around it
/// fills in (and while many nodes join at once), the closest ones change.
/// So it announces again after 30 s, 1 min and 2 min, then every 5 min
/// (Kademlia's republish).
pub fn announce_again(intervals: u32) -> bool {
    matches!(intervals, 1 | 2 | 4)
}

fn split_p2p(addr: &Multiaddr) -> Option<(PeerId, Multiaddr)> {
    let mut base = addr.clone();
    match base.pop() {
        Some(Protocol::P2p(peer)) => Some((peer, base)),
        _ => None,
    }
}

impl EventLoop {
    pub(super) fn new(
        key: Keypair,
        cfg: NetworkConfig,
        commands: mpsc::Receiver<Command>,
        inbound: inbound::Sender,
    ) -> Result<Self> {
        let mut swarm = build_swarm(key, &cfg)?;
        for addr in &cfg.listen {
            swarm.listen_on(addr.clone()).map_err(|e| Error::Bind {
                addr: addr.to_string(),
                // `TransportError::Other` displays as nothing: the cause
                // (say, the port in use) is its source.
                reason: match e {
                    libp2p::TransportError::Other(io) => io.to_string(),
                    e => e.to_string(),
                },
            })?;
        }
        for addr in &cfg.external {
            swarm.add_external_address(addr.clone());
        }
        let p2p_metrics = libp2p::metrics::Metrics::new(&mut cfg.metrics.registry());
        let mut ev = EventLoop {
            swarm,
            p2p_metrics,
            commands,
            inbound,
            provide: cfg.provide,
            announce_listen: cfg.external.is_empty(),
            bootstrap_peers: HashSet::new(),
            rendezvous_peers: HashSet::new(),
            book: AddressBook::default(),
            pending_providers: HashMap::new(),
            pending_records: HashMap::new(),
            pending_puts: HashMap::new(),
            pending_peers: HashMap::new(),
            pending_control: HashMap::new(),
            pending_shard: HashMap::new(),
            shard_slots: HashMap::new(),
            rendezvous_cookies: HashMap::new(),
            ticks: 0,
            audit_budget: RateLimiter::keyed(
                Quota::per_minute(AUDITS_PER_MINUTE).allow_burst(AUDIT_BURST),
            ),
            refusals: RefusalLog::default(),
            observed: HashMap::new(),
            dialed: Dialed::new(cfg.max_outbound_connections, cfg.dht_server),
        };
        for addr in &cfg.bootstrap {
            let Some((peer, base)) = split_p2p(addr) else {
                return Err(Error::Config(format!(
                    "bootstrap address {addr} must end in /p2p/<peer id>"
                )));
            };
            ev.book.pin(peer, base.clone());
            ev.learn(peer, base, true);
            ev.bootstrap_peers.insert(peer);
            if let Err(e) = ev.swarm.dial(addr.clone()) {
                warn!(%addr, "cannot dial bootstrap node: {e}");
            }
        }
        if ev.provide {
            ev.announce();
        }
        Ok(ev)
    }

    pub(super) async fn run(mut self) {
        let mut tick = tokio::time::interval(DISCOVER_EVERY);
        loop {
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                command = self.commands.recv() => match command {
                    Some(c) => self.on_command(c),
                    None => break,
                },
                _ = tick.tick() => self.on_tick(),
            }
        }
        debug!("network task stopped");
    }

    /// Records an address for a peer everywhere it helps: our book (used
    /// when we send requests), Kademlia's routing table, and the swarm.
    fn learn(&mut self, peer: PeerId, addr: Multiaddr, routable: bool) {
        if peer == *self.swarm.local_peer_id() {
            return;
        }
        self.book.add(peer, addr.clone());
        if routable {
            self.swarm.behaviour_mut().kad.add_address(&peer, addr);
        }
    }

    fn announce(&mut self) {
        let key = ProviderBucket::of(self.swarm.local_peer_id()).key();
        if let Err(e) = self.swarm.behaviour_mut().kad.start_providing(key) {
            warn!("cannot announce as provider: {e}");
        }
    }

    fn on_tick(&mut self) {
        self.ticks = self.ticks.wrapping_add(1);
        // The first tick fires at once: tick n comes n - 1 intervals in.
        if self.provide && announce_again(self.ticks.saturating_sub(1)) {
            self.announce();
        }
        // Forget peers whose audit budget is full again, so the limiter's
        // memory follows the peers auditing now, not all there ever were.
        self.audit_budget.retain_recent();
        self.refusals.prune();
        self.dialed.prune();
        let register = self.ticks.is_multiple_of(REGISTER_EVERY_TICKS);
        let connected: Vec<PeerId> = self
            .rendezvous_peers
            .iter()
            .filter(|p| self.swarm.is_connected(p))
            .copied()
            .collect();
        for peer in connected {
            if register {
                self.rendezvous_register(peer);
            }
            self.rendezvous_discover(peer);
        }
        // Re-dial bootstrap nodes we lost, so a restarted bootstrap node
        // or a transient failure does not leave us isolated.
        let lost: Vec<PeerId> = self
            .bootstrap_peers
            .iter()
            .filter(|p| !self.swarm.is_connected(p))
            .copied()
            .collect();
        for peer in lost {
            let opts = libp2p::swarm::dial_opts::DialOpts::peer_id(peer)
                .addresses(self.book.get(&peer))
                .build();
            let _ = self.swarm.dial(opts);
        }
    }

    /// Registers at a rendezvous node and asks it who else is there.
    fn rendezvous_join(&mut self, peer: PeerId) {
        self.rendezvous_register(peer);
        self.rendezvous_discover(peer);
    }

    fn rendezvous_register(&mut self, peer: PeerId) {
        let ns = rendezvous::Namespace::from_static(RENDEZVOUS_NAMESPACE);
        if let Err(e) = self
            .swarm
            .behaviour_mut()
            .rendezvous_client
            .register(ns, peer, None)
        {
            debug!(%peer, "rendezvous registration not sent: {e}");
        }
    }

    fn rendezvous_discover(&mut self, peer: PeerId) {
        let ns = rendezvous::Namespace::from_static(RENDEZVOUS_NAMESPACE);
        let cookie = self.rendezvous_cookies.get(&peer).cloned();
        self.swarm
            .behaviour_mut()
            .rendezvous_client
            .discover(Some(ns), cookie, Some(1000), peer);
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::GetProviders { bucket, reply } => {
                let id = self.swarm.behaviour_mut().kad.get_providers(bucket.key());
                self.pending_providers.insert(id, (HashSet::new(), reply));
            }
            Command::GetRecords { key, reply } => {
                let id = self.swarm.behaviour_mut().kad.get_record(key);
                self.pending_records.insert(id, (Vec::new(), reply));
            }
            Command::PutRecord { key, value, reply } => {
                let record = kad::Record::new(key, value);
                match self
                    .swarm
                    .behaviour_mut()
                    .kad
                    .put_record(record, kad::Quorum::One)
                {
                    Ok(id) => {
                        self.pending_puts.insert(id, reply);
                    }
                    Err(e) => {
                        let _ = reply.send(Err(Error::Network(format!("record not stored: {e}"))));
                    }
                }
            }
            Command::FindPeer { peer, reply } => {
                let id = self.swarm.behaviour_mut().kad.get_closest_peers(peer);
                self.pending_peers.insert(id, (peer, reply));
            }
            Command::Control {
                peer,
                request,
                reply,
            } => {
                let addrs = self.book.get(&peer);
                self.dialed.used(peer);
                let id = self
                    .swarm
                    .behaviour_mut()
                    .control
                    .send_request_with_addresses(&peer, Incoming::Message(request), addrs);
                self.pending_control.insert(id, reply);
            }
            Command::Shard {
                peer,
                request,
                reply,
                slot,
            } => {
                let addrs = self.book.get(&peer);
                self.dialed.used(peer);
                let id = self
                    .swarm
                    .behaviour_mut()
                    .shard
                    .send_request_with_addresses(&peer, Incoming::Message(request), addrs);
                self.pending_shard.insert(id, reply);
                self.shard_slots.insert(id, slot);
            }
            Command::RespondControl { channel, response } => {
                if self
                    .swarm
                    .behaviour_mut()
                    .control
                    .send_response(channel, response)
                    .is_err()
                {
                    debug!("control response not sent: requester gone");
                }
            }
            Command::RespondShard { channel, response } => {
                if self
                    .swarm
                    .behaviour_mut()
                    .shard
                    .send_response(channel, response)
                    .is_err()
                {
                    debug!("shard response not sent: requester gone");
                }
            }
            Command::AddAddresses { peer, addrs } => {
                for addr in addrs {
                    self.learn(peer, addr, true);
                }
            }
            Command::PeerAddresses { peer, reply } => {
                let _ = reply.send(self.book.get(&peer));
            }
            Command::ObservedIp { peer, reply } => {
                let _ = reply.send(self.observed.get(&peer).copied());
            }
            Command::Status { reply } => {
                let dht_peers = self
                    .swarm
                    .behaviour_mut()
                    .kad
                    .kbuckets()
                    .map(|b| b.num_entries() as u64)
                    .sum();
                let _ = reply.send(NetStatus {
                    peer_id: self.swarm.local_peer_id().to_string(),
                    listen_addrs: self.swarm.listeners().map(|a| a.to_string()).collect(),
                    dht_peers,
                    connected_peers: self.swarm.connected_peers().count() as u64,
                    refused_requests: self.refusals.total(),
                });
            }
        }
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        self.p2p_metrics.record(&event);
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                info!(%address, "listening");
                if self.announce_listen {
                    self.swarm.add_external_address(address);
                }
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                endpoint,
                connection_id,
                ..
            } => {
                debug!(peer = %peer_id, addr = %endpoint.get_remote_address(), "connected");
                if endpoint.is_dialer() {
                    for (id, peer) in
                        self.dialed
                            .opened(connection_id, peer_id, &self.bootstrap_peers)
                    {
                        debug!(%peer, "closing a connection only the DHT used: at the outbound cap");
                        self.swarm.close_connection(id);
                    }
                }
                if let Some(ip) = ip_of(endpoint.get_remote_address()) {
                    self.observed.insert(peer_id, ip);
                }
                if self.bootstrap_peers.contains(&peer_id) {
                    if endpoint.is_dialer() {
                        self.learn(peer_id, endpoint.get_remote_address().clone(), true);
                    }
                    // Back after a restart: registrations may be gone.
                    if self.rendezvous_peers.contains(&peer_id) {
                        self.rendezvous_join(peer_id);
                    }
                    if let Err(e) = self.swarm.behaviour_mut().kad.bootstrap() {
                        debug!("kad bootstrap: {e}");
                    }
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                num_established,
                ..
            } => {
                self.dialed.closed(connection_id);
                if num_established == 0 {
                    self.observed.remove(&peer_id);
                }
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                debug!(peer = ?peer_id, "dial failed: {error}");
            }
            SwarmEvent::Behaviour(event) => self.on_behaviour_event(event),
            _ => {}
        }
    }

    fn on_behaviour_event(&mut self, event: BehaviourEvent) {
        match &event {
            BehaviourEvent::Kad(e) => self.p2p_metrics.record(e),
            BehaviourEvent::Identify(e) => self.p2p_metrics.record(e),
            BehaviourEvent::Ping(e) => self.p2p_metrics.record(e),
            _ => {}
        }
        match event {
            BehaviourEvent::Kad(event) => self.on_kad(event),
            BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. }) => {
                if self.bootstrap_peers.contains(&peer_id)
                    && info.protocols.contains(&rendezvous::PROTOCOL_NAME)
                    && self.rendezvous_peers.insert(peer_id)
                {
                    self.rendezvous_join(peer_id);
                }
                // Peers that dialed us are unroutable in the DHT unless we
                // learn where they listen.
                let routable = info.protocols.contains(&KAD_PROTOCOL);
                for addr in info.listen_addrs.into_iter().take(MAX_ADDRS_PER_PEER) {
                    self.learn(peer_id, addr, routable);
                }
            }
            BehaviourEvent::Control(event) => {
                self.dialed.used(rr_peer(&event));
                let inbound = on_request_response(event, &mut self.pending_control);
                if let Some((peer, request, channel)) = accept(
                    inbound,
                    &mut self.swarm.behaviour_mut().control,
                    ControlResponse::Error,
                    &mut self.refusals,
                ) {
                    if let Some(refusal) = self.over_budget(&peer, &request) {
                        let _ = self
                            .swarm
                            .behaviour_mut()
                            .control
                            .send_response(channel, refusal);
                        return;
                    }
                    self.forward(Inbound::Control {
                        peer,
                        request,
                        channel,
                    });
                }
            }
            BehaviourEvent::Shard(event) => {
                self.dialed.used(rr_peer(&event));
                if let Some(id) = rr_outbound_id(&event) {
                    self.shard_slots.remove(&id);
                }
                let inbound = on_request_response(event, &mut self.pending_shard);
                if let Some((peer, request, channel)) = accept(
                    inbound,
                    &mut self.swarm.behaviour_mut().shard,
                    ShardResponse::Error,
                    &mut self.refusals,
                ) {
                    self.forward(Inbound::Shard {
                        peer,
                        request,
                        channel,
                    });
                }
            }
            BehaviourEvent::RendezvousClient(event) => self.on_rendezvous(event),
            _ => {}
        }
    }

    fn on_kad(&mut self, event: kad::Event) {
        match event {
            kad::Event::OutboundQueryProgressed {
                id, result, step, ..
            } => match result {
                QueryResult::GetProviders(result) => {
                    if let Some((found, _)) = self.pending_providers.get_mut(&id)
                        && let Ok(GetProvidersOk::FoundProviders { providers, .. }) = result
                    {
                        found.extend(providers);
                    }
                    if step.last
                        && let Some((found, reply)) = self.pending_providers.remove(&id)
                    {
                        let _ = reply.send(found);
                    }
                }
                QueryResult::GetRecord(result) => {
                    if let Some((found, _)) = self.pending_records.get_mut(&id)
                        && let Ok(kad::GetRecordOk::FoundRecord(r)) = result
                        && found.len() < MAX_RECORDS_PER_LOOKUP
                    {
                        found.push(r.record.value);
                    }
                    if step.last
                        && let Some((found, reply)) = self.pending_records.remove(&id)
                    {
                        let _ = reply.send(found);
                    }
                }
                QueryResult::PutRecord(result) => {
                    if let Some(reply) = self.pending_puts.remove(&id) {
                        let _ = reply.send(
                            result
                                .map(|_| ())
                                .map_err(|e| Error::Network(format!("record not stored: {e}"))),
                        );
                    }
                }
                QueryResult::GetClosestPeers(result) => {
                    if let Some((peer, reply)) = self.pending_peers.remove(&id) {
                        let peers = match result {
                            Ok(ok) => ok.peers,
                            Err(kad::GetClosestPeersError::Timeout { peers, .. }) => peers,
                        };
                        let addrs: Vec<Multiaddr> = peers
                            .into_iter()
                            .filter(|p| p.peer_id == peer)
                            .flat_map(|p| p.addrs)
                            .take(MAX_ADDRS_PER_PEER)
                            .collect();
                        for a in &addrs {
                            self.learn(peer, a.clone(), true);
                        }
                        let _ = reply.send(addrs);
                    }
                }
                QueryResult::Bootstrap(_) if step.last && self.provide => self.announce(),
                QueryResult::StartProviding(Err(e)) => {
                    debug!("provider announcement incomplete: {e}")
                }
                _ => {}
            },
            kad::Event::InboundRequest { request } => {
                super::behaviour::store_inbound(&mut self.swarm.behaviour_mut().kad, request)
            }
            kad::Event::RoutingUpdated {
                peer, addresses, ..
            } => {
                for addr in addresses.iter() {
                    self.book.add(peer, addr.clone());
                }
            }
            _ => {}
        }
    }

    /// A refusal for an audit or a list (the requests that read many
    /// records) over its peer's budget; None for anything else.
    fn over_budget(&mut self, peer: &PeerId, request: &ControlRequest) -> Option<ControlResponse> {
        if !matches!(
            request,
            ControlRequest::Audit { .. } | ControlRequest::List { .. }
        ) {
            return None;
        }
        let wait = self.audit_budget.check_key(peer).err()?;
        let secs = wait
            .wait_time_from(DefaultClock::default().now())
            .as_secs_f64();
        self.refusals
            .refused(*peer, "an audit", "over its audit budget");
        Some(ControlResponse::Error(WireError::new(
            WireErrorKind::RateLimited,
            format!("over the budget of {AUDITS_PER_MINUTE} audits a minute; retry in {secs:.1} s"),
        )))
    }

    /// Hands an inbound request to the fair queue without ever blocking
    /// the swarm. What the queue refuses (this request, or another peer's
    /// that gave up its slot) is answered at once with a refusal the peer
    /// can tell from a dead node.
    fn forward(&mut self, inbound: Inbound) {
        if let Some((refused, why)) = self.inbound.send(inbound) {
            self.refuse(refused, why);
        }
    }

    fn refuse(&mut self, refused: Inbound, why: Refusal) {
        let answer = why.wire_error();
        let peer = refused.peer();
        self.refusals.refused(peer, "a request", why.as_str());
        let sent = match refused {
            Inbound::Control { channel, .. } => self
                .swarm
                .behaviour_mut()
                .control
                .send_response(channel, ControlResponse::Error(answer))
                .is_ok(),
            Inbound::Shard { channel, .. } => self
                .swarm
                .behaviour_mut()
                .shard
                .send_response(channel, ShardResponse::Error(answer))
                .is_ok(),
        };
        if !sent {
            debug!(%peer, "refusal not sent: requester gone");
        }
    }

    fn on_rendezvous(&mut self, event: rendezvous::client::Event) {
        match event {
            rendezvous::client::Event::Discovered {
                rendezvous_node,
                registrations,
                cookie,
            } => {
                self.rendezvous_cookies.insert(rendezvous_node, cookie);
                for reg in registrations {
                    let peer = reg.record.peer_id();
                    for addr in reg.record.addresses().iter().take(MAX_ADDRS_PER_PEER) {
                        self.learn(peer, addr.clone(), true);
                    }
                }
            }
            rendezvous::client::Event::Registered {
                rendezvous_node,
                ttl,
                ..
            } => {
                debug!(peer = %rendezvous_node, ttl, "registered at rendezvous node");
            }
            rendezvous::client::Event::RegisterFailed {
                rendezvous_node,
                error,
                ..
            } => {
                debug!(peer = %rendezvous_node, ?error, "rendezvous registration failed");
            }
            rendezvous::client::Event::DiscoverFailed {
                rendezvous_node,
                error,
                ..
            } => {
                debug!(peer = %rendezvous_node, ?error, "rendezvous discovery failed");
            }
            rendezvous::client::Event::Expired { .. } => {}
        }
    }
}

/// The peer a request-response event is about.
fn rr_peer<Req, Resp>(event: &request_response::Event<Req, Resp>) -> PeerId {
    match event {
        request_response::Event::Message { peer, .. }
        | request_response::Event::OutboundFailure { peer, .. }
        | request_response::Event::InboundFailure { peer, .. }
        | request_response::Event::ResponseSent { peer, .. } => *peer,
    }
}

/// The request of ours an event ends, if it ends one.
fn rr_outbound_id<Req, Resp>(
    event: &request_response::Event<Req, Resp>,
) -> Option<OutboundRequestId> {
    match event {
        request_response::Event::Message {
            message: request_response::Message::Response { request_id, .. },
            ..
        }
        | request_response::Event::OutboundFailure { request_id, .. } => Some(*request_id),
        _ => None,
    }
}

type Pending<Resp> = HashMap<OutboundRequestId, oneshot::Sender<Result<Resp, PeerError>>>;

type Request<Req, Resp> = (PeerId, Req, request_response::ResponseChannel<Resp>);

/// An inbound request to serve, or None once a request that was framed
/// but did not decode has been answered `BadRequest` (as `error(..)`).
fn accept<Req, Resp>(
    inbound: Option<Request<Incoming<Req>, Resp>>,
    behaviour: &mut request_response::Behaviour<Codec<Req, Resp>>,
    error: fn(WireError) -> Resp,
    refusals: &mut RefusalLog,
) -> Option<Request<Req, Resp>>
where
    Req: Send + serde::Serialize + serde::de::DeserializeOwned,
    Resp: Send + serde::Serialize + serde::de::DeserializeOwned,
{
    let (peer, incoming, channel) = inbound?;
    match incoming {
        Incoming::Message(request) => Some((peer, request, channel)),
        Incoming::Malformed(why) => {
            refusals.refused(peer, "a malformed request", &why);
            let answer = WireError::new(
                WireErrorKind::BadRequest,
                format!("malformed request: {why}"),
            );
            let _ = behaviour.send_response(channel, error(answer));
            None
        }
    }
}

/// One request-response event of either protocol: replies to our pending
/// requests, and returns a peer's request for the caller to forward.
fn on_request_response<Req, Resp>(
    event: request_response::Event<Req, Resp>,
    pending: &mut Pending<Resp>,
) -> Option<Request<Req, Resp>> {
    use request_response::{Event, Message};
    match event {
        Event::Message {
            peer,
            message: Message::Request {
                request, channel, ..
            },
            ..
        } => {
            return Some((peer, request, channel));
        }
        Event::Message {
            message:
                Message::Response {
                    request_id,
                    response,
                },
            ..
        } => {
            if let Some(reply) = pending.remove(&request_id) {
                let _ = reply.send(Ok(response));
            }
        }
        Event::OutboundFailure {
            request_id, error, ..
        } => {
            if let Some(reply) = pending.remove(&request_id) {
                let _ = reply.send(Err(PeerError::Unreachable(error.to_string())));
            }
        }
        Event::InboundFailure { peer, error, .. } => {
            debug!(%peer, "inbound request failed: {error}")
        }
        Event::ResponseSent { .. } => {}
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> Multiaddr {
        format!("/ip4/10.0.0.1/tcp/{port}").parse().unwrap()
    }

    #[test]
    fn the_book_forgets_the_least_recently_used_peer_never_a_pinned_one() {
        let mut book = AddressBook::default();
        let seed = PeerId::random();
        book.pin(seed, addr(1));
        let kept = PeerId::random();
        book.add(kept, addr(2));
        let peers: Vec<PeerId> = (0..MAX_BOOK_PEERS).map(|_| PeerId::random()).collect();
        for (i, p) in peers.iter().enumerate() {
            book.add(*p, addr(3));
            if i % 100 == 0 {
                // In use: dialed now and then, so never the oldest.
                assert_eq!(book.get(&kept), vec![addr(2)]);
            }
        }
        assert_eq!(book.len(), MAX_BOOK_PEERS);
        assert_eq!(book.get(&kept), vec![addr(2)]);
        assert!(book.get(&peers[0]).is_empty(), "the oldest is gone");
        assert_eq!(book.get(&seed), vec![addr(1)]);
        // A peer keeps its newest few addresses.
        for port in 0..(MAX_ADDRS_PER_PEER as u16 + 3) {
            book.add(kept, addr(100 + port));
        }
        let got = book.get(&kept);
        assert_eq!(got.len(), MAX_ADDRS_PER_PEER);
        assert_eq!(got.last(), Some(&addr(100 + MAX_ADDRS_PER_PEER as u16 + 2)));
    }

    #[test]
    fn past_three_quarters_of_the_cap_the_oldest_dht_only_connection_closes() {
        let conn = ConnectionId::new_unchecked;
        let mut dialed = Dialed::new(8, false);
        let seed = PeerId::random();
        let busy = PeerId::random();
        let pinned = HashSet::from([seed]);
        dialed.used(busy);
        let peers: Vec<PeerId> = (0..6).map(|_| PeerId::random()).collect();
        // The seed, a peer with a request under way, then DHT-only peers:
        // 6 of a cap of 8 fit.
        assert!(dialed.opened(conn(0), seed, &pinned).is_empty());
        assert!(dialed.opened(conn(1), busy, &pinned).is_empty());
        for (i, p) in peers.iter().take(4).enumerate() {
            assert!(dialed.opened(conn(2 + i), *p, &pinned).is_empty());
        }
        // The 7th closes the oldest the DHT alone used, never the seed
        // or the busy peer.
        assert_eq!(
            dialed.opened(conn(6), peers[4], &pinned),
            vec![(conn(2), peers[0])]
        );
        assert_eq!(
            dialed.opened(conn(7), peers[5], &pinned),
            vec![(conn(3), peers[1])]
        );
        // A connection that closed by itself leaves room.
        dialed.closed(conn(4));
        assert!(dialed.opened(conn(8), PeerId::random(), &pinned).is_empty());
        // With nothing idle left, nothing is closed: the cap refuses.
        let mut full = Dialed::new(4, false);
        for i in 0..4 {
            let p = PeerId::random();
            full.used(p);
            assert!(full.opened(conn(10 + i), p, &pinned).is_empty());
        }
        assert_eq!(full.conns.len(), 4);
        // A DHT server never closes one.
        let mut server = Dialed::new(4, true);
        for i in 0..8 {
            assert!(
                server
                    .opened(conn(20 + i), PeerId::random(), &pinned)
                    .is_empty()
            );
        }
    }
}
