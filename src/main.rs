//! `gse-agent`: the binary's edge. Parses the command line and calls the subcommand in
//! [`gse_agent::agent::cli`], whose exit code it returns.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use gse_agent::agent::chaos::FaultArgs;
use gse_agent::agent::cli::{self, EXIT_CONFIG};
use gse_agent::agent::{status, validate};
use gse_agent::common::telemetry::LogFormat;

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
              value_parser = status::parse_interval)]
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
        fault: FaultArgs,
    },
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
        Command::Run { config, log_format } => cli::serve(config.as_deref(), log_format),
        Command::CheckConfig { config } => cli::check_config(&config),
        Command::SampleConfig => {
            print!("{}", gse_agent::agent::config::SAMPLE_CONFIG);
            ExitCode::SUCCESS
        }
        Command::Unpack {
            build,
            dest,
            config,
        } => cli::unpack(&build, &dest, config.as_deref()),
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
            cli::validate(opts, json)
        }
        Command::Status {
            config,
            capi,
            json,
            watch,
            events,
        } => cli::status(config.as_deref(), capi, json, watch, events),
        Command::Chaos {
            config,
            capi,
            fault,
        } => cli::chaos(config.as_deref(), capi, &fault),
    }
}
