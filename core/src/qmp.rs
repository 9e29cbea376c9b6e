//! QMP, QEMU's machine protocol, as far as a heartbeat monitor needs it: which lifecycle event a line announces.
//! Sans-IO and allocation-free like the rest of the core: the caller frames lines (CRLF-terminated JSON objects;
//! [`crate::LineFramer`] with its bound will do, QMP event lines are short) and asks [`parse`] what each is. The
//! line is hostile input as much as a guest's: nesting is bounded before parsing, strings are bounded, and any
//! failure is a typed error.

use core::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};

use crate::codec::{check_depth, Bounded};
use crate::framer::MAX_LINE;
use crate::msg::Text;

/// What a QMP line is.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum QmpLine {
    /// The greeting (`{"QMP": ...}`): answer with `{"execute":"qmp_capabilities"}`.
    Greeting,
    /// A command's answer (`{"return": ...}`) or error (`{"error": ...}`).
    Reply,
    /// An asynchronous event, by name (`STOP`, `RESUME`, `RESET`, `SHUTDOWN`, `GUEST_PANICKED`, ...).
    Event(Text<32>),
    /// Something else (ignored).
    Other,
}

/// A lifecycle event a heartbeat monitor acts on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum QmpLifecycle {
    /// vCPUs stopped (paused, or on the way to a shutdown or a migration).
    Stop,
    /// vCPUs run again.
    Resume,
    /// The machine was reset (a reboot).
    Reset,
    /// The machine shut down.
    Shutdown,
    /// The guest kernel panicked (`pvpanic`).
    Panicked,
}

impl QmpLine {
    /// The lifecycle event this line announces, if any.
    pub fn lifecycle(&self) -> Option<QmpLifecycle> {
        let QmpLine::Event(name) = self else { return None };
        Some(match name.as_str() {
            "STOP" | "SUSPEND" => QmpLifecycle::Stop,
            "RESUME" | "WAKEUP" => QmpLifecycle::Resume,
            "RESET" => QmpLifecycle::Reset,
            "SHUTDOWN" | "POWERDOWN" => QmpLifecycle::Shutdown,
            "GUEST_PANICKED" | "GUEST_CRASHLOADED" => QmpLifecycle::Panicked,
            _ => return None,
        })
    }
}

/// Why a QMP line was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum QmpError {
    /// Not a JSON object, or malformed.
    Syntax,
    /// Nested too deeply.
    TooDeep,
    /// Longer than a line may be.
    TooLong,
}

impl fmt::Display for QmpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            QmpError::Syntax => "malformed QMP line",
            QmpError::TooDeep => "QMP line nested too deeply",
            QmpError::TooLong => "QMP line too long",
        })
    }
}

impl core::error::Error for QmpError {}

#[derive(Default)]
struct Raw {
    greeting: bool,
    reply: bool,
    event: Option<Text<32>>,
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
        f.write_str("a QMP object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<Bounded<16>>()? {
            match key.0.as_deref() {
                Some("QMP") => {
                    self.greeting = true;
                    map.next_value::<IgnoredAny>()?;
                }
                Some("return" | "error") => {
                    self.reply = true;
                    map.next_value::<IgnoredAny>()?;
                }
                Some("event") => self.event = map.next_value::<Bounded<32>>()?.0,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

/// What one QMP line (without its line end) is.
pub fn parse(line: &[u8]) -> Result<QmpLine, QmpError> {
    if line.len() > MAX_LINE * 4 {
        return Err(QmpError::TooLong);
    }
    check_depth(line).map_err(|_| QmpError::TooDeep)?;
    let mut scratch = [0u8; 256];
    let mut raw = Raw::default();
    let mut de = serde_json_core::de::Deserializer::new(line, Some(&mut scratch));
    (&mut raw).deserialize(&mut de).and_then(|()| de.end()).map_err(|_| QmpError::Syntax)?;
    Ok(if raw.greeting {
        QmpLine::Greeting
    } else if let Some(e) = raw.event {
        QmpLine::Event(e)
    } else if raw.reply {
        QmpLine::Reply
    } else {
        QmpLine::Other
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_as_qemu_writes_them() {
        let greet = br#"{"QMP": {"version": {"qemu": {"micro": 2, "minor": 2, "major": 7}, "package": "Debian 1:7.2+dfsg-7"}, "capabilities": ["oob"]}}"#;
        assert_eq!(parse(greet), Ok(QmpLine::Greeting));
        assert_eq!(parse(br#"{"return": {}}"#), Ok(QmpLine::Reply));
        let stop = br#"{"timestamp": {"seconds": 1732666201, "microseconds": 7}, "event": "STOP"}"#;
        assert_eq!(parse(stop).unwrap().lifecycle(), Some(QmpLifecycle::Stop));
        let reset = br#"{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "RESET", "data": {"guest": true, "reason": "guest-reset"}}"#;
        assert_eq!(parse(reset).unwrap().lifecycle(), Some(QmpLifecycle::Reset));
        let panic = br#"{"event": "GUEST_PANICKED", "data": {"action": "pause", "info": {"type": "hyper-v"}}}"#;
        assert_eq!(parse(panic).unwrap().lifecycle(), Some(QmpLifecycle::Panicked));
        let port = br#"{"event": "VSERPORT_CHANGE", "data": {"open": true, "id": "channel0"}}"#;
        assert_eq!(parse(port).unwrap().lifecycle(), None);
    }

    #[test]
    fn hostile_lines_are_refused_with_a_type() {
        assert_eq!(parse(b"not json"), Err(QmpError::Syntax));
        assert_eq!(parse(b"[[[[[[[[[[[[[]]]]]]]]]]]]]"), Err(QmpError::TooDeep));
        assert_eq!(parse(&[b' '; MAX_LINE * 4 + 1]), Err(QmpError::TooLong));
        let long = [br#"{"event": ""#.as_slice(), &[b'x'; 100], b"\"}"].concat();
        assert_eq!(parse(&long), Ok(QmpLine::Other), "an over-long event name is no event");
    }
}
