//! What the relay writes out: the engines' acknowledgements to the bucket,
//! and its own health as Prometheus text for node_exporter's textfile
//! collector.

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream::kv::Store;
use killswitch::control::Mode;
use tokio::sync::{mpsc, watch};

use super::super::local::EngineAck;
use super::super::nats::REQUEST_TIMEOUT;
use super::super::view::ack_key;
use super::log;

/// The ack publisher (see the module docs).
pub(super) async fn publish_acks(
    host: String,
    mut rx: mpsc::UnboundedReceiver<EngineAck>,
    mut store: watch::Receiver<Option<Store>>,
) {
    let mut pending: BTreeMap<String, EngineAck> = BTreeMap::new();
    let mut last_error = String::new();
    loop {
        if pending.is_empty() {
            match rx.recv().await {
                Some(a) => {
                    pending.insert(ack_key(&a.host, &a.engine), a);
                }
                None => return,
            }
        }
        while let Ok(a) = rx.try_recv() {
            pending.insert(ack_key(&a.host, &a.engine), a);
        }
        let Some(s) = store.borrow().clone() else {
            if store.changed().await.is_err() {
                return;
            }
            continue;
        };
        let batch = std::mem::take(&mut pending);
        let puts = batch.iter().map(|(k, a)| {
            let s = s.clone();
            let body = bytes::Bytes::from(serde_json::to_vec(a).expect("an ack serialises"));
            async move { tokio::time::timeout(REQUEST_TIMEOUT, s.put(k, body)).await }
        });
        let results = futures_util::future::join_all(puts).await;
        let mut failed = None;
        for ((k, a), r) in batch.into_iter().zip(results) {
            let err = match r {
                Ok(Ok(_)) => continue,
                Ok(Err(e)) => e.to_string(),
                Err(_) => "NATS did not answer".to_string(),
            };
            failed = Some(err);
            pending.entry(k).or_insert(a);
        }
        match failed {
            Some(e) => {
                if e != last_error {
                    log(
                        &host,
                        &format!("cannot publish acknowledgements ({e}); retrying"),
                    );
                    last_error = e;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            None => last_error.clear(),
        }
    }
}

pub(super) struct Metrics<'a> {
    pub(super) host: &'a str,
    pub(super) connected: bool,
    pub(super) fresh: bool,
    pub(super) unreachable_s: f64,
    pub(super) alarm: bool,
    pub(super) firm_mode: Mode,
    pub(super) blocks: usize,
    pub(super) tripped: usize,
    pub(super) unconfirmed: usize,
    pub(super) trips_total: u64,
}

impl Metrics<'_> {
    /// Prometheus text format (node_exporter's textfile collector reads it),
    /// written to a temporary name and renamed so a scrape never sees half.
    pub(super) fn write(&self, path: &std::path::Path) -> std::io::Result<()> {
        let h = self.host.replace('\\', "\\\\").replace('"', "\\\"");
        let lines = [
            (
                "killswitch_relay_nats_connected",
                "1 when connected to a NATS server",
                self.connected as u8 as f64,
            ),
            (
                "killswitch_relay_firm_state_fresh",
                "1 when the firm state was read since the last reconnection",
                self.fresh as u8 as f64,
            ),
            (
                "killswitch_relay_nats_unreachable_seconds",
                "seconds without a fresh read of the firm state",
                self.unreachable_s,
            ),
            (
                "killswitch_relay_nats_unreachable_alarm",
                "1 when unreachable longer than --unreachable-after",
                self.alarm as u8 as f64,
            ),
            (
                "killswitch_relay_firm_mode",
                "mode the firm asks of this host: 0 normal, 1 reduce-only, 2 halt-new, 3 kill",
                self.firm_mode as u8 as f64,
            ),
            (
                "killswitch_relay_blocks",
                "control blocks relayed",
                self.blocks as f64,
            ),
            (
                "killswitch_relay_blocks_tripped",
                "blocks at or above the firm's mode",
                self.tripped as f64,
            ),
            (
                "killswitch_relay_blocks_unconfirmed",
                "engines whose last acknowledgement is not confirmed",
                self.unconfirmed as f64,
            ),
            (
                "killswitch_relay_trips_total",
                "trips this relay made (firm, re-trips, fail-closed)",
                self.trips_total as f64,
            ),
        ];
        let mut text = String::new();
        for (name, help, v) in lines {
            let kind = if name.ends_with("_total") {
                "counter"
            } else {
                "gauge"
            };
            text.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name}{{host=\"{h}\"}} {v}\n"
            ));
        }
        let tmp = path.with_extension("prom.tmp");
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, path)
    }
}
