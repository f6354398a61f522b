//! What the allowlist and blocklist endpoints share: validating a new identifier, the
//! resource shape, listings that merge the store with the config/list-file entries, and
//! deletion.
//!
//! Writes follow DESIGN §5: validate → durable insert/delete in the store, whose writer thread
//! applies each commit to the live gate in commit order (the commit hook installed by
//! `app::ControlPlane`) → respond. A 200 therefore means the gate already enforces the change.
//!
//! Listings show store entries first (newest first), then the config and list-file entries,
//! whose ids are derived from their source and entry (`alid_00000…`/`blid_00000…`, stable
//! across restarts) and whose timestamps are the snapshot's build time. Those entries cannot be
//! deleted here: 422 `form_param_value_invalid` naming the file to edit.

use serde::Serialize;

use super::{derived_id, id_prefix, object_name, store_error, unix_ms};
use crate::admin::AdminState;
use crate::admin::error::{ClerkError, ClerkErrors};
use crate::identifier::{Identifier, ParseOptions};
use crate::lists::{Entry, EntryError, ListKind, Source, SourceKind, parse_entry};
use crate::snapshot::Snapshot;
use crate::store::{Channel, IdentifierType, NewEntry, NewInvitation, StoreError, StoredEntry};

const PARAM: &str = "identifier";

const GENERIC_FORMAT: &str = "identifier must be either a valid email address, a valid phone number according to E.164 international standard or a valid web3 wallet.";
const PHONE_FORMAT: &str =
    "identifier must be a valid phone number according to E.164 international standard.";
const WALLET_FORMAT: &str = "identifier must be a valid web3 wallet address that starts with 0x and contains 40 hexadecimal characters.";
const NOTIFY_DISALLOWED: &str =
    "`notify` isn't allowed when `identifier` is an email domain or a web3 wallet.";

/// An allowlist or blocklist identifier as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Resource {
    pub object: &'static str,
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invitation_id: Option<String>,
    pub identifier: String,
    pub identifier_type: IdentifierType,
    pub instance_id: String,
    pub created_at: i64,
    pub updated_at: i64,
}

/// `DeletedObject`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Deleted {
    pub object: &'static str,
    pub id: String,
    pub deleted: bool,
}

/// `{data, total_count}`.
#[derive(Debug, Serialize)]
pub struct Page {
    pub data: Vec<Resource>,
    pub total_count: usize,
}

impl Resource {
    fn stored(e: StoredEntry, instance_id: &str) -> Resource {
        Resource {
            object: object_name(e.list),
            id: e.id,
            invitation_id: e.invitation_id,
            identifier: e.identifier,
            identifier_type: e.identifier_type,
            instance_id: instance_id.to_owned(),
            created_at: e.created_at,
            updated_at: e.updated_at,
        }
    }
}

/// Clerk's identifier grammar on top of [`parse_entry`]: emails, `*@domain`, `*@*.domain`
/// (Clerk: blocklist only; idgate also on the allowlist), E.164 phones (leading `+`), wallets.
/// A bare domain or a national phone number is a format error, as in Clerk.
pub fn parse_identifier(
    s: &str,
    list: ListKind,
    opts: &ParseOptions,
) -> Result<(Entry, IdentifierType), ClerkError> {
    let t = s.trim_matches(|c: char| c.is_ascii_whitespace());
    let format = |long_message: &str| ClerkError::ParamFormatInvalid {
        param: PARAM.into(),
        long_message: long_message.to_owned(),
    };
    let expected = if t.starts_with("*@") || t.contains('@') {
        IdentifierType::EmailAddress
    } else if t.starts_with("0x") || t.starts_with("0X") {
        IdentifierType::Web3Wallet
    } else if t.starts_with('+') {
        IdentifierType::PhoneNumber
    } else {
        return Err(format(GENERIC_FORMAT));
    };
    let entry = parse_entry(t, list, opts).map_err(|e| match (expected, e) {
        (IdentifierType::PhoneNumber, _) => format(PHONE_FORMAT),
        (IdentifierType::Web3Wallet, _) => format(WALLET_FORMAT),
        (_, EntryError::Wildcard) => format(&format!(
            "{GENERIC_FORMAT} Wildcards are accepted only as *@example.com (that domain) or *@*.example.com (its subdomains)."
        )),
        (_, _) => format(GENERIC_FORMAT),
    })?;
    let got = match &entry {
        Entry::Exact(Identifier::Email(_)) | Entry::Domain(_) | Entry::Subdomains(_) => {
            IdentifierType::EmailAddress
        }
        Entry::Exact(Identifier::Phone(_)) => IdentifierType::PhoneNumber,
        Entry::Exact(Identifier::Wallet(_)) => IdentifierType::Web3Wallet,
    };
    if got != expected {
        return Err(format(GENERIC_FORMAT));
    }
    Ok((entry, got))
}

/// The validated create request.
#[derive(Debug)]
pub struct CreateRequest {
    pub identifier: String,
    pub notify: Option<bool>,
}

/// POST: validate, check duplicates (store and config/files), insert, apply, answer.
pub async fn create(
    st: &AdminState,
    list: ListKind,
    req: CreateRequest,
) -> Result<Resource, ClerkErrors> {
    let snap = st.snapshots.load_full();
    let (entry, identifier_type) = parse_identifier(&req.identifier, list, &snap.identifiers)?;
    // `notify: true` on an email or phone: the entry, an invitation and its delivery in one
    // transaction; refused (nothing written) when that channel cannot be delivered.
    let invite = if req.notify == Some(true) {
        let person = match &entry {
            Entry::Exact(id @ (Identifier::Email(_) | Identifier::Phone(_))) => Some(id),
            _ => None,
        };
        let Some(person) = person else {
            return Err(ClerkError::ConditionalParamDisallowed {
                param: "notify".into(),
                long_message: NOTIFY_DISALLOWED.into(),
            }
            .into());
        };
        let cfg = st.invitations.as_deref();
        let kind = person.kind();
        let channel = Channel::for_type(identifier_type);
        match channel {
            Some(channel) if cfg.is_some_and(|c| c.can_deliver(kind)) => Some(NewInvitation {
                identifier: person.as_str().to_owned(),
                identifier_type,
                public_metadata: serde_json::Value::Object(serde_json::Map::new()),
                redirect_url: None,
                expires_at: super::invitations::expires_at(None, cfg),
                ignore_existing: false,
                deliver: Some(channel),
            }),
            _ => {
                return Err(ClerkError::ParamValueInvalid {
                    param: "notify".into(),
                    long_message: super::invitations::delivery_unavailable(kind, cfg),
                }
                .into());
            }
        }
    } else {
        None
    };
    let key = entry.key(list);
    let display = entry.to_string();
    if let Some((existing, source)) = config_matcher(&snap, list).get_by_key(&key) {
        return Err(ClerkError::Duplicate {
            list,
            long_message: format!(
                "the identifier {display} already exists (as {existing}, from {}); it is managed there, not through the API",
                source.describe(list)
            ),
        }
        .into());
    }
    // `lists.max_entries` caps each list across config, files and the store. (Concurrent
    // creates may overshoot by their number in flight; the Magic API's bulk calls check inside
    // the store transaction.)
    let held = snap.config_list(list).len() + snap.store.read(list).len();
    if held >= snap.max_entries {
        return Err(ClerkError::ParamValueInvalid {
            param: "identifier".into(),
            long_message: format!(
                "the {list} list already holds {held} entries, the limit set by lists.max_entries ({}); raise it in the config or remove entries first",
                snap.max_entries
            ),
        }
        .into());
    }
    let new = NewEntry {
        identifier: display.clone(),
        key,
        identifier_type,
    };
    let inserted = match invite {
        Some(inv) => st.store.insert_invited(new, inv).await.map(|(e, _)| e),
        None => st.store.insert(list, new).await,
    };
    let stored = match inserted {
        Ok(s) => s,
        Err(StoreError::Duplicate { existing, .. }) => {
            let long_message = if existing == display {
                format!("the identifier {display} already exists")
            } else {
                format!("the identifier {display} already exists (as {existing})")
            };
            return Err(ClerkError::Duplicate { list, long_message }.into());
        }
        Err(e) => return Err(store_error(list, e).into()),
    };
    // The store's commit hook already applied it to the live gate.
    Ok(Resource::stored(stored, &st.instance_id()))
}

/// The config/list-file matcher of `list` in `snap`.
fn config_matcher(snap: &Snapshot, list: ListKind) -> &crate::snapshot::ListLayers {
    snap.config_list(list)
}

/// The stable id of a config/list-file entry.
pub fn config_entry_id(list: ListKind, display: &str, source: &Source) -> String {
    let origin = match &source.kind {
        SourceKind::Inline => "config",
        SourceKind::File { path } => path,
        SourceKind::Store => "store",
    };
    derived_id(id_prefix(list), &[list.as_str(), origin, display])
}

fn type_of_display(display: &str) -> IdentifierType {
    if display.contains('@') {
        IdentifierType::EmailAddress
    } else if display.starts_with("0x") {
        IdentifierType::Web3Wallet
    } else {
        IdentifierType::PhoneNumber
    }
}

/// One page (or everything, `limit: None`) of store entries followed by config/file entries;
/// the second value is the total over both.
pub async fn list(
    st: &AdminState,
    list: ListKind,
    limit: Option<usize>,
    offset: usize,
) -> Result<(Vec<Resource>, usize), ClerkErrors> {
    let snap = st.snapshots.load_full();
    let (rows, store_total) = st
        .store
        .list(list, limit, offset)
        .await
        .map_err(|e| store_error(list, e))?;
    let matcher = config_matcher(&snap, list);
    let total = store_total.saturating_add(matcher.len());
    let instance_id = st.instance_id();
    let mut out: Vec<Resource> = rows
        .into_iter()
        .map(|e| Resource::stored(e, &instance_id))
        .collect();
    let room = limit.map_or(usize::MAX, |l| l.saturating_sub(out.len()));
    if room > 0 {
        let at = unix_ms(snap.built_at);
        let skip = offset.saturating_sub(store_total);
        out.extend(
            matcher
                .iter()
                .skip(skip)
                .take(room)
                .map(|(display, source)| Resource {
                    object: object_name(list),
                    id: config_entry_id(list, &display, &source),
                    invitation_id: None,
                    identifier_type: type_of_display(&display),
                    identifier: display,
                    instance_id: instance_id.clone(),
                    created_at: at,
                    updated_at: at,
                }),
        );
    }
    Ok((out, total))
}

/// DELETE: a store entry is removed (and the gate updated); a config/file entry is refused
/// naming its source; anything else is 404.
pub async fn delete(st: &AdminState, list: ListKind, id: &str) -> Result<Deleted, ClerkErrors> {
    let not_found = || ClerkError::IdentifierNotFound(crate::identifier::snippet(id));
    if !id.starts_with(id_prefix(list)) {
        return Err(not_found().into());
    }
    match st.store.delete(list, id).await {
        Ok(removed) => Ok(Deleted {
            object: object_name(list),
            id: removed.id,
            deleted: true,
        }),
        Err(StoreError::NotFound(_)) => {
            let snap = st.snapshots.load_full();
            let found = config_matcher(&snap, list)
                .iter()
                .find(|(display, source)| config_entry_id(list, display, source) == id);
            match found {
                Some((display, source)) => Err(ClerkError::ParamValueInvalid {
                    param: "identifier_id".into(),
                    long_message: read_only_message(list, &display, &source),
                }
                .into()),
                None => Err(not_found().into()),
            }
        }
        Err(e) => Err(store_error(list, e).into()),
    }
}

fn read_only_message(list: ListKind, display: &str, source: &Source) -> String {
    let what = match &source.kind {
        SourceKind::File { path } => format!("the list file {path}"),
        _ => format!("the config file (lists.{list})"),
    };
    format!(
        "{display} comes from {} and cannot be deleted through the API; remove it from {what} instead (idgate reloads it automatically).",
        source.describe(list)
    )
}

/// The list endpoints' query: `paginated`, `limit`, `offset` (anything else is ignored, as
/// the SDKs send extra keys).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ListQuery {
    /// `paginated=true` (exactly `true`).
    pub paginated: bool,
    limit: Option<String>,
    offset: Option<String>,
}

/// Largest `limit` (CONTRACT §1).
pub const MAX_LIMIT: usize = 500;

impl ListQuery {
    /// Reads a raw query string (first occurrence of each key wins).
    pub fn parse(raw: Option<&str>) -> ListQuery {
        let mut q = ListQuery::default();
        let mut seen_paginated = false;
        for (k, v) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
            match &*k {
                "paginated" if !seen_paginated => {
                    seen_paginated = true;
                    q.paginated = v == "true";
                }
                "limit" if q.limit.is_none() => q.limit = Some(v.into_owned()),
                "offset" if q.offset.is_none() => q.offset = Some(v.into_owned()),
                _ => {}
            }
        }
        q
    }

    /// `limit`, 1..=500, if given.
    pub fn limit(&self) -> Result<Option<usize>, ClerkError> {
        let Some(raw) = &self.limit else {
            return Ok(None);
        };
        let n = int_param("limit", raw)?;
        match usize::try_from(n) {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(Some(n)),
            _ => Err(ClerkError::ParamValueInvalid {
                param: "limit".into(),
                long_message: format!("limit must be between 1 and {MAX_LIMIT}."),
            }),
        }
    }

    /// `offset`, ≥ 0, default 0.
    pub fn offset(&self) -> Result<usize, ClerkError> {
        let Some(raw) = &self.offset else {
            return Ok(0);
        };
        let n = int_param("offset", raw)?;
        usize::try_from(n).map_err(|_| ClerkError::ParamValueInvalid {
            param: "offset".into(),
            long_message: "offset must be greater than or equal to 0.".into(),
        })
    }
}

fn int_param(name: &str, raw: &str) -> Result<i64, ClerkError> {
    raw.trim()
        .parse::<i64>()
        .map_err(|_| ClerkError::QueryValueInvalid {
            param: name.into(),
            long_message: format!(
                "{name} must be an integer; got `{}`.",
                crate::identifier::snippet(raw)
            ),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn parse_identifier_table() {
        let opts = ParseOptions::default();
        use IdentifierType::*;
        let ok: &[(&str, ListKind, &str, IdentifierType)] = &[
            (
                "Alice@Example.com",
                ListKind::Allow,
                "alice@example.com",
                EmailAddress,
            ),
            (" bob@x.com ", ListKind::Block, "bob@x.com", EmailAddress),
            (
                "*@Example.com",
                ListKind::Allow,
                "*@example.com",
                EmailAddress,
            ),
            (
                "*@*.example.com",
                ListKind::Block,
                "*@*.example.com",
                EmailAddress,
            ),
            (
                "*@*.example.com",
                ListKind::Allow,
                "*@*.example.com",
                EmailAddress,
            ),
            (
                "+1 202-555-0123",
                ListKind::Allow,
                "+12025550123",
                PhoneNumber,
            ),
            (
                "0xABCDEFabcdef0123456789012345678901234567",
                ListKind::Block,
                "0xabcdefabcdef0123456789012345678901234567",
                Web3Wallet,
            ),
        ];
        for (input, list, want, ty) in ok {
            let (entry, got_ty) =
                parse_identifier(input, *list, &opts).unwrap_or_else(|e| panic!("{input}: {e:?}"));
            assert_eq!(entry.to_string(), *want, "{input}");
            assert_eq!(got_ty, *ty, "{input}");
        }
        let bad: &[(&str, ListKind, &str)] = &[
            ("x.com", ListKind::Block, GENERIC_FORMAT),
            ("x.com", ListKind::Allow, GENERIC_FORMAT),
            ("2025550123", ListKind::Allow, GENERIC_FORMAT),
            ("", ListKind::Allow, GENERIC_FORMAT),
            ("alice", ListKind::Allow, GENERIC_FORMAT),
            ("a@@x.com", ListKind::Allow, GENERIC_FORMAT),
            ("+1", ListKind::Allow, PHONE_FORMAT),
            ("+1abc", ListKind::Allow, PHONE_FORMAT),
            ("0x12", ListKind::Block, WALLET_FORMAT),
            ("*@", ListKind::Block, GENERIC_FORMAT),
        ];
        for (input, list, msg) in bad {
            let e = parse_identifier(input, *list, &opts).unwrap_err();
            assert_eq!(e.code(), "form_param_format_invalid", "{input}");
            assert_eq!(e.long_message(), *msg, "{input}");
            assert_eq!(
                e.meta().get("param_name").and_then(|v| v.as_str()),
                Some("identifier")
            );
        }
        let e = parse_identifier("a*@x.com", ListKind::Allow, &opts).unwrap_err();
        assert!(e.long_message().contains("*@*.example.com"), "{e:?}");
    }

    #[test]
    fn config_ids_and_read_only_messages_name_the_source() {
        let file = Source {
            kind: SourceKind::File {
                path: Arc::from("lists/block.txt"),
            },
            line: Some(3),
        };
        let moved = Source {
            kind: file.kind.clone(),
            line: Some(9),
        };
        let inline = Source {
            kind: SourceKind::Inline,
            line: None,
        };
        let a = config_entry_id(ListKind::Block, "a@x.com", &file);
        assert!(a.starts_with("blid_00000"), "{a}");
        assert_eq!(
            a,
            config_entry_id(ListKind::Block, "a@x.com", &moved),
            "line must not matter"
        );
        assert_ne!(a, config_entry_id(ListKind::Block, "a@x.com", &inline));
        assert!(config_entry_id(ListKind::Allow, "a@x.com", &inline).starts_with("alid_"));
        let m = read_only_message(ListKind::Block, "a@x.com", &file);
        assert!(m.contains("lists/block.txt"), "{m}");
        let m = read_only_message(ListKind::Allow, "a@x.com", &inline);
        assert!(m.contains("the config file (lists.allow)"), "{m}");
    }

    #[test]
    fn display_types() {
        assert_eq!(type_of_display("*@*.x.com"), IdentifierType::EmailAddress);
        assert_eq!(type_of_display("+12025550123"), IdentifierType::PhoneNumber);
        assert_eq!(
            type_of_display("0xabcdefabcdef0123456789012345678901234567"),
            IdentifierType::Web3Wallet
        );
    }

    #[test]
    fn list_query_table() {
        let q = ListQuery::parse(Some("paginated=true&limit=5&offset=7&order_by=-created_at"));
        assert!(q.paginated);
        assert_eq!(q.limit(), Ok(Some(5)));
        assert_eq!(q.offset(), Ok(7));
        let q = ListQuery::parse(None);
        assert!(!q.paginated);
        assert_eq!(q.limit(), Ok(None));
        assert_eq!(q.offset(), Ok(0));
        assert!(!ListQuery::parse(Some("paginated=1")).paginated);
        assert!(!ListQuery::parse(Some("paginated=True")).paginated);
        for (raw, code) in [
            ("limit=0", "form_param_value_invalid"),
            ("limit=501", "form_param_value_invalid"),
            ("limit=-1", "form_param_value_invalid"),
            ("limit=ten", "invalid_query_parameter_value"),
            ("limit=", "invalid_query_parameter_value"),
            (
                "limit=99999999999999999999999",
                "invalid_query_parameter_value",
            ),
        ] {
            let e = ListQuery::parse(Some(raw)).limit().unwrap_err();
            assert_eq!(e.code(), code, "{raw}");
            assert_eq!(
                e.meta().get("param_name").and_then(|v| v.as_str()),
                Some("limit")
            );
        }
        assert_eq!(ListQuery::parse(Some("limit=500")).limit(), Ok(Some(500)));
        for (raw, code) in [
            ("offset=-1", "form_param_value_invalid"),
            ("offset=x", "invalid_query_parameter_value"),
        ] {
            assert_eq!(
                ListQuery::parse(Some(raw)).offset().unwrap_err().code(),
                code,
                "{raw}"
            );
        }
    }
}
