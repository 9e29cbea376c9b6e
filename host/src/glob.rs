//! File-name patterns for socket discovery: `*` (any run of characters) and `?` (one character); nothing else
//! is special. The guest id is the text the first `*` matched (the whole name if the pattern has none), so
//! `cgcs.heartbeat.*.sock` maps `cgcs.heartbeat.<uuid>.sock` to `<uuid>`.

/// A compiled file-name pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pattern {
    text: String,
}

impl Pattern {
    /// Compiles `text`; an empty pattern or one with `/` is refused.
    pub fn new(text: &str) -> Result<Self, String> {
        if text.is_empty() || text.contains('/') {
            return Err(format!("invalid pattern {text:?}: must be a non-empty file name"));
        }
        Ok(Pattern { text: text.to_string() })
    }

    /// The pattern's text.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether `name` matches (a `*` may match nothing).
    pub fn is_match(&self, name: &str) -> bool {
        let p: Vec<char> = self.text.chars().collect();
        let n: Vec<char> = name.chars().collect();
        matches(&p, &n, &mut None, false)
    }

    /// If `name` matches, the guest id it names (never empty).
    pub fn guest_id(&self, name: &str) -> Option<String> {
        let p: Vec<char> = self.text.chars().collect();
        let n: Vec<char> = name.chars().collect();
        let mut capture = None;
        if !matches(&p, &n, &mut capture, true) {
            return None;
        }
        let id = match capture {
            Some((a, b)) => n[a..b].iter().collect::<String>(),
            None => name.to_string(),
        };
        (!id.is_empty()).then_some(id)
    }
}

/// Backtracking matcher; records the span of the first `*` on success.
fn matches(p: &[char], n: &[char], capture: &mut Option<(usize, usize)>, first_star: bool) -> bool {
    fn go(p: &[char], pi: usize, n: &[char], ni: usize, cap: &mut Option<(usize, usize)>, first: bool) -> bool {
        match p.get(pi) {
            None => ni == n.len(),
            Some('*') => {
                // Shortest match first for later stars; longest-first for the capture would be surprising either
                // way, so the first star takes the shortest span that lets the rest match.
                for end in ni..=n.len() {
                    if go(p, pi + 1, n, end, cap, false) {
                        if first {
                            *cap = Some((ni, end));
                        }
                        return true;
                    }
                }
                false
            }
            Some('?') => ni < n.len() && go(p, pi + 1, n, ni + 1, cap, first),
            Some(c) => n.get(ni) == Some(c) && go(p, pi + 1, n, ni + 1, cap, first),
        }
    }
    go(p, 0, n, 0, capture, first_star)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_pattern_extracts_the_instance_uuid() {
        let p = Pattern::new("cgcs.heartbeat.*.sock").unwrap();
        assert_eq!(
            p.guest_id("cgcs.heartbeat.3f1c2d9e-0000-4000-8000-000000000001.sock").as_deref(),
            Some("3f1c2d9e-0000-4000-8000-000000000001")
        );
        assert_eq!(p.guest_id("cgcs.heartbeat.a.b.sock").as_deref(), Some("a.b"));
        assert_eq!(p.guest_id("cgcs.heartbeat..sock"), None, "empty id");
        assert_eq!(p.guest_id("other.sock"), None);
        assert_eq!(p.guest_id("cgcs.heartbeat.x.sock.tmp"), None);
    }

    #[test]
    fn question_marks_and_literal_patterns() {
        assert_eq!(Pattern::new("vm?.sock").unwrap().guest_id("vm1.sock").as_deref(), Some("vm1.sock"));
        assert_eq!(Pattern::new("vm?.sock").unwrap().guest_id("vm12.sock"), None);
        assert!(Pattern::new("a/b").is_err());
        assert!(Pattern::new("").is_err());
    }
}
