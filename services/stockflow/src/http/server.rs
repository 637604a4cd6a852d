//! The connection layer under the router, for plain HTTP and HTTPS alike: a cap on open
//! connections, a deadline for request headers, an idle timeout, the client's address and
//! certificate handed to the handlers, and a graceful stop.
//!
//! Why not `axum::serve`: it sets no timer, so a client sending one header byte a second,
//! or nothing at all, held its connection (and a file descriptor) for as long as it liked.
//! Cleartext HTTP/2 (prior knowledge, h2c) is served beside HTTP/1.1 on the plain port,
//! which is what a sidecar or a mesh on the same host speaks; put TLS in front of any port
//! that leaves the host.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use super::tls;

/// The client's address, in every request's extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub SocketAddr);

/// Bounds on connections, so slow or idle clients cannot hold the server's descriptors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Connections open at once; past it, new ones wait in the kernel's accept queue
    /// until one closes.
    pub max_connections: usize,
    /// The most a client may take to send a request's headers, counted from the moment
    /// the server waits for them. On HTTP/1.1 it also ends a keep-alive connection idle
    /// for that long; a connection that sends nothing after connecting gets the same.
    pub header_read_timeout: Duration,
    /// An HTTP/2 connection with no request for this long is closed (GOAWAY).
    pub idle_timeout: Duration,
}

impl Default for ConnectionLimits {
    /// 10,000 connections, 30 s to send headers, 120 s idle.
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            header_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(120),
        }
    }
}

/// Headers hyper itself accepts per request. Our own, lower limit
/// ([`super::protocol::MAX_HEADERS`]) answers with a problem document; hyper's plain 431
/// is left for requests far past it.
const HYPER_MAX_HEADERS: usize = 1_000;
/// Bytes of request head hyper buffers (its default is ~400 KiB).
const HYPER_MAX_BUF: usize = 1024 * 1024;
/// How long a connection asked to close (server stop, idle) may take to finish what it
/// is serving.
const CLOSE_GRACE: Duration = Duration::from_secs(10);
/// HTTP/2 pings to find dead peers: one every 20 s, answered within 20 s.
const H2_KEEP_ALIVE: Duration = Duration::from_secs(20);

/// Serves `app` on `listener` (over TLS with `tls`) until `shutdown` resolves; then stops
/// accepting, asks every open connection to finish, and returns once they have.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<TlsAcceptor>,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_headers(HYPER_MAX_HEADERS)
        .max_buf_size(HYPER_MAX_BUF);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(H2_KEEP_ALIVE)
        .keep_alive_timeout(H2_KEEP_ALIVE);
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let connections = TaskTracker::new();
    let stopping = CancellationToken::new();
    let mut shutdown = pin!(shutdown);
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        if slots.available_permits() == 0 {
            tracing::warn!(
                max = limits.max_connections,
                "the connection limit is reached; new connections wait until one closes"
            );
        }
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors and the like: pause rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = tcp.set_nodelay(true);
        let (app, builder, tls, stop) =
            (app.clone(), builder.clone(), tls.clone(), stopping.clone());
        connections.spawn(async move {
            metrics::gauge!("stockflow_http_connections").increment(1.0);
            match tls {
                None => connection(tcp, peer, None, app, &builder, limits, stop).await,
                Some(acceptor) => {
                    let handshake = acceptor.accept(tcp);
                    match tokio::time::timeout(limits.header_read_timeout, handshake).await {
                        Ok(Ok(stream)) => {
                            let certificate = tls::peer_certificate(&stream);
                            connection(stream, peer, certificate, app, &builder, limits, stop)
                                .await;
                        }
                        Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake refused"),
                        Err(_) => tracing::debug!("TLS handshake timed out"),
                    }
                }
            }
            metrics::gauge!("stockflow_http_connections").decrement(1.0);
            drop(slot);
        });
    }
    stopping.cancel();
    connections.close();
    connections.wait().await;
    Ok(())
}

/// When a connection last started or finished a request, and how many it is serving.
#[derive(Debug)]
struct Activity {
    opened: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds after `opened`; `u64::MAX` until the first request.
    last_ms: AtomicU64,
}

impl Activity {
    fn idle_deadline(&self, limits: &ConnectionLimits) -> Option<Instant> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        Some(match self.last_ms.load(Ordering::Acquire) {
            u64::MAX => self.opened + limits.header_read_timeout,
            ms => self.opened + Duration::from_millis(ms) + limits.idle_timeout,
        })
    }

    fn touch(&self) {
        let ms = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX - 1);
        self.last_ms.store(ms, Ordering::Release);
    }
}

/// Counts one request as in flight until its response is ready (or it is dropped).
struct InFlight(Arc<Activity>);

impl InFlight {
    fn enter(activity: &Arc<Activity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        Self(activity.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

async fn connection<IO>(
    io: IO,
    peer: SocketAddr,
    certificate: Option<crate::auth::PeerCertificate>,
    app: Router,
    builder: &auto::Builder<TokioExecutor>,
    limits: ConnectionLimits,
    stop: CancellationToken,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity {
        opened: Instant::now(),
        in_flight: AtomicUsize::new(0),
        last_ms: AtomicU64::new(u64::MAX),
    });
    let tracked = activity.clone();
    let service = tower::service_fn(move |mut req: Request<Incoming>| {
        req.extensions_mut().insert(ClientAddr(peer));
        if let Some(certificate) = &certificate {
            req.extensions_mut().insert(certificate.clone());
        }
        let request = InFlight::enter(&tracked);
        let app = app.clone();
        async move {
            let response = app.oneshot(req).await;
            drop(request);
            response
        }
    });
    let conn =
        builder.serve_connection_with_upgrades(TokioIo::new(io), TowerToHyperService::new(service));
    let mut conn = pin!(conn);
    let mut closing: Option<Instant> = None;
    loop {
        let wake = match closing {
            Some(deadline) => deadline,
            None => activity
                .idle_deadline(&limits)
                .unwrap_or_else(|| Instant::now() + limits.idle_timeout),
        };
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, client = %peer, "connection ended with an error");
                }
                return;
            }
            () = stop.cancelled(), if closing.is_none() => {
                conn.as_mut().graceful_shutdown();
                closing = Some(Instant::now() + CLOSE_GRACE);
            }
            () = tokio::time::sleep_until(wake.into()) => {
                if closing.is_some() {
                    tracing::debug!(client = %peer, "connection did not finish in time after being asked to close");
                    return;
                }
                if activity.idle_deadline(&limits).is_some_and(|d| d <= Instant::now()) {
                    tracing::debug!(client = %peer, "closing an idle connection");
                    metrics::counter!("stockflow_http_idle_closed_total").increment(1);
                    conn.as_mut().graceful_shutdown();
                    closing = Some(Instant::now() + CLOSE_GRACE);
                }
            }
        }
    }
}
