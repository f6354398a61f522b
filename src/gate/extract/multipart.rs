//! A strict `multipart/form-data` parser over a buffered body (RFC 7578 / RFC 2046).
//!
//! This is security code: instead of normalizing framing away it refuses every spelling that
//! parsers read differently. Every occurrence of `--boundary` in the body must sit at the start
//! of the body or right after CRLF, and be followed by CRLF (next part) or `--` (close); the
//! preamble therefore never contains the delimiter, and a close delimiter is required with only
//! whitespace after it. Part headers need CRLF, no folding, at most 8 KiB, no repeated header
//! names, and exactly one `Content-Disposition: form-data` with exactly one `name` (quoted
//! without backslashes, or a token); `name*=`/`filename*=` and repeated parameters are refused.

use super::Refusal;
use super::media::{is_tchar, parse_params};

/// The largest header block a part may have.
const MAX_PART_HEADERS: usize = 8 * 1024;

/// One part of a form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Part<'a> {
    pub(super) name: String,
    pub(super) has_filename: bool,
    pub(super) content_type: Option<String>,
    pub(super) transfer_encoding: Option<String>,
    pub(super) body: &'a [u8],
}

fn bad(reason: impl Into<String>) -> Refusal {
    Refusal::BadMultipart(reason.into())
}

/// RFC 2046 boundary: 1..=70 `bchars`, not ending in a space.
pub(super) fn valid_boundary(b: &str) -> bool {
    (1..=70).contains(&b.len())
        && !b.ends_with(' ')
        && b.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"'()+_,-./:=? ".contains(&c))
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    let rest = hay.get(from..)?;
    if needle.is_empty() || rest.len() < needle.len() {
        return None;
    }
    rest.windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

fn preceded_by_crlf(body: &[u8], at: usize) -> bool {
    at.checked_sub(2)
        .and_then(|s| body.get(s..at))
        .is_some_and(|w| w == b"\r\n")
}

/// Splits `body` into parts; `boundary` must already satisfy [`valid_boundary`].
pub(super) fn parse<'a>(body: &'a [u8], boundary: &str) -> Result<Vec<Part<'a>>, Refusal> {
    let delim = [b"--", boundary.as_bytes()].concat();
    let mut at = find(body, &delim, 0).ok_or_else(|| bad("no boundary delimiter in the body"))?;
    if at != 0 && !preceded_by_crlf(body, at) {
        return Err(bad(
            "the first delimiter must start the body or follow CRLF",
        ));
    }
    let mut parts = Vec::new();
    loop {
        let after = at + delim.len();
        let tail = body.get(after..).unwrap_or_default();
        if tail.starts_with(b"--") {
            let epilogue = tail.get(2..).unwrap_or_default();
            if !epilogue.iter().all(u8::is_ascii_whitespace) {
                return Err(bad("data after the closing delimiter"));
            }
            return Ok(parts);
        }
        if !tail.starts_with(b"\r\n") {
            return Err(bad("a delimiter must be followed by CRLF or \"--\""));
        }
        let start = after + 2;
        let next = find(body, &delim, start).ok_or_else(|| bad("missing closing delimiter"))?;
        if !preceded_by_crlf(body, next) {
            return Err(bad("the boundary appears inside a part"));
        }
        let part = next
            .checked_sub(2)
            .and_then(|end| body.get(start..end))
            .ok_or_else(|| bad("empty part"))?;
        parts.push(parse_part(part)?);
        at = next;
    }
}

fn parse_part(part: &[u8]) -> Result<Part<'_>, Refusal> {
    if part.starts_with(b"\r\n") {
        return Err(bad("a part without headers"));
    }
    let window = part.get(..MAX_PART_HEADERS + 4).unwrap_or(part);
    let Some(end) = find(window, b"\r\n\r\n", 0) else {
        return Err(if part.len() > MAX_PART_HEADERS {
            bad("part headers larger than 8 KiB")
        } else {
            bad("a part without a blank line after its headers")
        });
    };
    if end > MAX_PART_HEADERS {
        return Err(bad("part headers larger than 8 KiB"));
    }
    let head = part.get(..end).unwrap_or_default();
    let content = part.get(end + 4..).unwrap_or_default();
    let head = std::str::from_utf8(head).map_err(|_| bad("part headers are not UTF-8"))?;

    let mut names: Vec<String> = Vec::new();
    let mut disposition = None;
    let mut content_type = None;
    let mut transfer_encoding = None;
    for line in head.split("\r\n") {
        if line.starts_with([' ', '\t']) {
            return Err(bad("folded part header line"));
        }
        if line.contains(['\r', '\n']) {
            return Err(bad("bare CR or LF in part headers"));
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| bad("part header line without ':'"))?;
        if name.is_empty() || !name.bytes().all(is_tchar) {
            return Err(bad("malformed part header name"));
        }
        if value.chars().any(|c| c.is_control() && c != '\t') {
            return Err(bad("control character in a part header"));
        }
        let lower = name.to_ascii_lowercase();
        if names.contains(&lower) {
            return Err(bad(format!(
                "part header {:?} appears twice",
                super::clip(name)
            )));
        }
        let value = value.trim_matches([' ', '\t']);
        match lower.as_str() {
            "content-disposition" => disposition = Some(value),
            "content-type" => content_type = Some(value.to_string()),
            "content-transfer-encoding" => transfer_encoding = Some(value.to_string()),
            _ => {}
        }
        names.push(lower);
    }
    let disposition = disposition.ok_or_else(|| bad("a part without Content-Disposition"))?;
    let kind_end = disposition
        .bytes()
        .position(|b| !is_tchar(b))
        .unwrap_or(disposition.len());
    let (kind, params) = disposition.split_at(kind_end);
    if !kind.eq_ignore_ascii_case("form-data") {
        return Err(bad("Content-Disposition must be form-data"));
    }
    let params = parse_params(params).map_err(|e| bad(format!("Content-Disposition: {e}")))?;
    let name = params
        .iter()
        .find(|(n, _)| n == "name")
        .map(|(_, v)| v.clone())
        .ok_or_else(|| bad("Content-Disposition without a name"))?;
    Ok(Part {
        name,
        has_filename: params.iter().any(|(n, _)| n == "filename"),
        content_type,
        transfer_encoding,
        body: content,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    type Want = Result<Vec<(String, String)>, String>;

    fn names(body: &str) -> Result<Vec<(String, String)>, String> {
        parse(body.as_bytes(), "XyZ")
            .map(|ps| {
                ps.iter()
                    .map(|p| (p.name.clone(), String::from_utf8_lossy(p.body).into_owned()))
                    .collect()
            })
            .map_err(|e| e.code().to_string())
    }

    #[test]
    fn multipart_table() {
        let ok = |v: &[(&str, &str)]| -> Result<Vec<(String, String)>, String> {
            Ok(v.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect())
        };
        let bad = || Err("bad_multipart".to_string());
        let long_header = format!(
            "--XyZ\r\nContent-Disposition: form-data; name=a\r\nX-Pad: {}\r\n\r\nv\r\n--XyZ--",
            "p".repeat(9000)
        );
        let cases: Vec<(&str, Want)> = vec![
            (
                "--XyZ\r\nContent-Disposition: form-data; name=\"email\"\r\n\r\na@b.co\r\n--XyZ--\r\n",
                ok(&[("email", "a@b.co")]),
            ),
            (
                "preamble\r\n--XyZ\r\ncontent-disposition: FORM-DATA; name=a\r\n\r\n1\r\n--XyZ\r\nContent-Disposition: form-data; name=\"b\"; filename=\"f.txt\"\r\nContent-Type: text/plain\r\n\r\nx\r\ny\r\n--XyZ--",
                ok(&[("a", "1"), ("b", "x\r\ny")]),
            ),
            (
                "--XyZ\r\nContent-Disposition: form-data; name=\"é\"\r\n\r\n\r\n--XyZ--",
                ok(&[("é", "")]),
            ),
            ("--XyZ--\r\n", ok(&[])),
            (
                "--XyZ\r\nContent-Disposition: form-data; name=a\r\n\r\n1\r\n--XyZ--  \r\n\r\n",
                ok(&[("a", "1")]),
            ),
            // framing
            (
                "--XyZ\nContent-Disposition: form-data; name=a\n\n1\n--XyZ--",
                bad(),
            ),
            (
                "--XyZ\r\nContent-Disposition: form-data; name=a\r\n\r\n1\n--XyZ\r\n\r\n--XyZ--",
                bad(),
            ),
            (
                "--XyZ\r\nContent-Disposition: form-data; name=a\r\n\r\n1\r\n",
                bad(),
            ),
            (
                "--XyZ\r\nContent-Disposition: form-data; name=a\r\n\r\n1\r\n--XyZ--junk",
                bad(),
            ),
            (
                "x--XyZ\r\nContent-Disposition: form-data; name=a\r\n\r\n1\r\n--XyZ--",
                bad(),
            ),
            (
                "pre --XyZ\r\n--XyZ\r\nContent-Disposition: form-data; name=a\r\n\r\n1\r\n--XyZ--",
                bad(),
            ),
            (
                "--XyZ \r\nContent-Disposition: form-data; name=a\r\n\r\n1\r\n--XyZ--",
                bad(),
            ),
            (
                "--XyZ\r\nContent-Disposition: form-data; name=a\r\n\r\n1\r\n--XyZW\r\n--XyZ--",
                bad(),
            ),
            (
                "--XyZ\r\nContent-Disposition: form-data; name=a\r\n\r\n1\r\n--XyZ--\r\n--XyZ--",
                bad(),
            ),
            ("--XyZ\r\n\r\n1\r\n--XyZ--", bad()),
            ("--XyZ\r\n--XyZ--", bad()),
            ("no delimiter at all", bad()),
            // headers
            (
                "--XyZ\r\nContent-Disposition: form-data;\r\n name=a\r\n\r\n1\r\n--XyZ--",
                bad(),
            ),
            (
                "--XyZ\r\nContent-Disposition: form-data; name=a\r\nContent-Disposition: form-data; name=b\r\n\r\n1\r\n--XyZ--",
                bad(),
            ),
            (
                "--XyZ\r\nContent-Disposition: form-data; name=a\r\nContent-Type: a/b\r\ncontent-type: c/d\r\n\r\n1\r\n--XyZ--",
                bad(),
            ),
            (
                "--XyZ\r\nContent-Type: text/plain\r\n\r\n1\r\n--XyZ--",
                bad(),
            ),
            (
                "--XyZ\r\nContent-Disposition: attachment; name=a\r\n\r\n1\r\n--XyZ--",
                bad(),
            ),
            (
                "--XyZ\r\nContent-Disposition: form-data; filename=a\r\n\r\n1\r\n--XyZ--",
                bad(),
            ),
            (
                "--XyZ\r\nContent-Disposition: form-data; name=a; name=b\r\n\r\n1\r\n--XyZ--",
                bad(),
            ),
            (
                "--XyZ\r\nContent-Disposition: form-data; name=a; NAME=a\r\n\r\n1\r\n--XyZ--",
                bad(),
            ),
            (
                "--XyZ\r\nContent-Disposition: form-data; name*=utf-8''email\r\n\r\n1\r\n--XyZ--",
                bad(),
            ),
            (
                "--XyZ\r\nContent-Disposition: form-data; name=a; filename*=utf-8''x\r\n\r\n1\r\n--XyZ--",
                bad(),
            ),
            (
                "--XyZ\r\nContent-Disposition: form-data; name=em@il\r\n\r\n1\r\n--XyZ--",
                bad(),
            ),
            (
                "--XyZ\r\nContent-Disposition: form-data; name=\"a\\\"b\"\r\n\r\n1\r\n--XyZ--",
                bad(),
            ),
            (
                "--XyZ\r\nContent-Disposition: form-data; name=\"a\r\n\r\n1\r\n--XyZ--",
                bad(),
            ),
            (
                "--XyZ\r\nContent-Disposition form-data; name=a\r\n\r\n1\r\n--XyZ--",
                bad(),
            ),
            (
                "--XyZ\r\nBad Name: x\r\nContent-Disposition: form-data; name=a\r\n\r\n1\r\n--XyZ--",
                bad(),
            ),
            (
                "--XyZ\r\nContent-Disposition: form-data; name=a\rX: y\r\n\r\n1\r\n--XyZ--",
                bad(),
            ),
            (&long_header, bad()),
        ];
        for (body, want) in cases {
            assert_eq!(names(body), want, "{body:?}");
        }
    }

    #[test]
    fn boundaries() {
        for (b, ok) in [
            ("XyZ", true),
            ("----WebKitFormBoundary7MA4YWxkTrZu0gW", true),
            ("a b", true),
            ("a'()+_,-./:=?", true),
            ("", false),
            ("ab ", false),
            ("a\"b", false),
            ("a;b", false),
            ("é", false),
        ] {
            assert_eq!(valid_boundary(b), ok, "{b:?}");
        }
        assert!(valid_boundary(&"x".repeat(70)));
        assert!(!valid_boundary(&"x".repeat(71)));
    }
}
