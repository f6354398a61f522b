//! Validation: file structs ([`super::raw`]) → public [`Config`], collecting every problem
//! with its path and line:column instead of stopping at the first.

use std::fmt::Display;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use rustc_hash::FxHashMap;

use super::raw::{RawConfig, RawSource, RawTls, RawUpstreamTls, RawWorkers, S};
use super::token;
use super::units::{self, RawSize};
use super::{
    Admin, Audit, AuditIdentifiers, AuditOutput, Config, Deny, FieldError, IdentifierSource,
    Identifiers, Limits, ListFiles, Listener, Lists, Location, MAX_WORKERS, Reload, RequestId,
    Restrictions, Route, ServerTls, Store, Timeouts, TlsFiles, UpstreamTls,
};

/// Largest accepted `limits.max_json_depth` (serde_json's own recursion limit).
const MAX_JSON_DEPTH: u64 = 128;

/// The largest `body_limit` (and `limits.body`): half the proxy's buffering budget for gated
/// bodies, so a compressed body and its decoded bytes fit in it together.
pub const MAX_BODY_LIMIT: u64 = 32 << 20;

#[derive(Default)]
pub(super) struct Errors(Vec<FieldError>);

impl Errors {
    /// How many errors so far.
    pub(super) fn len(&self) -> usize {
        self.0.len()
    }

    /// Records an error at the location of `at`.
    pub(super) fn at<T>(&mut self, path: impl Display, at: &S<T>, message: impl Into<String>) {
        self.loc(path, Some(&at.referenced), message);
    }

    pub(super) fn loc(
        &mut self,
        path: impl Display,
        loc: Option<&serde_saphyr::Location>,
        message: impl Into<String>,
    ) {
        let known = loc.filter(|l| l.line() > 0);
        self.0.push(FieldError {
            path: path.to_string(),
            line: known.and_then(|l| usize::try_from(l.line()).ok()),
            column: known.and_then(|l| usize::try_from(l.column()).ok()),
            message: message.into(),
        });
    }
}

pub(super) fn validate(raw: RawConfig, base: &Path) -> Result<Config, Vec<FieldError>> {
    let mut e = Errors::default();

    let listen = listeners(&raw, base, &mut e);
    let upstream = upstream(&raw.upstream, &mut e);
    let upstream_tls = raw
        .upstream_tls
        .as_ref()
        .and_then(|t| upstream_tls(t, upstream.as_ref(), base, &mut e));
    let admin = admin(&raw, &listen, base, &mut e);
    let lists = lists(&raw, base, &mut e);
    let identifiers = identifiers(&raw, &mut e);
    let routes = routes(&raw, base, &mut e);
    let deny = deny(&raw, &mut e);
    let limits = limits(&raw, &mut e);
    let timeouts = timeouts(&raw, &mut e);
    let reload = reload(&raw, &mut e);
    let store = store(&raw, base, &mut e);
    let audit = audit(&raw, base, &mut e);
    let request_id = request_id(&raw, &mut e);
    let workers = workers(&raw, &mut e);
    let invitations = raw
        .invitations
        .as_ref()
        .and_then(|i| super::invitations::invitations(i, base, &mut e));

    let restrictions = raw
        .restrictions
        .as_ref()
        .map_or_else(Restrictions::default, |r| {
            let d = Restrictions::default();
            Restrictions {
                allowlist: r.allowlist.unwrap_or(d.allowlist),
                blocklist: r.blocklist.unwrap_or(d.blocklist),
                block_email_subaddresses: r
                    .block_email_subaddresses
                    .unwrap_or(d.block_email_subaddresses),
                block_disposable_email_domains: r
                    .block_disposable_email_domains
                    .unwrap_or(d.block_disposable_email_domains),
                allowlist_blocklist_disabled_on_sign_in: r
                    .allowlist_blocklist_disabled_on_sign_in
                    .unwrap_or(d.allowlist_blocklist_disabled_on_sign_in),
            }
        });

    match upstream {
        Some(upstream) if e.0.is_empty() => Ok(Config {
            listen: listen.into_iter().map(|(l, _)| l).collect(),
            workers,
            upstream,
            upstream_tls,
            admin,
            lists,
            precedence: raw.precedence.unwrap_or_default(),
            restrictions,
            identifiers,
            routes,
            deny,
            limits,
            timeouts,
            reload,
            store,
            mode: raw.mode.unwrap_or_default(),
            audit,
            request_id,
            invitations,
        }),
        _ => Err(e.0),
    }
}

/// Listeners with their index in the file (kept for error messages).
fn listeners(raw: &RawConfig, base: &Path, e: &mut Errors) -> Vec<(Listener, usize)> {
    if raw.listen.value.is_empty() {
        e.at("listen", &raw.listen, "needs at least one listener");
    }
    let mut out: Vec<(Listener, usize)> = Vec::new();
    for (i, l) in raw.listen.value.iter().enumerate() {
        let path = format!("listen[{i}].addr");
        let tls = l
            .value
            .tls
            .as_ref()
            .map(|t| server_tls(&t.value, &format!("listen[{i}].tls"), base, e));
        let Some(addr) = socket_addr(&l.value.addr, &path, e) else {
            continue;
        };
        if let Some((_, j)) = out.iter().find(|(other, _)| conflicts(other.addr, addr)) {
            e.at(
                &path,
                &l.value.addr,
                format!("{addr} overlaps listen[{j}].addr"),
            );
        }
        out.push((Listener { addr, tls }, i));
    }
    out
}

/// Whether two listeners cannot both bind (port 0 picks a free port, so it never conflicts).
fn conflicts(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port()
        && a.port() != 0
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

fn socket_addr(s: &S<String>, path: &str, e: &mut Errors) -> Option<SocketAddr> {
    match s.value.trim().parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            e.at(
                path,
                s,
                format!(
                    "`{}` is not an IP address with a port, like 127.0.0.1:8080 or [::1]:8080",
                    s.value
                ),
            );
            None
        }
    }
}

fn upstream(s: &S<String>, e: &mut Errors) -> Option<http::Uri> {
    let uri = match s.value.trim().parse::<http::Uri>() {
        Ok(u) => u,
        Err(err) => {
            e.at("upstream", s, format!("not a URL: {err}"));
            return None;
        }
    };
    let problem = match (uri.scheme_str(), uri.authority()) {
        (None, _) => Some("must start with http://, like http://127.0.0.1:3000".to_owned()),
        (Some("http" | "https"), None) => Some("needs a host".to_owned()),
        (Some("http" | "https"), Some(a)) if a.as_str().contains('@') => {
            Some("must not contain user info (`user@`)".to_owned())
        }
        (Some("http" | "https"), Some(a)) if a.host().is_empty() => Some("needs a host".to_owned()),
        (Some("http" | "https"), Some(_)) => {
            if uri.query().is_some() {
                Some("must not have a query".to_owned())
            } else if !matches!(uri.path(), "" | "/") {
                Some(format!(
                    "must not have a path (found `{}`): request paths are forwarded unchanged",
                    uri.path()
                ))
            } else {
                None
            }
        }
        (Some(other), _) => Some(format!(
            "scheme `{other}` is not supported; use http:// or https://"
        )),
    };
    match problem {
        Some(p) => {
            e.at("upstream", s, p);
            None
        }
        None => Some(uri),
    }
}

/// A PEM path, resolved against the config file's directory (not opened here).
fn pem_path(s: &S<String>, path: &str, base: &Path, e: &mut Errors) -> std::path::PathBuf {
    if s.value.trim().is_empty() {
        e.at(path, s, "must be a file path");
    }
    base.join(&s.value)
}

fn server_tls(t: &RawTls, path: &str, base: &Path, e: &mut Errors) -> ServerTls {
    let mut certificates = vec![TlsFiles {
        cert: pem_path(&t.cert, &format!("{path}.cert"), base, e),
        key: pem_path(&t.key, &format!("{path}.key"), base, e),
    }];
    for (j, p) in t.sni.iter().flatten().enumerate() {
        certificates.push(TlsFiles {
            cert: pem_path(&p.value.cert, &format!("{path}.sni[{j}].cert"), base, e),
            key: pem_path(&p.value.key, &format!("{path}.sni[{j}].key"), base, e),
        });
    }
    ServerTls { certificates }
}

fn upstream_tls(
    t: &S<RawUpstreamTls>,
    upstream: Option<&http::Uri>,
    base: &Path,
    e: &mut Errors,
) -> Option<UpstreamTls> {
    if let Some(u) = upstream
        && u.scheme_str() != Some("https")
    {
        e.at(
            "upstream_tls",
            t,
            "is set but `upstream` is not an https:// URL",
        );
    }
    let r = &t.value;
    let ca =
        r.ca.as_ref()
            .map(|c| pem_path(c, "upstream_tls.ca", base, e));
    let client_cert = match (&r.client_cert, &r.client_key) {
        (Some(c), Some(k)) => Some(TlsFiles {
            cert: pem_path(c, "upstream_tls.client_cert", base, e),
            key: pem_path(k, "upstream_tls.client_key", base, e),
        }),
        (Some(c), None) => {
            e.at(
                "upstream_tls.client_cert",
                c,
                "needs upstream_tls.client_key",
            );
            None
        }
        (None, Some(k)) => {
            e.at(
                "upstream_tls.client_key",
                k,
                "needs upstream_tls.client_cert",
            );
            None
        }
        (None, None) => None,
    };
    let server_name = r.server_name.as_ref().and_then(|n| {
        let name = n.value.trim();
        match rustls_pki_types::ServerName::try_from(name) {
            Ok(_) => Some(name.to_owned()),
            Err(_) => {
                e.at(
                    "upstream_tls.server_name",
                    n,
                    format!("`{}` is not a DNS name or IP address", n.value),
                );
                None
            }
        }
    });
    Some(UpstreamTls {
        ca,
        client_cert,
        server_name,
    })
}

fn admin(raw: &RawConfig, listen: &[(Listener, usize)], base: &Path, e: &mut Errors) -> Admin {
    let mut admin = Admin::default();
    let Some(r) = &raw.admin else {
        check_admin_listen(admin.listen, None, listen, e);
        return admin;
    };
    if let Some(l) = &r.listen
        && let Some(addr) = socket_addr(l, "admin.listen", e)
    {
        admin.listen = addr;
    }
    check_admin_listen(admin.listen, r.listen.as_ref(), listen, e);
    admin.tls = r
        .tls
        .as_ref()
        .map(|t| server_tls(&t.value, "admin.tls", base, e));
    for (i, key) in r.secret_keys.iter().flatten().enumerate() {
        let path = format!("admin.secret_keys[{i}]");
        if key.value.is_empty() {
            e.at(path, key, "is empty");
        } else if key
            .value
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
        {
            e.at(path, key, "must not contain blanks or control characters");
        } else {
            admin.secret_keys.push(key.value.clone());
        }
    }
    if let Some(id) = &r.magic_client_id {
        if id.value.trim().is_empty() {
            e.at(
                "admin.magic_client_id",
                id,
                "is empty; remove it or set a client id",
            );
        } else {
            admin.magic_client_id = Some(id.value.clone());
        }
    }
    admin
}

fn check_admin_listen(
    addr: SocketAddr,
    at: Option<&S<String>>,
    listen: &[(Listener, usize)],
    e: &mut Errors,
) {
    if let Some((_, j)) = listen.iter().find(|(l, _)| conflicts(l.addr, addr)) {
        e.loc(
            "admin.listen",
            at.map(|s| &s.referenced),
            format!(
                "{addr} overlaps proxy listener listen[{j}].addr; the admin port must be separate"
            ),
        );
    }
}

fn lists(raw: &RawConfig, base: &Path, e: &mut Errors) -> Lists {
    let mut lists = Lists::default();
    let Some(r) = &raw.lists else {
        return lists;
    };
    if let Some(m) = &r.max_entries {
        match usize::try_from(m.value) {
            Ok(0) => e.at("lists.max_entries", m, "must be at least 1"),
            Ok(n) => lists.max_entries = n,
            Err(_) => e.at("lists.max_entries", m, "is too large"),
        }
    }
    for (name, entries, out) in [
        ("allow", &r.allow, &mut lists.allow),
        ("block", &r.block, &mut lists.block),
    ] {
        if let Some(entries) = entries {
            if entries.value.len() > lists.max_entries {
                e.at(
                    format!("lists.{name}"),
                    entries,
                    format!(
                        "has {} entries, more than lists.max_entries ({})",
                        entries.value.len(),
                        lists.max_entries
                    ),
                );
            }
            out.clone_from(&entries.value);
        }
    }
    if let Some(files) = &r.files {
        let mut resolved = ListFiles::default();
        for (name, paths, out) in [
            ("allow", &files.allow, &mut resolved.allow),
            ("block", &files.block, &mut resolved.block),
        ] {
            for (i, p) in paths.iter().flatten().enumerate() {
                if p.value.trim().is_empty() {
                    e.at(format!("lists.files.{name}[{i}]"), p, "is an empty path");
                } else {
                    out.push(base.join(&p.value));
                }
            }
        }
        lists.files = resolved;
    }
    lists
}

fn identifiers(raw: &RawConfig, e: &mut Errors) -> Identifiers {
    let region = raw
        .identifiers
        .as_ref()
        .and_then(|i| i.default_phone_region.as_ref());
    let Some(region) = region else {
        return Identifiers::default();
    };
    let v = region.value.trim();
    if v.len() == 2 && v.chars().all(|c| c.is_ascii_alphabetic()) {
        Identifiers {
            default_phone_region: Some(v.to_ascii_uppercase()),
        }
    } else {
        e.at(
            "identifiers.default_phone_region",
            region,
            format!("`{v}` is not a two-letter region code like US or GB"),
        );
        Identifiers::default()
    }
}

fn routes(raw: &RawConfig, base: &Path, e: &mut Errors) -> Vec<Route> {
    let mut out = Vec::new();
    let mut names: FxHashMap<&str, usize> = FxHashMap::default();
    // (normalized path, method) → route index
    let mut gated: FxHashMap<(String, http::Method), usize> = FxHashMap::default();
    for (i, r) in raw.routes.iter().flatten().enumerate() {
        let r = &r.value;
        let p = |field: &str| format!("routes[{i}].{field}");

        let name = r.name.value.as_str();
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        {
            e.at(
                p("name"),
                &r.name,
                format!("`{name}` must match [a-z0-9_-]+"),
            );
        } else if let Some(j) = names.insert(name, i) {
            e.at(
                p("name"),
                &r.name,
                format!("`{name}` is already the name of routes[{j}]"),
            );
        }

        let mut methods: Vec<http::Method> = Vec::new();
        match &r.methods {
            None => methods.push(http::Method::POST),
            Some(list) if list.value.is_empty() => {
                e.at(
                    p("methods"),
                    list,
                    "needs at least one method (default: [POST])",
                );
            }
            Some(list) => {
                for (k, m) in list.value.iter().enumerate() {
                    let upper = m.value.trim().to_ascii_uppercase();
                    match http::Method::from_bytes(upper.as_bytes()) {
                        Ok(_) if upper.is_empty() => {
                            e.at(format!("routes[{i}].methods[{k}]"), m, "is empty");
                        }
                        Ok(method) if methods.contains(&method) => {
                            e.at(
                                format!("routes[{i}].methods[{k}]"),
                                m,
                                format!("{method} is listed twice"),
                            );
                        }
                        Ok(method) => methods.push(method),
                        Err(_) => e.at(
                            format!("routes[{i}].methods[{k}]"),
                            m,
                            format!("`{}` is not a valid HTTP method token", m.value),
                        ),
                    }
                }
            }
        }

        let path = r.path.value.as_str();
        match route_path(path) {
            Err(msg) => e.at(p("path"), &r.path, msg),
            Ok(()) => {
                let key = normalized(path);
                for m in &methods {
                    if let Some(j) = gated.insert((key.clone(), m.clone()), i) {
                        e.at(
                            p("path"),
                            &r.path,
                            format!("{m} {path} is already gated by routes[{j}]"),
                        );
                    }
                }
            }
        }

        if r.identifier.value.is_empty() {
            e.at(
                p("identifier"),
                &r.identifier,
                "needs at least one source, like `- json: /email`",
            );
        }
        let mut identifier = Vec::new();
        for (k, s) in r.identifier.value.iter().enumerate() {
            if let Some(source) = source(
                &s.value,
                &s.referenced,
                &format!("routes[{i}].identifier[{k}]"),
                base,
                e,
            ) {
                identifier.push(source);
            }
        }

        let body_limit = r
            .body_limit
            .as_ref()
            .and_then(|b| body_size(b, &p("body_limit"), e));

        out.push(Route {
            name: name.to_owned(),
            methods,
            path: path.to_owned(),
            kind: r.kind,
            identifier,
            optional: r.optional.unwrap_or(false),
            pass_safe_methods: r.pass_safe_methods.unwrap_or(false),
            body_limit,
            mode: r.mode,
        });
    }
    out
}

/// Checks the syntax of a route path as written in the config.
fn route_path(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err(format!("`{path}` must start with '/'"));
    }
    if let Some(c) = path
        .chars()
        .find(|c| matches!(c, '?' | '#' | '*' | '%' | ';' | '\\'))
    {
        return Err(format!(
            "`{path}` must not contain '{c}' (write the plain, decoded path without query or patterns)"
        ));
    }
    if path.chars().any(|c| !c.is_ascii_graphic()) {
        return Err(format!(
            "`{}` must contain only visible ASCII characters",
            path.escape_debug()
        ));
    }
    let inner = path.strip_suffix('/').unwrap_or(path);
    if inner
        .split('/')
        .skip(1)
        .any(|seg| seg.is_empty() || seg == "." || seg == "..")
        && path != "/"
    {
        return Err(format!(
            "`{path}` must not contain empty, '.' or '..' segments"
        ));
    }
    Ok(())
}

/// The form used to detect duplicate routes: the one the route table matches on (case, a
/// trailing slash, format suffixes), so two routes that validate never share a request.
fn normalized(path: &str) -> String {
    crate::gate::route::normalize(path)
}

fn source(
    s: &RawSource,
    at: &serde_saphyr::Location,
    path: &str,
    base: &Path,
    e: &mut Errors,
) -> Option<IdentifierSource> {
    if s.jwt.is_some() || s.userinfo.is_some() {
        return token_source(s, at, path, base, e);
    }
    let given: Vec<(&str, &S<String>)> = [
        ("json", &s.json),
        ("form", &s.form),
        ("multipart", &s.multipart),
        ("query", &s.query),
        ("header", &s.header),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.as_ref().map(|v| (k, v)))
    .collect();
    let (key, value) = match given.as_slice() {
        [] => {
            e.loc(
                path,
                Some(at),
                "needs one of `json`, `form`, `multipart`, `query` or `header`",
            );
            return None;
        }
        [one] => *one,
        [(a, _), (b, second), ..] => {
            e.at(
                path,
                second,
                format!("has both `{a}` and `{b}`; give one location per list item"),
            );
            return None;
        }
    };
    let field = format!("{path}.{key}");
    let v = value.value.as_str();
    let location = match key {
        "json" => match json_pointer(v) {
            Ok(()) => Location::Json(v.to_owned()),
            Err(msg) => {
                e.at(field, value, msg);
                return None;
            }
        },
        "header" => match http::HeaderName::from_bytes(v.as_bytes()) {
            Ok(h) => Location::Header(h.as_str().to_owned()),
            Err(_) => {
                e.at(
                    field,
                    value,
                    format!("`{}` is not a valid header name", v.escape_debug()),
                );
                return None;
            }
        },
        _ => {
            if v.is_empty() || v.chars().any(char::is_control) {
                e.at(
                    field,
                    value,
                    "must be a non-empty field name without control characters",
                );
                return None;
            }
            match key {
                "form" => Location::Form(v.to_owned()),
                "multipart" => Location::Multipart(v.to_owned()),
                _ => Location::Query(v.to_owned()),
            }
        }
    };
    Some(IdentifierSource {
        location,
        kind: s.kind,
        token: None,
    })
}

/// A `jwt` or `userinfo` source: the token's place is its `from`.
fn token_source(
    s: &RawSource,
    at: &serde_saphyr::Location,
    path: &str,
    base: &Path,
    e: &mut Errors,
) -> Option<IdentifierSource> {
    let plain = [&s.json, &s.form, &s.multipart, &s.query, &s.header]
        .iter()
        .any(|v| v.is_some());
    if plain || (s.jwt.is_some() && s.userinfo.is_some()) {
        e.loc(
            path,
            Some(at),
            "a `jwt` or `userinfo` source takes its place from `from`; give one kind per list item",
        );
        return None;
    }
    let (token, from) = match (&s.jwt, &s.userinfo) {
        (Some(j), _) => {
            let p = format!("{path}.jwt");
            (
                token::jwt(j, &p, base, e),
                token::from(&j.value.from, &format!("{p}.from"), e),
            )
        }
        (_, Some(u)) => {
            let p = format!("{path}.userinfo");
            (
                token::userinfo(u, &p, base, e),
                token::from(&u.value.from, &format!("{p}.from"), e),
            )
        }
        _ => return None,
    };
    Some(IdentifierSource {
        location: from?,
        kind: s.kind,
        token: Some(token?),
    })
}

/// RFC 6901 JSON pointer, required to be non-empty (the whole document is never an identifier).
pub(super) fn json_pointer(p: &str) -> Result<(), String> {
    if !p.starts_with('/') {
        return Err(format!(
            "`{}` is not a JSON pointer: it must start with '/', like /email",
            p.escape_debug()
        ));
    }
    let mut chars = p.chars();
    while let Some(c) = chars.next() {
        if c == '~' && !matches!(chars.next(), Some('0' | '1')) {
            return Err(format!(
                "`{}`: '~' must be followed by 0 or 1 (RFC 6901 escapes ~0 and ~1)",
                p.escape_debug()
            ));
        }
    }
    Ok(())
}

/// A body limit: at least one byte, at most [`MAX_BODY_LIMIT`].
fn body_size(s: &S<RawSize>, path: &str, e: &mut Errors) -> Option<u64> {
    match units::size(&s.value) {
        Ok(0) => {
            e.at(path, s, "must be greater than 0");
            None
        }
        Ok(n) if n > MAX_BODY_LIMIT => {
            e.at(
                path,
                s,
                format!(
                    "{n} bytes is above the most a gated body may take, {MAX_BODY_LIMIT} (32 MiB): \
                     a compressed body and its decoding must both fit in the gate's 64 MiB buffer"
                ),
            );
            None
        }
        Ok(n) => Some(n),
        Err(msg) => {
            e.at(path, s, msg);
            None
        }
    }
}

fn deny(raw: &RawConfig, e: &mut Errors) -> Deny {
    let mut deny = Deny::default();
    let Some(r) = &raw.deny else {
        return deny;
    };
    if let Some(s) = &r.status {
        let code = u16::try_from(s.value)
            .ok()
            .filter(|c| (400..=599).contains(c))
            .and_then(|c| http::StatusCode::from_u16(c).ok());
        match code {
            Some(c) => deny.status = c,
            None => e.at("deny.status", s, format!("{} is not in 400..=599", s.value)),
        }
    }
    if let Some(r) = &r.redirect {
        match redirect(&r.value) {
            Ok(()) => deny.redirect = Some(r.value.clone()),
            Err(msg) => e.at("deny.redirect", r, msg),
        }
    }
    deny
}

fn redirect(v: &str) -> Result<(), String> {
    let bad = || {
        format!(
            "`{}` must be an absolute path like /denied or an http(s):// URL",
            v.escape_debug()
        )
    };
    if v.chars().any(|c| !c.is_ascii_graphic()) {
        return Err(bad());
    }
    let uri: http::Uri = v.parse().map_err(|_| bad())?;
    if v.starts_with('/') && !v.starts_with("//") && uri.scheme().is_none() {
        return Ok(());
    }
    match (uri.scheme_str(), uri.authority()) {
        (Some("http" | "https"), Some(a)) if !a.host().is_empty() => Ok(()),
        _ => Err(bad()),
    }
}

fn limits(raw: &RawConfig, e: &mut Errors) -> Limits {
    let mut limits = Limits::default();
    let Some(r) = &raw.limits else {
        return limits;
    };
    if let Some(b) = &r.body
        && let Some(n) = body_size(b, "limits.body", e)
    {
        limits.body = n;
    }
    if let Some(d) = &r.max_json_depth {
        match usize::try_from(d.value) {
            Ok(n) if (1..=MAX_JSON_DEPTH).contains(&d.value) => limits.max_json_depth = n,
            _ => e.at(
                "limits.max_json_depth",
                d,
                format!("{} is not in 1..={MAX_JSON_DEPTH}", d.value),
            ),
        }
    }
    limits
}

fn duration(
    s: Option<&S<String>>,
    path: &str,
    default: Duration,
    allow_zero: bool,
    e: &mut Errors,
) -> Duration {
    let Some(s) = s else {
        return default;
    };
    match units::duration(&s.value) {
        Ok(d) if d.is_zero() && !allow_zero => {
            e.at(path, s, "must be greater than 0");
            default
        }
        Ok(d) => d,
        Err(msg) => {
            e.at(path, s, msg);
            default
        }
    }
}

fn timeouts(raw: &RawConfig, e: &mut Errors) -> Timeouts {
    let d = Timeouts::default();
    let Some(r) = &raw.timeouts else {
        return d;
    };
    Timeouts {
        header_read: duration(
            r.header_read.as_ref(),
            "timeouts.header_read",
            d.header_read,
            false,
            e,
        ),
        upstream_connect: duration(
            r.upstream_connect.as_ref(),
            "timeouts.upstream_connect",
            d.upstream_connect,
            false,
            e,
        ),
        upstream_response: duration(
            r.upstream_response.as_ref(),
            "timeouts.upstream_response",
            d.upstream_response,
            false,
            e,
        ),
        shutdown_grace: duration(
            r.shutdown_grace.as_ref(),
            "timeouts.shutdown_grace",
            d.shutdown_grace,
            true,
            e,
        ),
        tls_handshake: duration(
            r.tls_handshake.as_ref(),
            "timeouts.tls_handshake",
            d.tls_handshake,
            false,
            e,
        ),
    }
}

fn store(raw: &RawConfig, base: &Path, e: &mut Errors) -> Store {
    let path = raw
        .store
        .as_ref()
        .and_then(|s| s.sqlite.as_ref())
        .map(|p| {
            if p.value.trim().is_empty() {
                e.at("store.sqlite", p, "must be a file path");
            }
            p.value.clone()
        })
        .unwrap_or_else(|| "data/idgate.db".to_owned());
    Store {
        sqlite: base.join(path),
    }
}

fn audit(raw: &RawConfig, base: &Path, e: &mut Errors) -> Audit {
    let Some(a) = &raw.audit else {
        return Audit::default();
    };
    let output = a.output.as_ref().and_then(|o| match o.value.trim() {
        "" => {
            e.at("audit.output", o, "must be `stdout` or a file path");
            None
        }
        "stdout" | "-" => Some(AuditOutput::Stdout),
        path => Some(AuditOutput::File(base.join(path))),
    });
    let identifiers = a.identifiers.unwrap_or_default();
    let hmac_key = match &a.hmac_key {
        Some(k) if k.value.len() < 16 => {
            e.at(
                "audit.hmac_key",
                k,
                "must be at least 16 bytes (use a random secret, e.g. from ${ENV})",
            );
            None
        }
        Some(k) => Some(k.value.clone()),
        None => None,
    };
    if let Some(o) = &a.output
        && identifiers == AuditIdentifiers::Hmac
        && a.hmac_key.is_none()
    {
        e.at(
            "audit.hmac_key",
            o,
            "is required when audit.output is set and audit.identifiers is `hmac` (the default); \
             set `identifiers: clear` to write identifiers in clear text",
        );
    }
    Audit {
        output,
        identifiers,
        hmac_key,
    }
}

/// Headers that cannot carry a request id: hop-by-hop ones (removed on the way), the ones the
/// gate sets itself, and ones holding credentials (the id is logged).
const NOT_REQUEST_ID: [&str; 24] = [
    "host",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-original-url",
    "x-rewrite-url",
    "x-override-url",
    "x-original-uri",
    "x-forwarded-uri",
    "x-forwarded-path",
    "content-type",
    "location",
];

/// `workers: auto | 1..=MAX_WORKERS`; `None` is `auto`.
fn workers(raw: &RawConfig, e: &mut Errors) -> Option<usize> {
    let w = raw.workers.as_ref()?;
    let (count, written) = match &w.value {
        RawWorkers::Text(t) if t.trim().eq_ignore_ascii_case("auto") => return None,
        RawWorkers::Text(t) => (t.trim().parse::<usize>().ok(), format!("`{t}`")),
        RawWorkers::Count(n) => (usize::try_from(*n).ok(), n.to_string()),
        RawWorkers::Other(x) => (None, x.to_string()),
    };
    let count = count.filter(|n| (1..=MAX_WORKERS).contains(n));
    if count.is_none() {
        e.at(
            "workers",
            w,
            format!("{written} is not `auto` or a thread count in 1..={MAX_WORKERS}"),
        );
    }
    count
}

fn request_id(raw: &RawConfig, e: &mut Errors) -> RequestId {
    let d = RequestId::default();
    let Some(r) = &raw.request_id else {
        return d;
    };
    let header = match &r.value.header {
        None => d.header,
        Some(h) => match http::HeaderName::from_bytes(h.value.trim().as_bytes()) {
            Ok(name) if NOT_REQUEST_ID.contains(&name.as_str()) => {
                e.at(
                    "request_id.header",
                    h,
                    "cannot be a hop-by-hop, credential or forwarding header",
                );
                d.header
            }
            Ok(name) => name,
            Err(_) => {
                e.at("request_id.header", h, "is not a valid header name");
                d.header
            }
        },
    };
    RequestId {
        header,
        trust: r.value.trust.unwrap_or(d.trust),
    }
}

fn reload(raw: &RawConfig, e: &mut Errors) -> Reload {
    let d = Reload::default();
    let Some(r) = &raw.reload else {
        return d;
    };
    let debounce = duration(r.debounce.as_ref(), "reload.debounce", d.debounce, true, e);
    let interval = match &r.interval {
        None => d.interval,
        Some(_) => {
            let i = duration(
                r.interval.as_ref(),
                "reload.interval",
                Duration::ZERO,
                true,
                e,
            );
            (!i.is_zero()).then_some(i)
        }
    };
    Reload { debounce, interval }
}
