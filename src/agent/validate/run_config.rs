//! The configuration of a validation run: the config given (its agent's own waits made short
//! unless `--config-timings`) or validation defaults around one LaunchPath, relocated into the
//! run's temporary root.

use std::path::Path;

use super::{Options, ValidateError};
use crate::agent::config::{self, Config};

/// Short timings suited to a validation run, used without `--config`.
const DEFAULTS: &str = "
fleet-id: fleet-validate
health-check: { interval: 1s, timeout: 2s, failure-threshold: 3 }
timeouts: { process-ready: 60s, process-exit: 10s, player-reservation: 60s, stop-grace: 2s, shutdown: 10s }
protection: { policy: NoProtection, no-protection-grace: 15s }
";

fn yaml_quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

/// The validation defaults with one ServerProcesses entry.
fn defaults_with(
    launch_path: &str,
    parameters: &str,
    count: u32,
    root: &Path,
) -> Result<Config, ValidateError> {
    let text = format!(
        "{DEFAULTS}runtime-configuration:\n  ServerProcesses:\n    - LaunchPath: {}\n      Parameters: {}\n      ConcurrentExecutions: {}\n  GameServerSessionActivationTimeoutSeconds: 30\n",
        yaml_quote(launch_path),
        yaml_quote(parameters),
        count
    );
    Ok(config::parse(&text, "<validate defaults>", root)?)
}

/// The configuration of the run, relocated into `root`.
pub fn config_for(opts: &Options, root: &Path) -> Result<Config, ValidateError> {
    let cfg = match (&opts.config, &opts.launch_path) {
        (Some(path), _) => {
            let mut cfg = config::read(path)?;
            if !opts.config_timings {
                // The agent's own waits are made short; the deadlines the game must meet
                // (ProcessReady, a health answer, exit after ProcessEnding, a player's
                // acceptance) stay the config's, so validation is never stricter than the host.
                let short = defaults_with("/local/game/server", "", 1, root)?;
                let (hc, t) = (&mut cfg.health_check, &mut cfg.timeouts);
                hc.interval = hc.interval.min(short.health_check.interval);
                t.stop_grace = t.stop_grace.min(short.timeouts.stop_grace);
                t.shutdown = t.shutdown.min(short.timeouts.shutdown);
                cfg.protection = short.protection;
            }
            cfg
        }
        (None, Some(lp)) => defaults_with(lp, &opts.parameters, opts.concurrent_executions, root)?,
        (None, None) => return Err(ValidateError::NoLaunchConfig),
    };
    let mut cfg = cfg
        .relocated(root.join("data"), root.join("game"))
        .map_err(ValidateError::LaunchPath)?;
    cfg.sdk_listen = "127.0.0.1:0".parse().expect("a valid address");
    cfg.capi_listen = None;
    Ok(cfg)
}

/// What the timings of the run were, and how to change them.
pub(super) fn timings_note(opts: &Options, cfg: &Config) -> String {
    let hc = &cfg.health_check;
    let which = match (&opts.config, opts.config_timings) {
        (Some(_), false) => {
            "short waits of the agent's own, the game's deadlines from the config (--config-timings: every timing from the config)"
        }
        (Some(_), true) => "every timing from the config",
        (None, _) => "validation timings",
    };
    format!(
        "timings: {which}: health checks every {}, each answered within {}; ProcessReady within {}",
        humantime::format_duration(hc.interval.get()),
        humantime::format_duration(hc.timeout.get()),
        humantime::format_duration(cfg.timeouts.process_ready.get()),
    )
}
