//! Clocks shared by every process on the machine.
//!
//! All cross-process timestamps in the control block and the journal are
//! `CLOCK_MONOTONIC` nanoseconds: one clock for every process since boot, so a
//! time written by the CLI can be subtracted from a time read in the engine.
//! Wall-clock time (`CLOCK_REALTIME`) is kept beside it only for humans.
//!
//! Both functions are async-signal-safe (`clock_gettime` is on the POSIX list),
//! which the signal handler relies on.

/// Nanoseconds of `CLOCK_MONOTONIC` (system-wide, not adjusted by NTP jumps).
#[inline]
pub fn mono_ns() -> u64 {
    read(libc::CLOCK_MONOTONIC)
}

/// Nanoseconds since the Unix epoch (`CLOCK_REALTIME`).
#[inline]
pub fn wall_ns() -> u64 {
    read(libc::CLOCK_REALTIME)
}

#[inline]
fn read(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; both clock ids exist on every
    // Linux kernel, so the call cannot fail and writes only `ts`.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

/// Formats wall-clock nanoseconds as `YYYY-MM-DD HH:MM:SS.mmm UTC`.
pub fn format_wall(wall_ns: u64) -> String {
    if wall_ns == 0 {
        return "-".to_string();
    }
    let secs = (wall_ns / 1_000_000_000) as i64;
    let millis = (wall_ns / 1_000_000) % 1000;
    let (y, mo, d, h, mi, s) = civil_from_unix(secs);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}.{millis:03} UTC")
}

/// Formats wall-clock nanoseconds as `YYYY-MM-DD_HH-MM-SS` (UTC), for file names.
pub fn format_wall_compact(wall_ns: u64) -> String {
    let (y, mo, d, h, mi, s) = civil_from_unix((wall_ns / 1_000_000_000) as i64);
    format!("{y:04}-{mo:02}-{d:02}_{h:02}-{mi:02}-{s:02}")
}

/// Formats a duration in nanoseconds with a unit a human reads at a glance.
pub fn format_duration_ns(ns: u64) -> String {
    if ns < 10_000 {
        format!("{ns} ns")
    } else if ns < 10_000_000 {
        format!("{:.1} µs", ns as f64 / 1e3)
    } else if ns < 10_000_000_000 {
        format!("{:.2} ms", ns as f64 / 1e6)
    } else {
        format!("{:.2} s", ns as f64 / 1e9)
    }
}

/// Days-from-civil inverse (Howard Hinnant's algorithm), UTC, no time zone database.
fn civil_from_unix(secs: i64) -> (i64, u32, u32, u32, u32, u32) {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = if m <= 2 { y + 1 } else { y };
    (
        y,
        m,
        d,
        (rem / 3600) as u32,
        ((rem % 3600) / 60) as u32,
        (rem % 60) as u32,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates_match_known_epochs() {
        assert_eq!(format_wall(1), "1970-01-01 00:00:00.000 UTC");
        // 2024-11-25 15:45:23 UTC, the runbook's checkpoint example.
        assert_eq!(
            format_wall_compact(1_732_549_523_000_000_000),
            "2024-11-25_15-45-23"
        );
        // Leap day.
        assert_eq!(
            format_wall(951_782_400_000_000_000),
            "2000-02-29 00:00:00.000 UTC"
        );
    }

    #[test]
    fn monotonic_clock_moves_forward() {
        let a = mono_ns();
        let b = mono_ns();
        assert!(b >= a);
        assert!(wall_ns() > 1_600_000_000_000_000_000);
    }
}
