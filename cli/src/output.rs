//! Rendering results: JSON for scripts, aligned text for people.

use anyhow::Result;
use indicatif::HumanBytes;
use p2pstore_rpc::*;
use serde::Serialize;

use crate::amount;

/// The first 16 characters of an id, enough to tell ids apart in a table.
fn short(id: &str) -> &str {
    id.get(..16).unwrap_or(id)
}

/// Peer ids in a line of text, each shortened: a line stays one line,
/// and `--json` has them whole.
fn short_ids(ids: &[String]) -> String {
    ids.iter().map(|p| short(p)).collect::<Vec<_>>().join(", ")
}

pub struct Printer {
    pub json: bool,
}

/// "good/total", flagged when a segment is at risk or lost.
fn health(h: &Health) -> String {
    let flag = if h.good < h.needed {
        " LOST"
    } else if h.good < h.total {
        " degraded"
    } else {
        ""
    };
    format!("{}/{}{flag}", h.good, h.total)
}

/// `2026-11-22T23:59:01.123Z  payment_sent  txid=… amount_sat=1,000 sat (…)`:
/// the event's own fields in order, nulls left out, amounts and sizes for
/// people and ids shortened.
fn event_text(e: &Event) -> Result<String> {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(e.time_ms);
    let mut line = humantime::format_rfc3339_millis(t).to_string();
    let serde_json::Value::Object(fields) = serde_json::to_value(&e.kind)? else {
        anyhow::bail!("an event is not a JSON object");
    };
    if let Some(serde_json::Value::String(kind)) = fields.get("type") {
        line.push_str(&format!("  {kind:<17}"));
    }
    for (k, v) in fields.iter().filter(|(k, _)| *k != "type") {
        let text = match v {
            serde_json::Value::Null => continue,
            serde_json::Value::Number(n) if k.ends_with("_sat") => {
                amount::sats(n.as_u64().unwrap_or(0))
            }
            serde_json::Value::Number(n) if k.ends_with("_bytes") => {
                HumanBytes(n.as_u64().unwrap_or(0)).to_string()
            }
            serde_json::Value::String(s)
                if k.ends_with("_id") || k == "txid" || k == "replaces" =>
            {
                short(s).to_string()
            }
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        line.push_str(&format!("  {k}={text}"));
    }
    Ok(line)
}

fn date(secs: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// When the latest audit was, or that there was none yet.
fn audited(at: Option<u64>) -> String {
    at.map_or_else(
        || "not audited yet".into(),
        |t| format!("audited {}", date(t)),
    )
}

impl Printer {
    fn json<T: Serialize>(&self, v: &T) -> Result<()> {
        println!("{}", serde_json::to_string_pretty(v)?);
        Ok(())
    }

    pub fn line<T: Serialize>(&self, v: &T, text: &str) -> Result<()> {
        if self.json {
            return self.json(v);
        }
        println!("{text}");
        Ok(())
    }

    pub fn init(&self, r: &InitResult) -> Result<()> {
        if self.json {
            return self.json(r);
        }
        println!("account ready; peer id {}", r.peer_id);
        if let Some(m) = &r.mnemonic {
            println!(
                "\nRecovery phrase (shown only this once; write it down and keep it secret):\n\n  {m}\n"
            );
        }
        println!(
            "Wallet birthday: block {b}. Keep it with the phrase: \
             `init --restore --birthday {b}` then skips every earlier block.",
            b = r.birthday_height
        );
        Ok(())
    }

    /// A restore: the account, then what came back from its index.
    pub fn restored(&self, init: &InitResult, r: &RestoreResult) -> Result<()> {
        if self.json {
            return self.json(&serde_json::json!({ "init": init, "restore": r }));
        }
        println!(
            "restored {} file(s) and {} contract(s) from index backup #{} (wallet birthday: block {})",
            r.files, r.contracts, r.index_seq, r.birthday_height
        );
        if r.rejected_records > 0 {
            eprintln!(
                "ignored {} record(s) under this account's pointer key not signed by it",
                r.rejected_records
            );
        }
        Ok(())
    }

    pub fn put(&self, r: &PutResult) -> Result<()> {
        if self.json {
            return self.json(r);
        }
        println!("{}", r.file_id);
        eprintln!(
            "{} {} ({}) with {}",
            if r.existing {
                "already stored (nothing paid; --force stores another copy):"
            } else {
                "stored"
            },
            r.name,
            HumanBytes(r.size),
            short_ids(&r.providers)
        );
        Ok(())
    }

    /// One event: a line of JSON with --json (a stream for `jq`), else a
    /// line of text.
    pub fn event(&self, e: &Event) -> Result<()> {
        let line = if self.json {
            serde_json::to_string(e)?
        } else {
            event_text(e)?
        };
        println!("{line}");
        Ok(())
    }

    pub fn budget(&self, b: &Budget) -> Result<()> {
        self.line(b, &budget_text(b))
    }

    pub fn balance(&self, b: &WalletBalance) -> Result<()> {
        self.line(b, &balance_text(b))
    }

    pub fn ls(&self, files: &[FileEntry]) -> Result<()> {
        if self.json {
            return self.json(&files);
        }
        if files.is_empty() {
            println!("no files");
        }
        for f in files {
            println!(
                "{}  {:>10}  {}  {:<5} health {} ({})  {}  [{}]",
                f.file_id,
                HumanBytes(f.size).to_string(),
                date(f.created_at),
                f.redundancy,
                health(&f.health),
                audited(f.last_audit_at),
                f.name,
                short_ids(&f.providers)
            );
        }
        Ok(())
    }

    pub fn stat(&self, s: &FileStat) -> Result<()> {
        if self.json {
            return self.json(s);
        }
        println!("file:       {}  {}", s.file_id, s.name);
        println!(
            "size:       {} ({} bytes), stored {}",
            HumanBytes(s.size),
            s.size,
            date(s.created_at)
        );
        println!(
            "redundancy: {} (any {} of {} shards rebuild a segment)",
            s.redundancy, s.health.needed, s.health.total
        );
        println!(
            "health:     {} (worst segment, {})",
            health(&s.health),
            audited(s.last_audit_at)
        );
        println!("providers:  {}", s.providers.join(", "));
        println!("segments (worst first):");
        for seg in &s.segments {
            println!(
                "  {:>6}  {}/{} good, {} needed",
                seg.index, seg.good, seg.total, seg.needed
            );
        }
        Ok(())
    }

    pub fn status(&self, s: &Status) -> Result<()> {
        if self.json {
            return self.json(s);
        }
        println!("state:        {}", s.state);
        println!("peer id:      {}", s.peer_id.as_deref().unwrap_or("-"));
        let roles: Vec<&str> = s.roles.iter().map(|r| r.as_str()).collect();
        println!("roles:        {}", roles.join(", "));
        println!("listening:    {}", s.listen_addrs.join(" "));
        if let Some(addr) = &s.metrics_addr {
            println!("metrics:      http://{addr}/metrics");
        }
        println!(
            "peers:        {} connected, {} in DHT, {} requests refused",
            s.connected_peers, s.dht_peers, s.refused_requests
        );
        println!("files:        {}", s.files);
        if let (Some(net), Some(tip)) = (&s.network, s.tip_height) {
            println!(
                "chain:        {net}, tip {tip}{}",
                s.bitcoind_error
                    .as_ref()
                    .map(|e| format!(" (bitcoind: {e})"))
                    .unwrap_or_default()
            );
        }
        if s.roles.contains(&NodeRole::Provider) {
            println!(
                "stored:       {} of {} ({} free)",
                HumanBytes(s.stored_bytes),
                HumanBytes(s.capacity_bytes),
                HumanBytes(s.free_bytes)
            );
            println!(
                "audits:       {} challenges proved, {} missing, {} audits refused (since start)",
                s.audit_challenges_proved, s.audit_challenges_missing, s.audits_refused
            );
        }
        Ok(())
    }

    pub fn providers(&self, list: &[ProviderInfo]) -> Result<()> {
        if self.json {
            return self.json(&list);
        }
        if list.is_empty() {
            println!("no providers found");
        }
        for p in list {
            println!(
                "{}  free {:>10}  {:>7} sat/GiB/month  terms {}-{} blocks  audit score {:.3}  offer {}s old",
                p.peer_id,
                HumanBytes(p.free_bytes).to_string(),
                amount::group(p.price_sat_per_gib_month),
                p.min_term_blocks,
                p.max_term_blocks,
                p.audit_score,
                p.offer_age_secs
            );
        }
        Ok(())
    }

    /// A scan's summary and the providers found, or with `asked` whether
    /// each of those was found.
    pub fn find_providers(&self, r: &FindProvidersResult, asked: Option<&[String]>) -> Result<()> {
        if self.json {
            return self.json(r);
        }
        let mut ms: Vec<u64> = r.lookups.iter().map(|l| l.millis).collect();
        ms.sort_unstable();
        let pick = |q: f64| {
            ms.get(((ms.len() as f64 - 1.0) * q).round() as usize)
                .copied()
                .unwrap_or(0)
        };
        println!(
            "{} provider(s) in {} bucket lookups (median {} ms, p95 {} ms, max {} ms); directory: {}",
            r.providers.len(),
            r.lookups.len(),
            pick(0.5),
            pick(0.95),
            ms.last().copied().unwrap_or(0),
            r.directory_size
        );
        match asked {
            Some(asked) => {
                for p in asked {
                    let seen = if r.providers.contains(p) {
                        "found"
                    } else {
                        "NOT found"
                    };
                    println!("{p} {seen}");
                }
            }
            None => {
                for p in &r.providers {
                    println!("{p}");
                }
            }
        }
        Ok(())
    }

    pub fn audit(&self, list: &[ProviderAudit]) -> Result<()> {
        if self.json {
            return self.json(&list);
        }
        if list.is_empty() {
            println!("nothing to audit");
        }
        for p in list {
            println!(
                "{}  challenges {:>5}  passed {:>5}  failed {:>5}  unknown {:>5}  score {:.3}",
                p.peer_id,
                p.counts.challenges,
                p.counts.passed,
                p.counts.failed,
                p.counts.unknown,
                p.counts.score
            );
        }
        Ok(())
    }

    pub fn audits(&self, list: &[ProviderAudits]) -> Result<()> {
        if self.json {
            return self.json(&list);
        }
        if list.is_empty() {
            println!("no audits yet");
        }
        for p in list {
            let standing = match (p.eligible, p.offline) {
                (false, _) => "  BELOW MIN SCORE",
                (true, true) => "  OFFLINE",
                (true, false) => "",
            };
            println!(
                "{}  score {:.3}{standing}  passed {}  failed {}  unknown {}  ({})",
                p.peer_id,
                p.score,
                p.passed,
                p.failed,
                p.unknown,
                audited(p.last_audit_at)
            );
            for a in &p.history {
                println!(
                    "    {}  {:>5} challenges: {} passed, {} failed, {} unknown; score {:.3}",
                    date(a.at),
                    a.counts.challenges,
                    a.counts.passed,
                    a.counts.failed,
                    a.counts.unknown,
                    a.counts.score
                );
            }
        }
        Ok(())
    }

    pub fn contracts(&self, list: &[ContractInfo]) -> Result<()> {
        self.line(&list, &contracts_text(list))
    }

    pub fn txs(&self, list: &[WalletTx]) -> Result<()> {
        self.line(&list, &txs_text(list))
    }
}

fn balance_text(b: &WalletBalance) -> String {
    let amounts = amount::column([b.confirmed_sat, b.unconfirmed_sat, b.immature_sat]);
    ["confirmed:", "unconfirmed:", "immature:"]
        .iter()
        .zip(amounts)
        .map(|(label, a)| format!("{label:<12} {a}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn budget_text(b: &Budget) -> String {
    let mut lines = Vec::new();
    let totals = amount::column(b.contracts.iter().map(|l| l.total_sat));
    for (l, total) in b.contracts.iter().zip(totals) {
        lines.push(format!(
            "{}  {}  {:>10} sat/period  x{:<4} {total}  next at {}",
            short(&l.contract_id),
            short(&l.peer_id),
            amount::group(l.period_sat),
            l.periods,
            l.next_payment_height
                .map_or_else(|| "-".to_string(), |h| h.to_string()),
        ));
    }
    // One line each: four amounts with their BTC do not fit on one.
    lines.push(format!("next {} periods", b.periods));
    let sums = amount::column([b.payments_sat, b.fees_sat, b.total_sat, b.spendable_sat]);
    let labels = ["  payments", "  fees (estimate)", "  total", "spendable"];
    for (label, a) in labels.iter().zip(sums) {
        lines.push(format!("{label:<17} {a}"));
    }
    if let Some(w) = &b.warning {
        lines.push(format!("WARNING: {w}"));
    }
    lines.join("\n")
}

fn contracts_text(list: &[ContractInfo]) -> String {
    if list.is_empty() {
        return "no contracts".into();
    }
    let paid = amount::column(list.iter().map(|c| c.paid_sat));
    let next: Vec<String> = list
        .iter()
        .map(|c| match (c.next_payment_height, c.next_payment_sat) {
            (Some(h), Some(sat)) => format!("next {} at {h}", amount::sats(sat)),
            _ => "no payment due".into(),
        })
        .collect();
    // Padded to the longest, so the peer ids after it line up.
    let next_w = next.iter().map(String::len).max().unwrap_or(0);
    list.iter()
        .zip(paid)
        .zip(next)
        .map(|((c, paid), next)| {
            format!(
                "{}  {:<8} {:<11} {:>10} of {:>10}  paid {paid} through {} (term {})  {next:<next_w$}  peer {}",
                short(&c.contract_id),
                c.role,
                c.state,
                HumanBytes(c.stored_bytes).to_string(),
                HumanBytes(c.allowance_bytes).to_string(),
                c.paid_through_height,
                c.term_end_height,
                c.peer_id,
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn txs_text(list: &[WalletTx]) -> String {
    if list.is_empty() {
        return "no transactions".into();
    }
    let nets = amount::signed_column(
        list.iter()
            .map(|t| i128::from(t.received_sat) - i128::from(t.sent_sat)),
    );
    list.iter()
        .zip(nets)
        .map(|(t, net)| format!("{}  {net}  {} conf", t.txid, t.confirmations))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tx(txid: &str, received_sat: u64, sent_sat: u64, confirmations: u32) -> WalletTx {
        WalletTx {
            txid: txid.into(),
            received_sat,
            sent_sat,
            fee_sat: None,
            confirmations,
            height: None,
        }
    }

    #[test]
    fn balance_lines_up_its_amounts() {
        let b = WalletBalance {
            confirmed_sat: 14_999_995_533,
            unconfirmed_sat: 0,
            immature_sat: 5_000_000_000,
        };
        assert_eq!(
            balance_text(&b),
            "confirmed:   14,999,995,533 sat (149.99995533 BTC)\n\
             unconfirmed:              0 sat   (0.00000000 BTC)\n\
             immature:     5,000,000,000 sat  (50.00000000 BTC)"
        );
    }

    #[test]
    fn txs_show_signed_net_amounts_in_a_column() {
        let list = [
            tx("aa", 0, 4_467, 0),
            tx("bb", 5_000_000_000, 0, 101),
            tx("cc", 1_000, 1_000, 7),
        ];
        assert_eq!(
            txs_text(&list),
            "aa          -4,467 sat (-0.00004467 BTC)  0 conf\n\
             bb  +5,000,000,000 sat (50.00000000 BTC)  101 conf\n\
             cc               0 sat  (0.00000000 BTC)  7 conf"
        );
        assert_eq!(txs_text(&[]), "no transactions");
    }

    fn contract(id: &str, paid_sat: u64, next: Option<(u32, u64)>) -> ContractInfo {
        ContractInfo {
            contract_id: id.into(),
            role: ContractRole::Client,
            peer_id: format!("12D3KooW{id}"),
            state: ContractState::Active,
            price_sat_per_gib_month: 1_000,
            allowance_bytes: 1 << 30,
            stored_bytes: 1 << 29,
            period_blocks: 4_320,
            start_height: 100,
            paid_through_height: 4_420,
            term_end_height: 13_060,
            paid_sat,
            next_payment_height: next.map(|(h, _)| h),
            next_payment_sat: next.map(|(_, sat)| sat),
            payout_address: String::new(),
            payment_txids: Vec::new(),
            period_payments: 1,
        }
    }

    #[test]
    fn contracts_line_up_paid_and_next() {
        let list = [
            contract("aaaaaaaaaaaaaaaaaaaa", 1_250_000, Some((4_420, 1_000))),
            contract("bbbbbbbbbbbbbbbbbbbb", 546, None),
        ];
        assert_eq!(
            contracts_text(&list),
            "aaaaaaaaaaaaaaaa  client   active      512.00 MiB of   1.00 GiB  \
             paid 1,250,000 sat (0.01250000 BTC) through 4420 (term 13060)  \
             next 1,000 sat (0.00001000 BTC) at 4420  peer 12D3KooWaaaaaaaaaaaaaaaaaaaa\n\
             bbbbbbbbbbbbbbbb  client   active      512.00 MiB of   1.00 GiB  \
             paid       546 sat (0.00000546 BTC) through 4420 (term 13060)  \
             no payment due                           peer 12D3KooWbbbbbbbbbbbbbbbbbbbb"
        );
        assert_eq!(contracts_text(&[]), "no contracts");
    }

    #[test]
    fn budget_groups_rates_and_sums() {
        let b = Budget {
            periods: 6,
            contracts: vec![
                BudgetLine {
                    contract_id: "c0ffee0123456789abcdef".into(),
                    peer_id: "12D3KooWAbcdefghijklmnop".into(),
                    period_sat: 125_000,
                    periods: 6,
                    total_sat: 750_000,
                    next_payment_height: Some(1_234),
                },
                BudgetLine {
                    contract_id: "deadbeef0123456789abcdef".into(),
                    peer_id: "12D3KooWQrstuvwxyz012345".into(),
                    period_sat: 546,
                    periods: 2,
                    total_sat: 1_092,
                    next_payment_height: None,
                },
            ],
            payments_sat: 751_092,
            fees_sat: 2_820,
            total_sat: 753_912,
            spendable_sat: 14_999_995_533,
            shortfall_sat: 0,
            warning: None,
        };
        assert_eq!(
            budget_text(&b),
            "c0ffee0123456789  12D3KooWAbcdefgh     125,000 sat/period  x6    750,000 sat (0.00750000 BTC)  next at 1234\n\
             deadbeef01234567  12D3KooWQrstuvwx         546 sat/period  x2      1,092 sat (0.00001092 BTC)  next at -\n\
             next 6 periods\n  \
             payments               751,092 sat   (0.00751092 BTC)\n  \
             fees (estimate)          2,820 sat   (0.00002820 BTC)\n  \
             total                  753,912 sat   (0.00753912 BTC)\n\
             spendable         14,999,995,533 sat (149.99995533 BTC)"
        );
    }
}
