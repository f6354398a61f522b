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
    write_batch(&mut conn, jobs, &events, None);

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
    write_batch(&mut conn, jobs, &events, None);
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
            BulkOp::Replace(vec![email("a@x.com"), email("b@x.com"), email("a@x.com")]),
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
            BulkOp::Replace(vec![email("x@x.com"), email("y@x.com"), email("z@x.com")]),
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
