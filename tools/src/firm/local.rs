//! The relay's local side: the control blocks of this host, the firm's
//! mode applied to them, and one acknowledgement per engine.
//!
//! Nothing here touches the network, so enforcement never waits on NATS: the
//! relay's main loop calls [`LocalBlocks::apply`] on every change of the
//! firm view and on every poll tick (which is how an engine reset locally
//! while the firm stays tripped is tripped again).

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

use killswitch::clock::wall_ns;
use killswitch::control::{
    AuditKind, ControlBlock, ControlError, DrainPhase, DrainSnapshot, GatewaySnapshot, Mode,
    Operator, ResetRequest, Source, StateWord,
};
use serde::{Deserialize, Serialize};

use super::record::FirmMode;
use super::view::Target;

/// Version of the acknowledgement layout.
pub const ACK_VERSION: u32 = 1;

/// What a relay says about one engine (control block), in the acks bucket
/// under `ack.<host>.<engine>`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineAck {
    /// Layout version ([`ACK_VERSION`]).
    pub v: u32,
    /// Host (the relay's `--host`).
    pub host: String,
    /// Engine name (`killswitch.<engine>`).
    pub engine: String,
    /// Control file.
    pub path: String,
    /// Desks of this host.
    pub desks: Vec<String>,
    /// Revision of each key the relay has applied (0: never written).
    pub keys_seen: BTreeMap<String, u64>,
    /// Mode the firm asks of this host.
    pub firm_mode: FirmMode,
    /// Mode of the block now.
    pub mode: FirmMode,
    /// State-word generation now.
    pub generation: u64,
    /// Raw state word.
    pub state_word: u64,
    /// Generation at which the block reached KILL for this firm trip.
    pub kill_generation: Option<u64>,
    /// Engine pid (0: none attached).
    pub engine_pid: u32,
    /// Whether that engine is alive.
    pub engine_alive: bool,
    /// The drain's phase.
    pub drain_phase: DrainPhase,
    /// Generation the drain works on.
    pub drain_generation: u64,
    /// Orders still open: for a drain of this trip, those neither confirmed
    /// nor unknown; otherwise what the engine last published.
    pub open_orders: u64,
    /// Orders in `CancelUnknown` after the drain.
    pub unknown_orders: u64,
    /// True when the block does what the firm asks (tripped, and drained
    /// for a KILL when an engine is alive; or released after a reset).
    pub confirmed: bool,
    /// What is in the way, or what the relay did.
    pub note: String,
    /// Relay pid.
    pub relay_pid: u32,
    /// When, Unix ns.
    pub updated_ns: u64,
}

/// Which control blocks the relay keeps.
#[derive(Clone, Debug)]
pub struct BlockSelection {
    /// Directory of control files.
    pub dir: PathBuf,
    /// Engine names; empty means every `killswitch.*` in `dir`.
    pub engines: Vec<String>,
    /// Who may share the control files (`--group`); others are refused.
    pub access: killswitch::access::Access,
}

struct Held {
    block: Arc<ControlBlock>,
    /// The relay trips and resets as an operator of the block.
    operator: Operator,
    /// Generation at which this block reached KILL while the firm asked for it.
    kill_generation: Option<u64>,
    /// Last note, kept so it is logged once.
    note: String,
    /// State word at which a release was last found impossible: not
    /// looked at again (audit ring read) until the word changes.
    release_refused_at: Option<StateWord>,
    /// Engine pid, liveness, and when that was read (`/proc` is read at
    /// most every [`LIVENESS_PERIOD`], not every poll tick).
    owner: (killswitch::control::OwnerInfo, Option<std::time::Instant>),
    /// Hash of what the last acknowledgement said, and when it was made:
    /// an acknowledgement is only rebuilt on news or as a heartbeat.
    last_ack: Option<(u64, std::time::Instant)>,
}

/// How often an engine's liveness is read from `/proc`.
const LIVENESS_PERIOD: std::time::Duration = std::time::Duration::from_millis(200);

/// What [`LocalBlocks::apply`] did, one line per action, for the log.
pub type Actions = Vec<String>;

/// The control blocks of this host.
pub struct LocalBlocks {
    selection: BlockSelection,
    blocks: BTreeMap<String, Held>,
    /// Files that failed to open, with the error, so each is logged once.
    refused: BTreeMap<String, String>,
}

impl LocalBlocks {
    /// An empty set; call [`LocalBlocks::scan`] to find the blocks.
    pub fn new(selection: BlockSelection) -> LocalBlocks {
        LocalBlocks {
            selection,
            blocks: BTreeMap::new(),
            refused: BTreeMap::new(),
        }
    }

    /// Number of blocks held.
    pub fn len(&self) -> usize {
        self.blocks.len()
    }

    /// True when no block is held.
    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    /// Opens blocks that appeared (named engines are created when missing,
    /// so a latched trip is waiting for an engine that starts later) and
    /// drops those whose file is gone. Returns log lines.
    pub fn scan(&mut self) -> Actions {
        let mut log = Vec::new();
        let dir = &self.selection.dir;
        let wanted: Vec<String> = if self.selection.engines.is_empty() {
            match std::fs::read_dir(dir) {
                Ok(rd) => rd
                    .filter_map(|e| e.ok())
                    .filter_map(|e| {
                        let n = e.file_name().into_string().ok()?;
                        n.strip_prefix("killswitch.").map(str::to_string)
                    })
                    .collect(),
                Err(e) => {
                    let msg = format!("cannot list {}: {e}", dir.display());
                    if self.refused.insert(String::new(), msg.clone()).as_ref() != Some(&msg) {
                        log.push(msg);
                    }
                    return log;
                }
            }
        } else {
            self.selection.engines.clone()
        };
        let keep: HashSet<&String> = wanted.iter().collect();
        let gone: Vec<String> = self
            .blocks
            .iter()
            .filter(|(n, h)| !keep.contains(n) || !h.block.path().exists())
            .map(|(n, _)| n.clone())
            .collect();
        for n in gone {
            self.blocks.remove(&n);
            log.push(format!("engine {n}: control file gone; no longer relayed"));
        }
        for name in wanted {
            if self.blocks.contains_key(&name) {
                continue;
            }
            let access = self.selection.access;
            let opened = if self.selection.engines.is_empty() {
                ControlBlock::open_with(dir, &name, access)
            } else {
                ControlBlock::open_or_create_with(dir, &name, access)
            };
            match opened {
                Ok(block) => {
                    self.refused.remove(&name);
                    log.push(format!(
                        "engine {name}: relaying {} (mode {})",
                        block.path().display(),
                        block.state().mode()
                    ));
                    let block = Arc::new(block);
                    self.blocks.insert(
                        name,
                        Held {
                            operator: Operator::new(block.clone()),
                            block,
                            kill_generation: None,
                            note: String::new(),
                            release_refused_at: None,
                            owner: (
                                killswitch::control::OwnerInfo {
                                    pid: 0,
                                    alive: false,
                                    start_ticks: 0,
                                },
                                None,
                            ),
                            last_ack: None,
                        },
                    );
                }
                Err(e) => {
                    let msg = format!("engine {name}: cannot open its control block: {e}");
                    if self.refused.insert(name, msg.clone()).as_ref() != Some(&msg) {
                        log.push(msg);
                    }
                }
            }
        }
        log
    }

    /// Number of blocks at or above `mode`.
    pub fn count_at_least(&self, mode: Mode) -> usize {
        self.blocks
            .values()
            .filter(|h| h.block.state().mode() >= mode)
            .count()
    }

    /// Applies the firm's target to every block. `fresh` says the target
    /// was read from NATS since the last (re)connection: blocks are only
    /// released on a fresh target, never on a stale one.
    pub fn apply(&mut self, target: &Target, fresh: bool) -> Actions {
        let mut log = Vec::new();
        let Some(mode) = target.mode else {
            return log;
        };
        for (name, h) in self.blocks.iter_mut() {
            let w = h.block.state();
            if mode != Mode::Normal {
                if w.mode() < mode {
                    let reason = format!("firm: {}", target.why);
                    let out = h.operator.trip_global(mode, Source::Firm, &reason);
                    let now = out.transition.current();
                    log.push(format!(
                        "engine {name}: TRIPPED {} at generation {} ({})",
                        mode.as_str().to_uppercase(),
                        now.generation(),
                        target.why
                    ));
                }
                let now = h.block.state();
                if now.mode() == Mode::Kill && h.kill_generation.is_none() {
                    h.kill_generation = Some(now.generation());
                }
                if now.mode() < Mode::Kill {
                    h.kill_generation = None;
                }
                continue;
            }
            h.kill_generation = None;
            if !w.is_active() {
                h.note.clear();
                h.release_refused_at = None;
            }
            if !fresh || !w.is_active() || h.release_refused_at == Some(w) {
                continue;
            }
            let note = match firm_hold(&h.block) {
                Ok(()) => match release(&h.operator, w, &target.why) {
                    Ok(()) => {
                        log.push(format!(
                            "engine {name}: RELEASED (firm reset: {})",
                            target.why
                        ));
                        String::new()
                    }
                    Err(e) => format!("the firm is reset but this block stays tripped: {e}"),
                },
                Err(why) => why,
            };
            if note != h.note && !note.is_empty() {
                log.push(format!("engine {name}: {note}"));
            }
            h.release_refused_at = (!note.is_empty()).then_some(w);
            h.note = note;
        }
        log
    }

    /// One acknowledgement per block for the target in force.
    pub fn acks(&mut self, host: &str, desks: &[String], target: &Target) -> Vec<EngineAck> {
        let firm_mode = target.mode.unwrap_or(Mode::Normal);
        self.blocks
            .iter_mut()
            .map(|(name, h)| ack_for(host, desks, name, h, firm_mode, target))
            .collect()
    }

    /// The acknowledgements that have news since the last call, or whose
    /// last one is older than `heartbeat`. Cheap when nothing changed (a
    /// few atomic loads and a hash per block), so the relay calls it every
    /// poll tick.
    pub fn acks_due(
        &mut self,
        host: &str,
        desks: &[String],
        target: &Target,
        heartbeat: std::time::Duration,
    ) -> Vec<EngineAck> {
        use std::hash::{Hash, Hasher};
        let firm_mode = target.mode.unwrap_or(Mode::Normal);
        let mut due = Vec::new();
        for (name, h) in self.blocks.iter_mut() {
            let owner = refresh_owner(h);
            let d = DrainSnapshot::read(&h.block);
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            (
                h.block.state().0,
                owner.pid,
                owner.alive,
                d.generation,
                d.phase as u8,
                d.open_at_snapshot,
                d.orders_confirmed,
                d.orders_unknown,
                GatewaySnapshot::read(&h.block).open_orders,
                h.kill_generation,
                &h.note,
            )
                .hash(&mut hasher);
            (target.mode, &target.why, &target.keys_seen).hash(&mut hasher);
            let fp = hasher.finish();
            let news = h
                .last_ack
                .is_none_or(|(old, at)| old != fp || at.elapsed() >= heartbeat);
            if news {
                h.last_ack = Some((fp, std::time::Instant::now()));
                due.push(ack_for(host, desks, name, h, firm_mode, target));
            }
        }
        due
    }
}

/// The block's engine and whether it lives, from `/proc` at most every
/// [`LIVENESS_PERIOD`] (or when the pid changes).
fn refresh_owner(h: &mut Held) -> killswitch::control::OwnerInfo {
    let pid = h.block.owner_pid();
    let stale = h.owner.1.is_none_or(|t| t.elapsed() >= LIVENESS_PERIOD);
    if pid != h.owner.0.pid || stale {
        h.owner = (h.block.owner(), Some(std::time::Instant::now()));
    }
    h.owner.0
}

fn ack_for(
    host: &str,
    desks: &[String],
    name: &str,
    h: &mut Held,
    firm_mode: Mode,
    target: &Target,
) -> EngineAck {
    let owner = refresh_owner(h);
    let b = &h.block;
    let w = b.state();
    let drain = DrainSnapshot::read(b);
    let this_drain = h.kill_generation.is_some_and(|g| drain.generation >= g);
    let open_orders = if this_drain && drain.phase != DrainPhase::AwaitingGatewayAck {
        drain
            .open_at_snapshot
            .saturating_sub(drain.orders_confirmed + drain.orders_unknown)
    } else {
        GatewaySnapshot::read(b).open_orders
    };
    let (confirmed, mut note) = if target.mode.is_none() {
        (
            false,
            "the relay has not read the firm state yet".to_string(),
        )
    } else if firm_mode == Mode::Normal {
        (!w.is_active(), h.note.clone())
    } else if w.mode() < firm_mode {
        (false, "not tripped yet".into())
    } else if firm_mode != Mode::Kill {
        (true, String::new())
    } else if !owner.alive {
        (
            true,
            "no live engine: nothing to drain; the trip is latched for its start".into(),
        )
    } else if this_drain && drain.phase == DrainPhase::Done {
        (true, String::new())
    } else if this_drain && drain.phase == DrainPhase::Failed {
        (false, "drain FAILED: see the engine's log".into())
    } else {
        (false, format!("drain {:?}", drain.phase))
    };
    if firm_mode == Mode::Normal && w.is_active() && h.note.is_empty() {
        note = "tripped locally; the firm is not tripped".into();
    }
    EngineAck {
        v: ACK_VERSION,
        host: host.to_string(),
        engine: name.to_string(),
        path: b.path().display().to_string(),
        desks: desks.to_vec(),
        keys_seen: target.keys_seen.clone(),
        firm_mode: firm_mode.into(),
        mode: w.mode().into(),
        generation: w.generation(),
        state_word: w.0,
        kill_generation: h.kill_generation,
        engine_pid: owner.pid,
        engine_alive: owner.alive,
        drain_phase: drain.phase,
        drain_generation: drain.generation,
        open_orders,
        unknown_orders: drain.orders_unknown,
        confirmed,
        note,
        relay_pid: std::process::id(),
        updated_ns: wall_ns(),
    }
}

/// `Ok` when every trip in force on the block came from the firm (so a
/// firm reset may lift it); `Err(why)` names who else tripped it.
fn firm_hold(block: &ControlBlock) -> Result<(), String> {
    let entries = block.audit();
    let since = entries
        .iter()
        .rposition(|e| e.kind == AuditKind::Reset)
        .map(|i| i + 1);
    let wrapped = since.is_none() && entries.first().is_some_and(|e| e.ticket > 0);
    if wrapped {
        return Err(
            "the audit ring no longer shows who tripped this block: reset it locally".into(),
        );
    }
    let trips = entries[since.unwrap_or(0)..]
        .iter()
        .filter(|e| matches!(e.kind, AuditKind::Trip | AuditKind::TripNoop));
    for e in trips {
        if e.source != Source::Firm {
            return Err(format!(
                "also tripped by {} (pid {}, \"{}\"): not released by the firm reset; reset it locally",
                e.source.as_str(),
                e.pid,
                e.reason
            ));
        }
    }
    Ok(())
}

/// The one place the relay resets a block. The state word must still be
/// `seen` (nothing tripped it since the relay looked): the reset is a
/// compare-and-swap from `seen`'s generation, so a trip that lands between
/// this check and the reset is refused, never erased.
fn release(operator: &Operator, seen: StateWord, why: &str) -> Result<(), String> {
    let block = operator.block();
    let blockers = block.reset_blockers();
    if !blockers.is_empty() {
        // Checked first so a refused reset does not fill the audit ring
        // every poll tick.
        return Err(format!("local reset refused: {}", blockers.join("; ")));
    }
    if block.state() != seen {
        return Err("the block changed while the relay looked; will look again".into());
    }
    operator
        .reset(&ResetRequest {
            source: Source::Firm,
            reason: format!("firm reset: {why}"),
            force: false,
            expected_generation: Some(seen.generation()),
        })
        .map(|_| ())
        .map_err(|e: ControlError| format!("local reset refused: {e}"))
}

/// Trips HALT on every block because NATS has been unreachable too long
/// (`--fail-closed`); released like any firm trip once a fresh read says
/// the firm is normal.
pub fn fail_closed(blocks: &LocalBlocks, why: &str) -> Actions {
    let mut log = Vec::new();
    for (name, h) in &blocks.blocks {
        if h.block.state().mode() < Mode::HaltNew {
            let out = h
                .operator
                .trip_global(Mode::HaltNew, Source::Firm, &format!("relay: {why}"));
            log.push(format!(
                "engine {name}: TRIPPED HALT-NEW at generation {} (fail-closed: {why})",
                out.transition.current().generation()
            ));
        }
    }
    log
}

#[cfg(test)]
mod tests;
