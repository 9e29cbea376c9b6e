//! Shared helpers for the workspace integration tests: an in-memory [`Pair`] of a host [`Monitor`] and a guest
//! [`Agent`] on a virtual clock that jumps to the next deadline, with a link that can delay, split and corrupt.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::collections::VecDeque;

use vigil_core::{
    Agent, AgentConfig, AgentEvent, Duration, Instant, Monitor, MonitorConfig, MonitorEvent, XorShift32, MAX_WIRE,
};

/// A deterministic RNG for link behaviour (splitmix64).
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
}

/// How the in-memory link behaves (one direction).
#[derive(Clone, Debug, Default)]
pub struct Link {
    /// Fixed one-way delay.
    pub latency: Duration,
    /// Extra random delay up to this (order is kept, as on a stream).
    pub jitter: Duration,
    /// Split every write into random pieces.
    pub split: bool,
    /// Probability that a byte is replaced by a random one.
    pub corrupt: f64,
    /// Drop everything (a hung peer).
    pub mute: bool,
}

struct Pipe {
    link: Link,
    queue: VecDeque<(Instant, Vec<u8>)>,
}

impl Pipe {
    fn new() -> Self {
        Pipe { link: Link::default(), queue: VecDeque::new() }
    }

    fn send(&mut self, rng: &mut Rng, now: Instant, bytes: &[u8]) {
        if self.link.mute {
            return;
        }
        let mut bytes = bytes.to_vec();
        if self.link.corrupt > 0.0 {
            for b in bytes.iter_mut() {
                if rng.chance(self.link.corrupt) {
                    *b = rng.below(256) as u8;
                }
            }
        }
        let jitter = if self.link.jitter.as_millis() > 0 { rng.below(self.link.jitter.as_millis() + 1) } else { 0 };
        let mut at = now + self.link.latency + Duration::from_millis(jitter);
        if let Some((last, _)) = self.queue.back() {
            at = at.max(*last); // a stream keeps order
        }
        if self.link.split {
            let mut rest = &bytes[..];
            while !rest.is_empty() {
                let n = 1 + rng.below(rest.len() as u64) as usize;
                self.queue.push_back((at, rest[..n].to_vec()));
                rest = &rest[n..];
            }
        } else {
            self.queue.push_back((at, bytes));
        }
    }

    fn next_delivery(&self) -> Option<Instant> {
        self.queue.front().map(|(t, _)| *t)
    }
}

/// What the guest application does when asked to vote.
pub type VoteHandler = Box<dyn FnMut(&mut Agent<XorShift32>, &AgentEvent)>;

/// A Monitor and an Agent wired together on a virtual clock.
pub struct Pair {
    pub monitor: Monitor<XorShift32>,
    pub agent: Agent<XorShift32>,
    pub now: Instant,
    pub host_events: Vec<(Instant, MonitorEvent)>,
    pub agent_events: Vec<(Instant, AgentEvent)>,
    pub on_agent_event: Option<VoteHandler>,
    /// Bytes the host wrote, in order (for inspection).
    pub host_sent: usize,
    to_guest: Pipe,
    to_host: Pipe,
    rng: Rng,
    steps: u64,
}

/// Livelock guard: no scenario here needs more steps than this per virtual second.
const STEPS_PER_SECOND: u64 = 10_000;

impl Pair {
    pub fn new(monitor: MonitorConfig, agent: AgentConfig, seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let mut monitor = Monitor::new(monitor, XorShift32::new(rng.next_u64() as u32));
        monitor.connected(Instant::ZERO);
        let agent = Agent::new(agent, XorShift32::new(rng.next_u64() as u32), Instant::ZERO);
        Pair {
            monitor,
            agent,
            now: Instant::ZERO,
            host_events: Vec::new(),
            agent_events: Vec::new(),
            on_agent_event: None,
            host_sent: 0,
            to_guest: Pipe::new(),
            to_host: Pipe::new(),
            rng,
            steps: 0,
        }
    }

    /// Link settings host -> guest.
    pub fn to_guest(&mut self) -> &mut Link {
        &mut self.to_guest.link
    }

    /// Link settings guest -> host.
    pub fn to_host(&mut self) -> &mut Link {
        &mut self.to_host.link
    }

    /// Does everything that is due at `self.now`, until quiet.
    fn settle(&mut self) {
        let now = self.now;
        let mut buf = [0u8; MAX_WIRE];
        loop {
            let mut progress = false;
            while self.monitor.poll_timeout().is_some_and(|t| t <= now) {
                self.monitor.handle_timeout(now);
                self.drain_host();
                progress = true;
            }
            while self.agent.poll_timeout().is_some_and(|t| t <= now) {
                self.agent.handle_timeout(now);
                self.drain_agent();
                progress = true;
            }
            while let Some(n) = self.monitor.poll_transmit(now, &mut buf) {
                self.host_sent += n;
                self.to_guest.send(&mut self.rng, now, &buf[..n]);
                progress = true;
            }
            while let Some(n) = self.agent.poll_transmit(now, &mut buf) {
                self.to_host.send(&mut self.rng, now, &buf[..n]);
                progress = true;
            }
            while self.to_guest.next_delivery().is_some_and(|t| t <= now) {
                let (_, bytes) = self.to_guest.queue.pop_front().unwrap();
                let mut input = &bytes[..];
                while !input.is_empty() {
                    let n = self.agent.handle_bytes(now, input);
                    input = &input[n..];
                    self.drain_agent();
                }
                progress = true;
            }
            while self.to_host.next_delivery().is_some_and(|t| t <= now) {
                let (_, bytes) = self.to_host.queue.pop_front().unwrap();
                let mut input = &bytes[..];
                while !input.is_empty() {
                    let n = self.monitor.handle_bytes(now, input);
                    input = &input[n..];
                    self.drain_host();
                }
                progress = true;
            }
            if !progress {
                break;
            }
            self.steps += 1;
            assert!(
                self.steps < STEPS_PER_SECOND * (1 + self.now.as_millis() / 1000),
                "livelock: {} steps by {:?}",
                self.steps,
                self.now
            );
        }
    }

    fn drain_host(&mut self) {
        while let Some(e) = self.monitor.poll_event() {
            self.host_events.push((self.now, e));
        }
    }

    fn drain_agent(&mut self) {
        while let Some(e) = self.agent.poll_event() {
            if let Some(h) = self.on_agent_event.as_mut() {
                h(&mut self.agent, &e);
            }
            self.agent_events.push((self.now, e));
        }
    }

    /// The next moment anything is due.
    fn next_deadline(&self) -> Option<Instant> {
        [
            self.monitor.poll_timeout(),
            self.agent.poll_timeout(),
            self.to_guest.next_delivery(),
            self.to_host.next_delivery(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Runs until virtual time `t`, jumping from deadline to deadline.
    pub fn run_until(&mut self, t: Instant) {
        self.settle();
        while let Some(next) = self.next_deadline() {
            if next > t {
                break;
            }
            assert!(next >= self.now, "a deadline in the past: {next:?} < {:?}", self.now);
            self.now = next;
            self.settle();
        }
        self.now = t;
        self.settle();
    }

    /// Runs for `d` more.
    pub fn run_for(&mut self, d: Duration) {
        let t = self.now + d;
        self.run_until(t);
    }

    /// Host events other than protocol errors.
    pub fn faults(&self) -> Vec<&(Instant, MonitorEvent)> {
        self.host_events.iter().filter(|(_, e)| !matches!(e, MonitorEvent::Registered(_))).collect()
    }
}
