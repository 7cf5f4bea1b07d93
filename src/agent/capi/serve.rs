//! The agent's control API on its listener: the shared door ([`crate::api::server`]) in front of
//! the fleet, with the game log links served beside it.

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::Capi;
use crate::api::server::{ConnectionBounds, Handler, ServeError, ServeOptions, serve_routes};
use serde_json::Value;

impl Handler for Capi {
    async fn answer(&self, action: Option<&str>, body: &[u8]) -> Value {
        self.answer_at(action, body, &self.own_host()).await
    }

    async fn answer_at(&self, action: Option<&str>, body: &[u8], host: &str) -> Value {
        crate::api::envelope(self.dispatch(action, body, host).await)
    }
}

/// Serves the agent's control API on an already-bound listener until `shutdown`, as
/// agent.yaml configures it (`capi-keys-file`, `capi-allowed-hosts`, `connections`).
pub async fn serve(
    listener: TcpListener,
    capi: Capi,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    let options = ServeOptions {
        name: "capi",
        keys_file: capi.cfg.capi_keys_file.clone(),
        allowed_hosts: capi.cfg.capi_allowed_hosts.clone(),
        limits: ConnectionBounds {
            max_connections: capi.cfg.connections.capi_max,
            header_timeout: capi.cfg.connections.header_timeout.get(),
            idle_timeout: capi.cfg.connections.idle_timeout.get(),
        },
    };
    // Log links are their own authority: served beside the API, outside its door.
    let links = crate::agent::logarchive::router(capi.logs.clone());
    serve_routes(listener, capi, options, links, shutdown).await
}
