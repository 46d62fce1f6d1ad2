//! `killswitch failover` / `failback`: hand the active role to the hot
//! standby, refused when there is nobody to hand over to or a KILL is in
//! force, and followed until the standby holds a newer lease epoch.

use std::process::ExitCode;

use killswitch::clock::format_duration_ns;
use killswitch::control::ControlError;

use crate::{exit, Target};

/// `failover` / `failback`: checks there is someone to hand over to, asks,
/// and waits until the standby holds a newer epoch.
pub(super) fn failover(
    t: &Target,
    what: &str,
    timeout: std::time::Duration,
) -> Result<ExitCode, ControlError> {
    let operator = t.operator()?;
    let block = operator.block();
    let lease = block.lease();
    if lease.epoch == 0 || lease.holder == 0 || !lease.holder_alive {
        eprintln!(
            "killswitch: refused: {what}: no live engine holds the active-role lease of {} (epoch {}, holder pid {}): nothing to hand over",
            block.path().display(),
            lease.epoch,
            lease.holder
        );
        return Ok(ExitCode::from(exit::REFUSED));
    }
    let Some(standby) = block.standby().filter(|s| s.alive) else {
        eprintln!(
            "killswitch: refused: {what}: no live hot standby follows {}: the active would stop and nobody would trade; start one with `ks-engine --standby` (same configuration) first",
            block.path().display()
        );
        return Ok(ExitCode::from(exit::REFUSED));
    };
    if killswitch::drain::kill_in_force(block, block.state()) {
        eprintln!(
            "killswitch: refused: {what}: a KILL is in force on {}: the active (pid {}) drains its own orders where they are; handing over mid-drain could leave them to no one. Let the drain end (`killswitch status`), reset, then ask again",
            block.path().display(),
            lease.holder
        );
        return Ok(ExitCode::from(exit::REFUSED));
    }
    let started = std::time::Instant::now();
    let asked = operator.request_failover();
    outln!(
        "{what}: asked active pid {} (epoch {}) to hand over to standby pid {} (request {})",
        lease.holder,
        lease.epoch,
        standby.pid,
        asked.nonce
    );
    let mut kill_said = false;
    while started.elapsed() < timeout {
        if block
            .failover_request()
            .is_some_and(|r| r.nonce == asked.nonce && r.withdrawn)
        {
            eprintln!(
                "killswitch: {what}: ABORTED by the active pid {}: a KILL came in force before it handed over; it keeps the lease and drains its own orders (its log and report say what it drained); the standby pid {} does not take over",
                lease.holder, standby.pid
            );
            return Ok(ExitCode::from(exit::REFUSED));
        }
        if !kill_said && killswitch::drain::kill_in_force(block, block.state()) {
            kill_said = true;
            outln!(
                "{what}: a KILL came in force during the failover: the active drains it if it has not handed over yet, otherwise the standby drains it as it takes over (each engine's log says which)"
            );
        }
        let now = block.lease();
        if now.epoch > lease.epoch && now.holder != 0 && now.holder_alive {
            outln!(
                "{what}: done in {}: active pid {} (epoch {}), was pid {} (epoch {}); each engine's log has its timeline",
                format_duration_ns(started.elapsed().as_nanos() as u64),
                now.holder,
                now.epoch,
                lease.holder,
                lease.epoch
            );
            return Ok(ExitCode::from(exit::OK));
        }
        if now.epoch > lease.epoch && now.holder == 0 {
            // Taken and already given back: the new active stopped (a KILL
            // in force at its takeover is drained and then it stops).
            eprintln!(
                "killswitch: {what}: the standby pid {} took over (epoch {}) and has stopped since, giving the lease back: nobody is active now; its log and report say why (a KILL drained at the takeover stops it)",
                standby.pid, now.epoch
            );
            return Ok(ExitCode::from(exit::REFUSED));
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let now = block.lease();
    eprintln!(
        "killswitch: {what}: not done after {timeout:?}: lease epoch {} holder pid {} ({}); check both engines' logs",
        now.epoch,
        now.holder,
        if now.holder_alive { "alive" } else { "none or dead" }
    );
    Ok(ExitCode::from(exit::REFUSED))
}
