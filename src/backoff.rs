//! Spin, then yield, then short sleeps: how the drain and the gateway wait
//! without a futex on the reaction path.
//!
//! A thread that waits for the state word to change cannot afford a kernel
//! wake-up (tens of microseconds, more on a loaded box), but it should not
//! burn a shared core forever either. [`Backoff`] spins with
//! [`std::hint::spin_loop`] for a while, then calls
//! [`std::thread::yield_now`], then sleeps for growing but capped intervals
//! (default cap 50 µs), and starts over from spinning as soon as the caller
//! sees work ([`Backoff::reset`]). The worst-case added reaction delay is the
//! cap plus the kernel's timer slack.

use std::time::Duration;

/// How long each stage of a [`Backoff`] lasts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackoffConfig {
    /// `spin_loop` iterations before the first `yield_now`.
    pub spins: u32,
    /// `yield_now` calls before the first sleep.
    pub yields: u32,
    /// Longest sleep; 0 never sleeps (spin and yield only, for a pinned core).
    pub max_sleep: Duration,
}

impl Default for BackoffConfig {
    /// 2,000 spins (a few µs), 64 yields, sleeps capped at 50 µs.
    fn default() -> Self {
        BackoffConfig {
            spins: 2_000,
            yields: 64,
            max_sleep: Duration::from_micros(50),
        }
    }
}

impl BackoffConfig {
    /// Never sleeps: for a thread that owns a pinned core.
    pub fn busy() -> Self {
        BackoffConfig {
            spins: 10_000,
            yields: u32::MAX,
            max_sleep: Duration::ZERO,
        }
    }
}

/// The state of one wait; see the module docs.
#[derive(Debug)]
pub struct Backoff {
    cfg: BackoffConfig,
    step: u64,
    sleep: Duration,
}

impl Backoff {
    /// A fresh wait (starts by spinning).
    pub fn new(cfg: BackoffConfig) -> Backoff {
        Backoff {
            cfg,
            step: 0,
            sleep: Duration::from_micros(1),
        }
    }

    /// Back to spinning: call when work was found.
    #[inline]
    pub fn reset(&mut self) {
        self.step = 0;
        self.sleep = Duration::from_micros(1);
    }

    /// Waits a little, longer each call up to the configured cap.
    #[inline]
    pub fn snooze(&mut self) {
        let spins = u64::from(self.cfg.spins);
        let yields = spins + u64::from(self.cfg.yields);
        self.step = self.step.saturating_add(1);
        if self.step <= spins {
            std::hint::spin_loop();
        } else if self.step <= yields || self.cfg.max_sleep.is_zero() {
            std::thread::yield_now();
        } else {
            std::thread::sleep(self.sleep);
            self.sleep = (self.sleep * 2).min(self.cfg.max_sleep);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sleeps_are_capped_and_reset_starts_over() {
        let mut b = Backoff::new(BackoffConfig {
            spins: 2,
            yields: 1,
            max_sleep: Duration::from_micros(4),
        });
        for _ in 0..10 {
            b.snooze();
        }
        assert_eq!(
            b.sleep,
            Duration::from_micros(4),
            "doubling stops at the cap"
        );
        b.reset();
        assert_eq!(b.step, 0);
        assert_eq!(b.sleep, Duration::from_micros(1));
        let mut busy = Backoff::new(BackoffConfig::busy());
        for _ in 0..20_000 {
            busy.snooze();
        }
        assert_eq!(busy.sleep, Duration::from_micros(1), "busy never sleeps");
    }
}
