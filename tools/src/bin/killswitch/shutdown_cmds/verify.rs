//! `killswitch verify-shutdown`: the runbook's post-shutdown validation,
//! read from the report the engine left, the block, the process table and
//! the engine's log.

use super::*;

pub(super) fn verify(a: VerifyArgs, t: &Target) -> ExitCode {
    let path = match &a.report {
        Some(p) => p.clone(),
        None => report_path(&killswitch::control::path_for(&t.dir, &t.name)),
    };
    let r = match std::fs::read(&path) {
        Ok(b) => match serde_json::from_slice::<Value>(&b) {
            Ok(v) => v,
            Err(e) => {
                eprintln!(
                    "killswitch: {}: not a shutdown report ({e}); pass --report",
                    path.display()
                );
                return ExitCode::from(exit::BAD_FILE);
            }
        },
        Err(e) => {
            eprintln!(
                "killswitch: {}: {e}; no planned shutdown report (run `killswitch shutdown` first, or pass --report)",
                path.display()
            );
            return ExitCode::from(exit::BAD_FILE);
        }
    };
    let mut mask = 0u8;
    let mut check = |bit: u8, good: bool, what: String| {
        if !good {
            mask |= bit;
        }
        outln!("{} {what}", if good { "✓" } else { "✗" });
    };
    let pid = r["engine_pid"].as_u64().unwrap_or(0) as u32;
    let alive = pid_alive(pid);
    check(
        1,
        !alive && r["finished"] == true,
        format!(
            "no engine process (pid {pid} {}; shutdown {})",
            if alive { "STILL RUNNING" } else { "gone" },
            if r["finished"] == true {
                "finished"
            } else {
                "NOT finished"
            }
        ),
    );
    let sockets = if alive { socket_count(pid) } else { 0 };
    check(
        2,
        sockets == 0,
        format!("no open sockets of the engine ({sockets})"),
    );
    let (good, what) = checkpoint_check(&r);
    check(4, good, what);
    match &a.log {
        Some(log) => match recent_errors(log) {
            Ok(lines) => check(
                8,
                lines.is_empty(),
                if lines.is_empty() {
                    format!("no ERROR lines in the last 5 minutes of {}", log.display())
                } else {
                    format!(
                        "{} ERROR line(s) in the last 5 minutes of {}: {}",
                        lines.len(),
                        log.display(),
                        lines[0]
                    )
                },
            ),
            Err(e) => check(8, false, format!("log {}: {e}", log.display())),
        },
        None => outln!("· log not checked (pass --log FILE)"),
    }
    if mask == 0 {
        outln!("Shutdown verified ✓");
        ExitCode::from(exit::OK)
    } else {
        ExitCode::from(VERIFY_BASE + mask)
    }
}

/// The checkpoint a planned shutdown report names: true when the file
/// validates and its CRC-64 is the one the report gives; and the line
/// that says what was found. `verify-shutdown`'s check 4, and the planned
/// drill's.
pub(crate) fn checkpoint_check(report: &Value) -> (bool, String) {
    // Indexed as a `Value` (a missing key reads as null), not as a
    // `Map` (whose index panics): the report is a file from outside.
    let c = &report["checkpoint"];
    if !c.is_object() {
        return (false, "checkpoint: the report has none".into());
    }
    let cp = PathBuf::from(c["path"].as_str().unwrap_or(""));
    match killswitch::checkpoint::validate(&cp) {
        Ok(s) => {
            let crc = format!("0x{:016x}", s.file_crc64);
            let same = Some(crc.as_str()) == c["crc64"].as_str();
            (
                same,
                format!(
                    "checkpoint valid: {} (CRC64 {crc}{})",
                    cp.display(),
                    if same {
                        ""
                    } else {
                        ", DIFFERS from the report's"
                    }
                ),
            )
        }
        Err(e) => (false, format!("checkpoint {}: {e}", cp.display())),
    }
}

fn socket_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .filter(|l| l.to_string_lossy().starts_with("socket:"))
                .count()
        })
        .unwrap_or(0)
}

/// ERROR lines of the last 5 minutes: a line with a `[YYYY-MM-DD
/// HH:MM:SS` stamp counts by its stamp; a line without one counts when the
/// file changed in the last 5 minutes.
fn recent_errors(log: &Path) -> std::io::Result<Vec<String>> {
    let text = std::fs::read_to_string(log)?;
    let now = wall_ns();
    let window = 300_000_000_000u64;
    let modified_recently = std::fs::metadata(log)?
        .modified()
        .ok()
        .and_then(|m| m.duration_since(std::time::UNIX_EPOCH).ok())
        .is_some_and(|d| now.saturating_sub(d.as_nanos() as u64) < window);
    Ok(text
        .lines()
        .filter(|l| l.contains("ERROR"))
        .filter(|l| match stamp(l) {
            Some(t) => now.saturating_sub(t) < window,
            None => modified_recently,
        })
        .map(str::to_string)
        .collect())
}

/// `[YYYY-MM-DD HH:MM:SS...` at the start of a line, as Unix ns (UTC).
fn stamp(line: &str) -> Option<u64> {
    let s = line.strip_prefix('[')?.get(..19)?;
    let t = humantime::parse_rfc3339_weak(s).ok()?;
    let d = t.duration_since(std::time::UNIX_EPOCH).ok()?;
    u64::try_from(d.as_nanos()).ok()
}

#[cfg(test)]
mod tests {
    use super::stamp;

    #[test]
    fn a_log_stamp_reads_as_utc_and_anything_else_as_none() {
        // 2026-11-30 18:00:00 UTC = 1_796_061_600 s after the epoch.
        assert_eq!(
            stamp("[2026-11-30 18:00:00.123 UTC] ERROR venue SIM-B"),
            Some(1_796_061_600_000_000_000)
        );
        assert_eq!(stamp("[1970-01-01 00:00:01] ERROR"), Some(1_000_000_000));
        for line in [
            "ERROR no stamp",
            "[2026-13-01 00:00:00] ERROR",
            "[2026-11-30 25:00:00] ERROR",
            "[2026-11-30",
            "[yyyy-mm-dd hh:mm:ss] ERROR",
            "",
        ] {
            assert_eq!(stamp(line), None, "{line:?}");
        }
    }
}
