//! [`Runtime::planned_shutdown`]: the thirteen phases of
//! [`crate::shutdown`] run over the runtime's own parts (registry, gateway,
//! journal, control block). See that module for what each phase does.
//!
//! The flattener sends through a strategy handle of its own
//! ([`FLATTEN_STRATEGY`]), taken before the strategies are told to stop, so
//! its fills (with their prices: slippage) come back as answers; other
//! strategies' orders are cancelled through the gateway's ring under their
//! own strategy tag (a cancel only reduces risk).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::checkpoint::{self, CheckpointContents, CheckpointTarget};
use crate::clock::wall_ns;
use crate::control::telemetry::{EngineStatus, TelemetrySnapshot};
use crate::control::{Mode, Source};
use crate::order::{OrderId, OrderIntent, Price, Qty, ScopeIndex, ScopeTags};
use crate::shutdown::words::{self, PhaseState};
use crate::shutdown::{
    reconcile, stop_in_order, CheckpointInfo, FlattenBook, FlattenKind, FlattenMode, Phase,
    PhaseRecord, PhaseResult, PlannedShutdownReport, ReconcileRow, RowStatus, ShutdownHooks,
    ShutdownPlan, StrategyRow, VenueAnswer,
};

use super::{Answer, Runtime, StrategyHandle};

mod steps;
use steps::ids;

/// The strategy name the flattener's orders carry.
pub const FLATTEN_STRATEGY: &str = "ks-shutdown-flatten";

/// How often the waits look (not the order path: a millisecond is plenty).
const POLL: Duration = Duration::from_millis(1);

struct Run<'a> {
    plan: ShutdownPlan,
    hooks: &'a mut dyn ShutdownHooks,
    report: PlannedShutdownReport,
    escalated: bool,
    killed: bool,
}

impl Run<'_> {
    fn begin(&mut self, rt: &Runtime, phase: Phase) -> (Instant, u64) {
        if self.escalated && !self.killed {
            // The emergency path: KILL, so the drain cancels what is open
            // (a second SIGTERM has tripped it already; this covers a hook
            // that escalates on its own).
            rt.tripper.trip_global(
                Mode::Kill,
                Source::Api,
                "planned shutdown escalated to emergency",
            );
            self.killed = true;
        }
        words::publish_progress(
            &rt.block,
            self.plan.nonce,
            phase.number(),
            PhaseState::Running,
        );
        let rec = PhaseRecord {
            phase,
            started_wall_ns: wall_ns(),
            micros: 0,
            waited_micros: 0,
            result: PhaseResult::Running,
            detail: String::new(),
        };
        self.report.phases.push(rec.clone());
        self.hooks.on_phase(&rec, &self.report);
        (Instant::now(), rec.started_wall_ns)
    }

    fn end(
        &mut self,
        started: (Instant, u64),
        result: PhaseResult,
        detail: String,
        waited: Duration,
    ) {
        let Some(rec) = self.report.phases.last_mut() else {
            return;
        };
        rec.micros = started.0.elapsed().as_micros() as u64;
        rec.waited_micros = (waited.as_micros() as u64).min(rec.micros);
        rec.result = result;
        rec.detail = detail;
        let rec = rec.clone();
        self.hooks.on_phase(&rec, &self.report);
    }

    /// Sleeps one poll; true when the hooks ask to escalate to emergency.
    fn tick(&mut self) -> bool {
        if !self.escalated && self.hooks.escalate() {
            self.escalated = true;
        }
        std::thread::sleep(POLL);
        self.escalated
    }
}

impl Runtime {
    /// Runs the planned shutdown (see [`crate::shutdown`]) and stops the
    /// runtime as [`Runtime::shutdown`] does (in phase 11). Returns the
    /// report; the engine writes it out.
    ///
    /// Call it from the thread that supervises (after
    /// [`Runtime::supervise_with`] returned); the engine's own telemetry
    /// publisher should publish only from [`ShutdownHooks::on_phase`]
    /// meanwhile (the status and the announcement are written here).
    ///
    /// If [`ShutdownHooks::escalate`] says so (a second SIGTERM), the
    /// remaining waits are cut short, KILL is tripped (the drain cancels
    /// what is open) and the report says `escalated`.
    pub fn planned_shutdown(
        &mut self,
        plan: ShutdownPlan,
        hooks: &mut dyn ShutdownHooks,
    ) -> PlannedShutdownReport {
        let report = PlannedShutdownReport {
            nonce: plan.nonce,
            reason: plan.reason.clone(),
            flatten: plan.flatten.as_str().to_string(),
            keep_passive: plan.keep_passive,
            reduce_limits_pct: plan.reduce_limits_pct,
            started_wall_ns: wall_ns(),
            ..PlannedShutdownReport::default()
        };
        let mut run = Run {
            plan,
            hooks,
            report,
            escalated: false,
            killed: false,
        };
        // Taken first: once the stop flag is up no handle is handed out.
        let mut flattener = match self.strategy(FLATTEN_STRATEGY) {
            Ok(h) => Some(h),
            Err(e) => {
                run.report
                    .warnings
                    .push(format!("no flattening handle: {e}"));
                None
            }
        };
        let mut telemetry = self.monitor().telemetry_writer();

        // 1. Announce.
        let t = run.begin(self, Phase::Announce);
        let at = if run.plan.start_at_wall_ns == 0 {
            wall_ns()
        } else {
            run.plan.start_at_wall_ns
        };
        telemetry.announce_shutdown(at, &run.plan.reason);
        let wait_from = Instant::now();
        while wall_ns() < at && !run.tick() {}
        let detail = format!(
            "status SHUTTING_DOWN_SOON, shutdown at {}: {}",
            crate::clock::format_wall(at),
            run.plan.reason
        );
        run.end(t, PhaseResult::Done, detail, wait_from.elapsed());

        // 2. Lock deployments and configuration.
        let t = run.begin(self, Phase::Lock);
        let before = words::set_change_lock(&self.block, true);
        let detail = if before.locked {
            format!("already locked (by pid {}); kept", before.locked_by_pid)
        } else {
            format!(
                "deployments and configuration locked by pid {}: a new engine start is refused until the shutdown ends",
                std::process::id()
            )
        };
        run.end(t, PhaseResult::Done, detail, Duration::ZERO);

        // 3. Reduce position limits.
        let t = run.begin(self, Phase::ReduceLimits);
        match run.plan.reduce_limits_pct {
            Some(pct) => {
                let base = run.plan.position_limit.unwrap_or_else(|| {
                    Qty(self
                        .registry
                        .positions()
                        .iter()
                        .map(|(_, q)| q.0.abs())
                        .max()
                        .unwrap_or(0))
                });
                let keep = 100 - i128::from(pct.min(100));
                let limit = Qty((i128::from(base.0) * keep / 100) as i64);
                words::set_position_limit(&self.block, Some(limit));
                run.report.position_limit = Some(limit);
                run.end(
                    t,
                    PhaseResult::Done,
                    format!("position limit {base} reduced by {pct}% to {limit}: the gate refuses orders that would exceed it"),
                    Duration::ZERO,
                );
            }
            None => run.end(t, PhaseResult::Skipped, "not asked".into(), Duration::ZERO),
        }

        // 4. Disable strategies.
        let t = run.begin(self, Phase::DisableStrategies);
        telemetry.set_engine_status(EngineStatus::ShuttingDown);
        let tripped = self.tripper.trip_global(
            Mode::ReduceOnly,
            Source::Api,
            "planned shutdown: strategies disabled",
        );
        self.stop.store(true, Ordering::Release);
        let wait_from = Instant::now();
        let generation = tripped.transition.current().generation();
        if let Some(g) = &self.gateway {
            g.wait_acked(generation, Duration::from_secs(5));
        }
        let deadline = Instant::now() + run.plan.component_timeout;
        let mut live = self.live_strategies();
        while !live.is_empty() && Instant::now() < deadline && !run.tick() {
            live = self.live_strategies();
        }
        let snap = TelemetrySnapshot::read(&self.block);
        let names: Vec<String> = {
            let l = self.strategies.lock().unwrap_or_else(|p| p.into_inner());
            l.iter().map(|(n, _)| n.clone()).collect()
        };
        let mut all: Vec<String> = snap
            .strategies
            .iter()
            .map(|s| s.name.clone())
            .chain(names)
            .filter(|n| n != FLATTEN_STRATEGY)
            .collect();
        all.sort();
        all.dedup();
        run.report.strategies = all
            .into_iter()
            .map(|name| StrategyRow {
                status: if live.contains(&name) {
                    "STOPPING"
                } else {
                    "DISABLED"
                }
                .into(),
                last_signal_wall_ns: snap
                    .strategies
                    .iter()
                    .find(|s| s.name == name)
                    .map_or(0, |s| s.last_signal_wall_ns),
                name,
            })
            .collect();
        let (result, detail) = if live.is_empty() {
            (
                PhaseResult::Done,
                format!(
                    "{} strategies disabled; switch at REDUCE_ONLY (generation {generation})",
                    run.report.strategies.len()
                ),
            )
        } else {
            (
                PhaseResult::Warning(format!("still running: {}", live.join(", "))),
                format!(
                    "REDUCE_ONLY holds them: only reducing orders pass; {} did not stop",
                    live.len()
                ),
            )
        };
        run.end(t, result, detail, wait_from.elapsed());

        // 5. Cancel or flatten.
        let t = run.begin(self, Phase::CancelOrFlatten);
        let cancels_from = Instant::now();
        let mut waited = Duration::ZERO;
        self.cancel_open(&mut run);
        let mut detail = format!(
            "{} order(s) cancelled, {} passive kept",
            run.report.cancelled.len(),
            run.report.kept_passive.len()
        );
        let mut result = PhaseResult::Done;
        if run.plan.flatten != FlattenMode::None {
            // Cancels first: a pending cancel of a reducing order still
            // counts against the position (the gateway's REDUCE_ONLY).
            let w = Instant::now();
            let deadline = cancels_from + run.plan.order_wait;
            while self.open_excluding(&run.report.kept_passive) > 0
                && Instant::now() < deadline
                && !run.tick()
            {}
            waited += w.elapsed();
            if let Some(h) = flattener.as_mut() {
                waited += self.flatten(&mut run, h);
            }
            let remaining: Vec<String> = run
                .report
                .flatten_results
                .iter()
                .filter(|r| r.remaining.0 != 0)
                .map(|r| format!("{} {}", self.position_name(r.key), r.remaining))
                .collect();
            detail.push_str(&format!(
                "; flatten {}{}: {} position(s), slippage {}",
                run.plan.flatten.as_str(),
                if run.report.flatten_escalated {
                    " escalated to aggressive"
                } else {
                    ""
                },
                run.report.flatten_results.len(),
                Price(run.report.slippage)
            ));
            if !remaining.is_empty() {
                result = PhaseResult::Warning(format!(
                    "positions not flattened: {}",
                    remaining.join(", ")
                ));
                run.report.outcome |= words::OUTCOME_NOT_FLAT;
            }
            if run.report.loss_alert {
                run.report.warnings.push(format!(
                    "LOSS ALERT: flattening slippage {} exceeds the threshold",
                    Price(run.report.slippage)
                ));
            }
        }
        run.end(t, result, detail, waited);

        // 6. Wait for orders.
        let t = run.begin(self, Phase::WaitForOrders);
        let w = Instant::now();
        let deadline = cancels_from + run.plan.order_wait;
        while self.open_excluding(&run.report.kept_passive) > 0
            && Instant::now() < deadline
            && !run.tick()
        {}
        let waited = w.elapsed();
        let kept = run.report.kept_passive.clone();
        let mut stragglers: Vec<OrderId> = self
            .registry
            .open_orders(|o| !kept.contains(&o.id))
            .into_iter()
            .map(|o| o.id)
            .collect();
        stragglers.sort_unstable();
        for &id in &stragglers {
            if self.registry.force_cancel_unknown(id).is_some() {
                run.report.forced_cancel_local.push(id);
            }
        }
        let (result, detail) = if stragglers.is_empty() {
            (PhaseResult::Done, "no order open".to_string())
        } else {
            run.report.outcome |= words::OUTCOME_STRAGGLERS;
            (
                PhaseResult::Warning(format!(
                    "{} order(s) still open after {} ms: marked CancelUnknown locally (force cancel local); check with the venue",
                    stragglers.len(),
                    run.plan.order_wait.as_millis()
                )),
                format!("stragglers: {}", ids(&stragglers)),
            )
        };
        run.report.stragglers = stragglers;
        run.end(t, result, detail, waited);

        // 7. Reconcile.
        let t = run.begin(self, Phase::Reconcile);
        let (rows, waited) = self.reconcile_positions(&mut run);
        let mismatches = rows
            .iter()
            .filter(|r| r.status == RowStatus::Mismatch)
            .count();
        let unchecked = rows
            .iter()
            .filter(|r| r.status == RowStatus::NotChecked)
            .count();
        run.report.reconcile = rows;
        let (result, detail) = if mismatches > 0 {
            words::set_reconcile_mismatch(&self.block, true);
            run.report.outcome |= words::OUTCOME_RECONCILE_MISMATCH;
            (
                PhaseResult::Warning(format!(
                    "{mismatches} position(s) differ from the venue: reset is blocked until `killswitch reconcile --ack`"
                )),
                format!("{} row(s), {mismatches} mismatch(es)", run.report.reconcile.len()),
            )
        } else if unchecked > 0 {
            (
                PhaseResult::Warning(format!(
                    "{unchecked} row(s) not checked: a venue gave no position report"
                )),
                format!("{} row(s)", run.report.reconcile.len()),
            )
        } else {
            (
                PhaseResult::Done,
                format!("{} row(s), all OK", run.report.reconcile.len()),
            )
        };
        run.end(t, result, detail, waited);

        // 8. Checkpoint.
        let t = run.begin(self, Phase::Checkpoint);
        let (result, detail) = self.complete_checkpoint(&mut run);
        run.end(t, result, detail, Duration::ZERO);

        // 9. Stop market data.
        let t = run.begin(self, Phase::StopMarketData);
        let (result, detail) = match run.hooks.stop_market_data() {
            Ok(d) => (PhaseResult::Done, d),
            Err(e) => (PhaseResult::Failed(e.clone()), e),
        };
        run.end(t, result, detail, Duration::ZERO);

        // 10. Disconnect venues.
        let t = run.begin(self, Phase::DisconnectVenues);
        let w = Instant::now();
        let (result, detail) = self.disconnect_venues(&mut run);
        run.end(t, result, detail, w.elapsed());

        // 11. Stop services.
        let t = run.begin(self, Phase::StopServices);
        let w = Instant::now();
        let mut components = run.hooks.components();
        run.report.components = stop_in_order(&mut components, run.plan.component_timeout, POLL);
        drop(flattener.take());
        let stopped = self.shutdown_with(run.plan.component_timeout);
        let forced: Vec<String> = run
            .report
            .components
            .iter()
            .filter(|c| !c.graceful)
            .map(|c| format!("{} ({})", c.name, c.forced.clone().unwrap_or_default()))
            .chain(
                stopped
                    .strategies_still_running
                    .iter()
                    .map(|s| format!("strategy {s} (abandoned)")),
            )
            .collect();
        let mut problems = forced.clone();
        if let Err(e) = &stopped.gateway {
            problems.push(format!("gateway: {e}"));
        }
        if let Err(e) = &stopped.drain {
            problems.push(format!("drain: {e}"));
        }
        if let Some(Err(e)) = &stopped.durable {
            problems.push(format!("journal sync: {e}"));
        }
        let order: Vec<String> = run
            .report
            .components
            .iter()
            .map(|c| format!("{} {} ms", c.name, c.ms))
            .collect();
        let detail = format!(
            "{}{}runtime stopped (strategies, gateway, drain, journal synced, signals, detached)",
            order.join(", "),
            if order.is_empty() { "" } else { "; " }
        );
        let result = if problems.is_empty() {
            PhaseResult::Done
        } else {
            if !forced.is_empty() {
                run.report.outcome |= words::OUTCOME_FORCED;
            }
            PhaseResult::Warning(format!("forced or failed: {}", problems.join("; ")))
        };
        run.end(t, result, detail, w.elapsed());

        // 12. Verify.
        let t = run.begin(self, Phase::Verify);
        let (result, detail) = self.verify(&run);
        run.end(t, result, detail, Duration::ZERO);

        // 13. Report.
        let t = run.begin(self, Phase::Report);
        run.report.final_positions = self.registry.positions();
        run.report.pnl = self.pnl_at_mids(run.hooks);
        if run.escalated {
            run.report.outcome |= words::OUTCOME_ESCALATED;
            run.report
                .warnings
                .push("escalated to the emergency path (second signal): remaining waits cut short, KILL tripped".into());
        }
        let bad = words::OUTCOME_STRAGGLERS
            | words::OUTCOME_NOT_FLAT
            | words::OUTCOME_RECONCILE_MISMATCH
            | words::OUTCOME_FORCED
            | words::OUTCOME_CHECKPOINT_PROBLEM
            | words::OUTCOME_ESCALATED;
        if run.report.outcome & bad == 0 {
            run.report.outcome |= words::OUTCOME_CLEAN;
        }
        words::set_change_lock(&self.block, false);
        telemetry.set_engine_status(EngineStatus::Offline);
        run.report.finished_wall_ns = wall_ns();
        let detail = format!(
            "status OFFLINE; {}; deployments unlocked",
            if run.report.is_clean() {
                "clean"
            } else {
                "with findings (see warnings)"
            }
        );
        run.end(t, PhaseResult::Done, detail, Duration::ZERO);
        words::publish_finished(
            &self.block,
            run.plan.nonce,
            Phase::Report.number(),
            run.report.outcome,
        );
        run.report
    }
}
