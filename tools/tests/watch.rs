//! `killswitch watch` in a real terminal: tmux runs the dashboard against
//! the reference engine; the test types into it (send-keys) and reads the
//! screen (capture-pane) while a drill-like trip drains live.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use killswitch::control::telemetry::{EngineStatus, TelemetrySnapshot};
use killswitch::control::{AuditKind, ControlBlock, Mode, Source};
use support::{ks, run, wait_for, KILLSWITCH};

const LONG: Duration = Duration::from_secs(60);

/// A tmux server of its own (socket in the test's directory), killed at the end.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn cmd(&self) -> Command {
        let mut c = Command::new("tmux");
        c.args(["-S", &self.socket]);
        c
    }

    fn capture(&self) -> String {
        let out = self
            .cmd()
            .args(["capture-pane", "-p", "-t", "watch"])
            .output()
            .expect("tmux must be installed (Debian package tmux)");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn send(&self, keys: &str) {
        let ok = self
            .cmd()
            .args(["send-keys", "-t", "watch", keys])
            .status()
            .unwrap()
            .success();
        assert!(ok, "tmux send-keys {keys}");
    }

    /// Waits until the screen shows every one of `needles`.
    fn wait_screen(&self, needles: &[&str]) -> String {
        let mut last = String::new();
        let seen = wait_for(LONG, || {
            last = self.capture();
            needles.iter().all(|n| last.contains(n))
        });
        assert!(
            seen,
            "the dashboard never showed {needles:?}; screen:\n{last}"
        );
        last
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd().arg("kill-server").status();
    }
}

fn start_engine(dir: &Path, name: &str) -> std::process::Child {
    let config = dir.join("engine.toml");
    // SIM-B ignores cancels and the deadline is a few seconds: the drain
    // stays visibly in progress while the dashboard is read.
    std::fs::write(
        &config,
        format!(
            "name = \"{name}\"\ncontrol_dir = \"{d}\"\njournal_dir = \"{d}/journal\"\n\
             [drain]\ncancel_deadline_ms = 10000\n\
             [[venues]]\nname = \"SIM-A\"\ninstruments = [\"BTC/USD\", \"ETH/USD\"]\nmass_cancel = true\n\
             [[venues]]\nname = \"SIM-B\"\ninstruments = [\"BTC/USD\"]\nignore_cancels = true\nseed = 2\n\
             [[strategies]]\nname = \"mm_btc_a\"\nvenue = \"SIM-A\"\ninstrument = \"BTC/USD\"\nopen_orders = 500\n\
             [[strategies]]\nname = \"mm_btc_b\"\nvenue = \"SIM-B\"\ninstrument = \"BTC/USD\"\nopen_orders = 300\n",
            d = dir.display()
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.join("engine.log")).unwrap();
    Command::new(KILLSWITCH)
        .args(["engine", "--config"])
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

#[test]
fn watch_shows_a_trip_and_its_drain_live_in_a_real_terminal() {
    let d = tempfile::tempdir().unwrap();
    let name = "watched";
    let mut engine = start_engine(d.path(), name);
    let running = wait_for(LONG, || {
        ControlBlock::open(d.path(), name).is_ok_and(|b| {
            TelemetrySnapshot::read(&b)
                .engine
                .is_some_and(|e| e.status == EngineStatus::Running && e.open_orders >= 400)
        })
    });
    assert!(
        running,
        "engine not running: {}",
        std::fs::read_to_string(d.path().join("engine.log")).unwrap_or_default()
    );

    // Plain mode for scripts.
    let once = run({
        let mut c = ks(d.path(), name);
        c.args(["watch", "--once", "--plain"]);
        c
    });
    once.expect_code(0);
    let text = once.stdout();
    for want in [
        "ENGINE watched",
        "RUNNING",
        "mm_btc_a",
        "SIM-B",
        "ORDER ENTRY",
        "Switch: NORMAL",
    ] {
        assert!(
            text.contains(want),
            "--once --plain lacks {want:?}:\n{text}"
        );
    }

    let tmux = Tmux {
        socket: d.path().join("tmux.sock").display().to_string(),
    };
    let watch_cmd = format!(
        "{KILLSWITCH} --dir {} --name {name} watch --interval 100ms",
        d.path().display()
    );
    let ok = tmux
        .cmd()
        .args(["new-session", "-d", "-s", "watch", "-x", "150", "-y", "50"])
        .arg(&watch_cmd)
        .status()
        .expect("tmux must be installed (Debian package tmux)")
        .success();
    assert!(ok, "tmux new-session");
    tmux.wait_screen(&[
        "ENGINE watched",
        "RUNNING",
        "mm_btc_b",
        "SIM-A",
        "up",
        "k = trip KILL",
    ]);

    // k asks; anything but y cancels.
    tmux.send("k");
    tmux.wait_screen(&["TRIP KILL on engine 'watched'?"]);
    tmux.send("n");
    tmux.wait_screen(&["trip cancelled"]);
    let b = ControlBlock::open(d.path(), name).unwrap();
    assert_eq!(
        b.state().mode(),
        Mode::Normal,
        "a cancelled trip trips nothing"
    );

    // k, y: the trip lands and the dashboard turns into the runbook's view
    // while SIM-B's orders wait for answers that never come.
    tmux.send("k");
    tmux.wait_screen(&["TRIP KILL on engine 'watched'?"]);
    tmux.send("y");
    let screen = tmux.wait_screen(&[
        "SHUTDOWN IN PROGRESS",
        "Status: DRAINING",
        "→ Target: 0",
        "Recent Actions:",
        "TRIP KILL by cli",
        "Gateway acknowledged generation",
    ]);
    assert!(screen.contains("Open Orders:"), "{screen}");
    assert_eq!(b.state().mode(), Mode::Kill);
    let trip = b.last_trip().unwrap();
    assert_eq!(trip.source, Source::Cli);
    assert!(trip.reason.contains("killswitch watch"), "{}", trip.reason);

    // The drain ends at SIM-B's deadline: unknown orders listed, engine out.
    let screen = tmux.wait_screen(&["SHUTDOWN COMPLETE", "Status: FAILED"]);
    assert!(screen.contains("unknown"), "{screen}");
    let status = engine.wait().unwrap();
    assert_eq!(
        status.code(),
        Some(11),
        "orders left CancelUnknown at SIM-B"
    );
    assert!(b
        .audit()
        .iter()
        .any(|e| e.kind == AuditKind::Trip && e.source == Source::Cli));

    // q quits and gives the terminal back.
    tmux.send("q");
    let gone = wait_for(LONG, || {
        !tmux
            .cmd()
            .args(["has-session", "-t", "watch"])
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success()
    });
    assert!(gone, "watch did not quit on q:\n{}", tmux.capture());
}
