//! The emergency drill's run (`killswitch drill` without `--planned`):
//! start, trade, the scenario's fault, the trip and `killswitch emergency`,
//! the engine's end, then the checks against the engine's report, the
//! venues' logs, the journal and a checkpoint built from it.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use killswitch::clock::format_duration_ns;
use killswitch::control::{GatewaySnapshot, Mode};
use killswitch::journal;
use killswitch_tools::engine::EngineReport;

use super::shared_steps::{
    attach, config_for, say_opening, spawn_engine, start_venues_and_config, trade, wait_child,
    work_dir,
};
use super::{Check, DrillArgs, DrillReport, Scenario, TripMethod, VenueMode};
use crate::emergency::EmergencyReport;

pub(super) fn drill(args: &DrillArgs) -> Result<DrillReport, String> {
    let q = args.json;
    let wire = args.venues == VenueMode::Wire;
    if args.scenario == Scenario::CrashRestart && !wire {
        return Err("--scenario crash-restart runs over the wire only: in-process venues die with the engine, so nothing is left to cancel after the crash (drop --venues in-process)".into());
    }
    let work = work_dir(args)?;
    let mut cfg = config_for(args, &work);
    // The drill's SIGTERM method checks the emergency drain, not the
    // planned shutdown (which SIGTERM runs by default).
    if args.method == TripMethod::Sigterm {
        cfg.shutdown.sigterm_planned = false;
    }
    let (mut venues, config_path) = start_venues_and_config(args, &mut cfg, &work)?;
    say_opening(
        q,
        &format!(
            "killswitch drill: scenario {:?}, trip by {:?}",
            args.scenario, args.method
        ),
        &work,
        &cfg,
        venues.as_ref(),
    );

    // 1. Start the engine.
    let mut child = spawn_engine(&work, &config_path, "engine.log")
        .map_err(|e| format!("cannot start the engine: {e}"))?;
    let mut pid = child.id();
    let mut block = attach(&work, &mut child, "engine.log")?;
    let over_wire = cfg.venues.iter().filter(|v| v.is_wire()).count();
    say!(
        q,
        "1. engine     pid {pid} trading on {} simulated venues{} with {} strategies",
        cfg.venues.len(),
        match over_wire {
            0 => String::new(),
            n if n == cfg.venues.len() => " over FIX".into(),
            n => format!(" ({n} over FIX)"),
        },
        cfg.strategies.len()
    );

    // 2. Let it trade.
    let started = Instant::now();
    trade(
        &block,
        &mut child,
        args.trade_for,
        args.min_open,
        args.scenario == Scenario::StrategyPanic,
        &work.join("engine.log"),
    )?;
    let mut crashed_engine_exit = None;
    let session = cfg.venues[0].comp_id_for(&cfg.name);
    if args.scenario == Scenario::CrashRestart {
        let resting = GatewaySnapshot::read(&block).open_orders;
        let _ = child.kill();
        let status = child.wait().map_err(|e| e.to_string())?;
        crashed_engine_exit = Some(status.to_string());
        say!(
            q,
            "   SIGKILL    engine pid {pid} killed with {resting} orders resting ({status}); the venues have no cancel-on-disconnect: the orders stay"
        );
        let logs = venues
            .as_ref()
            .map(|v| v.read_now())
            .transpose()?
            .unwrap_or_default();
        let at_venues: Vec<String> = logs
            .iter()
            .map(|(n, e)| {
                format!(
                    "{n} {}",
                    killswitch_tools::venue_server::audit::working_orders(e, &session).len()
                )
            })
            .collect();
        say!(
            q,
            "   venues     still working for the dead engine (their audit logs): {}",
            at_venues.join(", ")
        );
        child = spawn_engine(&work, &config_path, "engine-restart.log")
            .map_err(|e| format!("cannot restart the engine: {e}"))?;
        pid = child.id();
        block = attach(&work, &mut child, "engine-restart.log")?;
        // The restarted engine trades only once its start-up recovery is
        // over (the runtime's start returns, the engine says "trading");
        // then it must rest orders again before the trip.
        let log = work.join("engine-restart.log");
        let end = Instant::now() + Duration::from_secs(60);
        while !std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains(" trading; ")
        {
            if let Ok(Some(s)) = child.try_wait() {
                return Err(format!(
                    "the restarted engine exited at start-up ({s}); see {}",
                    log.display()
                ));
            }
            if Instant::now() > end {
                return Err(format!(
                    "the restarted engine did not start trading within 60 s; see {}",
                    log.display()
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        if let Some(v) = &venues {
            v.wait_for_new_orders_after_restart(&session)?;
        }
        trade(
            &block,
            &mut child,
            Duration::from_secs(1),
            args.min_open / 2,
            false,
            &log,
        )?;
        let recovery = std::fs::read_to_string(work.join("engine-restart.log"))
            .unwrap_or_default()
            .lines()
            .find(|l| l.contains("start-up recovery"))
            .map(|l| l.trim_start_matches("ks-engine: ").to_string())
            .unwrap_or_else(|| "no start-up recovery reported (see engine-restart.log)".into());
        say!(q, "   restart    engine pid {pid}: {recovery}");
    }
    let gs = || GatewaySnapshot::read(&block);
    if args.scenario == Scenario::StrategyPanic {
        let end = Instant::now() + Duration::from_secs(30);
        while block.state().mode() != Mode::Kill && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    say!(
        q,
        "2. trading    {:.1} s: {} orders sent, {} resting",
        started.elapsed().as_secs_f64(),
        gs().orders_sent,
        gs().open_orders
    );

    // 3. Trip.
    if matches!(args.scenario, Scenario::Sigstop | Scenario::Stuck) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGSTOP,
        );
        // The stop is asynchronous: wait until the kernel says stopped, as an
        // operator running the runbook's next command would find it.
        let end = Instant::now() + Duration::from_secs(60);
        while killswitch::control::proc_state(pid) != Some('T') && Instant::now() < end {
            std::thread::sleep(Duration::from_micros(100));
        }
        say!(
            q,
            "   SIGSTOP    sent to the engine (runbook step 1: `kill -STOP`)"
        );
    }
    if args.method != TripMethod::Cli && args.scenario != Scenario::StrategyPanic {
        let sig = match args.method {
            TripMethod::Sigterm => nix::sys::signal::Signal::SIGTERM,
            _ => nix::sys::signal::Signal::SIGUSR1,
        };
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig);
        // Delivery is asynchronous: wait for the handler's trip, so the
        // emergency below follows it instead of racing it.
        // A stopped engine cannot run its handler until continued.
        let stopped = matches!(args.scenario, Scenario::Sigstop | Scenario::Stuck);
        let end = Instant::now() + Duration::from_secs(60);
        while !stopped && block.state().mode() != Mode::Kill && Instant::now() < end {
            std::thread::sleep(Duration::from_micros(50));
        }
        if !stopped && block.state().mode() != Mode::Kill {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "the engine's {sig:?} handler did not trip KILL within 60 s (engine pid {pid}; see {})",
                work.join("engine.log").display()
            ));
        }
        say!(
            q,
            "   {sig:?}    sent to the engine (its handler trips KILL)"
        );
    }
    let mut em = Command::new(std::env::current_exe().map_err(|e| e.to_string())?);
    em.arg("--dir")
        .arg(&work)
        .args(["--name", "drill", "emergency", "--json", "--reason"])
        .arg(format!("drill: scenario {:?}", args.scenario).to_lowercase());
    if args.scenario == Scenario::Stuck {
        em.arg("--no-continue");
    }
    say!(
        q,
        "3. emergency  `killswitch emergency --reason ...`{}",
        if args.scenario == Scenario::Stuck {
            " --no-continue"
        } else {
            ""
        }
    );
    let out = em
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("cannot run killswitch emergency: {e}"))?;
    for line in String::from_utf8_lossy(&out.stderr).lines() {
        say!(q, "   {line}");
    }
    let emergency: Option<EmergencyReport> = serde_json::from_slice(&out.stdout).ok();
    let emergency_exit = out.status.code();

    // 4. The engine's end.
    let status = wait_child(&mut child, Duration::from_secs(30));
    let engine_exit = match status {
        Some(s) => s.to_string(),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            "did not exit within 30 s after the emergency: killed by the drill".into()
        }
    };
    let engine: Option<EngineReport> = std::fs::read(work.join("engine-report.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    say!(
        q,
        "4. engine     exited: {engine_exit}{}",
        engine
            .as_ref()
            .map(|r| format!(" — {}", r.verdict))
            .unwrap_or_default()
    );

    // The venues' own record: stopped first, so their logs are complete.
    let logs = match venues.as_mut() {
        Some(v) => Some(v.stop_and_read()?),
        None => None,
    };
    let mut wire_evidence = logs
        .as_ref()
        .map(|l| crate::drill_wire::evidence(l, &session, engine.as_ref()));
    let crash_check = match (&logs, wire_evidence.as_mut()) {
        (Some(l), Some(ev)) if args.scenario == Scenario::CrashRestart => {
            Some(crate::drill_wire::crash_restart_check(l, &session, ev))
        }
        _ => None,
    };
    if let Some(ev) = &wire_evidence {
        say!(
            q,
            "   venues     stopped; their audit logs: {}",
            ev.venues
                .iter()
                .map(|v| format!("{} {} lines", v.name, v.log_lines))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }

    // 5. Checks.
    let mut checks = Vec::new();
    let mut check =
        |name: &str, ok: bool, detail: String| checks.push(Check::new(name, ok, detail));
    let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok();
    check(
        "engine process exited and was reaped (no zombie)",
        status.is_some() && !zombie,
        engine_exit.clone(),
    );
    let expect_killed = matches!(args.scenario, Scenario::Stuck | Scenario::GatewayHang);
    match &engine {
        Some(r) => {
            let v = &r.verification;
            // The window runs from the gateway's acknowledgement until the
            // engine stops its strategies, which it does only once the gate
            // has refused an order from each of them after the drain: the
            // check holds real attempts, it cannot pass before they start.
            let refused: Vec<String> = r
                .strategies
                .iter()
                .map(|s| format!("{} {}", s.name, s.refused_after_drain))
                .collect();
            let every_strategy_refused =
                !r.strategies.is_empty() && r.strategies.iter().all(|s| s.refused_after_drain > 0);
            // In-process venues' logs (the engine counts them) plus the
            // venues' own audit logs over the wire (the drill reads them).
            let (after_ack, new_total) = match &wire_evidence {
                Some(ev) => (
                    v.new_orders_after_ack + ev.new_orders_after_ack,
                    v.new_orders_total + ev.new_orders_total,
                ),
                None => (v.new_orders_after_ack, v.new_orders_total),
            };
            check(
                "no new order reached a venue after the gateway acknowledged the kill, while every strategy kept trying",
                after_ack == 0 && v.ack_mono_ns != 0 && every_strategy_refused,
                format!(
                    "{} after the ack, of {} new orders in the venues' logs; refused by the gate after the drain: {}",
                    after_ack,
                    new_total,
                    if refused.is_empty() {
                        "no strategy ran".to_string()
                    } else {
                        refused.join(", ")
                    }
                ),
            );
            let d = r.drains.iter().rev().find(|d| d.global);
            check(
                "every order terminal or reported CancelUnknown",
                v.orders_unaccounted == 0,
                match d {
                    Some(d) => format!(
                        "{} open at the snapshot: {} canceled, {} filled, {} rejected, {} CancelUnknown; {} unaccounted",
                        d.open_at_snapshot, d.canceled, d.filled, d.rejected, d.unknown.len(), v.orders_unaccounted
                    ),
                    None => "no global drain ran".into(),
                },
            );
            let seq = d.and_then(|d| d.checkpoint_seq);
            check(
                "quick checkpoint written to the journal",
                seq.is_some(),
                format!("journal seq {seq:?}"),
            );
            // Stuck cancels and a dropped session leave orders nobody can
            // confirm: they must be reported by id, never called cancelled.
            // Over the wire the dropped session comes back, and the resend
            // brings the venue's cancel-on-disconnect cancels: nothing is
            // left unknown.
            let expect_unknown = args.scenario == Scenario::StuckCancels
                || (args.scenario == Scenario::VenueDisconnect && !wire);
            let reconnects: u64 = r
                .venues
                .iter()
                .filter_map(|v| v.wire.as_ref())
                .map(|w| w.logons.saturating_sub(1))
                .sum();
            let on_disconnect: u64 = r.venues.iter().map(|v| v.cancelled_on_disconnect).sum();
            let first_ids: String = d
                .map(|d| d.unknown.iter().take(3).map(|u| format!("; {u}")).collect())
                .unwrap_or_default();
            check(
                match args.scenario {
                    Scenario::StuckCancels => "stuck cancels reported as CancelUnknown, by id",
                    Scenario::VenueDisconnect if wire => {
                        "the dropped venue session came back; orders that may have been lost in transit at the drop are reported CancelUnknown, by id (the venues' logs below show none working)"
                    }
                    Scenario::VenueDisconnect => {
                        "orders on the dropped venue session reported as CancelUnknown, by id"
                    }
                    _ => "no order left in CancelUnknown",
                },
                if args.scenario == Scenario::VenueDisconnect && wire {
                    reconnects > 0
                } else {
                    (v.orders_unknown > 0) == expect_unknown
                },
                format!(
                    "{} CancelUnknown{first_ids}{}{}",
                    v.orders_unknown,
                    if reconnects > 0 {
                        format!("; {reconnects} reconnect(s) over the wire")
                    } else {
                        String::new()
                    },
                    if on_disconnect > 0 {
                        format!("; the venue's cancel-on-disconnect removed {on_disconnect} of ours (reconciliation will show them gone)")
                    } else {
                        String::new()
                    }
                ),
            );
        }
        None => check(
            "engine report present (absent only when the engine was killed)",
            expect_killed,
            if expect_killed {
                "engine was killed: the journal below is the record".into()
            } else {
                "missing".into()
            },
        ),
    }
    if args.scenario == Scenario::StuckCancels {
        check(
            "`killswitch emergency` exited 11 (orders unknown)",
            emergency_exit == Some(11),
            format!("exit {emergency_exit:?}"),
        );
    }
    if expect_killed {
        check(
            "emergency escalated (SIGTERM, SIGKILL) and said so",
            emergency
                .as_ref()
                .is_some_and(|e| e.signals_sent.iter().any(|s| s == "SIGKILL"))
                && emergency_exit == Some(10),
            emergency
                .as_ref()
                .map(|e| e.verdict.clone())
                .unwrap_or_default(),
        );
    }

    // The journal: rebuild, compare, checkpoint, validate.
    let jdir = work.join("journal");
    let rebuilt = journal::rebuild(&jdir).map_err(|e| e.to_string())?;
    if let Some(r) = &engine {
        let mut want: Vec<(u64, String)> = r.orders_not_terminal.clone();
        want.sort();
        // The journal's open orders come in slot order, not id order.
        let mut got: Vec<(u64, String)> = rebuilt
            .state
            .open_orders
            .values()
            .map(|o| (o.id.0, format!("{:?}", o.state)))
            .collect();
        got.sort();
        let want_pos: Vec<((u16, u16, u16), i64)> =
            r.positions.iter().map(|p| (p.key, p.qty)).collect();
        let got_pos: Vec<((u16, u16, u16), i64)> = rebuilt
            .state
            .positions
            .iter()
            .filter(|(_, p)| p.qty.0 != 0)
            .map(|(k, p)| ((k.venue, k.instrument, k.account), p.qty.0))
            .collect();
        check(
            "journal alone rebuilds the engine's final orders and positions",
            got == want && got_pos == want_pos && rebuilt.issues.is_empty(),
            format!(
                "{} records, {} not-terminal orders (engine {}), {} positions (engine {}), {} replay issues",
                rebuilt.scan.records,
                got.len(),
                want.len(),
                got_pos.len(),
                want_pos.len(),
                rebuilt.issues.len()
            ),
        );
    } else {
        check(
            "journal recovers after the kill",
            rebuilt.scan.records > 0,
            format!(
                "{} records, {} torn bytes dropped, {} orders still open in the journal: reconcile these with the venues",
                rebuilt.scan.records,
                rebuilt.scan.dropped.len(),
                rebuilt.state.open_orders.len()
            ),
        );
    }
    let wire_checks = wire_evidence
        .as_ref()
        .map(|ev| crate::drill_wire::checks(ev, engine.as_ref(), args.scenario))
        .unwrap_or_default();
    for c in crash_check.into_iter().chain(wire_checks) {
        check(&c.name, c.ok, c.detail);
    }
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let ckpt_dir = work.join("checkpoints");
    let created = Command::new(&exe)
        .args([
            "checkpoint",
            "create",
            "--level",
            "complete",
            "--verify",
            "--journal",
        ])
        .arg(&jdir)
        .arg("--path")
        .arg(&ckpt_dir)
        .output()
        .map_err(|e| e.to_string())?;
    let latest = ckpt_dir.join("latest.ckpt");
    let validated = Command::new(&exe)
        .args(["checkpoint", "validate"])
        .arg(&latest)
        .output()
        .map_err(|e| e.to_string())?;
    let vtext = String::from_utf8_lossy(&validated.stdout).to_string();
    let checkpoint = std::fs::canonicalize(&latest)
        .ok()
        .map(|p| p.display().to_string());
    check(
        "complete checkpoint from the journal: Checkpoint valid ✓",
        created.status.success()
            && validated.status.success()
            && vtext.contains("Checkpoint valid ✓"),
        format!(
            "{} — {}",
            checkpoint.clone().unwrap_or_else(|| "not written".into()),
            vtext.lines().next().unwrap_or("").trim()
        ),
    );
    let total_ns = emergency.as_ref().map(|e| e.total_ns).unwrap_or(u64::MAX);
    check(
        "emergency finished within the runbook's 30 s",
        total_ns < 30_000_000_000,
        format!(
            "{} from the trip to the end of `killswitch emergency`",
            format_duration_ns(total_ns)
        ),
    );

    let pass = checks.iter().all(|c| c.ok);
    crate::drill::say_checks(q, "5. checks", &checks);
    if let Some(r) = &engine {
        if !r.positions.is_empty() {
            say!(q, "   positions at the stop (keep them or flatten them by hand, as the runbook says):");
            for p in &r.positions {
                say!(
                    q,
                    "     {:<6} {:<8} {:<7} {:>12}",
                    p.venue,
                    p.instrument,
                    p.account,
                    p.qty_text
                );
            }
        }
    }
    say!(q, "VERDICT: {}", if pass { "PASS" } else { "FAIL" });
    let report = DrillReport {
        scenario: args.scenario,
        method: args.method,
        venues: args.venues,
        work_dir: work.display().to_string(),
        pass,
        checks,
        emergency,
        emergency_exit,
        engine,
        engine_exit,
        checkpoint,
        wire: wire_evidence,
        crashed_engine_exit,
    };
    if pass && !args.keep && args.work_dir.is_none() {
        let _ = std::fs::remove_dir_all(&work);
    } else {
        say!(q, "work dir kept: {}", work.display());
    }
    Ok(report)
}
