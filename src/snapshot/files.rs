//! List files: their content hash (what a reload compares to reuse an unchanged file's
//! matcher) and their compilation into a [`FilePart`]. A file is read in line-aligned blocks
//! of about 256 KiB, each hashed and checked as UTF-8 in one go; when compiled, the blocks are
//! parsed and keyed on worker threads ([`Staged`]) while this thread reads on and adds the
//! parsed blocks to the matcher in file order. A 1M-entry file is never held whole, as a
//! token list or as a list of parsed entries. Changed files compile in parallel.

use std::collections::BTreeMap;
use std::hash::Hasher;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};

use crate::identifier::ParseOptions;
use crate::lists::{
    ListKind, MatcherBuilder, SourceId, SourceKind, Splitter, Staged, cut, parse_entry,
};

use super::FilePart;

/// Bytes read at a time; a block ends at the last line break in it.
const BLOCK: usize = 1 << 18;

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
    /// The content, when given in memory (tests, benchmarks); `None`: the file is read again
    /// when compiled.
    pub text: Option<Arc<str>>,
}

impl ListFile {
    /// A list file whose content is given.
    pub fn from_text(path: impl Into<PathBuf>, list: ListKind, text: &str) -> ListFile {
        // Reading from memory cannot fail, and `&str` is valid UTF-8.
        let (hash, lines, bytes) = scan(text.as_bytes(), BLOCK).unwrap_or_default();
        ListFile {
            path: path.into(),
            list,
            hash,
            lines,
            bytes,
            text: Some(Arc::from(text)),
        }
    }

    /// Reads `path` once, a block at a time, to hash it and check that it is UTF-8; the
    /// entries are parsed when it is compiled.
    pub fn read(path: &Path, list: ListKind) -> std::io::Result<ListFile> {
        let (hash, lines, bytes) = scan(std::fs::File::open(path)?, BLOCK)?;
        Ok(ListFile {
            path: path.to_path_buf(),
            list,
            hash,
            lines,
            bytes,
            text: None,
        })
    }

    /// Compiles the file into its matcher and warnings: what a reload does with a file whose
    /// hash changed (public for benchmarks).
    pub fn compile(&self, opts: &ParseOptions) -> Result<FilePart, String> {
        compile_file(self, opts, workers(1))
    }
}

/// Line-aligned blocks of text read from `r`, hashed and checked as they are read.
struct Blocks<R> {
    r: R,
    block: usize,
    /// Bytes after the last line break of the previous block.
    carry: Vec<u8>,
    /// Buffers of blocks done with, reused so that reading allocates a few buffers at most.
    spare: Vec<Vec<u8>>,
    eof: bool,
    hasher: std::collections::hash_map::DefaultHasher,
    bytes: u64,
    /// Lines in the blocks returned so far.
    lines: u32,
}

/// Complete lines of the file (the last may lack its `\n`), starting at line `first`.
struct Block {
    text: String,
    first: u32,
}

impl Block {
    /// Each line (1-based number, text without the `\n`). A block ending in `\n` yields one
    /// more, empty, line, which has no entry.
    fn lines(&self) -> impl Iterator<Item = (u32, &str)> {
        let first = self.first;
        self.text.split('\n').enumerate().map(move |(i, l)| {
            (
                first.saturating_add(u32::try_from(i).unwrap_or(u32::MAX)),
                l,
            )
        })
    }
}

impl<R: Read> Blocks<R> {
    fn new(r: R, block: usize) -> Self {
        Blocks {
            r,
            block: block.max(1),
            carry: Vec::new(),
            spare: Vec::new(),
            eof: false,
            hasher: std::collections::hash_map::DefaultHasher::new(),
            bytes: 0,
            lines: 0,
        }
    }

    /// Appends up to `n` more bytes to `buf`; fewer means the end of the input.
    fn read_more(&mut self, buf: &mut Vec<u8>, n: usize) -> std::io::Result<()> {
        let want = u64::try_from(n).unwrap_or(u64::MAX);
        let got = (&mut self.r).take(want).read_to_end(buf)?;
        if (got as u64) < want {
            self.eof = true;
        }
        Ok(())
    }

    /// The next block; `None` at the end. Invalid UTF-8 is an `InvalidData` error naming the
    /// line, as `read_to_string` reports it.
    fn next_block(&mut self) -> std::io::Result<Option<Block>> {
        let mut buf = self.spare.pop().unwrap_or_default();
        buf.clear();
        buf.reserve(self.block + self.carry.len());
        buf.extend_from_slice(&self.carry);
        self.carry.clear();
        let cut = loop {
            if !self.eof && buf.len() < self.block {
                let n = self.block - buf.len();
                self.read_more(&mut buf, n)?;
                continue;
            }
            if self.eof {
                break buf.len();
            }
            match buf.iter().rposition(|&b| b == b'\n') {
                Some(i) => break i + 1,
                // A line longer than a block: read on.
                None => {
                    let n = self.block;
                    self.read_more(&mut buf, n)?;
                }
            }
        };
        if cut == 0 {
            return Ok(None);
        }
        self.carry
            .extend_from_slice(buf.get(cut..).unwrap_or_default());
        buf.truncate(cut);
        self.hasher.write(&buf);
        self.bytes += buf.len() as u64;
        let first = self.lines.saturating_add(1);
        let text = String::from_utf8(buf).map_err(|e| {
            let valid = e.utf8_error().valid_up_to();
            let before = e.as_bytes().get(..valid).unwrap_or_default();
            let n = first.saturating_add(newlines(before));
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("line {n} is not valid UTF-8"),
            )
        })?;
        let mut lines = newlines(text.as_bytes());
        if !text.ends_with('\n') {
            lines = lines.saturating_add(1);
        }
        self.lines = self.lines.saturating_add(lines);
        Ok(Some(Block { text, first }))
    }

    /// Gives back a block's buffer for the next blocks.
    fn recycle(&mut self, block: Block) {
        if self.spare.len() < 8 {
            self.spare.push(block.text.into_bytes());
        }
    }

    /// The content hash and length, once every block was read.
    fn finish(mut self) -> (u64, u64) {
        self.hasher.write_u64(self.bytes);
        (self.hasher.finish(), self.bytes)
    }
}

fn newlines(b: &[u8]) -> u32 {
    u32::try_from(memchr::memchr_iter(b'\n', b).count()).unwrap_or(u32::MAX)
}

/// Lines of `text` that are not blank or a comment (what a file's matcher is sized for).
fn entry_lines(text: &[u8]) -> usize {
    let mut start = 0;
    memchr::memchr_iter(b'\n', text)
        .chain(std::iter::once(text.len()))
        .filter(|&end| {
            let line = text.get(start..end).unwrap_or_default();
            start = end + 1;
            line.iter()
                .find(|c| !c.is_ascii_whitespace())
                .is_some_and(|&c| c != b'#')
        })
        .count()
}

/// Reads `r` to the end and returns the content hash, the number of lines that are not blank
/// or a comment, and of bytes.
fn scan(r: impl Read, block: usize) -> std::io::Result<(u64, usize, u64)> {
    let mut blocks = Blocks::new(r, block);
    let mut entries = 0usize;
    while let Some(b) = blocks.next_block()? {
        entries += entry_lines(b.text.as_bytes());
        blocks.recycle(b);
    }
    let (hash, bytes) = blocks.finish();
    Ok((hash, entries, bytes))
}

/// Threads to parse one file's blocks on when `files` files compile at once: the cores left
/// to each (none: the compiling thread parses them itself).
fn workers(files: usize) -> usize {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    if cores < 2 {
        0
    } else {
        (cores / files.max(1)).max(1)
    }
}

/// Parses the entries of one block into `Staged` keys, and its rejected lines into warnings.
/// `seen_content`: whether an earlier block had an entry (the header rule is done with).
fn stage(
    block: &Block,
    seen_content: bool,
    mut staged: Staged,
    opts: &ParseOptions,
    path: &str,
) -> (Staged, Vec<String>) {
    let list = staged.list();
    staged.clear();
    let mut warnings = Vec::new();
    let mut splitter = Splitter::resume(seen_content);
    for (n, raw) in block.lines() {
        splitter.line(n, raw, |t| match parse_entry(t.text, list, opts) {
            Ok(entry) => staged.push(&entry, Some(t.line)),
            // Quoted in part: a warning is logged and reported by the status API, and a
            // line may be megabytes long.
            Err(e) => warnings.push(format!(
                "{path}: line {}: `{}`: {} (line skipped)",
                t.line,
                cut(t.text, 120),
                cut(&e.to_string(), 200)
            )),
        });
    }
    (staged, warnings)
}

/// Whether the header rule is done with after `block`, given that it was (`seen`) before it.
fn seen_after(block: &Block, seen: bool) -> bool {
    if seen {
        return true;
    }
    let mut splitter = Splitter::resume(false);
    block.lines().any(|(n, raw)| {
        splitter.line(n, raw, |_| {});
        splitter.seen_content()
    })
}

/// Compiles one list file: reads it a block at a time and parses the blocks on `workers`
/// threads (0: on this one), adding them to the matcher in file order and keeping every
/// rejected line as a warning. The part's hash is that of the content compiled (the file may
/// have changed since [`ListFile::read`]; the next reload then sees it).
pub(super) fn compile_file(
    file: &ListFile,
    opts: &ParseOptions,
    workers: usize,
) -> Result<FilePart, String> {
    compile_in_blocks(file, opts, workers, BLOCK)
}

fn compile_in_blocks(
    file: &ListFile,
    opts: &ParseOptions,
    workers: usize,
    block: usize,
) -> Result<FilePart, String> {
    let path: Arc<str> = Arc::from(file.path.display().to_string());
    let built = match &file.text {
        Some(text) => compile_blocks(
            Blocks::new(text.as_bytes(), block),
            file,
            opts,
            &path,
            workers,
        ),
        None => std::fs::File::open(&file.path)
            .and_then(|f| compile_blocks(Blocks::new(f, block), file, opts, &path, workers)),
    };
    built.map_err(|e| format!("{path}: cannot read list file: {e}"))
}

/// A block parsed, with its buffers to reuse.
struct Parsed {
    block: Block,
    staged: Staged,
    warnings: Vec<String>,
}

/// What the reading thread does with a parsed block, in file order.
struct Adder<'a, R> {
    builder: MatcherBuilder,
    source: SourceId,
    warnings: Vec<String>,
    blocks: &'a mut Blocks<R>,
    /// Staging buffers to reuse.
    spare: Vec<Staged>,
}

impl<R: Read> Adder<'_, R> {
    fn add(&mut self, p: Parsed) {
        self.builder.add_staged(&p.staged, self.source);
        self.warnings.extend(p.warnings);
        self.blocks.recycle(p.block);
        self.spare.push(p.staged);
    }

    fn staged(&mut self, list: ListKind) -> Staged {
        // About one entry per 24 bytes in the usual one-address-per-line file.
        let block = self.blocks.block;
        self.spare
            .pop()
            .unwrap_or_else(|| Staged::with_capacity(list, block / 24, block))
    }
}

fn compile_blocks<R: Read>(
    mut blocks: Blocks<R>,
    file: &ListFile,
    opts: &ParseOptions,
    path: &Arc<str>,
    workers: usize,
) -> std::io::Result<FilePart> {
    // Sized for what `ListFile::read` saw (one entry per line is the usual shape).
    let mut builder = MatcherBuilder::with_capacity(
        file.list,
        file.lines,
        usize::try_from(file.bytes).unwrap_or(0),
    );
    let source = builder.source(SourceKind::File { path: path.clone() });
    let mut add = Adder {
        builder,
        source,
        warnings: Vec::new(),
        blocks: &mut blocks,
        spare: Vec::new(),
    };
    let mut seen = false;
    if workers == 0 {
        while let Some(block) = add.blocks.next_block()? {
            let staged = add.staged(file.list);
            let (staged, warnings) = stage(&block, seen, staged, opts, path);
            seen = seen_after(&block, seen);
            add.add(Parsed {
                block,
                staged,
                warnings,
            });
        }
    } else {
        // Blocks read but not yet added: at most this many are in memory at once.
        let ahead = 2 * workers + 1;
        let (jobs, job_rx) = mpsc::channel::<(usize, Block, bool, Staged)>();
        let job_rx = Mutex::new(job_rx);
        let (done_tx, done) = mpsc::channel::<(usize, Parsed)>();
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..workers)
                .map(|_| {
                    let done_tx = done_tx.clone();
                    let job_rx = &job_rx;
                    scope.spawn(move || {
                        loop {
                            let job = job_rx
                                .lock()
                                .map_or_else(|e| e.into_inner().recv(), |rx| rx.recv());
                            let Ok((i, block, seen, staged)) = job else {
                                break;
                            };
                            let (staged, warnings) = stage(&block, seen, staged, opts, path);
                            let parsed = Parsed {
                                block,
                                staged,
                                warnings,
                            };
                            if done_tx.send((i, parsed)).is_err() {
                                break;
                            }
                        }
                    })
                })
                .collect();
            drop(done_tx);
            let mut pending = BTreeMap::new();
            let (mut sent, mut added) = (0usize, 0usize);
            let mut add_ready = |add: &mut Adder<'_, R>, pending: &mut BTreeMap<usize, Parsed>| {
                while let Some(p) = pending.remove(&added) {
                    add.add(p);
                    added += 1;
                }
                added
            };
            let result = (|| -> std::io::Result<()> {
                let lost = || std::io::Error::other("a list-parsing thread stopped");
                let mut done_so_far = 0;
                loop {
                    while sent - done_so_far >= ahead {
                        let (i, p) = done.recv().map_err(|_| lost())?;
                        pending.insert(i, p);
                        done_so_far = add_ready(&mut add, &mut pending);
                    }
                    let Some(block) = add.blocks.next_block()? else {
                        break;
                    };
                    let next_seen = seen_after(&block, seen);
                    let staged = add.staged(file.list);
                    jobs.send((sent, block, seen, staged)).map_err(|_| lost())?;
                    seen = next_seen;
                    sent += 1;
                    while let Ok((i, p)) = done.try_recv() {
                        pending.insert(i, p);
                    }
                    done_so_far = add_ready(&mut add, &mut pending);
                }
                while done_so_far < sent {
                    let (i, p) = done.recv().map_err(|_| lost())?;
                    pending.insert(i, p);
                    done_so_far = add_ready(&mut add, &mut pending);
                }
                Ok(())
            })();
            // Workers stop once the job queue is closed and empty.
            drop(jobs);
            for h in handles {
                let _ = h.join();
            }
            result
        })?;
    }
    let (builder, warnings) = (add.builder, add.warnings);
    let (hash, bytes) = blocks.finish();
    Ok(FilePart {
        path: file.path.clone(),
        hash,
        bytes,
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
    let per_file = workers(files.len());
    if threads == 1 {
        return files
            .iter()
            .map(|f| compile_file(f, opts, per_file))
            .collect();
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
                        out.push((i, compile_file(f, opts, per_file)));
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

    /// A file read in blocks of any size, compiled on any number of threads, yields the
    /// entries (first occurrence wins, in file order), lines, warnings (in order) and hash
    /// that its whole text does.
    #[test]
    fn streamed_files_keep_lines_warnings_and_hash() {
        let text: String = (0..10_000)
            .map(|i| match i {
                0 => "\u{feff}email,\"u0@x0.com\" # header\n".to_owned(),
                7777 | 2222 => format!("oops{i}@@x\n"),
                // Duplicates of earlier lines (same key): the first one is kept.
                5000 => "U1@X1.com\n".to_owned(),
                9000 => "u2+tag@x2.com, \"u9000@x0.com\"\n".to_owned(),
                3333 => "# comment\n\n".to_owned(),
                _ => format!("u{i}@x{}.com\n", i % 10),
            })
            .collect();
        let text = format!("{text}u10000@x0.com");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.txt");
        std::fs::write(&path, &text).unwrap();
        let on_disk = ListFile::read(&path, ListKind::Block).unwrap();
        let given = ListFile::from_text(&path, ListKind::Block, &text);
        assert_eq!(on_disk.hash, given.hash);
        assert_eq!((on_disk.lines, on_disk.bytes), (given.lines, given.bytes));
        assert_eq!(on_disk.lines, 10_000);
        for block in [1, 7, 100, 4096] {
            assert_eq!(
                scan(text.as_bytes(), block).unwrap(),
                (given.hash, given.lines, given.bytes),
                "block {block}"
            );
        }
        assert_ne!(
            on_disk.hash,
            ListFile::from_text(&path, ListKind::Block, &text[3..]).hash
        );
        let (entries, errors) =
            crate::lists::parse_entries(&text, ListKind::Block, &ParseOptions::default());
        assert_eq!(errors.len(), 2);
        let mut reference = MatcherBuilder::new(ListKind::Block);
        for (e, line) in entries {
            reference.add(
                e,
                crate::lists::Source {
                    kind: SourceKind::File {
                        path: Arc::from(path.display().to_string()),
                    },
                    line: Some(line),
                },
            );
        }
        let reference: Vec<_> = reference.build().iter().collect();
        assert_eq!(reference.len(), 9_997);
        for file in [&on_disk, &given] {
            for (workers, block) in [(0, BLOCK), (1, 64), (2, 1000), (3, 7), (2, BLOCK)] {
                let part =
                    compile_in_blocks(file, &ParseOptions::default(), workers, block).unwrap();
                let what = format!("{workers} workers, blocks of {block}");
                assert_eq!(part.hash, file.hash, "{what}");
                assert_eq!(part.matcher.iter().collect::<Vec<_>>(), reference, "{what}");
                assert_eq!(part.warnings.len(), 2, "{what}");
                assert!(
                    part.warnings[0].contains("line 2223"),
                    "{:?}",
                    part.warnings
                );
                assert!(
                    part.warnings[1].contains("line 7779"),
                    "{:?}",
                    part.warnings
                );
                let (entry, source) = part.matcher.get_by_key("x:u9999@x9.com").unwrap();
                assert_eq!(entry, "u9999@x9.com");
                assert_eq!(source.line, Some(10_001));
                assert_eq!(
                    part.matcher.get_by_key("x:u0@x0.com").unwrap().1.line,
                    Some(1)
                );
                assert_eq!(
                    part.matcher.get_by_key("x:u1@x1.com").unwrap(),
                    ("u1@x1.com".to_owned(), file_source(&path, 2))
                );
                assert_eq!(
                    part.matcher.get_by_key("x:u2@x2.com").unwrap().1.line,
                    Some(3)
                );
                assert_eq!(
                    part.matcher.get_by_key("x:u10000@x0.com").unwrap().1.line,
                    Some(10_002)
                );
            }
        }
    }

    fn file_source(path: &Path, line: u32) -> crate::lists::Source {
        crate::lists::Source {
            kind: SourceKind::File {
                path: Arc::from(path.display().to_string()),
            },
            line: Some(line),
        }
    }

    /// The header rule looks at the first line with an entry, wherever the block boundaries
    /// fall: a header after blank and comment lines is skipped, a later header word is an
    /// entry (here a rejected one).
    #[test]
    fn the_header_is_found_across_block_boundaries() {
        let text = "# list\n\n   \n# more\nEmail\nemail\na@x.com\n";
        let file = ListFile::from_text("h.txt", ListKind::Allow, text);
        for (workers, block) in [(0, 1), (2, 1), (2, 5), (1, 3), (0, BLOCK)] {
            let part = compile_in_blocks(&file, &ParseOptions::default(), workers, block).unwrap();
            assert_eq!(part.matcher.len(), 1);
            assert_eq!(part.warnings.len(), 1, "{:?}", part.warnings);
            assert!(
                part.warnings[0].contains("line 6: `email`"),
                "{:?}",
                part.warnings
            );
        }
    }

    #[test]
    fn unreadable_and_non_utf8_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.txt");
        std::fs::write(&path, b"a@x.com\nb\xff@x.com\n").unwrap();
        let e = ListFile::read(&path, ListKind::Allow).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("line 2"), "{e}");
        for block in [1, 3, 9, BLOCK] {
            let e = scan(&b"a@x.com\nb@x.com\n\nc\xff@x.com\n"[..], block).unwrap_err();
            assert!(e.to_string().contains("line 4 "), "{block}: {e}");
        }
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
