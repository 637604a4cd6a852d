//! What the edge adds to the OpenAPI document, derived from the same table the guard
//! enforces ([`guard::required_scope`]): the bearer scheme, each operation's scope, and the
//! 401, 403, 429, 503 and 504 answers every guarded operation may give.

use axum::http::Method;
use utoipa::Modify;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{Content, Ref, RefOr, Response, ResponseBuilder};

use super::guard;

/// Name of the bearer scheme in the document.
const BEARER: &str = "bearer";

/// The edge's part of the document.
#[derive(Debug)]
pub struct EdgeDocs;

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

impl Modify for EdgeDocs {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        let components = api.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "A JWT (RS256, ES256 or EdDSA) from the region's identity provider. \
                         Scopes: stock:read, stock:adjust, stock:reserve, catalog:write, admin; \
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
            ];
            for (method, op) in operations {
                let Some(op) = op else { continue };
                add(
                    op,
                    "503",
                    "overloaded (too many requests at once) or unavailable; retry with the same Idempotency-Key",
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
                    "insufficient_scope, or location_forbidden (a store's token elsewhere)",
                );
                add(op, "429", "rate_limited; see Retry-After");
            }
        }
    }
}
