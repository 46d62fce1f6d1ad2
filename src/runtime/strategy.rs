//! What a strategy thread holds: its [`StrategyHandle`] (send, cancel,
//! replace, answers) and, for anything that only needs to know whether to
//! stop, a [`TripToken`].

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::answers::{Answer, AnswersLost};
use crate::backoff::{Backoff, BackoffConfig};
use crate::control::{ControlBlock, ControlError, Mode, ScopeKind, StateWord};
use crate::gate::Gate;
use crate::gateway::{OrderSender, ReplaceError, SubmitError};
use crate::limits::PreTradeCheck;
use crate::order::{OrderId, OrderIntent, Price, Qty, ScopeIndex, ScopeTags};
use crate::registry::OrderRecord;
use crate::registry::Registry;

/// Whether the switch is tripped, for a thread that only needs to know
/// when to stop (a strategy's loop, a market-data thread). `Clone + Send +
/// Sync`; any thread; as cheap as a [`Gate`] (one atomic load).
#[derive(Clone)]
pub struct TripToken {
    gate: Gate,
}

impl TripToken {
    pub(crate) fn new(gate: Gate) -> TripToken {
        TripToken { gate }
    }

    /// True when anything is tripped: a global mode, or any scope.
    #[inline]
    pub fn is_tripped(&self) -> bool {
        self.gate.state().is_active()
    }

    /// True when the global mode is KILL: every open order is being
    /// cancelled and none may be sent.
    #[inline]
    pub fn is_killed(&self) -> bool {
        self.gate.state().mode() == Mode::Kill
    }

    /// The state word now.
    #[inline]
    pub fn state(&self) -> StateWord {
        self.gate.state()
    }

    /// Waits until something is tripped, up to `timeout`; true when it is.
    /// Spins briefly, then sleeps in short steps (no futex on the trip
    /// path: the state word is written by other processes too).
    pub fn wait(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut b = Backoff::new(BackoffConfig::default());
        loop {
            if self.is_tripped() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            b.snooze();
        }
    }
}

/// One strategy's connection to the runtime: submit, cancel and replace
/// its orders through the gateway, and read the answers about them.
///
/// Made by [`Runtime::strategy`](super::Runtime::strategy), one per strategy
/// name. `Send` but not `Clone` or `Sync`: it is the single reader of its
/// answer ring, so exactly one thread holds it (the strategy's). Every
/// order it sends carries its strategy tag (a scoped kill of the strategy
/// stops exactly these orders). Dropping it tells the runtime the strategy
/// has stopped ([`Runtime::shutdown`](super::Runtime::shutdown) waits for
/// that).
pub struct StrategyHandle {
    pub(crate) name: String,
    pub(crate) strategy: ScopeIndex,
    pub(crate) sender: OrderSender,
    pub(crate) answers: rtrb::Consumer<Answer>,
    pub(crate) lost: Arc<AtomicU64>,
    pub(crate) lost_reported: u64,
    pub(crate) registry: Arc<Registry>,
    pub(crate) block: Arc<ControlBlock>,
    pub(crate) stop: Arc<AtomicBool>,
    /// The strategy's pre-trade checks, when any limit is configured
    /// (boxed: a handle without limits stays small). A `RefCell` because
    /// `submit` takes `&self`; the handle is not `Sync`, so only its one
    /// thread ever borrows it.
    pub(crate) limits: Option<Box<RefCell<PreTradeCheck>>>,
    /// Dropped with the handle: the runtime sees the strategy is gone.
    pub(crate) _alive: Arc<()>,
}

impl std::fmt::Debug for StrategyHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StrategyHandle")
            .field("name", &self.name)
            .field("strategy", &self.strategy)
            .finish()
    }
}

impl StrategyHandle {
    /// The strategy's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its strategy scope index (the `strategy` tag of its orders).
    pub fn strategy_index(&self) -> ScopeIndex {
        self.strategy
    }

    /// The tags of an order of this strategy on `venue`, `instrument`,
    /// `account` (names registered in the control block if new, so
    /// `killswitch trip --instrument ...` can name them). Call it once per
    /// market, not per order: registering a new name takes a file lock.
    pub fn tags(
        &self,
        venue: &str,
        instrument: &str,
        account: &str,
    ) -> Result<ScopeTags, ControlError> {
        Ok(ScopeTags {
            venue: self.block.register_name(ScopeKind::Venue, venue)?,
            strategy: self.strategy,
            instrument: self
                .block
                .register_name(ScopeKind::Instrument, instrument)?,
            account: self.block.register_name(ScopeKind::Account, account)?,
        })
    }

    /// Checks the order with the gate (one atomic load when nothing is
    /// tripped) and with the pre-trade limits if any are configured
    /// ([`crate::limits`]: a refusal is [`SubmitError::Limit`]), gives it
    /// an id and hands it to the gateway, which checks the switch again
    /// before writing it. Its strategy tag is set to this strategy's.
    /// Every outcome after `Ok(id)` comes back as an [`Answer`]. Never
    /// blocks: a full ring is [`SubmitError::RingFull`].
    #[inline]
    pub fn submit(&self, intent: &OrderIntent) -> Result<OrderId, SubmitError> {
        if let Some(limits) = &self.limits {
            return self.submit_limited(limits, intent);
        }
        if intent.tags.strategy == self.strategy {
            self.sender.submit(intent)
        } else {
            let mut own = *intent;
            own.tags.strategy = self.strategy;
            self.sender.submit(&own)
        }
    }

    /// `submit` with pre-trade limits: the gate first (a tripped switch
    /// answers as it would without limits), then the limits, then the
    /// ring; only an order handed on counts towards the message rate and
    /// the duplicate window.
    #[inline(never)]
    fn submit_limited(
        &self,
        limits: &RefCell<PreTradeCheck>,
        intent: &OrderIntent,
    ) -> Result<OrderId, SubmitError> {
        let mut own = *intent;
        own.tags.strategy = self.strategy;
        if let crate::gate::Verdict::Reject(r) = self.sender.gate().check(&own) {
            return Err(SubmitError::Refused(r));
        }
        let mut limits = limits.borrow_mut();
        let now = if limits.needs_clock() {
            crate::clock::mono_ns()
        } else {
            0
        };
        limits.check(&own, now).map_err(SubmitError::Limit)?;
        let id = self.sender.submit(&own)?;
        limits.record_new(&own, now);
        Ok(id)
    }

    /// Asks the gateway to cancel one of this strategy's orders. Always
    /// allowed (a cancel reduces risk, whatever the switch says); the
    /// outcome comes back as `Canceled`, `CancelRejected` or
    /// `CancelRefused`.
    pub fn cancel(&self, id: OrderId) -> Result<(), SubmitError> {
        self.sender.cancel(id, self.strategy)?;
        if let Some(limits) = &self.limits {
            let mut limits = limits.borrow_mut();
            if limits.needs_clock() {
                limits.record_cancel(crate::clock::mono_ns());
            }
        }
        Ok(())
    }

    /// Replaces one of this strategy's open orders with the same order at
    /// `price` for `qty`: a new order (new id, returned) on the wire,
    /// checked by the gate here and by the gateway's admit step like any
    /// new order, so a replace never gets past a tripped switch (under
    /// REDUCE_ONLY it passes only if it reduces the position). Only once
    /// the new order is admitted is the old one cancelled; a refused
    /// replace leaves it as it was. Reads the old order from the registry
    /// (one lock): not for the hottest loop.
    pub fn replace(&self, id: OrderId, price: Price, qty: Qty) -> Result<OrderId, ReplaceError> {
        let old = self
            .registry
            .get(id)
            .filter(|o| o.state.is_open())
            .ok_or(ReplaceError::NotOpen(id))?;
        if old.tags.strategy != self.strategy {
            return Err(ReplaceError::NotYours(id));
        }
        let t = old.tags;
        let intent = OrderIntent {
            tags: t,
            side: old.side,
            qty,
            price,
            position: self
                .registry
                .account_position(t.venue, t.instrument, t.account),
        };
        let Some(limits) = &self.limits else {
            return Ok(self.sender.replace(id, &intent)?);
        };
        let mut limits = limits.borrow_mut();
        let now = if limits.needs_clock() {
            crate::clock::mono_ns()
        } else {
            0
        };
        limits
            .check(&intent, now)
            .map_err(|b| ReplaceError::Submit(SubmitError::Limit(b)))?;
        let new = self.sender.replace(id, &intent)?;
        limits.record_new(&intent, now);
        Ok(new)
    }

    /// The next answer about this strategy's orders, if one is waiting.
    /// `Err` reports (once) answers dropped because this ring was full.
    #[inline]
    pub fn try_answer(&mut self) -> Result<Option<Answer>, AnswersLost> {
        let lost = self.lost.load(Ordering::Relaxed);
        if lost != self.lost_reported {
            let n = lost - self.lost_reported;
            self.lost_reported = lost;
            return Err(AnswersLost { lost: n });
        }
        Ok(self.answers.pop().ok())
    }

    /// The gate this handle checks with (read-only).
    pub fn gate(&self) -> &Gate {
        self.sender.gate()
    }

    /// A trip token on the same block.
    pub fn trip_token(&self) -> TripToken {
        TripToken::new(self.sender.gate().clone())
    }

    /// True once the runtime is stopping: finish up and drop the handle.
    #[inline]
    pub fn stop_requested(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// One order as the registry knows it now (one lock).
    pub fn order(&self, id: OrderId) -> Option<OrderRecord> {
        self.registry.get(id)
    }

    /// How many of this strategy's orders are open now (one lock, walks
    /// the open orders: every few milliseconds, not per order).
    pub fn open_orders(&self) -> usize {
        let s = self.strategy;
        self.registry
            .read(|v| v.open_orders(|o| o.tags.strategy == s).len())
    }

    /// The position in `instrument` on `venue`, all accounts, from the
    /// fills the venues reported (one lock).
    pub fn position(&self, venue: ScopeIndex, instrument: ScopeIndex) -> Qty {
        self.registry.position(venue, instrument)
    }
}
