//! The writer folds the CRC-32C in blocks while it encodes: records whose
//! payloads end before, on and after a block boundary, and a quick
//! checkpoint spanning many blocks, must all read back as valid (the reader
//! recomputes the CRC over the whole record) with the bytes written.

use killswitch::journal::{rebuild, scan, JournalConfig, JournalWriter, TradingState};

#[test]
fn records_across_crc_blocks_read_back_valid() {
    let dir = tempfile::tempdir().unwrap();
    let (mut w, _) = JournalWriter::open(dir.path(), JournalConfig::small_for_tests()).unwrap();
    let sizes = [0usize, 1, 7, 4095, 4096, 4097, 8192, 12_345];
    let payloads: Vec<Vec<u8>> = sizes
        .iter()
        .map(|&n| (0..n).map(|i| (i * 31 % 251) as u8).collect())
        .collect();
    for p in &payloads {
        w.append_bytes(7, p).unwrap();
    }
    let state = TradingState::synthetic(1_000);
    let q = w.quick_checkpoint(&state).unwrap();
    assert!(q.bytes > 4 * 4096, "the snapshot spans several CRC blocks");
    w.sync().unwrap();
    drop(w);

    let mut seen = Vec::new();
    // `scan` recomputes each record's CRC over the header and the whole
    // payload and drops any record whose stored CRC differs.
    let rep = scan(dir.path(), true, |v| {
        seen.push((v.rtype_raw, v.payload.to_vec()));
    })
    .unwrap();
    assert!(rep.dropped.is_empty(), "{:?}", rep.dropped);
    let logs: Vec<&Vec<u8>> = seen
        .iter()
        .filter(|(t, _)| *t == 7)
        .map(|(_, p)| p)
        .collect();
    assert_eq!(logs, payloads.iter().collect::<Vec<_>>());
    let rebuilt = rebuild(dir.path()).unwrap();
    assert_eq!(rebuilt.state.open_orders, state.open_orders);
}
