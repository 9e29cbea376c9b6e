//! The messages of the guest-heartbeat protocol (version 3, revision 1) as typed Rust, and their encoding.
//!
//! Every `msg_type` and every enumerated string of the protocol is an enum here; strings are bounded
//! [`heapless::String`]s with the protocol's limits. Encoding writes `\n{...}\n` (as StarlingX senders do, so a
//! message never glues onto stale bytes the peer still holds) into a caller's buffer, escaping strings.
//! Decoding lives in [`crate::codec`]. This module must never allocate or panic.

use core::fmt;

use serde::ser::{Serialize, SerializeStruct, Serializer};

use crate::framer::MAX_LINE;

/// Protocol version this crate speaks; lower versions are refused, higher accepted.
pub const VERSION: u32 = 3;
/// Protocol revision this crate speaks.
pub const REVISION: u32 = 1;
/// Longest string field other than `name` and `log_msg`, in bytes.
pub const MAX_STR: usize = 32;
/// Longest `name`, in bytes.
pub const MAX_NAME: usize = 64;
/// Longest `log_msg`, in bytes.
pub const MAX_LOG_MSG: usize = 224;
/// Largest encoded message including its leading and trailing `\n`: a buffer this big always suffices.
pub const MAX_WIRE: usize = MAX_LINE + 2;
/// Largest nonce a challenge may carry: the reference guest parses it as a signed 32-bit integer.
pub const MAX_NONCE: u32 = i32::MAX as u32;

/// A guest's name as it declares it in `init`.
pub type Name = Text<MAX_NAME>;
/// A free-text `log_msg`.
pub type LogMsg = Text<MAX_LOG_MSG>;
/// A bounded string of at most `N` (<= 255) bytes with a one-byte length.
pub type Text<const N: usize> = heapless::String<N, u8>;

/// Copies `s` into a bounded string, cutting at a character boundary if it is too long, and replacing control
/// characters with spaces so the encoded form stays small (each would otherwise take six bytes as `\u00XX`).
pub fn bounded<const N: usize>(s: &str) -> Text<N> {
    let mut out = Text::new();
    for c in s.chars() {
        let c = if c.is_control() { ' ' } else { c };
        if out.push(c).is_err() {
            break;
        }
    }
    out
}

macro_rules! wire_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $wire:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[cfg_attr(feature = "defmt", derive(defmt::Format))]
        pub enum $name { $($(#[$vmeta])* $variant,)+ }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The exact string on the wire.
            pub const fn as_str(self) -> &'static str {
                match self { $($name::$variant => $wire,)+ }
            }

            /// Parses the exact wire string.
            pub fn from_wire(s: &str) -> Option<Self> {
                match s { $($wire => Some($name::$variant),)+ _ => None }
            }

            /// Parses the exact wire string from its bytes (no UTF-8 check needed: a match is ASCII).
            pub fn from_wire_bytes(s: &[u8]) -> Option<Self> {
                match s { $(_ if s == $wire.as_bytes() => Some($name::$variant),)+ _ => None }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
    };
}

wire_enum!(
    /// The `msg_type` header field.
    MsgType {
        /// guest -> host: register.
        Init = "init",
        /// host -> guest: registration accepted.
        InitAck = "init_ack",
        /// host -> guest: heartbeat nonce.
        Challenge = "challenge",
        /// guest -> host: nonce echoed with health.
        ChallengeResponse = "challenge_response",
        /// host -> guest: vote request or notice.
        ActionNotify = "action_notify",
        /// guest -> host: vote answer.
        ActionResponse = "action_response",
        /// guest -> host: graceful deregistration.
        Exit = "exit",
        /// host -> guest: a message was refused.
        Nack = "nack",
    }
);

wire_enum!(
    /// `heartbeat_health`.
    Health {
        /// The application is fine.
        Healthy = "healthy",
        /// The application reports a fault.
        Unhealthy = "unhealthy",
        /// Any other string (the reference host stores whatever it gets): proof of life, but no verdict on health.
        Unknown = "unknown",
    }
);

wire_enum!(
    /// `corrective_action`; ordered by severity, so combining is `max`: stop > reboot > log > none.
    #[derive(PartialOrd, Ord, Default)]
    CorrectiveAction {
        /// Nothing to do.
        #[default]
        None = "none",
        /// The reference guest's fallback when its configuration gives nothing valid. Vigil treats it as `log`
        /// (report, never act): see [`CorrectiveAction::effective`].
        Unknown = "unknown",
        /// Record the fault only.
        Log = "log",
        /// Reboot the VM.
        Reboot = "reboot",
        /// Stop the VM.
        Stop = "stop",
    }
);

wire_enum!(
    /// `event_type` of a vote or notice.
    EventType {
        /// Stop the VM.
        Stop = "stop",
        /// Reboot the VM.
        Reboot = "reboot",
        /// Suspend the VM.
        Suspend = "suspend",
        /// Pause the VM.
        Pause = "pause",
        /// Unpause the VM.
        Unpause = "unpause",
        /// Resume the VM.
        Resume = "resume",
        /// Resize starts.
        ResizeBegin = "resize_begin",
        /// Resize ended.
        ResizeEnd = "resize_end",
        /// Live migration starts.
        LiveMigrateBegin = "live_migrate_begin",
        /// Live migration ended.
        LiveMigrateEnd = "live_migrate_end",
        /// Cold migration starts.
        ColdMigrateBegin = "cold_migrate_begin",
        /// Cold migration ended.
        ColdMigrateEnd = "cold_migrate_end",
        /// The reference's fallback member; Vigil never sends it and matches it to the open vote.
        Unknown = "unknown",
    }
);

impl CorrectiveAction {
    /// What the host acts on: `unknown` is reported as `log` — the guest did not ask for anything destructive.
    pub const fn effective(self) -> CorrectiveAction {
        match self {
            CorrectiveAction::Unknown => CorrectiveAction::Log,
            a => a,
        }
    }
}

impl EventType {
    /// Whether the protocol votes on this event before notifying it (`*_begin`, stop, reboot, pause, suspend).
    pub const fn is_voted(self) -> bool {
        !matches!(
            self,
            EventType::Unpause
                | EventType::Unknown
                | EventType::Resume
                | EventType::ResizeEnd
                | EventType::LiveMigrateEnd
                | EventType::ColdMigrateEnd
        )
    }
}

wire_enum!(
    /// `notification_type`.
    NotificationType {
        /// A vote: the guest may reject.
        Revocable = "revocable",
        /// A notice: the guest answers `complete`.
        Irrevocable = "irrevocable",
        /// The reference's fallback member; Vigil never sends it and matches it to the open vote.
        Unknown = "unknown",
    }
);

wire_enum!(
    /// `vote_result`.
    VoteResult {
        /// Proceed.
        Accept = "accept",
        /// Do not proceed.
        Reject = "reject",
        /// A notice was handled.
        Complete = "complete",
        /// No answer in time (Vigil reports this as such, never as "proceed").
        Timeout = "timeout",
        /// The guest failed to decide.
        Error = "error",
        /// The reference guest's answer when its notification script gives nothing usable.
        Unknown = "unknown",
    }
);

/// `init`: a guest registers.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Init {
    /// Random per registration attempt; echoed by `init_ack`.
    pub invocation_id: u32,
    /// The guest's self-declared name (informational: identity comes from the socket).
    pub name: Name,
    /// Requested challenge interval.
    pub heartbeat_interval_ms: u32,
    /// Seconds the guest needs to vote.
    pub vote_secs: u32,
    /// Seconds of notice before shutdown.
    pub shutdown_notice_secs: u32,
    /// Seconds of notice before suspend.
    pub suspend_notice_secs: u32,
    /// Seconds of notice before resume.
    pub resume_notice_secs: u32,
    /// Seconds a restart takes.
    pub restart_secs: u32,
    /// The action the guest wants on heartbeat loss.
    pub corrective_action: CorrectiveAction,
}

/// `challenge_response`: the nonce echoed with the application's health.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ChallengeResponse {
    /// The nonce echoed.
    pub heartbeat_response: u32,
    /// Health of the guest's applications.
    pub heartbeat_health: Health,
    /// What the guest asks the host to do.
    pub corrective_action: CorrectiveAction,
    /// Why.
    pub log_msg: LogMsg,
}

/// `action_notify`: a vote request or a notice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ActionNotify {
    /// The guest's current invocation id.
    pub invocation_id: u32,
    /// What is about to happen or happened.
    pub event_type: EventType,
    /// Vote or notice.
    pub notification_type: NotificationType,
    /// How long the host waits for the answer.
    pub timeout_ms: u32,
}

/// `action_response`: a vote's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ActionResponse {
    /// Echo of the notify's invocation id.
    pub invocation_id: u32,
    /// Echo of the notify's event type.
    pub event_type: EventType,
    /// Echo of the notify's notification type.
    pub notification_type: NotificationType,
    /// The answer.
    pub vote_result: VoteResult,
    /// Why.
    pub log_msg: LogMsg,
}

/// The body of a message, by `msg_type`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Body {
    /// See [`Init`].
    Init(Init),
    /// Registration accepted.
    InitAck {
        /// Echo of the `init`'s id.
        invocation_id: u32,
    },
    /// Heartbeat challenge.
    Challenge {
        /// Nonce, within `0..=MAX_NONCE` when Vigil sends it.
        heartbeat_challenge: u32,
    },
    /// See [`ChallengeResponse`].
    ChallengeResponse(ChallengeResponse),
    /// See [`ActionNotify`].
    ActionNotify(ActionNotify),
    /// See [`ActionResponse`].
    ActionResponse(ActionResponse),
    /// Graceful deregistration.
    Exit {
        /// Why.
        log_msg: LogMsg,
    },
    /// A refused message.
    Nack {
        /// The guest's current invocation id (0 if none).
        invocation_id: u32,
        /// Why it was refused.
        log_msg: LogMsg,
    },
}

impl Body {
    /// The `msg_type` of this body.
    pub const fn msg_type(&self) -> MsgType {
        match self {
            Body::Init(_) => MsgType::Init,
            Body::InitAck { .. } => MsgType::InitAck,
            Body::Challenge { .. } => MsgType::Challenge,
            Body::ChallengeResponse(_) => MsgType::ChallengeResponse,
            Body::ActionNotify(_) => MsgType::ActionNotify,
            Body::ActionResponse(_) => MsgType::ActionResponse,
            Body::Exit { .. } => MsgType::Exit,
            Body::Nack { .. } => MsgType::Nack,
        }
    }
}

/// One protocol message: the common header and a body.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Message {
    /// `version` (3 when we send; at least 3 when we accept).
    pub version: u32,
    /// `revision`.
    pub revision: u32,
    /// The sender's own counter: logged, never checked.
    pub sequence: u32,
    /// The rest.
    pub body: Body,
}

impl Message {
    /// A message of our version and revision.
    pub const fn new(sequence: u32, body: Body) -> Self {
        Message { version: VERSION, revision: REVISION, sequence, body }
    }

    /// Writes `\n{json}\n` into `buf`; returns the number of bytes written.
    ///
    /// Fails with [`EncodeError::BufferTooSmall`] (saying how much room is needed) or, when the JSON would exceed
    /// [`MAX_LINE`] so that a receiver must drop it, [`EncodeError::MessageTooLong`]. A buffer of [`MAX_WIRE`]
    /// bytes never gets `BufferTooSmall`.
    pub fn encode(&self, buf: &mut [u8]) -> Result<usize, EncodeError> {
        if buf.len() < MAX_WIRE {
            let mut scratch = [0u8; MAX_WIRE];
            let n = self.encode_into(&mut scratch)?;
            return match buf.get_mut(..n) {
                Some(dst) => {
                    dst.copy_from_slice(&scratch[..n]);
                    Ok(n)
                }
                None => Err(EncodeError::BufferTooSmall { needed: n }),
            };
        }
        self.encode_into(buf)
    }

    /// [`encode`](Self::encode) without the fast path (see [`crate::fast`]): for the tests that compare the two.
    #[doc(hidden)]
    pub fn encode_general(&self, buf: &mut [u8; MAX_WIRE]) -> Result<usize, EncodeError> {
        self.encode_serde(buf)
    }

    fn encode_into(&self, buf: &mut [u8]) -> Result<usize, EncodeError> {
        match crate::fast::encode(self, buf) {
            Some(n) => Ok(n),
            None => self.encode_serde(buf),
        }
    }

    fn encode_serde(&self, buf: &mut [u8]) -> Result<usize, EncodeError> {
        let Some((first, rest)) = buf.split_first_mut() else {
            return Err(EncodeError::BufferTooSmall { needed: MAX_WIRE });
        };
        *first = b'\n';
        let limit = rest.len().min(MAX_LINE + 1);
        let n = serde_json_core::to_slice(self, &mut rest[..limit]).map_err(|_| EncodeError::MessageTooLong)?;
        if n > MAX_LINE {
            return Err(EncodeError::MessageTooLong);
        }
        rest[n] = b'\n';
        Ok(n + 2)
    }
}

/// Why a message could not be encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum EncodeError {
    /// The caller's buffer is too small; `needed` bytes would do.
    BufferTooSmall {
        /// Bytes the encoded message takes.
        needed: usize,
    },
    /// The JSON would be longer than [`MAX_LINE`], so a receiver would drop it.
    MessageTooLong,
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::BufferTooSmall { needed } => {
                write!(f, "buffer too small: {needed} bytes needed")
            }
            EncodeError::MessageTooLong => write!(f, "message longer than {MAX_LINE} bytes"),
        }
    }
}

impl core::error::Error for EncodeError {}

impl Serialize for Message {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // serde-json-core ignores the length hint.
        let mut st = s.serialize_struct("message", 0)?;
        st.serialize_field("version", &self.version)?;
        st.serialize_field("revision", &self.revision)?;
        st.serialize_field("msg_type", &self.body.msg_type())?;
        st.serialize_field("sequence", &self.sequence)?;
        match &self.body {
            Body::Init(m) => {
                st.serialize_field("invocation_id", &m.invocation_id)?;
                st.serialize_field("name", m.name.as_str())?;
                st.serialize_field("heartbeat_interval_ms", &m.heartbeat_interval_ms)?;
                st.serialize_field("vote_secs", &m.vote_secs)?;
                st.serialize_field("shutdown_notice_secs", &m.shutdown_notice_secs)?;
                st.serialize_field("suspend_notice_secs", &m.suspend_notice_secs)?;
                st.serialize_field("resume_notice_secs", &m.resume_notice_secs)?;
                st.serialize_field("restart_secs", &m.restart_secs)?;
                st.serialize_field("corrective_action", &m.corrective_action)?;
            }
            Body::InitAck { invocation_id } => st.serialize_field("invocation_id", invocation_id)?,
            Body::Challenge { heartbeat_challenge } => {
                st.serialize_field("heartbeat_challenge", heartbeat_challenge)?
            }
            Body::ChallengeResponse(m) => {
                st.serialize_field("heartbeat_response", &m.heartbeat_response)?;
                st.serialize_field("heartbeat_health", &m.heartbeat_health)?;
                st.serialize_field("corrective_action", &m.corrective_action)?;
                st.serialize_field("log_msg", m.log_msg.as_str())?;
            }
            Body::ActionNotify(m) => {
                st.serialize_field("invocation_id", &m.invocation_id)?;
                st.serialize_field("event_type", &m.event_type)?;
                st.serialize_field("notification_type", &m.notification_type)?;
                st.serialize_field("timeout_ms", &m.timeout_ms)?;
            }
            Body::ActionResponse(m) => {
                st.serialize_field("invocation_id", &m.invocation_id)?;
                st.serialize_field("event_type", &m.event_type)?;
                st.serialize_field("notification_type", &m.notification_type)?;
                st.serialize_field("vote_result", &m.vote_result)?;
                st.serialize_field("log_msg", m.log_msg.as_str())?;
            }
            Body::Exit { log_msg } => st.serialize_field("log_msg", log_msg.as_str())?,
            Body::Nack { invocation_id, log_msg } => {
                st.serialize_field("invocation_id", invocation_id)?;
                st.serialize_field("log_msg", log_msg.as_str())?;
            }
        }
        st.end()
    }
}
