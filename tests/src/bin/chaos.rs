//! `p2pstore-chaos`: the chaos harness (src/chaos.rs) as a program, for
//! `scripts/chaos.sh`. It starts its own regtest network, runs the kill
//! points, checks the invariants and prints the counts; it exits non-zero
//! when an invariant breaks.

use anyhow::Result;
use clap::Parser;
use p2pstore_tests::chaos;

#[derive(Parser)]
struct Args {
    /// Kill points to run.
    #[arg(long, default_value_t = 200)]
    rounds: usize,
    /// Replays the choices of an earlier run; random when absent.
    #[arg(long)]
    seed: Option<u64>,
    /// Keep the network's directory (logs, data) after a clean run too.
    #[arg(long)]
    keep: bool,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let seed = args.seed.unwrap_or_else(rand::random);
    eprintln!("chaos: {} kill points, seed {seed}", args.rounds);
    let report = chaos::run(chaos::Options {
        rounds: args.rounds,
        seed,
        keep: args.keep,
    })
    .await;
    println!("{report}");
    Ok(())
}
