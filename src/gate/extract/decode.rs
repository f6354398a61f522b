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
            let raw = bounded(
                flate2::bufread::DeflateDecoder::new(body),
                limit,
                "deflate",
                |d| d.into_inner(),
            );
            if !looks_like_zlib(body) {
                return raw.map(Cow::Owned);
            }
            let zlib = bounded(
                flate2::bufread::ZlibDecoder::new(body),
                limit,
                "deflate",
                |d| d.into_inner(),
            );
            match (zlib, raw) {
                (Err(e @ Refusal::DecodedTooLarge { .. }), _)
                | (_, Err(e @ Refusal::DecodedTooLarge { .. })) => Err(e),
                (Ok(z), Ok(r)) if z != r => Err(Refusal::BadEncoding {
                    encoding: "deflate",
                    reason: "the body decodes differently as zlib and as raw deflate".into(),
                }),
                (Ok(z), _) => Ok(Cow::Owned(z)),
                (Err(_), Ok(r)) => Ok(Cow::Owned(r)),
                (Err(e), Err(_)) => Err(e),
            }
        }
    }
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
