//! The status page in a real browser (Debian's headless Chromium): vigild serves `/` on its read-only listener;
//! with a few simulated guests, one of them hung, the page shows the guests by state, the lost guest with its fault,
//! and the latest events; a guest id with HTML in it is shown as text, never as markup. A screenshot is taken and
//! must be a PNG. Chromium exits by itself after each run (killed after 60 s if not).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::vm::which;
use common::*;

fn chromium(args: &[&str], url: &str) -> Vec<u8> {
    let bin = which("chromium").expect("chromium not found: install Debian's chromium (scripts/test.sh does)");
    let profile = TempDir::new("chromium");
    let mut child = Command::new(bin)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("chromium did not finish within 60 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut out = Vec::new();
    std::io::Read::read_to_end(child.stdout.as_mut().unwrap(), &mut out).unwrap();
    out
}

#[test]
fn the_status_page_shows_guests_faults_and_events_in_a_real_browser() {
    let _serial = heavy();
    let work = TempDir::new("page");
    let dir = work.path().join("sockets");
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let d = Vigild::start(&dir, work.path(), &["--web-listen-address", &listen]);
    d.wait_ready();
    // three guests, one of which hangs after 2 s; the prefix puts markup into every guest id
    let _sim = sim(
        &dir,
        &["--guests", "3", "--hang", "1", "--interval-ms", "300", "--fail-after-secs", "2", "--prefix", "x<i>"],
    );
    d.wait_until(30, "the hung guest lost", |ev| count(ev, "heartbeat_lost") == 1);

    let url = format!("http://{listen}/");
    let dom = String::from_utf8(chromium(&["--dump-dom"], &url)).unwrap();
    assert!(dom.contains("<h1>vigild on "), "{dom}");
    assert!(dom.contains("<h2>Guests: 3</h2>"), "{dom}");
    assert!(dom.contains("<td>lost</td><td class=\"bad\">1</td>"), "{dom}");
    assert!(dom.contains("heartbeat_lost"), "the lost guest's open fault and the event: {dom}");
    assert!(dom.contains("x&lt;i&gt;-hang-00000"), "the id is text: {dom}");
    assert!(!dom.contains("<i>"), "no markup from a guest id: {dom}");
    assert!(dom.contains("Latest events") && dom.contains("registered"), "{dom}");

    let shot = work.path().join("status.png");
    chromium(&[&format!("--screenshot={}", shot.display()), "--window-size=1280,900"], &url);
    let png = std::fs::read(&shot).expect("a screenshot");
    assert!(png.len() > 10_000 && png.starts_with(b"\x89PNG\r\n\x1a\n"), "{} bytes", png.len());
    // kept past the test, for a human to look at
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"), std::path::PathBuf::from);
    let kept = target.join("status-page.png");
    std::fs::write(&kept, &png).unwrap();
    eprintln!("status page screenshot: {}", kept.display());

    // the read-only listener serves nothing else
    let (status, _) = http("POST", port, "/v1/reporting", Some("{}")).unwrap();
    assert_eq!(status, 404);
    let (status, body) = http("GET", port, "/metrics", None).unwrap();
    assert!(status == 200 && body.contains("vigil_guests"), "{status} {body}");
}
