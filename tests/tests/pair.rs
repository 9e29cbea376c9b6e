//! A host Monitor and a guest Agent talking in memory on a virtual clock: the protocol end to end.
#![allow(clippy::unwrap_used, clippy::panic)]

use vigil_core::*;
use vigil_tests::Pair;

fn secs(s: u64) -> Instant {
    Instant::from_secs(s)
}

fn agent(interval_ms: u32) -> AgentConfig {
    AgentConfig { name: bounded("vm-1"), heartbeat_interval_ms: interval_ms, ..AgentConfig::default() }
}

#[test]
fn an_hour_of_healthy_heartbeats_without_a_fault() {
    let mut p = Pair::new(MonitorConfig::default(), agent(1000), 1);
    p.to_guest().latency = Duration::from_millis(3);
    p.to_host().latency = Duration::from_millis(3);
    p.to_host().jitter = Duration::from_millis(50);
    p.to_guest().split = true;
    p.to_host().split = true;
    p.run_until(secs(3600));
    let registered = p.host_events.iter().filter(|(_, e)| matches!(e, MonitorEvent::Registered(_))).count();
    assert_eq!(registered, 1);
    assert!(p.faults().is_empty(), "{:?}", p.faults());
    let hb = p.monitor.stats().heartbeats;
    assert!((3595..=3601).contains(&hb), "{hb} heartbeats in an hour at 1 s");
    assert!(p.monitor.stats().max_rtt <= Duration::from_millis(56));
    assert_eq!(p.agent.state(), AgentState::Registered);
}

#[test]
fn a_hung_guest_is_declared_lost_within_two_intervals_and_recovers_when_it_returns() {
    let mut p = Pair::new(MonitorConfig::default(), agent(1000), 2);
    p.run_until(secs(10));
    p.to_host().mute = true;
    let hung_at = p.now;
    p.run_until(secs(20));
    let lost: Vec<_> = p.host_events.iter().filter(|(_, e)| matches!(e, MonitorEvent::HeartbeatLost { .. })).collect();
    assert_eq!(lost.len(), 1, "reported once: {lost:?}");
    let delay = lost[0].0 - hung_at;
    // interval x (threshold + 1), plus up to one interval for the challenge in flight when it hung
    assert!(delay <= Duration::from_millis(3000), "loss after {delay:?}");
    // the guest comes back: it re-registers on its own (no challenges for 5 s) and the host sees recovery
    p.to_host().mute = false;
    p.run_until(secs(40));
    assert!(p.host_events.iter().any(|(_, e)| matches!(e, MonitorEvent::Recovered)), "{:?}", p.host_events);
    assert_eq!(p.monitor.state(), MonitorState::Heartbeating);
    assert_eq!(p.monitor.fault(), None);
}

#[test]
fn unhealthy_then_recovered() {
    let mut p = Pair::new(MonitorConfig::default(), agent(500), 3);
    p.run_until(secs(5));
    p.agent.set_health(Health::Unhealthy, CorrectiveAction::Reboot, "db replica lagging");
    p.run_until(secs(10));
    p.agent.set_health(Health::Healthy, CorrectiveAction::None, "");
    p.run_until(secs(15));
    let kinds: Vec<_> = p.faults().into_iter().map(|(_, e)| e.clone()).collect();
    assert_eq!(
        kinds,
        [
            MonitorEvent::Unhealthy {
                corrective_action: CorrectiveAction::Reboot,
                log_msg: bounded("db replica lagging")
            },
            MonitorEvent::Recovered
        ]
    );
}

#[test]
fn a_vote_rejected_by_the_guest_reaches_the_host() {
    let mut p = Pair::new(MonitorConfig::default(), agent(1000), 4);
    p.on_agent_event = Some(Box::new(|agent, e| {
        if let AgentEvent::ActionRequest { notify, .. } = e {
            if notify.event_type == EventType::LiveMigrateBegin {
                agent.answer_action(VoteResult::Reject, "standby not synced").unwrap();
            }
        }
    }));
    p.run_until(secs(3));
    p.monitor.notify(p.now, EventType::LiveMigrateBegin, NotificationType::Revocable, Duration::from_secs(9)).unwrap();
    p.run_until(secs(5));
    assert!(p.host_events.iter().any(|(_, e)| matches!(e,
        MonitorEvent::VoteResult { result: VoteResult::Reject, log_msg, .. } if log_msg == "standby not synced")));
    // a notice nobody handles: the agent answers `timeout` itself one second before the host's deadline, so the
    // host learns that nobody decided (the reference guest does the same); it is never turned into "complete"
    let asked = p.now;
    p.monitor.notify(p.now, EventType::LiveMigrateEnd, NotificationType::Irrevocable, Duration::from_secs(3)).unwrap();
    p.run_until(secs(10));
    let answer = p
        .host_events
        .iter()
        .find(|(_, e)| matches!(e, MonitorEvent::VoteResult { event_type: EventType::LiveMigrateEnd, .. }));
    let Some((when, MonitorEvent::VoteResult { result, .. })) = answer else { panic!("{:?}", p.host_events) };
    assert_eq!(*result, VoteResult::Timeout);
    assert!(
        *when < asked + Duration::from_secs(3),
        "the guest's own timeout answer arrives before the host's deadline"
    );
}

#[test]
fn a_silent_guest_vote_times_out_as_timeout_not_as_proceed() {
    let mut p = Pair::new(MonitorConfig::default(), agent(1000), 5);
    p.run_until(secs(3));
    p.to_host().mute = true;
    p.monitor.notify(p.now, EventType::Stop, NotificationType::Revocable, Duration::from_millis(1500)).unwrap();
    p.run_until(secs(10));
    let results: Vec<_> = p
        .host_events
        .iter()
        .filter_map(|(t, e)| match e {
            MonitorEvent::VoteResult { result, .. } => Some((*t, *result)),
            _ => None,
        })
        .collect();
    assert_eq!(results, [(Instant::from_millis(4500), VoteResult::Timeout)]);
}

#[test]
fn graceful_exit_is_no_fault() {
    let mut p = Pair::new(MonitorConfig::default(), agent(1000), 6);
    p.run_until(secs(3));
    p.agent.shutdown("Exiting...");
    p.run_until(secs(600));
    let kinds: Vec<_> = p.faults().into_iter().map(|(_, e)| e.clone()).collect();
    assert_eq!(kinds, [MonitorEvent::Deregistered { log_msg: bounded("Exiting...") }]);
}

#[test]
fn a_corrupting_link_never_wedges_the_pair() {
    // Byte corruption is not something virtio-serial does, but a broken guest can look like it: the pair must
    // stay live, count errors, and keep heartbeating most of the time.
    let mut p = Pair::new(MonitorConfig::default(), agent(1000), 7);
    p.to_host().corrupt = 0.0005;
    p.to_guest().corrupt = 0.0005;
    p.to_host().split = true;
    p.run_until(secs(600));
    let s = *p.monitor.stats();
    assert!(s.heartbeats > 300, "{s:?}");
    assert!(s.protocol_errors > 0, "{s:?}");
    // back to a clean link: no more faults from here on
    p.to_host().corrupt = 0.0;
    p.to_guest().corrupt = 0.0;
    p.run_until(secs(620));
    let before = p.host_events.len();
    p.run_until(secs(1200));
    let after: Vec<_> = p.host_events[before..]
        .iter()
        .filter(|(_, e)| matches!(e, MonitorEvent::HeartbeatLost { .. } | MonitorEvent::ProtocolError(_)))
        .collect();
    assert!(after.is_empty(), "{after:?}");
    assert_eq!(p.monitor.state(), MonitorState::Heartbeating);
}
