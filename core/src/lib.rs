//! `vigil-core`: the allocation-free, sans-IO heart of Vigil, a VM heartbeat and health-check monitor.
//!
//! It speaks the StarlingX guest-heartbeat protocol (version 3, revision 1): line-delimited JSON over a byte
//! stream (virtio-serial, a UART, a socket). It owns:
//!
//! - [`LineFramer`]: bytes in, complete lines out, in a fixed buffer, across any split of the stream;
//! - the codec: [`Message`] and its parts as typed Rust, [`decode`] from a line, [`Message::encode`] into a
//!   caller's buffer;
//! - [`Monitor`]: the host side of one guest — registration, challenges, misses, loss, health, votes;
//! - [`Agent`]: the guest side — registration with retries, answers, re-registration, votes, exit;
//! - [`ProtocolError`]: how a peer broke the protocol (shared by both state machines);
//! - [`qmp`]: a bounded parser of QEMU's QMP events (the hypervisor's word on pauses, resets and panics);
//! - [`libvirt`]: bounded decoders of what libvirtd sends over its remote protocol (packets, errors, replies);
//! - [`qga`]: liveness of a guest that runs only the stock QEMU guest agent (`guest-ping`, `0xFF` resync).
//!
//! Modules: `framer` (lines), `msg` (the messages), `codec` (decode/encode), `fast` (the heartbeat's two messages
//! in one pass, held to the codec's answers), `monitor/` (the state machine in
//! `mod.rs`; its `config`, `event`, `stats` and `nonces` beside it), `agent/` (likewise: `config`, `event`), `error`, `timers` (a fixed array of
//! deadlines), `time` (`Instant`, `Duration`), `qmp`, `qga`.
//!
//! It never reads a clock (every entry point takes an [`Instant`]), never does I/O (the caller feeds bytes in and
//! polls bytes out), never allocates, and never panics on input: hostile bytes become typed errors and counters.
//! Nonces and invocation ids come from the caller through [`IdSource`], so the core needs no RNG.
//!
//! Features: `std` (conversion from the OS clock, [`StdClock`]); `defmt` (`defmt::Format` on public types).
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs, clippy::std_instead_of_core, clippy::alloc_instead_of_core)]

#[cfg(feature = "std")]
extern crate std;

mod agent;
mod codec;
mod error;
mod fast;
mod framer;
pub mod libvirt;
mod monitor;
mod msg;
pub mod qga;
pub mod qmp;
mod time;
mod timers;

pub use agent::{Agent, AgentConfig, AgentEvent, AgentState, AgentStats};
pub use codec::{
    decode, decode_answer_in_place, decode_general, decode_without_precheck, precheck, DecodeError, Field, MAX_DEPTH,
};
pub use error::ProtocolError;
pub use framer::{FrameError, LineFramer, LineStorage, LINE_BUF, MAX_LINE};
pub use monitor::{
    ConfigSource, EventSlot, Fault, Monitor, MonitorConfig, MonitorEvent, MonitorState, MonitorStats, NotifyError,
    Registration, ANSWER_WINDOW,
};
pub use msg::*;
#[cfg(feature = "std")]
pub use time::StdClock;
pub use time::{Duration, Instant};

/// Where nonces and invocation ids come from. The host should back it with an unpredictable generator;
/// tests use a counter. Any `FnMut() -> u32` is one.
pub trait IdSource {
    /// The next id; the state machines mask it to the range they need.
    fn next_id(&mut self) -> u32;
}

impl<F: FnMut() -> u32> IdSource for F {
    fn next_id(&mut self) -> u32 {
        self()
    }
}

/// A small, fast, non-cryptographic generator (xorshift32) for callers with no better entropy at hand; seed it
/// from something unpredictable. A zero seed is replaced by a fixed non-zero one.
#[derive(Clone, Copy, Debug)]
pub struct XorShift32(u32);

impl XorShift32 {
    /// A generator from `seed`.
    pub const fn new(seed: u32) -> Self {
        XorShift32(if seed == 0 { 0x9E37_79B9 } else { seed })
    }
}

impl IdSource for XorShift32 {
    fn next_id(&mut self) -> u32 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.0 = x;
        x
    }
}
