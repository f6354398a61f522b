//! List text (files, pasted lists): tokenizing into entries with line numbers, and parsing
//! them, reporting every bad line instead of dropping it silently.

use crate::identifier::ParseOptions;

use super::{Entry, EntryError, ListKind, parse_entry};

/// One entry's text and its 1-based line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Token<'a> {
    /// 1-based line number.
    pub line: u32,
    /// The entry text, quotes stripped.
    pub text: &'a str,
}

/// A rejected entry in list text.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: `{text}`: {error}")]
pub struct LineError {
    /// 1-based line number.
    pub line: u32,
    /// The entry as written (cut to 120 characters).
    pub text: String,
    /// Why it was rejected.
    pub error: EntryError,
}

/// Header words skipped on the first non-comment line (case-insensitive).
const HEADERS: &[&str] = &[
    "email",
    "emails",
    "email_address",
    "email_addresses",
    "emailaddress",
    "e-mail",
    "mail",
    "address",
    "identifier",
    "identifiers",
    "entry",
    "entries",
    "phone",
    "phones",
    "phone_number",
    "phonenumber",
    "wallet",
    "wallets",
    "wallet_address",
    "domain",
    "domains",
];

/// Separators between fields; spaces and tabs separate too, except inside a phone number.
fn is_field_separator(c: char) -> bool {
    matches!(c, ',' | ';' | '\r' | '\u{b}' | '\u{c}')
}

/// The entries of one field (text between field separators): split at spaces and tabs, except
/// that a field of phone numbers written with spaces (`+44 20 7946 0958`) is split only before
/// each `+`: its pieces alone would be other numbers (`2079460958` is a US number).
fn field_tokens(field: &str) -> impl Iterator<Item = &str> {
    // A comment (a token starting with `#`) is left to the caller, which stops there.
    let b = field.as_bytes();
    let cut = memchr::memchr_iter(b'#', b)
        .find(|&i| i == 0 || matches!(b[i - 1], b' ' | b'\t'))
        .unwrap_or(b.len());
    let (head, comment) = field.split_at(cut);
    let t = head.trim_matches([' ', '\t']);
    let phones = strip_quotes(t).starts_with('+')
        && t.bytes()
            .all(|b| b.is_ascii_digit() || b"+()-. \t\"".contains(&b));
    let (numbers, words) = if phones {
        (Some(Phones { rest: t }), None)
    } else {
        (None, Some(head.split([' ', '\t'])))
    };
    numbers
        .into_iter()
        .flatten()
        .chain(words.into_iter().flatten())
        .chain(comment.split([' ', '\t']))
}

/// The phone numbers of a field of them: a new one starts at each `+` after a space or tab.
struct Phones<'a> {
    rest: &'a str,
}

impl<'a> Iterator for Phones<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let rest = self.rest.trim_start_matches([' ', '\t']);
        if rest.is_empty() {
            return None;
        }
        let b = rest.as_bytes();
        let end = (1..b.len())
            .find(|&i| b[i] == b'+' && matches!(b[i - 1], b' ' | b'\t'))
            .unwrap_or(b.len());
        let (number, tail) = rest.split_at(end);
        self.rest = tail;
        Some(number.trim_end_matches([' ', '\t']))
    }
}

/// Split list text into entries: one per line or CSV; commas, semicolons, spaces and tabs
/// also separate (spaces not inside a phone number that starts with `+`). A `#` at the start
/// of a token starts a comment to the end of the line (a `#` inside a token is part of it, as
/// in `a#b@x.com`). Blank lines are skipped, surrounding
/// double quotes stripped, and header words (`email`, `phone`, …) on the first line that has
/// any token are skipped. A UTF-8 byte-order mark at the start is ignored.
pub fn split_entries(text: &str) -> Vec<Token<'_>> {
    let mut out = Vec::new();
    let mut splitter = Splitter::default();
    for (n, raw) in text.split('\n').enumerate() {
        let line = u32::try_from(n + 1).unwrap_or(u32::MAX);
        splitter.line(line, raw, |t| out.push(t));
    }
    out
}

/// [`split_entries`] one line at a time, for text read as a stream: feed every line (without
/// its `\n`) in order, starting with line 1.
#[derive(Debug, Default)]
pub struct Splitter {
    seen_content: bool,
}

impl Splitter {
    /// A splitter that continues after text of which some line had an entry (or, when
    /// `seen_content` is false, only blank and comment lines): for text split into parts
    /// handled apart, each starting where the previous one ended.
    pub fn resume(seen_content: bool) -> Splitter {
        Splitter { seen_content }
    }

    /// Whether a line fed so far had an entry or a header (the header rule is done with).
    pub fn seen_content(&self) -> bool {
        self.seen_content
    }

    /// Calls `emit` with each entry of line number `line` (`raw`, without the `\n`).
    pub fn line<'a>(&mut self, line: u32, raw: &'a str, mut emit: impl FnMut(Token<'a>)) {
        let raw = if line == 1 {
            raw.strip_prefix('\u{feff}').unwrap_or(raw)
        } else {
            raw
        };
        let tokens = raw
            .split(is_field_separator)
            .flat_map(field_tokens)
            .take_while(|t| !t.starts_with('#'))
            .map(strip_quotes)
            .filter(|t| !t.is_empty());
        if self.seen_content {
            tokens.for_each(|text| emit(Token { line, text }));
            return;
        }
        for text in tokens {
            self.seen_content = true;
            if !HEADERS.iter().any(|h| h.eq_ignore_ascii_case(text)) {
                emit(Token { line, text });
            }
        }
    }
}

fn strip_quotes(tok: &str) -> &str {
    let tok = tok.strip_prefix('"').unwrap_or(tok);
    tok.strip_suffix('"').unwrap_or(tok)
}

/// Parse every entry in `text` for `list`; bad entries are returned as [`LineError`]s.
/// Duplicates are not errors (the matcher keeps the first).
pub fn parse_entries(
    text: &str,
    list: ListKind,
    opts: &ParseOptions,
) -> (Vec<(Entry, u32)>, Vec<LineError>) {
    let mut entries = Vec::new();
    let mut errors = Vec::new();
    for t in split_entries(text) {
        match parse_entry(t.text, list, opts) {
            Ok(e) => entries.push((e, t.line)),
            Err(error) => errors.push(LineError {
                line: t.line,
                text: cut(t.text, 120),
                error,
            }),
        }
    }
    (entries, errors)
}

/// `s` cut to `max` characters (with `…` when cut): what a warning quotes of a line.
pub fn cut(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", s.get(..i).unwrap_or_default()),
        None => s.to_owned(),
    }
}
