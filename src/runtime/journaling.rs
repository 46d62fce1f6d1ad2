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

use rustc_hash::FxHashMap;

use crate::control::{ControlBlock, Mode, Source};
use crate::drain::{CheckpointHook, DrainOutcome};
use crate::journal::record::{OrderEventRecord, SwitchRecord};
use crate::journal::{JournalWriter, TradingState};
use crate::order::{OrderEvent, OrderId, Qty};
use crate::registry::{EventSink, RecordedEvent};

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
        }
    }

    /// Appends an order event and applies it to the mirror.
    fn append_order(&mut self, rec: &OrderEventRecord) -> Result<(), String> {
        let a = self.writer.append(rec).map_err(|e| e.to_string())?;
        // Replay issues (illegal edges the registry also refused) are
        // reported by recovery; the mirror follows the same rules.
        let _ = self.mirror.apply_order_event(a.seq, rec);
        Ok(())
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
pub(crate) struct JournalSink {
    journal: SharedJournal,
    block: Arc<ControlBlock>,
    /// Template record (tags, side, price, qty) and filled quantity per open order.
    /// Looked up once or twice per order event on the gateway thread, under
    /// the registry lock: Fx, not the default SipHash (order ids are ours,
    /// not an attacker's).
    orders: FxHashMap<OrderId, (OrderEventRecord, Qty)>,
    failed: bool,
}

impl JournalSink {
    /// A sink writing to `journal`; on a write error it trips KILL on `block`
    /// (an engine that cannot record what it does must not keep trading).
    pub(crate) fn new(journal: SharedJournal, block: Arc<ControlBlock>) -> JournalSink {
        JournalSink {
            journal,
            block,
            orders: FxHashMap::default(),
            failed: false,
        }
    }

    fn append(&mut self, rec: &OrderEventRecord) {
        let result = match self.journal.lock() {
            Ok(mut j) => j.append_order(rec),
            Err(_) => Err("journal mutex poisoned".to_string()),
        };
        if let Err(e) = result {
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

impl EventSink for JournalSink {
    fn record(&mut self, event: &RecordedEvent) {
        match *event {
            RecordedEvent::NewOrder(o) => {
                let rec = OrderEventRecord::new_order(o.id, o.tags, o.side, o.price, o.qty);
                self.orders.insert(o.id, (rec, Qty::ZERO));
                self.append(&rec);
            }
            // Already in the journal (an earlier run's open order): only its
            // later events are appended, to the same order.
            RecordedEvent::Recovered(o) => {
                let rec = OrderEventRecord::new_order(o.id, o.tags, o.side, o.price, o.qty);
                self.orders.insert(o.id, (rec, o.filled));
            }
            RecordedEvent::SendFailed { id, .. } => {
                if let Some((rec, _)) = self.orders.remove(&id) {
                    self.append(&rec.with_event(OrderEvent::Rejected));
                }
            }
            RecordedEvent::Fill { id, qty, price, .. } => {
                if let Some((rec, filled)) = self.orders.get_mut(&id) {
                    filled.0 = filled.0.saturating_add(qty.0);
                    let rec = rec.with_fill(qty, price, filled.0 >= rec.qty.0);
                    self.append(&rec);
                }
            }
            // Fills were written with their quantities above.
            RecordedEvent::Order {
                event: OrderEvent::Fill { .. },
                state,
                id,
                ..
            } => {
                if state.is_terminal() {
                    self.orders.remove(&id);
                }
            }
            RecordedEvent::Order {
                id, event, state, ..
            } => {
                let Some((rec, _)) = self.orders.get(&id).copied() else {
                    return;
                };
                self.append(&rec.with_event(event));
                if state.is_terminal() {
                    self.orders.remove(&id);
                }
            }
            // The registry reports each order of a mass cancel as CancelSent
            // too; a venue reject is followed by its Rejected event; a
            // refusal changed nothing.
            RecordedEvent::MassCancelSent { .. }
            | RecordedEvent::VenueRejected { .. }
            | RecordedEvent::Refused { .. } => {}
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
