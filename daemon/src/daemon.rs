//! The daemon process around the node: data dir, pid file, RPC cookie,
//! signals, and an orderly shutdown that flushes state before exit.

use std::path::{Path, PathBuf};

use tracing::{info, warn};

use crate::config::{Config, PID_FILE};
use crate::error::{Error, Result};
use crate::node::Node;
use crate::rpc;
use p2pstore_rpc::{COOKIE_FILE, RPC_ADDR_FILE};

/// Removes the files that say "a daemon runs here" when the process ends,
/// however `run` returns.
struct RunFiles {
    paths: Vec<PathBuf>,
}

impl Drop for RunFiles {
    fn drop(&mut self) {
        for p in &self.paths {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn pid_alive(pid: i32) -> bool {
    // Signal 0 checks existence without touching the process.
    pid > 0 && unsafe { libc::kill(pid, 0) } == 0
}

fn claim_pid_file(path: &Path) -> Result<()> {
    if let Ok(text) = std::fs::read_to_string(path)
        && let Ok(pid) = text.trim().parse::<i32>()
        && pid != std::process::id() as i32
        && pid_alive(pid)
    {
        return Err(Error::AlreadyRunning { pid: pid as u32 });
    }
    std::fs::write(path, format!("{}\n", std::process::id()))?;
    Ok(())
}

fn create_datadir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    Ok(())
}

/// Runs the daemon until a signal stops it. `show_new_mnemonic` gets the
/// recovery phrase of an account created by `--init`, before the RPC opens:
/// the binary prints it on stdout, never the log.
pub async fn run(cfg: Config, show_new_mnemonic: impl FnOnce(&str)) -> Result<()> {
    create_datadir(&cfg.datadir)?;
    let pid_path = cfg.datadir.join(PID_FILE);
    claim_pid_file(&pid_path)?;
    let cookie_path = cfg.datadir.join(COOKIE_FILE);
    let addr_path = cfg.datadir.join(RPC_ADDR_FILE);
    let _files = RunFiles {
        paths: vec![cookie_path.clone(), addr_path.clone(), pid_path],
    };

    let bind = cfg.rpc_bind;
    let (node, mnemonic) = Node::start(cfg).await?;
    if let Some(m) = mnemonic {
        show_new_mnemonic(m.as_str());
    }
    let token = rpc::auth::write_cookie(&cookie_path)?;
    let (handle, addr) = rpc::start(node.clone(), bind, &token).await?;
    // Written last: its presence tells scripts the RPC is ready.
    std::fs::write(&addr_path, format!("{addr}\n"))?;
    info!(%addr, datadir = %node.config().datadir.display(), "p2pstored ready");

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => info!("interrupted"),
        _ = term.recv() => info!("terminated"),
        _ = handle.clone().stopped() => warn!("RPC server stopped"),
    }
    let _ = handle.stop();
    node.shutdown().await?;
    info!("p2pstored stopped");
    Ok(())
}
