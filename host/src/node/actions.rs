//! Corrective actions: commands run by a small pool of threads, never by the data plane.
//!
//! The loop submits a job (an argv, never a shell string) without waiting; a worker runs it with a timeout and
//! sends the outcome back through a channel and wakes the loop with a `mio::Waker`. A full queue refuses the
//! job at once (reported as an action error), so the loop never blocks here.

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, sync_channel, Receiver, Sender, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use vigil_core::CorrectiveAction;

/// A command to run for a guest.
#[derive(Clone, Debug)]
pub struct ActionJob {
    /// Guest id.
    pub guest: Arc<str>,
    /// What caused it (`heartbeat_lost`, `unhealthy`).
    pub trigger: &'static str,
    /// The corrective action.
    pub action: CorrectiveAction,
    /// What to run.
    pub argv: Vec<String>,
}

/// How a command ended.
#[derive(Clone, Debug)]
pub struct ActionOutcome {
    /// The job.
    pub job: ActionJob,
    /// Exit code, if it exited.
    pub exit_code: Option<i32>,
    /// Why it did not run or finish.
    pub error: Option<String>,
    /// How long it took (`None` if it never started).
    pub elapsed: Option<Duration>,
    /// Why it was not started.
    pub skipped: Option<&'static str>,
}

/// Worker pool.
pub struct ActionRunner {
    tx: Option<SyncSender<ActionJob>>,
    workers: Vec<JoinHandle<()>>,
    stopping: Arc<AtomicBool>,
}

/// How long a command may run before its process group is killed.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// After SIGTERM, how long a running command may go on before its process group is killed.
pub const STOP_GRACE: Duration = Duration::from_secs(2);

impl ActionRunner {
    /// Starts `n` workers; outcomes go to `done`, and `wake` is called after each. Commands run with the soft
    /// file-descriptor limit `fd_soft_limit` (vigild raises its own; children get the usual one back).
    pub fn start(n: usize, done: Sender<ActionOutcome>, wake: Arc<dyn Fn() + Send + Sync>, fd_soft_limit: u64) -> Self {
        let (tx, rx) = sync_channel::<ActionJob>(1024);
        let rx = Arc::new(Mutex::new(rx));
        let stopping = Arc::new(AtomicBool::new(false));
        let workers = (0..n)
            .filter_map(|i| {
                let rx = Arc::clone(&rx);
                let done = done.clone();
                let wake = Arc::clone(&wake);
                let stopping = Arc::clone(&stopping);
                std::thread::Builder::new()
                    .name(format!("vigild-action-{i}"))
                    .spawn(move || {
                        crate::sys::background_thread();
                        worker(&rx, &done, &*wake, &stopping, fd_soft_limit)
                    })
                    .ok()
            })
            .collect();
        ActionRunner { tx: Some(tx), workers, stopping }
    }

    /// Queues a job; gives it back if the queue is full.
    pub fn submit(&self, job: ActionJob) -> Result<(), ActionJob> {
        match &self.tx {
            Some(tx) => tx.try_send(job).map_err(|e| match e {
                TrySendError::Full(j) | TrySendError::Disconnected(j) => j,
            }),
            None => Err(job),
        }
    }

    /// Stops: no queued job is started any more (each is reported as skipped); a running command gets
    /// [`STOP_GRACE`], then its process group is killed.
    pub fn stop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.tx = None;
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

impl Drop for ActionRunner {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A channel pair for outcomes.
pub fn outcome_channel() -> (Sender<ActionOutcome>, Receiver<ActionOutcome>) {
    channel()
}

fn worker(
    rx: &Mutex<Receiver<ActionJob>>,
    done: &Sender<ActionOutcome>,
    wake: &(dyn Fn() + Send + Sync),
    stopping: &AtomicBool,
    fd_soft_limit: u64,
) {
    loop {
        let job = {
            let Ok(guard) = rx.lock() else { return };
            match guard.recv() {
                Ok(job) => job,
                Err(_) => return,
            }
        };
        let outcome = if stopping.load(Ordering::SeqCst) {
            ActionOutcome { job, exit_code: None, error: None, elapsed: None, skipped: Some("vigild stopping") }
        } else {
            run(job, stopping, fd_soft_limit)
        };
        if done.send(outcome).is_err() {
            return;
        }
        wake();
    }
}

fn run(job: ActionJob, stopping: &AtomicBool, fd_soft_limit: u64) -> ActionOutcome {
    let start = Instant::now();
    let mut outcome = ActionOutcome { job, exit_code: None, error: None, elapsed: None, skipped: None };
    if outcome.job.argv.is_empty() {
        outcome.error = Some("empty argv".into());
        return outcome;
    }
    // The soft fd limit is put back by a shell before exec: the argv reaches the command as positional
    // parameters, never as shell text. Its own process group, so a timeout kills everything it started, and
    // no systemd notification variables (the command is not vigild).
    let limit = if fd_soft_limit == u64::MAX { "unlimited".to_string() } else { fd_soft_limit.to_string() };
    let child = Command::new("/bin/sh")
        .arg("-c")
        .arg(format!("ulimit -S -n {limit} 2>/dev/null; exec \"$@\""))
        .arg("vigild-action")
        .args(&outcome.job.argv)
        .process_group(0)
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            outcome.error = Some(format!("spawn {}: {e}", outcome.job.argv[0]));
            return outcome;
        }
    };
    let group = rustix::process::Pid::from_child(&child);
    let mut stop_seen: Option<Instant> = None;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                outcome.exit_code = status.code();
                if status.code().is_none() {
                    outcome.error = Some(format!("{status}"));
                } else if status.code() == Some(127) {
                    outcome.error = Some(format!("{}: command not found", outcome.job.argv[0]));
                }
                break;
            }
            Ok(None) => {
                if stopping.load(Ordering::SeqCst) {
                    stop_seen.get_or_insert_with(Instant::now);
                }
                let timed_out = start.elapsed() > COMMAND_TIMEOUT;
                let stop_over = stop_seen.is_some_and(|t| t.elapsed() > STOP_GRACE);
                if timed_out || stop_over {
                    let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
                    let _ = child.wait();
                    outcome.error = Some(if timed_out {
                        format!("killed after {}s", COMMAND_TIMEOUT.as_secs())
                    } else {
                        "killed: vigild stopping".into()
                    });
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => {
                outcome.error = Some(format!("wait: {e}"));
                break;
            }
        }
    }
    outcome.elapsed = Some(start.elapsed());
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(argv: &[&str]) -> ActionJob {
        ActionJob {
            guest: "vm".into(),
            trigger: "heartbeat_lost",
            action: CorrectiveAction::Reboot,
            argv: argv.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn runs_commands_and_reports_exit_status() {
        let (tx, rx) = outcome_channel();
        let mut r = ActionRunner::start(2, tx, Arc::new(|| {}), 1024);
        r.submit(job(&["true"])).unwrap();
        r.submit(job(&["sh", "-c", "exit 3"])).unwrap();
        r.submit(job(&["/nonexistent/cmd"])).unwrap();
        let got: Vec<_> = (0..3).map(|_| rx.recv_timeout(Duration::from_secs(10)).unwrap()).collect();
        let codes: Vec<_> = got.iter().map(|o| (o.job.argv[0].clone(), o.exit_code, o.error.is_some())).collect();
        assert!(codes.contains(&("true".into(), Some(0), false)));
        assert!(codes.contains(&("sh".into(), Some(3), false)));
        assert!(codes.iter().any(|(a, _, err)| a == "/nonexistent/cmd" && *err), "{codes:?}");
        r.stop();
    }

    #[test]
    fn commands_get_the_ordinary_fd_limit_no_notify_socket_and_their_own_process_group() {
        let dir = std::env::temp_dir().join(format!("vigil-actions-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let out = dir.join("env");
        let (tx, rx) = outcome_channel();
        let mut r = ActionRunner::start(1, tx, Arc::new(|| {}), 777);
        let script =
            format!("echo \"$(ulimit -S -n) ${{NOTIFY_SOCKET:-none}} $(ps -o pgid= $$) $$\" > {}", out.display());
        r.submit(job(&["sh", "-c", &script])).unwrap();
        let o = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(o.exit_code, Some(0), "{o:?}");
        let text = std::fs::read_to_string(&out).unwrap();
        let f: Vec<&str> = text.split_whitespace().collect();
        assert_eq!((f[0], f[1]), ("777", "none"), "{text}");
        assert_eq!(f[2], f[3], "the command leads its own process group: {text}");
        r.stop();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn after_stop_no_queued_action_starts_and_a_running_one_is_killed_with_its_group() {
        let (tx, rx) = outcome_channel();
        let mut r = ActionRunner::start(1, tx, Arc::new(|| {}), 1024);
        // the running one starts a grandchild that would outlive a plain kill
        r.submit(job(&["sh", "-c", "sleep 30 & sleep 30"])).unwrap();
        for _ in 0..5 {
            r.submit(job(&["touch", "/tmp/vigil-must-not-exist"])).unwrap();
        }
        std::thread::sleep(Duration::from_millis(300));
        let start = Instant::now();
        r.stop();
        assert!(start.elapsed() < Duration::from_secs(10), "stop is bounded: {:?}", start.elapsed());
        let got: Vec<ActionOutcome> = rx.try_iter().collect();
        assert_eq!(got.len(), 6);
        assert_eq!(got.iter().filter(|o| o.skipped == Some("vigild stopping")).count(), 5);
        assert!(got[0].error.as_deref().is_some_and(|e| e.contains("stopping")), "{:?}", got[0]);
        assert!(!std::path::Path::new("/tmp/vigil-must-not-exist").exists());
    }
}
