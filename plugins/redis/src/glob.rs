//! Glob-style patterns as Redis matches them (`KEYS`, `SCAN MATCH`, `PSUBSCRIBE`,
//! `CONFIG GET`): a faithful port of `stringmatchlen` from Redis's `util.c`.
//!
//! Why not a crate: the glob crates (`glob`, `globset`, `wildmatch`) follow shell or
//! gitignore rules — path separators, `**`, character classes like `[!a]`, errors on an
//! unclosed `[` — while Redis matches bytes with its own quirks: `[^a]` negates, a `[` that
//! never closes still matches, `\` escapes anywhere, ranges may be reversed (`[z-a]`), and
//! a pattern is never invalid. Clients (and `redis-cli --pattern`) depend on exactly that.
//!
//! Two safeguards from later Redis versions are kept: after a `*` fails to match anywhere in
//! the rest of the string, earlier `*`s give up too (without it `a*a*a*...b` is exponential),
//! and recursion stops at 1000 nested `*`s (a pattern is a client's input; the stack is the
//! worker's).

/// How many `*`s may nest before the match gives up (no match), as Redis 7.2+.
const MAX_NESTING: usize = 1000;

/// Whether `string` matches `pattern` (case-sensitive).
pub fn matches(pattern: &[u8], string: &[u8]) -> bool {
    let mut skip_longer = false;
    match_impl(pattern, string, false, &mut skip_longer, 0)
}

/// Whether `string` matches `pattern`, ignoring ASCII case.
pub fn matches_nocase(pattern: &[u8], string: &[u8]) -> bool {
    let mut skip_longer = false;
    match_impl(pattern, string, true, &mut skip_longer, 0)
}

fn match_impl(
    pattern: &[u8],
    string: &[u8],
    nocase: bool,
    skip_longer: &mut bool,
    nesting: usize,
) -> bool {
    if nesting > MAX_NESTING {
        return false;
    }
    // The C code reads one byte past the end (the NUL terminator); `at` returns 0 there.
    let at = |s: &[u8], i: usize| s.get(i).copied().unwrap_or(0);
    let fold = |b: u8| if nocase { b.to_ascii_lowercase() } else { b };
    let (mut p, mut s) = (0usize, 0usize);
    while p < pattern.len() && s < string.len() {
        match pattern[p] {
            b'*' => {
                while p + 1 < pattern.len() && pattern[p + 1] == b'*' {
                    p += 1;
                }
                if p + 1 == pattern.len() {
                    return true;
                }
                while s < string.len() {
                    if match_impl(
                        &pattern[p + 1..],
                        &string[s..],
                        nocase,
                        skip_longer,
                        nesting + 1,
                    ) {
                        return true;
                    }
                    if *skip_longer {
                        return false;
                    }
                    s += 1;
                }
                *skip_longer = true;
                return false;
            }
            b'?' => s += 1,
            b'[' => {
                p += 1;
                let not = at(pattern, p) == b'^';
                if not {
                    p += 1;
                }
                let c = string[s];
                let mut matched = false;
                loop {
                    if at(pattern, p) == b'\\' && pattern.len() - p >= 2 {
                        p += 1;
                        if pattern[p] == c {
                            matched = true;
                        }
                    } else if at(pattern, p) == b']' {
                        break;
                    } else if p >= pattern.len() {
                        // An unclosed `[`: step back so the loop's advance ends the pattern.
                        p -= 1;
                        break;
                    } else if pattern.len() - p >= 3 && pattern[p + 1] == b'-' {
                        let (mut start, mut end) = (pattern[p], pattern[p + 2]);
                        if start > end {
                            std::mem::swap(&mut start, &mut end);
                        }
                        let (start, end, c) = (fold(start), fold(end), fold(c));
                        p += 2;
                        if c >= start && c <= end {
                            matched = true;
                        }
                    } else if fold(pattern[p]) == fold(c) {
                        matched = true;
                    }
                    p += 1;
                }
                if not {
                    matched = !matched;
                }
                if !matched {
                    return false;
                }
                s += 1;
            }
            other => {
                let literal = if other == b'\\' && pattern.len() - p >= 2 {
                    p += 1;
                    pattern[p]
                } else {
                    other
                };
                if fold(literal) != fold(string[s]) {
                    return false;
                }
                s += 1;
            }
        }
        p += 1;
        if s == string.len() {
            while at(pattern, p) == b'*' {
                p += 1;
            }
            break;
        }
    }
    p >= pattern.len() && s == string.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, s: &str) -> bool {
        matches(p.as_bytes(), s.as_bytes())
    }

    #[test]
    fn redis_glob_semantics() {
        assert!(m("*", "anything"));
        // As in Redis: the loop needs a byte of string, so `*` alone does not match "" (KEYS
        // and SCAN special-case the pattern `*`).
        assert!(!m("*", ""));
        assert!(m("h?llo", "hello"));
        assert!(!m("h?llo", "hllo"));
        assert!(m("h*llo", "heeeello"));
        assert!(m("h[ae]llo", "hallo"));
        assert!(!m("h[ae]llo", "hillo"));
        assert!(m("h[^e]llo", "hallo"));
        assert!(!m("h[^e]llo", "hello"));
        assert!(m("h[a-b]llo", "hbllo"));
        assert!(m("h[b-a]llo", "hallo"), "reversed ranges");
        assert!(m("h\\*llo", "h*llo"));
        assert!(!m("h\\*llo", "hello"));
        assert!(m("user:*:name", "user:42:name"));
        assert!(!m("user:*:name", "user:42:age"));
        assert!(m("a*", "a"));
        assert!(m("a**", "a"));
        assert!(!m("", "a"));
        assert!(m("", ""));
        assert!(m("[a", "a"), "an unclosed [ still matches");
        assert!(m("[\\]]", "]"));
        assert!(!m("abc", "ab"));
        assert!(!m("ab", "abc"));
        assert!(matches_nocase(b"HE*", b"hello"));
    }

    #[test]
    fn pathological_patterns_are_bounded() {
        let p = "a*".repeat(40) + "b";
        let s = "a".repeat(60);
        assert!(!m(&p, &s));
        let deep = "*a".repeat(5000);
        assert!(!m(&deep, &"a".repeat(4000)));
    }
}
