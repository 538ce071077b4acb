//! Payments through a real regtest bitcoind: exact amounts, one batched
//! transaction per put, garbage collection of unpaid contracts, and no
//! double payment across a crash.

use p2pstore_rpc::{ContractInfo, P2pstoreApiClient, codes};
use p2pstore_tests::*;

/// Restarts the client with a failpoint, starts a put of a new 5 MiB file
/// that dies there, and leaves the client stopped with the failpoint
/// cleared. Returns the file's digest.
async fn put_crashing_at(net: &mut Net, failpoint: &str, name: &str) -> [u8; 32] {
    net.client.stop();
    net.client.env = vec![("P2PSTORE_FAILPOINT".into(), failpoint.into())];
    net.client.start().await;
    let src = net.dir.path().join(name);
    let digest = random_file(&src, 5 << 20);
    let res = net
        .client
        .rpc()
        .put(src.to_string_lossy().into(), None, None)
        .await;
    assert!(res.is_err(), "the client should have died at {failpoint}");
    net.client.kill();
    net.client.env.clear();
    digest
}

async fn total(d: &Daemon) -> u64 {
    let b = d.rpc().wallet_balance().await.unwrap();
    b.confirmed_sat + b.unconfirmed_sat
}

async fn contracts(d: &Daemon, role: &str) -> Vec<ContractInfo> {
    d.rpc()
        .contracts()
        .await
        .unwrap()
        .into_iter()
        .filter(|c| c.role == role)
        .collect()
}

/// Waits until the daemon's wallet holds exactly `sat` (confirmed + pending).
async fn wait_balance(d: &Daemon, sat: u64) {
    let rpc = d.rpc();
    let last = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let seen = last.clone();
    wait_for(&format!("{} to hold {sat} sat", d.name), 60, || {
        let rpc = rpc.clone();
        let seen = seen.clone();
        async move {
            let b = rpc.wallet_balance().await.ok()?;
            seen.store(
                b.confirmed_sat + b.unconfirmed_sat,
                std::sync::atomic::Ordering::Relaxed,
            );
            (b.confirmed_sat + b.unconfirmed_sat == sat).then_some(())
        }
    })
    .await;
}

async fn wait_contract_states(d: &Daemon, role: &str, state: &str) -> Vec<ContractInfo> {
    let rpc = d.rpc();
    let role = role.to_string();
    let state = state.to_string();
    wait_for(
        &format!("{}'s {role} contracts to be {state}", d.name),
        90,
        || {
            let rpc = rpc.clone();
            let (role, state) = (role.clone(), state.clone());
            async move {
                let cs: Vec<ContractInfo> = rpc
                    .contracts()
                    .await
                    .ok()?
                    .into_iter()
                    .filter(|c| c.role == role)
                    .collect();
                (!cs.is_empty() && cs.iter().all(|c| c.state == state)).then_some(cs)
            }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn put_pays_the_quoted_amount_and_wallets_survive_restart() {
    let mut net = Net::start(NetOptions {
        providers: 2,
        ..Default::default()
    })
    .await;
    let before = total(&net.client).await;
    let src = net.dir.path().join("paid.bin");
    random_file(&src, 6 << 20);
    let put = net
        .client
        .rpc()
        .put(src.to_string_lossy().into(), None, None)
        .await
        .unwrap();

    let client_side = contracts(&net.client, "client").await;
    assert_eq!(client_side.len(), 1);
    let c = &client_side[0];
    assert_eq!(c.state, "active");
    assert_eq!(c.peer_id, put.providers[0]);
    let txid = c.txid.clone().unwrap();
    // 6 MiB for 4320 blocks at 1001 sat/GiB/month is below the minimum.
    assert_eq!(c.amount_sat, 1000);
    assert_eq!(c.term_blocks, 4320);

    let holder = &net.providers[net.provider_by_peer(&c.peer_id).await];
    let provider_side = contracts(holder, "provider").await;
    assert_eq!(provider_side.len(), 1);
    assert_eq!(provider_side[0].contract_id, c.contract_id);
    assert_eq!(provider_side[0].state, "active");
    assert_eq!(provider_side[0].amount_sat, c.amount_sat);
    assert_eq!(provider_side[0].txid.as_deref(), Some(txid.as_str()));
    assert!(provider_side[0].expiry_height.is_some());

    // The provider got exactly the amount; the client paid amount + fee.
    wait_balance(holder, c.amount_sat).await;
    let tx = net
        .client
        .rpc()
        .wallet_txs()
        .await
        .unwrap()
        .into_iter()
        .find(|t| t.txid == txid)
        .unwrap();
    let fee = tx.fee_sat.unwrap();
    assert!(fee > 0);
    assert_eq!(before - total(&net.client).await, c.amount_sat + fee);

    net.bitcoind.mine_burn(1).await;
    net.wait_synced().await;
    let pb = holder.rpc().wallet_balance().await.unwrap();
    assert_eq!((pb.confirmed_sat, pb.unconfirmed_sat), (c.amount_sat, 0));

    // Wallet state and contracts survive a restart.
    let balance = net.client.rpc().wallet_balance().await.unwrap();
    net.client.restart().await;
    net.wait_synced().await;
    assert_eq!(net.client.rpc().wallet_balance().await.unwrap(), balance);
    assert_eq!(contracts(&net.client, "client").await[0].state, "active");
}

#[tokio::test(flavor = "multi_thread")]
async fn two_providers_paid_by_one_transaction() {
    // Neither provider alone has room for the file.
    let net = Net::start(NetOptions {
        providers: 2,
        capacity: "13MiB".into(),
        ..Default::default()
    })
    .await;
    let src = net.dir.path().join("wide.bin");
    let digest = random_file(&src, 20 << 20);
    let put = net
        .client
        .rpc()
        .put(src.to_string_lossy().into(), None, None)
        .await
        .unwrap();
    assert_eq!(put.providers.len(), 2);
    let cs = contracts(&net.client, "client").await;
    assert_eq!(cs.len(), 2);
    assert!(cs.iter().all(|c| c.state == "active"));
    assert_eq!(cs[0].txid, cs[1].txid, "one transaction pays both");
    assert_ne!(cs[0].vout, cs[1].vout);
    for c in &cs {
        let p = &net.providers[net.provider_by_peer(&c.peer_id).await];
        wait_balance(p, c.amount_sat).await;
    }
    net.assert_get(&put.file_id, digest, "wide.out").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unpaid_contract_is_collected_after_its_deadline() {
    let mut net = Net::start(NetOptions {
        providers: 1,
        ..Default::default()
    })
    .await;
    put_crashing_at(&mut net, "before-pay", "unpaid.bin").await;

    let provider = &net.providers[0];
    let accepted = contracts(provider, "provider").await;
    assert_eq!(accepted.len(), 1);
    assert_eq!(accepted[0].state, "accepted");
    assert!(provider.rpc().status().await.unwrap().stored_bytes > 0);

    net.bitcoind.mine_burn(PAYMENT_WINDOW + 1).await;
    wait_contract_states(provider, "provider", "expired_unpaid").await;
    assert_eq!(provider.rpc().status().await.unwrap().stored_bytes, 0);
    assert_eq!(total(provider).await, 0);

    // The restarted client drops the file it never paid for.
    net.client.start().await;
    wait_contract_states(&net.client, "client", "expired_unpaid").await;
    let rpc = net.client.rpc();
    wait_for("the unpaid file to be forgotten", 60, || {
        let rpc = rpc.clone();
        async move { rpc.ls().await.ok().filter(|l| l.is_empty()).map(|_| ()) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn insufficient_funds_uploads_and_pays_nothing() {
    let net = Net::start(NetOptions {
        providers: 1,
        fund_client: false,
        ..Default::default()
    })
    .await;
    let src = net.dir.path().join("broke.bin");
    random_file(&src, 3 << 20);
    let e = net
        .client
        .rpc()
        .put(src.to_string_lossy().into(), None, None)
        .await
        .unwrap_err();
    assert_eq!(rpc_code(&e), codes::INSUFFICIENT_FUNDS, "{e}");
    assert!(e.to_string().contains("sat required"), "{e}");
    if let jsonrpsee::core::ClientError::Call(obj) = &e {
        let data: serde_json::Value = serde_json::from_str(obj.data().unwrap().get()).unwrap();
        assert_eq!(data["available_sat"], 0);
        assert!(data["required_sat"].as_u64().unwrap() >= 1000);
    }
    assert_eq!(
        net.providers[0].rpc().status().await.unwrap().stored_bytes,
        0
    );
    assert!(net.client.rpc().wallet_txs().await.unwrap().is_empty());
    assert!(net.client.rpc().ls().await.unwrap().is_empty());
    assert!(contracts(&net.client, "client").await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn crash_between_broadcast_and_record_never_pays_twice() {
    let mut net = Net::start(NetOptions {
        providers: 1,
        ..Default::default()
    })
    .await;
    let digest = put_crashing_at(&mut net, "after-broadcast", "crash.bin").await;

    net.client.start().await;
    let cs = wait_contract_states(&net.client, "client", "active").await;
    assert_eq!(cs.len(), 1);
    let provider = &net.providers[0];
    wait_balance(provider, cs[0].amount_sat).await;
    // Give a second payment every chance to appear, then check there is none.
    net.bitcoind.mine_burn(1).await;
    net.wait_synced().await;
    assert_eq!(total(provider).await, cs[0].amount_sat);
    let spends = net
        .client
        .rpc()
        .wallet_txs()
        .await
        .unwrap()
        .into_iter()
        .filter(|t| t.sent_sat > 0)
        .count();
    assert_eq!(spends, 1, "exactly one payment left the client's wallet");
    assert_eq!(contracts(provider, "provider").await[0].state, "active");

    let files = net.client.rpc().ls().await.unwrap();
    assert_eq!(files.len(), 1);
    net.assert_get(&files[0].file_id, digest, "crash.out").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn price_cap_and_bitcoind_outage() {
    let mut net = Net::start(NetOptions {
        providers: 1,
        ..Default::default()
    })
    .await;
    let src = net.dir.path().join("a.bin");
    let digest = random_file(&src, 2 << 20);
    let put = net
        .client
        .rpc()
        .put(src.to_string_lossy().into(), None, None)
        .await
        .unwrap();

    // A client whose cap is below every offer refuses to contract.
    net.client.stop();
    net.client
        .args
        .extend(["--max-price-sat-per-gib-month".into(), "10".into()]);
    net.client.start().await;
    let e = net
        .client
        .rpc()
        .put(src.to_string_lossy().into(), None, None)
        .await
        .unwrap_err();
    assert_eq!(rpc_code(&e), codes::PRICE_TOO_HIGH, "{e}");
    assert!(e.to_string().contains("1001 sat/GiB/month"), "{e}");

    // Without bitcoind, put fails fast and get keeps working.
    net.client.stop();
    net.client.args.truncate(net.client.args.len() - 2);
    net.client.start().await;
    net.bitcoind.kill();
    let started = std::time::Instant::now();
    let e = net
        .client
        .rpc()
        .put(src.to_string_lossy().into(), None, None)
        .await
        .unwrap_err();
    assert_eq!(rpc_code(&e), codes::BITCOIND_UNREACHABLE, "{e}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(15),
        "put must fail fast"
    );
    net.assert_get(&put.file_id, digest, "a.out").await;
    let st = net.client.rpc().status().await.unwrap();
    assert!(st.bitcoind_error.is_some() || st.state == "running");
}
