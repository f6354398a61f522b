//! Holds the import rules of docs/ARCHITECTURE.md: the data path never imports the control
//! plane, and no module uses `unsafe`. Each rule fails this test when broken.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn files_of(module: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src")
        .join(module);
    let mut out = Vec::new();
    rust_files(&root, &mut out);
    assert!(!out.is_empty(), "module {module} has no files");
    out
}

/// Code lines of a file, without `//` comments.
fn code(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

fn forbidden_uses(module: &str, forbidden: &[&str]) -> Vec<String> {
    let mut hits = Vec::new();
    for file in files_of(module) {
        let text = code(&file);
        for f in forbidden {
            let needles = [
                format!("crate::{f}"),
                format!("super::super::{f}"),
                format!("idgate::{f}"),
            ];
            let crate_name = format!("{f}::");
            for n in &needles {
                if text.contains(n.as_str()) {
                    hits.push(format!("{} uses {n}", file.display()));
                }
            }
            if ["axum", "tokio", "hyper"].contains(f) && text.contains(crate_name.as_str()) {
                hits.push(format!("{} uses {crate_name}", file.display()));
            }
        }
    }
    hits
}

#[test]
fn data_path_never_imports_the_control_plane() {
    let rules: &[(&str, &[&str])] = &[
        ("proxy", &["admin", "store", "reload", "axum"]),
        (
            "gate",
            &[
                "admin", "store", "reload", "axum", "proxy", "tokio", "hyper",
            ],
        ),
        (
            "lists",
            &[
                "admin", "store", "reload", "axum", "proxy", "tokio", "hyper",
            ],
        ),
        (
            "identifier",
            &[
                "admin", "store", "reload", "axum", "proxy", "tokio", "hyper", "lists",
            ],
        ),
        // The snapshot takes a store *view* (entries, restriction overrides), per DESIGN §4.
        ("snapshot", &["admin", "reload", "proxy", "axum"]),
        (
            "trigger",
            &[
                "admin", "store", "reload", "proxy", "gate", "lists", "snapshot", "tls", "axum",
                "hyper",
            ],
        ),
        (
            "store",
            &["proxy", "gate", "admin", "reload", "axum", "hyper"],
        ),
        (
            "config",
            &["admin", "store", "reload", "proxy", "tokio", "hyper"],
        ),
        ("reload", &["proxy", "admin"]),
        // TLS is on the data path: rustls configs and certificate reloads, no control plane.
        (
            "tls",
            &["admin", "store", "reload", "axum", "proxy", "gate"],
        ),
        ("admin", &["proxy"]),
        // Identity providers are asked on the data path: no control plane, no axum.
        (
            "oauth",
            &["admin", "store", "reload", "axum", "proxy", "gate"],
        ),
        // Metrics and the audit log are recorded by the proxy: no control plane, no axum.
        (
            "observe",
            &["admin", "store", "reload", "axum", "proxy", "hyper"],
        ),
        // Invitation delivery reads the config and the store's outbox, records metrics and
        // reaches relays through tls; it serves nothing and decides nothing.
        (
            "invite",
            &[
                "admin", "reload", "proxy", "gate", "snapshot", "lists", "oauth", "cli", "app",
                "axum",
            ],
        ),
    ];
    let mut hits = Vec::new();
    for (module, forbidden) in rules {
        hits.extend(forbidden_uses(module, forbidden));
    }
    assert!(hits.is_empty(), "import rules broken:\n{}", hits.join("\n"));
}

#[test]
fn only_app_imports_invite() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut hits = Vec::new();
    for entry in std::fs::read_dir(&root).unwrap() {
        let path = entry.unwrap().path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if !path.is_dir() || name == "app" || name == "invite" {
            continue;
        }
        hits.extend(forbidden_uses(name, &["invite"]));
    }
    for file in ["lib.rs", "main.rs"] {
        let text = code(&root.join(file));
        if text.contains("crate::invite") || text.contains("idgate::invite") {
            hits.push(format!("src/{file} uses invite"));
        }
    }
    assert!(
        hits.is_empty(),
        "only app may import invite:\n{}",
        hits.join("\n")
    );
}

#[test]
fn the_checker_sees_a_violation() {
    // The rule above must be able to fail: a file that imports admin is caught.
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("x.rs");
    std::fs::write(
        &f,
        "use crate::admin::router; // fine in a comment: crate::reload\n",
    )
    .unwrap();
    let text = code(&f);
    assert!(text.contains("crate::admin"));
    assert!(!text.contains("crate::reload"));
}

#[test]
fn no_unsafe_and_every_module_documents_what_it_owns() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        assert!(!code(&f).contains("unsafe "), "{} uses unsafe", f.display());
        let is_module_root = f
            .file_name()
            .is_some_and(|n| n == "mod.rs" || n == "lib.rs" || n == "main.rs")
            || f.parent().is_some_and(|p| p == root);
        if is_module_root || !f.to_string_lossy().contains("tests") {
            assert!(
                text.trim_start().starts_with("//!"),
                "{} does not start with a //! doc",
                f.display()
            );
        }
    }
}
