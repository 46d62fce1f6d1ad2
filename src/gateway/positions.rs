//! Position reports and logouts asked of the venue sessions by the planned
//! shutdown (reconciliation, runbook step 7; disconnect, step 10). Only the
//! gateway thread holds the sessions, so the shutdown asks through the
//! strategies' ring and reads the answers here.
//!
//! The capture costs nothing while no report is pending: the gateway looks
//! at a session's new events only when that session has an unanswered
//! position request.

use std::sync::{Arc, Mutex};

use crate::order::{Qty, ScopeIndex};
use crate::venue::{VenueError, VenueEvent};

/// One venue's answer to a position request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PositionReport {
    /// Venue index.
    pub venue: ScopeIndex,
    /// Request written (and no error).
    pub requested: bool,
    /// (instrument, account, position) lines so far.
    pub rows: Vec<(ScopeIndex, ScopeIndex, Qty)>,
    /// `PositionsEnd` arrived: the report is complete.
    pub complete: bool,
    /// Why no report is coming (unsupported, disconnected).
    pub error: Option<String>,
    /// Logged out (step 10).
    pub logged_out: bool,
}

/// The reports of every session, shared by the gateway thread (writer) and
/// the shutdown (reader).
#[derive(Clone, Debug, Default)]
pub struct PositionReports {
    inner: Arc<Mutex<Vec<PositionReport>>>,
}

impl PositionReports {
    /// A copy of every session's report.
    pub fn snapshot(&self) -> Vec<PositionReport> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(crate) fn start(&self, venue: ScopeIndex, written: Result<(), VenueError>) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let r = match g.iter_mut().find(|r| r.venue == venue) {
            Some(r) => r,
            None => {
                g.push(PositionReport {
                    venue,
                    ..PositionReport::default()
                });
                g.last_mut().expect("just pushed")
            }
        };
        r.rows.clear();
        r.complete = false;
        match written {
            Ok(()) => {
                r.requested = true;
                r.error = None;
            }
            Err(e) => {
                r.requested = false;
                r.error = Some(e.to_string());
            }
        }
    }

    /// Takes the position lines of `events` (one session's new events);
    /// returns true when the report completed.
    pub(crate) fn capture(&self, venue: ScopeIndex, events: &[VenueEvent]) -> bool {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let Some(r) = g.iter_mut().find(|r| r.venue == venue) else {
            return false;
        };
        for e in events {
            match *e {
                VenueEvent::Position {
                    instrument,
                    account,
                    qty,
                } => r.rows.push((instrument, account, qty)),
                VenueEvent::PositionsEnd => r.complete = true,
                _ => {}
            }
        }
        r.complete
    }

    pub(crate) fn logged_out(&self, venue: ScopeIndex, result: Result<(), VenueError>) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(r) = g.iter_mut().find(|r| r.venue == venue) {
            r.logged_out = result.is_ok();
            if let Err(e) = result {
                r.error = Some(format!("logout: {e}"));
            }
        } else {
            g.push(PositionReport {
                venue,
                logged_out: result.is_ok(),
                error: result.err().map(|e| format!("logout: {e}")),
                ..PositionReport::default()
            });
        }
    }
}
