//! Checks on a request's framing, before routing and before any body is read: what the
//! headers already say is wrong is refused at once, with a problem document, instead of
//! after waiting for a body that may never come.

use axum::extract::Request;
use axum::http::{HeaderValue, Version, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::extract::MAX_BODY_BYTES;
use crate::error::ApiError;

/// Header fields one request may carry.
pub(crate) const MAX_HEADERS: usize = 100;
/// Bytes of header names and values one request may carry.
pub(crate) const MAX_HEADER_BYTES: usize = 32 * 1024;

/// The middleware: refuses oversized heads, declared bodies over the limit, and codings
/// the server does not decode.
pub(crate) async fn check(req: Request, next: Next) -> Response {
    match refusal(&req) {
        Some(error) => {
            let mut response = error.into_response();
            // The body was never read, so the connection cannot carry another request:
            // say so, or a client reusing it races the close (HTTP/2 frames bodies
            // itself and forbids the header).
            if req.version() <= Version::HTTP_11 {
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            response
        }
        None => next.run(req).await,
    }
}

/// The largest body `req` may declare: an import's file, or a request's JSON.
fn body_limit(req: &Request) -> u64 {
    if req.method() == axum::http::Method::POST && req.uri().path() == "/v1/imports" {
        crate::imports::MAX_IMPORT_BYTES
    } else {
        MAX_BODY_BYTES as u64
    }
}

fn refusal(req: &Request) -> Option<ApiError> {
    let headers = req.headers();
    if headers.len() > MAX_HEADERS {
        return Some(ApiError::HeadersTooLarge(format!(
            "{} header fields; at most {MAX_HEADERS} are accepted",
            headers.len()
        )));
    }
    let bytes: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    if bytes > MAX_HEADER_BYTES {
        return Some(ApiError::HeadersTooLarge(format!(
            "{bytes} bytes of header fields; at most {MAX_HEADER_BYTES} are accepted"
        )));
    }
    // A declared length over the limit is refused before reading anything: waiting for
    // the body (which a hostile client may never send) only ties up the connection.
    let limit = body_limit(req);
    for length in headers.get_all(header::CONTENT_LENGTH) {
        let declared = length
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok());
        if declared.is_none_or(|n| n > limit) {
            return Some(ApiError::PayloadTooLarge(
                usize::try_from(limit).unwrap_or(usize::MAX),
            ));
        }
    }
    for encoding in headers.get_all(header::CONTENT_ENCODING) {
        let text = encoding.to_str().unwrap_or("(not text)");
        if text
            .split(',')
            .map(str::trim)
            .any(|c| !c.is_empty() && !c.eq_ignore_ascii_case("identity"))
        {
            return Some(ApiError::UnsupportedEncoding(text.to_string()));
        }
    }
    // hyper decodes `chunked` framing; any other transfer coding would reach the handlers
    // still encoded.
    for coding in headers.get_all(header::TRANSFER_ENCODING) {
        let text = coding.to_str().unwrap_or("(not text)");
        if text
            .split(',')
            .map(str::trim)
            .any(|c| !c.is_empty() && !c.eq_ignore_ascii_case("chunked"))
        {
            return Some(ApiError::UnsupportedTransferCoding(text.to_string()));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::StatusCode;

    use super::*;

    fn request(headers: &[(&str, &str)]) -> Request {
        let mut builder = Request::builder().method("POST").uri("/v1/adjustments");
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(Body::empty()).expect("request")
    }

    fn status(headers: &[(&str, &str)]) -> Option<StatusCode> {
        refusal(&request(headers)).map(|e| e.into_response().status())
    }

    #[test]
    fn framing_the_server_cannot_honour_is_refused_from_the_headers() {
        assert_eq!(status(&[("content-length", "12")]), None);
        assert_eq!(
            status(&[("content-length", "70000")]),
            Some(StatusCode::PAYLOAD_TOO_LARGE)
        );
        assert_eq!(
            status(&[("content-length", "-1")]),
            Some(StatusCode::PAYLOAD_TOO_LARGE)
        );
        assert_eq!(status(&[("content-encoding", "identity")]), None);
        assert_eq!(
            status(&[("content-encoding", "gzip")]),
            Some(StatusCode::UNSUPPORTED_MEDIA_TYPE)
        );
        assert_eq!(status(&[("transfer-encoding", "chunked")]), None);
        assert_eq!(
            status(&[("transfer-encoding", "gzip, chunked")]),
            Some(StatusCode::NOT_IMPLEMENTED)
        );
        let many: Vec<(String, String)> = (0..=MAX_HEADERS)
            .map(|i| (format!("x-h{i}"), "v".to_string()))
            .collect();
        let many: Vec<(&str, &str)> = many.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        assert_eq!(
            status(&many),
            Some(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
        );
        let big = "v".repeat(MAX_HEADER_BYTES);
        assert_eq!(
            status(&[("x-big", big.as_str())]),
            Some(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
        );
    }
}
