//! Each bad input gets a clear error, and nothing already stored is lost.

use std::io::{Read, Write};
use std::time::Duration;

use p2pstore_rpc::{NodeState, P2pstoreApiClient, codes};
use p2pstore_tests::*;

#[tokio::test(flavor = "multi_thread")]
async fn bad_paths_ids_and_no_room() {
    let net = Net::start(NetOptions {
        providers: 2,
        capacity: "8MiB".into(),
        ..Default::default()
    })
    .await;
    let rpc = net.client.rpc();
    let (kept, digest, _) = net.put_random("kept.bin", 300_000, None).await;

    let missing = net.dir.path().join("does-not-exist");
    let e = rpc
        .put(
            missing.to_string_lossy().into(),
            None,
            None,
            None,
            None,
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(rpc_code(&e), codes::INVALID_PATH);
    assert!(e.to_string().contains("does-not-exist"), "{e}");

    let e = rpc
        .put(
            net.dir.path().to_string_lossy().into(),
            None,
            None,
            None,
            None,
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(rpc_code(&e), codes::INVALID_PATH);
    assert!(e.to_string().contains("is a directory"), "{e}");

    // Larger than any provider's free space: refused before any upload.
    let big = net.dir.path().join("big.bin");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    let e = rpc
        .put(big.to_string_lossy().into(), None, None, None, None, None)
        .await
        .unwrap_err();
    assert_eq!(rpc_code(&e), codes::NO_PROVIDER);
    assert!(e.to_string().contains("not enough room"), "{e}");
    for p in &net.providers {
        assert!(
            p.rpc().status().await.unwrap().stored_bytes < 1 << 20,
            "nothing uploaded"
        );
    }

    let e = rpc
        .get(
            "00".repeat(32),
            net.dir.path().join("x").to_string_lossy().into(),
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(rpc_code(&e), codes::FILE_NOT_FOUND);
    let e = rpc
        .get(
            "not-hex".into(),
            net.dir.path().join("x").to_string_lossy().into(),
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(rpc_code(&e), codes::FILE_NOT_FOUND);

    let nodir = net.dir.path().join("no/such/dir/out.bin");
    let e = rpc
        .get(kept.clone(), nodir.to_string_lossy().into(), None)
        .await
        .unwrap_err();
    assert_eq!(rpc_code(&e), codes::INVALID_PATH);

    assert_eq!(rpc.ls().await.unwrap().len(), 1);
    net.assert_get(&kept, digest, "kept").await;
}

fn raw_http_status(addr: &str, auth: Option<&str>) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"status","params":[]}"#;
    let auth = auth
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "POST / HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    resp.lines().next().unwrap_or("").to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn rpc_auth_and_keystore_password() {
    let mut net = Net::start(NetOptions {
        providers: 1,
        ..Default::default()
    })
    .await;
    let (kept, digest, _) = net.put_random("kept.bin", 300_000, None).await;
    let addr = net.client.rpc_addr();
    let token =
        std::fs::read_to_string(net.client.datadir.join(p2pstore_rpc::COOKIE_FILE)).unwrap();
    assert!(raw_http_status(&addr, None).contains("401"));
    assert!(raw_http_status(&addr, Some("Bearer wrong")).contains("401"));
    assert!(raw_http_status(&addr, Some(&format!("Bearer {}", token.trim()))).contains("200"));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(net.client.datadir.join(p2pstore_rpc::COOKIE_FILE))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    // A daemon started without its password is locked until unlocked.
    net.client.stop();
    net.client.start_with(true).await;
    let rpc = net.client.rpc();
    assert_eq!(rpc.status().await.unwrap().state, NodeState::Locked);
    let e = rpc.ls().await.unwrap_err();
    assert_eq!(rpc_code(&e), codes::KEYSTORE_LOCKED);
    let e = rpc.unlock("wrong password".into()).await.unwrap_err();
    assert_eq!(rpc_code(&e), codes::WRONG_PASSWORD);
    assert_eq!(rpc.status().await.unwrap().state, NodeState::Locked);
    rpc.unlock(PASSWORD.into()).await.unwrap();
    assert_eq!(rpc.status().await.unwrap().state, NodeState::Running);
    let e = rpc.init(PASSWORD.into(), None, None).await.unwrap_err();
    assert_eq!(rpc_code(&e), codes::ALREADY_INITIALIZED);
    // The mnemonic never reaches the log.
    assert!(!net.client.log().to_lowercase().contains("abandon"));
    net.assert_get(&kept, digest, "kept").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn provider_vanishes_mid_put() {
    let mut net = Net::start(NetOptions {
        providers: 2,
        ..Default::default()
    })
    .await;
    let (kept, digest, _) = net.put_random("kept.bin", 300_000, None).await;
    // provider-1 (cheapest) takes every put; kill it while a large one runs.
    let src = net.dir.path().join("large.bin");
    random_file(&src, 400 << 20);
    let rpc = net.client.rpc();
    let op = "vanish".to_string();
    let put = tokio::spawn({
        let rpc = rpc.clone();
        let src = src.to_string_lossy().into_owned();
        let op = op.clone();
        async move { rpc.put(src, None, None, None, None, Some(op)).await }
    });
    wait_for("upload to start", 60, || {
        let rpc = rpc.clone();
        let op = op.clone();
        async move {
            rpc.progress(op)
                .await
                .ok()
                .flatten()
                .filter(|p| p.done_bytes > 0)
                .map(|_| ())
        }
    })
    .await;
    net.providers[0].kill();
    let e = put.await.unwrap().unwrap_err();
    let code = rpc_code(&e);
    assert!(
        code == codes::PROVIDER_UNREACHABLE || code == codes::PROVIDER_REJECTED,
        "unexpected error {e}"
    );
    assert!(
        e.to_string().contains("provider"),
        "error names the provider: {e}"
    );
    // The failed put left no manifest; the earlier file is intact once its
    // provider is back.
    assert_eq!(rpc.ls().await.unwrap().len(), 1);
    net.providers[0].start().await;
    net.assert_get(&kept, digest, "kept").await;
}
