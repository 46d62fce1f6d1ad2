//! Session takeover by a designated backup (`8014=Y`), as some venues offer
//! for a firm's backup session: the backup engine of a rolling restart
//! logs on as the same firm identity (`SenderCompID`) and adopts the
//! session's resting orders instead of seeing them cancelled.
//!
//! * **Takeover logon**: a Logon with `8014=Y` for a session that exists
//!   (connected or not). A connection still up is sent a Logout ("taken
//!   over") and closed **without** cancel-on-disconnect; the backup's
//!   connection becomes the session's. Sequence numbers start again at 1
//!   both ways (the backup is another process: it cannot know them). The
//!   Logon answer carries `8014=Y`.
//! * **Adoption**: during the grace period (`--takeover-grace-ms`) every
//!   order the backup names, by an OrderStatusRequest (35=H, tag 11) or a
//!   cancel (35=F, tag 41), is adopted. When the grace period ends, the
//!   orders that rested at the takeover and were not adopted are cancelled
//!   as cancel-on-disconnect would have, reported to the backup, and logged
//!   as `takeover-grace-expired` (the backup's own new orders are its own).
//! * **Held disconnect**: a Logout from the client with `8014=Y` says a
//!   backup will take over: the connection's end does not cancel the
//!   session's orders at once; if no takeover logon comes within the grace
//!   period, they are cancelled then (`cancel-on-disconnect`, detail "after
//!   the takeover grace period").
//!
//! A grace period of 0 turns takeovers off: a takeover logon is refused.
//! Without `8014`, nothing changes: a second logon for a session that is
//! up is refused, and a lost connection cancels at once.

use std::collections::HashSet;
use std::time::Instant;

use killswitch::order::OrderId;

use super::VenueServer;
use crate::fix::codec::Msg;

/// A takeover in progress on one session.
#[derive(Debug)]
pub(super) enum Takeover {
    /// The client logged out announcing a backup; its orders are held
    /// (not cancelled on disconnect) until `until`.
    Held {
        /// End of the grace period.
        until: Instant,
    },
    /// The backup logged on; it adopts orders until `until`.
    Adopting {
        /// End of the grace period.
        until: Instant,
        /// The session's orders resting when the backup took over: the
        /// ones it may adopt (its own new orders are its own).
        inherited: HashSet<OrderId>,
        /// Of those, the ones it has named.
        adopted: HashSet<OrderId>,
    },
}

impl Takeover {
    fn until(&self) -> Instant {
        match self {
            Takeover::Held { until } | Takeover::Adopting { until, .. } => *until,
        }
    }
}

impl VenueServer {
    /// A Logout with `8014=Y` on session `f`: hold its orders past the
    /// connection's end for the grace period. False when takeovers are off.
    pub(super) fn hold_for_backup(&mut self, f: usize) -> bool {
        if self.cfg.takeover_grace.is_zero() {
            return false;
        }
        let until = Instant::now() + self.cfg.takeover_grace;
        self.end_adoption(f, "ended early: the backup hands over in turn");
        self.firms[f].takeover = Some(Takeover::Held { until });
        let comp = self.firms[f].comp_id.clone();
        self.event(
            &comp,
            "takeover-hold",
            None,
            Some(format!(
                "a designated backup will take over: cancel-on-disconnect held for {} ms",
                self.cfg.takeover_grace.as_millis()
            )),
        );
        true
    }

    /// True while session `f`'s orders must survive its connection's end.
    pub(super) fn held_for_backup(&self, f: usize) -> bool {
        self.firms[f].takeover.is_some()
    }

    /// The takeover logon on connection `slot` for session `f` (already
    /// found by its CompID): closes a connection still up without
    /// cancelling, starts the grace period. `Err(reason)` refuses it.
    pub(super) fn take_over(&mut self, slot: usize, f: usize) -> Result<(), String> {
        if self.cfg.takeover_grace.is_zero() {
            return Err(
                "designated backup takeover (8014=Y) is not offered by this venue".to_string(),
            );
        }
        let until = Instant::now() + self.cfg.takeover_grace;
        self.end_adoption(f, "ended early: another takeover");
        let peer = self.conns[slot]
            .as_ref()
            .map(|c| c.peer.to_string())
            .unwrap_or_default();
        // Set before the old connection closes: its end must not cancel.
        let inherited = self
            .exchange
            .resting_orders(self.firms[f].sid)
            .into_iter()
            .collect();
        self.firms[f].takeover = Some(Takeover::Adopting {
            until,
            inherited,
            adopted: HashSet::new(),
        });
        let old = self.firms[f].conn;
        let old_peer = old
            .and_then(|o| self.conns[o].as_ref())
            .map(|c| c.peer.to_string());
        if let Some(o) = old {
            let reason = format!("session taken over by a designated backup ({peer})");
            self.send(f, crate::fix::messages::logout(&reason), false);
            self.close(o, &reason);
        }
        // The sequence numbers start again in `logon`, which called this.
        let comp = self.firms[f].comp_id.clone();
        let resting = self.exchange.resting_count(self.firms[f].sid) as u64;
        self.event(
            &comp,
            "takeover",
            Some(resting),
            Some(format!(
                "from {} to {peer}; grace {} ms to adopt {resting} resting order(s)",
                old_peer.as_deref().unwrap_or("no connection"),
                self.cfg.takeover_grace.as_millis()
            )),
        );
        Ok(())
    }

    /// Notes the orders an application message of session `f` names, while
    /// its backup adopts.
    pub(super) fn note_adoption(&mut self, f: usize, msg: &Msg<'_>) {
        let firm = &mut self.firms[f];
        let Some(Takeover::Adopting {
            inherited, adopted, ..
        }) = firm.takeover.as_mut()
        else {
            return;
        };
        let tag = match msg.msg_type() {
            b"H" => 11,
            b"F" => 41,
            _ => return,
        };
        if let Some(id) = msg
            .str(tag)
            .and_then(|c| firm.orders.by_cl_ord_id.get(c))
            .filter(|id| inherited.contains(id))
        {
            adopted.insert(*id);
        }
    }

    /// Ends the grace periods that are over: orders not adopted (or held
    /// for a backup that never came) are cancelled.
    pub(super) fn takeover_timers(&mut self, now: Instant) {
        for f in 0..self.firms.len() {
            if self.firms[f]
                .takeover
                .as_ref()
                .is_none_or(|t| now < t.until())
            {
                continue;
            }
            let why = match self.firms[f].takeover {
                Some(Takeover::Adopting { .. }) => {
                    self.end_adoption(f, "grace period over");
                    "the backup's connection ended"
                }
                Some(Takeover::Held { .. }) => {
                    self.firms[f].takeover = None;
                    "no backup logged on"
                }
                None => continue,
            };
            // No connection now (the backup's ended during the grace
            // period, or no backup came): the orders get the
            // cancel-on-disconnect they were spared.
            if self.firms[f].conn.is_none() && self.firms[f].cancel_on_disconnect {
                let cancelled = self.cancel_resting(f, "cancel-on-disconnect");
                let comp = self.firms[f].comp_id.clone();
                self.event(
                    &comp,
                    "cancel-on-disconnect",
                    Some(cancelled),
                    Some(format!("after the takeover grace period: {why}")),
                );
            }
        }
    }

    /// Ends session `f`'s adoption, if one is under way: the orders that
    /// rested at its takeover and were not adopted are cancelled, and
    /// `takeover-grace-expired` logged (`why` in its detail). Called when
    /// the grace period ends, or earlier when a hand-over or a takeover
    /// starts the next one.
    fn end_adoption(&mut self, f: usize, why: &str) {
        let Some(Takeover::Adopting {
            inherited, adopted, ..
        }) = self.firms[f].takeover.take()
        else {
            return;
        };
        let sid = self.firms[f].sid;
        let comp = self.firms[f].comp_id.clone();
        let orphans: Vec<OrderId> = self
            .exchange
            .resting_orders(sid)
            .into_iter()
            .filter(|id| inherited.contains(id) && !adopted.contains(id))
            .collect();
        for &id in &orphans {
            self.exchange.cancel(sid, id);
        }
        self.firms[f]
            .orders
            .mark_cause(&orphans, "takeover grace expired: not adopted");
        self.event(
            &comp,
            "takeover-grace-expired",
            Some(orphans.len() as u64),
            Some(format!("{} order(s) adopted; {why}", adopted.len())),
        );
    }
}
