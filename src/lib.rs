//! `killswitch`: stop an automated trading engine safely, in microseconds, and
//! prove that nothing escapes and nothing is lost.
//!
//! Start from [`Runtime::builder`]: it owns the wiring (control block,
//! signals, journal and recovery, gateway, drain, checkpoints) around an
//! engine's own venue adapters ([`venue::Venue`]) and strategies, and hands
//! out one handle per role:
//!
//! * [`StrategyHandle`]: a strategy's submit, cancel, replace and answers;
//! * [`TripToken`] and [`Gate`]: read-only, any thread;
//! * [`Tripper`]: trips (global trips are async-signal-safe);
//! * [`Operator`]: scoped trips, reset, status (CLI, admin endpoint);
//! * [`SendGuard`]: for threads that write to their venue themselves.
//!
//! The modules, for engines that wire parts themselves and for tools:
//! [`control`] (the shared-memory control block: state word, scopes, audit
//! ring), [`gate`], [`order`], [`gateway`], [`drain`], [`registry`],
//! [`senders`], [`journal`], [`checkpoint`], [`signals`], [`watchdog`],
//! [`venue`] (the `Venue` trait and a simulated exchange).
//!
//! The smallest use, a gate in front of an engine's own order path:
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
mod crc;
pub mod drain;
pub mod gate;
pub mod gateway;
pub mod journal;
pub mod limits;
pub mod order;
pub mod realtime;
pub mod registry;
pub mod rules;
pub mod runtime;
pub mod senders;
pub mod shutdown;
pub mod signals;
pub mod venue;
pub mod watchdog;

pub use control::{Operator, Tripper};
pub use gate::Gate;
pub use runtime::{Runtime, StrategyHandle, TripToken};
pub use senders::SendGuard;

/// The README's code block, compiled and run as a doctest so it cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
