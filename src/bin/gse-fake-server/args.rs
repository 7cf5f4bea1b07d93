//! The fake server's flags: what to misbehave at, and how.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;

#[derive(Parser, Debug, Clone)]
#[command(about = "A fault-injecting GSE game server")]
pub(crate) struct Args {
    /// Address of the agent's GSE SDK server [default: $GSE_SDK_ADDRESS or 127.0.0.1:5758].
    #[arg(long)]
    pub(crate) sdk_address: Option<SocketAddr>,
    /// When to crash: never, before-ready, after-ready, on-session-start, on-activate, after:DURATION.
    #[arg(long, default_value = "never")]
    pub(crate) crash_at: CrashAt,
    /// How to crash: exit:CODE or signal:NAME (e.g. signal:SIGSEGV).
    #[arg(long, default_value = "exit:1")]
    pub(crate) crash_with: CrashWith,
    /// Health answers: healthy, unhealthy (false) or hang (never answer).
    #[arg(long, default_value = "healthy")]
    pub(crate) health: Health,
    /// Answer this many health checks healthy before switching to --health.
    #[arg(long, default_value_t = 0)]
    pub(crate) healthy_checks: u64,
    /// Never call ProcessReady.
    #[arg(long)]
    pub(crate) no_ready: bool,
    /// Wait this long before ActivateGameServerSession.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub(crate) activation_delay: Option<Duration>,
    /// Never call ActivateGameServerSession.
    #[arg(long)]
    pub(crate) skip_activation: bool,
    /// Answer OnStartGameServerSession with ERROR_500 and do not activate.
    #[arg(long)]
    pub(crate) refuse_sessions: bool,
    /// Ignore SIGTERM (the agent must SIGKILL).
    #[arg(long)]
    pub(crate) ignore_sigterm: bool,
    /// Ignore OnProcessTerminate (do not end the session or the process).
    #[arg(long)]
    pub(crate) ignore_terminate: bool,
    /// After OnProcessTerminate, call ProcessEnding but do not exit.
    #[arg(long)]
    pub(crate) hang_after_ending: bool,
    /// Fork this many grandchildren that sleep (ignoring SIGTERM with --ignore-sigterm).
    #[arg(long, default_value_t = 0)]
    pub(crate) fork: u32,
    /// Fork this many grandchildren that call setsid (leaving the game's process group and
    /// session) and sleep forever; prints `setsid-child: <pid>` for each to stdout.
    #[arg(long, default_value_t = 0)]
    pub(crate) fork_setsid: u32,
    /// Write this many bytes of output to stdout at start (and some to stderr).
    #[arg(long, default_value_t = 0)]
    pub(crate) spew_bytes: u64,
    /// Keep writing about this many bytes of output per second to stdout, ignoring write
    /// errors as a game that never checks its stdout does (a full disk costs lines, not the
    /// process).
    #[arg(long, default_value_t = 0)]
    pub(crate) spew_rate: u64,
    /// Print a line to stdout and stderr at start (shows up in crash events).
    #[arg(long)]
    pub(crate) say: Option<String>,
    /// Accept players on the client port: a client sends its player session id and a newline.
    #[arg(long)]
    pub(crate) accept_players: bool,
    /// Client port to report (0: pick a free one when accepting players, else 7777).
    #[arg(long, default_value_t = 0)]
    pub(crate) client_port: u16,
    /// End the match this long after activation: TerminateGameServerSession, then ProcessEnding.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub(crate) match_duration: Option<Duration>,
    /// After a match ends, stay for another session instead of calling ProcessEnding.
    #[arg(long)]
    pub(crate) keep_running: bool,
    /// logPathsToUpload to report in ProcessReady.
    #[arg(long)]
    pub(crate) log_path: Vec<String>,
    /// Write a log file of the game's own at start: `PATH=TEXT` appends TEXT and a newline to
    /// PATH (relative to the working directory, the game root; folders are made).
    #[arg(long, value_parser = parse_write_file)]
    pub(crate) write_file: Vec<(std::path::PathBuf, String)>,
    /// Append `start <unix-ns>` at start and `exit <unix-ns>` just before a crash to this file
    /// (used by the restart-latency benchmark).
    #[arg(long)]
    pub(crate) stamp: Option<std::path::PathBuf>,
    /// Make SDK calls on request: listen on a free loopback port, write it to `DIR/<pid>`, and
    /// run one command per line (see the `commands` module; e.g. `custom 3 10`).
    #[arg(long)]
    pub(crate) command_dir: Option<std::path::PathBuf>,
    /// Internal: call ProcessReady once with this process's pid, print the answer, exit.
    #[arg(long, hide = true)]
    pub(crate) helper_ready: bool,
    /// Internal: run as a forked grandchild.
    #[arg(long, hide = true)]
    pub(crate) grandchild: bool,
    /// Internal: the grandchild starts its own session first.
    #[arg(long, hide = true)]
    pub(crate) setsid: bool,
}

fn parse_write_file(s: &str) -> Result<(std::path::PathBuf, String), String> {
    let (path, text) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not PATH=TEXT"))?;
    Ok((path.into(), text.to_string()))
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum CrashAt {
    Never,
    BeforeReady,
    AfterReady,
    OnSessionStart,
    OnActivate,
    After(Duration),
}

impl std::str::FromStr for CrashAt {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "never" => Self::Never,
            "before-ready" => Self::BeforeReady,
            "after-ready" => Self::AfterReady,
            "on-session-start" => Self::OnSessionStart,
            "on-activate" => Self::OnActivate,
            _ => match s.strip_prefix("after:") {
                Some(d) => Self::After(humantime::parse_duration(d).map_err(|e| e.to_string())?),
                None => return Err(format!("unknown crash point {s:?}")),
            },
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum CrashWith {
    Exit(i32),
    Signal(nix::sys::signal::Signal),
}

impl std::str::FromStr for CrashWith {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(code) = s.strip_prefix("exit:") {
            return code.parse().map(Self::Exit).map_err(|e| format!("{e}"));
        }
        if let Some(name) = s.strip_prefix("signal:") {
            return name
                .parse()
                .map(Self::Signal)
                .map_err(|_| format!("unknown signal {name:?}"));
        }
        Err(format!("{s:?} is not exit:CODE or signal:NAME"))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, clap::ValueEnum)]
pub(crate) enum Health {
    Healthy,
    Unhealthy,
    Hang,
}
