//! The control plane's router (fixed paths, merged into the simulator by the caller) and a
//! standalone server for tests.

use std::net::SocketAddr;

use anyhow::Context as _;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::state::WehubState;
use super::store::{MAX_CALLBACK_BODY, MAX_UPLOAD_BODY};
use super::{callback, control, page, upload, ws};

/// Every route of the reference control plane:
/// - wire: `POST /wehub/callback`, `POST /wehub/upload`, `GET /wehub/ws` (WebSocket mode);
/// - test control: `/__cp/tasks`, `/__cp/requests`, `/__cp/task_results`, `/__cp/uploads`,
///   `/__cp/uploads/media/<file_index>`, `/__cp/qr_sessions`, `/__cp/qr_sessions/<id>/png`,
///   `/__cp/accounts`, `/__cp/mode`, `/__cp/reset`, `/__cp/ws`, `/__cp/ws/close`,
///   `/__cp/msg_times`, `/__cp/clock`, `/__cp/counts` (the last three for `wxagent bench`);
/// - for people: `GET /cp/`.
pub fn router(state: WehubState) -> Router {
    Router::new()
        .route(
            "/wehub/callback",
            post(callback::callback).layer(DefaultBodyLimit::max(MAX_CALLBACK_BODY)),
        )
        .route(
            "/wehub/upload",
            post(upload::upload).layer(DefaultBodyLimit::max(MAX_UPLOAD_BODY)),
        )
        .route("/wehub/ws", get(ws::upgrade))
        .route("/__cp/ws", get(control::websockets))
        .route("/__cp/ws/close", post(control::close_websockets))
        .route(
            "/__cp/tasks",
            post(control::queue_task).get(control::list_tasks),
        )
        .route("/__cp/requests", get(control::requests))
        .route("/__cp/task_results", get(control::task_results))
        .route("/__cp/uploads", get(control::uploads))
        .route("/__cp/uploads/media/{*file_index}", get(control::media))
        .route("/__cp/qr_sessions", get(control::qr_sessions))
        .route("/__cp/qr_sessions/{id}/png", get(control::qr_png))
        .route("/__cp/accounts", get(control::accounts))
        .route("/__cp/mode", get(control::get_mode).post(control::set_mode))
        .route("/__cp/reset", post(control::reset))
        .route("/__cp/msg_times", get(control::msg_times))
        .route("/__cp/clock", get(control::clock))
        .route("/__cp/counts", get(control::counts))
        .route("/cp", get(page::page))
        .route("/cp/", get(page::page))
        .with_state(state)
}

/// Serves only this router on `addr` until the returned token is cancelled; returns the bound
/// address (useful with port 0), the server task and the token.
pub async fn serve(
    addr: SocketAddr,
    state: WehubState,
) -> anyhow::Result<(SocketAddr, JoinHandle<()>, CancellationToken)> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the control-plane simulator to {addr}"))?;
    let bound = listener
        .local_addr()
        .context("reading the control-plane simulator's bound address")?;
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    let app = router(state);
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
        if let Err(error) = served {
            tracing::warn!(%error, "control-plane simulator stopped with an error");
        }
    });
    tracing::info!(%bound, "control-plane simulator listening");
    Ok((bound, task, shutdown))
}
