//! Links to the game log archives ([`crate::agent::logarchive`]): GetGameServerSessionLogUrl,
//! GetGameServerInstanceLogUrl and DescribeFleetEvents' `PreSignedLogUrl`. Each link points
//! at the listener the request came to (or `log-archives.url-base`) and expires after
//! `log-archives.url-expiry`.

use crate::api::ErrorCode;
use std::time::SystemTime;

use serde_json::{Map, Value, json};

use super::{Capi, CapiError, unexpected};
use crate::agent::event::Event;
use crate::agent::fleet::{Control, ControlReply, SessionQuery};
use crate::api::params::Params;

/// GetGameServerInstanceLogUrl's page size when `Size` is not given, and its largest.
const DEFAULT_PAGE: i64 = 20;
const MAX_PAGE: i64 = 100;

impl Capi {
    /// Each event's `PreSignedLogUrl`: for the end of a process, the link to that launch's
    /// archive once it is written; empty otherwise.
    pub(super) fn event_log_urls(&self, host: &str) -> impl Fn(&Event) -> String + '_ {
        let index = self.logs.index();
        let base = self.logs.base(host);
        let now = SystemTime::now();
        move |e| match (&e.exit, &e.process_id) {
            (Some(_), Some(id)) => index
                .by_process(id)
                .map(|a| self.logs.link(a, &base, now))
                .unwrap_or_default(),
            _ => String::new(),
        }
    }

    /// GetGameServerSessionLogUrl: the link to the archive of the process that hosted the
    /// session; `null` (as the SDK's model allows) while that process runs, or once its
    /// archive was removed by the bounds; `ResourceNotFound` for a session neither the
    /// fleet nor any archive knows.
    pub(super) async fn session_log_url(
        &self,
        map: Map<String, Value>,
        host: &str,
    ) -> Result<Value, CapiError> {
        let p = Params::new(map, &["GameServerSessionId"])?;
        let gss_id = p.str("GameServerSessionId", 256)?;
        if let Some(a) = self.logs.index().by_session(&gss_id) {
            let url = self.logs.link(a, &self.logs.base(host), SystemTime::now());
            return Ok(json!({ "PreSignedUrl": url }));
        }
        let q = SessionQuery {
            gss_id: Some(gss_id),
            limit: 1,
            ..Default::default()
        };
        match self.fleet.control(Control::DescribeSessions(q)).await? {
            ControlReply::Sessions(..) => Ok(json!({ "PreSignedUrl": null })),
            other => Err(unexpected(&other)),
        }
    }

    /// GetGameServerInstanceLogUrl: links to every archive of this host, newest first,
    /// `Offset` and `Size` (1–100, default 20) paging them.
    pub(super) async fn instance_log_url(
        &self,
        map: Map<String, Value>,
        host: &str,
    ) -> Result<Value, CapiError> {
        let p = Params::new(
            map,
            &["FleetId", "InstanceId", "ServerIp", "Offset", "Size"],
        )?;
        self.check_fleet(&p, true).await?;
        if let Some(instance) = p.opt_str("InstanceId", 128)?
            && instance != self.cfg.instance_id
        {
            return Err(CapiError::new(
                ErrorCode::ResourceNotFound,
                format!(
                    "instance {instance} is not this host (it is {})",
                    self.cfg.instance_id
                ),
            ));
        }
        if let Some(ip) = p.opt_str("ServerIp", 64)?
            && ip != self.cfg.client_ip()
        {
            return Err(CapiError::new(
                ErrorCode::ResourceNotFound,
                format!(
                    "no instance of this host has the IP {ip} (it has {})",
                    self.cfg.client_ip()
                ),
            ));
        }
        let offset = p.opt_int("Offset", 0, i64::MAX)?.unwrap_or(0) as usize;
        let size = p.opt_int("Size", 1, MAX_PAGE)?.unwrap_or(DEFAULT_PAGE) as usize;
        let index = self.logs.index();
        let base = self.logs.base(host);
        let now = SystemTime::now();
        let urls: Vec<String> = index
            .newest_first()
            .skip(offset)
            .take(size)
            .map(|a| self.logs.link(a, &base, now))
            .collect();
        Ok(json!({
            "PresignedUrls": urls,
            "Total": index.len(),
            "HasNext": offset.saturating_add(size) < index.len(),
        }))
    }
}
