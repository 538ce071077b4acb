//! Prometheus metrics: p2pstore's own, and libp2p's (swarm, Kademlia,
//! identify, ping, bandwidth) in the same registry, served as OpenMetrics
//! text at `http://<metrics_bind>/metrics` when `--metrics-bind` is set.
//!
//! Counters move with events ([`Metrics::record`], called by
//! `Events::emit`); gauges of state (space, contracts, balance, peers,
//! scores) are read from the node at each scrape ([`Snapshot`]), so they
//! cannot drift from what `status` and `contracts` say.

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use p2pstore_rpc::{ContractRole, ContractState, EventKind};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tracing::{info, warn};

use crate::error::{Error, Result};

/// Every metric name starts with this (`p2pstore_...`); libp2p's own
/// start with `libp2p_`.
pub const METRICS_PREFIX: &str = "p2pstore";
/// The one path served.
pub const METRICS_PATH: &str = "/metrics";
/// Scrapers connected at once.
const MAX_METRICS_CONNECTIONS: usize = 16;
/// How long a connection may take to send a request's headers: a silent
/// one gives its slot back.
const METRICS_HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// OpenMetrics, the format `encode` writes.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

type Labels = Vec<(&'static str, String)>;

fn labels(pairs: &[(&'static str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| (*k, v.to_string())).collect()
}

/// The state read at a scrape; None where the node has no such part
/// (no store on a client, no wallet on a seed).
#[derive(Default)]
pub struct Snapshot {
    pub stored_bytes: Option<u64>,
    pub stored_shards: Option<u64>,
    pub capacity_bytes: Option<u64>,
    pub files: Option<u64>,
    /// Confirmed, unconfirmed, immature.
    pub balance_sat: Option<[u64; 3]>,
    pub connected_peers: u64,
    pub dht_peers: u64,
    pub refused_requests: u64,
    pub contracts: Vec<(ContractRole, ContractState)>,
    /// Each provider's audit score (clients).
    pub audit_scores: Vec<(String, f64)>,
}

#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Mutex<Registry>,
    /// Held from refresh to encode, so one scrape never sees another's
    /// half-refilled families.
    scrape: tokio::sync::Mutex<()>,
    transfers: Family<Labels, Counter>,
    transfer_bytes: Family<Labels, Counter>,
    repairs: Family<Labels, Counter>,
    repaired_shards: Counter,
    repaired_bytes: Counter,
    audits_answered: Family<Labels, Counter>,
    audit_challenges_answered: Family<Labels, Counter>,
    audits: Family<Labels, Counter>,
    payments_sent: Counter,
    sent_sat: Counter,
    received_sat: Family<Labels, Counter>,
    contract_events: Family<Labels, Counter>,
    providers_offline: Counter,
    stored_bytes: Gauge,
    stored_shards: Gauge,
    capacity_bytes: Gauge,
    files: Gauge,
    wallet_balance_sat: Family<Labels, Gauge>,
    connected_peers: Gauge,
    dht_peers: Gauge,
    refused_requests: Counter,
    contracts: Family<Labels, Gauge>,
    audit_score: Family<Labels, Gauge<f64, AtomicU64>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let mut inner = Inner {
            registry: Mutex::new(Registry::default()),
            scrape: Default::default(),
            transfers: Default::default(),
            transfer_bytes: Default::default(),
            repairs: Default::default(),
            repaired_shards: Default::default(),
            repaired_bytes: Default::default(),
            audits_answered: Default::default(),
            audit_challenges_answered: Default::default(),
            audits: Default::default(),
            payments_sent: Default::default(),
            sent_sat: Default::default(),
            received_sat: Default::default(),
            contract_events: Default::default(),
            providers_offline: Default::default(),
            stored_bytes: Default::default(),
            stored_shards: Default::default(),
            capacity_bytes: Default::default(),
            files: Default::default(),
            wallet_balance_sat: Default::default(),
            connected_peers: Default::default(),
            dht_peers: Default::default(),
            refused_requests: Default::default(),
            contracts: Default::default(),
            audit_score: Default::default(),
        };
        {
            let r = registry.sub_registry_with_prefix(METRICS_PREFIX);
            let i = &inner;
            // Each field under its own name (`p2pstore_` prefixed).
            macro_rules! register {
                ($($field:ident: $help:literal;)+) => {
                    $(r.register(stringify!($field), $help, i.$field.clone());)+
                };
            }
            register! {
                transfers: "Puts and gets ended, by transfer and outcome";
                transfer_bytes: "Bytes of files put or got by transfers that succeeded";
                repairs: "Repairs ended, by outcome";
                repaired_shards: "Shards rebuilt and stored again by repairs";
                repaired_bytes: "Bytes of the shards repairs rebuilt";
                audits: "Audits this client sent, by outcome";
                audits_answered: "Audits this provider answered, by outcome (answered, refused)";
                audit_challenges_answered: "Audit challenges this provider answered, by outcome (proved, missing)";
                payments_sent: "Payment transactions broadcast";
                sent_sat: "Satoshis paid to providers, fees not included";
                received_sat: "Satoshis credited by this provider, by payment kind";
                contract_events: "Contracts formed, paid, renewed and ended";
                providers_offline: "Times a provider in use stopped answering";
                stored_bytes: "Bytes of shards this provider holds";
                stored_shards: "Shards this provider holds";
                capacity_bytes: "Storage this provider offers";
                files: "Files in this client's index";
                wallet_balance_sat: "Wallet balance, by state";
                connected_peers: "Peers with an open connection";
                dht_peers: "Peers in the Kademlia routing table";
                refused_requests: "Inbound peer requests refused: over a quota, malformed, or every slot taken";
                contracts: "Contracts, by role and state";
                audit_score: "Each provider's audit score (0 to 1), as this client sees it";
            }
        }
        inner.registry = Mutex::new(registry);
        Metrics {
            inner: Arc::new(inner),
        }
    }

    /// The registry, for another part (libp2p's recorders) to register
    /// its metrics in. A panic while it was held left it usable.
    pub fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.inner
            .registry
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Counts one event.
    pub fn record(&self, kind: &EventKind) {
        let i = &self.inner;
        match kind {
            EventKind::Progress {
                transfer,
                finished: true,
                error,
                total_bytes,
                ..
            } => {
                let outcome = if error.is_some() { "failed" } else { "ok" };
                i.transfers
                    .get_or_create(&labels(&[
                        ("transfer", transfer.as_str()),
                        ("outcome", outcome),
                    ]))
                    .inc();
                if error.is_none() {
                    i.transfer_bytes
                        .get_or_create(&labels(&[("transfer", transfer.as_str())]))
                        .inc_by(*total_bytes);
                }
            }
            EventKind::Progress { .. } => {}
            EventKind::RepairStarted { .. } => {}
            EventKind::RepairFinished {
                shards,
                bytes,
                error,
                ..
            } => {
                let outcome = if error.is_some() { "failed" } else { "ok" };
                i.repairs
                    .get_or_create(&labels(&[("outcome", outcome)]))
                    .inc();
                i.repaired_shards.inc_by(*shards);
                i.repaired_bytes.inc_by(*bytes);
            }
            EventKind::AuditAnswered {
                challenges,
                missing,
                refused,
                ..
            } => {
                let outcome = if refused.is_some() {
                    "refused"
                } else {
                    "answered"
                };
                i.audits_answered
                    .get_or_create(&labels(&[("outcome", outcome)]))
                    .inc();
                if refused.is_none() {
                    let challenges_by = |o: &str| {
                        i.audit_challenges_answered
                            .get_or_create(&labels(&[("outcome", o)]))
                            .clone()
                    };
                    challenges_by("proved").inc_by(challenges - missing);
                    challenges_by("missing").inc_by(*missing);
                }
            }
            EventKind::AuditPassed { .. } => {
                i.audits
                    .get_or_create(&labels(&[("outcome", "passed")]))
                    .inc();
            }
            EventKind::AuditFailed { .. } => {
                i.audits
                    .get_or_create(&labels(&[("outcome", "failed")]))
                    .inc();
            }
            EventKind::PaymentSent {
                amount_sat,
                replaces,
                ..
            } => {
                i.payments_sent.inc();
                // A fee bump sends the same money again, at most one of
                // them confirms.
                if replaces.is_none() {
                    i.sent_sat.inc_by(*amount_sat);
                }
            }
            EventKind::PaymentReceived {
                amount_sat, kind, ..
            } => {
                i.received_sat
                    .get_or_create(&labels(&[("kind", kind.as_str())]))
                    .inc_by(*amount_sat);
            }
            EventKind::ContractFormed { .. } => self.contract_event("formed"),
            EventKind::ContractPaid { .. } => self.contract_event("paid"),
            EventKind::ContractRenewed { .. } => self.contract_event("renewed"),
            EventKind::ContractEnded { .. } => self.contract_event("ended"),
            EventKind::ProviderOffline { .. } => {
                i.providers_offline.inc();
            }
        }
    }

    fn contract_event(&self, event: &str) {
        self.inner
            .contract_events
            .get_or_create(&labels(&[("event", event)]))
            .inc();
    }

    fn set_state(&self, s: &Snapshot) {
        let i = &self.inner;
        let set = |g: &Gauge, v: Option<u64>| {
            if let Some(v) = v {
                g.set(i64::try_from(v).unwrap_or(i64::MAX));
            }
        };
        set(&i.stored_bytes, s.stored_bytes);
        set(&i.stored_shards, s.stored_shards);
        set(&i.capacity_bytes, s.capacity_bytes);
        set(&i.files, s.files);
        set(&i.connected_peers, Some(s.connected_peers));
        set(&i.dht_peers, Some(s.dht_peers));
        // The node counts refusals since start; the counter catches up.
        let seen = i.refused_requests.get();
        i.refused_requests
            .inc_by(s.refused_requests.saturating_sub(seen));
        if let Some(b) = s.balance_sat {
            for (state, v) in ["confirmed", "unconfirmed", "immature"].into_iter().zip(b) {
                set(
                    &i.wallet_balance_sat
                        .get_or_create(&labels(&[("state", state)])),
                    Some(v),
                );
            }
        }
        // Refilled whole: a contract that changed state leaves its old
        // label set, and a provider no longer scored leaves the scores.
        i.contracts.clear();
        for (role, state) in &s.contracts {
            i.contracts
                .get_or_create(&labels(&[
                    ("role", role.as_str()),
                    ("state", state.as_str()),
                ]))
                .inc();
        }
        i.audit_score.clear();
        for (peer, score) in &s.audit_scores {
            i.audit_score
                .get_or_create(&labels(&[("peer", peer)]))
                .set(*score);
        }
    }

    /// The metrics as OpenMetrics text, state read from `snapshot` first.
    pub async fn scrape<F, Fut>(&self, snapshot: F) -> Result<String>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Snapshot>>,
    {
        let _one_at_a_time = self.inner.scrape.lock().await;
        self.set_state(&snapshot().await?);
        let mut out = String::new();
        let registry = self
            .inner
            .registry
            .lock()
            .map_err(|_| Error::Internal("metrics registry poisoned".into()))?;
        encode(&mut out, &registry).map_err(|e| Error::Internal(e.to_string()))?;
        Ok(out)
    }
}

impl Metrics {
    /// A provider's audit answers since start, for `status`: challenges
    /// proved and missing, and audits refused.
    pub fn audit_answers(&self) -> (u64, u64, u64) {
        let i = &self.inner;
        let challenges = |o: &str| {
            i.audit_challenges_answered
                .get_or_create(&labels(&[("outcome", o)]))
                .get()
        };
        let refused = i
            .audits_answered
            .get_or_create(&labels(&[("outcome", "refused")]))
            .get();
        (challenges("proved"), challenges("missing"), refused)
    }
}

/// Serves `GET /metrics` on `bind` until the returned task is aborted.
/// Unauthenticated, as Prometheus expects: bind it to loopback or a
/// private network. `scrape` produces the body.
pub async fn serve<F, Fut>(
    bind: SocketAddr,
    scrape: F,
) -> Result<(tokio::task::JoinHandle<()>, SocketAddr)>
where
    F: Fn() -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<String>> + Send,
{
    use http_body_util::Full;
    use hyper::body::Bytes;
    use hyper::{Method, Response, StatusCode};

    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .map_err(|e| Error::Bind {
            addr: bind.to_string(),
            reason: e.to_string(),
        })?;
    let addr = listener.local_addr()?;
    info!(%addr, "serving metrics at http://{addr}{METRICS_PATH}");
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_METRICS_CONNECTIONS));
    let task = tokio::spawn(async move {
        loop {
            // A scraper holds one slot while connected; past the limit new
            // connections wait in the kernel's backlog.
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return;
            };
            let (stream, _) = match listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    warn!("metrics: accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let scrape = scrape.clone();
            let service = hyper::service::service_fn(move |req: hyper::Request<_>| {
                let scrape = scrape.clone();
                async move {
                    let reply = |status: StatusCode, ctype: &str, body: String| {
                        Response::builder()
                            .status(status)
                            .header(hyper::header::CONTENT_TYPE, ctype)
                            .body(Full::new(Bytes::from(body)))
                    };
                    if req.method() != Method::GET || req.uri().path() != METRICS_PATH {
                        return reply(
                            StatusCode::NOT_FOUND,
                            "text/plain",
                            format!("only GET {METRICS_PATH} is served here\n"),
                        );
                    }
                    match scrape().await {
                        Ok(body) => reply(StatusCode::OK, CONTENT_TYPE, body),
                        Err(e) => reply(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            "text/plain",
                            format!("{e}\n"),
                        ),
                    }
                }
            });
            tokio::spawn(async move {
                let io = hyper_util::rt::TokioIo::new(stream);
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(METRICS_HEADER_TIMEOUT)
                    .serve_connection(io, service);
                if let Err(e) = conn.await {
                    tracing::debug!("metrics connection: {e}");
                }
                drop(slot);
            });
        }
    });
    Ok((task, addr))
}
