//! Handler tables for the Magic API against a real store and reloader (admin testkit).

use std::sync::Arc;

use axum::body::Body;
use axum::http::Request;
use serde_json::{Value, json};

use super::PATH;
use crate::admin::testkit::{Answer, KEY, Kit, MAGIC_CLIENT, kit};

async fn magic(k: &Kit, method: &str, key: Option<&str>, body: Option<Value>) -> Answer {
    let mut req = Request::builder().method(method).uri(PATH);
    if let Some(key) = key {
        req = req.header("X-Magic-Secret-Key", key);
    }
    let body = match body {
        Some(b) => {
            req = req.header("content-type", "application/json");
            Body::from(b.to_string())
        }
        None => Body::empty(),
    };
    k.send(req.body(body).unwrap()).await
}

async fn call(k: &Kit, method: &str, emails: Value) -> Answer {
    magic(
        k,
        method,
        Some(KEY),
        Some(json!({ "target_client_id": MAGIC_CLIENT, "emails": emails })),
    )
    .await
}

async fn lists(k: &Kit) -> (Vec<String>, Vec<String>) {
    let a = magic(
        k,
        "GET",
        Some(KEY),
        Some(json!({ "target_client_id": MAGIC_CLIENT })),
    )
    .await;
    assert_eq!(a.status, 200, "{a:?}");
    let get = |name: &str| -> Vec<String> {
        a.json["data"]["emails"][name]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect()
    };
    (get("allow_list"), get("block_list"))
}

fn failed(a: &Answer, status: u16, code: &str) {
    assert_eq!(a.status, status, "{a:?}");
    assert_eq!(a.json["status"], "failed", "{a:?}");
    assert_eq!(a.json["error_code"], code, "{a:?}");
    assert!(!a.json["message"].as_str().unwrap().is_empty());
    assert_eq!(a.content_type.as_deref(), Some("application/json"));
}

#[tokio::test]
async fn auth_and_client_id_are_checked_before_anything_changes() {
    let k = kit("", "", "");
    let body =
        json!({ "target_client_id": MAGIC_CLIENT, "emails": { "block_list": ["x@evil.com"] } });
    failed(
        &magic(&k, "PUT", None, Some(body.clone())).await,
        401,
        "MISSING_SECRET_KEY",
    );
    failed(
        &magic(&k, "PUT", Some("sk_test_nope"), Some(body.clone())).await,
        401,
        "INVALID_SECRET_KEY",
    );
    // A Bearer header is the Clerk API's, not this one's.
    let req = Request::builder()
        .method("PUT")
        .uri(PATH)
        .header("authorization", format!("Bearer {KEY}"))
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    failed(&k.send(req).await, 401, "MISSING_SECRET_KEY");
    let wrong =
        json!({ "target_client_id": "someone-else", "emails": { "block_list": ["x@evil.com"] } });
    failed(
        &magic(&k, "PUT", Some(KEY), Some(wrong)).await,
        403,
        "INVALID_TARGET_CLIENT_ID",
    );
    let none = json!({ "emails": { "block_list": ["x@evil.com"] } });
    failed(
        &magic(&k, "PUT", Some(KEY), Some(none)).await,
        400,
        "MISSING_TARGET_CLIENT_ID",
    );
    assert!(!k.denied("x@evil.com"));

    // GET takes the client id from the query too.
    let req = Request::builder()
        .uri(format!("{PATH}?target_client_id={MAGIC_CLIENT}"))
        .header("x-magic-secret-key", "sk_test_other")
        .body(Body::empty())
        .unwrap();
    let a = k.send(req).await;
    assert_eq!((a.status, &a.json["status"]), (200, &json!("ok")), "{a:?}");
    assert_eq!(a.json["error_code"], "");

    // No admin.magic_client_id: every call is refused, clearly.
    let snap = k.state.snapshots.load_full();
    let mut off = snap.with_store_restrictions(snap.store_restrictions, snap.generation + 1);
    off.magic_client_id = None;
    k.state.snapshots.store(Arc::new(off));
    let a = magic(&k, "PUT", Some(KEY), Some(body)).await;
    failed(&a, 403, "MAGIC_CLIENT_ID_NOT_CONFIGURED");
    assert!(
        a.json["message"]
            .as_str()
            .unwrap()
            .contains("admin.magic_client_id")
    );
    assert!(!k.denied("x@evil.com"));
}

#[tokio::test]
async fn put_patch_delete_round_trip_and_the_gate_follows_each_answer() {
    let k = kit("", "", "");
    let a = call(
        &k,
        "PUT",
        json!({ "allow_list": ["Ann@Acme.com", "*@partner.io"], "block_list": "mallory@acme.com, *@evil.com\n\n*@evil.com" }),
    )
    .await;
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(a.json["status"], "ok");
    assert_eq!(a.json["data"]["block_list"]["duplicates_in_request"], 1);
    assert_eq!(
        lists(&k).await,
        (
            vec!["ann@acme.com".to_owned(), "*@partner.io".into()],
            vec!["mallory@acme.com".to_owned(), "*@evil.com".into()]
        )
    );
    // Enforced before the answer: allow list on (auto), block wins.
    assert!(!k.denied("ann@acme.com"));
    assert!(!k.denied("joe@partner.io"));
    assert!(k.denied("joe@acme.com"), "not allowlisted");
    assert!(k.denied("x@evil.com"));

    // PATCH appends; what is there is reported, not an error.
    let a = call(
        &k,
        "PATCH",
        json!({ "allow_list": ["joe@acme.com", "ann@acme.com"] }),
    )
    .await;
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(
        a.json["data"]["allow_list"]["added"],
        json!(["joe@acme.com"])
    );
    assert_eq!(
        a.json["data"]["allow_list"]["already_present"],
        json!(["ann@acme.com"])
    );
    assert_eq!(a.json["data"]["allow_list"]["total"], 3);
    assert!(a.json["data"].get("block_list").is_none());
    assert!(!k.denied("joe@acme.com"));

    // DELETE removes; unknown entries are reported.
    let a = call(
        &k,
        "DELETE",
        json!({ "block_list": ["*@evil.com", "nobody@x.com"] }),
    )
    .await;
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(
        a.json["data"]["block_list"]["removed"],
        json!(["*@evil.com"])
    );
    assert_eq!(
        a.json["data"]["block_list"]["not_found"],
        json!(["nobody@x.com"])
    );
    // (x@evil.com is still denied by the allow list; the live block list lost the entry.)
    let live = k.state.snapshots.load_full();
    assert_eq!(live.store.read(crate::lists::ListKind::Block).len(), 1);

    // PUT with an empty allow list: everyone may pass again (auto); block list untouched.
    let a = call(&k, "PUT", json!({ "allow_list": [] })).await;
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(
        a.json["data"]["allow_list"]["removed"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    assert!(!k.denied("someone@anywhere.com"));
    assert!(k.denied("mallory@acme.com"));
    assert_eq!(lists(&k).await.1, vec!["mallory@acme.com".to_owned()]);
}

#[tokio::test]
async fn a_put_keeps_ids_of_entries_it_keeps() {
    let k = kit("", "", "");
    call(&k, "PUT", json!({ "block_list": ["a@x.com", "b@x.com"] })).await;
    let before = k
        .state
        .store
        .list(crate::lists::ListKind::Block, None, 0)
        .await
        .unwrap()
        .0;
    let a = call(&k, "PUT", json!({ "block_list": ["b@x.com", "c@x.com"] })).await;
    assert_eq!(a.json["data"]["block_list"]["removed"], json!(["a@x.com"]));
    assert_eq!(a.json["data"]["block_list"]["added"], json!(["c@x.com"]));
    assert_eq!(
        a.json["data"]["block_list"]["already_present"],
        json!(["b@x.com"])
    );
    let after = k
        .state
        .store
        .list(crate::lists::ListKind::Block, None, 0)
        .await
        .unwrap()
        .0;
    let id = |rows: &[crate::store::StoredEntry], who: &str| {
        rows.iter()
            .find(|e| e.identifier == who)
            .map(|e| e.id.clone())
    };
    assert_eq!(id(&before, "b@x.com"), id(&after, "b@x.com"));
    assert!(!k.denied("a@x.com"));
    assert!(k.denied("c@x.com"));
}

#[tokio::test]
async fn malformed_over_limit_and_config_entries_change_nothing() {
    let k = kit(
        "lists:\n  block: [\"*@config.example\"]\n  max_entries: 4\n",
        "",
        "",
    );
    let a = call(&k, "PUT", json!({ "block_list": ["a@x.com", "b@x.com"] })).await;
    assert_eq!(a.status, 200, "{a:?}");
    let before = lists(&k).await;

    let a = call(
        &k,
        "PUT",
        json!({ "allow_list": ["ok@x.com"], "block_list": ["c@x.com", "bad@@x", "x@y@z"] }),
    )
    .await;
    failed(&a, 422, "MALFORMED_ENTRIES");
    let msg = a.json["message"].as_str().unwrap();
    assert!(msg.contains("block_list [1]: `bad@@x`"), "{msg}");
    assert!(msg.contains("block_list [2]: `x@y@z`"), "{msg}");
    assert_eq!(a.json["data"]["rejected"].as_array().unwrap().len(), 2);
    assert_eq!(lists(&k).await, before);

    // 1 config entry + 2 stored + 2 new = 5 > 4.
    let a = call(&k, "PATCH", json!({ "block_list": ["c@x.com", "d@x.com"] })).await;
    failed(&a, 422, "LIST_LIMIT_EXCEEDED");
    let msg = a.json["message"].as_str().unwrap();
    assert!(msg.contains("would hold 5 entries"), "{msg}");
    assert!(msg.contains("d@x.com"), "{msg}");
    assert_eq!(lists(&k).await, before);
    assert!(!k.denied("c@x.com"));
    let a = call(
        &k,
        "PUT",
        json!({ "block_list": ["1@x.com", "2@x.com", "3@x.com", "4@x.com"] }),
    )
    .await;
    failed(&a, 422, "LIST_LIMIT_EXCEEDED");
    assert!(a.json["message"].as_str().unwrap().contains("4@x.com"));
    assert_eq!(lists(&k).await, before);

    // Config entries are already present for PUT/PATCH, and cannot be deleted here.
    let a = call(&k, "PATCH", json!({ "block_list": ["*@CONFIG.example"] })).await;
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(
        a.json["data"]["block_list"]["in_config"],
        json!(["*@config.example"])
    );
    let a = call(
        &k,
        "DELETE",
        json!({ "block_list": ["a@x.com", "*@config.example"] }),
    )
    .await;
    failed(&a, 409, "MANAGED_IN_CONFIG");
    assert!(
        a.json["message"]
            .as_str()
            .unwrap()
            .contains("config (lists.block)")
    );
    assert_eq!(lists(&k).await, before);
    assert!(k.denied("a@x.com"));
}

#[tokio::test]
async fn wrong_method_media_type_and_shape_are_magic_errors() {
    let k = kit("", "", "");
    failed(
        &magic(&k, "POST", Some(KEY), None).await,
        405,
        "METHOD_NOT_ALLOWED",
    );
    let req = Request::builder()
        .method("PUT")
        .uri(PATH)
        .header("x-magic-secret-key", KEY)
        .header("content-type", "text/plain")
        .body(Body::from("a@x.com"))
        .unwrap();
    failed(&k.send(req).await, 415, "UNSUPPORTED_MEDIA_TYPE");
    let a = magic(
        &k,
        "PUT",
        Some(KEY),
        Some(json!({ "target_client_id": MAGIC_CLIENT, "emails": { "allowlist": [] } })),
    )
    .await;
    failed(&a, 400, "BAD_REQUEST");
    let a = magic(
        &k,
        "PATCH",
        Some(KEY),
        Some(json!({ "target_client_id": MAGIC_CLIENT })),
    )
    .await;
    failed(&a, 400, "BAD_REQUEST");
    // The Clerk API is unaffected by the merge.
    let a = k.call("GET", "/v1/blocklist_identifiers", None).await;
    assert_eq!(a.status, 200, "{a:?}");
}

/// An entry the store holds that a list file gained since: a PUT that lists it keeps the
/// store's row (its id, and the invitation an allowlist entry may have) instead of deleting
/// it as "managed in the file".
#[tokio::test]
async fn a_put_keeps_a_stored_entry_a_list_file_also_holds() {
    let k = kit("", "", "# none yet\n");
    call(&k, "PUT", json!({ "block_list": ["ann@x.com"] })).await;
    let rows = || async {
        k.state
            .store
            .list(crate::lists::ListKind::Block, None, 0)
            .await
            .unwrap()
            .0
    };
    let before = rows().await;
    assert_eq!(before.len(), 1);
    std::fs::write(k._dir.path().join("block.txt"), "ann@x.com\n").unwrap();
    assert!(matches!(
        k.state.reloader.reload(),
        crate::reload::Outcome::Applied { .. }
    ));
    let a = call(
        &k,
        "PUT",
        json!({ "block_list": ["ann@x.com", "bo@x.com"] }),
    )
    .await;
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(a.json["data"]["block_list"]["removed"], json!([]), "{a:?}");
    let after = rows().await;
    let ann = |rows: &[crate::store::StoredEntry]| {
        rows.iter()
            .find(|e| e.identifier == "ann@x.com")
            .map(|e| e.id.clone())
    };
    assert_eq!(ann(&after), ann(&before), "{after:?}");
    assert!(k.denied("bo@x.com"));
}
