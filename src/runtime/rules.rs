//! The supervisor's rule duty: evaluate the automatic rules and the
//! execution throttle ([`crate::rules`]) every rule interval, record their
//! warnings, trip what they ask for (source `auto`), publish their gauges.

use super::Runtime;
use crate::clock::mono_ns;
use crate::control::{Source, TripRequest};
use crate::order::{ScopeIndex, QTY_SCALE};
use crate::rules::{publish_gauges, record_warning, Observation, RuleAction};

impl Runtime {
    /// One evaluation, if the rules are due. Reads the registry (one short
    /// lock for activity, one for positions) and the journal's cash (one
    /// short lock); never touches the order path.
    pub(super) fn rule_duties(&mut self) {
        let Some(book) = &self.rule_book else {
            return;
        };
        let now = mono_ns();
        if now < self.rules_due_ns {
            return;
        }
        self.rules_due_ns = now + book.config().interval.as_nanos().min(u64::MAX as u128) as u64;
        let obs = self.observe(now);
        let block = self.block.clone();
        let Some(book) = &mut self.rule_book else {
            return;
        };
        let actions = book.evaluate_named(&obs, &|k, i| block.name_at(k, i));
        let gauges = book.gauges();
        for a in actions {
            match a {
                RuleAction::Warn {
                    scope,
                    mode,
                    reason,
                    ..
                } => {
                    record_warning(&block, mode, scope, &reason);
                }
                RuleAction::Trip {
                    scope,
                    mode,
                    reason,
                    ..
                } => {
                    let named = scope.and_then(|(k, i)| block.name_at(k, i).map(|n| (k, n)));
                    match named {
                        Some(scope) => {
                            let req = TripRequest {
                                mode,
                                scopes: vec![scope],
                                source: Source::Auto,
                                reason: reason.clone(),
                            };
                            if self.tripper.trip(&req).is_err() {
                                // The scope could not be tripped (file
                                // lock, names full): fail safe, globally.
                                self.tripper.trip_global(mode, Source::Auto, &reason);
                            }
                        }
                        None => {
                            self.tripper.trip_global(mode, Source::Auto, &reason);
                        }
                    }
                }
            }
        }
        publish_gauges(&block, &gauges);
    }

    fn observe(&self, now_ns: u64) -> Observation {
        let (venues, strategies) = self.registry.activity();
        let sum = |f: fn(&crate::registry::ScopeActivity) -> u64| venues.iter().map(f).sum();
        let mut positions: Vec<(ScopeIndex, crate::order::Qty)> = Vec::new();
        for ((_, instrument, _), q) in self.registry.positions() {
            match positions.iter_mut().find(|(i, _)| *i == instrument) {
                Some((_, total)) => total.0 = total.0.saturating_add(q.0),
                None => positions.push((instrument, q)),
            }
        }
        Observation {
            now_ns,
            pnl: self.pnl(),
            orders_sent: sum(|a| a.sent),
            orders_acked: sum(|a| a.acked),
            orders_rejected: sum(|a| a.rejected),
            positions,
            venue_heartbeats: self.heartbeats.all(),
            strategy_fills: strategies
                .iter()
                .enumerate()
                .filter(|(_, a)| a.sent > 0 || a.fills > 0)
                .map(|(i, a)| (i as ScopeIndex, a.fills))
                .collect(),
            switch_clear: !self.block.state().is_active(),
        }
    }

    /// P&L in `Price` units: the journal's cash of every position plus its
    /// quantity at the instrument's reference price. `None` without a
    /// journal, or while a position has no reference price.
    fn pnl(&self) -> Option<i64> {
        let journal = self.journal.as_ref()?;
        let j = journal.lock().ok()?;
        let mut total: i128 = 0;
        for (k, p) in j.mirror.positions.iter() {
            let value = if p.qty.0 == 0 {
                p.cash
            } else {
                let mark = self.references.get(k.instrument)?;
                p.cash + p.qty.0 as i128 * mark.0 as i128
            };
            total += value;
        }
        Some((total / QTY_SCALE as i128).clamp(i64::MIN as i128, i64::MAX as i128) as i64)
    }
}
