//! The reference engine: one engine built on [`killswitch::runtime`], as an
//! integrator's would be. It is what `ks-engine` runs and what
//! `killswitch drill` starts as a child process.
//!
//! What is specific to it stays here: its TOML configuration, its venues
//! (the built-in simulated venues and their fault injection, or venues in
//! other processes over FIX 4.4 — [`wire`]), its two strategies, and its
//! report. Everything else — control block, signals, panic hook, journal
//! and recovery, gateway, drain, checkpoints, the main loop's duties, the
//! ordered stop — is the runtime's ([`Runtime::builder`]):
//! 1. [`Engine::start`] builds the simulated venues and hands them to the
//!    builder with the journal, the drain deadlines, the signal handlers
//!    and the panic hook; `start` cancels what an earlier run left open
//!    before the first new order; then one thread per strategy, each with
//!    its [`StrategyHandle`](killswitch::runtime::StrategyHandle);
//! 2. [`Engine::run`] supervises ([`Runtime::supervise_with`]) and, on
//!    each beat, injects the configured venue faults and trips KILL after
//!    `trade_for_ms`. A global KILL (from `killswitch trip` / `emergency`,
//!    a signal, a panic, the watchdog, or the timer) is drained by the
//!    runtime's drain thread; once it is, the engine waits (briefly) until
//!    the gate has refused an order from every strategy still running,
//!    stops (the runtime's ordered stop), writes its report and returns an
//!    exit code ([`killswitch::runtime::exit`]). HALT_NEW, REDUCE_ONLY and
//!    scoped kills do not stop the engine. If the drain thread dies, the
//!    runtime trips KILL, records it, and the engine exits 14.

pub mod cli;
pub mod config;
mod failover;
pub mod planned;
mod report;
mod restart;
pub mod risk_config;
mod standby;
mod strategy;
pub mod telemetry;
pub mod wire;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use killswitch::control::{default_dir, ControlBlock, Mode, Source};
use killswitch::drain::DrainConfig;
use killswitch::gateway::GatewayConfig;
use killswitch::journal::JournalConfig;
use killswitch::order::{Price, PRICE_SCALE};
use killswitch::runtime::{exit, Flow, Runtime, StartError, SuperviseOptions};
use killswitch::signals::SignalConfig;
use killswitch::venue::sim::{FlowConfig, SimConfig, SimHandle, SimInstrument, SimVenue};

pub use config::EngineConfig;
pub use report::{EngineReport, Verification};
pub use strategy::{StrategyProgress, StrategyStats};
pub use wire::WireLine;

/// Exit code: clean (drained, checkpointed, nothing unknown).
pub const EXIT_OK: i32 = exit::OK;
/// Exit code: start-up failed.
pub const EXIT_START_FAILED: i32 = exit::START_FAILED;
/// Exit code: the control file or the journal is damaged, of another
/// version, or not ours (owner or mode): the engine refuses to start on it.
pub const EXIT_BAD_FILE: i32 = exit::BAD_FILE;

/// Exit code: the drain failed (gateway did not acknowledge the kill).
pub const EXIT_DRAIN_FAILED: i32 = exit::DRAIN_FAILED;
/// Exit code: orders left in `CancelUnknown`.
pub const EXIT_ORDERS_UNKNOWN: i32 = exit::ORDERS_UNKNOWN;
/// Exit code: the quick checkpoint failed.
pub const EXIT_CHECKPOINT_FAILED: i32 = exit::CHECKPOINT_FAILED;
/// Exit code: the drain thread died (panicked or ended): nothing cancels
/// orders on a trip any more.
pub const EXIT_DRAIN_DIED: i32 = exit::DRAIN_DIED;
/// Exit code: the planned shutdown ran every step but found something
/// (stragglers, positions not flat, a reconciliation mismatch, a forced
/// service, a checkpoint on the alternate path): see its report.
pub const EXIT_PLANNED_FINDINGS: i32 = 16;

struct Sim {
    name: String,
    handle: SimHandle,
    disconnect_after: Option<Duration>,
    hang_after: Option<Duration>,
    withdraw_liquidity_after: Option<Duration>,
}

/// A running reference engine.
pub struct Engine {
    cfg: EngineConfig,
    /// Set when this engine is a promoted standby (a failover).
    promotion: Option<failover::Promotion>,
    /// The failover requests that are this engine's (read before it took
    /// the lease, see [`Engine::start`]).
    failover_requests: failover::FailoverRequests,
    rt: Runtime,
    sims: Vec<Sim>,
    wires: Vec<wire::Wire>,
    strategies: Vec<JoinHandle<StrategyStats>>,
    progress: Vec<Arc<StrategyProgress>>,
}

fn failed(message: impl Into<String>) -> StartError {
    StartError {
        exit_code: exit::START_FAILED,
        message: message.into(),
    }
}

impl Engine {
    /// Starts everything; see the module docs.
    pub fn start(cfg: EngineConfig) -> Result<Engine, StartError> {
        Self::start_with(cfg, None)
    }

    /// [`Engine::start`] for a promoted standby, with the journal it took
    /// over (no scan, no replay at start): its sessions log on as the
    /// designated backup (takeover) and the journal's open orders are
    /// adopted, not cancelled.
    pub(crate) fn start_with(
        cfg: EngineConfig,
        taken_over: Option<standby::TakenOver>,
    ) -> Result<Engine, StartError> {
        cfg.validate().map_err(failed)?;
        let dir = cfg.control_dir.clone().unwrap_or_else(default_dir);
        let access = killswitch::access::access_for_group(cfg.control_group.as_deref())?;
        // The venue and instrument names are registered before the
        // simulators are built (they need the instrument indices); the
        // runtime opens the same block again and keeps it.
        let block = ControlBlock::open_or_create_with(&dir, &cfg.name, access)?;
        let mut builder = Runtime::builder(&dir, &cfg.name).access(access);
        let promoted = taken_over.is_some();
        // The open orders the promoted standby holds, caught up to the
        // journal's last record: the start does not read the journal
        // again for them.
        let hot_open_orders: Option<Vec<killswitch::journal::OrderEntry>> = taken_over
            .as_ref()
            .map(|t| t.state.open_orders.values().copied().collect());
        builder = match taken_over {
            Some(t) => builder.journal_taken_over(t.writer, t.state, t.note),
            None => builder.journal(&cfg.journal_dir, JournalConfig::default()),
        };
        builder = builder
            .drain(DrainConfig {
                core: cfg.drain_core,
                gateway_ack_deadline: Duration::from_millis(cfg.drain.gateway_ack_deadline_ms),
                cancel_deadline: Duration::from_millis(cfg.drain.cancel_deadline_ms),
                use_mass_cancel: cfg.drain.mass_cancel,
                realtime: cfg.realtime_priority,
                ..DrainConfig::emergency()
            })
            .gateway(GatewayConfig {
                core: cfg.gateway_core,
                realtime: cfg.realtime_priority,
                // A session over the wire is logged out (cancelling
                // first) when the engine stops, not just dropped.
                logout_on_shutdown: cfg.venues.iter().any(|v| v.is_wire()),
                ..GatewayConfig::default()
            })
            .signals(SignalConfig {
                // The first SIGTERM runs the planned shutdown; the second
                // trips KILL (the emergency drain). Configurable: an
                // engine may want SIGTERM to be the emergency path.
                planned_shutdown: cfg.shutdown.sigterm_planned,
                ..SignalConfig::default()
            })
            .panic_hook()
            .limits(cfg.limits.to_config().map_err(failed)?)
            .rules(cfg.rules.to_config().map_err(failed)?);
        if promoted {
            // A failover: the old active handed its sessions over; the
            // journal's open orders are adopted at the venues (the
            // takeover logon asks their status) and kept in the registry.
            builder = builder
                .on_recovered_orders(killswitch::runtime::RecoveredOrders::AdoptIntoRegistry);
        }
        if cfg.lease_ttl_ms > 0 {
            builder = builder.lease(killswitch::control::LeaseConfig {
                ttl: Duration::from_millis(cfg.lease_ttl_ms),
                ..killswitch::control::LeaseConfig::default()
            });
        }
        if cfg.drain.inject_checkpoint_panic {
            builder = builder.before_checkpoint(|_| {
                panic!("injected fault: the checkpoint hook panics (drain.inject_checkpoint_panic)")
            });
        }
        let mut sims = Vec::new();
        let mut instrument_indices = Vec::new();
        let mut wires = Vec::new();
        // Orders an earlier run left open, by venue, for the sessions over
        // the wire to take over (the runtime reads the journal again and
        // cancels them before trading; the session needs their side,
        // symbol and fills to cancel them and to reconcile what the venue
        // did meanwhile). A journal that cannot be read here is the
        // runtime's to report.
        let left_open = if let Some(hot) = hot_open_orders {
            hot
        } else if cfg.venues.iter().any(|v| v.is_wire()) && cfg.journal_dir.exists() {
            killswitch::journal::rebuild_from_snapshot(&cfg.journal_dir)
                .map(|r| r.state.open_orders.into_values())
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        for v in &cfg.venues {
            let mut instruments = Vec::new();
            for i in &v.instruments {
                let index = block.register_name(killswitch::control::ScopeKind::Instrument, i)?;
                instrument_indices.push(index);
                instruments.push(SimInstrument {
                    index,
                    mid: strategy::MID,
                    tick: Price(PRICE_SCALE / 100),
                });
            }
            if v.is_wire() {
                let symbols = instruments
                    .iter()
                    .zip(&v.instruments)
                    .map(|(i, name)| (i.index, name.clone()))
                    .collect();
                let venue_index =
                    block.register_name(killswitch::control::ScopeKind::Venue, &v.name)?;
                // Given before the logon: a takeover logon asks their
                // status at once (that adopts them at the venue).
                let adopt = left_open
                    .iter()
                    .filter(|o| o.tags.venue == venue_index)
                    .map(|o| (o.id, o.side, o.tags.instrument, o.qty.0, o.filled.0))
                    .collect();
                let (session, w) =
                    wire::connect(v, &cfg.name, symbols, adopt, promoted).map_err(failed)?;
                eprintln!(
                    "ks-engine: venue {} over FIX at {} as {}: logged on (cancel-on-disconnect asked: {}, dead-man timer: {})",
                    w.name,
                    w.addr,
                    w.comp_id,
                    if v.cancel_on_disconnect { "yes" } else { "no" },
                    if v.dead_man_ms > 0 {
                        format!("{} ms", v.dead_man_ms)
                    } else {
                        "off".into()
                    }
                );
                builder = builder.venue(&v.name, session);
                wires.push(w);
                continue;
            }
            let flow = if v.flow_interval_us == 0 {
                FlowConfig::off()
            } else {
                FlowConfig {
                    interval_ns: v.flow_interval_us * 1000,
                    ..FlowConfig::default()
                }
            };
            let first_instrument = instruments.first().map_or(0, |i| i.index);
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
            if v.unreported_position_lots != 0 {
                let account = cfg
                    .strategies
                    .first()
                    .map_or("desk-1", |s| s.account.as_str());
                let account =
                    block.register_name(killswitch::control::ScopeKind::Account, account)?;
                eprintln!(
                    "ks-engine: venue {} books {} lots of {} for account index {account} that the engine is not told of (fault injection)",
                    v.name, v.unreported_position_lots, v.instruments.first().map_or("-", String::as_str)
                );
                handle.book_unreported_position(
                    first_instrument,
                    account,
                    killswitch::order::Qty::from_lots(v.unreported_position_lots),
                );
            }
            handle.set_drop_cancel_ack_ppm(v.drop_cancel_ack_ppm);
            builder = builder.venue(&v.name, venue);
            sims.push(Sim {
                name: v.name.clone(),
                handle,
                disconnect_after: v.disconnect_after_ms.map(Duration::from_millis),
                hang_after: v.hang_after_ms.map(Duration::from_millis),
                withdraw_liquidity_after: v.withdraw_liquidity_after_ms.map(Duration::from_millis),
            });
        }
        // Read before the lease is taken: `killswitch failover` asks only
        // a live lease holder, so a request made after this read is made
        // to this engine. Read later (in `run`), a failback asked the
        // moment the failover that promoted this engine returned (it
        // returns once the lease is taken, before the runtime runs) would
        // be taken for an old one and ignored.
        let failover_requests = failover::FailoverRequests::at_start(&block);
        drop(block);
        let logged_on_mono_ns = killswitch::clock::mono_ns();
        let rt = builder.start()?;
        let started_mono_ns = killswitch::clock::mono_ns();
        // The simulated instruments trade around a fixed mid: it is the
        // price collar's reference and the loss rules' mark.
        let references = rt.reference_prices();
        for &i in &instrument_indices {
            references.set(i, strategy::MID);
        }
        if let Some(out) = rt.recovery() {
            eprintln!(
                "ks-engine: start-up recovery: {} order(s) the journal showed open (an earlier run left them), dealt with before any new order: {} cancelled, {} filled, {} rejected, {} CancelUnknown{}",
                rt.recovered_orders(),
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
        }

        let mut strategies = Vec::new();
        let mut progress = Vec::new();
        for (n, s) in cfg.strategies.iter().enumerate() {
            let handle = rt
                .strategy(&s.name)
                .map_err(|e| failed(format!("strategy {}: {e}", s.name)))?;
            let tags = handle
                .tags(&s.venue, &s.instrument, &s.account)
                .map_err(|e| failed(format!("strategy {}: {e}", s.name)))?;
            let s = s.clone();
            let seed = 1000 + n as u64;
            let p = Arc::new(StrategyProgress::default());
            progress.push(p.clone());
            strategies.push(
                std::thread::Builder::new()
                    .name(format!("ks-strategy-{}", s.name))
                    .spawn(move || strategy::run(s, tags, handle, p, seed))
                    .map_err(|e| failed(format!("strategy thread: {e}")))?,
            );
        }
        let promotion = promoted.then(|| failover::Promotion {
            logged_on_mono_ns,
            started_mono_ns,
            epoch: rt.lease().map_or(0, |l| l.epoch()),
            adopted: rt.recovered_orders(),
        });
        Ok(Engine {
            cfg,
            promotion,
            failover_requests,
            rt,
            sims,
            wires,
            strategies,
            progress,
        })
    }

    /// The control block's path.
    pub fn block_path(&self) -> &std::path::Path {
        self.rt.block().path()
    }

    /// What journal recovery found at start-up.
    pub fn recovery_note(&self) -> &str {
        self.rt.recovery_note()
    }

    /// Runs until a global KILL has been drained; returns the report.
    pub fn run(mut self) -> EngineReport {
        // The runtime's own reading at start (a reset may already have
        // landed since): the same one its supervisor arms from.
        let trip_text = |t: Option<killswitch::control::AuditEntry>| {
            t.map(|t| {
                format!(
                    " (\"{}\", by {} pid {})",
                    t.reason,
                    t.source.as_str(),
                    t.pid
                )
            })
            .unwrap_or_default()
        };
        if self.promotion.is_some() && self.rt.own_kill_in_force() {
            // A KILL that came in force during the failover (after the old
            // active handed over, or as this engine took over): the orders
            // it was aimed at are the ones just adopted, and no one else
            // can cancel them now (the old active is fenced). The drain
            // thread drains it at start; this engine stops once it has.
            eprintln!(
                "ks-engine: failover: KILL in force at the takeover{}: this engine (pid {}) drains the {} order(s) adopted from the old active before anything else, then stops",
                trip_text(self.rt.block().last_trip()),
                std::process::id(),
                self.rt.recovered_orders()
            );
        } else if self.rt.latched_at_start() {
            let t = self.rt.block().last_trip();
            eprintln!(
                "ks-engine: the switch is LATCHED at KILL{}: not trading until `killswitch reset --confirm`",
                trip_text(t)
            );
        }
        let opts = SuperviseOptions {
            beat: Duration::from_micros(self.cfg.heartbeat_us.max(100)),
            ..SuperviseOptions::default()
        };
        let tripper = self.rt.tripper();
        let trade_for =
            (self.cfg.trade_for_ms > 0).then(|| Duration::from_millis(self.cfg.trade_for_ms));
        let mut disconnected = vec![false; self.sims.len()];
        let mut hung = vec![false; self.sims.len()];
        let mut tripped_by_timer = false;
        let mut was_armed = !self.rt.latched_at_start();
        let started = Instant::now()
            .checked_sub(self.rt.uptime())
            .unwrap_or_else(Instant::now);
        let mut telemetry =
            telemetry::Publisher::new(self.rt.monitor(), self.progress.len(), started);
        let view = |stopping| telemetry::View {
            cfg: &self.cfg,
            progress: &self.progress,
            strategies: &self.strategies,
            sims: &self.sims,
            wires: &self.wires,
            stopping,
        };
        let sims = &self.sims;
        // In-process sessions have no heartbeat messages: a session that is
        // up and not hung beats on every supervisor beat, as an adapter
        // would on each message from its venue.
        let heartbeats = self.rt.venue_heartbeats();
        let venue_indices: Vec<Option<u16>> = sims
            .iter()
            .map(|s| {
                self.rt
                    .block()
                    .lookup_name(killswitch::control::ScopeKind::Venue, &s.name)
            })
            .collect();
        let monitor = self.rt.monitor();
        let signal_state = self.rt.signal_state();
        // A request left in the block by an earlier run is not ours.
        let stale_request =
            killswitch::shutdown::words::read_request(monitor.block()).map(|r| r.nonce);
        let mut planned: Option<killswitch::shutdown::ShutdownPlan> = None;
        let leased = self.rt.lease().is_some();
        // A failover asked before we started is not ours either.
        let failover_requests = self.failover_requests;
        // Read between the two supervise calls while the beat closure
        // still lives: a Cell, not a captured `&mut`.
        let failover_seen: std::cell::Cell<Option<killswitch::control::FailoverRequest>> =
            std::cell::Cell::new(None);
        let mut failover_withdrawn: Option<u32> = None;
        let mut failover_ignored = false;
        let sent_at_start = killswitch::control::GatewaySnapshot::read(monitor.block()).orders_sent;
        let mut first_new_order = self.promotion.is_none();
        if let Some(p) = &self.promotion {
            failover::phase("logon (takeover) done", p.logged_on_mono_ns);
            failover::phase(
                &format!(
                    "lease taken (epoch {}), {} open order(s) adopted into the registry",
                    p.epoch, p.adopted
                ),
                p.started_mono_ns,
            );
        }
        let cfg = &self.cfg;
        let operator = self.rt.operator();
        let mut on_beat = |beat: &killswitch::runtime::Beat| -> Flow {
            // First: a reset seen on the same beat as a SIGTERM is still
            // reported (the operator must read that trading resumed).
            if !was_armed && beat.armed {
                eprintln!("ks-engine: switch reset: trading resumes");
            }
            was_armed = beat.armed;
            // The planned shutdown: a SIGTERM (that tripped nothing) or a
            // `killswitch shutdown` request. Not while a KILL is in force:
            // that drain runs to its end as before.
            if beat.state.mode() != Mode::Kill && beat.armed {
                if let Some(s) = &signal_state {
                    if s.level() == killswitch::signals::ShutdownLevel::Planned {
                        planned = Some(planned::plan_from_signal(cfg, s.last_signal()));
                        return Flow::Stop;
                    }
                }
                if let Some(r) = killswitch::shutdown::words::read_request(monitor.block()) {
                    if Some(r.nonce) != stale_request {
                        planned = Some(planned::plan_from_request(cfg, monitor.block(), &r));
                        return Flow::Stop;
                    }
                }
                // A failover: not while a KILL is in force (that drain
                // runs to its end here, where the orders are; see below).
                if let Some(r) = failover_requests.pending(monitor.block()) {
                    if leased {
                        failover::phase_now(&format!("stop new orders (asked by pid {})", r.pid));
                        failover_seen.set(Some(r));
                        return Flow::Stop;
                    }
                    if !failover_ignored {
                        failover_ignored = true;
                        eprintln!("ks-engine: a failover was asked (pid {}) but this engine holds no lease (lease_ttl_ms = 0): ignored", r.pid);
                    }
                }
            }
            // A failover asked while a KILL is in force is withdrawn: this
            // engine drains its own orders, and the standby must not take
            // over on the lease this engine gives back when it stops.
            if leased && killswitch::drain::kill_in_force(monitor.block(), beat.state) {
                if let Some(r) = failover_requests
                    .pending(monitor.block())
                    .filter(|r| failover_withdrawn != Some(r.nonce))
                {
                    failover_withdrawn = Some(r.nonce);
                    failover::withdraw(&operator, r.nonce, r.pid);
                }
            }
            if !first_new_order
                && killswitch::control::GatewaySnapshot::read(monitor.block()).orders_sent
                    > sent_at_start
            {
                first_new_order = true;
                failover::phase_now("first new order (seen at this beat)");
            }
            for (i, s) in sims.iter().enumerate() {
                if !hung[i] && s.hang_after.is_some_and(|d| beat.uptime >= d) {
                    eprintln!(
                        "ks-engine: venue {} session hangs on every write (fault injection)",
                        s.name
                    );
                    s.handle.set_hang_writes(true);
                    hung[i] = true;
                }
                if s.withdraw_liquidity_after.is_some_and(|d| beat.uptime >= d)
                    && !s.handle.liquidity_withdrawn()
                {
                    eprintln!(
                        "ks-engine: venue {} liquidity withdrawn: the other participants pulled their orders and send none (fault injection)",
                        s.name
                    );
                    s.handle.set_liquidity_withdrawn(true);
                }
                if !disconnected[i] && s.disconnect_after.is_some_and(|d| beat.uptime >= d) {
                    eprintln!("ks-engine: venue {} disconnects (fault injection)", s.name);
                    s.handle.disconnect();
                    disconnected[i] = true;
                }
            }
            for (i, index) in venue_indices.iter().enumerate() {
                if let (Some(index), false, false) = (index, disconnected[i], hung[i]) {
                    heartbeats.beat(*index);
                }
            }
            if let Some(d) = trade_for {
                if beat.armed && !tripped_by_timer && beat.uptime >= d {
                    tripped_by_timer = true;
                    tripper.trip_global(Mode::Kill, Source::Api, "ks-engine: trade_for_ms elapsed");
                }
            }
            let draining = beat.state.mode() == Mode::Kill && beat.armed;
            telemetry.publish(&view(false), beat.armed, draining);
            Flow::Continue
        };
        let mut supervised = self.rt.supervise_with(opts.clone(), &mut on_beat);
        let mut handed_over = None;
        if let Some(asked) = failover_seen.get() {
            failover::test_hold_before_hand_over();
            let result = self.rt.hand_over(Duration::from_secs(5));
            if result.is_err()
                && killswitch::drain::kill_in_force(self.rt.block(), self.rt.block().state())
            {
                // A KILL came after the request was seen, before the
                // hand-over: drain it here, where the orders and the lease
                // still are, exactly as without a failover.
                failover::withdraw(&operator, asked.nonce, asked.pid);
                supervised = self.rt.supervise_with(opts, &mut on_beat);
            } else {
                if let (Err(e), false) = (&result, self.rt.handed_over()) {
                    // `hand_over` failing with the lease still ours means
                    // nothing was handed over and the gateway never will
                    // for this request (it was withdrawn, or refused): the
                    // standby must not take over the lease this engine
                    // gives back as it stops.
                    failover::withdraw_because(
                        &operator,
                        asked.nonce,
                        asked.pid,
                        &format!("the hand-over failed ({e}): nothing was handed over"),
                    );
                }
                handed_over = Some(result);
            }
        }
        if handed_over.is_none() {
            // Stopping without a hand-over (a KILL drained before a beat
            // saw the request, a planned shutdown, a signal): a request
            // still pending must not promote the standby when this engine
            // gives the lease back as it stops.
            if let Some(r) = failover_requests.pending(operator.block()) {
                failover::withdraw_because(
                    &operator,
                    r.nonce,
                    r.pid,
                    "this engine is stopping without handing over",
                );
            }
        }
        telemetry.publish_now(&view(true), was_armed, supervised.kill_generation.is_some());
        if let Some(died) = &supervised.drain_died {
            eprintln!("ks-engine: FATAL: {died}");
        }
        if let Some(died) = &supervised.gateway_died {
            eprintln!("ks-engine: FATAL: {died}");
        }
        if let Some(result) = handed_over.take() {
            match result {
                Ok(h) => {
                    failover::phase(
                        &format!(
                            "sessions handed over, lease released (epoch {}){}",
                            h.epoch,
                            if h.failed().is_empty() {
                                String::new()
                            } else {
                                format!("; FAILED: {}", h.failed().join("; "))
                            }
                        ),
                        h.released_mono_ns,
                    );
                    handed_over = Some(Ok(h));
                }
                Err(e) => {
                    eprintln!("ks-engine: failover: hand-over failed: {e}");
                    handed_over = Some(Err(e));
                }
            }
        }
        let mut planned_report = None;
        if let Some(plan) = planned {
            planned_report = Some(self.run_planned(plan));
        }
        let before: Vec<u64> = self
            .progress
            .iter()
            .map(|p| p.refused.load(Ordering::Acquire))
            .collect();
        if supervised.kill_generation.is_some() && supervised.drain_died.is_none() {
            self.wait_for_refusals();
        }
        // The runtime's ordered stop: strategies (they see the stop and
        // drop their handles), gateway, drain, journal sync, signals, detach.
        let stopped = self.rt.shutdown();
        let mut kill_after_hand_over = None;
        if let Some(Ok(_)) = &handed_over {
            failover::phase_now(&format!(
                "last record seq {} written, journal closed",
                self.rt.journal_last_seq()
            ));
            let block = self.rt.block();
            if killswitch::drain::kill_in_force(block, block.state()) {
                // Fenced, this engine can send nothing: say who drains.
                let why = format!(
                    "a KILL came in force after this engine handed over{}: it is fenced (no cancel of its drain went out after the hand-over, and it no longer hears the venue, so its report may show orders CancelUnknown); the standby drains the orders it adopts when it takes over (its log says what it drained)",
                    trip_text(block.last_trip())
                );
                eprintln!("ks-engine: failover: {why}");
                kill_after_hand_over = Some(why);
            }
        }
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
        let report = report::build(report::Inputs {
            cfg: &self.cfg,
            rt: &self.rt,
            supervised: &supervised,
            stopped: &stopped,
            sims: self
                .sims
                .iter()
                .map(|s| (s.name.clone(), s.handle.clone()))
                .collect(),
            wires: &self.wires,
            strategies,
        });
        telemetry.finished(&report);
        let mut report = report;
        match handed_over {
            Some(Ok(h)) if report.exit_code == EXIT_OK && h.failed().is_empty() => {
                report.handed_over_epoch = Some(h.epoch);
                report.verdict = format!(
                    "handed over to the standby (epoch {} released): restart this engine with --standby{}",
                    h.epoch,
                    kill_after_hand_over
                        .map(|k| format!("; {k}"))
                        .unwrap_or_default()
                );
            }
            Some(Ok(h)) => {
                let mut findings = h.failed();
                if report.exit_code != EXIT_OK {
                    findings.push(report.verdict.clone());
                }
                findings.extend(kill_after_hand_over);
                report.verdict = format!("handed over with findings: {}", findings.join("; "));
                if report.exit_code == EXIT_OK {
                    report.exit_code = EXIT_START_FAILED;
                }
            }
            Some(Err(e)) => {
                report.verdict = format!("failover asked, hand-over failed: {e}");
                if report.exit_code == EXIT_OK {
                    report.exit_code = EXIT_START_FAILED;
                }
            }
            None => {}
        }
        if let Some(p) = planned_report {
            report.planned_shutdown = Some(planned::report_json(self.rt.block(), &p));
            if report.exit_code == EXIT_OK && !p.is_clean() {
                report.exit_code = EXIT_PLANNED_FINDINGS;
                report.verdict = format!(
                    "planned shutdown finished with findings (see its report): {}",
                    p.warnings
                        .iter()
                        .chain(p.phases.iter().filter_map(|r| match &r.result {
                            killswitch::shutdown::PhaseResult::Warning(w)
                            | killswitch::shutdown::PhaseResult::Failed(w) => Some(w),
                            _ => None,
                        }))
                        .cloned()
                        .collect::<Vec<_>>()
                        .join("; ")
                );
            } else if report.exit_code == EXIT_OK {
                report.verdict =
                    "planned shutdown complete: every step done, status OFFLINE".into();
            }
        }
        report
    }

    /// Runs the library's planned shutdown with this engine's hooks.
    fn run_planned(
        &mut self,
        plan: killswitch::shutdown::ShutdownPlan,
    ) -> killswitch::shutdown::PlannedShutdownReport {
        let block = self.rt.monitor();
        let mut components: Vec<Box<dyn killswitch::shutdown::Component>> = Vec::new();
        match planned::ServiceThread::start(
            "risk-service",
            self.cfg.shutdown.risk_service_ignores_stop,
        ) {
            Ok(s) => components.push(Box::new(s)),
            Err(e) => eprintln!("ks-engine: risk service thread: {e}"),
        }
        let strategy_states = self
            .cfg
            .strategies
            .iter()
            .zip(&self.progress)
            .map(|(s, p)| {
                (
                    s.name.clone(),
                    serde_json::json!({
                        "kind": format!("{:?}", s.kind),
                        "venue": s.venue,
                        "instrument": s.instrument,
                        "signals": p.signals.load(Ordering::Acquire),
                        "refused": p.refused.load(Ordering::Acquire),
                    })
                    .to_string()
                    .into_bytes(),
                )
            })
            .collect();
        let mut hooks = planned::EngineHooks {
            cfg: self.cfg.clone(),
            block,
            signals: self.rt.signal_state(),
            log: vec![format!(
                "[{}] ks-engine: pid {} planned shutdown: {}",
                killswitch::clock::format_wall(killswitch::clock::wall_ns()),
                std::process::id(),
                plan.reason
            )],
            components,
            strategy_states,
        };
        let report = self.rt.planned_shutdown(plan, &mut hooks);
        eprintln!(
            "ks-engine: planned shutdown {}: report {}",
            if report.is_clean() {
                "complete"
            } else {
                "finished with findings"
            },
            planned::report_path(self.rt.block().path()).display()
        );
        report
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
}
