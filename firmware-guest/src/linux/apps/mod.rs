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
use vigil_core::{CorrectiveAction, EventType, Health, LineFramer, NotificationType, VoteResult};

use crate::refapi::{RefFramer, RefMsg};

mod json;
mod reference;

use json::{handle, send};
pub use json::{Reply, Request};
use reference::{event_ordinal, handle_reference, send_reference};

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
/// At most this much output waits for an application that does not read.
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

pub(super) fn flush(app: &mut App) {
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
