//! The StarlingX deployment end to end: two vigild "nodes" and one `vigild relay` on loopback, a stand-in for the
//! VIM's guest REST API that applies its handler's rules (`vim_stand_in`, from starlingx/nfv
//! `nfvi_guest_api.py`), and a client that calls the relay exactly as the VIM's `guest.py` calls the guest agent
//! (`POST /v1/instances/<uuid>/vote|notify`, headers `Content-Type`, `User-Agent: vim/1.0`, `X-Auth-Token`, body
//! `{uuid, hostname, action}`, reply `{uuid, hostname, action, timeout}`; host calls `PUT /v1/hosts/<uuid>/enable|
//! disable` with `{uuid, hostname}`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// What the VIM saw: the instance and its reading of one PATCH.
type Saw = (String, VimSaw);

const UA_OK: &str = "aaaaaaaa-0000-4000-8000-000000000001";
const UA_EXIT: &str = "aaaaaaaa-0000-4000-8000-000000000002";
const UB_OK: &str = "bbbbbbbb-0000-4000-8000-000000000001";
const UB_HANG: &str = "bbbbbbbb-0000-4000-8000-000000000002";

struct Node {
    work: TempDir,
    d: Vigild,
    port: u16,
    _sim: Proc,
}

fn node(name: &str, prefix: &str, sim_args: &[&str], uuids: &[(&str, &str)], relay: &str, node_token: &str) -> Node {
    let work = TempDir::new(&format!("relay-{name}"));
    let dir = work.path().join("qemu");
    std::fs::create_dir_all(&dir).unwrap();
    let token = work.path().join("admin-token");
    std::fs::write(&token, format!("admin-token-of-{name}-0123456789")).unwrap();
    let mut map = String::new();
    for (g, u) in uuids {
        map.push_str(&format!("\"{g}\" = \"{u}\"\n"));
    }
    let cfg = work.path().join("vigild.toml");
    std::fs::write(
        &cfg,
        format!(
            "hostname = \"{name}\"\nstate_dir = \"{}\"\n[instance_uuids]\n{map}[[sink]]\nkind = \"starlingx-vim\"\nurl = \"{relay}\"\ntoken_file = \"{node_token}\"\n",
            work.path().join("state").display()
        ),
    )
    .unwrap();
    let mut args = vec!["--prefix", prefix, "--interval-ms", "300", "--fail-after-secs", "10"];
    args.extend_from_slice(sim_args);
    let sim = sim(&dir, &args);
    std::thread::sleep(Duration::from_millis(300));
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let d = Vigild::start(
        &dir,
        work.path(),
        &["--config", cfg.to_str().unwrap(), "--admin-tcp", &addr, "--admin-token-file", token.to_str().unwrap()],
    );
    Node { work, d, port, _sim: sim }
}

/// Calls the relay as the VIM's guest.py does; returns the status and the JSON reply.
fn as_the_vim(relay_port: u16, method: &str, path: &str, body: &str, token: &str) -> (u16, Value) {
    let out = Command::new("curl")
        .args(["-s", "-w", "\n%{http_code}", "-X", method, "-H", "Content-Type: application/json"])
        .args(["-H", "User-Agent: vim/1.0", "-H", &format!("X-Auth-Token: {token}")])
        .arg(format!("http://127.0.0.1:{relay_port}{path}"))
        .args(["-d", body])
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), serde_json::from_str(body).unwrap_or(Value::Null))
}

#[test]
fn the_vim_reaches_guests_on_two_nodes_through_the_relay_and_hears_their_faults() {
    let _serial = heavy();
    let work = TempDir::new("relay");
    let saw: Arc<Mutex<Vec<Saw>>> = Arc::default();
    let vim = vim_stand_in(vec![UA_OK.into(), UA_EXIT.into(), UB_OK.into(), UB_HANG.into()], Arc::clone(&saw));
    let (vim_token, node_token) = (work.path().join("vim-token"), work.path().join("node-token"));
    std::fs::write(&vim_token, "the-keystone-token-the-vim-sends").unwrap();
    std::fs::write(&node_token, "nodes-bearer-token-0123456789").unwrap();
    let relay_port = free_port();
    let relay_url = format!("http://127.0.0.1:{relay_port}");
    let nt = node_token.to_str().unwrap();
    let a = node(
        "compute-a",
        "a",
        &["--guests", "2", "--exit", "1"],
        &[("a-exit-00000", UA_EXIT), ("a-ok-00001", UA_OK)],
        &relay_url,
        nt,
    );
    let b = node(
        "compute-b",
        "b",
        &["--guests", "2", "--hang", "1"],
        &[("b-hang-00000", UB_HANG), ("b-ok-00001", UB_OK)],
        &relay_url,
        nt,
    );
    let relay_cfg = work.path().join("relay.toml");
    let write_relay_cfg = || {
        std::fs::write(
            &relay_cfg,
            format!(
                "listen = \"127.0.0.1:{relay_port}\"\nvim_url = \"{}\"\nvim_token_file = \"{}\"\nnode_token_file = \"{nt}\"\n[[node]]\nname = \"compute-a\"\nurl = \"http://127.0.0.1:{}\"\ntoken_file = \"{}\"\n[[node]]\nname = \"compute-b\"\nurl = \"http://127.0.0.1:{}\"\ntoken_file = \"{}\"\n",
                vim.url(),
                vim_token.display(),
                a.port,
                a.work.path().join("admin-token").display(),
                b.port,
                b.work.path().join("admin-token").display()
            ),
        )
        .unwrap();
    };
    write_relay_cfg();
    let start_relay = || {
        Proc(
            Command::new(env!("CARGO_BIN_EXE_vigild"))
                .args(["relay", "--config", relay_cfg.to_str().unwrap(), "--log", "warn"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("vigild relay"),
        )
    };
    let relay = start_relay();
    a.d.wait_until(15, "node a registered", |ev| count(ev, "registered") >= 2);
    b.d.wait_until(15, "node b registered", |ev| count(ev, "registered") >= 2);

    let wait = |what: &str, f: &dyn Fn(&[Saw]) -> bool| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !f(&saw.lock().unwrap()) {
            assert!(Instant::now() < deadline, "the VIM never saw {what}: {:?}", saw.lock().unwrap());
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let service =
        |oper: &'static str, restart: i64| VimSaw::Service(vec![("heartbeat".into(), "unlocked", oper, Some(restart))]);
    let has = |u: &'static str, want: VimSaw| move |s: &[Saw]| s.iter().any(|(x, w)| x == u && *w == want);
    // every node's registrations reach the VIM through the relay (and teach it where each instance is)
    wait("node b's registration", &has(UB_OK, service("enabled", 600)));
    wait("node a's registration", &has(UA_OK, service("enabled", 600)));

    // the VIM votes on live_migrate_begin for an instance on node b: routed there, answered with its timeout
    let tok = std::fs::read_to_string(&vim_token).unwrap();
    let body = format!(r#"{{"uuid":"{UB_OK}","hostname":"compute-b","action":"live_migrate_begin"}}"#);
    let (code, v) = as_the_vim(relay_port, "POST", &format!("/v1/instances/{UB_OK}/vote"), &body, &tok);
    assert_eq!(code, 200, "{v}");
    assert_eq!(
        (v["uuid"].as_str(), v["action"].as_str(), v["timeout"].as_str()),
        (Some(UB_OK), Some("live_migrate_begin"), Some("9"))
    );
    // its answer comes back to the VIM (through node b's sink and the relay) in the VIM's own terms
    wait("the vote's result", &|s| {
        s.iter().any(|(x, w)| x == UB_OK && matches!(w, VimSaw::Action("live-migrate", "allowed", _)))
    });
    // a token the relay does not accept
    assert_eq!(as_the_vim(relay_port, "POST", &format!("/v1/instances/{UB_OK}/vote"), &body, "wrong").0, 401);

    // a guest on node b hangs: the service goes down, then an alarm the VIM recognises
    wait("the loss", &has(UB_HANG, VimSaw::Alarm("failed".into(), "reboot".into())));
    {
        let s = saw.lock().unwrap();
        let down = s.iter().position(|(x, w)| x == UB_HANG && *w == service("disabled", 0));
        let alarm = s.iter().position(|(x, w)| x == UB_HANG && matches!(w, VimSaw::Alarm(..)));
        assert!(down.is_some() && down < alarm, "service disabled before the alarm: {s:?}");
    }
    // a guest on node a leaves (exit): the VIM knows it left
    wait("the exit", &has(UA_EXIT, service("disabled", 0)));

    // the VIM disables node a's guest services (a host lock): node a stops reporting faults
    let host = r#"{"uuid":"11111111-2222-4333-8444-555555555555","hostname":"compute-a"}"#;
    let (code, v) = as_the_vim(relay_port, "PUT", "/v1/hosts/11111111-2222-4333-8444-555555555555/disable", host, &tok);
    assert_eq!((code, v["state"].as_str()), (200, Some("disabled")), "{v}");
    let (_, g) = admin(&a.d, "GET", "/v1/guests", None);
    assert_eq!(g["reporting"], false, "node a's reporting is off");
    let (code, v) = as_the_vim(relay_port, "PUT", "/v1/hosts/11111111-2222-4333-8444-555555555555/enable", host, &tok);
    assert_eq!((code, v["state"].as_str()), (200, Some("enabled")), "{v}");
    // the instance call: services of one instance, with reporting as state and the heartbeat as status
    let (code, v) = as_the_vim(relay_port, "GET", &format!("/v1/instances/{UB_OK}"), "", &tok);
    assert_eq!(code, 200, "{v}");
    assert_eq!((v["hostname"].as_str(), v["services"][0]["status"].as_str()), (Some("compute-b"), Some("enabled")));

    // the relay restarts, now checking the VIM's tokens with Keystone; it learns the routes again from the
    // nodes' guest lists, before any new report
    drop(relay);
    let keystone = keystone_stand_in();
    let pw = work.path().join("relay-password");
    std::fs::write(&pw, "relay-service-password").unwrap();
    let text = std::fs::read_to_string(&relay_cfg).unwrap();
    let text = text.replace(&format!("vim_token_file = \"{}\"\n", vim_token.display()), "");
    let (nodes_at, _) = text.split_at(text.find("[[node]]").unwrap());
    let keystone_table = format!(
        "[keystone]\nauth_url = \"{}/v3\"\nusername = \"vigil-relay\"\npassword_file = \"{}\"\n",
        keystone.url(),
        pw.display()
    );
    std::fs::write(&relay_cfg, format!("{nodes_at}{}{keystone_table}", &text[nodes_at.len()..])).unwrap();
    let _relay = start_relay();
    let deadline = Instant::now() + Duration::from_secs(30);
    let body = format!(r#"{{"uuid":"{UA_OK}","hostname":"compute-a","action":"pause"}}"#);
    loop {
        let (code, v) = as_the_vim(relay_port, "POST", &format!("/v1/instances/{UA_OK}/notify"), &body, KEYSTONE_VALID);
        if code == 200 {
            assert_eq!(v["timeout"].as_str().map(|t| t != "0"), Some(true), "{v}");
            break;
        }
        assert!(Instant::now() < deadline, "no route after the relay's restart: {code} {v}");
        std::thread::sleep(Duration::from_millis(300));
    }
    // a token Keystone does not know is refused; the lab's static token is no longer configured
    assert_eq!(as_the_vim(relay_port, "POST", &format!("/v1/instances/{UA_OK}/notify"), &body, "forged").0, 401);
    assert_eq!(as_the_vim(relay_port, "POST", &format!("/v1/instances/{UA_OK}/notify"), &body, &tok).0, 401);
    // a valid token is believed for a minute: validated once however often it comes
    let validations = |k: &HttpReceiver| {
        k.requests().iter().filter(|g| g.method == "GET" && g.header("X-Subject-Token") == Some(KEYSTONE_VALID)).count()
    };
    let before = validations(&keystone);
    for _ in 0..3 {
        as_the_vim(relay_port, "POST", &format!("/v1/instances/{UA_OK}/notify"), &body, KEYSTONE_VALID);
    }
    assert_eq!(validations(&keystone), before, "cached");
}

/// The token Keystone knows as valid.
const KEYSTONE_VALID: &str = "vim-keystone-token";

/// A stand-in for Keystone's Identity v3 API with its rules (keystone api-ref, identity v3 "Password authentication
/// with scoped authorization": `POST /v3/auth/tokens` answers 201 with the token in `X-Subject-Token`;
/// "Validate and show information for token": `GET /v3/auth/tokens` needs `X-Auth-Token` (else 401) and
/// `X-Subject-Token`, answers 200 with the token, 404 when the subject token is not valid).
fn keystone_stand_in() -> HttpReceiver {
    HttpReceiver::start(|req, _| {
        if req.path != "/v3/auth/tokens" {
            return (404, vec![], "{}".into());
        }
        let token = r#"{"token":{"expires_at":"2099-01-01T00:00:00.000000Z"}}"#.to_string();
        match req.method.as_str() {
            "POST" => {
                let b = req.json();
                let user = &b["auth"]["identity"]["password"]["user"];
                if user["name"] == "vigil-relay" && user["password"] == "relay-service-password" {
                    (201, vec![("X-Subject-Token".into(), "relay-service-token".into())], token)
                } else {
                    (401, vec![], "{}".into())
                }
            }
            "GET" if req.header("X-Auth-Token") != Some("relay-service-token") => (401, vec![], "{}".into()),
            "GET" if req.header("X-Subject-Token") == Some(KEYSTONE_VALID) => (200, vec![], token),
            "GET" => (404, vec![], "{}".into()),
            _ => (405, vec![], "{}".into()),
        }
    })
}
