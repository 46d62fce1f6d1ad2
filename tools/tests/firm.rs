//! The firm-wide kill with a real NATS: `nats-server` processes on loopback
//! ports (a 3-server JetStream cluster, or one server), `killswitch relay`
//! processes for simulated hosts (each a directory of control blocks), the
//! `killswitch firm` commands, and a real reference engine that drains.
//!
//! These tests need Debian's `nats-server` (`apt-get install -y nats-server`;
//! `.ci/run` installs it) and fail, rather than skip, without it.

#![cfg(feature = "firm")]

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use killswitch::control::{AuditKind, ControlBlock, DrainPhase, Mode, Source};
use killswitch_tools::engine::EngineConfig;
use killswitch_tools::firm::cluster::NatsCluster;
use serde_json::Value;
use support::{ks, run, wait_for, Run, KILLSWITCH};

/// Generous: these run on a loaded 2-core machine next to other builds.
const DEADLINE: Duration = Duration::from_secs(60);

fn start_cluster(n: usize) -> NatsCluster {
    NatsCluster::start(n).unwrap_or_else(|e| panic!("cannot start the NATS test cluster: {e}"))
}

/// A `killswitch firm ...` command against `urls`.
fn firm(urls: &str, args: &[&str]) -> Run {
    let mut c = Command::new(KILLSWITCH);
    c.arg("firm").arg("--nats").arg(urls).args(args);
    c.env_remove("KILLSWITCH_NATS")
        .env_remove("KILLSWITCH_FIRM_BUCKET")
        .env_remove("KILLSWITCH_RISK_CREDS");
    run(c)
}

/// A relay process for one simulated host; killed on drop.
struct Relay {
    child: Child,
    log: PathBuf,
}

impl Relay {
    fn start(urls: &str, host: &str, dir: &Path, risk_pub: &str, extra: &[&str]) -> Relay {
        let log = dir.join(format!("relay-{host}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(KILLSWITCH)
            .args([
                "relay",
                "--nats",
                urls,
                "--host",
                host,
                "--risk-key",
                risk_pub,
            ])
            .arg("--dir")
            .arg(dir)
            .args(["--resync", "250ms"])
            .args(extra)
            .env_remove("KILLSWITCH_NATS")
            .env_remove("KILLSWITCH_RISK_KEYS")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap();
        Relay { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Everything a failing test should show.
fn picture(relays: &[&Relay], cluster: &NatsCluster) -> String {
    let mut s = String::new();
    for r in relays {
        s.push_str(&format!("--- {}\n{}\n", r.log.display(), r.log()));
    }
    s.push_str(&cluster.logs());
    s
}

fn keygen(dir: &Path) -> (PathBuf, String) {
    let seed = dir.join("risk.nk");
    let mut c = Command::new(KILLSWITCH);
    c.args(["firm", "keygen", "--out"]).arg(&seed);
    let out = run(c);
    out.expect_code(0);
    (seed, out.stdout().trim().to_string())
}

fn status(urls: &str) -> Value {
    let out = firm(urls, &["status", "--json"]);
    out.expect_code(0);
    serde_json::from_str(&out.stdout()).unwrap_or_else(|e| panic!("{e}: {}", out.stdout()))
}

/// Engines in `firm status`, or none while the cluster cannot answer (a
/// wait with a deadline tries again).
fn engines(urls: &str) -> Vec<Value> {
    let out = firm(urls, &["status", "--json"]);
    serde_json::from_str::<Value>(&out.stdout())
        .ok()
        .and_then(|v| v["engines"].as_array().cloned())
        .unwrap_or_default()
}

/// Revision of the `firm` key now.
fn firm_revision(urls: &str) -> u64 {
    firm_revision_of(urls, "firm")
}

fn blocks(dir: &Path, names: &[&str]) -> Vec<ControlBlock> {
    names
        .iter()
        .map(|n| ControlBlock::open_or_create(dir, n).unwrap())
        .collect()
}

fn all_at(blocks: &[ControlBlock], mode: Mode) -> bool {
    blocks.iter().all(|b| b.state().mode() == mode)
}

fn host_dir(root: &Path, host: &str) -> PathBuf {
    let d = root.join(host);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The reference engine, started as the drill starts it (`killswitch
/// engine --config FILE`), trading on its simulated venues.
fn start_engine(dir: &Path, name: &str) -> Child {
    let cfg = EngineConfig {
        name: name.into(),
        control_dir: Some(dir.to_path_buf()),
        journal_dir: dir.join(format!("journal-{name}")),
        report_path: Some(dir.join(format!("report-{name}.json"))),
        ..EngineConfig::default()
    };
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, toml::to_string(&cfg).unwrap()).unwrap();
    let log = std::fs::File::create(dir.join(format!("engine-{name}.log"))).unwrap();
    Command::new(KILLSWITCH)
        .arg("engine")
        .arg("--config")
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

/// The trip reaches every block through a server failure; a cut-off relay
/// trips on reconnection, a late relay at once; a local reset is undone by
/// the relay; a reset on a stale revision is refused, the right one
/// releases everything; a real engine drains and its relay says so.
#[test]
fn a_firm_trip_reaches_every_block_through_a_server_failure_and_latches() {
    let mut cluster = start_cluster(3);
    let urls = cluster.urls();
    let root = tempfile::tempdir().unwrap();
    let (seed, risk_pub) = keygen(root.path());
    firm(&urls, &["init", "--replicas", "3", "--timeout", "60s"]).expect_code(0);

    // Hosts h1..h3: three blocks each; h1's first is a real engine.
    let dirs: Vec<PathBuf> = ["h1", "h2", "h3"]
        .iter()
        .map(|h| host_dir(root.path(), h))
        .collect();
    let mut engine = start_engine(&dirs[0], "eng");
    let engine_pid = engine.id();
    let engine_block = {
        let mut b = None;
        assert!(
            wait_for(DEADLINE, || {
                b = ControlBlock::open(&dirs[0], "eng")
                    .ok()
                    .filter(|b| b.owner().pid == engine_pid);
                b.is_some()
            }),
            "the engine did not attach to its block"
        );
        b.unwrap()
    };
    let mut held: Vec<ControlBlock> = vec![];
    held.extend(blocks(&dirs[0], &["e2", "e3"]));
    held.extend(blocks(&dirs[1], &["e1", "e2", "e3"]));
    held.extend(blocks(&dirs[2], &["e1", "e2", "e3"]));
    let relays: Vec<Relay> = ["h1", "h2", "h3"]
        .iter()
        .zip(&dirs)
        .map(|(h, d)| Relay::start(&urls, h, d, &risk_pub, &["--all"]))
        .collect();
    // h4 reaches only server 1 (e.g. through a firewall): cut off when it dies.
    let d4 = host_dir(root.path(), "h4");
    let cut_off = blocks(&d4, &["c1", "c2"]);
    let r4 = Relay::start(
        &cluster.url(1),
        "h4",
        &d4,
        &risk_pub,
        &["--all", "--only-listed-servers"],
    );
    let all_relays: Vec<&Relay> = relays.iter().chain([&r4]).collect();

    // Every relay has read the firm state and acknowledged its blocks.
    assert!(
        wait_for(DEADLINE, || engines(&urls).len() == 11),
        "not every relay acknowledged: {}\n{}",
        firm(&urls, &["status"]).stdout(),
        picture(&all_relays, &cluster)
    );
    // The engine has orders resting, so its drain has work.
    assert!(
        wait_for(DEADLINE, || {
            killswitch::control::GatewaySnapshot::read(&engine_block).open_orders > 100
        }),
        "the engine has no open orders"
    );

    // The trip, with server 1 killed while it is under way.
    let trip = Command::new(KILLSWITCH)
        .args([
            "firm",
            "--nats",
            &urls,
            "trip",
            "--reason",
            "firm-wide test kill",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    cluster.kill(1);
    let out = trip.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "firm trip failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        picture(&all_relays, &cluster)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("FIRM TRIP KILL"));

    assert!(
        wait_for(DEADLINE, || all_at(&held, Mode::Kill)
            && engine_block.state().mode() == Mode::Kill),
        "the trip did not reach every block: {:?}\n{}",
        held.iter()
            .map(|b| (b.path().display().to_string(), b.state()))
            .collect::<Vec<_>>(),
        picture(&all_relays, &cluster)
    );
    for b in held.iter().chain([&engine_block]) {
        let t = b.last_trip().unwrap();
        assert_eq!(t.source, Source::Firm, "{}", b.path().display());
        assert!(t.reason.contains("firm-wide test kill"), "{}", t.reason);
    }
    // h4's only server died as the trip was made: whether the trip reached
    // it first is a race; the end of this test cuts it off deterministically.

    // The engine drains and exits cleanly; its relay acknowledges the drain.
    let mut code = None;
    assert!(
        wait_for(DEADLINE, || {
            code = engine.try_wait().unwrap();
            code.is_some()
        }),
        "the engine did not finish its drain"
    );
    assert_eq!(code.unwrap().code(), Some(0), "engine exit");
    let d = killswitch::control::DrainSnapshot::read(&engine_block);
    assert_eq!(d.phase, DrainPhase::Done);
    assert_eq!(d.orders_unknown, 0);
    assert!(d.open_at_snapshot > 0);
    assert!(
        wait_for(DEADLINE, || {
            engines(&urls).iter().any(|e| {
                e["host"] == "h1"
                    && e["engine"] == "eng"
                    && e["drain_phase"] == "done"
                    && e["unknown_orders"] == 0
                    && e["open_orders"] == 0
                    && e["ok"] == true
            })
        }),
        "h1/eng's drain not acknowledged: {}",
        firm(&urls, &["status"]).stdout()
    );

    // A relay started after the trip trips its blocks at once.
    let d5 = host_dir(root.path(), "h5");
    let late = blocks(&d5, &["l1", "l2"]);
    let r5 = Relay::start(&urls, "h5", &d5, &risk_pub, &["--all"]);
    assert!(
        wait_for(DEADLINE, || all_at(&late, Mode::Kill)),
        "late relay: {}",
        r5.log()
    );

    // The relay whose only server died trips (if it had not) once it is back.
    cluster.restart(1).unwrap();
    assert!(
        wait_for(DEADLINE, || all_at(&cut_off, Mode::Kill)),
        "reconnecting relay: {}",
        picture(&[&r4], &cluster)
    );

    // An engine reset locally while the firm stays tripped is tripped again.
    let local = &held[2]; // h2/e1
    let mut reset = ks(&dirs[1], "e1");
    reset.args(["reset", "--confirm", "--reason", "trader wants back in"]);
    run(reset).expect_code(0);
    assert!(
        wait_for(DEADLINE, || {
            let audit = local.audit();
            let reset_at = audit
                .iter()
                .rposition(|e| e.kind == AuditKind::Reset && e.source == Source::Cli);
            reset_at.is_some_and(|i| {
                audit[i + 1..]
                    .iter()
                    .any(|e| e.kind == AuditKind::Trip && e.source == Source::Firm)
            }) && local.state().mode() == Mode::Kill
        }),
        "not re-tripped: {:?}\n{}",
        local.audit(),
        relays[1].log()
    );

    // Every engine confirmed.
    assert!(
        wait_for(DEADLINE, || {
            let e = engines(&urls);
            e.len() == 13 && e.iter().all(|e| e["ok"] == true)
        }),
        "{}",
        firm(&urls, &["status"]).stdout()
    );

    // Reset: the revision the operator saw is stale after a second trip.
    let seen = firm_revision(&urls);
    firm(
        &urls,
        &["trip", "--reason", "second look", "--mode", "halt"],
    )
    .expect_code(0);
    let seed_s = seed.to_str().unwrap();
    let stale = firm(
        &urls,
        &[
            "reset",
            "--confirm",
            "--revision",
            &seen.to_string(),
            "--reason",
            "all clear",
            "--risk-creds",
            seed_s,
        ],
    );
    stale.expect_code(1);
    assert!(stale.stderr().contains("is stale"), "{}", stale.stderr());
    // A lower mode does not lower the firm's: still KILL everywhere.
    assert!(all_at(&held, Mode::Kill));

    let now = firm_revision(&urls);
    assert!(now > seen);
    firm(
        &urls,
        &[
            "reset",
            "--confirm",
            "--revision",
            &now.to_string(),
            "--reason",
            "all clear",
            "--risk-creds",
            seed_s,
        ],
    )
    .expect_code(0);
    let everything: Vec<&ControlBlock> = held
        .iter()
        .chain(&cut_off)
        .chain(&late)
        .chain([&engine_block])
        .collect();
    assert!(
        wait_for(DEADLINE, || everything
            .iter()
            .all(|b| b.state().mode() == Mode::Normal)),
        "not released: {:?}\n{}",
        everything
            .iter()
            .map(|b| (b.path().display().to_string(), b.state()))
            .collect::<Vec<_>>(),
        picture(&[all_relays.as_slice(), &[&r5]].concat(), &cluster)
    );
    let r = local.audit().into_iter().last().unwrap();
    assert_eq!((r.kind, r.source), (AuditKind::Reset, Source::Firm));

    // The firm audit: trip, escalation no-op, reset, in order.
    let h = firm(&urls, &["history", "--json"]);
    h.expect_code(0);
    let rows: Vec<Value> = serde_json::from_str(&h.stdout()).unwrap();
    let actions: Vec<&str> = rows
        .iter()
        .map(|r| r["record"]["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["trip", "trip", "reset"], "{}", h.stdout());
    assert_eq!(
        rows[1]["record"]["mode"], "kill",
        "a halt does not lower a kill"
    );

    // Cut off during a trip, deterministically: h4's only server is down
    // before its host is tripped, so nothing can reach it until it is back.
    cluster.kill(1);
    firm(&urls, &["trip", "--reason", "h4 only", "--host", "h4"]).expect_code(0);
    let h4_rev = firm_revision_of(&urls, "host.h4");
    assert!(all_at(&cut_off, Mode::Normal), "h4 cannot have heard of it");
    cluster.restart(1).unwrap();
    assert!(
        wait_for(DEADLINE, || all_at(&cut_off, Mode::Kill)),
        "cut-off relay after reconnection: {}",
        picture(&[&r4], &cluster)
    );
    for b in &cut_off {
        assert!(b.last_trip().unwrap().reason.contains("h4 only"));
    }
    assert!(
        all_at(&held, Mode::Normal),
        "a host trip touches no other host"
    );
    assert!(
        wait_for(DEADLINE, || engines(&urls)
            .iter()
            .any(|e| e["host"] == "h4"
                && e["keys_seen"]["host.h4"].as_u64() == Some(h4_rev)
                && e["ok"] == true)),
        "h4's acknowledgement: {}",
        firm(&urls, &["status"]).stdout()
    );
}

/// Revision of `key` now.
fn firm_revision_of(urls: &str, key: &str) -> u64 {
    status(urls)["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["key"] == key)
        .and_then(|k| k["revision"].as_u64())
        .unwrap_or_else(|| panic!("key {key} exists"))
}

/// Resets count only when signed by a risk key the relays trust, for the
/// revision they replaced; anything else that says "normal" holds KILL.
#[test]
fn only_a_reset_signed_by_a_trusted_risk_key_releases_and_junk_holds_kill() {
    let cluster = start_cluster(1);
    let urls = cluster.urls();
    let root = tempfile::tempdir().unwrap();
    let (seed, risk_pub) = keygen(root.path());
    let other = root.path().join("other");
    std::fs::create_dir(&other).unwrap();
    let (untrusted_seed, _) = keygen(&other);
    firm(&urls, &["init", "--replicas", "1", "--timeout", "60s"]).expect_code(0);
    let dir = host_dir(root.path(), "h1");
    let relay = Relay::start(
        &urls,
        "h1",
        &dir,
        &risk_pub,
        &["--engine", "a", "--engine", "b", "--desk", "fx"],
    );
    let bs = blocks(&dir, &["a", "b"]);
    // The relay created the named blocks; wait until it acknowledged them.
    assert!(
        wait_for(DEADLINE, || engines(&urls).len() == 2),
        "{}",
        relay.log()
    );

    // A desk trip applies to this host (--desk fx); another desk's does not.
    firm(&urls, &["trip", "--reason", "eq desk", "--desk", "eq"]).expect_code(0);
    firm(
        &urls,
        &[
            "trip", "--reason", "fx desk", "--desk", "fx", "--mode", "halt",
        ],
    )
    .expect_code(0);
    assert!(
        wait_for(DEADLINE, || all_at(&bs, Mode::HaltNew)),
        "{}",
        relay.log()
    );
    firm(&urls, &["trip", "--reason", "firm"]).expect_code(0);
    assert!(
        wait_for(DEADLINE, || all_at(&bs, Mode::Kill)),
        "{}",
        relay.log()
    );

    let rev = firm_revision(&urls).to_string();
    let reset = |seed: &Path, rev: &str| {
        firm(
            &urls,
            &[
                "reset",
                "--confirm",
                "--revision",
                rev,
                "--reason",
                "r",
                "--risk-creds",
                seed.to_str().unwrap(),
            ],
        )
    };
    // Refusals before anything is written.
    let no_confirm = firm(&urls, &["reset", "--revision", &rev, "--reason", "r"]);
    no_confirm.expect_code(1);
    assert!(no_confirm.stderr().contains("--confirm"));
    let no_creds = firm(
        &urls,
        &["reset", "--confirm", "--revision", &rev, "--reason", "r"],
    );
    no_creds.expect_code(1);
    assert!(
        no_creds.stderr().contains("risk role"),
        "{}",
        no_creds.stderr()
    );
    let loose = root.path().join("loose.nk");
    std::fs::copy(&seed, &loose).unwrap();
    std::fs::set_permissions(&loose, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let out = reset(&loose, &rev);
    out.expect_code(1);
    assert!(out.stderr().contains("chmod 600"), "{}", out.stderr());

    // Signed by a key the relay does not trust: stored, but not honoured.
    reset(&untrusted_seed, &rev).expect_code(0);
    let untrusted_rev = firm_revision(&urls);
    let seen_by_relay = |rev: u64| {
        let e = engines(&urls);
        !e.is_empty()
            && e.iter()
                .all(|e| e["keys_seen"]["firm"].as_u64() == Some(rev))
    };
    assert!(
        wait_for(DEADLINE, || seen_by_relay(untrusted_rev)),
        "{}",
        relay.log()
    );
    assert!(all_at(&bs, Mode::Kill));
    assert!(
        relay.log().contains("not a trusted risk key"),
        "{}",
        relay.log()
    );

    // Junk in the firm key: held as KILL, with the reason in the log.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let junk_rev = rt.block_on(async {
        let c = async_nats::connect(cluster.url(0)).await.unwrap();
        let kv = async_nats::jetstream::new(c)
            .get_key_value("KILLSWITCH_FIRM")
            .await
            .unwrap();
        kv.put("firm", "{not json".into()).await.unwrap()
    });
    assert!(
        wait_for(DEADLINE, || seen_by_relay(junk_rev)),
        "{}",
        relay.log()
    );
    assert!(all_at(&bs, Mode::Kill));
    assert!(relay.log().contains("unreadable value"), "{}", relay.log());

    // The trusted key on the current revision lifts the firm key, but the
    // fx desk's HALT still applies: a reset of one key never lifts another,
    // and a relay never lowers a block to a weaker trip, so they stay at
    // KILL until the desk is reset too.
    reset(&seed, &junk_rev.to_string()).expect_code(0);
    let firm_reset_rev = firm_revision(&urls);
    assert!(
        wait_for(DEADLINE, || seen_by_relay(firm_reset_rev)),
        "{}",
        relay.log()
    );
    assert!(all_at(&bs, Mode::Kill));
    let fx_rev = {
        let s = status(&urls);
        s["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["key"] == "desk.fx")
            .and_then(|k| k["revision"].as_u64())
            .unwrap()
    };
    firm(
        &urls,
        &[
            "reset",
            "--confirm",
            "--desk",
            "fx",
            "--revision",
            &fx_rev.to_string(),
            "--reason",
            "fx clear",
            "--risk-creds",
            seed.to_str().unwrap(),
        ],
    )
    .expect_code(0);
    assert!(
        wait_for(DEADLINE, || all_at(&bs, Mode::Normal)),
        "{}",
        relay.log()
    );
}

/// NATS unreachable: by default an alarm and a metric, blocks untouched;
/// with --fail-closed, HALT.
#[test]
fn an_unreachable_nats_raises_the_alarm_or_fails_closed() {
    let root = tempfile::tempdir().unwrap();
    let (_, risk_pub) = keygen(root.path());
    // A port nothing listens on (port 1, tcpmux, is privileged and unused;
    // a port freed by a listener could be picked by a parallel test's cluster).
    let url = "nats://127.0.0.1:1".to_string();
    let metrics = root.path().join("relay.prom");
    let warn = Relay::start(
        &url,
        "h1",
        root.path(),
        &risk_pub,
        &[
            "--engine",
            "warned",
            "--unreachable-after",
            "300ms",
            "--metrics-file",
            metrics.to_str().unwrap(),
        ],
    );
    let closed = Relay::start(
        &url,
        "h2",
        root.path(),
        &risk_pub,
        &[
            "--engine",
            "closed",
            "--unreachable-after",
            "300ms",
            "--fail-closed",
        ],
    );
    assert!(
        wait_for(DEADLINE, || std::fs::read_to_string(&metrics)
            .unwrap_or_default()
            .contains(
                "killswitch_relay_nats_unreachable_alarm{host=\"h1\"} 1"
            )),
        "{}",
        warn.log()
    );
    assert!(warn.log().contains("ALARM"), "{}", warn.log());
    let warned = ControlBlock::open(root.path(), "warned").unwrap();
    assert_eq!(warned.state().mode(), Mode::Normal);

    let mut b = None;
    assert!(
        wait_for(DEADLINE, || {
            b = ControlBlock::open(root.path(), "closed").ok();
            b.as_ref()
                .is_some_and(|b| b.state().mode() == Mode::HaltNew)
        }),
        "{}",
        closed.log()
    );
    let t = b.unwrap().last_trip().unwrap();
    assert_eq!(t.source, Source::Firm);
    assert!(t.reason.contains("NATS unreachable"), "{}", t.reason);
}

/// Wrong command lines get a clear error and touch nothing.
#[test]
fn relay_and_firm_commands_refuse_bad_arguments() {
    let root = tempfile::tempdir().unwrap();
    let mut c = Command::new(KILLSWITCH);
    c.args(["relay", "--risk-key", "x", "--all", "--dir"])
        .arg(root.path());
    let out = run(c);
    out.expect_code(2);
    assert!(
        out.stderr().contains("not a public nkey"),
        "{}",
        out.stderr()
    );

    let (_, risk_pub) = keygen(root.path());
    let mut c = Command::new(KILLSWITCH);
    c.args(["relay", "--risk-key", &risk_pub, "--dir"])
        .arg(root.path());
    let out = run(c);
    out.expect_code(2);
    assert!(out.stderr().contains("--engine NAME"), "{}", out.stderr());

    let mut c = Command::new(KILLSWITCH);
    c.args(["relay", "--engine", "a", "--dir"]).arg(root.path());
    c.env_remove("KILLSWITCH_RISK_KEYS");
    let out = run(c);
    out.expect_code(2);
    assert!(
        out.stderr().contains("no trusted risk key"),
        "{}",
        out.stderr()
    );

    // keygen never overwrites a key.
    let mut c = Command::new(KILLSWITCH);
    c.args(["firm", "keygen", "--out"])
        .arg(root.path().join("risk.nk"));
    run(c).expect_code(4);

    // Checked before any connection is tried.
    let out = firm(
        "nats://127.0.0.1:1",
        &["trip", "--reason", "x", "--desk", "a b"],
    );
    out.expect_code(2);
    assert!(out.stderr().contains("--desk 'a b'"), "{}", out.stderr());
}
