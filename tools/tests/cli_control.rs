//! The `killswitch` binary against real control files in temp dirs.

mod support;

use std::fs::OpenOptions;
use std::io::{Seek, SeekFrom, Write};
use std::sync::Arc;
use std::time::Duration;

use killswitch::control::{AuditKind, ControlBlock, EngineOwner, Mode, ScopeKind, Tripper};
use killswitch::gate::{Gate, Rejection, Verdict};
use killswitch::order::{OrderIntent, Price, Qty, ScopeTags, Side};
use support::{ks, run, wait_for};

fn order(tags: ScopeTags) -> OrderIntent {
    OrderIntent {
        tags,
        side: Side::Buy,
        qty: Qty::from_lots(1),
        price: Price::from_units(100),
        position: Qty::ZERO,
    }
}

#[test]
fn a_second_process_trips_and_this_gate_rejects_and_status_says_who() {
    let d = tempfile::tempdir().unwrap();
    let block = Arc::new(ControlBlock::create(d.path(), "eng").unwrap());
    let _engine = EngineOwner::attach(block.clone()).unwrap();
    let gate = Gate::new(block.clone());
    assert!(gate.check(&order(ScopeTags::default())).is_allow());

    let mut trip = ks(d.path(), "eng");
    trip.args(["trip", "--reason", "strategy bleeding"]);
    let out = run(trip);
    out.expect_code(0);
    assert!(out.stdout().contains("TRIPPED KILL"), "{}", out.stdout());

    assert!(wait_for(Duration::from_secs(5), || !gate
        .check(&order(ScopeTags::default()))
        .is_allow()));

    let mut st = ks(d.path(), "eng");
    st.args(["status", "--json"]);
    let out = run(st);
    out.expect_code(0);
    let v: serde_json::Value = serde_json::from_str(&out.stdout()).unwrap();
    assert_eq!(v["mode"], "kill");
    assert_eq!(v["trip"]["reason"], "strategy bleeding");
    assert_eq!(v["trip"]["source"], "cli");
    assert_ne!(
        v["trip"]["pid"].as_u64().unwrap(),
        std::process::id() as u64
    );
    assert_eq!(
        v["owner"]["pid"].as_u64().unwrap(),
        std::process::id() as u64
    );
    assert_eq!(v["owner"]["alive"], true);

    let mut st = ks(d.path(), "eng");
    st.arg("status");
    let out = run(st);
    out.expect_code(0);
    assert!(
        out.stdout().contains("KILL: no new orders pass"),
        "{}",
        out.stdout()
    );
    assert!(
        out.stdout().contains("\"strategy bleeding\""),
        "{}",
        out.stdout()
    );
}

#[test]
fn scoped_trip_blocks_only_its_scope() {
    let d = tempfile::tempdir().unwrap();
    let block = Arc::new(ControlBlock::create(d.path(), "eng").unwrap());
    let a = block.register_name(ScopeKind::Venue, "SIM-A").unwrap();
    let b = block.register_name(ScopeKind::Venue, "SIM-B").unwrap();
    let mm = block.register_name(ScopeKind::Strategy, "mm").unwrap();
    let momo = block.register_name(ScopeKind::Strategy, "momo").unwrap();
    let gate = Gate::new(block.clone());

    let mut trip = ks(d.path(), "eng");
    trip.args(["trip", "--venue", "SIM-B", "--reason", "venue B stale data"]);
    run(trip).expect_code(0);
    let mut trip = ks(d.path(), "eng");
    trip.args([
        "trip",
        "--mode",
        "halt",
        "--strategy",
        "momo",
        "--reason",
        "momo runaway",
    ]);
    run(trip).expect_code(0);

    let tags = |venue, strategy| ScopeTags {
        venue,
        strategy,
        ..Default::default()
    };
    assert!(
        gate.check(&order(tags(a, mm))).is_allow(),
        "other venue and strategy trade on"
    );
    assert!(matches!(
        gate.check(&order(tags(b, mm))),
        Verdict::Reject(Rejection::Mode {
            mode: Mode::Kill,
            scope: Some(ScopeKind::Venue),
            ..
        })
    ));
    assert!(matches!(
        gate.check(&order(tags(a, momo))),
        Verdict::Reject(Rejection::Mode {
            mode: Mode::HaltNew,
            scope: Some(ScopeKind::Strategy),
            ..
        })
    ));
    assert_eq!(block.state().mode(), Mode::Normal, "global mode untouched");

    let mut st = ks(d.path(), "eng");
    st.arg("status");
    let out = run(st);
    assert!(
        out.stdout().contains("venue SIM-B -> kill"),
        "{}",
        out.stdout()
    );
    assert!(
        out.stdout().contains("strategy momo -> halt-new"),
        "{}",
        out.stdout()
    );
}

#[test]
fn reset_needs_confirm_and_a_reason_and_is_audited() {
    let d = tempfile::tempdir().unwrap();
    let mut init = ks(d.path(), "eng");
    init.arg("init");
    run(init).expect_code(0);
    let mut trip = ks(d.path(), "eng");
    trip.args(["trip", "--reason", "x"]);
    run(trip).expect_code(0);

    let mut reset = ks(d.path(), "eng");
    reset.args(["reset", "--reason", "done"]);
    let out = run(reset);
    out.expect_code(1);
    assert!(out.stderr().contains("--confirm"), "{}", out.stderr());
    let block = ControlBlock::open(d.path(), "eng").unwrap();
    assert_eq!(
        block.state().mode(),
        Mode::Kill,
        "refused reset changed nothing"
    );

    let mut reset = ks(d.path(), "eng");
    reset.args(["reset", "--confirm"]);
    run(reset).expect_code(1);

    let mut reset = ks(d.path(), "eng");
    reset.args(["reset", "--confirm", "--reason", "root cause fixed"]);
    let out = run(reset);
    out.expect_code(0);
    assert!(out.stdout().contains("RESET"), "{}", out.stdout());
    assert_eq!(block.state().mode(), Mode::Normal);
    let audit = block.audit();
    assert_eq!(audit.last().unwrap().kind, AuditKind::Reset);
    assert_eq!(audit.last().unwrap().reason, "root cause fixed");

    let mut a = ks(d.path(), "eng");
    a.arg("audit");
    let out = run(a);
    out.expect_code(0);
    assert!(
        out.stdout().contains("TRIP") && out.stdout().contains("RESET"),
        "{}",
        out.stdout()
    );
}

#[test]
fn damaged_control_files_give_clear_errors_and_exit_3() {
    let d = tempfile::tempdir().unwrap();
    let path = ControlBlock::create(d.path(), "eng")
        .unwrap()
        .path()
        .to_path_buf();
    let patch = |off: u64, bytes: &[u8]| {
        let mut f = OpenOptions::new().write(true).open(&path).unwrap();
        f.seek(SeekFrom::Start(off)).unwrap();
        f.write_all(bytes).unwrap();
    };
    let status = || {
        let mut c = ks(d.path(), "eng");
        c.arg("status");
        run(c)
    };

    patch(8, &((7u32 << 16) | 1).to_le_bytes());
    let out = status();
    out.expect_code(3);
    assert!(
        out.stderr().contains("layout version 7.1"),
        "{}",
        out.stderr()
    );

    patch(0, b"GARBAGE!");
    let out = status();
    out.expect_code(3);
    assert!(
        out.stderr().contains("not \"KILLSWCH\""),
        "{}",
        out.stderr()
    );

    OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(4096)
        .unwrap();
    let out = status();
    out.expect_code(3);
    assert!(out.stderr().contains("is 4096 bytes"), "{}", out.stderr());
    assert!(
        out.stderr().contains(&path.display().to_string()),
        "names the file"
    );

    let mut trip = ks(d.path(), "eng");
    trip.args(["trip", "--reason", "x"]);
    run(trip).expect_code(3);

    let mut missing = ks(d.path(), "other");
    missing.arg("status");
    let out = run(missing);
    out.expect_code(3);
    assert!(out.stderr().contains("does not exist"), "{}", out.stderr());

    let mut rm = ks(d.path(), "eng");
    rm.args(["remove", "--confirm"]);
    run(rm).expect_code(3);
    let mut rm = ks(d.path(), "eng");
    rm.args(["remove", "--confirm", "--force"]);
    run(rm).expect_code(0);
    assert!(!path.exists());
}

#[test]
fn wrong_arguments_exit_2() {
    let d = tempfile::tempdir().unwrap();
    let mut c = ks(d.path(), "eng");
    c.args(["trip", "--mode", "explode", "--reason", "x"]);
    run(c).expect_code(2);
    let mut c = ks(d.path(), "eng");
    c.arg("trip");
    let out = run(c);
    out.expect_code(2);
    assert!(out.stderr().contains("--reason"), "{}", out.stderr());
    let mut c = ks(d.path(), "../escape");
    c.arg("init");
    run(c).expect_code(2);
}

#[test]
fn remove_refuses_while_a_live_engine_owns_the_block() {
    let d = tempfile::tempdir().unwrap();
    let block = Arc::new(ControlBlock::create(d.path(), "eng").unwrap());
    let _engine = EngineOwner::attach(block.clone()).unwrap();
    let mut rm = ks(d.path(), "eng");
    rm.args(["remove", "--confirm"]);
    let out = run(rm);
    out.expect_code(1);
    assert!(out.stderr().contains("alive"), "{}", out.stderr());
    assert!(block.path().exists());
}

#[test]
fn concurrent_trips_from_processes_leave_a_consistent_record() {
    let d = tempfile::tempdir().unwrap();
    let block = ControlBlock::create(d.path(), "eng").unwrap();
    let modes = [
        "reduce-only",
        "halt",
        "kill",
        "halt",
        "reduce-only",
        "kill",
        "kill",
        "halt",
    ];
    let children: Vec<_> = modes
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let mut c = ks(d.path(), "eng");
            c.args(["trip", "--mode", m, "--reason", &format!("proc {i} {m}")]);
            if i % 3 == 0 {
                c.args(["--venue", &format!("V{}", i % 2)]);
            }
            c.stdout(std::process::Stdio::null());
            c.spawn().unwrap()
        })
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    let s = block.state();
    assert_eq!(s.mode(), Mode::Kill, "the strongest global trip wins");
    assert!(s.scoped());
    let audit = block.audit();
    assert_eq!(audit.len(), modes.len(), "every request is recorded once");
    let changed: Vec<_> = audit.iter().filter(|e| e.kind == AuditKind::Trip).collect();
    // Each changing trip took its own generation; the word's generation
    // counts them all.
    let mut gens: Vec<_> = changed.iter().map(|e| e.generation).collect();
    gens.sort();
    gens.dedup();
    assert_eq!(gens.len(), changed.len(), "{audit:#?}");
    assert_eq!(s.generation(), *gens.last().unwrap());
    let pids: std::collections::HashSet<_> = audit.iter().map(|e| e.pid).collect();
    assert_eq!(pids.len(), modes.len(), "one writer process per entry");
    // Venue scopes V0 (procs 0 and 6) and V1 (proc 3) hold the max level asked.
    let v0 = block.lookup_name(ScopeKind::Venue, "V0").unwrap();
    let v1 = block.lookup_name(ScopeKind::Venue, "V1").unwrap();
    assert_eq!(block.scope_level(ScopeKind::Venue, v0), Mode::Kill);
    assert_eq!(block.scope_level(ScopeKind::Venue, v1), Mode::HaltNew);
}

/// `reset --generation G` clears only generation G: after another trip it
/// is refused (exit 1) and says what changed; `audit` shows a no-op reset
/// as one; `status` of a block whose engine died says "latched" only when
/// something is tripped.
#[test]
fn reset_names_its_generation_and_no_op_resets_are_audited_as_such() {
    let d = tempfile::tempdir().unwrap();
    let block = ControlBlock::create(d.path(), "eng").unwrap();
    let mut reset = ks(d.path(), "eng");
    reset.args(["reset", "--confirm", "--reason", "nothing to do"]);
    let out = run(reset);
    out.expect_code(0);
    assert!(out.stdout().contains("no-op"), "{}", out.stdout());
    let mut a = ks(d.path(), "eng");
    a.arg("audit");
    let out = run(a);
    out.expect_code(0);
    assert!(out.stdout().contains("reset (no-op)"), "{}", out.stdout());
    assert_eq!(block.audit().last().unwrap().kind, AuditKind::ResetNoop);

    let mut trip = ks(d.path(), "eng");
    trip.args(["trip", "--mode", "halt", "--reason", "look first"]);
    run(trip).expect_code(0);
    let mut trip = ks(d.path(), "eng");
    trip.args(["trip", "--reason", "risk: loss limit"]);
    run(trip).expect_code(0);
    let mut reset = ks(d.path(), "eng");
    reset.args([
        "reset",
        "--confirm",
        "--reason",
        "halt reviewed",
        "--generation",
        "1",
    ]);
    let out = run(reset);
    out.expect_code(1);
    assert!(
        out.stderr().contains("generation 2") && out.stderr().contains("risk: loss limit"),
        "{}",
        out.stderr()
    );
    assert_eq!(block.state().mode(), Mode::Kill, "the later trip stands");
    let mut reset = ks(d.path(), "eng");
    reset.args([
        "reset",
        "--confirm",
        "--reason",
        "both reviewed",
        "--generation",
        "2",
    ]);
    run(reset).expect_code(0);
    assert_eq!(block.state().mode(), Mode::Normal);

    // A dead owner: "latched" only while something is tripped.
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    // Written as a crashed engine leaves it: the header's owner pid (offset
    // 40) and start ticks (48), straight into the file.
    {
        use std::os::unix::fs::FileExt;
        let f = OpenOptions::new().write(true).open(block.path()).unwrap();
        f.write_all_at(&(dead as u64).to_le_bytes(), 40).unwrap();
        f.write_all_at(&1u64.to_le_bytes(), 48).unwrap();
    }
    let mut st = ks(d.path(), "eng");
    st.arg("status");
    let out = run(st);
    out.expect_code(0);
    assert!(out.stdout().contains("DEAD"), "{}", out.stdout());
    assert!(!out.stdout().contains("latched"), "{}", out.stdout());
    let mut trip = ks(d.path(), "eng");
    trip.args(["trip", "--reason", "again"]);
    run(trip).expect_code(0);
    let mut st = ks(d.path(), "eng");
    st.arg("status");
    let out = run(st);
    assert!(out.stdout().contains("stays latched"), "{}", out.stdout());
}

/// `--dir` naming a regular file says so (exit 2: a wrong argument); the
/// invalid engine-name message lists what an engine name may hold.
#[test]
fn a_dir_that_is_a_file_and_a_bad_engine_name_get_precise_messages() {
    let d = tempfile::tempdir().unwrap();
    let file = d.path().join("not-a-dir");
    std::fs::write(&file, b"").unwrap();
    let mut st = ks(&file, "eng");
    st.arg("status");
    let out = run(st);
    out.expect_code(2);
    assert!(out.stderr().contains("regular file"), "{}", out.stderr());
    let mut init = ks(d.path(), "a/b");
    init.arg("init");
    let out = run(init);
    out.expect_code(2);
    assert!(out.stderr().contains("no '/'"), "{}", out.stderr());
}

/// Runs a `killswitch` command whose standard output is a pipe nobody reads
/// (its read end closed before the command starts), like `| head -1`
/// after head has exited.
fn run_into_closed_pipe(mut cmd: std::process::Command) -> support::Run {
    let (read, write) = nix::unistd::pipe().unwrap();
    drop(read);
    cmd.stdout(std::process::Stdio::from(write));
    cmd.stderr(std::process::Stdio::piped());
    let desc = format!("{cmd:?} > closed pipe");
    let out = cmd.spawn().unwrap().wait_with_output().unwrap();
    support::Run { desc, output: out }
}

#[test]
fn a_closed_pipe_is_a_normal_end_of_output_not_a_panic() {
    let d = tempfile::tempdir().unwrap();
    let block = Arc::new(ControlBlock::create(d.path(), "eng").unwrap());
    Tripper::new(block).trip_global(Mode::Kill, killswitch::control::Source::Api, "pipe test");
    for args in [vec!["status"], vec!["status", "--json"], vec!["audit"]] {
        let mut c = ks(d.path(), "eng");
        c.args(&args);
        // expect_code also fails on "panicked" in stderr.
        run_into_closed_pipe(c).expect_code(0);
    }
    // A command that acts still reports by its exit code: the reset is
    // refused (exit 1) whether or not anyone reads its output.
    let mut c = ks(d.path(), "eng");
    c.args(["reset", "--reason", "no confirm"]);
    run_into_closed_pipe(c).expect_code(1);

    let j = d.path().join("journal");
    let (mut w, _) = killswitch::journal::JournalWriter::open(
        &j,
        killswitch::journal::JournalConfig::small_for_tests(),
    )
    .unwrap();
    for i in 0..2000u64 {
        w.append(&killswitch::journal::record::LogRecord {
            level: 3,
            wall_ns: i,
            text: "a line long enough to fill a pipe buffer quickly",
        })
        .unwrap();
    }
    drop(w);
    for args in [
        vec!["journal", "inspect", "--json"],
        vec!["journal", "inspect", "--records"],
    ] {
        let mut c = std::process::Command::new(support::KILLSWITCH);
        c.args(&args).arg(&j);
        run_into_closed_pipe(c).expect_code(0);
    }
}
