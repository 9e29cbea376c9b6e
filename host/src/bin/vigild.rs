//! `vigild`: the Vigil host daemon. `vigild run` watches guest heartbeat sockets; `vigild status` asks a running
//! daemon (through its status file) what it sees.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use vigil_core::Duration;
use vigil_host::daemon::{Daemon, DaemonConfig};
use vigil_host::events::EventsTarget;
use vigil_host::status::Snapshot;

/// Vigil host daemon: sends heartbeat challenges to every VM over its virtio-serial socket and reports faults.
#[derive(Parser, Debug)]
#[command(name = "vigild", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the daemon (stops on SIGTERM/SIGINT, reloads the config on SIGHUP).
    Run {
        /// Directory to watch for guest sockets (repeatable).
        #[arg(long = "watch", value_name = "DIR", default_value = "/var/lib/libvirt/qemu")]
        watch: Vec<PathBuf>,
        /// Socket file-name pattern; the guest id is what `*` matches [default: the config file's, else
        /// cgcs.heartbeat.*.sock].
        #[arg(long, value_name = "GLOB")]
        pattern: Option<String>,
        /// TOML configuration (per-guest sockets, intervals, loss thresholds, action policy).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Where fault/status events go, one JSON object per line (`-` = stdout).
        #[arg(long, value_name = "PATH", default_value = "-")]
        events: String,
        /// Status snapshot file (read by `vigild status`).
        #[arg(long, value_name = "FILE", default_value = "/run/vigild/status.json")]
        status_file: PathBuf,
        /// Safety-net rescan period in seconds (inotify does the real work).
        #[arg(long, value_name = "SECS", default_value_t = 30)]
        rescan_secs: u64,
        /// First reconnect delay in milliseconds (doubles per failure, with +-20 % jitter).
        #[arg(long, value_name = "MS", default_value_t = 1000)]
        backoff_min_ms: u64,
        /// Largest reconnect delay in milliseconds.
        #[arg(long, value_name = "MS", default_value_t = 60_000)]
        backoff_max_ms: u64,
        /// Log filter (tracing env-filter syntax), e.g. `info`, `vigil_host=debug`.
        #[arg(long, value_name = "FILTER", default_value = "info")]
        log: String,
    },
    /// Show what a running daemon sees.
    Status {
        /// Status snapshot file of the daemon.
        #[arg(long, value_name = "FILE", default_value = "/run/vigild/status.json")]
        status_file: PathBuf,
        /// Print the raw JSON snapshot.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run {
            watch,
            pattern,
            config,
            events,
            status_file,
            rescan_secs,
            backoff_min_ms,
            backoff_max_ms,
            log,
        } => {
            // logs go through a bounded, lossy queue to their own thread: a stalled journald or pipe can delay
            // only that thread, never the data plane
            let (writer, _log_guard) = tracing_appender::non_blocking(std::io::stderr());
            tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::try_new(&log).unwrap_or_else(|_| "info".into()))
                .with_writer(writer)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .init();
            let hostname = rustix::system::uname().nodename().to_string_lossy().into_owned();
            let cfg = DaemonConfig {
                watch,
                pattern,
                config_file: config,
                events: if events == "-" { EventsTarget::Stdout } else { EventsTarget::File(events.into()) },
                status_file: Some(status_file),
                rescan: Duration::from_secs(rescan_secs.max(1)),
                hostname,
                backoff_min: Duration::from_millis(backoff_min_ms.max(1)),
                backoff_max: Duration::from_millis(backoff_max_ms.max(backoff_min_ms).max(1)),
            };
            // a bad file or pattern is refused before anything starts
            let file = match cfg.config_file.as_ref().map(|p| vigil_host::config::FileConfig::load(p)).transpose() {
                Ok(f) => f.unwrap_or_default(),
                Err(e) => {
                    eprintln!("vigild: {e}");
                    return ExitCode::from(2);
                }
            };
            if let Err(e) = cfg.discovery(&file) {
                eprintln!("vigild: {e}");
                return ExitCode::from(2);
            }
            match Daemon::new(cfg).and_then(Daemon::run) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("vigild: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Status { status_file, json } => match Snapshot::load(&status_file) {
            Ok(snap) if json => {
                println!("{}", serde_json::to_string_pretty(&snap).unwrap_or_default());
                ExitCode::SUCCESS
            }
            Ok(snap) => {
                print!("{}", snap.render());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("vigild status: {e}");
                ExitCode::FAILURE
            }
        },
    }
}
