//! Tests of the store against real SQLite files in temporary directories.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use rusqlite::Connection;
use tokio::sync::{broadcast, oneshot};

use super::sqlite::{Job, MIGRATIONS, open_write_connection, write_batch};
use super::*;

fn db(dir: &tempfile::TempDir) -> PathBuf {
    // A parent directory that does not exist yet: open must create it.
    dir.path().join("data").join("nested").join("store.sqlite")
}

fn email(s: &str) -> NewEntry {
    NewEntry {
        identifier: s.to_owned(),
        key: format!("x:{s}"),
        identifier_type: IdentifierType::EmailAddress,
    }
}

fn user_version(path: &Path) -> i64 {
    let conn = Connection::open(path).unwrap();
    conn.pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap()
}

#[test]
fn migrates_from_empty_and_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let store = Store::open_sqlite(&path).unwrap();
    drop(store);
    assert_eq!(user_version(&path), MIGRATIONS.len() as i64);
    {
        let conn = Connection::open(&path).unwrap();
        let mode: String = conn
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(mode.to_ascii_lowercase(), "wal");
        let tables: Vec<String> = conn
            .prepare("SELECT name FROM sqlite_master WHERE type IN ('table','index') ORDER BY name")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        for want in ["entries", "entries_list_created", "settings"] {
            assert!(
                tables.iter().any(|t| t == want),
                "{want} missing: {tables:?}"
            );
        }
    }
    // The writer's settings (per connection, so checked on one configured the same way).
    let conn = open_write_connection(&path).unwrap();
    let pragma = |name: &str| -> i64 { conn.pragma_query_value(None, name, |r| r.get(0)).unwrap() };
    assert_eq!(pragma("synchronous"), 2, "synchronous=FULL");
    assert_eq!(pragma("foreign_keys"), 1);
    drop(conn);
    // Re-open: nothing re-applied, state empty.
    let store = Store::open_sqlite(&path).unwrap();
    let state = store.load().unwrap();
    assert!(state.entries.is_empty());
    assert_eq!(state.restrictions, RestrictionOverrides::default());
    drop(store);
    assert_eq!(user_version(&path), MIGRATIONS.len() as i64);
}

#[test]
fn newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    drop(Store::open_sqlite(&path).unwrap());
    Connection::open(&path)
        .unwrap()
        .pragma_update(None, "user_version", 99)
        .unwrap();
    match Store::open_sqlite(&path) {
        Err(StoreError::Open { path: p, message }) => {
            assert_eq!(p, path);
            assert!(message.contains("99"), "{message}");
        }
        other => panic!("expected Open, got {other:?}"),
    }
}

#[test]
fn unopenable_path_is_open_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    // The parent "directory" is a regular file.
    let err = Store::open_sqlite(&file.join("store.sqlite")).unwrap_err();
    assert!(matches!(err, StoreError::Open { .. }), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insert_list_delete() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let store = Store::open_sqlite(&path).unwrap();
    let mut events = store.subscribe();

    let a = store
        .insert(ListKind::Allow, email("a@x.com"))
        .await
        .unwrap();
    let b = store
        .insert(
            ListKind::Block,
            NewEntry {
                identifier: "+12025550123".into(),
                key: "x:+12025550123".into(),
                identifier_type: IdentifierType::PhoneNumber,
            },
        )
        .await
        .unwrap();
    assert!(ids::is_valid_id("alid_", &a.id), "{}", a.id);
    assert!(ids::is_valid_id("blid_", &b.id), "{}", b.id);
    assert_eq!(a.list, ListKind::Allow);
    assert_eq!(a.identifier, "a@x.com");
    assert_eq!(a.key, "x:a@x.com");
    assert_eq!(a.invitation_id, None);
    assert!(a.created_at > 1_600_000_000_000 && a.created_at == a.updated_at);

    let (allow, total) = store.list(ListKind::Allow, None, 0).await.unwrap();
    assert_eq!((allow, total), (vec![a.clone()], 1));
    let (block, total) = store.list(ListKind::Block, None, 0).await.unwrap();
    assert_eq!((block.clone(), total), (vec![b.clone()], 1));
    assert_eq!(block[0].identifier_type, IdentifierType::PhoneNumber);

    assert_eq!(
        store
            .get_by_key(ListKind::Allow, "x:a@x.com")
            .await
            .unwrap(),
        Some(a.clone())
    );
    // Keys are per list.
    assert_eq!(
        store
            .get_by_key(ListKind::Block, "x:a@x.com")
            .await
            .unwrap(),
        None
    );

    // Deleting from the wrong list is "not found" and changes nothing.
    match store.delete(ListKind::Block, &a.id).await {
        Err(StoreError::NotFound(id)) => assert_eq!(id, a.id),
        other => panic!("expected NotFound, got {other:?}"),
    }
    assert_eq!(store.delete(ListKind::Allow, &a.id).await.unwrap(), a);
    assert_eq!(store.list(ListKind::Allow, None, 0).await.unwrap().1, 0);

    // Changes arrive in commit order; the failed delete produced none.
    let mut seen = Vec::new();
    while let Ok(c) = events.try_recv() {
        seen.push(c);
    }
    assert!(
        matches!(&seen[..], [Change::Added(x), Change::Added(y), Change::Removed(z)]
            if *x == a && *y == b && *z == a),
        "{seen:?}"
    );

    // Persisted.
    drop(store);
    let store = Store::open_sqlite(&path).unwrap();
    let state = store.load().unwrap();
    assert_eq!(state.entries, vec![b]);
}

#[tokio::test]
async fn duplicate_and_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_sqlite(&db(&dir)).unwrap();
    let first = store
        .insert(ListKind::Block, email("a@x.com"))
        .await
        .unwrap();
    // Same key, different display form: still a duplicate, reporting the existing row.
    let mut again = email("A@x.com");
    again.key = first.key.clone();
    match store.insert(ListKind::Block, again).await {
        Err(StoreError::Duplicate { existing, id }) => {
            assert_eq!(existing, "a@x.com");
            assert_eq!(id, first.id);
        }
        other => panic!("expected Duplicate, got {other:?}"),
    }
    // The same key on the other list is fine.
    store
        .insert(ListKind::Allow, email("a@x.com"))
        .await
        .unwrap();

    let cases = [
        "blid_000000000000000000000000000",
        "",
        "nope",
        &first.id[..5],
    ];
    for id in cases {
        match store.delete(ListKind::Block, id).await {
            Err(StoreError::NotFound(got)) => assert_eq!(got, id),
            other => panic!("{id}: expected NotFound, got {other:?}"),
        }
    }
    assert_eq!(store.list(ListKind::Block, None, 0).await.unwrap().1, 1);
    // Deleted twice: the second is not found.
    store.delete(ListKind::Block, &first.id).await.unwrap();
    assert!(matches!(
        store.delete(ListKind::Block, &first.id).await,
        Err(StoreError::NotFound(_))
    ));
}

#[tokio::test]
async fn restrictions_merge_and_persist() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let store = Store::open_sqlite(&path).unwrap();
    let none = RestrictionOverrides::default();
    // (patch, expected full result after it), applied in order.
    let steps = [
        (none, none),
        (
            RestrictionOverrides {
                allowlist: Some(true),
                block_email_subaddresses: Some(false),
                ..none
            },
            RestrictionOverrides {
                allowlist: Some(true),
                block_email_subaddresses: Some(false),
                ..none
            },
        ),
        (
            RestrictionOverrides {
                blocklist: Some(true),
                ..none
            },
            RestrictionOverrides {
                allowlist: Some(true),
                blocklist: Some(true),
                block_email_subaddresses: Some(false),
                ..none
            },
        ),
        (
            RestrictionOverrides {
                allowlist: Some(false),
                allowlist_blocklist_disabled_on_sign_in: Some(true),
                block_disposable_email_domains: Some(true),
                ..none
            },
            RestrictionOverrides {
                allowlist: Some(false),
                blocklist: Some(true),
                allowlist_blocklist_disabled_on_sign_in: Some(true),
                block_email_subaddresses: Some(false),
                block_disposable_email_domains: Some(true),
            },
        ),
    ];
    let mut last = none;
    for (i, (patch, want)) in steps.into_iter().enumerate() {
        last = store.update_restrictions(patch).await.unwrap();
        assert_eq!(last, want, "step {i}");
        assert_eq!(store.load().unwrap().restrictions, want, "step {i}");
    }
    drop(store);
    let store = Store::open_sqlite(&path).unwrap();
    assert_eq!(store.load().unwrap().restrictions, last);
    assert_ne!(last, none);
}

#[tokio::test]
async fn pagination_newest_first_with_total() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_sqlite(&db(&dir)).unwrap();
    let mut inserted = Vec::new();
    for i in 0..7 {
        inserted.push(
            store
                .insert(ListKind::Allow, email(&format!("u{i}@x.com")))
                .await
                .unwrap(),
        );
        // Distinct milliseconds so the order is by time, not only by id.
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    store
        .insert(ListKind::Block, email("other@x.com"))
        .await
        .unwrap();
    let newest_first: Vec<String> = inserted.iter().rev().map(|e| e.id.clone()).collect();

    let cases: &[(Option<usize>, usize, std::ops::Range<usize>)] = &[
        (None, 0, 0..7),
        (Some(3), 0, 0..3),
        (Some(3), 3, 3..6),
        (Some(3), 6, 6..7),
        (Some(3), 7, 7..7),
        (Some(10), 100, 7..7),
        (Some(0), 0, 0..0),
        (None, 5, 5..7),
        (Some(usize::MAX), usize::MAX, 7..7),
    ];
    for (limit, offset, want) in cases {
        let (page, total) = store.list(ListKind::Allow, *limit, *offset).await.unwrap();
        let got: Vec<String> = page.into_iter().map(|e| e.id).collect();
        assert_eq!(
            got,
            newest_first[want.clone()],
            "limit {limit:?} offset {offset}"
        );
        assert_eq!(total, 7, "limit {limit:?} offset {offset}");
    }
}

#[test]
fn concurrent_inserts_are_durable_and_unique() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    let acked: Vec<StoredEntry> = rt.block_on(async {
        let store = Store::open_sqlite(&path).unwrap();
        let mut tasks = Vec::new();
        for t in 0..16 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let mut out = Vec::new();
                for i in 0..200 {
                    let list = if i % 2 == 0 {
                        ListKind::Allow
                    } else {
                        ListKind::Block
                    };
                    out.push(
                        store
                            .insert(list, email(&format!("t{t}-{i}@x.com")))
                            .await
                            .unwrap(),
                    );
                }
                out
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        all
    });
    drop(rt);
    assert_eq!(acked.len(), 3200);
    let ids: HashSet<&str> = acked.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids.len(), 3200);

    let store = Store::open_sqlite(&path).unwrap();
    let mut on_disk = store.load().unwrap().entries;
    let mut acked = acked;
    on_disk.sort_by(|a, b| a.id.cmp(&b.id));
    acked.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(on_disk, acked);
}

#[test]
fn batch_with_duplicate_in_the_middle_commits_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let store = Store::open_sqlite(&path).unwrap();
    let mut conn = open_write_connection(&path).unwrap();
    let (events, mut rx_events) = broadcast::channel(16);

    let mut replies = Vec::new();
    let mut jobs = Vec::new();
    for s in ["a@x.com", "b@x.com", "a@x.com", "c@x.com"] {
        let (reply, rx) = oneshot::channel();
        jobs.push(Job::Insert {
            list: ListKind::Block,
            entry: email(s),
            reply,
        });
        replies.push(rx);
    }
    let (reply, rx_restr) = oneshot::channel();
    jobs.push(Job::Restrictions {
        patch: RestrictionOverrides {
            blocklist: Some(true),
            ..Default::default()
        },
        reply,
    });
    let (reply, rx_missing) = oneshot::channel();
    jobs.push(Job::Delete {
        list: ListKind::Block,
        id: "blid_missing".into(),
        reply,
    });
    write_batch(&mut conn, jobs, &events, None, None);

    let results: Vec<_> = replies
        .into_iter()
        .map(|mut rx| rx.try_recv().unwrap())
        .collect();
    let first = results[0].as_ref().unwrap();
    assert!(results[1].is_ok());
    match &results[2] {
        Err(StoreError::Duplicate { existing, id }) => {
            assert_eq!(existing, "a@x.com");
            assert_eq!(id, &first.id);
        }
        other => panic!("expected Duplicate, got {other:?}"),
    }
    assert!(results[3].is_ok());
    let mut rx_restr = rx_restr;
    assert_eq!(rx_restr.try_recv().unwrap().unwrap().blocklist, Some(true));
    let mut rx_missing = rx_missing;
    assert!(matches!(
        rx_missing.try_recv().unwrap(),
        Err(StoreError::NotFound(_))
    ));
    // Four changes: three adds and the restrictions, in order.
    let mut kinds = Vec::new();
    while let Ok(c) = rx_events.try_recv() {
        kinds.push(match c {
            Change::Added(e) => e.identifier,
            Change::Restrictions(_) => "restrictions".into(),
            other => format!("{other:?}"),
        });
    }
    assert_eq!(kinds, ["a@x.com", "b@x.com", "c@x.com", "restrictions"]);

    drop(conn);
    let state = store.load().unwrap();
    let mut got: Vec<&str> = state
        .entries
        .iter()
        .map(|e| e.identifier.as_str())
        .collect();
    got.sort_unstable();
    assert_eq!(got, ["a@x.com", "b@x.com", "c@x.com"]);
    assert_eq!(state.restrictions.blocklist, Some(true));
}

#[test]
fn failed_batch_fails_every_op() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let store = Store::open_sqlite(&path).unwrap();
    let mut conn = open_write_connection(&path).unwrap();
    conn.busy_timeout(std::time::Duration::from_millis(50))
        .unwrap();
    // Another connection holds the write lock, so the batch cannot begin.
    let mut blocker = open_write_connection(&path).unwrap();
    let held = blocker
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .unwrap();
    let (events, mut rx_events) = broadcast::channel(16);
    let (reply, mut rx1) = oneshot::channel();
    let (reply2, mut rx2) = oneshot::channel();
    let jobs = vec![
        Job::Insert {
            list: ListKind::Allow,
            entry: email("a@x.com"),
            reply,
        },
        Job::Restrictions {
            patch: RestrictionOverrides::default(),
            reply: reply2,
        },
    ];
    write_batch(&mut conn, jobs, &events, None, None);
    assert!(matches!(
        rx1.try_recv().unwrap(),
        Err(StoreError::Unavailable(_))
    ));
    assert!(matches!(
        rx2.try_recv().unwrap(),
        Err(StoreError::Unavailable(_))
    ));
    assert!(rx_events.try_recv().is_err());
    drop(held);
    assert!(store.load().unwrap().entries.is_empty());
}

#[test]
fn unknown_values_on_disk_are_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let store = Store::open_sqlite(&path).unwrap();
    let conn = open_write_connection(&path).unwrap();
    conn.execute(
        "INSERT INTO entries VALUES ('alid_x', 'allow', 'a@x.com', 'x:a@x.com', 'fax', NULL, 1, 1)",
        [],
    )
    .unwrap();
    assert!(matches!(store.load(), Err(StoreError::Unavailable(_))));
    conn.execute("DELETE FROM entries", []).unwrap();
    conn.execute(
        "INSERT INTO settings VALUES ('restrictions', 'not json')",
        [],
    )
    .unwrap();
    assert!(matches!(store.load(), Err(StoreError::Unavailable(_))));
}

#[test]
fn identifier_type_names_round_trip() {
    for t in [
        IdentifierType::EmailAddress,
        IdentifierType::PhoneNumber,
        IdentifierType::Web3Wallet,
    ] {
        assert_eq!(IdentifierType::from_name(t.as_str()), Some(t));
        assert_eq!(
            serde_json::to_string(&t).unwrap(),
            format!("\"{}\"", t.as_str())
        );
    }
    assert_eq!(IdentifierType::from_name("email"), None);
}

#[test]
fn bulk_insert_for_bench_fills_the_list() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_sqlite(&db(&dir)).unwrap();
    let sqlite = store.as_sqlite().unwrap();
    sqlite
        .bulk_insert_for_bench(ListKind::Block, 1000, "bulk")
        .unwrap();
    let state = store.load().unwrap();
    assert_eq!(state.entries.len(), 1000);
    let ids: HashSet<&str> = state.entries.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids.len(), 1000);
    assert!(state.entries.iter().all(|e| e.list == ListKind::Block));
}

#[tokio::test]
async fn bulk_replace_append_remove_in_one_op_and_limits_roll_back() {
    use super::bulk::{BulkOp, BulkWrite};
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_sqlite(&db(&dir)).unwrap();
    let mut rx = store.subscribe();
    let w = |op, limit| BulkWrite {
        list: ListKind::Block,
        op,
        limit,
    };
    let r = store
        .bulk(vec![w(
            BulkOp::Replace {
                entries: vec![email("a@x.com"), email("b@x.com"), email("a@x.com")],
                keep: Vec::new(),
            },
            10,
        )])
        .await
        .unwrap();
    assert_eq!(r[0].added.len(), 2);
    assert_eq!(r[0].total, 2);
    match rx.recv().await.unwrap() {
        Change::Replaced { list, entries } => {
            assert_eq!(list, ListKind::Block);
            assert_eq!(entries.len(), 2);
        }
        other => panic!("{other:?}"),
    }

    // Over the limit: nothing written, the offender named.
    let e = store
        .bulk(vec![w(
            BulkOp::Append(vec![email("b@x.com"), email("c@x.com")]),
            2,
        )])
        .await
        .unwrap_err();
    match e {
        StoreError::LimitExceeded {
            total, limit, over, ..
        } => assert_eq!((total, limit, over), (3, 2, vec!["c@x.com".to_owned()])),
        other => panic!("{other:?}"),
    }
    let e = store
        .bulk(vec![w(
            BulkOp::Replace {
                entries: vec![email("x@x.com"), email("y@x.com"), email("z@x.com")],
                keep: Vec::new(),
            },
            2,
        )])
        .await
        .unwrap_err();
    assert!(
        matches!(e, StoreError::LimitExceeded { total: 3, .. }),
        "{e:?}"
    );
    assert_eq!(
        store.identifiers(ListKind::Block).await.unwrap(),
        ["a@x.com", "b@x.com"]
    );

    let r = store
        .bulk(vec![
            w(BulkOp::Append(vec![email("b@x.com"), email("c@x.com")]), 3),
            BulkWrite {
                list: ListKind::Allow,
                op: BulkOp::Append(vec![email("ok@x.com")]),
                limit: 1,
            },
        ])
        .await
        .unwrap();
    assert_eq!(r[0].unchanged, ["b@x.com"]);
    assert_eq!(r[0].added[0].identifier, "c@x.com");
    assert_eq!(r[1].total, 1);
    let r = store
        .bulk(vec![w(
            BulkOp::Remove(vec![email("a@x.com"), email("zz@x.com")]),
            0,
        )])
        .await
        .unwrap();
    assert_eq!(r[0].removed[0].identifier, "a@x.com");
    assert_eq!(r[0].unchanged, ["zz@x.com"]);
    assert_eq!(
        store.identifiers(ListKind::Block).await.unwrap(),
        ["b@x.com", "c@x.com"]
    );
    // Survives a reopen.
    drop(store);
    let store = Store::open_sqlite(&db(&dir)).unwrap();
    assert_eq!(store.load().unwrap().entries.len(), 3);
}

// ---- invitations and deliveries (issue #9) ----

fn invite(s: &str) -> NewInvitation {
    NewInvitation {
        identifier: s.to_owned(),
        identifier_type: IdentifierType::EmailAddress,
        public_metadata: serde_json::json!({}),
        redirect_url: None,
        expires_at: Some(sqlite::now_ms() + 86_400_000),
        ignore_existing: false,
        deliver: Some(Channel::Email),
    }
}

fn all_statuses() -> InvitationQuery {
    InvitationQuery {
        descending: true,
        ..Default::default()
    }
}

#[tokio::test]
async fn invitations_create_duplicates_and_bulk_all_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_sqlite(&db(&dir)).unwrap();
    let notify = store.deliveries_notify();
    let one = store
        .create_invitations(vec![invite("a@x.com")])
        .await
        .unwrap();
    assert_eq!(one.len(), 1);
    let a = &one[0];
    assert!(ids::is_valid_id("inv_", &a.id), "{}", a.id);
    assert_eq!(a.status, InvitationStatus::Pending);
    assert_eq!(a.token.len(), 32);
    assert!(a.token.bytes().all(|b| b.is_ascii_alphanumeric()));
    assert!(
        !format!("{a:?}").contains(&a.token),
        "Debug hides the token"
    );
    // The commit that queued a delivery stored a permit for the worker.
    tokio::time::timeout(std::time::Duration::from_secs(5), notify.notified())
        .await
        .expect("deliveries_notify fired");
    let d = store.deliveries_of(&a.id).await.unwrap();
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].state, DeliveryState::Pending);
    assert_eq!(d[0].recipient, "a@x.com");
    assert_eq!(d[0].token, a.token);

    // A bulk with two duplicates (one pending already, one twice in the call) fails whole,
    // naming both, and writes nothing.
    let err = store
        .create_invitations(vec![
            invite("b@x.com"),
            invite("a@x.com"),
            invite("c@x.com"),
            invite("c@x.com"),
        ])
        .await
        .unwrap_err();
    match err {
        StoreError::DuplicateInvitation { identifiers } => {
            assert_eq!(identifiers, ["a@x.com", "c@x.com"]);
        }
        other => panic!("expected DuplicateInvitation, got {other:?}"),
    }
    let (rows, total) = store.list_invitations(all_statuses()).await.unwrap();
    assert_eq!((rows.len(), total), (1, 1));
    assert_eq!(store.delivery_counts().await.unwrap().pending, 1);

    // ignore_existing creates a second pending one; without deliver no delivery row.
    let mut again = invite("a@x.com");
    again.ignore_existing = true;
    again.deliver = None;
    let second = store.create_invitations(vec![again]).await.unwrap();
    assert!(store.deliveries_of(&second[0].id).await.unwrap().is_empty());
    let bulk = store
        .create_invitations(vec![invite("b@x.com"), invite("c@x.com")])
        .await
        .unwrap();
    assert_eq!(bulk.len(), 2);
    let (_, total) = store.list_invitations(all_statuses()).await.unwrap();
    assert_eq!(total, 4);
}

#[tokio::test]
async fn invitations_list_filters_order_and_past_due_reads_expired() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_sqlite(&db(&dir)).unwrap();
    let mut items = Vec::new();
    for s in ["carol@x.com", "alice@y.com", "bob@x.com"] {
        items.push(
            store
                .create_invitations(vec![invite(s)])
                .await
                .unwrap()
                .remove(0),
        );
    }
    let mut past = invite("old@x.com");
    past.expires_at = Some(sqlite::now_ms() - 1000);
    let old = store
        .create_invitations(vec![past])
        .await
        .unwrap()
        .remove(0);
    store.revoke_invitation(&items[0].id).await.unwrap();

    // Default: everything but revoked, newest first; the past-due one reads expired.
    let (rows, total) = store.list_invitations(all_statuses()).await.unwrap();
    let got: Vec<(&str, InvitationStatus)> = rows
        .iter()
        .map(|i| (i.identifier.as_str(), i.status))
        .collect();
    assert_eq!(
        got,
        [
            ("old@x.com", InvitationStatus::Expired),
            ("bob@x.com", InvitationStatus::Pending),
            ("alice@y.com", InvitationStatus::Pending)
        ]
    );
    assert_eq!(total, 3);
    let status = |s| InvitationQuery {
        status: Some(s),
        ..all_statuses()
    };
    let (rows, _) = store
        .list_invitations(status(InvitationStatus::Pending))
        .await
        .unwrap();
    assert_eq!(
        rows.len(),
        2,
        "a past-due invitation is never listed as pending"
    );
    let (rows, _) = store
        .list_invitations(status(InvitationStatus::Expired))
        .await
        .unwrap();
    assert_eq!(rows[0].id, old.id);
    let (rows, _) = store
        .list_invitations(status(InvitationStatus::Revoked))
        .await
        .unwrap();
    assert_eq!(rows[0].identifier, "carol@x.com");
    // query: substring of the address (case-insensitive) or the exact id.
    let (rows, total) = store
        .list_invitations(InvitationQuery {
            query: Some("@X.COM".into()),
            ..all_statuses()
        })
        .await
        .unwrap();
    assert_eq!((rows.len(), total), (2, 2));
    let (rows, _) = store
        .list_invitations(InvitationQuery {
            query: Some(items[1].id.clone()),
            ..all_statuses()
        })
        .await
        .unwrap();
    assert_eq!(rows[0].identifier, "alice@y.com");
    // order_by email_address ascending, paged.
    let (rows, total) = store
        .list_invitations(InvitationQuery {
            order_by: InvitationOrderField::EmailAddress,
            descending: false,
            limit: Some(2),
            offset: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    let got: Vec<&str> = rows.iter().map(|i| i.identifier.as_str()).collect();
    assert_eq!(got, ["bob@x.com", "old@x.com"]);
    assert_eq!(total, 3);
    // The sweep stores it; the delivery of the expired one was given up.
    assert_eq!(store.expire_invitations().await.unwrap(), 1);
    assert_eq!(store.expire_invitations().await.unwrap(), 0);
    let d = store.deliveries_of(&old.id).await.unwrap();
    assert_eq!(d[0].state, DeliveryState::Failed);
    assert_eq!(d[0].last_error.as_deref(), Some("invitation expired"));
}

#[tokio::test]
async fn invitations_revoke_accept_delete_and_deliveries() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_sqlite(&db(&dir)).unwrap();
    let a = store
        .create_invitations(vec![invite("a@x.com")])
        .await
        .unwrap()
        .remove(0);
    let b = store
        .create_invitations(vec![invite("b@x.com")])
        .await
        .unwrap()
        .remove(0);
    let now = sqlite::now_ms();
    let due = store.due_deliveries(now + 1, 10).await.unwrap();
    assert_eq!(due.len(), 2);
    assert_eq!(due[0].invitation_id, a.id, "oldest first");

    // Retry pushes it out; sent is idempotent; counts follow.
    store
        .delivery_retry(due[0].id, 1, now + 60_000, "relay down".into())
        .await
        .unwrap();
    let due_now = store.due_deliveries(now + 1, 10).await.unwrap();
    assert_eq!(due_now.len(), 1);
    assert_eq!(due_now[0].invitation_id, b.id);
    store.delivery_sent(due_now[0].id, now).await.unwrap();
    store.delivery_sent(due_now[0].id, now + 5).await.unwrap();
    let sent = store.deliveries_of(&b.id).await.unwrap().remove(0);
    assert_eq!((sent.state, sent.sent_at), (DeliveryState::Sent, Some(now)));
    let counts = store.delivery_counts().await.unwrap();
    assert_eq!((counts.pending, counts.sent, counts.failed), (1, 1, 0));
    assert!(counts.oldest_pending_created_at.is_some());

    // Revoke gives up the pending delivery; revoking again / unknown ids are typed errors.
    let r = store.revoke_invitation(&a.id).await.unwrap();
    assert_eq!(r.status, InvitationStatus::Revoked);
    assert!(
        store
            .due_deliveries(now + 120_000, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let d = store.deliveries_of(&a.id).await.unwrap().remove(0);
    assert_eq!(d.state, DeliveryState::Failed);
    assert_eq!(d.attempts, 1);
    assert!(matches!(
        store.revoke_invitation(&a.id).await,
        Err(StoreError::InvitationAlreadyRevoked(_))
    ));
    assert!(matches!(
        store.revoke_invitation("inv_missing").await,
        Err(StoreError::NotFound(_))
    ));

    // Accept: pending for that identifier only.
    assert_eq!(store.accept_invitations("b@x.com").await.unwrap(), 1);
    assert_eq!(store.accept_invitations("b@x.com").await.unwrap(), 0);
    assert_eq!(
        store.accept_invitations("a@x.com").await.unwrap(),
        0,
        "revoked stays revoked"
    );
    let got = store.get_invitation(&b.id).await.unwrap().unwrap();
    assert_eq!(got.status, InvitationStatus::Accepted);
    assert!(matches!(
        store.revoke_invitation(&b.id).await,
        Err(StoreError::InvitationAlreadyAccepted(_))
    ));

    // Give up.
    let c = store
        .create_invitations(vec![invite("c@x.com")])
        .await
        .unwrap()
        .remove(0);
    let dc = store.deliveries_of(&c.id).await.unwrap().remove(0);
    store
        .delivery_give_up(dc.id, "550 no such user".into())
        .await
        .unwrap();
    let dc = store.deliveries_of(&c.id).await.unwrap().remove(0);
    assert_eq!(dc.state, DeliveryState::Failed);

    // Delete: any status, deliveries go with it.
    let gone = store.delete_invitation(&b.id).await.unwrap();
    assert_eq!(gone.id, b.id);
    assert!(store.get_invitation(&b.id).await.unwrap().is_none());
    assert!(store.deliveries_of(&b.id).await.unwrap().is_empty());
    assert!(matches!(
        store.delete_invitation(&b.id).await,
        Err(StoreError::NotFound(_))
    ));
}

#[tokio::test]
async fn allowlist_with_invitation_is_one_transaction_and_delete_revokes() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let store = Store::open_sqlite(&path).unwrap();
    let mut changes = store.subscribe();
    let (entry, inv) = store
        .insert_invited(email("a@x.com"), invite("a@x.com"))
        .await
        .unwrap();
    assert_eq!(entry.invitation_id.as_deref(), Some(inv.id.as_str()));
    assert!(matches!(changes.try_recv(), Ok(Change::Added(e)) if e.id == entry.id));
    assert_eq!(store.deliveries_of(&inv.id).await.unwrap().len(), 1);

    // Already on the list: Duplicate, and no invitation or delivery was written.
    let err = store
        .insert_invited(email("a@x.com"), invite("a@x.com"))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Duplicate { .. }), "{err:?}");
    let (_, total) = store.list_invitations(all_statuses()).await.unwrap();
    assert_eq!(total, 1);
    assert_eq!(store.deliveries_of(&inv.id).await.unwrap().len(), 1);

    // A pending invitation for the address is reused: no new invitation, and no second
    // message while its first is queued (a copy with another Message-ID).
    let pre = store
        .create_invitations(vec![invite("b@x.com")])
        .await
        .unwrap()
        .remove(0);
    let (eb, ib) = store
        .insert_invited(email("b@x.com"), invite("b@x.com"))
        .await
        .unwrap();
    assert_eq!(ib.id, pre.id);
    assert_eq!(eb.invitation_id.as_deref(), Some(pre.id.as_str()));
    assert_eq!(store.deliveries_of(&pre.id).await.unwrap().len(), 1);
    // Once its message failed for good, reusing it queues one again.
    let c = store
        .create_invitations(vec![invite("c@x.com")])
        .await
        .unwrap()
        .remove(0);
    let failed = store.deliveries_of(&c.id).await.unwrap().remove(0);
    store
        .delivery_give_up(failed.id, "relay refused".into())
        .await
        .unwrap();
    store
        .insert_invited(email("c@x.com"), invite("c@x.com"))
        .await
        .unwrap();
    assert_eq!(store.deliveries_of(&c.id).await.unwrap().len(), 2);

    // Deleting the entry revokes the pending invitation and gives up its deliveries.
    store.delete(ListKind::Allow, &entry.id).await.unwrap();
    let got = store.get_invitation(&inv.id).await.unwrap().unwrap();
    assert_eq!(got.status, InvitationStatus::Revoked);
    let d = store.deliveries_of(&inv.id).await.unwrap().remove(0);
    assert_eq!(d.state, DeliveryState::Failed);

    // Everything survives a restart.
    drop(store);
    let store = Store::open_sqlite(&path).unwrap();
    let state = store.load().unwrap();
    assert_eq!(state.entries.len(), 2);
    let b = state.entries.iter().find(|e| e.identifier == "b@x.com");
    assert_eq!(
        b.and_then(|e| e.invitation_id.as_deref()),
        Some(pre.id.as_str())
    );
    let again = store.get_invitation(&inv.id).await.unwrap().unwrap();
    assert_eq!(again.status, InvitationStatus::Revoked);
    assert_eq!(again.token, inv.token);
    let reopened = store.get_invitation(&pre.id).await.unwrap().unwrap();
    assert_eq!(reopened, pre);
    let counts = store.delivery_counts().await.unwrap();
    assert_eq!((counts.pending, counts.failed), (2, 2));
    let due = store
        .due_deliveries(sqlite::now_ms() + 1, 10)
        .await
        .unwrap();
    let mut ids: Vec<&str> = due.iter().map(|d| d.invitation_id.as_str()).collect();
    ids.sort_unstable();
    let mut want = [pre.id.as_str(), c.id.as_str()];
    want.sort_unstable();
    assert_eq!(ids, want);
}

#[test]
fn invitation_tables_exist_after_migration() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    drop(Store::open_sqlite(&path).unwrap());
    let conn = Connection::open(&path).unwrap();
    for t in [
        "invitations",
        "deliveries",
        "deliveries_due",
        "invitations_pending_expiry",
    ] {
        let n: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE name = ?1",
                [t],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(n, 1, "{t}");
    }
    assert_eq!(user_version(&path), 2);
}

/// Sets a column of one invitation behind the writer's back (another connection), to reach
/// states the ops themselves never leave behind (a pending delivery of a non-pending
/// invitation).
fn force_invitation(path: &Path, id: &str, set: &str) {
    let conn = Connection::open(path).unwrap();
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .unwrap();
    let n = conn
        .execute(&format!("UPDATE invitations SET {set} WHERE id = ?1"), [id])
        .unwrap();
    assert_eq!(n, 1);
}

#[tokio::test]
async fn claim_delivery_says_yes_only_for_a_pending_delivery_of_a_pending_invitation() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let store = Store::open_sqlite(&path).unwrap();
    let mut ids = Vec::new();
    for who in [
        "ok@x.com",
        "rev@x.com",
        "acc@x.com",
        "old@x.com",
        "gone@x.com",
    ] {
        let inv = store
            .create_invitations(vec![invite(who)])
            .await
            .unwrap()
            .remove(0);
        let d = store.deliveries_of(&inv.id).await.unwrap().remove(0);
        ids.push((inv.id, d.id));
    }
    let now = sqlite::now_ms();
    // The worker reads a batch...
    let batch = store.due_deliveries(now + 1, 10).await.unwrap();
    assert_eq!(batch.len(), 5);
    // ...then, before it sends, invitations change. A revoke through the op gives up the
    // delivery itself; the others are forced so the delivery is still pending.
    store.revoke_invitation(&ids[1].0).await.unwrap();
    force_invitation(&path, &ids[2].0, "status = 'accepted'");
    force_invitation(&path, &ids[3].0, "expires_at = 1000");
    store.delete_invitation(&ids[4].0).await.unwrap();

    assert!(store.claim_delivery(ids[0].1, now).await.unwrap());
    assert!(
        store.claim_delivery(ids[0].1, now).await.unwrap(),
        "a yes changes nothing"
    );
    let d = store.deliveries_of(&ids[0].0).await.unwrap().remove(0);
    assert_eq!((d.state, d.attempts), (DeliveryState::Pending, 0));
    for (i, why) in [
        (1, "invitation revoked"),
        (2, "invitation accepted"),
        (3, "invitation expired"),
    ] {
        assert!(!store.claim_delivery(ids[i].1, now).await.unwrap(), "{why}");
        let d = store.deliveries_of(&ids[i].0).await.unwrap().remove(0);
        assert_eq!(d.state, DeliveryState::Failed, "{why}");
        assert_eq!(d.last_error.as_deref(), Some(why));
    }
    // The past-due one is stored expired, as the sweep would.
    let conn = Connection::open(&path).unwrap();
    let stored: String = conn
        .query_row(
            "SELECT status FROM invitations WHERE id = ?1",
            [&ids[3].0],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(stored, "expired");
    // Deleted with its invitation, or never there: no.
    assert!(!store.claim_delivery(ids[4].1, now).await.unwrap());
    assert!(!store.claim_delivery(i64::MAX, now).await.unwrap());
    // A sent delivery is not claimed again.
    store.delivery_sent(ids[0].1, now).await.unwrap();
    assert!(!store.claim_delivery(ids[0].1, now).await.unwrap());
    let counts = store.delivery_counts().await.unwrap();
    assert_eq!((counts.pending, counts.sent, counts.failed), (0, 1, 3));
}

#[tokio::test]
async fn delivery_sent_only_moves_pending_to_sent() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_sqlite(&db(&dir)).unwrap();
    let inv = store
        .create_invitations(vec![invite("a@x.com")])
        .await
        .unwrap()
        .remove(0);
    let d = store.deliveries_of(&inv.id).await.unwrap().remove(0);
    // Revoked while the relay was talking: the late "sent" mark does not resurrect it.
    store.revoke_invitation(&inv.id).await.unwrap();
    store.delivery_sent(d.id, 5).await.unwrap();
    let after = store.deliveries_of(&inv.id).await.unwrap().remove(0);
    assert_eq!(after.state, DeliveryState::Failed);
    assert_eq!(after.sent_at, None);
    assert_eq!(after.last_error.as_deref(), Some("invitation revoked"));
    // Given up by the worker: same.
    let b = store
        .create_invitations(vec![invite("b@x.com")])
        .await
        .unwrap()
        .remove(0);
    let db_ = store.deliveries_of(&b.id).await.unwrap().remove(0);
    store
        .delivery_give_up(db_.id, "550 no such user".into())
        .await
        .unwrap();
    store.delivery_sent(db_.id, 5).await.unwrap();
    let after = store.deliveries_of(&b.id).await.unwrap().remove(0);
    assert_eq!(after.state, DeliveryState::Failed);
    assert_eq!(after.last_error.as_deref(), Some("550 no such user"));
}

#[tokio::test]
async fn accepting_gives_up_the_pending_deliveries() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_sqlite(&db(&dir)).unwrap();
    let inv = store
        .create_invitations(vec![invite("a@x.com")])
        .await
        .unwrap()
        .remove(0);
    assert_eq!(store.delivery_counts().await.unwrap().pending, 1);
    assert_eq!(store.accept_invitations("a@x.com").await.unwrap(), 1);
    let d = store.deliveries_of(&inv.id).await.unwrap().remove(0);
    assert_eq!(d.state, DeliveryState::Failed);
    assert_eq!(d.last_error.as_deref(), Some("invitation accepted"));
    let counts = store.delivery_counts().await.unwrap();
    assert_eq!((counts.pending, counts.failed), (0, 1));
    assert_eq!(counts.oldest_pending_created_at, None);
}

#[tokio::test]
async fn bulk_removal_from_the_allow_list_revokes_pending_invitations() {
    use super::bulk::{BulkOp, BulkWrite};
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_sqlite(&db(&dir)).unwrap();
    let mut invs = Vec::new();
    for who in ["a@x.com", "b@x.com", "c@x.com"] {
        let (_, inv) = store.insert_invited(email(who), invite(who)).await.unwrap();
        invs.push(inv);
    }
    // The block list has its own a@x.com: removing it there touches no invitation.
    store
        .bulk(vec![BulkWrite {
            list: ListKind::Block,
            op: BulkOp::Append(vec![email("a@x.com")]),
            limit: 10,
        }])
        .await
        .unwrap();
    store
        .bulk(vec![BulkWrite {
            list: ListKind::Block,
            op: BulkOp::Remove(vec![email("a@x.com")]),
            limit: 10,
        }])
        .await
        .unwrap();
    let status = |i: usize| {
        let store = &store;
        let id = invs[i].id.clone();
        async move { store.get_invitation(&id).await.unwrap().unwrap().status }
    };
    assert_eq!(status(0).await, InvitationStatus::Pending);

    // Remove (the Magic API's DELETE, `idgate lists remove`).
    let r = store
        .bulk(vec![BulkWrite {
            list: ListKind::Allow,
            op: BulkOp::Remove(vec![email("a@x.com")]),
            limit: 10,
        }])
        .await
        .unwrap();
    assert_eq!(r[0].removed.len(), 1);
    assert_eq!(status(0).await, InvitationStatus::Revoked);
    let d = store.deliveries_of(&invs[0].id).await.unwrap().remove(0);
    assert_eq!(
        (d.state, d.last_error.as_deref()),
        (DeliveryState::Failed, Some("invitation revoked"))
    );
    assert_eq!(status(1).await, InvitationStatus::Pending);

    // Replace (the Magic API's PUT, `idgate lists import --replace`): b goes, c stays.
    store
        .bulk(vec![BulkWrite {
            list: ListKind::Allow,
            op: BulkOp::Replace {
                entries: vec![email("c@x.com"), email("d@x.com")],
                keep: Vec::new(),
            },
            limit: 10,
        }])
        .await
        .unwrap();
    assert_eq!(status(1).await, InvitationStatus::Revoked);
    assert_eq!(status(2).await, InvitationStatus::Pending);
    let due = store
        .due_deliveries(sqlite::now_ms() + 1, 10)
        .await
        .unwrap();
    let due: Vec<&str> = due.iter().map(|d| d.invitation_id.as_str()).collect();
    assert_eq!(due, [invs[2].id.as_str()]);
    assert_eq!(store.delivery_counts().await.unwrap().pending, 1);
}

#[tokio::test]
async fn duplicates_are_pending_or_accepted_not_revoked_or_expired() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let store = Store::open_sqlite(&path).unwrap();
    let one = |who: &str| {
        let mut i = invite(who);
        i.deliver = None;
        vec![i]
    };
    let dup = |r: Result<Vec<Invitation>, StoreError>| {
        matches!(r, Err(StoreError::DuplicateInvitation { .. }))
    };
    for who in ["p@x.com", "a@x.com", "r@x.com", "e@x.com"] {
        store.create_invitations(one(who)).await.unwrap();
    }
    store.accept_invitations("a@x.com").await.unwrap();
    let (rows, _) = store
        .list_invitations(InvitationQuery {
            query: Some("r@x.com".into()),
            ..all_statuses()
        })
        .await
        .unwrap();
    store.revoke_invitation(&rows[0].id).await.unwrap();
    let (rows, _) = store
        .list_invitations(InvitationQuery {
            query: Some("e@x.com".into()),
            ..all_statuses()
        })
        .await
        .unwrap();
    force_invitation(&path, &rows[0].id, "expires_at = 1000");

    assert!(
        dup(store.create_invitations(one("p@x.com")).await),
        "pending"
    );
    assert!(
        dup(store.create_invitations(one("a@x.com")).await),
        "accepted"
    );
    store.create_invitations(one("r@x.com")).await.unwrap();
    store.create_invitations(one("e@x.com")).await.unwrap();
    // ignore_existing still overrides.
    let mut again = one("a@x.com");
    again[0].ignore_existing = true;
    store.create_invitations(again).await.unwrap();
}

#[tokio::test]
async fn invitations_list_can_be_limited_to_one_identifier_type() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_sqlite(&db(&dir)).unwrap();
    store
        .create_invitations(vec![invite("a@x.com")])
        .await
        .unwrap();
    let mut phone = invite("+14155550100");
    phone.identifier_type = IdentifierType::PhoneNumber;
    phone.deliver = Some(Channel::Sms);
    store.create_invitations(vec![phone]).await.unwrap();
    let (rows, total) = store.list_invitations(all_statuses()).await.unwrap();
    assert_eq!((rows.len(), total), (2, 2));
    let (rows, total) = store
        .list_invitations(InvitationQuery {
            identifier_type: Some(IdentifierType::EmailAddress),
            limit: Some(5),
            ..all_statuses()
        })
        .await
        .unwrap();
    assert_eq!((rows.len(), total), (1, 1));
    assert_eq!(rows[0].identifier, "a@x.com");
}

/// An invitation created by a caller that stopped waiting (an admin client that disconnected)
/// still moves the invitations version once it commits, so the acceptance filter learns of
/// it; and the invitation is there.
#[tokio::test]
async fn a_create_whose_caller_went_away_still_moves_the_invitations_version() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_sqlite(&db(&dir)).unwrap();
    let before = store.invitations_version();
    // Another connection holds the write lock: the writer waits (busy timeout), so the
    // caller cannot have its answer before it gives up.
    let blocker = Connection::open(db(&dir)).unwrap();
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
    // Polled once (the op is handed to the writer), then dropped.
    let gone = tokio::time::timeout(
        std::time::Duration::ZERO,
        store.create_invitations(vec![invite("late@acme.com")]),
    )
    .await;
    assert!(gone.is_err(), "the create finished within its first poll");
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert_eq!(
        store.invitations_version(),
        before,
        "moved before the commit"
    );
    blocker.execute_batch("COMMIT").unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while store.invitations_version() == before {
        assert!(
            std::time::Instant::now() < deadline,
            "the version never moved"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let pending = store.pending_invitation_identifiers().await.unwrap();
    assert!(pending.contains("late@acme.com"), "{pending:?}");
}

/// One holder per database, however it is named (a symlink, a `..` step); released when
/// dropped.
#[cfg(unix)]
#[test]
fn the_store_lock_is_one_per_database_file() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("data").join("idgate.db");
    let held = lock_exclusive(&db).unwrap();
    std::fs::write(&db, b"").unwrap();
    std::os::unix::fs::symlink(&db, dir.path().join("link.db")).unwrap();
    for other in [
        dir.path().join("link.db"),
        dir.path().join("data/../data/idgate.db"),
    ] {
        match lock_exclusive(&other) {
            Err(StoreError::Open { message, .. }) => {
                assert!(message.contains("another idgate process"), "{message}")
            }
            Ok(_) => panic!("{} took the lock of a database in use", other.display()),
            Err(e) => panic!("{e}"),
        }
    }
    assert!(lock_exclusive(&dir.path().join("data").join("other.db")).is_ok());
    drop(held);
    assert!(lock_exclusive(&dir.path().join("link.db")).is_ok());
}

/// A replace's `keep` keys: a row with one of them stays (id and all), one without a row is
/// not added; every other row not in `entries` goes.
#[tokio::test]
async fn a_replace_keeps_the_rows_it_is_told_to_keep() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_sqlite(&db(&dir)).unwrap();
    let w = |op| BulkWrite {
        list: ListKind::Block,
        op,
        limit: 10,
    };
    let first = store
        .bulk(vec![w(BulkOp::Append(vec![
            email("a@x.com"),
            email("b@x.com"),
        ]))])
        .await
        .unwrap();
    let a_id = first[0].added[0].id.clone();
    let r = store
        .bulk(vec![w(BulkOp::Replace {
            entries: vec![email("c@x.com")],
            keep: vec!["x:a@x.com".into(), "x:q@x.com".into()],
        })])
        .await
        .unwrap();
    let removed: Vec<&str> = r[0].removed.iter().map(|e| e.identifier.as_str()).collect();
    assert_eq!(removed, ["b@x.com"]);
    let rows = store.list(ListKind::Block, None, 0).await.unwrap().0;
    let mut names: Vec<&str> = rows.iter().map(|e| e.identifier.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["a@x.com", "c@x.com"]);
    assert!(rows.iter().any(|e| e.id == a_id));
    assert_eq!(r[0].total, 2);
}
