//! Running p2pstored as a service: the systemd unit checked by systemd's
//! own verifier, readiness and stopping told to the service manager, a
//! graceful SIGTERM in the middle of a put (it finishes, or past
//! `shutdown_timeout_secs` is cut and retried without paying twice), and
//! the recovery phrase kept out of anything but a terminal.

use std::path::{Path, PathBuf};
use std::time::Duration;

use p2pstore_rpc::{P2pstoreApiClient, TransferPhase};
use p2pstore_tests::*;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Files a running daemon keeps in its data dir and must remove on a
/// clean stop.
fn run_files_left(d: &Daemon) -> Vec<&'static str> {
    [
        "p2pstored.pid",
        p2pstore_rpc::RPC_ADDR_FILE,
        p2pstore_rpc::COOKIE_FILE,
    ]
    .into_iter()
    .filter(|f| d.datadir.join(f).exists())
    .collect()
}

#[tokio::test]
async fn the_systemd_unit_verifies_and_fits_the_daemon() {
    let unit = std::fs::read_to_string(repo().join("contrib/systemd/p2pstored.service")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // systemd checks that ExecStart's binary exists and that the man page
    // in Documentation= opens: point it at this build and at the pages
    // the CLI generates.
    let man1 = dir.path().join("man/man1");
    std::fs::create_dir_all(&man1).unwrap();
    let out = cli_output(dir.path(), &["man", "--dir", man1.to_str().unwrap()], 30).await;
    assert!(out.status.success(), "{out:?}");
    let local = dir.path().join("p2pstored.service");
    std::fs::write(
        &local,
        unit.replace(
            "/usr/local/bin/p2pstored",
            bin("p2pstored").to_str().unwrap(),
        ),
    )
    .unwrap();
    let verify = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&local)
        .env("MANPATH", dir.path().join("man"))
        .output()
        .expect("systemd-analyze runs (scripts/install-test-tools.sh installs it)");
    // Unknown keys are only warnings to systemd: any output fails here.
    assert!(
        verify.status.success() && verify.stderr.is_empty() && verify.stdout.is_empty(),
        "systemd-analyze verify: {}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );

    let value = |key: &str| -> Vec<&str> {
        unit.lines()
            .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .collect()
    };
    for (key, want) in [
        ("Type", "notify"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("KillSignal", "SIGTERM"),
    ] {
        assert_eq!(value(key), [want], "{key}");
    }
    // It writes only its data dir, and waits out the daemon's own
    // shutdown timeout before killing it.
    let exec = value("ExecStart")[0];
    let datadir = exec
        .split("--datadir ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .unwrap();
    assert_eq!(value("ReadWritePaths"), [datadir]);
    let stop: u64 = value("TimeoutStopSec")[0].parse().unwrap();
    assert!(stop > p2pstored::config::DEFAULT_SHUTDOWN_TIMEOUT.as_secs() + 10);
    // Every flag it passes is one p2pstored takes.
    let help = std::process::Command::new(bin("p2pstored"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in exec.split_whitespace().filter(|w| w.starts_with("--")) {
        assert!(help.contains(flag), "p2pstored has no {flag}");
    }
}

#[tokio::test]
async fn readiness_and_stopping_are_told_to_the_service_manager() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = tokio::net::UnixDatagram::bind(&socket_path).unwrap();
    let mut seed = Daemon::new("seed", dir.path(), vec!["--seed".into()]);
    seed.env = vec![("NOTIFY_SOCKET".into(), socket_path.to_string_lossy().into())];
    let recv = |what: &'static str| {
        let socket = &socket;
        async move {
            let mut buf = vec![0u8; 1024];
            let n = tokio::time::timeout(Duration::from_secs(30), socket.recv(&mut buf))
                .await
                .unwrap_or_else(|_| panic!("no {what} within 30 s"))
                .unwrap();
            String::from_utf8_lossy(&buf[..n]).into_owned()
        }
    };
    seed.start().await;
    let ready = recv("READY=1").await;
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready:?}");
    // Ready means the RPC answers.
    assert!(seed.datadir.join(p2pstore_rpc::RPC_ADDR_FILE).exists());
    seed.rpc().status().await.unwrap();

    seed.signal(libc::SIGTERM);
    let stopping = recv("STOPPING=1").await;
    assert!(stopping.lines().any(|l| l == "STOPPING=1"), "{stopping:?}");
    let status = seed.exit_status(30).await;
    assert!(status.success(), "{status:?}");
    assert_eq!(run_files_left(&seed), Vec::<&str>::new());
}

/// Starts a put of `size` bytes with op id `op` on the client as a CLI
/// process, and returns it once the transfer is uploading.
async fn put_until_uploading(
    net: &Net,
    name: &str,
    size: usize,
    op: &str,
) -> ([u8; 32], tokio::process::Child) {
    let src = net.dir.path().join(name);
    let digest = random_file(&src, size);
    let child = tokio::process::Command::new(bin("p2pstore-cli"))
        .arg("--datadir")
        .arg(&net.client.datadir)
        .args(["put", "--json", "--op-id", op])
        .arg(&src)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // Polled closely (not wait_for's 200 ms): the upload of a file this
    // size takes about a second here, and the signal must land inside it.
    let rpc = net.client.rpc();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(Some(p)) = rpc.progress(op.to_string()).await
            && p.phase == TransferPhase::Upload
        {
            assert!(!p.finished, "the put ended before the test could signal");
            return (digest, child);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no upload within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// No provider holds bytes its contract has not paid for.
async fn providers_hold_only_paid_bytes(net: &Net) {
    for p in &net.providers {
        for c in p.rpc().contracts().await.unwrap() {
            assert!(
                c.stored_bytes <= c.allowance_bytes,
                "{}: {} bytes stored on {} paid",
                p.name,
                c.stored_bytes,
                c.allowance_bytes
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_during_a_put_lets_it_finish_then_stops_cleanly() {
    let mut net = Net::start(NetOptions {
        providers: 2,
        ..Default::default()
    })
    .await;
    let (digest, cli) = put_until_uploading(&net, "big.bin", 96 << 20, "graceful").await;
    net.client.signal(libc::SIGTERM);
    // The put the CLI started is answered in full...
    let out = tokio::time::timeout(Duration::from_secs(60), cli.wait_with_output())
        .await
        .expect("the put ends within 60 s")
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let put: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // ...and then the daemon exits 0, its run files gone.
    let status = net.client.exit_status(60).await;
    assert!(status.success(), "{status:?}");
    assert_eq!(run_files_left(&net.client), Vec::<&str>::new());
    assert!(net.client.log().contains("waiting for running transfers"));

    net.client.start().await;
    let files = net.client.rpc().ls().await.unwrap();
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].file_id, put["file_id"].as_str().unwrap());
    net.assert_get(&files[0].file_id, digest, "graceful").await;
    assert_eq!(sent_txs(&net.client).await.len(), 1);
    providers_hold_only_paid_bytes(&net).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_put_past_the_shutdown_timeout_is_cut_and_its_retry_pays_nothing_twice() {
    let mut net = Net::start(NetOptions {
        providers: 2,
        client_args: vec!["--shutdown-timeout-secs".into(), "0".into()],
        ..Default::default()
    })
    .await;
    let (digest, cli) = put_until_uploading(&net, "cut.bin", 96 << 20, "cut").await;
    net.client.signal(libc::SIGTERM);
    let status = net.client.exit_status(30).await;
    assert!(status.success(), "{status:?}");
    assert_eq!(run_files_left(&net.client), Vec::<&str>::new());
    assert!(
        net.client.log().contains("aborting them"),
        "the log says so"
    );
    drop(cli);

    // No half a file: the index has nothing, and the retry by the same op
    // id stores it whole with the allowance already paid.
    net.client.start().await;
    assert_eq!(net.client.rpc().ls().await.unwrap().len(), 0);
    let src = net.dir.path().join("cut.bin");
    let put = net.put_op(&src, "cut").await;
    net.assert_get(&put.file_id, digest, "cut").await;
    assert_eq!(sent_txs(&net.client).await.len(), 1);
    providers_hold_only_paid_bytes(&net).await;
}

#[tokio::test]
async fn init_shows_the_recovery_phrase_only_on_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let datadir = dir.path().join("node");
    let password = dir.path().join("password");
    std::fs::write(&password, "correct horse battery staple\n").unwrap();
    let run = |extra: &'static [&'static str]| {
        let datadir = datadir.clone();
        let password = password.clone();
        async move {
            let mut cmd = tokio::process::Command::new(bin("p2pstored"));
            cmd.arg("--datadir")
                .arg(&datadir)
                .args(["--init", "--password-file"])
                .arg(&password)
                .args([
                    "--listen",
                    "/ip4/127.0.0.1/tcp/0",
                    "--rpc-bind",
                    "127.0.0.1:0",
                ])
                .args(extra)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .kill_on_drop(true);
            cmd
        }
    };
    // stdout is a pipe here, as under a service manager: refused, and no
    // account made.
    let out = tokio::time::timeout(Duration::from_secs(30), run(&[]).await.output())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not") && err.contains("terminal"), "{err}");
    assert!(err.contains("p2pstore-cli init"), "{err}");
    assert!(!p2pstored::keys::Keystore::new(&datadir).exists());

    // Asked for explicitly, it prints the phrase on stdout and never in
    // the log (stderr).
    let mut child = run(&["--print-mnemonic"]).await.spawn().unwrap();
    let mut stdout = tokio::io::BufReader::new(child.stdout.take().unwrap());
    let phrase = tokio::time::timeout(Duration::from_secs(60), async {
        use tokio::io::AsyncBufReadExt;
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            if stdout.read_line(&mut line).await.unwrap() == 0 {
                break;
            }
            lines.push(line.trim().to_string());
            if lines.len() == 2 {
                break;
            }
        }
        lines
    })
    .await
    .expect("the phrase within 60 s");
    let words: Vec<&str> = phrase[1].split_whitespace().collect();
    assert_eq!(words.len(), 24, "{phrase:?}");
    wait_for("the daemon to be ready", 60, || {
        let ready = datadir.join(p2pstore_rpc::RPC_ADDR_FILE).exists();
        async move { ready.then_some(()) }
    })
    .await;
    unsafe { libc::kill(child.id().unwrap() as i32, libc::SIGTERM) };
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(!log.contains(&phrase[1]), "the phrase is in the log");
    assert!(p2pstored::keys::Keystore::new(&datadir).exists());
}

/// Part files a get leaves in `dir`.
fn part_files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "part"))
        .collect()
}

/// Ctrl-C on a CLI command: it must leave at once, with status 130.
async fn ctrl_c(cli: tokio::process::Child) -> std::process::Output {
    unsafe { libc::kill(cli.id().unwrap() as i32, libc::SIGINT) };
    let out = tokio::time::timeout(Duration::from_secs(30), cli.wait_with_output())
        .await
        .expect("the CLI leaves at once")
        .unwrap();
    assert_eq!(out.status.code(), Some(130), "{out:?}");
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn ctrl_c_on_the_cli_leaves_no_half_put_and_no_part_file() {
    let net = Net::start(NetOptions {
        providers: 2,
        ..Default::default()
    })
    .await;
    // Ctrl-C in the middle of the upload: the CLI leaves, the put does not.
    let (digest, cli) = put_until_uploading(&net, "ctrl-c.bin", 96 << 20, "ctrl-c").await;
    let out = ctrl_c(cli).await;
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("the put goes on"), "{said}");
    let rpc = net.client.rpc();
    wait_for("the put to finish in the daemon", 120, || {
        let rpc = rpc.clone();
        async move {
            rpc.progress("ctrl-c".into())
                .await
                .ok()?
                .filter(|p| p.finished)
        }
    })
    .await;
    let files = rpc.ls().await.unwrap();
    assert_eq!(files.len(), 1, "stored whole, once");
    assert_eq!(sent_txs(&net.client).await.len(), 1);
    providers_hold_only_paid_bytes(&net).await;

    // Ctrl-C in the middle of a get: the daemon stops it or finishes it,
    // and either way no part file stays behind.
    let dest = net.dir.path().join("gets");
    std::fs::create_dir_all(&dest).unwrap();
    let cli = tokio::process::Command::new(bin("p2pstore-cli"))
        .arg("--datadir")
        .arg(&net.client.datadir)
        .args(["get", &files[0].file_id, "--output"])
        .arg(&dest)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    wait_for("the get to start writing", 60, || {
        let started = !part_files(&dest).is_empty();
        async move { started.then_some(()) }
    })
    .await;
    ctrl_c(cli).await;
    wait_for("the part file to go", 60, || {
        let gone = part_files(&dest).is_empty();
        async move { gone.then_some(()) }
    })
    .await;
    let got = dest.join("ctrl-c.bin");
    if got.exists() {
        assert_eq!(file_sha256(&got), digest, "a get that finished is whole");
    }
    // The daemon goes on serving.
    net.assert_get(&files[0].file_id, digest, "after-ctrl-c")
        .await;
}
