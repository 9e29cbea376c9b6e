extern crate std;
use super::*;
use std::format;
use std::string::String;
use std::vec::Vec;

fn at(ms: u64) -> Instant {
    Instant::from_millis(ms)
}

struct Ids(u32);
impl IdSource for Ids {
    fn next_id(&mut self) -> u32 {
        self.0 += 1;
        self.0
    }
}

struct Script {
    a: Agent<Ids>,
}

impl Script {
    fn new() -> Self {
        let config = AgentConfig { name: bounded("vm-1"), ..AgentConfig::default() };
        Script { a: Agent::new(config, Ids(1000), at(0)) }
    }
    fn feed(&mut self, t: u64, s: &str) -> Vec<AgentEvent> {
        let mut input = s.as_bytes();
        let mut ev = Vec::new();
        while !input.is_empty() {
            let n = self.a.handle_bytes(at(t), input);
            input = &input[n..];
            while let Some(e) = self.a.poll_event() {
                ev.push(e);
            }
        }
        ev
    }
    fn advance(&mut self, t: u64) -> Vec<AgentEvent> {
        let mut ev = Vec::new();
        for _ in 0..100 {
            match self.a.poll_timeout() {
                Some(d) if d <= at(t) => self.a.handle_timeout(d),
                _ => break,
            }
            while let Some(e) = self.a.poll_event() {
                ev.push(e);
            }
        }
        ev
    }
    fn sent(&mut self, t: u64) -> Vec<Body> {
        let mut out = Vec::new();
        let mut buf = [0u8; MAX_WIRE];
        while let Some(n) = self.a.poll_transmit(at(t), &mut buf) {
            out.push(crate::decode(&buf[1..n - 1]).unwrap().body);
        }
        out
    }
    fn registered(&mut self) -> u32 {
        let Body::Init(init) = &self.sent(0)[0] else { panic!() };
        let id = init.invocation_id;
        assert_eq!(self.feed(1, &ack(id)), [AgentEvent::Registered { invocation_id: id }]);
        id
    }
}

fn ack(id: u32) -> String {
    format!(
        "\n{{\"version\": 3, \"revision\": 1, \"sequence\": 1, \"msg_type\": \"init_ack\", \"invocation_id\": {id}}}\n"
    )
}
fn challenge(n: u32) -> String {
    format!("\n{{\"version\": 3, \"revision\": 1, \"sequence\": 1, \"msg_type\": \"challenge\", \"heartbeat_challenge\": {n}}}\n")
}
fn notify(id: u32, event: &str, kind: &str, timeout: u32) -> String {
    format!("{{\"version\":3,\"revision\":1,\"sequence\":9,\"msg_type\":\"action_notify\",\"invocation_id\":{id},\"event_type\":\"{event}\",\"notification_type\":\"{kind}\",\"timeout_ms\":{timeout}}}\n")
}

#[test]
fn registers_at_once_then_every_5s_with_a_new_id_and_accepts_the_previous_ids_ack() {
    let mut s = Script::new();
    let sent = s.sent(0);
    let [Body::Init(first)] = sent.as_slice() else { panic!("{sent:?}") };
    assert_eq!(first.name.as_str(), "vm-1");
    assert_eq!(first.corrective_action, CorrectiveAction::Reboot);
    assert!(s.advance(4999).is_empty());
    assert!(s.sent(4999).is_empty());
    s.advance(5000);
    let sent = s.sent(5000);
    let [Body::Init(second)] = sent.as_slice() else { panic!() };
    assert_ne!(second.invocation_id, first.invocation_id);
    // a stranger's ack is refused
    assert!(matches!(s.feed(5001, &ack(1)).as_slice(), [AgentEvent::ProtocolError(_)]));
    // the ack of the previous attempt arrives late: accepted
    assert_eq!(
        s.feed(5002, &ack(first.invocation_id)),
        [AgentEvent::Registered { invocation_id: first.invocation_id }]
    );
    assert_eq!(s.a.state(), AgentState::Registered);
    assert_eq!(s.a.invocation_id(), first.invocation_id);
}

#[test]
fn a_healthy_spell_ends_the_holdoff() {
    let mut s = Script::new();
    s.registered();
    let answer = |s: &mut Script, t: u64, n: u32| {
        s.feed(t, &challenge(n));
        let sent = s.sent(t);
        let [Body::ChallengeResponse(r)] = sent.as_slice() else { panic!() };
        (r.heartbeat_health, r.corrective_action)
    };
    s.a.set_health(Health::Unhealthy, CorrectiveAction::Reboot, "down");
    assert_eq!(answer(&mut s, 100, 1), (Health::Unhealthy, CorrectiveAction::Reboot));
    assert_eq!(answer(&mut s, 1100, 2), (Health::Unhealthy, CorrectiveAction::None), "holdoff");
    s.a.set_health(Health::Healthy, CorrectiveAction::None, "");
    assert_eq!(answer(&mut s, 2100, 3).0, Health::Healthy);
    // a second episode within 60 s asks for its action again
    s.a.set_health(Health::Unhealthy, CorrectiveAction::Reboot, "down again");
    assert_eq!(answer(&mut s, 3100, 4), (Health::Unhealthy, CorrectiveAction::Reboot));
}

#[test]
fn a_late_ack_of_the_other_attempt_is_adopted_and_its_notifications_answered() {
    let mut s = Script::new();
    let Some(Body::Init(first)) = s.sent(0).pop() else { panic!() };
    s.advance(5000);
    let Some(Body::Init(second)) = s.sent(5000).pop() else { panic!() };
    // the host acks the first init, then (a new session) the second one
    assert_eq!(s.feed(5001, &ack(first.invocation_id)).len(), 1);
    assert!(s.feed(5002, &ack(second.invocation_id)).is_empty(), "the host's newer ack is no error");
    assert_eq!(s.a.invocation_id(), second.invocation_id);
    // the host's vote carries the id of the init it acknowledged last: answered, not ignored
    let ev = s.feed(5003, &notify(second.invocation_id, "stop", "revocable", 9000));
    assert!(matches!(ev.as_slice(), [AgentEvent::ActionRequest { .. }]), "{ev:?}");
    s.a.answer_action(VoteResult::Accept, "").unwrap();
    let sent = s.sent(5004);
    let [Body::ActionResponse(r)] = sent.as_slice() else { panic!() };
    assert_eq!(r.invocation_id, second.invocation_id);
    // and a notification still carrying the first id is answered with that id
    s.feed(5005, &notify(first.invocation_id, "stop", "revocable", 9000));
    s.a.answer_action(VoteResult::Accept, "").unwrap();
    let sent = s.sent(5006);
    let [Body::ActionResponse(r)] = sent.as_slice() else { panic!() };
    assert_eq!(r.invocation_id, first.invocation_id);
}

#[test]
fn answers_every_challenge_with_the_current_health() {
    let mut s = Script::new();
    s.registered();
    s.feed(100, &challenge(846930886));
    let sent = s.sent(100);
    let [Body::ChallengeResponse(r)] = sent.as_slice() else { panic!() };
    assert_eq!((r.heartbeat_response, r.heartbeat_health), (846930886, Health::Healthy));
    assert_eq!(r.corrective_action, CorrectiveAction::Reboot, "healthy answers carry the configured action");
    s.a.set_health(Health::Unhealthy, CorrectiveAction::Stop, "app \"x\" dead");
    s.feed(1100, &challenge(5));
    let sent = s.sent(1100);
    let [Body::ChallengeResponse(r)] = sent.as_slice() else { panic!() };
    assert_eq!(
        (r.heartbeat_health, r.corrective_action, r.log_msg.as_str()),
        (Health::Unhealthy, CorrectiveAction::Stop, "app \"x\" dead")
    );
    // the same action is not requested again within 60 s
    s.feed(2100, &challenge(6));
    let sent = s.sent(2100);
    let [Body::ChallengeResponse(r)] = sent.as_slice() else { panic!() };
    assert_eq!((r.heartbeat_health, r.corrective_action), (Health::Unhealthy, CorrectiveAction::None));
    s.feed(61_100, &challenge(7));
    let sent = s.sent(61_100);
    let [Body::ChallengeResponse(r)] = sent.as_slice() else { panic!() };
    assert_eq!(r.corrective_action, CorrectiveAction::Stop);
}

#[test]
fn registers_again_when_challenges_stop() {
    let mut s = Script::new();
    let id = s.registered();
    s.feed(1000, &challenge(1));
    s.sent(1000);
    // interval 1 s: silence limit max(2 s, 5 s) = 5 s after the last challenge
    assert!(s.advance(5999).is_empty());
    assert_eq!(s.advance(6000), [AgentEvent::RegistrationLost]);
    let sent = s.sent(6000);
    let [Body::Init(init)] = sent.as_slice() else { panic!() };
    assert_ne!(init.invocation_id, id);
    assert_eq!(s.a.state(), AgentState::Registering);
    // challenges while registering are not answered
    assert!(matches!(s.feed(6001, &challenge(2)).as_slice(), [AgentEvent::ProtocolError(_)]));
    assert!(s.sent(6001).is_empty());
}

#[test]
fn votes_are_the_callers_and_silence_is_a_timeout() {
    let mut s = Script::new();
    let id = s.registered();
    let ev = s.feed(10, &notify(id, "stop", "revocable", 3000));
    let [AgentEvent::ActionRequest { notify: n, deadline }] = ev.as_slice() else { panic!("{ev:?}") };
    assert_eq!((n.event_type, n.timeout_ms), (EventType::Stop, 3000));
    assert_eq!(*deadline, at(10 + 2000), "one second before the host's deadline");
    s.a.answer_action(VoteResult::Reject, "standby not synced").unwrap();
    assert_eq!(s.a.answer_action(VoteResult::Accept, ""), Err(NoActionPending));
    let sent = s.sent(20);
    let [Body::ActionResponse(r)] = sent.as_slice() else { panic!() };
    assert_eq!((r.invocation_id, r.vote_result, r.log_msg.as_str()), (id, VoteResult::Reject, "standby not synced"));
    // nobody answers: `timeout`, one second before the host gives up; the host's policy decides
    s.feed(100, &notify(id, "live_migrate_begin", "revocable", 4000));
    assert!(s.advance(3099).is_empty() && s.sent(3099).is_empty());
    s.advance(3100);
    let sent = s.sent(3100);
    let [Body::ActionResponse(r)] = sent.as_slice() else { panic!() };
    assert_eq!(r.vote_result, VoteResult::Timeout);
    // a notice too (with less than two seconds, half the time)
    s.feed(3200, &notify(id, "live_migrate_end", "irrevocable", 1000));
    s.advance(3700);
    let sent = s.sent(3700);
    let [Body::ActionResponse(r)] = sent.as_slice() else { panic!() };
    assert_eq!(r.vote_result, VoteResult::Timeout);
    // wrong invocation: refused
    assert!(matches!(
        s.feed(4000, &notify(id + 1, "stop", "revocable", 1000)).as_slice(),
        [AgentEvent::ProtocolError(ProtocolError::WrongInvocationId { .. })]
    ));
}

#[test]
fn exit_then_silence() {
    let mut s = Script::new();
    s.registered();
    s.a.shutdown("Exiting...");
    assert_eq!(s.sent(10), [Body::Exit { log_msg: bounded("Exiting...") }]);
    assert_eq!(s.a.poll_timeout(), None);
    assert_eq!(s.a.handle_bytes(at(11), challenge(1).as_bytes()), challenge(1).len());
    assert!(s.sent(11).is_empty());
}

#[test]
fn nack_is_reported() {
    let mut s = Script::new();
    let ev = s.feed(0, "{\"version\":3,\"revision\":1,\"msg_type\":\"nack\",\"sequence\":10,\"invocation_id\":1,\"log_msg\":\"failed to parse vote_result\"}\n");
    assert_eq!(ev, [AgentEvent::Nacked { log_msg: bounded("failed to parse vote_result") }]);
    assert_eq!(s.a.stats().nacks, 1);
}

#[test]
fn reconnect_registers_anew() {
    let mut s = Script::new();
    s.registered();
    s.a.reconnected(at(50));
    assert!(matches!(s.sent(50).as_slice(), [Body::Init(_)]));
    assert_eq!(s.a.state(), AgentState::Registering);
}

#[test]
fn size_fits_the_budget() {
    let size = core::mem::size_of::<Agent<crate::XorShift32>>();
    std::println!("size_of::<Agent<XorShift32>>() = {size}");
    assert!(size < 2048, "Agent is {size} bytes");
}
