//! The service in the test process, not as a child process: the worker
//! supervisor (`supervisor::run`) or an API node (`supervisor::serve_api`)
//! on a tokio runtime of its own, as the binary runs them but without its
//! signal handlers. Each instance has its own metrics recorder and log sink,
//! made the default of every thread of its runtime, so its `/metrics` shows
//! only its own sessions and its log lines carry its name. Only the tests
//! about signals and the process itself (SIGTERM drains, SIGKILL orphans, the
//! log's colour on a pipe, the command line) start `mindbot-agent` as a
//! process.

use std::io::Write;
use std::time::Duration;

use mindbot_agent::config::{Config, DEFAULT_TOML};
use mindbot_agent::telemetry::Metrics;
use tokio::sync::{mpsc, oneshot};

/// Which long-running mode to run.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Mode {
    Worker,
    Api,
}

/// A running supervisor or API node. Dropping it shuts it down (every
/// session ends at once, reason `shutdown`) and waits until it has returned.
pub struct Service {
    stop: Option<oneshot::Sender<()>>,
    drain: mpsc::UnboundedSender<()>,
    thread: Option<std::thread::JoinHandle<Result<(), String>>>,
}

/// Settings as the binary would read them: `pairs` first, then the process
/// environment, over the built-in `config.toml`.
pub fn config(pairs: &[(&str, String)]) -> Config {
    Config::from_sources(DEFAULT_TOML, |k| {
        pairs.iter().rev().find(|(n, _)| *n == k).map(|(_, v)| v.clone()).or_else(|| std::env::var(k).ok())
    })
    .unwrap_or_else(|e| panic!("test settings: {e:#}"))
}

impl Service {
    /// Starts `mode` with `config`; `name` prefixes its log lines. Returns at
    /// once: wait for readiness through its HTTP, or with [`Service::failed`].
    pub fn start(mode: Mode, config: Config, name: &str) -> (Service, oneshot::Receiver<String>) {
        let (scoped, recorder) = Metrics::scoped().expect("a metrics recorder");
        // Lives as long as the process: the runtime's threads hold it as
        // their default recorder until they exit.
        let recorder: &'static _ = Box::leak(Box::new(recorder));
        let filter = tracing_subscriber::EnvFilter::new(&config.log.level);
        let prefix = name.to_string();
        let logs: tracing::Dispatch = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(false)
            .with_writer(move || Prefixed(prefix.clone()))
            .finish()
            .into();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let (drain_tx, mut drain_rx) = mpsc::unbounded_channel::<()>();
        let (failed_tx, failed_rx) = oneshot::channel::<String>();
        let thread_logs = logs.clone();
        let thread = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .on_thread_start(move || {
                        std::mem::forget(metrics::set_default_local_recorder(recorder));
                        std::mem::forget(tracing::dispatcher::set_default(&thread_logs));
                    })
                    .build()
                    .expect("a tokio runtime");
                let _logs = tracing::dispatcher::set_default(&logs);
                let _metrics = metrics::set_default_local_recorder(recorder);
                let shutdown = async {
                    let _ = stop_rx.await;
                };
                let drains = futures_util::stream::poll_fn(move |cx| drain_rx.poll_recv(cx));
                let result = runtime.block_on(async move {
                    match mode {
                        Mode::Worker => mindbot_agent::supervisor::run(&config, scoped, shutdown, drains).await,
                        Mode::Api => mindbot_agent::supervisor::serve_api(&config, scoped, shutdown).await,
                    }
                });
                result.map_err(|e| {
                    let e = format!("{e:#}");
                    let _ = failed_tx.send(e.clone());
                    e
                })
            })
            .expect("a thread for the service");
        let service = Service { stop: Some(stop_tx), drain: drain_tx, thread: Some(thread) };
        (service, failed_rx)
    }

    /// A drain request, as SIGTERM makes one in the binary.
    pub fn drain(&self) {
        let _ = self.drain.send(());
    }

    /// Waits until it returns by itself (after drain requests, say): what
    /// it returned, its error as text.
    pub async fn returned(mut self) -> Result<(), String> {
        let thread = self.thread.take().expect("a running service");
        // Held until it has returned: dropping it would be a shutdown.
        let _stop = self.stop.take();
        tokio::task::spawn_blocking(move || thread.join()).await.unwrap().expect("the service's thread did not panic")
    }

    fn shut_down(&mut self) -> Option<std::thread::JoinHandle<Result<(), String>>> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.thread.take()
    }
}

/// How long a dropped service may take to shut down before the test goes on
/// without it (a hang must not hang the suite).
const SHUTDOWN_LIMIT: Duration = Duration::from_secs(30);

impl Drop for Service {
    fn drop(&mut self) {
        let Some(thread) = self.shut_down() else { return };
        let started = std::time::Instant::now();
        while !thread.is_finished() {
            if started.elapsed() > SHUTDOWN_LIMIT {
                eprintln!("the service did not shut down within {SHUTDOWN_LIMIT:?}; leaving it behind");
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = thread.join();
    }
}

/// Waits until `ready` says so, failing the test with the service's own
/// error if it returned first, or after `limit`.
pub async fn wait_ready<F: std::future::Future<Output = bool>>(
    name: &str,
    mut failed: oneshot::Receiver<String>,
    limit: Duration,
    mut ready: impl FnMut() -> F,
) {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Ok(e) = failed.try_recv() {
            panic!("{name} did not start: {e}");
        }
        if ready().await {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{name} was not ready within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `GET path` on loopback answers `code`.
pub async fn answers(port: u16, path: &str, code: u16) -> bool {
    if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        return false;
    }
    crate::e2e::get(port, path).await.0 == code
}

/// A log writer that prints each formatted event with the service's name in
/// front, through the test harness's captured stderr.
struct Prefixed(String);

impl Write for Prefixed {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        eprint!("[{}] {}", self.0, String::from_utf8_lossy(buf));
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
