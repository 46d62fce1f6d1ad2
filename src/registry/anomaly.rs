//! What the registry refused or noticed in venue data ([`Anomaly`],
//! [`RegistryCounters`]) and why it refuses to register an order
//! ([`RegistryError`]): the registry's side of the drain report.

use crate::order::{IllegalTransition, OrderId};

/// What the registry refused or found odd in venue data, for the report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Anomaly {
    /// An event that the state machine refuses in the order's state.
    Illegal {
        /// Order.
        id: OrderId,
        /// The refused edge.
        edge: IllegalTransition,
    },
    /// An event about an id we never registered.
    UnknownOrder {
        /// The id the venue sent.
        id: OrderId,
    },
    /// A fill of zero or negative quantity (not applied).
    InvalidFill {
        /// Order.
        id: OrderId,
    },
    /// A fill beyond the ordered quantity (applied to the position).
    Overfill {
        /// Order.
        id: OrderId,
    },
}

/// Counters of everything the registry refused or noticed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RegistryCounters {
    /// Orders registered.
    pub registered: u64,
    /// Events refused by the state machine.
    pub illegal_transitions: u64,
    /// Events about unknown ids.
    pub unknown_order_events: u64,
    /// Cancel answers for orders already terminal (a normal race, not an error).
    pub stale_cancel_answers: u64,
    /// Fills with a non-positive quantity.
    pub invalid_fills: u64,
    /// Fills beyond the ordered quantity.
    pub overfills: u64,
    /// Fills applied.
    pub fills: u64,
}

/// Why an order could not be registered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// The id is already in the registry.
    #[error("order id {0} is already registered: order ids must be unique per engine run (seed the generator from the journal)")]
    DuplicateId(OrderId),
}
