//! The agent's client of its region: commands sent with their stable Idempotency-Key and
//! the store's sequence number, each answer sorted into what to do next (acknowledged,
//! refused for good, or try again), the bearer token read from a file that may be
//! renewed in place, and the region's clock read from its `Date` header.

use std::path::PathBuf;
use std::sync::{Mutex, RwLock};
use std::time::{Duration, SystemTime};

use reqwest::StatusCode;

use super::AgentError;

/// How a command's attempt ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Applied, now or before (a replayed answer): the region's answer.
    Applied(serde_json::Value),
    /// Refused in a way no retry fixes (bad input, insufficient stock): to quarantine.
    Refused(serde_json::Value),
    /// Not applied this time; a retry may be (the region is down, busy, or the token
    /// expired). `after` is what the region asked for (Retry-After), if anything.
    Retry {
        /// Why.
        reason: String,
        /// The region's Retry-After.
        after: Option<Duration>,
        /// The region did not answer at all (counts against the circuit breaker).
        unreachable: bool,
        /// The credentials were refused (staff must renew the token).
        unauthorized: bool,
    },
}

/// The bearer token, read from a file and read again when the file changes (a renewed
/// Secret or a provisioning tool rewrites it in place).
#[derive(Debug)]
struct TokenFile {
    path: PathBuf,
    current: RwLock<(Option<SystemTime>, String)>,
}

impl TokenFile {
    fn token(&self) -> Result<String, AgentError> {
        let modified = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok();
        {
            let current = self.current.read().unwrap_or_else(|p| p.into_inner());
            if current.0.is_some() && current.0 == modified {
                return Ok(current.1.clone());
            }
        }
        let text = std::fs::read_to_string(&self.path).map_err(|source| AgentError::Io {
            what: format!("read the token file {}", self.path.display()),
            source,
        })?;
        let token = text.trim().to_string();
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = (modified, token.clone());
        Ok(token)
    }
}

/// How the agent's TLS connections to the region trust and identify: the region's CA when
/// it is not publicly trusted, and a client certificate for a region that requires mutual
/// TLS (its principals file grants the store's certificate its scopes and locations).
#[derive(Debug, Clone, Default)]
pub struct RegionTls {
    /// PEM certificates to trust besides the public roots.
    pub ca_file: Option<PathBuf>,
    /// The store's PEM client certificate (chain).
    pub client_cert_file: Option<PathBuf>,
    /// Its PEM private key.
    pub client_key_file: Option<PathBuf>,
}

fn read_pem(path: &std::path::Path) -> Result<Vec<u8>, AgentError> {
    std::fs::read(path).map_err(|source| AgentError::Io {
        what: format!("read {}", path.display()),
        source,
    })
}

/// The region, as the agent reaches it.
#[derive(Debug)]
pub struct Region {
    base: String,
    store_id: String,
    token: Option<TokenFile>,
    http: reqwest::Client,
    /// The region's clock minus ours, in ms, from the last answer's `Date`.
    clock_offset_ms: Mutex<Option<i64>>,
}

impl Region {
    /// A client of the region at `base` (`https://…`), for store `store_id`.
    pub fn new(
        base: &str,
        store_id: &str,
        token_file: Option<PathBuf>,
        timeout: Duration,
        tls: &RegionTls,
    ) -> Result<Self, AgentError> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .timeout(timeout);
        if let Some(path) = &tls.ca_file {
            // The region's own CA, trusted besides the public roots (a private PKI).
            let pem = read_pem(path)?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                AgentError::Settings(format!("{}: not PEM certificates: {e}", path.display()))
            })? {
                builder = builder.add_root_certificate(cert);
            }
        }
        match (&tls.client_cert_file, &tls.client_key_file) {
            (Some(cert), Some(key)) => {
                let mut pem = read_pem(cert)?;
                pem.extend(read_pem(key)?);
                let identity = reqwest::Identity::from_pem(&pem).map_err(|e| {
                    AgentError::Settings(format!(
                        "{} and {}: not a PEM certificate and private key: {e}",
                        cert.display(),
                        key.display()
                    ))
                })?;
                builder = builder.identity(identity);
            }
            (None, None) => {}
            _ => {
                return Err(AgentError::Settings(
                    "a client certificate needs both --region-client-cert-file and --region-client-key-file".into(),
                ));
            }
        }
        let http = builder
            .build()
            .map_err(|e| AgentError::Settings(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            base: base.trim_end_matches('/').to_string(),
            store_id: store_id.to_string(),
            token: token_file.map(|path| TokenFile {
                path,
                current: RwLock::new((None, String::new())),
            }),
            http,
            clock_offset_ms: Mutex::new(None),
        })
    }

    /// The region's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The region's clock minus ours, in ms, as of its last answer.
    pub fn clock_offset_ms(&self) -> Option<i64> {
        *self
            .clock_offset_ms
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    fn note_clock(&self, response: &reqwest::Response) {
        let Some(date) = response
            .headers()
            .get(reqwest::header::DATE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| httpdate_parse(v).ok())
        else {
            return;
        };
        let ours = crate::agent::now_ms();
        let theirs = date
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        // `Date` has whole seconds: the offset is exact to a second, enough to see skew.
        *self
            .clock_offset_ms
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(theirs - ours);
    }

    /// How long the region keeps an Idempotency-Key's answer, in seconds, as its API
    /// document states it.
    pub async fn key_lifetime_seconds(&self) -> Result<u64, AgentError> {
        let doc: serde_json::Value = self
            .http
            .get(format!("{}/openapi.json", self.base))
            .send()
            .await
            .map_err(|e| {
                AgentError::Region(format!("read the region's API document: {}", describe(&e)))
            })?
            .json()
            .await
            .map_err(|e| AgentError::Region(format!("the region's API document: {e}")))?;
        doc["info"][crate::http::openapi::IDEMPOTENCY_LIFETIME_EXTENSION]
            .as_u64()
            .ok_or_else(|| {
                AgentError::Region(
                    "the region's API document does not state its key lifetime".into(),
                )
            })
    }

    /// A request to the region with the agent's credentials.
    pub fn request(
        &self,
        method: reqwest::Method,
        path: &str,
    ) -> Result<reqwest::RequestBuilder, AgentError> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header(crate::auth::STORE_HEADER, &self.store_id);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token.token()?);
        }
        Ok(request)
    }

    /// Sends one queued command: its Idempotency-Key is the same on every attempt, so
    /// however often it is sent the region applies it once.
    pub async fn send(
        &self,
        path: &str,
        command_id: &str,
        seq: i64,
        body: &serde_json::Value,
    ) -> Result<Outcome, AgentError> {
        let request = self
            .request(reqwest::Method::POST, path)?
            .header("idempotency-key", command_id)
            .header(crate::auth::STORE_SEQ_HEADER, seq.to_string())
            .json(body);
        let response = match request.send().await {
            Ok(response) => response,
            Err(e) => {
                return Ok(Outcome::Retry {
                    reason: describe(&e),
                    after: None,
                    unreachable: true,
                    unauthorized: false,
                });
            }
        };
        self.note_clock(&response);
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body: serde_json::Value = match response.text().await {
            Ok(text) => serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
            Err(e) => {
                // The answer was lost on the way: the command may have run; the retry
                // with the same key finds out.
                return Ok(Outcome::Retry {
                    reason: format!("the answer was cut off: {}", describe(&e)),
                    after: None,
                    unreachable: true,
                    unauthorized: false,
                });
            }
        };
        Ok(classify(status, body, retry_after))
    }
}

/// What an answer of the region means for a queued command.
pub fn classify(
    status: StatusCode,
    body: serde_json::Value,
    retry_after: Option<Duration>,
) -> Outcome {
    let code = body["code"].as_str().unwrap_or_default().to_string();
    if status.is_success() {
        return Outcome::Applied(body);
    }
    let retry = |reason: String, unreachable: bool, unauthorized: bool| Outcome::Retry {
        reason,
        after: retry_after,
        unreachable,
        unauthorized,
    };
    match status {
        // The credentials, not the command: keep it and retry once the token is renewed.
        StatusCode::UNAUTHORIZED => retry(
            format!("the region refused the token ({code})"),
            false,
            true,
        ),
        StatusCode::FORBIDDEN if code != "location_forbidden" => retry(
            format!("the region refused the token ({code})"),
            false,
            true,
        ),
        // Another attempt with the same key is still running, or a limit: later.
        StatusCode::CONFLICT if code == "request_in_progress" => {
            retry("an earlier attempt is still running".into(), false, false)
        }
        StatusCode::TOO_MANY_REQUESTS | StatusCode::REQUEST_TIMEOUT => retry(
            format!("the region asked to slow down ({status})"),
            false,
            false,
        ),
        s if s.is_server_error() => retry(format!("the region answered {s} ({code})"), true, false),
        // Every other 4xx is about the command itself: retrying cannot change the answer.
        _ => Outcome::Refused(body),
    }
}

/// The error and its causes (reqwest's own message hides why a connection failed).
fn describe(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Parses an HTTP date (`Sun, 06 Nov 1994 08:49:37 GMT`).
fn httpdate_parse(text: &str) -> Result<SystemTime, humantime::TimestampError> {
    humantime::parse_rfc3339(&rfc3339_of_http_date(text).unwrap_or_default())
}

/// `Sun, 06 Nov 1994 08:49:37 GMT` → `1994-11-06T08:49:37Z`.
fn rfc3339_of_http_date(text: &str) -> Option<String> {
    let mut parts = text.split_whitespace().skip(1);
    let day: u32 = parts.next()?.parse().ok()?;
    let month = match parts.next()? {
        "Jan" => 1,
        "Feb" => 2,
        "Mar" => 3,
        "Apr" => 4,
        "May" => 5,
        "Jun" => 6,
        "Jul" => 7,
        "Aug" => 8,
        "Sep" => 9,
        "Oct" => 10,
        "Nov" => 11,
        "Dec" => 12,
        _ => return None,
    };
    let year: u32 = parts.next()?.parse().ok()?;
    let time = parts.next()?;
    Some(format!("{year:04}-{month:02}-{day:02}T{time}Z"))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn answers_are_sorted_into_acknowledged_refused_or_retry() {
        let ok = classify(StatusCode::OK, json!({"on_hand": 3}), None);
        assert!(matches!(ok, Outcome::Applied(_)));
        for (status, code) in [
            (StatusCode::BAD_REQUEST, "invalid_request"),
            (StatusCode::CONFLICT, "insufficient_stock"),
            (StatusCode::NOT_FOUND, "reservation_not_found"),
            (StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused"),
            (StatusCode::FORBIDDEN, "location_forbidden"),
        ] {
            let outcome = classify(status, json!({"code": code}), None);
            assert!(matches!(outcome, Outcome::Refused(_)), "{status} {code}");
        }
        for (status, code, unauthorized) in [
            (StatusCode::UNAUTHORIZED, "invalid_token", true),
            (StatusCode::FORBIDDEN, "insufficient_scope", true),
            (StatusCode::CONFLICT, "request_in_progress", false),
            (StatusCode::TOO_MANY_REQUESTS, "rate_limited", false),
            (StatusCode::SERVICE_UNAVAILABLE, "unavailable", false),
            (StatusCode::GATEWAY_TIMEOUT, "timeout", false),
        ] {
            match classify(status, json!({"code": code}), Some(Duration::from_secs(2))) {
                Outcome::Retry {
                    unauthorized: u,
                    after,
                    ..
                } => {
                    assert_eq!(u, unauthorized, "{status}");
                    assert_eq!(after, Some(Duration::from_secs(2)));
                }
                other => panic!("{status} {code}: {other:?}"),
            }
        }
    }

    #[test]
    fn the_http_date_of_the_region_is_read() {
        let t = httpdate_parse("Sun, 06 Nov 1994 08:49:37 GMT").expect("parses");
        assert_eq!(
            t.duration_since(std::time::UNIX_EPOCH)
                .expect("after")
                .as_secs(),
            784_111_777
        );
    }
}
