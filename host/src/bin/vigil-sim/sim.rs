//! `vigil-sim`: many simulated guests, each a core `Agent` behind a listening UNIX socket named like QEMU's
//! (`cgcs.heartbeat.<id>.sock`), so vigild monitors them exactly as it would real VMs. Some guests can be told
//! to fail in a chosen way after a delay. One mio loop serves them all; it is a test tool, not a product, but it
//! is built like the daemon (timing wheel, non-blocking sockets) so it scales to 10^4 guests.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use mio::net::{UnixListener, UnixStream};
use mio::{Events, Interest, Poll, Token};
use vigil_core::{
    bounded, Agent, AgentConfig, AgentEvent, CorrectiveAction, Duration, Health, IdSource, Instant, StdClock,
    VoteResult, XorShift32, MAX_WIRE,
};

use vigil_host::fleet::wheel::TimerWheel;

/// How a simulated guest misbehaves once its failure starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behaviour {
    /// Answers every challenge, healthy.
    Healthy,
    /// Stops answering (keeps reading): the host should declare loss.
    Hang,
    /// Answers, but unhealthy, asking for a reboot.
    Unhealthy,
    /// Answers too late (2.5 intervals): the host should declare loss.
    Late,
    /// Answers correctly, plus a garbage line every interval: protocol errors, no fault.
    Garbage,
    /// Writes garbage as fast as the socket takes it, with newlines: the host must stay fair to others.
    Flood,
    /// Writes one endless line (no newline) as fast as the socket takes it.
    Endless,
    /// Writes valid but unsolicited messages as fast as the socket takes them (valid JSON is the expensive case
    /// for the host: it passes every cheap check).
    Spam,
    /// Closes its socket, removes the file, and comes back after a while.
    Flap,
    /// Sends `exit` (graceful deregistration): no fault.
    Exit,
}

impl Behaviour {
    /// The name used in ids and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Behaviour::Healthy => "ok",
            Behaviour::Hang => "hang",
            Behaviour::Unhealthy => "sick",
            Behaviour::Late => "late",
            Behaviour::Garbage => "garbage",
            Behaviour::Flood => "flood",
            Behaviour::Endless => "endless",
            Behaviour::Spam => "spam",
            Behaviour::Flap => "flap",
            Behaviour::Exit => "exit",
        }
    }
}

/// What to simulate.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Directory for the sockets (created if missing).
    pub dir: PathBuf,
    /// Guests in total (failing ones included).
    pub guests: usize,
    /// Requested heartbeat interval.
    pub interval_ms: u32,
    /// How many guests fail, and how.
    pub failures: Vec<(Behaviour, usize)>,
    /// Failures start this long after the simulator starts.
    pub fail_after: Duration,
    /// Flapping guests stay away this long.
    pub flap_down: Duration,
    /// Stop after this long (None: until stopped).
    pub duration: Option<Duration>,
    /// Id prefix (to run several simulators on one directory).
    pub prefix: String,
    /// Every message of a healthy guest leaves this long after the agent wrote it (a slow guest, still in time).
    pub answer_delay: Duration,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            dir: PathBuf::from("/tmp/vigil-sim"),
            guests: 1000,
            interval_ms: 1000,
            failures: Vec::new(),
            fail_after: Duration::from_secs(5),
            flap_down: Duration::from_secs(5),
            duration: None,
            prefix: "sim".into(),
            answer_delay: Duration::ZERO,
        }
    }
}

struct SimGuest {
    path: PathBuf,
    behaviour: Behaviour,
    listener: Option<UnixListener>,
    conn: Option<UnixStream>,
    agent: Agent<XorShift32>,
    out: Vec<u8>,
    delayed: VecDeque<(Instant, Vec<u8>)>,
    failing: bool,
    back_at: Option<Instant>,
    next_garbage: Instant,
    /// Registered for writability: only while `out` waits (a socket registered for it at all times makes every
    /// read of the host wake this process, a cost the benchmark would charge to the host).
    want_write: bool,
    /// [`SimConfig::answer_delay`].
    delay: Duration,
}

/// The socket path of guest `id` in `dir`.
pub fn socket_path(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("cgcs.heartbeat.{id}.sock"))
}

/// Runs the simulation until `stop` is set or the configured duration ends.
pub fn run(cfg: &SimConfig, stop: &Arc<AtomicBool>) -> io::Result<()> {
    std::fs::create_dir_all(&cfg.dir)?;
    let clock = StdClock::new();
    let start = clock.now();
    let mut poll = Poll::new()?;
    let mut guests = Vec::with_capacity(cfg.guests);
    let mut behaviours = Vec::new();
    for (b, n) in &cfg.failures {
        behaviours.extend(std::iter::repeat_n(*b, *n));
    }
    let mut rng = XorShift32::new(std::process::id() | 1);
    for i in 0..cfg.guests {
        let behaviour = behaviours.get(i).copied().unwrap_or(Behaviour::Healthy);
        let id = format!("{}-{}-{:05}", cfg.prefix, behaviour.name(), i);
        let path = socket_path(&cfg.dir, &id);
        let agent_cfg =
            AgentConfig { name: bounded(&id), heartbeat_interval_ms: cfg.interval_ms, ..AgentConfig::default() };
        let agent = Agent::new(agent_cfg, XorShift32::new(rng.next_id()), start);
        guests.push(SimGuest {
            path,
            behaviour,
            listener: None,
            conn: None,
            agent,
            out: Vec::new(),
            delayed: VecDeque::new(),
            failing: false,
            back_at: None,
            next_garbage: start,
            want_write: false,
            delay: cfg.answer_delay,
        });
    }
    for (i, g) in guests.iter_mut().enumerate() {
        listen(&poll, i, g)?;
    }
    let mut wheel = TimerWheel::new(start);
    for (i, g) in guests.iter().enumerate() {
        wheel.set(i, g.agent.poll_timeout());
    }
    let fail_at = start + cfg.fail_after;
    let end = cfg.duration.map(|d| start + d);
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 64 * 1024];
    let mut fired = Vec::new();
    let mut failures_started = false;
    let mut flooders: Vec<usize> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let now = clock.now();
        if end.is_some_and(|e| now >= e) {
            break;
        }
        let mut timeout =
            wheel.next_wakeup().map_or(Duration::from_millis(200), |w| w - now).min(Duration::from_millis(200));
        if !failures_started {
            timeout = timeout.min(fail_at - now);
        }
        if !flooders.is_empty() {
            // write again within a millisecond: saturates the socket without spinning a core
            timeout = timeout.min(Duration::from_millis(1));
        }
        match poll.poll(&mut events, Some(timeout.into())) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        let now = clock.now();
        for ev in events.iter() {
            let i = ev.token().0 / 2;
            let Some(g) = guests.get_mut(i) else { continue };
            if ev.token().0 % 2 == 0 {
                accept(&poll, i, g, now);
            } else {
                if ev.is_writable() {
                    flush(g);
                }
                if ev.is_readable() || ev.is_read_closed() {
                    read(g, &mut buf, now);
                }
            }
            pump(g, now);
            want_writable(&poll, i, g);
            wheel.set(i, next_deadline(g));
        }
        if !failures_started && now >= fail_at {
            failures_started = true;
            for (i, g) in guests.iter_mut().enumerate() {
                g.failing = true;
                match g.behaviour {
                    Behaviour::Unhealthy => {
                        g.agent.set_health(Health::Unhealthy, CorrectiveAction::Reboot, "simulated application failure")
                    }
                    Behaviour::Flap => {
                        close(&poll, g);
                        g.back_at = Some(now + cfg.flap_down);
                    }
                    Behaviour::Exit => g.agent.shutdown("simulated shutdown"),
                    Behaviour::Flood | Behaviour::Endless | Behaviour::Spam => flooders.push(i),
                    _ => {}
                }
                pump(g, now);
                want_writable(&poll, i, g);
                wheel.set(i, next_deadline(g));
            }
        }
        for &i in &flooders {
            flood(&mut guests[i], &mut rng);
        }
        wheel.expire(now, |_, k| fired.push(k));
        for i in fired.drain(..) {
            let g = &mut guests[i];
            if g.back_at.is_some_and(|t| t <= now) {
                g.back_at = None;
                g.failing = false; // back for good
                let _ = listen(&poll, i, g);
            }
            for _ in 0..8 {
                if g.agent.poll_timeout().is_none_or(|t| t > now) {
                    break;
                }
                g.agent.handle_timeout(now);
                drain_agent_events(g);
            }
            pump(g, now);
            want_writable(&poll, i, g);
            wheel.set(i, next_deadline(g));
        }
    }
    for g in &guests {
        let _ = std::fs::remove_file(&g.path);
    }
    Ok(())
}

fn next_deadline(g: &SimGuest) -> Option<Instant> {
    let mut d = g.agent.poll_timeout();
    for t in g.delayed.front().map(|(t, _)| *t).into_iter().chain(g.back_at) {
        d = Some(d.map_or(t, |x| x.min(t)));
    }
    if g.behaviour == Behaviour::Garbage && g.failing && g.conn.is_some() {
        d = Some(d.map_or(g.next_garbage, |x| x.min(g.next_garbage)));
    }
    d
}

fn listen(poll: &Poll, i: usize, g: &mut SimGuest) -> io::Result<()> {
    let _ = std::fs::remove_file(&g.path);
    let mut l = UnixListener::bind(&g.path)?;
    poll.registry().register(&mut l, Token(2 * i), Interest::READABLE)?;
    g.listener = Some(l);
    Ok(())
}

fn accept(poll: &Poll, i: usize, g: &mut SimGuest, now: Instant) {
    let Some(l) = g.listener.as_ref() else { return };
    while let Ok((mut s, _)) = l.accept() {
        if g.conn.is_some() {
            continue; // one client at a time, as QEMU: extra ones are closed
        }
        if poll.registry().register(&mut s, Token(2 * i + 1), Interest::READABLE).is_ok() {
            g.conn = Some(s);
            g.want_write = false;
            g.out.clear();
            g.agent.reconnected(now);
        }
    }
}

/// Registers guest `i`'s connection for writability exactly while output waits.
fn want_writable(poll: &Poll, i: usize, g: &mut SimGuest) {
    let want = !g.out.is_empty();
    let Some(c) = g.conn.as_mut() else { return };
    if want != g.want_write {
        let interest = if want { Interest::READABLE | Interest::WRITABLE } else { Interest::READABLE };
        if poll.registry().reregister(c, Token(2 * i + 1), interest).is_ok() {
            g.want_write = want;
        }
    }
}

fn close(poll: &Poll, g: &mut SimGuest) {
    if let Some(mut c) = g.conn.take() {
        let _ = poll.registry().deregister(&mut c);
    }
    if let Some(mut l) = g.listener.take() {
        let _ = poll.registry().deregister(&mut l);
    }
    let _ = std::fs::remove_file(&g.path);
}

fn read(g: &mut SimGuest, buf: &mut [u8], now: Instant) {
    loop {
        let Some(c) = g.conn.as_mut() else { return };
        match c.read(buf) {
            Ok(0) => {
                g.conn = None;
                return;
            }
            Ok(n) => {
                let mut input = &buf[..n];
                while !input.is_empty() {
                    let used = g.agent.handle_bytes(now, input);
                    input = &input[used..];
                    drain_agent_events(g);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => {
                g.conn = None;
                return;
            }
        }
    }
}

fn drain_agent_events(g: &mut SimGuest) {
    while let Some(e) = g.agent.poll_event() {
        if let AgentEvent::ActionRequest { .. } = e {
            // simulated applications accept every vote
            let _ = g.agent.answer_action(VoteResult::Accept, "simulated guest accepts");
        }
    }
}

/// Moves the agent's output towards the socket according to the guest's behaviour.
fn pump(g: &mut SimGuest, now: Instant) {
    let mut wire = [0u8; MAX_WIRE];
    while let Some(n) = g.agent.poll_transmit(now, &mut wire) {
        match (g.failing, g.behaviour) {
            (true, Behaviour::Hang | Behaviour::Flap) => {}
            (true, Behaviour::Late) => {
                let delay = Duration::from_millis(u64::from(g.agent.config().heartbeat_interval_ms) * 5 / 2);
                g.delayed.push_back((now + delay, wire[..n].to_vec()));
            }
            _ if g.delay == Duration::ZERO => g.out.extend_from_slice(&wire[..n]),
            _ => g.delayed.push_back((now + g.delay, wire[..n].to_vec())),
        }
    }
    while g.delayed.front().is_some_and(|(t, _)| *t <= now) {
        if let Some((_, bytes)) = g.delayed.pop_front() {
            g.out.extend_from_slice(&bytes);
        }
    }
    if g.behaviour == Behaviour::Garbage && g.failing && now >= g.next_garbage {
        g.out.extend_from_slice(b"\n{\"version\":3,\"msg_type\":\x01garbage\xff}\n");
        g.next_garbage = now + Duration::from_millis(u64::from(g.agent.config().heartbeat_interval_ms));
    }
    if g.conn.is_none() {
        g.out.clear();
        return;
    }
    flush(g);
}

fn flush(g: &mut SimGuest) {
    let Some(c) = g.conn.as_mut() else { return };
    while !g.out.is_empty() {
        match c.write(&g.out) {
            Ok(0) => break,
            Ok(n) => {
                g.out.drain(..n);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    if g.out.len() > 1 << 20 {
        g.out.clear(); // a host that does not read: do not grow without bound
    }
}

fn flood(g: &mut SimGuest, rng: &mut XorShift32) {
    let Some(c) = g.conn.as_mut() else { return };
    let mut chunk = [0u8; 16 * 1024];
    for b in chunk.iter_mut() {
        *b = (rng.next_id() % 251) as u8;
    }
    if g.behaviour == Behaviour::Spam {
        const LINE: &[u8] = b"{\"version\":3,\"revision\":1,\"msg_type\":\"challenge_response\",\"sequence\":2,\"heartbeat_response\":12345,\"heartbeat_health\":\"healthy\",\"corrective_action\":\"reboot\",\"log_msg\":\"unsolicited\"}\n";
        for (i, b) in chunk.iter_mut().enumerate() {
            *b = LINE[i % LINE.len()];
        }
    } else if g.behaviour == Behaviour::Flood {
        for i in (0..chunk.len()).step_by(97) {
            chunk[i] = b'\n';
        }
    } else {
        for b in chunk.iter_mut() {
            if *b == b'\n' {
                *b = b'x';
            }
        }
    }
    // as much as the socket takes right now; a partial write just moves on (it is garbage anyway)
    for _ in 0..16 {
        if !matches!(c.write(&chunk), Ok(n) if n > 0) {
            break;
        }
    }
}
