//! The local application API: a UNIX socket (default `/run/vigil/guest.sock`) where applications inside the VM
//! register, answer the agent's own challenges, report health, and take part in votes. JSON lines, documented in
//! `docs/guest-api.md`. Every byte an application sends is checked: a bad line gets an `error` reply and is
//! counted; it never panics the agent or grows its memory (lines are bounded by the core's framer).

use std::prelude::rust_2021::*;

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use mio::net::{UnixListener, UnixStream};
use mio::{Interest, Registry, Token};
use serde::{Deserialize, Serialize};
use vigil_core::{CorrectiveAction, EventType, Health, LineFramer, NotificationType, VoteResult};

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
    framer: LineFramer,
    out: Vec<u8>,
    /// Bad lines received.
    pub errors: u64,
}

/// The API endpoint and its applications.
pub struct Apps {
    listener: UnixListener,
    apps: HashMap<usize, App>,
    next_token: usize,
    base: usize,
    rng: u64,
}

/// An application is unhealthy after this many intervals without an answer.
pub const SILENT_INTERVALS: u32 = 2;
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
        Ok(Apps { listener, apps: HashMap::new(), next_token: base + 1, base, rng: 0x2545_F491_4F6C_DD1D })
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
        if token.0 == self.base {
            while let Ok((mut stream, _)) = self.listener.accept() {
                let t = self.next_token;
                self.next_token += 1;
                if registry.register(&mut stream, Token(t), Interest::READABLE | Interest::WRITABLE).is_ok() {
                    self.apps.insert(
                        t,
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
                            framer: LineFramer::new(),
                            out: Vec::new(),
                            errors: 0,
                        },
                    );
                }
            }
            return;
        }
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
                        let (used, item) = app.framer.push(input);
                        let req = match item {
                            Some(Ok(line)) => Some(serde_json::from_slice::<Request>(line).map_err(|e| e.to_string())),
                            Some(Err(e)) => Some(Err(e.to_string())),
                            None => None,
                        };
                        input = &input[used..];
                        if let Some(req) = req {
                            if handle(app, req, now, &mut self.rng) {
                                closed = true;
                            }
                        }
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
                app.nonce = self.rng >> 11;
                send(app, &Reply::Challenge { nonce: app.nonce });
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
            send(
                app,
                &Reply::Vote {
                    event_type: event.as_str().into(),
                    notification_type: kind.as_str().into(),
                    timeout_ms: u64::from(timeout_ms),
                },
            );
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
