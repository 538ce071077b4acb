//! `p2pstore-flood`: many hostile peers, in a process of their own, each
//! keeping many valid requests in flight at one provider, for the
//! hostile-peer tests (tests/tests/hostile.rs). Each peer has a fresh
//! identity. At the end it prints one JSON line of counts:
//! `{"sent":…,"answered":…,"refused":…,"failed":…}`.
//!
//! Kinds: offer, store, fetch, audit, propose, or mixed (all of them in
//! turn). Stores and audits name contracts the peers never paid, so what
//! they cost the provider is the reading and the refusing.

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

#[tokio::main]
async fn main() -> Result<()> {
    let args = Arc::new(Args::parse());
    if args.kind != "mixed" && !KINDS.contains(&args.kind.as_str()) {
        bail!("unknown kind {}; one of {KINDS:?} or mixed", args.kind);
    }
    let mut base = args.target.clone();
    let Some(Protocol::P2p(peer)) = base.pop() else {
        bail!("--target must end in /p2p/<peer id>");
    };
    let counts = Arc::new(Counts::default());
    let tasks: Vec<_> = (0..args.peers)
        .map(|_| {
            tokio::spawn(flood_from_one_peer(
                args.clone(),
                peer,
                base.clone(),
                counts.clone(),
            ))
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
