//! The rules' gauges in the control block: one word per [`Rule`](super::Rule)
//! in the engine telemetry record (layout 2.2), so `killswitch status`,
//! `serve` (`/metrics`) and `watch` see how close each rule is to its limit
//! from another process.
//!
//! Each word stands alone (no seqlock): bit 63 = configured, bit 62 =
//! tripped (latched), bits 32..40 = the warning grade held (percent: 0, 50,
//! 75, 90, 95; 100 once tripped), bits 0..32 = use of the limit in parts
//! per million (saturating). A word of 0 is a rule not configured (or a
//! block no rules ever wrote).

use std::sync::atomic::Ordering;

use crate::control::ControlBlock;

const CONFIGURED: u64 = 1 << 63;
const TRIPPED: u64 = 1 << 62;

/// How close one rule is to its limit (the highest of its scopes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct RuleGauge {
    /// The rule is configured.
    pub configured: bool,
    /// Use of the limit, parts per million (1,000,000 = at the limit).
    pub usage_ppm: u32,
    /// Warning grade held, percent (0, 50, 75, 90, 95; 100 once tripped).
    pub grade: u8,
    /// The rule tripped and is latched until a reset.
    pub tripped: bool,
}

impl RuleGauge {
    fn to_word(self) -> u64 {
        if !self.configured {
            return 0;
        }
        CONFIGURED
            | if self.tripped { TRIPPED } else { 0 }
            | (self.grade as u64) << 32
            | self.usage_ppm as u64
    }

    fn from_word(w: u64) -> RuleGauge {
        RuleGauge {
            configured: w & CONFIGURED != 0,
            tripped: w & TRIPPED != 0,
            grade: ((w >> 32) & 0xff) as u8,
            usage_ppm: w as u32,
        }
    }
}

/// Publishes the gauges (the runtime's supervisor, after each evaluation).
pub(crate) fn publish_gauges(block: &ControlBlock, gauges: &[RuleGauge; 7]) {
    let words = &block.layout().telemetry.engine.rule_gauges;
    for (w, g) in words.iter().zip(gauges) {
        w.store(g.to_word(), Ordering::Release);
    }
}

/// Reads the gauges of `block`, in [`Rule`](super::Rule) order.
pub fn read_gauges(block: &ControlBlock) -> [RuleGauge; 7] {
    let words = &block.layout().telemetry.engine.rule_gauges;
    let mut out = [RuleGauge::default(); 7];
    for (o, w) in out.iter_mut().zip(words) {
        *o = RuleGauge::from_word(w.load(Ordering::Acquire));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gauge_round_trips_through_its_word() {
        for g in [
            RuleGauge::default(),
            RuleGauge {
                configured: true,
                usage_ppm: 760_000,
                grade: 75,
                tripped: false,
            },
            RuleGauge {
                configured: true,
                usage_ppm: u32::MAX,
                grade: 100,
                tripped: true,
            },
        ] {
            assert_eq!(RuleGauge::from_word(g.to_word()), g);
        }
        assert_eq!(RuleGauge::from_word(0), RuleGauge::default());
    }
}
