//! SearchGameServerSessions: the ACTIVE sessions of this host's fleet that match a
//! `FilterExpression`, ordered by a `SortExpression`, in pages (see [`crate::api::search`]).

use serde_json::{Map, Value, json};

use super::{Capi, CapiError, unexpected, view};
use crate::agent::fleet::{Control, ControlReply, SessionQuery};
use crate::agent::session::{CreationPolicy, GameSession, GssStatus};
use crate::api::params::Params;
use crate::api::search::{self, Subject};

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

/// SearchGameServerSessions' parameters other than the fleet.
pub(crate) const SEARCH_PARAMS: &[&str] = &[
    "FleetId",
    "AliasId",
    "Limit",
    "NextToken",
    "FilterExpression",
    "SortExpression",
];

/// A search as asked: filter, order and page.
pub(crate) struct SearchRequest {
    filter: Option<search::Expr>,
    sort: Option<search::Sort>,
    offset: usize,
    limit: usize,
}

impl SearchRequest {
    /// Reads `Limit`, `NextToken`, `FilterExpression` and `SortExpression`.
    pub(crate) fn read(p: &Params) -> Result<Self, CapiError> {
        let limit = p.opt_int("Limit", 1, 100)?.unwrap_or(100) as usize;
        let syntax = |name: &'static str| {
            move |e: search::SyntaxError| {
                CapiError::new("InvalidParameterValue", format!("`{name}` {e}"))
            }
        };
        let filter = p
            .opt_str("FilterExpression", search::MAX_LEN)?
            .map(|f| search::parse_filter(&f).map_err(syntax("FilterExpression")))
            .transpose()?;
        let sort = p
            .opt_str("SortExpression", search::MAX_LEN)?
            .map(|s| search::parse_sort(&s).map_err(syntax("SortExpression")))
            .transpose()?;
        let offset = match p.opt_str("NextToken", 64)? {
            None => 0,
            Some(t) => t.parse::<usize>().map_err(|_| {
                CapiError::value(
                    "NextToken",
                    format!("{t:?} is not a token this search gave"),
                )
            })?,
        };
        Ok(Self {
            filter,
            sort,
            offset,
            limit,
        })
    }

    /// The page of `items` that match, in order, and the token of the next page.
    pub(crate) fn page<'a, T>(
        &self,
        items: &'a [T],
        subject: impl Fn(&'a T) -> Subject<'a>,
    ) -> (Vec<&'a T>, Option<String>) {
        let mut found: Vec<(&T, Subject<'_>)> = items
            .iter()
            .map(|s| (s, subject(s)))
            .filter(|(_, sub)| self.filter.as_ref().is_none_or(|f| f.matches(sub)))
            .collect();
        if let Some(sort) = &self.sort {
            found.sort_by(|a, b| sort.cmp(&a.1, &b.1));
        }
        let end = self.offset.saturating_add(self.limit);
        let next = (end < found.len()).then(|| end.to_string());
        let page = found
            .into_iter()
            .skip(self.offset)
            .take(self.limit)
            .map(|(s, _)| s)
            .collect();
        (page, next)
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
