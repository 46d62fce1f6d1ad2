//! `emergency`: whole emergency stops of the reference engine
//! (`killswitch drill`), tripped by `killswitch emergency`, beside the
//! runbook's `SIGTERM` and wait for exit, with the drain's phases.

use std::process::{Command, Stdio};

use hdrhistogram::Histogram;

use super::{killswitch_exe, load_average};

pub(crate) fn emergency(
    runs: u32,
    hgrm: Option<&std::path::Path>,
    venues: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    let exe = killswitch_exe()?;
    let mut rows = Vec::new();
    let mut split = Vec::new();
    for method in ["cli", "sigterm"] {
        let mut drain_done = Histogram::<u64>::new_with_bounds(1, 600_000_000_000, 3)?;
        let mut last_ack = Histogram::<u64>::new_with_bounds(1, 600_000_000_000, 3)?;
        let mut to_exit = Histogram::<u64>::new_with_bounds(1, 600_000_000_000, 3)?;
        let mut open = Vec::new();
        let mut phases: Vec<Histogram<u64>> = (0..PHASES.len())
            .map(|_| Histogram::new_with_bounds(1, 600_000_000_000, 3))
            .collect::<Result<_, _>>()?;
        for _ in 0..runs {
            let out = Command::new(&exe)
                .args([
                    "drill",
                    "--json",
                    "--trade-for",
                    "2s",
                    "--min-open",
                    "10000",
                    "--method",
                    method,
                    "--venues",
                    venues,
                ])
                .stderr(Stdio::null())
                .output()?;
            let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
            if v["pass"] != true {
                return Err(format!("a drill failed: {}", v["checks"]).into());
            }
            let d = v["engine"]["drains"]
                .as_array()
                .and_then(|a| a.last())
                .ok_or("no drain in the report")?;
            let t = |i: usize| d["timings_ns"][i].as_u64().unwrap_or(0);
            // timings: trip, seen, ack, first cancel, last enqueued, last answer, checkpoint, done.
            last_ack.record(t(5).saturating_sub(t(0)).max(1))?;
            drain_done.record(t(7).saturating_sub(t(0)).max(1))?;
            to_exit.record(v["emergency"]["total_ns"].as_u64().unwrap_or(0).max(1))?;
            open.push(d["open_at_snapshot"].as_u64().unwrap_or(0));
            for (h, (_, from, to)) in phases.iter_mut().zip(PHASES) {
                h.record(t(to).saturating_sub(t(from)).max(1))?;
            }
        }
        rows.push((method, last_ack, drain_done, to_exit, open));
        split.push((method, phases));
    }
    if let Some(d) = hgrm {
        for (method, a, done, e, _) in &rows {
            for (what, h) in [("last-ack", a), ("drain-done", done), ("exit", e)] {
                killswitch_tools::hgrm::write(&d.join(format!("{method}-{what}.hgrm")), h, 1000.0)?;
            }
        }
    }
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1e6;
    println!(
        "emergency stop of the reference engine ({runs} runs per method, 2 s of trading each, venues {venues}), load average {}",
        load_average()
    );
    println!(
        "{:<34} {:>22} {:>26} {:>22}",
        "trip by", "trip -> last cancel ack", "-> quick checkpoint, done", "trip -> process exit"
    );
    for (method, a, d, e, open) in &rows {
        let name = match *method {
            "cli" => "killswitch emergency",
            _ => "SIGTERM, wait for exit (runbook)",
        };
        println!(
            "{name:<34} p50 {:>7.2} ms max {:>7.2} p50 {:>9.2} ms max {:>7.2} p50 {:>7.2} ms max {:>7.2}   open orders {:?}",
            ms(a, 0.5),
            a.max() as f64 / 1e6,
            ms(d, 0.5),
            d.max() as f64 / 1e6,
            ms(e, 0.5),
            e.max() as f64 / 1e6,
            open
        );
    }
    println!("phase split (drain timings; p50 / max, ms):");
    for (method, phases) in &split {
        let cells: Vec<String> = PHASES
            .iter()
            .zip(phases)
            .map(|((name, _, _), h)| {
                format!("{name} {:.3} / {:.3}", ms(h, 0.5), h.max() as f64 / 1e6)
            })
            .collect();
        println!("  {method:<8} {}", cells.join(" | "));
    }
    Ok(())
}

/// The emergency's phases, as (name, from, to) indexes into a drain
/// report's `timings_ns`: trip, seen, gateway ack, first cancel enqueued,
/// last cancel enqueued, last answer, checkpoint done, drain done.
const PHASES: [(&str, usize, usize); 6] = [
    ("trip->ack", 0, 2),
    ("ack->first cancel (snapshot)", 2, 3),
    ("trip->first cancel", 0, 3),
    ("cancels out", 3, 4),
    ("answers in", 4, 5),
    ("checkpoint", 5, 6),
];
