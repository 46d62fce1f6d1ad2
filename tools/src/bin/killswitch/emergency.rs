//! `killswitch emergency`: the runbook's EMERGENCY SHUTDOWN, done by the
//! engine itself in milliseconds and followed from outside.
//!
//! 1. Trip KILL in the shared block (the gate closes at once).
//! 2. If the engine is stopped (`SIGSTOP`, the runbook's first step), send
//!    `SIGCONT`: the gate is already closed, so letting it run can only
//!    cancel orders, never send new ones.
//! 3. Follow the drain status the engine publishes and print a timeline:
//!    drain saw the trip, gateway acknowledged, first cancel, last answer,
//!    quick checkpoint, done, process exit.
//! 4. If the engine does not confirm in time (or its drain publishes that
//!    the gateway missed its acknowledgement deadline): `SIGTERM`, then
//!    `SIGKILL` after a second deadline, and say which orders are
//!    unconfirmed; that finding also goes into the control block's "drain
//!    incomplete" record, which blocks `reset` until someone reconciles.
//!
//! An engine that was restarted after the trip, is latched (its gate
//! refuses every order) and has finished its drain has nothing left to do:
//! that is reported and is not escalated. An engine found dead in the middle
//! of its drain is reported as such (exit 10), never as "no engine".
//!
//! Exit codes (also in README.md): 0 drained, checkpointed, engine exited
//! (or restarted, latched and drained); 10 engine did not confirm and was
//! terminated or killed, or exited or died without confirming its drain; 11
//! drain finished with orders in `CancelUnknown`; 12 quick checkpoint
//! failed; 13 no live engine attached and no drain left unfinished (the
//! trip is latched, nothing was drained).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use killswitch::clock::{format_duration_ns, mono_ns};
use killswitch::control::{
    proc_start_ticks, proc_state, ControlError, DrainPhase, DrainSnapshot, GatewaySnapshot,
    IncompleteWriter, Mode, Source,
};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use crate::Target;

mod finding;
use finding::{record_finding, started_after};

/// Exit code: the engine had to be terminated or killed.
pub const EXIT_ESCALATED: u8 = 10;
/// Exit code: orders left in `CancelUnknown`.
pub const EXIT_ORDERS_UNKNOWN: u8 = 11;
/// Exit code: the quick checkpoint failed.
pub const EXIT_CHECKPOINT_FAILED: u8 = 12;
/// Exit code: no live engine.
pub const EXIT_NO_ENGINE: u8 = 13;

/// Options of `killswitch emergency`.
#[derive(Args, Debug)]
pub struct EmergencyArgs {
    /// Why (kept in the audit ring).
    #[arg(long)]
    reason: String,
    /// How long the engine has to finish its drain and checkpoint.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    confirm_deadline: Duration,
    /// How long the gateway has to acknowledge the kill before the engine counts as stuck.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1s")]
    ack_deadline: Duration,
    /// After the drain, how long the engine has to exit on its own.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "2s")]
    exit_deadline: Duration,
    /// After SIGTERM, how long before SIGKILL.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "2s")]
    term_deadline: Duration,
    /// Do not SIGCONT a stopped engine (escalate instead).
    #[arg(long)]
    no_continue: bool,
    /// Print the result as JSON (the timeline still goes to stderr).
    #[arg(long)]
    json: bool,
}

/// One line of the timeline.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Step {
    /// Nanoseconds after the trip.
    pub at_ns: u64,
    /// What happened.
    pub what: String,
}

/// The result, printed as JSON with `--json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EmergencyReport {
    /// Control file.
    pub path: String,
    /// Engine pid (0 when none).
    pub engine_pid: u32,
    /// Kill generation.
    pub generation: u64,
    /// Timeline.
    pub timeline: Vec<Step>,
    /// Drain counters at the end.
    pub drain: DrainSnapshot,
    /// Escalations made ("SIGCONT", "SIGTERM", "SIGKILL").
    pub signals_sent: Vec<String>,
    /// Whether the engine process is gone at the end.
    pub engine_exited: bool,
    /// Orders not confirmed terminal (open at snapshot - confirmed), including unknown.
    pub orders_unconfirmed: u64,
    /// Trip to the end of the drain (or of the command), ns.
    pub total_ns: u64,
    /// Exit code.
    pub exit_code: u8,
    /// One-line verdict.
    pub verdict: String,
}

/// How often the drain's follower reads the engine's process state from
/// /proc (stopped? gone?): a stop or a death is seen within this.
const PROC_LOOK_EVERY: Duration = Duration::from_millis(2);

fn alive(pid: u32, ticks: u64) -> bool {
    proc_start_ticks(pid).is_some_and(|t| ticks == 0 || t == ticks)
}

struct Timeline {
    t0: u64,
    steps: Vec<Step>,
    printed: usize,
    quiet: bool,
}

impl Timeline {
    /// Records a step; printed by `flush`, in time order.
    fn at(&mut self, t: u64, what: String) {
        let at_ns = t.saturating_sub(self.t0);
        self.steps.push(Step { at_ns, what });
    }
    /// Prints the steps recorded since the last flush, sorted by time (one
    /// poll can discover several steps the engine made in between).
    fn flush(&mut self) {
        let new = &mut self.steps[self.printed..];
        new.sort_by_key(|s| s.at_ns);
        if !self.quiet {
            for s in new.iter() {
                eprintln!("  +{:>10}  {}", format_duration_ns(s.at_ns), s.what);
            }
        }
        self.printed = self.steps.len();
    }
    fn now(&mut self, what: String) {
        self.at(mono_ns(), what);
        self.flush();
    }
}

/// Runs `killswitch emergency`.
pub fn run(args: EmergencyArgs, t: &Target) -> ExitCode {
    match emergency(&args, t) {
        Ok(report) => {
            if args.json {
                outln!(
                    "{}",
                    serde_json::to_string_pretty(&report).expect("report serialises")
                );
            } else {
                outln!("{}", report.verdict);
            }
            ExitCode::from(report.exit_code)
        }
        Err(e) => crate::control_cmds::fail(&e),
    }
}

fn emergency(args: &EmergencyArgs, t: &Target) -> Result<EmergencyReport, ControlError> {
    let operator = t.operator()?;
    let block = operator.block();
    let owner = block.owner();
    let (pid, ticks) = (owner.pid, owner.start_ticks);
    let engine_alive = pid != 0 && alive(pid, ticks);

    let out = operator
        .tripper()
        .trip_global(Mode::Kill, Source::Cli, &args.reason);
    let already = matches!(
        out.transition,
        killswitch::control::Transition::Unchanged(_)
    );
    // The timeline starts at the trip in force: ours, or the earlier one
    // (signal, panic, watchdog) that made ours a no-op.
    let trip = if already { block.last_trip() } else { None }
        .or_else(|| block.audit().into_iter().find(|e| e.ticket == out.ticket));
    let g = match (&trip, already) {
        (Some(t), true) => t.generation,
        _ => out.transition.current().generation(),
    };
    let t0 = trip.as_ref().map(|e| e.mono_ns).unwrap_or_else(mono_ns);
    let mut tl = Timeline {
        t0,
        steps: Vec::new(),
        printed: 0,
        quiet: false,
    };
    eprintln!(
        "EMERGENCY on {} (engine pid {}): {}",
        block.path().display(),
        if pid == 0 {
            "none".to_string()
        } else {
            pid.to_string()
        },
        args.reason
    );
    tl.at(
        t0,
        match (&trip, already) {
            (Some(t), true) => format!(
                "KILL tripped, generation {g}, by {} pid {}: \"{}\" (this command's trip was a no-op)",
                t.source.as_str(),
                t.pid,
                t.reason
            ),
            _ => format!("KILL tripped, generation {g}: the gate rejects every new order"),
        },
    );
    tl.flush();
    let mut report = EmergencyReport {
        path: block.path().display().to_string(),
        engine_pid: pid,
        generation: g,
        timeline: Vec::new(),
        drain: DrainSnapshot::read(block),
        signals_sent: Vec::new(),
        engine_exited: !engine_alive,
        orders_unconfirmed: 0,
        total_ns: 0,
        exit_code: 0,
        verdict: String::new(),
    };
    if !engine_alive {
        // Dead in the middle of its drain (SIGKILL, OOM, a crash): the
        // orders it was cancelling may still be live. Say so; never "no
        // engine was running".
        let snap = DrainSnapshot::read(block);
        let record = block.drain_incomplete();
        if pid != 0 && (snap.phase.is_running() || record.is_some()) {
            let snapshot_taken = snap.t_gateway_ack != 0 || snap.open_at_snapshot > 0;
            let unconfirmed = match (&record, snapshot_taken) {
                (Some(r), _) if r.writer != IncompleteWriter::Drain => r.unknown,
                (_, true) => snap.open_at_snapshot.saturating_sub(snap.orders_confirmed),
                _ => GatewaySnapshot::read(block).open_orders,
            };
            tl.now(format!(
                "engine pid {pid} is DEAD and its drain of generation {} did not finish ({:?}): {} order(s) unconfirmed",
                snap.generation, snap.phase, unconfirmed
            ));
            if record
                .as_ref()
                .is_none_or(|r| r.writer == IncompleteWriter::Drain)
            {
                record_finding(
                    &operator,
                    snap.generation.max(g),
                    &snap,
                    snapshot_taken,
                    unconfirmed,
                );
            }
            report.timeline = tl.steps;
            report.drain = snap;
            report.orders_unconfirmed = unconfirmed;
            report.exit_code = EXIT_ESCALATED;
            report.verdict = format!(
                "ENGINE DIED MID-DRAIN: pid {pid} died during its drain of generation {}; {unconfirmed} order(s) unconfirmed — reconcile with the venues (`killswitch journal inspect` lists what the journal holds open); reset stays refused until then (exit {EXIT_ESCALATED})",
                snap.generation
            );
            return Ok(report);
        }
        tl.now(
            "no live engine is attached: the kill is latched for when one starts; nothing to drain"
                .into(),
        );
        report.timeline = tl.steps;
        report.exit_code = EXIT_NO_ENGINE;
        report.verdict = format!(
            "NO ENGINE: KILL latched in {}; no engine was running to drain (exit {EXIT_NO_ENGINE})",
            report.path
        );
        return Ok(report);
    }
    // Started after the trip: a restarted engine, latched. Once its drain
    // is done it has nothing left to do and stays up, refusing orders.
    let restarted_latched = started_after(pid, t0);

    let signal = |report: &mut EmergencyReport, tl: &mut Timeline, sig: Signal| {
        let r = kill(Pid::from_raw(pid as i32), sig);
        tl.now(format!(
            "sent {sig:?} to engine pid {pid}{}",
            if r.is_err() { " (failed: gone?)" } else { "" }
        ));
        report.signals_sent.push(format!("{sig:?}"));
    };

    // Follow the drain.
    let start = Instant::now();
    let (mut seen, mut acked, mut first, mut ckpt, mut done) = (false, false, false, false, false);
    let mut escalate = false;
    let mut last_cont: Option<Instant> = None;
    let mut said_stopped = false;
    // The engine's process state is read from /proc (two files, tens of
    // µs of CPU each time) at most every PROC_LOOK_EVERY, not at every
    // 100 µs turn: on a 2-core host that took a fifth of a core from the
    // engine's gateway while it applied the venues' answers. The control
    // block (shared memory) is still read every turn.
    let mut proc_looked: Option<Instant> = None;
    loop {
        let look_at_proc = proc_looked.is_none_or(|t| t.elapsed() >= PROC_LOOK_EVERY);
        if look_at_proc {
            proc_looked = Some(Instant::now());
        }
        // Stopped (SIGSTOP, the runbook's step 1) now or at any point of
        // the drain: the gate is closed, so continuing it can only cancel.
        if look_at_proc
            && proc_state(pid) == Some('T')
            && last_cont.is_none_or(|t: Instant| t.elapsed() > Duration::from_millis(100))
        {
            if args.no_continue {
                if !said_stopped {
                    tl.now(format!(
                        "engine pid {pid} is STOPPED (SIGSTOP); --no-continue given"
                    ));
                    said_stopped = true;
                }
            } else {
                tl.now(format!(
                    "engine pid {pid} is STOPPED (SIGSTOP); the gate is closed, continuing it so it can cancel"
                ));
                signal(&mut report, &mut tl, Signal::SIGCONT);
                last_cont = Some(Instant::now());
            }
        }
        let snap = DrainSnapshot::read(block);
        let mine = snap.generation >= g;
        let fresh = |v: u64| v >= t0;
        if !seen && mine && fresh(snap.t_trip_seen) {
            seen = true;
            tl.at(
                snap.t_trip_seen,
                "engine's drain thread saw the trip".into(),
            );
        }
        let gw = GatewaySnapshot::read(block);
        if !acked && gw.acked_generation >= g {
            acked = true;
            let t = gw.acked_mono_ns;
            tl.at(
                if fresh(t) { t } else { mono_ns() },
                format!("gateway acknowledged generation {g}: no new order can reach a venue"),
            );
        }
        if !first && mine && fresh(snap.t_first_cancel) {
            first = true;
            tl.at(
                snap.t_first_cancel,
                // (The snapshot count may not be published yet: a mass
                // cancel goes out before the snapshot is taken.)
                "first cancel (or mass cancel) on its way to a venue".to_string(),
            );
        }
        if !ckpt && mine && fresh(snap.t_checkpoint) {
            ckpt = true;
            tl.at(
                snap.t_checkpoint,
                format!(
                    "quick checkpoint written (journal seq {})",
                    snap.checkpoint_seq
                ),
            );
        }
        if mine && snap.phase == DrainPhase::GatewayAckLate {
            // The drain published that the gateway missed its deadline (it
            // keeps waiting): the engine is stuck in a venue write.
            tl.now(
                "engine's drain reports its gateway did NOT acknowledge the kill by the deadline (it is still waiting): engine is stuck"
                    .into(),
            );
            escalate = true;
            break;
        }
        if mine && matches!(snap.phase, DrainPhase::Done | DrainPhase::Failed) && fresh(snap.t_done)
        {
            done = true;
            if fresh(snap.t_last_ack) {
                // Only final once the drain is done: it moves with every answer.
                tl.at(
                    snap.t_last_ack,
                    format!(
                        "last cancel confirmed by a venue ({} of {} orders confirmed)",
                        snap.orders_confirmed, snap.open_at_snapshot
                    ),
                );
            }
            tl.at(
                snap.t_done,
                format!(
                    "drain {}: {} orders confirmed, {} CancelUnknown (no answer by the deadline)",
                    if snap.phase == DrainPhase::Done {
                        "done"
                    } else {
                        "FAILED"
                    },
                    snap.orders_confirmed,
                    snap.orders_unknown
                ),
            );
            break;
        }
        if look_at_proc && !alive(pid, ticks) {
            tl.now(format!(
                "engine pid {pid} is gone before confirming the drain"
            ));
            break;
        }
        let waited = start.elapsed();
        if !acked && waited > args.ack_deadline {
            tl.now(format!(
                "gateway has not acknowledged within {}: engine is stuck",
                humantime::format_duration(args.ack_deadline)
            ));
            escalate = true;
            break;
        }
        if waited > args.confirm_deadline {
            tl.now(format!(
                "engine did not confirm the drain within {}",
                humantime::format_duration(args.confirm_deadline)
            ));
            escalate = true;
            break;
        }
        tl.flush();
        std::thread::sleep(Duration::from_micros(100));
    }
    tl.flush();

    // The engine exits on its own after an emergency drain; wait for it, then escalate.
    let wait_exit = |deadline: Duration| {
        let end = Instant::now() + deadline;
        while Instant::now() < end {
            if !alive(pid, ticks) {
                return true;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        !alive(pid, ticks)
    };
    let mut exited = !alive(pid, ticks);
    let latched_and_drained = done && restarted_latched && !exited && !escalate;
    if latched_and_drained {
        tl.now(format!(
            "engine pid {pid} started after the trip and is latched (its gate refuses every order); its drain of generation {g} is done: nothing left for it to do, not escalating"
        ));
    } else if !exited && !escalate {
        exited = wait_exit(args.exit_deadline);
        if exited {
            tl.now(format!("engine pid {pid} exited"));
        } else {
            tl.now(format!(
                "engine did not exit within {}",
                humantime::format_duration(args.exit_deadline)
            ));
            escalate = true;
        }
    }
    if escalate && !exited {
        signal(&mut report, &mut tl, Signal::SIGTERM);
        exited = wait_exit(args.term_deadline);
        if !exited {
            signal(&mut report, &mut tl, Signal::SIGKILL);
            exited = wait_exit(Duration::from_secs(5));
        }
        tl.now(if exited {
            format!("engine pid {pid} is gone")
        } else {
            format!("engine pid {pid} STILL ALIVE after SIGKILL (uninterruptible I/O?)")
        });
    }

    let snap = DrainSnapshot::read(block);
    report.drain = snap;
    report.engine_exited = exited;
    report.total_ns = mono_ns().saturating_sub(t0);
    let drained = done && snap.generation >= g;
    // With a snapshot, what it held and nobody confirmed; without one (the
    // gateway never acknowledged), every order the engine last reported open.
    let snapshot_taken = snap.generation >= g && snap.t_gateway_ack >= t0;
    report.orders_unconfirmed = if drained && snapshot_taken {
        snap.orders_unknown
    } else if snapshot_taken {
        snap.open_at_snapshot.saturating_sub(snap.orders_confirmed)
    } else {
        GatewaySnapshot::read(block).open_orders
    };
    if (escalate || !drained)
        && exited
        && (report.orders_unconfirmed > 0 || !snapshot_taken)
        && block
            .drain_incomplete()
            .is_none_or(|r| r.writer == IncompleteWriter::Drain)
    {
        // The engine is gone without confirming: what we found is the
        // record that blocks reset until someone reconciles.
        record_finding(
            &operator,
            g,
            &snap,
            snapshot_taken,
            report.orders_unconfirmed,
        );
        tl.now(format!(
            "recorded in the control block: drain of generation {g} incomplete, {} order(s) unconfirmed (reset is refused until reconciled)",
            report.orders_unconfirmed
        ));
    }
    let (code, verdict) = if escalate || !drained {
        (
            EXIT_ESCALATED,
            format!(
                "{}; {} order(s) unconfirmed{} — reconcile with the venues (their cancel-on-disconnect may cover them; `killswitch journal inspect` lists what the journal holds open)",
                if report.signals_sent.iter().any(|s| s != "SIGCONT") {
                    format!(
                        "ESCALATED: engine did not confirm ({})",
                        report.signals_sent.join(" -> ")
                    )
                } else {
                    "ENGINE EXITED WITHOUT CONFIRMING ITS DRAIN".to_string()
                },
                report.orders_unconfirmed,
                if snapshot_taken {
                    format!(" of {} in the drain's snapshot", snap.open_at_snapshot)
                } else {
                    " (no cancel was sent: the count is the engine's last published open orders)".to_string()
                }
            ),
        )
    } else if snap.phase == DrainPhase::Failed
        && snap.t_gateway_ack >= t0
        && snap.checkpoint_seq == 0
    {
        (EXIT_CHECKPOINT_FAILED, "DRAINED, CHECKPOINT FAILED: orders handled, but no quick checkpoint; see the engine's log".to_string())
    } else if snap.orders_unknown > 0 {
        (
            EXIT_ORDERS_UNKNOWN,
            format!(
                "DRAINED WITH {} ORDER(S) UNKNOWN: cancel sent, no answer by the deadline; reconcile before `reset --force`",
                snap.orders_unknown
            ),
        )
    } else {
        (
            0,
            format!(
                "DRAINED: {} order(s) resolved, checkpoint seq {}, engine {} in {} (runbook target 30 s)",
                snap.orders_confirmed,
                snap.checkpoint_seq,
                if exited {
                    "exited"
                } else if latched_and_drained {
                    "restarted after the trip, latched and idle"
                } else {
                    "still running"
                },
                format_duration_ns(report.total_ns)
            ),
        )
    };
    report.exit_code = code;
    report.verdict = verdict;
    report.timeline = tl.steps;
    Ok(report)
}
