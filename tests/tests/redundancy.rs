//! Erasure-coded files outlive their providers: reads from any K of N
//! shards, health, and repair onto new, paid providers.

use p2pstore_rpc::{ContractState, P2pstoreApiClient, codes};
use p2pstore_tests::*;

async fn health(net: &Net, file_id: &str) -> (u32, u32) {
    let s = net.client.rpc().stat(file_id.into()).await.unwrap();
    (s.health.good, s.health.total)
}

#[tokio::test(flavor = "multi_thread")]
async fn medium_survives_lost_providers_and_repairs_onto_new_ones() {
    let mut net = Net::start(NetOptions {
        providers: 6,
        // One unanswered audit marks a provider offline.
        client_args: vec!["--audit-offline-after".into(), "1".into()],
        ..Default::default()
    })
    .await;
    let (file_id, digest, holders) = net.put_random("m.bin", 12 << 20, Some("medium")).await;
    assert_eq!(holders.len(), 4, "2-of-4: four distinct providers");
    let stat = net.client.rpc().stat(file_id.clone()).await.unwrap();
    assert_eq!(
        (
            stat.redundancy.as_str(),
            stat.health.good,
            stat.health.needed
        ),
        ("2/4", 4, 2)
    );
    assert_eq!(stat.segments.len(), 3);
    let ls = net.client.rpc().ls().await.unwrap();
    assert_eq!((ls[0].health.good, ls[0].health.total), (4, 4));

    let mut idx = Vec::new();
    for h in &holders {
        idx.push(net.provider_by_peer(h).await);
    }
    let spare: Vec<usize> = (0..6).filter(|i| !idx.contains(i)).collect();
    let spare_peers = [
        net.providers[spare[0]].peer_id().await,
        net.providers[spare[1]].peer_id().await,
    ];

    // Two of four holders vanish: still readable; health stays 4/4 until
    // an audit goes unanswered, then 2/4.
    net.providers[idx[0]].kill();
    net.providers[idx[1]].kill();
    net.assert_get(&file_id, digest, "after-two-lost").await;
    assert_eq!(health(&net, &file_id).await, (4, 4));
    let audit = net.client.rpc().audit(Some(file_id.clone())).await.unwrap();
    let gone = [&holders[0], &holders[1]];
    for a in &audit {
        let lost = gone.contains(&&a.peer_id);
        assert_eq!(
            (a.counts.unknown > 0, a.counts.failed, a.counts.passed > 0),
            (lost, 0, !lost),
            "{a:?}"
        );
    }
    assert_eq!(health(&net, &file_id).await, (2, 4));

    // Repair rebuilds the six lost shards (3 segments x 2) at the spares.
    let r = net
        .client
        .rpc()
        .repair(Some(file_id.clone()))
        .await
        .unwrap();
    assert_eq!(
        (
            r.segments_repaired,
            r.shards_rebuilt,
            r.unrecoverable_segments
        ),
        (3, 6, 0)
    );
    let mut new = r.new_providers.clone();
    new.sort();
    let mut expected = spare_peers.to_vec();
    expected.sort();
    assert_eq!(new, expected);
    assert!(r.txid.is_some());
    assert_eq!(health(&net, &file_id).await, (4, 4));

    // The new providers hold active, paid contracts.
    for &s in &spare {
        let p = &net.providers[s];
        let cs = p.rpc().contracts().await.unwrap();
        assert_eq!(cs.len(), 1);
        assert!(matches!(
            cs[0].state,
            ContractState::Active | ContractState::Provisional
        ));
        assert_eq!(cs[0].payment_txids.last(), r.txid.as_ref());
        let b = p.rpc().wallet_balance().await.unwrap();
        assert_eq!(b.confirmed_sat + b.unconfirmed_sat, cs[0].paid_sat);
    }
    let client_cs = net.client.rpc().contracts().await.unwrap();
    assert_eq!(
        client_cs.iter().filter(|c| c.stored_bytes == 0).count(),
        2,
        "lost providers keep nothing of the file, so they are not renewed"
    );

    // A third original holder goes too: still retrievable.
    net.providers[idx[2]].kill();
    net.assert_get(&file_id, digest, "after-third-lost").await;
}

/// Flips one byte in the first shard file under a provider's data dir
/// whose size matches `size`.
fn corrupt_a_shard(provider: &Daemon, size: Option<u64>) -> std::path::PathBuf {
    for f in shard_files(provider) {
        let len = f.metadata().unwrap().len();
        if size.is_none_or(|s| s == len) {
            let mut bytes = std::fs::read(&f).unwrap();
            bytes[len as usize / 2] ^= 0x55;
            std::fs::write(&f, bytes).unwrap();
            return f;
        }
    }
    panic!("no shard to corrupt at {}", provider.name);
}

#[tokio::test(flavor = "multi_thread")]
async fn corrupt_shard_is_detected_and_replaced() {
    let net = Net::start(NetOptions {
        providers: 5,
        // Audits challenge every leaf: a one-byte flip is found for sure.
        client_args: vec!["--audit-leaves-per-shard".into(), "2048".into()],
        ..Default::default()
    })
    .await;
    // A single-copy file: corruption is an error naming provider and shard,
    // and no partial file is left.
    let (low_id, _, low_holders) = net.put_random("low.bin", 1 << 20, Some("low")).await;
    let low_holder = &net.providers[net.provider_by_peer(&low_holders[0]).await];
    corrupt_a_shard(low_holder, Some((1 << 20) + 16));
    let dest = net.dir.path().join("low.out");
    let e = net
        .client
        .rpc()
        .get(low_id, dest.to_string_lossy().into(), None)
        .await
        .unwrap_err();
    assert_eq!(rpc_code(&e), codes::INTEGRITY, "{e}");
    assert!(
        e.to_string().contains(&low_holders[0])
            && e.to_string().contains("does not match its hash"),
        "{e}"
    );
    assert!(!dest.exists());
    let leftovers: Vec<_> = std::fs::read_dir(net.dir.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".part"))
        .collect();
    assert!(leftovers.is_empty(), "partial file left behind");

    // A 2-of-4 file: one corrupt shard costs nothing but health.
    let (file_id, digest, holders) = net.put_random("m.bin", 6 << 20, Some("medium")).await;
    let victim = &net.providers[net.provider_by_peer(&holders[3]).await];
    let shard_len = ((4u64 << 20) + 16) / 2;
    corrupt_a_shard(victim, Some(shard_len));
    net.assert_get(&file_id, digest, "with-corrupt-shard").await;
    let audit = net.client.rpc().audit(Some(file_id.clone())).await.unwrap();
    for a in &audit {
        assert_eq!(a.counts.failed, (a.peer_id == holders[3]) as u64, "{a:?}");
    }
    assert_eq!(health(&net, &file_id).await, (3, 4));

    let r = net.client.rpc().repair(None).await.unwrap();
    assert_eq!(r.shards_rebuilt, 1);
    assert_eq!(r.new_providers.len(), 1);
    assert!(
        !holders.contains(&r.new_providers[0]),
        "rebuilt shard goes to a provider without one"
    );
    assert_eq!(health(&net, &file_id).await, (4, 4));
    net.assert_get(&file_id, digest, "after-repair").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn too_few_providers_uploads_and_pays_nothing() {
    let net = Net::start(NetOptions {
        providers: 3,
        ..Default::default()
    })
    .await;
    let src = net.dir.path().join("x.bin");
    random_file(&src, 1 << 20);
    let e = net
        .client
        .rpc()
        .put(
            src.to_string_lossy().into(),
            Some("medium".into()),
            None,
            None,
            None,
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(rpc_code(&e), codes::NO_PROVIDER, "{e}");
    assert!(
        e.to_string().contains("found 3") && e.to_string().contains("needs 4"),
        "{e}"
    );
    for p in &net.providers {
        assert_eq!(p.rpc().status().await.unwrap().stored_bytes, 0);
        assert!(p.rpc().contracts().await.unwrap().is_empty());
    }
    assert!(
        net.client
            .rpc()
            .wallet_txs()
            .await
            .unwrap()
            .iter()
            .all(|t| t.sent_sat == 0)
    );
    assert!(net.client.rpc().contracts().await.unwrap().is_empty());
    let e = net
        .client
        .rpc()
        .put(
            src.to_string_lossy().into(),
            Some("9/4".into()),
            None,
            None,
            None,
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(rpc_code(&e), codes::INVALID_PARAMS, "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn high_on_nine_providers_round_trips() {
    let net = Net::start(NetOptions {
        providers: 9,
        ..Default::default()
    })
    .await;
    let (file_id, digest, holders) = net.put_random("h.bin", 9 << 20, Some("high")).await;
    assert_eq!(holders.len(), 9);
    assert_eq!(health(&net, &file_id).await, (9, 9));
    let cs = net.client.rpc().contracts().await.unwrap();
    assert_eq!(cs.len(), 9);
    assert!(
        cs.iter()
            .all(|c| c.state == ContractState::Active && c.payment_txids == cs[0].payment_txids),
        "nine contracts, one transaction"
    );
    net.assert_get(&file_id, digest, "high").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn background_check_repairs_below_k_plus_margin() {
    let mut net = Net::start(NetOptions {
        providers: 6,
        client_args: [
            "--health-check-secs",
            "2",
            "--audit-interval-secs",
            "1",
            "--audit-offline-after",
            "2",
        ]
        .map(String::from)
        .to_vec(),
        ..Default::default()
    })
    .await;
    let (file_id, digest, holders) = net.put_random("bg.bin", 3 << 20, Some("medium")).await;
    let first = net.provider_by_peer(&holders[0]).await;
    let second = net.provider_by_peer(&holders[1]).await;
    // The background audits find the first one gone: K+1 = 3 good shards,
    // at the threshold, left alone.
    net.providers[first].kill();
    let rpc = net.client.rpc();
    let id = file_id.clone();
    wait_for("the audits to mark a provider offline", 60, || {
        let (rpc, id) = (rpc.clone(), id.clone());
        async move {
            rpc.stat(id)
                .await
                .ok()
                .filter(|s| s.health.good == 3)
                .map(|_| ())
        }
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    assert_eq!(health(&net, &file_id).await, (3, 4));
    // Below it: the daemon repairs on its own.
    net.providers[second].kill();
    wait_for("the background repair", 60, || {
        let (rpc, id) = (rpc.clone(), id.clone());
        async move {
            rpc.stat(id)
                .await
                .ok()
                .filter(|s| s.health.good == 4)
                .map(|_| ())
        }
    })
    .await;
    net.assert_get(&file_id, digest, "after-background-repair")
        .await;
}
