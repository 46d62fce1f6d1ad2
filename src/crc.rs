//! The checksums the journal and checkpoints use, in one place.
//!
//! CRC-32C (journal records, segment headers) comes from two packages,
//! chosen by the length of the piece: `crc32c` (the `crc32` instruction,
//! inlined: the fastest for the 24–300-byte pieces of an order event's
//! record) below [`BULK`], `crc-fast` (the CPU's wide carry-less multiply,
//! AVX-512 VPCLMULQDQ on the development VM) from it. Measured on the
//! development VM: 4 KiB 365 ns against 79 ns, 64 KiB 3.1 µs against 0.8
//! µs, but 256 B 41 ns against 63 ns (`crc-fast`'s per-call set-up); the
//! 486 KB of a quick checkpoint of 10,000 open orders took 37–66 µs with
//! `crc32c` alone (BENCHMARKS.md, issue 16 item 2). Both compute the same
//! CRC and continue each other's value. CRC-64/XZ (checkpoint files) is
//! `crc-fast`'s.

use crc_fast::{CrcAlgorithm, Digest};

/// Pieces from this length go to `crc-fast` (the crossover measured above
/// lies between 1 and 4 KiB).
const BULK: usize = 2048;

/// CRC-32C of `data`.
#[inline]
pub(crate) fn crc32c(data: &[u8]) -> u32 {
    crc32c_append(0, data)
}

/// CRC-32C of the bytes whose CRC-32C is `crc`, followed by `data`.
#[inline(always)]
pub(crate) fn crc32c_append(crc: u32, data: &[u8]) -> u32 {
    if data.len() < BULK {
        crc32c::crc32c_append(crc, data)
    } else {
        crc32c_append_bulk(crc, data)
    }
}

/// [`crc32c_append`] for a piece of [`BULK`] bytes or more, out of line so
/// the small pieces' path stays a few instructions.
#[inline(never)]
fn crc32c_append_bulk(crc: u32, data: &[u8]) -> u32 {
    // The package's running state is the register before the final xor.
    let mut d = Digest::new_with_init_state(CrcAlgorithm::Crc32Iscsi, u64::from(!crc));
    d.update(data);
    // CRC-32 values fill the low 32 bits of the package's u64.
    d.finalize() as u32
}

/// CRC-64/XZ of `data`: the checksum of every part of a checkpoint file.
pub fn crc64(data: &[u8]) -> u64 {
    crc_fast::checksum(CrcAlgorithm::Crc64Xz, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The catalogue's check values ("123456789"): the formats on disk are
    /// exactly CRC-32C and CRC-64/XZ, whatever computes them.
    #[test]
    fn check_values_match_the_catalogue() {
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
        assert_eq!(crc64(b"123456789"), 0x995d_c9bb_df19_39fa);
    }

    /// Small and bulk pieces continue each other: any split of a buffer
    /// gives the CRC of the whole, whichever package takes each piece.
    #[test]
    fn pieces_of_any_size_continue_each_other() {
        let buf: Vec<u8> = (0..3 * BULK + 77).map(|i| (i * 131 % 251) as u8).collect();
        let whole = crc32c::crc32c(&buf);
        for cut in [0, 1, 24, BULK - 1, BULK, BULK + 1, 2 * BULK + 5, buf.len()] {
            let (a, b) = buf.split_at(cut);
            assert_eq!(crc32c_append(crc32c(a), b), whole, "cut at {cut}");
        }
        assert_eq!(crc32c(&buf), whole);
    }
}
