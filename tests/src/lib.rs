//! Test harness: starts real `p2pstored` processes on 127.0.0.1 with free
//! ports, talks to them over JSON-RPC, and kills them by pid when dropped.
//!
//! Binaries come from the workspace's target dir (build them first with
//! `cargo build --bins`; scripts/test.sh does), or `P2PSTORE_BIN_DIR`.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use jsonrpsee::http_client::{HttpClient, HttpClientBuilder};
use p2pstore_rpc::P2pstoreApiClient;

pub const PASSWORD: &str = "test password";

pub fn bin(name: &str) -> PathBuf {
    let dir = match std::env::var_os("P2PSTORE_BIN_DIR") {
        Some(d) => PathBuf::from(d),
        // target/<profile>/deps/<test binary> → target/<profile>
        None => std::env::current_exe()
            .unwrap()
            .parent()
            .unwrap()
            .parent()
            .unwrap()
            .to_path_buf(),
    };
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --bins` first (scripts/test.sh does)",
        path.display()
    );
    path
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

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
    args: Vec<String>,
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

    fn signal_and_wait(&mut self, sig: i32) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        unsafe { libc::kill(child.id() as i32, sig) };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Graceful stop (SIGTERM), as a service manager would.
    pub fn stop(&mut self) {
        self.signal_and_wait(libc::SIGTERM);
    }

    /// Sudden death (SIGKILL).
    pub fn kill(&mut self) {
        self.signal_and_wait(libc::SIGKILL);
    }

    pub async fn restart(&mut self) {
        self.stop();
        self.start().await;
    }

    pub fn rpc(&self) -> HttpClient {
        let addr = std::fs::read_to_string(self.datadir.join(p2pstore_rpc::RPC_ADDR_FILE)).unwrap();
        let token = std::fs::read_to_string(self.datadir.join(p2pstore_rpc::COOKIE_FILE)).unwrap();
        let mut headers = http::HeaderMap::new();
        headers.insert(
            http::header::AUTHORIZATION,
            format!("Bearer {}", token.trim()).parse().unwrap(),
        );
        HttpClientBuilder::default()
            .set_headers(headers)
            .request_timeout(Duration::from_secs(300))
            .build(format!("http://{}", addr.trim()))
            .unwrap()
    }

    pub fn rpc_addr(&self) -> String {
        std::fs::read_to_string(self.datadir.join(p2pstore_rpc::RPC_ADDR_FILE))
            .unwrap()
            .trim()
            .to_string()
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
}

impl Default for NetOptions {
    fn default() -> Self {
        NetOptions {
            providers: 3,
            capacity: "1GiB".into(),
            distinct_prices: true,
        }
    }
}

/// A bootstrap node, providers and a client, all with accounts.
pub struct Net {
    pub dir: tempfile::TempDir,
    pub bootstrap: Daemon,
    pub bootstrap_addr: String,
    pub providers: Vec<Daemon>,
    pub client: Daemon,
}

impl Net {
    pub async fn start(opts: NetOptions) -> Net {
        let dir = tempfile::Builder::new()
            .prefix("p2pstore-test-")
            .tempdir()
            .unwrap();
        let mut bootstrap =
            Daemon::new("bootstrap", dir.path(), vec!["--rendezvous-server".into()]);
        bootstrap.start().await;
        let bootstrap_addr = format!("{}/p2p/{}", bootstrap.p2p_addr(), bootstrap.peer_id().await);
        let mut providers = Vec::new();
        for i in 1..=opts.providers {
            let price = if opts.distinct_prices {
                1000 + i as u64
            } else {
                1000
            };
            let args = vec![
                "--bootstrap".into(),
                bootstrap_addr.clone(),
                "--provider".into(),
                "--capacity".into(),
                opts.capacity.clone(),
                "--price-sat-per-gib-month".into(),
                price.to_string(),
            ];
            let mut p = Daemon::new(&format!("provider-{i}"), dir.path(), args);
            p.start().await;
            p.rpc().init(PASSWORD.into(), None).await.unwrap();
            providers.push(p);
        }
        let mut client = Daemon::new(
            "client",
            dir.path(),
            vec!["--bootstrap".into(), bootstrap_addr.clone()],
        );
        client.start().await;
        client.rpc().init(PASSWORD.into(), None).await.unwrap();
        let net = Net {
            dir,
            bootstrap,
            bootstrap_addr,
            providers,
            client,
        };
        net.wait_for_providers(opts.providers).await;
        net
    }

    pub async fn wait_for_providers(&self, n: usize) {
        let rpc = self.client.rpc();
        wait_for(&format!("{n} providers in the DHT"), 90, || {
            let rpc = rpc.clone();
            async move {
                rpc.providers()
                    .await
                    .ok()
                    .filter(|p| p.len() >= n)
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
