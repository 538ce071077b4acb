//! What the discovery simulations (`p2pstore-sim`, `p2pstore-model`)
//! share: the network's shape on their command line, and small measuring
//! helpers.

/// The simulated network: a seed, `nodes - 2` providers and a client, and
/// the design under test (p2pstore's by default).
#[derive(clap::Args)]
pub struct Shape {
    /// Nodes in all: a seed, nodes-2 providers and a client
    #[arg(long, default_value_t = 1000)]
    pub nodes: usize,
    /// Provider buckets (DHT keys)
    #[arg(long, default_value_t = p2pstored::protocol::PROVIDER_BUCKETS)]
    pub buckets: u16,
    /// Providers each node keeps per key
    #[arg(long, default_value_t = p2pstored::network::MAX_PROVIDERS_PER_KEY)]
    pub per_key: usize,
}

impl Shape {
    pub fn check(&self) -> anyhow::Result<()> {
        if self.nodes < 4 || self.buckets == 0 || self.per_key == 0 {
            anyhow::bail!("--nodes must be at least 4, --buckets and --per-key at least 1");
        }
        Ok(())
    }

    pub fn providers(&self) -> usize {
        self.nodes - 2
    }
}

/// The value at quantile `q` (0..=1) of `sorted`, or the default when
/// it is empty.
pub fn percentile<T: Copy + Default>(sorted: &[T], q: f64) -> T {
    sorted
        .get(((sorted.len().max(1) - 1) as f64 * q).round() as usize)
        .copied()
        .unwrap_or_default()
}

/// This process's resident memory in MiB (0 where /proc is missing).
pub fn rss_mib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .unwrap_or(0)
        / 1024
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn percentile_picks_the_nearest_rank() {
        let v = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
        assert_eq!(percentile(&v, 0.5), 6);
        assert_eq!(percentile(&v, 0.95), 10);
        assert_eq!(percentile(&v, 0.0), 1);
        assert_eq!(percentile::<u32>(&[], 0.5), 0);
    }
}
