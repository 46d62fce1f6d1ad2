//! `ks-venue`: simulated venues as their own process, speaking FIX 4.4 on
//! loopback TCP (see the README, "Venues over FIX", and
//! [`killswitch_tools::venue_server::cli`]).

use std::process::ExitCode;

use clap::Parser;
use killswitch_tools::venue_server::cli::VenueArgs;

/// Simulated venues over FIX 4.4 (loopback only unless --allow-remote).
#[derive(Parser, Debug)]
#[command(name = "ks-venue", version)]
struct Cli {
    #[command(flatten)]
    venue: VenueArgs,
}

fn main() -> ExitCode {
    killswitch_tools::venue_server::cli::main(&Cli::parse().venue)
}
