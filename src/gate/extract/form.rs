//! Strict `application/x-www-form-urlencoded` parsing, used for form bodies and query strings.
//!
//! Pairs are split on `&` only; a raw `;` anywhere is refused (some parsers split on it). `+`
//! decodes to a space, `%XX` to a byte; a `%` not followed by two hex digits is refused, and
//! decoded keys and values must be UTF-8.

use super::Refusal;

/// One decoded `key=value` pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Pair {
    pub(super) key: String,
    pub(super) value: String,
}

/// Parses `input`; `place` names it in refusals ("query" or "form body").
pub(super) fn parse(input: &[u8], place: &'static str) -> Result<Vec<Pair>, Refusal> {
    let mut pairs = Vec::new();
    for piece in input.split(|&b| b == b'&') {
        if piece.is_empty() {
            continue;
        }
        if piece.contains(&b';') {
            return Err(Refusal::BadForm(format!(
                "';' inside a {place} pair (some parsers split on it); encode it as %3B"
            )));
        }
        let (key, value) = match piece.iter().position(|&b| b == b'=') {
            Some(i) => (
                piece.get(..i).unwrap_or_default(),
                piece.get(i + 1..).unwrap_or_default(),
            ),
            None => (piece, &b""[..]),
        };
        pairs.push(Pair {
            key: decode(key, place)?,
            value: decode(value, place)?,
        });
    }
    Ok(pairs)
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Percent-decodes one component strictly, `+` as space.
pub(super) fn decode(input: &[u8], place: &'static str) -> Result<String, Refusal> {
    let mut out = Vec::with_capacity(input.len());
    let mut bytes = input.iter();
    while let Some(&b) = bytes.next() {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hi = bytes.next().copied().and_then(hex);
                let lo = bytes.next().copied().and_then(hex);
                match (hi, lo) {
                    (Some(h), Some(l)) => out.push((h << 4) | l),
                    _ => {
                        return Err(Refusal::BadForm(format!(
                            "invalid percent escape in the {place}"
                        )));
                    }
                }
            }
            b => out.push(b),
        }
    }
    String::from_utf8(out).map_err(|_| Refusal::BadUtf8(place))
}

#[cfg(test)]
mod tests {
    use super::*;

    type Want = Result<Vec<(&'static str, &'static str)>, &'static str>;

    #[test]
    fn parse_table() {
        let cases: Vec<(&str, Want)> = vec![
            ("", Ok(vec![])),
            ("a=1&b=2", Ok(vec![("a", "1"), ("b", "2")])),
            ("a=1&&b", Ok(vec![("a", "1"), ("b", "")])),
            ("e=a%40b.co&x=a+b", Ok(vec![("e", "a@b.co"), ("x", "a b")])),
            ("k=%C3%A9", Ok(vec![("k", "é")])),
            ("k=a=b", Ok(vec![("k", "a=b")])),
            ("k=%3B", Ok(vec![("k", ";")])),
            ("a=1;b=2", Err("bad_form")),
            ("a=%zz", Err("bad_form")),
            ("a=%4", Err("bad_form")),
            ("a=%", Err("bad_form")),
            ("a=%ff", Err("bad_utf8")),
        ];
        for (input, want) in cases {
            let got = parse(input.as_bytes(), "query");
            match (got, want) {
                (Ok(g), Ok(w)) => {
                    let g: Vec<(&str, &str)> = g
                        .iter()
                        .map(|p| (p.key.as_str(), p.value.as_str()))
                        .collect();
                    assert_eq!(g, w, "{input}");
                }
                (Err(e), Err(code)) => assert_eq!(e.code(), code, "{input}"),
                (g, w) => panic!("{input}: got {g:?}, want {w:?}"),
            }
        }
    }
}
