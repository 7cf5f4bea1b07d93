//! The calls the actor makes to a game's `GameServerGrpcSdkService`, each with its deadline;
//! the actor spawns them and feeds their results back as reports.

use std::time::Duration;

use tokio::time::timeout;

use super::Client;
use crate::agent::fleet::api::StartFault;
use crate::proto::{self, gse_response};

/// How long OnProcessTerminate may take before it is given up (the deadline still applies).
const TERMINATE_CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// OnHealthCheck within `limit`: healthy or not, and what was seen.
pub(super) async fn health_check(mut client: Client, limit: Duration) -> (bool, String) {
    match timeout(limit, client.on_health_check(proto::HealthCheckRequest {})).await {
        Ok(Ok(r)) if r.get_ref().health_status => (true, "healthy".into()),
        Ok(Ok(_)) => (false, "healthStatus false".into()),
        Ok(Err(status)) => (false, format!("rpc error: {}", status.message())),
        Err(_) => (
            false,
            format!("no answer within {}", humantime::format_duration(limit)),
        ),
    }
}

/// OnStartGameServerSession within `limit`, as crash rehearsal's `fault` (if any) has it:
/// `None` when the game did not answer in time.
pub(super) async fn start_session(
    mut client: Client,
    limit: Duration,
    session: proto::GameServerSession,
    fault: Option<StartFault>,
) -> Option<Result<(), String>> {
    match fault {
        Some(StartFault::Fail) => {
            return Some(Err(
                "failed by crash rehearsal (the game was not called)".into()
            ));
        }
        Some(StartFault::Delay(d)) => {
            tracing::info!(delay = %humantime::format_duration(d), "crash rehearsal: delaying OnStartGameServerSession");
            tokio::time::sleep(d).await;
        }
        None => {}
    }
    let req = proto::StartGameServerSessionRequest {
        game_server_session: Some(session),
    };
    match timeout(limit, client.on_start_game_server_session(req)).await {
        Ok(Ok(r)) => Some(gse_result(r.get_ref())),
        Ok(Err(status)) => Some(Err(format!("rpc error: {}", status.message()))),
        Err(_) => None,
    }
}

/// OnProcessTerminate; what goes wrong is logged (the termination deadline applies anyway).
pub(super) async fn process_terminate(mut client: Client, termination_time: i64) {
    let req = proto::ProcessTerminateRequest { termination_time };
    match timeout(TERMINATE_CALL_TIMEOUT, client.on_process_terminate(req)).await {
        Ok(Ok(r)) => {
            if let Err(e) = gse_result(r.get_ref()) {
                tracing::warn!(error = %e, "OnProcessTerminate answered with an error");
            }
        }
        Ok(Err(status)) => {
            tracing::warn!(error = %status.message(), "OnProcessTerminate failed")
        }
        Err(_) => tracing::warn!("OnProcessTerminate did not answer"),
    }
}

fn gse_result(r: &proto::GseResponse) -> Result<(), String> {
    if r.status == gse_response::Status::Ok as i32 {
        Ok(())
    } else {
        Err(format!(
            "status {}: {}",
            gse_response::Status::try_from(r.status)
                .map(|s| s.as_str_name())
                .unwrap_or("unknown"),
            r.error_message
        ))
    }
}
