//! Wallet behaviour against a real regtest bitcoind (see `testutil`): funds
//! arrive, move between wallets, survive a restart, and a dead bitcoind is
//! reported rather than fatal.

use std::str::FromStr;
use std::time::{Duration, Instant};

use bdk_wallet::bitcoin::{Address, Network, Txid};

use super::{WalletError, WalletService};
use crate::testutil::{self, AuthMode, Bitcoind};

const COIN: u64 = 100_000_000;
const SUBSIDY: u64 = 50 * COIN;
/// BIP173's regtest P2WPKH vector: a valid address nobody here owns.
const FOREIGN_ADDR: &str = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080";

fn open(db: &sled::Db, seed: u8, node: &Bitcoind) -> WalletService {
    open_from(db, seed, 0, node)
}

fn open_from(db: &sled::Db, seed: u8, birthday: u32, node: &Bitcoind) -> WalletService {
    WalletService::open(
        db,
        &testutil::seed(seed),
        Network::Regtest,
        birthday,
        node.config(Duration::from_millis(200)),
    )
    .expect("open wallet")
}

fn temp_db() -> (tempfile::TempDir, sled::Db) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = sled::open(dir.path().join("db")).expect("sled");
    (dir, db)
}

fn vout_paying(node: &Bitcoind, txid: &Txid, address: &Address) -> u32 {
    let tx = node.raw_tx(txid);
    let index = tx
        .output
        .iter()
        .position(|o| o.script_pubkey == address.script_pubkey())
        .expect("tx pays the address");
    u32::try_from(index).expect("small index")
}

fn foreign() -> Address {
    Address::from_str(FOREIGN_ADDR)
        .expect("address")
        .require_network(Network::Regtest)
        .expect("regtest")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pay_receive_confirm_and_survive_restart() {
    let node = Bitcoind::start(AuthMode::Cookie);
    let (dir1, db1) = temp_db();
    let (_dir2, db2) = temp_db();
    let w1 = open(&db1, 1, &node);
    let w2 = open(&db2, 2, &node);

    // Funding: 101 coinbases to w1. bdk counts a coinbase as mature once it
    // is spendable in the *next* block, so at tip 101 the coinbases of
    // blocks 1 and 2 are spendable (Bitcoin Core's wallet would say one).
    let mining_addr = w1.new_address().expect("address");
    node.mine(101, &mining_addr);
    w1.sync_now().await.expect("sync w1");
    assert_eq!(w1.tip_height(), 101);
    let b = w1.balance();
    assert_eq!(b.confirmed_sat, 2 * SUBSIDY, "{b:?}");
    assert_eq!(b.immature_sat, 99 * SUBSIDY, "{b:?}");
    assert_eq!(b.unconfirmed_sat, 0);
    assert!(w1.is_mine_address(&mining_addr));
    let status = w1.sync_status();
    assert_eq!(status.tip_height, 101);
    assert!(status.last_sync_unix.is_some() && status.last_error.is_none());

    // w1 -> w2, seen by w2 in the mempool.
    let addr2 = w2.new_address().expect("address");
    assert!(w2.is_mine_address(&addr2));
    assert!(!w1.is_mine_address(&addr2));
    let txid = w1
        .send(&addr2.to_string(), COIN, Some(5))
        .await
        .expect("send");
    assert!(node.in_mempool(&txid));
    w2.sync_now().await.expect("sync w2");
    assert_eq!(w2.balance().unconfirmed_sat, COIN);
    assert_eq!(w2.balance().confirmed_sat, 0);
    let vout = vout_paying(&node, &txid, &addr2);
    assert_eq!(w2.received_at(txid, vout, &addr2), Some((COIN, None)));
    assert_eq!(w2.received_at(txid, vout + 1, &addr2), None, "wrong vout");
    assert_eq!(
        w2.received_at(txid, vout, &foreign()),
        None,
        "not our address"
    );
    assert_eq!(w1.received_at(txid, vout, &addr2), None, "not w1's address");

    let sent = w1.find_tx(txid).expect("w1 knows its own tx");
    assert_eq!(sent.confirmations, 0);
    assert_eq!(sent.height, None);
    let fee = sent.fee_sat.expect("fee of our own tx is known");
    assert!(fee > 0);
    assert_eq!(sent.sent_sat - sent.received_sat, COIN + fee);
    let incoming = w2.find_tx(txid).expect("w2 sees the payment");
    assert_eq!(incoming.received_sat, COIN);
    assert_eq!(incoming.fee_sat, None, "inputs are not w2's");

    // One block later it is confirmed for both.
    node.mine(1, &foreign());
    w1.sync_now().await.expect("sync w1");
    w2.sync_now().await.expect("sync w2");
    assert_eq!(w2.balance().confirmed_sat, COIN);
    assert_eq!(w2.balance().unconfirmed_sat, 0);
    assert_eq!(w2.received_at(txid, vout, &addr2), Some((COIN, Some(102))));
    let confirmed = w1.find_tx(txid).expect("tx");
    assert_eq!((confirmed.confirmations, confirmed.height), (1, Some(102)));

    // Two outputs, one transaction.
    let a = w2.new_address().expect("address");
    let c = w2.new_address().expect("address");
    let txid2 = w1
        .pay_many(&[(a.clone(), 20_000_000), (c.clone(), 30_000_000)], Some(2))
        .await
        .expect("pay_many");
    let tx2 = node.raw_tx(&txid2);
    assert!(
        tx2.output
            .iter()
            .any(|o| o.script_pubkey == a.script_pubkey() && o.value.to_sat() == 20_000_000)
    );
    assert!(
        tx2.output
            .iter()
            .any(|o| o.script_pubkey == c.script_pubkey() && o.value.to_sat() == 30_000_000)
    );
    w2.sync_now().await.expect("sync w2");
    assert_eq!(w2.balance().unconfirmed_sat, 50_000_000);
    assert_eq!(w2.txs().len(), 2);

    // Too much: the error carries bdk's numbers.
    match w2.send(&mining_addr.to_string(), 100 * COIN, Some(2)).await {
        Err(WalletError::InsufficientFunds {
            required_sat,
            available_sat,
        }) => {
            assert!(required_sat >= 100 * COIN, "{required_sat}");
            assert!(
                available_sat > 0 && available_sat <= COIN + 50_000_000,
                "{available_sat}"
            );
        }
        other => panic!("expected InsufficientFunds, got {other:?}"),
    }
    assert!(matches!(
        w1.send(&addr2.to_string(), 100, Some(2)).await,
        Err(WalletError::AmountBelowDust)
    ));
    // A mainnet address on a regtest wallet.
    assert!(matches!(
        w1.send("bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4", COIN, Some(2))
            .await,
        Err(WalletError::InvalidAddress(_))
    ));
    assert!(matches!(
        w1.send("not an address", COIN, Some(2)).await,
        Err(WalletError::InvalidAddress(_))
    ));

    // Restart: same balance, same transactions, same next address index,
    // all before talking to bitcoind again.
    let balance = w1.balance();
    let next_index = w1.next_address_index();
    let txs = w1.txs();
    let tip = w1.tip_height();
    drop(w1);
    drop(db1);
    let db1 = sled::open(dir1.path().join("db")).expect("reopen sled");
    let w1 = open(&db1, 1, &node);
    assert_eq!(w1.balance(), balance);
    assert_eq!(w1.next_address_index(), next_index);
    assert_eq!(w1.txs(), txs);
    assert_eq!(w1.tip_height(), tip);
    w1.sync_now().await.expect("sync after reopen");
    assert_eq!(w1.balance(), balance);
    assert_eq!(w1.next_address_index(), next_index);

    // The stored wallet refuses a different seed or network.
    let wrong_seed = WalletService::open(
        &db1,
        &testutil::seed(9),
        Network::Regtest,
        0,
        node.config(Duration::from_secs(1)),
    );
    match wrong_seed {
        Err(WalletError::Load(msg)) => assert!(msg.contains("different seed"), "{msg}"),
        other => panic!("expected Load error, got {other:?}"),
    }
    let wrong_net = WalletService::open(
        &db1,
        &testutil::seed(1),
        Network::Signet,
        0,
        node.config(Duration::from_secs(1)),
    );
    match wrong_net {
        Err(WalletError::Load(msg)) => assert!(msg.contains("network"), "{msg}"),
        other => panic!("expected Load error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn build_reserve_cancel_and_rebroadcast() {
    let node = Bitcoind::start(AuthMode::UserPass);
    let (_dir, db) = temp_db();
    let w = open(&db, 3, &node);
    node.mine(101, &w.new_address().expect("address"));
    w.sync_now().await.expect("sync");
    // Two spendable 50 BTC coinbases (see the other test).
    let out = [(foreign(), 30 * COIN)];

    let tx1 = w.build_signed_tx(&out, Some(3)).expect("tx1");
    let tx2 = w.build_signed_tx(&out, Some(3)).expect("tx2");
    let inputs = |tx: &bdk_wallet::bitcoin::Transaction| {
        tx.input
            .iter()
            .map(|i| i.previous_output)
            .collect::<Vec<_>>()
    };
    assert!(
        inputs(&tx1).iter().all(|op| !inputs(&tx2).contains(op)),
        "a signed, unbroadcast tx must reserve its inputs"
    );
    match w.build_signed_tx(&out, Some(3)) {
        Err(WalletError::InsufficientFunds { .. }) => {}
        other => panic!("both coins are reserved, got {other:?}"),
    }
    w.cancel_tx(&tx2);
    let tx3 = w
        .build_signed_tx(&out, Some(3))
        .expect("coins released by cancel");
    w.cancel_tx(&tx3);

    // Broadcasting is idempotent: mempool, then chain.
    let txid = w.broadcast(&tx1).await.expect("broadcast");
    assert_eq!(txid, tx1.compute_txid());
    assert!(node.in_mempool(&txid));
    assert_eq!(w.broadcast(&tx1).await.expect("again"), txid);
    let pending = w.find_tx(txid).expect("applied as unconfirmed right away");
    assert_eq!(pending.confirmations, 0);
    assert!(pending.fee_sat.is_some_and(|f| f > 0));

    node.mine(1, &foreign());
    w.sync_now().await.expect("sync");
    assert_eq!(w.find_tx(txid).expect("tx").height, Some(102));
    assert_eq!(w.broadcast(&tx1).await.expect("already mined"), txid);
    assert!(w.txs().iter().any(|t| t.txid == txid.to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_sync_follows_the_chain() {
    let node = Bitcoind::start(AuthMode::UserPass);
    let (_dir, db) = temp_db();
    let w = open(&db, 4, &node);
    let handle = w.spawn_sync();

    let addr = w.new_address().expect("address");
    node.mine(5, &addr);
    let deadline = Instant::now() + Duration::from_secs(20);
    // The tip moves block by block inside a sync round; the round's status
    // is written when it ends, so wait for both.
    while w.tip_height() < 5 || w.sync_status().last_sync_unix.is_none() {
        assert!(
            Instant::now() < deadline,
            "background sync did not catch up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(w.balance().immature_sat, 5 * SUBSIDY);
    let status = w.sync_status();
    assert!(status.last_sync_unix.is_some());
    assert_eq!(status.last_error, None);
    assert_eq!(w.check_bitcoind().await.expect("reachable"), node.height());

    w.shutdown();
    tokio::time::timeout(Duration::from_secs(10), handle)
        .await
        .expect("sync task stops on shutdown")
        .expect("sync task did not panic");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_bitcoind_is_reported_not_fatal() {
    let (_dir, db) = temp_db();
    let config = testutil::unreachable_config();
    assert!(
        !format!("{config:?}").contains("nothing"),
        "password in Debug"
    );
    let w = WalletService::open(&db, &testutil::seed(5), Network::Regtest, 0, config)
        .expect("open must not need bitcoind");
    let addr = w.new_address().expect("addresses are local");

    match w.sync_now().await {
        Err(WalletError::BitcoindUnreachable(msg)) => {
            assert!(!msg.contains("nothing"), "password leaked: {msg}");
        }
        other => panic!("expected BitcoindUnreachable, got {other:?}"),
    }
    let status = w.sync_status();
    assert!(status.last_error.is_some());
    assert_eq!(status.consecutive_failures, 1);
    assert_eq!(status.last_sync_unix, None);
    assert!(matches!(
        w.check_bitcoind().await,
        Err(WalletError::BitcoindUnreachable(_))
    ));
    // Without a fee rate, paying asks bitcoind first and fails fast.
    assert!(matches!(
        w.send(&addr.to_string(), COIN, None).await,
        Err(WalletError::BitcoindUnreachable(_))
    ));

    // The background loop keeps retrying (with backoff) and stops cleanly.
    let handle = w.spawn_sync();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(w.sync_status().consecutive_failures >= 2);
    w.shutdown();
    tokio::time::timeout(Duration::from_secs(10), handle)
        .await
        .expect("sync task stops on shutdown")
        .expect("sync task did not panic");

    // A missing cookie file is "unreachable" too, not a crash.
    let (_dir2, db2) = temp_db();
    let cookie = super::BitcoindConfig {
        url: format!("http://127.0.0.1:{}", testutil::free_port()),
        auth: super::BitcoindAuth::Cookie(_dir2.path().join("no/.cookie")),
        poll_interval: Duration::from_secs(1),
    };
    let w2 =
        WalletService::open(&db2, &testutil::seed(6), Network::Regtest, 0, cookie).expect("open");
    assert!(matches!(
        w2.sync_now().await,
        Err(WalletError::BitcoindUnreachable(_))
    ));
}

/// bitcoind has no fee estimate on a fresh chain; after blocks of
/// transactions paying a steady rate it estimates that rate, and the
/// client's policy takes it over the fallback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fee_estimate_follows_fee_history() {
    const RATE: u64 = 12;
    let node = Bitcoind::start(AuthMode::UserPass);
    let (_dir, db) = temp_db();
    let w = open(&db, 4, &node);
    let policy = crate::client::FeePolicy {
        fixed_rate: None,
        target_blocks: 2,
        bump_after_blocks: 6,
        max_rate: 100,
    };
    let mine_to = w.new_address().expect("address");
    node.mine(130, &mine_to);
    w.sync_now().await.expect("sync");
    let none = w
        .estimate_fee_rate(policy.target_blocks)
        .await
        .expect("rpc");
    assert_eq!(none, None, "no fee history yet");
    assert_eq!(
        policy.choose(Ok(none)),
        (
            super::DEFAULT_FEE_RATE_SAT_VB,
            crate::client::FeeSource::Fallback
        )
    );

    // A transaction a block, each spending a confirmed coin, so bitcoind
    // tracks every one of them.
    let mut estimate = None;
    for _ in 0..40 {
        let tx = w
            .build_signed_tx(&[(foreign(), COIN)], Some(RATE))
            .expect("tx");
        w.broadcast(&tx).await.expect("broadcast");
        node.mine(1, &mine_to);
        w.sync_now().await.expect("sync");
        estimate = w
            .estimate_fee_rate(policy.target_blocks)
            .await
            .expect("rpc");
        if estimate.is_some() {
            break;
        }
    }
    let rate = estimate.expect("an estimate after 40 blocks of history");
    assert!((RATE..=RATE + 1).contains(&rate), "estimated {rate} sat/vB");
    assert_eq!(
        policy.choose(Ok(Some(rate))),
        (rate, crate::client::FeeSource::Estimate)
    );
    // The ceiling holds whatever bitcoind says.
    assert_eq!(policy.choose(Ok(Some(5000))).0, 100);
}

/// A wallet built from scratch fetches no block below its birthday: coins
/// received there stay unseen, while a wallet of the same seed born at
/// or before them finds them. So a restore given the birthday `init`
/// printed skips the chain's past and still misses nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_wallet_scans_from_its_birthday() {
    let node = Bitcoind::start(AuthMode::Cookie);
    let (_dir, db) = temp_db();
    let first = open(&db, 7, &node);
    let addr = first.new_address().expect("address");
    node.mine(1, &foreign());
    node.mine(1, &addr);
    node.mine(20, &foreign());

    let scanned_from = |w: &WalletService| {
        let state = w.inner.lock();
        let heights: Vec<u32> = state
            .wallet
            .latest_checkpoint()
            .iter()
            .map(|cp| cp.height())
            .filter(|h| *h > 0)
            .collect();
        heights.into_iter().min()
    };
    for (birthday, sees) in [(3, false), (2, true), (0, true)] {
        let (_dir, db) = temp_db();
        let w = open_from(&db, 7, birthday, &node);
        assert_eq!(w.birthday_height(), birthday);
        w.sync_now().await.expect("sync");
        assert_eq!(w.tip_height(), 22);
        // bdk links the first block fetched to its parent by hash, so the
        // parent's height has a checkpoint though its block was not read.
        assert_eq!(
            scanned_from(&w),
            Some(birthday.saturating_sub(1).max(1)),
            "birthday {birthday}"
        );
        let immature = w.balance().immature_sat;
        assert_eq!(
            immature,
            if sees { SUBSIDY } else { 0 },
            "birthday {birthday}"
        );
    }
}
