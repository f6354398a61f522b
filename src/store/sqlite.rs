//! The embedded SQLite backend of [`Store`](super::Store).
//!
//! Owns the database file: connection settings (WAL, `synchronous=FULL`, `foreign_keys=ON`,
//! busy timeout), the versioned schema ([`MIGRATIONS`], tracked in `PRAGMA user_version`), the
//! writer thread and the read connection.
//!
//! **Group commit.** One thread owns the write connection. Callers send an op with a tokio
//! oneshot for the reply; the thread blocks for the first op, drains whatever else is queued
//! (up to [`MAX_BATCH`]), runs them in one `BEGIN IMMEDIATE` transaction with a SAVEPOINT per
//! op (a duplicate fails only its own op), commits (one fsync for the whole group), publishes
//! the changes and then replies. If the commit fails, every op of the group gets
//! `Unavailable`. The thread ends when the last handle is dropped (the drop waits for it).
//!
//! **Reads** (`load`, `list`, `get_by_key`) use a second connection behind a mutex; WAL lets
//! them run while the writer commits. Async reads run on `spawn_blocking`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::types::Type;
use rusqlite::{Connection, ErrorCode, OptionalExtension, Row, TransactionBehavior, params};
use tokio::sync::{Notify, broadcast, oneshot};

use super::bulk::{self, BulkResult, BulkWrite};
use super::ids::new_id;
use super::invitations::{
    self, Delivery, DeliveryCounts, Invitation, InvitationQuery, NewInvitation, Op, Outcome,
};
use super::{
    Change, IdentifierType, ListKind, NewEntry, RestrictionOverrides, StoreError, StoreState,
    StoredEntry, id_prefix,
};

/// The schema, one migration per element, applied in order; `PRAGMA user_version` is the
/// number applied. Append only: never edit a migration that has shipped.
pub const MIGRATIONS: &[&str] = &[
    // 1: entries and settings.
    "CREATE TABLE entries (
        id TEXT PRIMARY KEY NOT NULL,
        list TEXT NOT NULL CHECK (list IN ('allow', 'block')),
        identifier TEXT NOT NULL,
        key TEXT NOT NULL,
        identifier_type TEXT NOT NULL,
        invitation_id TEXT NULL,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        UNIQUE (list, key)
    );
    CREATE INDEX entries_list_created ON entries (list, created_at DESC, id DESC);
    CREATE TABLE settings (
        name TEXT PRIMARY KEY NOT NULL,
        value TEXT NOT NULL
    );",
    // 2: invitations and their deliveries (the outbox), issue #9.
    "CREATE TABLE invitations (
        id TEXT PRIMARY KEY NOT NULL,
        identifier TEXT NOT NULL,
        identifier_type TEXT NOT NULL,
        public_metadata TEXT NOT NULL DEFAULT '{}',
        redirect_url TEXT NULL,
        status TEXT NOT NULL CHECK (status IN ('pending', 'accepted', 'revoked', 'expired')),
        token TEXT NOT NULL UNIQUE,
        expires_at INTEGER NULL,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL
    );
    CREATE INDEX invitations_identifier ON invitations (identifier, status);
    CREATE INDEX invitations_created ON invitations (created_at DESC, id DESC);
    CREATE INDEX invitations_pending_expiry ON invitations (expires_at) WHERE status = 'pending';
    CREATE TABLE deliveries (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        invitation_id TEXT NOT NULL REFERENCES invitations (id) ON DELETE CASCADE,
        channel TEXT NOT NULL CHECK (channel IN ('email', 'sms')),
        recipient TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('pending', 'sent', 'failed')),
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at INTEGER NOT NULL,
        last_error TEXT NULL,
        sent_at INTEGER NULL,
        created_at INTEGER NOT NULL
    );
    CREATE INDEX deliveries_invitation ON deliveries (invitation_id);
    CREATE INDEX deliveries_due ON deliveries (next_attempt_at, id) WHERE state = 'pending';",
];

/// The most ops committed in one transaction.
pub const MAX_BATCH: usize = 512;

/// How long a connection waits for a lock held by another connection.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Capacity of the change broadcast.
const CHANGES_CAPACITY: usize = 1024;

/// The `settings` row holding the restriction overrides (JSON).
const RESTRICTIONS: &str = "restrictions";

pub(crate) const COLUMNS: &str =
    "id, list, identifier, key, identifier_type, invitation_id, created_at, updated_at";

/// A handle on an open SQLite store. Cheap to clone.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    writer: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
    reader: Mutex<Connection>,
    changes: broadcast::Sender<Change>,
    hook: HookSlot,
    deliveries: Arc<Notify>,
    observer: Mutex<Option<super::OpObserver>>,
    /// Bumped after every committed op that can add a pending invitation.
    invitations_added: Arc<std::sync::atomic::AtomicU64>,
}

/// Called by the writer thread with every batch's committed changes, in commit order, after
/// the commit and before any caller is answered (see [`super::Store::set_commit_hook`]).
pub type CommitHook = Arc<dyn Fn(&[Change]) + Send + Sync>;
type HookSlot = Arc<Mutex<Option<CommitHook>>>;

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the channel ends the writer loop once the queue is empty.
        self.writer.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// One write op and where its answer goes.
pub(crate) enum Job {
    Insert {
        list: ListKind,
        entry: NewEntry,
        reply: Reply<StoredEntry>,
    },
    Delete {
        list: ListKind,
        id: String,
        reply: Reply<StoredEntry>,
    },
    Restrictions {
        patch: RestrictionOverrides,
        reply: Reply<RestrictionOverrides>,
    },
    Bulk {
        writes: Vec<BulkWrite>,
        reply: Reply<Vec<BulkResult>>,
    },
    Invite {
        op: Op,
        reply: Reply<Outcome>,
    },
}

/// An op that ran inside the open transaction, waiting for the commit.
enum Done {
    Entry(Reply<StoredEntry>, Result<(StoredEntry, bool), StoreError>),
    Restrictions(
        Reply<RestrictionOverrides>,
        Result<RestrictionOverrides, StoreError>,
    ),
    Bulk(
        Reply<Vec<BulkResult>>,
        Vec<BulkWrite>,
        Result<Vec<BulkResult>, StoreError>,
    ),
    /// The reply, whether the op queued deliveries, the outcome.
    Invite(Reply<Outcome>, bool, Result<Outcome, StoreError>),
}

impl SqliteStore {
    /// Opens the store at `path` (see [`Store::open_sqlite`](super::Store::open_sqlite)).
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        let open_err = |message: String| StoreError::Open {
            path: path.to_path_buf(),
            message,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .map_err(|e| open_err(format!("creating {}: {e}", parent.display())))?;
        }
        let mut writer = Connection::open(path).map_err(|e| open_err(e.to_string()))?;
        configure(&writer).map_err(open_err)?;
        migrate(&mut writer).map_err(open_err)?;
        let reader = Connection::open(path).map_err(|e| open_err(e.to_string()))?;
        configure(&reader).map_err(open_err)?;
        reader
            .pragma_update(None, "query_only", true)
            .map_err(|e| open_err(e.to_string()))?;

        let (tx, rx) = mpsc::channel();
        let (changes, _) = broadcast::channel(CHANGES_CAPACITY);
        let events = changes.clone();
        let hook: HookSlot = Arc::default();
        let writer_hook = hook.clone();
        let deliveries = Arc::new(Notify::new());
        let writer_deliveries = Arc::clone(&deliveries);
        let invitations_added = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let writer_invitations = Arc::clone(&invitations_added);
        let thread = std::thread::Builder::new()
            .name("idgate-store-writer".into())
            .spawn(move || {
                writer_loop(
                    writer,
                    rx,
                    events,
                    writer_hook,
                    writer_deliveries,
                    writer_invitations,
                )
            })
            .map_err(|e| open_err(format!("starting the writer thread: {e}")))?;
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                path: path.to_path_buf(),
                writer: Some(tx),
                thread: Some(thread),
                reader: Mutex::new(reader),
                changes,
                hook,
                deliveries,
                observer: Mutex::new(None),
                invitations_added,
            }),
        })
    }

    /// Installs the commit hook (replacing any earlier one).
    pub fn set_commit_hook(&self, hook: CommitHook) {
        let mut slot = self.inner.hook.lock().unwrap_or_else(|p| p.into_inner());
        *slot = Some(hook);
    }

    /// Installs the op observer (replacing any earlier one).
    pub fn set_op_observer(&self, observer: super::OpObserver) {
        *self
            .inner
            .observer
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(observer);
    }

    /// The op observer, if one is installed.
    pub fn op_observer(&self) -> Option<super::OpObserver> {
        self.inner
            .observer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The database path.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Everything in the store, read in one read transaction (blocking).
    pub fn load(&self) -> Result<StoreState, StoreError> {
        let mut conn = self.inner.reader();
        let tx = conn.transaction().map_err(unavailable)?;
        let entries = {
            let mut stmt = tx
                .prepare(&format!(
                    "SELECT {COLUMNS} FROM entries ORDER BY list, created_at, id"
                ))
                .map_err(unavailable)?;
            let rows = stmt.query_map([], row_to_entry).map_err(unavailable)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(unavailable)?
        };
        let restrictions = read_restrictions(&tx)?;
        tx.finish().map_err(unavailable)?;
        Ok(StoreState {
            entries,
            restrictions,
        })
    }

    /// Adds an entry; `Ok` once committed.
    pub async fn insert(&self, list: ListKind, entry: NewEntry) -> Result<StoredEntry, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.submit(Job::Insert { list, entry, reply })?;
        rx.await.map_err(|_| writer_gone())?
    }

    /// Removes `id` from `list`; `Ok` (the removed row) once committed.
    pub async fn delete(&self, list: ListKind, id: &str) -> Result<StoredEntry, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.submit(Job::Delete {
            list,
            id: id.to_owned(),
            reply,
        })?;
        rx.await.map_err(|_| writer_gone())?
    }

    /// Merges `patch` into the stored overrides; returns the full result once committed.
    pub async fn update_restrictions(
        &self,
        patch: RestrictionOverrides,
    ) -> Result<RestrictionOverrides, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.submit(Job::Restrictions { patch, reply })?;
        rx.await.map_err(|_| writer_gone())?
    }

    /// Runs `writes` as one op (one SAVEPOINT, one commit, one call of the commit hook); see
    /// [`super::bulk`]. `Ok` once committed and applied.
    pub async fn bulk(&self, writes: Vec<BulkWrite>) -> Result<Vec<BulkResult>, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.submit(Job::Bulk { writes, reply })?;
        rx.await.map_err(|_| writer_gone())?
    }

    /// Every identifier of `list` in the order they were added (`rowid`: within one
    /// millisecond `created_at` ties and ids are random).
    pub async fn identifiers(&self, list: ListKind) -> Result<Vec<String>, StoreError> {
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached("SELECT identifier FROM entries WHERE list = ?1 ORDER BY rowid")
                .map_err(unavailable)?;
            let rows = stmt
                .query_map([list.as_str()], |r| r.get(0))
                .map_err(unavailable)?;
            rows.collect::<Result<Vec<String>, _>>()
                .map_err(unavailable)
        })
        .await
    }

    /// A page of `list`, newest first, and the list's total.
    pub async fn list(
        &self,
        list: ListKind,
        limit: Option<usize>,
        offset: usize,
    ) -> Result<(Vec<StoredEntry>, usize), StoreError> {
        self.read(move |conn| {
            let tx = conn.transaction().map_err(unavailable)?;
            let limit = limit.map_or(-1, |l| i64::try_from(l).unwrap_or(i64::MAX));
            let offset = i64::try_from(offset).unwrap_or(i64::MAX);
            let page = {
                let mut stmt = tx
                    .prepare_cached(&format!(
                        "SELECT {COLUMNS} FROM entries WHERE list = ?1 \
                         ORDER BY created_at DESC, rowid DESC LIMIT ?2 OFFSET ?3"
                    ))
                    .map_err(unavailable)?;
                let rows = stmt
                    .query_map(params![list.as_str(), limit, offset], row_to_entry)
                    .map_err(unavailable)?;
                rows.collect::<Result<Vec<_>, _>>().map_err(unavailable)?
            };
            let total: i64 = tx
                .prepare_cached("SELECT COUNT(*) FROM entries WHERE list = ?1")
                .and_then(|mut s| s.query_row([list.as_str()], |r| r.get(0)))
                .map_err(unavailable)?;
            tx.finish().map_err(unavailable)?;
            Ok((page, usize::try_from(total).unwrap_or(0)))
        })
        .await
    }

    /// The entry of `list` whose dedup key is `key`.
    pub async fn get_by_key(
        &self,
        list: ListKind,
        key: &str,
    ) -> Result<Option<StoredEntry>, StoreError> {
        let key = key.to_owned();
        self.read(move |conn| find_by_key(conn, list, &key).map_err(unavailable))
            .await
    }

    /// Every change committed from now on, in commit order.
    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.inner.changes.subscribe()
    }

    async fn invite(&self, op: Op) -> Result<Outcome, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.submit(Job::Invite { op, reply })?;
        rx.await.map_err(|_| writer_gone())?
    }

    /// Creates invitations (one or a bulk of them) as one op; see [`super::invitations`].
    pub async fn create_invitations(
        &self,
        items: Vec<NewInvitation>,
    ) -> Result<Vec<Invitation>, StoreError> {
        match self.invite(Op::Create(items)).await? {
            Outcome::Invitations(v) => Ok(v),
            other => Err(mismatch(&other)),
        }
    }

    /// Changes whenever a committed op may have added a pending invitation (see
    /// [`super::Store::invitations_version`]).
    pub fn invitations_version(&self) -> u64 {
        self.inner
            .invitations_added
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// The identifiers that have a pending invitation (past-due ones included).
    pub async fn pending_invitation_identifiers(
        &self,
    ) -> Result<std::collections::HashSet<String>, StoreError> {
        self.read(invitations::pending_identifiers).await
    }

    /// Adds `entry` to the allow list with an invitation (reusing a pending one) and its
    /// delivery, in one op.
    pub async fn insert_invited(
        &self,
        entry: NewEntry,
        invitation: NewInvitation,
    ) -> Result<(StoredEntry, Invitation), StoreError> {
        match self
            .invite(Op::AllowWithInvitation(entry, invitation))
            .await?
        {
            Outcome::Entry(e, i) => Ok((e, i)),
            other => Err(mismatch(&other)),
        }
    }

    /// Revokes invitation `id` and gives up its pending deliveries.
    pub async fn revoke_invitation(&self, id: &str) -> Result<Invitation, StoreError> {
        match self.invite(Op::Revoke(id.to_owned())).await? {
            Outcome::Invitation(i) => Ok(i),
            other => Err(mismatch(&other)),
        }
    }

    /// Deletes invitation `id` and its deliveries; returns it as it was.
    pub async fn delete_invitation(&self, id: &str) -> Result<Invitation, StoreError> {
        match self.invite(Op::Delete(id.to_owned())).await? {
            Outcome::Invitation(i) => Ok(i),
            other => Err(mismatch(&other)),
        }
    }

    /// Marks the pending, not past-due invitations for `identifier` as accepted; returns how
    /// many.
    pub async fn accept_invitations(&self, identifier: &str) -> Result<usize, StoreError> {
        match self.invite(Op::Accept(identifier.to_owned())).await? {
            Outcome::Count(n) => Ok(n),
            other => Err(mismatch(&other)),
        }
    }

    /// Stores `expired` on every pending invitation past its `expires_at` (and gives up their
    /// deliveries); returns how many.
    pub async fn expire_invitations(&self) -> Result<usize, StoreError> {
        match self.invite(Op::ExpireDue).await? {
            Outcome::Count(n) => Ok(n),
            other => Err(mismatch(&other)),
        }
    }

    /// A page of invitations and the number matching.
    pub async fn list_invitations(
        &self,
        q: InvitationQuery,
    ) -> Result<(Vec<Invitation>, usize), StoreError> {
        self.read(move |conn| invitations::list(conn, &q, now_ms()))
            .await
    }

    /// One invitation.
    pub async fn get_invitation(&self, id: &str) -> Result<Option<Invitation>, StoreError> {
        let id = id.to_owned();
        self.read(move |conn| invitations::get(conn, &id, now_ms()))
            .await
    }

    /// Deliveries due at `now` (see [`super::Store::due_deliveries`]).
    pub async fn due_deliveries(
        &self,
        now: i64,
        limit: usize,
    ) -> Result<Vec<Delivery>, StoreError> {
        self.read(move |conn| invitations::due_deliveries(conn, now, limit))
            .await
    }

    /// Every delivery of one invitation, oldest first.
    pub async fn deliveries_of(&self, invitation_id: &str) -> Result<Vec<Delivery>, StoreError> {
        let id = invitation_id.to_owned();
        self.read(move |conn| invitations::deliveries_of(conn, &id))
            .await
    }

    /// The writer-side check right before a send: true only if delivery `id` is still
    /// pending and its invitation is pending and not past due at `now` (see
    /// [`super::Store::claim_delivery`]).
    pub async fn claim_delivery(&self, id: i64, now: i64) -> Result<bool, StoreError> {
        match self.invite(Op::Claim { id, now }).await? {
            Outcome::Claimed(ok) => Ok(ok),
            other => Err(mismatch(&other)),
        }
    }

    /// Marks delivery `id` sent at `at` (only from pending; idempotent).
    pub async fn delivery_sent(&self, id: i64, at: i64) -> Result<(), StoreError> {
        self.invite(Op::DeliverySent { id, at }).await.map(drop)
    }

    /// Records a failed attempt and when to try again.
    pub async fn delivery_retry(
        &self,
        id: i64,
        attempts: u32,
        next_attempt_at: i64,
        error: String,
    ) -> Result<(), StoreError> {
        self.invite(Op::DeliveryRetry {
            id,
            attempts,
            next_attempt_at,
            error,
        })
        .await
        .map(drop)
    }

    /// Gives delivery `id` up (`failed`).
    pub async fn delivery_give_up(&self, id: i64, error: String) -> Result<(), StoreError> {
        self.invite(Op::DeliveryGiveUp { id, error })
            .await
            .map(drop)
    }

    /// Outbox totals.
    pub async fn delivery_counts(&self) -> Result<DeliveryCounts, StoreError> {
        self.read(|conn| invitations::delivery_counts(conn)).await
    }

    /// Notified after every commit that queued deliveries (one stored permit when nobody
    /// waits), so the delivery worker need not poll fast.
    pub fn deliveries_notify(&self) -> Arc<Notify> {
        Arc::clone(&self.inner.deliveries)
    }

    /// Fills `list` with `count` synthetic entries (`<key_prefix><n>@bench.invalid`) in one
    /// transaction on a separate connection, bypassing the writer. For benchmarks only.
    #[doc(hidden)]
    pub fn bulk_insert_for_bench(
        &self,
        list: ListKind,
        count: usize,
        key_prefix: &str,
    ) -> Result<(), StoreError> {
        let mut conn = Connection::open(&self.inner.path).map_err(unavailable)?;
        configure(&conn).map_err(StoreError::Unavailable)?;
        conn.pragma_update(None, "cache_size", -262_144)
            .map_err(unavailable)?;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(unavailable)?;
        {
            let mut stmt = tx
                .prepare(&format!(
                    "INSERT INTO entries ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, NULL, ?6, ?6)"
                ))
                .map_err(unavailable)?;
            let now = now_ms();
            // Ids in ascending order so the primary-key index is filled by appending.
            let mut ids: Vec<String> = (0..count).map(|_| new_id(id_prefix(list))).collect();
            ids.sort_unstable();
            for (n, id) in ids.iter().enumerate() {
                let identifier = format!("{key_prefix}{n}@bench.invalid");
                let key = format!("x:{identifier}");
                stmt.execute(params![
                    id,
                    list.as_str(),
                    identifier,
                    key,
                    IdentifierType::EmailAddress.as_str(),
                    now
                ])
                .map_err(unavailable)?;
            }
        }
        tx.commit().map_err(unavailable)
    }

    fn submit(&self, job: Job) -> Result<(), StoreError> {
        match &self.inner.writer {
            Some(w) => w.send(job).map_err(|_| writer_gone()),
            None => Err(writer_gone()),
        }
    }

    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || f(&mut inner.reader()))
            .await
            .map_err(|e| StoreError::Unavailable(format!("read task failed: {e}")))?
    }
}

impl Inner {
    fn reader(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves the connection usable (rusqlite rolls back
        // an open transaction on drop), so a poisoned lock is taken over.
        self.reader.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Per-connection settings. `Err` carries a message for [`StoreError::Open`].
fn configure(conn: &Connection) -> Result<(), String> {
    conn.busy_timeout(BUSY_TIMEOUT).map_err(|e| e.to_string())?;
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
        .map_err(|e| e.to_string())?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(format!("WAL journal mode is not available (got {mode})"));
    }
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(|e| e.to_string())?;
    conn.pragma_update(None, "foreign_keys", true)
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// Applies the migrations the file lacks, in one transaction. A file newer than this build
/// is refused.
fn migrate(conn: &mut Connection) -> Result<(), String> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| e.to_string())?;
    let version: i64 = tx
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(|e| e.to_string())?;
    let known = MIGRATIONS.len();
    let applied = usize::try_from(version)
        .map_err(|_| format!("invalid schema version {version} (user_version)"))?;
    if applied > known {
        return Err(format!(
            "the schema version on disk is {applied}, newer than this build knows ({known}); \
             use a newer idgate or restore a backup"
        ));
    }
    if applied == known {
        return tx.commit().map_err(|e| e.to_string());
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(applied) {
        tx.execute_batch(sql)
            .map_err(|e| format!("schema migration {}: {e}", i + 1))?;
    }
    tx.pragma_update(
        None,
        "user_version",
        i64::try_from(known).unwrap_or(i64::MAX),
    )
    .map_err(|e| e.to_string())?;
    tx.commit().map_err(|e| e.to_string())
}

/// The writer thread: block for one job, drain the queue, commit the group, repeat until every
/// handle is gone.
fn writer_loop(
    mut conn: Connection,
    rx: mpsc::Receiver<Job>,
    events: broadcast::Sender<Change>,
    hook: HookSlot,
    deliveries: Arc<Notify>,
    invitations_added: Arc<std::sync::atomic::AtomicU64>,
) {
    while let Ok(first) = rx.recv() {
        let mut jobs = Vec::with_capacity(16);
        jobs.push(first);
        while jobs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        let current = hook.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let committed = write_batch(
            &mut conn,
            jobs,
            &events,
            current.as_ref(),
            Some(&invitations_added),
        );
        if committed.queued {
            deliveries.notify_one();
        }
    }
}

/// What a committed batch did, beyond its changes.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Committed {
    /// It queued deliveries.
    pub queued: bool,
    /// It may have added pending invitations.
    pub invited: bool,
}

/// Runs `jobs` in one transaction (a SAVEPOINT each), commits, publishes the changes in order,
/// then answers every caller.
pub(crate) fn write_batch(
    conn: &mut Connection,
    jobs: Vec<Job>,
    events: &broadcast::Sender<Change>,
    hook: Option<&CommitHook>,
    invitations_added: Option<&std::sync::atomic::AtomicU64>,
) -> Committed {
    let mut tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(e) => {
            let msg = e.to_string();
            for job in jobs {
                fail(job, &msg);
            }
            return Committed::default();
        }
    };
    let mut done = Vec::with_capacity(jobs.len());
    for job in jobs {
        done.push(match job {
            Job::Insert { list, entry, reply } => Done::Entry(
                reply,
                in_savepoint(&mut tx, |c| insert_entry(c, list, &entry)).map(|e| (e, true)),
            ),
            Job::Delete { list, id, reply } => Done::Entry(
                reply,
                in_savepoint(&mut tx, |c| delete_entry(c, list, &id)).map(|e| (e, false)),
            ),
            Job::Restrictions { patch, reply } => Done::Restrictions(
                reply,
                in_savepoint(&mut tx, |c| merge_restrictions(c, patch)),
            ),
            Job::Bulk { writes, reply } => {
                let r = in_savepoint(&mut tx, |c| bulk::run(c, &writes));
                Done::Bulk(reply, writes, r)
            }
            Job::Invite { op, reply } => {
                let now = now_ms();
                let r = in_savepoint(&mut tx, |c| invitations::run(c, &op, now));
                Done::Invite(reply, op.may_queue(), r)
            }
        });
    }
    // Rolled back under us (see `in_savepoint`): nothing of the batch is stored.
    let committed = if tx.is_autocommit() {
        Err("the transaction was rolled back by SQLite".to_owned())
    } else {
        tx.commit().map_err(|e| e.to_string())
    };
    if let Err(e) = committed {
        let msg = format!("commit failed: {e}");
        for d in done {
            match d {
                Done::Entry(reply, _) => {
                    let _ = reply.send(Err(StoreError::Unavailable(msg.clone())));
                }
                Done::Restrictions(reply, _) => {
                    let _ = reply.send(Err(StoreError::Unavailable(msg.clone())));
                }
                Done::Bulk(reply, _, _) => {
                    let _ = reply.send(Err(StoreError::Unavailable(msg.clone())));
                }
                Done::Invite(reply, _, _) => {
                    let _ = reply.send(Err(StoreError::Unavailable(msg.clone())));
                }
            }
        }
        return Committed::default();
    }
    let committed = Committed {
        queued: done
            .iter()
            .any(|d| matches!(d, Done::Invite(_, true, Ok(_)))),
        invited: done.iter().any(|d| {
            matches!(
                d,
                Done::Invite(_, _, Ok(Outcome::Invitations(_) | Outcome::Entry(..)))
            )
        }),
    };
    // On commit, before any caller hears back, and whether or not it still listens (an admin
    // client that went away must not leave the acceptance filter stale).
    if committed.invited
        && let Some(n) = invitations_added
    {
        n.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }
    let mut changes: Vec<Change> = Vec::with_capacity(done.len());
    for d in &done {
        match d {
            Done::Entry(_, Ok((e, true))) => changes.push(Change::Added(e.clone())),
            Done::Entry(_, Ok((e, false))) => changes.push(Change::Removed(e.clone())),
            Done::Restrictions(_, Ok(r)) => changes.push(Change::Restrictions(*r)),
            Done::Bulk(_, writes, Ok(results)) => changes.extend(bulk::changes(writes, results)),
            Done::Invite(_, _, Ok(Outcome::Entry(e, _))) => changes.push(Change::Added(e.clone())),
            _ => {}
        }
    }
    // Applied to the live gate here, on the one writer thread, so in commit order, and before
    // any caller hears back: a caller's 200 means the gate already enforces its write.
    if let Some(hook) = hook
        && !changes.is_empty()
    {
        hook(&changes);
    }
    for change in changes {
        // No subscriber is fine.
        let _ = events.send(change);
    }
    for d in done {
        match d {
            Done::Entry(reply, r) => {
                let _ = reply.send(r.map(|(e, _)| e));
            }
            Done::Restrictions(reply, r) => {
                let _ = reply.send(r);
            }
            Done::Bulk(reply, _, r) => {
                let _ = reply.send(r);
            }
            Done::Invite(reply, _, r) => {
                let _ = reply.send(r);
            }
        }
    }
    committed
}

fn fail(job: Job, msg: &str) {
    let err = || StoreError::Unavailable(msg.to_owned());
    match job {
        Job::Insert { reply, .. } | Job::Delete { reply, .. } => {
            let _ = reply.send(Err(err()));
        }
        Job::Restrictions { reply, .. } => {
            let _ = reply.send(Err(err()));
        }
        Job::Bulk { reply, .. } => {
            let _ = reply.send(Err(err()));
        }
        Job::Invite { reply, .. } => {
            let _ = reply.send(Err(err()));
        }
    }
}

/// Runs `f` inside a SAVEPOINT: released on `Ok`, rolled back on `Err`.
fn in_savepoint<T>(
    tx: &mut rusqlite::Transaction<'_>,
    f: impl FnOnce(&Connection) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    // SQLite rolls the whole transaction back on some errors (a full disk, I/O, memory):
    // a SAVEPOINT now would start a transaction of its own, which its RELEASE would commit
    // while the batch is reported failed. Nothing more runs in this batch.
    if tx.is_autocommit() {
        return Err(StoreError::Unavailable(
            "the batch's transaction was rolled back by SQLite".into(),
        ));
    }
    let sp = tx.savepoint().map_err(unavailable)?;
    let out = f(&sp)?;
    // On the error path above `sp` is dropped, which rolls it back.
    sp.commit().map_err(unavailable)?;
    Ok(out)
}

fn insert_entry(
    conn: &Connection,
    list: ListKind,
    e: &NewEntry,
) -> Result<StoredEntry, StoreError> {
    insert_entry_with(conn, list, e, None)
}

/// Inserts `e` into `list`, pointing at `invitation_id` (allowlist `notify`).
pub(crate) fn insert_entry_with(
    conn: &Connection,
    list: ListKind,
    e: &NewEntry,
    invitation_id: Option<&str>,
) -> Result<StoredEntry, StoreError> {
    if let Some(existing) = find_by_key(conn, list, &e.key).map_err(unavailable)? {
        return Err(duplicate(existing));
    }
    let now = now_ms();
    let entry = StoredEntry {
        id: new_id(id_prefix(list)),
        list,
        identifier: e.identifier.clone(),
        key: e.key.clone(),
        identifier_type: e.identifier_type,
        invitation_id: invitation_id.map(str::to_owned),
        created_at: now,
        updated_at: now,
    };
    let inserted = conn
        .prepare_cached(&format!(
            "INSERT INTO entries ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
        ))
        .and_then(|mut s| {
            s.execute(params![
                entry.id,
                list.as_str(),
                entry.identifier,
                entry.key,
                entry.identifier_type.as_str(),
                entry.invitation_id,
                entry.created_at,
                entry.updated_at
            ])
        });
    match inserted {
        Ok(_) => Ok(entry),
        Err(err) if err.sqlite_error_code() == Some(ErrorCode::ConstraintViolation) => {
            match find_by_key(conn, list, &e.key).map_err(unavailable)? {
                Some(existing) => Err(duplicate(existing)),
                None => Err(unavailable(err)),
            }
        }
        Err(err) => Err(unavailable(err)),
    }
}

/// Removes the entry; for the allow list also revokes the pending invitations for its
/// identifier (Clerk's side effect), in the same op.
fn delete_entry(conn: &Connection, list: ListKind, id: &str) -> Result<StoredEntry, StoreError> {
    let removed = conn
        .prepare_cached(&format!(
            "DELETE FROM entries WHERE id = ?1 AND list = ?2 RETURNING {COLUMNS}"
        ))
        .and_then(|mut s| {
            s.query_row(params![id, list.as_str()], row_to_entry)
                .optional()
        })
        .map_err(unavailable)?
        .ok_or_else(|| StoreError::NotFound(id.to_owned()))?;
    if list == ListKind::Allow {
        invitations::revoke_pending_for(conn, &removed.identifier, now_ms())?;
    }
    Ok(removed)
}

fn merge_restrictions(
    conn: &Connection,
    patch: RestrictionOverrides,
) -> Result<RestrictionOverrides, StoreError> {
    let merged = read_restrictions(conn)?.merged(patch);
    let json = serde_json::to_string(&merged)
        .map_err(|e| StoreError::Unavailable(format!("encoding restrictions: {e}")))?;
    conn.prepare_cached(
        "INSERT INTO settings (name, value) VALUES (?1, ?2) \
         ON CONFLICT (name) DO UPDATE SET value = excluded.value",
    )
    .and_then(|mut s| s.execute(params![RESTRICTIONS, json]))
    .map_err(unavailable)?;
    Ok(merged)
}

fn read_restrictions(conn: &Connection) -> Result<RestrictionOverrides, StoreError> {
    let json: Option<String> = conn
        .prepare_cached("SELECT value FROM settings WHERE name = ?1")
        .and_then(|mut s| s.query_row([RESTRICTIONS], |r| r.get(0)).optional())
        .map_err(unavailable)?;
    match json {
        None => Ok(RestrictionOverrides::default()),
        Some(j) => serde_json::from_str(&j).map_err(|e| {
            StoreError::Unavailable(format!("the stored restrictions are not valid: {e}"))
        }),
    }
}

fn find_by_key(
    conn: &Connection,
    list: ListKind,
    key: &str,
) -> rusqlite::Result<Option<StoredEntry>> {
    conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM entries WHERE list = ?1 AND key = ?2"
    ))?
    .query_row(params![list.as_str(), key], row_to_entry)
    .optional()
}

/// A value in the file that this build does not understand.
#[derive(Debug, thiserror::Error)]
#[error("unknown {what} {value:?} in the store")]
struct BadValue {
    what: &'static str,
    value: String,
}

pub(crate) fn row_to_entry(row: &Row<'_>) -> rusqlite::Result<StoredEntry> {
    let list: String = row.get(1)?;
    let list = match list.as_str() {
        "allow" => ListKind::Allow,
        "block" => ListKind::Block,
        _ => return Err(bad_value(1, "list", list)),
    };
    let ty: String = row.get(4)?;
    let identifier_type =
        IdentifierType::from_name(&ty).ok_or_else(|| bad_value(4, "identifier_type", ty))?;
    Ok(StoredEntry {
        id: row.get(0)?,
        list,
        identifier: row.get(2)?,
        key: row.get(3)?,
        identifier_type,
        invitation_id: row.get(5)?,
        created_at: row.get(6)?,
        updated_at: row.get(7)?,
    })
}

fn bad_value(idx: usize, what: &'static str, value: String) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(idx, Type::Text, Box::new(BadValue { what, value }))
}

fn duplicate(existing: StoredEntry) -> StoreError {
    StoreError::Duplicate {
        existing: existing.identifier,
        id: existing.id,
    }
}

pub(crate) fn unavailable(e: impl fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn mismatch(_: &Outcome) -> StoreError {
    // Not the outcome itself: it may hold tokens.
    StoreError::Unavailable("internal: unexpected store outcome".into())
}

fn writer_gone() -> StoreError {
    StoreError::Unavailable("the store writer has stopped".into())
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A write connection configured like the writer's (for tests that drive [`write_batch`]).
#[cfg(test)]
pub(crate) fn open_write_connection(path: &Path) -> Result<Connection, String> {
    let conn = Connection::open(path).map_err(|e| e.to_string())?;
    configure(&conn)?;
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// After SQLite rolled the batch's transaction back under it (as on a full disk), a
    /// further op is refused instead of running, and committed, in a transaction of its own.
    #[test]
    fn nothing_runs_after_the_transaction_was_rolled_back() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (x INTEGER)").unwrap();
        let mut tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .unwrap();
        let ok = in_savepoint(&mut tx, |c| {
            c.execute("INSERT INTO t VALUES (1)", [])
                .map_err(unavailable)
        });
        assert!(ok.is_ok());
        // What SQLite does by itself on SQLITE_FULL and friends.
        tx.execute_batch("ROLLBACK").unwrap();
        let after = in_savepoint(&mut tx, |c| {
            c.execute("INSERT INTO t VALUES (2)", [])
                .map_err(unavailable)
        });
        assert!(
            matches!(after, Err(StoreError::Unavailable(_))),
            "{after:?}"
        );
        drop(tx);
        let n: i64 = conn
            .query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 0, "a row was committed after the rollback");
    }
}
