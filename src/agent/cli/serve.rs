//! `gse-agent run`: the service. Loads the config (exit 64 when it is bad), prepares the host,
//! installs the build, builds the agent (exit 1 when that fails) and runs it until SIGTERM or
//! SIGINT (the games are stopped) or SIGQUIT (they are left for the next agent).

use std::path::Path;
use std::process::ExitCode;

use tokio::signal::unix::{SignalKind, signal};

use super::{EXIT_CONFIG, describe};
use crate::agent::config::{self, Config, ConfigError};
use crate::agent::daemon::{self, Agent, AgentError};
use crate::agent::fleet::actor::Stops;
use crate::agent::systemd;
use crate::common::telemetry::{self, LogFormat};

/// Why the service could not run or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The async runtime could not be started.
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// A stop signal could not be watched.
    #[error("cannot watch {signal}: {source}")]
    WatchSignal {
        /// The signal.
        signal: &'static str,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The agent could not start, or failed.
    #[error(transparent)]
    Agent(#[from] AgentError),
}

/// Runs the service on the config at `config`, or on the embedded sample fleet without one.
pub fn serve(config: Option<&Path>, log_format: LogFormat) -> ExitCode {
    telemetry::init(log_format);
    let loaded = match config {
        Some(path) => config::read_for_host(path),
        None => sample_config(),
    };
    let cfg = match loaded {
        Ok(c) => c,
        Err(e) => {
            say!("{e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    match run(cfg, config.is_none()) {
        Ok(()) => ExitCode::SUCCESS,
        // Another agent on this data-dir is a configuration mistake, like a bad key.
        Err(
            e @ ServeError::Agent(AgentError::DataDir(crate::agent::lock::LockError::InUse {
                ..
            })),
        ) => {
            say!("gse-agent: {}", describe(&e));
            ExitCode::from(EXIT_CONFIG)
        }
        Err(e) => {
            let text = describe(&e);
            tracing::error!(error = %text, "gse-agent failed");
            say!("gse-agent: {text}");
            ExitCode::FAILURE
        }
    }
}

/// The embedded sample config, its paths relative to the working directory.
fn sample_config() -> Result<Config, ConfigError> {
    config::parse(
        config::SAMPLE_CONFIG,
        "<embedded sample config>",
        Path::new("."),
    )
}

fn run(cfg: Config, sample: bool) -> Result<(), ServeError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(ServeError::Runtime)?;
    runtime.block_on(async {
        // Watch signals first: a SIGTERM right after READY=1 must stop the agent gracefully.
        let stops = watch_signals()?;
        prepare_host();
        if sample {
            daemon::install_sample_build(&cfg)?;
        }
        // A build can take minutes to unpack and install: a signal stops that too (dropping
        // the install kills install.sh's process group; the previous build stays live).
        let run_as = tokio::select! {
            r = daemon::install_build(&cfg, &crate::agent::package::System) => r?,
            () = stops.shutdown.cancelled() => {
                tracing::info!("stopped while installing the build");
                return Ok(());
            }
        };
        let data_dir = cfg.data_dir.clone();
        let agent = Agent::build(cfg, run_as).await?;
        let endpoints = agent.endpoints();
        tracing::info!(sdk.addr = %endpoints.sdk_address, capi.addr = ?endpoints.capi_address, "gse-agent started");
        notify_systemd(&stops);
        agent.run(stops).await?;
        // The last games' escaped descendants are still being swept: let that finish before
        // the runtime goes away.
        crate::agent::process::settle().await;
        // Nothing listens any more.
        let _ = std::fs::remove_file(data_dir.join("endpoints.json"));
        tracing::info!("gse-agent stopped");
        Ok(())
    })
}

/// SIGTERM or SIGINT stops the games gracefully (a second one kills them now); SIGQUIT leaves
/// them running for the next agent.
fn watch_signals() -> Result<Stops, ServeError> {
    let watch = |kind: SignalKind, name| {
        signal(kind).map_err(|source| ServeError::WatchSignal {
            signal: name,
            source,
        })
    };
    let mut term = watch(SignalKind::terminate(), "SIGTERM")?;
    let mut int = watch(SignalKind::interrupt(), "SIGINT")?;
    let mut quit = watch(SignalKind::quit(), "SIGQUIT")?;
    let stops = Stops::default();
    let (s, f, d) = (
        stops.shutdown.clone(),
        stops.force.clone(),
        stops.detach.clone(),
    );
    tokio::spawn(async move {
        let mut count = 0;
        loop {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
                _ = quit.recv() => {
                    d.cancel();
                    tracing::info!("SIGQUIT: exiting and leaving the game servers running for the next agent");
                    continue;
                }
            }
            count += 1;
            // Acted on first, logged second: a signal must work whatever logging does.
            if count == 1 {
                s.cancel();
                tracing::info!(
                    "signal received: terminating game servers (send again to kill them now)"
                );
            } else {
                f.cancel();
                tracing::warn!("second signal: killing game servers now");
            }
        }
    });
    Ok(stops)
}

/// What the process needs before any game exists; each failure is a warning, not a stop.
fn prepare_host() {
    crate::common::host::return_freed_memory();
    match crate::agent::process::keep_inherited_fds_from_children() {
        Ok(0) => {}
        Ok(n) => tracing::debug!(descriptors = n, "inherited descriptors kept from the games"),
        Err(e) => tracing::warn!(error = %e, "games may inherit descriptors the agent inherited"),
    }
    match crate::common::host::raise_open_files_limit() {
        Ok(limit) => tracing::debug!(limit, "open files"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open files limit"),
    }
    // Before any child exists: descendants that lose their parent come to the agent, and
    // zombies that belong to no one the agent waits for are reaped.
    if let Err(e) = crate::agent::process::reaper::start() {
        tracing::warn!(error = %e, "orphans of games will not be reaped by the agent");
    }
}

/// READY=1 now, STOPPING=1 when a stop begins, when systemd asked for notifications.
fn notify_systemd(stops: &Stops) {
    let notify_socket = std::env::var_os("NOTIFY_SOCKET");
    let sd_notify = move |state: &str| {
        if let Some(socket) = &notify_socket
            && let Err(e) = systemd::notify(socket, state)
        {
            tracing::warn!(error = %e, "cannot notify systemd");
        }
    };
    sd_notify("READY=1");
    let (stopping, detaching) = (stops.shutdown.clone(), stops.detach.clone());
    tokio::spawn(async move {
        tokio::select! {
            () = stopping.cancelled() => {}
            () = detaching.cancelled() => {}
        }
        sd_notify("STOPPING=1");
    });
}
