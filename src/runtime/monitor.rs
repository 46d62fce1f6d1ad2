//! [`Monitor`]: a read-only view of a running engine for a thread that
//! publishes telemetry or serves status while the supervising thread is
//! inside [`Runtime::supervise_with`](super::Runtime::supervise_with)
//! (which holds the runtime mutably).

use std::sync::Arc;

use crate::control::telemetry::TelemetryWriter;
use crate::control::ControlBlock;
use crate::journal::state::{Position, PositionKey};
use crate::registry::{Registry, ScopeActivity};

use super::journaling::SharedJournal;

/// Reads what a running engine keeps, without touching the order path:
/// each call takes one short lock (the registry's or the journal's).
/// `Clone + Send + Sync`; get one from [`Runtime::monitor`](super::Runtime::monitor).
#[derive(Clone)]
pub struct Monitor {
    pub(super) block: Arc<ControlBlock>,
    pub(super) registry: Arc<Registry>,
    pub(super) journal: Option<SharedJournal>,
}

impl std::fmt::Debug for Monitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Monitor")
            .field("block", &self.block.path())
            .finish()
    }
}

impl Monitor {
    /// The control block (read-only: names, state, audit).
    pub fn block(&self) -> &ControlBlock {
        &self.block
    }

    /// Orders open now.
    pub fn open_orders(&self) -> usize {
        self.registry.open_count()
    }

    /// Order activity per venue index and per strategy index (open, sent,
    /// accepted, rejected, fills).
    pub fn activity(&self) -> (Vec<ScopeActivity>, Vec<ScopeActivity>) {
        self.registry.activity()
    }

    /// Positions and cash as the journal keeps them (every fill journaled
    /// so far, on top of what recovery rebuilt); empty without a journal.
    pub fn journal_positions(&self) -> Vec<(PositionKey, Position)> {
        self.journal
            .as_ref()
            .and_then(|j| {
                j.lock()
                    .ok()
                    .map(|j| j.mirror.positions.iter().map(|(k, v)| (*k, *v)).collect())
            })
            .unwrap_or_default()
    }

    /// A writer for the block's telemetry region. One per engine: the
    /// region has a single writer (the supervising thread, or the thread
    /// this monitor was handed to).
    pub fn telemetry_writer(&self) -> TelemetryWriter {
        TelemetryWriter::new(self.block.clone())
    }
}
