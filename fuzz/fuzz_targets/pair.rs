//! A Monitor and an honest Agent over a link whose delays and splits the fuzzer chooses (every delay under one
//! interval): the guest answers every challenge correctly, so it must never be declared lost.
#![no_main]
use std::collections::VecDeque;

use libfuzzer_sys::fuzz_target;
use vigil_core::*;

fuzz_target!(|plan: (u32, Vec<(u8, u8)>)| {
    let (seed, link) = plan;
    let interval = 1000u64;
    let mut m = Monitor::new(MonitorConfig::default(), XorShift32::new(seed));
    m.connected(Instant::ZERO);
    let cfg = AgentConfig { heartbeat_interval_ms: interval as u32, ..AgentConfig::default() };
    let mut a = Agent::new(cfg, XorShift32::new(seed ^ 0xABCD), Instant::ZERO);
    let mut to_guest: VecDeque<(Instant, Vec<u8>)> = VecDeque::new();
    let mut to_host: VecDeque<(Instant, Vec<u8>)> = VecDeque::new();
    let mut now = Instant::ZERO;
    let mut buf = [0u8; MAX_WIRE];
    let mut k = 0usize;
    let next = |k: &mut usize| -> (u64, usize) {
        let (d, s) = link.get(*k % link.len().max(1)).copied().unwrap_or((0, 0));
        *k += 1;
        // one-way delay below a quarter interval, split point anywhere
        (u64::from(d) % (interval / 4), usize::from(s))
    };
    let mut registered = false;
    for _ in 0..2000 {
        while let Some(n) = m.poll_transmit(now, &mut buf) {
            let (d, s) = next(&mut k);
            let at = (now + Duration::from_millis(d)).max(to_guest.back().map_or(now, |x| x.0));
            let cut = s % n;
            to_guest.push_back((at, buf[..cut].to_vec()));
            to_guest.push_back((at, buf[cut..n].to_vec()));
        }
        while let Some(n) = a.poll_transmit(now, &mut buf) {
            let (d, s) = next(&mut k);
            let at = (now + Duration::from_millis(d)).max(to_host.back().map_or(now, |x| x.0));
            let cut = s % n;
            to_host.push_back((at, buf[..cut].to_vec()));
            to_host.push_back((at, buf[cut..n].to_vec()));
        }
        let t = [m.poll_timeout(), a.poll_timeout(), to_guest.front().map(|x| x.0), to_host.front().map(|x| x.0)]
            .into_iter()
            .flatten()
            .min();
        let Some(t) = t else { break };
        assert!(t >= now);
        now = t;
        if now > Instant::from_secs(120) {
            break;
        }
        while to_guest.front().is_some_and(|x| x.0 <= now) {
            let (_, bytes) = to_guest.pop_front().unwrap();
            let mut input = &bytes[..];
            while !input.is_empty() {
                let used = a.handle_bytes(now, input);
                input = &input[used..];
                while a.poll_event().is_some() {}
            }
        }
        while to_host.front().is_some_and(|x| x.0 <= now) {
            let (_, bytes) = to_host.pop_front().unwrap();
            let mut input = &bytes[..];
            while !input.is_empty() {
                let used = m.handle_bytes(now, input);
                input = &input[used..];
                while let Some(e) = m.poll_event() {
                    match e {
                        MonitorEvent::Registered(_) => registered = true,
                        MonitorEvent::ProtocolError(p) => panic!("honest pair produced {p:?}"),
                        _ => {}
                    }
                }
            }
        }
        while m.poll_timeout().is_some_and(|x| x <= now) {
            m.handle_timeout(now);
            while let Some(e) = m.poll_event() {
                assert!(!matches!(e, MonitorEvent::HeartbeatLost { .. }), "an honest guest was declared lost at {now:?}");
            }
        }
        while a.poll_timeout().is_some_and(|x| x <= now) {
            a.handle_timeout(now);
            while a.poll_event().is_some() {}
        }
    }
    assert!(registered || now < Instant::from_secs(1));
});
