//! `msh completions` and `msh man`: shell completions and manual pages generated from the
//! same clap definitions that parse the command line, so they never drift from it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, CommandFactory};

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for, e.g. `msh completions bash > /etc/bash_completion.d/msh`,
    /// `msh completions zsh > "${fpath[1]}/_msh"`, `msh completions fish > ~/.config/fish/completions/msh.fish`.
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write msh.1 and one page per subcommand (msh-run.1, msh-pack-install.1, ...) here,
    /// e.g. /usr/local/share/man/man1; without it, msh.1 goes to stdout.
    #[arg(long)]
    dir: Option<PathBuf>,
}

pub fn completions(args: CompletionsArgs) -> anyhow::Result<ExitCode> {
    let mut command = super::Cli::command();
    clap_complete::generate(args.shell, &mut command, "msh", &mut std::io::stdout());
    Ok(ExitCode::SUCCESS)
}

pub fn man(args: ManArgs) -> anyhow::Result<ExitCode> {
    let command = super::Cli::command();
    match &args.dir {
        None => std::io::stdout().write_all(&page(command)?).context("cannot write the manual page to stdout")?,
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
            let written = write_pages(dir, command.name("msh"), "msh")?;
            eprintln!("msh: wrote {written} manual pages to {}", dir.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes `NAME.1` for `command` and each visible subcommand below it; returns how many.
fn write_pages(dir: &Path, command: clap::Command, name: &str) -> anyhow::Result<usize> {
    let path = dir.join(format!("{name}.1"));
    std::fs::write(&path, page(command.clone().name(name.to_string()))?)
        .with_context(|| format!("cannot write {}", path.display()))?;
    let mut written = 1;
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set() && s.get_name() != "help") {
        written += write_pages(dir, sub.clone(), &format!("{name}-{}", sub.get_name()))?;
    }
    Ok(written)
}

/// `command`'s manual page, in roff.
fn page(command: clap::Command) -> anyhow::Result<Vec<u8>> {
    let name = command.get_name().to_string();
    let mut page = Vec::new();
    clap_mangen::Man::new(command)
        .render(&mut page)
        .with_context(|| format!("cannot render the manual page of {name}"))?;
    Ok(page)
}
