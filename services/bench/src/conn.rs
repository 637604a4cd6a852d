//! One keep-alive HTTP/1.1 connection driven by hyper directly (so the load generator
//! spends as little CPU as it can on the machine it shares with the server), and the
//! histogram helpers every workload reports with.

use std::net::SocketAddr;

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;

/// The `Authorization` header of every bench request, set once from `--token`.
pub(crate) static AUTHORIZATION: std::sync::OnceLock<String> = std::sync::OnceLock::new();

pub(crate) struct Conn {
    sender: SendRequest<Full<Bytes>>,
}

impl Conn {
    pub(crate) async fn open(addr: SocketAddr) -> Result<Self, String> {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Self { sender })
    }

    pub(crate) async fn send(
        &mut self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<serde_json::Value>,
    ) -> Result<(StatusCode, Bytes), String> {
        match body {
            Some(v) => {
                let bytes = Bytes::from(v.to_string());
                self.send_bytes(method, path, key, Some(("application/json", bytes)))
                    .await
            }
            None => self.send_bytes(method, path, key, None).await,
        }
    }

    /// Sends `body` with its content type as is (an NDJSON upload).
    pub(crate) async fn send_bytes(
        &mut self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<(&str, Bytes)>,
    ) -> Result<(StatusCode, Bytes), String> {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "stockflow");
        if let Some(authorization) = AUTHORIZATION.get() {
            req = req.header("authorization", authorization.as_str());
        }
        if let Some(key) = key {
            req = req.header("idempotency-key", key);
        }
        let body = match body {
            Some((content_type, bytes)) => {
                req = req.header("content-type", content_type);
                Full::new(bytes)
            }
            None => Full::new(Bytes::new()),
        };
        let req = req.body(body).map_err(|e| e.to_string())?;
        self.sender.ready().await.map_err(|e| e.to_string())?;
        let response = self
            .sender
            .send_request(req)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((status, bytes))
    }
}

pub(crate) const LOCATION: &str = "bench-dc";

pub(crate) fn histogram() -> Histogram<u64> {
    // 1 µs .. 60 s at 3 significant digits; the bounds are constants, so this cannot fail.
    Histogram::new_with_bounds(1, 60_000_000, 3)
        .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable!()))
}

pub(crate) fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

/// `p50 … ms  p99 … ms  max … ms` of a histogram in µs, as every report prints it (the
/// scripts read the p99 from it).
pub(crate) fn spread(h: &Histogram<u64>) -> String {
    format!(
        "p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
        ms(h, 0.5),
        ms(h, 0.99),
        h.max() as f64 / 1000.0
    )
}

/// The name of SKU `i` of run `run_id`.
pub(crate) fn sku(run_id: &str, i: usize) -> String {
    format!("bench-{run_id}-{i}")
}
