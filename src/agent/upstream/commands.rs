//! Commands from the control plane: each becomes one typed [`Control`] command, the same the
//! local control API sends, and gets exactly one result.

use super::failure;
use crate::agent::capi::view;
use crate::agent::config::Config;
use crate::agent::fleet::actor::HandleError;
use crate::agent::fleet::{Control, ControlReply, FleetError, FleetHandle};
use crate::agent::package::{self, PackageError};
use crate::api::ErrorCode;
use crate::api::sessions::{NewPlayer, NewSession, SessionUpdate};
use crate::upstream_proto as up;
use up::command::Kind;

/// A DeployBuild download must connect within this.
const DOWNLOAD_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// ...and may go this long without a byte (headers or body) before it is given up.
const DOWNLOAD_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

fn opt(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

/// One deployment at a time.
static DEPLOYING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Why a DeployBuild failed, by step; the previous build stays live.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// The location is neither a path nor a file:// or http(s) URL.
    #[error("DeployBuild takes a path, a file:// URL or an http(s) URL, not {0:?}")]
    Location(String),
    /// The given sha256 is not one.
    #[error("sha256 {0:?} is not 64 hex digits")]
    NotAHash(String),
    /// The download failed.
    #[error("cannot download {url}: {reason}")]
    Download {
        /// The URL.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// The download is larger than `package.max-bytes`.
    #[error("{url} is larger than package.max-bytes ({limit} bytes)")]
    TooLarge {
        /// The URL.
        url: String,
        /// The limit.
        limit: u64,
    },
    /// The build could not be read to hash it.
    #[error(transparent)]
    Read(PackageError),
    /// The hashing task failed.
    #[error("hashing the build failed: {0}")]
    Task(String),
    /// The build or the download is not the one named.
    #[error("{what}'s sha256 is {got}, not {want}")]
    Hash {
        /// The build or the download.
        what: &'static str,
        /// Its hash.
        got: String,
        /// The hash the command named.
        want: String,
    },
    /// Unpacking or install.sh failed.
    #[error(transparent)]
    Install(PackageError),
    /// The fleet refused to roll its processes.
    #[error(transparent)]
    Redeploy(FleetError),
    /// The agent is shutting down.
    #[error("the agent is shutting down")]
    Stopped,
}

impl DeployError {
    /// The Tencent Cloud API error code the command's result carries.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Location(_) => ErrorCode::UnsupportedOperation,
            Self::NotAHash(_) | Self::Read(_) | Self::Hash { .. } => {
                ErrorCode::InvalidParameterValue
            }
            Self::TooLarge { .. } => ErrorCode::LimitExceeded,
            Self::Task(_) => ErrorCode::InternalError,
            Self::Download { .. } | Self::Install(_) | Self::Stopped => ErrorCode::OperationDenied,
            Self::Redeploy(f) => f.tencent_code(),
        }
    }
}

/// DeployBuild: check the hash, install exactly as at start (unpack, install.sh, switch), then
/// roll the processes. The previous build stays live on any failure.
async fn deploy(
    fleet: &FleetHandle,
    cfg: &Config,
    d: up::DeployBuild,
) -> Result<ControlReply, DeployError> {
    let _one = DEPLOYING.lock().await;
    let location = d.location.strip_prefix("file://").unwrap_or(&d.location);
    let path = if location.starts_with("http://") || location.starts_with("https://") {
        download(location, cfg, d.sha256.trim()).await?
    } else if location.contains("://") {
        return Err(DeployError::Location(d.location.clone()));
    } else {
        std::path::PathBuf::from(location)
    };
    let p = path.clone();
    let hash = tokio::task::spawn_blocking(move || package::content_hash(&p))
        .await
        .map_err(|e| DeployError::Task(e.to_string()))?
        .map_err(DeployError::Read)?;
    if !hash.eq_ignore_ascii_case(d.sha256.trim()) {
        return Err(DeployError::Hash {
            what: "the build",
            got: hash,
            want: d.sha256.trim().to_string(),
        });
    }
    let plan = crate::agent::package::Plan::for_config(cfg, path.clone());
    package::install(&plan, &package::System)
        .await
        .map_err(DeployError::Install)?;
    // Older downloads are not needed once a build is live (it lives in builds/).
    let downloads = cfg.data_dir.join("downloads");
    if path.starts_with(&downloads) {
        let live = path.clone();
        let _ = tokio::task::spawn_blocking(move || {
            for e in std::fs::read_dir(&downloads)
                .into_iter()
                .flatten()
                .flatten()
            {
                if e.path() != live {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        })
        .await;
    }
    fleet.control(Control::Redeploy).await.map_err(|e| match e {
        HandleError::Fleet(f) => DeployError::Redeploy(f),
        HandleError::Stopped => DeployError::Stopped,
    })
}

/// Downloads a build into `data-dir/downloads/<sha256>.zip`, counting bytes against
/// `package.max-bytes` and checking the SHA-256 as it streams.
async fn download(
    url: &str,
    cfg: &Config,
    sha256: &str,
) -> Result<std::path::PathBuf, DeployError> {
    use sha2::{Digest, Sha256};
    use tokio::io::AsyncWriteExt;
    let failed = |e: &dyn std::fmt::Display| DeployError::Download {
        url: url.to_string(),
        reason: e.to_string(),
    };
    if sha256.len() != 64 || !sha256.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(DeployError::NotAHash(sha256.to_string()));
    }
    let dir = cfg.data_dir.join("downloads");
    // File work through tokio::fs: on the blocking pool, never on an async worker.
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|e| failed(&e))?;
    let dest = dir.join(format!("{}.zip", sha256.to_ascii_lowercase()));
    if tokio::fs::metadata(&dest).await.is_ok_and(|m| m.is_file()) {
        return Ok(dest);
    }
    let part = dir.join(format!("{}.part", sha256.to_ascii_lowercase()));
    // A server that accepts and then stalls fails the command instead of holding it forever.
    let client = reqwest::Client::builder()
        .connect_timeout(DOWNLOAD_CONNECT_TIMEOUT)
        .read_timeout(DOWNLOAD_IDLE_TIMEOUT)
        .build()
        .map_err(|e| failed(&e))?;
    let mut response = client
        .get(url)
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| failed(&e))?;
    let mut file = tokio::fs::File::create(&part)
        .await
        .map_err(|e| failed(&e))?;
    let mut hasher = Sha256::new();
    let mut bytes = 0u64;
    let limit = cfg.package.max_bytes.get();
    let result = async {
        while let Some(chunk) = response.chunk().await.map_err(|e| failed(&e))? {
            bytes += chunk.len() as u64;
            if bytes > limit {
                return Err(DeployError::TooLarge {
                    url: url.to_string(),
                    limit,
                });
            }
            hasher.update(&chunk);
            file.write_all(&chunk).await.map_err(|e| failed(&e))?;
        }
        let got: String = hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        if !got.eq_ignore_ascii_case(sha256) {
            return Err(DeployError::Hash {
                what: "the download",
                got,
                want: sha256.to_string(),
            });
        }
        file.flush().await.map_err(|e| failed(&e))?;
        tokio::fs::rename(&part, &dest)
            .await
            .map_err(|e| failed(&e))
    }
    .await;
    if result.is_err() {
        let _ = tokio::fs::remove_file(&part).await;
    }
    result.map(|()| dest)
}

/// The typed command of a wire command.
pub fn to_control(kind: Kind, game_root: &std::path::Path) -> Result<Control, FleetError> {
    Ok(match kind {
        Kind::DeployBuild(_) => {
            return Err(FleetError::Denied(
                "DeployBuild is handled by the relay, not the fleet".into(),
            ));
        }
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
        return failure(
            id,
            ErrorCode::MissingParameter,
            "the command has no kind".into(),
        );
    };
    if let Kind::DeployBuild(d) = kind {
        return match deploy(fleet, cfg, d).await {
            Ok(_) => up::CommandResult {
                command_id: id,
                ok: true,
                ..Default::default()
            },
            Err(e) => failure(id, e.code(), e.to_string()),
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
        Err(HandleError::Stopped) => failure(
            id,
            ErrorCode::OperationDenied,
            "the agent is shutting down".into(),
        ),
        Err(HandleError::Fleet(e)) => failure(id, e.tencent_code(), e.to_string()),
    }
}
