//! `gse-control`: the fleet control plane's edge. Parses the command line, loads control.yaml
//! (exit 64 when it is bad, every problem listed), runs one replica until SIGTERM/SIGINT.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{CommandFactory, Parser, Subcommand};
use gse_agent::common::describe::describe;
use gse_agent::common::telemetry::{self, LogFormat};
use gse_agent::control::{self, config::ControlConfig};
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// Exit code for a configuration that cannot be used (EX_USAGE).
const EXIT_CONFIG: u8 = 64;

#[derive(Parser)]
#[command(
    name = "gse-control",
    version,
    about = "Fleet control plane for gse-agent hosts: the Tencent Cloud GSE API across every host, state in PostgreSQL"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one replica (any number may run on one database).
    Run {
        /// control.yaml.
        #[arg(long, short)]
        config: PathBuf,
        /// Write the bound addresses here as JSON once serving ({"api", "relay", "replica"}).
        #[arg(long)]
        endpoints_file: Option<PathBuf>,
        /// Log line format.
        #[arg(long, value_enum, default_value_t = LogFormat::Text)]
        log_format: LogFormat,
    },
    /// Check control.yaml and print every problem; exit 0 if it is valid.
    CheckConfig {
        /// control.yaml.
        config: PathBuf,
    },
    /// Print the audit trail, newest first: who changed what, from where, how it ended.
    Audit {
        /// control.yaml (its database is read).
        #[arg(long, short)]
        config: PathBuf,
        /// Only calls signed by this SecretId.
        #[arg(long)]
        secret_id: Option<String>,
        /// Only this action.
        #[arg(long)]
        action: Option<String>,
        /// How many records.
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(i64).range(1..=10_000))]
        limit: i64,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// `eprintln!` that never panics.
fn say(text: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "{text}");
}

fn main() -> ExitCode {
    if let Some(code) = gse_agent::common::clidocs::hook(Cli::command) {
        return code;
    }
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { config } => match ControlConfig::read(&config) {
            Ok(_) => {
                say(&format!("{}: OK", config.display()));
                ExitCode::SUCCESS
            }
            Err(e) => {
                say(&e.to_string());
                ExitCode::from(EXIT_CONFIG)
            }
        },
        Command::Audit {
            config,
            secret_id,
            action,
            limit,
            json,
        } => {
            let cfg = match ControlConfig::read(&config) {
                Ok(c) => c,
                Err(e) => {
                    say(&e.to_string());
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            match audit(&cfg, secret_id.as_deref(), action.as_deref(), limit, json) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    say(&format!("gse-control audit: {}", describe(e.as_ref())));
                    ExitCode::FAILURE
                }
            }
        }
        Command::Run {
            config,
            endpoints_file,
            log_format,
        } => {
            telemetry::init(log_format);
            let cfg = match ControlConfig::read(&config) {
                Ok(c) => c,
                Err(e) => {
                    say(&e.to_string());
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            match run(cfg, endpoints_file) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    say(&format!("gse-control: {}", describe(e.as_ref())));
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn run(cfg: ControlConfig, endpoints_file: Option<PathBuf>) -> anyhow::Result<()> {
    // Every agent holds a connection: by hand the soft limit is often 1,024.
    match gse_agent::common::host::raise_open_files_limit() {
        Ok(limit) => tracing::debug!(limit, "open files"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open files limit"),
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let shutdown = CancellationToken::new();
        let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
        let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
        let stop = shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            tracing::info!("stopping");
            stop.cancel();
        });
        let mut written = Ok(());
        let give_up = shutdown.clone();
        let result = control::run(cfg, shutdown, |endpoints| {
            if let Some(path) = &endpoints_file {
                written = write_endpoints(path, endpoints);
                if written.is_err() {
                    give_up.cancel();
                }
            }
        })
        .await;
        written?;
        result.map_err(anyhow::Error::from)
    })
}

/// Reads the audit table and prints it.
fn audit(
    cfg: &ControlConfig,
    secret_id: Option<&str>,
    action: Option<&str>,
    limit: i64,
    json: bool,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let (records, total) = runtime.block_on(async {
        let pool = control::db::pool(&cfg.database, 1)?;
        let db = pool.get().await.map_err(control::db::DbError::from)?;
        control::api::audit::read(&db, secret_id, action, 0, limit)
            .await
            .map_err(|e| anyhow::anyhow!("reading the audit table: {}", control::db::detail(&e)))
    })?;
    let mut out = String::new();
    for r in &records {
        if json {
            out.push_str(&format!("{r}\n"));
        } else {
            let field = |k: &str| r[k].as_str().unwrap_or_default().to_string();
            let resources: Vec<&str> = r["Resources"]
                .as_array()
                .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
                .unwrap_or_default();
            out.push_str(&format!(
                "{}  {}  {}  {}  from {}  {}  {}\n",
                field("Time"),
                field("SecretId"),
                field("Action"),
                field("Outcome"),
                field("Source"),
                field("RequestId"),
                resources.join(",")
            ));
        }
    }
    if !json {
        out.push_str(&format!("{} of {total} records\n", records.len()));
    }
    use std::io::Write as _;
    std::io::stdout()
        .write_all(out.as_bytes())
        .context("writing to stdout")
}

/// Writes the endpoints whole (a reader never sees half a file).
fn write_endpoints(path: &std::path::Path, e: &control::Endpoints) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(e).context("encoding the endpoints")?;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
