//! Certificate watching: the parent directories of every certificate and key file are watched
//! (so in-place writes, rename-replace and Kubernetes secret symlink swaps are all seen), and
//! the stores re-read their files after `debounce` of quiet, on SIGHUP and every `interval`.
//! A broken or mismatched pair is logged by [`CertStore::reload`] and the last good one stays.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::{mpsc, watch};

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
    let (tx, mut rx) = mpsc::unbounded_channel::<()>();
    let watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        if ev.is_ok() {
            let _ = tx.send(());
        }
    });
    // Kept alive for the loop's lifetime: dropping it stops the events.
    let _watcher = match watcher {
        Ok(mut w) => {
            let mut dirs: Vec<PathBuf> = Vec::new();
            for s in &stores {
                for d in s.watched_dirs() {
                    if !dirs.contains(&d) {
                        dirs.push(d);
                    }
                }
            }
            for dir in &dirs {
                match w.watch(dir, RecursiveMode::NonRecursive) {
                    Ok(()) => tracing::debug!(dir = %dir.display(), "watching certificates"),
                    Err(e) => tracing::warn!(dir = %dir.display(), "cannot watch: {e}"),
                }
            }
            Some(w)
        }
        Err(e) => {
            tracing::error!(
                "certificate watching unavailable ({e}); relying on SIGHUP and the periodic re-read"
            );
            None
        }
    };
    let mut sighup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    loop {
        let periodic = async {
            if interval.is_zero() {
                std::future::pending::<()>().await
            } else {
                tokio::time::sleep(interval).await
            }
        };
        let hup = async {
            match sighup.as_mut() {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = stopped(&mut stop) => return,
            Some(()) = rx.recv() => {
                loop {
                    tokio::select! {
                        _ = stopped(&mut stop) => return,
                        Some(()) = rx.recv() => continue,
                        _ = tokio::time::sleep(debounce) => break,
                    }
                }
            }
            _ = hup => {}
            _ = periodic => {}
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

/// Resolves once `stop` is true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
