//! The outbox worker: one task per gate that sends the store's due deliveries, one at a time.
//!
//! It wakes when the store commits new delivery rows ([`Store::deliveries_notify`]), when a
//! retry it scheduled falls due, and every `poll_interval` (so a restart resumes the queue;
//! one gate holds the store, see `store::lock_exclusive`). For each due delivery: render, send, then mark —
//! `sent` only after the relay accepted the message; on failure `retry` with exponential
//! backoff and jitter, or `failed` when the next try would fall after the invitation's expiry
//! (or the message can never be built). A relay that is down therefore means the message
//! waits; it is never dropped while its invitation is pending.
//!
//! Exactly-once, as far as it goes: a delivery marked `sent` is never sent again. The window
//! between the relay's OK and the mark is one local SQLite commit; a crash inside it sends the
//! message again on restart, with the same `Message-ID` / `Idempotency-Key` so the receiver
//! can drop the copy. A graceful stop is only looked at between deliveries, so the in-flight
//! send and its mark always finish.
//!
//! When the store can be read but not written (a full disk), an outcome it could not record
//! is kept in memory ([`Pending`]): a message the relay accepted is not sent again, a retry
//! waits its backoff, and the worker waits too instead of reading the same due rows again at
//! once. Each is written once the store takes writes again.
//!
//! Logs carry the delivery and invitation ids, the channel, attempts and errors — never the
//! recipient, the link or the token.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use super::render;
use super::smtp::SmtpSender;
use super::webhook::{SmsRequest, WebhookSender};
use super::{InviteError, SendError};
use crate::config::{InvitationsConfig, Retry};
use crate::observe::Metrics;
use crate::store::{Channel, Delivery, Store, StoreError};

/// Deliveries read per pass.
const BATCH: usize = 32;

/// What happened to one delivery in one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The relay accepted it and it is marked sent.
    Sent,
    /// Failed; tried again at this unix-ms time.
    Retry { at: i64, error: String },
    /// Given up (expired, or it can never be sent).
    Failed { error: String },
    /// Not sent: the store's claim said its invitation is no longer pending (revoked,
    /// accepted or expired after the batch was read); the store marked it failed.
    Skipped,
}

/// An outcome the store could not record yet.
#[derive(Debug, Clone)]
enum Pending {
    /// The relay accepted the message: never sent again.
    Sent,
    /// Not before `at`, after `attempts` failed attempts.
    Retry {
        attempts: u32,
        at: i64,
        error: String,
    },
    /// Given up.
    GaveUp { error: String },
}

/// Sends the outbox.
pub struct Worker {
    store: Arc<Store>,
    cfg: InvitationsConfig,
    email: Option<SmtpSender>,
    sms: Option<WebhookSender>,
    metrics: Option<Arc<Metrics>>,
    /// Outcomes the store has not recorded yet, by delivery id.
    unrecorded: Mutex<HashMap<i64, Pending>>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("email", &self.email)
            .field("sms", &self.sms)
            .finish_non_exhaustive()
    }
}

/// Unix ms now.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The wait before attempt `attempts + 1`, after `attempts` failures (≥ 1): `initial · 2^(n-1)`
/// capped at `max`, then "equal jitter" — a uniform pick in `[wait/2, wait]` from `random`.
pub fn backoff(retry: &Retry, attempts: u32, random: u64) -> Duration {
    let exp = attempts.saturating_sub(1).min(30);
    let wait = retry
        .initial_backoff
        .saturating_mul(1u32 << exp)
        .min(retry.max_backoff);
    let wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
    let half = wait_ms / 2;
    let spread = wait_ms - half;
    let jitter = if spread == 0 {
        0
    } else {
        random % (spread + 1)
    };
    Duration::from_millis(half + jitter)
}

fn channel_name(c: Channel) -> &'static str {
    match c {
        Channel::Email => "email",
        Channel::Sms => "sms",
    }
}

impl Worker {
    /// Builds the senders the config names (reads CA files: blocking).
    pub fn new(store: Arc<Store>, cfg: InvitationsConfig) -> Result<Worker, InviteError> {
        let email = cfg.email.as_ref().map(SmtpSender::new).transpose()?;
        let sms = cfg.sms.as_ref().map(WebhookSender::new).transpose()?;
        Ok(Worker {
            store,
            cfg,
            email,
            sms,
            metrics: None,
            unrecorded: Mutex::new(HashMap::new()),
        })
    }

    fn unrecorded(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Pending>> {
        self.unrecorded.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps `p` for `id` until the store records it.
    fn remember(&self, id: i64, p: Pending) {
        self.unrecorded().insert(id, p);
    }

    /// The earliest time an unrecorded outcome is worth another look (now + a first backoff
    /// for those without a time of their own); `None` when there are none.
    fn next_unrecorded(&self, now: i64) -> Option<i64> {
        let first = now.saturating_add(ms(backoff(
            &self.cfg.retry,
            1,
            getrandom::u64().unwrap_or(0),
        )));
        self.unrecorded()
            .values()
            .map(|p| match p {
                Pending::Retry { at, .. } => (*at).max(now),
                _ => first,
            })
            .min()
    }

    /// Writes every outcome held in memory that the store takes now, whatever became of its
    /// row since (an invitation accepted, revoked or expired meanwhile no longer comes back
    /// as due: its held outcome would otherwise stay, and keep the worker waiting). The
    /// store's updates only touch pending rows, so a row settled otherwise is left as it is.
    async fn flush_unrecorded(&self) {
        let held: Vec<(i64, Pending)> = self
            .unrecorded()
            .iter()
            .map(|(id, p)| (*id, p.clone()))
            .collect();
        for (id, p) in held {
            if self.record(id, &p).await.is_ok() {
                self.unrecorded().remove(&id);
            }
        }
    }

    /// Writes held outcome `p` of delivery `id` to the store.
    async fn record(&self, id: i64, p: &Pending) -> Result<(), StoreError> {
        match p {
            Pending::Sent => self.store.delivery_sent(id, now_ms()).await,
            Pending::Retry {
                attempts,
                at,
                error,
            } => {
                self.store
                    .delivery_retry(id, *attempts, *at, error.clone())
                    .await
            }
            Pending::GaveUp { error } => self.store.delivery_give_up(id, error.clone()).await,
        }
    }

    /// Deals with `d` if an outcome of it is still unrecorded: records it if the store takes
    /// it now (the attempt is not repeated), or leaves it for later. `None`: nothing held
    /// back, or a retry whose time has come (its attempt count is returned through `attempts`).
    async fn settle(&self, d: &Delivery, attempts: &mut u32) -> Option<Outcome> {
        let pending = self.unrecorded().remove(&d.id)?;
        let outcome = match &pending {
            Pending::Retry {
                attempts: n, at, ..
            } if *at <= now_ms() => {
                *attempts = (*attempts).max(*n);
                return None;
            }
            Pending::Retry { at, error, .. } => Outcome::Retry {
                at: *at,
                error: error.clone(),
            },
            Pending::Sent => Outcome::Sent,
            Pending::GaveUp { error } => Outcome::Failed {
                error: error.clone(),
            },
        };
        if self.record(d.id, &pending).await.is_err() {
            self.remember(d.id, pending);
        }
        Some(outcome)
    }

    /// Counts attempts in `idgate_invitation_deliveries_total{channel,outcome}`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Worker {
        self.metrics = Some(metrics);
        self
    }

    /// Runs until `stop` turns true; an in-flight delivery finishes (send and mark) first.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let notify = self.store.deliveries_notify();
        let poll = self.cfg.poll_interval;
        // The earliest retry this worker scheduled (unix ms), so it wakes for it.
        let mut soonest: Option<i64> = None;
        tracing::info!(
            email = self.email.is_some(),
            sms = self.sms.is_some(),
            "invitation delivery worker started"
        );
        'outer: loop {
            if *stop.borrow() {
                break;
            }
            self.flush_unrecorded().await;
            let now = now_ms();
            if soonest.is_some_and(|t| t <= now) {
                soonest = None;
            }
            match self.store.due_deliveries(now, BATCH).await {
                Ok(due) if !due.is_empty() => {
                    for d in due {
                        if *stop.borrow() {
                            break 'outer;
                        }
                        if let Outcome::Retry { at, .. } = self.deliver(&d).await {
                            soonest = Some(soonest.map_or(at, |s| s.min(at)));
                        }
                    }
                    // Every outcome is in the store: the next due rows are new ones. Otherwise
                    // the same rows would come back at once; wait as for a retry.
                    match self.next_unrecorded(now_ms()) {
                        None => continue,
                        Some(at) => soonest = Some(soonest.map_or(at, |s| s.min(at))),
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "reading due invitation deliveries failed"),
            }
            let now = now_ms();
            let wait = soonest.map_or(poll, |t| {
                Duration::from_millis(u64::try_from(t - now).unwrap_or(0)).min(poll)
            });
            tokio::select! {
                _ = notify.notified() => {}
                _ = tokio::time::sleep(wait) => {}
                _ = stop.wait_for(|s| *s) => break,
            }
        }
        tracing::info!("invitation delivery worker stopped");
    }

    /// Sends every delivery due now, once each (no waiting); returns the outcomes.
    pub async fn run_once(&self) -> Result<Vec<(i64, Outcome)>, StoreError> {
        let due = self.store.due_deliveries(now_ms(), BATCH).await?;
        let mut out = Vec::with_capacity(due.len());
        for d in due {
            out.push((d.id, self.deliver(&d).await));
        }
        Ok(out)
    }

    async fn send(&self, d: &Delivery) -> Result<(), SendError> {
        match d.channel {
            Channel::Email => {
                let Some(sender) = &self.email else {
                    return Err(SendError::Transient(
                        "email delivery is not configured (invitations.email)".into(),
                    ));
                };
                let email = render::email(&self.cfg, sender.from(), d)
                    .map_err(|e| SendError::Undeliverable(e.to_string()))?;
                sender.send(&email).await
            }
            Channel::Sms => {
                let Some(sender) = &self.sms else {
                    return Err(SendError::Transient(
                        "SMS delivery is not configured (invitations.sms)".into(),
                    ));
                };
                let text = render::sms(&self.cfg, d);
                let req = SmsRequest {
                    to: &d.recipient,
                    text: &text,
                    invitation_id: &d.invitation_id,
                };
                sender.send(&req, &render::delivery_key(d)).await
            }
        }
    }

    /// One attempt at `d`, recorded in the store, the metrics and the log.
    pub async fn deliver(&self, d: &Delivery) -> Outcome {
        let channel = channel_name(d.channel);
        let mut done = d.attempts;
        if let Some(outcome) = self.settle(d, &mut done).await {
            return outcome;
        }
        let attempts = done.saturating_add(1);
        let now = now_ms();
        // Claim it right before sending: a revoke (or acceptance, or expiry) that was answered
        // after this batch was read must win over the send.
        match self.store.claim_delivery(d.id, now).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::info!(
                    delivery = d.id,
                    invitation = %d.invitation_id,
                    channel,
                    "invitation delivery skipped: the invitation is no longer pending"
                );
                if let Some(m) = &self.metrics {
                    m.invitation_delivery(channel, "skipped");
                }
                return Outcome::Skipped;
            }
            Err(e) => {
                // The store cannot be written, so a send could not be recorded either: wait.
                tracing::warn!(delivery = d.id, error = %e, "claiming an invitation delivery failed");
                let at = now.saturating_add(ms(backoff(
                    &self.cfg.retry,
                    1,
                    getrandom::u64().unwrap_or(0),
                )));
                // Nothing was sent; the next look waits this long.
                self.remember(
                    d.id,
                    Pending::Retry {
                        attempts: done,
                        at,
                        error: e.to_string(),
                    },
                );
                return Outcome::Retry {
                    at,
                    error: e.to_string(),
                };
            }
        }
        let result = if d.expires_at.is_some_and(|e| e <= now) {
            Err(SendError::Undeliverable("the invitation expired".into()))
        } else {
            self.send(d).await
        };
        let outcome = match result {
            Ok(()) => {
                self.mark_sent(d).await;
                tracing::info!(
                    delivery = d.id,
                    invitation = %d.invitation_id,
                    channel,
                    attempts,
                    "invitation delivered"
                );
                Outcome::Sent
            }
            Err(SendError::Undeliverable(error)) => self.give_up(d, attempts, error).await,
            Err(SendError::Transient(error)) => {
                let wait = backoff(&self.cfg.retry, attempts, getrandom::u64().unwrap_or(0));
                let at = now_ms().saturating_add(ms(wait));
                if d.expires_at.is_some_and(|e| at >= e) {
                    let error =
                        format!("the invitation expires before the next try; last error: {error}");
                    self.give_up(d, attempts, error).await
                } else {
                    if let Err(e) = self
                        .store
                        .delivery_retry(d.id, attempts, at, error.clone())
                        .await
                    {
                        tracing::warn!(delivery = d.id, error = %e, "recording a delivery retry failed");
                        self.remember(
                            d.id,
                            Pending::Retry {
                                attempts,
                                at,
                                error: error.clone(),
                            },
                        );
                    }
                    tracing::warn!(
                        delivery = d.id,
                        invitation = %d.invitation_id,
                        channel,
                        attempts,
                        retry_in_ms = ms(wait),
                        error = %error,
                        "invitation delivery failed; will retry"
                    );
                    Outcome::Retry { at, error }
                }
            }
        };
        if let Some(m) = &self.metrics {
            let label = match &outcome {
                Outcome::Sent => "sent",
                Outcome::Retry { .. } => "retry",
                Outcome::Failed { .. } => "failed",
                Outcome::Skipped => "skipped",
            };
            m.invitation_delivery(channel, label);
        }
        outcome
    }

    async fn give_up(&self, d: &Delivery, attempts: u32, error: String) -> Outcome {
        if let Err(e) = self.store.delivery_give_up(d.id, error.clone()).await {
            tracing::warn!(delivery = d.id, error = %e, "recording a given-up delivery failed");
            self.remember(
                d.id,
                Pending::GaveUp {
                    error: error.clone(),
                },
            );
        }
        tracing::warn!(
            delivery = d.id,
            invitation = %d.invitation_id,
            channel = channel_name(d.channel),
            attempts,
            error = %error,
            "invitation delivery given up"
        );
        Outcome::Failed { error }
    }

    /// Marks `d` sent, retrying the store a few times: until this commits, a restart would
    /// send the message again.
    async fn mark_sent(&self, d: &Delivery) {
        let mut wait = Duration::from_millis(50);
        for attempt in 1..=5 {
            match self.store.delivery_sent(d.id, now_ms()).await {
                Ok(()) => return,
                Err(e) if attempt == 5 => {
                    tracing::error!(
                        delivery = d.id,
                        error = %e,
                        "the relay accepted the message but marking it sent failed; it is not sent again by this process, and is marked once the store takes writes (a restart before that sends it again)"
                    );
                    self.remember(d.id, Pending::Sent);
                }
                Err(_) => {
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identifier::Kind;
    use crate::store::{DeliveryState, IdentifierType, NewInvitation};

    /// An email invitation for `who`, valid for a day.
    fn invite(who: &str) -> NewInvitation {
        NewInvitation {
            identifier: who.into(),
            identifier_type: IdentifierType::EmailAddress,
            public_metadata: serde_json::json!({}),
            redirect_url: None,
            expires_at: Some(now_ms() + 86_400_000),
            ignore_existing: false,
            deliver: Some(Channel::Email),
        }
    }

    /// A store in `dir` and a worker whose email relay is a closed port (any send is a
    /// `Retry`).
    fn closed_relay_worker(dir: &tempfile::TempDir) -> (Arc<Store>, Worker) {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let text = format!(
            "listen:\n  - addr: 127.0.0.1:0\nupstream: http://127.0.0.1:9\nstore: {{sqlite: {db}}}\ninvitations:\n  url: \"https://app.example.com/accept?token={{{{token}}}}\"\n  email: {{host: 127.0.0.1, port: {port}, tls: none, from: no-reply@acme.com, timeout: 2s}}\n",
            db = dir.path().join("s.db").display()
        );
        let cfg = crate::config::from_str(&text, &dir.path().join("c.yaml")).unwrap();
        let inv_cfg = cfg.invitations.clone().unwrap();
        assert!(inv_cfg.can_deliver(Kind::Email));
        let store = Arc::new(Store::open_sqlite(&dir.path().join("s.db")).unwrap());
        let worker = Worker::new(store.clone(), inv_cfg).unwrap();
        (store, worker)
    }

    /// An invitation whose delivery was read as due and then revoked is not sent: the claim
    /// fails, the delivery is given up, and the worker never reaches the relay (a closed port
    /// here, which would have made it a `Retry`).
    #[tokio::test]
    async fn a_delivery_revoked_after_its_batch_was_read_is_not_sent() {
        let dir = tempfile::tempdir().unwrap();
        let (store, worker) = closed_relay_worker(&dir);
        let made = store
            .create_invitations(vec![invite("late@acme.com")])
            .await
            .unwrap();
        let due = store.due_deliveries(now_ms(), 10).await.unwrap();
        assert_eq!(due.len(), 1);
        store.revoke_invitation(&made[0].id).await.unwrap();
        assert!(matches!(worker.deliver(&due[0]).await, Outcome::Skipped));
        let after = store.deliveries_of(&made[0].id).await.unwrap();
        assert_eq!(after[0].state, DeliveryState::Failed);
        assert_eq!(after[0].attempts, 0, "no attempt was made");
    }

    /// Outcomes the store could not record are kept: a delivery the relay accepted is
    /// marked sent once the store takes writes, without another send; a retry waits for its
    /// time; the worker's next look is due no later than that. The relay is a closed port, so
    /// any send would come back as a new `Retry` with another error.
    #[tokio::test]
    async fn an_unrecorded_outcome_is_recorded_later_and_never_repeated() {
        let dir = tempfile::tempdir().unwrap();
        let (store, worker) = closed_relay_worker(&dir);
        let made = store
            .create_invitations(vec![invite("sent@acme.com"), invite("later@acme.com")])
            .await
            .unwrap();
        let due = store.due_deliveries(now_ms(), 10).await.unwrap();
        assert_eq!(due.len(), 2);
        let later = now_ms() + 60_000;
        worker.remember(due[0].id, Pending::Sent);
        worker.remember(
            due[1].id,
            Pending::Retry {
                attempts: 1,
                at: later,
                error: "relay down".into(),
            },
        );
        assert!(worker.next_unrecorded(now_ms()).is_some_and(|t| t <= later));

        assert_eq!(worker.deliver(&due[0]).await, Outcome::Sent);
        let d0 = store.deliveries_of(&made[0].id).await.unwrap();
        assert_eq!(d0[0].state, DeliveryState::Sent);
        assert_eq!(d0[0].attempts, 0, "not sent again");

        assert_eq!(
            worker.deliver(&due[1]).await,
            Outcome::Retry {
                at: later,
                error: "relay down".into()
            }
        );
        let d1 = store.deliveries_of(&made[1].id).await.unwrap();
        assert_eq!(d1[0].state, DeliveryState::Pending);
        assert_eq!(d1[0].attempts, 1);
        assert!(store.due_deliveries(now_ms(), 10).await.unwrap().is_empty());
        assert_eq!(worker.next_unrecorded(now_ms()), None, "all recorded");

        // A held outcome whose row will not come back as due (its invitation revoked
        // meanwhile) is written at the next pass all the same, and no longer held.
        store.revoke_invitation(&made[1].id).await.unwrap();
        worker.remember(due[1].id, Pending::Sent);
        worker.flush_unrecorded().await;
        assert_eq!(worker.next_unrecorded(now_ms()), None, "still held");
        let d1 = store.deliveries_of(&made[1].id).await.unwrap();
        assert_eq!(
            d1[0].state,
            DeliveryState::Failed,
            "a given-up row stays so"
        );
    }

    #[test]
    fn backoff_doubles_caps_and_jitters_within_half() {
        let r = Retry {
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
        };
        // random = 0 → the lower half; random = u64::MAX-ish → within the bound.
        let lo = |n| backoff(&r, n, 0).as_millis();
        assert_eq!(
            [lo(1), lo(2), lo(3), lo(7), lo(8), lo(40)],
            [500, 1000, 2000, 30_000, 30_000, 30_000]
        );
        for n in 1..50 {
            for random in [0, 1, 7, 999, 1_000_000_007, u64::MAX] {
                let b = backoff(&r, n, random);
                let cap = r
                    .initial_backoff
                    .saturating_mul(1 << (n - 1).min(30))
                    .min(r.max_backoff);
                assert!(b <= cap && b >= cap / 2, "attempt {n}: {b:?} vs {cap:?}");
            }
        }
    }
}
