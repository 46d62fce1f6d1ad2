//! Several sending threads: the no-escape protocol for engines whose
//! strategy threads write to venues themselves (DESIGN.md, "the no-escape
//! protocol", way 2), beside the single gateway (way 1).
//!
//! Each sending thread holds a [`SendGuard`] with its own cache-padded
//! `in_send` word, a counter: odd while the thread is inside a send, even
//! outside. A send is:
//! 1. store `in_send` odd (Relaxed); a compiler fence (with `membarrier`)
//!    or a SeqCst fence (without);
//! 2. load the state word and decide with the gate (and the registry's
//!    position under REDUCE_ONLY);
//! 3. register the order, then write it (the caller's closure);
//! 4. store `in_send` even (Release).
//!
//! The drain, after it has seen a kill generation and before it snapshots,
//! issues `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)` (registered for
//! the process when the first guard is made), or a SeqCst fence where the
//! kernel lacks it (then the senders fence too), and then waits until every
//! sender that was inside a send has left it (its word changed). Either a
//! sender loaded the state word after the barrier and saw the trip (it
//! refuses), or the drain saw its word odd and waited for it to register
//! its order. The hot path stays one load plus two plain stores; the
//! expensive barrier is paid once per kill, by the drain.
//!
//! Why it holds: `membarrier` makes every running thread of the process
//! execute a full memory barrier before it returns, so it stands for a
//! SeqCst fence in each sender at the point it was interrupted; with
//! SeqCst fences on both sides, a sender's load that misses the trip puts
//! its fence before the drain's in the single total order of SeqCst
//! fences, and then the drain's load of `in_send` after its fence must see
//! the odd value (C++20 [atomics.order]). `tests/loom_senders.rs` checks
//! this with the crate's own functions below (in the fallback form, fences
//! on both sides: loom has no `membarrier`), and that removing the fence
//! breaks it.
//!
//! Deviation from DESIGN.md: the order is registered *before* it is
//! written (DESIGN.md says write, then register), as the gateway does: an
//! answer can then never arrive for an order the registry does not know.
//!
//! # Invariants
//! * Only the guard's thread stores its `in_send` word (`SendGuard` is
//!   `Send`, not `Sync` or `Clone`).
//! * A send that unwinds (a panicking write) still leaves `in_send` even.
//! * Every guard's word is in the set before its first send; a guard
//!   dropped is marked retired and left out of later waits.

use std::sync::atomic::{compiler_fence, AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use crossbeam_utils::CachePadded;

use crate::control::state::AtomicWord;
use crate::control::StateWord;
use crate::gate::{Gate, Rejection, Verdict};
use crate::order::{OrderId, OrderIntent, ScopeIndex};
use crate::registry::Registry;
use crate::venue::{NewOrder, VenueError};

#[cfg(loom)]
use loom::sync::atomic::fence;
#[cfg(not(loom))]
use std::sync::atomic::fence;

/// `MEMBARRIER_CMD_QUERY` (linux/membarrier.h).
const MEMBARRIER_CMD_QUERY: libc::c_long = 0;
/// `MEMBARRIER_CMD_PRIVATE_EXPEDITED`.
const MEMBARRIER_CMD_PRIVATE_EXPEDITED: libc::c_long = 1 << 3;
/// `MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED`.
const MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED: libc::c_long = 1 << 4;

/// Whether this process registered for expedited private membarriers.
static MEMBARRIER: OnceLock<bool> = OnceLock::new();

/// Registers the process for `MEMBARRIER_CMD_PRIVATE_EXPEDITED` (once);
/// false when the kernel (or a seccomp filter) does not offer it.
fn membarrier_registered() -> bool {
    *MEMBARRIER.get_or_init(|| {
        // SAFETY: membarrier(2) with QUERY takes no pointers; it returns a
        // bit mask of the commands the kernel supports, or -1.
        let supported = unsafe { libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_QUERY, 0) };
        if supported < 0 || supported & MEMBARRIER_CMD_PRIVATE_EXPEDITED == 0 {
            return false;
        }
        // SAFETY: as above; REGISTER takes no pointers and only marks the
        // process (idempotent).
        let r = unsafe {
            libc::syscall(
                libc::SYS_membarrier,
                MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED,
                0,
            )
        };
        r == 0
    })
}

/// True when this process can use `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)`
/// (registering it for the process on the first call). Without it, send
/// guards fence each send themselves.
pub fn membarrier_available() -> bool {
    membarrier_registered()
}

/// How the senders' side of the protocol fences.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SendFence {
    /// `membarrier` on the drain's side and a compiler fence in the
    /// senders when the kernel offers it; [`SendFence::SeqCst`] otherwise.
    #[default]
    Auto,
    /// A SeqCst fence on both sides (no `membarrier`): costs each send a
    /// full fence. For kernels without `membarrier`, and to measure.
    SeqCst,
}

/// The protocol's steps, generic over the atomic word so the loom model
/// (`tests/loom_senders.rs`) runs this code on loom's atomics.
pub mod protocol {
    use super::*;

    /// Enters a send: `in_send` odd, the fence, then the state word.
    /// `heavy`: a SeqCst fence (no membarrier on the drain's side).
    #[inline]
    pub fn enter<W: AtomicWord + ?Sized>(
        in_send: &W,
        seq: u64,
        state: &W,
        heavy: bool,
    ) -> StateWord {
        in_send.store_word(seq + 1, Ordering::Relaxed);
        if heavy {
            fence(Ordering::SeqCst);
        } else {
            // Keeps the compiler from moving the state load above the
            // store; the CPU's reordering is the drain's membarrier's job.
            compiler_fence(Ordering::SeqCst);
        }
        StateWord(state.load_word(Ordering::Acquire))
    }

    /// Leaves a send: `in_send` even again (Release: the registration made
    /// inside is visible to whoever sees the new value).
    #[inline]
    pub fn leave<W: AtomicWord + ?Sized>(in_send: &W, seq: u64) {
        in_send.store_word(seq + 2, Ordering::Release);
    }

    /// The drain's barrier after it saw a kill generation: `membarrier`
    /// when some sender relies on it, and a SeqCst fence (the other side
    /// of the senders that fence themselves; cheap beside the syscall).
    #[inline]
    pub fn drain_barrier(membarrier: bool) {
        if membarrier {
            // SAFETY: membarrier(2) with PRIVATE_EXPEDITED takes no
            // pointers; the process registered before any guard relying on
            // it was made. It cannot fail once registered (EPERM is for an
            // unregistered process), so its result is not looked at.
            let _ =
                unsafe { libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0) };
        }
        fence(Ordering::SeqCst);
    }

    /// The value of a sender's word if it is inside a send (odd), after the
    /// barrier; the drain waits until the word differs from it.
    #[inline]
    pub fn inside<W: AtomicWord + ?Sized>(in_send: &W) -> Option<u64> {
        let v = in_send.load_word(Ordering::Acquire);
        (v & 1 == 1).then_some(v)
    }
}

/// One sender's word, on its own cache line.
pub(crate) struct SenderSlot {
    in_send: CachePadded<AtomicU64>,
    retired: AtomicBool,
}

/// Every sending thread's word, for the drain.
#[derive(Default)]
pub(crate) struct SenderSet {
    slots: Mutex<Vec<Arc<SenderSlot>>>,
    /// A guard was ever made: the drain has senders to wait for.
    any: AtomicBool,
    /// Some sender relies on the drain's membarrier (only a compiler fence
    /// on its side).
    light: AtomicBool,
}

/// Senders the drain found inside a send after its barrier.
pub(crate) struct Quiesce {
    busy: Vec<(Arc<SenderSlot>, u64)>,
    /// How many it found.
    pub(crate) found: usize,
}

impl Quiesce {
    /// True once every sender found inside a send has left it.
    pub(crate) fn is_quiet(&mut self) -> bool {
        self.busy
            .retain(|(s, v)| s.in_send.load(Ordering::Acquire) == *v);
        self.busy.is_empty()
    }
}

impl SenderSet {
    /// After the drain saw a kill generation: the barrier, then the
    /// senders inside a send. `None` when no guard was ever made.
    pub(crate) fn begin_quiesce(&self) -> Option<Quiesce> {
        if !self.any.load(Ordering::Acquire) {
            return None;
        }
        protocol::drain_barrier(self.light.load(Ordering::Acquire));
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.retain(|s| !s.retired.load(Ordering::Acquire));
        let busy: Vec<_> = slots
            .iter()
            .filter_map(|s| protocol::inside(&*s.in_send).map(|v| (s.clone(), v)))
            .collect();
        Some(Quiesce {
            found: busy.len(),
            busy,
        })
    }

    fn add(&self, fence: SendFence) -> (Arc<SenderSlot>, bool) {
        let heavy = match fence {
            SendFence::SeqCst => true,
            SendFence::Auto => !membarrier_registered(),
        };
        if !heavy {
            // Before the slot is in the set: a drain that sees the slot
            // also sees that it must issue the membarrier.
            self.light.store(true, Ordering::Release);
        }
        let slot = Arc::new(SenderSlot {
            in_send: CachePadded::new(AtomicU64::new(0)),
            retired: AtomicBool::new(false),
        });
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.push(slot.clone());
        self.any.store(true, Ordering::Release);
        (slot, heavy)
    }
}

/// Why [`SendGuard::send`] sent nothing, or what went wrong with the write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The gate refused it: nothing was registered or written.
    #[error("order refused by the kill switch: {0:?}")]
    Refused(Rejection),
    /// Orders an earlier run left open are being cancelled: no new order
    /// until that is over. Nothing was registered or written.
    #[error("orders an earlier run left open are being cancelled first: retry shortly")]
    RecoveryPending,
    /// The write failed with nothing sent: the order is rejected locally.
    #[error("order {id} not written: {error}")]
    NotWritten {
        /// The order (registered, now `Rejected`).
        id: OrderId,
        /// The session's error.
        error: VenueError,
    },
    /// The write failed part-way: the venue may be working the order. It
    /// is `SendUnknown`; a kill cancels it by id or reports it.
    #[error("order {0} may have reached the venue (the write failed part-way): it is SendUnknown")]
    Ambiguous(OrderId),
}

/// A sending thread's guard: the way for a strategy thread that writes to
/// its venue itself (not through the gateway) to stay inside the no-escape
/// rule. Made by [`Runtime::send_guard`](crate::runtime::Runtime::send_guard);
/// `Send`, not `Clone` or `Sync`: exactly one thread stores its word. The
/// venue's answers still come back through the gateway, which polls the
/// [`Venue`](crate::venue::Venue) registered with the runtime (a session
/// whose write half the sender uses and whose read half the gateway polls).
pub struct SendGuard {
    slot: Arc<SenderSlot>,
    seq: u64,
    heavy: bool,
    gate: Gate,
    registry: Arc<Registry>,
    next_id: Arc<AtomicU64>,
    strategy: ScopeIndex,
}

impl std::fmt::Debug for SendGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendGuard")
            .field("strategy", &self.strategy)
            .field("seq", &self.seq)
            .field("heavy", &self.heavy)
            .finish()
    }
}

/// Leaves the send even when the write unwinds.
struct Leave<'a> {
    in_send: &'a AtomicU64,
    seq: u64,
}

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        protocol::leave(self.in_send, self.seq);
    }
}

impl SendGuard {
    pub(crate) fn new(
        set: &SenderSet,
        fence: SendFence,
        gate: Gate,
        registry: Arc<Registry>,
        next_id: Arc<AtomicU64>,
        strategy: ScopeIndex,
    ) -> SendGuard {
        let (slot, heavy) = set.add(fence);
        SendGuard {
            slot,
            seq: 0,
            heavy,
            gate,
            registry,
            next_id,
            strategy,
        }
    }

    /// True when this guard fences each send itself (no `membarrier`).
    pub fn fences_each_send(&self) -> bool {
        self.heavy
    }

    /// Sends one order: enters, checks the state word with the gate,
    /// registers the order (its strategy tag set to this guard's), calls
    /// `write` with it (the caller's venue write), and leaves. `write` runs
    /// inside the send: keep it to the write itself (a drain waits for it).
    pub fn send(
        &mut self,
        intent: &OrderIntent,
        write: impl FnOnce(&NewOrder) -> Result<(), VenueError>,
    ) -> Result<OrderId, SendError> {
        if self.registry.recovery_pending() {
            return Err(SendError::RecoveryPending);
        }
        let seq = self.seq;
        self.seq += 2;
        let w = protocol::enter(&*self.slot.in_send, seq, self.gate.state_word(), self.heavy);
        let _leave = Leave {
            in_send: &self.slot.in_send,
            seq,
        };
        let mut tags = intent.tags;
        tags.strategy = self.strategy;
        // REDUCE_ONLY decides on the registry's position, not the
        // strategy's belief.
        let position = self.gate.position_to_decide(w, tags, &self.registry);
        let decided = OrderIntent {
            tags,
            position,
            ..*intent
        };
        if let Verdict::Reject(r) = self.gate.check_word(w, &decided) {
            return Err(SendError::Refused(r));
        }
        let order = NewOrder {
            id: OrderId(self.next_id.fetch_add(1, Ordering::Relaxed)),
            tags,
            side: intent.side,
            price: intent.price,
            qty: intent.qty,
        };
        if self.registry.register(&order).is_err() {
            // Ids come from the runtime's one counter: cannot happen unless
            // an id was given out twice; nothing is written.
            return Err(SendError::NotWritten {
                id: order.id,
                error: VenueError::Unsupported("a duplicate order id"),
            });
        }
        match write(&order) {
            Ok(()) => Ok(order.id),
            Err(VenueError::Ambiguous) => {
                self.registry.send_ambiguous(order.id);
                Err(SendError::Ambiguous(order.id))
            }
            Err(error) => {
                self.registry.send_failed(order.id, error);
                Err(SendError::NotWritten {
                    id: order.id,
                    error,
                })
            }
        }
    }
}

impl Drop for SendGuard {
    fn drop(&mut self) {
        self.slot.retired.store(true, Ordering::Release);
    }
}
