//! Control-block subcommands: init, status, trip, reset, audit, remove.

use std::process::ExitCode;

use clap::Subcommand;

/// Control-block subcommands.
#[derive(Subcommand, Debug)]
pub enum ControlCmd {
    /// Show the switch state.
    Status,
}

/// Runs one control subcommand.
pub fn run(cmd: ControlCmd) -> ExitCode {
    match cmd {
        ControlCmd::Status => ExitCode::SUCCESS,
    }
}
