//! `p2pstored`: parses flags and runs the daemon from the library.

use p2pstored::config::{Args, Config};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // Segments are sealed and coded on tokio's blocking threads, and glibc
    // gives each thread its own malloc arena, each keeping its freed
    // multi-MiB buffers resident. Two arenas bound that without contention
    // worth measuring (scripts/bench.sh).
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
    let args = Args::parse_with_defaults();
    let print_mnemonic = args.print_mnemonic;
    let cfg = match Config::load(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("p2pstored: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    // The phrase is the account: shown once, to a person. On a pipe or
    // under a service manager stdout is a file or the journal, which
    // would keep it in the clear.
    use std::io::IsTerminal;
    if cfg.init
        && !print_mnemonic
        && !std::io::stdout().is_terminal()
        && !p2pstored::keys::Keystore::new(&cfg.datadir).exists()
    {
        eprintln!(
            "p2pstored: --init shows the new recovery phrase on the terminal, and stdout is not \
             one (a file or the journal would keep it). Create the account with \
             `p2pstore-cli init` instead, or add --print-mnemonic to print it anyway."
        );
        return std::process::ExitCode::from(2);
    }
    // jsonrpsee traces whole requests, Authorization header and passwords
    // included: never let it log below info, whatever the filter says.
    // request-response warns once per stream it drops over a connection's
    // cap, which lets a peer write our log at will; those refusals are the
    // cap doing its job, so only its errors are shown.
    let directives = format!(
        "{},jsonrpsee_server=info,jsonrpsee_core=info,libp2p_request_response::handler=error",
        cfg.log
    );
    let filter =
        tracing_subscriber::EnvFilter::try_new(&directives).unwrap_or_else(|_| "info".into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    if cfg!(feature = "failpoints") {
        // A test build: P2PSTORE_FAILPOINT can make it abort on purpose.
        tracing::warn!("built with the failpoints feature: for tests only");
    }
    let show_mnemonic = |phrase: &str| {
        // The only time the phrase is shown; stdout, never the log.
        println!(
            "New account created. Write down this recovery phrase and keep it secret:\n{phrase}"
        );
    };
    match p2pstored::daemon::run(cfg, show_mnemonic).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("p2pstored: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
