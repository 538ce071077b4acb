//! Proofs of storage end to end: audits catch a shard deleted, flipped or
//! truncated at a provider, health drops from the audit alone and repair
//! restores it elsewhere; an honest provider passes every challenge, and a
//! stopped one counts as unknown, not failed.

use std::collections::HashSet;
use std::path::PathBuf;

use p2pstore_rpc::{AuditCounts, P2pstoreApiClient};
use p2pstore_tests::*;

async fn health(net: &Net, file_id: &str) -> (u32, u32) {
    let s = net.client.rpc().stat(file_id.into()).await.unwrap();
    (s.health.good, s.health.total)
}

/// The shard file of `file_id` at `provider`: the file's size and scheme
/// give its shard size, and the three files of the test have distinct
/// sizes (one segment each).
async fn shard_of(net: &Net, file_id: &str, provider: &str) -> PathBuf {
    let stat = net.client.rpc().stat(file_id.into()).await.unwrap();
    assert_eq!(
        stat.segments.len(),
        1,
        "one segment, one shard per provider"
    );
    let scheme = p2pstored::erasure::Scheme::parse(&stat.redundancy).unwrap();
    let size = scheme.shard_len(stat.size as usize + p2pstored::crypto::TAG_LEN) as u64;
    let daemon = &net.providers[net.provider_by_peer(provider).await];
    let found: Vec<PathBuf> = shard_files(daemon)
        .into_iter()
        .filter(|p| std::fs::metadata(p).unwrap().len() == size)
        .collect();
    assert_eq!(found.len(), 1, "shard sizes tell the files apart");
    found[0].clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn audits_catch_lost_flipped_and_truncated_shards() {
    let net = Net::start(NetOptions {
        providers: 7,
        // Every leaf of every shard is challenged: one flipped byte is
        // found on the first audit, so the test cannot be flaky.
        client_args: vec!["--audit-leaves-per-shard".into(), "2048".into()],
        ..Default::default()
    })
    .await;
    let rpc = net.client.rpc();
    let mut files = Vec::new();
    for (i, len) in [3usize << 20, 2 << 20, 1 << 20].into_iter().enumerate() {
        files.push(
            net.put_random(&format!("f{i}.bin"), len, Some("medium"))
                .await,
        );
    }
    // Honest to begin with: every challenge passes.
    for a in rpc.audit(None).await.unwrap() {
        assert!(
            a.counts.challenges > 0 && a.counts.passed == a.counts.challenges,
            "{a:?}"
        );
    }

    // Three providers misbehave, one way each, on a different file.
    let deleted = shard_of(&net, &files[0].0, &files[0].2[0]).await;
    std::fs::remove_file(&deleted).unwrap();
    let flipped = shard_of(&net, &files[1].0, &files[1].2[1]).await;
    let mut bytes = std::fs::read(&flipped).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&flipped, bytes).unwrap();
    let truncated = shard_of(&net, &files[2].0, &files[2].2[2]).await;
    let len = std::fs::metadata(&truncated).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&truncated)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    // Nothing is measured until an audit: health is local state.
    for (id, _, _) in &files {
        assert_eq!(health(&net, id).await, (4, 4));
    }

    for (i, (id, _, holders)) in files.iter().enumerate() {
        let report = rpc.audit(Some(id.clone())).await.unwrap();
        assert_eq!(report.len(), 4);
        for a in &report {
            assert_eq!(a.counts.unknown, 0, "{a:?}");
            let culprit = a.peer_id == holders[i];
            let expected_failed = match i {
                // Every challenged leaf of a deleted shard is missing.
                0 if culprit => a.counts.challenges,
                // One byte is in exactly one leaf.
                1 if culprit => 1,
                _ => 0,
            };
            if i == 2 && culprit {
                // The leaves past the cut, about half of them.
                assert!(
                    a.counts.failed * 3 > a.counts.challenges
                        && a.counts.failed < a.counts.challenges,
                    "{a:?}"
                );
            } else {
                assert_eq!(a.counts.failed, expected_failed, "file {i}: {a:?}");
            }
            assert_eq!(a.counts.passed + a.counts.failed, a.counts.challenges);
            if culprit {
                assert!(a.counts.score < 1.0, "{a:?}");
            }
        }
        // Health drops at once, and ls agrees, with the audit's time.
        assert_eq!(health(&net, id).await, (3, 4), "file {i}");
        let ls = rpc.ls().await.unwrap();
        let entry = ls.iter().find(|e| &e.file_id == id).unwrap();
        assert_eq!((entry.health.good, entry.health.total), (3, 4));
        assert!(entry.last_audit_at.is_some());
    }
    let audits = rpc.audits().await.unwrap();
    let culprits: HashSet<&String> = files.iter().enumerate().map(|(i, f)| &f.2[i]).collect();
    for a in &audits {
        assert_eq!(a.failed > 0, culprits.contains(&a.peer_id), "{a:?}");
        assert!(!a.history.is_empty() && a.last_audit_at.is_some());
    }

    // Repair moves each lost shard to a provider without one of its file.
    let r = rpc.repair(None).await.unwrap();
    assert_eq!(
        (r.shards_rebuilt, r.unrecoverable_segments),
        (3, 0),
        "{r:?}"
    );
    for (id, digest, holders) in &files {
        assert_eq!(health(&net, id).await, (4, 4));
        let stat = rpc.stat(id.clone()).await.unwrap();
        let now: HashSet<&String> = stat.providers.iter().collect();
        assert_eq!(now.len(), 4);
        assert!(
            now.difference(&holders.iter().collect()).count() == 1,
            "one new provider: {now:?} vs {holders:?}"
        );
        net.assert_get(id, *digest, "after-repair").await;
    }
    // And the next audit finds nothing wrong.
    for a in rpc.audit(None).await.unwrap() {
        assert_eq!((a.counts.failed, a.counts.unknown), (0, 0), "{a:?}");
    }
}

/// An audit's counts with a perfect score.
fn counts(challenges: u64, passed: u64, failed: u64, unknown: u64) -> AuditCounts {
    AuditCounts {
        challenges,
        passed,
        failed,
        unknown,
        score: 1.0,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn honest_passes_a_thousand_challenges_and_stopped_is_unknown() {
    let mut net = Net::start(NetOptions {
        providers: 4,
        // 16 MiB at 2-of-4: four shards of 513 leaves per provider, 250
        // leaves of each: 1000 challenges per provider.
        client_args: vec!["--audit-leaves-per-shard".into(), "250".into()],
        ..Default::default()
    })
    .await;
    let rpc = net.client.rpc();
    let (file_id, _, holders) = net.put_random("h.bin", 16 << 20, Some("medium")).await;
    let report = rpc.audit(Some(file_id.clone())).await.unwrap();
    assert_eq!(report.len(), 4);
    for a in &report {
        assert_eq!(a.counts, counts(1000, 1000, 0, 0), "{a:?}");
    }

    // A stopped provider: unknown, not failed, and its score stays.
    let (_events_cli, mut events) = follow_events(&net.client, true).await;
    let stopped = holders[0].clone();
    let i = net.provider_by_peer(&stopped).await;
    net.providers[i].kill();
    for round in 1..=3 {
        let report = rpc.audit(Some(file_id.clone())).await.unwrap();
        let a = report.iter().find(|a| a.peer_id == stopped).unwrap();
        // Unknowns leave the score at 1.0.
        assert_eq!(a.counts, counts(1000, 0, 0, 1000), "round {round}: {a:?}");
        for other in report.iter().filter(|a| a.peer_id != stopped) {
            assert_eq!(other.counts.passed, 1000, "{other:?}");
        }
        let offline = round >= 3;
        let book = rpc.audits().await.unwrap();
        let entry = book.iter().find(|a| a.peer_id == stopped).unwrap();
        assert_eq!(
            (entry.offline, entry.eligible, entry.failed, entry.score),
            (offline, true, 0, 1.0),
            "round {round}: {entry:?}"
        );
        // Offline only after audit_offline_after (3) unknown audits.
        let expected = if offline { (3, 4) } else { (4, 4) };
        assert_eq!(health(&net, &file_id).await, expected, "round {round}");
    }
    // Said once, as it went offline, after three unanswered audits.
    let seen = read_events_until(&mut events, 30, |seen| {
        !events_of(seen, "provider_offline").is_empty()
            && events_of(seen, "audit_failed").len() >= 3
            && events_of(seen, "audit_passed").len() >= 9
    })
    .await;
    let offline = events_of(&seen, "provider_offline");
    assert_eq!(offline.len(), 1, "{seen:#?}");
    assert_eq!(offline[0]["peer_id"], stopped);
    for e in events_of(&seen, "audit_failed") {
        assert_eq!(e["peer_id"], stopped);
        assert_eq!(
            (e["failed"].as_u64(), e["unanswered"].as_u64()),
            (Some(0), Some(1000))
        );
    }
    assert_eq!(
        events_of(&seen, "audit_passed").len(),
        9,
        "three others, three rounds"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn disqualified_provider_gets_no_new_shards_and_loses_its_own() {
    let net = Net::start(NetOptions {
        providers: 6,
        // One failed shard (score 0.95) is below this minimum.
        client_args: [
            "--min-audit-score",
            "0.99",
            "--audit-leaves-per-shard",
            "2048",
            "--health-check-secs",
            "2",
        ]
        .map(String::from)
        .to_vec(),
        ..Default::default()
    })
    .await;
    let rpc = net.client.rpc();
    let (a, a_digest, a_holders) = net.put_random("a.bin", 2 << 20, Some("medium")).await;
    let (b, b_digest, b_holders) = net.put_random("b.bin", 1 << 20, Some("medium")).await;
    let victim = a_holders
        .iter()
        .find(|p| b_holders.contains(p))
        .expect("a provider holding both files")
        .clone();
    std::fs::remove_file(shard_of(&net, &a, &victim).await).unwrap();

    // One audit of file a: the victim fails once and falls below the
    // minimum, so its shard of b, never audited, counts as lost too.
    let report = rpc.audit(Some(a.clone())).await.unwrap();
    let v = report.iter().find(|r| r.peer_id == victim).unwrap();
    assert!(v.counts.failed > 0 && v.counts.score < 0.99, "{v:?}");
    let book = rpc.audits().await.unwrap();
    assert!(!book.iter().find(|r| r.peer_id == victim).unwrap().eligible);
    let providers = rpc.providers().await.unwrap();
    let listed = providers.iter().find(|p| p.peer_id == victim).unwrap();
    assert!(listed.audit_score < 0.99, "{listed:?}");

    // The background repair moves both of its shards elsewhere.
    for id in [&a, &b] {
        let (rpc, id) = (rpc.clone(), id.clone());
        let victim = victim.clone();
        wait_for("the background repair to move the shards", 90, || {
            let (rpc, id, victim) = (rpc.clone(), id.clone(), victim.clone());
            async move {
                rpc.stat(id)
                    .await
                    .ok()
                    .filter(|s| s.health.good == 4 && !s.providers.contains(&victim))
                    .map(|_| ())
            }
        })
        .await;
    }
    net.assert_get(&a, a_digest, "a-moved").await;
    net.assert_get(&b, b_digest, "b-moved").await;

    // And it gets no new shards.
    let (_, _, c_holders) = net.put_random("c.bin", 1 << 20, Some("medium")).await;
    assert!(!c_holders.contains(&victim), "{c_holders:?}");
}
