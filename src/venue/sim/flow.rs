//! The other participants: a seeded, synthetic order flow that rests
//! liquidity around a drifting mid and sometimes crosses the spread, so our
//! resting orders get filled and partially filled the way they would on a
//! real exchange.

/// SplitMix64: small, seedable, good enough for a simulation (not crypto).
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// True with probability `ppm / 1_000_000`.
    pub fn chance_ppm(&mut self, ppm: u32) -> bool {
        ppm > 0 && self.below(1_000_000) < u64::from(ppm)
    }
}

/// Shape of the synthetic flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowConfig {
    /// One participant order every this many ns of wall time per venue;
    /// 0 turns the flow off.
    pub interval_ns: u64,
    /// Share of participant orders that cross the spread, in ppm.
    pub aggressive_ppm: u32,
    /// Participant orders resting per instrument before the oldest is cancelled.
    pub max_resting: usize,
    /// Largest participant order, in lots.
    pub max_lots: i64,
    /// Furthest a passive order rests from the mid, in ticks.
    pub max_ticks_away: i64,
    /// At most this many arrivals are simulated per poll; a gateway that
    /// polls late skips the rest instead of replaying a burst.
    pub max_arrivals_per_poll: u32,
}

impl Default for FlowConfig {
    /// One order every 20 µs, 30% aggressive, up to 5 lots, 10 ticks deep.
    fn default() -> Self {
        FlowConfig {
            interval_ns: 20_000,
            aggressive_ppm: 300_000,
            max_resting: 200,
            max_lots: 5,
            max_ticks_away: 10,
            max_arrivals_per_poll: 64,
        }
    }
}

impl FlowConfig {
    /// No synthetic flow: only our orders and injected ones.
    pub fn off() -> Self {
        FlowConfig {
            interval_ns: 0,
            ..FlowConfig::default()
        }
    }
}
