//! The reference engine over the wire, as real processes: `killswitch
//! engine` connected to a `ks-venue` process, the venue's audit log as the
//! witness. (The drill's scenarios over the wire are in `drill.rs`.)

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use killswitch::control::{ControlBlock, GatewaySnapshot};
use killswitch_tools::venue_server::audit::working_orders;
use support::venue::{events, VenueProc};
use support::{ks, run, wait_for, KILLSWITCH};

/// One venue over the wire, one market maker resting `orders`.
fn config(
    dir: &std::path::Path,
    addr: std::net::SocketAddr,
    dead_man_ms: u64,
    orders: u64,
) -> String {
    format!(
        r#"name = "wire"
control_dir = {dir:?}
journal_dir = {journal:?}

[[venues]]
name = "SIM"
instruments = ["I0"]
connect = "{addr}"
cancel_on_disconnect = false
dead_man_ms = {dead_man_ms}
market_data = true

[[strategies]]
name = "mm"
venue = "SIM"
instrument = "I0"
open_orders = {orders}
"#,
        journal = dir.join("journal"),
    )
}

/// With cancel-on-disconnect off, a SIGKILLed engine's orders stay resting
/// at the venue until the dead-man timer the engine armed on logon runs out
/// a full timeout after its last refresh; then the venue cancels every one.
/// While the engine runs, `killswitch status` shows the session in the
/// connections table.
#[test]
fn the_dead_man_timer_cancels_a_killed_engine_s_orders_without_cancel_on_disconnect() {
    let work = tempfile::tempdir().unwrap();
    let venue = VenueProc::start(
        work.path(),
        &["SIM"],
        &["--instruments", "I0", "--cancel-on-disconnect", "off"],
    );
    let timeout_ms = 3000;
    let cfg = work.path().join("engine.toml");
    std::fs::write(
        &cfg,
        config(work.path(), venue.addr("SIM"), timeout_ms, 300),
    )
    .unwrap();
    let mut engine = Command::new(KILLSWITCH)
        .arg("engine")
        .arg("--config")
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(work.path().join("engine.log")).unwrap())
        .spawn()
        .unwrap();
    let pid = engine.id();
    let mut block = None;
    assert!(
        wait_for(Duration::from_secs(30), || {
            block = ControlBlock::open(work.path(), "wire")
                .ok()
                .filter(|b| b.owner().pid == pid);
            block.is_some()
        }),
        "engine attached; log:\n{}",
        std::fs::read_to_string(work.path().join("engine.log")).unwrap_or_default()
    );
    let block = block.unwrap();
    assert!(
        wait_for(Duration::from_secs(30), || GatewaySnapshot::read(&block)
            .open_orders
            >= 300),
        "orders rest"
    );
    // The connections table: the session is up and heard from.
    let mut status = None;
    assert!(
        wait_for(Duration::from_secs(30), || {
            let mut c = ks(work.path(), "wire");
            c.arg("status");
            let out = run(c);
            let row = out
                .stdout()
                .lines()
                .find(|l| l.starts_with("SIM ") && l.contains(" up "))
                .map(str::to_string);
            status = Some(out.stdout());
            row.is_some()
        }),
        "status shows SIM's order entry up:\n{}",
        status.unwrap_or_default()
    );
    let text = status.unwrap();
    assert!(
        text.contains("ORDER ENTRY") && text.contains("LAST HEARTBEAT"),
        "{text}"
    );

    engine.kill().unwrap();
    engine.wait().unwrap();
    let log = venue.wait_audit("SIM", "dead-man expiry", |log| {
        !events(log, "WIRE", "dead-man-expired").is_empty()
    });
    let disconnect = events(&log, "WIRE", "disconnect")[0].clone();
    let resting_at_kill = disconnect.resting.unwrap();
    assert!(resting_at_kill >= 300, "{disconnect:?}");
    let expiry = events(&log, "WIRE", "dead-man-expired")[0].clone();
    assert_eq!(expiry.orders, Some(resting_at_kill), "{expiry:?}");
    // Not before its time: a full timeout after the engine's last U1.
    let last_arm = log
        .iter()
        .filter(|e| e.session == "WIRE" && e.dir == "in" && e.msg_type.as_deref() == Some("U1"))
        .map(|e| e.mono_ns)
        .max()
        .unwrap();
    assert!(
        expiry.mono_ns - last_arm >= timeout_ms * 1_000_000,
        "expired {} ms after the last refresh",
        (expiry.mono_ns - last_arm) / 1_000_000
    );
    // The reports of those cancels (queued for the session, which is gone)
    // follow the event in the log.
    venue.wait_audit("SIM", "no order of ours working", |log| {
        working_orders(log, "WIRE").is_empty()
    });
}
