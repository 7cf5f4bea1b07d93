//! `gse-agent`: the binary's edge. Parses the command line, loads the config (exit 64 when it
//! is bad), builds the agent (exit 1 when that fails), runs it until SIGTERM/SIGINT.

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{CommandFactory, Parser, Subcommand};
use gse_agent::agent::config::{self, Config, ConfigError};
use gse_agent::agent::daemon::{self, Agent};
use gse_agent::agent::fleet::actor::Stops;
use gse_agent::agent::systemd;
use gse_agent::agent::validate;
use gse_agent::common::telemetry::{self, LogFormat};
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// `eprintln!` that never panics: a closed or full stderr costs the line, not the exit code.
macro_rules! say {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($t)*);
    }};
}

/// `println!` that never panics (`gse-agent … | head` must not end in a panic).
macro_rules! out {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}

/// Exit code for a configuration that cannot be used (EX_USAGE).
const EXIT_CONFIG: u8 = 64;

#[derive(Parser)]
#[command(version, about = "Per-host supervisor for GSE game servers")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the fleet's game servers and serve the GSE SDK (the service).
    Run {
        /// agent.yaml; without it, the embedded sample fleet runs.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Log line format.
        #[arg(long, value_enum, default_value_t = LogFormat::Text)]
        log_format: LogFormat,
    },
    /// Check a config file and print every problem; exit 0 if it is valid.
    CheckConfig {
        /// agent.yaml.
        config: PathBuf,
    },
    /// Print the embedded sample config (a starting point for agent.yaml).
    SampleConfig,
    /// Unpack a build the way the agent does (every safety rule and limit) into a new directory.
    Unpack {
        /// The zip (or directory) build.
        build: PathBuf,
        /// The directory to create; it must not exist.
        dest: PathBuf,
        /// agent.yaml whose `package` limits apply (defaults otherwise).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Say whether a build package comes up: unpack, install.sh, launch, ProcessReady, health,
    /// a session, a player, OnProcessTerminate; in a temporary root. Exit 0 only if it passed
    /// (1: the build failed; 2: validate could not run; 130: interrupted).
    Validate {
        /// The build: a zip or a directory.
        build: PathBuf,
        /// agent.yaml whose runtime-configuration and timings apply.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Without --config: the LaunchPath to run (e.g. /local/game/server).
        #[arg(long, conflicts_with = "config")]
        launch_path: Option<String>,
        /// Without --config: the Parameters of the launch path.
        #[arg(
            long,
            default_value = "",
            conflicts_with = "config",
            allow_hyphen_values = true
        )]
        parameters: String,
        /// Without --config: how many processes to run.
        #[arg(long, default_value_t = 1, conflicts_with = "config")]
        concurrent_executions: u32,
        /// Also write a machine-readable JSON report here (and, when install.sh fails, its
        /// whole log beside it as REPORT.install.log).
        #[arg(long)]
        json: Option<PathBuf>,
        /// With --config: every timing from it. Without this flag the agent's own waits (health
        /// check interval, stop grace, session protection) are short; the game's deadlines
        /// (ProcessReady, health answers, exit) are the config's either way.
        #[arg(long, requires = "config")]
        config_timings: bool,
    },
    /// Show the running agent at a glance: each process (state, pid, uptime, CPU, memory,
    /// session, players, restarts, last exit), each entry (what runs against what should,
    /// failed launches, crash-loop pause) and the last events. Exit 0; 1 if the agent cannot
    /// be reached; 64 on bad usage or config.
    Status {
        /// agent.yaml of the running agent: endpoints.json in its data-dir gives the control
        /// API address, and its capi-keys-file signs the request [default:
        /// /etc/gse-agent/agent.yaml if it exists, else the sample config's ./gse-data].
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Ask the control API at this address (host:port) instead of reading endpoints.json.
        #[arg(long, value_name = "ADDR")]
        capi: Option<std::net::SocketAddr>,
        /// Print the agent's DescribeAgentStatus answer as JSON, for scripts (one line per
        /// redraw with --watch).
        #[arg(long)]
        json: bool,
        /// Redraw every SECONDS (plain seconds or a duration such as 500ms; 2 when given
        /// without a value) until Ctrl-C.
        #[arg(long, value_name = "SECONDS", num_args = 0..=1, default_missing_value = "2",
              value_parser = gse_agent::agent::status::parse_interval)]
        watch: Option<std::time::Duration>,
        /// How many of the last events to show.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(0..=1000))]
        events: u32,
    },
    /// Crash rehearsal: inject a fault into the running agent's live fleet (kill, hang, fail
    /// health checks, delay or fail session starts, cut the upstream link). The agent refuses
    /// unless its agent.yaml says `chaos: enabled`. Each fault is one event with its own code.
    /// Exit 0 when injected; 1 if the agent cannot be reached or refuses; 64 on bad usage.
    Chaos {
        /// agent.yaml of the running agent (found as `status` finds it).
        #[arg(long, short, global = true)]
        config: Option<PathBuf>,
        /// Ask the control API at this address (host:port) instead of reading endpoints.json.
        #[arg(long, value_name = "ADDR", global = true)]
        capi: Option<std::net::SocketAddr>,
        #[command(subcommand)]
        fault: gse_agent::agent::chaos::FaultArgs,
    },
}

/// The error and its causes, each said once: the module errors already name their cause in
/// their message, so a cause whose text is already there is skipped.
fn describe(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let part = cause.to_string();
        if !text.contains(&part) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&part);
        }
    }
    text
}

fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
    match path {
        Some(p) => config::read(p),
        None => config::parse(
            config::SAMPLE_CONFIG,
            "<embedded sample config>",
            Path::new("."),
        ),
    }
}

fn main() -> ExitCode {
    if let Some(code) = gse_agent::common::clidocs::hook(Cli::command) {
        return code;
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // `status` and `chaos` promise 64 for bad usage (clap's own code, 2, is validate's
        // "could not run").
        Err(e)
            if e.use_stderr()
                && matches!(std::env::args().nth(1).as_deref(), Some("status" | "chaos")) =>
        {
            let _ = e.print();
            return ExitCode::from(EXIT_CONFIG);
        }
        Err(e) => e.exit(),
    };
    match cli.command {
        Command::CheckConfig { config } => match config::read_for_host(&config) {
            Ok(c) => {
                out!(
                    "{}: ok ({} server process(es))",
                    config.display(),
                    c.total_processes()
                );
                if let Some(keys) = &c.capi_keys_file
                    && let Ok((keys, policies)) = gse_agent::api::tc3::keys::read_all(keys)
                {
                    let mut full: Vec<&String> = keys
                        .keys()
                        .filter(|id| !policies.contains_key(*id))
                        .collect();
                    full.sort();
                    for id in full {
                        out!("{}: key {id} has no policy: full access", keys_path(&c));
                    }
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                say!("{e}");
                ExitCode::from(EXIT_CONFIG)
            }
        },
        Command::SampleConfig => {
            print!("{}", config::SAMPLE_CONFIG);
            ExitCode::SUCCESS
        }
        Command::Unpack {
            build,
            dest,
            config,
        } => run_unpack(&build, &dest, config.as_deref()),
        Command::Validate {
            build,
            config,
            launch_path,
            parameters,
            concurrent_executions,
            json,
            config_timings,
        } => {
            let opts = validate::Options {
                build,
                config,
                launch_path,
                parameters,
                concurrent_executions,
                config_timings,
                keep_install_log: json.as_ref().map(|j| {
                    let mut name = j.clone().into_os_string();
                    name.push(".install.log");
                    PathBuf::from(name)
                }),
            };
            run_validate(opts, json)
        }
        Command::Status {
            config,
            capi,
            json,
            watch,
            events,
        } => run_status(config.as_deref(), capi, json, watch, events),
        Command::Chaos {
            config,
            capi,
            fault,
        } => run_chaos(config.as_deref(), capi, &fault),
        Command::Run { config, log_format } => {
            telemetry::init(log_format);
            let loaded = match config.as_deref() {
                Some(path) => config::read_for_host(path),
                None => load(None),
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
                Err(e)
                    if matches!(
                        e.downcast_ref::<daemon::AgentError>(),
                        Some(daemon::AgentError::DataDir(
                            gse_agent::agent::lock::LockError::InUse { .. }
                        ))
                    ) =>
                {
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
    }
}

fn run_unpack(build: &Path, dest: &Path, config: Option<&Path>) -> ExitCode {
    let policy = match config.map(config::read).transpose() {
        Ok(c) => c.map(|c| c.package).unwrap_or_default(),
        Err(e) => {
            say!("{e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if let Err(e) = std::fs::create_dir(dest) {
        say!("gse-agent unpack: cannot create {}: {e}", dest.display());
        return ExitCode::FAILURE;
    }
    let limits = policy.limits();
    let result = if build.is_dir() {
        gse_agent::agent::package::copy_tree(build, dest, &limits, &|_, _, _| {})
    } else {
        gse_agent::agent::package::unzip::unpack(build, dest, &limits, &|_, _, _| {})
    };
    match result {
        Ok(stats) => {
            out!("{} entries, {} bytes", stats.entries, stats.bytes);
            ExitCode::SUCCESS
        }
        Err(e) => {
            say!("gse-agent unpack: {e}");
            let _ = std::fs::remove_dir_all(dest);
            ExitCode::FAILURE
        }
    }
}

/// Live progress lines on a terminal.
struct TerminalUi {
    on_tty: bool,
}

impl validate::Ui for TerminalUi {
    fn begin(&mut self, name: &'static str) {
        if self.on_tty {
            eprint!("  ..   {name}");
        }
    }
    fn end(&mut self, step: &validate::Step) {
        if self.on_tty {
            let mark = match step.status {
                validate::Status::Passed => "ok  ",
                validate::Status::Failed => "FAIL",
                validate::Status::Skipped => "skip",
                validate::Status::NotRun => "-   ",
            };
            say!("\r  {mark} {} ({} ms)", step.name, step.duration_millis);
        }
    }
}

fn run_validate(opts: validate::Options, json: Option<PathBuf>) -> ExitCode {
    use std::io::IsTerminal;
    // install.sh and the game must not inherit what validate's caller left open.
    if let Err(e) = gse_agent::agent::process::keep_inherited_fds_from_children() {
        say!("gse-agent validate: the build's processes may inherit open descriptors: {e}");
    }
    if std::env::var_os("RUST_LOG").is_some() {
        telemetry::init(LogFormat::Text);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            say!("gse-agent validate: cannot start the async runtime: {e}");
            return ExitCode::from(validate::EXIT_CANNOT_RUN);
        }
    };
    let result = runtime.block_on(async {
        let interrupted = CancellationToken::new();
        let on_signal = interrupted.clone();
        if let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            tokio::spawn(async move {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
                on_signal.cancel();
            });
        }
        let mut ui = TerminalUi {
            on_tty: std::io::stderr().is_terminal(),
        };
        validate::validate(
            &opts,
            &gse_agent::agent::package::System,
            interrupted,
            &mut ui,
        )
        .await
    });
    let report = match result {
        Ok(r) => r,
        Err(e) => {
            say!("gse-agent validate: {e}");
            return ExitCode::from(validate::EXIT_CANNOT_RUN);
        }
    };
    print!("{}", report.table());
    if let Some(path) = json {
        let text = serde_json::to_string_pretty(&report).expect("the report serializes");
        if let Err(e) = std::fs::write(&path, text + "\n") {
            say!("gse-agent validate: cannot write {}: {e}", path.display());
            return ExitCode::from(validate::EXIT_CANNOT_RUN);
        }
    }
    match (report.passed, report.interrupted) {
        (_, true) => ExitCode::from(validate::EXIT_INTERRUPTED),
        (true, _) => ExitCode::SUCCESS,
        (false, _) => ExitCode::from(validate::EXIT_FAILED),
    }
}

/// What `status` and `chaos` need to ask the running agent: where it is (as
/// [`gse_agent::agent::status::resolve`] finds it) and a runtime to ask in; the exit code, said, when
/// either cannot be had.
fn agent_client(
    command: &str,
    capi: Option<std::net::SocketAddr>,
    config: Option<&Path>,
) -> Result<(gse_agent::agent::status::Target, tokio::runtime::Runtime), ExitCode> {
    let target = gse_agent::agent::status::resolve(capi, config).map_err(|e| {
        say!("gse-agent {command}: {e}");
        ExitCode::from(e.exit_code())
    })?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            say!("gse-agent {command}: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        })?;
    Ok((target, runtime))
}

/// `gse-agent chaos`: one `InjectFault` request.
fn run_chaos(
    config: Option<&Path>,
    capi: Option<std::net::SocketAddr>,
    fault: &gse_agent::agent::chaos::FaultArgs,
) -> ExitCode {
    use gse_agent::agent::status;
    let (target, runtime) = match agent_client("chaos", capi, config) {
        Ok(found) => found,
        Err(code) => return code,
    };
    match runtime.block_on(status::call(&target, "InjectFault", fault.params())) {
        Ok(answer) => {
            out!("{}", gse_agent::agent::chaos::describe(&answer));
            ExitCode::SUCCESS
        }
        Err(e) => {
            say!("gse-agent chaos: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// `gse-agent status`: one answer, or one per interval until Ctrl-C.
fn run_status(
    config: Option<&Path>,
    capi: Option<std::net::SocketAddr>,
    json: bool,
    watch: Option<std::time::Duration>,
    events: u32,
) -> ExitCode {
    use gse_agent::agent::status;
    use std::io::IsTerminal;
    let (target, runtime) = match agent_client("status", capi, config) {
        Ok(found) => found,
        Err(code) => return code,
    };
    let show = |answer: &serde_json::Value| -> Result<String, String> {
        if json {
            let text = if watch.is_some() {
                serde_json::to_string(answer)
            } else {
                serde_json::to_string_pretty(answer)
            };
            text.map(|t| t + "\n").map_err(|e| e.to_string())
        } else {
            status::table::render(answer, std::time::SystemTime::now())
        }
    };
    runtime.block_on(async {
        let Some(every) = watch else {
            return match status::fetch(&target, events).await {
                Ok(answer) => match show(&answer) {
                    Ok(text) => {
                        // A closed stdout (`| head`) costs the text, not a panic.
                        let _ = write_out(&text);
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        say!("gse-agent status: the agent at {} answered what this status cannot show: {e}", target.addr);
                        ExitCode::FAILURE
                    }
                },
                Err(e) => {
                    say!("gse-agent status: {e}");
                    ExitCode::from(e.exit_code())
                }
            };
        };
        // Redraw in place on a terminal; a pipe gets one frame after another.
        let clear = !json && std::io::stdout().is_terminal();
        let interrupted = tokio::signal::ctrl_c();
        tokio::pin!(interrupted);
        loop {
            let frame = match status::fetch(&target, events).await.map_err(|e| e.to_string()).and_then(|a| {
                show(&a).map_err(|e| format!("the agent at {} answered what this status cannot show: {e}", target.addr))
            }) {
                Ok(frame) => Some(frame),
                // The agent may be restarting: say so and keep watching. On a screen the
                // message takes the frame's place; a pipe's stdout stays frames only.
                Err(e) if clear => Some(format!("gse-agent status: {e}\n")),
                Err(e) => {
                    say!("gse-agent status: {e}");
                    None
                }
            };
            let text = match (frame, clear, json) {
                (None, ..) => String::new(),
                (Some(frame), true, _) => format!("\x1b[H\x1b[2J{frame}"),
                (Some(frame), false, true) => frame,
                // A pipe: frames one after another, a blank line apart.
                (Some(frame), false, false) => frame + "\n",
            };
            if write_out(&text).is_err() {
                // Nobody reads any more (`| head`): done.
                return ExitCode::SUCCESS;
            }
            tokio::select! {
                _ = &mut interrupted => return ExitCode::SUCCESS,
                () = tokio::time::sleep(every) => {}
            }
        }
    })
}

/// Writes `text` to stdout and flushes it; an error (a closed pipe) is returned, not a panic.
fn write_out(text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()
}

fn run(cfg: Config, sample: bool) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        // Watch signals first: a SIGTERM right after READY=1 must stop the agent gracefully.
        let stops = Stops::default();
        let shutdown = stops.shutdown.clone();
        let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
        let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
        let mut quit = signal(SignalKind::quit()).context("cannot watch SIGQUIT")?;
        let (s, f, d) = (stops.shutdown.clone(), stops.force.clone(), stops.detach.clone());
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
                    tracing::info!("signal received: terminating game servers (send again to kill them now)");
                } else {
                    f.cancel();
                    tracing::warn!("second signal: killing game servers now");
                }
            }
        });
        gse_agent::common::host::return_freed_memory();
        match gse_agent::agent::process::keep_inherited_fds_from_children() {
            Ok(0) => {}
            Ok(n) => tracing::debug!(descriptors = n, "inherited descriptors kept from the games"),
            Err(e) => tracing::warn!(error = %e, "games may inherit descriptors the agent inherited"),
        }
        match gse_agent::common::host::raise_open_files_limit() {
            Ok(limit) => tracing::debug!(limit, "open files"),
            Err(e) => tracing::warn!(error = %e, "cannot raise the open files limit"),
        }
        // Before any child exists: descendants that lose their parent come to the agent, and
        // zombies that belong to no one the agent waits for are reaped.
        if let Err(e) = gse_agent::agent::process::reaper::start() {
            tracing::warn!(error = %e, "orphans of games will not be reaped by the agent");
        }
        if sample {
            daemon::install_sample_build(&cfg)?;
        }
        // A build can take minutes to unpack and install: a signal stops that too (dropping
        // the install kills install.sh's process group; the previous build stays live).
        let run_as = tokio::select! {
            r = daemon::install_build(&cfg, &gse_agent::agent::package::System) => r?,
            () = shutdown.cancelled() => {
                tracing::info!("stopped while installing the build");
                return anyhow::Ok(());
            }
        };
        let data_dir = cfg.data_dir.clone();
        let agent = Agent::build(cfg, run_as).await?;
        let endpoints = agent.endpoints();
        tracing::info!(sdk.addr = %endpoints.sdk_address, capi.addr = ?endpoints.capi_address, "gse-agent started");
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
        agent.run(stops).await?;
        // The last games' escaped descendants are still being swept: let that finish before
        // the runtime goes away.
        gse_agent::agent::process::settle().await;
        // Nothing listens any more.
        let _ = std::fs::remove_file(data_dir.join("endpoints.json"));
        tracing::info!("gse-agent stopped");
        anyhow::Ok(())
    })
}

/// The keys file of a config, for messages.
fn keys_path(c: &config::Config) -> String {
    c.capi_keys_file
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}
