//! The `invitations:` section: how invitations are delivered (an SMTP relay for email, an HTTP
//! webhook for SMS), the link and message templates, the default expiry and the retry policy
//! of the delivery outbox. Validated here (hosts, TLS modes, loopback-only plain text, URL
//! schemes, template placeholders, durations); `invite` renders and sends.
//!
//! Restart-only: the delivery worker reads this section once at start (the reloader refuses
//! an edit of it).

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::raw::S;
use super::units;
use super::validate::Errors;
use crate::identifier::Kind;

/// Placeholders of the message templates.
pub const MESSAGE_PLACEHOLDERS: [&str; 3] = ["identifier", "url", "expires_at"];
/// The placeholder of the link template.
pub const LINK_PLACEHOLDER: &str = "token";

/// `invitations:` — present when invitations can be created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvitationsConfig {
    /// Email delivery through an SMTP relay.
    pub email: Option<SmtpConfig>,
    /// SMS delivery through an HTTP webhook.
    pub sms: Option<SmsWebhookConfig>,
    /// The link template; contains `{{token}}` exactly where the invitation token goes.
    pub url: String,
    /// Default expiry of a new invitation; default 30 days (Clerk's default).
    pub expires_in: Duration,
    /// Templates with `{{identifier}}`, `{{url}}`, `{{expires_at}}`. The subject is one line.
    pub email_subject: String,
    pub email_body: String,
    pub sms_body: String,
    pub retry: Retry,
    /// How often the delivery worker looks for due deliveries besides being woken by the
    /// store; default 5 s.
    pub poll_interval: Duration,
}

impl InvitationsConfig {
    /// The link template with the token filled in.
    pub fn link(&self, token: &str) -> String {
        self.url.replace("{{token}}", token)
    }

    /// Whether an invitation to an identifier of this kind can be delivered: email needs
    /// `email:`, phone needs `sms:`, wallets never.
    pub fn can_deliver(&self, kind: Kind) -> bool {
        match kind {
            Kind::Email => self.email.is_some(),
            Kind::Phone => self.sms.is_some(),
            Kind::Wallet => false,
        }
    }
}

/// How the SMTP connection is secured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS (required, never skipped); default port 587.
    #[default]
    Starttls,
    /// TLS from the first byte (SMTPS); default port 465.
    Implicit,
    /// No TLS; only for a relay on a loopback address. Default port 25.
    None,
}

/// `invitations.email`. `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct SmtpConfig {
    /// A DNS name or IP address.
    pub host: String,
    pub port: u16,
    pub tls: SmtpTls,
    /// SMTP AUTH (PLAIN/LOGIN) credentials; both or neither.
    pub username: Option<String>,
    pub password: Option<String>,
    /// The `From:` mailbox, like `Acme <no-reply@acme.com>`.
    pub from: String,
    /// PEM file of CA certificates trusted besides the webpki roots.
    pub ca: Option<PathBuf>,
    /// Per message (connect, TLS, SMTP dialogue); default 30 s.
    pub timeout: Duration,
}

impl fmt::Debug for SmtpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "[redacted]"))
            .field("from", &self.from)
            .field("ca", &self.ca)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// `invitations.sms`. `Debug` never shows the bearer token.
#[derive(Clone, PartialEq, Eq)]
pub struct SmsWebhookConfig {
    /// `https://…`, or `http://…` on a loopback address.
    pub url: http::Uri,
    /// Sent as `Authorization: Bearer …`.
    pub bearer_token: Option<String>,
    /// PEM file of CA certificates trusted besides the webpki roots.
    pub ca: Option<PathBuf>,
    /// Per request; default 10 s.
    pub timeout: Duration,
}

impl fmt::Debug for SmsWebhookConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmsWebhookConfig")
            .field("url", &self.url)
            .field(
                "bearer_token",
                &self.bearer_token.as_ref().map(|_| "[redacted]"),
            )
            .field("ca", &self.ca)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// `invitations.retry`: exponential backoff with jitter between attempts; a delivery is
/// given up when its invitation expires (or is revoked).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// Wait after the first failure; default 30 s. Doubles per failure.
    pub initial_backoff: Duration,
    /// Upper bound of the wait; default 1 h.
    pub max_backoff: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            initial_backoff: Duration::from_secs(30),
            max_backoff: Duration::from_secs(3600),
        }
    }
}

/// Defaults of the templates.
pub const DEFAULT_EMAIL_SUBJECT: &str = "You have been invited";
pub const DEFAULT_EMAIL_BODY: &str = "Hello,\n\nYou have been invited to sign up as {{identifier}}.\n\
Accept the invitation here:\n\n{{url}}\n\nThe link expires on {{expires_at}}.\n";
pub const DEFAULT_SMS_BODY: &str =
    "You have been invited. Accept: {{url}} (expires {{expires_at}})";

// ---- file form -------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawInvitations {
    pub email: Option<S<RawSmtp>>,
    pub sms: Option<S<RawSms>>,
    pub url: Option<S<String>>,
    pub expires_in: Option<S<String>>,
    pub email_subject: Option<S<String>>,
    pub email_body: Option<S<String>>,
    pub sms_body: Option<S<String>>,
    pub retry: Option<RawRetry>,
    pub poll_interval: Option<S<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSmtp {
    pub host: S<String>,
    pub port: Option<S<u64>>,
    pub tls: Option<S<SmtpTls>>,
    pub username: Option<S<String>>,
    pub password: Option<S<String>>,
    pub from: S<String>,
    pub ca: Option<S<String>>,
    pub timeout: Option<S<String>>,
}

impl fmt::Debug for RawSmtp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawSmtp")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("username", &self.username)
            .field("password", &format_args!("[redacted]"))
            .field("from", &self.from)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSms {
    pub url: S<String>,
    pub bearer_token: Option<S<String>>,
    pub ca: Option<S<String>>,
    pub timeout: Option<S<String>>,
}

impl fmt::Debug for RawSms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawSms")
            .field("url", &self.url)
            .field("bearer_token", &format_args!("[redacted]"))
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRetry {
    pub initial_backoff: Option<S<String>>,
    pub max_backoff: Option<S<String>>,
}

// ---- validation ------------------------------------------------------------------------

/// The placeholder names of a template, in order; an error for `{{` without `}}` or an
/// empty name. Placeholders are `{{name}}` (blanks around the name allowed).
pub fn placeholders(template: &str) -> Result<Vec<&str>, String> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            return Err("has `{{` without a closing `}}`".into());
        };
        let name = after[..end].trim();
        if name.is_empty() {
            return Err("has an empty placeholder `{{}}`".into());
        }
        out.push(name);
        rest = &after[end + 2..];
    }
    Ok(out)
}

/// Whether `host` is `localhost` or a loopback IP address (plain text is allowed only there).
pub fn is_loopback_host(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h.eq_ignore_ascii_case("localhost")
        || h.parse::<IpAddr>()
            .is_ok_and(|ip| ip.to_canonical().is_loopback())
}

fn dur(s: Option<&S<String>>, path: &str, default: Duration, e: &mut Errors) -> Duration {
    let Some(s) = s else { return default };
    match units::duration(&s.value) {
        Ok(d) if d.is_zero() => {
            e.at(path, s, "must be greater than 0");
            default
        }
        Ok(d) => d,
        Err(m) => {
            e.at(path, s, m);
            default
        }
    }
}

fn template(
    s: Option<&S<String>>,
    path: &str,
    default: &str,
    one_line: bool,
    e: &mut Errors,
) -> String {
    let Some(s) = s else {
        return default.to_owned();
    };
    let text = s.value.as_str();
    match placeholders(text) {
        Err(m) => e.at(path, s, m),
        Ok(names) => {
            for n in names {
                if !MESSAGE_PLACEHOLDERS.contains(&n) {
                    e.at(
                        path,
                        s,
                        format!(
                            "unknown placeholder `{{{{{n}}}}}`; use {{{{identifier}}}}, {{{{url}}}} or {{{{expires_at}}}}"
                        ),
                    );
                }
            }
        }
    }
    let bad_control = |c: char| c.is_control() && (one_line || !matches!(c, '\n' | '\t' | '\r'));
    if text.chars().any(bad_control) {
        e.at(
            path,
            s,
            if one_line {
                "must be one line without control characters"
            } else {
                "must not contain control characters other than newlines and tabs"
            },
        );
    }
    if text.trim().is_empty() {
        e.at(path, s, "is empty");
    }
    text.to_owned()
}

fn link(s: &S<String>, e: &mut Errors) -> String {
    let text = s.value.trim();
    match placeholders(text) {
        Err(m) => e.at("invitations.url", s, m),
        Ok(names) => {
            if !names.contains(&LINK_PLACEHOLDER) {
                e.at(
                    "invitations.url",
                    s,
                    "must contain `{{token}}` where the invitation token goes, like https://app.example.com/accept?token={{token}}",
                );
            }
            if let Some(n) = names.iter().find(|n| **n != LINK_PLACEHOLDER) {
                e.at(
                    "invitations.url",
                    s,
                    format!("unknown placeholder `{{{{{n}}}}}`; only {{{{token}}}} is filled in"),
                );
            }
        }
    }
    let sample = text.replace("{{token}}", "t0k3n");
    let ok = !sample.chars().any(|c| !c.is_ascii_graphic())
        && sample.parse::<http::Uri>().is_ok_and(|u| {
            matches!(u.scheme_str(), Some("http" | "https"))
                && u.host().is_some_and(|h| !h.is_empty())
        });
    if !ok {
        e.at(
            "invitations.url",
            s,
            format!(
                "`{}` must be an absolute http(s):// URL without blanks",
                text.escape_debug()
            ),
        );
    }
    text.to_owned()
}

fn ca(s: Option<&S<String>>, path: &str, base: &Path, e: &mut Errors) -> Option<PathBuf> {
    let s = s?;
    if s.value.trim().is_empty() {
        e.at(path, s, "must be a file path");
    }
    Some(base.join(&s.value))
}

fn smtp(r: &S<RawSmtp>, base: &Path, e: &mut Errors) -> Option<SmtpConfig> {
    let before = e.len();
    let v = &r.value;
    let host = v.host.value.trim();
    if rustls_pki_types::ServerName::try_from(host).is_err() {
        e.at(
            "invitations.email.host",
            &v.host,
            format!(
                "`{}` is not a DNS name or IP address",
                v.host.value.escape_debug()
            ),
        );
    }
    let tls = v.tls.as_ref().map_or(SmtpTls::default(), |t| t.value);
    if tls == SmtpTls::None && !is_loopback_host(host) {
        let at = v.tls.as_ref().map_or(&v.host.referenced, |t| &t.referenced);
        e.loc(
            "invitations.email.tls",
            Some(at),
            format!(
                "`none` sends the password and the invitation links in clear text; it is allowed only for a relay on a loopback address, not `{host}` (use starttls or implicit)"
            ),
        );
    }
    let port = match &v.port {
        None => match tls {
            SmtpTls::Starttls => 587,
            SmtpTls::Implicit => 465,
            SmtpTls::None => 25,
        },
        Some(p) => match u16::try_from(p.value) {
            Ok(n) if n > 0 => n,
            _ => {
                e.at(
                    "invitations.email.port",
                    p,
                    format!("{} is not a port (1..=65535)", p.value),
                );
                0
            }
        },
    };
    let secret_ok = |s: &S<String>, path: &str, e: &mut Errors| {
        if s.value.is_empty() || s.value.chars().any(char::is_control) {
            e.at(path, s, "must be non-empty, without control characters");
        }
    };
    match (&v.username, &v.password) {
        (Some(u), Some(p)) => {
            secret_ok(u, "invitations.email.username", e);
            secret_ok(p, "invitations.email.password", e);
        }
        (Some(u), None) => e.at(
            "invitations.email.username",
            u,
            "needs invitations.email.password (e.g. password: ${SMTP_PASSWORD})",
        ),
        (None, Some(p)) => e.at(
            "invitations.email.password",
            p,
            "needs invitations.email.username",
        ),
        (None, None) => {}
    }
    match v.from.value.parse::<lettre::message::Mailbox>() {
        // The envelope sender must be ASCII: relays without SMTPUTF8 refuse every message
        // otherwise (the display name may be anything; it is encoded in the header).
        Ok(m) if !m.email.to_string().is_ascii() => e.at(
            "invitations.email.from",
            &v.from,
            "the address must be ASCII (write an internationalized domain in its xn-- form)",
        ),
        Ok(_) => {}
        Err(_) => {
            e.at(
                "invitations.email.from",
                &v.from,
                format!(
                    "`{}` is not a mailbox; write e.g. `no-reply@example.com` or `Example <no-reply@example.com>`",
                    v.from.value.escape_debug()
                ),
            );
        }
    }
    let ca = ca(v.ca.as_ref(), "invitations.email.ca", base, e);
    let timeout = dur(
        v.timeout.as_ref(),
        "invitations.email.timeout",
        Duration::from_secs(30),
        e,
    );
    (e.len() == before).then(|| SmtpConfig {
        host: host.to_owned(),
        port,
        tls,
        username: v.username.as_ref().map(|u| u.value.clone()),
        password: v.password.as_ref().map(|p| p.value.clone()),
        from: v.from.value.trim().to_owned(),
        ca,
        timeout,
    })
}

fn sms(r: &S<RawSms>, base: &Path, e: &mut Errors) -> Option<SmsWebhookConfig> {
    let before = e.len();
    let v = &r.value;
    let text = v.url.value.trim();
    let url = match text.parse::<http::Uri>() {
        Ok(u) => match (u.scheme_str(), u.host()) {
            (Some("https"), Some(h)) if !h.is_empty() => Some(u),
            (Some("http"), Some(h)) if is_loopback_host(h) => Some(u),
            (Some("http"), Some(_)) => {
                e.at(
                    "invitations.sms.url",
                    &v.url,
                    "http:// is allowed only for a loopback address (the body holds the invitation link); use https://",
                );
                None
            }
            _ => {
                e.at(
                    "invitations.sms.url",
                    &v.url,
                    // The value is not repeated: a URL may carry a secret from `${ENV}`.
                    "must be an https:// URL",
                );
                None
            }
        },
        Err(_) => {
            e.at(
                "invitations.sms.url",
                &v.url,
                "is not a URL (its value is not repeated here: it may carry a secret)",
            );
            None
        }
    };
    if let Some(u) = &url
        && u.authority().is_some_and(|a| a.as_str().contains('@'))
    {
        e.at(
            "invitations.sms.url",
            &v.url,
            "must not contain user info (`user@`); use bearer_token",
        );
    }
    if let Some(t) = &v.bearer_token
        && (t.value.is_empty()
            || t.value
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || !c.is_ascii()))
    {
        e.at(
            "invitations.sms.bearer_token",
            t,
            "must be non-empty visible ASCII without blanks",
        );
    }
    let ca = ca(v.ca.as_ref(), "invitations.sms.ca", base, e);
    let timeout = dur(
        v.timeout.as_ref(),
        "invitations.sms.timeout",
        Duration::from_secs(10),
        e,
    );
    match url {
        Some(url) if e.len() == before => Some(SmsWebhookConfig {
            url,
            bearer_token: v.bearer_token.as_ref().map(|t| t.value.clone()),
            ca,
            timeout,
        }),
        _ => None,
    }
}

/// `invitations:` → [`InvitationsConfig`]; `at` is the section's position for a missing `url`.
pub(super) fn invitations(
    r: &S<RawInvitations>,
    base: &Path,
    e: &mut Errors,
) -> Option<InvitationsConfig> {
    let before = e.len();
    let v = &r.value;
    let email = v.email.as_ref().and_then(|s| smtp(s, base, e));
    let sms = v.sms.as_ref().and_then(|s| sms(s, base, e));
    let url = match &v.url {
        Some(u) => link(u, e),
        None => {
            e.at(
                "invitations.url",
                r,
                "is required: the link template, like https://app.example.com/accept?token={{token}}",
            );
            String::new()
        }
    };
    let expires_in = dur(
        v.expires_in.as_ref(),
        "invitations.expires_in",
        Duration::from_secs(30 * 24 * 3600),
        e,
    );
    let email_subject = template(
        v.email_subject.as_ref(),
        "invitations.email_subject",
        DEFAULT_EMAIL_SUBJECT,
        true,
        e,
    );
    let email_body = template(
        v.email_body.as_ref(),
        "invitations.email_body",
        DEFAULT_EMAIL_BODY,
        false,
        e,
    );
    let sms_body = template(
        v.sms_body.as_ref(),
        "invitations.sms_body",
        DEFAULT_SMS_BODY,
        false,
        e,
    );
    let d = Retry::default();
    let retry = match &v.retry {
        None => d,
        Some(rr) => {
            let initial_backoff = dur(
                rr.initial_backoff.as_ref(),
                "invitations.retry.initial_backoff",
                d.initial_backoff,
                e,
            );
            let max_backoff = dur(
                rr.max_backoff.as_ref(),
                "invitations.retry.max_backoff",
                d.max_backoff.max(initial_backoff),
                e,
            );
            if max_backoff < initial_backoff
                && let Some(m) = &rr.max_backoff
            {
                e.at(
                    "invitations.retry.max_backoff",
                    m,
                    "must not be less than invitations.retry.initial_backoff",
                );
            }
            Retry {
                initial_backoff,
                max_backoff,
            }
        }
    };
    let poll_interval = dur(
        v.poll_interval.as_ref(),
        "invitations.poll_interval",
        Duration::from_secs(5),
        e,
    );
    (e.len() == before).then_some(InvitationsConfig {
        email,
        sms,
        url,
        expires_in,
        email_subject,
        email_body,
        sms_body,
        retry,
        poll_interval,
    })
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};
    use std::time::Duration;

    use super::super::{ConfigError, FieldError, from_str_with_env};
    use super::*;

    const BASE: &str = "listen:\n  - addr: 127.0.0.1:8080\nupstream: http://127.0.0.1:3000\n";
    /// Lines in `BASE`; snippets appended start on line 4.
    const BASE_LINES: usize = 3;

    fn env(name: &str) -> Option<String> {
        (name == "SMTP_PASSWORD").then(|| "s3cr3t-pw".to_owned())
    }

    fn parse(snippet: &str) -> Result<super::super::Config, ConfigError> {
        from_str_with_env(
            &format!("{BASE}{snippet}"),
            Path::new("/etc/idgate/config.yaml"),
            &env,
        )
    }

    fn invalid(snippet: &str) -> Vec<FieldError> {
        match parse(snippet) {
            Err(ConfigError::Invalid { errors, .. }) => errors,
            other => panic!("expected validation errors for\n{snippet}\ngot {other:?}"),
        }
    }

    const FULL: &str = r#"invitations:
  url: "https://app.example.com/accept?token={{token}}"
  expires_in: 7d
  email:
    host: smtp.example.com
    tls: implicit
    username: idgate
    password: ${SMTP_PASSWORD}
    from: "Acme <no-reply@acme.com>"
    ca: certs/relay-ca.pem
    timeout: 20s
  sms:
    url: https://sms.example.com/send
    bearer_token: tok_123
    timeout: 3s
  email_subject: "Join {{identifier}}"
  email_body: "Hi,\n{{url}}\nexpires {{ expires_at }}\n"
  sms_body: "{{url}}"
  retry:
    initial_backoff: 2s
    max_backoff: 10m
  poll_interval: 1s
"#;

    #[test]
    fn absent_section_is_none() {
        assert_eq!(parse("").unwrap().invitations, None);
    }

    #[test]
    fn full_section_is_converted() {
        let c = parse(FULL).unwrap().invitations.unwrap();
        let email = c.email.clone().unwrap();
        assert_eq!(email.host, "smtp.example.com");
        assert_eq!(email.port, 465, "implicit TLS defaults to 465");
        assert_eq!(email.tls, SmtpTls::Implicit);
        assert_eq!(email.password.as_deref(), Some("s3cr3t-pw"));
        assert_eq!(
            email.ca,
            Some(PathBuf::from("/etc/idgate/certs/relay-ca.pem"))
        );
        assert_eq!(email.timeout, Duration::from_secs(20));
        let sms = c.sms.clone().unwrap();
        assert_eq!(sms.url.to_string(), "https://sms.example.com/send");
        assert_eq!(sms.bearer_token.as_deref(), Some("tok_123"));
        assert_eq!(c.expires_in, Duration::from_secs(7 * 86_400));
        assert_eq!(c.retry.initial_backoff, Duration::from_secs(2));
        assert_eq!(c.retry.max_backoff, Duration::from_secs(600));
        assert_eq!(c.poll_interval, Duration::from_secs(1));
        assert_eq!(c.link("AbC"), "https://app.example.com/accept?token=AbC");
        assert!(c.can_deliver(Kind::Email) && c.can_deliver(Kind::Phone));
        assert!(!c.can_deliver(Kind::Wallet));
        // Secrets never show in Debug.
        let debug = format!("{c:?}");
        assert!(
            !debug.contains("s3cr3t-pw") && !debug.contains("tok_123"),
            "{debug}"
        );
    }

    #[test]
    fn defaults() {
        let c = parse(
            "invitations:\n  url: https://a.example/i/{{token}}\n  email:\n    host: 127.0.0.1\n    tls: none\n    from: a@b.example\n",
        )
        .unwrap()
        .invitations
        .unwrap();
        let email = c.email.clone().unwrap();
        assert_eq!((email.port, email.tls), (25, SmtpTls::None));
        assert_eq!(email.timeout, Duration::from_secs(30));
        assert_eq!(c.sms, None);
        assert!(c.can_deliver(Kind::Email) && !c.can_deliver(Kind::Phone));
        assert_eq!(c.expires_in, Duration::from_secs(30 * 86_400));
        assert_eq!(c.retry, Retry::default());
        assert_eq!(c.email_subject, DEFAULT_EMAIL_SUBJECT);
        assert_eq!(c.email_body, DEFAULT_EMAIL_BODY);
        assert_eq!(c.sms_body, DEFAULT_SMS_BODY);
        for t in [DEFAULT_EMAIL_SUBJECT, DEFAULT_EMAIL_BODY, DEFAULT_SMS_BODY] {
            let names = placeholders(t).unwrap();
            assert!(names.iter().all(|n| MESSAGE_PLACEHOLDERS.contains(n)));
        }
        let starttls = parse(
            "invitations:\n  url: https://a.example/{{token}}\n  email: {host: smtp.example.com, from: a@b.example}\n",
        )
        .unwrap()
        .invitations
        .unwrap()
        .email
        .unwrap();
        assert_eq!((starttls.port, starttls.tls), (587, SmtpTls::Starttls));
    }

    #[test]
    fn a_section_without_channels_is_valid_with_a_warning() {
        let c = parse("invitations:\n  url: https://a.example/{{token}}\n").unwrap();
        let inv = c.invitations.as_ref().unwrap();
        assert!(!inv.can_deliver(Kind::Email) && !inv.can_deliver(Kind::Phone));
        assert!(
            c.warnings()
                .iter()
                .any(|w| w.contains("neither email nor sms")),
            "{:?}",
            c.warnings()
        );
    }

    #[test]
    fn loopback_hosts() {
        for h in [
            "localhost",
            "127.0.0.1",
            "127.3.4.5",
            "::1",
            "[::1]",
            "[::ffff:127.0.0.1]",
            "LOCALHOST",
        ] {
            assert!(is_loopback_host(h), "{h}");
        }
        for h in [
            "example.com",
            "10.0.0.1",
            "localhost.evil.com",
            "0.0.0.0",
            "[::ffff:10.0.0.1]",
            "",
        ] {
            assert!(!is_loopback_host(h), "{h}");
        }
    }

    /// (snippet, path, line (relative to the snippet, 1-based), column, message part)
    #[test]
    fn invalid_table() {
        let url = "invitations:\n  url: https://a.example/{{token}}\n";
        let cases: Vec<(String, &str, usize, usize, &str)> = vec![
            (
                "invitations:\n  email: {host: smtp.example.com, from: a@b.example}\n".into(),
                "invitations.url",
                2,
                3,
                "is required",
            ),
            (
                "invitations:\n  url: https://a.example/accept\n".into(),
                "invitations.url",
                2,
                8,
                "must contain `{{token}}`",
            ),
            (
                "invitations:\n  url: https://a.example/{{token}}/{{id}}\n".into(),
                "invitations.url",
                2,
                8,
                "unknown placeholder `{{id}}`",
            ),
            (
                "invitations:\n  url: /accept/{{token}}\n".into(),
                "invitations.url",
                2,
                8,
                "absolute http(s)",
            ),
            (
                format!(
                    "{url}  email:\n    host: smtp.example.com\n    tls: none\n    from: a@b.example\n"
                ),
                "invitations.email.tls",
                5,
                10,
                "allowed only for a relay on a loopback address",
            ),
            (
                format!(
                    "{url}  email:\n    host: smtp.example.com\n    tls: sometimes\n    from: a@b.example\n"
                ),
                "",
                5,
                10,
                "sometimes",
            ),
            (
                format!("{url}  email:\n    host: 'bad host'\n    from: a@b.example\n"),
                "invitations.email.host",
                4,
                11,
                "not a DNS name",
            ),
            (
                format!(
                    "{url}  email:\n    host: smtp.example.com\n    port: 70000\n    from: a@b.example\n"
                ),
                "invitations.email.port",
                5,
                11,
                "not a port",
            ),
            (
                format!("{url}  email:\n    host: smtp.example.com\n    from: not-an-address\n"),
                "invitations.email.from",
                5,
                11,
                "is not a mailbox",
            ),
            (
                format!(
                    "{url}  email:\n    host: smtp.example.com\n    from: \"Bücher <no-reply@bücher.de>\"\n"
                ),
                "invitations.email.from",
                5,
                11,
                "must be ASCII",
            ),
            (
                format!(
                    "{url}  email:\n    host: smtp.example.com\n    from: a@b.example\n    username: u\n"
                ),
                "invitations.email.username",
                6,
                15,
                "needs invitations.email.password",
            ),
            (
                format!("{url}  sms:\n    url: http://sms.example.com/send\n"),
                "invitations.sms.url",
                4,
                10,
                "allowed only for a loopback address",
            ),
            (
                format!("{url}  sms:\n    url: ftp://sms.example.com/send?key=s3cr3t\n"),
                "invitations.sms.url",
                4,
                10,
                "must be an https:// URL",
            ),
            (
                format!("{url}  sms:\n    url: https://sms.example.com\n    bearer_token: 'a b'\n"),
                "invitations.sms.bearer_token",
                5,
                19,
                "without blanks",
            ),
            (
                format!("{url}  email_subject: \"Hi {{{{name}}}}\"\n"),
                "invitations.email_subject",
                3,
                18,
                "unknown placeholder `{{name}}`",
            ),
            (
                format!("{url}  email_subject: \"Hi\\r\\nBcc: x@evil.com\"\n"),
                "invitations.email_subject",
                3,
                18,
                "one line",
            ),
            (
                format!("{url}  sms_body: \"{{{{url}}\"\n"),
                "invitations.sms_body",
                3,
                13,
                "without a closing",
            ),
            (
                format!("{url}  email_body: \"\"\n"),
                "invitations.email_body",
                3,
                15,
                "is empty",
            ),
            (
                format!("{url}  expires_in: 0s\n"),
                "invitations.expires_in",
                3,
                15,
                "greater than 0",
            ),
            (
                format!("{url}  retry:\n    initial_backoff: 1m\n    max_backoff: 10s\n"),
                "invitations.retry.max_backoff",
                5,
                18,
                "must not be less than",
            ),
            (
                format!("{url}  poll_interval: soon\n"),
                "invitations.poll_interval",
                3,
                18,
                "not a duration",
            ),
            (format!("{url}  webhook: x\n"), "", 3, 3, "webhook"),
        ];
        let mut wrong = Vec::new();
        for (snippet, path, line, column, part) in cases {
            let errors = match parse(&snippet) {
                Err(ConfigError::Invalid { errors, .. }) => errors,
                Err(ConfigError::Parse {
                    line: l,
                    column: c,
                    message,
                    ..
                }) => vec![FieldError {
                    path: String::new(),
                    line: l,
                    column: c,
                    message,
                }],
                other => panic!("expected an error for\n{snippet}\ngot {other:?}"),
            };
            // A URL value may carry a secret (from `${ENV}`): never repeated in an error.
            assert!(
                errors.iter().all(|e| !e.message.contains("s3cr3t")),
                "{errors:?}"
            );
            let hit = errors
                .iter()
                .find(|e| e.path == path && e.message.contains(part));
            let Some(e) = hit else {
                panic!("no `{path}` error containing {part:?} for\n{snippet}\ngot {errors:#?}");
            };
            if (e.line, e.column) != (Some(BASE_LINES + line), Some(column)) {
                wrong.push(format!("{path} {part:?}: want {line}:{column}, got {e:?}"));
            }
        }
        assert!(wrong.is_empty(), "wrong positions:\n{}", wrong.join("\n"));
    }

    #[test]
    fn every_error_is_reported_at_once() {
        let errors = invalid(
            "invitations:\n  url: https://a.example/x\n  email: {host: smtp.example.com, tls: none, from: nobody}\n  sms: {url: http://sms.example.com}\n",
        );
        let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        for p in [
            "invitations.url",
            "invitations.email.tls",
            "invitations.email.from",
            "invitations.sms.url",
        ] {
            assert!(paths.contains(&p), "{p} missing from {paths:?}");
        }
    }

    #[test]
    fn placeholders_parse() {
        assert_eq!(placeholders("a {{x}} b {{ y }}"), Ok(vec!["x", "y"]));
        assert_eq!(placeholders("{single} }}"), Ok(vec![]));
        assert!(placeholders("{{}}").is_err());
        assert!(placeholders("{{x").is_err());
    }
}

#[cfg(test)]
mod example {
    use std::path::Path;

    use super::super::from_str_with_env;
    use super::*;

    /// The commented `invitations:` block of config.example.yaml, uncommented.
    fn example_block() -> String {
        let text = include_str!("../../config.example.yaml");
        let mut out = String::new();
        let mut inside = false;
        for line in text.lines() {
            if line == "# invitations:" {
                inside = true;
            } else if inside && !line.starts_with("#  ") {
                break;
            }
            if inside {
                out.push_str(&line[2..]);
                out.push('\n');
            }
        }
        assert!(
            out.len() > 500,
            "no invitations block in config.example.yaml"
        );
        out
    }

    #[test]
    fn the_example_block_is_valid_and_states_the_defaults() {
        let text = format!(
            "listen:\n  - addr: 127.0.0.1:8080\nupstream: http://127.0.0.1:3000\n{}",
            example_block()
        );
        let env = |n: &str| Some(format!("value-of-{n}"));
        let c = from_str_with_env(&text, Path::new("/etc/idgate/config.yaml"), &env)
            .unwrap_or_else(|e| panic!("{e}"))
            .invitations
            .unwrap();
        let email = c.email.clone().unwrap();
        assert_eq!((email.port, email.tls), (587, SmtpTls::Starttls));
        assert_eq!(email.password.as_deref(), Some("value-of-SMTP_PASSWORD"));
        assert_eq!(email.timeout, Duration::from_secs(30));
        let sms = c.sms.clone().unwrap();
        assert_eq!(
            sms.bearer_token.as_deref(),
            Some("value-of-SMS_WEBHOOK_TOKEN")
        );
        assert_eq!(sms.timeout, Duration::from_secs(10));
        assert_eq!(c.expires_in, Duration::from_secs(30 * 86_400));
        assert_eq!(c.email_subject, DEFAULT_EMAIL_SUBJECT);
        assert_eq!(c.email_body, DEFAULT_EMAIL_BODY);
        assert_eq!(c.sms_body, DEFAULT_SMS_BODY);
        assert_eq!(c.retry, Retry::default());
        assert_eq!(c.poll_interval, Duration::from_secs(5));
    }
}
