//! p2pstore-sim: provider discovery at a scale one machine cannot run as
//! daemons. Every node is an in-process libp2p swarm over the memory
//! transport (Yamux, as on TCP, over libp2p's plaintext security),
//! running the daemon's own Kademlia behaviour (`p2pstored::network::dht`)
//! and identify, wired as the daemon wires them: a seed, N-2 providers
//! announcing under their bucket key, and a client in Kademlia client
//! mode.
//!
//! It prints the figures `scripts/scale.sh` prints for real daemons: the
//! time until the client finds every provider, how many it finds, bucket
//! lookup latency, the client's connections, memory per node; and how many
//! random bucket lookups fill a client directory of 32 providers.
//! Latencies are wall-clock on a machine running every node at once, so
//! they are upper bounds on what one node would see on its own.
//!
//!   p2pstore-sim --nodes N [--buckets B] [--per-key P] [--timeout-secs S]
//!
//! `--buckets` and `--per-key` change the bucket count and each node's
//! providers-per-key cap from p2pstore's (256 and 128), to compare designs;
//! `--idle-secs` closes idle connections sooner, to fit more nodes in memory.
//!
//! Why plaintext, not Noise: what is simulated is routing and records
//! (who is found, in how many lookups, how fast the DHT converges), and
//! the handshake's key exchange and signatures change none of it. With
//! Noise, 1,000 nodes in one process spent both cores on handshakes and
//! the client's first full scan had not ended after 15 minutes. Peer ids
//! are still exchanged and checked (plaintext's handshake carries the
//! public key).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use futures::StreamExt;
use libp2p::core::transport::MemoryTransport;
use libp2p::core::upgrade::Version;
use libp2p::kad::store::{MemoryStore, MemoryStoreConfig};
use libp2p::kad::{self, GetProvidersOk, QueryResult, RecordKey};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, Swarm, Transport, identify, plaintext, yamux};
use p2pstore_tests::measure::{Shape, percentile, rss_mib};
use p2pstored::protocol::{KAD_PROTOCOL, bucket_index, bucket_key};
use rand::seq::SliceRandom;
use tokio::sync::{mpsc, oneshot};

/// Provider discovery among in-process libp2p swarms running the
/// daemon's Kademlia behaviour.
#[derive(Parser)]
struct Args {
    #[command(flatten)]
    shape: Shape,
    /// Give up when the client has not found every provider by then
    #[arg(long, default_value_t = 900)]
    timeout_secs: u64,
    /// Nodes started at once
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Close connections idle this long (default: the daemon's). Lower
    /// only to fit thousands of nodes in one machine's memory: Kademlia
    /// keeps peers' addresses, not connections, so lookups and records
    /// are unchanged; only more dials happen.
    #[arg(long, default_value_t = p2pstored::network::IDLE_CONNECTION_TIMEOUT.as_secs())]
    idle_secs: u64,
}

/// The directory size a client fills before it stops looking up buckets.
const DIRECTORY_FILL: usize = p2pstored::client::directory::MIN_KNOWN;
const LOOKUP_PARALLEL: usize = p2pstored::client::directory::LOOKUP_PARALLEL;

#[derive(NetworkBehaviour)]
struct Node {
    kad: kad::Behaviour<MemoryStore>,
    identify: identify::Behaviour,
}

enum Role {
    Seed,
    Provider(RecordKey),
    Client,
}

enum Cmd {
    /// Look up these buckets, LOOKUP_PARALLEL at a time; stop early once
    /// `enough` providers are found (0: never). Replies with the providers
    /// found, each lookup's time, and the lookups run.
    Scan {
        keys: Vec<RecordKey>,
        enough: usize,
        reply: oneshot::Sender<ScanResult>,
    },
    Connections(oneshot::Sender<usize>),
}

/// What a scan found: the providers, each lookup's time and requests
/// sent (sorted), and the lookups run.
#[derive(Default)]
struct ScanResult {
    found: BTreeSet<PeerId>,
    times: Vec<Duration>,
    requests: Vec<u32>,
    started: usize,
}

struct Scan {
    keys: Vec<RecordKey>,
    enough: usize,
    running: HashMap<kad::QueryId, Instant>,
    result: ScanResult,
    reply: oneshot::Sender<ScanResult>,
}

fn build(per_key: usize, server: bool, idle: Duration) -> Result<Swarm<Node>> {
    Ok(libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_other_transport(|key| {
            Ok(MemoryTransport::default()
                .upgrade(Version::V1)
                .authenticate(plaintext::Config::new(key))
                .multiplex(yamux::Config::default())
                .boxed())
        })?
        .with_behaviour(|key| {
            let id = key.public().to_peer_id();
            let mut kad = p2pstored::network::dht(id, server);
            if per_key != p2pstored::network::MAX_PROVIDERS_PER_KEY {
                // Only the store differs from the daemon's: rebuild it.
                let cfg = MemoryStoreConfig {
                    max_providers_per_key: per_key,
                    ..Default::default()
                };
                *kad.store_mut() = MemoryStore::with_config(id, cfg);
            }
            Node {
                kad,
                identify: identify::Behaviour::new(identify::Config::new(
                    "/p2pstore/id/1.0.0".into(),
                    key.public(),
                )),
            }
        })?
        .with_swarm_config(|c| c.with_idle_connection_timeout(idle))
        .build())
}

struct Counters {
    announced: AtomicUsize,
    /// Per provider: bootstraps finished, announcements stored at some
    /// peer, announcements stored nowhere.
    history: std::sync::Mutex<HashMap<PeerId, (u32, u32, u32)>>,
}

async fn run(
    mut swarm: Swarm<Node>,
    role: Role,
    mut cmds: mpsc::Receiver<Cmd>,
    counters: Arc<Counters>,
) {
    let mut announced = false;
    let mut scan: Option<Scan> = None;
    let mut tick = tokio::time::interval(p2pstored::network::DISCOVER_EVERY);
    let mut ticks = 0;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                // The daemon's re-announcement schedule (the first tick
                // fires at once, 0 intervals in).
                if let Role::Provider(key) = &role
                    && p2pstored::network::announce_again(ticks)
                    && let Err(e) = swarm.behaviour_mut().kad.start_providing(key.clone()) {
                        eprintln!("start_providing: {e}");
                }
                ticks += 1;
            }
            event = swarm.select_next_some() => match event {
                // As the daemon does with no external address configured:
                // provider records carry these, and a node answering a
                // lookup drops records without addresses of peers it does
                // not know.
                SwarmEvent::NewListenAddr { address, .. } => swarm.add_external_address(address),
                // As the daemon does: a peer's listen addresses make it
                // routable, if it serves the DHT.
                SwarmEvent::Behaviour(NodeEvent::Identify(identify::Event::Received { peer_id, info, .. }))
                    if info.protocols.contains(&KAD_PROTOCOL) =>
                {
                    for a in info.listen_addrs {
                        swarm.behaviour_mut().kad.add_address(&peer_id, a);
                    }
                }
                // As the daemon does: `dht` filters inbound records, so
                // provider records are stored here.
                SwarmEvent::Behaviour(NodeEvent::Kad(kad::Event::InboundRequest { request })) => {
                    p2pstored::network::store_inbound(&mut swarm.behaviour_mut().kad, request);
                }
                SwarmEvent::Behaviour(NodeEvent::Kad(kad::Event::OutboundQueryProgressed { id, result, step, stats })) => match result {
                    QueryResult::Bootstrap(_) if step.last => {
                        let me = *swarm.local_peer_id();
                        counters.history.lock().unwrap().entry(me).or_default().0 += 1;
                        if let Role::Provider(key) = &role
                            && let Err(e) = swarm.behaviour_mut().kad.start_providing(key.clone()) {
                                eprintln!("start_providing: {e}");
                        }
                    }
                    QueryResult::StartProviding(r) => {
                        let me = *swarm.local_peer_id();
                        let mut h = counters.history.lock().unwrap();
                        let e = h.entry(me).or_default();
                        if r.is_ok() { e.1 += 1 } else { e.2 += 1 }
                        if !announced {
                            announced = true;
                            counters.announced.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    QueryResult::GetProviders(r) => {
                        if let Some(s) = scan.as_mut() {
                            if let Ok(GetProvidersOk::FoundProviders { providers, .. }) = r {
                                s.result.found.extend(providers);
                            }
                            if step.last && let Some(t) = s.running.remove(&id) {
                                s.result.times.push(t.elapsed());
                                s.result.requests.push(stats.num_requests());
                            }
                        }
                    }
                    _ => {}
                },
                _ => {}
            },
            cmd = cmds.recv() => match cmd {
                Some(Cmd::Scan { keys, enough, reply }) => {
                    scan = Some(Scan { keys, enough, running: HashMap::new(), result: ScanResult::default(), reply });
                }
                Some(Cmd::Connections(reply)) => {
                    let _ = reply.send(swarm.connected_peers().count());
                }
                None => return,
            },
        }
        // Keep LOOKUP_PARALLEL lookups running until the keys run out or
        // enough providers are found.
        if let Some(s) = scan.as_mut() {
            let satisfied = s.enough > 0 && s.result.found.len() >= s.enough;
            while !satisfied && s.running.len() < LOOKUP_PARALLEL && !s.keys.is_empty() {
                let key = s.keys.remove(0);
                let id = swarm.behaviour_mut().kad.get_providers(key);
                s.running.insert(id, Instant::now());
                s.result.started += 1;
            }
            if s.running.is_empty()
                && (satisfied || s.keys.is_empty())
                && let Some(s) = scan.take()
            {
                let mut r = s.result;
                r.times.sort_unstable();
                r.requests.sort_unstable();
                let _ = s.reply.send(r);
            }
        }
    }
}

async fn scan(
    client: &mpsc::Sender<Cmd>,
    keys: Vec<RecordKey>,
    enough: usize,
) -> Result<ScanResult> {
    let (reply, rx) = oneshot::channel();
    client
        .send(Cmd::Scan {
            keys,
            enough,
            reply,
        })
        .await
        .context("client task gone")?;
    Ok(rx.await?)
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    args.shape.check()?;
    let providers = args.shape.providers();
    let counters = Arc::new(Counters {
        announced: AtomicUsize::new(0),
        history: Default::default(),
    });
    let rss_before = rss_mib();

    let idle = Duration::from_secs(args.idle_secs);
    let mut seed = build(args.shape.per_key, true, idle)?;
    let seed_id = *seed.local_peer_id();
    let seed_addr: Multiaddr = "/memory/1".parse()?;
    seed.listen_on(seed_addr.clone())?;
    let (_seed_tx, seed_rx) = mpsc::channel(1);
    tokio::spawn(run(seed, Role::Seed, seed_rx, counters.clone()));

    let t0 = Instant::now();
    let mut expected = BTreeSet::new();
    let mut keep = Vec::new();
    let start = |swarm: &mut Swarm<Node>, port: usize| -> Result<()> {
        swarm.listen_on(format!("/memory/{port}").parse()?)?;
        swarm
            .behaviour_mut()
            .kad
            .add_address(&seed_id, seed_addr.clone());
        swarm.behaviour_mut().kad.bootstrap()?;
        Ok(())
    };
    for i in 0..providers {
        let mut swarm = build(args.shape.per_key, true, idle)?;
        let id = *swarm.local_peer_id();
        expected.insert(id);
        start(&mut swarm, i + 2)?;
        let (tx, rx) = mpsc::channel(1);
        keep.push(tx);
        let key = bucket_key(bucket_index(&id, args.shape.buckets));
        tokio::spawn(run(swarm, Role::Provider(key), rx, counters.clone()));
        if (i + 1) % args.batch == 0 {
            // Let a batch connect before the next arrives, as daemons
            // started over minutes would.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let mut client = build(args.shape.per_key, false, idle)?;
    start(&mut client, providers + 2)?;
    let (client_tx, client_rx) = mpsc::channel(4);
    tokio::spawn(run(client, Role::Client, client_rx, counters.clone()));
    eprintln!(
        "sim: {} nodes started in {:.1} s",
        args.shape.nodes,
        t0.elapsed().as_secs_f64()
    );

    let all: Vec<RecordKey> = (0..args.shape.buckets).map(bucket_key).collect();
    let deadline = t0 + Duration::from_secs(args.timeout_secs);
    let mut max_conns = 0;
    let (full, joined) = loop {
        let full = scan(&client_tx, all.clone(), 0).await?;
        let (reply, rx) = oneshot::channel();
        client_tx.send(Cmd::Connections(reply)).await?;
        max_conns = max_conns.max(rx.await?);
        let missing = expected.difference(&full.found).count();
        eprintln!(
            "sim: {:>6.1} s: {} announced, client finds {} of {providers}",
            t0.elapsed().as_secs_f64(),
            counters.announced.load(Ordering::Relaxed),
            full.found.len()
        );
        if missing == 0 || Instant::now() > deadline {
            break (full, t0.elapsed());
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    };

    // How many random bucket lookups fill a fresh directory.
    let mut fills = Vec::new();
    for _ in 0..5 {
        let mut keys = all.clone();
        keys.shuffle(&mut rand::rng());
        fills.push(scan(&client_tx, keys, DIRECTORY_FILL).await?.started);
    }
    fills.sort_unstable();
    let (reply, rx) = oneshot::channel();
    client_tx.send(Cmd::Connections(reply)).await?;
    max_conns = max_conns.max(rx.await?);

    let found_n = expected.intersection(&full.found).count();
    for missing in expected.difference(&full.found) {
        let b = bucket_index(missing, args.shape.buckets);
        let again = scan(&client_tx, vec![bucket_key(b)], 0).await?.found;
        eprintln!(
            "sim: never found {missing} (bucket {b}; bootstraps, stored, unstored: {:?}); that bucket's lookup now finds {} provider(s), {}",
            counters.history.lock().unwrap().get(missing),
            again.len(),
            if again.contains(missing) {
                "it among them"
            } else {
                "not it"
            }
        );
    }
    println!(
        "sim: {} nodes ({providers} providers), {} buckets, {} providers/key",
        args.shape.nodes, args.shape.buckets, args.shape.per_key
    );
    println!(
        "  every provider found after   {}",
        if found_n == providers {
            format!("{:.0} s", joined.as_secs_f64())
        } else {
            format!("never (gave up at {:.0} s)", joined.as_secs_f64())
        }
    );
    println!("  providers discoverable       {found_n} of {providers}");
    println!(
        "  bucket lookup latency        median {} ms, p95 {} ms",
        percentile(&full.times, 0.5).as_millis(),
        percentile(&full.times, 0.95).as_millis()
    );
    println!(
        "  requests per lookup          median {}, p95 {}",
        percentile(&full.requests, 0.5),
        percentile(&full.requests, 0.95)
    );
    println!(
        "  lookups to know {DIRECTORY_FILL} providers  median {} (of 5 tries: {:?})",
        fills[fills.len() / 2],
        fills
    );
    println!("  client connections           at most {max_conns}");
    println!(
        "  memory                       {:.2} MiB per node ({} MiB in all)",
        (rss_mib() - rss_before) as f64 / args.shape.nodes as f64,
        rss_mib()
    );
    drop(keep);
    if found_n < providers {
        std::process::exit(1);
    }
    Ok(())
}
