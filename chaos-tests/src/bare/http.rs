//! The bare axum server.

use std::net::TcpListener;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;

use super::Bodies;

/// Serves `GET` and `POST /v1/{*path}` with fixed KV v2 bodies until the
/// runtime stops.
pub async fn serve(listener: TcpListener, bodies: Bodies) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("bare http server: cannot adopt listener: {e}");
            return;
        }
    };
    let router = Router::new()
        .route("/v1/{*path}", get(read).post(write))
        .with_state(bodies);
    if let Err(e) = axum::serve(listener, router).await {
        eprintln!("bare http server failed: {e}");
    }
}

async fn read(State(bodies): State<Bodies>) -> impl IntoResponse {
    ([(CONTENT_TYPE, "application/json")], bodies.http_read)
}

/// Takes the request body so it is read off the connection, as a real
/// handler must, but does not parse it.
async fn write(State(bodies): State<Bodies>, _body: Bytes) -> impl IntoResponse {
    ([(CONTENT_TYPE, "application/json")], bodies.http_write)
}
