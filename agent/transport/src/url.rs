//! One reading of the LiveKit server's address, whichever form config gives
//! (`ws://`, `wss://`, `http://`, `https://`, with or without a path prefix):
//! the WebSocket base the signaling and agent sockets extend, and the HTTP
//! base the server API (Twirp) is called on.

/// `scheme://host[:port][/prefix]` with the scheme made `ws` or `wss`, the
/// query, fragment and trailing slashes dropped. The error says what is wrong.
pub fn websocket_base(url: &str) -> Result<String, String> {
    let (scheme, rest) = url.split_once("://").ok_or("no scheme (ws://, wss://)")?;
    let scheme = match scheme.to_ascii_lowercase().as_str() {
        "ws" | "http" => "ws",
        "wss" | "https" => "wss",
        other => return Err(format!("unsupported scheme {other:?}")),
    };
    let rest = rest.split(['?', '#']).next().unwrap_or_default().trim_end_matches('/');
    if rest.is_empty() || rest.starts_with('/') {
        return Err("no host".into());
    }
    Ok(format!("{scheme}://{rest}"))
}

/// The same address for the server API: `http` for `ws`, `https` for `wss`.
/// An address [`websocket_base`] refuses is returned as given, so the API
/// client reports it on first use.
pub fn http_base(url: &str) -> String {
    match websocket_base(url) {
        Ok(base) => match base.strip_prefix("wss://") {
            Some(rest) => format!("https://{rest}"),
            None => format!("http://{}", base.trim_start_matches("ws://")),
        },
        Err(_) => url.to_string(),
    }
}

/// The host of a server address (`ws://host:port/...`), without brackets
/// or port; `None` when the address has no scheme or host.
pub fn host(url: &str) -> Option<String> {
    let base = websocket_base(url).ok()?;
    let authority = base.split_once("://")?.1.split('/').next()?;
    let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split_once(']')?.0,
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

/// Whether the address names this machine: `localhost`, 127.0.0.0/8 or `::1`.
/// Anything else (another name, another address, no host) is not loopback.
pub fn host_is_loopback(url: &str) -> bool {
    match host(url) {
        Some(h) if h == "localhost" || h.ends_with(".localhost") => true,
        Some(h) => h.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback()),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_addresses_of_this_machine_are_loopback() {
        for url in
            ["ws://127.0.0.1:7880", "http://localhost", "wss://[::1]:7881/x", "ws://127.9.9.9", "ws://u:p@127.0.0.1"]
        {
            assert!(host_is_loopback(url), "{url}");
        }
        for url in
            ["wss://lk.example.com", "ws://10.0.0.5:7880", "ws://[2001:db8::1]:7880", "ws://localhost.evil.com", "7880"]
        {
            assert!(!host_is_loopback(url), "{url}");
        }
        assert_eq!(host("wss://LK.example.com:443/base").as_deref(), Some("lk.example.com"));
    }

    #[test]
    fn every_form_maps_to_one_websocket_and_one_http_base() {
        assert_eq!(websocket_base("http://127.0.0.1:7880/").unwrap(), "ws://127.0.0.1:7880");
        assert_eq!(websocket_base("WSS://lk.example.com/base?x=1#f").unwrap(), "wss://lk.example.com/base");
        assert_eq!(http_base("ws://127.0.0.1:7880"), "http://127.0.0.1:7880");
        assert_eq!(http_base("wss://lk.example.com/base/"), "https://lk.example.com/base");
        assert_eq!(http_base("https://lk.example.com"), "https://lk.example.com");
    }

    #[test]
    fn addresses_without_scheme_or_host_are_refused_by_name() {
        assert_eq!(websocket_base("127.0.0.1:7880").unwrap_err(), "no scheme (ws://, wss://)");
        assert_eq!(websocket_base("ftp://host").unwrap_err(), "unsupported scheme \"ftp\"");
        assert_eq!(websocket_base("ws:///rtc").unwrap_err(), "no host");
    }
}
