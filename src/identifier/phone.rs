//! Phone numbers: a strict character pre-check, then `phonenumber` (libphonenumber metadata)
//! for parsing and validation; canonical form is E.164.

use phonenumber::Mode;
use phonenumber::country::Id;

use super::{IdentifierError, snippet};

/// Longest phone input (in bytes) we hand to the parser.
const MAX_PHONE_INPUT: usize = 32;

/// Parse a phone number, written internationally (`+44 20 7946 0958`) or nationally for
/// `region` (`(202) 555-0123`), into E.164 (`+12025550123`). The number must be valid for its
/// region. Letters (vanity numbers, `ext.`, `tel:`) are rejected, as is anything over 32
/// characters.
pub fn parse_phone(s: &str, region: Id) -> Result<String, IdentifierError> {
    const WHAT: &str = "phone number";
    if s.is_empty() {
        return Err(IdentifierError::Empty(WHAT));
    }
    if s.len() > MAX_PHONE_INPUT {
        return Err(IdentifierError::TooLong {
            what: WHAT,
            len: s.len(),
            max: MAX_PHONE_INPUT,
        });
    }
    for (i, c) in s.char_indices() {
        match c {
            '0'..='9' | ' ' | '-' | '.' | '(' | ')' | '/' => {}
            '+' if i == 0 => {}
            '+' => return Err(IdentifierError::PhonePlus),
            c if c.is_alphabetic() => return Err(IdentifierError::PhoneLetters),
            c if c.is_whitespace() || c.is_control() => {
                return Err(IdentifierError::Whitespace(WHAT));
            }
            c => return Err(IdentifierError::PhoneChar(c)),
        }
    }
    if !s.bytes().any(|b| b.is_ascii_digit()) {
        return Err(IdentifierError::PhoneUnparseable(snippet(s)));
    }
    let bad = || IdentifierError::PhoneInvalid(snippet(s));
    // phonenumber 0.3 applies the *given* region's metadata (national prefix) even to a number
    // written with another country code, so `+33 1 42 68 53 00` with region US loses its `1`.
    // International input is therefore parsed without a region, national input must stay in
    // the region's country code, and the result must parse back to itself.
    let international = s.starts_with('+');
    let number = phonenumber::parse((!international).then_some(region), s)
        .map_err(|_| IdentifierError::PhoneUnparseable(snippet(s)))?;
    if number.extension().is_some() || !phonenumber::is_valid(&number) {
        return Err(bad());
    }
    if !international {
        let region_code = phonenumber::metadata::DATABASE
            .by_id(region.as_ref())
            .map(|m| m.country_code());
        if region_code != Some(number.code().value()) {
            return Err(bad());
        }
    }
    let e164 = number.format().mode(Mode::E164).to_string();
    if international && s == e164 {
        // Already E.164: parsing it back would repeat the parse above exactly.
        return Ok(e164);
    }
    match phonenumber::parse(None, &e164) {
        Ok(again)
            if phonenumber::is_valid(&again)
                && again.format().mode(Mode::E164).to_string() == e164 =>
        {
            Ok(e164)
        }
        _ => Err(bad()),
    }
}

/// Parse a two-letter ISO 3166 region code such as `US` or `gb` (case-insensitive).
pub fn parse_region(s: &str) -> Result<Id, IdentifierError> {
    if s.len() != 2 || !s.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Err(IdentifierError::Region(snippet(s)));
    }
    s.to_ascii_uppercase()
        .parse::<Id>()
        .map_err(|_| IdentifierError::Region(snippet(s)))
}
