//! Configuration: `<datadir>/p2pstore.toml`, overridden by command-line
//! flags. Unknown keys in the file are an error, so a typo never silently
//! falls back to a default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use libp2p::Multiaddr;
use serde::Deserialize;
use zeroize::Zeroizing;

use crate::erasure::Scheme;
use crate::error::{Error, Result};
use crate::provider::ProviderTerms;
use crate::wallet::{BitcoindAuth, BitcoindConfig};
use bdk_wallet::bitcoin::Network;

pub const CONFIG_FILE: &str = "p2pstore.toml";
pub const PID_FILE: &str = "p2pstored.pid";
pub const DEFAULT_P2P_PORT: u16 = 4710;
pub const DEFAULT_RPC_PORT: u16 = 4711;

// Every default, defined once: `Config::load` falls back to these, the flag
// help shows them, and a test checks README's config table against them.
pub const DEFAULT_CAPACITY: &str = "10GiB";
pub const DEFAULT_PRICE_SAT_PER_GIB_MONTH: u64 = 1000;
pub const DEFAULT_MIN_TERM_BLOCKS: u32 = 144;
pub const DEFAULT_MAX_TERM_BLOCKS: u32 = 52_560;
pub const DEFAULT_PAYMENT_WINDOW_BLOCKS: u32 = 6;
/// A day: a client offline for most of a day loses nothing.
pub const DEFAULT_GRACE_BLOCKS: u32 = 144;
pub const DEFAULT_MIN_CONFIRMATIONS: u32 = 1;
/// A day per period: payments stay few, and a provider that stops proving
/// its data is paid at most a day past its last good audit.
pub const DEFAULT_PERIOD_BLOCKS: u32 = 144;
/// Six hours of notice, so a payment confirms before the period ends.
pub const DEFAULT_RENEW_BEFORE_BLOCKS: u32 = 36;
pub const DEFAULT_FEE_TARGET_BLOCKS: u16 = crate::wallet::DEFAULT_CONF_TARGET;
/// An hour unconfirmed before a payment is bumped: a period payment has
/// `renew_before_blocks` (six hours by default) to confirm.
pub const DEFAULT_FEE_BUMP_BLOCKS: u32 = 6;
/// No payment, and no bump, pays more than this: a fee spike must not
/// drain the wallet unattended.
pub const DEFAULT_MAX_FEE_RATE_SAT_VB: u64 = 100;
/// A week of daily periods.
pub const DEFAULT_BUDGET_WARN_PERIODS: u32 = 7;
/// Regtest, so that nothing spends real coins by accident.
pub const DEFAULT_NETWORK: &str = "regtest";
pub const DEFAULT_MAX_PRICE_SAT_PER_GIB_MONTH: u64 = 100_000;
/// 30 days of blocks.
pub const DEFAULT_TERM_BLOCKS: u32 = 4320;
/// Used when bitcoind has no fee estimate; the wallet owns the value.
pub const DEFAULT_FEE_RATE_SAT_VB: u64 = crate::wallet::DEFAULT_FEE_RATE_SAT_VB;
pub const DEFAULT_REDUNDANCY: &str = "medium";
pub const DEFAULT_REPAIR_MARGIN: u16 = 1;
pub const DEFAULT_HEALTH_CHECK_SECS: u64 = 600;
/// An hour: README ("Audits") gives the cost and detection odds.
pub const DEFAULT_AUDIT_INTERVAL_SECS: u64 = 3600;
pub const DEFAULT_AUDIT_LEAVES_PER_SHARD: u32 = 16;
/// The index is backed up once its files and contracts have been left
/// unchanged this long, so a burst of puts makes one backup, not one
/// each (every backup is a paid store of the index).
pub const DEFAULT_INDEX_BACKUP_SECS: u64 = 30;
/// How often the index pointer is republished, by its client and by the
/// providers holding the index: well inside the DHT's 36-hour record
/// lifetime, so that nodes joining near its key learn it soon.
pub const POINTER_REPUBLISH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(600);
/// Five failed shards in a row from a perfect record (0.95^5 ≈ 0.77).
pub const DEFAULT_MIN_AUDIT_SCORE: f64 = 0.8;
pub const DEFAULT_AUDIT_OFFLINE_AFTER: u32 = 3;
pub const DEFAULT_LOG: &str = "info";
/// Connections a node opens and holds at once. A client talks to the
/// providers of one put and a DHT lookup's few peers at a time, never to
/// the whole network; idle connections close after 2 minutes.
pub const DEFAULT_MAX_OUTBOUND_CONNECTIONS: u32 = 64;
/// How often the wallet polls bitcoind for new blocks and mempool
/// transactions, in seconds: prompt on regtest. Hundreds of nodes sharing
/// one bitcoind (scripts/scale.sh) poll less often, or its RPC queue
/// overflows; a payment notice always makes the wallet look at once.
pub const DEFAULT_BITCOIND_POLL_SECS: u64 = 1;
/// How long a shutdown (SIGTERM, SIGINT) lets running puts and gets go on
/// before it cuts them. A cut put is recovered as after a crash (the next
/// start finishes or rolls it back, and a retry by its op id pays nothing
/// twice), so waiting only saves the work done so far.
pub const DEFAULT_SHUTDOWN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

// Runtime timeouts and intervals of the node's services (not configurable;
// here so that they are named and found in one place).
/// Longest wait for a peer's answer to a control message (offer, contract).
pub const CONTROL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// Longest wait for one shard upload or download.
pub const SHARD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);
/// How often a provider collects expired and unpaid contracts' shards.
pub const PROVIDER_GC_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);
/// How often a client retries unfinished payments and pays the periods
/// due: local state only, unless something is due.
pub const CLIENT_RECONCILE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// TCP and QUIC on [`DEFAULT_P2P_PORT`], all interfaces.
pub fn default_listen() -> Vec<String> {
    vec![
        format!("/ip4/0.0.0.0/tcp/{DEFAULT_P2P_PORT}"),
        format!("/ip4/0.0.0.0/udp/{DEFAULT_P2P_PORT}/quic-v1"),
    ]
}

pub fn default_rpc_bind() -> String {
    format!("127.0.0.1:{DEFAULT_RPC_PORT}")
}

#[derive(clap::Parser, Debug, Default, Clone)]
#[command(
    name = "p2pstored",
    version,
    about = "p2pstore daemon: decentralized storage paid in bitcoin"
)]
pub struct Args {
    /// Data directory [default: ~/.p2pstore]
    #[arg(long, env = "P2PSTORE_DATADIR")]
    pub datadir: Option<PathBuf>,
    /// Config file [default: <datadir>/p2pstore.toml]
    #[arg(long)]
    pub conf: Option<PathBuf>,
    /// libp2p listen address (repeatable)
    #[arg(long)]
    pub listen: Vec<String>,
    /// Address to announce to others (repeatable) [default: the listen addresses]
    #[arg(long = "external-addr")]
    pub external_addr: Vec<String>,
    /// Bootstrap/rendezvous node to join, as a multiaddr ending in /p2p/<peer id> (repeatable)
    #[arg(long)]
    pub bootstrap: Vec<String>,
    /// JSON-RPC listen address (HTTP and WebSocket)
    #[arg(long)]
    pub rpc_bind: Option<String>,
    /// Serve Prometheus metrics at http://<address>/metrics (off unless set)
    #[arg(long)]
    pub metrics_bind: Option<String>,
    /// Seconds a shutdown waits for running puts and gets before it aborts them
    #[arg(long)]
    pub shutdown_timeout_secs: Option<u64>,
    /// Offer storage to other nodes
    #[arg(long)]
    pub provider: bool,
    /// Storage offered as a provider, e.g. 50GiB
    #[arg(long)]
    pub capacity: Option<String>,
    /// Provider's price in sat per GiB per 30 days (4320 blocks)
    #[arg(long)]
    pub price_sat_per_gib_month: Option<u64>,
    /// Shortest contract a provider accepts, in blocks
    #[arg(long)]
    pub min_term_blocks: Option<u32>,
    /// Longest contract a provider accepts, in blocks
    #[arg(long)]
    pub max_term_blocks: Option<u32>,
    /// Bitcoin network of the wallet: regtest, signet, testnet or bitcoin
    #[arg(long)]
    pub network: Option<String>,
    /// bitcoind JSON-RPC URL [default: http://127.0.0.1:<network's RPC port>]
    #[arg(long)]
    pub bitcoind_rpc_url: Option<String>,
    /// Seconds between polls of bitcoind for blocks and mempool transactions
    #[arg(long)]
    pub bitcoind_poll_secs: Option<u64>,
    /// bitcoind's .cookie file [default: ~/.bitcoin/<network dir>/.cookie]
    #[arg(long)]
    pub bitcoind_cookie: Option<PathBuf>,
    /// bitcoind RPC user (instead of the cookie)
    #[arg(long, requires = "bitcoind_rpc_password")]
    pub bitcoind_rpc_user: Option<String>,
    /// bitcoind RPC password (instead of the cookie)
    #[arg(long, requires = "bitcoind_rpc_user")]
    pub bitcoind_rpc_password: Option<String>,
    /// Client: refuse offers above this price, sat per GiB per 30 days
    #[arg(long)]
    pub max_price_sat_per_gib_month: Option<u64>,
    /// Client: how long a put keeps a file, in blocks
    #[arg(long)]
    pub term_blocks: Option<u32>,
    /// Client: blocks per contract period (each paid separately)
    #[arg(long)]
    pub period_blocks: Option<u32>,
    /// Client: pay the next period this many blocks before the current one ends
    #[arg(long)]
    pub renew_before_blocks: Option<u32>,
    /// Client: fixed fee rate for payments in sat/vB
    #[arg(long)]
    pub fee_rate_sat_vb: Option<u64>,
    /// Client: confirmation target of bitcoind's fee estimate, in blocks
    #[arg(long)]
    pub fee_target_blocks: Option<u16>,
    /// Client: bump (RBF) a payment still unconfirmed after this many blocks
    #[arg(long)]
    pub fee_bump_blocks: Option<u32>,
    /// Client: the highest fee rate any payment or bump pays, in sat/vB
    #[arg(long)]
    pub max_fee_rate_sat_vb: Option<u64>,
    /// Client: warn when the wallet cannot pay this many coming periods
    #[arg(long)]
    pub budget_warn_periods: Option<u32>,
    /// Client: default redundancy of put: low, medium, high or K/N
    #[arg(long)]
    pub redundancy: Option<String>,
    /// Client: repair a segment when its valid shards fall below K + this
    #[arg(long)]
    pub repair_margin: Option<u16>,
    /// Client: seconds between background health checks and repairs
    #[arg(long)]
    pub health_check_secs: Option<u64>,
    /// Client: seconds between background audits of every provider
    #[arg(long)]
    pub audit_interval_secs: Option<u64>,
    /// Client: back up the file index this many seconds after its last change (0: never)
    #[arg(long)]
    pub index_backup_secs: Option<u64>,
    /// Client: leaves challenged per audited shard (all of them if fewer)
    #[arg(long)]
    pub audit_leaves_per_shard: Option<u32>,
    /// Client: providers scoring below this (0..1) get no new shards and lose theirs
    #[arg(long)]
    pub min_audit_score: Option<f64>,
    /// Client: unanswered audits in a row that mark a provider offline
    #[arg(long)]
    pub audit_offline_after: Option<u32>,
    /// Provider: blocks a client has to pay a quote
    #[arg(long)]
    pub payment_window_blocks: Option<u32>,
    /// Provider: blocks past its paid-through height before an unpaid contract's data is deleted
    #[arg(long)]
    pub grace_blocks: Option<u32>,
    /// Provider: confirmations before a payment is final
    #[arg(long)]
    pub min_confirmations: Option<u32>,
    /// Run as a DHT seed node that others join (persisted identity, no account)
    #[arg(long)]
    pub seed: bool,
    /// Run as a seed node that also serves rendezvous discovery (implies --seed)
    #[arg(long)]
    pub rendezvous_server: bool,
    /// Connections this node opens and holds at once
    #[arg(long)]
    pub max_outbound_connections: Option<u32>,
    /// Create the account keystore on first start (needs a password); the
    /// new recovery phrase is shown on the terminal only
    #[arg(long)]
    pub init: bool,
    /// With --init, print the recovery phrase on stdout even when it is not
    /// a terminal (a file or the journal would keep it)
    #[arg(long, requires = "init")]
    pub print_mnemonic: bool,
    /// File whose first line is the keystore password [or env P2PSTORE_PASSWORD]
    #[arg(long)]
    pub password_file: Option<PathBuf>,
    /// Log filter, e.g. info or p2pstored=debug [or env RUST_LOG]
    #[arg(long)]
    pub log: Option<String>,
}

/// Every config key with its default as people read it: the flag help
/// shows these ([`Args::command_with_defaults`]) and a test checks README's
/// config table against them, so the constants are the one source.
pub fn documented_defaults() -> Vec<(&'static str, String)> {
    vec![
        ("listen", default_listen().join(", ")),
        ("external_addrs", "the listen addresses".into()),
        ("bootstrap", "none".into()),
        ("rpc_bind", default_rpc_bind()),
        ("metrics_bind", "off".into()),
        (
            "shutdown_timeout_secs",
            DEFAULT_SHUTDOWN_TIMEOUT.as_secs().to_string(),
        ),
        ("provider", "false".into()),
        ("capacity", DEFAULT_CAPACITY.into()),
        (
            "price_sat_per_gib_month",
            DEFAULT_PRICE_SAT_PER_GIB_MONTH.to_string(),
        ),
        ("min_term_blocks", DEFAULT_MIN_TERM_BLOCKS.to_string()),
        ("max_term_blocks", DEFAULT_MAX_TERM_BLOCKS.to_string()),
        (
            "payment_window_blocks",
            DEFAULT_PAYMENT_WINDOW_BLOCKS.to_string(),
        ),
        ("grace_blocks", DEFAULT_GRACE_BLOCKS.to_string()),
        ("min_confirmations", DEFAULT_MIN_CONFIRMATIONS.to_string()),
        ("network", DEFAULT_NETWORK.into()),
        ("bitcoind_rpc_url", "http://127.0.0.1:<network port>".into()),
        ("bitcoind_poll_secs", DEFAULT_BITCOIND_POLL_SECS.to_string()),
        ("bitcoind_cookie", "~/.bitcoin/<network>/.cookie".into()),
        ("bitcoind_rpc_user", "none".into()),
        ("bitcoind_rpc_password", "none".into()),
        (
            "max_price_sat_per_gib_month",
            DEFAULT_MAX_PRICE_SAT_PER_GIB_MONTH.to_string(),
        ),
        ("term_blocks", DEFAULT_TERM_BLOCKS.to_string()),
        ("period_blocks", DEFAULT_PERIOD_BLOCKS.to_string()),
        (
            "renew_before_blocks",
            DEFAULT_RENEW_BEFORE_BLOCKS.to_string(),
        ),
        (
            "fee_rate_sat_vb",
            format!("bitcoind's estimate, else {DEFAULT_FEE_RATE_SAT_VB}"),
        ),
        ("fee_target_blocks", DEFAULT_FEE_TARGET_BLOCKS.to_string()),
        ("fee_bump_blocks", DEFAULT_FEE_BUMP_BLOCKS.to_string()),
        (
            "max_fee_rate_sat_vb",
            DEFAULT_MAX_FEE_RATE_SAT_VB.to_string(),
        ),
        (
            "budget_warn_periods",
            DEFAULT_BUDGET_WARN_PERIODS.to_string(),
        ),
        ("redundancy", DEFAULT_REDUNDANCY.into()),
        ("repair_margin", DEFAULT_REPAIR_MARGIN.to_string()),
        ("health_check_secs", DEFAULT_HEALTH_CHECK_SECS.to_string()),
        ("index_backup_secs", DEFAULT_INDEX_BACKUP_SECS.to_string()),
        (
            "audit_interval_secs",
            DEFAULT_AUDIT_INTERVAL_SECS.to_string(),
        ),
        (
            "audit_leaves_per_shard",
            DEFAULT_AUDIT_LEAVES_PER_SHARD.to_string(),
        ),
        ("min_audit_score", DEFAULT_MIN_AUDIT_SCORE.to_string()),
        (
            "audit_offline_after",
            DEFAULT_AUDIT_OFFLINE_AFTER.to_string(),
        ),
        ("seed", "false".into()),
        ("rendezvous_server", "false".into()),
        (
            "max_outbound_connections",
            DEFAULT_MAX_OUTBOUND_CONNECTIONS.to_string(),
        ),
        ("log", DEFAULT_LOG.into()),
    ]
}

impl Args {
    /// The flag parser with each flag's default from
    /// [`documented_defaults`] appended to its help. Flags are `Option`s so
    /// that a config-file value is not overridden by a flag the user never
    /// gave, which rules out clap's `default_value_t`.
    pub fn command_with_defaults() -> clap::Command {
        let mut cmd = <Args as clap::CommandFactory>::command();
        for (key, default) in documented_defaults() {
            let is_flag = cmd.get_arguments().any(|a| a.get_id() == key);
            // Booleans are off unless given; "[default: false]" says nothing.
            if is_flag && default != "false" {
                cmd = cmd.mut_arg(key, |a| {
                    let help = a.get_help().map(ToString::to_string).unwrap_or_default();
                    a.help(format!("{help} [default: {default}]"))
                });
            }
        }
        cmd
    }

    /// Parses the process's arguments; exits with clap's message on error.
    pub fn parse_with_defaults() -> Self {
        let matches = Self::command_with_defaults().get_matches();
        <Args as clap::FromArgMatches>::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
    }
}

#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<Vec<String>>,
    external_addrs: Option<Vec<String>>,
    bootstrap: Option<Vec<String>>,
    rpc_bind: Option<String>,
    metrics_bind: Option<String>,
    shutdown_timeout_secs: Option<u64>,
    provider: Option<bool>,
    capacity: Option<String>,
    price_sat_per_gib_month: Option<u64>,
    min_term_blocks: Option<u32>,
    max_term_blocks: Option<u32>,
    seed: Option<bool>,
    rendezvous_server: Option<bool>,
    max_outbound_connections: Option<u32>,
    log: Option<String>,
    network: Option<String>,
    bitcoind_rpc_url: Option<String>,
    bitcoind_poll_secs: Option<u64>,
    bitcoind_cookie: Option<PathBuf>,
    bitcoind_rpc_user: Option<String>,
    bitcoind_rpc_password: Option<String>,
    max_price_sat_per_gib_month: Option<u64>,
    term_blocks: Option<u32>,
    period_blocks: Option<u32>,
    renew_before_blocks: Option<u32>,
    fee_rate_sat_vb: Option<u64>,
    fee_target_blocks: Option<u16>,
    fee_bump_blocks: Option<u32>,
    max_fee_rate_sat_vb: Option<u64>,
    budget_warn_periods: Option<u32>,
    payment_window_blocks: Option<u32>,
    grace_blocks: Option<u32>,
    min_confirmations: Option<u32>,
    redundancy: Option<String>,
    repair_margin: Option<u16>,
    health_check_secs: Option<u64>,
    audit_interval_secs: Option<u64>,
    index_backup_secs: Option<u64>,
    audit_leaves_per_shard: Option<u32>,
    min_audit_score: Option<f64>,
    audit_offline_after: Option<u32>,
}

pub struct Config {
    pub datadir: PathBuf,
    pub listen: Vec<Multiaddr>,
    pub external: Vec<Multiaddr>,
    pub bootstrap: Vec<Multiaddr>,
    pub rpc_bind: SocketAddr,
    /// Where Prometheus scrapes `/metrics`; None serves no metrics.
    pub metrics_bind: Option<SocketAddr>,
    /// How long a shutdown lets running transfers finish.
    pub shutdown_timeout: std::time::Duration,
    pub provider: bool,
    pub capacity: u64,
    pub terms: ProviderTerms,
    /// A bootstrap node: a DHT seed with a persisted identity and no
    /// account (set by `seed` or `rendezvous_server`).
    pub seed: bool,
    pub rendezvous_server: bool,
    pub max_outbound_connections: u32,
    pub init: bool,
    pub password: Option<Zeroizing<String>>,
    pub log: String,
    pub network: Network,
    pub bitcoind: BitcoindConfig,
    pub max_price_sat_per_gib_month: u64,
    pub term_blocks: u32,
    pub period_blocks: u32,
    pub renew_before_blocks: u32,
    pub fees: crate::client::FeePolicy,
    pub budget_warn_periods: u32,
    pub payment_rules: crate::provider::PaymentRules,
    pub redundancy: Scheme,
    pub repair_margin: u16,
    pub health_check: std::time::Duration,
    pub audit_interval: std::time::Duration,
    /// None: the index is never backed up.
    pub index_backup: Option<std::time::Duration>,
    pub audit: crate::client::AuditPolicy,
}

fn parse_network(s: &str) -> Result<Network> {
    match s {
        "regtest" => Ok(Network::Regtest),
        "signet" => Ok(Network::Signet),
        "testnet" => Ok(Network::Testnet),
        "bitcoin" | "mainnet" => Ok(Network::Bitcoin),
        other => Err(Error::Config(format!(
            "unknown network {other:?} (regtest, signet, testnet, bitcoin)"
        ))),
    }
}

/// bitcoind's own defaults for a network: RPC port and cookie sub-dir.
fn bitcoind_defaults(network: Network) -> (u16, &'static str) {
    match network {
        Network::Bitcoin => (8332, ""),
        Network::Testnet => (18332, "testnet3"),
        Network::Signet => (38332, "signet"),
        _ => (18443, "regtest"),
    }
}

/// `~/.p2pstore`: the same default the CLI looks in.
pub use p2pstore_rpc::conn::default_datadir;

fn addrs(list: &[String], what: &str) -> Result<Vec<Multiaddr>> {
    list.iter()
        .map(|s| {
            s.parse()
                .map_err(|e| Error::Config(format!("{what} {s:?}: {e}")))
        })
        .collect()
}

pub fn parse_size(s: &str) -> Result<u64> {
    s.parse::<bytesize::ByteSize>()
        .map(|b| b.as_u64())
        .map_err(|e| Error::Config(format!("size {s:?}: {e}")))
}

/// First line of a password file, without its newline.
pub fn read_password_file(path: &Path) -> Result<Zeroizing<String>> {
    let text = Zeroizing::new(
        std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("password file {}: {e}", path.display())))?,
    );
    Ok(Zeroizing::new(
        text.lines().next().unwrap_or("").to_string(),
    ))
}

impl Config {
    pub fn load(args: Args) -> Result<Self> {
        let datadir = args.datadir.clone().unwrap_or_else(default_datadir);
        let conf_path = args
            .conf
            .clone()
            .unwrap_or_else(|| datadir.join(CONFIG_FILE));
        let file: FileConfig = match std::fs::read_to_string(&conf_path) {
            Ok(text) => toml::from_str(&text)
                .map_err(|e| Error::Config(format!("{}: {e}", conf_path.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && args.conf.is_none() => {
                FileConfig::default()
            }
            Err(e) => {
                return Err(Error::Config(format!("{}: {e}", conf_path.display())));
            }
        };
        let pick = |flag: Vec<String>, file: Option<Vec<String>>| {
            if flag.is_empty() {
                file.unwrap_or_default()
            } else {
                flag
            }
        };
        let fees = fee_policy(&args, &file)?;
        let rendezvous_server = args.rendezvous_server || file.rendezvous_server.unwrap_or(false);
        let mut listen = pick(args.listen, file.listen);
        if listen.is_empty() {
            listen = default_listen();
        }
        let rpc_bind = args
            .rpc_bind
            .or(file.rpc_bind)
            .unwrap_or_else(default_rpc_bind);
        let password = match &args.password_file {
            Some(p) => Some(read_password_file(p)?),
            None => std::env::var("P2PSTORE_PASSWORD").ok().map(Zeroizing::new),
        };
        let terms = ProviderTerms {
            price_sat_per_gib_month: args
                .price_sat_per_gib_month
                .or(file.price_sat_per_gib_month)
                .unwrap_or(DEFAULT_PRICE_SAT_PER_GIB_MONTH),
            min_term_blocks: args
                .min_term_blocks
                .or(file.min_term_blocks)
                .unwrap_or(DEFAULT_MIN_TERM_BLOCKS),
            max_term_blocks: args
                .max_term_blocks
                .or(file.max_term_blocks)
                .unwrap_or(DEFAULT_MAX_TERM_BLOCKS),
        };
        if terms.min_term_blocks > terms.max_term_blocks {
            return Err(Error::Config(
                "min_term_blocks is above max_term_blocks".into(),
            ));
        }
        let network = parse_network(
            args.network
                .or(file.network)
                .as_deref()
                .unwrap_or(DEFAULT_NETWORK),
        )?;
        let (rpc_port, sub) = bitcoind_defaults(network);
        let auth = match (
            args.bitcoind_rpc_user.or(file.bitcoind_rpc_user),
            args.bitcoind_rpc_password.or(file.bitcoind_rpc_password),
        ) {
            (Some(user), Some(password)) => BitcoindAuth::UserPass { user, password },
            _ => BitcoindAuth::Cookie(
                args.bitcoind_cookie
                    .or(file.bitcoind_cookie)
                    .unwrap_or_else(|| {
                        std::env::var_os("HOME")
                            .map(PathBuf::from)
                            .unwrap_or_default()
                            .join(".bitcoin")
                            .join(sub)
                            .join(".cookie")
                    }),
            ),
        };
        let bitcoind = BitcoindConfig {
            url: args
                .bitcoind_rpc_url
                .or(file.bitcoind_rpc_url)
                .unwrap_or_else(|| format!("http://127.0.0.1:{rpc_port}")),
            auth,
            poll_interval: std::time::Duration::from_secs(
                args.bitcoind_poll_secs
                    .or(file.bitcoind_poll_secs)
                    .unwrap_or(DEFAULT_BITCOIND_POLL_SECS)
                    .max(1),
            ),
        };
        Ok(Config {
            redundancy: Scheme::parse(
                args.redundancy
                    .or(file.redundancy)
                    .as_deref()
                    .unwrap_or(DEFAULT_REDUNDANCY),
            )?,
            repair_margin: args
                .repair_margin
                .or(file.repair_margin)
                .unwrap_or(DEFAULT_REPAIR_MARGIN),
            health_check: std::time::Duration::from_secs(
                args.health_check_secs
                    .or(file.health_check_secs)
                    .unwrap_or(DEFAULT_HEALTH_CHECK_SECS)
                    .max(1),
            ),
            audit_interval: std::time::Duration::from_secs(
                args.audit_interval_secs
                    .or(file.audit_interval_secs)
                    .unwrap_or(DEFAULT_AUDIT_INTERVAL_SECS)
                    .max(1),
            ),
            index_backup: match args
                .index_backup_secs
                .or(file.index_backup_secs)
                .unwrap_or(DEFAULT_INDEX_BACKUP_SECS)
            {
                0 => None,
                secs => Some(std::time::Duration::from_secs(secs)),
            },
            audit: crate::client::AuditPolicy {
                leaves_per_shard: match args
                    .audit_leaves_per_shard
                    .or(file.audit_leaves_per_shard)
                    .unwrap_or(DEFAULT_AUDIT_LEAVES_PER_SHARD)
                {
                    0 => {
                        return Err(Error::Config(
                            "audit_leaves_per_shard must be at least 1".into(),
                        ));
                    }
                    n => n,
                },
                min_score: match args
                    .min_audit_score
                    .or(file.min_audit_score)
                    .unwrap_or(DEFAULT_MIN_AUDIT_SCORE)
                {
                    s if (0.0..=1.0).contains(&s) => s,
                    s => {
                        return Err(Error::Config(format!(
                            "min_audit_score {s} is outside 0..=1"
                        )));
                    }
                },
                offline_after: args
                    .audit_offline_after
                    .or(file.audit_offline_after)
                    .unwrap_or(DEFAULT_AUDIT_OFFLINE_AFTER)
                    .max(1),
            },
            network,
            bitcoind,
            max_price_sat_per_gib_month: args
                .max_price_sat_per_gib_month
                .or(file.max_price_sat_per_gib_month)
                .unwrap_or(DEFAULT_MAX_PRICE_SAT_PER_GIB_MONTH),
            term_blocks: args
                .term_blocks
                .or(file.term_blocks)
                .unwrap_or(DEFAULT_TERM_BLOCKS),
            period_blocks: match args
                .period_blocks
                .or(file.period_blocks)
                .unwrap_or(DEFAULT_PERIOD_BLOCKS)
            {
                0 => return Err(Error::Config("period_blocks must be at least 1".into())),
                n => n,
            },
            renew_before_blocks: args
                .renew_before_blocks
                .or(file.renew_before_blocks)
                .unwrap_or(DEFAULT_RENEW_BEFORE_BLOCKS),
            fees,
            budget_warn_periods: args
                .budget_warn_periods
                .or(file.budget_warn_periods)
                .unwrap_or(DEFAULT_BUDGET_WARN_PERIODS),
            payment_rules: crate::provider::PaymentRules {
                payment_window_blocks: args
                    .payment_window_blocks
                    .or(file.payment_window_blocks)
                    .unwrap_or(DEFAULT_PAYMENT_WINDOW_BLOCKS),
                grace_blocks: args
                    .grace_blocks
                    .or(file.grace_blocks)
                    .unwrap_or(DEFAULT_GRACE_BLOCKS),
                min_confirmations: args
                    .min_confirmations
                    .or(file.min_confirmations)
                    .unwrap_or(DEFAULT_MIN_CONFIRMATIONS),
            },
            listen: addrs(&listen, "listen address")?,
            external: addrs(
                &pick(args.external_addr, file.external_addrs),
                "external address",
            )?,
            bootstrap: addrs(&pick(args.bootstrap, file.bootstrap), "bootstrap address")?,
            rpc_bind: rpc_bind
                .parse()
                .map_err(|e| Error::Config(format!("rpc_bind {rpc_bind:?}: {e}")))?,
            metrics_bind: args
                .metrics_bind
                .or(file.metrics_bind)
                .map(|b| {
                    b.parse()
                        .map_err(|e| Error::Config(format!("metrics_bind {b:?}: {e}")))
                })
                .transpose()?,
            shutdown_timeout: args
                .shutdown_timeout_secs
                .or(file.shutdown_timeout_secs)
                .map_or(DEFAULT_SHUTDOWN_TIMEOUT, std::time::Duration::from_secs),
            provider: args.provider || file.provider.unwrap_or(false),
            capacity: parse_size(
                args.capacity
                    .or(file.capacity)
                    .as_deref()
                    .unwrap_or(DEFAULT_CAPACITY),
            )?,
            terms,
            seed: rendezvous_server || args.seed || file.seed.unwrap_or(false),
            rendezvous_server,
            max_outbound_connections: match args
                .max_outbound_connections
                .or(file.max_outbound_connections)
                .unwrap_or(DEFAULT_MAX_OUTBOUND_CONNECTIONS)
            {
                0 => {
                    return Err(Error::Config(
                        "max_outbound_connections must be at least 1".into(),
                    ));
                }
                n => n,
            },
            init: args.init,
            password,
            log: args
                .log
                .or(file.log)
                .or_else(|| std::env::var("RUST_LOG").ok())
                .unwrap_or_else(|| DEFAULT_LOG.into()),
            datadir,
        })
    }
}

/// The client's fee settings: a fixed rate or bitcoind's estimate, when
/// to bump, and the ceiling on both.
fn fee_policy(args: &Args, file: &FileConfig) -> Result<crate::client::FeePolicy> {
    let rate = |name: &str, r: u64| {
        if r == 0 || r > 10_000 {
            Err(Error::Config(format!(
                "{name} {r} sat/vB is outside 1..=10000"
            )))
        } else {
            Ok(r)
        }
    };
    let fixed_rate = match args.fee_rate_sat_vb.or(file.fee_rate_sat_vb) {
        Some(r) => Some(rate("fee_rate_sat_vb", r)?),
        None => None,
    };
    let max_rate = rate(
        "max_fee_rate_sat_vb",
        args.max_fee_rate_sat_vb
            .or(file.max_fee_rate_sat_vb)
            .unwrap_or(DEFAULT_MAX_FEE_RATE_SAT_VB),
    )?;
    if fixed_rate.is_some_and(|r| r > max_rate) {
        return Err(Error::Config(format!(
            "fee_rate_sat_vb is above max_fee_rate_sat_vb ({max_rate})"
        )));
    }
    let target_blocks = match args
        .fee_target_blocks
        .or(file.fee_target_blocks)
        .unwrap_or(DEFAULT_FEE_TARGET_BLOCKS)
    {
        // bitcoind's estimatesmartfee accepts 1..=1008.
        t @ 1..=1008 => t,
        t => {
            return Err(Error::Config(format!(
                "fee_target_blocks {t} is outside 1..=1008"
            )));
        }
    };
    let bump_after_blocks = match args
        .fee_bump_blocks
        .or(file.fee_bump_blocks)
        .unwrap_or(DEFAULT_FEE_BUMP_BLOCKS)
    {
        0 => return Err(Error::Config("fee_bump_blocks must be at least 1".into())),
        n => n,
    };
    Ok(crate::client::FeePolicy {
        fixed_rate,
        target_blocks,
        bump_after_blocks,
        max_rate,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_file_and_typos_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(CONFIG_FILE),
            "provider = true\ncapacity = \"2MiB\"\nrpc_bind = \"127.0.0.1:9\"\n",
        )
        .unwrap();
        let args = Args {
            datadir: Some(dir.path().into()),
            rpc_bind: Some("127.0.0.1:7".into()),
            ..Default::default()
        };
        let cfg = Config::load(args.clone()).unwrap();
        assert!(cfg.provider);
        assert_eq!(cfg.capacity, 2 * 1024 * 1024);
        assert_eq!(cfg.rpc_bind.port(), 7);
        std::fs::write(dir.path().join(CONFIG_FILE), "provder = true\n").unwrap();
        assert!(Config::load(args).is_err());
    }
    /// The keys `FileConfig` accepts, from serde itself, so a new key
    /// cannot be forgotten by the README check below.
    fn file_config_keys() -> &'static [&'static str] {
        use serde::de::{Deserializer, Visitor};
        struct Keys(Option<&'static [&'static str]>);
        #[derive(Debug)]
        struct Stop;
        impl std::fmt::Display for Stop {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("stop")
            }
        }
        impl std::error::Error for Stop {}
        impl serde::de::Error for Stop {
            fn custom<T: std::fmt::Display>(_: T) -> Self {
                Stop
            }
        }
        impl<'de> Deserializer<'de> for &mut Keys {
            type Error = Stop;
            fn deserialize_any<V: Visitor<'de>>(self, _: V) -> std::result::Result<V::Value, Stop> {
                Err(Stop)
            }
            fn deserialize_struct<V: Visitor<'de>>(
                self,
                _: &'static str,
                fields: &'static [&'static str],
                _: V,
            ) -> std::result::Result<V::Value, Stop> {
                self.0 = Some(fields);
                Err(Stop)
            }
            serde::forward_to_deserialize_any! {
                bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
                bytes byte_buf option unit unit_struct newtype_struct seq tuple
                tuple_struct map enum identifier ignored_any
            }
        }
        let mut keys = Keys(None);
        let _ = FileConfig::deserialize(&mut keys);
        keys.0.expect("FileConfig is a struct")
    }

    /// README's "Running a node" table: key → default column, with
    /// backticks and quotes dropped.
    fn readme_defaults() -> std::collections::BTreeMap<String, String> {
        let readme = include_str!("../../README.md");
        let section = &readme[readme.find("## Running a node").expect("section")..];
        let table = &section[section
            .find("| key | default | meaning |")
            .expect("config table")..];
        table
            .lines()
            .skip(2)
            .take_while(|l| l.starts_with('|'))
            .map(|row| {
                let cells: Vec<&str> = row.split('|').map(str::trim).collect();
                let clean = |c: &str| c.replace(['`', '"'], "");
                (clean(cells[1]), clean(cells[2]))
            })
            .collect()
    }

    #[test]
    fn readme_config_table_matches_the_constants() {
        let documented = readme_defaults();
        let defaults: std::collections::BTreeMap<&str, String> =
            documented_defaults().into_iter().collect();
        for key in file_config_keys() {
            let expected = defaults.get(key).unwrap_or_else(|| {
                panic!("config key {key} has no documented default: add it to documented_defaults")
            });
            assert_eq!(
                documented.get(*key),
                Some(expected),
                "README.md config table, key `{key}`"
            );
        }
        let keys: std::collections::BTreeSet<&str> = file_config_keys().iter().copied().collect();
        for key in documented.keys() {
            assert!(
                keys.contains(key.as_str()),
                "README documents unknown key `{key}`"
            );
        }
    }

    #[test]
    fn defaults_apply_without_file_or_flags() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = Config::load(Args {
            datadir: Some(dir.path().into()),
            log: Some(DEFAULT_LOG.into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(cfg.capacity, parse_size(DEFAULT_CAPACITY).unwrap());
        assert_eq!(
            cfg.terms.price_sat_per_gib_month,
            DEFAULT_PRICE_SAT_PER_GIB_MONTH
        );
        assert_eq!(cfg.terms.min_term_blocks, DEFAULT_MIN_TERM_BLOCKS);
        assert_eq!(cfg.terms.max_term_blocks, DEFAULT_MAX_TERM_BLOCKS);
        assert_eq!(
            cfg.payment_rules.payment_window_blocks,
            DEFAULT_PAYMENT_WINDOW_BLOCKS
        );
        assert_eq!(cfg.network, parse_network(DEFAULT_NETWORK).unwrap());
        assert_eq!(
            cfg.max_price_sat_per_gib_month,
            DEFAULT_MAX_PRICE_SAT_PER_GIB_MONTH
        );
        assert_eq!(cfg.term_blocks, DEFAULT_TERM_BLOCKS);
        assert_eq!(cfg.fees.fixed_rate, None);
        assert_eq!(cfg.redundancy, Scheme::parse(DEFAULT_REDUNDANCY).unwrap());
        assert_eq!(cfg.repair_margin, DEFAULT_REPAIR_MARGIN);
        assert_eq!(cfg.health_check.as_secs(), DEFAULT_HEALTH_CHECK_SECS);
        assert_eq!(cfg.rpc_bind.to_string(), default_rpc_bind());
        assert_eq!(cfg.listen.len(), default_listen().len());
    }

    #[test]
    fn flag_help_shows_the_defaults() {
        let help = Args::command_with_defaults().render_long_help().to_string();
        for shown in [
            format!("[default: {DEFAULT_CAPACITY}]"),
            format!("[default: {DEFAULT_HEALTH_CHECK_SECS}]"),
            format!("[default: {DEFAULT_NETWORK}]"),
            format!("[default: {DEFAULT_REDUNDANCY}]"),
        ] {
            assert!(help.contains(&shown), "help lacks {shown}");
        }
    }
}
