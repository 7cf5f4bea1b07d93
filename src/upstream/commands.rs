//! Commands from the control plane: each becomes one typed [`Control`] command, the same the
//! local control API sends, and gets exactly one result.

use crate::capi::view;
use crate::config::Config;
use crate::fleet::actor::HandleError;
use crate::fleet::{
    Control, ControlReply, FleetError, FleetHandle, NewPlayer, NewSession, SessionUpdate,
};
use crate::package;
use crate::upstream_proto as up;
use up::command::Kind;

fn opt(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

/// One deployment at a time.
static DEPLOYING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// DeployBuild: check the hash, install exactly as at start (unpack, install.sh, switch), then
/// roll the processes. The previous build stays live on any failure.
async fn deploy(
    fleet: &FleetHandle,
    cfg: &Config,
    d: up::DeployBuild,
) -> Result<ControlReply, (&'static str, String)> {
    let location = d.location.strip_prefix("file://").unwrap_or(&d.location);
    if location.contains("://") {
        return Err((
            "UnsupportedOperation",
            format!(
                "DeployBuild takes a path on the host or a file:// URL, not {:?}; fetch the build first",
                d.location
            ),
        ));
    }
    let path = std::path::PathBuf::from(location);
    let _one = DEPLOYING.lock().await;
    let p = path.clone();
    let hash = tokio::task::spawn_blocking(move || package::content_hash(&p))
        .await
        .map_err(|e| ("InternalError", e.to_string()))?
        .map_err(|e| ("InvalidParameterValue", e.to_string()))?;
    if !hash.eq_ignore_ascii_case(d.sha256.trim()) {
        return Err((
            "InvalidParameterValue",
            format!("the build's sha256 is {hash}, not {}", d.sha256.trim()),
        ));
    }
    let plan = crate::agent::package_plan(cfg, path);
    package::install(&plan, &package::System)
        .await
        .map_err(|e| ("OperationDenied", e.to_string()))?;
    fleet.control(Control::Redeploy).await.map_err(|e| match e {
        HandleError::Fleet(f) => (f.tencent_code(), f.to_string()),
        HandleError::Stopped => ("OperationDenied", "the agent is shutting down".into()),
    })
}

/// The typed command of a wire command.
pub fn to_control(kind: Kind, game_root: &std::path::Path) -> Result<Control, FleetError> {
    Ok(match kind {
        Kind::DeployBuild(_) => unreachable!("handled before"),
        Kind::UpdateRuntimeConfiguration(u) => {
            return Control::update_runtime(&u.runtime_configuration_json, game_root);
        }
        Kind::CreateGameServerSession(c) => Control::CreateSession(NewSession {
            max_players: c.maximum_player_session_count,
            name: c.name,
            creator_id: c.creator_id,
            game_properties: c
                .game_properties
                .into_iter()
                .map(|p| (p.key, p.value))
                .collect(),
            data: c.game_server_session_data,
            custom_id: opt(c.game_server_session_id),
            idempotency_token: opt(c.idempotency_token),
        }),
        Kind::JoinGameServerSession(j) => Control::Join {
            gss_id: j.game_server_session_id,
            players: j
                .players
                .into_iter()
                .map(|p| NewPlayer {
                    player_id: p.player_id,
                    player_data: p.player_data,
                })
                .collect(),
        },
        Kind::EndGameServerSessionAndProcess(e) => Control::EndSessionAndProcess {
            gss_id: e.game_server_session_id,
        },
        Kind::SetDraining(d) => Control::SetDraining(d.draining),
        Kind::SetReserved(r) => Control::SetReserved(r.reserved),
        Kind::UpdateGameServerSession(u) => Control::UpdateSession(SessionUpdate {
            gss_id: u.game_server_session_id,
            max_players: u.maximum_player_session_count,
            name: u.name,
            creation_policy: u.player_session_creation_policy,
            protection: u.protection_policy,
        }),
    })
}

/// Applies one command and says how it went.
pub async fn handle(fleet: &FleetHandle, cfg: &Config, command: up::Command) -> up::CommandResult {
    let id = command.id.clone();
    let Some(kind) = command.kind else {
        return failure(id, "MissingParameter", "the command has no kind".into());
    };
    if let Kind::DeployBuild(d) = kind {
        return match deploy(fleet, cfg, d).await {
            Ok(_) => up::CommandResult {
                command_id: id,
                ok: true,
                ..Default::default()
            },
            Err((code, message)) => failure(id, code, message),
        };
    }
    let control = match to_control(kind, &cfg.game_root) {
        Ok(c) => c,
        Err(e) => return failure(id, e.tencent_code(), e.to_string()),
    };
    match fleet.control(control).await {
        Ok(reply) => up::CommandResult {
            command_id: id,
            ok: true,
            error_code: String::new(),
            message: String::new(),
            response_json: match reply {
                ControlReply::Session(s) => view::session(&s).to_string(),
                ControlReply::Players(p, _) => {
                    serde_json::Value::Array(p.iter().map(view::player).collect()).to_string()
                }
                _ => String::new(),
            },
        },
        Err(HandleError::Stopped) => {
            failure(id, "OperationDenied", "the agent is shutting down".into())
        }
        Err(HandleError::Fleet(e)) => failure(id, e.tencent_code(), e.to_string()),
    }
}

fn failure(id: String, code: &str, message: String) -> up::CommandResult {
    up::CommandResult {
        command_id: id,
        ok: false,
        error_code: code.to_string(),
        message,
        response_json: String::new(),
    }
}
