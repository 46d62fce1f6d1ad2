//! The drain: a dedicated thread that cancels every open order in scope
//! when the switch is tripped to KILL, and reports each order it could not
//! get confirmed.
//!
//! It waits on the state word with spin, then yield, then sleeps capped at
//! tens of microseconds ([`crate::backoff`]); no futex or condition variable
//! sits on the reaction path. Pinned to a core when one is configured
//! ([`DrainConfig::core`]), unpinned otherwise (a 2-core box).
//!
//! On start, if the registry holds orders an earlier run left open
//! ([`Registry::adopt_recovered`](crate::registry::Registry::adopt_recovered)),
//! the drain first cancels them (mass cancel where the venue has it, else
//! by id) or reports them `CancelUnknown` by id, then lets the gateway take
//! new orders ([`Registry::finish_recovery`](crate::registry::Registry::finish_recovery)).
//!
//! On every new state-word generation that puts KILL on something (global,
//! or a scope level), the drain thread does:
//! 1. publish `generation`, phase `AwaitingGatewayAck`, `t_trip_seen`, and
//!    the "drain incomplete" record (cleared only if the drain ends clean);
//! 2. wait until the gateway's `acked_generation` reaches the generation:
//!    from then on no new order reaches a venue and every order written is
//!    in the registry. Past [`DrainConfig::gateway_ack_deadline`] it
//!    publishes the failure (phase `GatewayAckLate`: an operator or
//!    `killswitch emergency` escalates) **and keeps waiting**: when the
//!    acknowledgement comes, it goes on as below. It gives up only when the
//!    thread is told to stop, and then the record stays set;
//! 3. snapshot the registry's open orders in scope: under one hold of the
//!    registry lock when a mass cancel goes out in this generation (the
//!    mass cancel is enqueued first, and its answers cannot close an order
//!    before the copy); otherwise in chunks (16 orders, then 128 per lock
//!    hold), each chunk's single cancels enqueued before the next is
//!    copied, so the first cancel does not wait for the whole book (see
//!    `RegistryView::open_orders_below` for why no order is missed);
//! 4. per venue: one mass cancel where the venue supports it and the whole
//!    venue is killed (a scoped kill of a strategy must not cancel other
//!    strategies' orders), single cancels otherwise; pushed into the
//!    gateway's cancel ring with back-pressure, never dropped;
//! 5. track the orders until each is terminal; at half the deadline re-send
//!    single cancels once for those still open; at the deadline mark the
//!    rest `CancelUnknown` ("force cancel local") and report each by id.
//!    Meanwhile it re-reads the state word: a newer generation that puts
//!    KILL on more orders (a global kill during a scoped drain stuck on a
//!    venue that ignores cancels) is acted on at once: wait for the
//!    gateway's acknowledgement of it, snapshot, cancel what is newly in
//!    scope (with its own deadline), and keep tracking the older orders;
//! 6. call the checkpoint hook, then publish `Done` (or `Failed`).
//!
//! Fills that race the cancels are applied by the gateway to the registry
//! like any other answer, and the report lists them.
//!
//! # Invariants
//! * The drain never writes to a venue; it only enqueues
//!   [`CancelRequest`](crate::gateway::CancelRequest)s.
//! * A snapshot is taken only after `acked_generation >= generation`
//!   (Acquire), which pairs with the gateway's Release store.
//! * A generation that puts KILL on orders is never marked handled without
//!   being acted on: a missed deadline is published, not taken as the end.
//! * Every wait but the gateway's acknowledgement has a deadline; that one
//!   ends when the acknowledgement comes or the thread is stopped, and its
//!   deadline publishes the failure. The registry's mutex is held only
//!   briefly.
//! * `orders_unknown` in the control block accumulates across drains until a
//!   reset, so a later drain cannot hide an earlier one's unknown orders.
//! * If the thread dies (a panic), [`DrainHandle::try_outcome`] says so;
//!   it never looks like "no outcome yet".

mod report;
mod run;
mod track;

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, TryRecvError};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::backoff::{Backoff, BackoffConfig};
use crate::clock::mono_ns;
use crate::control::{ControlBlock, Mode, ScopeKind, StateWord};
use crate::gateway::DrainLink;
pub use report::{
    DrainDied, DrainError, DrainFill, DrainOutcome, DrainTimings, Escalation, UnknownOrder,
    UnknownReason, WaitError,
};

/// The quick-checkpoint hook: called once the cancel phase is over, with the
/// outcome so far; returns the journal sequence number of the checkpoint.
pub type CheckpointHook = Box<dyn FnMut(&DrainOutcome) -> Result<u64, String> + Send>;

/// Drain settings.
#[derive(Clone, Debug)]
pub struct DrainConfig {
    /// Core to pin the thread to; `None` leaves it unpinned.
    pub core: Option<usize>,
    /// How long the gateway has to acknowledge a kill generation before the
    /// drain publishes the failure (it keeps waiting after that).
    pub gateway_ack_deadline: Duration,
    /// How long to wait for cancel answers before `CancelUnknown`.
    pub cancel_deadline: Duration,
    /// Use venue mass cancel where possible.
    pub use_mass_cancel: bool,
    /// How the thread waits for a trip.
    pub backoff: BackoffConfig,
    /// `SCHED_FIFO` priority (1..=99) for the drain thread; `None` keeps
    /// the normal policy. Refused with a [`crate::realtime::RealtimeError`]
    /// (and no thread) where the system does not allow it. Give it a
    /// back-off that sleeps (the default) unless the thread has a core of
    /// its own: a real-time thread that never sleeps keeps every normal
    /// thread off its core.
    pub realtime: Option<u8>,
}

impl DrainConfig {
    /// Emergency shutdown: cancel answers within 5 s, gateway ack within 1 s.
    pub fn emergency() -> DrainConfig {
        DrainConfig {
            core: None,
            gateway_ack_deadline: Duration::from_secs(1),
            cancel_deadline: Duration::from_secs(5),
            use_mass_cancel: true,
            backoff: BackoffConfig::default(),
            realtime: None,
        }
    }

    /// Planned shutdown: cancel answers within 60 s, gateway ack within 5 s.
    pub fn planned() -> DrainConfig {
        DrainConfig {
            gateway_ack_deadline: Duration::from_secs(5),
            cancel_deadline: Duration::from_secs(60),
            ..DrainConfig::emergency()
        }
    }
}

impl Default for DrainConfig {
    fn default() -> Self {
        DrainConfig::emergency()
    }
}

/// Starts the drain thread (the [`Runtime`](crate::runtime::Runtime) does
/// it for an engine built on it).
pub struct Drain;

impl Drain {
    /// Spawns the drain thread on the gateway's `link` (which carries the
    /// gateway's block: the drain waits on that gateway's acknowledgement
    /// and nothing else). `checkpoint` is called after each drain's cancel
    /// phase (pass `None` without a journal).
    pub fn spawn(
        link: DrainLink,
        cfg: DrainConfig,
        checkpoint: Option<CheckpointHook>,
    ) -> io::Result<DrainHandle> {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        let thread_stop = stop.clone();
        let block = link.block.clone();
        let pid = std::process::id();
        let start_ticks = crate::control::proc_start_ticks(pid).unwrap_or(0);
        let (ready_tx, ready_rx) = mpsc::sync_channel(1);
        let cfg_realtime = cfg.realtime.is_some();
        let join = std::thread::Builder::new()
            .name("ks-drain".into())
            .spawn(move || {
                if let Some(id) = cfg.core {
                    core_affinity::set_for_current(core_affinity::CoreId { id });
                }
                if let Some(priority) = cfg.realtime {
                    if let Err(e) = crate::realtime::set_current_thread_fifo("drain", priority) {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                }
                let _ = ready_tx.send(Ok(()));
                let mut d = run::Drainer {
                    block,
                    link,
                    cfg,
                    checkpoint,
                    me: (pid, start_ticks),
                    stop: thread_stop,
                };
                // A panic anywhere in the drain is reported as its death
                // (the engine's panic hook, if any, has already tripped
                // KILL with the message); the thread then ends.
                let watched =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| d.watch(&tx)));
                if let Err(payload) = watched {
                    let msg = payload
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| payload.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "non-string panic payload".into());
                    let _ = tx.send(Err(format!("the drain thread panicked: {msg}")));
                }
            })?;
        // The spawn answers for the scheduling policy asked for: a refused
        // SCHED_FIFO is an error here, not a drain silently at normal
        // priority.
        // Waited for only when a policy was asked for: otherwise waiting
        // for the new thread to be scheduled (milliseconds on a loaded
        // machine) would only delay the start (a promoted standby's first
        // order). The thread acts on whatever it finds when it runs.
        if let Some(Err(e)) = cfg_realtime.then(|| ready_rx.recv().ok()).flatten() {
            let _ = join.join();
            return Err(io::Error::new(io::ErrorKind::PermissionDenied, e));
        }
        Ok(DrainHandle {
            stop,
            outcomes: rx,
            died: OnceLock::new(),
            join: Some(join),
        })
    }
}

/// The running drain. Dropping it stops and joins the thread. Held by the
/// thread that supervises the engine (it reads the drain's reports).
pub struct DrainHandle {
    stop: Arc<AtomicBool>,
    outcomes: Receiver<Result<DrainOutcome, String>>,
    died: OnceLock<DrainDied>,
    join: Option<JoinHandle<()>>,
}

impl DrainHandle {
    /// The next finished drain's report, waiting up to `timeout`. Tells a
    /// timeout apart from a drain thread that is gone.
    pub fn wait_outcome(&self, timeout: Duration) -> Result<DrainOutcome, WaitError> {
        if let Some(d) = self.died.get() {
            return Err(WaitError::Died(d.clone()));
        }
        match self.outcomes.recv_timeout(timeout) {
            Ok(Ok(o)) => Ok(o),
            Ok(Err(msg)) => Err(WaitError::Died(self.mark_died(msg))),
            Err(RecvTimeoutError::Timeout) => Err(WaitError::Timeout(timeout)),
            Err(RecvTimeoutError::Disconnected) => Err(WaitError::Died(
                self.mark_died("the drain thread ended without a report".into()),
            )),
        }
    }

    /// A finished drain's report if one is waiting (`Ok(None)`: none yet),
    /// or `Err` when the drain thread is gone (it panicked or ended): from
    /// then on nobody cancels orders on a trip, a fatal condition.
    pub fn try_outcome(&self) -> Result<Option<DrainOutcome>, DrainDied> {
        if let Some(d) = self.died.get() {
            return Err(d.clone());
        }
        match self.outcomes.try_recv() {
            Ok(Ok(o)) => Ok(Some(o)),
            Ok(Err(msg)) => Err(self.mark_died(msg)),
            Err(TryRecvError::Empty) => Ok(None),
            Err(TryRecvError::Disconnected) => {
                Err(self.mark_died("the drain thread ended without a report".into()))
            }
        }
    }

    fn mark_died(&self, why: String) -> DrainDied {
        self.died.get_or_init(|| DrainDied { why }).clone()
    }

    /// Stops the thread (a drain in progress finishes first, except a wait
    /// for the gateway's acknowledgement, which is abandoned and reported)
    /// and joins it.
    pub fn shutdown(mut self) -> Result<(), String> {
        self.stop_and_join()
    }

    fn stop_and_join(&mut self) -> Result<(), String> {
        self.stop.store(true, Ordering::Release);
        match self.join.take() {
            Some(j) => j.join().map_err(|_| "drain thread panicked".to_string()),
            None => Ok(()),
        }
    }
}

impl Drop for DrainHandle {
    fn drop(&mut self) {
        let _ = self.stop_and_join();
    }
}

/// True when the word (and, for scoped words, the scope tables) puts KILL
/// on anything.
pub fn kill_in_force(block: &ControlBlock, w: StateWord) -> bool {
    if w.mode() == Mode::Kill {
        return true;
    }
    w.scoped()
        && ScopeKind::ALL.iter().any(|k| {
            k.levels(&block.layout().levels)
                .iter()
                .any(|l| Mode::from_level(l.load(Ordering::Acquire)) == Mode::Kill)
        })
}

impl run::Drainer {
    /// The thread's loop: start-up recovery, then one drain per new
    /// generation that puts KILL on something.
    fn watch(&mut self, tx: &mpsc::Sender<Result<DrainOutcome, String>>) {
        if self.link.registry.recovery_pending() {
            let outcome = self.run_recovery();
            let _ = tx.send(Ok(outcome));
        }
        let block = self.block.clone();
        let state = block.state_atomic();
        let mut handled = 0u64;
        let mut backoff = Backoff::new(self.cfg.backoff);
        loop {
            let w = StateWord(state.load(Ordering::Acquire));
            if w.generation() != handled {
                handled = w.generation();
                if kill_in_force(&self.block, w) {
                    let t_seen = mono_ns();
                    let outcome = self.run(w, t_seen);
                    // Every generation the drain looked at was acted on (or
                    // did not widen the kill); a newer one is drained next.
                    handled = outcome.last_generation;
                    let _ = tx.send(Ok(outcome));
                    backoff.reset();
                    continue;
                }
            }
            if self.stop.load(Ordering::Acquire) {
                return;
            }
            backoff.snooze();
        }
    }
}
