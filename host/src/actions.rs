//! Corrective actions: commands run by a small pool of threads, never by the data plane.
//!
//! The loop submits a job (an argv, never a shell string) without waiting; a worker runs it with a timeout and
//! sends the outcome back through a channel and wakes the loop with a `mio::Waker`. A full queue refuses the
//! job at once (reported as an action error), so the loop never blocks here.

use std::process::{Command, Stdio};
use std::sync::mpsc::{channel, sync_channel, Receiver, Sender, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A command to run for a guest.
#[derive(Clone, Debug)]
pub struct ActionJob {
    /// Slab key of the guest (to find it again).
    pub key: usize,
    /// Guest id.
    pub guest: Arc<str>,
    /// What caused it (`heartbeat_lost`, `unhealthy`).
    pub trigger: &'static str,
    /// The corrective action the guest asked for.
    pub action: &'static str,
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
    /// How long it took.
    pub elapsed: Duration,
}

/// Worker pool.
pub struct ActionRunner {
    tx: Option<SyncSender<ActionJob>>,
    workers: Vec<JoinHandle<()>>,
}

/// How long a command may run before it is killed.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

impl ActionRunner {
    /// Starts `n` workers; outcomes go to `done`, and `wake` is called after each.
    pub fn start(n: usize, done: Sender<ActionOutcome>, wake: Arc<dyn Fn() + Send + Sync>) -> Self {
        let (tx, rx) = sync_channel::<ActionJob>(1024);
        let rx = Arc::new(Mutex::new(rx));
        let workers = (0..n)
            .filter_map(|i| {
                let rx = Arc::clone(&rx);
                let done = done.clone();
                let wake = Arc::clone(&wake);
                std::thread::Builder::new()
                    .name(format!("vigild-action-{i}"))
                    .spawn(move || worker(&rx, &done, &*wake))
                    .ok()
            })
            .collect();
        ActionRunner { tx: Some(tx), workers }
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

    /// Lets running commands finish and stops the workers.
    pub fn stop(&mut self) {
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

fn worker(rx: &Mutex<Receiver<ActionJob>>, done: &Sender<ActionOutcome>, wake: &(dyn Fn() + Send + Sync)) {
    loop {
        let job = {
            let Ok(guard) = rx.lock() else { return };
            match guard.recv() {
                Ok(job) => job,
                Err(_) => return,
            }
        };
        let outcome = run(job);
        if done.send(outcome).is_err() {
            return;
        }
        wake();
    }
}

fn run(job: ActionJob) -> ActionOutcome {
    let start = Instant::now();
    let mut outcome = ActionOutcome { job, exit_code: None, error: None, elapsed: Duration::ZERO };
    let Some((program, args)) = outcome.job.argv.split_first() else {
        outcome.error = Some("empty argv".into());
        return outcome;
    };
    let child =
        Command::new(program).args(args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            outcome.error = Some(format!("spawn {program}: {e}"));
            return outcome;
        }
    };
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                outcome.exit_code = status.code();
                if status.code().is_none() {
                    outcome.error = Some(format!("{status}"));
                }
                break;
            }
            Ok(None) if start.elapsed() > COMMAND_TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                outcome.error = Some(format!("killed after {}s", COMMAND_TIMEOUT.as_secs()));
                break;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => {
                outcome.error = Some(format!("wait: {e}"));
                break;
            }
        }
    }
    outcome.elapsed = start.elapsed();
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_commands_and_reports_exit_status() {
        let (tx, rx) = outcome_channel();
        let mut r = ActionRunner::start(2, tx, Arc::new(|| {}));
        let job = |argv: &[&str]| ActionJob {
            key: 0,
            guest: "vm".into(),
            trigger: "heartbeat_lost",
            action: "reboot",
            argv: argv.iter().map(|s| s.to_string()).collect(),
        };
        r.submit(job(&["true"])).unwrap();
        r.submit(job(&["sh", "-c", "exit 3"])).unwrap();
        r.submit(job(&["/nonexistent/cmd"])).unwrap();
        let mut got: Vec<_> = (0..3).map(|_| rx.recv_timeout(Duration::from_secs(10)).unwrap()).collect();
        got.sort_by_key(|o| o.job.argv.len());
        let codes: Vec<_> = got.iter().map(|o| (o.job.argv[0].clone(), o.exit_code, o.error.is_some())).collect();
        assert!(codes.contains(&("true".into(), Some(0), false)));
        assert!(codes.contains(&("sh".into(), Some(3), false)));
        assert!(codes.contains(&("/nonexistent/cmd".into(), None, true)));
        r.stop();
    }
}
