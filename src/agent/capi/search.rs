//! SearchGameServerSessions: the ACTIVE sessions of this host's fleet that match a
//! `FilterExpression`, ordered by a `SortExpression`, in pages (see [`crate::api::search`]).

use serde_json::{Map, Value, json};

use super::{Capi, CapiError, unexpected, view};
use crate::agent::fleet::{Control, ControlReply, SessionQuery};
use crate::agent::session::{CreationPolicy, GameSession, GssStatus};
use crate::api::params::Params;
use crate::api::search::Subject;
use crate::api::search::request::{SEARCH_PARAMS, SearchRequest};

/// Unix milliseconds of a time.
fn millis(t: std::time::SystemTime) -> i64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn subject(s: &GameSession) -> Subject<'_> {
    Subject {
        name: &s.name,
        id: &s.id,
        maximum_sessions: i64::from(s.max_players),
        creation_time_millis: millis(s.creation_time),
        player_session_count: i64::from(s.current_players),
        has_available_player_sessions: s.status == GssStatus::Active
            && s.policy == CreationPolicy::AcceptAll
            && s.current_players < s.max_players,
        properties: s
            .game_properties
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect(),
    }
}

impl Capi {
    /// Every session of the fleet in `status` (the fleet pages by 100).
    pub(super) async fn sessions_in(
        &self,
        status: GssStatus,
    ) -> Result<Vec<GameSession>, CapiError> {
        let mut all = Vec::new();
        let mut next_token = None;
        loop {
            let q = SessionQuery {
                gss_id: None,
                status: Some(status),
                next_token: next_token.take(),
                limit: 100,
            };
            match self.fleet.control(Control::DescribeSessions(q)).await? {
                ControlReply::Sessions(page, next) => {
                    all.extend(page);
                    match next {
                        Some(t) => next_token = Some(t),
                        None => return Ok(all),
                    }
                }
                other => return Err(unexpected(&other)),
            }
        }
    }

    pub(super) async fn search_sessions(
        &self,
        map: Map<String, Value>,
    ) -> Result<Value, CapiError> {
        let p = Params::new(map, SEARCH_PARAMS)?;
        self.check_fleet(&p, true).await?;
        let search = SearchRequest::read(&p)?;
        let sessions = self.sessions_in(GssStatus::Active).await?;
        let (page, next) = search.page(&sessions, subject);
        let page: Vec<Value> = page.into_iter().map(view::session).collect();
        Ok(json!({"GameServerSessions": page, "NextToken": next}))
    }
}
