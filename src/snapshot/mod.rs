//! The compiled, immutable view the data path reads: routes, matchers, restrictions, limits.
//!
//! [`compile`] turns parsed configuration plus list-file texts into a [`Snapshot`]; the proxy
//! never sees the file format. A [`SnapshotHandle`] (one `ArcSwap`) holds the current snapshot:
//! the proxy calls `load_full()` once per request and keeps that `Arc` to the end, so a request
//! always finishes on the snapshot it started with. Only `reload` stores new snapshots.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use http::uri::{Authority, Scheme};
use http::{HeaderValue, Method, StatusCode};

use crate::config::{AllowlistMode, Config, Location, Mode, Precedence, RouteKind};
use crate::gate::extract::{self, SourceSpec};
use crate::gate::route::RouteTable;
use crate::identifier::{self, ParseOptions};
use crate::lists::{
    DisposableDomains, Entry, ListKind, Matcher, MatcherBuilder, Source, SourceKind, parse_entry,
};
use crate::store::{RestrictionOverrides, StoredEntry};

mod files;

pub use files::ListFile;

/// The current snapshot, swapped atomically by the reloader.
pub type SnapshotHandle = Arc<ArcSwap<Snapshot>>;

/// Everything [`compile`] needs, read from disk by the caller.
#[derive(Debug, Clone)]
pub struct Inputs {
    pub config_path: PathBuf,
    pub config: Config,
    pub list_files: Vec<ListFile>,
    /// What the admin store contributes.
    pub store: StoreView,
}

/// The admin store's part of the gate: its live lists (shared by every snapshot, updated in
/// place by the reloader after each durable write) and its restriction overrides.
#[derive(Debug, Clone, Default)]
pub struct StoreView {
    pub lists: Arc<StoreLists>,
    pub restrictions: RestrictionOverrides,
}

/// Entries written through the admin API. They change one at a time at high rates, so they are
/// not rebuilt into each snapshot: the reloader inserts or removes single entries under the
/// write lock (O(1)), and `gate::decide` takes the read lock for one lookup. No lock is ever
/// held across an `.await`.
#[derive(Debug)]
pub struct StoreLists {
    pub allow: RwLock<Matcher>,
    pub block: RwLock<Matcher>,
}

impl Default for StoreLists {
    fn default() -> Self {
        StoreLists {
            allow: RwLock::new(Matcher::empty(ListKind::Allow)),
            block: RwLock::new(Matcher::empty(ListKind::Block)),
        }
    }
}

/// One compiled list file, kept across reloads while its content is unchanged.
#[derive(Debug)]
pub struct FilePart {
    pub path: PathBuf,
    /// Hash and length of the content compiled.
    pub hash: u64,
    pub bytes: u64,
    pub matcher: Matcher,
    /// Skipped lines, reported with file and line.
    pub warnings: Vec<String>,
}

/// The config's and list files' entries of one list: the inline entries, then one compiled
/// matcher per file. Lookups return the most specific hit across the layers (the first layer
/// on a tie); listings walk them in order.
#[derive(Debug, Clone)]
pub struct ListLayers {
    inline: Arc<Matcher>,
    files: Vec<Arc<FilePart>>,
}

impl ListLayers {
    fn new(inline: Matcher, files: Vec<Arc<FilePart>>) -> ListLayers {
        ListLayers {
            inline: Arc::new(inline),
            files,
        }
    }

    fn layers(&self) -> impl Iterator<Item = &Matcher> + '_ {
        std::iter::once(&*self.inline).chain(self.files.iter().map(|f| &f.matcher))
    }

    /// The most specific entry matching `c`.
    pub fn lookup(&self, c: &crate::lists::Candidate) -> Option<crate::lists::Hit<'_>> {
        let mut best: Option<crate::lists::Hit<'_>> = None;
        for m in self.layers() {
            if let Some(h) = m.lookup(c)
                && best.as_ref().is_none_or(|b| h.specificity > b.specificity)
            {
                best = Some(h);
            }
        }
        best
    }

    /// Entries across the layers (an entry present in two files counts twice).
    pub fn len(&self) -> usize {
        self.layers().map(Matcher::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.layers().all(Matcher::is_empty)
    }

    /// Entries by source: `(config, files)` (`lists.allow`/`lists.block`, then list files).
    pub fn len_by_source(&self) -> (usize, usize) {
        let files = self.files.iter().map(|f| f.matcher.len()).sum();
        (self.inline.len(), files)
    }

    /// Every entry with its source, layer by layer.
    pub fn iter(&self) -> impl Iterator<Item = (String, Source)> + '_ {
        self.layers().flat_map(Matcher::iter)
    }

    /// The first entry stored under `key` (see `lists::Entry::key`).
    pub fn get_by_key(&self, key: &str) -> Option<(String, Source)> {
        self.layers().find_map(|m| m.get_by_key(key))
    }

    fn find_file(&self, path: &std::path::Path, hash: u64) -> Option<Arc<FilePart>> {
        self.files
            .iter()
            .find(|f| f.hash == hash && f.path == path)
            .cloned()
    }

    /// The compiled file at `path`, whatever its content.
    pub fn file(&self, path: &std::path::Path) -> Option<&FilePart> {
        self.files.iter().find(|f| f.path == path).map(|f| &**f)
    }
}

/// The source every store entry carries.
pub fn store_source() -> Source {
    Source {
        kind: SourceKind::Store,
        line: None,
    }
}

/// The list entry of a stored row (stored identifiers are canonical, so this only fails for a
/// row written by a newer version with a grammar this one lacks).
pub fn stored_entry(e: &StoredEntry) -> Option<Entry> {
    parse_entry(&e.identifier, e.list, &ParseOptions::default()).ok()
}

impl StoreLists {
    /// Builds both lists from stored rows (start-up).
    pub fn from_entries(entries: &[StoredEntry]) -> StoreLists {
        let mut allow = MatcherBuilder::new(ListKind::Allow);
        let mut block = MatcherBuilder::new(ListKind::Block);
        for e in entries {
            let Some(entry) = stored_entry(e) else {
                tracing::warn!(id = %e.id, identifier = %e.identifier, "stored entry not understood; skipped");
                continue;
            };
            match e.list {
                ListKind::Allow => allow.add(entry, store_source()),
                ListKind::Block => block.add(entry, store_source()),
            }
        }
        StoreLists {
            allow: RwLock::new(allow.build()),
            block: RwLock::new(block.build()),
        }
    }

    /// Read access that survives a poisoned lock (a panic elsewhere must not open the gate).
    pub fn read(&self, list: ListKind) -> std::sync::RwLockReadGuard<'_, Matcher> {
        let lock = match list {
            ListKind::Allow => &self.allow,
            ListKind::Block => &self.block,
        };
        lock.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Write access (reloader only).
    pub fn write(&self, list: ListKind) -> std::sync::RwLockWriteGuard<'_, Matcher> {
        let lock = match list {
            ListKind::Allow => &self.allow,
            ListKind::Block => &self.block,
        };
        lock.write().unwrap_or_else(|p| p.into_inner())
    }
}

/// A gated route, compiled.
#[derive(Debug, Clone)]
pub struct Route {
    pub name: Arc<str>,
    pub path: String,
    pub methods: Vec<Method>,
    pub kind: RouteKind,
    pub sources: Vec<SourceSpec>,
    /// Per source: the token check of a `jwt`/`userinfo` source (`oauth`), else `None`.
    pub tokens: Vec<Option<TokenCheck>>,
    pub optional: bool,
    pub pass_safe_methods: bool,
    pub body_limit: usize,
    /// `enforce`, or `shadow` (denials are recorded as `would_deny` and forwarded): the
    /// route's own `mode`, else the config's.
    pub mode: Mode,
    /// The `Allow` header of a 405 on this route's path: the methods of every route on it,
    /// and HEAD where GET is one of them (see [`Route::lists`]). Set when the snapshot is
    /// built.
    pub allow: String,
}

/// How the value of a token source becomes an identifier.
#[derive(Debug, Clone)]
pub struct TokenCheck {
    /// Shared across reloads while its config is unchanged (it holds the JWKS and userinfo
    /// caches).
    pub verifier: Arc<crate::oauth::Verifier>,
    /// The value is an `Authorization` header: `Bearer <token>`.
    pub bearer: bool,
}

impl Route {
    /// Whether the route gates `method`: one it lists, or HEAD where it lists GET (frameworks
    /// run the GET handler for a HEAD request, side effects and cookies included).
    pub fn lists(&self, method: &Method) -> bool {
        self.methods.contains(method)
            || (*method == Method::HEAD && self.methods.contains(&Method::GET))
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

/// `admin.secret_keys` as SHA-256 digests of the non-empty keys. The admin API compares the
/// digest of a presented key with each (`admin::auth`): fixed-length values, so the time taken
/// says nothing of a key's length, and the keys themselves are not kept. `Debug` shows only
/// how many there are.
#[derive(Clone, Default)]
pub struct AdminKeys(Arc<[[u8; 32]]>);

impl AdminKeys {
    pub fn new(keys: &[String]) -> AdminKeys {
        AdminKeys(
            keys.iter()
                .filter(|k| !k.is_empty())
                .map(|k| AdminKeys::digest(k.as_bytes()))
                .collect(),
        )
    }

    /// The SHA-256 of `key`, as the keys are held.
    pub fn digest(key: &[u8]) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, key).as_ref());
        out
    }

    pub fn digests(&self) -> &[[u8; 32]] {
        &self.0
    }
}

impl std::fmt::Debug for AdminKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AdminKeys({} keys)", self.0.len())
    }
}

/// One immutable, compiled configuration.
#[derive(Debug)]
pub struct Snapshot {
    /// Increases by one with every published snapshot.
    pub generation: u64,
    /// When the config and list files were compiled (a restrictions change keeps it: the
    /// config's entries report it as their `created_at`).
    pub built_at: SystemTime,
    pub routes: Vec<Route>,
    pub route_table: RouteTable,
    /// Entries from the config and list files.
    pub allow: ListLayers,
    pub block: ListLayers,
    /// Entries from the admin store (live, shared across snapshots).
    pub store: Arc<StoreLists>,
    /// The restrictions as the config file sets them.
    pub config_policy: Policy,
    /// What the store overrides.
    pub store_restrictions: RestrictionOverrides,
    /// The effective restrictions: the config's, with the store's overrides applied.
    pub policy: Policy,
    pub deny: Deny,
    pub identifiers: ParseOptions,
    pub disposable: Arc<DisposableDomains>,
    pub upstream: Upstream,
    pub max_json_depth: usize,
    pub upstream_response_timeout: Duration,
    pub body_read_timeout: Duration,
    /// `lists.max_entries`: the most entries per list, config + files + store (the admin
    /// API's bulk writes check it against what the store would hold).
    pub max_entries: usize,
    /// `admin.magic_client_id`: the `target_client_id` the Magic API accepts (none: refused).
    pub magic_client_id: Option<Arc<str>>,
    /// `admin.secret_keys`, as digests: a reload that adds, rotates or removes a key applies
    /// to the next admin request.
    pub admin_keys: AdminKeys,
    /// Skipped list-file lines, reported with file and line.
    pub warnings: Vec<String>,
}

impl Policy {
    /// The config's policy with the API's overrides applied (they win, as in Clerk, where the
    /// dashboard setting is the truth).
    pub fn with_overrides(self, o: &RestrictionOverrides) -> Policy {
        Policy {
            allowlist: match o.allowlist {
                Some(true) => AllowlistMode::On,
                Some(false) => AllowlistMode::Off,
                None => self.allowlist,
            },
            blocklist: o.blocklist.unwrap_or(self.blocklist),
            block_email_subaddresses: o
                .block_email_subaddresses
                .unwrap_or(self.block_email_subaddresses),
            block_disposable_email_domains: o
                .block_disposable_email_domains
                .unwrap_or(self.block_disposable_email_domains),
            allowlist_blocklist_disabled_on_sign_in: o
                .allowlist_blocklist_disabled_on_sign_in
                .unwrap_or(self.allowlist_blocklist_disabled_on_sign_in),
            precedence: self.precedence,
        }
    }
}

impl Snapshot {
    /// The route that gates `method` on the path of gated route `i` ([`RouteTable::find`]'s
    /// answer): routes may share a path with different methods. One that lists the method
    /// comes first, then one that gates it as HEAD-for-GET; for a method none gates, one
    /// without `pass_safe_methods` (it answers 405: a safe method passes unread only when
    /// every route of the path lets it), else route `i`.
    pub fn route_for(&self, i: usize, method: &Method) -> Option<&Route> {
        // The common case: the route found lists the method (no shared path is looked at).
        if let Some(r) = self.routes.get(i)
            && r.methods.contains(method)
        {
            return Some(r);
        }
        let candidates = || {
            self.route_table
                .same_path(i)
                .iter()
                .filter_map(|&j| self.routes.get(j))
        };
        candidates()
            .find(|r| r.methods.contains(method))
            .or_else(|| candidates().find(|r| r.lists(method)))
            .or_else(|| candidates().find(|r| !r.pass_safe_methods))
            .or_else(|| self.routes.get(i))
    }

    /// The config's and list files' entries of `list`.
    pub fn config_list(&self, list: ListKind) -> &ListLayers {
        match list {
            ListKind::Allow => &self.allow,
            ListKind::Block => &self.block,
        }
    }

    /// True when the allow list is enforced right now (`auto` counts every source).
    pub fn allowlist_enforced(&self) -> bool {
        match self.policy.allowlist {
            AllowlistMode::On => true,
            AllowlistMode::Off => false,
            AllowlistMode::Auto => {
                !self.allow.is_empty() || !self.store.read(ListKind::Allow).is_empty()
            }
        }
    }

    /// The same snapshot with other store restrictions (cheap: shares the lists).
    pub fn with_store_restrictions(&self, o: RestrictionOverrides, generation: u64) -> Snapshot {
        Snapshot {
            generation,
            built_at: self.built_at,
            routes: self.routes.clone(),
            route_table: self.route_table.clone(),
            allow: self.allow.clone(),
            block: self.block.clone(),
            store: self.store.clone(),
            config_policy: self.config_policy,
            store_restrictions: o,
            policy: self.config_policy.with_overrides(&o),
            deny: self.deny.clone(),
            identifiers: self.identifiers,
            disposable: self.disposable.clone(),
            upstream: self.upstream.clone(),
            max_json_depth: self.max_json_depth,
            upstream_response_timeout: self.upstream_response_timeout,
            body_read_timeout: self.body_read_timeout,
            max_entries: self.max_entries,
            magic_client_id: self.magic_client_id.clone(),
            admin_keys: self.admin_keys.clone(),
            warnings: self.warnings.clone(),
        }
    }
}

/// Why a configuration could not be compiled; the last good snapshot stays in force.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    #[error("{}", .0.join("\n"))]
    Invalid(Vec<String>),
}

/// The `Allow` header for the routes `group` (one path): their methods in config order, and
/// HEAD where GET is one of them.
fn allow_header(routes: &[Route], group: &[usize]) -> String {
    let mut methods: Vec<&Method> = Vec::new();
    for m in group
        .iter()
        .filter_map(|&j| routes.get(j))
        .flat_map(|r| &r.methods)
    {
        if !methods.contains(&m) {
            methods.push(m);
        }
    }
    if methods.contains(&&Method::GET) && !methods.contains(&&Method::HEAD) {
        methods.push(&Method::HEAD);
    }
    methods
        .iter()
        .map(|m| m.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn builtin_disposable() -> Arc<DisposableDomains> {
    static SET: OnceLock<Arc<DisposableDomains>> = OnceLock::new();
    SET.get_or_init(|| Arc::new(DisposableDomains::builtin()))
        .clone()
}

/// Why a changed list file would drop every entry the version in force has, as a file read
/// while being rewritten in place does (`>` empties it first): empty, or with no valid line.
/// `None` when it has an entry, or when the version in force had none. A file emptied on
/// purpose keeps a comment line; a file replaced by a rename is never seen half written.
fn caught_mid_write(part: &FilePart, before: Option<&FilePart>) -> Option<String> {
    let before = before.filter(|b| !b.matcher.is_empty())?;
    if !part.matcher.is_empty() || (part.bytes > 0 && part.warnings.is_empty()) {
        return None;
    }
    let what = if part.bytes == 0 {
        "is empty"
    } else {
        "has no valid entry"
    };
    Some(format!(
        "{}: the file {what} where the version in force has {} entries: refused, as it would \
         drop them all (a file read while being rewritten in place looks like this: write list \
         files elsewhere and rename them into place); to empty it on purpose, leave a comment \
         line in it",
        part.path.display(),
        before.matcher.len()
    ))
}

/// Compiles inputs into a snapshot. Reports every problem at once.
pub fn compile(inputs: &Inputs, generation: u64) -> Result<Snapshot, CompileError> {
    compile_reusing(inputs, generation, None)
}

/// Like [`compile`], reusing the compiled list files of `previous` whose content did not
/// change (a reload that touches one 1M-entry file does not re-parse the others).
pub fn compile_reusing(
    inputs: &Inputs,
    generation: u64,
    previous: Option<&Snapshot>,
) -> Result<Snapshot, CompileError> {
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
    // Unchanged files keep their compiled part, if they were parsed with the same options
    // (a phone number without a country code reads differently under another default
    // region); the others compile in parallel.
    let reusable = previous.filter(|p| p.identifiers == identifiers);
    let reused: Vec<Option<Arc<FilePart>>> = inputs
        .list_files
        .iter()
        .map(|f| reusable.and_then(|prev| prev.config_list(f.list).find_file(&f.path, f.hash)))
        .collect();
    let changed: Vec<&ListFile> = inputs
        .list_files
        .iter()
        .zip(&reused)
        .filter(|(_, r)| r.is_none())
        .map(|(f, _)| f)
        .collect();
    let mut compiled = files::compile_files(&changed, &identifiers).into_iter();
    let mut allow_files = Vec::new();
    let mut block_files = Vec::new();
    let mut empty_allow_files = Vec::new();
    for (file, reused) in inputs.list_files.iter().zip(reused) {
        let part = match reused {
            Some(part) => part,
            None => match compiled.next() {
                Some(Ok(part)) => {
                    let before = previous.and_then(|p| p.config_list(file.list).file(&file.path));
                    if let Some(e) = caught_mid_write(&part, before) {
                        errors.push(e);
                        continue;
                    }
                    Arc::new(part)
                }
                Some(Err(e)) => {
                    errors.push(e);
                    continue;
                }
                None => continue,
            },
        };
        for w in &part.warnings {
            warnings.push(w.clone());
        }
        if file.list == ListKind::Allow && part.matcher.is_empty() {
            empty_allow_files.push(file.path.display().to_string());
        }
        match file.list {
            ListKind::Allow => allow_files.push(part),
            ListKind::Block => block_files.push(part),
        }
    }
    let allow = ListLayers::new(allow.build(), allow_files);
    let block = ListLayers::new(block.build(), block_files);
    // An allow file with no entry (every line rejected, or read while being rewritten) that
    // leaves the whole allow list empty would switch `allowlist: auto` off and let everyone
    // in: refused, so the last good snapshot stays. Otherwise it is only worth a warning.
    let opens = cfg.restrictions.allowlist == AllowlistMode::Auto
        && allow.is_empty()
        && inputs.store.lists.read(ListKind::Allow).is_empty();
    for path in empty_allow_files {
        let msg = format!(
            "{path}: the allow file has no valid entry; with `allowlist: auto` an allow list without entries is not enforced"
        );
        if opens {
            errors.push(format!("{msg}: fix the file, or remove it from the config"));
        } else {
            warnings.push(msg);
        }
    }
    for (list, layers) in [(ListKind::Allow, &allow), (ListKind::Block, &block)] {
        let total = layers.len() + inputs.store.lists.read(list).len();
        if total > cfg.lists.max_entries {
            errors.push(format!(
                "lists.max_entries: the {list} list has {total} entries (config, files and admin API), more than the limit of {}; raise lists.max_entries",
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
                    Location::Cookie(c) => extract::Location::Cookie(c.clone()),
                    Location::Header(h) => match http::HeaderName::from_bytes(h.as_bytes()) {
                        Ok(h) => extract::Location::Header(h),
                        Err(_) => {
                            errors.push(format!("routes[{i}].identifier: bad header name `{h}`"));
                            return None;
                        }
                    },
                };
                Some(SourceSpec::new(location, s.kind))
            })
            .collect();
        let mut tokens = Vec::with_capacity(r.identifier.len());
        for (k, s) in r.identifier.iter().enumerate() {
            let Some(t) = &s.token else {
                tokens.push(None);
                continue;
            };
            let kept = previous
                .into_iter()
                .flat_map(|p| p.routes.iter())
                .flat_map(|r| r.tokens.iter().flatten())
                .find(|c| c.verifier.built_from(t))
                .map(|c| c.verifier.clone());
            let verifier = match kept {
                Some(v) => v,
                None => match crate::oauth::Verifier::new(t) {
                    Ok(v) => Arc::new(v),
                    Err(m) => {
                        errors.push(format!("routes[{i}].identifier[{k}]: {m}"));
                        continue;
                    }
                },
            };
            let bearer = matches!(&s.location, Location::Header(h) if h == "authorization");
            tokens.push(Some(TokenCheck { verifier, bearer }));
        }
        routes.push(Route {
            name: Arc::from(r.name.as_str()),
            path: r.path.clone(),
            methods,
            kind: r.kind,
            sources,
            tokens,
            optional: r.optional,
            pass_safe_methods: r.pass_safe_methods,
            body_limit: usize::try_from(r.body_limit_or(&cfg.limits)).unwrap_or(usize::MAX),
            mode: r.mode.unwrap_or(cfg.mode),
            allow: String::new(),
        });
    }
    let route_table = RouteTable::new(routes.iter().map(|r| r.path.as_str()));
    let allow_headers: Vec<String> = (0..routes.len())
        .map(|i| allow_header(&routes, route_table.same_path(i)))
        .collect();
    for (r, allow) in routes.iter_mut().zip(allow_headers) {
        r.allow = allow;
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
    let config_policy = Policy {
        allowlist: r.allowlist,
        blocklist: r.blocklist,
        block_email_subaddresses: r.block_email_subaddresses,
        block_disposable_email_domains: r.block_disposable_email_domains,
        allowlist_blocklist_disabled_on_sign_in: r.allowlist_blocklist_disabled_on_sign_in,
        precedence: cfg.precedence,
    };
    Ok(Snapshot {
        generation,
        built_at: SystemTime::now(),
        route_table,
        routes,
        allow,
        block,
        store: inputs.store.lists.clone(),
        config_policy,
        store_restrictions: inputs.store.restrictions,
        policy: config_policy.with_overrides(&inputs.store.restrictions),
        deny: Deny { status, redirect },
        identifiers,
        disposable: builtin_disposable(),
        upstream,
        max_json_depth: cfg.limits.max_json_depth,
        upstream_response_timeout: cfg.timeouts.upstream_response,
        body_read_timeout: cfg.timeouts.header_read,
        max_entries: cfg.lists.max_entries,
        magic_client_id: cfg.admin.magic_client_id.as_deref().map(Arc::from),
        admin_keys: AdminKeys::new(&cfg.admin.secret_keys),
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
            store: StoreView::default(),
        };
        compile(&inputs, 1).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Inputs from a config with no route, `body` appended, and `list_files`.
    fn inputs_with(body: &str, list_files: Vec<ListFile>) -> Inputs {
        let text =
            format!("listen: [{{ addr: 127.0.0.1:0 }}]\nupstream: http://127.0.0.1:1\n{body}");
        let config = crate::config::from_str(&text, std::path::Path::new("t.yaml")).unwrap();
        Inputs {
            config_path: "t.yaml".into(),
            config,
            list_files,
            store: StoreView::default(),
        }
    }

    pub(crate) fn minimal() -> Snapshot {
        from_yaml("")
    }

    #[test]
    fn unchanged_list_files_are_reused_and_changed_ones_rebuilt() {
        let text = "listen: [{ addr: 127.0.0.1:0 }]\nupstream: http://127.0.0.1:1\n";
        let config = crate::config::from_str(text, std::path::Path::new("t.yaml")).unwrap();
        let file = |path: &str, list, text: &str| ListFile::from_text(path, list, text);
        let mut inputs = Inputs {
            config_path: "t.yaml".into(),
            config,
            list_files: vec![
                file("a.txt", ListKind::Allow, "a@x.com\nbad@@x\n"),
                file("b.txt", ListKind::Block, "b@x.com\n"),
            ],
            store: StoreView::default(),
        };
        let first = compile(&inputs, 1).unwrap();
        let skipped = |s: &Snapshot| {
            s.warnings
                .iter()
                .filter(|w| w.contains("line skipped"))
                .count()
        };
        assert_eq!(skipped(&first), 1, "{:?}", first.warnings);
        inputs.list_files[1] = file("b.txt", ListKind::Block, "b@x.com\nc@x.com\n");
        let second = compile_reusing(&inputs, 2, Some(&first)).unwrap();
        assert!(
            Arc::ptr_eq(&first.allow.files[0], &second.allow.files[0]),
            "unchanged file re-parsed"
        );
        assert!(!Arc::ptr_eq(&first.block.files[0], &second.block.files[0]));
        assert_eq!(second.block.len(), 2);
        assert_eq!(skipped(&second), 1, "the reused file's warnings are kept");
        let id = crate::identifier::parse("c@x.com", None, &ParseOptions::default()).unwrap();
        let c = crate::lists::Candidate::new(&id);
        assert!(second.block.lookup(&c).is_some());
        assert!(first.block.lookup(&c).is_none());
    }

    /// A rejected line is quoted in part: warnings are logged and served by the status API.
    #[test]
    fn a_long_rejected_line_is_quoted_in_part() {
        let long = format!("{}@@x.com", "a".repeat(1_000_000));
        let inputs = inputs_with(
            "",
            vec![ListFile::from_text(
                "b.txt",
                ListKind::Block,
                &format!("b@x.com\n{long}\n"),
            )],
        );
        let snap = compile(&inputs, 1).unwrap();
        let w: Vec<&String> = snap
            .warnings
            .iter()
            .filter(|w| w.contains("b.txt"))
            .collect();
        assert_eq!(w.len(), 1, "{:?}", snap.warnings);
        assert!(
            w[0].len() < 600 && w[0].contains("line 2"),
            "{}",
            w[0].len()
        );
    }

    #[test]
    fn compile_reports_every_bad_inline_entry_and_max_entries() {
        let inputs = inputs_with(
            "lists:\n  allow: [\"bad@@x\", \"ok@x.com\", \"x.com\"]\n  block: [\"+1\"]\n",
            vec![ListFile::from_text(
                "big.txt",
                ListKind::Block,
                "a@x.com\nb@x.com\nc@x.com\n",
            )],
        );
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
