//! Segment headers are damage, not an empty journal (issue 9, item 9).
//!
//! A flipped byte, another format version, a header that lies about the
//! segment's size or its own length, a segment cut inside its header, a
//! CRC-valid segment-end record in the middle of a segment: a writer (an
//! engine starting) refuses every one of them and changes nothing;
//! `journal recover` (an operator's decision) rewrites a header whose
//! records check and keeps every record, and sets aside — never deletes —
//! what it cannot keep, saying how many valid records it holds.

mod journal_support;

use std::path::Path;

use journal_support::*;
use killswitch::journal::record::LogRecord;
use killswitch::journal::{recover, JournalError, JournalWriter};

/// Files of `dir` (name, bytes), sorted: to show that a refusal changed nothing.
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            let bytes = if name.ends_with(".lock") {
                Vec::new()
            } else {
                std::fs::read(e.path()).unwrap()
            };
            (name, bytes)
        })
        .collect();
    v.sort();
    v
}

fn crc32c(b: &[u8]) -> u32 {
    // The journal's CRC: CRC-32C (Castagnoli), as the segment header uses.
    let mut crc = !0u32;
    for &x in b {
        crc ^= x as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Rewrites bytes of a segment header, optionally fixing its CRC so only
/// the field itself is wrong.
fn patch_header(path: &Path, at: usize, bytes: &[u8], fix_crc: bool) {
    let mut b = std::fs::read(path).unwrap();
    b[at..at + bytes.len()].copy_from_slice(bytes);
    if fix_crc {
        let c = crc32c(&b[0..60]);
        b[60..64].copy_from_slice(&c.to_le_bytes());
    }
    std::fs::write(path, &b).unwrap();
}

/// Three segments of numbered records; returns how many.
fn journal(dir: &Path) -> u64 {
    let n = 2000;
    write_log_records(dir, n);
    assert!(seg_path(dir, 3).exists(), "the test needs three segments");
    n
}

/// The writer refuses, naming the damage, and touches no file.
fn expect_refused(dir: &Path, want: &str) {
    let before = snapshot(dir);
    match JournalWriter::open(dir, cfg()) {
        Err(JournalError::NeedsRecovery { findings, .. }) => {
            let all = findings.join("\n");
            assert!(all.contains(want), "expected {want:?} in {all}");
        }
        Err(e) => panic!("expected NeedsRecovery ({want}), got {e}"),
        Ok(_) => panic!("the writer opened a journal with {want}"),
    }
    assert_eq!(snapshot(dir), before, "a refused open changed files");
}

/// After `journal recover`, every record is back and appends continue.
fn expect_all_kept(dir: &Path, n: u64) {
    let rep = recover(dir).unwrap();
    let kept = read_back(dir);
    check_prefix(&kept, n as usize, "after recover");
    let (mut w, again) = JournalWriter::open(dir, cfg()).unwrap();
    assert!(
        again.is_clean(),
        "{again:?} (recover said {:?})",
        rep.actions
    );
    let t = text_of(n);
    let a = w
        .append(&LogRecord {
            level: 3,
            wall_ns: 0,
            text: &t,
        })
        .unwrap();
    assert_eq!(a.seq, kept.last().unwrap().0 + 1);
}

#[test]
fn a_flipped_reserved_header_byte_is_refused_then_repaired_keeping_every_record() {
    for seg in [1, 2, 3] {
        let d = tempfile::tempdir().unwrap();
        let n = journal(d.path());
        let p = seg_path(d.path(), seg);
        let mut b = std::fs::read(&p).unwrap();
        b[45] ^= 0x01;
        std::fs::write(&p, &b).unwrap();
        expect_refused(d.path(), "segment header damaged");
        expect_all_kept(d.path(), n);
        // The damaged header is kept aside, owner-only.
        let kept = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.to_string_lossy().contains(".header-"))
            .expect("old header kept aside");
        assert_eq!(std::fs::read(&kept).unwrap(), b[..64].to_vec());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&kept).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}

#[test]
fn crc_valid_headers_that_lie_are_refused_then_repaired() {
    // (what, offset, bytes): each with a correct CRC.
    let seg_len = (SEG as u64).to_le_bytes();
    let smaller = (SEG as u64 / 2).to_le_bytes();
    let cases: [(&str, usize, Vec<u8>); 4] = [
        ("header length 128", 12, 128u32.to_le_bytes().to_vec()),
        ("reserved header byte", 50, vec![7]),
        ("size field is wrong", 24, smaller.to_vec()),
        ("the file name says 2", 16, 9u64.to_le_bytes().to_vec()),
    ];
    for (want, at, bytes) in cases {
        let d = tempfile::tempdir().unwrap();
        let n = journal(d.path());
        let p = seg_path(d.path(), 2);
        patch_header(&p, at, &bytes, true);
        expect_refused(d.path(), want);
        expect_all_kept(d.path(), n);
        let hdr = std::fs::read(&p).unwrap();
        assert_eq!(&hdr[24..32], &seg_len, "{want}: size restored");
    }
}

#[test]
fn another_format_version_is_refused_and_never_rewritten() {
    let d = tempfile::tempdir().unwrap();
    journal(d.path());
    let p = seg_path(d.path(), 2);
    patch_header(&p, 8, &2u16.to_le_bytes(), true);
    expect_refused(d.path(), "format version 2.0");
    let before = snapshot(d.path());
    let e = recover(d.path()).unwrap_err().to_string();
    assert!(e.contains("format version 2"), "{e}");
    assert_eq!(
        snapshot(d.path()),
        before,
        "recover changed a foreign journal"
    );
}

#[test]
fn a_segment_cut_inside_its_header_is_refused_and_set_aside_with_a_count() {
    let d = tempfile::tempdir().unwrap();
    let n = journal(d.path());
    let p = seg_path(d.path(), 3);
    let b = std::fs::read(&p).unwrap();
    std::fs::write(&p, &b[..40]).unwrap();
    expect_refused(d.path(), "shorter than the 64-byte header");
    let rep = recover(d.path()).unwrap();
    let all = rep.actions.join("\n");
    assert!(
        all.contains("orphan") && all.contains("0 valid record"),
        "{all}"
    );
    // What segments 1 and 2 hold is intact; the writer takes appends again.
    let kept = read_back(d.path());
    assert!(kept.len() < n as usize && !kept.is_empty());
    check_prefix(&kept, kept.len(), "segments 1-2");
    JournalWriter::open(d.path(), cfg()).unwrap();
}

#[test]
fn a_crc_valid_segment_end_record_mid_segment_is_damage_not_an_end() {
    let d = tempfile::tempdir().unwrap();
    let spans = write_log_records(d.path(), 300);
    let p = seg_path(d.path(), 1);
    // Turn record 100 into a segment-end record pointing at segment 2, CRC
    // and all: 200 valid records follow it in the same segment.
    let (seq, off, _, _) = spans[99];
    let mut b = std::fs::read(&p).unwrap();
    let o = off as usize;
    let mut head = [0u8; 24];
    head[0..4].copy_from_slice(&8u32.to_le_bytes());
    head[4..6].copy_from_slice(&10u16.to_le_bytes());
    head[8..16].copy_from_slice(&seq.to_le_bytes());
    b[o..o + 24].copy_from_slice(&head);
    b[o + 32..o + 40].copy_from_slice(&2u64.to_le_bytes());
    let mut crc_in = head.to_vec();
    crc_in.extend_from_slice(&2u64.to_le_bytes());
    b[o + 24..o + 28].copy_from_slice(&crc32c(&crc_in).to_le_bytes());
    std::fs::write(&p, &b).unwrap();
    expect_refused(d.path(), "followed by");
    // Recovery keeps the 99 records before it and sets the rest aside,
    // counting the valid records it holds.
    let rep = recover(d.path()).unwrap();
    let all = rep.actions.join("\n");
    assert!(all.contains("200 valid record(s)"), "{all}");
    check_prefix(&read_back(d.path()), 99, "before the crafted end");
}

#[test]
fn a_missing_middle_segment_is_refused_and_later_segments_set_aside() {
    let d = tempfile::tempdir().unwrap();
    journal(d.path());
    std::fs::remove_file(seg_path(d.path(), 2)).unwrap();
    expect_refused(d.path(), "segment 2 is missing");
    let rep = recover(d.path()).unwrap();
    let all = rep.actions.join("\n");
    assert!(all.contains("orphan"), "{all}");
    assert!(!seg_path(d.path(), 3).exists());
}
