//! store: the durable store for the list entries and restriction overrides that operators
//! manage through the admin API (issue #3), and the change events that keep the gate in step.
//!
//! Owns: the [`Store`] handle and its types ([`StoredEntry`], [`NewEntry`],
//! [`RestrictionOverrides`], [`StoreState`], [`Change`], [`StoreError`]), entry ids
//! ([`ids`]), bulk list writes ([`bulk`]: replace/append/remove in one transaction, for the
//! Magic API and `idgate lists`), invitations and their delivery outbox ([`invitations`],
//! issue #9), and the backends. Entries from the config file and list files are **not** here;
//! only what was written through the API. Restriction overrides set through the API are stored
//! as `Some` values and win over the config's defaults after a restart; `None` leaves the
//! config in charge.
//!
//! ## Contract
//! - `insert`, `delete` and `update_restrictions` return `Ok` only once the change is
//!   committed durably (SQLite: WAL with `synchronous=FULL`, so it survives `kill -9` and, as
//!   far as SQLite promises, power loss). Making the gate enforce it is the caller's next step
//!   (`reload::Reloader::apply_store_changes`), before it answers its own client.
//! - An entry is unique per `(list, key)`, where `key` is the matcher key; a second insert
//!   gets [`StoreError::Duplicate`] naming the existing row.
//! - Listings are newest first (`created_at` desc, then `id` desc) with the list's total.
//! - [`Store::subscribe`] yields every committed [`Change`] in commit order (including this
//!   process's own writes), for a reloader that wants a stream rather than calling in.
//!
//! ## Backends
//! [`Store`] is an enum over backends so callers never change. [`sqlite`] is the default: one
//! writer thread owns the write connection and commits queued writes in groups (one fsync per
//! group, a SAVEPOINT per op so one failing op fails alone); reads use a second connection.
//! A PostgreSQL backend for many replicas plugs in as another variant with the same ops and
//! the same schema (`entries`, `settings`, versioned migrations): writes commit in one
//! transaction and then `NOTIFY idgate_changes` with the change, and every replica `LISTEN`s
//! and forwards what it hears to its [`Store::subscribe`] stream (re-reading with
//! [`Store::load`] after a reconnect, since notifications are not replayed). Nothing in
//! `admin`, `reload` or `proxy` needs to change for it.
//!
//! This module does not import `proxy` or `gate`.

pub mod bulk;
pub mod ids;
pub mod invitations;
pub mod sqlite;

#[cfg(test)]
mod tests;

use std::fmt;
use std::path::{Path, PathBuf};

pub use crate::lists::ListKind;

pub use bulk::{BulkOp, BulkResult, BulkWrite};
pub use invitations::{
    Channel, Delivery, DeliveryCounts, DeliveryState, Invitation, InvitationOrderField,
    InvitationQuery, InvitationStatus, NewInvitation,
};
pub use sqlite::SqliteStore;

/// Clerk's `identifier_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdentifierType {
    /// `email_address` (also used for `*@domain` entries).
    EmailAddress,
    /// `phone_number`.
    PhoneNumber,
    /// `web3_wallet`.
    Web3Wallet,
}

impl IdentifierType {
    /// The wire and storage form: `email_address`, `phone_number`, `web3_wallet`.
    pub fn as_str(self) -> &'static str {
        match self {
            IdentifierType::EmailAddress => "email_address",
            IdentifierType::PhoneNumber => "phone_number",
            IdentifierType::Web3Wallet => "web3_wallet",
        }
    }

    /// The inverse of [`IdentifierType::as_str`].
    pub fn from_name(s: &str) -> Option<IdentifierType> {
        match s {
            "email_address" => Some(IdentifierType::EmailAddress),
            "phone_number" => Some(IdentifierType::PhoneNumber),
            "web3_wallet" => Some(IdentifierType::Web3Wallet),
            _ => None,
        }
    }
}

impl fmt::Display for IdentifierType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The id prefix of a list's entries: `alid_` or `blid_`.
pub fn id_prefix(list: ListKind) -> &'static str {
    match list {
        ListKind::Allow => "alid_",
        ListKind::Block => "blid_",
    }
}

/// A row of the store (an API-managed list entry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEntry {
    /// `alid_…` / `blid_…` + 27 base62 characters ([`ids::new_id`]).
    pub id: String,
    /// The list it belongs to.
    pub list: ListKind,
    /// Display form, canonical: `alice@x.com`, `*@x.com`, `*@*.x.com`, `+1202…`, `0x…`.
    pub identifier: String,
    /// Dedup key: `lists::Entry::key(list)`, the matcher's key.
    pub key: String,
    /// Clerk's identifier type.
    pub identifier_type: IdentifierType,
    /// The invitation sent with it, once invitations exist.
    pub invitation_id: Option<String>,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Unix milliseconds.
    pub updated_at: i64,
}

/// A validated entry to add (the admin builds it from `lists::parse_entry`).
#[derive(Debug, Clone)]
pub struct NewEntry {
    /// Display form (see [`StoredEntry::identifier`]).
    pub identifier: String,
    /// Dedup key (see [`StoredEntry::key`]).
    pub key: String,
    /// Clerk's identifier type.
    pub identifier_type: IdentifierType,
}

/// Restriction values set through the API; `None` = not set, the config decides.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RestrictionOverrides {
    /// Enforce the allow list (even when empty).
    pub allowlist: Option<bool>,
    /// Enforce the block list.
    pub blocklist: Option<bool>,
    /// Skip both lists on sign-in.
    pub allowlist_blocklist_disabled_on_sign_in: Option<bool>,
    /// Refuse `+tag` style subaddresses.
    pub block_email_subaddresses: Option<bool>,
    /// Refuse known disposable email domains.
    pub block_disposable_email_domains: Option<bool>,
}

impl RestrictionOverrides {
    /// `self` with every `Some` field of `patch` applied; `None` fields keep `self`'s value.
    pub fn merged(self, patch: RestrictionOverrides) -> RestrictionOverrides {
        RestrictionOverrides {
            allowlist: patch.allowlist.or(self.allowlist),
            blocklist: patch.blocklist.or(self.blocklist),
            allowlist_blocklist_disabled_on_sign_in: patch
                .allowlist_blocklist_disabled_on_sign_in
                .or(self.allowlist_blocklist_disabled_on_sign_in),
            block_email_subaddresses: patch
                .block_email_subaddresses
                .or(self.block_email_subaddresses),
            block_disposable_email_domains: patch
                .block_disposable_email_domains
                .or(self.block_disposable_email_domains),
        }
    }
}

/// Everything in the store, read at start-up and after a replica notices a change.
#[derive(Debug, Clone, Default)]
pub struct StoreState {
    /// All entries of both lists.
    pub entries: Vec<StoredEntry>,
    /// The stored overrides.
    pub restrictions: RestrictionOverrides,
}

/// A committed change, in commit order. The reloader applies it to the live gate.
#[derive(Debug, Clone)]
pub enum Change {
    /// An entry was added.
    Added(StoredEntry),
    /// An entry was removed.
    Removed(StoredEntry),
    /// The full new overrides.
    Restrictions(RestrictionOverrides),
    /// A whole list was replaced (a [`BulkOp::Replace`], e.g. the Magic API's PUT).
    Replaced {
        /// Which list.
        list: ListKind,
        /// Its new entries.
        entries: Vec<StoredEntry>,
    },
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// `(list, key)` is taken.
    #[error("an entry with the same identifier already exists: {existing}")]
    Duplicate {
        /// The existing row's identifier.
        existing: String,
        /// The existing row's id.
        id: String,
    },
    /// No entry with that id in that list (or no invitation with that id).
    #[error("no entry with id {0}")]
    NotFound(String),
    /// Pending invitations exist for these identifiers (or one appears twice in the call);
    /// nothing was written.
    #[error("there are already pending invitations for {}", identifiers.join(", "))]
    DuplicateInvitation {
        /// Every duplicate identifier of the call, in order.
        identifiers: Vec<String>,
    },
    /// The invitation was revoked already.
    #[error("invitation {0} is already revoked")]
    InvitationAlreadyRevoked(String),
    /// The invitation was accepted already.
    #[error("invitation {0} is already accepted")]
    InvitationAlreadyAccepted(String),
    /// A bulk write would leave more entries in `list` than its limit; nothing was written.
    #[error(
        "the {list} list would hold {total} API-managed entries, more than the {limit} allowed"
    )]
    LimitExceeded {
        /// Which list.
        list: ListKind,
        /// How many API-managed entries it would hold.
        total: usize,
        /// How many it may hold.
        limit: usize,
        /// The first entries past the limit (at most [`bulk::NAMED_OFFENDERS`]).
        over: Vec<String>,
    },
    /// I/O, SQLite errors, the writer gone.
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    /// The store could not be opened (including a schema newer than this build knows).
    #[error("cannot open the store at {path}: {message}")]
    Open {
        /// The database path.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

/// Takes `<db>.lock` for this process until the file returned is dropped: one gate per
/// store. Two gates on one database would each send every invitation (a delivery's claim is
/// a check, not a lease) and neither would apply the other's writes to its lists. Refused
/// while another process holds it (`idgate check` reads the store without it).
pub fn lock_exclusive(db: &Path) -> Result<std::fs::File, StoreError> {
    let err = |message: String| StoreError::Open {
        path: db.to_path_buf(),
        message,
    };
    let parent = db
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent)
        .map_err(|e| err(format!("creating {}: {e}", parent.display())))?;
    // Named after the file SQLite opens (symlinks resolved): two configs naming one
    // database by different paths take the same lock.
    let real = std::fs::canonicalize(db).or_else(|_| {
        std::fs::canonicalize(parent).map(|p| p.join(db.file_name().unwrap_or_default()))
    });
    let real = real.map_err(|e| err(format!("resolving {}: {e}", db.display())))?;
    let mut name = real.into_os_string();
    name.push(".lock");
    let path = PathBuf::from(name);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| err(format!("opening {}: {e}", path.display())))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(err(format!(
            "another idgate process uses this store (it holds {}); run one gate per store",
            path.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(err(format!("locking {}: {e}", path.display())))
        }
    }
}

/// The store. An enum over backends (SQLite now; PostgreSQL next) so callers never change.
/// Cloning is cheap (an `Arc` inside); the backend shuts down when the last clone is dropped.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Store {
    /// The embedded SQLite backend.
    Sqlite(SqliteStore),
}

/// Told each store op's name and latency (see [`Store::set_op_observer`]).
pub type OpObserver = std::sync::Arc<dyn Fn(&'static str, std::time::Duration) + Send + Sync>;

/// Runs one backend call, timed, and reports it to the op observer.
macro_rules! timed {
    ($store:ident, $op:literal, $s:ident => $call:expr) => {{
        let started = std::time::Instant::now();
        let out = match $store {
            Store::Sqlite($s) => $call.await,
        };
        $store.observe($op, started.elapsed());
        out
    }};
}

impl Store {
    /// Opens (creating it and its parent directories if needed) the SQLite store at `path`:
    /// WAL, `synchronous=FULL`, `foreign_keys=ON`, busy timeout, migrations applied.
    pub fn open_sqlite(path: &Path) -> Result<Store, StoreError> {
        SqliteStore::open(path).map(Store::Sqlite)
    }

    /// The SQLite backend, if that is what this is.
    pub fn as_sqlite(&self) -> Option<&SqliteStore> {
        match self {
            Store::Sqlite(s) => Some(s),
        }
    }

    /// Installs the function that applies committed changes to the live gate. It runs on the
    /// writer thread after each commit, in commit order, before the writers are answered —
    /// that is what makes admin writes read-your-writes without races between concurrent
    /// writers. A PostgreSQL backend calls it for changes other replicas committed too.
    pub fn set_commit_hook(&self, hook: sqlite::CommitHook) {
        match self {
            Store::Sqlite(s) => s.set_commit_hook(hook),
        }
    }

    /// Installs the function told how long each store op took (op name, latency as the
    /// caller saw it: queueing, group commit and the commit hook included). The gate feeds it
    /// into `idgate_store_op_duration_seconds`; the store itself knows nothing of metrics.
    pub fn set_op_observer(&self, observer: OpObserver) {
        match self {
            Store::Sqlite(s) => s.set_op_observer(observer),
        }
    }

    fn observe(&self, op: &'static str, elapsed: std::time::Duration) {
        let observer = match self {
            Store::Sqlite(s) => s.op_observer(),
        };
        if let Some(f) = observer {
            f(op, elapsed);
        }
    }

    /// Everything in the store (blocking; for start-up).
    pub fn load(&self) -> Result<StoreState, StoreError> {
        match self {
            Store::Sqlite(s) => s.load(),
        }
    }

    /// Adds an entry; `Ok` means committed durably.
    pub async fn insert(&self, list: ListKind, e: NewEntry) -> Result<StoredEntry, StoreError> {
        timed!(self, "insert", s => s.insert(list, e))
    }

    /// Removes the entry `id` from `list`; `Ok` (the removed row) means committed durably.
    pub async fn delete(&self, list: ListKind, id: &str) -> Result<StoredEntry, StoreError> {
        timed!(self, "delete", s => s.delete(list, id))
    }

    /// Merges the `Some` fields of `patch` into the stored overrides and returns the full
    /// result; `Ok` means committed durably.
    pub async fn update_restrictions(
        &self,
        patch: RestrictionOverrides,
    ) -> Result<RestrictionOverrides, StoreError> {
        timed!(self, "update_restrictions", s => s.update_restrictions(patch))
    }

    /// Replaces, appends to or removes from one or both lists as one op: one transaction, one
    /// commit, one application to the live gate (see [`bulk`]). `Ok` means committed durably
    /// and enforced; any error means nothing was written.
    pub async fn bulk(&self, writes: Vec<BulkWrite>) -> Result<Vec<BulkResult>, StoreError> {
        timed!(self, "bulk", s => s.bulk(writes))
    }

    /// A page of `list`, newest first (`created_at` desc, `id` desc), and the list's total.
    /// `limit: None` = no limit.
    pub async fn list(
        &self,
        list: ListKind,
        limit: Option<usize>,
        offset: usize,
    ) -> Result<(Vec<StoredEntry>, usize), StoreError> {
        timed!(self, "list", s => s.list(list, limit, offset))
    }

    /// Every identifier of `list`, oldest first (exports).
    pub async fn identifiers(&self, list: ListKind) -> Result<Vec<String>, StoreError> {
        timed!(self, "identifiers", s => s.identifiers(list))
    }

    /// The entry of `list` whose dedup key is `key`.
    pub async fn get_by_key(
        &self,
        list: ListKind,
        key: &str,
    ) -> Result<Option<StoredEntry>, StoreError> {
        timed!(self, "get_by_key", s => s.get_by_key(list, key))
    }

    /// Creates invitations as one op (single create or a bulk of ≤ 10): any duplicate fails
    /// the whole call with [`StoreError::DuplicateInvitation`] naming all of them, and nothing
    /// is written. Items with `deliver` get their delivery row in the same transaction.
    pub async fn create_invitations(
        &self,
        items: Vec<NewInvitation>,
    ) -> Result<Vec<Invitation>, StoreError> {
        timed!(self, "create_invitations", s => s.create_invitations(items))
    }

    /// Adds `entry` to the allow list together with an invitation (a pending one for the
    /// identifier is reused, else `invitation` is created) and its delivery, in one
    /// transaction; the entry's `invitation_id` is set. Duplicate entry → [`StoreError::Duplicate`].
    pub async fn insert_invited(
        &self,
        entry: NewEntry,
        invitation: NewInvitation,
    ) -> Result<(StoredEntry, Invitation), StoreError> {
        timed!(self, "insert_invited", s => s.insert_invited(entry, invitation))
    }

    /// Revokes invitation `id` (and gives up its pending deliveries). Errors: `NotFound`,
    /// `InvitationAlreadyRevoked`, `InvitationAlreadyAccepted`.
    pub async fn revoke_invitation(&self, id: &str) -> Result<Invitation, StoreError> {
        timed!(self, "revoke_invitation", s => s.revoke_invitation(id))
    }

    /// Deletes invitation `id` of any status, with its deliveries; returns it as it was.
    pub async fn delete_invitation(&self, id: &str) -> Result<Invitation, StoreError> {
        timed!(self, "delete_invitation", s => s.delete_invitation(id))
    }

    /// Marks the pending, not past-due invitations for canonical `identifier` accepted.
    pub async fn accept_invitations(&self, identifier: &str) -> Result<usize, StoreError> {
        timed!(self, "accept_invitations", s => s.accept_invitations(identifier))
    }

    /// The expiry sweep: pending invitations past `expires_at` become `expired`.
    pub async fn expire_invitations(&self) -> Result<usize, StoreError> {
        timed!(self, "expire_invitations", s => s.expire_invitations())
    }

    /// A page of invitations and the number matching `q` (past-due pending rows read as
    /// `expired`).
    pub async fn list_invitations(
        &self,
        q: InvitationQuery,
    ) -> Result<(Vec<Invitation>, usize), StoreError> {
        timed!(self, "list_invitations", s => s.list_invitations(q))
    }

    /// One invitation.
    pub async fn get_invitation(&self, id: &str) -> Result<Option<Invitation>, StoreError> {
        timed!(self, "get_invitation", s => s.get_invitation(id))
    }

    /// Deliveries in state pending with `next_attempt_at <= now` whose invitation is still
    /// pending and not past due; oldest first.
    pub async fn due_deliveries(
        &self,
        now: i64,
        limit: usize,
    ) -> Result<Vec<Delivery>, StoreError> {
        timed!(self, "due_deliveries", s => s.due_deliveries(now, limit))
    }

    /// Every delivery of one invitation, oldest first.
    pub async fn deliveries_of(&self, invitation_id: &str) -> Result<Vec<Delivery>, StoreError> {
        timed!(self, "deliveries_of", s => s.deliveries_of(invitation_id))
    }

    /// The last check before sending delivery `id`, run on the writer so it is ordered after
    /// every write that returned before it (a revoke that answered 200 while the worker was
    /// reading a batch is honoured). True only if the delivery is still `pending` and its
    /// invitation is `pending` and not past due at `now`; otherwise false, and if the
    /// invitation is no longer pending the delivery is given up (`failed`, last_error
    /// `invitation revoked` / `accepted` / `expired`). A true claim changes nothing.
    pub async fn claim_delivery(&self, id: i64, now: i64) -> Result<bool, StoreError> {
        timed!(self, "claim_delivery", s => s.claim_delivery(id, now))
    }

    /// Marks a delivery sent: `pending → sent` only (a `failed` one stays failed); a second
    /// mark of a `sent` one changes nothing.
    pub async fn delivery_sent(&self, id: i64, at: i64) -> Result<(), StoreError> {
        timed!(self, "delivery_sent", s => s.delivery_sent(id, at))
    }

    /// Records a failed attempt and the next try.
    pub async fn delivery_retry(
        &self,
        id: i64,
        attempts: u32,
        next_attempt_at: i64,
        error: String,
    ) -> Result<(), StoreError> {
        timed!(self, "delivery_retry", s => s.delivery_retry(id, attempts, next_attempt_at, error))
    }

    /// Gives a delivery up (`failed`).
    pub async fn delivery_give_up(&self, id: i64, error: String) -> Result<(), StoreError> {
        timed!(self, "delivery_give_up", s => s.delivery_give_up(id, error))
    }

    /// Outbox totals: pending / sent / failed and the oldest pending `created_at`.
    pub async fn delivery_counts(&self) -> Result<DeliveryCounts, StoreError> {
        timed!(self, "delivery_counts", s => s.delivery_counts())
    }

    /// A number that changes after every committed op that may have added a pending
    /// invitation; with [`Store::pending_invitation_identifiers`] it lets the acceptance task
    /// keep an in-memory filter and skip the store for sign-ups nobody was invited to.
    pub fn invitations_version(&self) -> u64 {
        match self {
            Store::Sqlite(s) => s.invitations_version(),
        }
    }

    /// Every identifier that has a pending invitation (past-due ones included).
    pub async fn pending_invitation_identifiers(
        &self,
    ) -> Result<std::collections::HashSet<String>, StoreError> {
        timed!(self, "pending_invitation_identifiers", s => s.pending_invitation_identifiers())
    }

    /// Notified after a commit that added delivery rows.
    pub fn deliveries_notify(&self) -> std::sync::Arc<tokio::sync::Notify> {
        match self {
            Store::Sqlite(s) => s.deliveries_notify(),
        }
    }

    /// Every change committed from now on, in commit order. A receiver that falls more than
    /// 1024 changes behind gets `Lagged` and should re-read with [`Store::load`].
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Change> {
        match self {
            Store::Sqlite(s) => s.subscribe(),
        }
    }
}
