//! Test harness: starts real `p2pstored` processes on 127.0.0.1 with free
//! ports, talks to them over JSON-RPC, and kills them by pid when dropped.
//!
//! Binaries come from the workspace's target dir (build them first with
//! `cargo build --workspace --bins`, which compiles this crate's request
//! for p2pstored's `failpoints` feature into them; scripts/test.sh does),
//! or `P2PSTORE_BIN_DIR`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use std::sync::{Arc, Mutex};

use jsonrpsee::http_client::HttpClient;
use p2pstore_rpc::P2pstoreApiClient;
use p2pstored::testutil;

pub mod chaos;
pub mod measure;

pub const PASSWORD: &str = "test password";

/// Longest a single RPC call may take in a test.
pub const RPC_TIMEOUT: Duration = Duration::from_secs(300);

pub fn bin(name: &str) -> PathBuf {
    let dir = match std::env::var_os("P2PSTORE_BIN_DIR") {
        Some(d) => PathBuf::from(d),
        // target/<profile>/deps/<test binary> → target/<profile>, or
        // target/<profile>/<binary> (p2pstore-chaos) → target/<profile>.
        None => {
            let exe = std::env::current_exe().unwrap();
            let dir = exe.parent().unwrap();
            if dir.ends_with("deps") {
                dir.parent().unwrap().to_path_buf()
            } else {
                dir.to_path_buf()
            }
        }
    };
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` first (scripts/test.sh does)",
        path.display()
    );
    path
}

pub use testutil::free_port;

/// Polls `f` until it returns Some, failing the test after `secs`.
pub async fn wait_for<T, F, Fut>(what: &str, secs: u64, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {secs} s waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub struct Daemon {
    pub name: String,
    pub datadir: PathBuf,
    pub p2p_port: u16,
    pub args: Vec<String>,
    /// Extra environment for the next start (e.g. a failpoint).
    pub env: Vec<(String, String)>,
    child: Option<Child>,
}

impl Daemon {
    pub fn new(name: &str, root: &Path, args: Vec<String>) -> Self {
        let datadir = root.join(name);
        std::fs::create_dir_all(&datadir).unwrap();
        std::fs::write(datadir.join("password"), PASSWORD).unwrap();
        Daemon {
            name: name.into(),
            datadir,
            p2p_port: free_port(),
            args,
            env: Vec::new(),
            child: None,
        }
    }

    pub fn p2p_addr(&self) -> String {
        format!("/ip4/127.0.0.1/tcp/{}", self.p2p_port)
    }

    /// Starts the process (with the password file unless `locked`) and
    /// waits until its RPC answers.
    pub async fn start_with(&mut self, locked: bool) {
        assert!(self.child.is_none(), "{} already running", self.name);
        let _ = std::fs::remove_file(self.datadir.join(p2pstore_rpc::RPC_ADDR_FILE));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.datadir.join("p2pstored.log"))
            .unwrap();
        let mut cmd = Command::new(bin("p2pstored"));
        cmd.arg("--datadir")
            .arg(&self.datadir)
            .arg("--listen")
            .arg(self.p2p_addr())
            .arg("--rpc-bind")
            .arg("127.0.0.1:0")
            .args(&self.args)
            .env_remove("P2PSTORE_PASSWORD")
            .env_remove("P2PSTORE_FAILPOINT")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("RUST_LOG", "info,p2pstored=debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        if !locked {
            cmd.arg("--password-file")
                .arg(self.datadir.join("password"));
        }
        self.child = Some(cmd.spawn().unwrap());
        let addr_file = self.datadir.join(p2pstore_rpc::RPC_ADDR_FILE);
        let name = self.name.clone();
        wait_for(&format!("{name} RPC"), 60, || {
            let ready = addr_file.exists();
            async move { ready.then_some(()) }
        })
        .await;
    }

    pub async fn start(&mut self) {
        self.start_with(false).await
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Signals the process and reaps it: its exit status, or None when it
    /// was not running or had to be killed after 20 s.
    fn signal_and_wait(&mut self, sig: i32) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        unsafe { libc::kill(child.id() as i32, sig) };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    /// SIGTERM, as a service manager stops it; the exit status, which
    /// must come within 20 s.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let name = self.name.clone();
        self.signal_and_wait(libc::SIGTERM)
            .unwrap_or_else(|| panic!("{name} did not exit within 20 s of SIGTERM"))
    }

    /// Waits until the process ends by itself (at a failpoint, say) and
    /// reaps it.
    pub async fn wait_exit(&mut self, secs: u64) {
        self.exit_status(secs).await;
    }

    /// Graceful stop (SIGTERM), as a service manager would.
    pub fn stop(&mut self) {
        self.signal_and_wait(libc::SIGTERM);
    }

    /// Sudden death (SIGKILL).
    pub fn kill(&mut self) {
        self.signal_and_wait(libc::SIGKILL);
    }

    /// Sends `sig` without waiting (the test watches what happens next).
    pub fn signal(&self, sig: i32) {
        if let Some(pid) = self.pid() {
            unsafe { libc::kill(pid as i32, sig) };
        }
    }

    /// Waits until the process ends by itself and returns its status.
    pub async fn exit_status(&mut self, secs: u64) -> std::process::ExitStatus {
        let name = self.name.clone();
        let child = self.child.as_mut().expect("running");
        let deadline = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return status;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{name} did not exit within {secs} s");
    }

    pub async fn restart(&mut self) {
        self.stop();
        self.start().await;
    }

    /// A client of this daemon's RPC, found the way the CLI finds it, with
    /// a bounded timeout so a hung call fails the test instead of waiting.
    pub fn rpc(&self) -> HttpClient {
        p2pstore_rpc::conn::connect_with_timeout(&self.datadir, None, RPC_TIMEOUT)
            .unwrap_or_else(|e| panic!("{} RPC: {e}", self.name))
    }

    pub fn rpc_addr(&self) -> String {
        p2pstore_rpc::conn::read_rpc_addr(&self.datadir)
            .unwrap_or_else(|e| panic!("{} RPC: {e}", self.name))
    }

    pub async fn peer_id(&self) -> String {
        self.rpc().status().await.unwrap().peer_id.unwrap()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.datadir.join("p2pstored.log")).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub struct NetOptions {
    pub providers: usize,
    pub capacity: String,
    /// Distinct prices make the client's choice deterministic: provider 1
    /// is cheapest.
    pub distinct_prices: bool,
    /// Providers' price in sat/GiB/month (plus their number when distinct).
    pub base_price: u64,
    /// Mine 101 blocks to the client so it can pay at once.
    pub fund_client: bool,
    /// The client's default redundancy: single copy unless a test asks.
    pub redundancy: String,
    pub client_args: Vec<String>,
    pub provider_args: Vec<String>,
    /// Extra bitcoind options.
    pub bitcoind_args: Vec<String>,
    /// The bootstrap node also serves rendezvous; without it, it is a
    /// plain Kademlia seed and providers are found through the DHT alone.
    pub rendezvous: bool,
    /// The client's `--index-backup-secs`. 0 (no backups) unless a test
    /// asks: a backup is a paid put of its own, and most tests count the
    /// client's puts, payments and contacts exactly.
    pub index_backup_secs: u64,
}

impl Default for NetOptions {
    fn default() -> Self {
        NetOptions {
            providers: 3,
            capacity: "1GiB".into(),
            distinct_prices: true,
            base_price: 1000,
            fund_client: true,
            redundancy: "low".into(),
            client_args: Vec::new(),
            provider_args: Vec::new(),
            bitcoind_args: Vec::new(),
            rendezvous: false,
            index_backup_secs: 0,
        }
    }
}

/// The client flags for periods of `period` blocks paid `renew_before`
/// blocks early, with a price cap high enough for any test price.
pub fn period_args(period: u32, renew_before: u32) -> Vec<String> {
    vec![
        "--period-blocks".into(),
        period.to_string(),
        "--renew-before-blocks".into(),
        renew_before.to_string(),
        "--max-price-sat-per-gib-month".into(),
        "10000000000".into(),
    ]
}

/// A daemon's contracts on one side.
pub async fn contracts(
    d: &Daemon,
    role: p2pstore_rpc::ContractRole,
) -> Vec<p2pstore_rpc::ContractInfo> {
    d.rpc()
        .contracts()
        .await
        .unwrap()
        .into_iter()
        .filter(|c| c.role == role)
        .collect()
}

/// Blocks a provider waits for payment in tests.
pub const PAYMENT_WINDOW: u32 = 3;

/// A regtest bitcoind of its own, on free loopback ports: the daemon's
/// launcher (`p2pstored::testutil`, shared with its wallet unit tests),
/// with async calls run on tokio's blocking threads.
pub struct Bitcoind {
    inner: Arc<Mutex<testutil::Bitcoind>>,
    pub rpc_port: u16,
}

impl Bitcoind {
    pub async fn start(root: &Path) -> Bitcoind {
        Self::start_with(root, Vec::new()).await
    }

    /// With extra bitcoind options.
    pub async fn start_with(root: &Path, extra: Vec<String>) -> Bitcoind {
        let datadir = root.join("bitcoind");
        let node = tokio::task::spawn_blocking(move || {
            testutil::Bitcoind::start_in_with(&datadir, testutil::AuthMode::UserPass, &extra)
        })
        .await
        .unwrap();
        Bitcoind {
            rpc_port: node.rpc_port(),
            inner: Arc::new(Mutex::new(node)),
        }
    }

    pub fn daemon_args(&self) -> Vec<String> {
        vec![
            "--network".into(),
            "regtest".into(),
            "--bitcoind-rpc-url".into(),
            format!("http://127.0.0.1:{}", self.rpc_port),
            "--bitcoind-rpc-user".into(),
            testutil::RPC_USER.into(),
            "--bitcoind-rpc-password".into(),
            testutil::RPC_PASSWORD.into(),
            "--payment-window-blocks".into(),
            PAYMENT_WINDOW.to_string(),
        ]
    }

    pub async fn call(
        &self,
        method: &str,
        params: serde_json::Value,
    ) -> Result<serde_json::Value, String> {
        let inner = self.inner.clone();
        let method = method.to_string();
        let args = params.as_array().cloned().unwrap_or_default();
        tokio::task::spawn_blocking(move || {
            let node = inner.lock().map_err(|e| e.to_string())?;
            node.call(&method, &args).map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| e.to_string())?
    }

    pub async fn mine(&self, n: u32, address: &str) {
        self.call("generatetoaddress", serde_json::json!([n, address]))
            .await
            .unwrap();
    }

    /// Mines to an address no test wallet owns.
    pub async fn mine_burn(&self, n: u32) {
        self.mine(n, "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080")
            .await
    }

    /// Mines blocks that leave the mempool alone, as miners do with
    /// transactions whose fee is too low.
    pub async fn mine_empty(&self, n: u32) {
        for _ in 0..n {
            self.call(
                "generateblock",
                serde_json::json!(["bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080", []]),
            )
            .await
            .unwrap();
        }
    }

    /// Transactions in bitcoind's mempool.
    pub async fn mempool(&self) -> Vec<String> {
        let v = self
            .call("getrawmempool", serde_json::json!([]))
            .await
            .unwrap();
        serde_json::from_value(v).unwrap()
    }

    pub async fn height(&self) -> u64 {
        self.call("getblockcount", serde_json::json!([]))
            .await
            .unwrap()
            .as_u64()
            .unwrap()
    }

    /// How a wallet opened by a test reaches this bitcoind.
    pub fn wallet_config(&self) -> p2pstored::wallet::BitcoindConfig {
        self.inner
            .lock()
            .unwrap()
            .config(Duration::from_millis(200))
    }

    pub fn kill(&mut self) {
        if let Ok(mut node) = self.inner.lock() {
            node.kill();
        }
    }

    pub fn datadir(&self) -> PathBuf {
        self.inner
            .lock()
            .map(|n| n.datadir().to_path_buf())
            .unwrap_or_default()
    }
}

/// A regtest bitcoind, a bootstrap node, providers and a client, all with
/// accounts.
pub struct Net {
    pub dir: tempfile::TempDir,
    pub bitcoind: Bitcoind,
    pub bootstrap: Daemon,
    pub bootstrap_addr: String,
    pub providers: Vec<Daemon>,
    pub client: Daemon,
    /// The client's recovery phrase, as `init` showed it.
    pub client_mnemonic: String,
}

impl Net {
    pub async fn start(opts: NetOptions) -> Net {
        let dir = tempfile::Builder::new()
            .prefix("p2pstore-test-")
            .tempdir()
            .unwrap();
        let bitcoind = Bitcoind::start_with(dir.path(), opts.bitcoind_args.clone()).await;
        let role = if opts.rendezvous {
            "--rendezvous-server"
        } else {
            "--seed"
        };
        let mut bootstrap = Daemon::new("bootstrap", dir.path(), vec![role.into()]);
        bootstrap.start().await;
        let bootstrap_addr = format!("{}/p2p/{}", bootstrap.p2p_addr(), bootstrap.peer_id().await);
        let mut providers = Vec::new();
        for i in 1..=opts.providers {
            let price = if opts.distinct_prices {
                opts.base_price + i as u64
            } else {
                opts.base_price
            };
            let mut args = bitcoind.daemon_args();
            args.extend([
                "--bootstrap".into(),
                bootstrap_addr.clone(),
                "--provider".into(),
                "--capacity".into(),
                opts.capacity.clone(),
                "--price-sat-per-gib-month".into(),
                price.to_string(),
            ]);
            args.extend(opts.provider_args.iter().cloned());
            let mut p = Daemon::new(&format!("provider-{i}"), dir.path(), args);
            p.start().await;
            p.rpc().init(PASSWORD.into(), None, None).await.unwrap();
            providers.push(p);
        }
        let mut args = bitcoind.daemon_args();
        args.extend([
            "--bootstrap".into(),
            bootstrap_addr.clone(),
            "--redundancy".into(),
            opts.redundancy.clone(),
            "--index-backup-secs".into(),
            opts.index_backup_secs.to_string(),
        ]);
        args.extend(opts.client_args.iter().cloned());
        let mut client = Daemon::new("client", dir.path(), args);
        client.start().await;
        let created = client
            .rpc()
            .init(PASSWORD.into(), None, None)
            .await
            .unwrap();
        let net = Net {
            dir,
            bitcoind,
            bootstrap,
            bootstrap_addr,
            providers,
            client,
            client_mnemonic: created.mnemonic.expect("a new account shows its phrase"),
        };
        if opts.fund_client {
            net.fund(&net.client).await;
        }
        net.wait_for_providers(opts.providers).await;
        net
    }

    /// Mines 101 blocks to a daemon's wallet and waits until it can spend.
    pub async fn fund(&self, d: &Daemon) {
        let rpc = d.rpc();
        let address = rpc.wallet_address().await.unwrap().address;
        self.bitcoind.mine(101, &address).await;
        wait_for("a spendable balance", 60, || {
            let rpc = rpc.clone();
            async move {
                rpc.wallet_balance()
                    .await
                    .ok()
                    .filter(|b| b.confirmed_sat > 0)
                    .map(|_| ())
            }
        })
        .await;
    }

    /// Waits until every running node's wallet has seen the chain tip.
    pub async fn wait_synced(&self) {
        let height = self.bitcoind.height().await as u32;
        for d in self.providers.iter().chain(std::iter::once(&self.client)) {
            if d.pid().is_none() {
                continue;
            }
            let rpc = d.rpc();
            wait_for(&format!("{} to sync to {height}", d.name), 60, || {
                let rpc = rpc.clone();
                async move {
                    rpc.status()
                        .await
                        .ok()
                        .and_then(|s| s.tip_height)
                        .filter(|h| *h >= height)
                        .map(|_| ())
                }
            })
            .await;
        }
    }

    pub async fn wait_for_providers(&self, n: usize) {
        // DHT lookups only: asking every provider for an offer would fill
        // the client's directory, which tests of it must not find full.
        let rpc = self.client.rpc();
        wait_for(&format!("{n} providers in the DHT"), 90, || {
            let rpc = rpc.clone();
            async move {
                rpc.find_providers(None)
                    .await
                    .ok()
                    .filter(|r| r.providers.len() >= n)
                    .map(|_| ())
            }
        })
        .await;
    }

    pub async fn provider_by_peer(&self, peer: &str) -> usize {
        for (i, p) in self.providers.iter().enumerate() {
            if p.pid().is_some() && p.peer_id().await == peer {
                return i;
            }
        }
        panic!("no running provider has peer id {peer}");
    }
}

impl Net {
    /// Writes `len` random bytes to `name` in the test dir and puts it at
    /// `redundancy` (None: the client's default). Returns (file id, digest,
    /// providers).
    pub async fn put_random(
        &self,
        name: &str,
        len: usize,
        redundancy: Option<&str>,
    ) -> (String, [u8; 32], Vec<String>) {
        let src = self.dir.path().join(name);
        let digest = random_file(&src, len);
        let put = self
            .client
            .rpc()
            .put(
                src.to_string_lossy().into(),
                redundancy.map(Into::into),
                None,
                None,
                None,
                None,
            )
            .await
            .unwrap();
        (put.file_id, digest, put.providers)
    }

    /// Puts the file at `src` with the client's defaults and operation id
    /// `op`, failing the test if the put fails.
    pub async fn put_op(&self, src: &Path, op: &str) -> p2pstore_rpc::PutResult {
        self.client
            .rpc()
            .put(
                src.to_string_lossy().into(),
                None,
                None,
                None,
                None,
                Some(op.into()),
            )
            .await
            .unwrap_or_else(|e| panic!("put {op}: {e}"))
    }

    /// Gets `file_id` into a fresh file and checks it is byte-identical to
    /// `digest`; `tag` names the check in a failure.
    pub async fn assert_get(&self, file_id: &str, digest: [u8; 32], tag: &str) {
        let out = self.dir.path().join(format!("out-{tag}"));
        self.client
            .rpc()
            .get(file_id.into(), out.to_string_lossy().into(), None)
            .await
            .unwrap();
        assert_eq!(file_sha256(&out), digest, "{tag}: not byte-identical");
    }
}

/// The shard files (not their `.tree` files) a provider holds.
pub fn shard_files(provider: &Daemon) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for dir in std::fs::read_dir(provider.datadir.join("shards"))
        .unwrap()
        .flatten()
    {
        // Uploads being written, and files start-up set aside: not held.
        if dir.file_name() == "tmp" || dir.file_name() == p2pstored::provider::store::QUARANTINE_DIR
        {
            continue;
        }
        for f in std::fs::read_dir(dir.path()).unwrap().flatten() {
            if !f.file_name().to_string_lossy().ends_with(".tree") {
                out.push(f.path());
            }
        }
    }
    out
}

/// A bare libp2p swarm over TCP, Noise and Yamux with a new identity and
/// the given behaviour: what another implementation, or an attacker,
/// would run. Idle connections close after `idle`.
pub fn plain_swarm<B: libp2p::swarm::NetworkBehaviour>(
    behaviour: impl FnOnce(&libp2p::identity::Keypair) -> B,
    idle: Duration,
) -> libp2p::Swarm<B> {
    plain_swarm_as(
        libp2p::identity::Keypair::generate_ed25519(),
        behaviour,
        idle,
    )
}

/// [`plain_swarm`] with the identity `key` (say, one chosen for where its
/// peer id falls in the DHT).
pub fn plain_swarm_as<B: libp2p::swarm::NetworkBehaviour>(
    key: libp2p::identity::Keypair,
    behaviour: impl FnOnce(&libp2p::identity::Keypair) -> B,
    idle: Duration,
) -> libp2p::Swarm<B> {
    use libp2p::{noise, tcp, yamux};
    libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
        .unwrap()
        .with_behaviour(behaviour)
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(idle))
        .build()
}

/// A `p2pstore-cli events` process's lines of output.
pub type EventLines = tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>;

/// Starts `p2pstore-cli events` (with `--json` when `json`) on `d`, and
/// returns once it says it follows them (on stderr): from then on nothing
/// is missed. The child is killed when dropped.
pub async fn follow_events(d: &Daemon, json: bool) -> (tokio::process::Child, EventLines) {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(bin("p2pstore-cli"))
        .arg("--datadir")
        .arg(&d.datadir)
        .arg("events")
        .args(json.then_some("--json"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stderr = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let said = tokio::time::timeout(Duration::from_secs(30), stderr.next_line())
        .await
        .expect("events says it follows within 30 s")
        .unwrap()
        .unwrap_or_default();
    assert!(said.contains("following"), "{said}");
    let lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    (child, lines)
}

/// Reads JSON events until `done` says the ones wanted have come; fails
/// past `secs`. Returns every event read.
pub async fn read_events_until(
    lines: &mut EventLines,
    secs: u64,
    done: impl Fn(&[serde_json::Value]) -> bool,
) -> Vec<serde_json::Value> {
    let mut seen = Vec::new();
    tokio::time::timeout(Duration::from_secs(secs), async {
        while !done(&seen) {
            let line = lines
                .next_line()
                .await
                .unwrap()
                .expect("the event stream stays open");
            seen.push(serde_json::from_str(&line).expect("each line is one JSON event"));
        }
    })
    .await
    .unwrap_or_else(|_| panic!("events seen in {secs} s: {seen:#?}"));
    seen
}

/// The events of type `t`.
pub fn events_of<'a>(events: &'a [serde_json::Value], t: &str) -> Vec<&'a serde_json::Value> {
    events.iter().filter(|e| e["type"] == t).collect()
}

/// The Python that `scripts/install-python-tools.sh` sets up (once, in the
/// project cache), with the packages tests check the daemon with.
pub fn python_tools() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = std::process::Command::new(root.join("scripts/install-python-tools.sh"))
        .output()
        .expect("scripts/install-python-tools.sh runs");
    assert!(
        out.status.success(),
        "install-python-tools.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    PathBuf::from(text.lines().last().expect("it prints the python path"))
}

/// Runs `p2pstore-cli --datadir DATADIR ARGS...` (no password from the
/// environment) and returns its output; fails the test past `secs`.
pub async fn cli_output(datadir: &Path, args: &[&str], secs: u64) -> std::process::Output {
    tokio::time::timeout(
        Duration::from_secs(secs),
        tokio::process::Command::new(bin("p2pstore-cli"))
            .arg("--datadir")
            .arg(datadir)
            .args(args)
            .env_remove("P2PSTORE_PASSWORD")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap_or_else(|_| panic!("p2pstore-cli {args:?} finished within {secs} s"))
    .expect("the CLI runs")
}

/// A Kademlia behaviour built from rust-libp2p's defaults (20 providers
/// per key, no p2pstore code), speaking p2pstore's DHT protocol as a
/// server: what another implementation in the DHT runs.
pub fn standard_kad(
    key: &libp2p::identity::Keypair,
) -> libp2p::kad::Behaviour<libp2p::kad::store::MemoryStore> {
    use libp2p::kad;
    let id = key.public().to_peer_id();
    let cfg = kad::Config::new(libp2p::StreamProtocol::new("/p2pstore/kad/1.0.0"));
    let mut k = kad::Behaviour::with_config(id, kad::store::MemoryStore::new(id), cfg);
    k.set_mode(Some(kad::Mode::Server));
    k
}

/// A seed's peer id and address, from its `.../p2p/<id>` address.
pub fn parse_seed(seed: &str) -> (libp2p::PeerId, libp2p::Multiaddr) {
    let seed: libp2p::Multiaddr = seed.parse().unwrap();
    let Some(libp2p::multiaddr::Protocol::P2p(id)) = seed.iter().last() else {
        panic!("seed address without /p2p: {seed}");
    };
    (id, seed)
}

/// Transactions `d`'s wallet sent: its payments, and any send from it.
pub async fn sent_txs(d: &Daemon) -> Vec<p2pstore_rpc::WalletTx> {
    let txs = d.rpc().wallet_txs().await.unwrap();
    txs.into_iter().filter(|t| t.sent_sat > 0).collect()
}

/// Writes `len` random bytes to a new file and returns its SHA-256.
pub fn random_file(path: &Path, len: usize) -> [u8; 32] {
    use sha2::Digest;
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = left.min(buf.len());
        getrandom::fill(&mut buf[..n]).unwrap();
        hasher.update(&buf[..n]);
        f.write_all(&buf[..n]).unwrap();
        left -= n;
    }
    hasher.finalize().into()
}

pub fn file_sha256(path: &Path) -> [u8; 32] {
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    use std::io::Read;
    let mut f = std::fs::File::open(path).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    hasher.finalize().into()
}

/// The JSON-RPC error code of a failed call.
pub fn rpc_code(e: &jsonrpsee::core::ClientError) -> i32 {
    match e {
        jsonrpsee::core::ClientError::Call(obj) => obj.code(),
        other => panic!("expected a JSON-RPC error object, got {other}"),
    }
}

/// Checks live results against the OpenRPC document: each call goes over
/// raw JSON-RPC (the result stays the JSON the daemon sent, not a typed
/// value re-serialized here) and its `result` must validate against the
/// method's declared result schema, `$ref`s resolved in `components`.
pub struct SpecCheck {
    doc: serde_json::Value,
    /// Methods called so far, so a test can assert it covered them.
    pub called: std::collections::BTreeSet<String>,
}

impl Default for SpecCheck {
    fn default() -> Self {
        Self::new()
    }
}

impl SpecCheck {
    pub fn new() -> Self {
        SpecCheck {
            doc: serde_json::from_str(p2pstore_rpc::OPENRPC_JSON).unwrap(),
            called: Default::default(),
        }
    }

    /// Calls `method` on `d` with named `params` and returns the result,
    /// after checking it against the method's result schema.
    pub async fn call(
        &mut self,
        d: &Daemon,
        method: &str,
        params: serde_json::Value,
    ) -> serde_json::Value {
        use jsonrpsee::core::client::ClientT;
        let mut p = jsonrpsee::core::params::ObjectParams::new();
        for (k, v) in params.as_object().cloned().unwrap_or_default() {
            p.insert(&k, v).unwrap();
        }
        let result: serde_json::Value = d
            .rpc()
            .request(method, p)
            .await
            .unwrap_or_else(|e| panic!("{method}: {e}"));
        let spec = self.doc["methods"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == method)
            .unwrap_or_else(|| panic!("{method} is not in openrpc.json"));
        // The result schema is wrapped in a root that carries the
        // document's components, so `#/components/schemas/...` resolves.
        let schema = serde_json::json!({
            "allOf": [spec["result"]["schema"]],
            "components": self.doc["components"],
        });
        let validator = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft7)
            .offline()
            .build(&schema)
            .unwrap_or_else(|e| panic!("{method}: bad result schema: {e}"));
        let errors: Vec<String> = validator
            .iter_errors(&result)
            .map(|e| format!("{e} at {}", e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{method}: result does not match openrpc.json: {errors:#?}\nresult: {result:#}"
        );
        self.called.insert(method.to_string());
        result
    }
}

/// A peer in the test process that speaks the wire protocol through
/// p2pstored's own network stack, with a fresh identity: a hostile peer,
/// or an honest one whose latency a test measures.
pub async fn wire_peer(bootstrap: &str) -> p2pstored::network::Client {
    use p2pstored::network::{NetworkConfig, Timeouts};
    let cfg = NetworkConfig {
        listen: vec![
            format!("/ip4/127.0.0.1/tcp/{}", free_port())
                .parse()
                .unwrap(),
        ],
        external: vec![],
        bootstrap: vec![bootstrap.parse().unwrap()],
        rendezvous_server: false,
        provide: false,
        dht_server: false,
        max_outbound_connections: p2pstored::config::DEFAULT_MAX_OUTBOUND_CONNECTIONS,
        metrics: Default::default(),
        timeouts: Timeouts {
            control: Duration::from_secs(10),
            shard: Duration::from_secs(30),
        },
    };
    let key = libp2p::identity::Keypair::generate_ed25519();
    let (client, inbound) = p2pstored::network::spawn(key, cfg).await.unwrap();
    // Nothing serves this peer's inbound requests; dropping the queue's
    // end makes the network answer them "shutting down" at once.
    drop(inbound);
    client
}

/// A network of one provider, the provider's id and address, and a wire
/// peer (hostile or honest) that knows where it listens.
pub async fn one_provider_and_a_wire_peer() -> (
    Net,
    libp2p::PeerId,
    libp2p::Multiaddr,
    p2pstored::network::Client,
) {
    let net = Net::start(NetOptions {
        providers: 1,
        ..Default::default()
    })
    .await;
    let provider: libp2p::PeerId = net.providers[0].peer_id().await.parse().unwrap();
    let addr: libp2p::Multiaddr = net.providers[0].p2p_addr().parse().unwrap();
    let peer = wire_peer(&net.bootstrap_addr).await;
    peer.add_addresses(provider, vec![addr.clone()]).await;
    (net, provider, addr, peer)
}
