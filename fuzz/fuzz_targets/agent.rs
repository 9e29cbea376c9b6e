//! The guest Agent driven by arbitrary (bytes, time advance, command) steps: no panic, valid output, bounded.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vigil_core::*;

fuzz_target!(|steps: Vec<(Vec<u8>, u16, u8)>| {
    let mut a = Agent::new(AgentConfig::default(), XorShift32::new(2), Instant::ZERO);
    let mut now = Instant::ZERO;
    let mut buf = [0u8; MAX_WIRE];
    for (bytes, dt, cmd) in steps.into_iter().take(256) {
        now += Duration::from_millis(u64::from(dt));
        match cmd % 8 {
            0 => a.set_health(Health::Unhealthy, CorrectiveAction::Stop, "x\"\\\u{1}y"),
            1 => a.set_health(Health::Healthy, CorrectiveAction::None, ""),
            2 => {
                let _ = a.answer_action(VoteResult::Reject, "no");
            }
            3 => a.reconnected(now),
            4 if cmd == 252 => a.shutdown("bye"),
            _ => {}
        }
        let mut input = &bytes[..];
        while !input.is_empty() {
            let used = a.handle_bytes(now, input);
            input = &input[used..];
            while a.poll_event().is_some() {}
        }
        for _ in 0..8 {
            if a.poll_timeout().is_some_and(|t| t <= now) {
                a.handle_timeout(now);
                while a.poll_event().is_some() {}
            }
        }
        assert!(a.poll_timeout().is_none_or(|t| t > now));
        let mut out = 0;
        while let Some(n) = a.poll_transmit(now, &mut buf) {
            decode(&buf[1..n - 1]).expect("the agent writes valid messages");
            out += 1;
            assert!(out <= 4);
        }
    }
});
