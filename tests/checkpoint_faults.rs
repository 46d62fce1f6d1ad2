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

/// A checkpoint built field by field, every CRC recomputed, so only the
/// structure can be wrong.
struct Crafted {
    header_len: u32,
    reserved: u32,
    last_seq: u64,
    /// (kind, entry reserved field, data, padding byte).
    sections: Vec<(u32, u32, Vec<u8>, u8)>,
    /// Overrides of section offsets by index.
    offsets: Vec<(usize, u64)>,
    /// Table entries dropped from the count (their data stays in the file).
    uncounted: usize,
}

fn crc(b: &[u8]) -> u64 {
    killswitch::checkpoint::crc64(b)
}

impl Crafted {
    /// What the writer produces for `contents(b"md")`, decomposed.
    fn good() -> Crafted {
        let (bytes, sections) = encode(&contents(b"md"));
        Crafted {
            header_len: 64,
            reserved: 0,
            last_seq: 7,
            sections: sections
                .iter()
                .map(|s| {
                    let data = bytes[s.offset as usize..(s.offset + s.length) as usize].to_vec();
                    (s.kind as u32, 0, data, 0)
                })
                .collect(),
            offsets: Vec::new(),
            uncounted: 0,
        }
    }

    fn bytes(&self) -> Vec<u8> {
        let counted = self.sections.len() - self.uncounted;
        let table_end = HEADER_LEN + counted * TABLE_ENTRY_LEN;
        let mut offsets = Vec::new();
        let mut at = table_end;
        let mut data_end = table_end;
        for (i, (_, _, data, _)) in self.sections.iter().enumerate() {
            let o = self
                .offsets
                .iter()
                .find(|(j, _)| *j == i)
                .map_or(at as u64, |(_, o)| *o);
            offsets.push(o);
            at = ((o as usize + data.len()) + 7) & !7;
            data_end = data_end.max(at);
        }
        let mut b = vec![0u8; data_end + 16];
        let mut table = Vec::new();
        for (i, (kind, res, data, pad)) in self.sections.iter().enumerate() {
            let o = offsets[i] as usize;
            let end = o + data.len();
            b[end..(end + 7) & !7].fill(*pad);
            b[o..end].copy_from_slice(data);
            if i < counted {
                table.extend_from_slice(&kind.to_le_bytes());
                table.extend_from_slice(&res.to_le_bytes());
                table.extend_from_slice(&(o as u64).to_le_bytes());
                table.extend_from_slice(&(data.len() as u64).to_le_bytes());
                table.extend_from_slice(&crc(data).to_le_bytes());
            }
        }
        b[HEADER_LEN..table_end].copy_from_slice(&table);
        b[0..8].copy_from_slice(b"KSCHKPT1");
        b[8..10].copy_from_slice(&1u16.to_le_bytes());
        b[12..16].copy_from_slice(&self.header_len.to_le_bytes());
        b[16..20].copy_from_slice(&(counted as u32).to_le_bytes());
        b[20..24].copy_from_slice(&self.reserved.to_le_bytes());
        b[24..32].copy_from_slice(&5u64.to_le_bytes());
        b[32..40].copy_from_slice(&self.last_seq.to_le_bytes());
        let len = b.len() as u64;
        b[40..48].copy_from_slice(&len.to_le_bytes());
        b[48..56].copy_from_slice(&crc(&table).to_le_bytes());
        let h = crc(&b[0..56]);
        b[56..64].copy_from_slice(&h.to_le_bytes());
        b[data_end..data_end + 8].copy_from_slice(b"KSCKEND1");
        let whole = crc(&b[..data_end + 8]);
        b[data_end + 8..].copy_from_slice(&whole.to_le_bytes());
        b
    }
}

fn problems(b: &[u8]) -> String {
    match validate_bytes(Path::new("crafted"), b) {
        Ok(_) => "VALID".into(),
        Err(e) => e.to_string(),
    }
}

#[test]
fn structurally_wrong_checkpoints_with_correct_crcs_are_invalid() {
    // The decomposition is faithful: the crafted twin of a good file is valid.
    assert_eq!(problems(&Crafted::good().bytes()), "VALID");
    let trading = SectionKind::TradingState as u32;
    let cases: Vec<(&str, Crafted, &str)> = vec![
        (
            "0 sections",
            Crafted {
                sections: Vec::new(),
                ..Crafted::good()
            },
            "0 sections",
        ),
        (
            "no trading-state section",
            {
                let mut c = Crafted::good();
                c.sections.retain(|s| s.0 != trading);
                c
            },
            "no trading-state section",
        ),
        (
            "two trading-state sections",
            {
                let mut c = Crafted::good();
                let t = c.sections[0].clone();
                c.sections.push(t);
                c
            },
            "a second trading-state section",
        ),
        (
            "overlapping sections",
            {
                // A last section whose bytes are a slice of the first one's:
                // every CRC holds, the two share bytes.
                let mut c = Crafted::good();
                let first = c.sections[0].2[8..16].to_vec();
                c.sections
                    .push((SectionKind::MarketData as u32, 0, first, 0));
                c.sections
                    .retain(|s| s.0 != SectionKind::MarketData as u32 || s.2.len() == 8);
                let o = (HEADER_LEN + c.sections.len() * TABLE_ENTRY_LEN) as u64;
                c.offsets.push((c.sections.len() - 1, o + 8));
                c
            },
            "sections overlap",
        ),
        (
            "a section missing from the count",
            Crafted {
                uncounted: 1,
                ..Crafted::good()
            },
            "belong to no section",
        ),
        (
            "header length 128",
            Crafted {
                header_len: 128,
                ..Crafted::good()
            },
            "header length 128",
        ),
        (
            "non-zero reserved header field",
            Crafted {
                reserved: 1,
                ..Crafted::good()
            },
            "reserved field",
        ),
        (
            "non-zero reserved table field",
            {
                let mut c = Crafted::good();
                c.sections[2].1 = 9;
                c
            },
            "entry 2: reserved field",
        ),
        (
            "non-zero padding",
            {
                let mut c = Crafted::good();
                let s = c.sections.iter_mut().find(|s| s.2.len() % 8 != 0).unwrap();
                s.3 = 0xAA;
                c
            },
            "is not zero",
        ),
        (
            "header last sequence disagrees with the trading state",
            Crafted {
                last_seq: 8,
                ..Crafted::good()
            },
            "disagrees with the header's 8",
        ),
    ];
    for (name, crafted, want) in cases {
        let got = problems(&crafted.bytes());
        assert!(
            got.contains("INVALID") && got.contains(want),
            "{name}: expected INVALID with {want:?}, got {got}"
        );
    }
}
