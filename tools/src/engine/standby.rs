//! The hot standby: the reference engine started with `--standby`.
//!
//! It follows the active engine's journal as the active writes it
//! ([`JournalFollower`]: committed records only, CRC and sequence checked,
//! applied through the same replay step as a rebuild), so its open orders,
//! positions and trip state are those of the active as of the last record.
//! It builds no runtime: no gateway, no venue session, no drain, no signal
//! handler that trips the block; it cannot send anything. It publishes its
//! progress and lag in the control block the pair shares
//! ([`StandbyReporter`], layout 2.4), which `killswitch status` shows.
//!
//! It runs until SIGTERM or SIGINT (which only stop it: the block is the
//! active's), then writes its report (`--report`): the state it holds, the
//! records applied, its longest lag, and the orders it sent (none: it has
//! no session to send them on).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use killswitch::backoff::{Backoff, BackoffConfig};
use killswitch::control::{default_dir, ControlBlock, StandbyReporter};
use killswitch::journal::JournalFollower;
use serde::Serialize;

use super::{EngineConfig, EXIT_BAD_FILE, EXIT_OK, EXIT_START_FAILED};

/// Most records applied between two publications: bounds how stale the
/// published figures get while the standby works through a backlog.
const BATCH: u64 = 4096;

/// What the standby holds and did, written at exit.
#[derive(Debug, Serialize)]
pub struct StandbyReport {
    /// Always `standby`.
    pub role: &'static str,
    /// Its pid.
    pub pid: u32,
    /// Why it stopped.
    pub verdict: String,
    /// Exit code.
    pub exit_code: i32,
    /// Records applied since it started.
    pub records_applied: u64,
    /// Journal sequence of the last record applied.
    pub last_seq: u64,
    /// Orders it wrote to a venue: it opens no session, so none.
    pub orders_sent: u64,
    /// The longest append-to-apply time it saw, ns.
    pub max_lag_ns: u64,
    /// Open orders it holds, by id.
    pub open_orders: BTreeMap<u64, StandbyOrder>,
    /// Positions it holds: `venue/instrument/account` indices -> signed
    /// quantity in units of 10^-8 lots.
    pub positions: BTreeMap<String, i64>,
    /// The trip in force according to the journal, if any.
    pub tripped: Option<String>,
    /// Highest order id seen.
    pub max_order_id: u64,
    /// Events replay could not apply.
    pub issues: Vec<String>,
}

/// One open order as the standby holds it.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct StandbyOrder {
    /// Venue index.
    pub venue: u16,
    /// `buy` or `sell`.
    pub side: String,
    /// Quantity, 10^-8 lots.
    pub qty: i64,
    /// Filled, 10^-8 lots.
    pub filled: i64,
    /// Life-cycle state.
    pub state: String,
}

/// The standby's state as the report shows it (also what `failover` will
/// compare with the active's).
fn report(f: &JournalFollower, max_lag_ns: u64, verdict: String, exit_code: i32) -> StandbyReport {
    let st = &f.rebuilt().state;
    StandbyReport {
        role: "standby",
        pid: std::process::id(),
        verdict,
        exit_code,
        records_applied: f.applied(),
        last_seq: f.last_seq(),
        orders_sent: 0,
        max_lag_ns,
        open_orders: st
            .open_orders
            .values()
            .map(|o| {
                (
                    o.id.0,
                    StandbyOrder {
                        venue: o.tags.venue,
                        side: format!("{:?}", o.side).to_lowercase(),
                        qty: o.qty.0,
                        filled: o.filled.0,
                        state: format!("{:?}", o.state),
                    },
                )
            })
            .collect(),
        positions: st
            .positions
            .iter()
            .map(|(k, p)| {
                (
                    format!("{}/{}/{}", k.venue, k.instrument, k.account),
                    p.qty.0,
                )
            })
            .collect(),
        tripped: st
            .tripped()
            .map(|t| format!("{} by {}: {}", t.mode.as_str(), t.source.as_str(), t.reason)),
        max_order_id: st.max_order_id.0,
        issues: f
            .rebuilt()
            .issues
            .iter()
            .map(|i| format!("seq {}: {}", i.seq, i.what))
            .collect(),
    }
}

/// How the standby ended.
pub enum Outcome {
    /// Stopped (a signal, an error): its report.
    Stopped(StandbyReport),
    /// A failover: the active released the lease and closed the journal,
    /// and this standby has applied the last record. Start as the active
    /// with the journal it took over (whose state's open orders, its hot
    /// state, the venue sessions adopt).
    Promote(StandbyReport, Box<TakenOver>),
}

/// The journal a promoted standby holds: the writer (its lock taken) and
/// the trading state at the writer's position, for
/// [`killswitch::runtime::RuntimeBuilder::journal_taken_over`].
pub struct TakenOver {
    /// The writer, opened where the follower stands (or fully recovered).
    pub writer: killswitch::journal::JournalWriter,
    /// The state at its position.
    pub state: killswitch::journal::TradingState,
    /// How it was opened, for the start-up line.
    pub note: String,
}

/// Runs the standby until SIGTERM or SIGINT, or until a failover
/// promotes it (see [`Outcome`]).
pub fn run(cfg: &EngineConfig) -> Outcome {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        if let Err(e) = signal_hook::flag::register(sig, stop.clone()) {
            return Outcome::Stopped(failed(format!(
                "cannot install the handler for signal {sig}: {e}"
            )));
        }
    }
    let dir = cfg.control_dir.clone().unwrap_or_else(default_dir);
    let access = match killswitch::access::access_for_group(cfg.control_group.as_deref()) {
        Ok(a) => a,
        Err(e) => return Outcome::Stopped(failed(e.to_string())),
    };
    let block = match ControlBlock::open_or_create_with(&dir, &cfg.name, access) {
        Ok(b) => Arc::new(b),
        Err(e) => return Outcome::Stopped(failed_with(EXIT_BAD_FILE, e.to_string())),
    };
    // A failover asked before this standby claimed its role is not for it.
    // Read before the claim: `killswitch failover` asks only when a live
    // standby holds the role, so any later request is this one's (read
    // after, a failback asked the moment `status` shows this standby, as
    // after a restart by `[failover] restart_as_standby`, would be
    // ignored).
    let failover_requests = super::failover::FailoverRequests::at_start(&block);
    let mut reporter = match StandbyReporter::claim(block.clone()) {
        Ok(r) => r,
        Err(e) => return Outcome::Stopped(failed(e.to_string())),
    };
    // The active creates its journal; a standby started first waits for it.
    let mut idle = Backoff::new(BackoffConfig {
        max_sleep: Duration::from_millis(5),
        ..BackoffConfig::default()
    });
    while !cfg.journal_dir.is_dir() {
        if stop.load(Ordering::Acquire) {
            return Outcome::Stopped(failed_with(
                EXIT_OK,
                format!(
                    "stopped before journal {} existed",
                    cfg.journal_dir.display()
                ),
            ));
        }
        idle.snooze();
    }
    let mut follower = match JournalFollower::open(&cfg.journal_dir) {
        Ok(f) => f,
        Err(e) => return Outcome::Stopped(failed_with(EXIT_BAD_FILE, e.to_string())),
    };
    eprintln!(
        "ks-engine: pid {} STANDBY for {} (control block {}): following journal {}; sends nothing",
        std::process::id(),
        cfg.name,
        block.path().display(),
        cfg.journal_dir.display()
    );
    // Idle: spin, yield, then sleep at most 100 µs between looks, so the
    // lag stays near the polling interval without taking a core.
    let mut idle = Backoff::new(BackoffConfig {
        max_sleep: Duration::from_micros(100),
        ..BackoffConfig::default()
    });
    let mut last_publish = Instant::now();
    let mut caught_up_once = false;
    let mut next_lease_look = Instant::now();
    while !stop.load(Ordering::Acquire) {
        let batch = match follower.poll(BATCH) {
            Ok(b) => b,
            Err(e) => {
                let max = reporter.max_lag_ns();
                return Outcome::Stopped(report(
                    &follower,
                    max,
                    format!("journal damaged, standby stopped (do not fail over to it): {e}"),
                    EXIT_BAD_FILE,
                ));
            }
        };
        // A failover: asked after we started (one load), not withdrawn
        // (the active withdraws it when a KILL is in force and drains its
        // own orders), and then the lease given back by its holder (not
        // lapsed, not a dead holder: those are crashes, not hand-overs).
        // A KILL that came in force after the hand-over does not stop the
        // promotion: the orders were handed over, and this engine is the
        // only one that can still cancel them (it drains that KILL at
        // start). The lease at most every 200 µs: reading it may read /proc.
        let asked = cfg.lease_ttl_ms > 0 && failover_requests.pending(&block).is_some();
        if asked && Instant::now() >= next_lease_look {
            next_lease_look = Instant::now() + Duration::from_micros(200);
            let lease = block.lease();
            // The request again, after the lease: an active that withdrew
            // it did so before it gave the lease back (it stops after its
            // drain), so a release seen here with the request still live
            // is a hand-over, never a KILL's stop.
            let still_asked = failover_requests.pending(&block).is_some();
            if lease.epoch > 0 && lease.holder == 0 && still_asked {
                super::failover::phase_now(&format!(
                    "standby saw the lease released (epoch {})",
                    lease.epoch
                ));
                return promote(cfg, access, &mut follower, &mut reporter, &stop);
            }
        }
        if batch.records > 0 {
            reporter.publish(follower.last_seq(), batch.records, batch.max_lag_ns);
            last_publish = Instant::now();
            idle.reset();
        } else {
            if !caught_up_once {
                caught_up_once = true;
                eprintln!(
                    "ks-engine: standby caught up at journal seq {} ({} records applied, {} open orders)",
                    follower.last_seq(),
                    follower.applied(),
                    follower.rebuilt().state.open_orders.len()
                );
            }
            // Keeps the publication time fresh while nothing happens.
            if last_publish.elapsed() >= Duration::from_millis(100) {
                reporter.publish(follower.last_seq(), 0, 0);
                last_publish = Instant::now();
            }
            idle.snooze();
        }
    }
    let max = reporter.max_lag_ns();
    Outcome::Stopped(report(
        &follower,
        max,
        format!(
            "standby stopped by signal at journal seq {}: sent 0 orders",
            follower.last_seq()
        ),
        EXIT_OK,
    ))
}

/// The failover, standby side: waits until the old active has closed the
/// journal (its writer lock is free), applies every record up to the last,
/// and gives the standby role back: then start as the active.
fn promote(
    cfg: &EngineConfig,
    access: killswitch::access::Access,
    follower: &mut JournalFollower,
    reporter: &mut StandbyReporter,
    stop: &AtomicBool,
) -> Outcome {
    let mut idle = Backoff::new(BackoffConfig {
        max_sleep: Duration::from_micros(100),
        ..BackoffConfig::default()
    });
    let fail = |follower: &JournalFollower, reporter: &StandbyReporter, why: String| {
        Outcome::Stopped(report(
            follower,
            reporter.max_lag_ns(),
            why,
            EXIT_START_FAILED,
        ))
    };
    let (lock, closed) = loop {
        if stop.load(Ordering::Acquire) {
            return fail(
                follower,
                reporter,
                "stopped during a failover, before taking over".into(),
            );
        }
        if let Err(e) = follower.poll(BATCH) {
            return fail(
                follower,
                reporter,
                format!("journal damaged during the failover: {e}"),
            );
        }
        match killswitch::journal::JournalLock::try_acquire_after(&cfg.journal_dir, access) {
            // Free: the old active closed its writer; this engine is the
            // journal's writer from here (the runtime gets the lock).
            Ok(Ok(taken)) => break taken,
            Ok(Err(_holder)) => idle.snooze(),
            Err(e) => return fail(follower, reporter, format!("journal lock: {e}")),
        }
    };
    loop {
        match follower.poll(BATCH) {
            Ok(b) if b.caught_up => break,
            Ok(_) => {}
            Err(e) => {
                return fail(
                    follower,
                    reporter,
                    format!("journal damaged during the failover: {e}"),
                )
            }
        }
    }
    super::failover::phase_now(&format!(
        "caught up to the last record, seq {} ({} open orders)",
        follower.last_seq(),
        follower.rebuilt().state.open_orders.len()
    ));
    reporter.publish(follower.last_seq(), 0, 0);
    let journal_cfg = killswitch::journal::JournalConfig {
        access,
        ..killswitch::journal::JournalConfig::default()
    };
    let end = follower.end();
    let opened = killswitch::journal::JournalWriter::open_after(
        &cfg.journal_dir,
        journal_cfg.clone(),
        lock,
        closed,
        end,
        follower.last_snapshot(),
    );
    let at_end = matches!(opened, Ok(killswitch::journal::OpenAfter::AtFollowedEnd(_)));
    let taken = match opened {
        Ok(killswitch::journal::OpenAfter::AtFollowedEnd(writer)) => TakenOver {
            note: format!(
                "journal {}: taken over at the followed end (segment {} offset {}, next seq {}) where the old active closed it: no scan, no replay; {} open orders and {} positions followed",
                cfg.journal_dir.display(),
                end.segment,
                end.offset,
                end.next_seq,
                follower.rebuilt().state.open_orders.len(),
                follower.rebuilt().state.positions.len()
            ),
            writer: *writer,
            state: follower.rebuilt().state.clone(),
        },
        Ok(killswitch::journal::OpenAfter::Refused(lock, why)) => {
            // The slow, always-correct way: recover and rebuild, as any start.
            let opened = killswitch::journal::JournalWriter::open_with_lock(
                &cfg.journal_dir,
                journal_cfg,
                lock,
            )
            .and_then(|(w, _)| {
                killswitch::journal::rebuild_from(&cfg.journal_dir, w.last_snapshot())
                    .map(|r| (w, r))
            });
            match opened {
                Ok((writer, rebuilt)) => TakenOver {
                    note: format!(
                        "journal {}: not taken over at the followed end ({why}): recovered and rebuilt, {} open orders and {} positions",
                        cfg.journal_dir.display(),
                        rebuilt.state.open_orders.len(),
                        rebuilt.state.positions.len()
                    ),
                    writer,
                    state: rebuilt.state,
                },
                Err(e) => return fail(follower, reporter, format!("journal: {e}")),
            }
        }
        Err(e) => return fail(follower, reporter, format!("journal: {e}")),
    };
    super::failover::phase_now(&format!(
        "journal writer opened at seq {} ({})",
        taken.writer.next_seq(),
        if at_end {
            "at the followed end, no scan"
        } else {
            "recovered and rebuilt"
        }
    ));
    Outcome::Promote(
        report(
            follower,
            reporter.max_lag_ns(),
            format!(
                "promoted at journal seq {}: taking over",
                follower.last_seq()
            ),
            EXIT_OK,
        ),
        Box::new(taken),
    )
}

fn failed(message: String) -> StandbyReport {
    failed_with(EXIT_START_FAILED, message)
}

fn failed_with(exit_code: i32, message: String) -> StandbyReport {
    StandbyReport {
        role: "standby",
        pid: std::process::id(),
        verdict: message,
        exit_code,
        records_applied: 0,
        last_seq: 0,
        orders_sent: 0,
        max_lag_ns: 0,
        open_orders: BTreeMap::new(),
        positions: BTreeMap::new(),
        tripped: None,
        max_order_id: 0,
        issues: Vec::new(),
    }
}
