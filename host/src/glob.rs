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
        matches(&self.text, name)
    }

    /// If `name` matches, the guest id it names (never empty): the shortest text the first `*` can take so that
    /// the rest of the name matches the rest of the pattern.
    pub fn guest_id(&self, name: &str) -> Option<String> {
        let Some(star) = self.text.find('*') else {
            return (self.is_match(name) && !name.is_empty()).then(|| name.to_string());
        };
        // the part before the first star has no star: it matches one character per character
        let mut start = 0;
        for p in self.text[..star].chars() {
            let c = name[start..].chars().next()?;
            if p != '?' && p != c {
                return None;
            }
            start += c.len_utf8();
        }
        let rest = &self.text[star + 1..];
        let mut end = start;
        loop {
            if matches(rest, &name[end..]) {
                return (end > start).then(|| name[start..end].to_string());
            }
            end += name[end..].chars().next()?.len_utf8();
        }
    }
}

/// Whether `name` matches `pattern`, without allocating. Names and patterns are ASCII in practice (instance
/// UUIDs, libvirt's names): those are walked a byte at a time (a rescan matches every socket of the node, ~40
/// bytes each); others a character at a time.
fn matches(pattern: &str, name: &str) -> bool {
    if pattern.is_ascii() && name.is_ascii() {
        walk(pattern, name, |s, i| s.as_bytes().get(i).map(|&b| (char::from(b), 1)))
    } else {
        walk(pattern, name, |s, i| s.get(i..).and_then(|t| t.chars().next()).map(|c| (c, c.len_utf8())))
    }
}

/// The matcher, over `next(text, at)`: the character at byte `at` and its length. Characters are matched in turn;
/// at a mismatch the last `*` seen takes one more character and matching resumes after it (a later star never
/// needs to give back what an earlier one took, so remembering the last one is enough).
#[inline(always)]
fn walk(pattern: &str, name: &str, next: impl Fn(&str, usize) -> Option<(char, usize)>) -> bool {
    let (mut p, mut n) = (0, 0);
    // after the last star: where the pattern resumes, and where in the name that star's span ends
    let mut star: Option<(usize, usize)> = None;
    loop {
        match (next(pattern, p), next(name, n)) {
            (Some(('*', _)), _) => {
                p += 1;
                star = Some((p, n));
            }
            (Some((pc, pl)), Some((nc, nl))) if pc == '?' || pc == nc => {
                p += pl;
                n += nl;
            }
            (None, None) => return true,
            _ => {
                let Some((resume, taken)) = star else { return false };
                let Some((_, len)) = next(name, taken) else { return false };
                p = resume;
                n = taken + len;
                star = Some((resume, n));
            }
        }
    }
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

    /// The matcher as first written (backtracking over every span of every star, one `Vec<char>` per call):
    /// simple enough to be right by reading, the yardstick of the one in use.
    fn reference(p: &str, n: &str) -> (bool, Option<String>) {
        fn go(p: &[char], pi: usize, n: &[char], ni: usize, cap: &mut Option<(usize, usize)>, first: bool) -> bool {
            match p.get(pi) {
                None => ni == n.len(),
                Some('*') => {
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
        let (pc, nc): (Vec<char>, Vec<char>) = (p.chars().collect(), n.chars().collect());
        let mut cap = None;
        if !go(&pc, 0, &nc, 0, &mut cap, true) {
            return (false, None);
        }
        let id = cap.map_or_else(|| n.to_string(), |(a, b)| nc[a..b].iter().collect());
        (true, (!id.is_empty()).then_some(id))
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4000))]
        /// Patterns and names over a small alphabet (with a two-byte and a three-byte character), so that stars,
        /// question marks and literals meet often: the matcher and the ids agree with the yardstick's.
        #[test]
        fn the_matcher_agrees_with_the_backtracking_yardstick(p in "[ab.*?é€]{1,8}", n in "[ab.é€]{0,12}") {
            let pattern = Pattern::new(&p).unwrap();
            let (is, id) = reference(&p, &n);
            proptest::prop_assert_eq!(pattern.is_match(&n), is, "pattern {:?} name {:?}", p, n);
            proptest::prop_assert_eq!(pattern.guest_id(&n), id, "pattern {:?} name {:?}", p, n);
        }
    }
}
