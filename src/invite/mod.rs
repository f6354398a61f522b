//! invite: delivering invitations (issue #9). Owns rendering a delivery into a message
//! ([`render`]: the link, the `{{identifier}}`/`{{url}}`/`{{expires_at}}` templates, the
//! stable `Message-ID` and idempotency key), email over SMTP with lettre and rustls
//! ([`smtp`]), SMS through an HTTP webhook on the project's hyper client and TLS connector
//! ([`webhook`]), and the background outbox worker with retries and exponential backoff
//! ([`worker`]). The outbox itself (delivery rows, written with their invitation in one
//! transaction) is the store's; the `invitations:` config is `config`'s.
//!
//! May import `config`, `store`, `observe`, `tls`; only `app` imports this module.

pub mod render;
pub mod smtp;
pub mod webhook;
pub mod worker;

pub use worker::{Outcome, Worker};

/// Why one send failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The relay, the webhook or the network failed or refused: try again later (until the
    /// invitation expires). A relay's permanent (5xx) answer is retried too — it is usually a
    /// configuration problem (credentials, sender) that an operator fixes, and giving up would
    /// lose the invitation.
    #[error("{0}")]
    Transient(String),
    /// The message can never be built (an invalid recipient, an expired invitation).
    #[error("{0}")]
    Undeliverable(String),
}

/// Why the delivery worker could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum InviteError {
    #[error(transparent)]
    Smtp(#[from] smtp::SmtpSetupError),
    #[error("invitations.sms: {0}")]
    Webhook(#[from] crate::tls::TlsError),
}
