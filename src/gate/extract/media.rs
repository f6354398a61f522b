//! Strict parsing of media types (`Content-Type`) and header parameters
//! (`Content-Disposition`), shared by the body parsers.
//!
//! Grammar (RFC 9110 §8.3.1 / §5.6.6): `type "/" subtype *( OWS ";" OWS [ name "=" value ] )`
//! with `value = token / quoted-string`. Parameter names are case-insensitive and may appear only
//! once; RFC 2231/5987 extended names (`name*=`) are refused because frameworks disagree on them.

use std::borrow::Cow;

/// A parsed media type: lowercased type and subtype (borrowed from the header when already
/// lowercase), parameters with lowercased names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct MediaType<'a> {
    pub(super) kind: Cow<'a, str>,
    pub(super) subtype: Cow<'a, str>,
    pub(super) params: Vec<(String, String)>,
}

/// `s` ASCII-lowercased, borrowed when it already is.
fn lowercase(s: &str) -> Cow<'_, str> {
    if s.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(s.to_ascii_lowercase())
    } else {
        Cow::Borrowed(s)
    }
}

impl MediaType<'_> {
    /// The value of parameter `name` (lowercase), if present.
    pub(super) fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// `tchar` from RFC 9110 §5.6.2.
pub(super) fn is_tchar(b: u8) -> bool {
    TCHAR[usize::from(b)]
}

/// [`is_tchar`] for every byte (one load per byte instead of a search of the symbols):
/// ALPHA, DIGIT and these.
static TCHAR: [bool; 256] = {
    const SYMBOLS: &[u8] = b"!#$%&'*+-.^_`|~";
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        t[b] = (b as u8).is_ascii_alphanumeric();
        b += 1;
    }
    let mut i = 0;
    while i < SYMBOLS.len() {
        t[SYMBOLS[i] as usize] = true;
        i += 1;
    }
    t
};

fn is_ows(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// Splits a leading token off `s`; returns (token, rest). The token may be empty.
fn take_token(s: &str) -> (&str, &str) {
    let end = s.bytes().position(|b| !is_tchar(b)).unwrap_or(s.len());
    s.split_at(end)
}

fn skip_ows(s: &str) -> &str {
    s.trim_start_matches([' ', '\t'])
}

/// Parses `type/subtype; params` strictly. The error is a short reason.
pub(super) fn parse_media_type(s: &str) -> Result<MediaType<'_>, String> {
    if let Some(b) = s
        .bytes()
        .find(|&b| !(is_ows(b) || (0x21..0x7f).contains(&b)))
    {
        return Err(format!("byte 0x{b:02x} is not allowed in a media type"));
    }
    let s = skip_ows(s);
    let (kind, rest) = take_token(s);
    if kind.is_empty() {
        return Err("missing type".into());
    }
    let rest = rest
        .strip_prefix('/')
        .ok_or_else(|| "missing '/' between type and subtype".to_string())?;
    let (subtype, rest) = take_token(rest);
    if subtype.is_empty() {
        return Err("missing subtype".into());
    }
    let params = parse_params(rest)?;
    Ok(MediaType {
        kind: lowercase(kind),
        subtype: lowercase(subtype),
        params,
    })
}

/// Parses `*( OWS ";" OWS [ name "=" value ] ) OWS`. Names are lowercased; duplicates and
/// extended (`name*`) names are refused, and so is a backslash inside a quoted string: parsers
/// disagree whether it escapes (`boundary="a\b"` is `ab` to RFC 9110 and Werkzeug, `a\b` to
/// python-multipart, Django and busboy, so the two would split a body at different places).
pub(super) fn parse_params(mut s: &str) -> Result<Vec<(String, String)>, String> {
    let mut params: Vec<(String, String)> = Vec::new();
    loop {
        s = skip_ows(s);
        if s.is_empty() {
            return Ok(params);
        }
        s = s
            .strip_prefix(';')
            .ok_or_else(|| "expected ';' before a parameter".to_string())?;
        s = skip_ows(s);
        if s.is_empty() || s.starts_with(';') {
            continue;
        }
        let (name, rest) = take_token(s);
        if name.is_empty() {
            return Err("malformed parameter name".into());
        }
        if name.ends_with('*') {
            return Err(format!(
                "extended parameter {name:?} (RFC 2231/5987) is not accepted"
            ));
        }
        let rest = rest
            .strip_prefix('=')
            .ok_or_else(|| format!("parameter {name:?} has no '=' directly after its name"))?;
        let (value, rest) = if let Some(quoted) = rest.strip_prefix('"') {
            take_quoted(quoted)?
        } else {
            let (v, r) = take_token(rest);
            if v.is_empty() {
                return Err(format!(
                    "parameter {name:?} has an empty or malformed value"
                ));
            }
            (v.to_string(), r)
        };
        let name = name.to_ascii_lowercase();
        if params.iter().any(|(n, _)| *n == name) {
            return Err(format!("parameter {name:?} appears more than once"));
        }
        params.push((name, value));
        s = rest;
    }
}

/// Reads a quoted string body (after the opening quote); returns (value, rest after the quote).
fn take_quoted(s: &str) -> Result<(String, &str), String> {
    let mut out = String::new();
    for (i, c) in s.char_indices() {
        match c {
            '"' => return Ok((out, s.get(i + 1..).unwrap_or(""))),
            '\\' => return Err("backslash in a quoted parameter value".into()),
            '\r' | '\n' | '\0' => return Err("control character in a quoted string".into()),
            c => out.push(c),
        }
    }
    Err("unterminated quoted string".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table holds RFC 9110's `tchar` exactly: ALPHA, DIGIT and fifteen symbols.
    #[test]
    fn tchar_table() {
        let symbols = b"!#$%&'*+-.^_`|~";
        for b in 0..=255u8 {
            let want = b.is_ascii_alphanumeric() || symbols.contains(&b);
            assert_eq!(is_tchar(b), want, "byte 0x{b:02x}");
        }
        assert_eq!((0..=255u8).filter(|&b| is_tchar(b)).count(), 62 + 15);
    }

    #[test]
    fn media_types() {
        type Want = Result<
            (
                &'static str,
                &'static str,
                Vec<(&'static str, &'static str)>,
            ),
            (),
        >;
        let cases: Vec<(&str, Want)> = vec![
            ("application/json", Ok(("application", "json", vec![]))),
            (
                "Application/JSON ; Charset=UTF-8",
                Ok(("application", "json", vec![("charset", "UTF-8")])),
            ),
            ("text/plain;", Ok(("text", "plain", vec![]))),
            (
                "multipart/form-data; boundary=\"a b\"",
                Ok(("multipart", "form-data", vec![("boundary", "a b")])),
            ),
            ("a/b; x=\"q\\\"z\"", Err(())),
            ("multipart/form-data; boundary=\"a\\b\"", Err(())),
            ("application/json; charset=utf-8; charset=utf-8", Err(())),
            ("application/json; CHARSET=utf-8; charset=latin1", Err(())),
            ("application/json; charset*=utf-8''x", Err(())),
            ("application/json; charset = utf-8", Err(())),
            ("application/json; charset=", Err(())),
            ("application/json; charset=\"utf-8", Err(())),
            ("application", Err(())),
            ("/json", Err(())),
            ("application/", Err(())),
            ("application/json x", Err(())),
            ("application/json,text/plain", Err(())),
            ("applicätion/json", Err(())),
        ];
        for (input, want) in cases {
            let got = parse_media_type(input);
            match (&got, &want) {
                (Ok(m), Ok((t, s, p))) => {
                    assert_eq!((&*m.kind, &*m.subtype), (*t, *s), "{input}");
                    let p: Vec<(String, String)> = p
                        .iter()
                        .map(|(a, b)| (a.to_string(), b.to_string()))
                        .collect();
                    assert_eq!(m.params, p, "{input}");
                }
                (Err(_), Err(())) => {}
                _ => panic!("{input:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn disposition_params_refuse_backslash() {
        assert!(parse_params("; name=\"a\\\"b\"").is_err());
        assert_eq!(
            parse_params("; name=\"a\"; filename=x.txt"),
            Ok(vec![
                ("name".into(), "a".into()),
                ("filename".into(), "x.txt".into())
            ])
        );
    }
}
