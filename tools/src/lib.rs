//! What the `killswitch` tools share: the reference engine (`ks-engine`, and
//! the engine the drill starts as a child process).
//!
//! This package is not what a trading engine links: that is the `killswitch`
//! library at the workspace root, which has none of the dependencies here
//! (CLI parsing, TOML configuration, JSON reports, histograms).

pub mod engine;
pub mod fix;
pub mod venue_server;
