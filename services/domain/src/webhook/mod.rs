//! Webhook subscriptions: what a subscriber asks for (a URL, event types, a filter), the
//! rules that decide which events it gets, and — in the submodules — how a failing
//! delivery is retried ([`retry`]) and how a delivery is signed ([`signature`]).
//!
//! Deliveries follow the Standard Webhooks spec. Everything here is pure: the worker that
//! delivers passes the time and the randomness in, so every rule is testable without a
//! clock or a network.

pub mod retry;
pub mod signature;

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::cloudevent::EventType;
use crate::event::BusEvent;
use crate::validation::ValidationError;

pub use retry::{AfterFailure, RetryPolicy};
pub use signature::{Secret, SignatureError, sign};

/// The longest URL a subscription may name: longer ones are almost always mistakes, and
/// every stored subscription is read on every delivery round.
pub const MAX_URL_LEN: usize = 2048;
/// The most values one filter list may hold.
pub const MAX_FILTER_VALUES: usize = 100;

/// Whether a subscription's deliveries run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubscriptionState {
    /// Deliveries run.
    Enabled,
    /// Deliveries stopped after persistent failure (see [`RetryPolicy::should_disable`]);
    /// `POST .../enable` starts them again from where they stopped.
    Disabled,
}

impl SubscriptionState {
    /// The state's name in storage and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            SubscriptionState::Enabled => "enabled",
            SubscriptionState::Disabled => "disabled",
        }
    }

    /// The state named `text`.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "enabled" => Some(Self::Enabled),
            "disabled" => Some(Self::Disabled),
            _ => None,
        }
    }
}

/// The CloudEvents type of the record kept when a subscription is disabled.
pub const SUBSCRIPTION_DISABLED_TYPE: &str = "dev.stockflow.subscription.disabled.v1";

/// Which events a subscription receives besides their type. An empty list does not
/// restrict; a non-empty one requires the event to carry a value in it. SKU-wide events
/// (catalog, SKU policy) carry no location or region, so a location or region filter
/// excludes them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Filter {
    /// SKUs.
    #[serde(default)]
    pub skus: BTreeSet<String>,
    /// Locations.
    #[serde(default)]
    pub locations: BTreeSet<String>,
    /// Regions.
    #[serde(default)]
    pub regions: BTreeSet<String>,
}

impl Filter {
    /// Whether `event` passes the filter.
    pub fn matches(&self, event: &BusEvent) -> bool {
        let (location, region) = match event {
            BusEvent::Stock(e) => (Some(e.location.as_str()), Some(e.region.as_str())),
            BusEvent::Catalog(_) | BusEvent::Policy(_) => (None, None),
        };
        let pass = |set: &BTreeSet<String>, value: Option<&str>| {
            set.is_empty() || value.is_some_and(|v| set.contains(v))
        };
        pass(&self.skus, Some(event.key().as_str()))
            && pass(&self.locations, location)
            && pass(&self.regions, region)
    }
}

/// What a subscriber asks for, validated: an http(s) URL, at least one known event type,
/// a filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionSpec {
    /// Where deliveries are POSTed.
    pub url: String,
    /// The event types delivered.
    pub types: Vec<EventType>,
    /// Which events of those types.
    pub filter: Filter,
}

impl SubscriptionSpec {
    /// Validates a request: `url` must be an absolute http or https URL with a host,
    /// `types` must name known CloudEvents types (at least one, no repeats), and each filter
    /// list must hold valid identifiers.
    pub fn parse(url: &str, types: &[String], filter: Filter) -> Result<Self, ValidationError> {
        validate_url(url)?;
        if types.is_empty() {
            return Err(ValidationError::new(
                "types",
                "name at least one event type",
            ));
        }
        let mut parsed = Vec::with_capacity(types.len());
        for text in types {
            let t = EventType::parse(text).ok_or_else(|| {
                ValidationError::new(
                    "types",
                    format!("{text} is not a known event type (see /asyncapi.json)"),
                )
            })?;
            if parsed.contains(&t) {
                return Err(ValidationError::duplicate(
                    "types",
                    format!("{text} is listed twice"),
                ));
            }
            parsed.push(t);
        }
        for (field, set) in [
            ("filter.skus", &filter.skus),
            ("filter.locations", &filter.locations),
            ("filter.regions", &filter.regions),
        ] {
            if set.len() > MAX_FILTER_VALUES {
                return Err(ValidationError::new(
                    field,
                    format!("at most {MAX_FILTER_VALUES} values"),
                ));
            }
            for value in set {
                crate::ids::validate_id(field, value)?;
            }
        }
        Ok(Self {
            url: url.to_string(),
            types: parsed,
            filter,
        })
    }

    /// Whether the subscription receives `event`: its type is listed and it passes the
    /// filter.
    pub fn wants(&self, event: &BusEvent) -> bool {
        self.types.contains(&event.event_type()) && self.filter.matches(event)
    }
}

fn validate_url(url: &str) -> Result<(), ValidationError> {
    let bad = |message: &str| Err(ValidationError::new("url", message));
    if url.len() > MAX_URL_LEN {
        return bad("at most 2048 characters");
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return bad("must not contain whitespace or control characters");
    }
    let lower = url.to_ascii_lowercase();
    let rest = match (
        lower.strip_prefix("http://"),
        lower.strip_prefix("https://"),
    ) {
        (Some(rest), _) | (_, Some(rest)) => rest,
        _ => return bad("must be an absolute http:// or https:// URL"),
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    // The host is what follows any user info; a port may follow it.
    let host_port = authority.rsplit('@').next().unwrap_or_default();
    let host = if host_port.starts_with('[') {
        host_port
            .split(']')
            .next()
            .unwrap_or_default()
            .trim_start_matches('[')
    } else {
        host_port.split(':').next().unwrap_or_default()
    };
    if host.is_empty() {
        return bad("must name a host");
    }
    Ok(())
}

/// The `webhook-id` of the delivery of `event_id` to `subscription_id`: the same on every
/// attempt and every replay, so a receiver deduplicates on it (Standard Webhooks), and
/// different per subscription, so two subscriptions of one receiver do not collide.
pub fn webhook_id(subscription_id: &str, event_id: &str) -> String {
    let digest = signature::sha256(format!("{subscription_id}\n{event_id}").as_bytes());
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("msg_{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventKind;

    fn spec(types: &[&str], filter: Filter) -> Result<SubscriptionSpec, ValidationError> {
        let types: Vec<String> = types.iter().map(|t| t.to_string()).collect();
        SubscriptionSpec::parse("https://hooks.example.com/in", &types, filter)
    }

    fn event(sku: &str, location: &str, region: &str) -> BusEvent {
        let json = serde_json::json!({
            "stream": "stock", "event_id": format!("{sku}/{location}/1"), "type": "stock_adjusted",
            "region": region, "sku": sku, "location": location, "version": 1,
            "on_hand": 3, "reserved": 0, "reservation_id": null, "reason": null,
            "reference": null, "idempotency_key": null, "occurred_at_ms": 1_764_000_000_000_i64,
        });
        serde_json::from_value(json).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn urls_must_be_http_or_https_with_a_host() {
        for good in [
            "http://127.0.0.1:9000/hook",
            "https://hooks.example.com",
            "HTTPS://Example.com/a?b=c",
            "http://[::1]:8080/x",
        ] {
            assert!(validate_url(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "ftp://example.com",
            "example.com/hook",
            "http://",
            "http:///path",
            "https://exa mple.com",
            "javascript:alert(1)",
        ] {
            assert!(validate_url(bad).is_err(), "{bad}");
        }
        assert!(validate_url(&format!("https://e.com/{}", "a".repeat(MAX_URL_LEN))).is_err());
    }

    #[test]
    fn types_must_be_known_and_listed_once() {
        assert!(spec(&["dev.stockflow.stock.adjusted.v1"], Filter::default()).is_ok());
        assert_eq!(
            spec(&[], Filter::default()).map_err(|e| e.field),
            Err("types".into())
        );
        assert!(spec(&["dev.stockflow.stock.adjusted.v9"], Filter::default()).is_err());
        assert!(
            spec(
                &[
                    "dev.stockflow.stock.adjusted.v1",
                    "dev.stockflow.stock.adjusted.v1"
                ],
                Filter::default()
            )
            .is_err()
        );
        let bad_filter = Filter {
            skus: ["no spaces allowed".to_string()].into(),
            ..Filter::default()
        };
        assert_eq!(
            spec(&["dev.stockflow.stock.adjusted.v1"], bad_filter).map_err(|e| e.field),
            Err("filter.skus".into())
        );
    }

    #[test]
    fn the_filter_restricts_only_on_what_it_names() {
        let e = event("SKU-1", "store-7", "north");
        assert!(Filter::default().matches(&e));
        let by = |skus: &[&str], locations: &[&str], regions: &[&str]| Filter {
            skus: skus.iter().map(|s| s.to_string()).collect(),
            locations: locations.iter().map(|s| s.to_string()).collect(),
            regions: regions.iter().map(|s| s.to_string()).collect(),
        };
        assert!(by(&["SKU-1", "SKU-2"], &[], &[]).matches(&e));
        assert!(!by(&["SKU-2"], &[], &[]).matches(&e));
        assert!(by(&[], &["store-7"], &["north"]).matches(&e));
        assert!(!by(&[], &["store-7"], &["south"]).matches(&e));
        assert!(!by(&[], &["dc"], &[]).matches(&e));
        let s = spec(
            &["dev.stockflow.stock.adjusted.v1"],
            by(&["SKU-1"], &[], &[]),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(s.wants(&e));
        let s = spec(&["dev.stockflow.stock.moved.v1"], Filter::default())
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(!s.wants(&e));
        assert_eq!(e.event_type(), EventType::Stock(EventKind::StockAdjusted));
    }

    #[test]
    fn webhook_ids_are_stable_per_subscription_and_event() {
        let a = webhook_id("sub_1", "SKU-1/dc/3");
        assert_eq!(a, webhook_id("sub_1", "SKU-1/dc/3"));
        assert_ne!(a, webhook_id("sub_2", "SKU-1/dc/3"));
        assert_ne!(a, webhook_id("sub_1", "SKU-1/dc/4"));
        assert!(a.starts_with("msg_") && a.len() == 36, "{a}");
    }
}
