//! Upstream: the durable [`spool`] and the sinks, the systems that repair VMs, fed from the spool. Each sink runs as its own task on the control
//! thread with its own cursor, its own retry (exponential backoff with jitter, 1 s doubling to 60 s) and a timeout
//! on every request, so a dead receiver delays nobody else. Credentials come from files and are never logged.
//!
//! | kind | what it sends |
//! |---|---|
//! | `alertmanager` ([`alertmanager`]) | Alertmanager v2 alerts, firing and resolved, re-sent as Prometheus does |
//! | `masakari` ([`masakari`]) | OpenStack Masakari VM notifications (Keystone v3 password auth) |
//! | `starlingx-vim` ([`vim`]) | what the StarlingX guest-heartbeat host agent sent to the VIM |
//! | `webhook` ([`webhook`]) | CloudEvents 1.0, structured JSON |
//!
//! Files: [`spool`] (the durable queue), [`sink_config`] (the `[[sink]]` tables), [`delivery`] (the delivery loop, retry or drop), one
//! file per sink.

pub mod alertmanager;
pub mod delivery;
pub mod keystone;
pub mod masakari;
pub mod secret;
pub mod sink_config;
pub mod spool;
pub mod vim;
pub mod webhook;

pub use delivery::*;
pub use sink_config::SinkConfig;
