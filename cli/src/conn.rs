//! Finding and authenticating to the local daemon, bitcoin-cli style: the
//! data dir holds the RPC address (`rpc.addr`) and the token (`.cookie`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use jsonrpsee::http_client::{HttpClient, HttpClientBuilder};
use p2pstore_rpc::{COOKIE_FILE, RPC_ADDR_FILE};

pub fn default_datadir() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
        .join(".p2pstore")
}

pub fn connect(datadir: &Path, rpc_addr: Option<&str>) -> Result<HttpClient> {
    let addr = match rpc_addr {
        Some(a) => a.to_string(),
        None => std::fs::read_to_string(datadir.join(RPC_ADDR_FILE))
            .map(|s| s.trim().to_string())
            .map_err(|_| {
                anyhow!(
                    "p2pstored is not running with data dir {} (no {RPC_ADDR_FILE})",
                    datadir.display()
                )
            })?,
    };
    let token = std::fs::read_to_string(datadir.join(COOKIE_FILE))
        .with_context(|| format!("cannot read the RPC cookie in {}", datadir.display()))?;
    let mut headers = http::HeaderMap::new();
    headers.insert(
        http::header::AUTHORIZATION,
        format!("Bearer {}", token.trim())
            .parse()
            .context("cookie is not a valid header value")?,
    );
    HttpClientBuilder::default()
        .set_headers(headers)
        // put and get of large files run as one call.
        .request_timeout(Duration::from_secs(24 * 3600))
        .max_response_size(64 * 1024 * 1024)
        .build(format!("http://{addr}"))
        .context("building the RPC client")
}

/// One line a person understands, from any RPC failure.
pub fn describe(e: jsonrpsee::core::ClientError) -> anyhow::Error {
    use jsonrpsee::core::ClientError;
    match e {
        ClientError::Call(obj) => anyhow!("{}", obj.message()),
        ClientError::Transport(t) => {
            let s = t.to_string();
            if s.contains("401") {
                anyhow!("RPC authentication failed: the .cookie does not match the running daemon")
            } else {
                anyhow!("cannot reach p2pstored: {s}")
            }
        }
        ClientError::RequestTimeout => anyhow!("p2pstored did not answer in time"),
        other => anyhow!("{other}"),
    }
}
