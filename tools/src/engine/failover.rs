//! The reference engine's side of a failover (`killswitch failover`):
//! the active hands over ([`killswitch::runtime::Runtime::hand_over`]) and
//! stops; the hot standby, seeing the lease released and the journal
//! closed, catches up to the last record and starts as the active with
//! its sessions taking over the venues' sessions ([`Promotion`]).
//!
//! Each side prints its phases on stderr as
//! `ks-engine: failover: <phase> at mono <ns>` (`CLOCK_MONOTONIC`, one
//! clock for both processes), so the two logs merge into one timeline:
//! stop new orders, lease released, last record (old active); release
//! seen, caught up, logon, lease taken, orders adopted, first new order
//! (new active).

use killswitch::clock::mono_ns;

/// What a promoted standby did while starting, for the timeline.
#[derive(Clone, Copy, Debug)]
pub struct Promotion {
    /// Every venue session logged on as the designated backup.
    pub logged_on_mono_ns: u64,
    /// The runtime started: the lease taken, the journal opened, its open
    /// orders adopted into the registry.
    pub started_mono_ns: u64,
    /// The epoch taken.
    pub epoch: u64,
    /// Orders adopted from the journal.
    pub adopted: usize,
}

/// Prints one phase of the timeline.
pub fn phase(what: &str, at_mono_ns: u64) {
    eprintln!("ks-engine: failover: {what} at mono {at_mono_ns}");
}

/// Prints one phase stamped now.
pub fn phase_now(what: &str) -> u64 {
    let t = mono_ns();
    phase(what, t);
    t
}
