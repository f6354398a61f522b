//! Table tests for [`extract`](super::extract): accepted requests in every location and every
//! refusal, plus a property test that it never panics.

use std::io::Write;

use http::Request;
use proptest::prelude::*;

use super::*;

/// What a test request yields: found (source, raw) pairs or a refusal code.
type Outcome = Result<Vec<(usize, String)>, String>;

/// A request: method/uri, headers, body.
struct Req {
    uri: &'static str,
    headers: Vec<(&'static str, Vec<u8>)>,
    body: Vec<u8>,
}

fn req(uri: &'static str, headers: &[(&'static str, &str)], body: &str) -> Req {
    Req {
        uri,
        headers: headers
            .iter()
            .map(|(n, v)| (*n, v.as_bytes().to_vec()))
            .collect(),
        body: body.as_bytes().to_vec(),
    }
}

fn json(body: &str) -> Req {
    req("/sign-up", &[("content-type", "application/json")], body)
}

fn form(uri: &'static str, body: &str) -> Req {
    req(
        uri,
        &[("content-type", "application/x-www-form-urlencoded")],
        body,
    )
}

fn mp(parts: &[&str]) -> Req {
    let mut body = String::new();
    for p in parts {
        body.push_str("--BnD\r\n");
        body.push_str(p);
        body.push_str("\r\n");
    }
    body.push_str("--BnD--\r\n");
    req(
        "/sign-up",
        &[("content-type", "multipart/form-data; boundary=BnD")],
        &body,
    )
}

fn field(name: &str, value: &str) -> String {
    format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}")
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let _ = e.write_all(data);
    e.finish().unwrap_or_default()
}

fn sources() -> Vec<SourceSpec> {
    [
        Location::Json("/email".into()),
        Location::Form("email".into()),
        Location::Multipart("email".into()),
        Location::Query("phone".into()),
        Location::Header(HeaderName::from_static("x-wallet")),
    ]
    .into_iter()
    .map(|location| SourceSpec::new(location, None))
    .collect()
}

fn run_with(r: &Req, sources: &[SourceSpec]) -> Outcome {
    let mut b = Request::builder().method("POST").uri(r.uri);
    for (n, v) in &r.headers {
        b = b.header(*n, v.as_slice());
    }
    let (parts, ()) = b
        .body(())
        .map_err(|e| format!("test request: {e}"))?
        .into_parts();
    let spec = Spec {
        sources,
        max_depth: 32,
        max_decoded: 4096,
    };
    extract(&parts, &r.body, &spec)
        .map(|v| v.into_iter().map(|f| (f.source, f.raw)).collect())
        .map_err(|e| e.code().to_string())
}

fn ok(v: &[(usize, &str)]) -> Outcome {
    Ok(v.iter().map(|(i, s)| (*i, s.to_string())).collect())
}

fn no(code: &str) -> Outcome {
    Err(code.to_string())
}

#[test]
fn extract_table() {
    let ct_json = ("content-type", "application/json");
    let gz_body = Req {
        uri: "/sign-up",
        headers: vec![
            ("content-type", b"application/json".to_vec()),
            ("content-encoding", b"gzip".to_vec()),
        ],
        body: gzip(br#"{"email":"a@b.co"}"#),
    };
    let gz_bomb = Req {
        uri: "/sign-up",
        headers: vec![
            ("content-type", b"application/json".to_vec()),
            ("content-encoding", b"gzip".to_vec()),
        ],
        body: gzip(format!(r#"{{"email":"a@b.co","pad":"{}"}}"#, "x".repeat(100_000)).as_bytes()),
    };
    let latin1_header = Req {
        uri: "/sign-up",
        headers: vec![("x-wallet", b"caf\xe9".to_vec())],
        body: vec![],
    };
    let bad_utf8_json = Req {
        uri: "/sign-up",
        headers: vec![("content-type", b"application/json".to_vec())],
        body: b"{\"email\":\"a\xff@b.co\"}".to_vec(),
    };
    let bad_utf8_mp = Req {
        uri: "/sign-up",
        headers: vec![(
            "content-type",
            b"multipart/form-data; boundary=BnD".to_vec(),
        )],
        body: b"--BnD\r\nContent-Disposition: form-data; name=email\r\n\r\na\xff\r\n--BnD--"
            .to_vec(),
    };

    let cases: Vec<(&str, Req, Outcome)> = vec![
        // ---- accepted ----
        ("json", json(r#"{"email":"a@b.co"}"#), ok(&[(0, "a@b.co")])),
        (
            "json charset",
            req(
                "/",
                &[("content-type", "application/json; charset=UTF-8")],
                r#"{"email":"a@b.co"}"#,
            ),
            ok(&[(0, "a@b.co")]),
        ),
        (
            "json +json",
            req(
                "/",
                &[("content-type", "application/vnd.api+json")],
                r#"{"email":"a@b.co"}"#,
            ),
            ok(&[(0, "a@b.co")]),
        ),
        ("json missing field", json(r#"{"name":"x"}"#), ok(&[])),
        (
            "json same key in sibling objects",
            json(r#"{"email":"a@b.co","a":{"b":1},"c":{"b":2}}"#),
            ok(&[(0, "a@b.co")]),
        ),
        ("json array top", json(r#"[1,2]"#), ok(&[])),
        (
            "form",
            form("/sign-up", "email=a%40b.co&name=x"),
            ok(&[(1, "a@b.co")]),
        ),
        (
            "form plus as space",
            form("/sign-up", "email=a+b"),
            ok(&[(1, "a b")]),
        ),
        (
            "form repeated other keys",
            form("/sign-up", "tag=1&tag=2&email=a@b.co"),
            ok(&[(1, "a@b.co")]),
        ),
        (
            "form charset",
            req(
                "/",
                &[(
                    "content-type",
                    "application/x-www-form-urlencoded; charset=utf-8",
                )],
                "email=x",
            ),
            ok(&[(1, "x")]),
        ),
        (
            "multipart",
            mp(&[&field("email", "a@b.co"), &field("name", "n")]),
            ok(&[(2, "a@b.co")]),
        ),
        (
            "multipart file elsewhere",
            mp(&[
                &field("email", "a@b.co"),
                "Content-Disposition: form-data; name=\"avatar\"; filename=\"a.png\"\r\nContent-Type: image/png\r\n\r\n\u{1}\u{2}",
            ]),
            ok(&[(2, "a@b.co")]),
        ),
        (
            "multipart text/plain utf-8",
            mp(&[
                "Content-Disposition: form-data; name=email\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\na@b.co",
            ]),
            ok(&[(2, "a@b.co")]),
        ),
        (
            "query",
            req("/sign-up?phone=%2B12025550123", &[], ""),
            ok(&[(3, "+12025550123")]),
        ),
        (
            "header",
            req("/sign-up", &[("x-wallet", "0xabc")], ""),
            ok(&[(4, "0xabc")]),
        ),
        (
            "all at once, ordered",
            req(
                "/sign-up?phone=1",
                &[ct_json, ("x-wallet", "w")],
                r#"{"email":"e"}"#,
            ),
            ok(&[(0, "e"), (3, "1"), (4, "w")]),
        ),
        ("empty body, no type", req("/sign-up", &[], ""), ok(&[])),
        (
            "empty body with a type",
            req("/sign-up", &[("content-type", "text/html")], ""),
            ok(&[]),
        ),
        ("gzip json", gz_body, ok(&[(0, "a@b.co")])),
        (
            "identity coding",
            req(
                "/",
                &[ct_json, ("content-encoding", "identity")],
                r#"{"email":"e"}"#,
            ),
            ok(&[(0, "e")]),
        ),
        (
            "chunked",
            req(
                "/",
                &[ct_json, ("transfer-encoding", "chunked")],
                r#"{"email":"e"}"#,
            ),
            ok(&[(0, "e")]),
        ),
        (
            "content-length",
            req(
                "/",
                &[ct_json, ("content-length", "13")],
                r#"{"email":"e"}"#,
            ),
            ok(&[(0, "e")]),
        ),
        (
            "query other keys",
            req("/sign-up?utm=1&utm=2", &[ct_json], r#"{"email":"e"}"#),
            ok(&[(0, "e")]),
        ),
        // ---- framing ----
        (
            "cl + te",
            req(
                "/",
                &[
                    ct_json,
                    ("content-length", "3"),
                    ("transfer-encoding", "chunked"),
                ],
                "{}",
            ),
            no("conflicting_framing"),
        ),
        (
            "two cl",
            req("/", &[("content-length", "3"), ("content-length", "3")], ""),
            no("conflicting_framing"),
        ),
        (
            "cl list",
            req("/", &[("content-length", "3, 3")], ""),
            no("conflicting_framing"),
        ),
        (
            "te gzip",
            req("/", &[("transfer-encoding", "gzip, chunked")], ""),
            no("conflicting_framing"),
        ),
        (
            "te twice",
            req(
                "/",
                &[
                    ("transfer-encoding", "chunked"),
                    ("transfer-encoding", "chunked"),
                ],
                "",
            ),
            no("conflicting_framing"),
        ),
        (
            "te padded",
            req("/", &[("transfer-encoding", "chunked ")], ""),
            no("conflicting_framing"),
        ),
        (
            "two hosts",
            req("/", &[("host", "a"), ("host", "b")], ""),
            no("duplicate_host"),
        ),
        // ---- Connection naming a header the upstream would then not get ----
        (
            "connection names content-type",
            req(
                "/",
                &[ct_json, ("connection", "keep-alive, Content-Type")],
                r#"{"email":"a@b.co"}"#,
            ),
            no("connection_names_header"),
        ),
        (
            "connection names the identifier header",
            req(
                "/",
                &[("x-wallet", "0xabc"), ("connection", "x-wallet")],
                "",
            ),
            no("connection_names_header"),
        ),
        (
            "connection names content-encoding in a second header",
            req(
                "/",
                &[("connection", "close"), ("connection", "content-encoding")],
                "",
            ),
            no("connection_names_header"),
        ),
        (
            "connection hop-by-hop only",
            req(
                "/",
                &[ct_json, ("connection", "Keep-Alive, TE , close")],
                r#"{"email":"a@b.co"}"#,
            ),
            ok(&[(0, "a@b.co")]),
        ),
        // ---- method override ----
        (
            "override header",
            req("/", &[("x-http-method-override", "PUT")], ""),
            no("method_override"),
        ),
        (
            "x-http-method",
            req("/", &[("X-HTTP-Method", "PUT")], ""),
            no("method_override"),
        ),
        (
            "x-method-override",
            req("/", &[("x-method-override", "PUT")], ""),
            no("method_override"),
        ),
        (
            "_method query",
            req("/?_method=PUT", &[], ""),
            no("method_override"),
        ),
        (
            "_METHOD query",
            req("/?_METHOD=PUT", &[], ""),
            no("method_override"),
        ),
        (
            "_method form",
            form("/", "email=x&_method=PUT"),
            no("method_override"),
        ),
        (
            "_method json",
            json(r#"{"email":"x","_method":"PUT"}"#),
            no("method_override"),
        ),
        (
            "_method multipart",
            mp(&[&field("_method", "PUT")]),
            no("method_override"),
        ),
        // ---- encodings ----
        (
            "br",
            req("/", &[ct_json, ("content-encoding", "br")], "{}"),
            no("unsupported_encoding"),
        ),
        (
            "zstd",
            req("/", &[ct_json, ("content-encoding", "zstd")], "{}"),
            no("unsupported_encoding"),
        ),
        (
            "stacked",
            req("/", &[ct_json, ("content-encoding", "gzip, gzip")], "{}"),
            no("unsupported_encoding"),
        ),
        (
            "not gzip",
            req("/", &[ct_json, ("content-encoding", "gzip")], "{}"),
            no("bad_encoding"),
        ),
        ("gzip bomb", gz_bomb, no("decoded_too_large")),
        // ---- content types ----
        (
            "two content types",
            req("/", &[ct_json, ct_json], "{}"),
            no("duplicate_content_type"),
        ),
        (
            "no content type",
            req("/", &[], "{}"),
            no("missing_content_type"),
        ),
        (
            "malformed content type",
            req("/", &[("content-type", "application json")], "{}"),
            no("bad_content_type"),
        ),
        (
            "json latin1",
            req(
                "/",
                &[("content-type", "application/json; charset=latin1")],
                "{}",
            ),
            no("bad_charset"),
        ),
        (
            "json utf8 spelling",
            req(
                "/",
                &[("content-type", "application/json; charset=utf8")],
                "{}",
            ),
            no("bad_charset"),
        ),
        (
            "json dup charset",
            req(
                "/",
                &[(
                    "content-type",
                    "application/json; charset=utf-8; charset=utf-16",
                )],
                "{}",
            ),
            no("bad_content_type"),
        ),
        (
            "form utf-16",
            req(
                "/",
                &[(
                    "content-type",
                    "application/x-www-form-urlencoded; charset=utf-16",
                )],
                "a=b",
            ),
            no("bad_charset"),
        ),
        (
            "text/plain json",
            req("/", &[("content-type", "text/plain")], r#" {"email":"x"}"#),
            no("text_plain_body"),
        ),
        (
            "text/plain form",
            req(
                "/",
                &[("content-type", "text/plain;charset=utf-8")],
                "email=x",
            ),
            no("text_plain_body"),
        ),
        (
            "text/plain other",
            req("/", &[("content-type", "text/plain")], "hello"),
            no("unsupported_content_type"),
        ),
        (
            "xml",
            req("/", &[("content-type", "application/xml")], "<a/>"),
            no("unsupported_content_type"),
        ),
        (
            "text/json",
            req("/", &[("content-type", "text/json")], "{}"),
            no("unsupported_content_type"),
        ),
        (
            "form body, json-only route",
            form("/", "email=x"),
            Err("unsupported_content_type".into()),
        ),
        (
            "multipart no boundary",
            req("/", &[("content-type", "multipart/form-data")], "x"),
            no("bad_content_type"),
        ),
        (
            "multipart two boundaries",
            req(
                "/",
                &[(
                    "content-type",
                    "multipart/form-data; boundary=a; boundary=b",
                )],
                "x",
            ),
            no("bad_content_type"),
        ),
        (
            "multipart long boundary",
            req(
                "/",
                &[(
                    "content-type",
                    "multipart/form-data; boundary=xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
                )],
                "x",
            ),
            no("bad_content_type"),
        ),
        (
            "multipart boundary*",
            req(
                "/",
                &[("content-type", "multipart/form-data; boundary*=utf-8''a")],
                "x",
            ),
            no("bad_content_type"),
        ),
        // ---- json ----
        (
            "json bom",
            json("\u{feff}{\"email\":\"x\"}"),
            no("byte_order_mark"),
        ),
        ("json bad utf8", bad_utf8_json, no("bad_utf8")),
        (
            "json dup",
            json(r#"{"email":"a","email":"b"}"#),
            no("duplicate_field"),
        ),
        (
            "json case dup",
            json(r#"{"email":"a","eMail":"b"}"#),
            no("duplicate_field"),
        ),
        (
            "json deep dup",
            json(r#"{"email":"a","x":[[{"q":1,"Q":2}]]}"#),
            no("duplicate_field"),
        ),
        (
            "json near miss",
            json(r#"{"Email":"a@b.co"}"#),
            no("ambiguous_location"),
        ),
        ("json number", json(r#"{"email":12}"#), no("not_a_string")),
        (
            "json array",
            json(r#"{"email":["a@b.co"]}"#),
            no("not_a_string"),
        ),
        (
            "json nul",
            json(r#"{"email":"a@b.co\u0000x"}"#),
            no("bad_string"),
        ),
        (
            "json lone surrogate",
            json(r#"{"email":"\ud800"}"#),
            no("bad_json"),
        ),
        (
            "json trailing",
            json(r#"{"email":"a"}{"email":"b"}"#),
            no("bad_json"),
        ),
        (
            "json too deep",
            json(&format!("{{\"x\":{}1{}}}", "[".repeat(40), "]".repeat(40))),
            no("too_deep"),
        ),
        (
            "json in query too",
            req("/sign-up?email=x", &[ct_json], r#"{"email":"y"}"#),
            no("field_in_query_and_body"),
        ),
        (
            "json field only in query",
            req("/sign-up?email=x", &[], ""),
            no("field_in_query_and_body"),
        ),
        (
            "query field in json body",
            json(r#"{"email":"e","phone":"1"}"#),
            no("field_in_query_and_body"),
        ),
        // ---- form ----
        (
            "form dup",
            form("/", "email=a&email=b"),
            no("duplicate_field"),
        ),
        ("form case", form("/", "Email=a"), no("ambiguous_location")),
        (
            "form case + exact",
            form("/", "email=a&EMAIL=b"),
            no("ambiguous_location"),
        ),
        (
            "form brackets",
            form("/", "email[]=a"),
            no("ambiguous_location"),
        ),
        (
            "form index",
            form("/", "email[0]=a"),
            no("ambiguous_location"),
        ),
        ("form dot", form("/", "email.x=a"), no("ambiguous_location")),
        (
            "form encoded bracket",
            form("/", "email%5B%5D=a"),
            no("ambiguous_location"),
        ),
        (
            "form padded key",
            form("/", "email%20=a"),
            no("ambiguous_location"),
        ),
        (
            "form nul key",
            form("/", "email%00x=a"),
            no("ambiguous_location"),
        ),
        ("form nul value", form("/", "email=a%00b"), no("bad_string")),
        (
            "form semicolon",
            form("/", "name=x;email=a"),
            no("bad_form"),
        ),
        ("form bad escape", form("/", "email=a%2"), no("bad_form")),
        ("form bad utf8", form("/", "email=%C3"), no("bad_utf8")),
        (
            "form in query too",
            form("/sign-up?email=x", "email=y"),
            no("field_in_query_and_body"),
        ),
        (
            "form field as query bracket",
            form("/sign-up?Email[]=x", "name=y"),
            no("field_in_query_and_body"),
        ),
        (
            "query field in form body",
            form("/", "phone=1"),
            no("field_in_query_and_body"),
        ),
        // ---- query ----
        (
            "query dup",
            req("/?phone=1&phone=2", &[], ""),
            no("duplicate_field"),
        ),
        (
            "query case",
            req("/?Phone=1", &[], ""),
            no("ambiguous_location"),
        ),
        (
            "query bracket",
            req("/?phone[]=1", &[], ""),
            no("ambiguous_location"),
        ),
        (
            "query semicolon",
            req("/?phone=1;x=2", &[], ""),
            no("bad_form"),
        ),
        ("query bad escape", req("/?x=%G0", &[], ""), no("bad_form")),
        ("query nul", req("/?phone=1%00", &[], ""), no("bad_string")),
        // ---- multipart ----
        (
            "mp dup",
            mp(&[&field("email", "a"), &field("email", "b")]),
            no("duplicate_field"),
        ),
        (
            "mp case",
            mp(&[&field("EMAIL", "a")]),
            no("ambiguous_location"),
        ),
        (
            "mp bracket",
            mp(&[&field("email[]", "a")]),
            no("ambiguous_location"),
        ),
        (
            "mp percent name",
            mp(&[&field("%65mail", "a")]),
            no("ambiguous_location"),
        ),
        (
            "mp file",
            mp(&[
                "Content-Disposition: form-data; name=\"email\"; filename=\"e.txt\"\r\n\r\na@b.co",
            ]),
            no("file_field"),
        ),
        (
            "mp charset",
            mp(&[
                "Content-Disposition: form-data; name=email\r\nContent-Type: text/plain; charset=iso-8859-1\r\n\r\na",
            ]),
            no("bad_charset"),
        ),
        (
            "mp octet",
            mp(&[
                "Content-Disposition: form-data; name=email\r\nContent-Type: application/octet-stream\r\n\r\na",
            ]),
            no("bad_field_encoding"),
        ),
        (
            "mp base64",
            mp(&[
                "Content-Disposition: form-data; name=email\r\nContent-Transfer-Encoding: base64\r\n\r\nYUBiLmNv",
            ]),
            no("bad_field_encoding"),
        ),
        (
            "mp quoted-printable",
            mp(&[
                "Content-Disposition: form-data; name=email\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\na=40b.co",
            ]),
            no("bad_field_encoding"),
        ),
        (
            "mp name*",
            mp(&["Content-Disposition: form-data; name*=utf-8''email\r\n\r\na"]),
            no("bad_multipart"),
        ),
        (
            "mp dup param",
            mp(&["Content-Disposition: form-data; name=\"x\"; name=\"email\"\r\n\r\na"]),
            no("bad_multipart"),
        ),
        (
            "mp dup disposition",
            mp(&[
                "Content-Disposition: form-data; name=\"x\"\r\nContent-Disposition: form-data; name=\"email\"\r\n\r\na",
            ]),
            no("bad_multipart"),
        ),
        (
            "mp folded",
            mp(&["Content-Disposition: form-data;\r\n\tname=\"email\"\r\n\r\na"]),
            no("bad_multipart"),
        ),
        (
            "mp odd token",
            mp(&["Content-Disposition: form-data; name=em\"ail\r\n\r\na"]),
            no("bad_multipart"),
        ),
        (
            "mp lf only",
            req(
                "/",
                &[("content-type", "multipart/form-data; boundary=BnD")],
                "--BnD\nContent-Disposition: form-data; name=email\n\na\n--BnD--",
            ),
            no("bad_multipart"),
        ),
        (
            "mp no close",
            req(
                "/",
                &[("content-type", "multipart/form-data; boundary=BnD")],
                "--BnD\r\nContent-Disposition: form-data; name=email\r\n\r\na\r\n",
            ),
            no("bad_multipart"),
        ),
        (
            "mp epilogue",
            req(
                "/",
                &[("content-type", "multipart/form-data; boundary=BnD")],
                "--BnD\r\nContent-Disposition: form-data; name=email\r\n\r\na\r\n--BnD--\r\nx",
            ),
            no("bad_multipart"),
        ),
        ("mp bad utf8", bad_utf8_mp, no("bad_utf8")),
        ("mp nul", mp(&[&field("email", "a\0b")]), no("bad_string")),
        (
            "mp in query too",
            {
                let mut r = mp(&[&field("email", "a")]);
                r.uri = "/sign-up?email=b";
                r
            },
            no("field_in_query_and_body"),
        ),
        (
            "query field in multipart",
            mp(&[&field("phone", "1")]),
            no("field_in_query_and_body"),
        ),
        // ---- headers ----
        (
            "header twice",
            req("/", &[("x-wallet", "a"), ("x-wallet", "b")], ""),
            no("duplicate_field"),
        ),
        ("header latin1", latin1_header, no("bad_header_value")),
        (
            "header underscore twin",
            req("/", &[("x-wallet", "a"), ("x_wallet", "b")], ""),
            no("ambiguous_location"),
        ),
        (
            "header underscore only",
            req("/", &[("x_wallet", "b")], ""),
            no("ambiguous_location"),
        ),
        (
            "header tab",
            req("/", &[("x-wallet", "a\tb")], ""),
            no("bad_header_value"),
        ),
    ];
    let all = sources();
    let json_only = [SourceSpec::new(Location::Json("/email".into()), None)];
    let mut failures = Vec::new();
    for (name, r, want) in &cases {
        let srcs: &[SourceSpec] = if *name == "form body, json-only route" {
            &json_only
        } else {
            &all
        };
        let got = run_with(r, srcs);
        if got != *want {
            failures.push(format!("{name}: got {got:?}, want {want:?}"));
        }
    }
    assert!(cases.len() >= 100, "table shrank to {}", cases.len());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn bodies_need_a_matching_source() {
    let header_only = [SourceSpec::new(
        Location::Header(HeaderName::from_static("x-email")),
        None,
    )];
    let cases = [
        (json(r#"{"a":1}"#), "unsupported_content_type"),
        (form("/", "a=1"), "unsupported_content_type"),
        (mp(&[&field("a", "1")]), "unsupported_content_type"),
    ];
    for (r, code) in cases {
        assert_eq!(run_with(&r, &header_only), no(code));
    }
    assert_eq!(
        run_with(&req("/", &[("x-email", "a@b.co")], ""), &header_only),
        ok(&[(0, "a@b.co")])
    );
}

#[test]
fn nested_pointer_and_bracketed_query() {
    let src = [SourceSpec::new(Location::Json("/user/email".into()), None)];
    let body = r#"{"user":{"email":"a@b.co"}}"#;
    assert_eq!(run_with(&json(body), &src), ok(&[(0, "a@b.co")]));
    for uri in ["/?user[email]=x", "/?user.email=x", "/?email=x", "/?USER=x"] {
        let mut r = json(body);
        r.uri = uri;
        assert_eq!(run_with(&r, &src), no("field_in_query_and_body"), "{uri}");
    }
    let bad = [SourceSpec::new(Location::Json("user/email".into()), None)];
    let refusal = run_with(&json(body), &bad);
    assert_eq!(refusal, no("invalid_spec"));
}

#[test]
fn statuses_and_messages() {
    let cases = [
        (Refusal::UnsupportedContentType("x".into()), 415),
        (Refusal::UnsupportedEncoding("br".into()), 415),
        (Refusal::MissingContentType, 415),
        (Refusal::DecodedTooLarge { limit: 1 }, 413),
        (
            Refusal::DuplicateField {
                field: "email".into(),
                place: "query",
            },
            400,
        ),
        (Refusal::BadJson("x".into()), 400),
        (Refusal::InvalidSpec("x".into()), 500),
    ];
    for (r, status) in cases {
        assert_eq!(r.status(), status, "{r:?}");
        assert!(!r.to_string().is_empty());
    }
    let long = Refusal::AmbiguousLocation {
        field: "email".into(),
        found: clip(&"é".repeat(500)),
    };
    assert!(long.to_string().chars().count() < 150, "{long}");
}

fn content_type() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("application/json".to_string()),
        Just("application/x-www-form-urlencoded".to_string()),
        Just("multipart/form-data; boundary=BnD".to_string()),
        Just("text/plain".to_string()),
        "[ -~]{0,40}",
    ]
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..200),
        "[\\-\r\n a-zA-Z0-9=&;:%\"{}\\[\\],]{0,200}".prop_map(String::into_bytes),
        "(--BnD\r\n(Content-Disposition: form-data; name=\"?email\"?\r\n)?\r\n[a-z@.]{0,8}\r\n){0,3}--BnD(--)?\r\n"
            .prop_map(String::into_bytes),
        "\\{(\"[eE]mail\":(\"[a-z@]{0,5}\"|1|\\[\\]|\\{\\}|null),?){0,3}\\}".prop_map(String::into_bytes),
    ]
}

proptest! {
    #[test]
    fn never_panics(
        ct in content_type(),
        body in body(),
        query in "[a-zA-Z0-9=&;%\\[\\]_.+]{0,30}",
        gz in any::<bool>(),
        depth in 0usize..4,
    ) {
        let uri = format!("/sign-up?{query}");
        let mut b = Request::builder().method("POST").uri(uri.as_str()).header("content-type", ct.as_str());
        let body = if gz { b = b.header("content-encoding", "gzip"); gzip(&body) } else { body };
        if let Ok(r) = b.body(()) {
            let (parts, ()) = r.into_parts();
            let srcs = sources();
            let spec = Spec { sources: &srcs, max_depth: depth, max_decoded: 150 };
            if let Err(e) = extract(&parts, &body, &spec) {
                prop_assert!(!e.code().is_empty());
                prop_assert!([400, 413, 415, 500].contains(&e.status()));
            }
        }
    }
}
