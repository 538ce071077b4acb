//! The daemon's hold on its data dir, with real processes: one daemon per
//! data dir through the `.lock` the kernel drops when a process dies, a
//! dead daemon's files never trusted by the CLI nor blocking a restart, and
//! the data dir made private at every start.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use p2pstore_rpc::P2pstoreApiClient;
use p2pstore_tests::{Daemon, bin, free_port};

/// The process's state letter in /proc (R, S, Z...).
fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) S ...": the state follows the last ')'.
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

async fn run_bounded(cmd: &mut tokio::process::Command) -> std::process::Output {
    tokio::time::timeout(Duration::from_secs(60), cmd.kill_on_drop(true).output())
        .await
        .expect("command did not finish within 60 s")
        .expect("command runs")
}

#[tokio::test(flavor = "multi_thread")]
async fn one_daemon_per_data_dir_and_a_dead_one_holds_nothing() {
    let root = tempfile::Builder::new()
        .prefix("p2pstore-test-")
        .tempdir()
        .unwrap();
    // A bootstrap node needs no bitcoind: the lock is the same for all roles.
    let args = vec!["--rendezvous-server".to_string()];
    let mut first = Daemon::new("node", root.path(), args.clone());
    first.start().await;
    let pid = first.pid().unwrap();

    // A second daemon on the same data dir is refused, saying why.
    let out = run_bounded(
        tokio::process::Command::new(bin("p2pstored"))
            .arg("--datadir")
            .arg(&first.datadir)
            .arg("--listen")
            .arg(format!("/ip4/127.0.0.1/tcp/{}", free_port()))
            .arg("--rpc-bind")
            .arg("127.0.0.1:0")
            .args(&args),
    )
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!(
            "another p2pstored (pid {pid}) is running with this data dir"
        )),
        "{stderr}"
    );
    // ...and took nothing from the first, which still answers.
    first.rpc().status().await.unwrap();

    // SIGKILL, and nobody reaps it: a zombie, which a pid-file liveness
    // check would still take for a running daemon.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    p2pstore_tests::wait_for("the killed daemon to be a zombie", 20, || {
        let z = proc_state(pid) == Some('Z');
        async move { z.then_some(()) }
    })
    .await;
    let datadir = first.datadir.clone();
    let stale_addr = std::fs::read_to_string(datadir.join(p2pstore_rpc::RPC_ADDR_FILE)).unwrap();
    assert!(datadir.join(p2pstore_rpc::COOKIE_FILE).exists());

    // Someone squats the dead daemon's RPC port: the CLI must not send it
    // the token from the cookie. The port frees once the dead daemon's
    // half-closed connections (our RPC client's) are gone.
    let addr = stale_addr.trim().to_string();
    let squatter = p2pstore_tests::wait_for("the dead daemon's RPC port to free", 90, || {
        let addr = addr.clone();
        async move { tokio::net::TcpListener::bind(addr).await.ok() }
    })
    .await;
    let out = run_bounded(
        tokio::process::Command::new(bin("p2pstore-cli"))
            .arg("--datadir")
            .arg(&datadir)
            .arg("status"),
    )
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("left over from a daemon that stopped"),
        "{stderr}"
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(500), squatter.accept())
            .await
            .is_err(),
        "the CLI connected to the squatted port"
    );
    drop(squatter);

    // A restart with the zombie still there succeeds, makes the data dir
    // private again, and replaces the dead daemon's cookie.
    let old_cookie = std::fs::read_to_string(datadir.join(p2pstore_rpc::COOKIE_FILE)).unwrap();
    std::fs::set_permissions(&datadir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut second = Daemon::new("node", root.path(), args);
    second.start().await;
    assert_eq!(proc_state(pid), Some('Z'), "the zombie is still unreaped");
    second.rpc().status().await.unwrap();
    let mode = std::fs::metadata(&datadir).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    let new_cookie = std::fs::read_to_string(datadir.join(p2pstore_rpc::COOKIE_FILE)).unwrap();
    assert_ne!(new_cookie, old_cookie);
    let pid_file = std::fs::read_to_string(datadir.join("p2pstored.pid")).unwrap();
    assert_eq!(pid_file.trim(), second.pid().unwrap().to_string());
    // `first` reaps the zombie when dropped; `second` is killed by pid.
}
