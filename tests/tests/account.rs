//! Account creation and restore with real daemons and bitcoind: a new
//! wallet is born at the chain's tip, `init` says so, and a restore given
//! that birthday through the CLI finds the account's coins without
//! scanning from genesis.

use p2pstore_rpc::{InitResult, P2pstoreApiClient, codes};
use p2pstore_tests::*;

async fn cli(datadir: &std::path::Path, args: &[&str]) -> std::process::Output {
    cli_output(datadir, args, 60).await
}

async fn confirmed(d: &Daemon) -> u64 {
    d.rpc().wallet_balance().await.unwrap().confirmed_sat
}

async fn synced_to(d: &Daemon, height: u64) {
    let rpc = d.rpc();
    wait_for(&format!("{} to sync to {height}", d.name), 60, || {
        let rpc = rpc.clone();
        async move {
            let st = rpc.status().await.ok()?;
            (st.tip_height.map(u64::from) == Some(height)).then_some(())
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wallet_is_born_at_the_tip_and_a_restore_scans_from_its_birthday() {
    let dir = tempfile::Builder::new()
        .prefix("p2pstore-test-")
        .tempdir()
        .unwrap();
    let bitcoind = Bitcoind::start(dir.path()).await;
    bitcoind.mine_burn(5).await;

    // A new account through the CLI: born at the tip, and told so.
    let mut first = Daemon::new("first", dir.path(), bitcoind.daemon_args());
    first.start_with(true).await;
    let password = first.datadir.join("password");
    let out = cli(
        &first.datadir,
        &[
            "--json",
            "init",
            "--password-file",
            password.to_str().unwrap(),
        ],
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let created: InitResult = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(created.birthday_height, 5);
    let phrase = created.mnemonic.expect("a new account shows its phrase");
    let st = first.rpc().status().await.unwrap();
    assert_eq!(st.birthday_height, Some(5));

    // Coins at height 6, spendable after 100 more blocks.
    let addr = first.rpc().wallet_address().await.unwrap().address;
    bitcoind.mine(1, &addr).await;
    bitcoind.mine_burn(100).await;
    synced_to(&first, 106).await;
    let balance = confirmed(&first).await;
    assert!(balance > 0);

    let phrase_file = dir.path().join("phrase");
    std::fs::write(&phrase_file, &phrase).unwrap();
    let restore = |d: &Daemon, birthday: Option<u32>| {
        let mut args = vec![
            "init".to_string(),
            "--restore".into(),
            // The account never stored a file: it has no index to restore.
            "--no-index".into(),
            "--mnemonic-file".into(),
            phrase_file.to_string_lossy().into(),
            "--password-file".into(),
            d.datadir.join("password").to_string_lossy().into(),
        ];
        if let Some(b) = birthday {
            args.extend(["--birthday".into(), b.to_string()]);
        }
        let datadir = d.datadir.clone();
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            cli(&datadir, &args).await
        }
    };

    // A birthday the chain has not reached is refused, and nothing is made.
    let mut restored = Daemon::new("restored", dir.path(), bitcoind.daemon_args());
    restored.start_with(true).await;
    let e = restored
        .rpc()
        .init(PASSWORD.into(), Some(phrase.clone()), Some(107))
        .await
        .unwrap_err();
    assert_eq!(rpc_code(&e), codes::INVALID_PARAMS);
    assert!(e.to_string().contains("above bitcoind's tip 106"), "{e}");
    assert!(!restored.datadir.join("keystore.json").exists());

    // The birthday `init` printed finds every coin; so does genesis (the
    // restore default); one block late misses them, which is why the
    // birthday is a lower bound to keep with the phrase.
    let out = restore(&restored, Some(created.birthday_height)).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("Wallet birthday: block 5"), "{said}");
    assert!(
        !said.contains(&phrase),
        "a restore does not print the phrase"
    );
    synced_to(&restored, 106).await;
    assert_eq!(confirmed(&restored).await, balance);
    assert_eq!(
        restored.rpc().status().await.unwrap().birthday_height,
        Some(5)
    );

    for (name, birthday, expect) in [("from-genesis", None, balance), ("late", Some(7), 0)] {
        let mut d = Daemon::new(name, dir.path(), bitcoind.daemon_args());
        d.start_with(true).await;
        assert!(restore(&d, birthday).await.status.success(), "{name}");
        synced_to(&d, 106).await;
        assert_eq!(confirmed(&d).await, expect, "{name}");
        assert_eq!(
            d.rpc().status().await.unwrap().birthday_height,
            Some(birthday.unwrap_or(0)),
            "{name}"
        );
    }

    // The birthday is kept in the keystore: a restart scans on from the
    // wallet's tip and still reports it.
    restored.restart().await;
    restored
        .rpc()
        .unlock(PASSWORD.into())
        .await
        .expect("unlock after restart");
    assert_eq!(
        restored.rpc().status().await.unwrap().birthday_height,
        Some(5)
    );
    synced_to(&restored, 106).await;
    assert_eq!(confirmed(&restored).await, balance);
}
