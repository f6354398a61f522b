//! When to re-read files: a change in a watched directory (notify, non-recursive, on parent
//! directories so in-place writes, rename-replace and Kubernetes symlink swaps are all seen)
//! after `debounce` of quiet, SIGHUP, or every `interval`. Shared by the config/list reloader
//! and the certificate watcher; it reads no files itself and imports nothing of idgate.

use std::path::PathBuf;
use std::time::Duration;

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::{mpsc, watch};

/// Why [`Triggers::next`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// Files changed and then stayed quiet for the debounce time.
    Changed,
    /// SIGHUP.
    Hangup,
    /// The periodic re-read.
    Periodic,
}

/// File events, SIGHUP and the periodic timer, for one consumer.
pub struct Triggers {
    events: mpsc::UnboundedReceiver<()>,
    watcher: Option<RecommendedWatcher>,
    watching: Vec<PathBuf>,
    sighup: Option<Signal>,
}

impl Triggers {
    /// A watcher with nothing watched yet; `what` names the consumer in log lines.
    pub fn new(what: &str) -> Triggers {
        let (tx, events) = mpsc::unbounded_channel::<()>();
        let watcher = match notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
            if ev.is_ok() {
                let _ = tx.send(());
            }
        }) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::error!(
                    "{what}: file watching unavailable ({e}); relying on SIGHUP and the periodic re-read"
                );
                None
            }
        };
        Triggers {
            events,
            watcher,
            watching: Vec::new(),
            sighup: signal(SignalKind::hangup()).ok(),
        }
    }

    /// Starts watching the directories not watched yet.
    pub fn watch(&mut self, dirs: impl IntoIterator<Item = PathBuf>) {
        let Some(w) = self.watcher.as_mut() else {
            return;
        };
        for dir in dirs {
            if self.watching.contains(&dir) {
                continue;
            }
            match w.watch(&dir, RecursiveMode::NonRecursive) {
                Ok(()) => tracing::debug!(dir = %dir.display(), "watching"),
                Err(e) => tracing::warn!(dir = %dir.display(), "cannot watch: {e}"),
            }
            self.watching.push(dir);
        }
    }

    /// Waits for the next reason to re-read; `None` once `stop` turns true. `interval` zero:
    /// no periodic re-read.
    pub async fn next(
        &mut self,
        stop: &mut watch::Receiver<bool>,
        debounce: Duration,
        interval: Duration,
    ) -> Option<Cause> {
        let periodic = async {
            if interval.is_zero() {
                std::future::pending::<()>().await
            } else {
                tokio::time::sleep(interval).await
            }
        };
        let sighup = &mut self.sighup;
        let hup = async {
            match sighup.as_mut() {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        let events = &mut self.events;
        tokio::select! {
            _ = stopped(stop) => None,
            Some(()) = events.recv() => {
                // Wait for quiet: editors and deploy tools write in several steps.
                loop {
                    tokio::select! {
                        _ = stopped(stop) => return None,
                        Some(()) = events.recv() => continue,
                        _ = tokio::time::sleep(debounce) => return Some(Cause::Changed),
                    }
                }
            }
            _ = hup => Some(Cause::Hangup),
            _ = periodic => Some(Cause::Periodic),
        }
    }
}

/// Resolves once `stop` is true (or its sender is gone).
pub async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
