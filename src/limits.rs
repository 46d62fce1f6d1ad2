//! Pre-trade limits (MiFID II RTS 6 Art. 15, SEC 15c3-5): checks every new
//! order of one strategy makes before it leaves the strategy's thread.
//!
//! * **Price collar**: the limit price may not be further than
//!   `price_collar_bps` basis points from the instrument's reference price
//!   ([`ReferencePrices`], settable at runtime by any thread). No reference
//!   price for the instrument: the order is refused (fail closed).
//! * **Maximum order quantity** and **maximum order value** (price × qty).
//! * **Message rate**: at most `max_messages_per_second` new orders,
//!   replaces and cancels in any sliding second, per strategy. Cancels
//!   count but are never refused (a cancel only reduces risk).
//! * **Duplicate orders**: a new order with the same instrument, side,
//!   price and quantity as one this strategy sent less than
//!   `duplicate_window` ago is refused.
//!
//! The **repeated-execution throttle** ([`ExecutionThrottle`]: N fills of a
//! strategy within a window halt that strategy) is configured here too but
//! counted off the order path, by the runtime's supervisor (see
//! [`crate::rules`]): it trips the strategy's scope to HALT_NEW through the
//! control block, audited with [`crate::control::Source::Auto`], so only
//! the risk role may undo it.
//!
//! # Where the check runs, and what it costs
//! In the strategy's own thread, inside
//! [`StrategyHandle::submit`](crate::runtime::StrategyHandle::submit) and
//! `replace`: the per-strategy state (the message window, the recent
//! orders) belongs to that one thread ([`PreTradeCheck`] is `Send`, not
//! `Sync`), so no counter is shared between strategies and nothing adds
//! cross-thread contention. The only shared data is the reference-price
//! table, written rarely and read with one load.
//!
//! [`Gate::check`](crate::gate::Gate::check) itself is unchanged: with no
//! limit configured a strategy handle holds no checker and a submit costs
//! what it did (one load of the state word on the clear path, plus one
//! predictable branch on the absent checker). With limits, the stateless
//! ones (collar, quantity, value) are a few compares; the message rate and
//! duplicate detection read the monotonic clock once per order. See
//! `benches/gate.rs` and BENCHMARKS.md.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rustc_hash::FxHashMap;

use crate::control::layout::INSTRUMENTS;
use crate::order::{OrderIntent, Price, Qty, ScopeIndex, Side, QTY_SCALE};

/// Most messages per second the rate window can hold (it keeps one
/// timestamp per message: 8 MB per strategy at this rate).
pub const MAX_MESSAGE_RATE: u32 = 1_000_000;

/// The repeated-execution throttle: `fills` fills of one strategy within
/// `window` trip that strategy's scope to HALT_NEW (audited, source
/// `auto`). Counted by the runtime's supervisor from the registry, so it
/// acts within one rule interval of the fill that crossed it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExecutionThrottle {
    /// Fills that halt the strategy.
    pub fills: u32,
    /// Within this long.
    pub window: Duration,
}

/// Which pre-trade limits apply to every strategy of a runtime; `None`
/// (the default) switches a limit off. See the module docs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LimitConfig {
    /// Refuse a new order priced more than this many basis points (1/100
    /// of a percent) away from its instrument's reference price.
    pub price_collar_bps: Option<u32>,
    /// Refuse a new order for more than this quantity.
    pub max_order_qty: Option<Qty>,
    /// Refuse a new order whose value (price × qty) is above this, in the
    /// units of [`Price`] (1/`PRICE_SCALE` of the currency).
    pub max_order_value: Option<Price>,
    /// At most this many messages (new orders, replaces, cancels) per
    /// sliding second, per strategy (at most [`MAX_MESSAGE_RATE`]).
    pub max_messages_per_second: Option<u32>,
    /// Refuse a new order identical (instrument, side, price, quantity) to
    /// one the same strategy sent less than this long ago.
    pub duplicate_window: Option<Duration>,
    /// Halt a strategy after too many fills in a window (counted by the
    /// supervisor, not here).
    pub execution_throttle: Option<ExecutionThrottle>,
}

impl LimitConfig {
    /// True when any per-order limit is set (a strategy handle then holds
    /// a [`PreTradeCheck`]).
    pub fn checks_orders(&self) -> bool {
        self.price_collar_bps.is_some()
            || self.max_order_qty.is_some()
            || self.max_order_value.is_some()
            || self.max_messages_per_second.is_some()
            || self.duplicate_window.is_some()
    }

    /// Checks the values make sense; the error names the field.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_messages_per_second == Some(0) {
            return Err(
                "limits.max_messages_per_second must be at least 1 (leave it unset for no limit)"
                    .into(),
            );
        }
        if self
            .max_messages_per_second
            .is_some_and(|r| r > MAX_MESSAGE_RATE)
        {
            return Err(format!(
                "limits.max_messages_per_second is above {MAX_MESSAGE_RATE}: the window keeps one timestamp per message"
            ));
        }
        if self.max_order_qty.is_some_and(|q| q.0 <= 0) {
            return Err("limits.max_order_qty must be positive".into());
        }
        if self.max_order_value.is_some_and(|v| v.0 <= 0) {
            return Err("limits.max_order_value must be positive".into());
        }
        if self.duplicate_window == Some(Duration::ZERO) {
            return Err(
                "limits.duplicate_window must be longer than zero (leave it unset for none)".into(),
            );
        }
        if let Some(t) = self.execution_throttle {
            if t.fills == 0 || t.window.is_zero() {
                return Err("limits.execution_throttle needs fills >= 1 and a window > 0".into());
            }
        }
        Ok(())
    }
}

/// Why a pre-trade limit refused an order. Nothing was sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitBreach {
    /// The price is outside the collar around the reference price.
    PriceCollar {
        /// The order's price.
        price: Price,
        /// The instrument's reference price.
        reference: Price,
        /// The collar, basis points.
        collar_bps: u32,
    },
    /// A collar is configured but the instrument has no reference price:
    /// set one with [`ReferencePrices::set`].
    NoReferencePrice {
        /// The instrument's scope index.
        instrument: ScopeIndex,
    },
    /// The quantity is above the maximum.
    OrderQty {
        /// The order's quantity.
        qty: Qty,
        /// The maximum.
        max: Qty,
    },
    /// The value (price × qty) is above the maximum.
    OrderValue {
        /// The order's value, [`Price`] units.
        value: i128,
        /// The maximum.
        max: Price,
    },
    /// The strategy already sent its maximum of messages in the last second.
    MessageRate {
        /// The limit per second.
        max_per_second: u32,
    },
    /// The same order (instrument, side, price, quantity) was sent within
    /// the window.
    Duplicate {
        /// The window.
        window: Duration,
    },
}

impl fmt::Display for LimitBreach {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            LimitBreach::PriceCollar {
                price,
                reference,
                collar_bps,
            } => write!(
                f,
                "price {price} is outside the {collar_bps} bp collar around the reference price {reference}"
            ),
            LimitBreach::NoReferencePrice { instrument } => write!(
                f,
                "no reference price for instrument #{instrument}: the price collar refuses every order until one is set"
            ),
            LimitBreach::OrderQty { qty, max } => write!(
                f,
                "quantity {qty} is above the maximum order quantity {max}"
            ),
            LimitBreach::OrderValue { value, max } => write!(
                f,
                "order value {} is above the maximum order value {max}",
                Price(value.clamp(i64::MIN as i128, i64::MAX as i128) as i64)
            ),
            LimitBreach::MessageRate { max_per_second } => write!(
                f,
                "message rate limit: {max_per_second} messages in the last second already"
            ),
            LimitBreach::Duplicate { window } => write!(
                f,
                "duplicate order: the same instrument, side, price and quantity within {window:?}"
            ),
        }
    }
}

impl std::error::Error for LimitBreach {}

const NO_PRICE: i64 = i64::MIN;

/// Reference prices per instrument scope index: the price collar's anchor
/// (and the marks the automatic loss rules value positions at). Cheap to
/// clone; any thread may set a price (a market-data thread on every
/// trade, an operator at the open); strategy threads read it with one
/// load.
#[derive(Clone)]
pub struct ReferencePrices {
    prices: Arc<[AtomicI64]>,
}

impl Default for ReferencePrices {
    fn default() -> Self {
        ReferencePrices::new()
    }
}

impl fmt::Debug for ReferencePrices {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let set = self
            .prices
            .iter()
            .filter(|p| p.load(Ordering::Relaxed) != NO_PRICE)
            .count();
        f.debug_struct("ReferencePrices")
            .field("instruments_priced", &set)
            .finish()
    }
}

impl ReferencePrices {
    /// A table with no price set.
    pub fn new() -> ReferencePrices {
        ReferencePrices {
            prices: (0..INSTRUMENTS).map(|_| AtomicI64::new(NO_PRICE)).collect(),
        }
    }

    /// Sets the reference price of `instrument` (ignored for an index
    /// outside the table: such an order fails the collar anyway).
    pub fn set(&self, instrument: ScopeIndex, price: Price) {
        if let Some(p) = self.prices.get(instrument as usize) {
            // NO_PRICE is the "unset" marker; no real price is i64::MIN.
            p.store(price.0.max(NO_PRICE + 1), Ordering::Release);
        }
    }

    /// Forgets the reference price of `instrument`.
    pub fn clear(&self, instrument: ScopeIndex) {
        if let Some(p) = self.prices.get(instrument as usize) {
            p.store(NO_PRICE, Ordering::Release);
        }
    }

    /// The reference price of `instrument`, if set.
    #[inline]
    pub fn get(&self, instrument: ScopeIndex) -> Option<Price> {
        let p = self
            .prices
            .get(instrument as usize)?
            .load(Ordering::Acquire);
        (p != NO_PRICE).then_some(Price(p))
    }
}

/// The message window: one timestamp per message of the last second, in a
/// ring allocated once.
struct MessageWindow {
    max: usize,
    times: VecDeque<u64>,
}

const SECOND_NS: u64 = 1_000_000_000;

impl MessageWindow {
    fn expire(&mut self, now_ns: u64) {
        while let Some(&t) = self.times.front() {
            if now_ns.saturating_sub(t) >= SECOND_NS {
                self.times.pop_front();
            } else {
                break;
            }
        }
    }

    fn full(&mut self, now_ns: u64) -> bool {
        self.expire(now_ns);
        self.times.len() >= self.max
    }

    fn record(&mut self, now_ns: u64) {
        self.expire(now_ns);
        if self.times.len() >= self.max {
            // Only a cancel gets here (never refused): the oldest goes.
            self.times.pop_front();
        }
        self.times.push_back(now_ns);
    }
}

type OrderKey = (ScopeIndex, Side, i64, i64);

/// The recent orders of one strategy, for duplicate detection.
struct RecentOrders {
    window_ns: u64,
    last_sent: FxHashMap<OrderKey, u64>,
    by_time: VecDeque<(u64, OrderKey)>,
}

impl RecentOrders {
    fn expire(&mut self, now_ns: u64) {
        while let Some(&(t, key)) = self.by_time.front() {
            if now_ns.saturating_sub(t) < self.window_ns {
                break;
            }
            self.by_time.pop_front();
            // A later send of the same key keeps its own entry.
            if self.last_sent.get(&key) == Some(&t) {
                self.last_sent.remove(&key);
            }
        }
    }
}

fn key(intent: &OrderIntent) -> OrderKey {
    (
        intent.tags.instrument,
        intent.side,
        intent.price.0,
        intent.qty.0,
    )
}

/// One strategy's pre-trade checks and the state they keep. Made by the
/// runtime for each [`StrategyHandle`](crate::runtime::StrategyHandle)
/// when [`LimitConfig::checks_orders`]; usable alone by an engine with its
/// own order path. `Send`, used by one thread.
pub struct PreTradeCheck {
    cfg: LimitConfig,
    references: ReferencePrices,
    messages: Option<MessageWindow>,
    recent: Option<RecentOrders>,
}

impl fmt::Debug for PreTradeCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PreTradeCheck")
            .field("cfg", &self.cfg)
            .finish()
    }
}

impl PreTradeCheck {
    /// A checker with `cfg`'s limits, reading reference prices from
    /// `references`.
    pub fn new(cfg: LimitConfig, references: ReferencePrices) -> PreTradeCheck {
        PreTradeCheck {
            cfg,
            references,
            messages: cfg.max_messages_per_second.map(|n| {
                let max = n.min(MAX_MESSAGE_RATE) as usize;
                MessageWindow {
                    max,
                    times: VecDeque::with_capacity(max),
                }
            }),
            recent: cfg.duplicate_window.map(|w| RecentOrders {
                window_ns: w.as_nanos().min(u64::MAX as u128) as u64,
                last_sent: FxHashMap::default(),
                by_time: VecDeque::new(),
            }),
        }
    }

    /// The limits.
    pub fn config(&self) -> &LimitConfig {
        &self.cfg
    }

    /// True when the checks need the time (message rate, duplicates).
    #[inline]
    pub fn needs_clock(&self) -> bool {
        self.messages.is_some() || self.recent.is_some()
    }

    /// Checks a new order (or a replacement) at `now_ns`
    /// (`CLOCK_MONOTONIC`; any value when [`needs_clock`](Self::needs_clock)
    /// is false). Records nothing: call [`record_new`](Self::record_new)
    /// once the order is on its way.
    #[inline]
    pub fn check(&mut self, intent: &OrderIntent, now_ns: u64) -> Result<(), LimitBreach> {
        if let Some(max) = self.cfg.max_order_qty {
            if intent.qty > max {
                return Err(LimitBreach::OrderQty {
                    qty: intent.qty,
                    max,
                });
            }
        }
        if let Some(max) = self.cfg.max_order_value {
            let value = intent.price.0 as i128 * intent.qty.0 as i128 / QTY_SCALE as i128;
            if value.abs() > max.0 as i128 {
                return Err(LimitBreach::OrderValue { value, max });
            }
        }
        if let Some(bps) = self.cfg.price_collar_bps {
            let instrument = intent.tags.instrument;
            let Some(reference) = self.references.get(instrument) else {
                return Err(LimitBreach::NoReferencePrice { instrument });
            };
            let off = (intent.price.0 as i128 - reference.0 as i128).abs() * 10_000;
            if off > (reference.0 as i128).abs() * bps as i128 {
                return Err(LimitBreach::PriceCollar {
                    price: intent.price,
                    reference,
                    collar_bps: bps,
                });
            }
        }
        if let Some(m) = &mut self.messages {
            if m.full(now_ns) {
                return Err(LimitBreach::MessageRate {
                    max_per_second: m.max as u32,
                });
            }
        }
        if let Some(r) = &mut self.recent {
            r.expire(now_ns);
            if r.last_sent.contains_key(&key(intent)) {
                return Err(LimitBreach::Duplicate {
                    window: Duration::from_nanos(r.window_ns),
                });
            }
        }
        Ok(())
    }

    /// Records a new order (or replacement) that was handed on.
    #[inline]
    pub fn record_new(&mut self, intent: &OrderIntent, now_ns: u64) {
        if let Some(m) = &mut self.messages {
            m.record(now_ns);
        }
        if let Some(r) = &mut self.recent {
            let k = key(intent);
            r.last_sent.insert(k, now_ns);
            r.by_time.push_back((now_ns, k));
        }
    }

    /// Records a cancel (it counts towards the message rate, never refused).
    #[inline]
    pub fn record_cancel(&mut self, now_ns: u64) {
        if let Some(m) = &mut self.messages {
            m.record(now_ns);
        }
    }
}

#[cfg(test)]
mod tests;
