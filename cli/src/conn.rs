//! Turning RPC failures into one line a person understands. Finding and
//! authenticating to the daemon is shared with the daemon and the tests in
//! `p2pstore_rpc::conn`.

use anyhow::anyhow;

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
