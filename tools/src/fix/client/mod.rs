//! [`FixVenue`]: the gateway's [`Venue`] for a venue over FIX 4.4 (a
//! `ks-venue` venue, or anything speaking the same subset).
//!
//! * **Never blocks.** The socket is non-blocking (connect included, via
//!   socket2); `poll` reads what is there, `send`/`cancel` append a frame to
//!   the write buffer and write what the kernel takes now. What it does not
//!   take is written on the next call. `TCP_NODELAY` is on.
//! * **Writes that fail.** If the socket fails while a message is being
//!   written and some of its bytes may have left, the call returns
//!   [`VenueError::Ambiguous`] (the order may be working at the venue);
//!   if none of its bytes left, [`VenueError::Disconnected`]. Messages
//!   still in the write buffer when a connection drops were accepted with
//!   `Ok` and may or may not have reached the venue: the drain treats them
//!   as open orders.
//! * **Session.** Heartbeats, TestRequests, sequence numbers (see
//!   [`crate::fix::session`]). The first Logon of the process resets the
//!   numbers (`141=Y`); a reconnect keeps them, so the venue resends every
//!   answer we missed (fills that raced our cancels included) and they are
//!   delivered as events after `Reconnected`. We never replay our own
//!   requests: a ResendRequest from the venue is answered with a gap fill.
//! * **Reconnect** with back-off (50 ms doubling to 2 s) after any loss.
//! * **Dead-man timer.** Armed (`U1`) on every logon (a reconnect, or a
//!   logon that reset the sequence numbers, arms it again), refreshed every
//!   quarter of its timeout (15 s against 60 s by default), and re-armed at
//!   once when the venue reports that it ran out (the session lives on and
//!   what it sends next needs the same guard).
//! * **Kill acknowledgement mark.** When the gateway acknowledges a kill
//!   generation, a TestRequest `112=KS-ACK-<generation>` is queued ahead of
//!   anything else: the venue's audit log then shows where the
//!   acknowledgement falls among the orders it received (what the drill
//!   checks: no NewOrderSingle after it). It is queued, not flushed: it
//!   leaves with the drain's first cancel, so it adds no system call to the
//!   kill path.
//! * **Orders of an earlier run** ([`FixVenue::adopt`]: what the journal
//!   shows open when the engine restarts) are cancelled with their own side,
//!   symbol and quantity; when the venue refuses such a cancel (the order
//!   filled or was cancelled while no engine was there to hear it), the
//!   session asks for the order's status once and passes on the answer
//!   instead of the refusal: cancelled, filled (with the quantity the
//!   journal lacks), or never received (the engine died before the bytes
//!   left: `Rejected` with [`RejectReason::NotSent`]). The restart
//!   reconciles instead of leaving such orders `CancelUnknown`.
//! * **Market data**: [`Venue::subscribe`] asks for top of book; the
//!   subscriptions are asked again after a reconnect.
//! * **Mass cancel** is `35=q`; a venue that answers `35=r` with
//!   `531=0` (not supported) gets single cancels for the orders this
//!   session knows to be open, and no more mass cancels.
//! * **Logout** cancels first (mass cancel, or single cancels), disarms the
//!   dead-man timer, then logs out; answers keep arriving until the venue's
//!   Logout.

mod inbound;
mod link;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use killswitch::order::{OrderId, ScopeIndex, Side};
#[cfg(doc)]
use killswitch::venue::RejectReason;
use killswitch::venue::{MassCancelScope, NewOrder, Venue, VenueError, VenueEvent};
use rustc_hash::FxHashMap;

use super::codec::{utc_timestamp, Body, Field};
use super::messages::{self, NewOrderFields};
use super::session::SessionState;
use link::Link;

/// TestReqID prefix of the kill acknowledgement mark (`KS-ACK-<generation>`).
pub const KILL_ACK_MARK: &str = "KS-ACK-";

/// How long dropping a session whose logout is under way waits for the
/// venue's Logout.
const LOGOUT_LINGER: Duration = Duration::from_secs(2);

/// Settings of one FIX session to a venue.
#[derive(Clone, Debug)]
pub struct FixVenueConfig {
    /// Name for reports.
    pub name: String,
    /// Venue address (loopback for `ks-venue`).
    pub addr: SocketAddr,
    /// Our CompID: the firm identity whose orders these are.
    pub sender_comp_id: String,
    /// The venue's CompID (for `ks-venue`: the venue name).
    pub target_comp_id: String,
    /// HeartBtInt (whole seconds, at least 1).
    pub heartbeat: Duration,
    /// Ask the venue to cancel our orders if the connection drops.
    pub cancel_on_disconnect: bool,
    /// Dead-man timer timeout (refreshed every quarter of it); `None`: off.
    pub dead_man: Option<Duration>,
    /// Whether to use the venue's mass cancel.
    pub mass_cancel: bool,
    /// Symbols of our instrument indices.
    pub symbols: Vec<(ScopeIndex, String)>,
    /// First reconnect delay (doubles up to `reconnect_max`).
    pub reconnect_min: Duration,
    /// Longest reconnect delay.
    pub reconnect_max: Duration,
    /// Log on as the designated backup taking over the session of this
    /// CompID (`8014=Y`, first logon only): the venue cuts off a
    /// connection still up without cancelling, and this session asks the
    /// status of every order given to [`FixVenue::adopt`] once logged on,
    /// which adopts it at the venue and delivers what the venue knows
    /// (fills the journal lacks, cancels) as events.
    pub takeover: bool,
}

impl FixVenueConfig {
    /// Defaults: 5 s heartbeat, cancel-on-disconnect asked, dead-man 60 s,
    /// mass cancel on, reconnect 50 ms .. 2 s.
    pub fn new(name: &str, addr: SocketAddr, sender: &str, target: &str) -> FixVenueConfig {
        FixVenueConfig {
            name: name.to_string(),
            addr,
            sender_comp_id: sender.to_string(),
            target_comp_id: target.to_string(),
            heartbeat: Duration::from_secs(5),
            cancel_on_disconnect: true,
            dead_man: Some(Duration::from_secs(60)),
            mass_cancel: true,
            symbols: Vec::new(),
            reconnect_min: Duration::from_millis(50),
            reconnect_max: Duration::from_secs(2),
            takeover: false,
        }
    }
}

/// Counters a supervisor can read while the gateway owns the session
/// (for a connections table).
#[derive(Debug, Default)]
pub struct FixVenueMonitor {
    /// 0 disconnected, 1 connecting, 2 logging on, 3 active, 4 logged out.
    pub state: AtomicU64,
    /// Unix ms of the last bytes received from the venue.
    pub last_received_ms: AtomicU64,
    /// Successful logons.
    pub logons: AtomicU64,
    /// Connections lost.
    pub disconnects: AtomicU64,
    /// Writes that failed part-way ([`VenueError::Ambiguous`]).
    pub ambiguous_writes: AtomicU64,
    /// Session-level Rejects and BusinessMessageRejects received.
    pub rejects_received: AtomicU64,
    /// Dead-man expiries reported by the venue.
    pub dead_man_expiries: AtomicU64,
    /// Instruments subscribed to (market data).
    pub subscriptions: AtomicU64,
    /// Top-of-book snapshots received.
    pub market_data_snapshots: AtomicU64,
    /// Unix ms of the last top-of-book snapshot.
    pub last_market_data_ms: AtomicU64,
}

impl FixVenueMonitor {
    /// The link's state as [`FixVenueMonitor::state`] stores it.
    pub fn link_state(&self) -> LinkState {
        match self.state.load(Ordering::Relaxed) {
            1 => LinkState::Connecting,
            2 => LinkState::LoggingOn,
            3 => LinkState::Active,
            4 => LinkState::LoggedOut,
            _ => LinkState::Down,
        }
    }
}

/// Where a session's connection is, as a supervisor sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkState {
    /// No connection (waiting to reconnect).
    Down,
    /// TCP connect under way.
    Connecting,
    /// Connected, our Logon sent.
    LoggingOn,
    /// Logged on.
    Active,
    /// Logged out for good.
    LoggedOut,
}

/// What we remember of an order we sent (to cancel it, and to tell
/// unreported fills in a status answer).
#[derive(Clone, Copy, Debug)]
struct OrderMeta {
    side: Side,
    instrument: ScopeIndex,
    qty: i64,
    /// Quantity filled as far as events delivered say.
    delivered: i64,
}

/// The FIX session; see the module docs.
pub struct FixVenue {
    cfg: FixVenueConfig,
    symbol_of: HashMap<ScopeIndex, String>,
    instrument_of: HashMap<String, ScopeIndex>,
    link: Link,
    session: SessionState,
    rbuf: Vec<u8>,
    chunk: Vec<u8>,
    wbuf: Vec<u8>,
    fields: Vec<Field>,
    events: Vec<VenueEvent>,
    orders: FxHashMap<OrderId, OrderMeta>,
    /// Orders of an earlier run whose status is asked for once if the
    /// venue refuses their cancel.
    adopted: rustc_hash::FxHashSet<OrderId>,
    /// Adopted orders whose status was asked after a refused cancel.
    status_asked: rustc_hash::FxHashSet<OrderId>,
    /// Recent NewOrderSingle sequence numbers (a session Reject names one).
    sent_orders: VecDeque<(u64, OrderId)>,
    pending_mass: HashMap<String, MassCancelScope>,
    positions_left: Option<u64>,
    request_counter: u64,
    mass_cancel: bool,
    reset_next_logon: bool,
    ever_logged_on: bool,
    logout_requested: bool,
    /// Logout waits for the answer to this mass cancel (request id, since).
    logout_after: Option<(String, Instant)>,
    dead_man_refresh: Option<Instant>,
    /// Instruments subscribed to (asked again after a reconnect).
    subscribed: Vec<ScopeIndex>,
    last_error: String,
    monitor: Arc<FixVenueMonitor>,
}

impl FixVenue {
    /// A session, not yet connected: the first `poll` starts connecting (or
    /// call [`FixVenue::connect`] to wait for the first logon).
    pub fn new(cfg: FixVenueConfig) -> FixVenue {
        let heartbeat = Duration::from_secs(cfg.heartbeat.as_secs().max(1));
        let session = SessionState::new(&cfg.sender_comp_id, &cfg.target_comp_id, heartbeat, false);
        FixVenue {
            symbol_of: cfg.symbols.iter().cloned().collect(),
            instrument_of: cfg.symbols.iter().map(|(i, s)| (s.clone(), *i)).collect(),
            mass_cancel: cfg.mass_cancel,
            link: Link::disconnected(),
            session,
            rbuf: Vec::with_capacity(64 * 1024),
            chunk: vec![0; 64 * 1024],
            wbuf: Vec::with_capacity(64 * 1024),
            fields: Vec::with_capacity(64),
            events: Vec::new(),
            orders: FxHashMap::default(),
            adopted: Default::default(),
            status_asked: Default::default(),
            sent_orders: VecDeque::new(),
            pending_mass: HashMap::new(),
            positions_left: None,
            request_counter: 0,
            reset_next_logon: true,
            ever_logged_on: false,
            logout_requested: false,
            logout_after: None,
            dead_man_refresh: None,
            subscribed: Vec::new(),
            last_error: String::new(),
            monitor: Arc::new(FixVenueMonitor::default()),
            cfg,
        }
    }

    /// Connects and waits for the first logon, polling (events that arrive
    /// meanwhile are kept for the next `poll`). For start-up, before the
    /// session is handed to the gateway thread.
    pub fn connect(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        let mut held = Vec::new();
        while !self.is_active() {
            if Instant::now() >= deadline {
                return Err(format!(
                    "venue {} at {}: no logon within {timeout:?}{}",
                    self.cfg.name,
                    self.cfg.addr,
                    if self.last_error.is_empty() {
                        String::new()
                    } else {
                        format!(" (last error: {})", self.last_error)
                    }
                ));
            }
            self.poll(&mut held);
            std::thread::sleep(Duration::from_millis(1));
        }
        self.events.splice(0..0, held);
        Ok(())
    }

    /// Takes over orders an earlier run of the engine sent on this session
    /// (its journal shows them open): `(id, side, instrument, quantity,
    /// filled so far)`. See the module docs.
    pub fn adopt(
        &mut self,
        orders: impl IntoIterator<Item = (OrderId, Side, ScopeIndex, i64, i64)>,
    ) {
        for (id, side, instrument, qty, filled) in orders {
            self.orders.insert(
                id,
                OrderMeta {
                    side,
                    instrument,
                    qty,
                    delivered: filled,
                },
            );
            self.adopted.insert(id);
        }
    }

    /// True when logged on.
    pub fn is_active(&self) -> bool {
        self.link.is_active()
    }

    /// The counters of this session, shared.
    pub fn monitor(&self) -> Arc<FixVenueMonitor> {
        self.monitor.clone()
    }

    /// The last connection or protocol error, for reports.
    pub fn last_error(&self) -> &str {
        &self.last_error
    }

    fn next_request_id(&mut self, prefix: &str) -> String {
        self.request_counter += 1;
        format!("{prefix}{}", self.request_counter)
    }

    fn symbol(&self, instrument: ScopeIndex) -> String {
        self.symbol_of
            .get(&instrument)
            .cloned()
            .unwrap_or_else(|| instrument.to_string())
    }

    /// Writes one message. See the module docs for the error cases.
    fn write(&mut self, body: &Body, app: bool) -> Result<u64, VenueError> {
        if self.logout_requested && !matches!(body.msg_type, "5" | "U1" | "F" | "q") {
            return Err(VenueError::LoggedOut);
        }
        // Only the Logon goes out before the venue has answered ours: a
        // request written then would be lost with a refused logon.
        let writable = if body.msg_type == "A" {
            self.link.can_write()
        } else {
            self.link.is_active()
        };
        if !writable {
            return Err(VenueError::Disconnected);
        }
        let before = self.wbuf.len();
        let seq = self.session.send(body, app, &mut self.wbuf);
        match self.flush() {
            Ok(()) => Ok(seq),
            Err(written) => {
                // `written` bytes of the buffer left before the failure.
                if written > before {
                    self.monitor
                        .ambiguous_writes
                        .fetch_add(1, Ordering::Relaxed);
                    Err(VenueError::Ambiguous)
                } else {
                    Err(VenueError::Disconnected)
                }
            }
        }
    }

    fn send_admin(&mut self, body: &Body) {
        let _ = self.write(body, false);
    }

    fn transact_time() -> String {
        utc_timestamp(std::time::SystemTime::now())
    }

    fn cancel_order(&mut self, id: OrderId) -> Result<(), VenueError> {
        // An order we do not know (sent by an earlier run) is cancelled by
        // its ClOrdID alone; the venue looks orders up by OrigClOrdID.
        let meta = self.orders.get(&id).copied().unwrap_or(OrderMeta {
            side: Side::Buy,
            instrument: self.cfg.symbols.first().map_or(0, |s| s.0),
            qty: 0,
            delivered: 0,
        });
        let req = self.next_request_id(&format!("{}-C", id.0));
        let body = messages::cancel_request(
            &req,
            &id.0.to_string(),
            meta.side,
            &self.symbol(meta.instrument),
            meta.qty,
            &Self::transact_time(),
        );
        self.write(&body, true).map(|_| ())
    }

    /// Writes the Logout of a graceful logout (its cancels are written).
    fn finish_logout(&mut self) -> Result<(), VenueError> {
        self.logout_after = None;
        self.write(&messages::logout("gateway logout"), false)
            .map(|_| ())
    }

    pub(super) fn write_subscription(&mut self, instrument: ScopeIndex) -> Result<(), VenueError> {
        let body = messages::market_data_request(
            &format!("MD{instrument}"),
            &self.symbol(instrument),
            true,
        );
        self.write(&body, true).map(|_| ())
    }

    /// Single cancels for the open orders this session knows, in `scope`.
    fn cancel_known(&mut self, scope: MassCancelScope) {
        let mut ids: Vec<OrderId> = self
            .orders
            .iter()
            .filter(|(_, m)| match scope {
                MassCancelScope::All => true,
                MassCancelScope::Instrument(i) => m.instrument == i,
            })
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        for id in ids {
            let _ = self.cancel_order(id);
        }
    }
}

impl Venue for FixVenue {
    fn name(&self) -> &str {
        &self.cfg.name
    }

    fn send(&mut self, order: &NewOrder) -> Result<(), VenueError> {
        let cl_ord_id = order.id.0.to_string();
        let symbol = self.symbol(order.tags.instrument);
        let body = messages::new_order_single(&NewOrderFields {
            cl_ord_id: &cl_ord_id,
            account: &order.tags.account.to_string(),
            symbol: &symbol,
            side: order.side,
            qty: order.qty.0,
            price: order.price.0,
            transact_time: &Self::transact_time(),
        });
        let result = self.write(&body, true);
        if matches!(result, Ok(_) | Err(VenueError::Ambiguous)) {
            self.orders.insert(
                order.id,
                OrderMeta {
                    side: order.side,
                    instrument: order.tags.instrument,
                    qty: order.qty.0,
                    delivered: 0,
                },
            );
        }
        if let Ok(seq) = result {
            if self.sent_orders.len() >= 4096 {
                self.sent_orders.pop_front();
            }
            self.sent_orders.push_back((seq, order.id));
        }
        result.map(|_| ())
    }

    fn cancel(&mut self, id: OrderId) -> Result<(), VenueError> {
        self.cancel_order(id)
    }

    fn poll(&mut self, out: &mut Vec<VenueEvent>) {
        self.drive();
        out.append(&mut self.events);
    }

    fn supports_mass_cancel(&self) -> bool {
        self.mass_cancel
    }

    fn mass_cancel(&mut self, scope: MassCancelScope) -> Result<(), VenueError> {
        if !self.mass_cancel {
            return Err(VenueError::Unsupported("mass cancel"));
        }
        let req = self.next_request_id("M");
        let symbol = match scope {
            MassCancelScope::All => None,
            MassCancelScope::Instrument(i) => Some(self.symbol(i)),
        };
        let body = messages::mass_cancel_request(&req, symbol.as_deref(), &Self::transact_time());
        self.write(&body, true)?;
        self.pending_mass.insert(req, scope);
        Ok(())
    }

    fn request_positions(&mut self) -> Result<(), VenueError> {
        let req = self.next_request_id("P");
        let now = Self::transact_time();
        let body = messages::positions_request(&req, messages::business_date(&now), &now);
        self.write(&body, true).map(|_| ())
    }

    fn request_order_status(&mut self, id: OrderId) -> Result<(), VenueError> {
        let (side, instrument) = self.orders.get(&id).map_or(
            (Side::Buy, self.cfg.symbols.first().map_or(0, |s| s.0)),
            |m| (m.side, m.instrument),
        );
        let req = self.next_request_id("S");
        let body =
            messages::order_status_request(&id.0.to_string(), side, &self.symbol(instrument), &req);
        self.write(&body, true).map(|_| ())
    }

    fn subscribe(&mut self, instrument: ScopeIndex) -> Result<(), VenueError> {
        if !self.subscribed.contains(&instrument) {
            self.subscribed.push(instrument);
            self.monitor
                .subscriptions
                .store(self.subscribed.len() as u64, Ordering::Relaxed);
        }
        self.write_subscription(instrument)
    }

    fn unsubscribe(&mut self, instrument: ScopeIndex) -> Result<(), VenueError> {
        self.subscribed.retain(|i| *i != instrument);
        self.monitor
            .subscriptions
            .store(self.subscribed.len() as u64, Ordering::Relaxed);
        let body = messages::market_data_request(
            &format!("MD{instrument}"),
            &self.symbol(instrument),
            false,
        );
        self.write(&body, true).map(|_| ())
    }

    fn kill_acknowledged(&mut self, generation: u64) {
        // Queued only (see the module docs): the next write or poll sends it.
        if self.link.is_active() {
            let body = messages::test_request(&format!("{KILL_ACK_MARK}{generation}"));
            self.session.send(&body, false, &mut self.wbuf);
        }
    }

    /// Hands the session over to a designated backup: a Logout with
    /// `8014=Y` and no cancels, so the venue holds our resting orders for
    /// its grace period instead of cancelling them when the connection
    /// ends. Later requests fail with `LoggedOut`. Only the holder of the
    /// active role may call it (it writes to the venue).
    fn offers_hand_over(&self) -> bool {
        true
    }

    fn hand_over(&mut self) -> Result<(), VenueError> {
        if self.logout_requested {
            return Err(VenueError::LoggedOut);
        }
        if !self.link.is_active() {
            self.logout_requested = true;
            self.link.close_for_good();
            return Err(VenueError::Disconnected);
        }
        let mut body = messages::logout("handing over to the designated backup");
        body.str(crate::fix::TAG_BACKUP_TAKEOVER, "Y");
        self.logout_requested = true;
        self.write(&body, false).map(|_| ())
    }

    fn logout(&mut self) -> Result<(), VenueError> {
        if self.logout_requested {
            return Err(VenueError::LoggedOut);
        }
        if !self.link.is_active() {
            self.logout_requested = true;
            self.link.close_for_good();
            return Err(VenueError::Disconnected);
        }
        // Cancel explicitly first: a venue without cancel-on-disconnect
        // would otherwise keep our orders working. After a mass cancel the
        // Logout waits for its answer (35=r): a venue that refuses it gets
        // single cancels first.
        let mut mass = None;
        if self.mass_cancel {
            let req = self.next_request_id("M");
            let body = messages::mass_cancel_request(&req, None, &Self::transact_time());
            if self.write(&body, true).is_ok() {
                self.pending_mass.insert(req.clone(), MassCancelScope::All);
                mass = Some(req);
            }
        }
        if mass.is_none() {
            self.cancel_known(MassCancelScope::All);
        }
        if self.cfg.dead_man.is_some() {
            let _ = self.write(&messages::cancel_all_after(0), true);
        }
        self.logout_requested = true;
        match mass {
            Some(req) => {
                self.logout_after = Some((req, Instant::now()));
                Ok(())
            }
            None => self.finish_logout(),
        }
    }
}

impl Drop for FixVenue {
    /// A logout under way is finished (the answers to its cancels read, the
    /// venue's Logout awaited, at most `LOGOUT_LINGER`) so the session
    /// ends with a Logout rather than a reset connection. The answers read
    /// here reach no registry: the gateway that owned the session is gone.
    fn drop(&mut self) {
        if !self.logout_requested {
            return;
        }
        let end = Instant::now() + LOGOUT_LINGER;
        while !matches!(self.link, link::Link::Closed) && Instant::now() < end {
            self.drive();
            self.events.clear();
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}
