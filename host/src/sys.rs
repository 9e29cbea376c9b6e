//! What vigild asks of the operating system outside its sockets: entropy for nonce seeds, and room for many
//! file descriptors.

/// 32 bits from the OS's entropy (per-guest nonce seeds).
pub fn os_random() -> u32 {
    let mut b = [0u8; 4];
    match rustix::rand::getrandom(&mut b, rustix::rand::GetRandomFlags::empty()) {
        Ok(4) => u32::from_ne_bytes(b),
        // never expected on Linux; fall back to something that differs per call
        _ => {
            (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()) as u32)
                ^ std::process::id().rotate_left(16)
        }
    }
}

/// Raises the soft file-descriptor limit to the hard one; returns (the soft limit before, the limit in force).
/// Corrective commands get the old soft limit back.
pub fn raise_fd_limit() -> (u64, u64) {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let lim = getrlimit(Resource::Nofile);
    let soft = lim.current.unwrap_or(u64::MAX);
    let hard = lim.maximum;
    if lim.current != hard {
        let _ = setrlimit(Resource::Nofile, Rlimit { current: hard, maximum: hard });
    }
    (soft, getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX))
}

/// The nice value of vigild's background threads (control plane, event writer, spool, status, actions).
pub const BACKGROUND_NICE: i32 = 10;

/// Lowers the calling thread's CPU priority to [`BACKGROUND_NICE`]: when the node's CPU is scarce (vigild pinned
/// to one core, a busy host), rendering the status of 10,000 guests for an API client or writing a burst of events
/// must not take the core from the data plane, whose lateness would become its guests' misses. Threads the
/// calling thread creates inherit it (tokio's blocking pool of the control plane). Best effort: a refusal only
/// leaves the thread at its priority.
pub fn background_thread() {
    let _ = rustix::process::setpriority_process(Some(rustix::thread::gettid()), BACKGROUND_NICE);
}

/// Gives the calling thread a descriptor table of its own (`unshare(CLONE_FILES)`), a copy of the process's.
///
/// Why: in a process of many threads the table is shared, so the kernel takes and drops a reference on the open
/// file at every system call on a descriptor (`fdget`/`fput`: at 10,000 guests, 26 more samples of 1,324 than a one-thread loop's, ~2 % of the data plane's CPU);
/// a table used by one thread alone skips that. The data plane makes two such calls per heartbeat.
///
/// The rule that keeps this correct: after the call, no descriptor *number* crosses between the calling thread
/// and any other. Descriptors opened before it are in both tables (the same open files: the loop's poll
/// instance, its waker, its signal pipe); those the calling thread opens afterwards (guest sockets) are in its
/// table alone, and it closes them there; what other threads open afterwards it never sees. The data plane and
/// the control plane exchange only values over channels, never descriptors (the loop opens every guest socket
/// itself), so the rule holds for vigild. Threads the calling thread creates afterwards would share its table
/// (none does). Best effort: where the kernel refuses, the table stays shared and all works as before.
pub fn private_descriptor_table() -> bool {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_FILES).is_ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_background_thread_runs_below_the_data_plane() {
        let nice = std::thread::spawn(|| {
            super::background_thread();
            rustix::process::getpriority_process(Some(rustix::thread::gettid()))
        })
        .join()
        .unwrap()
        .unwrap();
        let own = rustix::process::getpriority_process(Some(rustix::thread::gettid())).unwrap();
        assert_eq!(nice, (own + super::BACKGROUND_NICE).min(19), "the calling thread alone is lowered");
    }

    #[test]
    fn a_private_descriptor_table_keeps_what_was_open_and_hides_what_is_opened_later() {
        use std::os::fd::AsRawFd;
        let before = std::fs::File::open("/proc/self/stat").unwrap();
        let ino = rustix::fs::fstat(&before).unwrap().st_ino;
        let (tx, rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || {
            let private = super::private_descriptor_table();
            // what was open before is the same open file here
            let same = rustix::fs::fstat(&before).is_ok_and(|s| s.st_ino == ino);
            let (r, _w) = std::io::pipe().unwrap();
            let pipe = rustix::fs::fstat(&r).unwrap().st_ino;
            tx.send((private, same, r.as_raw_fd(), pipe)).unwrap();
            // keep the pipe open while the other thread looks
            let _ = done_rx.recv();
        });
        let (private, same, n, pipe) = rx.recv().unwrap();
        assert!(private, "the kernel gave the thread a table of its own");
        assert!(same, "a descriptor opened before is still the same open file in the private table");
        // in this thread's table, number n is free or something else: never the other thread's pipe
        let here = std::fs::read_link(format!("/proc/thread-self/fd/{n}")).ok();
        assert_ne!(here, Some(std::path::PathBuf::from(format!("pipe:[{pipe}]"))), "the pipe is private");
        done_tx.send(()).unwrap();
        t.join().unwrap();
    }
}
