//! The steps of [`Runtime::planned_shutdown`] that act on the runtime's
//! parts: cancel, flatten, reconcile, checkpoint, disconnect, verify.

use super::*;

impl Runtime {
    /// `venue/instrument/account` by name (the index where a name is missing).
    pub(super) fn position_name(&self, key: (ScopeIndex, ScopeIndex, ScopeIndex)) -> String {
        use crate::control::ScopeKind;
        let name = |kind, i: ScopeIndex| {
            self.block
                .name_at(kind, i)
                .unwrap_or_else(|| format!("#{i}"))
        };
        format!(
            "{}/{}/{}",
            name(ScopeKind::Venue, key.0),
            name(ScopeKind::Instrument, key.1),
            name(ScopeKind::Account, key.2)
        )
    }

    pub(super) fn live_strategies(&self) -> Vec<String> {
        let mut l = self.strategies.lock().unwrap_or_else(|p| p.into_inner());
        l.retain(|(_, alive)| alive.strong_count() > 0);
        l.iter()
            .map(|(n, _)| n.clone())
            .filter(|n| n != FLATTEN_STRATEGY)
            .collect()
    }

    pub(super) fn open_excluding(&self, kept: &[OrderId]) -> usize {
        if kept.is_empty() {
            self.registry.open_count()
        } else {
            self.registry.open_orders(|o| !kept.contains(&o.id)).len()
        }
    }

    /// Phase 5's cancels: every open order, or (option B without
    /// flattening) only the aggressive ones.
    pub(super) fn cancel_open(&self, run: &mut Run<'_>) {
        let Some(g) = &self.gateway else {
            run.report
                .warnings
                .push("no gateway: nothing cancelled".into());
            return;
        };
        let sender = g.order_sender();
        let mut open = self.registry.open_orders(|_| true);
        open.sort_unstable_by_key(|o| o.id);
        let option_b = run.plan.flatten == FlattenMode::None && run.plan.keep_passive;
        let mut mids: Vec<((ScopeIndex, ScopeIndex), Option<Price>)> = Vec::new();
        for o in open {
            if option_b {
                let k = (o.tags.venue, o.tags.instrument);
                let mid = match mids.iter().find(|(mk, _)| *mk == k) {
                    Some((_, m)) => *m,
                    None => {
                        let m = run.hooks.mid(k.0, k.1);
                        mids.push((k, m));
                        m
                    }
                };
                if !run
                    .plan
                    .aggressive
                    .is_aggressive(o.side, o.price, o.tags.strategy, mid)
                {
                    run.report.kept_passive.push(o.id);
                    continue;
                }
            }
            // The ring may be full (10,000 cancels against a 4,096 ring):
            // wait for the gateway to take some, without a deadline of its
            // own (the gateway turns in microseconds; its death is checked).
            loop {
                match sender.cancel(o.id, o.tags.strategy) {
                    Ok(()) => break,
                    Err(_) if g.check().is_ok() => std::thread::sleep(Duration::from_micros(20)),
                    Err(_) => {
                        run.report
                            .warnings
                            .push(format!("gateway gone: cancel of {} not sent", o.id));
                        break;
                    }
                }
            }
            run.report.cancelled.push(o.id);
        }
    }

    /// Phase 5's flattening; returns the time spent in configured waits.
    pub(super) fn flatten(&self, run: &mut Run<'_>, h: &mut StrategyHandle) -> Duration {
        let positions = self.registry.positions();
        let book_in: Vec<_> = positions
            .iter()
            .map(|(k, q)| (*k, *q, run.hooks.mid(k.0, k.1)))
            .collect();
        let mut book = FlattenBook::new(book_in);
        let cfg = run.plan.flatten_cfg.clone();
        let mut waited = Duration::ZERO;
        let stages: &[(FlattenKind, Duration)] = match run.plan.flatten {
            FlattenMode::Conservative => &[
                (FlattenKind::AtMid, cfg.conservative_wait),
                (FlattenKind::Market, cfg.market_wait),
            ],
            _ => &[(FlattenKind::Market, cfg.market_wait)],
        };
        for (n, &(kind, wait)) in stages.iter().enumerate() {
            if book.is_flat() || run.escalated {
                break;
            }
            if n > 0 {
                run.report.flatten_escalated = true;
            }
            for o in book.next_orders(kind, &cfg) {
                let intent = OrderIntent {
                    tags: ScopeTags {
                        venue: o.key.0,
                        strategy: h.strategy_index(),
                        instrument: o.key.1,
                        account: o.key.2,
                    },
                    side: o.side,
                    qty: o.qty,
                    price: o.price,
                    position: self.registry.account_position(o.key.0, o.key.1, o.key.2),
                };
                match h.submit(&intent) {
                    Ok(id) => {
                        book.sent(id, &o);
                    }
                    Err(e) => run
                        .report
                        .warnings
                        .push(format!("flatten order for {:?} not sent: {e}", o.key)),
                }
            }
            let w = Instant::now();
            let deadline = w + wait;
            while !book.is_flat() && Instant::now() < deadline && !run.tick() {
                drain_answers(h, &mut book);
            }
            drain_answers(h, &mut book);
            // The wait is over: cancel what still works, and let the
            // cancels come back (bounded by the same wait again).
            let outstanding = book.outstanding_ids();
            for &id in &outstanding {
                let _ = h.cancel(id);
            }
            let deadline = Instant::now() + wait;
            while !book.outstanding_ids().is_empty() && Instant::now() < deadline && !run.tick() {
                drain_answers(h, &mut book);
            }
            drain_answers(h, &mut book);
            waited += w.elapsed();
        }
        run.report.flatten_results = book.results();
        run.report.slippage = book.slippage();
        run.report.loss_alert = cfg.loss_alert.is_some_and(|l| book.slippage() > l);
        waited
    }

    /// Phase 7: the venues' positions against the registry's.
    pub(super) fn reconcile_positions(&self, run: &mut Run<'_>) -> (Vec<ReconcileRow>, Duration) {
        let w = Instant::now();
        let Some(g) = &self.gateway else {
            return (Vec::new(), Duration::ZERO);
        };
        if let Err(e) = g.request_positions() {
            run.report
                .warnings
                .push(format!("position request not sent: {e}"));
        }
        let deadline = Instant::now() + run.plan.reconcile_wait;
        let venues = g.venue_indices();
        let done = |reports: &[crate::gateway::PositionReport]| {
            venues.iter().all(|v| {
                reports
                    .iter()
                    .any(|r| r.venue == *v && (r.complete || r.error.is_some()))
            })
        };
        let mut reports = g.position_reports();
        while !done(&reports) && Instant::now() < deadline && !run.tick() {
            reports = g.position_reports();
        }
        let answers: Vec<(ScopeIndex, VenueAnswer)> = venues
            .iter()
            .map(|&v| {
                let a = match reports.iter().find(|r| r.venue == v) {
                    Some(r) if r.complete => VenueAnswer::Positions(r.rows.clone()),
                    Some(r) => VenueAnswer::NoAnswer(
                        r.error
                            .clone()
                            .unwrap_or_else(|| "no complete report before the wait ended".into()),
                    ),
                    None => {
                        VenueAnswer::NoAnswer("not asked (gateway did not take the request)".into())
                    }
                };
                if let VenueAnswer::NoAnswer(why) = &a {
                    let name = self
                        .block
                        .name_at(crate::control::ScopeKind::Venue, v)
                        .unwrap_or_else(|| v.to_string());
                    run.report
                        .warnings
                        .push(format!("venue {name}: no position report ({why})"));
                }
                (v, a)
            })
            .collect();
        (reconcile(&self.registry.positions(), &answers), w.elapsed())
    }

    /// Phase 8: the complete checkpoint, verified.
    pub(super) fn complete_checkpoint(&self, run: &mut Run<'_>) -> (PhaseResult, String) {
        let Some(dir) = run.plan.checkpoint_dir.clone() else {
            return (
                PhaseResult::Skipped,
                "no checkpoint directory configured".into(),
            );
        };
        let state = match &self.journal {
            Some(j) => match j.lock() {
                Ok(j) => j.mirror.clone(),
                Err(_) => {
                    run.report.outcome |= words::OUTCOME_CHECKPOINT_PROBLEM;
                    return (
                        PhaseResult::Failed("journal mutex poisoned".into()),
                        String::new(),
                    );
                }
            },
            None => crate::journal::TradingState::default(),
        };
        let extras = run.hooks.checkpoint_extras();
        let contents = CheckpointContents {
            state,
            config: extras
                .config
                .iter()
                .map(|(n, b)| (n.as_str(), b.as_slice()))
                .collect(),
            strategies: extras
                .strategies
                .iter()
                .map(|(n, b)| (n.as_str(), b.as_slice()))
                .collect(),
            market_data: None,
            log_tail: &extras.log_tail,
            journal_last_seq: self.journal_last_seq(),
            created_wall_ns: 0,
        };
        let target = CheckpointTarget {
            alternate_dir: run.plan.checkpoint_alternate_dir.clone(),
            ..CheckpointTarget::in_dir(dir)
        };
        match checkpoint::write_complete(&contents, &target) {
            Ok(w) => {
                let alternate_because = w
                    .fallback
                    .as_ref()
                    .map(|f| format!("{}: {}", f.primary.display(), f.error));
                let info = CheckpointInfo {
                    path: w.path.clone(),
                    crc64: w.file_crc64,
                    bytes: w.bytes,
                    verified: w.verified,
                    alternate_because: alternate_because.clone(),
                };
                run.report.checkpoint = Some(info);
                run.report.warnings.extend(w.warnings.iter().cloned());
                let detail = format!(
                    "{} ({} bytes, CRC64 0x{:016x}, {})",
                    w.path.display(),
                    w.bytes,
                    w.file_crc64,
                    if w.verified {
                        "verified OK"
                    } else {
                        "not verified"
                    }
                );
                match alternate_because {
                    Some(why) => {
                        run.report.outcome |= words::OUTCOME_CHECKPOINT_PROBLEM;
                        (
                            PhaseResult::Warning(format!(
                                "primary checkpoint directory failed ({why}): written to the alternate path"
                            )),
                            detail,
                        )
                    }
                    None => (PhaseResult::Done, detail),
                }
            }
            Err(e) => {
                run.report.outcome |= words::OUTCOME_CHECKPOINT_PROBLEM;
                (
                    PhaseResult::Failed(e.to_string()),
                    "checkpoint NOT saved".into(),
                )
            }
        }
    }

    /// Phase 10: log out of every session (explicit cancels went out in 5).
    pub(super) fn disconnect_venues(&self, run: &mut Run<'_>) -> (PhaseResult, String) {
        let Some(g) = &self.gateway else {
            return (PhaseResult::Skipped, "no gateway".into());
        };
        if let Err(e) = g.logout_all() {
            return (
                PhaseResult::Failed(format!("logout not sent: {e}")),
                String::new(),
            );
        }
        let venues = g.venue_indices();
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut reports = g.position_reports();
        let all_out = |r: &[crate::gateway::PositionReport]| {
            venues.iter().all(|v| {
                r.iter()
                    .any(|x| x.venue == *v && (x.logged_out || x.error.is_some()))
            })
        };
        while !all_out(&reports) && Instant::now() < deadline && !run.tick() {
            reports = g.position_reports();
        }
        let names: Vec<String> = venues
            .iter()
            .map(|&v| {
                let name = self
                    .block
                    .name_at(crate::control::ScopeKind::Venue, v)
                    .unwrap_or_else(|| v.to_string());
                let out = reports.iter().any(|x| x.venue == v && x.logged_out);
                format!(
                    "{name} {}",
                    if out { "logged out" } else { "NOT logged out" }
                )
            })
            .collect();
        if names.iter().any(|n| n.ends_with("NOT logged out")) {
            (
                PhaseResult::Warning("a venue did not confirm its logout".into()),
                names.join(", "),
            )
        } else {
            (PhaseResult::Done, names.join(", "))
        }
    }

    /// Phase 12.
    pub(super) fn verify(&self, run: &Run<'_>) -> (PhaseResult, String) {
        let mut problems = Vec::new();
        let open = self.registry.open_orders(|o| {
            !run.report.kept_passive.contains(&o.id)
                && !matches!(o.state, crate::order::OrderState::CancelUnknown)
        });
        if !open.is_empty() {
            problems.push(format!("{} order(s) still open", open.len()));
        }
        if let Some(c) = &run.report.checkpoint {
            if let Err(e) = checkpoint::validate(&c.path) {
                problems.push(format!("checkpoint invalid: {e}"));
            }
        }
        if let Some(c) = run.report.components.iter().find(|c| !c.graceful) {
            problems.push(format!("component {} was forced", c.name));
        }
        let detail = format!(
            "open orders {}, checkpoint {}, components {}",
            open.len(),
            match &run.report.checkpoint {
                Some(_) => "valid",
                None => "none",
            },
            run.report.components.len()
        );
        if problems.is_empty() {
            (PhaseResult::Done, detail)
        } else {
            (PhaseResult::Warning(problems.join("; ")), detail)
        }
    }

    /// P&L of the run at the mids: the journal's cash plus position × mid.
    pub(super) fn pnl_at_mids(&self, hooks: &mut dyn ShutdownHooks) -> Option<i64> {
        let j = self.journal.as_ref()?;
        let positions: Vec<_> = j
            .lock()
            .ok()?
            .mirror
            .positions
            .clone()
            .into_iter()
            .collect();
        let mut total: i128 = 0;
        for (k, p) in positions {
            let mark = if p.qty.0 == 0 {
                Price(0)
            } else {
                hooks.mid(k.venue, k.instrument)?
            };
            total += p.cash + i128::from(p.qty.0) * i128::from(mark.0);
        }
        Some((total / i128::from(crate::order::QTY_SCALE)) as i64)
    }
}

pub(super) fn drain_answers(h: &mut StrategyHandle, book: &mut FlattenBook) {
    while let Ok(Some(a)) = h.try_answer() {
        match a {
            Answer::Filled { id, qty, price, .. } => book.filled(id, qty, price),
            Answer::Canceled { id }
            | Answer::Rejected { id, .. }
            | Answer::Refused { id, .. }
            | Answer::CancelUnknown { id } => book.closed(id),
            _ => {}
        }
    }
}

pub(super) fn ids(v: &[OrderId]) -> String {
    let mut s: Vec<String> = v.iter().take(20).map(|i| i.to_string()).collect();
    if v.len() > 20 {
        s.push(format!("… and {} more", v.len() - 20));
    }
    s.join(" ")
}
