//! The HTTP listener: `/health` for load balancers and tests, `/metrics` for Prometheus, and
//! the documentation site (`/`, see `docs`).

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;
use tributary_engine::Engine;

pub(crate) async fn serve(listener: TcpListener, engine: Engine) -> std::io::Result<()> {
    let app = Router::new()
        .route("/health", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .merge(crate::docs::routes())
        .with_state(engine);
    axum::serve(listener, app).await
}

/// Prometheus text exposition format 0.0.4.
async fn metrics(State(engine): State<Engine>) -> impl IntoResponse {
    let body = crate::metrics::get().render(&engine).await;
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)],
        body,
    )
        .into_response()
}
