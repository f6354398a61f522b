//! Identifiers: parsing and normalization of email addresses, phone numbers and web3 wallet
//! addresses into one canonical form each (DESIGN §3).
//!
//! This module owns the rules for what counts as a well-formed identifier. It fails closed:
//! anything an upstream application, a mail server and this gate could read differently
//! (quoted local parts, comments, encoded-words, source routes, invisible characters, domains
//! that do not pass IDNA with STD3 rules) is rejected with an [`IdentifierError`] whose
//! message a user can act on. Nothing here does I/O, and no input makes it panic.
//!
//! Canonical forms:
//! - email: `local@domain`, local part lowercased, domain converted to ASCII (punycode),
//!   lowercased, one trailing dot removed ([`Email::as_str`]);
//! - phone: E.164, e.g. `+12025550123`;
//! - wallet: `0x` followed by 40 lowercase hex digits.
//!
//! [`Email::inbox_key`] additionally folds what reaches the same inbox (sub-addresses, Gmail
//! dots, `googlemail.com`); the block list matches on it.

mod email;
mod phone;

#[cfg(test)]
mod tests;

use std::fmt;

pub use email::{Email, canonical_domain, parse_email};
pub use phone::{parse_phone, parse_region};

/// Longest input (in bytes) any parser looks at; longer input is rejected before any work.
pub(crate) const MAX_INPUT_LEN: usize = 1024;

/// What kind of identifier a value is (or a route expects).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// An email address.
    Email,
    /// A phone number.
    Phone,
    /// A web3 wallet address (`0x` + 40 hex digits).
    Wallet,
}

impl Kind {
    /// The lowercase name used in config and messages: `email`, `phone`, `wallet`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Email => "email",
            Kind::Phone => "phone",
            Kind::Wallet => "wallet",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A parsed identifier in canonical form.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Identifier {
    /// An email address.
    Email(Email),
    /// A phone number in E.164 form (`+12025550123`).
    Phone(String),
    /// A wallet address: `0x` + 40 lowercase hex digits.
    Wallet(String),
}

impl Identifier {
    /// The kind of this identifier.
    pub fn kind(&self) -> Kind {
        match self {
            Identifier::Email(_) => Kind::Email,
            Identifier::Phone(_) => Kind::Phone,
            Identifier::Wallet(_) => Kind::Wallet,
        }
    }

    /// The canonical form.
    pub fn as_str(&self) -> &str {
        match self {
            Identifier::Email(e) => e.as_str(),
            Identifier::Phone(p) => p,
            Identifier::Wallet(w) => w,
        }
    }
}

impl fmt::Display for Identifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Options for [`parse`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParseOptions {
    /// Region for phone numbers not written in international (`+…`) form.
    /// `None`: national numbers are refused; only `+…` (international) input parses.
    pub default_region: Option<phonenumber::country::Id>,
}

impl Default for ParseOptions {
    fn default() -> Self {
        ParseOptions {
            default_region: Some(phonenumber::country::Id::US),
        }
    }
}

/// Why an identifier was rejected. Messages are meant for the person who typed it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentifierError {
    /// Nothing to parse.
    #[error("the {0} is empty")]
    Empty(&'static str),
    /// Input longer than the parser looks at, or a canonical form over its limit.
    #[error("the {what} is too long ({len} characters; at most {max} allowed)")]
    TooLong {
        /// What was too long ("email address", "local part", ...).
        what: &'static str,
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Whitespace or a control character somewhere in the input.
    #[error("the {0} contains whitespace or a control character")]
    Whitespace(&'static str),
    /// An invisible (default-ignorable) character such as a zero-width space.
    #[error("the {what} contains an invisible character (U+{code:04X})")]
    Invisible {
        /// What contained it.
        what: &'static str,
        /// The code point.
        code: u32,
    },
    /// No `@` sign.
    #[error("the email address has no '@' sign")]
    NoAt,
    /// More than one `@` sign.
    #[error("the email address has {0} '@' signs; it must have exactly one")]
    ManyAt(usize),
    /// Nothing before the `@`.
    #[error("the email address has nothing before the '@'")]
    LocalEmpty,
    /// Quoted local part.
    #[error("quoted email addresses (with '\"') are not accepted")]
    Quoted,
    /// A comment in parentheses.
    #[error("email addresses with comments in parentheses are not accepted")]
    Comment,
    /// An RFC 2047 encoded-word (`=?charset?q?...?=`).
    #[error("encoded words ('=?...?=') are not accepted in email addresses")]
    EncodedWord,
    /// A backslash escape.
    #[error("backslashes are not accepted in email addresses")]
    Backslash,
    /// A non-ASCII character in the local part.
    #[error("the part before the '@' must be plain ASCII; found '{0}'")]
    LocalNonAscii(char),
    /// A character outside RFC 5322 atext in the local part.
    #[error("the part before the '@' contains '{0}', which is not allowed")]
    LocalChar(char),
    /// Leading, trailing or doubled dot in the local part.
    #[error("the part before the '@' must not start or end with a dot or have two dots in a row")]
    LocalDots,
    /// Nothing after the `@`.
    #[error("the email address has no domain after the '@'")]
    DomainEmpty,
    /// An address literal such as `[192.0.2.1]`.
    #[error("IP address literals are not accepted as email domains")]
    DomainLiteral,
    /// The domain does not pass IDNA (UTS #46 with STD3 rules).
    #[error("`{0}` is not a valid domain name")]
    DomainInvalid(String),
    /// A character other than letters, digits and hyphens in a label.
    #[error(
        "the domain `{domain}` contains '{ch}'; only letters, digits, hyphens and dots are allowed"
    )]
    DomainChar {
        /// The domain (ASCII form).
        domain: String,
        /// The offending character.
        ch: char,
    },
    /// An empty label (`a..b`, leading dot) or a label over 63 characters.
    #[error("the domain `{0}` has an empty label or a label longer than 63 characters")]
    DomainLabelLength(String),
    /// A label that starts or ends with a hyphen.
    #[error("the domain `{0}` has a label that starts or ends with a hyphen")]
    DomainHyphen(String),
    /// Only one label (`localhost`).
    #[error("the domain `{0}` needs at least two labels, like example.com")]
    DomainSingleLabel(String),
    /// An all-numeric top-level label (an IP address, or not a real TLD).
    #[error("the domain `{0}` ends in a numeric label; IP addresses are not accepted")]
    DomainNumericTld(String),
    /// Letters in a phone number.
    #[error("the phone number contains letters; write it with digits only, like +12025550123")]
    PhoneLetters,
    /// A character that does not belong in a phone number.
    #[error(
        "the phone number contains '{0}'; only digits, spaces, '+', '-', '.', '/' and parentheses are allowed"
    )]
    PhoneChar(char),
    /// `+` somewhere other than the start.
    #[error("a '+' may only appear at the start of a phone number")]
    PhonePlus,
    /// The phone parser found no number.
    #[error("`{0}` is not a phone number")]
    PhoneUnparseable(String),
    /// Parsed, but not a valid number for its region.
    #[error("`{0}` is not a valid phone number (check the country code and the number of digits)")]
    PhoneInvalid(String),
    /// A national number and no `identifiers.default_phone_region` configured.
    #[error(
        "`{0}` is not in international form (+ and country code), and no default phone region is configured"
    )]
    PhoneNeedsRegion(String),
    /// `%` or `!` in the local part: source routing (percent hack, bang path).
    #[error(
        "'{0}' before the '@' is source routing (a relay may forward the mail elsewhere); it is not accepted"
    )]
    SourceRoute(char),
    /// Not `0x` + 40 hex digits.
    #[error("a wallet address must be 0x followed by 40 hex digits")]
    Wallet,
    /// Unknown ISO 3166 region code.
    #[error("`{0}` is not a known two-letter region code (like US or GB)")]
    Region(String),
    /// Auto-detection found nothing that looks like an identifier.
    #[error(
        "`{0}` is not an email address, a phone number (like +12025550123) or a wallet address (0x + 40 hex digits)"
    )]
    Unrecognized(String),
}

/// Parse `input` as an identifier of `kind`, or auto-detect when `kind` is `None`:
/// anything with an `@` is an email, `0x…` is a wallet, anything else a phone number.
pub fn parse(
    input: &str,
    kind: Option<Kind>,
    opts: &ParseOptions,
) -> Result<Identifier, IdentifierError> {
    let kind = match kind {
        Some(k) => k,
        None => detect(input)?,
    };
    match kind {
        Kind::Email => parse_email(input).map(Identifier::Email),
        Kind::Phone => match opts.default_region {
            Some(region) => parse_phone(input, region).map(Identifier::Phone),
            None if input.trim_start().starts_with('+') => {
                parse_phone(input, phonenumber::country::Id::US).map(Identifier::Phone)
            }
            None => Err(IdentifierError::PhoneNeedsRegion(snippet(input))),
        },
        Kind::Wallet => parse_wallet(input).map(Identifier::Wallet),
    }
}

fn detect(input: &str) -> Result<Kind, IdentifierError> {
    if input.contains('@') {
        return Ok(Kind::Email);
    }
    let b = input.as_bytes();
    if b.len() > 2 && b.first() == Some(&b'0') && matches!(b.get(1), Some(b'x' | b'X')) {
        return Ok(Kind::Wallet);
    }
    if input.is_empty() {
        return Err(IdentifierError::Empty("identifier"));
    }
    if !input.chars().any(|c| c.is_ascii_digit()) {
        return Err(IdentifierError::Unrecognized(snippet(input)));
    }
    Ok(Kind::Phone)
}

/// Parse a wallet address: `0x`/`0X` + exactly 40 hex digits; canonical form is lowercase.
pub fn parse_wallet(s: &str) -> Result<String, IdentifierError> {
    let b = s.as_bytes();
    if b.len() != 42 {
        return Err(IdentifierError::Wallet);
    }
    match b.split_at(2) {
        (b"0x" | b"0X", hex) if hex.iter().all(u8::is_ascii_hexdigit) => {
            let mut out = String::with_capacity(42);
            out.push_str("0x");
            out.extend(hex.iter().map(|c| char::from(c.to_ascii_lowercase())));
            Ok(out)
        }
        _ => Err(IdentifierError::Wallet),
    }
}

/// At most 64 characters of `s` for an error message.
pub(crate) fn snippet(s: &str) -> String {
    const MAX: usize = 64;
    match s.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}…", s.get(..i).unwrap_or_default()),
        None => s.to_owned(),
    }
}

/// Reject whitespace, control and invisible (default-ignorable) characters anywhere.
pub(crate) fn check_visible(s: &str, what: &'static str) -> Result<(), IdentifierError> {
    if s.is_ascii() {
        // ASCII has no invisible characters; its whitespace and controls are 0..=0x20, 0x7F.
        return match s.bytes().any(|b| b <= b' ' || b == 0x7f) {
            true => Err(IdentifierError::Whitespace(what)),
            false => Ok(()),
        };
    }
    for c in s.chars() {
        if c.is_whitespace() || c.is_control() {
            return Err(IdentifierError::Whitespace(what));
        }
        if is_invisible(c) {
            return Err(IdentifierError::Invisible {
                what,
                code: u32::from(c),
            });
        }
    }
    Ok(())
}

/// Default-ignorable and format code points that render as nothing (UCD
/// `Default_Ignorable_Code_Point`, plus bidi controls). IDNA would silently drop some of them,
/// which would let `acme\u{200B}.com` pass as `acme.com`.
fn is_invisible(c: char) -> bool {
    matches!(
        u32::from(c),
        0x00AD
            | 0x034F
            | 0x061C
            | 0x115F..=0x1160
            | 0x17B4..=0x17B5
            | 0x180B..=0x180F
            | 0x200B..=0x200F
            | 0x202A..=0x202E
            | 0x2060..=0x206F
            | 0x3164
            | 0xFE00..=0xFE0F
            | 0xFEFF
            | 0xFFA0
            | 0xFFF0..=0xFFF8
            | 0x1BCA0..=0x1BCA3
            | 0x1D173..=0x1D17A
            | 0xE0000..=0xE0FFF
    )
}
