//! `vigil-host`: `vigild`, the compute-node daemon that watches every VM's heartbeat socket, and `vigil-sim`, a
//! simulator of many guests for tests and demos.
//!
//! - [`fleet`]: every guest and all host policy, sans-IO (unit-tested on virtual time); [`budget`]: byte budgets;
//! - [`daemon`]: the mio loop that moves bytes between sockets and the fleet; [`discovery`]: inotify + rescans;
//! - [`wheel`]: the hashed timing wheel behind the loop's timeout;
//! - [`events`], [`actions`], [`status`], [`sdnotify`]: the threads and files around the loop;
//! - [`config`], [`glob`]: configuration and socket-name patterns;
//! - [`sim`]: the guest simulator.
#![forbid(unsafe_code)]

pub mod actions;
pub mod budget;
pub mod config;
pub mod conns;
pub mod control;
pub mod daemon;
pub mod discovery;
pub mod event_log;
pub mod events;
pub mod fleet;
pub mod glob;
pub mod metrics;
pub mod sdnotify;
pub mod sim;
pub mod sinks;
pub mod spool;
pub mod status;
pub mod sys;
pub mod wheel;
