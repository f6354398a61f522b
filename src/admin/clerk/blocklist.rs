//! `/v1/blocklist_identifiers`: list, create, delete (CONTRACT §3).
//!
//! The listing is always `{data,total_count}`; `limit`/`offset` are honoured when given and
//! everything is returned otherwise. Create takes only `identifier` (no `notify`).

use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};

use super::identifiers::{self, CreateRequest, ListQuery, Page};
use crate::admin::AdminState;
use crate::admin::error::{ClerkErrors, ClerkId, ClerkJson, FromParams, IdentifierId, Params};
use crate::lists::ListKind;

const LIST: ListKind = ListKind::Block;

/// The routes of this resource.
pub fn routes() -> Router<AdminState> {
    Router::new()
        .route("/blocklist_identifiers", get(list).post(create))
        .route("/blocklist_identifiers/{identifier_id}", delete(remove))
}

/// `{identifier}`.
#[derive(Debug)]
pub struct CreateBody(CreateRequest);

impl FromParams for CreateBody {
    fn from_params(p: &mut Params) -> Self {
        let identifier = p.required_string("identifier").unwrap_or_default();
        CreateBody(CreateRequest {
            identifier,
            notify: None,
        })
    }
}

async fn list(
    State(st): State<AdminState>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ClerkErrors> {
    let q = ListQuery::parse(raw.as_deref());
    let (limit, offset) = (q.limit()?, q.offset()?);
    let (data, total_count) = identifiers::list(&st, LIST, limit, offset).await?;
    Ok(Json(Page { data, total_count }).into_response())
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
    use serde_json::json;

    const PATH: &str = "/v1/blocklist_identifiers";

    #[tokio::test]
    async fn a_200_means_the_gate_already_enforces_it() {
        let k = kit("", "", "");
        assert!(!k.denied("mallory@evil.com"));
        let a = k
            .call("POST", PATH, Some(r#"{"identifier":"Mallory@Evil.com"}"#))
            .await;
        assert_eq!(a.status, 200, "{a:?}");
        assert_eq!(a.json["object"], "blocklist_identifier");
        assert!(a.json["id"].as_str().unwrap().starts_with("blid_"));
        assert!(k.denied("mallory@evil.com"), "blocked right after the 200");
        assert!(k.denied("mallory+x@evil.com"), "block folds subaddresses");

        let a = k
            .call("POST", PATH, Some(r#"{"identifier":"*@*.spam.org"}"#))
            .await;
        assert_eq!(a.status, 200, "{a:?}");
        assert!(k.denied("x@a.spam.org"));
        assert!(!k.denied("x@spam.org"));

        let id = a.json["id"].as_str().unwrap().to_owned();
        let a = k.call("DELETE", &format!("{PATH}/{id}"), None).await;
        assert_eq!(
            a.json,
            json!({"object": "blocklist_identifier", "id": id, "deleted": true})
        );
        assert!(
            !k.denied("x@a.spam.org"),
            "forwarded right after the delete's 200"
        );
    }

    #[tokio::test]
    async fn create_errors_table() {
        let k = kit("", "", "*@blocked.org\n");
        k.call("POST", PATH, Some(r#"{"identifier":"jsmith@gmail.com"}"#))
            .await;
        let cases: &[(&str, u16, &str, &str)] = &[
            // Same inbox after block folding (Gmail dots).
            (
                r#"{"identifier":"j.smith@gmail.com"}"#,
                400,
                "duplicate_record",
                "already exists (as jsmith@gmail.com)",
            ),
            (
                r#"{"identifier":"*@Blocked.org"}"#,
                400,
                "duplicate_record",
                "block.txt:1",
            ),
            (
                r#"{"identifier":"blocked.org"}"#,
                422,
                "form_param_format_invalid",
                "identifier must be either",
            ),
            (
                r#"{"identifier":"a@x.com","notify":false}"#,
                422,
                "form_param_unknown",
                "notify is not a valid parameter for this request.",
            ),
            (
                r#"[]"#,
                400,
                "request_body_invalid",
                "The request body is invalid.",
            ),
        ];
        for (body, status, code, text) in cases {
            let a = k.call("POST", PATH, Some(body)).await;
            assert_eq!((a.status, a.code()), (*status, *code), "{body}: {a:?}");
            assert!(
                a.long_message().contains(text),
                "{body}: {}",
                a.long_message()
            );
        }
        let a = k
            .call("POST", PATH, Some(r#"{"identifier":"jsmith@gmail.com"}"#))
            .await;
        assert_eq!(
            a.json["errors"][0]["message"],
            "duplicate blocklist identifier"
        );
    }

    #[tokio::test]
    async fn list_is_always_wrapped_and_honours_limit_offset() {
        let k = kit("lists: { block: [\"inline@x.com\"] }\n", "", "");
        for who in ["a@x.com", "b@x.com"] {
            let body = json!({ "identifier": who }).to_string();
            assert_eq!(k.call("POST", PATH, Some(&body)).await.status, 200);
        }
        let names = |v: &serde_json::Value| -> Vec<String> {
            v["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["identifier"].as_str().unwrap().to_owned())
                .collect()
        };
        for (q, want) in [
            ("", vec!["b@x.com", "a@x.com", "inline@x.com"]),
            (
                "?paginated=false",
                vec!["b@x.com", "a@x.com", "inline@x.com"],
            ),
            ("?limit=1", vec!["b@x.com"]),
            ("?limit=1&offset=2", vec!["inline@x.com"]),
            ("?offset=1", vec!["a@x.com", "inline@x.com"]),
        ] {
            let a = k.call("GET", &format!("{PATH}{q}"), None).await;
            assert_eq!(a.status, 200, "{q}: {a:?}");
            assert_eq!(a.json["total_count"], 3, "{q}");
            assert_eq!(names(&a.json), want, "{q}");
        }
        let a = k.call("GET", PATH, None).await;
        let inline = &a.json["data"][2];
        let id = inline["id"].as_str().unwrap().to_owned();
        let a = k.call("DELETE", &format!("{PATH}/{id}"), None).await;
        assert_eq!((a.status, a.code()), (422, "form_param_value_invalid"));
        assert!(
            a.long_message().contains("the config file (lists.block)"),
            "{}",
            a.long_message()
        );
        let a = k.call("GET", &format!("{PATH}?limit=600"), None).await;
        assert_eq!((a.status, a.code()), (422, "form_param_value_invalid"));
    }
}
