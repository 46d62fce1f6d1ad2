//! Helpers for the wire tests: a `ks-venue` child process, its audit log,
//! and a small blocking FIX session (control messages, fuzzing, checks).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use killswitch_tools::fix::codec::{next_frame, parse_fields, printable, Body, Msg};
use killswitch_tools::fix::messages;
use killswitch_tools::fix::session::SessionState;
use killswitch_tools::venue_server::audit;
pub use killswitch_tools::venue_server::audit::AuditEntry;

/// The `ks-venue` binary built for this test run.
pub const KS_VENUE: &str = env!("CARGO_BIN_EXE_ks-venue");

/// A running `ks-venue`; SIGTERM and reaped on drop.
pub struct VenueProc {
    child: Child,
    addrs: HashMap<String, SocketAddr>,
    dir: PathBuf,
    stderr: PathBuf,
}

impl VenueProc {
    /// Starts `ks-venue` with `venues` (names, each on a free port) and
    /// `extra` flags, audit logs in `dir`; waits until every venue listens.
    pub fn start(dir: &Path, venues: &[&str], extra: &[&str]) -> VenueProc {
        let stderr = dir.join("ks-venue.stderr");
        let mut cmd = Command::new(KS_VENUE);
        for v in venues {
            cmd.arg("--venue").arg(format!("{v}:0"));
        }
        cmd.arg("--audit-dir").arg(dir).args(extra);
        cmd.stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).expect("stderr file"));
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {KS_VENUE}: {e}"));
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let mut addrs = HashMap::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while addrs.len() < venues.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    // ks-venue: venue NAME listening on ADDR (audit log …)
                    let words: Vec<&str> = line.split_whitespace().collect();
                    if let [_, "venue", name, "listening", "on", addr, ..] = words.as_slice() {
                        addrs.insert(name.to_string(), addr.parse().expect("address"));
                    }
                }
                Err(_) => panic!(
                    "ks-venue did not listen within 30 s; stderr:\n{}",
                    std::fs::read_to_string(&stderr).unwrap_or_default()
                ),
            }
        }
        VenueProc {
            child,
            addrs,
            dir: dir.to_path_buf(),
            stderr,
        }
    }

    /// Where venue `name` listens.
    pub fn addr(&self, name: &str) -> SocketAddr {
        self.addrs[name]
    }

    /// Venue `name`'s audit log file.
    pub fn audit_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.audit.jsonl"))
    }

    /// Venue `name`'s audit log now.
    pub fn audit(&self, name: &str) -> Vec<AuditEntry> {
        audit::read(&self.audit_path(name)).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Waits (deadline 30 s) until `pred` holds on venue `name`'s audit
    /// log; panics with the log's tail otherwise.
    pub fn wait_audit(
        &self,
        name: &str,
        what: &str,
        mut pred: impl FnMut(&[AuditEntry]) -> bool,
    ) -> Vec<AuditEntry> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let log = self.audit(name);
            if pred(&log) {
                return log;
            }
            if Instant::now() >= deadline {
                let tail: Vec<String> = log
                    .iter()
                    .rev()
                    .take(30)
                    .map(|e| format!("{e:?}"))
                    .collect();
                panic!(
                    "venue {name}: {what} not seen in the audit log within 30 s; last entries (newest first):\n{}\nstderr:\n{}",
                    tail.join("\n"),
                    std::fs::read_to_string(&self.stderr).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Sends `sig` to the venue process.
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, sig).expect("signal ks-venue");
    }

    /// True while the process runs.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The process's stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for VenueProc {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Events of `session` named `event` in an audit log.
pub fn events<'a>(log: &'a [AuditEntry], session: &str, event: &str) -> Vec<&'a AuditEntry> {
    log.iter()
        .filter(|e| e.session == session && e.event.as_deref() == Some(event))
        .collect()
}

/// A blocking FIX session for tests: logon, send, read answers.
pub struct RawSession {
    /// The socket.
    pub stream: TcpStream,
    /// Sequence numbers and stamping.
    pub state: SessionState,
    buf: Vec<u8>,
}

/// One message read back: its type and its text (SOH as `|`).
#[derive(Clone, Debug)]
pub struct Received {
    /// MsgType.
    pub msg_type: String,
    /// The frame, SOH as `|`.
    pub text: String,
}

impl Received {
    /// Value of `tag`.
    pub fn field(&self, tag: u32) -> Option<&str> {
        let p = format!("{tag}=");
        self.text
            .split('|')
            .find_map(|f| f.strip_prefix(p.as_str()))
    }
}

impl RawSession {
    /// Connects to `addr` as `comp` (no logon yet).
    pub fn connect(addr: SocketAddr, comp: &str, venue: &str) -> RawSession {
        let stream = TcpStream::connect(addr).expect("connect to the venue");
        stream.set_nodelay(true).ok();
        RawSession {
            stream,
            state: SessionState::new(comp, venue, Duration::from_secs(30), false),
            buf: Vec::new(),
        }
    }

    /// Connects and logs on (reset); panics unless the venue answers Logon.
    pub fn logon(addr: SocketAddr, comp: &str, venue: &str) -> RawSession {
        let mut s = RawSession::connect(addr, comp, venue);
        s.send(&messages::logon(30, true, true));
        let got = s.read_until(Duration::from_secs(10), |m| {
            m.msg_type == "A" || m.msg_type == "5"
        });
        assert_eq!(
            got.last().map(|m| m.msg_type.as_str()),
            Some("A"),
            "logon of {comp}: {got:?}"
        );
        s
    }

    /// Sends a message stamped by the session.
    pub fn send(&mut self, body: &Body) {
        let mut out = Vec::new();
        self.state.send(body, false, &mut out);
        self.write_raw(&out);
    }

    /// Writes bytes as they are (errors ignored: the venue may have closed).
    pub fn write_raw(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes);
    }

    /// Reads messages until `stop` holds for one, the venue closes, or the
    /// deadline passes; returns them all.
    pub fn read_until(
        &mut self,
        deadline: Duration,
        mut stop: impl FnMut(&Received) -> bool,
    ) -> Vec<Received> {
        let end = Instant::now() + deadline;
        let mut out = Vec::new();
        let mut fields = Vec::new();
        let mut chunk = [0u8; 64 * 1024];
        loop {
            while let Ok(Some(n)) = next_frame(&self.buf) {
                let frame: Vec<u8> = self.buf.drain(..n).collect();
                let msg_type = match parse_fields(&frame, &mut fields) {
                    Ok(()) => String::from_utf8_lossy(
                        Msg {
                            frame: &frame,
                            fields: &fields,
                        }
                        .msg_type(),
                    )
                    .into_owned(),
                    Err(_) => "?".into(),
                };
                let r = Received {
                    msg_type,
                    text: printable(&frame),
                };
                let done = stop(&r);
                out.push(r);
                if done {
                    return out;
                }
            }
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return out;
            }
            self.stream
                .set_read_timeout(Some(left.min(Duration::from_millis(200))))
                .ok();
            match self.stream.read(&mut chunk) {
                Ok(0) => return out,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => return out,
            }
        }
    }

    /// Sets a venue fault knob (the session must be the control CompID)
    /// and waits for the venue's confirmation.
    pub fn control(&mut self, knob: &str, value: &str) {
        self.send(&messages::venue_control(knob, value));
        let got = self.read_until(Duration::from_secs(10), |m| {
            m.msg_type == "U9" || m.msg_type == "3" || m.msg_type == "j"
        });
        assert_eq!(
            got.last().map(|m| m.msg_type.as_str()),
            Some("U9"),
            "control {knob}={value}: {got:?}"
        );
    }
}
