//! `gse-agent status` and `gse-agent chaos`: one question to the running agent's control API.

use std::path::Path;
use std::process::ExitCode;

use crate::agent::status;

/// What `status` and `chaos` need to ask the running agent: where it is (as
/// [`status::resolve`] finds it) and a runtime to ask in; the exit code, said, when
/// either cannot be had.
fn agent_client(
    command: &str,
    capi: Option<std::net::SocketAddr>,
    config: Option<&Path>,
) -> Result<(crate::agent::status::Target, tokio::runtime::Runtime), ExitCode> {
    let target = crate::agent::status::resolve(capi, config).map_err(|e| {
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

/// `gse-agent chaos`: one `InjectFault` request to the running agent; exit 0 when injected.
pub fn chaos(
    config: Option<&Path>,
    capi: Option<std::net::SocketAddr>,
    fault: &crate::agent::chaos::FaultArgs,
) -> ExitCode {
    let (target, runtime) = match agent_client("chaos", capi, config) {
        Ok(found) => found,
        Err(code) => return code,
    };
    match runtime.block_on(status::call(&target, "InjectFault", fault.params())) {
        Ok(answer) => {
            out!("{}", crate::agent::chaos::describe(&answer));
            ExitCode::SUCCESS
        }
        Err(e) => {
            say!("gse-agent chaos: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// `gse-agent status`: one answer, or one per `watch` interval until Ctrl-C; exit 0, or 1 when
/// the agent cannot be reached.
pub fn status(
    config: Option<&Path>,
    capi: Option<std::net::SocketAddr>,
    json: bool,
    watch: Option<std::time::Duration>,
    events: u32,
) -> ExitCode {
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
