//! Fuzz target: identifier parsing and normalization (`identifier::parse`). Never panics; a
//! parsed identifier's canonical form parses again to itself with the same kind (idempotent).
#![no_main]

use idgate::identifier::{Kind, ParseOptions, parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let opts = [
        ParseOptions::default(),
        ParseOptions {
            default_region: None,
        },
    ];
    for o in &opts {
        for kind in [
            None,
            Some(Kind::Email),
            Some(Kind::Phone),
            Some(Kind::Wallet),
        ] {
            if let Ok(id) = parse(s, kind, o) {
                let again = parse(id.as_str(), Some(id.kind()), o);
                assert_eq!(again.as_ref(), Ok(&id), "not idempotent: {s:?}");
                if kind.is_none() {
                    assert_eq!(
                        parse(id.as_str(), None, o).as_ref(),
                        Ok(&id),
                        "detect: {s:?}"
                    );
                }
            }
        }
    }
});
