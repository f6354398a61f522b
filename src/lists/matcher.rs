//! `MatcherBuilder → Matcher` and the per-request `Candidate`.
//!
//! All entries of a list live in one [`Table`] under three namespaces. What key an entry is
//! stored under depends on the list:
//!
//! | entry            | allow key          | block key                                  |
//! |------------------|--------------------|--------------------------------------------|
//! | email            | canonical          | [`Email::inbox_key`]                       |
//! | phone / wallet   | canonical          | canonical                                  |
//! | `*@x.com`        | `x.com` (Domain)   | `x.com`, googlemail.com folded to gmail.com |
//! | `*@*.x.com`      | `x.com` (Subdomains) | same, folded                             |
//!
//! A lookup probes the exact key, then (emails) the domain and its parent suffixes, most
//! specific first, without allocating.

use crate::identifier::{Email, Identifier, Kind};
use std::borrow::Cow;

use super::table::{self, MAX_SOURCES, NO_LINE, Ns, Rec, Table};
use super::{Entry, ListKind, Source, SourceKind, Specificity};

/// Collects entries for one list; [`MatcherBuilder::build`] turns them into a [`Matcher`].
#[derive(Debug)]
pub struct MatcherBuilder {
    list: ListKind,
    table: Table,
    /// Distinct sources, without lines.
    sources: Vec<Source>,
    /// Reused for each entry's key and display form.
    scratch: Scratch,
}

/// A source registered with [`MatcherBuilder::source`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SourceId(u32);

#[derive(Debug, Default)]
struct Scratch {
    key: String,
    display: String,
}

impl MatcherBuilder {
    /// An empty builder for `list`.
    pub fn new(list: ListKind) -> Self {
        MatcherBuilder {
            list,
            table: Table::default(),
            sources: Vec::new(),
            scratch: Scratch::default(),
        }
    }

    /// An empty builder with room for about `entries` entries whose text takes about `bytes`
    /// bytes (a list file's line count and length will do): building then never rehashes.
    pub fn with_capacity(list: ListKind, entries: usize, bytes: usize) -> Self {
        MatcherBuilder {
            table: Table::with_capacity(entries, bytes),
            ..MatcherBuilder::new(list)
        }
    }

    /// Add an entry. A duplicate (same key after folding, see the module doc) keeps the
    /// first entry and its source. A matcher names at most 256 distinct sources (one per
    /// list file, the config, the store); an entry from one more is not added.
    pub fn add(&mut self, entry: Entry, source: Source) {
        let id = source_id(&mut self.sources, source.kind);
        self.add_at(&entry, id, source.line);
    }

    /// Registers a source (without a line) for [`MatcherBuilder::add_at`].
    pub fn source(&mut self, kind: SourceKind) -> SourceId {
        source_id(&mut self.sources, kind)
    }

    /// Adds an entry from a registered source at `line`, without allocating (beyond the
    /// table's growth); see [`MatcherBuilder::add`].
    pub fn add_at(&mut self, entry: &Entry, source: SourceId, line: Option<u32>) {
        insert(
            &mut self.table,
            &mut self.scratch,
            self.list,
            entry,
            source,
            line,
        );
    }

    /// Adds the entries of `staged`, in the order they were pushed, from `source` (a
    /// duplicate keeps the first entry, as with [`MatcherBuilder::add_at`]).
    /// Returns false, adding nothing, when `staged` was made for the other list (keys are
    /// made for one list).
    pub fn add_staged(&mut self, staged: &Staged, source: SourceId) -> bool {
        if staged.list != self.list {
            return false;
        }
        // Each batch's index slots are loaded together first (see `Table::touch`).
        const BATCH: usize = 64;
        for batch in staged.recs.chunks(BATCH) {
            self.table.touch(batch.iter().map(|r| r.hash));
            for r in batch {
                let at = r.display_at as usize;
                let key_at = at + usize::from(r.key_from);
                let (Some(display), Some(key)) = (
                    staged.text.get(at..at + usize::from(r.display_len)),
                    staged.text.get(key_at..key_at + usize::from(r.key_len)),
                ) else {
                    continue;
                };
                self.table
                    .insert_hashed(r.ns, key, display, source.0, r.line, r.hash);
            }
        }
        true
    }

    /// Distinct entries added so far.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether nothing was added.
    pub fn is_empty(&self) -> bool {
        self.table.len() == 0
    }

    /// Finish building.
    pub fn build(mut self) -> Matcher {
        self.table.shrink();
        Matcher {
            list: self.list,
            table: self.table,
            sources: self.sources,
        }
    }
}

/// Entries of one list, parsed and keyed (key, display form, hash) away from the builder — on
/// another thread, for a part of a large list file — and then added in order by
/// [`MatcherBuilder::add_staged`], which only has to probe the table.
#[derive(Debug)]
pub struct Staged {
    list: ListKind,
    /// Display forms and keys, back to back.
    text: String,
    recs: Vec<StagedRec>,
    scratch: Scratch,
}

#[derive(Clone, Copy, Debug)]
struct StagedRec {
    hash: u64,
    display_at: u32,
    line: u32,
    display_len: u8,
    /// Where the key starts after `display_at`: it is the display form's suffix, or follows
    /// it.
    key_from: u8,
    key_len: u8,
    ns: Ns,
}

impl Staged {
    /// Nothing staged yet, for entries of `list`; `entries` and `bytes` as in
    /// [`MatcherBuilder::with_capacity`].
    pub fn with_capacity(list: ListKind, entries: usize, bytes: usize) -> Staged {
        Staged {
            list,
            text: String::with_capacity(bytes),
            recs: Vec::with_capacity(entries),
            scratch: Scratch::default(),
        }
    }

    /// Stages `entry` at `line`. An entry whose key or display form is longer than the table
    /// takes (255 bytes) is refused when it is added, as with [`MatcherBuilder::add_at`].
    pub fn push(&mut self, entry: &Entry, line: Option<u32>) {
        let line = line.unwrap_or(NO_LINE);
        let ns = write_key(entry, self.list, &mut self.scratch.key);
        write_display(entry, &mut self.scratch.display);
        let (key, display) = (&self.scratch.key, &self.scratch.display);
        let (Ok(key_len), Ok(display_len), Ok(display_at)) = (
            u8::try_from(key.len()),
            u8::try_from(display.len()),
            u32::try_from(self.text.len()),
        ) else {
            // Too long for the table (or a part over 4 GiB): refused when added, as the table
            // would refuse it.
            self.recs.push(StagedRec {
                hash: 0,
                display_at: u32::MAX,
                line,
                display_len: 0,
                key_from: 0,
                key_len: 0,
                ns,
            });
            return;
        };
        self.text.push_str(display);
        let key_from = if display.ends_with(key.as_str()) {
            display_len - key_len
        } else {
            self.text.push_str(key);
            display_len
        };
        self.recs.push(StagedRec {
            hash: table::hash(ns, key.as_bytes()),
            display_at,
            line,
            display_len,
            key_from,
            key_len,
            ns,
        });
    }

    /// The list the entries are keyed for.
    pub fn list(&self) -> ListKind {
        self.list
    }

    /// Forgets the staged entries, keeping the memory for the next ones.
    pub fn clear(&mut self) {
        self.text.clear();
        self.recs.clear();
    }

    /// Entries staged.
    pub fn len(&self) -> usize {
        self.recs.len()
    }

    /// Whether nothing was staged.
    pub fn is_empty(&self) -> bool {
        self.recs.is_empty()
    }
}

/// The index of `kind` in `sources`, added when new. Entries arrive grouped by source, so the
/// last one is the usual hit.
fn source_id(sources: &mut Vec<Source>, kind: SourceKind) -> SourceId {
    let i = match sources.iter().rposition(|s| s.kind == kind) {
        Some(i) => i,
        None if sources.len() < MAX_SOURCES => {
            sources.push(Source { kind, line: None });
            sources.len() - 1
        }
        // Past the table's limit: an index the table refuses.
        None => MAX_SOURCES,
    };
    SourceId(u32::try_from(i).unwrap_or(u32::MAX))
}

/// Writes the key an entry of `list` is stored under into `out` and returns its namespace
/// (see the module doc).
fn write_key(entry: &Entry, list: ListKind, out: &mut String) -> Ns {
    out.clear();
    match (entry, list) {
        (Entry::Exact(Identifier::Email(e)), ListKind::Block) => {
            e.push_inbox_key(out);
            Ns::Exact
        }
        (Entry::Exact(id), _) => {
            out.push_str(id.as_str());
            Ns::Exact
        }
        (Entry::Domain(d) | Entry::Subdomains(d), list) => {
            out.push_str(d.trim_end_matches('.'));
            out.make_ascii_lowercase();
            if list == ListKind::Block
                && let Some(folded) = fold_googlemail(out)
            {
                *out = folded;
            }
            if matches!(entry, Entry::Domain(_)) {
                Ns::Domain
            } else {
                Ns::Subdomains
            }
        }
    }
}

/// The table namespace and key an entry of `list` is stored under.
fn entry_key(entry: &Entry, list: ListKind) -> (Ns, String) {
    let mut key = String::new();
    let ns = write_key(entry, list, &mut key);
    (ns, key)
}

/// Writes the entry's display form (its `Display`) into `out`.
fn write_display(entry: &Entry, out: &mut String) {
    out.clear();
    match entry {
        Entry::Exact(id) => out.push_str(id.as_str()),
        Entry::Domain(d) => {
            out.push_str("*@");
            out.push_str(d);
        }
        Entry::Subdomains(d) => {
            out.push_str("*@*.");
            out.push_str(d);
        }
    }
}

const KEY_PREFIXES: [(Ns, &str); 3] = [
    (Ns::Exact, "x:"),
    (Ns::Domain, "d:"),
    (Ns::Subdomains, "s:"),
];

impl Entry {
    /// The key this entry is stored under in a `list` matcher, as one string (`x:`, `d:` or
    /// `s:` + key). Two entries with the same key match exactly the same identifiers in that
    /// list, so it is the duplicate key for stores too.
    pub fn key(&self, list: ListKind) -> String {
        let (ns, key) = entry_key(self, list);
        let prefix = KEY_PREFIXES
            .iter()
            .find(|(n, _)| *n == ns)
            .map_or("x:", |(_, p)| p);
        format!("{prefix}{key}")
    }
}

fn split_key(key: &str) -> Option<(Ns, &str)> {
    KEY_PREFIXES
        .iter()
        .find_map(|(ns, p)| key.strip_prefix(p).map(|k| (*ns, k)))
}

fn insert(
    table: &mut Table,
    scratch: &mut Scratch,
    list: ListKind,
    entry: &Entry,
    source: SourceId,
    line: Option<u32>,
) -> bool {
    let ns = write_key(entry, list, &mut scratch.key);
    write_display(entry, &mut scratch.display);
    table.insert(
        ns,
        &scratch.key,
        &scratch.display,
        source.0,
        line.unwrap_or(NO_LINE),
    )
}

/// A compiled list. Lookups cannot fail and do not allocate.
#[derive(Debug)]
pub struct Matcher {
    list: ListKind,
    table: Table,
    sources: Vec<Source>,
}

/// A matching entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hit<'a> {
    /// The entry as written in canonical form: `user@x.com`, `*@x.com`, `*@*.x.com`, ….
    pub entry: &'a str,
    /// How specific the entry is.
    pub specificity: Specificity,
    /// Where the entry comes from (its `line` is `None`; see [`Hit::line`]).
    pub source: &'a Source,
    /// The entry's line (or list position) in its source, if known.
    pub line: Option<u32>,
}

impl Hit<'_> {
    /// The full source, line included.
    pub fn origin(&self) -> Source {
        Source {
            kind: self.source.kind.clone(),
            line: self.line,
        }
    }
}

static UNKNOWN_SOURCE: Source = Source {
    kind: SourceKind::Store,
    line: None,
};

impl Matcher {
    /// An empty matcher for `list`.
    pub fn empty(list: ListKind) -> Self {
        MatcherBuilder::new(list).build()
    }

    /// Adds one entry to a built matcher (the admin store's live lists); false for a
    /// duplicate key.
    pub fn insert(&mut self, entry: Entry, source: Source) -> bool {
        let id = source_id(&mut self.sources, source.kind);
        insert(
            &mut self.table,
            &mut Scratch::default(),
            self.list,
            &entry,
            id,
            source.line,
        )
    }

    /// Removes the entry stored under `entry`'s key; false when there is none.
    pub fn remove(&mut self, entry: &Entry) -> bool {
        let (ns, key) = entry_key(entry, self.list);
        self.table.remove(ns, &key)
    }

    /// The entry stored under a key from [`Entry::key`], with its source.
    pub fn get_by_key(&self, key: &str) -> Option<(String, Source)> {
        let (ns, key) = split_key(key)?;
        let r = self.table.get(ns, key)?;
        let h = self.hit(&r);
        Some((h.entry.to_owned(), h.origin()))
    }

    /// Which list this is.
    pub fn list(&self) -> ListKind {
        self.list
    }

    /// Number of distinct entries.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether the list has no entries.
    pub fn is_empty(&self) -> bool {
        self.table.len() == 0
    }

    /// Approximate heap memory held, in bytes.
    pub fn heap_bytes(&self) -> usize {
        self.table.heap_bytes() + self.sources.capacity() * std::mem::size_of::<Source>()
    }

    /// The most specific entry matching `c`, if any.
    pub fn lookup(&self, c: &Candidate) -> Option<Hit<'_>> {
        if self.table.len() == 0 {
            return None;
        }
        match self.list {
            ListKind::Allow => self.lookup_allow(c),
            ListKind::Block => self.lookup_block(c),
        }
    }

    fn lookup_allow(&self, c: &Candidate) -> Option<Hit<'_>> {
        if let Some(r) = self.table.get(Ns::Exact, c.canonical) {
            return Some(self.hit(&r));
        }
        let domain = c.domain()?;
        if let Some(r) = self.table.get(Ns::Domain, domain) {
            return Some(self.hit(&r));
        }
        parents(domain)
            .find_map(|p| self.table.get(Ns::Subdomains, p))
            .map(|r| self.hit(&r))
    }

    fn lookup_block(&self, c: &Candidate) -> Option<Hit<'_>> {
        if let Some(r) = self.table.get(Ns::Exact, &c.inbox) {
            return Some(self.hit(&r));
        }
        if c.kind != Kind::Email {
            return None;
        }
        let domain = match &c.folded {
            Some(d) => d.as_str(),
            None => c.domain()?,
        };
        std::iter::once(domain)
            .chain(parents(domain))
            .find_map(|p| self.table.get(Ns::Domain, p))
            .or_else(|| parents(domain).find_map(|p| self.table.get(Ns::Subdomains, p)))
            .map(|r| self.hit(&r))
    }

    fn hit<'a>(&'a self, r: &Rec) -> Hit<'a> {
        Hit {
            entry: self.table.display(r),
            specificity: match r.ns {
                Ns::Exact => Specificity::Exact,
                Ns::Domain => Specificity::Domain,
                Ns::Subdomains => Specificity::Subdomains,
            },
            source: self
                .sources
                .get(r.source as usize)
                .unwrap_or(&UNKNOWN_SOURCE),
            line: (r.line != NO_LINE).then_some(r.line),
        }
    }

    /// Every entry in insertion order, as its display form and full source (for listings).
    pub fn iter(&self) -> impl Iterator<Item = (String, Source)> + '_ {
        self.table.recs().map(move |r| {
            let h = self.hit(&r);
            (h.entry.to_owned(), h.origin())
        })
    }
}

/// An identifier normalized once per request and checked against both lists. It borrows
/// the identifier: an email allocates only when its inbox key differs from it (a
/// sub-address, a Gmail address) or its domain is folded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate<'a> {
    kind: Kind,
    /// Canonical identifier.
    canonical: &'a str,
    /// Block-list exact key: the inbox key for emails, else the canonical form.
    inbox: Cow<'a, str>,
    /// Offset of the domain in `canonical` (emails).
    domain_at: Option<usize>,
    /// The domain with googlemail.com folded to gmail.com, when that changes it.
    folded: Option<String>,
}

impl<'a> Candidate<'a> {
    /// Precompute every key a lookup needs.
    pub fn new(id: &'a Identifier) -> Candidate<'a> {
        match id {
            Identifier::Email(e) => Self::email(e),
            other => Candidate {
                kind: other.kind(),
                canonical: other.as_str(),
                inbox: Cow::Borrowed(other.as_str()),
                domain_at: None,
                folded: None,
            },
        }
    }

    fn email(e: &'a Email) -> Candidate<'a> {
        let domain = e.domain();
        Candidate {
            kind: Kind::Email,
            canonical: e.as_str(),
            inbox: e.inbox_key_cow(),
            domain_at: Some(e.as_str().len() - domain.len()),
            folded: fold_googlemail(domain),
        }
    }

    /// The kind of identifier.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The canonical identifier.
    pub fn as_str(&self) -> &str {
        self.canonical
    }

    /// The email's ASCII domain.
    pub fn domain(&self) -> Option<&str> {
        self.canonical.get(self.domain_at?..)
    }
}

/// Strict parent suffixes of `domain`, longest first (`b.a.x.com` → `a.x.com`, `x.com`,
/// `com`).
fn parents(domain: &str) -> impl Iterator<Item = &str> {
    domain
        .match_indices('.')
        .filter_map(move |(i, _)| domain.get(i + 1..))
}

/// `googlemail.com` (and its subdomains) as `gmail.com`; `None` when nothing changes.
fn fold_googlemail(domain: &str) -> Option<String> {
    const G: &str = "googlemail.com";
    if domain == G {
        return Some("gmail.com".to_owned());
    }
    let head = domain.strip_suffix(G)?.strip_suffix('.')?;
    Some(format!("{head}.gmail.com"))
}
