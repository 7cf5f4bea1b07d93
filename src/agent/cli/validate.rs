//! `gse-agent validate`: the run of [`crate::agent::validate`] on a terminal.

use std::path::PathBuf;
use std::process::ExitCode;

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

use crate::agent::validate;
use crate::common::telemetry::LogFormat;

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

/// Runs validate on `opts` with live lines on a terminal, prints the table (and writes the JSON
/// report to `json`); exits 0 passed, 1 failed, 2 could not run, 130 interrupted.
pub fn validate(opts: validate::Options, json: Option<PathBuf>) -> ExitCode {
    use std::io::IsTerminal;
    // install.sh and the game must not inherit what validate's caller left open.
    if let Err(e) = crate::agent::process::keep_inherited_fds_from_children() {
        say!("gse-agent validate: the build's processes may inherit open descriptors: {e}");
    }
    if std::env::var_os("RUST_LOG").is_some() {
        crate::common::telemetry::init(LogFormat::Text);
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
        validate::validate(&opts, &crate::agent::package::System, interrupted, &mut ui).await
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
