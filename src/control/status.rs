//! A point-in-time copy of a control block, for `killswitch status` (table
//! and `--json`) and for tools that follow a drain.

use std::sync::atomic::Ordering;

use super::layout::{DRAIN_FLAG_ACK_LATE, DRAIN_FLAG_ESCALATED, DRAIN_FLAG_RECOVERY};
use super::{AuditEntry, ControlBlock, DrainIncomplete, DrainPhase, Mode, OwnerInfo, ScopeKind};

/// Copy of the drain's published counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct DrainSnapshot {
    /// Generation being drained.
    pub generation: u64,
    /// Phase.
    pub phase: DrainPhase,
    /// Open orders in scope at the snapshot.
    pub open_at_snapshot: u64,
    /// Cancel requests sent.
    pub cancels_sent: u64,
    /// Orders confirmed terminal.
    pub orders_confirmed: u64,
    /// Orders left `CancelUnknown`.
    pub orders_unknown: u64,
    /// Fills applied during the drain.
    pub fills_during_drain: u64,
    /// Journal sequence of the quick checkpoint.
    pub checkpoint_seq: u64,
    /// Trip time (`CLOCK_MONOTONIC` ns).
    pub t_trip: u64,
    /// When the drain saw the trip.
    pub t_trip_seen: u64,
    /// When the gateway acked.
    pub t_gateway_ack: u64,
    /// First cancel enqueued.
    pub t_first_cancel: u64,
    /// Last order resolved.
    pub t_last_ack: u64,
    /// Checkpoint written.
    pub t_checkpoint: u64,
    /// Drain finished.
    pub t_done: u64,
    /// The gateway acknowledged a generation of this drain after the
    /// deadline, or has not yet (drain flag bit 0).
    pub gateway_ack_late: bool,
    /// The start-up drain of orders a previous run left open.
    pub recovery: bool,
    /// A newer generation with more KILL scope was taken into this drain.
    pub escalated: bool,
}

impl DrainSnapshot {
    /// Reads the drain status of a block.
    pub fn read(block: &ControlBlock) -> DrainSnapshot {
        let d = block.drain_status();
        let l = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Acquire);
        DrainSnapshot {
            generation: l(&d.generation),
            phase: DrainPhase::from_u64(l(&d.phase)),
            open_at_snapshot: l(&d.open_at_snapshot),
            cancels_sent: l(&d.cancels_sent),
            orders_confirmed: l(&d.orders_confirmed),
            orders_unknown: l(&d.orders_unknown),
            fills_during_drain: l(&d.fills_during_drain),
            checkpoint_seq: l(&d.checkpoint_seq),
            t_trip: l(&d.t_trip),
            t_trip_seen: l(&d.t_trip_seen),
            t_gateway_ack: l(&d.t_gateway_ack),
            t_first_cancel: l(&d.t_first_cancel),
            t_last_ack: l(&d.t_last_ack),
            t_checkpoint: l(&d.t_checkpoint),
            t_done: l(&d.t_done),
            gateway_ack_late: l(&d.flags) & DRAIN_FLAG_ACK_LATE != 0,
            recovery: l(&d.flags) & DRAIN_FLAG_RECOVERY != 0,
            escalated: l(&d.flags) & DRAIN_FLAG_ESCALATED != 0,
        }
    }
}

/// Copy of what the gateway publishes: its acknowledgement of the state
/// word and its counts. Read-only; any thread or process.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct GatewaySnapshot {
    /// Highest generation the gateway has acknowledged (it sends nothing
    /// decided on an older one).
    pub acked_generation: u64,
    /// When it acknowledged it (`CLOCK_MONOTONIC` ns).
    pub acked_mono_ns: u64,
    /// New orders written to venues since the block was created.
    pub orders_sent: u64,
    /// Cancels (single or mass) written to venues.
    pub cancels_sent: u64,
    /// Orders open in the registry, as last counted by the engine.
    pub open_orders: u64,
    /// Pid of the live process holding the gateway role, if any.
    pub holder_pid: Option<u32>,
}

impl GatewaySnapshot {
    /// Reads the gateway status of a block: the generation (Acquire) first,
    /// then its time, so the time is that acknowledgement's or a later one's.
    pub fn read(block: &ControlBlock) -> GatewaySnapshot {
        let g = block.gateway_status();
        let acked_generation = g.acked_generation.load(Ordering::Acquire);
        GatewaySnapshot {
            acked_generation,
            acked_mono_ns: g.acked_mono_ns.load(Ordering::Acquire),
            orders_sent: g.orders_sent.load(Ordering::Relaxed),
            cancels_sent: g.cancels_sent.load(Ordering::Relaxed),
            open_orders: g.open_orders.load(Ordering::Acquire),
            holder_pid: block.gateway_holder(),
        }
    }
}

/// One tripped scope.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct ScopeStatus {
    /// Dimension.
    pub kind: ScopeKind,
    /// Index in the name table.
    pub index: u16,
    /// Name.
    pub name: String,
    /// Level in force.
    pub mode: Mode,
}

/// Everything `killswitch status` shows.
#[derive(Clone, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Status {
    /// Control file.
    pub path: String,
    /// Engine name.
    pub engine: String,
    /// Global mode.
    pub mode: Mode,
    /// True when any scope is tripped.
    pub scoped: bool,
    /// State-word generation.
    pub generation: u64,
    /// Raw state word.
    pub state_word: u64,
    /// Tripped scopes.
    pub scopes: Vec<ScopeStatus>,
    /// The trip in force, if any.
    pub trip: Option<AuditEntry>,
    /// Owning engine.
    pub owner: OwnerInfo,
    /// Milliseconds since the engine's last heartbeat.
    pub heartbeat_age_ms: Option<f64>,
    /// Generation the gateway has acknowledged.
    pub gateway_acked_generation: u64,
    /// New orders the gateway has written.
    pub gateway_orders_sent: u64,
    /// Drain counters.
    pub drain: DrainSnapshot,
    /// The "drain incomplete" record, when set.
    pub drain_incomplete: Option<DrainIncomplete>,
    /// Reasons a reset would be refused.
    pub reset_blockers: Vec<String>,
    /// The active-role lease (epoch 0: never taken; an engine without a
    /// lease leaves it so).
    pub lease: super::LeaseInfo,
    /// The hot standby following the journal, if one holds the role.
    pub standby: Option<super::StandbyInfo>,
}

impl Status {
    /// Reads a status snapshot.
    pub fn read(block: &ControlBlock) -> Status {
        let s = block.state();
        let g = block.gateway_status();
        Status {
            path: block.path().display().to_string(),
            engine: block.name().to_string(),
            mode: s.mode(),
            scoped: s.scoped(),
            generation: s.generation(),
            state_word: s.0,
            scopes: block
                .tripped_scopes()
                .into_iter()
                .map(|(kind, index, name, mode)| ScopeStatus {
                    kind,
                    index,
                    name,
                    mode,
                })
                .collect(),
            trip: if s.is_active() {
                block.last_trip()
            } else {
                None
            },
            owner: block.owner(),
            heartbeat_age_ms: block.heartbeat_age_ns().map(|n| n as f64 / 1e6),
            gateway_acked_generation: g.acked_generation.load(Ordering::Acquire),
            gateway_orders_sent: g.orders_sent.load(Ordering::Relaxed),
            drain: DrainSnapshot::read(block),
            drain_incomplete: block.drain_incomplete(),
            reset_blockers: block.reset_blockers(),
            lease: block.lease(),
            standby: block.standby(),
        }
    }
}
