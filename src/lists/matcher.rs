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

use super::table::{NO_LINE, Ns, Rec, Table};
use super::{Entry, ListKind, Source, SourceKind, Specificity};

/// Collects entries for one list; [`MatcherBuilder::build`] turns them into a [`Matcher`].
#[derive(Debug)]
pub struct MatcherBuilder {
    list: ListKind,
    table: Table,
    /// Distinct sources, without lines.
    sources: Vec<Source>,
}

impl MatcherBuilder {
    /// An empty builder for `list`.
    pub fn new(list: ListKind) -> Self {
        MatcherBuilder {
            list,
            table: Table::default(),
            sources: Vec::new(),
        }
    }

    /// Add an entry. A duplicate (same key after folding, see the module doc) keeps the
    /// first entry and its source.
    pub fn add(&mut self, entry: Entry, source: Source) {
        let src = self.intern(source.kind);
        let line = source.line.unwrap_or(NO_LINE);
        let display = entry.to_string();
        match (&entry, self.list) {
            (Entry::Exact(Identifier::Email(e)), ListKind::Block) => {
                let key = e.inbox_key();
                self.table.insert(Ns::Exact, &key, &display, src, line);
            }
            (Entry::Exact(id), _) => {
                self.table
                    .insert(Ns::Exact, id.as_str(), &display, src, line);
            }
            (Entry::Domain(d) | Entry::Subdomains(d), list) => {
                let ns = if matches!(entry, Entry::Domain(_)) {
                    Ns::Domain
                } else {
                    Ns::Subdomains
                };
                let mut key = d.trim_end_matches('.').to_ascii_lowercase();
                if list == ListKind::Block {
                    key = fold_googlemail(&key).unwrap_or(key);
                }
                self.table.insert(ns, &key, &display, src, line);
            }
        }
    }

    fn intern(&mut self, kind: SourceKind) -> u32 {
        // Entries arrive grouped by source, so the last one is the usual hit.
        if let Some(i) = self.sources.iter().rposition(|s| s.kind == kind) {
            return u32::try_from(i).unwrap_or(u32::MAX);
        }
        self.sources.push(Source { kind, line: None });
        u32::try_from(self.sources.len() - 1).unwrap_or(u32::MAX)
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
        if let Some(r) = self.table.get(Ns::Exact, &c.canonical) {
            return Some(self.hit(r));
        }
        let domain = c.domain()?;
        if let Some(r) = self.table.get(Ns::Domain, domain) {
            return Some(self.hit(r));
        }
        parents(&c.domain_dots, domain)
            .find_map(|p| self.table.get(Ns::Subdomains, p))
            .map(|r| self.hit(r))
    }

    fn lookup_block(&self, c: &Candidate) -> Option<Hit<'_>> {
        if let Some(r) = self.table.get(Ns::Exact, &c.inbox) {
            return Some(self.hit(r));
        }
        if c.kind != Kind::Email {
            return None;
        }
        let (domain, dots) = match &c.folded {
            Some((d, dots)) => (d.as_str(), dots.as_slice()),
            None => (c.domain()?, c.domain_dots.as_slice()),
        };
        std::iter::once(domain)
            .chain(parents(dots, domain))
            .find_map(|p| self.table.get(Ns::Domain, p))
            .or_else(|| parents(dots, domain).find_map(|p| self.table.get(Ns::Subdomains, p)))
            .map(|r| self.hit(r))
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
        self.table.recs().iter().map(move |r| {
            let h = self.hit(r);
            (h.entry.to_owned(), h.origin())
        })
    }
}

/// An identifier normalized once per request and checked against both lists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    kind: Kind,
    /// Canonical identifier.
    canonical: Box<str>,
    /// Block-list exact key: the inbox key for emails, else the canonical form.
    inbox: Box<str>,
    /// Offset of the domain in `canonical` (emails).
    domain_at: Option<usize>,
    /// Offsets of the dots in the domain, left to right.
    domain_dots: Vec<u8>,
    /// The domain with googlemail.com folded to gmail.com, when that changes it.
    folded: Option<(String, Vec<u8>)>,
}

impl Candidate {
    /// Precompute every key a lookup needs.
    pub fn new(id: &Identifier) -> Candidate {
        match id {
            Identifier::Email(e) => Self::email(e),
            other => Candidate {
                kind: other.kind(),
                canonical: other.as_str().into(),
                inbox: other.as_str().into(),
                domain_at: None,
                domain_dots: Vec::new(),
                folded: None,
            },
        }
    }

    fn email(e: &Email) -> Candidate {
        let domain = e.domain();
        let folded = fold_googlemail(domain).map(|d| {
            let dots = dots(&d);
            (d, dots)
        });
        Candidate {
            kind: Kind::Email,
            canonical: e.as_str().into(),
            inbox: e.inbox_key().into(),
            domain_at: Some(e.as_str().len() - domain.len()),
            domain_dots: dots(domain),
            folded,
        }
    }

    /// The kind of identifier.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The canonical identifier.
    pub fn as_str(&self) -> &str {
        &self.canonical
    }

    /// The email's ASCII domain.
    pub fn domain(&self) -> Option<&str> {
        self.canonical.get(self.domain_at?..)
    }
}

/// Strict parent suffixes of `domain`, longest first (`b.a.x.com` → `a.x.com`, `x.com`,
/// `com`), given the offsets of its dots.
fn parents<'a>(dots: &'a [u8], domain: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    dots.iter()
        .filter_map(move |&d| domain.get(usize::from(d) + 1..))
}

fn dots(domain: &str) -> Vec<u8> {
    domain
        .bytes()
        .enumerate()
        .filter(|&(_, b)| b == b'.')
        .filter_map(|(i, _)| u8::try_from(i).ok())
        .collect()
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
