//! `gse-agent check-config`: every problem of a config, or `ok` and the keys with full access.

use std::path::Path;
use std::process::ExitCode;

use super::EXIT_CONFIG;
use crate::agent::config;

/// Checks `path` as the service would read it on this host; exit 0 when it is valid, 64 when
/// not (each problem said).
pub fn check_config(path: &Path) -> ExitCode {
    let c = match config::read_for_host(path) {
        Ok(c) => c,
        Err(e) => {
            say!("{e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    out!(
        "{}: ok ({} server process(es))",
        path.display(),
        c.total_processes()
    );
    if let Some(keys_file) = &c.capi_keys_file
        && let Ok((keys, policies)) = crate::api::tc3::keys::read_all(keys_file)
    {
        let mut full: Vec<&String> = keys
            .keys()
            .filter(|id| !policies.contains_key(*id))
            .collect();
        full.sort();
        for id in full {
            out!(
                "{}: key {id} has no policy: full access",
                keys_file.display()
            );
        }
    }
    ExitCode::SUCCESS
}
