//! The webhook subscription API. Handlers only store what the subscriber asked for and
//! read back what the webhook worker recorded: no delivery ever happens in a request
//! (replays are queued for the worker).
//!
//! Creation is idempotent like every POST: the subscription's id is derived from the
//! caller's `Idempotency-Key`, so a retry answers the same subscription (and secret), and
//! the same key with another body is refused.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use stockflow_domain::Refusal;
use stockflow_domain::webhook::{Secret, SubscriptionSpec, SubscriptionState};
use stockflow_storage::ports::{Subscription, WebhookStore};
use utoipa::IntoParams;

use super::AppState;
use super::docs::{self, IdempotencyKeyHeader};
use super::extract::{CommandBody, OptionalBody, PathParams, idempotency_key};
use super::model::{
    CreatedSubscription, ReplayQueuedBody, SubscriptionRequest, SubscriptionResponse,
    WebhookDeadLetterBody,
};
use crate::auth::Identity;
use crate::error::{ApiError, ApiResult, Problem};

/// `{id}` of a subscription in a path.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub(crate) struct SubscriptionPath {
    /// Subscription id.
    #[param(schema_with = docs::subscription_id)]
    pub id: String,
}

fn store(state: &AppState) -> &dyn WebhookStore {
    &*state.webhooks
}

async fn found(store: &dyn WebhookStore, id: &str) -> ApiResult<Subscription> {
    store
        .subscription(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no subscription {id}")))
}

async fn response_of(
    store: &dyn WebhookStore,
    s: &Subscription,
) -> ApiResult<SubscriptionResponse> {
    let events = store.subscription_events(&s.id).await?;
    Ok(SubscriptionResponse::of(s, events))
}

fn random_secret() -> ApiResult<Secret> {
    use aws_lc_rs::rand::{SecureRandom, SystemRandom};
    let mut bytes = [0u8; stockflow_domain::webhook::signature::SECRET_BYTES];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| ApiError::Internal("no randomness for a webhook secret".into()))?;
    Ok(Secret::from_random(bytes))
}

/// Subscribes a URL to the region's events. Deliveries are signed per Standard Webhooks
/// with the secret answered here, once.
#[utoipa::path(post, path = "/v1/subscriptions", tag = "webhooks",
    params(IdempotencyKeyHeader),
    request_body = SubscriptionRequest,
    responses((status = 201, body = CreatedSubscription),
              (status = 200, body = CreatedSubscription, description = "a retry of the same request: the same subscription"),
              (status = 422, body = Problem, description = "invalid_subscription (a URL that is not http(s), an unknown event type, an invalid filter value) or idempotency_key_reused"),
              (status = 501, body = Problem, description = "not_implemented: this backend has no webhook store")))]
pub(crate) async fn create(
    State(state): State<AppState>,
    axum::Extension(identity): axum::Extension<Identity>,
    headers: HeaderMap,
    body: CommandBody<SubscriptionRequest>,
) -> ApiResult<Response> {
    let store = store(&state);
    let key = identity.scoped_key(idempotency_key(&headers)?);
    let request = body.value;
    let filter = request
        .filter
        .clone()
        .unwrap_or_default()
        .into_filter()
        .map_err(ApiError::InvalidSubscription)?;
    let spec = SubscriptionSpec::parse(&request.url, &request.types, filter)
        .map_err(ApiError::InvalidSubscription)?;
    let digest = Sha256::digest(format!("subscription\n{key}").as_bytes());
    let id = format!("sub_{}", hex::encode(&digest[..16]));
    let types: Vec<String> = spec.types.iter().map(|t| t.as_str().to_string()).collect();
    if let Some(existing) = store.subscription(&id).await? {
        // The same key: the same request answers the same subscription; another is refused.
        if existing.url != spec.url || existing.types != types || existing.filter != spec.filter {
            return Err(ApiError::Refused(Refusal::IdempotencyKeyReused));
        }
        let answer = CreatedSubscription {
            subscription: response_of(store, &existing).await?,
            secret: existing.secret.clone(),
        };
        let mut response = (StatusCode::OK, Json(answer)).into_response();
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
        return Ok(response);
    }
    let now = stockflow_storage::now_ms();
    let subscription = Subscription {
        id,
        url: spec.url,
        types,
        filter: spec.filter,
        secret: random_secret()?.expose(),
        state: SubscriptionState::Enabled,
        consecutive_dead_letters: 0,
        created_at_ms: now,
        updated_at_ms: now,
    };
    store.create_subscription(&subscription).await?;
    metrics::counter!("stockflow_webhook_subscriptions_created_total").increment(1);
    tracing::info!(subscription = %subscription.id, url = %subscription.url, "webhook subscription created");
    let answer = CreatedSubscription {
        subscription: SubscriptionResponse::of(&subscription, Vec::new()),
        secret: subscription.secret.clone(),
    };
    Ok((StatusCode::CREATED, Json(answer)).into_response())
}

/// Every subscription, oldest first.
#[utoipa::path(get, path = "/v1/subscriptions", tag = "webhooks",
    responses((status = 200, body = Vec<SubscriptionResponse>),
              (status = 501, body = Problem, description = "not_implemented: this backend has no webhook store")))]
pub(crate) async fn list(
    State(state): State<AppState>,
) -> ApiResult<Json<Vec<SubscriptionResponse>>> {
    let store = store(&state);
    let mut out = Vec::new();
    for s in store.subscriptions().await? {
        out.push(response_of(store, &s).await?);
    }
    Ok(Json(out))
}

/// One subscription, with what happened to it (its disabling, with the reason).
#[utoipa::path(get, path = "/v1/subscriptions/{id}", tag = "webhooks",
    params(SubscriptionPath),
    responses((status = 200, body = SubscriptionResponse),
              (status = 404, body = Problem, description = "not_found"),
              (status = 501, body = Problem, description = "not_implemented: this backend has no webhook store")))]
pub(crate) async fn get_one(
    State(state): State<AppState>,
    PathParams(SubscriptionPath { id }): PathParams<SubscriptionPath>,
) -> ApiResult<Json<SubscriptionResponse>> {
    let store = store(&state);
    let s = found(store, &id).await?;
    Ok(Json(response_of(store, &s).await?))
}

/// Removes a subscription with its cursors and dead letters; nothing more is delivered.
#[utoipa::path(delete, path = "/v1/subscriptions/{id}", tag = "webhooks",
    params(SubscriptionPath),
    responses((status = 204, description = "removed"),
              (status = 404, body = Problem, description = "not_found"),
              (status = 501, body = Problem, description = "not_implemented: this backend has no webhook store")))]
pub(crate) async fn delete(
    State(state): State<AppState>,
    PathParams(SubscriptionPath { id }): PathParams<SubscriptionPath>,
) -> ApiResult<StatusCode> {
    let store = store(&state);
    if !store.delete_subscription(&id).await? {
        return Err(ApiError::NotFound(format!("no subscription {id}")));
    }
    tracing::info!(subscription = %id, "webhook subscription deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// Enables a subscription (after it was disabled): delivery resumes where it stopped.
#[utoipa::path(post, path = "/v1/subscriptions/{id}/enable", tag = "webhooks",
    params(SubscriptionPath, IdempotencyKeyHeader),
    responses((status = 200, body = SubscriptionResponse),
              (status = 404, body = Problem, description = "not_found"),
              (status = 501, body = Problem, description = "not_implemented: this backend has no webhook store")))]
pub(crate) async fn enable(
    State(state): State<AppState>,
    headers: HeaderMap,
    PathParams(SubscriptionPath { id }): PathParams<SubscriptionPath>,
    _body: OptionalBody,
) -> ApiResult<Json<SubscriptionResponse>> {
    let store = store(&state);
    // Enabling twice is enabling once: the key is required, as on every POST, but needs
    // no record.
    idempotency_key(&headers)?;
    if !store.enable(&id, stockflow_storage::now_ms()).await? {
        return Err(ApiError::NotFound(format!("no subscription {id}")));
    }
    let s = found(store, &id).await?;
    Ok(Json(response_of(store, &s).await?))
}

/// The subscription's dead letters: events given up on after their retry window.
#[utoipa::path(get, path = "/v1/subscriptions/{id}/dead-letters", tag = "webhooks",
    params(SubscriptionPath),
    responses((status = 200, body = Vec<WebhookDeadLetterBody>),
              (status = 404, body = Problem, description = "not_found"),
              (status = 501, body = Problem, description = "not_implemented: this backend has no webhook store")))]
pub(crate) async fn dead_letters(
    State(state): State<AppState>,
    PathParams(SubscriptionPath { id }): PathParams<SubscriptionPath>,
) -> ApiResult<Json<Vec<WebhookDeadLetterBody>>> {
    let store = store(&state);
    found(store, &id).await?;
    let letters = store.dead_letters(&id).await?;
    Ok(Json(letters.into_iter().map(Into::into).collect()))
}

/// Queues every dead letter of the subscription for one more delivery by the webhook
/// worker (with its original `webhook-id`); a letter that fails again stays, with its new
/// error. A disabled subscription's replays wait until it is enabled.
#[utoipa::path(post, path = "/v1/subscriptions/{id}/dead-letters/replay", tag = "webhooks",
    params(SubscriptionPath, IdempotencyKeyHeader),
    responses((status = 202, body = ReplayQueuedBody),
              (status = 404, body = Problem, description = "not_found"),
              (status = 501, body = Problem, description = "not_implemented: this backend has no webhook store")))]
pub(crate) async fn replay(
    State(state): State<AppState>,
    headers: HeaderMap,
    PathParams(SubscriptionPath { id }): PathParams<SubscriptionPath>,
    _body: OptionalBody,
) -> ApiResult<(StatusCode, Json<ReplayQueuedBody>)> {
    let store = store(&state);
    // Queuing twice queues the same letters: harmless, so no record of the key.
    idempotency_key(&headers)?;
    found(store, &id).await?;
    let queued = store.request_replay(&id).await?;
    Ok((StatusCode::ACCEPTED, Json(ReplayQueuedBody { queued })))
}
