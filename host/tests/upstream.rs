//! Faults leave the node: a real vigild, a durable spool, and real receivers — Debian's Alertmanager on a loopback
//! port, and in-test HTTP receivers that check the Masakari (with a Keystone token exchange), StarlingX VIM and
//! CloudEvents bodies field by field. Time bounds are wide (deliveries are retried with backoff up to 60 s).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// A real Alertmanager (Debian `prometheus-alertmanager`) on a loopback port, with its own storage; killed on drop.
struct Alertmanager {
    _proc: Proc,
    port: u16,
}

/// How an Alertmanager of a cluster is set up: its gossip port, its peers', and the webhook it notifies.
struct Member<'a> {
    cluster: u16,
    peers: &'a [u16],
    webhook: &'a str,
}

impl Alertmanager {
    fn start(work: &Path, port: u16) -> Self {
        Self::start_member(work, port, None)
    }

    fn start_member(work: &Path, port: u16, member: Option<&Member>) -> Self {
        let bin = ["/usr/bin/prometheus-alertmanager", "/usr/bin/alertmanager"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("Alertmanager not found: install Debian's prometheus-alertmanager (scripts/test.sh does)");
        let dir = work.join(format!("am-{port}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = dir.join("am.yml");
        let mut cmd = Command::new(bin);
        cmd.arg(format!("--config.file={}", cfg.display()))
            .arg(format!("--storage.path={}", dir.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"));
        match member {
            None => {
                std::fs::write(&cfg, "route:\n  receiver: none\nreceivers:\n  - name: none\n").unwrap();
                cmd.arg("--cluster.listen-address=");
            }
            Some(m) => {
                // one notification per group, then none for an hour: a second one would be a duplicate
                std::fs::write(
                    &cfg,
                    format!(
                        "route:\n  receiver: hook\n  group_by: [alertname, guest]\n  group_wait: 1s\n  group_interval: 5s\n  repeat_interval: 1h\nreceivers:\n  - name: hook\n    webhook_configs:\n      - url: {}\n        send_resolved: false\n",
                        m.webhook
                    ),
                )
                .unwrap();
                cmd.arg(format!("--cluster.listen-address=127.0.0.1:{}", m.cluster))
                    .arg(format!("--cluster.advertise-address=127.0.0.1:{}", m.cluster))
                    .args(["--cluster.peer-timeout=2s", "--cluster.gossip-interval=100ms"])
                    .args(["--cluster.pushpull-interval=2s", "--cluster.settle-timeout=5s"]);
                for p in m.peers {
                    cmd.arg(format!("--cluster.peer=127.0.0.1:{p}"));
                }
            }
        }
        let child = cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("start alertmanager");
        let am = Alertmanager { _proc: Proc(child), port };
        let deadline = Instant::now() + Duration::from_secs(30);
        while http("GET", port, "/-/ready", None).is_none_or(|(c, _)| c != 200) {
            assert!(Instant::now() < deadline, "Alertmanager not ready in 30 s");
            std::thread::sleep(Duration::from_millis(100));
        }
        am
    }

    /// Alerts Alertmanager holds as active (a resolved alert is not listed).
    fn alerts(&self) -> Vec<Value> {
        let (code, body) = http("GET", self.port, "/api/v2/alerts", None).unwrap_or((0, String::new()));
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).unwrap_or_default()
    }

    fn wait_for(&self, secs: u64, what: &str, f: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let a = self.alerts();
            if f(&a) {
                return a;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}: {a:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

#[test]
fn an_alertmanager_cluster_gets_every_alert_on_every_member_and_notifies_once() {
    // Alertmanager's high-availability setup: clients send every alert to every member; the members gossip and
    // notify once (its README, "High Availability"). Two real members on loopback, gossiping with each other.
    let _serial = heavy();
    let work = TempDir::new("amha");
    let dir = work.path().join("qemu");
    std::fs::create_dir_all(&dir).unwrap();
    let notified = HttpReceiver::start(|_, _| (200, vec![], "".into()));
    let hook = format!("{}/alertmanager", notified.url());
    let (p1, p2, c1, c2) = (free_port(), free_port(), free_port(), free_port());
    let m1 = Member { cluster: c1, peers: &[c2], webhook: &hook };
    let m2 = Member { cluster: c2, peers: &[c1], webhook: &hook };
    let am1 = Alertmanager::start_member(work.path(), p1, Some(&m1));
    let am2 = Alertmanager::start_member(work.path(), p2, Some(&m2));
    let g = ScriptedGuest::start(&dir, "vm-ha", 300);
    let (u1, u2) = (format!("http://127.0.0.1:{p1}"), format!("http://127.0.0.1:{p2}"));
    let state = work.path().join("state");
    let args = ["--alertmanager", &u1, "--alertmanager", &u2, "--state-dir", state.to_str().unwrap()];
    let d = Vigild::start(&dir, work.path(), &args);
    d.wait_until(15, "registered", |ev| count(ev, "registered") >= 1);
    // one member is down while the guest hangs
    drop(am2);
    g.freeze(true);
    d.wait_until(10, "the loss", |ev| !by_guest(ev, "vm-ha", "heartbeat_lost").is_empty());
    am1.wait_for(30, "the alert on the member that is up", |a| lost_alert(a, "vm-ha").is_some());
    // it comes back: vigild's cursor for it delivers what it missed
    let am2 = Alertmanager::start_member(work.path(), p2, Some(&m2));
    am2.wait_for(90, "the alert on the member that came back", |a| lost_alert(a, "vm-ha").is_some());
    // both hold it, and the receiver was notified once, not once per member
    std::thread::sleep(Duration::from_secs(12)); // group_wait, the peer timeout and a group interval, twice over
    let firing = |g: &Got| g.body.contains("VigilHeartbeatLost") && g.body.contains("vm-ha");
    let n = notified.requests().iter().filter(|g| firing(g)).count();
    assert!(lost_alert(&am1.alerts(), "vm-ha").is_some() && lost_alert(&am2.alerts(), "vm-ha").is_some());
    assert_eq!(n, 1, "one notification for the cluster: {:?}", notified.requests());
    drop(d);
}

fn lost_alert(alerts: &[Value], guest: &str) -> Option<Value> {
    alerts.iter().find(|a| a["labels"]["alertname"] == "VigilHeartbeatLost" && a["labels"]["guest"] == guest).cloned()
}

fn kill9(p: &mut Proc) {
    let pid = rustix::process::Pid::from_raw(p.pid() as i32).unwrap();
    let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
    let _ = p.0.wait();
}

#[test]
fn a_fault_reaches_alertmanager_across_an_outage_and_a_sigkill_without_loss_or_duplicate() {
    let _serial = heavy();
    let work = TempDir::new("am");
    let dir = work.path().join("qemu");
    let state = work.path().join("state");
    std::fs::create_dir_all(&dir).unwrap();
    let g1 = ScriptedGuest::start(&dir, "vm-one", 300);
    let g2 = ScriptedGuest::start(&dir, "vm-two", 300);
    let port = free_port();
    let am = Alertmanager::start(work.path(), port);
    // a webhook beside it, to see every stable id that leaves the node
    let hook = HttpReceiver::start(|_, _| (200, vec![], "{}".into()));
    let am_url = format!("http://127.0.0.1:{port}");
    let args = ["--alertmanager", &am_url, "--webhook", &hook.url(), "--state-dir", state.to_str().unwrap()];
    let mut d = Vigild::start(&dir, work.path(), &args);
    d.wait_until(15, "both registered", |ev| count(ev, "registered") >= 2);

    // 1. a hang: the alert is active in Alertmanager with the right labels
    g1.freeze(true);
    d.wait_until(10, "loss of vm-one", |ev| !by_guest(ev, "vm-one", "heartbeat_lost").is_empty());
    let alerts = am.wait_for(30, "VigilHeartbeatLost for vm-one", |a| lost_alert(a, "vm-one").is_some());
    let a = lost_alert(&alerts, "vm-one").unwrap();
    let ev = d.events();
    let written = by_guest(&ev, "vm-one", "heartbeat_lost")[0]["time"].as_str().unwrap().to_string();
    let ms = |t: &str| {
        humantime::parse_rfc3339_weak(t).map(|t| t.duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64)
    };
    if let (Ok(w), Ok(u)) = (ms(&written), ms(a["updatedAt"].as_str().unwrap_or(""))) {
        println!("fault -> Alertmanager: {} ms (event time to Alertmanager's updatedAt)", u - w);
    }
    assert_eq!(a["labels"]["severity"], "critical");
    // the node is an annotation, not a label: a migrated guest's alert from either node is one alert
    assert_eq!(a["annotations"]["host"].as_str().map(str::is_empty), Some(false));
    assert!(a["labels"].get("host").is_none(), "{a}");
    assert_eq!(a["annotations"]["corrective_action"], "reboot");
    // 2. recovery resolves it
    g1.freeze(false);
    am.wait_for(30, "the alert resolved", |a| lost_alert(a, "vm-one").is_none());

    // 3. Alertmanager down while a fault happens, and vigild killed with SIGKILL before it could deliver
    drop(am);
    g2.freeze(true);
    d.wait_until(10, "loss of vm-two", |ev| !by_guest(ev, "vm-two", "heartbeat_lost").is_empty());
    std::thread::sleep(Duration::from_millis(500)); // stored in the spool by now (it is written before anyone is told)
    kill9(&mut d.proc);
    // 4. Alertmanager back (fresh storage), vigild back on the same state directory: the fault arrives
    let am = Alertmanager::start(work.path(), port);
    let d2 = Vigild::start(&dir, work.path(), &args);
    am.wait_for(90, "vm-two's loss delivered after the restart", |a| lost_alert(a, "vm-two").is_some());
    let alerts = am.alerts();
    let n = alerts.iter().filter(|a| a["labels"]["guest"] == "vm-two").count();
    assert_eq!(n, 1, "one alert, however often it was sent: {alerts:?}");
    // every stable id of a loss left the node; re-sends keep their id (receivers drop duplicates by it)
    let deadline = Instant::now() + Duration::from_secs(60);
    let ids = |kind: &str| -> Vec<String> {
        hook.requests()
            .iter()
            .map(Got::json)
            .filter(|e| e["data"]["kind"] == kind)
            .map(|e| e["id"].as_str().unwrap_or("").to_string())
            .collect()
    };
    while ids("heartbeat_lost").iter().collect::<std::collections::HashSet<_>>().len() < 2 {
        assert!(Instant::now() < deadline, "webhook got {:?}", ids("heartbeat_lost"));
        std::thread::sleep(Duration::from_millis(200));
    }
    let lost = ids("heartbeat_lost");
    println!("heartbeat_lost deliveries to the webhook: {} for 2 stable ids", lost.len());
    drop(d2);
}

#[test]
fn masakari_gets_a_vm_notification_with_a_keystone_token_and_a_409_on_resend_is_a_conflict() {
    let work = TempDir::new("masakari");
    let dir = work.path().join("qemu");
    std::fs::create_dir_all(&dir).unwrap();
    let keystone = HttpReceiver::start(|req, _| {
        assert_eq!(req.path, "/v3/auth/tokens");
        (
            201,
            vec![("X-Subject-Token".into(), "tok-123".into())],
            r#"{"token":{"expires_at":"2099-01-01T00:00:00.000000Z"}}"#.into(),
        )
    });
    // the first notification is taken but answered 500 (as if the answer was lost); the re-send gets 409, as
    // Masakari's API answers a notification it has already (its api-ref: 409 Conflict for a duplicate notification
    // or a host in maintenance)
    let masakari =
        HttpReceiver::start(|_, n| if n == 0 { (500, vec![], "{}".into()) } else { (409, vec![], "{}".into()) });
    let pw = work.path().join("pw");
    std::fs::write(&pw, "s3cret\n").unwrap();
    let keystone_v3 = format!("{}/v3", keystone.url()); // as operators often write it: the token path is not doubled
    let cfg = work.path().join("vigild.toml");
    std::fs::write(
        &cfg,
        format!(
            "state_dir = \"{}\"\n[instance_uuids]\n\"vm-ha\" = \"6f1c0a8e-0000-4000-8000-000000000001\"\n[[sink]]\nkind = \"masakari\"\nurl = \"{}\"\nauth_url = \"{}\"\nusername = \"vigil\"\npassword_file = \"{}\"\nproject_name = \"service\"\n",
            work.path().join("state").display(),
            masakari.url(),
            keystone_v3,
            pw.display()
        ),
    )
    .unwrap();
    let g = ScriptedGuest::start(&dir, "vm-ha", 300);
    let d = Vigild::start(&dir, work.path(), &["--config", cfg.to_str().unwrap()]);
    d.wait_until(15, "registered", |ev| count(ev, "registered") >= 1);
    g.freeze(true);
    let deadline = Instant::now() + Duration::from_secs(30);
    while masakari.requests().len() < 2 {
        assert!(Instant::now() < deadline, "masakari got {:?}", masakari.requests());
        std::thread::sleep(Duration::from_millis(100));
    }
    let reqs = masakari.requests();
    assert_eq!(reqs[0].body, reqs[1].body, "the re-send is the same notification");
    let n = reqs[0].json();
    assert_eq!(reqs[0].path, "/v1/notifications");
    assert_eq!(reqs[0].header("X-Auth-Token"), Some("tok-123"));
    assert_eq!(n["notification"]["type"], "VM");
    assert_eq!(n["notification"]["payload"]["event"], "QEMU_GUEST_AGENT_ERROR");
    assert_eq!(n["notification"]["payload"]["vir_domain_event"], "STOPPED_FAILED");
    assert_eq!(n["notification"]["payload"]["instance_uuid"], "6f1c0a8e-0000-4000-8000-000000000001");
    assert!(n["notification"]["hostname"].as_str().is_some_and(|h| !h.is_empty()));
    assert!(n["notification"]["generated_time"].as_str().is_some());
    let auth = keystone.requests()[0].json();
    assert_eq!(auth["auth"]["identity"]["password"]["user"]["name"], "vigil");
    assert_eq!(auth["auth"]["identity"]["password"]["user"]["password"], "s3cret");
    assert_eq!(auth["auth"]["scope"]["project"]["name"], "service");
    // the 409 is a conflict, counted apart from deliveries: nothing more is sent
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(masakari.requests().len(), 2);
    let (_, m) =
        vigil_host::control::client::request(&d.admin, "GET", "/metrics", None, Duration::from_secs(10)).unwrap();
    let line = |name: &str| m.lines().find(|l| l.starts_with(name)).unwrap_or("").to_string();
    assert!(line("vigil_sink_conflicts_total{").ends_with(" 1"), "{m}");
    // the password never reaches the events or the logs
    assert!(!std::fs::read_to_string(&d.events).unwrap().contains("s3cret"));
}

/// What the VIM saw: the instance and its reading of one PATCH.
type Saw = (String, VimSaw);

#[test]
fn the_starlingx_vim_as_its_source_handles_it_gets_services_alarms_and_vote_results() {
    let work = TempDir::new("vim");
    let dir = work.path().join("qemu");
    std::fs::create_dir_all(&dir).unwrap();
    // guests (vigil-sim names them by behaviour and index): two hang, one exits, one stays healthy
    let (hang_known, hang_unknown, exits, ok) = ("sim-hang-00000", "sim-hang-00001", "sim-exit-00002", "sim-ok-00003");
    let (uuid, lost_uuid, exit_uuid) = (
        "0b8f3e52-1111-4222-8333-444455556666",
        "0b8f3e52-2222-4222-8333-444455556666",
        "0b8f3e52-3333-4222-8333-444455556666",
    );
    // the VIM knows three instances; the fourth guest (a VM deleted meanwhile) is unknown to it
    let saw = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let vim = vim_stand_in(vec![uuid.into(), lost_uuid.into(), exit_uuid.into()], std::sync::Arc::clone(&saw));
    let hook = HttpReceiver::start(|_, _| (202, vec![], "".into()));
    let binary = HttpReceiver::start(|_, _| (202, vec![], "".into()));
    let token = work.path().join("hook-token");
    std::fs::write(&token, "hook-secret-token").unwrap();
    let cfg = work.path().join("vigild.toml");
    std::fs::write(
        &cfg,
        format!(
            "state_dir = \"{}\"\n[instance_uuids]\n\"{ok}\" = \"{uuid}\"\n\"{hang_known}\" = \"{lost_uuid}\"\n\"{exits}\" = \"{exit_uuid}\"\n[[sink]]\nkind = \"starlingx-vim\"\nurl = \"{}\"\n[[sink]]\nkind = \"webhook\"\nurl = \"{}/events\"\ntoken_file = \"{}\"\n[[sink]]\nkind = \"webhook\"\nurl = \"{}/binary\"\ncontent_mode = \"binary\"\n",
            work.path().join("state").display(),
            vim.url(),
            hook.url(),
            token.display(),
            binary.url()
        ),
    )
    .unwrap();
    let _s =
        sim(&dir, &["--guests", "4", "--hang", "2", "--exit", "1", "--interval-ms", "300", "--fail-after-secs", "6"]);
    std::thread::sleep(Duration::from_millis(300));
    let d = Vigild::start(&dir, work.path(), &["--config", cfg.to_str().unwrap()]);
    d.wait_until(15, "registered", |ev| count(ev, "registered") >= 4);

    // the VIM asks for a vote exactly as its guest.py does (headers, body, action names with underscores)
    let vim_call = |path: &str, action: &str| {
        let body = format!(r#"{{"uuid":"{uuid}","hostname":"compute-0","action":"{action}"}}"#);
        let out = Command::new("curl")
            .args(["-s", "-X", "POST", "-H", "Content-Type: application/json", "-H", "User-Agent: vim/1.0"])
            .args(["-H", "X-Auth-Token: a-keystone-token", "--unix-socket"])
            .arg(&d.admin)
            .arg(format!("http://localhost/v1/instances/{uuid}/{path}"))
            .args(["-d", &body])
            .output()
            .expect("curl");
        serde_json::from_slice::<Value>(&out.stdout).unwrap_or(Value::Null)
    };
    let v = vim_call("vote", "live_migrate_begin");
    assert_eq!(
        (v["uuid"].as_str(), v["action"].as_str(), v["timeout"].as_str()),
        (Some(uuid), Some("live_migrate_begin"), Some("9")),
        "{v}"
    );
    // a resize notice: the reference answers timeout "0"
    std::thread::sleep(Duration::from_secs(1));
    let v = vim_call("notify", "resize_begin");
    assert_eq!(v["timeout"].as_str(), Some("0"), "{v}");
    let body = format!(r#"{{"uuid":"{uuid}","hostname":"node","action":"stop"}}"#);
    assert_eq!(admin(&d, "POST", "/v1/instances/no-such-uuid/vote", Some(&body)).0, 404);

    let wait = |what: &str, f: &dyn Fn(&[Saw]) -> bool| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !f(&saw.lock().unwrap()) {
            assert!(Instant::now() < deadline, "the VIM never saw {what}: {:?}", saw.lock().unwrap());
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let has = |u: &'static str, want: VimSaw| move |s: &[Saw]| s.iter().any(|(x, w)| x == u && *w == want);
    let service =
        |oper: &'static str, restart: i64| VimSaw::Service(vec![("heartbeat".into(), "unlocked", oper, Some(restart))]);
    // registration: reporting on (unlocked), heartbeat enabled, the capped restart timeout (the guest asked 601)
    wait("the registration", &has(uuid, service("enabled", 600)));
    // the vote's result, in the VIM's own action table (an accepted vote is allowed)
    wait("the vote's result", &|s| {
        s.iter().any(|(x, w)| x == uuid && matches!(w, VimSaw::Action("live-migrate", "allowed", _)))
    });
    // a notice is proceed, whatever the guest said
    wait("the notice's result", &|s| {
        s.iter().any(|(x, w)| x == uuid && matches!(w, VimSaw::Action("resize", "proceed", _)))
    });
    // the hang: the service goes down, then an alarm the VIM recognises (failed, reboot)
    wait("the loss", &has(lost_uuid, VimSaw::Alarm("failed".into(), "reboot".into())));
    {
        let s = saw.lock().unwrap();
        let down = s.iter().position(|(x, w)| x == lost_uuid && *w == service("disabled", 0));
        let alarm = s.iter().position(|(x, w)| x == lost_uuid && matches!(w, VimSaw::Alarm(..)));
        assert!(down.is_some() && down < alarm, "service disabled before the alarm: {s:?}");
    }
    // the exit: the VIM learns the guest left (heartbeat disabled), reporting still on
    wait("the exit", &has(exit_uuid, service("disabled", 0)));
    // the unknown instance's alarm got no reply: dead-lettered after a few tries, and the sink went on
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, m) =
            vigil_host::control::client::request(&d.admin, "GET", "/metrics", None, Duration::from_secs(10)).unwrap();
        if m.lines().any(|l| l.starts_with("vigil_sink_dead_letters_total{sink=\"starlingx-vim") && l.ends_with(" 1")) {
            break;
        }
        assert!(Instant::now() < deadline, "the unknown instance's alarm was not dead-lettered: {m}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(vim.requests().iter().any(|g| g.path.ends_with(hang_unknown)), "its alarm was tried");

    // the same events as CloudEvents, field by field
    let deadline = Instant::now() + Duration::from_secs(30);
    while !hook.requests().iter().any(|g| g.json()["type"] == "io.vigil.heartbeat_lost") {
        assert!(Instant::now() < deadline, "webhook: {:?}", hook.requests());
        std::thread::sleep(Duration::from_millis(100));
    }
    let ce = hook.requests().into_iter().find(|g| g.json()["type"] == "io.vigil.heartbeat_lost").unwrap();
    assert_eq!(ce.path, "/events");
    assert_eq!(ce.header("Content-Type"), Some("application/cloudevents+json"));
    assert_eq!(ce.header("Authorization"), Some("Bearer hook-secret-token"));
    let e = ce.json();
    assert_eq!(e["specversion"], "1.0");
    assert_eq!(e["id"], e["data"]["id"], "the CloudEvent id is the record's stable id");
    assert!(e["source"].as_str().unwrap().starts_with("vigil://"));
    assert!(e["subject"].as_str().is_some_and(|g| g.starts_with("sim-hang-")));
    assert!(e["time"].as_str().unwrap().ends_with('Z'));
    assert_eq!(e["datacontenttype"], "application/json");
    assert_eq!(e["data"]["kind"], "heartbeat_lost");
    assert_eq!(e["data"]["guest"], e["subject"]);
    assert!(uuid_v7(e["id"].as_str().unwrap()), "{}", e["id"]);
    // binary content mode, checked against the CloudEvents HTTP protocol binding (cloudevents/spec,
    // cloudevents/bindings/http-protocol-binding.md, 3.1.3: every attribute a `ce-` header, `data` the body with
    // its own Content-Type) and the core spec's rules (`id`, `source`, `type`, `specversion` required and
    // non-empty; `subject` non-empty when present)
    let deadline = Instant::now() + Duration::from_secs(30);
    while !binary.requests().iter().any(|g| g.header("ce-type") == Some("io.vigil.heartbeat_lost")) {
        assert!(Instant::now() < deadline, "binary webhook: {:?}", binary.requests());
        std::thread::sleep(Duration::from_millis(100));
    }
    for g in binary.requests() {
        assert_eq!(g.header("ce-specversion"), Some("1.0"));
        for h in ["ce-id", "ce-source", "ce-type"] {
            assert!(g.header(h).is_some_and(|v| !v.is_empty()), "{h} missing: {:?}", g.headers);
        }
        assert!(g.header("ce-subject").is_none_or(|v| !v.is_empty()));
        assert_eq!(g.header("Content-Type"), Some("application/json"));
        assert_eq!(g.json()["id"].as_str(), g.header("ce-id"), "the body is the record");
    }
}

fn uuid_v7(s: &str) -> bool {
    s.len() == 36 && s.as_bytes()[14] == b'7'
}

#[test]
fn a_full_spool_drops_the_oldest_and_a_spool_cut_short_is_replaced_and_both_are_reported() {
    let work = TempDir::new("spool");
    let dir = work.path().join("qemu");
    let state = work.path().join("state");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::create_dir_all(&state).unwrap();
    // a file that is not a spool at all: vigild refuses to start, names it, and leaves it as it is
    std::fs::write(state.join("spool.redb"), vec![0x5Au8; 10_000]).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_vigild"))
        .args(["run", "--watch", dir.to_str().unwrap(), "--events", "-", "--state-dir", state.to_str().unwrap()])
        .args(["--webhook", "http://127.0.0.1:9/", "--admin-socket"])
        .arg(work.path().join("refused.sock"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("spool.redb"), "refused, naming the file: {err}");
    assert_eq!(std::fs::read(state.join("spool.redb")).unwrap(), vec![0x5Au8; 10_000], "left as it was");
    // a real spool cut short (a torn disk, a bad copy): moved aside, and vigild starts on a fresh one
    std::fs::remove_file(state.join("spool.redb")).unwrap();
    {
        let names = ["x".to_string()];
        let (spool, _) = vigil_host::upstream::spool::Spool::open(&state, 1000, &names).unwrap();
        let mut recs: Vec<Value> = (0..200).map(|i| serde_json::json!({ "kind": "x", "n": i })).collect();
        spool.append(&mut recs).unwrap();
    }
    let f = std::fs::OpenOptions::new().write(true).open(state.join("spool.redb")).unwrap();
    let len = f.metadata().unwrap().len();
    f.set_len(len / 2).unwrap();
    let port = free_port(); // nobody listens yet: everything stays in the spool
    let cfg = work.path().join("vigild.toml");
    std::fs::write(
        &cfg,
        format!(
            "state_dir = \"{}\"\nspool_cap = 5\n[[sink]]\nkind = \"webhook\"\nurl = \"http://127.0.0.1:{port}/\"\n",
            state.display()
        ),
    )
    .unwrap();
    let _s = sim(&dir, &["--guests", "8", "--interval-ms", "300"]);
    std::thread::sleep(Duration::from_millis(300));
    let mut d = Vigild::start(&dir, work.path(), &["--config", cfg.to_str().unwrap()]);
    d.wait_until(15, "registered", |ev| count(ev, "registered") >= 8);
    assert!(d.proc.0.try_wait().unwrap().is_none(), "vigild runs on a fresh spool");
    let aside =
        std::fs::read_dir(&state).unwrap().flatten().any(|e| e.file_name().to_string_lossy().contains("corrupt"));
    assert!(aside, "the unreadable spool was moved aside, not deleted");
    // 16+ events into a spool of 5: the oldest were dropped, and the receiver, once up, hears about it
    std::thread::sleep(Duration::from_secs(1));
    let hook = HttpReceiver::start_on(port, |_, _| (200, vec![], "{}".into()));
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let kinds: Vec<(String, String)> = hook
            .requests()
            .iter()
            .map(|g| g.json())
            .filter(|e| e["data"]["kind"] == "spool")
            .map(|e| (e["data"]["state"].as_str().unwrap_or("").to_string(), e["data"]["detail"].to_string()))
            .collect();
        if kinds.iter().any(|(s, _)| s == "dropped") {
            // host-wide records have no guest: CloudEvents forbids an empty subject, so there is none
            let spool_event = hook.requests().iter().map(|g| g.json()).find(|e| e["data"]["kind"] == "spool").unwrap();
            assert!(spool_event.get("subject").is_none(), "{spool_event}");
            break;
        }
        assert!(Instant::now() < deadline, "no spool notice delivered: {kinds:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let (code, m) =
        vigil_host::control::client::request(&d.admin, "GET", "/metrics", None, Duration::from_secs(10)).unwrap();
    assert_eq!(code, 200);
    assert!(m.lines().any(|l| l.starts_with("vigil_spool_dropped_total ") && !l.ends_with(" 0")), "{m}");
    assert!(d.proc.terminate());
}

/// Mounts a tmpfs of `size` at `dir`; `None` (with the reason) where this process may not mount.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs", dir.to_str().unwrap()])
            .output()
            .map_err(|e| format!("mount: {e}"))?;
        if out.status.success() {
            Ok(Tmpfs(dir.to_path_buf()))
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// Writes a filler file until the file system is full; returns its path.
    fn fill(&self) -> std::path::PathBuf {
        use std::io::Write;
        let path = self.0.join("filler");
        let mut f = std::fs::File::create(&path).unwrap();
        let chunk = vec![0xA5u8; 64 * 1024];
        while f.write_all(&chunk).is_ok() {}
        let small = [0u8; 512];
        while f.write_all(&small).is_ok() {}
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").args(["-l", self.0.to_str().unwrap()]).status();
    }
}

#[test]
fn a_full_disk_under_the_spool_loses_no_fault_and_needs_no_restart() {
    let _serial = heavy();
    let work = TempDir::new("fulldisk");
    let dir = work.path().join("qemu");
    std::fs::create_dir_all(&dir).unwrap();
    let state = work.path().join("state");
    // a real full disk needs a file system of its own: a small tmpfs (mounting needs root)
    let fs = match Tmpfs::mount(&state, "16m") {
        Ok(fs) => fs,
        Err(why) => {
            eprintln!("SKIPPED: cannot mount a tmpfs to fill ({why}); this test needs root");
            return;
        }
    };
    let guests: Vec<ScriptedGuest> = (0..4).map(|i| ScriptedGuest::start(&dir, &format!("fd-{i}"), 300)).collect();
    // the receiver is down while the disk is full, so records pile up in the spool (delivered ones are compacted)
    let down = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let receiver_down = std::sync::Arc::clone(&down);
    let hook = HttpReceiver::start(move |_, _| {
        if receiver_down.load(std::sync::atomic::Ordering::Relaxed) {
            (503, vec![], "down".into())
        } else {
            (200, vec![], "{}".into())
        }
    });
    let args = ["--webhook", &hook.url(), "--state-dir", state.to_str().unwrap()];
    let mut d = Vigild::start(&dir, work.path(), &args);
    d.wait_until(15, "all registered", |ev| count(ev, "registered") >= 4);
    let metric = |name: &str| -> u64 {
        let (_, m) = vigil_host::control::client::request(&d.admin, "GET", "/metrics", None, Duration::from_secs(10))
            .unwrap_or((0, String::new()));
        m.lines().find_map(|l| l.strip_prefix(&format!("{name} ")).and_then(|v| v.parse().ok())).unwrap_or(0)
    };
    // the disk fills up; then 1,500 more guests arrive (their connections and registrations are ~1 MB of records,
    // more than the spool file has free inside it, so redb must grow the file and fails) and four guests hang
    down.store(true, std::sync::atomic::Ordering::Relaxed);
    let filler = fs.fill();
    let _crowd = sim(&dir, &["--guests", "1500", "--interval-ms", "1000"]);
    for g in &guests {
        g.freeze(true);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while metric("vigil_spool_errors_total") == 0 {
        assert!(Instant::now() < deadline, "the spool never saw the full disk");
        std::thread::sleep(Duration::from_millis(500));
    }
    d.wait_until(30, "the four losses written locally while the disk is full", |ev| count(ev, "heartbeat_lost") >= 4);
    std::thread::sleep(Duration::from_secs(2)); // the spool keeps failing meanwhile (reopened with backoff)
                                                // room again: no restart, and every fault of the local log reaches the sink
    std::fs::remove_file(&filler).unwrap();
    down.store(false, std::sync::atomic::Ordering::Relaxed);
    // (guest, kind) -> how many: the spool's records carry no local seq, and delivery is at least once
    type Tally = std::collections::BTreeMap<(String, String), usize>;
    let tally = |ev: &mut dyn Iterator<Item = Value>| -> Tally {
        let mut t = Tally::new();
        for e in ev.filter(|e| e["kind"] == "heartbeat_lost" || e["kind"] == "recovered") {
            *t.entry((e["guest"].as_str().unwrap_or("").into(), e["kind"].as_str().unwrap_or("").into()))
                .or_default() += 1;
        }
        t
    };
    let local = tally(&mut d.events().into_iter());
    assert!(local.values().sum::<usize>() >= 4, "losses written locally: {local:?}");
    assert!(d.proc.0.try_wait().unwrap().is_none(), "vigild still runs: no restart");
    let deadline = Instant::now() + Duration::from_secs(150); // the sink's retry backoff reaches 60 s
    loop {
        let delivered = tally(&mut hook.requests().iter().map(|g| g.json()["data"].clone()));
        let missing: Vec<_> = local.iter().filter(|(k, n)| delivered.get(*k).copied().unwrap_or(0) < **n).collect();
        if missing.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "not delivered after the disk had room again: {missing:?}");
        std::thread::sleep(Duration::from_millis(300));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let states: Vec<String> = hook
            .requests()
            .iter()
            .map(|g| g.json())
            .filter(|e| e["data"]["kind"] == "spool")
            .map(|e| e["data"]["state"].as_str().unwrap_or("").to_string())
            .collect();
        if states.iter().any(|s| s == "error") && states.iter().any(|s| s == "recovered") {
            break;
        }
        assert!(Instant::now() < deadline, "the spool's error and recovery reach the sink: {states:?}");
        std::thread::sleep(Duration::from_millis(300));
    }
    println!("spool errors while full: {}", metric("vigil_spool_errors_total"));
    assert_eq!(metric("vigil_spool_lost_total"), 0);
    drop(d);
}

#[test]
fn a_second_vigild_on_the_same_state_dir_stops_with_the_reason_and_discards_nothing() {
    let work = TempDir::new("twice");
    let dir = work.path().join("qemu");
    let state = work.path().join("state");
    std::fs::create_dir_all(&dir).unwrap();
    let hook = HttpReceiver::start(|_, _| (500, vec![], "down".into())); // nothing is delivered: all stays
    let args = ["--webhook", &hook.url(), "--state-dir", state.to_str().unwrap()];
    let first = Vigild::start(&dir, work.path(), &args);
    first.wait_ready();
    let before = std::fs::metadata(state.join("spool.redb")).unwrap().len();
    let out = Command::new(env!("CARGO_BIN_EXE_vigild"))
        .args(["run", "--watch", dir.to_str().unwrap(), "--events", "-", "--admin-socket"])
        .arg(work.path().join("second.sock"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the second vigild must not run: {err}");
    assert!(err.contains("spool.redb") && err.contains("another"), "names the path and the reason: {err}");
    let aside =
        std::fs::read_dir(&state).unwrap().flatten().any(|e| e.file_name().to_string_lossy().contains("corrupt"));
    assert!(!aside, "nothing was moved aside");
    assert!(std::fs::metadata(state.join("spool.redb")).unwrap().len() >= before);
    drop(first);
}
