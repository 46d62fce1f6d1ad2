//! The admin endpoint's routes: authentication, request bodies, actions,
//! answers. Every answer is JSON except `/metrics`; every refusal says why
//! and what to do.

use std::io::Read;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use killswitch::control::{
    Actor, ControlError, Mode, ResetRequest, Role, ScopeKind, Source, Transition, TripRequest,
};
use serde::Deserialize;
use serde_json::{json, Value};
use tiny_http::{Header, Method, Request, Response};

use super::view::EngineView;
use super::Shared;
use crate::roles::Authenticated;

/// What a request came to: status code and body (for logs and tests).
#[derive(Debug)]
pub struct Handled {
    /// HTTP status.
    pub code: u16,
    /// Body.
    pub body: String,
    /// Content type.
    pub content_type: &'static str,
    /// Extra headers (`Allow`, `WWW-Authenticate`).
    pub extra: Vec<(&'static str, String)>,
}

impl Handled {
    fn json(code: u16, body: Value) -> Handled {
        Handled {
            code,
            body: format!("{body}\n"),
            content_type: "application/json",
            extra: Vec::new(),
        }
    }

    fn error(code: u16, message: impl Into<String>) -> Handled {
        Handled::json(code, json!({ "error": message.into() }))
    }

    fn with(mut self, name: &'static str, value: String) -> Handled {
        self.extra.push((name, value));
        self
    }
}

/// Scopes of a trip request, by kind.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScopesBody {
    #[serde(default)]
    venue: Vec<String>,
    #[serde(default)]
    strategy: Vec<String>,
    #[serde(default)]
    instrument: Vec<String>,
    #[serde(default)]
    account: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ActivateBody {
    mode: Option<String>,
    reason: Option<String>,
    scopes: Option<ScopesBody>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResetBody {
    confirm: Option<bool>,
    generation: Option<u64>,
    reason: Option<String>,
    #[serde(default)]
    force: bool,
}

/// Reads the body: at most `max` bytes, within the socket's timeout.
fn read_body(req: &mut Request, max: usize) -> Result<Vec<u8>, Handled> {
    if req.body_length().is_some_and(|n| n > max) {
        return Err(Handled::error(
            413,
            format!("request body larger than {max} bytes"),
        ));
    }
    let mut body = Vec::new();
    match req.as_reader().take(max as u64 + 1).read_to_end(&mut body) {
        Ok(_) if body.len() > max => Err(Handled::error(
            413,
            format!("request body larger than {max} bytes"),
        )),
        Ok(_) => Ok(body),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
            ) =>
        {
            Err(Handled::error(
                408,
                "the request body did not arrive in time",
            ))
        }
        Err(e) => Err(Handled::error(400, format!("reading the body: {e}"))),
    }
}

fn parse_json<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, Handled> {
    serde_json::from_slice(body)
        .map_err(|e| Handled::error(400, format!("malformed JSON body: {e}")))
}

fn bearer(req: &Request) -> Option<String> {
    req.headers()
        .iter()
        .find(|h| h.field.equiv("Authorization"))
        .map(|h| {
            let v = h.value.as_str().trim();
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
                .unwrap_or("")
                .trim()
                .to_string()
        })
}

/// Token check: `Ok(None)` without a token, `Ok(Some(who))` with a good
/// one, `Err(why)` with a bad one.
fn authenticate(shared: &Shared, req: &Request) -> Result<Option<Authenticated>, String> {
    let Some(token) = bearer(req) else {
        return Ok(None);
    };
    if token.is_empty() {
        return Err("the Authorization header is not \"Bearer <token>\"".into());
    }
    let Some(roles) = &shared.roles else {
        return Err("this endpoint has no roles file (--roles-file), so no token is valid".into());
    };
    roles
        .authenticate(&token)
        .map(Some)
        .ok_or_else(|| "the token matches no identity in the roles file".into())
}

/// 401, audited (at most once a second; the rest counted).
fn unauthorized(shared: &Shared, peer: &str, action: &str, why: &str) -> Handled {
    shared.counters.unauthorized.fetch_add(1, Ordering::Relaxed);
    if shared.unauthorized_audit.allow() {
        shared
            .operator
            .record_unauthorized(Source::Http, &format!("http {peer}: {action}: {why}"));
        eprintln!("killswitch serve: 401 {action} from {peer}: {why}");
    } else {
        shared
            .counters
            .audit_suppressed
            .fetch_add(1, Ordering::Relaxed);
    }
    Handled::error(401, format!("{action} refused: {why}"))
        .with("WWW-Authenticate", "Bearer realm=\"killswitch\"".into())
}

fn is_loopback(peer: Option<&SocketAddr>) -> bool {
    peer.is_some_and(|p| match p {
        SocketAddr::V4(a) => a.ip().is_loopback(),
        SocketAddr::V6(a) => {
            a.ip().is_loopback() || a.ip().to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    })
}

fn activate(shared: &Shared, req: &mut Request, peer: &str) -> Handled {
    let who = match authenticate(shared, req) {
        Ok(w) => w,
        Err(why) => return unauthorized(shared, peer, "activate", &why),
    };
    if who.is_none() {
        if shared.config.activate_needs_token {
            return unauthorized(
                shared,
                peer,
                "activate",
                "this endpoint requires a bearer token to activate (--activate-needs-token)",
            );
        }
        if !is_loopback(req.remote_addr()) {
            return unauthorized(
                shared,
                peer,
                "activate",
                "activation without a token is accepted from loopback only",
            );
        }
    }
    let body = match read_body(req, shared.config.max_body) {
        Ok(b) => b,
        Err(h) => return h,
    };
    let b: ActivateBody = if body.iter().all(u8::is_ascii_whitespace) {
        ActivateBody::default()
    } else {
        match parse_json(&body) {
            Ok(b) => b,
            Err(h) => return h,
        }
    };
    let mode = match b.mode.as_deref().unwrap_or("kill") {
        "kill" => Mode::Kill,
        "halt" | "halt-new" => Mode::HaltNew,
        "reduce-only" => Mode::ReduceOnly,
        other => {
            return Handled::error(
                400,
                format!("unknown mode {other:?}: use \"kill\", \"halt\" or \"reduce-only\""),
            )
        }
    };
    let mut scopes = Vec::new();
    if let Some(s) = b.scopes {
        for (kind, names) in [
            (ScopeKind::Venue, s.venue),
            (ScopeKind::Strategy, s.strategy),
            (ScopeKind::Instrument, s.instrument),
            (ScopeKind::Account, s.account),
        ] {
            scopes.extend(names.into_iter().map(|n| (kind, n)));
        }
    }
    let reason = format!(
        "http {peer}: {}",
        b.reason
            .as_deref()
            .filter(|r| !r.trim().is_empty())
            .unwrap_or("activated over HTTP")
    );
    let actor = Actor {
        role: who.as_ref().map(|w| w.role),
        identity: who.as_ref().map_or("", |w| w.name.as_str()),
    };
    let operator = &shared.operator;
    let block = operator.block();
    // A global trip the switch already covers changes nothing: answered
    // without an audit entry past one per second, so a flood cannot push
    // the trip that matters out of the ring. A risk trip is always
    // recorded: it puts a risk hold on the reset.
    let before = block.state();
    if scopes.is_empty() && before.mode() >= mode && actor.role != Some(Role::Risk) {
        let recorded = shared.noop_audit.allow();
        if recorded {
            operator.trip_global_as(mode, Source::Http, &reason, actor);
        } else {
            shared
                .counters
                .audit_suppressed
                .fetch_add(1, Ordering::Relaxed);
        }
        let now = block.state();
        if now.mode() >= mode {
            return Handled::json(
                200,
                json!({
                    "tripped": false,
                    "already": true,
                    "mode": now.mode().as_str(),
                    "generation": now.generation(),
                    "recorded": recorded,
                    "message": format!("already tripped: mode {} at generation {} forbids at least as much", now.mode(), now.generation()),
                }),
            );
        }
    }
    match operator.trip_as(
        &TripRequest {
            mode,
            scopes,
            source: Source::Http,
            reason,
        },
        actor,
    ) {
        Ok(out) => {
            let (changed, now, from) = match out.transition {
                Transition::Changed { from, to } => (true, to, from.generation()),
                Transition::Unchanged(w) => (false, w, w.generation()),
            };
            eprintln!(
                "killswitch serve: activate {} from {peer}{}: generation {from} -> {}",
                mode.as_str(),
                who.as_ref()
                    .map(|w| format!(" ({} {})", w.role, w.name))
                    .unwrap_or_default(),
                now.generation()
            );
            Handled::json(
                200,
                json!({
                    "tripped": changed,
                    "already": !changed,
                    "mode": now.mode().as_str(),
                    "scoped": now.scoped(),
                    "generation": now.generation(),
                    "previous_generation": from,
                    "audit_ticket": out.ticket,
                    "engine_alive": block.owner().alive,
                }),
            )
        }
        Err(e @ ControlError::InvalidName { .. }) | Err(e @ ControlError::NamesFull { .. }) => {
            Handled::error(400, e.to_string())
        }
        Err(e) => Handled::error(500, e.to_string()),
    }
}

fn reset(shared: &Shared, req: &mut Request, peer: &str) -> Handled {
    let who = match authenticate(shared, req) {
        Ok(Some(w)) => w,
        Ok(None) => {
            return unauthorized(
                shared,
                peer,
                "reset",
                "a reset needs a bearer token (Authorization: Bearer <token>) of the trader or risk role",
            )
        }
        Err(why) => return unauthorized(shared, peer, "reset", &why),
    };
    let body = match read_body(req, shared.config.max_body) {
        Ok(b) => b,
        Err(h) => return h,
    };
    let b: ResetBody = match parse_json(&body) {
        Ok(b) => b,
        Err(h) => return h,
    };
    if b.confirm != Some(true) {
        return Handled::error(
            400,
            "a reset lets the engine trade again: send \"confirm\": true",
        );
    }
    let Some(generation) = b.generation else {
        return Handled::error(
            400,
            "name the generation you mean to clear (\"generation\": G, from /api/status): a reset never clears a trip you have not seen",
        );
    };
    let Some(reason) = b.reason.filter(|r| !r.trim().is_empty()) else {
        return Handled::error(400, "a reset must say why: send \"reason\": \"...\"");
    };
    let actor = Actor {
        role: Some(who.role),
        identity: &who.name,
    };
    let result = shared.operator.reset_as(
        &ResetRequest {
            source: Source::Http,
            reason: format!("http {peer}: {reason}"),
            force: b.force,
            expected_generation: Some(generation),
        },
        actor,
    );
    eprintln!(
        "killswitch serve: reset of generation {generation} by {} {} from {peer}: {}",
        who.role,
        who.name,
        match &result {
            Ok(_) => "done".to_string(),
            Err(e) => format!("refused: {e}"),
        }
    );
    match result {
        Ok(out) => {
            let (changed, now) = match out.transition {
                Transition::Changed { to, .. } => (true, to),
                Transition::Unchanged(w) => (false, w),
            };
            Handled::json(
                200,
                json!({
                    "reset": changed,
                    "mode": now.mode().as_str(),
                    "generation": now.generation(),
                    "role": who.role.as_str(),
                    "identity": who.name,
                    "audit_ticket": out.ticket,
                }),
            )
        }
        Err(e @ ControlError::ResetNeedsRole { .. }) => Handled::error(403, e.to_string()),
        Err(e @ (ControlError::ResetStale { .. } | ControlError::ResetRefused { .. })) => {
            Handled::error(409, e.to_string())
        }
        Err(e) => Handled::error(500, e.to_string()),
    }
}

/// Routes one request to its answer.
pub fn handle(shared: &Shared, req: &mut Request) -> Handled {
    let peer = req
        .remote_addr()
        .map_or_else(|| "unknown".to_string(), |a| a.to_string());
    let path = req.url().split('?').next().unwrap_or("").to_string();
    let method = req.method().clone();
    let allowed = match path.as_str() {
        "/api/killswitch/activate" | "/api/killswitch/reset" => "POST",
        "/api/status" | "/metrics" => "GET, HEAD",
        _ => {
            return Handled::error(
                404,
                format!("no such path {path:?}: POST /api/killswitch/activate, POST /api/killswitch/reset, GET /api/status, GET /metrics"),
            )
        }
    };
    match (&method, path.as_str()) {
        (Method::Post, "/api/killswitch/activate") => activate(shared, req, &peer),
        (Method::Post, "/api/killswitch/reset") => reset(shared, req, &peer),
        (Method::Get | Method::Head, "/api/status") => {
            let view = EngineView::read(shared.operator.block());
            match serde_json::to_value(&view) {
                Ok(v) => Handled::json(200, v),
                Err(e) => Handled::error(500, e.to_string()),
            }
        }
        (Method::Get | Method::Head, "/metrics") => Handled {
            code: 200,
            body: super::metrics::render(
                &EngineView::read(shared.operator.block()),
                &shared.config.alerts,
                &shared.counters,
            ),
            content_type: "application/openmetrics-text; version=1.0.0; charset=utf-8",
            extra: Vec::new(),
        },
        _ => Handled::error(
            405,
            format!("{method} is not allowed on {path}: use {allowed}"),
        )
        .with("Allow", allowed.to_string()),
    }
}

/// Answers one request; a client that went away is not an error here.
pub fn answer(shared: &Shared, mut req: Request) {
    let h = handle(shared, &mut req);
    let class = match h.code {
        200..=299 => &shared.counters.ok,
        _ => &shared.counters.client_errors,
    };
    class.fetch_add(1, Ordering::Relaxed);
    let mut resp = Response::from_string(h.body).with_status_code(h.code);
    let mut headers = vec![("Content-Type", h.content_type.to_string())];
    headers.extend(h.extra.iter().map(|(n, v)| (*n, v.clone())));
    for (name, value) in headers {
        if let Ok(hd) = Header::from_bytes(name.as_bytes(), value.as_bytes()) {
            resp.add_header(hd);
        }
    }
    let _ = req.respond(resp);
}
