//! `/v1/invitations`: create, bulk create, list, revoke, delete (CONTRACT §3 "Invitations").
//!
//! - `POST /v1/invitations` — `email_address` (required), `public_metadata`, `redirect_url`,
//!   `notify` (default **true**), `ignore_existing`, `expires_in_days` (1..365; default the
//!   config's `invitations.expires_in`, else 30 days), `template_slug`. `notify: true` queues an
//!   email in the store's outbox in the same transaction; when `invitations.email` is not
//!   configured it is refused (422, naming what to configure) and nothing is written.
//!   `notify: false` records the invitation without sending anything.
//! - `POST /v1/invitations/bulk` — a JSON array of 1..10 such items, one transaction: any bad
//!   item or duplicate fails the whole call (duplicates all named in `meta.email_addresses`).
//! - `GET /v1/invitations` — `status`, `query`, `order_by`, `paginated`, `limit`, `offset`.
//!   Bare array unless `paginated=true` (then `{data,total_count}`). `limit`/`offset` are
//!   honoured whenever given, with or without `paginated` (Clerk's server applies them to
//!   invitations when present, so Python's implicit `limit=10` returns at most 10, as on real
//!   Clerk); without `limit`: everything. Without `status`: every invitation but revoked ones.
//!   Email invitations only (Clerk's invitations are email-only): the SMS invitations made by
//!   allowlist `notify` are reachable by id (revoke, delete) and through the allowlist entry's
//!   `invitation_id`, not listed here.
//! - `POST /v1/invitations/{id}/revoke`, `DELETE /v1/invitations/{id}`.
//!
//! The response's `url` (the link with the token) is shown only by create, as in Clerk, and only
//! when `invitations.url` is configured. Acceptance and expiry happen elsewhere (`app`'s
//! acceptance task, the expiry sweep).

use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Serialize;
use serde_json::{Map, Value};

use super::identifiers::ListQuery;
use crate::admin::AdminState;
use crate::admin::error::{
    ClerkError, ClerkErrors, ClerkId, ClerkJson, ClerkJsonValue, FromParams, InvitationId, Params,
};
use crate::config::InvitationsConfig;
use crate::identifier::{self, Identifier, Kind};
use crate::store::{
    Channel, IdentifierType, Invitation, InvitationOrderField, InvitationQuery, InvitationStatus,
    NewInvitation, StoreError,
};

/// Most items of one bulk call.
pub const MAX_BULK: usize = 10;

/// Default expiry without `invitations.expires_in` (Clerk's 30 days).
pub const DEFAULT_EXPIRY: Duration = Duration::from_secs(30 * 86_400);

const EMAIL_FORMAT: &str = "email_address must be a valid email address.";
const STATUSES: &str = "pending, accepted, revoked, expired";

/// The routes of this resource.
pub fn routes() -> Router<AdminState> {
    Router::new()
        .route("/invitations", get(list).post(create))
        .route("/invitations/bulk", post(bulk))
        .route("/invitations/{invitation_id}/revoke", post(revoke))
        .route("/invitations/{invitation_id}", delete(remove))
}

/// Clerk's `Invitation`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Resource {
    pub object: &'static str,
    pub id: String,
    pub email_address: String,
    pub public_metadata: Value,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub revoked: bool,
    pub status: InvitationStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    pub expires_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl Resource {
    /// The API form; `link` fills `url` (create only).
    pub fn new(i: Invitation, link: Option<&InvitationsConfig>) -> Resource {
        let public_metadata = if i.public_metadata.is_object() {
            i.public_metadata
        } else {
            Value::Object(Map::new())
        };
        Resource {
            object: "invitation",
            url: link.map(|c| c.link(&i.token)),
            id: i.id,
            email_address: i.identifier,
            public_metadata,
            revoked: i.status == InvitationStatus::Revoked,
            status: i.status,
            expires_at: i.expires_at,
            created_at: i.created_at,
            updated_at: i.updated_at,
        }
    }
}

/// `{data, total_count}`.
#[derive(Debug, Serialize)]
struct Page {
    data: Vec<Resource>,
    total_count: usize,
}

/// `DeletedObject`.
#[derive(Debug, Serialize)]
struct Deleted {
    object: &'static str,
    id: String,
    deleted: bool,
}

/// One create item as sent (validated against the config and the gate's parser later).
#[derive(Debug, Default)]
pub struct CreateItem {
    email_address: String,
    public_metadata: Option<Map<String, Value>>,
    redirect_url: Option<String>,
    notify: Option<bool>,
    ignore_existing: Option<bool>,
    expires_in_days: Option<i64>,
}

impl FromParams for CreateItem {
    fn from_params(p: &mut Params) -> Self {
        let email_address = p.required_string("email_address").unwrap_or_default();
        let public_metadata = p.opt_object("public_metadata");
        let redirect_url = p.opt_string("redirect_url");
        let notify = p.opt_bool("notify");
        let ignore_existing = p.opt_bool("ignore_existing");
        let expires_in_days = p.opt_i64("expires_in_days");
        if let Some(d) = expires_in_days
            && !(1..=365).contains(&d)
        {
            p.push(ClerkError::ParamValueInvalid {
                param: "expires_in_days".into(),
                long_message: "expires_in_days must be between 1 and 365.".into(),
            });
        }
        // Accepted for compatibility; the message templates come from the config.
        if let Some(slug) = p.opt_string("template_slug")
            && slug != "invitation"
            && slug != "waitlist_invitation"
        {
            p.push(ClerkError::ParamValueInvalid {
                param: "template_slug".into(),
                long_message: format!(
                    "{} does not match the allowed values for parameter template_slug. Allowed values: invitation, waitlist_invitation",
                    identifier::snippet(&slug)
                ),
            });
        }
        CreateItem {
            email_address,
            public_metadata,
            redirect_url,
            notify,
            ignore_existing,
            expires_in_days,
        }
    }
}

/// What to tell an operator who asked for a message on a channel that is not configured.
pub fn delivery_unavailable(kind: Kind, cfg: Option<&InvitationsConfig>) -> String {
    let (key, what) = match kind {
        Kind::Phone => ("invitations.sms", "an SMS webhook"),
        _ => ("invitations.email", "an SMTP relay"),
    };
    let section = if cfg.is_none() {
        format!(
            "this idgate has no `invitations:` section; add one with `invitations.url` (the accept link, containing {{{{token}}}}) and `{key}` ({what})"
        )
    } else {
        format!("`invitations:` has no `{key}`; add `{key}` ({what})")
    };
    format!(
        "notify: true asks idgate to send the invitation, but {section} to the config and restart idgate. Or send notify: false: the record is created and nothing is sent."
    )
}

/// Unix ms now.
fn now_ms() -> i64 {
    super::unix_ms(std::time::SystemTime::now())
}

/// The expiry of an invitation created now: `days` if given, else the config's default.
pub fn expires_at(days: Option<i64>, cfg: Option<&InvitationsConfig>) -> Option<i64> {
    let ms = match days {
        Some(d) => d.saturating_mul(86_400_000),
        None => {
            let d = cfg.map_or(DEFAULT_EXPIRY, |c| c.expires_in);
            i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
        }
    };
    Some(now_ms().saturating_add(ms))
}

/// Validates one item into a store op.
fn validate(st: &AdminState, item: CreateItem) -> Result<NewInvitation, Vec<ClerkError>> {
    let snap = st.snapshots.load_full();
    let cfg = st.invitations.as_deref();
    let mut errors = Vec::new();
    let identifier =
        match identifier::parse(&item.email_address, Some(Kind::Email), &snap.identifiers) {
            Ok(Identifier::Email(e)) => e.as_str().to_owned(),
            _ => {
                errors.push(ClerkError::ParamFormatInvalid {
                    param: "email_address".into(),
                    long_message: EMAIL_FORMAT.into(),
                });
                String::new()
            }
        };
    if let Some(url) = &item.redirect_url
        && !valid_redirect(url)
    {
        errors.push(ClerkError::ParamTypeInvalid {
            param: "redirect_url".into(),
            expected: "absolute http(s) URL",
        });
    }
    let notify = item.notify.unwrap_or(true);
    if notify && !cfg.is_some_and(|c| c.can_deliver(Kind::Email)) {
        errors.push(ClerkError::ParamValueInvalid {
            param: "notify".into(),
            long_message: delivery_unavailable(Kind::Email, cfg),
        });
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(NewInvitation {
        identifier,
        identifier_type: IdentifierType::EmailAddress,
        public_metadata: Value::Object(item.public_metadata.unwrap_or_default()),
        redirect_url: item.redirect_url,
        expires_at: expires_at(item.expires_in_days, cfg),
        ignore_existing: item.ignore_existing.unwrap_or(false),
        deliver: notify.then_some(Channel::Email),
    })
}

fn valid_redirect(url: &str) -> bool {
    url.len() <= 2048
        && url.parse::<axum::http::Uri>().is_ok_and(|u| {
            matches!(u.scheme_str(), Some("http" | "https")) && u.authority().is_some()
        })
}

/// Store failures of the invitation ops as Clerk errors.
fn store_error(e: StoreError, id: &str) -> ClerkError {
    match e {
        StoreError::DuplicateInvitation { identifiers } => {
            ClerkError::DuplicateInvitation(identifiers)
        }
        StoreError::NotFound(_) => ClerkError::InvitationNotFound(identifier::snippet(id)),
        StoreError::InvitationAlreadyRevoked(_) => ClerkError::InvitationAlreadyRevoked,
        StoreError::InvitationAlreadyAccepted(_) => ClerkError::InvitationAlreadyAccepted,
        other => ClerkError::Internal(other.to_string()),
    }
}

async fn insert(st: &AdminState, items: Vec<NewInvitation>) -> Result<Vec<Resource>, ClerkErrors> {
    let created = st
        .store
        .create_invitations(items)
        .await
        .map_err(|e| store_error(e, ""))?;
    let link = st.invitations.as_deref();
    Ok(created
        .into_iter()
        .map(|i| Resource::new(i, link))
        .collect())
}

async fn create(
    State(st): State<AdminState>,
    ClerkJson(item): ClerkJson<CreateItem>,
) -> Result<Response, ClerkErrors> {
    let new = validate(&st, item).map_err(ClerkErrors)?;
    let mut out = insert(&st, vec![new]).await?;
    match out.pop() {
        Some(r) => Ok(Json(r).into_response()),
        None => Err(ClerkError::Internal("the store created no invitation".into()).into()),
    }
}

async fn bulk(
    State(st): State<AdminState>,
    ClerkJsonValue(body): ClerkJsonValue,
) -> Result<Response, ClerkErrors> {
    let Value::Array(items) = body else {
        return Err(ClerkError::BodyInvalid.into());
    };
    if items.is_empty() {
        return Err(ClerkError::ParamMissing("email_address".into()).into());
    }
    if items.len() > MAX_BULK {
        return Err(ClerkError::BulkSizeExceeded {
            max: MAX_BULK,
            got: items.len(),
        }
        .into());
    }
    let mut errors = Vec::new();
    let mut news = Vec::with_capacity(items.len());
    for item in items {
        let Value::Object(map) = item else {
            errors.push(ClerkError::BodyInvalid);
            continue;
        };
        let mut p = Params::new(map);
        let item = CreateItem::from_params(&mut p);
        if let Err(ClerkErrors(e)) = p.finish() {
            errors.extend(e);
            continue;
        }
        match validate(&st, item) {
            Ok(n) => news.push(n),
            Err(e) => errors.extend(e),
        }
    }
    if !errors.is_empty() {
        return Err(ClerkErrors(errors));
    }
    Ok(Json(insert(&st, news).await?).into_response())
}

/// The list query beyond pagination.
fn parse_list_query(raw: Option<&str>) -> Result<InvitationQuery, ClerkError> {
    let mut q = InvitationQuery {
        descending: true,
        ..Default::default()
    };
    let (mut seen_status, mut seen_query, mut seen_order) = (false, false, false);
    for (k, v) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        match &*k {
            "status" if !seen_status => {
                seen_status = true;
                q.status = Some(InvitationStatus::from_name(&v).ok_or_else(|| {
                    ClerkError::ParamValueInvalid {
                        param: "status".into(),
                        long_message: format!(
                            "{} does not match the allowed values for parameter status. Allowed values: {STATUSES}",
                            identifier::snippet(&v)
                        ),
                    }
                })?);
            }
            "query" if !seen_query => {
                seen_query = true;
                q.query = Some(v.into_owned()).filter(|s| !s.is_empty());
            }
            "order_by" if !seen_order => {
                seen_order = true;
                let (desc, field) = match v.strip_prefix('-') {
                    Some(f) => (true, f),
                    None => (false, v.strip_prefix('+').unwrap_or(&v)),
                };
                q.descending = desc;
                q.order_by = match field {
                    "created_at" => InvitationOrderField::CreatedAt,
                    "email_address" => InvitationOrderField::EmailAddress,
                    "expires_at" => InvitationOrderField::ExpiresAt,
                    _ => {
                        return Err(ClerkError::ParamValueInvalid {
                            param: "order_by".into(),
                            long_message: format!(
                                "{} does not match the allowed values for parameter order_by. Allowed values: created_at, email_address, expires_at (prefixed with + or -)",
                                identifier::snippet(&v)
                            ),
                        });
                    }
                };
            }
            _ => {}
        }
    }
    Ok(q)
}

async fn list(
    State(st): State<AdminState>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ClerkErrors> {
    let pages = ListQuery::parse(raw.as_deref());
    let mut q = parse_list_query(raw.as_deref())?;
    q.limit = pages.limit()?;
    q.offset = pages.offset()?;
    q.identifier_type = Some(IdentifierType::EmailAddress);
    let (rows, total_count) = st
        .store
        .list_invitations(q)
        .await
        .map_err(|e| store_error(e, ""))?;
    let data: Vec<Resource> = rows.into_iter().map(|i| Resource::new(i, None)).collect();
    if pages.paginated {
        Ok(Json(Page { data, total_count }).into_response())
    } else {
        Ok(Json(data).into_response())
    }
}

fn known_id(id: &str) -> Result<(), ClerkError> {
    if id.starts_with("inv_") && id.len() <= 64 {
        Ok(())
    } else {
        Err(ClerkError::InvitationNotFound(identifier::snippet(id)))
    }
}

async fn revoke(
    State(st): State<AdminState>,
    ClerkId(id): InvitationId,
) -> Result<Response, ClerkErrors> {
    known_id(&id)?;
    let inv = st
        .store
        .revoke_invitation(&id)
        .await
        .map_err(|e| store_error(e, &id))?;
    Ok(Json(Resource::new(inv, None)).into_response())
}

async fn remove(
    State(st): State<AdminState>,
    ClerkId(id): InvitationId,
) -> Result<Response, ClerkErrors> {
    known_id(&id)?;
    let inv = st
        .store
        .delete_invitation(&id)
        .await
        .map_err(|e| store_error(e, &id))?;
    Ok(Json(Deleted {
        object: "invitation",
        id: inv.id,
        deleted: true,
    })
    .into_response())
}

#[cfg(test)]
mod tests {
    use crate::admin::testkit::{Kit, kit};
    use crate::store::DeliveryState;
    use serde_json::{Value, json};

    const PATH: &str = "/v1/invitations";
    const EMAIL_ONLY: &str = "invitations:\n  url: \"https://app.example.com/accept?token={{token}}\"\n  email: { host: 127.0.0.1, port: 1, tls: none, from: \"Acme <no-reply@acme.test>\" }\n";

    async fn total(k: &Kit) -> usize {
        let q = crate::store::InvitationQuery {
            status: None,
            ..Default::default()
        };
        let (_, n) = k.state.store.list_invitations(q).await.unwrap();
        n
    }

    #[tokio::test]
    async fn create_queues_an_email_and_shows_the_link() {
        let k = kit(EMAIL_ONLY, "", "");
        let a = k
            .call(
                "POST",
                PATH,
                Some(r#"{"email_address":"Ann@Example.COM","public_metadata":{"team":"a"},"expires_in_days":7}"#),
            )
            .await;
        assert_eq!(a.status, 200, "{a:?}");
        assert_eq!(a.content_type.as_deref(), Some("application/json"));
        let r = &a.json;
        assert_eq!(r["object"], "invitation");
        assert_eq!(r["email_address"], "ann@example.com");
        assert_eq!(r["status"], "pending");
        assert_eq!(r["public_metadata"], json!({"team": "a"}));
        assert!(r.get("revoked").is_none(), "omitted when false: {r}");
        let id = r["id"].as_str().unwrap();
        assert!(id.starts_with("inv_") && id.len() == 31, "{id}");
        let url = r["url"].as_str().unwrap();
        let token = url
            .strip_prefix("https://app.example.com/accept?token=")
            .unwrap();
        assert_eq!(token.len(), 32);
        let week = r["expires_at"].as_i64().unwrap() - r["created_at"].as_i64().unwrap();
        assert!(
            (7 * 86_400_000 - 5_000..=7 * 86_400_000 + 5_000).contains(&week),
            "{week}"
        );
        let d = k.state.store.deliveries_of(id).await.unwrap();
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].state, DeliveryState::Pending);
        assert_eq!(d[0].recipient, "ann@example.com");

        // notify:false records it without a delivery; the default expiry is 30 days.
        let a = k
            .call(
                "POST",
                PATH,
                Some(r#"{"email_address":"bo@x.com","notify":false}"#),
            )
            .await;
        assert_eq!(a.status, 200, "{a:?}");
        let id = a.json["id"].as_str().unwrap();
        assert!(k.state.store.deliveries_of(id).await.unwrap().is_empty());
        let span = a.json["expires_at"].as_i64().unwrap() - a.json["created_at"].as_i64().unwrap();
        let month = 30 * 86_400_000;
        assert!(
            (month - 5_000..=month).contains(&span),
            "default 30 days: {span}"
        );
    }

    #[tokio::test]
    async fn create_errors_table_writes_nothing() {
        let k = kit(EMAIL_ONLY, "", "");
        k.call("POST", PATH, Some(r#"{"email_address":"dup@x.com"}"#))
            .await;
        let cases: &[(&str, u16, &str, Option<&str>, &str)] = &[
            (
                r#"{}"#,
                422,
                "form_param_missing",
                Some("email_address"),
                "email_address must be included.",
            ),
            (
                r#"{"email_address":"nope"}"#,
                422,
                "form_param_format_invalid",
                Some("email_address"),
                "email_address must be a valid email address.",
            ),
            (
                r#"{"email_address":"a@x.com","redirect_url":"not a url"}"#,
                422,
                "form_param_type_invalid",
                Some("redirect_url"),
                "redirect_url",
            ),
            (
                r#"{"email_address":"a@x.com","expires_in_days":0}"#,
                422,
                "form_param_value_invalid",
                Some("expires_in_days"),
                "between 1 and 365",
            ),
            (
                r#"{"email_address":"a@x.com","expires_in_days":"7"}"#,
                422,
                "form_param_type_invalid",
                Some("expires_in_days"),
                "integer",
            ),
            (
                r#"{"email_address":"a@x.com","public_metadata":[1]}"#,
                422,
                "form_param_type_invalid",
                Some("public_metadata"),
                "object",
            ),
            (
                r#"{"email_address":"a@x.com","template_slug":"x"}"#,
                422,
                "form_param_value_invalid",
                Some("template_slug"),
                "Allowed values",
            ),
            (
                r#"{"email_address":"a@x.com","colour":1}"#,
                422,
                "form_param_unknown",
                Some("colour"),
                "colour",
            ),
            (
                r#"{"email_address":"DUP@x.com"}"#,
                400,
                "duplicate_record",
                None,
                "There are already pending invitations for the following email addresses: dup@x.com",
            ),
        ];
        k.assert_errors("POST", PATH, cases).await;
        let a = k
            .call("POST", PATH, Some(r#"{"email_address":"dup@x.com"}"#))
            .await;
        assert_eq!(
            a.json["errors"][0]["meta"]["email_addresses"],
            json!(["dup@x.com"])
        );
        assert_eq!(a.json["errors"][0]["message"], "duplicate invitation");
        // ignore_existing creates another.
        let a = k
            .call(
                "POST",
                PATH,
                Some(r#"{"email_address":"dup@x.com","ignore_existing":true}"#),
            )
            .await;
        assert_eq!(a.status, 200, "{a:?}");
        assert_eq!(total(&k).await, 2);
    }

    #[tokio::test]
    async fn notify_without_delivery_says_what_to_configure() {
        let k = kit("", "", "");
        let a = k
            .call("POST", PATH, Some(r#"{"email_address":"a@x.com"}"#))
            .await;
        assert_eq!(
            (a.status, a.code()),
            (422, "form_param_value_invalid"),
            "{a:?}"
        );
        assert_eq!(a.json["errors"][0]["meta"]["param_name"], "notify");
        assert!(
            a.long_message().contains("invitations.email"),
            "{}",
            a.long_message()
        );
        assert!(
            a.long_message().contains("invitations.url"),
            "{}",
            a.long_message()
        );
        assert_eq!(total(&k).await, 0, "nothing written");
        // notify:false works without any delivery configured; no url without invitations.url.
        let a = k
            .call(
                "POST",
                PATH,
                Some(r#"{"email_address":"a@x.com","notify":false}"#),
            )
            .await;
        assert_eq!(a.status, 200, "{a:?}");
        assert!(a.json.get("url").is_none(), "{}", a.json);

        // SMS-only config: email notify still refused, naming invitations.email.
        let k = kit(
            "invitations:\n  url: \"https://a.test/{{token}}\"\n  sms: { url: \"http://127.0.0.1:1/sms\" }\n",
            "",
            "",
        );
        let a = k
            .call("POST", PATH, Some(r#"{"email_address":"a@x.com"}"#))
            .await;
        assert_eq!(a.status, 422, "{a:?}");
        assert!(
            a.long_message().contains("has no `invitations.email`"),
            "{}",
            a.long_message()
        );
    }

    #[tokio::test]
    async fn bulk_is_all_or_nothing() {
        let k = kit(EMAIL_ONLY, "", "");
        k.call("POST", PATH, Some(r#"{"email_address":"old@x.com"}"#))
            .await;
        let bulk = format!("{PATH}/bulk");
        let a = k
            .call(
                "POST",
                &bulk,
                Some(r#"[{"email_address":"a@x.com"},{"email_address":"old@x.com"},{"email_address":"b@x.com","notify":true,"ignore_existing":false,"template_slug":"invitation"},{"email_address":"A@x.com"}]"#),
            )
            .await;
        assert_eq!((a.status, a.code()), (400, "duplicate_record"), "{a:?}");
        assert_eq!(
            a.json["errors"][0]["meta"]["email_addresses"],
            json!(["old@x.com", "a@x.com"])
        );
        assert_eq!(total(&k).await, 1, "nothing written");
        // One bad item fails the call.
        let a = k
            .call(
                "POST",
                &bulk,
                Some(r#"[{"email_address":"a@x.com"},{"email_address":"bad"}]"#),
            )
            .await;
        assert_eq!(
            (a.status, a.code()),
            (422, "form_param_format_invalid"),
            "{a:?}"
        );
        assert_eq!(total(&k).await, 1);
        for (body, status, code) in [
            ("[]", 422, "form_param_missing"),
            ("{}", 400, "request_body_invalid"),
            ("[1]", 400, "request_body_invalid"),
        ] {
            let a = k.call("POST", &bulk, Some(body)).await;
            assert_eq!((a.status, a.code()), (status, code), "{body}: {a:?}");
        }
        let eleven: Vec<Value> = (0..11)
            .map(|i| json!({"email_address": format!("u{i}@x.com")}))
            .collect();
        let a = k
            .call("POST", &bulk, Some(&Value::Array(eleven).to_string()))
            .await;
        assert_eq!((a.status, a.code()), (422, "bulk_size_exceeded"), "{a:?}");
        let ten: Vec<Value> = (0..10)
            .map(|i| json!({"email_address": format!("u{i}@x.com")}))
            .collect();
        let a = k
            .call("POST", &bulk, Some(&Value::Array(ten).to_string()))
            .await;
        assert_eq!(a.status, 200, "{a:?}");
        assert_eq!(a.json.as_array().unwrap().len(), 10);
        assert!(a.json[0]["url"].as_str().is_some());
        assert_eq!(total(&k).await, 11);
    }

    #[tokio::test]
    async fn list_revoke_delete() {
        let k = kit(EMAIL_ONLY, "", "");
        let mut ids = Vec::new();
        for who in ["c@x.com", "a@y.com", "b@x.com"] {
            let body = json!({ "email_address": who, "notify": false }).to_string();
            let a = k.call("POST", PATH, Some(&body)).await;
            ids.push(a.json["id"].as_str().unwrap().to_owned());
        }
        let emails = |v: &Value| -> Vec<String> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|r| r["email_address"].as_str().unwrap().to_owned())
                .collect()
        };
        // Python's shape: a bare array; limit/offset honoured without paginated too (Clerk's
        // server applies them to invitations whenever given).
        let a = k
            .call(
                "GET",
                &format!("{PATH}?order_by=-created_at&limit=2&offset=0"),
                None,
            )
            .await;
        assert_eq!(a.status, 200, "{a:?}");
        assert_eq!(emails(&a.json), ["b@x.com", "a@y.com"]);
        assert!(a.json[0].get("url").is_none());
        let a = k
            .call("GET", &format!("{PATH}?limit=10&offset=1"), None)
            .await;
        assert_eq!(emails(&a.json), ["a@y.com", "c@x.com"]);
        // Without limit: everything.
        let a = k.call("GET", PATH, None).await;
        assert_eq!(emails(&a.json), ["b@x.com", "a@y.com", "c@x.com"]);
        for (bad, status) in [
            ("limit=0", 422),
            ("limit=501", 422),
            ("offset=-1", 422),
            ("limit=x", 400),
        ] {
            let a = k.call("GET", &format!("{PATH}?{bad}"), None).await;
            assert_eq!(a.status, status, "{bad}: {a:?}");
        }
        // JS's shape.
        let a = k
            .call(
                "GET",
                &format!("{PATH}?paginated=true&limit=2&offset=1&order_by=%2Bemail_address"),
                None,
            )
            .await;
        assert_eq!(a.json["total_count"], 3);
        assert_eq!(emails(&a.json["data"]), ["b@x.com", "c@x.com"]);
        let a = k.call("GET", &format!("{PATH}?query=%40X.com"), None).await;
        assert_eq!(emails(&a.json), ["b@x.com", "c@x.com"]);

        // Revoke, then the default listing hides it and status=revoked shows it.
        let a = k
            .call("POST", &format!("{PATH}/{}/revoke", ids[0]), None)
            .await;
        assert_eq!(a.status, 200, "{a:?}");
        assert_eq!(
            (a.json["revoked"].clone(), a.json["status"].clone()),
            (json!(true), json!("revoked"))
        );
        let a = k.call("GET", PATH, None).await;
        assert_eq!(emails(&a.json), ["b@x.com", "a@y.com"]);
        let a = k.call("GET", &format!("{PATH}?status=revoked"), None).await;
        assert_eq!(emails(&a.json), ["c@x.com"]);
        let cases = [
            (
                format!("{PATH}/{}/revoke", ids[0]),
                "POST",
                400,
                "invitation_already_revoked",
                "Invitation is already revoked.",
            ),
            (
                format!("{PATH}/inv_missing/revoke"),
                "POST",
                404,
                "resource_not_found",
                "No invitation was found with id inv_missing.",
            ),
            (
                format!("{PATH}/alid_x/revoke"),
                "POST",
                404,
                "resource_not_found",
                "alid_x",
            ),
            (
                format!("{PATH}?status=maybe"),
                "GET",
                422,
                "form_param_value_invalid",
                "Allowed values: pending, accepted, revoked, expired",
            ),
            (
                format!("{PATH}?order_by=colour"),
                "GET",
                422,
                "form_param_value_invalid",
                "order_by",
            ),
        ];
        for (path, method, status, code, text) in cases {
            let a = k.call(method, &path, None).await;
            assert_eq!((a.status, a.code()), (status, code), "{path}: {a:?}");
            assert!(
                a.long_message().contains(text),
                "{path}: {}",
                a.long_message()
            );
        }
        // Accepted can't be revoked.
        k.state.store.accept_invitations("b@x.com").await.unwrap();
        let a = k
            .call("POST", &format!("{PATH}/{}/revoke", ids[2]), None)
            .await;
        assert_eq!((a.status, a.code()), (400, "invitation_already_accepted"));
        let a = k
            .call("GET", &format!("{PATH}?status=accepted"), None)
            .await;
        assert_eq!(emails(&a.json), ["b@x.com"]);
        // Delete (any status).
        let a = k.call("DELETE", &format!("{PATH}/{}", ids[2]), None).await;
        assert_eq!(a.status, 200, "{a:?}");
        assert_eq!(
            a.json,
            json!({"object": "invitation", "id": ids[2], "deleted": true})
        );
        let a = k.call("DELETE", &format!("{PATH}/{}", ids[2]), None).await;
        assert_eq!((a.status, a.code()), (404, "resource_not_found"));
    }
    #[tokio::test]
    async fn accepted_blocks_a_new_invitation_revoked_and_expired_do_not() {
        let k = kit(EMAIL_ONLY, "", "");
        let create = |who: &'static str| {
            let k = &k;
            async move {
                let body = json!({ "email_address": who, "notify": false }).to_string();
                k.call("POST", PATH, Some(&body)).await
            }
        };
        let acc = create("acc@x.com").await;
        let rev = create("rev@x.com").await;
        let old = create("old@x.com").await;
        assert_eq!((acc.status, rev.status, old.status), (200, 200, 200));
        k.state.store.accept_invitations("acc@x.com").await.unwrap();
        let r = k
            .call(
                "POST",
                &format!("{PATH}/{}/revoke", rev.json["id"].as_str().unwrap()),
                None,
            )
            .await;
        assert_eq!(r.status, 200, "{r:?}");
        // Expire one: past due reads expired (the sweep need not have run).
        let id = old.json["id"].as_str().unwrap();
        let path = k.state.store.as_sqlite().unwrap().path().to_owned();
        let conn = rusqlite::Connection::open(path).unwrap();
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .unwrap();
        conn.execute(
            "UPDATE invitations SET expires_at = 1000 WHERE id = ?1",
            [id],
        )
        .unwrap();

        let a = create("acc@x.com").await;
        assert_eq!((a.status, a.code()), (400, "duplicate_record"), "{a:?}");
        assert_eq!(
            a.json["errors"][0]["meta"]["email_addresses"],
            json!(["acc@x.com"])
        );
        for who in ["rev@x.com", "old@x.com"] {
            let a = create(who).await;
            assert_eq!(a.status, 200, "{who}: {a:?}");
            assert_eq!(a.json["status"], "pending");
        }
    }

    #[tokio::test]
    async fn sms_invitations_are_not_listed_but_reachable_by_id() {
        let k = kit(
            "invitations:\n  url: \"https://a.test/i/{{token}}\"\n  email: { host: 127.0.0.1, port: 1, tls: none, from: \"a@a.test\" }\n  sms: { url: \"http://127.0.0.1:1/sms\" }\n",
            "",
            "",
        );
        let a = k
            .call(
                "POST",
                "/v1/allowlist_identifiers",
                Some(r#"{"identifier":"+1 202 555 0199","notify":true}"#),
            )
            .await;
        assert_eq!(a.status, 200, "{a:?}");
        let sms = a.json["invitation_id"].as_str().unwrap().to_owned();
        let a = k
            .call("POST", PATH, Some(r#"{"email_address":"e@x.com"}"#))
            .await;
        assert_eq!(a.status, 200, "{a:?}");
        let email = a.json["id"].as_str().unwrap().to_owned();
        for path in [
            PATH.to_owned(),
            format!("{PATH}?status=pending"),
            format!("{PATH}?query={sms}"),
        ] {
            let a = k.call("GET", &path, None).await;
            let ids: Vec<&str> = a
                .json
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["id"].as_str().unwrap())
                .collect();
            let want: &[&str] = if path.contains("query") {
                &[]
            } else {
                &[&email]
            };
            assert_eq!(ids, want, "{path}");
        }
        let a = k.call("GET", &format!("{PATH}?paginated=true"), None).await;
        assert_eq!(a.json["total_count"], 1, "{a:?}");
        // Revoke and delete by id still work.
        let a = k.call("POST", &format!("{PATH}/{sms}/revoke"), None).await;
        assert_eq!(
            (a.status, &a.json["status"]),
            (200, &json!("revoked")),
            "{a:?}"
        );
        let a = k.call("DELETE", &format!("{PATH}/{sms}"), None).await;
        assert_eq!(a.status, 200, "{a:?}");
        assert!(k.state.store.get_invitation(&sms).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn bulk_body_over_the_limit_is_clerks_json_413() {
        let k = kit(EMAIL_ONLY, "", "");
        let big = format!(
            "[{{\"email_address\":\"{}@x.com\"}}]",
            "a".repeat(crate::admin::BODY_LIMIT)
        );
        let a = k.call("POST", &format!("{PATH}/bulk"), Some(&big)).await;
        assert_eq!(
            (a.status, a.code()),
            (413, "request_body_too_large"),
            "{a:?}"
        );
        assert_eq!(a.content_type.as_deref(), Some("application/json"));
        assert_eq!(total(&k).await, 0);
    }
}
