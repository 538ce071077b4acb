//! Progress bars for put and get: the transfer runs as one RPC call while a
//! second call polls `progress` for the same op id.

use std::future::Future;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use jsonrpsee::http_client::HttpClient;
use p2pstore_rpc::P2pstoreApiClient;

pub fn op_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("cli-{}-{nanos}", std::process::id())
}

pub async fn with_bar<T, E>(
    client: &HttpClient,
    show: bool,
    op: String,
    call: impl Future<Output = Result<T, E>>,
) -> Result<T, E> {
    if !show {
        return call.await;
    }
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let poll = async {
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if let Ok(Some(p)) = client.progress(op.clone()).await {
                bar.set_length(p.total_bytes);
                bar.set_position(p.done_bytes);
            }
        }
    };
    let result = tokio::select! {
        r = call => r,
        _ = poll => unreachable!("the poll loop never ends"),
    };
    bar.finish_and_clear();
    result
}
