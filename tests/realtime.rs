//! `SCHED_FIFO` for the gateway and drain threads (issue 16 item 5): a
//! priority the system refuses gives an error that says why and starts no
//! thread; one it allows puts that very thread under `SCHED_FIFO`, which
//! the kernel's own view (`/proc/self/task/*/stat`) shows.

use std::sync::Arc;

use killswitch::control::ControlBlock;
use killswitch::drain::{Drain, DrainConfig};
use killswitch::gateway::{Gateway, GatewayConfig, GatewayError};
use killswitch::realtime::RealtimeError;
use killswitch::registry::Registry;
use killswitch::venue::sim::{FlowConfig, SimConfig, SimVenue};
use killswitch::venue::Venue;

fn venue() -> Vec<(u16, Box<dyn Venue>)> {
    let mut c = SimConfig::new("SIM", 1, 7);
    c.flow = FlowConfig::off();
    vec![(0, Box::new(SimVenue::new(c).0) as Box<dyn Venue>)]
}

/// The two tests spawn threads of the same names: one at a time, so each
/// sees only its own.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// (policy, priority) of every thread of this process named `name`, from
/// the kernel's stat line (fields 40 and 41: rt_priority, policy). A thread
/// that ends while the directory is walked is skipped, not an error.
fn thread_policies(name: &str) -> Vec<(u32, u32)> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|task| {
            let path = task.path();
            let comm = std::fs::read_to_string(path.join("comm")).ok()?;
            if comm.trim() != name {
                return None;
            }
            let stat = std::fs::read_to_string(path.join("stat")).ok()?;
            // Fields after the command name (which may hold spaces) start at 3.
            let rest = &stat[stat.rfind(')')? + 2..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            let rt_priority = f.get(40 - 3)?.parse().ok()?;
            let policy = f.get(41 - 3)?.parse().ok()?;
            Some((policy, rt_priority))
        })
        .collect()
}

#[test]
fn out_of_range_priority_is_refused_and_starts_no_gateway() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let block = Arc::new(ControlBlock::create(dir.path(), "rt0").unwrap());
    let e = Gateway::spawn(
        block.clone(),
        Arc::new(Registry::new()),
        venue(),
        GatewayConfig {
            realtime: Some(0),
            ..GatewayConfig::default()
        },
    )
    .err()
    .expect("priority 0 must be refused");
    assert!(
        matches!(e, GatewayError::Realtime(RealtimeError::OutOfRange { .. })),
        "{e}"
    );
    assert!(e.to_string().contains("gateway thread"), "{e}");
    // The role was given back: a gateway at normal priority starts.
    let g = Gateway::spawn(
        block,
        Arc::new(Registry::new()),
        venue(),
        GatewayConfig::default(),
    );
    assert!(g.is_ok(), "{:?}", g.err().map(|e| e.to_string()));
}

#[test]
fn gateway_and_drain_run_under_fifo_or_say_why_not() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let block = Arc::new(ControlBlock::create(dir.path(), "rt1").unwrap());
    let cfg = GatewayConfig {
        realtime: Some(3),
        ..GatewayConfig::default()
    };
    let mut gateway = match Gateway::spawn(block, Arc::new(Registry::new()), venue(), cfg) {
        Ok(g) => g,
        Err(e) => {
            // A host without real-time rights: the refusal says what to do.
            let msg = e.to_string();
            assert!(matches!(e, GatewayError::Realtime(_)), "{msg}");
            assert!(msg.contains("refused"), "{msg}");
            return;
        }
    };
    // SCHED_FIFO is policy 1. (A gateway of the other test may still be
    // ending: look for ours among them.)
    let gateways = thread_policies("ks-gateway");
    assert!(gateways.contains(&(1, 3)), "{gateways:?}");
    let drain = Drain::spawn(
        gateway.take_drain_link().unwrap(),
        DrainConfig {
            realtime: Some(2),
            ..DrainConfig::emergency()
        },
        None,
    )
    .unwrap();
    let drains = thread_policies("ks-drain");
    assert!(drains.contains(&(1, 2)), "{drains:?}");
    drop(drain);
    drop(gateway);
}
