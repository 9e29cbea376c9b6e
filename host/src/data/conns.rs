//! The guest sockets: one connection per guest key, each with a generation carried in its mio `Token` (so a
//! stale readiness event never lands on a new guest in a reused slot), a bounded output buffer, and the list of
//! guests to read. Reads are bounded by each guest's byte budget (asked of the [`Fleet`]) and by a per-pass total;
//! writes never wait (what a guest does not take waits in a 4 KiB buffer, then is dropped and counted).
//!
//! Owns sockets and nothing else: every decision is the fleet's.

use std::io;
use std::path::Path;

use mio::net::UnixStream;
use mio::{Interest, Registry, Token};
use tracing::{debug, warn};
use vigil_core::{Instant, MAX_WIRE};

use crate::fleet::{Fleet, GuestKey};

/// Bytes read from all guests in one pass before timers get their turn (what is left is read next pass).
pub const PASS_BUDGET: usize = 256 * 1024;
/// Bytes read from one guest per read call.
pub const READ_CHUNK: usize = 16 * 1024;
/// Bytes a guest whose timer is due may still be read after the pass budget is spent (two whole messages): an
/// answer that arrived in time is counted before the verdict that would miss it.
pub const DUE_READ: usize = 2 * MAX_WIRE;
/// Bytes that may wait for a guest that does not read; beyond it messages are dropped and counted.
pub const MAX_OUTBUF: usize = 4096;

struct Conn {
    stream: UnixStream,
    gen: u32,
    out: Vec<u8>,
    /// In the list of guests to read.
    queued: bool,
    /// The peer closed its end: read to the end, never stop at a short read.
    read_closed: bool,
    /// Registered for writability too: only while `out` holds bytes. A socket registered for it at all times
    /// raises an edge each time the guest takes a challenge, which would wake the loop twice per heartbeat.
    want_write: bool,
}

impl Conn {
    /// Registers for writability exactly while bytes wait in `out`. Re-registering reports a socket that became
    /// writable in between at once, so no edge is lost.
    fn want_writable(&mut self, registry: &Registry, key: GuestKey) -> io::Result<()> {
        let want = !self.out.is_empty();
        if want != self.want_write {
            let interest = if want { Interest::READABLE | Interest::WRITABLE } else { Interest::READABLE };
            registry.reregister(&mut self.stream, token(key, self.gen), interest)?;
            self.want_write = want;
        }
        Ok(())
    }
}

/// One read of a guest socket, as the bare `recvfrom` system call (rustix): the C library's wrapper, a
/// cancellation point, costs two more calls around each one, about a tenth of the loop's own time per heartbeat.
fn recv(stream: &UnixStream, buf: &mut [u8]) -> io::Result<usize> {
    Ok(rustix::net::recv(stream, buf, rustix::net::RecvFlags::empty())?.0)
}

/// One write to a guest socket, as the bare `sendto` system call (see [`recv`]); a guest that closed its end gets
/// an error, never a `SIGPIPE`.
fn send(stream: &UnixStream, buf: &[u8]) -> io::Result<usize> {
    Ok(rustix::net::send(stream, buf, rustix::net::SendFlags::NOSIGNAL)?)
}

/// The token of guest `key`'s connection number `gen`.
fn token(key: GuestKey, gen: u32) -> Token {
    Token(key | (gen as usize) << 32)
}

/// Every guest connection.
pub struct Conns {
    table: Vec<Option<Conn>>,
    next_gen: u32,
    readbuf: Vec<u8>,
    /// One message on its way out (kept, so that a send does not clear a kilobyte first).
    wire: Box<[u8; MAX_WIRE]>,
    to_read: Vec<GuestKey>,
    /// Bytes read from all guests in one pass ([`PASS_BUDGET`]; smaller in tests).
    pass_budget: usize,
}

impl Default for Conns {
    fn default() -> Self {
        Conns::with_pass_budget(PASS_BUDGET)
    }
}

impl Conns {
    /// Connections whose passes read at most `pass_budget` bytes in all.
    pub fn with_pass_budget(pass_budget: usize) -> Self {
        Conns {
            table: Vec::new(),
            next_gen: 0,
            readbuf: vec![0; READ_CHUNK],
            wire: Box::new([0; MAX_WIRE]),
            to_read: Vec::new(),
            pass_budget,
        }
    }

    /// Guests are waiting to be read (the loop must not sleep).
    pub fn pending_reads(&self) -> bool {
        !self.to_read.is_empty()
    }

    fn get(&mut self, key: GuestKey) -> Option<&mut Conn> {
        self.table.get_mut(key).and_then(Option::as_mut)
    }

    /// A readiness event of a guest connection; stale ones (an older connection in the same slot) are ignored.
    pub fn on_ready(&mut self, fleet: &mut Fleet, registry: &Registry, event: &mio::event::Event, now: Instant) {
        let t = event.token().0;
        let (key, gen) = (t & 0xFFFF_FFFF, (t >> 32) as u32);
        let Some(conn) = self.get(key).filter(|c| c.gen == gen) else { return };
        conn.read_closed |= event.is_read_closed();
        if (event.is_readable() || event.is_read_closed()) && !conn.queued {
            conn.queued = true;
            self.to_read.push(key);
        }
        if event.is_writable() {
            self.flush_out(fleet, registry, key, now);
        }
    }

    /// The fleet says guest `key` has budget again: read it.
    pub fn resume(&mut self, key: GuestKey) {
        if let Some(c) = self.get(key).filter(|c| !c.queued) {
            c.queued = true;
            self.to_read.push(key);
        }
    }

    /// Reads the guests that were ready, each within its byte budget, all within the pass budget. A pass that
    /// runs out resumes, next time, with the guests it did not reach; the guest it stopped in goes behind them, so a
    /// busy guest never takes the head of every pass.
    pub fn read_ready(&mut self, fleet: &mut Fleet, now: Instant) {
        let mut pass_left = self.pass_budget;
        let mut list = std::mem::take(&mut self.to_read);
        let mut unreached = Vec::new();
        let mut cut_short = Vec::new();
        for key in list.drain(..) {
            if pass_left == 0 {
                unreached.push(key);
                continue;
            }
            if self.read_guest(fleet, key, now, &mut pass_left) {
                if let Some(c) = self.get(key) {
                    c.queued = false;
                }
            } else {
                cut_short.push(key);
            }
        }
        unreached.append(&mut cut_short);
        unreached.append(&mut self.to_read);
        self.to_read = unreached;
        if self.to_read.is_empty() {
            self.to_read = list; // keep the capacity
        }
    }

    /// Before timers fire: guests still waiting to be read whose deadline is due are read now (up to
    /// [`DUE_READ`] each, within their byte budget), so that an answer already in the socket is counted before the
    /// verdict that would miss it. Bounded by the guests due in this pass.
    pub fn read_due(&mut self, fleet: &mut Fleet, now: Instant) {
        if self.to_read.is_empty() {
            return;
        }
        let due: Vec<GuestKey> =
            self.to_read.iter().copied().filter(|&k| fleet.deadline(k).is_some_and(|d| d <= now)).collect();
        for key in due {
            let mut left = DUE_READ;
            if self.read_guest(fleet, key, now, &mut left) {
                if let Some(c) = self.get(key) {
                    c.queued = false;
                }
                self.to_read.retain(|&k| k != key);
            }
        }
    }

    /// Reads one guest; `true` when it is done for now (drained, over budget, or closed).
    fn read_guest(&mut self, fleet: &mut Fleet, key: GuestKey, now: Instant, pass_left: &mut usize) -> bool {
        let mut buf = std::mem::take(&mut self.readbuf);
        let done = loop {
            let allowance = fleet.read_allowance(key, now);
            let Some(conn) = self.table.get_mut(key).and_then(Option::as_mut) else { break true };
            if allowance == 0 {
                fleet.handle_over_budget(key, now);
                break true;
            }
            if *pass_left == 0 {
                break false;
            }
            let want = allowance.min(buf.len()).min(*pass_left);
            match recv(&conn.stream, &mut buf[..want]) {
                Ok(0) => {
                    fleet.handle_closed(key, "connection closed by peer", now);
                    break true;
                }
                Ok(n) => {
                    *pass_left -= n;
                    let short = n < want && !conn.read_closed;
                    fleet.handle_bytes(key, &buf[..n], now);
                    if short {
                        // a short read drained the stream socket: the next arrival raises a new edge, so the
                        // read that would only say WouldBlock is skipped
                        fleet.handle_drained(key);
                        break true;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    fleet.handle_drained(key);
                    break true;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    fleet.handle_closed(key, &format!("read error: {e}"), now);
                    break true;
                }
            }
        };
        self.readbuf = buf;
        done
    }

    /// Connects guest `key` to `path` and tells the fleet how it went.
    pub fn connect(&mut self, fleet: &mut Fleet, registry: &Registry, key: GuestKey, path: &Path, now: Instant) {
        match UnixStream::connect(path) {
            Ok(mut stream) => {
                self.next_gen = (self.next_gen + 1) & 0x7FFF_FFFF;
                let gen = self.next_gen;
                if let Err(e) = registry.register(&mut stream, token(key, gen), Interest::READABLE) {
                    warn!(error = %e, "register failed");
                    fleet.handle_connect_failed(key, false, now);
                    return;
                }
                if self.table.len() <= key {
                    self.table.resize_with(key + 1, || None);
                }
                self.table[key] =
                    Some(Conn { stream, gen, out: Vec::new(), queued: false, read_closed: false, want_write: false });
                fleet.handle_connected(key, now);
            }
            Err(e) => {
                debug!(path = %path.display(), error = %e, "connect failed");
                fleet.handle_connect_failed(key, e.kind() == io::ErrorKind::NotFound, now);
            }
        }
    }

    /// Closes guest `key`'s connection.
    pub fn close(&mut self, registry: &Registry, key: GuestKey) {
        if let Some(mut c) = self.table.get_mut(key).and_then(Option::take) {
            let _ = registry.deregister(&mut c.stream);
        }
    }

    /// Writes what the fleet has for guest `key`.
    pub fn transmit(&mut self, fleet: &mut Fleet, registry: &Registry, key: GuestKey, now: Instant) {
        let wire = &mut self.wire;
        let mut broken = None;
        while let Some(n) = fleet.poll_transmit(key, now, wire) {
            let Some(conn) = self.table.get_mut(key).and_then(Option::as_mut) else { break };
            let mut sent = 0;
            if conn.out.is_empty() {
                match send(&conn.stream, &wire[..n]) {
                    Ok(m) => sent = m,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        broken = Some(format!("write error: {e}"));
                        break;
                    }
                }
            }
            if sent < n {
                if conn.out.len() + (n - sent) <= MAX_OUTBUF {
                    conn.out.extend_from_slice(&wire[sent..n]);
                } else {
                    fleet.handle_tx_dropped(key);
                }
            }
        }
        if broken.is_none() {
            if let Some(conn) = self.table.get_mut(key).and_then(Option::as_mut) {
                if let Err(e) = conn.want_writable(registry, key) {
                    broken = Some(format!("reregister failed: {e}"));
                }
            }
        }
        if let Some(reason) = broken {
            fleet.handle_closed(key, &reason, now);
        }
    }

    /// Writes what waited for guest `key` (it became writable).
    pub fn flush_out(&mut self, fleet: &mut Fleet, registry: &Registry, key: GuestKey, now: Instant) {
        let Some(conn) = self.table.get_mut(key).and_then(Option::as_mut) else { return };
        while !conn.out.is_empty() {
            match send(&conn.stream, &conn.out) {
                Ok(0) => break,
                Ok(n) => {
                    conn.out.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let reason = format!("write error: {e}");
                    fleet.handle_closed(key, &reason, now);
                    return;
                }
            }
        }
        if conn.out.is_empty() && conn.out.capacity() > MAX_OUTBUF {
            conn.out = Vec::new();
        }
        if let Err(e) = conn.want_writable(registry, key) {
            fleet.handle_closed(key, &format!("reregister failed: {e}"), now);
        }
    }

    /// Writes what waits for every guest (at a stop).
    pub fn flush_all(&mut self, fleet: &mut Fleet, registry: &Registry, now: Instant) {
        for key in 0..self.table.len() {
            self.flush_out(fleet, registry, key, now);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;
    use crate::config::{FileConfig, GuestSettings};
    use crate::fleet::{FleetConfig, Io, Origin};
    use std::io::BufRead;
    use std::os::unix::net::{UnixListener, UnixStream as StdStream};

    fn at(ms: u64) -> Instant {
        Instant::from_millis(ms)
    }

    /// `n` guests on real sockets, connected and registered at a 1 s interval; returns the guests' ends (with
    /// the nonce of the last challenge each got) and what the test drives.
    struct Rig {
        fleet: Fleet,
        conns: Conns,
        poll: mio::Poll,
        guests: Vec<(GuestKey, StdStream, std::io::BufReader<StdStream>)>,
        _dir: std::path::PathBuf,
    }

    impl Rig {
        fn new(n: usize, pass_budget: usize) -> Rig {
            let dir = std::env::temp_dir().join(format!("vigil-conns-{}-{n}-{pass_budget}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            let settings = GuestSettings { spread_phase: Some(false), ..GuestSettings::default() };
            let file = FileConfig { defaults: settings, ..FileConfig::default() };
            let mut rig = Rig {
                fleet: Fleet::new(FleetConfig::default(), file, 7, at(0)),
                conns: Conns::with_pass_budget(pass_budget),
                poll: mio::Poll::new().unwrap(),
                guests: Vec::new(),
                _dir: dir.clone(),
            };
            for i in 0..n {
                let path = dir.join(format!("g{i}.sock"));
                let listener = UnixListener::bind(&path).unwrap();
                let key = rig.fleet.add_guest(&format!("g{i}"), path, Origin::Configured, None, 9, at(0)).unwrap();
                rig.pump(0);
                let (s, _) = listener.accept().unwrap();
                s.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
                let r = std::io::BufReader::new(s.try_clone().unwrap());
                rig.guests.push((key, s, r));
            }
            for i in 0..n {
                let init = "{\"version\":3,\"revision\":1,\"msg_type\":\"init\",\"sequence\":1,\"invocation_id\":1,\"name\":\"g\",\"heartbeat_interval_ms\":1000,\"vote_secs\":9,\"shutdown_notice_secs\":9,\"suspend_notice_secs\":9,\"resume_notice_secs\":9,\"restart_secs\":60,\"corrective_action\":\"log\"}\n";
                rig.send(i, init);
            }
            while rig.conns.pending_reads() {
                rig.conns.read_ready(&mut rig.fleet, at(0));
            }
            rig.pump(0);
            rig
        }

        fn pump(&mut self, t: u64) {
            for _ in 0..16 {
                while let Some(io) = self.fleet.poll_io() {
                    match io {
                        Io::Connect { key, path } => {
                            self.conns.connect(&mut self.fleet, self.poll.registry(), key, &path, at(t))
                        }
                        Io::Close { key } => self.conns.close(self.poll.registry(), key),
                        Io::Resume { key } => self.conns.resume(key),
                    }
                }
                while let Some(key) = self.fleet.poll_dirty() {
                    self.conns.transmit(&mut self.fleet, self.poll.registry(), key, at(t));
                }
                while self.fleet.poll_event().is_some() {}
            }
        }

        /// Guest `i` writes `bytes`; the socket is ready to read (as mio would say).
        fn send(&mut self, i: usize, bytes: &str) {
            use std::io::Write;
            self.guests[i].1.write_all(bytes.as_bytes()).unwrap();
            self.conns.resume(self.guests[i].0);
        }

        /// The nonce of the next challenge guest `i` reads.
        fn challenge(&mut self, i: usize) -> u32 {
            loop {
                let mut line = String::new();
                self.guests[i].2.read_line(&mut line).unwrap();
                let line = line.trim();
                if line.is_empty() {
                    continue;
                }
                if let Ok(m) = vigil_core::decode(line.as_bytes()) {
                    if let vigil_core::Body::Challenge { heartbeat_challenge } = m.body {
                        return heartbeat_challenge;
                    }
                }
            }
        }

        fn answer(nonce: u32) -> String {
            format!("{{\"version\":3,\"revision\":1,\"msg_type\":\"challenge_response\",\"sequence\":2,\"heartbeat_response\":{nonce},\"heartbeat_health\":\"healthy\",\"corrective_action\":\"none\",\"log_msg\":\"{}\"}}\n", "x".repeat(100))
        }

        fn misses(&self) -> u64 {
            self.fleet.snapshot(at(0)).iter().map(|g| g.misses).sum()
        }
    }

    #[test]
    fn an_answer_in_the_socket_is_read_before_its_timer_fires_even_when_the_pass_budget_ran_out() {
        // three guests answer in time (at 500 ms); the pass may read only 100 bytes in all, so most answers are
        // still in their sockets when the challenges' deadline (1000 ms) comes
        let mut rig = Rig::new(3, 100);
        for i in 0..3 {
            let n = rig.challenge(i);
            rig.send(i, &Rig::answer(n));
        }
        rig.conns.read_ready(&mut rig.fleet, at(1000));
        assert!(rig.conns.pending_reads(), "the pass budget left answers unread");
        rig.conns.read_due(&mut rig.fleet, at(1000));
        rig.fleet.handle_timeouts(at(1000));
        rig.pump(1000);
        assert_eq!(rig.misses(), 0, "every answer that arrived in time was counted before the verdict");
        // the same without reading the due guests first: misses (what the loop did before)
        for i in 0..3 {
            let n = rig.challenge(i);
            rig.send(i, &Rig::answer(n));
        }
        rig.conns.read_ready(&mut rig.fleet, at(2000));
        rig.fleet.handle_timeouts(at(2000));
        assert!(rig.misses() > 0);
    }

    #[test]
    fn a_pass_that_runs_out_resumes_with_the_guests_it_did_not_reach() {
        let mut rig = Rig::new(3, 400);
        for i in 0..3 {
            let n = rig.challenge(i);
            let answer = Rig::answer(n);
            rig.send(i, &answer);
        }
        let keys: Vec<GuestKey> = rig.guests.iter().map(|g| g.0).collect();
        rig.conns.read_ready(&mut rig.fleet, at(10));
        // 400 bytes: the first guest read whole (an answer is about 255 bytes), the second cut short, the third not
        // reached
        assert_eq!(rig.conns.to_read, [keys[2], keys[1]], "the unreached guest first, the cut one behind it");
    }

    #[test]
    fn a_guest_that_reads_late_gets_what_waited_once_its_socket_has_room() {
        let mut rig = Rig::new(1, PASS_BUDGET);
        let key = rig.guests[0].0;
        let _ = rig.challenge(0);
        // the guest stops reading: fill its socket (empty lines, which a guest skips)
        let conn = rig.conns.get(key).unwrap();
        let fill = [b'\n'; 4096];
        while send(&conn.stream, &fill).is_ok() {}
        assert!(!conn.want_write, "registered for writability only while output waits");
        rig.fleet.handle_timeouts(at(1000));
        rig.pump(1000);
        let conn = rig.conns.get(key).unwrap();
        assert!(!conn.out.is_empty() && conn.want_write, "the challenge waits, and the socket is watched for room");
        // the guest reads again: the readiness event flushes what waited and stops watching for room
        let reader = std::thread::spawn({
            let mut s = rig.guests[0].1.try_clone().unwrap();
            move || {
                let mut all = Vec::new();
                let mut buf = [0u8; 65536];
                while !all.ends_with(b"}\n") {
                    let n = std::io::Read::read(&mut s, &mut buf).unwrap();
                    assert!(n > 0);
                    all.extend_from_slice(&buf[..n]);
                }
                all
            }
        });
        let mut events = mio::Events::with_capacity(8);
        while rig.conns.get(key).unwrap().want_write {
            rig.poll.poll(&mut events, Some(std::time::Duration::from_secs(5))).unwrap();
            assert!(!events.is_empty(), "the socket's room was reported");
            for e in events.iter() {
                let registry = rig.poll.registry();
                rig.conns.on_ready(&mut rig.fleet, registry, e, at(1001));
            }
        }
        let all = reader.join().unwrap();
        let line = all.rsplit(|&b| b == b'\n').nth(1).unwrap();
        assert!(line.starts_with(b"{") && line.windows(9).any(|w| w == b"challenge"), "the challenge that waited");
        assert!(rig.conns.get(key).unwrap().out.is_empty());
    }
}
