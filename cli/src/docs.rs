//! Shell completions and the man page, generated from the clap definitions
//! in main.rs so they never drift from what the CLI accepts. Neither needs
//! a daemon or a data dir: packagers run them at build time.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use clap_complete::Shell;

/// Writes `shell`'s completion script to stdout.
pub fn completions(mut cmd: clap::Command, shell: Shell) -> Result<()> {
    // Generated into memory first: clap_complete panics on a failed
    // write, and a full disk deserves an error line, not a backtrace.
    let mut script = Vec::new();
    let name = cmd.get_name().to_string();
    clap_complete::generate(shell, &mut cmd, name, &mut script);
    std::io::stdout()
        .write_all(&script)
        .context("writing the completion script")
}

/// Writes the roff man page to stdout, or with `dir` every page (the
/// command's and one per subcommand, which its SUBCOMMANDS section names)
/// into `dir`.
pub fn man(cmd: clap::Command, dir: Option<&Path>) -> Result<()> {
    // `help` would be a page of its own nobody needs: man pages are the help.
    let mut cmd = cmd.disable_help_subcommand(true);
    // Built, subcommands know their full names (`p2pstore-cli-wallet-txs`).
    cmd.build();
    // Every page's footer names the program and its version; a
    // subcommand's own would be just its name.
    let source = format!(
        "{} {}",
        cmd.get_name(),
        cmd.get_version().unwrap_or_default()
    );
    if let Some(dir) = dir {
        return write_pages(&cmd, &source, dir)
            .with_context(|| format!("writing man pages to {}", dir.display()));
    }
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd)
        .source(source)
        .render(&mut page)
        .context("rendering the man page")?;
    std::io::stdout()
        .write_all(&page)
        .context("writing the man page")
}

/// `cmd`'s page and those of its subcommands, recursively, into `dir`.
fn write_pages(cmd: &clap::Command, source: &str, dir: &Path) -> std::io::Result<()> {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_pages(sub, source, dir)?;
    }
    clap_mangen::Man::new(cmd.clone())
        .source(source)
        .generate_to(dir)
        .map(drop)
}
