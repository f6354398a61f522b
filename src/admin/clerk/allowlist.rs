//! `/v1/allowlist_identifiers`: list, create, delete (CONTRACT §3).
//!
//! The listing is a bare array unless `paginated=true`, which switches to
//! `{data,total_count}` and honours `limit`/`offset`; without it `limit`/`offset` are ignored
//! (Python always sends `limit=10`, and Clerk returns everything). `notify: true` on an email
//! or phone adds the entry, an invitation (a pending one for the address is reused) and its
//! delivery in one transaction; it is refused (422, naming `invitations.email` /
//! `invitations.sms`, nothing written) when that channel is not configured, and on a domain or
//! wallet (422 `form_conditional_param_disallowed`). Deleting an entry revokes the pending
//! invitation for its identifier.

use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};

use super::identifiers::{self, CreateRequest, ListQuery, Page};
use crate::admin::AdminState;
use crate::admin::error::{ClerkErrors, ClerkId, ClerkJson, FromParams, IdentifierId, Params};
use crate::lists::ListKind;

const LIST: ListKind = ListKind::Allow;

/// The routes of this resource.
pub fn routes() -> Router<AdminState> {
    Router::new()
        .route("/allowlist_identifiers", get(list).post(create))
        .route("/allowlist_identifiers/{identifier_id}", delete(remove))
}

/// `{identifier, notify}`.
#[derive(Debug)]
pub struct CreateBody(CreateRequest);

impl FromParams for CreateBody {
    fn from_params(p: &mut Params) -> Self {
        let identifier = p.required_string("identifier").unwrap_or_default();
        let notify = p.opt_bool("notify");
        CreateBody(CreateRequest { identifier, notify })
    }
}

async fn list(
    State(st): State<AdminState>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ClerkErrors> {
    let q = ListQuery::parse(raw.as_deref());
    if q.paginated {
        let (limit, offset) = (q.limit()?, q.offset()?);
        let (data, total_count) = identifiers::list(&st, LIST, limit, offset).await?;
        Ok(Json(Page { data, total_count }).into_response())
    } else {
        let (data, _) = identifiers::list(&st, LIST, None, 0).await?;
        Ok(Json(data).into_response())
    }
}

async fn create(
    State(st): State<AdminState>,
    ClerkJson(CreateBody(req)): ClerkJson<CreateBody>,
) -> Result<Response, ClerkErrors> {
    Ok(Json(identifiers::create(&st, LIST, req).await?).into_response())
}

async fn remove(
    State(st): State<AdminState>,
    ClerkId(id): IdentifierId,
) -> Result<Response, ClerkErrors> {
    Ok(Json(identifiers::delete(&st, LIST, &id).await?).into_response())
}

#[cfg(test)]
mod tests {
    use crate::admin::testkit::kit;
    use serde_json::{Value, json};

    const PATH: &str = "/v1/allowlist_identifiers";

    #[tokio::test]
    async fn create_respects_max_entries_across_sources() {
        // One entry from the config, one through the API: the third is refused, nothing written.
        let k = kit(
            "lists:\n  max_entries: 2\n  allow: [\"cfg@x.com\"]\n",
            "",
            "",
        );
        let a = k
            .call("POST", PATH, Some(r#"{"identifier":"one@x.com"}"#))
            .await;
        assert_eq!(a.status, 200, "{a:?}");
        let a = k
            .call("POST", PATH, Some(r#"{"identifier":"two@x.com"}"#))
            .await;
        assert_eq!(a.status, 422, "{a:?}");
        assert_eq!(a.code(), "form_param_value_invalid");
        assert!(a.long_message().contains("max_entries"), "{a:?}");
        let listed = k.call("GET", &format!("{PATH}?paginated=true"), None).await;
        assert_eq!(listed.json["total_count"], 2, "nothing written: {listed:?}");
    }

    #[tokio::test]
    async fn create_returns_the_resource() {
        let k = kit("", "", "");
        let a = k
            .call(
                "POST",
                PATH,
                Some(r#"{"identifier":"Alice@Example.COM","notify":false}"#),
            )
            .await;
        assert_eq!(a.status, 200, "{a:?}");
        assert_eq!(a.content_type.as_deref(), Some("application/json"));
        let r = &a.json;
        assert_eq!(r["object"], "allowlist_identifier");
        assert_eq!(r["identifier"], "alice@example.com");
        assert_eq!(r["identifier_type"], "email_address");
        let id = r["id"].as_str().unwrap();
        assert!(id.starts_with("alid_") && id.len() == 32, "{id}");
        let ins = r["instance_id"].as_str().unwrap();
        assert_eq!(ins, k.state.instance_id());
        assert!(
            r["created_at"].as_i64().unwrap() > 1_600_000_000_000,
            "ms: {r}"
        );
        assert_eq!(r["created_at"], r["updated_at"]);
        assert!(r.get("invitation_id").is_none(), "{r}");

        for (body, ty, shown) in [
            (
                r#"{"identifier":"*@Acme.com"}"#,
                "email_address",
                "*@acme.com",
            ),
            (
                r#"{"identifier":"*@*.acme.com"}"#,
                "email_address",
                "*@*.acme.com",
            ),
            (
                r#"{"identifier":"+1 (202) 555-0123"}"#,
                "phone_number",
                "+12025550123",
            ),
            (
                r#"{"identifier":"0xAbCdEf0123456789012345678901234567890123"}"#,
                "web3_wallet",
                "0xabcdef0123456789012345678901234567890123",
            ),
        ] {
            let a = k.call("POST", PATH, Some(body)).await;
            assert_eq!(a.status, 200, "{body}: {a:?}");
            assert_eq!(a.json["identifier_type"], ty, "{body}");
            assert_eq!(a.json["identifier"], shown, "{body}");
        }
    }

    #[tokio::test]
    async fn create_errors_table() {
        let k = kit("", "bob@partner.io\n", "");
        k.call("POST", PATH, Some(r#"{"identifier":"alice@x.com"}"#))
            .await;
        let cases: &[(&str, u16, &str, Option<&str>, &str)] = &[
            (
                r#"{"identifier":"ALICE@x.com"}"#,
                400,
                "duplicate_record",
                None,
                "the identifier alice@x.com already exists",
            ),
            (
                r#"{"identifier":"bob@partner.io"}"#,
                400,
                "duplicate_record",
                None,
                "allow.txt:1",
            ),
            (
                r#"{"identifier":"x.com"}"#,
                422,
                "form_param_format_invalid",
                Some("identifier"),
                "identifier must be either a valid email address",
            ),
            (
                r#"{"identifier":"2025550123"}"#,
                422,
                "form_param_format_invalid",
                Some("identifier"),
                "identifier must be either",
            ),
            (
                r#"{"identifier":"+1"}"#,
                422,
                "form_param_format_invalid",
                Some("identifier"),
                "E.164",
            ),
            (
                r#"{}"#,
                422,
                "form_param_missing",
                Some("identifier"),
                "identifier must be included.",
            ),
            (
                r#"{"identifier":""}"#,
                422,
                "form_param_missing",
                Some("identifier"),
                "identifier must be included.",
            ),
            (
                r#"{"identifier":5}"#,
                422,
                "form_param_type_invalid",
                Some("identifier"),
                "`identifier` must be a `string`.",
            ),
            (
                r#"{"identifier":"new@x.com","notify":"yes"}"#,
                422,
                "form_param_type_invalid",
                Some("notify"),
                "`notify` must be a `bool`.",
            ),
            (
                r#"{"identifier":"new@x.com","notify":true}"#,
                422,
                "form_param_value_invalid",
                Some("notify"),
                "`invitations.email` (an SMTP relay)",
            ),
            (
                r#"{"identifier":"+12025550123","notify":true}"#,
                422,
                "form_param_value_invalid",
                Some("notify"),
                "`invitations.sms` (an SMS webhook)",
            ),
            (
                r#"{"identifier":"*@x.com","notify":true}"#,
                422,
                "form_conditional_param_disallowed",
                Some("notify"),
                "`notify` isn't allowed when `identifier` is an email domain or a web3 wallet.",
            ),
            (
                r#"{"identifier":"0x0123456789012345678901234567890123456789","notify":true}"#,
                422,
                "form_conditional_param_disallowed",
                Some("notify"),
                "web3 wallet",
            ),
            (
                r#"{"identifier":"new@x.com","colour":"red"}"#,
                422,
                "form_param_unknown",
                Some("colour"),
                "colour is not a valid parameter for this request.",
            ),
        ];
        k.assert_errors("POST", PATH, cases).await;
        let a = k
            .call("POST", PATH, Some(r#"{"identifier":"alice@x.com"}"#))
            .await;
        assert_eq!(
            a.json["errors"][0]["message"],
            "duplicate allowlist identifier"
        );
        // Nothing was half-written by the refused requests.
        let (_, total) = k
            .state
            .store
            .list(crate::lists::ListKind::Allow, None, 0)
            .await
            .unwrap();
        assert_eq!(total, 1);
    }

    #[tokio::test]
    async fn notify_adds_entry_invitation_and_delivery_in_one_go() {
        let k = kit(
            "invitations:\n  url: \"https://a.test/i/{{token}}\"\n  email: { host: 127.0.0.1, port: 1, tls: none, from: \"a@a.test\" }\n  sms: { url: \"http://127.0.0.1:1/sms\" }\n",
            "",
            "",
        );
        for (who, channel) in [
            ("Eve@X.com", crate::store::Channel::Email),
            ("+1 202 555 0199", crate::store::Channel::Sms),
        ] {
            let body = json!({ "identifier": who, "notify": true }).to_string();
            let a = k.call("POST", PATH, Some(&body)).await;
            assert_eq!(a.status, 200, "{who}: {a:?}");
            let inv = a.json["invitation_id"].as_str().unwrap().to_owned();
            assert!(inv.starts_with("inv_"), "{a:?}");
            let got = k.state.store.get_invitation(&inv).await.unwrap().unwrap();
            assert_eq!(got.identifier, a.json["identifier"].as_str().unwrap());
            assert_eq!(got.status, crate::store::InvitationStatus::Pending);
            let d = k.state.store.deliveries_of(&inv).await.unwrap();
            assert_eq!((d.len(), d[0].channel), (1, channel), "{who}");
            assert!(!k.denied(a.json["identifier"].as_str().unwrap()), "{who}");
            // Deleting the entry revokes the invitation.
            let id = a.json["id"].as_str().unwrap();
            assert_eq!(
                k.call("DELETE", &format!("{PATH}/{id}"), None).await.status,
                200
            );
            let got = k.state.store.get_invitation(&inv).await.unwrap().unwrap();
            assert_eq!(got.status, crate::store::InvitationStatus::Revoked, "{who}");
        }
        // A duplicate entry with notify writes no invitation.
        k.call("POST", PATH, Some(r#"{"identifier":"z@x.com"}"#))
            .await;
        let a = k
            .call(
                "POST",
                PATH,
                Some(r#"{"identifier":"z@x.com","notify":true}"#),
            )
            .await;
        assert_eq!((a.status, a.code()), (400, "duplicate_record"), "{a:?}");
        let q = crate::store::InvitationQuery {
            status: None,
            query: Some("z@x.com".into()),
            ..Default::default()
        };
        assert_eq!(k.state.store.list_invitations(q).await.unwrap().1, 0);
    }

    #[tokio::test]
    async fn list_is_a_bare_array_unless_paginated() {
        let k = kit("", "file1@x.com\nfile2@x.com\n", "");
        for who in ["a@x.com", "b@x.com", "c@x.com"] {
            let body = json!({ "identifier": who }).to_string();
            assert_eq!(k.call("POST", PATH, Some(&body)).await.status, 200);
        }
        let ids = |v: &Value| -> Vec<String> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|r| r["identifier"].as_str().unwrap().to_owned())
                .collect()
        };
        // Python's implicit limit=10&offset=0 (and any limit) is ignored without paginated.
        let a = k
            .call("GET", &format!("{PATH}?limit=1&offset=1"), None)
            .await;
        assert_eq!(a.status, 200, "{a:?}");
        assert_eq!(
            ids(&a.json),
            [
                "c@x.com",
                "b@x.com",
                "a@x.com",
                "file1@x.com",
                "file2@x.com"
            ]
        );
        let file_entry = &a.json[3];
        assert!(
            file_entry["id"].as_str().unwrap().starts_with("alid_00000"),
            "{file_entry}"
        );
        assert_eq!(file_entry["object"], "allowlist_identifier");
        assert_eq!(file_entry["identifier_type"], "email_address");
        assert!(file_entry["created_at"].as_i64().unwrap() > 1_600_000_000_000);

        let a = k.call("GET", &format!("{PATH}?paginated=true"), None).await;
        assert_eq!(a.json["total_count"], 5);
        assert_eq!(ids(&a.json["data"]).len(), 5);
        for (q, want) in [
            ("limit=2", vec!["c@x.com", "b@x.com"]),
            ("limit=2&offset=2", vec!["a@x.com", "file1@x.com"]),
            ("limit=10&offset=4", vec!["file2@x.com"]),
            ("offset=9", vec![]),
        ] {
            let a = k
                .call("GET", &format!("{PATH}?paginated=true&{q}"), None)
                .await;
            assert_eq!(a.status, 200, "{q}: {a:?}");
            assert_eq!(a.json["total_count"], 5, "{q}");
            assert_eq!(ids(&a.json["data"]), want, "{q}");
        }
        for (q, status, code) in [
            ("paginated=true&limit=0", 422, "form_param_value_invalid"),
            ("paginated=true&limit=501", 422, "form_param_value_invalid"),
            ("paginated=true&offset=-1", 422, "form_param_value_invalid"),
            (
                "paginated=true&limit=x",
                400,
                "invalid_query_parameter_value",
            ),
        ] {
            let a = k.call("GET", &format!("{PATH}?{q}"), None).await;
            assert_eq!((a.status, a.code()), (status, code), "{q}");
        }
    }

    #[tokio::test]
    async fn delete_store_entry_config_entry_and_unknown() {
        let k = kit("", "file@x.com\n", "");
        let a = k
            .call("POST", PATH, Some(r#"{"identifier":"a@x.com"}"#))
            .await;
        let id = a.json["id"].as_str().unwrap().to_owned();
        let a = k.call("DELETE", &format!("{PATH}/{id}"), None).await;
        assert_eq!(a.status, 200, "{a:?}");
        assert_eq!(
            a.json,
            json!({"object": "allowlist_identifier", "id": id, "deleted": true})
        );
        let a = k.call("DELETE", &format!("{PATH}/{id}"), None).await;
        assert_eq!((a.status, a.code()), (404, "resource_not_found"));
        assert_eq!(a.json["errors"][0]["message"], "Identifier not found");
        assert_eq!(
            a.long_message(),
            format!("No identifier was found with id {id}")
        );
        // A blocklist id on the allowlist endpoint is unknown here.
        let a = k.call("DELETE", &format!("{PATH}/blid_2abc"), None).await;
        assert_eq!((a.status, a.code()), (404, "resource_not_found"));

        let listed = k.call("GET", PATH, None).await;
        let file_id = listed.json[0]["id"].as_str().unwrap().to_owned();
        let a = k.call("DELETE", &format!("{PATH}/{file_id}"), None).await;
        assert_eq!(
            (a.status, a.code()),
            (422, "form_param_value_invalid"),
            "{a:?}"
        );
        assert!(
            a.long_message().contains("allow.txt"),
            "{}",
            a.long_message()
        );
        // Still listed afterwards.
        assert_eq!(
            k.call("GET", PATH, None).await.json[0]["id"],
            file_id.as_str()
        );
    }
}
