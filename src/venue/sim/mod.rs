//! A simulated exchange session: real price-time-priority books, other
//! participants trading against us, and fault knobs.
//!
//! * One [`book::Book`] per instrument. Our orders match against resting
//!   liquidity (ours or other participants') at the resting price, and rest
//!   what is left; fills and partial fills come back as `Fill` events with
//!   the venue's leaves quantity.
//! * A seeded synthetic flow ([`flow::FlowConfig`]) of other participants'
//!   orders arrives as wall time passes (advanced at every call into the
//!   venue): passive orders around a drifting mid, some aggressive ones
//!   that take our resting orders. Orders can also be injected through the
//!   [`SimHandle`] for deterministic scenarios.
//! * Every request the venue accepted is logged with a `CLOCK_MONOTONIC`
//!   timestamp and a sequence number ([`SimHandle::log`]), so a test proves
//!   what reached the exchange and when.
//! * Answers are delivered in order (one session, like one TCP stream) after
//!   the configured latency. Fault knobs: latency, reject rate, dropped
//!   cancel acks, ignored cancels, disconnect with optional
//!   cancel-on-disconnect (answers are held while disconnected and
//!   delivered after the reconnect, like a FIX resend).
//!
//! The exchange ([`exchange::Exchange`]: books, flow, knobs) serves any
//! number of sessions; [`SimVenue`] is one in-process session of an
//! exchange of its own, behind [`Venue`]. The `ks-venue` server of the
//! tools package puts the same exchange behind FIX sessions on loopback
//! TCP; nothing here does networking.

pub mod book;
pub mod exchange;
pub mod flow;
mod handle;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::clock::mono_ns;
use crate::order::{OrderId, Price, ScopeIndex};
use crate::venue::{CancelRejectReason, MassCancelScope, NewOrder, Venue, VenueError, VenueEvent};
pub use exchange::{Answer, CancelOutcome, Exchange, OrderFate, SessionId};
pub use flow::{FlowConfig, Rng};
use handle::Shared;
pub use handle::{LogEntry, SimHandle, SimStats, WireMessage};

/// An instrument traded on the simulated venue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SimInstrument {
    /// Its scope index (the `instrument` tag of our orders).
    pub index: ScopeIndex,
    /// Starting mid price.
    pub mid: Price,
    /// Tick size.
    pub tick: Price,
}

/// Configuration of a simulated venue.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Name for reports.
    pub name: String,
    /// Instruments listed.
    pub instruments: Vec<SimInstrument>,
    /// Seed of the synthetic flow and of the fault dice.
    pub seed: u64,
    /// Synthetic flow.
    pub flow: FlowConfig,
    /// Whether the venue offers mass cancel.
    pub mass_cancel: bool,
    /// Initial answer latency.
    pub event_latency: Duration,
    /// Initial reject rate, ppm.
    pub reject_ppm: u32,
    /// Initial cancel-on-disconnect setting.
    pub cancel_on_disconnect: bool,
}

impl SimConfig {
    /// A venue listing `instruments` instruments (indices 0..n, mid 100,
    /// tick 0.01), default flow, mass cancel on, no latency, no rejects.
    pub fn new(name: &str, instruments: u16, seed: u64) -> SimConfig {
        SimConfig {
            name: name.to_string(),
            instruments: (0..instruments)
                .map(|i| SimInstrument {
                    index: i,
                    mid: Price::from_units(100),
                    tick: Price(crate::order::PRICE_SCALE / 100),
                })
                .collect(),
            seed,
            flow: FlowConfig::default(),
            mass_cancel: true,
            event_latency: Duration::ZERO,
            reject_ppm: 0,
            cancel_on_disconnect: false,
        }
    }
}

/// The simulated venue session; give it to the gateway, keep the [`SimHandle`].
///
/// One in-process session of an [`Exchange`] of its own.
pub struct SimVenue {
    name: String,
    exchange: Exchange,
    session: SessionId,
    mass_cancel: bool,
    urgent: Vec<VenueEvent>,
    connected: bool,
    logged_out: bool,
    log_seq: u64,
    answers: Vec<Answer>,
    shared: Arc<Shared>,
}

/// The in-process form of an order-status answer: `Acked` for a working
/// order, `Canceled`, `Rejected`, `CancelRejected { UnknownOrder }` for an
/// order never seen; nothing for a filled one (its fills were queued, in
/// order, ahead of the answer).
fn status_event(id: OrderId, fate: Option<OrderFate>) -> Option<VenueEvent> {
    match fate {
        Some(OrderFate::Working) => Some(VenueEvent::Acked { id }),
        Some(OrderFate::Canceled) => Some(VenueEvent::Canceled { id }),
        Some(OrderFate::Rejected(reason)) => Some(VenueEvent::Rejected { id, reason }),
        Some(OrderFate::Filled) => None,
        None => Some(VenueEvent::CancelRejected {
            id,
            reason: CancelRejectReason::UnknownOrder,
        }),
    }
}

impl SimVenue {
    /// A venue and the handle that controls it.
    pub fn new(cfg: SimConfig) -> (SimVenue, SimHandle) {
        let (mut exchange, handle) = Exchange::new(&cfg);
        let session = exchange.open_session();
        let shared = exchange.shared().clone();
        let venue = SimVenue {
            name: cfg.name,
            exchange,
            session,
            mass_cancel: cfg.mass_cancel,
            urgent: Vec::new(),
            connected: true,
            logged_out: false,
            log_seq: 0,
            answers: Vec::new(),
            shared,
        };
        (venue, handle)
    }

    /// Checks the session before a request: applies a disconnect or a
    /// reconnect asked through the handle, then refuses if down.
    fn session(&mut self) -> Result<(), VenueError> {
        // A stuck session (fault knob): the write blocks the caller, as a
        // full TCP send buffer would, until the knob is cleared.
        while flag(&self.shared.hang_writes) {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        self.sync_connection();
        if self.logged_out {
            Err(VenueError::LoggedOut)
        } else if !self.connected {
            Err(VenueError::Disconnected)
        } else {
            Ok(())
        }
    }

    fn sync_connection(&mut self) {
        let down = self.shared.disconnected.load(Ordering::Acquire);
        if down && self.connected {
            self.connected = false;
            self.urgent.push(VenueEvent::Disconnected);
            if self.shared.cancel_on_disconnect.load(Ordering::Relaxed) {
                let n = self.exchange.cancel_all(self.session).len() as u64;
                self.shared
                    .cancelled_on_disconnect
                    .fetch_add(n, Ordering::Relaxed);
            }
        } else if !down && !self.connected {
            self.connected = true;
            self.urgent.push(VenueEvent::Reconnected);
        }
    }

    fn log(&mut self, msg: WireMessage) {
        let entry = LogEntry {
            seq: self.log_seq,
            mono_ns: mono_ns(),
            msg,
        };
        self.log_seq += 1;
        self.shared
            .log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(entry);
    }
}

fn flag(b: &AtomicBool) -> bool {
    b.load(Ordering::Relaxed)
}

impl Venue for SimVenue {
    fn name(&self) -> &str {
        &self.name
    }

    fn send(&mut self, order: &NewOrder) -> Result<(), VenueError> {
        self.session()?;
        self.log(WireMessage::New(*order));
        self.exchange.new_order(self.session, order);
        Ok(())
    }

    fn cancel(&mut self, id: OrderId) -> Result<(), VenueError> {
        self.session()?;
        self.log(WireMessage::Cancel(id));
        self.exchange.cancel(self.session, id);
        Ok(())
    }

    fn supports_mass_cancel(&self) -> bool {
        self.mass_cancel
    }

    fn mass_cancel(&mut self, scope: MassCancelScope) -> Result<(), VenueError> {
        if !self.mass_cancel {
            return Err(VenueError::Unsupported("mass cancel"));
        }
        self.session()?;
        self.log(WireMessage::MassCancel(scope));
        match self.exchange.mass_cancel(self.session, scope) {
            Some(_) => Ok(()),
            None => Err(VenueError::Unsupported("mass cancel")),
        }
    }

    fn request_positions(&mut self) -> Result<(), VenueError> {
        self.session()?;
        self.log(WireMessage::PositionRequest);
        self.exchange.positions(self.session);
        Ok(())
    }

    fn request_order_status(&mut self, id: OrderId) -> Result<(), VenueError> {
        self.session()?;
        self.log(WireMessage::OrderStatus(id));
        self.exchange.order_status(self.session, id);
        Ok(())
    }

    fn subscribe(&mut self, instrument: ScopeIndex) -> Result<(), VenueError> {
        self.session()?;
        self.log(WireMessage::Subscribe(instrument));
        self.exchange.subscribe(self.session, instrument);
        Ok(())
    }

    fn unsubscribe(&mut self, instrument: ScopeIndex) -> Result<(), VenueError> {
        self.session()?;
        self.log(WireMessage::Unsubscribe(instrument));
        self.exchange.unsubscribe(self.session, instrument);
        Ok(())
    }

    fn logout(&mut self) -> Result<(), VenueError> {
        self.session()?;
        self.log(WireMessage::Logout);
        self.logged_out = true;
        Ok(())
    }

    fn poll(&mut self, out: &mut Vec<VenueEvent>) {
        self.sync_connection();
        out.append(&mut self.urgent);
        if self.logged_out {
            return;
        }
        self.exchange.run(mono_ns());
        if !self.connected {
            return;
        }
        // Answers produced above are due now too when there is no latency.
        let mut answers = std::mem::take(&mut self.answers);
        self.exchange
            .take_due(self.session, mono_ns(), &mut answers);
        out.extend(answers.drain(..).filter_map(|a| match a {
            Answer::Event(ev) => Some(ev),
            Answer::Status { id, fate } => status_event(id, fate),
        }));
        self.answers = answers;
    }
}

#[cfg(test)]
mod tests;
