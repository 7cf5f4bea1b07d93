//! Commands from the control plane: each becomes one typed [`Control`] command, the same the
//! local control API sends, and gets exactly one result.

use crate::capi::view;
use crate::fleet::actor::HandleError;
use crate::fleet::{
    Control, ControlReply, FleetError, FleetHandle, NewPlayer, NewSession, SessionUpdate,
};
use crate::upstream_proto as up;
use up::command::Kind;

fn opt(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

/// The typed command of a wire command.
pub fn to_control(kind: Kind, game_root: &std::path::Path) -> Result<Control, FleetError> {
    Ok(match kind {
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
pub async fn handle(
    fleet: &FleetHandle,
    game_root: &std::path::Path,
    command: up::Command,
) -> up::CommandResult {
    let id = command.id.clone();
    let Some(kind) = command.kind else {
        return failure(id, "MissingParameter", "the command has no kind".into());
    };
    let control = match to_control(kind, game_root) {
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
