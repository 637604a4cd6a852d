//! The OpenAPI document against the server that serves it: every answer a route gives is
//! documented for that route, as a `Problem` under `application/problem+json` whose `code`
//! is in the document's enum, and every constraint the shared extractors enforce is stated.
//! (schemathesis, in `scripts/api-contract.sh`, fuzzes the same from outside.)

mod common;

use common::{Platform, problem};
use reqwest::StatusCode;
use serde_json::{Value, json};

fn operation<'a>(doc: &'a Value, method: &str, path: &str) -> &'a Value {
    let op = &doc["paths"][path][method];
    assert!(op.is_object(), "{method} {path} is not in the document");
    op
}

/// Every operation of the document, as (method, path, operation).
fn operations(doc: &Value) -> Vec<(String, String, &Value)> {
    let mut all = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            all.push((method.clone(), path.clone(), op));
        }
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_answer_is_a_documented_problem() {
    let p = Platform::start().await;
    let doc: Value = p.get("/openapi.json").await.json().await.unwrap();
    let codes: Vec<&str> = doc["components"]["schemas"]["Problem"]["properties"]["code"]["enum"]
        .as_array()
        .expect("Problem.code is an enum")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for (method, path, op) in operations(&doc) {
        for (status, response) in op["responses"].as_object().expect("responses") {
            let content = response["content"].as_object();
            if status.starts_with('4') || status.starts_with('5') {
                let content =
                    content.unwrap_or_else(|| panic!("{method} {path} {status}: no body"));
                assert_eq!(
                    content.keys().collect::<Vec<_>>(),
                    ["application/problem+json"],
                    "{method} {path} {status}"
                );
                assert_eq!(
                    content["application/problem+json"]["schema"]["$ref"],
                    "#/components/schemas/Problem",
                    "{method} {path} {status}"
                );
            }
        }
        let parameters = op["parameters"].as_array().cloned().unwrap_or_default();
        let has_body = op["requestBody"].is_object();
        let responses = &op["responses"];
        if has_body || !parameters.is_empty() {
            assert!(responses["400"].is_object(), "{method} {path} lacks 400");
        }
        if has_body {
            for status in ["413", "415"] {
                assert!(
                    responses[status].is_object(),
                    "{method} {path} lacks {status}"
                );
            }
        }
        for parameter in &parameters {
            if parameter["in"] == "path" {
                assert_eq!(parameter["required"], true, "{method} {path} {parameter}");
            }
            // Every id is stated with the domain's own rule.
            let name = parameter["name"].as_str().unwrap_or_default();
            let is_id = [
                "sku",
                "location",
                "region",
                "reservation_id",
                "idempotency_key",
            ]
            .contains(&name)
                || (name == "id" && !path.starts_with("/admin/"));
            if name == "locations" {
                let id = stockflow_domain::ID_PATTERN
                    .trim_start_matches('^')
                    .trim_end_matches("+$");
                assert_eq!(
                    parameter["schema"]["pattern"],
                    format!("^{id}{{1,64}}(,{id}{{1,64}}){{0,99}}$"),
                    "{method} {path} {name}"
                );
            }
            if name == "after" && path.starts_with("/v1/changes") {
                assert_eq!(
                    parameter["schema"]["pattern"],
                    stockflow_storage::ports::CHANGE_CURSOR_PATTERN,
                    "{method} {path} {name}"
                );
            }
            if is_id {
                assert_eq!(
                    parameter["schema"]["pattern"],
                    stockflow_domain::ID_PATTERN,
                    "{method} {path} {name}"
                );
                assert_eq!(
                    parameter["schema"]["maxLength"], 64,
                    "{method} {path} {name}"
                );
            }
        }
        if method == "post" && path.starts_with("/v1/") {
            let key = parameters
                .iter()
                .find(|p| p["name"] == "Idempotency-Key")
                .unwrap_or_else(|| panic!("{method} {path} has no Idempotency-Key"));
            assert_eq!(key["in"], "header");
            assert_eq!(key["required"], true);
            assert_eq!(key["schema"]["pattern"], stockflow_domain::ID_PATTERN);
            assert_eq!(key["schema"]["maxLength"], 64);
            for status in ["409", "422"] {
                assert!(
                    responses[status].is_object(),
                    "{method} {path} lacks {status}"
                );
            }
        }
    }

    // Real refusals, one per path the shared code takes: each must be documented for its
    // route, with its code in the enum.
    p.location("s1", "north").await;
    p.stock("SKU-1", "s1", 5).await;
    let line = json!({"sku": "SKU-1", "location": "s1", "qty": 1});
    let cases: Vec<(&str, &str, reqwest::Response)> = vec![
        (
            "post",
            "/v1/reservations",
            p.http
                .post(p.url("/v1/reservations"))
                .json(&json!({"lines": [line]}))
                .send()
                .await
                .unwrap(),
        ),
        (
            "post",
            "/v1/reservations",
            p.post("/v1/reservations", "dup", json!({"lines": [line, line]}))
                .await,
        ),
        (
            "post",
            "/v1/reservations",
            p.post(
                "/v1/reservations",
                "many",
                json!({"lines": [{"sku": "SKU-1", "location": "s1", "qty": 6}]}),
            )
            .await,
        ),
        (
            "post",
            "/v1/reservations",
            p.post("/v1/reservations", "many", json!({"lines": [line]}))
                .await,
        ),
        (
            "post",
            "/v1/adjustments",
            p.post(
                "/v1/adjustments",
                "both",
                json!({"sku": "SKU-1", "location": "s1", "delta": 1, "set_on_hand": 2, "reason": "receipt"}),
            )
            .await,
        ),
        (
            "post",
            "/v1/adjustments",
            p.http
                .post(p.url("/v1/adjustments"))
                .header("idempotency-key", "text")
                .header("content-type", "text/plain")
                .body("x")
                .send()
                .await
                .unwrap(),
        ),
        (
            "post",
            "/admin/dead-letters/{id}/replay",
            p.post(
                "/admin/dead-letters/99999999999999999999/replay",
                "k",
                json!({}),
            )
            .await,
        ),
        (
            "post",
            "/admin/dead-letters/{id}/replay",
            p.post("/admin/dead-letters/7/replay", "k", json!({})).await,
        ),
        (
            "get",
            "/v1/search",
            p.get("/v1/search?q=a&limit=lots").await,
        ),
        ("get", "/v1/search", p.get("/v1/search?x=1").await),
        (
            "get",
            "/v1/availability/{sku}",
            p.get("/v1/availability/SKU-1?region=%C3%91").await,
        ),
        (
            "get",
            "/v1/stock/{sku}/{location}",
            p.get("/v1/stock/SKU-1/nowhere").await,
        ),
        (
            "get",
            "/v1/reservations/{id}",
            p.get("/v1/reservations/%FF").await,
        ),
        (
            "post",
            "/v1/reservations/{id}/confirm",
            p.post("/v1/reservations/none/confirm", "c", json!({})).await,
        ),
    ];
    let mut seen = Vec::new();
    for (method, path, response) in cases {
        let (status, body) = problem(response).await;
        let code = body["code"].as_str().unwrap_or_default().to_string();
        assert!(
            codes.contains(&code.as_str()),
            "{code} is not in Problem.code"
        );
        let documented = &operation(&doc, method, path)["responses"][status.as_str()];
        assert!(
            documented.is_object(),
            "{method} {path} answered {status} {code}, which it does not document"
        );
        seen.push(format!("{} {code}", status.as_u16()));
    }
    // The cases reach what they mean to (a case that stops earlier would prove less).
    assert_eq!(
        seen,
        [
            "400 idempotency_key_missing",
            "422 duplicate_line",
            "409 insufficient_stock",
            "422 idempotency_key_reused",
            "400 invalid_request",
            "415 unsupported_media_type",
            "400 invalid_path",
            "404 not_found",
            "400 invalid_query",
            "400 invalid_query",
            "400 invalid_request",
            "404 not_found",
            "400 invalid_path",
            "404 reservation_not_found",
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_numbers_written_as_floats_are_integers() {
    let p = Platform::start().await;
    p.location("s1", "north").await;
    let r = p
        .post(
            "/v1/adjustments",
            "float",
            json!({"sku": "SKU-1", "location": "s1", "delta": 3.0, "reason": "receipt"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let again = p
        .post(
            "/v1/adjustments",
            "float",
            json!({"sku": "SKU-1", "location": "s1", "delta": 3, "reason": "receipt"}),
        )
        .await;
    assert_eq!(
        again.status(),
        StatusCode::OK,
        "3 and 3.0 are the same request"
    );
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let fraction = p
        .post(
            "/v1/adjustments",
            "fraction",
            json!({"sku": "SKU-1", "location": "s1", "delta": 2.5, "reason": "receipt"}),
        )
        .await;
    let (status, body) = problem(fraction).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("malformed_body"))
    );
}

/// Every `$ref` in `value`, with where it was found.
fn refs<'a>(value: &'a Value, at: &str, found: &mut Vec<(String, &'a str)>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("$ref", Value::String(r)) => found.push((at.to_string(), r)),
                    _ => refs(v, &format!("{at}/{k}"), found),
                }
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                refs(v, &format!("{at}/{i}"), found);
            }
        }
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_reference_resolves() {
    let p = Platform::start().await;
    let doc: Value = p.get("/openapi.json").await.json().await.unwrap();
    let mut found = Vec::new();
    refs(&doc, "", &mut found);
    assert!(!found.is_empty());
    for (at, r) in found {
        // A schema named by `schema_with` is not registered by it: a dangling reference
        // makes generated clients drop the operation.
        let pointer = r
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("{at}: external {r}"));
        assert!(doc.pointer(pointer).is_some(), "{at}: {r} does not resolve");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_asyncapi_document_is_served_beside_the_openapi_one() {
    let p = Platform::start().await;
    let r = p.get("/asyncapi.json").await;
    assert_eq!(r.status(), StatusCode::OK);
    let served: Value = r.json().await.unwrap();
    assert_eq!(served, stockflow::events::asyncapi::document());
    assert_eq!(served["asyncapi"], "3.0.0");
    let messages = served["components"]["messages"].as_object().unwrap();
    assert_eq!(
        messages.len(),
        stockflow_domain::EventType::all().len(),
        "one message per event type"
    );
    // The OpenAPI document lists it as an open operation.
    let openapi: Value = p.get("/openapi.json").await.json().await.unwrap();
    let op = &openapi["paths"]["/asyncapi.json"]["get"];
    assert!(op.is_object(), "/asyncapi.json is documented");
    assert!(op["security"].is_null(), "and needs no credential: {op}");
}
