//! Allow and block lists: the entry grammar, list-text tokenizing, and the
//! `MatcherBuilder → Matcher` pair (built once per snapshot, checked many times, infallible).
//!
//! Entries (DESIGN §3): `user@x.com`, `*@x.com` (that domain), `*@*.x.com` (its strict
//! subdomains), a bare `x.com` in a block list (= `*@x.com`), `+12025550123`, `0x…` wallets.
//!
//! **Block matches broadly, allow matches narrowly.** An allow list compares canonical forms
//! only: `*@acme.com` admits `x@acme.com` and not `x@eng.acme.com`. A block list also folds
//! what reaches the same inbox (`+tag`, `=`, `#`, Gmail dots, `googlemail.com`), and a blocked
//! domain covers its subdomains. A lookup returns the most specific hit.
//!
//! This module gets text, never paths: no file I/O, no tokio, no hyper. The built-in list of
//! disposable email domains lives in [`DisposableDomains`].

mod disposable;
mod matcher;
mod table;
mod text;

#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::Arc;

use crate::identifier::{self, Identifier, IdentifierError, ParseOptions};

pub use disposable::DisposableDomains;
pub use matcher::{Candidate, Hit, Matcher, MatcherBuilder, SourceId, Staged};
pub use text::{LineError, Splitter, Token, cut, parse_entries, split_entries};

/// Which list an entry belongs to; it changes how entries match.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ListKind {
    /// Entries that admit.
    Allow,
    /// Entries that deny.
    Block,
}

impl ListKind {
    /// `allow` or `block`.
    pub fn as_str(self) -> &'static str {
        match self {
            ListKind::Allow => "allow",
            ListKind::Block => "block",
        }
    }
}

impl fmt::Display for ListKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One list entry.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Entry {
    /// One identifier (`user@x.com`, `+12025550123`, `0x…`).
    Exact(Identifier),
    /// Every address at this ASCII domain (`*@x.com`); in a block list also its subdomains.
    Domain(String),
    /// Every address at a strict subdomain of this ASCII domain (`*@*.x.com`).
    Subdomains(String),
}

/// How specific an entry is; when two entries match, the greater wins.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Specificity {
    /// `*@*.x.com`.
    Subdomains = 0,
    /// `*@x.com`.
    Domain = 1,
    /// One identifier.
    Exact = 2,
}

impl Entry {
    /// How specific this entry is.
    pub fn specificity(&self) -> Specificity {
        match self {
            Entry::Exact(_) => Specificity::Exact,
            Entry::Domain(_) => Specificity::Domain,
            Entry::Subdomains(_) => Specificity::Subdomains,
        }
    }
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Entry::Exact(id) => write!(f, "{id}"),
            Entry::Domain(d) => write!(f, "*@{d}"),
            Entry::Subdomains(d) => write!(f, "*@*.{d}"),
        }
    }
}

/// Why an entry was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    /// Nothing there.
    #[error("the entry is empty")]
    Empty,
    /// A wildcard other than `*@domain` and `*@*.domain`.
    #[error(
        "only two wildcards are supported: \"*@example.com\" (that domain) and \"*@*.example.com\" (its subdomains)"
    )]
    Wildcard,
    /// A bare domain in an allow list.
    #[error(
        "a bare domain is not accepted in an allow list; write \"*@{0}\" to allow that domain, or \"*@*.{0}\" for its subdomains"
    )]
    BareDomainInAllow(String),
    /// The domain of a `*@` entry is invalid.
    #[error("invalid domain: {0}")]
    Domain(IdentifierError),
    /// Not a valid identifier.
    #[error(transparent)]
    Identifier(#[from] IdentifierError),
}

/// Parse one list entry (DESIGN §3). Surrounding ASCII whitespace is ignored.
pub fn parse_entry(s: &str, list: ListKind, opts: &ParseOptions) -> Result<Entry, EntryError> {
    let s = s.trim_matches(|c: char| c.is_ascii_whitespace());
    // An already-canonical address (no `*`, so no wildcard; an `@`, so no bare domain): the
    // rules below would send it to `parse_email`, which accepts it as is.
    if let Some(e) = identifier::Email::from_canonical_ascii(s) {
        return Ok(Entry::Exact(Identifier::Email(e)));
    }
    parse_entry_rules(s, list, opts)
}

/// [`parse_entry`] without its fast path, on trimmed text.
fn parse_entry_rules(s: &str, list: ListKind, opts: &ParseOptions) -> Result<Entry, EntryError> {
    if s.is_empty() {
        return Err(EntryError::Empty);
    }
    if let Some(rest) = s.strip_prefix("*@*.") {
        return domain_part(rest).map(Entry::Subdomains);
    }
    if let Some(rest) = s.strip_prefix("*@") {
        return domain_part(rest).map(Entry::Domain);
    }
    if s.contains('*') {
        return Err(EntryError::Wildcard);
    }
    if !s.contains('@')
        && !s.starts_with("0x")
        && !s.starts_with("0X")
        && let Ok(d) = identifier::canonical_domain(s)
    {
        return match list {
            ListKind::Block => Ok(Entry::Domain(d)),
            ListKind::Allow => Err(EntryError::BareDomainInAllow(d)),
        };
    }
    Ok(Entry::Exact(identifier::parse(s, None, opts)?))
}

fn domain_part(rest: &str) -> Result<String, EntryError> {
    if rest.contains(['*', '@']) {
        return Err(EntryError::Wildcard);
    }
    identifier::canonical_domain(rest).map_err(EntryError::Domain)
}

/// Where entries come from, without the line.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum SourceKind {
    /// `lists.allow` / `lists.block` in the config file.
    Inline,
    /// A list file.
    File {
        /// The path as configured.
        path: Arc<str>,
    },
    /// The store (admin API).
    Store,
}

/// Where an entry comes from: the kind, and for files the 1-based line (for inline entries,
/// the 1-based position in the YAML list, if known).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Source {
    /// Config, file or store.
    pub kind: SourceKind,
    /// Line (or list position), if known.
    pub line: Option<u32>,
}

impl Source {
    /// The source as shown for an entry of `list`: `config (lists.allow)`,
    /// `lists/allow.txt:12`, `admin API`.
    pub fn describe(&self, list: ListKind) -> String {
        match &self.kind {
            SourceKind::Inline => match self.line {
                Some(n) => format!("config (lists.{list}, entry {n})"),
                None => format!("config (lists.{list})"),
            },
            _ => self.to_string(),
        }
    }
}

impl fmt::Display for Source {
    /// `config (lists)`, `lists/allow.txt:12`, `admin API`; see [`Source::describe`] for the
    /// form that names the list.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.kind, self.line) {
            (SourceKind::Inline, Some(n)) => write!(f, "config (lists, entry {n})"),
            (SourceKind::Inline, None) => f.write_str("config (lists)"),
            (SourceKind::File { path }, Some(n)) => write!(f, "{path}:{n}"),
            (SourceKind::File { path }, None) => f.write_str(path),
            (SourceKind::Store, _) => f.write_str("admin API"),
        }
    }
}
