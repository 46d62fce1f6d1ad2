use super::*;
use std::fs::{self, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::sync::Arc;

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

fn req(mode: Mode, reason: &str) -> TripRequest {
    TripRequest {
        mode,
        scopes: vec![],
        source: Source::Cli,
        reason: reason.into(),
    }
}

#[test]
fn create_then_open_sees_the_same_word_and_mode_0600() {
    let d = tmp();
    let a = ControlBlock::create(d.path(), "e1").unwrap();
    let b = ControlBlock::open(d.path(), "e1").unwrap();
    a.trip(&req(Mode::HaltNew, "x")).unwrap();
    assert_eq!(b.state().mode(), Mode::HaltNew);
    let mode = fs::metadata(a.path()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert!(matches!(
        ControlBlock::create(d.path(), "e1"),
        Err(ControlError::AlreadyExists { .. })
    ));
}

#[test]
fn missing_file_and_bad_names_are_clear_errors() {
    let d = tmp();
    let e = ControlBlock::open(d.path(), "nope").unwrap_err();
    assert!(matches!(e, ControlError::NotFound { .. }));
    assert!(e.to_string().contains("killswitch init"));
    assert!(matches!(
        ControlBlock::create(d.path(), "../etc"),
        Err(ControlError::InvalidName { .. })
    ));
}

#[test]
fn damaged_files_are_refused_with_the_reason() {
    let d = tmp();
    let b = ControlBlock::create(d.path(), "dmg").unwrap();
    let path = b.path().to_path_buf();
    drop(b);

    let write_at = |off: u64, bytes: &[u8]| {
        let mut f = OpenOptions::new().write(true).open(&path).unwrap();
        f.seek(SeekFrom::Start(off)).unwrap();
        f.write_all(bytes).unwrap();
    };
    // Wrong major version.
    write_at(8, &((9u32 << 16) | 2).to_le_bytes());
    let e = ControlBlock::open(d.path(), "dmg").unwrap_err();
    assert!(
        matches!(
            e,
            ControlError::UnsupportedVersion {
                major: 9,
                minor: 2,
                ..
            }
        ),
        "{e}"
    );
    // Wrong magic.
    write_at(0, b"NOTKILLS");
    let e = ControlBlock::open(d.path(), "dmg").unwrap_err();
    assert!(matches!(e, ControlError::BadMagic { .. }), "{e}");
    // Truncated.
    OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(100)
        .unwrap();
    let e = ControlBlock::open(d.path(), "dmg").unwrap_err();
    assert!(
        matches!(e, ControlError::WrongSize { found: 100, .. }),
        "{e}"
    );
    // All zero (creator died before writing the header).
    let f = OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(0).unwrap();
    f.set_len(FILE_LEN as u64).unwrap();
    let e = ControlBlock::open(d.path(), "dmg").unwrap_err();
    assert!(matches!(e, ControlError::NotInitialised { .. }), "{e}");
    // Removal still works when forced.
    ControlBlock::remove(d.path(), "dmg", true).unwrap();
    assert!(!path.exists());
}

#[test]
fn trip_latches_across_reopen_and_records_who_and_why() {
    let d = tmp();
    {
        let b = ControlBlock::open_or_create(d.path(), "latch").unwrap();
        let out = b.trip(&req(Mode::Kill, "strategy bleeding")).unwrap();
        assert!(matches!(out.transition, Transition::Changed { .. }));
    }
    let b = ControlBlock::open_or_create(d.path(), "latch").unwrap();
    assert_eq!(b.state().mode(), Mode::Kill);
    let t = b.last_trip().unwrap();
    assert_eq!(t.reason, "strategy bleeding");
    assert_eq!(t.pid, std::process::id());
    assert_eq!(t.source, Source::Cli);
    assert_eq!(t.generation, 1);
    // A repeated trip is a no-op but still audited.
    let out = b.trip(&req(Mode::ReduceOnly, "late")).unwrap();
    assert!(matches!(out.transition, Transition::Unchanged(_)));
    let audit = b.audit();
    assert_eq!(audit.len(), 2);
    assert_eq!(audit[1].kind, AuditKind::TripNoop);
    assert_eq!(b.last_trip().unwrap().reason, "strategy bleeding");
}

#[test]
fn reset_is_refused_while_orders_are_unknown_unless_forced() {
    let d = tmp();
    let b = ControlBlock::create(d.path(), "rst").unwrap();
    b.trip(&req(Mode::Kill, "k")).unwrap();
    b.drain_status().orders_unknown.store(3, Ordering::Release);
    let r = ResetRequest {
        source: Source::Cli,
        reason: "fixed".into(),
        force: false,
        expected_generation: None,
    };
    let e = b.reset(&r).unwrap_err();
    assert!(e.to_string().contains("3 order(s)"), "{e}");
    assert_eq!(b.state().mode(), Mode::Kill);
    let out = b.reset(&ResetRequest { force: true, ..r }).unwrap();
    assert!(!out.transition.current().is_active());
    let audit = b.audit();
    assert_eq!(audit[1].kind, AuditKind::ResetRefused);
    assert_eq!(audit[2].kind, AuditKind::Reset);
    assert!(audit[2].forced);
    assert!(b.last_trip().is_none());
}

#[test]
fn scoped_trip_then_reset_clears_scopes() {
    let d = tmp();
    let b = ControlBlock::create(d.path(), "sc").unwrap();
    let out = b
        .trip(&TripRequest {
            mode: Mode::HaltNew,
            scopes: vec![
                (ScopeKind::Strategy, "momo".into()),
                (ScopeKind::Account, "desk-7".into()),
            ],
            source: Source::Cli,
            reason: "desk limit".into(),
        })
        .unwrap();
    assert!(out.transition.current().scoped());
    assert_eq!(out.transition.current().mode(), Mode::Normal);
    let s = b.tripped_scopes();
    assert_eq!(s.len(), 2);
    assert_eq!(s[0].2, "momo");
    // The engine registering the name later gets the same index.
    assert_eq!(
        b.register_name(ScopeKind::Strategy, "momo").unwrap(),
        s[0].1
    );
    b.reset(&ResetRequest {
        source: Source::Cli,
        reason: "ok".into(),
        force: false,
        expected_generation: None,
    })
    .unwrap();
    assert!(b.tripped_scopes().is_empty());
    assert!(!b.state().is_active());
}

#[test]
fn owner_attach_refuses_a_second_live_engine_and_takes_over_a_dead_one() {
    let d = tmp();
    let b = ControlBlock::create(d.path(), "own").unwrap();
    // A dead owner: spawn a process, wait for it, claim its pid.
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    b.layout()
        .header
        .owner_pid
        .store(dead as u64, Ordering::Release);
    b.layout()
        .header
        .owner_start_ticks
        .store(1, Ordering::Release);
    assert!(!b.owner().alive);
    b.attach_owner().unwrap();
    assert_eq!(
        b.owner(),
        OwnerInfo {
            pid: std::process::id(),
            alive: true,
            start_ticks: proc_start_ticks(std::process::id()).unwrap()
        }
    );
    // A live owner that is not us: our parent process.
    let parent = std::os::unix::process::parent_id();
    b.layout()
        .header
        .owner_pid
        .store(parent as u64, Ordering::Release);
    b.layout()
        .header
        .owner_start_ticks
        .store(proc_start_ticks(parent).unwrap(), Ordering::Release);
    assert!(matches!(
        b.attach_owner(),
        Err(ControlError::OwnedByLiveProcess { .. })
    ));
}

#[test]
fn concurrent_trips_from_threads_leave_one_consistent_record_per_generation() {
    let d = tmp();
    let b = Arc::new(ControlBlock::create(d.path(), "conc").unwrap());
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let b = b.clone();
            std::thread::spawn(move || {
                for i in 0..20 {
                    let mode = [Mode::ReduceOnly, Mode::HaltNew, Mode::Kill][(t + i) % 3];
                    b.trip_global(mode, Source::Api, &format!("thread {t} try {i}"));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let s = b.state();
    assert_eq!(s.mode(), Mode::Kill);
    assert!(
        (1..=3).contains(&s.generation()),
        "at most three escalations: {s:?}"
    );
    let audit = b.audit();
    // 160 writes into a 64-slot ring: the newest 64 survive, all readable.
    assert_eq!(audit.len(), 64);
    let trips: Vec<_> = b
        .audit()
        .into_iter()
        .filter(|e| e.kind == AuditKind::Trip)
        .collect();
    // Generations of real trips are distinct.
    let mut gens: Vec<_> = trips.iter().map(|e| e.generation).collect();
    gens.dedup();
    assert_eq!(gens.len(), trips.len());
    assert!(audit.iter().all(|e| e.reason.starts_with("thread ")));
}

#[test]
fn reset_is_refused_while_a_live_engine_is_draining() {
    let d = tmp();
    let b = ControlBlock::create(d.path(), "drn").unwrap();
    b.attach_owner().unwrap();
    b.trip(&req(Mode::Kill, "k")).unwrap();
    b.drain_status().generation.store(1, Ordering::Release);
    b.drain_status()
        .phase
        .store(DrainPhase::Cancelling as u64, Ordering::Release);
    let r = ResetRequest {
        source: Source::Cli,
        reason: "too early".into(),
        force: false,
        expected_generation: None,
    };
    let e = b.reset(&r).unwrap_err();
    assert!(e.to_string().contains("still running"), "{e}");
    b.drain_status()
        .phase
        .store(DrainPhase::Done as u64, Ordering::Release);
    b.reset(&r).unwrap();
    let last = b.audit().pop().unwrap();
    assert_eq!(
        (last.kind, last.mode),
        (AuditKind::Reset, Mode::Kill),
        "records the mode it cleared"
    );
}

/// A drain clears only its own record: a clear naming another record's
/// meta word changes nothing.
#[test]
fn a_drain_incomplete_record_is_cleared_only_by_its_own_meta_word() {
    let d = tmp();
    let b = ControlBlock::create(d.path(), "rec").unwrap();
    let rec = DrainIncomplete {
        generation: 1,
        open: 3,
        confirmed: 1,
        unknown: 2,
        writer: IncompleteWriter::Drain,
        no_snapshot: false,
        pid: 4242,
        writer_start_ticks: 7,
        wall_ns: 1,
    };
    b.record_drain_incomplete(&rec);
    assert!(!b.clear_drain_incomplete(rec.meta() ^ 1));
    assert_eq!(b.drain_incomplete(), Some(rec));
    assert!(b.clear_drain_incomplete(rec.meta()));
    assert_eq!(b.drain_incomplete(), None);
}

#[test]
fn a_layout_1_file_is_refused_as_an_older_version_not_as_damage() {
    let d = tmp();
    let path = d.path().join("killswitch.old");
    // What a 1.1 build wrote: same magic, version 1.1, 196,736 bytes.
    let f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .unwrap();
    f.set_len(196_736).unwrap();
    let mut f = f;
    f.write_all(b"KILLSWCH").unwrap();
    f.write_all(&((1u32 << 16) | 1).to_le_bytes()).unwrap();
    let e = ControlBlock::open(d.path(), "old").unwrap_err();
    assert!(
        matches!(
            e,
            ControlError::UnsupportedVersion {
                major: 1,
                minor: 1,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("1.1"), "{e}");
}

fn reset_req(reason: &str) -> ResetRequest {
    ResetRequest {
        source: Source::Cli,
        reason: reason.into(),
        force: false,
        expected_generation: None,
    }
}

#[test]
fn a_risk_trip_can_only_be_reset_by_the_risk_role_and_the_audit_says_who() {
    let d = tmp();
    let b = ControlBlock::create(d.path(), "roles").unwrap();
    let risk = Actor {
        role: Some(Role::Risk),
        identity: "rita",
    };
    let trader = Actor {
        role: Some(Role::Trader),
        identity: "tom",
    };
    b.trip_global_as(Mode::Kill, Source::Http, "risk limit", risk);
    assert!(b.risk_hold());
    let t = b.last_trip().unwrap();
    assert_eq!((t.role, t.identity.as_str()), (Some(Role::Risk), "rita"));
    for who in [Actor::ANONYMOUS, trader] {
        let e = b.reset_as(&reset_req("try"), who).unwrap_err();
        assert!(matches!(e, ControlError::ResetNeedsRole { .. }), "{e}");
        // Even forced: the role is not a blocker --force overrides.
        let forced = ResetRequest {
            force: true,
            ..reset_req("try harder")
        };
        assert!(b.reset_as(&forced, who).is_err());
    }
    assert_eq!(b.state().mode(), Mode::Kill);
    let refused: Vec<_> = b
        .audit()
        .into_iter()
        .filter(|e| e.kind == AuditKind::ResetRefused)
        .collect();
    assert_eq!(refused.len(), 4);
    assert_eq!(refused[2].identity, "tom");
    assert_eq!(refused[2].role, Some(Role::Trader));
    b.reset_as(&reset_req("risk reviewed"), risk).unwrap();
    assert_eq!(b.state().mode(), Mode::Normal);
    assert!(!b.risk_hold());
    let last = b.audit().pop().unwrap();
    assert_eq!(last.kind, AuditKind::Reset);
    assert_eq!(
        (last.role, last.identity.as_str()),
        (Some(Role::Risk), "rita")
    );

    // A trader's trip: anyone with file access (or a trader token) resets it.
    b.trip_global_as(Mode::HaltNew, Source::Http, "trader stop", trader);
    assert!(!b.risk_hold());
    b.reset(&reset_req("done")).unwrap();

    // An automatic rule's trip (watchdog) needs risk too.
    b.trip_global(Mode::Kill, Source::Auto, "heartbeat stale");
    assert!(b.reset_as(&reset_req("try"), trader).is_err());
    b.reset_as(&reset_req("ok"), risk).unwrap();
}

#[test]
fn a_risk_trip_that_lands_after_a_risk_reset_stays_in_force() {
    let d = tmp();
    let b = ControlBlock::create(d.path(), "rolerace").unwrap();
    let risk = Actor {
        role: Some(Role::Risk),
        identity: "rita",
    };
    b.trip_global(Mode::Kill, Source::Auto, "first");
    let g = b.state().generation();
    b.reset_as(
        &ResetRequest {
            expected_generation: Some(g),
            ..reset_req("cleared")
        },
        risk,
    )
    .unwrap();
    b.trip_global(Mode::Kill, Source::Auto, "second");
    assert!(b.risk_hold(), "the second automatic trip holds again");
    assert!(b.reset(&reset_req("anonymous")).is_err());
}

#[test]
fn unauthorized_requests_are_recorded_and_change_nothing() {
    let d = tmp();
    let b = ControlBlock::create(d.path(), "unauth").unwrap();
    let g = b.state();
    b.record_unauthorized(Source::Http, "http 127.0.0.1:5555: reset: wrong token");
    assert_eq!(b.state(), g);
    let e = b.audit().pop().unwrap();
    assert_eq!(e.kind, AuditKind::Unauthorized);
    assert!(e.reason.contains("wrong token"));
}

#[test]
fn a_withdrawn_failover_request_reads_withdrawn_and_only_its_own_nonce_withdraws() {
    let d = tmp();
    let b = Arc::new(ControlBlock::create(d.path(), "fo").unwrap());
    let op = Operator::new(b.clone());
    assert_eq!(b.failover_request(), None);
    let r = op.request_failover();
    assert_eq!(b.failover_request(), Some(r));
    assert!(!r.withdrawn);
    // Another nonce (a newer request's, or a stale one) withdraws nothing.
    assert!(!op.withdraw_failover(r.nonce.wrapping_add(1)));
    assert!(op.withdraw_failover(r.nonce));
    let seen = b.failover_request().unwrap();
    assert!(seen.withdrawn);
    assert_eq!((seen.nonce, seen.pid), (r.nonce, std::process::id()));
    // Once only.
    assert!(!op.withdraw_failover(r.nonce));
    // A new request is a live one again.
    let again = op.request_failover();
    assert_ne!(again.nonce, r.nonce);
    assert!(!b.failover_request().unwrap().withdrawn);
}
