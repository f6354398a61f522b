//! Header rewriting between client and upstream: hop-by-hop headers (including the names the
//! `Connection` header lists) are removed, `X-Original-URL`-style override headers are removed,
//! and `X-Forwarded-For/Proto/Host` are set.

use std::net::IpAddr;

use bytes::BytesMut;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

// Names are parsed once, at compile time: a `&str` name would be validated on every request.
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Headers that only describe one connection (RFC 9110 §7.6.1 and common practice).
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Headers some frameworks (Symfony, IIS, Zend) use to rewrite the path after routing: an
/// attacker could reach a gated handler through an ungated path with them.
const PATH_OVERRIDES: [HeaderName; 6] = [
    HeaderName::from_static("x-original-url"),
    HeaderName::from_static("x-rewrite-url"),
    HeaderName::from_static("x-override-url"),
    HeaderName::from_static("x-original-uri"),
    HeaderName::from_static("x-forwarded-uri"),
    HeaderName::from_static("x-forwarded-path"),
];

/// Which of `names` appear in `headers`, as a bit set (bit `i` for `names[i]`): one pass over
/// the names present instead of one hash lookup per name looked for. Most requests and
/// responses carry none of them, and then nothing else is done.
fn present(headers: &HeaderMap, names: &[HeaderName]) -> u32 {
    debug_assert!(names.len() <= 32);
    let mut found = 0;
    for name in headers.keys() {
        if let Some(i) = names.iter().position(|n| n == name) {
            found |= 1 << i;
        }
    }
    found
}

/// Removes the headers of `names` whose bit is set in `found`.
fn remove_found(headers: &mut HeaderMap, names: &[HeaderName], found: u32) {
    for (i, name) in names.iter().enumerate() {
        if found & (1 << i) != 0 {
            headers.remove(name);
        }
    }
}

/// Removes the hop-by-hop headers (and those listed in `Connection`).
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let found = present(headers, &HOP_BY_HOP);
    // `HOP_BY_HOP[0]` is `Connection`.
    if found & 1 != 0 {
        strip_listed(headers);
    }
    remove_found(headers, &HOP_BY_HOP, found);
}

/// Removes the headers a `Connection` header names. The usual `keep-alive`, `close` and
/// `upgrade` are skipped without allocating (they are removed as hop-by-hop or name no
/// header): upstreams send `Connection: keep-alive` on nearly every response.
fn strip_listed(headers: &mut HeaderMap) {
    let mut listed: Vec<HeaderName> = Vec::new();
    for value in headers.get_all(header::CONNECTION) {
        let Ok(value) = value.to_str() else { continue };
        for name in value.split(',').map(str::trim) {
            if ["keep-alive", "close", "upgrade", ""]
                .iter()
                .any(|usual| name.eq_ignore_ascii_case(usual))
            {
                continue;
            }
            if let Ok(name) = HeaderName::from_bytes(name.as_bytes()) {
                listed.push(name);
            }
        }
    }
    for name in listed {
        headers.remove(name);
    }
}

/// The text of a peer's IP address as a header value, for `X-Forwarded-For`: made once per
/// connection (see [`super::Peer`]) and shared by its requests without copying.
pub fn ip_value(peer: IpAddr) -> HeaderValue {
    // An IP address is visible ASCII, so the conversion cannot fail.
    HeaderValue::from_str(&peer.to_string()).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// Rewrites a request's headers for the upstream. `peer_ip` is [`ip_value`] of the client's
/// address; `secure` says the client connected over TLS. With `upgrade`, the WebSocket
/// upgrade handshake headers are kept (they are hop-by-hop but the tunnel needs them).
pub fn to_upstream(
    headers: &mut HeaderMap,
    peer_ip: &HeaderValue,
    secure: bool,
    upgrade: Option<HeaderValue>,
) {
    let host = headers.get(header::HOST).cloned();
    strip_hop_by_hop(headers);
    let overrides = present(headers, &PATH_OVERRIDES);
    remove_found(headers, &PATH_OVERRIDES, overrides);
    if let Some(proto) = upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, proto);
    }
    // One lookup for the read and the write. Without a prior value the peer's value is
    // shared as is; with some, they are joined in order (a client may send the header on more
    // than one line: RFC 9110 §5.3 makes that one comma-separated list) and the peer's
    // address appended, in one allocation. Lines that are not visible ASCII, or blank, are
    // dropped: they carry no address an upstream could use.
    match headers.entry(X_FORWARDED_FOR) {
        header::Entry::Occupied(mut e) => {
            let ip = peer_ip.as_bytes();
            let prior = || {
                e.iter()
                    .filter_map(|v| v.to_str().ok())
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
            };
            let len: usize = prior().map(|p| p.len() + 2).sum();
            let joined = (len > 0)
                .then(|| {
                    let mut xff = BytesMut::with_capacity(len + ip.len());
                    for p in prior() {
                        xff.extend_from_slice(p.as_bytes());
                        xff.extend_from_slice(b", ");
                    }
                    xff.extend_from_slice(ip);
                    HeaderValue::from_maybe_shared(xff.freeze()).ok()
                })
                .flatten();
            e.insert(joined.unwrap_or_else(|| peer_ip.clone()));
        }
        header::Entry::Vacant(e) => {
            e.insert(peer_ip.clone());
        }
    }
    let proto = if secure { "https" } else { "http" };
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    match host {
        Some(h) => {
            headers.insert(X_FORWARDED_HOST, h);
        }
        None => {
            headers.remove(X_FORWARDED_HOST);
        }
    }
}

/// Joins the `cookie` fields of an HTTP/2 request into one for an HTTP/1.1 upstream, with
/// `"; "` (RFC 9113 §8.2.3): HTTP/2 clients may send each cookie in a field of its own, and
/// servers that join repeated fields with `,` (Werkzeug's, wsgiref, gunicorn) would read them
/// as one cookie.
pub fn join_cookies(headers: &mut HeaderMap) {
    let header::Entry::Occupied(mut e) = headers.entry(header::COOKIE) else {
        return;
    };
    if e.iter().nth(1).is_none() {
        return;
    }
    let joined = e
        .iter()
        .map(HeaderValue::as_bytes)
        .collect::<Vec<_>>()
        .join(&b"; "[..]);
    // Joined visible values stay a valid value.
    if let Ok(v) = HeaderValue::from_bytes(&joined) {
        e.insert(v);
    }
}

/// Rewrites an upstream response's headers for the client.
pub fn to_client(headers: &mut HeaderMap, upgraded: bool) {
    let keep = upgraded.then(|| {
        (
            headers.get(header::CONNECTION).cloned(),
            headers.get(header::UPGRADE).cloned(),
        )
    });
    strip_hop_by_hop(headers);
    if let Some((connection, upgrade)) = keep {
        if let Some(c) = connection {
            headers.insert(header::CONNECTION, c);
        }
        if let Some(u) = upgrade {
            headers.insert(header::UPGRADE, u);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn strips_hop_by_hop_and_listed() {
        let mut h = map(&[
            ("connection", "keep-alive, X-Secret"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("x-original-url", "/api/sign-up"),
            ("x-rewrite-url", "/api/sign-up"),
            ("host", "app.example"),
            ("x-forwarded-for", "10.0.0.1"),
            ("x-forwarded-proto", "https"),
            ("accept", "*/*"),
        ]);
        to_upstream(&mut h, &ip_value("127.0.0.1".parse().unwrap()), false, None);
        for gone in [
            "connection",
            "x-secret",
            "keep-alive",
            "te",
            "x-original-url",
            "x-rewrite-url",
        ] {
            assert!(h.get(gone).is_none(), "{gone} should be stripped");
        }
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 127.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "app.example");
        assert_eq!(h["host"], "app.example");
        assert_eq!(h["accept"], "*/*");
    }

    #[test]
    fn usual_connection_tokens_are_skipped_and_listed_names_still_go() {
        let mut h = map(&[
            ("connection", "Keep-Alive, close , x-internal,,Upgrade"),
            ("x-internal", "1"),
            ("upgrade", "h2c"),
            ("content-length", "2"),
        ]);
        to_client(&mut h, false);
        assert!(h.get("connection").is_none());
        assert!(h.get("x-internal").is_none());
        assert!(h.get("upgrade").is_none());
        assert_eq!(h["content-length"], "2");

        let mut h = map(&[]);
        to_upstream(
            &mut h,
            &ip_value("2001:db8::ffff:ffff:ffff:ffff".parse().unwrap()),
            false,
            None,
        );
        assert_eq!(h["x-forwarded-for"], "2001:db8::ffff:ffff:ffff:ffff");
    }

    #[test]
    fn forwarded_for_lines_are_joined_in_order() {
        let peer = ip_value("192.0.2.7".parse().unwrap());
        let mut h = map(&[
            ("x-forwarded-for", "10.0.0.1, 10.0.0.2"),
            ("accept", "*/*"),
            ("x-forwarded-for", " 10.0.0.3 "),
            ("x-forwarded-for", ""),
            ("x-forwarded-for", "10.0.0.4"),
        ]);
        to_upstream(&mut h, &peer, false, None);
        let all: Vec<_> = h.get_all("x-forwarded-for").iter().collect();
        assert_eq!(all, ["10.0.0.1, 10.0.0.2, 10.0.0.3, 10.0.0.4, 192.0.2.7"]);

        // Only blank or non-ASCII lines: the peer alone.
        let mut h = HeaderMap::new();
        h.append(X_FORWARDED_FOR, HeaderValue::from_static(" "));
        h.append(X_FORWARDED_FOR, HeaderValue::from_bytes(b"\xff").unwrap());
        to_upstream(&mut h, &peer, false, None);
        let all: Vec<_> = h.get_all("x-forwarded-for").iter().collect();
        assert_eq!(all, ["192.0.2.7"]);
    }

    #[test]
    fn keeps_upgrade_handshake_when_asked() {
        let mut h = map(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
        to_upstream(
            &mut h,
            &ip_value("127.0.0.1".parse().unwrap()),
            false,
            Some(HeaderValue::from_static("websocket")),
        );
        assert_eq!(h["connection"], "upgrade");
        assert_eq!(h["upgrade"], "websocket");
        assert!(h.get("x-forwarded-host").is_none());
    }
}
