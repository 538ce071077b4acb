//! The web dashboard in a real browser: headless Chromium, driven by
//! Selenium through ChromeDriver (Debian's packages, installed by
//! `scripts/install-test-tools.sh`; Selenium by
//! `scripts/install-python-tools.sh`), against a regtest network. It logs
//! in with the CLI's one-time link, goes live on the event stream, and
//! shows a put in the file list as it lands; the screenshot is kept in
//! the target dir's test scratch space.

use std::path::Path;
use std::time::Duration;

use p2pstore_tests::*;
use tokio::io::AsyncBufReadExt;

const DRIVE: &str = r##"
import json, sys, urllib.error, urllib.request
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

url, name, shot = sys.argv[1], sys.argv[2], sys.argv[3]
o = Options()
o.binary_location = "/usr/bin/chromium"
for a in ["--headless=new", "--no-sandbox", "--disable-gpu",
          "--disable-dev-shm-usage", "--window-size=1400,1100"]:
    o.add_argument(a)
d = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=o)
try:
    d.get(url)
    WebDriverWait(d, 30).until(lambda d: d.find_element(By.ID, "live").text == "live")
    facts = {
        # The one-time code left the address bar; nothing is in a cookie.
        "url": d.current_url,
        "cookies": d.get_cookies(),
        "files": d.find_element(By.ID, "files").text,
        "errors": [e for e in d.get_log("browser") if e["level"] == "SEVERE"],
    }
    # The code was used: a second try is refused.
    base, code = url.split("#login=")
    req = urllib.request.Request(base + "/login", method="POST",
                                 headers={"X-P2pstore-Login": code})
    try:
        urllib.request.urlopen(req)
        facts["reused"] = 200
    except urllib.error.HTTPError as e:
        facts["reused"] = e.code
    # The page needs no token; the API still does.
    with urllib.request.urlopen(base) as r:
        facts["csp"] = r.headers.get("Content-Security-Policy", "")
    try:
        urllib.request.urlopen(urllib.request.Request(
            base.replace("/dashboard", "/"), method="POST", data=b"{}",
            headers={"Content-Type": "application/json"}))
        facts["api_without_token"] = 200
    except urllib.error.HTTPError as e:
        facts["api_without_token"] = e.code
    print("ready " + json.dumps(facts), flush=True)
    WebDriverWait(d, 120).until(lambda d: name in d.find_element(By.ID, "files").text)
    d.save_screenshot(shot)
    facts = {
        "files": d.find_element(By.ID, "files").text,
        "events": d.find_element(By.ID, "events").text,
        "spending": d.find_element(By.ID, "spending").text,
        "transfers": d.find_element(By.ID, "transfers").text,
    }
    print("seen " + json.dumps(facts), flush=True)
finally:
    d.quit()
"##;

/// The next line the driver prints that starts with `word`, as JSON.
async fn said(
    lines: &mut tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    word: &str,
    secs: u64,
) -> serde_json::Value {
    let line = tokio::time::timeout(Duration::from_secs(secs), lines.next_line())
        .await
        .unwrap_or_else(|_| panic!("the browser did not say {word} within {secs} s"))
        .unwrap()
        .unwrap_or_else(|| panic!("the driver ended before {word}"));
    let rest = line
        .strip_prefix(word)
        .unwrap_or_else(|| panic!("expected {word}, got {line}"));
    serde_json::from_str(rest.trim()).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_shows_a_put_live_in_a_real_browser() {
    let py = python_tools();
    let net = Net::start(NetOptions {
        providers: 1,
        ..Default::default()
    })
    .await;

    // Without logging in: the page is there, the data is not.
    let rpc_addr = net.client.rpc_addr();
    let out = cli_output(&net.client.datadir, &["dashboard", "--json"], 30).await;
    assert!(out.status.success(), "{out:?}");
    let link: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let url = link["url"].as_str().unwrap().to_string();
    assert!(
        url.starts_with(&format!("http://{rpc_addr}/dashboard#login=")),
        "{url}"
    );
    assert_eq!(link["expires_in_secs"], 60);

    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    let _ = std::fs::remove_file(&shot);
    let mut driver = tokio::process::Command::new(&py)
        .args(["-c", DRIVE, &url, "dashboard-put.bin"])
        .arg(&shot)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(driver.stdout.take().unwrap()).lines();
    let ready = said(&mut lines, "ready", 90).await;
    assert_eq!(
        ready["url"],
        format!("http://{rpc_addr}/dashboard"),
        "the code stays out of the address bar"
    );
    assert_eq!(ready["cookies"], serde_json::json!([]));
    assert_eq!(ready["errors"], serde_json::json!([]), "console errors");
    assert!(ready["files"].as_str().unwrap().contains("no files yet"));
    assert_eq!(ready["reused"], 401, "a login link works once");
    assert_eq!(ready["api_without_token"], 401);
    assert!(
        ready["csp"]
            .as_str()
            .unwrap()
            .contains("default-src 'none'")
    );

    // A put while the page is open shows up without a reload.
    let (file_id, _, _) = net.put_random("dashboard-put.bin", 2 << 20, None).await;
    let seen = said(&mut lines, "seen", 150).await;
    let files = seen["files"].as_str().unwrap();
    assert!(files.contains(&file_id[..16]), "{files}");
    assert!(files.contains("2.00 MiB"), "{files}");
    let events = seen["events"].as_str().unwrap();
    assert!(events.contains("payment_sent"), "{events}");
    assert!(
        seen["spending"].as_str().unwrap().contains(" sat ("),
        "{seen}"
    );
    // The put's progress ended with it: nothing is left running.
    assert_eq!(seen["transfers"], "none running", "{seen}");
    let status = tokio::time::timeout(Duration::from_secs(30), driver.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "a real screenshot"
    );
}
