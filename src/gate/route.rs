//! Route matching on normalized paths.
//!
//! An attacker picks the spelling of a path; the upstream framework decides what it means. The
//! gate therefore matches a **superset** of what any framework would route to a gated handler:
//! the path is percent-decoded, ASCII case-folded, `;params` are cut from every segment, repeated
//! slashes are collapsed, dot segments are resolved, a trailing slash is dropped and format
//! suffixes (`/sign-up.json`, any `.x` as Rails reads them, stacked or not) are removed from the
//! last segment; a `%` that decoding leaves is
//! written `%25`, so the normal form is a fixed point. Configured route paths go through the
//! same function, so both sides compare like with like.
//!
//! Spellings that frameworks disagree on — an encoded `/` or `\`, a NUL, a raw backslash, double
//! encoding (`%25xx`) or a broken escape — are refused when, read any of those ways, the path
//! lands on or under a gated route. The request is always forwarded with its original path.

/// How a request path relates to the gated routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathMatch {
    /// No gated route matches: stream the request through.
    Ungated,
    /// The path matches the gated route with this index (in configuration order).
    Gated(usize),
    /// The path is spelled in a way frameworks read differently and could reach a gated route.
    Refused,
}

/// Gated route paths, normalized once at snapshot build time.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    paths: Vec<(String, usize)>,
    /// Per route: the routes with its normalized path (itself included), in config order.
    groups: Vec<Vec<usize>>,
}

impl RouteTable {
    /// Builds the table from route paths in configuration order.
    pub fn new<'a>(paths: impl IntoIterator<Item = &'a str>) -> Self {
        let paths: Vec<(String, usize)> = paths
            .into_iter()
            .enumerate()
            .map(|(i, p)| (normalize(p), i))
            .collect();
        let groups = paths
            .iter()
            .map(|(p, _)| {
                paths
                    .iter()
                    .filter(|(q, _)| q == p)
                    .map(|(_, j)| *j)
                    .collect()
            })
            .collect();
        RouteTable { paths, groups }
    }

    /// The gated routes whose path is route `i`'s (itself included), in configuration order:
    /// routes may share a path with different methods. Computed when the table is built.
    pub fn same_path(&self, i: usize) -> &[usize] {
        self.groups.get(i).map_or(&[], Vec::as_slice)
    }

    /// Matches a request path (as received, without the query).
    pub fn find(&self, raw_path: &str) -> PathMatch {
        if self.paths.is_empty() {
            return PathMatch::Ungated;
        }
        // The common case: a plain path whose normal form is its own ASCII-lowercase spelling
        // (minus a trailing slash and a format suffix) is matched without allocating.
        if let Some(core) = plain_core(raw_path) {
            return match self.paths.iter().find(|(p, _)| {
                let p = p.strip_prefix('/').unwrap_or(p);
                p.eq_ignore_ascii_case(core)
            }) {
                Some((_, idx)) => PathMatch::Gated(*idx),
                None => PathMatch::Ungated,
            };
        }
        self.find_normalized(raw_path)
    }

    /// [`RouteTable::find`] by full normalization (every spelling).
    fn find_normalized(&self, raw_path: &str) -> PathMatch {
        if self.paths.is_empty() {
            return PathMatch::Ungated;
        }
        let suspicious = is_suspicious(raw_path);
        let normalized = normalize(raw_path);
        if let Some(idx) = self.exact(&normalized) {
            return if suspicious {
                PathMatch::Refused
            } else {
                PathMatch::Gated(idx)
            };
        }
        if suspicious {
            // Read it every way a framework might: decoded once more (double encoding), with
            // backslashes as slashes; refuse if any reading lands on or under a gated route.
            let twice = normalize(&percent_decode_lossy(raw_path));
            // And the way servers that do not treat an encoded slash as a separator see it.
            let kept = normalize(&raw_path.replace("%2F", "%252F").replace("%2f", "%252F"));
            for candidate in [&normalized, &twice, &kept] {
                if self.on_or_under(candidate) {
                    return PathMatch::Refused;
                }
            }
        }
        PathMatch::Ungated
    }

    fn exact(&self, normalized: &str) -> Option<usize> {
        self.paths
            .iter()
            .find(|(p, _)| p == normalized)
            .map(|(_, i)| *i)
    }

    fn on_or_under(&self, normalized: &str) -> bool {
        self.paths.iter().any(|(p, _)| {
            normalized == p
                || (normalized.starts_with(p.as_str())
                    && (p == "/" || normalized.as_bytes().get(p.len()) == Some(&b'/')))
        })
    }
}

/// For a *plain* path — starting with `/`, no `%`, `;`, `\`, whitespace or control
/// characters, no empty segment (but one trailing `/`), no `.` or `..` segment — the slice `c`
/// such that `normalize(raw) == "/" + c.to_ascii_lowercase()`: the path without its leading
/// and trailing slash, and with the format suffix and trailing dots of its last segment cut
/// (both are prefixes, so no allocation). `None` for any other path, which then goes through
/// [`normalize`]. A proptest holds the two equal.
fn plain_core(raw: &str) -> Option<&str> {
    let body = raw.strip_prefix('/')?;
    // One pass over the bytes: each one plain, and no empty, `.` or `..` segment.
    let mut start = 0;
    for (i, &c) in body.as_bytes().iter().enumerate() {
        if c == b'/' {
            if is_dot_segment(&body[start..i]) && i + 1 < body.len() {
                return None;
            }
            start = i + 1;
        } else if matches!(c, b'%' | b';' | b'\\' | b' ' | b'\t' | 0x7f)
            || !(0x20..0x80).contains(&c)
        {
            return None;
        }
    }
    // One trailing slash is dropped.
    let body = body.strip_suffix('/').unwrap_or(body);
    if body.is_empty() {
        return Some(body);
    }
    if start > body.len() {
        // The trailing slash ended the last segment; the one before it is the last.
        start = body.rfind('/').map_or(0, |i| i + 1);
    }
    if is_dot_segment(&body[start..]) {
        return None;
    }
    let last = &body[start..];
    let mut end = last.len();
    loop {
        let before = end;
        while end > 1 && last.as_bytes().get(end - 1) == Some(&b'.') {
            end -= 1;
        }
        let cur = last.get(..end).unwrap_or("");
        if let Some(dot) = cur.rfind('.') {
            let ext = &cur[dot + 1..];
            if dot > 0 && !ext.is_empty() {
                end = dot;
            }
        }
        if end == before {
            break;
        }
    }
    if last.get(..end) == Some(".") {
        return None;
    }
    body.get(..start + end)
}

/// An empty, `.` or `..` path segment.
fn is_dot_segment(s: &str) -> bool {
    matches!(s, "" | "." | "..")
}

/// True when the raw path contains a spelling that frameworks disagree on.
fn is_suspicious(raw: &str) -> bool {
    let b = raw.as_bytes();
    if b.iter()
        .any(|&c| c == b'\\' || c == 0 || c < 0x20 || c == 0x7f)
    {
        return true;
    }
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3);
            match hex.and_then(|h| std::str::from_utf8(h).ok()) {
                Some(h) if h.bytes().all(|c| c.is_ascii_hexdigit()) => {
                    let v = u8::from_str_radix(h, 16).unwrap_or(0);
                    if matches!(v, b'/' | b'\\' | 0 | b'%') || v < 0x20 || v == 0x7f {
                        return true;
                    }
                    i += 3;
                    continue;
                }
                _ => return true,
            }
        }
        i += 1;
    }
    false
}

/// Decodes every valid `%XX` escape; bytes that are not UTF-8 are replaced.
fn percent_decode_lossy(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// Normalizes a path for matching (see the module docs). Never fails.
pub fn normalize(raw: &str) -> String {
    let decoded = percent_decode_lossy(raw);
    // C-based servers stop at a NUL: read the path the way they would.
    let decoded = decoded.split('\0').next().unwrap_or("");
    let mut segments: Vec<String> = Vec::new();
    for seg in decoded.split(['/', '\\']) {
        // Matrix parameters: `/sign-up;jsessionid=1` routes like `/sign-up` in Java and others.
        let seg = seg.split(';').next().unwrap_or("");
        let seg = seg.trim_end_matches([' ', '\t']);
        match seg {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s.to_ascii_lowercase()),
        }
    }
    // A last segment cut down to `.` (`..a` → `.`) is a dot segment: drop it and cut the new last.
    while let Some(last) = segments.last_mut() {
        // Format suffixes and trailing dots (`/sign-up.`, dropped by some frameworks too) are
        // cut until none is left, so the normal form is a fixed point (`/a.b.`, `/a.b.c` → `/a`).
        loop {
            let before = last.len();
            while (last.ends_with('.') && last.len() > 1) || last.ends_with([' ', '\t']) {
                last.pop();
            }
            if let Some(dot) = last.rfind('.') {
                let ext = &last[dot + 1..];
                // Any suffix, not only letters and digits: Rails' `(.:format)` takes `[^./?]+`,
                // so `/sign-up.x-y` reaches the sign-up handler there.
                if dot > 0 && !ext.is_empty() {
                    last.truncate(dot);
                }
            }
            if last.len() == before {
                break;
            }
        }
        if !matches!(last.as_str(), "." | "") {
            break;
        }
        segments.pop();
    }
    // A `%` left after decoding is literal; it is written as `%25` so that normalizing the
    // normal form again decodes it back to the same `%` instead of reading a new escape out of
    // it (`%%42ff` decodes to `%Bff`, which must not become byte 0xBF on a second pass).
    let mut out = String::with_capacity(raw.len() + 1);
    for s in &segments {
        out.push('/');
        if s.contains('%') {
            out.push_str(&s.replace('%', "%25"));
        } else {
            out.push_str(s);
        }
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalization_table() {
        let cases = [
            ("/api/sign-up", "/api/sign-up"),
            ("/API/Sign-Up", "/api/sign-up"),
            ("/api/sign-up/", "/api/sign-up"),
            ("//api///sign-up", "/api/sign-up"),
            ("/api/./sign-up", "/api/sign-up"),
            ("/api/x/../sign-up", "/api/sign-up"),
            ("/../api/sign-up", "/api/sign-up"),
            ("/api/sign-up;jsessionid=1", "/api/sign-up"),
            ("/api;v=1/sign-up", "/api/sign-up"),
            ("/api/sign-up.json", "/api/sign-up"),
            ("/api/sign-up.", "/api/sign-up"),
            ("/api/sign-up.x-y", "/api/sign-up"),
            ("/api/sign-up.json_x", "/api/sign-up"),
            ("/api/sign-up.a~b", "/api/sign-up"),
            ("/api/sign-up.%E2%84%AA", "/api/sign-up"),
            ("/api/sign-up.a.b-c.", "/api/sign-up"),
            ("/api/sign%2Dup", "/api/sign-up"),
            ("/api/sign-up%20", "/api/sign-up"),
            ("/api\\sign-up", "/api/sign-up"),
            ("/", "/"),
            ("", "/"),
            ("/.well-known", "/.well-known"),
            // Found by fuzzing: the `%` the first decode leaves must not start an escape later.
            ("/u\x18/.g//8*2f%%42ff", "/u\x18/.g/8*2f%25bff"),
            ("/a%25", "/a%25"),
            ("/a%2541", "/a%2541"),
        ];
        for (raw, want) in cases {
            assert_eq!(normalize(raw), want, "normalize({raw:?})");
        }
    }

    #[test]
    fn matching_table() {
        let t = RouteTable::new(["/api/sign-up", "/auth/Google/"]);
        let cases = [
            ("/api/sign-up", PathMatch::Gated(0)),
            ("/api/SIGN-UP/", PathMatch::Gated(0)),
            ("/api/sign-up.xml", PathMatch::Gated(0)),
            ("/auth/google", PathMatch::Gated(1)),
            ("/api/sign-in", PathMatch::Ungated),
            ("/api/sign-upx", PathMatch::Ungated),
            ("/api", PathMatch::Ungated),
            ("/api%2Fsign-up", PathMatch::Refused),
            ("/api/sign-up%2Fx", PathMatch::Refused),
            ("/api/sign%252Dup", PathMatch::Refused),
            ("/api\\sign-up", PathMatch::Refused),
            ("/api/sign-up%00", PathMatch::Refused),
            ("/api/sign-up%zz", PathMatch::Ungated),
            ("/api/sign-up/x%zz/..%2F..", PathMatch::Refused),
            ("/other%2Fpath", PathMatch::Ungated),
            ("/static/a%2Fb", PathMatch::Ungated),
        ];
        for (raw, want) in cases {
            assert_eq!(t.find(raw), want, "find({raw:?})");
        }
    }

    #[test]
    fn empty_table_never_gates() {
        assert_eq!(RouteTable::default().find("/api%2F"), PathMatch::Ungated);
    }

    #[test]
    fn plain_paths_skip_normalization() {
        for (raw, core) in [
            ("/", Some("")),
            ("/api/sign-up/", Some("api/sign-up")),
            ("/API/Sign-Up.json", Some("API/Sign-Up")),
            ("/static/app.min.js", Some("static/app")),
            ("/a/b.", Some("a/b")),
            ("/.well-known", Some(".well-known")),
            ("/a//b", None),
            ("/a/../b", None),
            ("/a/./b", None),
            ("/a%2Fb", None),
            ("/a;x=1", None),
            ("a/b", None),
            ("", None),
        ] {
            assert_eq!(plain_core(raw), core, "plain_core({raw:?})");
        }
    }

    /// Found by `fuzz/` (route_normalize): a trailing dot hid a second format suffix.
    #[test]
    fn normalize_is_a_fixed_point_with_stacked_suffixes_and_dots() {
        for raw in [
            "/pa.a.\0//\u{11}x",
            "/pa.a.",
            "/x.y.z",
            "/api/sign-up.json.",
            "/a.b..c.",
            "/x//*a/..a",
            "/a.b/..a",
            "/...a",
            "/c//sign .ugx",
            "/a/ .b",
        ] {
            let once = normalize(raw);
            assert_eq!(normalize(&once), once, "{raw:?}");
        }
        assert_eq!(normalize("/api/sign-up.json."), "/api/sign-up");
        let t = RouteTable::new(["/api/sign-up"]);
        assert_eq!(t.find("/api/sign-up.json."), PathMatch::Gated(0));
        assert_eq!(t.find("/api/sign-up.a.b"), PathMatch::Gated(0));
    }

    proptest::proptest! {
        /// The allocation-free path agrees with full normalization on every input.
        #[test]
        fn fast_path_agrees_with_normalization(raw in "[/a-zA-Z0-9._~;%\\\\ -]{0,24}") {
            let t = RouteTable::new(["/api/sign-up", "/a", "/", "/x.y/z"]);
            let t2 = RouteTable::new(["/api/sign-up", "/a/b"]);
            for t in [&t, &t2] {
                proptest::prop_assert_eq!(t.find(&raw), t.find_normalized(&raw));
            }
            if let Some(core) = plain_core(&raw) {
                proptest::prop_assert_eq!(format!("/{}", core.to_ascii_lowercase()), normalize(&raw));
            }
        }


        #[test]
        fn normalize_never_panics_and_is_idempotent(raw in "\\PC{0,40}", bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..40)) {
            let once = normalize(&raw);
            proptest::prop_assert_eq!(normalize(&once), once.clone());
            proptest::prop_assert!(once.starts_with('/'));
            let lossy = String::from_utf8_lossy(&bytes).into_owned();
            let t = RouteTable::new(["/api/sign-up"]);
            let _ = t.find(&lossy);
            let _ = t.find(&raw);
        }
    }
}
