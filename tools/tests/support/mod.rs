//! Helpers shared by the process tests: run the real binaries in a temp dir
//! and dump everything when an expectation fails.

#![allow(dead_code)] // Each test crate uses a different subset of these helpers.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// The `killswitch` binary built by cargo for this test run.
pub const KILLSWITCH: &str = env!("CARGO_BIN_EXE_killswitch");

/// A `killswitch` command aimed at `dir` / `name`.
pub fn ks(dir: &Path, name: &str) -> Command {
    let mut c = Command::new(KILLSWITCH);
    c.arg("--dir").arg(dir).arg("--name").arg(name);
    c.env_remove("KILLSWITCH_DIR").env_remove("KILLSWITCH_NAME");
    c
}

/// Runs a command, returning its output, and describes it for failures.
pub fn run(mut cmd: Command) -> Run {
    let desc = format!("{cmd:?}");
    let output = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {desc}: {e}"));
    Run { desc, output }
}

/// A finished command.
pub struct Run {
    /// How it was invoked.
    pub desc: String,
    /// What it produced.
    pub output: Output,
}

impl Run {
    /// Standard output as text.
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }
    /// Standard error as text.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }
    /// Exit code (-1 when killed by a signal).
    pub fn code(&self) -> i32 {
        self.output.status.code().unwrap_or(-1)
    }
    /// Panics with the whole picture unless the exit code is `want`.
    pub fn expect_code(&self, want: i32) -> &Self {
        assert_eq!(
            self.code(),
            want,
            "{}\n--- exit {} (want {want})\n--- stdout\n{}\n--- stderr\n{}",
            self.desc,
            self.code(),
            self.stdout(),
            self.stderr()
        );
        assert!(
            !self.stderr().contains("panicked"),
            "{} panicked:\n{}",
            self.desc,
            self.stderr()
        );
        self
    }
}

/// Runs a `killswitch drill ... --json`: its JSON report, checked to say
/// `pass` (the checks printed when not) with exit code 0.
pub fn passing_drill(cmd: Command, what: &str) -> (serde_json::Value, Run) {
    let out = run(cmd);
    let v: serde_json::Value = serde_json::from_slice(&out.output.stdout).unwrap_or_else(|e| {
        panic!(
            "drill printed no JSON ({e}):\n{}\n{}",
            out.stdout(),
            out.stderr()
        )
    });
    assert!(
        v["pass"].as_bool().unwrap(),
        "{what} failed:\n{}\n{}",
        serde_json::to_string_pretty(&v["checks"]).unwrap(),
        out.stderr()
    );
    out.expect_code(0);
    (v, out)
}

/// Waits for `cond` with a deadline; false if it never held.
pub fn wait_for(deadline: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + deadline;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    cond()
}
pub mod pair;
pub mod planned;
pub mod venue;
