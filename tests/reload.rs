//! Hot reload on a running gate: in-place writes, atomic renames, a Kubernetes ConfigMap-style
//! symlink swap, broken edits that keep the last good lists, and settings that need a restart.

mod common;

use std::time::Duration;

use common::*;

const WITH_FILES: &str = r#"
lists:
  files: { allow: [lists/allow.txt], block: [lists/block.txt] }
routes:
  - name: sign-up
    path: /api/sign-up
    kind: sign_up
    identifier: [{ json: /email }]
reload:
  debounce: 50ms
  interval: 0s
"#;

async fn status_for(addr: std::net::SocketAddr, email: &str) -> u16 {
    post_json(addr, "/api/sign-up", &format!(r#"{{"email":"{email}"}}"#))
        .await
        .status
}

async fn becomes(addr: std::net::SocketAddr, email: &str, want: u16) -> bool {
    eventually(Duration::from_secs(3), || async {
        status_for(addr, email).await == want
    })
    .await
}

/// A gate with `extra` (whole lines) and [`WITH_FILES`] as its config; the allow file holds
/// `*@acme.com`, the block file nothing.
async fn start_with_acme_lists(extra: &str) -> TestGate {
    start_with(
        &format!("{extra}{WITH_FILES}"),
        &[("lists/allow.txt", "*@acme.com\n"), ("lists/block.txt", "")],
    )
    .await
}

/// Rewrites the gate's config file with each `(from, to)` replaced.
fn edit_config(g: &TestGate, edits: &[(&str, &str)]) {
    let mut text = std::fs::read_to_string(g.config_path()).unwrap();
    for (from, to) in edits {
        assert!(text.contains(from), "{from:?} is not in the config");
        text = text.replace(from, to);
    }
    std::fs::write(g.config_path(), text).unwrap();
}

#[tokio::test]
async fn in_place_write_and_atomic_rename() {
    let g = start_with(
        WITH_FILES,
        &[
            ("lists/allow.txt", "*@acme.com\n"),
            ("lists/block.txt", "# none yet\n"),
        ],
    )
    .await;
    assert_eq!(status_for(g.addr, "dave@acme.com").await, 200);
    assert_eq!(status_for(g.addr, "erin@partner.io").await, 403);

    // In-place write (truncate + write, as `>` or most editors' "save" does).
    std::fs::write(g.path("lists/block.txt"), "dave@acme.com\n").unwrap();
    assert!(
        becomes(g.addr, "dave@acme.com", 403).await,
        "in-place write not applied"
    );

    // Atomic rename (vim, Kubernetes tools, `mv tmp file`).
    let tmp = g.path("lists/.allow.txt.tmp");
    std::fs::write(&tmp, "*@acme.com\nerin@partner.io\n").unwrap();
    std::fs::rename(&tmp, g.path("lists/allow.txt")).unwrap();
    assert!(
        becomes(g.addr, "erin@partner.io", 200).await,
        "rename not applied"
    );
    g.shutdown().await;
}

#[tokio::test]
async fn broken_edits_keep_the_last_good_snapshot() {
    // Reloads are triggered by hand here; a long debounce keeps the watcher out of the way.
    let body = WITH_FILES.replace("debounce: 50ms", "debounce: 60s");
    let g = start_with(
        &body,
        &[("lists/allow.txt", "*@acme.com\n"), ("lists/block.txt", "")],
    )
    .await;
    let gen0 = g.gate().snapshots().load().generation;

    // A YAML syntax error: rejected, old config keeps serving.
    let good = std::fs::read_to_string(g.config_path()).unwrap();
    std::fs::write(g.config_path(), format!("{good}\nroutes: [[[\n")).unwrap();
    let outcome = g.gate().reloader().reload();
    assert!(
        matches!(outcome, idgate::reload::Outcome::Rejected(_)),
        "{outcome:?}"
    );
    let err = g.gate().reloader().status().last_error.unwrap();
    assert!(err.contains("config.yaml"), "error names the file: {err}");
    assert_eq!(status_for(g.addr, "dave@acme.com").await, 200);
    assert_eq!(status_for(g.addr, "x@other.org").await, 403);
    assert_eq!(g.gate().snapshots().load().generation, gen0);

    // A missing list file: rejected too (never an empty list that opens the gate).
    std::fs::write(g.config_path(), &good).unwrap();
    std::fs::remove_file(g.path("lists/allow.txt")).unwrap();
    let outcome = g.gate().reloader().reload();
    assert!(
        matches!(outcome, idgate::reload::Outcome::Rejected(_)),
        "{outcome:?}"
    );
    assert_eq!(
        status_for(g.addr, "x@other.org").await,
        403,
        "gate must stay closed"
    );

    // An allow file with no valid entry (a bare domain is not an allow entry), or an empty one
    // (read while being rewritten): rejected, never an allow list that `auto` leaves off.
    for text in ["acme.com\n", "", "# nothing yet\n"] {
        std::fs::write(g.path("lists/allow.txt"), text).unwrap();
        let outcome = g.gate().reloader().reload();
        assert!(
            matches!(outcome, idgate::reload::Outcome::Rejected(_)),
            "{text:?}: {outcome:?}"
        );
        let err = g.gate().reloader().status().last_error.unwrap();
        assert!(
            err.contains("no valid entry") || err.contains("is empty"),
            "{err}"
        );
        assert_eq!(status_for(g.addr, "x@other.org").await, 403, "{text:?}");
    }

    // A malformed line is skipped and reported; the rest applies.
    std::fs::write(
        g.path("lists/allow.txt"),
        "*@acme.com\nbob@@other.org\nfrank@other.org\n",
    )
    .unwrap();
    let outcome = g.gate().reloader().reload();
    match outcome {
        idgate::reload::Outcome::Applied { warnings, .. } => assert_eq!(warnings, 1),
        other => panic!("expected applied, got {other:?}"),
    }
    let snap = g.gate().snapshots().load_full();
    assert!(
        snap.warnings[0].contains("allow.txt") && snap.warnings[0].contains("line 2"),
        "{:?}",
        snap.warnings
    );
    assert_eq!(status_for(g.addr, "frank@other.org").await, 200);

    // Unchanged content is skipped.
    assert!(matches!(
        g.gate().reloader().reload(),
        idgate::reload::Outcome::Unchanged
    ));
    g.shutdown().await;
}

/// A list file read while it is being rewritten in place (`>` empties it first) would drop
/// every entry in force: refused, and the entries keep applying. A file emptied on purpose
/// keeps a comment line. Once the files are back to what is in force, the error no longer
/// stands. A file whose last line has no line break is a file like any other.
#[tokio::test]
async fn a_list_file_caught_mid_write_keeps_the_entries_in_force() {
    let body = WITH_FILES.replace("debounce: 50ms", "debounce: 60s");
    let g = start_with(
        &body,
        &[
            ("lists/allow.txt", "*@acme.com\n"),
            ("lists/block.txt", "eve@acme.com\n"),
        ],
    )
    .await;
    assert_eq!(status_for(g.addr, "eve@acme.com").await, 403);
    for (text, says) in [
        ("", "is empty where the version in force has 1 entries"),
        (
            "@@\n",
            "has no valid entry where the version in force has 1",
        ),
    ] {
        std::fs::write(g.path("lists/block.txt"), text).unwrap();
        let outcome = g.gate().reloader().reload();
        assert!(
            matches!(outcome, idgate::reload::Outcome::Rejected(_)),
            "{text:?}: {outcome:?}"
        );
        let err = g.gate().reloader().status().last_error.unwrap();
        assert!(err.contains(says), "{text:?}: {err}");
        assert_eq!(status_for(g.addr, "eve@acme.com").await, 403, "{text:?}");
    }
    // Back to the content in force: nothing to apply, and no error left standing.
    std::fs::write(g.path("lists/block.txt"), "eve@acme.com\n").unwrap();
    assert!(matches!(
        g.gate().reloader().reload(),
        idgate::reload::Outcome::Unchanged
    ));
    assert_eq!(g.gate().reloader().status().last_error, None);
    // Without a final line break.
    std::fs::write(g.path("lists/block.txt"), "eve@acme.com\nmia@acme.com").unwrap();
    assert!(matches!(
        g.gate().reloader().reload(),
        idgate::reload::Outcome::Applied { .. }
    ));
    assert_eq!(status_for(g.addr, "mia@acme.com").await, 403);
    // Emptied on purpose.
    std::fs::write(g.path("lists/block.txt"), "# nobody blocked for now\n").unwrap();
    assert!(matches!(
        g.gate().reloader().reload(),
        idgate::reload::Outcome::Applied { .. }
    ));
    assert_eq!(status_for(g.addr, "eve@acme.com").await, 200);
    g.shutdown().await;
}

/// A new `default_phone_region` re-reads unchanged list files: a national number rejected
/// without a region is an entry with one.
#[tokio::test]
async fn a_new_phone_region_rereads_unchanged_list_files() {
    let body = WITH_FILES.replace("debounce: 50ms", "debounce: 60s");
    let g = start_with(
        &body,
        &[
            ("lists/allow.txt", "*@acme.com\n"),
            ("lists/block.txt", "202-555-0199\n"),
        ],
    )
    .await;
    assert_eq!(g.gate().snapshots().load().block.len(), 0);
    let text = std::fs::read_to_string(g.config_path()).unwrap();
    std::fs::write(
        g.config_path(),
        format!("{text}identifiers:\n  default_phone_region: US\n"),
    )
    .unwrap();
    let outcome = g.gate().reloader().reload();
    assert!(
        matches!(
            outcome,
            idgate::reload::Outcome::Applied { warnings: 0, .. }
        ),
        "{outcome:?}"
    );
    let snap = g.gate().snapshots().load_full();
    assert_eq!(snap.block.len(), 1, "{:?}", snap.warnings);
    g.shutdown().await;
}

/// A config that names a block-list file before it exists is refused (the last good lists
/// keep serving); creating the file afterwards is seen by the watcher and applies both.
#[tokio::test]
async fn a_list_file_named_before_it_exists_applies_once_created() {
    let g = start_with_acme_lists("").await;
    assert_eq!(status_for(g.addr, "dave@acme.com").await, 200);
    edit_config(
        &g,
        &[(
            "block: [lists/block.txt]",
            "block: [lists/block.txt, lists/extra.txt]",
        )],
    );
    let refused = eventually(Duration::from_secs(3), || async {
        g.gate().reloader().status().last_error.is_some()
    })
    .await;
    assert!(refused, "the missing list file was not reported");
    assert_eq!(status_for(g.addr, "dave@acme.com").await, 200);

    std::fs::write(g.path("lists/extra.txt"), "dave@acme.com\n").unwrap();
    assert!(
        becomes(g.addr, "dave@acme.com", 403).await,
        "creating the named list file did not apply the config"
    );
    g.shutdown().await;
}

/// A list directory reached through a symlink that is swapped (git-sync's `repo -> rev`,
/// a release directory): every swap is seen, whether the old directory is deleted (its
/// watch is gone) or kept (no event in it at all), with no periodic re-read to fall back on.
#[cfg(unix)]
#[tokio::test]
async fn a_swapped_symlinked_list_directory_is_seen_every_time() {
    let upstream = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let git = root.join("git");
    write(&root.join("lists/allow.txt"), "*@acme.com\n");
    write(&git.join("v0/block.txt"), "# none\n");
    std::os::unix::fs::symlink("v0", git.join("repo")).unwrap();
    let body = WITH_FILES.replace("lists/block.txt", "git/repo/block.txt");
    write(
        &root.join("config.yaml"),
        &config_text(upstream.addr, &body),
    );
    let gate = idgate::app::Gate::start(&root.join("config.yaml"))
        .await
        .unwrap();
    let addr = gate.proxy_addrs()[0];
    let swap = |rev: &str, blocked: &str, delete_old: Option<&str>| {
        write(&git.join(rev).join("block.txt"), &format!("{blocked}\n"));
        std::os::unix::fs::symlink(rev, git.join("repo.tmp")).unwrap();
        std::fs::rename(git.join("repo.tmp"), git.join("repo")).unwrap();
        if let Some(old) = delete_old {
            std::fs::remove_dir_all(git.join(old)).unwrap();
        }
    };
    swap("v1", "ann@acme.com", Some("v0"));
    assert!(becomes(addr, "ann@acme.com", 403).await, "first swap");
    swap("v2", "bea@acme.com", None);
    assert!(
        becomes(addr, "bea@acme.com", 403).await,
        "second swap, old kept"
    );
    assert_eq!(status_for(addr, "ann@acme.com").await, 200);
    swap("v3", "cid@acme.com", Some("v1"));
    assert!(becomes(addr, "cid@acme.com", 403).await, "third swap");
    assert_eq!(status_for(addr, "bea@acme.com").await, 200);
    gate.shutdown().await;
}

/// A config naming a list file in a directory that does not exist yet: refused, then applied
/// once the directory and the file are created, with no periodic re-read to fall back on.
#[tokio::test]
async fn a_list_file_in_a_directory_created_later_applies() {
    let g = start_with_acme_lists("").await;
    edit_config(
        &g,
        &[(
            "block: [lists/block.txt]",
            "block: [lists/block.txt, later/deeper/extra.txt]",
        )],
    );
    let refused = eventually(Duration::from_secs(3), || async {
        g.gate().reloader().status().last_error.is_some()
    })
    .await;
    assert!(refused, "the missing list file was not reported");
    std::fs::create_dir(g.path("later")).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    std::fs::create_dir(g.path("later/deeper")).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    std::fs::write(g.path("later/deeper/extra.txt"), "dave@acme.com\n").unwrap();
    assert!(
        becomes(g.addr, "dave@acme.com", 403).await,
        "the list file in a new directory was never read"
    );
    g.shutdown().await;
}

/// Restart-only settings: a reload that changes `listen` or `workers` is refused, naming the
/// setting.
#[tokio::test]
async fn restart_only_changes_are_refused() {
    for (extra, from, to, setting) in [
        ("", "addr: 127.0.0.1:0", "addr: 127.0.0.1:1", "listen"),
        ("workers: 2\n", "workers: 2", "workers: 3", "workers"),
        (
            "store: { sqlite: data/a.db }\n",
            "data/a.db",
            "data/b.db",
            "store.sqlite",
        ),
        (
            "request_id: { trust: false }\n",
            "trust: false",
            "trust: true",
            "request_id",
        ),
    ] {
        let g = start_with_acme_lists(extra).await;
        edit_config(&g, &[(from, to)]);
        match g.gate().reloader().reload() {
            idgate::reload::Outcome::Rejected(e) => {
                assert!(e.to_string().contains(setting), "{e}")
            }
            other => panic!("{setting}: expected rejection, got {other:?}"),
        }
        g.shutdown().await;
    }
}

#[cfg(unix)]
#[tokio::test]
async fn configmap_symlink_swap() {
    // Kubernetes mounts: config.yaml -> ..data/config.yaml, ..data -> ..2026_01_01; an update
    // writes a new timestamped dir and renames a new ..data symlink over the old one.
    let upstream = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let lists = |allow: &str| {
        format!(
            "{}\nlists:\n  allow: [\"{allow}\"]\nroutes:\n  - name: s\n    path: /api/sign-up\n    kind: sign_up\n    identifier: [{{ json: /email }}]\nreload:\n  debounce: 50ms\n  interval: 0s\n",
            config_text(upstream.addr, "")
        )
    };
    write(&root.join("..v1/config.yaml"), &lists("*@acme.com"));
    std::os::unix::fs::symlink("..v1", root.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/config.yaml", root.join("config.yaml")).unwrap();
    let gate = idgate::app::Gate::start(&root.join("config.yaml"))
        .await
        .unwrap();
    let addr = gate.proxy_addrs()[0];
    assert_eq!(status_for(addr, "a@acme.com").await, 200);
    assert_eq!(status_for(addr, "a@beta.io").await, 403);

    write(&root.join("..v2/config.yaml"), &lists("*@beta.io"));
    std::os::unix::fs::symlink("..v2", root.join("..data_tmp")).unwrap();
    std::fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
    assert!(
        becomes(addr, "a@beta.io", 200).await,
        "symlink swap not applied"
    );
    assert_eq!(status_for(addr, "a@acme.com").await, 403);
    gate.shutdown().await;
}
