//! Fault injection on complete checkpoints: a bit flip in every byte is
//! caught and the damaged region named; a full disk (small tmpfs) makes the
//! writer fall back to the alternate directory and say so; when every
//! directory fails the error lists each attempt.

mod tmpfs;
use tmpfs::Tmpfs;

use std::path::Path;

use killswitch::checkpoint::{
    encode, validate, validate_bytes, write_complete, CheckpointContents, CheckpointError,
    CheckpointTarget, Region, SectionKind, ValidateError, HEADER_LEN, TABLE_ENTRY_LEN,
};
use killswitch::journal::record::OrderEventRecord;
use killswitch::order::{OrderId, Price, Qty, ScopeTags, Side};

fn contents(market: &[u8]) -> CheckpointContents<'_> {
    let mut c = CheckpointContents {
        config: vec![("engine", b"risk.max_loss = 10000".as_slice())],
        strategies: vec![("mm-1", b"inventory=3".as_slice())],
        market_data: Some(market),
        log_tail: "WARN venue slow\n",
        journal_last_seq: 7,
        created_wall_ns: 1_732_549_523_000_000_000,
        ..CheckpointContents::default()
    };
    let new = OrderEventRecord::new_order(
        OrderId(1),
        ScopeTags::default(),
        Side::Buy,
        Price::from_units(5),
        Qty::from_lots(1),
    );
    c.state.apply_order_event(1, &new).unwrap();
    c
}

fn region_of(offset: usize, bytes: &[u8]) -> Region {
    let s = validate_bytes(Path::new("x"), bytes).unwrap();
    let table_end = HEADER_LEN + s.sections.len() * TABLE_ENTRY_LEN;
    if offset < HEADER_LEN {
        return Region::Header;
    }
    if offset < table_end {
        return Region::SectionTable;
    }
    for sec in &s.sections {
        if (sec.offset as usize..(sec.offset + sec.length) as usize).contains(&offset) {
            return Region::Section(sec.kind);
        }
    }
    Region::WholeFile
}

#[test]
fn every_bit_flip_is_caught_and_the_damaged_region_named() {
    let (bytes, sections) = encode(&contents(b"BTC-USD 65000.5 x 2"));
    assert_eq!(sections.len(), 5);
    for at in 0..bytes.len() {
        let want = region_of(at, &bytes);
        for bit in 0..8 {
            let mut b = bytes.clone();
            b[at] ^= 1 << bit;
            match validate_bytes(Path::new("x"), &b) {
                Ok(_) => panic!("flip of bit {bit} at byte {at} not detected"),
                Err(ValidateError::Invalid { problems, .. }) => {
                    assert!(
                        problems.iter().any(|p| p.region == want),
                        "flip at {at} bit {bit}: expected {want}, got {problems:?}"
                    );
                }
                Err(e) => panic!("{e}"),
            }
        }
    }
}

#[test]
fn a_damaged_section_is_reported_with_offset_and_both_crcs() {
    let d = tempfile::tempdir().unwrap();
    let w = write_complete(&contents(b"md"), &CheckpointTarget::in_dir(d.path())).unwrap();
    let config = w
        .sections
        .iter()
        .find(|s| s.kind == SectionKind::Config)
        .unwrap();
    let mut b = std::fs::read(&w.path).unwrap();
    b[config.offset as usize + 3] ^= 0x40;
    std::fs::write(&w.path, &b).unwrap();
    let msg = validate(&w.path).unwrap_err().to_string();
    assert!(msg.contains("section configuration"), "{msg}");
    assert!(msg.contains(&format!("offset {}", config.offset)), "{msg}");
    assert!(
        msg.contains(&format!("expected {:#018x}", config.crc64)),
        "{msg}"
    );
    assert!(msg.contains("CRC-64/XZ"), "{msg}");
}

#[test]
fn a_full_disk_falls_back_to_the_alternate_directory_and_says_so() {
    let Some(fs) = Tmpfs::mount("64k") else {
        return;
    };
    let alt = tempfile::tempdir().unwrap();
    let market = vec![7u8; 256 << 10];
    let target = CheckpointTarget {
        alternate_dir: Some(alt.path().to_path_buf()),
        ..CheckpointTarget::in_dir(&fs.0)
    };
    let w = write_complete(&contents(&market), &target).unwrap();
    let fb = w.fallback.as_ref().expect("the primary must have failed");
    assert!(fb.primary.starts_with(&fs.0), "{fb:?}");
    assert!(fb.error.contains("No space left"), "{fb:?}");
    assert!(w.path.starts_with(alt.path()) && w.verified);
    assert!(validate(&alt.path().join("latest.ckpt")).is_ok());
    // Nothing half-written is left on the full disk.
    let left: Vec<_> = std::fs::read_dir(&fs.0).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");

    // Both directories full: the error lists both attempts.
    let target = CheckpointTarget {
        alternate_dir: Some(fs.0.clone()),
        ..CheckpointTarget::in_dir(&fs.0)
    };
    match write_complete(&contents(&market), &target) {
        Err(e @ CheckpointError::Write { .. }) => {
            let CheckpointError::Write { attempts } = &e else {
                unreachable!()
            };
            assert_eq!(attempts.len(), 2);
            assert!(e.to_string().contains("NOT saved"), "{e}");
        }
        other => panic!("expected a write error, got {other:?}"),
    }
}
