//! Serving the admin API's connections, within limits: at most `max_conns` connections per listener (beyond them
//! new connections wait in the kernel's backlog and cost vigild no descriptor), and a connection that has no
//! request in progress for `idle` (one that never sends a complete request, or sits idle after one) is closed.
//! So no local user can exhaust vigild's descriptors, and a flood on one listener (the loopback TCP port, which
//! every local user can reach) never slows the other (the UNIX socket) or the data plane.

use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{watch, Semaphore};

/// What one listener allows.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Connections served at once.
    pub max_conns: usize,
    /// A connection with no request in progress for this long is closed.
    pub idle: Duration,
}

/// The UNIX socket: operators and their tools.
pub const UNIX_LIMITS: Limits = Limits { max_conns: 256, idle: Duration::from_secs(10) };
/// The loopback TCP port: reachable by every local user, so a smaller share.
pub const TCP_LIMITS: Limits = Limits { max_conns: 64, idle: Duration::from_secs(10) };

/// A listener whose connections the admin API serves.
pub trait Listener: Send + 'static {
    /// A connection.
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// The next connection.
    fn next(&self) -> impl Future<Output = std::io::Result<Self::Io>> + Send;
}

impl Listener for tokio::net::UnixListener {
    type Io = tokio::net::UnixStream;
    async fn next(&self) -> std::io::Result<Self::Io> {
        self.accept().await.map(|(s, _)| s)
    }
}

impl Listener for tokio::net::TcpListener {
    type Io = tokio::net::TcpStream;
    async fn next(&self) -> std::io::Result<Self::Io> {
        let (s, _) = self.accept().await?;
        let _ = s.set_nodelay(true);
        Ok(s)
    }
}

/// Serves `listener` with `app` until `stop` turns true.
pub async fn serve<L: Listener>(listener: L, app: Router, limits: Limits, mut stop: watch::Receiver<bool>) {
    let slots = Arc::new(Semaphore::new(limits.max_conns));
    loop {
        let permit = tokio::select! {
            p = Arc::clone(&slots).acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            _ = stop.wait_for(|s| *s) => return,
        };
        let io = tokio::select! {
            io = listener.next() => io,
            _ = stop.wait_for(|s| *s) => return,
        };
        match io {
            Ok(io) => {
                let app = app.clone();
                tokio::spawn(async move {
                    connection(io, app, limits.idle).await;
                    drop(permit);
                });
            }
            Err(e) => {
                // out of descriptors, most likely: wait a moment rather than spin
                tracing::warn!(error = %e, "admin API accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// When the connection last finished a request, and how many it has in progress.
struct Activity {
    start: Instant,
    in_flight: AtomicUsize,
    last_ms: AtomicU64,
}

impl Activity {
    fn touch(&self) {
        self.last_ms.store(self.start.elapsed().as_millis() as u64, Relaxed);
    }

    fn idle_for(&self) -> Option<Duration> {
        if self.in_flight.load(Relaxed) > 0 {
            return None;
        }
        let since = self.start.elapsed().as_millis() as u64 - self.last_ms.load(Relaxed);
        Some(Duration::from_millis(since))
    }
}

async fn track(State(a): State<Arc<Activity>>, req: Request, next: Next) -> Response {
    a.in_flight.fetch_add(1, Relaxed);
    let r = next.run(req).await;
    a.in_flight.fetch_sub(1, Relaxed);
    a.touch();
    r
}

async fn connection<I: AsyncRead + AsyncWrite + Unpin + Send + 'static>(io: I, app: Router, idle: Duration) {
    let activity =
        Arc::new(Activity { start: Instant::now(), in_flight: AtomicUsize::new(0), last_ms: AtomicU64::new(0) });
    let app = app.layer(middleware::from_fn_with_state(Arc::clone(&activity), track));
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(idle)
        .serve_connection(TokioIo::new(io), TowerToHyperService::new(app));
    tokio::pin!(conn);
    let tick = (idle / 4).max(Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = conn.as_mut() => return,
            _ = tokio::time::sleep(tick) => {
                if activity.idle_for().is_some_and(|d| d >= idle) {
                    return; // dropped: the descriptor is closed
                }
            }
        }
    }
}
