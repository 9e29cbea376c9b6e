//! `vigild check-config FILE`: every problem of a configuration file, each naming the file, the line and the option,
//! what is wrong and what would be right (issue #24). Unknown options are errors with the nearest valid name; a
//! socket pattern that can never match a socket vigild could connect to is refused.

use std::path::Path;

use crate::config::FileConfig;

/// The longest path a UNIX socket address holds (`sun_path` is 108 bytes with its terminating NUL).
pub const SUN_PATH_MAX: usize = 107;

/// One problem, located.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// The option (`table.key`), when known.
    pub option: Option<String>,
    /// What is wrong, and what would be right.
    pub message: String,
}

impl Finding {
    /// `FILE:LINE: OPTION: message`.
    pub fn render(&self, file: &Path) -> String {
        let mut s = file.display().to_string();
        if let Some(l) = self.line {
            s.push_str(&format!(":{l}"));
        }
        if let Some(o) = &self.option {
            s.push_str(&format!(": {o}"));
        }
        format!("{s}: {}", self.message)
    }
}

/// Checks the text of a configuration file; no finding means vigild would start with it.
pub fn check_text(text: &str) -> Vec<Finding> {
    let cfg: FileConfig = match toml::from_str(text) {
        Ok(c) => c,
        Err(e) => return vec![from_toml_error(text, &e)],
    };
    let mut out = Vec::new();
    if let Err(msg) = cfg.validate() {
        let option = option_in(&msg);
        out.push(Finding { line: option.as_deref().and_then(|o| line_of_key(text, o)), option, message: msg });
    }
    let pattern = cfg.pattern.clone().unwrap_or_else(|| "cgcs.heartbeat.*.sock".into());
    let dirs = if cfg.watch.is_empty() { vec![std::path::PathBuf::from("/var/lib/libvirt/qemu")] } else { cfg.watch };
    for dir in &dirs {
        if let Some(m) = unreachable_pattern(dir, &pattern) {
            out.push(Finding { line: line_of_key(text, "pattern"), option: Some("pattern".into()), message: m });
        }
    }
    if let Some(h) = &cfg.hotplug {
        if let Some(dir) = h.socket_dir.as_ref().or(dirs.first()) {
            // cgcs.heartbeat.<uuid>.sock: 36 characters of UUID
            let longest = dir.as_os_str().len() + 1 + "cgcs.heartbeat..sock".len() + 36;
            if longest > SUN_PATH_MAX {
                out.push(Finding {
                    line: line_of_key(text, "socket_dir"),
                    option: Some("hotplug.socket_dir".into()),
                    message: format!(
                        "{}: a channel socket there would be {longest} bytes long, more than a UNIX socket address \
                         holds ({SUN_PATH_MAX}); use a shorter directory",
                        dir.display()
                    ),
                });
            }
        }
    }
    out
}

/// Checks `path`.
pub fn check_file(path: &Path) -> Vec<Finding> {
    match std::fs::read_to_string(path) {
        Ok(text) => check_text(&text),
        Err(e) => vec![Finding { line: None, option: None, message: format!("cannot read it: {e}") }],
    }
}

/// A pattern whose shortest match under `dir` is longer than a socket address can hold never matches a socket
/// vigild could connect to.
pub fn unreachable_pattern(dir: &Path, pattern: &str) -> Option<String> {
    let shortest = pattern.chars().filter(|&c| c != '*').map(char::len_utf8).sum::<usize>();
    let total = dir.as_os_str().len() + 1 + shortest;
    (total > SUN_PATH_MAX).then(|| {
        format!(
            "{pattern:?} under {} can only match paths of {total} bytes or more, longer than a UNIX socket address \
             holds ({SUN_PATH_MAX}): no socket can match it; shorten the pattern or the directory",
            dir.display()
        )
    })
}

fn from_toml_error(text: &str, e: &toml::de::Error) -> Finding {
    let line = e.span().map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
    let msg = e.message().trim().to_string();
    // serde's words: "unknown field `x`, expected one of `a`, `b`" (or "expected `a`")
    if let Some(rest) = msg.strip_prefix("unknown field `") {
        let (field, expected) = rest.split_once('`').unwrap_or((rest, ""));
        let names: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
        let fix = nearest(field, &names)
            .map_or_else(|| format!("valid options here: {}", names.join(", ")), |n| format!("did you mean `{n}`?"));
        return Finding { line, option: Some(field.to_string()), message: format!("unknown option; {fix}") };
    }
    Finding { line, option: None, message: msg }
}

/// The valid name closest to `given` (edit distance at most a third of its length, at least 2).
pub fn nearest<'a>(given: &str, names: &[&'a str]) -> Option<&'a str> {
    let limit = (given.len() / 3).max(2);
    names.iter().map(|n| (distance(given, n), *n)).filter(|(d, _)| *d <= limit).min().map(|(_, n)| n)
}

fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb)).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The option a validation message is about: its first word, up to `:`, ` =` or a space.
fn option_in(msg: &str) -> Option<String> {
    let word: String = msg.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '.').collect();
    (!word.is_empty() && word != "guest").then_some(word)
}

/// The first line that sets `option` (its last dotted part) or opens its table.
fn line_of_key(text: &str, option: &str) -> Option<usize> {
    let key = option.rsplit('.').next().unwrap_or(option);
    text.lines()
        .position(|l| {
            let l = l.trim_start();
            l.strip_prefix(key).is_some_and(|r| r.trim_start().starts_with('='))
                || l.starts_with(&format!("[{key}]"))
                || l.starts_with(&format!("[{option}]"))
        })
        .map(|i| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_option_is_named_with_its_line_and_the_nearest_valid_name() {
        let f = check_text("watch = [\"/run/vigil\"]\n\n[defaults]\nintervl_ms = 500\n");
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!((f[0].line, f[0].option.as_deref()), (Some(4), Some("intervl_ms")));
        assert!(f[0].message.contains("did you mean `interval_ms`?"), "{}", f[0].message);
        let f = check_text("[hotplug]\ndomain = [\"web-*\"]\n");
        assert!(f[0].message.contains("`domains`") && f[0].line == Some(2), "{f:?}");
        assert_eq!(
            f[0].render(Path::new("/etc/vigil/vigild.toml")),
            "/etc/vigil/vigild.toml:2: domain: unknown option; did you mean `domains`?"
        );
    }

    #[test]
    fn a_bad_value_is_located_and_says_what_would_be_right() {
        let f = check_text("# comment\n[defaults]\ninterval_ms = 10\n");
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!((f[0].line, f[0].option.as_deref()), (Some(3), Some("interval_ms")));
        assert!(f[0].message.contains("at least 100"), "{}", f[0].message);
        let f = check_text("[defaults]\nloss_threshold = \"two\"\n");
        assert_eq!(f[0].line, Some(2), "{f:?}");
    }

    #[test]
    fn a_pattern_no_socket_can_match_is_refused() {
        let long = format!("cgcs.heartbeat.{}.*.sock", "x".repeat(90));
        let f = check_text(&format!("watch = [\"/var/lib/libvirt/qemu\"]\npattern = \"{long}\"\n"));
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!((f[0].line, f[0].option.as_deref()), (Some(2), Some("pattern")));
        assert!(f[0].message.contains("no socket can match it"), "{}", f[0].message);
        assert!(check_text("pattern = \"cgcs.heartbeat.*.sock\"\n").is_empty());
        assert!(check_text("").is_empty(), "no file content: every default");
    }

    #[test]
    fn nearest_names_are_close_ones_only() {
        assert_eq!(nearest("pattren", &["pattern", "watch"]), Some("pattern"));
        assert_eq!(nearest("zzzzzz", &["pattern", "watch"]), None);
    }
}
