//! Journal and checkpoint subcommands: `checkpoint create|validate`,
//! `journal inspect|recover`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};
use killswitch::checkpoint::{
    self, CheckpointContents, CheckpointError, CheckpointTarget, ValidateError, CRC64_NAME,
};
use killswitch::clock::{format_duration_ns, format_wall};
use killswitch::journal::{
    rebuild, recover_with, scan, DropKind, JournalConfig, JournalError, JournalWriter, Rebuilt,
};

use crate::exit;
use killswitch::access::Access;

/// Checkpoint subcommands.
#[derive(Subcommand, Debug)]
pub enum CheckpointCmd {
    /// Save the state rebuilt from the journal: `quick` appends a snapshot
    /// record to the journal, `complete` writes a shutdown_<UTC>.ckpt file.
    Create(CreateArgs),
    /// Check a checkpoint file: prints "Checkpoint valid ✓" or what is wrong (exit 1).
    Validate {
        /// The checkpoint file (e.g. latest.ckpt).
        file: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Checkpoint level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Level {
    /// Emergency: one snapshot record appended to the journal, no fsync on the way.
    Quick,
    /// Planned: a sectioned, checksummed file, fsynced and renamed into place.
    Complete,
}

/// Arguments of `checkpoint create`.
#[derive(Args, Debug)]
pub struct CreateArgs {
    /// Quick (journal snapshot record) or complete (checkpoint file).
    #[arg(long, value_enum, default_value = "complete")]
    level: Level,
    /// Read the checkpoint back and check it.
    #[arg(long, conflicts_with = "no_verify")]
    verify: bool,
    /// Do not read it back (the default; accepted for the runbook's scripts).
    #[arg(long)]
    no_verify: bool,
    /// Journal directory the state is rebuilt from.
    #[arg(long)]
    journal: PathBuf,
    /// Complete: a directory, or a file path ending in .ckpt (default: the journal directory).
    #[arg(long)]
    path: Option<PathBuf>,
    /// Complete: where to write if --path fails (disk full, I/O error). Default: the system temp directory.
    #[arg(long)]
    alternate_dir: Option<PathBuf>,
    /// Complete: a file of recent market data to include as its own section.
    #[arg(long)]
    market_data: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Journal subcommands.
#[derive(Subcommand, Debug)]
pub enum JournalCmd {
    /// Show segments, record counts per type, last sequence, torn tail, rebuilt state (read-only).
    Inspect {
        /// Journal directory.
        dir: PathBuf,
        /// Also list every record.
        #[arg(long)]
        records: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Cut a torn tail (saved aside first) and set orphan segments aside; needs the writer lock.
    Recover {
        /// Journal directory.
        dir: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

fn code(c: u8) -> ExitCode {
    ExitCode::from(c)
}

fn journal_error(e: &JournalError) -> ExitCode {
    eprintln!("error: {e}");
    code(match e {
        JournalError::Locked { .. } | JournalError::ClosedForSuccessor { .. } => exit::REFUSED,
        JournalError::BadSegment { .. }
        | JournalError::Corrupt { .. }
        | JournalError::NeedsRecovery { .. }
        | JournalError::NotOurs { .. } => exit::BAD_FILE,
        _ => exit::IO,
    })
}

/// Runs one checkpoint subcommand.
pub fn run_checkpoint(cmd: CheckpointCmd, access: Access) -> ExitCode {
    match cmd {
        CheckpointCmd::Create(a) => match a.level {
            Level::Quick => quick(&a, access),
            Level::Complete => complete(&a),
        },
        CheckpointCmd::Validate { file, json } => validate(&file, json),
    }
}

/// Runs one journal subcommand.
pub fn run_journal(cmd: JournalCmd, access: Access) -> ExitCode {
    match cmd {
        JournalCmd::Inspect { dir, records, json } => inspect(&dir, records, json),
        JournalCmd::Recover { dir, json } => match recover_with(&dir, access) {
            Ok(rep) => {
                if json {
                    outln!("{}", serde_json::to_string_pretty(&rep).unwrap_or_default());
                } else {
                    outln!(
                        "journal {}: {} records, last sequence {}",
                        dir.display(),
                        rep.scan.records,
                        rep.scan.last_seq
                    );
                    if rep.actions.is_empty() {
                        outln!("clean: nothing to cut");
                    }
                    for a in &rep.actions {
                        outln!("{a}");
                    }
                    for n in &rep.scan.notes {
                        outln!("note: {n}");
                    }
                }
                code(exit::OK)
            }
            Err(e) => journal_error(&e),
        },
    }
}

fn quick(a: &CreateArgs, access: Access) -> ExitCode {
    let cfg = JournalConfig {
        background_sync: false,
        access,
        ..JournalConfig::default()
    };
    let (mut w, rec) = match JournalWriter::open(&a.journal, cfg) {
        Ok(x) => x,
        Err(e @ JournalError::Locked { .. }) => {
            eprintln!("refused: {e}");
            eprintln!("a running engine takes its own quick checkpoints (JournalWriter::quick_checkpoint); use --level complete to save a file from the journal as it is");
            return code(exit::REFUSED);
        }
        Err(e) => return journal_error(&e),
    };
    for act in &rec.actions {
        eprintln!("[WARN] recovery: {act}");
    }
    let rebuilt = match rebuild(&a.journal) {
        Ok(r) => r,
        Err(e) => return journal_error(&e),
    };
    let q = match w.quick_checkpoint(&rebuilt.state) {
        Ok(q) => q,
        Err(e) => return journal_error(&e),
    };
    let durable = if a.verify {
        match w.sync() {
            Ok(d) => Some(d),
            Err(e) => return journal_error(&e),
        }
    } else {
        None
    };
    drop(w);
    if a.verify {
        let mut found = false;
        let r = scan(&a.journal, true, |v| {
            if v.seq == q.seq {
                found = killswitch::journal::TradingState::decode(v.payload)
                    .is_ok_and(|s| s.open_orders == rebuilt.state.open_orders);
            }
        });
        if let Err(e) = r {
            return journal_error(&e);
        }
        if !found {
            eprintln!(
                "error: the snapshot record {} could not be read back",
                q.seq
            );
            return code(exit::BAD_FILE);
        }
    }
    if a.json {
        let v = serde_json::json!({ "quick": q, "durable": durable, "verified": a.verify });
        outln!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else {
        outln!(
            "[INFO] Quick checkpoint: snapshot record seq {} in segment {} at offset {} ({} bytes: {} open orders, {} positions) appended in {}",
            q.seq,
            q.segment,
            q.offset,
            q.bytes,
            q.open_orders,
            q.positions,
            format_duration_ns(q.append_ns)
        );
        match durable {
            Some(d) => outln!(
                "[INFO] Durable up to seq {} at {} (msync {}); read back OK",
                d.up_to_seq,
                format_wall(d.wall_ns),
                format_duration_ns(d.msync_ns)
            ),
            None => {
                outln!("[INFO] Not yet msynced (in the page cache; survives a process crash)")
            }
        }
    }
    code(exit::OK)
}

fn log_tail_text(r: &Rebuilt) -> String {
    let mut s = String::new();
    for l in &r.log_tail {
        s.push_str(&format!(
            "{} {} {}\n",
            format_wall(l.wall_ns),
            l.level,
            l.text
        ));
    }
    s
}

fn complete(a: &CreateArgs) -> ExitCode {
    let rebuilt = match rebuild(&a.journal) {
        Ok(r) => r,
        Err(e) => return journal_error(&e),
    };
    if let Some(h) = &rebuilt.writer_active {
        eprintln!("[WARN] a writer ({h}) is active: the checkpoint reflects the journal up to sequence {}", rebuilt.scan.last_seq);
    }
    for d in &rebuilt.scan.dropped {
        eprintln!("[WARN] journal: ignoring invalid data in {} at offset {}: {} (run `killswitch journal recover`)", d.path.display(), d.offset, d.reason);
    }
    let market = match &a.market_data {
        Some(p) => match std::fs::read(p) {
            Ok(b) => Some(b),
            Err(e) => {
                eprintln!("error: market data file {}: {e}", p.display());
                return code(exit::IO);
            }
        },
        None => None,
    };
    let log_tail = log_tail_text(&rebuilt);
    let config: Vec<(&str, &[u8])> = rebuilt
        .config
        .iter()
        .map(|(n, b)| (n.as_str(), b.as_slice()))
        .collect();
    let strategies: Vec<(&str, &[u8])> = rebuilt
        .strategies
        .iter()
        .map(|(n, b)| (n.as_str(), b.as_slice()))
        .collect();
    let contents = CheckpointContents {
        state: rebuilt.state.clone(),
        config,
        strategies,
        market_data: market.as_deref(),
        log_tail: &log_tail,
        journal_last_seq: rebuilt.scan.last_seq,
        created_wall_ns: 0,
    };
    let (dir, file_name) = match &a.path {
        Some(p) if p.extension().is_some_and(|e| e == "ckpt") => (
            p.parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new("."))
                .to_path_buf(),
            p.file_name().map(|n| n.to_string_lossy().into_owned()),
        ),
        Some(p) => (p.clone(), None),
        None => (a.journal.clone(), None),
    };
    let alternate = a.alternate_dir.clone().unwrap_or_else(std::env::temp_dir);
    let target = CheckpointTarget {
        alternate_dir: (alternate != dir).then_some(alternate),
        file_name,
        update_latest: true,
        verify: a.verify,
        dir,
    };
    match checkpoint::write_complete(&contents, &target) {
        Ok(w) => {
            if let Some(fb) = &w.fallback {
                let msg = format!(
                    "!!! CHECKPOINT COULD NOT BE WRITTEN AT {}: {} — SAVED AT THE ALTERNATE LOCATION {} INSTEAD !!!",
                    fb.primary.display(),
                    fb.error,
                    w.path.display()
                );
                eprintln!("[ERROR] {msg}");
                if !a.json {
                    outln!("[WARN] {msg}");
                }
            }
            if a.json {
                outln!("{}", serde_json::to_string_pretty(&w).unwrap_or_default());
            } else {
                for s in &w.sections {
                    outln!(
                        "[INFO] Checkpointing {}... Done ({} bytes, {CRC64_NAME} {:#018x})",
                        s.kind.as_str(),
                        s.length,
                        s.crc64
                    );
                }
                if market.is_none() {
                    outln!("[INFO] Checkpointing market-data... skipped (no --market-data)");
                }
                outln!(
                    "[INFO] Calculating checksum... Done ({CRC64_NAME}: {:#018x})",
                    w.file_crc64
                );
                if w.verified {
                    outln!("[INFO] Verifying checkpoint... OK");
                }
                for warn in &w.warnings {
                    outln!("[WARN] {warn}");
                }
                if let Some(l) = &w.latest {
                    outln!(
                        "[INFO] {} -> {}",
                        l.display(),
                        w.path.file_name().unwrap_or_default().to_string_lossy()
                    );
                }
                outln!("[INFO] Checkpoint saved: {}", w.path.display());
            }
            code(exit::OK)
        }
        Err(e @ CheckpointError::Write { .. }) => {
            eprintln!("[ERROR] {e}");
            code(exit::IO)
        }
        Err(e @ CheckpointError::Verify(_)) => {
            eprintln!("[ERROR] {e}");
            code(exit::REFUSED)
        }
    }
}

fn validate(file: &Path, json: bool) -> ExitCode {
    match checkpoint::validate(file) {
        Ok(s) => {
            if json {
                let v = serde_json::json!({ "valid": true, "summary": s });
                outln!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
                return code(exit::OK);
            }
            outln!("Checkpoint valid ✓");
            outln!(
                "{}: {} bytes, created {}, journal sequence {}",
                file.display(),
                s.bytes,
                format_wall(s.created_wall_ns),
                s.journal_last_seq
            );
            outln!(
                "{:<16} {:>10} {:>12}  {CRC64_NAME}",
                "section",
                "offset",
                "bytes"
            );
            for sec in &s.sections {
                outln!(
                    "{:<16} {:>10} {:>12}  {:#018x}",
                    sec.kind.as_str(),
                    sec.offset,
                    sec.length,
                    sec.crc64
                );
            }
            outln!(
                "{:<16} {:>10} {:>12}  {:#018x}",
                "whole file",
                0,
                s.bytes,
                s.file_crc64
            );
            code(exit::OK)
        }
        Err(ValidateError::Invalid { path, problems }) => {
            if json {
                let v = serde_json::json!({ "valid": false, "path": path, "problems": problems });
                outln!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            } else {
                outln!("Checkpoint INVALID ✗: {}", path.display());
                for p in &problems {
                    outln!("  {p}");
                }
                outln!("Restore from another checkpoint, or rebuild the state from the journal: killswitch checkpoint create --journal DIR");
            }
            code(exit::REFUSED)
        }
        Err(e @ ValidateError::Io { .. }) => {
            eprintln!("error: {e}");
            code(exit::IO)
        }
    }
}

fn inspect(dir: &Path, records: bool, json: bool) -> ExitCode {
    let r = match rebuild(dir) {
        Ok(r) => r,
        Err(e) => return journal_error(&e),
    };
    // Damage a starting engine refuses (exit 3): the operator must look.
    let damage = r.scan.needs_operator();
    let verdict = if damage.is_empty() {
        exit::OK
    } else {
        exit::BAD_FILE
    };
    if json {
        outln!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
        return code(verdict);
    }
    let s = &r.scan;
    outln!("journal {}", dir.display());
    if let Some(h) = &r.writer_active {
        outln!("writer: active ({h}); showing committed records only");
    } else {
        outln!("writer: none");
    }
    outln!(
        "{:<26} {:>10} {:>10} {:>8}  closed",
        "segment",
        "size",
        "used",
        "records"
    );
    for g in &s.segments {
        let name = g.path.file_name().unwrap_or_default().to_string_lossy();
        outln!(
            "{name:<26} {:>10} {:>10} {:>8}  {}",
            g.size,
            g.valid_end,
            g.records,
            if g.ended { "yes" } else { "no" }
        );
    }
    outln!(
        "records: {} (sequence {} .. {})",
        s.records,
        s.first_seq.unwrap_or(0),
        s.last_seq
    );
    for (t, n) in &s.counts {
        outln!("  {t:<16} {n}");
    }
    if s.dropped.is_empty() {
        outln!("torn tail: none");
    }
    for d in &s.dropped {
        if d.kind == DropKind::Record && d.records_after.count == 0 {
            outln!("torn tail: {} offset {}: {} ({} bytes would be dropped by `killswitch journal recover` or an engine starting)", d.path.display(), d.offset, d.reason, d.bytes);
        }
    }
    for line in &damage {
        outln!("DAMAGED: {line}");
    }
    if !damage.is_empty() {
        outln!("an engine will NOT start on this journal; `killswitch journal recover {}` keeps every valid record it can and sets the rest aside", dir.display());
    }
    for o in &s.orphan_segments {
        outln!("orphan segment (after the valid end): {}", o.display());
    }
    for n in &s.notes {
        outln!("note: {n}");
    }
    let st = &r.state;
    outln!(
        "state: {} open orders, {} positions, highest order id {}, {} snapshots",
        st.open_orders.len(),
        st.positions.len(),
        st.max_order_id.0,
        r.snapshots
    );
    match st.tripped() {
        Some(t) => outln!(
            "switch: TRIPPED {} by {} (generation {}): {}",
            t.mode,
            t.source.as_str(),
            t.generation,
            t.reason
        ),
        None => outln!("switch: not tripped"),
    }
    match r.last_durable {
        Some(d) => outln!(
            "durable: up to sequence {} at {}",
            d.up_to_seq,
            format_wall(d.wall_ns)
        ),
        None => outln!("durable: no durability mark"),
    }
    outln!("replay issues: {}", r.issues.len());
    for i in r.issues.iter().take(10) {
        outln!("  seq {}: {}", i.seq, i.what);
    }
    if records {
        let res = scan(dir, r.writer_active.is_none(), |v| {
            let t = v.rtype.map_or_else(
                || format!("unknown-{}", v.rtype_raw),
                |t| t.as_str().to_string(),
            );
            outln!(
                "{:>10} {:<16} seg {} @ {:<10} {} bytes",
                v.seq,
                t,
                v.segment,
                v.offset,
                v.payload.len()
            );
        });
        if let Err(e) = res {
            return journal_error(&e);
        }
    }
    code(verdict)
}
