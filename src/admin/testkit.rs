//! Test support for the admin handlers: a real store in a temp dir, a real reloader and
//! snapshot built from a small config, and a one-shot request helper.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, header};
use serde_json::Value;
use tower::ServiceExt;

use super::{AdminState, router};

/// The key every kit accepts.
pub(crate) const KEY: &str = "sk_test_kit";

/// The kit's `admin.magic_client_id`.
pub(crate) const MAGIC_CLIENT: &str = "kit-client";

/// A running admin router over a temp dir.
pub(crate) struct Kit {
    pub _dir: tempfile::TempDir,
    pub state: AdminState,
    pub app: Router,
}

/// One answer.
#[derive(Debug)]
pub(crate) struct Answer {
    pub status: u16,
    pub content_type: Option<String>,
    pub json: Value,
    /// The body as received.
    pub raw: Vec<u8>,
}

impl Answer {
    /// The first error's code.
    pub fn code(&self) -> &str {
        self.json["errors"][0]["code"].as_str().unwrap_or("")
    }

    /// The first error's long_message.
    pub fn long_message(&self) -> &str {
        self.json["errors"][0]["long_message"]
            .as_str()
            .unwrap_or("")
    }
}

/// A kit whose config has `extra` appended (YAML, top level) and list files
/// `allow.txt`/`block.txt` with the given texts (when non-empty).
pub(crate) fn kit(extra: &str, allow_file: &str, block_file: &str) -> Kit {
    let dir = tempfile::tempdir().unwrap();
    let mut files = String::new();
    for (name, text) in [("allow", allow_file), ("block", block_file)] {
        if !text.is_empty() {
            let p = dir.path().join(format!("{name}.txt"));
            std::fs::write(&p, text).unwrap();
            files.push_str(&format!("{name}: [\"{}\"], ", p.display()));
        }
    }
    let files = if files.is_empty() {
        String::new()
    } else {
        format!("lists:\n  files: {{ {files} }}\n")
    };
    let db = dir.path().join("data/idgate.db");
    let text = format!(
        "listen: [{{ addr: 127.0.0.1:0 }}]\nupstream: http://127.0.0.1:1\nadmin: {{ listen: 127.0.0.1:0, secret_keys: [\"{KEY}\", \"sk_test_other\"], magic_client_id: \"{MAGIC_CLIENT}\" }}\nstore: {{ sqlite: \"{}\" }}\nroutes:\n  - {{ name: up, path: /up, kind: sign_up, identifier: [{{ json: /email }}] }}\n{files}{extra}",
        db.display()
    );
    let path: PathBuf = dir.path().join("idgate.yaml");
    std::fs::write(&path, &text).unwrap();
    let cp = crate::app::ControlPlane::open(&path).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let state = AdminState {
        ready: Arc::new(AtomicBool::new(true)),
        snapshots: cp.snapshots,
        store: cp.store,
        reloader: cp.reloader,
        observer: Default::default(),
        invitations: cp.inputs.config.invitations.clone().map(Arc::new),
    };
    let app = router(state.clone());
    Kit {
        _dir: dir,
        state,
        app,
    }
}

impl Kit {
    /// Whether the live gate denies `who` on the sign-up route right now.
    pub fn denied(&self, who: &str) -> bool {
        let snap = self.state.snapshots.load_full();
        let id = crate::identifier::parse(who, None, &snap.identifiers).unwrap();
        let route = snap.routes.first().unwrap();
        crate::gate::decide(&snap, route, &id).deny.is_some()
    }

    /// `method path` with a JSON body (if any) and the kit's key.
    /// Sends each `(body, status, code, param_name, long_message part)` case and checks the
    /// Clerk error it gets back.
    pub async fn assert_errors(
        &self,
        method: &str,
        path: &str,
        cases: &[(&str, u16, &str, Option<&str>, &str)],
    ) {
        for (body, status, code, param, text) in cases {
            let a = self.call(method, path, Some(body)).await;
            assert_eq!((a.status, a.code()), (*status, *code), "{body}: {a:?}");
            assert_eq!(
                a.json["errors"][0]["meta"]["param_name"].as_str(),
                *param,
                "{body}"
            );
            assert!(
                a.long_message().contains(text),
                "{body}: {}",
                a.long_message()
            );
        }
    }

    pub async fn call(&self, method: &str, path: &str, body: Option<&str>) -> Answer {
        self.call_with(method, path, body, Some(&format!("Bearer {KEY}")), true)
            .await
    }

    /// Full control: `authorization` header value, and whether to send
    /// `Content-Type: application/json` (always, like the JS SDK, when `json_ct`).
    pub async fn call_with(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        authorization: Option<&str>,
        json_ct: bool,
    ) -> Answer {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(a) = authorization {
            req = req.header(header::AUTHORIZATION, a);
        }
        if json_ct {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        let req = req
            .body(body.map_or_else(Body::empty, |b| Body::from(b.to_owned())))
            .unwrap();
        self.send(req).await
    }

    /// Sends a prepared request.
    pub async fn send(&self, req: Request<Body>) -> Answer {
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_owned());
        let raw = axum::body::to_bytes(resp.into_body(), 1 << 24)
            .await
            .unwrap()
            .to_vec();
        let json = if raw.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&raw).unwrap_or(Value::Null)
        };
        Answer {
            status,
            content_type,
            json,
            raw,
        }
    }
}
