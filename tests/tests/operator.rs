//! What operators run p2pstored with: Prometheus metrics read by a real
//! parser (Python's `prometheus_client`, installed by
//! `scripts/install-python-tools.sh`), and the live event stream followed
//! by `p2pstore-cli events` while a put forms contracts and pays.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use p2pstore_rpc::P2pstoreApiClient;
use p2pstore_tests::*;

/// Fetches `url` and parses it with prometheus_client's OpenMetrics parser
/// (which rejects anything not in the format, `# EOF` included). Returns
/// every sample as name → [(labels, value)].
type Samples = BTreeMap<String, Vec<(BTreeMap<String, String>, f64)>>;

const SCRAPE: &str = r#"
import json, sys, urllib.request
from prometheus_client.openmetrics.parser import text_string_to_metric_families
with urllib.request.urlopen(sys.argv[1], timeout=20) as r:
    ctype = r.headers.get("Content-Type", "")
    body = r.read().decode()
assert ctype.startswith("application/openmetrics-text"), ctype
out = {}
for family in text_string_to_metric_families(body):
    for s in family.samples:
        out.setdefault(s.name, []).append([s.labels, s.value])
print(json.dumps(out))
"#;

async fn scrape(py: &Path, url: &str) -> Samples {
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new(py)
            .args(["-c", SCRAPE, url])
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("a scrape ends within 30 s")
    .expect("python runs");
    assert!(
        out.status.success(),
        "scrape of {url} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The value of `name`'s sample whose labels include `want`; None if none.
fn value(s: &Samples, name: &str, want: &[(&str, &str)]) -> Option<f64> {
    s.get(name)?
        .iter()
        .find(|(labels, _)| {
            want.iter()
                .all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, v)| *v)
}

async fn metrics_url(d: &Daemon) -> String {
    let addr = d
        .rpc()
        .status()
        .await
        .unwrap()
        .metrics_addr
        .expect("status names the metrics address");
    format!("http://{addr}/metrics")
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_are_scraped_during_a_put_and_parse_as_openmetrics() {
    let py = python_tools();
    let metrics = vec!["--metrics-bind".to_string(), "127.0.0.1:0".to_string()];
    let net = Net::start(NetOptions {
        providers: 2,
        client_args: metrics.clone(),
        provider_args: metrics,
        ..Default::default()
    })
    .await;
    let client_url = metrics_url(&net.client).await;

    // Off by default: the seed was started without the flag.
    assert_eq!(
        net.bootstrap.rpc().status().await.unwrap().metrics_addr,
        None
    );

    let before = scrape(&py, &client_url).await;
    assert_eq!(
        value(&before, "p2pstore_transfers_total", &[("transfer", "put")]),
        None,
        "no put yet"
    );

    // Scraped again and again while a put runs: every scrape parses.
    let src = net.dir.path().join("metered.bin");
    let size = 24 << 20;
    random_file(&src, size);
    let rpc = net.client.rpc();
    let put = rpc.put(src.to_string_lossy().into(), None, None, None, None, None);
    tokio::pin!(put);
    let mut during = 0;
    let put = loop {
        tokio::select! {
            p = &mut put => break p.unwrap(),
            _ = scrape(&py, &client_url) => during += 1,
        }
    };
    // A put pays through bitcoind and moves 24 MiB: long enough for a
    // scrape (a python start and one request) to end while it runs.
    assert!(during >= 1, "no scrape ended while the put ran");

    let c = scrape(&py, &client_url).await;
    let ok = [("transfer", "put"), ("outcome", "ok")];
    assert_eq!(
        value(&c, "p2pstore_transfers_total", &ok),
        Some(1.0),
        "{c:?}"
    );
    assert_eq!(
        value(&c, "p2pstore_transfer_bytes_total", &[("transfer", "put")]),
        Some(size as f64)
    );
    let paid = value(&c, "p2pstore_sent_sat_total", &[]).unwrap();
    assert!(paid > 0.0, "the put paid for its allowance");
    assert_eq!(value(&c, "p2pstore_payments_sent_total", &[]), Some(1.0));
    assert_eq!(
        value(&c, "p2pstore_contract_events_total", &[("event", "formed")]),
        Some(put.providers.len() as f64)
    );
    assert_eq!(
        value(
            &c,
            "p2pstore_contracts",
            &[("role", "client"), ("state", "active")]
        ),
        Some(put.providers.len() as f64)
    );
    assert_eq!(value(&c, "p2pstore_files", &[]), Some(1.0));
    assert!(value(&c, "p2pstore_wallet_balance_sat", &[("state", "confirmed")]).unwrap() > 0.0);
    assert!(value(&c, "p2pstore_connected_peers", &[]).unwrap() >= 1.0);
    // libp2p's own metrics sit in the same registry.
    for family in [
        "libp2p_swarm_connections_established_total",
        "libp2p_kad_query_result_num_requests_count",
        "libp2p_identify_received_total",
        "libp2p_bandwidth_bytes_total",
    ] {
        assert!(c.contains_key(family), "{family} missing: {:?}", c.keys());
    }

    // An audit: the client counts what it sent, the providers what they
    // answered, one proof per challenge.
    let audited = net.client.rpc().audit(None).await.unwrap();
    let challenges: u64 = audited.iter().map(|a| a.counts.passed).sum();
    assert!(challenges > 0);
    let c = scrape(&py, &client_url).await;
    assert_eq!(
        value(&c, "p2pstore_audits_total", &[("outcome", "passed")]),
        Some(audited.len() as f64)
    );

    // The providers that took the shards say so, were paid, and proved
    // every challenge.
    let mut received = 0.0;
    let mut stored = 0.0;
    let mut proved = 0.0;
    for p in &net.providers {
        let s = scrape(&py, &metrics_url(p).await).await;
        proved += value(
            &s,
            "p2pstore_audit_challenges_answered_total",
            &[("outcome", "proved")],
        )
        .unwrap_or(0.0);
        let missing = value(
            &s,
            "p2pstore_audit_challenges_answered_total",
            &[("outcome", "missing")],
        );
        assert_eq!(missing.unwrap_or(0.0), 0.0);
        received +=
            value(&s, "p2pstore_received_sat_total", &[("kind", "revision")]).unwrap_or(0.0);
        stored += value(&s, "p2pstore_stored_bytes", &[]).unwrap();
        assert!(value(&s, "p2pstore_capacity_bytes", &[]).unwrap() > 0.0);
    }
    assert_eq!(
        received, paid,
        "what the client sent, the providers credited"
    );
    assert!(
        stored >= size as f64,
        "stored {stored} of a {size}-byte file"
    );
    assert_eq!(proved, challenges as f64);

    // Anything but GET /metrics is refused.
    let other = client_url.replace("/metrics", "/other");
    let out = tokio::process::Command::new(&py)
        .args([
            "-c",
            "import sys, urllib.request, urllib.error\ntry:\n urllib.request.urlopen(sys.argv[1])\nexcept urllib.error.HTTPError as e:\n print(e.code)",
            &other,
        ])
        .output()
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "404");
}

#[tokio::test(flavor = "multi_thread")]
async fn events_follow_a_put_through_its_phases_contracts_and_payment() {
    let net = Net::start(NetOptions {
        providers: 2,
        ..Default::default()
    })
    .await;
    let (mut client_cli, mut client_events) = follow_events(&net.client, true).await;
    let (mut text_cli, mut text_lines) = follow_events(&net.client, false).await;
    let mut provider_streams = Vec::new();
    for p in &net.providers {
        provider_streams.push(follow_events(p, true).await);
    }

    let src = net.dir.path().join("followed.bin");
    random_file(&src, 6 << 20);
    let put = net.put_op(&src, "followed-put").await;

    let events = read_events_until(&mut client_events, 60, |seen| {
        seen.iter().any(|e| {
            e["type"] == "progress" && e["op_id"] == "followed-put" && e["finished"] == true
        })
    })
    .await;
    let progress: Vec<&serde_json::Value> = events_of(&events, "progress")
        .into_iter()
        .filter(|e| e["op_id"] == "followed-put")
        .collect();
    // Every phase a put goes through, in order, each said as it starts.
    let mut phases: Vec<&str> = progress
        .iter()
        .map(|e| e["phase"].as_str().unwrap())
        .collect();
    phases.dedup();
    assert_eq!(
        phases,
        ["planning", "contracts", "payment", "upload"],
        "{progress:#?}"
    );
    let last = progress.last().unwrap();
    assert_eq!(last["file_id"], put.file_id);
    assert_eq!(last["done_bytes"], 6 << 20);
    assert_eq!(last["total_bytes"], 6 << 20);
    assert!(last["error"].is_null());
    // Bytes only go up, and every event has a time.
    let done: Vec<u64> = progress
        .iter()
        .map(|e| e["done_bytes"].as_u64().unwrap())
        .collect();
    assert!(done.windows(2).all(|w| w[0] <= w[1]), "{done:?}");
    assert!(events.iter().all(|e| e["time_ms"].as_u64().unwrap() > 0));

    let formed = events_of(&events, "contract_formed");
    assert_eq!(formed.len(), put.providers.len(), "{events:#?}");
    for f in &formed {
        assert!(
            put.providers
                .contains(&f["peer_id"].as_str().unwrap().to_string())
        );
    }
    let sent = events_of(&events, "payment_sent");
    assert_eq!(sent.len(), 1, "{events:#?}");
    let paid = sent[0]["amount_sat"].as_u64().unwrap();
    assert!(paid > 0);
    assert_eq!(sent[0]["outputs"], put.providers.len() as u64);

    // Each provider that took shards heard of its money.
    let mut received = 0;
    for (i, (_, lines)) in provider_streams.iter_mut().enumerate() {
        let peer = net.providers[i].peer_id().await;
        if !put.providers.contains(&peer) {
            continue;
        }
        let seen = read_events_until(lines, 30, |seen| {
            !events_of(seen, "payment_received").is_empty()
        })
        .await;
        let r = events_of(&seen, "payment_received")[0];
        assert_eq!(r["txid"], sent[0]["txid"]);
        assert_eq!(r["kind"], "revision");
        received += r["amount_sat"].as_u64().unwrap();
    }
    assert_eq!(received, paid);

    // A get is followed too, and a failed one says why.
    let out = net.dir.path().join("followed.out");
    net.client
        .rpc()
        .get(
            put.file_id.clone(),
            out.to_string_lossy().into(),
            Some("followed-get".into()),
        )
        .await
        .unwrap();
    let events = read_events_until(&mut client_events, 60, |seen| {
        seen.iter()
            .any(|e| e["op_id"] == "followed-get" && e["finished"] == true)
    })
    .await;
    let mut phases: Vec<&str> = events_of(&events, "progress")
        .iter()
        .filter(|e| e["op_id"] == "followed-get")
        .map(|e| e["phase"].as_str().unwrap())
        .collect();
    phases.dedup();
    assert_eq!(phases, ["download", "verify"]);

    // For people: a line per event, amounts grouped with BTC beside them.
    let line = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let l = text_lines.next_line().await.unwrap().unwrap();
            if l.contains("payment_sent") {
                return l;
            }
        }
    })
    .await
    .expect("a payment_sent line within 30 s");
    let txid = sent[0]["txid"].as_str().unwrap();
    assert!(line.contains("Z  payment_sent"), "{line}");
    assert!(line.contains(&format!("txid={}", &txid[..16])), "{line}");
    let shown = line
        .split("amount_sat=")
        .nth(1)
        .and_then(|rest| rest.split(" sat (").next())
        .unwrap_or_else(|| panic!("no amount in {line}"));
    assert_eq!(
        shown.replace(',', "").parse::<u64>().unwrap(),
        paid,
        "{line}"
    );
    assert_eq!(shown.contains(','), paid >= 1000, "grouped: {line}");
    assert!(line.contains(" BTC)"), "{line}");

    text_cli.kill().await.unwrap();
    client_cli.kill().await.unwrap();
    for (mut child, _) in provider_streams.drain(..) {
        child.kill().await.unwrap();
    }
}
