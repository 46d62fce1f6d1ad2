//! Complete (planned-shutdown) checkpoints: one self-checking file,
//! `shutdown_<UTC YYYY-MM-DD_HH-MM-SS>.ckpt`, with the runbook's sections
//! (trading state, configuration, strategy state, optional market data, log
//! tail), each with its length and CRC-64, and a whole-file CRC-64.
//!
//! **CRC variant: CRC-64/XZ** (also called CRC-64/GO-ECMA: polynomial
//! `0x42F0E1EBA9EA3693`, reflected, init and xorout all ones; check value of
//! `"123456789"` is `0x995DC9BBDF1939FA`).
//!
//! File layout, little-endian:
//!
//! | offset | size | field |
//! |-------:|-----:|-------|
//! | 0  | 8  | magic `"KSCHKPT1"` |
//! | 8  | 2  | format major (1) |
//! | 10 | 2  | format minor (0) |
//! | 12 | 4  | header length (64) |
//! | 16 | 4  | section count N |
//! | 20 | 4  | reserved, 0 |
//! | 24 | 8  | Unix ns created |
//! | 32 | 8  | last journal sequence reflected |
//! | 40 | 8  | file length in bytes |
//! | 48 | 8  | CRC-64/XZ of the section table |
//! | 56 | 8  | CRC-64/XZ of header bytes 0..56 |
//! | 64 | 32·N | section table: kind u32, reserved u32, offset u64, length u64, CRC-64/XZ of the data u64 |
//! | …  | …  | section data, each starting on an 8-byte boundary, zero padding between |
//! | end−16 | 8 | trailer magic `"KSCKEND1"` |
//! | end−8  | 8 | CRC-64/XZ of every byte before it (whole file) |
//!
//! Section kinds: 1 trading state (the journal snapshot payload, see
//! `SnapshotPayload`), 2 configuration and
//! 3 strategy state (`u32 count`, then per entry the blob layout of
//! [`crate::journal::record::BlobRecord`]), 4 market data (opaque),
//! 5 log tail (UTF-8 text, one line per log record).

mod validate;
mod write;

use std::fmt;
use std::path::{Path, PathBuf};

use crate::journal::record::{BlobRecord, Cursor, RecordType};
use crate::journal::TradingState;

pub use validate::{decode_blobs, read, validate, validate_bytes};
pub use write::{
    checkpoint_file_name, encode, write_complete, CheckpointContents, CheckpointError,
    CheckpointTarget, Fallback, Written,
};

/// The CRC-64 used everywhere in a checkpoint: CRC-64/XZ.
pub use crate::crc::crc64;
/// Name of the CRC variant, for output.
pub const CRC64_NAME: &str = "CRC-64/XZ";
/// File magic.
pub const MAGIC: [u8; 8] = *b"KSCHKPT1";
/// Trailer magic.
pub const TRAILER_MAGIC: [u8; 8] = *b"KSCKEND1";
/// Format major version.
pub const VERSION_MAJOR: u16 = 1;
/// Format minor version.
pub const VERSION_MINOR: u16 = 0;
/// Header bytes.
pub const HEADER_LEN: usize = 64;
/// Bytes per section-table entry.
pub const TABLE_ENTRY_LEN: usize = 32;
/// Trailer bytes.
pub const TRAILER_LEN: usize = 16;
/// Name of the link to the newest checkpoint in its directory.
pub const LATEST: &str = "latest.ckpt";

/// A section kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "kebab-case"))]
#[repr(u32)]
pub enum SectionKind {
    /// Open orders, positions, last trip/reset.
    TradingState = 1,
    /// Engine configuration.
    Config = 2,
    /// Per-strategy state.
    StrategyState = 3,
    /// Recent market data (optional).
    MarketData = 4,
    /// Log lines of the last hour.
    LogTail = 5,
}

impl SectionKind {
    /// Decodes a table field.
    pub fn from_u32(v: u32) -> Option<SectionKind> {
        Some(match v {
            1 => SectionKind::TradingState,
            2 => SectionKind::Config,
            3 => SectionKind::StrategyState,
            4 => SectionKind::MarketData,
            5 => SectionKind::LogTail,
            _ => return None,
        })
    }

    /// Name used in output.
    pub fn as_str(self) -> &'static str {
        match self {
            SectionKind::TradingState => "trading-state",
            SectionKind::Config => "configuration",
            SectionKind::StrategyState => "strategy-state",
            SectionKind::MarketData => "market-data",
            SectionKind::LogTail => "log-tail",
        }
    }
}

/// One section as found in the table.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct SectionInfo {
    /// Kind.
    pub kind: SectionKind,
    /// Offset of its data in the file.
    pub offset: u64,
    /// Length of its data.
    pub length: u64,
    /// Its CRC-64/XZ.
    pub crc64: u64,
}

/// A checked checkpoint's outline.
#[derive(Clone, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct CheckpointSummary {
    /// The file.
    pub path: PathBuf,
    /// Its size.
    pub bytes: u64,
    /// Unix ns created.
    pub created_wall_ns: u64,
    /// Last journal sequence reflected.
    pub journal_last_seq: u64,
    /// Sections, in file order.
    pub sections: Vec<SectionInfo>,
    /// Whole-file CRC-64/XZ.
    pub file_crc64: u64,
    /// The CRC variant.
    pub crc: &'static str,
}

/// Where in the file a problem is.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "kebab-case"))]
pub enum Region {
    /// The 64-byte header.
    Header,
    /// The section table.
    SectionTable,
    /// A section's data.
    Section(SectionKind),
    /// The trailer, the padding, or anything only the whole-file CRC covers.
    WholeFile,
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Region::Header => f.write_str("header"),
            Region::SectionTable => f.write_str("section table"),
            Region::Section(k) => write!(f, "section {}", k.as_str()),
            Region::WholeFile => f.write_str("whole file"),
        }
    }
}

/// One thing wrong with a checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Problem {
    /// Where.
    pub region: Region,
    /// Byte offset in the file.
    pub offset: u64,
    /// What, with expected vs found.
    pub what: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} at offset {}: {}",
            self.region, self.offset, self.what
        )
    }
}

/// Why a checkpoint is not valid.
#[derive(Debug, thiserror::Error)]
pub enum ValidateError {
    /// It could not be read.
    #[error("checkpoint {path}: cannot read: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// It is damaged or not a checkpoint; every problem found is listed.
    #[error("checkpoint {path} is INVALID: {}; restore from another checkpoint or rebuild the state from the journal (`killswitch checkpoint create --journal DIR`)", problems.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("; "))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Problems, in file order.
        problems: Vec<Problem>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_variant_is_crc64_xz() {
        assert_eq!(crc64(b"123456789"), 0x995D_C9BB_DF19_39FA);
    }

    #[test]
    fn encoded_checkpoint_validates_and_reads_back() {
        let mut contents = CheckpointContents {
            config: vec![("engine.toml", b"max_orders = 5".as_slice())],
            strategies: vec![("mm-1", b"\x01\x02".as_slice()), ("arb", b"".as_slice())],
            market_data: Some(b"BTC 65000"),
            log_tail: "INFO started\n",
            journal_last_seq: 42,
            created_wall_ns: 1_732_549_523_000_000_000,
            ..CheckpointContents::default()
        };
        contents.state.max_order_id = crate::order::OrderId(9);
        let (bytes, sections) = encode(&contents);
        let s = validate_bytes(Path::new("mem"), &bytes).unwrap();
        assert_eq!(s.sections, sections);
        assert_eq!(s.journal_last_seq, 42);
        let dir = tempfile::tempdir().unwrap();
        let w = write_complete(&contents, &CheckpointTarget::in_dir(dir.path())).unwrap();
        assert!(w.verified && w.fallback.is_none());
        assert_eq!(
            w.path.file_name().unwrap(),
            "shutdown_2024-11-25_15-45-23.ckpt"
        );
        let cp = read(&dir.path().join(LATEST)).unwrap();
        assert_eq!(cp.state.max_order_id, crate::order::OrderId(9));
        assert_eq!(
            cp.config,
            vec![("engine.toml".to_string(), b"max_orders = 5".to_vec())]
        );
        assert_eq!(cp.strategies.len(), 2);
        assert_eq!(cp.market_data.as_deref(), Some(b"BTC 65000".as_slice()));
        assert_eq!(cp.log_tail, "INFO started\n");
        // Every truncation is rejected, never a panic.
        for cut in 0..bytes.len() {
            assert!(
                validate_bytes(Path::new("mem"), &bytes[..cut]).is_err(),
                "cut at {cut}"
            );
        }
    }
}
