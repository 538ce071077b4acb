//! Payments through a real regtest bitcoind: prepaid allowance, period
//! payments in one transaction, exact amounts, data collected when a
//! client stops paying or a term ends, and no double payment across a
//! crash.

use p2pstore_rpc::{
    ContractInfo, ContractRole, ContractState, NodeState, P2pstoreApiClient, codes,
};
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
        .put(src.to_string_lossy().into(), None, None, None, None, None)
        .await;
    assert!(res.is_err(), "the client should have died at {failpoint}");
    net.client.kill();
    net.client.env.clear();
    digest
}

async fn total(d: &Daemon) -> u64 {
    let b = d.rpc().wallet_balance().await.unwrap();
    // Coinbase outputs mature as blocks are mined: count them throughout.
    b.confirmed_sat + b.unconfirmed_sat + b.immature_sat
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

async fn wait_contract_states(
    d: &Daemon,
    role: ContractRole,
    state: ContractState,
) -> Vec<ContractInfo> {
    let what = format!("{}'s {role} contracts to be {state}", d.name);
    wait_contracts(d, &what, move |c| c.role == role, move |c| c.state == state).await
}

/// Waits until the daemon has contracts that `keep` selects, all of them
/// `done`; returns them.
async fn wait_contracts(
    d: &Daemon,
    what: &str,
    keep: impl Fn(&ContractInfo) -> bool + Copy,
    done: impl Fn(&ContractInfo) -> bool + Copy,
) -> Vec<ContractInfo> {
    let rpc = d.rpc();
    wait_for(what, 90, || {
        let rpc = rpc.clone();
        async move {
            let cs: Vec<ContractInfo> = rpc
                .contracts()
                .await
                .ok()?
                .into_iter()
                .filter(keep)
                .collect();
            (!cs.is_empty() && cs.iter().all(done)).then_some(cs)
        }
    })
    .await
}

/// The sum of fees of every transaction the daemon's wallet sent.
async fn fees_paid(d: &Daemon) -> u64 {
    sent_txs(d).await.iter().map(|t| t.fee_sat.unwrap()).sum()
}

/// Payments the daemon's wallet made.
async fn spends(d: &Daemon) -> usize {
    sent_txs(d).await.len()
}

/// Mines until the next period of contracts paid through `through` is due
/// (at least one block).
async fn mine_to_renewal(net: &Net, through: u32) {
    let tip = net.bitcoind.height().await as u32;
    net.bitcoind
        .mine_burn((through - RENEW_BEFORE).saturating_sub(tip).max(1))
        .await;
}

/// Waits until every active client contract is paid through at least `height`.
async fn wait_paid_through(d: &Daemon, height: u32) -> Vec<ContractInfo> {
    wait_contracts(
        d,
        &format!("contracts paid through {height}"),
        |c| c.role == ContractRole::Client && c.state == ContractState::Active,
        move |c| c.paid_through_height >= height,
    )
    .await
}

/// Short periods, and a price high enough that amounts are not all the
/// minimum output.
const PERIOD: u32 = 10;
const RENEW_BEFORE: u32 = 3;
const PRICE: u64 = 1_000_000_000;

fn period_args() -> Vec<String> {
    p2pstore_tests::period_args(PERIOD, RENEW_BEFORE)
}

/// Providers that accept contracts of a few blocks.
fn short_terms() -> Vec<String> {
    vec!["--min-term-blocks".into(), "5".into()]
}

#[tokio::test(flavor = "multi_thread")]
async fn periods_are_paid_in_one_transaction_and_add_up_exactly() {
    let net = Net::start(NetOptions {
        providers: 4,
        redundancy: "medium".into(),
        distinct_prices: false,
        base_price: PRICE,
        client_args: period_args(),
        ..Default::default()
    })
    .await;
    let before = total(&net.client).await;
    let (file_id, digest, providers) = net.put_random("periodic.bin", 6 << 20, None).await;
    assert_eq!(providers.len(), 4);
    let cs = wait_contract_states(&net.client, ContractRole::Client, ContractState::Active).await;
    assert_eq!(cs.len(), 4, "one contract per provider");
    let first = cs.iter().map(|c| c.paid_through_height).min().unwrap();
    for c in &cs {
        assert_eq!(c.payment_txids.len(), 1, "prepaid once");
        assert_eq!(c.payment_txids, cs[0].payment_txids, "one prepayment tx");
        assert!(c.allowance_bytes >= c.stored_bytes && c.stored_bytes > 0);
        assert!(c.paid_sat > 546, "pro rata above the minimum: {c:?}");
    }

    // Three periods: each is paid RENEW_BEFORE blocks early, for every
    // provider in one transaction.
    for k in 1..=3u32 {
        mine_to_renewal(&net, first + (k - 1) * PERIOD).await;
        let cs = wait_paid_through(&net.client, first + k * PERIOD).await;
        for c in &cs {
            assert_eq!(c.payment_txids.len(), 1 + k as usize);
            assert_eq!(c.payment_txids, cs[0].payment_txids, "one tx per period");
            assert!(c.next_payment_sat.is_some_and(|s| s > 546));
        }
    }
    net.bitcoind.mine_burn(1).await;
    net.wait_synced().await;

    // Exact accounting: each provider received exactly what its contract
    // says, the client spent the amounts plus fees, and nothing else moved.
    let client_side = contracts(&net.client, ContractRole::Client).await;
    let mut paid = 0;
    for p in &net.providers {
        let theirs = contracts(p, ContractRole::Provider).await;
        assert_eq!(theirs.len(), 1);
        let mine = client_side
            .iter()
            .find(|c| c.contract_id == theirs[0].contract_id)
            .unwrap();
        assert_eq!(theirs[0].paid_sat, mine.paid_sat);
        assert_eq!(theirs[0].payment_txids, mine.payment_txids);
        // Final once its payments have a confirmation.
        wait_contract_states(p, ContractRole::Provider, ContractState::Active).await;
        wait_balance(p, theirs[0].paid_sat).await;
        paid += mine.paid_sat;
    }
    let fees = fees_paid(&net.client).await;
    assert_eq!(before - total(&net.client).await, paid + fees);
    net.assert_get(&file_id, digest, "periodic.out").await;
}

/// Blocks a provider waits past the paid-through height before it
/// collects an unpaid contract, in the tests that stop paying.
const GRACE: u32 = 4;

/// One provider holding a 2 MiB file for a client that is then killed, so
/// nothing pays the next period; returns the contract's paid-through
/// height.
async fn abandoned_contract() -> (Net, u32) {
    let mut net = Net::start(NetOptions {
        providers: 1,
        client_args: period_args(),
        provider_args: vec!["--grace-blocks".into(), GRACE.to_string()],
        ..Default::default()
    })
    .await;
    net.put_random("abandoned.bin", 2 << 20, None).await;
    let cs = wait_contract_states(&net.client, ContractRole::Client, ContractState::Active).await;
    net.client.kill();
    (net, cs[0].paid_through_height)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_stops_paying_loses_its_data_after_the_grace() {
    let (net, paid_through) = abandoned_contract().await;
    let provider = &net.providers[0];
    let stored = provider.rpc().status().await.unwrap().stored_bytes;
    assert!(stored > 0);

    // Up to paid-through + grace, nothing is deleted.
    let tip = net.bitcoind.height().await as u32;
    net.bitcoind.mine_burn(paid_through + GRACE - tip).await;
    net.wait_synced().await;
    tokio::time::sleep(std::time::Duration::from_secs(6)).await;
    assert_eq!(provider.rpc().status().await.unwrap().stored_bytes, stored);
    assert_eq!(
        contracts(provider, ContractRole::Provider).await[0].state,
        ContractState::Active
    );
    // One block more and the contract lapses.
    net.bitcoind.mine_burn(1).await;
    wait_contract_states(provider, ContractRole::Provider, ContractState::Lapsed).await;
    assert_eq!(provider.rpc().status().await.unwrap().stored_bytes, 0);
    assert!(shard_files(provider).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_term_ends_unrenewed_and_keep_renews() {
    let net = Net::start(NetOptions {
        providers: 1,
        client_args: period_args(),
        provider_args: short_terms(),
        ..Default::default()
    })
    .await;
    let rpc = net.client.rpc();
    let (_events_cli, mut events) = follow_events(&net.client, true).await;
    let short = net.dir.path().join("short.bin");
    random_file(&short, 1 << 20);
    let kept = net.dir.path().join("kept.bin");
    let kept_digest = random_file(&kept, 1 << 20);
    let short = rpc
        .put(
            short.to_string_lossy().into(),
            None,
            Some(15),
            None,
            None,
            None,
        )
        .await
        .unwrap();
    let kept = rpc
        .put(
            kept.to_string_lossy().into(),
            None,
            None,
            Some(true),
            None,
            None,
        )
        .await
        .unwrap();
    let cs = wait_contract_states(&net.client, ContractRole::Client, ContractState::Active).await;
    assert_eq!(cs.len(), 1, "both files share the pair's contract");
    let provider = &net.providers[0];
    let both = provider.rpc().status().await.unwrap().stored_bytes;

    // Past the short file's term it is gone, at the client and the
    // provider; the kept file's contract runs on, renewed period by period.
    let start = net.bitcoind.height().await as u32;
    net.bitcoind.mine_burn(16).await;
    wait_for("the short file to expire", 60, || {
        let rpc = rpc.clone();
        let id = short.file_id.clone();
        async move {
            let ls = rpc.ls().await.ok()?;
            (!ls.iter().any(|f| f.file_id == id)).then_some(())
        }
    })
    .await;
    let left = provider.rpc().status().await.unwrap().stored_bytes;
    assert!(left > 0 && left < both, "{left} of {both}");
    for k in 1..=4u32 {
        net.bitcoind.mine_burn(PERIOD).await;
        wait_paid_through(&net.client, start + k * PERIOD).await;
    }
    let cs = contracts(&net.client, ContractRole::Client).await;
    assert_eq!(cs[0].state, ContractState::Active);
    assert!(cs[0].term_end_height > cs[0].paid_through_height);
    net.assert_get(&kept.file_id, kept_digest, "kept.out").await;
    // Subscribers heard the term grow, to where the contract says.
    let seen = read_events_until(&mut events, 30, |seen| {
        events_of(seen, "contract_renewed")
            .iter()
            .any(|e| e["term_end_height"] == cs[0].term_end_height)
    })
    .await;
    let renewed = events_of(&seen, "contract_renewed");
    assert!(
        renewed
            .iter()
            .all(|e| e["contract_id"] == cs[0].contract_id)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unrenewed_contract_expires_at_its_term_end() {
    let mut net = Net::start(NetOptions {
        providers: 1,
        client_args: period_args(),
        provider_args: short_terms(),
        ..Default::default()
    })
    .await;
    let rpc = net.client.rpc();
    let src = net.dir.path().join("term.bin");
    random_file(&src, 1 << 20);
    rpc.put(
        src.to_string_lossy().into(),
        None,
        Some(25),
        None,
        None,
        None,
    )
    .await
    .unwrap();
    let cs = wait_contract_states(&net.client, ContractRole::Client, ContractState::Active).await;
    let term_end = cs[0].term_end_height;
    // The client goes away; the provider collects at the term's end.
    net.client.kill();
    let tip = net.bitcoind.height().await as u32;
    net.bitcoind.mine_burn(term_end - tip).await;
    let provider = &net.providers[0];
    wait_contract_states(provider, ContractRole::Provider, ContractState::Expired).await;
    assert_eq!(provider.rpc().status().await.unwrap().stored_bytes, 0);
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
        .put(src.to_string_lossy().into(), None, None, None, None, None)
        .await
        .unwrap_err();
    assert_eq!(rpc_code(&e), codes::INSUFFICIENT_FUNDS, "{e}");
    assert!(e.to_string().contains("sat required"), "{e}");
    if let jsonrpsee::core::ClientError::Call(obj) = &e {
        let data: serde_json::Value = serde_json::from_str(obj.data().unwrap().get()).unwrap();
        assert_eq!(data["available_sat"], 0);
        assert!(data["required_sat"].as_u64().unwrap() >= 546);
    }
    assert_eq!(
        net.providers[0].rpc().status().await.unwrap().stored_bytes,
        0
    );
    assert!(net.client.rpc().wallet_txs().await.unwrap().is_empty());
    assert!(net.client.rpc().ls().await.unwrap().is_empty());
    // A contract being formed that was never paid never started.
    assert!(
        contracts(&net.client, ContractRole::Client)
            .await
            .iter()
            .all(|c| c.state == ContractState::Rejected && c.paid_sat == 0)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn crash_after_paying_never_pays_twice() {
    let mut net = Net::start(NetOptions {
        providers: 1,
        ..Default::default()
    })
    .await;
    put_crashing_at(&mut net, "after-broadcast", "crash.bin").await;

    // The restarted client finishes the payment it recorded: the provider
    // credits it once.
    net.client.start().await;
    let cs = wait_contract_states(&net.client, ContractRole::Client, ContractState::Active).await;
    assert_eq!(cs.len(), 1);
    assert_eq!(cs[0].payment_txids.len(), 1);
    let provider = &net.providers[0];
    wait_balance(provider, cs[0].paid_sat).await;
    assert!(
        net.client.rpc().ls().await.unwrap().is_empty(),
        "nothing was uploaded"
    );

    // The put again: the allowance already bought is used, not bought again.
    let src = net.dir.path().join("crash.bin");
    let digest = file_sha256(&src);
    let put = net
        .client
        .rpc()
        .put(src.to_string_lossy().into(), None, None, None, None, None)
        .await
        .unwrap();
    net.bitcoind.mine_burn(1).await;
    net.wait_synced().await;
    assert_eq!(total(provider).await, cs[0].paid_sat);
    assert_eq!(
        spends(&net.client).await,
        1,
        "exactly one payment left the client's wallet"
    );
    assert_eq!(
        contracts(&net.client, ContractRole::Client).await[0].payment_txids,
        cs[0].payment_txids
    );
    net.assert_get(&put.file_id, digest, "crash.out").await;
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
        .put(src.to_string_lossy().into(), None, None, None, None, None)
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
        .put(
            src.to_string_lossy().into(),
            None,
            None,
            None,
            Some(true),
            None,
        )
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
        .put(
            src.to_string_lossy().into(),
            None,
            None,
            None,
            Some(true),
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(rpc_code(&e), codes::BITCOIND_UNREACHABLE, "{e}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(15),
        "put must fail fast"
    );
    net.assert_get(&put.file_id, digest, "a.out").await;
    let st = net.client.rpc().status().await.unwrap();
    assert!(st.bitcoind_error.is_some() || st.state == NodeState::Running);
    // With the wallet's view stale, no payment is decided from it.
    wait_for(
        "a reconciliation round skipped for the failed sync",
        60,
        || {
            let skipped = net
                .client
                .log()
                .contains("payments not reconciled this round");
            async move { skipped.then_some(()) }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stuck_period_payment_is_bumped_and_counts_once() {
    const BUMP: u32 = 2;
    let mut args = period_args();
    args.extend(["--fee-bump-blocks".into(), BUMP.to_string()]);
    let net = Net::start(NetOptions {
        providers: 1,
        base_price: PRICE,
        client_args: args,
        ..Default::default()
    })
    .await;
    net.put_random("stuck.bin", 2 << 20, None).await;
    let cs = wait_contract_states(&net.client, ContractRole::Client, ContractState::Active).await;
    let through = cs[0].paid_through_height;
    // Mine to the renewal, then only empty blocks: the period payment
    // sits in the mempool as if its fee were too low.
    mine_to_renewal(&net, through).await;
    let cs = wait_paid_through(&net.client, through + PERIOD).await;
    let stuck = cs[0].payment_txids[1].clone();
    assert_eq!(net.bitcoind.mempool().await, vec![stuck.clone()]);
    let provider = &net.providers[0];
    net.bitcoind.mine_empty(BUMP).await;

    // The client replaces it at a higher fee, and the provider follows.
    let bumped = wait_for("the period payment to be bumped", 60, || {
        let rpc = net.client.rpc();
        let stuck = stuck.clone();
        async move {
            let cs = rpc.contracts().await.ok()?;
            let txid = cs[0].payment_txids.get(1)?.clone();
            (txid != stuck).then_some(txid)
        }
    })
    .await;
    assert_eq!(net.bitcoind.mempool().await, vec![bumped.clone()]);
    let theirs = wait_contracts(
        provider,
        "the provider to follow the replacement",
        |c| c.role == ContractRole::Provider,
        |c| c.payment_txids.len() == 2 && c.payment_txids[1] == bumped,
    )
    .await;
    assert_eq!(theirs[0].paid_through_height, through + PERIOD);
    let fee = |txid: String| {
        let bitcoind = &net.bitcoind;
        async move {
            let e = bitcoind
                .call("getmempoolentry", serde_json::json!([txid]))
                .await
                .unwrap();
            (e["fees"]["base"].as_f64().unwrap() * 1e8).round() as u64
                / e["vsize"].as_u64().unwrap()
        }
    };
    assert!(
        fee(bumped.clone()).await > 2,
        "bumped above the fallback rate"
    );

    // Once mined, the period counts once: the provider holds exactly what
    // the contract says, and the contract runs on.
    net.bitcoind.mine_burn(1).await;
    net.wait_synced().await;
    let theirs =
        wait_contract_states(provider, ContractRole::Provider, ContractState::Active).await;
    let mine = contracts(&net.client, ContractRole::Client).await;
    assert_eq!(theirs[0].payment_txids, mine[0].payment_txids);
    assert_eq!(theirs[0].paid_sat, mine[0].paid_sat);
    wait_balance(provider, mine[0].paid_sat).await;
    assert_eq!(
        spends(&net.client).await,
        2,
        "the prepayment and one period payment"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_put_is_idempotent_by_op_id_and_by_content() {
    let mut net = Net::start(NetOptions {
        providers: 1,
        ..Default::default()
    })
    .await;
    let src = net.dir.path().join("same.bin");
    let digest = random_file(&src, 2 << 20);
    let path: String = src.to_string_lossy().into();
    let datadir = net.client.datadir.clone();
    let put = |force: Option<bool>, op: &str| {
        let rpc = p2pstore_rpc::conn::connect(&datadir, None).unwrap();
        let path = path.clone();
        let op = op.to_string();
        async move { rpc.put(path, None, None, None, force, Some(op)).await }
    };
    let first = put(None, "op-1").await.unwrap();
    assert!(!first.existing);
    let provider = &net.providers[0];
    let stored = provider.rpc().status().await.unwrap().stored_bytes;
    assert_eq!(spends(&net.client).await, 1);

    // The same operation again, even after a restart: its result, nothing
    // stored or paid.
    net.client.restart().await;
    let again = put(None, "op-1").await.unwrap();
    assert_eq!(
        (again.file_id.as_str(), again.existing),
        (first.file_id.as_str(), true)
    );
    // The same content under the same name: the stored file.
    let dup = put(None, "op-2").await.unwrap();
    assert_eq!(
        (dup.file_id.as_str(), dup.existing),
        (first.file_id.as_str(), true)
    );
    assert_eq!(net.client.rpc().ls().await.unwrap().len(), 1);
    assert_eq!(provider.rpc().status().await.unwrap().stored_bytes, stored);
    assert_eq!(spends(&net.client).await, 1);

    // --force stores a second copy; changed content is a new file.
    let forced = put(Some(true), "op-3").await.unwrap();
    assert!(!forced.existing && forced.file_id != first.file_id);
    random_file(&src, 2 << 20);
    let changed = put(None, "op-4").await.unwrap();
    assert!(!changed.existing && changed.file_id != first.file_id);
    assert_eq!(net.client.rpc().ls().await.unwrap().len(), 3);
    net.assert_get(&first.file_id, digest, "same.out").await;

    // Operation ids are bounded text.
    for bad in ["", "has space", &"x".repeat(129)] {
        let e = put(None, bad).await.unwrap_err();
        assert_eq!(rpc_code(&e), codes::INVALID_PARAMS, "{bad:?}: {e}");
    }
}

/// The daemon dies after recording a put but before answering; the CLI
/// asks the restarted daemon again with the same operation id and gets
/// the stored file, paid once.
#[tokio::test(flavor = "multi_thread")]
async fn the_cli_retries_a_put_across_a_daemon_crash_without_paying_twice() {
    let mut net = Net::start(NetOptions {
        providers: 1,
        ..Default::default()
    })
    .await;
    net.client.stop();
    net.client.env = vec![("P2PSTORE_FAILPOINT".into(), "after-put-recorded".into())];
    net.client.start().await;
    let src = net.dir.path().join("retried.bin");
    let digest = random_file(&src, 3 << 20);
    let cli = std::process::Command::new(bin("p2pstore-cli"))
        .arg("--datadir")
        .arg(&net.client.datadir)
        .args(["--json", "put", "--op-id", "retried-op"])
        .arg(&src)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let log = net.client.datadir.join("p2pstored.log");
    wait_for("the client to die at the failpoint", 60, || {
        let hit = std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("failpoint hit");
        async move { hit.then_some(()) }
    })
    .await;
    net.client.kill();
    net.client.env.clear();
    net.client.start().await;

    let out = tokio::task::spawn_blocking(move || cli.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("retrying put with op id retried-op"),
        "{stderr}"
    );
    let r: p2pstore_rpc::PutResult = serde_json::from_slice(&out.stdout).unwrap();
    assert!(r.existing);
    let ls = net.client.rpc().ls().await.unwrap();
    assert_eq!(ls.len(), 1);
    assert_eq!(ls[0].file_id, r.file_id);
    assert_eq!(spends(&net.client).await, 1);
    net.assert_get(&r.file_id, digest, "retried.out").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_budget_adds_up_and_warns_when_the_wallet_is_short() {
    const PERIODS: u32 = 5;
    let mut args = period_args();
    args.extend(["--budget-warn-periods".into(), PERIODS.to_string()]);
    let net = Net::start(NetOptions {
        providers: 2,
        redundancy: "2/2".into(),
        base_price: PRICE,
        client_args: args,
        provider_args: short_terms(),
        // Funded with a fixed sum below, not with coinbases that keep
        // maturing as blocks are mined.
        fund_client: false,
        ..Default::default()
    })
    .await;
    let rpc = net.client.rpc();
    let funder = &net.providers[1];
    net.fund(funder).await;
    let to = rpc.wallet_address().await.unwrap().address;
    funder.rpc().wallet_send(to, 1_000_000).await.unwrap();
    net.bitcoind.mine_burn(1).await;
    wait_balance(&net.client, 1_000_000).await;
    let src = net.dir.path().join("budget.bin");
    random_file(&src, 2 << 20);
    // Kept three periods from now: the budget counts only what is needed.
    let term = 3 * PERIOD;
    rpc.put(
        src.to_string_lossy().into(),
        None,
        Some(term),
        None,
        None,
        None,
    )
    .await
    .unwrap();
    let cs = wait_contract_states(&net.client, ContractRole::Client, ContractState::Active).await;
    let tip = net.bitcoind.height().await as u32;
    let b = rpc.wallet_budget(None).await.unwrap();
    assert_eq!(b.periods, PERIODS);
    assert_eq!(b.contracts.len(), 2);
    for line in &b.contracts {
        let c = cs
            .iter()
            .find(|c| c.contract_id == line.contract_id)
            .unwrap();
        assert_eq!(Some(line.period_sat), c.next_payment_sat);
        assert_eq!(line.next_payment_height, c.next_payment_height);
        // Periods that start before the file's term ends.
        let needed = (0..PERIODS)
            .filter(|k| c.paid_through_height + k * PERIOD < tip + term)
            .count() as u32;
        assert_eq!(line.periods, needed, "{line:?}");
        assert!(needed > 0 && needed < PERIODS);
        assert_eq!(line.total_sat, line.period_sat * needed as u64);
    }
    assert_eq!(
        b.payments_sat,
        b.contracts.iter().map(|l| l.total_sat).sum::<u64>()
    );
    assert!(b.fees_sat > 0);
    assert_eq!(b.total_sat, b.payments_sat + b.fees_sat);
    let bal = rpc.wallet_balance().await.unwrap();
    assert_eq!(b.spendable_sat, bal.confirmed_sat + bal.unconfirmed_sat);
    assert_eq!((b.shortfall_sat, b.warning.as_ref()), (0, None));

    // Send nearly everything away: the budget, and the log at the next
    // period payment, say the wallet is short.
    let keep = b.total_sat / 2;
    let burn = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080".to_string();
    rpc.wallet_send(burn, b.spendable_sat - keep).await.unwrap();
    let short = rpc.wallet_budget(None).await.unwrap();
    assert!(short.shortfall_sat > 0, "{short:?}");
    assert_eq!(short.shortfall_sat, short.total_sat - short.spendable_sat);
    assert!(short.warning.as_ref().unwrap().contains("short"));
    mine_to_renewal(
        &net,
        cs.iter().map(|c| c.paid_through_height).min().unwrap(),
    )
    .await;
    wait_for("the budget warning in the log", 60, || {
        let warned = net.client.log().contains("sat short of the next 5 periods");
        async move { warned.then_some(()) }
    })
    .await;
    let e = rpc.wallet_budget(Some(0)).await.unwrap_err();
    assert_eq!(rpc_code(&e), codes::INVALID_PARAMS);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_provider_failing_audits_is_not_paid_and_its_shards_move() {
    let mut args = period_args();
    // One failed shard is below this score; every leaf is challenged, so
    // a deleted shard is found by the first audit.
    args.extend(
        [
            "--min-audit-score",
            "0.99",
            "--audit-leaves-per-shard",
            "2048",
        ]
        .map(String::from),
    );
    let net = Net::start(NetOptions {
        providers: 5,
        redundancy: "medium".into(),
        base_price: PRICE,
        client_args: args,
        ..Default::default()
    })
    .await;
    let rpc = net.client.rpc();
    let (_events_cli, mut events) = follow_events(&net.client, true).await;
    let (file_id, digest, holders) = net.put_random("audited.bin", 2 << 20, None).await;
    assert_eq!(holders.len(), 4);
    let cs = wait_contract_states(&net.client, ContractRole::Client, ContractState::Active).await;
    let victim = holders[0].clone();
    let v = net.provider_by_peer(&victim).await;
    for shard in shard_files(&net.providers[v]) {
        std::fs::remove_file(shard).unwrap();
    }
    let report = rpc.audit(Some(file_id.clone())).await.unwrap();
    let failed = report.iter().find(|r| r.peer_id == victim).unwrap();
    assert!(failed.counts.failed > 0, "{failed:?}");

    // The next period is paid to the three that pass, not to the victim.
    let through = cs.iter().map(|c| c.paid_through_height).min().unwrap();
    mine_to_renewal(&net, through).await;
    let honest = wait_paid_through(&net.client, through + PERIOD).await;
    assert_eq!(honest.len(), 3);
    assert!(honest.iter().all(|c| c.peer_id != victim));
    let theirs = wait_contracts(
        &net.client,
        "the victim's contract to fail",
        |c| c.peer_id == victim,
        |c| c.state == ContractState::Failed,
    )
    .await;
    assert_eq!(theirs[0].payment_txids.len(), 1, "only the prepayment");
    net.bitcoind.mine_burn(1).await;
    net.wait_synced().await;
    assert_eq!(total(&net.providers[v]).await, theirs[0].paid_sat);

    // Its shard moves to the fifth provider, and the file reads back.
    let r = rpc.repair(Some(file_id.clone())).await.unwrap();
    assert_eq!(r.shards_rebuilt, 1, "{r:?}");
    let stat = rpc.stat(file_id.clone()).await.unwrap();
    assert!(!stat.providers.contains(&victim));
    assert_eq!(stat.health.good, 4);
    net.assert_get(&file_id, digest, "audited.out").await;
    // And it is never paid again, while the honest three are.
    net.bitcoind.mine_burn(PERIOD).await;
    let paid: Vec<String> = honest.iter().map(|c| c.contract_id.clone()).collect();
    wait_contracts(
        &net.client,
        "the honest three paid another period",
        |c| paid.contains(&c.contract_id),
        |c| c.paid_through_height >= through + 2 * PERIOD,
    )
    .await;
    let theirs = contracts(&net.client, ContractRole::Client)
        .await
        .into_iter()
        .find(|c| c.peer_id == victim)
        .unwrap();
    assert_eq!(
        (theirs.state, theirs.payment_txids.len()),
        (ContractState::Failed, 1)
    );

    // What happened, as subscribers heard it: the failed audit, the
    // contract ended as failed, the periods paid to the honest three only,
    // and the repair that moved the lost shard.
    let seen = read_events_until(&mut events, 60, |seen| {
        !events_of(seen, "repair_finished").is_empty()
            && events_of(seen, "contract_paid").len() >= 6
    })
    .await;
    assert!(
        events_of(&seen, "audit_failed")
            .iter()
            .any(|e| e["peer_id"] == victim && e["failed"].as_u64() > Some(0)),
        "{seen:#?}"
    );
    let ended = events_of(&seen, "contract_ended");
    assert_eq!(ended.len(), 1, "{ended:#?}");
    assert_eq!(
        (&ended[0]["peer_id"], &ended[0]["role"], &ended[0]["state"]),
        (
            &serde_json::json!(victim),
            &serde_json::json!("client"),
            &serde_json::json!("failed")
        )
    );
    let paid = events_of(&seen, "contract_paid");
    assert!(paid.iter().all(|e| e["peer_id"] != victim), "{paid:#?}");
    assert!(paid.iter().all(|e| e["amount_sat"].as_u64() > Some(0)));
    let started = events_of(&seen, "repair_started");
    let finished = events_of(&seen, "repair_finished");
    assert_eq!((started.len(), finished.len()), (1, 1), "{seen:#?}");
    assert_eq!(started[0]["file_id"], file_id);
    assert_eq!(finished[0]["shards"], 1);
    assert!(finished[0]["bytes"].as_u64() > Some(0));
    assert!(finished[0]["error"].is_null());
}

/// The client dies at each point of a period payment in turn: before the
/// broadcast, after it, and after a provider credited it but before the
/// record says so. Restarted, it finishes that payment: every period is
/// paid exactly once, and no contract lapses.
#[tokio::test(flavor = "multi_thread")]
async fn a_client_killed_during_period_payments_pays_each_period_once() {
    const POINTS: [&str; 3] = ["before-broadcast", "after-broadcast", "after-credit"];
    let mut net = Net::start(NetOptions {
        providers: 2,
        redundancy: "2/2".into(),
        base_price: PRICE,
        client_args: period_args(),
        provider_args: vec!["--grace-blocks".into(), "3".into()],
        ..Default::default()
    })
    .await;
    let (file_id, digest, _) = net.put_random("killed.bin", 2 << 20, None).await;
    let cs = wait_contract_states(&net.client, ContractRole::Client, ContractState::Active).await;
    let first = cs[0].paid_through_height;
    for (k, point) in POINTS.into_iter().enumerate() {
        let through = first + k as u32 * PERIOD;
        net.client.stop();
        net.client.env = vec![("P2PSTORE_FAILPOINT".into(), point.into())];
        net.client.start().await;
        mine_to_renewal(&net, through).await;
        net.client.wait_exit(60).await;
        assert_eq!(net.client.log().matches("failpoint hit").count(), k + 1);
        net.client.env.clear();
        net.client.start().await;
        wait_paid_through(&net.client, through + PERIOD).await;
    }
    net.bitcoind.mine_burn(1).await;
    net.wait_synced().await;
    let mine = contracts(&net.client, ContractRole::Client).await;
    for p in &net.providers {
        let theirs = wait_contract_states(p, ContractRole::Provider, ContractState::Active).await;
        assert_eq!(theirs.len(), 1);
        let c = mine
            .iter()
            .find(|c| c.contract_id == theirs[0].contract_id)
            .unwrap();
        // The prepayment and one payment per period, no more.
        assert_eq!(c.payment_txids.len(), 1 + POINTS.len(), "{c:?}");
        assert_eq!(theirs[0].payment_txids, c.payment_txids);
        assert_eq!(
            theirs[0].paid_through_height,
            first + POINTS.len() as u32 * PERIOD
        );
        wait_balance(p, c.paid_sat).await;
    }
    assert_eq!(spends(&net.client).await, 1 + POINTS.len());
    net.assert_get(&file_id, digest, "killed.out").await;
}

/// A put dies after every shard reached the provider but before the client
/// recorded the file. The provider counts those shards against the
/// allowance; before the next period the client deletes them, so the
/// period pays for what its files keep and the provider's disk holds
/// exactly that.
#[tokio::test(flavor = "multi_thread")]
async fn shards_no_file_keeps_are_deleted_before_a_period_is_paid() {
    let mut net = Net::start(NetOptions {
        providers: 1,
        base_price: PRICE,
        client_args: period_args(),
        provider_args: short_terms(),
        ..Default::default()
    })
    .await;
    let (file_id, digest, _) = net.put_random("kept.bin", 1 << 20, None).await;
    put_crashing_at(&mut net, "before-put-recorded", "orphan.bin").await;
    net.client.start().await;
    let provider = &net.providers[0];
    let disk = |p: &Daemon| -> u64 {
        shard_files(p)
            .iter()
            .map(|f| std::fs::metadata(f).unwrap().len())
            .sum()
    };
    let mine = contracts(&net.client, ContractRole::Client).await;
    assert_eq!(mine.len(), 1);
    let kept = mine[0].stored_bytes;
    assert!(kept > 0);
    assert!(
        disk(provider) > kept + (4 << 20),
        "the dead put's 5 MiB of shards landed"
    );

    mine_to_renewal(&net, mine[0].paid_through_height).await;
    let paid = wait_paid_through(&net.client, mine[0].paid_through_height + PERIOD).await;
    assert_eq!(paid[0].payment_txids.len(), mine[0].payment_txids.len() + 1);
    let theirs = contracts(provider, ContractRole::Provider).await;
    assert_eq!(
        theirs[0].stored_bytes, kept,
        "the provider books what the files keep"
    );
    assert_eq!(disk(provider), kept, "and holds nothing else");
    // The period confirms and the contract runs on.
    net.bitcoind.mine_burn(1).await;
    wait_contract_states(provider, ContractRole::Provider, ContractState::Active).await;
    net.assert_get(&file_id, digest, "kept.out").await;
}

/// The client dies right after broadcasting a revision payment on a
/// running contract, and comes back only after the quote's deadline. The
/// provider still credits the money it received: both sides book the
/// same payments, and nothing is refused.
#[tokio::test(flavor = "multi_thread")]
async fn a_revision_notice_late_past_its_deadline_is_still_credited() {
    let mut net = Net::start(NetOptions {
        providers: 1,
        ..Default::default()
    })
    .await;
    net.put_random("first.bin", 1 << 20, None).await;
    put_crashing_at(&mut net, "after-broadcast", "second.bin").await;
    // Past the provider's payment window of 6 blocks, and a collection
    // round (every 5 s) after the provider saw it: the quote has lapsed.
    net.bitcoind.mine_burn(8).await;
    net.wait_synced().await;
    tokio::time::sleep(std::time::Duration::from_secs(6)).await;
    net.client.start().await;
    let provider = &net.providers[0];
    let mine = wait_contracts(
        &net.client,
        "the late revision credited",
        |c| c.role == ContractRole::Client,
        |c| c.payment_txids.len() == 2 && c.state == ContractState::Active,
    )
    .await;
    let theirs = contracts(provider, ContractRole::Provider).await;
    assert_eq!(theirs.len(), 1);
    assert_eq!(theirs[0].payment_txids, mine[0].payment_txids);
    assert_eq!(theirs[0].paid_sat, mine[0].paid_sat);
    assert_eq!(theirs[0].allowance_bytes, mine[0].allowance_bytes);
}

/// The provider dies at each point of collecting a lapsed contract: after
/// the shards' index entries went but before their files did, and after
/// the shards went but before the contract was marked. Restarted, it
/// finishes: the contract ends as lapsed, nothing counts against its
/// quota, and it holds no shard file (files the index no longer knows are
/// set aside in quarantine).
#[tokio::test(flavor = "multi_thread")]
async fn a_provider_killed_while_collecting_finishes_on_restart() {
    for (failpoint, set_aside) in [("delete-after-index", true), ("gc-before-mark", false)] {
        let (mut net, paid_through) = abandoned_contract().await;
        let provider = &mut net.providers[0];
        provider.stop();
        provider.env = vec![("P2PSTORE_FAILPOINT".into(), failpoint.into())];
        provider.start().await;
        let tip = net.bitcoind.height().await as u32;
        net.bitcoind.mine_burn(paid_through + GRACE + 1 - tip).await;
        provider.wait_exit(60).await;
        assert!(
            provider.log().contains("failpoint hit"),
            "{failpoint}: the provider died elsewhere"
        );
        provider.env.clear();
        provider.start().await;
        let provider = &net.providers[0];
        wait_contract_states(provider, ContractRole::Provider, ContractState::Lapsed).await;
        assert_eq!(provider.rpc().status().await.unwrap().stored_bytes, 0);
        assert!(shard_files(provider).is_empty(), "{failpoint}");
        let quarantined = std::fs::read_dir(provider.datadir.join("shards/quarantine"))
            .map(|d| d.count())
            .unwrap_or(0);
        assert_eq!(
            quarantined > 0,
            set_aside,
            "{failpoint}: {quarantined} set aside"
        );
    }
}

/// A payment bitcoind refuses outright is forgotten before the put hears
/// "not paid", durably: a client killed right after finds no intent on
/// restart (so nothing is broadcast later for a put its caller was told
/// failed, and no coin stays reserved), and the put then goes through.
#[tokio::test(flavor = "multi_thread")]
async fn a_payment_bitcoind_refused_stays_forgotten_after_a_crash() {
    // bitcoind relays nothing under 3 sat/vB; the client pays 2.
    let mut net = Net::start(NetOptions {
        providers: 1,
        bitcoind_args: vec!["-minrelaytxfee=0.00003".into()],
        client_args: vec!["--fee-rate-sat-vb".into(), "2".into()],
        ..Default::default()
    })
    .await;
    put_crashing_at(&mut net, "after-intent-removed", "refused.bin").await;
    // The point sits only on the path where bitcoind refused the payment.
    assert!(
        net.client.log().contains("failpoint hit"),
        "the client died elsewhere"
    );

    let db = p2pstored::db::open(&net.client.datadir.join("db")).unwrap();
    let intents = db.open_tree(p2pstored::db::trees::PAYMENTS).unwrap();
    assert_eq!(intents.len(), 0, "the refused payment's intent is gone");
    drop(intents);
    drop(db);

    let at = net
        .client
        .args
        .iter()
        .position(|a| a == "--fee-rate-sat-vb")
        .unwrap();
    net.client.args[at + 1] = "5".into();
    net.client.start().await;
    let (file_id, digest, _) = net.put_random("paid.bin", 300_000, None).await;
    net.assert_get(&file_id, digest, "after the refusal").await;
    assert!(
        !net.client.log().contains("rebroadcast failed"),
        "no refused payment came back"
    );
}
