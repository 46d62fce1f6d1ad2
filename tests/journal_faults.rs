//! Fault injection on the journal: truncation and zeroing at every byte
//! offset of the last records, bit flips, a writer killed with SIGKILL in the
//! middle of a burst, a full disk, a second writer, a concurrent reader.
//!
//! Child processes are this test binary run again with `KS_JOURNAL_CHILD`
//! set, which makes [`child_process_entry_point`] run a writer routine.

mod journal_support;
mod tmpfs;
use tmpfs::Tmpfs;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use killswitch::journal::record::{LogRecord, OrderEventRecord, RecordType};
use killswitch::journal::{rebuild, recover, JournalError, JournalTail, JournalWriter};
use killswitch::order::{OrderId, Price, Qty, ScopeTags, Side};

use journal_support::*;

#[test]
fn truncation_and_zeroing_at_every_offset_lose_at_most_the_torn_record() {
    let src = tempfile::tempdir().unwrap();
    let spans = write_log_records(src.path(), 60);
    let original = std::fs::read(seg_path(src.path(), 1)).unwrap();
    // The region of the last four records plus a few bytes of empty space.
    let from = spans[spans.len() - 4].1 as usize;
    let to = spans.last().unwrap().2 as usize + 8;
    let work = tempfile::tempdir().unwrap();
    for cut in from..=to {
        for zero_instead in [false, true] {
            // Zeroing the padding of a record loses nothing; cutting the file
            // inside it makes the record incomplete.
            let end = |s: &(u64, u64, u64, u64)| if zero_instead { s.3 } else { s.2 } as usize;
            let complete = spans.iter().filter(|s| end(s) <= cut).count();
            let d = work.path().join(format!("c{cut}-{zero_instead}"));
            std::fs::create_dir(&d).unwrap();
            let bytes = if zero_instead {
                let mut b = original.clone();
                b[cut..].fill(0);
                b
            } else {
                original[..cut].to_vec()
            };
            std::fs::write(seg_path(&d, 1), &bytes).unwrap();
            let what = format!("cut at {cut} (zeroed: {zero_instead})");
            check_prefix(&read_back(&d), complete, &what);
            let rep = recover(&d).unwrap();
            let torn = spans.iter().any(|s| (s.1 as usize) < cut && cut < end(s));
            if torn {
                assert_eq!(rep.scan.dropped.len(), 1, "{what}: {:?}", rep.scan);
                assert_eq!(rep.scan.dropped[0].offset, spans[complete].1, "{what}");
                assert!(rep.scan.dropped[0].bytes > 0, "{what}");
            } else {
                assert!(
                    rep.scan.dropped.is_empty(),
                    "{what}: {:?}",
                    rep.scan.dropped
                );
            }
            // The journal takes appends again, right after the kept records.
            let (mut w, again) = JournalWriter::open(&d, cfg()).unwrap();
            assert!(
                again.is_clean(),
                "{what}: second recovery found more: {again:?}"
            );
            let t = text_of(complete as u64);
            let a = w
                .append(&LogRecord {
                    level: 3,
                    wall_ns: 0,
                    text: &t,
                })
                .unwrap();
            assert_eq!(a.seq, complete as u64 + 1, "{what}");
            drop(w);
            check_prefix(&read_back(&d), complete + 1, &what);
            std::fs::remove_dir_all(&d).unwrap();
        }
    }
}

#[test]
fn a_bit_flip_anywhere_in_the_last_records_stops_the_scan_before_it() {
    let src = tempfile::tempdir().unwrap();
    let spans = write_log_records(src.path(), 30);
    let original = std::fs::read(seg_path(src.path(), 1)).unwrap();
    let from = spans[spans.len() - 3].1 as usize;
    let to = spans.last().unwrap().2 as usize;
    let d = tempfile::tempdir().unwrap();
    for at in from..to {
        let mut b = original.clone();
        b[at] ^= 1 << (at % 8);
        std::fs::write(seg_path(d.path(), 1), &b).unwrap();
        let hit = spans
            .iter()
            .position(|s| (s.1 as usize) <= at && at < s.2 as usize)
            .unwrap();
        let got = read_back(d.path());
        // Padding bytes are not covered by the CRC; a flip there loses nothing.
        let padding = at >= spans[hit].3 as usize;
        let expect = if padding { spans.len() } else { hit };
        check_prefix(&got, expect, &format!("flip at {at}"));
    }
}

#[test]
fn roll_over_reopen_and_rebuild_keep_every_record_and_the_state() {
    let d = tempfile::tempdir().unwrap();
    let (mut w, rep) = JournalWriter::open(d.path(), cfg()).unwrap();
    assert!(rep.is_clean());
    let tags = ScopeTags {
        venue: 1,
        strategy: 0,
        instrument: 2,
        account: 3,
    };
    for id in 1..=2000u64 {
        let side = if id % 2 == 0 { Side::Buy } else { Side::Sell };
        let new = OrderEventRecord::new_order(
            OrderId(id),
            tags,
            side,
            Price::from_units(100),
            Qty::from_lots(2),
        );
        w.append(&new).unwrap();
        if id % 3 == 0 {
            w.append(&new.with_fill(Qty::from_lots(2), Price::from_units(100), true))
                .unwrap();
        }
    }
    w.prepare_next_segment().unwrap();
    let (seg, _) = w.position();
    assert!(
        seg > 3,
        "2000 orders must span several 64 KiB segments, at {seg}"
    );
    let last = w.next_seq() - 1;
    drop(w);
    // A prepared-but-unused spare segment is removed by recovery.
    let (w, rep) = JournalWriter::open(d.path(), cfg()).unwrap();
    assert_eq!(rep.scan.spare_segments.len(), 1, "{rep:?}");
    assert_eq!(rep.scan.last_seq, last);
    drop(w);
    let r = rebuild(d.path()).unwrap();
    assert!(
        r.issues.is_empty(),
        "{:?}",
        &r.issues[..r.issues.len().min(3)]
    );
    assert_eq!(r.state.open_orders.len(), 2000 - 666);
    // Fills: ids divisible by 3; even ids buy, odd sell: 333 buys, 333 sells of 2 lots.
    let pos = r.state.positions.values().next().unwrap();
    assert_eq!(pos.qty, Qty::ZERO);
    assert_eq!(r.state.max_order_id, OrderId(2000));
}

#[test]
fn a_second_writer_is_refused_and_told_who_holds_the_lock() {
    let d = tempfile::tempdir().unwrap();
    let (_w, _) = JournalWriter::open(d.path(), cfg()).unwrap();
    match JournalWriter::open(d.path(), cfg()) {
        Err(e @ JournalError::Locked { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.contains(&format!("pid {}", std::process::id())),
                "{msg}"
            );
        }
        Err(e) => panic!("expected Locked, got {e}"),
        Ok(_) => panic!("a second writer was allowed"),
    }
    assert!(matches!(
        recover(d.path()),
        Err(JournalError::Locked { .. })
    ));
    // Reading while the writer is active works and says so.
    let r = rebuild(d.path()).unwrap();
    assert!(r.writer_active.is_some());
}

#[test]
fn a_concurrent_reader_never_takes_a_torn_record() {
    let d = tempfile::tempdir().unwrap();
    let (mut w, _) = JournalWriter::open(d.path(), cfg()).unwrap();
    let n = 20_000u64;
    let dir = d.path().to_path_buf();
    let reader = std::thread::spawn(move || {
        let mut tail = JournalTail::open(&dir).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        // `next`: log records read; `seq`: the next sequence expected (the
        // writer's snapshot-index records at segment starts take one too).
        let (mut next, mut seq) = (1, 1);
        while next <= n {
            assert!(Instant::now() < deadline, "reader stuck at {next}");
            match tail.next_record().unwrap() {
                Some(r) => {
                    assert_eq!(r.seq, seq);
                    seq += 1;
                    if r.rtype_raw == RecordType::SnapshotIndex as u16 {
                        continue;
                    }
                    let l = LogRecord::decode(&r.payload).unwrap();
                    assert_eq!(l.text, text_of(next - 1));
                    next += 1;
                }
                None => std::thread::yield_now(),
            }
        }
        next - 1
    });
    for i in 0..n {
        let t = text_of(i);
        w.append(&LogRecord {
            level: 3,
            wall_ns: i,
            text: &t,
        })
        .unwrap();
    }
    assert_eq!(reader.join().unwrap(), n);
}

fn child(mode: &str, dir: &Path) -> Command {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args([
        "--exact",
        "child_process_entry_point",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env("KS_JOURNAL_CHILD", mode)
    .env("KS_JOURNAL_DIR", dir)
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit());
    c
}

/// Not a test of its own: the body of the child processes above, which run
/// it with `--ignored`. Does nothing unless `KS_JOURNAL_CHILD` is set.
#[test]
#[ignore = "entry point of the child processes of the tests above, not a test"]
fn child_process_entry_point() {
    let Ok(mode) = std::env::var("KS_JOURNAL_CHILD") else {
        return;
    };
    let dir = PathBuf::from(std::env::var("KS_JOURNAL_DIR").unwrap());
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match mode.as_str() {
        "burst" => {
            let (mut w, _) = JournalWriter::open(&dir, cfg()).unwrap();
            for i in 0.. {
                let t = text_of(i);
                let a = w
                    .append(&LogRecord {
                        level: 3,
                        wall_ns: i,
                        text: &t,
                    })
                    .unwrap();
                writeln!(out, "SEQ {}", a.seq).unwrap();
                out.flush().unwrap();
            }
        }
        "fsize" => {
            use nix::sys::resource::{setrlimit, Resource};
            use nix::sys::signal::{signal, SigHandler, Signal};
            // SAFETY: ignoring SIGXFSZ installs no handler code; the test
            // wants EFBIG from the system call instead of death by signal.
            unsafe { signal(Signal::SIGXFSZ, SigHandler::SigIgn) }.unwrap();
            // RLIMIT_FSIZE caps the size of each file: the first segment is
            // made before the limit, the next one cannot be allocated.
            let (mut w, _) = JournalWriter::open(&dir, cfg()).unwrap();
            let limit = SEG as u64 / 2;
            setrlimit(Resource::RLIMIT_FSIZE, limit, limit).unwrap();
            let mut last = 0;
            for i in 0.. {
                let t = text_of(i);
                match w.append(&LogRecord {
                    level: 3,
                    wall_ns: i,
                    text: &t,
                }) {
                    Ok(a) => last = a.seq,
                    Err(e) => {
                        writeln!(out, "ERR {} {e}", e.raw_os_error().unwrap_or(-1)).unwrap();
                        // The writer stays usable for records that still fit.
                        let again = w.append(&LogRecord {
                            level: 3,
                            wall_ns: 0,
                            text: "",
                        });
                        writeln!(out, "AGAIN {}", again.is_ok()).unwrap();
                        break;
                    }
                }
            }
            writeln!(out, "LAST {last}").unwrap();
        }
        m => panic!("unknown child mode {m}"),
    }
}

/// Lines of a child's stdout that start with `prefix`, sent over a channel.
fn lines(stdout: std::process::ChildStdout) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    rx
}

#[test]
fn sigkill_mid_burst_recovers_every_completed_record() {
    let d = tempfile::tempdir().unwrap();
    let mut c = child("burst", d.path()).spawn().unwrap();
    let rx = lines(c.stdout.take().unwrap());
    let mut completed = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    // Let the burst run across a few segment roll-overs, then kill it.
    while completed.len() < 3000 {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) => completed.extend(l.strip_prefix("SEQ ").and_then(|s| s.parse::<u64>().ok())),
            Err(e) => {
                let _ = c.kill();
                panic!(
                    "child stopped reporting after {} records: {e}",
                    completed.len()
                );
            }
        }
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(c.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let status = c.wait().unwrap();
    assert!(!status.success());
    // Whatever the child reported before dying was committed before it said so.
    while let Ok(l) = rx.recv_timeout(Duration::from_secs(5)) {
        completed.extend(l.strip_prefix("SEQ ").and_then(|s| s.parse::<u64>().ok()));
    }
    let rep = recover(d.path()).unwrap();
    let reported = *completed.last().unwrap();
    assert!(
        rep.scan.last_seq >= reported,
        "lost records: journal ends at {}, child completed {reported}",
        rep.scan.last_seq
    );
    assert!(
        rep.scan.dropped.iter().all(|x| x.offset > 0),
        "{:?}",
        rep.scan.dropped
    );
    let got = read_back(d.path());
    check_prefix(&got, got.len(), "after SIGKILL");
    assert!(got.last().is_some_and(|(seq, _)| *seq >= reported));
    eprintln!(
        "killed after {reported} reported records; journal holds {}; recovery: {:?}",
        got.len(),
        rep.actions
    );
}

#[test]
fn file_size_limit_stops_appends_with_a_clear_error_and_loses_nothing() {
    let d = tempfile::tempdir().unwrap();
    let mut c = child("fsize", d.path()).spawn().unwrap();
    let rx = lines(c.stdout.take().unwrap());
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while let Ok(l) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        out.push(l);
    }
    assert!(c.wait().unwrap().success(), "child failed: {out:?}");
    let err = out
        .iter()
        .find_map(|l| l.find("ERR ").map(|i| &l[i..]))
        .unwrap_or_else(|| panic!("no error: {out:?}"));
    assert!(err.starts_with(&format!("ERR {} ", libc::EFBIG)), "{err}");
    assert!(
        err.contains("every record appended so far is intact"),
        "{err}"
    );
    // After the error the writer still works for a record that fits in the
    // current segment (an empty log line may or may not).
    let again = out.iter().any(|l| l == "AGAIN true");
    let last: u64 = out
        .iter()
        .find_map(|l| l.strip_prefix("LAST "))
        .unwrap()
        .parse()
        .unwrap();
    let got = read_back(d.path());
    // Every record before the error, plus the empty one if it fitted.
    assert_eq!(got.len() as u64, last + again as u64);
    check_prefix(&got[..last as usize], last as usize, "after EFBIG");
}

#[test]
fn a_full_disk_stops_appends_with_enospc_and_loses_nothing() {
    let Some(fs) = Tmpfs::mount("256k") else {
        return;
    };
    let d = fs.0.join("j");
    let (mut w, _) = JournalWriter::open(&d, cfg()).unwrap();
    let mut appended = 0;
    let err = loop {
        let t = text_of(appended);
        match w.append(&LogRecord {
            level: 3,
            wall_ns: 0,
            text: &t,
        }) {
            Ok(_) => appended += 1,
            Err(e) => break e,
        }
    };
    assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
    drop(w);
    let got = read_back(&d);
    check_prefix(&got, appended as usize, "after ENOSPC");
}
