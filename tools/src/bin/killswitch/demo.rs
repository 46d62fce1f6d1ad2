//! `killswitch demo`: the smallest end-to-end showing of the switch. It
//! creates a control block in a temporary directory, runs a gate in this
//! process, trips the block from a child `killswitch trip` process, and
//! prints what the gate saw and how long after the trip.

use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use killswitch::clock::{format_duration_ns, mono_ns};
use killswitch::control::{ControlBlock, Status};
use killswitch::gate::{Gate, Verdict};
use killswitch::order::{OrderIntent, Price, Qty, ScopeTags, Side};

use crate::exit;

/// Runs the demo.
pub fn run() -> ExitCode {
    let dir = std::env::temp_dir().join(format!("killswitch-demo-{}", std::process::id()));
    let result = demo(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    match result {
        Ok(()) => ExitCode::from(exit::OK),
        Err(e) => {
            eprintln!("killswitch demo: error: {e}");
            ExitCode::from(exit::IO)
        }
    }
}

fn demo(dir: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    let block = Arc::new(ControlBlock::create(dir, "demo")?);
    outln!(
        "1. control block   {} (mode {})",
        block.path().display(),
        block.state().mode()
    );
    let gate = Gate::new(block.clone());
    let order = OrderIntent {
        tags: ScopeTags::default(),
        side: Side::Buy,
        qty: Qty::from_lots(1),
        price: Price::from_units(100),
        position: Qty::ZERO,
    };

    let started = Arc::new(AtomicBool::new(false));
    let spinner = {
        let started = started.clone();
        std::thread::spawn(move || {
            let mut allowed = 0u64;
            started.store(true, Ordering::Release);
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                match gate.check(&order) {
                    Verdict::Allow => allowed += 1,
                    Verdict::Reject(r) => return Some((allowed, mono_ns(), r)),
                }
                if allowed % 4096 == 0 && Instant::now() > deadline {
                    return None;
                }
            }
        })
    };
    while !started.load(Ordering::Acquire) {
        std::hint::spin_loop();
    }
    outln!(
        "2. gate            checking orders in a loop in pid {}",
        std::process::id()
    );

    let exe = std::env::current_exe()?;
    let reason = "demo: tripped from a child process";
    let mut cmd = Command::new(exe);
    cmd.arg("--dir")
        .arg(dir)
        .args(["--name", "demo", "trip", "--reason", reason]);
    let out = cmd.output()?;
    outln!(
        "3. child process   `killswitch trip --reason \"{reason}\"` exited with {}: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout).trim()
    );

    let Some((allowed, seen_ns, rejection)) = spinner.join().map_err(|_| "gate thread panicked")?
    else {
        return Err("the gate did not see the trip within 10 s".into());
    };
    let trip = block.last_trip().ok_or("no trip record")?;
    outln!(
        "4. gate saw it     after {allowed} allowed checks: {rejection:?}, {} after the child wrote the trip",
        format_duration_ns(seen_ns.saturating_sub(trip.mono_ns))
    );
    outln!("5. status          (what `killswitch status` prints)");
    let status = Status::read(&block);
    outln!(
        "   mode {} generation {}, tripped by {} pid {} uid {}: \"{}\"",
        status.mode,
        status.generation,
        trip.source.as_str(),
        trip.pid,
        trip.uid,
        trip.reason
    );
    outln!("The trip is latched: the block stays KILL until `killswitch reset --confirm --reason ...`.");
    Ok(())
}
