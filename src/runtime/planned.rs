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

    /// `venue/instrument/account` by name (the index where a name is missing).
    fn position_name(&self, key: (ScopeIndex, ScopeIndex, ScopeIndex)) -> String {
        use crate::control::ScopeKind;
        let name = |kind, i: ScopeIndex| {
            self.block
                .name_at(kind, i)
                .unwrap_or_else(|| format!("#{i}"))
        };
        format!(
            "{}/{}/{}",
            name(ScopeKind::Venue, key.0),
            name(ScopeKind::Instrument, key.1),
            name(ScopeKind::Account, key.2)
        )
    }

    fn live_strategies(&self) -> Vec<String> {
        let mut l = self.strategies.lock().unwrap_or_else(|p| p.into_inner());
        l.retain(|(_, alive)| alive.strong_count() > 0);
        l.iter()
            .map(|(n, _)| n.clone())
            .filter(|n| n != FLATTEN_STRATEGY)
            .collect()
    }

    fn open_excluding(&self, kept: &[OrderId]) -> usize {
        if kept.is_empty() {
            self.registry.open_count()
        } else {
            self.registry.open_orders(|o| !kept.contains(&o.id)).len()
        }
    }

    /// Phase 5's cancels: every open order, or (option B without
    /// flattening) only the aggressive ones.
    fn cancel_open(&self, run: &mut Run<'_>) {
        let Some(g) = &self.gateway else {
            run.report
                .warnings
                .push("no gateway: nothing cancelled".into());
            return;
        };
        let sender = g.order_sender();
        let mut open = self.registry.open_orders(|_| true);
        open.sort_unstable_by_key(|o| o.id);
        let option_b = run.plan.flatten == FlattenMode::None && run.plan.keep_passive;
        let mut mids: Vec<((ScopeIndex, ScopeIndex), Option<Price>)> = Vec::new();
        for o in open {
            if option_b {
                let k = (o.tags.venue, o.tags.instrument);
                let mid = match mids.iter().find(|(mk, _)| *mk == k) {
                    Some((_, m)) => *m,
                    None => {
                        let m = run.hooks.mid(k.0, k.1);
                        mids.push((k, m));
                        m
                    }
                };
                if !run
                    .plan
                    .aggressive
                    .is_aggressive(o.side, o.price, o.tags.strategy, mid)
                {
                    run.report.kept_passive.push(o.id);
                    continue;
                }
            }
            // The ring may be full (10,000 cancels against a 4,096 ring):
            // wait for the gateway to take some, without a deadline of its
            // own (the gateway turns in microseconds; its death is checked).
            loop {
                match sender.cancel(o.id, o.tags.strategy) {
                    Ok(()) => break,
                    Err(_) if g.check().is_ok() => std::thread::sleep(Duration::from_micros(20)),
                    Err(_) => {
                        run.report
                            .warnings
                            .push(format!("gateway gone: cancel of {} not sent", o.id));
                        break;
                    }
                }
            }
            run.report.cancelled.push(o.id);
        }
    }

    /// Phase 5's flattening; returns the time spent in configured waits.
    fn flatten(&self, run: &mut Run<'_>, h: &mut StrategyHandle) -> Duration {
        let positions = self.registry.positions();
        let book_in: Vec<_> = positions
            .iter()
            .map(|(k, q)| (*k, *q, run.hooks.mid(k.0, k.1)))
            .collect();
        let mut book = FlattenBook::new(book_in);
        let cfg = run.plan.flatten_cfg.clone();
        let mut waited = Duration::ZERO;
        let stages: &[(FlattenKind, Duration)] = match run.plan.flatten {
            FlattenMode::Conservative => &[
                (FlattenKind::AtMid, cfg.conservative_wait),
                (FlattenKind::Market, cfg.market_wait),
            ],
            _ => &[(FlattenKind::Market, cfg.market_wait)],
        };
        for (n, &(kind, wait)) in stages.iter().enumerate() {
            if book.is_flat() || run.escalated {
                break;
            }
            if n > 0 {
                run.report.flatten_escalated = true;
            }
            for o in book.next_orders(kind, &cfg) {
                let intent = OrderIntent {
                    tags: ScopeTags {
                        venue: o.key.0,
                        strategy: h.strategy_index(),
                        instrument: o.key.1,
                        account: o.key.2,
                    },
                    side: o.side,
                    qty: o.qty,
                    price: o.price,
                    position: self.registry.account_position(o.key.0, o.key.1, o.key.2),
                };
                match h.submit(&intent) {
                    Ok(id) => {
                        book.sent(id, &o);
                    }
                    Err(e) => run
                        .report
                        .warnings
                        .push(format!("flatten order for {:?} not sent: {e}", o.key)),
                }
            }
            let w = Instant::now();
            let deadline = w + wait;
            while !book.is_flat() && Instant::now() < deadline && !run.tick() {
                drain_answers(h, &mut book);
            }
            drain_answers(h, &mut book);
            // The wait is over: cancel what still works, and let the
            // cancels come back (bounded by the same wait again).
            let outstanding = book.outstanding_ids();
            for &id in &outstanding {
                let _ = h.cancel(id);
            }
            let deadline = Instant::now() + wait;
            while !book.outstanding_ids().is_empty() && Instant::now() < deadline && !run.tick() {
                drain_answers(h, &mut book);
            }
            drain_answers(h, &mut book);
            waited += w.elapsed();
        }
        run.report.flatten_results = book.results();
        run.report.slippage = book.slippage();
        run.report.loss_alert = cfg.loss_alert.is_some_and(|l| book.slippage() > l);
        waited
    }

    /// Phase 7: the venues' positions against the registry's.
    fn reconcile_positions(&self, run: &mut Run<'_>) -> (Vec<ReconcileRow>, Duration) {
        let w = Instant::now();
        let Some(g) = &self.gateway else {
            return (Vec::new(), Duration::ZERO);
        };
        if let Err(e) = g.request_positions() {
            run.report
                .warnings
                .push(format!("position request not sent: {e}"));
        }
        let deadline = Instant::now() + run.plan.reconcile_wait;
        let venues = g.venue_indices();
        let done = |reports: &[crate::gateway::PositionReport]| {
            venues.iter().all(|v| {
                reports
                    .iter()
                    .any(|r| r.venue == *v && (r.complete || r.error.is_some()))
            })
        };
        let mut reports = g.position_reports();
        while !done(&reports) && Instant::now() < deadline && !run.tick() {
            reports = g.position_reports();
        }
        let answers: Vec<(ScopeIndex, VenueAnswer)> = venues
            .iter()
            .map(|&v| {
                let a = match reports.iter().find(|r| r.venue == v) {
                    Some(r) if r.complete => VenueAnswer::Positions(r.rows.clone()),
                    Some(r) => VenueAnswer::NoAnswer(
                        r.error
                            .clone()
                            .unwrap_or_else(|| "no complete report before the wait ended".into()),
                    ),
                    None => {
                        VenueAnswer::NoAnswer("not asked (gateway did not take the request)".into())
                    }
                };
                if let VenueAnswer::NoAnswer(why) = &a {
                    let name = self
                        .block
                        .name_at(crate::control::ScopeKind::Venue, v)
                        .unwrap_or_else(|| v.to_string());
                    run.report
                        .warnings
                        .push(format!("venue {name}: no position report ({why})"));
                }
                (v, a)
            })
            .collect();
        (reconcile(&self.registry.positions(), &answers), w.elapsed())
    }

    /// Phase 8: the complete checkpoint, verified.
    fn complete_checkpoint(&self, run: &mut Run<'_>) -> (PhaseResult, String) {
        let Some(dir) = run.plan.checkpoint_dir.clone() else {
            return (
                PhaseResult::Skipped,
                "no checkpoint directory configured".into(),
            );
        };
        let state = match &self.journal {
            Some(j) => match j.lock() {
                Ok(j) => j.mirror.clone(),
                Err(_) => {
                    run.report.outcome |= words::OUTCOME_CHECKPOINT_PROBLEM;
                    return (
                        PhaseResult::Failed("journal mutex poisoned".into()),
                        String::new(),
                    );
                }
            },
            None => crate::journal::TradingState::default(),
        };
        let extras = run.hooks.checkpoint_extras();
        let contents = CheckpointContents {
            state,
            config: extras
                .config
                .iter()
                .map(|(n, b)| (n.as_str(), b.as_slice()))
                .collect(),
            strategies: extras
                .strategies
                .iter()
                .map(|(n, b)| (n.as_str(), b.as_slice()))
                .collect(),
            market_data: None,
            log_tail: &extras.log_tail,
            journal_last_seq: self.journal_last_seq(),
            created_wall_ns: 0,
        };
        let target = CheckpointTarget {
            alternate_dir: run.plan.checkpoint_alternate_dir.clone(),
            ..CheckpointTarget::in_dir(dir)
        };
        match checkpoint::write_complete(&contents, &target) {
            Ok(w) => {
                let alternate_because = w
                    .fallback
                    .as_ref()
                    .map(|f| format!("{}: {}", f.primary.display(), f.error));
                let info = CheckpointInfo {
                    path: w.path.clone(),
                    crc64: w.file_crc64,
                    bytes: w.bytes,
                    verified: w.verified,
                    alternate_because: alternate_because.clone(),
                };
                run.report.checkpoint = Some(info);
                run.report.warnings.extend(w.warnings.iter().cloned());
                let detail = format!(
                    "{} ({} bytes, CRC64 0x{:016x}, {})",
                    w.path.display(),
                    w.bytes,
                    w.file_crc64,
                    if w.verified {
                        "verified OK"
                    } else {
                        "not verified"
                    }
                );
                match alternate_because {
                    Some(why) => {
                        run.report.outcome |= words::OUTCOME_CHECKPOINT_PROBLEM;
                        (
                            PhaseResult::Warning(format!(
                                "primary checkpoint directory failed ({why}): written to the alternate path"
                            )),
                            detail,
                        )
                    }
                    None => (PhaseResult::Done, detail),
                }
            }
            Err(e) => {
                run.report.outcome |= words::OUTCOME_CHECKPOINT_PROBLEM;
                (
                    PhaseResult::Failed(e.to_string()),
                    "checkpoint NOT saved".into(),
                )
            }
        }
    }

    /// Phase 10: log out of every session (explicit cancels went out in 5).
    fn disconnect_venues(&self, run: &mut Run<'_>) -> (PhaseResult, String) {
        let Some(g) = &self.gateway else {
            return (PhaseResult::Skipped, "no gateway".into());
        };
        if let Err(e) = g.logout_all() {
            return (
                PhaseResult::Failed(format!("logout not sent: {e}")),
                String::new(),
            );
        }
        let venues = g.venue_indices();
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut reports = g.position_reports();
        let all_out = |r: &[crate::gateway::PositionReport]| {
            venues.iter().all(|v| {
                r.iter()
                    .any(|x| x.venue == *v && (x.logged_out || x.error.is_some()))
            })
        };
        while !all_out(&reports) && Instant::now() < deadline && !run.tick() {
            reports = g.position_reports();
        }
        let names: Vec<String> = venues
            .iter()
            .map(|&v| {
                let name = self
                    .block
                    .name_at(crate::control::ScopeKind::Venue, v)
                    .unwrap_or_else(|| v.to_string());
                let out = reports.iter().any(|x| x.venue == v && x.logged_out);
                format!(
                    "{name} {}",
                    if out { "logged out" } else { "NOT logged out" }
                )
            })
            .collect();
        if names.iter().any(|n| n.ends_with("NOT logged out")) {
            (
                PhaseResult::Warning("a venue did not confirm its logout".into()),
                names.join(", "),
            )
        } else {
            (PhaseResult::Done, names.join(", "))
        }
    }

    /// Phase 12.
    fn verify(&self, run: &Run<'_>) -> (PhaseResult, String) {
        let mut problems = Vec::new();
        let open = self.registry.open_orders(|o| {
            !run.report.kept_passive.contains(&o.id)
                && !matches!(o.state, crate::order::OrderState::CancelUnknown)
        });
        if !open.is_empty() {
            problems.push(format!("{} order(s) still open", open.len()));
        }
        if let Some(c) = &run.report.checkpoint {
            if let Err(e) = checkpoint::validate(&c.path) {
                problems.push(format!("checkpoint invalid: {e}"));
            }
        }
        if let Some(c) = run.report.components.iter().find(|c| !c.graceful) {
            problems.push(format!("component {} was forced", c.name));
        }
        let detail = format!(
            "open orders {}, checkpoint {}, components {}",
            open.len(),
            match &run.report.checkpoint {
                Some(_) => "valid",
                None => "none",
            },
            run.report.components.len()
        );
        if problems.is_empty() {
            (PhaseResult::Done, detail)
        } else {
            (PhaseResult::Warning(problems.join("; ")), detail)
        }
    }

    /// P&L of the run at the mids: the journal's cash plus position × mid.
    fn pnl_at_mids(&self, hooks: &mut dyn ShutdownHooks) -> Option<i64> {
        let j = self.journal.as_ref()?;
        let positions: Vec<_> = j
            .lock()
            .ok()?
            .mirror
            .positions
            .clone()
            .into_iter()
            .collect();
        let mut total: i128 = 0;
        for (k, p) in positions {
            let mark = if p.qty.0 == 0 {
                Price(0)
            } else {
                hooks.mid(k.venue, k.instrument)?
            };
            total += p.cash + i128::from(p.qty.0) * i128::from(mark.0);
        }
        Some((total / i128::from(crate::order::QTY_SCALE)) as i64)
    }
}

fn drain_answers(h: &mut StrategyHandle, book: &mut FlattenBook) {
    while let Ok(Some(a)) = h.try_answer() {
        match a {
            Answer::Filled { id, qty, price, .. } => book.filled(id, qty, price),
            Answer::Canceled { id }
            | Answer::Rejected { id, .. }
            | Answer::Refused { id, .. }
            | Answer::CancelUnknown { id } => book.closed(id),
            _ => {}
        }
    }
}

fn ids(v: &[OrderId]) -> String {
    let mut s: Vec<String> = v.iter().take(20).map(|i| i.to_string()).collect();
    if v.len() > 20 {
        s.push(format!("… and {} more", v.len() - 20));
    }
    s.join(" ")
}
