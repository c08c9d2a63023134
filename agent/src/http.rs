//! The operator's HTTP endpoints: `/metrics` (Prometheus text format),
//! `/healthz` (the process is alive) and `/readyz` (PostgreSQL answers and
//! the worker is registered with LiveKit). Nothing here takes user input
//! beyond the path; the public API (`/v1`, the `api` module) is merged into
//! the same server when enabled.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

/// What the endpoints read.
#[derive(Clone)]
pub struct Health {
    pub pool: PgPool,
    pub registered: Arc<AtomicBool>,
    /// Whether readiness needs the LiveKit registration (false when only the API runs).
    pub needs_worker: bool,
    pub metrics: PrometheusHandle,
}

/// Serves until `stop` is cancelled; returns the bound address at once.
pub async fn serve(address: &str, health: Health, api: Option<Router>, stop: CancellationToken) -> Result<SocketAddr> {
    let listener =
        tokio::net::TcpListener::bind(address).await.with_context(|| format!("binding the HTTP address {address}"))?;
    let bound = listener.local_addr()?;
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(health);
    let app = match api {
        Some(api) => app.merge(api),
        None => app,
    };
    tokio::spawn(async move {
        let served = axum::serve(listener, app).with_graceful_shutdown(async move { stop.cancelled().await });
        if let Err(e) = served.await {
            tracing::error!(error = %e, "HTTP server stopped");
        }
    });
    Ok(bound)
}

async fn metrics(State(h): State<Health>) -> String {
    h.metrics.render()
}

async fn ready(State(h): State<Health>) -> (StatusCode, String) {
    let db = tokio::time::timeout(Duration::from_secs(2), sqlx::query("SELECT 1").execute(&h.pool)).await;
    let db_ok = matches!(db, Ok(Ok(_)));
    let lk_ok = !h.needs_worker || h.registered.load(Ordering::Relaxed);
    let body = format!(
        "database {}\nlivekit {}\n",
        if db_ok { "ok" } else { "unreachable" },
        if !h.needs_worker {
            "not needed"
        } else if lk_ok {
            "registered"
        } else {
            "not registered"
        }
    );
    (if db_ok && lk_ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }, body)
}
