//! Email over SMTP with lettre: one connection per message (no pool: invitations are rare and
//! a relay that went away must not leave a dead pooled connection behind), STARTTLS required
//! or implicit TLS through rustls (aws-lc-rs; webpki roots plus the optional `ca`), plain
//! text only to a loopback relay (checked at config load), optional AUTH.
//!
//! A message is plain text with a stable `Message-ID` (see [`super::render::message_id`]).
//! Errors are classified by [`SendError`]: everything the relay or the network says is worth
//! another try later; only a message that cannot be built (a recipient that is not an
//! address) is given up.

use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::message::{Mailbox, Message};
use lettre::transport::smtp::AsyncSmtpTransport;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncTransport, Tokio1Executor};

use super::SendError;
use super::render::EmailText;
use crate::config::{SmtpConfig, SmtpTls};

/// Sends invitation emails through the configured relay.
pub struct SmtpSender {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    /// The `from` as configured (for the `Message-ID` domain).
    from_text: String,
    /// Bound on one whole message (connect, TLS, dialogue).
    deadline: Duration,
    relay: String,
}

impl std::fmt::Debug for SmtpSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpSender")
            .field("relay", &self.relay)
            .field("from", &self.from_text)
            .finish_non_exhaustive()
    }
}

/// Why the sender could not be built (a CA file, the `from` address).
#[derive(Debug, thiserror::Error)]
pub enum SmtpSetupError {
    #[error("invitations.email.ca {path}: {message}")]
    Ca { path: String, message: String },
    #[error("invitations.email: {0}")]
    Config(String),
}

impl SmtpSender {
    /// Reads the CA file if any (blocking). No connection is made until the first message.
    pub fn new(cfg: &SmtpConfig) -> Result<SmtpSender, SmtpSetupError> {
        let from: Mailbox = cfg
            .from
            .parse()
            .map_err(|e| SmtpSetupError::Config(format!("from: {e}")))?;
        let params = || {
            let mut b = TlsParameters::builder(cfg.host.clone());
            if let Some(path) = &cfg.ca {
                let ca_err = |message: String| SmtpSetupError::Ca {
                    path: path.display().to_string(),
                    message,
                };
                let pem = std::fs::read(path).map_err(|e| ca_err(e.to_string()))?;
                let cert = Certificate::from_pem(&pem).map_err(|e| ca_err(e.to_string()))?;
                b = b.add_root_certificate(cert);
            }
            b.build_rustls()
                .map_err(|e| SmtpSetupError::Config(format!("TLS: {e}")))
        };
        let tls = match cfg.tls {
            SmtpTls::Starttls => Tls::Required(params()?),
            SmtpTls::Implicit => Tls::Wrapper(params()?),
            SmtpTls::None => Tls::None,
        };
        let mut b = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(cfg.host.clone())
            .port(cfg.port)
            .tls(tls)
            .timeout(Some(cfg.timeout));
        if let (Some(u), Some(p)) = (&cfg.username, &cfg.password) {
            b = b.credentials(Credentials::new(u.clone(), p.clone()));
        }
        Ok(SmtpSender {
            transport: b.build(),
            from,
            from_text: cfg.from.clone(),
            deadline: cfg.timeout.saturating_mul(3),
            relay: format!("{}:{}", cfg.host, cfg.port),
        })
    }

    /// The configured `From:` (for rendering the `Message-ID`).
    pub fn from(&self) -> &str {
        &self.from_text
    }

    /// Builds the message (plain text, stable `Message-ID`) for `email`.
    pub fn build(&self, email: &EmailText) -> Result<Message, SendError> {
        let to: Mailbox = email.to.parse().map_err(|_| {
            SendError::Undeliverable("the recipient is not an email address".into())
        })?;
        Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(email.subject.clone())
            .message_id(Some(email.message_id.clone()))
            .date_now()
            .header(ContentType::TEXT_PLAIN)
            .body(email.body.clone())
            .map_err(|e| SendError::Undeliverable(format!("the message cannot be built: {e}")))
    }

    /// Sends `email`; `Ok` once the relay accepted it (250 after DATA).
    pub async fn send(&self, email: &EmailText) -> Result<(), SendError> {
        let message = self.build(email)?;
        match tokio::time::timeout(self.deadline, self.transport.send(message)).await {
            Ok(Ok(_)) => Ok(()),
            // A relay's reply may quote the recipient: never kept in logs or the store.
            Ok(Err(e)) => Err(SendError::Transient(super::without_addresses(&format!(
                "{}: {e}",
                self.relay
            )))),
            Err(_) => Err(SendError::Transient(format!(
                "{}: no answer within {:?}",
                self.relay, self.deadline
            ))),
        }
    }
}
