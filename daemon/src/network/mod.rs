//! The p2p network: one task owns the Swarm ([`event_loop`]); everything
//! else holds a cheap, clonable [`Client`] that sends it commands with
//! oneshot replies. Inbound requests flow the other way, as [`Inbound`]
//! values, to whichever service answers them.

mod behaviour;
pub mod codec;
mod event_loop;
pub mod inbound;
mod ip_limits;
pub mod netgroup;
mod peer_api;
mod refusals;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use libp2p::identity::Keypair;
use libp2p::request_response::ResponseChannel;
use libp2p::{Multiaddr, PeerId};
use tokio::sync::{mpsc, oneshot};

pub use behaviour::{
    IDLE_CONNECTION_TIMEOUT, KAD_BOOTSTRAP_INTERVAL, MAX_PROVIDERS_PER_KEY, PROVIDER_RECORD_TTL,
    PROVIDER_REPUBLISH_INTERVAL, Timeouts, dht, store_inbound,
};
pub use event_loop::{DISCOVER_EVERY, announce_again};
pub use inbound::Inbound;
pub use ip_limits::{MAX_ESTABLISHED_PER_IP, MAX_PENDING_PER_IP};
pub use peer_api::{PeerError, retry_busy};

use crate::error::{Error, Result};
use crate::protocol::*;

pub struct NetworkConfig {
    pub listen: Vec<Multiaddr>,
    pub external: Vec<Multiaddr>,
    pub bootstrap: Vec<Multiaddr>,
    pub rendezvous_server: bool,
    /// Announce this node as a storage provider in the DHT.
    pub provide: bool,
    /// Answer DHT queries (Kademlia server mode): seeds and providers.
    /// A client only asks, so it is not in others' routing tables.
    pub dht_server: bool,
    /// Connections this node opens and holds at once; dials past it fail.
    pub max_outbound_connections: u32,
    pub timeouts: Timeouts,
    /// Where libp2p's own metrics (swarm, Kademlia, identify, ping,
    /// bandwidth) are registered and recorded.
    pub metrics: crate::metrics::Metrics,
}

#[derive(Debug, Clone, Default)]
pub struct NetStatus {
    pub peer_id: String,
    pub listen_addrs: Vec<String>,
    pub dht_peers: u64,
    pub connected_peers: u64,
    /// Peer requests refused since start: over a quota or a budget,
    /// malformed, or with every slot taken.
    pub refused_requests: u64,
}

enum Command {
    GetProviders {
        bucket: ProviderBucket,
        reply: oneshot::Sender<HashSet<PeerId>>,
    },
    /// Every value a DHT lookup of `key` finds, from every node that
    /// answers (ours first, if we hold one).
    GetRecords {
        key: libp2p::kad::RecordKey,
        reply: oneshot::Sender<Vec<Vec<u8>>>,
    },
    /// Stores a record at the nodes closest to its key (and here).
    PutRecord {
        key: libp2p::kad::RecordKey,
        value: Vec<u8>,
        reply: oneshot::Sender<Result<()>>,
    },
    /// Looks a peer up in the DHT, learning where it listens.
    FindPeer {
        peer: PeerId,
        reply: oneshot::Sender<Vec<Multiaddr>>,
    },
    Control {
        peer: PeerId,
        request: ControlRequest,
        reply: oneshot::Sender<Result<ControlResponse, PeerError>>,
    },
    Shard {
        peer: PeerId,
        request: ShardRequest,
        reply: oneshot::Sender<Result<ShardResponse, PeerError>>,
        /// One of the peer's [`MAX_SHARD_STREAMS`] slots, held by the
        /// network task until the request ends however it ends.
        slot: tokio::sync::OwnedSemaphorePermit,
    },
    RespondControl {
        channel: ResponseChannel<ControlResponse>,
        response: ControlResponse,
    },
    RespondShard {
        channel: ResponseChannel<ShardResponse>,
        response: ShardResponse,
    },
    AddAddresses {
        peer: PeerId,
        addrs: Vec<Multiaddr>,
    },
    PeerAddresses {
        peer: PeerId,
        reply: oneshot::Sender<Vec<Multiaddr>>,
    },
    ObservedIp {
        peer: PeerId,
        reply: oneshot::Sender<Option<std::net::IpAddr>>,
    },
    Status {
        reply: oneshot::Sender<NetStatus>,
    },
}

#[derive(Clone)]
pub struct Client {
    tx: mpsc::Sender<Command>,
    local_peer_id: PeerId,
    /// Per peer, the shard streams this node may have open to it.
    shard_slots: Arc<std::sync::Mutex<HashMap<PeerId, Arc<tokio::sync::Semaphore>>>>,
}

/// Shard requests open at once on one connection, each way: past it
/// request-response fails a request at once ("max sub-streams reached"),
/// so our own requests wait for a slot instead.
pub const MAX_SHARD_STREAMS: usize = 8;
/// Peers whose slots are kept; idle ones go first past it.
const MAX_SLOT_PEERS: usize = 1024;

/// Starts the network task. Returns the client handle and the fair queue
/// of inbound requests; the task ends when every `Client` is dropped.
pub async fn spawn(key: Keypair, cfg: NetworkConfig) -> Result<(Client, inbound::Receiver)> {
    let local_peer_id = key.public().to_peer_id();
    let (tx, rx) = mpsc::channel(256);
    let (inbound_tx, inbound_rx) = inbound::queue();
    let event_loop = event_loop::EventLoop::new(key, cfg, rx, inbound_tx)?;
    tokio::spawn(event_loop.run());
    Ok((
        Client {
            tx,
            local_peer_id,
            shard_slots: Arc::default(),
        },
        inbound_rx,
    ))
}

impl Client {
    pub fn local_peer_id(&self) -> PeerId {
        self.local_peer_id
    }

    async fn call<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(make(reply))
            .await
            .map_err(|_| Error::Network("network task stopped".into()))?;
        rx.await
            .map_err(|_| Error::Network("network task dropped the request".into()))
    }

    /// The providers announced under one bucket's DHT key.
    pub async fn get_providers(&self, bucket: ProviderBucket) -> Result<HashSet<PeerId>> {
        self.call(|reply| Command::GetProviders { bucket, reply })
            .await
    }

    /// Every value stored under `key` that a DHT lookup finds; checking
    /// them is the caller's job.
    pub async fn get_records(&self, key: libp2p::kad::RecordKey) -> Result<Vec<Vec<u8>>> {
        self.call(|reply| Command::GetRecords { key, reply }).await
    }

    /// Stores a record here and at the nodes closest to its key; an error
    /// if no other node took it.
    pub async fn put_record(&self, key: libp2p::kad::RecordKey, value: Vec<u8>) -> Result<()> {
        self.call(|reply| Command::PutRecord { key, value, reply })
            .await?
    }

    /// Where `peer` listens, as a DHT walk towards it finds (empty if it
    /// found nothing); the addresses are remembered for dialing.
    pub async fn find_peer(&self, peer: PeerId) -> Result<Vec<Multiaddr>> {
        self.call(|reply| Command::FindPeer { peer, reply }).await
    }

    /// A raw control request: only the typed API in [`peer_api`] uses it.
    async fn control(
        &self,
        peer: PeerId,
        request: ControlRequest,
    ) -> Result<ControlResponse, PeerError> {
        self.call(|reply| Command::Control {
            peer,
            request,
            reply,
        })
        .await
        .map_err(|e| PeerError::Unreachable(e.to_string()))?
    }

    fn shard_slot(&self, peer: PeerId) -> Result<Arc<tokio::sync::Semaphore>> {
        let mut slots = self
            .shard_slots
            .lock()
            .map_err(|_| Error::Internal("shard slots poisoned".into()))?;
        if slots.len() >= MAX_SLOT_PEERS && !slots.contains_key(&peer) {
            slots.retain(|_, s| s.available_permits() < MAX_SHARD_STREAMS);
        }
        Ok(slots
            .entry(peer)
            .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(MAX_SHARD_STREAMS)))
            .clone())
    }

    /// A raw shard request: only the typed API in [`peer_api`] uses it.
    async fn shard(&self, peer: PeerId, request: ShardRequest) -> Result<ShardResponse, PeerError> {
        // Requests a caller gave up on hold their slots until the peer
        // answers or they time out, so a cancelled get cannot starve the
        // next one of streams.
        let slot = self
            .shard_slot(peer)
            .map_err(|e| PeerError::Unreachable(e.to_string()))?
            .acquire_owned()
            .await
            .map_err(|e| PeerError::Unreachable(e.to_string()))?;
        self.call(|reply| Command::Shard {
            peer,
            request,
            reply,
            slot,
        })
        .await
        .map_err(|e| PeerError::Unreachable(e.to_string()))?
    }

    pub async fn respond_control(
        &self,
        channel: ResponseChannel<ControlResponse>,
        response: ControlResponse,
    ) {
        let _ = self
            .tx
            .send(Command::RespondControl { channel, response })
            .await;
    }

    pub async fn respond_shard(
        &self,
        channel: ResponseChannel<ShardResponse>,
        response: ShardResponse,
    ) {
        let _ = self
            .tx
            .send(Command::RespondShard { channel, response })
            .await;
    }

    pub async fn add_addresses(&self, peer: PeerId, addrs: Vec<Multiaddr>) {
        let _ = self.tx.send(Command::AddAddresses { peer, addrs }).await;
    }

    pub async fn peer_addresses(&self, peer: PeerId) -> Result<Vec<Multiaddr>> {
        self.call(|reply| Command::PeerAddresses { peer, reply })
            .await
    }

    /// The IP a connected peer's connection comes from (or goes to), as
    /// we see it: not what the peer announces.
    pub async fn observed_ip(&self, peer: PeerId) -> Result<Option<std::net::IpAddr>> {
        self.call(|reply| Command::ObservedIp { peer, reply }).await
    }

    pub async fn status(&self) -> Result<NetStatus> {
        self.call(|reply| Command::Status { reply }).await
    }
}
