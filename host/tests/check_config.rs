//! `vigild check-config`: the shipped example passes; a broken file fails with located, fixable messages.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

fn check(file: &std::path::Path) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_vigild")).arg("check-config").arg(file).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_shipped_example_passes_and_a_broken_file_is_told_line_by_line() {
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../contrib/vigild.toml");
    let (code, out, err) = check(&example);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.ends_with("vigild.toml: OK\n"), "{out}");

    let dir = std::env::temp_dir().join(format!("vigil-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "[defaults]\nspread_phse = false\n").unwrap();
    let (code, _, err) = check(&bad);
    assert_eq!(code, 2);
    assert_eq!(err.trim(), format!("{}:2: spread_phse: unknown option; did you mean `spread_phase`?", bad.display()));
    let _ = std::fs::remove_dir_all(&dir);
}
