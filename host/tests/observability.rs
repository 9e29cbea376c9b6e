//! What operators import beside vigild, held to what vigild exports (issue #24): the Prometheus alerting rules
//! pass `promtool check rules` and their unit tests (`promtool test rules`); every expression of the Grafana
//! dashboard parses as PromQL (checked by promtool as recording rules) and every `vigil_*` name in the dashboard
//! and the rules is one a running vigild (with a spool and a sink) exports.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::vm::which;
use common::*;

fn contrib() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../contrib")
}

fn promtool(args: &[&str], dir: &Path) -> String {
    let bin = which("promtool").expect("promtool not found: install Debian's prometheus (scripts/test.sh does)");
    let out = Command::new(bin).args(args).current_dir(dir).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "promtool {args:?}:\n{text}");
    text
}

fn vigil_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let b = text.as_bytes();
    let mut i = 0;
    while let Some(p) = text[i..].find("vigil_") {
        let start = i + p;
        let end = start + b[start..].iter().take_while(|c| c.is_ascii_alphanumeric() || **c == b'_').count();
        // a name, not part of a longer word or a label value in a URL
        if start == 0 || !(b[start - 1].is_ascii_alphanumeric() || b[start - 1] == b'_' || b[start - 1] == b'-') {
            out.insert(text[start..end].to_string());
        }
        i = end;
    }
    out
}

#[test]
fn rules_and_dashboard_parse_pass_their_tests_and_name_only_exported_metrics() {
    let prom = contrib().join("prometheus");
    promtool(&["check", "rules", "vigil-rules.yml"], &prom);
    let tested = promtool(&["test", "rules", "vigil-rules.test.yml"], &prom);
    assert!(tested.contains("SUCCESS"), "{tested}");

    // the dashboard's expressions, with Grafana's variables given values, as recording rules for promtool to parse
    let dash: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(contrib().join("grafana/vigil-dashboard.json")).unwrap())
            .unwrap();
    let mut exprs: Vec<String> = dash["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap().iter().map(|t| t["expr"].as_str().unwrap().to_string()))
        .collect();
    assert!(exprs.len() >= 10, "{exprs:?}");
    let work = TempDir::new("obs");
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, e) in exprs.iter().enumerate() {
        let e = e.replace("$__rate_interval", "5m").replace("$instance", ".*");
        rules.push_str(&format!("      - record: dashboard:expr{i}\n        expr: '{}'\n", e.replace('\'', "''")));
    }
    std::fs::write(work.path().join("dashboard-rules.yml"), rules).unwrap();
    promtool(&["check", "rules", "dashboard-rules.yml"], work.path());
    exprs.push(dash["templating"]["list"][1]["query"].as_str().unwrap().to_string());

    // what a vigild with a spool and a sink exports
    let dir = work.path().join("sockets");
    std::fs::create_dir_all(&dir).unwrap();
    let state = work.path().join("state");
    let d = Vigild::start(
        &dir,
        work.path(),
        &["--state-dir", state.to_str().unwrap(), "--webhook", "http://127.0.0.1:9/x"],
    );
    d.wait_ready();
    // a guest that sends garbage, so that the per-kind protocol-error counter has a sample
    let listener = std::os::unix::net::UnixListener::bind(dir.join("cgcs.heartbeat.noisy.sock")).unwrap();
    let (mut guest, _) = listener.accept().unwrap();
    std::io::Write::write_all(&mut guest, b"this is not json\n").unwrap();
    let mut exported = BTreeSet::new();
    for _ in 0..50 {
        let got = vigil_host::control::client::request(&d.admin, "GET", "/metrics", None, Duration::from_secs(10));
        if let Ok((200, body)) = got {
            for line in body.lines().filter(|l| l.starts_with("# TYPE ")) {
                let mut f = line.split_whitespace().skip(2);
                let (name, kind) = (f.next().unwrap(), f.next().unwrap_or(""));
                match kind {
                    "counter" if name.ends_with("_total") => exported.insert(name.to_string()),
                    "counter" => exported.insert(format!("{name}_total")),
                    "histogram" => ["_bucket", "_sum", "_count"].iter().all(|s| exported.insert(format!("{name}{s}"))),
                    _ => exported.insert(name.to_string()),
                };
            }
            if exported.iter().any(|n| n.starts_with("vigil_sink_")) && exported.contains("vigil_protocol_errors_total")
            {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let rules_text = std::fs::read_to_string(prom.join("vigil-rules.yml")).unwrap();
    let used: BTreeSet<String> = exprs.iter().flat_map(|e| vigil_names(e)).chain(vigil_names(&rules_text)).collect();
    let unknown: Vec<&String> = used.iter().filter(|n| !exported.contains(*n)).collect();
    assert!(unknown.is_empty(), "names vigild does not export: {unknown:?}\nexported: {exported:?}");
    assert!(used.len() >= 12, "{used:?}");
}
