//! The admin endpoint, `killswitch serve`: HTTP beside the engine, acting
//! on the engine's shared control block.
//!
//! It runs as its **own process**, not as a thread of the engine: the
//! runbook's emergency procedure `SIGSTOP`s the engine before its
//! `curl -X POST http://localhost:8080/api/killswitch/activate`, and an
//! endpoint inside a stopped process would hang exactly then. A trip is a
//! store into shared memory, which the engine's gate reads on its next
//! order whether or not the engine was stopped meanwhile.
//!
//! | method | path | who | what |
//! |---|---|---|---|
//! | POST | `/api/killswitch/activate` | anyone on loopback (or a token: `--activate-needs-token`) | trip; optional JSON `{"mode","reason","scopes"}` |
//! | POST | `/api/killswitch/reset` | bearer token (trader or risk) | reset from a named generation: `{"confirm":true,"generation":G,"reason":"..."}` |
//! | GET | `/api/status` | anyone | JSON: the switch, drain, telemetry, kill path, recent actions |
//! | GET | `/metrics` | anyone | Prometheus / OpenMetrics text |
//!
//! HTTP comes from `tiny_http` (no hand-written parsing, no async
//! runtime); a fixed pool of workers answers. Bodies are capped
//! (`--max-body`, 413), reads time out (`--read-timeout`, 408), unknown
//! paths get 404 and wrong methods 405 with `Allow`. The engine never waits
//! on this process: every action is a lock-free store or a short `flock`
//! on the control file, like the CLI's.

pub mod dashboard;
mod handlers;
pub mod metrics;
pub mod view;

use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use killswitch::control::Operator;

use crate::roles::Roles;
pub use handlers::Handled;
pub use metrics::{AlertConfig, EndpointCounters};

/// The runbook's address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

/// How the endpoint runs.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// Address to bind (default 127.0.0.1:8080).
    pub listen: SocketAddr,
    /// Roles file (identities, roles, token hashes). Without one, every
    /// request that needs a token is refused (401).
    pub roles_file: Option<PathBuf>,
    /// Activation needs a token even from loopback.
    pub activate_needs_token: bool,
    /// Largest request body accepted, bytes.
    pub max_body: usize,
    /// Socket read/write timeout: a client slower than this gets 408.
    pub read_timeout: Duration,
    /// Worker threads answering requests.
    pub workers: usize,
    /// Alert thresholds for `/metrics`.
    pub alerts: AlertConfig,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            listen: DEFAULT_LISTEN.parse().expect("valid address"),
            roles_file: None,
            activate_needs_token: false,
            max_body: 16 * 1024,
            read_timeout: Duration::from_secs(2),
            workers: 4,
            alerts: AlertConfig::default(),
        }
    }
}

/// At most one audit entry per second per kind of noise (no-op trips,
/// unauthorized requests): a flood must not push the records that matter
/// out of the 64-entry ring. The rest are counted.
#[derive(Debug)]
pub struct AuditLimiter {
    last: Mutex<Option<Instant>>,
}

impl AuditLimiter {
    fn new() -> AuditLimiter {
        AuditLimiter {
            last: Mutex::new(None),
        }
    }

    /// True when an entry may be written now.
    pub fn allow(&self) -> bool {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_some_and(|t| t.elapsed() < Duration::from_secs(1)) {
            return false;
        }
        *last = Some(Instant::now());
        true
    }
}

/// What the workers share.
pub struct Shared {
    /// The operator's handle on the engine's control block (trips and
    /// resets go through it; reads through its `block()`).
    pub operator: Operator,
    /// The settings.
    pub config: ServeConfig,
    /// The roles file, if configured.
    pub roles: Option<Roles>,
    /// The endpoint's own counters.
    pub counters: EndpointCounters,
    /// Limits no-op trip entries.
    pub noop_audit: AuditLimiter,
    /// Limits unauthorized-request entries.
    pub unauthorized_audit: AuditLimiter,
}

/// A running endpoint.
pub struct AdminServer {
    server: Arc<tiny_http::Server>,
    workers: Vec<std::thread::JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    local: SocketAddr,
}

/// Sets a socket option of type `timeval`.
fn set_timeout(fd: i32, opt: libc::c_int, d: Duration) -> std::io::Result<()> {
    let tv = libc::timeval {
        tv_sec: d.as_secs() as libc::time_t,
        tv_usec: d.subsec_micros() as libc::suseconds_t,
    };
    // SAFETY: `fd` is an open socket owned by the caller, `tv` is a valid
    // timeval that outlives the call, and the length passed is its size.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            opt,
            &tv as *const libc::timeval as *const libc::c_void,
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

impl AdminServer {
    /// Binds and starts the workers.
    pub fn start(operator: Operator, config: ServeConfig) -> Result<AdminServer, String> {
        let roles = match &config.roles_file {
            Some(p) => Some(Roles::load(p)?),
            None => None,
        };
        let listener = TcpListener::bind(config.listen).map_err(|e| {
            format!(
                "cannot listen on {}: {e} (is another `killswitch serve` running? pick --listen ADDR)",
                config.listen
            )
        })?;
        // Linux copies these into every accepted connection: a client that
        // stops sending mid-request gets 408 from tiny_http (headers) or
        // from us (body) instead of holding a thread forever.
        for opt in [libc::SO_RCVTIMEO, libc::SO_SNDTIMEO] {
            set_timeout(listener.as_raw_fd(), opt, config.read_timeout)
                .map_err(|e| format!("setting the socket timeout: {e}"))?;
        }
        let local = listener
            .local_addr()
            .map_err(|e| format!("local address: {e}"))?;
        let server = Arc::new(
            tiny_http::Server::from_listener(listener, None)
                .map_err(|e| format!("HTTP server on {local}: {e}"))?,
        );
        let shared = Arc::new(Shared {
            operator,
            roles,
            counters: EndpointCounters::default(),
            noop_audit: AuditLimiter::new(),
            unauthorized_audit: AuditLimiter::new(),
            config: config.clone(),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let mut workers = Vec::new();
        for n in 0..config.workers.max(1) {
            let (server, shared, stop) = (server.clone(), shared.clone(), stop.clone());
            workers.push(
                std::thread::Builder::new()
                    .name(format!("ks-http-{n}"))
                    .spawn(move || worker(&server, &shared, &stop))
                    .map_err(|e| format!("worker thread: {e}"))?,
            );
        }
        Ok(AdminServer {
            server,
            workers,
            stop,
            local,
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Blocks until `stop` is set, then stops.
    pub fn run_until(self, stop: &AtomicBool) {
        while !stop.load(Ordering::Acquire) {
            std::thread::sleep(Duration::from_millis(50));
        }
        self.shutdown();
    }

    /// Stops the workers.
    pub fn shutdown(mut self) {
        self.stop.store(true, Ordering::Release);
        self.server.unblock();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

fn worker(server: &tiny_http::Server, shared: &Shared, stop: &AtomicBool) {
    while !stop.load(Ordering::Acquire) {
        match server.recv_timeout(Duration::from_millis(200)) {
            Ok(Some(req)) => handlers::answer(shared, req),
            Ok(None) => {}
            Err(e) => {
                // Accept failures (out of file descriptors under a flood)
                // must not spin a core the engine may need.
                eprintln!("killswitch serve: accepting a connection: {e}");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}
