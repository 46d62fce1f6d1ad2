//! The admin endpoint (`killswitch serve`) and the roles, as real
//! processes: the reference engine (`killswitch engine --config`), the
//! endpoint beside it, `curl`, raw sockets on loopback, and Python's
//! `prometheus_client` parser for `/metrics`.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use killswitch::control::telemetry::{EngineStatus, TelemetrySnapshot};
use killswitch::control::{AuditKind, ControlBlock, Mode, Role, Source};
use support::{ks, run, wait_for, KILLSWITCH};

const LONG: Duration = Duration::from_secs(60);

/// A child process killed (and reaped) when the test ends, pass or fail.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn write_engine_config(dir: &Path, name: &str, extra: &str) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            "name = \"{name}\"\ncontrol_dir = \"{}\"\njournal_dir = \"{}\"\n{extra}",
            dir.display(),
            dir.join(format!("{name}-journal")).display()
        ),
    )
    .unwrap();
    path
}

/// Starts the reference engine as the drill does and waits until it
/// publishes RUNNING with orders resting.
fn start_engine(dir: &Path, name: &str, extra: &str) -> Proc {
    let config = write_engine_config(dir, name, extra);
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
    let child = Command::new(KILLSWITCH)
        .arg("engine")
        .arg("--config")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let p = Proc(child);
    let running = wait_for(LONG, || {
        ControlBlock::open(dir, name).is_ok_and(|b| {
            TelemetrySnapshot::read(&b)
                .engine
                .is_some_and(|e| e.status == EngineStatus::Running && e.open_orders > 100)
        })
    });
    assert!(
        running,
        "engine never published RUNNING with orders resting; log:\n{}",
        std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default()
    );
    p
}

/// Starts `killswitch serve` and returns it with the address it printed.
fn start_serve(dir: &Path, name: &str, args: &[&str]) -> (Proc, String) {
    let mut child = ks(dir, name)
        .arg("serve")
        .args(args)
        .env_remove("KILLSWITCH_ROLES")
        .env_remove("KILLSWITCH_LISTEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    let addr = first
        .split("http://")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or_else(|| {
            let mut err = String::new();
            let _ = child.stderr.take().unwrap().read_to_string(&mut err);
            panic!("serve did not say where it listens: {first:?} {err}")
        })
        .to_string();
    // Keep draining stdout so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in out.lines() {});
    (Proc(child), addr)
}

/// `curl` with the status code on the last line; returns (code, body).
fn curl(args: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "30", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl must be installed (Debian package curl)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (
        code.trim().parse().unwrap_or(0),
        format!("{body}{}", String::from_utf8_lossy(&out.stderr)),
    )
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

fn wait_exit(p: &mut Proc, deadline: Duration) -> Option<i32> {
    let end = Instant::now() + deadline;
    while Instant::now() < end {
        if let Ok(Some(s)) = p.0.try_wait() {
            return s.code();
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    None
}

#[test]
fn the_runbooks_curl_trips_a_running_engine_and_the_trip_is_audited_with_the_peer() {
    let d = tempfile::tempdir().unwrap();
    let mut engine = start_engine(d.path(), "ops", "");
    let (_serve, addr) = start_serve(d.path(), "ops", &["--listen", "127.0.0.1:0"]);
    // The seed's command, on this test's port.
    let (code, body) = curl(&[
        "-X",
        "POST",
        &format!("http://{addr}/api/killswitch/activate"),
    ]);
    assert_eq!(code, 200, "{body}");
    let v = json(&body);
    assert_eq!(v["tripped"], true, "{body}");
    assert_eq!(v["mode"], "kill");
    assert_eq!(
        wait_exit(&mut engine, LONG),
        Some(0),
        "the engine drains and exits 0"
    );
    let b = ControlBlock::open(d.path(), "ops").unwrap();
    let t = b.last_trip().expect("trip record");
    assert_eq!(t.source, Source::Http);
    assert!(t.reason.starts_with("http 127.0.0.1:"), "{}", t.reason);
    // /api/status after the drain: done, nothing unknown, kill path known.
    let (code, body) = curl(&[&format!("http://{addr}/api/status")]);
    assert_eq!(code, 200, "{body}");
    let s = json(&body);
    assert_eq!(s["mode"], "kill");
    assert_eq!(s["drain"]["phase"], "done", "{body}");
    assert_eq!(s["drain"]["orders_unknown"], 0);
    assert!(s["kill_path"]["trip_to_gateway_ack_ns"].is_u64(), "{body}");
    assert_eq!(s["telemetry"]["engine"]["status"], "OFFLINE", "{body}");
    assert_eq!(s["telemetry"]["engine"]["active_strategies"], 0, "{body}");
}

/// The runbook as written: SIGSTOP the engine, then
/// `curl -X POST http://localhost:8080/api/killswitch/activate` against the
/// endpoint on its default address; the stopped engine cannot answer, the
/// endpoint (its own process) does, and the engine drains once continued.
#[test]
fn the_default_address_answers_the_runbooks_exact_curl_while_the_engine_is_sigstopped() {
    // The default address is one port for the whole machine: if something
    // else holds it (another `serve` on a shared box), this case cannot be
    // run here, and says so rather than failing for a reason not ours.
    if std::net::TcpListener::bind("127.0.0.1:8080").is_err() {
        eprintln!(
            "NOTE: 127.0.0.1:8080 is taken on this machine: the default-address case was not run"
        );
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let mut engine = start_engine(d.path(), "stopped", "");
    let (_serve, addr) = start_serve(d.path(), "stopped", &[]);
    assert_eq!(addr, "127.0.0.1:8080", "the default bind address");
    let pid = engine.0.id() as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGSTOP,
    )
    .unwrap();
    let (code, body) = curl(&[
        "-X",
        "POST",
        "http://localhost:8080/api/killswitch/activate",
    ]);
    assert_eq!(code, 200, "{body}");
    let b = ControlBlock::open(d.path(), "stopped").unwrap();
    assert_eq!(
        b.state().mode(),
        Mode::Kill,
        "tripped while the engine is stopped"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGCONT,
    )
    .unwrap();
    assert_eq!(wait_exit(&mut engine, LONG), Some(0));
}

fn roles(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let roles = dir.join("roles.toml");
    let (rita, tom) = (dir.join("rita.token"), dir.join("tom.token"));
    for (who, role, token) in [("rita", "risk", &rita), ("tom", "trader", &tom)] {
        run({
            let mut c = Command::new(KILLSWITCH);
            c.args(["roles", "add", "--identity", who, "--role", role])
                .arg("--roles-file")
                .arg(&roles)
                .arg("--token-out")
                .arg(token);
            c
        })
        .expect_code(0);
    }
    (roles, rita, tom)
}

fn token(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap().trim().to_string()
}

#[test]
fn a_risk_trip_is_reset_only_with_the_risk_token_and_every_refusal_is_audited() {
    let d = tempfile::tempdir().unwrap();
    let (roles_file, rita, tom) = roles(d.path());
    let mut engine = start_engine(d.path(), "risk", "");
    let (_serve, addr) = start_serve(
        d.path(),
        "risk",
        &[
            "--listen",
            "127.0.0.1:0",
            "--roles-file",
            roles_file.to_str().unwrap(),
        ],
    );
    let url = |p: &str| format!("http://{addr}{p}");
    let auth = |t: &Path| format!("Authorization: Bearer {}", token(t));
    // Risk trips, with a reason.
    let (code, body) = curl(&[
        "-X",
        "POST",
        "-H",
        &auth(&rita),
        "--data",
        r#"{"mode":"kill","reason":"loss limit breached"}"#,
        &url("/api/killswitch/activate"),
    ]);
    assert_eq!(code, 200, "{body}");
    let generation = json(&body)["generation"].as_u64().unwrap();
    assert_eq!(wait_exit(&mut engine, LONG), Some(0));
    let b = ControlBlock::open(d.path(), "risk").unwrap();
    let t = b.last_trip().unwrap();
    assert_eq!((t.role, t.identity.as_str()), (Some(Role::Risk), "rita"));
    assert!(t.reason.ends_with("loss limit breached"), "{}", t.reason);

    let reset_body = format!(r#"{{"confirm":true,"generation":{generation},"reason":"reviewed"}}"#);
    // No token, then a wrong one: 401, audited or counted.
    let (code, body) = curl(&[
        "-X",
        "POST",
        "--data",
        &reset_body,
        &url("/api/killswitch/reset"),
    ]);
    assert_eq!(code, 401, "{body}");
    let (code, body) = curl(&[
        "-X",
        "POST",
        "-H",
        "Authorization: Bearer not-a-token",
        "--data",
        &reset_body,
        &url("/api/killswitch/reset"),
    ]);
    assert_eq!(code, 401, "{body}");
    let unauthorized = b
        .audit()
        .iter()
        .filter(|e| e.kind == AuditKind::Unauthorized)
        .count();
    let (_, metrics) = curl(&[&url("/metrics")]);
    let suppressed = metrics
        .lines()
        .find(|l| l.starts_with("killswitch_http_audit_suppressed_total "))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap();
    assert!(unauthorized >= 1, "the first 401 is in the audit ring");
    assert_eq!(unauthorized as u64 + suppressed, 2, "{metrics}");
    // The trader's token is valid but the role is not enough: 403, audited
    // as a refused reset with the trader's identity.
    let (code, body) = curl(&[
        "-X",
        "POST",
        "-H",
        &auth(&tom),
        "--data",
        &reset_body,
        &url("/api/killswitch/reset"),
    ]);
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("risk"), "{body}");
    let refused = b.audit().pop().unwrap();
    assert_eq!(refused.kind, AuditKind::ResetRefused);
    assert_eq!(
        (refused.role, refused.identity.as_str()),
        (Some(Role::Trader), "tom")
    );
    // Malformed and incomplete requests: 400, nothing changes.
    for bad in [
        "{not json",
        r#"{"confirm":true,"reason":"x"}"#,
        r#"{"generation":1,"reason":"x"}"#,
        r#"{"confirm":true,"generation":1,"reason":"x","extra":1}"#,
    ] {
        let (code, body) = curl(&[
            "-X",
            "POST",
            "-H",
            &auth(&rita),
            "--data",
            bad,
            &url("/api/killswitch/reset"),
        ]);
        assert_eq!(code, 400, "{bad}: {body}");
    }
    // A generation the switch has moved on from: 409.
    let stale = format!(
        r#"{{"confirm":true,"generation":{},"reason":"x"}}"#,
        generation - 1
    );
    let (code, body) = curl(&[
        "-X",
        "POST",
        "-H",
        &auth(&rita),
        "--data",
        &stale,
        &url("/api/killswitch/reset"),
    ]);
    assert_eq!(code, 409, "{body}");
    assert_eq!(b.state().mode(), Mode::Kill);
    // Risk, naming the generation it saw: reset.
    let (code, body) = curl(&[
        "-X",
        "POST",
        "-H",
        &auth(&rita),
        "--data",
        &reset_body,
        &url("/api/killswitch/reset"),
    ]);
    assert_eq!(code, 200, "{body}");
    assert_eq!(b.state().mode(), Mode::Normal);
    let done = b.audit().pop().unwrap();
    assert_eq!(done.kind, AuditKind::Reset);
    assert_eq!(
        (done.role, done.identity.as_str()),
        (Some(Role::Risk), "rita")
    );
}

#[test]
fn the_cli_reset_takes_the_same_roles() {
    let d = tempfile::tempdir().unwrap();
    let (roles_file, rita, tom) = roles(d.path());
    run({
        let mut c = ks(d.path(), "cli");
        c.args(["init"]);
        c
    })
    .expect_code(0);
    let with_role = |cmd: &[&str], role: &str, token: &Path| {
        let mut c = ks(d.path(), "cli");
        c.args(cmd)
            .args(["--role", role, "--token-file"])
            .arg(token)
            .arg("--roles-file")
            .arg(&roles_file);
        run(c)
    };
    with_role(&["trip", "--reason", "risk says stop"], "risk", &rita).expect_code(0);
    // No role: refused, recorded.
    let r = run({
        let mut c = ks(d.path(), "cli");
        c.args(["reset", "--confirm", "--reason", "try"]);
        c
    });
    r.expect_code(1);
    assert!(r.stderr().contains("risk role"), "{}", r.stderr());
    // The trader's token claimed as risk: refused before touching the switch.
    let r = with_role(&["reset", "--confirm", "--reason", "try"], "risk", &tom);
    r.expect_code(1);
    assert!(r.stderr().contains("trader role"), "{}", r.stderr());
    // The trader's own role: refused by the switch, recorded with identity.
    with_role(&["reset", "--confirm", "--reason", "try"], "trader", &tom).expect_code(1);
    let b = ControlBlock::open(d.path(), "cli").unwrap();
    let last = b.audit().pop().unwrap();
    assert_eq!(last.kind, AuditKind::ResetRefused);
    assert_eq!(last.identity, "tom");
    assert!(b
        .audit()
        .iter()
        .any(|e| e.kind == AuditKind::Unauthorized && e.reason.contains("trader role")));
    // A token file others can read is refused.
    let loose = d.path().join("loose.token");
    std::fs::write(&loose, token(&rita)).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o644)).unwrap();
    let r = with_role(&["reset", "--confirm", "--reason", "x"], "risk", &loose);
    r.expect_code(1);
    assert!(r.stderr().contains("chmod 600"), "{}", r.stderr());
    // Risk: reset, and status no longer asks for the risk role.
    with_role(
        &["reset", "--confirm", "--reason", "reviewed"],
        "risk",
        &rita,
    )
    .expect_code(0);
    assert_eq!(b.state().mode(), Mode::Normal);
    let last = b.audit().pop().unwrap();
    assert_eq!((last.kind, last.role), (AuditKind::Reset, Some(Role::Risk)));
}

/// Sends raw bytes and reads the answer's status code (0: closed without one).
fn raw(addr: &str, bytes: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(bytes).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let code = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, out)
}

#[test]
fn bad_requests_get_clear_4xx_answers_and_slow_clients_block_nobody() {
    let d = tempfile::tempdir().unwrap();
    run({
        let mut c = ks(d.path(), "bad");
        c.arg("init");
        c
    })
    .expect_code(0);
    let (_serve, addr) = start_serve(
        d.path(),
        "bad",
        &[
            "--listen",
            "127.0.0.1:0",
            "--read-timeout",
            "500ms",
            "--max-body",
            "8192",
        ],
    );
    let url = |p: &str| format!("http://{addr}{p}");
    let (code, body) = curl(&[&url("/nope")]);
    assert_eq!(code, 404, "{body}");
    assert!(body.contains("/api/killswitch/activate"), "{body}");
    let (code, body) = curl(&["-i", &url("/api/killswitch/activate")]);
    assert_eq!(code, 405, "{body}");
    assert!(body.contains("Allow: POST"), "{body}");
    let (code, body) = curl(&["-X", "DELETE", &url("/metrics")]);
    assert_eq!(code, 405, "{body}");
    let (code, body) = curl(&[
        "-X",
        "POST",
        "--data",
        "{\"mode\":",
        &url("/api/killswitch/activate"),
    ]);
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("malformed JSON"), "{body}");
    let (code, body) = curl(&[
        "-X",
        "POST",
        "--data",
        r#"{"mode":"explode"}"#,
        &url("/api/killswitch/activate"),
    ]);
    assert_eq!(code, 400, "{body}");
    let big = "x".repeat(9000);
    let (code, body) = curl(&[
        "-X",
        "POST",
        "--data",
        &big,
        &url("/api/killswitch/activate"),
    ]);
    assert_eq!(code, 413, "{body}");
    let b = ControlBlock::open(d.path(), "bad").unwrap();
    assert_eq!(
        b.state().generation(),
        0,
        "no bad request changed the switch"
    );

    // Slow clients: one stalls in its headers, one in a small body (read by
    // tiny_http before it hands the request over), one in a large body
    // (read by us). After --read-timeout each is answered 408 or
    // disconnected (tiny_http closes without an answer where the OS
    // reports the timeout as EAGAIN), and nobody else waits meanwhile.
    let stall_headers = {
        let addr = addr.clone();
        std::thread::spawn(move || raw(&addr, b"GET /api/status HTTP/1.1\r\nHost: x\r\n"))
    };
    let stall_small_body = {
        let addr = addr.clone();
        std::thread::spawn(move || {
            raw(
                &addr,
                b"POST /api/killswitch/activate HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"mo",
            )
        })
    };
    let stall_body = {
        let addr = addr.clone();
        std::thread::spawn(move || {
            raw(
                &addr,
                b"POST /api/killswitch/activate HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n{\"mo",
            )
        })
    };
    // Meanwhile others are served: a trip goes through.
    let (code, body) = curl(&[
        "-X",
        "POST",
        "--data",
        r#"{"mode":"halt","reason":"while others stall"}"#,
        &url("/api/killswitch/activate"),
    ]);
    assert_eq!(code, 200, "{body}");
    assert_eq!(b.state().mode(), Mode::HaltNew);
    let (code, text) = stall_headers.join().unwrap();
    assert!(code == 408 || code == 0, "stalled headers: {text}");
    let (code, text) = stall_small_body.join().unwrap();
    assert!(code == 408 || code == 0, "stalled small body: {text}");
    let (code, text) = stall_body.join().unwrap();
    assert_eq!(code, 408, "stalled body: {text}");
    assert!(text.contains("did not arrive in time"), "{text}");
    assert_eq!(
        b.state().mode(),
        Mode::HaltNew,
        "the stalled trip did nothing"
    );
}

/// Finds a Python that has the `prometheus_client` package (Debian's
/// python3-prometheus-client; `.ci/run` installs it).
fn python_with_prometheus_client() -> String {
    for py in ["python3", "/usr/bin/python3"] {
        let ok = Command::new(py)
            .args(["-c", "import prometheus_client.openmetrics.parser"])
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return py.to_string();
        }
    }
    panic!("no python3 with prometheus_client: apt-get install python3-prometheus-client");
}

/// Parses `text` with prometheus_client's OpenMetrics parser and returns
/// `name{labels} value` lines.
fn parse_metrics(text: &str) -> Vec<String> {
    let py = python_with_prometheus_client();
    let mut child = Command::new(py)
        .args([
            "-c",
            r#"
import sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
for fam in text_string_to_metric_families(sys.stdin.read()):
    for s in fam.samples:
        labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
        print(f"{s.name}{{{labels}}} {s.value}")
"#,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the parser refused /metrics: {}\n---\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

fn sample(samples: &[String], prefix: &str) -> f64 {
    samples
        .iter()
        .find(|s| s.starts_with(prefix))
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no sample {prefix}: {samples:#?}"))
}

#[test]
fn metrics_parse_with_prometheus_clients_own_parser_while_trading_and_after_a_kill() {
    let d = tempfile::tempdir().unwrap();
    let mut engine = start_engine(d.path(), "metrics", "");
    let (_serve, addr) = start_serve(
        d.path(),
        "metrics",
        &["--listen", "127.0.0.1:0", "--loss-alert", "1000000"],
    );
    let (code, text) = curl(&[&format!("http://{addr}/metrics")]);
    assert_eq!(code, 200);
    let s = parse_metrics(&text);
    assert_eq!(
        sample(&s, "killswitch_engine_status{status=\"RUNNING\"}"),
        1.0
    );
    assert_eq!(sample(&s, "killswitch_engine_up{}"), 1.0);
    assert!(sample(&s, "killswitch_open_orders{}") > 100.0);
    assert!(sample(&s, "killswitch_orders_sent_total{}") > 100.0);
    assert_eq!(sample(&s, "killswitch_mode{mode=\"normal\"}"), 1.0);
    assert_eq!(sample(&s, "killswitch_reject_rate_alert{}"), 0.0);
    assert_eq!(
        sample(&s, "killswitch_shutdown_open_orders_stuck_alert{}"),
        0.0
    );
    assert_eq!(sample(&s, "killswitch_pnl_loss_alert{}"), 0.0);
    assert!(s
        .iter()
        .any(|l| l.starts_with("killswitch_open_orders_by_strategy{strategy=\"mm_btc_a\"}")));
    assert!(s.iter().any(|l| l.starts_with(
        "killswitch_venue_connection_up{connection=\"order-entry\",state=\"up\",venue=\"SIM-A\"} 1"
    )));
    assert!(s.iter().any(|l| l
        .starts_with("killswitch_strategy_status{status=\"running\",strategy=\"momo_sol_b\"} 1")));

    let (code, body) = curl(&[
        "-X",
        "POST",
        &format!("http://{addr}/api/killswitch/activate"),
    ]);
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        wait_exit(&mut engine, LONG),
        Some(0),
        "{}",
        std::fs::read_to_string(d.path().join("metrics.log")).unwrap_or_default()
    );
    let (_, text) = curl(&[&format!("http://{addr}/metrics")]);
    let s = parse_metrics(&text);
    assert_eq!(sample(&s, "killswitch_mode{mode=\"kill\"}"), 1.0);
    assert_eq!(sample(&s, "killswitch_drain_phase{phase=\"done\"}"), 1.0);
    assert_eq!(
        sample(&s, "killswitch_engine_status{status=\"OFFLINE\"}"),
        1.0
    );
    assert_eq!(sample(&s, "killswitch_engine_up{}"), 0.0);
    assert_eq!(sample(&s, "killswitch_drain_orders_unknown{}"), 0.0);
    assert_eq!(sample(&s, "killswitch_open_orders{}"), 0.0);
    let ack = sample(&s, "killswitch_kill_trip_to_gateway_ack_seconds{}");
    let last = sample(&s, "killswitch_kill_trip_to_last_cancel_ack_seconds{}");
    assert!(
        ack >= 0.0 && last >= ack,
        "ack {ack} s, last cancel {last} s"
    );
    assert_eq!(sample(&s, "killswitch_gateway_generations_behind{}"), 0.0);
}
