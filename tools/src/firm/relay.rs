//! `killswitch relay`: one per host. Follows the firm bucket and holds this
//! host's control blocks to it.
//!
//! Three tasks on one thread:
//! * the **firm reader** keeps the view of the keys that apply to this host:
//!   a watch for the fast path, plus a full read on start, on every
//!   reconnection and every `--resync` (so a lost watch or a host cut off
//!   during the trip converges to the latched state as soon as NATS answers);
//! * the **enforcer** applies the view to the blocks on every change and every
//!   `--poll` tick, and never waits on the network;
//! * the **ack publisher** writes one acknowledgement per engine, latest value
//!   first, retrying while NATS is away.
//!
//! # Invariants
//! * A block is tripped (escalated) whenever the firm asks for more than it
//!   shows, whatever the connection state: a stale view only ever holds a
//!   trip, it never releases one.
//! * A block is released only on a view read since the last reconnection,
//!   from a reset the relay verified, and only when every trip in force on
//!   it came from the firm.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use async_nats::jetstream::kv::Store;
use async_nats::{Client, Event};
use futures_util::StreamExt;
use killswitch::clock::{format_wall, wall_ns};
use killswitch::control::Mode;
use tokio::sync::{mpsc, watch};

use super::local::{fail_closed, BlockSelection, EngineAck, LocalBlocks};
use super::nats::{buckets, classify, verify_reset_history, Buckets, NatsArgs, REQUEST_TIMEOUT};
use super::view::{ack_key, keys_for, target, KeyEntry, Target};

mod publish;
use publish::{publish_acks, Metrics};

/// Everything the relay needs.
#[derive(Clone, Debug)]
pub struct RelayConfig {
    /// Servers and bucket.
    pub nats: NatsArgs,
    /// This host's name (`host.<name>`).
    pub host: String,
    /// Desks of this host (`desk.<name>`).
    pub desks: Vec<String>,
    /// Blocks to hold.
    pub selection: BlockSelection,
    /// Public nkeys of the risk role whose resets are honoured.
    pub trusted: Vec<String>,
    /// Enforcement tick: how soon a local reset is tripped again and a drain's
    /// progress is acknowledged.
    pub poll: Duration,
    /// How often the directory is rescanned for new blocks.
    pub scan_interval: Duration,
    /// Full read of the keys, besides the watch.
    pub resync: Duration,
    /// Acknowledgements are rewritten at least this often (last seen).
    pub ack_interval: Duration,
    /// NATS unreachable this long raises the alarm (and trips HALT with `fail_closed`).
    pub unreachable_after: Duration,
    /// Trip HALT locally when NATS is unreachable longer than `unreachable_after`.
    pub fail_closed: bool,
    /// Prometheus text file written with the relay's state.
    pub metrics_file: Option<PathBuf>,
}

/// What the firm reader knows.
#[derive(Clone, Debug, Default)]
struct FirmState {
    entries: BTreeMap<String, KeyEntry>,
    /// All keys read since the last (re)connection.
    fresh: bool,
    /// Ever read at all.
    loaded: bool,
}

fn log(host: &str, line: &str) {
    log_all(host, &[line.to_string()]);
}

/// Writes lines with one `write`: the enforcer logs after it has tripped,
/// and a trip of many blocks costs one system call, not one per block.
fn log_all(host: &str, lines: &[String]) {
    if lines.is_empty() {
        return;
    }
    let t = format_wall(wall_ns());
    let text: String = lines
        .iter()
        .map(|l| format!("{t} killswitch relay [{host}] {l}\n"))
        .collect();
    eprint!("{text}");
}

/// Runs the relay until SIGTERM or SIGINT; returns the exit code.
pub fn run(cfg: RelayConfig) -> i32 {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("killswitch relay: cannot start the async runtime: {e}");
            return 4;
        }
    };
    rt.block_on(async move {
        let stop = async {
            use tokio::signal::unix::{signal, SignalKind};
            match (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) {
                (Ok(mut t), Ok(mut i)) => {
                    tokio::select! { _ = t.recv() => {}, _ = i.recv() => {} }
                }
                _ => std::future::pending::<()>().await,
            }
        };
        match relay(cfg, stop).await {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("killswitch relay: error: {e}");
                4
            }
        }
    })
}

async fn relay(
    cfg: RelayConfig,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), String> {
    let keys = keys_for(&cfg.host, &cfg.desks);
    let (ev_tx, ev_rx) = mpsc::unbounded_channel();
    let client = cfg
        .nats
        .connect(
            &format!("killswitch relay {}", cfg.host),
            Some(ev_tx),
            false,
        )
        .await?;
    log(
        &cfg.host,
        &format!(
            "started (pid {}): keys {}; blocks {} in {}; NATS {}; {} trusted risk key(s); {}",
            std::process::id(),
            keys.join(", "),
            if cfg.selection.engines.is_empty() {
                "every killswitch.*".to_string()
            } else {
                cfg.selection.engines.join(", ")
            },
            cfg.selection.dir.display(),
            cfg.nats.nats,
            cfg.trusted.len(),
            if cfg.fail_closed {
                format!(
                    "fail-closed: HALT after {:?} without NATS",
                    cfg.unreachable_after
                )
            } else {
                format!(
                    "alarm after {:?} without NATS (no trip)",
                    cfg.unreachable_after
                )
            }
        ),
    );
    let (firm_tx, firm_rx) = watch::channel(FirmState::default());
    let (store_tx, store_rx) = watch::channel::<Option<Store>>(None);
    let (ack_tx, ack_rx) = mpsc::unbounded_channel();
    let reader = follow_firm(client.clone(), cfg.clone(), keys, firm_tx, store_tx, ev_rx);
    let publisher = publish_acks(cfg.host.clone(), ack_rx, store_rx);
    let enforcer = enforce(cfg.clone(), client, firm_rx, ack_tx);
    tokio::select! {
        _ = stop => log(&cfg.host, "stopping on signal; blocks keep their state (latched)"),
        _ = reader => {}
        _ = publisher => {}
        _ = enforcer => {}
    }
    Ok(())
}

async fn next_entry(
    w: &mut Option<async_nats::jetstream::kv::Watch>,
) -> Option<Result<async_nats::jetstream::kv::Entry, String>> {
    match w {
        Some(w) => w.next().await.map(|r| r.map_err(|e| e.to_string())),
        None => std::future::pending().await,
    }
}

/// The firm reader (see the module docs).
async fn follow_firm(
    client: Client,
    cfg: RelayConfig,
    keys: Vec<String>,
    tx: watch::Sender<FirmState>,
    store_tx: watch::Sender<Option<Store>>,
    mut events: mpsc::UnboundedReceiver<Event>,
) {
    let host = cfg.host.clone();
    let mut state = FirmState::default();
    let mut stores: Option<Buckets> = None;
    let mut watcher = None;
    // Reset checks run beside the reader, so a trip is never queued behind
    // a history read.
    let (checked_tx, mut checked) = mpsc::unbounded_channel::<(String, KeyEntry)>();
    let mut checking: HashSet<(String, u64)> = HashSet::new();
    let mut resync_at = tokio::time::Instant::now();
    let mut last_error = String::new();
    loop {
        tokio::select! {
            ev = events.recv() => match ev {
                Some(Event::Connected) => {
                    log(&host, "connected to NATS: reading the firm state");
                    resync_at = tokio::time::Instant::now();
                }
                Some(Event::Disconnected) => {
                    log(&host, "disconnected from NATS: holding the last known firm state");
                    state.fresh = false;
                    tx.send_replace(state.clone());
                }
                Some(_) => {}
                None => return,
            },
            done = checked.recv() => {
                if let Some((key, entry)) = done {
                    checking.remove(&(key.clone(), entry.revision));
                    let current = state.entries.get(&key).is_some_and(|old| old.revision == entry.revision);
                    if current {
                        state.entries.insert(key, entry);
                        tx.send_replace(state.clone());
                    }
                }
            }
            item = next_entry(&mut watcher) => match item {
                Some(Ok(e)) => {
                    if keys.contains(&e.key) {
                        if let Some(s) = &stores {
                            let ingest = Ingest { store: &s.firm, cfg: &cfg, checked: &checked_tx, checking: &mut checking };
                            if ingest.offer(&mut state, &e) {
                                tx.send_replace(state.clone());
                            }
                        }
                    }
                }
                Some(Err(e)) => {
                    log(&host, &format!("watch failed ({e}); the next read starts a new one"));
                    watcher = None;
                }
                None => watcher = None,
            },
            _ = tokio::time::sleep_until(resync_at) => {
                let r = resync(&client, &cfg, &keys, &mut stores, &mut watcher).await;
                let r = r.map(|read| {
                    let s = stores.as_ref().expect("read only with the buckets open");
                    for e in &read {
                        Ingest { store: &s.firm, cfg: &cfg, checked: &checked_tx, checking: &mut checking }
                            .offer(&mut state, e);
                    }
                });
                match r {
                    Ok(()) => {
                        if !last_error.is_empty() {
                            log(&host, "firm state read again");
                            last_error.clear();
                        }
                        if let Some(s) = &stores {
                            if store_tx.borrow().is_none() {
                                store_tx.send_replace(Some(s.acks.clone()));
                            }
                        }
                        state.fresh = true;
                        state.loaded = true;
                    }
                    Err(e) => {
                        if e != last_error {
                            log(&host, &format!("cannot read the firm state: {e}"));
                            last_error = e;
                        }
                        state.fresh = false;
                    }
                }
                tx.send_replace(state.clone());
                resync_at = tokio::time::Instant::now() + cfg.resync;
            }
        }
    }
}

/// What the reader needs to take in an entry.
struct Ingest<'a> {
    store: &'a Store,
    cfg: &'a RelayConfig,
    checked: &'a mpsc::UnboundedSender<(String, KeyEntry)>,
    checking: &'a mut HashSet<(String, u64)>,
}

impl Ingest<'_> {
    /// Stores a newer entry at once (a reset stays held as KILL until its
    /// history check, started here, comes back); true when the view changed.
    fn offer(self, state: &mut FirmState, e: &async_nats::jetstream::kv::Entry) -> bool {
        if state.entries.get(&e.key).is_some_and(|old| {
            old.revision > e.revision || (old.revision == e.revision && !old.recheck)
        }) {
            return false;
        }
        let (entry, needs_history) = classify(&self.cfg.nats.bucket, &self.cfg.trusted, e);
        let unchanged = state.entries.get(&e.key) == Some(&entry);
        if needs_history && self.checking.insert((e.key.clone(), e.revision)) {
            let (store, checked, e, pending) = (
                self.store.clone(),
                self.checked.clone(),
                e.clone(),
                entry.clone(),
            );
            tokio::spawn(async move {
                let done = verify_reset_history(&store, pending, &e).await;
                let _ = checked.send((e.key.clone(), done));
            });
        }
        if unchanged {
            return false;
        }
        state.entries.insert(e.key.clone(), entry);
        true
    }
}

/// Reads every key of this host (and opens the buckets and the watch when
/// missing); returns the entries read.
async fn resync(
    client: &Client,
    cfg: &RelayConfig,
    keys: &[String],
    stores: &mut Option<Buckets>,
    watcher: &mut Option<async_nats::jetstream::kv::Watch>,
) -> Result<Vec<async_nats::jetstream::kv::Entry>, String> {
    if client.connection_state() != async_nats::connection::State::Connected {
        return Err("not connected".into());
    }
    if stores.is_none() {
        *stores = Some(buckets(client, &cfg.nats, true).await?);
    }
    let s = stores.as_ref().expect("set above");
    let mut read = Vec::new();
    for key in keys {
        let got = tokio::time::timeout(REQUEST_TIMEOUT, s.firm.entry(key.clone()))
            .await
            .map_err(|_| format!("reading {key}: NATS did not answer"))?
            .map_err(|e| format!("reading {key}: {e}"))?;
        read.extend(got);
    }
    if watcher.is_none() {
        *watcher = Some(
            tokio::time::timeout(REQUEST_TIMEOUT, s.firm.watch_all())
                .await
                .map_err(|_| "starting the watch: NATS did not answer".to_string())?
                .map_err(|e| format!("starting the watch: {e}"))?,
        );
    }
    Ok(read)
}

/// The enforcer (see the module docs).
async fn enforce(
    cfg: RelayConfig,
    client: Client,
    mut firm: watch::Receiver<FirmState>,
    acks: mpsc::UnboundedSender<EngineAck>,
) {
    let host = cfg.host.clone();
    let keys = keys_for(&cfg.host, &cfg.desks);
    let mut blocks = LocalBlocks::new(cfg.selection.clone());
    for l in blocks.scan() {
        log(&host, &l);
    }
    let mut tick = tokio::time::interval(cfg.poll);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut next_scan = Instant::now() + cfg.scan_interval;
    let mut next_metrics = Instant::now();
    let mut sent: BTreeMap<String, EngineAck> = BTreeMap::new();
    let mut tgt = Target::default();
    let mut fresh = false;
    let mut unreachable_since: Option<Instant> = Some(Instant::now());
    let mut alarm = false;
    let mut trips_total = 0u64;
    loop {
        let mut lines = Vec::new();
        tokio::select! {
            changed = firm.changed() => {
                if changed.is_err() {
                    return;
                }
                let st = firm.borrow_and_update().clone();
                fresh = st.fresh;
                if st.loaded {
                    let new = target(&st.entries, &keys);
                    if new.mode != tgt.mode || new.why != tgt.why {
                        lines.push(format!(
                            "firm asks {} ({})",
                            new.mode.unwrap_or(Mode::Normal).as_str().to_uppercase(),
                            if new.why.is_empty() { "never tripped" } else { &new.why }
                        ));
                    }
                    tgt = new;
                }
            }
            _ = tick.tick() => {}
        }
        let now = Instant::now();
        if now >= next_scan {
            lines.extend(blocks.scan());
            next_scan = now + cfg.scan_interval;
        }
        // Enforce first, then say so.
        let applied = blocks.apply(&tgt, fresh);
        trips_total += applied.iter().filter(|l| l.contains("TRIPPED")).count() as u64;
        lines.extend(applied);
        log_all(&host, &lines);
        // Unreachable: no fresh read of the firm state.
        let connected = client.connection_state() == async_nats::connection::State::Connected;
        if fresh {
            if alarm {
                log(&host, "NATS reachable again; alarm cleared");
            }
            unreachable_since = None;
            alarm = false;
        } else {
            let since = *unreachable_since.get_or_insert(now);
            if now.duration_since(since) >= cfg.unreachable_after {
                let why = format!(
                    "NATS unreachable for {:.1} s",
                    now.duration_since(since).as_secs_f64()
                );
                if !alarm {
                    alarm = true;
                    log(
                        &host,
                        &format!(
                            "ALARM: {why}: a firm trip made now would not reach this host{}",
                            if cfg.fail_closed {
                                "; fail-closed: tripping HALT"
                            } else {
                                "; blocks left as they are (--fail-closed would trip HALT)"
                            }
                        ),
                    );
                }
                if cfg.fail_closed {
                    for l in fail_closed(&blocks, &why) {
                        trips_total += 1;
                        log(&host, &l);
                    }
                }
            }
        }
        // Acknowledgements: on news, and every ack_interval as a heartbeat.
        for ack in blocks.acks_due(&host, &cfg.desks, &tgt, cfg.ack_interval) {
            sent.insert(ack_key(&host, &ack.engine), ack.clone());
            let _ = acks.send(ack);
        }
        if let Some(path) = &cfg.metrics_file {
            if now >= next_metrics {
                next_metrics = now + Duration::from_secs(1);
                let m = Metrics {
                    host: &host,
                    connected,
                    fresh,
                    unreachable_s: unreachable_since
                        .map(|s| now.duration_since(s).as_secs_f64())
                        .unwrap_or(0.0),
                    alarm,
                    firm_mode: tgt.mode.unwrap_or(Mode::Normal),
                    blocks: blocks.len(),
                    tripped: blocks
                        .count_at_least(tgt.mode.unwrap_or(Mode::Normal).max(Mode::ReduceOnly)),
                    unconfirmed: sent.values().filter(|a| !a.confirmed).count(),
                    trips_total,
                };
                if let Err(e) = m.write(path) {
                    log(
                        &host,
                        &format!("cannot write metrics {}: {e}", path.display()),
                    );
                }
            }
        }
    }
}
