//! The drain: a dedicated thread that cancels every open order in scope
//! when the switch is tripped to KILL, and reports each order it could not
//! get confirmed.
//!
//! It waits on the state word with spin, then yield, then sleeps capped at
//! tens of microseconds ([`crate::backoff`]); no futex or condition variable
//! sits on the reaction path. Pinned to a core when one is configured
//! ([`DrainConfig::core`]), unpinned otherwise (a 2-core box).
//!
//! On every new state-word generation that puts KILL on something (global,
//! or a scope level), [`run_drain`] does:
//! 1. publish `generation`, phase `AwaitingGatewayAck`, `t_trip_seen`;
//! 2. wait until the gateway's `acked_generation` reaches the generation
//!    (deadline [`DrainConfig::gateway_ack_deadline`]): from then on no new
//!    order reaches a venue and every order written is in the registry;
//! 3. snapshot the registry's open orders in scope;
//! 4. per venue: one mass cancel where the venue supports it and the whole
//!    venue is killed (a scoped kill of a strategy must not cancel other
//!    strategies' orders), single cancels otherwise; pushed into the
//!    gateway's cancel ring with back-pressure, never dropped;
//! 5. track the orders until each is terminal; at half the deadline re-send
//!    single cancels once for those still open; at the deadline mark the
//!    rest `CancelUnknown` ("force cancel local") and report each by id;
//! 6. call the checkpoint hook, then publish `Done` (or `Failed`).
//!
//! Fills that race the cancels are applied by the gateway to the registry
//! like any other answer, and the report lists them.
//!
//! # Invariants
//! * The drain never writes to a venue; it only enqueues [`CancelRequest`]s.
//! * The snapshot is taken only after `acked_generation >= generation`
//!   (Acquire), which pairs with the gateway's Release store.
//! * Every wait has a deadline; the drain never blocks forever on the
//!   gateway, a venue, or the registry's mutex (held only briefly).
//! * `orders_unknown` in the control block accumulates across drains until a
//!   reset, so a later drain cannot hide an earlier one's unknown orders.

mod report;

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::backoff::{Backoff, BackoffConfig};
use crate::clock::mono_ns;
use crate::control::{ControlBlock, DrainPhase, DrainStatus, Mode, ScopeKind, StateWord};
use crate::gateway::{CancelRequest, DrainLink};
use crate::order::{OrderId, OrderState, ScopeIndex};
use crate::registry::OrderRecord;
use crate::venue::MassCancelScope;
pub use report::{DrainError, DrainFill, DrainOutcome, DrainTimings, UnknownOrder, UnknownReason};

/// The quick-checkpoint hook: called once the cancel phase is over, with the
/// outcome so far; returns the journal sequence number of the checkpoint.
pub type CheckpointHook = Box<dyn FnMut(&DrainOutcome) -> Result<u64, String> + Send>;

/// Drain settings.
#[derive(Clone, Debug)]
pub struct DrainConfig {
    /// Core to pin the thread to; `None` leaves it unpinned.
    pub core: Option<usize>,
    /// How long to wait for the gateway to acknowledge the kill generation.
    pub gateway_ack_deadline: Duration,
    /// How long to wait for cancel answers before `CancelUnknown`.
    pub cancel_deadline: Duration,
    /// Use venue mass cancel where possible.
    pub use_mass_cancel: bool,
    /// How the thread waits for a trip.
    pub backoff: BackoffConfig,
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

/// Starts the drain thread.
pub struct Drain;

impl Drain {
    /// Spawns the drain thread. `checkpoint` is called after each drain's
    /// cancel phase (pass `None` until the journal exists).
    pub fn spawn(
        block: Arc<ControlBlock>,
        link: DrainLink,
        cfg: DrainConfig,
        checkpoint: Option<CheckpointHook>,
    ) -> io::Result<DrainHandle> {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        let thread_stop = stop.clone();
        let join = std::thread::Builder::new()
            .name("ks-drain".into())
            .spawn(move || {
                if let Some(id) = cfg.core {
                    core_affinity::set_for_current(core_affinity::CoreId { id });
                }
                let mut d = Drainer {
                    block,
                    link,
                    cfg,
                    checkpoint,
                };
                d.watch(&thread_stop, &tx);
            })?;
        Ok(DrainHandle {
            stop,
            outcomes: rx,
            join: Some(join),
        })
    }
}

/// The running drain. Dropping it stops and joins the thread.
pub struct DrainHandle {
    stop: Arc<AtomicBool>,
    outcomes: Receiver<DrainOutcome>,
    join: Option<JoinHandle<()>>,
}

impl DrainHandle {
    /// The next finished drain's report, waiting up to `timeout`.
    pub fn wait_outcome(&self, timeout: Duration) -> Option<DrainOutcome> {
        self.outcomes.recv_timeout(timeout).ok()
    }

    /// A finished drain's report, if one is waiting.
    pub fn try_outcome(&self) -> Option<DrainOutcome> {
        self.outcomes.try_recv().ok()
    }

    /// Stops the thread (a drain in progress finishes first) and joins it.
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

fn order_killed(block: &ControlBlock, global: bool, o: &OrderRecord) -> bool {
    global
        || [
            (ScopeKind::Venue, o.tags.venue),
            (ScopeKind::Strategy, o.tags.strategy),
            (ScopeKind::Instrument, o.tags.instrument),
            (ScopeKind::Account, o.tags.account),
        ]
        .iter()
        .any(|(k, i)| block.scope_level(*k, *i) == Mode::Kill)
}

/// Counts one enqueued cancel request and publishes it.
#[inline]
fn note_enqueued(out: &mut DrainOutcome, ds: &DrainStatus, mass: bool) {
    if out.cancel_requests == 0 {
        out.timings.t_first_cancel = mono_ns();
        ds.t_first_cancel
            .store(out.timings.t_first_cancel, Ordering::Release);
    }
    out.cancel_requests += 1;
    if mass {
        out.mass_cancels += 1;
    }
    ds.cancels_sent
        .store(out.cancel_requests, Ordering::Release);
}

struct Drainer {
    block: Arc<ControlBlock>,
    link: DrainLink,
    cfg: DrainConfig,
    checkpoint: Option<CheckpointHook>,
}

impl Drainer {
    fn watch(&mut self, stop: &AtomicBool, tx: &Sender<DrainOutcome>) {
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
                    let outcome = self.run_drain(w, t_seen);
                    let _ = tx.send(outcome);
                    backoff.reset();
                    continue;
                }
            }
            if stop.load(Ordering::Acquire) {
                return;
            }
            backoff.snooze();
        }
    }

    /// One drain of generation `w`; see the module docs.
    fn run_drain(&mut self, w: StateWord, t_seen: u64) -> DrainOutcome {
        let block = self.block.clone();
        let ds = block.drain_status();
        let g = w.generation();
        let set = |a: &AtomicU64, v: u64| a.store(v, Ordering::Release);
        set(&ds.phase, DrainPhase::AwaitingGatewayAck as u64);
        set(&ds.generation, g);
        set(&ds.t_trip_seen, t_seen);
        for a in [
            &ds.open_at_snapshot,
            &ds.cancels_sent,
            &ds.orders_confirmed,
            &ds.fills_during_drain,
            &ds.checkpoint_seq,
            &ds.t_gateway_ack,
            &ds.t_first_cancel,
            &ds.t_last_ack,
            &ds.t_checkpoint,
            &ds.t_done,
            &ds.t_trip,
        ] {
            set(a, 0);
        }
        let global = w.mode() == Mode::Kill;
        let mut out = DrainOutcome::new(g, global);
        out.timings.t_trip_seen = t_seen;

        // 2. The gateway's acknowledgement.
        let start = Instant::now();
        let ack_deadline = start + self.cfg.gateway_ack_deadline;
        let acked = &block.gateway_status().acked_generation;
        let mut b = Backoff::new(BackoffConfig::busy());
        while acked.load(Ordering::Acquire) < g {
            if Instant::now() >= ack_deadline {
                return self.fail_without_ack(out);
            }
            b.snooze();
        }
        out.timings.t_gateway_ack = mono_ns();
        set(&ds.t_gateway_ack, out.timings.t_gateway_ack);

        // 3. Mass cancels, then the snapshot (after the Acquire load above).
        // A fully killed venue's mass cancel does not need the snapshot, so
        // it is enqueued first, but under the registry lock: the gateway
        // applies the venue's answers under that lock, so none of the orders
        // it cancels can close before the snapshot below has copied them.
        let mass_venues: Vec<ScopeIndex> = self.mass_cancel_venues(global);
        let mut mass_sent = Vec::with_capacity(mass_venues.len());
        let DrainLink {
            cancels, registry, ..
        } = &mut self.link;
        let snapshot = registry.read(|view| {
            for &venue in &mass_venues {
                // Only a venue with open orders (all in scope: it is killed).
                if view.open_on_venue(venue) == 0 {
                    continue;
                }
                let req = CancelRequest::MassCancel {
                    venue,
                    scope: MassCancelScope::All,
                };
                // Never wait for ring space under the lock: a full ring falls
                // back to the ordinary path after the snapshot.
                if cancels.try_push(req).is_ok() {
                    note_enqueued(&mut out, ds, true);
                    mass_sent.push(venue);
                }
            }
            view.open_orders(|o| order_killed(&block, global, o))
        });
        out.open_at_snapshot = snapshot.len();
        set(&ds.open_at_snapshot, snapshot.len() as u64);
        set(&ds.phase, DrainPhase::Cancelling as u64);

        // 4. Cancels.
        let cancel_deadline = Instant::now() + self.cfg.cancel_deadline;
        let mut not_sent = Vec::new();
        self.send_cancels(
            &snapshot,
            &mass_venues,
            &mass_sent,
            cancel_deadline,
            &mut out,
            &mut not_sent,
        );
        if let Some(t) = block.last_trip() {
            out.timings.t_trip = t.mono_ns;
            set(&ds.t_trip, t.mono_ns);
        }

        // 5. Track answers.
        self.track(&snapshot, cancel_deadline, &mut out, &not_sent);
        out.fills_during_drain = self.fills_since(&snapshot);
        set(
            &ds.fills_during_drain,
            out.fills_during_drain
                .iter()
                .map(|f| u64::from(f.fills))
                .sum(),
        );

        // 6. Checkpoint.
        set(&ds.phase, DrainPhase::Checkpointing as u64);
        if let Some(hook) = self.checkpoint.as_mut() {
            match hook(&out) {
                Ok(seq) => {
                    out.checkpoint_seq = Some(seq);
                    out.timings.t_checkpoint = mono_ns();
                    set(&ds.checkpoint_seq, seq);
                    set(&ds.t_checkpoint, out.timings.t_checkpoint);
                }
                Err(e) => out.error = Some(DrainError::CheckpointFailed(e)),
            }
        }
        out.timings.t_done = mono_ns();
        set(&ds.t_done, out.timings.t_done);
        let phase = if out.error.is_some() {
            DrainPhase::Failed
        } else {
            DrainPhase::Done
        };
        set(&ds.phase, phase as u64);
        out
    }

    fn fail_without_ack(&mut self, mut out: DrainOutcome) -> DrainOutcome {
        let ds = self.block.drain_status();
        out.error = Some(DrainError::GatewayAckTimeout {
            waited: self.cfg.gateway_ack_deadline,
        });
        out.timings.t_done = mono_ns();
        ds.t_done.store(out.timings.t_done, Ordering::Release);
        ds.phase.store(DrainPhase::Failed as u64, Ordering::Release);
        out
    }

    /// Venues that get one mass cancel: mass cancel on and supported, and
    /// the whole venue killed (a scoped kill of a strategy must not cancel
    /// other strategies' orders).
    fn mass_cancel_venues(&self, global: bool) -> Vec<ScopeIndex> {
        if !self.cfg.use_mass_cancel {
            return Vec::new();
        }
        self.link
            .venues
            .iter()
            .filter(|v| {
                v.mass_cancel
                    && (global || self.block.scope_level(ScopeKind::Venue, v.index) == Mode::Kill)
            })
            .map(|v| v.index)
            .collect()
    }

    /// Enqueues the cancels not yet enqueued: mass cancels of `mass_venues`
    /// with orders in the snapshot that are not in `mass_sent`, and single
    /// cancels of the other venues' orders.
    fn send_cancels(
        &mut self,
        snapshot: &[OrderRecord],
        mass_venues: &[ScopeIndex],
        mass_sent: &[ScopeIndex],
        deadline: Instant,
        out: &mut DrainOutcome,
        not_sent: &mut Vec<OrderId>,
    ) {
        let ds = self.block.drain_status();
        let mut b = Backoff::new(BackoffConfig::busy());
        let mass: Vec<ScopeIndex> = mass_venues
            .iter()
            .copied()
            .filter(|v| mass_sent.contains(v) || snapshot.iter().any(|o| o.tags.venue == *v))
            .collect();
        let requests = mass
            .iter()
            .filter(|v| !mass_sent.contains(v))
            .map(|&venue| CancelRequest::MassCancel {
                venue,
                scope: MassCancelScope::All,
            })
            .chain(
                snapshot
                    .iter()
                    .filter(|o| !mass.contains(&o.tags.venue))
                    .map(|o| CancelRequest::Cancel(o.id)),
            );
        for req in requests {
            match self.link.cancels.push_until(req, deadline, &mut b) {
                Ok(()) => note_enqueued(out, ds, matches!(req, CancelRequest::MassCancel { .. })),
                Err(CancelRequest::Cancel(id)) => not_sent.push(id),
                Err(CancelRequest::MassCancel { venue, .. }) => not_sent.extend(
                    snapshot
                        .iter()
                        .filter(|o| o.tags.venue == venue)
                        .map(|o| o.id),
                ),
            }
        }
        out.timings.t_last_cancel_enqueued = mono_ns();
    }

    fn track(
        &mut self,
        snapshot: &[OrderRecord],
        deadline: Instant,
        out: &mut DrainOutcome,
        not_sent: &[OrderId],
    ) {
        let ds = self.block.drain_status();
        let half = deadline - self.cfg.cancel_deadline / 2;
        let mut pending: Vec<OrderId> = snapshot.iter().map(|o| o.id).collect();
        let mut resent = false;
        let mut b = Backoff::new(BackoffConfig {
            spins: 64,
            yields: 16,
            max_sleep: Duration::from_micros(50),
        });
        let mut push_b = Backoff::new(BackoffConfig::busy());
        let mut seen_closed = None;
        loop {
            let before = pending.len();
            // Rescan (under the lock) only when some order closed.
            let closed = self.link.registry.closed_count();
            if seen_closed != Some(closed) {
                seen_closed = Some(closed);
                self.link.registry.read(|view| {
                    pending.retain(|id| match view.get(*id).map(|r| r.state) {
                        Some(s) if s.is_open() => true,
                        s => {
                            out.record_final(*id, s);
                            false
                        }
                    });
                });
            }
            if pending.len() != before {
                out.timings.t_last_ack = mono_ns();
                ds.orders_confirmed
                    .store(out.confirmed() as u64, Ordering::Release);
                ds.t_last_ack
                    .store(out.timings.t_last_ack, Ordering::Release);
                b.reset();
            }
            if pending.is_empty() {
                return;
            }
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            if !resent && now >= half {
                resent = true;
                for id in &pending {
                    if self
                        .link
                        .cancels
                        .push_until(CancelRequest::Cancel(*id), deadline, &mut push_b)
                        .is_ok()
                    {
                        out.resent += 1;
                        out.cancel_requests += 1;
                    }
                }
                ds.cancels_sent
                    .store(out.cancel_requests, Ordering::Release);
            }
            b.snooze();
        }
        // 5b. Deadline: force cancel local.
        let mut unknown = 0u64;
        for id in pending {
            match self.link.registry.force_cancel_unknown(id) {
                Some(before) => {
                    let venue = snapshot
                        .iter()
                        .find(|o| o.id == id)
                        .map_or(0, |o| o.tags.venue);
                    let reason = if not_sent.contains(&id) {
                        UnknownReason::CancelNotEnqueued
                    } else if before == OrderState::PendingCancel {
                        UnknownReason::NoAnswer
                    } else {
                        UnknownReason::CancelRefused
                    };
                    out.unknown.push(UnknownOrder {
                        id,
                        venue,
                        state_before: before,
                        reason,
                    });
                    unknown += 1;
                }
                // It resolved between the last poll and now.
                None => out.record_final(id, self.link.registry.get(id).map(|r| r.state)),
            }
        }
        out.timings.t_last_ack = mono_ns();
        ds.t_last_ack
            .store(out.timings.t_last_ack, Ordering::Release);
        ds.orders_confirmed
            .store(out.confirmed() as u64, Ordering::Release);
        ds.orders_unknown.fetch_add(unknown, Ordering::AcqRel);
    }

    fn fills_since(&self, snapshot: &[OrderRecord]) -> Vec<DrainFill> {
        self.link.registry.read(|view| {
            snapshot
                .iter()
                .filter_map(|s| {
                    let now = view.get(s.id)?;
                    (now.fills > s.fills).then(|| DrainFill {
                        id: s.id,
                        fills: now.fills - s.fills,
                        qty: crate::order::Qty(now.filled.0 - s.filled.0),
                    })
                })
                .collect()
        })
    }
}
