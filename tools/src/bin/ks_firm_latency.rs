//! `ks-firm-latency`: what a firm-wide kill costs, measured on a real
//! 3-server NATS cluster (`nats-server` processes on loopback) with 3 real
//! `killswitch relay` processes.
//!
//! For each block count (default 1, 10, 100, spread over the relays) it
//! repeats: write the firm trip into the bucket, then measure
//! * trip -> every control block at KILL (this process maps every block and
//!   polls their state words), and
//! * trip -> every engine's acknowledgement confirmed (received here from the
//!   acknowledgements bucket: block tripped, and drained where an engine is
//!   attached; the blocks here have no engine, see BENCHMARKS.md),
//!
//! then resets (signed, compare-and-set) and waits for every block to be
//! released. Beside them, in the same run and cluster, the baselines: a bare
//! NATS publish -> subscribe across two servers, and a JetStream key-value
//! put -> watch delivery on a 3-replica bucket (what a trip must cross).
//! Prints hdrhistogram percentiles.
//!
//! `ks-firm-latency [--blocks 1,10,100] [--iterations 200] [--baseline-iterations 1000] [--json]`

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use futures_util::StreamExt;
use hdrhistogram::Histogram;
use killswitch::clock::mono_ns;
use killswitch::clock::wall_ns;
use killswitch::control::{AuditKind, ControlBlock, Mode};
use killswitch_tools::firm::cluster::NatsCluster;
use killswitch_tools::firm::local::EngineAck;
use killswitch_tools::firm::nats::{buckets, Buckets, NatsArgs};
use killswitch_tools::firm::record::{Action, FirmMode, FirmRecord, RECORD_VERSION};
use serde::Serialize;

/// Options.
#[derive(Parser, Debug)]
#[command(
    name = "ks-firm-latency",
    about = "Firm trip -> every control block tripped / every engine confirmed, over a real NATS cluster"
)]
struct Args {
    /// Control-block counts to measure, spread round-robin over the relays.
    #[arg(long, value_delimiter = ',', default_value = "1,10,100")]
    blocks: Vec<usize>,
    /// Relays (hosts).
    #[arg(long, default_value_t = 3)]
    relays: usize,
    /// Trips per block count.
    #[arg(long, default_value_t = 200)]
    iterations: usize,
    /// Trips per block count with block 0 a real reference engine (restarted
    /// every trip: it exits once drained); 0 to skip.
    #[arg(long, default_value_t = 10)]
    engine_iterations: usize,
    /// Messages per baseline.
    #[arg(long, default_value_t = 1000)]
    baseline_iterations: usize,
    /// The relays' --poll (their default when not given).
    #[arg(long)]
    relay_poll: Option<String>,
    /// Print JSON too.
    #[arg(long)]
    json: bool,
}

const BUCKET: &str = "KILLSWITCH_FIRM";
const WAIT: Duration = Duration::from_secs(30);

fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

#[derive(Serialize)]
struct Row {
    what: String,
    count: u64,
    p50_us: u64,
    p90_us: u64,
    p99_us: u64,
    max_us: u64,
}

fn row(what: String, h: &Histogram<u64>) -> Row {
    Row {
        what,
        count: h.len(),
        p50_us: h.value_at_quantile(0.50),
        p90_us: h.value_at_quantile(0.90),
        p99_us: h.value_at_quantile(0.99),
        max_us: h.max(),
    }
}

fn print_row(r: &Row) {
    let ms = |us: u64| format!("{:.3} ms", us as f64 / 1000.0);
    println!(
        "{:<58} {:>6} {:>11} {:>11} {:>11} {:>11}",
        r.what,
        r.count,
        ms(r.p50_us),
        ms(r.p90_us),
        ms(r.p99_us),
        ms(r.max_us)
    );
}

struct RootDir(PathBuf);

impl RootDir {
    fn path(&self) -> &Path {
        &self.0
    }
}

struct RelayProc(Child);

impl Drop for RelayProc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn killswitch_binary() -> Result<PathBuf, String> {
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let p = me.with_file_name("killswitch");
    if p.is_file() {
        Ok(p)
    } else {
        Err(format!(
            "{} not found: build it first (`cargo build --release -p killswitch-tools`)",
            p.display()
        ))
    }
}

struct Bench {
    rt: tokio::runtime::Runtime,
    client: async_nats::Client,
    stores: Buckets,
    risk: nkeys::KeyPair,
    acks: mpsc::Receiver<(Instant, EngineAck)>,
    generation: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match bench(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ks-firm-latency: error: {e}");
            ExitCode::from(1)
        }
    }
}

fn bench(args: &Args) -> Result<(), String> {
    let ks = killswitch_binary()?;
    let cluster = NatsCluster::start(3)?;
    let urls = cluster.urls();
    eprintln!("cluster of 3 nats-server processes up: {urls}");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let nats = NatsArgs {
        nats: urls.clone(),
        bucket: BUCKET.into(),
        replicas: 3,
        only_listed_servers: false,
    };
    let (client, stores) = rt.block_on(async {
        let client = nats.connect("ks-firm-latency", None, true).await?;
        let end = Instant::now() + Duration::from_secs(60);
        loop {
            match buckets(&client, &nats, true).await {
                Ok(b) => return Ok((client, b)),
                Err(e) if Instant::now() > end => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    })?;
    let (ack_tx, acks) = mpsc::channel();
    let sub_client = client.clone();
    let acks_subject = format!("$KV.{BUCKET}_ACKS.>");
    rt.block_on(async {
        let mut sub = sub_client
            .subscribe(acks_subject)
            .await
            .map_err(|e| e.to_string())?;
        sub_client.flush().await.map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            while let Some(m) = sub.next().await {
                let t = Instant::now();
                if let Ok(a) = serde_json::from_slice::<EngineAck>(&m.payload) {
                    if ack_tx.send((t, a)).is_err() {
                        return;
                    }
                }
            }
        });
        Ok::<_, String>(())
    })?;
    let mut b = Bench {
        rt,
        client,
        stores,
        risk: nkeys::KeyPair::new_user(),
        acks,
        generation: 0,
    };

    let mut rows = Vec::new();
    rows.extend(baselines(&b, &cluster, args.baseline_iterations)?);
    for &n in &args.blocks {
        rows.extend(series(&mut b, &ks, &urls, args, n, args.iterations, false)?);
        if args.engine_iterations > 0 {
            rows.extend(series(
                &mut b,
                &ks,
                &urls,
                args,
                n,
                args.engine_iterations,
                true,
            )?);
        }
    }
    println!(
        "\n{:<58} {:>6} {:>11} {:>11} {:>11} {:>11}",
        "path", "n", "p50", "p90", "p99", "max"
    );
    for r in &rows {
        print_row(r);
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&rows).expect("rows serialise")
        );
    }
    Ok(())
}

/// Bare NATS publish -> subscribe (publisher on server 0, subscriber on
/// server 1, so the message crosses a route as a trip does), and a
/// JetStream key-value put -> watch delivery on a 3-replica bucket.
fn baselines(b: &Bench, cluster: &NatsCluster, n: usize) -> Result<Vec<Row>, String> {
    let (tx, rx) = mpsc::channel::<Instant>();
    let (publisher, kv) = b.rt.block_on(async {
        let publisher = async_nats::connect(cluster.url(0))
            .await
            .map_err(|e| e.to_string())?;
        let subscriber = async_nats::connect(cluster.url(1))
            .await
            .map_err(|e| e.to_string())?;
        let mut sub = subscriber
            .subscribe("ks.bench.baseline")
            .await
            .map_err(|e| e.to_string())?;
        subscriber.flush().await.map_err(|e| e.to_string())?;
        let tx1 = tx.clone();
        tokio::spawn(async move {
            let _keep = subscriber;
            while sub.next().await.is_some() {
                if tx1.send(Instant::now()).is_err() {
                    return;
                }
            }
        });
        let kv = buckets(
            &b.client,
            &NatsArgs {
                nats: String::new(),
                bucket: "KS_BENCH_BASELINE".into(),
                replicas: 3,
                only_listed_servers: false,
            },
            true,
        )
        .await?
        .firm;
        let mut w = kv.watch("k").await.map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            while w.next().await.is_some() {
                if tx.send(Instant::now()).is_err() {
                    return;
                }
            }
        });
        Ok::<_, String>((publisher, kv))
    })?;
    // Let the route's interest in the subject propagate.
    std::thread::sleep(Duration::from_millis(500));
    let mut pubsub = hist();
    let mut kvh = hist();
    for i in 0..n {
        let p = publisher.clone();
        let t0 = Instant::now();
        b.rt.spawn(async move {
            p.publish("ks.bench.baseline", Bytes::from_static(b"x"))
                .await
        });
        let t = rx.recv_timeout(WAIT).map_err(|_| "baseline message lost")?;
        pubsub
            .record(t.duration_since(t0).as_micros().max(1) as u64)
            .ok();
        let kv = kv.clone();
        let t0 = Instant::now();
        b.rt.spawn(async move { kv.put("k", Bytes::from(i.to_string())).await });
        let t = rx
            .recv_timeout(WAIT)
            .map_err(|_| "baseline kv update lost")?;
        kvh.record(t.duration_since(t0).as_micros().max(1) as u64)
            .ok();
    }
    Ok(vec![
        row(
            "baseline: NATS publish -> subscribe (across a route)".into(),
            &pubsub,
        ),
        row("baseline: key-value put -> watch (3 replicas)".into(), &kvh),
    ])
}

fn record(b: &mut Bench, action: Action, mode: FirmMode, revision_seen: Option<u64>) -> Bytes {
    b.generation += 1;
    let mut r = FirmRecord {
        v: RECORD_VERSION,
        key: "firm".into(),
        action,
        mode,
        generation: b.generation,
        reason: "ks-firm-latency".into(),
        who: "ks-firm-latency".into(),
        when_ns: wall_ns(),
        write_id: format!("bench-{}", b.generation),
        revision_seen,
        signer: None,
        signature: None,
    };
    if action == Action::Reset {
        r.sign(BUCKET, &b.risk).expect("sign");
    }
    Bytes::from(r.encode())
}

/// Waits until every block is at `mode`, then returns the latest time
/// (`CLOCK_MONOTONIC`, from the audit entries the relays wrote as they
/// changed each block) minus `t0`: the measure does not depend on how
/// soon this process looked. Polls with short sleeps so this process does
/// not take a core from the relays on a 2-core machine.
fn wait_blocks(
    blocks: &[ControlBlock],
    mode: Mode,
    kind: AuditKind,
    t0: u64,
) -> Result<u64, String> {
    let started = Instant::now();
    while !blocks.iter().all(|b| b.state().mode() == mode) {
        if started.elapsed() > WAIT {
            return Err(format!("blocks did not reach {mode} within {WAIT:?}"));
        }
        std::thread::sleep(Duration::from_micros(50));
    }
    let mut latest = t0;
    for b in blocks {
        let t = b
            .audit()
            .iter()
            .rev()
            .find(|e| e.kind == kind)
            .map(|e| e.mono_ns)
            .ok_or("a block has no audit entry for the change")?;
        latest = latest.max(t);
    }
    Ok(latest - t0)
}

fn series(
    b: &mut Bench,
    ks: &Path,
    urls: &str,
    args: &Args,
    n: usize,
    iterations: usize,
    with_engine: bool,
) -> Result<Vec<Row>, String> {
    let relays = args.relays;
    // Kept on failure (the error names it, with the relays' logs); removed
    // at the end of a series that worked.
    let root = tempfile::Builder::new()
        .prefix("ks-firm-bench-")
        .tempdir()
        .map_err(|e| e.to_string())?
        .keep();
    let root = RootDir(root);
    let mut blocks = Vec::new();
    let mut names = HashSet::new();
    for i in 0..n {
        let host = format!("h{}", i % relays);
        let dir = root.path().join(&host);
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let engine = format!("e{i}");
        blocks.push(ControlBlock::create(&dir, &engine).map_err(|e| e.to_string())?);
        names.insert((host, engine));
    }
    let mut procs = Vec::new();
    for r in 0..relays {
        let host = format!("h{r}");
        let dir = root.path().join(&host);
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let log = std::fs::File::create(root.path().join(format!("relay-{host}.log")))
            .map_err(|e| e.to_string())?;
        procs.push(RelayProc(
            Command::new(ks)
                .args(["relay", "--nats", urls, "--host", &host, "--all"])
                .args(["--risk-key", &b.risk.public_key()])
                .args(args.relay_poll.iter().flat_map(|p| ["--poll", p.as_str()]))
                .arg("--dir")
                .arg(&dir)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .map_err(|e| format!("cannot start {}: {e}", ks.display()))?,
        ));
    }
    // Ready: every block acknowledged once.
    let mut seen = HashSet::new();
    let end = Instant::now() + Duration::from_secs(60);
    while seen.len() < n {
        let left = end.saturating_duration_since(Instant::now());
        let (_, a) = b.acks.recv_timeout(left).map_err(|_| {
            format!(
                "relays did not acknowledge {n} blocks within 60 s (logs in {})",
                root.path().display()
            )
        })?;
        if names.contains(&(a.host.clone(), a.engine.clone())) {
            seen.insert((a.host, a.engine));
        }
    }
    eprintln!(
        "{n} block(s) over {relays} relays{}: ready; {iterations} trips",
        if with_engine {
            ", block 0 a real engine"
        } else {
            ""
        }
    );
    let mut tripped = hist();
    let mut confirmed = hist();
    let mut released = hist();
    let firm = b.stores.firm.clone();
    let relay_logs = || {
        (0..relays)
            .map(|r| {
                let p = root.path().join(format!("relay-h{r}.log"));
                let text = std::fs::read_to_string(&p).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(15).collect();
                format!(
                    "--- {}\n{}",
                    p.display(),
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    for i in 0..iterations {
        let engine = if with_engine {
            Some(start_engine(ks, root.path(), &blocks[0], i)?)
        } else {
            None
        };
        while b.acks.try_recv().is_ok() {}
        let body = record(b, Action::Trip, FirmMode::Kill, None);
        let store = firm.clone();
        let t0_mono = mono_ns();
        let t0 = Instant::now();
        let put = b.rt.spawn(async move { store.put("firm", body).await });
        let t_tripped_ns = wait_blocks(&blocks, Mode::Kill, AuditKind::Trip, t0_mono)
            .map_err(|e| format!("{e}\n{}", relay_logs()))?;
        let revision =
            b.rt.block_on(put)
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("trip put: {e}"))?;
        let mut ok: HashSet<(String, String)> = HashSet::new();
        let mut last = t0;
        while ok.len() < n {
            let left = WAIT.saturating_sub(t0.elapsed());
            let (t, a) = b
                .acks
                .recv_timeout(left)
                .map_err(|_| format!("acknowledgements missing: {} of {n}", ok.len()))?;
            let drained = !(with_engine && a.engine == "e0")
                || a.drain_phase == killswitch::control::DrainPhase::Done;
            if a.confirmed
                && drained
                && a.firm_mode == FirmMode::Kill
                && a.keys_seen.get("firm") == Some(&revision)
                && ok.insert((a.host, a.engine))
            {
                last = last.max(t);
            }
        }
        tripped.record((t_tripped_ns / 1000).max(1)).ok();
        confirmed
            .record(last.duration_since(t0).as_micros().max(1) as u64)
            .ok();
        if let Some(mut e) = engine {
            let end = Instant::now() + WAIT;
            while e.try_wait().map_err(|x| x.to_string())?.is_none() {
                if Instant::now() > end {
                    let _ = e.kill();
                    return Err("the engine did not exit after its drain".into());
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            let _ = std::fs::remove_dir_all(root.path().join(format!("journal-{i}")));
        }

        let body = record(b, Action::Reset, FirmMode::Normal, Some(revision));
        let store = firm.clone();
        let t0_mono = mono_ns();
        b.rt.block_on(async move { store.update("firm", body, revision).await })
            .map_err(|e| format!("reset: {e}"))?;
        let ns = wait_blocks(&blocks, Mode::Normal, AuditKind::Reset, t0_mono)
            .map_err(|e| format!("{e}\n{}", relay_logs()))?;
        released.record((ns / 1000).max(1)).ok();
        // Let the relays publish their release acknowledgements before the
        // next trip: a firm trip does not land on a firm still busy with
        // the last release.
        let reset_revision = revision_after(b, revision)?;
        let mut calm: HashSet<(String, String)> = HashSet::new();
        let since = Instant::now();
        while calm.len() < n {
            let left = WAIT.saturating_sub(since.elapsed());
            let (_, a) = b
                .acks
                .recv_timeout(left)
                .map_err(|_| format!("release acknowledgements missing: {} of {n}", calm.len()))?;
            if a.firm_mode == FirmMode::Normal && a.keys_seen.get("firm") == Some(&reset_revision) {
                calm.insert((a.host, a.engine));
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(procs);
    let _ = std::fs::remove_dir_all(root.path());
    let what = if with_engine {
        format!("{n} blocks (1 engine) / {relays} relays")
    } else {
        format!("{n} blocks / {relays} relays")
    };
    let confirmed_what = if with_engine {
        "trip -> every ack confirmed, engine drained"
    } else {
        "trip -> every ack confirmed"
    };
    Ok(vec![
        row(format!("{what}: trip -> every block KILL"), &tripped),
        row(format!("{what}: {confirmed_what}"), &confirmed),
        row(format!("{what}: signed reset -> all released"), &released),
    ])
}

/// The revision of the `firm` key now (the reset just written after `trip`).
fn revision_after(b: &Bench, trip: u64) -> Result<u64, String> {
    let store = b.stores.firm.clone();
    let e =
        b.rt.block_on(async move { store.entry("firm").await })
            .map_err(|e| format!("reading firm: {e}"))?
            .ok_or("the firm key is gone")?;
    if e.revision <= trip {
        return Err(format!("the reset after revision {trip} is not there"));
    }
    Ok(e.revision)
}

/// Starts the reference engine on block 0 (`killswitch engine --config`,
/// as the drill does) and waits until it trades with orders resting.
fn start_engine(ks: &Path, root: &Path, block: &ControlBlock, i: usize) -> Result<Child, String> {
    let dir = block
        .path()
        .parent()
        .ok_or("block has no directory")?
        .to_path_buf();
    let cfg = killswitch_tools::engine::EngineConfig {
        name: block.name().to_string(),
        control_dir: Some(dir),
        journal_dir: root.join(format!("journal-{i}")),
        ..killswitch_tools::engine::EngineConfig::default()
    };
    let path = root.join("engine.toml");
    std::fs::write(&path, toml::to_string(&cfg).map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    let log_path = root.join(format!("engine-{i}.log"));
    let log = std::fs::File::create(&log_path).map_err(|e| e.to_string())?;
    let mut child = Command::new(ks)
        .arg("engine")
        .arg("--config")
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| e.to_string())?;
    let end = Instant::now() + WAIT;
    while block.owner().pid != child.id()
        || killswitch::control::GatewaySnapshot::read(block).open_orders < 1000
    {
        if Instant::now() > end || child.try_wait().map_err(|e| e.to_string())?.is_some() {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "the engine did not start trading (log {})",
                log_path.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(child)
}
