//! `gse-agent unpack`: a build unpacked the way the agent does it, every rule and limit.

use std::path::Path;
use std::process::ExitCode;

use super::EXIT_CONFIG;
use crate::agent::config;
use crate::agent::package;

/// Unpacks `build` (a zip or a directory) into `dest`, which must not exist, under the
/// `package` limits of `config` (defaults without one). On failure nothing is left at `dest`.
pub fn unpack(build: &Path, dest: &Path, config: Option<&Path>) -> ExitCode {
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
        package::copy_tree(build, dest, &limits, &|_, _, _| {})
    } else {
        package::unzip::unpack(build, dest, &limits, &|_, _, _| {})
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
