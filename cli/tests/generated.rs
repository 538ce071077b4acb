//! `completions` and `man` run as packagers run them: the built binary, no
//! daemon, no data dir. Every run points the CLI at a data dir and HOME
//! that do not exist, so one that tried to reach a daemon would fail.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

/// Subcommands every generated file must know, nested ones included.
const SUBCOMMANDS: [&str; 7] = [
    "put",
    "get",
    "find-providers",
    "wallet",
    "budget",
    "completions",
    "man",
];

fn nowhere() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("no-such-datadir")
}

fn cli(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_p2pstore-cli"))
        .args(args)
        .env("P2PSTORE_DATADIR", nowhere())
        .env("HOME", nowhere())
        .env_remove("P2PSTORE_PASSWORD")
        .output()
        .expect("p2pstore-cli runs")
}

/// Stdout of a run that must succeed.
fn stdout_of(args: &[&str]) -> String {
    let out = cli(args);
    assert!(
        out.status.success(),
        "p2pstore-cli {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// roff writes `-` as `\-`; the names as a person reads them.
fn unroff(page: &str) -> String {
    page.replace("\\-", "-")
}

#[test]
fn the_setup_would_catch_a_connection_attempt() {
    let out = cli(&["status"]);
    assert!(
        !out.status.success(),
        "status found a daemon in {:?}",
        nowhere()
    );
}

#[test]
fn bash_completions_parse_and_name_the_subcommands() {
    let script = stdout_of(&["completions", "bash"]);
    assert!(!script.trim().is_empty());
    for sub in SUBCOMMANDS {
        assert!(script.contains(sub), "bash completions lack {sub}");
    }
    assert!(script.contains("--datadir"));

    // `bash -n` reads the script from stdin and only parses it.
    let mut bash = Command::new("bash")
        .arg("-n")
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("bash runs");
    bash.stdin
        .take()
        .expect("bash's stdin")
        .write_all(script.as_bytes())
        .expect("script written to bash");
    let checked = bash.wait_with_output().expect("bash finishes");
    assert!(
        checked.status.success(),
        "bash -n rejects the script: {}",
        String::from_utf8_lossy(&checked.stderr)
    );
}

#[test]
fn every_shell_gets_completions_naming_the_subcommands() {
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        let script = stdout_of(&["completions", shell]);
        for sub in SUBCOMMANDS {
            assert!(script.contains(sub), "{shell} completions lack {sub}");
        }
    }
}

#[test]
fn an_unknown_shell_is_refused_with_the_choices() {
    let out = cli(&["completions", "tcsh"]);
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("invalid value 'tcsh'"), "stderr: {err}");
    assert!(
        err.contains("bash") && err.contains("zsh") && err.contains("fish"),
        "stderr: {err}"
    );
}

#[test]
fn the_man_page_is_roff_for_p2pstore_cli_with_its_subcommands() {
    let page = stdout_of(&["man"]);
    // Before .TH come only roff's own definitions (`.ie`/`.el`, which
    // define a quote string); the page itself opens with its header.
    let header = page
        .lines()
        .find(|l| l.starts_with(".TH") || l.starts_with(".SH"))
        .expect("a .TH line");
    assert!(
        header.starts_with(".TH p2pstore-cli 1 "),
        "header: {header}"
    );
    assert!(
        header.contains(env!("CARGO_PKG_VERSION")),
        "header: {header}"
    );
    for section in [".SH NAME", ".SH SYNOPSIS", ".SH OPTIONS", ".SH SUBCOMMANDS"] {
        assert!(page.lines().any(|l| l == section), "no {section}");
    }
    let text = unroff(&page);
    for sub in SUBCOMMANDS.iter().filter(|s| **s != "budget") {
        assert!(
            text.contains(&format!("p2pstore-cli-{sub}(1)")),
            "the man page lacks {sub}"
        );
    }
    assert!(text.contains("P2PSTORE_DATADIR"));
    // Man pages are the help: no page for `help`.
    assert!(!text.contains("p2pstore-cli-help(1)"));
}

#[test]
fn man_dir_writes_every_page_the_man_page_refers_to() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("man-pages");
    // Left over from an earlier run, maybe; it holds only our pages.
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("man dir made");
    let dir_arg = dir.to_str().expect("UTF-8 path");
    assert!(stdout_of(&["man", "--dir", dir_arg]).is_empty());

    let main = std::fs::read_to_string(dir.join("p2pstore-cli.1")).expect("p2pstore-cli.1");
    assert_eq!(main, stdout_of(&["man"]));
    // Each page the SUBCOMMANDS section names exists, nested ones too.
    for name in ["find-providers", "wallet", "wallet-budget", "completions"] {
        let page = std::fs::read_to_string(dir.join(format!("p2pstore-cli-{name}.1")))
            .unwrap_or_else(|e| panic!("p2pstore-cli-{name}.1: {e}"));
        assert!(
            page.contains(&format!(".TH p2pstore-cli-{name} 1 ")),
            "p2pstore-cli-{name}.1 has no header"
        );
    }
    assert!(!dir.join("p2pstore-cli-help.1").exists());
}
