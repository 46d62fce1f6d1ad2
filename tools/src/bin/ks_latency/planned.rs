//! `ks-latency planned`: the planned shutdown's own work, beside the waits
//! it is configured to make.
//!
//! Each run is a whole `killswitch drill --planned` (the reference engine
//! trading until at least `--min-open` orders rest and positions are open,
//! then `killswitch shutdown --flatten conservative`, checked). The engine's
//! report times every phase and, inside it, the time spent in configured
//! waits: the time the library waits for the venues (the strategies to
//! stop, the cancels to be confirmed, the flattening orders to work, the
//! position reports, the logouts, the services to stop). Work is the rest:
//! everything the orchestrator itself does. Printed per phase and in all as
//! hdrhistogram percentiles over the runs.

use std::path::Path;
use std::process::{Command, Stdio};

use hdrhistogram::Histogram;
use killswitch::shutdown::Phase;

fn hist() -> Result<Histogram<u64>, Box<dyn std::error::Error>> {
    Ok(Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)?)
}

/// Runs `runs` planned drills and prints the work and wait split.
pub fn run(
    runs: u32,
    min_open: u64,
    venues: &str,
    hgrm: Option<&Path>,
) -> Result<(), Box<dyn std::error::Error>> {
    let exe = super::killswitch_exe()?;
    // Per phase (index 0..13) and in all: work and waits, µs.
    let mut work: Vec<Histogram<u64>> = (0..14).map(|_| hist()).collect::<Result<_, _>>()?;
    let mut waited: Vec<Histogram<u64>> = (0..14).map(|_| hist()).collect::<Result<_, _>>()?;
    let mut open = Vec::new();
    let mut cancelled = Vec::new();
    let mut positions = Vec::new();
    for n in 0..runs {
        let out = Command::new(&exe)
            .args([
                "drill",
                "--planned",
                "--json",
                "--flatten",
                "conservative",
                "--trade-for",
                "2s",
                "--min-open",
                &min_open.to_string(),
                "--venues",
                venues,
            ])
            .stderr(Stdio::null())
            .output()?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .map_err(|e| format!("run {n}: the drill printed no report ({e})"))?;
        if v["pass"] != true {
            return Err(format!("run {n}: the planned drill failed: {:#}", v["checks"]).into());
        }
        let r = &v["shutdown_report"];
        let us = |x: &serde_json::Value| (x.as_f64().unwrap_or(0.0) * 1000.0).round() as u64;
        for p in r["phases"].as_array().ok_or("no phases in the report")? {
            let i = p["step"].as_u64().unwrap_or(0) as usize;
            let (ms, w) = (us(&p["ms"]), us(&p["waited_ms"]));
            if (1..=13).contains(&i) {
                work[i].record(ms.saturating_sub(w).max(1))?;
                waited[i].record(w.max(1))?;
            }
        }
        work[0].record(us(&r["work_ms"]).max(1))?;
        waited[0].record(us(&r["waited_ms"]).max(1))?;
        open.push(v["open_orders_at_request"].as_u64().unwrap_or(0));
        positions.push(v["positions_open_at_request"].as_u64().unwrap_or(0));
        cancelled.push(r["cancelled"].as_u64().unwrap_or(0));
        if open.last().is_some_and(|&o| o < min_open) {
            return Err(format!(
                "run {n}: only {} orders resting at the request (wanted {min_open})",
                open.last().unwrap_or(&0)
            )
            .into());
        }
    }
    if let Some(d) = hgrm {
        std::fs::create_dir_all(d)?;
        killswitch_tools::hgrm::write(&d.join("planned-work.hgrm"), &work[0], 1000.0)?;
        killswitch_tools::hgrm::write(&d.join("planned-waited.hgrm"), &waited[0], 1000.0)?;
    }
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "planned shutdown of the reference engine, conservative flattening ({runs} runs, venues {venues}), load average {}",
        super::load_average()
    );
    println!("orders resting at the request {open:?}; cancelled in step 5 {cancelled:?}; positions open {positions:?}");
    println!(
        "{:<4} {:<42} {:>24} {:>26}",
        "step", "phase", "work p50 / max (ms)", "waited p50 / max (ms)"
    );
    for (i, p) in Phase::ALL.iter().enumerate() {
        let (w, wt) = (&work[i + 1], &waited[i + 1]);
        println!(
            "{:>4} {:<42} {:>11.2} / {:>9.2} {:>12.2} / {:>10.2}",
            i + 1,
            p.title(),
            ms(w, 0.5),
            w.max() as f64 / 1000.0,
            ms(wt, 0.5),
            wt.max() as f64 / 1000.0
        );
    }
    println!(
        "{:<4} {:<42} {:>11.2} / {:>9.2} {:>12.2} / {:>10.2}",
        "",
        "all steps",
        ms(&work[0], 0.5),
        work[0].max() as f64 / 1000.0,
        ms(&waited[0], 0.5),
        waited[0].max() as f64 / 1000.0
    );
    println!(
        "work beyond the configured waits: p50 {:.1} ms, p90 {:.1} ms, max {:.1} ms (target < 250 ms)",
        ms(&work[0], 0.5),
        ms(&work[0], 0.9),
        work[0].max() as f64 / 1000.0
    );
    Ok(())
}
