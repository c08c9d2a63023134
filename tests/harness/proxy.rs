//! A TCP proxy for tests of an outage on the way to a server (PostgreSQL,
//! LiveKit's signaling): point a pool or a worker at [`Proxy::addr`], then
//! [`Proxy::cut`] and [`Proxy::restore`], or [`Proxy::refuse_next`].

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};

/// A TCP proxy whose connections can be cut: while cut, it refuses new
/// connections and closes the open ones.
pub struct Proxy {
    pub addr: SocketAddr,
    up: Arc<AtomicBool>,
    /// New connections still to refuse (the open ones go on).
    refuse: Arc<AtomicUsize>,
    generation: Arc<tokio::sync::watch::Sender<u64>>,
}

impl Proxy {
    pub async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(AtomicBool::new(true));
        let refuse = Arc::new(AtomicUsize::new(0));
        let (gen_tx, _) = tokio::sync::watch::channel(0u64);
        let generation = Arc::new(gen_tx);
        let (u, r, g) = (up.clone(), refuse.clone(), generation.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else { return };
                let refused = r.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok();
                if refused || !u.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let mut cut = g.subscribe();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(target).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        Proxy { addr, up, refuse, generation }
    }

    /// Closes the next `n` connections as they come, leaving the open ones.
    pub fn refuse_next(&self, n: usize) {
        self.refuse.store(n, Ordering::SeqCst);
    }

    /// How many of the connections to refuse have not come yet.
    pub fn still_to_refuse(&self) -> usize {
        self.refuse.load(Ordering::SeqCst)
    }

    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.generation.send_modify(|g| *g += 1);
    }

    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

/// The database URL's host:port, resolved.
pub fn pg_addr() -> SocketAddr {
    let url = std::env::var("DATABASE_URL").expect("DATABASE_URL");
    let after_at = url.rsplit('@').next().unwrap();
    let hostport = after_at.split('/').next().unwrap();
    let hostport = if hostport.contains(':') { hostport.to_string() } else { format!("{hostport}:5432") };
    use std::net::ToSocketAddrs;
    hostport.to_socket_addrs().unwrap().next().unwrap()
}
