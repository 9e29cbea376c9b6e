//! `vigild`: the Vigil host daemon. `vigild run` watches guest heartbeat sockets and serves the admin API;
//! `vigild status`, `vigild vote` and `vigild maintenance` talk to a running daemon through that API.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration as StdDuration;

use clap::{Parser, Subcommand};
use serde_json::{json, Value};
use vigil_core::Duration;
use vigil_host::control::client::request;
use vigil_host::control::ControlConfig;
use vigil_host::data::{Daemon, DaemonConfig};
use vigil_host::events::EventsTarget;
use vigil_host::node::status::{GuestStatus, Snapshot};

/// The admin API's default socket.
const ADMIN_SOCKET: &str = "/run/vigild/admin.sock";

/// Vigil host daemon: sends heartbeat challenges to every VM over its virtio-serial socket and reports faults.
#[derive(Parser, Debug)]
#[command(name = "vigild", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
#[allow(clippy::large_enum_variant)] // parsed once at start
enum Command {
    /// Run the daemon (stops on SIGTERM/SIGINT, reloads the config and reopens the events file on SIGHUP).
    Run {
        /// Directory to watch for guest sockets (repeatable).
        #[arg(long = "watch", value_name = "DIR", default_value = "/var/lib/libvirt/qemu")]
        watch: Vec<PathBuf>,
        /// Socket file-name pattern; the guest id is what `*` matches [default: the config file's, else
        /// cgcs.heartbeat.*.sock].
        #[arg(long, value_name = "GLOB")]
        pattern: Option<String>,
        /// TOML configuration (per-guest sockets, intervals, loss thresholds, budgets, action policy).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Where fault/status events go, one JSON object per line (`-` = stdout).
        #[arg(long, value_name = "PATH", default_value = "-")]
        events: String,
        /// The admin API's UNIX socket (mode 0660).
        #[arg(long, value_name = "PATH", default_value = ADMIN_SOCKET)]
        admin_socket: PathBuf,
        /// Group allowed to use the admin socket [default: root's].
        #[arg(long, value_name = "GROUP")]
        admin_group: Option<String>,
        /// Also serve the admin API on this loopback TCP address (needs --admin-token-file).
        #[arg(long, value_name = "ADDR")]
        admin_tcp: Option<std::net::SocketAddr>,
        /// File holding the bearer token for --admin-tcp.
        #[arg(long, value_name = "FILE")]
        admin_token_file: Option<PathBuf>,
        /// Allow --admin-tcp on a non-loopback address (the management network, so that `vigild relay` on the
        /// controller can reach this node); the token is still required.
        #[arg(long)]
        admin_tcp_remote: bool,
        /// Where the durable spool of upstream events lives [default: the config file's, else /var/lib/vigil].
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
        /// Send faults to this Alertmanager (v2 API base URL; repeatable).
        #[arg(long, value_name = "URL")]
        alertmanager: Vec<String>,
        /// Send every event to this URL as CloudEvents (repeatable).
        #[arg(long, value_name = "URL")]
        webhook: Vec<String>,
        /// Send losses to this Masakari API (no Keystone; configure auth in the file; repeatable).
        #[arg(long, value_name = "URL")]
        masakari: Vec<String>,
        /// Report to this StarlingX VIM (repeatable).
        #[arg(long, value_name = "URL")]
        starlingx_vim: Vec<String>,
        /// Subscribe to this libvirt's domain lifecycle events (e.g. qemu:///system): paused, rebooted and
        /// stopped VMs are then never declared lost.
        #[arg(long, value_name = "URI")]
        libvirt: Option<String>,
        /// Plug the heartbeat channel into running libvirt domains whose name matches (`*`, `?`; repeatable;
        /// needs --libvirt): at vigild's start, and on each domain's start and resume. The config file's
        /// `[hotplug]` adds selection by Nova flavor, flavor extra spec and metadata (docs/hotplug.md).
        #[arg(long, value_name = "GLOB")]
        enable_domains: Vec<String>,
        /// QMP sockets in the watched directories to read lifecycle events from, for plain QEMU; the guest id is
        /// what `*` matches (e.g. 'qmp.*.sock').
        #[arg(long, value_name = "GLOB")]
        qmp_pattern: Option<String>,
        /// QEMU guest agent sockets in the watched directories (plain QEMU's `-chardev socket,server=on` for the
        /// port `org.qemu.guest_agent.0`), for guests without Vigil's agent; the guest id is what `*` matches
        /// (e.g. 'qga.*.sock'). Probed at [qga] interval_ms (default 5 s). Not for libvirt domains: use [qga].
        #[arg(long, value_name = "GLOB")]
        qga_pattern: Option<String>,
        /// Also write a status snapshot to this file every 2 s (a read-only view that survives the daemon).
        #[arg(long, value_name = "FILE")]
        status_file: Option<PathBuf>,
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
        /// Also serve, read-only and without a token, the status page (`/`), `/metrics` and `/healthz` on this TCP
        /// address (e.g. 127.0.0.1:9870, or :9870 for a scraper on the network: it shows guest ids and faults).
        #[arg(long, value_name = "ADDR")]
        web_listen_address: Option<std::net::SocketAddr>,
    },
    /// Write the manual pages (vigild.1 and one per subcommand) into DIR (for packaging).
    #[command(hide = true)]
    GenMan {
        /// Where.
        dir: PathBuf,
    },
    /// Check a configuration file: every problem with its file, line and option, what is wrong and what would
    /// be right; exit status 0 when vigild would start with it, 2 when not.
    CheckConfig {
        /// The file (`vigild run --config FILE`).
        file: PathBuf,
    },
    /// Show what a running daemon sees.
    Status {
        /// The daemon's admin socket.
        #[arg(long, value_name = "PATH", default_value = ADMIN_SOCKET)]
        admin_socket: PathBuf,
        /// Read a status file instead (`vigild run --status-file`), e.g. when the daemon is down.
        #[arg(long, value_name = "FILE")]
        status_file: Option<PathBuf>,
        /// Print the raw JSON.
        #[arg(long)]
        json: bool,
    },
    /// Ask a guest through the daemon before an event (a vote), or tell it (a notice); prints its answer.
    Vote {
        /// Guest id.
        guest: String,
        /// stop, reboot, suspend, pause, unpause, resume, resize_begin, ..., cold_migrate_end.
        event: String,
        /// revocable (a vote) or irrevocable (a notice) [default: a vote for events that can be refused].
        #[arg(long, value_name = "KIND")]
        notification_type: Option<String>,
        /// The daemon's admin socket.
        #[arg(long, value_name = "PATH", default_value = ADMIN_SOCKET)]
        admin_socket: PathBuf,
    },
    /// Open a maintenance window for a guest (its faults are not reported while it is open), or end it.
    Maintenance {
        /// Guest id.
        guest: String,
        /// Length in seconds (omit with --end).
        secs: Option<u64>,
        /// Why (logged).
        #[arg(long, default_value = "")]
        reason: String,
        /// End the open window now.
        #[arg(long)]
        end: bool,
        /// The daemon's admin socket.
        #[arg(long, value_name = "PATH", default_value = ADMIN_SOCKET)]
        admin_socket: PathBuf,
    },
    /// Run the StarlingX controller-side relay: serves the VIM's guest-agent calls and routes them to the compute
    /// nodes' vigild; passes the nodes' reports to the VIM (docs/starlingx.md).
    Relay {
        /// The relay's TOML configuration (listen address, VIM URL, tokens, nodes).
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Log filter (RUST_LOG syntax).
        #[arg(long, default_value = "info")]
        log: String,
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
            admin_socket,
            admin_group,
            admin_tcp,
            admin_token_file,
            admin_tcp_remote,
            state_dir,
            alertmanager,
            webhook,
            masakari,
            starlingx_vim,
            libvirt,
            enable_domains,
            qmp_pattern,
            qga_pattern,
            status_file,
            rescan_secs,
            backoff_min_ms,
            backoff_max_ms,
            log,
            web_listen_address,
        } => {
            // logs go through a bounded, lossy queue to their own thread: a stalled journald or pipe can delay
            // only that thread, never the data plane
            // (8,192 lines: the default 128,000 takes 4 MiB up front, more than 10,000 guests' own state)
            let (writer, _log_guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
                .buffered_lines_limit(8192)
                .lossy(true)
                .finish(std::io::stderr());
            tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::try_new(&log).unwrap_or_else(|_| "info".into()))
                .with_writer(writer)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .init();
            // a bad file or pattern is refused before anything starts
            let file = match config.as_ref().map(|p| vigil_host::config::FileConfig::load(p)).transpose() {
                Ok(f) => f.unwrap_or_default(),
                Err(e) => {
                    eprintln!("vigild: {e}");
                    return ExitCode::from(2);
                }
            };
            let hostname = file
                .hostname
                .clone()
                .unwrap_or_else(|| rustix::system::uname().nodename().to_string_lossy().into_owned());
            let mut sinks = file.sinks.clone();
            for (kind, urls) in [
                ("alertmanager", &alertmanager),
                ("webhook", &webhook),
                ("masakari", &masakari),
                ("starlingx-vim", &starlingx_vim),
            ] {
                for u in urls.iter() {
                    match vigil_host::upstream::SinkConfig::from_flag(kind, u) {
                        Ok(s) => sinks.push(s),
                        Err(e) => {
                            eprintln!("vigild: {e}");
                            return ExitCode::from(2);
                        }
                    }
                }
            }
            for s in &sinks {
                if let Err(e) = s.validate() {
                    eprintln!("vigild: {e}");
                    return ExitCode::from(2);
                }
            }
            let upstream = vigil_host::control::Upstream {
                state_dir: state_dir.or(file.state_dir.clone()).unwrap_or_else(|| "/var/lib/vigil".into()),
                cap: file.spool_cap.unwrap_or(vigil_host::upstream::spool::DEFAULT_CAP),
                max_record_age: file
                    .max_record_age_secs
                    .map_or(vigil_host::upstream::MAX_RECORD_AGE, |s| StdDuration::from_secs(s.max(1))),
                sinks,
                ctx: vigil_host::upstream::Context {
                    host: hostname.clone(),
                    instance_uuids: file.instance_uuids.clone(),
                },
            };
            let mut cfg = DaemonConfig {
                watch,
                pattern,
                config_file: config,
                events: if events == "-" { EventsTarget::Stdout } else { EventsTarget::File(events.into()) },
                status_file,
                rescan: Duration::from_secs(rescan_secs.max(1)),
                hostname,
                backoff_min: Duration::from_millis(backoff_min_ms.max(1)),
                backoff_max: Duration::from_millis(backoff_max_ms.max(backoff_min_ms).max(1)),
                control: ControlConfig {
                    admin_socket: Some(admin_socket),
                    admin_group,
                    admin_tcp,
                    admin_token_file,
                    admin_tcp_remote,
                    upstream: Some(upstream),
                    web_listen: web_listen_address,
                    recovery: None,
                    qga: None,
                    qga_direct: None,
                    lifecycle: vigil_host::control::lifecycle::LifecycleConfig {
                        qmp_pattern,
                        dirs: Vec::new(),
                        libvirt,
                        hotplug: None,
                    },
                },
            };
            match cfg.discovery(&file) {
                Ok((dirs, _)) => cfg.control.lifecycle.dirs = dirs,
                Err(e) => {
                    eprintln!("vigild: {e}");
                    return ExitCode::from(2);
                }
            }
            match hotplug_config(file.hotplug.as_ref(), &enable_domains, &cfg.control.lifecycle.dirs) {
                Ok(None) => {}
                Ok(Some(_)) if cfg.control.lifecycle.libvirt.is_none() => {
                    eprintln!("vigild: hot-plug (--enable-domains, [hotplug]) needs --libvirt URI");
                    return ExitCode::from(2);
                }
                Ok(h) => cfg.control.lifecycle.hotplug = h,
                Err(e) => {
                    eprintln!("vigild: {e}");
                    return ExitCode::from(2);
                }
            }
            let libvirt_policy = std::iter::once(&file.defaults)
                .chain(file.guests.iter().map(|g| &g.settings))
                .any(|s| s.policy == Some(vigil_host::config::ActionPolicy::Libvirt));
            match (&cfg.control.lifecycle.libvirt, &cfg.control.upstream) {
                (Some(uri), Some(up)) => {
                    let mut r = vigil_host::control::recovery::RecoveryConfig::new(uri, &up.state_dir);
                    r.instance_uuids = file.instance_uuids.clone();
                    cfg.control.recovery = Some(r);
                }
                _ if libvirt_policy => {
                    eprintln!("vigild: policy = \"libvirt\" needs --libvirt URI");
                    return ExitCode::from(2);
                }
                _ => {}
            }
            if let Some(q) =
                file.qga.as_ref().filter(|_| cfg.control.lifecycle.libvirt.is_some() || qga_pattern.is_none())
            {
                let Some(uri) = &cfg.control.lifecycle.libvirt else {
                    eprintln!("vigild: [qga] needs --libvirt URI (or --qga-pattern for plain QEMU's agent sockets)");
                    return ExitCode::from(2);
                };
                cfg.control.qga = Some(vigil_host::control::agentless::QgaRunConfig {
                    libvirt: uri.clone(),
                    interval: StdDuration::from_millis(q.interval_ms.unwrap_or(5000)),
                    timeout: StdDuration::from_millis(
                        q.timeout_ms
                            .unwrap_or_else(|| vigil_host::config::default_qga_timeout(q.interval_ms.unwrap_or(5000))),
                    ),
                    loss_threshold: q.loss_threshold.unwrap_or(1),
                    rescan: StdDuration::from_secs(q.rescan_secs.unwrap_or(10).max(1)),
                    health: q.health.as_ref().map(|h| vigil_host::control::agentless::HealthRun {
                        command: h.command.clone(),
                        interval: StdDuration::from_secs(h.interval_secs.unwrap_or(10)),
                        timeout: StdDuration::from_secs(h.timeout_secs.unwrap_or(5)),
                        failure_threshold: h.failure_threshold.unwrap_or(3),
                    }),
                });
            }
            if let Some(p) = &cfg.control.lifecycle.qmp_pattern {
                if let Err(e) = vigil_host::glob::Pattern::new(p) {
                    eprintln!("vigild: --qmp-pattern: {e}");
                    return ExitCode::from(2);
                }
            }
            if let Some(p) = qga_pattern {
                if let Err(e) = vigil_host::glob::Pattern::new(&p) {
                    eprintln!("vigild: --qga-pattern: {e}");
                    return ExitCode::from(2);
                }
                let q = file.qga.clone().unwrap_or_default();
                cfg.control.qga_direct = Some(vigil_host::control::qga_direct::QgaDirectConfig {
                    pattern: p,
                    dirs: cfg.control.lifecycle.dirs.clone(),
                    interval: StdDuration::from_millis(q.interval_ms.unwrap_or(5000)),
                    loss_threshold: q.loss_threshold.unwrap_or(1),
                });
            }
            match Daemon::new(cfg).and_then(Daemon::run) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("vigild: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::GenMan { dir } => match gen_man(&dir) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("vigild: {}: {e}", dir.display());
                ExitCode::FAILURE
            }
        },
        Command::CheckConfig { file } => {
            let findings = vigil_host::check::check_file(&file);
            for f in &findings {
                eprintln!("{}", f.render(&file));
            }
            if findings.is_empty() {
                println!("{}: OK", file.display());
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            }
        }
        Command::Status { admin_socket, status_file, json } => status(&admin_socket, status_file, json),
        Command::Relay { config, log } => {
            let _ = tracing_subscriber::fmt().with_env_filter(log).with_writer(std::io::stderr).try_init();
            let cfg = match vigil_host::relay::RelayConfig::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("vigild: {e}");
                    return ExitCode::from(2);
                }
            };
            match vigil_host::relay::run(cfg) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("vigild relay: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Vote { guest, event, notification_type, admin_socket } => {
            let mut body = json!({ "event_type": event });
            if let Some(k) = notification_type {
                body["notification_type"] = json!(k);
            }
            // the guest's registration bounds the wait (vote_secs and the notice times, a few seconds each)
            let r = request(
                &admin_socket,
                "POST",
                &format!("/v1/guests/{guest}/vote"),
                Some(&body.to_string()),
                StdDuration::from_secs(3600),
            );
            print_answer(r)
        }
        Command::Maintenance { guest, secs, reason, end, admin_socket } => {
            let r = match (end, secs) {
                (true, _) => request(
                    &admin_socket,
                    "DELETE",
                    &format!("/v1/guests/{guest}/maintenance"),
                    None,
                    StdDuration::from_secs(30),
                ),
                (false, Some(secs)) => request(
                    &admin_socket,
                    "POST",
                    &format!("/v1/guests/{guest}/maintenance"),
                    Some(&json!({ "secs": secs, "reason": reason }).to_string()),
                    StdDuration::from_secs(30),
                ),
                (false, None) => Err("give SECS, or --end".into()),
            };
            print_answer(r)
        }
    }
}

fn print_answer(r: Result<(u16, String), String>) -> ExitCode {
    match r {
        Ok((code, body)) => {
            println!("{}", body.trim_end());
            if (200..300).contains(&code) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("vigild: {e}");
            ExitCode::FAILURE
        }
    }
}

fn status(admin_socket: &std::path::Path, status_file: Option<PathBuf>, raw: bool) -> ExitCode {
    let snap = match status_file {
        Some(f) => Snapshot::load(&f),
        None => {
            request(admin_socket, "GET", "/v1/guests", None, StdDuration::from_secs(30)).and_then(|(code, body)| {
                let v: Value = serde_json::from_str(&body).map_err(|e| format!("bad answer ({code}): {e}"))?;
                let guests: Vec<GuestStatus> =
                    serde_json::from_value(v["guests"].clone()).map_err(|e| format!("bad answer ({code}): {e}"))?;
                Ok(Snapshot {
                    time: vigil_host::events::rfc3339(std::time::SystemTime::now()),
                    pid: 0,
                    host: rustix::system::uname().nodename().to_string_lossy().into_owned(),
                    fd_limit: 0,
                    events_emitted: v["events_emitted"].as_u64().unwrap_or(0),
                    events_dropped: v["events_dropped"].as_u64().unwrap_or(0),
                    guests,
                })
            })
        }
    };
    match snap {
        Ok(snap) if raw => {
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
    }
}

/// The hot-plug policy of `[hotplug]` and `--enable-domains`; `None` when neither asks for it. Sockets go to
/// `socket_dir`, else the first watched directory.
fn hotplug_config(
    file: Option<&vigil_host::config::HotplugSettings>,
    cli: &[String],
    watched: &[PathBuf],
) -> Result<Option<vigil_host::control::hotplug::HotplugConfig>, String> {
    use vigil_host::glob::Pattern;
    if file.is_none() && cli.is_empty() {
        return Ok(None);
    }
    let file = file.cloned().unwrap_or_default();
    let globs = |v: &[String]| v.iter().map(|g| Pattern::new(g)).collect::<Result<Vec<_>, _>>();
    let socket_dir = file
        .socket_dir
        .clone()
        .or_else(|| watched.first().cloned())
        .ok_or("hot-plug: no socket directory ([hotplug] socket_dir, or a watched directory)")?;
    Ok(Some(vigil_host::control::hotplug::HotplugConfig {
        domains: globs(&[file.domains.as_slice(), cli].concat()).map_err(|e| format!("--enable-domains: {e}"))?,
        flavors: globs(&file.flavors).map_err(|e| format!("hotplug.flavors: {e}"))?,
        metadata: file.metadata.unwrap_or(true),
        compute: file.compute.clone(),
        socket_dir,
        detach: file.detach,
    }))
}

/// `vigild.1`, and `vigild-SUBCOMMAND.1` for each visible subcommand, from the clap definitions.
fn gen_man(dir: &std::path::Path) -> std::io::Result<()> {
    use clap::CommandFactory;
    std::fs::create_dir_all(dir)?;
    let cmd = Cli::command();
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd.clone()).render(&mut page)?;
    std::fs::write(dir.join("vigild.1"), page)?;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name: &'static str = Box::leak(format!("vigild-{}", sub.get_name()).into_boxed_str());
        let mut page = Vec::new();
        clap_mangen::Man::new(sub.clone().name(name)).render(&mut page)?;
        std::fs::write(dir.join(format!("{name}.1")), page)?;
    }
    Ok(())
}
