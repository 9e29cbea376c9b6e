//! What vigild leaves on its own node, each behind a queue or a thread so that the data plane never waits on it:
//!
//! - [`event_log`]: the local JSON-lines event log (bounded queue, rotation, write errors counted);
//! - [`actions`]: corrective commands (argv only, process groups, timeouts, skipped after SIGTERM);
//! - [`ledger_file`]: the corrective actions' budgets, kept across restarts;
//! - [`status`]: the status snapshot (`vigild status`, the optional status file);
//! - [`sdnotify`]: systemd's notification protocol (`READY`, `WATCHDOG`, `STOPPING`).

pub mod actions;
pub mod event_log;
pub mod ledger_file;
pub mod sdnotify;
pub mod status;
