//! The data plane: the one mio thread that owns every guest socket and moves bytes between them and the
//! [`Fleet`](crate::fleet::Fleet). It may block on nothing but `poll`.
//!
//! - [`event_loop`]: the loop itself (poll, signals, waker, housekeeping) and its side of the control plane;
//! - [`conns`]: guest sockets with generation tokens, reads within budgets, bounded writes;
//! - [`discovery`]: which guest sockets exist (inotify plus a periodic rescan).

pub mod conns;
pub mod discovery;
pub mod event_loop;

pub use event_loop::{Daemon, DaemonConfig, BACKOFF_MAX, BACKOFF_MIN};
