//! Tests for identifier parsing: tables of accepted and rejected inputs, and properties.

use super::*;
use proptest::prelude::*;

fn opts() -> ParseOptions {
    ParseOptions::default()
}

#[test]
fn emails_accepted_and_canonicalized() {
    let cases: &[(&str, &str)] = &[
        ("bob@example.com", "bob@example.com"),
        ("Bob.Smith@Example.COM", "bob.smith@example.com"),
        ("bob@example.com.", "bob@example.com"),
        ("a+tag@sub.example.co.uk", "a+tag@sub.example.co.uk"),
        (
            "x#$&'*+-/=^_`{|}~?y@example.com",
            "x#$&'*+-/=^_`{|}~?y@example.com",
        ),
        ("user@bücher.de", "user@xn--bcher-kva.de"),
        ("user@BÜCHER.de", "user@xn--bcher-kva.de"),
        ("user@xn--bcher-kva.de", "user@xn--bcher-kva.de"),
        ("user@XN--BCHER-KVA.DE", "user@xn--bcher-kva.de"),
        ("user@例え.テスト", "user@xn--r8jz45g.xn--zckzah"),
        ("user@a-b.c0m", "user@a-b.c0m"),
        ("user@ab--cd.com", "user@ab--cd.com"),
        ("user@1.2.3.com", "user@1.2.3.com"),
    ];
    for (input, want) in cases {
        let e = parse_email(input).unwrap_or_else(|err| panic!("{input}: {err}"));
        assert_eq!(e.as_str(), *want, "{input}");
        let (l, d) = want.split_once('@').unwrap();
        assert_eq!((e.local(), e.domain()), (l, d), "{input}");
    }
}

#[test]
fn emails_rejected() {
    let long_local = format!("{}@example.com", "a".repeat(65));
    let long_label = format!("a@{}.com", "b".repeat(64));
    let long_domain = format!("a@{}.com", vec!["b".repeat(60); 5].join("."));
    let long_addr = format!(
        "{}@{}.com",
        "a".repeat(64),
        vec!["b".repeat(60); 4].join(".")
    );
    let cases: &[(&str, IdentifierError)] = &[
        // UTS #46 would map these onto ASCII; the upstream keeps the string as sent
        // (tests/frameworks/vectors/email.vec: fullwidth-domain).
        (
            "user@ｅｘａｍｐｌｅ.com",
            IdentifierError::DomainInvalid("ｅｘａｍｐｌｅ.com".into()),
        ),
        (
            "user@example。com",
            IdentifierError::DomainInvalid("example。com".into()),
        ),
        // IDNA 2003 (Python's codec) maps these to `ss` and `σ`, IDNA 2008 keeps them.
        (
            "user@straße.de",
            IdentifierError::DomainInvalid("straße.de".into()),
        ),
        (
            "user@ς.example",
            IdentifierError::DomainInvalid("ς.example".into()),
        ),
        ("me%evil.com@acme.com", IdentifierError::SourceRoute('%')),
        ("evil.com!me@acme.com", IdentifierError::SourceRoute('!')),
        ("", IdentifierError::Empty("email address")),
        ("bob", IdentifierError::NoAt),
        ("bob@@x.com", IdentifierError::ManyAt(2)),
        ("a@b@x.com", IdentifierError::ManyAt(2)),
        ("@a.com:bob@x.com", IdentifierError::ManyAt(2)),
        (" bob@x.com", IdentifierError::Whitespace("email address")),
        ("bob@x.com\n", IdentifierError::Whitespace("email address")),
        ("bo b@x.com", IdentifierError::Whitespace("email address")),
        (
            "bob@x.com\u{0}",
            IdentifierError::Whitespace("email address"),
        ),
        (
            "bob@x\u{a0}.com",
            IdentifierError::Whitespace("email address"),
        ),
        (
            "bob@ac\u{200B}me.com",
            IdentifierError::Invisible {
                what: "email address",
                code: 0x200B,
            },
        ),
        (
            "bob\u{AD}@acme.com",
            IdentifierError::Invisible {
                what: "email address",
                code: 0xAD,
            },
        ),
        ("@x.com", IdentifierError::LocalEmpty),
        ("\"bob\"@x.com", IdentifierError::Quoted),
        ("\"b@b\"@x.com", IdentifierError::ManyAt(2)),
        ("bob(comment)@x.com", IdentifierError::Comment),
        ("b\\ob@x.com", IdentifierError::Backslash),
        ("=?utf-8?q?bob?=@x.com", IdentifierError::EncodedWord),
        ("bób@x.com", IdentifierError::LocalNonAscii('ó')),
        ("bob,eve@x.com", IdentifierError::LocalChar(',')),
        ("bob:eve@x.com", IdentifierError::LocalChar(':')),
        ("<bob@x.com>", IdentifierError::LocalChar('<')),
        (".bob@x.com", IdentifierError::LocalDots),
        ("bob.@x.com", IdentifierError::LocalDots),
        ("b..ob@x.com", IdentifierError::LocalDots),
        ("bob@", IdentifierError::DomainEmpty),
        ("bob@[192.0.2.1]", IdentifierError::DomainLiteral),
        (
            "bob@192.0.2.1",
            IdentifierError::DomainNumericTld("192.0.2.1".into()),
        ),
        (
            "bob@localhost",
            IdentifierError::DomainSingleLabel("localhost".into()),
        ),
        (
            "bob@x.com..",
            IdentifierError::DomainLabelLength("x.com.".into()),
        ),
        (
            "bob@x..com",
            IdentifierError::DomainLabelLength("x..com".into()),
        ),
        (
            "bob@.x.com",
            IdentifierError::DomainLabelLength(".x.com".into()),
        ),
        ("bob@-x.com", IdentifierError::DomainHyphen("-x.com".into())),
        ("bob@x-.com", IdentifierError::DomainHyphen("x-.com".into())),
        (
            "bob@x_y.com",
            IdentifierError::DomainInvalid("x_y.com".into()),
        ),
        (
            "bob@x.com>",
            IdentifierError::DomainInvalid("x.com>".into()),
        ),
        (
            "bob@xn--a.com",
            IdentifierError::DomainInvalid("xn--a.com".into()),
        ),
        (
            "bob@xn--bcher-kva-.de",
            IdentifierError::DomainInvalid("xn--bcher-kva-.de".into()),
        ),
        (
            "bob@a\u{2488}.com",
            IdentifierError::DomainInvalid("a\u{2488}.com".into()),
        ),
        (
            "bob@\u{301}x.com",
            IdentifierError::DomainInvalid("\u{301}x.com".into()),
        ),
    ];
    for (input, want) in cases {
        assert_eq!(parse_email(input).as_ref(), Err(want), "{input:?}");
    }
    for input in [long_local, long_label, long_domain, long_addr] {
        assert!(
            matches!(
                parse_email(&input),
                Err(IdentifierError::TooLong { .. } | IdentifierError::DomainLabelLength(_))
            ),
            "{input}: {:?}",
            parse_email(&input)
        );
    }
}

#[test]
fn error_messages_are_actionable() {
    let msg = parse_email("bob@@x.com").unwrap_err().to_string();
    assert_eq!(
        msg,
        "the email address has 2 '@' signs; it must have exactly one"
    );
    let msg = parse_email("bob@localhost").unwrap_err().to_string();
    assert!(msg.contains("at least two labels"), "{msg}");
}

#[test]
fn canonical_fast_path_takes_canonical_addresses_only() {
    for s in [
        "a@x.co",
        "user77@allowed77.com",
        "j.o.h.n+x=y#z@mail.example-1.co.uk",
        "a_b-c@1x.com",
        "a@b.c1",
    ] {
        let fast = Email::from_canonical_ascii(s).unwrap_or_else(|| panic!("{s}"));
        assert_eq!(Ok(fast), email::parse_email_full(s), "{s}");
    }
    // Valid, but not in canonical form or beyond what the one pass checks: the full parser
    // decides (and canonicalizes).
    for s in [
        "A@x.com",
        "a@X.com",
        "a@x.com.",
        "a@xn--bcher-kva.de",
        "a@bücher.de",
        "a%b@x.com",
        "a!b@x.com",
        "a'b@x.com",
        "a*b@x.com",
        "a=?b@x.com",
        ".a@x.com",
        "a.@x.com",
        "a..b@x.com",
        "a@x",
        "a@x.123",
        "a@-x.com",
        "a@x-.com",
        "a@x..com",
        "@x.com",
        "a@",
        "a@b@x.com",
        "a b@x.com",
        "",
    ] {
        assert_eq!(Email::from_canonical_ascii(s), None, "{s}");
        assert_eq!(parse_email(s), email::parse_email_full(s), "{s}");
    }
    // Whichever path takes them, both give the same answer (UTS 46 hyphen rules, numeric
    // labels, `+`/`=`/`#` at the edges).
    for s in [
        "a@ab--c.com",
        "a@xn-a.com",
        "a@1.2.com",
        "a@x.c-m",
        "a@x.c0m",
        "+@x.com",
        "-a@x.com",
        "a-@x.com",
        "#@x.com",
        "=a=@x.com",
        "a@x.co.uk.",
        "a@0x.com",
    ] {
        assert_eq!(parse_email(s), email::parse_email_full(s), "{s}");
    }
    let long_local = format!("{}@x.com", "a".repeat(65));
    let long_label = format!("a@{}.com", "b".repeat(64));
    let long_total = format!("a@{}.com", vec!["c".repeat(60); 5].join("."));
    for s in [&long_local, &long_label, &long_total] {
        assert_eq!(Email::from_canonical_ascii(s), None);
        assert!(parse_email(s).is_err());
    }
}

#[test]
fn subaddress_and_inbox_key() {
    let cases: &[(&str, bool, &str)] = &[
        ("john@gmail.com", false, "john@gmail.com"),
        ("J.o.h.n+x@googlemail.com", true, "john@gmail.com"),
        ("john.smith@gmail.com", false, "johnsmith@gmail.com"),
        ("mallory+1@acme.com", true, "mallory@acme.com"),
        ("mallory=1@acme.com", true, "mallory@acme.com"),
        ("mallory#1@acme.com", true, "mallory@acme.com"),
        ("m.allory+a+b@acme.com", true, "m.allory@acme.com"),
        ("john@mail.gmail.com", false, "john@mail.gmail.com"),
    ];
    for (input, sub, key) in cases {
        let e = parse_email(input).unwrap();
        assert_eq!(e.has_subaddress(), *sub, "{input}");
        assert_eq!(e.inbox_key(), *key, "{input}");
    }
}

#[test]
fn phones() {
    let gb = parse_region("gb").unwrap();
    let cases: &[(
        &str,
        phonenumber::country::Id,
        Result<&str, IdentifierError>,
    )] = &[
        (
            "+12025550123",
            phonenumber::country::Id::US,
            Ok("+12025550123"),
        ),
        (
            "(202) 555-0123",
            phonenumber::country::Id::US,
            Ok("+12025550123"),
        ),
        (
            "202.555.0123",
            phonenumber::country::Id::US,
            Ok("+12025550123"),
        ),
        (
            "+44 20 7946 0958",
            phonenumber::country::Id::US,
            Ok("+442079460958"),
        ),
        ("020 7946 0958", gb, Ok("+442079460958")),
        (
            "1-800-FLOWERS",
            phonenumber::country::Id::US,
            Err(IdentifierError::PhoneLetters),
        ),
        (
            "tel:+12025550123",
            phonenumber::country::Id::US,
            Err(IdentifierError::PhoneLetters),
        ),
        (
            "+1 202 555 0123 ext 5",
            phonenumber::country::Id::US,
            Err(IdentifierError::PhoneLetters),
        ),
        (
            "12+025550123",
            phonenumber::country::Id::US,
            Err(IdentifierError::PhonePlus),
        ),
        (
            "+1\t2025550123",
            phonenumber::country::Id::US,
            Err(IdentifierError::Whitespace("phone number")),
        ),
        (
            "+1*2025550123",
            phonenumber::country::Id::US,
            Err(IdentifierError::PhoneChar('*')),
        ),
        (
            "+33 1 42 68 53 00",
            phonenumber::country::Id::US,
            Ok("+33142685300"),
        ),
        ("100000000", parse_region("FR").unwrap(), Ok("+33100000000")),
        (
            "011 33 1 42 68 53 00",
            phonenumber::country::Id::US,
            Err(IdentifierError::PhoneInvalid("011 33 1 42 68 53 00".into())),
        ),
        (
            "2025550123",
            parse_region("CA").unwrap(),
            Ok("+12025550123"),
        ),
        (
            "+1 (202) 555-0123 55555555555555555",
            phonenumber::country::Id::US,
            Err(IdentifierError::TooLong {
                what: "phone number",
                len: 35,
                max: 32,
            }),
        ),
        (
            "+1",
            phonenumber::country::Id::US,
            Err(IdentifierError::PhoneUnparseable("+1".into())),
        ),
        (
            "---",
            phonenumber::country::Id::US,
            Err(IdentifierError::PhoneUnparseable("---".into())),
        ),
        (
            "+1 202 000 0000",
            phonenumber::country::Id::US,
            Err(IdentifierError::PhoneInvalid("+1 202 000 0000".into())),
        ),
        (
            "12345",
            phonenumber::country::Id::US,
            Err(IdentifierError::PhoneInvalid("12345".into())),
        ),
    ];
    for (input, region, want) in cases {
        let got = parse_phone(input, *region);
        match want {
            Ok(w) => assert_eq!(got.as_deref(), Ok(*w), "{input}"),
            Err(e) => assert_eq!(got.as_ref(), Err(e), "{input}"),
        }
    }
}

#[test]
fn regions() {
    assert_eq!(parse_region("US"), Ok(phonenumber::country::Id::US));
    assert_eq!(parse_region("gb"), Ok(phonenumber::country::Id::GB));
    for bad in ["", "USA", "zz", "1a", "ü"] {
        assert!(
            matches!(parse_region(bad), Err(IdentifierError::Region(_))),
            "{bad}"
        );
    }
}

#[test]
fn wallets() {
    let lower = format!("0x{}", "ab12".repeat(10));
    let cases: &[(String, Result<String, IdentifierError>)] = &[
        (lower.clone(), Ok(lower.clone())),
        (format!("0X{}", "AB12".repeat(10)), Ok(lower.clone())),
        (
            format!("0x{}", "ab12".repeat(9)),
            Err(IdentifierError::Wallet),
        ),
        (
            format!("0x{}g", "ab1".repeat(13)),
            Err(IdentifierError::Wallet),
        ),
        (
            format!("1x{}", "ab12".repeat(10)),
            Err(IdentifierError::Wallet),
        ),
        (
            format!("0x{}é", "ab12".repeat(9)),
            Err(IdentifierError::Wallet),
        ),
    ];
    for (input, want) in cases {
        assert_eq!(&parse_wallet(input), want, "{input}");
    }
}

#[test]
fn auto_detect() {
    let w = format!("0x{}", "AB12".repeat(10));
    type Case<'a> = (&'a str, Option<Kind>, Result<(Kind, &'a str), ()>);
    let cases: &[Case] = &[
        ("Bob@X.com", None, Ok((Kind::Email, "bob@x.com"))),
        ("+1 202-555-0123", None, Ok((Kind::Phone, "+12025550123"))),
        (
            &w,
            None,
            Ok((Kind::Wallet, "0xab12ab12ab12ab12ab12ab12ab12ab12ab12ab12")),
        ),
        ("bob", None, Err(())),
        ("", None, Err(())),
        ("0x12", None, Err(())),
        ("bob@x.com", Some(Kind::Phone), Err(())),
        ("+12025550123", Some(Kind::Email), Err(())),
    ];
    for (input, kind, want) in cases {
        let got = parse(input, *kind, &opts());
        match want {
            Ok((k, s)) => {
                let id = got.unwrap_or_else(|e| panic!("{input}: {e}"));
                assert_eq!(
                    (id.kind(), id.as_str(), id.to_string().as_str()),
                    (*k, *s, *s)
                );
            }
            Err(()) => assert!(got.is_err(), "{input}: {got:?}"),
        }
    }
    assert!(matches!(
        parse("bob", None, &opts()),
        Err(IdentifierError::Unrecognized(_))
    ));
}

#[test]
fn kind_deserializes_lowercase() {
    let k: Vec<Kind> = serde_json::from_str(r#"["email","phone","wallet"]"#).unwrap();
    assert_eq!(k, [Kind::Email, Kind::Phone, Kind::Wallet]);
    assert!(serde_json::from_str::<Kind>(r#""Email""#).is_err());
}

#[test]
fn canonical_domains() {
    let cases: &[(&str, Result<&str, ()>)] = &[
        ("Acme.COM.", Ok("acme.com")),
        ("münchen.de", Ok("xn--mnchen-3ya.de")),
        ("acme.com..", Err(())),
        ("*.acme.com", Err(())),
        ("acme", Err(())),
        ("10.0.0.1", Err(())),
        ("[::1]", Err(())),
    ];
    for (input, want) in cases {
        assert_eq!(
            canonical_domain(input).as_deref().map_err(|_| ()),
            *want,
            "{input}"
        );
    }
}

/// The LDH fast path must agree with the full UTS #46 path.
fn via_idna(s: &str) -> Option<String> {
    let mut a = idna::uts46::Uts46::new()
        .to_ascii(
            s.as_bytes(),
            idna::uts46::AsciiDenyList::STD3,
            idna::uts46::Hyphens::CheckFirstLast,
            idna::uts46::DnsLength::Ignore,
        )
        .ok()?
        .into_owned();
    if a.ends_with('.') {
        a.pop();
    }
    email::check_ldh(&a).ok()?;
    Some(a)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn never_panics_on_any_string(s in any::<String>()) {
        let _ = parse(&s, None, &opts());
        let _ = parse_email(&s);
        let _ = parse_phone(&s, phonenumber::country::Id::US);
        let _ = parse_wallet(&s);
        let _ = canonical_domain(&s);
        let _ = parse_region(&s);
    }

    #[test]
    fn never_panics_on_phone_like(s in "[+]?[0-9 ()./-]{0,32}", r in "(US|GB|DE|FR|IN|BR|JP|CN|AU|NG)") {
        let region = parse_region(&r).unwrap();
        if let Ok(p) = parse_phone(&s, region) {
            prop_assert_eq!(parse_phone(&p, region), Ok(p.clone()));
            prop_assert_eq!(parse_phone(&p, phonenumber::country::Id::US), Ok(p));
        }
    }

    #[test]
    fn email_normalization_is_idempotent(
        s in "[A-Za-z0-9._+=#-]{1,12}@([A-Za-z0-9-]{1,8}\\.){1,3}[A-Za-z]{2,6}\\.?"
    ) {
        if let Ok(e) = parse_email(&s) {
            prop_assert_eq!(parse_email(e.as_str()), Ok(e.clone()));
            let k = e.inbox_key();
            if let Ok(ke) = parse_email(&k) {
                prop_assert_eq!(ke.inbox_key(), k);
            }
        }
    }

    /// The borrowed inbox key the matcher uses is the inbox key, for any address, Gmail's
    /// included.
    #[test]
    fn borrowed_inbox_key_is_the_inbox_key(
        local in "[A-Za-z0-9._+=#-]{1,12}",
        domain in "(gmail\\.com|googlemail\\.com|mail\\.gmail\\.com|gmail\\.co|x\\.org|[a-z]{1,8}\\.[a-z]{2,4})"
    ) {
        if let Ok(e) = parse_email(&format!("{local}@{domain}")) {
            prop_assert_eq!(e.inbox_key_cow(), e.inbox_key());
        }
    }

    #[test]
    fn unicode_email_normalization_is_idempotent(
        local in "[a-z.+]{1,6}", domain in "\\PC{1,12}", tld in "(com|de|xn--zckzah|рф)"
    ) {
        let s = format!("{local}@{domain}.{tld}");
        if let Ok(id) = parse(&s, None, &opts()) {
            prop_assert_eq!(parse(id.as_str(), None, &opts()), Ok(id.clone()));
            prop_assert!(id.as_str().is_ascii());
        }
    }

    #[test]
    fn fast_path_agrees_with_idna(s in "[a-zA-Z0-9.-]{1,30}") {
        prop_assert_eq!(canonical_domain(&s).ok(), via_idna(&s));
    }

    /// The one-pass path of `parse_email` for already-canonical addresses gives exactly what
    /// the full parser gives, on strings built to sit near every boundary it checks (case,
    /// dots, hyphens, `xn--`, digits-only TLDs, label and part lengths, separators).
    #[test]
    fn canonical_fast_path_agrees_with_the_full_parser(
        local in "[a-zA-Z0-9._+=#%!?*\"-]{0,6}([a-z0-9.]{58,62})?",
        labels in proptest::collection::vec("(xn--)?[a-zA-Z0-9-]{0,5}([a-z]{58,60})?", 0..4),
        tld in "([a-z]{2,4}|[0-9]{1,3}|[a-z0-9-]{1,4}|)",
        tail in "(|\\.|@x\\.com|\\.\\.)",
    ) {
        let mut s = format!("{local}@");
        for l in &labels {
            s.push_str(l);
            s.push('.');
        }
        s.push_str(&tld);
        s.push_str(&tail);
        let full = email::parse_email_full(&s);
        if let Some(fast) = Email::from_canonical_ascii(&s) {
            prop_assert_eq!(&full, &Ok(fast.clone()), "{}", s);
            prop_assert_eq!(fast.as_str(), s.as_str());
        }
        prop_assert_eq!(parse_email(&s), full);
    }

    #[test]
    fn canonical_fast_path_agrees_on_any_string(s in any::<String>()) {
        if let Some(fast) = Email::from_canonical_ascii(&s) {
            prop_assert_eq!(email::parse_email_full(&s), Ok(fast));
        }
        prop_assert_eq!(parse_email(&s), email::parse_email_full(&s));
    }

    #[test]
    fn wallet_normalization_is_idempotent(h in "0[xX][0-9a-fA-F]{40}") {
        let id = parse(&h, None, &opts()).unwrap();
        prop_assert_eq!(id.kind(), Kind::Wallet);
        prop_assert_eq!(parse(id.as_str(), None, &opts()), Ok(id.clone()));
    }
}
