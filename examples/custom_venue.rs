//! An engine of a user's own, wired with the runtime builder: its own venue
//! adapter (not the built-in simulator), two strategies, signal handlers,
//! a journal, and restart.
//!
//! The venue is `ToyExchange`: a tiny exchange of this example's own that
//! keeps its book in an append-only text file (one line per message it
//! accepts or answers), so it outlives the engine process as a real
//! exchange does, and a test can read exactly what reached it.
//!
//! ```sh
//! cargo run --release --example custom_venue -- --dir /tmp/ks --name toy \
//!     --journal /tmp/ks/journal --exchange /tmp/ks/exchange.log
//! killswitch --dir /tmp/ks --name toy trip --reason "enough"   # drains, exits 0
//! ```
//!
//! Run it again: the switch is latched, it does not trade until
//! `killswitch reset --confirm --reason ...`. Kill it with `kill -9` while
//! it trades and run it again: the orders its journal shows open are
//! cancelled at the exchange before its first new order.
//!
//! `tools/tests/custom_venue.rs` runs all three (the tools package builds
//! this file as its `custom-venue-example` binary, so the test can start it
//! and the `killswitch` command side by side).

use std::collections::{HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use killswitch::clock::mono_ns;
use killswitch::journal::JournalConfig;
use killswitch::order::{OrderId, OrderIntent, Price, Qty, ScopeTags, Side, PRICE_SCALE};
use killswitch::runtime::{Answer, RecoveredOrders, Runtime, StrategyHandle, SuperviseOptions};
use killswitch::signals::SignalConfig;
use killswitch::venue::{
    CancelRejectReason, NewOrder, RejectReason, Venue, VenueError, VenueEvent,
};

/// The exchange's own file: `SESSION <pid>` when an engine connects, then
/// `NEW <id> <B|S> <price> <qty> <mono_ns>`, `ACK <id>`, `FILL <id> <qty>`,
/// `CANCEL <id> <mono_ns>`, `CANCELED <id>`, `CANCEL-REJECT <id>`. Orders
/// with a NEW and neither a CANCELED nor a complete FILL rest in its book.
struct ToyExchange {
    log: File,
    /// Resting orders: id -> (side, price, qty left).
    book: HashMap<OrderId, (Side, Price, Qty)>,
    answers: VecDeque<VenueEvent>,
    /// Buys at or above this (sells at or below) fill at once.
    cross: Price,
}

impl ToyExchange {
    /// Opens (or creates) the exchange at `path`, its book rebuilt from
    /// the file: orders an earlier session left there still rest.
    fn open(path: &Path) -> std::io::Result<ToyExchange> {
        let mut book = HashMap::new();
        if let Ok(f) = File::open(path) {
            for line in BufReader::new(f).lines() {
                let line = line?;
                let w: Vec<&str> = line.split_whitespace().collect();
                let id = |i: usize| w.get(i).and_then(|s| s.parse().ok()).map(OrderId);
                match (w.first().copied(), id(1)) {
                    (Some("NEW"), Some(id)) => {
                        let side = if w.get(2) == Some(&"B") {
                            Side::Buy
                        } else {
                            Side::Sell
                        };
                        let num = |i: usize| w.get(i).and_then(|s| s.parse().ok()).unwrap_or(0);
                        book.insert(id, (side, Price(num(3)), Qty(num(4))));
                    }
                    (Some("CANCELED"), Some(id)) => {
                        book.remove(&id);
                    }
                    (Some("FILL"), Some(id)) => {
                        book.remove(&id);
                    }
                    _ => {}
                }
            }
        }
        let mut log = OpenOptions::new().create(true).append(true).open(path)?;
        writeln!(log, "SESSION {}", std::process::id())?;
        Ok(ToyExchange {
            log,
            book,
            answers: VecDeque::new(),
            cross: Price::from_units(101),
        })
    }

    fn write(&mut self, line: std::fmt::Arguments<'_>) -> Result<(), VenueError> {
        // One write per line: a process crash leaves whole lines (the page
        // cache keeps them), which is all the test reads.
        self.log
            .write_all(format!("{line}\n").as_bytes())
            .map_err(|_| VenueError::Disconnected)
    }
}

impl Venue for ToyExchange {
    fn name(&self) -> &str {
        "TOY"
    }

    fn send(&mut self, o: &NewOrder) -> Result<(), VenueError> {
        let side = if o.side == Side::Buy { "B" } else { "S" };
        self.write(format_args!(
            "NEW {} {side} {} {} {}",
            o.id.0,
            o.price.0,
            o.qty.0,
            mono_ns()
        ))?;
        if o.qty.0 <= 0 {
            self.answers.push_back(VenueEvent::Rejected {
                id: o.id,
                reason: RejectReason::InvalidOrder,
            });
            return Ok(());
        }
        self.write(format_args!("ACK {}", o.id.0))?;
        self.answers.push_back(VenueEvent::Acked { id: o.id });
        let crosses = match o.side {
            Side::Buy => o.price >= self.cross,
            Side::Sell => o.price <= Price(2 * Price::from_units(100).0 - self.cross.0),
        };
        if crosses {
            self.write(format_args!("FILL {} {}", o.id.0, o.qty.0))?;
            self.answers.push_back(VenueEvent::Fill {
                id: o.id,
                qty: o.qty,
                price: o.price,
                leaves: Qty::ZERO,
            });
        } else {
            self.book.insert(o.id, (o.side, o.price, o.qty));
        }
        Ok(())
    }

    fn cancel(&mut self, id: OrderId) -> Result<(), VenueError> {
        self.write(format_args!("CANCEL {} {}", id.0, mono_ns()))?;
        if self.book.remove(&id).is_some() {
            self.write(format_args!("CANCELED {}", id.0))?;
            self.answers.push_back(VenueEvent::Canceled { id });
        } else {
            self.write(format_args!("CANCEL-REJECT {}", id.0))?;
            self.answers.push_back(VenueEvent::CancelRejected {
                id,
                reason: CancelRejectReason::UnknownOrder,
            });
        }
        Ok(())
    }

    fn poll(&mut self, out: &mut Vec<VenueEvent>) {
        out.extend(self.answers.drain(..));
    }
    // No mass cancel, positions, order status or market data: the trait's
    // defaults (the drain then cancels order by order).
}

/// The market maker: keeps up to 40 bids resting below 100, and moves
/// (replaces) one now and then.
fn maker(mut h: StrategyHandle, tags: ScopeTags) {
    let tick = PRICE_SCALE / 100;
    let mut resting: Vec<OrderId> = Vec::new();
    let mut n: i64 = 0;
    while !h.stop_requested() {
        while let Ok(Some(a)) = h.try_answer() {
            match a {
                Answer::Canceled { id }
                | Answer::Rejected { id, .. }
                | Answer::Refused { id, .. } => resting.retain(|r| *r != id),
                Answer::Filled {
                    id, complete: true, ..
                } => resting.retain(|r| *r != id),
                _ => {}
            }
        }
        n += 1;
        if resting.len() < 40 {
            let intent = OrderIntent {
                tags,
                side: Side::Buy,
                qty: Qty::from_lots(1),
                price: Price(Price::from_units(100).0 - (1 + n % 20) * tick),
                position: Qty::ZERO,
            };
            if let Ok(id) = h.submit(&intent) {
                resting.push(id);
            }
        } else if n % 50 == 0 {
            let old = resting.remove(0);
            if let Ok(id) = h.replace(old, Price(Price::from_units(99).0), Qty::from_lots(1)) {
                resting.push(id);
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The taker: every 20 ms an order that crosses and fills at once.
fn taker(mut h: StrategyHandle, tags: ScopeTags) {
    while !h.stop_requested() {
        while let Ok(Some(_)) = h.try_answer() {}
        let intent = OrderIntent {
            tags,
            side: Side::Buy,
            qty: Qty::from_lots(1),
            price: Price::from_units(102),
            position: h.position(tags.venue, tags.instrument),
        };
        let _ = h.submit(&intent);
        std::thread::sleep(Duration::from_millis(20));
    }
}

struct Args {
    dir: PathBuf,
    name: String,
    journal: PathBuf,
    exchange: PathBuf,
}

fn args() -> Result<Args, String> {
    let mut a = std::env::args().skip(1);
    let (mut dir, mut name, mut journal, mut exchange) = (None, None, None, None);
    while let Some(flag) = a.next() {
        let mut value = || a.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--dir" => dir = Some(PathBuf::from(value()?)),
            "--name" => name = Some(value()?),
            "--journal" => journal = Some(PathBuf::from(value()?)),
            "--exchange" => exchange = Some(PathBuf::from(value()?)),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let need = |what: &str| format!("missing --{what}");
    Ok(Args {
        dir: dir.ok_or_else(|| need("dir"))?,
        name: name.ok_or_else(|| need("name"))?,
        journal: journal.ok_or_else(|| need("journal"))?,
        exchange: exchange.ok_or_else(|| need("exchange"))?,
    })
}

fn main() {
    let args = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("custom_venue: {e}; usage: --dir D --name N --journal J --exchange FILE");
            std::process::exit(2);
        }
    };
    let exchange = match ToyExchange::open(&args.exchange) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("custom_venue: exchange {}: {e}", args.exchange.display());
            std::process::exit(2);
        }
    };
    let mut rt = match Runtime::builder(&args.dir, &args.name)
        .venue("TOY", exchange)
        .journal(&args.journal, JournalConfig::small_for_tests())
        .signals(SignalConfig::default())
        .panic_hook()
        .on_recovered_orders(RecoveredOrders::CancelBeforeTrading)
        .start()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("custom_venue: cannot start: {e}");
            std::process::exit(e.exit_code);
        }
    };
    let latched = rt.trip_token().is_killed();
    eprintln!(
        "custom_venue: pid {} {}; {}; {} order(s) recovered{}",
        std::process::id(),
        if latched {
            "LATCHED at KILL: not trading until `killswitch reset --confirm`"
        } else {
            "trading"
        },
        rt.recovery_note(),
        rt.recovered_orders(),
        rt.recovery()
            .map(|r| format!(
                " ({} cancelled, {} unknown)",
                r.canceled.len(),
                r.unknown.len()
            ))
            .unwrap_or_default()
    );
    let mut threads = Vec::new();
    for (name, f) in [
        ("maker", maker as fn(StrategyHandle, ScopeTags)),
        ("taker", taker),
    ] {
        let h = rt.strategy(name).expect("strategy handle");
        let tags = h.tags("TOY", "TOY/USD", "desk-1").expect("names");
        threads.push(std::thread::spawn(move || f(h, tags)));
    }
    let supervised = rt.supervise(SuperviseOptions::default());
    let stopped = rt.shutdown();
    for t in threads {
        let _ = t.join();
    }
    let (code, verdict) = supervised.verdict();
    eprintln!(
        "custom_venue: {verdict}; journal durable: {}",
        match &stopped.durable {
            Some(Ok(d)) => format!("up to seq {}", d.up_to_seq),
            Some(Err(e)) => format!("FAILED: {e}"),
            None => "no journal".into(),
        }
    );
    std::process::exit(code);
}
