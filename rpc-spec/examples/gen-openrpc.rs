//! Rewrites `rpc-spec/openrpc.json` from the code: run it after changing
//! the API (`cargo run -p p2pstore-rpc --example gen-openrpc`).

use std::path::Path;

fn main() -> std::io::Result<()> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("openrpc.json");
    std::fs::write(&path, p2pstore_rpc::openrpc::document_json())?;
    println!("wrote {}", path.display());
    Ok(())
}
