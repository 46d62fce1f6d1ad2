//! Glue between the registry and the journal, owned by the runtime: every
//! order event the registry applies is appended to the journal, trips and
//! resets are journaled from the control block's audit ring, and the
//! drain's quick checkpoint (and the snapshot policy's) is a snapshot of
//! the journal's own mirror of the trading state.
//!
//! Nothing here is public: an engine never builds the journal state or
//! sets where the audit ring was last read; the runtime does, from the
//! journal it rebuilt at start-up.
//!
//! Lock order: the registry calls the sink with its lock held and the sink
//! then takes the journal's; the checkpoint hook and the supervisor take
//! only the journal's.

use std::sync::{Arc, Mutex};

use crate::clock::mono_ns;
use crate::control::{ControlBlock, Mode, Source};
use crate::drain::{CheckpointHook, DrainOutcome};
use crate::journal::record::{OrderEventRecord, SwitchRecord};
use crate::journal::{JournalError, JournalWriter, TradingState};
use crate::order::OrderEvent;
use crate::registry::{EventSink, OrderRecord, RecordedEvent};

/// The journal writer and the state its records add up to, behind one lock
/// shared by the registry's sink, the drain's checkpoint and the supervisor.
pub(crate) struct JournalState {
    pub(crate) writer: JournalWriter,
    /// Open orders, positions and last trip as replaying this journal gives
    /// them: a quick checkpoint snapshots exactly this, so a recovery that
    /// replays the events agrees with the snapshot by construction, and any
    /// disagreement is a real bug that recovery reports.
    pub(crate) mirror: TradingState,
    /// Highest audit ticket already journaled (`None`: none yet).
    audit_ticket: Option<u64>,
    /// Order events that reached the journal after its writer was closed
    /// for the successor (a failover's hand-over) and were not written.
    /// The stop order (gateway and drain first, the journal last) makes
    /// this zero; anything else is a bug, reported by
    /// [`super::Runtime::events_not_journaled_after_close`] and the
    /// shutdown report rather than by a KILL the successor would drain.
    pub(crate) not_journaled_after_close: u64,
}

/// Why a batch of order events was not all journaled.
#[derive(Debug)]
enum AppendFailure {
    /// The writer was closed for its successor: the events are counted in
    /// [`JournalState::not_journaled_after_close`], nothing else happens.
    ClosedForSuccessor,
    /// Any other error: the engine cannot record what it does.
    Failed(String),
}

/// Shared handle.
pub(crate) type SharedJournal = Arc<Mutex<JournalState>>;

impl JournalState {
    /// The state of a journal just opened and rebuilt: its mirror is the
    /// rebuilt state (its `last_seq` set to the writer's), and the audit
    /// entries up to the newest trip or reset the journal already holds are
    /// taken as journaled, so a restart neither repeats nor loses one.
    pub(crate) fn new(
        writer: JournalWriter,
        mut mirror: TradingState,
        block: &ControlBlock,
    ) -> JournalState {
        let journaled_until = [&mirror.last_trip, &mirror.last_reset]
            .iter()
            .filter_map(|r| r.as_ref().map(|r| r.wall_ns))
            .max()
            .unwrap_or(0);
        let audit_ticket = block
            .audit()
            .iter()
            .filter(|e| e.wall_ns <= journaled_until)
            .map(|e| e.ticket)
            .max();
        mirror.last_seq = writer.next_seq().saturating_sub(1);
        JournalState {
            writer,
            mirror,
            audit_ticket,
            not_journaled_after_close: 0,
        }
    }

    /// Appends order events (one registry lock hold's) and applies each
    /// to the mirror. All are stamped with one clock read. Every record is
    /// tried, as when each was appended on its own; any error other than
    /// a writer closed for its successor wins over that one (it must trip).
    fn append_orders(&mut self, recs: &[OrderEventRecord]) -> Result<(), AppendFailure> {
        let stamp = mono_ns();
        let mut failure = None;
        for rec in recs {
            match self.writer.append_stamped(rec, stamp) {
                // Replay issues (illegal edges the registry also refused)
                // are reported by recovery; the mirror follows the same
                // rules.
                Ok(a) => {
                    let _ = self.mirror.apply_order_event(a.seq, rec);
                }
                Err(JournalError::ClosedForSuccessor { .. }) => {
                    self.not_journaled_after_close += 1;
                    failure.get_or_insert(AppendFailure::ClosedForSuccessor);
                }
                Err(e) => {
                    if !matches!(failure, Some(AppendFailure::Failed(_))) {
                        failure = Some(AppendFailure::Failed(e.to_string()));
                    }
                }
            }
        }
        failure.map_or(Ok(()), Err)
    }

    /// Journals the audit entries (trips, resets) not journaled yet.
    pub(crate) fn append_switch_events(&mut self, block: &ControlBlock) -> Result<(), String> {
        for e in block.audit() {
            if self.audit_ticket.is_some_and(|t| e.ticket <= t) {
                continue;
            }
            self.audit_ticket = Some(e.ticket);
            if let Some(rec) = SwitchRecord::from_audit(&e) {
                self.writer.append(&rec).map_err(|e| e.to_string())?;
                self.mirror.apply_switch(&rec);
            }
        }
        Ok(())
    }

    /// Quick checkpoint of the mirror; returns its journal sequence.
    pub(crate) fn quick_checkpoint(&mut self, block: &ControlBlock) -> Result<u64, String> {
        self.append_switch_events(block)?;
        self.writer
            .quick_checkpoint(&self.mirror)
            .map(|q| q.seq)
            .map_err(|e| e.to_string())
    }
}

/// Appends the registry's events to the journal.
///
/// Stateless but for a buffer: the registry hands over each order's record
/// with its event (no second map of the open orders here), and the records
/// of one registry lock hold are appended at its end under one journal lock
/// ([`EventSink::flush`]), so an emergency's thousands of answers cost one
/// lock of the journal per batch, not one per answer.
pub(crate) struct JournalSink {
    journal: SharedJournal,
    block: Arc<ControlBlock>,
    /// Records of the current registry lock hold, in the registry's order.
    /// Reused (no allocation per batch once grown).
    pending: Vec<OrderEventRecord>,
    failed: bool,
}

impl JournalSink {
    /// A sink writing to `journal`; on a write error it trips KILL on `block`
    /// (an engine that cannot record what it does must not keep trading),
    /// except for a writer closed for its successor (see
    /// [`JournalState::not_journaled_after_close`]).
    pub(crate) fn new(journal: SharedJournal, block: Arc<ControlBlock>) -> JournalSink {
        JournalSink {
            journal,
            block,
            pending: Vec::new(),
            failed: false,
        }
    }

    /// The journal record of `order` with nothing happened yet.
    fn template(order: &OrderRecord) -> OrderEventRecord {
        OrderEventRecord::new_order(order.id, order.tags, order.side, order.price, order.qty)
    }
}

impl EventSink for JournalSink {
    fn record(&mut self, event: &RecordedEvent) {
        // Which events are journaled is exactly what the journal's replay
        // (`TradingState::apply_order_event`) accepts: a new order, then
        // events of that order until it is terminal.
        match *event {
            RecordedEvent::NewOrder(o) => self.pending.push(Self::template(&o)),
            // A fill on an order that was already terminal (it crossed a
            // cancel or an earlier fill) is not an event of an open order:
            // not journaled, as before the registry handed records over.
            RecordedEvent::Fill {
                qty, price, order, ..
            } => {
                if !order.state.is_terminal() {
                    let complete = order.filled.0 >= order.qty.0;
                    self.pending
                        .push(Self::template(&order).with_fill(qty, price, complete));
                }
            }
            // Fills were written with their quantities above. Any other
            // state event: the registry only applies legal edges, and none
            // leaves a terminal state, so the order was open in the journal.
            RecordedEvent::Order {
                event: OrderEvent::Fill { .. },
                ..
            } => {}
            RecordedEvent::Order { event, order, .. } => {
                self.pending.push(Self::template(&order).with_event(event))
            }
            // A failed write is followed by its `Order` event with
            // `Rejected` (journaled there); an order recovered from an
            // earlier run is already in the journal. The registry reports
            // each order of a mass cancel as CancelSent too; a venue reject
            // is followed by its Rejected event; a refusal changed nothing.
            RecordedEvent::SendFailed { .. }
            | RecordedEvent::Recovered(_)
            | RecordedEvent::MassCancelSent { .. }
            | RecordedEvent::VenueRejected { .. }
            | RecordedEvent::Refused { .. } => {}
        }
    }

    fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let result = match self.journal.lock() {
            Ok(mut j) => j.append_orders(&self.pending),
            Err(_) => Err(AppendFailure::Failed("journal mutex poisoned".into())),
        };
        self.pending.clear();
        match result {
            Ok(()) => {}
            // After a hand-over the successor owns the journal and the
            // orders: a KILL tripped here would be on the block the
            // successor shares, and it would drain the orders it just
            // adopted. Not written, and counted (see the field).
            Err(AppendFailure::ClosedForSuccessor) => {}
            Err(AppendFailure::Failed(e)) => {
                if !self.failed {
                    self.failed = true;
                    self.block.trip_global(
                        Mode::Kill,
                        Source::Auto,
                        &format!("journal append failed: {e}"),
                    );
                }
            }
        }
    }
}

/// What an engine may run in the drain's checkpoint step, before the quick
/// checkpoint (e.g. append its strategies' state): see
/// [`RuntimeBuilder::before_checkpoint`](super::RuntimeBuilder::before_checkpoint).
pub type BeforeCheckpoint = Box<dyn FnMut(&DrainOutcome) -> Result<(), String> + Send>;

/// The drain's checkpoint hook: the engine's own step, if any, then a quick
/// checkpoint of the journal's mirror (without a journal: only the step).
pub(crate) fn checkpoint_hook(
    journal: Option<SharedJournal>,
    block: Arc<ControlBlock>,
    mut before: Option<BeforeCheckpoint>,
) -> Option<CheckpointHook> {
    if journal.is_none() && before.is_none() {
        return None;
    }
    Some(Box::new(move |outcome: &DrainOutcome| {
        if let Some(step) = before.as_mut() {
            step(outcome)?;
        }
        match &journal {
            Some(j) => j
                .lock()
                .map_err(|_| "journal mutex poisoned".to_string())?
                .quick_checkpoint(&block),
            None => Ok(0),
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::{rebuild, JournalConfig};
    use crate::order::{OrderId, OrderState, Price, Qty, ScopeTags, Side};
    use crate::registry::Registry;
    use crate::venue::{
        CancelRejectReason, MassCancelScope, NewOrder, RejectReason, VenueError, VenueEvent,
    };

    fn new_order(id: u64) -> NewOrder {
        NewOrder {
            id: OrderId(id),
            tags: ScopeTags::default(),
            side: Side::Buy,
            price: Price::from_units(100),
            qty: Qty(1),
        }
    }

    /// A control block and a fresh journal in `dir`, the writer passed
    /// through `prepare` before the journal state takes it.
    fn block_and_journal(
        dir: &tempfile::TempDir,
        prepare: impl FnOnce(&mut JournalWriter),
    ) -> (Arc<ControlBlock>, SharedJournal, std::path::PathBuf) {
        let block = Arc::new(ControlBlock::create(dir.path(), "js").unwrap());
        let jdir = dir.path().join("journal");
        let (mut writer, _) = JournalWriter::open(&jdir, JournalConfig::small_for_tests()).unwrap();
        prepare(&mut writer);
        let shared = Arc::new(Mutex::new(JournalState::new(
            writer,
            TradingState::default(),
            &block,
        )));
        (block, shared, jdir)
    }

    /// After a hand-over the writer is closed for the successor: an order
    /// event that still reached the sink (a bug in the stop order) is not
    /// written and is counted, and the switch is not tripped (the block is
    /// the successor's too: a KILL there would drain the orders it
    /// adopted).
    #[test]
    fn a_writer_closed_for_its_successor_counts_lost_events_and_trips_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (block, shared, _) = block_and_journal(&dir, |w| {
            w.close_for_successor().unwrap();
        });
        let registry =
            Registry::with_sink(Box::new(JournalSink::new(shared.clone(), block.clone())));
        registry.register(&new_order(1)).unwrap();
        registry.send_failed(OrderId(1), VenueError::Disconnected);
        assert!(!block.state().is_active(), "nothing tripped");
        assert_eq!(shared.lock().unwrap().not_journaled_after_close, 2);
        assert!(shared.lock().unwrap().mirror.open_orders.is_empty());
    }

    /// Every other append failure still trips KILL (here the journal's
    /// lock was poisoned by a thread that panicked holding it).
    #[test]
    fn any_other_append_failure_trips_kill() {
        let dir = tempfile::tempdir().unwrap();
        let (block, shared, _) = block_and_journal(&dir, |_| {});
        let poison = shared.clone();
        let _ = std::thread::spawn(move || {
            let _held = poison.lock().unwrap();
            panic!("injected: a thread dies holding the journal lock");
        })
        .join();
        let registry = Registry::with_sink(Box::new(JournalSink::new(shared, block.clone())));
        registry.register(&new_order(1)).unwrap();
        assert_eq!(block.state().mode(), Mode::Kill);
        assert_eq!(trips_for_append_failures(&block), 1, "tripped once");
    }

    fn trips_for_append_failures(block: &ControlBlock) -> usize {
        block
            .audit()
            .iter()
            .filter(|e| e.reason.contains("journal append failed"))
            .count()
    }

    /// xorshift64: a reproducible sequence per seed.
    struct Rng(u64);
    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    /// The sink keeps no map of its own and appends each lock hold's events
    /// at its end: over random sequences of registrations, answer batches
    /// (legal, stale and illegal ones, fills racing cancels and fills after
    /// the end), cancels, mass cancels, failed and ambiguous writes and the
    /// drain's deadline, the journal's mirror holds exactly the orders the
    /// registry has not finished, with their state and filled quantity, and
    /// replaying the journal from disk gives the mirror back. Violations are
    /// counted over every seed and must be zero.
    #[test]
    fn the_journal_replays_to_the_registrys_orders_over_random_sequences() {
        let mut violations = Vec::new();
        for seed in 1..=40u64 {
            let dir = tempfile::tempdir().unwrap();
            let (block, shared, jdir) = block_and_journal(&dir, |_| {});
            let registry =
                Registry::with_sink(Box::new(JournalSink::new(shared.clone(), block.clone())));
            let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
            let mut next = 1u64;
            let mut batch = Vec::new();
            let mut venues = Vec::new();
            for _ in 0..600 {
                let any = |rng: &mut Rng| OrderId(1 + rng.below(next));
                match rng.below(10) {
                    0..=2 => {
                        let order = NewOrder {
                            id: OrderId(next),
                            tags: ScopeTags {
                                venue: rng.below(2) as u16,
                                strategy: 0,
                                instrument: rng.below(3) as u16,
                                account: 0,
                            },
                            side: if rng.below(2) == 0 {
                                Side::Buy
                            } else {
                                Side::Sell
                            },
                            price: Price::from_units(100),
                            qty: Qty(1 + rng.below(4) as i64),
                        };
                        next += 1;
                        registry.register(&order).unwrap();
                        match rng.below(12) {
                            0 => registry.send_failed(order.id, VenueError::Disconnected),
                            1 => registry.send_ambiguous(order.id),
                            _ => {}
                        }
                    }
                    3..=6 => {
                        batch.clear();
                        for _ in 0..1 + rng.below(8) {
                            let id = any(&mut rng);
                            batch.push(match rng.below(6) {
                                0 => VenueEvent::Acked { id },
                                1 | 2 => VenueEvent::Fill {
                                    id,
                                    qty: Qty(1),
                                    price: Price::from_units(100),
                                    leaves: Qty::ZERO,
                                },
                                3 => VenueEvent::Canceled { id },
                                4 => VenueEvent::CancelRejected {
                                    id,
                                    reason: CancelRejectReason::TooLate,
                                },
                                _ => VenueEvent::Rejected {
                                    id,
                                    reason: RejectReason::VenueRisk,
                                },
                            });
                        }
                        registry.apply_venue_events(&batch);
                    }
                    7 => {
                        let ids: Vec<OrderId> = (0..4).map(|_| any(&mut rng)).collect();
                        registry.cancels_sent(&ids, &mut venues);
                    }
                    8 => {
                        registry.mass_cancel_sent(rng.below(2) as u16, MassCancelScope::All);
                    }
                    _ => {
                        registry.force_cancel_unknown(any(&mut rng));
                    }
                }
            }
            let j = shared.lock().unwrap();
            let unfinished: Vec<(OrderId, OrderState, Qty)> = registry
                .all_orders()
                .into_iter()
                .filter(|o| !o.state.is_terminal())
                .map(|o| (o.id, o.state, o.filled))
                .collect();
            let mirrored: Vec<(OrderId, OrderState, Qty)> = j
                .mirror
                .open_orders
                .sorted()
                .into_iter()
                .map(|o| (o.id, o.state, o.filled))
                .collect();
            if unfinished != mirrored {
                violations.push(format!(
                    "seed {seed}: registry {unfinished:?} / mirror {mirrored:?}"
                ));
            }
            let rebuilt = rebuild(&jdir).unwrap();
            if !rebuilt.issues.is_empty()
                || rebuilt.state.open_orders != j.mirror.open_orders
                || rebuilt.state.positions != j.mirror.positions
            {
                violations.push(format!(
                    "seed {seed}: replay differs from the mirror ({} issues, first {:?})",
                    rebuilt.issues.len(),
                    rebuilt.issues.first()
                ));
            }
        }
        assert!(violations.is_empty(), "{violations:#?}");
    }
}
