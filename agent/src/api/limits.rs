//! What a client may cost the API: a token bucket per client address
//! (`api.rate_limit_per_second`, `api.rate_limit_burst`; 429 `rate_limited`
//! with Retry-After), then at most `api.max_concurrent_requests` requests in
//! progress (the rest are shed at once: 503 `overloaded`), each given
//! `http.request_timeout_ms` (503 `timeout`). Answers are the API's JSON
//! errors. Webhooks skip the per-client rate (their senders are few and
//! sign every body) but not the load limits. The client is the connection's peer, or the last address of
//! X-Forwarded-For when `api.trust_x_forwarded_for` says a proxy sets it;
//! an IPv6 client is its /64 (one subscriber's usual allocation, so a host
//! cannot mint fresh buckets from its own prefix), and the table of buckets
//! is pruned every minute of clients whose bucket is full again, so many
//! addresses cannot grow it without bound.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Weak};
use std::time::Duration;

use axum::error_handling::HandleErrorLayer;
use axum::extract::ConnectInfo;
use axum::http::Request;
use axum::response::{IntoResponse, Response};
use axum::{BoxError, Router};
use governor::middleware::NoOpMiddleware;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower::ServiceBuilder;
use tower_governor::governor::{GovernorConfig, GovernorConfigBuilder};
use tower_governor::key_extractor::KeyExtractor;
use tower_governor::{GovernorError, GovernorLayer};

use super::error::ApiError;
use crate::config::ApiConfig;

/// Who a request counts against.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddress {
    pub trust_x_forwarded_for: bool,
}

impl KeyExtractor for ClientAddress {
    type Key = IpAddr;

    fn extract<T>(&self, req: &Request<T>) -> Result<IpAddr, GovernorError> {
        if self.trust_x_forwarded_for {
            // The proxy appends the address it saw: the last entry is the one
            // a client cannot choose.
            let forwarded = req
                .headers()
                .get_all("x-forwarded-for")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .last()
                .and_then(|a| a.trim().parse().ok());
            if let Some(ip) = forwarded {
                return Ok(client_key(ip));
            }
        }
        req.extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(peer)| client_key(peer.ip()))
            .ok_or(GovernorError::UnableToExtractKey)
    }
}

/// The bucket an address counts against: an IPv4 address (IPv4-mapped IPv6
/// included) as it is, an IPv6 address by its /64.
fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        },
    }
}

/// How often clients whose bucket has refilled are forgotten.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// Prunes `rate`'s table of clients every [`PRUNE_EVERY`] while the limits
/// live (the task ends once they are dropped).
fn prune(rate: Weak<GovernorConfig<ClientAddress, NoOpMiddleware>>) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
    runtime.spawn(async move {
        let mut every = tokio::time::interval(PRUNE_EVERY);
        every.tick().await;
        loop {
            every.tick().await;
            let Some(rate) = rate.upgrade() else { return };
            rate.limiter().retain_recent();
        }
    });
}

/// The limits of one API, shared by every route they guard.
pub struct Limits {
    rate: Arc<GovernorConfig<ClientAddress, NoOpMiddleware>>,
    concurrency: GlobalConcurrencyLimitLayer,
    timeout: Duration,
}

impl Limits {
    /// From the `[api]` settings and `http.request_timeout_ms`.
    pub fn new(settings: &ApiConfig, request_timeout: Duration) -> anyhow::Result<Limits> {
        let rate = GovernorConfigBuilder::default()
            .period(Duration::from_nanos(1_000_000_000 / u64::from(settings.rate_limit_per_second.max(1))))
            .burst_size(settings.rate_limit_burst)
            .key_extractor(ClientAddress { trust_x_forwarded_for: settings.trust_x_forwarded_for })
            .finish()
            .ok_or_else(|| anyhow::anyhow!("config key api.rate_limit_burst must be at least 1"))?;
        let rate = Arc::new(rate);
        prune(Arc::downgrade(&rate));
        Ok(Limits {
            rate,
            concurrency: GlobalConcurrencyLimitLayer::new(settings.max_concurrent_requests as usize),
            timeout: request_timeout,
        })
    }

    /// `router` behind every limit, outermost first: the client's rate, load
    /// shedding over the concurrency limit, the timeout.
    pub fn guard<S: Clone + Send + Sync + 'static>(&self, router: Router<S>) -> Router<S> {
        self.guard_load(router).layer(GovernorLayer::new(self.rate.clone()).error_handler(rate_limited))
    }

    /// `router` behind the load limits only (webhooks: signed by the sender,
    /// who may send more than one client's rate from one address).
    pub fn guard_load<S: Clone + Send + Sync + 'static>(&self, router: Router<S>) -> Router<S> {
        router.layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(overloaded))
                .load_shed()
                .layer(self.concurrency.clone())
                .timeout(self.timeout),
        )
    }
}

fn rate_limited(e: GovernorError) -> Response {
    match e {
        GovernorError::TooManyRequests { wait_time, .. } => ApiError::TooManyRequests {
            code: "rate_limited",
            message: "too many requests from this client; slow down".into(),
            retry_after: Some(wait_time.max(1)),
        }
        .into_response(),
        other => ApiError::Internal(anyhow::anyhow!("rate limit: {other}")).into_response(),
    }
}

async fn overloaded(e: BoxError) -> ApiError {
    if e.is::<tower::load_shed::error::Overloaded>() {
        ApiError::Unavailable { code: "overloaded", message: "the server is busy; try again shortly".into() }
    } else if e.is::<tower::timeout::error::Elapsed>() {
        ApiError::Unavailable { code: "timeout", message: "the request took too long".into() }
    } else {
        ApiError::Internal(anyhow::anyhow!("request failed: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv6_client_is_its_64_and_an_ipv4_client_its_address() {
        let key = |a: &str| client_key(a.parse().unwrap()).to_string();
        assert_eq!(key("203.0.113.7"), "203.0.113.7");
        assert_eq!(key("::ffff:203.0.113.7"), "203.0.113.7");
        assert_eq!(key("2001:db8:1:2:aaaa:bbbb:cccc:dddd"), "2001:db8:1:2::");
        assert_eq!(key("2001:db8:1:2::1"), key("2001:db8:1:2:ffff::9"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
    }
}
