//! Progress bars for put and get, fed by the daemon's `subscribe_events`:
//! the transfer runs as one RPC call with an op id, and the bar follows
//! the `progress` events carrying that id (the phase, then bytes as shards
//! land), so it moves from the first phase and never polls.

use std::future::Future;
use std::path::Path;

use indicatif::{ProgressBar, ProgressStyle};
use jsonrpsee::core::client::Subscription;
use p2pstore_rpc::{Event, EventKind, P2pstoreEventsClient};

pub fn op_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("cli-{}-{nanos}", std::process::id())
}

/// The daemon's events, over a WebSocket to the daemon on `datadir`.
pub async fn subscribe(
    datadir: &Path,
    rpc_addr: Option<&str>,
) -> anyhow::Result<(jsonrpsee::ws_client::WsClient, Subscription<Event>)> {
    let ws = p2pstore_rpc::conn::connect_ws(datadir, rpc_addr).await?;
    let sub = ws.subscribe_events().await.map_err(crate::conn::describe)?;
    Ok((ws, sub))
}

/// Runs `call` (the put or get with op id `op`) with a bar on the
/// terminal when `show`. Without a subscription (an older daemon, say)
/// the call runs bare: a bar is a nicety, the transfer is not.
pub async fn with_bar<T, E>(
    datadir: &Path,
    rpc_addr: Option<&str>,
    show: bool,
    op: String,
    call: impl Future<Output = Result<T, E>>,
) -> Result<T, E> {
    if !show {
        return call.await;
    }
    // Subscribed before the call goes out, so its first phase is seen.
    let Ok((_ws, mut sub)) = subscribe(datadir, rpc_addr).await else {
        return call.await;
    };
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{msg:9} {bar:40} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let follow = async {
        let mut phase = None;
        while let Some(Ok(event)) = sub.next().await {
            let EventKind::Progress {
                op_id,
                phase: p,
                done_bytes,
                total_bytes,
                ..
            } = event.kind
            else {
                continue;
            };
            if op_id.as_deref() != Some(op.as_str()) {
                continue;
            }
            if phase != Some(p) {
                // The rate and eta are of the bytes moving now, not of
                // the planning and payment before them.
                if phase.is_some() {
                    bar.reset_eta();
                }
                phase = Some(p);
                bar.set_message(p.as_str());
            }
            bar.set_length(total_bytes);
            bar.set_position(done_bytes);
        }
        // The subscription ended (the daemon went away): the call's own
        // result says what happened.
        std::future::pending::<()>().await
    };
    let result = tokio::select! {
        r = call => r,
        _ = follow => unreachable!("follow never ends"),
    };
    bar.finish_and_clear();
    result
}
