//! Invitations and their deliveries (issue #9): the types, and the SQL that runs on the
//! writer's connection (inside its SAVEPOINT) or on the read connection.
//!
//! Owns: [`Invitation`] (Clerk's invitation record, tables `invitations`), [`Delivery`] (one
//! message to send — the durable outbox, table `deliveries`), the op set the writer runs
//! ([`Op`]) and the read queries. The writer thread and the [`Store`](super::Store) methods live
//! in [`super::sqlite`] / [`super`].
//!
//! ## Invariants
//! - Creating invitations (single or bulk) is one op: one duplicate or bad item fails the
//!   whole op ([`StoreError::DuplicateInvitation`] names **all** duplicates) and writes nothing.
//!   A duplicate is a `pending` (not past-due) or `accepted` invitation for the same
//!   identifier (unless the item says `ignore_existing`), or the same identifier twice in one
//!   call; `revoked` and `expired` ones do not block a new invitation.
//! - An allowlist entry added with an invitation is inserted with the invitation (a pending one
//!   for that identifier is reused) and its delivery row in the same op; `invitation_id` is set.
//! - Revoking, expiring, accepting or deleting an invitation gives up its pending deliveries in
//!   the same op (so does removing its allowlist entry, singly or in bulk);
//!   [`due_deliveries`](super::Store::due_deliveries) only returns deliveries whose invitation
//!   is still pending and not past due.
//! - A delivery is sent only after [`Op::Claim`] said yes on the writer, i.e. after every
//!   revoke committed before it: a claim is true only for a `pending` delivery of a `pending`,
//!   not past-due invitation (otherwise the delivery is given up with the reason). A delivery
//!   moves `pending → sent` or `pending → failed`, never out of `sent` or `failed`.
//! - Reads never show a past-due `pending` invitation as pending: the status is computed at
//!   read time (`expired`), whether or not the sweep ([`Op::ExpireDue`]) has stored it yet.
//! - Tokens are 32 base62 characters from the OS random source (≈190 bits); if the OS source
//!   fails the op fails (no fallback for secrets). They are never logged.

use std::collections::HashSet;
use std::fmt;

use rusqlite::types::Type;
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::ids::new_id;
use super::sqlite::{insert_entry_with, unavailable};
use super::{IdentifierType, ListKind, NewEntry, StoreError, StoredEntry};

/// An invitation's state (Clerk's four).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InvitationStatus {
    /// Sent (or recorded), waiting for the sign-up.
    Pending,
    /// The invited identifier signed up through the gate.
    Accepted,
    /// Revoked by an operator (or by deleting its allowlist entry).
    Revoked,
    /// Past `expires_at` while pending.
    Expired,
}

impl InvitationStatus {
    /// The wire and storage form.
    pub fn as_str(self) -> &'static str {
        match self {
            InvitationStatus::Pending => "pending",
            InvitationStatus::Accepted => "accepted",
            InvitationStatus::Revoked => "revoked",
            InvitationStatus::Expired => "expired",
        }
    }

    /// The inverse of [`InvitationStatus::as_str`].
    pub fn from_name(s: &str) -> Option<InvitationStatus> {
        match s {
            "pending" => Some(InvitationStatus::Pending),
            "accepted" => Some(InvitationStatus::Accepted),
            "revoked" => Some(InvitationStatus::Revoked),
            "expired" => Some(InvitationStatus::Expired),
            _ => None,
        }
    }
}

/// An invitation record. `Debug` shows the token as `<redacted>`.
#[derive(Clone, PartialEq)]
pub struct Invitation {
    /// `inv_` + 27 base62 characters.
    pub id: String,
    /// Canonical email (or E.164 phone for allowlist SMS invitations).
    pub identifier: String,
    /// Email or phone.
    pub identifier_type: IdentifierType,
    /// Clerk's `public_metadata` (an object).
    pub public_metadata: serde_json::Value,
    /// Where the accept link should lead afterwards (Clerk's `redirect_url`).
    pub redirect_url: Option<String>,
    /// The state (computed at read time for past-due pending rows).
    pub status: InvitationStatus,
    /// Random secret for the link; never logged.
    pub token: String,
    /// Unix ms; `None` = never expires.
    pub expires_at: Option<i64>,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms.
    pub updated_at: i64,
}

impl fmt::Debug for Invitation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Invitation")
            .field("id", &self.id)
            .field("identifier", &self.identifier)
            .field("identifier_type", &self.identifier_type)
            .field("public_metadata", &self.public_metadata)
            .field("redirect_url", &self.redirect_url)
            .field("status", &self.status)
            .field("token", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .field("created_at", &self.created_at)
            .field("updated_at", &self.updated_at)
            .finish()
    }
}

/// An invitation to create.
#[derive(Debug, Clone)]
pub struct NewInvitation {
    /// Canonical identifier.
    pub identifier: String,
    /// Email or phone.
    pub identifier_type: IdentifierType,
    /// An object (`{}` when not given).
    pub public_metadata: serde_json::Value,
    /// Clerk's `redirect_url`.
    pub redirect_url: Option<String>,
    /// Unix ms; `None` = never.
    pub expires_at: Option<i64>,
    /// Create even if a pending invitation for the identifier exists.
    pub ignore_existing: bool,
    /// Queue a message on this channel in the same transaction.
    pub deliver: Option<Channel>,
}

/// How a delivery is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// SMTP.
    Email,
    /// The SMS webhook.
    Sms,
}

impl Channel {
    /// Storage form.
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Email => "email",
            Channel::Sms => "sms",
        }
    }

    /// The channel that reaches an identifier of type `ty` (wallets have none).
    pub fn for_type(ty: IdentifierType) -> Option<Channel> {
        match ty {
            IdentifierType::EmailAddress => Some(Channel::Email),
            IdentifierType::PhoneNumber => Some(Channel::Sms),
            IdentifierType::Web3Wallet => None,
        }
    }
}

/// A delivery's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// Waiting to be (re)tried.
    Pending,
    /// The relay accepted it.
    Sent,
    /// Given up: expired, invitation revoked, or the worker gave up.
    Failed,
}

impl DeliveryState {
    /// Storage form.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Sent => "sent",
            DeliveryState::Failed => "failed",
        }
    }
}

/// One message to send (a row of the durable outbox). `Debug` shows the token as
/// `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Never reused (`AUTOINCREMENT`), so a `Message-ID` built from it is stable and unique.
    pub id: i64,
    /// The invitation it announces.
    pub invitation_id: String,
    /// Email or SMS.
    pub channel: Channel,
    /// The identifier.
    pub recipient: String,
    /// The invitation's token (joined, for rendering).
    pub token: String,
    /// The invitation's expiry (joined, for rendering).
    pub expires_at: Option<i64>,
    /// Pending / sent / failed.
    pub state: DeliveryState,
    /// Attempts made so far.
    pub attempts: u32,
    /// Unix ms of the next attempt.
    pub next_attempt_at: i64,
    /// The last failure.
    pub last_error: Option<String>,
    /// When the relay accepted it.
    pub sent_at: Option<i64>,
    /// Unix ms.
    pub created_at: i64,
}

impl fmt::Debug for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("id", &self.id)
            .field("invitation_id", &self.invitation_id)
            .field("channel", &self.channel)
            .field("recipient", &self.recipient)
            .field("token", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .field("state", &self.state)
            .field("attempts", &self.attempts)
            .field("next_attempt_at", &self.next_attempt_at)
            .field("last_error", &self.last_error)
            .field("sent_at", &self.sent_at)
            .field("created_at", &self.created_at)
            .finish()
    }
}

/// Outbox totals for the status endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct DeliveryCounts {
    /// Waiting.
    pub pending: u64,
    /// Accepted by the relay.
    pub sent: u64,
    /// Given up.
    pub failed: u64,
    /// `created_at` of the oldest pending delivery.
    pub oldest_pending_created_at: Option<i64>,
}

/// Sort key of an invitation listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InvitationOrderField {
    /// `created_at` (default).
    #[default]
    CreatedAt,
    /// `email_address` (the identifier).
    EmailAddress,
    /// `expires_at`.
    ExpiresAt,
}

/// What to list.
#[derive(Debug, Clone, Default)]
pub struct InvitationQuery {
    /// `None` = every status except `revoked` (Clerk's default).
    pub status: Option<InvitationStatus>,
    /// Substring of the identifier (case-insensitive) or the exact id.
    pub query: Option<String>,
    /// Sort key.
    pub order_by: InvitationOrderField,
    /// Descending (Clerk's default `-created_at`).
    pub descending: bool,
    /// `Some(t)`: only invitations for identifiers of type `t` (Clerk's `GET /v1/invitations`
    /// lists email invitations only); `None` = every type.
    pub identifier_type: Option<IdentifierType>,
    /// `None` = everything.
    pub limit: Option<usize>,
    /// Rows to skip.
    pub offset: usize,
}

/// A write the writer thread runs (one SAVEPOINT each).
#[derive(Debug, Clone)]
pub(crate) enum Op {
    Create(Vec<NewInvitation>),
    AllowWithInvitation(NewEntry, NewInvitation),
    Revoke(String),
    Delete(String),
    Accept(String),
    ExpireDue,
    Claim {
        id: i64,
        now: i64,
    },
    DeliverySent {
        id: i64,
        at: i64,
    },
    DeliveryRetry {
        id: i64,
        attempts: u32,
        next_attempt_at: i64,
        error: String,
    },
    DeliveryGiveUp {
        id: i64,
        error: String,
    },
}

/// What an [`Op`] returns.
#[derive(Debug, Clone)]
pub(crate) enum Outcome {
    Invitations(Vec<Invitation>),
    Entry(StoredEntry, Invitation),
    Invitation(Invitation),
    Count(usize),
    Claimed(bool),
    Done,
}

impl Op {
    /// Whether this op may add delivery rows.
    pub(crate) fn may_queue(&self) -> bool {
        match self {
            Op::Create(items) => items.iter().any(|i| i.deliver.is_some()),
            Op::AllowWithInvitation(_, inv) => inv.deliver.is_some(),
            _ => false,
        }
    }
}

/// Runs `op` at `now` on the writer's connection.
pub(crate) fn run(conn: &Connection, op: &Op, now: i64) -> Result<Outcome, StoreError> {
    match op {
        Op::Create(items) => create(conn, items, now).map(Outcome::Invitations),
        Op::AllowWithInvitation(entry, inv) => {
            allow_with_invitation(conn, entry, inv, now).map(|(e, i)| Outcome::Entry(e, i))
        }
        Op::Revoke(id) => revoke(conn, id, now).map(Outcome::Invitation),
        Op::Delete(id) => delete(conn, id, now).map(Outcome::Invitation),
        Op::Accept(identifier) => accept(conn, identifier, now).map(Outcome::Count),
        Op::ExpireDue => expire_due(conn, now).map(Outcome::Count),
        Op::Claim { id, now } => claim(conn, *id, *now).map(Outcome::Claimed),
        Op::DeliverySent { id, at } => {
            // Only from pending: a delivery given up (revoked, accepted, expired) stays failed,
            // and a second mark of a sent one changes nothing.
            exec(
                conn,
                "UPDATE deliveries SET state = 'sent', sent_at = ?2, last_error = NULL \
                 WHERE id = ?1 AND state = 'pending'",
                params![id, at],
            )?;
            Ok(Outcome::Done)
        }
        Op::DeliveryRetry {
            id,
            attempts,
            next_attempt_at,
            error,
        } => {
            exec(
                conn,
                "UPDATE deliveries SET attempts = ?2, next_attempt_at = ?3, last_error = ?4 \
                 WHERE id = ?1 AND state = 'pending'",
                params![id, attempts, next_attempt_at, error],
            )?;
            Ok(Outcome::Done)
        }
        Op::DeliveryGiveUp { id, error } => {
            exec(
                conn,
                "UPDATE deliveries SET state = 'failed', last_error = ?2 \
                 WHERE id = ?1 AND state = 'pending'",
                params![id, error],
            )?;
            Ok(Outcome::Done)
        }
    }
}

const INV_COLUMNS: &str = "id, identifier, identifier_type, public_metadata, redirect_url, \
                           status, token, expires_at, created_at, updated_at";

/// The columns of a read, with the status computed at `?1` (now).
fn select_effective() -> String {
    "SELECT id, identifier, identifier_type, public_metadata, redirect_url, \
     CASE WHEN status = 'pending' AND expires_at IS NOT NULL AND expires_at <= ?1 \
     THEN 'expired' ELSE status END AS eff, token, expires_at, created_at, updated_at \
     FROM invitations"
        .to_owned()
}

fn exec(conn: &Connection, sql: &str, p: impl rusqlite::Params) -> Result<usize, StoreError> {
    conn.prepare_cached(sql)
        .and_then(|mut s| s.execute(p))
        .map_err(unavailable)
}

/// Marks every pending invitation past `expires_at` as expired and gives up its deliveries.
pub(crate) fn expire_due(conn: &Connection, now: i64) -> Result<usize, StoreError> {
    exec(
        conn,
        "UPDATE deliveries SET state = 'failed', last_error = 'invitation expired' \
         WHERE state = 'pending' AND invitation_id IN (SELECT id FROM invitations \
         WHERE status = 'pending' AND expires_at IS NOT NULL AND expires_at <= ?1)",
        [now],
    )?;
    exec(
        conn,
        "UPDATE invitations SET status = 'expired', updated_at = ?1 \
         WHERE status = 'pending' AND expires_at IS NOT NULL AND expires_at <= ?1",
        [now],
    )
}

/// Whether a `pending` (not past-due) or `accepted` invitation for `identifier` exists: the
/// ones that make a new invitation for it a duplicate.
fn blocking_exists(conn: &Connection, identifier: &str, now: i64) -> Result<bool, StoreError> {
    conn.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM invitations WHERE identifier = ?2 AND \
         (status = 'accepted' OR (status = 'pending' AND (expires_at IS NULL OR expires_at > ?1))))",
    )
    .and_then(|mut s| s.query_row(params![now, identifier], |r| r.get(0)))
    .map_err(unavailable)
}

fn pending_for(
    conn: &Connection,
    identifier: &str,
    now: i64,
) -> Result<Option<Invitation>, StoreError> {
    conn.prepare_cached(&format!(
        "{} WHERE identifier = ?2 AND status = 'pending' \
         AND (expires_at IS NULL OR expires_at > ?1) ORDER BY created_at DESC, rowid DESC LIMIT 1",
        select_effective()
    ))
    .and_then(|mut s| {
        s.query_row(params![now, identifier], row_to_invitation)
            .optional()
    })
    .map_err(unavailable)
}

fn create(
    conn: &Connection,
    items: &[NewInvitation],
    now: i64,
) -> Result<Vec<Invitation>, StoreError> {
    let mut seen = HashSet::with_capacity(items.len());
    let mut duplicates: Vec<String> = Vec::new();
    for item in items {
        let dup = !seen.insert(item.identifier.as_str())
            || (!item.ignore_existing && blocking_exists(conn, &item.identifier, now)?);
        if dup && !duplicates.contains(&item.identifier) {
            duplicates.push(item.identifier.clone());
        }
    }
    if !duplicates.is_empty() {
        return Err(StoreError::DuplicateInvitation {
            identifiers: duplicates,
        });
    }
    items
        .iter()
        .map(|i| insert_invitation(conn, i, now))
        .collect()
}

fn insert_invitation(
    conn: &Connection,
    n: &NewInvitation,
    now: i64,
) -> Result<Invitation, StoreError> {
    let inv = Invitation {
        id: new_id("inv_"),
        identifier: n.identifier.clone(),
        identifier_type: n.identifier_type,
        public_metadata: n.public_metadata.clone(),
        redirect_url: n.redirect_url.clone(),
        status: InvitationStatus::Pending,
        token: new_token()?,
        expires_at: n.expires_at,
        created_at: now,
        updated_at: now,
    };
    let metadata = serde_json::to_string(&inv.public_metadata)
        .map_err(|e| StoreError::Unavailable(format!("encoding public_metadata: {e}")))?;
    exec(
        conn,
        &format!(
            "INSERT INTO invitations ({INV_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9)"
        ),
        params![
            inv.id,
            inv.identifier,
            inv.identifier_type.as_str(),
            metadata,
            inv.redirect_url,
            inv.status.as_str(),
            inv.token,
            inv.expires_at,
            now
        ],
    )?;
    if let Some(channel) = n.deliver {
        queue(conn, &inv, channel, now)?;
    }
    Ok(inv)
}

fn queue(
    conn: &Connection,
    inv: &Invitation,
    channel: Channel,
    now: i64,
) -> Result<(), StoreError> {
    exec(
        conn,
        "INSERT INTO deliveries (invitation_id, channel, recipient, state, attempts, \
         next_attempt_at, created_at) VALUES (?1, ?2, ?3, 'pending', 0, ?4, ?4)",
        params![inv.id, channel.as_str(), inv.identifier, now],
    )?;
    Ok(())
}

fn allow_with_invitation(
    conn: &Connection,
    entry: &NewEntry,
    n: &NewInvitation,
    now: i64,
) -> Result<(StoredEntry, Invitation), StoreError> {
    let inv = match pending_for(conn, &n.identifier, now)? {
        Some(existing) => {
            // Its message is queued or sent already: not a second copy (with another
            // Message-ID, which receivers cannot drop). One that failed is queued again.
            if let Some(channel) = n.deliver
                && !delivery_underway(conn, &existing.id, channel)?
            {
                queue(conn, &existing, channel, now)?;
            }
            existing
        }
        None => insert_invitation(conn, n, now)?,
    };
    let stored = insert_entry_with(conn, ListKind::Allow, entry, Some(&inv.id))?;
    Ok((stored, inv))
}

/// Whether invitation `id` has a delivery on `channel` that is pending or sent.
fn delivery_underway(conn: &Connection, id: &str, channel: Channel) -> Result<bool, StoreError> {
    conn.prepare_cached(
        "SELECT 1 FROM deliveries WHERE invitation_id = ?1 AND channel = ?2 \
         AND state IN ('pending', 'sent') LIMIT 1",
    )
    .and_then(|mut s| s.exists(params![id, channel.as_str()]))
    .map_err(unavailable)
}

fn get_effective(conn: &Connection, id: &str, now: i64) -> Result<Option<Invitation>, StoreError> {
    conn.prepare_cached(&format!("{} WHERE id = ?2", select_effective()))
        .and_then(|mut s| s.query_row(params![now, id], row_to_invitation).optional())
        .map_err(unavailable)
}

fn give_up_deliveries(conn: &Connection, invitation_id: &str, why: &str) -> Result<(), StoreError> {
    exec(
        conn,
        "UPDATE deliveries SET state = 'failed', last_error = ?2 \
         WHERE invitation_id = ?1 AND state = 'pending'",
        params![invitation_id, why],
    )?;
    Ok(())
}

fn revoke(conn: &Connection, id: &str, now: i64) -> Result<Invitation, StoreError> {
    let mut inv =
        get_effective(conn, id, now)?.ok_or_else(|| StoreError::NotFound(id.to_owned()))?;
    match inv.status {
        InvitationStatus::Revoked => {
            return Err(StoreError::InvitationAlreadyRevoked(id.to_owned()));
        }
        InvitationStatus::Accepted => {
            return Err(StoreError::InvitationAlreadyAccepted(id.to_owned()));
        }
        InvitationStatus::Pending | InvitationStatus::Expired => {}
    }
    exec(
        conn,
        "UPDATE invitations SET status = 'revoked', updated_at = ?2 WHERE id = ?1",
        params![id, now],
    )?;
    give_up_deliveries(conn, id, "invitation revoked")?;
    inv.status = InvitationStatus::Revoked;
    inv.updated_at = now;
    Ok(inv)
}

/// Revokes the pending invitations for `identifier` (an allowlist entry was deleted).
pub(crate) fn revoke_pending_for(
    conn: &Connection,
    identifier: &str,
    now: i64,
) -> Result<usize, StoreError> {
    exec(
        conn,
        "UPDATE deliveries SET state = 'failed', last_error = 'invitation revoked' \
         WHERE state = 'pending' AND invitation_id IN \
         (SELECT id FROM invitations WHERE identifier = ?1 AND status = 'pending')",
        [identifier],
    )?;
    exec(
        conn,
        "UPDATE invitations SET status = 'revoked', updated_at = ?2 \
         WHERE identifier = ?1 AND status = 'pending'",
        params![identifier, now],
    )
}

fn delete(conn: &Connection, id: &str, now: i64) -> Result<Invitation, StoreError> {
    let inv = get_effective(conn, id, now)?.ok_or_else(|| StoreError::NotFound(id.to_owned()))?;
    // Deliveries go with it (ON DELETE CASCADE); entries that pointed at it stop pointing.
    exec(conn, "DELETE FROM invitations WHERE id = ?1", [id])?;
    exec(
        conn,
        "UPDATE entries SET invitation_id = NULL WHERE invitation_id = ?1",
        [id],
    )?;
    Ok(inv)
}

fn accept(conn: &Connection, identifier: &str, now: i64) -> Result<usize, StoreError> {
    exec(
        conn,
        "UPDATE deliveries SET state = 'failed', last_error = 'invitation accepted' \
         WHERE state = 'pending' AND invitation_id IN (SELECT id FROM invitations \
         WHERE identifier = ?1 AND status = 'pending' AND (expires_at IS NULL OR expires_at > ?2))",
        params![identifier, now],
    )?;
    exec(
        conn,
        "UPDATE invitations SET status = 'accepted', updated_at = ?2 \
         WHERE identifier = ?1 AND status = 'pending' \
         AND (expires_at IS NULL OR expires_at > ?2)",
        params![identifier, now],
    )
}

/// The last check before a delivery is sent (see the module's invariants): true only when
/// delivery `id` is `pending` and its invitation is `pending` and not past due at `now`. When
/// the invitation is no longer pending the delivery is given up with the reason (and a
/// past-due pending invitation is stored `expired`, as the sweep would); otherwise nothing
/// changes.
fn claim(conn: &Connection, id: i64, now: i64) -> Result<bool, StoreError> {
    let row: Option<(String, String, String)> = conn
        .prepare_cached(
            "SELECT d.state, i.id, CASE WHEN i.status = 'pending' AND i.expires_at IS NOT NULL \
             AND i.expires_at <= ?2 THEN 'expired' ELSE i.status END \
             FROM deliveries d JOIN invitations i ON i.id = d.invitation_id WHERE d.id = ?1",
        )
        .and_then(|mut s| {
            s.query_row(params![id, now], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .optional()
        })
        .map_err(unavailable)?;
    let Some((state, invitation_id, status)) = row else {
        // Deleted with its invitation.
        return Ok(false);
    };
    if state != "pending" {
        return Ok(false);
    }
    let why = match status.as_str() {
        "pending" => return Ok(true),
        "accepted" => "invitation accepted",
        "revoked" => "invitation revoked",
        _ => "invitation expired",
    };
    if status == "expired" {
        exec(
            conn,
            "UPDATE invitations SET status = 'expired', updated_at = ?2 \
             WHERE id = ?1 AND status = 'pending'",
            params![invitation_id, now],
        )?;
        give_up_deliveries(conn, &invitation_id, why)?;
    } else {
        exec(
            conn,
            "UPDATE deliveries SET state = 'failed', last_error = ?2 \
             WHERE id = ?1 AND state = 'pending'",
            params![id, why],
        )?;
    }
    Ok(false)
}

/// One invitation (status computed at `now`).
pub(crate) fn get(conn: &Connection, id: &str, now: i64) -> Result<Option<Invitation>, StoreError> {
    get_effective(conn, id, now)
}

/// A page of invitations and the total matching `q`, at `now`.
pub(crate) fn list(
    conn: &mut Connection,
    q: &InvitationQuery,
    now: i64,
) -> Result<(Vec<Invitation>, usize), StoreError> {
    let tx = conn.transaction().map_err(unavailable)?;
    let filter = "WHERE (?2 IS NULL AND eff <> 'revoked' OR eff = ?2) \
                  AND (?3 IS NULL OR instr(lower(identifier), lower(?3)) > 0 OR id = ?3) \
                  AND (?6 IS NULL OR identifier_type = ?6)";
    let status = q.status.map(InvitationStatus::as_str);
    let ty = q.identifier_type.map(IdentifierType::as_str);
    let query = q.query.as_deref().filter(|s| !s.is_empty());
    let key = match q.order_by {
        InvitationOrderField::CreatedAt => "created_at",
        InvitationOrderField::EmailAddress => "identifier",
        InvitationOrderField::ExpiresAt => "expires_at",
    };
    let dir = if q.descending { "DESC" } else { "ASC" };
    let limit = q.limit.map_or(-1, |l| i64::try_from(l).unwrap_or(i64::MAX));
    let offset = i64::try_from(q.offset).unwrap_or(i64::MAX);
    let page = {
        let sql = format!(
            "SELECT * FROM ({}) {filter} ORDER BY {key} {dir}, rowid {dir} LIMIT ?4 OFFSET ?5",
            select_effective().replace("SELECT id,", "SELECT rowid, id,")
        );
        let mut stmt = tx.prepare(&sql).map_err(unavailable)?;
        let rows = stmt
            .query_map(params![now, status, query, limit, offset, ty], |r| {
                row_to_invitation_at(r, 1)
            })
            .map_err(unavailable)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(unavailable)?
    };
    let total: i64 = tx
        .prepare(&format!(
            "SELECT COUNT(*) FROM ({}) {filter}",
            select_effective()
        ))
        // ?4/?5 (page) are unused here but bound: the numbering must match the filter's ?6.
        .and_then(|mut s| s.query_row(params![now, status, query, limit, offset, ty], |r| r.get(0)))
        .map_err(unavailable)?;
    tx.finish().map_err(unavailable)?;
    Ok((page, usize::try_from(total).unwrap_or(0)))
}

const DELIVERY_SELECT: &str = "SELECT d.id, d.invitation_id, d.channel, d.recipient, i.token, \
     i.expires_at, d.state, d.attempts, d.next_attempt_at, d.last_error, d.sent_at, d.created_at \
     FROM deliveries d JOIN invitations i ON i.id = d.invitation_id";

/// Pending deliveries due at `now` whose invitation is still pending and not past due.
pub(crate) fn due_deliveries(
    conn: &Connection,
    now: i64,
    limit: usize,
) -> Result<Vec<Delivery>, StoreError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut stmt = conn
        .prepare_cached(&format!(
            "{DELIVERY_SELECT} WHERE d.state = 'pending' AND d.next_attempt_at <= ?1 \
             AND i.status = 'pending' AND (i.expires_at IS NULL OR i.expires_at > ?1) \
             ORDER BY d.next_attempt_at, d.id LIMIT ?2"
        ))
        .map_err(unavailable)?;
    let rows = stmt
        .query_map(params![now, limit], row_to_delivery)
        .map_err(unavailable)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(unavailable)
}

/// Every delivery of one invitation, oldest first.
pub(crate) fn deliveries_of(
    conn: &Connection,
    invitation_id: &str,
) -> Result<Vec<Delivery>, StoreError> {
    let mut stmt = conn
        .prepare_cached(&format!(
            "{DELIVERY_SELECT} WHERE d.invitation_id = ?1 ORDER BY d.id"
        ))
        .map_err(unavailable)?;
    let rows = stmt
        .query_map([invitation_id], row_to_delivery)
        .map_err(unavailable)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(unavailable)
}

/// Outbox totals.
pub(crate) fn delivery_counts(conn: &Connection) -> Result<DeliveryCounts, StoreError> {
    conn.prepare_cached(
        "SELECT COALESCE(SUM(state = 'pending'), 0), COALESCE(SUM(state = 'sent'), 0), \
         COALESCE(SUM(state = 'failed'), 0), MIN(CASE WHEN state = 'pending' THEN created_at END) \
         FROM deliveries",
    )
    .and_then(|mut s| {
        s.query_row([], |r| {
            Ok(DeliveryCounts {
                pending: r.get::<_, i64>(0).map(|n| u64::try_from(n).unwrap_or(0))?,
                sent: r.get::<_, i64>(1).map(|n| u64::try_from(n).unwrap_or(0))?,
                failed: r.get::<_, i64>(2).map(|n| u64::try_from(n).unwrap_or(0))?,
                oldest_pending_created_at: r.get(3)?,
            })
        })
    })
    .map_err(unavailable)
}

fn row_to_invitation(row: &Row<'_>) -> rusqlite::Result<Invitation> {
    row_to_invitation_at(row, 0)
}

fn row_to_invitation_at(row: &Row<'_>, base: usize) -> rusqlite::Result<Invitation> {
    let ty: String = row.get(base + 2)?;
    let identifier_type = IdentifierType::from_name(&ty).ok_or_else(|| bad(base + 2, ty))?;
    let metadata: String = row.get(base + 3)?;
    let public_metadata = serde_json::from_str(&metadata).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(base + 3, Type::Text, Box::new(e))
    })?;
    let status: String = row.get(base + 5)?;
    let status = InvitationStatus::from_name(&status).ok_or_else(|| bad(base + 5, status))?;
    Ok(Invitation {
        id: row.get(base)?,
        identifier: row.get(base + 1)?,
        identifier_type,
        public_metadata,
        redirect_url: row.get(base + 4)?,
        status,
        token: row.get(base + 6)?,
        expires_at: row.get(base + 7)?,
        created_at: row.get(base + 8)?,
        updated_at: row.get(base + 9)?,
    })
}

fn row_to_delivery(row: &Row<'_>) -> rusqlite::Result<Delivery> {
    let channel: String = row.get(2)?;
    let channel = match channel.as_str() {
        "email" => Channel::Email,
        "sms" => Channel::Sms,
        _ => return Err(bad(2, channel)),
    };
    let state: String = row.get(6)?;
    let state = match state.as_str() {
        "pending" => DeliveryState::Pending,
        "sent" => DeliveryState::Sent,
        "failed" => DeliveryState::Failed,
        _ => return Err(bad(6, state)),
    };
    Ok(Delivery {
        id: row.get(0)?,
        invitation_id: row.get(1)?,
        channel,
        recipient: row.get(3)?,
        token: row.get(4)?,
        expires_at: row.get(5)?,
        state,
        attempts: row.get(7)?,
        next_attempt_at: row.get(8)?,
        last_error: row.get(9)?,
        sent_at: row.get(10)?,
        created_at: row.get(11)?,
    })
}

/// A value in the file that this build does not understand.
#[derive(Debug, thiserror::Error)]
#[error("unknown value {0:?} in the invitations tables")]
struct BadValue(String);

fn bad(idx: usize, value: String) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(idx, Type::Text, Box::new(BadValue(value)))
}

const TOKEN_LEN: usize = 32;
const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// 32 unbiased base62 characters from the OS random source (rejection sampling).
pub(crate) fn new_token() -> Result<String, StoreError> {
    let mut out = String::with_capacity(TOKEN_LEN);
    let mut buf = [0u8; 64];
    while out.len() < TOKEN_LEN {
        getrandom::fill(&mut buf)
            .map_err(|e| StoreError::Unavailable(format!("no OS randomness for a token: {e}")))?;
        for &b in &buf {
            // 248 = 4 × 62: bytes at or above it would bias the low digits.
            if b < 248
                && out.len() < TOKEN_LEN
                && let Some(&c) = ALPHABET.get(usize::from(b % 62))
            {
                out.push(char::from(c));
            }
        }
    }
    Ok(out)
}

/// Every identifier with a pending invitation (for the acceptance filter).
pub(crate) fn pending_identifiers(conn: &mut Connection) -> Result<HashSet<String>, StoreError> {
    let mut stmt = conn
        .prepare_cached("SELECT DISTINCT identifier FROM invitations WHERE status = 'pending'")
        .map_err(unavailable)?;
    let rows = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .map_err(unavailable)?;
    rows.collect::<Result<_, _>>().map_err(unavailable)
}
