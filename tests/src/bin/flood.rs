//! `p2pstore-flood`: many hostile peers, in a process of their own, each
//! keeping many valid requests in flight at one provider, for the
//! hostile-peer tests (tests/tests/hostile.rs). Each peer has a fresh
//! identity. At the end it prints one JSON line of counts:
//! `{"sent":…,"answered":…,"refused":…,"failed":…}`.
//!
//! Kinds: offer, store, fetch, audit, propose, or mixed (all of them in
//! turn). Stores and audits name contracts the peers never paid, so what
//! they cost the provider is the reading and the refusing.
//!
//! Kind `connect` sends no requests: each peer dials from `--source-ip`
//! (an address of its own, 127.0.0.x on loopback), completes the noise and
//! yamux handshakes, and holds the connection. Then `answered` counts the
//! connections still open at the end, `refused` those the target closed.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use p2pstored::ids::{ContractId, ShardId};
use p2pstored::network::{self, NetworkConfig, PeerError, Timeouts};
use p2pstored::protocol::{Challenge, Proposal};

#[derive(Parser)]
struct Args {
    /// The provider: /ip4/…/tcp/…/p2p/<peer id>.
    #[arg(long)]
    target: Multiaddr,
    #[arg(long, default_value_t = 20)]
    peers: usize,
    /// Requests each peer keeps in flight.
    #[arg(long, default_value_t = 100)]
    in_flight: usize,
    #[arg(long, default_value = "mixed")]
    kind: String,
    #[arg(long, default_value_t = 30)]
    secs: u64,
    /// Requests a second from all peers together; 0 sends as fast as
    /// answers come back.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Bytes of each store.
    #[arg(long, default_value_t = 256 * 1024)]
    store_bytes: usize,
    /// Kind `connect`: the local address every connection comes from.
    #[arg(long, default_value = "127.0.0.1")]
    source_ip: std::net::IpAddr,
}

#[derive(Default)]
struct Counts {
    sent: AtomicU64,
    answered: AtomicU64,
    refused: AtomicU64,
    failed: AtomicU64,
}

const KINDS: [&str; 5] = ["offer", "store", "fetch", "audit", "propose"];

/// One request of `kind`; Ok if answered, Err(refused?) otherwise.
async fn request(
    net: &network::Client,
    peer: PeerId,
    kind: &str,
    n: u64,
    data: &bytes::Bytes,
) -> Result<(), PeerError> {
    let contract = ContractId::from_bytes(rand_bytes(n));
    match kind {
        "offer" => net.offer(peer).await.map(drop),
        "store" => net
            .store(peer, contract, ShardId::of(data), data.clone())
            .await
            .map(drop),
        "fetch" => net
            .fetch(peer, ShardId::from_bytes(rand_bytes(n)))
            .await
            .map(drop),
        "audit" => {
            let ch = (0..16)
                .map(|i| Challenge {
                    shard_id: ShardId::from_bytes(rand_bytes(n + i)),
                    leaf: 0,
                })
                .collect();
            net.audit(peer, contract, ch).await.map(drop)
        }
        "propose" => net
            .propose(
                peer,
                Proposal {
                    contract_id: contract,
                    add_bytes: 1 << 20,
                    price_sat_per_gib_month: 1_000_000,
                    period_blocks: 144,
                    term_end_height: 1_000_000,
                },
            )
            .await
            .map(drop),
        other => unreachable!("kind {other} checked at start"),
    }
}

fn rand_bytes(n: u64) -> [u8; 32] {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).unwrap_or(());
    b[..8].copy_from_slice(&n.to_le_bytes());
    b
}

async fn flood_from_one_peer(args: Arc<Args>, peer: PeerId, base: Multiaddr, counts: Arc<Counts>) {
    let cfg = NetworkConfig {
        listen: vec![],
        external: vec![],
        bootstrap: vec![],
        rendezvous_server: false,
        provide: false,
        dht_server: false,
        max_outbound_connections: p2pstored::config::DEFAULT_MAX_OUTBOUND_CONNECTIONS,
        metrics: Default::default(),
        timeouts: Timeouts {
            control: Duration::from_secs(20),
            shard: Duration::from_secs(30),
        },
    };
    let Ok((net, _inbound)) = network::spawn(Keypair::generate_ed25519(), cfg).await else {
        counts.failed.fetch_add(1, Ordering::Relaxed);
        return;
    };
    net.add_addresses(peer, vec![base]).await;
    let data = bytes::Bytes::from(vec![7u8; args.store_bytes]);
    let deadline = Instant::now() + Duration::from_secs(args.secs);
    let mut n = 0u64;
    let mut in_flight = FuturesUnordered::new();
    let mut pace = (args.rate > 0).then(|| {
        let every = Duration::from_secs_f64(args.peers as f64 / args.rate as f64);
        let mut t = tokio::time::interval(every);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        t
    });
    while Instant::now() < deadline {
        while in_flight.len() < args.in_flight && Instant::now() < deadline {
            if let Some(t) = pace.as_mut() {
                // Send on the beat, reaping answers while waiting.
                tokio::select! {
                    _ = t.tick() => {}
                    Some(()) = in_flight.next() => continue,
                }
            }
            n += 1;
            let kind = match args.kind.as_str() {
                "mixed" => KINDS[(n as usize) % KINDS.len()],
                k => k,
            };
            let (net, data, counts) = (net.clone(), data.clone(), counts.clone());
            counts.sent.fetch_add(1, Ordering::Relaxed);
            in_flight.push(async move {
                match request(&net, peer, kind, n, &data).await {
                    Ok(()) => counts.answered.fetch_add(1, Ordering::Relaxed),
                    Err(PeerError::Refused(_)) => counts.refused.fetch_add(1, Ordering::Relaxed),
                    Err(_) => counts.failed.fetch_add(1, Ordering::Relaxed),
                };
            });
        }
        let _ = tokio::time::timeout_at(deadline.into(), in_flight.next()).await;
    }
}

/// TCP dialled from a chosen local address: libp2p's own TCP transport
/// binds dials to the unspecified address, so on loopback every peer would
/// come from 127.0.0.1, the honest peers' address too.
struct BoundTcp {
    source: std::net::IpAddr,
}

impl libp2p::core::Transport for BoundTcp {
    type Output = libp2p::tcp::tokio::TcpStream;
    type Error = std::io::Error;
    type ListenerUpgrade = futures::future::Pending<Result<Self::Output, Self::Error>>;
    type Dial = futures::future::BoxFuture<'static, Result<Self::Output, Self::Error>>;

    fn listen_on(
        &mut self,
        _id: libp2p::core::transport::ListenerId,
        addr: Multiaddr,
    ) -> Result<(), libp2p::core::transport::TransportError<Self::Error>> {
        Err(libp2p::core::transport::TransportError::MultiaddrNotSupported(addr))
    }

    fn remove_listener(&mut self, _id: libp2p::core::transport::ListenerId) -> bool {
        false
    }

    fn dial(
        &mut self,
        addr: Multiaddr,
        _opts: libp2p::core::transport::DialOpts,
    ) -> Result<Self::Dial, libp2p::core::transport::TransportError<Self::Error>> {
        use futures::FutureExt as _;
        let mut parts = addr.iter();
        let (Some(Protocol::Ip4(ip)), Some(Protocol::Tcp(port))) = (parts.next(), parts.next())
        else {
            return Err(libp2p::core::transport::TransportError::MultiaddrNotSupported(addr));
        };
        let source = self.source;
        Ok(async move {
            let socket = tokio::net::TcpSocket::new_v4()?;
            socket.bind((source, 0).into())?;
            let stream = socket.connect((ip, port).into()).await?;
            stream.set_nodelay(true)?;
            Ok(libp2p::tcp::tokio::TcpStream(stream))
        }
        .boxed())
    }

    fn poll(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<libp2p::core::transport::TransportEvent<Self::ListenerUpgrade, Self::Error>>
    {
        std::task::Poll::Pending
    }
}

/// Kind `connect`: one fresh identity holding one connection from
/// `--source-ip` until the end; the `index`th dials at `index / rate`
/// seconds, so that `--rate` paces the dials.
async fn hold_one_connection(
    args: Arc<Args>,
    index: usize,
    peer: PeerId,
    base: Multiaddr,
    counts: Arc<Counts>,
) {
    if args.rate > 0 {
        tokio::time::sleep(Duration::from_secs_f64(index as f64 / args.rate as f64)).await;
    }
    use libp2p::core::Transport as _;
    use libp2p::swarm::SwarmEvent;
    let source = args.source_ip;
    let built = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_other_transport(
            |key| -> Result<_, Box<dyn std::error::Error + Send + Sync>> {
                Ok(BoundTcp { source }
                    .upgrade(libp2p::core::upgrade::Version::V1)
                    .authenticate(libp2p::noise::Config::new(key)?)
                    .multiplex(libp2p::yamux::Config::default()))
            },
        )
        .map(|b| {
            b.with_behaviour(|_| libp2p::swarm::dummy::Behaviour)
                .map(|b| {
                    b.with_swarm_config(|c| {
                        c.with_idle_connection_timeout(Duration::from_secs(args.secs + 60))
                    })
                    .build()
                })
        });
    let Ok(Ok(mut swarm)) = built else {
        counts.failed.fetch_add(1, Ordering::Relaxed);
        return;
    };
    counts.sent.fetch_add(1, Ordering::Relaxed);
    if swarm.dial(base.with(Protocol::P2p(peer))).is_err() {
        counts.failed.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.secs);
    let (mut open, mut closed) = (false, false);
    while let Ok(Some(ev)) = tokio::time::timeout_at(deadline, swarm.next()).await {
        match ev {
            SwarmEvent::ConnectionEstablished { .. } => open = true,
            SwarmEvent::ConnectionClosed { .. } | SwarmEvent::OutgoingConnectionError { .. } => {
                closed = open;
                open = false;
            }
            _ => {}
        }
    }
    let counter = match (open, closed) {
        (true, _) => &counts.answered,
        (false, true) => &counts.refused,
        (false, false) => &counts.failed,
    };
    counter.fetch_add(1, Ordering::Relaxed);
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Arc::new(Args::parse());
    let connect = args.kind == "connect";
    if !connect && args.kind != "mixed" && !KINDS.contains(&args.kind.as_str()) {
        bail!("unknown kind {}; one of {KINDS:?} or mixed", args.kind);
    }
    let mut base = args.target.clone();
    let Some(Protocol::P2p(peer)) = base.pop() else {
        bail!("--target must end in /p2p/<peer id>");
    };
    let counts = Arc::new(Counts::default());
    let tasks: Vec<_> = (0..args.peers)
        .map(|i| {
            let (args, base, counts) = (args.clone(), base.clone(), counts.clone());
            if connect {
                tokio::spawn(hold_one_connection(args, i, peer, base, counts))
            } else {
                tokio::spawn(flood_from_one_peer(args, peer, base, counts))
            }
        })
        .collect();
    for t in tasks {
        t.await.context("a flooding peer panicked")?;
    }
    let c = |a: &AtomicU64| a.load(Ordering::Relaxed);
    println!(
        "{}",
        serde_json::json!({
            "sent": c(&counts.sent),
            "answered": c(&counts.answered),
            "refused": c(&counts.refused),
            "failed": c(&counts.failed),
        })
    );
    Ok(())
}
