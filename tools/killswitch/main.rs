//! `killswitch`: trip, inspect and reset the kill switch of a running engine.

mod control_cmds;
mod journal_cmds;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit codes shared by every subcommand (documented in README.md).
pub mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// The operation was refused or found a problem (e.g. reset refused, invalid checkpoint).
    pub const REFUSED: u8 = 1;
    /// Wrong command-line arguments (clap's own code).
    pub const USAGE: u8 = 2;
    /// The control file (or another input file) is missing, damaged or of another version.
    pub const BAD_FILE: u8 = 3;
    /// An I/O error.
    pub const IO: u8 = 4;
}

#[derive(Parser, Debug)]
#[command(name = "killswitch", version, about = "Kill switch for automated trading engines", long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    #[command(flatten)]
    Control(control_cmds::ControlCmd),
    /// Create or validate state checkpoints (quick: journal snapshot; complete: .ckpt file).
    #[command(subcommand)]
    Checkpoint(journal_cmds::CheckpointCmd),
    /// Inspect or recover the journal.
    #[command(subcommand)]
    Journal(journal_cmds::JournalCmd),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Control(c) => control_cmds::run(c),
        Command::Checkpoint(c) => journal_cmds::run_checkpoint(c),
        Command::Journal(c) => journal_cmds::run_journal(c),
    }
}
