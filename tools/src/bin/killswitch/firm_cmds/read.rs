//! The commands that read the firm bucket: status (keys and every engine's
//! acknowledgement) and history (the firm audit).

use super::*;

#[derive(Serialize)]
struct KeyRow {
    key: String,
    revision: u64,
    /// Mode a relay applies for this key (KILL for anything unverifiable).
    mode: Mode,
    /// Why, as a relay logs it.
    verdict: String,
    record: Option<FirmRecord>,
}

#[derive(Serialize)]
struct EngineRow {
    #[serde(flatten)]
    ack: EngineAck,
    /// The relay has applied the current revision of every key it obeys.
    up_to_date: bool,
    /// Milliseconds since the relay last wrote this.
    last_seen_ms: u64,
    /// confirmed, up to date and not stale.
    ok: bool,
    /// Why not.
    problem: String,
}

#[derive(Serialize)]
struct StatusReport {
    keys: Vec<KeyRow>,
    engines: Vec<EngineRow>,
    confirmed: usize,
    not_confirmed: Vec<String>,
}

/// Every key of a bucket (deleted ones included: their delete marker is a
/// message), from one stream-info request rather than a consumer.
async fn list_keys(store: &kv::Store) -> Result<Vec<String>, String> {
    let mut keys = tokio::time::timeout(REQUEST_TIMEOUT, async {
        let mut out = Vec::new();
        let mut subjects = store
            .stream
            .info_with_subjects(format!("{}>", store.prefix))
            .await
            .map_err(|e| e.to_string())?;
        while let Some(item) = subjects.next().await {
            let (subject, _) = item.map_err(|e| e.to_string())?;
            if let Some(k) = subject.strip_prefix(store.prefix.as_str()) {
                out.push(k.to_string());
            }
        }
        Ok::<_, String>(out)
    })
    .await
    .map_err(|_| "listing keys: NATS did not answer".to_string())??;
    keys.sort();
    Ok(keys)
}

pub(super) async fn status(
    client: &async_nats::Client,
    nats: &NatsArgs,
    json: bool,
    stale_after: Duration,
) -> ExitCode {
    let b = match open_retrying(client, nats, false, Instant::now() + REQUEST_TIMEOUT * 5).await {
        Ok(b) => b,
        Err(e) => return failed(&e),
    };
    // A failing server or a leader election makes single requests fail
    // for a few seconds: try again until the deadline.
    let deadline = Instant::now() + REQUEST_TIMEOUT * 5;
    let report = loop {
        match status_report(&b, nats, stale_after).await {
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            other => break other,
        }
    };
    match report {
        Ok(r) => {
            if json {
                outln!(
                    "{}",
                    serde_json::to_string_pretty(&r).expect("status serialises")
                );
            } else {
                print_status(&r);
            }
            ExitCode::from(exit::OK)
        }
        Err(e) => failed(&e),
    }
}

async fn status_report(
    b: &Buckets,
    nats: &NatsArgs,
    stale_after: Duration,
) -> Result<StatusReport, String> {
    let mut keys = Vec::new();
    let mut current = std::collections::BTreeMap::new();
    for key in list_keys(&b.firm).await? {
        let Some(e) = latest(b, &key).await? else {
            continue;
        };
        // The verdict a relay trusting this record's own signer would reach;
        // whether that signer is trusted is the relays' configuration.
        let signer: Vec<String> = record_of(&e).and_then(|r| r.signer).into_iter().collect();
        let entry = to_key_entry(&b.firm, &nats.bucket, &signer, &e).await;
        let v = verdict(&key, Some(&entry));
        current.insert(key.clone(), e.revision);
        keys.push(KeyRow {
            key,
            revision: e.revision,
            mode: v.mode,
            verdict: v.why,
            record: record_of(&e),
        });
    }
    let mut engines = Vec::new();
    for key in list_keys(&b.acks).await? {
        let got = tokio::time::timeout(REQUEST_TIMEOUT, b.acks.entry(key.clone()))
            .await
            .map_err(|_| format!("reading {key}: NATS did not answer"))?
            .map_err(|e| format!("reading {key}: {e}"))?;
        let Some(e) = got.filter(|e| e.operation == Operation::Put) else {
            continue;
        };
        let Ok(ack) = serde_json::from_slice::<EngineAck>(&e.value) else {
            continue;
        };
        let behind: Vec<String> = ack
            .keys_seen
            .iter()
            .filter(|(k, rev)| current.get(*k).copied().unwrap_or(0) != **rev)
            .map(|(k, rev)| {
                format!(
                    "relay applied {k} rev {rev}, now rev {}",
                    current.get(k).copied().unwrap_or(0)
                )
            })
            .collect();
        let last_seen_ms = wall_ns().saturating_sub(ack.updated_ns) / 1_000_000;
        let stale = last_seen_ms > stale_after.as_millis() as u64;
        let problem = if stale {
            format!(
                "STALE: relay silent for {}",
                format_duration_ns(last_seen_ms * 1_000_000)
            )
        } else if !behind.is_empty() {
            behind.join("; ")
        } else if !ack.confirmed {
            ack.note.clone()
        } else {
            String::new()
        };
        engines.push(EngineRow {
            up_to_date: behind.is_empty(),
            last_seen_ms,
            ok: problem.is_empty(),
            problem,
            ack,
        });
    }
    let not_confirmed: Vec<String> = engines
        .iter()
        .filter(|e| !e.ok)
        .map(|e| format!("{}/{}", e.ack.host, e.ack.engine))
        .collect();
    Ok(StatusReport {
        keys,
        confirmed: engines.len() - not_confirmed.len(),
        engines,
        not_confirmed,
    })
}

fn print_status(r: &StatusReport) {
    if r.keys.is_empty() {
        outln!("firm        nothing ever tripped");
    }
    for k in &r.keys {
        let (who, when, gen) = k
            .record
            .as_ref()
            .map(|rec| (rec.who.as_str(), format_wall(rec.when_ns), rec.generation))
            .unwrap_or(("?", "?".into(), 0));
        outln!(
            "key {:<20} {:<10} revision {:<6} generation {:<4} {when} by {who}",
            k.key,
            k.mode.as_str().to_uppercase(),
            k.revision,
            gen
        );
        if !k.verdict.is_empty() {
            outln!("    {}", k.verdict);
        }
    }
    outln!("");
    outln!(
        "{:<16} {:<20} {:<10} {:<10} {:>6} {:<18} {:>7} {:>7} {:>9}  state",
        "host",
        "engine",
        "firm asks",
        "block",
        "gen",
        "drain",
        "open",
        "unknown",
        "seen"
    );
    for e in &r.engines {
        let a = &e.ack;
        outln!(
            "{:<16} {:<20} {:<10} {:<10} {:>6} {:<18} {:>7} {:>7} {:>9}  {}",
            a.host,
            a.engine,
            Mode::from(a.firm_mode).as_str(),
            Mode::from(a.mode).as_str(),
            a.generation,
            format!("{:?} g{}", a.drain_phase, a.drain_generation),
            a.open_orders,
            a.unknown_orders,
            format!("{} ago", format_duration_ns(e.last_seen_ms * 1_000_000)),
            if e.ok {
                "confirmed".to_string()
            } else {
                format!("NOT CONFIRMED: {}", e.problem)
            }
        );
    }
    outln!("");
    outln!(
        "{} engine(s): {} confirmed, {} not confirmed{}",
        r.engines.len(),
        r.confirmed,
        r.not_confirmed.len(),
        if r.not_confirmed.is_empty() {
            String::new()
        } else {
            format!(": {}", r.not_confirmed.join(", "))
        }
    );
}

#[derive(Serialize)]
struct HistoryRow {
    revision: u64,
    key: String,
    created: String,
    operation: String,
    record: Option<FirmRecord>,
    problem: Option<String>,
}

pub(super) async fn history(
    client: &async_nats::Client,
    nats: &NatsArgs,
    key: Option<String>,
    json: bool,
) -> ExitCode {
    let b = match open_retrying(client, nats, false, Instant::now() + REQUEST_TIMEOUT * 5).await {
        Ok(b) => b,
        Err(e) => return failed(&e),
    };
    let keys = match key {
        Some(k) => vec![k],
        None => match list_keys(&b.firm).await {
            Ok(k) => k,
            Err(e) => return failed(&e),
        },
    };
    let mut rows = Vec::new();
    for k in keys {
        let got = tokio::time::timeout(REQUEST_TIMEOUT * 2, async {
            let mut out = Vec::new();
            let mut h = b.firm.history(&k).await.map_err(|e| e.to_string())?;
            while let Some(e) = h.next().await {
                out.push(e.map_err(|e| e.to_string())?);
            }
            Ok::<_, String>(out)
        })
        .await;
        let entries = match got {
            Ok(Ok(e)) => e,
            Ok(Err(e)) => return failed(&format!("history of {k}: {e}")),
            Err(_) => return failed(&format!("history of {k}: NATS did not answer")),
        };
        for e in entries {
            let (record, problem) = match e.operation {
                Operation::Put => match FirmRecord::decode(&e.value) {
                    Ok(r) => {
                        let problem = (r.action == Action::Reset && r.signature.is_none())
                            .then(|| "UNSIGNED reset: relays hold KILL".to_string());
                        (Some(r), problem)
                    }
                    Err(why) => (None, Some(format!("unreadable: {why}"))),
                },
                op => (None, Some(format!("{op:?}: relays hold KILL"))),
            };
            rows.push(HistoryRow {
                revision: e.revision,
                key: e.key.clone(),
                created: e.created.to_string(),
                operation: format!("{:?}", e.operation),
                record,
                problem,
            });
        }
    }
    rows.sort_by_key(|r| r.revision);
    if json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&rows).expect("history serialises")
        );
        return ExitCode::from(exit::OK);
    }
    if rows.is_empty() {
        outln!("the firm history is empty: nothing was ever tripped");
    }
    outln!(
        "{:>6}  {:<27} {:<18} {:<6} {:<12} {:>4}  {:<36} reason",
        "rev",
        "when",
        "key",
        "action",
        "mode",
        "gen",
        "who"
    );
    for r in &rows {
        match &r.record {
            Some(rec) => outln!(
                "{:>6}  {:<27} {:<18} {:<6} {:<12} {:>4}  {:<36} {}{}",
                r.revision,
                format_wall(rec.when_ns),
                r.key,
                match rec.action {
                    Action::Trip => "TRIP",
                    Action::Reset => "RESET",
                },
                Mode::from(rec.mode).as_str(),
                rec.generation,
                rec.who,
                rec.reason,
                match (&r.problem, &rec.signer, rec.revision_seen) {
                    (Some(p), _, _) => format!("  [{p}]"),
                    (None, Some(s), Some(seen)) => format!("  [replaced rev {seen}; signed {s}]"),
                    _ => String::new(),
                }
            ),
            None => outln!(
                "{:>6}  {:<27} {:<18} {}",
                r.revision,
                r.created,
                r.key,
                r.problem.as_deref().unwrap_or("")
            ),
        }
    }
    ExitCode::from(exit::OK)
}
