//! The host Monitor driven by arbitrary (bytes, time advance) steps: no panic, deadlines never in the past once
//! due timers fired, bounded output per step, and the event queue always drains; with exact timing or vigild's
//! (spread, placed and coalesced phases).
#![no_main]
use libfuzzer_sys::fuzz_target;
use vigil_core::*;

fuzz_target!(|steps: Vec<(Vec<u8>, u16, bool)>| {
    // the first step chooses the host's tunables: exact timing, or vigild's (spread phases at a chosen place in
    // the interval, 10 ms coalescing)
    let config = match steps.first() {
        Some((_, place, true)) => {
            let c =
                MonitorConfig { spread_phase: true, coalesce: Duration::from_millis(10), ..MonitorConfig::default() };
            (c, Some(*place))
        }
        _ => (MonitorConfig::default(), None),
    };
    let mut m = Monitor::new(config.0, XorShift32::new(1));
    m.set_phase(config.1);
    m.connected(Instant::ZERO);
    let mut now = Instant::ZERO;
    let mut buf = [0u8; MAX_WIRE];
    for (bytes, dt, reconnect) in steps.into_iter().take(256) {
        now += Duration::from_millis(u64::from(dt));
        if reconnect {
            m.disconnected();
            m.connected(now);
        }
        let mut input = &bytes[..];
        let mut rounds = 0;
        while !input.is_empty() {
            let used = m.handle_bytes(now, input);
            input = &input[used..];
            let mut n = 0;
            while m.poll_event().is_some() {
                n += 1;
            }
            assert!(n <= 2);
            rounds += 1;
            assert!(rounds <= bytes.len() + 1, "handle_bytes must make progress");
        }
        for _ in 0..8 {
            if m.poll_timeout().is_some_and(|t| t <= now) {
                m.handle_timeout(now);
                while m.poll_event().is_some() {}
            }
        }
        assert!(m.poll_timeout().is_none_or(|t| t > now), "deadline in the past after firing");
        let mut out = 0;
        while let Some(n) = m.poll_transmit(now, &mut buf) {
            assert!(n <= MAX_WIRE);
            decode(&buf[1..n - 1]).expect("the monitor writes valid messages");
            out += 1;
            assert!(out <= 4, "bounded output per step");
        }
    }
});
