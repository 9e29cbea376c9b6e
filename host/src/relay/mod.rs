//! The StarlingX controller-side relay (`vigild relay`): what the reference's `guestAgent` was, for vigild.
//!
//! The StarlingX VIM talks to one guest-agent endpoint (`[guest] endpoint_override`, `http://localhost:2410` by
//! default) with a Keystone token in `X-Auth-Token`, and listens for the guest agent's reports on its own guest REST
//! API (`127.0.0.1:30002`). vigild runs on every compute node. The relay, one process on the controller, joins them:
//!
//! - **VIM -> nodes**: `POST /v1/instances/<uuid>/vote|notify` (the VIM's `guest.py`: body `{uuid, hostname,
//!   action}`, reply `{uuid, hostname, action, timeout}`) is routed to the node that hosts the instance; the VIM's
//!   host calls (`/v1/hosts/<uuid>[/enable|/disable]`) turn the node's fault reporting on and off, its instance
//!   calls (`/v1/instances/<uuid>`) one guest's;
//! - **nodes -> VIM**: each node's `starlingx-vim` sink points at the relay, which learns from those reports which
//!   node hosts which instance and passes them to the VIM (`PATCH /nfvi-plugins/v1/instances/<uuid>`), answering
//!   as the VIM did (a closed connection where the VIM wrote no reply is said as 204, or 404 for an alarm: the VIM
//!   does not know the instance).
//!
//! After a restart the routes are rebuilt from each node's `GET /v1/guests` (each guest's `instance_uuid`). Nodes authenticate to the relay with a bearer token; the relay to each node with that node's
//! admin token; the VIM's `X-Auth-Token` is validated against Keystone (`[keystone]`, cached a minute) or a static
//! token (`vim_token_file`, for labs).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, patch, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use tracing::{info, warn};

use crate::upstream::keystone::Keystone;
use crate::upstream::secret::SecretFile;

/// The relay's configuration file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayConfig {
    /// Where the VIM calls it (`[guest] endpoint_override`; default `127.0.0.1:2410`).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// The VIM's guest REST API (default `http://127.0.0.1:30002`).
    #[serde(default = "default_vim")]
    pub vim_url: String,
    /// A file holding a static token the VIM may send in `X-Auth-Token` (for labs).
    pub vim_token_file: Option<PathBuf>,
    /// Keystone, to validate the tokens the VIM sends (with the relay's own service user).
    pub keystone: Option<KeystoneConfig>,
    /// A file holding the bearer token the nodes send with their reports.
    pub node_token_file: PathBuf,
    /// The compute nodes.
    #[serde(rename = "node")]
    pub nodes: Vec<NodeConfig>,
}

/// The relay's Keystone user, as the VIM's own `[openstack]` section names it.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeystoneConfig {
    /// Keystone's URL (with or without `/v3`).
    pub auth_url: String,
    /// The service user.
    pub username: String,
    /// A file with its password.
    pub password_file: PathBuf,
    /// Its domain (default `Default`).
    #[serde(default = "default_domain")]
    pub user_domain_name: String,
    /// The project (default `services`).
    #[serde(default = "default_project")]
    pub project_name: String,
    /// The project's domain (default `Default`).
    #[serde(default = "default_domain")]
    pub project_domain_name: String,
}

fn default_domain() -> String {
    "Default".into()
}

fn default_project() -> String {
    "services".into()
}

/// One compute node's vigild.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Its host name, as its reports say it (`hostname`).
    pub name: String,
    /// Its admin API (`--admin-tcp`), e.g. `http://compute-0:9300`.
    pub url: String,
    /// A file with its admin bearer token (`--admin-token-file`).
    pub token_file: PathBuf,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 2410))
}

fn default_vim() -> String {
    "http://127.0.0.1:30002".into()
}

impl RelayConfig {
    /// Reads and checks a file.
    pub fn load(path: &std::path::Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let cfg: RelayConfig = toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        if cfg.nodes.is_empty() {
            return Err(format!("{}: no [[node]]", path.display()));
        }
        if cfg.vim_token_file.is_none() && cfg.keystone.is_none() {
            return Err(format!(
                "{}: vim_token_file or [keystone]: how to check the VIM's X-Auth-Token",
                path.display()
            ));
        }
        Ok(cfg)
    }
}

struct Node {
    cfg: NodeConfig,
    token: Mutex<SecretFile>,
}

struct Relay {
    vim_url: String,
    vim_token: Option<Mutex<SecretFile>>,
    keystone: Option<tokio::sync::Mutex<Keystone>>,
    /// VIM tokens Keystone said are valid, and until when the relay believes it without asking again.
    valid: Mutex<HashMap<String, std::time::Instant>>,
    node_token: Mutex<SecretFile>,
    nodes: Vec<Node>,
    /// Instance UUID -> index of the node hosting it.
    routes: Mutex<HashMap<String, usize>>,
    http: reqwest::Client,
}

/// Runs the relay until the process is stopped.
pub fn run(cfg: RelayConfig) -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async move {
        let relay = Arc::new(Relay {
            vim_url: cfg.vim_url.trim_end_matches('/').to_string(),
            vim_token: match &cfg.vim_token_file {
                Some(f) => Some(Mutex::new(SecretFile::open(f).map_err(std::io::Error::other)?)),
                None => None,
            },
            keystone: match &cfg.keystone {
                Some(k) => Some(tokio::sync::Mutex::new(
                    Keystone::new(
                        &k.auth_url,
                        &k.username,
                        &k.password_file,
                        (&k.user_domain_name, &k.project_name, &k.project_domain_name),
                        reqwest::Client::builder()
                            .timeout(Duration::from_secs(10))
                            .build()
                            .map_err(std::io::Error::other)?,
                    )
                    .map_err(std::io::Error::other)?,
                )),
                None => None,
            },
            valid: Mutex::new(HashMap::new()),
            node_token: Mutex::new(SecretFile::open(&cfg.node_token_file).map_err(std::io::Error::other)?),
            nodes: cfg
                .nodes
                .iter()
                .map(|n| {
                    let token = SecretFile::open(&n.token_file).map_err(std::io::Error::other)?;
                    Ok(Node { cfg: n.clone(), token: Mutex::new(token) })
                })
                .collect::<std::io::Result<_>>()?,
            routes: Mutex::new(HashMap::new()),
            http: reqwest::Client::builder().timeout(Duration::from_secs(30)).build().map_err(std::io::Error::other)?,
        });
        let listener = tokio::net::TcpListener::bind(cfg.listen).await?;
        info!(listen = %cfg.listen, nodes = relay.nodes.len(), "relay listening");
        tokio::spawn(rebuild_routes(Arc::clone(&relay)));
        let app = Router::new()
            .route("/nfvi-plugins/v1/instances/{uuid}", patch(from_node))
            .route("/v1/instances/{uuid}/vote", post(vote))
            .route("/v1/instances/{uuid}/notify", post(notify))
            .route("/v1/instances/{uuid}", any(instance))
            .route("/v1/hosts/{uuid}", any(host))
            .route("/v1/hosts/{uuid}/{op}", any(host_op))
            .with_state(relay);
        // the same limits as the admin API: a bounded number of connections, idle ones closed
        let (_keep, never) = tokio::sync::watch::channel(false);
        crate::control::serve::serve(listener, app, crate::control::serve::UNIX_LIMITS, never).await;
        Ok(())
    })
}

fn error(code: StatusCode, msg: &str) -> Response {
    (code, Json(json!({ "error": msg }))).into_response()
}

fn secret_matches(file: &Mutex<SecretFile>, given: Option<&str>) -> bool {
    let Ok(mut f) = file.lock() else { return false };
    let (want, _) = f.get();
    given.is_some_and(|g| g.len() == want.len() && g.bytes().zip(want.bytes()).fold(0u8, |a, (x, y)| a | (x ^ y)) == 0)
}

/// How long a token Keystone said is valid is believed without asking again.
const VALID_FOR: Duration = Duration::from_secs(60);

/// Whether the VIM's `X-Auth-Token` is the static token, or one Keystone says is valid (asked at most once a minute
/// per token).
async fn vim_allowed(r: &Relay, h: &HeaderMap) -> bool {
    let Some(given) = h.get("X-Auth-Token").and_then(|v| v.to_str().ok()) else { return false };
    if r.vim_token.as_ref().is_some_and(|t| secret_matches(t, Some(given))) {
        return true;
    }
    let Some(k) = &r.keystone else { return false };
    let now = std::time::Instant::now();
    if r.valid.lock().is_ok_and(|v| v.get(given).is_some_and(|until| *until > now)) {
        return true;
    }
    match k.lock().await.validate(given).await {
        Ok(true) => {
            if let Ok(mut v) = r.valid.lock() {
                v.retain(|_, until| *until > now);
                v.insert(given.to_string(), now + VALID_FOR);
            }
            true
        }
        Ok(false) => false,
        Err(e) => {
            warn!(error = %e.0, "could not validate the VIM's token");
            false
        }
    }
}

fn node_allowed(r: &Relay, h: &HeaderMap) -> bool {
    let bearer = h.get("Authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    secret_matches(&r.node_token, bearer)
}

impl Relay {
    fn node_by_name(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.cfg.name == name)
    }

    fn node_of(&self, uuid: &str) -> Option<usize> {
        self.routes.lock().ok()?.get(uuid).copied()
    }

    /// Calls node `i`'s admin API.
    async fn call_node(
        &self,
        i: usize,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, Value), String> {
        let n = &self.nodes[i];
        let token = n.token.lock().map(|mut t| t.get().0.to_string()).unwrap_or_default();
        let mut req =
            self.http.request(method, format!("{}{path}", n.cfg.url.trim_end_matches('/'))).bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.map_err(|e| format!("node {}: {}", n.cfg.name, e.without_url()))?;
        let code = r.status().as_u16();
        let v = r.json::<Value>().await.unwrap_or(Value::Null);
        Ok((code, v))
    }
}

/// Rebuilds the routes from every node's guests (after a restart of the relay), retrying nodes that do not answer.
async fn rebuild_routes(r: Arc<Relay>) {
    let mut pending: Vec<usize> = (0..r.nodes.len()).collect();
    while !pending.is_empty() {
        let mut left = Vec::new();
        for i in pending {
            match r.call_node(i, Method::GET, "/v1/guests", None).await {
                Ok((200, v)) => {
                    let ids: Vec<String> = v["guests"]
                        .as_array()
                        .map(|g| {
                            g.iter()
                                .filter_map(|g| g["instance_uuid"].as_str().or(g["id"].as_str()).map(String::from))
                                .collect()
                        })
                        .unwrap_or_default();
                    if let Ok(mut routes) = r.routes.lock() {
                        for id in &ids {
                            routes.entry(id.clone()).or_insert(i);
                        }
                    }
                    info!(node = %r.nodes[i].cfg.name, guests = ids.len(), "routes learned from the node");
                }
                other => {
                    warn!(node = %r.nodes[i].cfg.name, answer = ?other, "node did not list its guests; retrying");
                    left.push(i);
                }
            }
        }
        pending = left;
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
    }
}

/// A node's report: learn where the instance is, pass it to the VIM, answer as the VIM did.
async fn from_node(State(r): State<Arc<Relay>>, UrlPath(uuid): UrlPath<String>, h: HeaderMap, body: Bytes) -> Response {
    if !node_allowed(&r, &h) {
        return error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
    }
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if let Some(i) = v["hostname"].as_str().and_then(|n| r.node_by_name(n)) {
        if let Ok(mut routes) = r.routes.lock() {
            routes.insert(uuid.clone(), i);
        }
    }
    let alarm = v["event-type"] == "alarm";
    let url = format!("{}/nfvi-plugins/v1/instances/{uuid}", r.vim_url);
    match r.http.patch(url).header("Content-Type", "application/json").body(body).send().await {
        Ok(a) => {
            let code = StatusCode::from_u16(a.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            let text = a.bytes().await.unwrap_or_default();
            (code, text).into_response()
        }
        // the VIM writes no reply when it has no payload: for an alarm, that is an instance it does not know
        Err(e) if !e.is_connect() && !e.is_timeout() && alarm => {
            error(StatusCode::NOT_FOUND, "the VIM closed the connection without a reply: it does not know the instance")
        }
        Err(e) if !e.is_connect() && !e.is_timeout() => StatusCode::NO_CONTENT.into_response(),
        Err(e) => error(StatusCode::BAD_GATEWAY, &format!("VIM: {}", e.without_url())),
    }
}

async fn vote(State(r): State<Arc<Relay>>, UrlPath(uuid): UrlPath<String>, h: HeaderMap, body: Bytes) -> Response {
    to_node(&r, &uuid, "vote", &h, body).await
}

async fn notify(State(r): State<Arc<Relay>>, UrlPath(uuid): UrlPath<String>, h: HeaderMap, body: Bytes) -> Response {
    to_node(&r, &uuid, "notify", &h, body).await
}

/// A vote or notice from the VIM, to the node that hosts the instance; its answer back.
async fn to_node(r: &Relay, uuid: &str, what: &str, h: &HeaderMap, body: Bytes) -> Response {
    if !vim_allowed(r, h).await {
        return error(StatusCode::UNAUTHORIZED, "X-Auth-Token refused");
    }
    let Some(i) = r.node_of(uuid) else { return error(StatusCode::NOT_FOUND, &format!("no node hosts {uuid}")) };
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    match r.call_node(i, Method::POST, &format!("/v1/instances/{uuid}/{what}"), Some(v)).await {
        Ok((code, v)) => (StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_GATEWAY), Json(v)).into_response(),
        Err(e) => error(StatusCode::BAD_GATEWAY, &e),
    }
}

/// `/v1/instances/<uuid>`: the VIM creates, sets, queries or deletes an instance's guest services; `state` is the
/// fault reporting of that guest (the guest id is the instance UUID, as in Nova's layout).
async fn instance(
    State(r): State<Arc<Relay>>,
    method: Method,
    UrlPath(uuid): UrlPath<String>,
    h: HeaderMap,
    body: Bytes,
) -> Response {
    if !vim_allowed(&r, &h).await {
        return error(StatusCode::UNAUTHORIZED, "X-Auth-Token refused");
    }
    let Some(i) = r.node_of(&uuid) else { return error(StatusCode::NOT_FOUND, &format!("no node hosts {uuid}")) };
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if method == Method::POST || method == Method::PATCH {
        let on = v["services"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["service"] == "heartbeat"))
            .map(|s| s["state"] == "enabled");
        if let Some(on) = on {
            if let Err(e) = r
                .call_node(i, Method::PUT, &format!("/v1/guests/{uuid}/reporting"), Some(json!({ "enabled": on })))
                .await
            {
                return error(StatusCode::BAD_GATEWAY, &e);
            }
        }
    } else if method == Method::DELETE {
        return Json(json!({ "uuid": uuid })).into_response();
    }
    match r.call_node(i, Method::GET, &format!("/v1/guests/{uuid}"), None).await {
        Ok((200, g)) => {
            let state = if g["reporting"].as_bool().unwrap_or(true) { "enabled" } else { "disabled" };
            let status = if g["state"] == "heartbeating" { "enabled" } else { "disabled" };
            let restart = g["restart_secs"].as_u64().unwrap_or(0).to_string();
            Json(json!({
                "uuid": uuid,
                "hostname": r.nodes[i].cfg.name,
                "services": [{ "service": "heartbeat", "state": state, "status": status, "restart-timeout": restart }],
            }))
            .into_response()
        }
        Ok((code, _)) => error(StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_GATEWAY), "node refused"),
        Err(e) => error(StatusCode::BAD_GATEWAY, &e),
    }
}

async fn host(State(r): State<Arc<Relay>>, UrlPath(uuid): UrlPath<String>, h: HeaderMap, body: Bytes) -> Response {
    if !vim_allowed(&r, &h).await {
        return error(StatusCode::UNAUTHORIZED, "X-Auth-Token refused");
    }
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    Json(json!({ "uuid": uuid, "hostname": v["hostname"] })).into_response()
}

/// `/v1/hosts/<uuid>/enable|disable`: the VIM turns a node's fault reporting on or off (`PUT`), or asks it (`GET`
/// on `.../disable`, as its `host_services_query` does).
async fn host_op(
    State(r): State<Arc<Relay>>,
    method: Method,
    UrlPath((uuid, op)): UrlPath<(String, String)>,
    h: HeaderMap,
    body: Bytes,
) -> Response {
    if !vim_allowed(&r, &h).await {
        return error(StatusCode::UNAUTHORIZED, "X-Auth-Token refused");
    }
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let Some(name) = v["hostname"].as_str() else { return error(StatusCode::BAD_REQUEST, "hostname missing") };
    let Some(i) = r.node_by_name(name) else { return error(StatusCode::NOT_FOUND, &format!("no node {name}")) };
    if method == Method::PUT {
        let on = match op.as_str() {
            "enable" => true,
            "disable" => false,
            _ => return error(StatusCode::NOT_FOUND, "enable or disable"),
        };
        if let Err(e) = r.call_node(i, Method::PUT, "/v1/reporting", Some(json!({ "enabled": on }))).await {
            return error(StatusCode::BAD_GATEWAY, &e);
        }
    }
    match r.call_node(i, Method::GET, "/v1/guests", None).await {
        Ok((200, g)) => {
            let state = if g["reporting"].as_bool().unwrap_or(true) { "enabled" } else { "disabled" };
            Json(json!({ "uuid": uuid, "hostname": name, "state": state })).into_response()
        }
        Ok((code, _)) => error(StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_GATEWAY), "node refused"),
        Err(e) => error(StatusCode::BAD_GATEWAY, &e),
    }
}
