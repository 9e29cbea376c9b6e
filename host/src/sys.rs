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
}
