//! Tests for the entry grammar, list text, matching semantics and the disposable list.

use std::sync::Arc;

use proptest::prelude::*;

use super::*;
use crate::identifier::{self, Kind, ParseOptions};

fn opts() -> ParseOptions {
    ParseOptions::default()
}

fn id(s: &str) -> Identifier {
    identifier::parse(s, None, &opts()).unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn file(path: &str, line: u32) -> Source {
    Source {
        kind: SourceKind::File {
            path: Arc::from(path),
        },
        line: Some(line),
    }
}

fn matcher(list: ListKind, entries: &[&str]) -> Matcher {
    let mut b = MatcherBuilder::new(list);
    for (i, e) in entries.iter().enumerate() {
        let entry = parse_entry(e, list, &opts()).unwrap_or_else(|err| panic!("{e}: {err}"));
        b.add(entry, file("lists/x.txt", u32::try_from(i).unwrap() + 1));
    }
    b.build()
}

#[test]
fn entry_grammar() {
    let wallet = format!("0x{}", "Ab".repeat(20));
    let cases: &[(&str, ListKind, Result<&str, ()>)] = &[
        ("Bob@Partner.io", ListKind::Allow, Ok("bob@partner.io")),
        ("*@Acme.com", ListKind::Allow, Ok("*@acme.com")),
        ("*@*.acme.com", ListKind::Allow, Ok("*@*.acme.com")),
        ("*@bücher.de", ListKind::Block, Ok("*@xn--bcher-kva.de")),
        ("blocked.org", ListKind::Block, Ok("*@blocked.org")),
        ("blocked.org", ListKind::Allow, Err(())),
        (" +1 (202) 555-0123 ", ListKind::Allow, Ok("+12025550123")),
        ("202.555.0123", ListKind::Block, Ok("+12025550123")),
        (
            &wallet,
            ListKind::Block,
            Ok("0xabababababababababababababababababababab"),
        ),
        ("a*@x.com", ListKind::Block, Err(())),
        ("*", ListKind::Block, Err(())),
        ("*@*", ListKind::Block, Err(())),
        ("*@*.*.x.com", ListKind::Block, Err(())),
        ("*@x@y.com", ListKind::Block, Err(())),
        ("*@com", ListKind::Block, Err(())),
        ("*@", ListKind::Block, Err(())),
        ("", ListKind::Block, Err(())),
        ("bob@@x.com", ListKind::Block, Err(())),
        ("localhost", ListKind::Block, Err(())),
    ];
    for (input, list, want) in cases {
        let got = parse_entry(input, *list, &opts()).map(|e| e.to_string());
        assert_eq!(
            got.as_deref().map_err(|_| ()),
            *want,
            "{input} in {list}: {got:?}"
        );
    }
    assert_eq!(
        parse_entry("acme.com", ListKind::Allow, &opts()),
        Err(EntryError::BareDomainInAllow("acme.com".into()))
    );
    assert_eq!(
        parse_entry("a*@x.com", ListKind::Allow, &opts()),
        Err(EntryError::Wildcard)
    );
    let msg = parse_entry("acme.com", ListKind::Allow, &opts())
        .unwrap_err()
        .to_string();
    assert!(msg.contains("\"*@acme.com\""), "{msg}");
}

#[test]
fn specificity_orders() {
    assert!(Specificity::Exact > Specificity::Domain);
    assert!(Specificity::Domain > Specificity::Subdomains);
    let e = parse_entry("*@*.x.com", ListKind::Allow, &opts()).unwrap();
    assert_eq!(e.specificity(), Specificity::Subdomains);
}

/// (list entries, candidate, expected matching entry)
type Case = (&'static [&'static str], &'static str, Option<&'static str>);

#[test]
fn allow_matches_narrowly() {
    let cases: &[Case] = &[
        (
            &["bob@partner.io"],
            "BOB@partner.io.",
            Some("bob@partner.io"),
        ),
        (&["bob@partner.io"], "bob+x@partner.io", None),
        (&["bob@partner.io"], "b.o.b@partner.io", None),
        (&["john@gmail.com"], "john@googlemail.com", None),
        (&["*@acme.com"], "x@acme.com", Some("*@acme.com")),
        (&["*@acme.com"], "x@eng.acme.com", None),
        (&["*@acme.com"], "x@notacme.com", None),
        (&["*@*.acme.com"], "x@eng.acme.com", Some("*@*.acme.com")),
        (&["*@*.acme.com"], "x@b.eng.acme.com", Some("*@*.acme.com")),
        (&["*@*.acme.com"], "x@acme.com", None),
        (&["*@*.acme.com"], "x@xacme.com", None),
        (
            &["*@*.eng.acme.com", "*@*.acme.com"],
            "x@b.eng.acme.com",
            Some("*@*.eng.acme.com"),
        ),
        (
            &["*@*.acme.com", "*@*.eng.acme.com"],
            "x@b.eng.acme.com",
            Some("*@*.eng.acme.com"),
        ),
        (
            &["*@acme.com", "bob@acme.com"],
            "bob@acme.com",
            Some("bob@acme.com"),
        ),
        (&["*@bücher.de"], "x@BÜCHER.de", Some("*@xn--bcher-kva.de")),
        (&["+12025550123"], "(202) 555-0123", Some("+12025550123")),
        (&["+12025550123"], "+12025550124", None),
        (&["*@acme.com"], "+12025550123", None),
    ];
    run(ListKind::Allow, cases);
}

#[test]
fn block_matches_broadly() {
    let cases: &[Case] = &[
        (
            &["john@gmail.com"],
            "j.o.h.n+x@googlemail.com",
            Some("john@gmail.com"),
        ),
        (
            &["john@gmail.com"],
            "J.OHN@gmail.com",
            Some("john@gmail.com"),
        ),
        (
            &["j.ohn@googlemail.com"],
            "john@gmail.com",
            Some("j.ohn@googlemail.com"),
        ),
        (
            &["mallory@acme.com"],
            "mallory+1@acme.com",
            Some("mallory@acme.com"),
        ),
        (
            &["mallory@acme.com"],
            "mallory=1@acme.com",
            Some("mallory@acme.com"),
        ),
        (
            &["mallory@acme.com"],
            "mallory#1@acme.com",
            Some("mallory@acme.com"),
        ),
        (
            &["mallory+tag@acme.com"],
            "mallory@acme.com",
            Some("mallory+tag@acme.com"),
        ),
        (&["mallory@acme.com"], "m.allory@acme.com", None),
        (&["mallory@acme.com"], "mallory@eng.acme.com", None),
        (&["*@blocked.org"], "x@blocked.org", Some("*@blocked.org")),
        (
            &["*@blocked.org"],
            "x@a.b.blocked.org",
            Some("*@blocked.org"),
        ),
        (&["*@blocked.org"], "x@notblocked.org", None),
        (&["blocked.org"], "x@mx.blocked.org", Some("*@blocked.org")),
        (&["*@*.blocked.org"], "x@blocked.org", None),
        (
            &["*@*.blocked.org"],
            "x@a.blocked.org",
            Some("*@*.blocked.org"),
        ),
        (&["*@gmail.com"], "x@googlemail.com", Some("*@gmail.com")),
        (
            &["*@googlemail.com"],
            "x@gmail.com",
            Some("*@googlemail.com"),
        ),
        (
            &["*@blocked.org", "eve@blocked.org"],
            "eve+1@blocked.org",
            Some("eve@blocked.org"),
        ),
        (
            &["*@*.x.com", "*@a.x.com"],
            "q@b.a.x.com",
            Some("*@a.x.com"),
        ),
        (&["+12025550123"], "+1 202 555 0123", Some("+12025550123")),
        (
            &["0xabababababababababababababababababababab"],
            "0XABABABABABABABABABABABABABABABABABABABAB",
            Some("0xabababababababababababababababababababab"),
        ),
        (&["*@blocked.org"], "+12025550123", None),
    ];
    run(ListKind::Block, cases);
}

fn run(list: ListKind, cases: &[Case]) {
    for (entries, cand, want) in cases {
        let m = matcher(list, entries);
        let cand = id(cand);
        let c = Candidate::new(&cand);
        let got = m.lookup(&c).map(|h| h.entry);
        assert_eq!(got, *want, "{list}: {entries:?} vs {cand}");
    }
}

#[test]
fn hit_carries_source_line_and_specificity() {
    let mut b = MatcherBuilder::new(ListKind::Block);
    let add = |b: &mut MatcherBuilder, e: &str, s: Source| {
        b.add(parse_entry(e, ListKind::Block, &opts()).unwrap(), s);
    };
    add(
        &mut b,
        "*@acme.com",
        Source {
            kind: SourceKind::Inline,
            line: None,
        },
    );
    add(&mut b, "mallory@acme.com", file("lists/block.csv", 12));
    add(&mut b, "mallory+dup@acme.com", file("lists/block.csv", 13));
    add(
        &mut b,
        "+12025550123",
        Source {
            kind: SourceKind::Store,
            line: None,
        },
    );
    assert_eq!(b.len(), 3, "the +dup entry folds into mallory@acme.com");
    let m = b.build();
    assert_eq!(
        (m.len(), m.is_empty(), m.list()),
        (3, false, ListKind::Block)
    );

    let h = m
        .lookup(&Candidate::new(&id("mallory+x@acme.com")))
        .unwrap();
    assert_eq!(
        (h.entry, h.specificity, h.line),
        ("mallory@acme.com", Specificity::Exact, Some(12))
    );
    assert_eq!(h.origin().to_string(), "lists/block.csv:12");
    let h = m.lookup(&Candidate::new(&id("eve@acme.com"))).unwrap();
    assert_eq!(
        (h.entry, h.specificity),
        ("*@acme.com", Specificity::Domain)
    );
    assert_eq!(h.origin().describe(ListKind::Block), "config (lists.block)");
    let h = m.lookup(&Candidate::new(&id("+12025550123"))).unwrap();
    assert_eq!(h.origin().to_string(), "admin API");

    let listed: Vec<(String, String)> = m.iter().map(|(e, s)| (e, s.to_string())).collect();
    assert_eq!(
        listed,
        [
            ("*@acme.com".to_owned(), "config (lists)".to_owned()),
            (
                "mallory@acme.com".to_owned(),
                "lists/block.csv:12".to_owned()
            ),
            ("+12025550123".to_owned(), "admin API".to_owned()),
        ]
    );
}

#[test]
fn empty_matcher_never_hits() {
    let m = Matcher::empty(ListKind::Allow);
    assert!(m.is_empty());
    assert!(m.lookup(&Candidate::new(&id("a@b.com"))).is_none());
}

#[test]
fn candidate_accessors() {
    let x = id("X@Mail.Example.com");
    let c = Candidate::new(&x);
    assert_eq!(
        (c.kind(), c.as_str(), c.domain()),
        (Kind::Email, "x@mail.example.com", Some("mail.example.com"))
    );
    let p = id("+12025550123");
    let c = Candidate::new(&p);
    assert_eq!((c.kind(), c.domain()), (Kind::Phone, None));
}

#[test]
fn split_entries_grammar() {
    let text = "\u{feff}# comment\n\nEmail,Phone\n\"bob@x.com\", +1 202 555 0123 ; a#b@x.com # note\r\n\tcarol@x.com\n#x@y.com\nemail\n";
    let got: Vec<(u32, &str)> = split_entries(text)
        .iter()
        .map(|t| (t.line, t.text))
        .collect();
    assert_eq!(
        got,
        [
            (4, "bob@x.com"),
            (4, "+1 202 555 0123"),
            (4, "a#b@x.com"),
            (5, "carol@x.com"),
            (7, "email"),
        ]
    );
    let got: Vec<&str> = split_entries("bob@x.com\nemail")
        .iter()
        .map(|t| t.text)
        .collect();
    assert_eq!(got, ["bob@x.com", "email"], "header only on the first line");
    // Phone numbers written with spaces stay whole (their pieces would be other numbers); a
    // new number starts at each `+`; other fields still split at spaces.
    let got: Vec<&str> = split_entries(
        "+44 20 7946 0958\n+1 (202) 555-0123 +44 20 7946 0958\t+33 1 23 45 67 89\n\"+1 202 555 0199\", a@x.com b@x.com\n+12025550123 # +1 999\n+44 20 7946 0959 # London office\n",
    )
    .iter()
    .map(|t| t.text)
    .collect();
    assert_eq!(
        got,
        [
            "+44 20 7946 0958",
            "+1 (202) 555-0123",
            "+44 20 7946 0958",
            "+33 1 23 45 67 89",
            "+1 202 555 0199",
            "a@x.com",
            "b@x.com",
            "+12025550123",
            "+44 20 7946 0959",
        ]
    );
}

#[test]
fn parse_entries_reports_bad_lines() {
    let text = "email\nbob@x.com\nbob@@x\n*@acme.com, bob@x.com\n+12025550123\nnope\n";
    let (entries, errors) = parse_entries(text, ListKind::Allow, &opts());
    let got: Vec<(String, u32)> = entries.iter().map(|(e, l)| (e.to_string(), *l)).collect();
    assert_eq!(
        got,
        [
            ("bob@x.com".to_owned(), 2),
            ("*@acme.com".to_owned(), 4),
            ("bob@x.com".to_owned(), 4),
            ("+12025550123".to_owned(), 5),
        ]
    );
    let errs: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert!(
        errs[0].starts_with("line 3: `bob@@x`: the email address has 2 '@' signs"),
        "{}",
        errs[0]
    );
    assert!(errs[1].starts_with("line 6: `nope`: "), "{}", errs[1]);
}

#[test]
fn disposable_builtin() {
    let d = DisposableDomains::builtin();
    assert!(d.len() > 10_000, "{}", d.len());
    for yes in ["mailinator.com", "x.mailinator.com", "a.b.33mail.com"] {
        assert!(d.contains(yes), "{yes}");
    }
    // A public suffix on the exact list (edu.pl) denies itself, not the domains
    // registered under it.
    assert!(d.contains("edu.pl"));
    for no in [
        "gmail.com",
        "outlook.com",
        "proton.me",
        "com",
        "",
        "mailinator.com.example.org",
        "uw.edu.pl",
        "student.agh.edu.pl",
    ] {
        assert!(!d.contains(no), "{no}");
    }
    let custom = DisposableDomains::from_text("# c\n*.Temp.Example.\nexact.example\n\n");
    assert_eq!(custom.len(), 2);
    assert!(custom.contains("a.temp.example") && custom.contains("temp.example"));
    assert!(custom.contains("exact.example") && !custom.contains("a.exact.example"));
    assert!(!custom.contains("example"));
}

#[test]
fn large_list_round_trips() {
    let mut b = MatcherBuilder::new(ListKind::Block);
    for i in 0..50_000u32 {
        let e = Entry::Exact(id(&format!("user{i}@example{}.com", i % 97)));
        b.add(
            e,
            Source {
                kind: SourceKind::Store,
                line: None,
            },
        );
        b.add(Entry::Domain(format!("d{i}.org")), file("big.txt", i + 1));
    }
    let m = b.build();
    assert_eq!(m.len(), 100_000);
    for i in (0..50_000u32).step_by(997) {
        let h = m
            .lookup(&Candidate::new(&id(&format!(
                "user{i}+z@example{}.com",
                i % 97
            ))))
            .unwrap();
        assert_eq!(h.specificity, Specificity::Exact);
        let h = m
            .lookup(&Candidate::new(&id(&format!("x@mx.d{i}.org"))))
            .unwrap();
        assert_eq!(
            (h.entry, h.line),
            (format!("*@d{i}.org").as_str(), Some(i + 1))
        );
        assert!(
            m.lookup(&Candidate::new(&id(&format!(
                "user{i}@example{}.com",
                (i + 1) % 97
            ))))
            .is_none()
        );
    }
}

/// Entries staged apart (another thread, in parts) and added in order make the same matcher
/// as adding them one by one: keys (inbox keys in a block list), first occurrence wins, lines,
/// and the longest addresses.
#[test]
fn staged_entries_build_what_added_entries_build() {
    let long = format!(
        "{}@{}.com",
        "a".repeat(60),
        vec!["b".repeat(60); 3].join(".")
    );
    let texts = [
        "u1@x.com",
        "U1+news@X.com",
        "u.1@gmail.com",
        "u1@googlemail.com",
        "*@x.com",
        "*@*.googlemail.com",
        "x.org",
        "+12025550123",
        "0x52908400098527886E0F7030069857D2E4169EE7",
        long.as_str(),
        "u1@x.com",
    ];
    for list in [ListKind::Allow, ListKind::Block] {
        let entries: Vec<(Entry, u32)> = texts
            .iter()
            .enumerate()
            .filter_map(|(i, t)| Some((parse_entry(t, list, &opts()).ok()?, i as u32 + 1)))
            .collect();
        let mut one_by_one = MatcherBuilder::new(list);
        let src = one_by_one.source(SourceKind::File {
            path: "l.txt".into(),
        });
        for (e, line) in &entries {
            one_by_one.add_at(e, src, Some(*line));
        }
        let mut staged_builder = MatcherBuilder::with_capacity(list, 4, 64);
        let src = staged_builder.source(SourceKind::File {
            path: "l.txt".into(),
        });
        for part in entries.chunks(3) {
            let mut staged = Staged::with_capacity(list, 1, 8);
            for (e, line) in part {
                staged.push(e, Some(*line));
            }
            assert_eq!(staged.len(), part.len());
            assert!(staged_builder.add_staged(&staged, src));
        }
        let (a, b) = (one_by_one.build(), staged_builder.build());
        assert_eq!(
            a.iter().collect::<Vec<_>>(),
            b.iter().collect::<Vec<_>>(),
            "{list}"
        );
        assert!(
            a.len() >= 5 && a.len() < entries.len(),
            "{list}: {}",
            a.len()
        );
        let other = match list {
            ListKind::Allow => ListKind::Block,
            ListKind::Block => ListKind::Allow,
        };
        let mut wrong = MatcherBuilder::new(other);
        let src = wrong.source(SourceKind::Store);
        assert!(!wrong.add_staged(&Staged::with_capacity(list, 0, 0), src));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    /// `parse_entry` takes already-canonical addresses in one pass; the entry grammar's rules
    /// (wildcards, bare domains, the full parser) give the same entry or error for them.
    #[test]
    fn entry_fast_path_agrees_with_the_rules(
        s in "[*]?[a-zA-Z0-9._+=#*%-]{0,8}@?[*]?[a-zA-Z0-9.-]{0,12}[.]?(com|c1|123|xn--p1ai)?",
        block in any::<bool>(),
    ) {
        let list = if block { ListKind::Block } else { ListKind::Allow };
        prop_assert_eq!(parse_entry(&s, list, &opts()), parse_entry_rules(&s, list, &opts()));
    }

    #[test]
    fn text_parsing_never_panics(s in any::<String>()) {
        let (entries, errors) = parse_entries(&s, ListKind::Block, &opts());
        let mut b = MatcherBuilder::new(ListKind::Block);
        for (e, line) in entries {
            b.add(e, file("p.txt", line));
        }
        let m = b.build();
        prop_assert!(m.len() <= split_entries(&s).len());
        prop_assert!(errors.iter().all(|e| e.line >= 1));
    }

    #[test]
    fn entry_parsing_never_panics(s in "[*@.a-z0-9+ ]{0,20}") {
        let _ = parse_entry(&s, ListKind::Allow, &opts());
        let _ = parse_entry(&s, ListKind::Block, &opts());
    }

    /// Whatever reaches the same inbox as a blocked address is blocked.
    #[test]
    fn blocked_inbox_variants_are_blocked(
        user in "[a-z]{1,6}", tag in "[a-z0-9]{0,4}", sep in "[+=#]", dots in proptest::collection::vec(0usize..6, 0..3),
        gmail in any::<bool>(),
    ) {
        let domain = if gmail { "gmail.com" } else { "acme.com" };
        let entry = format!("{user}@{domain}");
        let m = matcher(ListKind::Block, &[entry.as_str()]);
        let mut local = user.clone();
        if gmail {
            for d in dots {
                let at = d.min(local.len());
                if at > 0 && at < local.len() && !local[..at].ends_with('.') && !local[at..].starts_with('.') {
                    local.insert(at, '.');
                }
            }
        }
        let variant_domain = if gmail { "googlemail.com" } else { domain };
        let cand = format!("{local}{sep}{tag}@{variant_domain}");
        let hit = m.lookup(&Candidate::new(&id(&cand)));
        prop_assert!(hit.is_some(), "{} not blocked", cand);
    }
}

#[test]
fn live_insert_and_remove_keep_every_other_entry_findable() {
    let store = Source {
        kind: SourceKind::Store,
        line: None,
    };
    for list in [ListKind::Allow, ListKind::Block] {
        let mut m = Matcher::empty(list);
        let entries: Vec<Entry> = (0..5000)
            .map(|i| {
                let text = match i % 3 {
                    0 => format!("user{i}@x{}.com", i % 7),
                    1 => format!("*@d{i}.org"),
                    _ => format!("*@*.s{i}.net"),
                };
                parse_entry(&text, list, &opts()).unwrap()
            })
            .collect();
        for e in &entries {
            assert!(m.insert(e.clone(), store.clone()));
            assert!(!m.insert(e.clone(), store.clone()), "duplicate accepted");
        }
        assert_eq!(m.len(), entries.len());
        // Remove every other entry; the rest must still match, the removed must not.
        for e in entries.iter().step_by(2) {
            assert!(m.remove(e));
            assert!(!m.remove(e));
        }
        assert_eq!(m.len(), entries.len() / 2);
        for (i, e) in entries.iter().enumerate() {
            let probe = match e {
                Entry::Exact(id) => id.as_str().to_owned(),
                Entry::Domain(d) => format!("a@{d}"),
                Entry::Subdomains(d) => format!("a@mx.{d}"),
            };
            let hit = m.lookup(&Candidate::new(&id(&probe)));
            assert_eq!(hit.is_some(), i % 2 == 1, "{list:?} {probe}");
            assert_eq!(m.get_by_key(&e.key(list)).is_some(), i % 2 == 1);
        }
        assert_eq!(m.iter().count(), entries.len() / 2);
        // Re-adding a removed entry works.
        assert!(m.insert(entries[0].clone(), store.clone()));
        assert!(m.lookup(&Candidate::new(&id("user0@x0.com"))).is_some());
    }
}

#[test]
fn entry_keys_fold_like_the_matcher() {
    let k = |s: &str, list| parse_entry(s, list, &opts()).unwrap().key(list);
    assert_eq!(
        k("J.Smith+x@googlemail.com", ListKind::Block),
        k("jsmith@gmail.com", ListKind::Block)
    );
    assert_ne!(
        k("J.Smith@gmail.com", ListKind::Allow),
        k("jsmith@gmail.com", ListKind::Allow)
    );
    assert_eq!(k("*@x.com", ListKind::Allow), "d:x.com");
    assert_eq!(k("*@*.x.com", ListKind::Allow), "s:x.com");
    assert_eq!(k("+1 202 555 0123", ListKind::Allow), "x:+12025550123");
}
