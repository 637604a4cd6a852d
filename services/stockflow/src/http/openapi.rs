//! What every operation shares in the OpenAPI document, added in one place: errors are
//! `application/problem+json` documents of the one `Problem` schema; the edge's answers,
//! derived from the same table the guard enforces ([`guard::required_scope`]) — the bearer
//! scheme, each operation's scope, 401, 403, 429, 503 and 504; and the answers of the shared
//! extractors — 400 where a parameter or body is read, 413 and 415 for JSON bodies, and the
//! `Idempotency-Key` answers (409 `request_in_progress`, 422 `idempotency_key_reused`).

use axum::http::Method;
use utoipa::Modify;
use utoipa::openapi::link::LinkBuilder;
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{Content, Ref, RefOr, Required, Response, ResponseBuilder};

use super::guard;

/// The document as served. utoipa 5.5 writes a Link object's fields in snake case
/// (`operation_id`, `request_body`), where OpenAPI names them `operationId` and
/// `requestBody`; tools then see links without a target. This renames them.
pub(crate) fn document() -> serde_json::Value {
    use utoipa::OpenApi;
    let mut document = serde_json::to_value(super::ApiDoc::openapi()).unwrap_or_default();
    let paths = document
        .get_mut("paths")
        .and_then(serde_json::Value::as_object_mut);
    let operations = paths
        .into_iter()
        .flat_map(|paths| paths.values_mut())
        .filter_map(serde_json::Value::as_object_mut)
        .flat_map(|item| item.values_mut());
    for operation in operations {
        let responses = operation
            .get_mut("responses")
            .and_then(serde_json::Value::as_object_mut);
        let links = responses
            .into_iter()
            .flat_map(|r| r.values_mut())
            .filter_map(|r| {
                r.get_mut("links")
                    .and_then(serde_json::Value::as_object_mut)
            })
            .flat_map(|links| links.values_mut())
            .filter_map(serde_json::Value::as_object_mut);
        for link in links {
            for (snake, camel) in [
                ("operation_id", "operationId"),
                ("request_body", "requestBody"),
            ] {
                if let Some(value) = link.remove(snake) {
                    link.insert(camel.to_string(), value);
                }
            }
        }
    }
    document
}

/// Name of the bearer scheme in the document.
const BEARER: &str = "bearer";

/// The edge's part of the document.
#[derive(Debug)]
pub(crate) struct EdgeDocs;

fn problem(description: &str) -> RefOr<Response> {
    RefOr::T(
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/problem+json",
                Content::new(Some(Ref::from_schema_name("Problem"))),
            )
            .build(),
    )
}

fn add(op: &mut Operation, status: &str, description: &str) {
    op.responses
        .responses
        .entry(status.to_string())
        .or_insert_with(|| problem(description));
}

/// Moves every `Problem` body written as `application/json` in an annotation to
/// `application/problem+json`, which is what [`crate::error::ApiError`] sends.
fn problem_media_type(op: &mut Operation) {
    for response in op.responses.responses.values_mut() {
        let RefOr::T(response) = response else {
            continue;
        };
        let is_problem = response.content.get("application/json").is_some_and(
            |c| matches!(&c.schema, Some(RefOr::Ref(r)) if r.ref_location.ends_with("/Problem")),
        );
        if is_problem && let Some(content) = response.content.shift_remove("application/json") {
            response
                .content
                .insert("application/problem+json".to_string(), content);
        }
    }
}

/// What the `Idempotency-Key` header means, said once for every command.
const IDEMPOTENCY_KEY: &str = "Required: one key per request. A retry with the same key and \
    body within 24 h gets the recorded answer, success or refusal, and applies nothing again; \
    another request under the key is refused with 422 idempotency_key_reused.";

/// Path parameters and the `Idempotency-Key` are required. Their schemas come from
/// [`super::docs`] through `schema_with`, which leaves `required` (and the description) to
/// this pass.
fn required_parameters(op: &mut Operation) {
    for parameter in op.parameters.iter_mut().flatten() {
        if parameter.parameter_in == ParameterIn::Path {
            parameter.required = Required::True;
        }
        if parameter.parameter_in == ParameterIn::Header && parameter.name == "Idempotency-Key" {
            parameter.required = Required::True;
            parameter.description = Some(IDEMPOTENCY_KEY.to_string());
        }
    }
}

/// How one answer leads to the next request, for generated clients and stateful testing.
struct DocLink {
    /// Operation whose answer the link starts from.
    from: &'static str,
    /// Its status.
    status: &'static str,
    /// Name of the link.
    name: &'static str,
    /// The operation it leads to.
    to: &'static str,
    /// Parameters of `to`, as runtime expressions over the answer.
    parameters: &'static [(&'static str, &'static str)],
}

const RESERVATION: &[(&str, &str)] = &[("id", "$response.body#/reservation_id")];
const TRANSFER: &[(&str, &str)] = &[("id", "$response.body#/transfer_id")];
const SKU: &[(&str, &str)] = &[("sku", "$response.body#/sku")];
const KEY: &[(&str, &str)] = &[
    ("sku", "$response.body#/sku"),
    ("location", "$response.body#/location"),
];

const fn link(
    from: &'static str,
    status: &'static str,
    name: &'static str,
    to: &'static str,
    parameters: &'static [(&'static str, &'static str)],
) -> DocLink {
    DocLink {
        from,
        status,
        name,
        to,
        parameters,
    }
}

const LINKS: &[DocLink] = &[
    link(
        "reserve",
        "201",
        "GetReservation",
        "get_reservation",
        RESERVATION,
    ),
    link("reserve", "201", "Confirm", "confirm", RESERVATION),
    link("reserve", "201", "Release", "release", RESERVATION),
    link(
        "confirm",
        "200",
        "GetReservation",
        "get_reservation",
        RESERVATION,
    ),
    link(
        "release",
        "200",
        "GetReservation",
        "get_reservation",
        RESERVATION,
    ),
    link(
        "create_transfer",
        "201",
        "GetTransfer",
        "get_transfer",
        TRANSFER,
    ),
    link("create_transfer", "201", "Ship", "ship_transfer", TRANSFER),
    link(
        "create_transfer",
        "201",
        "Cancel",
        "cancel_transfer",
        TRANSFER,
    ),
    link(
        "ship_transfer",
        "200",
        "GetTransfer",
        "get_transfer",
        TRANSFER,
    ),
    link(
        "receive_transfer",
        "200",
        "GetTransfer",
        "get_transfer",
        TRANSFER,
    ),
    link(
        "cancel_transfer",
        "200",
        "GetTransfer",
        "get_transfer",
        TRANSFER,
    ),
    link("adjust", "200", "StockAt", "stock_at", KEY),
    link("adjust", "200", "StockBySku", "stock_by_sku", SKU),
    link("adjust", "200", "Availability", "availability", SKU),
    link("put_sku", "200", "StockBySku", "stock_by_sku", SKU),
];

/// Reserve a unit where an adjustment just put stock: the one way a generated reservation
/// names a location that exists.
fn reserve_after_adjust() -> utoipa::openapi::link::Link {
    LinkBuilder::new()
        .operation_id("reserve")
        .request_body(Some(serde_json::json!({
            "lines": [{
                "sku": "$response.body#/sku",
                "location": "$response.body#/location",
                "qty": 1,
            }],
        })))
        .description("adjust then reserve")
        .build()
}

fn links(op: &mut Operation) {
    let Some(id) = op.operation_id.clone() else {
        return;
    };
    for l in LINKS.iter().filter(|l| l.from == id) {
        let Some(RefOr::T(response)) = op.responses.responses.get_mut(l.status) else {
            continue;
        };
        let mut builder = LinkBuilder::new().operation_id(l.to);
        for (parameter, expression) in l.parameters {
            builder = builder.parameter(*parameter, *expression);
        }
        let built = builder
            .description(format!("{} then {}", l.from, l.to))
            .build();
        response.links.insert(l.name.to_string(), RefOr::T(built));
    }
    if id == "adjust"
        && let Some(RefOr::T(response)) = op.responses.responses.get_mut("200")
    {
        response
            .links
            .insert("Reserve".to_string(), RefOr::T(reserve_after_adjust()));
    }
}

/// The answers of the extractors an operation uses, read from its parameters and body.
fn extractor_answers(op: &mut Operation) {
    let parameters = op.parameters.as_deref().unwrap_or_default();
    let keyed = parameters
        .iter()
        .any(|p| p.name == "Idempotency-Key" && p.parameter_in == ParameterIn::Header);
    let has_input = !parameters.is_empty() || op.request_body.is_some();
    let json_body = op.request_body.is_some();
    if has_input {
        add(
            op,
            "400",
            "invalid_request (the field is named), invalid_path, invalid_query, malformed_body or idempotency_key_missing",
        );
    }
    if json_body {
        add(
            op,
            "413",
            "payload_too_large: bodies are at most 64 KiB (a larger Content-Length is refused before the body is read)",
        );
        add(
            op,
            "415",
            "unsupported_media_type: bodies are application/json; or unsupported_encoding: a Content-Encoding other than identity",
        );
        add(
            op,
            "501",
            "unsupported_transfer_coding: a Transfer-Encoding other than chunked",
        );
    }
    if keyed {
        add(
            op,
            "409",
            "request_in_progress: a request with this Idempotency-Key is still running",
        );
        add(
            op,
            "422",
            "idempotency_key_reused: this Idempotency-Key was used for another request",
        );
    }
}

/// The document's `info` extension naming how long an Idempotency-Key keeps its answer,
/// in seconds.
pub const IDEMPOTENCY_LIFETIME_EXTENSION: &str = "x-idempotency-key-lifetime-seconds";

impl Modify for EdgeDocs {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        // Machine-readable for store agents, which must not hold a command longer than
        // the region remembers its key.
        let lifetime = utoipa::openapi::extensions::ExtensionsBuilder::new()
            .add(
                IDEMPOTENCY_LIFETIME_EXTENSION,
                stockflow_domain::IDEMPOTENCY_KEY_LIFETIME_SECS,
            )
            .build();
        match &mut api.info.extensions {
            Some(existing) => existing.merge(lifetime),
            None => api.info.extensions = Some(lifetime),
        }
        let components = api.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "A JWT (RS256, ES256 or EdDSA) from the region's identity provider. \
                         Scopes: stock:read, stock:adjust, stock:reserve, catalog:write, admin, webhooks:manage; \
                         a `locations` claim limits a store's token to its own locations.",
                    ))
                    .build(),
            ),
        );
        for (path, item) in api.paths.paths.iter_mut() {
            let operations = [
                (Method::GET, item.get.as_mut()),
                (Method::PUT, item.put.as_mut()),
                (Method::POST, item.post.as_mut()),
                (Method::DELETE, item.delete.as_mut()),
            ];
            for (method, op) in operations {
                let Some(op) = op else { continue };
                problem_media_type(op);
                required_parameters(op);
                links(op);
                extractor_answers(op);
                add(
                    op,
                    "503",
                    "overloaded (too many requests at once) or unavailable; retry with the same Idempotency-Key",
                );
                add(
                    op,
                    "431",
                    "headers_too_large: more than 100 header fields or 32 KiB of them",
                );
                add(
                    op,
                    "504",
                    "timeout: the request was cut off; it may have run, retry with the same Idempotency-Key",
                );
                let Some(scope) = guard::required_scope(&method, path) else {
                    continue;
                };
                op.security = Some(vec![SecurityRequirement::new(BEARER, [scope.as_str()])]);
                add(op, "401", "unauthenticated or invalid_token");
                add(
                    op,
                    "403",
                    "insufficient_scope, location_forbidden (a store's token elsewhere), or principal_not_listed (a client certificate the principals file does not name)",
                );
                add(op, "429", "rate_limited; see Retry-After");
            }
        }
    }
}
