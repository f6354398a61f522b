//! Email addresses: the strict dot-atom grammar, IDNA domain validation, canonical form and
//! the inbox key used by block matching.

use std::fmt;

use idna::uts46::{AsciiDenyList, DnsLength, Hyphens, Uts46};

use super::{IdentifierError, MAX_INPUT_LEN, check_visible, snippet};

const MAX_ADDRESS: usize = 254;
const MAX_LOCAL: usize = 64;
const MAX_DOMAIN: usize = 253;
const MAX_LABEL: usize = 63;

/// A canonical email address: `local@domain`, both lowercased, domain in ASCII.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Email {
    canonical: String,
    at: usize,
}

impl Email {
    /// The canonical address.
    pub fn as_str(&self) -> &str {
        &self.canonical
    }

    /// The local part (before the `@`), lowercased.
    pub fn local(&self) -> &str {
        self.canonical.get(..self.at).unwrap_or_default()
    }

    /// The ASCII domain (after the `@`), lowercased, no trailing dot.
    pub fn domain(&self) -> &str {
        self.canonical.get(self.at + 1..).unwrap_or_default()
    }

    /// Whether the local part carries a sub-address: it contains `+`, `=` or `#` (Clerk's rule).
    pub fn has_subaddress(&self) -> bool {
        self.local().contains(['+', '=', '#'])
    }

    /// The address that reaches the same inbox: the local part cut at the first `+`, `=` or
    /// `#`; for `gmail.com` and `googlemail.com` also without dots and with the domain
    /// `gmail.com`.
    pub fn inbox_key(&self) -> String {
        let mut out = String::with_capacity(self.canonical.len());
        self.push_inbox_key(&mut out);
        out
    }

    /// [`Email::inbox_key`], borrowed when it is the address itself (no sub-address, not
    /// Gmail): no allocation for most addresses.
    pub fn inbox_key_cow(&self) -> std::borrow::Cow<'_, str> {
        let (local, gmail) = self.inbox_parts();
        if gmail || local.len() != self.local().len() {
            std::borrow::Cow::Owned(self.inbox_key())
        } else {
            std::borrow::Cow::Borrowed(&self.canonical)
        }
    }

    /// Appends [`Email::inbox_key`] to `out` (no allocation when `out` has room).
    pub fn push_inbox_key(&self, out: &mut String) {
        let (local, gmail) = self.inbox_parts();
        if gmail {
            out.extend(local.chars().filter(|&c| c != '.'));
            out.push_str("@gmail.com");
        } else {
            out.push_str(local);
            out.push('@');
            out.push_str(self.domain());
        }
    }

    /// The inbox key's parts: the local part cut at the first `+`, `=` or `#`, and whether the
    /// domain is Gmail's (dots dropped, `gmail.com`).
    fn inbox_parts(&self) -> (&str, bool) {
        let local = self.local();
        let local = local
            .find(['+', '=', '#'])
            .and_then(|i| local.get(..i))
            .unwrap_or(local);
        let domain = self.domain();
        (local, domain == "gmail.com" || domain == "googlemail.com")
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.canonical)
    }
}

/// Parse and canonicalize an email address (DESIGN §3). Fails closed.
///
/// An address already in canonical form (see [`Email::from_canonical_ascii`]) is taken in
/// one pass; anything else goes through the full parser, which gives the same result for
/// those addresses (`identifier::tests::canonical_fast_path_agrees_with_the_full_parser`).
pub fn parse_email(s: &str) -> Result<Email, IdentifierError> {
    match Email::from_canonical_ascii(s) {
        Some(e) => Ok(e),
        None => parse_email_full(s),
    }
}

impl Email {
    /// `s` as an [`Email`] when it is already the canonical form of an address [`parse_email`]
    /// accepts, checked in one pass over the bytes without the full grammar or IDNA; `None`
    /// for anything else — the full parser then decides (it may still accept it). Most list
    /// lines and sign-ups are such addresses.
    ///
    /// Sufficient conditions, each a case of the full parser's rules: at most 254 bytes; one
    /// `@`; the local part 1–64 bytes of `a-z 0-9 . _ + - = #` (lowercase atext without
    /// `%`/`!` source routing, `?` so no `=?` encoded word, `*` so no list wildcard), no
    /// leading, trailing or doubled dot; the domain of 2+ labels of 1–63 bytes of
    /// `a-z 0-9 -` without a leading or trailing hyphen, no `xn--` label (IDNA would decode
    /// it), no trailing dot, a last label that is not all digits, at most 253 bytes. For such a
    /// name UTS #46 is the identity, so the canonical form is `s` itself.
    pub fn from_canonical_ascii(s: &str) -> Option<Email> {
        let b = s.as_bytes();
        if b.len() > MAX_ADDRESS {
            return None;
        }
        let at = b.iter().position(|&c| c == b'@')?;
        let (local, domain) = (b.get(..at)?, b.get(at + 1..)?);
        if local.is_empty()
            || local.len() > MAX_LOCAL
            || local.first() == Some(&b'.')
            || local.last() == Some(&b'.')
        {
            return None;
        }
        let mut prev = 0u8;
        for &c in local {
            let ok = c.is_ascii_lowercase()
                || c.is_ascii_digit()
                || matches!(c, b'_' | b'+' | b'-' | b'=' | b'#')
                || (c == b'.' && prev != b'.');
            if !ok {
                return None;
            }
            prev = c;
        }
        if domain.is_empty() || domain.len() > MAX_DOMAIN {
            return None;
        }
        let mut labels = 0usize;
        let mut last: &[u8] = &[];
        for label in domain.split(|&c| c == b'.') {
            labels += 1;
            last = label;
            if label.is_empty()
                || label.len() > MAX_LABEL
                || label.first() == Some(&b'-')
                || label.last() == Some(&b'-')
                || label.starts_with(b"xn--")
                || !label
                    .iter()
                    .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
            {
                return None;
            }
        }
        if labels < 2 || last.iter().all(u8::is_ascii_digit) {
            return None;
        }
        Some(Email {
            canonical: s.to_owned(),
            at,
        })
    }
}

/// The full parser: every rule, IDNA for non-ASCII or `xn--` domains, and the error that
/// says what is wrong. [`parse_email`] skips it for already-canonical addresses.
pub(crate) fn parse_email_full(s: &str) -> Result<Email, IdentifierError> {
    const WHAT: &str = "email address";
    if s.is_empty() {
        return Err(IdentifierError::Empty(WHAT));
    }
    if s.len() > MAX_INPUT_LEN {
        return Err(IdentifierError::TooLong {
            what: WHAT,
            len: s.len(),
            max: MAX_ADDRESS,
        });
    }
    check_visible(s, WHAT)?;
    let ats = s.bytes().filter(|&b| b == b'@').count();
    let (local, domain) = match (ats, s.split_once('@')) {
        (1, Some(parts)) => parts,
        (0, _) => return Err(IdentifierError::NoAt),
        (n, _) => return Err(IdentifierError::ManyAt(n)),
    };
    check_local(local)?;
    if domain.is_empty() {
        return Err(IdentifierError::DomainEmpty);
    }
    let domain = canonical_domain(domain)?;
    let mut canonical = String::with_capacity(local.len() + 1 + domain.len());
    canonical.push_str(local);
    canonical.make_ascii_lowercase();
    canonical.push('@');
    canonical.push_str(&domain);
    if canonical.len() > MAX_ADDRESS {
        return Err(IdentifierError::TooLong {
            what: WHAT,
            len: canonical.len(),
            max: MAX_ADDRESS,
        });
    }
    Ok(Email {
        canonical,
        at: local.len(),
    })
}

fn check_local(local: &str) -> Result<(), IdentifierError> {
    if local.is_empty() {
        return Err(IdentifierError::LocalEmpty);
    }
    // The most telling error first: these are syntaxes a lenient parser would accept.
    if local.contains('"') {
        return Err(IdentifierError::Quoted);
    }
    if local.contains(['(', ')']) {
        return Err(IdentifierError::Comment);
    }
    if local.contains('\\') {
        return Err(IdentifierError::Backslash);
    }
    if local.contains("=?") {
        return Err(IdentifierError::EncodedWord);
    }
    if let Some(c) = local.chars().find(|c| !c.is_ascii()) {
        return Err(IdentifierError::LocalNonAscii(c));
    }
    if let Some(c) = local.chars().find(|&c| c != '.' && !is_atext(c)) {
        return Err(IdentifierError::LocalChar(c));
    }
    // Valid atext, but `%` (percent hack) and `!` (bang path) are source routing: a relay may
    // deliver `me%evil.com@acme.com` to evil.com, so `*@acme.com` would admit it.
    if let Some(c) = local.chars().find(|&c| c == '%' || c == '!') {
        return Err(IdentifierError::SourceRoute(c));
    }
    if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
        return Err(IdentifierError::LocalDots);
    }
    if local.len() > MAX_LOCAL {
        return Err(IdentifierError::TooLong {
            what: "part before the '@'",
            len: local.len(),
            max: MAX_LOCAL,
        });
    }
    Ok(())
}

/// RFC 5322 `atext`.
fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c)
}

/// Convert a domain to its canonical ASCII form: IDNA (UTS #46, STD3 rules, nontransitional)
/// to punycode, lowercase, one trailing dot removed; then every label must be LDH of 1 to 63
/// characters without a leading or trailing hyphen, there must be at least two labels, the
/// whole name at most 253 characters, and the last label not all digits (so IP addresses and
/// `[literals]` fail).
pub fn canonical_domain(s: &str) -> Result<String, IdentifierError> {
    const WHAT: &str = "domain";
    if s.is_empty() {
        return Err(IdentifierError::DomainEmpty);
    }
    if s.len() > MAX_INPUT_LEN {
        return Err(IdentifierError::TooLong {
            what: WHAT,
            len: s.len(),
            max: MAX_DOMAIN,
        });
    }
    check_visible(s, WHAT)?;
    if s.starts_with('[') || s.ends_with(']') {
        return Err(IdentifierError::DomainLiteral);
    }
    let mut ascii = if is_plain_ldh(s) {
        // UTS #46 maps such a name to its lowercase form and nothing else.
        s.to_ascii_lowercase()
    } else {
        let ascii = Uts46::new()
            .to_ascii(
                s.as_bytes(),
                AsciiDenyList::STD3,
                Hyphens::CheckFirstLast,
                DnsLength::Ignore,
            )
            .map_err(|_| IdentifierError::DomainInvalid(snippet(s)))?
            .into_owned();
        // UTS #46 also *maps*: fullwidth letters onto ASCII (`ａcme.com` → `acme.com`), soft
        // hyphens and some joiners to nothing. The upstream stores the string as sent, so a
        // mapped spelling would be decided as one domain and kept as another. Only case may
        // change: the name read back from punycode must be the input, lowercased.
        // Label by label, as the label may also be sent in its punycode form.
        let (back, _) = idna::domain_to_unicode(&ascii);
        let sent = s.strip_suffix('.').unwrap_or(s).to_lowercase();
        // The four UTS 46 deviations — ß, ς, ZWNJ, ZWJ — are kept by IDNA 2008 (`straße.de` is
        // `xn--strae-oqa.de`) and mapped by IDNA 2003's transitional processing, which
        // Python's `idna` codec (and Django's mail code with it) still applies (`strasse.de`;
        // the joiners deleted): two domains for one spelling.
        if sent.contains(['ß', 'ς', '\u{200c}', '\u{200d}']) {
            return Err(IdentifierError::DomainInvalid(snippet(s)));
        }
        let back = back.strip_suffix('.').unwrap_or(&back);
        let plain = ascii.strip_suffix('.').unwrap_or(&ascii);
        let mut sent_labels = sent.split('.');
        let mut back_labels = back.split('.');
        let mut plain_labels = plain.split('.');
        loop {
            match (sent_labels.next(), back_labels.next(), plain_labels.next()) {
                (None, None, None) => break,
                (Some(l), Some(u), Some(a)) if l == u || l == a => {}
                _ => return Err(IdentifierError::DomainInvalid(snippet(s))),
            }
        }
        ascii
    };
    if ascii.ends_with('.') {
        ascii.pop();
    }
    check_ldh(&ascii)?;
    Ok(ascii)
}

/// ASCII letters, digits, hyphens and dots only, and no label that IDNA would decode
/// (`xn--`). For these names the IDNA step is the identity up to case.
fn is_plain_ldh(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && !s
            .split('.')
            .any(|l| l.len() >= 4 && l.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("xn--")))
}

pub(super) fn check_ldh(d: &str) -> Result<(), IdentifierError> {
    if d.len() > MAX_DOMAIN {
        return Err(IdentifierError::TooLong {
            what: "domain",
            len: d.len(),
            max: MAX_DOMAIN,
        });
    }
    let mut labels = 0usize;
    let mut last = "";
    for label in d.split('.') {
        labels += 1;
        last = label;
        if label.is_empty() || label.len() > MAX_LABEL {
            return Err(IdentifierError::DomainLabelLength(snippet(d)));
        }
        if let Some(ch) = label
            .chars()
            .find(|&c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'))
        {
            return Err(IdentifierError::DomainChar {
                domain: snippet(d),
                ch,
            });
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(IdentifierError::DomainHyphen(snippet(d)));
        }
    }
    if labels < 2 {
        return Err(IdentifierError::DomainSingleLabel(snippet(d)));
    }
    if last.bytes().all(|b| b.is_ascii_digit()) {
        return Err(IdentifierError::DomainNumericTld(snippet(d)));
    }
    Ok(())
}
