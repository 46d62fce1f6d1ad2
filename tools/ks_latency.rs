//! Placeholder for the gate latency tool (another issue); documented so clippy stays clean.
fn main() {}
