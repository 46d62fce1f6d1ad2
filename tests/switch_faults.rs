//! Failure paths of the switch itself (issue 9): a scoped trip that cannot
//! complete changes nothing, reset is a compare-and-swap from the generation
//! the operator saw, a no-op reset is recorded as one, and an unfinished
//! drain blocks reset whoever died.

use std::sync::Arc;

use killswitch::control::{
    AuditKind, ControlBlock, ControlError, DrainIncomplete, IncompleteWriter, Mode, Operator,
    ResetRequest, ScopeKind, Source, Transition, TripOutcome, TripRequest,
};

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

fn operator(dir: &std::path::Path, name: &str) -> Operator {
    Operator::new(Arc::new(ControlBlock::create(dir, name).unwrap()))
}

/// 65 venue names into a 64-slot table: the trip fails and leaves no level
/// raised, no name registered, no generation bump and no audit entry, so a
/// later unrelated trip cannot switch any of them on.
#[test]
fn a_scoped_trip_that_cannot_register_every_name_changes_nothing() {
    let d = tmp();
    let b = operator(d.path(), "full");
    let before = b.block().state();
    let scopes: Vec<(ScopeKind, String)> = (0..65)
        .map(|i| (ScopeKind::Venue, format!("V{i}")))
        .collect();
    let e = b
        .trip(&TripRequest {
            mode: Mode::Kill,
            scopes,
            source: Source::Cli,
            reason: "too many".into(),
        })
        .unwrap_err();
    assert!(matches!(e, ControlError::NamesFull { .. }), "{e}");
    assert_eq!(
        b.block().state(),
        before,
        "no generation bump, no SCOPED bit"
    );
    assert!(
        b.block().tripped_scopes().is_empty(),
        "{:?}",
        b.block().tripped_scopes()
    );
    assert_eq!(b.block().lookup_name(ScopeKind::Venue, "V0"), None);
    assert!(b.block().audit().is_empty());

    // A later, unrelated scoped trip sets SCOPED: only its own level counts.
    b.trip(&TripRequest {
        mode: Mode::HaltNew,
        scopes: vec![(ScopeKind::Strategy, "momo".into())],
        source: Source::Cli,
        reason: "momo".into(),
    })
    .unwrap();
    let scopes = b.block().tripped_scopes();
    assert_eq!(scopes.len(), 1, "{scopes:?}");
    assert_eq!(scopes[0].2, "momo");

    // An invalid name anywhere in the list also changes nothing.
    let gen = b.block().state().generation();
    let e = b
        .trip(&TripRequest {
            mode: Mode::Kill,
            scopes: vec![
                (ScopeKind::Venue, "GOOD".into()),
                (ScopeKind::Venue, "bad name".into()),
            ],
            source: Source::Cli,
            reason: "x".into(),
        })
        .unwrap_err();
    assert!(matches!(e, ControlError::InvalidName { .. }), "{e}");
    assert_eq!(b.block().state().generation(), gen);
    assert_eq!(b.block().lookup_name(ScopeKind::Venue, "GOOD"), None);
}

fn reset(b: &Operator, expected: Option<u64>, force: bool) -> Result<TripOutcome, ControlError> {
    b.reset(&ResetRequest {
        source: Source::Cli,
        reason: "operator".into(),
        force,
        expected_generation: expected,
    })
}

/// The operator saw HALT at generation 1; a lock-free trip (a signal
/// handler) escalates to KILL before the reset: the reset names generation
/// 1, so it is refused, says what changed, and the KILL stays.
#[test]
fn a_reset_names_the_generation_it_clears_and_never_erases_a_later_trip() {
    let d = tmp();
    let b = operator(d.path(), "cas");
    b.tripper()
        .trip_global(Mode::HaltNew, Source::Cli, "halt for a look");
    let seen = b.block().state().generation();
    b.tripper()
        .trip_global(Mode::Kill, Source::Signal, "signal SIGUSR1: emergency kill");
    let e = reset(&b, Some(seen), false).unwrap_err();
    let text = e.to_string();
    assert!(
        matches!(
            e,
            ControlError::ResetStale {
                expected: 1,
                found: 2,
                ..
            }
        ),
        "{text}"
    );
    assert!(text.contains("signal SIGUSR1"), "says what changed: {text}");
    assert_eq!(
        b.block().state().mode(),
        Mode::Kill,
        "the later trip stays in force"
    );
    assert_eq!(
        b.block().audit().last().unwrap().kind,
        AuditKind::ResetRefused
    );
    // Scope levels are untouched by a refused reset.
    b.trip(&TripRequest {
        mode: Mode::Kill,
        scopes: vec![(ScopeKind::Venue, "XNAS".into())],
        source: Source::Cli,
        reason: "venue".into(),
    })
    .unwrap();
    let before = b.block().tripped_scopes();
    reset(&b, Some(2), false).unwrap_err();
    assert_eq!(b.block().tripped_scopes(), before);
    // Naming the generation in force clears it.
    let now = b.block().state().generation();
    let out = reset(&b, Some(now), false).unwrap();
    assert!(!out.transition.current().is_active());
    assert!(b.block().tripped_scopes().is_empty());
}

/// A reset of a switch that is not tripped is recorded as a no-op reset,
/// as no-op trips are, not as a reset.
#[test]
fn a_reset_with_nothing_tripped_is_recorded_as_a_no_op() {
    let d = tmp();
    let b = operator(d.path(), "noop");
    let out = reset(&b, None, false).unwrap();
    assert!(matches!(out.transition, Transition::Unchanged(_)));
    let last = b.block().audit().pop().unwrap();
    assert_eq!(last.kind, AuditKind::ResetNoop);
    assert_eq!(b.block().state().generation(), 0);
    // A real reset later is still a reset.
    b.tripper().trip_global(Mode::Kill, Source::Cli, "k");
    reset(&b, None, false).unwrap();
    assert_eq!(b.block().audit().pop().unwrap().kind, AuditKind::Reset);
}

/// The "drain incomplete" record blocks reset whoever died: no engine is
/// attached here at all. The refusal gives the counts; a forced reset
/// clears the record and says so in the audit.
#[test]
fn an_unfinished_drain_on_record_blocks_reset_even_with_no_engine() {
    let d = tmp();
    let b = operator(d.path(), "rec");
    b.tripper().trip_global(Mode::Kill, Source::Cli, "k");
    assert!(!b.block().owner().alive);
    let rec = DrainIncomplete {
        generation: 1,
        open: 3700,
        confirmed: 1200,
        unknown: 2500,
        writer: IncompleteWriter::Emergency,
        no_snapshot: false,
        pid: 4242,
        writer_start_ticks: 7,
        wall_ns: 1,
    };
    assert!(b.record_unconfirmed_drain(&rec));
    assert_eq!(b.block().drain_incomplete(), Some(rec));
    let e = reset(&b, None, false).unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, ControlError::ResetRefused { .. }), "{text}");
    assert!(
        text.contains("generation 1")
            && text.contains("3700 open at the snapshot")
            && text.contains("1200 confirmed")
            && text.contains("2500 not confirmed"),
        "{text}"
    );
    assert_eq!(b.block().state().mode(), Mode::Kill);
    // Only `emergency`'s finding may be recorded by an operator: the
    // engine speaks for its own drain.
    assert!(!b.record_unconfirmed_drain(&DrainIncomplete {
        writer: IncompleteWriter::Drain,
        ..rec
    }));
    assert_eq!(b.block().drain_incomplete(), Some(rec));
    let out = reset(&b, None, true).unwrap();
    assert!(!out.transition.current().is_active());
    assert_eq!(b.block().drain_incomplete(), None);
    let last = b.block().audit().pop().unwrap();
    assert!(last.kind == AuditKind::Reset && last.forced);
}

/// `--dir` naming a regular file says so.
#[test]
fn a_control_dir_that_is_a_regular_file_is_named_as_such() {
    let d = tmp();
    let file = d.path().join("plain");
    std::fs::write(&file, b"x").unwrap();
    let e = ControlBlock::open(&file, "eng").unwrap_err();
    assert!(matches!(e, ControlError::NotADirectory { .. }), "{e}");
    assert!(e.to_string().contains("regular file"), "{e}");
    let e = ControlBlock::create(&file, "eng").unwrap_err();
    assert!(matches!(e, ControlError::NotADirectory { .. }), "{e}");
}

/// The invalid-name message lists what is allowed for that kind of name.
#[test]
fn invalid_name_messages_list_the_characters_allowed_for_that_name() {
    let d = tmp();
    let e = ControlBlock::create(d.path(), "a/b").unwrap_err();
    let text = e.to_string();
    assert!(text.contains("no '/'"), "{text}");
    let b = ControlBlock::create(d.path(), "ok").unwrap();
    let e = b
        .register_name(ScopeKind::Instrument, "BTC USD")
        .unwrap_err();
    assert!(
        e.to_string().contains(": /"),
        "instrument names may hold '/': {e}"
    );
}
