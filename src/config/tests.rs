//! Tests for config loading: the example file, defaults, error tables, env expansion.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

const BASE: &str = "listen:\n  - addr: 127.0.0.1:8080\nupstream: http://127.0.0.1:3000\n";
/// Lines in `BASE`; snippets appended to it start on line `BASE_LINES + 1`.
const BASE_LINES: usize = 3;

fn no_env(_: &str) -> Option<String> {
    None
}

fn parse(text: &str) -> Result<Config, ConfigError> {
    from_str_with_env(text, Path::new("/etc/idgate/config.yaml"), &no_env)
}

fn invalid(text: &str) -> Vec<FieldError> {
    match parse(text) {
        Err(ConfigError::Invalid { errors, .. }) => errors,
        other => panic!("expected validation errors for\n{text}\ngot {other:?}"),
    }
}

#[test]
fn example_config_parses() {
    let text = include_str!("../../config.example.yaml");
    let c = match parse(text) {
        Ok(c) => c,
        Err(e) => panic!("config.example.yaml: {e}"),
    };
    assert_eq!(c.listen.len(), 1);
    assert_eq!(c.listen[0].addr.to_string(), "127.0.0.1:8080");
    assert_eq!(c.upstream.to_string(), "http://127.0.0.1:3000/");
    assert_eq!(c.admin.listen.to_string(), "127.0.0.1:9090");
    assert!(c.admin.secret_keys.is_empty());
    assert_eq!(c.lists.allow, ["*@example.com"]);
    assert_eq!(c.lists.block, ["eve@example.com"]);
    assert_eq!(
        c.lists.files.allow,
        [PathBuf::from("/etc/idgate/lists/allow.txt")]
    );
    assert_eq!(
        c.lists.files.block,
        [PathBuf::from("/etc/idgate/lists/block.txt")]
    );
    let names: Vec<_> = c.routes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["sign-up", "sign-in"]);
    let r = &c.routes[0];
    assert_eq!(r.kind, RouteKind::SignUp);
    assert_eq!(r.methods, [http::Method::POST]);
    assert_eq!(r.path, "/api/sign-up");
    let locations: Vec<_> = r.identifier.iter().map(|s| s.location.clone()).collect();
    assert_eq!(
        locations,
        [
            Location::Json("/email".into()),
            Location::Form("email".into()),
            Location::Multipart("email".into()),
        ]
    );
    assert_eq!(c.routes[1].kind, RouteKind::SignIn);
    assert_eq!(c.routes[1].identifier.len(), 2);
    // The example documents the defaults, so apart from what it sets they must match.
    assert_eq!(c.limits, Limits::default());
    assert_eq!(c.timeouts, Timeouts::default());
    assert_eq!(c.reload, Reload::default());
    assert_eq!(c.restrictions, Restrictions::default());
    assert_eq!(c.deny, Deny::default());
    assert_eq!(c.precedence, Precedence::Block);
    assert_eq!(c.lists.max_entries, 20_000);
    assert_eq!(c.identifiers.default_phone_region.as_deref(), Some("US"));
}

#[test]
fn example_list_files_exist_with_entries() {
    let allow = include_str!("../../lists/allow.txt");
    let block = include_str!("../../lists/block.txt");
    for (text, entries) in [
        (allow, &["*@acme.com", "bob@partner.io", "+12025550123"][..]),
        (
            block,
            &["mallory@acme.com", "*@blocked.org", "tempmail.dev"][..],
        ),
    ] {
        let lines: Vec<_> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect();
        assert_eq!(lines, entries);
    }
}

#[test]
fn minimal_config_gets_defaults() {
    let c = match parse(BASE) {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(c.admin, Admin::default());
    assert_eq!(c.lists, Lists::default());
    assert_eq!(c.limits.body, 65_536);
    assert_eq!(c.limits.max_json_depth, 32);
    assert_eq!(c.timeouts.upstream_response, Duration::from_secs(30));
    assert_eq!(c.reload.interval, Some(Duration::from_secs(30)));
    assert_eq!(c.deny.status, http::StatusCode::FORBIDDEN);
    assert!(c.routes.is_empty());
    assert!(c.restrictions.blocklist);
    assert_eq!(c.identifiers.default_phone_region, None);
}

#[test]
fn values_are_converted() {
    let text = format!(
        "{BASE}admin:\n  listen: '[::1]:9191'\n  secret_keys: [sk_1, sk_2]\n  magic_client_id: demo\n\
         precedence: most_specific\n\
         restrictions: {{ allowlist: true, blocklist: false }}\n\
         identifiers: {{ default_phone_region: gb }}\n\
         routes:\n  - name: login_2\n    methods: [post, PUT, PROPFIND]\n    path: /Login/\n    kind: sign_in\n    \
             identifier: [{{ header: X-User-Email, type: email }}, {{ query: phone, type: phone }}, {{ json: /a~1b }}]\n    \
             optional: true\n    pass_safe_methods: true\n    body_limit: 1KB\n\
         deny: {{ status: 451, redirect: 'https://example.com/denied' }}\n\
         limits: {{ body: 1MiB, max_json_depth: 8 }}\n\
         timeouts: {{ header_read: 250ms, shutdown_grace: 0s }}\n\
         reload: {{ debounce: 0s, interval: 0s }}\n"
    );
    let c = match parse(&text) {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(c.admin.listen.to_string(), "[::1]:9191");
    assert_eq!(c.admin.secret_keys, ["sk_1", "sk_2"]);
    assert_eq!(c.admin.magic_client_id.as_deref(), Some("demo"));
    assert_eq!(c.precedence, Precedence::MostSpecific);
    assert_eq!(c.restrictions.allowlist, AllowlistMode::On);
    assert!(!c.restrictions.blocklist);
    assert_eq!(c.identifiers.default_phone_region.as_deref(), Some("GB"));
    let r = &c.routes[0];
    assert_eq!(
        r.methods.iter().map(|m| m.as_str()).collect::<Vec<_>>(),
        ["POST", "PUT", "PROPFIND"]
    );
    assert_eq!(
        r.identifier,
        [
            IdentifierSource {
                location: Location::Header("x-user-email".into()),
                kind: Some(Kind::Email),
                token: None,
            },
            IdentifierSource {
                location: Location::Query("phone".into()),
                kind: Some(Kind::Phone),
                token: None,
            },
            IdentifierSource {
                location: Location::Json("/a~1b".into()),
                kind: None,
                token: None,
            },
        ]
    );
    assert!(r.optional && r.pass_safe_methods);
    assert_eq!(r.body_limit, Some(1000));
    assert_eq!(r.body_limit_or(&c.limits), 1000);
    assert_eq!(c.deny.status.as_u16(), 451);
    assert_eq!(
        c.deny.redirect.as_deref(),
        Some("https://example.com/denied")
    );
    assert_eq!(
        c.limits,
        Limits {
            body: 1 << 20,
            max_json_depth: 8
        }
    );
    assert_eq!(c.timeouts.header_read, Duration::from_millis(250));
    assert_eq!(c.timeouts.shutdown_grace, Duration::ZERO);
    assert_eq!(c.timeouts.upstream_connect, Duration::from_secs(5));
    assert_eq!(
        c.reload,
        Reload {
            debounce: Duration::ZERO,
            interval: None
        }
    );
}

#[test]
fn allowlist_mode_forms() {
    let cases = [
        ("auto", Some(AllowlistMode::Auto)),
        ("true", Some(AllowlistMode::On)),
        ("false", Some(AllowlistMode::Off)),
        ("\"auto\"", Some(AllowlistMode::Auto)),
        ("maybe", None),
        ("1", None),
    ];
    for (value, want) in cases {
        let got = parse(&format!("{BASE}restrictions:\n  allowlist: {value}\n"))
            .ok()
            .map(|c| c.restrictions.allowlist);
        assert_eq!(got, want, "allowlist: {value}");
    }
}

/// (snippet appended to BASE, expected path, message fragment, line within the snippet)
const INVALID: &[(&str, &str, &str, usize)] = &[
    ("listen: []\n", "listen", "at least one", 0),
    (
        "admin:\n  listen: 127.0.0.1:8080\n",
        "admin.listen",
        "overlaps proxy listener listen[0]",
        2,
    ),
    (
        "admin:\n  listen: localhost:9090\n",
        "admin.listen",
        "not an IP address",
        2,
    ),
    (
        "admin:\n  secret_keys: ['']\n",
        "admin.secret_keys[0]",
        "is empty",
        2,
    ),
    (
        "admin:\n  secret_keys: ['a b']\n",
        "admin.secret_keys[0]",
        "blanks",
        2,
    ),
    (
        "admin:\n  magic_client_id: ''\n",
        "admin.magic_client_id",
        "is empty",
        2,
    ),
    (
        "lists:\n  max_entries: 0\n",
        "lists.max_entries",
        "at least 1",
        2,
    ),
    (
        "lists:\n  max_entries: 1\n  block: [a, b]\n",
        "lists.block",
        "more than lists.max_entries",
        3,
    ),
    (
        "lists:\n  files:\n    allow: ['']\n",
        "lists.files.allow[0]",
        "empty path",
        3,
    ),
    (
        "identifiers:\n  default_phone_region: USA\n",
        "identifiers.default_phone_region",
        "two-letter",
        2,
    ),
    (
        "identifiers:\n  default_phone_region: '1A'\n",
        "identifiers.default_phone_region",
        "two-letter",
        2,
    ),
    ("deny:\n  status: 302\n", "deny.status", "400..=599", 2),
    ("deny:\n  status: 600\n", "deny.status", "400..=599", 2),
    (
        "deny:\n  redirect: denied\n",
        "deny.redirect",
        "absolute path",
        2,
    ),
    (
        "deny:\n  redirect: //evil.example/x\n",
        "deny.redirect",
        "absolute path",
        2,
    ),
    (
        "deny:\n  redirect: ftp://x.example/\n",
        "deny.redirect",
        "absolute path",
        2,
    ),
    ("limits:\n  body: 0\n", "limits.body", "greater than 0", 2),
    (
        "limits:\n  body: 33MiB\n",
        "limits.body",
        "above the most",
        2,
    ),
    (
        "limits:\n  body: 64 parsecs\n",
        "limits.body",
        "not a size",
        2,
    ),
    (
        "limits:\n  max_json_depth: 0\n",
        "limits.max_json_depth",
        "1..=128",
        2,
    ),
    (
        "limits:\n  max_json_depth: 1000\n",
        "limits.max_json_depth",
        "1..=128",
        2,
    ),
    (
        "timeouts:\n  header_read: 0s\n",
        "timeouts.header_read",
        "greater than 0",
        2,
    ),
    (
        "timeouts:\n  upstream_connect: 5\n",
        "timeouts.upstream_connect",
        "with a unit",
        2,
    ),
    (
        "timeouts:\n  upstream_response: soon\n",
        "timeouts.upstream_response",
        "not a duration",
        2,
    ),
    (
        "reload:\n  interval: -1s\n",
        "reload.interval",
        "not a duration",
        2,
    ),
    (
        "reload:\n  debounce: 1.5s\n",
        "reload.debounce",
        "not a duration",
        2,
    ),
];

/// Route snippets: a route list appended to BASE; (snippet, path, fragment, line in snippet).
const INVALID_ROUTES: &[(&str, &str, &str, usize)] = &[
    (
        "  - { name: Sign-Up, path: /a, kind: sign_up, identifier: [json: /e] }\n",
        "routes[0].name",
        "[a-z0-9_-]+",
        2,
    ),
    (
        "  - { name: a, path: /a, kind: sign_up, identifier: [json: /e] }\n  - { name: a, path: /b, kind: sign_up, identifier: [json: /e] }\n",
        "routes[1].name",
        "already the name of routes[0]",
        3,
    ),
    (
        "  - { name: a, path: /a, kind: sign_up, identifier: [json: /e] }\n  - { name: b, path: /A/, kind: sign_in, identifier: [json: /e] }\n",
        "routes[1].path",
        "already gated by routes[0]",
        3,
    ),
    (
        // The route table cuts format suffixes: /a.v2 is the same route as /a.
        "  - { name: a, path: /a, kind: sign_up, identifier: [json: /e] }\n  - { name: b, path: /a.v2, kind: sign_in, identifier: [json: /e] }\n",
        "routes[1].path",
        "already gated by routes[0]",
        3,
    ),
    (
        "  - { name: a, path: api, kind: sign_up, identifier: [json: /e] }\n",
        "routes[0].path",
        "must start with '/'",
        2,
    ),
    (
        "  - { name: a, path: '/a?x=1', kind: sign_up, identifier: [json: /e] }\n",
        "routes[0].path",
        "'?'",
        2,
    ),
    (
        "  - { name: a, path: '/a/*', kind: sign_up, identifier: [json: /e] }\n",
        "routes[0].path",
        "'*'",
        2,
    ),
    (
        "  - { name: a, path: '/a#b', kind: sign_up, identifier: [json: /e] }\n",
        "routes[0].path",
        "'#'",
        2,
    ),
    (
        "  - { name: a, path: '/a%2Fb', kind: sign_up, identifier: [json: /e] }\n",
        "routes[0].path",
        "'%'",
        2,
    ),
    (
        "  - { name: a, path: '/a//b', kind: sign_up, identifier: [json: /e] }\n",
        "routes[0].path",
        "empty",
        2,
    ),
    (
        "  - { name: a, path: '/a/../b', kind: sign_up, identifier: [json: /e] }\n",
        "routes[0].path",
        "'..'",
        2,
    ),
    (
        "  - { name: a, path: '/a b', kind: sign_up, identifier: [json: /e] }\n",
        "routes[0].path",
        "visible ASCII",
        2,
    ),
    (
        "  - { name: a, path: /a, kind: sign_up, identifier: [] }\n",
        "routes[0].identifier",
        "at least one source",
        2,
    ),
    (
        "  - { name: a, path: /a, kind: sign_up, methods: [], identifier: [json: /e] }\n",
        "routes[0].methods",
        "at least one method",
        2,
    ),
    (
        "  - { name: a, path: /a, kind: sign_up, methods: [POST, post], identifier: [json: /e] }\n",
        "routes[0].methods[1]",
        "listed twice",
        2,
    ),
    (
        "  - { name: a, path: /a, kind: sign_up, methods: ['GE T'], identifier: [json: /e] }\n",
        "routes[0].methods[0]",
        "not a valid HTTP method",
        2,
    ),
    (
        "  - { name: a, path: /a, kind: sign_up, identifier: [json: email] }\n",
        "routes[0].identifier[0].json",
        "must start with '/'",
        2,
    ),
    (
        "  - { name: a, path: /a, kind: sign_up, identifier: [json: /a~2] }\n",
        "routes[0].identifier[0].json",
        "~0 and ~1",
        2,
    ),
    (
        "  - { name: a, path: /a, kind: sign_up, identifier: [header: 'X User'] }\n",
        "routes[0].identifier[0].header",
        "not a valid header name",
        2,
    ),
    (
        "  - { name: a, path: /a, kind: sign_up, identifier: [form: ''] }\n",
        "routes[0].identifier[0].form",
        "non-empty",
        2,
    ),
    (
        "  - { name: a, path: /a, kind: sign_up, identifier: [{ type: email }] }\n",
        "routes[0].identifier[0]",
        "needs one of `json`",
        2,
    ),
    (
        "  - { name: a, path: /a, kind: sign_up, identifier: [{ json: /e, form: e }] }\n",
        "routes[0].identifier[0]",
        "both `json` and `form`",
        2,
    ),
    (
        "  - { name: a, path: /a, kind: sign_up, identifier: [json: /e], body_limit: 0B }\n",
        "routes[0].body_limit",
        "greater than 0",
        2,
    ),
    (
        "  - { name: a, path: /a, kind: sign_up, identifier: [json: /e], body_limit: 40MB }\n",
        "routes[0].body_limit",
        "32 MiB",
        2,
    ),
];

#[test]
fn invalid_table() {
    let routes: Vec<(String, &str, &str, usize)> = INVALID_ROUTES
        .iter()
        .map(|(s, p, f, l)| (format!("routes:\n{s}"), *p, *f, *l))
        .collect();
    let all = INVALID
        .iter()
        .map(|(s, p, f, l)| ((*s).to_owned(), *p, *f, *l))
        .chain(routes);
    for (snippet, path, fragment, line) in all {
        // `listen: []` replaces the listener of BASE.
        let text = if snippet.starts_with("listen:") {
            format!("upstream: http://127.0.0.1:3000\n{snippet}")
        } else {
            format!("{BASE}{snippet}")
        };
        let errors = invalid(&text);
        assert_eq!(errors.len(), 1, "{snippet}: {errors:#?}");
        let e = &errors[0];
        assert_eq!(e.path, path, "{snippet}");
        assert!(
            e.message.contains(fragment),
            "{snippet}: message {:?}",
            e.message
        );
        if line > 0 {
            assert_eq!(e.line, Some(BASE_LINES + line), "{snippet}: {e:?}");
            assert!(e.column.is_some(), "{snippet}");
        }
    }
}

#[test]
fn listener_and_upstream_errors() {
    let cases: &[(&str, &str, &str, usize)] = &[
        (
            "listen:\n  - addr: 127.0.0.1:8080\n    tls: { cert: '', key: a.key }\nupstream: http://h\n",
            "listen[0].tls.cert",
            "must be a file path",
            3,
        ),
        (
            "listen:\n  - addr: 127.0.0.1:8080\n  - addr: 0.0.0.0:8080\nupstream: http://h\n",
            "listen[1].addr",
            "overlaps listen[0].addr",
            3,
        ),
        (
            "listen:\n  - addr: 8080\nupstream: http://h\n",
            "listen[0].addr",
            "not an IP address",
            2,
        ),
        (
            "listen:\n  - addr: 127.0.0.1:1\nupstream: http://h\nupstream_tls: { ca: ca.pem }\n",
            "upstream_tls",
            "not an https:// URL",
            4,
        ),
        (
            "listen:\n  - addr: 127.0.0.1:1\nupstream: https://h\nupstream_tls: { client_cert: c.pem }\n",
            "upstream_tls.client_cert",
            "needs upstream_tls.client_key",
            4,
        ),
        (
            "listen:\n  - addr: 127.0.0.1:1\nupstream: https://h\nupstream_tls:\n  server_name: 'a b'\n",
            "upstream_tls.server_name",
            "not a DNS name",
            5,
        ),
        (
            "listen:\n  - addr: 127.0.0.1:1\nupstream: 127.0.0.1:3000\n",
            "upstream",
            "must start with http://",
            3,
        ),
        (
            "listen:\n  - addr: 127.0.0.1:1\nupstream: http://h/app\n",
            "upstream",
            "must not have a path",
            3,
        ),
        (
            "listen:\n  - addr: 127.0.0.1:1\nupstream: http://h/?a=1\n",
            "upstream",
            "query",
            3,
        ),
        (
            "listen:\n  - addr: 127.0.0.1:1\nupstream: http://u@h/\n",
            "upstream",
            "user info",
            3,
        ),
        (
            "listen:\n  - addr: 127.0.0.1:1\nupstream: ftp://h/\n",
            "upstream",
            "not supported",
            3,
        ),
        (
            "listen:\n  - addr: 127.0.0.1:1\nupstream: 'http://h h'\n",
            "upstream",
            "not a URL",
            3,
        ),
    ];
    for (text, path, fragment, line) in cases {
        let errors = invalid(text);
        assert_eq!(errors.len(), 1, "{text}: {errors:#?}");
        assert_eq!(errors[0].path, *path, "{text}");
        assert!(
            errors[0].message.contains(fragment),
            "{text}: {:?}",
            errors[0].message
        );
        assert_eq!(errors[0].line, Some(*line), "{text}");
    }
    // Port 0 never conflicts; two listeners may both ask for a free port.
    let ok = parse(
        "listen:\n  - addr: 127.0.0.1:0\n  - addr: 127.0.0.1:0\nupstream: http://h\nadmin: { listen: '127.0.0.1:0' }\n",
    );
    assert!(ok.is_ok(), "{ok:?}");
}

#[test]
fn reports_all_errors_at_once_with_positions() {
    let text = format!(
        "{BASE}routes:\n  - name: a\n    path: nope\n    kind: sign_up\n    identifier:\n      - json: email\n      - header: 'bad header'\ndeny:\n  status: 200\n"
    );
    let errors = invalid(&text);
    let got: Vec<_> = errors
        .iter()
        .map(|e| (e.path.as_str(), e.line, e.column))
        .collect();
    assert_eq!(
        got,
        [
            ("routes[0].path", Some(6), Some(11)),
            ("routes[0].identifier[0].json", Some(9), Some(15)),
            ("routes[0].identifier[1].header", Some(10), Some(17)),
            ("deny.status", Some(12), Some(11)),
        ]
    );
    let err = ConfigError::Invalid {
        path: PathBuf::from("config.yaml"),
        errors,
    };
    let shown = err.to_string();
    let first = shown.lines().next().unwrap_or_default();
    assert_eq!(
        first,
        "config.yaml:6:11: routes[0].path: `nope` must start with '/'"
    );
    assert_eq!(shown.lines().count(), 4);
}

#[test]
fn parse_errors_have_line_and_column() {
    // (text, message fragment, line)
    let cases: &[(&str, &str, usize)] = &[
        ("listen: [\n", "", 1),
        ("upstream: http://h\n", "listen", 1),
        ("listne: []\nupstream: http://h\n", "listne", 1),
        (
            &const_format_base(
                "routes:\n  - { name: a, path: /a, kind: sign_up, identifier: [jwt: { from: { form: c }, jku: x }] }\n",
            ),
            "jku",
            5,
        ),
        (
            &const_format_base(
                "routes:\n  - { name: a, path: /a, kind: login, identifier: [json: /e] }\n",
            ),
            "login",
            5,
        ),
        (
            &const_format_base(
                "routes:\n  - { name: a, path: /a, kind: sign_up, identifier: [{ json: /e, type: ssn }] }\n",
            ),
            "ssn",
            5,
        ),
        (&const_format_base("precedence: newest\n"), "newest", 4),
        (
            &const_format_base("lists:\n  allow: [a]\n  allow: [b]\n"),
            "allow",
            6,
        ),
        (&const_format_base("deny:\n  status: -1\n"), "", 5),
    ];
    for (text, fragment, line) in cases {
        match parse(text) {
            Err(ConfigError::Parse {
                line: got,
                column,
                message,
                ..
            }) => {
                assert!(message.contains(fragment), "{text}: {message}");
                assert!(!message.contains('\n'), "{message}");
                assert_eq!(got, Some(*line), "{text}: {message}");
                assert!(column.is_some(), "{text}");
            }
            other => panic!("{text}: expected a parse error, got {other:?}"),
        }
    }
}

fn const_format_base(snippet: &str) -> String {
    format!("{BASE}{snippet}")
}

#[test]
fn env_expansion_through_from_str() {
    let env = |name: &str| match name {
        "KEY" => Some("sk_test_123".to_owned()),
        "PORT" => Some("3000".to_owned()),
        "BAD" => Some("nope".to_owned()),
        _ => None,
    };
    let text = "# ${COMMENTED_OUT}\nlisten:\n  - addr: 127.0.0.1:8080\nupstream: http://127.0.0.1:${PORT}\nadmin:\n  secret_keys: [\"${KEY}\", \"$${KEY}\"]\n";
    let c = match from_str_with_env(text, Path::new("c.yaml"), &env) {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(c.upstream.port_u16(), Some(3000));
    assert_eq!(c.admin.secret_keys, ["sk_test_123", "${KEY}"]);

    // Unset: named with its line, value never printed.
    let text = "listen:\n  - addr: 127.0.0.1:8080\nupstream: http://127.0.0.1:3000\nadmin:\n  secret_keys: [\"${KEY}\", \"${MISSING}\"]\n";
    let err = from_str_with_env(text, Path::new("c.yaml"), &env).err();
    match &err {
        Some(ConfigError::Invalid { errors, .. }) => {
            assert_eq!(errors.len(), 1);
            assert_eq!(errors[0].path, "${MISSING}");
            assert_eq!((errors[0].line, errors[0].column), (Some(5), Some(28)));
        }
        other => panic!("{other:?}"),
    }
    let shown = err.map(|e| e.to_string()).unwrap_or_default();
    assert!(
        shown.starts_with("c.yaml:5:28: ${MISSING}: environment variable is not set"),
        "{shown}"
    );
    assert!(!shown.contains("sk_test_123"), "{shown}");

    // A validation error after a substitution points at the original column.
    let text = "listen:\n  - addr: 127.0.0.1:8080\nupstream: http://127.0.0.1:3000\ndeny: { redirect: '${BAD}', status: 7 }\n";
    match from_str_with_env(text, Path::new("c.yaml"), &env) {
        Err(ConfigError::Invalid { errors, .. }) => {
            let got: Vec<_> = errors.iter().map(|e| (e.path.as_str(), e.column)).collect();
            assert_eq!(
                got,
                [("deny.status", Some(37)), ("deny.redirect", Some(19))]
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn debug_redacts_secret_keys() {
    let text = format!("{BASE}admin:\n  secret_keys: [sk_live_topsecret, sk_live_other]\n");
    let c = match parse(&text) {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    for shown in [
        format!("{c:?}"),
        format!("{c:#?}"),
        format!("{:?}", c.admin),
    ] {
        assert!(!shown.contains("topsecret"), "{shown}");
        assert!(!shown.contains("sk_live_other"), "{shown}");
        assert!(shown.contains("[redacted; 2 keys]"), "{shown}");
    }
}

#[test]
fn load_reads_files_and_reports_io_errors() {
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => panic!("tempdir: {e}"),
    };
    let path = dir.path().join("idgate.yaml");
    let text = format!("{BASE}lists:\n  files: {{ allow: [a.txt, /abs/b.txt] }}\n");
    if let Err(e) = std::fs::write(&path, text) {
        panic!("write: {e}");
    }
    match load(&path) {
        Ok(c) => assert_eq!(
            c.lists.files.allow,
            [dir.path().join("a.txt"), PathBuf::from("/abs/b.txt")]
        ),
        Err(e) => panic!("{e}"),
    }
    let missing = dir.path().join("missing.yaml");
    match load(&missing) {
        Err(e @ ConfigError::Io { .. }) => {
            assert!(e.to_string().contains("missing.yaml"), "{e}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn relative_origin_keeps_relative_paths() {
    let text = format!("{BASE}lists:\n  files: {{ block: [lists/block.txt] }}\n");
    let c = from_str_with_env(&text, Path::new("config.yaml"), &no_env);
    assert_eq!(
        c.ok().map(|c| c.lists.files.block),
        Some(vec![PathBuf::from("lists/block.txt")])
    );
}

#[test]
fn warnings() {
    let cases: &[(&str, &[&str])] = &[
        ("", &["no routes"]),
        (
            "restrictions: { allowlist: true }\nroutes:\n  - { name: a, path: /a, kind: sign_up, optional: true, identifier: [json: /e] }\n",
            &["allowlist is true", "routes[0] (a): optional"],
        ),
        (
            "restrictions: { allowlist: true }\nlists: { allow: [x.com] }\nroutes:\n  - { name: a, path: /a, kind: sign_up, identifier: [json: /e] }\n",
            &[],
        ),
    ];
    for (snippet, want) in cases {
        let c = match parse(&format!("{BASE}{snippet}")) {
            Ok(c) => c,
            Err(e) => panic!("{snippet}: {e}"),
        };
        let got = c.warnings();
        assert_eq!(got.len(), want.len(), "{snippet}: {got:?}");
        for (g, w) in got.iter().zip(want.iter()) {
            assert!(g.contains(w), "{snippet}: {g:?} lacks {w:?}");
        }
    }
}

#[test]
fn request_id_key() {
    let d = parse(BASE).unwrap().request_id;
    assert_eq!(d, RequestId::default());
    assert_eq!(d.header.as_str(), "x-request-id");
    assert!(!d.trust);
    let c = parse(&format!(
        "{BASE}request_id:\n  header: X-Correlation-Id\n  trust: true\n"
    ))
    .unwrap();
    assert_eq!(c.request_id.header.as_str(), "x-correlation-id");
    assert!(c.request_id.trust);
    for (value, fragment) in [
        ("\"bad name\"", "not a valid header name"),
        ("Authorization", "credential"),
        ("Cookie", "credential"),
        ("Host", "hop-by-hop"),
    ] {
        let errors = invalid(&format!("{BASE}request_id:\n  header: {value}\n"));
        assert_eq!(errors.len(), 1, "{value}: {errors:#?}");
        assert_eq!(errors[0].path, "request_id.header");
        assert!(errors[0].message.contains(fragment), "{errors:?}");
        assert_eq!(errors[0].line, Some(BASE_LINES + 2));
    }
    match parse(&format!("{BASE}request_id:\n  trusted: true\n")) {
        Err(ConfigError::Parse { message, .. }) => assert!(message.contains("trusted")),
        other => panic!("unknown keys are refused: {other:?}"),
    }
}

#[test]
fn workers_key() {
    assert_eq!(parse(BASE).unwrap().workers, None);
    for (value, want) in [
        ("auto", None),
        ("AUTO", None),
        ("1", Some(1)),
        ("\"8\"", Some(8)),
    ] {
        let c = parse(&format!("{BASE}workers: {value}\n")).unwrap();
        assert_eq!(c.workers, want, "{value}");
    }
    let max = crate::config::MAX_WORKERS;
    assert_eq!(
        parse(&format!("{BASE}workers: {max}\n")).unwrap().workers,
        Some(max)
    );
    for value in [
        "0",
        "-1",
        &(max + 1).to_string(),
        "many",
        "2.5",
        "2.0",
        "\"\"",
    ] {
        let errors = invalid(&format!("{BASE}workers: {value}\n"));
        assert_eq!(errors.len(), 1, "{value}: {errors:#?}");
        assert_eq!(errors[0].path, "workers");
        assert!(errors[0].message.contains("`auto`"), "{errors:?}");
        assert_eq!(errors[0].line, Some(BASE_LINES + 1), "{value}");
    }
}

#[test]
fn the_largest_body_limit_is_accepted() {
    let text = format!(
        "{BASE}limits: {{ body: 32MiB }}\nroutes:\n  - {{ name: a, path: /a, kind: sign_up, \
         identifier: [json: /e], body_limit: 32MiB }}\n"
    );
    let c = parse(&text).map_err(|e| e.to_string());
    assert_eq!(c.map(|c| c.limits.body), Ok(MAX_BODY_LIMIT));
}
