//! The `#[repr(C)]` layout of the control file, field by field.
//!
//! Everything in the file is an atomic: the file is shared by processes that
//! write it concurrently, so no field is ever read or written through a plain
//! load or a `&mut`. A zero-filled file is a valid (empty) block, which is
//! what `ftruncate` gives us.
//!
//! | offset | size   | field | written by |
//! |-------:|-------:|-------|------------|
//! | 0      | 8      | `magic` = `b"KILLSWCH"` (little-endian u64) | creator |
//! | 8      | 4      | `version` = major << 16 \| minor, **written last, Release** | creator |
//! | 12     | 4      | `header_flags` (reserved, 0) | creator |
//! | 16     | 8      | `file_len` in bytes | creator |
//! | 24     | 8      | `created_wall_ns` (Unix ns) | creator |
//! | 32     | 8      | `creator_pid` | creator |
//! | 40     | 8      | `owner_pid` of the attached engine (0 = none) | engine |
//! | 48     | 8      | `owner_start_ticks` (`/proc/<pid>/stat` field 22, guards against pid reuse) | engine |
//! | 56     | 8      | `heartbeat_mono_ns` (`CLOCK_MONOTONIC`) | engine |
//! | 64     | 8      | `heartbeat_count` | engine |
//! | 72     | 32     | `engine_name` (length byte + up to 31 bytes UTF-8) | creator |
//! | 104    | 8      | `risk_trips`: trips that only the risk role may reset (risk role or automatic rule), ever | trip |
//! | 112    | 8      | `risk_trips_reset`: the `risk_trips` count the last risk-role reset cleared | reset |
//! | 120    | 8      | `change_flags` (2.1): bit 0 deployments and configuration locked, bit 1 a reconciliation mismatch not yet acknowledged (blocks reset), bits 32..64 pid that set the lock; see [`crate::shutdown::words`] | planned shutdown; `killswitch reconcile --ack` |
//! | 128    | 128    | **state word** (`AtomicU64`, alone on its line), see [`super::state`] | trip / reset |
//! | 256    | 128    | gateway status: `acked_generation`, `acked_mono_ns`, `orders_sent`, `cancels_sent`, `open_orders`, `role` (the claimed gateway, 1.2), then the active-role lease (2.3, see [`super::lease`]): `lease_holder` at 304 (epoch << 32 \| holder pid), `lease_holder_start` at 312 (holder start ticks low 32 bits << 32 \| low 32 bits of the epoch they belong to), `lease_expiry_mono_ns` at 320, `lease_in_send` at 328 (epoch << 32 \| pid << 1 \| busy: the holder's gateway is inside a turn that may write to venues); reserved 336..384 | gateway thread; `role` and the lease words by compare-and-swap |
//! | 384    | 256    | drain status ([`DrainStatus`]): live counters (offsets 384..504), drain flags (504), the "drain incomplete" record (512..568), the hot standby's words (2.4, 568..616: `standby_pid`, `standby_applied_seq`, `standby_behind_records`, `standby_lag_ns`, `standby_max_lag_ns`, `standby_updated_mono_ns`, and at 616 `failover_request`; see [`super::standby`]), reserved (624..640) | drain thread; the record also `emergency` and reset; the standby words the standby (`standby_pid` by compare-and-swap) |
//! | 640    | 128    | `audit_head`: tickets handed out to audit writers | trip / reset |
//! | 768    | 64×256 | audit ring ([`AuditSlot`]), slot = ticket % 64 | trip / reset |
//! | 17152  | 5504   | scope levels, one byte per name: venues 64, strategies 256, instruments 4096, accounts 1024 (5440 bytes, padded) | scoped trip |
//! | 22656  | 174080 | name tables, 32 bytes per name, same order and sizes | registration |
//! | 196736 | 41600  | engine telemetry ([`Telemetry`], see [`super::telemetry`]): engine record (its words 200..256: the automatic rules' gauges, 2.2), shutdown announcement, strategies, venues, positions | the engine's supervisor thread; the rule gauges the runtime's rules |
//! | 196888 | 48     | planned shutdown words (2.1, in the engine record's spare space): `shutdown_request`, `shutdown_request_at_wall_ns` (the `killswitch shutdown` command, by compare-and-swap), `shutdown_progress`, `shutdown_started_wall_ns`, `shutdown_outcome` (the engine), `position_limit` (the gate's reduced limit); see [`crate::shutdown::words`] | `killswitch shutdown` / the engine |
//! | 238336 |        | end of file (`FILE_LEN`) | |
//!
//! Compatibility: a reader refuses a file whose major version differs from
//! [`VERSION_MAJOR`]; minor versions only add fields inside reserved space.
//! Layout 2.0 appended the telemetry region (the file grew, so the major
//! changed: a 1.x reader would map too little, and a 2.x reader refuses a
//! 1.x file with a message naming both versions) and the two risk-role
//! words of the header. Layout 2.1 (the planned shutdown) named the
//! header's last word and six spare words of the engine telemetry record.

use std::mem::{offset_of, size_of};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8};

/// `b"KILLSWCH"` read as a little-endian `u64`.
pub const MAGIC: u64 = u64::from_le_bytes(*b"KILLSWCH");
/// Layout major version; a different major is refused.
pub const VERSION_MAJOR: u16 = 2;
/// Layout minor version; informational. (1.1 added the drain flags and the
/// "drain incomplete" record, phase `GatewayAckLate`, audit kind
/// `ResetNoop`; 1.2 the gateway role word in the gateway line's spare
/// space, claimed by compare-and-swap; 2.0 the telemetry region, the
/// risk-role words, and in the audit entry the role bits and the identity;
/// 2.1 the planned shutdown's words: the header's `change_flags` and six
/// words of the engine telemetry record; 2.2 the automatic rules' gauges in
/// the last 7 spare words of the engine telemetry record, and audit kind
/// `Warning`; 2.3 the active-role lease in the gateway line's spare
/// space; 2.4 the hot standby's progress in the drain line's spare space.)
pub const VERSION_MINOR: u16 = 4;
/// Slots in the audit ring.
pub const AUDIT_SLOTS: usize = 64;
/// Bytes of reason text kept per audit entry.
pub const REASON_BYTES: usize = 128;
/// Longest name (venue, strategy, instrument, account, engine) in bytes.
pub const NAME_BYTES: usize = 31;
/// Number of venue names.
pub const VENUES: usize = 64;
/// Number of strategy names.
pub const STRATEGIES: usize = 256;
/// Number of instrument names.
pub const INSTRUMENTS: usize = 4096;
/// Number of account (trader / desk / client) names.
pub const ACCOUNTS: usize = 1024;

/// Pads its content to a 128-byte line of its own (two 64-byte lines, because
/// x86-64 prefetches adjacent lines in pairs).
#[repr(C, align(128))]
pub struct Line<T>(pub T);

/// File header (128 bytes).
#[repr(C)]
pub struct Header {
    /// `MAGIC`.
    pub magic: AtomicU64,
    /// `major << 16 | minor`, stored last with Release by the creator.
    pub version: AtomicU32,
    /// Reserved, 0.
    pub header_flags: AtomicU32,
    /// Size of the file in bytes, `FILE_LEN`.
    pub file_len: AtomicU64,
    /// Creation time, Unix nanoseconds.
    pub created_wall_ns: AtomicU64,
    /// Pid of the process that created the file.
    pub creator_pid: AtomicU64,
    /// Pid of the engine attached to the block, 0 when none.
    pub owner_pid: AtomicU64,
    /// Start time of `owner_pid` in clock ticks since boot.
    pub owner_start_ticks: AtomicU64,
    /// Last heartbeat of the engine, `CLOCK_MONOTONIC` ns.
    pub heartbeat_mono_ns: AtomicU64,
    /// Heartbeats written so far.
    pub heartbeat_count: AtomicU64,
    /// Engine name: length byte then bytes.
    pub engine_name: [AtomicU64; 4],
    /// Trips that only the risk role may reset (made with the risk role,
    /// or by an automatic rule), counted since the file was created;
    /// incremented before the trip's compare-and-swap of the state word.
    pub risk_trips: AtomicU64,
    /// The `risk_trips` count that the last reset made with the risk role
    /// saw. A risk hold is in force while `risk_trips > risk_trips_reset`.
    pub risk_trips_reset: AtomicU64,
    /// Layout 2.1: the deployment/configuration lock and the unacknowledged
    /// reconciliation mismatch (see [`crate::shutdown::words`]).
    pub change_flags: AtomicU64,
}

/// What the gateway thread publishes (one line).
#[repr(C)]
pub struct GatewayStatus {
    /// Highest state-word generation the gateway has observed and obeys.
    pub acked_generation: AtomicU64,
    /// When it acknowledged it, `CLOCK_MONOTONIC` ns.
    pub acked_mono_ns: AtomicU64,
    /// New orders written to venues since start.
    pub orders_sent: AtomicU64,
    /// Cancels (single or mass) written to venues since start.
    pub cancels_sent: AtomicU64,
    /// Orders open (not terminal, not unknown) in the registry, as last counted by the gateway.
    pub open_orders: AtomicU64,
    /// The gateway role, claimed by compare-and-swap (layout 1.2): the
    /// claimant's pid (low 32 bits) and the low 32 bits of its start time
    /// in clock ticks (high 32 bits), so a reused pid is not taken for a
    /// live claimant; 0 = unclaimed. See [`super::gateway_role`].
    pub role: AtomicU64,
    /// The active-role lease (layout 2.3, see [`super::lease`]): epoch
    /// (high 32 bits, only ever raised) | holder pid (low 32 bits, 0 =
    /// released). Changed only by compare-and-swap. The holder's gateway
    /// compares it with its own value in every admit step.
    pub lease_holder: AtomicU64,
    /// Low 32 bits of the holder's start ticks (high 32) | low 32 bits of
    /// the epoch they belong to (low 32), so a reader can tell the start
    /// time of the current holder from its predecessor's.
    pub lease_holder_start: AtomicU64,
    /// When the lease expires unless renewed, `CLOCK_MONOTONIC` ns.
    pub lease_expiry_mono_ns: AtomicU64,
    /// epoch << 32 | pid << 1 | busy: the holder's gateway sets busy (compare-and-swap,
    /// never over a newer epoch's value) before a turn that may write to a
    /// venue and clears it after; a taker waits for an older epoch's busy
    /// turn to end before it sends.
    pub lease_in_send: AtomicU64,
    _reserved: [AtomicU64; 6],
}

/// Phase of the drain, as the drain thread publishes it in the block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "kebab-case"))]
#[repr(u8)]
pub enum DrainPhase {
    /// No drain has run since the engine attached.
    Idle = 0,
    /// Kill seen; waiting for the gateway to acknowledge the generation.
    AwaitingGatewayAck = 1,
    /// Cancels sent, waiting for acknowledgements.
    Cancelling = 2,
    /// Writing the quick checkpoint.
    Checkpointing = 3,
    /// Finished: every order is terminal or reported unknown, checkpoint done.
    Done = 4,
    /// Finished with a failure (see the counters and the engine's log).
    Failed = 5,
    /// The gateway did not acknowledge the kill generation by the deadline:
    /// the failure is published (an operator or `killswitch emergency`
    /// escalates) and the drain keeps waiting; when the acknowledgement
    /// comes it snapshots and cancels as usual. Nothing snapshotted yet.
    GatewayAckLate = 6,
}

impl DrainPhase {
    /// Decodes a stored byte; unknown values read as `Failed` so a damaged
    /// file never claims success.
    pub fn from_u64(v: u64) -> DrainPhase {
        match v {
            0 => DrainPhase::Idle,
            1 => DrainPhase::AwaitingGatewayAck,
            2 => DrainPhase::Cancelling,
            3 => DrainPhase::Checkpointing,
            4 => DrainPhase::Done,
            6 => DrainPhase::GatewayAckLate,
            _ => DrainPhase::Failed,
        }
    }

    /// True while a drain is working (not idle, not finished).
    pub fn is_running(self) -> bool {
        matches!(
            self,
            DrainPhase::AwaitingGatewayAck
                | DrainPhase::GatewayAckLate
                | DrainPhase::Cancelling
                | DrainPhase::Checkpointing
        )
    }
}

/// [`DrainStatus::flags`] bit: the gateway's acknowledgement of a generation
/// of this drain came after the deadline (or has not come yet).
pub const DRAIN_FLAG_ACK_LATE: u64 = 1;
/// [`DrainStatus::flags`] bit: this is the start-up drain of the orders a
/// previous run left open (the journal's), not the drain of a trip.
pub const DRAIN_FLAG_RECOVERY: u64 = 1 << 1;
/// [`DrainStatus::flags`] bit: a newer generation that put KILL on more
/// orders was taken into this drain while it ran.
pub const DRAIN_FLAG_ESCALATED: u64 = 1 << 2;

/// Who wrote the "drain incomplete" record (low byte of
/// the record's meta word).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "kebab-case"))]
#[repr(u8)]
pub enum IncompleteWriter {
    /// The engine's drain thread, when it started (and as it progressed).
    Drain = 1,
    /// `killswitch emergency`, after it had to terminate or kill the engine.
    Emergency = 2,
    /// The engine itself, when its drain thread died.
    Engine = 3,
}

impl IncompleteWriter {
    /// Decodes the stored byte; an unknown value reads as `Drain` (the
    /// record stays set either way).
    pub fn from_u8(v: u8) -> IncompleteWriter {
        match v {
            2 => IncompleteWriter::Emergency,
            3 => IncompleteWriter::Engine,
            _ => IncompleteWriter::Drain,
        }
    }
}

/// [`DrainStatus::incomplete_meta`] bit: no snapshot was taken; the open
/// count is the engine's last published count of open orders.
pub const INCOMPLETE_NO_SNAPSHOT: u64 = 1 << 8;

/// What the drain thread publishes (two lines), so an external tool can
/// follow an emergency without talking to the engine.
#[repr(C, align(128))]
pub struct DrainStatus {
    /// State-word generation this drain is working on.
    pub generation: AtomicU64,
    /// [`DrainPhase`] as u64.
    pub phase: AtomicU64,
    /// Open orders in scope when the registry was snapshotted.
    pub open_at_snapshot: AtomicU64,
    /// Cancel requests sent (single cancels count one each, a mass cancel counts once).
    pub cancels_sent: AtomicU64,
    /// Orders confirmed terminal (cancelled, filled, rejected) since the snapshot.
    pub orders_confirmed: AtomicU64,
    /// Orders marked `CancelUnknown` at the deadline.
    pub orders_unknown: AtomicU64,
    /// Fills applied while cancels were in flight.
    pub fills_during_drain: AtomicU64,
    /// Journal sequence number of the quick checkpoint, 0 when none yet.
    pub checkpoint_seq: AtomicU64,
    /// When the drain saw the trip (`CLOCK_MONOTONIC` ns).
    pub t_trip_seen: AtomicU64,
    /// When the gateway acknowledged the generation.
    pub t_gateway_ack: AtomicU64,
    /// When the first cancel was enqueued for the gateway.
    pub t_first_cancel: AtomicU64,
    /// When the last open order became terminal or unknown.
    pub t_last_ack: AtomicU64,
    /// When the quick checkpoint was written.
    pub t_checkpoint: AtomicU64,
    /// When the drain finished.
    pub t_done: AtomicU64,
    /// When the trip that started this drain was made (copied from the audit record).
    pub t_trip: AtomicU64,
    /// `DRAIN_FLAG_*` bits of the drain in progress (or the last one).
    pub flags: AtomicU64,
    /// "Drain incomplete" record: generation of the drain it is about.
    /// The record is set while `incomplete_meta != 0`; only a drain that
    /// ends `Done` with no unknown order, or a forced reset, clears it, and
    /// reset is refused while it is set, whether or not the engine lives.
    pub incomplete_generation: AtomicU64,
    /// Record: open orders in scope at the snapshot (or, with
    /// `INCOMPLETE_NO_SNAPSHOT`, the engine's last published open orders).
    pub incomplete_open: AtomicU64,
    /// Record: orders confirmed terminal.
    pub incomplete_confirmed: AtomicU64,
    /// Record: orders not confirmed (unknown, or unconfirmed when the
    /// engine died).
    pub incomplete_unknown: AtomicU64,
    /// Record: writer ([`IncompleteWriter`], low byte) | `INCOMPLETE_*`
    /// flags (bits 8..32) | writer pid (bits 32..64); 0 = no record.
    pub incomplete_meta: AtomicU64,
    /// Record: start time of the writer process (clock ticks since boot), so
    /// a reused pid is not taken for the writer.
    pub incomplete_writer_start: AtomicU64,
    /// Record: when it was last written, Unix ns.
    pub incomplete_wall_ns: AtomicU64,
    /// The hot standby (layout 2.4, see [`super::standby`]): its pid (low
    /// 32 bits) | low 32 bits of its start ticks (high 32 bits); 0 = none.
    /// Claimed by compare-and-swap.
    pub standby_pid: AtomicU64,
    /// Journal sequence of the last record the standby applied.
    pub standby_applied_seq: AtomicU64,
    /// Records the standby found committed and not yet applied at its last
    /// look (the size of its last batch).
    pub standby_behind_records: AtomicU64,
    /// Over that batch, the longest time from a record's append to its
    /// application by the standby, ns.
    pub standby_lag_ns: AtomicU64,
    /// The longest such time since the standby started, ns.
    pub standby_max_lag_ns: AtomicU64,
    /// When the standby last published, `CLOCK_MONOTONIC` ns.
    pub standby_updated_mono_ns: AtomicU64,
    /// A failover asked for (`killswitch failover`): a nonce (high 32 bits,
    /// changed by every request) | the asker's pid, bit 31 set when the
    /// active engine withdrew it (a KILL in force); 0 = never. The active
    /// engine hands over when it sees a nonce it did not see at its start.
    pub failover_request: AtomicU64,
    _reserved: [AtomicU64; 2],
}

/// One audit entry: a trip, a no-op trip or a reset. A seqlock guards it:
/// `seq` is `2*ticket + 1` while the writer fills it and `2*ticket + 2` when
/// complete; a reader keeps a copy only if `seq` was even and unchanged.
#[repr(C, align(128))]
pub struct AuditSlot {
    /// Seqlock word.
    pub seq: AtomicU64,
    /// kind u8 | mode u8 << 8 | source u8 << 16 | scope kind u8 << 24 |
    /// scope index u16 << 32 | reason length u8 << 48 | flags u8 << 56.
    pub meta: AtomicU64,
    /// State-word generation after the event.
    pub generation: AtomicU64,
    /// pid (low 32 bits) | uid (high 32 bits) of the process that wrote it.
    pub ids: AtomicU64,
    /// `CLOCK_MONOTONIC` ns.
    pub mono_ns: AtomicU64,
    /// Unix ns.
    pub wall_ns: AtomicU64,
    /// Reason text, UTF-8, truncated at a character boundary.
    pub reason: [AtomicU64; REASON_BYTES / 8],
    /// Who acted, when known (the identity of a role token): length byte
    /// then up to 31 bytes, like a name slot; all zero when anonymous.
    pub identity: [AtomicU64; 4],
    _reserved: [AtomicU64; 6],
}

/// One byte per name: the mode level a scoped trip put on it (0..=3).
#[repr(C, align(128))]
pub struct ScopeLevels {
    /// Per venue.
    pub venues: [AtomicU8; VENUES],
    /// Per strategy.
    pub strategies: [AtomicU8; STRATEGIES],
    /// Per instrument.
    pub instruments: [AtomicU8; INSTRUMENTS],
    /// Per account.
    pub accounts: [AtomicU8; ACCOUNTS],
}

/// A name slot: word 0 holds the length byte and the first 7 bytes and is
/// written last (Release); words 1..=3 hold the rest.
pub type NameSlot = [AtomicU64; 4];

/// The name tables that map names to scope indices.
#[repr(C, align(128))]
pub struct NameTables {
    /// Venue names.
    pub venues: [NameSlot; VENUES],
    /// Strategy names.
    pub strategies: [NameSlot; STRATEGIES],
    /// Instrument names.
    pub instruments: [NameSlot; INSTRUMENTS],
    /// Account names.
    pub accounts: [NameSlot; ACCOUNTS],
}

/// The whole file.
#[repr(C)]
pub struct Layout {
    /// Header.
    pub header: Header,
    /// The state word.
    pub state: Line<AtomicU64>,
    /// Gateway status.
    pub gateway: Line<GatewayStatus>,
    /// Drain status.
    pub drain: DrainStatus,
    /// Audit tickets.
    pub audit_head: Line<AtomicU64>,
    /// Audit ring.
    pub audit: [AuditSlot; AUDIT_SLOTS],
    /// Scope levels.
    pub levels: ScopeLevels,
    /// Name tables.
    pub names: NameTables,
    /// What the engine publishes about itself (layout 2.0).
    pub telemetry: Telemetry,
}

/// Strategy slots of the telemetry region: one per strategy scope index.
pub const TELEMETRY_STRATEGIES: usize = STRATEGIES;
/// Venue slots of the telemetry region: one per venue scope index.
pub const TELEMETRY_VENUES: usize = VENUES;
/// Rows of the positions table.
pub const TELEMETRY_POSITIONS: usize = 256;
/// Bytes of reason text in the shutdown announcement.
pub const ANNOUNCE_REASON_BYTES: usize = 128;

/// The engine-wide telemetry record (256 bytes) under one seqlock: `seq`
/// is odd while the writer fills it, even when complete.
#[repr(C, align(128))]
pub struct EngineTelemetry {
    /// Seqlock word.
    pub seq: AtomicU64,
    /// Engine status (`telemetry::EngineStatus` as u64).
    pub status: AtomicU64,
    /// When the status last changed, Unix ns.
    pub status_since_wall_ns: AtomicU64,
    /// Publications so far.
    pub publish_count: AtomicU64,
    /// Last publication, Unix ns.
    pub publish_wall_ns: AtomicU64,
    /// Last publication, `CLOCK_MONOTONIC` ns.
    pub publish_mono_ns: AtomicU64,
    /// Open orders (not terminal), all venues.
    pub open_orders: AtomicU64,
    /// Since when open orders have been above zero without a break, Unix
    /// ns; 0 while there are none.
    pub open_orders_nonzero_since_wall_ns: AtomicU64,
    /// Positions that are not flat.
    pub positions_open: AtomicU64,
    /// Strategies whose status is running.
    pub active_strategies: AtomicU64,
    /// New orders written to venues, ever (this run).
    pub orders_sent: AtomicU64,
    /// New orders a venue accepted.
    pub orders_acked: AtomicU64,
    /// New orders rejected (by a venue, or a failed write).
    pub orders_rejected: AtomicU64,
    /// Fills.
    pub fills: AtomicU64,
    /// Rejected / (accepted + rejected) over the last window, parts per million.
    pub reject_rate_ppm: AtomicU64,
    /// The window of `reject_rate_ppm`, ms.
    pub reject_window_ms: AtomicU64,
    /// P&L, units of 1/`PRICE_SCALE` (i64 stored as its bits).
    pub pnl: AtomicU64,
    /// Highest P&L this run, same units.
    pub pnl_peak: AtomicU64,
    /// Flattening slippage against the mid at its start (cost > 0), same units.
    pub flatten_slippage: AtomicU64,
    /// Layout 2.1: a planned shutdown asked of the engine (nonce, options),
    /// written by `killswitch shutdown` by compare-and-swap; 0 = none.
    pub shutdown_request: AtomicU64,
    /// Layout 2.1: when the requested shutdown starts, Unix ns (0 = now).
    pub shutdown_request_at_wall_ns: AtomicU64,
    /// Layout 2.1: the engine's progress through the planned shutdown
    /// (nonce, phase, phase state).
    pub shutdown_progress: AtomicU64,
    /// Layout 2.1: when the running phase started, Unix ns.
    pub shutdown_phase_since_wall_ns: AtomicU64,
    /// Layout 2.1: the finished shutdown's outcome bits (0 while running).
    pub shutdown_outcome: AtomicU64,
    /// Layout 2.1: the reduced position limit the gate enforces while the
    /// state word's `LIMITED` bit is set, lots (`Qty` units).
    pub position_limit: AtomicU64,
    /// One word per automatic rule (layout 2.2, `rules::Rule` order): how
    /// close it is to its limit and the warning grade reached, written by
    /// the runtime's rules (its supervisor thread) outside the seqlock;
    /// each word stands alone (see `rules::RuleGauge`). 0 = the rule is
    /// not configured.
    pub rule_gauges: [AtomicU64; 7],
}

/// The planned shutdown's announcement (256 bytes, own seqlock): set while
/// the engine is `SHUTTING_DOWN_SOON`.
#[repr(C, align(128))]
pub struct AnnouncementSlot {
    /// Seqlock word; 0 = never written.
    pub seq: AtomicU64,
    /// When the shutdown will start, Unix ns (0 = no announcement).
    pub shutdown_at_wall_ns: AtomicU64,
    /// When it was announced, Unix ns.
    pub announced_wall_ns: AtomicU64,
    /// Length of the reason in bytes.
    pub reason_len: AtomicU64,
    /// Reason, UTF-8.
    pub reason: [AtomicU64; ANNOUNCE_REASON_BYTES / 8],
    _reserved: [AtomicU64; 12],
}

/// One strategy's row (64 bytes, own seqlock; 0 = never published).
#[repr(C, align(64))]
pub struct StrategySlot {
    /// Seqlock word.
    pub seq: AtomicU64,
    /// Status (`telemetry::StrategyStatus` as u64).
    pub status: AtomicU64,
    /// Last trading signal (order decision) of the strategy, Unix ns.
    pub last_signal_wall_ns: AtomicU64,
    /// Its open orders.
    pub open_orders: AtomicU64,
    /// Its new orders written to venues.
    pub orders_sent: AtomicU64,
    /// Of those, accepted by a venue.
    pub orders_acked: AtomicU64,
    /// Of those, rejected.
    pub orders_rejected: AtomicU64,
    /// Its fills.
    pub fills: AtomicU64,
}

/// One venue's row of the connections table (128 bytes, own seqlock).
#[repr(C, align(128))]
pub struct VenueSlot {
    /// Seqlock word; 0 = never published.
    pub seq: AtomicU64,
    /// order entry `ConnState` (byte 0) | market data `ConnState` (byte 1)
    /// | `VenueState` (byte 2).
    pub states: AtomicU64,
    /// When `states` last changed, Unix ns.
    pub state_since_wall_ns: AtomicU64,
    /// Last sign of life of the session (heartbeat, message), Unix ns.
    pub last_heartbeat_wall_ns: AtomicU64,
    /// Open orders at this venue.
    pub open_orders: AtomicU64,
    /// New orders written.
    pub orders_sent: AtomicU64,
    /// Accepted.
    pub orders_acked: AtomicU64,
    /// Rejected.
    pub orders_rejected: AtomicU64,
    /// Fills.
    pub fills: AtomicU64,
    /// Reject rate over the engine's window, ppm.
    pub reject_rate_ppm: AtomicU64,
    _reserved: [AtomicU64; 6],
}

/// One position row (64 bytes); the whole table shares one seqlock.
#[repr(C, align(64))]
pub struct PositionSlot {
    /// venue u16 | instrument u16 << 16 | account u16 << 32.
    pub key: AtomicU64,
    /// Signed quantity, units of 1/`QTY_SCALE` (i64 bits).
    pub qty: AtomicU64,
    /// Mark price used for `pnl`, units of 1/`PRICE_SCALE` (i64 bits).
    pub mark_price: AtomicU64,
    /// P&L of the position at the mark, units of 1/`PRICE_SCALE` (i64 bits).
    pub pnl: AtomicU64,
    _reserved: [AtomicU64; 4],
}

/// The positions table: a seqlock over the count and every row.
#[repr(C, align(128))]
pub struct PositionsTable {
    /// Seqlock word; 0 = never published.
    pub seq: AtomicU64,
    /// Rows in use (at most `TELEMETRY_POSITIONS`).
    pub count: AtomicU64,
    /// Positions the engine had but the table could not hold.
    pub overflow: AtomicU64,
    _reserved: [AtomicU64; 13],
    /// Rows.
    pub rows: [PositionSlot; TELEMETRY_POSITIONS],
}

/// The telemetry region: what only the engine knows, published by its
/// supervisor thread (never the order path) for `status`, `serve` and
/// `watch`. One writer.
#[repr(C, align(128))]
pub struct Telemetry {
    /// Engine-wide record.
    pub engine: EngineTelemetry,
    /// Planned-shutdown announcement.
    pub announcement: AnnouncementSlot,
    /// Strategies table, indexed by strategy scope index.
    pub strategies: [StrategySlot; TELEMETRY_STRATEGIES],
    /// Connections table, indexed by venue scope index.
    pub venues: [VenueSlot; TELEMETRY_VENUES],
    /// Positions table.
    pub positions: PositionsTable,
}

/// Size of the control file in bytes.
pub const FILE_LEN: usize = size_of::<Layout>();

const _: () = {
    assert!(size_of::<Header>() == 128);
    assert!(offset_of!(Header, version) == 8);
    assert!(offset_of!(Header, file_len) == 16);
    assert!(offset_of!(Header, owner_pid) == 40);
    assert!(offset_of!(Header, heartbeat_mono_ns) == 56);
    assert!(offset_of!(Header, engine_name) == 72);
    assert!(offset_of!(Layout, state) == 128);
    assert!(offset_of!(Layout, gateway) == 256);
    assert!(offset_of!(GatewayStatus, role) == 40);
    assert!(size_of::<GatewayStatus>() <= 128);
    assert!(offset_of!(GatewayStatus, lease_holder) == 48);
    assert!(offset_of!(GatewayStatus, lease_holder_start) == 56);
    assert!(offset_of!(GatewayStatus, lease_expiry_mono_ns) == 64);
    assert!(offset_of!(GatewayStatus, lease_in_send) == 72);
    assert!(size_of::<GatewayStatus>() == 128);
    assert!(offset_of!(Layout, drain) == 384);
    assert!(size_of::<DrainStatus>() == 256);
    assert!(offset_of!(DrainStatus, t_trip) == 112);
    assert!(offset_of!(DrainStatus, flags) == 120);
    assert!(offset_of!(DrainStatus, incomplete_generation) == 128);
    assert!(offset_of!(DrainStatus, incomplete_meta) == 160);
    assert!(offset_of!(DrainStatus, incomplete_wall_ns) == 176);
    assert!(offset_of!(DrainStatus, standby_pid) == 184);
    assert!(offset_of!(DrainStatus, standby_updated_mono_ns) == 224);
    assert!(offset_of!(DrainStatus, failover_request) == 232);
    assert!(offset_of!(Layout, audit_head) == 640);
    assert!(offset_of!(Layout, audit) == 768);
    assert!(size_of::<AuditSlot>() == 256);
    assert!(offset_of!(Layout, levels) == 17152);
    assert!(size_of::<ScopeLevels>() == 5504);
    assert!(offset_of!(Layout, names) == 22656);
    assert!(size_of::<NameTables>() == 174080);
    assert!(offset_of!(Header, risk_trips) == 104);
    assert!(offset_of!(Header, risk_trips_reset) == 112);
    assert!(offset_of!(AuditSlot, reason) == 48);
    assert!(offset_of!(AuditSlot, identity) == 176);
    assert!(offset_of!(Layout, telemetry) == 196736);
    assert!(size_of::<EngineTelemetry>() == 256);
    assert!(offset_of!(EngineTelemetry, flatten_slippage) == 144);
    assert!(offset_of!(EngineTelemetry, rule_gauges) == 200);
    assert!(offset_of!(Header, change_flags) == 120);
    assert!(offset_of!(EngineTelemetry, shutdown_request) == 152);
    assert!(offset_of!(EngineTelemetry, position_limit) == 192);
    assert!(size_of::<AnnouncementSlot>() == 256);
    assert!(size_of::<StrategySlot>() == 64);
    assert!(size_of::<VenueSlot>() == 128);
    assert!(size_of::<PositionSlot>() == 64);
    assert!(offset_of!(PositionsTable, rows) == 128);
    assert!(offset_of!(Telemetry, announcement) == 256);
    assert!(offset_of!(Telemetry, strategies) == 512);
    assert!(offset_of!(Telemetry, venues) == 512 + 256 * 64);
    assert!(offset_of!(Telemetry, positions) == 512 + 256 * 64 + 64 * 128);
    assert!(size_of::<Telemetry>() == 41600);
    assert!(FILE_LEN == 238336);
    // Every field is an atomic, and atomics have the size and alignment of
    // their integer, so the byte offsets above are the file format.
    assert!(size_of::<AtomicU64>() == 8 && std::mem::align_of::<AtomicU64>() == 8);
};
