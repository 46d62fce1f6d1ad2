//! The failover's hand-over ([`Runtime::hand_over`]) on a real runtime
//! (control block in shared memory, journal on disk, gateway thread, lease)
//! over a small venue that offers the session takeover: the successful
//! hand-over (orders resting, nothing cancelled, lease released, later
//! orders refused, journal closed for the successor), and the two ways
//! its deadline can pass, each ending in exactly one consistent state.
//!
//! The venue here stands for one that holds a session's resting orders
//! for a designated backup (FIX 8014=Y): it records every write, and can
//! hold the gateway thread inside `poll` or inside `hand_over` until the
//! test lets it go, which is how a gateway that is busy, or a venue whose
//! hand-over is slow, is driven without timing assertions.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{answers_until, buy};
use killswitch::access::Access;
use killswitch::control::LeaseConfig;
use killswitch::journal::{rebuild, JournalConfig, JournalLock};
use killswitch::order::{OrderId, ScopeTags};
use killswitch::registry::Refusal;
use killswitch::runtime::{Answer, Runtime, StrategyHandle};
use killswitch::venue::{NewOrder, Venue, VenueError, VenueEvent};

const WAIT: Duration = Duration::from_secs(20);
/// The longest the venue holds the gateway thread if a test forgets to
/// let it go (then the test fails on its own assertions, never hangs).
const HOLD_BOUND: Duration = Duration::from_secs(60);

/// What the venue saw, and the test's holds on it.
#[derive(Default)]
struct Wire {
    sent: Mutex<Vec<OrderId>>,
    cancels: Mutex<Vec<OrderId>>,
    mass_cancels: Mutex<usize>,
    logouts: Mutex<usize>,
    hand_overs: Mutex<usize>,
    /// Hold the gateway inside `poll` while set.
    hold_poll: AtomicBool,
    /// Hold the gateway inside `hand_over` while set.
    hold_hand_over: AtomicBool,
    /// The gateway is inside a held call.
    holding: AtomicBool,
}

impl Wire {
    fn hold_here(&self, flag: &AtomicBool) {
        let end = Instant::now() + HOLD_BOUND;
        while flag.load(Ordering::Acquire) && Instant::now() < end {
            self.holding.store(true, Ordering::Release);
            std::thread::sleep(Duration::from_millis(1));
        }
        self.holding.store(false, Ordering::Release);
    }

    fn count(m: &Mutex<usize>) -> usize {
        *m.lock().unwrap()
    }
}

/// A session that acknowledges every order and holds it resting; a
/// hand-over ends the session without cancelling anything.
struct TakeoverVenue {
    wire: Arc<Wire>,
    acks: Vec<OrderId>,
    ended: bool,
}

impl Venue for TakeoverVenue {
    fn name(&self) -> &str {
        "XCH"
    }

    fn send(&mut self, order: &NewOrder) -> Result<(), VenueError> {
        if self.ended {
            return Err(VenueError::LoggedOut);
        }
        self.wire.sent.lock().unwrap().push(order.id);
        self.acks.push(order.id);
        Ok(())
    }

    fn cancel(&mut self, id: OrderId) -> Result<(), VenueError> {
        self.wire.cancels.lock().unwrap().push(id);
        Ok(())
    }

    fn poll(&mut self, out: &mut Vec<VenueEvent>) {
        self.wire.hold_here(&self.wire.hold_poll);
        out.extend(self.acks.drain(..).map(|id| VenueEvent::Acked { id }));
    }

    fn mass_cancel(
        &mut self,
        _scope: killswitch::venue::MassCancelScope,
    ) -> Result<(), VenueError> {
        *self.wire.mass_cancels.lock().unwrap() += 1;
        Ok(())
    }

    fn logout(&mut self) -> Result<(), VenueError> {
        *self.wire.logouts.lock().unwrap() += 1;
        Ok(())
    }

    fn offers_hand_over(&self) -> bool {
        true
    }

    fn hand_over(&mut self) -> Result<(), VenueError> {
        self.wire.hold_here(&self.wire.hold_hand_over);
        *self.wire.hand_overs.lock().unwrap() += 1;
        self.ended = true;
        Ok(())
    }
}

struct Engine {
    _dir: tempfile::TempDir,
    journal: std::path::PathBuf,
    rt: Runtime,
    wire: Arc<Wire>,
}

fn engine() -> Engine {
    let shm = std::path::Path::new("/dev/shm");
    let dir = if shm.is_dir() {
        tempfile::tempdir_in(shm)
    } else {
        tempfile::tempdir()
    }
    .unwrap();
    let wire = Arc::new(Wire::default());
    let journal = dir.path().join("journal");
    let rt = Runtime::builder(dir.path(), "handover")
        .venue(
            "XCH",
            TakeoverVenue {
                wire: wire.clone(),
                acks: Vec::new(),
                ended: false,
            },
        )
        .journal(&journal, JournalConfig::small_for_tests())
        .lease(LeaseConfig::default())
        .start()
        .unwrap();
    Engine {
        _dir: dir,
        journal,
        rt,
        wire,
    }
}

/// Reads answers until `pred` matches one, within the deadline.
fn answer_where(h: &mut StrategyHandle, pred: impl FnMut(&Answer) -> bool) -> Answer {
    let mut read = answers_until(h, pred);
    read.pop()
        .expect("answers_until returns the matching answer last")
}

/// Submits an order and waits for the venue's acknowledgement.
fn rest(h: &mut StrategyHandle, tags: ScopeTags, px: i64) -> OrderId {
    let id = h.submit(&buy(tags, px)).unwrap();
    answer_where(
        h,
        |a| matches!(a, Answer::Accepted { id: got } if *got == id),
    );
    id
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The rolling restart's hand-over, end to end on the library: three
/// orders rest at the venue, the hand-over succeeds with the session's own
/// result, the lease is released (free in the block, the engine fenced by
/// its own release), an order the old engine's strategy sends afterwards
/// is refused as fenced and never reaches the venue, nothing was cancelled
/// or logged out, and the stop closes the journal for the successor (the
/// lock file's mark is the end the report names, and the journal holds
/// the three resting orders for it).
#[test]
fn a_hand_over_leaves_the_orders_resting_releases_the_lease_and_closes_the_journal_for_the_successor(
) {
    let Engine {
        _dir,
        journal,
        mut rt,
        wire,
    } = engine();
    let mut mm = rt.strategy("mm").unwrap();
    let tags = mm.tags("XCH", "BTC/USD", "desk-1").unwrap();
    let resting: Vec<OrderId> = (0..3).map(|i| rest(&mut mm, tags, 100 + i)).collect();
    let pid = std::process::id();
    assert_eq!(rt.block().lease().holder, pid, "the engine holds the lease");
    assert!(!rt.handed_over());

    let h = rt.hand_over(WAIT).expect("the hand-over succeeds");
    assert_eq!(h.sessions.len(), 1);
    assert_eq!(h.sessions[0].name, "XCH");
    assert_eq!(h.sessions[0].result, Ok(()));
    assert!(h.failed().is_empty(), "{:?}", h.failed());
    assert!(rt.handed_over(), "derived from the lease: released by us");
    let lease = rt.block().lease();
    assert_eq!(lease.holder, 0, "released: no holder");
    assert_eq!(lease.epoch, h.epoch, "the epoch is kept for the next taker");
    assert!(rt.lease().unwrap().handed_back());

    // The old engine's strategy is refused, and the venue hears nothing.
    let late = mm
        .submit(&buy(tags, 99))
        .expect("the switch is not tripped");
    match answer_where(
        &mut mm,
        |a| matches!(a, Answer::Refused { id, .. } if *id == late),
    ) {
        Answer::Refused { why, .. } => {
            assert_eq!(why, Refusal::Fenced { epoch: h.epoch })
        }
        other => unreachable!("{other:?}"),
    }
    assert_eq!(
        *wire.sent.lock().unwrap(),
        resting,
        "no order after the hand-over"
    );
    assert!(wire.cancels.lock().unwrap().is_empty(), "nothing cancelled");
    assert_eq!(Wire::count(&wire.mass_cancels), 0);
    assert_eq!(Wire::count(&wire.logouts), 0, "handed over, not logged out");
    assert_eq!(Wire::count(&wire.hand_overs), 1);
    for id in &resting {
        assert!(
            rt.order(*id).unwrap().state.is_open(),
            "{id:?} still resting"
        );
    }

    drop(mm);
    let stopped = rt.shutdown();
    assert!(stopped.gateway.is_ok(), "{:?}", stopped.gateway);
    assert!(
        stopped.durable.is_none(),
        "closed for the successor, not synced"
    );
    let end = stopped
        .closed_for_successor
        .expect("the stop closed the journal for the successor");
    assert_eq!(stopped.events_not_journaled_after_close, 0);
    assert_eq!(rt.events_not_journaled_after_close(), 0);
    assert_eq!(
        Wire::count(&wire.logouts),
        0,
        "no logout at the stop either"
    );
    assert!(wire.cancels.lock().unwrap().is_empty());

    let (_lock, mark) = JournalLock::try_acquire_after(&journal, Access::OWNER_ONLY)
        .unwrap()
        .expect("the successor takes the journal lock");
    assert_eq!(mark, Some(end), "the lock file says where the journal ends");
    let rebuilt = rebuild(&journal).unwrap();
    let mut open: Vec<OrderId> = rebuilt.state.open_orders.keys().collect();
    open.sort();
    assert_eq!(
        open, resting,
        "the successor's journal has the resting orders"
    );
}

/// The deadline passes while the gateway is busy (held inside a venue
/// poll) and has not reached the request: the request is withdrawn, the
/// call says so, and when the gateway reaches it later it does nothing:
/// the venue is never asked to hand over, the lease is still held, and the
/// engine trades on (a later order is sent and acknowledged). A retry then
/// hands over normally. Before the request word, the gateway handed the
/// sessions over once it got there, after the caller had been told the
/// hand-over failed.
#[test]
fn a_hand_over_the_gateway_did_not_take_by_the_deadline_is_withdrawn_and_the_engine_trades_on() {
    let Engine {
        _dir, mut rt, wire, ..
    } = engine();
    let mut mm = rt.strategy("mm").unwrap();
    let tags = mm.tags("XCH", "BTC/USD", "desk-1").unwrap();
    let first = rest(&mut mm, tags, 100);

    wire.hold_poll.store(true, Ordering::Release);
    wait_until("the gateway held in poll", || {
        wire.holding.load(Ordering::Acquire)
    });
    let err = rt
        .hand_over(Duration::from_millis(200))
        .expect_err("the gateway is held: it cannot take the request");
    assert!(err.contains("withdrawn"), "{err}");
    assert!(err.contains("still holds the lease"), "{err}");
    wire.hold_poll.store(false, Ordering::Release);

    // The ring is in order: this order's acknowledgement comes after the
    // gateway reached the withdrawn request.
    let after = rest(&mut mm, tags, 101);
    assert_eq!(
        Wire::count(&wire.hand_overs),
        0,
        "the venue was never asked"
    );
    assert_eq!(
        *wire.sent.lock().unwrap(),
        vec![first, after],
        "still trading"
    );
    assert!(!rt.handed_over());
    assert_eq!(
        rt.lease().unwrap().fenced_by(),
        None,
        "the lease is still ours"
    );
    assert_eq!(rt.block().lease().holder, std::process::id());

    let h = rt.hand_over(WAIT).expect("a retry hands over");
    assert_eq!(h.sessions[0].result, Ok(()));
    assert_eq!(Wire::count(&wire.hand_overs), 1, "once, for the retry");
    assert!(rt.handed_over());
    assert!(wire.cancels.lock().unwrap().is_empty());
    drop(mm);
    let stopped = rt.shutdown();
    assert!(stopped.closed_for_successor.is_some());
}

/// The deadline passes while the venue's hand-over is slow (the gateway
/// took the request and is held inside `hand_over`): the call waits for
/// the gateway's own answer and reports the hand-over done, exactly as the
/// lease shows it. Before the request word, the call returned "did not
/// hand over" while the gateway then released the lease.
#[test]
fn a_hand_over_taken_before_the_deadline_is_waited_for_to_its_answer() {
    let Engine {
        _dir, mut rt, wire, ..
    } = engine();
    let mut mm = rt.strategy("mm").unwrap();
    let tags = mm.tags("XCH", "BTC/USD", "desk-1").unwrap();
    let resting = rest(&mut mm, tags, 100);

    let deadline = Duration::from_millis(100);
    wire.hold_hand_over.store(true, Ordering::Release);
    let releaser = {
        let wire = wire.clone();
        std::thread::spawn(move || {
            let end = Instant::now() + WAIT;
            while !wire.holding.load(Ordering::Acquire) && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(1));
            }
            let taken = wire.holding.load(Ordering::Acquire);
            // Past the caller's deadline, with the venue's hand-over in
            // progress (an event, not a timing assertion: the hold is
            // released only after this).
            std::thread::sleep(deadline * 5);
            wire.hold_hand_over.store(false, Ordering::Release);
            taken
        })
    };
    let started = Instant::now();
    let h = rt
        .hand_over(deadline)
        .expect("taken: the answer is awaited");
    let waited = started.elapsed();
    assert!(
        releaser.join().unwrap(),
        "the gateway was held in hand_over"
    );
    assert!(
        waited > deadline,
        "the hold outlasted the deadline ({waited:?}), so the taken path ran"
    );
    assert_eq!(h.sessions[0].result, Ok(()));
    assert!(rt.handed_over());
    assert_eq!(rt.block().lease().holder, 0);
    assert_eq!(Wire::count(&wire.hand_overs), 1);
    assert!(rt.order(resting).unwrap().state.is_open());
    assert!(wire.cancels.lock().unwrap().is_empty());
    drop(mm);
    let stopped = rt.shutdown();
    assert!(stopped.closed_for_successor.is_some());
}
