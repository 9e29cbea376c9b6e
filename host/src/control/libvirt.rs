//! vigild's own libvirt client: libvirt's remote protocol over libvirtd's UNIX socket, in process, on tokio.
//!
//! One connection serves every call; calls are matched to replies by serial, so they run concurrently and a
//! call that hangs (a stopped QEMU can make a monitor query wait forever) delays nobody else: each call has its
//! own timeout, after which its reply, if it ever comes, is dropped. The connection is made on first use and
//! again after it breaks. No FFI and no `unsafe`: the packets are decoded by `vigil_core::libvirt` (bounded,
//! allocation-free, fuzzed) and encoded here.
//!
//! Only local URIs: `qemu:///system`, `qemu:///session`, and `qemu+unix:///system?socket=PATH`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot};
use vigil_core::libvirt::{self as wire, proc, MsgType, Status};

mod conn;
use conn::{Conn, Pending, STREAM_QUEUE};

/// What went wrong with a libvirt call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Error {
    /// The URI is not one this client speaks.
    Uri(String),
    /// libvirtd could not be reached or the connection broke.
    Connect(String),
    /// No reply within the call's timeout.
    Timeout {
        /// The procedure.
        call: &'static str,
        /// The timeout.
        after: Duration,
    },
    /// libvirt refused the call.
    Remote {
        /// `virErrorNumber`.
        code: i32,
        /// libvirt's message.
        message: String,
    },
    /// libvirtd sent something this client cannot read.
    Protocol(String),
    /// The server offers no authentication this client can do.
    Auth(String),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Uri(m) => write!(f, "libvirt URI: {m}"),
            Error::Connect(m) => write!(f, "libvirt connection: {m}"),
            Error::Timeout { call, after } => write!(f, "libvirt {call}: no answer in {} ms", after.as_millis()),
            Error::Remote { code, message } => write!(f, "libvirt error {code}: {message}"),
            Error::Protocol(m) => write!(f, "libvirt protocol: {m}"),
            Error::Auth(m) => write!(f, "libvirt authentication: {m}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<wire::WireError> for Error {
    fn from(e: wire::WireError) -> Self {
        Error::Protocol(e.to_string())
    }
}

/// A libvirt URI this client can open: the socket and the name libvirtd is asked to open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// libvirtd's socket.
    pub socket: PathBuf,
    /// The URI without transport or socket (`qemu:///system`).
    pub name: String,
}

/// Reads a local libvirt URI.
pub fn parse_uri(uri: &str) -> Result<Target, Error> {
    let (scheme, rest) = uri.split_once("://").ok_or_else(|| Error::Uri(format!("{uri:?} has no scheme")))?;
    let (driver, transport) = scheme.split_once('+').unwrap_or((scheme, "unix"));
    if transport != "unix" {
        return Err(Error::Uri(format!("{uri:?}: only local (unix) connections; vigild runs on the node")));
    }
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    if !path.starts_with('/') {
        return Err(Error::Uri(format!("{uri:?}: a host name is not supported; use {driver}:///system")));
    }
    let mut socket = None;
    for kv in query.split('&').filter(|s| !s.is_empty()) {
        match kv.split_once('=') {
            Some(("socket", p)) => socket = Some(PathBuf::from(p)),
            _ => return Err(Error::Uri(format!("{uri:?}: unsupported parameter {kv:?}"))),
        }
    }
    let socket = socket.unwrap_or_else(|| match path {
        "/session" => {
            let run = std::env::var_os("XDG_RUNTIME_DIR").map_or_else(|| PathBuf::from("/run/user/0"), PathBuf::from);
            run.join("libvirt/libvirt-sock")
        }
        _ => PathBuf::from("/run/libvirt/libvirt-sock"),
    });
    Ok(Target { socket, name: format!("{driver}://{path}") })
}

/// A domain handle, as libvirt names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DomainRef {
    /// Its name.
    pub name: String,
    /// Its UUID.
    pub uuid: [u8; 16],
    /// Its id while it runs.
    pub id: i32,
}

/// vigild's libvirt connection. Cheap to clone; every clone shares the connection.
#[derive(Clone)]
pub struct Libvirt {
    target: Arc<Target>,
    conn: Arc<tokio::sync::Mutex<Option<Arc<Conn>>>>,
    timeout: Duration,
}

/// The default timeout of one call.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest domain XML read.
pub const MAX_XML: usize = 4 * 1024 * 1024;

impl Libvirt {
    /// A client of `uri` (nothing is connected until the first call).
    pub fn new(uri: &str) -> Result<Libvirt, Error> {
        Ok(Libvirt {
            target: Arc::new(parse_uri(uri)?),
            conn: Arc::new(tokio::sync::Mutex::new(None)),
            timeout: CALL_TIMEOUT,
        })
    }

    /// The same client with another default timeout per call.
    pub fn with_timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    async fn conn(&self) -> Result<Arc<Conn>, Error> {
        let mut slot = self.conn.lock().await;
        if let Some(c) = slot.as_ref().filter(|c| !c.closed.load(Ordering::Relaxed)) {
            return Ok(Arc::clone(c));
        }
        *slot = None;
        let stream = tokio::time::timeout(self.timeout, UnixStream::connect(&self.target.socket))
            .await
            .map_err(|_| Error::Connect(format!("{}: connect timed out", self.target.socket.display())))?
            .map_err(|e| Error::Connect(format!("{}: {e}", self.target.socket.display())))?;
        let (r, w) = stream.into_split();
        let conn = Arc::new(Conn {
            writer: tokio::sync::Mutex::new(w),
            pending: Mutex::new(HashMap::new()),
            serial: AtomicU32::new(1),
            closed: AtomicBool::new(false),
        });
        tokio::spawn(Arc::clone(&conn).read_loop(r));
        // authentication: none, or polkit (libvirtd asks polkit about our peer credentials)
        let auth = wire::decode_auth_list(&self.call_on(&conn, remote(proc::AUTH_LIST), &[], self.timeout).await?)?;
        if auth & (1 << wire::AUTH_NONE) == 0 && auth != 0 {
            if auth & (1 << wire::AUTH_POLKIT) == 0 {
                return Err(Error::Auth(format!("server offers only SASL (set {}), not supported", "auth_unix_rw")));
            }
            let ret = self.call_on(&conn, remote(proc::AUTH_POLKIT), &[], self.timeout).await?;
            if wire::Xdr::new(&ret).i32()? == 0 {
                return Err(Error::Auth("polkit did not complete".into()));
            }
        }
        let mut open = Enc::default();
        open.opt_str(Some(&self.target.name));
        open.u32(0);
        self.call_on(&conn, remote(proc::OPEN), &open.0, self.timeout).await?;
        *slot = Some(Arc::clone(&conn));
        Ok(conn)
    }

    async fn call_on(&self, conn: &Conn, p: (u32, u32), body: &[u8], timeout: Duration) -> Result<Vec<u8>, Error> {
        let procedure = p.1;
        let (tx, rx) = oneshot::channel();
        let serial = conn.register(Pending::Call(tx));
        let call = proc::name(procedure);
        let result = tokio::time::timeout(timeout, async {
            conn.send(p, 0, serial, 0, body).await?;
            rx.await.map_err(|_| Error::Connect(format!("closed during {call}")))
        })
        .await;
        let (h, body) = match result {
            Ok(r) => r?,
            Err(_) => {
                conn.forget(serial);
                return Err(Error::Timeout { call, after: timeout });
            }
        };
        reply_body(h, body)
    }

    /// Calls `procedure` with `body` and returns the reply's body.
    pub async fn call(&self, procedure: u32, body: &[u8], timeout: Option<Duration>) -> Result<Vec<u8>, Error> {
        let timeout = timeout.unwrap_or(self.timeout);
        let conn = tokio::time::timeout(timeout, self.conn())
            .await
            .map_err(|_| Error::Timeout { call: "connect", after: timeout })??;
        self.call_on(&conn, remote(procedure), body, timeout).await
    }

    /// `virDomainQemuAgentCommand`: a raw guest-agent command (JSON) and its raw answer. libvirt marks the domain
    /// tainted (`custom-ga-command`); only the opt-in health command uses it. `agent_secs` is libvirt's own wait.
    pub async fn agent_command(&self, d: &DomainRef, cmd: &str, agent_secs: i32, t: Duration) -> Result<String, Error> {
        let mut e = Enc::default();
        e.domain(d);
        e.str(cmd);
        e.u32(agent_secs as u32);
        e.u32(0);
        let conn =
            tokio::time::timeout(t, self.conn()).await.map_err(|_| Error::Timeout { call: "connect", after: t })??;
        let body = self.call_on(&conn, (wire::QEMU_PROGRAM, wire::QEMU_PROC_AGENT_COMMAND), &e.0, t).await?;
        Ok(wire::decode_opt_string(&body, MAX_AGENT_REPLY)?.unwrap_or("").to_string())
    }

    /// The domain named by `id`: a UUID (Nova's instance UUID) or a name.
    pub async fn lookup(&self, id: &str) -> Result<DomainRef, Error> {
        let mut e = Enc::default();
        let procedure = match uuid::Uuid::parse_str(id) {
            Ok(u) => {
                e.fixed(u.as_bytes());
                proc::DOMAIN_LOOKUP_BY_UUID
            }
            Err(_) => {
                e.str(id);
                proc::DOMAIN_LOOKUP_BY_NAME
            }
        };
        let body = self.call(procedure, &e.0, None).await?;
        let d = wire::decode_domain(&body)?;
        Ok(DomainRef { name: d.name.to_string(), uuid: d.uuid, id: d.id })
    }

    /// The running domains (`virConnectListAllDomains` with `VIR_CONNECT_LIST_DOMAINS_ACTIVE`).
    pub async fn active_domains(&self, timeout: Option<Duration>) -> Result<Vec<DomainRef>, Error> {
        let mut e = Enc::default();
        e.u32(1); // need_results
        e.u32(1); // VIR_CONNECT_LIST_DOMAINS_ACTIVE
        let body = self.call(proc::CONNECT_LIST_ALL_DOMAINS, &e.0, timeout).await?;
        let mut out = Vec::new();
        wire::decode_domain_list(&body, |d| out.push(DomainRef { name: d.name.to_string(), uuid: d.uuid, id: d.id }))?;
        Ok(out)
    }

    /// `virDomainGetTime`: the guest's clock, read by libvirt through the guest agent (`guest-get-time`, which,
    /// unlike a raw agent command, does not taint the domain).
    pub async fn guest_time(&self, d: &DomainRef, timeout: Option<Duration>) -> Result<(i64, u32), Error> {
        let mut e = Enc::default();
        e.domain(d);
        e.u32(0);
        Ok(wire::decode_time(&self.call(proc::DOMAIN_GET_TIME, &e.0, timeout).await?)?)
    }

    /// `virDomainReset`: a hard reset, as the reset button.
    pub async fn reset(&self, d: &DomainRef, timeout: Option<Duration>) -> Result<(), Error> {
        self.simple(proc::DOMAIN_RESET, d, Some(0), timeout).await
    }

    /// `virDomainReboot` with the hypervisor's default method (ACPI, then the guest agent): needs a live guest.
    pub async fn reboot(&self, d: &DomainRef, timeout: Option<Duration>) -> Result<(), Error> {
        self.simple(proc::DOMAIN_REBOOT, d, Some(0), timeout).await
    }

    /// `virDomainDestroy`: stop at once.
    pub async fn destroy(&self, d: &DomainRef, timeout: Option<Duration>) -> Result<(), Error> {
        self.simple(proc::DOMAIN_DESTROY, d, None, timeout).await
    }

    /// `virDomainCreate`: start a defined domain.
    pub async fn start(&self, d: &DomainRef, timeout: Option<Duration>) -> Result<(), Error> {
        self.simple(proc::DOMAIN_CREATE, d, None, timeout).await
    }

    async fn simple(&self, p: u32, d: &DomainRef, flags: Option<u32>, t: Option<Duration>) -> Result<(), Error> {
        let mut e = Enc::default();
        e.domain(d);
        if let Some(f) = flags {
            e.u32(f);
        }
        self.call(p, &e.0, t).await.map(drop)
    }

    /// `virDomainGetInfo`.
    pub async fn info(&self, d: &DomainRef, timeout: Option<Duration>) -> Result<wire::DomainInfo, Error> {
        let mut e = Enc::default();
        e.domain(d);
        Ok(wire::decode_info(&self.call(proc::DOMAIN_GET_INFO, &e.0, timeout).await?)?)
    }

    /// The live domain XML.
    pub async fn xml(&self, d: &DomainRef, timeout: Option<Duration>) -> Result<String, Error> {
        let mut e = Enc::default();
        e.domain(d);
        e.u32(0);
        let body = self.call(proc::DOMAIN_GET_XML_DESC, &e.0, timeout).await?;
        Ok(wire::decode_string(&body, MAX_XML)?.to_string())
    }

    /// `virDomainBlockStats` of one disk (its target name, `vda`).
    pub async fn block_stats(&self, d: &DomainRef, disk: &str, t: Option<Duration>) -> Result<wire::BlockStats, Error> {
        let mut e = Enc::default();
        e.domain(d);
        e.str(disk);
        Ok(wire::decode_block_stats(&self.call(proc::DOMAIN_BLOCK_STATS, &e.0, t).await?)?)
    }

    /// `virDomainInterfaceStats` of one interface (its target device, `vnet0`).
    pub async fn interface_stats(
        &self,
        d: &DomainRef,
        dev: &str,
        t: Option<Duration>,
    ) -> Result<wire::InterfaceStats, Error> {
        let mut e = Enc::default();
        e.domain(d);
        e.str(dev);
        Ok(wire::decode_interface_stats(&self.call(proc::DOMAIN_INTERFACE_STATS, &e.0, t).await?)?)
    }

    /// `virDomainScreenshot` of screen 0: the MIME type libvirt names and the image, at most `max` bytes, all
    /// within `timeout`.
    pub async fn screenshot(&self, d: &DomainRef, max: usize, timeout: Duration) -> Result<(String, Vec<u8>), Error> {
        let call = "domain screenshot";
        let conn = tokio::time::timeout(timeout, self.conn())
            .await
            .map_err(|_| Error::Timeout { call: "connect", after: timeout })??;
        let (tx, mut rx) = mpsc::channel(STREAM_QUEUE);
        let serial = conn.register(Pending::Stream(tx));
        let mut e = Enc::default();
        e.domain(d);
        e.u32(0);
        e.u32(0);
        let result = tokio::time::timeout(timeout, async {
            conn.send(remote(proc::DOMAIN_SCREENSHOT), 0, serial, 0, &e.0).await?;
            let closed = || Error::Connect(format!("closed during {call}"));
            // the reply (the MIME type) and the stream's packets, in whatever order libvirtd sends them
            let (mut mime, mut image, mut ended) = (None, Vec::new(), false);
            while mime.is_none() || !ended {
                let (h, body) = rx.recv().await.ok_or_else(closed)?;
                match (h.kind, h.status) {
                    (MsgType::Reply, _) => {
                        mime = Some(wire::decode_opt_string(&reply_body(h, body)?, 256)?.unwrap_or("").to_string())
                    }
                    // libvirt ends a read stream with an empty data packet; the client then finishes it
                    (_, Status::Continue) if body.is_empty() => ended = true,
                    (_, Status::Continue) => {
                        if image.len() + body.len() > max {
                            return Err(Error::Protocol(format!("screenshot larger than {max} bytes")));
                        }
                        image.extend_from_slice(&body);
                    }
                    (_, Status::Ok) => ended = true,
                    (_, Status::Error) => return Err(remote_error(&body)),
                }
            }
            Ok((mime.unwrap_or_default(), image))
        })
        .await;
        conn.forget(serial);
        match result {
            Ok(Ok(v)) => {
                // finish the stream as libvirt's client does (an empty OK packet); its answer is not awaited
                let _ = conn.send(remote(proc::DOMAIN_SCREENSHOT), 3, serial, 0, &[]).await;
                Ok(v)
            }
            Ok(Err(e)) => {
                let _ = conn.send(remote(proc::DOMAIN_SCREENSHOT), 3, serial, 1, &[]).await;
                Err(e)
            }
            Err(_) => Err(Error::Timeout { call, after: timeout }),
        }
    }
}

/// A procedure of the remote program.
fn remote(procedure: u32) -> (u32, u32) {
    (wire::REMOTE_PROGRAM, procedure)
}

/// Longest raw guest-agent answer read.
pub const MAX_AGENT_REPLY: usize = 1024 * 1024;

fn remote_error(body: &[u8]) -> Error {
    match wire::decode_error(body) {
        Ok(e) => Error::Remote { code: e.code, message: e.message.unwrap_or("(no message)").to_string() },
        Err(e) => Error::Protocol(format!("unreadable error record: {e}")),
    }
}

fn reply_body(h: wire::Header, body: Vec<u8>) -> Result<Vec<u8>, Error> {
    match h.status {
        Status::Ok => Ok(body),
        Status::Error => Err(remote_error(&body)),
        Status::Continue => Err(Error::Protocol("a reply marked 'continue'".into())),
    }
}

/// An XDR writer.
#[derive(Default)]
struct Enc(Vec<u8>);

impl Enc {
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }

    fn fixed(&mut self, b: &[u8]) {
        self.0.extend_from_slice(b);
        self.0.resize(self.0.len() + wire::pad(b.len()), 0);
    }

    fn str(&mut self, s: &str) {
        self.u32(s.len() as u32);
        self.fixed(s.as_bytes());
    }

    fn opt_str(&mut self, s: Option<&str>) {
        match s {
            Some(s) => {
                self.u32(1);
                self.str(s);
            }
            None => self.u32(0),
        }
    }

    fn domain(&mut self, d: &DomainRef) {
        self.str(&d.name);
        self.fixed(&d.uuid);
        self.u32(d.id as u32);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris() {
        let t = parse_uri("qemu+unix:///system?socket=/tmp/x/libvirt-sock").unwrap();
        assert_eq!(t, Target { socket: "/tmp/x/libvirt-sock".into(), name: "qemu:///system".into() });
        let t = parse_uri("qemu:///system").unwrap();
        assert_eq!(t.socket, PathBuf::from("/run/libvirt/libvirt-sock"));
        assert!(matches!(parse_uri("qemu+ssh://host/system"), Err(Error::Uri(_))));
        assert!(matches!(parse_uri("qemu://host/system"), Err(Error::Uri(_))));
        assert!(matches!(parse_uri("qemu:///system?no_verify=1"), Err(Error::Uri(_))));
        assert!(matches!(parse_uri("nonsense"), Err(Error::Uri(_))));
    }

    #[test]
    fn encoding_pads_to_four() {
        let mut e = Enc::default();
        e.domain(&DomainRef { name: "vm1".into(), uuid: [1; 16], id: -1 });
        assert_eq!(e.0.len(), 4 + 4 + 16 + 4);
        assert_eq!(&e.0[..8], &[0, 0, 0, 3, b'v', b'm', b'1', 0]);
        assert_eq!(&e.0[24..], &[0xff; 4]);
        let d = wire::decode_domain(&e.0).unwrap();
        assert_eq!((d.name, d.uuid, d.id), ("vm1", [1; 16], -1));
    }
}
