//! The data-plane benchmark's binary works (a 3-second run with 50 guests): it prints its table with a floor row,
//! a vigild row, the memory line and the ratio line. No timing is asserted; the numbers live in BENCHMARKS.md.
//!
//! `vigil-bench` runs `vigild` and `vigil-sim` from beside itself (one target directory): cargo builds another
//! package's binaries only when asked, so the test asks first (a no-op when `cargo test --workspace` built them).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

#[test]
fn vigil_bench_smoke_prints_its_table() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let built = Command::new(cargo).args(["build", "-q", "-p", "vigil-host", "--bins"]).status().expect("cargo");
    assert!(built.success(), "cargo build -p vigil-host --bins");
    let out = Command::new(env!("CARGO_BIN_EXE_vigil-bench")).arg("--smoke").output().expect("vigil-bench");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.lines().any(|l| l.starts_with("| floor | 50 |")), "{text}");
    let vigild = text.lines().find(|l| l.starts_with("| vigild | 50 |")).unwrap_or_else(|| panic!("{text}"));
    // | host | guests | interval | hb/s | CPU | wake-ups | syscalls | RSS | RSS/guest | RTT | detection | false faults | sims |
    let cells: Vec<&str> = vigild.split('|').map(str::trim).collect();
    assert_eq!(cells.get(12), Some(&"0"), "no false fault in the smoke run: {vigild}");
    assert!(text.contains("vigild/floor CPU per heartbeat: "), "{text}");
    let mem = text.lines().find(|l| l.starts_with("memory (N = 50): RSS ")).unwrap_or_else(|| panic!("{text}"));
    assert!(!mem.contains("anonymous 0.0 MiB"), "the anonymous part is read: {mem}");
}
