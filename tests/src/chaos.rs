//! The chaos harness (`scripts/chaos.sh`, and a short run in
//! tests/tests/chaos.rs): a regtest network of six providers and a client
//! in which the client or a provider is killed with SIGKILL at a random
//! moment while a put, a repair, a period payment or a delete (the
//! provider's collection of shards) is in flight, then restarted with its
//! flags. Each kill point records whether the work was still running when
//! the signal landed. At the end the network settles and the harness
//! checks, against the daemons' files and bitcoind's own chain:
//!
//! - every acknowledged put reads back byte-identical;
//! - every payment the chain carries to a contract's payout address is one
//!   the client and the provider both recorded, once: no contract was paid
//!   twice, and none was paid ahead of its next period;
//! - every provider's wallet holds exactly what the chain paid its
//!   contracts, and each contract's books match the chain;
//! - every shard file a provider keeps belongs to one of its live
//!   contracts, whose books count exactly those bytes.
//!
//! Any broken invariant panics with what broke; the seed printed at the
//! start replays the same choices.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::FutureExt;

use jsonrpsee::http_client::HttpClient;
use p2pstore_rpc::{ContractInfo, ContractRole, ContractState, P2pstoreApiClient, PutResult};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::{Daemon, Net, NetOptions, random_file, wait_for};

/// Providers in the network: a put at 2/4 leaves two spares, so a repair
/// always has somewhere to go while one provider is down.
pub const PROVIDERS: usize = 6;
const REDUNDANCY: &str = "2/4";
/// Short periods so that a run crosses many of them.
pub const PERIOD: u32 = 10;
pub const RENEW_BEFORE: u32 = 3;
const GRACE: u32 = 3;
/// High enough that period amounts are not all the dust minimum.
const PRICE: u64 = 1_000_000_000;
/// Largest file a put round stores.
const MAX_FILE: usize = 3 << 20;
/// How often a retried operation is tried before the run fails.
const ATTEMPTS: usize = 6;

/// The work a kill point interrupts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Work {
    Put,
    Repair,
    Period,
    Delete,
}

/// Whom the kill point kills.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Victim {
    Client,
    Provider,
}

const POINTS: [(Work, Victim); 8] = [
    (Work::Put, Victim::Client),
    (Work::Put, Victim::Provider),
    (Work::Repair, Victim::Client),
    (Work::Repair, Victim::Provider),
    (Work::Period, Victim::Client),
    (Work::Period, Victim::Provider),
    (Work::Delete, Victim::Client),
    (Work::Delete, Victim::Provider),
];

pub struct Options {
    pub rounds: usize,
    pub seed: u64,
    /// Keep the network's directory (logs, data) even when all is well.
    pub keep: bool,
}

/// Kill points by kind, and how many landed while the work ran.
#[derive(Debug, Default)]
pub struct Report {
    pub seed: u64,
    /// (work, victim) → (kills, kills while the work was in flight).
    pub kills: BTreeMap<(Work, Victim), (usize, usize)>,
    pub puts_acknowledged: usize,
    pub files_deleted: usize,
    pub files_read_back: usize,
    pub contracts_checked: usize,
    pub payments_on_chain: usize,
    pub sat_paid: u64,
    pub shard_files: usize,
    pub quarantined_files: usize,
    pub contracts_collected: usize,
    pub elapsed: Duration,
}

impl Report {
    pub fn total_kills(&self) -> usize {
        self.kills.values().map(|k| k.0).sum()
    }

    pub fn in_flight_kills(&self) -> usize {
        self.kills.values().map(|k| k.1).sum()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "chaos: seed {}", self.seed)?;
        writeln!(
            f,
            "{:<8} {:<9} {:>6} {:>10}",
            "work", "killed", "kills", "in flight"
        )?;
        for ((w, v), (n, live)) in &self.kills {
            writeln!(
                f,
                "{:<8} {:<9} {n:>6} {live:>10}",
                format!("{w:?}"),
                format!("{v:?}")
            )?;
        }
        writeln!(
            f,
            "{:<18} {:>6} {:>10}",
            "total",
            self.total_kills(),
            self.in_flight_kills()
        )?;
        writeln!(f, "acknowledged puts:  {}", self.puts_acknowledged)?;
        writeln!(f, "files deleted:      {}", self.files_deleted)?;
        writeln!(f, "read back, byte-identical: {}", self.files_read_back)?;
        writeln!(
            f,
            "contracts checked against the chain: {} ({} payments, {} sat; none twice)",
            self.contracts_checked, self.payments_on_chain, self.sat_paid
        )?;
        writeln!(
            f,
            "contracts collected by providers: {}",
            self.contracts_collected
        )?;
        writeln!(
            f,
            "shard files kept: {} (all owned by live contracts); quarantined: {}",
            self.shard_files, self.quarantined_files
        )?;
        write!(f, "elapsed: {:.0} s", self.elapsed.as_secs_f64())
    }
}

/// A file a put acknowledged.
struct Acked {
    file_id: String,
    digest: [u8; 32],
}

struct Chaos {
    net: Net,
    rng: StdRng,
    report: Report,
    files: Vec<Acked>,
    /// Per kind of work, the span after its start within which a kill is
    /// drawn: it grows when a kill lands after the work and shrinks when it
    /// lands inside, so that most kills land inside.
    window_ms: BTreeMap<Work, f64>,
    round: usize,
}

/// Runs the harness; panics on a broken invariant.
pub async fn run(opts: Options) -> Report {
    let started = Instant::now();
    let net = Net::start(NetOptions {
        providers: PROVIDERS,
        redundancy: REDUNDANCY.into(),
        base_price: PRICE,
        client_args: crate::period_args(PERIOD, RENEW_BEFORE),
        provider_args: vec![
            "--grace-blocks".into(),
            GRACE.to_string(),
            "--min-term-blocks".into(),
            "5".into(),
        ],
        ..Default::default()
    })
    .await;
    let mut chaos = Chaos {
        net,
        rng: StdRng::seed_from_u64(opts.seed),
        report: Report {
            seed: opts.seed,
            ..Default::default()
        },
        files: Vec::new(),
        window_ms: [
            (Work::Put, 1500.0),
            (Work::Repair, 1000.0),
            (Work::Period, 100.0),
            (Work::Delete, 20.0),
        ]
        .into(),
        round: 0,
    };
    let outcome = AssertUnwindSafe(chaos.play(opts.rounds))
        .catch_unwind()
        .await;
    if opts.keep {
        chaos.net.dir.disable_cleanup(true);
        eprintln!("chaos: kept {}", chaos.net.dir.path().display());
    }
    if let Err(panic) = outcome {
        // Keep the daemons' logs and data for a look.
        chaos.net.dir.disable_cleanup(true);
        eprintln!("chaos: kept {}", chaos.net.dir.path().display());
        std::panic::resume_unwind(panic);
    }
    chaos.report.elapsed = started.elapsed();
    chaos.report
}

impl Chaos {
    /// The kill points, then the checks.
    async fn play(&mut self, rounds: usize) {
        // A few files first, so that repairs, payments and deletes have
        // work; kills during puts start inside the time they took.
        let started = Instant::now();
        for _ in 0..3 {
            self.put_unharmed().await;
        }
        self.window_ms
            .insert(Work::Put, started.elapsed().as_secs_f64() * 1000.0 / 3.0);
        for round in 0..rounds {
            self.round = round;
            let (work, victim) = POINTS[self.rng.random_range(0..POINTS.len())];
            let live = match work {
                Work::Put => self.put(victim).await,
                Work::Repair => self.repair(victim).await,
                Work::Period => self.period(victim).await,
                Work::Delete => self.delete(victim).await,
            };
            let window = self.window_ms.entry(work).or_insert(100.0);
            *window = if live {
                *window * 1.2
            } else {
                (*window * 0.5).max(2.0)
            };
            let entry = self.report.kills.entry((work, victim)).or_default();
            entry.0 += 1;
            entry.1 += usize::from(live);
            eprintln!(
                "chaos round {round}: {work:?}, killed the {victim:?}, {}",
                if live { "in flight" } else { "after the work" }
            );
        }
        self.settle_and_check().await;
    }
}

/// Puts the file at `path` (kept, with operation id `op_id`) through
/// `rpc`, a client the caller may move into a task.
async fn put_rpc(rpc: HttpClient, path: PathBuf, op_id: String) -> Result<PutResult, String> {
    rpc.put(
        path.to_string_lossy().into(),
        None,
        None,
        Some(true),
        None,
        Some(op_id),
    )
    .await
    .map_err(|e| e.to_string())
}

impl Chaos {
    /// A moment, after the start of `work`, to kill at.
    fn moment(&mut self, work: Work) -> Duration {
        let window = self.window_ms.get(&work).copied().unwrap_or(100.0);
        Duration::from_secs_f64(self.rng.random_range(0.0..window) / 1000.0)
    }

    fn running_providers(&self) -> Vec<usize> {
        (0..self.net.providers.len())
            .filter(|&i| self.net.providers[i].pid().is_some())
            .collect()
    }

    /// Kills the client, or a provider among `among` (any running one when
    /// empty); returns the provider's index.
    fn kill(&mut self, victim: Victim, among: &[usize]) -> Option<usize> {
        match victim {
            Victim::Client => {
                self.net.client.kill();
                None
            }
            Victim::Provider => {
                let pool = if among.is_empty() {
                    self.running_providers()
                } else {
                    among.to_vec()
                };
                let i = pool[self.rng.random_range(0..pool.len())];
                self.net.providers[i].kill();
                Some(i)
            }
        }
    }

    /// Restarts whatever is down and waits until the client sees every
    /// provider again.
    async fn heal(&mut self) {
        if self.net.client.pid().is_none() {
            self.net.client.start().await;
        }
        for p in &mut self.net.providers {
            if p.pid().is_none() {
                p.start().await;
            }
        }
        self.net.wait_for_providers(PROVIDERS).await;
    }

    fn new_file(&mut self) -> (std::path::PathBuf, [u8; 32], String) {
        let len = self.rng.random_range((256 << 10)..MAX_FILE);
        let n = self.files.len() + self.report.files_deleted;
        let path = self
            .net
            .dir
            .path()
            .join(format!("chaos-{}-{n}.bin", self.round));
        let digest = random_file(&path, len);
        let op = format!("chaos-put-{}-{n}", self.round);
        (path, digest, op)
    }

    /// Puts until acknowledged, retrying the same operation (as
    /// `p2pstore-cli put` does) across crashes and restarts.
    async fn finish_put(&mut self, path: &Path, digest: [u8; 32], op: &str) {
        let mut last = String::new();
        for _ in 0..ATTEMPTS {
            match put_rpc(self.net.client.rpc(), path.to_path_buf(), op.to_string()).await {
                Ok(put) => {
                    self.files.push(Acked {
                        file_id: put.file_id,
                        digest,
                    });
                    self.report.puts_acknowledged += 1;
                    return;
                }
                Err(e) => last = e,
            }
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
        panic!("put {op} never succeeded after a kill: {last}");
    }

    async fn put_unharmed(&mut self) {
        let (path, digest, op) = self.new_file();
        self.finish_put(&path, digest, &op).await;
    }

    /// A put with a kill somewhere inside it.
    async fn put(&mut self, victim: Victim) -> bool {
        let (path, digest, op) = self.new_file();
        let task = tokio::spawn(put_rpc(self.net.client.rpc(), path.clone(), op.clone()));
        let wait = self.moment(Work::Put);
        tokio::time::sleep(wait).await;
        let live = !task.is_finished();
        self.kill(victim, &[]);
        let _ = task.await;
        self.heal().await;
        self.finish_put(&path, digest, &op).await;
        live
    }

    /// The providers holding shards of an acknowledged file, by index.
    async fn holders(&self, file_id: &str) -> Vec<usize> {
        let stat = self.net.client.rpc().stat(file_id.into()).await.unwrap();
        let mut out = Vec::new();
        for peer in &stat.providers {
            out.push(self.net.provider_by_peer(peer).await);
        }
        out
    }

    /// One provider of a file goes down; the repair that moves its shards
    /// is killed part way (or a provider is killed under it); then the
    /// repair is run again to the end.
    async fn repair(&mut self, victim: Victim) -> bool {
        let file = self.rng.random_range(0..self.files.len());
        let file_id = self.files[file].file_id.clone();
        let holders = self.holders(&file_id).await;
        let down = holders[self.rng.random_range(0..holders.len())];
        let gone = self.net.providers[down].peer_id().await;
        self.net.providers[down].kill();
        // A provider counts as offline, and its shards move, once this many
        // audits in a row went unanswered.
        for _ in 0..p2pstored::config::DEFAULT_AUDIT_OFFLINE_AFTER {
            self.net
                .client
                .rpc()
                .audit(Some(file_id.clone()))
                .await
                .unwrap();
        }
        let client = self.net.client.rpc();
        let id = file_id.clone();
        let task = tokio::spawn(async move { client.repair(Some(id)).await });
        let wait = self.moment(Work::Repair);
        tokio::time::sleep(wait).await;
        let live = !task.is_finished();
        let others: Vec<usize> = self
            .running_providers()
            .into_iter()
            .filter(|&i| i != down)
            .collect();
        self.kill(victim, &others);
        let _ = task.await;
        // The repair again, to the end, with the first provider still down
        // (the killed one is back).
        if self.net.client.pid().is_none() {
            self.net.client.start().await;
        }
        for (i, p) in self.net.providers.iter_mut().enumerate() {
            if i != down && p.pid().is_none() {
                p.start().await;
            }
        }
        self.net.wait_for_providers(PROVIDERS - 1).await;
        let mut last = String::new();
        let mut done = false;
        for _ in 0..ATTEMPTS {
            match self.net.client.rpc().repair(Some(file_id.clone())).await {
                Ok(r) if r.unrecoverable_segments == 0 => {
                    done = true;
                    break;
                }
                Ok(r) => last = format!("{r:?}"),
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
        assert!(done, "repair of {file_id} never finished: {last}");
        let stat = self.net.client.rpc().stat(file_id.clone()).await.unwrap();
        assert!(
            !stat.providers.contains(&gone),
            "the repair left {file_id} on the stopped provider"
        );
        self.heal().await;
        live
    }

    /// Live client contracts.
    async fn client_contracts(&self) -> Vec<ContractInfo> {
        crate::contracts(&self.net.client, ContractRole::Client)
            .await
            .into_iter()
            .filter(|c| c.state == ContractState::Active)
            .collect()
    }

    /// Mines to the next period payment, and kills the client or one of
    /// the providers it pays once the payment is under way.
    async fn period(&mut self, victim: Victim) -> bool {
        let cs = self.client_contracts().await;
        let Some(through) = cs.iter().map(|c| c.paid_through_height).min() else {
            return self.put(victim).await;
        };
        let payees: Vec<usize> = {
            let mut v = Vec::new();
            for c in cs.iter().filter(|c| c.paid_through_height == through) {
                v.push(self.net.provider_by_peer(&c.peer_id).await);
            }
            v
        };
        let mut log = LogTail::at_end(&self.net.client);
        let tip = self.net.bitcoind.height().await as u32;
        self.net
            .bitcoind
            .mine_burn((through - RENEW_BEFORE).saturating_sub(tip).max(1))
            .await;
        // The payment is under way once the client picks its fee rate.
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(12) && !log.seen("payment fee rate") {
            // A payment takes tens of milliseconds: look often.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let wait = self.moment(Work::Period);
        tokio::time::sleep(wait).await;
        let paid = self
            .client_contracts()
            .await
            .iter()
            .filter(|c| cs.iter().any(|o| o.contract_id == c.contract_id))
            .all(|c| c.paid_through_height > through);
        let live = log.seen_any() && !paid;
        self.kill(victim, &payees);
        self.heal().await;
        live
    }

    /// Deletes an acknowledged file; the client or a provider holding its
    /// shards is killed part way. The delete is retried to the end.
    async fn delete(&mut self, victim: Victim) -> bool {
        if self.files.len() < 3 {
            return self.put(victim).await;
        }
        let file = self.rng.random_range(0..self.files.len());
        let file_id = self.files[file].file_id.clone();
        let holders = self.holders(&file_id).await;
        let client = self.net.client.rpc();
        let id = file_id.clone();
        let task = tokio::spawn(async move { client.rm(id).await });
        let wait = self.moment(Work::Delete);
        tokio::time::sleep(wait).await;
        let live = !task.is_finished();
        self.kill(victim, &holders);
        let _ = task.await;
        self.heal().await;
        // Gone, or deleted now.
        let listed = self
            .net
            .client
            .rpc()
            .ls()
            .await
            .unwrap()
            .iter()
            .any(|f| f.file_id == file_id);
        if listed {
            self.net.client.rpc().rm(file_id.clone()).await.unwrap();
        }
        self.files.remove(file);
        self.report.files_deleted += 1;
        live
    }

    /// Brings everything up, lets payments confirm and notices arrive,
    /// then checks every invariant.
    async fn settle_and_check(&mut self) {
        self.heal().await;
        self.settle_payments().await;
        self.check_files().await;
        self.check_payments().await;
        self.check_shards().await;
    }

    /// Mines until no payment is pending anywhere: bitcoind's mempool is
    /// empty and each provider's books agree with the client's.
    async fn settle_payments(&mut self) {
        let net = &self.net;
        wait_for("payments to settle", 180, || async {
            net.bitcoind.mine_burn(1).await;
            net.wait_synced().await;
            // A reconciliation round or two, to send outstanding notices.
            tokio::time::sleep(Duration::from_secs(6)).await;
            if !net.bitcoind.mempool().await.is_empty() {
                return None;
            }
            let mine = net.client.rpc().contracts().await.ok()?;
            for p in &net.providers {
                let theirs = p.rpc().contracts().await.ok()?;
                for t in theirs.iter().filter(|c| c.role == ContractRole::Provider) {
                    let m = mine.iter().find(|m| m.contract_id == t.contract_id)?;
                    if m.payment_txids != t.payment_txids {
                        return None;
                    }
                }
            }
            Some(())
        })
        .await;
    }

    async fn check_files(&mut self) {
        for (i, f) in self.files.iter().enumerate() {
            self.net
                .assert_get(&f.file_id, f.digest, &format!("chaos-{i}"))
                .await;
        }
        self.report.files_read_back = self.files.len();
    }

    /// Every output the chain pays to each contract's payout address,
    /// against what the client and the provider recorded.
    async fn check_payments(&mut self) {
        let chain = ChainView::read(&self.net).await;
        let mine = crate::contracts(&self.net.client, ContractRole::Client).await;
        let tip = self.net.bitcoind.height().await as u32;
        let mut addresses = BTreeSet::new();
        for c in &mine {
            assert!(
                addresses.insert(c.payout_address.clone()),
                "two contracts share payout address {}",
                c.payout_address
            );
        }
        let mut theirs: BTreeMap<String, (usize, ContractInfo)> = BTreeMap::new();
        for (i, p) in self.net.providers.iter().enumerate() {
            for c in p.rpc().contracts().await.unwrap() {
                if c.role == ContractRole::Provider {
                    theirs.insert(c.contract_id.clone(), (i, c));
                }
            }
        }
        let mut received = vec![0u64; self.net.providers.len()];
        for c in &mine {
            let paid = chain.paid_to(&c.payout_address);
            let chain_txids: BTreeSet<&str> = paid.iter().map(|(t, _)| t.as_str()).collect();
            let sum: u64 = paid.iter().map(|(_, v)| v).sum();
            let recorded: BTreeSet<&str> = c.payment_txids.iter().map(String::as_str).collect();
            assert_eq!(
                recorded.len(),
                c.payment_txids.len(),
                "contract {} lists a payment twice: {:?}",
                c.contract_id,
                c.payment_txids
            );
            assert_eq!(
                chain_txids, recorded,
                "contract {}: the chain's payments differ from the client's",
                c.contract_id
            );
            assert_eq!(
                paid.len(),
                chain_txids.len(),
                "contract {}: one transaction pays it twice",
                c.contract_id
            );
            assert_eq!(sum, c.paid_sat, "contract {}: client's sum", c.contract_id);
            // Never more than the next period ahead of the chain.
            assert!(
                c.paid_through_height <= tip + c.period_blocks + RENEW_BEFORE,
                "contract {} is paid through {} at tip {tip}: paid ahead",
                c.contract_id,
                c.paid_through_height
            );
            match theirs.get(&c.contract_id) {
                Some((i, t)) => {
                    assert_eq!(
                        t.payment_txids, c.payment_txids,
                        "contract {}: provider's payments differ from the client's",
                        c.contract_id
                    );
                    assert_eq!(
                        t.paid_sat, sum,
                        "contract {}: provider's sum",
                        c.contract_id
                    );
                    received[*i] += sum;
                }
                None => assert_eq!(
                    sum, 0,
                    "contract {} was paid but its provider never recorded it",
                    c.contract_id
                ),
            }
            self.report.payments_on_chain += paid.len();
            self.report.sat_paid += sum;
        }
        for (id, (_, t)) in &theirs {
            assert!(
                mine.iter().any(|c| &c.contract_id == id),
                "provider contract {id} ({:?}) is unknown to the client",
                t.state
            );
        }
        for (i, p) in self.net.providers.iter().enumerate() {
            let b = p.rpc().wallet_balance().await.unwrap();
            assert_eq!(
                b.confirmed_sat + b.unconfirmed_sat + b.immature_sat,
                received[i],
                "{} holds other than its contracts' payments",
                p.name
            );
        }
        self.report.contracts_checked = mine.len();
    }

    /// Shard files on each provider's disk against its live contracts.
    async fn check_shards(&mut self) {
        for p in &self.net.providers {
            let live = |s: ContractState| {
                matches!(
                    s,
                    ContractState::Active | ContractState::Provisional | ContractState::Pending
                )
            };
            let cs = p.rpc().contracts().await.unwrap();
            let mut booked = 0u64;
            for c in cs.iter().filter(|c| c.role == ContractRole::Provider) {
                if live(c.state) {
                    booked += c.stored_bytes;
                } else {
                    self.report.contracts_collected += 1;
                    assert_eq!(
                        c.stored_bytes, 0,
                        "{}: ended contract {} still holds shards",
                        p.name, c.contract_id
                    );
                }
            }
            let files = crate::shard_files(p);
            let on_disk: u64 = files
                .iter()
                .map(|f| std::fs::metadata(f).map(|m| m.len()).unwrap_or(0))
                .sum();
            assert_eq!(
                on_disk,
                booked,
                "{}: {} shard files hold {on_disk} bytes, its live contracts {booked}",
                p.name,
                files.len()
            );
            self.report.shard_files += files.len();
            self.report.quarantined_files += std::fs::read_dir(p.datadir.join("shards/quarantine"))
                .map(|d| d.count())
                .unwrap_or(0);
        }
    }
}

/// New lines of a daemon's log since the harness started watching.
struct LogTail {
    path: std::path::PathBuf,
    offset: u64,
    any: bool,
}

impl LogTail {
    fn at_end(d: &Daemon) -> LogTail {
        let path = d.datadir.join("p2pstored.log");
        let offset = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        LogTail {
            path,
            offset,
            any: false,
        }
    }

    /// Whether `needle` appears in the log after the offset (reading on
    /// from where the last call stopped).
    fn seen(&mut self, needle: &str) -> bool {
        use std::io::{Read, Seek, SeekFrom};
        let Ok(mut f) = std::fs::File::open(&self.path) else {
            return false;
        };
        if f.seek(SeekFrom::Start(self.offset)).is_err() {
            return false;
        }
        let mut text = String::new();
        let _ = f.read_to_string(&mut text);
        // Only whole lines: a line being written is read next time.
        let whole = text.rfind('\n').map_or(0, |i| i + 1);
        let found = text[..whole].contains(needle);
        self.offset += whole as u64;
        self.any |= found;
        found
    }

    fn seen_any(&self) -> bool {
        self.any
    }
}

/// Every transaction output in bitcoind's chain, by address: its view,
/// independent of any wallet.
struct ChainView {
    by_address: BTreeMap<String, Vec<(String, u64)>>,
}

impl ChainView {
    async fn read(net: &Net) -> ChainView {
        let mut by_address: BTreeMap<String, Vec<(String, u64)>> = BTreeMap::new();
        let tip = net.bitcoind.height().await;
        for h in 1..=tip {
            let hash = net
                .bitcoind
                .call("getblockhash", serde_json::json!([h]))
                .await
                .unwrap();
            let block = net
                .bitcoind
                .call("getblock", serde_json::json!([hash, 2]))
                .await
                .unwrap();
            for tx in block["tx"].as_array().into_iter().flatten() {
                let txid = tx["txid"].as_str().unwrap_or_default().to_string();
                for out in tx["vout"].as_array().into_iter().flatten() {
                    let Some(addr) = out["scriptPubKey"]["address"].as_str() else {
                        continue;
                    };
                    // BTC with eight decimals, exactly representable in sat.
                    let sat = (out["value"].as_f64().unwrap_or(0.0) * 1e8).round() as u64;
                    by_address
                        .entry(addr.to_string())
                        .or_default()
                        .push((txid.clone(), sat));
                }
            }
        }
        ChainView { by_address }
    }

    fn paid_to(&self, address: &str) -> &[(String, u64)] {
        self.by_address
            .get(address)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }
}
