//! `vigil-guest`: the guest side of Vigil.
//!
//! - [`Driver`] (no_std, no alloc): runs the core `Agent` over any byte transport that
//!   implements `embedded_io::{Read, Write, ReadReady, WriteReady}` with a caller's [`Clock`]. It never blocks on
//!   the transport (it reads only what is ready and keeps a partial write for later) and never runs a health
//!   check: the answer to a challenge always carries the health last set with
//!   [`Agent::set_health`](vigil_core::Agent::set_health).
//! - `linux` (feature `std`): the Linux agent behind the `vigil-guest` binary.
//! - [`refapi`] (no_std, no alloc): the reference guest's binary application protocol, sans-IO.
//! - `src/bin/vigil-fw.rs` (feature `firmware`): a Cortex-M image running the same driver over a UART.
#![no_std]
#![cfg_attr(not(feature = "std"), forbid(unsafe_code))]

#[cfg(feature = "std")]
#[allow(unused_imports)]
#[macro_use]
extern crate std;

#[cfg(feature = "std")]
pub mod linux;
pub mod refapi;

use embedded_io::{Read, ReadReady, Write, WriteReady};
use vigil_core::{Agent, AgentEvent, IdSource, Instant, MAX_WIRE};

/// A monotonic millisecond clock.
pub trait Clock {
    /// Now.
    fn now(&mut self) -> Instant;
}

/// What the driver tells the application: registration changes, votes and notices (answer them with
/// [`Agent::answer_action`](vigil_core::Agent::answer_action), now or later; silence accepts), nacks and
/// protocol errors.
pub trait Handler<R> {
    /// One event from the agent.
    fn on_event(&mut self, agent: &mut Agent<R>, event: AgentEvent);
}

impl<R, F: FnMut(&mut Agent<R>, AgentEvent)> Handler<R> for F {
    fn on_event(&mut self, agent: &mut Agent<R>, event: AgentEvent) {
        self(agent, event)
    }
}

/// Runs an [`Agent`] over a transport.
pub struct Driver<T, C, R> {
    io: T,
    clock: C,
    agent: Agent<R>,
    rx: [u8; 128],
    tx: [u8; MAX_WIRE],
    tx_pos: usize,
    tx_len: usize,
}

impl<T, C, R> Driver<T, C, R>
where
    T: Read + Write + ReadReady + WriteReady,
    C: Clock,
    R: IdSource,
{
    /// A driver for `agent` over `io`.
    pub fn new(io: T, clock: C, agent: Agent<R>) -> Self {
        Driver { io, clock, agent, rx: [0; 128], tx: [0; MAX_WIRE], tx_pos: 0, tx_len: 0 }
    }

    /// The agent (to set health, answer votes, shut down).
    pub fn agent_mut(&mut self) -> &mut Agent<R> {
        &mut self.agent
    }

    /// The agent.
    pub fn agent(&self) -> &Agent<R> {
        &self.agent
    }

    /// The transport.
    pub fn io_mut(&mut self) -> &mut T {
        &mut self.io
    }

    /// Replaces the transport (after a reconnect); forgets a partial write and registers anew.
    pub fn replace_io(&mut self, io: T) -> T {
        self.tx_pos = 0;
        self.tx_len = 0;
        let now = self.clock.now();
        self.agent.reconnected(now);
        core::mem::replace(&mut self.io, io)
    }

    /// Bytes of a message still waiting to be written.
    pub fn pending_tx(&self) -> usize {
        self.tx_len - self.tx_pos
    }

    /// One non-blocking round: reads what is ready, fires due timers, writes what the transport takes. Returns
    /// when to call again at the latest (sooner if the transport becomes ready).
    pub fn poll(&mut self, handler: &mut impl Handler<R>) -> Result<Option<Instant>, T::Error> {
        let now = self.clock.now();
        // a bounded number of reads per round, so a flooding host cannot starve our answers
        for _ in 0..16 {
            if !self.io.read_ready()? {
                break;
            }
            let n = self.io.read(&mut self.rx)?;
            if n == 0 {
                break;
            }
            let mut input = &self.rx[..n];
            while !input.is_empty() {
                let used = self.agent.handle_bytes(now, input);
                input = &input[used..];
                while let Some(e) = self.agent.poll_event() {
                    handler.on_event(&mut self.agent, e);
                }
            }
        }
        for _ in 0..8 {
            if self.agent.poll_timeout().is_none_or(|t| t > now) {
                break;
            }
            self.agent.handle_timeout(now);
            while let Some(e) = self.agent.poll_event() {
                handler.on_event(&mut self.agent, e);
            }
        }
        self.flush(now)?;
        Ok(self.agent.poll_timeout())
    }

    fn flush(&mut self, now: Instant) -> Result<(), T::Error> {
        loop {
            if self.tx_pos < self.tx_len {
                if !self.io.write_ready()? {
                    return Ok(());
                }
                let n = self.io.write(&self.tx[self.tx_pos..self.tx_len])?;
                if n == 0 {
                    return Ok(());
                }
                self.tx_pos += n;
                continue;
            }
            match self.agent.poll_transmit(now, &mut self.tx) {
                Some(n) => {
                    self.tx_pos = 0;
                    self.tx_len = n;
                }
                None => return Ok(()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use core::cell::Cell;
    use std::rc::Rc;
    use std::vec::Vec;
    use vigil_core::*;

    /// An in-memory transport: what the host wrote, what the guest wrote, and how much the "UART" takes per write.
    #[derive(Default)]
    struct Mem {
        to_guest: Vec<u8>,
        from_guest: Vec<u8>,
        write_room: usize,
    }
    impl embedded_io::ErrorType for Mem {
        type Error = core::convert::Infallible;
    }
    impl Read for Mem {
        fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
            let n = buf.len().min(self.to_guest.len());
            buf[..n].copy_from_slice(&self.to_guest[..n]);
            self.to_guest.drain(..n);
            Ok(n)
        }
    }
    impl ReadReady for Mem {
        fn read_ready(&mut self) -> Result<bool, Self::Error> {
            Ok(!self.to_guest.is_empty())
        }
    }
    impl Write for Mem {
        fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
            let n = buf.len().min(self.write_room);
            self.from_guest.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> Result<(), Self::Error> {
            Ok(())
        }
    }
    impl WriteReady for Mem {
        fn write_ready(&mut self) -> Result<bool, Self::Error> {
            Ok(self.write_room > 0)
        }
    }

    struct VClock(Rc<Cell<u64>>);
    impl Clock for VClock {
        fn now(&mut self) -> Instant {
            Instant::from_millis(self.0.get())
        }
    }

    fn host_lines(bytes: &[u8]) -> Vec<Body> {
        bytes.split(|&b| b == b'\n').filter(|l| !l.is_empty()).map(|l| decode(l).unwrap().body).collect()
    }

    #[test]
    fn driver_runs_the_agent_over_a_slow_transport_on_a_virtual_clock() {
        let t = Rc::new(Cell::new(0));
        let cfg = AgentConfig { name: bounded("fw"), ..AgentConfig::default() };
        let agent = Agent::new(cfg, XorShift32::new(3), Instant::ZERO);
        // a UART that takes 7 bytes at a time
        let io = Mem { write_room: 7, ..Mem::default() };
        let mut d = Driver::new(io, VClock(t.clone()), agent);
        let votes = Cell::new(0);
        let mut handler = |agent: &mut Agent<XorShift32>, e: AgentEvent| {
            if let AgentEvent::ActionRequest { .. } = e {
                votes.set(votes.get() + 1);
                agent.answer_action(VoteResult::Reject, "busy").unwrap();
            }
        };
        for _ in 0..100 {
            d.poll(&mut handler).unwrap();
        }
        let sent = host_lines(&d.io_mut().from_guest);
        let [Body::Init(init)] = sent.as_slice() else { panic!("{sent:?}") };
        let id = init.invocation_id;
        d.io_mut().from_guest.clear();
        // the host acks and challenges in one read; the health is whatever was set, instantly
        d.agent_mut().set_health(Health::Unhealthy, CorrectiveAction::Log, "sensor offline");
        let ack = std::format!("\n{{\"version\":3,\"revision\":1,\"sequence\":1,\"msg_type\":\"init_ack\",\"invocation_id\":{id}}}\n{{\"version\":3,\"revision\":1,\"sequence\":2,\"msg_type\":\"challenge\",\"heartbeat_challenge\":42}}\n");
        d.io_mut().to_guest.extend_from_slice(ack.as_bytes());
        for _ in 0..100 {
            d.poll(&mut handler).unwrap();
        }
        assert_eq!(d.pending_tx(), 0);
        let sent = host_lines(&d.io_mut().from_guest);
        let [Body::ChallengeResponse(r)] = sent.as_slice() else { panic!("{sent:?}") };
        assert_eq!(
            (r.heartbeat_response, r.heartbeat_health, r.log_msg.as_str()),
            (42, Health::Unhealthy, "sensor offline")
        );
        d.io_mut().from_guest.clear();
        // a vote reaches the handler, whose answer goes out
        let vote = std::format!("{{\"version\":3,\"revision\":1,\"sequence\":3,\"msg_type\":\"action_notify\",\"invocation_id\":{id},\"event_type\":\"stop\",\"notification_type\":\"revocable\",\"timeout_ms\":3000}}\n");
        d.io_mut().to_guest.extend_from_slice(vote.as_bytes());
        for _ in 0..100 {
            d.poll(&mut handler).unwrap();
        }
        assert_eq!(votes.get(), 1);
        let sent = host_lines(&d.io_mut().from_guest);
        assert!(matches!(sent.as_slice(), [Body::ActionResponse(a)] if a.vote_result == VoteResult::Reject));
        // silence: after max(2 s, 5 s) without a challenge the agent registers again
        d.io_mut().from_guest.clear();
        t.set(5_100);
        let next = d.poll(&mut handler).unwrap();
        assert!(next.is_some_and(|n| n > Instant::from_millis(5_100)));
        for _ in 0..100 {
            d.poll(&mut handler).unwrap();
        }
        assert!(matches!(host_lines(&d.io_mut().from_guest).as_slice(), [Body::Init(_)]));
    }
}
