//! `killswitch`: stop an automated trading engine safely, in microseconds, and
//! prove that nothing escapes and nothing is lost.
//!
//! * [`control`]: the shared-memory control block with the kill flag (state
//!   word), scopes, trip record and audit ring.
//! * [`gate`]: the hot-path check every order passes.
//! * [`order`]: order value types (fixed-point money, scope tags).
//! * [`checkpoint`]: complete (planned-shutdown) checkpoint files, validation.
//! * [`journal`]: the mmap append-only journal, quick checkpoints, recovery
//!   and state rebuild.
//! * [`registry`]: every order written to a venue, and positions.
//! * [`gateway`]: the one thread that writes to venues.
//! * [`drain`]: the pinned thread that cancels everything on a kill.
//! * [`venue`]: venue sessions, and a simulated exchange.
//!
//! ```
//! use std::sync::Arc;
//! use killswitch::control::{ControlBlock, Mode, Source, Tripper};
//! use killswitch::gate::Gate;
//! use killswitch::order::{OrderIntent, Price, Qty, ScopeTags, Side};
//!
//! let dir = tempfile::tempdir()?;
//! let block = Arc::new(ControlBlock::open_or_create(dir.path(), "doc-engine")?);
//! let gate = Gate::new(block.clone());
//! let order = OrderIntent {
//!     tags: ScopeTags::default(),
//!     side: Side::Buy,
//!     qty: Qty::from_lots(1),
//!     price: Price::from_units(100),
//!     position: Qty::ZERO,
//! };
//! assert!(gate.check(&order).is_allow());
//!
//! // Any process (the `killswitch trip` CLI, a signal handler) can do this:
//! Tripper::new(block.clone()).trip_global(Mode::Kill, Source::Api, "loss limit");
//! assert!(!gate.check(&order).is_allow());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod access;
pub mod backoff;
pub mod checkpoint;
pub mod clock;
pub mod control;
pub mod drain;
pub mod gate;
pub mod gateway;
pub mod journal;
pub mod order;
pub mod registry;
pub mod runtime;
pub mod senders;
pub mod signals;
pub mod venue;
pub mod watchdog;

/// The README's code block, compiled and run as a doctest so it cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
