//! Benchmarks for the hot path of a gated request: identifier parsing, `Candidate::new`, and
//! matcher lookups at 1k, 20k and 1M entries (hit and miss, exact and domain), and what a
//! reload does with a replaced 1M-entry list file.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use idgate::identifier::{self, ParseOptions};
use idgate::lists::{Candidate, Entry, ListKind, Matcher, MatcherBuilder, Source, SourceKind};

fn id(s: &str) -> identifier::Identifier {
    match identifier::parse(s, None, &ParseOptions::default()) {
        Ok(id) => id,
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
            let ids = [
                id(&format!("user{mid}@example{}.com", mid % 1000)),
                id("nobody@example1.com"),
                id(&format!("x@d{}.org", mid + 1)),
                id(&format!("x@mx.d{}.org", mid + 1)),
                id("x@mail.unknown-domain.org"),
            ];
            let [exact_hit, exact_miss, domain_hit, sub_hit, domain_miss] =
                ids.each_ref().map(Candidate::new);
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
    g.bench_function("phone_e164", |b| {
        b.iter(|| identifier::parse(black_box("+12025550123"), None, &opts))
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

/// A snapshot with `n` entries in each list, compiled from list-file text like a real reload.
fn snapshot(n: u32) -> idgate::snapshot::Snapshot {
    let text = "listen: [{ addr: 127.0.0.1:0 }]\nupstream: http://127.0.0.1:1\nlists:\n  max_entries: 2000000\nroutes:\n  - { name: sign-up, path: /api/sign-up, kind: sign_up, identifier: [{ json: /email }, { form: email }] }\n";
    let config = idgate::config::from_str(text, std::path::Path::new("bench.yaml"))
        .unwrap_or_else(|e| panic!("{e}"));
    let mut allow = String::new();
    let mut block = String::new();
    for i in 0..n {
        allow.push_str(&format!("user{i}@allowed{}.com\n", i % 5000));
        block.push_str(&format!("user{i}@blocked{}.com\n", i % 5000));
    }
    let list = |list, text: String| idgate::snapshot::ListFile::from_text("bench.txt", list, &text);
    let inputs = idgate::snapshot::Inputs {
        config_path: "bench.yaml".into(),
        config,
        list_files: vec![list(ListKind::Allow, allow), list(ListKind::Block, block)],
        store: idgate::snapshot::StoreView::default(),
    };
    idgate::snapshot::compile(&inputs, 1).unwrap_or_else(|e| panic!("{e}"))
}

/// `decide` alone, and extraction + parsing + decision of a JSON sign-up (the gate's CPU work
/// per gated request), against lists of 1M entries each.
fn requests(c: &mut Criterion) {
    let snap = snapshot(1_000_000);
    let route = &snap.routes[0];
    let mut g = c.benchmark_group("request");
    for (name, email) in [
        ("allowed", "user77@allowed77.com"),
        ("blocked", "user78@blocked78.com"),
        ("not_allowlisted", "someone@elsewhere.net"),
    ] {
        let id = match identifier::parse(email, None, &snap.identifiers) {
            Ok(id) => id,
            Err(e) => panic!("{e}"),
        };
        g.bench_function(BenchmarkId::new("decide_1M", name), |b| {
            b.iter(|| black_box(idgate::gate::decide(&snap, route, black_box(&id)).is_allowed()))
        });
        let body = format!(r#"{{"email":"{email}","password":"correct horse battery staple"}}"#);
        let req = http::Request::post("/api/sign-up")
            .header("host", "app.example")
            .header("content-type", "application/json")
            .header("content-length", body.len())
            .body(())
            .unwrap_or_else(|e| panic!("{e}"));
        let (parts, ()) = req.into_parts();
        let spec = idgate::gate::extract::Spec {
            sources: &route.sources,
            max_depth: snap.max_json_depth,
            max_decoded: route.body_limit,
        };
        g.bench_function(
            BenchmarkId::new("extract_parse_decide_json_1M", name),
            |b| {
                b.iter(|| {
                    let found = idgate::gate::extract::extract(&parts, body.as_bytes(), &spec);
                    let found = found.unwrap_or_else(|e| panic!("{e}"));
                    let id = identifier::parse(&found[0].raw, None, &snap.identifiers);
                    let id = id.unwrap_or_else(|e| panic!("{e}"));
                    black_box(idgate::gate::decide(&snap, route, &id).is_allowed())
                })
            },
        );
    }
    g.finish();
}

/// What a reload does with a replaced 1M-entry list file (the shape `benches/load/run.py
/// --reload` writes): hash it (`read`, also what every reload does to an unchanged file) and
/// compile it into its matcher (`compile`).
fn reload(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("allow.txt");
    let text: String = (0..1_000_000u32)
        .map(|i| format!("user{i}@allowed{}new.com\n", i % 5000))
        .collect();
    std::fs::write(&path, &text).unwrap_or_else(|e| panic!("{e}"));
    let opts = ParseOptions::default();
    let mut g = c.benchmark_group("reload_1M_file");
    g.sample_size(10);
    for list in [ListKind::Allow, ListKind::Block] {
        let file = idgate::snapshot::ListFile::read(&path, list).unwrap_or_else(|e| panic!("{e}"));
        g.bench_function(BenchmarkId::new("compile", list), |b| {
            b.iter(|| black_box(file.compile(&opts).map(|p| p.matcher.len())))
        });
    }
    g.bench_function("read", |b| {
        b.iter(|| {
            black_box(idgate::snapshot::ListFile::read(&path, ListKind::Allow).map(|f| f.hash))
        })
    });
    g.finish();
}

criterion_group!(benches, lookups, parsing, requests, reload);
criterion_main!(benches);
