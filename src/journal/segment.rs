//! Segment files: `journal-<index, 10 digits>.seg`, pre-allocated with
//! `posix_fallocate` (so a full disk is an error at allocation, never a
//! SIGBUS on a later store into the mapping) and mapped with
//! `MAP_POPULATE`.
//!
//! Segment header, 64 bytes, little-endian:
//!
//! | off | size | field |
//! |----:|-----:|-------|
//! | 0  | 8 | magic `"KSJOURNL"` |
//! | 8  | 2 | format major version (1) |
//! | 10 | 2 | format minor version (1; readers accept any minor) |
//! | 12 | 4 | header length (64) |
//! | 16 | 8 | segment index (1, 2, …; equals the number in the file name) |
//! | 24 | 8 | segment size in bytes, header included (the pre-allocated file length) |
//! | 32 | 8 | Unix ns when created |
//! | 40 | 20 | reserved, 0 |
//! | 60 | 4 | CRC-32C of bytes 0..60 |
//!
//! Records follow from offset 64. A new segment is built under a temporary
//! name, fsynced and renamed into place, and the directory fsynced, so a
//! reader never opens a half-made segment.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::{MmapOptions, MmapRaw};

use super::JournalError;

/// Segment file magic.
pub const SEGMENT_MAGIC: [u8; 8] = *b"KSJOURNL";
/// Format major version this build writes and reads.
pub const FORMAT_MAJOR: u16 = 1;
/// Format minor version this build writes.
/// 1: segments after the first start with a snapshot-index record (type 11).
pub const FORMAT_MINOR: u16 = 1;
/// Bytes in a segment header; the first record starts here.
pub const SEGMENT_HEADER_LEN: usize = 64;
/// Smallest segment size accepted.
pub const MIN_SEGMENT_SIZE: usize = 4096;

/// File name of segment `index`.
pub fn segment_name(index: u64) -> String {
    format!("journal-{index:010}.seg")
}

/// The index in a segment file name, `None` for other names.
pub fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("journal-")?.strip_suffix(".seg")?;
    if digits.len() != 10 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Segment files in `dir`, sorted by index.
pub fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, JournalError> {
    let rd =
        fs::read_dir(dir).map_err(|e| JournalError::io(dir, "list the journal directory", e))?;
    let mut out = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| JournalError::io(dir, "list the journal directory", e))?;
        if let Some(i) = entry.file_name().to_str().and_then(parse_segment_name) {
            out.push((i, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// A decoded, checked segment header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    /// Segment index.
    pub index: u64,
    /// Segment size (pre-allocated file length).
    pub size: u64,
    /// Unix ns when created.
    pub created_wall_ns: u64,
}

impl SegmentHeader {
    /// The 64 header bytes.
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_LEN] {
        let mut b = [0u8; SEGMENT_HEADER_LEN];
        b[0..8].copy_from_slice(&SEGMENT_MAGIC);
        b[8..10].copy_from_slice(&FORMAT_MAJOR.to_le_bytes());
        b[10..12].copy_from_slice(&FORMAT_MINOR.to_le_bytes());
        b[12..16].copy_from_slice(&(SEGMENT_HEADER_LEN as u32).to_le_bytes());
        b[16..24].copy_from_slice(&self.index.to_le_bytes());
        b[24..32].copy_from_slice(&self.size.to_le_bytes());
        b[32..40].copy_from_slice(&self.created_wall_ns.to_le_bytes());
        let crc = crate::crc::crc32c(&b[0..60]);
        b[60..64].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes and checks the first bytes of segment file `path`; the error
    /// says which field is wrong.
    pub fn decode(path: &Path, b: &[u8]) -> Result<SegmentHeader, JournalError> {
        let bad = |what: String| JournalError::BadSegment {
            path: path.to_path_buf(),
            what,
        };
        if b.len() < SEGMENT_HEADER_LEN {
            return Err(bad(format!(
                "file is {} bytes, shorter than the {SEGMENT_HEADER_LEN}-byte header (torn at creation)",
                b.len()
            )));
        }
        let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
        let u64_at = |o: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[o..o + 8]);
            u64::from_le_bytes(a)
        };
        if b[0..8] != SEGMENT_MAGIC {
            return Err(bad(format!(
                "magic at offset 0 is {:02x?}, expected \"KSJOURNL\": not a killswitch journal segment",
                &b[0..8]
            )));
        }
        let stored = u32::from_le_bytes([b[60], b[61], b[62], b[63]]);
        let computed = crate::crc::crc32c(&b[0..60]);
        if stored != computed {
            return Err(bad(format!(
                "header CRC-32C at offset 60: stored {stored:#010x}, computed {computed:#010x} (header damaged)"
            )));
        }
        let major = u16_at(8);
        if major != FORMAT_MAJOR {
            return Err(bad(format!(
                "format version {major}.{} at offset 8, this build reads {FORMAT_MAJOR}.x: use the killswitch build that wrote it",
                u16_at(10)
            )));
        }
        let header_len = u32::from_le_bytes([b[12], b[13], b[14], b[15]]);
        if header_len != SEGMENT_HEADER_LEN as u32 {
            return Err(bad(format!(
                "header length {header_len} at offset 12, expected {SEGMENT_HEADER_LEN}: not a header this build wrote"
            )));
        }
        if let Some(i) = (40..60).find(|&i| b[i] != 0) {
            return Err(bad(format!(
                "reserved header byte at offset {i} is {:#04x}, expected 0: not a header this build wrote",
                b[i]
            )));
        }
        let h = SegmentHeader {
            index: u64_at(16),
            size: u64_at(24),
            created_wall_ns: u64_at(32),
        };
        if h.size < MIN_SEGMENT_SIZE as u64 || h.size % 8 != 0 {
            return Err(bad(format!(
                "segment size {} at offset 24 is invalid",
                h.size
            )));
        }
        Ok(h)
    }
}

/// A mapped segment.
pub struct Segment {
    /// Its header.
    pub header: SegmentHeader,
    /// File path.
    pub path: PathBuf,
    /// The mapping (read-write for the writer, read-only for readers). Shared
    /// with the background flusher, which msyncs it.
    pub map: Arc<MmapRaw>,
    /// The file (kept open for fallocate / fsync).
    pub file: File,
}

impl Segment {
    /// Segment size in bytes.
    #[inline]
    pub fn size(&self) -> usize {
        self.header.size as usize
    }

    /// Creates segment `index` of `size` bytes in `dir`: temporary file,
    /// `posix_fallocate`, header, fsync, rename, directory fsync; then maps it
    /// read-write, pre-faulted. On error (ENOSPC, EFBIG, …) the temporary file
    /// is removed and nothing else changed.
    pub fn create(dir: &Path, index: u64, size: usize) -> Result<Segment, JournalError> {
        let path = dir.join(segment_name(index));
        let tmp = dir.join(format!(".{}.tmp", segment_name(index)));
        let _ = fs::remove_file(&tmp);
        let result = (|| {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(|e| JournalError::io(&tmp, "create the segment file", e))?;
            allocate(&file, &tmp, size)?;
            let header = SegmentHeader {
                index,
                size: size as u64,
                created_wall_ns: crate::clock::wall_ns(),
            };
            file.write_all_at(&header.encode(), 0)
                .map_err(|e| JournalError::io(&tmp, "write the segment header", e))?;
            file.sync_all()
                .map_err(|e| JournalError::io(&tmp, "fsync the new segment", e))?;
            let map = map_rw(&file, &tmp, size)?;
            fs::rename(&tmp, &path)
                .map_err(|e| JournalError::io(&path, "rename the new segment into place", e))?;
            fsync_dir(dir)?;
            Ok(Segment {
                header,
                path: path.clone(),
                map: Arc::new(map),
                file,
            })
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    /// Opens an existing segment read-write for appending: checks the header
    /// and restores the pre-allocated length if the file was cut short.
    pub fn open_rw(path: &Path, expected_index: u64) -> Result<Segment, JournalError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| JournalError::io(path, "open the segment", e))?;
        let header = read_header(&file, path, expected_index)?;
        let len = file
            .metadata()
            .map_err(|e| JournalError::io(path, "stat the segment", e))?
            .len();
        if len != header.size {
            allocate(&file, path, header.size as usize)?;
            file.set_len(header.size)
                .map_err(|e| JournalError::io(path, "restore the segment length", e))?;
        }
        let map = map_rw(&file, path, header.size as usize)?;
        Ok(Segment {
            header,
            path: path.to_path_buf(),
            map: Arc::new(map),
            file,
        })
    }
}

/// Reads and checks the header of an open segment file.
pub fn read_header(
    file: &File,
    path: &Path,
    expected_index: u64,
) -> Result<SegmentHeader, JournalError> {
    let mut b = [0u8; SEGMENT_HEADER_LEN];
    let mut got = 0;
    while got < b.len() {
        match file.read_at(&mut b[got..], got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(JournalError::io(path, "read the segment header", e)),
        }
    }
    let h = SegmentHeader::decode(path, &b[..got])?;
    let len = file
        .metadata()
        .map_err(|e| JournalError::io(path, "stat the segment", e))?
        .len();
    if len > h.size {
        // Never trusted, never "restored": acting on it would cut records off.
        return Err(JournalError::BadSegment {
            path: path.to_path_buf(),
            what: format!(
                "header says the segment is {} bytes (offset 24), the file is {len}: the header's size field is wrong",
                h.size
            ),
        });
    }
    if h.index != expected_index {
        return Err(JournalError::BadSegment {
            path: path.to_path_buf(),
            what: format!(
                "header says segment index {} (offset 16), the file name says {expected_index}: renamed by hand?",
                h.index
            ),
        });
    }
    Ok(h)
}

fn allocate(file: &File, path: &Path, size: usize) -> Result<(), JournalError> {
    use std::os::fd::AsRawFd;
    // SAFETY: the fd is open for writing for the duration of the call; the
    // call only changes the file's allocation.
    let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, size as libc::off_t) };
    if rc != 0 {
        return Err(JournalError::SegmentAlloc {
            path: path.to_path_buf(),
            size: size as u64,
            source: io::Error::from_raw_os_error(rc),
        });
    }
    Ok(())
}

fn map_rw(file: &File, path: &Path, size: usize) -> Result<MmapRaw, JournalError> {
    let map = MmapOptions::new()
        .len(size)
        .populate()
        .map_raw(file)
        .map_err(|e| JournalError::io(path, "map the segment", e))?;
    Ok(map)
}

/// Touches every page of `map` from `from` on with a write of the byte that is
/// already there, so the first append to a page does not take a write fault
/// (`MAP_POPULATE` only read-faults a shared mapping). Only the writer calls
/// it, on bytes past the last committed record, which no reader looks at.
pub fn prefault_for_write(map: &MmapRaw, from: usize) {
    let page = 4096;
    let base = map.as_mut_ptr();
    let mut off = from.div_ceil(page) * page;
    while off < map.len() {
        // SAFETY: `off < map.len()`, so the byte is inside the mapping. It is
        // past every committed record: no reader reads it (readers stop at the
        // first commit word that is not set), and this thread is the only
        // writer (journal lock). Volatile keeps the store of an unchanged value.
        unsafe {
            let p = base.add(off);
            std::ptr::write_volatile(p, std::ptr::read_volatile(p));
        }
        off += page;
    }
}

/// fsyncs a directory (after a rename or create in it).
pub fn fsync_dir(dir: &Path) -> Result<(), JournalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| JournalError::io(dir, "fsync the journal directory", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_only_our_pattern() {
        assert_eq!(segment_name(7), "journal-0000000007.seg");
        assert_eq!(parse_segment_name("journal-0000000007.seg"), Some(7));
        assert_eq!(parse_segment_name("journal-7.seg"), None);
        assert_eq!(parse_segment_name(".journal-0000000007.seg.tmp"), None);
        assert_eq!(parse_segment_name("journal-00000000x7.seg"), None);
    }

    #[test]
    fn header_damage_is_named() {
        let h = SegmentHeader {
            index: 3,
            size: 1 << 20,
            created_wall_ns: 5,
        };
        let b = h.encode();
        let p = Path::new("x.seg");
        assert_eq!(SegmentHeader::decode(p, &b).unwrap(), h);
        for i in 0..SEGMENT_HEADER_LEN {
            let mut d = b;
            d[i] ^= 0x10;
            assert!(SegmentHeader::decode(p, &d).is_err(), "flip at byte {i}");
        }
        let e = SegmentHeader::decode(p, &b[..10]).unwrap_err().to_string();
        assert!(e.contains("shorter than"), "{e}");
    }
}
