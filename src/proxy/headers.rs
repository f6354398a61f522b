//! Header rewriting between client and upstream: hop-by-hop headers (including the names the
//! `Connection` header lists) are removed, `X-Original-URL`-style override headers are removed,
//! and `X-Forwarded-For/Proto/Host` are set.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Headers that only describe one connection (RFC 9110 §7.6.1 and common practice).
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Headers some frameworks (Symfony, IIS, Zend) use to rewrite the path after routing: an
/// attacker could reach a gated handler through an ungated path with them.
const PATH_OVERRIDES: [&str; 6] = [
    "x-original-url",
    "x-rewrite-url",
    "x-override-url",
    "x-original-uri",
    "x-forwarded-uri",
    "x-forwarded-path",
];

/// Removes the hop-by-hop headers (and those listed in `Connection`).
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Rewrites a request's headers for the upstream. With `upgrade`, the WebSocket upgrade
/// handshake headers are kept (they are hop-by-hop but the tunnel needs them).
pub fn to_upstream(headers: &mut HeaderMap, peer: IpAddr, upgrade: Option<HeaderValue>) {
    let host = headers.get(header::HOST).cloned();
    strip_hop_by_hop(headers);
    for name in PATH_OVERRIDES {
        headers.remove(name);
    }
    if let Some(proto) = upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, proto);
    }
    let peer = peer.to_string();
    let xff = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(prior) if !prior.trim().is_empty() => format!("{prior}, {peer}"),
        _ => peer,
    };
    // All values below are built from visible ASCII, so these conversions cannot fail.
    if let Ok(v) = HeaderValue::from_str(&xff) {
        headers.insert("x-forwarded-for", v);
    }
    headers.insert("x-forwarded-proto", HeaderValue::from_static("http"));
    match host {
        Some(h) => {
            headers.insert("x-forwarded-host", h);
        }
        None => {
            headers.remove("x-forwarded-host");
        }
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
        to_upstream(&mut h, "127.0.0.1".parse().unwrap(), None);
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
    fn keeps_upgrade_handshake_when_asked() {
        let mut h = map(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
        to_upstream(
            &mut h,
            "127.0.0.1".parse().unwrap(),
            Some(HeaderValue::from_static("websocket")),
        );
        assert_eq!(h["connection"], "upgrade");
        assert_eq!(h["upgrade"], "websocket");
        assert!(h.get("x-forwarded-host").is_none());
    }
}
