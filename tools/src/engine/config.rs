//! The reference engine's configuration: a TOML file whose every key has a
//! default, so `ks-engine` runs with no file at all.
//!
//! ```toml
//! name = "engine"                 # control block killswitch.<name>
//! journal_dir = "ks-journal"
//! trade_for_ms = 0                # 0: until stopped; else trip KILL after this long
//!
//! [drain]
//! cancel_deadline_ms = 5000       # emergency default; the runbook waits 60 s when planned
//!
//! [[venues]]
//! name = "SIM-A"
//! instruments = ["BTC/USD", "ETH/USD"]
//! connect = "127.0.0.1:9001"     # over FIX to a ks-venue venue; omit for the in-process simulator
//! dead_man_ms = 60000             # over the wire: the venue's cancel-all timer, refreshed every 15 s
//!
//! [[strategies]]
//! name = "mm_btc"
//! kind = "market-making"
//! venue = "SIM-A"
//! instrument = "BTC/USD"
//! open_orders = 2500
//! ```

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use super::risk_config::{LimitsSection, RulesSection};

/// Whole configuration.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineConfig {
    /// Engine name: the control block is `<control_dir>/killswitch.<name>`.
    pub name: String,
    /// Control-block directory; default `$KILLSWITCH_DIR` or `/dev/shm`.
    pub control_dir: Option<PathBuf>,
    /// A group (name or number) allowed to share the control file and the
    /// journal directory (modes 0660 / 0770 with that group); none:
    /// owner-only (0600 / 0700), and anything else is refused.
    pub control_group: Option<String>,
    /// Journal directory.
    pub journal_dir: PathBuf,
    /// Where to write the JSON report at exit (none: not written).
    pub report_path: Option<PathBuf>,
    /// Trip KILL by itself after this long (0: run until stopped).
    pub trade_for_ms: u64,
    /// Core for the gateway thread.
    pub gateway_core: Option<usize>,
    /// Core for the drain thread.
    pub drain_core: Option<usize>,
    /// `SCHED_FIFO` priority (1..=99) for the gateway and drain threads;
    /// none: normal scheduling. Refused at start, with what the host needs,
    /// where the system does not allow it.
    pub realtime_priority: Option<u8>,
    /// Heartbeat period of the main loop, µs.
    pub heartbeat_us: u64,
    /// Hold the active role as a lease with this time to live, ms
    /// (`killswitch::control::lease`): a second engine on the block waits
    /// for it, and a fenced engine writes nothing more. 0: no lease.
    pub lease_ttl_ms: u64,
    /// Drain settings.
    pub drain: DrainSection,
    /// Simulated venues.
    pub venues: Vec<VenueSection>,
    /// Strategies.
    pub strategies: Vec<StrategySection>,
    /// Pre-trade limits (see `risk_config`).
    pub limits: LimitsSection,
    /// Automatic trips (see `risk_config`).
    pub rules: RulesSection,
    /// The planned shutdown (`killswitch shutdown`, SIGTERM).
    pub shutdown: ShutdownSection,
    /// What the active does after handing over (`killswitch failover`).
    pub failover: FailoverSection,
}

/// `[shutdown]`: the planned shutdown's settings (a `killswitch shutdown`
/// request overrides `flatten`, `keep_passive` and `reduce_limits_pct`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShutdownSection {
    /// Flattening on SIGTERM: `none`, `conservative` or `aggressive`.
    pub flatten: String,
    /// Keep passive orders (cancel only aggressive ones) when not flattening.
    pub keep_passive: bool,
    /// Reduce position limits by this percentage on SIGTERM (none: skip).
    pub reduce_limits_pct: Option<u8>,
    /// An order within this many ticks of the mid (or through it) is aggressive.
    pub aggressive_within_ticks: i64,
    /// Base position limit, lots (none: the largest position when reducing).
    pub position_limit_lots: Option<i64>,
    /// Conservative flattening: how long the limit-at-mid orders work.
    pub conservative_wait_ms: u64,
    /// How long the market orders work before what remains is reported.
    pub market_wait_ms: u64,
    /// How far through the mid a "market" order is priced, bps.
    pub market_collar_bps: u32,
    /// Alert when the flattening slippage exceeds this (currency units).
    pub loss_alert: Option<f64>,
    /// Wait for orders (runbook step 6), ms.
    pub order_wait_ms: u64,
    /// Wait for the venues' position reports, ms.
    pub reconcile_wait_ms: u64,
    /// Each service's graceful stop, ms.
    pub component_timeout_ms: u64,
    /// Complete checkpoint directory (none: `<journal_dir>-checkpoints`,
    /// beside the journal).
    pub checkpoint_dir: Option<PathBuf>,
    /// Where the checkpoint goes when the primary directory fails (full,
    /// unwritable); none: the system temp directory (`$TMPDIR`, else `/tmp`).
    pub alternate_checkpoint_dir: Option<PathBuf>,
    /// A command run (through `sh -c`) on announcement and completion, the
    /// event as one JSON line on its standard input.
    pub notify_command: Option<String>,
    /// Fault injection: the engine's risk service ignores its stop (the
    /// runbook's "Process Not Stopping"): forced after its timeout.
    pub risk_service_ignores_stop: bool,
    /// What the first SIGTERM does: `true` (default) runs the planned
    /// shutdown (a second SIGTERM escalates to KILL); `false` trips KILL at
    /// once, the emergency drain (`killswitch drill --method sigterm` and
    /// the latency tool's SIGTERM baseline measure that path).
    pub sigterm_planned: bool,
}

impl Default for ShutdownSection {
    fn default() -> Self {
        ShutdownSection {
            flatten: "none".into(),
            keep_passive: false,
            reduce_limits_pct: None,
            aggressive_within_ticks: 0,
            position_limit_lots: None,
            conservative_wait_ms: 5000,
            market_wait_ms: 5000,
            market_collar_bps: 500,
            loss_alert: None,
            order_wait_ms: 60_000,
            reconcile_wait_ms: 5000,
            component_timeout_ms: 30_000,
            checkpoint_dir: None,
            alternate_checkpoint_dir: None,
            notify_command: None,
            risk_service_ignores_stop: false,
            sigterm_planned: true,
        }
    }
}

/// `[failover]`: what an active engine does once it has handed its
/// sessions and the lease over to its hot standby.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FailoverSection {
    /// After a clean hand-over, wait until the standby holds the newer
    /// epoch, then re-execute this engine (same binary path, same
    /// arguments, plus `--standby`, same pid) as the hot standby of the new
    /// active, so that `killswitch failback` needs no manual restart.
    /// `false`: exit 0 ("handed over ... restart this engine with
    /// --standby") and leave the restart to the operator or supervisor.
    pub restart_as_standby: bool,
    /// How long the handed-over engine waits for its successor to take the
    /// lease before restarting as its standby, ms. Not taken by then (the
    /// standby died or hangs): it does not restart, exits 1 and says so.
    pub takeover_wait_ms: u64,
}

impl Default for FailoverSection {
    fn default() -> Self {
        FailoverSection {
            restart_as_standby: true,
            takeover_wait_ms: 60_000,
        }
    }
}

/// `[drain]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DrainSection {
    /// Cancel answers are awaited this long before `CancelUnknown`.
    pub cancel_deadline_ms: u64,
    /// The gateway must acknowledge a kill within this.
    pub gateway_ack_deadline_ms: u64,
    /// Use venue mass cancel where offered.
    pub mass_cancel: bool,
    /// Fault injection for tests: the quick-checkpoint hook panics, which
    /// kills the drain thread (the engine must notice, trip, report and
    /// exit non-zero).
    pub inject_checkpoint_panic: bool,
}

impl Default for DrainSection {
    fn default() -> Self {
        DrainSection {
            cancel_deadline_ms: 5000,
            gateway_ack_deadline_ms: 1000,
            mass_cancel: true,
            inject_checkpoint_panic: false,
        }
    }
}

/// `[[venues]]`: one venue. With `connect` it is a FIX 4.4 session to a
/// venue in another process (`ks-venue`, see [`crate::fix::client`]): the
/// fault knobs of the in-process simulator (`ack_latency_us`, `reject_ppm`,
/// `ignore_cancels`, `drop_cancel_ack_ppm`, `disconnect_after_ms`,
/// `hang_after_ms`, `flow_interval_us`, `seed`) are then the venue's own
/// (its flags) and setting one here is refused. Without `connect` it is the
/// in-process simulated exchange and the `wire` keys do not apply.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VenueSection {
    /// Venue name (a scope name).
    pub name: String,
    /// Instruments listed (scope names).
    pub instruments: Vec<String>,
    /// Seed of the synthetic flow.
    pub seed: u64,
    /// Offers mass cancel.
    pub mass_cancel: bool,
    /// Answer latency, µs.
    pub ack_latency_us: u64,
    /// Rejects new orders at this rate, ppm.
    pub reject_ppm: u32,
    /// Ignores every cancel (stuck cancels).
    pub ignore_cancels: bool,
    /// Drops cancel acknowledgements at this rate, ppm.
    pub drop_cancel_ack_ppm: u32,
    /// Cancels our orders when the session drops.
    pub cancel_on_disconnect: bool,
    /// Drops the session after this many ms of trading.
    pub disconnect_after_ms: Option<u64>,
    /// Every write to the session blocks forever after this many ms (a
    /// gateway stuck in a blocking write).
    pub hang_after_ms: Option<u64>,
    /// The other participants withdraw their liquidity after this many ms
    /// of trading: their resting orders are pulled and the synthetic flow
    /// stops, so nothing of ours fills any more (the runbook's "positions
    /// not flattening"; over the wire: `ks-venue --withdraw-liquidity-after-ms`).
    pub withdraw_liquidity_after_ms: Option<u64>,
    /// Lots of the venue's first instrument that the venue books for the
    /// first strategy's account at start without telling the engine (a
    /// trade it never saw: a lost fill report, a bust, an adjustment by the
    /// venue). 0: none. The planned shutdown's reconciliation must find it.
    pub unreported_position_lots: i64,
    /// One participant order every this many µs (0: no synthetic flow).
    pub flow_interval_us: u64,
    /// Over the wire: the venue's address (`127.0.0.1:9001`); none: the
    /// in-process simulator.
    pub connect: Option<String>,
    /// Over the wire: our CompID, the firm identity the venue keeps our
    /// orders under (a restarted engine must use the same one to cancel
    /// what the previous run left); default the engine's name upper-cased.
    pub comp_id: Option<String>,
    /// Over the wire: the dead-man timer's timeout in ms (armed on logon,
    /// refreshed every quarter of it); 0: not armed.
    pub dead_man_ms: u64,
    /// Over the wire: FIX HeartBtInt, seconds.
    pub heartbeat_s: u64,
    /// Over the wire: how long start-up waits for the first logon.
    pub logon_timeout_ms: u64,
    /// Over the wire: subscribe to the instruments' top of book (the
    /// market-data column of `killswitch status`).
    pub market_data: bool,
}

impl VenueSection {
    /// True when the venue is reached over FIX (`connect` set).
    pub fn is_wire(&self) -> bool {
        self.connect.is_some()
    }

    /// The CompID of our session there.
    pub fn comp_id_for(&self, engine: &str) -> String {
        self.comp_id
            .clone()
            .unwrap_or_else(|| engine.to_ascii_uppercase())
    }

    /// Keys that configure the in-process simulator, set to something else
    /// than their default (refused on a venue over the wire).
    fn simulator_knobs_set(&self) -> Vec<&'static str> {
        let d = VenueSection::default();
        [
            ("ack_latency_us", self.ack_latency_us != d.ack_latency_us),
            ("reject_ppm", self.reject_ppm != d.reject_ppm),
            ("ignore_cancels", self.ignore_cancels != d.ignore_cancels),
            (
                "drop_cancel_ack_ppm",
                self.drop_cancel_ack_ppm != d.drop_cancel_ack_ppm,
            ),
            ("disconnect_after_ms", self.disconnect_after_ms.is_some()),
            ("hang_after_ms", self.hang_after_ms.is_some()),
            (
                "withdraw_liquidity_after_ms",
                self.withdraw_liquidity_after_ms.is_some(),
            ),
            (
                "unreported_position_lots",
                self.unreported_position_lots != 0,
            ),
        ]
        .into_iter()
        .filter(|(_, set)| *set)
        .map(|(k, _)| k)
        .collect()
    }
}

impl Default for VenueSection {
    fn default() -> Self {
        VenueSection {
            name: "SIM".into(),
            instruments: vec!["BTC/USD".into()],
            seed: 1,
            mass_cancel: true,
            ack_latency_us: 0,
            reject_ppm: 0,
            ignore_cancels: false,
            drop_cancel_ack_ppm: 0,
            cancel_on_disconnect: true,
            disconnect_after_ms: None,
            hang_after_ms: None,
            withdraw_liquidity_after_ms: None,
            unreported_position_lots: 0,
            flow_interval_us: 50,
            connect: None,
            comp_id: None,
            dead_man_ms: 60_000,
            heartbeat_s: 5,
            logon_timeout_ms: 5000,
            market_data: false,
        }
    }
}

/// Strategy kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StrategyKind {
    /// Rests a ladder of bids and offers around the mid and refills it.
    MarketMaking,
    /// Crosses the spread in the direction of a drifting signal.
    Momentum,
}

/// `[[strategies]]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StrategySection {
    /// Strategy name (a scope name: the RTS 6 "algorithm").
    pub name: String,
    /// Kind.
    pub kind: StrategyKind,
    /// Venue it trades on.
    pub venue: String,
    /// Instrument it trades.
    pub instrument: String,
    /// Account (trader / desk / client) it trades for.
    pub account: String,
    /// Market making: open orders to keep resting.
    pub open_orders: usize,
    /// Order size in lots.
    pub lots: i64,
    /// Momentum: µs between orders.
    pub interval_us: u64,
    /// Panic after this many ms (fault injection for the drill).
    pub panic_after_ms: Option<u64>,
}

impl Default for StrategySection {
    fn default() -> Self {
        StrategySection {
            name: "mm".into(),
            kind: StrategyKind::MarketMaking,
            venue: "SIM".into(),
            instrument: "BTC/USD".into(),
            account: "desk-1".into(),
            open_orders: 1000,
            lots: 1,
            interval_us: 500,
            panic_after_ms: None,
        }
    }
}

impl Default for EngineConfig {
    /// Two venues, four strategies, about 10,000 resting orders.
    fn default() -> Self {
        let venue =
            |name: &str, instruments: &[&str], seed, mass_cancel, ack_latency_us| VenueSection {
                name: name.into(),
                instruments: instruments.iter().map(|s| s.to_string()).collect(),
                seed,
                mass_cancel,
                ack_latency_us,
                ..VenueSection::default()
            };
        let mm = |name: &str, venue: &str, instrument: &str, open_orders| StrategySection {
            name: name.into(),
            kind: StrategyKind::MarketMaking,
            venue: venue.into(),
            instrument: instrument.into(),
            open_orders,
            ..StrategySection::default()
        };
        EngineConfig {
            name: "engine".into(),
            control_dir: None,
            control_group: None,
            journal_dir: PathBuf::from("ks-journal"),
            report_path: None,
            trade_for_ms: 0,
            gateway_core: None,
            drain_core: None,
            realtime_priority: None,
            heartbeat_us: 1000,
            lease_ttl_ms: 0,
            drain: DrainSection::default(),
            shutdown: ShutdownSection::default(),
            failover: FailoverSection::default(),
            venues: vec![
                venue("SIM-A", &["BTC/USD", "ETH/USD"], 11, true, 0),
                venue("SIM-B", &["BTC/USD", "SOL/USD"], 22, false, 20),
            ],
            strategies: vec![
                mm("mm_btc_a", "SIM-A", "BTC/USD", 4000),
                mm("mm_eth_a", "SIM-A", "ETH/USD", 3000),
                mm("mm_btc_b", "SIM-B", "BTC/USD", 3000),
                StrategySection {
                    name: "momo_sol_b".into(),
                    kind: StrategyKind::Momentum,
                    venue: "SIM-B".into(),
                    instrument: "SOL/USD".into(),
                    account: "desk-2".into(),
                    ..StrategySection::default()
                },
            ],
            limits: LimitsSection::default(),
            rules: RulesSection::default(),
        }
    }
}

impl EngineConfig {
    /// Parses a TOML file; unknown keys are errors that name the key.
    pub fn from_toml(text: &str) -> Result<EngineConfig, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// Checks cross-references (a strategy's venue and instrument exist).
    pub fn validate(&self) -> Result<(), String> {
        if self.venues.is_empty() {
            return Err("no [[venues]]".into());
        }
        if killswitch::shutdown::FlattenMode::parse(&self.shutdown.flatten).is_none() {
            return Err(format!(
                "[shutdown] flatten = {:?}: use \"none\", \"conservative\" or \"aggressive\"",
                self.shutdown.flatten
            ));
        }
        if self.shutdown.reduce_limits_pct.is_some_and(|p| p > 100) {
            return Err("[shutdown] reduce_limits_pct: a percentage, 0..=100".into());
        }
        if let Some(p) = self.realtime_priority {
            if !(1..=99).contains(&p) {
                return Err(format!(
                    "realtime_priority = {p}: a SCHED_FIFO priority is 1..=99 (or leave it out)"
                ));
            }
        }
        for v in &self.venues {
            let Some(addr) = &v.connect else {
                continue;
            };
            if crate::engine::wire::resolve(addr).is_err() {
                return Err(format!(
                    "venue {}: connect = {addr:?} is not an address (HOST:PORT, e.g. \"127.0.0.1:9001\")",
                    v.name
                ));
            }
            let knobs = v.simulator_knobs_set();
            if !knobs.is_empty() {
                return Err(format!(
                    "venue {}: {} configure(s) the in-process simulator; a venue over the wire (connect = {addr:?}) has its own: set them on ks-venue (e.g. --latency-us, --reject-ppm, --ignore-cancels, --drop-cancel-ack-ppm, --disconnect-after) or remove them",
                    v.name,
                    knobs.join(", ")
                ));
            }
            if v.heartbeat_s == 0 {
                return Err(format!("venue {}: heartbeat_s must be at least 1", v.name));
            }
        }
        for s in &self.strategies {
            let Some(v) = self.venues.iter().find(|v| v.name == s.venue) else {
                return Err(format!("strategy {}: no venue named {:?}", s.name, s.venue));
            };
            if !v.instruments.contains(&s.instrument) {
                return Err(format!(
                    "strategy {}: venue {} does not list instrument {:?}",
                    s.name, v.name, s.instrument
                ));
            }
            if s.lots <= 0 {
                return Err(format!("strategy {}: lots must be positive", s.name));
            }
        }
        self.limits.to_config()?;
        self.rules.to_config()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_a_partial_file_keeps_the_other_defaults() {
        EngineConfig::default().validate().unwrap();
        let c = EngineConfig::from_toml(
            "name = \"x\"\ntrade_for_ms = 5\n[drain]\ncancel_deadline_ms = 100\n",
        )
        .unwrap();
        assert_eq!(c.name, "x");
        assert_eq!(c.drain.cancel_deadline_ms, 100);
        assert!(c.drain.mass_cancel);
        assert_eq!(c.venues.len(), 2);
        let e = EngineConfig::from_toml("nmae = \"typo\"").unwrap_err();
        assert!(e.contains("nmae"), "{e}");
        let mut bad = EngineConfig::default();
        bad.strategies[0].instrument = "DOGE/USD".into();
        assert!(bad.validate().unwrap_err().contains("DOGE/USD"));
    }

    #[test]
    fn a_venue_over_the_wire_refuses_simulator_knobs_and_bad_addresses() {
        let mut c = EngineConfig::default();
        c.venues[0].connect = Some("127.0.0.1:9001".into());
        c.validate().unwrap();
        assert_eq!(c.venues[0].comp_id_for("drill"), "DRILL");
        c.venues[1].connect = Some("127.0.0.1:9002".into());
        // SIM-B's default answer latency is an in-process knob.
        let e = c.validate().unwrap_err();
        assert!(e.contains("SIM-B") && e.contains("ack_latency_us"), "{e}");
        c.venues[1].ack_latency_us = 0;
        c.validate().unwrap();
        c.venues[1].connect = Some("nowhere".into());
        let e = c.validate().unwrap_err();
        assert!(e.contains("nowhere") && e.contains("HOST:PORT"), "{e}");
    }
}
