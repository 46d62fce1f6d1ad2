//! Reading a checkpoint back: every check of the format (header, section
//! table, each section's CRC and structure, trailer, whole-file CRC), with
//! every problem found listed by region and offset.

use super::*;

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}
fn u64_at(b: &[u8], o: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[o..o + 8]);
    u64::from_le_bytes(a)
}

/// Checks a checkpoint held in memory; `path` is for messages.
pub fn validate_bytes(path: &Path, b: &[u8]) -> Result<CheckpointSummary, ValidateError> {
    let invalid = |problems: Vec<Problem>| ValidateError::Invalid {
        path: path.to_path_buf(),
        problems,
    };
    let one = |region, offset, what: String| {
        invalid(vec![Problem {
            region,
            offset,
            what,
        }])
    };
    if b.len() < HEADER_LEN + TRAILER_LEN {
        return Err(one(
            Region::Header,
            0,
            format!(
                "file is {} bytes, smaller than header + trailer ({}): truncated",
                b.len(),
                HEADER_LEN + TRAILER_LEN
            ),
        ));
    }
    if b[0..8] != MAGIC {
        return Err(one(
            Region::Header,
            0,
            format!(
                "magic is {:02x?}, expected \"KSCHKPT1\": not a killswitch checkpoint",
                &b[0..8]
            ),
        ));
    }
    let stored = u64_at(b, 56);
    let computed = crc64(&b[0..56]);
    if stored != computed {
        return Err(one(
            Region::Header,
            56,
            format!("header {CRC64_NAME} expected {stored:#018x} (stored), found {computed:#018x}"),
        ));
    }
    let major = u16::from_le_bytes([b[8], b[9]]);
    if major != VERSION_MAJOR {
        return Err(one(Region::Header, 8, format!("format version {major}, this build reads {VERSION_MAJOR}: use a matching killswitch build")));
    }
    let header_len = u32_at(b, 12);
    if header_len != HEADER_LEN as u32 {
        return Err(one(
            Region::Header,
            12,
            format!("header length {header_len}, expected {HEADER_LEN}: written by another format"),
        ));
    }
    if u32_at(b, 20) != 0 {
        return Err(one(
            Region::Header,
            20,
            format!(
                "reserved field is {:#010x}, expected 0: written by another format",
                u32_at(b, 20)
            ),
        ));
    }
    let n = u32_at(b, 16) as usize;
    if n == 0 {
        return Err(one(
            Region::Header,
            16,
            "0 sections: a checkpoint holds at least the trading state".into(),
        ));
    }
    let file_len = u64_at(b, 40);
    if file_len != b.len() as u64 {
        return Err(one(
            Region::WholeFile,
            b.len().min(file_len as usize) as u64,
            format!(
                "header says the file is {file_len} bytes, it is {}: truncated or appended to",
                b.len()
            ),
        ));
    }
    let table_end = HEADER_LEN as u64 + n as u64 * TABLE_ENTRY_LEN as u64;
    if table_end + TRAILER_LEN as u64 > file_len {
        return Err(one(
            Region::SectionTable,
            HEADER_LEN as u64,
            format!("{n} sections do not fit in {file_len} bytes"),
        ));
    }
    let table = &b[HEADER_LEN..table_end as usize];
    let stored = u64_at(b, 48);
    let computed = crc64(table);
    if stored != computed {
        return Err(one(
            Region::SectionTable,
            HEADER_LEN as u64,
            format!("table {CRC64_NAME} expected {stored:#018x}, found {computed:#018x}"),
        ));
    }
    let mut problems = Vec::new();
    let mut sections = Vec::new();
    let data_end = file_len - TRAILER_LEN as u64;
    for i in 0..n {
        let e = &table[i * TABLE_ENTRY_LEN..(i + 1) * TABLE_ENTRY_LEN];
        let at = (HEADER_LEN + i * TABLE_ENTRY_LEN) as u64;
        let Some(kind) = SectionKind::from_u32(u32_at(e, 0)) else {
            problems.push(Problem {
                region: Region::SectionTable,
                offset: at,
                what: format!("entry {i}: unknown section kind {}", u32_at(e, 0)),
            });
            continue;
        };
        if u32_at(e, 4) != 0 {
            problems.push(Problem {
                region: Region::SectionTable,
                offset: at + 4,
                what: format!(
                    "entry {i}: reserved field is {:#010x}, expected 0",
                    u32_at(e, 4)
                ),
            });
        }
        let (offset, length, crc) = (u64_at(e, 8), u64_at(e, 16), u64_at(e, 24));
        if offset < table_end || offset.checked_add(length).is_none_or(|end| end > data_end) {
            problems.push(Problem {
                region: Region::Section(kind),
                offset: at,
                what: format!("data {offset}+{length} lies outside {table_end}..{data_end}"),
            });
            continue;
        }
        let data = &b[offset as usize..(offset + length) as usize];
        let found = crc64(data);
        if found != crc {
            problems.push(Problem {
                region: Region::Section(kind),
                offset,
                what: format!(
                    "{length} bytes, {CRC64_NAME} expected {crc:#018x}, found {found:#018x}"
                ),
            });
        } else if let Err(what) = check_section(kind, data) {
            problems.push(Problem {
                region: Region::Section(kind),
                offset,
                what: format!("CRC matches but the content does not decode: {what}"),
            });
        }
        sections.push(SectionInfo {
            kind,
            offset,
            length,
            crc64: crc,
        });
    }
    if problems.is_empty() {
        check_structure(
            b,
            &sections,
            table_end,
            data_end,
            u64_at(b, 32),
            &mut problems,
        );
    }
    let t = data_end as usize;
    if b[t..t + 8] != TRAILER_MAGIC {
        problems.push(Problem {
            region: Region::WholeFile,
            offset: t as u64,
            what: format!(
                "trailer magic is {:02x?}, expected \"KSCKEND1\"",
                &b[t..t + 8]
            ),
        });
    }
    let stored = u64_at(b, t + 8);
    let found = crc64(&b[..t + 8]);
    if stored != found && problems.is_empty() {
        problems.push(Problem {
            region: Region::WholeFile,
            offset: (t + 8) as u64,
            what: format!("whole-file {CRC64_NAME} expected {stored:#018x}, found {found:#018x} (every section checks: the damage is in padding or the trailer)"),
        });
    }
    if !problems.is_empty() {
        return Err(invalid(problems));
    }
    Ok(CheckpointSummary {
        path: path.to_path_buf(),
        bytes: file_len,
        created_wall_ns: u64_at(b, 24),
        journal_last_seq: u64_at(b, 32),
        sections,
        file_crc64: stored,
        crc: CRC64_NAME,
    })
}

/// The rules a CRC cannot check: one trading-state section whose last
/// sequence is the header's; no kind twice; sections in table order, each
/// starting where the previous one ends (rounded up to 8), the first right
/// after the table and the last ending at the trailer, so no byte of the file
/// is outside the header, the table, a section or its zero padding (which
/// also catches overlapping sections and data a table entry does not count).
fn check_structure(
    b: &[u8],
    sections: &[SectionInfo],
    table_end: u64,
    data_end: u64,
    header_last_seq: u64,
    problems: &mut Vec<Problem>,
) {
    let mut push = |region, offset, what: String| {
        problems.push(Problem {
            region,
            offset,
            what,
        })
    };
    let trading: Vec<&SectionInfo> = sections
        .iter()
        .filter(|s| s.kind == SectionKind::TradingState)
        .collect();
    match trading.as_slice() {
        [] => push(
            Region::SectionTable,
            HEADER_LEN as u64,
            "no trading-state section: a checkpoint must hold the trading state".into(),
        ),
        [s] => {
            let data = &b[s.offset as usize..(s.offset + s.length) as usize];
            if let Ok(state) = TradingState::decode(data) {
                if state.last_seq != header_last_seq {
                    push(
                        Region::Section(SectionKind::TradingState),
                        s.offset,
                        format!(
                            "last journal sequence {} disagrees with the header's {header_last_seq} (offset 32)",
                            state.last_seq
                        ),
                    );
                }
            }
        }
        _ => {}
    }
    for (i, s) in sections.iter().enumerate() {
        if sections[..i].iter().any(|p| p.kind == s.kind) {
            push(
                Region::SectionTable,
                (HEADER_LEN + i * TABLE_ENTRY_LEN) as u64,
                format!("entry {i}: a second {} section", s.kind.as_str()),
            );
        }
    }
    let mut expect = table_end;
    for s in sections {
        if s.offset != expect {
            let what = if s.offset < expect {
                format!(
                    "starts at {}, inside what comes before it (which ends at {expect}): sections overlap",
                    s.offset
                )
            } else {
                format!(
                    "starts at {}, expected {expect}: bytes {expect}..{} belong to no section in the table",
                    s.offset, s.offset
                )
            };
            push(Region::Section(s.kind), s.offset, what);
            return;
        }
        let end = s.offset + s.length;
        expect = (end + 7) & !7;
        if b[end as usize..(expect.min(data_end)) as usize]
            .iter()
            .any(|&x| x != 0)
        {
            push(
                Region::WholeFile,
                end,
                format!("padding after section {} is not zero", s.kind.as_str()),
            );
        }
    }
    if expect != data_end {
        push(
            Region::WholeFile,
            expect,
            format!(
                "bytes {expect}..{data_end} before the trailer belong to no section in the table (a section missing from the count?)"
            ),
        );
    }
}

fn check_section(kind: SectionKind, data: &[u8]) -> Result<(), String> {
    match kind {
        SectionKind::TradingState => TradingState::decode(data)
            .map(|_| ())
            .map_err(|e| e.to_string()),
        SectionKind::Config | SectionKind::StrategyState => decode_blobs(data, kind).map(|_| ()),
        SectionKind::LogTail => std::str::from_utf8(data)
            .map(|_| ())
            .map_err(|e| format!("log tail is not UTF-8: {e}")),
        SectionKind::MarketData => Ok(()),
    }
}

/// Decodes a configuration or strategy-state section: (name, bytes) pairs.
pub fn decode_blobs(data: &[u8], kind: SectionKind) -> Result<Vec<(String, Vec<u8>)>, String> {
    let rtype = if kind == SectionKind::Config {
        RecordType::Config
    } else {
        RecordType::StrategyState
    };
    let mut c = Cursor::new(data, kind.as_str());
    let n = c.u32("count").map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for _ in 0..n {
        let at = c.pos();
        let head = c.bytes(8, "entry").map_err(|e| e.to_string())?;
        let len = 8 + u16::from_le_bytes([head[0], head[1]]) as usize + u32_at(head, 4) as usize;
        let rest = c.bytes(len - 8, "entry").map_err(|e| e.to_string())?;
        let whole = &data[at..at + 8 + rest.len()];
        let b = BlobRecord::decode(whole, rtype).map_err(|e| e.to_string())?;
        out.push((b.name.to_string(), b.data.to_vec()));
    }
    c.finish().map_err(|e| e.to_string())?;
    Ok(out)
}

/// Reads and checks a checkpoint file.
pub fn validate(path: &Path) -> Result<CheckpointSummary, ValidateError> {
    let b = std::fs::read(path).map_err(|e| ValidateError::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    validate_bytes(path, &b)
}

/// A checkpoint read back.
#[derive(Clone, Debug)]
pub struct Checkpoint {
    /// Its outline.
    pub summary: CheckpointSummary,
    /// Trading state.
    pub state: TradingState,
    /// Configuration entries.
    pub config: Vec<(String, Vec<u8>)>,
    /// Strategy states.
    pub strategies: Vec<(String, Vec<u8>)>,
    /// Market data, if saved.
    pub market_data: Option<Vec<u8>>,
    /// Log tail text.
    pub log_tail: String,
}

/// Reads, checks and decodes a checkpoint file.
pub fn read(path: &Path) -> Result<Checkpoint, ValidateError> {
    let b = std::fs::read(path).map_err(|e| ValidateError::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    let summary = validate_bytes(path, &b)?;
    let mut cp = Checkpoint {
        summary: summary.clone(),
        state: TradingState::default(),
        config: Vec::new(),
        strategies: Vec::new(),
        market_data: None,
        log_tail: String::new(),
    };
    // Every section was decoded once by validation, so these cannot fail.
    for s in &summary.sections {
        let data = &b[s.offset as usize..(s.offset + s.length) as usize];
        match s.kind {
            SectionKind::TradingState => cp.state = TradingState::decode(data).unwrap_or_default(),
            SectionKind::Config => cp.config = decode_blobs(data, s.kind).unwrap_or_default(),
            SectionKind::StrategyState => {
                cp.strategies = decode_blobs(data, s.kind).unwrap_or_default()
            }
            SectionKind::MarketData => cp.market_data = Some(data.to_vec()),
            SectionKind::LogTail => cp.log_tail = String::from_utf8_lossy(data).into_owned(),
        }
    }
    Ok(cp)
}
