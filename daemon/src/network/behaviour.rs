//! The composed libp2p behaviour and the transport that carries it.

use std::time::Duration;

use libp2p::identity::Keypair;
use libp2p::kad::{
    self,
    store::{MemoryStore, MemoryStoreConfig},
};
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::{NetworkBehaviour, behaviour::toggle::Toggle};
use libp2p::{
    PeerId, Swarm, connection_limits, identify, noise, ping, rendezvous, tcp, tls, yamux,
};

use crate::error::{Error, Result};
use crate::protocol::*;

use super::codec::Codec;

pub type ControlBehaviour = request_response::Behaviour<Codec<ControlRequest, ControlResponse>>;
pub type ShardBehaviour = request_response::Behaviour<Codec<ShardRequest, ShardResponse>>;

/// Connections being set up from outside at once: a handshake costs a
/// key exchange, so a flood of them is refused early.
pub const MAX_PENDING_INCOMING: u32 = 64;
/// Inbound connections held at once, from all peers.
pub const MAX_ESTABLISHED_INCOMING: u32 = 1024;
/// Connections to or from one peer id: one is enough, a few cover
/// simultaneous dials and reconnects.
pub const MAX_ESTABLISHED_PER_PEER: u32 = 4;
/// Providers one node keeps per DHT key. libp2p answers a lookup with at
/// most 20 of them (its replication factor), the first it stored, which
/// is why providers are spread over [`PROVIDER_BUCKETS`] keys. Keeping
/// more than libp2p's default of 20 means that when shown providers
/// leave (their records expire), the next are shown at once, not after
/// their next announcement. Past the cap newcomers are ignored (libp2p's
/// defence against record floods).
pub const MAX_PROVIDERS_PER_KEY: usize = 128;
/// A connection nothing has used for this long is closed: DHT lookups
/// touch many peers once, and a client must not hold them all for long.
pub const IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(120);
/// How often each connection is pinged. Nothing here reads the round
/// trip times, and a dead connection shows itself to the request on it
/// (each has a timeout), so the ping is for peers that expect one and for
/// a quiet connection's liveness. libp2p's default of 15 s, on each of
/// the hundred or so connections a daemon of a 200-node network holds,
/// was a wakeup every few milliseconds per daemon (scripts/scale.sh).
pub const PING_INTERVAL: Duration = Duration::from_secs(60);
/// Kademlia's query timeout.
pub const KAD_QUERY_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a provider re-announces itself (Kademlia's republish).
/// Shorter than libp2p's 12 h: it keeps a small or churning network's
/// registry fresh.
pub const PROVIDER_REPUBLISH_INTERVAL: Duration = Duration::from_secs(300);
/// How long a node keeps a provider record: it outlives two missed
/// republishes.
pub const PROVIDER_RECORD_TTL: Duration = Duration::from_secs(900);
/// How often Kademlia refreshes the routing table (libp2p's bootstrap).
pub const KAD_BOOTSTRAP_INTERVAL: Duration = Duration::from_secs(120);

#[derive(NetworkBehaviour)]
pub struct Behaviour {
    /// First, so its refusals happen before any other behaviour sees the
    /// connection.
    pub limits: connection_limits::Behaviour,
    /// Per remote IP, since peer ids cost nothing.
    pub ip_limits: super::ip_limits::Behaviour,
    pub kad: kad::Behaviour<MemoryStore>,
    pub identify: identify::Behaviour,
    pub ping: ping::Behaviour,
    pub control: ControlBehaviour,
    pub shard: ShardBehaviour,
    pub rendezvous_client: rendezvous::client::Behaviour,
    pub rendezvous_server: Toggle<rendezvous::server::Behaviour>,
}

pub struct Timeouts {
    pub control: Duration,
    pub shard: Duration,
}

/// The Kademlia behaviour every p2pstore node runs, with p2pstore's
/// settings: public so that the discovery simulation
/// (`tests/src/bin/sim.rs`) runs exactly what the daemon runs.
pub fn dht(peer_id: PeerId, server: bool) -> kad::Behaviour<MemoryStore> {
    let mut kad_cfg = kad::Config::new(KAD_PROTOCOL);
    kad_cfg
        .set_query_timeout(KAD_QUERY_TIMEOUT)
        .set_provider_publication_interval(Some(PROVIDER_REPUBLISH_INTERVAL))
        .set_provider_record_ttl(Some(PROVIDER_RECORD_TTL))
        .set_periodic_bootstrap_interval(Some(KAD_BOOTSTRAP_INTERVAL))
        // Every inbound record is checked before it is stored
        // ([`store_inbound`]): a record under an account's pointer key
        // must be signed by that account and newer than what is held.
        .set_record_filtering(kad::StoreInserts::FilterBoth);
    let store = MemoryStore::with_config(
        peer_id,
        MemoryStoreConfig {
            max_providers_per_key: MAX_PROVIDERS_PER_KEY,
            ..Default::default()
        },
    );
    let mut kad = kad::Behaviour::with_config(peer_id, store, kad_cfg);
    // Without this a node with no confirmed external address stays a DHT
    // client and answers nobody, so get_providers finds nothing. A client
    // only asks: as a server, every lookup in the network could open a
    // connection to it.
    kad.set_mode(Some(if server {
        kad::Mode::Server
    } else {
        kad::Mode::Client
    }));
    kad
}

/// Stores what a peer sent for the DHT, once checked: provider records as
/// libp2p would have (its own bounds apply), and records only when they
/// are valid index pointers newer than the one held
/// ([`crate::pointer::accept`]). Every node running [`dht`] calls it on
/// each inbound request, since [`dht`] filters them all.
pub fn store_inbound(kad: &mut kad::Behaviour<MemoryStore>, request: kad::InboundRequest) {
    use kad::store::RecordStore;
    match request {
        kad::InboundRequest::AddProvider {
            record: Some(record),
        } => {
            if let Err(e) = kad.store_mut().add_provider(record) {
                tracing::debug!("provider record not stored: {e}");
            }
        }
        kad::InboundRequest::PutRecord {
            source,
            record: Some(record),
            ..
        } => {
            let store = kad.store_mut();
            let held = store.get(&record.key).map(|r| r.value.clone());
            if !crate::pointer::accept(&record.key, &record.value, held.as_deref()) {
                tracing::debug!(peer = %source, "record refused: not a valid, newer index pointer");
                return;
            }
            if let Err(e) = store.put(record) {
                tracing::debug!(peer = %source, "record not stored: {e}");
            }
        }
        _ => {}
    }
}

pub fn build_swarm(key: Keypair, cfg: &super::NetworkConfig) -> Result<Swarm<Behaviour>> {
    let timeouts = &cfg.timeouts;
    let swarm = libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            // TLS 1.3 first, Noise for peers without it: libp2p-tls's
            // aws-lc ciphers move shards at several times the speed of
            // Noise's ChaCha20-Poly1305 (scripts/bench.sh), and both
            // authenticate the peer id the same way.
            (tls::Config::new, noise::Config::new),
            yamux::Config::default,
        )
        .map_err(|e| Error::Network(format!("tcp transport: {e}")))?
        .with_quic()
        .with_dns()
        .map_err(|e| Error::Network(format!("dns transport: {e}")))?;
    let mut registry = cfg.metrics.registry();
    let swarm = swarm
        .with_bandwidth_metrics(&mut registry)
        .with_behaviour(|key| {
            let peer_id = key.public().to_peer_id();
            let kad = dht(peer_id, cfg.dht_server);
            let control = request_response::Behaviour::with_codec(
                Codec::new(MAX_CONTROL_MESSAGE, MAX_CONTROL_MESSAGE),
                [(CONTROL_PROTOCOL, ProtocolSupport::Full)],
                request_response::Config::default().with_request_timeout(timeouts.control),
            );
            let shard = request_response::Behaviour::with_codec(
                Codec::new(MAX_SHARD_MESSAGE, MAX_SHARD_MESSAGE),
                [(SHARD_PROTOCOL, ProtocolSupport::Full)],
                request_response::Config::default()
                    .with_request_timeout(timeouts.shard)
                    .with_max_concurrent_streams(super::MAX_SHARD_STREAMS),
            );
            Behaviour {
                limits: connection_limits::Behaviour::new(
                    connection_limits::ConnectionLimits::default()
                        .with_max_pending_incoming(Some(MAX_PENDING_INCOMING))
                        .with_max_established_incoming(Some(MAX_ESTABLISHED_INCOMING))
                        .with_max_established_per_peer(Some(MAX_ESTABLISHED_PER_PEER))
                        .with_max_established_outgoing(Some(cfg.max_outbound_connections)),
                ),
                ip_limits: Default::default(),
                kad,
                identify: identify::Behaviour::new(
                    identify::Config::new("/p2pstore/id/1.0.0".into(), key.public())
                        .with_agent_version(format!("p2pstored/{}", env!("CARGO_PKG_VERSION"))),
                ),
                ping: ping::Behaviour::new(ping::Config::new().with_interval(PING_INTERVAL)),
                control,
                shard,
                rendezvous_client: rendezvous::client::Behaviour::new(key.clone()),
                rendezvous_server: Toggle::from(cfg.rendezvous_server.then(|| {
                    rendezvous::server::Behaviour::new(rendezvous::server::Config::default())
                })),
            }
        })
        .map_err(|e| Error::Network(format!("behaviour: {e}")))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(IDLE_CONNECTION_TIMEOUT))
        .build();
    Ok(swarm)
}
