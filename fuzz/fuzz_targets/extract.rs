//! Fuzz target: `gate::extract::extract` on a request built from the input (request line,
//! headers, body). Never panics; the result is a refusal or identifiers each naming one of the
//! configured sources and present in the request.
//!
//! Input layout: `METHOD URI\n` then `Name: value\n` lines, a blank line, then the body.
#![no_main]

use http::{HeaderName, HeaderValue, Method, Request};
use idgate::gate::extract::{Location, SourceSpec, Spec, extract};
use libfuzzer_sys::fuzz_target;

fn sources() -> Vec<SourceSpec> {
    let loc = [
        Location::Json("/email".into()),
        Location::Form("email".into()),
        Location::Multipart("email".into()),
        Location::Query("email".into()),
        Location::Header(HeaderName::from_static("x-user-email")),
    ];
    loc.into_iter()
        .map(|location| SourceSpec::new(location, None))
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let (head, body) = match data.windows(2).position(|w| w == b"\n\n") {
        Some(i) => (&data[..i], &data[i + 2..]),
        None => (data, &[][..]),
    };
    let mut lines = head.split(|b| *b == b'\n');
    let first = lines.next().unwrap_or_default();
    let mut parts = first.splitn(2, |b| *b == b' ');
    let method = Method::from_bytes(parts.next().unwrap_or(b"POST")).unwrap_or(Method::POST);
    let uri = std::str::from_utf8(parts.next().unwrap_or(b"/")).unwrap_or("/");
    let mut b = Request::builder().method(method).uri(uri);
    for l in lines {
        let Some(colon) = l.iter().position(|c| *c == b':') else {
            continue;
        };
        let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(&l[..colon]),
            HeaderValue::from_bytes(l[colon + 1..].trim_ascii()),
        ) else {
            continue;
        };
        b = b.header(n, v);
    }
    let Ok(req) = b.body(()) else {
        return;
    };
    let (parts, ()) = req.into_parts();
    let srcs = sources();
    let spec = Spec {
        sources: &srcs,
        max_depth: 32,
        max_decoded: 64 * 1024,
    };
    if let Ok(found) = extract(&parts, body, &spec) {
        for f in &found {
            assert!(f.source < srcs.len(), "source index out of range");
        }
    }
});
