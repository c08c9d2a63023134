//! A private copy of the test speech services (`tests/speech/server.py`)
//! for a test that must not share the one `scripts/speech-services.sh`
//! starts, with the Python of `scripts/python-env.sh`.

use crate::root;

/// Starts the speech services on `port` (a free one if `None`) and waits
/// until they answer: the process (killed on drop) and their base URL.
pub async fn private_speech_services(port: Option<u16>) -> (tokio::process::Child, String) {
    let port = port.unwrap_or_else(|| std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port());
    assert!(
        std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(),
        "port {port} is taken (the same test running elsewhere?): try again in a minute"
    );
    let child = tokio::process::Command::new(root().join(".cache/venv/bin/python"))
        .arg(root().join("tests/speech/server.py"))
        .args(["--port", &port.to_string()])
        .kill_on_drop(true)
        .spawn()
        .expect("starting tests/speech/server.py");
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return (child, format!("http://127.0.0.1:{port}"));
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("the private speech services did not start on port {port}");
}
