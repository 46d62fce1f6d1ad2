//! One drain, from the trip it saw to its report: snapshots and cancels of
//! each generation taken in, the checkpoint, the "drain incomplete" record;
//! also the start-up recovery of an earlier run's orders. The tracking loop
//! is in `track.rs`. See the module docs of [`crate::drain`] for the steps.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use rustc_hash::FxHashSet;

use super::report::{DrainError, DrainFill, DrainOutcome, Escalation};
use super::{CheckpointHook, DrainConfig};
use crate::backoff::{Backoff, BackoffConfig};
use crate::clock::{mono_ns, wall_ns};
use crate::control::layout::DRAIN_FLAG_RECOVERY;
use crate::control::{
    AuditKind, ControlBlock, DrainIncomplete, DrainPhase, DrainStatus, IncompleteWriter, Mode,
    ScopeKind, StateWord,
};
use crate::gateway::{CancelRequest, DrainLink};
use crate::order::{OrderId, OrderState, ScopeIndex};
use crate::registry::OrderRecord;
use crate::senders::Quiesce;
use crate::venue::MassCancelScope;

/// Open orders looked at per hold of the registry lock when a snapshot is
/// taken in chunks: a few µs of copying, so the first cancel does not wait
/// for the whole book and the gateway is never locked out for long.
const SNAPSHOT_CHUNK: usize = 128;
/// The first chunk is smaller: it is all that stands between the gateway's
/// acknowledgement and the first cancel.
const FIRST_CHUNK: usize = 16;

/// The drain thread's state.
pub(super) struct Drainer {
    pub(super) block: Arc<ControlBlock>,
    pub(super) link: DrainLink,
    pub(super) cfg: DrainConfig,
    pub(super) checkpoint: Option<CheckpointHook>,
    /// This process (pid, start ticks): the writer of its own records.
    pub(super) me: (u32, u64),
    pub(super) stop: Arc<AtomicBool>,
}

/// What KILL is on at one generation.
#[derive(Clone, Debug, Default)]
pub(super) struct KillSet {
    global: bool,
    /// Killed (kind byte, index), sorted (the order they are read in).
    scopes: Vec<(u8, u16)>,
}

impl KillSet {
    fn read(block: &ControlBlock, w: StateWord) -> KillSet {
        let mut scopes = Vec::new();
        // A global KILL covers every scope: no need to read the tables
        // (5,440 levels) on the way to the first cancel.
        if w.scoped() && w.mode() != Mode::Kill {
            for kind in ScopeKind::ALL {
                for (i, l) in kind.levels(&block.layout().levels).iter().enumerate() {
                    if Mode::from_level(l.load(Ordering::Acquire)) == Mode::Kill {
                        scopes.push((kind as u8, i as u16));
                    }
                }
            }
        }
        KillSet {
            global: w.mode() == Mode::Kill,
            scopes,
        }
    }

    fn has(&self, kind: ScopeKind, index: u16) -> bool {
        self.scopes.binary_search(&(kind as u8, index)).is_ok()
    }

    fn kills(&self, o: &OrderRecord) -> bool {
        self.global
            || self.has(ScopeKind::Venue, o.tags.venue)
            || self.has(ScopeKind::Strategy, o.tags.strategy)
            || self.has(ScopeKind::Instrument, o.tags.instrument)
            || self.has(ScopeKind::Account, o.tags.account)
    }

    /// The whole venue is killed: a mass cancel there hits only orders in scope.
    fn kills_venue(&self, venue: ScopeIndex) -> bool {
        self.global || self.has(ScopeKind::Venue, venue)
    }
}

/// Orders whose cancels went out together and share a deadline.
pub(super) struct Batch {
    pub(super) snapshot: Vec<OrderRecord>,
    pub(super) pending: Vec<OrderId>,
    pub(super) not_sent: FxHashSet<OrderId>,
    pub(super) half: Instant,
    pub(super) deadline: Instant,
    pub(super) resent: bool,
}

/// A generation waiting for the gateway's acknowledgement.
pub(super) struct Awaiting {
    pub(super) w: StateWord,
    pub(super) t_seen: u64,
    pub(super) since: Instant,
    pub(super) late: bool,
    /// The sending threads found inside a send after the barrier (way 2):
    /// the generation counts as acknowledged only once they have all left.
    pub(super) senders: Option<Quiesce>,
}

impl Awaiting {
    /// True when the gateway acknowledged the generation (`acked`) and
    /// every sender found inside a send has left it.
    pub(super) fn is_acknowledged(&mut self, acked: u64) -> bool {
        acked >= self.w.generation() && self.senders.as_mut().is_none_or(|q| q.is_quiet())
    }
}

/// One drain in progress.
pub(super) struct Run {
    pub(super) batches: Vec<Batch>,
    pub(super) tracked: FxHashSet<OrderId>,
    /// What KILL was on at the last snapshot (`None`: none taken yet).
    pub(super) kill: Option<KillSet>,
    pub(super) awaiting: Option<Awaiting>,
    /// Re-read the state word for newer generations (not in recovery).
    pub(super) watch_word: bool,
    /// The record this drain owns (`None`: another process's unfinished
    /// drain is on record and stays there).
    pub(super) record: Option<DrainIncomplete>,
}

pub(super) fn set(a: &AtomicU64, v: u64) {
    a.store(v, Ordering::Release);
}

/// Counts one enqueued cancel request and publishes it; `first` is the
/// first-cancel time of the generation being taken in.
#[inline]
fn note_enqueued(out: &mut DrainOutcome, ds: &DrainStatus, mass: bool, first: &mut u64) {
    if *first == 0 {
        *first = mono_ns();
        set(&ds.t_first_cancel, *first);
    }
    out.cancel_requests += 1;
    if mass {
        out.mass_cancels += 1;
    }
    set(&ds.cancels_sent, out.cancel_requests);
}

impl Drainer {
    /// After a kill generation was seen: the senders' barrier and who is
    /// inside a send (`None` without send guards).
    pub(super) fn quiesce_senders(&self) -> Option<Quiesce> {
        self.link.senders.as_ref().and_then(|s| s.begin_quiesce())
    }

    /// Starts the record of this drain: it takes over its own process's
    /// record, and (`recovery`) any record, since a start-up recovery
    /// drains everything the journal holds open; another process's record
    /// of an unfinished drain otherwise stays as it is.
    fn begin_record(&self, generation: u64, recovery: bool) -> Option<DrainIncomplete> {
        if let Some(old) = self.block.drain_incomplete() {
            if !recovery && !old.written_by(self.me.0, self.me.1) {
                return None;
            }
        }
        let rec = DrainIncomplete {
            generation,
            open: 0,
            confirmed: 0,
            unknown: 0,
            writer: IncompleteWriter::Drain,
            no_snapshot: true,
            pid: self.me.0,
            writer_start_ticks: self.me.1,
            wall_ns: wall_ns(),
        };
        self.block.record_drain_incomplete(&rec);
        Some(rec)
    }

    /// The drain of the kill generation `w`, seen at `t_seen`.
    pub(super) fn run(&mut self, w: StateWord, t_seen: u64) -> DrainOutcome {
        let block = self.block.clone();
        let ds = block.drain_status();
        let g = w.generation();
        set(&ds.phase, DrainPhase::AwaitingGatewayAck as u64);
        set(&ds.generation, g);
        set(&ds.t_trip_seen, t_seen);
        set(&ds.flags, 0);
        for a in [
            &ds.open_at_snapshot,
            &ds.cancels_sent,
            &ds.orders_confirmed,
            &ds.fills_during_drain,
            &ds.checkpoint_seq,
            &ds.t_gateway_ack,
            &ds.t_first_cancel,
            &ds.t_last_ack,
            &ds.t_checkpoint,
            &ds.t_done,
            &ds.t_trip,
        ] {
            set(a, 0);
        }
        let mut out = DrainOutcome::new(g, w.mode() == Mode::Kill);
        out.timings.t_trip_seen = t_seen;
        let mut run = Run {
            batches: Vec::new(),
            tracked: FxHashSet::default(),
            kill: None,
            awaiting: Some(Awaiting {
                w,
                t_seen,
                since: Instant::now(),
                late: false,
                senders: self.quiesce_senders(),
            }),
            watch_word: true,
            record: None,
        };
        // After the first ack wait has started: the record costs a handful
        // of stores, but none of them delays the reaction to the trip.
        run.record = self.begin_record(g, false);
        self.track(&mut run, &mut out);
        self.finish(run, out)
    }

    /// The start-up drain of the orders adopted from an earlier run.
    pub(super) fn run_recovery(&mut self) -> DrainOutcome {
        let block = self.block.clone();
        let ds = block.drain_status();
        let t_start = mono_ns();
        let g = block.state().generation();
        // Generation 0 in the status: this drain is not the answer to a
        // trip (an `emergency` following a trip waits for that drain).
        set(&ds.generation, 0);
        set(&ds.flags, DRAIN_FLAG_RECOVERY);
        for a in [
            &ds.open_at_snapshot,
            &ds.cancels_sent,
            &ds.orders_confirmed,
            &ds.fills_during_drain,
            &ds.checkpoint_seq,
            &ds.t_first_cancel,
            &ds.t_last_ack,
            &ds.t_checkpoint,
            &ds.t_done,
            &ds.t_trip,
        ] {
            set(a, 0);
        }
        set(&ds.t_trip_seen, t_start);
        set(&ds.t_gateway_ack, t_start);
        set(&ds.phase, DrainPhase::Cancelling as u64);
        let mut out = DrainOutcome::new(g, false);
        out.recovery = true;
        out.timings.t_trip_seen = t_start;
        let mut run = Run {
            batches: Vec::new(),
            tracked: FxHashSet::default(),
            kill: None,
            awaiting: None,
            watch_word: false,
            record: self.begin_record(g, true),
        };
        // No new order has been written (the gateway holds them), so a
        // venue whose open orders are all recovered gets one mass cancel.
        let registry = self.link.registry.clone();
        let (snapshot, mass) = registry.read(|view| {
            let snapshot = view.open_orders(|o| o.state == OrderState::Recovered);
            let mass: Vec<ScopeIndex> = self
                .link
                .venues
                .iter()
                .filter(|v| v.mass_cancel && self.cfg.use_mass_cancel)
                .map(|v| v.index)
                .filter(|&v| {
                    let here = snapshot.iter().filter(|o| o.tags.venue == v).count();
                    here > 0 && here == view.open_on_venue(v)
                })
                .collect();
            (snapshot, mass)
        });
        let mut first = 0;
        let batch = self.cancel(snapshot, &mass, &[], &mut out, &mut first);
        out.timings.t_first_cancel = first;
        self.add_batch(&mut run, batch, &mut out);
        self.track(&mut run, &mut out);
        self.link.registry.finish_recovery();
        self.finish(run, out)
    }

    fn add_batch(&self, run: &mut Run, batch: Batch, out: &mut DrainOutcome) {
        let ds = self.block.drain_status();
        out.open_at_snapshot += batch.snapshot.len();
        set(&ds.open_at_snapshot, out.open_at_snapshot as u64);
        run.tracked.extend(batch.pending.iter().copied());
        if let Some(rec) = run.record.as_mut() {
            rec.open = out.open_at_snapshot as u64;
            rec.no_snapshot = false;
            rec.generation = out.last_generation;
            self.block.record_drain_incomplete(rec);
        }
        run.batches.push(batch);
    }

    /// The gateway acknowledged `a.w`: mass cancels of the venues it newly
    /// kills whole, a snapshot of the open orders newly in scope, cancels
    /// for them.
    pub(super) fn take(&mut self, run: &mut Run, a: &Awaiting, out: &mut DrainOutcome) {
        let block = self.block.clone();
        let ds = block.drain_status();
        let t_ack = mono_ns();
        set(&ds.t_gateway_ack, t_ack);
        let kill = KillSet::read(&block, a.w);
        let first_take = run.kill.is_none();
        // A venue killed whole by this generation and not before: one mass
        // cancel. (A venue killed whole before had its orders snapshotted
        // after an acknowledgement that already refused new ones there.)
        let mass_venues: Vec<ScopeIndex> = if self.cfg.use_mass_cancel {
            self.link
                .venues
                .iter()
                .filter(|v| {
                    v.mass_cancel
                        && kill.kills_venue(v.index)
                        && !run.kill.as_ref().is_some_and(|k| k.kills_venue(v.index))
                })
                .map(|v| v.index)
                .collect()
        } else {
            Vec::new()
        };
        let mut first = 0u64;
        let mut mass_sent = Vec::with_capacity(mass_venues.len());
        let DrainLink {
            cancels, registry, ..
        } = &mut self.link;
        let tracked = &run.tracked;
        let in_scope = |o: &OrderRecord| kill.kills(o) && !tracked.contains(&o.id);
        // Without a mass cancel in this generation the snapshot is taken in
        // chunks, each under its own hold of the registry lock, and each
        // chunk's cancels are enqueued before the next is copied: the first
        // cancel leaves after one chunk, not after the whole book, and the
        // gateway sends (it needs the lock) while the drain copies.
        let chunked = mass_venues.is_empty();
        let mut cursor = usize::MAX;
        // Mass cancels go first, under the registry lock: the gateway
        // applies the venue's answers under that lock, so none of the orders
        // they cancel can close before the snapshot below has copied them.
        let snapshot = registry.read(|view| {
            if chunked {
                let mut first_chunk = Vec::with_capacity(FIRST_CHUNK);
                view.open_orders_below(&mut cursor, FIRST_CHUNK, in_scope, &mut first_chunk);
                return first_chunk;
            }
            for &venue in &mass_venues {
                if view.open_on_venue(venue) == 0 {
                    continue;
                }
                let req = CancelRequest::MassCancel {
                    venue,
                    scope: MassCancelScope::All,
                };
                // Never wait for ring space under the lock: a full ring falls
                // back to the ordinary path after the snapshot.
                if cancels.try_push(req).is_ok() {
                    note_enqueued(out, ds, true, &mut first);
                    mass_sent.push(venue);
                }
            }
            view.open_orders(in_scope)
        });
        if first_take {
            out.timings.t_gateway_ack = t_ack;
        }
        out.global |= kill.global;
        set(&ds.generation, a.w.generation());
        let batch = if chunked {
            self.cancel_in_chunks(snapshot, cursor, in_scope, out, &mut first)
        } else {
            self.cancel(snapshot, &mass_venues, &mass_sent, out, &mut first)
        };
        let n = batch.snapshot.len();
        if first_take {
            out.timings.t_first_cancel = first;
            out.timings.t_last_cancel_enqueued = mono_ns();
            // This generation's own record: the tripper writes it after its
            // compare-and-swap, so it may not be there yet (then `finish`
            // looks again), and the newest trip in the ring may be an older one.
            let t = trip_time(&block, a.w.generation());
            if t != 0 {
                out.timings.t_trip = t;
                set(&ds.t_trip, t);
            }
        } else {
            let t_trip = trip_time(&block, a.w.generation());
            set(&ds.t_trip, t_trip);
            out.escalations.push(Escalation {
                generation: a.w.generation(),
                t_trip,
                t_seen: a.t_seen,
                t_gateway_ack: t_ack,
                t_first_cancel: first,
                open_at_snapshot: n,
            });
        }
        if a.late {
            if let Some(DrainError::GatewayAckLate { acked_after, .. }) = out.error.as_mut() {
                acked_after.get_or_insert(a.since.elapsed());
            }
        }
        set(&ds.phase, DrainPhase::Cancelling as u64);
        run.kill = Some(kill);
        self.add_batch(run, batch, out);
    }

    /// Single cancels of the orders in scope, snapshot chunk by chunk:
    /// enqueues `chunk`'s cancels, then copies the next chunk below `cursor`
    /// under a new hold of the registry lock (see
    /// [`crate::registry::RegistryView::open_orders_below`]), until the
    /// whole open list was walked. An order seen twice is taken once.
    fn cancel_in_chunks(
        &mut self,
        mut chunk: Vec<OrderRecord>,
        mut cursor: usize,
        mut in_scope: impl FnMut(&OrderRecord) -> bool,
        out: &mut DrainOutcome,
        first: &mut u64,
    ) -> Batch {
        let ds = self.block.drain_status();
        let now = Instant::now();
        let deadline = now + self.cfg.cancel_deadline;
        let mut not_sent = FxHashSet::default();
        let mut b = Backoff::new(BackoffConfig::busy());
        let mut snapshot: Vec<OrderRecord> = Vec::with_capacity(chunk.len());
        let mut taken = FxHashSet::default();
        loop {
            for o in chunk.drain(..) {
                if !taken.insert(o.id) {
                    continue;
                }
                match self
                    .link
                    .cancels
                    .push_until(CancelRequest::Cancel(o.id), deadline, &mut b)
                {
                    Ok(()) => note_enqueued(out, ds, false, first),
                    Err(_) => {
                        not_sent.insert(o.id);
                    }
                }
                snapshot.push(o);
            }
            if cursor == 0 {
                break;
            }
            self.link.registry.read(|view| {
                view.open_orders_below(&mut cursor, SNAPSHOT_CHUNK, &mut in_scope, &mut chunk)
            });
        }
        Batch {
            pending: snapshot.iter().map(|o| o.id).collect(),
            snapshot,
            not_sent,
            half: deadline - self.cfg.cancel_deadline / 2,
            deadline,
            resent: false,
        }
    }

    /// Enqueues the cancels of `snapshot` not covered by a mass cancel
    /// already sent: mass cancels of `mass_venues` with orders in the
    /// snapshot that are not in `mass_sent`, single cancels of the other
    /// venues' orders. Returns the batch to track.
    fn cancel(
        &mut self,
        snapshot: Vec<OrderRecord>,
        mass_venues: &[ScopeIndex],
        mass_sent: &[ScopeIndex],
        out: &mut DrainOutcome,
        first: &mut u64,
    ) -> Batch {
        let ds = self.block.drain_status();
        let now = Instant::now();
        let deadline = now + self.cfg.cancel_deadline;
        let mut not_sent = FxHashSet::default();
        let mut b = Backoff::new(BackoffConfig::busy());
        let mass: Vec<ScopeIndex> = mass_venues
            .iter()
            .copied()
            .filter(|v| mass_sent.contains(v) || snapshot.iter().any(|o| o.tags.venue == *v))
            .collect();
        let requests = mass
            .iter()
            .filter(|v| !mass_sent.contains(v))
            .map(|&venue| CancelRequest::MassCancel {
                venue,
                scope: MassCancelScope::All,
            })
            .chain(
                snapshot
                    .iter()
                    .filter(|o| !mass.contains(&o.tags.venue))
                    .map(|o| CancelRequest::Cancel(o.id)),
            );
        for req in requests {
            match self.link.cancels.push_until(req, deadline, &mut b) {
                Ok(()) => note_enqueued(
                    out,
                    ds,
                    matches!(req, CancelRequest::MassCancel { .. }),
                    first,
                ),
                Err(CancelRequest::Cancel(id)) => {
                    not_sent.insert(id);
                }
                Err(CancelRequest::MassCancel { venue, .. }) => not_sent.extend(
                    snapshot
                        .iter()
                        .filter(|o| o.tags.venue == venue)
                        .map(|o| o.id),
                ),
            }
        }
        Batch {
            pending: snapshot.iter().map(|o| o.id).collect(),
            snapshot,
            not_sent,
            half: deadline - self.cfg.cancel_deadline / 2,
            deadline,
            resent: false,
        }
    }

    /// Fills, checkpoint, the final phase and the record.
    fn finish(&mut self, run: Run, mut out: DrainOutcome) -> DrainOutcome {
        let ds = self.block.drain_status();
        out.fills_during_drain = self.fills_since(&run.batches);
        set(
            &ds.fills_during_drain,
            out.fills_during_drain
                .iter()
                .map(|f| u64::from(f.fills))
                .sum(),
        );
        set(&ds.phase, DrainPhase::Checkpointing as u64);
        if let Some(hook) = self.checkpoint.as_mut() {
            match hook(&out) {
                Ok(seq) => {
                    out.checkpoint_seq = Some(seq);
                    out.timings.t_checkpoint = mono_ns();
                    set(&ds.checkpoint_seq, seq);
                    set(&ds.t_checkpoint, out.timings.t_checkpoint);
                }
                Err(e) => {
                    out.error.get_or_insert(DrainError::CheckpointFailed(e));
                }
            }
        }
        if let Some(mut rec) = run.record {
            if out.is_clean() {
                self.block.clear_drain_incomplete(rec.meta());
            } else {
                rec.confirmed = out.confirmed() as u64;
                rec.unknown = out.unknown.len() as u64;
                rec.wall_ns = wall_ns();
                self.block.record_drain_incomplete(&rec);
            }
        }
        if out.timings.t_trip == 0 && !out.recovery {
            let t = trip_time(&self.block, out.generation);
            if t != 0 {
                out.timings.t_trip = t;
                set(&ds.t_trip, t);
            }
        }
        out.timings.t_done = mono_ns();
        set(&ds.t_done, out.timings.t_done);
        let phase = if out.error.is_some() {
            DrainPhase::Failed
        } else {
            DrainPhase::Done
        };
        set(&ds.phase, phase as u64);
        out
    }

    fn fills_since(&self, batches: &[Batch]) -> Vec<DrainFill> {
        self.link.registry.read(|view| {
            batches
                .iter()
                .flat_map(|b| b.snapshot.iter())
                .filter_map(|s| {
                    let now = view.get(s.id)?;
                    (now.fills > s.fills).then(|| DrainFill {
                        id: s.id,
                        fills: now.fills - s.fills,
                        qty: crate::order::Qty(now.filled.0 - s.filled.0),
                    })
                })
                .collect()
        })
    }
}

/// When the trip that made `generation` was made (its audit record,
/// `CLOCK_MONOTONIC` ns), or 0 when that record is not (yet) in the ring.
fn trip_time(block: &ControlBlock, generation: u64) -> u64 {
    block
        .audit()
        .iter()
        .rev()
        .find(|e| e.kind == AuditKind::Trip && e.generation == generation)
        .map_or(0, |e| e.mono_ns)
}
