//! Following a drain's orders to the end: answers, re-sends at half the
//! deadline, "force cancel local" at the deadline, and, all along, newer
//! kill generations taken in (after the gateway's acknowledgement of them)
//! and a late acknowledgement published without giving up.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::kill_in_force;
use super::report::{DrainError, DrainOutcome, UnknownOrder, UnknownReason};
use super::run::{set, Awaiting, Drainer, Run};
use crate::backoff::{Backoff, BackoffConfig};
use crate::clock::mono_ns;
use crate::control::layout::{DRAIN_FLAG_ACK_LATE, DRAIN_FLAG_ESCALATED};
use crate::control::{DrainPhase, StateWord};
use crate::gateway::CancelRequest;
use crate::order::OrderState;

impl Drainer {
    /// Follows the answers until every batch is resolved (terminal, or
    /// `CancelUnknown` at its deadline) and no generation waits for the
    /// gateway; takes in newer kill generations on the way.
    pub(super) fn track(&mut self, run: &mut Run, out: &mut DrainOutcome) {
        let block = self.block.clone();
        let ds = block.drain_status();
        let state = block.state_atomic();
        let acked = &block.gateway_status().acked_generation;
        let mut b = Backoff::new(BackoffConfig {
            spins: 64,
            yields: 16,
            max_sleep: Duration::from_micros(50),
        });
        let mut ack_b = Backoff::new(BackoffConfig::busy());
        let mut push_b = Backoff::new(BackoffConfig::busy());
        let mut seen_closed = None;
        let mut seen_generation = out.last_generation;
        loop {
            // Answers: rescan (under the lock) only when some order closed.
            let closed = self.link.registry.closed_count();
            if seen_closed != Some(closed) && !run.batches.is_empty() {
                seen_closed = Some(closed);
                let before: usize = run.batches.iter().map(|b| b.pending.len()).sum();
                self.link.registry.read(|view| {
                    for batch in &mut run.batches {
                        batch
                            .pending
                            .retain(|id| match view.get(*id).map(|r| r.state) {
                                Some(s) if s.is_open() => true,
                                s => {
                                    out.record_final(*id, s);
                                    false
                                }
                            });
                    }
                });
                let after: usize = run.batches.iter().map(|b| b.pending.len()).sum();
                if after != before {
                    out.timings.t_last_ack = mono_ns();
                    set(&ds.orders_confirmed, out.confirmed() as u64);
                    set(&ds.t_last_ack, out.timings.t_last_ack);
                    if run.record.is_some() {
                        set(&ds.incomplete_confirmed, out.confirmed() as u64);
                    }
                    b.reset();
                }
            }

            // A newer generation that puts KILL on something: take it in.
            if run.watch_word {
                let w = StateWord(state.load(Ordering::Acquire));
                if w.generation() > seen_generation {
                    seen_generation = w.generation();
                    out.last_generation = seen_generation;
                    if kill_in_force(&block, w) {
                        let t_seen = mono_ns();
                        // The status follows the newest generation (what
                        // `emergency` waits for); the counts add up.
                        set(&ds.generation, w.generation());
                        set(&ds.t_trip_seen, t_seen);
                        if run.kill.is_some() {
                            set(
                                &ds.flags,
                                ds.flags.load(Ordering::Acquire) | DRAIN_FLAG_ESCALATED,
                            );
                            set(&ds.t_gateway_ack, 0);
                            set(&ds.t_first_cancel, 0);
                            set(&ds.phase, DrainPhase::AwaitingGatewayAck as u64);
                        }
                        // A newer acknowledgement covers an older one.
                        run.awaiting = Some(Awaiting {
                            w,
                            t_seen,
                            since: Instant::now(),
                            late: run.awaiting.as_ref().is_some_and(|a| a.late),
                            senders: self.quiesce_senders(),
                        });
                    }
                }
            }
            if let Some(mut a) = run.awaiting.take() {
                if a.is_acknowledged(acked.load(Ordering::Acquire)) {
                    out.senders_waited_for += a.senders.as_ref().map_or(0, |q| q.found);
                    self.take(run, &a, out);
                    b.reset();
                    continue;
                }
                if self.stop.load(Ordering::Acquire) {
                    // The engine is shutting down: give up this generation
                    // (reported; the record stays set).
                    out.error.get_or_insert(DrainError::StoppedBeforeAck {
                        generation: a.w.generation(),
                    });
                } else {
                    if !a.late && a.since.elapsed() >= self.cfg.gateway_ack_deadline {
                        // Publish the failure so an operator or `emergency`
                        // escalates, and keep waiting.
                        a.late = true;
                        set(
                            &ds.flags,
                            ds.flags.load(Ordering::Acquire) | DRAIN_FLAG_ACK_LATE,
                        );
                        set(&ds.phase, DrainPhase::GatewayAckLate as u64);
                        out.error.get_or_insert(DrainError::GatewayAckLate {
                            generation: a.w.generation(),
                            deadline: self.cfg.gateway_ack_deadline,
                            acked_after: None,
                        });
                    }
                    run.awaiting = Some(a);
                }
            }

            let pending = run.batches.iter().any(|b| !b.pending.is_empty());
            if !pending && run.awaiting.is_none() {
                return;
            }

            let now = if run.batches.is_empty() {
                None
            } else {
                Some(Instant::now())
            };
            for i in 0..run.batches.len() {
                let Some(now) = now else { break };
                let batch = &mut run.batches[i];
                if batch.pending.is_empty() {
                    continue;
                }
                if !batch.resent && now >= batch.half && now < batch.deadline {
                    batch.resent = true;
                    let deadline = batch.deadline;
                    for id in &batch.pending {
                        if self
                            .link
                            .cancels
                            .push_until(CancelRequest::Cancel(*id), deadline, &mut push_b)
                            .is_ok()
                        {
                            out.resent += 1;
                            out.cancel_requests += 1;
                        }
                    }
                    set(&ds.cancels_sent, out.cancel_requests);
                }
                if now >= batch.deadline {
                    self.expire(i, run, out);
                }
            }
            if run.awaiting.is_some() {
                ack_b.snooze();
            } else {
                b.snooze();
            }
        }
    }

    /// The deadline of batch `i` passed: "force cancel local" of what is
    /// still open.
    fn expire(&mut self, i: usize, run: &mut Run, out: &mut DrainOutcome) {
        let ds = self.block.drain_status();
        let batch = &mut run.batches[i];
        let mut unknown = 0u64;
        for id in std::mem::take(&mut batch.pending) {
            match self.link.registry.force_cancel_unknown(id) {
                Some(before) => {
                    let venue = batch
                        .snapshot
                        .iter()
                        .find(|o| o.id == id)
                        .map_or(0, |o| o.tags.venue);
                    let reason = if batch.not_sent.contains(&id) {
                        UnknownReason::CancelNotEnqueued
                    } else if before == OrderState::PendingCancel {
                        UnknownReason::NoAnswer
                    } else {
                        UnknownReason::CancelRefused
                    };
                    out.unknown.push(UnknownOrder {
                        id,
                        venue,
                        state_before: before,
                        reason,
                    });
                    unknown += 1;
                }
                // It resolved between the last poll and now.
                None => out.record_final(id, self.link.registry.get(id).map(|r| r.state)),
            }
        }
        out.timings.t_last_ack = mono_ns();
        set(&ds.t_last_ack, out.timings.t_last_ack);
        set(&ds.orders_confirmed, out.confirmed() as u64);
        ds.orders_unknown.fetch_add(unknown, Ordering::AcqRel);
        if let Some(rec) = run.record.as_mut() {
            rec.confirmed = out.confirmed() as u64;
            rec.unknown = out.unknown.len() as u64;
            self.block.record_drain_incomplete(rec);
        }
    }
}
