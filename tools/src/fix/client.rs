//! Placeholder while the client is written.
