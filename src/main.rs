//! The `idgate` binary: command-line parsing and process setup. Everything else is in the
//! library; `anyhow` is used only here, at the edge.
//!
//! Exit codes: 0 success (for `check`: allowed on every route checked); 1 `check`: denied on at
//! least one route, or `check-config`: invalid, or `lists import`: some lines were rejected;
//! 2 usage error; 3 could not load the config or parse the identifier (`check`), a runtime
//! failure (`run`, `demo`), or a `lists` call that failed.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use idgate::app::{Gate, demo};
use idgate::gate::explain;
use idgate::identifier;
use idgate::snapshot::{Snapshot, StoreLists, StoreView};

#[derive(Parser)]
#[command(
    name = "idgate",
    version,
    about = "A reverse proxy that gates sign-up and sign-in endpoints by allow and block lists"
)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Plain, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Plain,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gate. SIGHUP reloads; SIGTERM/SIGINT drain and stop.
    Run {
        /// Configuration file.
        #[arg(short, long, default_value = "config.yaml")]
        config: PathBuf,
    },
    /// Run the gate with the example config in front of a built-in demo sign-up app.
    Demo {
        /// Address the demo gate listens on.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Address of the demo's admin listener.
        #[arg(long, default_value = "127.0.0.1:9090")]
        admin: SocketAddr,
    },
    /// Validate a configuration and its list files; print every error with file, line, column.
    CheckConfig {
        /// Configuration file.
        #[arg(short, long, default_value = "config.yaml")]
        config: PathBuf,
    },
    /// Bulk list tools against a running gate's admin API: import, export, clear.
    Lists {
        #[command(subcommand)]
        command: idgate::cli::ListsCommand,
    },
    /// Show the decision for an identifier and the entry that caused it.
    Check {
        /// An email address, phone number or wallet.
        identifier: String,
        /// Check only this route (default: every route).
        #[arg(long)]
        route: Option<String>,
        /// Configuration file.
        #[arg(short, long, default_value = "config.yaml")]
        config: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("IDGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Plain => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match cli.command {
        Command::Run { config } => runtime_exit(run(&config)),
        Command::Demo { listen, admin } => runtime_exit(run_demo(listen, admin)),
        Command::CheckConfig { config } => check_config(&config),
        Command::Lists { command } => lists(command),
        Command::Check {
            identifier,
            route,
            config,
            json,
        } => check(&identifier, route.as_deref(), &config, json),
    }
}

fn runtime_exit(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("idgate: {e:#}");
            ExitCode::from(3)
        }
    }
}

/// The control plane's runtime (admin API, reloads, invitations, CLI commands); the proxy
/// listeners are served by the data-path workers' own threads (`app::workers`).
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

fn run(config: &Path) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let gate = Gate::start(config).await?;
        gate.run_until_signal().await;
        Ok(())
    })
}

fn run_demo(listen: SocketAddr, admin: SocketAddr) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let app = demo::start_app().await?;
        let dir = std::env::temp_dir().join(format!("idgate-demo-{}", std::process::id()));
        let config = demo::write_files(&dir, app, listen, admin)?;
        let gate = Gate::start(&config).await?;
        let addr = gate.proxy_addrs().first().copied().unwrap_or(listen);
        println!("{}", demo::curl_lines(addr, gate.admin_addr(), &dir));
        gate.run_until_signal().await;
        Ok(())
    })
}

/// `idgate lists …`: 0 done, 1 an import skipped malformed lines (listed), 3 failed.
fn lists(command: idgate::cli::ListsCommand) -> ExitCode {
    let result = runtime().and_then(|rt| Ok(rt.block_on(idgate::cli::run(command))?));
    match result {
        Ok(idgate::cli::Outcome::Done) => ExitCode::SUCCESS,
        Ok(idgate::cli::Outcome::Rejected) => ExitCode::from(1),
        Err(e) => {
            eprintln!("idgate: {e:#}");
            ExitCode::from(3)
        }
    }
}

fn check_config(config: &Path) -> ExitCode {
    // The store is not opened: check-config validates files only.
    match idgate::reload::load(config, StoreView::default(), 1) {
        Ok((inputs, snap, _)) => {
            // Certificates, keys and CA files are read and checked too.
            if let Err(e) = idgate::app::TlsSetup::load(&inputs.config) {
                eprintln!("{}: {e}", config.display());
                return ExitCode::from(1);
            }
            for w in &snap.warnings {
                eprintln!("warning: {w}");
            }
            println!(
                "{}: ok ({} routes, {} allow entries, {} block entries)",
                config.display(),
                snap.routes.len(),
                snap.allow.len(),
                snap.block.len()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(1)
        }
    }
}

fn check(input: &str, route: Option<&str>, config: &Path, json: bool) -> ExitCode {
    let snap = match load_with_store(config) {
        Ok(snap) => snap,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(3);
        }
    };
    let routes: Vec<_> = snap
        .routes
        .iter()
        .filter(|r| route.is_none_or(|name| &*r.name == name))
        .collect();
    if routes.is_empty() {
        match route {
            Some(name) => eprintln!("no route named `{name}` in {}", config.display()),
            None => eprintln!("{} has no routes", config.display()),
        }
        return ExitCode::from(3);
    }
    let id = match identifier::parse(input, None, &snap.identifiers) {
        Ok(id) => id,
        Err(e) => {
            if json {
                let v = serde_json::json!({ "identifier": input, "error": e.to_string(), "status": 400 });
                println!("{v}");
            } else {
                println!("{input}: refused (400): {e}");
            }
            return ExitCode::from(3);
        }
    };
    let mut denied = false;
    let mut results = Vec::new();
    for r in &routes {
        let (d, e) = explain(&snap, r, &id);
        denied |= !d.is_allowed();
        results.push((
            r.name.clone(),
            r.kind,
            id.to_string(),
            e,
            idgate::observe::outcome(&d, r.mode),
            r.mode.as_str(),
        ));
    }
    if json {
        let items: Vec<_> = results
            .iter()
            .map(|(name, kind, id, e, outcome, mode)| {
                serde_json::json!({
                    "route": &**name, "kind": format!("{kind:?}"), "identifier": id,
                    "mode": mode, "outcome": outcome,
                    "allowed": e.allowed, "reason": e.reason, "rule": e.rule,
                    "entry": e.entry.as_ref().map(|(entry, _)| entry),
                    "source": e.entry.as_ref().map(|(_, source)| source),
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(items));
    } else {
        for (name, kind, id, e, _, mode) in &results {
            let verdict = match (e.allowed, *mode) {
                (true, _) => "ALLOW",
                (false, "shadow") => "WOULD DENY (shadow mode: forwarded)",
                (false, _) => "DENY",
            };
            let reason = e.reason.map(|r| format!(" ({r})")).unwrap_or_default();
            let entry = e
                .entry
                .as_ref()
                .map(|(entry, source)| format!("; entry `{entry}` from {source}"))
                .unwrap_or_default();
            println!(
                "route {name} ({kind:?}, {mode}): {id}: {verdict}{reason}: {}{entry}",
                e.rule
            );
        }
    }
    if denied {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// The config plus the admin store's entries and restrictions, when the store file exists.
fn load_with_store(config: &Path) -> anyhow::Result<Snapshot> {
    let cfg = idgate::config::load(config)?;
    let view = if cfg.store.sqlite.exists() {
        let store = idgate::store::Store::open_sqlite(&cfg.store.sqlite)?;
        let state = store.load()?;
        StoreView {
            lists: std::sync::Arc::new(StoreLists::from_entries(&state.entries)),
            restrictions: state.restrictions,
        }
    } else {
        StoreView::default()
    };
    Ok(idgate::reload::load(config, view, 1)?.1)
}
