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
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = self.post_once(client, path, content_type, body.clone()).await;
            match result {
                Err(e) if attempt == 1 && e.retryable() => {
                    warn!(stage = self.stage, provider = %self.provider, error = %e, "provider call failed; retrying once");
                }
                other => return other,
            }
        }
    }

    async fn post_once(
        &self,
        client: &reqwest::Client,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> Result<reqwest::Response, ProviderError> {
        let mut req = client.post(self.url(path)).header(CONTENT_TYPE, content_type).body(body);
        if !self.api_key.expose().is_empty() {
            req = req.header(AUTHORIZATION, format!("Bearer {}", self.api_key.expose()));
        }
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
