//! The decision: one pure function from (snapshot, route, identifier) to a [`Decision`].
//!
//! This is the only place where the rules of DESIGN §3 live:
//!
//! 1. A `sign_in` route with `allowlist_blocklist_disabled_on_sign_in` is not checked.
//! 2. On `sign_up` routes only: `block_email_subaddresses` denies local parts with `+`, `=` or
//!    `#`; `block_disposable_email_domains` denies the shipped disposable domains.
//! 3. The block list (when on) and the allow list (when enforced) are looked up; `precedence`
//!    settles the case where both match.
//!
//! A denial is not an error: `decide` always returns a [`Decision`] and never panics.

use crate::config::{Precedence, RouteKind};
use crate::identifier::Identifier;
use crate::lists::{Candidate, Hit, ListKind, Specificity};
use crate::snapshot::{Route, Snapshot};

/// Why a request was denied; serialized as `meta.reason` in the denial body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Blocklist,
    Allowlist,
    Subaddress,
    Disposable,
}

impl Reason {
    /// The wire name (`meta.reason`).
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Blocklist => "blocklist",
            Reason::Allowlist => "allowlist",
            Reason::Subaddress => "subaddress",
            Reason::Disposable => "disposable",
        }
    }
}

/// Which rule settled the decision, for `idgate check`, logs and audits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// Sign-in route and `allowlist_blocklist_disabled_on_sign_in: true`.
    SignInExempt,
    /// The local part has a `+`, `=` or `#` and `block_email_subaddresses` is on.
    Subaddress,
    /// The domain is a known disposable-email domain and the restriction is on.
    Disposable,
    /// A block list entry matched (and precedence did not let an allow entry win).
    Blocked,
    /// Both lists matched and precedence let the allow entry win.
    AllowOverridesBlock,
    /// The allow list is enforced and an entry matched.
    Allowlisted,
    /// The allow list is enforced and nothing matched.
    NotAllowlisted,
    /// No list applies to this identifier: forwarded.
    Unlisted,
}

impl Rule {
    /// One line for humans.
    pub fn describe(self) -> &'static str {
        match self {
            Rule::SignInExempt => {
                "sign-in route and allowlist_blocklist_disabled_on_sign_in is true: lists not checked"
            }
            Rule::Subaddress => "email subaddress (+, = or #) and block_email_subaddresses is on",
            Rule::Disposable => "disposable email domain and block_disposable_email_domains is on",
            Rule::Blocked => "matched the block list",
            Rule::AllowOverridesBlock => "matched both lists; precedence lets the allow entry win",
            Rule::Allowlisted => "matched the allow list",
            Rule::NotAllowlisted => "the allow list is enforced and has no matching entry",
            Rule::Unlisted => "no list applies",
        }
    }
}

/// The outcome for one identifier. Holds no references and allocates nothing; the entry that
/// caused it is found again by [`explain`] when someone asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// `None` means forward; `Some` is the denial reason.
    pub deny: Option<Reason>,
    /// The rule that settled it.
    pub rule: Rule,
    /// How specific the matching block entry was, if one matched.
    pub block: Option<Specificity>,
    /// How specific the matching allow entry was (looked up only when the allow list is
    /// enforced).
    pub allow: Option<Specificity>,
}

/// The decision and its cause in one owned value, for `idgate check` and status APIs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    pub allowed: bool,
    pub reason: Option<&'static str>,
    pub rule: &'static str,
    /// The entry that caused the decision and its source (`lists/block.txt:3`), if one did.
    pub entry: Option<(String, String)>,
}

impl Decision {
    /// True when the request may be forwarded.
    pub fn is_allowed(&self) -> bool {
        self.deny.is_none()
    }
}

/// The most specific entry of one list across its two layers (config and files, then the
/// admin store); on a tie the config's entry is reported.
fn lookup<T>(
    snap: &Snapshot,
    list: ListKind,
    c: &Candidate,
    f: impl Fn(Hit<'_>) -> T,
) -> Option<(Specificity, T)> {
    let from_config = snap
        .config_list(list)
        .lookup(c)
        .map(|h| (h.specificity, f(h)));
    let store = snap.store.read(list);
    let from_store = store.lookup(c).map(|h| (h.specificity, f(h)));
    match (from_config, from_store) {
        (Some(a), Some(b)) => Some(if b.0 > a.0 { b } else { a }),
        (a, b) => a.or(b),
    }
}

/// Decides one identifier on one route against the snapshot. Pure: no I/O, no panics.
pub fn decide(snap: &Snapshot, route: &Route, id: &Identifier) -> Decision {
    let candidate = Candidate::new(id);
    decide_with(snap, route, id, &candidate)
}

fn decide_with(snap: &Snapshot, route: &Route, id: &Identifier, candidate: &Candidate) -> Decision {
    let policy = &snap.policy;
    let verdict = |deny, rule| Decision {
        deny,
        rule,
        block: None,
        allow: None,
    };
    let sign_up = route.kind == RouteKind::SignUp;
    if !sign_up && policy.allowlist_blocklist_disabled_on_sign_in {
        return verdict(None, Rule::SignInExempt);
    }
    if sign_up && let Identifier::Email(email) = id {
        if policy.block_email_subaddresses && email.has_subaddress() {
            return verdict(Some(Reason::Subaddress), Rule::Subaddress);
        }
        if policy.block_disposable_email_domains && snap.disposable.contains(email.domain()) {
            return verdict(Some(Reason::Disposable), Rule::Disposable);
        }
    }

    let block = if policy.blocklist {
        lookup(snap, ListKind::Block, candidate, |_| ()).map(|(s, ())| s)
    } else {
        None
    };
    let allow_enforced = snap.allowlist_enforced();
    let allow = if allow_enforced {
        lookup(snap, ListKind::Allow, candidate, |_| ()).map(|(s, ())| s)
    } else {
        None
    };

    let (deny, rule) = match (block, allow) {
        (None, None) if allow_enforced => (Some(Reason::Allowlist), Rule::NotAllowlisted),
        (None, None) => (None, Rule::Unlisted),
        (None, Some(_)) => (None, Rule::Allowlisted),
        (Some(_), None) => (Some(Reason::Blocklist), Rule::Blocked),
        (Some(block), Some(allow)) => {
            let allow_wins = match policy.precedence {
                Precedence::Block => false,
                Precedence::Allow => true,
                Precedence::MostSpecific => allow > block,
            };
            if allow_wins {
                (None, Rule::AllowOverridesBlock)
            } else {
                (Some(Reason::Blocklist), Rule::Blocked)
            }
        }
    };
    Decision {
        deny,
        rule,
        block,
        allow,
    }
}

/// Decides and names the entry that caused the decision (for `idgate check`, logs, APIs).
pub fn explain(snap: &Snapshot, route: &Route, id: &Identifier) -> (Decision, Explanation) {
    let candidate = Candidate::new(id);
    let d = decide_with(snap, route, id, &candidate);
    let cause_list = match d.rule {
        Rule::Blocked => Some(ListKind::Block),
        Rule::Allowlisted | Rule::AllowOverridesBlock => Some(ListKind::Allow),
        _ => None,
    };
    let entry = cause_list.and_then(|list| {
        lookup(snap, list, &candidate, |h| {
            (h.entry.to_owned(), h.origin().describe(list))
        })
        .map(|(_, e)| e)
    });
    let e = Explanation {
        allowed: d.is_allowed(),
        reason: d.deny.map(Reason::as_str),
        rule: d.rule.describe(),
        entry,
    };
    (d, e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identifier::ParseOptions;
    use crate::snapshot::tests::from_yaml;

    fn id(s: &str) -> Identifier {
        crate::identifier::parse(s, None, &ParseOptions::default()).unwrap()
    }

    /// (config prefix, lists, route kind, identifier, expected reason or None for allow, rule)
    type Case<'a> = (&'a str, &'a str, RouteKind, &'a str, Option<Reason>, Rule);

    #[test]
    fn decision_table() {
        let base = r#"
lists:
  allow: ["*@acme.com", "bob@partner.io", "ceo@gmail.com", "*@*.corp.io", "+12025550123"]
  block: ["mallory@acme.com", "gmail.com", "*@blocked.org", "eve@corp.io"]
"#;
        use Reason::*;
        let cases: &[Case] = &[
            // precedence: block (default)
            (
                "",
                base,
                RouteKind::SignUp,
                "alice@acme.com",
                None,
                Rule::Allowlisted,
            ),
            (
                "",
                base,
                RouteKind::SignUp,
                "ALICE@Acme.COM.",
                None,
                Rule::Allowlisted,
            ),
            (
                "",
                base,
                RouteKind::SignUp,
                "mallory@acme.com",
                Some(Blocklist),
                Rule::Blocked,
            ),
            (
                "",
                base,
                RouteKind::SignUp,
                "m.allory+x@acme.com",
                None,
                Rule::Allowlisted,
            ),
            (
                "",
                base,
                RouteKind::SignUp,
                "mallory+x@acme.com",
                Some(Blocklist),
                Rule::Blocked,
            ),
            (
                "",
                base,
                RouteKind::SignUp,
                "x@eng.acme.com",
                Some(Allowlist),
                Rule::NotAllowlisted,
            ),
            (
                "",
                base,
                RouteKind::SignUp,
                "x@eng.corp.io",
                None,
                Rule::Allowlisted,
            ),
            (
                "",
                base,
                RouteKind::SignUp,
                "x@corp.io",
                Some(Allowlist),
                Rule::NotAllowlisted,
            ),
            (
                "",
                base,
                RouteKind::SignUp,
                "ceo@gmail.com",
                Some(Blocklist),
                Rule::Blocked,
            ),
            (
                "",
                base,
                RouteKind::SignUp,
                "c.e.o@googlemail.com",
                Some(Blocklist),
                Rule::Blocked,
            ),
            (
                "",
                base,
                RouteKind::SignUp,
                "eve@mx.blocked.org",
                Some(Blocklist),
                Rule::Blocked,
            ),
            (
                "",
                base,
                RouteKind::SignUp,
                "+1 202 555 0123",
                None,
                Rule::Allowlisted,
            ),
            (
                "",
                base,
                RouteKind::SignUp,
                "+12025550199",
                Some(Allowlist),
                Rule::NotAllowlisted,
            ),
            (
                "",
                base,
                RouteKind::SignIn,
                "mallory@acme.com",
                Some(Blocklist),
                Rule::Blocked,
            ),
            // precedence: allow (Clerk)
            (
                "precedence: allow\n",
                base,
                RouteKind::SignUp,
                "ceo@gmail.com",
                None,
                Rule::AllowOverridesBlock,
            ),
            (
                "precedence: allow\n",
                base,
                RouteKind::SignUp,
                "mallory@acme.com",
                None,
                Rule::AllowOverridesBlock,
            ),
            (
                "precedence: allow\n",
                base,
                RouteKind::SignUp,
                "joe@gmail.com",
                Some(Blocklist),
                Rule::Blocked,
            ),
            // precedence: most_specific
            (
                "precedence: most_specific\n",
                base,
                RouteKind::SignUp,
                "ceo@gmail.com",
                None,
                Rule::AllowOverridesBlock,
            ),
            (
                "precedence: most_specific\n",
                base,
                RouteKind::SignUp,
                "joe@gmail.com",
                Some(Blocklist),
                Rule::Blocked,
            ),
            (
                "precedence: most_specific\n",
                base,
                RouteKind::SignUp,
                "mallory@acme.com",
                Some(Blocklist),
                Rule::Blocked,
            ),
            (
                "precedence: most_specific\n",
                base,
                RouteKind::SignUp,
                "eve@corp.io",
                Some(Blocklist),
                Rule::Blocked,
            ),
            // allowlist modes
            (
                "restrictions: { allowlist: false }\n",
                base,
                RouteKind::SignUp,
                "x@elsewhere.net",
                None,
                Rule::Unlisted,
            ),
            (
                "restrictions: { allowlist: false }\n",
                base,
                RouteKind::SignUp,
                "mallory@acme.com",
                Some(Blocklist),
                Rule::Blocked,
            ),
            (
                "",
                "lists: { block: [x@y.com] }\n",
                RouteKind::SignUp,
                "a@b.com",
                None,
                Rule::Unlisted,
            ),
            (
                "restrictions: { allowlist: true }\n",
                "lists: { block: [x@y.com] }\n",
                RouteKind::SignUp,
                "a@b.com",
                Some(Allowlist),
                Rule::NotAllowlisted,
            ),
            (
                "restrictions: { blocklist: false }\n",
                base,
                RouteKind::SignUp,
                "mallory@acme.com",
                None,
                Rule::Allowlisted,
            ),
            // sign-in exemption
            (
                "restrictions: { allowlist_blocklist_disabled_on_sign_in: true }\n",
                base,
                RouteKind::SignIn,
                "mallory@acme.com",
                None,
                Rule::SignInExempt,
            ),
            (
                "restrictions: { allowlist_blocklist_disabled_on_sign_in: true }\n",
                base,
                RouteKind::SignUp,
                "mallory@acme.com",
                Some(Blocklist),
                Rule::Blocked,
            ),
            // subaddress and disposable: sign-up only
            (
                "restrictions: { block_email_subaddresses: true }\n",
                base,
                RouteKind::SignUp,
                "alice+x@acme.com",
                Some(Subaddress),
                Rule::Subaddress,
            ),
            (
                "restrictions: { block_email_subaddresses: true }\n",
                base,
                RouteKind::SignUp,
                "alice=x@acme.com",
                Some(Subaddress),
                Rule::Subaddress,
            ),
            (
                "restrictions: { block_email_subaddresses: true }\n",
                base,
                RouteKind::SignIn,
                "alice+x@acme.com",
                None,
                Rule::Allowlisted,
            ),
            (
                "restrictions: { block_disposable_email_domains: true }\n",
                "",
                RouteKind::SignUp,
                "x@mailinator.com",
                Some(Disposable),
                Rule::Disposable,
            ),
            (
                "restrictions: { block_disposable_email_domains: true }\n",
                "",
                RouteKind::SignIn,
                "x@mailinator.com",
                None,
                Rule::Unlisted,
            ),
            (
                "restrictions: { block_disposable_email_domains: true }\n",
                "",
                RouteKind::SignUp,
                "x@gmail.com",
                None,
                Rule::Unlisted,
            ),
        ];
        for (extra, lists, kind, input, reason, rule) in cases {
            let yaml = format!(
                "{}{}",
                extra.replace("\\n", "\n"),
                lists.replace("\\n", "\n")
            );
            let snap = from_yaml(&yaml);
            let route = snap
                .routes
                .iter()
                .find(|r| r.kind == *kind)
                .expect("route of that kind");
            let d = decide(&snap, route, &id(input));
            assert_eq!(d.deny, *reason, "{yaml} {kind:?} {input}");
            assert_eq!(d.rule, *rule, "{yaml} {kind:?} {input}");
        }
    }

    #[test]
    fn explanation_names_the_entry_and_its_source() {
        let snap = from_yaml("lists:\n  block: [\"*@blocked.org\"]\n");
        let (d, e) = explain(&snap, &snap.routes[0], &id("x@blocked.org"));
        assert!(!d.is_allowed());
        assert!(!e.allowed);
        assert_eq!(e.reason, Some("blocklist"));
        let (entry, source) = e.entry.unwrap();
        assert_eq!(entry, "*@blocked.org");
        assert!(source.contains("lists.block"), "{source}");
    }
}
