//! The shipped list of disposable email domains (`assets/disposable/domains.txt`, from the
//! npm package `disposable-email-domains`; see `assets/disposable/PROVENANCE.md`).

use std::sync::{Arc, LazyLock};

use rustc_hash::FxHashSet;

static BUILTIN_TEXT: &str = include_str!("../../assets/disposable/domains.txt");

static BUILTIN: LazyLock<DisposableDomains> =
    LazyLock::new(|| DisposableDomains::from_text(BUILTIN_TEXT));

/// A set of disposable email domains: `domain` lines match that domain exactly, `*.domain`
/// lines the domain and every subdomain (the upstream package's `index.json` and
/// `wildcard.json`; the first holds a few public suffixes such as `edu.pl`, which must not
/// deny the universities registered under them). Cloning is cheap (shared).
#[derive(Clone, Debug)]
pub struct DisposableDomains {
    exact: Arc<FxHashSet<Box<str>>>,
    wildcard: Arc<FxHashSet<Box<str>>>,
}

impl DisposableDomains {
    /// The list compiled into the binary, parsed on first use.
    pub fn builtin() -> DisposableDomains {
        BUILTIN.clone()
    }

    /// A set from text: one domain per line (`*.domain` for it and its subdomains), `#`
    /// comments and blank lines ignored, names lowercased with one trailing dot removed. No
    /// IDNA conversion: give ASCII (punycode).
    pub fn from_text(text: &str) -> DisposableDomains {
        let (mut exact, mut wildcard) = (FxHashSet::default(), FxHashSet::default());
        for line in text.lines() {
            let l = line.split('#').next().unwrap_or_default().trim();
            if l.is_empty() {
                continue;
            }
            let (set, name) = match l.strip_prefix("*.") {
                Some(name) => (&mut wildcard, name),
                None => (&mut exact, l),
            };
            set.insert(
                name.trim_end_matches('.')
                    .to_ascii_lowercase()
                    .into_boxed_str(),
            );
        }
        DisposableDomains {
            exact: Arc::new(exact),
            wildcard: Arc::new(wildcard),
        }
    }

    /// Number of lines listed (exact and wildcard).
    pub fn len(&self) -> usize {
        self.exact.len() + self.wildcard.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `ascii_domain` (canonical: ASCII, lowercase, no trailing dot) is listed
    /// exactly, or it or one of its parent domains as a wildcard.
    pub fn contains(&self, ascii_domain: &str) -> bool {
        if self.exact.contains(ascii_domain) {
            return true;
        }
        let mut d = ascii_domain;
        loop {
            if self.wildcard.contains(d) {
                return true;
            }
            match d.split_once('.') {
                Some((_, rest)) if !rest.is_empty() => d = rest,
                _ => return false,
            }
        }
    }
}
