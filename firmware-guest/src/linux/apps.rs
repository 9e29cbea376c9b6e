//! The local application APIs: a UNIX socket (default `/run/vigil/guest.sock`) where applications inside the VM
//! register, answer the agent's own challenges, report health, and take part in votes, in JSON lines; and, beside
//! it, the reference guest's binary protocol (`/var/run/.guest_heartbeat_api`, [`crate::refapi`]) for
//! applications linked against `libguest_heartbeat_api`. Both feed the same health aggregation and vote fan-out
//! (`docs/guest-api.md`). Every byte an application sends is checked: a bad line or record is refused and
//! counted; it never panics the agent or grows its memory (lines and records are bounded by their framers).

use std::prelude::rust_2021::*;

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use mio::net::{UnixListener, UnixStream};
use mio::{Interest, Registry, Token};
use serde::{Deserialize, Serialize};
use vigil_core::{CorrectiveAction, EventType, Health, LineFramer, NotificationType, VoteResult};

use crate::refapi::{self, RefFramer, RefMsg};

/// A request from an application.
#[derive(Debug, Deserialize, PartialEq, Eq)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Start being monitored.
    Register {
        /// The application's name (unique per agent).
        name: String,
        /// How often the agent challenges it.
        interval_ms: u64,
        /// What to ask the host for when it is unhealthy or silent.
        #[serde(default = "default_action")]
        corrective_action: String,
    },
    /// Answer to a challenge.
    Response {
        /// The nonce echoed.
        nonce: u64,
        /// `healthy` or `unhealthy`.
        health: String,
        /// Why.
        #[serde(default)]
        log_msg: String,
    },
    /// Spontaneous health report.
    Health {
        /// `healthy` or `unhealthy`.
        health: String,
        /// Why.
        #[serde(default)]
        log_msg: String,
    },
    /// Answer to a vote or notice.
    VoteResult {
        /// `accept`, `reject`, `complete`, ...
        result: String,
        /// Why.
        #[serde(default)]
        log_msg: String,
    },
    /// Stop being monitored (closing the connection does the same).
    Deregister,
}

fn default_action() -> String {
    "log".into()
}

/// A message to an application.
#[derive(Debug, Serialize, PartialEq, Eq)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Reply {
    /// Registration accepted.
    Registered {
        /// Its name.
        name: String,
    },
    /// Prove you are alive: answer with `response` and this nonce.
    Challenge {
        /// The nonce.
        nonce: u64,
    },
    /// The host asks for a vote (`revocable`) or gives notice (`irrevocable`).
    Vote {
        /// What is about to happen.
        event_type: String,
        /// Vote or notice.
        notification_type: String,
        /// Answer within this.
        timeout_ms: u64,
    },
    /// The last request was refused.
    Error {
        /// Why.
        message: String,
    },
}

/// An application's state.
#[derive(Debug)]
pub struct App {
    /// Its name, once registered.
    pub name: Option<String>,
    interval: Duration,
    /// Requested action.
    pub action: CorrectiveAction,
    nonce: u64,
    next_challenge: Instant,
    last_ok: Instant,
    /// Last reported health.
    pub health: Health,
    /// Last reported reason.
    pub log_msg: String,
    /// Answered the open vote.
    pub vote: Option<(VoteResult, String)>,
    stream: UnixStream,
    wire: Wire,
    out: Vec<u8>,
    /// Bad lines or records received.
    pub errors: u64,
}

/// How an application talks to the agent.
#[derive(Debug)]
enum Wire {
    /// JSON lines.
    Json(Box<LineFramer>),
    /// The reference binary protocol.
    Reference {
        framer: Box<RefFramer>,
        seq: u32,
        /// The invocation id of the vote sent to it.
        invocation: u32,
    },
}

impl App {
    fn new(stream: UnixStream, wire: Wire, now: Instant) -> Self {
        App {
            name: None,
            interval: Duration::from_secs(1),
            action: CorrectiveAction::Log,
            nonce: 0,
            next_challenge: now,
            last_ok: now,
            health: Health::Healthy,
            log_msg: String::new(),
            vote: None,
            stream,
            wire,
            out: Vec::new(),
            errors: 0,
        }
    }

    /// Why it counts as unhealthy when it stopped answering (the reference's words for its applications).
    pub fn silent_reason(&self) -> String {
        let name = self.name.as_deref().unwrap_or("?");
        match self.wire {
            Wire::Reference { .. } => {
                format!("Application {name} heartbeat timeout {} ms.", (self.interval * SILENT_INTERVALS).as_millis())
            }
            Wire::Json(_) => format!("{name}: stopped answering"),
        }
    }

    fn is_reference(&self) -> bool {
        matches!(self.wire, Wire::Reference { .. })
    }
}

/// The API endpoint and its applications.
pub struct Apps {
    listener: UnixListener,
    reference: Option<UnixListener>,
    apps: HashMap<usize, App>,
    next_token: usize,
    base: usize,
    rng: u64,
}

/// An application is unhealthy after this many intervals without an answer.
pub const SILENT_INTERVALS: u32 = 2;
/// The reference daemon's limit of applications on its binary API.
pub const MAX_REFERENCE_APPS: usize = 16;
/// The reference's floor for an application's interval.
pub const REFERENCE_MIN_INTERVAL: Duration = Duration::from_millis(400);
const MAX_OUT: usize = 64 * 1024;

impl Apps {
    /// Listens on `path` (replacing a stale socket); tokens from `base` upwards are ours.
    pub fn bind(path: &std::path::Path, registry: &Registry, base: usize) -> io::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let _ = std::fs::remove_file(path);
        let mut listener = UnixListener::bind(path)?;
        registry.register(&mut listener, Token(base), Interest::READABLE)?;
        Ok(Apps {
            listener,
            reference: None,
            apps: HashMap::new(),
            next_token: base + 2,
            base,
            rng: 0x2545_F491_4F6C_DD1D,
        })
    }

    /// Also serves the reference binary protocol on `path`, unless another process serves there already (then
    /// `Ok(false)`: the reference daemon is still in charge). A stale socket file is replaced.
    pub fn bind_reference(&mut self, path: &std::path::Path, registry: &Registry) -> io::Result<bool> {
        use std::os::unix::fs::FileTypeExt;
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            if !meta.file_type().is_socket() || std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Ok(false);
            }
            std::fs::remove_file(path)?;
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut l = UnixListener::bind(path)?;
        registry.register(&mut l, Token(self.base + 1), Interest::READABLE)?;
        self.reference = Some(l);
        Ok(true)
    }

    /// Whether `token` is ours.
    pub fn owns(&self, token: Token) -> bool {
        token.0 >= self.base
    }

    /// Registered applications.
    pub fn iter(&self) -> impl Iterator<Item = &App> {
        self.apps.values().filter(|a| a.name.is_some())
    }

    /// Readiness on one of our tokens.
    pub fn on_ready(&mut self, token: Token, registry: &Registry, now: Instant) {
        if token.0 == self.base || token.0 == self.base + 1 {
            let reference = token.0 == self.base + 1;
            loop {
                let accepted =
                    if reference { self.reference.as_ref().map(|l| l.accept()) } else { Some(self.listener.accept()) };
                let Some(Ok((mut stream, _))) = accepted else { break };
                let t = self.next_token;
                self.next_token += 1;
                if registry.register(&mut stream, Token(t), Interest::READABLE | Interest::WRITABLE).is_ok() {
                    let wire = if reference {
                        Wire::Reference { framer: Box::default(), seq: 0, invocation: 0 }
                    } else {
                        Wire::Json(Box::new(LineFramer::new()))
                    };
                    self.apps.insert(t, App::new(stream, wire, now));
                }
            }
            return;
        }
        let reference_apps = self.apps.values().filter(|a| a.is_reference() && a.name.is_some()).count();
        let Some(app) = self.apps.get_mut(&token.0) else { return };
        let mut buf = [0u8; 4096];
        let mut closed = false;
        loop {
            match app.stream.read(&mut buf) {
                Ok(0) => {
                    closed = true;
                    break;
                }
                Ok(n) => {
                    let mut input = &buf[..n];
                    while !input.is_empty() {
                        let used = match &mut app.wire {
                            Wire::Json(framer) => {
                                let (used, item) = framer.push(input);
                                let req = match item {
                                    Some(Ok(line)) => {
                                        Some(serde_json::from_slice::<Request>(line).map_err(|e| e.to_string()))
                                    }
                                    Some(Err(e)) => Some(Err(e.to_string())),
                                    None => None,
                                };
                                if let Some(req) = req {
                                    closed |= handle(app, req, now, &mut self.rng);
                                }
                                used
                            }
                            Wire::Reference { framer, .. } => {
                                let (used, item) = framer.push(input);
                                if let Some(item) = item {
                                    closed |= handle_reference(app, item, now, &mut self.rng, reference_apps);
                                }
                                used
                            }
                        };
                        input = &input[used..];
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    closed = true;
                    break;
                }
            }
        }
        flush(app);
        if closed {
            if let Some(mut app) = self.apps.remove(&token.0) {
                let _ = registry.deregister(&mut app.stream);
            }
        }
    }

    /// Sends due challenges; returns the next time something is due.
    pub fn tick(&mut self, now: Instant) -> Option<Instant> {
        let mut next = None::<Instant>;
        for app in self.apps.values_mut() {
            if app.name.is_none() {
                continue;
            }
            if now >= app.next_challenge {
                self.rng ^= self.rng << 13;
                self.rng ^= self.rng >> 7;
                self.rng ^= self.rng << 17;
                if app.is_reference() {
                    app.nonce = (self.rng >> 33) | 1;
                    send_reference(app, &RefMsg::Challenge { heartbeat_challenge: app.nonce as u32 });
                } else {
                    app.nonce = self.rng >> 11;
                    send(app, &Reply::Challenge { nonce: app.nonce });
                }
                app.next_challenge = now + app.interval;
                flush(app);
            }
            // when it would turn silent-unhealthy, or the next challenge
            let silent_at = app.last_ok + app.interval * SILENT_INTERVALS;
            let t = if silent_at > now { silent_at.min(app.next_challenge) } else { app.next_challenge };
            next = Some(next.map_or(t, |n| n.min(t)));
        }
        next
    }

    /// Whether `app` has been silent too long.
    pub fn is_silent(app: &App, now: Instant) -> bool {
        now >= app.last_ok + app.interval * SILENT_INTERVALS
    }

    /// Tells every registered application about a vote; clears their previous answers.
    pub fn start_vote(&mut self, event: EventType, kind: NotificationType, timeout_ms: u32) {
        for app in self.apps.values_mut().filter(|a| a.name.is_some()) {
            app.vote = None;
            if let Wire::Reference { invocation, .. } = &mut app.wire {
                *invocation = invocation.wrapping_add(1);
                let msg = RefMsg::ActionNotify {
                    invocation_id: *invocation,
                    event_type: event_ordinal(event),
                    notification_type: match kind {
                        NotificationType::Revocable => 1,
                        NotificationType::Irrevocable => 2,
                        NotificationType::Unknown => 0,
                    },
                };
                send_reference(app, &msg);
            } else {
                send(
                    app,
                    &Reply::Vote {
                        event_type: event.as_str().into(),
                        notification_type: kind.as_str().into(),
                        timeout_ms: u64::from(timeout_ms),
                    },
                );
            }
            flush(app);
        }
    }

    /// Writable readiness or anything else worth flushing.
    pub fn flush_all(&mut self) {
        for app in self.apps.values_mut() {
            flush(app);
        }
    }
}

/// Applies one request; returns true when the application leaves.
fn handle(app: &mut App, req: Result<Request, String>, now: Instant, rng: &mut u64) -> bool {
    let req = match req {
        Ok(r) => r,
        Err(e) => {
            app.errors += 1;
            send(app, &Reply::Error { message: e });
            return false;
        }
    };
    let refuse = |app: &mut App, msg: &str| {
        app.errors += 1;
        send(app, &Reply::Error { message: msg.into() });
    };
    match req {
        Request::Register { name, interval_ms, corrective_action } => {
            let Some(action) = CorrectiveAction::from_wire(&corrective_action) else {
                refuse(app, "corrective_action must be none, log, reboot or stop");
                return false;
            };
            if name.is_empty() || name.len() > 64 || !(100..=3_600_000).contains(&interval_ms) {
                refuse(app, "name must be 1..=64 bytes and interval_ms within 100..=3600000");
                return false;
            }
            app.interval = Duration::from_millis(interval_ms);
            app.action = action;
            app.last_ok = now;
            app.next_challenge = now;
            *rng = rng.wrapping_add(interval_ms);
            send(app, &Reply::Registered { name: name.clone() });
            app.name = Some(name);
        }
        _ if app.name.is_none() => refuse(app, "register first"),
        Request::Response { nonce, health, log_msg } => match Health::from_wire(&health) {
            Some(h) if nonce == app.nonce && nonce != 0 => {
                app.health = h;
                app.log_msg = log_msg;
                app.last_ok = now;
            }
            Some(_) => refuse(app, "stale nonce"),
            None => refuse(app, "health must be healthy or unhealthy"),
        },
        Request::Health { health, log_msg } => match Health::from_wire(&health) {
            Some(h) => {
                app.health = h;
                app.log_msg = log_msg;
            }
            None => refuse(app, "health must be healthy or unhealthy"),
        },
        Request::VoteResult { result, log_msg } => match VoteResult::from_wire(&result) {
            Some(r) => app.vote = Some((r, log_msg)),
            None => refuse(app, "unknown vote result"),
        },
        Request::Deregister => return true,
    }
    false
}

/// The reference's action ordinals: 0 unknown, 1 none, 2 reboot, 3 stop, 4 log.
fn action_of(ordinal: u32) -> CorrectiveAction {
    match ordinal {
        1 => CorrectiveAction::None,
        2 => CorrectiveAction::Reboot,
        3 => CorrectiveAction::Stop,
        4 => CorrectiveAction::Log,
        _ => CorrectiveAction::Unknown,
    }
}

/// The reference's event ordinals, in `EventType`'s order (unknown first).
fn event_ordinal(e: EventType) -> u32 {
    match e {
        EventType::Unknown => 0,
        EventType::Stop => 1,
        EventType::Reboot => 2,
        EventType::Suspend => 3,
        EventType::Pause => 4,
        EventType::Unpause => 5,
        EventType::Resume => 6,
        EventType::ResizeBegin => 7,
        EventType::ResizeEnd => 8,
        EventType::LiveMigrateBegin => 9,
        EventType::LiveMigrateEnd => 10,
        EventType::ColdMigrateBegin => 11,
        EventType::ColdMigrateEnd => 12,
    }
}

/// Applies one record of the reference protocol; returns true when the application leaves (FINAL, or refused).
fn handle_reference(
    app: &mut App,
    item: Result<(u32, RefMsg), refapi::RefError>,
    now: Instant,
    rng: &mut u64,
    registered: usize,
) -> bool {
    let Ok((_, msg)) = item else {
        app.errors += 1;
        return false;
    };
    match msg {
        RefMsg::Init { name, heartbeat_interval_ms, corrective_action, .. } => {
            if app.name.is_none() && registered >= MAX_REFERENCE_APPS {
                // the reference daemon's limit: refused cleanly, with an answer, then closed
                send_reference(app, &RefMsg::InitAck { accepted: 0 });
                flush(app);
                return true;
            }
            let name = if name.is_empty() { "unnamed".to_string() } else { name.to_string() };
            app.interval = Duration::from_millis(u64::from(heartbeat_interval_ms)).max(REFERENCE_MIN_INTERVAL);
            app.action = action_of(corrective_action);
            app.last_ok = now;
            app.next_challenge = now;
            *rng = rng.wrapping_add(u64::from(heartbeat_interval_ms));
            app.name = Some(name);
            send_reference(app, &RefMsg::InitAck { accepted: 1 });
        }
        _ if app.name.is_none() => app.errors += 1,
        RefMsg::ChallengeResponse { heartbeat_response, health, corrective_action, log_msg } => {
            if u64::from(heartbeat_response) == app.nonce {
                app.health = if health == 1 { Health::Healthy } else { Health::Unhealthy };
                if health != 1 && corrective_action != 0 {
                    app.action = action_of(corrective_action);
                }
                app.log_msg = log_msg.to_string();
                app.last_ok = now;
            } else {
                app.errors += 1;
            }
        }
        RefMsg::ActionResponse { invocation_id, vote_result, log_msg, .. } => match &app.wire {
            Wire::Reference { invocation, .. } if *invocation == invocation_id => {
                let r = match vote_result {
                    1 => VoteResult::Accept,
                    2 => VoteResult::Reject,
                    3 => VoteResult::Complete,
                    _ => VoteResult::Unknown,
                };
                app.vote = Some((r, log_msg.to_string()));
            }
            _ => app.errors += 1,
        },
        RefMsg::Final { .. } => return true,
        RefMsg::InitAck { .. } | RefMsg::Challenge { .. } | RefMsg::ActionNotify { .. } => app.errors += 1,
    }
    false
}

fn send_reference(app: &mut App, msg: &RefMsg) {
    if app.out.len() > MAX_OUT {
        return;
    }
    if let Wire::Reference { seq, .. } = &mut app.wire {
        *seq = seq.wrapping_add(1);
        let mut rec = [0u8; refapi::RECORD];
        refapi::encode(msg, *seq, &mut rec);
        app.out.extend_from_slice(&rec);
    }
}

fn send(app: &mut App, reply: &Reply) {
    if app.out.len() > MAX_OUT {
        return; // an application that does not read loses messages, not our memory
    }
    if let Ok(mut line) = serde_json::to_vec(reply) {
        line.push(b'\n');
        app.out.extend_from_slice(&line);
    }
}

fn flush(app: &mut App) {
    while !app.out.is_empty() {
        match app.stream.write(&app.out) {
            Ok(0) => break,
            Ok(n) => {
                app.out.drain(..n);
            }
            Err(_) => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_and_bad_ones_are_refused() {
        let r: Request =
            serde_json::from_str(r#"{"op":"register","name":"db","interval_ms":500,"corrective_action":"reboot"}"#)
                .unwrap();
        assert_eq!(r, Request::Register { name: "db".into(), interval_ms: 500, corrective_action: "reboot".into() });
        assert!(serde_json::from_str::<Request>(r#"{"op":"explode"}"#).is_err());
        assert!(serde_json::from_str::<Request>(r#"{"op":"health","health":"healthy","x":1}"#).is_err());
        let v = serde_json::to_string(&Reply::Vote {
            event_type: "stop".into(),
            notification_type: "revocable".into(),
            timeout_ms: 9,
        })
        .unwrap();
        assert_eq!(v, r#"{"op":"vote","event_type":"stop","notification_type":"revocable","timeout_ms":9}"#);
    }
}
