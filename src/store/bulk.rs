//! Bulk list writes (issue #4, the Magic access-control API and `idgate lists import`):
//! replace, append or remove many entries of one or both lists as **one op**, so one call is
//! one SAVEPOINT in one transaction, one commit and one application to the live gate.
//!
//! Owns the op types ([`BulkWrite`], [`BulkOp`], [`BulkResult`]) and the SQL that runs them on
//! the writer's connection ([`run`]). The per-list limit is checked inside the transaction,
//! against the rows actually there, so concurrent writers cannot together pass it; a write
//! over the limit fails as a whole ([`StoreError::LimitExceeded`]) and changes nothing.
//!
//! Changes published for the gate: a [`BulkOp::Replace`] is one [`Change::Replaced`] with the
//! list's full new content (swapped in one step); an append or a removal is one
//! [`Change::Added`] / [`Change::Removed`] per entry, in order (the reloader applies a run of
//! them under one write lock).
//!
//! Removing an allow-list entry (by a replace or a remove) revokes the pending invitations for
//! its identifier and gives up their deliveries in the same op, as deleting it singly does.

use std::collections::{HashMap, HashSet};

use rusqlite::{Connection, OptionalExtension, params};

use super::ids::new_id;
use super::invitations::revoke_pending_for;
use super::sqlite::{COLUMNS, now_ms, row_to_entry, unavailable};
use super::{Change, ListKind, NewEntry, StoreError, StoredEntry, id_prefix};

/// How many offending entries a [`StoreError::LimitExceeded`] names.
pub const NAMED_OFFENDERS: usize = 10;

/// What to do to one list.
#[derive(Debug, Clone)]
pub enum BulkOp {
    /// The list's API-managed entries become exactly `entries` (entries already there keep
    /// their id and timestamps; duplicates by key are dropped, the first kept), and the rows
    /// whose key is in `keep` stay if they are there (the caller's entries that the config or
    /// a list file holds: not added to the store, but not taken from it either; decided in
    /// the transaction, so a row written a moment before is kept too).
    Replace {
        entries: Vec<NewEntry>,
        keep: Vec<String>,
    },
    /// These are added; those whose key is already there are reported, not errors.
    Append(Vec<NewEntry>),
    /// The entries with these keys are removed; keys not there are reported, not errors.
    Remove(Vec<NewEntry>),
}

/// One list's part of a bulk write.
#[derive(Debug, Clone)]
pub struct BulkWrite {
    /// Which list.
    pub list: ListKind,
    /// What to do.
    pub op: BulkOp,
    /// The most API-managed entries the list may hold afterwards (the caller subtracts what
    /// the config and list files hold from `lists.max_entries`).
    pub limit: usize,
}

/// What one [`BulkWrite`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BulkResult {
    /// Rows added.
    pub added: Vec<StoredEntry>,
    /// Rows removed.
    pub removed: Vec<StoredEntry>,
    /// Identifiers left as they were: already there (replace, append) or not there (remove).
    pub unchanged: Vec<String>,
    /// API-managed entries of the list afterwards.
    pub total: usize,
    /// For a replace: the list's whole new content (what the gate swaps in).
    pub replaced: Option<Vec<StoredEntry>>,
}

/// Runs every write on `conn` (inside the caller's SAVEPOINT); the first error fails them all.
pub(crate) fn run(conn: &Connection, writes: &[BulkWrite]) -> Result<Vec<BulkResult>, StoreError> {
    writes
        .iter()
        .map(|w| match &w.op {
            BulkOp::Replace { entries, keep } => replace(conn, w.list, entries, keep, w.limit),
            BulkOp::Append(entries) => append(conn, w.list, entries, w.limit),
            BulkOp::Remove(entries) => remove(conn, w.list, entries),
        })
        .collect()
}

/// The changes a committed bulk write publishes, in order.
pub(crate) fn changes(writes: &[BulkWrite], results: &[BulkResult]) -> Vec<Change> {
    let mut out = Vec::new();
    for (w, r) in writes.iter().zip(results) {
        match &r.replaced {
            Some(entries) => out.push(Change::Replaced {
                list: w.list,
                entries: entries.clone(),
            }),
            None => {
                out.extend(r.removed.iter().cloned().map(Change::Removed));
                out.extend(r.added.iter().cloned().map(Change::Added));
            }
        }
    }
    out
}

fn over_limit(list: ListKind, total: usize, limit: usize, over: &[&str]) -> StoreError {
    StoreError::LimitExceeded {
        list,
        total,
        limit,
        over: over
            .iter()
            .take(NAMED_OFFENDERS)
            .map(|s| (*s).to_owned())
            .collect(),
    }
}

fn count(conn: &Connection, list: ListKind) -> Result<usize, StoreError> {
    let n: i64 = conn
        .prepare_cached("SELECT COUNT(*) FROM entries WHERE list = ?1")
        .and_then(|mut s| s.query_row([list.as_str()], |r| r.get(0)))
        .map_err(unavailable)?;
    Ok(usize::try_from(n).unwrap_or(0))
}

/// Inserts `e` unless its key is there; `None` when it was.
fn insert_new(
    conn: &Connection,
    list: ListKind,
    e: &NewEntry,
    now: i64,
) -> Result<Option<StoredEntry>, StoreError> {
    let id = new_id(id_prefix(list));
    let n = conn
        .prepare_cached(&format!(
            "INSERT INTO entries ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, NULL, ?6, ?6) \
             ON CONFLICT (list, key) DO NOTHING"
        ))
        .and_then(|mut s| {
            s.execute(params![
                id,
                list.as_str(),
                e.identifier,
                e.key,
                e.identifier_type.as_str(),
                now
            ])
        })
        .map_err(unavailable)?;
    Ok((n == 1).then(|| StoredEntry {
        id,
        list,
        identifier: e.identifier.clone(),
        key: e.key.clone(),
        identifier_type: e.identifier_type,
        invitation_id: None,
        created_at: now,
        updated_at: now,
    }))
}

fn replace(
    conn: &Connection,
    list: ListKind,
    entries: &[NewEntry],
    keep: &[String],
    limit: usize,
) -> Result<BulkResult, StoreError> {
    let keep: HashSet<&str> = keep.iter().map(String::as_str).collect();
    let mut seen = HashSet::with_capacity(entries.len());
    let wanted: Vec<&NewEntry> = entries
        .iter()
        .filter(|e| seen.insert(e.key.as_str()))
        .collect();
    if wanted.len() > limit {
        let over: Vec<&str> = wanted
            .iter()
            .skip(limit)
            .map(|e| e.identifier.as_str())
            .collect();
        return Err(over_limit(list, wanted.len(), limit, &over));
    }
    let existing: Vec<StoredEntry> = {
        let mut stmt = conn
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM entries WHERE list = ?1 ORDER BY rowid"
            ))
            .map_err(unavailable)?;
        let rows = stmt
            .query_map([list.as_str()], row_to_entry)
            .map_err(unavailable)?;
        rows.collect::<Result<_, _>>().map_err(unavailable)?
    };
    let mut result = BulkResult::default();
    let mut kept: HashMap<&str, &StoredEntry> = HashMap::with_capacity(existing.len());
    let now = now_ms();
    for e in &existing {
        if seen.contains(e.key.as_str()) || keep.contains(e.key.as_str()) {
            kept.insert(e.key.as_str(), e);
        } else {
            conn.prepare_cached("DELETE FROM entries WHERE id = ?1")
                .and_then(|mut s| s.execute([&e.id]))
                .map_err(unavailable)?;
            if list == ListKind::Allow {
                revoke_pending_for(conn, &e.identifier, now)?;
            }
            result.removed.push(e.clone());
        }
    }
    let mut content: Vec<StoredEntry> = existing
        .iter()
        .filter(|e| kept.contains_key(e.key.as_str()))
        .cloned()
        .collect();
    for e in wanted {
        if kept.contains_key(e.key.as_str()) {
            result.unchanged.push(e.identifier.clone());
            continue;
        }
        match insert_new(conn, list, e, now)? {
            Some(row) => {
                result.added.push(row.clone());
                content.push(row);
            }
            // Cannot happen (the key was deleted or never there); report it rather than panic.
            None => result.unchanged.push(e.identifier.clone()),
        }
    }
    result.total = content.len();
    result.replaced = Some(content);
    Ok(result)
}

fn append(
    conn: &Connection,
    list: ListKind,
    entries: &[NewEntry],
    limit: usize,
) -> Result<BulkResult, StoreError> {
    let before = count(conn, list)?;
    let now = now_ms();
    let mut result = BulkResult::default();
    for e in entries {
        match insert_new(conn, list, e, now)? {
            Some(row) => result.added.push(row),
            None => result.unchanged.push(e.identifier.clone()),
        }
    }
    result.total = before.saturating_add(result.added.len());
    if result.total > limit {
        let room = limit.saturating_sub(before);
        let over: Vec<&str> = result
            .added
            .iter()
            .skip(room)
            .map(|e| e.identifier.as_str())
            .collect();
        return Err(over_limit(list, result.total, limit, &over));
    }
    Ok(result)
}

fn remove(
    conn: &Connection,
    list: ListKind,
    entries: &[NewEntry],
) -> Result<BulkResult, StoreError> {
    let mut result = BulkResult::default();
    let now = now_ms();
    for e in entries {
        let row = conn
            .prepare_cached(&format!(
                "DELETE FROM entries WHERE list = ?1 AND key = ?2 RETURNING {COLUMNS}"
            ))
            .and_then(|mut s| {
                s.query_row(params![list.as_str(), e.key], row_to_entry)
                    .optional()
            })
            .map_err(unavailable)?;
        match row {
            Some(row) => {
                if list == ListKind::Allow {
                    revoke_pending_for(conn, &row.identifier, now)?;
                }
                result.removed.push(row);
            }
            None => result.unchanged.push(e.identifier.clone()),
        }
    }
    result.total = count(conn, list)?;
    Ok(result)
}
