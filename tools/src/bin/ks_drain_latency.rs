//! `ks-drain-latency`: trip -> first cancel, measured many times.
//!
//! Runs a gateway and a drain (busy back-off, pinned when cores are given)
//! over the in-process simulated venue. Each round rests `--orders` orders,
//! trips KILL, waits for the drain's report and resets. Prints hdrhistogram
//! percentiles (p50 / p99 / p99.9 / max) of:
//! * trip -> first cancel enqueued into the gateway ring (the drain's
//!   `t_first_cancel`),
//! * trip -> first cancel accepted by the venue (its message log),
//! * trip -> all orders confirmed cancelled;
//!
//! and, to show where the first-cancel time goes, its three phases: trip ->
//! drain saw it, drain saw it -> gateway ack seen, ack -> first cancel
//! enqueued.
//!
//! `--second-trip`: a trip that lands while a drain runs. Two venues (SIM-A,
//! SIM-B, `--orders` resting on each); a scoped KILL of SIM-B, whose cancel
//! answers take 20 ms, starts a drain; once it is cancelling, a global KILL
//! lands. Prints, from the same rounds, the first (scoped) trip -> its first
//! cancel beside the second (global) trip -> its first cancel (enqueued, and
//! on SIM-A's wire), and the second trip's phases.
//!
//! `--wire`: the venue is a `ks-venue` process (its sibling binary, audit
//! log off) and the gateway's session a [`FixVenue`] over loopback: the
//! emergency end to end over the wire. Each round waits until the venue has
//! acknowledged every order (all `Live`), then trips; "all confirmed" is the
//! last cancel's ExecutionReport applied. The venue's log is off, so the
//! "on the wire" line is not printed.
//!
//! `--name N` names the control block (`/dev/shm/killswitch.N`) so that
//! another process can attach to it: BENCHMARKS.md floods the admin
//! endpoint serving it (`killswitch --name N serve`) during a run.
//!
//! `ks-drain-latency [--rounds N] [--orders N] [--single] [--second-trip] [--wire] [--name N] [--drain-core C] [--gateway-core C] [--trip-core C] [--fifo PRIORITY] [--sleeping-backoff] [--hgrm DIR]`
//!
//! `--fifo P` runs the drain and gateway threads under `SCHED_FIFO` at
//! priority P (refused with the reason where the host does not allow it),
//! with the library's default back-off (spin, yield, then short sleeps):
//! a real-time thread that busy-spins never lets a normal thread have its
//! core. `--sleeping-backoff` gives the same back-off without `SCHED_FIFO`,
//! the baseline to set beside it;
//! `--hgrm DIR` writes each measured path's percentile distribution there
//! (`ks-plot` draws them).

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use killswitch::backoff::BackoffConfig;
use killswitch::clock::mono_ns;
use killswitch::control::{
    ControlBlock, DrainPhase, DrainSnapshot, Mode, Operator, ResetRequest, ScopeKind, Source,
    TripRequest,
};
use killswitch::drain::{Drain, DrainConfig, DrainHandle};
use killswitch::gateway::{Gateway, GatewayConfig, GatewayHandle};
use killswitch::order::{OrderIntent, Price, Qty, ScopeTags, Side};
use killswitch::registry::Registry;
use killswitch::venue::sim::{FlowConfig, SimConfig, SimVenue, WireMessage};
use killswitch::venue::Venue;
use killswitch_tools::fix::client::{FixVenue, FixVenueConfig};

struct Args {
    rounds: u64,
    orders: usize,
    mass_cancel: bool,
    drain_core: Option<usize>,
    gateway_core: Option<usize>,
    trip_core: Option<usize>,
    second_trip: bool,
    /// The venue over FIX in its own process.
    wire: bool,
    /// Control block name (default `drainlat-<pid>`), so that another
    /// process (the admin endpoint under a flood) can attach to it.
    name: Option<String>,
    /// `SCHED_FIFO` priority for the drain and gateway threads.
    realtime: Option<u8>,
    /// Write the percentile distributions (`.hgrm`) here.
    hgrm: Option<std::path::PathBuf>,
    /// The drain and gateway sleep when idle (the library's default
    /// back-off) instead of spinning.
    sleeping_backoff: bool,
}

impl Args {
    /// The gateway on `venues` and its drain, on the cores and with the
    /// back-off and scheduling these arguments ask for.
    fn spawn(
        &self,
        block: &Arc<ControlBlock>,
        registry: &Arc<Registry>,
        venues: Vec<(u16, Box<dyn Venue>)>,
    ) -> Result<(GatewayHandle, DrainHandle), String> {
        let mut gateway = Gateway::spawn(
            block.clone(),
            registry.clone(),
            venues,
            GatewayConfig {
                core: self.gateway_core,
                backoff: self.backoff(),
                order_ring: 16_384,
                realtime: self.realtime,
                ..GatewayConfig::default()
            },
        )
        .map_err(|e| e.to_string())?;
        let link = gateway
            .take_drain_link()
            .ok_or("gateway gave no drain link")?;
        let drain = Drain::spawn(
            link,
            DrainConfig {
                core: self.drain_core,
                backoff: self.backoff(),
                realtime: self.realtime,
                ..DrainConfig::emergency()
            },
            None,
        )
        .map_err(|e| e.to_string())?;
        Ok((gateway, drain))
    }

    /// Busy spinning unless asked otherwise. Never under `SCHED_FIFO`: a
    /// real-time thread that never sleeps holds its core against every
    /// normal thread (this tool's own tripping thread included) except for
    /// the kernel's real-time throttling slack, which on a 2-core machine
    /// stalls everything.
    fn backoff(&self) -> BackoffConfig {
        if self.sleeping_backoff || self.realtime.is_some() {
            BackoffConfig::default()
        } else {
            BackoffConfig::busy()
        }
    }
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        rounds: 2_000,
        orders: 10,
        mass_cancel: true,
        drain_core: None,
        gateway_core: None,
        trip_core: None,
        second_trip: false,
        wire: false,
        name: None,
        realtime: None,
        hgrm: None,
        sleeping_backoff: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| format!("{name} needs a number"))
        };
        match flag.as_str() {
            "--rounds" => a.rounds = value("--rounds")?.max(1),
            "--orders" => a.orders = value("--orders")?.max(1) as usize,
            "--single" => a.mass_cancel = false,
            "--second-trip" => a.second_trip = true,
            "--wire" => a.wire = true,
            "--name" => a.name = Some(it.next().ok_or("--name needs a block name")?),
            "--drain-core" => a.drain_core = Some(value("--drain-core")? as usize),
            "--gateway-core" => a.gateway_core = Some(value("--gateway-core")? as usize),
            "--trip-core" => a.trip_core = Some(value("--trip-core")? as usize),
            "--fifo" => {
                let p = value("--fifo")?;
                a.realtime = Some(
                    u8::try_from(p)
                        .map_err(|_| format!("--fifo {p}: a SCHED_FIFO priority is 1..=99"))?,
                )
            }
            "--sleeping-backoff" => a.sleeping_backoff = true,
            "--hgrm" => {
                a.hgrm = Some(it.next().ok_or("--hgrm needs a directory")?.into())
            }
            "-h" | "--help" => {
                return Err(
                    "usage: ks-drain-latency [--rounds N] [--orders N] [--single] [--second-trip] [--wire] [--name N] [--drain-core C] [--gateway-core C] [--trip-core C] [--fifo PRIORITY] [--sleeping-backoff] [--hgrm DIR]"
                        .into(),
                )
            }
            other => return Err(format!("unknown argument {other:?}; try --help")),
        }
    }
    Ok(a)
}

fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds")
}

fn print(name: &str, h: &Histogram<u64>) {
    let us = |v: u64| v as f64 / 1_000.0;
    println!(
        "{name:<40} p50 {:>9.2} µs  p99 {:>9.2} µs  p99.9 {:>9.2} µs  max {:>9.2} µs  (n={})",
        us(h.value_at_quantile(0.5)),
        us(h.value_at_quantile(0.99)),
        us(h.value_at_quantile(0.999)),
        us(h.max()),
        h.len()
    );
}

fn run(a: &Args) -> Result<(), String> {
    if a.second_trip {
        return second_trip(a);
    }
    if let Some(id) = a.trip_core {
        // The measuring (tripping) thread; on a 2-core box it shares a core
        // with the gateway or the drain whatever we do: this picks which.
        core_affinity::set_for_current(core_affinity::CoreId { id });
    }
    let dir = tempfile_dir()?;
    let block = Arc::new(
        match &a.name {
            // Opened if it exists: the endpoint attached to it first.
            Some(n) => ControlBlock::open_or_create(&dir, n),
            None => ControlBlock::create(&dir, &format!("drainlat-{}", std::process::id())),
        }
        .map_err(|e| e.to_string())?,
    );
    let operator = Operator::new(block.clone());
    let registry = Arc::new(Registry::new());
    let (venue, sim, _server): (Box<dyn Venue>, _, _) = if a.wire {
        let (server, fix) = wire_venue(a.mass_cancel)?;
        (Box::new(fix), None, Some(server))
    } else {
        let mut cfg = SimConfig::new("SIM", 1, 1);
        cfg.flow = FlowConfig::off();
        cfg.mass_cancel = a.mass_cancel;
        let (venue, sim) = SimVenue::new(cfg);
        (Box::new(venue), Some(sim), None)
    };
    let (gateway, drain) = a.spawn(&block, &registry, vec![(0, venue)])?;
    let sender = gateway.order_sender();
    let intent = OrderIntent {
        tags: ScopeTags::default(),
        side: Side::Buy,
        qty: Qty::from_lots(1),
        price: Price::from_units(50),
        position: Qty::ZERO,
    };
    let (mut enq, mut wire, mut done) = (hist(), hist(), hist());
    let (mut seen, mut acked, mut after_ack) = (hist(), hist(), hist());
    for round in 0..a.rounds {
        for _ in 0..a.orders {
            while sender.submit(&intent).is_err() {
                std::thread::yield_now();
            }
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        let resting = || match &sim {
            Some(sim) => sim.stats().our_resting >= a.orders as u64,
            // Over the wire: every order acknowledged by the venue.
            None => registry.read(|v| {
                v.open_orders(|o| o.state == killswitch::order::OrderState::Live)
                    .len()
                    >= a.orders
            }),
        };
        while !resting() || registry.open_count() < a.orders {
            if Instant::now() > deadline {
                return Err(format!("round {round}: orders did not rest within 30 s"));
            }
            std::thread::sleep(Duration::from_micros(if sim.is_some() { 0 } else { 500 }));
        }
        let log_before = sim.as_ref().map_or(0, |s| s.log_len());
        let t0 = mono_ns();
        operator
            .tripper()
            .trip_global(Mode::Kill, Source::Api, "ks-drain-latency");
        let out = drain
            .wait_outcome(Duration::from_secs(30))
            .map_err(|e| format!("round {round}: no drain report: {e}"))?;
        if !out.is_clean() {
            return Err(format!("round {round}: drain not clean:\n{out}"));
        }
        let rec = |h: &mut Histogram<u64>, t: u64| h.saturating_record(t.saturating_sub(t0).max(1));
        if let Some(sim) = &sim {
            let first_wire = sim
                .log_from(log_before)
                .iter()
                .find(|l| matches!(l.msg, WireMessage::Cancel(_) | WireMessage::MassCancel(_)))
                .map(|l| l.mono_ns)
                .ok_or_else(|| format!("round {round}: no cancel reached the venue"))?;
            rec(&mut wire, first_wire);
        }
        rec(&mut enq, out.timings.t_first_cancel);
        rec(&mut done, out.timings.t_last_ack);
        let t = &out.timings;
        let span = |h: &mut Histogram<u64>, a: u64, b: u64| {
            h.saturating_record(b.saturating_sub(a).max(1))
        };
        span(&mut seen, t0, t.t_trip_seen);
        span(&mut acked, t.t_trip_seen, t.t_gateway_ack);
        span(&mut after_ack, t.t_gateway_ack, t.t_first_cancel);
        operator
            .reset(&ResetRequest {
                source: Source::Api,
                reason: "ks-drain-latency".into(),
                force: false,
                expected_generation: None,
            })
            .map_err(|e| e.to_string())?;
    }
    println!(
        "ks-drain-latency: {} rounds, {} open orders each, {} cancel, venue {}, drain core {:?}, gateway core {:?}, trip core {:?}, {} cpus, drain and gateway {} with {} back-off, load average {}",
        a.rounds,
        a.orders,
        if a.mass_cancel { "mass" } else { "single" },
        if a.wire {
            "ks-venue over FIX on loopback"
        } else {
            "in-process"
        },
        a.drain_core,
        a.gateway_core,
        a.trip_core,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        a.realtime
            .map_or("SCHED_OTHER".to_string(), |p| format!("SCHED_FIFO {p}")),
        if a.backoff().max_sleep.is_zero() { "busy" } else { "sleeping" },
        std::fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|s| s.split_whitespace().next().map(str::to_string))
            .unwrap_or_default()
    );
    let rows = [
        (
            "trip -> first cancel enqueued",
            "first-cancel-enqueued",
            &enq,
        ),
        (
            "trip -> first cancel on the wire",
            "first-cancel-wire",
            &wire,
        ),
        ("trip -> all orders confirmed", "all-confirmed", &done),
        ("  phase: trip -> drain saw it", "phase-seen", &seen),
        ("  phase: saw it -> gateway ack seen", "phase-ack", &acked),
        (
            "  phase: ack -> first cancel enqueued",
            "phase-first-cancel",
            &after_ack,
        ),
    ];
    for (name, file, h) in rows {
        if file == "first-cancel-wire" && sim.is_none() {
            continue;
        }
        print(name, h);
        if let Some(d) = &a.hgrm {
            killswitch_tools::hgrm::write(&d.join(format!("{file}.hgrm")), h, 1000.0)
                .map_err(|e| format!("--hgrm {}: {e}", d.display()))?;
        }
    }
    drop(drain);
    drop(gateway);
    let _ = std::fs::remove_file(block.path());
    Ok(())
}

/// A `ks-venue` process with one venue (no flow, no audit log) and a
/// logged-on session to it.
fn wire_venue(mass_cancel: bool) -> Result<(VenueProcess, FixVenue), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let path = exe.with_file_name("ks-venue");
    let mut cmd = std::process::Command::new(&path);
    cmd.args(["--venue", "SIM:0", "--instruments", "I0"]);
    if !mass_cancel {
        cmd.arg("--no-mass-cancel");
    }
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| {
            format!(
                "{}: {e} (build it: cargo build --release -p killswitch-tools)",
                path.display()
            )
        })?;
    let mut line = String::new();
    let out = child.stdout.take().ok_or("ks-venue: no stdout")?;
    std::io::BufRead::read_line(&mut std::io::BufReader::new(out), &mut line)
        .map_err(|e| e.to_string())?;
    let server = VenueProcess(child);
    let addr = line
        .split_whitespace()
        .find_map(|w| w.parse().ok())
        .ok_or_else(|| format!("ks-venue said {line:?}, no address"))?;
    let mut cfg = FixVenueConfig::new("SIM", addr, "DRAINLAT", "SIM");
    cfg.symbols = vec![(0, "I0".into())];
    cfg.heartbeat = Duration::from_secs(30);
    cfg.mass_cancel = mass_cancel;
    let mut fix = FixVenue::new(cfg);
    fix.connect(Duration::from_secs(10))?;
    Ok((server, fix))
}

/// The venue process, killed when dropped.
struct VenueProcess(std::process::Child);

impl Drop for VenueProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `--second-trip`: see the module docs.
fn second_trip(a: &Args) -> Result<(), String> {
    if let Some(id) = a.trip_core {
        core_affinity::set_for_current(core_affinity::CoreId { id });
    }
    let dir = tempfile_dir()?;
    let block = Arc::new(
        ControlBlock::create(&dir, &format!("drainlat2-{}", std::process::id()))
            .map_err(|e| e.to_string())?,
    );
    let operator = Operator::new(block.clone());
    let registry = Arc::new(Registry::new());
    let mut sessions: Vec<(u16, Box<dyn Venue>)> = Vec::new();
    let mut sims = Vec::new();
    for (i, name) in ["SIM-A", "SIM-B"].iter().enumerate() {
        let index = block
            .register_name(ScopeKind::Venue, name)
            .map_err(|e| e.to_string())?;
        let mut cfg = SimConfig::new(name, 1, 1 + i as u64);
        cfg.flow = FlowConfig::off();
        cfg.mass_cancel = a.mass_cancel;
        let (venue, sim) = SimVenue::new(cfg);
        sessions.push((index, Box::new(venue)));
        sims.push((index, sim));
    }
    let (gateway, drain) = a.spawn(&block, &registry, sessions)?;
    let sender = gateway.order_sender();
    let (sim_a, sim_b) = (&sims[0].1, &sims[1].1);
    let (mut first, mut second, mut second_wire) = (hist(), hist(), hist());
    let (mut seen, mut acked, mut after_ack) = (hist(), hist(), hist());
    let (mut f_lock, mut f_seen, mut f_ack, mut f_after) = (hist(), hist(), hist(), hist());
    for round in 0..a.rounds {
        for &(venue, _) in &sims {
            let intent = OrderIntent {
                tags: ScopeTags {
                    venue,
                    ..ScopeTags::default()
                },
                side: Side::Buy,
                qty: Qty::from_lots(1),
                price: Price::from_units(50),
                position: Qty::ZERO,
            };
            for _ in 0..a.orders {
                while sender.submit(&intent).is_err() {
                    std::thread::yield_now();
                }
            }
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while sim_a.stats().our_resting < a.orders as u64
            || sim_b.stats().our_resting < a.orders as u64
            || registry.open_count() < 2 * a.orders
        {
            if Instant::now() > deadline {
                return Err(format!("round {round}: orders did not rest within 30 s"));
            }
            std::thread::yield_now();
        }
        // SIM-B answers cancels 20 ms late: the scoped drain is still
        // tracking them when the global kill lands.
        sim_b.set_event_latency(Duration::from_millis(20));
        let t1 = mono_ns();
        operator
            .trip(&TripRequest {
                mode: Mode::Kill,
                scopes: vec![(ScopeKind::Venue, "SIM-B".into())],
                source: Source::Api,
                reason: "ks-drain-latency: first trip".into(),
            })
            .map_err(|e| e.to_string())?;
        let g1 = block.state().generation();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let d = DrainSnapshot::read(&block);
            if d.generation == g1 && d.phase == DrainPhase::Cancelling {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!("round {round}: the scoped drain did not start"));
            }
            // Sleep, not spin: on 2 cores a spinning trip thread would take
            // the drain's or the gateway's core and time the scheduler.
            std::thread::sleep(Duration::from_micros(20));
        }
        let log_a = sim_a.log_len();
        let t2 = mono_ns();
        operator
            .tripper()
            .trip_global(Mode::Kill, Source::Api, "ks-drain-latency: second trip");
        let out = drain
            .wait_outcome(Duration::from_secs(30))
            .map_err(|e| format!("round {round}: no drain report: {e}"))?;
        sim_b.set_event_latency(Duration::ZERO);
        if !out.is_clean() || out.escalations.len() != 1 {
            return Err(format!(
                "round {round}: expected one clean drain with one escalation:\n{out}"
            ));
        }
        let e = out.escalations[0];
        let wire = sim_a
            .log_from(log_a)
            .iter()
            .find(|l| matches!(l.msg, WireMessage::Cancel(_) | WireMessage::MassCancel(_)))
            .map(|l| l.mono_ns)
            .ok_or_else(|| format!("round {round}: no cancel reached SIM-A"))?;
        let span = |h: &mut Histogram<u64>, a: u64, b: u64| {
            h.saturating_record(b.saturating_sub(a).max(1))
        };
        span(&mut first, t1, out.timings.t_first_cancel);
        let t = &out.timings;
        span(&mut f_lock, t1, t.t_trip);
        span(&mut f_seen, t.t_trip, t.t_trip_seen);
        span(&mut f_ack, t.t_trip_seen, t.t_gateway_ack);
        span(&mut f_after, t.t_gateway_ack, t.t_first_cancel);
        span(&mut second, t2, e.t_first_cancel);
        span(&mut second_wire, t2, wire);
        span(&mut seen, t2, e.t_seen);
        span(&mut acked, e.t_seen, e.t_gateway_ack);
        span(&mut after_ack, e.t_gateway_ack, e.t_first_cancel);
        operator
            .reset(&ResetRequest {
                source: Source::Api,
                reason: "ks-drain-latency".into(),
                force: false,
                expected_generation: None,
            })
            .map_err(|e| e.to_string())?;
    }
    println!(
        "ks-drain-latency --second-trip: {} rounds, {} open orders on each of 2 venues, {} cancel, drain core {:?}, gateway core {:?}, trip core {:?}, {} cpus",
        a.rounds,
        a.orders,
        if a.mass_cancel { "mass" } else { "single" },
        a.drain_core,
        a.gateway_core,
        a.trip_core,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    print("first trip (scoped) -> its first cancel", &first);
    print("  phase: call -> trip recorded (file lock)", &f_lock);
    print("  phase: recorded -> drain saw it", &f_seen);
    print("  phase: saw it -> gateway ack seen", &f_ack);
    print("  phase: ack -> first cancel enqueued", &f_after);
    print("second trip (global) -> its first cancel", &second);
    print("second trip -> first cancel on the wire", &second_wire);
    print("  phase: second trip -> drain saw it", &seen);
    print("  phase: saw it -> gateway ack seen", &acked);
    print("  phase: ack -> first cancel enqueued", &after_ack);
    drop(drain);
    drop(gateway);
    let _ = std::fs::remove_file(block.path());
    Ok(())
}

fn tempfile_dir() -> Result<std::path::PathBuf, String> {
    let shm = std::path::Path::new("/dev/shm");
    let base = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    Ok(base)
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("ks-drain-latency: {e}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ks-drain-latency: {e}");
            ExitCode::FAILURE
        }
    }
}
