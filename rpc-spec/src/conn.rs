//! Finding and authenticating to a local daemon, bitcoin-cli style: the data
//! dir holds the RPC address (`rpc.addr`) and the bearer token (`.cookie`).
//! Defined once here so the daemon's default data dir, the CLI and the test
//! harness cannot drift apart.

use std::path::{Path, PathBuf};
use std::time::Duration;

use jsonrpsee::http_client::{HttpClient, HttpClientBuilder};
use jsonrpsee::ws_client::{WsClient, WsClientBuilder};

use crate::{COOKIE_FILE, LOCK_FILE, RPC_ADDR_FILE};

/// Name of the default data dir under `$HOME`.
pub const DEFAULT_DATADIR_NAME: &str = ".p2pstore";
/// put and get of large files run as one call, so a client waits long.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
/// Largest response accepted (e.g. `ls` of a big account).
pub const MAX_RESPONSE_SIZE: u32 = 64 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("p2pstored is not running with data dir {} (no {RPC_ADDR_FILE})", datadir.display())]
    NotRunning {
        datadir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// `rpc.addr` is there but no daemon holds the data dir's lock: it was
    /// left by one that died, and whoever listens on that port now must
    /// not be sent the token.
    #[error("p2pstored is not running with data dir {} ({RPC_ADDR_FILE} is left over from a daemon that stopped)", datadir.display())]
    Stale { datadir: PathBuf },
    #[error("cannot read the RPC cookie in {}", datadir.display())]
    Cookie {
        datadir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cookie is not a valid header value")]
    BadCookie(#[source] http::header::InvalidHeaderValue),
    #[error("building the RPC client")]
    Build(#[source] jsonrpsee::core::ClientError),
    #[error("cannot open a WebSocket to p2pstored at {addr}")]
    WebSocket {
        addr: String,
        #[source]
        source: jsonrpsee::core::ClientError,
    },
}

/// `~/.p2pstore`, or `./.p2pstore` when `HOME` is unset.
pub fn default_datadir() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
        .join(DEFAULT_DATADIR_NAME)
}

/// The RPC address a running daemon wrote into its data dir, only while
/// a daemon holds the data dir's lock ([`LOCK_FILE`]).
pub fn read_rpc_addr(datadir: &Path) -> Result<String, ConnError> {
    let addr = std::fs::read_to_string(datadir.join(RPC_ADDR_FILE))
        .map(|s| s.trim().to_string())
        .map_err(|source| ConnError::NotRunning {
            datadir: datadir.to_path_buf(),
            source,
        })?;
    if !daemon_holds_lock(datadir) {
        return Err(ConnError::Stale {
            datadir: datadir.to_path_buf(),
        });
    }
    Ok(addr)
}

/// Whether a process holds the data dir's lock exclusively, as a running
/// daemon does. Tried with a shared lock, released at once.
pub fn daemon_holds_lock(datadir: &Path) -> bool {
    let Ok(file) = std::fs::File::open(datadir.join(LOCK_FILE)) else {
        return false;
    };
    match file.try_lock_shared() {
        Ok(()) => {
            let _ = file.unlock();
            false
        }
        Err(std::fs::TryLockError::WouldBlock) => true,
        // A file system without locks: the daemon could not have locked it.
        Err(std::fs::TryLockError::Error(_)) => false,
    }
}

/// The bearer token of the daemon running on `datadir`.
pub fn read_cookie(datadir: &Path) -> Result<String, ConnError> {
    std::fs::read_to_string(datadir.join(COOKIE_FILE))
        .map(|s| s.trim().to_string())
        .map_err(|source| ConnError::Cookie {
            datadir: datadir.to_path_buf(),
            source,
        })
}

/// The `Authorization: Bearer` header carrying `token`.
fn bearer(token: &str) -> Result<http::HeaderMap, ConnError> {
    let mut headers = http::HeaderMap::new();
    headers.insert(
        http::header::AUTHORIZATION,
        format!("Bearer {token}")
            .parse()
            .map_err(ConnError::BadCookie)?,
    );
    Ok(headers)
}

/// An HTTP client for `addr` (host:port) sending `token` as Bearer auth.
pub fn client(addr: &str, token: &str, timeout: Duration) -> Result<HttpClient, ConnError> {
    HttpClientBuilder::default()
        .set_headers(bearer(token)?)
        .request_timeout(timeout)
        .max_response_size(MAX_RESPONSE_SIZE)
        .build(format!("http://{addr}"))
        .map_err(ConnError::Build)
}

/// A client for the daemon on `datadir`, at `rpc_addr` if given (else the
/// address in the data dir), with [`DEFAULT_REQUEST_TIMEOUT`].
pub fn connect(datadir: &Path, rpc_addr: Option<&str>) -> Result<HttpClient, ConnError> {
    connect_with_timeout(datadir, rpc_addr, DEFAULT_REQUEST_TIMEOUT)
}

/// A WebSocket client for the daemon on `datadir` (at `rpc_addr` if
/// given), for subscriptions such as `subscribe_events`: the same port
/// and token as [`connect`].
pub async fn connect_ws(datadir: &Path, rpc_addr: Option<&str>) -> Result<WsClient, ConnError> {
    let addr = match rpc_addr {
        Some(a) => a.to_string(),
        None => read_rpc_addr(datadir)?,
    };
    WsClientBuilder::default()
        .set_headers(bearer(&read_cookie(datadir)?)?)
        .max_response_size(MAX_RESPONSE_SIZE)
        .build(format!("ws://{addr}"))
        .await
        .map_err(|source| ConnError::WebSocket { addr, source })
}

/// [`connect`] with another request timeout (tests want a bounded one).
pub fn connect_with_timeout(
    datadir: &Path,
    rpc_addr: Option<&str>,
    timeout: Duration,
) -> Result<HttpClient, ConnError> {
    let addr = match rpc_addr {
        Some(a) => a.to_string(),
        None => read_rpc_addr(datadir)?,
    };
    client(&addr, &read_cookie(datadir)?, timeout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_files_are_typed_errors() {
        let dir = std::env::temp_dir().join(format!("p2pstore-conn-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert!(matches!(
            connect(&dir, None),
            Err(ConnError::NotRunning { .. })
        ));
        assert!(matches!(
            connect(&dir, Some("127.0.0.1:1")),
            Err(ConnError::Cookie { .. })
        ));
        std::fs::write(dir.join(COOKIE_FILE), "bad\ntoken\n").unwrap();
        assert!(matches!(
            connect(&dir, Some("127.0.0.1:1")),
            Err(ConnError::BadCookie(_))
        ));
        std::fs::write(dir.join(COOKIE_FILE), "abc\n").unwrap();
        std::fs::write(dir.join(RPC_ADDR_FILE), "127.0.0.1:1\n").unwrap();
        // Left by a daemon that died: no lock held, no token sent.
        assert!(matches!(connect(&dir, None), Err(ConnError::Stale { .. })));
        let lock = std::fs::File::create(dir.join(LOCK_FILE)).unwrap();
        assert!(matches!(connect(&dir, None), Err(ConnError::Stale { .. })));
        // A daemon holds it (flock conflicts across open files, even in
        // one process).
        lock.lock().unwrap();
        assert!(connect(&dir, None).is_ok());
        drop(lock);
        assert!(matches!(connect(&dir, None), Err(ConnError::Stale { .. })));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
