//! Final position reconciliation (runbook step 7): every venue's positions
//! (as answered to [`Venue::request_positions`](crate::venue::Venue::request_positions))
//! against the engine's internal ones, per instrument and account.
//!
//! The comparison is by (venue, instrument, account): the internal
//! position on a venue is what the registry applied from that venue's
//! fills; the venue's own report must agree. A venue that did not answer
//! in time (or has no position requests) is reported as such: its rows
//! are "not checked", which is a finding too.

use crate::order::{Qty, ScopeIndex};

/// One venue's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VenueAnswer {
    /// The full report: (instrument, account, position).
    Positions(Vec<(ScopeIndex, ScopeIndex, Qty)>),
    /// No complete report (the text says why: unsupported, timed out).
    NoAnswer(String),
}

/// Status of one row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "kebab-case"))]
pub enum RowStatus {
    /// Internal and venue agree.
    Ok,
    /// They differ.
    Mismatch,
    /// The venue gave no report.
    NotChecked,
}

impl RowStatus {
    /// The runbook's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            RowStatus::Ok => "OK",
            RowStatus::Mismatch => "MISMATCH",
            RowStatus::NotChecked => "NOT CHECKED",
        }
    }
}

/// One row of the reconciliation table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReconcileRow {
    /// Venue index.
    pub venue: ScopeIndex,
    /// Instrument index.
    pub instrument: ScopeIndex,
    /// Account index.
    pub account: ScopeIndex,
    /// The engine's position.
    pub internal: Qty,
    /// The venue's (`None` when not checked).
    pub at_venue: Option<Qty>,
    /// Verdict.
    pub status: RowStatus,
}

/// Compares `internal` ((venue, instrument, account) -> qty, flat ones may
/// be omitted) with each venue's answer. Rows are sorted by key; a key
/// flat on both sides is left out.
pub fn reconcile(
    internal: &[((ScopeIndex, ScopeIndex, ScopeIndex), Qty)],
    venues: &[(ScopeIndex, VenueAnswer)],
) -> Vec<ReconcileRow> {
    let mut keys: Vec<(ScopeIndex, ScopeIndex, ScopeIndex)> =
        internal.iter().map(|(k, _)| *k).collect();
    for (v, a) in venues {
        if let VenueAnswer::Positions(rows) = a {
            keys.extend(rows.iter().map(|(i, acc, _)| (*v, *i, *acc)));
        }
    }
    keys.sort_unstable();
    keys.dedup();
    let mut out = Vec::with_capacity(keys.len());
    for key @ (v, i, a) in keys {
        let int = internal
            .iter()
            .filter(|(k, _)| *k == key)
            .map(|(_, q)| q.0)
            .sum::<i64>();
        let (at_venue, status) = match venues.iter().find(|(vi, _)| *vi == v).map(|(_, a)| a) {
            Some(VenueAnswer::Positions(rows)) => {
                let q = rows
                    .iter()
                    .filter(|(ri, ra, _)| *ri == i && *ra == a)
                    .map(|(_, _, q)| q.0)
                    .sum::<i64>();
                (
                    Some(Qty(q)),
                    if q == int {
                        RowStatus::Ok
                    } else {
                        RowStatus::Mismatch
                    },
                )
            }
            _ => (None, RowStatus::NotChecked),
        };
        if int == 0 && at_venue.is_some_and(|q| q.0 == 0) {
            continue;
        }
        out.push(ReconcileRow {
            venue: v,
            instrument: i,
            account: a,
            internal: Qty(int),
            at_venue,
            status,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_agree_differ_or_are_not_checked() {
        let internal = [
            ((0, 1, 0), Qty::from_lots(5)),
            ((0, 2, 0), Qty::from_lots(-3)),
            ((1, 1, 0), Qty::from_lots(2)),
        ];
        let venues = [
            (
                0,
                VenueAnswer::Positions(vec![
                    (1, 0, Qty::from_lots(5)),
                    (2, 0, Qty::from_lots(-2)),
                    (3, 0, Qty::ZERO),
                ]),
            ),
            (1, VenueAnswer::NoAnswer("timed out".into())),
        ];
        let rows = reconcile(&internal, &venues);
        let got: Vec<_> = rows
            .iter()
            .map(|r| (r.venue, r.instrument, r.status))
            .collect();
        assert_eq!(
            got,
            [
                (0, 1, RowStatus::Ok),
                (0, 2, RowStatus::Mismatch),
                (1, 1, RowStatus::NotChecked)
            ]
        );
        // A position only the venue knows about is a mismatch too.
        let rows = reconcile(
            &[],
            &[(0, VenueAnswer::Positions(vec![(7, 0, Qty::from_lots(1))]))],
        );
        assert_eq!(rows[0].status, RowStatus::Mismatch);
        assert_eq!(rows[0].internal, Qty::ZERO);
    }
}
