//! The venue's audit log: one JSON object per line, appended as things
//! happen, flushed at the end of every turn of the venue's loop.
//!
//! ```text
//! {"mono_ns":…,"wall_ms":…,"venue":"SIM-A","session":"ENGINE","dir":"in","msg_type":"D","seq":5,"fix":"8=FIX.4.4|9=…|10=123|"}
//! {"mono_ns":…,"wall_ms":…,"venue":"SIM-A","session":"ENGINE","dir":"event","event":"cancel-on-disconnect","orders":12,"resting":0,"detail":"connection closed by peer"}
//! ```
//! * `dir` `in`: a message the venue accepted (framed, checksummed, in
//!   sequence, logged on); `out`: a message the venue sent or, while the
//!   session is down, queued for resend (`"sent":false`); `event`: something
//!   the venue did on its own (connect, logon, logout, disconnect,
//!   cancel-on-disconnect, dead-man expiry, a garbled frame refused…).
//! * `mono_ns` is `CLOCK_MONOTONIC` (comparable with the engine's clock on
//!   the same host), `wall_ms` Unix time in milliseconds.
//! * `resting` (events): orders of that session resting at the venue after
//!   the event, from the venue's own books.
//! * `fix`: the message with SOH shown as `|`.

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One line of the audit log.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// `CLOCK_MONOTONIC` ns.
    pub mono_ns: u64,
    /// Unix time, ms.
    pub wall_ms: u64,
    /// Venue name.
    pub venue: String,
    /// The session's CompID (empty before a logon).
    pub session: String,
    /// `in`, `out` or `event`.
    pub dir: String,
    /// MsgType of a message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub msg_type: Option<String>,
    /// MsgSeqNum of a message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// For `out`: false when queued for resend only (session down).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent: Option<bool>,
    /// The message, SOH as `|`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
    /// Event name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    /// Orders an event cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orders: Option<u64>,
    /// The session's resting orders after an event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resting: Option<u64>,
    /// Free text: a reason, a peer address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl AuditEntry {
    /// The value of `tag` in the logged message, if any.
    pub fn field(&self, tag: u32) -> Option<&str> {
        let fix = self.fix.as_deref()?;
        let prefix = format!("{tag}=");
        fix.split('|').find_map(|f| f.strip_prefix(prefix.as_str()))
    }

    /// A NewOrderSingle (35=D) the venue accepted from `session`.
    pub fn is_new_order_from(&self, session: &str) -> bool {
        self.session == session && self.dir == "in" && self.msg_type.as_deref() == Some("D")
    }

    /// The venue's event `event` on `session` (`logon`, `takeover`…).
    pub fn is_event_of(&self, session: &str, event: &str) -> bool {
        self.session == session && self.dir == "event" && self.event.as_deref() == Some(event)
    }
}

/// Appends entries to the audit file (or nowhere).
pub struct AuditLog {
    out: Option<BufWriter<File>>,
    path: Option<PathBuf>,
    dirty: bool,
    failed: bool,
}

impl AuditLog {
    /// A log appending to `path` (created), or a log that keeps nothing.
    pub fn open(path: Option<&Path>) -> io::Result<AuditLog> {
        let out = match path {
            Some(p) => Some(BufWriter::with_capacity(
                1 << 20,
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .map_err(|e| {
                        io::Error::new(e.kind(), format!("audit log {}: {e}", p.display()))
                    })?,
            )),
            None => None,
        };
        Ok(AuditLog {
            out,
            path: path.map(Path::to_path_buf),
            dirty: false,
            failed: false,
        })
    }

    /// True when entries are kept.
    pub fn enabled(&self) -> bool {
        self.out.is_some()
    }

    /// Appends one entry (buffered).
    pub fn write(&mut self, entry: &AuditEntry) {
        let Some(out) = self.out.as_mut() else {
            return;
        };
        let ok = serde_json::to_writer(&mut *out, entry).is_ok() && out.write_all(b"\n").is_ok();
        self.note(ok);
        self.dirty = true;
    }

    /// Pushes buffered entries to the file (once per loop turn).
    pub fn flush(&mut self) {
        if !self.dirty {
            return;
        }
        self.dirty = false;
        if let Some(out) = self.out.as_mut() {
            let ok = out.flush().is_ok();
            self.note(ok);
        }
    }

    fn note(&mut self, ok: bool) {
        if !ok && !self.failed {
            self.failed = true;
            eprintln!(
                "ks-venue: cannot write the audit log {}: entries are being lost",
                self.path
                    .as_deref()
                    .map_or("?".into(), |p| p.display().to_string())
            );
        }
    }
}

/// Reads an audit file; a torn last line (the venue was killed mid-write)
/// is skipped, any other bad line is an error naming it.
pub fn read(path: &Path) -> io::Result<Vec<AuditEntry>> {
    let f = File::open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("audit log {}: {e}", path.display())))?;
    let lines: Vec<String> = BufReader::new(f).lines().collect::<io::Result<_>>()?;
    let mut out = Vec::with_capacity(lines.len());
    for (n, line) in lines.iter().enumerate() {
        match serde_json::from_str(line) {
            Ok(e) => out.push(e),
            Err(_) if n + 1 == lines.len() => break,
            Err(e) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("audit log {} line {}: {e}", path.display(), n + 1),
                ))
            }
        }
    }
    Ok(out)
}

/// Orders of `session` the venue's ExecutionReports leave working: acked
/// (150=0) and not since cancelled (150=4), filled (39=2) or rejected, by
/// ClOrdID. Built from the venue's own outbound messages.
pub fn working_orders(entries: &[AuditEntry], session: &str) -> std::collections::BTreeSet<String> {
    let mut working = std::collections::BTreeSet::new();
    for e in entries
        .iter()
        .filter(|e| e.session == session && e.dir == "out" && e.msg_type.as_deref() == Some("8"))
    {
        let id = e.field(41).or(e.field(11)).unwrap_or("").to_string();
        match (e.field(150), e.field(39)) {
            (Some("0"), _) => {
                working.insert(id);
            }
            (Some("4" | "8"), _) | (_, Some("2")) => {
                working.remove(&id);
            }
            _ => {}
        }
    }
    working
}
