//! systemd's notification protocol (`Type=notify`): `READY=1`, `WATCHDOG=1`, `STOPPING=1`, `STATUS=...` sent as
//! datagrams to `$NOTIFY_SOCKET`. Without that variable every call is a no-op.
//!
//! The socket is non-blocking: a service manager that does not read costs a dropped datagram, never a stalled
//! loop. The watchdog is honoured only when `$WATCHDOG_PID` is unset or names this process. Corrective commands
//! are started without these variables (see `actions`). (Written here rather than with the `sd-notify` crate,
//! whose socket blocks; the protocol is one datagram.)

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// A connection to the service manager, if there is one.
pub struct Notifier {
    sock: Option<(UnixDatagram, std::os::unix::net::SocketAddr)>,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// Reads `$NOTIFY_SOCKET` and `$WATCHDOG_USEC`.
    pub fn from_env() -> Self {
        let for_us = std::env::var("WATCHDOG_PID")
            .ok()
            .and_then(|p| p.parse::<u32>().ok())
            .is_none_or(|p| p == std::process::id());
        let watchdog = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|&us| us > 0 && for_us)
            .map(Duration::from_micros);
        let sock = std::env::var_os("NOTIFY_SOCKET").and_then(|path| {
            let path = path.to_string_lossy().into_owned();
            let addr = if let Some(name) = path.strip_prefix('@') {
                use std::os::linux::net::SocketAddrExt;
                std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).ok()?
            } else {
                std::os::unix::net::SocketAddr::from_pathname(&path).ok()?
            };
            let sock = UnixDatagram::unbound().ok()?;
            sock.set_nonblocking(true).ok()?;
            Some((sock, addr))
        });
        Notifier { sock, watchdog }
    }

    /// How often to send `WATCHDOG=1` (half the manager's timeout), if it asked for it.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.sock.as_ref().and(self.watchdog).map(|d| d / 2)
    }

    /// Sends one state string; errors are ignored (the manager may be gone).
    pub fn notify(&self, state: &str) {
        if let Some((sock, addr)) = &self.sock {
            let _ = sock.send_to_addr(state.as_bytes(), addr);
        }
    }
}
