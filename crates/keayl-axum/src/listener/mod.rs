//! The HTTP listener: serves an axum [`Router`] with the edges bounded.
//!
//! `axum::serve` gives hyper no timer, so a client that opens a connection
//! and sends nothing, or trickles its headers, holds a socket and its
//! buffers for ever. [`Listener`] serves the same router with:
//!
//! - a **header-read timeout** ([`ListenerConfig::header_read_timeout`],
//!   10 s): the request line and headers must arrive in time. hyper starts
//!   this clock whenever it waits for a request, so it is also the idle
//!   keep-alive timeout;
//! - a **bounded header buffer** ([`ListenerConfig::max_header_bytes`],
//!   32 KiB; larger headers get `431`);
//! - a **body-read timeout** ([`ListenerConfig::body_read_timeout`], 10 s):
//!   a request body that delivers nothing for this long while the handler
//!   waits for it fails with [`BodyTimeout`];
//! - **one connection budget for the process** ([`ConnectionBudget`]):
//!   every accepted TCP connection takes a place before a byte is read and
//!   keeps it until its socket closes — WebSocket (through the upgrade),
//!   SSE, live responses, keep-alive, handshakes. Past
//!   [`ListenerConfig::max_connections`], the next
//!   [`ListenerConfig::ops_headroom`] connections may only reach the ops
//!   paths (`/health`, `/metrics`), so they answer while the budget is
//!   full; past both, connections get `503` and are closed, with a
//!   rate-limited log line. Keep `max_connections + ops_headroom` below
//!   the process's open-file limit.
//!
//! - a **client-stall timeout** ([`ListenerConfig::client_stall_timeout`],
//!   30 s): a connection whose client reads nothing for this long while a
//!   response waits for it is cut (seen from the TCP window the client
//!   advertises, on Linux), so an SSE or live writer learns the client is
//!   gone long before the kernel buffers fill. WebSockets are watched by
//!   the cable's own outbox limits instead.
//!
//! Requests carry an [`AcceptedAt`] extension (when their connection was
//! accepted), which the cable endpoint uses so its handshake timeout
//! covers the upgrade request as well as `connect`, and axum's
//! [`ConnectInfo<SocketAddr>`](axum::extract::ConnectInfo).
//!
//! ```no_run
//! # async fn run() -> std::io::Result<()> {
//! use keayl_axum::listener::{Listener, ListenerConfig};
//! let app = axum::Router::new().route("/", axum::routing::get(|| async { "hello" }));
//! let tcp = keayl_axum::listener::bind("127.0.0.1:3000".parse().unwrap())?;
//! let listener = Listener::new(tcp, ListenerConfig::default()).expect("valid config");
//! listener.serve_until(app, async { let _ = tokio::signal::ctrl_c().await; }).await
//! # }
//! ```

mod budget;
mod io;
mod stall;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::response::Response;
use futures_util::future::Either;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use keayl_cable::socket::LogLimit;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

pub use budget::{ConnectionBudget, ListenerSnapshot, ListenerStats, Permit, Place};
pub use io::BodyTimeout;
use io::{Metered, TimeoutBody};

/// Settings of a [`Listener`]. Every default is documented on its field.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ListenerConfig {
    /// Time for a request's line and headers to arrive, counted from when
    /// the server starts waiting for them (so it also closes idle
    /// keep-alive connections). Default 10 s.
    pub header_read_timeout: Duration,
    /// The same for connections on an ops place, which get one request.
    /// Default 2 s.
    pub ops_header_read_timeout: Duration,
    /// How long a request body may deliver nothing while its handler waits
    /// for it. Default 10 s.
    pub body_read_timeout: Duration,
    /// The most bytes of request line and headers (larger: `431`), which
    /// also bounds the read buffer. At least 8 KiB. Default 32 KiB.
    pub max_header_bytes: usize,
    /// Connections served in full. Default 19,500 (under the common
    /// 20,000 open-file limit).
    pub max_connections: usize,
    /// Extra connections that may only reach [`ops_paths`](Self::ops_paths).
    /// Default 64.
    pub ops_headroom: usize,
    /// Paths an ops place may request. Default `/health`, `/metrics`.
    pub ops_paths: Vec<String>,
    /// Cut an HTTP connection (not an upgraded WebSocket) whose client read
    /// nothing for this long while data waited for it; `None` never does.
    /// Linux only (elsewhere the kernel buffers still bound it). Default
    /// 30 s.
    pub client_stall_timeout: Option<Duration>,
    /// `SO_SNDBUF` for accepted sockets; `None` keeps the kernel's
    /// auto-tuning. A small buffer makes a client that stops reading
    /// visible sooner, at the cost of throughput on long links. Default
    /// `None`.
    pub send_buffer_bytes: Option<usize>,
    /// `TCP_NODELAY` on accepted sockets (small real-time frames go out at
    /// once). Default `true`.
    pub tcp_nodelay: bool,
    /// After the shutdown signal: how long open HTTP connections (SSE,
    /// live responses, requests in progress) may run on before they are
    /// cut. Default 5 s.
    pub shutdown_grace: Duration,
    /// Refusal and accept-error log lines per second. Default 5.
    pub log_lines_per_second: u32,
}

impl Default for ListenerConfig {
    fn default() -> Self {
        ListenerConfig {
            header_read_timeout: Duration::from_secs(10),
            ops_header_read_timeout: Duration::from_secs(2),
            body_read_timeout: Duration::from_secs(10),
            max_header_bytes: 32 * 1024,
            max_connections: 19_500,
            ops_headroom: 64,
            ops_paths: vec!["/health".into(), "/metrics".into()],
            client_stall_timeout: Some(Duration::from_secs(30)),
            send_buffer_bytes: None,
            tcp_nodelay: true,
            shutdown_grace: Duration::from_secs(5),
            log_lines_per_second: 5,
        }
    }
}

/// A [`ListenerConfig`] that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ListenerConfigError {
    /// A duration or count that must be positive is zero.
    #[error("listener setting `{0}` must not be zero")]
    Zero(&'static str),
    /// `max_header_bytes` below hyper's minimum buffer.
    #[error("listener setting `max_header_bytes` must be at least 8192, got {0}")]
    HeaderBytes(usize),
}

impl ListenerConfig {
    /// Check the settings (done by [`Listener::new`]).
    pub fn validate(&self) -> Result<(), ListenerConfigError> {
        let zero = [
            ("header_read_timeout", self.header_read_timeout.is_zero()),
            (
                "ops_header_read_timeout",
                self.ops_header_read_timeout.is_zero(),
            ),
            ("body_read_timeout", self.body_read_timeout.is_zero()),
            ("max_connections", self.max_connections == 0),
            (
                "client_stall_timeout",
                self.client_stall_timeout.is_some_and(|t| t.is_zero()),
            ),
            ("log_lines_per_second", self.log_lines_per_second == 0),
        ];
        if let Some((name, _)) = zero.iter().find(|(_, z)| *z) {
            return Err(ListenerConfigError::Zero(name));
        }
        if self.max_header_bytes < 8192 {
            return Err(ListenerConfigError::HeaderBytes(self.max_header_bytes));
        }
        Ok(())
    }
}

/// When a request's TCP connection was accepted (a request extension set
/// by [`Listener`]).
#[derive(Debug, Clone, Copy)]
pub struct AcceptedAt(pub tokio::time::Instant);

/// Bind a TCP listener with a deep accept backlog (4096; tokio's `bind`
/// uses 128, which drops SYNs when thousands of clients connect at once).
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

/// Serves a [`Router`] on a TCP listener with bounded edges (see the
/// [module docs](self)).
#[derive(Debug)]
pub struct Listener {
    tcp: TcpListener,
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    config: ListenerConfig,
    stats: ListenerStats,
    budget: ConnectionBudget,
    log: LogLimit,
    /// Refused connections still being answered (bounded, see `refuse`).
    lingering: AtomicUsize,
}

/// Refused sockets answered at once beyond this many are dropped without
/// an answer, so a storm cannot turn refusals into a file-descriptor leak.
const MAX_LINGERING: usize = 256;
const REFUSAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: 25\r\nretry-after: 1\r\nconnection: close\r\n\r\nconnection limit reached\n";

impl Listener {
    /// Serve on `tcp` with `config` (validated).
    pub fn new(tcp: TcpListener, config: ListenerConfig) -> Result<Self, ListenerConfigError> {
        config.validate()?;
        let stats = ListenerStats::default();
        let budget =
            ConnectionBudget::new(config.max_connections, config.ops_headroom, stats.clone());
        Ok(Listener {
            tcp,
            shared: Arc::new(Shared {
                log: LogLimit::new(config.log_lines_per_second),
                config,
                stats,
                budget,
                lingering: AtomicUsize::new(0),
            }),
        })
    }

    /// The address listened on.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }

    /// The counters (also rendered by [`crate::ops`] when given them).
    pub fn stats(&self) -> ListenerStats {
        self.shared.stats.clone()
    }

    /// The settings.
    pub fn config(&self) -> &ListenerConfig {
        &self.shared.config
    }

    /// Serve `router` until the process ends.
    pub async fn serve(self, router: Router) -> std::io::Result<()> {
        self.serve_until(router, std::future::pending()).await
    }

    /// Serve `router` until `shutdown` completes; then stop accepting, let
    /// connections finish their requests for up to
    /// [`ListenerConfig::shutdown_grace`], and cut the rest. (Upgraded
    /// WebSockets are closed by their own server, e.g.
    /// [`CableServer::shutdown`](crate::CableServer::shutdown).)
    pub async fn serve_until(
        self,
        router: Router,
        shutdown: impl Future<Output = ()>,
    ) -> std::io::Result<()> {
        let stop = CancellationToken::new();
        let mut tasks = JoinSet::new();
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                accepted = self.tcp.accept() => match accepted {
                    Ok((stream, peer)) => {
                        self.shared.clone().spawn_connection(stream, peer, &router, &stop, &mut tasks);
                    }
                    Err(e) => self.shared.accept_failed(e).await,
                },
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            }
        }
        drop(self.tcp);
        stop.cancel();
        let drain = async { while tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(self.shared.config.shutdown_grace, drain)
            .await
            .is_err()
        {
            tracing::info!(
                open = tasks.len(),
                "shutdown grace over; closing remaining HTTP connections"
            );
            tasks.shutdown().await;
        }
        Ok(())
    }
}

impl Shared {
    fn spawn_connection(
        self: Arc<Self>,
        stream: TcpStream,
        peer: SocketAddr,
        router: &Router,
        stop: &CancellationToken,
        tasks: &mut JoinSet<()>,
    ) {
        let accepted_at = AcceptedAt(tokio::time::Instant::now());
        self.stats.accepted();
        let Some(permit) = self.budget.try_acquire() else {
            self.refuse(stream, peer);
            return;
        };
        let config = &self.config;
        if config.tcp_nodelay {
            let _ = stream.set_nodelay(true);
        }
        if let Some(bytes) = config.send_buffer_bytes {
            let _ = socket2::SockRef::from(&stream).set_send_buffer_size(bytes);
        }
        let place = permit.place();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&stream);
        let stall_timeout = config.client_stall_timeout;
        let io = TokioIo::new(Metered::new(stream, permit));
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(match place {
                Place::Regular => config.header_read_timeout,
                Place::Ops => config.ops_header_read_timeout,
            })
            .max_buf_size(config.max_header_bytes)
            .max_header_size(config.max_header_bytes)
            .keep_alive(place == Place::Regular);
        let shared = self.clone();
        let router = router.clone();
        let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            shared.handle(router.clone(), req, place, peer, accepted_at)
        });
        let stop = stop.clone();
        let shared = self;
        tasks.spawn(async move {
            let conn = builder.serve_connection(io, service).with_upgrades();
            let mut conn = std::pin::pin!(conn);
            // `fd` belongs to `conn`, which outlives this future.
            let stall = async {
                match stall_timeout {
                    Some(t) => stall::stalled(fd, t).await,
                    None => std::future::pending().await,
                }
            };
            let result = tokio::select! {
                r = conn.as_mut() => r,
                _ = stall => {
                    shared.stats.client_stall();
                    if shared.log.allow(shared.stats.suppressed()) {
                        tracing::info!(%peer, "client read nothing for the stall timeout; closing");
                    }
                    return;
                }
                _ = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                if e.is_timeout() {
                    shared.stats.header_timeout();
                } else {
                    tracing::debug!(error = %e, %peer, "HTTP connection ended with an error");
                }
            }
        });
    }

    fn handle(
        &self,
        router: Router,
        req: hyper::Request<Incoming>,
        place: Place,
        peer: SocketAddr,
        accepted_at: AcceptedAt,
    ) -> impl Future<Output = Result<Response, std::convert::Infallible>> + use<> {
        if place == Place::Ops && !self.config.ops_paths.iter().any(|p| p == req.uri().path()) {
            self.stats.ops_only_refusal();
            return Either::Left(std::future::ready(Ok(busy())));
        }
        let body_timeout = self.config.body_read_timeout;
        let stats = self.stats.clone();
        let mut req = req.map(|body| Body::new(TimeoutBody::new(body, body_timeout, stats)));
        req.extensions_mut().insert(ConnectInfo(peer));
        req.extensions_mut().insert(accepted_at);
        Either::Right(router.oneshot(req))
    }

    /// Answer a connection past the whole budget with `503` and close it.
    fn refuse(self: Arc<Self>, stream: TcpStream, peer: SocketAddr) {
        self.stats.refused();
        if self.log.allow(self.stats.suppressed()) {
            tracing::warn!(
                %peer,
                limit = self.config.max_connections,
                headroom = self.config.ops_headroom,
                "connection budget full; refusing connection with 503"
            );
        }
        if self.lingering.fetch_add(1, Ordering::AcqRel) >= MAX_LINGERING {
            self.lingering.fetch_sub(1, Ordering::AcqRel);
            return;
        }
        tokio::spawn(async move {
            // A fresh socket's send buffer is empty: this write completes.
            let _ = stream.try_write(REFUSAL);
            // Read what the client sent (briefly) so closing does not
            // reset the connection before it reads the answer.
            let mut buf = [0u8; 4096];
            let _ = tokio::time::timeout(Duration::from_secs(1), async {
                loop {
                    if stream.readable().await.is_err() {
                        break;
                    }
                    match stream.try_read(&mut buf) {
                        Ok(0) => break,
                        Ok(_) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(_) => break,
                    }
                }
            })
            .await;
            drop(stream);
            self.lingering.fetch_sub(1, Ordering::AcqRel);
        });
    }

    async fn accept_failed(&self, e: std::io::Error) {
        self.stats.accept_error();
        if self.log.allow(self.stats.suppressed()) {
            tracing::warn!(error = %e, "accept failed (out of file descriptors?)");
        }
        // Out of descriptors: back off instead of spinning.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The answer to a non-ops request on an ops place.
fn busy() -> Response {
    Response::builder()
        .status(http::StatusCode::SERVICE_UNAVAILABLE)
        .header(http::header::CONNECTION, "close")
        .header(http::header::RETRY_AFTER, "1")
        .header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Body::from("connection limit reached\n"))
        .unwrap_or_default()
}
