//! The only writer of the snapshot: reads the config and list files, compiles, publishes.
//!
//! Triggers: a change in the parent directory of the config file or of any list file (notify;
//! parent directories so that editors' rename-replace and Kubernetes ConfigMap `..data`
//! symlink swaps are seen), debounced; SIGHUP; and a slow periodic re-read in case an event
//! was lost. Content that did not change is skipped. A config that fails to parse, validate or
//! compile — or that changes a setting that only a restart can change — is rejected and the
//! last good snapshot stays in force. Nothing here can take the proxy down or open the gate.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use crate::config::{self, Config, ConfigError};
use crate::lists::{ListKind, MatcherBuilder};
use crate::snapshot::{self, CompileError, Inputs, ListFile, Snapshot, SnapshotHandle, StoreView};
use crate::store::Change;
use crate::trigger::{Cause, Triggers};

/// Why a reload (or the first load) failed.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{path}: cannot read list file: {source}")]
    ListFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Compile { path: PathBuf, source: CompileError },
    #[error(
        "{path}: {setting} changed, which needs a restart; the reload was rejected and the running configuration kept"
    )]
    NeedsRestart {
        path: PathBuf,
        setting: &'static str,
    },
}

/// What one reload did.
#[derive(Debug)]
pub enum Outcome {
    Applied { generation: u64, warnings: usize },
    Unchanged,
    Rejected(ReloadError),
}

/// Reads the config file and every list file it names; `store` is attached as is.
pub fn read_inputs(config_path: &Path, store: StoreView) -> Result<(Inputs, u64), ReloadError> {
    let text = std::fs::read_to_string(config_path).map_err(|source| {
        ReloadError::Config(ConfigError::Io {
            path: config_path.to_path_buf(),
            source,
        })
    })?;
    let config = config::from_str(&text, config_path)?;
    let mut hasher = DefaultHasher::new();
    text.hash(&mut hasher);
    let mut list_files = Vec::new();
    for (list, paths) in [
        (ListKind::Allow, &config.lists.files.allow),
        (ListKind::Block, &config.lists.files.block),
    ] {
        for path in paths {
            // Hashed here, parsed (streamed again) only if the content changed.
            let file = ListFile::read(path, list).map_err(|source| ReloadError::ListFile {
                path: path.clone(),
                source,
            })?;
            path.hash(&mut hasher);
            file.hash.hash(&mut hasher);
            list_files.push(file);
        }
    }
    Ok((
        Inputs {
            config_path: config_path.to_path_buf(),
            config,
            list_files,
            store,
        },
        hasher.finish(),
    ))
}

/// Reads and compiles in one step (start-up, `idgate check`).
pub fn load(
    config_path: &Path,
    store: StoreView,
    generation: u64,
) -> Result<(Inputs, Snapshot, u64), ReloadError> {
    let (inputs, fingerprint) = read_inputs(config_path, store)?;
    let snapshot =
        snapshot::compile(&inputs, generation).map_err(|source| ReloadError::Compile {
            path: config_path.to_path_buf(),
            source,
        })?;
    Ok((inputs, snapshot, fingerprint))
}

/// Settings that only a restart can change.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fixed {
    listen: Vec<SocketAddr>,
    workers: Option<usize>,
    admin: SocketAddr,
    header_read: Duration,
    upstream_connect: Duration,
    shutdown_grace: Duration,
    /// TLS settings are read once at start; certificate *contents* reload through `tls::watch`.
    listen_tls: Vec<Option<config::ServerTls>>,
    admin_tls: Option<config::ServerTls>,
    upstream_tls: Option<config::UpstreamTls>,
    tls_handshake: Duration,
    /// The audit log's output is opened once at start.
    audit: config::Audit,
    /// The invitation delivery worker reads its settings once at start.
    invitations: Option<config::InvitationsConfig>,
    /// The database is opened once at start.
    store: PathBuf,
    /// The proxies are built with their request-id settings.
    request_id: config::RequestId,
}

impl Fixed {
    fn of(c: &Config) -> Fixed {
        Fixed {
            listen: c.listen.iter().map(|l| l.addr).collect(),
            workers: c.workers,
            admin: c.admin.listen,
            header_read: c.timeouts.header_read,
            upstream_connect: c.timeouts.upstream_connect,
            shutdown_grace: c.timeouts.shutdown_grace,
            listen_tls: c.listen.iter().map(|l| l.tls.clone()).collect(),
            admin_tls: c.admin.tls.clone(),
            upstream_tls: c.upstream_tls.clone(),
            tls_handshake: c.timeouts.tls_handshake,
            audit: c.audit.clone(),
            invitations: c.invitations.clone(),
            store: c.store.sqlite.clone(),
            request_id: c.request_id.clone(),
        }
    }

    fn first_difference(&self, other: &Fixed) -> Option<&'static str> {
        if self.listen != other.listen {
            Some("listen")
        } else if self.workers != other.workers {
            Some("workers")
        } else if self.admin != other.admin {
            Some("admin.listen")
        } else if self.header_read != other.header_read {
            Some("timeouts.header_read")
        } else if self.upstream_connect != other.upstream_connect {
            Some("timeouts.upstream_connect")
        } else if self.shutdown_grace != other.shutdown_grace {
            Some("timeouts.shutdown_grace")
        } else if self.listen_tls != other.listen_tls {
            Some("listen[].tls")
        } else if self.admin_tls != other.admin_tls {
            Some("admin.tls")
        } else if self.upstream_tls != other.upstream_tls {
            Some("upstream_tls")
        } else if self.tls_handshake != other.tls_handshake {
            Some("timeouts.tls_handshake")
        } else if self.audit != other.audit {
            Some("audit")
        } else if self.invitations != other.invitations {
            Some("invitations")
        } else if self.store != other.store {
            Some("store.sqlite")
        } else if self.request_id != other.request_id {
            Some("request_id")
        } else {
            None
        }
    }
}

/// The last reload's result, for status reporting.
#[derive(Debug, Clone)]
pub struct Status {
    pub generation: u64,
    pub applied_at: SystemTime,
    pub last_error: Option<String>,
}

struct State {
    store: StoreView,
    fingerprint: u64,
    generation: u64,
    watched: Vec<PathBuf>,
    debounce: Duration,
    interval: Duration,
    status: Status,
}

impl State {
    /// Adds `files` not watched yet to the files whose changes trigger a reload.
    fn watch(&mut self, files: impl IntoIterator<Item = PathBuf>) {
        for file in files {
            if !self.watched.contains(&file) {
                self.watched.push(file);
            }
        }
    }
}

/// Publishes snapshots into one handle.
pub struct Reloader {
    config_path: PathBuf,
    handle: SnapshotHandle,
    fixed: Fixed,
    state: Mutex<State>,
    /// Counts reload outcomes (`idgate_reloads_total`) once the gate installs its metrics.
    metrics: std::sync::OnceLock<Arc<crate::observe::Metrics>>,
}

impl Reloader {
    /// Starts from the inputs the first snapshot was built from.
    pub fn new(
        config_path: &Path,
        inputs: &Inputs,
        fingerprint: u64,
        handle: SnapshotHandle,
    ) -> Self {
        let generation = handle.load().generation;
        let fingerprint = if compiled_as_hashed(inputs, &handle.load()) {
            fingerprint
        } else {
            0
        };
        Reloader {
            config_path: config_path.to_path_buf(),
            fixed: Fixed::of(&inputs.config),
            state: Mutex::new(State {
                store: inputs.store.clone(),
                fingerprint,
                generation,
                watched: watched_files(inputs),
                debounce: inputs.config.reload.debounce,
                interval: inputs.config.reload.interval.unwrap_or(Duration::ZERO),
                status: Status {
                    generation,
                    applied_at: SystemTime::now(),
                    last_error: None,
                },
            }),
            handle,
            metrics: std::sync::OnceLock::new(),
        }
    }

    /// Counts reload outcomes into `metrics` from now on (the first call wins).
    pub fn set_metrics(&self, metrics: Arc<crate::observe::Metrics>) {
        let _ = self.metrics.set(metrics);
    }

    /// The config file this reloader reads.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// The status of the last reload.
    pub fn status(&self) -> Status {
        self.lock().status.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Re-reads everything now; applies it if it changed and is valid. Blocking (file I/O and
    /// compilation): call it from `spawn_blocking` on a runtime.
    pub fn reload(&self) -> Outcome {
        let started = std::time::Instant::now();
        let outcome = self.try_reload();
        self.record(outcome, started)
    }

    /// A reload that counts and logs nothing when nothing changed: what the watcher does once
    /// it watches, for changes made while the gate was starting (before anything watched).
    fn catch_up(&self) -> Outcome {
        let started = std::time::Instant::now();
        match self.try_reload() {
            Outcome::Unchanged => Outcome::Unchanged,
            outcome => self.record(outcome, started),
        }
    }

    /// Counts, logs and reports a reload's outcome.
    fn record(&self, outcome: Outcome, started: std::time::Instant) -> Outcome {
        let elapsed_ms = started.elapsed().as_millis() as u64;
        if let Some(m) = self.metrics.get() {
            m.reload(match &outcome {
                Outcome::Applied { .. } => "applied",
                Outcome::Unchanged => "unchanged",
                Outcome::Rejected(_) => "rejected",
            });
        }
        let mut st = self.lock();
        match &outcome {
            Outcome::Applied {
                generation,
                warnings,
            } => {
                tracing::info!(generation, warnings, elapsed_ms, "configuration reloaded");
                st.status = Status {
                    generation: *generation,
                    applied_at: SystemTime::now(),
                    last_error: None,
                };
            }
            Outcome::Unchanged => tracing::debug!("configuration unchanged"),
            Outcome::Rejected(e) => {
                tracing::error!("reload rejected, keeping the last good configuration: {e}");
                st.status.last_error = Some(e.to_string());
            }
        }
        outcome
    }

    /// Applies committed store changes to the live gate. Returns once the gate enforces them
    /// (the admin API answers only after this: read-your-writes).
    pub fn apply_store_changes(&self, changes: &[Change]) {
        let mut st = self.lock();
        let lists = st.store.lists.clone();
        let mut rest = changes;
        while let Some((change, tail)) = rest.split_first() {
            rest = tail;
            match change {
                Change::Added(e) | Change::Removed(e) => {
                    // A run of single-entry changes to one list (a bulk append or removal) is
                    // parsed first, then applied under one write lock: the gate sees all of it
                    // or none, and lookups wait only for the hash-map updates.
                    let list = e.list;
                    let mut run = vec![entry_change(change)];
                    while let Some((c, tail)) =
                        rest.split_first().filter(|(c, _)| same_list_entry(c, list))
                    {
                        run.push(entry_change(c));
                        rest = tail;
                    }
                    let mut m = lists.write(list);
                    for (added, entry) in run.into_iter().flatten() {
                        if added {
                            m.insert(entry, snapshot::store_source());
                        } else {
                            m.remove(&entry);
                        }
                    }
                }
                Change::Replaced { list, entries } => {
                    let mut b = MatcherBuilder::new(*list);
                    for e in entries {
                        if let Some(entry) = snapshot::stored_entry(e) {
                            b.add(entry, snapshot::store_source());
                        }
                    }
                    // Built outside the lock; swapped in one step: never half a list.
                    let m = b.build();
                    *st.store.lists.write(*list) = m;
                }
                Change::Restrictions(o) => {
                    st.store.restrictions = *o;
                    st.generation += 1;
                    let next = self
                        .handle
                        .load()
                        .with_store_restrictions(*o, st.generation);
                    self.handle.store(Arc::new(next));
                    st.status.generation = st.generation;
                }
            }
        }
    }

    fn try_reload(&self) -> Outcome {
        // Another reload published while this one compiled: the files are read again (three
        // tries; a reload that kept winning read them later than this one).
        for _ in 0..3 {
            if let Some(outcome) = self.try_reload_once() {
                return outcome;
            }
        }
        Outcome::Unchanged
    }

    /// One attempt; `None` when another publication overtook it.
    fn try_reload_once(&self) -> Option<Outcome> {
        let store = self.lock().store.clone();
        let started = std::time::Instant::now();
        let (inputs, fingerprint) = match read_inputs(&self.config_path, store) {
            Ok(x) => x,
            Err(e) => {
                // A list file the new config names but that cannot be read yet (not created
                // yet, say) is watched from now on: creating it sets off the next reload.
                if let ReloadError::ListFile { path, .. } = &e {
                    self.lock().watch([path.clone()]);
                }
                return Some(Outcome::Rejected(e));
            }
        };
        let read = started.elapsed();
        let (mut generation, in_force) = {
            let mut st = self.lock();
            if st.fingerprint == fingerprint && st.store.restrictions == inputs.store.restrictions {
                // The files are what is in force: an error from a version since put right
                // no longer stands.
                st.status.last_error = None;
                return Some(Outcome::Unchanged);
            }
            (st.generation + 1, st.fingerprint)
        };
        if let Some(setting) = self.fixed.first_difference(&Fixed::of(&inputs.config)) {
            return Some(Outcome::Rejected(ReloadError::NeedsRestart {
                path: self.config_path.clone(),
                setting,
            }));
        }
        let previous = self.handle.load_full();
        let snap = match snapshot::compile_reusing(&inputs, generation, Some(&previous)) {
            Ok(s) => s,
            Err(source) => {
                return Some(Outcome::Rejected(ReloadError::Compile {
                    path: self.config_path.clone(),
                    source,
                }));
            }
        };
        tracing::debug!(
            read_ms = read.as_millis() as u64,
            compile_ms = (started.elapsed() - read).as_millis() as u64,
            "reload: inputs read and hashed, snapshot compiled"
        );
        // New warnings only: those of unchanged files were logged when they were read (the
        // status API reports them all).
        let known: std::collections::HashSet<&str> =
            previous.warnings.iter().map(String::as_str).collect();
        for w in snap.warnings.iter().filter(|w| !known.contains(w.as_str())) {
            tracing::warn!("{w}");
        }
        let warnings = snap.warnings.len();
        let mut st = self.lock();
        // Something was published while this compiled. Another reload: its files may be
        // newer, so they are read again. Only a restrictions change (the admin API): this
        // snapshot takes the current restrictions, as that change did.
        let mut snap = snap;
        if st.generation >= generation || st.store.restrictions != inputs.store.restrictions {
            if st.fingerprint != in_force {
                return None;
            }
            generation = st.generation + 1;
            snap = snap.with_store_restrictions(st.store.restrictions, generation);
        }
        // A list file is read twice: hashed here, then streamed again to compile it. If it
        // changed in between (rewritten in place), what was compiled is not what was hashed:
        // no fingerprint is kept, so the next reload compiles it again even if the file is
        // then back to the content hashed here.
        let as_hashed = compiled_as_hashed(&inputs, &snap);
        self.handle.store(Arc::new(snap));
        st.fingerprint = if as_hashed { fingerprint } else { 0 };
        st.generation = generation;
        st.debounce = inputs.config.reload.debounce;
        st.interval = inputs.config.reload.interval.unwrap_or(Duration::ZERO);
        // The files of the config in force (and no longer those a previous one named).
        st.watched = watched_files(&inputs);
        Some(Outcome::Applied {
            generation,
            warnings,
        })
    }
}

/// Whether every list file of `snap` was compiled from the content `inputs` hashed (see
/// `try_reload`).
fn compiled_as_hashed(inputs: &Inputs, snap: &Snapshot) -> bool {
    inputs.list_files.iter().all(|f| {
        snap.config_list(f.list)
            .file(&f.path)
            .is_none_or(|part| part.hash == f.hash)
    })
}

/// True for an `Added`/`Removed` change of `list`.
fn same_list_entry(c: &Change, list: ListKind) -> bool {
    matches!(c, Change::Added(e) | Change::Removed(e) if e.list == list)
}

/// The list entry of an `Added` (`true`) or `Removed` (`false`) change.
fn entry_change(c: &Change) -> Option<(bool, crate::lists::Entry)> {
    match c {
        Change::Added(e) => snapshot::stored_entry(e).map(|x| (true, x)),
        Change::Removed(e) => snapshot::stored_entry(e).map(|x| (false, x)),
        _ => None,
    }
}

/// The files whose changes trigger a reload: the config file and every list file.
fn watched_files(inputs: &Inputs) -> Vec<PathBuf> {
    let mut files = vec![inputs.config_path.clone()];
    files.extend(inputs.list_files.iter().map(|f| f.path.clone()));
    files
}

/// Runs the triggers until `stop` turns true: file events (debounced), SIGHUP, the interval.
pub async fn run(reloader: Arc<Reloader>, mut stop: watch::Receiver<bool>) {
    let mut triggers = Triggers::new("config reload");
    let mut first = true;
    loop {
        let (files, debounce, interval) = {
            let st = reloader.lock();
            (st.watched.clone(), st.debounce, st.interval)
        };
        triggers.watch(files);
        if std::mem::take(&mut first) {
            // Files changed between start-up's reads and the watches now set would otherwise
            // wait for the next event.
            let r = reloader.clone();
            if let Err(e) = tokio::task::spawn_blocking(move || r.catch_up()).await {
                tracing::error!("reload task failed: {e}");
            }
            continue;
        }
        match triggers.next(&mut stop, debounce, interval).await {
            None => return,
            Some(Cause::Hangup) => tracing::info!("SIGHUP: reloading"),
            Some(_) => {}
        }
        let r = reloader.clone();
        if let Err(e) = tokio::task::spawn_blocking(move || r.reload()).await {
            tracing::error!("reload task failed: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A list file rewritten between the read that hashes it and the one that compiles it:
    /// the snapshot holds content the hash does not describe, so no fingerprint is kept.
    #[test]
    fn a_file_changed_between_hashing_and_compiling_is_noticed() {
        let text = "listen: [{ addr: 127.0.0.1:0 }]\nupstream: http://127.0.0.1:1\n";
        let config = config::from_str(text, Path::new("t.yaml")).unwrap();
        let whole = ListFile::from_text("b.txt", ListKind::Block, "b@x.com\nc@x.com\n");
        let mut inputs = Inputs {
            config_path: "t.yaml".into(),
            config,
            list_files: vec![whole.clone()],
            store: StoreView::default(),
        };
        let snap = snapshot::compile(&inputs, 1).unwrap();
        assert!(compiled_as_hashed(&inputs, &snap));
        // Hashed whole, compiled cut short.
        let mut torn = ListFile::from_text("b.txt", ListKind::Block, "b@x.com\n");
        torn.hash = whole.hash;
        inputs.list_files = vec![torn];
        let snap = snapshot::compile(&inputs, 2).unwrap();
        assert!(!compiled_as_hashed(&inputs, &snap));
    }
}
