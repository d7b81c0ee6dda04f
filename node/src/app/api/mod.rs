//! The control API (axum, HTTP/1.1, JSON): announce and inspect tasks, complete
//! api-mode parts, list peers and groups, follow events (Server-Sent Events) and read
//! metrics (Prometheus text). Loopback by default; with a token, every request must
//! carry `Authorization: Bearer <token>`. The endpoints are documented in README.md
//! ("The control API").

mod error;
mod routes;

use std::sync::Arc;

use axum::{
    Router,
    extract::{Request, State},
    http::header,
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
};

pub use error::{ApiError, JsonBody};

use crate::{
    Handle,
    app::{executor::ApiExecutor, tracker::TaskTracker},
};

/// What every handler needs.
#[derive(Clone)]
pub struct ApiState {
    /// The node.
    pub handle: Handle,
    /// Task records and the event stream.
    pub tracker: Arc<TaskTracker>,
    /// Parts waiting for api-mode programs.
    pub executor: ApiExecutor,
    /// The bearer token, if one is required.
    pub token: Option<Arc<str>>,
}

/// The control API's routes.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/v1/node", get(routes::node))
        .route("/v1/tasks", post(routes::announce).get(routes::list_tasks))
        .route("/v1/tasks/{id}", get(routes::task))
        .route("/v1/tasks/{id}/claim", post(routes::claim))
        .route("/v1/tasks/{id}/progress", post(routes::progress))
        .route("/v1/tasks/{id}/complete", post(routes::complete))
        .route("/v1/assignments", get(routes::assignments))
        .route("/v1/peers", get(routes::peers))
        .route("/v1/groups", get(routes::groups))
        .route("/v1/events", get(routes::events))
        .route("/metrics", get(routes::metrics))
        .fallback(routes::no_route)
        .method_not_allowed_fallback(routes::wrong_method)
        .layer(middleware::from_fn_with_state(state.clone(), authorise))
        .with_state(state)
}

/// The metrics endpoint alone (`GET /metrics`), for a separate address.
pub fn metrics_router(handle: Handle) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(|State(h): State<Handle>| async move { routes::metrics_text(&h) }),
        )
        .fallback(routes::no_route)
        .with_state(handle)
}

/// Compares without stopping at the first difference.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn authorise(State(state): State<ApiState>, req: Request, next: Next) -> Response {
    if let Some(token) = &state.token {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !given.is_some_and(|g| same(g.as_bytes(), token.as_bytes())) {
            let mut resp = ApiError::new(
                axum::http::StatusCode::UNAUTHORIZED,
                "unauthorised",
                "this API requires `Authorization: Bearer <token>`",
            )
            .into_response();
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
            return resp;
        }
    }
    next.run(req).await
}
