//! Measures what audits cost (scripts/bench.sh runs it, release build):
//! - building a shard's (BLAKE3) Merkle tree against one plain BLAKE3
//!   pass and one plain SHA-256 pass (the tree's hash before protocol 4);
//! - the provider's cost per challenge: a real `ShardStore` on a temp dir
//!   answers random challenges with positioned reads (warm page cache:
//!   the shards were just written), in µs and bytes read;
//! - the client's cost to verify one answer.
//!
//! Prints `key value` lines.

use std::time::Instant;

use libp2p::PeerId;
use p2pstored::crypto::{content_hash, sha256};
use p2pstored::ids::{ContractId, ShardId};
use p2pstored::merkle;
use p2pstored::protocol::{AuditAnswer, Challenge, MAX_AUDIT_CHALLENGES};
use p2pstored::provider::store::ShardStore;
use rand::Rng;

/// A medium (2-of-4) shard of a full 4 MiB segment.
const SHARD_BYTES: usize = (4 << 20) / 2 + 8;
const SHARDS: usize = 64;
const CHALLENGES: usize = 20_000;

fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let db = sled::open(dir.path().join("db"))?;
    let store = ShardStore::open(&db, &dir.path().join("shards"), 1 << 30)?;
    let owner = PeerId::random();
    let contract = ContractId::from_bytes([1; 32]);
    let mut rng = rand::rng();

    let mut shards = Vec::new();
    let (mut tree_secs, mut blake_secs, mut sha_secs) = (0.0, 0.0, 0.0);
    for _ in 0..SHARDS {
        let mut data = vec![0u8; SHARD_BYTES];
        rng.fill(&mut data[..]);
        let t = Instant::now();
        let id = ShardId::of(&data);
        tree_secs += t.elapsed().as_secs_f64();
        let t = Instant::now();
        std::hint::black_box(content_hash(&data));
        blake_secs += t.elapsed().as_secs_f64();
        let t = Instant::now();
        std::hint::black_box(sha256(&data));
        sha_secs += t.elapsed().as_secs_f64();
        store
            .store(&owner, contract, id, &data)
            .map_err(|e| anyhow::anyhow!("store: {}", e.message))?;
        shards.push(id);
    }
    let mib = (SHARDS * SHARD_BYTES) as f64 / (1 << 20) as f64;
    println!("merkle_root_mib_s {:.0}", mib / tree_secs);
    println!("blake3_mib_s {:.0}", mib / blake_secs);
    println!("sha256_mib_s {:.0}", mib / sha_secs);

    let leaves = merkle::leaf_count(SHARD_BYTES as u64) as u32;
    let mut batches = Vec::new();
    for _ in 0..CHALLENGES / MAX_AUDIT_CHALLENGES {
        let mut batch: Vec<Challenge> = Vec::new();
        while batch.len() < MAX_AUDIT_CHALLENGES {
            let c = Challenge {
                shard_id: shards[rng.random_range(0..SHARDS)],
                leaf: rng.random_range(0..leaves),
            };
            if !batch.contains(&c) {
                batch.push(c);
            }
        }
        batches.push(batch);
    }
    let t = Instant::now();
    let mut answers = Vec::new();
    for b in &batches {
        let a = store
            .prove(&owner, &contract, b)
            .map_err(|e| anyhow::anyhow!("prove: {}", e.message))?;
        answers.push(a);
    }
    let n = (batches.len() * MAX_AUDIT_CHALLENGES) as f64;
    println!(
        "provider_us_per_challenge {:.1}",
        t.elapsed().as_secs_f64() * 1e6 / n
    );
    let read: usize = answers
        .iter()
        .flatten()
        .map(|a| match a {
            AuditAnswer::Proof { leaf, path } => leaf.len() + path.len(),
            AuditAnswer::Missing => 0,
        })
        .sum();
    println!("provider_bytes_read_per_challenge {:.0}", read as f64 / n);

    let t = Instant::now();
    let mut ok = 0usize;
    for (b, a) in batches.iter().zip(&answers) {
        for (c, a) in b.iter().zip(a) {
            if let AuditAnswer::Proof { leaf, path } = a {
                ok += merkle::verify(
                    c.shard_id.as_bytes(),
                    SHARD_BYTES as u64,
                    c.leaf as u64,
                    leaf,
                    path,
                ) as usize;
            }
        }
    }
    println!(
        "client_us_per_verify {:.1}",
        t.elapsed().as_secs_f64() * 1e6 / n
    );
    anyhow::ensure!(ok as f64 == n, "{ok} of {n} proofs verified");
    Ok(())
}
