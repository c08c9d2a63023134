//! The web app's static files (`web/`, built by Vite) at `/` on
//! `http.address`, beside `/v1` on the same origin, so the page needs no
//! CORS. Any path that is not a file and does not look like one is answered
//! with `index.html` (the app routes on the client). Vite names every built
//! asset under `assets/` by its content hash, so those are cached for a year;
//! everything else (`index.html`) is revalidated on each load.
//!
//! Every answer carries the headers a page wants: a Content-Security-Policy
//! allowing this origin and the LiveKit server the app connects to (nothing
//! else: no CDN, the build bundles everything), `nosniff`, no framing, no
//! referrer. This module knows nothing of the API; it only serves files.

use std::path::{Path, PathBuf};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tower::ServiceExt;
use tower_http::services::{ServeDir, ServeFile};

/// Built assets have content-hashed names: they never change under a name.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// `index.html` and other unhashed files: always ask whether they changed.
const REVALIDATE: &str = "no-cache";

#[derive(Clone)]
struct Site {
    root: PathBuf,
    csp: HeaderValue,
}

/// The router serving `root`, or `None` (logged) when `root` is empty or holds
/// no `index.html`. `livekit_url` is the LiveKit URL the app is told to join
/// (the only other origin the page may connect to).
pub fn router(root: &str, livekit_url: &str) -> Option<Router> {
    if root.is_empty() {
        tracing::info!("http.web_root is empty: the web app is not served");
        return None;
    }
    let root = PathBuf::from(root);
    if !root.join("index.html").is_file() {
        tracing::warn!(web_root = %root.display(),
            "http.web_root has no index.html (build the app: `npm run build` in web/); the web app is not served");
        return None;
    }
    let csp = HeaderValue::from_str(&content_security_policy(livekit_url)).ok()?;
    tracing::info!(web_root = %root.display(), "serving the web app at /");
    Some(Router::new().fallback(serve).with_state(Site { root, csp }))
}

/// The page may load its own files and talk to this origin and to LiveKit
/// (signaling over WebSocket, and the HTTP validation the client SDK does
/// when a join fails).
fn content_security_policy(livekit_url: &str) -> String {
    let ws = origin_of(livekit_url);
    let http = ws.replacen("wss://", "https://", 1).replacen("ws://", "http://", 1);
    format!(
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; \
         media-src 'self' blob: mediastream:; connect-src 'self' {ws} {http}; worker-src 'self' blob:; \
         object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )
}

/// `scheme://host[:port]` of a LiveKit URL, http(s) mapped to ws(s).
fn origin_of(url: &str) -> String {
    let url = url.replacen("https://", "wss://", 1).replacen("http://", "ws://", 1);
    match url.split_once("://") {
        Some((scheme, rest)) => format!("{scheme}://{}", rest.split(['/', '?', '#']).next().unwrap_or(rest)),
        None => url,
    }
}

async fn serve(State(site): State<Site>, request: Request) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let mut response = match ServeDir::new(&site.root).oneshot(request).await {
        Ok(r) => r.map(Body::new),
        Err(never) => match never {},
    };
    let is_read = method == Method::GET || method == Method::HEAD;
    if response.status() == StatusCode::NOT_FOUND && is_read && !looks_like_a_file(&path) {
        let index = Request::builder().method(method).uri("/").body(Body::empty()).expect("a static request");
        response = match ServeFile::new(site.root.join("index.html")).oneshot(index).await {
            Ok(r) => r.map(Body::new),
            Err(never) => match never {},
        };
    } else if response.status() == StatusCode::NOT_FOUND {
        response = (StatusCode::NOT_FOUND, "not found\n").into_response();
    }
    let cache = if path.starts_with("/assets/") && response.status().is_success() { IMMUTABLE } else { REVALIDATE };
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    headers.insert(header::CONTENT_SECURITY_POLICY, site.csp.clone());
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response
}

/// `/assets/x.js`: a missing file stays a 404 rather than the page.
fn looks_like_a_file(path: &str) -> bool {
    Path::new(path).extension().is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_allows_the_livekit_origin_in_both_schemes() {
        let csp = content_security_policy("ws://127.0.0.1:7880/some/path");
        assert!(csp.contains("connect-src 'self' ws://127.0.0.1:7880 http://127.0.0.1:7880;"), "{csp}");
        let csp = content_security_policy("https://lk.example.com");
        assert!(csp.contains("connect-src 'self' wss://lk.example.com https://lk.example.com;"), "{csp}");
    }

    #[test]
    fn only_paths_with_an_extension_look_like_files() {
        assert!(looks_like_a_file("/assets/index-abc.js"));
        assert!(!looks_like_a_file("/history"));
        assert!(!looks_like_a_file("/"));
    }
}
