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
