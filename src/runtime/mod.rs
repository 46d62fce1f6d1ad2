//! The runtime: one builder that owns the wiring an engine needs around its
//! own strategies and venue adapters.
//!
//! ```no_run
//! # use killswitch::venue::{NewOrder, Venue, VenueError, VenueEvent};
//! # use killswitch::order::OrderId;
//! # struct MyVenue;
//! # impl Venue for MyVenue {
//! #     fn name(&self) -> &str { "XNAS" }
//! #     fn send(&mut self, _: &NewOrder) -> Result<(), VenueError> { Ok(()) }
//! #     fn cancel(&mut self, _: OrderId) -> Result<(), VenueError> { Ok(()) }
//! #     fn poll(&mut self, _: &mut Vec<VenueEvent>) {}
//! # }
//! use killswitch::runtime::{RecoveredOrders, Runtime, SnapshotPolicy, SuperviseOptions};
//! use killswitch::journal::JournalConfig;
//! use killswitch::limits::LimitConfig;
//! use killswitch::order::Qty;
//! use killswitch::rules::{OrderRateRule, RuleConfig};
//! use killswitch::signals::SignalConfig;
//! use killswitch::control::Mode;
//!
//! let mut rt = Runtime::builder("/dev/shm", "my-engine")
//!     .venue("XNAS", MyVenue)
//!     .journal("journal", JournalConfig::default())
//!     .signals(SignalConfig::default())
//!     .panic_hook()
//!     .snapshot_policy(SnapshotPolicy::EveryBytes(32 << 20))
//!     .on_recovered_orders(RecoveredOrders::CancelBeforeTrading)
//!     .limits(LimitConfig { max_order_qty: Some(Qty::from_lots(100)), ..LimitConfig::default() })
//!     .rules(RuleConfig {
//!         order_rate: Some(OrderRateRule { max_per_second: 20_000, mode: Mode::HaltNew }),
//!         ..RuleConfig::default()
//!     })
//!     .start()?;
//! let mm = rt.strategy("mm_btc")?; // move it into the strategy's thread
//! let supervised = rt.supervise(SuperviseOptions::default());
//! let stopped = rt.shutdown();
//! std::process::exit(supervised.exit_code());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! [`RuntimeBuilder::start`], in order:
//! 1. opens (or creates) the control block with the [`Access`] given and
//!    attaches this process as its engine ([`EngineOwner`]); a latched KILL
//!    from an earlier run stays in force until an operator resets it;
//! 2. installs the signal handlers and the panic hook, if asked (they trip
//!    the state word themselves);
//! 3. opens the journal (cutting a torn tail; refusing anything worse) and
//!    rebuilds the trading state from its newest snapshot
//!    ([`crate::journal::rebuild_from`]); the registry's events are journaled from
//!    then on, trips and resets from the block's audit ring;
//! 4. adopts the orders the journal shows open (an earlier run left them
//!    working) as `Recovered`, per [`RecoveredOrders`];
//! 5. starts the gateway (claiming the block's gateway role) over the
//!    venues, and the drain (its quick checkpoint goes into the journal);
//!    with [`RecoveredOrders::CancelBeforeTrading`] the drain first cancels
//!    the recovered orders (or reports them `CancelUnknown` by id) while the
//!    gateway takes no new order, and `start` waits for that.
//!
//! Then [`Runtime::strategy`] hands out one [`StrategyHandle`] per strategy
//! name (it checks the pre-trade limits, [`crate::limits`], in the
//! strategy's thread); [`Runtime::supervise`] does the main loop's duties (see
//! [`supervise`](Runtime::supervise), including the automatic rules,
//! [`crate::rules`]); [`Runtime::shutdown`] stops in order:
//! strategies, gateway, drain, journal sync, signal handlers, detach.
//!
//! # Threads and handles
//! | handle | who holds it | `Send`/`Sync`/`Clone` |
//! |---|---|---|
//! | [`Runtime`] | the thread that starts, supervises and stops the engine (usually `main`) | `Send` |
//! | [`StrategyHandle`] | one strategy thread (the single reader of its answers) | `Send` |
//! | [`TripToken`], [`Gate`] | any thread | all three |
//! | [`Tripper`] | any thread; signal handlers for global trips | all three |
//! | [`Operator`] | any normal thread (the admin endpoint's) | all three |
//! | [`SendGuard`] | one sending thread that writes to a venue itself | `Send` |
//!
//! The gateway and drain threads are the runtime's own; nothing outside
//! them touches the venue sessions or the cancel ring.

mod answers;
mod handover;
mod journaling;
mod monitor;
mod planned;
mod rules;
mod strategy;
mod supervise;
pub use handover::{HandOver, KILL_IN_FORCE};

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use crate::access::Access;
use crate::control::lease::LeaseState;
use crate::control::{
    ControlBlock, ControlError, EngineOwner, Lease, LeaseConfig, Operator, ScopeKind, Status,
    Tripper,
};
use crate::drain::{Drain, DrainConfig, DrainHandle, DrainOutcome};
use crate::gate::Gate;
use crate::gateway::{Gateway, GatewayConfig, GatewayError, GatewayHandle, GatewayStats};
use crate::journal::{JournalConfig, JournalError, JournalWriter, Position, PositionKey};
use crate::limits::{LimitConfig, PreTradeCheck, ReferencePrices};
use crate::order::{OrderId, Qty, ScopeIndex};
use crate::registry::{Anomaly, NoopSink, OrderRecord, RecoveredOrder, Registry, RegistryCounters};
use crate::rules::{RuleBook, RuleConfig, VenueHeartbeats};
use crate::signals::{self, ShutdownLevel, SignalConfig, SignalGuard};
use crate::venue::Venue;

pub use crate::senders::{SendError, SendFence, SendGuard};
pub use answers::{Answer, AnswersLost};
pub use journaling::BeforeCheckpoint;
pub use monitor::Monitor;
pub use planned::FLATTEN_STRATEGY;
pub use strategy::{StrategyHandle, TripToken};
pub use supervise::{Beat, Flow, ShutdownReport, StopReason, SuperviseOptions, Supervised};

/// Process exit codes an engine built on the runtime returns (the
/// reference engine `ks-engine` does): see [`Supervised::exit_code`].
pub mod exit {
    /// Drained, checkpointed, nothing unknown (or stopped while latched).
    pub const OK: i32 = 0;
    /// Start-up failed (a thread, a venue name, the recovery drain).
    pub const START_FAILED: i32 = 2;
    /// The control file or the journal is damaged, of another version, or
    /// not ours (owner or mode); or another live engine owns the block.
    pub const BAD_FILE: i32 = 3;
    /// The drain failed: the gateway acknowledged the kill late or never.
    pub const DRAIN_FAILED: i32 = 10;
    /// Orders left `CancelUnknown` (this run's, or recovered from an
    /// earlier run): reconcile with the venues.
    pub const ORDERS_UNKNOWN: i32 = 11;
    /// The quick checkpoint failed.
    pub const CHECKPOINT_FAILED: i32 = 12;
    /// The drain thread died: nothing cancelled orders on a trip.
    pub const DRAIN_DIED: i32 = 14;
    /// The gateway thread died: nothing acknowledged a kill or wrote a
    /// cancel.
    pub const GATEWAY_DIED: i32 = 15;
}

/// What to do with the orders an earlier run's journal shows open.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RecoveredOrders {
    /// Cancel them (mass cancel per venue where possible, by id otherwise)
    /// or report them `CancelUnknown` by id, before the gateway writes any
    /// new order; `start` waits for it. The safe default.
    #[default]
    CancelBeforeTrading,
    /// Keep them: adopted into the registry in state `Recovered` (open),
    /// so a kill cancels them like any other; the venues' fills and cancels
    /// for them are applied. For an engine that reconciles and manages its
    /// resting orders across restarts.
    AdoptIntoRegistry,
}

/// When the supervisor takes a quick checkpoint of its own (besides the
/// drain's after every kill), so a restart replays only the journal since.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SnapshotPolicy {
    /// Only the drain's.
    #[default]
    Never,
    /// After this many journal bytes since the newest snapshot.
    EveryBytes(u64),
    /// After this many journal records since the newest snapshot.
    EveryRecords(u64),
}

impl SnapshotPolicy {
    fn due(self, (records, bytes): (u64, u64)) -> bool {
        match self {
            SnapshotPolicy::Never => false,
            SnapshotPolicy::EveryBytes(n) => bytes >= n.max(1),
            SnapshotPolicy::EveryRecords(n) => records >= n.max(1),
        }
    }
}

/// Why the runtime did not start, and the exit code that says so
/// ([`exit::START_FAILED`] or [`exit::BAD_FILE`]). Nothing was left
/// running: whatever had started is stopped again.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct StartError {
    /// The process exit code for it.
    pub exit_code: i32,
    /// What went wrong and what to do.
    pub message: String,
}

impl StartError {
    fn failed(message: impl Into<String>) -> StartError {
        StartError {
            exit_code: exit::START_FAILED,
            message: message.into(),
        }
    }
}

impl From<ControlError> for StartError {
    fn from(e: ControlError) -> StartError {
        let exit_code = match e {
            ControlError::Io { .. } => exit::START_FAILED,
            _ => exit::BAD_FILE,
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
            | JournalError::Corrupt { .. } => exit::BAD_FILE,
            _ => exit::START_FAILED,
        };
        StartError {
            exit_code,
            message: e.to_string(),
        }
    }
}

impl From<GatewayError> for StartError {
    fn from(e: GatewayError) -> StartError {
        match e {
            GatewayError::Role(c) => c.into(),
            GatewayError::Thread(_) | GatewayError::Realtime(_) => {
                StartError::failed(e.to_string())
            }
        }
    }
}

/// Why [`Runtime::strategy`] (or [`Runtime::send_guard`]) refused.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The name could not be registered in the control block.
    #[error(transparent)]
    Control(#[from] ControlError),
    /// A live handle for this strategy already exists: one per strategy
    /// (it is the single reader of the strategy's answers).
    #[error("strategy {0:?} already has a live handle: one handle per strategy name; drop the other one first, or use another name")]
    StrategyTaken(String),
    /// The runtime is shutting down (or has): no new handles.
    #[error("the runtime is stopping: no new strategy handles")]
    Stopping,
}

/// A journal a promoted standby took over ([`RuntimeBuilder::journal_taken_over`]).
struct TakenOverJournal {
    writer: JournalWriter,
    state: crate::journal::TradingState,
    note: String,
}

/// Builds a [`Runtime`]; see the module docs for what `start` does.
#[must_use = "a builder does nothing until start()"]
pub struct RuntimeBuilder {
    dir: PathBuf,
    name: String,
    access: Access,
    venues: Vec<(String, Box<dyn Venue>)>,
    journal: Option<(PathBuf, JournalConfig)>,
    taken_over: Option<TakenOverJournal>,
    drain: DrainConfig,
    gateway: GatewayConfig,
    signals: Option<SignalConfig>,
    panic_hook: bool,
    snapshot_policy: SnapshotPolicy,
    recovered: RecoveredOrders,
    answer_ring: usize,
    before_checkpoint: Option<BeforeCheckpoint>,
    recovery_deadline: Option<Duration>,
    send_fence: SendFence,
    limits: LimitConfig,
    rules: RuleConfig,
    lease: Option<LeaseConfig>,
}

impl RuntimeBuilder {
    /// Files are shared as `access` says (default: owner only). Applies to
    /// the control block and the journal directory.
    pub fn access(mut self, access: Access) -> Self {
        self.access = access;
        self
    }

    /// A venue session the gateway owns, under the venue scope `name`
    /// (what `killswitch trip --venue NAME` names). Repeatable.
    pub fn venue(mut self, name: &str, venue: impl Venue + 'static) -> Self {
        self.venues.push((name.to_string(), Box::new(venue)));
        self
    }

    /// A venue session already boxed.
    pub fn venue_boxed(mut self, name: &str, venue: Box<dyn Venue>) -> Self {
        self.venues.push((name.to_string(), venue));
        self
    }

    /// Journal every order event, trip and reset in `dir`, checkpoint into
    /// it, and recover from it at start. Without a journal nothing is
    /// checkpointed and a restart knows no earlier orders.
    pub fn journal(mut self, dir: impl AsRef<Path>, cfg: JournalConfig) -> Self {
        self.journal = Some((dir.as_ref().to_path_buf(), cfg));
        self
    }

    /// A failover's promoted standby: the journal writer it already holds
    /// (opened where its follower stands, [`JournalWriter::open_after`], or
    /// fully recovered) and the trading state its follower (or a rebuild)
    /// holds at that writer's position, so `start` neither scans nor
    /// replays the journal. `note` says how it was opened (the recovery
    /// note). Replaces [`RuntimeBuilder::journal`].
    pub fn journal_taken_over(
        mut self,
        writer: JournalWriter,
        state: crate::journal::TradingState,
        note: impl Into<String>,
    ) -> Self {
        self.taken_over = Some(TakenOverJournal {
            writer,
            state,
            note: note.into(),
        });
        self
    }

    /// Drain settings (default [`DrainConfig::emergency`]).
    pub fn drain(mut self, cfg: DrainConfig) -> Self {
        self.drain = cfg;
        self
    }

    /// Gateway settings. `first_order_id` is raised above every id the
    /// journal knows.
    pub fn gateway(mut self, cfg: GatewayConfig) -> Self {
        self.gateway = cfg;
        self
    }

    /// Install the signal handlers ([`signals::install`]).
    pub fn signals(mut self, cfg: SignalConfig) -> Self {
        self.signals = Some(cfg);
        self
    }

    /// Install the panic hook: a panic in any thread trips KILL.
    pub fn panic_hook(mut self) -> Self {
        self.panic_hook = true;
        self
    }

    /// The supervisor's own quick checkpoints (default: only the drain's).
    pub fn snapshot_policy(mut self, policy: SnapshotPolicy) -> Self {
        self.snapshot_policy = policy;
        self
    }

    /// What to do with the orders the journal shows open at start.
    pub fn on_recovered_orders(mut self, what: RecoveredOrders) -> Self {
        self.recovered = what;
        self
    }

    /// Capacity of each strategy's answer ring (default 16,384 answers).
    pub fn answer_ring(mut self, capacity: usize) -> Self {
        self.answer_ring = capacity.max(16);
        self
    }

    /// Runs `step` in the drain thread after each drain's cancel phase,
    /// before the quick checkpoint (e.g. to journal the strategies' state).
    /// Its error fails the checkpoint; its panic is the drain thread's death
    /// (trip, record, [`exit::DRAIN_DIED`]).
    pub fn before_checkpoint(
        mut self,
        step: impl FnMut(&DrainOutcome) -> Result<(), String> + Send + 'static,
    ) -> Self {
        self.before_checkpoint = Some(Box::new(step));
        self
    }

    /// How send guards fence ([`SendFence::Auto`]: `membarrier` when the
    /// kernel offers it).
    pub fn send_fence(mut self, fence: SendFence) -> Self {
        self.send_fence = fence;
        self
    }

    /// How long `start` waits for the recovery of an earlier run's orders
    /// (default: the drain's two deadlines plus 30 s).
    pub fn recovery_deadline(mut self, deadline: Duration) -> Self {
        self.recovery_deadline = Some(deadline);
        self
    }

    /// Pre-trade limits every strategy's orders are checked against in
    /// its own thread ([`crate::limits`]); the execution throttle among
    /// them is counted by [`Runtime::supervise`]. Default: none (a
    /// submit then costs what the gate costs).
    pub fn limits(mut self, cfg: LimitConfig) -> Self {
        self.limits = cfg;
        self
    }

    /// Automatic trips with graded warnings ([`crate::rules`]), evaluated
    /// by [`Runtime::supervise`]. Default: none.
    pub fn rules(mut self, cfg: RuleConfig) -> Self {
        self.rules = cfg;
        self
    }

    /// Run as the holder of the block's active-role lease (see
    /// [`crate::control::lease`]): `start` first acquires it (waiting for
    /// a live holder's lease to lapse, then for that holder's turn in
    /// progress to end), raising the epoch, and only then attaches as the
    /// engine (replacing the predecessor it fenced) and starts the gateway,
    /// which checks the epoch in every admit step and stops writing for
    /// good once a newer one appears ([`Runtime::lease`] says so). Without
    /// it nothing of this runs. Every engine sharing a block must use it:
    /// a gateway without a lease is never fenced.
    pub fn lease(mut self, cfg: LeaseConfig) -> Self {
        self.lease = Some(cfg);
        self
    }

    /// Starts everything; see the module docs.
    pub fn start(self) -> Result<Runtime, StartError> {
        let RuntimeBuilder {
            dir,
            name,
            access,
            venues,
            journal,
            taken_over,
            drain,
            mut gateway,
            signals,
            panic_hook,
            snapshot_policy,
            recovered,
            answer_ring,
            before_checkpoint,
            recovery_deadline,
            send_fence,
            limits,
            rules,
            lease,
        } = self;
        if venues.is_empty() {
            return Err(StartError::failed(
                "no venue: add at least one with .venue(name, session)",
            ));
        }
        let no_hand_over: Vec<String> = venues
            .iter()
            .filter(|(_, v)| !v.offers_hand_over())
            .map(|(name, _)| name.clone())
            .collect();
        limits.validate().map_err(StartError::failed)?;
        rules.validate().map_err(StartError::failed)?;
        let block = Arc::new(ControlBlock::open_or_create_with(&dir, &name, access)?);
        // A planned shutdown locked deployments: no engine starts on this
        // block until it ends (or an operator releases a lock it left).
        let flags = crate::shutdown::words::change_flags(&block);
        if flags.locked {
            return Err(StartError::failed(format!(
                "deployments are locked on {} (by pid {}, a planned shutdown): wait for it to finish, or if it died, check its report and release the lock with `killswitch unlock`",
                block.path().display(),
                flags.locked_by_pid
            )));
        }
        let lease = match lease {
            Some(cfg) => Some(
                Lease::acquire(block.clone(), cfg)
                    .map_err(|e| StartError::failed(format!("active-role lease: {e}")))?,
            ),
            None => None,
        };
        let lease_state = lease.as_ref().map(Lease::state);
        let owner = match &lease {
            Some(l) => EngineOwner::attach_under_lease(block.clone(), l.predecessor())?,
            None => EngineOwner::attach(block.clone())?,
        };
        let tripper = Tripper::new(block.clone());
        let signal_guard = match &signals {
            Some(cfg) => Some(signals::install(&tripper, cfg).map_err(|e| {
                StartError::failed(format!(
                    "signal handlers: {e} (one SignalGuard per process: is another runtime running here?)"
                ))
            })?),
            None => None,
        };
        if panic_hook {
            signals::install_panic_hook(&tripper);
        }

        // The journal, rebuilt from its newest snapshot.
        let routes = Arc::new(answers::RouteTable::default());
        let mut recovery_note = "no journal".to_string();
        let mut open_in_journal: Vec<RecoveredOrder> = Vec::new();
        let opened = match (taken_over, journal) {
            (Some(t), _) => {
                recovery_note = t.note;
                Some((t.writer.dir().to_path_buf(), t.writer, t.state))
            }
            (None, Some((jdir, mut cfg))) => {
                cfg.access = access;
                let (writer, recovery) = JournalWriter::open(&jdir, cfg)?;
                let rebuilt = crate::journal::rebuild_from(&jdir, writer.last_snapshot())?;
                recovery_note = format!(
                    "journal {}: {} records replayed {}, {} torn-tail cut(s), {} open orders and {} positions rebuilt",
                    jdir.display(),
                    rebuilt.scan.records,
                    match rebuilt.from_snapshot {
                        Some(s) => format!("from the quick checkpoint at seq {}", s.seq),
                        None => "from the first record".to_string(),
                    },
                    recovery.scan.dropped.len(),
                    rebuilt.state.open_orders.len(),
                    rebuilt.state.positions.len()
                );
                Some((jdir, writer, rebuilt.state))
            }
            (None, None) => None,
        };
        let (shared, registry, journal_dir) = match opened {
            Some((jdir, writer, state)) => {
                gateway.first_order_id = gateway.first_order_id.max(state.max_order_id.0 + 1);
                open_in_journal = state
                    .open_orders
                    .values()
                    .map(RecoveredOrder::from)
                    .collect();
                let shared: journaling::SharedJournal = Arc::new(Mutex::new(
                    journaling::JournalState::new(writer, state, &block),
                ));
                let sink = journaling::JournalSink::new(shared.clone(), block.clone());
                let registry = Registry::with_sink(Box::new(answers::AnswerSink::new(
                    Box::new(sink),
                    routes.clone(),
                )));
                (Some(shared), Arc::new(registry), Some(jdir))
            }
            None => {
                let sink = answers::AnswerSink::new(Box::new(NoopSink), routes.clone());
                (None, Arc::new(Registry::with_sink(Box::new(sink))), None)
            }
        };
        // What the journal shows open may still work at a venue.
        let recovered_count = registry
            .adopt_recovered(open_in_journal)
            .map_err(|e| StartError::failed(format!("adopting the journal's open orders: {e}")))?;
        if recovered == RecoveredOrders::AdoptIntoRegistry {
            registry.finish_recovery();
        }

        let mut sessions: Vec<(ScopeIndex, Box<dyn Venue>)> = Vec::new();
        for (venue_name, session) in venues {
            let index = block.register_name(ScopeKind::Venue, &venue_name)?;
            sessions.push((index, session));
        }
        let senders = Arc::new(crate::senders::SenderSet::default());
        let mut gw =
            Gateway::spawn_leased(block.clone(), registry.clone(), sessions, gateway, lease)?;
        let mut link = gw
            .take_drain_link()
            .ok_or_else(|| StartError::failed("the gateway gave no drain link"))?;
        link.senders = Some(senders.clone());
        let hook = journaling::checkpoint_hook(shared.clone(), block.clone(), before_checkpoint);
        let drain_deadlines = drain.cancel_deadline + drain.gateway_ack_deadline;
        let dr = Drain::spawn(link, drain, hook)
            .map_err(|e| StartError::failed(format!("drain thread: {e}")))?;
        let recovery = if recovered_count > 0 && recovered == RecoveredOrders::CancelBeforeTrading {
            let deadline = recovery_deadline.unwrap_or(drain_deadlines + Duration::from_secs(30));
            Some(dr.wait_outcome(deadline).map_err(|e| {
                StartError::failed(format!(
                    "start-up recovery of the {recovered_count} order(s) the journal shows open: {e}"
                ))
            })?)
        } else {
            None
        };
        let at_start = block.state();
        Ok(Runtime {
            gate: Gate::new(block.clone()),
            tripper,
            block,
            owner: Some(owner),
            registry,
            journal: shared,
            journal_dir,
            gateway: Some(gw),
            drain: Some(dr),
            signals: signal_guard,
            routes,
            senders,
            strategies: Mutex::new(Vec::new()),
            stop: Arc::new(AtomicBool::new(false)),
            answer_ring,
            recovery,
            recovered_count,
            recovery_note,
            start_generation: at_start.generation(),
            latched_at_start: at_start.mode() == crate::control::Mode::Kill,
            started: Instant::now(),
            snapshot_policy,
            send_fence,
            lease: lease_state,
            no_hand_over,
            stopped: None,
            limits,
            references: ReferencePrices::new(),
            heartbeats: VenueHeartbeats::default(),
            rule_book: (rules.any() || limits.execution_throttle.is_some())
                .then(|| RuleBook::new(rules, limits.execution_throttle)),
            rules_due_ns: 0,
        })
    }
}

/// A running engine: control block, journal, registry, gateway and drain
/// threads, signal handlers. Held by the thread that started it, which
/// supervises and stops it; see the module docs. Dropping it shuts it down
/// as [`Runtime::shutdown`] does.
pub struct Runtime {
    block: Arc<ControlBlock>,
    gate: Gate,
    tripper: Tripper,
    owner: Option<EngineOwner>,
    registry: Arc<Registry>,
    journal: Option<journaling::SharedJournal>,
    journal_dir: Option<PathBuf>,
    gateway: Option<GatewayHandle>,
    drain: Option<DrainHandle>,
    signals: Option<SignalGuard>,
    routes: Arc<answers::RouteTable>,
    senders: Arc<crate::senders::SenderSet>,
    /// Live strategy handles (name, alive marker).
    strategies: Mutex<Vec<(String, Weak<()>)>>,
    stop: Arc<AtomicBool>,
    answer_ring: usize,
    recovery: Option<DrainOutcome>,
    recovered_count: usize,
    recovery_note: String,
    start_generation: u64,
    /// The switch was at KILL when the runtime started (from an earlier run).
    latched_at_start: bool,
    started: Instant,
    snapshot_policy: SnapshotPolicy,
    send_fence: SendFence,
    lease: Option<Arc<LeaseState>>,
    // No `handed_over` flag: whether the lease was handed over is read
    // from the lease itself (`Runtime::handed_over`).
    /// Venues whose session cannot be handed over
    /// ([`Venue::offers_hand_over`] false): a failover is refused.
    no_hand_over: Vec<String>,
    stopped: Option<ShutdownReport>,
    limits: LimitConfig,
    references: ReferencePrices,
    heartbeats: VenueHeartbeats,
    /// The automatic rules and the execution throttle, if any.
    rule_book: Option<RuleBook>,
    /// When the rules are evaluated next (`CLOCK_MONOTONIC` ns).
    rules_due_ns: u64,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("block", &self.block.path())
            .field("journal", &self.journal_dir)
            .finish()
    }
}

impl Runtime {
    /// A builder for the engine `name`, whose control block is
    /// `dir/killswitch.<name>` (in production `/dev/shm`, or
    /// [`control::default_dir`](crate::control::default_dir)).
    pub fn builder(dir: impl AsRef<Path>, name: &str) -> RuntimeBuilder {
        RuntimeBuilder {
            dir: dir.as_ref().to_path_buf(),
            name: name.to_string(),
            access: Access::OWNER_ONLY,
            venues: Vec::new(),
            journal: None,
            taken_over: None,
            drain: DrainConfig::emergency(),
            gateway: GatewayConfig::default(),
            signals: None,
            panic_hook: false,
            snapshot_policy: SnapshotPolicy::Never,
            recovered: RecoveredOrders::CancelBeforeTrading,
            answer_ring: 16_384,
            before_checkpoint: None,
            recovery_deadline: None,
            send_fence: SendFence::Auto,
            limits: LimitConfig::default(),
            rules: RuleConfig::default(),
            lease: None,
        }
    }

    /// The handle of strategy `name` (registered as a strategy scope in
    /// the control block): submit, cancel, replace, answers. One live
    /// handle per name; move it into the strategy's thread.
    pub fn strategy(&self, name: &str) -> Result<StrategyHandle, RuntimeError> {
        if self.stopped.is_some() || self.stop.load(std::sync::atomic::Ordering::Acquire) {
            return Err(RuntimeError::Stopping);
        }
        let strategy = self.block.register_name(ScopeKind::Strategy, name)?;
        let mut live = self.strategies.lock().unwrap_or_else(|p| p.into_inner());
        live.retain(|(_, alive)| alive.strong_count() > 0);
        if live.iter().any(|(n, _)| n == name) {
            return Err(RuntimeError::StrategyTaken(name.to_string()));
        }
        let alive = Arc::new(());
        live.push((name.to_string(), Arc::downgrade(&alive)));
        let (tx, rx) = rtrb::RingBuffer::new(self.answer_ring);
        let lost = Arc::new(AtomicU64::new(0));
        self.routes.add(
            strategy,
            answers::Route {
                tx,
                lost: lost.clone(),
            },
        );
        let sender = self
            .gateway
            .as_ref()
            .ok_or(RuntimeError::Stopping)?
            .order_sender();
        Ok(StrategyHandle {
            name: name.to_string(),
            strategy,
            sender,
            answers: rx,
            lost,
            lost_reported: 0,
            registry: self.registry.clone(),
            block: self.block.clone(),
            stop: self.stop.clone(),
            limits: self.limits.checks_orders().then(|| {
                Box::new(std::cell::RefCell::new(PreTradeCheck::new(
                    self.limits,
                    self.references.clone(),
                )))
            }),
            _alive: alive,
        })
    }

    /// A send guard for a thread of strategy `name` that writes to its
    /// venue itself (see [`crate::senders`]); its answers come to the
    /// strategy's [`StrategyHandle`] like any other. One guard per sending
    /// thread; several guards may share a strategy name.
    pub fn send_guard(&self, name: &str) -> Result<SendGuard, RuntimeError> {
        if self.stopped.is_some() || self.stop.load(std::sync::atomic::Ordering::Acquire) {
            return Err(RuntimeError::Stopping);
        }
        let strategy = self.block.register_name(ScopeKind::Strategy, name)?;
        let sender = self
            .gateway
            .as_ref()
            .ok_or(RuntimeError::Stopping)?
            .order_sender();
        Ok(SendGuard::new(
            &self.senders,
            self.send_fence,
            self.gate.clone(),
            self.registry.clone(),
            sender.next_id.clone(),
            strategy,
        ))
    }

    /// The reference prices: the price collar's anchors and the marks the
    /// loss rules value positions at. Set them from any thread (market
    /// data, an operator); cheap to clone.
    pub fn reference_prices(&self) -> ReferencePrices {
        self.references.clone()
    }

    /// The venues' heartbeats the `venue-heartbeat` rule reads: the venue
    /// adapters (or the main loop) beat them on every sign of life.
    pub fn venue_heartbeats(&self) -> VenueHeartbeats {
        self.heartbeats.clone()
    }

    /// The rules' gauges after their last evaluation (all unconfigured
    /// without rules).
    pub fn rule_gauges(&self) -> [crate::rules::RuleGauge; 7] {
        self.rule_book
            .as_ref()
            .map_or([Default::default(); 7], |b| b.gauges())
    }

    /// A cheap token that says whether the switch is tripped.
    pub fn trip_token(&self) -> TripToken {
        TripToken::new(self.gate.clone())
    }

    /// The read-only gate.
    pub fn gate(&self) -> Gate {
        self.gate.clone()
    }

    /// A tripper on the engine's block.
    pub fn tripper(&self) -> Tripper {
        self.tripper.clone()
    }

    /// An operator on the engine's block (scoped trips, reset, status): for
    /// an admin endpoint running inside the engine.
    pub fn operator(&self) -> Operator {
        Operator::new(self.block.clone())
    }

    /// A read-only view for a telemetry or status thread, usable while
    /// this thread is inside [`Runtime::supervise_with`].
    pub fn monitor(&self) -> Monitor {
        Monitor {
            block: self.block.clone(),
            registry: self.registry.clone(),
            journal: self.journal.clone(),
        }
    }

    /// A read-only status snapshot (what `killswitch status` shows).
    pub fn status(&self) -> Status {
        Status::read(&self.block)
    }

    /// The control block (read-only; names).
    pub fn block(&self) -> &ControlBlock {
        &self.block
    }

    /// What journal recovery found at start.
    pub fn recovery_note(&self) -> &str {
        &self.recovery_note
    }

    /// The start-up drain of the orders an earlier run left open, if one ran.
    pub fn recovery(&self) -> Option<&DrainOutcome> {
        self.recovery.as_ref()
    }

    /// How many orders the journal showed open at start (adopted).
    pub fn recovered_orders(&self) -> usize {
        self.recovered_count
    }

    /// True when the switch was at KILL when the runtime started (an
    /// earlier run's kill, latched): [`Runtime::supervise`] does not count
    /// it as this run's kill, and the engine trades only after a reset.
    pub fn latched_at_start(&self) -> bool {
        self.latched_at_start
    }

    /// For the successor of a failover: a KILL already in force when this
    /// runtime started was aimed at the orders it took over (adopted into
    /// its registry), not an earlier run's latched kill. From here
    /// [`Runtime::supervise`] counts it as this run's kill (the drain
    /// thread drains it at start like any other: it cancels the adopted
    /// orders) and returns once it is drained, as the engine it replaces
    /// would have. Returns true when there was such a KILL.
    pub fn own_kill_in_force(&mut self) -> bool {
        std::mem::take(&mut self.latched_at_start)
    }

    /// The shutdown level the signal handlers asked for so far.
    pub fn signal_level(&self) -> ShutdownLevel {
        self.signals
            .as_ref()
            .map_or(ShutdownLevel::None, |s| s.state().level())
    }

    /// What the signal handlers record (shared: a supervise hook reads
    /// the level to start the planned shutdown); `None` without handlers.
    pub fn signal_state(&self) -> Option<Arc<signals::SignalState>> {
        self.signals.as_ref().map(|g| g.state().clone())
    }

    /// The journal directory, if any.
    pub fn journal_dir(&self) -> Option<&Path> {
        self.journal_dir.as_deref()
    }

    /// The journal's last sequence number (0 without a journal).
    pub fn journal_last_seq(&self) -> u64 {
        self.journal
            .as_ref()
            .and_then(|j| j.lock().ok().map(|j| j.writer.next_seq().saturating_sub(1)))
            .unwrap_or(0)
    }

    /// Every order registered, sorted by id (one lock; for reports).
    pub fn orders(&self) -> Vec<OrderRecord> {
        self.registry.all_orders()
    }

    /// One order.
    pub fn order(&self, id: OrderId) -> Option<OrderRecord> {
        self.registry.get(id)
    }

    /// Orders open now.
    pub fn open_orders(&self) -> usize {
        self.registry.open_count()
    }

    /// Every non-zero position: ((venue, instrument, account), qty).
    pub fn positions(&self) -> Vec<((ScopeIndex, ScopeIndex, ScopeIndex), Qty)> {
        self.registry.positions()
    }

    /// The positions the journal rebuilt at start (an earlier run's).
    pub fn journal_positions(&self) -> Vec<(PositionKey, Position)> {
        self.monitor().journal_positions()
    }

    /// The registry's counters.
    pub fn registry_counters(&self) -> RegistryCounters {
        self.registry.counters()
    }

    /// The first anomalies the registry refused (bounded).
    pub fn anomalies(&self) -> Vec<Anomaly> {
        self.registry.anomalies()
    }

    /// The gateway's counters (after shutdown: its final ones).
    pub fn gateway_stats(&self) -> Option<GatewayStats> {
        match (&self.gateway, &self.stopped) {
            (Some(g), _) => Some(g.stats()),
            (None, Some(r)) => r.gateway.as_ref().ok().copied(),
            _ => None,
        }
    }

    /// The active-role lease this engine holds (or held), with
    /// [`RuntimeBuilder::lease`]: its epoch, and whether the gateway has
    /// been fenced by a newer one (it then writes nothing more; the
    /// engine should stop).
    pub fn lease(&self) -> Option<Arc<LeaseState>> {
        self.lease.clone()
    }

    /// Time since start.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        if self.stopped.is_none() {
            let _ = self.shutdown_with(Duration::from_secs(2));
        }
    }
}
