//! SearchGameServerSessions as a request gives it: filter, order and page.

use super::{self as search, Subject};
use crate::api::CapiError;
use crate::api::ErrorCode;
use crate::api::params::Params;

/// SearchGameServerSessions' parameters other than the fleet.
pub const SEARCH_PARAMS: &[&str] = &[
    "FleetId",
    "AliasId",
    "Limit",
    "NextToken",
    "FilterExpression",
    "SortExpression",
];

/// A search as asked: filter, order and page.
pub struct SearchRequest {
    filter: Option<search::Expr>,
    sort: Option<search::Sort>,
    offset: usize,
    limit: usize,
}

impl SearchRequest {
    /// Reads `Limit`, `NextToken`, `FilterExpression` and `SortExpression`.
    pub fn read(p: &Params) -> Result<Self, CapiError> {
        let limit = p.opt_int("Limit", 1, 100)?.unwrap_or(100) as usize;
        let syntax = |name: &'static str| {
            move |e: search::SyntaxError| {
                CapiError::new(ErrorCode::InvalidParameterValue, format!("`{name}` {e}"))
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
    pub fn page<'a, T>(
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
