//! Dead-man's switch: trip KILL when the engine's heartbeat goes stale.
//!
//! The engine writes its heartbeat into the control block
//! ([`EngineOwner::heartbeat`](crate::control::EngineOwner::heartbeat)) from the thread whose stall matters — the
//! gateway writes it every 64 turns of its loop — never from a helper thread
//! that would keep beating while the engine is stuck. A watchdog in another
//! process (`killswitch watchdog --max-silence 250ms`) or thread reads it and
//! trips KILL with source `auto` when it is older than the limit, or when the
//! owning process is gone. Stopping the engine with `SIGSTOP` (the runbook's
//! first emergency step) therefore trips the switch within the limit.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::clock::format_duration_ns;
use crate::control::{ControlBlock, Mode, Source, TripOutcome};

/// What one look at the block found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    /// Heartbeat within the limit.
    Alive {
        /// Heartbeat age, ns.
        age_ns: u64,
    },
    /// No engine attached (nothing to watch yet).
    NoEngine,
    /// The owner pid is gone.
    OwnerDead {
        /// Its pid.
        pid: u32,
    },
    /// Heartbeat older than the limit.
    Stale {
        /// Heartbeat age, ns.
        age_ns: u64,
    },
    /// The switch is already at KILL: nothing left for the watchdog to do.
    AlreadyKilled,
}

/// A watchdog over one control block: a thread (or process) of its own,
/// never the engine's gateway thread. `Clone + Send + Sync`.
#[derive(Clone)]
pub struct Watchdog {
    block: Arc<ControlBlock>,
    max_silence: Duration,
}

impl Watchdog {
    /// Watches `block`, tripping after `max_silence` without a heartbeat.
    pub fn new(block: Arc<ControlBlock>, max_silence: Duration) -> Watchdog {
        Watchdog { block, max_silence }
    }

    /// One look, no action.
    pub fn check(&self) -> Health {
        if self.block.state().mode() == Mode::Kill {
            return Health::AlreadyKilled;
        }
        let owner = self.block.owner();
        if owner.pid == 0 {
            return Health::NoEngine;
        }
        if !owner.alive {
            return Health::OwnerDead { pid: owner.pid };
        }
        match self.block.heartbeat_age_ns() {
            Some(age_ns) if age_ns > self.max_silence.as_nanos() as u64 => Health::Stale { age_ns },
            Some(age_ns) => Health::Alive { age_ns },
            None => Health::Alive { age_ns: 0 },
        }
    }

    /// One look; trips KILL when the heartbeat is stale or the owner dead.
    pub fn check_and_trip(&self) -> (Health, Option<TripOutcome>) {
        let health = self.check();
        let reason = match health {
            Health::Stale { age_ns } => format!(
                "watchdog: engine pid {} heartbeat silent for {} (limit {})",
                self.block.owner().pid,
                format_duration_ns(age_ns),
                format_duration_ns(self.max_silence.as_nanos() as u64)
            ),
            Health::OwnerDead { pid } => format!("watchdog: engine pid {pid} is gone"),
            _ => return (health, None),
        };
        let out = self.block.trip_global(Mode::Kill, Source::Auto, &reason);
        (health, Some(out))
    }

    /// Polls every `poll` until it trips (returns the health that tripped
    /// it), the switch is already killed, `stop` is set, or `until` passes.
    pub fn run(&self, poll: Duration, stop: &AtomicBool, until: Option<Instant>) -> Health {
        loop {
            let (health, tripped) = self.check_and_trip();
            if tripped.is_some() || health == Health::AlreadyKilled {
                return health;
            }
            if stop.load(Ordering::Acquire) || until.is_some_and(|u| Instant::now() >= u) {
                return health;
            }
            std::thread::sleep(poll);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::AuditKind;

    #[test]
    fn stale_heartbeat_trips_once_and_fresh_one_does_not() {
        let d = tempfile::tempdir().unwrap();
        let b = Arc::new(ControlBlock::create(d.path(), "wd").unwrap());
        let w = Watchdog::new(b.clone(), Duration::from_millis(50));
        assert_eq!(w.check(), Health::NoEngine);
        b.attach_owner().unwrap();
        assert!(matches!(w.check_and_trip(), (Health::Alive { .. }, None)));
        // Age the heartbeat by writing an old timestamp.
        let old = crate::clock::mono_ns() - 200_000_000;
        b.layout()
            .header
            .heartbeat_mono_ns
            .store(old, Ordering::Release);
        let stop = AtomicBool::new(false);
        let h = w.run(
            Duration::from_millis(1),
            &stop,
            Some(Instant::now() + Duration::from_secs(5)),
        );
        assert!(
            matches!(h, Health::Stale { age_ns } if age_ns >= 200_000_000),
            "{h:?}"
        );
        assert_eq!(b.state().mode(), Mode::Kill);
        let t = b.last_trip().unwrap();
        assert_eq!((t.kind, t.source), (AuditKind::Trip, Source::Auto));
        assert!(t.reason.contains("heartbeat silent"), "{}", t.reason);
        assert_eq!(w.check(), Health::AlreadyKilled);
    }
}
