extern crate std;
use super::*;
use std::format;
use std::vec::Vec;

/// A monitor with a counter for nonces (1, 2, 3, ...), connected at t=0.
struct Script {
    m: Monitor<fn() -> u32>,
}

fn counter() -> u32 {
    use core::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(100);
    N.fetch_add(1, Ordering::Relaxed)
}

fn at(ms: u64) -> Instant {
    Instant::from_millis(ms)
}

impl Script {
    fn new(config: MonitorConfig) -> Self {
        let mut m = Monitor::new(config, counter as fn() -> u32);
        m.connected(at(0));
        Script { m }
    }

    /// Feeds `line` at `t`; returns the events it caused.
    fn feed(&mut self, t: u64, bytes: &str) -> Vec<MonitorEvent> {
        let mut input = bytes.as_bytes();
        let mut events = Vec::new();
        while !input.is_empty() {
            let n = self.m.handle_bytes(at(t), input);
            input = &input[n..];
            while let Some(e) = self.poll_event() {
                events.push(e);
            }
        }
        events
    }

    /// The next event; every poll also holds `has_event` to what it returns.
    fn poll_event(&mut self) -> Option<MonitorEvent> {
        let announced = self.m.has_event();
        let e = self.m.poll_event();
        assert_eq!(announced, e.is_some(), "has_event says what poll_event returns");
        e
    }

    /// Runs timers up to `t`; returns the events.
    fn advance(&mut self, t: u64) -> Vec<MonitorEvent> {
        let mut events = Vec::new();
        for _ in 0..100 {
            match self.m.poll_timeout() {
                Some(d) if d <= at(t) => self.m.handle_timeout(d),
                _ => break,
            }
            while let Some(e) = self.poll_event() {
                events.push(e);
            }
        }
        events
    }

    /// Everything the monitor wants to send at `t`, decoded.
    fn sent(&mut self, t: u64) -> Vec<Body> {
        let mut out = Vec::new();
        let mut buf = [0u8; MAX_WIRE];
        while let Some(n) = self.m.poll_transmit(at(t), &mut buf) {
            assert_eq!((buf[0], buf[n - 1]), (b'\n', b'\n'));
            out.push(crate::decode(&buf[1..n - 1]).unwrap().body);
        }
        out
    }

    fn nonce(&self) -> u32 {
        self.m.nonce
    }

    fn register(&mut self, t: u64, interval_ms: u32) -> u32 {
        let ev = self.feed(t, &init_line(77, interval_ms, "reboot"));
        assert!(matches!(ev.as_slice(), [MonitorEvent::Registered(_)]), "{ev:?}");
        let sent = self.sent(t);
        assert_eq!(sent[0], Body::InitAck { invocation_id: 77 });
        let Body::Challenge { heartbeat_challenge } = sent[1] else { panic!("{sent:?}") };
        heartbeat_challenge
    }
}

fn init_line(id: u32, interval: u32, action: &str) -> std::string::String {
    format!(
        "\n{{\"version\":3,\"revision\":1,\"msg_type\":\"init\",\"sequence\":1,\"invocation_id\":{id},\"name\":\"vm-1\",\"heartbeat_interval_ms\":{interval},\"vote_secs\":9,\"shutdown_notice_secs\":9,\"suspend_notice_secs\":9,\"resume_notice_secs\":14,\"restart_secs\":601,\"corrective_action\":\"{action}\"}}\n"
    )
}

fn response(nonce: u32, health: &str, action: &str, msg: &str) -> std::string::String {
    format!(
        "\n{{\"version\":3,\"revision\":1,\"msg_type\":\"challenge_response\",\"sequence\":2,\"heartbeat_response\":{nonce},\"heartbeat_health\":\"{health}\",\"corrective_action\":\"{action}\",\"log_msg\":\"{msg}\"}}\n"
    )
}

fn ok(nonce: u32) -> std::string::String {
    response(nonce, "healthy", "reboot", "")
}

#[test]
fn init_gets_ack_and_first_challenge_at_once_then_one_per_interval() {
    let mut s = Script::new(MonitorConfig::default());
    assert_eq!(s.m.state(), MonitorState::AwaitingInit);
    let n1 = s.register(0, 1000);
    assert!(n1 <= MAX_NONCE);
    assert_eq!(s.m.state(), MonitorState::Heartbeating);
    assert_eq!(s.m.poll_timeout(), Some(at(1000)));
    assert!(s.feed(40, &ok(n1)).is_empty());
    assert_eq!(s.m.stats().last_rtt, Duration::from_millis(40));
    assert!(s.advance(999).is_empty());
    assert!(s.sent(999).is_empty(), "no challenge before the interval ends");
    assert!(s.advance(1000).is_empty());
    let sent = s.sent(1000);
    assert!(matches!(sent.as_slice(), [Body::Challenge { heartbeat_challenge }] if *heartbeat_challenge != n1));
    assert_eq!(s.m.poll_timeout(), Some(at(2000)));
}

#[test]
fn interval_is_clamped_to_the_configured_floor_and_ceiling() {
    let mut s = Script::new(MonitorConfig::default());
    let ev = s.feed(0, &init_line(1, 0, "log"));
    let [MonitorEvent::Registered(r)] = ev.as_slice() else { panic!() };
    assert_eq!(r.interval, Duration::from_millis(100));
    let ev = s.feed(0, &init_line(1, u32::MAX, "log"));
    let [MonitorEvent::Registered(r)] = ev.as_slice() else { panic!() };
    assert_eq!(r.interval, Duration::from_secs(60));
}

#[test]
fn loss_at_the_second_miss_then_challenges_go_on() {
    let mut s = Script::new(MonitorConfig::default());
    let n = s.register(0, 1000);
    s.feed(10, &ok(n));
    s.advance(1000);
    s.sent(1000);
    // the challenge of t=1000 goes unanswered
    assert!(s.advance(2000).is_empty(), "first miss is not a loss");
    assert_eq!(s.sent(2000).len(), 1, "a miss sends a new challenge");
    let ev = s.advance(3000);
    assert_eq!(ev, [MonitorEvent::HeartbeatLost { consecutive_misses: 2, last_heartbeat: Some(at(10)) }]);
    assert_eq!(s.m.state(), MonitorState::Heartbeating);
    assert_eq!(s.m.fault(), Some(Fault::Lost));
    assert_eq!(s.sent(3000).len(), 1, "challenges go on after a loss, at the interval");
    assert!(s.advance(4000).is_empty(), "loss is reported once");
    assert!(matches!(s.sent(4000).as_slice(), [Body::Challenge { .. }]));
    // a vote is refused at once while the heartbeat is lost
    assert_eq!(
        s.m.notify(at(4000), EventType::Stop, NotificationType::Revocable, Duration::from_secs(9)),
        Err(NotifyError::NotHeartbeating)
    );
    // the current challenge answered: recovered at once, no init needed
    let n = s.nonce();
    assert_eq!(s.feed(4500, &ok(n)), [MonitorEvent::Recovered]);
    assert_eq!(s.m.fault(), None);
    assert_eq!(s.m.stats().registrations, 1);
    // a new registration works as well
    let n = s.register(70_000, 1000);
    assert!(s.feed(70_010, &ok(n)).is_empty());
}

#[test]
fn a_guest_back_from_a_freeze_answers_its_queued_challenges_without_errors() {
    // What the reference guest does after SIGSTOP / a paused VM: it answers every challenge that queued up,
    // each echoing its own nonce.
    let mut s = Script::new(MonitorConfig::default());
    let first = s.register(0, 1000);
    s.feed(10, &ok(first));
    let mut queued = Vec::new();
    for t in [1000, 2000, 3000, 4000] {
        let ev = s.advance(t);
        if t == 3000 {
            assert!(matches!(ev.as_slice(), [MonitorEvent::HeartbeatLost { .. }]), "{ev:?}");
        }
        let sent = s.sent(t);
        let [Body::Challenge { heartbeat_challenge }] = sent.as_slice() else { panic!("{sent:?}") };
        queued.push(*heartbeat_challenge);
    }
    // thawed at 4300: the four answers arrive at once, oldest first
    let mut events = Vec::new();
    for n in &queued {
        events.extend(s.feed(4300, &ok(*n)));
    }
    assert_eq!(events, [MonitorEvent::Recovered], "proof of life, no protocol error");
    assert_eq!(s.m.stats().protocol_errors, 0);
    assert_eq!(s.m.stats().late_answers, 3);
    assert_eq!(s.m.fault(), None);
    // the same answer twice is a replay
    assert!(matches!(s.feed(4301, &ok(queued[3])).as_slice(), [MonitorEvent::ProtocolError(_)]));
    // an answer to a challenge never sent is refused
    assert!(matches!(
        s.feed(4302, &ok(s.nonce().wrapping_add(1000))).as_slice(),
        [MonitorEvent::ProtocolError(ProtocolError::StaleNonce { .. })]
    ));
}

#[test]
fn a_guest_paused_for_a_hundred_intervals_answers_every_queued_challenge_as_late_not_as_errors() {
    // A VM paused (or a reference guest stopped) for 20 s at a 200 ms interval: 100 challenges queue up in the
    // port, and the guest answers all of them on resume. Each echoes a challenge vigild really sent.
    let mut s = Script::new(MonitorConfig::default());
    let first = s.register(0, 200);
    assert!(s.feed(5, &ok(first)).is_empty());
    let mut queued = Vec::new();
    let mut lost = 0;
    for i in 1..=100u64 {
        let ev = s.advance(i * 200);
        lost += ev.iter().filter(|e| matches!(e, MonitorEvent::HeartbeatLost { .. })).count();
        let sent = s.sent(i * 200);
        let [Body::Challenge { heartbeat_challenge }] = sent.as_slice() else { panic!("{sent:?}") };
        queued.push(*heartbeat_challenge);
    }
    assert_eq!(lost, 1, "one loss per episode");
    let mut events = Vec::new();
    for n in &queued {
        events.extend(s.feed(20_050, &ok(*n)));
    }
    assert_eq!(events, [MonitorEvent::Recovered], "no protocol error for any of the 100 answers");
    assert_eq!(s.m.stats().protocol_errors, 0);
    assert_eq!(s.m.stats().late_answers, 99, "all but the current one are late");
    // a replay of any of them, or an answer to a challenge never sent, is still an error
    for bad in [queued[0], queued[57], s.nonce().wrapping_add(1)] {
        assert!(
            matches!(
                s.feed(20_060, &ok(bad)).as_slice(),
                [MonitorEvent::ProtocolError(ProtocolError::StaleNonce { .. })]
            ),
            "{bad}"
        );
    }
}

#[test]
fn a_loss_threshold_lowered_by_a_reload_past_the_current_misses_still_reports_the_loss() {
    let mut s = Script::new(MonitorConfig { loss_threshold: 5, ..MonitorConfig::default() });
    s.register(0, 1000);
    for t in [1000, 2000, 3000] {
        assert!(s.advance(t).is_empty(), "3 misses, threshold 5");
        let _ = s.sent(t);
    }
    // the operator lowers the threshold to 1 (SIGHUP): 3 misses are already past it
    s.m.set_config(MonitorConfig { loss_threshold: 1, ..MonitorConfig::default() });
    let ev = s.advance(4000);
    assert!(matches!(ev.as_slice(), [MonitorEvent::HeartbeatLost { consecutive_misses: 4, .. }]), "{ev:?}");
    let _ = s.sent(4000);
    assert!(s.advance(5000).is_empty(), "reported once per episode");
}

#[test]
fn the_references_unknown_values_are_accepted_and_counted() {
    let mut s = Script::new(MonitorConfig::default());
    // init with corrective_action "unknown": registered, not nacked
    let ev = s.feed(0, &init_line(5, 1000, "unknown"));
    let [MonitorEvent::Registered(r)] = ev.as_slice() else { panic!("{ev:?}") };
    assert_eq!(r.init.corrective_action, CorrectiveAction::Unknown);
    assert_eq!(r.init.corrective_action.effective(), CorrectiveAction::Log);
    let sent = s.sent(0);
    assert!(matches!(sent.as_slice(), [Body::InitAck { .. }, Body::Challenge { .. }]), "{sent:?}");
    // an answer with an unknown health string and action: a heartbeat, no fault
    assert!(s.feed(10, &response(s.nonce(), "unknown", "unknown", "")).is_empty());
    s.advance(1000);
    s.sent(1000);
    assert!(s.feed(1010, &response(s.nonce(), "degraded", "none", "")).is_empty());
    assert_eq!(s.m.stats().heartbeats, 2);
    assert_eq!(s.m.stats().protocol_errors, 0);
    assert_eq!(s.m.stats().unknown_values, 3);
    assert_eq!(s.m.fault(), None);
    // unhealthy with action unknown: reported as such (the host acts on it as log)
    s.advance(2000);
    s.sent(2000);
    let ev = s.feed(2010, &response(s.nonce(), "unhealthy", "unknown", "x"));
    assert!(matches!(ev.as_slice(), [MonitorEvent::Unhealthy { corrective_action: CorrectiveAction::Unknown, .. }]));
    // a vote answered with unknown event and notification types matches the open vote
    s.m.notify(at(2100), EventType::LiveMigrateBegin, NotificationType::Revocable, Duration::from_secs(9)).unwrap();
    s.sent(2100);
    let ev = s.feed(2200, concat!(r#"{"version":3,"revision":1,"msg_type":"action_response","sequence":3,"invocation_id":5,"event_type":"unknown","notification_type":"unknown","vote_result":"unknown","log_msg":""}"#, "\n"));
    assert!(
        matches!(
            ev.as_slice(),
            [MonitorEvent::VoteResult { event_type: EventType::LiveMigrateBegin, result: VoteResult::Unknown, .. }]
        ),
        "{ev:?}"
    );
    assert_eq!(s.m.stats().unknown_values, 5);
}

#[test]
fn spread_phase_delays_the_second_challenge_by_at_most_half_an_interval() {
    let mut s = Script::new(MonitorConfig { spread_phase: true, ..MonitorConfig::default() });
    let n = s.register(0, 1000);
    s.feed(5, &ok(n));
    let second = s.m.poll_timeout().unwrap();
    assert!(second >= at(1000) && second < at(1500), "{second:?}");
    // then the cadence is the interval
    s.advance(second.as_millis());
    s.sent(second.as_millis());
    assert_eq!(s.m.poll_timeout(), Some(second + Duration::from_millis(1000)));
}

/// The deadlines of a guest that answers every challenge at once, from its registration at `registered`.
fn deadlines(config: MonitorConfig, place: u16, registered: u64, count: usize) -> Vec<u64> {
    let mut s = Script::new(config);
    s.m.set_phase(Some(place));
    let n = s.register(registered, 1000);
    s.feed(registered + 1, &ok(n));
    let mut out = Vec::new();
    while out.len() < count {
        let due = s.m.poll_timeout().unwrap().as_millis();
        out.push(due);
        s.advance(due);
        let sent = s.sent(due);
        let Some(Body::Challenge { heartbeat_challenge }) = sent.last().cloned() else { panic!("{sent:?}") };
        s.feed(due + 1, &ok(heartbeat_challenge));
    }
    out
}

#[test]
fn a_chosen_phase_moves_deadlines_to_that_place_by_at_most_half_an_interval_each() {
    // a quarter of the way into the 1 s interval, whenever the guest registers
    let spread = MonitorConfig { spread_phase: true, ..MonitorConfig::default() };
    for registered in [0u64, 100, 249, 250, 251, 700, 749, 750, 999, 1_000, 12_345] {
        let d = deadlines(spread, 1 << 14, registered, 5);
        let mut last = registered;
        for &t in &d {
            // never sooner than an interval, never later than one and a half: a guest re-registers after two
            assert!(t - last >= 1000 && t - last <= 1500, "registered at {registered}: {d:?}");
            last = t;
        }
        // there within two intervals, and it stays
        assert!(d[1..].iter().all(|t| t % 1000 == 250), "registered at {registered}: {d:?}");
    }
    assert_eq!(deadlines(spread, 1 << 14, 0, 3), [1250, 2250, 3250], "a quarter of an interval late: there at once");
    assert_eq!(deadlines(spread, 1 << 14, 700, 3), [2200, 3250, 4250], "0.55 intervals away: half now, the rest next");
    // with coalescing, the place is rounded up to the 10 ms grid and every deadline is on it
    let grid = MonitorConfig { coalesce: Duration::from_millis(10), ..spread };
    assert_eq!(deadlines(grid, (1 << 14) + 300, 3, 3), [1260, 2260, 3260], "254 ms in: the grid's 260 ms");
    let d = deadlines(grid, 0, 3, 3);
    assert_eq!(d, [1510, 3000, 4000], "place 0 from 3 ms: half an interval (on the grid), then the rest");
}

#[test]
fn without_spread_phase_a_chosen_phase_is_ignored() {
    let mut s = Script::new(MonitorConfig::default());
    s.m.set_phase(Some(1 << 15));
    s.register(7, 1000);
    assert_eq!(s.m.poll_timeout(), Some(at(1007)));
}

#[test]
fn the_coalescing_step_divides_the_interval_and_is_at_most_one_percent_of_it() {
    let c = MonitorConfig { coalesce: Duration::from_millis(10), ..MonitorConfig::default() };
    let step = |ms| c.coalesce_step(Duration::from_millis(ms)).as_millis();
    assert_eq!(
        [step(1000), step(100), step(1500), step(1234), step(1009), step(250), step(60_000)],
        [10, 1, 10, 2, 1, 2, 10]
    );
    assert_eq!(MonitorConfig::default().coalesce_step(Duration::from_millis(1000)), Duration::ZERO, "off by default");
}

#[test]
fn coalesced_deadlines_fall_on_the_grid_and_keep_the_period_and_the_verdict_exact() {
    let mut s = Script::new(MonitorConfig { coalesce: Duration::from_millis(10), ..MonitorConfig::default() });
    let n = s.register(1003, 1000);
    // the first deadline is rounded up to the 10 ms grid: the phase moves by less than one step
    assert_eq!(s.m.poll_timeout(), Some(at(2010)));
    s.feed(1010, &ok(n));
    let mut deadlines = Vec::new();
    let mut lost_at = None;
    for _ in 0..4 {
        let d = s.m.poll_timeout().unwrap();
        deadlines.push(d.as_millis());
        if !s.advance(d.as_millis()).is_empty() {
            lost_at = Some(d.as_millis());
        }
        s.sent(d.as_millis());
    }
    assert_eq!(deadlines, [2010, 3010, 4010, 5010], "the period is exactly the interval");
    // the challenge of 2010 and the one of 3010 go unanswered: loss at the second miss, at 4010, as without coalescing
    assert_eq!(lost_at, Some(4010));
    // a resume starts a new phase, on the grid
    s.m.rechallenge(at(5017));
    assert_eq!(s.m.poll_timeout(), Some(at(6020)));
}

#[test]
fn a_late_timer_with_coalescing_restarts_on_the_grid() {
    let mut s = Script::new(MonitorConfig { coalesce: Duration::from_millis(10), ..MonitorConfig::default() });
    let n = s.register(0, 1000);
    s.feed(1, &ok(n));
    // the caller slept through a whole interval (a stopped host process)
    s.m.handle_timeout(at(2503));
    s.sent(2503);
    assert_eq!(s.m.poll_timeout(), Some(at(3510)));
}

#[test]
fn rechallenge_starts_counting_over() {
    let mut s = Script::new(MonitorConfig::default());
    let n = s.register(0, 1000);
    s.feed(5, &ok(n));
    s.advance(2000); // one miss
    s.sent(2000);
    s.m.rechallenge(at(2500));
    let sent = s.sent(2500);
    assert!(matches!(sent.as_slice(), [Body::Challenge { .. }]), "{sent:?}");
    assert!(s.advance(3500).is_empty(), "the miss before counts no more: one miss is not a loss");
    assert!(s.advance(4499).is_empty());
    assert_eq!(s.advance(4500).len(), 1, "two fresh misses are");
}

#[test]
fn the_first_message_has_sequence_one() {
    let mut s = Script::new(MonitorConfig::default());
    s.feed(0, &init_line(5, 1000, "log"));
    let mut buf = [0u8; MAX_WIRE];
    let n = s.m.poll_transmit(at(0), &mut buf).unwrap();
    assert_eq!(crate::decode(&buf[1..n - 1]).unwrap().sequence, 1);
    let n = s.m.poll_transmit(at(0), &mut buf).unwrap();
    assert_eq!(crate::decode(&buf[1..n - 1]).unwrap().sequence, 2);
}

#[test]
fn configurable_loss_threshold() {
    let mut s = Script::new(MonitorConfig { loss_threshold: 3, ..MonitorConfig::default() });
    s.register(0, 500);
    assert!(s.advance(1500).is_empty());
    assert!(matches!(s.advance(2000).as_slice(), [MonitorEvent::HeartbeatLost { consecutive_misses: 4, .. }]));
}

#[test]
fn stale_and_replayed_nonces_are_ignored_and_reported() {
    let mut s = Script::new(MonitorConfig::default());
    let n = s.register(0, 1000);
    let ev = s.feed(5, &ok(n ^ 1));
    assert_eq!(ev, [MonitorEvent::ProtocolError(ProtocolError::StaleNonce { expected: n, got: n ^ 1 })]);
    assert!(s.sent(5).is_empty(), "a stale nonce gets no nack");
    assert!(s.feed(6, &ok(n)).is_empty());
    // a replay of the nonce just answered
    assert!(matches!(s.feed(7, &ok(n)).as_slice(), [MonitorEvent::ProtocolError(ProtocolError::StaleNonce { .. })]));
    s.advance(1000);
    s.sent(1000);
    // the old nonce does not count for the new challenge: two misses later, loss
    s.feed(1001, &ok(n));
    s.advance(2000);
    assert!(matches!(s.advance(3000).as_slice(), [MonitorEvent::HeartbeatLost { .. }]));
    assert_eq!(s.m.stats().protocol_errors, 3);
}

#[test]
fn unhealthy_is_reported_once_per_episode_and_on_escalation() {
    let mut s = Script::new(MonitorConfig::default());
    let mut n = s.register(0, 1000);
    let ev = s.feed(1, &response(n, "unhealthy", "log", "db \\\"down\\\""));
    assert_eq!(
        ev,
        [MonitorEvent::Unhealthy { corrective_action: CorrectiveAction::Log, log_msg: bounded("db \"down\"") }]
    );
    assert_eq!(s.m.fault(), Some(Fault::Unhealthy(CorrectiveAction::Log)));
    let next = |s: &mut Script, t: u64| {
        s.advance(t);
        s.sent(t);
        s.nonce()
    };
    n = next(&mut s, 1000);
    assert!(s.feed(1001, &response(n, "unhealthy", "log", "still")).is_empty(), "counts as heartbeat, no repeat");
    n = next(&mut s, 2000);
    assert!(s.feed(2001, &response(n, "unhealthy", "none", "holdoff")).is_empty());
    n = next(&mut s, 3000);
    let ev = s.feed(3001, &response(n, "unhealthy", "reboot", "worse"));
    assert!(matches!(ev.as_slice(), [MonitorEvent::Unhealthy { corrective_action: CorrectiveAction::Reboot, .. }]));
    n = next(&mut s, 4000);
    assert_eq!(s.feed(4001, &ok(n)), [MonitorEvent::Recovered]);
    n = next(&mut s, 5000);
    assert!(s.feed(5001, &ok(n)).is_empty(), "recovered once");
    assert_eq!(s.m.stats().misses, 0, "unhealthy answers are heartbeats");
}

#[test]
fn a_new_init_in_any_state_resets_the_session() {
    let mut s = Script::new(MonitorConfig::default());
    let n = s.register(0, 1000);
    s.feed(1, &response(n, "unhealthy", "stop", ""));
    s.advance(1000);
    s.sent(1000);
    // the guest rebooted: fresh init mid-session
    let ev = s.feed(1500, &init_line(99, 2000, "log"));
    assert!(matches!(ev.as_slice(), [MonitorEvent::Registered(r)] if r.init.invocation_id == 99));
    let sent = s.sent(1500);
    assert_eq!(sent[0], Body::InitAck { invocation_id: 99 });
    assert_eq!(s.m.poll_timeout(), Some(at(3500)));
    // still unhealthy after the repair: reported again
    let ev = s.feed(1600, &response(s.nonce(), "unhealthy", "stop", ""));
    assert!(matches!(ev.as_slice(), [MonitorEvent::Unhealthy { .. }]));
}

#[test]
fn registration_timeout_after_120s_without_init() {
    let mut s = Script::new(MonitorConfig::default());
    assert!(s.advance(119_999).is_empty());
    assert_eq!(s.advance(120_000), [MonitorEvent::RegistrationTimeout]);
    assert_eq!(s.m.poll_timeout(), None);
}

#[test]
fn exit_is_a_graceful_deregistration_not_a_fault() {
    let mut s = Script::new(MonitorConfig::default());
    s.register(0, 1000);
    let ev =
        s.feed(10, "{\"version\":3,\"revision\":1,\"msg_type\":\"exit\",\"sequence\":4,\"log_msg\":\"Exiting...\"}\n");
    assert_eq!(ev, [MonitorEvent::Deregistered { log_msg: bounded("Exiting...") }]);
    assert_eq!(s.m.state(), MonitorState::Exited);
    assert_eq!(s.m.poll_timeout(), None);
    assert!(s.advance(1_000_000).is_empty(), "no loss after exit");
    assert_eq!(s.m.fault(), None);
}

#[test]
fn refused_messages_get_a_rate_limited_nack() {
    let mut s = Script::new(MonitorConfig::default());
    s.register(0, 1000);
    let ev = s.feed(1, "{broken\n");
    assert_eq!(ev, [MonitorEvent::ProtocolError(ProtocolError::Decode(DecodeError::Syntax))]);
    assert_eq!(s.sent(1), [Body::Nack { invocation_id: 77, log_msg: bounded("malformed JSON") }]);
    // within a second: counted, not nacked
    s.feed(2, "{\"version\":2,\"revision\":0,\"msg_type\":\"init\",\"sequence\":1}\n");
    assert!(s.sent(2).is_empty());
    assert_eq!(s.m.stats().nacks_suppressed, 1);
    let ev = s.feed(1002, "{\"version\":2,\"revision\":0,\"msg_type\":\"init\",\"sequence\":1}\n");
    assert_eq!(ev, [MonitorEvent::ProtocolError(ProtocolError::Decode(DecodeError::UnsupportedVersion(2)))]);
    assert_eq!(s.sent(1002), [Body::Nack { invocation_id: 77, log_msg: bounded("unsupported version") }]);
    s.feed(2002, "{\"version\":3,\"revision\":1,\"msg_type\":\"bogus\",\"sequence\":1}\n");
    assert_eq!(s.sent(2002), [Body::Nack { invocation_id: 77, log_msg: bounded("unknown msg_type") }]);
    s.feed(3002, "{\"version\":3,\"revision\":1,\"msg_type\":\"action_response\",\"sequence\":3,\"invocation_id\":5,\"event_type\":\"stop\",\"notification_type\":\"revocable\",\"vote_result\":\"accept\",\"log_msg\":\"\"}\n");
    assert_eq!(s.sent(3002), [Body::Nack { invocation_id: 77, log_msg: bounded("wrong invocation_id") }]);
    assert_eq!(s.m.state(), MonitorState::Heartbeating, "nothing ends the session");
}

fn vote_answer(result: &str, msg: &str) -> std::string::String {
    format!("{{\"version\":3,\"revision\":1,\"msg_type\":\"action_response\",\"sequence\":3,\"invocation_id\":77,\"event_type\":\"stop\",\"notification_type\":\"revocable\",\"vote_result\":\"{result}\",\"log_msg\":\"{msg}\"}}\n")
}

#[test]
fn votes_use_the_timeout_that_was_sent_and_report_timeout_as_such() {
    let mut s = Script::new(MonitorConfig::default());
    let n = s.register(0, 1000);
    assert_eq!(s.m.notify(at(100), EventType::Stop, NotificationType::Revocable, Duration::from_secs(20)), Ok(()));
    assert_eq!(
        s.m.notify(at(100), EventType::Stop, NotificationType::Revocable, Duration::from_secs(1)),
        Err(NotifyError::Busy)
    );
    let sent = s.sent(100);
    let [Body::ActionNotify(a)] = sent.as_slice() else { panic!("{sent:?}") };
    assert_eq!((a.invocation_id, a.timeout_ms), (77, 20_000), "not vote_secs (9 s)");
    // heartbeats go on while the vote is open; 9 s (vote_secs) pass without a verdict
    let mut nonce = n;
    for t in (1000..=19_000).step_by(1000) {
        s.feed(t - 999, &ok(nonce));
        assert!(s.advance(t).is_empty(), "no verdict at {t}");
        s.sent(t);
        nonce = s.nonce();
    }
    s.feed(19_001, &ok(nonce));
    assert!(s.advance(20_099).iter().all(|e| !matches!(e, MonitorEvent::VoteResult { .. })));
    let ev = s.advance(20_100);
    assert_eq!(
        ev,
        [MonitorEvent::VoteResult {
            event_type: EventType::Stop,
            notification_type: NotificationType::Revocable,
            result: VoteResult::Timeout,
            log_msg: LogMsg::new()
        }]
    );
    // a late answer is unexpected, not a verdict
    assert!(matches!(s.feed(20_001, &vote_answer("accept", "")).as_slice(), [MonitorEvent::ProtocolError(_)]));
    // the next vote: answered
    s.m.notify(at(21_000), EventType::Stop, NotificationType::Revocable, Duration::from_secs(3)).unwrap();
    s.sent(21_000);
    let ev = s.feed(21_500, &vote_answer("reject", "standby not synced"));
    assert!(
        matches!(ev.as_slice(), [MonitorEvent::VoteResult { result: VoteResult::Reject, log_msg, .. }] if log_msg == "standby not synced")
    );
    assert_eq!(
        s.m.notify(at(0), EventType::Stop, NotificationType::Revocable, Duration::from_millis(1 << 33)),
        Err(NotifyError::TimeoutTooLong)
    );
}

#[test]
fn a_reject_that_arrives_with_a_heartbeat_in_one_read_is_not_lost() {
    let mut s = Script::new(MonitorConfig::default());
    let n = s.register(0, 1000);
    s.m.notify(at(1), EventType::Stop, NotificationType::Revocable, Duration::from_secs(3)).unwrap();
    s.sent(1);
    let both = format!("{}{}", ok(n), vote_answer("reject", "no"));
    let ev = s.feed(2, &both);
    assert!(matches!(ev.as_slice(), [MonitorEvent::VoteResult { result: VoteResult::Reject, .. }]));
    assert_eq!(s.m.stats().heartbeats, 1);
}

#[test]
fn disconnect_pauses_everything_and_keeps_the_fault() {
    let mut s = Script::new(MonitorConfig::default());
    s.register(0, 1000);
    s.advance(2000);
    s.advance(3000);
    assert_eq!(s.m.fault(), Some(Fault::Lost));
    s.m.disconnected();
    assert_eq!(s.m.poll_timeout(), None);
    assert_eq!(s.m.handle_bytes(at(3001), b"{partial"), 8, "bytes while disconnected are dropped");
    s.m.connected(at(5000));
    let n = s.register(5000, 1000);
    assert_eq!(s.feed(5001, &ok(n)), [MonitorEvent::Recovered]);
}

#[test]
fn guest_sending_host_messages_is_refused() {
    let mut s = Script::new(MonitorConfig::default());
    let ev = s.feed(
        0,
        "{\"version\":3,\"revision\":1,\"msg_type\":\"challenge\",\"sequence\":8,\"heartbeat_challenge\":1}\n",
    );
    assert_eq!(ev, [MonitorEvent::ProtocolError(ProtocolError::Unexpected(MsgType::Challenge))]);
    assert_eq!(s.sent(0).len(), 1);
}

#[test]
fn sizes_fit_the_budget() {
    let size = core::mem::size_of::<Monitor<crate::XorShift32>>();
    std::println!(
        "size_of::<Monitor<XorShift32>>() = {size}: config {}, registration {}, stats {}, timers {}, nonces {}, \
         event slot {}",
        core::mem::size_of::<MonitorConfig>(),
        core::mem::size_of::<Option<Registration>>(),
        core::mem::size_of::<MonitorStats>(),
        core::mem::size_of::<Timers<TIMERS>>(),
        core::mem::size_of::<SentNonces>(),
        core::mem::size_of::<Option<MonitorEvent>>(),
    );
    assert!(size < 2048, "Monitor is {size} bytes");
}

#[test]
fn an_interval_whose_challenge_left_late_is_the_hosts_fault_not_a_miss() {
    let mut s = Script::new(MonitorConfig::default());
    let n = s.register(0, 1000);
    s.feed(5, &ok(n));
    // the host is behind: the interval ends at 1000 but the challenge only leaves at 1600 (an overloaded loop)
    assert!(s.advance(1000).is_empty());
    assert_eq!(s.sent(1600).len(), 1);
    // unanswered by 2000, but the guest had 400 ms of a 1000 ms interval: not counted
    assert!(s.advance(2000).is_empty());
    assert_eq!((s.m.stats().misses, s.m.stats().host_late), (0, 1));
    // on time again: the guest is blamed for what it misses from now on, and lost at the second miss
    s.sent(2000);
    assert!(s.advance(3000).is_empty());
    s.sent(3000);
    let ev = s.advance(4000);
    assert!(matches!(ev.as_slice(), [MonitorEvent::HeartbeatLost { consecutive_misses: 2, .. }]), "{ev:?}");
    assert_eq!(s.m.stats().host_late, 1);
}
