//! [`ProtocolError`]: how a peer broke the protocol. Shared by the [`Monitor`](crate::Monitor), the
//! [`Agent`](crate::Agent) and the codec's callers; each is counted and reported, none ends a session.

use core::fmt;

use crate::codec::DecodeError;
use crate::framer::FrameError;
use crate::msg::MsgType;

/// A guest that broke the protocol; each is counted and reported, none ends the session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ProtocolError {
    /// A line was too long.
    Frame(FrameError),
    /// A line did not decode.
    Decode(DecodeError),
    /// A response echoed a nonce that is not the current unanswered one (stale, replayed or forged).
    StaleNonce {
        /// The nonce outstanding.
        expected: u32,
        /// The nonce echoed.
        got: u32,
    },
    /// An `action_response` named another invocation.
    WrongInvocationId {
        /// The current invocation id.
        expected: u32,
        /// The id sent.
        got: u32,
    },
    /// A message that makes no sense now (a response before `init`, an answer to no vote, a host-only message).
    Unexpected(MsgType),
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtocolError::Frame(e) => write!(f, "framing: {e}"),
            ProtocolError::Decode(e) => write!(f, "decode: {e}"),
            ProtocolError::StaleNonce { expected, got } => {
                write!(f, "stale nonce {got} (expected {expected})")
            }
            ProtocolError::WrongInvocationId { expected, got } => {
                write!(f, "wrong invocation id {got} (expected {expected})")
            }
            ProtocolError::Unexpected(t) => write!(f, "unexpected {t}"),
        }
    }
}

impl core::error::Error for ProtocolError {}

impl ProtocolError {
    /// A short machine-friendly label (for counters).
    pub const fn label(&self) -> &'static str {
        match self {
            ProtocolError::Frame(_) => "line_too_long",
            ProtocolError::Decode(DecodeError::UnsupportedVersion(_)) => "unsupported_version",
            ProtocolError::Decode(DecodeError::UnknownMsgType) => "unknown_msg_type",
            ProtocolError::Decode(_) => "decode",
            ProtocolError::StaleNonce { .. } => "stale_nonce",
            ProtocolError::WrongInvocationId { .. } => "wrong_invocation_id",
            ProtocolError::Unexpected(_) => "unexpected_message",
        }
    }
}
