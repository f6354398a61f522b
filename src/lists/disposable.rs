//! The shipped list of disposable email domains (`assets/disposable/domains.txt`, from the
//! npm package `disposable-email-domains`; see `assets/disposable/PROVENANCE.md`).

use std::sync::{Arc, LazyLock};

use rustc_hash::FxHashSet;

static BUILTIN_TEXT: &str = include_str!("../../assets/disposable/domains.txt");

static BUILTIN: LazyLock<DisposableDomains> =
    LazyLock::new(|| DisposableDomains::from_text(BUILTIN_TEXT));

/// A set of disposable email domains. A listed domain also covers its subdomains.
/// Cloning is cheap (shared).
#[derive(Clone, Debug)]
pub struct DisposableDomains {
    set: Arc<FxHashSet<Box<str>>>,
}

impl DisposableDomains {
    /// The list compiled into the binary, parsed on first use.
    pub fn builtin() -> DisposableDomains {
        BUILTIN.clone()
    }

    /// A set from text: one domain per line, `#` comments and blank lines ignored, names
    /// lowercased with one trailing dot removed. No IDNA conversion: give ASCII (punycode).
    pub fn from_text(text: &str) -> DisposableDomains {
        let set = text
            .lines()
            .map(|l| l.split('#').next().unwrap_or_default().trim())
            .filter(|l| !l.is_empty())
            .map(|l| {
                l.trim_end_matches('.')
                    .to_ascii_lowercase()
                    .into_boxed_str()
            })
            .collect();
        DisposableDomains { set: Arc::new(set) }
    }

    /// Number of listed domains.
    pub fn len(&self) -> usize {
        self.set.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }

    /// Whether `ascii_domain` (canonical: ASCII, lowercase, no trailing dot) or one of its
    /// parent domains is listed.
    pub fn contains(&self, ascii_domain: &str) -> bool {
        let mut d = ascii_domain;
        loop {
            if self.set.contains(d) {
                return true;
            }
            match d.split_once('.') {
                Some((_, rest)) if !rest.is_empty() => d = rest,
                _ => return false,
            }
        }
    }
}
