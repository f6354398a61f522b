//! Fuzz target: `gate::route::normalize` and `RouteTable::find`. Never panics; the normal form
//! starts with `/` and is idempotent; a path whose normal form is a gated route never matches
//! as ungated.
#![no_main]

use idgate::gate::route::{PathMatch, RouteTable, normalize};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let s = String::from_utf8_lossy(data);
    let once = normalize(&s);
    assert!(once.starts_with('/'), "{s:?} -> {once:?}");
    assert_eq!(normalize(&once), once, "not idempotent: {s:?}");
    let t = RouteTable::new(["/api/sign-up", "/a", "/x.y/z"]);
    let m = t.find(&s);
    if ["/api/sign-up", "/a", "/x.y/z"].contains(&once.as_str()) {
        assert!(
            !matches!(m, PathMatch::Ungated),
            "{s:?} normalizes to a gated route but is ungated"
        );
    }
});
