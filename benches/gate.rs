//! Benchmarks for the hot path of a gated request: identifier parsing, `Candidate::new`, and
//! matcher lookups at 1k, 20k and 1M entries (hit and miss, exact and domain).

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use idgate::identifier::{self, ParseOptions};
use idgate::lists::{Candidate, Entry, ListKind, Matcher, MatcherBuilder, Source, SourceKind};

fn candidate(s: &str) -> Candidate {
    match identifier::parse(s, None, &ParseOptions::default()) {
        Ok(id) => Candidate::new(&id),
        Err(e) => panic!("{s}: {e}"),
    }
}

/// Half exact emails, half `*@domain` entries.
fn build(list: ListKind, n: u32) -> Matcher {
    let mut b = MatcherBuilder::new(list);
    let source = SourceKind::File {
        path: "lists/bench.txt".into(),
    };
    for i in 0..n {
        let entry = if i % 2 == 0 {
            match identifier::parse_email(&format!("user{i}@example{}.com", i % 1000)) {
                Ok(e) => Entry::Exact(identifier::Identifier::Email(e)),
                Err(e) => panic!("{e}"),
            }
        } else {
            Entry::Domain(format!("d{i}.org"))
        };
        b.add(
            entry,
            Source {
                kind: source.clone(),
                line: Some(i + 1),
            },
        );
    }
    b.build()
}

fn lookups(c: &mut Criterion) {
    for n in [1_000u32, 20_000, 1_000_000] {
        for list in [ListKind::Allow, ListKind::Block] {
            let m = build(list, n);
            let mid = n / 2;
            let exact_hit = candidate(&format!("user{mid}@example{}.com", mid % 1000));
            let exact_miss = candidate("nobody@example1.com");
            let domain_hit = candidate(&format!("x@d{}.org", mid + 1));
            let sub_hit = candidate(&format!("x@mx.d{}.org", mid + 1));
            let domain_miss = candidate("x@mail.unknown-domain.org");
            let mut g = c.benchmark_group(format!("lookup/{list}/{n}"));
            for (name, cand) in [
                ("exact_hit", &exact_hit),
                ("exact_miss", &exact_miss),
                ("domain_hit", &domain_hit),
                ("subdomain", &sub_hit),
                ("domain_miss", &domain_miss),
            ] {
                g.bench_with_input(BenchmarkId::from_parameter(name), cand, |b, cand| {
                    b.iter(|| black_box(m.lookup(black_box(cand)).is_some()))
                });
            }
            g.finish();
            if n == 1_000_000 {
                eprintln!(
                    "{list} matcher, {n} entries: ~{} MiB heap",
                    m.heap_bytes() / (1024 * 1024)
                );
            }
        }
    }
}

fn parsing(c: &mut Criterion) {
    let opts = ParseOptions::default();
    let mut g = c.benchmark_group("parse");
    g.bench_function("email", |b| {
        b.iter(|| identifier::parse(black_box("John.Smith+news@Example.COM"), None, &opts))
    });
    g.bench_function("email_idn", |b| {
        b.iter(|| identifier::parse(black_box("user@bücher.de"), None, &opts))
    });
    g.bench_function("phone", |b| {
        b.iter(|| identifier::parse(black_box("+1 (202) 555-0123"), None, &opts))
    });
    g.finish();

    let email = identifier::parse("j.o.h.n+x@mail.example.co.uk", None, &opts);
    let phone = identifier::parse("+12025550123", None, &opts);
    let (Ok(email), Ok(phone)) = (email, phone) else {
        panic!("bench inputs must parse")
    };
    let mut g = c.benchmark_group("candidate_new");
    g.bench_function("email", |b| b.iter(|| Candidate::new(black_box(&email))));
    g.bench_function("phone", |b| b.iter(|| Candidate::new(black_box(&phone))));
    g.finish();
}

criterion_group!(benches, lookups, parsing);
criterion_main!(benches);
