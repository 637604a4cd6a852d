//! Bodies of the webhook subscription API. Each is a named component (nested objects are
//! `$ref`s), which the generated clients need.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use stockflow_domain::webhook::{Filter, MAX_FILTER_VALUES, MAX_URL_LEN};
use stockflow_domain::{EventType, ValidationError};
use stockflow_storage::ports::{Subscription, SubscriptionEvent, WebhookDeadLetter};
use utoipa::ToSchema;
use utoipa::openapi::schema::{Array, ArrayBuilder, ObjectBuilder, Type};

use super::super::docs;
use super::rfc3339;

/// `POST /v1/subscriptions`.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SubscriptionRequest {
    /// Where deliveries are POSTed: an absolute http:// or https:// URL.
    #[schema(schema_with = url)]
    pub url: String,
    /// CloudEvents types to deliver (see `/asyncapi.json`).
    #[schema(schema_with = event_types)]
    pub types: Vec<String>,
    /// Which events of those types; absent: all of them.
    #[serde(default)]
    pub filter: Option<FilterBody>,
}

/// Restricts a subscription to events naming one of the listed values in each non-empty
/// list. SKU-wide events (catalog, SKU policy) carry no location or region, so a location
/// or region list excludes them.
#[derive(Debug, Default, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct FilterBody {
    /// SKUs.
    #[serde(default)]
    #[schema(schema_with = id_list)]
    pub skus: Vec<String>,
    /// Locations.
    #[serde(default)]
    #[schema(schema_with = id_list)]
    pub locations: Vec<String>,
    /// Regions.
    #[serde(default)]
    #[schema(schema_with = id_list)]
    pub regions: Vec<String>,
}

impl FilterBody {
    /// The domain's filter; a value listed twice is refused (the document says the lists
    /// hold unique items, and silently merging them would accept what it forbids).
    pub(crate) fn into_filter(self) -> Result<Filter, ValidationError> {
        let set = |field: &str, values: Vec<String>| {
            let len = values.len();
            let set: BTreeSet<String> = values.into_iter().collect();
            if set.len() == len {
                Ok(set)
            } else {
                Err(ValidationError::duplicate(field, "lists a value twice"))
            }
        };
        Ok(Filter {
            skus: set("filter.skus", self.skus)?,
            locations: set("filter.locations", self.locations)?,
            regions: set("filter.regions", self.regions)?,
        })
    }
}

impl From<&Filter> for FilterBody {
    fn from(f: &Filter) -> Self {
        FilterBody {
            skus: f.skus.iter().cloned().collect(),
            locations: f.locations.iter().cloned().collect(),
            regions: f.regions.iter().cloned().collect(),
        }
    }
}

fn url() -> utoipa::openapi::schema::Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(MAX_URL_LEN))
        .examples(["http://127.0.0.1:9000/webhooks"])
        .build()
}

fn event_types() -> Array {
    let names: Vec<&'static str> = EventType::all()
        .into_iter()
        .map(EventType::as_str)
        .collect();
    ArrayBuilder::new()
        .items(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(names)),
        )
        .min_items(Some(1))
        .unique_items(true)
        .build()
}

fn id_list() -> Array {
    ArrayBuilder::new()
        .items(docs::sku())
        .max_items(Some(MAX_FILTER_VALUES))
        .unique_items(true)
        .build()
}

/// A subscription (never its secret, which only its creation answers).
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct SubscriptionResponse {
    /// Subscription id.
    pub id: String,
    /// Where deliveries go.
    pub url: String,
    /// CloudEvents types delivered.
    pub types: Vec<String>,
    /// Which events of those types.
    pub filter: FilterBody,
    /// `enabled` or `disabled` (after persistent failure; `POST .../enable` resumes).
    #[schema(schema_with = state)]
    pub state: String,
    /// Dead letters since the last successful delivery.
    pub consecutive_dead_letters: u32,
    /// When it was created (RFC 3339).
    pub created_at: String,
    /// When it last changed (RFC 3339).
    pub updated_at: String,
    /// What happened to it, newest first (e.g. `dev.stockflow.subscription.disabled.v1`).
    pub events: Vec<SubscriptionEventBody>,
}

fn state() -> utoipa::openapi::schema::Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(["enabled", "disabled"]))
        .build()
}

impl SubscriptionResponse {
    pub(crate) fn of(s: &Subscription, events: Vec<SubscriptionEvent>) -> Self {
        Self {
            id: s.id.clone(),
            url: s.url.clone(),
            types: s.types.clone(),
            filter: FilterBody::from(&s.filter),
            state: s.state.as_str().to_string(),
            consecutive_dead_letters: s.consecutive_dead_letters,
            created_at: rfc3339(s.created_at_ms),
            updated_at: rfc3339(s.updated_at_ms),
            events: events
                .into_iter()
                .map(SubscriptionEventBody::from)
                .collect(),
        }
    }
}

/// Something that happened to a subscription.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct SubscriptionEventBody {
    /// CloudEvents type, e.g. `dev.stockflow.subscription.disabled.v1`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// Why.
    pub reason: String,
    /// When (RFC 3339).
    pub time: String,
}

impl From<SubscriptionEvent> for SubscriptionEventBody {
    fn from(e: SubscriptionEvent) -> Self {
        Self {
            event_type: e.event_type,
            reason: e.reason,
            time: rfc3339(e.at_ms),
        }
    }
}

/// The answer of `POST /v1/subscriptions`: the subscription and its signing secret, shown
/// only here.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct CreatedSubscription {
    /// The subscription.
    pub subscription: SubscriptionResponse,
    /// `whsec_` + base64: verify deliveries with it (Standard Webhooks libraries take it
    /// as is). Keep it secret.
    pub secret: String,
}

/// An event a subscription gave up on after its retry window.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct WebhookDeadLetterBody {
    /// Letter id.
    pub id: i64,
    /// The event's id (deliveries of it carry one `webhook-id`, the same on replay).
    pub event_id: String,
    /// Its CloudEvents type.
    #[serde(rename = "type")]
    pub event_type: String,
    /// Event-log partition and offset.
    pub partition: u32,
    /// Offset in the partition.
    pub offset: u64,
    /// Attempts made.
    pub attempts: u32,
    /// The last failure.
    pub last_error: String,
    /// When it was given up on, or last replayed without success (RFC 3339).
    pub failed_at: String,
    /// A replay has been asked for and not yet attempted.
    pub replay_requested: bool,
}

impl From<WebhookDeadLetter> for WebhookDeadLetterBody {
    fn from(l: WebhookDeadLetter) -> Self {
        Self {
            id: l.id,
            event_id: l.event_id,
            event_type: l.event_type,
            partition: l.partition,
            offset: l.offset,
            attempts: l.attempts,
            last_error: l.last_error,
            failed_at: rfc3339(l.failed_at_ms),
            replay_requested: l.replay_requested,
        }
    }
}

/// The answer of a replay request.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ReplayQueuedBody {
    /// Dead letters queued for one more delivery each, by the webhook worker.
    pub queued: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_filter_value_listed_twice_is_refused() {
        let body = |skus: &[&str]| FilterBody {
            skus: skus.iter().map(|s| s.to_string()).collect(),
            ..FilterBody::default()
        };
        let filter = body(&["SKU-1", "SKU-2"]).into_filter();
        assert_eq!(filter.map(|f| f.skus.len()), Ok(2));
        let refused = body(&["SKU-1", "SKU-1"]).into_filter();
        assert_eq!(refused.map_err(|e| e.field), Err("filter.skus".to_string()));
    }
}
