//! Invitation acceptance and expiry (issue #9), the two background tasks that keep
//! invitation statuses true.
//!
//! - [`accept`]: the proxy sends the canonical identifiers of allowed, enforced `sign_up`
//!   requests the upstream answered 2xx (`Proxy::with_acceptance`; the proxy never imports the
//!   store); each one marks that identifier's pending, not past-due invitations `accepted`.
//!   Most sign-ups were never invited, so a [`PendingFilter`] (the identifiers with a pending
//!   invitation, re-read only when [`Store::invitations_version`] moved) keeps them away: the
//!   proxy asks it synchronously before handing an identifier over ([`PendingFilter::wanted`]),
//!   so a sign-up nobody was invited to costs neither a channel send (a wake-up of this task)
//!   nor a store write; only an invited identifier, or one checked while the filter is being
//!   re-read, travels.
//! - [`expire`]: at start and every [`SWEEP_EVERY`], pending invitations past `expires_at`
//!   become `expired` (and their queued deliveries are given up). Listings compute the status
//!   at read time too, so a past-due invitation never reads as pending between sweeps.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use tokio::sync::{mpsc, watch};

use crate::observe::Metrics;
use crate::store::Store;
use crate::trigger::stopped;

/// Capacity of the proxy → acceptance channel; beyond it acceptances are dropped (counted).
pub const QUEUE: usize = 4096;

/// How often the expiry sweep runs.
pub const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// The channel the proxy sends accepted sign-ups into, and its receiving end for [`accept`].
pub fn channel() -> (mpsc::Sender<String>, mpsc::Receiver<String>) {
    mpsc::channel(QUEUE)
}

/// The identifiers that have a pending invitation, as of a store version. It may hold more
/// than the truth (revoked, accepted or expired since) — those cost one write that finds
/// nothing — but never less: invitations are added before the version moves. Cheap to clone:
/// the proxy's pre-check and the acceptance task share one.
#[derive(Debug, Default, Clone)]
pub struct PendingFilter {
    seen: Arc<ArcSwapOption<(u64, HashSet<String>)>>,
}

impl PendingFilter {
    /// Synchronous and lock-free (the proxy's pre-check): false only when `identifier`
    /// certainly has no pending invitation — the set was read at the store's current version
    /// and does not hold it. Not read yet, or read at an older version: true (the task
    /// re-reads it).
    pub fn wanted(&self, store: &Store, identifier: &str) -> bool {
        let version = store.invitations_version();
        match &*self.seen.load() {
            Some(seen) if seen.0 == version => seen.1.contains(identifier),
            _ => true,
        }
    }

    /// Re-reads the set when the store's version moved since it was read. False when the
    /// store could not be read (the filter then says true to everything).
    pub async fn refresh(&self, store: &Store) -> bool {
        // The version is read before the set, so a set read concurrently with a new
        // invitation is re-read next time.
        let version = store.invitations_version();
        if self
            .seen
            .load()
            .as_ref()
            .is_some_and(|seen| seen.0 == version)
        {
            return true;
        }
        match store.pending_invitation_identifiers().await {
            Ok(set) => {
                self.seen.store(Some(Arc::new((version, set))));
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "reading pending invitations failed");
                self.seen.store(None);
                false
            }
        }
    }

    /// False only when `identifier` certainly has no pending invitation, after re-reading the
    /// set if the store's version moved. A store that cannot be read answers true (the write
    /// decides).
    pub async fn may_be_invited(&self, store: &Store, identifier: &str) -> bool {
        !self.refresh(store).await || self.wanted(store, identifier)
    }
}

/// Marks invitations accepted as identifiers arrive, until `stop` or the proxy is gone.
/// `filter` is the one the proxy pre-checks with; it is read here at start, so the proxy's
/// pre-check works from the first request.
pub async fn accept(
    store: Arc<Store>,
    mut rx: mpsc::Receiver<String>,
    filter: PendingFilter,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
) {
    filter.refresh(&store).await;
    loop {
        let identifier = tokio::select! {
            got = rx.recv() => match got {
                Some(i) => i,
                None => return,
            },
            () = stopped(&mut stop) => return,
        };
        if !filter.may_be_invited(&store, &identifier).await {
            metrics.invitation_acceptance("none");
            continue;
        }
        match store.accept_invitations(&identifier).await {
            Ok(0) => metrics.invitation_acceptance("none"),
            Ok(n) => {
                metrics.invitation_acceptance("accepted");
                tracing::info!(
                    invitations = n,
                    "invitation accepted by a forwarded sign-up"
                );
            }
            Err(e) => {
                metrics.invitation_acceptance("error");
                tracing::warn!(error = %e, "could not mark an invitation accepted");
            }
        }
    }
}

/// The expiry sweep: now, then every `every`, until `stop`.
pub async fn expire(store: Arc<Store>, every: Duration, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stopped(&mut stop) => return,
        }
        match store.expire_invitations().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(invitations = n, "invitations expired"),
            Err(e) => tracing::warn!(error = %e, "invitation expiry sweep failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::store::{IdentifierType, InvitationStatus, NewInvitation};

    /// Sign-ups nobody was invited to never reach the store's writer; an invited one does
    /// and is accepted, including one invited after the filter was first read.
    #[tokio::test]
    async fn only_invited_identifiers_cost_a_store_write() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open_sqlite(&dir.path().join("s.db")).unwrap());
        let accepts = Arc::new(AtomicUsize::new(0));
        let counted = accepts.clone();
        store.set_op_observer(Arc::new(move |op, _| {
            if op == "accept_invitations" {
                counted.fetch_add(1, Ordering::SeqCst);
            }
        }));
        let invite = |who: &str| NewInvitation {
            identifier: who.to_owned(),
            identifier_type: IdentifierType::EmailAddress,
            public_metadata: serde_json::json!({}),
            redirect_url: None,
            expires_at: None,
            ignore_existing: false,
            deliver: None,
        };
        let first = store
            .create_invitations(vec![invite("a@x.com")])
            .await
            .unwrap();

        let (tx, rx) = channel();
        let (_stop_tx, stop) = watch::channel(false);
        let filter = PendingFilter::default();
        // Unread: the pre-check lets everything through to the task.
        assert!(filter.wanted(&store, "nobody@x.com"));
        let task = tokio::spawn(accept(
            store.clone(),
            rx,
            filter.clone(),
            Arc::new(Metrics::new()),
            stop,
        ));
        // Sent without the proxy's pre-check: the task filters on its own.
        for who in ["nobody@x.com", "other@x.com", "a@x.com"] {
            tx.send(who.to_owned()).await.unwrap();
        }
        // Invited after the filter was read: the version moved, so it is re-read.
        let late = store
            .create_invitations(vec![invite("late@x.com")])
            .await
            .unwrap();
        tx.send("late@x.com".to_owned()).await.unwrap();
        drop(tx);
        task.await.unwrap();
        // Read at the current version now: the pre-check refuses the uninvited without the
        // task, and passes an invited one.
        assert!(!filter.wanted(&store, "nobody@x.com"));
        let third = store
            .create_invitations(vec![invite("third@x.com")])
            .await
            .unwrap();
        assert!(
            filter.wanted(&store, "nobody@x.com"),
            "a moved version lets everything through until the set is re-read"
        );
        assert!(filter.refresh(&store).await);
        assert!(filter.wanted(&store, "third@x.com"));
        assert!(!filter.wanted(&store, "nobody@x.com"));
        assert_eq!(third.len(), 1);

        assert_eq!(
            accepts.load(Ordering::SeqCst),
            2,
            "only the two invited sign-ups wrote"
        );
        for id in [&first[0].id, &late[0].id] {
            let got = store.get_invitation(id).await.unwrap().unwrap();
            assert_eq!(got.status, InvitationStatus::Accepted);
        }
    }
}
