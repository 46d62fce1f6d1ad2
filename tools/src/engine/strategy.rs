//! The reference engine's two strategies. They are deliberately simple; what
//! matters is that they behave like real order flow: a market maker keeps
//! thousands of orders resting and refills what gets filled, a momentum
//! strategy crosses the spread and builds a position. Both go through the
//! gate (inside [`StrategyHandle::submit`]) for every order, read their
//! answers, and stop when the runtime asks (then drop their handle).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use killswitch::gateway::SubmitError;
use killswitch::order::{OrderIntent, Price, Qty, ScopeTags, Side, PRICE_SCALE};
use killswitch::runtime::StrategyHandle;

use super::config::{StrategyKind, StrategySection};

/// Starting mid of every simulated instrument, and its tick.
pub const MID: Price = Price::from_units(100);
/// Tick size (0.01).
pub const TICK: i64 = PRICE_SCALE / 100;

/// The strategies' random numbers (SplitMix64): reproducible from a seed,
/// no dependency for a few coin flips per order.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// A number in `0..n` (`n > 0`; the modulo bias is irrelevant here).
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % n
    }
}

/// What a strategy thread did.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct StrategyStats {
    /// Strategy name.
    pub name: String,
    /// Orders the gateway accepted into its ring.
    pub submitted: u64,
    /// Orders the gate refused (switch tripped).
    pub refused: u64,
    /// Orders the gate refused after the engine's drain of the kill had
    /// finished: proof the strategy kept trying while the switch held.
    pub refused_after_drain: u64,
    /// Times the ring was full (back-pressure).
    pub ring_full: u64,
    /// Answers read (acks, fills, cancels, rejects, refusals).
    pub answers: u64,
    /// Orders the gateway refused on its re-check (the switch tripped
    /// between this strategy's gate check and the write).
    pub refused_by_gateway: u64,
    /// Answers dropped because the answer ring was full.
    pub answers_lost: u64,
    /// Orders a pre-trade limit refused.
    #[serde(default)]
    pub refused_by_limits: u64,
}

/// Refusals so far, shared with the engine while the thread runs.
#[derive(Debug, Default)]
pub struct StrategyProgress {
    /// Orders the gate refused.
    pub refused: AtomicU64,
    /// Trading signals (order decisions) so far; the telemetry turns a
    /// change into the strategy's "last signal" time.
    pub signals: AtomicU64,
}

/// Runs one strategy until the runtime asks it to stop.
pub fn run(
    cfg: StrategySection,
    tags: ScopeTags,
    mut handle: StrategyHandle,
    progress: Arc<StrategyProgress>,
    seed: u64,
) -> StrategyStats {
    let mut stats = StrategyStats {
        name: cfg.name.clone(),
        ..StrategyStats::default()
    };
    let mut rng = Rng::new(seed);
    let started = Instant::now();
    let lots = Qty::from_lots(cfg.lots);
    let mut signal: i64 = 0;
    let mut next_count = Instant::now();
    let mut open = 0usize;
    let mut first_signal_sent = false;
    while !handle.stop_requested() {
        loop {
            match handle.try_answer() {
                Ok(Some(a)) => {
                    stats.answers += 1;
                    if matches!(a, killswitch::runtime::Answer::Refused { .. }) {
                        stats.refused_by_gateway += 1;
                    }
                }
                Ok(None) => break,
                Err(lost) => stats.answers_lost += lost.lost,
            }
        }
        if let Some(ms) = cfg.panic_after_ms {
            if started.elapsed() >= Duration::from_millis(ms) {
                panic!("strategy {} hit an injected fault", cfg.name);
            }
        }
        let position = handle.position(tags.venue, tags.instrument);
        let intent = match cfg.kind {
            StrategyKind::MarketMaking => {
                // Counting our open orders takes the registry lock: do it
                // every few ms, and assume every send rests in between.
                if Instant::now() >= next_count {
                    open = handle.open_orders();
                    next_count = Instant::now() + Duration::from_millis(5);
                }
                if open >= cfg.open_orders {
                    std::thread::sleep(Duration::from_micros(200));
                    continue;
                }
                // A ladder 1..=200 ticks deep on a random side.
                let side = if rng.below(2) == 0 {
                    Side::Buy
                } else {
                    Side::Sell
                };
                let depth = 1 + rng.below(200) as i64;
                let price = match side {
                    Side::Buy => MID.0 - depth * TICK,
                    Side::Sell => MID.0 + depth * TICK,
                };
                OrderIntent {
                    tags,
                    side,
                    qty: lots,
                    price: Price(price),
                    position,
                }
            }
            StrategyKind::Momentum => {
                // The first signal at once (a promoted standby's first
                // order is not held back by a sleep), then one per interval.
                if first_signal_sent {
                    std::thread::sleep(Duration::from_micros(cfg.interval_us));
                }
                first_signal_sent = true;
                // A drifting signal; cross the spread by 5 ticks its way.
                signal += rng.below(3) as i64 - 1;
                let side = if signal >= 0 { Side::Buy } else { Side::Sell };
                let price = MID.0 + side.sign() * 5 * TICK;
                OrderIntent {
                    tags,
                    side,
                    qty: lots,
                    price: Price(price),
                    position,
                }
            }
        };
        progress.signals.fetch_add(1, Ordering::Relaxed);
        match handle.submit(&intent) {
            Ok(_) => {
                stats.submitted += 1;
                open += 1;
            }
            Err(SubmitError::Refused(_)) => {
                // Tripped: nothing to do but wait for a reset.
                stats.refused += 1;
                progress.refused.fetch_add(1, Ordering::Release);
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(SubmitError::RingFull) => {
                stats.ring_full += 1;
                std::thread::yield_now();
            }
            Err(SubmitError::Limit(_)) => {
                // A pre-trade limit ([limits]) refused it: the next
                // decision is another order, a little later (a strategy
                // whose every order breaks a limit must not spin).
                stats.refused_by_limits += 1;
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
    stats
}
