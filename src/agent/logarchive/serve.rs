//! `GET /game-logs/<archive>?Expires=…&Signature=…`: the archive, to the holder of a valid
//! link. Served on the control API's listener, beside the API and outside its door (a link is
//! its own authority: no TC3 signature, no JSON); refusals are plain text with the reason.

use std::time::SystemTime;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::io::AsyncReadExt;

use super::{LogLinks, is_archive_name};

/// The routes serving archives to link holders.
pub fn router(links: LogLinks) -> Router {
    Router::new()
        .route("/game-logs/{name}", get(download))
        .with_state(links)
}

fn refuse(status: StatusCode, text: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{text}\n"),
    )
        .into_response()
}

async fn download(
    State(links): State<LogLinks>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    if !is_archive_name(&name) {
        return refuse(
            StatusCode::NOT_FOUND,
            format!("{name:?} is not a log archive's name"),
        );
    }
    if let Err(e) = links.check(&name, query.as_deref(), SystemTime::now()) {
        return refuse(StatusCode::FORBIDDEN, e.to_string());
    }
    let opened = tokio::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(links.path(&name))
        .await;
    let file = match opened {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return refuse(
                StatusCode::NOT_FOUND,
                format!(
                    "the log archive {name} is no longer kept (log-archives.max-total-bytes or max-age removed it)"
                ),
            );
        }
        Err(e) => {
            return refuse(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the log archive {name} cannot be read: {e}"),
            );
        }
    };
    let len = match file.metadata().await {
        Ok(m) => m.len(),
        Err(e) => {
            return refuse(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the log archive {name} cannot be read: {e}"),
            );
        }
    };
    let chunks = futures_util::stream::unfold(Some(file), |file| async move {
        let mut file = file?;
        let mut buf = vec![0u8; 64 << 10];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(Bytes::from(buf)), Some(file)))
            }
            Err(e) => Some((Err(e), None)),
        }
    });
    (
        [
            (header::CONTENT_TYPE, "application/zip".to_string()),
            (header::CONTENT_LENGTH, len.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
            (header::CACHE_CONTROL, "private, no-store".to_string()),
        ],
        Body::from_stream(chunks),
    )
        .into_response()
}
