//! The main loop's duties ([`Runtime::supervise`]) and the ordered stop
//! ([`Runtime::shutdown`]).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::{exit, Runtime};
use crate::control::{AuditKind, Mode, StateWord};
use crate::drain::{DrainDied, DrainError, DrainOutcome};
use crate::gateway::GatewayStats;
use crate::journal::DurableAt;
use crate::signals::ShutdownLevel;

/// How [`Runtime::supervise`] runs.
#[derive(Clone, Debug)]
pub struct SuperviseOptions {
    /// How often the loop looks (default 1 ms). Trips and drains do not
    /// wait for it: the gate, the gateway and the drain react on their own.
    pub beat: Duration,
    /// Return once a global KILL has been drained (default true); false:
    /// run until the callback of [`Runtime::supervise_with`] says stop (or
    /// a thread dies).
    pub stop_after_kill: bool,
}

impl Default for SuperviseOptions {
    fn default() -> Self {
        SuperviseOptions {
            beat: Duration::from_millis(1),
            stop_after_kill: true,
        }
    }
}

/// What the supervisor saw on one beat, for the callback of
/// [`Runtime::supervise_with`].
#[derive(Clone, Copy, Debug)]
pub struct Beat {
    /// Time since the runtime started.
    pub uptime: Duration,
    /// The state word now.
    pub state: StateWord,
    /// False while the switch is latched from before this run and no
    /// reset has been seen since.
    pub armed: bool,
    /// Drain reports collected so far by this call (scoped kills included).
    pub drains_reported: usize,
}

/// What the callback of [`Runtime::supervise_with`] wants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    /// Keep supervising.
    Continue,
    /// Return now.
    Stop,
}

/// Why [`Runtime::supervise`] returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// A global KILL was drained.
    KillDrained,
    /// A shutdown signal came while the switch was latched: nothing to drain.
    SignalledWhileLatched,
    /// The drain thread died; the runtime tripped KILL and recorded it.
    DrainDied,
    /// The gateway thread died; the runtime tripped KILL.
    GatewayDied,
    /// The callback asked to stop.
    Asked,
}

/// What happened while the runtime was supervised.
#[derive(Clone, Debug)]
pub struct Supervised {
    /// Why it returned.
    pub stopped: StopReason,
    /// Generation of the global kill drained (if one was).
    pub kill_generation: Option<u64>,
    /// Every drain's report, in order (scoped kills included).
    pub outcomes: Vec<DrainOutcome>,
    /// The start-up drain of the orders an earlier run left open.
    pub recovery: Option<DrainOutcome>,
    /// Why the drain thread died, if it did.
    pub drain_died: Option<DrainDied>,
    /// Why the gateway thread died, if it did.
    pub gateway_died: Option<String>,
    /// Journal errors met by the supervisor (journaling trips, snapshots,
    /// durability marks); each also tripped nothing by itself.
    pub journal_errors: Vec<String>,
    /// Quick checkpoints taken by the snapshot policy (journal sequences).
    pub policy_snapshots: Vec<u64>,
}

impl Supervised {
    /// The drain of the global kill, if one was drained.
    pub fn kill_drain(&self) -> Option<&DrainOutcome> {
        let g = self.kill_generation?;
        self.outcomes
            .iter()
            .find(|o| o.global && o.last_generation >= g)
    }

    /// The process exit code and a one-line verdict: [`exit::DRAIN_DIED`],
    /// [`exit::GATEWAY_DIED`], [`exit::DRAIN_FAILED`] (the gateway's
    /// acknowledgement late or never), [`exit::CHECKPOINT_FAILED`],
    /// [`exit::ORDERS_UNKNOWN`] (this run's, or an earlier run's orders the
    /// start-up recovery could not confirm), else [`exit::OK`].
    pub fn verdict(&self) -> (i32, String) {
        let (code, verdict) = match (&self.drain_died, &self.gateway_died, self.kill_drain()) {
            (Some(d), _, _) => (exit::DRAIN_DIED, format!("DRAIN THREAD DIED: {d}")),
            (None, Some(g), _) => (exit::GATEWAY_DIED, format!("GATEWAY THREAD DIED: {g}")),
            (None, None, None) => (
                exit::OK,
                match self.stopped {
                    StopReason::Asked => "stopped on request, no kill drained".to_string(),
                    _ => "stopped without a kill to drain (the switch was latched)".to_string(),
                },
            ),
            (None, None, Some(o)) => match &o.error {
                Some(
                    e @ (DrainError::GatewayAckLate { .. } | DrainError::StoppedBeforeAck { .. }),
                ) => (exit::DRAIN_FAILED, format!("DRAIN FAILED: {e}")),
                Some(DrainError::CheckpointFailed(e)) => {
                    (exit::CHECKPOINT_FAILED, format!("CHECKPOINT FAILED: {e}"))
                }
                None if !o.unknown.is_empty() => (
                    exit::ORDERS_UNKNOWN,
                    format!(
                        "drained with {} order(s) in CancelUnknown: reconcile with the venue",
                        o.unknown.len()
                    ),
                ),
                None => (
                    exit::OK,
                    format!(
                        "drained: {} orders confirmed, quick checkpoint seq {:?}",
                        o.confirmed(),
                        o.checkpoint_seq
                    ),
                ),
            },
        };
        // Orders an earlier run left open that the start-up recovery could
        // not get confirmed are as unknown as any other.
        let recovered_unknown = self.recovery.as_ref().map_or(0, |r| r.unknown.len());
        if recovered_unknown > 0 {
            (
                if code == exit::OK {
                    exit::ORDERS_UNKNOWN
                } else {
                    code
                },
                format!(
                    "{verdict}; {recovered_unknown} order(s) an earlier run left open are CancelUnknown after the start-up recovery: reconcile with the venue"
                ),
            )
        } else {
            (code, verdict)
        }
    }

    /// The process exit code alone (see [`Supervised::verdict`]).
    pub fn exit_code(&self) -> i32 {
        self.verdict().0
    }
}

/// What [`Runtime::shutdown`] did.
#[derive(Clone, Debug)]
pub struct ShutdownReport {
    /// Strategies whose handles were still alive at the deadline (their
    /// threads did not stop); empty when all stopped.
    pub strategies_still_running: Vec<String>,
    /// The gateway's final counters, or why it did not stop cleanly.
    pub gateway: Result<GatewayStats, String>,
    /// The drain thread's stop (`Err`: it had panicked).
    pub drain: Result<(), String>,
    /// The journal's final sync (`None`: no journal, or it was closed for
    /// a successor instead).
    pub durable: Option<Result<DurableAt, String>>,
    /// After a hand-over: the journal was closed for the successor at this
    /// end, not synced (the successor makes it durable).
    pub closed_for_successor: Option<crate::journal::JournalEnd>,
    /// The journal's last sequence after the sync (0: no journal).
    pub journal_last_seq: u64,
    /// Order events not journaled because they came after the journal
    /// was closed for the successor: always 0 unless the stop order is
    /// broken (a bug; see [`Runtime::events_not_journaled_after_close`],
    /// which keeps counting after this report).
    pub events_not_journaled_after_close: u64,
    /// The shutdown level the signal handlers had asked for.
    pub signal_level: ShutdownLevel,
}

impl Runtime {
    /// The main loop: every `beat` it publishes the open-order count,
    /// journals new trips and resets from the control block's audit ring,
    /// re-arms after a reset, applies the snapshot policy (quick checkpoint
    /// on this thread, not the gateway's), evaluates the automatic rules
    /// and the execution throttle every rule interval (warnings audited,
    /// trips with source `auto`, gauges published), marks journal durability,
    /// prepares the next journal segment, collects the drain's reports,
    /// and notices a dead drain or gateway thread (then it trips KILL,
    /// records it, and returns). Returns once a global KILL that came while
    /// armed has been drained, or a shutdown signal came while latched.
    ///
    /// The heartbeat the watchdog reads is written by the gateway thread
    /// (the thread whose stall matters), not here.
    pub fn supervise(&mut self, opts: SuperviseOptions) -> Supervised {
        self.supervise_with(opts, |_| Flow::Continue)
    }

    /// [`Runtime::supervise`], calling `on_beat` on every beat (the
    /// engine's own duties: fault injection, its own timers).
    pub fn supervise_with(
        &mut self,
        opts: SuperviseOptions,
        mut on_beat: impl FnMut(&Beat) -> Flow,
    ) -> Supervised {
        let beat = opts.beat.max(Duration::from_micros(100));
        // A KILL counts once the engine has traded since the last one: not
        // while latched from an earlier run until a reset is seen.
        let mut armed = !self.latched_at_start;
        let mut out = Supervised {
            stopped: StopReason::Asked,
            kill_generation: None,
            outcomes: Vec::new(),
            recovery: self.recovery.clone(),
            drain_died: None,
            gateway_died: None,
            journal_errors: Vec::new(),
            policy_snapshots: Vec::new(),
        };
        let mut last_generation = self.start_generation;
        loop {
            if let Some(owner) = &self.owner {
                owner.publish_open_orders(self.registry.open_count() as u64);
            }
            let w = self.block.state();
            if w.generation() != last_generation {
                last_generation = w.generation();
                self.journal_switch_events(&mut out);
                // A reset since start re-arms, even if a new trip landed
                // before this loop looked.
                let start = self.start_generation;
                let reset_seen = !w.is_active()
                    || self
                        .block
                        .audit()
                        .iter()
                        .any(|e| e.kind == AuditKind::Reset && e.generation > start);
                if reset_seen && !armed {
                    armed = true;
                }
            }
            if armed && w.mode() == Mode::Kill && out.kill_generation.is_none() {
                out.kill_generation = Some(w.generation());
            }
            self.journal_duties(&mut out);
            self.rule_duties();
            if let Some(d) = &self.drain {
                loop {
                    match d.try_outcome() {
                        Ok(Some(o)) => out.outcomes.push(o),
                        Ok(None) => break,
                        Err(died) => {
                            if let Some(owner) = &self.owner {
                                owner.report_drain_died(
                                    self.registry.open_count() as u64,
                                    &died.why,
                                );
                            }
                            out.drain_died = Some(died);
                            out.stopped = StopReason::DrainDied;
                            return out;
                        }
                    }
                }
            }
            if let Some(g) = &self.gateway {
                if let Err(why) = g.check() {
                    self.tripper.trip_global(
                        Mode::Kill,
                        crate::control::Source::Api,
                        &format!("gateway thread died: {why}"),
                    );
                    out.gateway_died = Some(why);
                    out.stopped = StopReason::GatewayDied;
                    return out;
                }
            }
            if let Some(g) = out.kill_generation {
                if opts.stop_after_kill
                    && out
                        .outcomes
                        .iter()
                        .any(|o| o.global && o.last_generation >= g)
                {
                    out.stopped = StopReason::KillDrained;
                    return out;
                }
            }
            if self.signal_level() != ShutdownLevel::None && !armed {
                // The word was read before the journal duties above: a
                // reset (and then the signal's own trip) may have landed
                // since. Look again before calling the engine latched.
                if self.block.state().generation() != last_generation {
                    continue;
                }
                out.stopped = StopReason::SignalledWhileLatched;
                return out;
            }
            let b = Beat {
                uptime: self.started.elapsed(),
                state: w,
                armed,
                drains_reported: out.outcomes.len(),
            };
            if on_beat(&b) == Flow::Stop {
                out.stopped = StopReason::Asked;
                return out;
            }
            std::thread::sleep(beat);
        }
    }

    fn journal_switch_events(&self, out: &mut Supervised) {
        if let Some(j) = &self.journal {
            match j.lock() {
                Ok(mut j) => {
                    if let Err(e) = j.append_switch_events(&self.block) {
                        out.journal_errors.push(e);
                    }
                }
                Err(_) => out.journal_errors.push("journal mutex poisoned".into()),
            }
        }
    }

    /// Durability marks, the next segment, and the snapshot policy.
    fn journal_duties(&self, out: &mut Supervised) {
        let Some(j) = &self.journal else {
            return;
        };
        let Ok(mut j) = j.lock() else {
            return;
        };
        if let Err(e) = j.writer.poll_durable() {
            out.journal_errors.push(e.to_string());
        }
        if let Err(e) = j.writer.prepare_next_segment() {
            out.journal_errors.push(e.to_string());
        }
        if self.snapshot_policy.due(j.writer.since_snapshot()) {
            match j.quick_checkpoint(&self.block) {
                Ok(seq) => out.policy_snapshots.push(seq),
                Err(e) => out.journal_errors.push(e),
            }
        }
    }

    /// Stops in order: asks the strategies to stop and waits (2 s) for
    /// every [`StrategyHandle`](super::StrategyHandle) to be dropped, then
    /// the gateway (one last turn: late answers are applied), the drain,
    /// the journal (trips and resets journaled, synced), the signal
    /// handlers (previous dispositions back), and detaches from the block.
    /// Idempotent: a second call returns the first's report.
    pub fn shutdown(&mut self) -> ShutdownReport {
        self.shutdown_with(Duration::from_secs(2))
    }

    /// [`Runtime::shutdown`] with the time given to strategies to stop.
    pub fn shutdown_with(&mut self, strategies_deadline: Duration) -> ShutdownReport {
        if let Some(r) = &self.stopped {
            return r.clone();
        }
        self.stop.store(true, Ordering::Release);
        let end = Instant::now() + strategies_deadline;
        let still_running = loop {
            let live: Vec<String> = {
                let mut l = self.strategies.lock().unwrap_or_else(|p| p.into_inner());
                l.retain(|(_, alive)| alive.strong_count() > 0);
                l.iter().map(|(n, _)| n.clone()).collect()
            };
            if live.is_empty() || Instant::now() >= end {
                break live;
            }
            // Short: after a failover's hand-over the successor waits
            // for this stop (the journal's lock) with the venues idle.
            std::thread::sleep(Duration::from_micros(100));
        };
        let gateway = match self.gateway.take() {
            Some(g) => g.shutdown(),
            None => Err("the gateway was already stopped".into()),
        };
        let drain = match self.drain.take() {
            Some(d) => d.shutdown(),
            None => Ok(()),
        };
        let mut closed_for_successor = None;
        let durable = self.journal.as_ref().and_then(|j| match j.lock() {
            Ok(mut j) => {
                let _ = j.append_switch_events(&self.block);
                if self.handed_over() {
                    // The successor waits for this lock with the venues
                    // handed over: no msync here (~15 ms of write-back on
                    // the failover's critical path). The records stay in
                    // the page cache both processes map, and the successor
                    // msyncs them in the background as soon as it opens
                    // (see `journal::writer::handoff`).
                    match j.writer.close_for_successor() {
                        Ok(end) => {
                            closed_for_successor = Some(end);
                            None
                        }
                        Err(e) => Some(Err(e.to_string())),
                    }
                } else {
                    Some(j.writer.sync().map_err(|e| e.to_string()))
                }
            }
            Err(_) => Some(Err("journal mutex poisoned".into())),
        });
        let journal_last_seq = self.journal_last_seq();
        let signal_level = self.signal_level();
        // Signal dispositions back before the block is let go: a late
        // SIGTERM now terminates as it would without an engine.
        self.signals = None;
        self.owner = None;
        let report = ShutdownReport {
            strategies_still_running: still_running,
            gateway,
            drain,
            durable,
            closed_for_successor,
            journal_last_seq,
            events_not_journaled_after_close: self.events_not_journaled_after_close(),
            signal_level,
        };
        self.stopped = Some(report.clone());
        report
    }
}
