//! `idgate lists import|export|clear`: bulk list tools that talk to a running gate's admin
//! API (the Magic access-control endpoint, [`crate::admin::magic`]), so every change goes
//! through the same validation, limit and one-transaction-per-call path as any API client.
//!
//! Owns the clap arguments of `idgate lists`, the file reading and local validation of an
//! import (so malformed lines are reported with their line numbers and the rest still goes
//! in), chunking, the progress bar (indicatif, on stderr, hidden when stderr is not a
//! terminal), the summary, and the small HTTP client ([`client`]).
//!
//! Import: each file is tokenized like a list file ([`crate::lists::split_entries`]: one per
//! line or CSV, a header such as `email` skipped, quotes stripped), every entry normalized
//! with [`crate::lists::parse_entry`], duplicates dropped, and the valid entries sent in
//! chunks of `--chunk-size` as `PATCH` (append) calls: each chunk is one store transaction.

pub mod client;

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};

use self::client::AdminClient;
use crate::identifier::ParseOptions;
use crate::lists::{ListKind, parse_entry, split_entries};

/// Why a `lists` command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The output could not be written.
    #[error("writing the output: {0}")]
    Write(std::io::Error),
    /// The arguments make no sense together.
    #[error("{0}")]
    Usage(String),
    /// `--url` is not an `http://host:port` URL.
    #[error("invalid admin URL {url:?}: {reason}")]
    Url {
        /// The URL given.
        url: String,
        /// Why.
        reason: String,
    },
    /// The admin API could not be reached.
    #[error("cannot reach the admin API at {url}: {message}")]
    Connect {
        /// The URL.
        url: String,
        /// Why.
        message: String,
    },
    /// The admin API refused a call (Magic envelope, `status: failed`).
    #[error("the admin API refused the call ({status} {code}): {message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// `error_code`.
        code: String,
        /// `message`.
        message: String,
    },
    /// The answer was not what the API documents.
    #[error("unexpected answer from the admin API: {0}")]
    Protocol(String),
}

/// Where the running gate's admin API is.
#[derive(Debug, Clone, Args)]
pub struct Connection {
    /// Admin API base URL.
    #[arg(
        long,
        env = "IDGATE_ADMIN_URL",
        default_value = "http://127.0.0.1:9090"
    )]
    pub url: String,
    /// A key from `admin.secret_keys`.
    #[arg(long, env = "IDGATE_SECRET_KEY", hide_env_values = true)]
    pub key: String,
    /// The gate's `admin.magic_client_id`.
    #[arg(long, env = "IDGATE_MAGIC_CLIENT_ID")]
    pub client_id: String,
}

/// `idgate lists …`.
#[derive(Debug, Subcommand)]
pub enum ListsCommand {
    /// Add the entries of txt or CSV files to the running gate's lists (chunked PATCH calls).
    Import {
        /// A file of allow-list entries (repeatable).
        #[arg(long, value_name = "FILE")]
        allow: Vec<PathBuf>,
        /// A file of block-list entries (repeatable).
        #[arg(long, value_name = "FILE")]
        block: Vec<PathBuf>,
        /// Entries per request (one store transaction each).
        #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        chunk_size: u32,
        /// Never draw the progress bar.
        #[arg(long)]
        no_progress: bool,
        /// Region of phone numbers written without `+` (e.g. `IT`), as the gate's
        /// `identifiers.default_phone_region`; without it such numbers are rejected.
        #[arg(long, value_name = "CC")]
        phone_region: Option<String>,
        #[command(flatten)]
        conn: Connection,
    },
    /// Print the API-managed entries (oldest first).
    Export {
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Txt)]
        format: Format,
        /// Which list.
        #[arg(long, value_enum, default_value_t = Which::All)]
        list: Which,
        /// Write here instead of stdout.
        #[arg(short, long)]
        output: Option<PathBuf>,
        #[command(flatten)]
        conn: Connection,
    },
    /// Remove every API-managed entry (config and list-file entries stay).
    Clear {
        /// Which list.
        #[arg(long, value_enum, default_value_t = Which::All)]
        list: Which,
        /// Required: confirms the removal.
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        conn: Connection,
    },
}

/// Export formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// One entry per line (`# allow list` / `# block list` headings with `--list all`).
    Txt,
    /// `identifier` column (`list,identifier` with `--list all`).
    Csv,
}

/// A list selection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Which {
    /// The allow list.
    Allow,
    /// The block list.
    Block,
    /// Both.
    All,
}

impl Which {
    fn lists(self) -> &'static [ListKind] {
        match self {
            Which::Allow => &[ListKind::Allow],
            Which::Block => &[ListKind::Block],
            Which::All => &[ListKind::Allow, ListKind::Block],
        }
    }
}

/// How a command ended (errors aside).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Everything done.
    Done,
    /// An import skipped malformed lines (reported); the rest went in.
    Rejected,
}

/// Runs a `lists` command; human output on stdout, the progress bar on stderr.
pub async fn run(cmd: ListsCommand) -> Result<Outcome, CliError> {
    match cmd {
        ListsCommand::Import {
            allow,
            block,
            chunk_size,
            no_progress,
            phone_region,
            conn,
        } => {
            if allow.is_empty() && block.is_empty() {
                return Err(CliError::Usage(
                    "nothing to import: give --allow FILE and/or --block FILE".into(),
                ));
            }
            let opts = ParseOptions {
                default_region: match phone_region.as_deref() {
                    None => None,
                    Some(code) => Some(
                        crate::identifier::parse_region(code)
                            .map_err(|e| CliError::Usage(format!("--phone-region: {e}")))?,
                    ),
                },
            };
            let client = AdminClient::new(&conn)?;
            let chunk = usize::try_from(chunk_size).unwrap_or(10_000);
            let mut outcome = Outcome::Done;
            let files = allow
                .iter()
                .map(|p| (ListKind::Allow, p))
                .chain(block.iter().map(|p| (ListKind::Block, p)));
            for (list, path) in files {
                let summary = import_file(&client, list, path, &opts, chunk, !no_progress).await?;
                print!("{}", summary.render(list, path));
                if !summary.rejected.is_empty() {
                    outcome = Outcome::Rejected;
                }
            }
            Ok(outcome)
        }
        ListsCommand::Export {
            format,
            list,
            output,
            conn,
        } => {
            let client = AdminClient::new(&conn)?;
            let data = client.get().await?;
            let text = render_export(&data, list, format)?;
            match output {
                Some(p) => std::fs::write(&p, text).map_err(CliError::Write)?,
                None => std::io::stdout()
                    .write_all(text.as_bytes())
                    .map_err(CliError::Write)?,
            }
            Ok(Outcome::Done)
        }
        ListsCommand::Clear { list, yes, conn } => {
            if !yes {
                return Err(CliError::Usage(
                    "clear removes every API-managed entry; run it again with --yes".into(),
                ));
            }
            let client = AdminClient::new(&conn)?;
            let mut emails = serde_json::Map::new();
            for l in list.lists() {
                emails.insert(field(*l).into(), json!([]));
            }
            let data = client.send("PUT", &Value::Object(emails)).await?;
            for l in list.lists() {
                let removed = data[field(*l)]["removed"].as_array().map_or(0, Vec::len);
                println!("{l} list: {removed} API-managed entries removed");
            }
            Ok(Outcome::Done)
        }
    }
}

fn field(list: ListKind) -> &'static str {
    crate::admin::magic::body::field_name(list)
}

/// A malformed line of an import file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// 1-based line.
    pub line: u32,
    /// The entry as written.
    pub text: String,
    /// Why.
    pub error: String,
}

/// What an import of one file did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportSummary {
    /// Entries read (valid and malformed; blank lines and the header not counted).
    pub read: usize,
    /// Newly added.
    pub added: usize,
    /// Already on the list (API-managed, or from the config and list files).
    pub already_present: usize,
    /// Repeated in the file (after normalization), ignored.
    pub duplicates: usize,
    /// Malformed lines, not sent.
    pub rejected: Vec<Rejected>,
}

impl ImportSummary {
    /// The human summary (ends with a newline).
    pub fn render(&self, list: ListKind, path: &Path) -> String {
        let mut out = format!(
            "{list} list <- {}: {} entries read, {} added, {} already present, {} duplicates in the file ignored, {} rejected\n",
            path.display(),
            self.read,
            self.added,
            self.already_present,
            self.duplicates,
            self.rejected.len()
        );
        for r in &self.rejected {
            out.push_str(&format!("  line {}: `{}`: {}\n", r.line, r.text, r.error));
        }
        out
    }
}

/// Reads, validates and sends one file.
pub async fn import_file(
    client: &AdminClient,
    list: ListKind,
    path: &Path,
    opts: &ParseOptions,
    chunk: usize,
    progress: bool,
) -> Result<ImportSummary, CliError> {
    let text = std::fs::read_to_string(path).map_err(|source| CliError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mut summary = ImportSummary::default();
    let mut seen = HashSet::new();
    let mut entries = Vec::new();
    for t in split_entries(&text) {
        summary.read += 1;
        match parse_entry(t.text, list, opts) {
            Ok(e) => {
                if seen.insert(e.key(list)) {
                    entries.push(e.to_string());
                } else {
                    summary.duplicates += 1;
                }
            }
            Err(e) => summary.rejected.push(Rejected {
                line: t.line,
                text: crate::identifier::snippet(t.text),
                error: e.to_string(),
            }),
        }
    }
    drop(seen);
    let bar = if progress {
        let bar = ProgressBar::new(u64::try_from(entries.len()).unwrap_or(u64::MAX));
        if let Ok(style) = ProgressStyle::with_template(
            "{msg} [{bar:40}] {pos}/{len} entries ({per_sec}, eta {eta})",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(format!("{list} list"));
        bar
    } else {
        ProgressBar::hidden()
    };
    let name = field(list);
    for part in entries.chunks(chunk.max(1)) {
        let mut emails = serde_json::Map::new();
        emails.insert(name.into(), json!(part));
        let data = client.send("PATCH", &Value::Object(emails)).await;
        let data = match data {
            Ok(d) => d,
            Err(e) => {
                bar.abandon();
                // What went in so far stays in (each chunk is its own transaction).
                eprint!("{}", summary.render(list, path));
                return Err(e);
            }
        };
        let s = &data[name];
        let count = |k: &str| s[k].as_array().map(Vec::len);
        let (Some(added), Some(present)) = (count("added"), count("already_present")) else {
            bar.abandon();
            return Err(CliError::Protocol(format!(
                "a PATCH answer without data.{name}.added/already_present"
            )));
        };
        summary.added += added;
        summary.already_present += present;
        summary.duplicates += s["duplicates_in_request"]
            .as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(0);
        bar.inc(u64::try_from(part.len()).unwrap_or(0));
    }
    bar.finish_and_clear();
    Ok(summary)
}

fn strings(v: &Value) -> Result<Vec<&str>, CliError> {
    v.as_array()
        .ok_or_else(|| CliError::Protocol("a list is not an array".into()))?
        .iter()
        .map(|x| {
            x.as_str()
                .ok_or_else(|| CliError::Protocol("an entry is not a string".into()))
        })
        .collect()
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// The export text of a GET answer's `data`.
pub fn render_export(data: &Value, which: Which, format: Format) -> Result<String, CliError> {
    let mut out = String::new();
    let both = which == Which::All;
    if format == Format::Csv {
        out.push_str(if both {
            "list,identifier\n"
        } else {
            "identifier\n"
        });
    }
    for list in which.lists() {
        let entries = strings(&data["emails"][field(*list)])?;
        if format == Format::Txt && both {
            out.push_str(&format!("# {list} list\n"));
        }
        for e in entries {
            match (format, both) {
                (Format::Csv, true) => out.push_str(&format!("{list},{}\n", csv_field(e))),
                (Format::Csv, false) => out.push_str(&format!("{}\n", csv_field(e))),
                (Format::Txt, _) => out.push_str(&format!("{e}\n")),
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_formats() {
        let data = json!({ "emails": { "allow_list": ["a@x.com", "*@y.com"], "block_list": ["b@x.com"] } });
        assert_eq!(
            render_export(&data, Which::All, Format::Txt).unwrap(),
            "# allow list\na@x.com\n*@y.com\n# block list\nb@x.com\n"
        );
        assert_eq!(
            render_export(&data, Which::Block, Format::Csv).unwrap(),
            "identifier\nb@x.com\n"
        );
        assert_eq!(
            render_export(&data, Which::All, Format::Csv).unwrap(),
            "list,identifier\nallow,a@x.com\nallow,*@y.com\nblock,b@x.com\n"
        );
        // What a single-list export writes imports back as is.
        let text = render_export(&data, Which::Allow, Format::Csv).unwrap();
        let toks: Vec<_> = split_entries(&text).into_iter().map(|t| t.text).collect();
        assert_eq!(toks, ["a@x.com", "*@y.com"]);
        assert!(render_export(&json!({}), Which::All, Format::Txt).is_err());
    }

    #[test]
    fn summary_names_rejected_lines() {
        let s = ImportSummary {
            read: 4,
            added: 2,
            already_present: 1,
            duplicates: 0,
            rejected: vec![Rejected {
                line: 3,
                text: "bad@@x".into(),
                error: "nope".into(),
            }],
        };
        let r = s.render(ListKind::Block, Path::new("b.csv"));
        assert!(r.starts_with("block list <- b.csv: 4 entries read, 2 added, 1 already present, 0 duplicates in the file ignored, 1 rejected\n"), "{r}");
        assert!(r.contains("  line 3: `bad@@x`: nope\n"), "{r}");
    }
}
