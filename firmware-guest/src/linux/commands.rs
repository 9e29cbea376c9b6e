//! The two external commands of the Linux agent, each run on its own thread so the heartbeat answer never waits
//! for them: the periodic health check, and the event notification command that votes.

use std::prelude::rust_2021::*;

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::{Duration, Instant};

use vigil_core::{Health, NotificationType, VoteResult};

/// How a command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Exit code, if it exited by itself in time.
    pub code: Option<i32>,
    /// First line of its standard output.
    pub first_line: String,
    /// Why it has no code (spawn failure, signal, timeout).
    pub error: Option<String>,
}

/// Runs `argv` with a timeout; captures the first line of stdout (at most 4 KiB read).
pub fn run(argv: &[String], timeout: Duration) -> Outcome {
    let mut out = Outcome { code: None, first_line: String::new(), error: None };
    let Some((prog, args)) = argv.split_first() else {
        out.error = Some("empty command".into());
        return out;
    };
    let child = Command::new(prog).args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::null()).spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            out.error = Some(format!("cannot run {prog}: {e}"));
            return out;
        }
    };
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break Some(st),
            Ok(None) if start.elapsed() >= timeout => {
                let _ = child.kill();
                let _ = child.wait();
                out.error = Some(format!("timed out after {} ms", timeout.as_millis()));
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => {
                out.error = Some(format!("wait: {e}"));
                break None;
            }
        }
    };
    if let Some(stdout) = child.stdout.as_mut() {
        let mut buf = Vec::new();
        let _ = stdout.take(4096).read_to_end(&mut buf);
        out.first_line = String::from_utf8_lossy(&buf).lines().next().unwrap_or("").trim().to_string();
    }
    if let Some(st) = status {
        out.code = st.code();
        if st.code().is_none() {
            out.error = Some(format!("{st}"));
        }
    }
    out
}

/// The health check's verdict, as the reference guest reads it: exit 0 healthy, exit 1 unhealthy (the reason is
/// the first line of output); any other exit code is no verdict of unhealthiness (the reference acts only on 1),
/// so the guest stays healthy and the code is noted in `log_msg`. A check that does not finish in time, or that
/// is killed by a signal or cannot run, is unhealthy: a check that hangs is itself a symptom.
pub fn health_verdict(o: &Outcome) -> (Health, String) {
    match (o.code, &o.error) {
        (Some(0), _) => (Health::Healthy, o.first_line.clone()),
        (Some(1), _) => (
            Health::Unhealthy,
            if o.first_line.is_empty() { "health check failed".into() } else { o.first_line.clone() },
        ),
        (Some(c), _) => (
            Health::Healthy,
            format!("health check exited {c}: {}", o.first_line).trim_end_matches([' ', ':']).to_string(),
        ),
        (None, Some(e)) => (Health::Unhealthy, format!("health check {e}")),
        (None, None) => (Health::Unhealthy, "health check ended abnormally".into()),
    }
}

/// The notification command's vote, as the reference guest reads it: exit 0 accepts (a notice: complete), exit 1
/// rejects, any other exit code answers `unknown`; the reason is the first line of output. `None` when it gave
/// no answer in time (or could not run): the agent then answers `timeout` before the host's deadline.
pub fn vote_verdict(o: &Outcome, kind: NotificationType) -> Option<(VoteResult, String)> {
    match o.code {
        Some(0) => Some((
            if kind == NotificationType::Revocable { VoteResult::Accept } else { VoteResult::Complete },
            o.first_line.clone(),
        )),
        Some(1) => Some((VoteResult::Reject, o.first_line.clone())),
        Some(_) => Some((VoteResult::Unknown, o.first_line.clone())),
        None => None,
    }
}

/// Messages from the command threads to the loop.
#[derive(Debug)]
pub enum Report {
    /// A health check finished.
    Health(Health, String),
    /// The notification command voted (or not).
    Vote(u64, Option<(VoteResult, String)>),
}

/// Runs the health check every `every` until the channel closes.
pub fn spawn_health_checks(
    argv: Vec<String>,
    every: Duration,
    timeout: Duration,
    tx: Sender<Report>,
    wake: Arc<dyn Fn() + Send + Sync>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new().name("health-check".into()).spawn(move || loop {
        let (h, msg) = health_verdict(&run(&argv, timeout));
        if tx.send(Report::Health(h, msg)).is_err() {
            return;
        }
        wake();
        std::thread::sleep(every);
    })
}

/// Runs the notification command once for vote `id`.
pub fn spawn_vote(
    argv: Vec<String>,
    id: u64,
    kind: NotificationType,
    event: &str,
    timeout: Duration,
    tx: Sender<Report>,
    wake: Arc<dyn Fn() + Send + Sync>,
) {
    let mut argv = argv;
    argv.push(kind.as_str().into());
    argv.push(event.into());
    let _ = std::thread::Builder::new().name("notify".into()).spawn(move || {
        let v = vote_verdict(&run(&argv, timeout), kind);
        let _ = tx.send(Report::Vote(id, v));
        wake();
    });
}

/// Where the commands are, if configured.
#[derive(Debug, Clone, Default)]
pub struct CommandConfig {
    /// Health check argv.
    pub health: Option<Vec<String>>,
    /// Notification command path.
    pub notify: Option<PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Vec<String> {
        vec!["sh".into(), "-c".into(), script.into()]
    }

    #[test]
    fn health_exit_codes_and_timeouts() {
        let t = Duration::from_secs(5);
        assert_eq!(health_verdict(&run(&sh("echo all good; exit 0"), t)), (Health::Healthy, "all good".into()));
        assert_eq!(health_verdict(&run(&sh("echo db down; exit 1"), t)), (Health::Unhealthy, "db down".into()));
        assert_eq!(health_verdict(&run(&sh("exit 1"), t)), (Health::Unhealthy, "health check failed".into()));
        assert_eq!(
            health_verdict(&run(&sh("echo weird; exit 7"), t)),
            (Health::Healthy, "health check exited 7: weird".into()),
            "only exit 1 is unhealthy, as the reference"
        );
        let (h, msg) = health_verdict(&run(&sh("sleep 5"), Duration::from_millis(200)));
        assert_eq!(h, Health::Unhealthy);
        assert!(msg.contains("timed out"), "{msg}");
        let (h, msg) = health_verdict(&run(&["/nonexistent/check".into()], t));
        assert_eq!(h, Health::Unhealthy);
        assert!(msg.contains("cannot run"), "{msg}");
    }

    #[test]
    fn votes_from_exit_codes() {
        let t = Duration::from_secs(5);
        assert_eq!(
            vote_verdict(&run(&sh("echo standby not synced; exit 1"), t), NotificationType::Revocable),
            Some((VoteResult::Reject, "standby not synced".into()))
        );
        assert_eq!(
            vote_verdict(&run(&sh("exit 0"), t), NotificationType::Irrevocable),
            Some((VoteResult::Complete, String::new()))
        );
        assert_eq!(
            vote_verdict(&run(&sh("echo odd; exit 2"), t), NotificationType::Revocable),
            Some((VoteResult::Unknown, "odd".into())),
            "exit codes other than 0 and 1 answer unknown, as the reference"
        );
        assert_eq!(vote_verdict(&run(&sh("sleep 3"), Duration::from_millis(100)), NotificationType::Revocable), None);
    }
}
