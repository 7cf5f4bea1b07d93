//! The GSE SDK's refusals, driven by a test client that impersonates game processes.

use gse_agent::proto::gse_grpc_sdk_service_client::GseGrpcSdkServiceClient;
use gse_agent::proto::{self, GseResponse};
use tonic::transport::Channel;

use crate::helper::{Agent, config, entry};

const FAST: &str = "
health-check: { interval: 1h, timeout: 1s, failure-threshold: 3 }
timeouts: { process-exit: 1s, stop-grace: 200ms, shutdown: 1s }";

struct Sdk {
    rt: tokio::runtime::Runtime,
    client: GseGrpcSdkServiceClient<Channel>,
}

impl Sdk {
    fn new(agent: &Agent) -> Self {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let client = rt
            .block_on(GseGrpcSdkServiceClient::connect(format!(
                "http://{}",
                agent.sdk
            )))
            .unwrap();
        Self { rt, client }
    }

    fn req<T>(pid: Option<&str>, msg: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        if let Some(pid) = pid {
            r.metadata_mut().insert("pid", pid.parse().unwrap());
        }
        r.metadata_mut()
            .insert("requestid", "test-request".parse().unwrap());
        r
    }

    fn ending(&mut self, pid: Option<&str>) -> GseResponse {
        let mut c = self.client.clone();
        self.rt
            .block_on(c.process_ending(Self::req(pid, proto::ProcessEndingRequest {})))
            .unwrap()
            .into_inner()
    }

    /// AcceptPlayerSession of player session `psess-none` in `gss_id`, as `pid`.
    fn accept(&self, pid: &str, gss_id: &str) -> GseResponse {
        let mut c = self.client.clone();
        self.rt
            .block_on(c.accept_player_session(Self::req(
                Some(pid),
                proto::AcceptPlayerSessionRequest {
                    game_server_session_id: gss_id.to_string(),
                    player_session_id: "psess-none".into(),
                },
            )))
            .unwrap()
            .into_inner()
    }

    fn ready(&mut self, pid: &str) -> GseResponse {
        let mut c = self.client.clone();
        let msg = proto::ProcessReadyRequest {
            log_paths_to_upload: vec![],
            client_port: 7000,
            grpc_port: 7001,
        };
        self.rt
            .block_on(c.process_ready(Self::req(Some(pid), msg)))
            .unwrap()
            .into_inner()
    }
}

fn assert_400(r: &GseResponse, needle: &str) {
    assert_eq!(
        r.status,
        proto::gse_response::Status::Error400 as i32,
        "{r:?}"
    );
    assert!(
        r.error_message.contains(needle),
        "{needle:?} not in {:?}",
        r.error_message
    );
}

#[test]
fn calls_without_a_known_pid_are_refused_with_400() {
    let agent = Agent::start(&config(&entry("", 1), FAST));
    agent.wait_ready(1);
    let mut sdk = Sdk::new(&agent);
    assert_400(&sdk.ending(None), "missing metadata \"pid\"");
    assert_400(&sdk.ending(Some("abc")), "not a process id");
    // The test process is no child of the agent (nor are its parents).
    assert_400(
        &sdk.ending(Some(&std::process::id().to_string())),
        "is not a server process launched by this agent",
    );
}

#[test]
fn calls_illegal_in_the_current_state_are_refused_with_400() {
    let agent = Agent::start(&config(&entry("", 1), FAST));
    let pid = agent.wait_ready(1)[0]["Pid"].to_string();
    let mut sdk = Sdk::new(&agent);
    assert_400(&sdk.ready(&pid), "ProcessReady was already called");
    let mut c = sdk.client.clone();
    let activate = sdk
        .rt
        .block_on(c.activate_game_server_session(Sdk::req(
            Some(&pid),
            proto::ActivateGameServerSessionRequest {
                game_server_session_id: "gssess-none".into(),
                max_players: 1,
            },
        )))
        .unwrap()
        .into_inner();
    assert_400(&activate, "game server session gssess-none does not exist");
    assert_400(&sdk.accept(&pid, "gssess-none"), "does not exist");
    let policy = sdk
        .rt
        .block_on(c.update_player_session_creation_policy(Sdk::req(
            Some(&pid),
            proto::UpdatePlayerSessionCreationPolicyRequest {
                game_server_session_id: "x".into(),
                new_player_session_creation_policy: "SOMETIMES".into(),
            },
        )))
        .unwrap()
        .into_inner();
    assert_400(&policy, "not ACCEPT_ALL or DENY_ALL");
    let custom = sdk
        .rt
        .block_on(c.report_custom_data(Sdk::req(
            Some(&pid),
            proto::ReportCustomDataRequest {
                current_custom_count: -1,
                max_custom_count: 1,
            },
        )))
        .unwrap()
        .into_inner();
    assert_400(&custom, "currentCustomCount");
    let bad_limit = sdk.rt.block_on(c.describe_player_sessions(Sdk::req(
        Some(&pid),
        proto::DescribePlayerSessionsRequest {
            limit: -5,
            ..Default::default()
        },
    )));
    let status = bad_limit.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("limit -5"), "{status}");
    // Sessions of another process cannot be touched.
    let other = sdk.ending(Some(&pid));
    assert_eq!(other.status, 0, "ProcessEnding is legal: {other:?}");
    assert_400(&sdk.ending(Some(&pid)), "ProcessEnding was already called");
}

#[test]
fn a_helper_process_in_the_games_group_speaks_for_the_game() {
    let agent = Agent::start(&config(&entry("--fork 1", 1), FAST));
    let game = agent.wait_ready(1)[0]["Pid"].as_u64().unwrap() as u32;
    let helper = crate::helper::wait_for("the game's forked helper", || {
        crate::helper::children_of(game).into_iter().next()
    });
    let mut sdk = Sdk::new(&agent);
    assert_400(
        &sdk.ready(&helper.to_string()),
        "ProcessReady was already called",
    );
}

/// A caller cannot use the agent's log as a weapon: refused values are cut and refusals are
/// rate-limited per claimed pid, with a count of what was left out.
#[test]
fn a_flood_of_huge_refused_calls_costs_little_log() {
    let agent = Agent::start(&config(&entry("", 1), FAST));
    let pid = agent.wait_ready(1)[0]["Pid"].as_u64().unwrap().to_string();
    let sdk = Sdk::new(&agent);
    let huge = "x".repeat(3 << 20);
    let before = agent.stderr().len();
    for _ in 0..30 {
        assert_400(&sdk.accept(&pid, &huge), "does not exist");
    }
    // One more after the window would say how many were suppressed; within it, at most ten
    // lines of a few hundred bytes each were written for 90 MB of refused values.
    let log = agent.stderr();
    let grown = log.len() - before;
    assert!(grown < 64 * 1024, "{grown} bytes of log");
    assert!(log.contains("bytes cut"), "values are cut and say so");
    let refusals = log.matches("sdk call refused").count();
    assert!(refusals <= 10, "{refusals} refusal lines");
}
