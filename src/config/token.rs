//! Token identifier sources (`jwt`, `userinfo`): their validated config types and the
//! validation of their file form. The `oauth` module verifies the tokens; here we only check
//! that a source is complete and coherent (one key source, HTTPS URLs, JSON pointers, times).

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::Location;
use super::raw::{OneOrMany, RawFrom, RawJwt, RawUserinfo, S};
use super::units;
use super::validate::{Errors, json_pointer};

/// What a token source does with the value found at its location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    Jwt(JwtSource),
    Userinfo(UserinfoSource),
}

/// A signed JWT (an OIDC id_token) carrying the identifier in a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtSource {
    /// Required `iss`; also the base for discovery.
    pub issuer: String,
    /// Accepted `aud` values (at least one).
    pub audiences: Vec<String>,
    pub keys: JwtKeys,
    /// JSON pointer into the claims; default `/email`.
    pub claim: String,
    /// Require `<claim>_verified` to be JSON `true` (default).
    pub require_verified: bool,
    /// Clock skew allowed on `exp`/`nbf`; default 60 s.
    pub leeway: Duration,
    pub fetch: Fetch,
}

/// Where the verification keys come from.
#[derive(Clone, PartialEq, Eq)]
pub enum JwtKeys {
    /// `issuer` + `/.well-known/openid-configuration` → `jwks_uri`.
    Discovery,
    /// An explicit `https://` JWKS URL.
    JwksUri(String),
    /// A PEM public key (RSA, EC or Ed25519) and the algorithm it is used with, if given.
    PublicKey {
        pem: String,
        algorithm: Option<String>,
    },
    /// A shared secret (for tokens the app itself signs) and its algorithm (HS256 by default).
    Hmac {
        secret: String,
        algorithm: Option<String>,
    },
}

impl fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JwtKeys::Discovery => f.write_str("Discovery"),
            JwtKeys::JwksUri(u) => f.debug_tuple("JwksUri").field(u).finish(),
            JwtKeys::PublicKey { algorithm, .. } => f
                .debug_struct("PublicKey")
                .field("algorithm", algorithm)
                .finish_non_exhaustive(),
            JwtKeys::Hmac { algorithm, .. } => f
                .debug_struct("Hmac")
                .field("secret", &"[redacted]")
                .field("algorithm", algorithm)
                .finish(),
        }
    }
}

/// How the provider is reached (JWKS, discovery, userinfo).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetch {
    /// Per request to the provider; default 5 s.
    pub timeout: Duration,
    /// Extra CA file trusted besides the webpki roots.
    pub ca: Option<PathBuf>,
    /// A cached JWKS is refetched after this; default 1 h.
    pub max_age: Duration,
    /// Unknown `kid`s refetch the JWKS (and a failed fetch is retried) at most this often;
    /// default 10 s.
    pub min_refresh: Duration,
}

/// How a userinfo response is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserinfoFormat {
    /// A JSON object; the identifier at `field`.
    Object,
    /// GitHub's `/user/emails`: a list of `{email, primary, verified}`; the primary verified one.
    GithubEmails,
}

/// An OAuth access token looked up at the provider's userinfo endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserinfoSource {
    /// `https://` URL, or `None` when discovered from `issuer`.
    pub url: Option<String>,
    pub issuer: Option<String>,
    /// JSON pointer to the identifier; default `/email`.
    pub field: String,
    /// JSON pointer that must be `true`: `verified_field`, else `<field>_verified` (as OIDC's
    /// `email_verified`); `None` only with `require_verified: false` (and for
    /// `github_emails`, which picks the primary verified address itself).
    pub verified_field: Option<String>,
    pub format: UserinfoFormat,
    /// Default 60 s.
    pub cache_ttl: Duration,
    /// Entries; default 10 000.
    pub cache_size: usize,
    pub fetch: Fetch,
}

fn https(s: &S<String>, path: &str, e: &mut Errors) -> Option<String> {
    match s.value.parse::<http::Uri>() {
        Ok(u) if u.scheme_str() == Some("https") && u.host().is_some() => Some(s.value.clone()),
        _ => {
            // The value is not repeated: a URL may carry a secret from `${ENV}`.
            e.at(path, s, "must be an https:// URL");
            None
        }
    }
}

fn dur(s: Option<&S<String>>, path: &str, default: Duration, e: &mut Errors) -> Duration {
    let Some(s) = s else { return default };
    units::duration(&s.value).unwrap_or_else(|m| {
        e.at(path, s, m);
        default
    })
}

fn pointer(s: Option<&S<String>>, path: &str, e: &mut Errors) -> Option<String> {
    let s = s?;
    if let Err(m) = json_pointer(&s.value) {
        e.at(path, s, m);
    }
    Some(s.value.clone())
}

/// The token's location: exactly one of `json`, `form`, `multipart`, `query`, `header`, `cookie`.
pub(super) fn from(f: &S<RawFrom>, path: &str, e: &mut Errors) -> Option<Location> {
    let r = &f.value;
    let given: Vec<(&str, &S<String>)> = [
        ("json", &r.json),
        ("form", &r.form),
        ("multipart", &r.multipart),
        ("query", &r.query),
        ("header", &r.header),
        ("cookie", &r.cookie),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.as_ref().map(|v| (k, v)))
    .collect();
    let [(key, v)] = given.as_slice() else {
        e.at(
            path,
            f,
            "needs exactly one of `json`, `form`, `multipart`, `query`, `header` or `cookie`",
        );
        return None;
    };
    let field = format!("{path}.{key}");
    let text = v.value.as_str();
    let bad_cookie = *key == "cookie" && text.chars().any(|c| c == ';' || c == '=' || c == ' ');
    if text.is_empty() || text.chars().any(char::is_control) || bad_cookie {
        e.at(&field, v, "must be a non-empty name");
        return None;
    }
    Some(match *key {
        "json" => {
            if let Err(m) = json_pointer(text) {
                e.at(&field, v, m);
                return None;
            }
            Location::Json(text.to_owned())
        }
        "header" => match http::HeaderName::from_bytes(text.as_bytes()) {
            Ok(h) => Location::Header(h.as_str().to_owned()),
            Err(_) => {
                e.at(&field, v, "is not a valid header name");
                return None;
            }
        },
        "form" => Location::Form(text.to_owned()),
        "multipart" => Location::Multipart(text.to_owned()),
        "query" => Location::Query(text.to_owned()),
        _ => Location::Cookie(text.to_owned()),
    })
}

fn fetch(
    timeout: Option<&S<String>>,
    ca: Option<&S<String>>,
    path: &str,
    base: &Path,
    e: &mut Errors,
) -> Fetch {
    let timeout_path = format!("{path}.timeout");
    let t = dur(timeout, &timeout_path, Duration::from_secs(5), e);
    if t.is_zero()
        && let Some(raw) = timeout
    {
        e.at(timeout_path, raw, "must be greater than 0");
    }
    Fetch {
        timeout: t,
        ca: ca.map(|c| base.join(&c.value)),
        max_age: Duration::from_secs(3600),
        min_refresh: Duration::from_secs(10),
    }
}

pub(super) fn jwt(j: &S<RawJwt>, path: &str, base: &Path, e: &mut Errors) -> Option<TokenSource> {
    let r = &j.value;
    let before = e.len();
    let issuer = match &r.issuer {
        Some(s) if !s.value.is_empty() => s.value.clone(),
        _ => {
            e.at(path, j, "needs `issuer` (the required `iss` of the token)");
            String::new()
        }
    };
    let audiences = match r.audience.as_ref().map(|a| (&a.value, a)) {
        Some((OneOrMany::One(a), _)) if !a.is_empty() => vec![a.clone()],
        Some((OneOrMany::Many(v), _)) if !v.is_empty() && v.iter().all(|a| !a.is_empty()) => {
            v.clone()
        }
        Some((_, s)) => {
            e.at(
                format!("{path}.audience"),
                s,
                "must be a non-empty string or list of strings",
            );
            Vec::new()
        }
        None => {
            e.at(
                path,
                j,
                "needs `audience` (your client id: the required `aud` of the token)",
            );
            Vec::new()
        }
    };
    let alg = r.algorithm.as_ref().map(|a| a.value.clone());
    let given = [
        r.jwks_uri.is_some(),
        r.public_key.is_some(),
        r.hmac_secret.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if given > 1 {
        e.at(
            path,
            j,
            "give at most one of `jwks_uri`, `public_key` and `hmac_secret`",
        );
    }
    let keys = if let Some(u) = &r.jwks_uri {
        JwtKeys::JwksUri(https(u, &format!("{path}.jwks_uri"), e).unwrap_or_default())
    } else if let Some(k) = &r.public_key {
        if !k.value.contains("-----BEGIN PUBLIC KEY-----")
            && !k.value.contains("-----BEGIN RSA PUBLIC KEY-----")
        {
            e.at(
                format!("{path}.public_key"),
                k,
                "must be a PEM public key (-----BEGIN PUBLIC KEY-----)",
            );
        }
        JwtKeys::PublicKey {
            pem: k.value.clone(),
            algorithm: alg.clone(),
        }
    } else if let Some(s) = &r.hmac_secret {
        if s.value.len() < 32 {
            e.at(
                format!("{path}.hmac_secret"),
                s,
                "must be at least 32 bytes",
            );
        }
        JwtKeys::Hmac {
            secret: s.value.clone(),
            algorithm: alg.clone(),
        }
    } else {
        if let Some(i) = &r.issuer {
            https(i, &format!("{path}.issuer"), e);
        }
        JwtKeys::Discovery
    };
    if let (Some(a), JwtKeys::Discovery | JwtKeys::JwksUri(_)) = (&r.algorithm, &keys) {
        e.at(
            format!("{path}.algorithm"),
            a,
            "only with `public_key` or `hmac_secret`: a JWKS names each key's algorithm",
        );
    }
    if let Some(a) = &r.algorithm {
        let ok = match &keys {
            JwtKeys::Hmac { .. } => ["HS256", "HS384", "HS512"].contains(&a.value.as_str()),
            _ => [
                "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
            ]
            .contains(&a.value.as_str()),
        };
        if !ok {
            e.at(
                format!("{path}.algorithm"),
                a,
                format!("`{}` is not an algorithm for this key", a.value),
            );
        }
    }
    let claim =
        pointer(r.claim.as_ref(), &format!("{path}.claim"), e).unwrap_or_else(|| "/email".into());
    let mut f = fetch(r.timeout.as_ref(), r.ca.as_ref(), path, base, e);
    f.max_age = dur(
        r.jwks_max_age.as_ref(),
        &format!("{path}.jwks_max_age"),
        f.max_age,
        e,
    );
    f.min_refresh = dur(
        r.jwks_min_refresh.as_ref(),
        &format!("{path}.jwks_min_refresh"),
        f.min_refresh,
        e,
    );
    if let Some(s) = &r.jwks_min_refresh
        && f.min_refresh < Duration::from_millis(100)
    {
        e.at(
            format!("{path}.jwks_min_refresh"),
            s,
            "must be at least 100ms: each token with an unknown kid would fetch the JWKS",
        );
    }
    let leeway = dur(
        r.leeway.as_ref(),
        &format!("{path}.leeway"),
        Duration::from_secs(60),
        e,
    );
    if let Some(s) = &r.leeway
        && leeway > Duration::from_secs(300)
    {
        e.at(
            format!("{path}.leeway"),
            s,
            "must be at most 5m: expired tokens would be accepted that long",
        );
    }
    (e.len() == before).then(|| {
        TokenSource::Jwt(JwtSource {
            issuer,
            audiences,
            keys,
            claim,
            require_verified: r.require_verified.unwrap_or(true),
            leeway,
            fetch: f,
        })
    })
}

pub(super) fn userinfo(
    u: &S<RawUserinfo>,
    path: &str,
    base: &Path,
    e: &mut Errors,
) -> Option<TokenSource> {
    let r = &u.value;
    let before = e.len();
    let url = r
        .url
        .as_ref()
        .and_then(|s| https(s, &format!("{path}.url"), e));
    let issuer = r
        .issuer
        .as_ref()
        .and_then(|s| https(s, &format!("{path}.issuer"), e));
    if r.url.is_none() && r.issuer.is_none() {
        e.at(
            path,
            u,
            "needs `url` (the userinfo endpoint) or `issuer` (to discover it)",
        );
    }
    let format = match r.format.as_ref().map(|f| (f.value.as_str(), f)) {
        None | Some(("object", _)) => UserinfoFormat::Object,
        Some(("github_emails", _)) => UserinfoFormat::GithubEmails,
        Some((_, f)) => {
            e.at(
                format!("{path}.format"),
                f,
                "must be `object` or `github_emails`",
            );
            UserinfoFormat::Object
        }
    };
    let field =
        pointer(r.field.as_ref(), &format!("{path}.field"), e).unwrap_or_else(|| "/email".into());
    // Verified unless the operator opts out: an unverified address is anyone's to claim at a
    // provider that lets people sign up without confirming it.
    let require = r.require_verified.as_ref().is_none_or(|s| s.value);
    let verified_field = match &r.verified_field {
        Some(v) if !require => {
            e.at(
                format!("{path}.verified_field"),
                v,
                "is not checked with `require_verified: false`; remove one of them",
            );
            None
        }
        Some(v) => pointer(Some(v), &format!("{path}.verified_field"), e),
        None if !require || format != UserinfoFormat::Object => None,
        // Only a top-level field has an OIDC-style twin (`/email` → `/email_verified`).
        None if field.rfind('/') == Some(0) => Some(format!("{field}_verified")),
        None => {
            // (`field` is nested only when given: the default is `/email`.)
            if let Some(at) = &r.field {
                e.at(
                    format!("{path}.field"),
                    at,
                    format!("`{field}` is nested, so there is no `{field}_verified` to check: give `verified_field` (a JSON pointer that must be true), or `require_verified: false` if the provider verifies every address"),
                );
            }
            None
        }
    };
    let cache_ttl = dur(
        r.cache_ttl.as_ref(),
        &format!("{path}.cache_ttl"),
        Duration::from_secs(60),
        e,
    );
    if let Some(s) = &r.cache_ttl
        && cache_ttl > Duration::from_secs(86_400)
    {
        e.at(
            format!("{path}.cache_ttl"),
            s,
            "must be at most 24h: a revoked token would still be answered from the cache that long",
        );
    }
    let cache_size = r
        .cache_size
        .as_ref()
        .map_or(10_000, |s| usize::try_from(s.value).unwrap_or(usize::MAX));
    let fetch = fetch(r.timeout.as_ref(), r.ca.as_ref(), path, base, e);
    (e.len() == before).then_some({
        TokenSource::Userinfo(UserinfoSource {
            url,
            issuer,
            field,
            verified_field,
            format,
            cache_ttl,
            cache_size,
            fetch,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(source: &str) -> Result<crate::config::Config, String> {
        let text = format!(
            "listen: [{{addr: 127.0.0.1:8080}}]\nupstream: http://127.0.0.1:3000\nroutes:\n  - name: r\n    path: /r\n    kind: sign_up\n    identifier:\n      - {source}\n"
        );
        crate::config::from_str(&text, Path::new("/etc/idgate/config.yaml"))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn jwt_and_userinfo_sources() {
        let c = parse("jwt: { from: { cookie: s }, issuer: https://id.example, audience: [a, b], ca: ca.pem }").unwrap();
        let s = &c.routes[0].identifier[0];
        assert_eq!(s.location, Location::Cookie("s".into()));
        let Some(TokenSource::Jwt(j)) = &s.token else {
            panic!("{s:?}")
        };
        assert_eq!(j.audiences, ["a", "b"]);
        assert_eq!((j.claim.as_str(), j.require_verified), ("/email", true));
        assert_eq!(j.keys, JwtKeys::Discovery);
        assert_eq!(j.leeway, Duration::from_secs(60));
        assert_eq!(j.fetch.ca.as_deref(), Some(Path::new("/etc/idgate/ca.pem")));
        let c = parse("userinfo: { from: { header: authorization }, url: https://api.github.com/user/emails, format: github_emails }").unwrap();
        let Some(TokenSource::Userinfo(u)) = &c.routes[0].identifier[0].token else {
            panic!()
        };
        assert_eq!(
            (u.format, u.cache_ttl, u.cache_size),
            (
                UserinfoFormat::GithubEmails,
                Duration::from_secs(60),
                10_000
            )
        );
    }

    /// A userinfo answer must say the identifier is verified unless the operator opts out.
    #[test]
    fn userinfo_requires_a_verified_identifier_by_default() {
        let verified = |source: &str| {
            let c = parse(source).unwrap();
            let Some(TokenSource::Userinfo(u)) = &c.routes[0].identifier[0].token else {
                panic!("{source}")
            };
            u.verified_field.clone()
        };
        let base = "userinfo: { from: { header: authorization }, issuer: https://id.example";
        assert_eq!(
            verified(&format!("{base} }}")).as_deref(),
            Some("/email_verified")
        );
        assert_eq!(
            verified(&format!("{base}, field: /phone_number }}")).as_deref(),
            Some("/phone_number_verified")
        );
        assert_eq!(
            verified(&format!("{base}, verified_field: /ok }}")).as_deref(),
            Some("/ok")
        );
        assert_eq!(
            verified(&format!("{base}, require_verified: false }}")),
            None
        );
        assert_eq!(verified(&format!("{base}, format: github_emails }}")), None);
        let nested = parse(&format!("{base}, field: /emails/0/value }}")).unwrap_err();
        assert!(nested.contains("verified_field"), "{nested}");
        assert_eq!(
            verified(&format!(
                "{base}, field: /emails/0/value, verified_field: /ok }}"
            ))
            .as_deref(),
            Some("/ok")
        );
        let both = parse(&format!(
            "{base}, verified_field: /ok, require_verified: false }}"
        ))
        .unwrap_err();
        assert!(both.contains("require_verified: false"), "{both}");
    }

    #[test]
    fn incomplete_or_unsafe_sources_are_errors() {
        let bad = [
            ("jwt: { from: { form: c }, audience: a }", "needs `issuer`"),
            (
                "jwt: { from: { form: c }, issuer: https://i }",
                "needs `audience`",
            ),
            (
                "jwt: { from: { form: c, query: c }, issuer: https://i, audience: a }",
                "exactly one",
            ),
            (
                "jwt: { from: { form: c }, issuer: http://i, audience: a }",
                "https://",
            ),
            (
                "jwt: { from: { form: c }, issuer: i, audience: a, jwks_uri: http://x/jwks }",
                "https://",
            ),
            (
                "jwt: { from: { form: c }, issuer: i, audience: a, hmac_secret: short }",
                "32 bytes",
            ),
            (
                "jwt: { from: { form: c }, issuer: i, audience: a, hmac_secret: x, public_key: y }",
                "at most one",
            ),
            (
                "jwt: { from: { form: c }, issuer: https://i, audience: a, algorithm: none }",
                "only with",
            ),
            (
                "jwt: { from: { form: c }, issuer: i, audience: a, hmac_secret: 0123456789abcdef0123456789abcdef, algorithm: RS256 }",
                "not an algorithm",
            ),
            (
                "jwt: { from: { form: c }, issuer: i, audience: a, public_key: nope }",
                "PEM",
            ),
            (
                "jwt: { from: { form: c }, issuer: https://i, audience: a, claim: email }",
                "JSON pointer",
            ),
            (
                "jwt: { from: { form: c }, issuer: https://i, audience: a }\n        form: x",
                "one kind",
            ),
            (
                "jwt: { from: { form: c }, issuer: https://i, audience: a, jwks_min_refresh: 0s }",
                "at least 100ms",
            ),
            (
                "jwt: { from: { form: c }, issuer: https://i, audience: a, leeway: 30d }",
                "at most 5m",
            ),
            ("userinfo: { from: { form: t } }", "needs `url`"),
            (
                "userinfo: { from: { form: t }, url: https://u, cache_ttl: 400000d }",
                "at most 24h",
            ),
            (
                "userinfo: { from: { form: t }, url: https://u, format: xml }",
                "github_emails",
            ),
        ];
        for (src, want) in bad {
            let err = parse(src).expect_err(src);
            assert!(err.contains(want), "{src}: {err}");
        }
    }
}
