//! The guest sockets: one connection per guest key, each with a generation carried in its mio `Token` (so a
//! stale readiness event never lands on a new guest in a reused slot), a bounded output buffer, and the list of
//! guests to read. Reads are bounded by each guest's byte budget (asked of the [`Fleet`]) and by a per-pass total;
//! writes never wait (what a guest does not take waits in a 4 KiB buffer, then is dropped and counted).
//!
//! Owns sockets and nothing else: every decision is the fleet's.

use std::io::{self, Read, Write};
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
    to_read: Vec<GuestKey>,
}

impl Default for Conns {
    fn default() -> Self {
        Conns { table: Vec::new(), next_gen: 0, readbuf: vec![0; READ_CHUNK], to_read: Vec::new() }
    }
}

impl Conns {
    /// Guests are waiting to be read (the loop must not sleep).
    pub fn pending_reads(&self) -> bool {
        !self.to_read.is_empty()
    }

    fn get(&mut self, key: GuestKey) -> Option<&mut Conn> {
        self.table.get_mut(key).and_then(Option::as_mut)
    }

    /// A readiness event for token `t`; stale tokens (an older connection in the same slot) are ignored.
    pub fn on_ready(
        &mut self,
        fleet: &mut Fleet,
        t: usize,
        readable: bool,
        read_closed: bool,
        writable: bool,
        now: Instant,
    ) {
        let (key, gen) = (t & 0xFFFF_FFFF, (t >> 32) as u32);
        let Some(conn) = self.get(key).filter(|c| c.gen == gen) else { return };
        conn.read_closed |= read_closed;
        if (readable || read_closed) && !conn.queued {
            conn.queued = true;
            self.to_read.push(key);
        }
        if writable {
            self.flush_out(fleet, key, now);
        }
    }

    /// The fleet says guest `key` has budget again: read it.
    pub fn resume(&mut self, key: GuestKey) {
        if let Some(c) = self.get(key).filter(|c| !c.queued) {
            c.queued = true;
            self.to_read.push(key);
        }
    }

    /// Reads the guests that were ready, each within its byte budget, all within [`PASS_BUDGET`].
    pub fn read_ready(&mut self, fleet: &mut Fleet, now: Instant) {
        let mut pass_left = PASS_BUDGET;
        let mut list = std::mem::take(&mut self.to_read);
        let mut keep = Vec::new();
        for key in list.drain(..) {
            if pass_left == 0 {
                keep.push(key);
                continue;
            }
            if self.read_guest(fleet, key, now, &mut pass_left) {
                if let Some(c) = self.get(key) {
                    c.queued = false;
                }
            } else {
                keep.push(key);
            }
        }
        keep.append(&mut self.to_read);
        self.to_read = keep;
        if self.to_read.is_empty() {
            self.to_read = list; // keep the capacity
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
            match conn.stream.read(&mut buf[..want]) {
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
                if let Err(e) = registry.register(&mut stream, token(key, gen), Interest::READABLE | Interest::WRITABLE)
                {
                    warn!(error = %e, "register failed");
                    fleet.handle_connect_failed(key, false, now);
                    return;
                }
                if self.table.len() <= key {
                    self.table.resize_with(key + 1, || None);
                }
                self.table[key] = Some(Conn { stream, gen, out: Vec::new(), queued: false, read_closed: false });
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
    pub fn transmit(&mut self, fleet: &mut Fleet, key: GuestKey, now: Instant) {
        let mut wire = [0u8; MAX_WIRE];
        let mut broken = None;
        while let Some(n) = fleet.poll_transmit(key, now, &mut wire) {
            let Some(conn) = self.table.get_mut(key).and_then(Option::as_mut) else { break };
            let mut sent = 0;
            if conn.out.is_empty() {
                match conn.stream.write(&wire[..n]) {
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
        if let Some(reason) = broken {
            fleet.handle_closed(key, &reason, now);
        }
    }

    /// Writes what waited for guest `key` (it became writable).
    pub fn flush_out(&mut self, fleet: &mut Fleet, key: GuestKey, now: Instant) {
        let Some(conn) = self.table.get_mut(key).and_then(Option::as_mut) else { return };
        while !conn.out.is_empty() {
            match conn.stream.write(&conn.out) {
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
    }

    /// Writes what waits for every guest (at a stop).
    pub fn flush_all(&mut self, fleet: &mut Fleet, now: Instant) {
        for key in 0..self.table.len() {
            self.flush_out(fleet, key, now);
        }
    }
}
