//! The reference engine: how an engine links `killswitch`. It is what
//! `ks-engine` runs and what `killswitch drill` starts as a child process.
//!
//! Start-up, in order (see [`Engine::start`]):
//! 1. open (or create) the control block and attach as its owner; a latched
//!    KILL from an earlier run stays in force until `killswitch reset`;
//! 2. install the signal handlers and the panic hook (they trip the state
//!    word themselves, see [`killswitch::signals`]);
//! 3. open the journal (recovering a torn tail) and rebuild its state; the
//!    orders it shows open (an earlier run crashed with them working) are
//!    adopted into the registry as `Recovered`
//!    ([`Registry::adopt_recovered`]);
//! 4. register venue / strategy / instrument / account names, start the
//!    simulated venues, the gateway, the drain (whose quick checkpoint goes
//!    into the journal); the drain first cancels the recovered orders (or
//!    reports them `CancelUnknown` by id) while the gateway takes no new
//!    order; only then are the strategy threads started.
//!
//! Then [`Engine::run`] heartbeats, journals trips, and waits. A global KILL
//! (from `killswitch trip` / `emergency`, a signal, a panic, the watchdog,
//! or `trade_for_ms`) is drained by the drain thread; once the drain reports,
//! the engine waits (briefly) until the gate has refused an order from every
//! strategy still running, stops its threads, syncs the journal, writes its
//! report and returns an exit code. HALT_NEW, REDUCE_ONLY and scoped kills
//! do not stop the engine: the gate refuses what they forbid and trading
//! goes on. If the drain thread dies, nothing would cancel on a trip: the
//! engine trips KILL (if not tripped), records it in the control block,
//! reports it and exits [`EXIT_DRAIN_DIED`].

pub mod cli;
pub mod config;
mod journal_sink;
mod report;
mod strategy;
pub mod telemetry;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use killswitch::clock::wall_ns;
use killswitch::control::{
    default_dir, proc_start_ticks, ControlBlock, ControlError, DrainIncomplete, DrainPhase,
    IncompleteWriter, Mode, ScopeKind, Source,
};
use killswitch::drain::{Drain, DrainConfig, DrainDied, DrainHandle, DrainOutcome};
use killswitch::gateway::{Gateway, GatewayConfig, GatewayHandle};
use killswitch::journal::{self, JournalConfig, JournalError, JournalWriter};
use killswitch::order::{ScopeTags, PRICE_SCALE};
use killswitch::registry::{RecoveredOrder, Registry};
use killswitch::signals::{self, ShutdownLevel, SignalConfig, SignalGuard};
use killswitch::venue::sim::{FlowConfig, SimConfig, SimHandle, SimInstrument, SimVenue};
use killswitch::venue::Venue;

pub use config::EngineConfig;
pub use journal_sink::{JournalSink, JournalState, SharedJournal};
pub use report::{EngineReport, Verification};
pub use strategy::{StrategyProgress, StrategyStats};

/// Exit code: clean (drained, checkpointed, nothing unknown).
pub const EXIT_OK: i32 = 0;
/// Exit code: start-up failed.
pub const EXIT_START_FAILED: i32 = 2;
/// Exit code: the control file or the journal is damaged, of another
/// version, or not ours (owner or mode): the engine refuses to start on it.
pub const EXIT_BAD_FILE: i32 = 3;

/// Why the engine did not start, and the exit code that says so.
#[derive(Debug)]
pub struct StartError {
    /// [`EXIT_START_FAILED`] or [`EXIT_BAD_FILE`].
    pub exit_code: i32,
    /// What went wrong and what to do.
    pub message: String,
}

impl From<String> for StartError {
    fn from(message: String) -> StartError {
        StartError {
            exit_code: EXIT_START_FAILED,
            message,
        }
    }
}

impl From<&str> for StartError {
    fn from(message: &str) -> StartError {
        StartError::from(message.to_string())
    }
}

impl From<ControlError> for StartError {
    fn from(e: ControlError) -> StartError {
        let exit_code = match e {
            ControlError::Io { .. } => EXIT_START_FAILED,
            _ => EXIT_BAD_FILE,
        };
        StartError {
            exit_code,
            message: e.to_string(),
        }
    }
}

impl From<JournalError> for StartError {
    fn from(e: JournalError) -> StartError {
        let exit_code = match e {
            JournalError::NeedsRecovery { .. }
            | JournalError::NotOurs { .. }
            | JournalError::BadSegment { .. }
            | JournalError::Corrupt { .. } => EXIT_BAD_FILE,
            _ => EXIT_START_FAILED,
        };
        StartError {
            exit_code,
            message: e.to_string(),
        }
    }
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}
/// Exit code: the drain failed (gateway did not acknowledge the kill).
pub const EXIT_DRAIN_FAILED: i32 = 10;
/// Exit code: orders left in `CancelUnknown`.
pub const EXIT_ORDERS_UNKNOWN: i32 = 11;
/// Exit code: the quick checkpoint failed.
pub const EXIT_CHECKPOINT_FAILED: i32 = 12;
/// Exit code: the drain thread died (panicked or ended): nothing cancels
/// orders on a trip any more.
pub const EXIT_DRAIN_DIED: i32 = 14;

struct Sim {
    name: String,
    handle: SimHandle,
    disconnect_after: Option<Duration>,
    hang_after: Option<Duration>,
}

/// A running reference engine.
pub struct Engine {
    cfg: EngineConfig,
    block: Arc<ControlBlock>,
    registry: Arc<Registry>,
    journal: SharedJournal,
    gateway: Option<GatewayHandle>,
    drain: Option<DrainHandle>,
    sims: Vec<Sim>,
    strategies: Vec<JoinHandle<StrategyStats>>,
    progress: Vec<Arc<StrategyProgress>>,
    stop_strategies: Arc<AtomicBool>,
    /// The start-up drain of the orders an earlier run left open.
    recovery: Option<DrainOutcome>,
    signals: SignalGuard,
    started: Instant,
    /// Generation of the state word when the engine started.
    start_generation: u64,
    recovery_note: String,
}

impl Engine {
    /// Starts everything; see the module docs.
    pub fn start(cfg: EngineConfig) -> Result<Engine, StartError> {
        cfg.validate()?;
        let dir = cfg.control_dir.clone().unwrap_or_else(default_dir);
        let access = killswitch::access::access_for_group(cfg.control_group.as_deref())?;
        let block = Arc::new(ControlBlock::open_or_create_with(&dir, &cfg.name, access)?);
        block.attach_owner()?;
        let signals = signals::install(block.clone(), &SignalConfig::default())
            .map_err(|e| format!("signal handlers: {e}"))?;
        signals::install_panic_hook(block.clone());

        let (writer, recovery) = JournalWriter::open(
            &cfg.journal_dir,
            JournalConfig {
                access,
                ..JournalConfig::default()
            },
        )?;
        // From the newest quick checkpoint on, not every record since the
        // journal began (`journal inspect` does that, and checks every CRC).
        let rebuilt = journal::rebuild_from(&cfg.journal_dir, writer.last_snapshot())?;
        let recovery_note = format!(
            "journal {}: {} records replayed {}, {} torn-tail cut(s), {} open orders and {} positions rebuilt",
            cfg.journal_dir.display(),
            rebuilt.scan.records,
            match rebuilt.from_snapshot {
                Some(s) => format!("from the quick checkpoint at seq {}", s.seq),
                None => "from the first record".to_string(),
            },
            recovery.scan.dropped.len(),
            rebuilt.state.open_orders.len(),
            rebuilt.state.positions.len()
        );
        let mut mirror = rebuilt.state;
        let first_order_id = mirror.max_order_id.0 + 1;
        let journaled_until = [&mirror.last_trip, &mirror.last_reset]
            .iter()
            .filter_map(|r| r.as_ref().map(|r| r.wall_ns))
            .max()
            .unwrap_or(0);
        let audit_ticket = block
            .audit()
            .iter()
            .filter(|e| e.wall_ns <= journaled_until)
            .map(|e| e.ticket)
            .max();
        mirror.last_seq = writer.next_seq().saturating_sub(1);
        let journal: SharedJournal = Arc::new(Mutex::new(JournalState {
            writer,
            mirror,
            audit_ticket,
        }));
        let registry = Arc::new(Registry::with_sink(Box::new(JournalSink::new(
            journal.clone(),
            block.clone(),
        ))));
        // What the journal shows open may still work at a venue: the drain
        // cancels it (or reports it) before any new order goes out.
        let recovered = {
            let j = journal.lock().map_err(|_| "journal mutex poisoned")?;
            let open: Vec<RecoveredOrder> = j
                .mirror
                .open_orders
                .values()
                .map(RecoveredOrder::from)
                .collect();
            drop(j);
            registry
                .adopt_recovered(open)
                .map_err(|e| format!("adopting the journal's open orders: {e}"))?
        };

        // Venues.
        let reg = |kind, name: &str| block.register_name(kind, name).map_err(|e| e.to_string());
        let mut sessions: Vec<(u16, Box<dyn Venue>)> = Vec::new();
        let mut sims = Vec::new();
        for v in &cfg.venues {
            let index = reg(ScopeKind::Venue, &v.name)?;
            let mut instruments = Vec::new();
            for i in &v.instruments {
                instruments.push(SimInstrument {
                    index: reg(ScopeKind::Instrument, i)?,
                    mid: strategy::MID,
                    tick: killswitch::order::Price(PRICE_SCALE / 100),
                });
            }
            let flow = if v.flow_interval_us == 0 {
                FlowConfig::off()
            } else {
                FlowConfig {
                    interval_ns: v.flow_interval_us * 1000,
                    ..FlowConfig::default()
                }
            };
            let (venue, handle) = SimVenue::new(SimConfig {
                name: v.name.clone(),
                instruments,
                seed: v.seed,
                flow,
                mass_cancel: v.mass_cancel,
                event_latency: Duration::from_micros(v.ack_latency_us),
                reject_ppm: v.reject_ppm,
                cancel_on_disconnect: v.cancel_on_disconnect,
            });
            handle.set_ignore_cancels(v.ignore_cancels);
            handle.set_drop_cancel_ack_ppm(v.drop_cancel_ack_ppm);
            sessions.push((index, Box::new(venue)));
            sims.push(Sim {
                name: v.name.clone(),
                handle,
                disconnect_after: v.disconnect_after_ms.map(Duration::from_millis),
                hang_after: v.hang_after_ms.map(Duration::from_millis),
            });
        }

        let mut gateway = Gateway::spawn(
            block.clone(),
            registry.clone(),
            sessions,
            GatewayConfig {
                core: cfg.gateway_core,
                first_order_id,
                ..GatewayConfig::default()
            },
        )
        .map_err(|e| format!("gateway thread: {e}"))?;
        let link = gateway
            .take_drain_link()
            .ok_or("gateway has no drain link")?;
        let drain = Drain::spawn(
            block.clone(),
            link,
            DrainConfig {
                core: cfg.drain_core,
                gateway_ack_deadline: Duration::from_millis(cfg.drain.gateway_ack_deadline_ms),
                cancel_deadline: Duration::from_millis(cfg.drain.cancel_deadline_ms),
                use_mass_cancel: cfg.drain.mass_cancel,
                ..DrainConfig::emergency()
            },
            Some(journal_sink::checkpoint_hook(
                journal.clone(),
                block.clone(),
                cfg.drain.inject_checkpoint_panic,
            )),
        )
        .map_err(|e| format!("drain thread: {e}"))?;
        let recovery = if recovered > 0 {
            eprintln!(
                "ks-engine: {recovered} order(s) the journal shows open (an earlier run left them): cancelling them before any new order"
            );
            let deadline = Duration::from_millis(
                cfg.drain.cancel_deadline_ms + cfg.drain.gateway_ack_deadline_ms,
            ) + Duration::from_secs(30);
            let out = drain
                .wait_outcome(deadline)
                .map_err(|e| format!("start-up recovery of the journal's open orders: {e}"))?;
            eprintln!(
                "ks-engine: start-up recovery: {} cancelled, {} filled, {} rejected, {} CancelUnknown{}",
                out.canceled.len(),
                out.filled.len(),
                out.rejected.len(),
                out.unknown.len(),
                out.unknown
                    .iter()
                    .take(20)
                    .map(|u| format!(" {}", u.id))
                    .collect::<String>()
            );
            Some(out)
        } else {
            None
        };

        let stop_strategies = Arc::new(AtomicBool::new(false));
        let mut strategies = Vec::new();
        let mut progress = Vec::new();
        for (n, s) in cfg.strategies.iter().enumerate() {
            let tags = ScopeTags {
                venue: reg(ScopeKind::Venue, &s.venue)?,
                strategy: reg(ScopeKind::Strategy, &s.name)?,
                instrument: reg(ScopeKind::Instrument, &s.instrument)?,
                account: reg(ScopeKind::Account, &s.account)?,
            };
            let (s, sender, registry, stop) = (
                s.clone(),
                gateway.order_sender(),
                registry.clone(),
                stop_strategies.clone(),
            );
            let name = format!("ks-strategy-{}", s.name);
            let seed = 1000 + n as u64;
            let p = Arc::new(StrategyProgress::default());
            progress.push(p.clone());
            strategies.push(
                std::thread::Builder::new()
                    .name(name)
                    .spawn(move || strategy::run(s, tags, sender, registry, stop, p, seed))
                    .map_err(|e| format!("strategy thread: {e}"))?,
            );
        }
        let start_generation = block.state().generation();
        Ok(Engine {
            cfg,
            block,
            registry,
            journal,
            gateway: Some(gateway),
            drain: Some(drain),
            sims,
            strategies,
            progress,
            stop_strategies,
            recovery,
            signals,
            started: Instant::now(),
            start_generation,
            recovery_note,
        })
    }

    /// The control block.
    pub fn block(&self) -> &Arc<ControlBlock> {
        &self.block
    }

    /// What journal recovery found at start-up.
    pub fn recovery_note(&self) -> &str {
        &self.recovery_note
    }

    /// Runs until a global KILL has been drained; returns the report.
    pub fn run(self) -> EngineReport {
        let beat = Duration::from_micros(self.cfg.heartbeat_us.max(100));
        let latched_at_start = self.block.state().mode() == Mode::Kill;
        if latched_at_start {
            let t = self.block.last_trip();
            eprintln!(
                "ks-engine: the switch is LATCHED at KILL{}: not trading until `killswitch reset --confirm`",
                t.map(|t| format!(" (\"{}\", by {} pid {})", t.reason, t.source.as_str(), t.pid)).unwrap_or_default()
            );
        }
        // A KILL counts once the engine has traded since the last one.
        let mut armed = !latched_at_start;
        let mut kill_generation = None;
        let mut outcomes: Vec<DrainOutcome> = Vec::new();
        let mut disconnected = vec![false; self.sims.len()];
        let mut hung = vec![false; self.sims.len()];
        let mut last_generation = self.start_generation;
        let open = &self.block.gateway_status().open_orders;
        let mut tripped_by_timer = false;
        let mut telemetry = telemetry::Publisher::new(&self);
        loop {
            // (The heartbeat is written by the gateway thread; see killswitch::watchdog.)
            open.store(self.registry.open_count() as u64, Ordering::Relaxed);
            let w = self.block.state();
            if w.generation() != last_generation {
                last_generation = w.generation();
                if let Ok(mut j) = self.journal.lock() {
                    if let Err(e) = j.append_switch_events(&self.block) {
                        eprintln!("ks-engine: journal: {e}");
                    }
                }
                // A reset since start re-arms the engine, even if a new trip
                // landed before this loop looked (strategies resume at once
                // through the gate; this loop wakes every heartbeat).
                let start = self.start_generation;
                let reset_seen = !w.is_active()
                    || self.block.audit().iter().any(|e| {
                        e.kind == killswitch::control::AuditKind::Reset && e.generation > start
                    });
                if reset_seen && !armed {
                    eprintln!("ks-engine: switch reset: trading resumes");
                    armed = true;
                }
            }
            if armed && w.mode() == Mode::Kill && kill_generation.is_none() {
                kill_generation = Some(w.generation());
            }
            let elapsed = self.started.elapsed();
            for (i, s) in self.sims.iter().enumerate() {
                if !hung[i] && s.hang_after.is_some_and(|d| elapsed >= d) {
                    eprintln!(
                        "ks-engine: venue {} session hangs on every write (fault injection)",
                        s.name
                    );
                    s.handle.set_hang_writes(true);
                    hung[i] = true;
                }
                if !disconnected[i] && s.disconnect_after.is_some_and(|d| elapsed >= d) {
                    eprintln!("ks-engine: venue {} disconnects (fault injection)", s.name);
                    s.handle.disconnect();
                    disconnected[i] = true;
                }
            }
            if self.cfg.trade_for_ms > 0
                && armed
                && !tripped_by_timer
                && elapsed >= Duration::from_millis(self.cfg.trade_for_ms)
            {
                tripped_by_timer = true;
                self.block
                    .trip_global(Mode::Kill, Source::Api, "ks-engine: trade_for_ms elapsed");
            }
            if let Some(d) = &self.drain {
                loop {
                    match d.try_outcome() {
                        Ok(Some(o)) => outcomes.push(o),
                        Ok(None) => break,
                        Err(died) => {
                            self.drain_died(&died);
                            let report = self.finish(kill_generation, outcomes, Some(died));
                            telemetry.finished(&report);
                            return report;
                        }
                    }
                }
            }
            if let Some(g) = kill_generation {
                if outcomes.iter().any(|o| o.global && o.last_generation >= g) {
                    break;
                }
            }
            if self.signals.state().level() != ShutdownLevel::None && !armed {
                // Signalled while latched: nothing to drain; leave.
                break;
            }
            telemetry.publish(&self, armed, kill_generation.is_some());
            std::thread::sleep(beat);
        }
        telemetry.publish_now(&self, armed, kill_generation.is_some());
        let report = self.finish(kill_generation, outcomes, None);
        telemetry.finished(&report);
        report
    }

    /// The drain thread is gone: nothing cancels on a trip any more. Trip
    /// KILL (the gate closes; `emergency` and the watchdog see it), mark
    /// the drain failed and put it on record, so no reset goes through
    /// before someone has reconciled.
    fn drain_died(&self, died: &DrainDied) {
        eprintln!("ks-engine: FATAL: {died}");
        self.block.trip_global(
            Mode::Kill,
            Source::Api,
            &format!("ks-engine: drain thread died: {}", died.why),
        );
        let ds = self.block.drain_status();
        ds.phase.store(DrainPhase::Failed as u64, Ordering::Release);
        if self.block.drain_incomplete().is_none() {
            let pid = std::process::id();
            let open = self.registry.open_count() as u64;
            self.block.record_drain_incomplete(&DrainIncomplete {
                generation: self.block.state().generation(),
                open,
                confirmed: 0,
                unknown: open,
                writer: IncompleteWriter::Engine,
                no_snapshot: true,
                pid,
                writer_start_ticks: proc_start_ticks(pid).unwrap_or(0),
                wall_ns: wall_ns(),
            });
        }
    }

    /// Keeps the strategies running until the gate has refused an order
    /// from each one still alive after the drain (or 2 s passed): the
    /// window in which "no new order reached a venue after the
    /// acknowledgement" is checked then holds real attempts.
    fn wait_for_refusals(&self) {
        let before: Vec<u64> = self
            .progress
            .iter()
            .map(|p| p.refused.load(Ordering::Acquire))
            .collect();
        let end = Instant::now() + Duration::from_secs(2);
        while Instant::now() < end {
            let all = self
                .progress
                .iter()
                .zip(&before)
                .zip(&self.strategies)
                .all(|((p, b), h)| h.is_finished() || p.refused.load(Ordering::Acquire) > *b);
            if all {
                return;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn finish(
        mut self,
        kill_generation: Option<u64>,
        outcomes: Vec<DrainOutcome>,
        drain_died: Option<DrainDied>,
    ) -> EngineReport {
        let before: Vec<u64> = self
            .progress
            .iter()
            .map(|p| p.refused.load(Ordering::Acquire))
            .collect();
        if kill_generation.is_some() && drain_died.is_none() {
            self.wait_for_refusals();
        }
        self.stop_strategies.store(true, Ordering::Release);
        let strategies: Vec<StrategyStats> = self
            .strategies
            .drain(..)
            .zip(before)
            .filter_map(|(h, b)| {
                h.join().ok().map(|mut s| {
                    s.refused_after_drain = s.refused.saturating_sub(b);
                    s
                })
            })
            .collect();
        // The gateway keeps applying late answers until it stops.
        let gateway_stats = self.gateway.take().map(|g| g.shutdown());
        if let Some(d) = self.drain.take() {
            let _ = d.shutdown();
        }
        let durable = self.journal.lock().ok().map(|mut j| {
            let _ = j.append_switch_events(&self.block);
            j.writer.sync().map_err(|e| e.to_string())
        });
        let report = report::build(report::Inputs {
            cfg: &self.cfg,
            block: &self.block,
            registry: &self.registry,
            journal: &self.journal,
            kill_generation,
            outcomes: &outcomes,
            sims: self
                .sims
                .iter()
                .map(|s| (s.name.clone(), s.handle.clone()))
                .collect(),
            strategies,
            gateway: gateway_stats,
            durable,
            level: self.signals.state().level(),
            recovery_note: &self.recovery_note,
            recovery: self.recovery.as_ref(),
            drain_died: drain_died.as_ref(),
        });
        self.block.detach_owner();
        report
    }
}
