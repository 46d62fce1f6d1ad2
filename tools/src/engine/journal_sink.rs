//! Glue between the registry and the journal: every order event the
//! registry applies is appended to the journal, and the drain's quick
//! checkpoint is a snapshot of the registry appended to the same journal.
//!
//! Lock order: the registry calls the sink with its lock held and the sink
//! then takes the journal's; the checkpoint hook takes only the journal's.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use killswitch::control::{ControlBlock, Mode, Source, Tripper};
use killswitch::drain::{CheckpointHook, DrainOutcome};
use killswitch::journal::record::{OrderEventRecord, SwitchRecord};
use killswitch::journal::state::TradingState;
use killswitch::journal::writer::JournalWriter;
use killswitch::order::{OrderEvent, OrderId, Qty};
use killswitch::registry::{EventSink, RecordedEvent};

/// The journal writer and the state its records add up to, behind one lock
/// shared by the registry's sink, the drain's checkpoint and the engine loop.
pub struct JournalState {
    /// The writer.
    pub writer: JournalWriter,
    /// Open orders, positions and last trip as replaying this journal gives
    /// them: the quick checkpoint snapshots exactly this, so a recovery
    /// that replays the events agrees with the snapshot by construction,
    /// and any disagreement is a real bug that recovery reports.
    pub mirror: TradingState,
    /// Highest audit ticket already journaled.
    pub audit_ticket: Option<u64>,
}

/// Shared handle.
pub type SharedJournal = Arc<Mutex<JournalState>>;

impl JournalState {
    /// Appends an order event and applies it to the mirror.
    pub fn append_order(&mut self, rec: &OrderEventRecord) -> Result<(), String> {
        let a = self.writer.append(rec).map_err(|e| e.to_string())?;
        // Replay issues (illegal edges the registry also refused) are
        // reported by recovery; the mirror follows the same rules.
        let _ = self.mirror.apply_order_event(a.seq, rec);
        Ok(())
    }

    /// Journals the audit entries (trips, resets) not journaled yet.
    pub fn append_switch_events(&mut self, block: &ControlBlock) -> Result<(), String> {
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
    pub fn quick_checkpoint(&mut self, block: &ControlBlock) -> Result<u64, String> {
        self.append_switch_events(block)?;
        self.writer
            .quick_checkpoint(&self.mirror)
            .map(|q| q.seq)
            .map_err(|e| e.to_string())
    }
}

/// Appends the registry's events to the journal.
pub struct JournalSink {
    journal: SharedJournal,
    block: Arc<ControlBlock>,
    /// Template record (tags, side, price, qty) and filled quantity per open order.
    orders: HashMap<OrderId, (OrderEventRecord, Qty)>,
    failed: bool,
}

impl JournalSink {
    /// A sink writing to `journal`; on a write error it trips KILL on `block`
    /// (an engine that cannot record what it does must not keep trading).
    pub fn new(journal: SharedJournal, block: Arc<ControlBlock>) -> JournalSink {
        JournalSink {
            journal,
            block,
            orders: HashMap::new(),
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
                Tripper::new(self.block.clone()).trip_global(
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
            RecordedEvent::SendFailed { id } => {
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
            } => {
                if state.is_terminal() {
                    self.orders.remove(&id);
                }
            }
            RecordedEvent::Order { id, event, state } => {
                let Some((rec, _)) = self.orders.get(&id).copied() else {
                    return;
                };
                self.append(&rec.with_event(event));
                if state.is_terminal() {
                    self.orders.remove(&id);
                }
            }
            // The registry reports each order of a mass cancel as CancelSent too.
            RecordedEvent::MassCancelSent { .. } => {}
        }
    }
}

/// The drain's checkpoint hook: a quick checkpoint of the journal's mirror.
/// `inject_panic` (fault injection for tests) makes it panic instead, which
/// kills the drain thread.
pub fn checkpoint_hook(
    journal: SharedJournal,
    block: Arc<ControlBlock>,
    inject_panic: bool,
) -> CheckpointHook {
    Box::new(move |_outcome: &DrainOutcome| {
        if inject_panic {
            panic!("injected fault: the checkpoint hook panics (drain.inject_checkpoint_panic)");
        }
        journal
            .lock()
            .map_err(|_| "journal mutex poisoned".to_string())?
            .quick_checkpoint(&block)
    })
}
