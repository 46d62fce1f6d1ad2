//! `examples/custom_venue.rs` as real processes: an engine of a user's own
//! (its own venue, `ToyExchange`, whose book is a file that outlives the
//! engine, two strategies, the runtime builder, signals, journal),
//! tripped with the `killswitch` command, checked from the exchange's own
//! file:
//! 1. the engine is `SIGKILL`ed while it trades, orders resting;
//! 2. restarted, it cancels every order its journal shows open before its
//!    first new order reaches the exchange; it trades; `killswitch trip`
//!    stops it: 0 new orders at or after the gateway's acknowledgement,
//!    every resting order cancelled, exit 0;
//! 3. restarted again, it stays latched (no new order) until `SIGTERM`.
//!
//! The tools package builds the example as its `custom-venue-example`
//! binary, so cargo builds it for this test and hands its path over.

mod support;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use killswitch::control::{ControlBlock, DrainSnapshot, GatewaySnapshot, Mode};
use support::{ks, run, wait_for};

const EXAMPLE: &str = env!("CARGO_BIN_EXE_custom-venue-example");
const NAME: &str = "toy";

struct Paths {
    work: tempfile::TempDir,
}

impl Paths {
    fn dir(&self) -> &Path {
        self.work.path()
    }
    fn exchange(&self) -> PathBuf {
        self.dir().join("exchange.log")
    }
    fn stderr(&self, run: &str) -> PathBuf {
        self.dir().join(format!("{run}.stderr"))
    }
}

fn start(p: &Paths, run: &str) -> Child {
    Command::new(EXAMPLE)
        .arg("--dir")
        .arg(p.dir())
        .args(["--name", NAME])
        .arg("--journal")
        .arg(p.dir().join("journal"))
        .arg("--exchange")
        .arg(p.exchange())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(p.stderr(run)).unwrap())
        .spawn()
        .unwrap()
}

fn stderr(p: &Paths, run: &str) -> String {
    std::fs::read_to_string(p.stderr(run)).unwrap_or_default()
}

fn wait_exit(child: &mut Child, p: &Paths, run: &str) -> ExitStatus {
    let mut status = None;
    let exited = wait_for(Duration::from_secs(60), || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    if !exited {
        let _ = child.kill();
        let _ = child.wait();
        panic!("{run}: the example did not exit\n{}", stderr(p, run));
    }
    status.unwrap()
}

/// One line of the exchange's file.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Line {
    Session(u32),
    New { id: u64, mono_ns: u64 },
    Cancel { id: u64 },
    Canceled(u64),
    CancelReject(u64),
    Fill(u64),
    Other,
}

fn lines(p: &Paths) -> Vec<Line> {
    let text = std::fs::read_to_string(p.exchange()).unwrap_or_default();
    text.lines()
        .map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            let n = |i: usize| w.get(i).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
            match w.first().copied() {
                Some("SESSION") => Line::Session(n(1) as u32),
                Some("NEW") => Line::New {
                    id: n(1),
                    mono_ns: n(5),
                },
                Some("CANCEL") => Line::Cancel { id: n(1) },
                Some("CANCELED") => Line::Canceled(n(1)),
                Some("CANCEL-REJECT") => Line::CancelReject(n(1)),
                Some("FILL") => Line::Fill(n(1)),
                _ => Line::Other,
            }
        })
        .collect()
}

/// The orders resting in the exchange's book after `lines`.
fn resting(lines: &[Line]) -> BTreeSet<u64> {
    let mut book = BTreeSet::new();
    for l in lines {
        match *l {
            Line::New { id, .. } => {
                book.insert(id);
            }
            Line::Canceled(id) | Line::Fill(id) => {
                book.remove(&id);
            }
            _ => {}
        }
    }
    book
}

/// The lines of the session of process `pid`.
fn session(lines: &[Line], pid: u32) -> Vec<Line> {
    let start = lines
        .iter()
        .position(|l| *l == Line::Session(pid))
        .unwrap_or_else(|| panic!("no session of pid {pid} in the exchange's file"));
    lines[start + 1..]
        .iter()
        .take_while(|l| !matches!(l, Line::Session(_)))
        .cloned()
        .collect()
}

fn block(p: &Paths) -> ControlBlock {
    ControlBlock::open(p.dir(), NAME).unwrap()
}

#[test]
fn a_users_own_engine_drains_at_its_exchange_restarts_latched_and_recovers_first() {
    let p = Paths {
        work: tempfile::tempdir().unwrap(),
    };

    // 1. Trading, then SIGKILL with orders resting at the exchange.
    let mut first = start(&p, "first");
    assert!(
        wait_for(Duration::from_secs(60), || resting(&lines(&p)).len() >= 20),
        "the first run rests orders\n{}",
        stderr(&p, "first")
    );
    first.kill().unwrap();
    first.wait().unwrap();
    let left = resting(&lines(&p));
    assert!(left.len() >= 20, "{left:?}");

    // 2. Restarted: what the journal shows open is cancelled first.
    let mut second = start(&p, "second");
    let pid = second.id();
    assert!(
        wait_for(Duration::from_secs(60), || {
            let s = lines(&p);
            s.contains(&Line::Session(pid))
                && session(&s, pid)
                    .iter()
                    .any(|l| matches!(l, Line::New { .. }))
        }),
        "the second run trades\n{}",
        stderr(&p, "second")
    );
    let s = session(&lines(&p), pid);
    let first_new = s
        .iter()
        .position(|l| matches!(l, Line::New { .. }))
        .unwrap();
    let cancelled_before: BTreeSet<u64> = s[..first_new]
        .iter()
        .filter_map(|l| match l {
            Line::Canceled(id) => Some(*id),
            _ => None,
        })
        .collect();
    // Every order the journal had open is cancelled before the first new
    // order (the journal may know a few more than the exchange rests: an
    // order whose NEW line the kill cut off is cancelled by id too).
    assert!(
        left.is_subset(&cancelled_before),
        "left resting by the first run: {left:?}\ncancelled before the second run's first order: {cancelled_before:?}"
    );
    assert!(
        stderr(&p, "second").contains("order(s) recovered"),
        "{}",
        stderr(&p, "second")
    );
    // An order the journal had but the exchange never got (SIGKILL between
    // the journal's append and the write: a window of microseconds) is
    // refused by the exchange's cancel and ends CancelUnknown, reported by
    // id: then the run must say so with exit 11, never claim a clean drain.
    let never_reached: Vec<u64> = s[..first_new]
        .iter()
        .filter_map(|l| match l {
            Line::CancelReject(id) => Some(*id),
            _ => None,
        })
        .collect();

    // It trades; the operator trips it with the command line.
    assert!(
        wait_for(Duration::from_secs(60), || resting(&lines(&p)).len() >= 20),
        "the second run rests orders\n{}",
        stderr(&p, "second")
    );
    let mut trip = ks(p.dir(), NAME);
    trip.args(["trip", "--reason", "custom venue test"]);
    run(trip).expect_code(0);
    let status = wait_exit(&mut second, &p, "second");
    let want = if never_reached.is_empty() { 0 } else { 11 };
    assert_eq!(
        status.code(),
        Some(want),
        "recovered orders the exchange never had: {never_reached:?}\n{}",
        stderr(&p, "second")
    );
    let b = block(&p);
    let ack = GatewaySnapshot::read(&b);
    let drain = DrainSnapshot::read(&b);
    assert!(ack.acked_generation >= drain.generation && drain.generation > 0);
    let s = session(&lines(&p), pid);
    let after_ack: Vec<u64> = s
        .iter()
        .filter_map(|l| match *l {
            Line::New { id, mono_ns } if mono_ns >= ack.acked_mono_ns => Some(id),
            _ => None,
        })
        .collect();
    assert!(
        after_ack.is_empty(),
        "new orders at the exchange after the gateway's acknowledgement: {after_ack:?}"
    );
    let still = resting(&lines(&p));
    assert!(still.is_empty(), "resting after the drain: {still:?}");
    let cancels: HashMap<u64, usize> = s.iter().fold(HashMap::new(), |mut m, l| {
        if let Line::Cancel { id } = l {
            *m.entry(*id).or_default() += 1;
        }
        m
    });
    assert!(!cancels.is_empty(), "the drain cancelled at the exchange");
    if never_reached.is_empty() {
        assert!(
            stderr(&p, "second").contains("drained:"),
            "{}",
            stderr(&p, "second")
        );
    }

    // 3. Restarted once more: latched, it sends nothing until reset.
    let before = lines(&p).len();
    let mut third = start(&p, "third");
    let pid3 = third.id();
    assert!(
        wait_for(Duration::from_secs(60), || stderr(&p, "third")
            .contains("LATCHED")),
        "{}",
        stderr(&p, "third")
    );
    assert_eq!(block(&p).state().mode(), Mode::Kill);
    // Its strategies keep trying (the gate refuses them): give them time.
    std::thread::sleep(Duration::from_millis(500));
    let s = session(&lines(&p)[before..], pid3);
    assert!(
        !s.iter().any(|l| matches!(l, Line::New { .. })),
        "a latched engine sent {s:?}"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid3 as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = wait_exit(&mut third, &p, "third");
    assert_eq!(status.code(), Some(0), "{}", stderr(&p, "third"));
}
