//! The compiled, immutable view the data path reads: routes, matchers, restrictions, limits.
//!
//! [`compile`] turns parsed configuration plus list-file texts into a [`Snapshot`]; the proxy
//! never sees the file format. A [`SnapshotHandle`] (one `ArcSwap`) holds the current snapshot:
//! the proxy calls `load_full()` once per request and keeps that `Arc` to the end, so a request
//! always finishes on the snapshot it started with. Only `reload` stores new snapshots.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use http::uri::{Authority, Scheme};
use http::{HeaderValue, Method, StatusCode};

use crate::config::{AllowlistMode, Config, Location, Precedence, RouteKind};
use crate::gate::extract::{self, SourceSpec};
use crate::gate::route::RouteTable;
use crate::identifier::{self, ParseOptions};
use crate::lists::{
    DisposableDomains, ListKind, Matcher, MatcherBuilder, Source, SourceKind, parse_entries,
    parse_entry,
};

/// The current snapshot, swapped atomically by the reloader.
pub type SnapshotHandle = Arc<ArcSwap<Snapshot>>;

/// Everything [`compile`] needs, read from disk by the caller.
#[derive(Debug, Clone)]
pub struct Inputs {
    pub config_path: PathBuf,
    pub config: Config,
    pub list_files: Vec<ListFile>,
}

/// One list file's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListFile {
    pub path: PathBuf,
    pub list: ListKind,
    pub text: String,
}

/// A gated route, compiled.
#[derive(Debug, Clone)]
pub struct Route {
    pub name: Arc<str>,
    pub path: String,
    pub methods: Vec<Method>,
    pub kind: RouteKind,
    pub sources: Vec<SourceSpec>,
    pub optional: bool,
    pub pass_safe_methods: bool,
    pub body_limit: usize,
}

impl Route {
    /// The `Allow` header value for a 405.
    pub fn allow_header(&self) -> String {
        self.methods
            .iter()
            .map(Method::as_str)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The restrictions and precedence that `gate::decide` applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub allowlist: AllowlistMode,
    pub blocklist: bool,
    pub block_email_subaddresses: bool,
    pub block_disposable_email_domains: bool,
    pub allowlist_blocklist_disabled_on_sign_in: bool,
    pub precedence: Precedence,
}

/// How denials are answered.
#[derive(Debug, Clone)]
pub struct Deny {
    pub status: StatusCode,
    /// `Location` for HTML form posts (303), when configured.
    pub redirect: Option<HeaderValue>,
}

/// Where allowed requests go.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub scheme: Scheme,
    pub authority: Authority,
}

/// One immutable, compiled configuration.
#[derive(Debug)]
pub struct Snapshot {
    /// Increases by one with every published snapshot.
    pub generation: u64,
    pub built_at: SystemTime,
    pub routes: Vec<Route>,
    pub route_table: RouteTable,
    pub allow: Matcher,
    pub block: Matcher,
    pub policy: Policy,
    pub deny: Deny,
    pub identifiers: ParseOptions,
    pub disposable: Arc<DisposableDomains>,
    pub upstream: Upstream,
    pub max_json_depth: usize,
    pub upstream_response_timeout: Duration,
    pub body_read_timeout: Duration,
    /// Skipped list-file lines, reported with file and line.
    pub warnings: Vec<String>,
}

/// Why a configuration could not be compiled; the last good snapshot stays in force.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    #[error("{}", .0.join("\n"))]
    Invalid(Vec<String>),
}

fn builtin_disposable() -> Arc<DisposableDomains> {
    static SET: OnceLock<Arc<DisposableDomains>> = OnceLock::new();
    SET.get_or_init(|| Arc::new(DisposableDomains::builtin()))
        .clone()
}

/// Compiles inputs into a snapshot. Reports every problem at once.
pub fn compile(inputs: &Inputs, generation: u64) -> Result<Snapshot, CompileError> {
    let cfg = &inputs.config;
    let mut errors = Vec::new();
    let mut warnings = cfg.warnings();

    let identifiers = match cfg.identifiers.default_phone_region.as_deref() {
        None => ParseOptions {
            default_region: None,
        },
        Some(code) => match identifier::parse_region(code) {
            Ok(region) => ParseOptions {
                default_region: Some(region),
            },
            Err(e) => {
                errors.push(format!("identifiers.default_phone_region: {e}"));
                ParseOptions::default()
            }
        },
    };

    let mut allow = MatcherBuilder::new(ListKind::Allow);
    let mut block = MatcherBuilder::new(ListKind::Block);
    for (list, inline, builder, key) in [
        (ListKind::Allow, &cfg.lists.allow, &mut allow, "lists.allow"),
        (ListKind::Block, &cfg.lists.block, &mut block, "lists.block"),
    ] {
        for (i, text) in inline.iter().enumerate() {
            match parse_entry(text, list, &identifiers) {
                Ok(entry) => builder.add(
                    entry,
                    Source {
                        kind: SourceKind::Inline,
                        line: None,
                    },
                ),
                Err(e) => errors.push(format!("{key}[{i}]: `{text}`: {e}")),
            }
        }
    }
    for file in &inputs.list_files {
        let path: Arc<str> = Arc::from(file.path.display().to_string());
        let (entries, bad) = parse_entries(&file.text, file.list, &identifiers);
        for e in bad {
            warnings.push(format!("{path}: {e} (line skipped)"));
        }
        let builder = match file.list {
            ListKind::Allow => &mut allow,
            ListKind::Block => &mut block,
        };
        for (entry, line) in entries {
            builder.add(
                entry,
                Source {
                    kind: SourceKind::File { path: path.clone() },
                    line: Some(line),
                },
            );
        }
    }
    for (name, builder) in [("allow", &allow), ("block", &block)] {
        if builder.len() > cfg.lists.max_entries {
            errors.push(format!(
                "lists.max_entries: the {name} list has {} entries, more than the limit of {}; raise lists.max_entries",
                builder.len(),
                cfg.lists.max_entries
            ));
        }
    }

    let mut routes = Vec::with_capacity(cfg.routes.len());
    for (i, r) in cfg.routes.iter().enumerate() {
        let methods = r.methods.clone();
        let sources = r
            .identifier
            .iter()
            .filter_map(|s| {
                let location = match &s.location {
                    Location::Json(p) => extract::Location::Json(p.clone()),
                    Location::Form(f) => extract::Location::Form(f.clone()),
                    Location::Multipart(f) => extract::Location::Multipart(f.clone()),
                    Location::Query(q) => extract::Location::Query(q.clone()),
                    Location::Header(h) => match http::HeaderName::from_bytes(h.as_bytes()) {
                        Ok(h) => extract::Location::Header(h),
                        Err(_) => {
                            errors.push(format!("routes[{i}].identifier: bad header name `{h}`"));
                            return None;
                        }
                    },
                };
                Some(SourceSpec {
                    location,
                    kind: s.kind,
                })
            })
            .collect();
        routes.push(Route {
            name: Arc::from(r.name.as_str()),
            path: r.path.clone(),
            methods,
            kind: r.kind,
            sources,
            optional: r.optional,
            pass_safe_methods: r.pass_safe_methods,
            body_limit: usize::try_from(r.body_limit_or(&cfg.limits)).unwrap_or(usize::MAX),
        });
    }

    let upstream = match (cfg.upstream.scheme(), cfg.upstream.authority()) {
        (Some(s), Some(a)) => Some(Upstream {
            scheme: s.clone(),
            authority: a.clone(),
        }),
        _ => {
            errors.push("upstream: needs a scheme and a host".into());
            None
        }
    };
    let redirect = match &cfg.deny.redirect {
        None => None,
        Some(r) => match HeaderValue::from_str(r) {
            Ok(v) => Some(v),
            Err(_) => {
                errors.push(format!("deny.redirect: `{r}` is not a valid Location"));
                None
            }
        },
    };
    let status = cfg.deny.status;

    let (Some(upstream), true) = (upstream, errors.is_empty()) else {
        return Err(CompileError::Invalid(errors));
    };
    let r = &cfg.restrictions;
    Ok(Snapshot {
        generation,
        built_at: SystemTime::now(),
        route_table: RouteTable::new(routes.iter().map(|r| r.path.as_str())),
        routes,
        allow: allow.build(),
        block: block.build(),
        policy: Policy {
            allowlist: r.allowlist,
            blocklist: r.blocklist,
            block_email_subaddresses: r.block_email_subaddresses,
            block_disposable_email_domains: r.block_disposable_email_domains,
            allowlist_blocklist_disabled_on_sign_in: r.allowlist_blocklist_disabled_on_sign_in,
            precedence: cfg.precedence,
        },
        deny: Deny { status, redirect },
        identifiers,
        disposable: builtin_disposable(),
        upstream,
        max_json_depth: cfg.limits.max_json_depth,
        upstream_response_timeout: cfg.timeouts.upstream_response,
        body_read_timeout: cfg.timeouts.header_read,
        warnings,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A snapshot from `body` appended to a config with one sign-up and one sign-in route.
    pub(crate) fn from_yaml(body: &str) -> Snapshot {
        let text = format!(
            "listen: [{{ addr: 127.0.0.1:0 }}]\nupstream: http://127.0.0.1:1\nroutes:\n  - {{ name: up, path: /up, kind: sign_up, identifier: [{{ json: /email }}] }}\n  - {{ name: in, path: /in, kind: sign_in, identifier: [{{ json: /email }}] }}\n{body}"
        );
        let config = crate::config::from_str(&text, std::path::Path::new("test.yaml"))
            .unwrap_or_else(|e| panic!("{e}\n{text}"));
        let inputs = Inputs {
            config_path: "test.yaml".into(),
            config,
            list_files: Vec::new(),
        };
        compile(&inputs, 1).unwrap_or_else(|e| panic!("{e}"))
    }

    pub(crate) fn minimal() -> Snapshot {
        from_yaml("")
    }

    #[test]
    fn compile_reports_every_bad_inline_entry_and_max_entries() {
        let text = "listen: [{ addr: 127.0.0.1:0 }]\nupstream: http://127.0.0.1:1\nlists:\n  allow: [\"bad@@x\", \"ok@x.com\", \"x.com\"]\n  block: [\"+1\"]\n";
        let config = crate::config::from_str(text, std::path::Path::new("t.yaml")).unwrap();
        let inputs = Inputs {
            config_path: "t.yaml".into(),
            config,
            list_files: vec![ListFile {
                path: "big.txt".into(),
                list: ListKind::Block,
                text: "a@x.com\nb@x.com\nc@x.com\n".into(),
            }],
        };
        let err = compile(&inputs, 1).unwrap_err().to_string();
        assert!(err.contains("lists.allow[0]"), "{err}");
        assert!(err.contains("lists.allow[2]"), "{err}");
        assert!(err.contains("lists.block[0]"), "{err}");
        assert!(!err.contains("lists.allow[1]"), "{err}");

        let mut small = inputs.clone();
        small.config.lists.allow.clear();
        small.config.lists.block.clear();
        small.config.lists.max_entries = 2;
        let err = compile(&small, 1).unwrap_err().to_string();
        assert!(err.contains("block list has 3 entries"), "{err}");
        small.config.lists.max_entries = 3;
        assert_eq!(compile(&small, 1).unwrap().block.len(), 3);
    }
}
