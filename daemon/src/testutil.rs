//! A regtest bitcoind of its own for tests, so they exercise the same RPC
//! surface production uses (no mocks): the daemon's wallet unit tests and
//! the end-to-end harness (tests/, through the `testutil` feature) both
//! start it from here. It runs on free 127.0.0.1 ports with its own datadir,
//! readiness is awaited with a deadline, and it is killed by pid on drop.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bdk_bitcoind_rpc::bitcoincore_rpc::{Auth, Client, RpcApi};
use bdk_wallet::bitcoin::{Address, Transaction, Txid};

use crate::wallet::{BitcoindAuth, BitcoindConfig};

const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Credentials of [`AuthMode::UserPass`].
pub const RPC_USER: &str = "p2pstore";
pub const RPC_PASSWORD: &str = "regtest-secret";
const INSTALL_HINT: &str =
    "bitcoind not found: run scripts/install-bitcoind.sh (or set BITCOIND_EXE)";

/// `$BITCOIND_EXE`, else `bitcoind` on PATH, else the build cached by
/// scripts/install-bitcoind.sh. Panics (never skips) when none exists.
pub fn bitcoind_exe() -> PathBuf {
    if let Some(exe) = std::env::var_os("BITCOIND_EXE") {
        let exe = PathBuf::from(exe);
        assert!(
            exe.is_file(),
            "BITCOIND_EXE={} is not a file; {INSTALL_HINT}",
            exe.display()
        );
        return exe;
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join("bitcoind");
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))
        .expect("neither XDG_CACHE_HOME nor HOME is set");
    let exe = cache.join("p2pstore/bitcoind-libbitcoinkernel-sys-0.4.1/bin/bitcoind");
    assert!(exe.is_file(), "{INSTALL_HINT}");
    exe
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("cannot bind a free localhost port")
}

/// How the test talks to bitcoind; both code paths need coverage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthMode {
    Cookie,
    UserPass,
}

pub struct Bitcoind {
    child: Child,
    datadir: PathBuf,
    /// Removes the datadir on drop when the launcher made it.
    _tempdir: Option<tempfile::TempDir>,
    rpc_port: u16,
    auth: BitcoindAuth,
}

impl Bitcoind {
    /// Starts bitcoind in a fresh temporary datadir.
    pub fn start(mode: AuthMode) -> Bitcoind {
        let tempdir = tempfile::tempdir().expect("tempdir");
        let mut node = Self::start_in(tempdir.path(), mode);
        node._tempdir = Some(tempdir);
        node
    }

    /// Starts bitcoind with `datadir` (created if missing), which the
    /// caller owns and may keep for a post-mortem.
    pub fn start_in(datadir: &Path, mode: AuthMode) -> Bitcoind {
        Self::start_in_with(datadir, mode, &[])
    }

    /// As [`Bitcoind::start_in`], with extra command-line options (a
    /// relay policy a test needs, say).
    pub fn start_in_with(datadir: &Path, mode: AuthMode, extra: &[String]) -> Bitcoind {
        let exe = bitcoind_exe();
        std::fs::create_dir_all(datadir).expect("create the bitcoind datadir");
        let rpc_port = free_port();
        let p2p_port = free_port();
        let mut cmd = Command::new(&exe);
        cmd.arg("-regtest")
            .arg("-server")
            .arg(format!("-datadir={}", datadir.display()))
            .arg(format!("-rpcport={rpc_port}"))
            .arg(format!("-port={p2p_port}"))
            .arg("-rpcbind=127.0.0.1")
            .arg("-rpcallowip=127.0.0.1")
            .arg("-listen=0")
            .arg("-txindex=0")
            .arg("-fallbackfee=0.0002")
            .arg("-printtoconsole=0")
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let auth = match mode {
            AuthMode::Cookie => BitcoindAuth::Cookie(datadir.join("regtest/.cookie")),
            AuthMode::UserPass => {
                cmd.arg(format!("-rpcuser={RPC_USER}"))
                    .arg(format!("-rpcpassword={RPC_PASSWORD}"));
                BitcoindAuth::UserPass {
                    user: RPC_USER.into(),
                    password: RPC_PASSWORD.into(),
                }
            }
        };
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}; {INSTALL_HINT}", exe.display()));
        let mut node = Bitcoind {
            child,
            datadir: datadir.to_path_buf(),
            _tempdir: None,
            rpc_port,
            auth,
        };
        node.wait_ready();
        node
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                let mut stderr = String::new();
                if let Some(mut err) = self.child.stderr.take() {
                    use std::io::Read;
                    let _ = err.read_to_string(&mut stderr);
                }
                panic!("bitcoind exited early ({status}): {stderr}");
            }
            if let Ok(client) = self.try_client()
                && client.get_block_count().is_ok()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "bitcoind not ready after {READY_TIMEOUT:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.rpc_port)
    }

    pub fn rpc_port(&self) -> u16 {
        self.rpc_port
    }

    pub fn auth(&self) -> &BitcoindAuth {
        &self.auth
    }

    pub fn config(&self, poll_interval: Duration) -> BitcoindConfig {
        BitcoindConfig {
            url: self.url(),
            auth: self.auth.clone(),
            poll_interval,
        }
    }

    fn try_client(&self) -> Result<Client, bdk_bitcoind_rpc::bitcoincore_rpc::Error> {
        let auth = match &self.auth {
            BitcoindAuth::Cookie(p) => Auth::CookieFile(p.clone()),
            BitcoindAuth::UserPass { user, password } => {
                Auth::UserPass(user.clone(), password.clone())
            }
        };
        Client::new(&self.url(), auth)
    }

    pub fn client(&self) -> Client {
        self.try_client().expect("rpc client")
    }

    pub fn mine(&self, blocks: u64, to: &Address) {
        self.client()
            .generate_to_address(blocks, to)
            .expect("generatetoaddress");
    }

    pub fn height(&self) -> u64 {
        self.client().get_block_count().expect("getblockcount")
    }

    pub fn raw_tx(&self, txid: &Txid) -> Transaction {
        // Without txindex this only works for mempool txs, which is all the
        // tests need.
        self.client()
            .get_raw_transaction(txid, None)
            .expect("getrawtransaction")
    }

    pub fn in_mempool(&self, txid: &Txid) -> bool {
        self.client()
            .get_raw_mempool()
            .expect("getrawmempool")
            .contains(txid)
    }

    /// Any RPC by name, for calls the typed client lacks.
    pub fn call(
        &self,
        method: &str,
        args: &[serde_json::Value],
    ) -> Result<serde_json::Value, bdk_bitcoind_rpc::bitcoincore_rpc::Error> {
        self.try_client()?.call(method, args)
    }

    pub fn datadir(&self) -> &Path {
        &self.datadir
    }

    /// Kills the process (by its pid) and waits for it; idempotent.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Bitcoind {
    fn drop(&mut self) {
        // `Child::kill` signals exactly this pid; the datadir goes after.
        self.kill();
    }
}

/// A deterministic 64-byte BIP39 seed, the same way the daemon derives it.
pub fn seed(byte: u8) -> [u8; 64] {
    bip39::Mnemonic::from_entropy(&[byte; 16])
        .expect("valid entropy")
        .to_seed("")
}

/// A config pointing at a localhost port nobody listens on.
pub fn unreachable_config() -> BitcoindConfig {
    BitcoindConfig {
        url: format!("http://127.0.0.1:{}", free_port()),
        auth: BitcoindAuth::UserPass {
            user: "nobody".into(),
            password: "nothing".into(),
        },
        poll_interval: Duration::from_millis(100),
    }
}
