//! The connection under vigild's libvirt client: one UNIX socket to libvirtd, a writer shared by every call, and a
//! reader task that hands each packet to the call (or stream) whose serial it carries.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::{mpsc, oneshot};
use vigil_core::libvirt::{self as wire, MsgType};

use super::Error;

/// A packet for one call, in the order the reader found it.
pub(super) type Packet = (wire::Header, Vec<u8>);

pub(super) enum Pending {
    Call(oneshot::Sender<Packet>),
    Stream(mpsc::Sender<Packet>),
}

pub(super) struct Conn {
    pub(super) writer: tokio::sync::Mutex<OwnedWriteHalf>,
    pub(super) pending: Mutex<HashMap<u32, Pending>>,
    pub(super) serial: AtomicU32,
    pub(super) closed: AtomicBool,
}

/// Stream packets buffered per call before the reader gives up on a consumer that does not keep up.
pub(super) const STREAM_QUEUE: usize = 256;

impl Conn {
    pub(super) fn register(&self, p: Pending) -> u32 {
        let serial = self.serial.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut m) = self.pending.lock() {
            m.insert(serial, p);
        }
        serial
    }

    pub(super) fn forget(&self, serial: u32) {
        if let Ok(mut m) = self.pending.lock() {
            m.remove(&serial);
        }
    }

    pub(super) async fn send(
        &self,
        call: (u32, u32),
        kind: u32,
        serial: u32,
        status: u32,
        body: &[u8],
    ) -> Result<(), Error> {
        let (program, procedure) = call;
        let mut p = Vec::with_capacity(wire::LEN_BYTES + wire::HEADER_BYTES + body.len());
        let len = (wire::LEN_BYTES + wire::HEADER_BYTES + body.len()) as u32;
        for w in [len, program, wire::REMOTE_PROTOCOL_VERSION, procedure, kind, serial, status] {
            p.extend_from_slice(&w.to_be_bytes());
        }
        p.extend_from_slice(body);
        let mut w = self.writer.lock().await;
        w.write_all(&p).await.map_err(|e| {
            self.closed.store(true, Ordering::Relaxed);
            Error::Connect(e.to_string())
        })
    }

    /// Reads packets until the connection ends, handing each to the call it answers.
    pub(super) async fn read_loop(self: Arc<Self>, mut r: tokio::net::unix::OwnedReadHalf) {
        loop {
            let mut len = [0u8; 4];
            if r.read_exact(&mut len).await.is_err() {
                break;
            }
            let Ok(n) = wire::body_len(len) else { break };
            let mut body = vec![0u8; n];
            if r.read_exact(&mut body).await.is_err() {
                break;
            }
            let Ok((h, rest)) = wire::decode_header(&body) else { break };
            if h.program != wire::REMOTE_PROGRAM && h.program != wire::QEMU_PROGRAM {
                continue; // keepalive or another program: not asked for, ignored
            }
            let offset = body.len() - rest.len();
            body.drain(..offset);
            let Ok(mut m) = self.pending.lock() else { break };
            // a reply ends a call; a stream's packets go to its consumer, and one that does not keep up loses its
            // stream, nobody else's; anything else (events, never registered for; fds, never asked for) is ignored
            let serial = h.serial;
            let lost_stream = match (h.kind, m.get(&serial)) {
                (MsgType::Reply, Some(Pending::Call(_))) => {
                    if let Some(Pending::Call(tx)) = m.remove(&serial) {
                        let _ = tx.send((h, body));
                    }
                    false
                }
                (MsgType::Reply | MsgType::Stream, Some(Pending::Stream(tx))) => tx.try_send((h, body)).is_err(),
                _ => false,
            };
            if lost_stream {
                m.remove(&serial);
            }
        }
        self.closed.store(true, Ordering::Relaxed);
        if let Ok(mut m) = self.pending.lock() {
            m.clear(); // every waiting call sees its channel close
        }
    }
}
