//! Request extraction shared by the command handlers: strict JSON bodies with a request
//! fingerprint, the `Idempotency-Key`, the in-flight registry and the trace context.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, header};
use bytes::Bytes;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use stockflow_domain::IdempotencyKey;
use stockflow_storage::ports::IdempotencyToken;

use crate::error::ApiError;

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// A JSON body parsed strictly (unknown fields are refused by the target types), with a
/// fingerprint of the request for idempotency checks.
pub struct CommandBody<T> {
    /// The parsed body.
    pub value: T,
    /// SHA-256 over method, path and the canonical JSON of the body, so the same request
    /// with different whitespace or key order has the same fingerprint.
    pub fingerprint: String,
}

impl<S, T> FromRequest<S> for CommandBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if let Some(content_type) = req.headers().get(header::CONTENT_TYPE) {
            let is_json = content_type
                .to_str()
                .ok()
                .and_then(|v| v.split(';').next())
                .map(|v| {
                    let v = v.trim().to_ascii_lowercase();
                    v == "application/json"
                        || (v.starts_with("application/") && v.ends_with("+json"))
                })
                .unwrap_or(false);
            if !is_json {
                return Err(ApiError::UnsupportedMediaType);
            }
        }
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge(MAX_BODY_BYTES)
            } else {
                ApiError::MalformedBody(format!("could not read the body: {rejection}"))
            }
        })?;
        let json: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::MalformedBody(format!("body is not valid JSON: {e}")))?;
        // serde_json's map is ordered by key, so re-serializing canonicalises the body.
        let canonical = serde_json::to_vec(&json)
            .map_err(|e| ApiError::MalformedBody(format!("body is not valid JSON: {e}")))?;
        let value = T::deserialize(json)
            .map_err(|e| ApiError::MalformedBody(format!("body does not match the schema: {e}")))?;
        let mut digest = Sha256::new();
        digest.update(method.as_str().as_bytes());
        digest.update(b" ");
        digest.update(path.as_bytes());
        digest.update(b"\n");
        digest.update(&canonical);
        Ok(Self {
            value,
            fingerprint: hex::encode(digest.finalize()),
        })
    }
}

/// The request's `Idempotency-Key`, required on every POST.
pub fn idempotency_key(headers: &HeaderMap) -> Result<IdempotencyKey, ApiError> {
    let value = headers
        .get("idempotency-key")
        .ok_or(ApiError::MissingIdempotencyKey)?;
    let text = value.to_str().map_err(|_| {
        stockflow_domain::ValidationError::new("Idempotency-Key", "must be visible ASCII")
    })?;
    Ok(IdempotencyKey::parse(text)?)
}

/// The W3C `traceparent` of the request, stamped on the events it causes.
pub fn trace_context(headers: &HeaderMap) -> Option<String> {
    headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.len() <= 128)
        .map(str::to_string)
}

/// Keys of requests being executed by this process, so a concurrent retry gets
/// `request_in_progress` instead of queueing behind the original.
#[derive(Default)]
pub struct InFlight {
    keys: Mutex<HashSet<String>>,
}

/// Holds a key in the registry until dropped (also when the client disconnects).
pub struct InFlightGuard {
    registry: Arc<InFlight>,
    key: String,
}

impl InFlight {
    /// Registers `token`, or refuses if a request with the same key is running.
    pub fn enter(self: &Arc<Self>, token: &IdempotencyToken) -> Result<InFlightGuard, ApiError> {
        let key = token.key.to_string();
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        if !keys.insert(key.clone()) {
            return Err(ApiError::RequestInProgress);
        }
        Ok(InFlightGuard {
            registry: self.clone(),
            key,
        })
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        let mut keys = self.registry.keys.lock().unwrap_or_else(|p| p.into_inner());
        keys.remove(&self.key);
    }
}
