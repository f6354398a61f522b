//! Strict JSON reading for identifier extraction.
//!
//! The body is parsed once with a `serde_json::Deserializer` driven by our own
//! `DeserializeSeed`, which refuses what parsers disagree on: duplicate object keys at any depth
//! (also when equal after ASCII case-folding), NUL in keys, nesting deeper than the limit and
//! trailing data; serde_json itself refuses invalid UTF-8, lone surrogate escapes and control
//! characters. Only the parts of the document on a configured pointer's path are kept; the rest
//! is validated and dropped.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashSet;
use std::fmt;
use std::hash::{Hash, Hasher};

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use smallvec::SmallVec;

use super::{Refusal, SourceSpec, clip, fold_char, fold_eq};

/// A parsed JSON value, pruned to what the pointers need. Strings borrow from the body unless
/// they contain escapes.
#[derive(Debug, PartialEq)]
pub(super) enum Node<'de> {
    Str(Cow<'de, str>),
    Number,
    Bool,
    Null,
    /// Kept elements with their index (only those a pointer can reach).
    Array(Vec<(usize, Node<'de>)>),
    /// All keys of a kept object; values not on a pointer path are `Skipped`.
    Object(Vec<(Cow<'de, str>, Node<'de>)>),
    /// A value on no pointer path (validated, not stored).
    Skipped,
}

/// An object key compared and hashed case-folded (see [`super::fold_char`]), so the duplicate
/// check needs no folded copy of each key.
struct Folded<'a>(Cow<'a, str>);

impl PartialEq for Folded<'_> {
    fn eq(&self, other: &Self) -> bool {
        fold_eq(&self.0, &other.0)
    }
}

impl Eq for Folded<'_> {}

impl Hash for Folded<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        for c in self.0.chars().map(fold_char) {
            state.write_u32(u32::from(c));
        }
    }
}

/// Keys of one object compared one by one (and kept inline) before they are hashed.
const FEW_KEYS: usize = 16;

/// The keys of one object so far, for the duplicate check: compared one by one while there are
/// few (a sign-up form has a handful; no hashing), hashed once there are more (so a body of
/// many keys costs linear time, not quadratic). The hash is the standard library's keyed
/// SipHash: the keys are the client's, and an unkeyed hash would let a body of colliding keys
/// make the set quadratic again.
#[derive(Default)]
struct SeenKeys<'de> {
    few: SmallVec<[Cow<'de, str>; FEW_KEYS]>,
    many: HashSet<Folded<'de>>,
}

impl<'de> SeenKeys<'de> {
    /// Adds `key`; false when an equal one (after case-folding) was already there.
    fn insert(&mut self, key: Cow<'de, str>) -> bool {
        if self.many.is_empty() {
            if self.few.iter().any(|k| fold_eq(k, &key)) {
                return false;
            }
            if self.few.len() < FEW_KEYS {
                self.few.push(key);
                return true;
            }
            self.many.extend(self.few.drain(..).map(Folded));
        }
        self.many.insert(Folded(key))
    }
}

/// Reads a string (an object key) borrowed from the body when it has no escapes.
struct StrSeed;

impl<'de> DeserializeSeed<'de> for StrSeed {
    type Value = Cow<'de, str>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for StrSeed {
    type Value = Cow<'de, str>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v))
    }
}

impl Node<'_> {
    fn describe(&self) -> &'static str {
        match self {
            Node::Str(_) => "a string",
            Node::Number => "a number",
            Node::Bool => "a boolean",
            Node::Null => "null",
            Node::Array(_) => "an array",
            Node::Object(_) => "an object",
            Node::Skipped => "an unread value",
        }
    }
}

/// Parses an RFC 6901 pointer into its unescaped segments.
pub(super) fn parse_pointer(pointer: &str) -> Result<Vec<String>, Refusal> {
    if pointer.is_empty() {
        return Ok(Vec::new());
    }
    let Some(rest) = pointer.strip_prefix('/') else {
        return Err(Refusal::InvalidSpec(format!(
            "JSON pointer {:?} must be empty or start with '/'",
            clip(pointer)
        )));
    };
    rest.split('/')
        .map(|seg| {
            let mut out = String::with_capacity(seg.len());
            let mut chars = seg.chars();
            while let Some(c) = chars.next() {
                if c != '~' {
                    out.push(c);
                    continue;
                }
                match chars.next() {
                    Some('0') => out.push('~'),
                    Some('1') => out.push('/'),
                    _ => {
                        return Err(Refusal::InvalidSpec(format!(
                            "JSON pointer {:?} has a '~' not followed by 0 or 1",
                            clip(pointer)
                        )));
                    }
                }
            }
            Ok(out)
        })
        .collect()
}

/// An RFC 6901 array index: `0` or digits without a leading zero.
fn array_index(seg: &str) -> Option<usize> {
    let ok = seg == "0"
        || (!seg.is_empty() && !seg.starts_with('0') && seg.bytes().all(|b| b.is_ascii_digit()));
    if ok { seg.parse().ok() } else { None }
}

#[derive(Clone, Copy)]
struct Ctx<'c> {
    max_depth: usize,
    /// The route's sources; only JSON ones are ever live.
    pointers: &'c [SourceSpec],
    refusal: &'c RefCell<Option<Refusal>>,
}

impl Ctx<'_> {
    fn refuse<E: de::Error>(&self, r: Refusal) -> E {
        *self.refusal.borrow_mut() = Some(r);
        E::custom("refused")
    }
}

/// Seed for one value: its container depth, path length (`level`) and the pointers that still
/// run through it (`live`). The root is always kept so its top-level keys are known.
struct NodeSeed<'c> {
    ctx: Ctx<'c>,
    depth: usize,
    level: usize,
    live: Live,
}

/// Indexes of the pointers running through a value: one or two on a sign-up route, kept
/// inline (no allocation per value).
type Live = SmallVec<[usize; 4]>;

impl NodeSeed<'_> {
    fn keep(&self) -> bool {
        self.level == 0 || !self.live.is_empty()
    }

    fn child(&self, matches: impl Fn(&str) -> bool) -> Live {
        self.live
            .iter()
            .copied()
            .filter(|&i| {
                self.ctx
                    .pointers
                    .get(i)
                    .and_then(SourceSpec::json_segments)
                    .and_then(|p| p.get(self.level))
                    .is_some_and(|seg| matches(seg))
            })
            .collect()
    }
}

impl<'de> DeserializeSeed<'de> for NodeSeed<'_> {
    type Value = Node<'de>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Node<'de>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for NodeSeed<'_> {
    type Value = Node<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Node<'de>, E> {
        Ok(if self.keep() {
            Node::Bool
        } else {
            Node::Skipped
        })
    }
    fn visit_i64<E>(self, _: i64) -> Result<Node<'de>, E> {
        Ok(if self.keep() {
            Node::Number
        } else {
            Node::Skipped
        })
    }
    fn visit_u64<E>(self, _: u64) -> Result<Node<'de>, E> {
        Ok(if self.keep() {
            Node::Number
        } else {
            Node::Skipped
        })
    }
    fn visit_f64<E>(self, _: f64) -> Result<Node<'de>, E> {
        Ok(if self.keep() {
            Node::Number
        } else {
            Node::Skipped
        })
    }
    fn visit_unit<E>(self) -> Result<Node<'de>, E> {
        Ok(if self.keep() {
            Node::Null
        } else {
            Node::Skipped
        })
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Node<'de>, E> {
        Ok(if self.keep() {
            Node::Str(Cow::Borrowed(v))
        } else {
            Node::Skipped
        })
    }
    fn visit_str<E>(self, v: &str) -> Result<Node<'de>, E> {
        Ok(if self.keep() {
            Node::Str(Cow::Owned(v.to_owned()))
        } else {
            Node::Skipped
        })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node<'de>, A::Error> {
        let depth = self.depth + 1;
        if depth > self.ctx.max_depth {
            return Err(self.ctx.refuse(Refusal::TooDeep {
                limit: self.ctx.max_depth,
            }));
        }
        let keep = self.keep();
        let mut items = Vec::new();
        let mut index = 0usize;
        loop {
            let live = self.child(|seg| array_index(seg) == Some(index));
            let seed = NodeSeed {
                ctx: self.ctx,
                depth,
                level: self.level + 1,
                live,
            };
            let kept = seed.keep();
            match seq.next_element_seed(seed)? {
                Some(node) if keep && kept => items.push((index, node)),
                Some(_) => {}
                None => break,
            }
            index = index.saturating_add(1);
        }
        Ok(if keep {
            Node::Array(items)
        } else {
            Node::Skipped
        })
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node<'de>, A::Error> {
        let depth = self.depth + 1;
        if depth > self.ctx.max_depth {
            return Err(self.ctx.refuse(Refusal::TooDeep {
                limit: self.ctx.max_depth,
            }));
        }
        let keep = self.keep();
        let mut seen = SeenKeys::default();
        let mut entries = Vec::new();
        while let Some(key) = map.next_key_seed(StrSeed)? {
            if key.contains('\0') {
                return Err(self.ctx.refuse(Refusal::BadString {
                    field: clip(&key),
                    reason: "NUL in a JSON object key",
                }));
            }
            if !seen.insert(key.clone()) {
                return Err(self.ctx.refuse(Refusal::DuplicateField {
                    field: clip(&key),
                    place: "JSON body",
                }));
            }
            let live = self.child(|seg| seg == &*key);
            let node = map.next_value_seed(NodeSeed {
                ctx: self.ctx,
                depth,
                level: self.level + 1,
                live,
            })?;
            if keep {
                entries.push((key, node));
            }
        }
        Ok(if keep {
            Node::Object(entries)
        } else {
            Node::Skipped
        })
    }
}

/// Parses `text` strictly, keeping what the JSON pointers among `pointers` can reach.
pub(super) fn parse<'de>(
    text: &'de str,
    max_depth: usize,
    pointers: &[SourceSpec],
) -> Result<Node<'de>, Refusal> {
    let refusal = RefCell::new(None);
    let ctx = Ctx {
        max_depth,
        pointers,
        refusal: &refusal,
    };
    let seed = NodeSeed {
        ctx,
        depth: 0,
        level: 0,
        live: (0..pointers.len())
            .filter(|&i| pointers.get(i).is_some_and(|s| s.json_segments().is_some()))
            .collect(),
    };
    let mut de = serde_json::Deserializer::from_str(text);
    let result = seed
        .deserialize(&mut de)
        .and_then(|node| de.end().map(|()| node));
    match result {
        Ok(node) => Ok(node),
        Err(e) => Err(match refusal.into_inner() {
            Some(r) => r,
            None if e.to_string().contains("recursion limit exceeded") => {
                Refusal::TooDeep { limit: max_depth }
            }
            None => Refusal::BadJson(e.to_string()),
        }),
    }
}

/// Follows `segments` from `root`. `Ok(None)`: nothing there. A case-only near miss of an
/// object key is refused (some frameworks match keys case-insensitively); a non-string target is
/// refused (the upstream might coerce it).
pub(super) fn resolve(
    root: &Node<'_>,
    segments: &[String],
    pointer: &str,
) -> Result<Option<String>, Refusal> {
    let mut node = root;
    for seg in segments {
        node = match node {
            Node::Object(entries) => match entries.iter().find(|(k, _)| k == seg) {
                Some((_, v)) => v,
                None => {
                    return match entries.iter().find(|(k, _)| fold_eq(k, seg)) {
                        Some((k, _)) => Err(Refusal::AmbiguousLocation {
                            field: clip(pointer),
                            found: clip(k),
                        }),
                        None => Ok(None),
                    };
                }
            },
            Node::Array(items) => {
                let Some(i) = array_index(seg) else {
                    return Ok(None);
                };
                match items.iter().find(|(j, _)| *j == i) {
                    Some((_, v)) => v,
                    None => return Ok(None),
                }
            }
            _ => return Ok(None),
        };
    }
    match node {
        Node::Str(s) if s.contains('\0') => Err(Refusal::BadString {
            field: clip(pointer),
            reason: "NUL in the identifier",
        }),
        Node::Str(s) => Ok(Some(s.to_string())),
        other => Err(Refusal::NotAString {
            field: clip(pointer),
            found: other.describe(),
        }),
    }
}

/// The keys of a top-level object (empty for other documents).
pub(super) fn top_level_keys<'a>(root: &'a Node<'_>) -> impl Iterator<Item = &'a str> {
    let entries: &[(Cow<'_, str>, Node<'_>)] = match root {
        Node::Object(e) => e,
        _ => &[],
    };
    entries.iter().map(|(k, _)| &**k)
}

#[cfg(test)]
mod tests {
    use super::*;

    type Want = Result<Option<String>, String>;

    fn get(text: &str, pointer: &str, depth: usize) -> Result<Option<String>, String> {
        let segs = parse_pointer(pointer).map_err(|e| e.code().to_string())?;
        let src = SourceSpec::new(super::super::Location::Json(pointer.into()), None);
        let root =
            parse(text, depth, std::slice::from_ref(&src)).map_err(|e| e.code().to_string())?;
        resolve(&root, &segs, pointer).map_err(|e| e.code().to_string())
    }

    #[test]
    fn json_table() {
        let s = |v: &str| Ok(Some(v.to_string()));
        let e = |c: &str| Err(c.to_string());
        let deep_ok = format!("{}\"x\"{}", "[".repeat(31), "]".repeat(31));
        let deep_bad = format!("{}\"x\"{}", "[".repeat(33), "]".repeat(33));
        let very_deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
        let cases: Vec<(&str, &str, Want)> = vec![
            (r#"{"email":"a@b.co"}"#, "/email", s("a@b.co")),
            (
                r#" {"user":{"email":"a@b.co"}} "#,
                "/user/email",
                s("a@b.co"),
            ),
            (r#"{"list":["x","a@b.co"]}"#, "/list/1", s("a@b.co")),
            (r#"{"a/b":{"~":"v"}}"#, "/a~1b/~0", s("v")),
            (r#""top""#, "", s("top")),
            (r#"{"em\u0061il":"a@b.co"}"#, "/email", s("a@b.co")),
            (r#"{"other":"x"}"#, "/email", Ok(None)),
            (r#"{"user":"x"}"#, "/user/email", Ok(None)),
            (r#"{"list":["x"]}"#, "/list/01", Ok(None)),
            (r#"{"list":["x"]}"#, "/list/5", Ok(None)),
            (r#"[]"#, "/email", Ok(None)),
            (&deep_ok, "", e("not_a_string")),
            (
                r#"{"email":"a","email":"b"}"#,
                "/email",
                e("duplicate_field"),
            ),
            (
                r#"{"email":"a","Email":"b"}"#,
                "/email",
                e("duplicate_field"),
            ),
            (r#"{"x":{"k":1,"K":2}}"#, "/email", e("duplicate_field")),
            (r#"{"x":[{"k":1,"k":2}]}"#, "/email", e("duplicate_field")),
            (
                r#"{"email":"a","em\u0061il":"b"}"#,
                "/email",
                e("duplicate_field"),
            ),
            (
                r#"{"mask":"a","ma\u017fk":"b"}"#,
                "/email",
                e("duplicate_field"),
            ),
            (
                r#"{"\u212aey":"a","key":"b"}"#,
                "/email",
                e("duplicate_field"),
            ),
            (
                r#"{"addre\u017fs":"a@b.co"}"#,
                "/address",
                e("ambiguous_location"),
            ),
            (r#"{"EMAIL":"a@b.co"}"#, "/email", e("ambiguous_location")),
            (
                r#"{"User":{"email":"a@b.co"}}"#,
                "/user/email",
                e("ambiguous_location"),
            ),
            (r#"{"email":1}"#, "/email", e("not_a_string")),
            (r#"{"email":["a@b.co"]}"#, "/email", e("not_a_string")),
            (r#"{"email":{"x":"a@b.co"}}"#, "/email", e("not_a_string")),
            (r#"{"email":true}"#, "/email", e("not_a_string")),
            (r#"{"email":null}"#, "/email", e("not_a_string")),
            (r#"{"email":"a\u0000@b.co"}"#, "/email", e("bad_string")),
            (r#"{"email\u0000":"x"}"#, "/email", e("bad_string")),
            (r#"{"email":"\ud800"}"#, "/email", e("bad_json")),
            (r#"{"email":"\udc00x"}"#, "/email", e("bad_json")),
            (r#"{"x":"\ud800"}"#, "/email", e("bad_json")),
            (r#"{"email":"a@b.co"} {}"#, "/email", e("bad_json")),
            (r#"{"email":"a@b.co"}x"#, "/email", e("bad_json")),
            (r#"{"email":"a@b.co",}"#, "/email", e("bad_json")),
            (r#"{'email':'a@b.co'}"#, "/email", e("bad_json")),
            ("{\"email\":\"a\tb\"}", "/email", e("bad_json")),
            (r#"{"email":NaN}"#, "/email", e("bad_json")),
            ("", "/email", e("bad_json")),
            (&deep_bad, "", e("too_deep")),
            (&very_deep, "", e("too_deep")),
            (r#"{"email":"x"}"#, "email", e("invalid_spec")),
            (r#"{"email":"x"}"#, "/em~2ail", e("invalid_spec")),
        ];
        for (text, pointer, want) in cases {
            assert_eq!(get(text, pointer, 32), want, "{text} @ {pointer}");
        }
        // Past serde_json's own recursion limit (128) the refusal is still too_deep.
        assert_eq!(get(&very_deep, "", 500), e("too_deep"));
    }

    /// The duplicate check holds for objects of any size: a repeat of any earlier key (also
    /// case-folded, also across the switch from comparing keys to hashing them) is refused, and
    /// a large object of distinct keys is read.
    #[test]
    fn duplicate_keys_are_found_in_objects_of_any_size() {
        let e = |c: &str| -> Result<Option<String>, String> { Err(c.to_owned()) };
        let object = |n: usize, extra: &str| {
            let keys: String = (0..n).map(|i| format!(r#","k{i}":{i}"#)).collect();
            format!(r#"{{"email":"a@b.co"{keys}{extra}}}"#)
        };
        let few = FEW_KEYS;
        for n in [0, 1, few - 2, few - 1, few, few + 1, 3 * few, 20_000] {
            let text = object(n, "");
            assert_eq!(
                get(&text, "/email", 32),
                Ok(Some("a@b.co".into())),
                "{n} keys"
            );
            for (dup, what) in [("\"EMAIL\":1", "first"), ("\"k0\":1", "second")] {
                if dup.contains("k0") && n == 0 {
                    continue;
                }
                let text = object(n, &format!(",{dup}"));
                assert_eq!(
                    get(&text, "/email", 32),
                    e("duplicate_field"),
                    "{n} keys, {what}"
                );
            }
            if n > 0 {
                let last = format!(",\"K{}\":1", n - 1);
                assert_eq!(
                    get(&object(n, &last), "/email", 32),
                    e("duplicate_field"),
                    "{n}"
                );
            }
        }
    }

    #[test]
    fn unrelated_subtrees_are_not_stored() {
        let segs = [SourceSpec::new(
            super::super::Location::Json("/email".into()),
            None,
        )];
        let root = parse(r#"{"email":"a","big":[1,2,{"x":"y"}]}"#, 32, &segs);
        assert_eq!(
            root,
            Ok(Node::Object(vec![
                ("email".into(), Node::Str("a".into())),
                ("big".into(), Node::Skipped)
            ]))
        );
    }
}
