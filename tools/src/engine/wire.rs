//! The reference engine's venues over the wire: a [`FixVenue`] per
//! `[[venues]]` entry with `connect`, logged on before the runtime starts
//! (start-up fails, naming the venue, when a venue does not answer), and
//! what the engine shows of its connection (the connections table of
//! `killswitch status`).
//!
//! The session's own behaviour (dead-man timer armed on every logon and
//! refreshed every quarter of its timeout, re-armed when it runs out,
//! cancel-on-disconnect asked in the Logon, graceful logout that cancels
//! first, reconnect with back-off) is [`FixVenue`]'s; the engine sets the
//! gateway to log every session out when it stops.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use killswitch::control::telemetry::ConnState;
use killswitch::order::{OrderId, ScopeIndex, Side};
use killswitch::venue::Venue;
use serde::{Deserialize, Serialize};

use super::config::VenueSection;
use crate::fix::client::{FixVenue, FixVenueConfig, FixVenueMonitor, LinkState};

/// The first address `text` (HOST:PORT) resolves to.
pub fn resolve(text: &str) -> Result<SocketAddr, String> {
    text.to_socket_addrs()
        .map_err(|e| e.to_string())?
        .next()
        .ok_or_else(|| format!("{text} resolves to no address"))
}

/// A venue over the wire, as the engine's supervisor sees it.
pub(super) struct Wire {
    pub name: String,
    pub addr: SocketAddr,
    pub comp_id: String,
    pub monitor: Arc<FixVenueMonitor>,
}

/// Connects and logs on to the venue of `v` (symbols: our instrument
/// indices and their names). The session is handed to the gateway after.
pub(super) fn connect(
    v: &VenueSection,
    engine: &str,
    symbols: Vec<(ScopeIndex, String)>,
    adopt: Vec<(OrderId, Side, ScopeIndex, i64, i64)>,
    takeover: bool,
) -> Result<(FixVenue, Wire), String> {
    let text = v.connect.as_deref().unwrap_or_default();
    let addr = resolve(text).map_err(|e| format!("venue {}: connect {text:?}: {e}", v.name))?;
    let comp_id = v.comp_id_for(engine);
    let mut cfg = FixVenueConfig::new(&v.name, addr, &comp_id, &v.name);
    cfg.heartbeat = Duration::from_secs(v.heartbeat_s.max(1));
    cfg.cancel_on_disconnect = v.cancel_on_disconnect;
    cfg.dead_man = (v.dead_man_ms > 0).then(|| Duration::from_millis(v.dead_man_ms));
    cfg.mass_cancel = v.mass_cancel;
    cfg.symbols = symbols.clone();
    cfg.takeover = takeover;
    let mut session = FixVenue::new(cfg);
    session.adopt(adopt);
    session
        .connect(Duration::from_millis(v.logon_timeout_ms))
        .map_err(|e| {
            format!(
                "{e}; is ks-venue running there with a venue named {:?}?",
                v.name
            )
        })?;
    if v.market_data {
        for (index, symbol) in &symbols {
            session
                .subscribe(*index)
                .map_err(|e| format!("venue {}: market data for {symbol}: {e}", v.name))?;
        }
    }
    let wire = Wire {
        name: v.name.clone(),
        addr,
        comp_id,
        monitor: session.monitor(),
    };
    Ok((session, wire))
}

impl Wire {
    /// Order entry's state for the connections table.
    pub fn order_entry(&self) -> ConnState {
        match self.monitor.link_state() {
            LinkState::Active => ConnState::Up,
            LinkState::Connecting | LinkState::LoggingOn => ConnState::Connecting,
            LinkState::Down => ConnState::Down,
            LinkState::LoggedOut => ConnState::Closed,
        }
    }

    /// Market data's state: none when not subscribed; up once a snapshot
    /// came on a live session.
    pub fn market_data(&self) -> ConnState {
        use std::sync::atomic::Ordering::Relaxed;
        if self.monitor.subscriptions.load(Relaxed) == 0 {
            return ConnState::None;
        }
        match self.order_entry() {
            ConnState::Up if self.monitor.market_data_snapshots.load(Relaxed) > 0 => ConnState::Up,
            ConnState::Up => ConnState::Connecting,
            other => other,
        }
    }

    /// Unix ns of the last bytes from the venue (heartbeats included); 0: none.
    pub fn last_heard_wall_ns(&self) -> u64 {
        self.monitor
            .last_received_ms
            .load(std::sync::atomic::Ordering::Relaxed)
            .saturating_mul(1_000_000)
    }

    /// The session's figures for the report.
    pub fn line(&self) -> WireLine {
        use std::sync::atomic::Ordering::Relaxed;
        let m = &self.monitor;
        WireLine {
            addr: self.addr.to_string(),
            comp_id: self.comp_id.clone(),
            logons: m.logons.load(Relaxed),
            disconnects: m.disconnects.load(Relaxed),
            ambiguous_writes: m.ambiguous_writes.load(Relaxed),
            rejects_received: m.rejects_received.load(Relaxed),
            dead_man_expiries: m.dead_man_expiries.load(Relaxed),
            market_data_snapshots: m.market_data_snapshots.load(Relaxed),
        }
    }
}

/// A venue over the wire at the end of the run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WireLine {
    /// The venue's address.
    pub addr: String,
    /// Our CompID there.
    pub comp_id: String,
    /// Logons (1 + reconnects).
    pub logons: u64,
    /// Connections lost.
    pub disconnects: u64,
    /// Writes that failed part-way (ambiguous sends).
    pub ambiguous_writes: u64,
    /// Session-level and business rejects received.
    pub rejects_received: u64,
    /// Dead-man expiries the venue reported.
    pub dead_man_expiries: u64,
    /// Top-of-book snapshots received.
    pub market_data_snapshots: u64,
}
