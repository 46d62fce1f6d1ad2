//! `killswitch drill --planned`: the planned shutdown (the runbook's
//! thirteen steps, with flattening) end to end, on real processes.
//!
//! The same stage as the emergency drill: simulated venues in their own
//! processes over FIX 4.4 (or in-process with `--venues in-process`), the
//! reference engine trading on them until thousands of orders rest and
//! positions are open. Then, as an operator would: `killswitch shutdown
//! --reason ... --flatten conservative` (its step lines are shown as they
//! come), the engine's exit, the venues stopped and their audit logs read,
//! and `killswitch verify-shutdown --log engine.log`. The checks: every
//! step ran in order, positions flat or what remains reported, reconciled
//! with every venue, the complete checkpoint valid (its CRC the report's),
//! no order left open or resting at a venue, every service stopped
//! gracefully, `verify-shutdown` passes. A report file (JSON) is written
//! either way; the exit code is 1 when any check failed.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use killswitch::control::telemetry::TelemetrySnapshot;
use killswitch::control::GatewaySnapshot;
use killswitch_tools::engine::planned::report_path;
use killswitch_tools::engine::EngineReport;
use serde::Serialize;
use serde_json::Value;

use crate::drill::{Check, DrillArgs, Scenario, TripMethod, VenueMode};

/// The planned drill's result (the report file).
#[derive(Debug, Serialize)]
pub struct PlannedDrillReport {
    /// `planned`.
    pub mode: &'static str,
    /// Flattening asked for.
    pub flatten: String,
    /// Where the venues ran.
    pub venues: VenueMode,
    /// Working directory.
    pub work_dir: String,
    /// PASS / FAIL.
    pub pass: bool,
    /// Checks.
    pub checks: Vec<Check>,
    /// Orders resting when the shutdown was asked for.
    pub open_orders_at_request: u64,
    /// Positions open when the shutdown was asked for.
    pub positions_open_at_request: u64,
    /// `killswitch shutdown`'s exit code.
    pub shutdown_exit: Option<i32>,
    /// The engine's planned-shutdown report (`killswitch.drill.shutdown.json`).
    pub shutdown_report: Option<Value>,
    /// The engine process's exit status.
    pub engine_exit: String,
    /// `killswitch verify-shutdown`'s exit code and lines.
    pub verify_exit: Option<i32>,
    /// Its output.
    pub verify_output: Vec<String>,
    /// Over the wire: what the venues' audit logs say.
    pub wire: Option<crate::drill_wire::WireEvidence>,
}

/// Runs the planned drill.
pub fn run(args: &DrillArgs) -> ExitCode {
    if !matches!(args.scenario, Scenario::Normal | Scenario::NoLiquidity)
        || args.method != TripMethod::Cli
    {
        eprintln!(
            "killswitch drill: error: --planned runs on a healthy engine (--scenario normal) or with a venue gone dry (--scenario no-liquidity); the other scenarios and --method are the emergency drill's"
        );
        return ExitCode::from(crate::exit::USAGE);
    }
    let report_file = args.report.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("ks-drill-planned-{}.json", std::process::id()))
    });
    let out = drill(args).and_then(|r| {
        let text = serde_json::to_string_pretty(&r).expect("report serialises");
        std::fs::write(&report_file, &text)
            .map_err(|e| format!("cannot write the report {}: {e}", report_file.display()))?;
        say!(args.json, "report {}", report_file.display());
        Ok(r)
    });
    crate::drill::finish(out, args.json, |r| r.pass)
}

/// The drill's planned-shutdown settings: the runbook's conservative
/// flattening (limit at the mid, then market), with waits short enough
/// for a drill (the defaults are 5 s, 5 s, 60 s and 30 s).
fn shutdown_settings(cfg: &mut killswitch_tools::engine::EngineConfig) {
    let s = &mut cfg.shutdown;
    s.conservative_wait_ms = 1000;
    s.market_wait_ms = 2000;
    s.order_wait_ms = 15_000;
    s.reconcile_wait_ms = 5000;
    s.component_timeout_ms = 5000;
}

fn killswitch(work: &Path) -> Result<Command, String> {
    let mut c = Command::new(std::env::current_exe().map_err(|e| e.to_string())?);
    c.arg("--dir").arg(work).args(["--name", "drill"]);
    Ok(c)
}

fn drill(args: &DrillArgs) -> Result<PlannedDrillReport, String> {
    let q = args.json;
    let work = crate::drill::work_dir(args)?;
    let mut cfg = crate::drill::config_for(args, &work);
    shutdown_settings(&mut cfg);
    let (mut venues, config_path) = crate::drill::start_venues_and_config(args, &mut cfg, &work)?;
    crate::drill::say_opening(
        q,
        &format!(
            "killswitch drill --planned: scenario {:?}, flatten {}",
            args.scenario, args.flatten
        ),
        &work,
        &cfg,
        venues.as_ref(),
    );

    // 1. The engine, trading.
    let mut child = crate::drill::spawn_engine(&work, &config_path, "engine.log")
        .map_err(|e| format!("cannot start the engine: {e}"))?;
    let pid = child.id();
    let block = crate::drill::attach(&work, &mut child, "engine.log")?;
    say!(
        q,
        "1. engine     pid {pid} trading on {} simulated venues with {} strategies",
        cfg.venues.len(),
        cfg.strategies.len()
    );
    let started = Instant::now();
    crate::drill::trade(
        &block,
        &mut child,
        args.trade_for,
        args.min_open,
        false,
        &work.join("engine.log"),
    )?;
    let dry = args.scenario == Scenario::NoLiquidity;
    if dry {
        let said = wait_for_withdrawal(&work, venues.as_ref(), &mut child)?;
        say!(q, "   fault      {said}");
    }
    let open_at_request = GatewaySnapshot::read(&block).open_orders;
    let positions_at_request = TelemetrySnapshot::read(&block)
        .engine
        .map_or(0, |e| e.positions_open);
    say!(
        q,
        "2. trading    {:.1} s: {} orders sent, {open_at_request} resting, {positions_at_request} position(s) open",
        started.elapsed().as_secs_f64(),
        GatewaySnapshot::read(&block).orders_sent,
    );

    // 3. The planned shutdown, as an operator asks for it.
    say!(
        q,
        "3. shutdown   `killswitch shutdown --reason \"drill: planned shutdown\" --flatten {}`",
        args.flatten
    );
    let mut sh = killswitch(&work)?
        .args([
            "shutdown",
            "--reason",
            "drill: planned shutdown",
            "--flatten",
            &args.flatten,
            "--follow-timeout",
            "5m",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run killswitch shutdown: {e}"))?;
    if let Some(out) = sh.stdout.take() {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            say!(q, "   {line}");
        }
    }
    let sh_out = sh
        .wait_with_output()
        .map_err(|e| format!("killswitch shutdown: {e}"))?;
    for line in String::from_utf8_lossy(&sh_out.stderr).lines() {
        say!(q, "   {line}");
    }
    let shutdown_exit = sh_out.status.code();

    // 4. The engine's end.
    let status = crate::drill::wait_child(&mut child, Duration::from_secs(60));
    let engine_exit = match status {
        Some(s) => s.to_string(),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            "did not exit within 60 s after the planned shutdown: killed by the drill".into()
        }
    };
    say!(q, "4. engine     exited: {engine_exit}");
    let engine: Option<EngineReport> = std::fs::read(work.join("engine-report.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let logs = match venues.as_mut() {
        Some(v) => Some(v.stop_and_read()?),
        None => None,
    };
    let session = cfg.venues[0].comp_id_for(&cfg.name);
    let wire_evidence = logs
        .as_ref()
        .map(|l| crate::drill_wire::evidence(l, &session, engine.as_ref()));

    // 5. The post-shutdown validation, as an operator runs it.
    say!(
        q,
        "5. verify     `killswitch verify-shutdown --log engine.log`"
    );
    let v = killswitch(&work)?
        .arg("verify-shutdown")
        .arg("--log")
        .arg(work.join("engine.log"))
        .output()
        .map_err(|e| format!("cannot run killswitch verify-shutdown: {e}"))?;
    let verify_output: Vec<String> = String::from_utf8_lossy(&v.stdout)
        .lines()
        .chain(String::from_utf8_lossy(&v.stderr).lines())
        .map(str::to_string)
        .collect();
    for l in &verify_output {
        say!(q, "   {l}");
    }
    let verify_exit = v.status.code();

    let r: Option<Value> = std::fs::read(report_path(block.path()))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let mut checks = checks(
        dry,
        r.as_ref(),
        shutdown_exit,
        status,
        pid,
        verify_exit,
        positions_at_request,
    );
    if let Some(ev) = &wire_evidence {
        checks.extend(crate::drill_wire::checks(
            ev,
            engine.as_ref(),
            args.scenario,
        ));
    }
    let pass = checks.iter().all(|c| c.ok);
    crate::drill::say_checks(q, "6. checks", &checks);
    if let Some(r) = &r {
        say!(
            q,
            "   time: {:.1} ms in all, of which configured waits (venue answers, flattening waits) {:.1} ms, work {:.1} ms",
            r["total_ms"].as_f64().unwrap_or(0.0),
            r["waited_ms"].as_f64().unwrap_or(0.0),
            r["work_ms"].as_f64().unwrap_or(0.0)
        );
    }
    say!(q, "VERDICT: {}", if pass { "PASS" } else { "FAIL" });
    let report = PlannedDrillReport {
        mode: "planned",
        flatten: args.flatten.clone(),
        venues: args.venues,
        work_dir: work.display().to_string(),
        pass,
        checks,
        open_orders_at_request: open_at_request,
        positions_open_at_request: positions_at_request,
        shutdown_exit,
        shutdown_report: r,
        engine_exit,
        verify_exit,
        verify_output,
        wire: wire_evidence,
    };
    if pass && !args.keep && args.work_dir.is_none() {
        let _ = std::fs::remove_dir_all(&work);
    } else {
        say!(q, "work dir kept: {}", work.display());
    }
    Ok(report)
}

/// Waits (30 s at most) until SIM-B's liquidity is withdrawn: its audit
/// log over the wire, the engine's log in-process. Returns what said so.
fn wait_for_withdrawal(
    work: &Path,
    venues: Option<&crate::drill_wire::Venues>,
    child: &mut std::process::Child,
) -> Result<String, String> {
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let seen = match venues {
            Some(v) => v.read_now()?.iter().find_map(|(name, entries)| {
                entries
                    .iter()
                    .any(|e| e.event.as_deref() == Some("liquidity-withdrawn"))
                    .then(|| format!("{name}: liquidity withdrawn (its audit log)"))
            }),
            None => std::fs::read_to_string(work.join("engine.log"))
                .unwrap_or_default()
                .lines()
                .find(|l| l.contains("liquidity withdrawn"))
                .map(|l| l.trim_start_matches("ks-engine: ").to_string()),
        };
        if let Some(s) = seen {
            return Ok(s);
        }
        if let Ok(Some(s)) = child.try_wait() {
            return Err(format!("engine exited while trading ({s}); see engine.log"));
        }
        if Instant::now() > end {
            return Err(
                "SIM-B's liquidity was not withdrawn within 30 s (see venues/ and engine.log)"
                    .into(),
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The checks on the shutdown's own report and the processes' ends. `dry`:
/// SIM-B's liquidity was withdrawn, so its positions must stay, reported,
/// and the shutdown ends with exactly that finding.
fn checks(
    dry: bool,
    r: Option<&Value>,
    shutdown_exit: Option<i32>,
    engine_status: Option<std::process::ExitStatus>,
    pid: u32,
    verify_exit: Option<i32>,
    positions_at_request: u64,
) -> Vec<Check> {
    let mut out = Vec::new();
    let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok();
    let want_engine = if dry {
        killswitch_tools::engine::EXIT_PLANNED_FINDINGS
    } else {
        0
    };
    out.push(Check::new(
        &format!("engine process exited {want_engine} and was reaped (no zombie)"),
        engine_status.is_some_and(|s| s.code() == Some(want_engine)) && !zombie,
        engine_status.map_or("did not exit".into(), |s| s.to_string()),
    ));
    let Some(r) = r else {
        out.push(Check::new(
            "the engine wrote its planned-shutdown report",
            false,
            "no report beside the control block".into(),
        ));
        return out;
    };
    let phases = r["phases"].as_array().cloned().unwrap_or_default();
    let steps: Vec<u64> = phases.iter().filter_map(|p| p["step"].as_u64()).collect();
    let failed: Vec<String> = phases
        .iter()
        .filter(|p| p["result"] == "failed" || p["result"] == "running")
        .map(|p| format!("step {} {}", p["step"], p["result"]))
        .collect();
    // A dry venue's positions are the one finding expected.
    let (want_exit, want_bits) = if dry {
        (
            i32::from(crate::shutdown_cmds::FINDINGS),
            killswitch::shutdown::words::OUTCOME_NOT_FLAT,
        )
    } else {
        (0, killswitch::shutdown::words::OUTCOME_CLEAN)
    };
    out.push(Check::new(
        &format!(
            "`killswitch shutdown` followed all 13 steps, in order, none failed, and exited {want_exit}{}",
            if dry { " (finished with the positions not flattened as its one finding)" } else { "" }
        ),
        steps == (1..=13).collect::<Vec<u64>>()
            && failed.is_empty()
            && r["finished"] == true
            && r["outcome_bits"].as_u64() == Some(want_bits)
            && shutdown_exit == Some(want_exit),
        format!(
            "steps {steps:?}; {}; exit {shutdown_exit:?}{}",
            if failed.is_empty() {
                "none failed".to_string()
            } else {
                failed.join(", ")
            },
            if r["clean"] == true {
                ""
            } else {
                " (finished with findings: see below)"
            }
        ),
    ));
    // Flattening had something to do, and every position is flat or
    // reported with what remains.
    let fr = r["flatten_results"].as_array().cloned().unwrap_or_default();
    let finals = r["final_positions"].as_array().cloned().unwrap_or_default();
    let name = |v: &Value| {
        format!(
            "{} {} {}",
            v["venue"].as_str().unwrap_or(""),
            v["instrument"].as_str().unwrap_or(""),
            v["account"].as_str().unwrap_or("")
        )
    };
    let not_flat: Vec<&Value> = finals
        .iter()
        .filter(|p| p["qty"].as_f64().unwrap_or(0.0) != 0.0)
        .collect();
    let unreported: Vec<String> = not_flat
        .iter()
        .filter(|p| {
            !fr.iter()
                .any(|f| name(f) == name(p) && f["remaining"].as_f64().unwrap_or(0.0) != 0.0)
        })
        .map(|p| format!("{} {}", name(p), p["qty"]))
        .collect();
    let flatten = r["flatten"].as_str().unwrap_or("none").to_string();
    // With `--flatten none` the positions are kept on purpose (the
    // report's final positions list them): nothing to check here.
    // The dry venue: every one of its positions stays whole, reported, and
    // flattening went from conservative to aggressive before giving up.
    let dry_rows: Vec<&Value> = fr.iter().filter(|f| f["venue"] == "SIM-B").collect();
    let dry_ok = !dry
        || (!dry_rows.is_empty()
            && dry_rows.iter().all(|f| {
                f["remaining"].as_f64().unwrap_or(0.0) != 0.0 && f["remaining"] == f["start"]
            })
            && fr
                .iter()
                .filter(|f| f["venue"] != "SIM-B")
                .all(|f| f["remaining"].as_f64() == Some(0.0))
            && (flatten != "conservative" || r["flatten_escalated"] == true)
            && phases.iter().any(|p| {
                p["step"] == 5
                    && p["note"]
                        .as_str()
                        .is_some_and(|n| n.contains("positions not flattened"))
            }));
    if flatten != "none" {
        out.push(Check::new(
            if dry {
                "SIM-B's positions did not flatten: escalated to aggressive, then reported as remaining (step 5's warning, flatten results); the other venue's flattened"
            } else {
                "positions flattened, or what remains reported (flatten results)"
            },
            !fr.is_empty() && positions_at_request > 0 && unreported.is_empty() && dry_ok,
            format!(
                "{} position(s) at the request, {} flattened ({}), {} remaining{}{}; slippage {}",
                positions_at_request,
                fr.iter()
                    .filter(|f| f["remaining"].as_f64() == Some(0.0))
                    .count(),
                flatten,
                not_flat.len(),
                if r["flatten_escalated"] == true {
                    ", escalated to aggressive"
                } else {
                    ""
                },
                if unreported.is_empty() {
                    String::new()
                } else {
                    format!("; NOT REPORTED: {}", unreported.join(", "))
                },
                r["slippage"]
            ),
        ));
    }
    let rows = r["reconcile"].as_array().cloned().unwrap_or_default();
    let bad: Vec<String> = rows
        .iter()
        .filter(|row| row["status"] != "OK")
        .map(|row| format!("{} {}", name(row), row["status"]))
        .collect();
    // A venue that gave no position report leaves no row to compare: its
    // warning is what says so.
    let unanswered: Vec<String> = r["warnings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .filter(|w| w.contains("no position report"))
        .map(str::to_string)
        .collect();
    out.push(Check::new(
        "reconciled: every venue answered and its positions match the engine's",
        bad.is_empty() && unanswered.is_empty(),
        format!(
            "{} non-zero row(s){}{}",
            rows.len(),
            if bad.is_empty() {
                ", all OK".to_string()
            } else {
                format!(": {}", bad.join(", "))
            },
            unanswered
                .iter()
                .map(|w| format!("; {w}"))
                .collect::<String>()
        ),
    ));
    let (ck_good, ck_found) = crate::shutdown_cmds::checkpoint_check(r);
    out.push(Check::new(
        "complete checkpoint valid, its CRC-64 the report's",
        ck_good,
        ck_found,
    ));
    let strag = r["stragglers"].as_array().map_or(0, Vec::len);
    out.push(Check::new(
        "every order closed before the wait ended (no straggler)",
        strag == 0 && r["cancelled"].as_u64().unwrap_or(0) > 0,
        format!(
            "{} cancelled in step 5, {strag} straggler(s)",
            r["cancelled"]
        ),
    ));
    let comps = r["components"].as_array().cloned().unwrap_or_default();
    let forced: Vec<String> = comps
        .iter()
        .filter(|c| c["graceful"] != true)
        .map(|c| c["name"].as_str().unwrap_or("").to_string())
        .collect();
    out.push(Check::new(
        "every service stopped gracefully, in the runbook's order",
        forced.is_empty(),
        format!(
            "{}{}",
            comps
                .iter()
                .map(|c| format!("{} {} ms", c["name"].as_str().unwrap_or(""), c["ms"]))
                .collect::<Vec<_>>()
                .join(", "),
            if forced.is_empty() {
                String::new()
            } else {
                format!("; FORCED: {}", forced.join(", "))
            }
        ),
    ));
    out.push(Check::new(
        "`killswitch verify-shutdown` passes",
        verify_exit == Some(0),
        format!("exit {verify_exit:?}"),
    ));
    out
}
