//! Request extraction shared by the handlers: strict JSON bodies with a request
//! fingerprint (and the empty body of confirm and release), path and query parameters whose
//! refusals are problem documents, the `Idempotency-Key`, the in-flight registry and the
//! trace context.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use bytes::Bytes;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use stockflow_domain::{IdempotencyKey, StoreId};
use stockflow_storage::ports::IdempotencyToken;

use crate::auth::{STORE_HEADER, STORE_SEQ_HEADER};
use crate::error::ApiError;

/// Largest request body accepted.
pub(crate) const MAX_BODY_BYTES: usize = 64 * 1024;

/// A JSON body parsed strictly (unknown fields are refused by the target types), with a
/// fingerprint of the request for idempotency checks.
pub(crate) struct CommandBody<T> {
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
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge(MAX_BODY_BYTES)
            } else {
                ApiError::MalformedBody(format!("could not read the body: {rejection}"))
            }
        })?;
        let mut json = strict_json(&bytes)
            .map_err(|e| ApiError::MalformedBody(format!("body is not valid JSON: {e}")))?;
        integral_numbers(&mut json);
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

/// Parses JSON refusing an object that names a member twice. RFC 8259 leaves duplicate
/// names to the parser, and serde's answer (the last one wins) is not what every client,
/// proxy or signature check before us read: `{"delta": 1, "delta": 1000000}` must not add a
/// million.
pub(crate) fn strict_json(bytes: &[u8]) -> Result<serde_json::Value, serde_json::Error> {
    use serde::de::DeserializeSeed;
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = StrictValue.deserialize(&mut deserializer)?;
    deserializer.end()?;
    Ok(value)
}

/// A [`serde_json::Value`] seed whose objects refuse repeated member names, at any depth.
struct StrictValue;

impl<'de> serde::de::DeserializeSeed<'de> for StrictValue {
    type Value = serde_json::Value;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for StrictValue {
    type Value = serde_json::Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(serde_json::Value::Null, Into::into))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(serde_json::Value::Null)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(StrictValue)? {
            items.push(item);
        }
        Ok(items.into())
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut members = serde_json::Map::new();
        while let Some(name) = map.next_key::<String>()? {
            let value = map.next_value_seed(StrictValue)?;
            if members.contains_key(&name) {
                return Err(serde::de::Error::custom(format!(
                    "member {name:?} appears more than once"
                )));
            }
            members.insert(name, value);
        }
        Ok(members.into())
    }
}

/// Writes every whole number given as a float (`2.0`, `1e3`) as an integer. JSON and its
/// schemas do not tell them apart (`2.0` is an `integer`), so neither do the bodies, nor the
/// fingerprint of the request.
pub(crate) fn integral_numbers(value: &mut serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::Number(n) if n.is_f64() => {
            if let Some(f) = n.as_f64()
                && f.fract() == 0.0
                && f.abs() < 9.007_199_254_740_992e15
            {
                // Below 2^53 in magnitude a whole f64 converts to i64 exactly.
                #[allow(clippy::cast_possible_truncation)]
                let whole = f as i64;
                *value = Value::from(whole);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(integral_numbers),
        Value::Object(map) => map.values_mut().for_each(integral_numbers),
        _ => {}
    }
}

/// The body of confirm and release: empty, or an empty JSON object. Fingerprinted by path,
/// so a retry under the same key is the same request.
pub(crate) struct OptionalBody {
    /// `POST <path>`.
    pub fingerprint: String,
}

impl<S: Send + Sync> FromRequest<S> for OptionalBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let path = req.uri().path().to_string();
        let bytes = Bytes::from_request(req, state).await.map_err(|r| {
            if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge(MAX_BODY_BYTES)
            } else {
                ApiError::MalformedBody(r.to_string())
            }
        })?;
        if !bytes.iter().all(u8::is_ascii_whitespace) {
            let value = strict_json(&bytes)
                .map_err(|e| ApiError::MalformedBody(format!("body is not valid JSON: {e}")))?;
            if value.as_object().is_none_or(|m| !m.is_empty()) {
                return Err(ApiError::MalformedBody(
                    "this endpoint takes no body (or an empty JSON object)".into(),
                ));
            }
        }
        Ok(Self {
            fingerprint: format!("POST {path}"),
        })
    }
}

/// Path parameters; a segment that does not parse is a 400 problem, not axum's plain text.
pub(crate) struct PathParams<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for PathParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Self(p.0))
            .map_err(|r| ApiError::InvalidPath(r.body_text()))
    }
}

/// A query string; unknown, missing or mistyped parameters are a 400 problem.
pub(crate) struct QueryParams<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Self(q.0))
            .map_err(|r| ApiError::InvalidQuery(r.body_text()))
    }
}

/// The request's `Idempotency-Key`, required on every POST, exactly once: with two, which
/// one a retry would be matched by is a guess, and a second key could apply the request
/// twice.
pub(crate) fn idempotency_key(headers: &HeaderMap) -> Result<IdempotencyKey, ApiError> {
    let mut values = headers.get_all("idempotency-key").iter();
    let value = values.next().ok_or(ApiError::MissingIdempotencyKey)?;
    if values.next().is_some() {
        return Err(stockflow_domain::ValidationError::new(
            "Idempotency-Key",
            "send exactly one Idempotency-Key header",
        )
        .into());
    }
    let text = value.to_str().map_err(|_| {
        stockflow_domain::ValidationError::new("Idempotency-Key", "must be visible ASCII")
    })?;
    Ok(IdempotencyKey::parse(text)?)
}

/// The store a store agent says the command comes from (`stockflow-store`).
pub(crate) fn store_named(headers: &HeaderMap) -> Result<Option<StoreId>, ApiError> {
    let Some(value) = headers.get(STORE_HEADER) else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .map_err(|_| stockflow_domain::ValidationError::new(STORE_HEADER, "must be a store id"))?;
    Ok(Some(StoreId::parse(text).map_err(|e| {
        stockflow_domain::ValidationError::new(STORE_HEADER, e.to_string())
    })?))
}

/// The agent's sequence number of the command (`stockflow-store-seq`).
pub(crate) fn store_seq(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let Some(value) = headers.get(STORE_SEQ_HEADER) else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|seq| *seq <= stockflow_domain::MAX_VERSION)
        .map(Some)
        .ok_or_else(|| {
            stockflow_domain::ValidationError::new(
                STORE_SEQ_HEADER,
                "must be an integer from 0 to 2^53-1",
            )
            .into()
        })
}

/// The W3C `traceparent` of the request, stamped on the events it causes.
pub(crate) fn trace_context(headers: &HeaderMap) -> Option<String> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_members_are_refused_at_every_depth() {
        assert!(strict_json(br#"{"delta": 1, "delta": 1000000}"#).is_err());
        assert!(strict_json(br#"{"lines": [{"qty": 1, "qty": 9}]}"#).is_err());
        assert!(strict_json(br#"{"a": {"b": 1}, "c": {"b": 2}}"#).is_ok());
        assert!(strict_json(br#"{"a": 1} {"a": 2}"#).is_err());
        let value = strict_json(br#"{"n": 2.5, "m": [true, null, "x", -3]}"#).expect("valid");
        assert_eq!(value["n"], 2.5);
        assert_eq!(value["m"][3], -3);
    }

    #[test]
    fn one_idempotency_key_exactly() {
        let mut headers = HeaderMap::new();
        assert!(matches!(
            idempotency_key(&headers),
            Err(ApiError::MissingIdempotencyKey)
        ));
        headers.append("idempotency-key", "k1".parse().expect("value"));
        assert!(idempotency_key(&headers).is_ok());
        headers.append("idempotency-key", "k2".parse().expect("value"));
        assert!(matches!(
            idempotency_key(&headers),
            Err(ApiError::Invalid(_))
        ));
    }
}
