//! List files: their content hash (what a reload compares to reuse an unchanged file's
//! matcher) and their compilation into a [`FilePart`], streamed line by line straight into the
//! matcher's arena: a 1M-entry file is never held as one string, a token list or a list of
//! parsed entries. Changed files compile in parallel, one per core.

use std::hash::Hasher;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::identifier::ParseOptions;
use crate::lists::{ListKind, MatcherBuilder, SourceKind, Splitter, parse_entry};

use super::FilePart;

/// One list file named by the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListFile {
    pub path: PathBuf,
    pub list: ListKind,
    /// Hash of the content seen when the file was read (see [`ListFile::read`]).
    pub hash: u64,
    /// Lines with an entry or a header (not blank, not a comment) and bytes seen then: the
    /// size the file's matcher is built for.
    pub lines: usize,
    pub bytes: u64,
    /// The content, when given in memory (tests, benchmarks); `None`: the file is read again,
    /// line by line, when compiled.
    pub text: Option<Arc<str>>,
}

impl ListFile {
    /// A list file whose content is given.
    pub fn from_text(path: impl Into<PathBuf>, list: ListKind, text: &str) -> ListFile {
        // Reading from memory cannot fail, and `&str` is valid UTF-8.
        let (hash, lines, bytes) = stream(text.as_bytes(), |_, _| {}).unwrap_or_default();
        ListFile {
            path: path.into(),
            list,
            hash,
            lines,
            bytes,
            text: Some(Arc::from(text)),
        }
    }

    /// Reads `path` once, line by line, to hash it and check that it is UTF-8; the entries are
    /// parsed when it is compiled.
    pub fn read(path: &Path, list: ListKind) -> std::io::Result<ListFile> {
        let file = std::fs::File::open(path)?;
        let (hash, lines, bytes) = stream(BufReader::with_capacity(1 << 16, file), |_, _| {})?;
        Ok(ListFile {
            path: path.to_path_buf(),
            list,
            hash,
            lines,
            bytes,
            text: None,
        })
    }
}

/// Calls `each` with every line (1-based number, text without the `\n`) and returns the
/// content hash, the number of lines that are not blank or a comment, and of bytes. Invalid UTF-8 is an `InvalidData` error, as `read_to_string` reports it.
fn stream(
    mut r: impl BufRead,
    mut each: impl FnMut(u32, &str),
) -> std::io::Result<(u64, usize, u64)> {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    let mut buf = Vec::with_capacity(256);
    let mut n = 0u32;
    let mut len = 0u64;
    let mut entries = 0usize;
    loop {
        buf.clear();
        if r.read_until(b'\n', &mut buf)? == 0 {
            break;
        }
        hasher.write(&buf);
        len += buf.len() as u64;
        n = n.saturating_add(1);
        let line = buf.strip_suffix(b"\n").unwrap_or(&buf);
        let line = std::str::from_utf8(line).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("line {n} is not valid UTF-8"),
            )
        })?;
        if line
            .trim_start_matches(|c: char| c.is_ascii_whitespace())
            .bytes()
            .next()
            .is_some_and(|b| b != b'#')
        {
            entries += 1;
        }
        each(n, line);
    }
    hasher.write_u64(len);
    Ok((hasher.finish(), entries, len))
}

/// Compiles one list file: streams it into a matcher, keeping every rejected line as a
/// warning. The part's hash is that of the content compiled (the file may have changed since
/// [`ListFile::read`]; the next reload then sees it).
pub(super) fn compile_file(file: &ListFile, opts: &ParseOptions) -> Result<FilePart, String> {
    let path: Arc<str> = Arc::from(file.path.display().to_string());
    // Sized for what `ListFile::read` saw (one entry per line is the usual shape).
    let mut builder = MatcherBuilder::with_capacity(
        file.list,
        file.lines,
        usize::try_from(file.bytes).unwrap_or(0),
    );
    let source = builder.source(SourceKind::File { path: path.clone() });
    let mut warnings = Vec::new();
    let mut splitter = Splitter::default();
    let mut each = |n: u32, line: &str| {
        splitter.line(n, line, |t| match parse_entry(t.text, file.list, opts) {
            Ok(entry) => builder.add_at(&entry, source, Some(t.line)),
            Err(e) => warnings.push(format!(
                "{path}: line {}: `{}`: {e} (line skipped)",
                t.line, t.text
            )),
        });
    };
    let (hash, _, _) = match &file.text {
        Some(text) => stream(text.as_bytes(), &mut each),
        None => std::fs::File::open(&file.path)
            .and_then(|f| stream(BufReader::with_capacity(1 << 16, f), &mut each)),
    }
    .map_err(|e| format!("{path}: cannot read list file: {e}"))?;
    Ok(FilePart {
        path: file.path.clone(),
        hash,
        matcher: builder.build(),
        warnings,
    })
}

/// Compiles `files` in parallel, one file per thread on up to as many threads as cores;
/// results in the order given.
pub(super) fn compile_files(
    files: &[&ListFile],
    opts: &ParseOptions,
) -> Vec<Result<FilePart, String>> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, files.len().max(1));
    if threads == 1 {
        return files.iter().map(|f| compile_file(f, opts)).collect();
    }
    let next = AtomicUsize::new(0);
    let mut done: Vec<(usize, Result<FilePart, String>)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut out = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(f) = files.get(i) else { break };
                        out.push((i, compile_file(f, opts)));
                    }
                    out
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap_or_default())
            .collect()
    });
    done.sort_by_key(|(i, _)| *i);
    // A worker that panicked leaves its files out: report them instead of dropping them.
    let mut out: Vec<Result<FilePart, String>> = Vec::with_capacity(files.len());
    let mut done = done.into_iter().peekable();
    for (i, f) in files.iter().enumerate() {
        match done.next_if(|(j, _)| *j == i) {
            Some((_, r)) => out.push(r),
            None => out.push(Err(format!(
                "{}: list file could not be compiled",
                f.path.display()
            ))),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streamed_files_keep_lines_warnings_and_hash() {
        let text: String = (0..10_000)
            .map(|i| {
                if i == 7777 {
                    "oops@@x\n".to_owned()
                } else if i == 0 {
                    "\u{feff}email,\"u0@x0.com\" # header\n".to_owned()
                } else {
                    format!("u{i}@x{}.com\n", i % 10)
                }
            })
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.txt");
        std::fs::write(&path, &text).unwrap();
        let on_disk = ListFile::read(&path, ListKind::Block).unwrap();
        let given = ListFile::from_text(&path, ListKind::Block, &text);
        assert_eq!(on_disk.hash, given.hash);
        assert_ne!(
            on_disk.hash,
            ListFile::from_text(&path, ListKind::Block, &text[3..]).hash
        );
        for file in [&on_disk, &given] {
            let part = compile_file(file, &ParseOptions::default()).unwrap();
            assert_eq!(part.hash, file.hash);
            assert_eq!(part.matcher.len(), 9_999);
            assert_eq!(part.warnings.len(), 1);
            assert!(
                part.warnings[0].contains("line 7778"),
                "{:?}",
                part.warnings
            );
            let (entry, source) = part.matcher.get_by_key("x:u9999@x9.com").unwrap();
            assert_eq!(entry, "u9999@x9.com");
            assert_eq!(source.line, Some(10_000));
            assert_eq!(
                part.matcher.get_by_key("x:u0@x0.com").unwrap().1.line,
                Some(1)
            );
        }
        // The streamed form accepts exactly what the whole-text parser accepts.
        let (entries, errors) =
            crate::lists::parse_entries(&text, ListKind::Block, &ParseOptions::default());
        assert_eq!((entries.len(), errors.len()), (9_999, 1));
    }

    #[test]
    fn unreadable_and_non_utf8_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.txt");
        std::fs::write(&path, b"a@x.com\nb\xff@x.com\n").unwrap();
        let e = ListFile::read(&path, ListKind::Allow).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("line 2"), "{e}");
        assert!(ListFile::read(&dir.path().join("missing.txt"), ListKind::Allow).is_err());
        let gone = ListFile {
            path: dir.path().join("missing.txt"),
            list: ListKind::Allow,
            hash: 0,
            lines: 0,
            bytes: 0,
            text: None,
        };
        let files = [&gone, &gone];
        let out = compile_files(&files, &ParseOptions::default());
        assert_eq!(out.len(), 2);
        assert!(
            out.iter()
                .all(|r| r.as_ref().is_err_and(|e| e.contains("cannot read")))
        );
    }
}
