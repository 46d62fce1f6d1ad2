//! An engine that holds the active role as a lease
//! ([`RuntimeBuilder::lease`](killswitch::runtime::RuntimeBuilder::lease)):
//! start two on one control block and only one trades; stop the active
//! (SIGSTOP, a crash, a hang) and the other takes over once its lease
//! lapses, raising the epoch; the old one, if it ever runs again, sees the
//! newer epoch in its gateway's admit step, sends nothing more, says so
//! and exits.
//!
//! Its venue is `SharedTape`: one append-only file that every engine
//! process writes to, one `write(2)` per line with `O_APPEND`, so the file
//! is the venue's own receive order across processes:
//! `SESSION <pid>` when a process connects, `NEW <pid> <id> <mono_ns>`
//! per order it receives.
//!
//! ```sh
//! cargo run --release --example lease_active -- --dir /tmp/ks --name pair --tape /tmp/ks/tape
//! # in another terminal: waits for the first one's lease, which it keeps renewing
//! cargo run --release --example lease_active -- --dir /tmp/ks --name pair --tape /tmp/ks/tape
//! kill -STOP <first pid>    # the second takes over after the lease lapses
//! kill -CONT <first pid>    # the first prints FENCED and exits 0
//! ```
//! It stops when its standard input ends (Ctrl-D). No signal handlers: a
//! signal must not trip the block both engines share.
//!
//! `tools/tests/lease_fencing.rs` runs exactly that and counts, from the
//! tape, the old holder's orders after the new holder's first one.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use killswitch::clock::mono_ns;
use killswitch::control::LeaseConfig;
use killswitch::order::{OrderId, OrderIntent, Price, Qty, Side};
use killswitch::runtime::{Runtime, StrategyHandle};
use killswitch::venue::{NewOrder, Venue, VenueError, VenueEvent};

/// The venue: a tape shared by every engine process (see the module docs).
struct SharedTape {
    tape: File,
    pid: u32,
    acks: Vec<OrderId>,
}

impl SharedTape {
    fn open(path: &PathBuf) -> std::io::Result<SharedTape> {
        let mut tape = OpenOptions::new().create(true).append(true).open(path)?;
        let pid = std::process::id();
        tape.write_all(format!("SESSION {pid}\n").as_bytes())?;
        Ok(SharedTape {
            tape,
            pid,
            acks: Vec::new(),
        })
    }
}

impl Venue for SharedTape {
    fn name(&self) -> &str {
        "TAPE"
    }

    fn send(&mut self, o: &NewOrder) -> Result<(), VenueError> {
        // One write per line: O_APPEND puts each at the end as one piece.
        let line = format!("NEW {} {} {}\n", self.pid, o.id.0, mono_ns());
        self.tape
            .write_all(line.as_bytes())
            .map_err(|_| VenueError::Disconnected)?;
        self.acks.push(o.id);
        Ok(())
    }

    fn cancel(&mut self, _id: OrderId) -> Result<(), VenueError> {
        Err(VenueError::Unsupported("cancel on the tape"))
    }

    fn poll(&mut self, out: &mut Vec<VenueEvent>) {
        // Every order fills at once, so nothing rests and no answer ring
        // backs up.
        for id in self.acks.drain(..) {
            out.push(VenueEvent::Acked { id });
            out.push(VenueEvent::Fill {
                id,
                qty: Qty::from_lots(1),
                price: Price::from_units(100),
                leaves: Qty::ZERO,
            });
        }
    }
}

/// Sends orders continuously until told to stop.
fn trader(mut h: StrategyHandle, stop: Arc<AtomicBool>) {
    let tags = h.tags("TAPE", "TAPE/USD", "desk-1").expect("names");
    let mut side = Side::Buy;
    while !stop.load(Ordering::Acquire) && !h.stop_requested() {
        while let Ok(Some(_)) = h.try_answer() {}
        let intent = OrderIntent {
            tags,
            side,
            qty: Qty::from_lots(1),
            price: Price::from_units(100),
            position: h.position(tags.venue, tags.instrument),
        };
        let _ = h.submit(&intent);
        side = if side == Side::Buy {
            Side::Sell
        } else {
            Side::Buy
        };
        std::thread::sleep(Duration::from_micros(200));
    }
}

struct Args {
    dir: PathBuf,
    name: String,
    tape: PathBuf,
    lease: LeaseConfig,
}

fn args() -> Result<Args, String> {
    let mut a = std::env::args().skip(1);
    let (mut dir, mut name, mut tape) = (None, None, None);
    let mut lease = LeaseConfig::default();
    while let Some(flag) = a.next() {
        let mut value = || a.next().ok_or(format!("{flag} needs a value"));
        let mut ms = || -> Result<Duration, String> {
            let v = value()?;
            v.parse()
                .map(Duration::from_millis)
                .map_err(|_| format!("{flag}: {v:?} is not a number of milliseconds"))
        };
        match flag.as_str() {
            "--dir" => dir = Some(PathBuf::from(value()?)),
            "--name" => name = Some(value()?),
            "--tape" => tape = Some(PathBuf::from(value()?)),
            "--ttl-ms" => lease.ttl = ms()?,
            "--acquire-wait-ms" => lease.acquire_wait = ms()?,
            "--fence-wait-ms" => lease.fence_wait = ms()?,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let need = |what: &str| format!("missing --{what}");
    Ok(Args {
        dir: dir.ok_or_else(|| need("dir"))?,
        name: name.ok_or_else(|| need("name"))?,
        tape: tape.ok_or_else(|| need("tape"))?,
        lease,
    })
}

fn main() {
    let args = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!(
                "lease_active: {e}; usage: --dir D --name N --tape FILE [--ttl-ms MS] [--acquire-wait-ms MS] [--fence-wait-ms MS]"
            );
            std::process::exit(2);
        }
    };
    let tape = match SharedTape::open(&args.tape) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("lease_active: tape {}: {e}", args.tape.display());
            std::process::exit(2);
        }
    };
    let pid = std::process::id();
    eprintln!("lease_active: pid {pid} acquiring the lease");
    let mut rt = match Runtime::builder(&args.dir, &args.name)
        .venue("TAPE", tape)
        .lease(args.lease)
        .start()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("lease_active: pid {pid} cannot start: {e}");
            std::process::exit(e.exit_code);
        }
    };
    let lease = rt.lease().expect("started with a lease");
    eprintln!(
        "lease_active: pid {pid} ACTIVE at epoch {}; trading",
        lease.epoch()
    );
    // Standard input ending is the stop request.
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut sink = Vec::new();
            let _ = std::io::stdin().read_to_end(&mut sink);
            stop.store(true, Ordering::Release);
        });
    }
    let h = rt.strategy("trader").expect("strategy handle");
    let trader = {
        let stop = stop.clone();
        std::thread::spawn(move || trader(h, stop))
    };
    let mut fenced = None;
    while !stop.load(Ordering::Acquire) {
        if let Some(newer) = lease.fenced_by() {
            fenced = Some(newer);
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    stop.store(true, Ordering::Release);
    let _ = trader.join();
    let sent = rt.gateway_stats().map(|s| s.orders_sent).unwrap_or(0);
    let _ = rt.shutdown();
    match fenced {
        Some(newer) => eprintln!(
            "lease_active: pid {pid} FENCED: epoch {} replaced by epoch {newer}; this engine wrote nothing to the venue since it saw it; {sent} order(s) sent before; exiting",
            lease.epoch()
        ),
        None => eprintln!(
            "lease_active: pid {pid} stopped at epoch {}; {sent} order(s) sent",
            lease.epoch()
        ),
    }
}
