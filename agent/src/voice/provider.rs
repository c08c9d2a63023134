//! One HTTP request to a speech or language provider, the way users expect
//! failures handled: a timeout, a refused connection or a 5xx answer is
//! retried once; every failed attempt is counted in
//! `mindbot_voice_errors_total{stage,provider}`; the error says which stage
//! and provider failed and never carries the API key.

use std::time::Duration;

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use tracing::warn;

use crate::config::Secret;

/// Where one stage sends its requests.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// `stt`, `llm` or `tts`.
    pub stage: &'static str,
    /// Provider (or TTS profile) name, a metrics label.
    pub provider: String,
    pub base_url: String,
    pub model: String,
    pub api_key: Secret,
    pub timeout: Duration,
}

/// Why a provider call failed.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("{stage} provider {provider}: no answer within {after:?}")]
    Timeout { stage: &'static str, provider: String, after: Duration },
    #[error("{stage} provider {provider} answered HTTP {status}: {body}")]
    Status { stage: &'static str, provider: String, status: u16, body: String },
    #[error("{stage} provider {provider}: {message}")]
    Transport { stage: &'static str, provider: String, message: String },
    #[error("{stage} provider {provider} sent an answer we cannot read: {message}")]
    Invalid { stage: &'static str, provider: String, message: String },
}

impl ProviderError {
    fn retryable(&self) -> bool {
        match self {
            ProviderError::Timeout { .. } | ProviderError::Transport { .. } => true,
            ProviderError::Status { status, .. } => *status >= 500,
            ProviderError::Invalid { .. } => false,
        }
    }
}

impl Endpoint {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url.trim_end_matches('/'))
    }

    pub fn invalid(&self, message: impl std::fmt::Display) -> ProviderError {
        self.count_error();
        ProviderError::Invalid { stage: self.stage, provider: self.provider.clone(), message: message.to_string() }
    }

    pub fn timed_out(&self) -> ProviderError {
        self.count_error();
        ProviderError::Timeout { stage: self.stage, provider: self.provider.clone(), after: self.timeout }
    }

    pub fn transport(&self, e: reqwest::Error) -> ProviderError {
        self.count_error();
        ProviderError::Transport { stage: self.stage, provider: self.provider.clone(), message: e.to_string() }
    }

    fn count_error(&self) {
        metrics::counter!("mindbot_voice_errors_total", "stage" => self.stage, "provider" => self.provider.clone())
            .increment(1);
    }

    /// POSTs `body` and returns the response once its headers are in, after
    /// at most one retry.
    pub async fn post(
        &self,
        client: &reqwest::Client,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> Result<reqwest::Response, ProviderError> {
        let request = || {
            let req = client.post(self.url(path)).header(CONTENT_TYPE, content_type).body(body.clone());
            match self.api_key.expose() {
                "" => req,
                key => req.header(AUTHORIZATION, format!("Bearer {key}")),
            }
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.send(request()).await {
                Err(e) if attempt == 1 && e.retryable() => {
                    warn!(stage = self.stage, provider = %self.provider, error = %e, "provider call failed; retrying once");
                }
                other => return other,
            }
        }
    }

    /// Sends one attempt, bounded by the provider's timeout.
    async fn send(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response, ProviderError> {
        let resp = match tokio::time::timeout(self.timeout, req.send()).await {
            Err(_) => return Err(self.timed_out()),
            Ok(Err(e)) if e.is_timeout() => return Err(self.timed_out()),
            Ok(Err(e)) => return Err(self.transport(e)),
            Ok(Ok(r)) => r,
        };
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let text = tokio::time::timeout(self.timeout, resp.text()).await.ok().and_then(Result::ok).unwrap_or_default();
        self.count_error();
        Err(ProviderError::Status {
            stage: self.stage,
            provider: self.provider.clone(),
            status: status.as_u16(),
            body: text.chars().take(200).collect(),
        })
    }

    /// The next piece of a streamed body, waiting at most the timeout; `None` at its end.
    pub async fn chunk(&self, resp: &mut reqwest::Response) -> Result<Option<Vec<u8>>, ProviderError> {
        match tokio::time::timeout(self.timeout, resp.chunk()).await {
            Err(_) => Err(self.timed_out()),
            Ok(Err(e)) => Err(self.transport(e)),
            Ok(Ok(c)) => Ok(c.map(|b| b.to_vec())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A loopback server answering each request with the next status (the last one repeats).
    async fn server(statuses: Vec<u16>) -> (String, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(AtomicUsize::new(0));
        let count = seen.clone();
        tokio::spawn(async move {
            loop {
                let (mut sock, _) = listener.accept().await.unwrap();
                let n = count.fetch_add(1, Ordering::SeqCst);
                let status = statuses[n.min(statuses.len() - 1)];
                let mut buf = vec![0; 8192];
                let _ = sock.read(&mut buf).await;
                let reply = format!("HTTP/1.1 {status} X\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
                let _ = sock.write_all(reply.as_bytes()).await;
            }
        });
        (format!("http://{addr}"), seen)
    }

    fn endpoint(base_url: String) -> Endpoint {
        Endpoint {
            stage: "tts",
            provider: "test".into(),
            base_url,
            model: "m".into(),
            api_key: Default::default(),
            timeout: Duration::from_secs(2),
        }
    }

    #[tokio::test]
    async fn a_5xx_is_retried_once_and_a_4xx_is_not() {
        let client = crate::voice::http_client().unwrap();
        let (url, seen) = server(vec![503, 200]).await;
        let resp = endpoint(url).post(&client, "/x", "text/plain", b"hi".to_vec()).await.unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        assert_eq!(seen.load(Ordering::SeqCst), 2);

        let (url, seen) = server(vec![500]).await;
        let err = endpoint(url).post(&client, "/x", "text/plain", Vec::new()).await.unwrap_err();
        assert!(matches!(err, ProviderError::Status { status: 500, .. }), "{err}");
        assert_eq!(seen.load(Ordering::SeqCst), 2, "one call and one retry");

        let (url, seen) = server(vec![401]).await;
        let err = endpoint(url).post(&client, "/x", "text/plain", Vec::new()).await.unwrap_err();
        assert!(err.to_string().contains("401"), "{err}");
        assert_eq!(seen.load(Ordering::SeqCst), 1, "a client error is not retried");
    }

    #[tokio::test]
    async fn a_silent_provider_times_out_and_is_retried() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(AtomicUsize::new(0));
        let count = seen.clone();
        let held = tokio::spawn(async move {
            let mut socks = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                socks.push(s); // never answers
            }
        });
        let mut ep = endpoint(format!("http://{addr}"));
        ep.timeout = Duration::from_millis(200);
        let err = ep.post(&crate::voice::http_client().unwrap(), "/x", "text/plain", Vec::new()).await.unwrap_err();
        assert!(matches!(err, ProviderError::Timeout { .. }), "{err}");
        assert_eq!(seen.load(Ordering::SeqCst), 2, "one call and one retry");
        held.abort();
    }

    #[tokio::test]
    async fn providers_are_reached_over_https_with_the_workers_tls() {
        use tokio_rustls::rustls::{self as tls, pki_types::PrivateKeyDer};
        let issued = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let key = PrivateKeyDer::Pkcs8(issued.signing_key.serialize_der().into());
        let config = tls::ServerConfig::builder_with_provider(Arc::new(tls::crypto::aws_lc_rs::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![issued.cert.der().clone()], key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (sock, _) = listener.accept().await.unwrap();
            let mut tls = acceptor.accept(sock).await.unwrap();
            let mut buf = vec![0; 8192];
            let _ = tls.read(&mut buf).await;
            let _ = tls.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\nsecure").await;
            let _ = tls.shutdown().await;
        });
        let roots = [issued.cert.der().to_vec()];
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(mindbot_transport::tls_client_config(&roots).unwrap())
            .build()
            .unwrap();
        let resp =
            endpoint(format!("https://localhost:{port}")).post(&client, "/x", "text/plain", Vec::new()).await.unwrap();
        assert_eq!(resp.text().await.unwrap(), "secure");
    }
}
