//! put/get/ls/rm across real daemons, and survival of restarts.

use p2pstore_rpc::{NodeRole, NodeState, P2pstoreApiClient};
use p2pstore_tests::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn put_get_rm_and_restarts() {
    let mut net = Net::start(NetOptions::default()).await;
    let src = net.dir.path().join("input.bin");
    let digest = random_file(&src, 20 * 1024 * 1024);
    let client = net.client.rpc();

    let put = client
        .put(src.to_string_lossy().into(), None, None, None, None, None)
        .await
        .unwrap();
    assert_eq!(put.size, 20 * 1024 * 1024);
    assert_eq!(put.segments, 5);
    assert_eq!(put.providers.len(), 1);
    // provider-1 is cheapest, so it must have been chosen.
    let holder = net.provider_by_peer(&put.providers[0]).await;
    assert_eq!(holder, 0);
    let st = net.providers[holder].rpc().status().await.unwrap();
    assert!(
        st.stored_bytes >= put.size,
        "provider accounts for the stored bytes"
    );

    let out = net.dir.path().join("out.bin");
    let got = client
        .get(put.file_id.clone(), out.to_string_lossy().into(), None)
        .await
        .unwrap();
    assert_eq!(got.size, put.size);
    assert_eq!(file_sha256(&out), digest);

    let ls = client.ls().await.unwrap();
    assert_eq!(ls.len(), 1);
    assert_eq!(ls[0].file_id, put.file_id);
    assert_eq!(ls[0].name, "input.bin");

    // The provider restarts: shards and index survive.
    net.providers[holder].restart().await;
    let out2 = net.dir.path().join("out2.bin");
    client
        .get(put.file_id.clone(), out2.to_string_lossy().into(), None)
        .await
        .unwrap();
    assert_eq!(file_sha256(&out2), digest);

    // The client restarts: manifests and addresses survive.
    net.client.restart().await;
    let client = net.client.rpc();
    let out3 = net.dir.path().join("dir-dest");
    std::fs::create_dir(&out3).unwrap();
    let got = client
        .get(put.file_id.clone(), out3.to_string_lossy().into(), None)
        .await
        .unwrap();
    assert_eq!(got.path, out3.join("input.bin").to_string_lossy());
    assert_eq!(file_sha256(&out3.join("input.bin")), digest);

    // rm deletes at the provider, then forgets the file.
    let rm = client.rm(put.file_id.clone()).await.unwrap();
    assert_eq!(rm.deleted_shards, 5);
    assert!(rm.unreachable_providers.is_empty());
    assert!(client.ls().await.unwrap().is_empty());
    assert_eq!(
        net.providers[holder]
            .rpc()
            .status()
            .await
            .unwrap()
            .stored_bytes,
        0
    );
    let e = client
        .get(put.file_id, out.to_string_lossy().into(), None)
        .await
        .unwrap_err();
    assert_eq!(rpc_code(&e), p2pstore_rpc::codes::FILE_NOT_FOUND);

    // Every method's live result, straight off the wire, matches its result
    // schema in openrpc.json. Here rather than in a test of its own: this
    // network already has a funded client, a provider and a bootstrap node.
    let mut spec = SpecCheck::new();
    let small = net.dir.path().join("spec.bin");
    let digest = random_file(&small, 100_000);
    let c = &net.client;
    let put = spec
        .call(c, "put", json!({ "path": small, "op_id": "spec-put" }))
        .await;
    let file_id = put["file_id"].clone();
    spec.call(c, "progress", json!({ "op_id": "spec-put" }))
        .await;
    let unknown = spec
        .call(c, "progress", json!({ "op_id": "no-such-op" }))
        .await;
    assert!(unknown.is_null());
    spec.call(c, "stat", json!({ "file_id": file_id })).await;
    spec.call(c, "ls", json!({})).await;
    let dest = net.dir.path().join("spec.out");
    spec.call(
        c,
        "get",
        json!({ "file_id": file_id, "dest": dest, "op_id": "spec-get" }),
    )
    .await;
    assert_eq!(file_sha256(&dest), digest);
    spec.call(c, "repair", json!({ "file_id": file_id })).await;
    spec.call(c, "repair", json!({})).await;
    let audit = spec.call(c, "audit", json!({ "file_id": file_id })).await;
    assert_eq!(audit[0]["failed"], 0, "{audit}");
    spec.call(c, "audit", json!({})).await;
    spec.call(c, "audits", json!({})).await;
    spec.call(c, "providers", json!({})).await;
    spec.call(c, "contracts", json!({})).await;
    spec.call(&net.providers[holder], "contracts", json!({}))
        .await;
    for d in [c, &net.providers[holder], &net.bootstrap] {
        spec.call(d, "status", json!({})).await;
    }
    spec.call(c, "wallet_balance", json!({})).await;
    spec.call(c, "wallet_address", json!({})).await;
    spec.call(c, "wallet_txs", json!({})).await;
    let discovered = spec.call(c, "rpc.discover", json!({})).await;
    assert_eq!(
        discovered,
        serde_json::from_str::<serde_json::Value>(p2pstore_rpc::OPENRPC_JSON).unwrap()
    );
    spec.call(c, "rm", json!({ "file_id": file_id })).await;
    for m in [
        "status",
        "ls",
        "stat",
        "providers",
        "contracts",
        "wallet_balance",
        "wallet_address",
        "wallet_txs",
        "progress",
        "put",
        "get",
        "rm",
        "repair",
        "audit",
        "audits",
        "rpc.discover",
    ] {
        assert!(
            spec.called.contains(m),
            "{m} not checked against its schema"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn empty_file_round_trips() {
    let net = Net::start(NetOptions {
        providers: 1,
        ..Default::default()
    })
    .await;
    let src = net.dir.path().join("empty");
    std::fs::write(&src, b"").unwrap();
    let client = net.client.rpc();
    let put = client
        .put(src.to_string_lossy().into(), None, None, None, None, None)
        .await
        .unwrap();
    assert_eq!((put.size, put.segments), (0, 1));
    let out = net.dir.path().join("empty.out");
    client
        .get(put.file_id, out.to_string_lossy().into(), None)
        .await
        .unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), b"");
}

#[tokio::test(flavor = "multi_thread")]
async fn rpc_discover_and_status() {
    let net = Net::start(NetOptions {
        providers: 1,
        ..Default::default()
    })
    .await;
    let doc = net.client.rpc().discover().await.unwrap();
    let names: Vec<&str> = doc["methods"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"put") && names.contains(&"rpc.discover"));
    let st = net.providers[0].rpc().status().await.unwrap();
    assert_eq!(st.state, NodeState::Running);
    assert!(st.roles.contains(&NodeRole::Provider));
    assert!(st.dht_peers >= 1);
    assert_eq!(st.capacity_bytes, 1 << 30);
    let boot = net.bootstrap.rpc().status().await.unwrap();
    assert_eq!(boot.roles, vec![NodeRole::Bootstrap]);
    let offers = net.client.rpc().providers().await.unwrap();
    assert_eq!(offers.len(), 1);
    assert_eq!(offers[0].price_sat_per_gib_month, 1001);
    assert!(!offers[0].addrs.is_empty());
}
