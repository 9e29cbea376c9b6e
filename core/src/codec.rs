//! Decoding one line of guest or host bytes into a typed [`Message`].
//!
//! The line is hostile input. Decoding runs serde-json-core over the caller's bytes with a stack scratch buffer
//! for unescaping, reads fields into a flat record, then checks them: every failure is a distinct, `Copy`
//! [`DecodeError`] naming the field where there is one. Nesting deeper than [`MAX_DEPTH`] is refused before the
//! parser runs, so recursion is bounded. Unknown fields are ignored; duplicate known fields are refused (two
//! parsers could otherwise disagree about which one counts). This module must never allocate or panic.

use core::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde_json_core::de::Error as JsonError;

use crate::framer::MAX_LINE;
use crate::msg::*;

/// Deepest nesting of arrays and objects accepted in a line (the protocol itself uses depth 1).
pub const MAX_DEPTH: usize = 8;

macro_rules! fields {
    ($($variant:ident = $wire:literal,)+) => {
        /// A known field of the protocol.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[cfg_attr(feature = "defmt", derive(defmt::Format))]
        #[allow(missing_docs)]
        pub enum Field { $($variant,)+ }

        impl Field {
            /// Every field.
            pub const ALL: &'static [Field] = &[$(Field::$variant,)+];

            /// The exact key on the wire.
            pub const fn as_str(self) -> &'static str {
                match self { $(Field::$variant => $wire,)+ }
            }

            fn from_key(s: &str) -> Option<Field> {
                match s { $($wire => Some(Field::$variant),)+ _ => None }
            }
        }
    };
}

fields!(
    Version = "version",
    Revision = "revision",
    MsgType = "msg_type",
    Sequence = "sequence",
    InvocationId = "invocation_id",
    Name = "name",
    HeartbeatIntervalMs = "heartbeat_interval_ms",
    VoteSecs = "vote_secs",
    ShutdownNoticeSecs = "shutdown_notice_secs",
    SuspendNoticeSecs = "suspend_notice_secs",
    ResumeNoticeSecs = "resume_notice_secs",
    RestartSecs = "restart_secs",
    CorrectiveAction = "corrective_action",
    HeartbeatChallenge = "heartbeat_challenge",
    HeartbeatResponse = "heartbeat_response",
    HeartbeatHealth = "heartbeat_health",
    EventType = "event_type",
    NotificationType = "notification_type",
    VoteResult = "vote_result",
    TimeoutMs = "timeout_ms",
    LogMsg = "log_msg",
);

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a line is not a valid message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum DecodeError {
    /// Not well-formed JSON (or trailing bytes after the object).
    Syntax,
    /// Well-formed, but not a JSON object.
    NotAnObject,
    /// Arrays/objects nested deeper than [`MAX_DEPTH`].
    TooDeep,
    /// A field the message type requires is absent.
    MissingField(Field),
    /// A known field appears twice.
    DuplicateField(Field),
    /// A field has the wrong JSON type.
    WrongType(Field),
    /// A number is negative, fractional where an integer is expected, or too large for 32 bits.
    NumberOutOfRange(Field),
    /// A string exceeds its limit (32 bytes; 64 for `name`, 224 for `log_msg`).
    StringTooLong(Field),
    /// A string is not one of the values the field allows.
    InvalidValue(Field),
    /// `version` is below 3.
    UnsupportedVersion(u32),
    /// `msg_type` is not one the protocol knows.
    UnknownMsgType,
}

impl DecodeError {
    /// A short, static description, fit for a `nack`'s `log_msg`.
    pub const fn reason(&self) -> &'static str {
        match self {
            DecodeError::Syntax => "malformed JSON",
            DecodeError::NotAnObject => "not a JSON object",
            DecodeError::TooDeep => "nested too deeply",
            DecodeError::MissingField(_) => "missing field",
            DecodeError::DuplicateField(_) => "duplicate field",
            DecodeError::WrongType(_) => "wrong type",
            DecodeError::NumberOutOfRange(_) => "number out of range",
            DecodeError::StringTooLong(_) => "string too long",
            DecodeError::InvalidValue(_) => "invalid value",
            DecodeError::UnsupportedVersion(_) => "unsupported version",
            DecodeError::UnknownMsgType => "unknown msg_type",
        }
    }

    /// The field concerned, if any.
    pub const fn field(&self) -> Option<Field> {
        match *self {
            DecodeError::MissingField(f)
            | DecodeError::DuplicateField(f)
            | DecodeError::WrongType(f)
            | DecodeError::NumberOutOfRange(f)
            | DecodeError::StringTooLong(f)
            | DecodeError::InvalidValue(f) => Some(f),
            _ => None,
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self, self.field()) {
            (DecodeError::UnsupportedVersion(v), _) => write!(f, "unsupported version {v}"),
            (_, Some(field)) => write!(f, "{}: {}", self.reason(), field),
            (_, None) => f.write_str(self.reason()),
        }
    }
}

impl core::error::Error for DecodeError {}

/// Decodes one line (no terminator) into a message.
pub fn decode(line: &[u8]) -> Result<Message, DecodeError> {
    check_depth(line)?;
    let mut scratch = [0u8; MAX_LINE];
    let mut raw = Raw::default();
    let mut de = serde_json_core::de::Deserializer::new(line, Some(&mut scratch));
    let parsed = (&mut raw).deserialize(&mut de).and_then(|()| de.end());
    if let Err(e) = parsed {
        return Err(raw.map_parse_error(e));
    }
    raw.build()
}

/// Refuses nesting deeper than [`MAX_DEPTH`] with a linear scan that knows about strings and escapes.
fn check_depth(line: &[u8]) -> Result<(), DecodeError> {
    let mut depth = 0usize;
    let mut in_str = false;
    let mut escaped = false;
    for &b in line {
        if in_str {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_str = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(DecodeError::TooDeep);
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

const N_INTS: usize = 13;

fn int_slot(f: Field) -> Option<usize> {
    Some(match f {
        Field::Version => 0,
        Field::Revision => 1,
        Field::Sequence => 2,
        Field::InvocationId => 3,
        Field::HeartbeatIntervalMs => 4,
        Field::VoteSecs => 5,
        Field::ShutdownNoticeSecs => 6,
        Field::SuspendNoticeSecs => 7,
        Field::ResumeNoticeSecs => 8,
        Field::RestartSecs => 9,
        Field::HeartbeatChallenge => 10,
        Field::TimeoutMs => 11,
        Field::HeartbeatResponse => 12,
        _ => return None,
    })
}

/// The flat record the parser fills before the fields are checked.
#[derive(Default)]
struct Raw {
    seen: u32,
    /// The field whose value is being parsed, to name it in an error.
    current: Option<Field>,
    /// The first field-level problem found (the parse goes on so that syntax errors still win).
    problem: Option<DecodeError>,
    ints: [u32; N_INTS],
    msg_type: Option<heapless::String<MAX_STR>>,
    health: Option<Health>,
    action: Option<CorrectiveAction>,
    event_type: Option<EventType>,
    notification_type: Option<NotificationType>,
    vote_result: Option<VoteResult>,
    name: Name,
    log_msg: LogMsg,
}

impl Raw {
    fn has(&self, f: Field) -> bool {
        self.seen & (1 << f as u32) != 0
    }

    fn note(&mut self, e: DecodeError) {
        if self.problem.is_none() {
            self.problem = Some(e);
        }
    }

    fn map_parse_error(&self, e: JsonError) -> DecodeError {
        match (self.current, e) {
            (Some(f), JsonError::InvalidType) => DecodeError::WrongType(f),
            (Some(f), JsonError::InvalidNumber) => DecodeError::NumberOutOfRange(f),
            (Some(f), JsonError::EscapedStringIsTooLong) => DecodeError::StringTooLong(f),
            (None, JsonError::InvalidType) if self.seen == 0 => DecodeError::NotAnObject,
            _ => DecodeError::Syntax,
        }
    }

    fn int(&self, f: Field) -> Result<u32, DecodeError> {
        if !self.has(f) {
            return Err(DecodeError::MissingField(f));
        }
        Ok(int_slot(f).map_or(0, |i| self.ints[i]))
    }

    fn need<T: Copy>(&self, f: Field, v: Option<T>) -> Result<T, DecodeError> {
        v.ok_or(DecodeError::MissingField(f))
    }

    fn text<const N: usize>(&self, f: Field, s: &heapless::String<N>) -> Result<heapless::String<N>, DecodeError> {
        if self.has(f) {
            Ok(s.clone())
        } else {
            Err(DecodeError::MissingField(f))
        }
    }

    fn build(self) -> Result<Message, DecodeError> {
        // An old version may not carry today's fields: refuse it before anything else.
        if self.has(Field::Version) && self.ints[0] < VERSION {
            return Err(DecodeError::UnsupportedVersion(self.ints[0]));
        }
        if let Some(p) = self.problem {
            return Err(p);
        }
        let version = self.int(Field::Version)?;
        let revision = self.int(Field::Revision)?;
        let Some(msg_type) = self.msg_type.as_ref() else {
            return Err(DecodeError::MissingField(Field::MsgType));
        };
        let msg_type = MsgType::from_wire(msg_type).ok_or(DecodeError::UnknownMsgType)?;
        let sequence = self.int(Field::Sequence)?;
        let body = match msg_type {
            MsgType::Init => Body::Init(Init {
                invocation_id: self.int(Field::InvocationId)?,
                name: self.text(Field::Name, &self.name)?,
                heartbeat_interval_ms: self.int(Field::HeartbeatIntervalMs)?,
                vote_secs: self.int(Field::VoteSecs)?,
                shutdown_notice_secs: self.int(Field::ShutdownNoticeSecs)?,
                suspend_notice_secs: self.int(Field::SuspendNoticeSecs)?,
                resume_notice_secs: self.int(Field::ResumeNoticeSecs)?,
                restart_secs: self.int(Field::RestartSecs)?,
                corrective_action: self.need(Field::CorrectiveAction, self.action)?,
            }),
            MsgType::InitAck => Body::InitAck { invocation_id: self.int(Field::InvocationId)? },
            MsgType::Challenge => Body::Challenge { heartbeat_challenge: self.int(Field::HeartbeatChallenge)? },
            MsgType::ChallengeResponse => Body::ChallengeResponse(ChallengeResponse {
                heartbeat_response: self.int(Field::HeartbeatResponse)?,
                heartbeat_health: self.need(Field::HeartbeatHealth, self.health)?,
                corrective_action: self.need(Field::CorrectiveAction, self.action)?,
                // StarlingX always sends it; an absent log_msg is an empty one.
                log_msg: self.log_msg.clone(),
            }),
            MsgType::ActionNotify => Body::ActionNotify(ActionNotify {
                invocation_id: self.int(Field::InvocationId)?,
                event_type: self.need(Field::EventType, self.event_type)?,
                notification_type: self.need(Field::NotificationType, self.notification_type)?,
                timeout_ms: self.int(Field::TimeoutMs)?,
            }),
            MsgType::ActionResponse => Body::ActionResponse(ActionResponse {
                invocation_id: self.int(Field::InvocationId)?,
                event_type: self.need(Field::EventType, self.event_type)?,
                notification_type: self.need(Field::NotificationType, self.notification_type)?,
                vote_result: self.need(Field::VoteResult, self.vote_result)?,
                log_msg: self.log_msg.clone(),
            }),
            MsgType::Exit => Body::Exit { log_msg: self.log_msg.clone() },
            MsgType::Nack => Body::Nack { invocation_id: self.int(Field::InvocationId)?, log_msg: self.log_msg.clone() },
        };
        Ok(Message { version, revision, sequence, body })
    }
}

impl<'de> DeserializeSeed<'de> for &mut Raw {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for &mut Raw {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a protocol message object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<Key>()? {
            let Some(field) = key.0 else {
                map.next_value::<IgnoredAny>()?;
                continue;
            };
            if self.has(field) {
                self.note(DecodeError::DuplicateField(field));
            }
            self.seen |= 1 << field as u32;
            self.current = Some(field);
            if let Some(slot) = int_slot(field) {
                self.ints[slot] = map.next_value::<u32>()?;
            } else {
                match field {
                    Field::MsgType => match map.next_value::<Bounded<MAX_STR>>()?.0 {
                        Some(s) => self.msg_type = Some(s),
                        // An over-long msg_type cannot be a known one.
                        None => self.msg_type = Some(heapless::String::new()),
                    },
                    Field::Name => match map.next_value::<Bounded<MAX_NAME>>()?.0 {
                        Some(s) => self.name = s,
                        None => self.note(DecodeError::StringTooLong(field)),
                    },
                    Field::LogMsg => match map.next_value::<Bounded<MAX_LOG_MSG>>()?.0 {
                        Some(s) => self.log_msg = s,
                        None => self.note(DecodeError::StringTooLong(field)),
                    },
                    Field::HeartbeatHealth => self.health = self.word(field, map.next_value()?, Health::from_wire),
                    Field::CorrectiveAction => {
                        self.action = self.word(field, map.next_value()?, CorrectiveAction::from_wire)
                    }
                    Field::EventType => self.event_type = self.word(field, map.next_value()?, EventType::from_wire),
                    Field::NotificationType => {
                        self.notification_type = self.word(field, map.next_value()?, NotificationType::from_wire)
                    }
                    Field::VoteResult => {
                        self.vote_result = self.word(field, map.next_value()?, VoteResult::from_wire)
                    }
                    _ => {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
            }
            self.current = None;
        }
        Ok(())
    }
}

impl Raw {
    /// Maps an enumerated string; notes `StringTooLong` or `InvalidValue` and yields `None` on failure.
    fn word<T>(&mut self, f: Field, s: Bounded<MAX_STR>, parse: fn(&str) -> Option<T>) -> Option<T> {
        let Some(s) = s.0 else {
            self.note(DecodeError::StringTooLong(f));
            return None;
        };
        let v = parse(&s);
        if v.is_none() {
            self.note(DecodeError::InvalidValue(f));
        }
        v
    }
}

/// An object key: a known field or something to skip.
struct Key(Option<Field>);

impl<'de> de::Deserialize<'de> for Key {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Key, E> {
                Ok(Key(Field::from_key(s)))
            }
        }
        d.deserialize_str(V)
    }
}

/// A string of at most `N` bytes; `None` when it was longer (the parse goes on).
struct Bounded<const N: usize>(Option<heapless::String<N>>);

impl<'de, const N: usize> de::Deserialize<'de> for Bounded<N> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<const N: usize>;
        impl<'de, const N: usize> Visitor<'de> for V<N> {
            type Value = Bounded<N>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Bounded<N>, E> {
                Ok(Bounded(heapless::String::try_from(s).ok()))
            }
        }
        d.deserialize_str(V::<N>)
    }
}
