//! `vigil-sim`: simulated guests for vigild (the simulator is `sim.rs` beside this file).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use clap::Parser;
use vigil_core::Duration;
mod sim;

use sim::{run, Behaviour, SimConfig};

/// Simulates N guests, each an Agent behind a QEMU-like UNIX socket `DIR/cgcs.heartbeat.<id>.sock`.
/// Failing guests have their failure in their id (`sim-hang-00003`).
#[derive(Parser, Debug)]
#[command(name = "vigil-sim", version)]
struct Cli {
    /// Directory for the sockets.
    #[arg(long, default_value = "/tmp/vigil-sim")]
    dir: PathBuf,
    /// Number of guests.
    #[arg(long, default_value_t = 1000)]
    guests: usize,
    /// Requested heartbeat interval.
    #[arg(long, default_value_t = 1000)]
    interval_ms: u32,
    /// Guests that stop answering.
    #[arg(long, default_value_t = 0)]
    hang: usize,
    /// Guests that turn unhealthy.
    #[arg(long, default_value_t = 0)]
    unhealthy: usize,
    /// Guests that answer too late.
    #[arg(long, default_value_t = 0)]
    late: usize,
    /// Guests that add a garbage line every interval.
    #[arg(long, default_value_t = 0)]
    garbage: usize,
    /// Guests that flood garbage at full speed.
    #[arg(long, default_value_t = 0)]
    flood: usize,
    /// Guests that send one endless line.
    #[arg(long, default_value_t = 0)]
    endless: usize,
    /// Guests that send valid but unsolicited messages at full speed.
    #[arg(long, default_value_t = 0)]
    spam: usize,
    /// Guests whose socket disappears and comes back.
    #[arg(long, default_value_t = 0)]
    flap: usize,
    /// Guests that deregister gracefully.
    #[arg(long, default_value_t = 0)]
    exit: usize,
    /// Failures start after this many seconds.
    #[arg(long, default_value_t = 5)]
    fail_after_secs: u64,
    /// Flapping guests stay away this many seconds.
    #[arg(long, default_value_t = 5)]
    flap_down_secs: u64,
    /// Stop after this many seconds (default: run until killed).
    #[arg(long)]
    duration_secs: Option<u64>,
    /// Healthy guests send every message this many ms after their agent wrote it (slow, still in time).
    #[arg(long, default_value_t = 0)]
    answer_delay_ms: u64,
    /// Id prefix.
    #[arg(long, default_value = "sim")]
    prefix: String,
}

fn main() -> ExitCode {
    let c = Cli::parse();
    let _ = vigil_host::sys::raise_fd_limit();
    let cfg = SimConfig {
        dir: c.dir,
        guests: c.guests,
        interval_ms: c.interval_ms,
        failures: vec![
            (Behaviour::Hang, c.hang),
            (Behaviour::Unhealthy, c.unhealthy),
            (Behaviour::Late, c.late),
            (Behaviour::Garbage, c.garbage),
            (Behaviour::Flood, c.flood),
            (Behaviour::Endless, c.endless),
            (Behaviour::Spam, c.spam),
            (Behaviour::Flap, c.flap),
            (Behaviour::Exit, c.exit),
        ],
        fail_after: Duration::from_secs(c.fail_after_secs),
        flap_down: Duration::from_secs(c.flap_down_secs),
        duration: c.duration_secs.map(Duration::from_secs),
        prefix: c.prefix,
        answer_delay: Duration::from_millis(c.answer_delay_ms),
    };
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        let _ = signal_hook::flag::register(sig, Arc::clone(&stop));
    }
    match run(&cfg, &stop) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vigil-sim: {e}");
            ExitCode::FAILURE
        }
    }
}
