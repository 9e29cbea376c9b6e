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
///
/// A cheap one-pass [`precheck`] refuses what cannot be a message (garbage, a flood of noise) before the
/// parser and its scratch buffer are touched, so refusing hostile bytes costs a fraction of decoding.
///
/// A `challenge` or `challenge_response` in the form every implementation writes takes the fast path
/// ([`crate::fast`]), which returns exactly what the general codec would.
pub fn decode(line: &[u8]) -> Result<Message, DecodeError> {
    match crate::fast::decode(line) {
        Some(m) => Ok(m),
        None => decode_general(line),
    }
}

/// The monitor's in-place reading of an answer (sequence, nonce, health, action, text), `None` for anything else:
/// for the fuzz target that holds it to what [`decode`] makes of the same line.
#[doc(hidden)]
pub fn decode_answer_in_place(line: &[u8]) -> Option<(u32, u32, crate::Health, crate::CorrectiveAction, &str)> {
    crate::fast::decode_answer(line)
        .map(|a| (a.sequence, a.heartbeat_response, a.heartbeat_health, a.corrective_action, a.log_msg))
}

/// [`decode`] without the fast path: for the tests and the fuzz target that hold the two to the same answers.
#[doc(hidden)]
pub fn decode_general(line: &[u8]) -> Result<Message, DecodeError> {
    precheck(line)?;
    parse(line)
}

/// [`decode`] without the [`precheck`]: the full parser on every line. For benchmarks that compare the two.
#[doc(hidden)]
pub fn decode_without_precheck(line: &[u8]) -> Result<Message, DecodeError> {
    check_depth(line)?;
    parse(line)
}

const fn is_json_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// Refuses, in one pass and without parsing, a line that cannot be a protocol message: it must be a JSON object
/// (`{` ... `}` after optional white space) with no raw control bytes (JSON forbids them even in strings),
/// nested at most [`MAX_DEPTH`] deep, and carry the key `"msg_type"` spelled as every implementation writes it
/// (a key spelled with escapes is refused). Invalid UTF-8 is left to the parser, which checks every string.
pub fn precheck(line: &[u8]) -> Result<(), DecodeError> {
    let start = line.iter().position(|&b| !is_json_ws(b)).unwrap_or(line.len());
    let end = line.iter().rposition(|&b| !is_json_ws(b)).map_or(start, |i| i + 1);
    let body = line.get(start..end).unwrap_or_default();
    match body.first() {
        Some(b'{') => {}
        Some(b'[' | b'"' | b'-' | b'0'..=b'9' | b't' | b'f' | b'n') => return Err(DecodeError::NotAnObject),
        _ => return Err(DecodeError::Syntax),
    }
    if body.last() != Some(&b'}') {
        return Err(DecodeError::Syntax);
    }
    if !scan(body, true)? {
        return Err(DecodeError::MissingField(Field::MsgType));
    }
    Ok(())
}

/// One pass over a line that knows about strings and escapes: refuses raw control bytes (when `strict`) and
/// nesting deeper than [`MAX_DEPTH`], and says whether the top-level object has the key `"msg_type"`.
fn scan(line: &[u8], strict: bool) -> Result<bool, DecodeError> {
    let (mut depth, mut in_str, mut escaped, mut has_msg_type) = (0usize, false, false, false);
    for (i, &b) in line.iter().enumerate() {
        if strict && b < 0x20 && b != b'\t' {
            return Err(DecodeError::Syntax);
        }
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
            b'"' => {
                in_str = true;
                has_msg_type |= depth == 1 && line[i..].starts_with(MSG_TYPE_KEY);
            }
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
    Ok(has_msg_type)
}

const MSG_TYPE_KEY: &[u8] = b"\"msg_type\"";

/// Bytes to unescape strings into.
const SCRATCH: usize = 256;

fn parse(line: &[u8]) -> Result<Message, DecodeError> {
    // room to unescape the longest string a message may carry (`log_msg`, 224 bytes); a longer escaped string
    // in an unknown field is refused as malformed
    let mut scratch = [0u8; SCRATCH];
    let mut raw = Raw::default();
    let mut de = serde_json_core::de::Deserializer::new(line, Some(&mut scratch));
    let parsed = (&mut raw).deserialize(&mut de).and_then(|()| de.end());
    if let Err(e) = parsed {
        return Err(raw.map_parse_error(e));
    }
    raw.build()
}

/// Takes bytes from `input` through `framer` up to the end of the next line and decodes it: returns how many bytes
/// were consumed and, if a line ended, the message or why it was refused. Both state machines read with it.
pub(crate) fn next_message<S: crate::LineStorage>(
    framer: &mut crate::LineFramer<S>,
    input: &[u8],
) -> (usize, Option<Result<Message, crate::ProtocolError>>) {
    let (used, item) = framer.push(input);
    let parsed = item.map(|line| match line {
        Ok(line) => decode(line).map_err(crate::ProtocolError::Decode),
        Err(e) => Err(crate::ProtocolError::Frame(e)),
    });
    (used, parsed)
}

/// Refuses nesting deeper than [`MAX_DEPTH`] with a linear scan that knows about strings and escapes.
pub(crate) fn check_depth(line: &[u8]) -> Result<(), DecodeError> {
    scan(line, false).map(|_| ())
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
    msg_type: Option<Text<MAX_STR>>,
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

    fn text<const N: usize>(&self, f: Field, s: &Text<N>) -> Result<Text<N>, DecodeError> {
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
            MsgType::Nack => {
                Body::Nack { invocation_id: self.int(Field::InvocationId)?, log_msg: self.log_msg.clone() }
            }
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
                        None => self.msg_type = Some(Text::new()),
                    },
                    Field::Name => match map.next_value::<Bounded<MAX_NAME>>()?.0 {
                        Some(s) => self.name = s,
                        None => self.note(DecodeError::StringTooLong(field)),
                    },
                    Field::LogMsg => match map.next_value::<Bounded<MAX_LOG_MSG>>()?.0 {
                        Some(s) => self.log_msg = s,
                        None => self.note(DecodeError::StringTooLong(field)),
                    },
                    Field::HeartbeatHealth => {
                        // the reference host stores any health string: an unknown one still proves life
                        self.health = self
                            .word(field, map.next_value()?, |s| Some(Health::from_wire(s).unwrap_or(Health::Unknown)))
                    }
                    Field::CorrectiveAction => {
                        self.action = self.word(field, map.next_value()?, CorrectiveAction::from_wire)
                    }
                    Field::EventType => self.event_type = self.word(field, map.next_value()?, EventType::from_wire),
                    Field::NotificationType => {
                        self.notification_type = self.word(field, map.next_value()?, NotificationType::from_wire)
                    }
                    Field::VoteResult => self.vote_result = self.word(field, map.next_value()?, VoteResult::from_wire),
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
pub(crate) struct Bounded<const N: usize>(pub(crate) Option<Text<N>>);

impl<'de, const N: usize> de::Deserialize<'de> for Bounded<N> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<const N: usize>;
        impl<'de, const N: usize> Visitor<'de> for V<N> {
            type Value = Bounded<N>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Bounded<N>, E> {
                Ok(Bounded(Text::try_from(s).ok()))
            }
        }
        d.deserialize_str(V::<N>)
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::format;

    const EXAMPLES: [&str; 8] = [
        r#"{"version":3,"revision":1,"msg_type":"init","sequence":1,"invocation_id":1804289383,"name":"vm-1","heartbeat_interval_ms":1000,"vote_secs":9,"shutdown_notice_secs":9,"suspend_notice_secs":9,"resume_notice_secs":14,"restart_secs":601,"corrective_action":"reboot"}"#,
        r#"{"version":3,"revision":1,"msg_type":"init_ack","sequence":7,"invocation_id":1804289383}"#,
        r#"{"version":3,"revision":1,"msg_type":"challenge","sequence":8,"heartbeat_challenge":846930886}"#,
        r#"{"version":3,"revision":1,"msg_type":"challenge_response","sequence":2,"heartbeat_response":846930886,"heartbeat_health":"healthy","corrective_action":"reboot","log_msg":""}"#,
        r#"{"version":3,"revision":1,"msg_type":"action_notify","sequence":9,"invocation_id":1804289383,"event_type":"live_migrate_begin","notification_type":"revocable","timeout_ms":9000}"#,
        r#"{"version":3,"revision":1,"msg_type":"action_response","sequence":3,"invocation_id":1804289383,"event_type":"live_migrate_begin","notification_type":"revocable","vote_result":"reject","log_msg":"standby not synced"}"#,
        r#"{"version":3,"revision":1,"msg_type":"exit","sequence":4,"log_msg":"Exiting..."}"#,
        r#"{"version":3,"revision":1,"msg_type":"nack","sequence":10,"invocation_id":1804289383,"log_msg":"failed to parse vote_result"}"#,
    ];

    fn enc(m: &Message) -> heapless::Vec<u8, MAX_WIRE> {
        let mut buf = [0u8; MAX_WIRE];
        let n = m.encode(&mut buf).unwrap();
        heapless::Vec::from_slice(&buf[..n]).unwrap()
    }

    #[test]
    fn protocol_examples_decode_to_the_exact_values() {
        let m: [Message; 8] = EXAMPLES.map(|e| decode(e.as_bytes()).unwrap());
        assert_eq!(m[0].sequence, 1);
        let Body::Init(init) = &m[0].body else { panic!("{:?}", m[0]) };
        assert_eq!(init.invocation_id, 1804289383);
        assert_eq!(init.name.as_str(), "vm-1");
        assert_eq!(
            (init.heartbeat_interval_ms, init.vote_secs, init.shutdown_notice_secs, init.suspend_notice_secs),
            (1000, 9, 9, 9)
        );
        assert_eq!((init.resume_notice_secs, init.restart_secs), (14, 601));
        assert_eq!(init.corrective_action, CorrectiveAction::Reboot);
        assert_eq!(m[1].body, Body::InitAck { invocation_id: 1804289383 });
        assert_eq!(m[2].body, Body::Challenge { heartbeat_challenge: 846930886 });
        let Body::ChallengeResponse(r) = &m[3].body else { panic!() };
        assert_eq!((r.heartbeat_response, r.heartbeat_health), (846930886, Health::Healthy));
        assert_eq!(
            m[4].body,
            Body::ActionNotify(ActionNotify {
                invocation_id: 1804289383,
                event_type: EventType::LiveMigrateBegin,
                notification_type: NotificationType::Revocable,
                timeout_ms: 9000
            })
        );
        let Body::ActionResponse(a) = &m[5].body else { panic!() };
        assert_eq!((a.vote_result, a.log_msg.as_str()), (VoteResult::Reject, "standby not synced"));
        assert_eq!(m[6].body, Body::Exit { log_msg: bounded("Exiting...") });
        assert_eq!(
            m[7].body,
            Body::Nack { invocation_id: 1804289383, log_msg: bounded("failed to parse vote_result") }
        );
    }

    #[test]
    fn we_encode_the_examples_byte_for_byte() {
        for e in EXAMPLES {
            let m = decode(e.as_bytes()).unwrap();
            let wire = enc(&m);
            assert_eq!(&wire[1..wire.len() - 1], e.as_bytes());
            assert_eq!((wire[0], wire[wire.len() - 1]), (b'\n', b'\n'));
        }
    }

    #[test]
    fn strings_are_escaped_and_unescaped() {
        let nasty = "say \"hi\" \\ back\tslash \u{1} é";
        let m = Message::new(5, Body::Exit { log_msg: Text::try_from(nasty).unwrap() });
        let wire = enc(&m);
        assert!(core::str::from_utf8(&wire).unwrap().contains(r#"say \"hi\" \\ back\tslash \u0001 é"#));
        assert_eq!(decode(&wire[1..wire.len() - 1]).unwrap(), m);
        // \u escapes of the reference's JSON library decode too
        let line = br#"{"version":3,"revision":1,"msg_type":"exit","sequence":1,"log_msg":"a\u0022b\/c"}"#;
        assert_eq!(decode(line).unwrap().body, Body::Exit { log_msg: bounded("a\"b/c") });
    }

    #[test]
    fn field_order_whitespace_and_unknown_fields_are_free() {
        let line = br#" { "sequence" : 9, "x":{"y":[1,{"z":"}"}]}, "heartbeat_challenge":7, "msg_type":"challenge", "revision":2, "extra":"\"q", "version":4 } "#;
        let m = decode(line).unwrap();
        assert_eq!((m.version, m.revision, m.sequence), (4, 2, 9));
        assert_eq!(m.body, Body::Challenge { heartbeat_challenge: 7 });
    }

    fn err(line: &str) -> DecodeError {
        decode(line.as_bytes()).unwrap_err()
    }

    const H: &str = r#""version":3,"revision":1,"sequence":1"#;

    #[test]
    fn each_failure_is_a_distinct_typed_error() {
        assert_eq!(err("{"), DecodeError::Syntax);
        assert_eq!(err("not json"), DecodeError::NotAnObject);
        assert_eq!(err("{\"msg_type\" 1}"), DecodeError::Syntax);
        assert_eq!(err("{\"a\" 1}"), DecodeError::MissingField(Field::MsgType), "refused by the precheck");
        assert_eq!(err("[1,2]"), DecodeError::NotAnObject);
        assert_eq!(err(&format!(r#"{{{H},"msg_type":"exit"}} trailing"#)), DecodeError::Syntax);
        assert_eq!(err(&format!(r#"{{{H}}}"#)), DecodeError::MissingField(Field::MsgType));
        assert_eq!(err(&format!(r#"{{{H},"msg_type":"init_ack"}}"#)), DecodeError::MissingField(Field::InvocationId));
        assert_eq!(
            err(&format!(r#"{{{H},"msg_type":"init_ack","invocation_id":"7"}}"#)),
            DecodeError::WrongType(Field::InvocationId)
        );
        assert_eq!(err(&format!(r#"{{{H},"msg_type":3}}"#)), DecodeError::WrongType(Field::MsgType));
        assert_eq!(
            err(&format!(r#"{{{H},"msg_type":"challenge","heartbeat_challenge":4294967296}}"#)),
            DecodeError::NumberOutOfRange(Field::HeartbeatChallenge)
        );
        assert_eq!(
            err(&format!(r#"{{{H},"msg_type":"challenge","heartbeat_challenge":-1}}"#)),
            DecodeError::NumberOutOfRange(Field::HeartbeatChallenge)
        );
        let long = "x".repeat(225);
        assert_eq!(
            err(&format!(r#"{{{H},"msg_type":"exit","log_msg":"{long}"}}"#)),
            DecodeError::StringTooLong(Field::LogMsg)
        );
        assert_eq!(
            err(&format!(
                r#"{{{H},"msg_type":"challenge_response","heartbeat_response":1,"heartbeat_health":"meh","corrective_action":"meh"}}"#
            )),
            DecodeError::InvalidValue(Field::CorrectiveAction)
        );
        assert_eq!(
            err(&format!(r#"{{{H},"msg_type":"init_ack","invocation_id":1,"invocation_id":2}}"#)),
            DecodeError::DuplicateField(Field::InvocationId)
        );
        assert_eq!(
            err(r#"{"version":2,"revision":0,"msg_type":"init","sequence":1}"#),
            DecodeError::UnsupportedVersion(2)
        );
        assert_eq!(err(&format!(r#"{{{H},"msg_type":"hello"}}"#)), DecodeError::UnknownMsgType);
        let deep = format!(r#"{{{H},"msg_type":"exit","x":{}{}}}"#, "[".repeat(9), "]".repeat(9));
        assert_eq!(err(&deep), DecodeError::TooDeep);
        assert_eq!(decode(b"{\"msg_type\":\"exit\",\"log_msg\":\"\xff\"}").unwrap_err(), DecodeError::Syntax);
    }

    #[test]
    fn exactly_at_the_string_limits_is_fine() {
        let name = "n".repeat(MAX_NAME);
        let line = format!(
            r#"{{{H},"msg_type":"init","invocation_id":1,"name":"{name}","heartbeat_interval_ms":1,"vote_secs":1,"shutdown_notice_secs":1,"suspend_notice_secs":1,"resume_notice_secs":1,"restart_secs":1,"corrective_action":"log"}}"#
        );
        let Body::Init(init) = decode(line.as_bytes()).unwrap().body else { panic!() };
        assert_eq!(init.name.len(), MAX_NAME);
        let over = line.replace(&name, &"n".repeat(MAX_NAME + 1));
        assert_eq!(decode(over.as_bytes()).unwrap_err(), DecodeError::StringTooLong(Field::Name));
    }

    #[test]
    fn encoding_reports_the_room_it_needs() {
        let m = Message::new(1, Body::InitAck { invocation_id: 42 });
        let full = enc(&m);
        let mut small = [0u8; 10];
        assert_eq!(m.encode(&mut small), Err(EncodeError::BufferTooSmall { needed: full.len() }));
        let mut exact = [0u8; 128];
        assert_eq!(m.encode(&mut exact[..full.len()]), Ok(full.len()));
        // 224 bytes of quotes double when escaped; fine. Control characters would grow six-fold, which is why
        // `bounded` replaces them.
        let quotes: LogMsg = Text::try_from("\"".repeat(MAX_LOG_MSG).as_str()).unwrap();
        assert!(Message::new(1, Body::Exit { log_msg: quotes }).encode(&mut [0u8; MAX_WIRE]).is_ok());
        let ctl: LogMsg = Text::try_from("\u{1}".repeat(MAX_LOG_MSG).as_str()).unwrap();
        let m = Message::new(1, Body::Exit { log_msg: ctl });
        assert_eq!(m.encode(&mut [0u8; MAX_WIRE]), Err(EncodeError::MessageTooLong));
        assert_eq!(m.encode(&mut [0u8; 16]), Err(EncodeError::MessageTooLong));
    }

    #[test]
    fn bounded_cuts_at_char_boundaries_and_drops_controls() {
        let s: Text<4> = bounded("aé\nbc");
        assert_eq!(s.as_str(), "aé ");
        assert!(EventType::Stop.is_voted() && !EventType::ResizeEnd.is_voted());
        assert!(CorrectiveAction::Stop > CorrectiveAction::Reboot);
        assert!(CorrectiveAction::Reboot > CorrectiveAction::Log && CorrectiveAction::Log > CorrectiveAction::None);
    }
}
