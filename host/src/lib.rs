//! `vigil-host`: `vigild`, the compute-node daemon that watches every VM's heartbeat socket, and `vigil-sim`, a
//! simulator of many guests for tests and demos.
//!
//! - [`daemon`]: the mio data plane (discovery, connections, one `Monitor` per guest, timers, events, actions);
//! - [`wheel`]: the hashed timing wheel behind the loop's timeout;
//! - [`events`], [`actions`], [`status`], [`sdnotify`]: the threads and files around the loop;
//! - [`config`], [`glob`]: configuration and socket-name patterns;
//! - [`sim`]: the guest simulator.
#![forbid(unsafe_code)]

pub mod actions;
pub mod config;
pub mod daemon;
pub mod events;
pub mod glob;
pub mod sdnotify;
pub mod sim;
pub mod status;
pub mod wheel;
