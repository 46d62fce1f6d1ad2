//! Journal helpers shared by the fault tests: numbered log records of
//! varying length, read back with every payload checked.

#![allow(dead_code)] // each test file uses a different subset

use std::path::{Path, PathBuf};

use killswitch::journal::record::{LogRecord, RecordType};
use killswitch::journal::{scan, JournalConfig, JournalWriter};

pub const SEG: usize = 64 << 10;

pub fn cfg() -> JournalConfig {
    JournalConfig::small_for_tests()
}

/// Payload of record `i`: deterministic, varying length (so records straddle
/// different alignments).
pub fn text_of(i: u64) -> String {
    format!("line {i} {}", "x".repeat((i % 37) as usize))
}

/// (seq, offset, end incl. padding, end of the payload) of each record.
pub fn write_log_records(dir: &Path, n: u64) -> Vec<(u64, u64, u64, u64)> {
    let (mut w, _) = JournalWriter::open(dir, cfg()).unwrap();
    let mut spans = Vec::new();
    for i in 0..n {
        let t = text_of(i);
        let a = w
            .append(&LogRecord {
                level: 3,
                wall_ns: i,
                text: &t,
            })
            .unwrap();
        let end = a.offset + killswitch::journal::record::record_len(16 + t.len()) as u64;
        spans.push((a.seq, a.offset, end, a.offset + 32 + 16 + t.len() as u64));
    }
    spans
}

/// (seq, text) of every log record a scan returns (the writer's own
/// snapshot-index records at segment starts are skipped); checks each
/// payload decodes.
pub fn read_back(dir: &Path) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    scan(dir, true, |v| {
        if v.rtype == Some(RecordType::SnapshotIndex) {
            return;
        }
        assert_eq!(v.rtype, Some(RecordType::Log));
        let l = LogRecord::decode(v.payload).expect("a returned record always decodes");
        out.push((v.seq, l.text.to_string()));
    })
    .unwrap();
    out
}

pub fn seg_path(dir: &Path, i: u64) -> PathBuf {
    dir.join(format!("journal-{i:010}.seg"))
}

pub fn check_prefix(got: &[(u64, String)], n_complete: usize, what: &str) {
    assert_eq!(
        got.len(),
        n_complete,
        "{what}: wrong number of records kept"
    );
    // Sequence numbers grow by one per record, the snapshot-index records
    // included, so the log records' own numbers only increase.
    for (k, (seq, text)) in got.iter().enumerate() {
        assert!(k == 0 || *seq > got[k - 1].0, "{what}");
        assert_eq!(*text, text_of(k as u64), "{what}: record {seq} differs");
    }
}
