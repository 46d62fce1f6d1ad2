//! What a test (or the drill) holds on a running simulated venue: the fault
//! knobs, the message log, counters, and a way to inject other
//! participants' orders. The venue itself is owned by the gateway thread;
//! everything here is shared through atomics or a short mutex.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::order::{OrderId, Price, Qty, ScopeIndex, Side};
use crate::venue::{MassCancelScope, NewOrder};

/// A request the venue accepted from us.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WireMessage {
    /// New order (logged even if the venue then rejects it: it reached the exchange).
    New(NewOrder),
    /// Single cancel.
    Cancel(OrderId),
    /// Mass cancel.
    MassCancel(MassCancelScope),
    /// Position request.
    PositionRequest,
    /// Order-status request.
    OrderStatus(OrderId),
    /// Market-data subscription.
    Subscribe(ScopeIndex),
    /// End of a subscription.
    Unsubscribe(ScopeIndex),
    /// Logout.
    Logout,
}

/// One line of the venue's message log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogEntry {
    /// Order of arrival at the venue, from 0.
    pub seq: u64,
    /// When the venue accepted it (`CLOCK_MONOTONIC` ns).
    pub mono_ns: u64,
    /// The message.
    pub msg: WireMessage,
}

/// Counters the venue publishes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Participant orders generated or injected.
    pub participant_orders: u64,
    /// Executions involving one of our orders.
    pub our_trades: u64,
    /// Our orders resting in the books now.
    pub our_resting: u64,
    /// New orders the venue rejected.
    pub rejects: u64,
    /// Cancels ignored because of the fault knob.
    pub ignored_cancels: u64,
    /// Cancel acks dropped because of the fault knob.
    pub dropped_cancel_acks: u64,
    /// Orders cancelled by cancel-on-disconnect.
    pub cancelled_on_disconnect: u64,
}

/// An order from another participant, queued by [`SimHandle::inject`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Injected {
    pub instrument: ScopeIndex,
    pub side: Side,
    pub price: Price,
    pub qty: Qty,
}

#[derive(Debug, Default)]
pub(crate) struct Shared {
    pub event_latency_ns: AtomicU64,
    pub reject_ppm: AtomicU32,
    pub drop_cancel_ack_ppm: AtomicU32,
    pub ignore_cancels: AtomicBool,
    pub hang_writes: AtomicBool,
    pub cancel_on_disconnect: AtomicBool,
    pub mass_cancel: AtomicBool,
    pub disconnected: AtomicBool,
    pub liquidity_withdrawn: AtomicBool,
    /// Position changes booked at the venue that the engine is not told
    /// of: (instrument, account, lots), applied at the next position request.
    pub unreported: Mutex<Vec<(ScopeIndex, ScopeIndex, i64)>>,
    pub log: Mutex<Vec<LogEntry>>,
    pub injected: Mutex<VecDeque<Injected>>,
    pub injected_total: AtomicU64,
    pub injected_done: AtomicU64,
    pub participant_orders: AtomicU64,
    pub our_trades: AtomicU64,
    pub our_resting: AtomicU64,
    pub rejects: AtomicU64,
    pub ignored_cancels: AtomicU64,
    pub dropped_cancel_acks: AtomicU64,
    pub cancelled_on_disconnect: AtomicU64,
}

/// Knobs, log and counters of one simulated venue; cheap to clone, any
/// thread (tests and fault injection hold it; the gateway holds the venue).
#[derive(Clone, Debug)]
pub struct SimHandle {
    pub(crate) shared: Arc<Shared>,
}

impl SimHandle {
    /// Delay before every answer (acks, fills, cancels) reaches us.
    pub fn set_event_latency(&self, d: Duration) {
        self.shared
            .event_latency_ns
            .store(d.as_nanos() as u64, Ordering::Relaxed);
    }

    /// Share of new orders rejected, in ppm.
    pub fn set_reject_ppm(&self, ppm: u32) {
        self.shared.reject_ppm.store(ppm, Ordering::Relaxed);
    }

    /// Share of successful cancels whose `Canceled` answer is lost, in ppm.
    pub fn set_drop_cancel_ack_ppm(&self, ppm: u32) {
        self.shared
            .drop_cancel_ack_ppm
            .store(ppm, Ordering::Relaxed);
    }

    /// When true, cancels and mass cancels are logged and then ignored.
    pub fn set_ignore_cancels(&self, on: bool) {
        self.shared.ignore_cancels.store(on, Ordering::Relaxed);
    }

    /// When true, every write (order, cancel, mass cancel…) blocks the
    /// caller until cleared: a session stuck in a blocking write.
    pub fn set_hang_writes(&self, on: bool) {
        self.shared.hang_writes.store(on, Ordering::Relaxed);
    }

    /// When true, a disconnect cancels all our resting orders (the
    /// in-process session; the `ks-venue` server decides per FIX session).
    pub fn set_cancel_on_disconnect(&self, on: bool) {
        self.shared
            .cancel_on_disconnect
            .store(on, Ordering::Relaxed);
    }

    /// Turns mass cancel off (the venue then refuses it, as a venue
    /// without one would) or back on (only if the venue was configured
    /// with it).
    pub fn set_mass_cancel(&self, on: bool) {
        self.shared.mass_cancel.store(on, Ordering::Relaxed);
    }

    /// When true, the other participants withdraw their liquidity: at the
    /// venue's next poll every participant order resting in the books is
    /// cancelled, and the synthetic flow sends no new order (passive or
    /// aggressive) until it is cleared. Our orders then find nothing to
    /// trade against: a limit or "market" (collared) order rests unfilled
    /// and an immediate-or-cancel one is cancelled unfilled, the runbook's
    /// "positions not flattening". Injected orders still arrive and trade
    /// with what rests at their arrival; what of them rests is pulled at
    /// the next poll with the rest.
    pub fn set_liquidity_withdrawn(&self, on: bool) {
        self.shared.liquidity_withdrawn.store(on, Ordering::Release);
    }

    /// Books `qty` lots of `instrument` for `account` at the venue without
    /// any answer to the engine: a trade it never saw (a lost fill report,
    /// a trade bust or an adjustment by the venue's operations desk). The
    /// venue's next position report includes it, so the planned shutdown's
    /// reconciliation finds a real mismatch.
    pub fn book_unreported_position(&self, instrument: ScopeIndex, account: ScopeIndex, qty: Qty) {
        if let Ok(mut u) = self.shared.unreported.lock() {
            u.push((instrument, account, qty.0));
        }
    }

    /// True while the participants' liquidity is withdrawn.
    pub fn liquidity_withdrawn(&self) -> bool {
        self.shared.liquidity_withdrawn.load(Ordering::Acquire)
    }

    /// Drops the session (takes effect at the venue's next call).
    pub fn disconnect(&self) {
        self.shared.disconnected.store(true, Ordering::Release);
    }

    /// Restores the session; queued answers are delivered.
    pub fn reconnect(&self) {
        self.shared.disconnected.store(false, Ordering::Release);
    }

    /// Queues another participant's limit order; it reaches the book at the
    /// venue's next poll. Returns a ticket: the order has been processed
    /// once [`SimHandle::injected_processed`] exceeds it.
    pub fn inject(&self, instrument: ScopeIndex, side: Side, price: Price, qty: Qty) -> u64 {
        let mut q = self
            .shared
            .injected
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        q.push_back(Injected {
            instrument,
            side,
            price,
            qty,
        });
        // Tickets are handed out under the queue lock, in queue order.
        self.shared.injected_total.fetch_add(1, Ordering::AcqRel)
    }

    /// How many injected orders the venue has matched so far.
    pub fn injected_processed(&self) -> u64 {
        self.shared.injected_done.load(Ordering::Acquire)
    }

    /// A copy of the message log.
    pub fn log(&self) -> Vec<LogEntry> {
        self.shared
            .log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Number of messages logged so far (does not copy the log).
    pub fn log_len(&self) -> usize {
        self.shared
            .log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    /// A copy of the log from entry `start` on: what a benchmark reads after
    /// each round, without copying (and holding the log's lock over) the
    /// whole history while the venue runs.
    pub fn log_from(&self, start: usize) -> Vec<LogEntry> {
        let log = self.shared.log.lock().unwrap_or_else(|p| p.into_inner());
        log.get(start..).map_or_else(Vec::new, <[LogEntry]>::to_vec)
    }

    /// Counters.
    pub fn stats(&self) -> SimStats {
        let l = |a: &AtomicU64| a.load(Ordering::Acquire);
        let s = &self.shared;
        SimStats {
            participant_orders: l(&s.participant_orders),
            our_trades: l(&s.our_trades),
            our_resting: l(&s.our_resting),
            rejects: l(&s.rejects),
            ignored_cancels: l(&s.ignored_cancels),
            dropped_cancel_acks: l(&s.dropped_cancel_acks),
            cancelled_on_disconnect: l(&s.cancelled_on_disconnect),
        }
    }
}
