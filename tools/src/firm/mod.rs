//! The firm-wide kill: one trigger for every engine on every host, over NATS.
//!
//! # The bucket
//! A JetStream key-value bucket (`KILLSWITCH_FIRM` by default, 64 revisions
//! kept per key, 3 replicas in a 3-server cluster) holds one JSON
//! [`record::FirmRecord`] per key:
//!
//! | key | applies to |
//! |---|---|
//! | `firm` | every relay |
//! | `desk.<name>` | relays started with `--desk <name>` |
//! | `host.<name>` | the relay started with `--host <name>` |
//!
//! Each record says mode, generation (changes of that key), reason, who and
//! when. A trip is a compare-and-set update that only escalates the mode; a
//! reset is a compare-and-set on the revision the operator saw, signed by the
//! risk role (see [`record`]). The bucket's revision history is the firm
//! audit (`killswitch firm history`).
//!
//! A second bucket, `<bucket>_ACKS`, holds one [`local::EngineAck`] per
//! engine under `ack.<host>.<engine>`, written by the host's relay on every
//! change and as a heartbeat; `killswitch firm status` reads both.
//!
//! # Where things run
//! The relay ([`relay`]) and the `killswitch firm` commands are the only
//! code with an async runtime and a NATS client; the library an engine links
//! has neither. The relay acts on engines only through their control blocks,
//! with source `firm`.

pub mod cluster;
pub mod local;
pub mod nats;
pub mod record;
pub mod relay;
pub mod view;
