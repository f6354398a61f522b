//! Certificate watching: the parent directories of every certificate and key file are watched
//! (so in-place writes, rename-replace and Kubernetes secret symlink swaps are all seen), and
//! the stores re-read their files after `debounce` of quiet, on SIGHUP and every `interval`.
//! A broken or mismatched pair is logged by [`CertStore::reload`] and the last good one stays.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::trigger::Triggers;

use super::CertStore;

/// Runs until `stop` turns true. `interval` zero: no periodic re-read.
pub async fn run(
    stores: Vec<Arc<CertStore>>,
    debounce: Duration,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) {
    if stores.is_empty() {
        return;
    }
    let mut triggers = Triggers::new("certificates");
    loop {
        // Again before each wait: mends watches a directory swap or creation made stale.
        triggers.watch(stores.iter().flat_map(|s| s.watched_files()));
        if triggers.next(&mut stop, debounce, interval).await.is_none() {
            break;
        }
        let s = stores.clone();
        let done = tokio::task::spawn_blocking(move || {
            for store in &s {
                store.reload();
            }
        })
        .await;
        if let Err(e) = done {
            tracing::error!("certificate reload task failed: {e}");
        }
    }
}
