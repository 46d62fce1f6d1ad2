//! Signals and panics trip the switch, without waiting for any thread.
//!
//! The handlers installed here do only async-signal-safe work: they call
//! [`Tripper::trip_global`](crate::control::Tripper::trip_global) (a CAS loop on the state word plus a
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
//! By default the first shutdown signal also trips KILL: the engine drains,
//! checkpoints and exits. With [`SignalConfig::planned_shutdown`] the first
//! one trips nothing: it only raises the level to `Planned`, and the engine
//! runs the planned shutdown ([`crate::shutdown`], which takes the switch
//! to REDUCE_ONLY itself); the second trips KILL as always.
//!
//! A panic anywhere trips KILL through [`install_panic_hook`] (with the panic
//! message in the audit record), and [`KillOnDrop`] trips when a guarded
//! scope unwinds or ends without `disarm()`.
//!
//! The handlers are installed with `sigaction(2)` directly, keeping each
//! signal's previous disposition; dropping the [`SignalGuard`] puts those
//! back (a default SIGTERM terminates again, an ignored SIGINT stays
//! ignored, an earlier handler runs again). A previous handler function is
//! also chained: it runs after ours while the guard lives. One guard per
//! process at a time (signal dispositions are process-wide).
//!
//! Why not the `signal-hook` crate, which the first version used: its
//! `unregister` removes our action but leaves its own handler installed for
//! the life of the process, so a dropped guard left SIGTERM and SIGINT
//! caught and ignored instead of terminating the process as before. Putting
//! the previous disposition back needs the `sigaction` it replaced, which is
//! what this module keeps.
//!
//! # Invariants
//! * A handler never allocates, locks, or blocks.
//! * The shutdown level only rises: `None` < `Planned` < `Emergency`.
//! * What a handler reads is never freed: the installed configuration is
//!   leaked on drop (a few hundred bytes per install), because a handler
//!   may still be running on another thread when the guard drops.

use std::io;
use std::sync::atomic::{AtomicI32, AtomicPtr, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use libc::{c_int, c_void, siginfo_t, SIGINT, SIGTERM, SIGUSR1};

use crate::clock::mono_ns;
use crate::control::{ControlBlock, Mode, Source, Tripper};

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
    /// The first shutdown signal asks for the planned shutdown without
    /// tripping (the engine runs [`crate::shutdown`]); the second trips
    /// KILL. Default false: the first trips KILL.
    pub planned_shutdown: bool,
}

impl Default for SignalConfig {
    fn default() -> SignalConfig {
        SignalConfig {
            emergency: vec![SIGUSR1],
            shutdown: vec![SIGTERM, SIGINT],
            force_exit_after: Some(3),
            planned_shutdown: false,
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

/// What the handlers act on; reached through [`INSTALLED`].
struct Installed {
    block: Arc<ControlBlock>,
    state: Arc<SignalState>,
    emergency: Vec<i32>,
    shutdown: Vec<i32>,
    force_after: u32,
    planned: bool,
    /// Each handled signal's disposition before ours.
    previous: Vec<(i32, libc::sigaction)>,
}

/// The configuration the handlers use; null when no guard is installed.
static INSTALLED: AtomicPtr<Installed> = AtomicPtr::new(std::ptr::null_mut());

/// Installed handlers; dropping it restores every signal's previous
/// disposition. One per process (dispositions are process-wide); held by
/// the thread that starts and stops the engine (the runtime holds it).
#[must_use = "dropping the guard restores the previous signal dispositions"]
pub struct SignalGuard {
    installed: *mut Installed,
    state: Arc<SignalState>,
}

// SAFETY: the raw pointer is only compared and handed back to INSTALLED;
// what it points to is immutable after installation and never freed.
unsafe impl Send for SignalGuard {}
// SAFETY: as above: `&SignalGuard` gives access only to `state`, an Arc.
unsafe impl Sync for SignalGuard {}

impl SignalGuard {
    /// What the handlers have recorded.
    pub fn state(&self) -> &Arc<SignalState> {
        &self.state
    }
}

impl Drop for SignalGuard {
    fn drop(&mut self) {
        // SAFETY: `installed` was leaked by `install` and is never freed.
        let inst = unsafe { &*self.installed };
        for (sig, old) in &inst.previous {
            // SAFETY: `old` is the disposition sigaction(2) returned for
            // this signal at install; putting it back is what the caller
            // had before.
            unsafe { libc::sigaction(*sig, old, std::ptr::null_mut()) };
        }
        // From now on a handler that still runs (another thread) finds
        // nothing to do; the memory stays valid (leaked).
        let _ = INSTALLED.compare_exchange(
            self.installed,
            std::ptr::null_mut(),
            Ordering::AcqRel,
            Ordering::Acquire,
        );
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

/// The handler of every signal we take: async-signal-safe work only
/// (atomics, `getpid`, `getuid`, `clock_gettime`, `_exit`).
extern "C" fn on_signal(sig: c_int, info: *mut siginfo_t, ctx: *mut c_void) {
    let p = INSTALLED.load(Ordering::Acquire);
    if p.is_null() {
        return;
    }
    // SAFETY: a non-null INSTALLED points to a leaked, never-freed,
    // immutable `Installed`.
    let inst = unsafe { &*p };
    // SAFETY: the errno location of this thread; handlers must leave errno
    // as they found it.
    let errno = unsafe { *libc::__errno_location() };
    if inst.emergency.contains(&sig) {
        inst.block
            .trip_global(Mode::Kill, Source::Signal, reason_for(sig, true));
        inst.state.raise(2, sig);
    } else if inst.shutdown.contains(&sig) {
        let n = inst.state.shutdown_signals.fetch_add(1, Ordering::AcqRel) + 1;
        let emergency = n >= 2;
        if emergency || !inst.planned {
            inst.block
                .trip_global(Mode::Kill, Source::Signal, reason_for(sig, emergency));
        }
        inst.state.raise(if emergency { 2 } else { 1 }, sig);
        if n >= inst.force_after {
            // The kill is latched in shared memory; nothing is lost by
            // leaving now, and the operator asked three times.
            // SAFETY: _exit is async-signal-safe and takes no pointers.
            unsafe { libc::_exit(130) };
        }
    }
    // A handler that was there before ours still runs.
    if let Some((_, old)) = inst.previous.iter().find(|(s, _)| *s == sig) {
        let h = old.sa_sigaction;
        if h != libc::SIG_DFL && h != libc::SIG_IGN {
            if old.sa_flags & libc::SA_SIGINFO != 0 {
                // SAFETY: with SA_SIGINFO the kernel calls the handler with
                // these three arguments; we pass on ours.
                let f: extern "C" fn(c_int, *mut siginfo_t, *mut c_void) =
                    unsafe { std::mem::transmute(h) };
                f(sig, info, ctx);
            } else {
                // SAFETY: without SA_SIGINFO the handler takes the signal
                // number only.
                let f: extern "C" fn(c_int) = unsafe { std::mem::transmute(h) };
                f(sig);
            }
        }
    }
    // SAFETY: as above; restores this thread's errno.
    unsafe { *libc::__errno_location() = errno };
}

/// Installs the handlers; they trip through `tripper`'s block. Fails if a
/// [`SignalGuard`] is already installed in this process.
pub fn install(tripper: &Tripper, config: &SignalConfig) -> io::Result<SignalGuard> {
    let block = tripper.block().clone();
    let state = Arc::new(SignalState::default());
    let mut signals: Vec<i32> = config
        .emergency
        .iter()
        .chain(&config.shutdown)
        .copied()
        .collect();
    signals.sort_unstable();
    signals.dedup();
    // The dispositions in force now, read before anything is installed, so
    // the configuration the handlers read is complete before they can run.
    let mut previous = Vec::with_capacity(signals.len());
    for &sig in &signals {
        // SAFETY: a null new action only reads the current one into `old`,
        // a zeroed (valid) sigaction.
        let old = unsafe {
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(sig, std::ptr::null(), &mut old) != 0 {
                return Err(io::Error::last_os_error());
            }
            old
        };
        previous.push((sig, old));
    }
    let inst = Box::into_raw(Box::new(Installed {
        block,
        state: state.clone(),
        emergency: config.emergency.clone(),
        shutdown: config.shutdown.clone(),
        force_after: config.force_exit_after.unwrap_or(u32::MAX),
        planned: config.planned_shutdown,
        previous,
    }));
    if INSTALLED
        .compare_exchange(
            std::ptr::null_mut(),
            inst,
            Ordering::AcqRel,
            Ordering::Acquire,
        )
        .is_err()
    {
        // SAFETY: `inst` came from Box::into_raw above and was never shared.
        drop(unsafe { Box::from_raw(inst) });
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "signal handlers are already installed in this process: drop the other SignalGuard first",
        ));
    }
    let guard = SignalGuard {
        installed: inst,
        state,
    };
    for &sig in &signals {
        // SAFETY: a zeroed sigaction is a valid "no flags" value and
        // sigemptyset initialises its mask; `on_signal` has the SA_SIGINFO
        // signature and does only async-signal-safe work.
        let rc = unsafe {
            let mut act: libc::sigaction = std::mem::zeroed();
            act.sa_sigaction = on_signal as *const () as usize;
            act.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
            libc::sigemptyset(&mut act.sa_mask);
            libc::sigaction(sig, &act, std::ptr::null_mut())
        };
        if rc != 0 {
            let e = io::Error::last_os_error();
            // Dropping the guard puts back every disposition read above.
            drop(guard);
            return Err(e);
        }
    }
    Ok(guard)
}

/// Chains a panic hook that trips KILL (recording the panic message and
/// location) before the previous hook runs.
pub fn install_panic_hook(tripper: &Tripper) {
    let block = tripper.block().clone();
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
/// silent death would leave orders unattended; held by that thread.
#[must_use = "the guard trips the switch when dropped; bind it to a variable"]
pub struct KillOnDrop {
    block: Option<Arc<ControlBlock>>,
    what: &'static str,
}

impl KillOnDrop {
    /// A guard for the thread or scope named `what`, tripping through
    /// `tripper`'s block.
    pub fn new(tripper: &Tripper, what: &'static str) -> KillOnDrop {
        KillOnDrop {
            block: Some(tripper.block().clone()),
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
        KillOnDrop::new(&Tripper::new(b.clone()), "fine").disarm();
        assert_eq!(b.state().mode(), Mode::Normal);
        let b2 = b.clone();
        let r = std::thread::spawn(move || {
            let _g = KillOnDrop::new(&Tripper::new(b2), "strategy thread");
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

    /// Runs the child side of a signal test in a fresh process (this test
    /// binary, one test, `KS_SIGNAL_CHILD` set): signal dispositions are
    /// process-wide, so they are tested where nothing else runs.
    fn child(case: &str) -> std::process::Output {
        std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "signals::tests::signal_child_process",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("KS_SIGNAL_CHILD", case)
            .output()
            .unwrap()
    }

    /// The child side of the tests below; does nothing unless started by
    /// them (`KS_SIGNAL_CHILD`).
    #[test]
    fn signal_child_process() {
        let Ok(case) = std::env::var("KS_SIGNAL_CHILD") else {
            return;
        };
        let d = tempfile::tempdir().unwrap();
        let b = Arc::new(ControlBlock::create(d.path(), "sig").unwrap());
        if case == "ignored" {
            // SAFETY: setting SIGINT to "ignore" before the guard exists.
            unsafe { libc::signal(SIGINT, libc::SIG_IGN) };
        }
        let guard = install(&Tripper::new(b.clone()), &SignalConfig::default()).unwrap();
        assert!(
            install(&Tripper::new(b.clone()), &SignalConfig::default()).is_err(),
            "one guard per process"
        );
        // While installed: SIGUSR1 trips KILL from the handler.
        // SAFETY: raise(3) delivers to this thread; our handler is installed.
        unsafe { libc::raise(SIGUSR1) };
        assert_eq!(b.state().mode(), Mode::Kill);
        assert_eq!(guard.state().level(), ShutdownLevel::Emergency);
        drop(guard);
        let sig = if case == "ignored" { SIGINT } else { SIGTERM };
        println!("child: guard dropped, raising {sig}");
        // SAFETY: as above; now the previous disposition decides.
        unsafe { libc::raise(sig) };
        println!("child: survived signal {sig}");
    }

    /// Dropping the guard restores SIGTERM's default: the signal terminates
    /// the process again (before issue 9 it stayed silently ignored).
    #[test]
    fn dropping_the_guard_restores_the_default_sigterm() {
        use std::os::unix::process::ExitStatusExt;
        let out = child("default");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("guard dropped"), "{text}");
        assert!(!text.contains("survived"), "{text}");
        assert_eq!(out.status.signal(), Some(SIGTERM), "{text}");
    }

    /// ...and a signal that was ignored before stays ignored.
    #[test]
    fn dropping_the_guard_restores_an_ignored_sigint() {
        let out = child("ignored");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("survived signal 2"), "{text}");
        assert!(out.status.success(), "{text}");
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
