//! Writes each fuzz target's seed inputs (`p2pstored::fuzz::seeds`) into
//! `<dir>/<target>/seed-<n>` (default dir: daemon/fuzz/corpus), for
//! scripts/fuzz.sh to start from.

use std::path::PathBuf;

use anyhow::Context;

fn main() -> anyhow::Result<()> {
    let root = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("daemon/fuzz/corpus"));
    for target in p2pstored::fuzz::TARGETS {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        for (i, seed) in p2pstored::fuzz::seeds(target).iter().enumerate() {
            let path = dir.join(format!("seed-{i}"));
            std::fs::write(&path, seed).with_context(|| format!("writing {}", path.display()))?;
        }
    }
    Ok(())
}
