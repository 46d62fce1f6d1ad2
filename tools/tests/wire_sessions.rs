//! Process tests of the wire: `ks-venue` as its own process, engine-side
//! sessions (`FixVenue`) in a child process or in this one, and the
//! venue's own audit log as the witness of what happened at the exchange.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use killswitch::order::{OrderId, Price, Qty, ScopeTags, Side};
use killswitch::venue::{NewOrder, Venue, VenueEvent};
use killswitch_tools::fix::client::{FixVenue, FixVenueConfig};
use killswitch_tools::venue_server::audit::working_orders;
use support::venue::{events, RawSession, VenueProc};

/// Symbols every test venue lists.
const SYMBOLS: [&str; 2] = ["I0", "I1"];

fn fix_config(addr: std::net::SocketAddr, comp: &str, venue: &str) -> FixVenueConfig {
    let mut cfg = FixVenueConfig::new(venue, addr, comp, venue);
    cfg.symbols = SYMBOLS
        .iter()
        .enumerate()
        .map(|(i, s)| (i as u16, s.to_string()))
        .collect();
    cfg.heartbeat = Duration::from_secs(2);
    cfg
}

fn resting_buy(id: u64) -> NewOrder {
    NewOrder {
        id: OrderId(id),
        tags: ScopeTags::default(),
        side: Side::Buy,
        price: Price::from_units(90),
        qty: Qty::from_lots(1),
    }
}

/// Polls `venue` until `pred` holds on the events so far (deadline 30 s).
fn poll_until(
    venue: &mut FixVenue,
    what: &str,
    mut pred: impl FnMut(&[VenueEvent]) -> bool,
) -> Vec<VenueEvent> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    while !pred(&seen) {
        assert!(
            Instant::now() < deadline,
            "{what}: not within 30 s; events {seen:?}; last error: {}",
            venue.last_error()
        );
        venue.poll(&mut seen);
        std::thread::sleep(Duration::from_micros(200));
    }
    seen
}

fn count(events: &[VenueEvent], f: impl Fn(&VenueEvent) -> bool) -> usize {
    events.iter().filter(|e| f(e)).count()
}

/// The engine side as a child process: this test binary again, running
/// only `child_engine_session` (ignored unless asked for).
struct EngineChild {
    child: Child,
}

impl EngineChild {
    fn start(
        addr: std::net::SocketAddr,
        venue: &str,
        comp: &str,
        orders: u64,
        cod: bool,
        dead_man_ms: u64,
    ) -> EngineChild {
        let exe = std::env::current_exe().expect("test binary");
        let mut child = Command::new(exe)
            .args([
                "--ignored",
                "--exact",
                "child_engine_session",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("KS_WIRE_ADDR", addr.to_string())
            .env("KS_WIRE_VENUE", venue)
            .env("KS_WIRE_COMP", comp)
            .env("KS_WIRE_ORDERS", orders.to_string())
            .env("KS_WIRE_COD", if cod { "1" } else { "0" })
            .env("KS_WIRE_DEADMAN_MS", dead_man_ms.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn the engine-side child");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line.contains("KS-WIRE-READY") => break,
                Ok(_) => {}
                Err(_) => {
                    let _ = child.kill();
                    panic!("engine-side child never got its {orders} orders acked");
                }
            }
        }
        EngineChild { child }
    }

    fn sigkill(mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).expect("SIGKILL");
        let status = self.child.wait().expect("reap");
        assert!(!status.success(), "the child was killed, not exited");
    }
}

impl Drop for EngineChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The engine-side session run by [`EngineChild`]: logs on, rests N buys,
/// prints KS-WIRE-READY, then keeps the session alive (heartbeats, dead-man
/// refreshes) until it is killed (or 120 s pass).
#[test]
#[ignore = "child process of the wire tests, started by them"]
fn child_engine_session() {
    let var =
        |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k} not set: run by the wire tests"));
    let addr = var("KS_WIRE_ADDR").parse().expect("address");
    let mut cfg = fix_config(addr, &var("KS_WIRE_COMP"), &var("KS_WIRE_VENUE"));
    cfg.cancel_on_disconnect = var("KS_WIRE_COD") == "1";
    let dead_man: u64 = var("KS_WIRE_DEADMAN_MS").parse().expect("ms");
    cfg.dead_man = (dead_man > 0).then(|| Duration::from_millis(dead_man));
    let orders: u64 = var("KS_WIRE_ORDERS").parse().expect("orders");
    let mut venue = FixVenue::new(cfg);
    venue.connect(Duration::from_secs(30)).expect("logon");
    for id in 1..=orders {
        venue.send(&resting_buy(id)).expect("send");
    }
    poll_until(&mut venue, "acks", |ev| {
        count(ev, |e| matches!(e, VenueEvent::Acked { .. })) as u64 == orders
    });
    println!("KS-WIRE-READY");
    let end = Instant::now() + Duration::from_secs(120);
    let mut sink = Vec::new();
    while Instant::now() < end {
        venue.poll(&mut sink);
        sink.clear();
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn sigkilled_engine_leaves_no_order_at_a_venue_with_cancel_on_disconnect() {
    let dir = tempfile::tempdir().unwrap();
    let venue = VenueProc::start(dir.path(), &["SIM-A"], &["--instruments", "I0,I1"]);
    let addr = venue.addr("SIM-A");
    // Two firms at the venue: one is killed, the other must not notice.
    let killed = EngineChild::start(addr, "SIM-A", "ENGINE-1", 50, true, 0);
    let survivor = EngineChild::start(addr, "SIM-A", "ENGINE-2", 20, true, 0);
    let before = venue.audit("SIM-A");
    assert_eq!(working_orders(&before, "ENGINE-1").len(), 50);
    assert_eq!(working_orders(&before, "ENGINE-2").len(), 20);

    killed.sigkill();
    let log = venue.wait_audit("SIM-A", "cancel-on-disconnect of ENGINE-1", |log| {
        !events(log, "ENGINE-1", "cancel-on-disconnect").is_empty()
            && working_orders(log, "ENGINE-1").is_empty()
    });
    let cod = events(&log, "ENGINE-1", "cancel-on-disconnect");
    assert_eq!(cod.len(), 1);
    assert_eq!(cod[0].orders, Some(50), "every resting order cancelled");
    assert_eq!(
        cod[0].resting,
        Some(0),
        "nothing of ENGINE-1 rests at the venue"
    );
    let cancels = log
        .iter()
        .filter(|e| e.session == "ENGINE-1" && e.field(150) == Some("4"))
        .count();
    assert_eq!(cancels, 50, "one ExecutionReport 150=4 per order");
    assert!(
        log.iter()
            .filter(|e| e.session == "ENGINE-1" && e.field(150) == Some("4"))
            .all(|e| e.sent == Some(false) && e.field(58) == Some("cancel-on-disconnect")),
        "the cancels happened with the session down, queued for a resend"
    );
    // The other firm's session and orders are untouched.
    assert_eq!(working_orders(&log, "ENGINE-2").len(), 20);
    assert!(events(&log, "ENGINE-2", "disconnect").is_empty());
    drop(survivor);
}

#[test]
fn dead_man_timer_cancels_when_the_venue_has_no_cancel_on_disconnect() {
    let dir = tempfile::tempdir().unwrap();
    let venue = VenueProc::start(
        dir.path(),
        &["SIM-A"],
        &["--instruments", "I0,I1", "--cancel-on-disconnect", "off"],
    );
    let addr = venue.addr("SIM-A");
    let timeout_ms = 1500;
    let child = EngineChild::start(addr, "SIM-A", "ENGINE-1", 30, true, timeout_ms);
    // Let a refresh or two happen (every timeout/4), then kill.
    venue.wait_audit("SIM-A", "a dead-man refresh", |log| {
        log.iter()
            .filter(|e| e.session == "ENGINE-1" && e.msg_type.as_deref() == Some("U1"))
            .count()
            >= 2
    });
    child.sigkill();
    let log = venue.wait_audit("SIM-A", "dead-man expiry", |log| {
        !events(log, "ENGINE-1", "dead-man-expired").is_empty()
            && working_orders(log, "ENGINE-1").is_empty()
    });
    let logon = events(&log, "ENGINE-1", "logon");
    assert!(logon[0]
        .detail
        .as_deref()
        .unwrap_or("")
        .contains("cancel-on-disconnect off"));
    let disconnect = events(&log, "ENGINE-1", "disconnect");
    assert_eq!(disconnect.len(), 1);
    assert_eq!(
        disconnect[0].resting,
        Some(30),
        "no cancel-on-disconnect: still resting after the kill"
    );
    assert!(events(&log, "ENGINE-1", "cancel-on-disconnect").is_empty());
    let expired = events(&log, "ENGINE-1", "dead-man-expired");
    assert_eq!(expired[0].orders, Some(30));
    assert_eq!(expired[0].resting, Some(0));
    // It is the timer: the expiry comes a full timeout after the last refresh.
    let last_refresh = log
        .iter()
        .filter(|e| e.session == "ENGINE-1" && e.msg_type.as_deref() == Some("U1") && e.dir == "in")
        .map(|e| e.mono_ns)
        .max()
        .expect("refreshes");
    assert!(expired[0].mono_ns >= last_refresh + timeout_ms * 1_000_000);
    assert!(working_orders(&log, "ENGINE-1").is_empty());
}

#[test]
fn graceful_logout_cancels_first_with_or_without_mass_cancel() {
    let dir = tempfile::tempdir().unwrap();
    let venue = VenueProc::start(
        dir.path(),
        &["SIM-A"],
        &["--instruments", "I0,I1", "--cancel-on-disconnect", "off"],
    );
    let addr = venue.addr("SIM-A");
    for (comp, mass_cancel) in [("ENGINE-MASS", true), ("ENGINE-SINGLE", false)] {
        if !mass_cancel {
            let mut control = RawSession::logon(addr, "KS-CONTROL", "SIM-A");
            control.control("mass_cancel", "0");
        }
        let mut v = FixVenue::new(fix_config(addr, comp, "SIM-A"));
        v.connect(Duration::from_secs(30)).expect("logon");
        for id in 1..=10 {
            v.send(&resting_buy(id)).unwrap();
        }
        poll_until(&mut v, "acks", |ev| {
            count(ev, |e| matches!(e, VenueEvent::Acked { .. })) == 10
        });
        v.logout().expect("logout");
        let seen = poll_until(&mut v, "cancels and the venue's logout", |ev| {
            count(ev, |e| matches!(e, VenueEvent::Canceled { .. })) == 10
                && ev.contains(&VenueEvent::Disconnected)
        });
        // Every cancel was delivered before the session ended.
        let end = seen
            .iter()
            .position(|e| *e == VenueEvent::Disconnected)
            .unwrap();
        assert_eq!(
            count(&seen[..end], |e| matches!(e, VenueEvent::Canceled { .. })),
            10,
            "{comp}: {seen:?}"
        );
        assert_eq!(
            v.send(&resting_buy(99)),
            Err(killswitch::venue::VenueError::LoggedOut)
        );
        let log = venue.wait_audit("SIM-A", "logout", |log| {
            !events(log, comp, "disconnect").is_empty()
        });
        let ins: Vec<&str> = log
            .iter()
            .filter(|e| e.session == comp && e.dir == "in")
            .filter_map(|e| e.msg_type.as_deref())
            .collect();
        let tail: Vec<&str> = ins
            .iter()
            .rev()
            .take(if mass_cancel { 3 } else { 12 })
            .rev()
            .copied()
            .collect();
        if mass_cancel {
            assert_eq!(
                tail,
                ["q", "U1", "5"],
                "{comp}: mass cancel, dead-man disarmed, then Logout"
            );
        } else {
            // The venue refused q (35=r 531=0): single cancels follow it.
            let q = ins.iter().rposition(|t| *t == "q").expect("q tried");
            assert_eq!(
                ins[q + 1..].iter().filter(|t| **t == "F").count(),
                10,
                "{comp}: {ins:?}"
            );
            assert_eq!(ins.last(), Some(&"5"));
        }
        assert!(
            working_orders(&log, comp).is_empty(),
            "{comp}: nothing left resting"
        );
        assert_eq!(events(&log, comp, "disconnect")[0].resting, Some(0));
    }
}

#[test]
fn status_cancel_rejects_positions_and_market_data_come_back_as_events() {
    let dir = tempfile::tempdir().unwrap();
    let venue = VenueProc::start(dir.path(), &["SIM-A"], &["--instruments", "I0,I1"]);
    let addr = venue.addr("SIM-A");
    let mut v = FixVenue::new(fix_config(addr, "ENGINE-S", "SIM-A"));
    v.connect(Duration::from_secs(30)).expect("logon");
    v.send(&resting_buy(1)).unwrap();
    v.send(&resting_buy(2)).unwrap();
    v.subscribe(0).unwrap();
    poll_until(&mut v, "acks", |ev| {
        count(ev, |e| matches!(e, VenueEvent::Acked { .. })) == 2
    });
    // Another participant sells 1 lot at 90: order 1 (first in time) fills.
    let mut control = RawSession::logon(addr, "KS-CONTROL", "SIM-A");
    control.control("inject", "I0,sell,90,1");
    let filled = VenueEvent::Fill {
        id: OrderId(1),
        qty: Qty::from_lots(1),
        price: Price::from_units(90),
        leaves: Qty::ZERO,
    };
    let seen = poll_until(&mut v, "the fill and a top of book", |ev| {
        ev.contains(&filled)
            && ev
                .iter()
                .any(|e| matches!(e, VenueEvent::TopOfBook { instrument: 0, .. }))
    });
    assert!(
        seen.iter().any(|e| matches!(
            e,
            VenueEvent::TopOfBook {
                instrument: 0,
                bid: Some(_),
                ..
            }
        )),
        "{seen:?}"
    );

    v.cancel(OrderId(1)).unwrap();
    for id in [1, 2, 99] {
        v.request_order_status(OrderId(id)).unwrap();
    }
    v.request_positions().unwrap();
    let seen = poll_until(&mut v, "the answers", |ev| {
        ev.contains(&VenueEvent::PositionsEnd)
    });
    let want = [
        VenueEvent::CancelRejected {
            id: OrderId(1),
            reason: killswitch::venue::CancelRejectReason::TooLate,
        },
        VenueEvent::Acked { id: OrderId(2) },
        VenueEvent::CancelRejected {
            id: OrderId(99),
            reason: killswitch::venue::CancelRejectReason::UnknownOrder,
        },
        VenueEvent::Position {
            instrument: 0,
            account: 0,
            qty: Qty::from_lots(1),
        },
        VenueEvent::PositionsEnd,
    ];
    let got: Vec<VenueEvent> = seen
        .into_iter()
        .filter(|e| !matches!(e, VenueEvent::TopOfBook { .. }))
        .collect();
    // Order 1's status adds nothing: its fill was already delivered. (The
    // unknown order is answered at once, the others behind the venue's
    // queue, so only the set is fixed; PositionsEnd comes last.)
    assert_eq!(got.len(), want.len(), "{got:?}");
    for w in &want {
        assert!(got.contains(w), "missing {w:?} in {got:?}");
    }
    assert_eq!(got.last(), Some(&VenueEvent::PositionsEnd));
}

#[test]
fn a_frozen_venue_is_detected_by_heartbeats_and_the_session_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let venue = VenueProc::start(dir.path(), &["SIM-A"], &["--instruments", "I0,I1"]);
    let addr = venue.addr("SIM-A");
    let mut cfg = fix_config(addr, "ENGINE-H", "SIM-A");
    cfg.heartbeat = Duration::from_secs(1);
    cfg.reconnect_min = Duration::from_millis(100);
    cfg.reconnect_max = Duration::from_millis(400);
    let mut v = FixVenue::new(cfg);
    v.connect(Duration::from_secs(30)).expect("logon");
    let monitor = v.monitor();

    // SIGSTOP: the venue's process stops answering (its kernel still
    // accepts bytes). Silence for 1.5 heartbeats brings a TestRequest, for
    // 2.5 the session is declared lost.
    venue.signal(nix::sys::signal::Signal::SIGSTOP);
    let seen = poll_until(&mut v, "the loss", |ev| {
        ev.contains(&VenueEvent::Disconnected)
    });
    assert_eq!(count(&seen, |e| *e == VenueEvent::Disconnected), 1);
    assert!(v.last_error().contains("TestRequest"), "{}", v.last_error());
    assert_eq!(
        v.send(&resting_buy(1)),
        Err(killswitch::venue::VenueError::Disconnected)
    );

    venue.signal(nix::sys::signal::Signal::SIGCONT);
    poll_until(&mut v, "the reconnect", |ev| {
        ev.contains(&VenueEvent::Reconnected)
    });
    v.send(&resting_buy(2)).expect("send after the reconnect");
    poll_until(&mut v, "the ack", |ev| {
        ev.contains(&VenueEvent::Acked { id: OrderId(2) })
    });
    assert!(monitor.logons.load(std::sync::atomic::Ordering::Relaxed) >= 2);
    let log = venue.audit("SIM-A");
    assert!(
        log.iter().any(|e| e.session == "ENGINE-H"
            && e.dir == "in"
            && e.msg_type.as_deref() == Some("1")),
        "the TestRequest reached the venue once it ran again"
    );
}

/// The `withdraw_liquidity` knob: the other participants pull their
/// resting orders (the top of book goes empty on both sides) and send none,
/// so a buy far through the mid rests unfilled; said in the audit log; with
/// the knob off the flow comes back and fills it.
#[test]
fn withdrawn_liquidity_leaves_a_marketable_order_unfilled_until_it_returns() {
    let dir = tempfile::tempdir().unwrap();
    let venue = VenueProc::start(
        dir.path(),
        &["SIM-A"],
        &["--instruments", "I0", "--flow-interval-us", "50"],
    );
    let addr = venue.addr("SIM-A");
    let mut v = FixVenue::new(fix_config(addr, "ENGINE-L", "SIM-A"));
    v.connect(Duration::from_secs(30)).expect("logon");
    v.subscribe(0).unwrap();
    poll_until(&mut v, "a two-sided book", |ev| {
        ev.iter().any(|e| {
            matches!(
                e,
                VenueEvent::TopOfBook {
                    bid: Some(_),
                    ask: Some(_),
                    ..
                }
            )
        })
    });
    let mut control = RawSession::logon(addr, "KS-CONTROL", "SIM-A");
    control.control("withdraw_liquidity", "1");
    poll_until(&mut v, "an empty book", |ev| {
        ev.contains(&VenueEvent::TopOfBook {
            instrument: 0,
            bid: None,
            ask: None,
        })
    });
    let through = NewOrder {
        price: Price::from_units(110),
        ..resting_buy(1)
    };
    v.send(&through).unwrap();
    let seen = poll_until(&mut v, "the ack", |ev| {
        ev.contains(&VenueEvent::Acked { id: OrderId(1) })
    });
    // Half a second of a dry market: nothing fills it.
    let mut later = Vec::new();
    let end = Instant::now() + Duration::from_millis(500);
    while Instant::now() < end {
        v.poll(&mut later);
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(
        !seen
            .iter()
            .chain(&later)
            .any(|e| matches!(e, VenueEvent::Fill { .. })),
        "{seen:?} {later:?}"
    );
    let log = venue.audit("SIM-A");
    assert_eq!(events(&log, "", "liquidity-withdrawn").len(), 1, "{log:?}");
    control.control("withdraw_liquidity", "0");
    poll_until(&mut v, "a fill once the liquidity is back", |ev| {
        ev.iter()
            .any(|e| matches!(e, VenueEvent::Fill { id, .. } if *id == OrderId(1)))
    });
}
