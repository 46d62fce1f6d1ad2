//! The active-role lease across two real processes on one control block
//! (`examples/lease_active.rs`, built as `lease-active-example`), checked
//! from the venue's own record: a tape file both processes append to, one
//! `write(2)` per line with `O_APPEND`, so its order is the order in which
//! the venue received the orders.
//!
//! 1. `a_stopped_active_is_fenced_and_sends_nothing_after_the_takeover`:
//!    A holds the lease and sends continuously; A is `SIGSTOP`ped; B
//!    acquires after A's lease lapses (raising the epoch) and sends; A is
//!    `SIGCONT`ed. From the tape: 0 orders of A after B's first order;
//!    A says it was fenced (epoch 1 replaced by 2) and exits by itself.
//! 2. `a_second_engine_is_refused_while_the_active_renews`: B started
//!    beside a live A, waiting three times A's lease for it to lapse, is
//!    refused (A kept renewing) and sends nothing; A trades on.
//!
//! No timing is asserted; every wait has a generous deadline.

mod support;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

use killswitch::control::{proc_state, ControlBlock};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use support::wait_for;

const EXAMPLE: &str = env!("CARGO_BIN_EXE_lease-active-example");
const NAME: &str = "pair";
const DEADLINE: Duration = Duration::from_secs(60);

/// One engine process; continued and killed on drop, so a failing test
/// leaves no stopped process behind.
struct Engine {
    child: Child,
    stdin: Option<ChildStdin>,
    stderr: PathBuf,
    label: &'static str,
}

impl Engine {
    fn start(dir: &Path, label: &'static str, extra: &[&str]) -> Engine {
        let stderr = dir.join(format!("{label}.stderr"));
        let mut child = Command::new(EXAMPLE)
            .arg("--dir")
            .arg(dir)
            .args(["--name", NAME])
            .arg("--tape")
            .arg(dir.join("tape"))
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        Engine {
            stdin: child.stdin.take(),
            child,
            stderr,
            label,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn signal(&self, sig: Signal) {
        kill(Pid::from_raw(self.pid() as i32), sig).unwrap();
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Ends its standard input: the example's stop request.
    fn ask_to_stop(&mut self) {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = stdin.flush();
        }
    }

    fn wait_exit(&mut self, why: &str) -> i32 {
        let mut status = None;
        let exited = wait_for(DEADLINE, || {
            status = self.child.try_wait().unwrap();
            status.is_some()
        });
        assert!(
            exited,
            "{}: did not exit ({why})\n{}",
            self.label,
            self.stderr()
        );
        status.unwrap().code().unwrap_or(-1)
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = kill(Pid::from_raw(self.pid() as i32), Signal::SIGCONT);
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The tape's NEW lines, in the venue's receive order: the sender pids.
fn tape_senders(dir: &Path) -> Vec<u32> {
    std::fs::read_to_string(dir.join("tape"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some("NEW"))
                .then(|| w.next().and_then(|p| p.parse().ok()))
                .flatten()
        })
        .collect()
}

fn sent_by(dir: &Path, pid: u32) -> usize {
    tape_senders(dir).iter().filter(|&&p| p == pid).count()
}

/// Everything a failure needs.
fn picture(dir: &Path, engines: &[&Engine]) -> String {
    let mut s = String::new();
    for e in engines {
        s += &format!("--- {} (pid {}) stderr\n{}\n", e.label, e.pid(), e.stderr());
    }
    let tape = std::fs::read_to_string(dir.join("tape")).unwrap_or_default();
    let lines: Vec<&str> = tape.lines().collect();
    s += &format!(
        "--- tape: {} lines, last 20:\n{}",
        lines.len(),
        lines[lines.len().saturating_sub(20)..].join("\n")
    );
    s
}

const LEASE_ARGS: [&str; 6] = [
    "--ttl-ms",
    "300",
    "--acquire-wait-ms",
    "60000",
    "--fence-wait-ms",
    "60000",
];

#[test]
fn a_stopped_active_is_fenced_and_sends_nothing_after_the_takeover() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    let mut a = Engine::start(dir, "A", &LEASE_ARGS);
    assert!(
        wait_for(DEADLINE, || a.stderr().contains("ACTIVE at epoch 1")
            && sent_by(dir, a.pid()) >= 200),
        "A did not start trading\n{}",
        picture(dir, &[&a])
    );

    // A stops wherever it is: between turns, or inside one (in the
    // middle of its writes), which the taker must then wait out.
    a.signal(Signal::SIGSTOP);
    assert!(
        wait_for(DEADLINE, || proc_state(a.pid()) == Some('T')),
        "A did not stop\n{}",
        picture(dir, &[&a])
    );
    let a_sent_before_stop = sent_by(dir, a.pid());

    let mut b = Engine::start(dir, "B", &LEASE_ARGS);
    // B raises the epoch once A's lease has lapsed (A cannot renew it).
    let block = ControlBlock::open(dir, NAME).unwrap();
    assert!(
        wait_for(DEADLINE, || {
            let l = block.lease();
            l.epoch == 2 && l.holder == b.pid()
        }),
        "B did not take the lease: {:?}\n{}",
        block.lease(),
        picture(dir, &[&a, &b])
    );
    // While A is stopped it writes nothing, whatever B does.
    assert_eq!(sent_by(dir, a.pid()), a_sent_before_stop);

    a.signal(Signal::SIGCONT);
    let a_code = a.wait_exit("it should see the newer epoch, stop and exit");
    assert!(
        wait_for(DEADLINE, || b.stderr().contains("ACTIVE at epoch 2")
            && sent_by(dir, b.pid()) >= 200),
        "B did not trade after the takeover\n{}",
        picture(dir, &[&a, &b])
    );
    b.ask_to_stop();
    let b_code = b.wait_exit("its standard input ended");

    let whole = picture(dir, &[&a, &b]);
    assert_eq!(a_code, 0, "A's exit code\n{whole}");
    assert_eq!(b_code, 0, "B's exit code\n{whole}");
    assert!(
        a.stderr()
            .contains("FENCED: epoch 1 replaced by epoch 2; this engine wrote nothing"),
        "A did not report that it was fenced\n{whole}"
    );
    // The venue's own order: nothing of A's after B's first order.
    let senders = tape_senders(dir);
    let first_b = senders
        .iter()
        .position(|&p| p == b.pid())
        .unwrap_or_else(|| panic!("no order of B on the tape\n{whole}"));
    let a_before = senders[..first_b].iter().filter(|&&p| p == a.pid()).count();
    let violations = senders[first_b..].iter().filter(|&&p| p == a.pid()).count();
    assert!(
        a_before >= 200,
        "A's orders before the takeover: {a_before}\n{whole}"
    );
    assert_eq!(
        violations, 0,
        "orders of the fenced A on the tape after B's first order\n{whole}"
    );
    // What A may have written after SIGCONT (the rest of a turn it was
    // stopped in) came before B's first order: B waited for it.
    eprintln!(
        "A sent {a_before} (of which {} after SIGCONT, all before B's first), B sent {}, violations {violations}",
        a_before - a_sent_before_stop,
        senders.len() - first_b
    );
}

#[test]
fn a_second_engine_is_refused_while_the_active_renews() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    let mut a = Engine::start(
        dir,
        "A",
        &[
            "--ttl-ms",
            "3000",
            "--acquire-wait-ms",
            "60000",
            "--fence-wait-ms",
            "60000",
        ],
    );
    assert!(
        wait_for(DEADLINE, || a.stderr().contains("ACTIVE at epoch 1")
            && sent_by(dir, a.pid()) >= 50),
        "A did not start trading\n{}",
        picture(dir, &[&a])
    );
    // A 9 s wait on A's 3 s lease: A renews it all along (a lease of 3 s,
    // not less: A's gateway renews it every ttl/4 from its own turns, and a
    // loaded machine can leave a thread without a core for most of a second).
    let mut b = Engine::start(
        dir,
        "B",
        &[
            "--ttl-ms",
            "3000",
            "--acquire-wait-ms",
            "9000",
            "--fence-wait-ms",
            "3000",
        ],
    );
    let b_code = b.wait_exit("it should be refused the lease");
    let whole = picture(dir, &[&a, &b]);
    assert_eq!(b_code, 2, "B's exit code (start failed)\n{whole}");
    assert!(
        b.stderr()
            .contains(&format!("is held by live pid {} (epoch 1)", a.pid())),
        "B's refusal names the holder\n{whole}"
    );
    assert_eq!(sent_by(dir, b.pid()), 0, "B sent orders\n{whole}");
    let block = ControlBlock::open(dir, NAME).unwrap();
    assert_eq!((block.lease().epoch, block.lease().holder), (1, a.pid()));
    // A still trades.
    let before = sent_by(dir, a.pid());
    assert!(
        wait_for(DEADLINE, || sent_by(dir, a.pid()) > before + 50),
        "A stopped trading\n{}",
        picture(dir, &[&a, &b])
    );
    a.ask_to_stop();
    assert_eq!(
        a.wait_exit("its standard input ended"),
        0,
        "{}",
        picture(dir, &[&a])
    );
}
