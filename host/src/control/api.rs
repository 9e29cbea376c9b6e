//! The admin API: HTTP/1.1 (axum) on a UNIX socket (mode 0660, group configurable) and, optionally, on a loopback
//! TCP port with a bearer token. JSON in and out; errors are `{"error": ...}` with a proper status code.
//!
//! | method and path | what |
//! |---|---|
//! | `GET /healthz` | `{"status":"ok"}` |
//! | `GET /metrics` | Prometheus text |
//! | `GET /v1/guests`, `GET /v1/guests/{id}` | what vigild sees of each guest (with its `instance_uuid`); `{id}` may be the instance UUID |
//! | `POST /v1/guests/{id}/vote` `{"event_type", "notification_type"?}` | a vote (or notice); answers with the guest's answer |
//! | `POST /v1/guests/{id}/notify` `{"event_type", "notification_type"?}` | a notice (default `irrevocable`) |
//! | `POST /v1/guests/{id}/maintenance` `{"secs", "reason"?}`, `DELETE` the same | a maintenance window |
//! | `PUT /v1/reporting`, `PUT /v1/guests/{id}/reporting` `{"enabled": bool}` | fault reporting on/off |
//! | `GET /v1/guests/{id}/evidence` | what was saved before the guest's corrective actions, newest first |
//! | `GET /v1/guests/{id}/evidence/{name}/{file}` | one of those files (`screen.png`, `console.txt`, `notes.txt`) |

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::oneshot;
use vigil_core::{EventType, NotificationType};

use super::{Command, ControlConfig, FleetView, Shared};
use crate::fleet::VoteRefusal;

/// Listeners bound before the control thread runs.
pub struct Listeners {
    unix: Option<tokio::net::UnixListener>,
    tcp: Option<(tokio::net::TcpListener, Arc<str>)>,
    web: Option<tokio::net::TcpListener>,
}

/// Binds the admin socket (stale socket files are replaced; mode 0660; group `admin_group`) and the optional TCP
/// listener (loopback only, token required).
pub async fn bind(cfg: &ControlConfig) -> std::io::Result<Listeners> {
    let unix = match &cfg.admin_socket {
        Some(path) => Some(bind_unix(path, cfg.admin_group.as_deref())?),
        None => None,
    };
    let tcp = match cfg.admin_tcp {
        Some(addr) => {
            if !addr.ip().is_loopback() && !cfg.admin_tcp_remote {
                return Err(std::io::Error::other(format!(
                    "--admin-tcp {addr}: only loopback addresses, unless --admin-tcp-remote (for the StarlingX relay)"
                )));
            }
            let file = cfg
                .admin_token_file
                .as_ref()
                .ok_or_else(|| std::io::Error::other("--admin-tcp needs --admin-token-file"))?;
            let token = std::fs::read_to_string(file)
                .map_err(|e| std::io::Error::other(format!("{}: {e}", file.display())))?
                .trim()
                .to_owned();
            if token.len() < 16 {
                return Err(std::io::Error::other("admin token: at least 16 characters"));
            }
            // a deep backlog: connections beyond the cap wait in the kernel, not in vigild's descriptor table
            let socket =
                if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
            socket.set_reuseaddr(true)?;
            socket.bind(addr)?;
            Some((socket.listen(4096)?, token.into()))
        }
        None => None,
    };
    let web = match cfg.web_listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| std::io::Error::other(format!("--web-listen-address {addr}: {e}")))?,
        ),
        None => None,
    };
    Ok(Listeners { unix, tcp, web })
}

fn bind_unix(path: &Path, group: Option<&str>) -> std::io::Result<tokio::net::UnixListener> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(std::io::Error::other(format!("{}: another vigild is serving there", path.display())));
        }
        std::fs::remove_file(path)?; // stale, from a vigild that is gone
    }
    let listener = tokio::net::UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    if let Some(name) = group {
        let gid =
            group_id(name).ok_or_else(|| std::io::Error::other(format!("--admin-group {name}: no such group")))?;
        rustix::fs::chown(path, None, Some(rustix::fs::Gid::from_raw(gid)))?;
    }
    Ok(listener)
}

/// A group's id through the system's name service (`getgrnam_r`: files, SSSD, LDAP, whatever NSS is set up with).
fn group_id(name: &str) -> Option<u32> {
    nix::unistd::Group::from_name(name).ok().flatten().map(|g| g.gid.as_raw())
}

/// Serves until `stop` fires.
pub async fn serve(l: Listeners, shared: Arc<Shared>, stop: oneshot::Receiver<()>) {
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let _ = stop.await;
        let _ = tx.send(true);
    });
    let app = router(Arc::clone(&shared));
    let mut tasks = Vec::new();
    if let Some(unix) = l.unix {
        tasks.push(tokio::spawn(super::serve::serve(unix, app.clone(), super::serve::UNIX_LIMITS, rx.clone())));
    }
    if let Some((tcp, token)) = l.tcp {
        let app = app.layer(middleware::from_fn_with_state(token, bearer));
        tasks.push(tokio::spawn(super::serve::serve(tcp, app, super::serve::TCP_LIMITS, rx.clone())));
    }
    if let Some(web) = l.web {
        let app = read_only_router(Arc::clone(&shared));
        tasks.push(tokio::spawn(super::serve::serve(web, app, super::serve::TCP_LIMITS, rx.clone())));
    }
    let mut rx = rx;
    let _ = rx.wait_for(|s| *s).await;
    for t in tasks {
        t.abort();
    }
}

async fn bearer(State(token): State<Arc<str>>, req: Request, next: Next) -> Response {
    let ok = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| constant_time_eq(t.as_bytes(), token.as_bytes()));
    if ok {
        next.run(req).await
    } else {
        error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token")
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The read-only routes of `--web-listen-address`: the status page, the metrics, the health check; no token.
pub fn read_only_router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/", get(status_page))
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/metrics", get(metrics))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "read-only listener: /, /metrics and /healthz only") })
        .with_state(shared)
}

/// `GET /`: the status page (server-side HTML, no script, no external asset).
async fn status_page(State(shared): State<Arc<Shared>>) -> Response {
    match view(&shared, true).await {
        Ok(v) => {
            let up = super::render::UpstreamView::of(&shared);
            let recent: Vec<super::Recent> =
                shared.recent.lock().map(|q| q.iter().rev().cloned().collect()).unwrap_or_default();
            let body = super::render::status_html(&v, &up, &recent, &shared.ctx.host);
            ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response()
        }
        Err(e) => e.into_response(),
    }
}

/// The routes.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/", get(status_page))
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/metrics", get(metrics))
        .route("/v1/guests", get(guests))
        .route("/v1/guests/{id}", get(guest))
        .route("/v1/guests/{id}/vote", post(vote))
        .route("/v1/guests/{id}/notify", post(notify))
        .route("/v1/guests/{id}/maintenance", post(maintenance_start).delete(maintenance_end))
        .route("/v1/guests/{id}/reporting", put(reporting_guest))
        .route("/v1/guests/{id}/evidence", get(evidence_list))
        .route("/v1/guests/{id}/evidence/{name}/{file}", get(evidence_file))
        .route("/v1/reporting", put(reporting_host))
        .route("/v1/instances/{uuid}/vote", post(starlingx_vote))
        .route("/v1/instances/{uuid}/notify", post(starlingx_notify))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such endpoint") })
        .with_state(shared)
}

fn error(code: StatusCode, msg: &str) -> Response {
    (code, Json(json!({ "error": msg }))).into_response()
}

/// A refusal on its way to becoming a `{"error": ...}` response.
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        error(self.0, &self.1)
    }
}

fn fail(code: StatusCode, msg: impl Into<String>) -> ApiError {
    ApiError(code, msg.into())
}

/// How long a request waits for the data plane, but for votes (it answers within a pass; this is for a loop that
/// is stuck or stopping).
const DATA_PLANE_WAIT: Duration = Duration::from_secs(10);
/// How long a vote waits: the longest notice a guest may be given, and some.
const VOTE_WAIT: Duration = Duration::from_secs(crate::config::MAX_NOTICE_CAP as u64 + 10);

async fn ask<T>(shared: &Shared, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T, ApiError> {
    ask_within(shared, DATA_PLANE_WAIT, make).await
}

async fn ask_within<T>(
    shared: &Shared,
    wait: Duration,
    make: impl FnOnce(oneshot::Sender<T>) -> Command,
) -> Result<T, ApiError> {
    let (tx, rx) = oneshot::channel();
    if !shared.send(make(tx)) {
        return Err(fail(StatusCode::SERVICE_UNAVAILABLE, "vigild is busy; try again"));
    }
    match tokio::time::timeout(wait, rx).await {
        Ok(r) => r.map_err(|_| fail(StatusCode::SERVICE_UNAVAILABLE, "vigild is stopping")),
        Err(_) => Err(fail(StatusCode::GATEWAY_TIMEOUT, format!("no answer from the data plane within {wait:?}"))),
    }
}

async fn view(shared: &Shared, guests: bool) -> Result<Arc<FleetView>, ApiError> {
    ask(shared, |reply| Command::Snapshot { guests, reply }).await
}

async fn guests(State(shared): State<Arc<Shared>>) -> Response {
    match view(&shared, true).await {
        Ok(v) => {
            // each guest with its instance UUID (the relay routes by it)
            let guests: Vec<serde_json::Value> = v
                .guests
                .iter()
                .map(|g| {
                    let mut j = json!(g);
                    j["instance_uuid"] = json!(shared.ctx.instance(&g.id));
                    j
                })
                .collect();
            Json(json!({
                "reporting": v.reporting,
                "events_emitted": v.events_emitted,
                "events_dropped": v.events_dropped + v.control_dropped,
                "guests": guests,
            }))
            .into_response()
        }
        Err(e) => e.into_response(),
    }
}

async fn guest(State(shared): State<Arc<Shared>>, UrlPath(id): UrlPath<String>) -> Response {
    // a guest id, or its instance UUID where the config maps one
    let key = shared.ctx.guest_of_instance(&id);
    match ask(&shared, |reply| Command::Guest { id: key, reply }).await {
        Ok(Some(g)) => Json(g).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, &format!("no guest {id:?}")),
        Err(e) => e.into_response(),
    }
}

async fn evidence_list(State(shared): State<Arc<Shared>>, UrlPath(id): UrlPath<String>) -> Response {
    let Some(root) = shared.evidence_dir.clone() else {
        return error(StatusCode::NOT_FOUND, "no evidence is kept: corrective actions through libvirt are off");
    };
    let key = shared.ctx.guest_of_instance(&id);
    let list =
        tokio::task::spawn_blocking(move || super::evidence::list_evidence(&root, &key)).await.unwrap_or_default();
    let items: Vec<_> = list
        .into_iter()
        .map(|(name, files)| {
            let files: Vec<_> = files
                .into_iter()
                .map(|(f, bytes)| json!({"name": f, "bytes": bytes, "href": format!("/v1/guests/{id}/evidence/{name}/{f}")}))
                .collect();
            json!({"name": name, "files": files})
        })
        .collect();
    Json(json!({"guest": id, "evidence": items})).into_response()
}

async fn evidence_file(
    State(shared): State<Arc<Shared>>,
    UrlPath((id, name, file)): UrlPath<(String, String, String)>,
) -> Response {
    let Some(root) = shared.evidence_dir.clone() else {
        return error(StatusCode::NOT_FOUND, "no evidence is kept");
    };
    let key = shared.ctx.guest_of_instance(&id);
    let content_type = match file.rsplit('.').next() {
        Some("png") => "image/png",
        _ => "text/plain; charset=utf-8",
    };
    let read = tokio::task::spawn_blocking(move || {
        super::evidence::evidence_file(&root, &key, &name, &file).map(std::fs::read)
    })
    .await;
    match read {
        Ok(Some(Ok(bytes))) => ([(header::CONTENT_TYPE, content_type)], bytes).into_response(),
        _ => error(StatusCode::NOT_FOUND, "no such evidence file"),
    }
}

async fn metrics(State(shared): State<Arc<Shared>>, headers: axum::http::HeaderMap) -> Response {
    let openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/openmetrics-text"));
    match view(&shared, false).await {
        Ok(v) => {
            let by_kind = shared.events_by_kind.lock().map(|m| m.clone()).unwrap_or_default();
            let refused = shared.commands_refused.load(std::sync::atomic::Ordering::Relaxed);
            let up = super::render::UpstreamView::of(&shared);
            if openmetrics {
                let body = super::render::openmetrics(&v, &by_kind, refused, &up);
                ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], body)
                    .into_response()
            } else {
                let body = super::render::metrics(&v, &by_kind, refused, &up);
                ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body).into_response()
            }
        }
        Err(e) => e.into_response(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VoteBody {
    event_type: String,
    notification_type: Option<String>,
}

fn parse<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| fail(StatusCode::BAD_REQUEST, format!("bad request body: {e}")))
}

fn vote_args(body: &Bytes) -> Result<(EventType, Option<NotificationType>), ApiError> {
    let b: VoteBody = parse(body)?;
    let event = EventType::from_wire(&b.event_type)
        .filter(|e| *e != EventType::Unknown)
        .ok_or_else(|| fail(StatusCode::BAD_REQUEST, format!("unknown event_type {:?}", b.event_type)))?;
    let kind = match b.notification_type {
        None => None,
        Some(k) => Some(
            NotificationType::from_wire(&k)
                .filter(|k| *k != NotificationType::Unknown)
                .ok_or_else(|| fail(StatusCode::BAD_REQUEST, format!("unknown notification_type {k:?}")))?,
        ),
    };
    Ok((event, kind))
}

async fn run_vote(shared: &Shared, id: String, event: EventType, kind: Option<NotificationType>) -> Response {
    let guest = id.clone();
    let answer = match ask_within(shared, VOTE_WAIT, |reply| Command::Vote {
        guest,
        event_type: event,
        notification_type: kind,
        reply,
    })
    .await
    {
        Ok(a) => a,
        Err(e) => return e.into_response(),
    };
    match answer {
        Ok(done) => Json(json!({
            "guest": &*done.guest,
            "event_type": done.event_type.as_str(),
            "notification_type": done.notification_type.as_str(),
            "result": done.result.as_str(),
            "log_msg": done.log_msg,
        }))
        .into_response(),
        Err(VoteRefusal::UnknownGuest) => error(StatusCode::NOT_FOUND, &format!("no guest {id:?}")),
        Err(VoteRefusal::NotHeartbeating { state }) => (
            StatusCode::CONFLICT,
            Json(json!({
                "error": format!("guest {id:?} is not heartbeating ({state}): it cannot answer"),
                "guest": id,
                "event_type": event.as_str(),
                "state": state,
                "result": "not_heartbeating",
            })),
        )
            .into_response(),
        Err(VoteRefusal::Busy) => error(StatusCode::CONFLICT, "another vote or notice is open for this guest"),
    }
}

async fn vote(State(shared): State<Arc<Shared>>, UrlPath(id): UrlPath<String>, body: Bytes) -> Response {
    match vote_args(&body) {
        Ok((event, kind)) => run_vote(&shared, id, event, kind).await,
        Err(e) => e.into_response(),
    }
}

async fn notify(State(shared): State<Arc<Shared>>, UrlPath(id): UrlPath<String>, body: Bytes) -> Response {
    match vote_args(&body) {
        Ok((event, kind)) => run_vote(&shared, id, event, Some(kind.unwrap_or(NotificationType::Irrevocable))).await,
        Err(e) => e.into_response(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MaintenanceBody {
    secs: u64,
    #[serde(default)]
    reason: String,
}

async fn maintenance_start(State(shared): State<Arc<Shared>>, UrlPath(id): UrlPath<String>, body: Bytes) -> Response {
    let b: MaintenanceBody = match parse(&body) {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    if b.secs == 0 {
        return error(StatusCode::BAD_REQUEST, "secs: at least 1");
    }
    let max = crate::fleet::MAX_MAINTENANCE.as_millis() / 1000;
    if b.secs > max {
        return error(StatusCode::BAD_REQUEST, &format!("secs: at most {max}"));
    }
    let reason = b.reason.chars().take(256).collect::<String>();
    let guest = id.clone();
    let r = ask(&shared, |reply| Command::Maintenance { guest, secs: Some(b.secs), reason: reason.clone(), reply });
    match r.await {
        Ok(true) => Json(json!({ "guest": id, "maintenance_secs": b.secs, "reason": reason })).into_response(),
        Ok(false) => error(StatusCode::NOT_FOUND, &format!("no guest {id:?}")),
        Err(e) => e.into_response(),
    }
}

async fn maintenance_end(State(shared): State<Arc<Shared>>, UrlPath(id): UrlPath<String>) -> Response {
    let guest = id.clone();
    match ask(&shared, |reply| Command::Maintenance { guest, secs: None, reason: String::new(), reply }).await {
        Ok(true) => Json(json!({ "guest": id, "maintenance": false })).into_response(),
        Ok(false) => error(StatusCode::NOT_FOUND, &format!("no guest {id:?}")),
        Err(e) => e.into_response(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReportingBody {
    enabled: bool,
}

async fn set_reporting(shared: &Shared, guest: Option<String>, body: &Bytes) -> Response {
    let b: ReportingBody = match parse(body) {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let who = guest.clone();
    match ask(shared, |reply| Command::Reporting { guest: who, on: b.enabled, reply }).await {
        Ok(true) => Json(json!({ "guest": guest, "reporting": b.enabled })).into_response(),
        Ok(false) => error(StatusCode::NOT_FOUND, &format!("no guest {:?}", guest.unwrap_or_default())),
        Err(e) => e.into_response(),
    }
}

async fn reporting_guest(State(shared): State<Arc<Shared>>, UrlPath(id): UrlPath<String>, body: Bytes) -> Response {
    set_reporting(&shared, Some(shared.ctx.guest_of_instance(&id)), &body).await
}

async fn reporting_host(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    set_reporting(&shared, None, &body).await
}

#[derive(Deserialize)]
struct StarlingxBody {
    uuid: Option<String>,
    hostname: Option<String>,
    action: String,
}

/// A StarlingX action name (`live-migrate-begin`, `stop`, ...) as an event type.
pub fn starlingx_event(action: &str) -> Option<EventType> {
    EventType::from_wire(&action.replace('-', "_")).filter(|e| *e != EventType::Unknown)
}

/// The StarlingX VIM's vote API, as the reference host agent served it: answered at once with the guest's timeout
/// (`"0"` when it is not heartbeating, 404 when unknown); the guest's answer goes to the VIM later, as a
/// `vote_result` through the `starlingx-vim` sink.
async fn starlingx(shared: &Shared, uuid: String, body: &Bytes, kind: NotificationType) -> Response {
    let b: StarlingxBody = match parse(body) {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let Some(event) = starlingx_event(&b.action) else {
        return error(StatusCode::BAD_REQUEST, &format!("unknown action {:?}", b.action));
    };
    let guest = shared.ctx.guest_of_instance(&uuid);
    let nt = if kind == NotificationType::Revocable { None } else { Some(kind) };
    let answer = ask(shared, |reply| Command::VoteAsync { guest, event_type: event, notification_type: nt, reply });
    let timeout = match answer.await {
        // the reference answers resize notices with no wait: the VIM goes ahead at once
        Ok(Ok(_)) if nt.is_some() && matches!(event, EventType::ResizeBegin | EventType::ResizeEnd) => "0".to_string(),
        Ok(Ok(t)) => (t.as_millis() / 1000).to_string(),
        Ok(Err(VoteRefusal::UnknownGuest)) => return error(StatusCode::NOT_FOUND, &format!("no instance {uuid}")),
        Ok(Err(_)) => "0".to_string(),
        Err(e) => return e.into_response(),
    };
    Json(json!({
        "uuid": b.uuid.unwrap_or(uuid),
        "hostname": b.hostname.unwrap_or_else(|| shared.ctx.host.clone()),
        "action": b.action,
        "timeout": timeout,
    }))
    .into_response()
}

async fn starlingx_vote(State(shared): State<Arc<Shared>>, UrlPath(uuid): UrlPath<String>, body: Bytes) -> Response {
    starlingx(&shared, uuid, &body, NotificationType::Revocable).await
}

async fn starlingx_notify(State(shared): State<Arc<Shared>>, UrlPath(uuid): UrlPath<String>, body: Bytes) -> Response {
    starlingx(&shared, uuid, &body, NotificationType::Irrevocable).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_are_looked_up_through_the_name_service() {
        assert_eq!(group_id("root"), Some(0));
        assert_eq!(group_id("no-such-group-vigil"), None);
    }

    fn parse_vote_body(body: &[u8]) -> Result<(EventType, Option<NotificationType>), u16> {
        vote_args(&Bytes::copy_from_slice(body)).map_err(|e| e.0.as_u16())
    }

    #[test]
    fn vote_bodies_are_checked() {
        assert_eq!(parse_vote_body(br#"{"event_type":"stop"}"#), Ok((EventType::Stop, None)));
        assert_eq!(
            parse_vote_body(br#"{"event_type":"stop","notification_type":"irrevocable"}"#),
            Ok((EventType::Stop, Some(NotificationType::Irrevocable)))
        );
        assert_eq!(parse_vote_body(br#"{"event_type":"explode"}"#), Err(400));
        assert_eq!(parse_vote_body(br#"{"event_type":"unknown"}"#), Err(400));
        assert_eq!(parse_vote_body(br#"{"event":"stop"}"#), Err(400));
        assert_eq!(parse_vote_body(b"not json"), Err(400));
    }
}
