//! A hostile peer speaking the wire protocol directly to a real provider:
//! uploads outside a contract, shards whose bytes do not match their id,
//! shards over the limit, payment notices that pay nothing, payments
//! double-spent out of the mempool, and floods of proposals.

use libp2p::{Multiaddr, PeerId};
use p2pstore_rpc::{ContractState, P2pstoreApiClient};
use p2pstore_tests::*;
use p2pstored::ids::{ContractId, ShardId};
use p2pstored::network::{self, PeerError};
use p2pstored::protocol::*;

/// The kind of a provider's refusal; panics on anything else.
fn refusal<T: std::fmt::Debug>(res: Result<T, PeerError>) -> WireErrorKind {
    match res {
        Err(PeerError::Refused(e)) => e.kind,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// A network of one provider, the provider's id, and an attacker that
/// knows where it listens.
async fn one_provider_and_an_attacker() -> (Net, PeerId, network::Client) {
    let (net, provider, _, evil) = one_provider_and_a_wire_peer().await;
    (net, provider, evil)
}

fn proposal(contract_id: ContractId, add_bytes: u64, tip: u32) -> Proposal {
    Proposal {
        contract_id,
        add_bytes,
        price_sat_per_gib_month: 1001,
        period_blocks: 144,
        term_end_height: tip + 4320,
    }
}

/// Forms a contract of the attacker's for `bytes`, paid from the honest
/// client's wallet: a hostile peer with coins.
async fn paid_contract(
    net: &Net,
    evil: &network::Client,
    provider: PeerId,
    id: ContractId,
    bytes: u64,
) {
    let tip = net.bitcoind.height().await as u32;
    let quote = evil
        .propose(provider, proposal(id, bytes, tip))
        .await
        .unwrap();
    let address = quote.payout_address.assume_checked().to_string();
    let txid = net
        .client
        .rpc()
        .wallet_send(address.clone(), quote.amount_sat)
        .await
        .unwrap()
        .txid;
    let tx = net
        .bitcoind
        .call("getrawtransaction", serde_json::json!([txid, true]))
        .await
        .unwrap();
    let vout = tx["vout"]
        .as_array()
        .unwrap()
        .iter()
        .position(|o| o["scriptPubKey"]["address"] == address.as_str())
        .unwrap() as u32;
    let notice = PaymentNotice {
        contract_id: id,
        txid: txid.parse().unwrap(),
        vout,
        purpose: Purpose::Revision(quote.revision_id),
    };
    evil.payment_notice(provider, notice).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn provider_rejects_bad_shards_and_keeps_working() {
    let (net, provider, evil) = one_provider_and_an_attacker().await;

    // No contract, no upload.
    let data = vec![1u8; 1000];
    let resp = evil
        .store(provider, ContractId::default(), ShardId::of(&data), data)
        .await;
    assert!(matches!(resp, Err(PeerError::Refused(e)) if e.kind == WireErrorKind::UnknownContract));

    // A quote alone allows no upload: bytes are stored only against
    // paid allowance.
    let tip = net.bitcoind.height().await as u32;
    let unpaid = ContractId::from_bytes([6u8; 32]);
    evil.propose(provider, proposal(unpaid, 10_000, tip))
        .await
        .unwrap();
    let data = vec![2u8; 1000];
    let resp = evil.store(provider, unpaid, ShardId::of(&data), data).await;
    assert_eq!(refusal(resp), WireErrorKind::UnknownContract);
    // More than the provider has is refused at the quote.
    assert_eq!(
        refusal(evil.propose(provider, proposal(unpaid, 1 << 40, tip)).await),
        WireErrorKind::NoSpace
    );

    // A paid contract, then bytes that do not hash to their id.
    let contract_id = ContractId::from_bytes([7u8; 32]);
    paid_contract(&net, &evil, provider, contract_id, 3000).await;
    let claimed = ShardId::from_bytes([9u8; 32]);
    let resp = evil
        .store(provider, contract_id, claimed, vec![1u8; 1000])
        .await;
    assert_eq!(refusal(resp), WireErrorKind::HashMismatch);
    // Past the paid allowance: refused.
    let data = vec![4u8; 3001];
    let resp = evil
        .store(provider, contract_id, ShardId::of(&data), data)
        .await;
    assert_eq!(refusal(resp), WireErrorKind::OverAllowance);

    // Far over the message limit: the provider drops the stream unread.
    let data = vec![3u8; 3 * MAX_SHARD_BYTES as usize];
    let shard_id = ShardId::of(&data);
    let res = evil.store(provider, contract_id, shard_id, data).await;
    assert!(res.is_err(), "oversized message was accepted");

    // Payment notices: for a contract that does not exist, and with a txid
    // that does not pay the contract's address.
    let no_tx = "00".repeat(32).parse().unwrap();
    let period = |contract_id| PaymentNotice {
        contract_id,
        txid: no_tx,
        vout: 0,
        purpose: Purpose::Period {
            allowance_bytes: 3000,
            paid_through_height: 0,
            term_end_height: 0,
        },
    };
    let notice = evil
        .payment_notice(provider, period(ContractId::from_bytes([5; 32])))
        .await;
    assert_eq!(refusal(notice), WireErrorKind::UnknownContract);
    let unrelated = net
        .client
        .rpc()
        .wallet_send(
            net.client.rpc().wallet_address().await.unwrap().address,
            50_000,
        )
        .await
        .unwrap();
    let tip = net.bitcoind.height().await as u32;
    let quote = evil
        .propose(provider, proposal(unpaid, 10_000, tip))
        .await
        .unwrap();
    let notice = PaymentNotice {
        contract_id: unpaid,
        txid: unrelated.txid.parse().unwrap(),
        vout: 0,
        purpose: Purpose::Revision(quote.revision_id),
    };
    let notice = evil.payment_notice(provider, notice).await;
    assert_eq!(refusal(notice), WireErrorKind::PaymentNotFound);
    let contracts = net.providers[0].rpc().contracts().await.unwrap();
    assert!(
        !contracts
            .iter()
            .any(|c| c.contract_id == unpaid.to_string())
    );
    assert_eq!(
        contracts
            .iter()
            .find(|c| c.contract_id == contract_id.to_string())
            .unwrap()
            .state,
        ContractState::Provisional
    );

    // Nothing was stored, and the provider still serves honest clients.
    assert_eq!(
        net.providers[0].rpc().status().await.unwrap().stored_bytes,
        0
    );
    let src = net.dir.path().join("after.bin");
    let digest = random_file(&src, 5 << 20);
    let rpc = net.client.rpc();
    let put = rpc
        .put(src.to_string_lossy().into(), None, None, None, None, None)
        .await
        .unwrap();
    let out = net.dir.path().join("after.out");
    rpc.get(put.file_id, out.to_string_lossy().into(), None)
        .await
        .unwrap();
    assert_eq!(file_sha256(&out), digest);

    // A peer that did not store a shard cannot fetch it.
    let any_shard = shard_files(&net.providers[0]);
    let name = any_shard.first().unwrap().file_name().unwrap();
    let id: ShardId = name.to_string_lossy().parse().unwrap();
    assert_eq!(
        refusal(evil.fetch(provider, id).await),
        WireErrorKind::NotFound,
        "a stranger fetched a shard"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn audits_are_bounded_owned_and_throttled() {
    let (net, provider, evil) = one_provider_and_an_attacker().await;
    // An honest client's file at the same provider.
    let (file_id, _, _) = net.put_random("honest.bin", 100_000, None).await;
    let theirs: ContractId = net.client.rpc().contracts().await.unwrap()[0]
        .contract_id
        .parse()
        .unwrap();

    // The attacker's own (paid) contract for one real shard of 4 leaves.
    let data = vec![5u8; 3 * 4096 + 10];
    let size = data.len() as u64;
    let id = ShardId::of(&data);
    let mine = ContractId::from_bytes([3u8; 32]);
    paid_contract(&net, &evil, provider, mine, size).await;
    evil.store(provider, mine, id, data).await.unwrap();
    let ch = |leaf| Challenge { shard_id: id, leaf };

    // Its owner's audit is answered with proofs that verify.
    let answers = evil
        .audit(provider, mine, vec![ch(0), ch(3)])
        .await
        .unwrap();
    for (leaf, answer) in [0u64, 3].into_iter().zip(&answers) {
        match answer {
            AuditAnswer::Proof { leaf: bytes, path } => {
                assert!(p2pstored::merkle::verify(
                    id.as_bytes(),
                    size,
                    leaf,
                    bytes,
                    path
                ))
            }
            AuditAnswer::Missing => panic!("leaf {leaf} reported missing"),
        }
    }
    // A shard that is not in the contract is missing, not served.
    let other = evil
        .audit(
            provider,
            mine,
            vec![Challenge {
                shard_id: ShardId::from_bytes([1; 32]),
                leaf: 0,
            }],
        )
        .await
        .unwrap();
    assert_eq!(other, vec![AuditAnswer::Missing]);

    // 10,000 challenges, duplicates, a leaf past the end, someone else's
    // contract: each refused with its own error.
    let many: Vec<Challenge> = (0..10_000u32)
        .map(|i| {
            let mut b = [0u8; 32];
            b[..4].copy_from_slice(&i.to_be_bytes());
            Challenge {
                shard_id: ShardId::from_bytes(b),
                leaf: 0,
            }
        })
        .collect();
    let e = refusal(evil.audit(provider, mine, many).await);
    assert_eq!(e, WireErrorKind::TooLarge);
    let dup = evil.audit(provider, mine, vec![ch(1), ch(2), ch(1)]).await;
    assert_eq!(refusal(dup), WireErrorKind::BadRequest);
    assert_eq!(
        refusal(evil.audit(provider, mine, vec![ch(4)]).await),
        WireErrorKind::BadRequest
    );
    assert_eq!(
        refusal(evil.audit(provider, theirs, vec![ch(0)]).await),
        WireErrorKind::UnknownContract
    );

    // A flood from the attacker is refused past its budget, while the
    // honest client's audit, sent in the middle of it, is answered.
    let wave = || async {
        futures::future::join_all((0..64).map(|_| evil.audit(provider, mine, vec![ch(0)]))).await
    };
    let mut results = wave().await;
    let honest = async { net.client.rpc().audit(Some(file_id.clone())).await.unwrap() };
    let (more, report) = tokio::join!(async { [wave().await, wave().await].concat() }, honest);
    results.extend(more);
    let (mut ok, mut limited) = (0, 0);
    for r in results {
        match r {
            Ok(_) => ok += 1,
            Err(PeerError::Refused(e)) if e.kind == WireErrorKind::RateLimited => limited += 1,
            Err(e) => panic!("a flooded audit failed otherwise: {e}"),
        }
    }
    // The burst (less the audits above) and a few seconds' refill at 5/s.
    assert!(
        ok <= AUDIT_BURST.get() as usize + 20,
        "{ok} audits answered"
    );
    assert!(limited >= 192 - 52, "only {limited} of 192 refused");
    assert_eq!(report.len(), 1);
    assert!(
        report[0].counts.passed > 0
            && report[0].counts.failed == 0
            && report[0].counts.unknown == 0,
        "{report:?}"
    );
}

/// A wallet of the test's own, outside any daemon.
fn own_wallet(net: &Net, seed: u8, dir: &std::path::Path) -> p2pstored::wallet::WalletService {
    let db = sled::open(dir).unwrap();
    p2pstored::wallet::WalletService::open(
        &db,
        &p2pstored::testutil::seed(seed),
        bdk_wallet::bitcoin::Network::Regtest,
        0,
        net.bitcoind.wallet_config(),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_double_spent_payment_never_activates_a_contract() {
    let (net, provider, evil) = one_provider_and_an_attacker().await;
    // Two copies of one wallet that holds a single coin: one pays the
    // provider, the other spends the same coin elsewhere at a higher fee.
    let payer = own_wallet(&net, 21, &net.dir.path().join("payer"));
    let twin = own_wallet(&net, 21, &net.dir.path().join("twin"));
    let address = payer.new_address().unwrap();
    net.client
        .rpc()
        .wallet_send(address.to_string(), 200_000)
        .await
        .unwrap();
    net.bitcoind.mine_burn(1).await;
    payer.sync_now().await.unwrap();
    twin.sync_now().await.unwrap();
    assert_eq!(payer.balance().confirmed_sat, 200_000);

    let tip = net.bitcoind.height().await as u32;
    let id = ContractId::from_bytes([11u8; 32]);
    let quote = evil
        .propose(provider, proposal(id, 10_000, tip))
        .await
        .unwrap();
    let to = quote.payout_address.assume_checked();
    let tx = payer
        .build_signed_tx(&[(to.clone(), quote.amount_sat)], Some(2))
        .unwrap();
    payer.broadcast(&tx).await.unwrap();
    let vout = tx
        .output
        .iter()
        .position(|o| o.script_pubkey == to.script_pubkey())
        .unwrap() as u32;
    let notice = PaymentNotice {
        contract_id: id,
        txid: tx.compute_txid(),
        vout,
        purpose: Purpose::Revision(quote.revision_id),
    };
    evil.payment_notice(provider, notice).await.unwrap();
    let state = |net: &Net| {
        let rpc = net.providers[0].rpc();
        async move {
            rpc.contracts()
                .await
                .unwrap()
                .into_iter()
                .find(|c| c.contract_id == id.to_string())
                .map(|c| c.state)
        }
    };
    // Provisional: uploads may go ahead, but it is not active.
    assert_eq!(state(&net).await, Some(ContractState::Provisional));
    let data = vec![5u8; 2000];
    evil.store(provider, id, ShardId::of(&data), data)
        .await
        .unwrap();
    assert!(net.providers[0].rpc().status().await.unwrap().stored_bytes > 0);

    // The twin spends the coin elsewhere, and that is what gets mined.
    let foreign: bdk_wallet::bitcoin::Address = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"
        .parse::<bdk_wallet::bitcoin::Address<_>>()
        .unwrap()
        .assume_checked();
    let spend = twin
        .build_signed_tx(&[(foreign, 150_000)], Some(20))
        .unwrap();
    assert_eq!(spend.input[0].previous_output, tx.input[0].previous_output);
    twin.broadcast(&spend).await.unwrap();
    net.bitcoind.mine_burn(1).await;
    let ended = wait_for("the contract to be dropped", 60, || {
        let net = &net;
        async move {
            let s = state(net).await?;
            (s != ContractState::Provisional).then_some(s)
        }
    })
    .await;
    assert_eq!(ended, ContractState::Dropped, "it must never become active");
    assert_eq!(
        net.providers[0].rpc().status().await.unwrap().stored_bytes,
        0
    );
    let data = vec![6u8; 1000];
    assert_eq!(
        refusal(evil.store(provider, id, ShardId::of(&data), data).await),
        WireErrorKind::UnknownContract
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flood_of_proposals_from_fresh_peers_costs_bounded_records() {
    use p2pstored::provider::{MAX_QUOTES, MAX_QUOTES_PER_PEER};
    let (net, provider, first) = one_provider_and_an_attacker().await;
    let addr: Multiaddr = net.providers[0].p2p_addr().parse().unwrap();
    let tip = net.bitcoind.height().await as u32;
    let mut n = 0u8;
    let mut next_id = || {
        n = n.wrapping_add(1);
        let mut b = [0xF0u8; 32];
        b[0] = n;
        b
    };
    // One peer: capped per peer.
    for _ in 0..MAX_QUOTES_PER_PEER {
        let id = ContractId::from_bytes(next_id());
        first
            .propose(provider, proposal(id, 1 << 20, tip))
            .await
            .unwrap();
    }
    let id = ContractId::from_bytes(next_id());
    assert_eq!(
        refusal(first.propose(provider, proposal(id, 1 << 20, tip)).await),
        WireErrorKind::RateLimited
    );
    // Fresh peer ids until the provider holds more quotes than its cap:
    // the oldest are evicted, never more are kept.
    let peers = MAX_QUOTES / MAX_QUOTES_PER_PEER + 2;
    let mut count = 0u32;
    for _ in 0..peers {
        let evil = wire_peer(&net.bootstrap_addr).await;
        evil.add_addresses(provider, vec![addr.clone()]).await;
        let sends = (0..MAX_QUOTES_PER_PEER).map(|_| {
            count += 1;
            let mut b = [0u8; 32];
            b[..4].copy_from_slice(&count.to_be_bytes());
            let p = proposal(ContractId::from_bytes(b), 1 << 20, tip);
            let evil = evil.clone();
            async move {
                // Well over a hundred peers from 127.0.0.1 can meet the
                // provider's cap of pending connections per IP: a refused
                // dial is tried again, as a flooder would.
                let mut last = None;
                for _ in 0..10 {
                    match evil.propose(provider, p.clone()).await {
                        Err(PeerError::Unreachable(e)) => {
                            last = Some(PeerError::Unreachable(e));
                            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
                        }
                        r => return r,
                    }
                }
                Err(last.expect("tried"))
            }
        });
        for r in futures::future::join_all(sends).await {
            r.unwrap();
        }
    }
    let st = net.providers[0].rpc().status().await.unwrap();
    assert_eq!(st.pending_quotes, MAX_QUOTES as u64);
    assert_eq!(st.stored_bytes, 0);
    assert!(shard_files(&net.providers[0]).is_empty());
    // Evicted first: the lone peer's quotes are gone, and paying one now
    // buys nothing.
    assert!(net.providers[0].rpc().contracts().await.unwrap().is_empty());

    // An honest client still puts and gets.
    let (file_id, digest, _) = net.put_random("honest.bin", 1 << 20, None).await;
    net.assert_get(&file_id, digest, "honest.out").await;
    assert!(
        net.providers[0]
            .rpc()
            .status()
            .await
            .unwrap()
            .pending_quotes
            <= MAX_QUOTES as u64
    );
}
