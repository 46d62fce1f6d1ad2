//! Services stopped in the runbook's order (step 11, "Stop Services"):
//! strategies -> engine -> risk -> OMS -> market data -> monitoring, each
//! asked to stop gracefully, given its timeout (30 s by default), then
//! forced.
//!
//! A [`Component`] is anything the engine runs beside the runtime's own
//! threads: a market-data handler, a risk service, a monitoring agent. The
//! orchestrator never blocks inside a component: it asks
//! ([`Component::request_stop`]), polls ([`Component::is_stopped`]) until
//! the deadline, then forces ([`Component::force_stop`]) and says so in
//! the report ("Process Not Stopping" in the troubleshooting section).

use std::time::{Duration, Instant};

/// The runbook's stop order; components stop in this order, ties in the
/// order they were given.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "kebab-case"))]
pub enum StopOrder {
    /// Trading strategies (stop signal generation).
    Strategies = 1,
    /// The trading engine (stop order processing).
    Engine = 2,
    /// The risk manager.
    Risk = 3,
    /// The order management system.
    Oms = 4,
    /// Market data handlers.
    MarketData = 5,
    /// Monitoring agents (kept alive longest).
    Monitoring = 6,
}

impl StopOrder {
    /// Name for reports.
    pub fn as_str(self) -> &'static str {
        match self {
            StopOrder::Strategies => "strategies",
            StopOrder::Engine => "engine",
            StopOrder::Risk => "risk",
            StopOrder::Oms => "oms",
            StopOrder::MarketData => "market-data",
            StopOrder::Monitoring => "monitoring",
        }
    }
}

/// What a component says about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "kebab-case"))]
pub enum ComponentStatus {
    /// Running.
    Running,
    /// Asked to stop, not stopped yet.
    Stopping,
    /// Stopped.
    Stopped,
    /// Failed (the text says how).
    Failed(String),
}

/// A service the planned shutdown stops. Implementations must not block
/// in any method: stopping is asked, then polled.
pub trait Component: Send {
    /// Name for the report.
    fn name(&self) -> &str;
    /// Where it stops in the runbook's order.
    fn stop_order(&self) -> StopOrder;
    /// Asks for a graceful stop (returns at once).
    fn request_stop(&mut self);
    /// True once it has stopped (threads joined, sockets closed).
    fn is_stopped(&mut self) -> bool;
    /// Stops it now, whatever it is doing (abandon the thread, close the
    /// socket); returns what was done, for the report.
    fn force_stop(&mut self) -> String;
    /// Its status now.
    fn status(&self) -> ComponentStatus;
    /// Its own graceful-stop timeout, if it differs from the plan's.
    fn stop_timeout(&self) -> Option<Duration> {
        None
    }
}

/// How one component stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ComponentStop {
    /// Its name.
    pub name: String,
    /// Its place in the order.
    pub order: StopOrder,
    /// Stopped gracefully within its timeout.
    pub graceful: bool,
    /// When it was forced: what the force did.
    pub forced: Option<String>,
    /// Time from the request to stopped (or to forced), ms.
    pub ms: u64,
}

/// Stops `components` in the runbook's order, each with its timeout
/// (`default_timeout` unless it has its own), then forces it. Polls every
/// `poll` (1 ms is fine: this is not the order path).
pub fn stop_in_order(
    components: &mut [Box<dyn Component>],
    default_timeout: Duration,
    poll: Duration,
) -> Vec<ComponentStop> {
    let mut order: Vec<usize> = (0..components.len()).collect();
    order.sort_by_key(|&i| components[i].stop_order());
    let mut out = Vec::with_capacity(order.len());
    for i in order {
        let c = &mut components[i];
        let timeout = c.stop_timeout().unwrap_or(default_timeout);
        let start = Instant::now();
        c.request_stop();
        let mut graceful = c.is_stopped();
        while !graceful && start.elapsed() < timeout {
            std::thread::sleep(poll);
            graceful = c.is_stopped();
        }
        let forced = (!graceful).then(|| c.force_stop());
        out.push(ComponentStop {
            name: c.name().to_string(),
            order: c.stop_order(),
            graceful,
            forced,
            ms: start.elapsed().as_millis() as u64,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    struct Fake {
        name: &'static str,
        order: StopOrder,
        stops_after_polls: Option<u32>,
        polls: u32,
        asked: bool,
        log: Arc<Mutex<Vec<String>>>,
    }

    impl Component for Fake {
        fn name(&self) -> &str {
            self.name
        }
        fn stop_order(&self) -> StopOrder {
            self.order
        }
        fn request_stop(&mut self) {
            self.asked = true;
            self.log.lock().unwrap().push(format!("stop {}", self.name));
        }
        fn is_stopped(&mut self) -> bool {
            self.polls += 1;
            self.asked && self.stops_after_polls.is_some_and(|n| self.polls >= n)
        }
        fn force_stop(&mut self) -> String {
            self.log
                .lock()
                .unwrap()
                .push(format!("force {}", self.name));
            "abandoned its thread".into()
        }
        fn status(&self) -> ComponentStatus {
            ComponentStatus::Running
        }
    }

    #[test]
    fn stops_in_runbook_order_and_forces_the_one_that_ignores_its_stop() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let fake = |name, order, stops_after_polls| -> Box<dyn Component> {
            Box::new(Fake {
                name,
                order,
                stops_after_polls,
                polls: 0,
                asked: false,
                log: log.clone(),
            })
        };
        let mut cs = vec![
            fake("monitor", StopOrder::Monitoring, Some(1)),
            fake("md", StopOrder::MarketData, None),
            fake("strats", StopOrder::Strategies, Some(3)),
            fake("risk", StopOrder::Risk, Some(1)),
        ];
        let out = stop_in_order(&mut cs, Duration::from_millis(20), Duration::from_millis(1));
        let names: Vec<&str> = out.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["strats", "risk", "md", "monitor"]);
        assert!(out[0].graceful && out[1].graceful && out[3].graceful);
        assert!(!out[2].graceful);
        assert_eq!(out[2].forced.as_deref(), Some("abandoned its thread"));
        assert_eq!(
            *log.lock().unwrap(),
            [
                "stop strats",
                "stop risk",
                "stop md",
                "force md",
                "stop monitor"
            ]
        );
    }
}
