//! The PostgreSQL wire protocol front end (pgwire): listener, authentication, the query
//! handlers that drive engine sessions, COPY, and SQLSTATE mapping.

mod auth;
mod copy_text;
mod encode;
mod handler;
pub(crate) mod sqlstate;
mod text;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tributary_engine::Engine;

pub(crate) use auth::AuthConfig;

/// Accepts connections until the process ends. Each connection gets its own handlers
/// (its own engine session); a connection's failure never affects the others.
pub(crate) async fn serve(
    listener: TcpListener,
    engine: Engine,
    auth: Arc<AuthConfig>,
    max_connections: usize,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(max_connections));
    loop {
        let (socket, peer) = listener.accept().await?;
        let _ = socket.set_nodelay(true);
        let engine = engine.clone();
        let auth = Arc::clone(&auth);
        let slots = Arc::clone(&slots);
        tokio::spawn(async move {
            let _active = crate::metrics::get().connection_opened();
            let permit = Arc::clone(&slots).try_acquire_owned().ok();
            let full = permit.is_none();
            let factory = handler::ConnectionHandlers::new(engine, auth, full);
            if let Err(e) = pgwire::tokio::process_socket(socket, None, factory).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
}

/// Whether an address is loopback (trust authentication is allowed only there).
pub(crate) fn is_loopback(addr: &SocketAddr) -> bool {
    addr.ip().is_loopback()
}
