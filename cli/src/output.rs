//! Rendering results: JSON for scripts, aligned text for people.

use anyhow::Result;
use indicatif::HumanBytes;
use p2pstore_rpc::*;
use serde::Serialize;

/// The first 16 characters of an id, enough to tell ids apart in a table.
fn short(id: &str) -> &str {
    id.get(..16).unwrap_or(id)
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
            r.providers.join(", ")
        );
        Ok(())
    }

    pub fn budget(&self, b: &Budget) -> Result<()> {
        if self.json {
            return self.json(b);
        }
        for l in &b.contracts {
            println!(
                "{}  {}  {:>10} sat/period  x{:<4} {:>12} sat  next at {}",
                short(&l.contract_id),
                short(&l.peer_id),
                l.period_sat,
                l.periods,
                l.total_sat,
                l.next_payment_height
                    .map_or_else(|| "-".to_string(), |h| h.to_string()),
            );
        }
        println!(
            "next {} periods: {} sat ({} sat payments + ~{} sat fees); spendable {} sat",
            b.periods, b.total_sat, b.payments_sat, b.fees_sat, b.spendable_sat
        );
        if let Some(w) = &b.warning {
            println!("WARNING: {w}");
        }
        Ok(())
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
                f.providers.join(", ")
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
                "{}  free {:>10}  {} sat/GiB/month  terms {}-{} blocks  audit score {:.3}  offer {}s old",
                p.peer_id,
                HumanBytes(p.free_bytes).to_string(),
                p.price_sat_per_gib_month,
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
        if self.json {
            return self.json(&list);
        }
        if list.is_empty() {
            println!("no contracts");
        }
        for c in list {
            let next = match (c.next_payment_height, c.next_payment_sat) {
                (Some(h), Some(sat)) => format!("next {sat} sat at {h}"),
                _ => "no payment due".into(),
            };
            println!(
                "{}  {:<8} {:<11} {:>10} of {:>10}  paid {:>8} sat through {} (term {})  {}  peer {}",
                short(&c.contract_id),
                c.role,
                c.state,
                HumanBytes(c.stored_bytes).to_string(),
                HumanBytes(c.allowance_bytes).to_string(),
                c.paid_sat,
                c.paid_through_height,
                c.term_end_height,
                next,
                c.peer_id,
            );
        }
        Ok(())
    }

    pub fn txs(&self, list: &[WalletTx]) -> Result<()> {
        if self.json {
            return self.json(&list);
        }
        if list.is_empty() {
            println!("no transactions");
        }
        for t in list {
            let net = t.received_sat as i128 - t.sent_sat as i128;
            println!("{}  {:>+14} sat  {} conf", t.txid, net, t.confirmations);
        }
        Ok(())
    }
}
