//! `vigil-guest`: the Vigil guest agent for Linux VMs. Answers the host's heartbeat challenges over the
//! virtio-serial port with the health of the VM's applications.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use vigil_guest::linux::{run, GuestConfig};

/// Vigil guest agent: answers heartbeat challenges on /dev/virtio-ports/cgcs.heartbeat with the health of the
/// VM's applications (health-check command, local application API), votes on host actions, and sends `exit` on
/// SIGTERM.
#[derive(Parser, Debug)]
#[command(name = "vigil-guest", version)]
struct Cli {
    /// Write the manual page (vigil-guest.1) into this directory and exit (built with the `man` feature).
    #[cfg(feature = "man")]
    #[arg(long, value_name = "DIR", hide = true)]
    write_man: Option<PathBuf>,
    /// TOML file with the same keys as these flags (flags win).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Heartbeat port: a virtio-serial device, or a UNIX socket to connect to. Default: the udev link
    /// /dev/virtio-ports/cgcs.heartbeat, else the /dev/vportNpM named cgcs.heartbeat in sysfs.
    #[arg(long, value_name = "PATH")]
    port: Option<PathBuf>,
    /// Name declared to the host (default: host name).
    #[arg(long)]
    name: Option<String>,
    /// Requested heartbeat interval.
    #[arg(long, value_name = "MS")]
    interval_ms: Option<u32>,
    /// Action requested on heartbeat loss: none, log, reboot, stop.
    #[arg(long, value_name = "ACTION")]
    corrective_action: Option<String>,
    /// Health-check command (exit 0 healthy, 1 unhealthy; other codes are no verdict, as the reference; first
    /// output line is the reason).
    #[arg(long, value_name = "PATH")]
    health_cmd: Option<String>,
    /// Seconds between health checks.
    #[arg(long, value_name = "SECS")]
    health_interval_secs: Option<u64>,
    /// Seconds a health check may run.
    #[arg(long, value_name = "SECS")]
    health_timeout_secs: Option<u64>,
    /// Action requested when the health check fails.
    #[arg(long, value_name = "ACTION")]
    health_action: Option<String>,
    /// Notification command for votes and notices, run as `CMD revocable|irrevocable EVENT` (exit 0 accepts,
    /// 1 rejects, anything else answers unknown; no answer in time: the agent answers timeout).
    #[arg(long, value_name = "PATH")]
    notify_cmd: Option<PathBuf>,
    /// Local application API socket.
    #[arg(long, value_name = "PATH")]
    api_socket: Option<PathBuf>,
    /// The reference guest's binary application API (for applications linked against libguest_heartbeat_api)
    /// [default: /var/run/.guest_heartbeat_api, when no other process serves there].
    #[arg(long, value_name = "PATH")]
    reference_api_socket: Option<PathBuf>,
    /// Do not serve the reference binary application API.
    #[arg(long)]
    no_reference_api: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    #[cfg(feature = "man")]
    if let Some(dir) = &cli.write_man {
        use clap::CommandFactory;
        let mut page = Vec::new();
        let written = clap_mangen::Man::new(Cli::command())
            .render(&mut page)
            .and_then(|()| std::fs::write(dir.join("vigil-guest.1"), page));
        return match written {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("vigil-guest: {}: {e}", dir.display());
                ExitCode::FAILURE
            }
        };
    }
    let mut cfg = match &cli.config {
        Some(p) => match std::fs::read_to_string(p)
            .map_err(|e| e.to_string())
            .and_then(|t| toml::from_str::<GuestConfig>(&t).map_err(|e| e.to_string()))
        {
            Ok(c) => c,
            Err(e) => {
                eprintln!("vigil-guest: {}: {e}", p.display());
                return ExitCode::from(2);
            }
        },
        None => GuestConfig::default(),
    };
    if cli.port.is_some() {
        cfg.port = cli.port;
    }
    if cli.name.is_some() {
        cfg.name = cli.name;
    }
    if let Some(v) = cli.interval_ms {
        cfg.interval_ms = v;
    }
    if let Some(v) = cli.corrective_action {
        cfg.corrective_action = v;
    }
    if let Some(v) = cli.health_cmd {
        cfg.health_cmd = Some(vec![v]);
    }
    if let Some(v) = cli.health_interval_secs {
        cfg.health_interval_secs = v;
    }
    if let Some(v) = cli.health_timeout_secs {
        cfg.health_timeout_secs = v;
    }
    if let Some(v) = cli.health_action {
        cfg.health_action = v;
    }
    if cli.notify_cmd.is_some() {
        cfg.notify_cmd = cli.notify_cmd;
    }
    if let Some(v) = cli.api_socket {
        cfg.api_socket = v;
    }
    if let Some(v) = cli.reference_api_socket {
        cfg.reference_api_socket = Some(v);
    }
    if cli.no_reference_api {
        cfg.reference_api_socket = None;
    }
    match run(cfg) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vigil-guest: {e}");
            ExitCode::FAILURE
        }
    }
}
