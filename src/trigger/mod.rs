//! When to re-read files: a change to a watched file (notify, non-recursive, on the files'
//! parent directories so in-place writes, rename-replace and Kubernetes symlink swaps are all
//! seen; a directory reached through a symlink is watched again when the symlink is swapped,
//! and a missing one through its nearest existing ancestor) after `debounce` of quiet,
//! SIGHUP, or every `interval`. Shared by the config/list
//! reloader and the certificate watcher; it reads no files itself and imports nothing of
//! idgate.
//!
//! Only events that may concern a watched file count: one naming a watched file, a Kubernetes
//! atomic-writer path (`..data`, `..2026_…`), a directory or a symlink (a swap a watched path
//! may go through), or one without a path (events were lost). Other files in the same
//! directory — a log, an audit file, a database — never set off a re-read: each would cost a
//! read and hash of every list file. A directory watched only on the way to a watched one
//! (the parent of a symlink, the ancestor of a missing directory) counts only for that one
//! name.

use std::collections::HashSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, EventKindMask, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::{mpsc, watch};

/// The longest a stream of file events can postpone a re-read, in debounce periods.
pub const MAX_DEBOUNCE_FACTOR: u32 = 10;

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

/// A directory asked to be watched, and what became of it.
struct Watched {
    path: PathBuf,
    /// The directory the path led to when it was watched (device, inode): a path through a
    /// symlink that now leads elsewhere is watched again.
    id: Option<(u64, u64)>,
    /// Whether the watch was set (a failed one is tried again, and reported once).
    ok: bool,
}

/// Which events may concern a watched file (see [`concerns`]).
#[derive(Debug, Default)]
struct Scope {
    /// File names of the watched files.
    names: HashSet<OsString>,
    /// The directories the watched files are in.
    own: HashSet<PathBuf>,
    /// Other directories watched, each for the names in it that matter: a symlink on the way
    /// to an own directory, or the next step of the path to one that does not exist yet.
    ancestors: std::collections::HashMap<PathBuf, HashSet<OsString>>,
}

/// File events, SIGHUP and the periodic timer, for one consumer.
pub struct Triggers {
    events: mpsc::UnboundedReceiver<()>,
    watcher: Option<RecommendedWatcher>,
    /// Directories watched.
    watching: Vec<Watched>,
    /// What events count (read by the watcher's thread).
    scope: Arc<RwLock<Scope>>,
    /// Events the watcher delivered, relevant or not.
    delivered: Arc<AtomicU64>,
    sighup: Option<Signal>,
}

impl Triggers {
    /// A watcher with nothing watched yet; `what` names the consumer in log lines.
    pub fn new(what: &str) -> Triggers {
        let (tx, events) = mpsc::unbounded_channel::<()>();
        let scope: Arc<RwLock<Scope>> = Arc::default();
        let watched = scope.clone();
        let delivered = Arc::new(AtomicU64::new(0));
        let counted = delivered.clone();
        let handler = move |ev: notify::Result<notify::Event>| {
            counted.fetch_add(1, Ordering::Relaxed);
            // An error from the watcher may mean lost events: re-read to be safe.
            let relevant = match &ev {
                Ok(ev) => {
                    is_change(&ev.kind) && (ev.need_rescan() || concerns(&ev.paths, &watched))
                }
                Err(_) => true,
            };
            if relevant {
                let _ = tx.send(());
            }
        };
        // Changes only: no open events (nor, unlike notify 9's default, read-only closes) are
        // asked of the kernel, so a file read often in a watched directory (a page served
        // from it, say) costs nothing.
        let config = notify::Config::default()
            .with_event_kinds(EventKindMask::CORE | EventKindMask::ACCESS_CLOSE);
        let watcher = match RecommendedWatcher::new(handler, config) {
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
            scope,
            delivered,
            sighup: signal(SignalKind::hangup()).ok(),
        }
    }

    /// Events the file watcher has delivered so far, whether they concerned a watched file or
    /// not (what a watched directory's other traffic costs).
    pub fn events_delivered(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }

    /// Watches `files` through their parent directories. Called again before each wait
    /// with every file to watch, it also mends what changed since: a directory reached
    /// through a symlink that now leads elsewhere (git-sync, a release directory swapped) is
    /// watched again, so is the parent of each such symlink (for that name only: its swap is
    /// the event), a directory that does not exist yet is watched through its nearest
    /// existing ancestor (for the next name on the path), a failed watch is tried again, and
    /// watches no longer needed are dropped.
    pub fn watch(&mut self, files: impl IntoIterator<Item = PathBuf>) {
        let Some(w) = self.watcher.as_mut() else {
            return;
        };
        let mut scope = Scope::default();
        for file in files {
            if let Some(name) = file.file_name() {
                scope.names.insert(name.to_os_string());
            }
            let dir = parent_dir(&file);
            for (point, name) in watch_points(&dir) {
                match name {
                    None => {
                        scope.own.insert(point);
                    }
                    Some(n) => {
                        scope.ancestors.entry(point).or_default().insert(n);
                    }
                }
            }
        }
        let wanted: Vec<PathBuf> = scope
            .own
            .iter()
            .chain(scope.ancestors.keys())
            .cloned()
            .collect();
        // The new scope joins the old one before any new watch is set: an event from a
        // directory watched a moment ago is judged by it. The old part goes once all are set.
        {
            let mut shared = self.scope.write().unwrap_or_else(|p| p.into_inner());
            shared.names.extend(scope.names.iter().cloned());
            shared.own.extend(scope.own.iter().cloned());
            for (dir, names) in &scope.ancestors {
                shared
                    .ancestors
                    .entry(dir.clone())
                    .or_default()
                    .extend(names.iter().cloned());
            }
        }
        self.watching.retain(|x| {
            let keep = wanted.contains(&x.path);
            if !keep && x.ok {
                let _ = w.unwatch(&x.path);
            }
            keep
        });
        for dir in wanted {
            let id = dir_id(&dir);
            let known = self.watching.iter().position(|x| x.path == dir);
            if let Some(i) = known {
                let x = &self.watching[i];
                if x.ok && x.id == id {
                    continue;
                }
                if x.ok {
                    // The path leads to another directory now: the old watch is stale.
                    let _ = w.unwatch(&dir);
                    tracing::debug!(dir = %dir.display(), "watched again: it leads elsewhere now");
                }
            }
            let result = w.watch(&dir, RecursiveMode::NonRecursive);
            let ok = result.is_ok();
            match (&result, known.map(|i| self.watching[i].ok)) {
                (Ok(()), _) => tracing::debug!(dir = %dir.display(), "watching"),
                // Reported once; tried again before each wait.
                (Err(e), None | Some(true)) => {
                    tracing::warn!(dir = %dir.display(), "cannot watch: {e}")
                }
                (Err(_), Some(false)) => {}
            }
            let entry = Watched { path: dir, id, ok };
            match known {
                Some(i) => self.watching[i] = entry,
                None => self.watching.push(entry),
            }
        }
        *self.scope.write().unwrap_or_else(|p| p.into_inner()) = scope;
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
                // Wait for quiet: editors and deploy tools write in several steps. A directory
                // that never goes quiet (a log file beside the lists) must not postpone the
                // reload forever: after `MAX_DEBOUNCE_FACTOR` × `debounce` it happens anyway.
                let deadline = tokio::time::Instant::now() + debounce * MAX_DEBOUNCE_FACTOR;
                loop {
                    tokio::select! {
                        _ = stopped(stop) => return None,
                        _ = tokio::time::sleep_until(deadline) => return Some(Cause::Changed),
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

/// The directory a file is watched through (`.` for a bare file name).
fn parent_dir(p: &Path) -> PathBuf {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Where to watch for files in `dir`: `dir` itself (`None`: an own directory) and the
/// parent of every symlink on its path, for that symlink's name (replacing it is the event);
/// when `dir` does not exist, its nearest existing ancestor, for the next name on the path
/// (creating it is the event). The root is never watched for a name.
fn watch_points(dir: &Path) -> Vec<(PathBuf, Option<OsString>)> {
    let mut points = Vec::new();
    let mut below: Option<&Path> = None;
    let mut existing = None;
    for a in dir.ancestors().filter(|a| !a.as_os_str().is_empty()) {
        if a.is_dir() {
            existing = Some(a);
            break;
        }
        below = Some(a);
    }
    // A relative path whose first step is missing: its base is the working directory.
    let dot = Path::new(".");
    let Some(existing) = existing.or_else(|| dir.is_relative().then_some(dot)) else {
        return points;
    };
    match below.and_then(Path::file_name) {
        None => points.push((existing.to_path_buf(), None)),
        Some(next) => points.push((existing.to_path_buf(), Some(next.to_os_string()))),
    }
    for a in existing.ancestors().filter(|a| !a.as_os_str().is_empty()) {
        if std::fs::symlink_metadata(a).is_ok_and(|m| m.file_type().is_symlink())
            && let Some(name) = a.file_name()
        {
            let parent = parent_dir(a);
            if parent != Path::new("/") {
                points.push((parent, Some(name.to_os_string())));
            }
        }
    }
    points
}

/// The device and inode of the directory `dir` leads to (through symlinks).
fn dir_id(dir: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(dir).ok().map(|m| (m.dev(), m.ino()))
}

/// Whether an event on `paths` may concern a watched file (see the module doc): in an own
/// directory, one naming a watched file, a Kubernetes atomic-writer path, a directory or a
/// symlink; an own directory itself deleted or moved; in another watched directory, only the
/// names it is watched for.
fn concerns(paths: &[PathBuf], scope: &RwLock<Scope>) -> bool {
    if paths.is_empty() {
        return true;
    }
    let scope = scope.read().unwrap_or_else(|p| p.into_inner());
    paths.iter().any(|p| {
        // A watched directory itself deleted or moved away.
        if scope.own.contains(p) || scope.ancestors.contains_key(p) {
            return true;
        }
        let Some(name) = p.file_name() else {
            return true;
        };
        let parent = parent_dir(p);
        if !scope.own.contains(&parent) {
            // The name it is watched for, or a Kubernetes `..data` swap that a symlink
            // there may lead through (`conf -> ..data/conf`).
            return scope.ancestors.get(&parent).is_some_and(|names| {
                names.contains(name) || name.as_encoded_bytes().starts_with(b"..")
            });
        }
        scope.names.contains(name)
            // Kubernetes' atomic writer (ConfigMap and Secret volumes) renames a new `..data`
            // symlink, to a new `..<timestamp>` directory, over the old one.
            || name.as_encoded_bytes().starts_with(b"..")
            || std::fs::symlink_metadata(p).is_ok_and(|m| m.is_dir() || m.file_type().is_symlink())
    })
}

/// True for events that can mean new content. Opening and reading a file (`Access`) is not
/// one: the reloader reads the files it watches, and counting those reads as changes would make
/// every reload trigger the next one, re-reading every list file forever.
fn is_change(kind: &EventKind) -> bool {
    !matches!(kind, EventKind::Access(a) if *a != AccessKind::Close(AccessMode::Write))
}

/// Resolves once `stop` is true (or its sender is gone).
pub async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reading a watched file is not a change; writing one is. Without the filter, every
    /// reload's own reads set off the next reload.
    #[tokio::test]
    async fn reads_do_not_trigger_but_writes_do() {
        let (_dir, file, mut t, _tx, mut stop) = watching_one_file();
        let debounce = Duration::from_millis(50);
        for _ in 0..5 {
            assert_eq!(std::fs::read_to_string(&file).unwrap(), "a@x.com\n");
        }
        let read = tokio::time::timeout(
            Duration::from_millis(800),
            t.next(&mut stop, debounce, Duration::ZERO),
        )
        .await;
        assert!(read.is_err(), "a read triggered a re-read: {read:?}");
        std::fs::write(&file, "b@x.com\n").unwrap();
        let wrote = tokio::time::timeout(
            Duration::from_secs(10),
            t.next(&mut stop, debounce, Duration::ZERO),
        )
        .await;
        assert_eq!(wrote.ok().flatten(), Some(Cause::Changed));
    }

    /// A watched file written more often than the debounce period does not hold the re-read
    /// back for ever.
    #[tokio::test]
    async fn a_file_that_never_goes_quiet_still_triggers() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("noisy.txt");
        let mut t = Triggers::new("test");
        t.watch([log.clone()]);
        let (_tx, mut stop) = watch::channel(false);
        let writer = tokio::spawn(async move {
            for i in 0..2000 {
                std::fs::write(&log, format!("{i}\n")).unwrap();
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        let got = tokio::time::timeout(
            Duration::from_secs(15),
            t.next(&mut stop, Duration::from_millis(100), Duration::ZERO),
        )
        .await;
        writer.abort();
        assert_eq!(got.ok().flatten(), Some(Cause::Changed));
    }

    /// Other files in a watched directory (a log, a database) never trigger a re-read; an
    /// editor's rename-replace of a watched file does, as does a Kubernetes-style `..data`
    /// symlink swap.
    #[tokio::test]
    async fn only_the_watched_files_of_a_directory_trigger() {
        let (dir, file, mut t, _tx, mut stop) = watching_one_file();
        for i in 0..50 {
            std::fs::write(dir.path().join("audit.jsonl"), format!("{i}\n")).unwrap();
        }
        std::fs::write(dir.path().join("idgate.db"), "x").unwrap();
        std::fs::write(dir.path().join("allow.txt.swp"), "x").unwrap();
        assert_eq!(
            next(&mut t, &mut stop, 800).await,
            None,
            "another file triggered"
        );

        // Rename-replace: the temporary name does not count, the rename onto the file does.
        std::fs::write(dir.path().join("allow.txt.new"), "b@x.com\n").unwrap();
        std::fs::rename(dir.path().join("allow.txt.new"), &file).unwrap();
        assert_eq!(next(&mut t, &mut stop, 10_000).await, Some(Cause::Changed));

        std::fs::create_dir(dir.path().join("..2026_12_03")).unwrap();
        std::os::unix::fs::symlink("..2026_12_03", dir.path().join("..data_tmp")).unwrap();
        std::fs::rename(dir.path().join("..data_tmp"), dir.path().join("..data")).unwrap();
        assert_eq!(next(&mut t, &mut stop, 10_000).await, Some(Cause::Changed));
    }

    /// Reading a watched file, or another file of its directory, is not even delivered as an
    /// event: the kernel is asked for changes only (a file served from the directory would
    /// otherwise wake the watcher on every request).
    #[tokio::test]
    async fn reads_in_a_watched_directory_are_not_delivered() {
        let (dir, file, mut t, _tx, mut stop) = watching_one_file();
        let page = dir.path().join("page.html");
        std::fs::write(&page, "<p>hi</p>").unwrap();
        // The write's own events arrive (and are not about the watched file); wait until
        // the watcher has delivered all of them.
        assert_eq!(next(&mut t, &mut stop, 300).await, None);
        let mut before = t.events_delivered();
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let now = t.events_delivered();
            if now == before {
                break;
            }
            before = now;
        }
        for _ in 0..100 {
            assert_eq!(std::fs::read_to_string(&page).unwrap(), "<p>hi</p>");
            assert_eq!(std::fs::read_to_string(&file).unwrap(), "a@x.com\n");
        }
        assert_eq!(next(&mut t, &mut stop, 300).await, None);
        assert_eq!(t.events_delivered(), before);
        // A change is still delivered.
        std::fs::write(&file, "b@x.com\n").unwrap();
        assert_eq!(next(&mut t, &mut stop, 10_000).await, Some(Cause::Changed));
        assert!(t.events_delivered() > before);
    }

    /// A list file in a directory that does not exist yet is waited for through the
    /// nearest existing ancestor, for the directory's name only (another directory made
    /// there, as `mkdtemp` in /tmp does, is no event); once it exists it is watched itself
    /// and the ancestor no longer.
    #[tokio::test]
    async fn a_missing_directory_is_awaited_through_its_parent_for_its_name_only() {
        let root = tempfile::tempdir().unwrap();
        let file = root.path().join("later").join("allow.txt");
        let mut t = Triggers::new("test");
        t.watch([file.clone()]);
        let (_tx, mut stop) = watch::channel(false);
        std::fs::create_dir(root.path().join("other")).unwrap();
        std::fs::write(root.path().join("other.txt"), "x").unwrap();
        assert_eq!(
            next(&mut t, &mut stop, 600).await,
            None,
            "a sibling counted"
        );
        std::fs::create_dir(root.path().join("later")).unwrap();
        assert_eq!(next(&mut t, &mut stop, 10_000).await, Some(Cause::Changed));
        t.watch([file.clone()]);
        let watched: Vec<&Path> = t.watching.iter().map(|w| w.path.as_path()).collect();
        assert_eq!(watched, [root.path().join("later").as_path()]);
        std::fs::write(&file, "a@x.com\n").unwrap();
        assert_eq!(next(&mut t, &mut stop, 10_000).await, Some(Cause::Changed));
    }

    /// A directory with `allow.txt` (`a@x.com`) in it, watched; the stop channel.
    fn watching_one_file() -> (
        tempfile::TempDir,
        PathBuf,
        Triggers,
        watch::Sender<bool>,
        watch::Receiver<bool>,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("allow.txt");
        std::fs::write(&file, "a@x.com\n").unwrap();
        let mut t = Triggers::new("test");
        t.watch([file.clone()]);
        let (tx, stop) = watch::channel(false);
        (dir, file, t, tx, stop)
    }

    /// The next trigger within `wait_ms`, if any.
    async fn next(
        t: &mut Triggers,
        stop: &mut watch::Receiver<bool>,
        wait_ms: u64,
    ) -> Option<Cause> {
        let fut = t.next(stop, Duration::from_millis(50), Duration::ZERO);
        tokio::time::timeout(Duration::from_millis(wait_ms), fut)
            .await
            .ok()
            .flatten()
    }

    #[test]
    fn access_events_other_than_close_after_write_are_not_changes() {
        use notify::event::{CreateKind, ModifyKind};
        assert!(!is_change(&EventKind::Access(AccessKind::Open(
            AccessMode::Any
        ))));
        assert!(!is_change(&EventKind::Access(AccessKind::Close(
            AccessMode::Read
        ))));
        assert!(is_change(&EventKind::Access(AccessKind::Close(
            AccessMode::Write
        ))));
        assert!(is_change(&EventKind::Modify(ModifyKind::Any)));
        assert!(is_change(&EventKind::Create(CreateKind::File)));
    }
}
