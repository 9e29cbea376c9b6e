//! The fleet on virtual time: scripted guests, explicit times, exact assertions.
#![allow(clippy::unwrap_used, clippy::panic)]

use super::*;
use crate::config::{ActionPolicy, FileConfig, GuestSettings};
use crate::fleet::Lifecycle;
use std::collections::BTreeMap;
use vigil_core::{decode, Body, CorrectiveAction, EventType, NotificationType, VoteResult};

fn at(ms: u64) -> Instant {
    Instant::from_millis(ms)
}

/// A fleet whose I/O is simulated: connects succeed unless `refuse` is set; what guests are sent is decoded.
struct Harness {
    f: Fleet,
    refuse: bool,
    events: Vec<(u64, Event)>,
    actions: Vec<ActionRequest>,
    sent: HashMap<GuestKey, Vec<Body>>,
    resumed: Vec<GuestKey>,
    closed: Vec<GuestKey>,
    connects: Vec<(u64, GuestKey)>,
}

impl Harness {
    fn new(settings: GuestSettings) -> Self {
        Harness::with_fleet(FleetConfig::default(), settings)
    }

    fn with_fleet(cfg: FleetConfig, mut settings: GuestSettings) -> Self {
        // exact timing in these tests (the phase spread has its own test in the core)
        settings.spread_phase.get_or_insert(false);
        settings.coalesce_ms.get_or_insert(0);
        let file = FileConfig { defaults: settings, ..FileConfig::default() };
        Harness {
            f: Fleet::new(cfg, file, 7, at(0)),
            refuse: false,
            events: Vec::new(),
            actions: Vec::new(),
            sent: HashMap::new(),
            resumed: Vec::new(),
            closed: Vec::new(),
            connects: Vec::new(),
        }
    }

    fn add(&mut self, id: &str, t: u64) -> GuestKey {
        let key = self.f.add_guest(id, format!("/run/{id}.sock").into(), Origin::Watched, None, 42, at(t)).unwrap();
        self.pump(t);
        key
    }

    /// Carries out I/O requests and collects outputs at `t`.
    fn pump(&mut self, t: u64) {
        for _ in 0..100 {
            let mut progress = false;
            while let Some(io) = self.f.poll_io() {
                progress = true;
                match io {
                    Io::Connect { key, .. } => {
                        self.connects.push((t, key));
                        if self.refuse {
                            self.f.handle_connect_failed(key, false, at(t));
                        } else {
                            self.f.handle_connected(key, at(t));
                        }
                    }
                    Io::Close { key } => self.closed.push(key),
                    Io::Resume { key } => self.resumed.push(key),
                }
            }
            while let Some(key) = self.f.poll_dirty() {
                let mut buf = [0u8; MAX_WIRE];
                while let Some(n) = self.f.poll_transmit(key, at(t), &mut buf) {
                    self.sent.entry(key).or_default().push(decode(&buf[1..n - 1]).unwrap().body);
                }
            }
            while let Some((_, e)) = self.f.poll_event() {
                progress = true;
                self.events.push((t, e));
            }
            while let Some(a) = self.f.poll_action() {
                self.actions.push(a);
            }
            if !progress {
                break;
            }
        }
    }

    /// Runs timers up to `t`, stepping through every deadline.
    fn advance(&mut self, t: u64) {
        while let Some(d) = self.f.next_timeout().filter(|&d| d <= at(t)) {
            let ms = d.as_millis();
            self.f.handle_timeouts(d);
            self.pump(ms);
        }
        self.f.handle_timeouts(at(t));
        self.pump(t);
    }

    fn feed(&mut self, key: GuestKey, t: u64, bytes: &str) {
        self.f.handle_bytes(key, bytes.as_bytes(), at(t));
        self.pump(t);
    }

    fn last_challenge(&self, key: GuestKey) -> u32 {
        self.sent[&key]
            .iter()
            .rev()
            .find_map(|b| match b {
                Body::Challenge { heartbeat_challenge } => Some(*heartbeat_challenge),
                _ => None,
            })
            .unwrap()
    }

    fn kinds(&self) -> Vec<&'static str> {
        self.events.iter().map(|(_, e)| e.kind()).collect()
    }

    fn count(&self, kind: &str) -> usize {
        self.events.iter().filter(|(_, e)| e.kind() == kind).count()
    }
}

fn init(interval: u32, action: &str) -> String {
    format!(
        "{{\"version\":3,\"revision\":1,\"msg_type\":\"init\",\"sequence\":1,\"invocation_id\":9,\"name\":\"vm\\n1\",\"heartbeat_interval_ms\":{interval},\"vote_secs\":9,\"shutdown_notice_secs\":9,\"suspend_notice_secs\":9,\"resume_notice_secs\":14,\"restart_secs\":601,\"corrective_action\":\"{action}\"}}\n"
    )
}

fn answer(nonce: u32, health: &str) -> String {
    format!(
        "{{\"version\":3,\"revision\":1,\"msg_type\":\"challenge_response\",\"sequence\":2,\"heartbeat_response\":{nonce},\"heartbeat_health\":\"{health}\",\"corrective_action\":\"reboot\",\"log_msg\":\"\"}}\n"
    )
}

fn command_policy() -> GuestSettings {
    let mut commands = BTreeMap::new();
    commands.insert("reboot".to_string(), vec!["virsh".to_string(), "reboot".to_string(), "{guest}".to_string()]);
    commands.insert("log".to_string(), vec!["logger".to_string(), "{guest}".to_string()]);
    GuestSettings { policy: Some(ActionPolicy::Command), commands: Some(commands), ..GuestSettings::default() }
}

#[test]
fn loss_runs_the_guests_action_once_and_an_answer_recovers_it_without_init() {
    let mut h = Harness::new(command_policy());
    let k = h.add("vm-1", 0);
    h.feed(k, 10, &init(1000, "reboot"));
    assert_eq!(h.kinds(), ["connected", "registered"]);
    let n = h.last_challenge(k);
    h.feed(k, 20, &answer(n, "healthy"));
    // silent from t=1000: two misses, loss at t=3000
    h.advance(2999);
    assert_eq!(h.count("heartbeat_lost"), 0);
    h.advance(3010);
    assert_eq!(h.count("heartbeat_lost"), 1);
    assert_eq!(h.actions.len(), 1);
    assert_eq!(argv(&h.actions[0]), ["virsh", "reboot", "vm-1"]);
    // challenges go on; the next answer recovers at once, no init
    h.advance(4010);
    let n = h.last_challenge(k);
    h.feed(k, 4100, &answer(n, "healthy"));
    assert_eq!(h.count("recovered"), 1);
    assert_eq!(h.count("registered"), 1);
    assert_eq!(h.actions.len(), 1, "no second action");
}

#[test]
fn unknown_action_is_acted_on_as_log() {
    let mut h = Harness::new(command_policy());
    let k = h.add("vm-1", 0);
    h.feed(k, 10, &init(1000, "unknown"));
    h.advance(3010);
    assert_eq!(h.count("heartbeat_lost"), 1);
    assert_eq!(h.actions.len(), 1);
    assert_eq!((h.actions[0].action, argv(&h.actions[0])[0].as_str()), (CorrectiveAction::Log, "logger"));
}

#[test]
fn backoff_grows_for_a_guest_that_connects_and_closes_and_resets_only_after_a_healthy_session() {
    let mut h = Harness::new(GuestSettings::default());
    let k = h.add("vm-1", 0);
    // connect, close at once, over and over: the delay doubles (+-20 %) up to 60 s, whatever happened before
    let mut t = 0;
    for _ in 0..8 {
        h.f.handle_closed(k, "connection closed by peer", at(t));
        h.pump(t);
        let before = h.connects.len();
        while h.connects.len() == before {
            t += 10;
            h.advance(t);
        }
    }
    let gaps: Vec<u64> = h.connects.windows(2).map(|w| w[1].0 - w[0].0).collect();
    assert!(gaps[0] >= 800 && gaps[0] <= 1210, "{gaps:?}");
    assert!(gaps[3] >= 6400 && gaps[3] <= 9610, "{gaps:?}");
    assert!(gaps.last().is_some_and(|&g| (48_000..=72_010).contains(&g)), "{gaps:?}");
    // connection events are rate-limited (burst 3, then one per 10 s), the rest counted
    assert!(h.count("disconnected") < 8, "{:?}", h.kinds());
    // a healthy session of 10 s resets the backoff
    h.feed(k, t + 1, &init(1000, "log"));
    let mut now = t + 1;
    for _ in 0..12 {
        let n = h.last_challenge(k);
        h.feed(k, now + 5, &answer(n, "healthy"));
        now += 1000;
        h.advance(now);
    }
    h.f.handle_closed(k, "connection closed by peer", at(now));
    h.pump(now);
    let before = h.connects.len();
    let closed_at = now;
    while h.connects.len() == before {
        now += 10;
        h.advance(now);
    }
    assert!(now - closed_at <= 1210, "reset to 1 s after a healthy session: {}", now - closed_at);
}

#[test]
fn a_flooding_guest_is_throttled_reported_once_per_episode_and_disconnected_if_it_keeps_on() {
    let mut h = Harness::new(GuestSettings::default());
    let k = h.add("flood", 0);
    let garbage = "x".repeat(1000) + "\n";
    // the loop reads while the guest has budget, then reports it over budget
    let mut t = 0;
    let mut read = 0u64;
    while t < 61_000 {
        // as the loop does: read while there is budget (the flooder always has more), then say so
        loop {
            let allowance = h.f.read_allowance(k, at(t));
            if allowance == 0 {
                h.f.handle_over_budget(k, at(t));
                break;
            }
            let n = allowance.min(garbage.len());
            h.f.handle_bytes(k, &garbage.as_bytes()[..n], at(t));
            read += n as u64;
        }
        h.f.handle_timeouts(at(t));
        h.pump(t);
        if h.closed.contains(&k) {
            break;
        }
        t += 50;
    }
    assert!(h.closed.contains(&k), "disconnected after a minute over budget: {:?} {read}", h.kinds());
    assert!((60_000..=61_000).contains(&t), "{t}");
    let rate_limited: Vec<_> =
        h.events.iter().filter(|(_, e)| matches!(e, Event::ProtocolError { error: "rate_limited", .. })).collect();
    assert_eq!(rate_limited.len(), 1, "one report per episode");
    // what it cost: the burst plus 4 KiB per (1 s) interval, not what it sent
    assert!(read <= 8192 + 61 * 4096 + 1000, "{read}");
    let Some((_, Event::Disconnected { reason, .. })) = h.events.iter().rev().find(|(_, e)| e.kind() == "disconnected")
    else {
        panic!("{:?}", h.kinds())
    };
    assert!(reason.contains("byte budget"), "{reason}");
}

#[test]
fn a_throttled_guest_is_resumed_when_its_budget_refills_and_an_honest_burst_is_never_throttled() {
    let mut h = Harness::new(GuestSettings::default());
    let k = h.add("g", 0);
    h.feed(k, 0, &init(1000, "log"));
    // a thawed guest's burst: six answers and an init, about 2 KiB, well within the 8 KiB burst
    assert!(h.f.read_allowance(k, at(1)) >= 2048);
    // use it all up
    let allowance = h.f.read_allowance(k, at(1));
    h.f.handle_bytes(k, "y".repeat(allowance - 1).as_bytes(), at(1));
    h.f.handle_bytes(k, b"\n", at(1));
    assert_eq!(h.f.read_allowance(k, at(1)), 0);
    h.f.handle_over_budget(k, at(1));
    h.pump(1);
    assert_eq!(h.f.read_allowance(k, at(100)), 0, "not read while throttled");
    h.advance(300);
    assert_eq!(h.resumed, [k], "resumed once 1058 bytes are back (at 4 KiB/s: ~259 ms)");
    assert!(h.f.read_allowance(k, at(300)) >= 1058);
    let rate_limited =
        h.events.iter().filter(|(_, e)| matches!(e, Event::ProtocolError { error: "rate_limited", .. })).count();
    assert_eq!(rate_limited, 1);
}

#[test]
fn a_guest_that_never_registers_is_reconnected_after_the_registration_timeout() {
    let mut h = Harness::new(GuestSettings::default());
    let k = h.add("mute", 0);
    h.advance(119_999);
    assert!(h.closed.is_empty());
    h.advance(120_000);
    assert_eq!(h.closed, [k]);
    h.advance(120_001);
    assert_eq!(h.connects.len(), 2, "reconnected at once");
}

#[test]
fn a_removed_guest_is_closed_and_forgotten() {
    let mut h = Harness::new(GuestSettings::default());
    let k = h.add("gone", 0);
    h.f.remove_guest(k, "socket removed", at(5));
    h.pump(5);
    assert_eq!(h.closed, [k]);
    assert!(h.f.is_empty());
    assert_eq!(h.f.next_timeout(), None);
    h.advance(200_000);
    assert_eq!(h.connects.len(), 1);
}

fn action_response(event: &str, result: &str) -> String {
    format!(
        "{{\"version\":3,\"revision\":1,\"msg_type\":\"action_response\",\"sequence\":3,\"invocation_id\":9,\"event_type\":\"{event}\",\"notification_type\":\"revocable\",\"vote_result\":\"{result}\",\"log_msg\":\"why\"}}\n"
    )
}

#[test]
fn a_vote_goes_out_with_the_guests_vote_secs_and_its_answer_comes_back_on_the_ticket() {
    let mut h = Harness::new(GuestSettings::default());
    let k = h.add("v", 0);
    h.feed(k, 0, &init(1000, "log"));
    let started = h.f.start_vote("v", EventType::Stop, None, at(100)).unwrap();
    assert_eq!(started.notification_type, NotificationType::Revocable, "stop can be refused: a vote");
    assert_eq!(started.timeout, Duration::from_secs(9), "vote_secs of its init");
    h.pump(100);
    let Some(Body::ActionNotify(n)) = h.sent[&k].last().cloned() else { panic!("{:?}", h.sent[&k]) };
    assert_eq!((n.timeout_ms, n.invocation_id), (9000, 9));
    assert_eq!(h.f.start_vote("v", EventType::Reboot, None, at(101)), Err(VoteRefusal::Busy));
    h.feed(k, 300, &action_response("stop", "reject"));
    let done = h.f.poll_vote_done().unwrap();
    assert_eq!((done.ticket, done.result, done.log_msg.as_str()), (started.ticket, VoteResult::Reject, "why"));
    assert_eq!(h.count("vote_result"), 1);
    // a notice of a *_end event waits resume_notice_secs
    let s = h.f.start_vote("v", EventType::LiveMigrateEnd, None, at(400)).unwrap();
    assert_eq!((s.notification_type, s.timeout), (NotificationType::Irrevocable, Duration::from_secs(14)));
}

#[test]
fn votes_are_refused_at_once_for_unknown_and_silent_guests_and_end_as_error_on_a_disconnect() {
    let mut h = Harness::new(GuestSettings::default());
    assert_eq!(h.f.start_vote("nobody", EventType::Stop, None, at(0)), Err(VoteRefusal::UnknownGuest));
    let k = h.add("v", 0);
    assert_eq!(
        h.f.start_vote("v", EventType::Stop, None, at(1)),
        Err(VoteRefusal::NotHeartbeating { state: "awaiting_init" })
    );
    h.feed(k, 0, &init(1000, "log"));
    h.advance(3010); // lost
    assert_eq!(
        h.f.start_vote("v", EventType::Stop, None, at(3010)),
        Err(VoteRefusal::NotHeartbeating { state: "lost" })
    );
    let n = h.last_challenge(k);
    h.feed(k, 3100, &answer(n, "healthy"));
    let started = h.f.start_vote("v", EventType::Stop, None, at(3200)).unwrap();
    h.pump(3200);
    // the connection drops before the guest answers: `error`, never a silent proceed
    h.f.handle_closed(k, "connection closed by peer", at(3300));
    h.pump(3300);
    let done = h.f.poll_vote_done().unwrap();
    assert_eq!((done.ticket, done.result), (started.ticket, VoteResult::Error));
}

#[test]
fn a_silent_vote_times_out_as_timeout() {
    let mut h = Harness::new(GuestSettings::default());
    let k = h.add("v", 0);
    h.feed(k, 0, &init(1000, "log"));
    h.f.start_vote("v", EventType::Pause, None, at(100)).unwrap();
    // keep it heartbeating, but never answer the vote
    for t in (1000..=9000).step_by(1000) {
        h.advance(t);
        let n = h.last_challenge(k);
        h.feed(k, t + 5, &answer(n, "healthy"));
    }
    h.advance(9200);
    let done = h.f.poll_vote_done().unwrap();
    assert_eq!(done.result, VoteResult::Timeout);
}

#[test]
fn a_maintenance_window_withholds_a_loss_and_reports_it_when_it_expires() {
    let mut h = Harness::new(command_policy());
    let k = h.add("m", 0);
    h.feed(k, 0, &init(1000, "reboot"));
    assert_eq!(h.f.set_maintenance("m", 10, "kernel upgrade", at(100)), Some(Duration::from_secs(10)));
    assert!(h.f.set_maintenance("nobody", 10, "", at(100)).is_none());
    h.pump(100);
    h.advance(5000); // lost at 3000, inside the window
    assert_eq!(h.count("heartbeat_lost"), 0, "not reported during maintenance");
    assert!(h.actions.is_empty(), "and not acted on");
    let st = h.f.snapshot(at(5000));
    assert_eq!(st[0].maintenance_reason.as_deref(), Some("kernel upgrade"));
    assert_eq!(st[0].maintenance_left_ms, Some(5100));
    h.advance(10_100);
    assert_eq!(h.count("heartbeat_lost"), 1, "still lost when the window expires: reported then");
    assert_eq!(h.actions.len(), 1);
    let states: Vec<&str> = h
        .events
        .iter()
        .filter_map(|(_, e)| if let Event::Maintenance { state, .. } = e { Some(*state) } else { None })
        .collect();
    assert_eq!(states, ["started", "expired"]);
    // a window longer than a day is cut to a day
    assert_eq!(h.f.set_maintenance("m", 10 * 86_400, "", at(20_000)), Some(MAX_MAINTENANCE));
    assert!(h.f.end_maintenance("m", at(20_001)));
}

#[test]
fn a_guest_that_recovers_during_maintenance_is_never_reported_and_reporting_off_withholds_too() {
    let mut h = Harness::new(GuestSettings::default());
    let k = h.add("m", 0);
    h.feed(k, 0, &init(1000, "log"));
    h.f.set_maintenance("m", 60, "", at(0));
    h.advance(3010); // lost inside the window
    for t in (3020..61_000).step_by(1000) {
        let n = h.last_challenge(k);
        h.feed(k, t, &answer(n, "healthy"));
        h.advance(t + 990);
    }
    assert_eq!(h.count("heartbeat_lost"), 0, "recovered before the window ended: never reported");
    // host-wide reporting off: withheld; back on while still lost: reported
    assert!(h.f.set_reporting(None, false, at(61_000)));
    h.advance(65_000);
    assert_eq!(h.count("heartbeat_lost"), 0);
    assert!(h.f.set_reporting(None, true, at(65_000)));
    h.pump(65_000);
    assert_eq!(h.count("heartbeat_lost"), 1);
    assert!(!h.f.set_reporting(Some("nobody"), false, at(65_000)));
    assert_eq!(h.f.counters().0.withheld_faults, 2);
}

#[test]
fn a_paused_vm_is_never_lost_and_is_challenged_afresh_when_it_resumes() {
    let mut h = Harness::new(command_policy());
    let k = h.add("p", 0);
    h.feed(k, 0, &init(1000, "reboot"));
    assert!(h.f.handle_lifecycle("p", Lifecycle::Paused, at(500)));
    h.advance(30_000);
    assert_eq!(h.count("heartbeat_lost"), 0, "no loss while paused");
    assert!(h.actions.is_empty(), "no corrective action for a paused VM");
    assert_eq!(h.f.snapshot(at(30_000))[0].state, "paused");
    h.f.handle_lifecycle("p", Lifecycle::Resumed, at(30_000));
    h.pump(30_000);
    let n = h.last_challenge(k);
    h.feed(k, 30_100, &answer(n, "healthy"));
    assert_eq!(h.count("recovered"), 0, "a withheld loss needs no recovery notice");
    // a hang after the resume is a loss again, within the bound
    h.advance(33_010);
    assert_eq!(h.count("heartbeat_lost"), 1);
    assert_eq!(h.kinds().iter().filter(|k| ["paused", "resumed"].contains(k)).count(), 2);
}

#[test]
fn a_reboot_is_no_loss_unless_no_init_comes_within_restart_secs() {
    let mut h = Harness::new(command_policy());
    let k = h.add("r", 0);
    h.feed(k, 0, &init(1000, "reboot"));
    h.f.handle_lifecycle("r", Lifecycle::Rebooting, at(100));
    h.advance(20_000);
    assert_eq!(h.count("heartbeat_lost"), 0);
    h.feed(k, 20_000, &init(1000, "reboot"));
    assert_eq!(h.count("registered"), 2);
    let n = h.last_challenge(k);
    h.feed(k, 20_010, &answer(n, "healthy"));
    assert_eq!(h.f.snapshot(at(20_010))[0].state, "heartbeating");
    assert_eq!(h.count("recovered"), 0, "nothing was reported, so nothing recovers");
    // a reboot that never comes back: lost after restart_secs (601, capped by the host's default 600), with the
    // reason
    h.f.handle_lifecycle("r", Lifecycle::Rebooting, at(30_000));
    h.advance(629_000);
    assert_eq!(h.count("heartbeat_lost"), 0, "not before restart_secs");
    h.advance(631_100);
    let lost: Vec<_> = h.events.iter().filter(|(_, e)| e.kind() == "heartbeat_lost").collect();
    assert_eq!(lost.len(), 1, "{:?}", h.events.iter().map(|(t, e)| (t, e.kind())).collect::<Vec<_>>());
    assert!(matches!(&lost[0].1, Event::HeartbeatLost { reason: Some(r), .. } if r.contains("restart_secs")));
    assert_eq!(h.actions.len(), 1);
}

#[test]
fn waits_a_guest_chooses_are_capped_by_the_host_and_the_status_says_the_capped_values() {
    // a hostile or broken init: votes that would wait 46 days, a reboot that could take 136 years
    let absurd = "{\"version\":3,\"revision\":1,\"msg_type\":\"init\",\"sequence\":1,\"invocation_id\":9,\"name\":\"x\",\"heartbeat_interval_ms\":1000,\"vote_secs\":4000000,\"shutdown_notice_secs\":4000000,\"suspend_notice_secs\":4000000,\"resume_notice_secs\":4000000,\"restart_secs\":4294967295,\"corrective_action\":\"log\"}\n";
    let mut h = Harness::new(GuestSettings::default());
    let k = h.add("g", 0);
    h.feed(k, 0, absurd);
    let reg = h.events.iter().find_map(|(_, e)| match e {
        Event::Registered { vote_secs, restart_secs, .. } => Some((*vote_secs, *restart_secs)),
        _ => None,
    });
    assert_eq!(reg, Some((60, 600)), "the registered event says what the host will use");
    let st = &h.f.snapshot(at(0))[0];
    assert_eq!((st.vote_secs, st.restart_secs), (Some(60), Some(600)));
    let started = h.f.start_vote("g", EventType::Stop, None, at(100)).unwrap();
    assert_eq!(started.timeout, Duration::from_secs(60));
    assert_eq!(h.f.start_vote("g", EventType::Stop, None, at(101)), Err(VoteRefusal::Busy), "refused at once");
    // the guest never answers: the vote ends at the cap, not in 46 days
    h.advance(60_100);
    let done = h.f.poll_vote_done().unwrap();
    assert_eq!(done.result, VoteResult::Timeout);
    // (the silent guest was lost meanwhile; it answers again) a hang after a reboot is reported within the cap
    let n = h.last_challenge(k);
    h.feed(k, 60_200, &answer(n, "healthy"));
    h.f.handle_lifecycle("g", Lifecycle::Rebooting, at(70_000));
    h.events.clear();
    h.advance(670_100);
    let lost = h.events.iter().filter(|(_, e)| matches!(e, Event::HeartbeatLost { reason: Some(_), .. })).count();
    assert_eq!(lost, 1, "{:?}", h.kinds());
    // an operator may set other caps
    let settings = GuestSettings { max_notice_secs: Some(5), max_restart_secs: Some(30), ..GuestSettings::default() };
    let mut h = Harness::new(settings);
    let k = h.add("g", 0);
    h.feed(k, 0, absurd);
    let st = &h.f.snapshot(at(0))[0];
    assert_eq!((st.vote_secs, st.restart_secs), (Some(5), Some(30)));
}

#[test]
fn a_stopped_vm_is_never_lost_and_a_crash_is_reported_at_once() {
    // no minimum uptime here (its own test): the crash comes a second after the start
    let mut h = Harness::new(GuestSettings { min_uptime_secs: Some(0), ..command_policy() });
    let k = h.add("s", 0);
    h.feed(k, 0, &init(1000, "reboot"));
    h.f.handle_lifecycle("s", Lifecycle::Stopped, at(100));
    h.advance(60_000);
    assert_eq!(h.count("heartbeat_lost"), 0);
    assert!(h.actions.is_empty());
    h.f.handle_lifecycle("s", Lifecycle::Started, at(60_000));
    h.feed(k, 60_100, &init(1000, "reboot"));
    h.f.handle_lifecycle("s", Lifecycle::Crashed, at(61_000));
    h.pump(61_000);
    assert_eq!(h.count("crashed"), 1);
    assert_eq!(h.actions.len(), 1, "a crash gets the guest's corrective action at once");
    assert_eq!(h.actions[0].trigger, "crashed");
    h.advance(90_000);
    assert_eq!(h.count("heartbeat_lost"), 0, "no loss on top of the crash");
    assert!(!h.f.handle_lifecycle("nobody", Lifecycle::Paused, at(90_000)));
}

#[test]
fn a_port_open_without_init_is_reported_not_established_once() {
    let mut h = Harness::new(GuestSettings::default());
    h.add("mute", 0);
    h.advance(120_000);
    h.advance(240_100);
    assert_eq!(h.count("not_established"), 1, "{:?}", h.kinds());
}

#[test]
fn a_guest_entry_stays_within_its_memory_budget() {
    // issue #20: 2 KiB per guest for the whole process; the fleet's entry is the largest part (672 B before what
    // only some guests need moved to `Seldom`)
    assert!(std::mem::size_of::<super::Guest>() <= 568, "{} B", std::mem::size_of::<super::Guest>());
    println!(
        "Guest {} B, Monitor {} B, LineFramer {} B, ByteBudget {} B, RateLimit {} B, Policy {} B",
        std::mem::size_of::<super::Guest>(),
        std::mem::size_of::<crate::fleet::GuestMonitor>(),
        std::mem::size_of::<vigil_core::LineFramer>(),
        std::mem::size_of::<crate::fleet::bucket::ByteBudget>(),
        std::mem::size_of::<RateLimit>(),
        std::mem::size_of::<crate::config::Policy>(),
    );
}

#[test]
fn what_only_some_guests_need_is_made_on_first_use_and_a_quiet_guest_never_needs_it() {
    let mut h = Harness::new(GuestSettings::default());
    let k = h.add("quiet", 0);
    h.feed(k, 10, &init(1000, "reboot"));
    for t in 1..=5u64 {
        h.advance(t * 1000 + 10);
        let n = h.last_challenge(k);
        h.feed(k, t * 1000 + 20, &answer(n, "healthy"));
    }
    let g = &h.f.guests[k];
    assert_eq!(g.monitor.stats().heartbeats, 5);
    assert!(g.seldom.is_none(), "connected, registered, five heartbeats: nothing seldom was needed");
    assert_eq!(g.monitor.registration().map(|r| (r.init.name.as_str(), r.interval.as_millis())), Some(("vm\n1", 1000)));
    // what only some guests need reads as its default before it exists...
    let s = h.f.status("quiet", at(5100)).unwrap();
    assert_eq!((s.tx_dropped, s.rate_limited, s.maintenance_reason), (0, 0, None));
    // ...and is made when needed
    h.f.handle_tx_dropped(k);
    h.f.set_maintenance("quiet", 60, "patching", at(5200)).unwrap();
    let s = h.f.status("quiet", at(5300)).unwrap();
    assert_eq!(
        (s.tx_dropped, s.maintenance_reason.as_deref(), s.maintenance_left_ms),
        (1, Some("patching"), Some(59_900))
    );
    assert!(h.f.guests[k].seldom.is_some());
}

#[test]
fn guests_are_found_by_id_through_the_index_also_when_two_sockets_share_an_id() {
    let mut h = Harness::new(GuestSettings::default());
    let a = h.f.add_guest("same", "/a/same.sock".into(), Origin::Watched, None, 1, at(0)).unwrap();
    let b = h.f.add_guest("same", "/b/same.sock".into(), Origin::Watched, None, 2, at(0)).unwrap();
    let other = h.add("other", 0);
    assert_eq!((h.f.find("same"), h.f.find("other"), h.f.find("nobody")), (Some(a), Some(other), None));
    h.f.remove_guest(a, "gone", at(1));
    assert_eq!(h.f.find("same"), Some(b), "the other socket with that id takes its place");
    assert_eq!(h.f.status("same", at(1)).map(|s| s.socket), Some("/b/same.sock".to_string()));
    h.f.remove_guest(b, "gone", at(2));
    assert_eq!(h.f.find("same"), None);
}

#[test]
fn a_guest_whose_socket_goes_away_while_lost_is_removed_with_its_open_fault() {
    let mut h = Harness::new(GuestSettings::default());
    let k = h.add("gone", 0);
    h.feed(k, 0, &init(1000, "reboot"));
    h.advance(3000);
    assert_eq!(h.count("heartbeat_lost"), 1);
    h.f.remove_guest(k, "socket file gone", at(3500));
    h.pump(3500);
    let removed = h.events.iter().find_map(|(_, e)| match e {
        Event::Removed { open_fault } => Some(open_fault.clone()),
        _ => None,
    });
    assert_eq!(removed, Some(Some("heartbeat_lost".to_string())), "upstream can close the alert: {:?}", h.kinds());
}

/// Wake-ups of a loop that sleeps until the fleet's next deadline, over `from..to` ms, answering every challenge.
fn wakeups(h: &mut Harness, keys: &[GuestKey], from: u64, to: u64) -> usize {
    let mut wakes = 0;
    let mut t = from;
    while let Some(d) = h.f.next_timeout().filter(|&d| d <= at(to)) {
        t = t.max(d.as_millis());
        wakes += 1;
        h.f.handle_timeouts(at(t));
        h.pump(t);
        for &k in keys {
            if h.sent.get(&k).is_some_and(|s| matches!(s.last(), Some(Body::Challenge { .. }))) {
                let n = h.last_challenge(k);
                h.sent.get_mut(&k).map(Vec::clear);
                h.feed(k, t, &answer(n, "healthy"));
            }
        }
    }
    wakes
}

#[test]
fn coalesced_deadlines_serve_many_guests_per_wake_up_and_no_verdict_changes() {
    // 1,000 guests registering at every millisecond of a second, 1 s interval, random phases (no runs of neighbours)
    let run = |coalesce_ms| {
        let settings =
            GuestSettings { coalesce_ms: Some(coalesce_ms), spread_phase: Some(true), ..GuestSettings::default() };
        let mut h = Harness::with_fleet(FleetConfig { phase_run: 0, ..FleetConfig::default() }, settings);
        let keys: Vec<GuestKey> = (0..1000).map(|i| h.add(&format!("g{i}"), i)).collect();
        for (i, &k) in keys.iter().enumerate() {
            h.feed(k, i as u64, &init(1000, "reboot"));
        }
        let wakes = wakeups(&mut h, &keys, 1000, 11_000);
        assert_eq!(h.count("heartbeat_lost"), 0, "{:?}", h.kinds());
        wakes
    };
    let coalesced = run(10);
    // at most one wake-up per 10 ms step (plus the few deadlines of the registration second)
    assert!(coalesced <= 10 * 100 + 100, "{coalesced} wake-ups in 10 s");
    // the same without coalescing: a wake-up per distinct millisecond phase
    let exact = run(0);
    println!("wake-ups over 10 s of 1,000 guests: exact {exact}, coalesced {coalesced}");
    assert!(exact >= 4 * coalesced, "exact {exact}, coalesced {coalesced}");
}

#[test]
fn neighbours_in_the_fleet_share_a_place_in_the_interval_and_are_challenged_in_one_pass_in_their_order() {
    // as vigild runs: spread phases, 10 ms coalescing, runs of PHASE_RUN neighbours; guests register in a
    // scrambled order over a second, each answering every challenge
    let settings = GuestSettings { coalesce_ms: Some(10), spread_phase: Some(true), ..GuestSettings::default() };
    let mut h = Harness::new(settings);
    let n = 8 * PHASE_RUN;
    let keys: Vec<GuestKey> = (0..n).map(|i| h.add(&format!("g{i}"), 0)).collect();
    for i in 0..n {
        let k = keys[(i * 37) % n];
        h.feed(k, 1 + (i as u64 * 997) % 1000, &init(1000, "reboot"));
    }
    h.pump(1000);
    // deadlines move to their places by at most half an interval per interval: there after two
    wakeups(&mut h, &keys, 1000, 4_000);
    let wakes = wakeups(&mut h, &keys, 4_000, 6_000);
    assert_eq!(h.count("heartbeat_lost"), 0, "{:?}", h.kinds());
    // every guest's deadline, two seconds in: a run shares one, different runs have different ones
    let deadline = |k: GuestKey| h.f.monitor(k).and_then(|m| m.poll_timeout()).map(|t| t.as_millis() % 1000);
    for run in keys.chunks(PHASE_RUN) {
        let places: Vec<_> = run.iter().map(|&k| deadline(k)).collect();
        assert!(places.iter().all(|p| p.is_some() && *p == places[0]), "one run, one place: {places:?}");
    }
    let mut firsts: Vec<_> = keys.chunks(PHASE_RUN).map(|run| deadline(run[0])).collect();
    firsts.sort();
    firsts.dedup();
    assert_eq!(firsts.len(), 8, "each run in its own place: {firsts:?}");
    assert!(wakes <= 2 * 8 + 1, "a wake-up per run per interval: {wakes} in two intervals");
    // a pass challenges the run front to back
    let due = h.f.next_timeout().unwrap();
    h.sent.clear();
    h.f.handle_timeouts(due);
    let mut order = Vec::new();
    while let Some(k) = h.f.poll_dirty() {
        order.push(k);
    }
    assert_eq!(order.len(), PHASE_RUN, "{order:?}");
    assert!(order.windows(2).all(|w| w[0] < w[1]), "in the fleet's order: {order:?}");
}

#[test]
fn with_coalescing_a_hung_guest_is_lost_exactly_two_intervals_after_its_last_answered_deadline() {
    let mut h = Harness::new(GuestSettings { coalesce_ms: Some(10), ..GuestSettings::default() });
    let k = h.add("hang", 0);
    h.feed(k, 3, &init(1000, "reboot"));
    let n = h.last_challenge(k);
    h.feed(k, 4, &answer(n, "healthy"));
    // deadlines at 1010, 2010, 3010: the challenges of 1010 and 2010 go unanswered; loss at 3010
    h.advance(3009);
    assert_eq!(h.count("heartbeat_lost"), 0);
    h.advance(3010);
    let lost: Vec<u64> = h.events.iter().filter(|(_, e)| e.kind() == "heartbeat_lost").map(|(t, _)| *t).collect();
    assert_eq!(lost, [3010]);
}

fn argv(a: &ActionRequest) -> &[String] {
    match &a.via {
        Via::Command(argv) => argv,
        Via::Libvirt(l) => panic!("a libvirt action {l:?} where a command was expected"),
    }
}

fn libvirt_policy(min_uptime_secs: u64) -> GuestSettings {
    GuestSettings {
        policy: Some(ActionPolicy::Libvirt),
        min_uptime_secs: Some(min_uptime_secs),
        second_opinion_secs: Some(5),
        ..GuestSettings::default()
    }
}

/// Answers the guest's latest challenge at `t`, then stays silent until `t + 4000` (a loss on a 1 s interval).
fn hang_after_answer(h: &mut Harness, k: GuestKey, t: u64) {
    h.advance(t);
    let n = h.last_challenge(k);
    h.feed(k, t + 10, &answer(n, "healthy"));
    h.advance(t + 4000);
}

#[test]
fn libvirt_actions_are_budgeted_three_per_window_suppressed_once_and_a_held_one_is_given_back() {
    let mut h = Harness::new(libvirt_policy(0));
    let k = h.add("vm-1", 0);
    h.feed(k, 10, &init(1000, "reboot"));
    for round in 0..5 {
        hang_after_answer(&mut h, k, 1000 + round * 5000);
    }
    assert_eq!(h.count("heartbeat_lost"), 5);
    assert_eq!(h.actions.len(), 3, "three an hour");
    let Via::Libvirt(how) = h.actions[0].via else { panic!("{:?}", h.actions[0].via) };
    assert_eq!(how.op, LibvirtOp::Reset, "a reboot is a reset by default: a hung guest ignores ACPI");
    assert_eq!(how.second_opinion, Some(std::time::Duration::from_secs(5)));
    assert!(how.evidence);
    assert_eq!(h.count("action_suppressed"), 1, "said once, not at every loss");
    let suppressed = h.events.iter().find(|(_, e)| e.kind() == "action_suppressed").unwrap();
    match &suppressed.1 {
        Event::ActionSuppressed { why, budget, allowed_in_secs, .. } => {
            assert_eq!((*why, budget.as_str()), ("budget", "3 per 3600 s"));
            // the first action (t ~ 4 s) leaves the window at ~3604 s; the refusal came at ~19 s
            let s = allowed_in_secs.unwrap();
            assert!((3580..=3590).contains(&s), "{s}");
        }
        e => panic!("{e:?}"),
    }
    // the second opinion held the last one: it is given back, and the next loss acts
    let held = Event::ActionResult {
        trigger: "heartbeat_lost",
        corrective_action: "reboot",
        operation: "reset",
        result: "held",
        reason: None,
        elapsed_ms: 5000,
        os_activity: Some(true),
        activity: None,
        evidence: Vec::new(),
    };
    h.f.handle_action_result("vm-1", held, true);
    hang_after_answer(&mut h, k, 30_000);
    assert_eq!(h.actions.len(), 4);
}

#[test]
fn no_libvirt_action_before_the_minimum_uptime_after_a_start() {
    let mut h = Harness::new(libvirt_policy(120));
    h.f.handle_lifecycle("vm-1", Lifecycle::Started, at(0)); // before its socket exists
    let k = h.add("vm-1", 0);
    h.feed(k, 10, &init(1000, "stop"));
    hang_after_answer(&mut h, k, 1000);
    assert_eq!(h.count("heartbeat_lost"), 1);
    assert!(h.actions.is_empty());
    match &h.events.iter().find(|(_, e)| e.kind() == "action_suppressed").unwrap().1 {
        Event::ActionSuppressed { why, allowed_in_secs, min_uptime_secs, .. } => {
            assert_eq!((*why, *min_uptime_secs), ("min_uptime", 120));
            assert!((110..=120).contains(&allowed_in_secs.unwrap()));
        }
        e => panic!("{e:?}"),
    }
    // silent so long that vigild reconnected: the guest registers again, then hangs after 120 s of uptime
    h.advance(125_000);
    h.feed(k, 125_000, &init(1000, "stop"));
    hang_after_answer(&mut h, k, 126_000);
    assert_eq!(h.actions.len(), 1, "{:?}", h.kinds());
    let Via::Libvirt(how) = h.actions[0].via else { panic!() };
    assert_eq!(how.op, LibvirtOp::Stop);
}

#[test]
fn queues_give_back_what_a_storm_grew() {
    // issue #20: 2,000 guests connecting before anything is polled fill the event queue; once drained, it keeps
    // no more than a small capacity (a storm of 10,000 would otherwise hold ~3 MiB for the life of the process)
    let mut h = Harness::new(GuestSettings::default());
    for i in 0..2000 {
        h.f.add_guest(&format!("g{i}"), format!("/run/g{i}.sock").into(), Origin::Watched, None, 42, at(0)).unwrap();
    }
    while let Some(io) = h.f.poll_io() {
        if let Io::Connect { key, .. } = io {
            h.f.handle_connected(key, at(0));
        }
    }
    assert!(h.f.events.len() >= 2000, "{} events queued", h.f.events.len());
    h.pump(0);
    assert!(h.events.len() >= 2000);
    assert!(h.f.events.capacity() <= 256 && h.f.io.capacity() <= 256, "{}", h.f.events.capacity());
}
