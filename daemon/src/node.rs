//! The node: its lifecycle (uninitialized → locked → running) and the
//! services it runs once the account is unlocked. RPC calls land here and
//! flow one way, to the client, provider and network services.

use std::sync::Arc;

use libp2p::identity::Keypair;
use p2pstore_rpc::{ContractRole as NodeContractRole, NodeRole, NodeState};
use tokio::sync::RwLock;
use tracing::{info, warn};
use zeroize::Zeroizing;

use crate::client::{ClientService, ClientTerms};
use crate::config::Config;

use crate::error::{Error, Result};
use crate::events::Events;
use crate::keys::{self, AccountKeys, Keystore};
use crate::metrics::{Metrics, Snapshot};
use crate::network::{self, NetworkConfig};
use crate::progress;
use crate::provider::{ProviderService, store::ShardStore};
use crate::wallet::WalletService;

pub struct Services {
    pub net: network::Client,
    pub client: Option<ClientService>,
    pub provider: ProviderService,
    pub wallet: Option<WalletService>,
    pub roles: Vec<NodeRole>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Services {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        if let Some(w) = &self.wallet {
            w.shutdown();
        }
    }
}

enum State {
    Uninitialized,
    Locked,
    Running(Arc<Services>),
}

/// What [`Node::init`] made.
pub struct Created {
    /// The new phrase, to show once; None when restoring.
    pub mnemonic: Option<Zeroizing<String>>,
    pub peer_id: String,
    pub birthday_height: u32,
}

#[derive(Clone)]
pub struct Node {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: Config,
    db: sled::Db,
    state: RwLock<State>,
    progress: progress::Registry,
    events: Events,
    /// Where the metrics server listens, once it does.
    metrics_addr: std::sync::OnceLock<std::net::SocketAddr>,
}

impl Node {
    /// Opens the node's database and, where the account can be unlocked
    /// without asking (bootstrap role, or a password given), starts it.
    /// With `--init` it creates the account and returns the new recovery
    /// phrase: showing it is the caller's job, as a library never writes to
    /// the terminal.
    pub async fn start(cfg: Config) -> Result<(Node, Option<Zeroizing<String>>)> {
        let db = crate::db::open(&cfg.datadir.join("db"))?;
        let keystore = Keystore::new(&cfg.datadir);
        let events = Events::new(Metrics::new());
        let node = Node {
            inner: Arc::new(Inner {
                db,
                state: RwLock::new(State::Uninitialized),
                progress: progress::Registry::new(events.clone()),
                events,
                metrics_addr: Default::default(),
                cfg,
            }),
        };
        let cfg = &node.inner.cfg;
        if cfg.seed {
            let key = keys::load_or_create_node_key(&cfg.datadir.join("node.key"))?;
            let services = node.start_services(key, None).await?;
            *node.inner.state.write().await = State::Running(services);
        } else if keystore.exists() {
            *node.inner.state.write().await = State::Locked;
            if let Some(pw) = cfg.password.clone() {
                node.unlock(pw).await?;
            } else {
                info!("keystore locked: run `p2pstore-cli unlock`");
            }
        } else if cfg.init {
            let pw = cfg.password.clone().ok_or_else(|| {
                Error::Config(
                    "--init needs a password: --password-file or P2PSTORE_PASSWORD".into(),
                )
            })?;
            let created = node.init(pw, None, None).await?;
            return Ok((node, created.mnemonic));
        } else {
            info!("no account yet: run `p2pstore-cli init`");
        }
        Ok((node, None))
    }

    pub fn config(&self) -> &Config {
        &self.inner.cfg
    }

    pub fn events(&self) -> &Events {
        &self.inner.events
    }

    /// Records where the metrics server listens, for `status`.
    pub fn set_metrics_addr(&self, addr: std::net::SocketAddr) {
        let _ = self.inner.metrics_addr.set(addr);
    }

    pub fn progress(&self) -> &progress::Registry {
        &self.inner.progress
    }

    pub async fn services(&self) -> Result<Arc<Services>> {
        match &*self.inner.state.read().await {
            State::Running(s) => Ok(s.clone()),
            State::Locked => Err(Error::Locked),
            State::Uninitialized => Err(Error::NotInitialized),
        }
    }

    pub async fn client(&self) -> Result<ClientService> {
        self.services()
            .await?
            .client
            .clone()
            .ok_or(Error::NoAccount("account"))
    }

    pub async fn state_name(&self) -> NodeState {
        match &*self.inner.state.read().await {
            State::Running(_) => NodeState::Running,
            State::Locked => NodeState::Locked,
            State::Uninitialized => NodeState::Uninitialized,
        }
    }

    /// Creates the account and starts the node.
    pub async fn init(
        &self,
        password: Zeroizing<String>,
        restore: Option<Zeroizing<String>>,
        birthday_height: Option<u32>,
    ) -> Result<Created> {
        let mut state = self.inner.state.write().await;
        if self.inner.cfg.seed || !matches!(*state, State::Uninitialized) {
            return Err(Error::AlreadyInitialized);
        }
        if password.is_empty() {
            return Err(Error::InvalidParams(
                "the password must not be empty".into(),
            ));
        }
        let keystore = Keystore::new(&self.inner.cfg.datadir);
        let restoring = restore.is_some();
        let birthday = self.birthday(restoring, birthday_height).await?;
        let (mnemonic, keys) = tokio::task::spawn_blocking(move || -> Result<_> {
            let mnemonic = match restore {
                Some(words) => keys::parse_mnemonic(&words)?,
                None => keys::generate_mnemonic()?,
            };
            keystore.create(&mnemonic, &password, birthday)?;
            let keys = AccountKeys::from_mnemonic(&mnemonic, birthday)?;
            Ok((Zeroizing::new(mnemonic.to_string()), keys))
        })
        .await??;
        let peer_id = match self.activate(&mut state, keys).await {
            Ok(p) => p,
            Err(e) => {
                // The phrase was never shown: an account nobody can back up
                // must not stay behind. Init can be retried after the fix.
                let _ = std::fs::remove_file(self.inner.cfg.datadir.join(keys::KEYSTORE_FILE));
                return Err(e);
            }
        };
        info!(peer = %peer_id, birthday, "account created");
        Ok(Created {
            mnemonic: (!restoring).then_some(mnemonic),
            peer_id,
            birthday_height: birthday,
        })
    }

    /// The height a new wallet scans from: the one given, if bitcoind has
    /// reached it; else bitcoind's tip for a new account (nothing older
    /// can pay a phrase made now) and genesis for a restore (the phrase
    /// may be years old). A new account whose bitcoind cannot be reached
    /// scans from genesis too: slow, but it misses nothing.
    async fn birthday(&self, restoring: bool, given: Option<u32>) -> Result<u32> {
        if restoring && given.is_none() {
            // Nothing to check against the tip: no wait on a bitcoind
            // that may be down.
            return Ok(0);
        }
        let tip = self.inner.cfg.bitcoind.block_count().await;
        match (given, tip) {
            (Some(h), Ok(tip)) if u64::from(h) > tip => Err(Error::InvalidParams(format!(
                "birthday height {h} is above bitcoind's tip {tip}"
            ))),
            (Some(h), _) => Ok(h),
            (None, Ok(tip)) => Ok(u32::try_from(tip).unwrap_or(u32::MAX)),
            (None, Err(e)) => {
                warn!("bitcoind unreachable ({e}); the new wallet will scan from genesis");
                Ok(0)
            }
        }
    }

    /// Starts the account's services and marks the node running.
    async fn activate(&self, state: &mut State, keys: AccountKeys) -> Result<String> {
        let peer_id = keys.identity.public().to_peer_id().to_string();
        let services = self
            .start_services(keys.identity.clone(), Some(Arc::new(keys)))
            .await?;
        *state = State::Running(services);
        Ok(peer_id)
    }

    pub async fn unlock(&self, password: Zeroizing<String>) -> Result<String> {
        let mut state = self.inner.state.write().await;
        match &*state {
            State::Running(s) => return Ok(s.net.local_peer_id().to_string()),
            State::Uninitialized => return Err(Error::NotInitialized),
            State::Locked => {}
        }
        let keystore = Keystore::new(&self.inner.cfg.datadir);
        let keys = tokio::task::spawn_blocking(move || -> Result<_> { keystore.unlock(&password) })
            .await??;
        let peer_id = self.activate(&mut state, keys).await?;
        info!(peer = %peer_id, "unlocked");
        Ok(peer_id)
    }

    async fn start_services(
        &self,
        identity: Keypair,
        account: Option<Arc<AccountKeys>>,
    ) -> Result<Arc<Services>> {
        let cfg = &self.inner.cfg;
        let db = &self.inner.db;
        let provide = cfg.provider && account.is_some();
        let (net, inbound) = network::spawn(
            identity.clone(),
            NetworkConfig {
                listen: cfg.listen.clone(),
                external: cfg.external.clone(),
                bootstrap: cfg.bootstrap.clone(),
                rendezvous_server: cfg.rendezvous_server,
                provide,
                dht_server: provide || cfg.seed,
                max_outbound_connections: cfg.max_outbound_connections,
                metrics: self.inner.events.metrics().clone(),
                timeouts: network::Timeouts {
                    control: crate::config::CONTROL_TIMEOUT,
                    shard: crate::config::SHARD_TIMEOUT,
                },
            },
        )
        .await?;
        let mut tasks = Vec::new();
        // Every account has a wallet: clients pay from it, providers are
        // paid into it. It opens without bitcoind and syncs when it can.
        let wallet = match &account {
            Some(keys) => {
                let w = WalletService::open(
                    db,
                    &keys.seed,
                    cfg.network,
                    keys.birthday_height,
                    cfg.bitcoind.clone(),
                )?;
                tasks.push(w.spawn_sync());
                Some(w)
            }
            None => None,
        };
        let store = if provide {
            Some(Arc::new(ShardStore::open(
                db,
                &cfg.datadir.join("shards"),
                cfg.capacity,
            )?))
        } else {
            None
        };
        let provider = ProviderService::new(
            db,
            store,
            if provide { wallet.clone() } else { None },
            cfg.terms.clone(),
            cfg.payment_rules,
            identity,
            net.clone(),
            self.inner.events.clone(),
        )?;
        tasks.push(provider.clone().spawn(inbound));
        if provide {
            tasks.push(provider.spawn_gc(crate::config::PROVIDER_GC_INTERVAL));
            tasks.push(provider.spawn_pointer_republish(crate::config::POINTER_REPUBLISH_INTERVAL));
        }
        let client = match (account, &wallet) {
            (Some(keys), Some(w)) => {
                let terms = ClientTerms {
                    max_price_sat_per_gib_month: cfg.max_price_sat_per_gib_month,
                    term_blocks: cfg.term_blocks,
                    period_blocks: cfg.period_blocks,
                    renew_before_blocks: cfg.renew_before_blocks,
                    fees: cfg.fees,
                    budget_warn_periods: cfg.budget_warn_periods,
                    default_scheme: cfg.redundancy,
                    repair_margin: cfg.repair_margin,
                    audit: cfg.audit,
                    backup: crate::client::backup::BackupPolicy {
                        dir: cfg.datadir.join("backup"),
                        debounce: cfg.index_backup,
                    },
                };
                let c = ClientService::new(
                    db,
                    net.clone(),
                    keys,
                    w.clone(),
                    terms,
                    self.inner.progress.clone(),
                    self.inner.events.clone(),
                )
                .await?;
                tasks.push(c.spawn_reconciler(crate::config::CLIENT_RECONCILE_INTERVAL));
                tasks.push(c.spawn_health_check(cfg.health_check));
                tasks.push(c.spawn_auditor(cfg.audit_interval));
                tasks.push(c.directory.spawn_refresh());
                tasks.extend(c.spawn_backup(crate::config::POINTER_REPUBLISH_INTERVAL));
                Some(c)
            }
            _ => None,
        };
        let mut roles = Vec::new();
        if cfg.seed {
            roles.push(NodeRole::Bootstrap);
        }
        if client.is_some() {
            roles.push(NodeRole::Client);
        }
        if provide {
            roles.push(NodeRole::Provider);
        }
        Ok(Arc::new(Services {
            net,
            client,
            provider,
            wallet,
            roles,
            tasks,
        }))
    }

    pub async fn wallet(&self) -> Result<WalletService> {
        self.services()
            .await?
            .wallet
            .clone()
            .ok_or(Error::NoAccount("wallet"))
    }

    pub async fn status(&self) -> Result<p2pstore_rpc::Status> {
        let state = self.state_name().await;
        let mut status = p2pstore_rpc::Status {
            state,
            peer_id: None,
            listen_addrs: vec![],
            dht_peers: 0,
            connected_peers: 0,
            refused_requests: 0,
            roles: vec![],
            metrics_addr: self.inner.metrics_addr.get().map(ToString::to_string),
            audit_challenges_proved: 0,
            audit_challenges_missing: 0,
            audits_refused: 0,
            stored_bytes: 0,
            capacity_bytes: 0,
            free_bytes: 0,
            pending_quotes: 0,
            files: 0,
            network: None,
            tip_height: None,
            birthday_height: None,
            bitcoind_error: None,
            index_seq: None,
            index_backed_up_at: None,
            index_pending: false,
        };
        let Ok(s) = self.services().await else {
            return Ok(status);
        };
        let net = s.net.status().await?;
        status.peer_id = Some(net.peer_id);
        status.listen_addrs = net.listen_addrs;
        status.dht_peers = net.dht_peers;
        status.connected_peers = net.connected_peers;
        status.refused_requests = net.refused_requests;
        status.roles = s.roles.clone();
        if let Some(store) = &s.provider.store {
            (
                status.audit_challenges_proved,
                status.audit_challenges_missing,
                status.audits_refused,
            ) = self.inner.events.metrics().audit_answers();
            status.stored_bytes = store.used();
            status.capacity_bytes = store.capacity();
            status.free_bytes = store.free();
            status.pending_quotes = s.provider.pending_quotes() as u64;
        }
        if let Some(c) = &s.client {
            let summary = c.index_summary()?;
            status.files = summary.files;
            status.index_pending = summary.pending;
            let backup = c.backup_state()?;
            if backup.seq > 0 {
                status.index_seq = Some(backup.seq);
                status.index_backed_up_at = Some(backup.backed_up_at);
            }
        }
        if let Some(w) = &s.wallet {
            let sync = w.sync_status();
            status.network = Some(w.network().to_string());
            status.tip_height = Some(w.tip_height());
            status.birthday_height = Some(w.birthday_height());
            status.bitcoind_error = sync.last_error;
        }
        Ok(status)
    }

    /// The state the metrics show, read now. A locked or seed node has
    /// only its network.
    pub async fn metrics_snapshot(&self) -> Result<Snapshot> {
        let mut snap = Snapshot::default();
        let Ok(s) = self.services().await else {
            return Ok(snap);
        };
        let net = s.net.status().await?;
        snap.connected_peers = net.connected_peers;
        snap.dht_peers = net.dht_peers;
        snap.refused_requests = net.refused_requests;
        if let Some(store) = &s.provider.store {
            snap.stored_bytes = Some(store.used());
            snap.stored_shards = Some(store.shards());
            snap.capacity_bytes = Some(store.capacity());
            for c in s.provider.contracts.list()? {
                snap.contracts.push((NodeContractRole::Provider, c.state));
            }
        }
        if let Some(c) = &s.client {
            snap.files = Some(c.index_summary()?.files);
            for k in c.contracts.list()? {
                snap.contracts.push((NodeContractRole::Client, k.state));
            }
            snap.audit_scores = c
                .audits()?
                .into_iter()
                .map(|a| (a.peer_id, a.score))
                .collect();
        }
        if let Some(w) = &s.wallet {
            let b = w.balance();
            snap.balance_sat = Some([b.confirmed_sat, b.unconfirmed_sat, b.immature_sat]);
        }
        Ok(snap)
    }

    /// The first step of a shutdown: peers' new requests are turned away
    /// (the RPC server stops taking connections on its own).
    pub async fn stop_accepting(&self) {
        if let Ok(s) = self.services().await {
            s.provider.stop_accepting();
        }
    }

    /// Flushes the database; called on shutdown.
    pub async fn shutdown(&self) -> Result<()> {
        self.inner.db.flush_async().await?;
        Ok(())
    }
}
