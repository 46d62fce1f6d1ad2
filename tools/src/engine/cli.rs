//! Command-line front of the reference engine, shared by `ks-engine` and
//! the hidden `killswitch engine` (which the drill starts, so that
//! `cargo run -- drill` needs no other binary).

use std::path::PathBuf;

use clap::Args;

use super::{Engine, EngineConfig, EXIT_START_FAILED};

/// The options of `killswitch engine` (hidden; started by the drill). The
/// name and directory come from the config file there: `killswitch`'s own
/// global `--name` / `--dir` would otherwise shadow them.
#[derive(Args, Debug, Clone, Default)]
pub struct EngineFileArgs {
    /// TOML configuration (every key has a default; see `engine::config`).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Journal directory.
    #[arg(long)]
    pub journal: Option<PathBuf>,
    /// Write the JSON report here at exit.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Trip KILL by itself after this long (e.g. 5s).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub trade_for: Option<std::time::Duration>,
    /// Run as the hot standby of the engine of this name: follow its
    /// journal, keep its state in memory, publish the lag in the control
    /// block, send nothing; stop on SIGTERM / SIGINT.
    #[arg(long)]
    pub standby: bool,
}

/// Options of `ks-engine`: those of [`EngineFileArgs`] plus the engine's
/// name and control directory; each overrides the config file.
#[derive(Args, Debug, Clone, Default)]
pub struct EngineArgs {
    /// Config, journal, report, trade-for.
    #[command(flatten)]
    pub file: EngineFileArgs,
    /// Engine name (control block `killswitch.<name>`).
    #[arg(long)]
    pub name: Option<String>,
    /// Control-block directory.
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

impl From<EngineFileArgs> for EngineArgs {
    fn from(file: EngineFileArgs) -> EngineArgs {
        EngineArgs {
            file,
            ..EngineArgs::default()
        }
    }
}

/// Loads the configuration and applies the overrides.
pub fn load(args: &EngineArgs) -> Result<EngineConfig, String> {
    let mut cfg = match &args.file.config {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).map_err(|e| format!("config {}: {e}", p.display()))?;
            EngineConfig::from_toml(&text).map_err(|e| format!("config {}: {e}", p.display()))?
        }
        None => EngineConfig::default(),
    };
    if let Some(n) = &args.name {
        cfg.name = n.clone();
    }
    if let Some(d) = &args.dir {
        cfg.control_dir = Some(d.clone());
    }
    if let Some(j) = &args.file.journal {
        cfg.journal_dir = j.clone();
    }
    if let Some(r) = &args.file.report {
        cfg.report_path = Some(r.clone());
    }
    if let Some(t) = args.file.trade_for {
        cfg.trade_for_ms = t.as_millis() as u64;
    }
    Ok(cfg)
}

/// Runs the engine to the end; returns the process exit code.
pub fn main(args: &EngineArgs) -> i32 {
    let cfg = match load(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ks-engine: error: {e}");
            return EXIT_START_FAILED;
        }
    };
    let report_path = cfg.report_path.clone();
    let mut cfg = cfg;
    let mut taken_over = None;
    if args.file.standby {
        match super::standby::run(&cfg) {
            super::standby::Outcome::Stopped(report) => {
                eprintln!("ks-engine: {}", report.verdict);
                if let Some(p) = report_path {
                    write_report(&p, &report);
                }
                return report.exit_code;
            }
            super::standby::Outcome::Promote(report, open, journal) => {
                eprintln!("ks-engine: {}", report.verdict);
                cfg.promoted = true;
                cfg.hot_open_orders = Some(open);
                taken_over = Some(*journal);
            }
        }
    }
    let engine = match Engine::start_with(cfg, taken_over) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("ks-engine: cannot start: {e}");
            return e.exit_code;
        }
    };
    eprintln!(
        "ks-engine: pid {} trading; control block {}; {}",
        std::process::id(),
        engine.block_path().display(),
        engine.recovery_note()
    );
    let report = engine.run();
    eprintln!("ks-engine: {}", report.verdict);
    if let Some(p) = report_path {
        write_report(&p, &report);
    }
    report.exit_code
}

/// Written to a temporary name and renamed: a reader never sees half a report.
fn write_report(p: &std::path::Path, report: &impl serde::Serialize) {
    let json = serde_json::to_string_pretty(report).expect("report serialises");
    let tmp = p.with_extension("json.tmp");
    if let Err(e) = std::fs::write(&tmp, json).and_then(|()| std::fs::rename(&tmp, p)) {
        eprintln!("ks-engine: cannot write report {}: {e}", p.display());
    }
}
