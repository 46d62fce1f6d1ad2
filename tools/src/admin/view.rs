//! One read of everything an operator looks at: the switch ([`Status`]),
//! the engine's telemetry, the kill path's timings and the recent audit
//! entries. `/api/status`, `/metrics`, `killswitch status` and
//! `killswitch watch` all show this, so they never disagree.

use killswitch::clock::{mono_ns, wall_ns};
use killswitch::control::telemetry::TelemetrySnapshot;
use killswitch::control::{AuditEntry, ControlBlock, Status};
use serde::Serialize;

/// The kill path as the drain published it: trip -> gateway
/// acknowledgement -> last cancel confirmed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct KillPath {
    /// Trip -> the gateway acknowledged the generation (ns), once known.
    pub trip_to_gateway_ack_ns: Option<u64>,
    /// Trip -> the first cancel on its way (ns).
    pub trip_to_first_cancel_ns: Option<u64>,
    /// Trip -> the last open order confirmed terminal or reported unknown (ns).
    pub trip_to_last_cancel_ack_ns: Option<u64>,
    /// Trip -> drain done (ns).
    pub trip_to_done_ns: Option<u64>,
}

/// Everything shown about one engine, read at one moment.
#[derive(Clone, Debug, Serialize)]
pub struct EngineView {
    /// When this was read, Unix ns.
    pub read_wall_ns: u64,
    /// When this was read, `CLOCK_MONOTONIC` ns (ages are measured from it).
    pub read_mono_ns: u64,
    /// The switch, the drain, the "drain incomplete" record.
    #[serde(flatten)]
    pub status: Status,
    /// While true, only the risk role may reset (a trip by risk or by an
    /// automatic rule is in force).
    pub reset_needs_risk_role: bool,
    /// The kill path's timings of the last drain.
    pub kill_path: KillPath,
    /// What the engine publishes about itself.
    pub telemetry: TelemetrySnapshot,
    /// Milliseconds since the engine last published its telemetry.
    pub telemetry_age_ms: Option<f64>,
    /// The newest audit entries, oldest first (at most 16).
    pub recent_actions: Vec<AuditEntry>,
    /// The automatic rules that are configured: how close each is to its
    /// limit, the warning grade it holds, whether it tripped.
    pub rules: Vec<RuleStatus>,
    /// The planned shutdown's marks in the block: its progress, the
    /// deployment lock, a reconciliation mismatch awaiting acknowledgement.
    pub planned_shutdown: PlannedShutdownView,
}

/// What the block says of the planned shutdown (`killswitch shutdown`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PlannedShutdownView {
    /// The step running, or the last one run (1..=13); none if no planned
    /// shutdown ever ran on this block.
    pub step: Option<u8>,
    /// Its title.
    pub step_title: Option<&'static str>,
    /// `running` or `finished`.
    pub state: Option<&'static str>,
    /// When the step started, Unix ns.
    pub step_since_wall_ns: Option<u64>,
    /// The request served (the engine's own id for a signal: 65535).
    pub request: Option<u16>,
    /// Once finished: true when every step completed with nothing left.
    pub clean: Option<bool>,
    /// Deployments and configuration changes are locked.
    pub locked: bool,
    /// By this process.
    pub locked_by_pid: Option<u32>,
    /// The last reconciliation found a mismatch, not yet acknowledged
    /// (`killswitch reconcile --ack`); reset is refused until then.
    pub reconcile_mismatch: bool,
}

impl PlannedShutdownView {
    /// Reads the block's words.
    pub fn read(block: &ControlBlock) -> PlannedShutdownView {
        use killswitch::shutdown::words::{self, PhaseState};
        let flags = words::change_flags(block);
        let p = words::progress(block);
        let phase = p.and_then(|p| killswitch::shutdown::Phase::from_number(p.phase));
        PlannedShutdownView {
            step: p.map(|p| p.phase),
            step_title: phase.map(|ph| ph.title()),
            state: p.map(|p| match p.state {
                PhaseState::Running => "running",
                PhaseState::Finished => "finished",
            }),
            step_since_wall_ns: p.map(|p| p.phase_since_wall_ns),
            request: p.map(|p| p.nonce),
            clean: p
                .filter(|p| p.state == PhaseState::Finished)
                .map(|p| p.outcome & words::OUTCOME_CLEAN != 0),
            locked: flags.locked,
            locked_by_pid: flags.locked.then_some(flags.locked_by_pid),
            reconcile_mismatch: flags.reconcile_mismatch,
        }
    }
}

/// One automatic rule's gauge, by name.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct RuleStatus {
    /// The rule (`trailing-loss`, `reject-rate`, ...).
    pub rule: &'static str,
    /// Its gauge.
    #[serde(flatten)]
    pub gauge: killswitch::rules::RuleGauge,
}

/// `t - t0` when both happened. The trip's time is read by the tripper just
/// after its compare-and-swap, so a step of a fast drain on another core can
/// carry an earlier time: that is 0, not "not yet".
fn since(t0: u64, t: u64) -> Option<u64> {
    (t0 != 0 && t != 0).then(|| t.saturating_sub(t0))
}

impl EngineView {
    /// Reads a block.
    pub fn read(block: &ControlBlock) -> EngineView {
        let status = Status::read(block);
        let telemetry = TelemetrySnapshot::read(block);
        let d = &status.drain;
        // The drain copies the trip's time from its audit record; a record
        // written after the drain looked (a tripper descheduled between its
        // compare-and-swap and the record) is read here instead.
        let t_trip = if d.t_trip != 0 {
            d.t_trip
        } else {
            block
                .audit()
                .iter()
                .rev()
                .find(|e| {
                    e.kind == killswitch::control::AuditKind::Trip && e.generation == d.generation
                })
                .map_or(0, |e| e.mono_ns)
        };
        let kill_path = KillPath {
            trip_to_gateway_ack_ns: since(t_trip, d.t_gateway_ack),
            trip_to_first_cancel_ns: since(t_trip, d.t_first_cancel),
            trip_to_last_cancel_ack_ns: since(t_trip, d.t_last_ack),
            trip_to_done_ns: since(t_trip, d.t_done),
        };
        let now = mono_ns();
        let telemetry_age_ms = telemetry
            .engine
            .filter(|e| e.publish_mono_ns != 0)
            .map(|e| now.saturating_sub(e.publish_mono_ns) as f64 / 1e6);
        let mut recent_actions = block.audit();
        let keep = recent_actions.len().saturating_sub(16);
        recent_actions.drain(..keep);
        EngineView {
            read_wall_ns: wall_ns(),
            read_mono_ns: now,
            reset_needs_risk_role: block.risk_hold() && block.state().is_active(),
            status,
            kill_path,
            telemetry,
            telemetry_age_ms,
            recent_actions,
            rules: killswitch::rules::Rule::ALL
                .into_iter()
                .zip(killswitch::rules::read_gauges(block))
                .filter(|(_, g)| g.configured)
                .map(|(r, gauge)| RuleStatus {
                    rule: r.as_str(),
                    gauge,
                })
                .collect(),
            planned_shutdown: PlannedShutdownView::read(block),
        }
    }

    /// True while a shutdown or a drain is under way: the engine says so,
    /// or its drain runs.
    pub fn shutdown_in_progress(&self) -> bool {
        self.telemetry
            .engine
            .is_some_and(|e| e.status.is_shutting_down())
            || self.status.drain.phase.is_running()
    }

    /// When the shutdown or drain under way started, Unix ns: the engine's
    /// status change, else the drain's trip time.
    pub fn shutdown_started_wall_ns(&self) -> Option<u64> {
        if let Some(e) = self
            .telemetry
            .engine
            .filter(|e| e.status.is_shutting_down())
        {
            return Some(e.status_since_wall_ns);
        }
        let d = &self.status.drain;
        (d.phase.is_running() && d.t_trip != 0).then(|| {
            self.read_wall_ns
                .saturating_sub(self.read_mono_ns.saturating_sub(d.t_trip))
        })
    }

    /// Seconds open orders have stayed above zero since the shutdown or
    /// drain under way started (0 when none runs or none is open): the
    /// runbook alerts past 60 s.
    pub fn open_orders_stuck_s(&self) -> f64 {
        let (Some(start), Some(e)) = (self.shutdown_started_wall_ns(), self.telemetry.engine)
        else {
            return 0.0;
        };
        if e.open_orders == 0 || e.open_orders_nonzero_since_wall_ns == 0 {
            return 0.0;
        }
        let from = start.max(e.open_orders_nonzero_since_wall_ns);
        self.read_wall_ns.saturating_sub(from) as f64 / 1e9
    }
}
