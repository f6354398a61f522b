//! The instance: `GET`/`PATCH /v1/instance`, `PATCH /v1/instance/restrictions`,
//! `PATCH /v1/beta_features/instance_settings` (CONTRACT §3).
//!
//! Restrictions written here are stored as overrides (they win over the config's
//! `restrictions:` after a restart too) and applied to the gate before the answer. Every answer
//! reports the **effective** policy of the new snapshot: `allowlist` is true exactly when the
//! allow list is enforced right now (`auto` with a non-empty list counts). `allowlist: true`
//! means "enforced even when empty" (Clerk's meaning), `false` means off.
//! `restricted_to_allowlist` is the same switch as `allowlist`.
//!
//! `PATCH /v1/instance` validates the fields the SDKs send and answers 204: none of them means
//! anything to idgate, so nothing is stored. `ignore_dots_for_gmail_addresses` (sent by the JS
//! SDK) is accepted and ignored: block matching folds Gmail dots already.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch};
use axum::{Json, Router};
use serde::Serialize;

use super::store_error;
use crate::admin::AdminState;
use crate::admin::error::{ClerkError, ClerkErrors, ClerkJson, FromParams, Params};
use crate::lists::ListKind;
use crate::snapshot::Snapshot;
use crate::store::RestrictionOverrides;

/// The routes of this resource.
pub fn routes() -> Router<AdminState> {
    Router::new()
        .route("/instance", get(get_instance).patch(update_instance))
        .route("/instance/restrictions", patch(update_restrictions))
        .route(
            "/beta_features/instance_settings",
            patch(update_instance_settings),
        )
}

/// `InstanceRestrictions` (all six spec fields, plus the legacy seventh the JS SDK reads).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InstanceRestrictions {
    pub object: &'static str,
    pub allowlist: bool,
    pub blocklist: bool,
    pub allowlist_blocklist_disabled_on_sign_in: bool,
    pub block_email_subaddresses: bool,
    pub block_disposable_email_domains: bool,
    pub ignore_dots_for_gmail_addresses: bool,
}

impl InstanceRestrictions {
    /// The effective restrictions of `snap`.
    pub fn of(snap: &Snapshot) -> Self {
        let p = &snap.policy;
        InstanceRestrictions {
            object: "instance_restrictions",
            allowlist: snap.allowlist_enforced(),
            blocklist: p.blocklist,
            allowlist_blocklist_disabled_on_sign_in: p.allowlist_blocklist_disabled_on_sign_in,
            block_email_subaddresses: p.block_email_subaddresses,
            block_disposable_email_domains: p.block_disposable_email_domains,
            ignore_dots_for_gmail_addresses: false,
        }
    }
}

/// `InstanceSettings`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InstanceSettings {
    pub object: &'static str,
    pub id: String,
    pub restricted_to_allowlist: bool,
    pub progressive_sign_up: bool,
    pub enhanced_email_deliverability: bool,
}

/// `Instance`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Instance {
    pub object: &'static str,
    pub id: String,
    pub environment_type: &'static str,
    pub allowed_origins: Option<Vec<String>>,
    pub workspace_id: Option<String>,
}

/// The body of `PATCH /v1/instance/restrictions`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RestrictionsBody(pub RestrictionOverrides);

impl FromParams for RestrictionsBody {
    fn from_params(p: &mut Params) -> Self {
        let o = RestrictionOverrides {
            allowlist: p.opt_bool("allowlist"),
            blocklist: p.opt_bool("blocklist"),
            allowlist_blocklist_disabled_on_sign_in: p
                .opt_bool("allowlist_blocklist_disabled_on_sign_in"),
            block_email_subaddresses: p.opt_bool("block_email_subaddresses"),
            block_disposable_email_domains: p.opt_bool("block_disposable_email_domains"),
        };
        let _legacy = p.opt_bool("ignore_dots_for_gmail_addresses");
        RestrictionsBody(o)
    }
}

/// The body of `PATCH /v1/beta_features/instance_settings`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SettingsBody {
    pub restricted_to_allowlist: Option<bool>,
}

impl FromParams for SettingsBody {
    fn from_params(p: &mut Params) -> Self {
        let restricted_to_allowlist = p.opt_bool("restricted_to_allowlist");
        let _ = p.opt_string("from_email_address");
        let _ = p.opt_bool("progressive_sign_up");
        let _ = p.opt_bool("test_mode");
        SettingsBody {
            restricted_to_allowlist,
        }
    }
}

/// The body of `PATCH /v1/instance`: type-checked, then dropped.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct InstanceBody;

impl FromParams for InstanceBody {
    fn from_params(p: &mut Params) -> Self {
        for key in [
            "test_mode",
            "hibp",
            "cookieless_dev",
            "url_based_session_syncing",
            "enhanced_email_deliverability",
        ] {
            let _ = p.opt_bool(key);
        }
        for key in ["support_email", "clerk_js_version", "development_origin"] {
            let _ = p.opt_string(key);
        }
        let _ = p.opt_strings("allowed_origins");
        let key = "preferred_sign_in_strategy_when_password_required";
        if let Some(v) = p.opt_string(key)
            && !matches!(v.as_str(), "password" | "otp" | "")
        {
            p.push(ClerkError::ParamValueInvalid {
                param: key.into(),
                long_message: format!(
                    "{} does not match the allowed values for parameter {key}. Allowed values: password, otp, \"\".",
                    crate::identifier::snippet(&v)
                ),
            });
        }
        InstanceBody
    }
}

/// Stores `patch` (if it sets anything) and applies it; returns the snapshot that enforces it.
async fn set_overrides(
    st: &AdminState,
    patch: RestrictionOverrides,
) -> Result<std::sync::Arc<Snapshot>, ClerkErrors> {
    if patch != RestrictionOverrides::default() {
        // The store's commit hook publishes the new snapshot before this returns.
        st.store
            .update_restrictions(patch)
            .await
            .map_err(|e| store_error(ListKind::Allow, e))?;
    }
    Ok(st.snapshots.load_full())
}

async fn update_restrictions(
    State(st): State<AdminState>,
    ClerkJson(RestrictionsBody(patch)): ClerkJson<RestrictionsBody>,
) -> Result<Response, ClerkErrors> {
    let snap = set_overrides(&st, patch).await?;
    Ok(Json(InstanceRestrictions::of(&snap)).into_response())
}

async fn update_instance_settings(
    State(st): State<AdminState>,
    ClerkJson(body): ClerkJson<SettingsBody>,
) -> Result<Response, ClerkErrors> {
    let patch = RestrictionOverrides {
        allowlist: body.restricted_to_allowlist,
        ..RestrictionOverrides::default()
    };
    let snap = set_overrides(&st, patch).await?;
    Ok(Json(InstanceSettings {
        object: "instance_settings",
        id: st.instance_id(),
        restricted_to_allowlist: snap.allowlist_enforced(),
        progressive_sign_up: false,
        enhanced_email_deliverability: false,
    })
    .into_response())
}

async fn update_instance(ClerkJson(InstanceBody): ClerkJson<InstanceBody>) -> Response {
    StatusCode::NO_CONTENT.into_response()
}

async fn get_instance(State(st): State<AdminState>) -> Response {
    Json(Instance {
        object: "instance",
        id: st.instance_id(),
        environment_type: "production",
        allowed_origins: None,
        workspace_id: None,
    })
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::testkit::kit;
    use serde_json::json;

    #[test]
    fn auto_allowlist_is_reported_as_enforced_only_with_entries() {
        let snap = crate::snapshot::tests::minimal();
        assert!(!InstanceRestrictions::of(&snap).allowlist);
        assert!(InstanceRestrictions::of(&snap).blocklist);
        let snap = crate::snapshot::tests::from_yaml("lists: { allow: [\"a@x.com\"] }\n");
        assert!(InstanceRestrictions::of(&snap).allowlist);
        let snap = crate::snapshot::tests::from_yaml(
            "lists: { allow: [\"a@x.com\"] }\nrestrictions: { allowlist: false }\n",
        );
        assert!(!InstanceRestrictions::of(&snap).allowlist);
    }

    /// A restrictions change leaves the config's entries as they were: same ids, same
    /// timestamps (they were reported as created anew).
    #[tokio::test]
    async fn a_restrictions_change_keeps_config_entries_timestamps() {
        let k = kit("lists:\n  allow: [\"*@acme.com\"]\n", "", "");
        let list = "/v1/allowlist_identifiers";
        let before = k.call("GET", list, None).await;
        assert_eq!(before.status, 200, "{before:?}");
        std::thread::sleep(std::time::Duration::from_millis(5));
        let a = k
            .call(
                "PATCH",
                "/v1/instance/restrictions",
                Some(r#"{"allowlist":true}"#),
            )
            .await;
        assert_eq!(a.status, 200, "{a:?}");
        let after = k.call("GET", list, None).await;
        assert_eq!(before.json, after.json);
        assert!(
            before.json[0]["created_at"].as_i64().is_some(),
            "{before:?}"
        );
    }

    #[tokio::test]
    async fn restrictions_patch_stores_applies_and_reports_the_effective_policy() {
        let k = kit("", "", "");
        let path = "/v1/instance/restrictions";
        let a = k.call("PATCH", path, Some("{}")).await;
        assert_eq!(a.status, 200, "{a:?}");
        assert_eq!(
            a.json,
            json!({"object": "instance_restrictions", "allowlist": false, "blocklist": true,
                   "allowlist_blocklist_disabled_on_sign_in": false,
                   "block_email_subaddresses": false, "block_disposable_email_domains": false,
                   "ignore_dots_for_gmail_addresses": false})
        );
        assert!(!k.denied("anyone@x.com"));

        // allowlist: true = enforced even when empty (Clerk's meaning); the gate sees it first.
        let a = k
            .call(
                "PATCH",
                path,
                Some(r#"{"allowlist":true,"block_email_subaddresses":true,"ignore_dots_for_gmail_addresses":true}"#),
            )
            .await;
        assert_eq!(a.status, 200, "{a:?}");
        assert_eq!(a.json["allowlist"], true);
        assert_eq!(a.json["block_email_subaddresses"], true);
        assert!(k.denied("anyone@x.com"), "enforced before the 200");

        // null and absent leave values unchanged.
        let a = k
            .call(
                "PATCH",
                path,
                Some(r#"{"allowlist":null,"blocklist":false}"#),
            )
            .await;
        assert_eq!(
            (a.json["allowlist"].as_bool(), a.json["blocklist"].as_bool()),
            (Some(true), Some(false))
        );
        let stored = k.state.store.load().unwrap().restrictions;
        assert_eq!(stored.allowlist, Some(true));
        assert_eq!(stored.blocklist, Some(false));
        assert_eq!(stored.block_email_subaddresses, Some(true));
        assert_eq!(stored.block_disposable_email_domains, None);

        for (body, code, param, text) in [
            (
                r#"{"allowlist":"yes"}"#,
                "form_param_type_invalid",
                "allowlist",
                "`allowlist` must be a `bool`.",
            ),
            (
                r#"{"allowlist":1}"#,
                "form_param_type_invalid",
                "allowlist",
                "`allowlist` must be a `bool`.",
            ),
            (
                r#"{"sign_up_mode":"restricted"}"#,
                "form_param_unknown",
                "sign_up_mode",
                "sign_up_mode is not a valid parameter for this request.",
            ),
        ] {
            let a = k.call("PATCH", path, Some(body)).await;
            assert_eq!((a.status, a.code()), (422, code), "{body}: {a:?}");
            assert_eq!(a.json["errors"][0]["meta"]["param_name"], param);
            assert_eq!(a.long_message(), text);
        }
        // A refused patch changed nothing.
        assert_eq!(k.state.store.load().unwrap().restrictions, stored);
    }

    #[tokio::test]
    async fn restricted_to_allowlist_is_the_allowlist_switch() {
        let k = kit("", "", "");
        let path = "/v1/beta_features/instance_settings";
        let a = k
            .call("PATCH", path, Some(r#"{"restricted_to_allowlist":true,"progressive_sign_up":true,"test_mode":false}"#))
            .await;
        assert_eq!(a.status, 200, "{a:?}");
        assert_eq!(a.json["object"], "instance_settings");
        assert_eq!(a.json["id"], k.state.instance_id().as_str());
        assert_eq!(a.json["restricted_to_allowlist"], true);
        let r = k
            .call("PATCH", "/v1/instance/restrictions", Some("{}"))
            .await;
        assert_eq!(r.json["allowlist"], true);
        let a = k
            .call("PATCH", path, Some(r#"{"restricted_to_allowlist":false}"#))
            .await;
        assert_eq!(a.json["restricted_to_allowlist"], false);
        assert!(!k.denied("anyone@x.com"));
        let a = k
            .call("PATCH", path, Some(r#"{"from_email_address":5}"#))
            .await;
        assert_eq!((a.status, a.code()), (422, "form_param_type_invalid"));
    }

    #[tokio::test]
    async fn instance_get_and_patch() {
        let k = kit("", "", "");
        let a = k.call("GET", "/v1/instance", None).await;
        assert_eq!(a.status, 200);
        assert_eq!(
            a.json,
            json!({"object": "instance", "id": k.state.instance_id(),
                   "environment_type": "production", "allowed_origins": null, "workspace_id": null})
        );
        let body = r#"{"test_mode":true,"hibp":false,"support_email":null,"clerk_js_version":"5",
            "development_origin":"http://localhost:3000","allowed_origins":["chrome-extension://x"],
            "cookieless_dev":null,"url_based_session_syncing":true,
            "preferred_sign_in_strategy_when_password_required":"","enhanced_email_deliverability":false}"#;
        let a = k.call("PATCH", "/v1/instance", Some(body)).await;
        assert_eq!(a.status, 204, "{a:?}");
        assert!(a.raw.is_empty());
        for (body, code) in [
            (r#"{"hibp":"no"}"#, "form_param_type_invalid"),
            (r#"{"allowed_origins":"x"}"#, "form_param_type_invalid"),
            (r#"{"allowed_origins":[1]}"#, "form_param_type_invalid"),
            (
                r#"{"preferred_sign_in_strategy_when_password_required":"magic"}"#,
                "form_param_value_invalid",
            ),
            (r#"{"domain":"x.com"}"#, "form_param_unknown"),
        ] {
            let a = k.call("PATCH", "/v1/instance", Some(body)).await;
            assert_eq!((a.status, a.code()), (422, code), "{body}: {a:?}");
        }
    }
}
