//! What the `killswitch` tools share: the reference engine (`ks-engine`, and
//! the engine the drill starts as a child process), the firm-wide kill
//! (`killswitch relay`, `killswitch firm`), and venues over FIX 4.4 (the
//! codec and the gateway's `FixVenue` in [`fix`], `ks-venue`'s server in
//! [`venue_server`]).
//!
//! This package is not what a trading engine links: that is the `killswitch`
//! library at the workspace root, which has none of the dependencies here
//! (CLI parsing, TOML configuration, JSON reports, histograms, the NATS
//! client and its async runtime, FIX).

pub mod admin;
pub mod engine;
#[cfg(feature = "firm")]
pub mod firm;
pub mod fix;
pub mod hgrm;
pub mod roles;
pub mod venue_server;
