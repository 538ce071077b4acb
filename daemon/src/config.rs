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
    /// libp2p listen address (repeatable) [default: /ip4/0.0.0.0/tcp/4710 and /ip4/0.0.0.0/udp/4710/quic-v1]
    #[arg(long)]
    pub listen: Vec<String>,
    /// Address to announce to others (repeatable) [default: the listen addresses]
    #[arg(long = "external-addr")]
    pub external_addr: Vec<String>,
    /// Bootstrap/rendezvous node to join, as a multiaddr ending in /p2p/<peer id> (repeatable)
    #[arg(long)]
    pub bootstrap: Vec<String>,
    /// JSON-RPC listen address (HTTP and WebSocket) [default: 127.0.0.1:4711]
    #[arg(long)]
    pub rpc_bind: Option<String>,
    /// Offer storage to other nodes
    #[arg(long)]
    pub provider: bool,
    /// Storage offered as a provider, e.g. 50GiB [default: 10GiB]
    #[arg(long)]
    pub capacity: Option<String>,
    /// Provider's price in sat per GiB per 30 days (4320 blocks) [default: 1000]
    #[arg(long)]
    pub price_sat_per_gib_month: Option<u64>,
    /// Shortest contract a provider accepts, in blocks [default: 144]
    #[arg(long)]
    pub min_term_blocks: Option<u32>,
    /// Longest contract a provider accepts, in blocks [default: 52560]
    #[arg(long)]
    pub max_term_blocks: Option<u32>,
    /// Bitcoin network of the wallet: regtest, signet, testnet or bitcoin [default: regtest]
    #[arg(long)]
    pub network: Option<String>,
    /// bitcoind JSON-RPC URL [default: http://127.0.0.1:<network's RPC port>]
    #[arg(long)]
    pub bitcoind_rpc_url: Option<String>,
    /// bitcoind's .cookie file [default: ~/.bitcoin/<network dir>/.cookie]
    #[arg(long)]
    pub bitcoind_cookie: Option<PathBuf>,
    /// bitcoind RPC user (instead of the cookie)
    #[arg(long, requires = "bitcoind_rpc_password")]
    pub bitcoind_rpc_user: Option<String>,
    /// bitcoind RPC password (instead of the cookie)
    #[arg(long, requires = "bitcoind_rpc_user")]
    pub bitcoind_rpc_password: Option<String>,
    /// Client: refuse offers above this price, sat per GiB per 30 days [default: 100000]
    #[arg(long)]
    pub max_price_sat_per_gib_month: Option<u64>,
    /// Client: contract term in blocks [default: 4320, 30 days]
    #[arg(long)]
    pub term_blocks: Option<u32>,
    /// Client: fee rate for payments in sat/vB [default: 2]
    #[arg(long)]
    pub fee_rate_sat_vb: Option<u64>,
    /// Client: default redundancy of put: low, medium, high or K/N [default: medium]
    #[arg(long)]
    pub redundancy: Option<String>,
    /// Client: repair a segment when its valid shards fall below K + this [default: 1]
    #[arg(long)]
    pub repair_margin: Option<u16>,
    /// Client: seconds between background health checks and repairs [default: 600]
    #[arg(long)]
    pub health_check_secs: Option<u64>,
    /// Provider: blocks a client has to pay after a contract is accepted [default: 6]
    #[arg(long)]
    pub payment_window_blocks: Option<u32>,
    /// Run as the bootstrap/rendezvous node (persisted identity, no account)
    #[arg(long)]
    pub rendezvous_server: bool,
    /// Create the account keystore on first start (needs a password)
    #[arg(long)]
    pub init: bool,
    /// File whose first line is the keystore password [or env P2PSTORE_PASSWORD]
    #[arg(long)]
    pub password_file: Option<PathBuf>,
    /// Log filter, e.g. info or p2pstored=debug [or env RUST_LOG]
    #[arg(long)]
    pub log: Option<String>,
}

#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<Vec<String>>,
    external_addrs: Option<Vec<String>>,
    bootstrap: Option<Vec<String>>,
    rpc_bind: Option<String>,
    provider: Option<bool>,
    capacity: Option<String>,
    price_sat_per_gib_month: Option<u64>,
    min_term_blocks: Option<u32>,
    max_term_blocks: Option<u32>,
    rendezvous_server: Option<bool>,
    log: Option<String>,
    network: Option<String>,
    bitcoind_rpc_url: Option<String>,
    bitcoind_cookie: Option<PathBuf>,
    bitcoind_rpc_user: Option<String>,
    bitcoind_rpc_password: Option<String>,
    max_price_sat_per_gib_month: Option<u64>,
    term_blocks: Option<u32>,
    fee_rate_sat_vb: Option<u64>,
    payment_window_blocks: Option<u32>,
    redundancy: Option<String>,
    repair_margin: Option<u16>,
    health_check_secs: Option<u64>,
}

pub struct Config {
    pub datadir: PathBuf,
    pub listen: Vec<Multiaddr>,
    pub external: Vec<Multiaddr>,
    pub bootstrap: Vec<Multiaddr>,
    pub rpc_bind: SocketAddr,
    pub provider: bool,
    pub capacity: u64,
    pub terms: ProviderTerms,
    pub rendezvous_server: bool,
    pub init: bool,
    pub password: Option<Zeroizing<String>>,
    pub log: String,
    pub network: Network,
    pub bitcoind: BitcoindConfig,
    pub max_price_sat_per_gib_month: u64,
    pub term_blocks: u32,
    pub fee_rate_sat_vb: Option<u64>,
    pub payment_window_blocks: u32,
    pub redundancy: Scheme,
    pub repair_margin: u16,
    pub health_check: std::time::Duration,
}

fn parse_network(s: &str) -> Result<Network> {
    match s {
        "regtest" => Ok(Network::Regtest),
        "signet" => Ok(Network::Signet),
        "testnet" => Ok(Network::Testnet),
        "bitcoin" | "mainnet" => Ok(Network::Bitcoin),
        other => Err(Error::InvalidParams(format!(
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

pub fn default_datadir() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
        .join(".p2pstore")
}

fn addrs(list: &[String], what: &str) -> Result<Vec<Multiaddr>> {
    list.iter()
        .map(|s| {
            s.parse()
                .map_err(|e| Error::InvalidParams(format!("{what} {s:?}: {e}")))
        })
        .collect()
}

pub fn parse_size(s: &str) -> Result<u64> {
    s.parse::<bytesize::ByteSize>()
        .map(|b| b.as_u64())
        .map_err(|e| Error::InvalidParams(format!("size {s:?}: {e}")))
}

/// First line of a password file, without its newline.
pub fn read_password_file(path: &Path) -> Result<Zeroizing<String>> {
    let text = Zeroizing::new(
        std::fs::read_to_string(path)
            .map_err(|e| Error::InvalidParams(format!("password file {}: {e}", path.display())))?,
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
                .map_err(|e| Error::InvalidParams(format!("{}: {e}", conf_path.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && args.conf.is_none() => {
                FileConfig::default()
            }
            Err(e) => {
                return Err(Error::InvalidParams(format!(
                    "{}: {e}",
                    conf_path.display()
                )));
            }
        };
        let pick = |flag: Vec<String>, file: Option<Vec<String>>| {
            if flag.is_empty() {
                file.unwrap_or_default()
            } else {
                flag
            }
        };
        let mut listen = pick(args.listen, file.listen);
        if listen.is_empty() {
            listen = vec![
                format!("/ip4/0.0.0.0/tcp/{DEFAULT_P2P_PORT}"),
                format!("/ip4/0.0.0.0/udp/{DEFAULT_P2P_PORT}/quic-v1"),
            ];
        }
        let rpc_bind = args
            .rpc_bind
            .or(file.rpc_bind)
            .unwrap_or_else(|| format!("127.0.0.1:{DEFAULT_RPC_PORT}"));
        let password = match &args.password_file {
            Some(p) => Some(read_password_file(p)?),
            None => std::env::var("P2PSTORE_PASSWORD").ok().map(Zeroizing::new),
        };
        let terms = ProviderTerms {
            price_sat_per_gib_month: args
                .price_sat_per_gib_month
                .or(file.price_sat_per_gib_month)
                .unwrap_or(1000),
            min_term_blocks: args.min_term_blocks.or(file.min_term_blocks).unwrap_or(144),
            max_term_blocks: args
                .max_term_blocks
                .or(file.max_term_blocks)
                .unwrap_or(52_560),
        };
        if terms.min_term_blocks > terms.max_term_blocks {
            return Err(Error::InvalidParams(
                "min_term_blocks is above max_term_blocks".into(),
            ));
        }
        let network = parse_network(
            args.network
                .or(file.network)
                .as_deref()
                .unwrap_or("regtest"),
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
            poll_interval: std::time::Duration::from_secs(1),
        };
        Ok(Config {
            redundancy: Scheme::parse(
                args.redundancy
                    .or(file.redundancy)
                    .as_deref()
                    .unwrap_or("medium"),
            )?,
            repair_margin: args.repair_margin.or(file.repair_margin).unwrap_or(1),
            health_check: std::time::Duration::from_secs(
                args.health_check_secs
                    .or(file.health_check_secs)
                    .unwrap_or(600)
                    .max(1),
            ),
            network,
            bitcoind,
            max_price_sat_per_gib_month: args
                .max_price_sat_per_gib_month
                .or(file.max_price_sat_per_gib_month)
                .unwrap_or(100_000),
            term_blocks: args.term_blocks.or(file.term_blocks).unwrap_or(4320),
            fee_rate_sat_vb: match args.fee_rate_sat_vb.or(file.fee_rate_sat_vb) {
                Some(r) if r == 0 || r > 10_000 => {
                    return Err(Error::InvalidParams(format!(
                        "fee rate {r} sat/vB is outside 1..=10000"
                    )));
                }
                other => other,
            },
            payment_window_blocks: args
                .payment_window_blocks
                .or(file.payment_window_blocks)
                .unwrap_or(6),
            listen: addrs(&listen, "listen address")?,
            external: addrs(
                &pick(args.external_addr, file.external_addrs),
                "external address",
            )?,
            bootstrap: addrs(&pick(args.bootstrap, file.bootstrap), "bootstrap address")?,
            rpc_bind: rpc_bind
                .parse()
                .map_err(|e| Error::InvalidParams(format!("rpc_bind {rpc_bind:?}: {e}")))?,
            provider: args.provider || file.provider.unwrap_or(false),
            capacity: parse_size(
                args.capacity
                    .or(file.capacity)
                    .as_deref()
                    .unwrap_or("10GiB"),
            )?,
            terms,
            rendezvous_server: args.rendezvous_server || file.rendezvous_server.unwrap_or(false),
            init: args.init,
            password,
            log: args
                .log
                .or(file.log)
                .or_else(|| std::env::var("RUST_LOG").ok())
                .unwrap_or_else(|| "info".into()),
            datadir,
        })
    }
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
}
