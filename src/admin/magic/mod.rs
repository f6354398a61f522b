//! The Magic-compatible access-control API (issue #4):
//! `GET/PUT/PATCH/DELETE /v1/api/magic_client/access_control` on the admin listener.
//!
//! | method | what it does to the API-managed entries |
//! |--------|------------------------------------------|
//! | GET    | returns both lists (and, apart, the config/list-file entries and how they apply) |
//! | PUT    | replaces each list given in the body with the given entries |
//! | PATCH  | appends the given entries (entries already there are reported, not errors) |
//! | DELETE | removes the given entries (entries not there are reported, not errors) |
//!
//! Auth: `X-Magic-Secret-Key` against `admin.secret_keys`, with the same constant-time
//! comparison as the Clerk API ([`crate::admin::auth::key_matches`]), before any of the body
//! is read (a caller without a key cannot make the gate buffer 16 MiB). `target_client_id` (body,
//! or query on GET) must equal `admin.magic_client_id`; with none configured every call is
//! refused. Answers use Magic's envelope ([`error`]).
//!
//! Writes: parse ([`body`]) → validate every entry (all malformed ones reported with their
//! positions; any → nothing changes) → one [`crate::store::Store::bulk`] op: one transaction,
//! with the `lists.max_entries` limit checked inside it against config + files + store, and
//! applied to the live gate by the store's commit hook before the answer. A list left out of
//! the body is left alone; `[]` or `""` empties it (PUT).

pub mod body;
pub mod error;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde_json::{Map, Value, json};

use self::body::{AccessRequest, Validated, field_name};
use self::error::{MagicError, ok};
use super::AdminState;
use crate::config::Precedence;
use crate::lists::ListKind;
use crate::snapshot::{AdminKeys, Snapshot};
use crate::store::{BulkOp, BulkResult, BulkWrite, StoreError};

/// The path, as Magic documents it.
pub const PATH: &str = "/v1/api/magic_client/access_control";

/// Largest body this API reads: a 20,000-entry PUT is ~0.6 MB; bulk imports send chunks.
pub const BODY_LIMIT: usize = 16 * 1024 * 1024;

/// The header carrying the secret key.
pub const KEY_HEADER: &str = "x-magic-secret-key";

/// The route (no Clerk auth; this API authenticates itself).
pub fn routes() -> Router<AdminState> {
    Router::new().route(
        PATH,
        get(access_control)
            .put(access_control)
            .patch(access_control)
            .delete(access_control)
            .fallback(|| async { MagicError::MethodNotAllowed.into_response() }),
    )
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Replace,
    Append,
    Remove,
}

async fn access_control(State(st): State<AdminState>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    match handle(&st, &parts.method, &parts.headers, parts.uri.query(), body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

/// `X-Magic-Secret-Key` against the configured keys (constant time, every key compared).
pub fn authenticate(headers: &HeaderMap, keys: &AdminKeys) -> Result<(), MagicError> {
    let value = headers
        .get(KEY_HEADER)
        .ok_or(MagicError::MissingSecretKey)?
        .as_bytes()
        .trim_ascii();
    if value.is_empty() {
        return Err(MagicError::MissingSecretKey);
    }
    if crate::admin::auth::key_matches(value, keys) {
        Ok(())
    } else {
        Err(MagicError::InvalidSecretKey)
    }
}

/// The body, up to [`BODY_LIMIT`] (read only once the caller is authenticated).
async fn read_body(headers: &HeaderMap, body: Body) -> Result<Bytes, MagicError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > BODY_LIMIT as u64) {
        return Err(MagicError::TooLarge(BODY_LIMIT));
    }
    match Limited::new(body, BODY_LIMIT).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            Err(MagicError::TooLarge(BODY_LIMIT))
        }
        Err(e) => Err(MagicError::BadRequest(format!(
            "The body could not be read: {e}."
        ))),
    }
}

async fn handle(
    st: &AdminState,
    method: &Method,
    headers: &HeaderMap,
    query: Option<&str>,
    body: Body,
) -> Result<Response, MagicError> {
    let snap = st.snapshots.load_full();
    authenticate(headers, &snap.admin_keys)?;
    let Some(expected) = snap.magic_client_id.clone() else {
        return Err(MagicError::ClientIdNotConfigured);
    };
    let body = read_body(headers, body).await?;
    if !body.is_empty()
        && let Some(ct) = headers.get(header::CONTENT_TYPE)
    {
        let ct = String::from_utf8_lossy(ct.as_bytes()).into_owned();
        let essence = ct.split(';').next().unwrap_or_default().trim();
        if !essence.eq_ignore_ascii_case("application/json") {
            return Err(MagicError::UnsupportedMediaType(
                crate::identifier::snippet(&ct),
            ));
        }
    }
    let req = body::parse(&body)?;
    let client = req
        .target_client_id
        .clone()
        .or_else(|| query_client_id(query));
    match client {
        None => return Err(MagicError::MissingClientId),
        Some(c) if c != *expected => {
            return Err(MagicError::WrongClientId(crate::identifier::snippet(&c)));
        }
        Some(_) => {}
    }
    let mode = match *method {
        Method::GET => return read(st, &snap, &expected).await,
        Method::PUT => Mode::Replace,
        Method::PATCH => Mode::Append,
        Method::DELETE => Mode::Remove,
        _ => return Err(MagicError::MethodNotAllowed),
    };
    write(st, &snap, &expected, &req, mode).await
}

fn query_client_id(query: Option<&str>) -> Option<String> {
    form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == "target_client_id")
        .map(|(_, v)| v.into_owned())
}

fn config_matcher(snap: &Snapshot, list: ListKind) -> &crate::snapshot::ListLayers {
    snap.config_list(list)
}

fn precedence_name(p: Precedence) -> &'static str {
    match p {
        Precedence::Block => "block",
        Precedence::Allow => "allow",
        Precedence::MostSpecific => "most_specific",
    }
}

fn internal(e: StoreError) -> MagicError {
    MagicError::Internal(e.to_string())
}

/// GET: the API-managed entries (oldest first: the order they were added), the config and
/// list-file entries apart (read-only here), and how the lists apply right now.
async fn read(st: &AdminState, snap: &Snapshot, client: &str) -> Result<Response, MagicError> {
    let mut emails = Map::new();
    let mut config = Map::new();
    for list in [ListKind::Allow, ListKind::Block] {
        let stored = st.store.identifiers(list).await.map_err(internal)?;
        emails.insert(field_name(list).into(), json!(stored));
        let from_config: Vec<String> = config_matcher(snap, list)
            .iter()
            .map(|(display, _)| display)
            .collect();
        config.insert(field_name(list).into(), json!(from_config));
    }
    Ok(ok(json!({
        "target_client_id": client,
        "emails": emails,
        "config_entries": config,
        "allowlist_enforced": snap.allowlist_enforced(),
        "blocklist_enforced": snap.policy.blocklist,
        "precedence": precedence_name(snap.policy.precedence),
        "max_entries": snap.max_entries,
    })))
}

/// What one list's part of the answer reports besides the store's result.
#[derive(Default)]
struct Report {
    in_config: Vec<String>,
    duplicates: usize,
}

async fn write(
    st: &AdminState,
    snap: &Snapshot,
    client: &str,
    req: &AccessRequest,
    mode: Mode,
) -> Result<Response, MagicError> {
    if req.lists().next().is_none() {
        return Err(MagicError::BadRequest(
            "emails.allow_list and/or emails.block_list is required; nothing was changed.".into(),
        ));
    }
    let validated = body::validate(req, &snap.identifiers)?;
    let mut writes = Vec::new();
    let mut reports = Vec::new();
    let mut managed = Vec::new();
    for (
        list,
        Validated {
            entries,
            duplicates,
        },
    ) in validated
    {
        let config = config_matcher(snap, list);
        let limit = snap.max_entries.saturating_sub(config.len());
        let mut report = Report {
            duplicates,
            ..Report::default()
        };
        let op = match mode {
            Mode::Replace | Mode::Append => {
                // An entry the config or a list file holds is not written to the store. A
                // PUT that lists it keeps the store's row for it if there is one (added
                // through an API before it went into a file): its id and its invitation.
                let (in_config, rest): (Vec<_>, Vec<_>) = entries
                    .into_iter()
                    .partition(|e| config.get_by_key(&e.key).is_some());
                let keep = in_config.iter().map(|e| e.key.clone()).collect();
                report.in_config = in_config.into_iter().map(|e| e.identifier).collect();
                if mode == Mode::Replace {
                    BulkOp::Replace {
                        entries: rest,
                        keep,
                    }
                } else {
                    BulkOp::Append(rest)
                }
            }
            Mode::Remove => {
                let live = snap.store.read(list);
                for e in &entries {
                    if live.get_by_key(&e.key).is_none()
                        && let Some((existing, source)) = config.get_by_key(&e.key)
                    {
                        managed.push(json!({
                            "list": field_name(list),
                            "entry": existing,
                            "source": source.describe(list),
                        }));
                    }
                }
                drop(live);
                BulkOp::Remove(entries)
            }
        };
        writes.push(BulkWrite { list, op, limit });
        reports.push((list, report, config.len()));
    }
    if !managed.is_empty() {
        let names: Vec<String> = managed
            .iter()
            .take(5)
            .map(|m| {
                format!(
                    "{} (from {})",
                    m["entry"].as_str().unwrap_or_default(),
                    m["source"].as_str().unwrap_or_default()
                )
            })
            .collect();
        return Err(MagicError::ManagedElsewhere {
            message: format!(
                "{} entr{} come from the config or list files and cannot be removed through this API; edit the file instead (idgate reloads it). Nothing was changed: {}",
                managed.len(),
                if managed.len() == 1 { "y" } else { "ies" },
                names.join(", ")
            ),
            entries: managed,
        });
    }
    let results = match st.store.bulk(writes).await {
        Ok(r) => r,
        Err(StoreError::LimitExceeded {
            list,
            total,
            limit,
            over,
        }) => {
            let from_config = reports
                .iter()
                .find(|(l, _, _)| *l == list)
                .map_or(0, |(_, _, n)| *n);
            return Err(limit_error(
                snap.max_entries,
                list,
                total,
                limit,
                from_config,
                &over,
            ));
        }
        Err(e) => return Err(internal(e)),
    };
    let mut data = Map::new();
    data.insert("target_client_id".into(), json!(client));
    for ((list, report, _), result) in reports.into_iter().zip(results) {
        data.insert(field_name(list).into(), summary(mode, report, result));
    }
    Ok(ok(Value::Object(data)))
}

fn limit_error(
    max_entries: usize,
    list: ListKind,
    total: usize,
    limit: usize,
    from_config: usize,
    over: &[String],
) -> MagicError {
    let name = field_name(list);
    let beyond = total.saturating_sub(limit);
    let more = beyond.saturating_sub(over.len());
    let tail = if more > 0 {
        format!(" and {more} more")
    } else {
        String::new()
    };
    MagicError::LimitExceeded {
        message: format!(
            "{name} would hold {} entries ({from_config} from the config and list files, {total} through the API), more than lists.max_entries ({max_entries}); nothing was changed. Over the limit: {}{tail}.",
            from_config.saturating_add(total),
            over.join(", ")
        ),
        details: json!({
            "list": name,
            "total": from_config.saturating_add(total),
            "max_entries": max_entries,
            "over_limit": beyond,
            "first_over_limit": over,
        }),
    }
}

fn identifiers(rows: Vec<crate::store::StoredEntry>) -> Vec<String> {
    rows.into_iter().map(|e| e.identifier).collect()
}

fn summary(mode: Mode, report: Report, r: BulkResult) -> Value {
    let mut m = Map::new();
    m.insert("added".into(), json!(identifiers(r.added)));
    m.insert("removed".into(), json!(identifiers(r.removed)));
    match mode {
        Mode::Replace | Mode::Append => {
            let mut present = r.unchanged;
            present.extend(report.in_config.iter().cloned());
            m.insert("already_present".into(), json!(present));
            m.insert("in_config".into(), json!(report.in_config));
        }
        Mode::Remove => {
            m.insert("not_found".into(), json!(r.unchanged));
        }
    }
    m.insert("duplicates_in_request".into(), json!(report.duplicates));
    m.insert("total".into(), json!(r.total));
    Value::Object(m)
}

#[cfg(test)]
mod tests;
