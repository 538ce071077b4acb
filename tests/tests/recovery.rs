//! Account recovery from the mnemonic alone, with real daemons and
//! bitcoind: the client's index is backed up in the network, its signed
//! pointer found in the DHT, and a client whose whole data dir is gone
//! comes back with every file and contract, and pays on as before. A
//! pointer forged by another key, or an older one replayed, never wins.

use std::collections::BTreeSet;
use std::time::Duration;

use futures::StreamExt;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{PeerId, identify, kad};
use p2pstore_rpc::{ContractRole, P2pstoreApiClient};
use p2pstore_tests::*;
use p2pstored::pointer::{self, IndexPointer};

const PERIOD: u32 = 10;
const RENEW_BEFORE: u32 = 3;
const PRICE: u64 = 1_000_000_000;

fn options() -> NetOptions {
    NetOptions {
        providers: 4,
        redundancy: "medium".into(),
        distinct_prices: false,
        base_price: PRICE,
        client_args: period_args(PERIOD, RENEW_BEFORE),
        index_backup_secs: 1,
        ..Default::default()
    }
}

/// Waits until the client has backed up everything it holds, in a backup
/// newer than `after`; returns that backup's sequence number.
async fn backed_up(d: &Daemon, after: u64) -> u64 {
    let rpc = d.rpc();
    wait_for(&format!("an index backup after #{after}"), 120, || {
        let rpc = rpc.clone();
        async move {
            let st = rpc.status().await.ok()?;
            st.index_seq.filter(|s| *s > after && !st.index_pending)
        }
    })
    .await
}

/// Stops the client for good and deletes its whole data dir.
fn lose_the_client(net: &mut Net) {
    net.client.kill();
    std::fs::remove_dir_all(&net.client.datadir).unwrap();
}

/// A fresh daemon with the client's flags, restored from the client's
/// mnemonic through the CLI; returns it and the CLI's JSON answer.
async fn restore(net: &Net, name: &str) -> (Daemon, serde_json::Value) {
    let mut d = Daemon::new(name, net.dir.path(), net.client.args.clone());
    d.start_with(true).await;
    let phrase = d.datadir.join("phrase");
    std::fs::write(&phrase, &net.client_mnemonic).unwrap();
    let password = d.datadir.join("password");
    let args = [
        "--json",
        "init",
        "--restore",
        "--mnemonic-file",
        phrase.to_str().unwrap(),
        "--password-file",
        password.to_str().unwrap(),
    ];
    let out = cli_output(&d.datadir, &args, 180).await;
    assert!(
        out.status.success(),
        "restore failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    (d, answer)
}

async fn wait_synced(d: &Daemon, height: u64) {
    let rpc = d.rpc();
    wait_for(&format!("{} to sync to {height}", d.name), 120, || {
        let rpc = rpc.clone();
        async move {
            let st = rpc.status().await.ok()?;
            st.tip_height
                .filter(|h| u64::from(*h) >= height)
                .map(|_| ())
        }
    })
    .await;
}

/// Each provider's contract: (contract id, period payments, paid through).
async fn provider_periods(net: &Net) -> Vec<(String, u64, u32)> {
    let mut out = Vec::new();
    for p in &net.providers {
        for c in contracts(p, ContractRole::Provider).await {
            out.push((c.contract_id, c.period_payments, c.paid_through_height));
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn a_whole_account_comes_back_from_its_mnemonic() {
    let mut net = Net::start(options()).await;
    let mut files = Vec::new();
    for (name, len) in [("a.bin", 200_000), ("b.bin", 5 << 20), ("c.bin", 1 << 20)] {
        let (id, digest, _) = net.put_random(name, len, None).await;
        files.push((name, id, digest));
    }
    let seq = backed_up(&net.client, 0).await;
    let before: BTreeSet<(String, u32)> = contracts(&net.client, ContractRole::Client)
        .await
        .into_iter()
        .map(|c| (c.contract_id, c.paid_through_height))
        .collect();
    // The backup is stored like a file, but not listed as one.
    assert_eq!(net.client.rpc().ls().await.unwrap().len(), 3);
    let account = net.client.peer_id().await;
    lose_the_client(&mut net);

    let (restored, answer) = restore(&net, "restored").await;
    let r = &answer["restore"];
    assert_eq!(r["files"], 3, "{answer}");
    assert_eq!(r["index_seq"], seq, "{answer}");
    assert_eq!(
        answer["init"]["peer_id"].as_str(),
        Some(account.as_str()),
        "the same account"
    );
    let rpc = restored.rpc();
    let listed: BTreeSet<String> = rpc
        .ls()
        .await
        .unwrap()
        .into_iter()
        .map(|f| f.name)
        .collect();
    let names: BTreeSet<String> = files.iter().map(|(n, _, _)| n.to_string()).collect();
    assert_eq!(listed, names);
    for (name, id, digest) in &files {
        let out = net.dir.path().join(format!("restored-{name}"));
        rpc.get(id.clone(), out.to_string_lossy().into(), None)
            .await
            .unwrap();
        assert_eq!(file_sha256(&out), *digest, "{name} not byte-identical");
    }
    let after: BTreeSet<(String, u32)> = contracts(&restored, ContractRole::Client)
        .await
        .into_iter()
        .map(|c| (c.contract_id, c.paid_through_height))
        .collect();
    assert_eq!(after, before, "every contract, as it was paid");

    // The next period is paid by the restored client, once.
    let periods = provider_periods(&net).await;
    let through = before.iter().map(|(_, h)| *h).min().unwrap();
    let tip = net.bitcoind.height().await;
    wait_synced(&restored, tip).await;
    net.bitcoind
        .mine_burn((through - RENEW_BEFORE).saturating_sub(tip as u32).max(1))
        .await;
    let rpc2 = restored.rpc();
    wait_for("the restored client to pay the next period", 120, || {
        let rpc = rpc2.clone();
        async move {
            let cs = rpc.contracts().await.ok()?;
            cs.iter()
                .filter(|c| c.role == ContractRole::Client)
                .all(|c| c.paid_through_height >= through + PERIOD)
                .then_some(())
        }
    })
    .await;
    // Confirmed, and a few blocks more (short of the next renewal): still
    // exactly one more period payment at each provider.
    net.bitcoind.mine_burn(2).await;
    let height = net.bitcoind.height().await;
    for p in &net.providers {
        wait_synced(p, height).await;
    }
    wait_synced(&restored, height).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let now = provider_periods(&net).await;
    assert_eq!(now.len(), periods.len());
    for ((id, paid, through_then), (id2, paid_now, through_now)) in periods.iter().zip(&now) {
        assert_eq!(id, id2);
        assert_eq!(*paid_now, paid + 1, "contract {id}: one period payment");
        assert_eq!(*through_now, through_then + PERIOD, "contract {id}");
    }
}

/// A Kademlia node with default settings that also runs identify, so that
/// p2pstore nodes route to it: an attacker inside the DHT.
#[derive(NetworkBehaviour)]
struct Attacker {
    kad: kad::Behaviour<kad::store::MemoryStore>,
    identify: identify::Behaviour,
}

fn attacker(key: libp2p::identity::Keypair, seed: &str) -> libp2p::Swarm<Attacker> {
    let mut swarm = plain_swarm_as(
        key,
        |key| Attacker {
            kad: standard_kad(key),
            identify: identify::Behaviour::new(identify::Config::new(
                "/p2pstore/id/1.0.0".into(),
                key.public(),
            )),
        },
        Duration::from_secs(300),
    );
    swarm
        .listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap())
        .unwrap();
    let (seed_id, seed) = parse_seed(seed);
    swarm.behaviour_mut().kad.add_address(&seed_id, seed);
    swarm
}

/// Drives the attacker's swarm until `query` ends; the records it found,
/// with who sent each (None: its own store).
async fn run_query(
    swarm: &mut libp2p::Swarm<Attacker>,
    query: kad::QueryId,
) -> Vec<(Option<PeerId>, Vec<u8>)> {
    let mut found = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let event = tokio::time::timeout_at(deadline, swarm.select_next_some())
            .await
            .expect("the attacker's query finished within 60 s");
        match event {
            SwarmEvent::NewListenAddr { address, .. } => swarm.add_external_address(address),
            SwarmEvent::Behaviour(AttackerEvent::Kad(kad::Event::OutboundQueryProgressed {
                id,
                result,
                step,
                ..
            })) if id == query => {
                if let kad::QueryResult::GetRecord(Ok(kad::GetRecordOk::FoundRecord(r))) = result {
                    found.push((r.peer, r.record.value));
                }
                if step.last {
                    return found;
                }
            }
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_forged_or_replayed_pointer_does_not_win() {
    let mut net = Net::start(options()).await;
    let (a, a_digest, _) = net.put_random("first.bin", 300_000, None).await;
    let first = backed_up(&net.client, 0).await;
    let account: PeerId = net.client.peer_id().await.parse().unwrap();
    let key = pointer::key(&account);

    // Someone inside the DHT records the pointer as it is now. Its id is
    // the one closest to the pointer's key, as an attacker would grind it,
    // so every lookup of the pointer asks it (else whether the client
    // meets its forgery would depend on which nodes answer first).
    let mut nodes = vec![net.bootstrap.peer_id().await];
    for p in &net.providers {
        nodes.push(p.peer_id().await);
    }
    let target = kad::KBucketKey::new(key.to_vec());
    let nearest = nodes
        .iter()
        .map(|p| kad::KBucketKey::from(p.parse::<PeerId>().unwrap()).distance(&target))
        .min()
        .unwrap();
    let evil_key = std::iter::repeat_with(libp2p::identity::Keypair::generate_ed25519)
        .find(|k| kad::KBucketKey::from(k.public().to_peer_id()).distance(&target) < nearest)
        .unwrap();
    let mut evil = attacker(evil_key, &net.bootstrap_addr);
    let q = evil.behaviour_mut().kad.bootstrap().unwrap();
    let _ =
        tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                if let SwarmEvent::Behaviour(AttackerEvent::Kad(
                    kad::Event::OutboundQueryProgressed { id, step, .. },
                )) = evil.select_next_some().await
                    && id == q
                    && step.last
                {
                    break;
                }
            }
        })
        .await;
    let q = evil.behaviour_mut().kad.get_record(key.clone());
    let (old, _) = pointer::newest(
        &account,
        run_query(&mut evil, q).await.into_iter().map(|r| r.1),
    );
    let old = old.expect("the attacker finds the pointer");
    assert_eq!(old.seq, first);

    // The account stores another file: a newer backup and pointer.
    let (b, b_digest, _) = net.put_random("second.bin", 400_000, None).await;
    let newest = backed_up(&net.client, first).await;

    // Now it replays the old pointer, then forges one far newer, signed by
    // its own key, under the account's key; both go to the nodes closest
    // to the key, and the forgery stays in its own store too.
    let forger = libp2p::identity::Keypair::generate_ed25519();
    let forged = IndexPointer::sign(&forger, newest + 1000, 0, &[], vec![0; 64]).unwrap();
    for value in [old.record.clone(), forged.record.clone()] {
        let q = evil
            .behaviour_mut()
            .kad
            .put_record(kad::Record::new(key.clone(), value), kad::Quorum::One)
            .unwrap();
        let _ = run_query(&mut evil, q).await;
    }
    // What every other node now answers is the newest genuine pointer.
    let q = evil.behaviour_mut().kad.get_record(key.clone());
    let answers = run_query(&mut evil, q).await;
    let from_others: Vec<&Vec<u8>> = answers
        .iter()
        .filter(|(peer, _)| peer.is_some())
        .map(|(_, v)| v)
        .collect();
    assert!(!from_others.is_empty(), "the DHT still holds the pointer");
    for v in from_others {
        let p = IndexPointer::verify(&key, v).expect("only genuine pointers are stored");
        assert_eq!(p.seq, newest, "no node took the replayed pointer");
    }

    // The client is lost and restored while the attacker keeps serving
    // its forgery: the newest genuine pointer wins.
    lose_the_client(&mut net);
    let serve = tokio::spawn(async move {
        loop {
            let _ = evil.select_next_some().await;
        }
    });
    let (restored, answer) = restore(&net, "restored").await;
    serve.abort();
    // The forgery the attacker serves reached the client, which ignored it.
    assert!(
        answer["restore"]["rejected_records"].as_u64() >= Some(1),
        "{answer}"
    );
    assert_eq!(answer["restore"]["index_seq"], newest, "{answer}");
    assert_eq!(answer["restore"]["files"], 2, "{answer}");
    let rpc = restored.rpc();
    for (id, digest, tag) in [(a, a_digest, "first"), (b, b_digest, "second")] {
        let out = net.dir.path().join(format!("restored-{tag}"));
        rpc.get(id, out.to_string_lossy().into(), None)
            .await
            .unwrap();
        assert_eq!(file_sha256(&out), digest, "{tag}");
    }
}
