//! The connection under a [`FixVenue`]: non-blocking connect, logon,
//! reads, writes, timers, loss and reconnect with back-off.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

use super::FixVenue;
use crate::fix::messages;
use crate::fix::session::TimerAction;
use killswitch::order::OrderId;
use killswitch::venue::VenueEvent;

/// How long a connect or a logon may take before we try again.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Where the connection is.
pub(super) enum Link {
    /// No connection; the next attempt is due at `retry_at`.
    Down {
        retry_at: Instant,
        backoff: Duration,
    },
    /// A non-blocking connect in progress.
    Connecting { socket: Socket, since: Instant },
    /// Connected, our Logon sent, waiting for the venue's.
    LoggingOn { stream: TcpStream, since: Instant },
    /// Logged on.
    Active { stream: TcpStream },
    /// Logged out (or gave up): no more connections.
    Closed,
}

impl Link {
    pub(super) fn disconnected() -> Link {
        Link::Down {
            retry_at: Instant::now(),
            backoff: Duration::ZERO,
        }
    }

    pub(super) fn is_active(&self) -> bool {
        matches!(self, Link::Active { .. })
    }

    /// Writes are possible (a Logon goes out while logging on).
    pub(super) fn can_write(&self) -> bool {
        matches!(self, Link::Active { .. } | Link::LoggingOn { .. })
    }

    pub(super) fn stream(&self) -> Option<&TcpStream> {
        match self {
            Link::Active { stream } | Link::LoggingOn { stream, .. } => Some(stream),
            _ => None,
        }
    }

    pub(super) fn close_for_good(&mut self) {
        *self = Link::Closed;
    }

    fn code(&self) -> u64 {
        match self {
            Link::Down { .. } => 0,
            Link::Connecting { .. } => 1,
            Link::LoggingOn { .. } => 2,
            Link::Active { .. } => 3,
            Link::Closed => 4,
        }
    }
}

/// Polls one fd for `events` without waiting.
fn ready(fd: i32, events: i16) -> i16 {
    let mut p = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    // SAFETY: one valid pollfd on the stack, timeout 0: poll returns at once
    // and writes only `revents`.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    if n > 0 {
        p.revents
    } else {
        0
    }
}

impl FixVenue {
    /// One step of everything that is not a request: connect, read and
    /// handle what arrived, timers, write what is queued.
    pub(super) fn drive(&mut self) {
        self.step_link();
        if self.link.stream().is_some() {
            self.read_available();
        }
        if self.link.stream().is_some() {
            self.session_timers();
        }
        if !self.wbuf.is_empty() {
            let _ = self.flush();
        }
        self.monitor
            .state
            .store(self.link.code(), Ordering::Relaxed);
    }

    fn step_link(&mut self) {
        let now = Instant::now();
        match &self.link {
            Link::Down { retry_at, .. } if now >= *retry_at => self.start_connect(),
            Link::Connecting { socket, since } => {
                let r = ready(socket.as_raw_fd(), libc::POLLOUT);
                if r != 0 {
                    match socket.take_error() {
                        Ok(None) if r & (libc::POLLERR | libc::POLLHUP) == 0 => {
                            if let Link::Connecting { socket, .. } =
                                std::mem::replace(&mut self.link, Link::Closed)
                            {
                                self.connected(TcpStream::from(socket));
                            }
                        }
                        Ok(Some(e)) | Err(e) => self.lost(&format!("connect: {e}")),
                        Ok(None) => self.lost("connect failed"),
                    }
                } else if now.duration_since(*since) > CONNECT_TIMEOUT {
                    self.lost("connect timed out");
                }
            }
            Link::LoggingOn { since, .. } if now.duration_since(*since) > CONNECT_TIMEOUT => {
                self.lost("no Logon answer");
            }
            _ => {}
        }
    }

    fn start_connect(&mut self) {
        let addr = self.cfg.addr;
        let attempt = || -> io::Result<(Socket, bool)> {
            let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
            socket.set_nonblocking(true)?;
            socket.set_nodelay(true)?;
            match socket.connect(&addr.into()) {
                Ok(()) => Ok((socket, true)),
                Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => Ok((socket, false)),
                Err(e) => Err(e),
            }
        };
        match attempt() {
            Ok((socket, true)) => self.connected(TcpStream::from(socket)),
            Ok((socket, false)) => {
                self.link = Link::Connecting {
                    socket,
                    since: Instant::now(),
                }
            }
            Err(e) => self.lost(&format!("connect: {e}")),
        }
    }

    fn connected(&mut self, stream: TcpStream) {
        self.rbuf.clear();
        self.wbuf.clear();
        self.session.on_connect();
        self.link = Link::LoggingOn {
            stream,
            since: Instant::now(),
        };
        let reset = self.reset_next_logon;
        if reset {
            self.session.reset();
        }
        let mut body = messages::logon(
            self.session.heartbeat.as_secs(),
            reset,
            self.cfg.cancel_on_disconnect,
        );
        if self.cfg.takeover && !self.ever_logged_on {
            body.str(crate::fix::TAG_BACKUP_TAKEOVER, "Y");
        }
        self.send_admin(&body);
    }

    /// The venue's Logon arrived: the session is up.
    pub(super) fn logged_on(&mut self) {
        let Link::LoggingOn { .. } = self.link else {
            return;
        };
        if let Link::LoggingOn { stream, .. } = std::mem::replace(&mut self.link, Link::Closed) {
            self.link = Link::Active { stream };
        }
        self.reset_next_logon = false;
        self.monitor.logons.fetch_add(1, Ordering::Relaxed);
        if let Some(t) = self.cfg.dead_man {
            self.arm_dead_man(t);
        }
        if self.cfg.takeover && !self.ever_logged_on {
            // The takeover: name every order we adopt (the venue cancels
            // the others at the end of its grace period); the answers
            // bring what happened to them since the journal's last record.
            let ids: Vec<OrderId> = self.orders.keys().copied().collect();
            for id in ids {
                if killswitch::venue::Venue::request_order_status(self, id).is_ok() {
                    self.status_asked.insert(id);
                }
            }
        }
        if self.ever_logged_on {
            self.events.push(VenueEvent::Reconnected);
            // A venue that restarted forgot them; one that did not takes
            // the repeat as a no-op.
            for i in self.subscribed.clone() {
                let _ = self.write_subscription(i);
            }
        }
        self.ever_logged_on = true;
    }

    fn arm_dead_man(&mut self, timeout: Duration) {
        let _ = self.write(
            &messages::cancel_all_after(timeout.as_millis() as u64),
            true,
        );
        self.dead_man_refresh = Some(Instant::now() + timeout / 4);
    }

    /// The connection is gone (or never came): drop it, say so once, and
    /// schedule the next attempt.
    pub(super) fn lost(&mut self, why: &str) {
        self.last_error = why.to_string();
        let was_active = self.link.is_active();
        let backoff = match &self.link {
            Link::Down { backoff, .. } => *backoff,
            _ => Duration::ZERO,
        };
        if was_active {
            self.monitor.disconnects.fetch_add(1, Ordering::Relaxed);
            self.events.push(VenueEvent::Disconnected);
        }
        self.rbuf.clear();
        self.wbuf.clear();
        self.dead_man_refresh = None;
        self.positions_left = None;
        if self.logout_requested {
            self.link = Link::Closed;
            return;
        }
        let next = if was_active || backoff.is_zero() {
            self.cfg.reconnect_min
        } else {
            (backoff * 2).min(self.cfg.reconnect_max)
        };
        self.link = Link::Down {
            retry_at: Instant::now() + next,
            backoff: next,
        };
    }

    fn read_available(&mut self) {
        // The read buffer is kept (zeroing 64 KiB on every poll would cost
        // more than the read itself).
        let mut chunk = std::mem::take(&mut self.chunk);
        chunk.resize(64 * 1024, 0);
        self.read_into(&mut chunk);
        self.chunk = chunk;
    }

    fn read_into(&mut self, chunk: &mut [u8]) {
        loop {
            let Some(mut stream) = self.link.stream() else {
                return;
            };
            match stream.read(chunk) {
                Ok(0) => {
                    self.handle_frames();
                    let closed = if self.logout_requested {
                        "logged out"
                    } else {
                        "venue closed the connection"
                    };
                    self.lost(closed);
                    return;
                }
                Ok(n) => {
                    self.monitor
                        .last_received_ms
                        .store(crate::venue_server::wall_ms(), Ordering::Relaxed);
                    self.rbuf.extend_from_slice(&chunk[..n]);
                    self.handle_frames();
                    if n < chunk.len() {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.lost(&format!("read: {e}"));
                    return;
                }
            }
        }
    }

    fn session_timers(&mut self) {
        let now = Instant::now();
        if !self.link.is_active() {
            return;
        }
        match self.session.timers(now) {
            TimerAction::Idle => {}
            TimerAction::Heartbeat => self.send_admin(&messages::heartbeat(None)),
            TimerAction::TestRequest => self.send_admin(&messages::test_request("gateway")),
            TimerAction::Dead => self.lost("venue silent: no answer to TestRequest"),
        }
        if self
            .logout_after
            .as_ref()
            .is_some_and(|(_, since)| now.duration_since(*since) > CONNECT_TIMEOUT)
        {
            // No answer to the mass cancel: log out anyway (the venue's
            // cancel-on-disconnect or dead-man timer is the backstop).
            let _ = self.finish_logout();
        }
        if let (Some(at), Some(t)) = (self.dead_man_refresh, self.cfg.dead_man) {
            if now >= at && !self.logout_requested {
                self.arm_dead_man(t);
            }
        }
    }

    /// Writes what the socket takes now. `Err(n)`: the socket failed after
    /// `n` bytes of the buffer went out; the connection is dropped.
    pub(super) fn flush(&mut self) -> Result<(), usize> {
        let mut written = 0;
        let failure = loop {
            if written == self.wbuf.len() {
                break None;
            }
            let Some(mut stream) = self.link.stream() else {
                break Some("not connected".to_string());
            };
            match stream.write(&self.wbuf[written..]) {
                Ok(0) => break Some("write returned 0".into()),
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break None,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Some(format!("write: {e}")),
            }
        };
        self.wbuf.drain(..written);
        match failure {
            None => Ok(()),
            Some(why) => {
                self.lost(&why);
                Err(written)
            }
        }
    }
}
