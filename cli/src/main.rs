//! `p2pstore-cli`: controls a local p2pstored over JSON-RPC.
//!
//! Human-readable output by default, `--json` for scripts; a non-zero exit
//! and one line on stderr for any error.

mod amount;
mod conn;
mod docs;
mod output;
mod progress;

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{CommandFactory, Parser, Subcommand};
use p2pstore_rpc::P2pstoreApiClient;

#[derive(Parser)]
#[command(name = "p2pstore-cli", version, about = "Control a p2pstore daemon")]
struct Cli {
    /// Data dir of the daemon to talk to [default: ~/.p2pstore]
    #[arg(long, env = "P2PSTORE_DATADIR", global = true)]
    datadir: Option<PathBuf>,
    /// RPC address, overriding <datadir>/rpc.addr
    #[arg(long, global = true)]
    rpc_addr: Option<String>,
    /// Print JSON for scripts
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Command,
}

#[derive(Subcommand)]
enum Command {
    #[command(flatten)]
    Rpc(Cmd),
    /// Print the shell completion script for SHELL
    ///
    /// e.g. `p2pstore-cli completions bash > /etc/bash_completion.d/p2pstore-cli`
    Completions { shell: clap_complete::Shell },
    /// Print the man page (roff)
    ///
    /// e.g. `p2pstore-cli man > p2pstore-cli.1`
    Man {
        /// Write p2pstore-cli.1 and a page per subcommand, the pages
        /// p2pstore-cli.1 refers to, into DIR instead
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

/// The commands that talk to the daemon.
#[derive(Subcommand)]
enum Cmd {
    /// Create the account (a new recovery phrase, shown once) or restore one
    Init {
        /// Restore from an existing recovery phrase (prompted, or --mnemonic-file)
        #[arg(long)]
        restore: bool,
        #[arg(long)]
        mnemonic_file: Option<PathBuf>,
        /// File whose first line is the password [or env P2PSTORE_PASSWORD, or a prompt]
        #[arg(long)]
        password_file: Option<PathBuf>,
        /// Block height the wallet scans from: the birthday `init` printed
        /// when the account was made [default: bitcoind's tip for a new
        /// account, genesis for a restore]
        #[arg(long, value_name = "HEIGHT")]
        birthday: Option<u32>,
        /// With --restore: restore the keys and wallet only, not the file
        /// index (an account that never stored a file has none)
        #[arg(long, requires = "restore")]
        no_index: bool,
    },
    /// Unlock a daemon that started locked
    Unlock {
        #[arg(long)]
        password_file: Option<PathBuf>,
    },
    /// Encrypt, erasure-code and store a file, paying its providers
    Put {
        file: PathBuf,
        /// low (one copy), medium (2-of-4), high (3-of-9) [default: from the daemon's config]
        #[arg(long, conflicts_with = "shards")]
        redundancy: Option<String>,
        /// Explicit K/N: any K of N shards rebuild each segment
        #[arg(long)]
        shards: Option<String>,
        /// Keep the file this many blocks [default: from the daemon's config]
        #[arg(long, conflicts_with = "keep")]
        term: Option<u32>,
        /// Renew the file's storage for as long as it exists
        #[arg(long)]
        keep: bool,
        /// Store it even if the same content is stored under this name
        #[arg(long)]
        force: bool,
        /// Operation id: a put retried with the id of one that finished returns its result [default: a new one]
        #[arg(long)]
        op_id: Option<String>,
    },
    /// A file's health, segment by segment, worst first
    Stat { file_id: String },
    /// Audit, then rebuild lost shards of one file (or of all files) at new providers
    Repair { file_id: Option<String> },
    /// Audit every shard of one file (or of all files) now, provider by provider
    Audit { file_id: Option<String> },
    /// Audit scores and recent audits of every provider
    Audits,
    /// Fetch, verify and decrypt a file
    Get {
        file_id: String,
        /// Destination file or directory [default: the stored name, here]
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// List stored files
    Ls,
    /// Delete a file from its providers
    Rm { file_id: String },
    /// Node status
    Status,
    /// The provider directory: providers found in the DHT, with their offers
    Providers,
    /// Look up every provider bucket in the DHT now, and time each lookup
    FindProviders {
        /// Look up only this provider's bucket and say whether it was
        /// found (repeatable): can clients find my provider?
        #[arg(long = "peer", value_name = "PEER_ID")]
        peers: Vec<String>,
    },
    /// The node's bitcoin wallet
    #[command(subcommand)]
    Wallet(WalletCmd),
    /// Storage contracts, as client and as provider
    Contracts,
    /// Where transfer time went: busy seconds per stage since the daemon started
    Perf,
    /// Print a one-time login link to the web dashboard (works once, for a minute)
    Dashboard,
    /// Follow the daemon's events as they happen (until Ctrl-C): transfers,
    /// contracts, payments, audits, repairs. --json prints one JSON object per line
    Events,
}

#[derive(Subcommand)]
enum WalletCmd {
    /// Confirmed, unconfirmed and immature balance
    Balance,
    /// A fresh receive address
    Address,
    /// Send AMOUNT_SAT satoshis to ADDRESS
    Send { address: String, amount_sat: u64 },
    /// Wallet transactions, unconfirmed first
    Txs,
    /// What the coming periods of all contracts will cost, against the balance
    Budget {
        /// Periods to look ahead [default: the daemon's budget_warn_periods]
        #[arg(long)]
        periods: Option<u32>,
    },
}

fn first_line(path: &PathBuf) -> Result<String> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text.lines().next().unwrap_or("").to_string())
}

fn password(file: &Option<PathBuf>, confirm: bool) -> Result<String> {
    if let Some(f) = file {
        return first_line(f);
    }
    if let Ok(p) = std::env::var("P2PSTORE_PASSWORD") {
        return Ok(p);
    }
    if !std::io::stdin().is_terminal() {
        bail!("no password: use --password-file, P2PSTORE_PASSWORD, or run in a terminal");
    }
    let p = rpassword::prompt_password("Keystore password: ")?;
    if confirm && rpassword::prompt_password("Repeat password: ")? != p {
        bail!("the passwords do not match");
    }
    Ok(p)
}

fn absolute(p: &PathBuf) -> Result<String> {
    Ok(std::path::absolute(p)
        .with_context(|| format!("bad path {}", p.display()))?
        .to_string_lossy()
        .into_owned())
}

/// How long `put` keeps asking a daemon that went away mid-put.
const PUT_RETRY_FOR: std::time::Duration = std::time::Duration::from_secs(120);
const PUT_RETRY_PAUSE: std::time::Duration = std::time::Duration::from_secs(2);

/// The daemon went away during the call (not: it answered with an error,
/// nor: it is still working past the timeout).
/// Exit status after Ctrl-C, as shells report a SIGINT death (128 + 2).
const INTERRUPTED: i32 = 130;

fn is_connection_lost(e: &jsonrpsee::core::ClientError) -> bool {
    matches!(
        e,
        jsonrpsee::core::ClientError::Transport(_) | jsonrpsee::core::ClientError::RestartNeeded(_)
    )
}

async fn run(cli: Cli) -> Result<()> {
    // Answered from the definitions above, before looking for a daemon.
    let cmd = match cli.cmd {
        Command::Completions { shell } => return docs::completions(Cli::command(), shell),
        Command::Man { dir } => return docs::man(Cli::command(), dir.as_deref()),
        Command::Rpc(cmd) => cmd,
    };
    let datadir = cli
        .datadir
        .clone()
        .unwrap_or_else(p2pstore_rpc::conn::default_datadir);
    let client = p2pstore_rpc::conn::connect(&datadir, cli.rpc_addr.as_deref())?;
    let out = output::Printer { json: cli.json };
    let show_progress = !cli.json && std::io::stdout().is_terminal();
    match cmd {
        Cmd::Init {
            restore,
            mnemonic_file,
            password_file,
            birthday,
            no_index,
        } => {
            let mnemonic = match (restore, mnemonic_file) {
                (_, Some(f)) => Some(first_line(&f)?),
                (true, None) => Some(rpassword::prompt_password("Recovery phrase: ")?),
                (false, None) => None,
            };
            let pw = password(&password_file, true)?;
            let r = client
                .init(pw, mnemonic, birthday)
                .await
                .map_err(conn::describe)?;
            if !restore || no_index {
                return out.init(&r);
            }
            if !cli.json {
                out.init(&r)?;
                eprintln!(
                    "restoring the file index: looking up this account's index pointer in the DHT…"
                );
            }
            let restored = client.restore_index().await.map_err(|e| {
                anyhow::anyhow!(
                    "the keys and wallet are restored, but not the files: {}",
                    conn::describe(e)
                )
            })?;
            out.restored(&r, &restored)
        }
        Cmd::Unlock { password_file } => {
            let pw = password(&password_file, false)?;
            let r = client.unlock(pw).await.map_err(conn::describe)?;
            out.line(&r, &format!("unlocked; peer id {}", r.peer_id))
        }
        Cmd::Put {
            file,
            redundancy,
            shards,
            term,
            keep,
            force,
            op_id,
        } => {
            let path = absolute(&file)?;
            let op = op_id.unwrap_or_else(progress::op_id);
            let redundancy = redundancy.or(shards);
            let mut client = client;
            let started = std::time::Instant::now();
            // A daemon that goes away mid-put (a crash, a restart by its
            // service manager) is asked again with the same operation id:
            // a put that finished returns its result, one that did not runs
            // again and reuses what it already paid for.
            // Ctrl-C leaves this command, not the put: the daemon runs it
            // to the end, detached from this call.
            let interrupted = async {
                let _ = tokio::signal::ctrl_c().await;
                eprintln!(
                    "\ninterrupted: the put goes on in p2pstored (op id {op}); `p2pstore-cli ls` \
                     lists the file when it is stored, and the same put with --op-id {op} \
                     waits for it and pays nothing twice"
                );
                std::process::exit(INTERRUPTED);
            };
            tokio::pin!(interrupted);
            let r = loop {
                let call = client.put(
                    path.clone(),
                    redundancy.clone(),
                    term,
                    keep.then_some(true),
                    force.then_some(true),
                    Some(op.clone()),
                );
                let result = tokio::select! {
                    r = progress::with_bar(
                        &datadir,
                        cli.rpc_addr.as_deref(),
                        show_progress,
                        op.clone(),
                        call,
                    ) => r,
                    _ = &mut interrupted => unreachable!("it exits"),
                };
                match result {
                    Err(e) if is_connection_lost(&e) && started.elapsed() < PUT_RETRY_FOR => {
                        eprintln!("lost the daemon ({e}); retrying put with op id {op}");
                        tokio::time::sleep(PUT_RETRY_PAUSE).await;
                        if let Ok(c) =
                            p2pstore_rpc::conn::connect(&datadir, cli.rpc_addr.as_deref())
                        {
                            client = c;
                        }
                    }
                    other => break other.map_err(conn::describe)?,
                }
            };
            out.put(&r)
        }
        Cmd::Get { file_id, output } => {
            let dest = absolute(&output.unwrap_or_else(|| PathBuf::from(".")))?;
            let op = progress::op_id();
            let call = client.get(file_id, dest, Some(op.clone()));
            let r = tokio::select! {
                r = progress::with_bar(&datadir, cli.rpc_addr.as_deref(), show_progress, op, call) => {
                    r.map_err(conn::describe)?
                }
                // Closing the call stops the get in the daemon, which
                // removes its part file.
                _ = tokio::signal::ctrl_c() => {
                    eprintln!("\ninterrupted: the get is stopped; nothing was written");
                    std::process::exit(INTERRUPTED);
                }
            };
            out.line(
                &r,
                &format!("wrote {} ({} bytes, verified)", r.path, r.size),
            )
        }
        Cmd::Ls => out.ls(&client.ls().await.map_err(conn::describe)?),
        Cmd::Stat { file_id } => out.stat(&client.stat(file_id).await.map_err(conn::describe)?),
        Cmd::Audit { file_id } => out.audit(&client.audit(file_id).await.map_err(conn::describe)?),
        Cmd::Audits => out.audits(&client.audits().await.map_err(conn::describe)?),
        Cmd::Repair { file_id } => {
            let r = client.repair(file_id).await.map_err(conn::describe)?;
            let text = format!(
                "checked {} file(s): rebuilt {} shard(s) in {} segment(s){}{}",
                r.files_checked,
                r.shards_rebuilt,
                r.segments_repaired,
                if r.new_providers.is_empty() {
                    String::new()
                } else {
                    format!("; new providers {}", r.new_providers.join(", "))
                },
                if r.unrecoverable_segments > 0 {
                    format!("; {} segment(s) LOST", r.unrecoverable_segments)
                } else {
                    String::new()
                },
            );
            out.line(&r, &text)
        }
        Cmd::Rm { file_id } => {
            let r = client.rm(file_id).await.map_err(conn::describe)?;
            let mut text = format!(
                "removed {} ({} shards deleted)",
                r.file_id, r.deleted_shards
            );
            if !r.unreachable_providers.is_empty() {
                text.push_str(&format!(
                    "; unreachable providers: {}",
                    r.unreachable_providers.join(", ")
                ));
            }
            out.line(&r, &text)
        }
        Cmd::Status => out.status(&client.status().await.map_err(conn::describe)?),
        Cmd::Providers => out.providers(&client.providers().await.map_err(conn::describe)?),
        Cmd::FindProviders { peers } => {
            let asked = (!peers.is_empty()).then_some(peers);
            let r = client
                .find_providers(asked.clone())
                .await
                .map_err(conn::describe)?;
            out.find_providers(&r, asked.as_deref())?;
            // A named provider nobody can find is a failure scripts can
            // test for.
            let missing = asked
                .iter()
                .flatten()
                .filter(|p| !r.providers.contains(p))
                .count();
            if missing > 0 {
                anyhow::bail!("{missing} of the named providers not found");
            }
            Ok(())
        }
        Cmd::Contracts => out.contracts(&client.contracts().await.map_err(conn::describe)?),
        Cmd::Dashboard => {
            let login = client.dashboard_login().await.map_err(conn::describe)?;
            let addr = match cli.rpc_addr.as_deref() {
                Some(a) => a.to_string(),
                None => p2pstore_rpc::conn::read_rpc_addr(&datadir)?,
            };
            // The code rides in the fragment, which the browser keeps to
            // itself; the page trades it for the token and drops it.
            let url = format!(
                "http://{addr}{}#login={}",
                p2pstore_rpc::DASHBOARD_PATH,
                login.code
            );
            let r = serde_json::json!({ "url": url, "expires_in_secs": login.expires_in_secs });
            out.line(
                &r,
                &format!(
                    "{url}\nopen it within {} s; it logs in once (run this again for another)",
                    login.expires_in_secs
                ),
            )
        }
        Cmd::Events => {
            let (_ws, mut sub) = progress::subscribe(&datadir, cli.rpc_addr.as_deref()).await?;
            // On stderr, so stdout stays events only: scripts (and tests)
            // know from it that nothing from now on is missed.
            eprintln!("following the events of p2pstored (Ctrl-C stops)");
            while let Some(event) = sub.next().await {
                let event = event.context("reading an event")?;
                out.event(&event)?;
            }
            bail!("p2pstored closed the event stream")
        }
        Cmd::Perf => {
            let p = client.perf().await.map_err(conn::describe)?;
            let text = p
                .iter()
                .map(|s| format!("{:<8} {:>10.3} s  {:>8} times", s.stage, s.seconds, s.count))
                .collect::<Vec<_>>()
                .join("\n");
            out.line(&p, &text)
        }
        Cmd::Wallet(WalletCmd::Balance) => {
            out.balance(&client.wallet_balance().await.map_err(conn::describe)?)
        }
        Cmd::Wallet(WalletCmd::Address) => {
            let a = client.wallet_address().await.map_err(conn::describe)?;
            out.line(&a, &a.address)
        }
        Cmd::Wallet(WalletCmd::Send {
            address,
            amount_sat,
        }) => {
            let r = client
                .wallet_send(address, amount_sat)
                .await
                .map_err(conn::describe)?;
            out.line(&r, &r.txid)
        }
        Cmd::Wallet(WalletCmd::Budget { periods }) => out.budget(
            &client
                .wallet_budget(periods)
                .await
                .map_err(conn::describe)?,
        ),
        Cmd::Wallet(WalletCmd::Txs) => out.txs(&client.wallet_txs().await.map_err(conn::describe)?),
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // Like other Unix tools, end quietly when the reader of our output goes
    // away (`p2pstore-cli wallet txs | head`) instead of panicking.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    match run(Cli::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            let msg = format!("{e:#}");
            eprintln!("error: {}", msg.lines().next().unwrap_or(""));
            std::process::ExitCode::FAILURE
        }
    }
}
