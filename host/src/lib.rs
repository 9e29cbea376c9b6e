//! `vigil-host`: `vigild`, the compute-node daemon that watches every VM's heartbeat socket.
//!
//! The folders follow the path of a heartbeat, guest socket -> data plane -> fleet -> control plane -> upstream,
//! with the node-local outputs beside them:
//!
//! | module | owns | I/O |
//! |---|---|---|
//! | [`data`] | the mio loop ([`data::event_loop`]), guest connections ([`data::conns`]), discovery ([`data::discovery`]) | guest sockets, inotify |
//! | [`fleet`] | every guest and all host policy: Monitors, links and backoff, byte budgets ([`fleet::bucket`]), verdicts, votes, maintenance, lifecycle; its deadlines ([`fleet::wheel`]) | none: unit-tested on virtual time |
//! | [`control`] | the tokio thread: admin API, metrics rendering, lifecycle sources (QMP, libvirt), the spooler | admin sockets, QMP, libvirt |
//! | [`upstream`] | the durable spool ([`upstream::spool`]) and one file per sink (Alertmanager, Masakari, StarlingX VIM, CloudEvents webhook) | disk, network |
//! | [`node`] | the local event log, corrective commands, the status snapshot, systemd notification | files, processes |
//! | [`relay`] | beyond one node: the StarlingX controller-side relay (`vigild relay`) between the VIM and the nodes | HTTP |
//!
//! Shared vocabulary at the top: [`events`] (the typed event records, the schema of `docs/events.md`),
//! [`config`] (the configuration file), [`glob`] (socket-name patterns), [`metrics`] (fixed-bucket histograms),
//! [`backoff`] (retry delays with jitter, used by every layer that retries), [`sys`] (fd limit, entropy).
//!
//! The simulator (`vigil-sim`) is a binary of this package for tests and demos, not part of this library; the data-plane
//! benchmark driver (`vigil-bench`) lives in the `vigil-benches` crate.
#![forbid(unsafe_code)]

pub mod backoff;
pub mod check;
pub mod config;
pub mod control;
pub mod data;
pub mod events;
pub mod fleet;
pub mod glob;
pub mod metrics;
pub mod node;
pub mod queue;
pub mod relay;
pub mod sys;
pub mod upstream;
