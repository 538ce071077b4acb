//! Where transfer time goes: process-wide counters of busy time per stage
//! of put, get and shard storage. Each is two relaxed atomic adds per use,
//! cheap enough to stay on; the `perf` RPC reads them and
//! `scripts/bench.sh` prints their change over a transfer.
//!
//! Stages overlap (segments are pipelined across threads), so the figures
//! are busy time summed over threads, not slices of the wall clock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A stage of moving a file's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Client: reading the source file.
    Read,
    /// Client: SHA-256 of plaintext, and shard ids (Merkle roots).
    Hash,
    /// Client: encrypting (put) or decrypting (get) segments.
    Seal,
    /// Client: erasure coding (put) or decoding (get).
    Code,
    /// Client: waiting on providers for shard uploads (put) or downloads (get).
    Network,
    /// Client: writing the output file (get).
    Output,
    /// Provider: checking a received shard against its id (Merkle root).
    Verify,
    /// Provider: writing shard and tree files.
    Write,
    /// Provider: fsync of shard files, their directory and the index.
    Fsync,
}

impl Stage {
    pub const ALL: [Stage; 9] = [
        Stage::Read,
        Stage::Hash,
        Stage::Seal,
        Stage::Code,
        Stage::Network,
        Stage::Output,
        Stage::Verify,
        Stage::Write,
        Stage::Fsync,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Read => "read",
            Stage::Hash => "hash",
            Stage::Seal => "seal",
            Stage::Code => "code",
            Stage::Network => "network",
            Stage::Output => "output",
            Stage::Verify => "verify",
            Stage::Write => "write",
            Stage::Fsync => "fsync",
        }
    }
}

struct Counter {
    nanos: AtomicU64,
    count: AtomicU64,
}

#[allow(clippy::declare_interior_mutable_const)]
const ZERO: Counter = Counter {
    nanos: AtomicU64::new(0),
    count: AtomicU64::new(0),
};

static COUNTERS: [Counter; Stage::ALL.len()] = [ZERO; Stage::ALL.len()];

/// Adds `elapsed` to `stage`.
pub fn add(stage: Stage, elapsed: Duration) {
    let c = &COUNTERS[stage as usize];
    c.nanos.fetch_add(
        u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX),
        Ordering::Relaxed,
    );
    c.count.fetch_add(1, Ordering::Relaxed);
}

/// Runs `f`, counting its time to `stage`.
pub fn time<T>(stage: Stage, f: impl FnOnce() -> T) -> T {
    let started = Instant::now();
    let out = f();
    add(stage, started.elapsed());
    out
}

/// Every stage's total so far.
pub fn snapshot() -> Vec<p2pstore_rpc::StageTime> {
    Stage::ALL
        .iter()
        .map(|s| {
            let c = &COUNTERS[*s as usize];
            p2pstore_rpc::StageTime {
                stage: s.as_str().to_string(),
                seconds: c.nanos.load(Ordering::Relaxed) as f64 / 1e9,
                count: c.count.load(Ordering::Relaxed),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_is_counted_to_its_stage() {
        let before = snapshot();
        let v = time(Stage::Code, || {
            std::thread::sleep(Duration::from_millis(5));
            7
        });
        assert_eq!(v, 7);
        let after = snapshot();
        let code = Stage::Code as usize;
        assert_eq!(after[code].count, before[code].count + 1);
        assert!(after[code].seconds - before[code].seconds >= 0.005);
        assert_eq!(after[code].stage, "code");
    }
}
