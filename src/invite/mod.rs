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

/// `text` with every word holding an `@` (an address, as relays quote the recipient in
/// their replies: `550 5.1.1 <bob@example.com>: Recipient address rejected`) replaced by
/// `<address>`: what a send error may say in logs and the delivery's `last_error`.
pub(crate) fn without_addresses(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for (i, word) in text.split(' ').enumerate() {
        if i > 0 {
            out.push(' ');
        }
        if word.contains('@') {
            // Keep what follows the address (`:` after `<…>`).
            let tail = word
                .rfind(['>', ')', ']'])
                .map_or("", |end| &word[end + 1..]);
            out.push_str("<address>");
            out.push_str(tail);
        } else {
            out.push_str(word);
        }
    }
    out
}

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

#[cfg(test)]
mod tests {
    #[test]
    fn addresses_are_cut_from_relay_replies() {
        for (reply, want) in [
            (
                "smtp.example.com: permanent error (550): 5.1.1 <bob@example.com>: Recipient address rejected",
                "smtp.example.com: permanent error (550): 5.1.1 <address>: Recipient address rejected",
            ),
            ("553 bob@example.com no", "553 <address> no"),
            ("connection refused", "connection refused"),
        ] {
            assert_eq!(super::without_addresses(reply), want);
        }
    }
}

/// Why the delivery worker could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum InviteError {
    #[error(transparent)]
    Smtp(#[from] smtp::SmtpSetupError),
    #[error("invitations.sms: {0}")]
    Webhook(#[from] crate::tls::TlsError),
}
