//! Signals and panics trip the switch, without waiting for any thread.
//!
//! The handlers installed here do only async-signal-safe work: they call
//! [`ControlBlock::trip_global`] (a CAS loop on the state word plus a
//! seqlocked audit write: atomics, `getpid`, `getuid`, `clock_gettime`) and
//! bump a counter. The gate therefore rejects the next order as soon as the
//! handler has run, on whatever thread the kernel picked; the engine's normal
//! threads see the counter and do the rest (drain, checkpoint, exit).
//!
//! Defaults, all configurable through [`SignalConfig`]:
//!
//! | signal | first | second | third |
//! |---|---|---|---|
//! | `SIGUSR1` | KILL, emergency shutdown | — | — |
//! | `SIGTERM`, `SIGINT` | KILL, planned shutdown (drain + checkpoint + exit) | escalates to emergency | `_exit(130)` (the kill is already latched) |
//!
//! Until the planned-shutdown issue lands, "planned" also trips KILL: the
//! engine drains with the planned deadline, checkpoints and exits.
//!
//! A panic anywhere trips KILL through [`install_panic_hook`] (with the panic
//! message in the audit record), and [`KillOnDrop`] trips when a guarded
//! scope unwinds or ends without `disarm()`.
//!
//! # Invariants
//! * A handler never allocates, locks, or blocks.
//! * The shutdown level only rises: `None` < `Planned` < `Emergency`.

use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use signal_hook::consts::{SIGINT, SIGTERM, SIGUSR1};
use signal_hook::SigId;

use crate::clock::mono_ns;
use crate::control::{ControlBlock, Mode, Source};

/// How far the engine should go in shutting down, as asked by signals.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ShutdownLevel {
    /// Keep running.
    None,
    /// Drain with the planned deadline, checkpoint, exit.
    Planned,
    /// Drain with the emergency deadline, quick checkpoint, exit now.
    Emergency,
}

/// Which signals do what.
#[derive(Clone, Debug)]
pub struct SignalConfig {
    /// Signals that mean "emergency kill" (default `SIGUSR1`).
    pub emergency: Vec<i32>,
    /// Signals that mean "shut down" (default `SIGTERM`, `SIGINT`); the
    /// second one escalates to emergency.
    pub shutdown: Vec<i32>,
    /// After this many shutdown signals, `_exit(130)` from the handler
    /// (`None` never). Default 3.
    pub force_exit_after: Option<u32>,
}

impl Default for SignalConfig {
    fn default() -> SignalConfig {
        SignalConfig {
            emergency: vec![SIGUSR1],
            shutdown: vec![SIGTERM, SIGINT],
            force_exit_after: Some(3),
        }
    }
}

/// What the handlers record, for the engine's threads to act on.
#[derive(Debug, Default)]
pub struct SignalState {
    level: AtomicU32,
    shutdown_signals: AtomicU32,
    last_signal: AtomicI32,
    first_mono_ns: AtomicU64,
}

impl SignalState {
    /// The shutdown level asked for so far.
    pub fn level(&self) -> ShutdownLevel {
        match self.level.load(Ordering::Acquire) {
            0 => ShutdownLevel::None,
            1 => ShutdownLevel::Planned,
            _ => ShutdownLevel::Emergency,
        }
    }

    /// The last signal received (0 if none).
    pub fn last_signal(&self) -> i32 {
        self.last_signal.load(Ordering::Acquire)
    }

    /// `CLOCK_MONOTONIC` ns of the first signal (0 if none).
    pub fn first_signal_mono_ns(&self) -> u64 {
        self.first_mono_ns.load(Ordering::Acquire)
    }

    fn raise(&self, level: u32, signal: i32) {
        let _ =
            self.first_mono_ns
                .compare_exchange(0, mono_ns(), Ordering::AcqRel, Ordering::Relaxed);
        self.last_signal.store(signal, Ordering::Release);
        self.level.fetch_max(level, Ordering::AcqRel);
    }
}

/// Installed handlers; dropping it unregisters them.
#[must_use = "dropping the guard unregisters the signal handlers"]
pub struct SignalGuard {
    ids: Vec<SigId>,
    state: Arc<SignalState>,
}

impl SignalGuard {
    /// What the handlers have recorded.
    pub fn state(&self) -> &Arc<SignalState> {
        &self.state
    }
}

impl Drop for SignalGuard {
    fn drop(&mut self) {
        for id in self.ids.drain(..) {
            signal_hook::low_level::unregister(id);
        }
    }
}

/// Static reason text per signal: handlers must not format strings.
fn reason_for(signal: i32, emergency: bool) -> &'static str {
    match (signal, emergency) {
        (SIGUSR1, _) => "signal SIGUSR1: emergency kill",
        (SIGTERM, false) => "signal SIGTERM: shutdown",
        (SIGTERM, true) => "signal SIGTERM (repeated): emergency",
        (SIGINT, false) => "signal SIGINT: shutdown",
        (SIGINT, true) => "signal SIGINT (repeated): emergency",
        (_, true) => "signal: emergency kill",
        (_, false) => "signal: shutdown",
    }
}

/// Installs the handlers on `block`.
pub fn install(block: Arc<ControlBlock>, config: &SignalConfig) -> std::io::Result<SignalGuard> {
    let state = Arc::new(SignalState::default());
    let mut ids = Vec::new();
    for &sig in &config.emergency {
        let (b, s) = (block.clone(), state.clone());
        let action = move || {
            b.trip_global(Mode::Kill, Source::Signal, reason_for(sig, true));
            s.raise(2, sig);
        };
        // SAFETY: the action only performs async-signal-safe operations:
        // atomics on shared memory and on `SignalState`, getpid, getuid and
        // clock_gettime (inside trip_global), no allocation, no locks. The
        // captured Arcs are only dereferenced, never cloned or dropped, in
        // the handler.
        ids.push(unsafe { signal_hook::low_level::register(sig, action) }?);
    }
    let force_after = config.force_exit_after.unwrap_or(u32::MAX);
    for &sig in &config.shutdown {
        let (b, s) = (block.clone(), state.clone());
        let action = move || {
            let n = s.shutdown_signals.fetch_add(1, Ordering::AcqRel) + 1;
            let emergency = n >= 2;
            b.trip_global(Mode::Kill, Source::Signal, reason_for(sig, emergency));
            s.raise(if emergency { 2 } else { 1 }, sig);
            if n >= force_after {
                // The kill is latched in shared memory; nothing is lost by
                // leaving now, and the operator asked three times.
                signal_hook::low_level::exit(130);
            }
        };
        // SAFETY: as above; `low_level::exit` is `_exit`, async-signal-safe.
        ids.push(unsafe { signal_hook::low_level::register(sig, action) }?);
    }
    Ok(SignalGuard { ids, state })
}

/// Chains a panic hook that trips KILL (recording the panic message and
/// location) before the previous hook runs.
pub fn install_panic_hook(block: Arc<ControlBlock>) {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "non-string payload".into());
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let thread = std::thread::current();
        let reason = format!(
            "panic in thread {}: {msg}{at}",
            thread.name().unwrap_or("?")
        );
        block.trip_global(Mode::Kill, Source::Panic, &reason);
        previous(info);
    }));
}

/// Trips KILL when dropped unless disarmed: put one in every thread whose
/// silent death would leave orders unattended.
#[must_use = "the guard trips the switch when dropped; bind it to a variable"]
pub struct KillOnDrop {
    block: Option<Arc<ControlBlock>>,
    what: &'static str,
}

impl KillOnDrop {
    /// A guard for the thread or scope named `what`.
    pub fn new(block: Arc<ControlBlock>, what: &'static str) -> KillOnDrop {
        KillOnDrop {
            block: Some(block),
            what,
        }
    }

    /// The guarded work ended normally: do not trip.
    pub fn disarm(mut self) {
        self.block = None;
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(block) = self.block.take() {
            let (source, how) = if std::thread::panicking() {
                (Source::Panic, "unwound by a panic")
            } else {
                (Source::Api, "ended without disarm()")
            };
            block.trip_global(Mode::Kill, source, &format!("{} {how}", self.what));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::AuditKind;

    #[test]
    fn kill_on_drop_trips_unless_disarmed() {
        let d = tempfile::tempdir().unwrap();
        let b = Arc::new(ControlBlock::create(d.path(), "g").unwrap());
        KillOnDrop::new(b.clone(), "fine").disarm();
        assert_eq!(b.state().mode(), Mode::Normal);
        let b2 = b.clone();
        let r = std::thread::spawn(move || {
            let _g = KillOnDrop::new(b2, "strategy thread");
            panic!("boom");
        })
        .join();
        assert!(r.is_err());
        assert_eq!(b.state().mode(), Mode::Kill);
        let t = b.last_trip().unwrap();
        assert_eq!(t.kind, AuditKind::Trip);
        assert_eq!(t.source, Source::Panic);
        assert_eq!(t.reason, "strategy thread unwound by a panic");
    }

    #[test]
    fn shutdown_level_only_rises() {
        let s = SignalState::default();
        assert_eq!(s.level(), ShutdownLevel::None);
        s.raise(2, SIGUSR1);
        s.raise(1, SIGTERM);
        assert_eq!(s.level(), ShutdownLevel::Emergency);
        assert_eq!(s.last_signal(), SIGTERM);
        assert!(s.first_signal_mono_ns() > 0);
    }
}
