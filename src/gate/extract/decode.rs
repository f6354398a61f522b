//! `Content-Encoding` handling: which codings are accepted and a bounded decoder. The proxy
//! forwards the decoded bytes, without the coding (see `extract_decoded`).
//!
//! Accepted: absent/`identity`, `gzip`/`x-gzip` (exactly one member, nothing after it) and
//! `deflate` (zlib, or raw deflate as some clients send; when the bytes decode both ways to
//! different results the body is refused). Stacked codings, `br`, `zstd` and anything else are
//! refused. Decoding stops as soon as the output exceeds the limit (zip bombs).

use std::borrow::Cow;
use std::io::Read;

use http::HeaderMap;
use http::header::CONTENT_ENCODING;

use super::Refusal;

/// A content coding the gate can decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Coding {
    Identity,
    Gzip,
    Deflate,
}

/// Reads the request's single `Content-Encoding`.
pub(super) fn coding(headers: &HeaderMap) -> Result<Coding, Refusal> {
    let mut values = headers.get_all(CONTENT_ENCODING).iter();
    let Some(value) = values.next() else {
        return Ok(Coding::Identity);
    };
    if values.next().is_some() {
        return Err(Refusal::UnsupportedEncoding(
            "several Content-Encoding headers (stacked codings)".into(),
        ));
    }
    let text = String::from_utf8_lossy(value.as_bytes());
    let name = text.trim_matches([' ', '\t']);
    if name.contains(',') {
        return Err(Refusal::UnsupportedEncoding(format!(
            "stacked codings {:?}",
            super::clip(name)
        )));
    }
    match name.to_ascii_lowercase().as_str() {
        "identity" => Ok(Coding::Identity),
        "gzip" | "x-gzip" => Ok(Coding::Gzip),
        "deflate" => Ok(Coding::Deflate),
        _ => Err(Refusal::UnsupportedEncoding(format!(
            "{:?}",
            super::clip(name)
        ))),
    }
}

/// Decodes `body`, refusing output longer than `limit` bytes.
pub(super) fn decode(body: &[u8], coding: Coding, limit: usize) -> Result<Cow<'_, [u8]>, Refusal> {
    if body.is_empty() {
        return Ok(Cow::Borrowed(body));
    }
    match coding {
        Coding::Identity => Ok(Cow::Borrowed(body)),
        Coding::Gzip => {
            let decoder = flate2::bufread::GzDecoder::new(body);
            bounded(decoder, limit, "gzip", |d| d.into_inner()).map(Cow::Owned)
        }
        Coding::Deflate => {
            let raw = |body| {
                bounded(
                    flate2::bufread::DeflateDecoder::new(body),
                    limit,
                    "deflate",
                    |d| d.into_inner(),
                )
            };
            if !looks_like_zlib(body) {
                return raw(body).map(Cow::Owned);
            }
            match bounded(
                flate2::bufread::ZlibDecoder::new(body),
                limit,
                "deflate",
                |d| d.into_inner(),
            ) {
                Err(e @ Refusal::DecodedTooLarge { .. }) => Err(e),
                // Not zlib after all: raw deflate or nothing.
                Err(e) => raw(body).map(Cow::Owned).map_err(|r| match r {
                    Refusal::DecodedTooLarge { .. } => r,
                    _ => e,
                }),
                // Valid zlib: the raw reading must fail or agree. It is compared as it is
                // decoded, so memory holds one decoded body, as the budget reserves.
                Ok(z) => match raw_agrees(body, &z, limit) {
                    Err(e @ Refusal::DecodedTooLarge { .. }) => Err(e),
                    Ok(false) => Err(Refusal::BadEncoding {
                        encoding: "deflate",
                        reason: "the body decodes differently as zlib and as raw deflate".into(),
                    }),
                    Ok(true) | Err(_) => Ok(Cow::Owned(z)),
                },
            }
        }
    }
}

/// Decodes `body` as raw deflate without keeping the output, comparing it with `expected`
/// (the zlib reading). `Ok(same)` when the raw stream is valid; `Err` when it is not valid
/// raw deflate or decodes past `limit`, as [`bounded`] would answer.
fn raw_agrees(body: &[u8], expected: &[u8], limit: usize) -> Result<bool, Refusal> {
    let mut decoder = flate2::bufread::DeflateDecoder::new(body);
    let mut chunk = [0u8; 8192];
    let (mut total, mut same) = (0usize, true);
    loop {
        let n = match decoder.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(Refusal::BadEncoding {
                    encoding: "deflate",
                    reason: e.to_string(),
                });
            }
        };
        // Decoding goes on after a difference: a raw stream that turns out invalid leaves
        // the zlib reading standing, as when both were decoded in full.
        same = same && expected.get(total..total + n) == Some(&chunk[..n]);
        total += n;
        if total > limit {
            return Err(Refusal::DecodedTooLarge { limit });
        }
    }
    if !decoder.into_inner().is_empty() {
        return Err(Refusal::BadEncoding {
            encoding: "deflate",
            reason: "data after the end of the compressed stream".into(),
        });
    }
    Ok(same && total == expected.len())
}

/// A zlib header: CM = 8 and the check bits make the first two bytes a multiple of 31.
fn looks_like_zlib(body: &[u8]) -> bool {
    match body {
        [a, b, ..] => a & 0x0f == 8 && ((u16::from(*a) << 8) | u16::from(*b)) % 31 == 0,
        _ => false,
    }
}

/// Reads `decoder` to its end under `limit`, then requires that it consumed all input.
fn bounded<'a, D: Read>(
    decoder: D,
    limit: usize,
    encoding: &'static str,
    rest: impl FnOnce(D) -> &'a [u8],
) -> Result<Vec<u8>, Refusal> {
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    let mut taken = decoder.take(cap);
    let mut out = Vec::new();
    taken
        .read_to_end(&mut out)
        .map_err(|e| Refusal::BadEncoding {
            encoding,
            reason: e.to_string(),
        })?;
    if out.len() > limit {
        return Err(Refusal::DecodedTooLarge { limit });
    }
    if !rest(taken.into_inner()).is_empty() {
        return Err(Refusal::BadEncoding {
            encoding,
            reason: "data after the end of the compressed stream".into(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    type Case = (&'static str, Vec<u8>, Coding, Result<Vec<u8>, &'static str>);

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        let _ = e.write_all(data);
        e.finish().unwrap_or_default()
    }

    fn zlib(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        let _ = e.write_all(data);
        e.finish().unwrap_or_default()
    }

    fn raw(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        let _ = e.write_all(data);
        e.finish().unwrap_or_default()
    }

    #[test]
    fn decoding_table() {
        let text = b"{\"email\":\"a@b.co\"}";
        let mut gz_trailing = gzip(text);
        gz_trailing.extend_from_slice(b"junk");
        let mut gz_twice = gzip(text);
        gz_twice.extend_from_slice(&gzip(b"more"));
        let gz = gzip(text);
        let truncated = gz.get(..gz.len() - 4).unwrap_or_default().to_vec();
        let bomb = gzip(&vec![b'a'; 10_000]);
        let cases: Vec<Case> = vec![
            (
                "identity",
                text.to_vec(),
                Coding::Identity,
                Ok(text.to_vec()),
            ),
            ("gzip", gzip(text), Coding::Gzip, Ok(text.to_vec())),
            ("zlib", zlib(text), Coding::Deflate, Ok(text.to_vec())),
            ("raw deflate", raw(text), Coding::Deflate, Ok(text.to_vec())),
            ("empty gzip body", vec![], Coding::Gzip, Ok(vec![])),
            (
                "gzip trailing junk",
                gz_trailing,
                Coding::Gzip,
                Err("bad_encoding"),
            ),
            (
                "gzip two members",
                gz_twice,
                Coding::Gzip,
                Err("bad_encoding"),
            ),
            (
                "gzip truncated",
                truncated,
                Coding::Gzip,
                Err("bad_encoding"),
            ),
            ("not gzip", text.to_vec(), Coding::Gzip, Err("bad_encoding")),
            (
                "not deflate",
                b"\xff\xff\xff".to_vec(),
                Coding::Deflate,
                Err("bad_encoding"),
            ),
            ("gzip bomb", bomb, Coding::Gzip, Err("decoded_too_large")),
            (
                "zlib bomb",
                zlib(&vec![0; 10_000]),
                Coding::Deflate,
                Err("decoded_too_large"),
            ),
        ];
        for (name, input, coding, want) in cases {
            let got = decode(&input, coding, 1000).map(|c| c.into_owned());
            match (got, want) {
                (Ok(g), Ok(w)) => assert_eq!(g, w, "{name}"),
                (Err(e), Err(code)) => assert_eq!(e.code(), code, "{name}: {e}"),
                (g, w) => panic!("{name}: got {g:?}, want {w:?}"),
            }
        }
    }

    /// Bytes that are valid zlib and valid raw deflate, decoding to different bodies: a zlib
    /// header read as raw deflate starts a stored block, and the zlib stream's own stored
    /// block holds the raw stream's next block header. `raw_header` is that second header
    /// (`None`: a correct one).
    fn polyglot(raw_header: Option<[u8; 5]>) -> (Vec<u8>, Vec<u8>) {
        // zlib: header 78 9c, then a final stored block of 0xfe63 bytes (LEN 63 fe, NLEN 9c 01).
        // raw: a stored block of 0x019c bytes (LEN 9c 01, NLEN 63 fe), whose data begins at 5.
        let zlen = 0xfe63usize;
        let mut data = vec![b'a'; zlen];
        let raw_first = 0x019c;
        // The raw stream's final stored block runs from byte 5 + 0x19c to the end (the
        // zlib data, then its Adler-32).
        let at = 5 + raw_first - 7;
        let total = 7 + zlen + 4;
        let len2 = u16::try_from(total - (5 + raw_first) - 5).unwrap_or_default();
        let header = raw_header.unwrap_or({
            let [l0, l1] = len2.to_le_bytes();
            let [n0, n1] = (!len2).to_le_bytes();
            [0x01, l0, l1, n0, n1]
        });
        data[at..at + 5].copy_from_slice(&header);
        let mut body = vec![0x78, 0x9c, 0x01, 0x63, 0xfe, 0x9c, 0x01];
        body.extend_from_slice(&data);
        let (mut a, mut b) = (1u32, 0u32);
        for &x in &data {
            a = (a + u32::from(x)) % 65521;
            b = (b + a) % 65521;
        }
        body.extend_from_slice(&((b << 16) | a).to_be_bytes());
        (body, data)
    }

    #[test]
    fn zlib_and_raw_readings_must_agree() {
        let (body, data) = polyglot(None);
        // Each decoder alone accepts it, with different results.
        let zlib = bounded(
            flate2::bufread::ZlibDecoder::new(&body[..]),
            1 << 20,
            "deflate",
            |d| d.into_inner(),
        );
        let raw = bounded(
            flate2::bufread::DeflateDecoder::new(&body[..]),
            1 << 20,
            "deflate",
            |d| d.into_inner(),
        );
        assert_eq!(zlib.as_deref().ok(), Some(&data[..]));
        assert!(
            matches!(&raw, Ok(r) if r.len() == data.len() + 1),
            "{raw:?}"
        );
        match decode(&body, Coding::Deflate, 1 << 20) {
            Err(e) => assert_eq!(e.code(), "bad_encoding", "{e}"),
            Ok(_) => panic!("a body that decodes two ways was accepted"),
        }
        // The raw reading is one byte longer: past a limit the zlib reading fits, it is too
        // large, as when both were decoded in full.
        match decode(&body, Coding::Deflate, data.len()) {
            Err(e) => assert_eq!(e.code(), "decoded_too_large", "{e}"),
            Ok(_) => panic!("a raw reading past the limit was accepted"),
        }
        // When the raw reading is not valid deflate (its second block's NLEN is wrong), the
        // zlib reading stands.
        let (body, data) = polyglot(Some([0x01, 0x00, 0x01, 0x00, 0x00]));
        assert_eq!(
            decode(&body, Coding::Deflate, 1 << 20)
                .map(Cow::into_owned)
                .ok(),
            Some(data)
        );
    }

    #[test]
    fn coding_headers() {
        let cases: Vec<(Vec<&str>, Result<Coding, ()>)> = vec![
            (vec![], Ok(Coding::Identity)),
            (vec!["identity"], Ok(Coding::Identity)),
            (vec!["GZIP"], Ok(Coding::Gzip)),
            (vec!["x-gzip"], Ok(Coding::Gzip)),
            (vec!["deflate"], Ok(Coding::Deflate)),
            (vec!["gzip, gzip"], Err(())),
            (vec!["gzip", "gzip"], Err(())),
            (vec!["br"], Err(())),
            (vec!["zstd"], Err(())),
            (vec![""], Err(())),
            (vec!["compress"], Err(())),
        ];
        for (values, want) in cases {
            let mut h = HeaderMap::new();
            for v in &values {
                h.append(CONTENT_ENCODING, http::HeaderValue::from_static(v));
            }
            assert_eq!(coding(&h).map_err(|_| ()), want, "{values:?}");
        }
    }
}
