//! The checksums the journal and checkpoints use, in one place.
//!
//! Both come from the `crc-fast` package, which picks at run time the widest
//! carry-less multiply the CPU offers (AVX-512 VPCLMULQDQ on the development
//! VM) instead of the one-instruction-per-8-bytes `crc32` loop: a quick
//! checkpoint of 10,000 open orders checksums 486 KB, and that alone took
//! 37–66 µs with the previous crate against 6–20 µs with this one (same VM,
//! BENCHMARKS.md, issue 16 item 2). The formats do not change: CRC-32C
//! (CRC-32/ISCSI) for journal records and segment headers, CRC-64/XZ for
//! checkpoints.

use crc_fast::{CrcAlgorithm, Digest};

/// CRC-32C of `data`.
#[inline]
pub(crate) fn crc32c(data: &[u8]) -> u32 {
    crc_fast::crc32_iscsi(data)
}

/// A CRC-32C computed over several pieces, in order.
pub(crate) struct Crc32c(Digest);

impl Crc32c {
    /// The CRC of nothing yet.
    #[inline]
    pub(crate) fn new() -> Crc32c {
        Crc32c(Digest::new(CrcAlgorithm::Crc32Iscsi))
    }

    /// Folds the next piece in.
    #[inline]
    pub(crate) fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    /// The CRC of every piece so far.
    #[inline]
    pub(crate) fn value(&self) -> u32 {
        // CRC-32 values fill the low 32 bits of the package's u64.
        self.0.finalize() as u32
    }
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
        let mut c = Crc32c::new();
        c.update(b"1234");
        c.update(b"");
        c.update(b"56789");
        assert_eq!(c.value(), 0xe306_9283);
    }
}
