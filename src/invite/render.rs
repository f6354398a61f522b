//! Rendering a delivery into what is sent: the link (the token in the `url` template), the
//! email subject and body and the SMS text (the `{{identifier}}`, `{{url}}`, `{{expires_at}}`
//! templates), the stable `Message-ID` and the webhook's idempotency key. Pure functions.
//!
//! Templates were checked at config load (known placeholders only, a one-line subject), so
//! filling them cannot fail; a placeholder the config check let through is left as written.
//! Header safety: the subject is refused here if it would carry a CR or LF (an identifier or
//! a template cannot put one there after validation, but the check is cheap).

use std::time::{Duration, SystemTime};

use crate::config::InvitationsConfig;
use crate::observe::audit::rfc3339;
use crate::store::Delivery;

/// An email ready to build.
#[derive(Clone, PartialEq, Eq)]
pub struct EmailText {
    pub to: String,
    pub subject: String,
    pub body: String,
    /// `<…@domain>`, stable per delivery.
    pub message_id: String,
}

impl std::fmt::Debug for EmailText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The body holds the link, and the link holds the token.
        f.debug_struct("EmailText")
            .field("to", &self.to)
            .field("subject", &self.subject)
            .field("message_id", &self.message_id)
            .finish_non_exhaustive()
    }
}

/// Why a delivery cannot be rendered (it never will be: the worker gives it up).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RenderError {
    #[error("the rendered subject would contain a line break")]
    HeaderInjection,
}

/// `{{name}}` (blanks around the name allowed) replaced by `value(name)`; unknown names and
/// unterminated `{{` are kept as written.
pub fn fill(template: &str, value: &dyn Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(template.len() + 64);
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            out.push_str(&rest[start..]);
            return out;
        };
        let name = after[..end].trim();
        match value(name) {
            Some(v) => out.push_str(&v),
            None => out.push_str(&rest[start..start + 2 + end + 2]),
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    out
}

/// `2026-12-23 13:27 UTC` for a unix-ms time, `never` for none.
pub fn expires_at_text(ms: Option<i64>) -> String {
    let Some(ms) = ms else {
        return "never".to_owned();
    };
    let t = SystemTime::UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    let s = rfc3339(t);
    match (s.get(..10), s.get(11..16)) {
        (Some(date), Some(time)) => format!("{date} {time} UTC"),
        _ => s,
    }
}

fn values<'a>(cfg: &'a InvitationsConfig, d: &'a Delivery) -> impl Fn(&str) -> Option<String> + 'a {
    move |name| match name {
        "identifier" => Some(d.recipient.clone()),
        "url" => Some(cfg.link(&d.token)),
        "expires_at" => Some(expires_at_text(d.expires_at)),
        _ => None,
    }
}

/// The domain of the `from` address (for the `Message-ID`), or `idgate.invalid`.
pub fn from_domain(from: &str) -> &str {
    let addr = from
        .rsplit_once('<')
        .map_or(from, |(_, a)| a.trim_end_matches('>'));
    addr.rsplit_once('@')
        .map(|(_, d)| d.trim())
        .filter(|d| !d.is_empty() && d.chars().all(|c| c.is_ascii_graphic() && c != '>'))
        .unwrap_or("idgate.invalid")
}

/// The stable key of one delivery: the invitation id and the delivery's row id. The same on
/// every attempt and after a restart, so a receiver can de-duplicate a resend.
pub fn delivery_key(d: &Delivery) -> String {
    format!("{}.{}", d.invitation_id, d.id)
}

/// `<idgate.{invitation_id}.{delivery_id}@{domain}>`.
pub fn message_id(d: &Delivery, domain: &str) -> String {
    format!("<idgate.{}@{domain}>", delivery_key(d))
}

/// The email for a delivery.
pub fn email(cfg: &InvitationsConfig, from: &str, d: &Delivery) -> Result<EmailText, RenderError> {
    let v = values(cfg, d);
    let subject = fill(&cfg.email_subject, &v);
    if subject.contains(['\r', '\n']) {
        return Err(RenderError::HeaderInjection);
    }
    Ok(EmailText {
        to: d.recipient.clone(),
        subject,
        body: fill(&cfg.email_body, &v),
        message_id: message_id(d, from_domain(from)),
    })
}

/// The SMS text for a delivery.
pub fn sms(cfg: &InvitationsConfig, d: &Delivery) -> String {
    fill(&cfg.sms_body, &values(cfg, d))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Channel, DeliveryState};

    fn cfg() -> InvitationsConfig {
        InvitationsConfig {
            email: None,
            sms: None,
            url: "https://app.example.com/accept?t={{token}}".into(),
            expires_in: Duration::from_secs(86_400),
            email_subject: "Join as {{ identifier }}".into(),
            email_body: "Go to {{url}} before {{expires_at}}.".into(),
            sms_body: "{{url}}".into(),
            retry: crate::config::Retry::default(),
            poll_interval: Duration::from_secs(5),
        }
    }

    fn delivery(recipient: &str) -> Delivery {
        Delivery {
            id: 7,
            invitation_id: "inv_abc".into(),
            channel: Channel::Email,
            recipient: recipient.into(),
            token: "T0k3n".into(),
            expires_at: Some(1_798_000_000_000),
            state: DeliveryState::Pending,
            attempts: 0,
            next_attempt_at: 0,
            last_error: None,
            sent_at: None,
            created_at: 0,
        }
    }

    #[test]
    fn fill_replaces_known_and_keeps_the_rest() {
        let v = |n: &str| (n == "a").then(|| "X".to_owned());
        let cases = [
            ("{{a}}", "X"),
            ("-{{ a }}-{{a}}", "-X-X"),
            ("{{b}} {{a}}", "{{b}} X"),
            ("{a} {{a", "{a} {{a"),
            ("no placeholders", "no placeholders"),
            ("", ""),
            ("{{a}}}}", "X}}"),
        ];
        for (t, want) in cases {
            assert_eq!(fill(t, &v), want, "{t:?}");
        }
    }

    #[test]
    fn renders_email_and_sms() {
        let c = cfg();
        let d = delivery("alice@acme.com");
        let e = email(&c, "Acme <no-reply@acme.com>", &d).unwrap();
        assert_eq!(e.to, "alice@acme.com");
        assert_eq!(e.subject, "Join as alice@acme.com");
        assert_eq!(
            e.body,
            "Go to https://app.example.com/accept?t=T0k3n before 2026-12-23 04:26 UTC."
        );
        assert_eq!(e.message_id, "<idgate.inv_abc.7@acme.com>");
        assert_eq!(sms(&c, &d), "https://app.example.com/accept?t=T0k3n");
        // Debug never shows the body (it holds the token).
        assert!(!format!("{e:?}").contains("T0k3n"));
    }

    #[test]
    fn subject_with_a_line_break_is_refused() {
        let c = cfg();
        let d = delivery("alice@acme.com\r\nBcc: x@evil.com");
        assert_eq!(
            email(&c, "no-reply@acme.com", &d),
            Err(RenderError::HeaderInjection)
        );
    }

    #[test]
    fn expiry_and_domains() {
        assert_eq!(expires_at_text(None), "never");
        assert_eq!(expires_at_text(Some(0)), "1970-01-01 00:00 UTC");
        assert_eq!(from_domain("a@b.example"), "b.example");
        assert_eq!(from_domain("Name <a@b.example>"), "b.example");
        assert_eq!(from_domain("nonsense"), "idgate.invalid");
    }
}
