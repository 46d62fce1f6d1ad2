//! What the `killswitch` tools share: the reference engine (`ks-engine`, and
//! the engine the drill starts as a child process), and the firm-wide kill
//! (`killswitch relay`, `killswitch firm`).
//!
//! This package is not what a trading engine links: that is the `killswitch`
//! library at the workspace root, which has none of the dependencies here
//! (CLI parsing, TOML configuration, JSON reports, histograms, the NATS
//! client and its async runtime).

pub mod admin;
pub mod engine;
#[cfg(feature = "firm")]
pub mod firm;
pub mod roles;
