//! The HTTP listener: `/health` for load balancers and tests.

use axum::Router;
use axum::routing::get;
use tokio::net::TcpListener;

pub async fn serve(listener: TcpListener) -> std::io::Result<()> {
    let app = Router::new().route("/health", get(|| async { "ok\n" }));
    axum::serve(listener, app).await
}
