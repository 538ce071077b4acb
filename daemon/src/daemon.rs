//! The daemon process around the node: data dir and its lock, pid file, RPC cookie,
//! signals, and an orderly shutdown that flushes state before exit.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tracing::{info, warn};

use crate::config::{Config, PID_FILE};
use crate::error::{Error, Result};
use crate::node::Node;
use crate::{metrics, rpc};
use p2pstore_rpc::{COOKIE_FILE, LOCK_FILE, RPC_ADDR_FILE};

/// What says "a daemon runs here": the data dir's lock, held for the
/// process's whole life, and the files removed when `run` returns however
/// it returns (a kill -9 leaves them, and the next start removes them).
struct RunFiles {
    _lock: std::fs::File,
    paths: Vec<PathBuf>,
}

impl Drop for RunFiles {
    fn drop(&mut self) {
        for p in &self.paths {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// How long a start waits for the lock: a CLI checks it with a shared lock
/// for an instant (`p2pstore_rpc::conn::daemon_holds_lock`).
const LOCK_WAIT: Duration = Duration::from_secs(2);

/// Takes the data dir's lock, as bitcoind does with its `.lock`: a second
/// daemon is refused, and a dead one (even a zombie nobody reaped) holds
/// nothing. The pid file is information for people, never checked.
fn lock_datadir(dir: &Path) -> Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(dir.join(LOCK_FILE))?;
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                let pid = std::fs::read_to_string(dir.join(PID_FILE))
                    .ok()
                    .and_then(|t| t.trim().parse().ok());
                return Err(Error::AlreadyRunning { pid });
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(Error::Internal(format!(
                    "cannot lock {}: {e}",
                    dir.join(LOCK_FILE).display()
                )));
            }
        }
    }
}

/// Creates the data dir, and makes it private at every start, not only
/// when created: it holds the keystore, the cookie and the wallet.
fn create_datadir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let mode = std::fs::metadata(dir)?.permissions().mode() & 0o777;
    if mode != 0o700 {
        warn!(datadir = %dir.display(), "data dir was mode {mode:o}; setting 0700");
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Tells systemd (Type=notify) how the daemon is; nothing without one.
fn notify(state: &[sd_notify::NotifyState]) {
    if let Err(e) = sd_notify::notify(false, state) {
        warn!("cannot notify the service manager: {e}");
    }
}

/// Runs the daemon until a signal stops it. `show_new_mnemonic` gets the
/// recovery phrase of an account created by `--init`, before the RPC opens:
/// the binary prints it on stdout, never the log.
pub async fn run(cfg: Config, show_new_mnemonic: impl FnOnce(&str)) -> Result<()> {
    create_datadir(&cfg.datadir)?;
    let lock = lock_datadir(&cfg.datadir)?;
    let pid_path = cfg.datadir.join(PID_FILE);
    let cookie_path = cfg.datadir.join(COOKIE_FILE);
    let addr_path = cfg.datadir.join(RPC_ADDR_FILE);
    // Holding the lock, any of these is a dead daemon's: a CLI must not
    // find an old address (whoever squats its port would get the token).
    for stale in [&addr_path, &cookie_path] {
        match std::fs::remove_file(stale) {
            Ok(()) => {
                info!(file = %stale.display(), "removed a file left by a daemon that stopped")
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
    }
    std::fs::write(&pid_path, format!("{}\n", std::process::id()))?;
    let _files = RunFiles {
        _lock: lock,
        paths: vec![cookie_path.clone(), addr_path.clone(), pid_path],
    };

    let bind = cfg.rpc_bind;
    let (node, mnemonic) = Node::start(cfg).await?;
    if let Some(m) = mnemonic {
        show_new_mnemonic(m.as_str());
    }
    let token = rpc::auth::write_cookie(&cookie_path)?;
    let (handle, addr) = rpc::start(node.clone(), bind, &token).await?;
    // Off unless asked for: it answers anyone who can reach it.
    let metrics_task = match node.config().metrics_bind {
        Some(bind) => {
            let n = node.clone();
            let scrape = move || {
                let n = n.clone();
                async move { n.events().metrics().scrape(|| n.metrics_snapshot()).await }
            };
            let (task, addr) = metrics::serve(bind, scrape).await?;
            node.set_metrics_addr(addr);
            Some(task)
        }
        None => None,
    };
    // Written last: its presence tells scripts the RPC is ready.
    std::fs::write(&addr_path, format!("{addr}\n"))?;
    info!(%addr, datadir = %node.config().datadir.display(), "p2pstored ready");
    // The same moment for systemd (Type=notify): the RPC answers.
    notify(&[sd_notify::NotifyState::Ready]);

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => info!("interrupted"),
        _ = term.recv() => info!("terminated"),
        _ = handle.clone().stopped() => warn!("RPC server stopped"),
    }
    notify(&[sd_notify::NotifyState::Stopping]);
    // No new work: the RPC server takes no new connections (calls under
    // way run on) and peers' new requests are turned away.
    let _ = handle.stop();
    node.stop_accepting().await;
    let timeout = node.config().shutdown_timeout;
    let running = node.progress().running();
    if running > 0 {
        info!(
            running,
            timeout_secs = timeout.as_secs(),
            "waiting for running transfers"
        );
    }
    // Dropped with the process, a put cut short is one the next start
    // finishes or rolls back, as after a crash, and its caller's retry
    // with the same op id pays nothing twice.
    let drained = async {
        handle.stopped().await;
        // Puts whose callers went away run on, detached from any call.
        while node.progress().running() > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    };
    tokio::select! {
        _ = drained => {}
        _ = tokio::time::sleep(timeout) => warn!(
            running = node.progress().running(),
            "transfers still running after {} s: aborting them",
            timeout.as_secs()
        ),
        // A second signal: the operator will not wait.
        _ = tokio::signal::ctrl_c() => warn!("interrupted again: aborting running transfers"),
        _ = term.recv() => warn!("terminated again: aborting running transfers"),
    }
    if let Some(t) = metrics_task {
        t.abort();
    }
    node.shutdown().await?;
    info!("p2pstored stopped");
    Ok(())
}
