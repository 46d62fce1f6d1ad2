//! `ks-venue`'s server: one simulated exchange ([`killswitch::venue::sim::Exchange`])
//! behind FIX 4.4 sessions on a TCP listener (see [`crate::fix`] for the
//! subset).
//!
//! One thread per venue runs a `poll(2)` loop over the listener and its
//! connections: read what arrived, frame and check it, act on it, let the
//! exchange run (synthetic flow, latency), turn its answers into
//! ExecutionReports and the like, fire timers, write what is queued. No
//! call blocks: a slow or hostile client stalls only itself.
//!
//! * **Sessions** are firm identities (`SenderCompID`). A session outlives
//!   its connections while the venue runs: its orders, positions, sequence
//!   numbers and sent messages (for resends) stay, so a gateway that
//!   reconnects gets every answer it missed through a ResendRequest. A
//!   Logon with `ResetSeqNumFlag=Y` starts the numbers again (orders stay).
//! * **Cancel-on-disconnect**, per session: asked for in the Logon with
//!   `8013=Y` (on when the tag is absent), granted only if the venue offers
//!   it (`--cancel-on-disconnect off` models venues that lack it); the
//!   Logon answer says what was granted. When the connection ends for any
//!   reason (logout, error, the peer killed) the session's resting orders
//!   are cancelled.
//! * **Dead-man timer** (`U1`, like Binance countdownCancelAll or Kraken
//!   cancelAllOrdersAfter): a session arms it with a timeout in ms and
//!   refreshes it by sending `U1` again; `U1` with 0 disarms. If it runs
//!   out, connected or not, the venue cancels the session's resting orders
//!   and reports `U2` with state 2. Answered by `U2` (state 1 armed, 0
//!   disarmed).
//! * **Malformed input**: a frame that cannot be delimited (bad BeginString,
//!   BodyLength, CheckSum, oversized, garbage) gets a Logout naming the
//!   problem and the connection is closed; a well-framed message with a bad
//!   or missing field or an unknown MsgType gets a session Reject (35=3) and
//!   the session goes on. No Logon within `logon_timeout`, or a message
//!   left incomplete for `frame_timeout` (a slow-loris client), gets a
//!   Logout and a close. Other sessions never notice.
//! * **Takeover by a designated backup** (`8014=Y` in the Logon, or in a
//!   Logout announcing one): the backup adopts the session's resting
//!   orders; cancel-on-disconnect is held for a grace period
//!   (`takeover.rs`).
//! * **Fault knobs** (flags, or `U9` VenueControl from the control CompID):
//!   `latency_us`, `reject_ppm`, `drop_cancel_ack_ppm`, `ignore_cancels`,
//!   `mass_cancel`, `disconnect_after` (the next connection to reach that
//!   many application messages is dropped, once), `withdraw_liquidity`
//!   (1: the other participants pull their resting orders and send no
//!   more, so nothing of ours fills; 0: they come back; the flag
//!   `--withdraw-liquidity-after-ms` does it once, that long after the
//!   start), `drop_sessions` (drop
//!   every other connection now), `inject` (`SYMBOL,buy|sell,PRICE,QTY`:
//!   another participant's order).
//! * **Audit log**: every accepted message, every message sent and every
//!   venue action, with timestamps ([`audit`]).

pub mod audit;
pub mod cli;
mod conn;
mod orders;
mod reports;
mod takeover;

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use killswitch::clock::mono_ns;
use killswitch::order::{Price, PRICE_SCALE};
use killswitch::venue::sim::{
    Answer, Exchange, FlowConfig, SessionId, SimConfig, SimHandle, SimInstrument,
};

use crate::fix::codec::{Body, Field};
use crate::fix::session::SessionState;
use audit::{AuditEntry, AuditLog};
use orders::FirmOrders;

/// One simulated venue's settings.
#[derive(Clone, Debug)]
pub struct VenueConfig {
    /// Venue name; also its CompID (the gateway's `TargetCompID`).
    pub name: String,
    /// Where to listen (loopback by default).
    pub listen: SocketAddr,
    /// Symbols listed; their position is the exchange's instrument index.
    pub instruments: Vec<String>,
    /// Seed of the synthetic flow and fault dice.
    pub seed: u64,
    /// One participant order every this many µs; 0 turns the flow off.
    pub flow_interval_us: u64,
    /// Whether the venue offers mass cancel (35=q).
    pub mass_cancel: bool,
    /// Delay before every answer.
    pub latency: Duration,
    /// Share of new orders rejected, ppm.
    pub reject_ppm: u32,
    /// Share of cancel acks lost, ppm.
    pub drop_cancel_ack_ppm: u32,
    /// Cancels and mass cancels are accepted and ignored.
    pub ignore_cancels: bool,
    /// Whether the venue offers cancel-on-disconnect.
    pub cancel_on_disconnect: bool,
    /// Drop the first connection that reaches this many application messages.
    pub disconnect_after: Option<u64>,
    /// The other participants withdraw their liquidity this long after the
    /// venue starts (their resting orders pulled, no flow): nothing of
    /// ours fills any more. The `withdraw_liquidity` knob does it at once.
    pub withdraw_liquidity_after: Option<Duration>,
    /// A connection must log on within this.
    pub logon_timeout: Duration,
    /// A message must be complete this long after its first byte.
    pub frame_timeout: Duration,
    /// Connections served at once; more are closed on accept.
    pub max_connections: usize,
    /// Audit log file.
    pub audit: Option<PathBuf>,
    /// The CompID allowed to send `U9` VenueControl.
    pub control_comp_id: String,
    /// How long a designated backup has to adopt a session's orders after
    /// taking it over (and how long a Logout announcing one holds them);
    /// zero: takeovers are not offered (see the module docs).
    pub takeover_grace: Duration,
}

impl VenueConfig {
    /// A quiet venue on `listen` listing `instruments`: no flow, no faults,
    /// mass cancel and cancel-on-disconnect offered.
    pub fn new(name: &str, listen: SocketAddr, instruments: &[&str]) -> VenueConfig {
        VenueConfig {
            name: name.to_string(),
            listen,
            instruments: instruments.iter().map(|s| s.to_string()).collect(),
            seed: 1,
            flow_interval_us: 0,
            mass_cancel: true,
            latency: Duration::ZERO,
            reject_ppm: 0,
            drop_cancel_ack_ppm: 0,
            ignore_cancels: false,
            cancel_on_disconnect: true,
            disconnect_after: None,
            withdraw_liquidity_after: None,
            logon_timeout: Duration::from_secs(5),
            frame_timeout: Duration::from_secs(5),
            max_connections: 64,
            audit: None,
            control_comp_id: "KS-CONTROL".to_string(),
            takeover_grace: Duration::from_secs(2),
        }
    }
}

/// A session (firm identity) at the venue; outlives its connections.
struct Firm {
    comp_id: String,
    sid: SessionId,
    state: SessionState,
    conn: Option<usize>,
    cancel_on_disconnect: bool,
    /// Dead-man timer: its timeout and when it fires.
    deadman: Option<(u64, Instant)>,
    orders: FirmOrders,
    /// A designated backup's takeover in progress.
    takeover: Option<takeover::Takeover>,
}

/// One TCP connection.
struct Conn {
    stream: TcpStream,
    peer: SocketAddr,
    rbuf: Vec<u8>,
    /// Outbound bytes; those before `wpos` are written already.
    wbuf: Vec<u8>,
    /// How much of `wbuf` the socket has taken. A mass cancel queues
    /// megabytes the socket takes a slice at a time: shifting the rest
    /// down after every slice moved the whole backlog each time.
    wpos: usize,
    /// The socket's send buffer was full at the last write: a burst is
    /// not written again until poll says it is writable (one failing
    /// write per encoded message otherwise).
    blocked: bool,
    firm: Option<usize>,
    opened: Instant,
    partial_since: Option<Instant>,
    app_messages: u64,
    /// Close once `wbuf` is written (after our Logout).
    closing: Option<String>,
    /// When `closing` was set.
    closing_since: Option<Instant>,
}

/// A running venue; see the module docs.
pub struct VenueServer {
    cfg: VenueConfig,
    listener: TcpListener,
    exchange: Exchange,
    handle: SimHandle,
    firms: Vec<Firm>,
    by_comp: HashMap<String, usize>,
    conns: Vec<Option<Conn>>,
    audit: AuditLog,
    fields: Vec<Field>,
    frame: Vec<u8>,
    chunk: Vec<u8>,
    answers: Vec<Answer>,
    discard: Vec<u8>,
    disconnect_after: Option<u64>,
    /// When the liquidity is withdrawn (the knob's time), until it is.
    withdraw_liquidity_at: Option<Instant>,
    exec_seq: u64,
    clock: crate::fix::codec::Clock,
}

/// Largest write buffer a client may leave unread before it is dropped.
const MAX_UNREAD: usize = 64 << 20;

impl VenueServer {
    /// Binds the listener and builds the exchange.
    pub fn bind(cfg: VenueConfig) -> io::Result<VenueServer> {
        let listener = TcpListener::bind(cfg.listen).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("venue {}: cannot listen on {}: {e}", cfg.name, cfg.listen),
            )
        })?;
        listener.set_nonblocking(true)?;
        let mut sim = SimConfig::new(&cfg.name, 0, cfg.seed);
        sim.instruments = (0..cfg.instruments.len())
            .map(|i| SimInstrument {
                index: i as u16,
                mid: Price::from_units(100),
                tick: Price(PRICE_SCALE / 100),
            })
            .collect();
        sim.flow = if cfg.flow_interval_us == 0 {
            FlowConfig::off()
        } else {
            FlowConfig {
                interval_ns: cfg.flow_interval_us * 1000,
                ..FlowConfig::default()
            }
        };
        sim.mass_cancel = true;
        sim.event_latency = cfg.latency;
        sim.reject_ppm = cfg.reject_ppm;
        let (exchange, handle) = Exchange::new(&sim);
        handle.set_mass_cancel(cfg.mass_cancel);
        handle.set_drop_cancel_ack_ppm(cfg.drop_cancel_ack_ppm);
        handle.set_ignore_cancels(cfg.ignore_cancels);
        let audit = AuditLog::open(cfg.audit.as_deref())?;
        Ok(VenueServer {
            disconnect_after: cfg.disconnect_after,
            withdraw_liquidity_at: cfg.withdraw_liquidity_after.map(|d| Instant::now() + d),
            cfg,
            listener,
            exchange,
            handle,
            firms: Vec::new(),
            by_comp: HashMap::new(),
            conns: Vec::new(),
            audit,
            fields: Vec::with_capacity(64),
            frame: Vec::with_capacity(1024),
            chunk: vec![0; 16 * 1024],
            answers: Vec::new(),
            discard: Vec::new(),
            exec_seq: 0,
            clock: crate::fix::codec::Clock::default(),
        })
    }

    /// The address actually bound (port 0 picks one).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `stop` is set.
    pub fn run(&mut self, stop: &AtomicBool) {
        let mut fds: Vec<libc::pollfd> = Vec::new();
        let mut slots: Vec<usize> = Vec::new();
        while !stop.load(Ordering::Acquire) {
            fds.clear();
            slots.clear();
            fds.push(pollfd(self.listener.as_raw_fd(), libc::POLLIN));
            for (i, c) in self.conns.iter().enumerate() {
                if let Some(c) = c {
                    let mut ev = libc::POLLIN;
                    if c.unwritten() > 0 {
                        ev |= libc::POLLOUT;
                    }
                    fds.push(pollfd(c.stream.as_raw_fd(), ev));
                    slots.push(i);
                }
            }
            let timeout_ms = self.poll_timeout_ms();
            // SAFETY: `fds` is a valid, initialised slice of pollfd for the
            // whole call; poll writes only the revents fields.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    eprintln!("ks-venue: venue {}: poll failed: {e}", self.cfg.name);
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            if fds[0].revents != 0 {
                self.accept_all();
            }
            for (k, &slot) in slots.iter().enumerate() {
                let revents = fds[k + 1].revents;
                if revents & libc::POLLOUT != 0 {
                    if let Some(c) = self.conns[slot].as_mut() {
                        c.blocked = false;
                    }
                }
                if revents != 0 {
                    self.read_conn(slot);
                }
            }
            self.turn();
        }
        for slot in 0..self.conns.len() {
            if self.conns[slot].is_some() {
                self.close(slot, "venue shutting down");
            }
        }
        // Every answer still queued, due or not, reaches the audit log
        // (stored for resend: the sessions are closed). A peer found dead
        // by a failed write in the last turn had its orders cancelled
        // there (cancel-on-disconnect) but their reports only queued:
        // stopped right after, the venue's log showed them still working.
        for f in 0..self.firms.len() {
            self.answer_due(f, u64::MAX);
        }
        self.audit.flush();
    }

    /// Sends session `f` the exchange's answers due by `now` (its clock;
    /// `u64::MAX`: every one queued).
    fn answer_due(&mut self, f: usize, now: u64) {
        let mut answers = std::mem::take(&mut self.answers);
        answers.clear();
        self.exchange.take_due(self.firms[f].sid, now, &mut answers);
        for a in answers.drain(..) {
            self.answer(f, a);
            // A burst (a mass cancel's reports) goes out as it is
            // encoded, so the peer reads while the rest is written.
            if let Some(slot) = self.firms[f].conn {
                if self.conns[slot]
                    .as_ref()
                    .is_some_and(|c| !c.blocked && c.unwritten() >= 32 * 1024)
                {
                    self.write_conn(slot);
                }
            }
        }
        self.answers = answers;
    }

    fn poll_timeout_ms(&self) -> i32 {
        if self.cfg.flow_interval_us > 0 || !self.cfg.latency.is_zero() {
            return 1;
        }
        if self
            .conns
            .iter()
            .flatten()
            .any(|c| c.partial_since.is_some() || c.closing.is_some())
        {
            return 5;
        }
        20
    }

    /// One turn after the reads: the exchange, its answers, timers, writes.
    fn turn(&mut self) {
        if self
            .withdraw_liquidity_at
            .is_some_and(|at| Instant::now() >= at)
        {
            self.withdraw_liquidity_at = None;
            self.withdraw_liquidity(true, "withdraw_liquidity_after reached");
        }
        let now = mono_ns();
        self.exchange.run(now);
        for f in 0..self.firms.len() {
            self.answer_due(f, now);
        }
        self.timers();
        for slot in 0..self.conns.len() {
            self.write_conn(slot);
        }
        self.audit.flush();
    }

    fn accept_all(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, peer)) => {
                    let live = self.conns.iter().flatten().count();
                    if live >= self.cfg.max_connections {
                        self.event(
                            "",
                            "refused",
                            None,
                            Some(format!("{peer}: {live} connections already")),
                        );
                        continue; // dropped: closed
                    }
                    if stream.set_nonblocking(true).is_err() {
                        continue;
                    }
                    let _ = stream.set_nodelay(true);
                    let conn = Conn {
                        stream,
                        peer,
                        rbuf: Vec::with_capacity(4096),
                        wbuf: Vec::with_capacity(4096),
                        wpos: 0,
                        blocked: false,
                        firm: None,
                        opened: Instant::now(),
                        partial_since: None,
                        app_messages: 0,
                        closing: None,
                        closing_since: None,
                    };
                    let slot = match self.conns.iter().position(Option::is_none) {
                        Some(s) => {
                            self.conns[s] = Some(conn);
                            s
                        }
                        None => {
                            self.conns.push(Some(conn));
                            self.conns.len() - 1
                        }
                    };
                    self.event(
                        "",
                        "connect",
                        None,
                        Some(format!("{peer} (connection {slot})")),
                    );
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    }

    /// The fault knob: the other participants pull (or bring back) their
    /// liquidity; said in the audit log and on stderr.
    fn withdraw_liquidity(&mut self, on: bool, why: &str) {
        self.handle.set_liquidity_withdrawn(on);
        eprintln!(
            "ks-venue: venue {}: liquidity {} ({why}, fault injection)",
            self.cfg.name,
            if on { "withdrawn" } else { "restored" }
        );
        self.event(
            "",
            if on {
                "liquidity-withdrawn"
            } else {
                "liquidity-restored"
            },
            None,
            Some(why.to_string()),
        );
    }

    /// Appends an event line to the audit log.
    fn event(&mut self, session: &str, event: &str, orders: Option<u64>, detail: Option<String>) {
        let resting = self
            .by_comp
            .get(session)
            .map(|&f| self.exchange.resting_count(self.firms[f].sid) as u64);
        self.audit.write(&AuditEntry {
            mono_ns: mono_ns(),
            wall_ms: wall_ms(),
            venue: self.cfg.name.clone(),
            session: session.to_string(),
            dir: "event".into(),
            event: Some(event.into()),
            orders,
            resting,
            detail,
            ..AuditEntry::default()
        });
    }

    /// Sends `body` on session `f` (queued for resend only while it has no
    /// connection). `app`: kept for resends; the body moves into the
    /// resend store, uncopied (a mass cancel's thousands of
    /// ExecutionReports), and a session message is not copied at all.
    fn send(&mut self, f: usize, body: Body, app: bool) {
        let conn = self.firms[f].conn;
        let mut buf = match conn.and_then(|c| self.conns[c].as_mut()) {
            Some(c) => std::mem::take(&mut c.wbuf),
            None => {
                self.discard.clear();
                std::mem::take(&mut self.discard)
            }
        };
        let start = buf.len();
        let msg_type = body.msg_type;
        let seq = self.firms[f].state.send_owned(body, app, &mut buf);
        if self.audit.enabled() {
            let entry = AuditEntry {
                mono_ns: mono_ns(),
                wall_ms: wall_ms(),
                venue: self.cfg.name.clone(),
                session: self.firms[f].comp_id.clone(),
                dir: "out".into(),
                msg_type: Some(msg_type.to_string()),
                seq: Some(seq),
                sent: Some(conn.is_some()),
                fix: Some(crate::fix::codec::printable(&buf[start..])),
                ..AuditEntry::default()
            };
            self.audit.write(&entry);
        }
        match conn.and_then(|c| self.conns[c].as_mut()) {
            Some(c) => c.wbuf = buf,
            None => self.discard = buf,
        }
    }

    fn timers(&mut self) {
        let now = Instant::now();
        for f in 0..self.firms.len() {
            if let Some((_, at)) = self.firms[f].deadman {
                if now >= at {
                    self.deadman_expired(f);
                }
            }
        }
        self.takeover_timers(now);
        for slot in 0..self.conns.len() {
            self.conn_timers(slot, now);
        }
    }

    fn write_conn(&mut self, slot: usize) {
        // The audit log never lags what a peer has seen: its lines for these
        // answers reach the file before the answers reach the socket.
        if self.conns[slot].as_ref().is_some_and(|c| c.unwritten() > 0) {
            self.audit.flush();
        }
        let Some(c) = self.conns[slot].as_mut() else {
            return;
        };
        while c.wpos < c.wbuf.len() {
            match io::Write::write(&mut c.stream, &c.wbuf[c.wpos..]) {
                Ok(0) => break,
                Ok(n) => {
                    c.wpos += n;
                    c.blocked = false;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    c.blocked = true;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.close(slot, &format!("write failed: {e}"));
                    return;
                }
            }
        }
        if c.wpos == c.wbuf.len() {
            c.wbuf.clear();
            c.wpos = 0;
            if let Some(reason) = c.closing.clone() {
                self.close(slot, &reason);
            }
        } else {
            // Written bytes are dropped once they are most of the buffer:
            // each byte is moved at most once on average.
            if c.wpos > c.wbuf.len() / 2 {
                c.wbuf.drain(..c.wpos);
                c.wpos = 0;
            }
            if c.unwritten() > MAX_UNREAD {
                self.close(slot, "slow consumer: 64 MiB unread");
            }
        }
    }
}

impl Conn {
    /// Bytes queued and not yet taken by the socket.
    fn unwritten(&self) -> usize {
        self.wbuf.len() - self.wpos
    }
}

fn pollfd(fd: i32, events: i16) -> libc::pollfd {
    libc::pollfd {
        fd,
        events,
        revents: 0,
    }
}

/// Unix time in ms.
pub fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Starts `cfg` on its own thread; returns the bound address and the join
/// handle. The thread serves until `stop` is set.
pub fn spawn(
    cfg: VenueConfig,
    stop: Arc<AtomicBool>,
) -> io::Result<(SocketAddr, std::thread::JoinHandle<()>)> {
    let mut server = VenueServer::bind(cfg)?;
    let addr = server.local_addr()?;
    let name = format!("ks-venue-{}", server.cfg.name);
    let join = std::thread::Builder::new()
        .name(name)
        .spawn(move || server.run(&stop))?;
    Ok((addr, join))
}
