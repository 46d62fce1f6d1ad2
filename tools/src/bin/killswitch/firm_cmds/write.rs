//! The commands that write the firm bucket: trip, reset (signed by the risk
//! role), and keygen for that role's key.

use super::*;

pub(super) async fn trip(
    client: &async_nats::Client,
    nats: &NatsArgs,
    reason: &str,
    mode: Mode,
    key: &KeyArgs,
    timeout: Duration,
) -> ExitCode {
    if reason.trim().is_empty() {
        return ExitCode::from(usage("--reason is empty: say why"));
    }
    let (key, scope) = match key.key() {
        Ok(k) => k,
        Err(e) => return ExitCode::from(usage(&e)),
    };
    let deadline = Instant::now() + timeout;
    let b = match open_retrying(client, nats, true, deadline).await {
        Ok(b) => b,
        Err(e) => return failed(&e),
    };
    let id = write_id();
    let mut last_error = String::new();
    loop {
        if Instant::now() >= deadline {
            return failed(&format!(
                "the trip of {key} was not stored within {timeout:?}: {last_error}; trip hosts locally with `killswitch trip`"
            ));
        }
        let current = match latest(&b, &key).await {
            Ok(c) => c,
            Err(e) => {
                last_error = e;
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let prev = current.as_ref().and_then(record_of);
        if let (Some(e), Some(p)) = (&current, &prev) {
            if p.write_id == id {
                // Stored on an earlier attempt whose answer was lost.
                print_trip(&key, &scope, e.revision, p);
                return ExitCode::from(exit::OK);
            }
        }
        let prev_mode = prev
            .as_ref()
            .filter(|p| p.action == Action::Trip)
            .map(|p| Mode::from(p.mode))
            .unwrap_or(Mode::Normal);
        let record = FirmRecord {
            v: RECORD_VERSION,
            key: key.clone(),
            action: Action::Trip,
            mode: FirmMode::from(prev_mode.max(mode)),
            generation: prev.as_ref().map(|p| p.generation).unwrap_or(0) + 1,
            reason: reason.to_string(),
            who: who(),
            when_ns: wall_ns(),
            write_id: id.clone(),
            revision_seen: None,
            signer: None,
            signature: None,
        };
        let body = Bytes::from(record.encode());
        let put = match &current {
            None => tokio::time::timeout(REQUEST_TIMEOUT, b.firm.create(&key, body))
                .await
                .map(|r| {
                    r.map_err(|e| (e.kind() == CreateErrorKind::AlreadyExists, e.to_string()))
                }),
            Some(e) => tokio::time::timeout(REQUEST_TIMEOUT, b.firm.update(&key, body, e.revision))
                .await
                .map(|r| {
                    r.map_err(|e| {
                        (
                            e.kind() == UpdateErrorKind::WrongLastRevision,
                            e.to_string(),
                        )
                    })
                }),
        };
        match put {
            Ok(Ok(revision)) => {
                print_trip(&key, &scope, revision, &record);
                return ExitCode::from(exit::OK);
            }
            // Someone wrote the key meanwhile: read again and escalate from there.
            Ok(Err((true, _))) => continue,
            Ok(Err((false, e))) => last_error = e,
            Err(_) => last_error = "NATS did not answer".into(),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn print_trip(key: &str, scope: &str, revision: u64, r: &FirmRecord) {
    outln!(
        "FIRM TRIP {} on key {key} ({scope}): revision {revision}, generation {}",
        Mode::from(r.mode).as_str().to_uppercase(),
        r.generation
    );
    outln!("  reason \"{}\" by {}", r.reason, r.who);
    outln!("  every relay trips its control blocks now; follow with `killswitch firm status`");
}

/// Loads the risk role's key pair, refusing a file others could read.
fn load_risk_key(path: &Path) -> Result<nkeys::KeyPair, String> {
    use std::os::unix::fs::MetadataExt;
    let meta =
        std::fs::metadata(path).map_err(|e| format!("--risk-creds {}: {e}", path.display()))?;
    let uid = nix::unistd::getuid().as_raw();
    if meta.uid() != uid {
        return Err(format!(
            "--risk-creds {}: owned by uid {}, not by you (uid {uid}): refused",
            path.display(),
            meta.uid()
        ));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(format!(
            "--risk-creds {}: mode {:o} lets others read the risk key: `chmod 600` it",
            path.display(),
            meta.mode() & 0o777
        ));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("--risk-creds {}: {e}", path.display()))?;
    nkeys::KeyPair::from_seed(text.trim()).map_err(|e| {
        format!(
            "--risk-creds {}: not an nkey seed ({e}); make one with `killswitch firm keygen`",
            path.display()
        )
    })
}

pub(super) async fn reset(client: &async_nats::Client, nats: &NatsArgs, r: ResetArgs) -> ExitCode {
    let ResetArgs {
        confirm,
        revision,
        reason,
        key,
        risk_creds,
        timeout,
    } = r;
    let (key, scope) = match key.key() {
        Ok(k) => k,
        Err(e) => return ExitCode::from(usage(&e)),
    };
    if !confirm {
        return refused(&format!(
            "a firm reset lets {scope} trade again; rerun with --confirm --revision {revision} --reason \"...\""
        ));
    }
    let Some(reason) = reason.filter(|r| !r.trim().is_empty()) else {
        return refused("a reset must say why: add --reason \"...\"");
    };
    let Some(creds) = risk_creds else {
        return refused(&format!(
            "a firm reset needs the risk role: --risk-creds FILE (or {RISK_CREDS_ENV}), a key made by `killswitch firm keygen` whose public key the relays trust"
        ));
    };
    let risk = match load_risk_key(&creds) {
        Ok(k) => k,
        Err(e) => return refused(&e),
    };
    let deadline = Instant::now() + timeout;
    let b = match open_retrying(client, nats, false, deadline).await {
        Ok(b) => b,
        Err(e) => return failed(&e),
    };
    let id = write_id();
    let mut last_error = String::new();
    loop {
        if Instant::now() >= deadline {
            return failed(&format!(
                "the reset of {key} was not stored within {timeout:?}: {last_error}"
            ));
        }
        let current = match latest(&b, &key).await {
            Ok(c) => c,
            Err(e) => {
                last_error = e;
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(cur) = current else {
            return refused(&format!("key {key} was never tripped: nothing to reset"));
        };
        let prev = record_of(&cur);
        if let Some(p) = prev.as_ref().filter(|p| p.write_id == id) {
            print_reset(&key, &scope, revision, cur.revision, p);
            return ExitCode::from(exit::OK);
        }
        if cur.revision != revision {
            let what = prev
                .as_ref()
                .map(|p| {
                    format!(
                        "{} ({} by {}: \"{}\")",
                        Mode::from(p.mode).as_str().to_uppercase(),
                        match p.action {
                            Action::Trip => "tripped",
                            Action::Reset => "reset",
                        },
                        p.who,
                        p.reason
                    )
                })
                .unwrap_or_else(|| "an unreadable or deleted value".into());
            return refused(&format!(
                "revision {revision} is stale: key {key} is now at revision {}: {what}. Look with `killswitch firm status`, then reset with --revision {} if you still mean it",
                cur.revision, cur.revision
            ));
        }
        if prev
            .as_ref()
            .is_some_and(|p| p.action == Action::Reset && p.mode == FirmMode::Normal)
        {
            outln!("key {key} is not tripped (revision {revision} is a reset); nothing to do");
            return ExitCode::from(exit::OK);
        }
        let mut record = FirmRecord {
            v: RECORD_VERSION,
            key: key.clone(),
            action: Action::Reset,
            mode: FirmMode::Normal,
            generation: prev.as_ref().map(|p| p.generation).unwrap_or(0) + 1,
            reason: reason.clone(),
            who: who(),
            when_ns: wall_ns(),
            write_id: id.clone(),
            revision_seen: Some(revision),
            signer: None,
            signature: None,
        };
        if let Err(e) = record.sign(&nats.bucket, &risk) {
            return failed(&e);
        }
        let put = tokio::time::timeout(
            REQUEST_TIMEOUT,
            b.firm.update(&key, Bytes::from(record.encode()), revision),
        )
        .await;
        match put {
            Ok(Ok(new_revision)) => {
                print_reset(&key, &scope, revision, new_revision, &record);
                return ExitCode::from(exit::OK);
            }
            // Changed between our read and our write: the next read says how.
            Ok(Err(e)) if e.kind() == UpdateErrorKind::WrongLastRevision => continue,
            Ok(Err(e)) => last_error = e.to_string(),
            Err(_) => last_error = "NATS did not answer".into(),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn print_reset(key: &str, scope: &str, seen: u64, revision: u64, r: &FirmRecord) {
    outln!(
        "FIRM RESET of key {key} ({scope}): revision {seen} -> {revision}, generation {}, signed by risk key {}",
        r.generation,
        r.signer.as_deref().unwrap_or("?")
    );
    outln!("  reason \"{}\" by {}", r.reason, r.who);
    outln!("  relays that trust this key release the blocks only the firm tripped; blocks tripped locally stay latched (see `killswitch firm status`)");
}

pub(super) fn keygen(out: &Path) -> ExitCode {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let pair = nkeys::KeyPair::new_user();
    let seed = match pair.seed() {
        Ok(s) => s,
        Err(e) => return failed(&format!("cannot make a key: {e}")),
    };
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(out)
        .and_then(|mut f| {
            f.write_all(format!("{seed}\n").as_bytes())
                .and(f.sync_all())
        });
    if let Err(e) = written {
        return failed(&format!("--out {}: {e} (it must not exist)", out.display()));
    }
    outln!("{}", pair.public_key());
    eprintln!(
        "risk key written to {} (mode 0600): keep it with the risk role only. Give the public key above to every relay (--risk-key or --risk-keys-file).",
        out.display()
    );
    ExitCode::from(exit::OK)
}
