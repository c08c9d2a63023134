//! The operator's HTTP endpoints: `/metrics` (Prometheus text format),
//! `/healthz` (the process is alive) and `/readyz` (PostgreSQL answers and
//! the worker is registered with LiveKit). Nothing here takes user input
//! beyond the path; the public API (`/v1`, the `api` module) is merged into
//! the same server when enabled and brings its own limits, and the web app
//! ([`web`]: static files at `/`) answers every other path when configured.
//!
//! Every listener runs [`server::run`] (connection limit, header read
//! timeout); every request has a body read timeout, and the operator
//! endpoints a request timeout. `/metrics` is on its own address
//! (`http.metrics_address`) and/or behind a bearer token
//! (`http.metrics_token`) when configured; health and readiness stay open.

pub mod server;
pub mod web;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use sqlx::PgPool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tower::limit::ConcurrencyLimitLayer;
use tower_http::timeout::{RequestBodyTimeoutLayer, TimeoutLayer};

use crate::config::{HttpConfig, Secret};

/// What the endpoints read.
#[derive(Clone)]
pub struct Health {
    pub pool: PgPool,
    pub registered: Arc<AtomicBool>,
    /// Whether readiness needs the LiveKit registration (false when only the API runs).
    pub needs_worker: bool,
    pub metrics: PrometheusHandle,
}

/// The running server: its bound addresses, and how to stop it.
pub struct Serving {
    pub address: SocketAddr,
    /// Where `/metrics` is served when it has an address of its own.
    pub metrics_address: Option<SocketAddr>,
    stop: CancellationToken,
    listeners: Vec<JoinHandle<()>>,
}

impl Serving {
    /// Stops accepting, lets open requests finish (a few seconds at most) and returns.
    pub async fn shutdown(self) {
        self.stop.cancel();
        for listener in self.listeners {
            if let Err(e) = listener.await {
                tracing::error!(error = %e, "an HTTP listener task failed");
            }
        }
    }
}

/// Binds `http.address` (and `http.metrics_address` when set) and serves
/// until [`Serving::shutdown`]; returns once every listener is bound. `api`
/// is `/v1`, `web` the web app's files (every path nothing else serves).
pub async fn serve(config: &HttpConfig, health: Health, api: Option<Router>, web: Option<Router>) -> Result<Serving> {
    let limits = server::Limits {
        max_connections: config.max_connections as usize,
        header_read_timeout: config.header_read_timeout(),
    };
    let own_metrics_address = !config.metrics_address.is_empty();
    let token = MetricsToken(Arc::new(config.metrics_token.clone()));
    let metrics_route = Router::new().route("/metrics", get(metrics)).with_state((health.clone(), token));
    let mut operator = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        // One readiness query at a time: probes cannot take the worker's pool.
        .route("/readyz", get(ready).layer(ConcurrencyLimitLayer::new(1)))
        .with_state(health);
    if !own_metrics_address {
        operator = operator.merge(metrics_route.clone());
    }
    let operator =
        operator.layer(TimeoutLayer::with_status_code(StatusCode::SERVICE_UNAVAILABLE, config.request_timeout()));
    let app = match api {
        Some(api) => operator.merge(api),
        None => operator,
    };
    let app = match web {
        Some(web) => app.merge(web),
        None => app,
    }
    .layer(RequestBodyTimeoutLayer::new(config.body_read_timeout()));

    let stop = CancellationToken::new();
    let (address, main) = listen(&config.address, "http.address", app, limits, &stop).await?;
    let mut listeners = vec![main];
    let mut metrics_address = None;
    if own_metrics_address {
        let app = metrics_route
            .route("/healthz", get(|| async { "ok\n" }))
            .layer(TimeoutLayer::with_status_code(StatusCode::SERVICE_UNAVAILABLE, config.request_timeout()));
        let (bound, task) = listen(&config.metrics_address, "http.metrics_address", app, limits, &stop).await?;
        metrics_address = Some(bound);
        listeners.push(task);
    }
    Ok(Serving { address, metrics_address, stop, listeners })
}

async fn listen(
    address: &str,
    key: &str,
    app: Router,
    limits: server::Limits,
    stop: &CancellationToken,
) -> Result<(SocketAddr, JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(address).await.with_context(|| format!("binding {key} {address}"))?;
    let bound = listener.local_addr()?;
    Ok((bound, tokio::spawn(server::run(listener, app, limits, stop.clone()))))
}

/// The token `/metrics` requires (empty: none).
#[derive(Clone)]
struct MetricsToken(Arc<Secret>);

impl MetricsToken {
    /// Whether the request may read the metrics; the comparison takes the same
    /// time wherever the first wrong byte is.
    fn admits(&self, headers: &HeaderMap) -> bool {
        let expected = self.0.expose();
        if expected.is_empty() {
            return true;
        }
        let offered = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .unwrap_or("");
        aws_lc_rs::constant_time::verify_slices_are_equal(offered.as_bytes(), expected.as_bytes()).is_ok()
    }
}

async fn metrics(State((h, token)): State<(Health, MetricsToken)>, headers: HeaderMap) -> Response {
    if !token.admits(&headers) {
        let mut refused = (StatusCode::UNAUTHORIZED, "a valid bearer token is required for /metrics\n").into_response();
        refused.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
        return refused;
    }
    h.metrics.render().into_response()
}

async fn ready(State(h): State<Health>) -> (StatusCode, String) {
    // A ping that reads no table: nothing for the compile-time check to check.
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
