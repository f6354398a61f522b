//! Reading a Magic API request: the JSON body (`target_client_id`, `emails.allow_list`,
//! `emails.block_list`), where each list is an array of strings or one pasted string, and
//! validating its entries with the same grammar and normalization as every other list.
//!
//! Positions in errors: `allow_list[3]` for the 4th array element (0-based, as in JSON),
//! `allow_list line 4` for a pasted string (1-based, as in an editor). Blank entries and
//! duplicates are ignored (duplicates are counted); every malformed entry is reported.

use std::collections::HashSet;

use serde_json::{Map, Value, json};

use super::error::MagicError;
use crate::identifier::{Identifier, ParseOptions};
use crate::lists::{Entry, ListKind, parse_entry, split_entries};
use crate::store::{IdentifierType, NewEntry};

/// One entry as the client wrote it, with where it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// `[3]` or `line 4`.
    pub position: String,
    /// The text (array element trimmed, or a token of a pasted string).
    pub text: String,
}

/// A parsed body.
#[derive(Debug, Default)]
pub struct AccessRequest {
    /// `target_client_id`, if present.
    pub target_client_id: Option<String>,
    /// `emails.allow_list`, if present.
    pub allow: Option<Vec<Item>>,
    /// `emails.block_list`, if present.
    pub block: Option<Vec<Item>>,
}

impl AccessRequest {
    /// The list fields present, allow first.
    pub fn lists(&self) -> impl Iterator<Item = (ListKind, &Vec<Item>)> {
        [
            (ListKind::Allow, &self.allow),
            (ListKind::Block, &self.block),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| (k, v)))
    }
}

/// `allow_list` / `block_list`.
pub fn field_name(list: ListKind) -> &'static str {
    match list {
        ListKind::Allow => "allow_list",
        ListKind::Block => "block_list",
    }
}

/// Parses a body; an empty body is an empty request.
pub fn parse(body: &[u8]) -> Result<AccessRequest, MagicError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(AccessRequest::default());
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| MagicError::BadRequest(format!("The body is not valid JSON: {e}.")))?;
    let Value::Object(mut top) = value else {
        return Err(MagicError::BadRequest(
            "The body must be a JSON object: {\"target_client_id\": \"…\", \"emails\": {\"allow_list\": […], \"block_list\": […]}}.".into(),
        ));
    };
    let target_client_id = match top.remove("target_client_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(_) => {
            return Err(MagicError::BadRequest(
                "target_client_id must be a string.".into(),
            ));
        }
    };
    let mut req = AccessRequest {
        target_client_id,
        ..AccessRequest::default()
    };
    match top.remove("emails") {
        None | Some(Value::Null) => {}
        Some(Value::Object(mut emails)) => {
            req.allow = list_field(&mut emails, ListKind::Allow)?;
            req.block = list_field(&mut emails, ListKind::Block)?;
            unknown(&emails, "emails.")?;
        }
        Some(_) => {
            return Err(MagicError::BadRequest(
                "emails must be an object with allow_list and/or block_list.".into(),
            ));
        }
    }
    unknown(&top, "")?;
    Ok(req)
}

fn unknown(rest: &Map<String, Value>, prefix: &str) -> Result<(), MagicError> {
    match rest.keys().next() {
        None => Ok(()),
        Some(k) => Err(MagicError::BadRequest(format!(
            "{prefix}{} is not a field of this API (expected target_client_id, emails.allow_list, emails.block_list); nothing was changed.",
            crate::identifier::snippet(k)
        ))),
    }
}

fn list_field(
    emails: &mut Map<String, Value>,
    list: ListKind,
) -> Result<Option<Vec<Item>>, MagicError> {
    let name = field_name(list);
    match emails.remove(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(
            split_entries(&text)
                .into_iter()
                .map(|t| Item {
                    position: format!("line {}", t.line),
                    text: t.text.to_owned(),
                })
                .collect(),
        )),
        Some(Value::Array(values)) => {
            let mut items = Vec::with_capacity(values.len());
            for (i, v) in values.into_iter().enumerate() {
                let Value::String(s) = v else {
                    return Err(MagicError::BadRequest(format!(
                        "emails.{name}[{i}] is not a string; a list is an array of strings or one string of entries separated by spaces, commas or line breaks."
                    )));
                };
                let t = s.trim();
                if !t.is_empty() {
                    items.push(Item {
                        position: format!("[{i}]"),
                        text: t.to_owned(),
                    });
                }
            }
            Ok(Some(items))
        }
        Some(_) => Err(MagicError::BadRequest(format!(
            "emails.{name} must be an array of strings or a string."
        ))),
    }
}

/// A list's entries, validated and normalized.
#[derive(Debug, Default)]
pub struct Validated {
    /// Distinct entries, in request order.
    pub entries: Vec<NewEntry>,
    /// How many repeated an earlier entry (after normalization) and were dropped.
    pub duplicates: usize,
}

/// Clerk's `identifier_type` of an entry.
pub fn identifier_type(e: &Entry) -> IdentifierType {
    match e {
        Entry::Exact(Identifier::Phone(_)) => IdentifierType::PhoneNumber,
        Entry::Exact(Identifier::Wallet(_)) => IdentifierType::Web3Wallet,
        _ => IdentifierType::EmailAddress,
    }
}

/// Validates every list of `req`; all malformed entries of all lists at once.
pub fn validate(
    req: &AccessRequest,
    opts: &ParseOptions,
) -> Result<Vec<(ListKind, Validated)>, MagicError> {
    let mut out = Vec::new();
    let mut rejected = Vec::new();
    let mut named = Vec::new();
    for (list, items) in req.lists() {
        let name = field_name(list);
        let mut v = Validated::default();
        let mut seen = HashSet::with_capacity(items.len());
        for item in items {
            match parse_entry(&item.text, list, opts) {
                Ok(entry) => {
                    let key = entry.key(list);
                    if !seen.insert(key.clone()) {
                        v.duplicates += 1;
                        continue;
                    }
                    v.entries.push(NewEntry {
                        identifier: entry.to_string(),
                        key,
                        identifier_type: identifier_type(&entry),
                    });
                }
                Err(error) => {
                    let shown = crate::identifier::snippet(&item.text);
                    if named.len() < 5 {
                        named.push(format!("{name} {}: `{shown}`: {error}", item.position));
                    }
                    rejected.push(json!({
                        "list": name,
                        "position": item.position,
                        "entry": shown,
                        "error": error.to_string(),
                    }));
                }
            }
        }
        out.push((list, v));
    }
    if rejected.is_empty() {
        return Ok(out);
    }
    let more = rejected.len().saturating_sub(named.len());
    let tail = if more > 0 {
        format!("; and {more} more (see data.rejected)")
    } else {
        String::new()
    };
    Err(MagicError::MalformedEntries {
        message: format!(
            "{} malformed entr{}; nothing was changed: {}{tail}",
            rejected.len(),
            if rejected.len() == 1 { "y" } else { "ies" },
            named.join("; ")
        ),
        rejected,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrays_strings_and_positions() {
        let r = parse(
            br#"{"target_client_id":"c","emails":{"allow_list":["A@X.com"," ","*@acme.com"],"block_list":"email\nmallory@x.com, eve@x.com\n\n\"q@x.com\""}}"#,
        )
        .unwrap();
        assert_eq!(r.target_client_id.as_deref(), Some("c"));
        let allow = r.allow.as_ref().unwrap();
        assert_eq!(
            allow
                .iter()
                .map(|i| i.position.as_str())
                .collect::<Vec<_>>(),
            ["[0]", "[2]"]
        );
        let block = r.block.as_ref().unwrap();
        assert_eq!(
            block
                .iter()
                .map(|i| (i.position.as_str(), i.text.as_str()))
                .collect::<Vec<_>>(),
            [
                ("line 2", "mallory@x.com"),
                ("line 2", "eve@x.com"),
                ("line 4", "q@x.com")
            ]
        );
        let v = validate(&r, &ParseOptions::default()).unwrap();
        assert_eq!(v[0].1.entries[0].identifier, "a@x.com");
        assert_eq!(v[0].1.entries[1].identifier, "*@acme.com");
    }

    #[test]
    fn every_malformed_entry_is_named_with_its_position() {
        let r = parse(
            br#"{"emails":{"allow_list":["ok@x.com","bad@@x","x.com","ok@x.com","OK@x.com"],"block_list":"a@x.com\n\nnope@"}}"#,
        )
        .unwrap();
        let e = validate(&r, &ParseOptions::default()).unwrap_err();
        let MagicError::MalformedEntries { message, rejected } = &e else {
            panic!("{e:?}")
        };
        assert_eq!(rejected.len(), 3, "{rejected:?}");
        assert!(message.contains("allow_list [1]: `bad@@x`"), "{message}");
        assert!(message.contains("allow_list [2]: `x.com`"), "{message}");
        assert!(message.contains("block_list line 3: `nope@`"), "{message}");
        assert!(message.contains("nothing was changed"), "{message}");

        let r =
            parse(br#"{"emails":{"allow_list":["ok@x.com","OK@x.com"," ok@X.COM "]}}"#).unwrap();
        let v = validate(&r, &ParseOptions::default()).unwrap();
        assert_eq!((v[0].1.entries.len(), v[0].1.duplicates), (1, 2));
    }

    #[test]
    fn bad_shapes_are_bad_requests_never_panics() {
        for body in [
            &b"[1]"[..],
            b"{nope",
            br#"{"target_client_id":1}"#,
            br#"{"emails":[]}"#,
            br#"{"emails":{"allow_list":[1]}}"#,
            br#"{"emails":{"allow_list":{}}}"#,
            br#"{"emails":{"allowlist":[]}}"#,
            br#"{"client":"x"}"#,
            b"\xff\xfe",
        ] {
            let e = parse(body).unwrap_err();
            assert_eq!(e.code(), "BAD_REQUEST", "{}", String::from_utf8_lossy(body));
        }
        assert!(parse(b"").unwrap().allow.is_none());
        assert!(parse(b"  \n").unwrap().block.is_none());
    }
}
