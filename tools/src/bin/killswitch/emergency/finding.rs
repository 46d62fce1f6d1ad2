//! What `emergency` concludes about an engine beyond its drain status: was
//! it restarted after the trip, and what to put on record when it is gone
//! without confirming.

use killswitch::clock::wall_ns;
use killswitch::control::{
    proc_start_ticks, DrainIncomplete, DrainSnapshot, GatewaySnapshot, IncompleteWriter, Operator,
};

/// True when process `pid` started after `t_mono` (`CLOCK_MONOTONIC` ns):
/// an engine restarted after the trip. `/proc`
/// gives start times in clock ticks since boot (`CLOCK_BOOTTIME`), so the
/// boot-to-monotonic offset is taken out; unknown reads as false.
pub(super) fn started_after(pid: u32, t_mono: u64) -> bool {
    use nix::time::{clock_gettime, ClockId};
    let Some(ticks) = proc_start_ticks(pid) else {
        return false;
    };
    let Ok(Some(hz)) = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK) else {
        return false;
    };
    let ns = |c| {
        clock_gettime(c)
            .ok()
            .map(|t| t.tv_sec() as i128 * 1_000_000_000 + t.tv_nsec() as i128)
    };
    let (Some(boot), Some(mono)) = (ns(ClockId::CLOCK_BOOTTIME), ns(ClockId::CLOCK_MONOTONIC))
    else {
        return false;
    };
    let hz = hz.max(1) as i128;
    // The start time is floored to a tick: if even the floor is after the
    // trip, the engine started after it. (Within the same tick: false.)
    let start_mono = ticks as i128 * 1_000_000_000 / hz - (boot - mono);
    start_mono > t_mono as i128
}

/// Puts what `emergency` found after the engine is gone into the control
/// block's "drain incomplete" record (reset stays refused until forced).
pub(super) fn record_finding(
    operator: &Operator,
    g: u64,
    snap: &DrainSnapshot,
    snapshot: bool,
    unconfirmed: u64,
) {
    let pid = std::process::id();
    let open = if snapshot {
        snap.open_at_snapshot
    } else {
        GatewaySnapshot::read(operator.block()).open_orders
    };
    operator.record_unconfirmed_drain(&DrainIncomplete {
        generation: g,
        open,
        confirmed: if snapshot { snap.orders_confirmed } else { 0 },
        unknown: unconfirmed,
        writer: IncompleteWriter::Emergency,
        no_snapshot: !snapshot,
        pid,
        writer_start_ticks: proc_start_ticks(pid).unwrap_or(0),
        wall_ns: wall_ns(),
    });
}
