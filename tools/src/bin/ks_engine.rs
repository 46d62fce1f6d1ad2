//! `ks-engine`: the reference engine. It links `killswitch` the way a
//! trading engine would (gate, gateway, drain, journal, control block,
//! signals) and trades on built-in simulated venues. Runs with no arguments.

use clap::Parser;
use killswitch_tools::engine::cli::EngineArgs;

#[derive(Parser, Debug)]
#[command(
    name = "ks-engine",
    about = "Reference trading engine on simulated venues, stopped by killswitch"
)]
struct Cli {
    #[command(flatten)]
    engine: EngineArgs,
}

fn main() {
    let cli = Cli::parse();
    std::process::exit(killswitch_tools::engine::cli::main(&cli.engine));
}
