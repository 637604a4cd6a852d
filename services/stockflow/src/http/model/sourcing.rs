//! Bodies of sales channels, region-level reservations and pickup availability, and their
//! conversion to the domain's sourcing types.

use serde::{Deserialize, Serialize};
use stockflow_domain::sourcing::{Demand, Part, Strategy};
use stockflow_domain::{
    Channel, ChannelId, ChannelLocation, MAX_LINE_QTY, MAX_LINES, Region, ReservationId, Sku,
    ValidationError,
};
use utoipa::ToSchema;
use utoipa::openapi::schema::{Array, KnownFormat, Object, ObjectBuilder, SchemaFormat, Type};

use super::super::docs;
use super::ReservationResponse;

/// How a channel's region-level lines are sourced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum StrategyName {
    /// The channel's order: the first location with stock gives what it has, then the next.
    Priority,
    /// One location for the whole order if any can fill it, else as few as possible.
    FewestSplits,
    /// The location holding the most of each SKU first.
    MostStock,
}

impl From<StrategyName> for Strategy {
    fn from(name: StrategyName) -> Self {
        match name {
            StrategyName::Priority => Strategy::Priority,
            StrategyName::FewestSplits => Strategy::FewestSplits,
            StrategyName::MostStock => Strategy::MostStock,
        }
    }
}

impl From<Strategy> for StrategyName {
    fn from(strategy: Strategy) -> Self {
        match strategy {
            Strategy::Priority => StrategyName::Priority,
            Strategy::FewestSplits => StrategyName::FewestSplits,
            Strategy::MostStock => StrategyName::MostStock,
        }
    }
}

fn units(description: &str, minimum: i64) -> Object {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
        .description(Some(description))
        .minimum(Some(minimum))
        .maximum(Some(MAX_LINE_QTY))
        .build()
}

fn pickup_threshold() -> Object {
    units(
        "Units the store keeps for its own counter: pickup is offered only above this (default 0)",
        0,
    )
}

fn channel_locations() -> Array {
    docs::list_of(
        "ChannelLocationBody",
        stockflow_domain::sourcing::MAX_CHANNEL_LOCATIONS,
        "1-256 locations that fulfil the channel, highest priority first; each at most once (a repeat is refused with 422 duplicate_line)",
    )
}

fn demand_lines() -> Array {
    docs::list_of(
        "SourcedLineBody",
        MAX_LINES,
        "1-100 lines, reserved all or nothing; each SKU at most once (a repeat is refused with 422 duplicate_line)",
    )
}

/// One location of a channel.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ChannelLocationBody {
    /// The location.
    #[schema(schema_with = docs::location)]
    pub location: String,
    /// Units kept back from pickup.
    #[serde(default)]
    #[schema(schema_with = pickup_threshold)]
    pub pickup_threshold: i64,
}

/// `PUT /v1/channels/{channel}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ChannelRequest {
    /// Locations by priority.
    #[schema(schema_with = channel_locations)]
    pub locations: Vec<ChannelLocationBody>,
    /// How region-level lines are sourced (default `priority`).
    pub strategy: Option<StrategyName>,
    /// False: a region-level order comes from one location or not at all (default true).
    pub allow_split: Option<bool>,
}

impl ChannelRequest {
    /// Validates into the domain's channel.
    pub fn into_channel(self, id: ChannelId) -> Result<Channel, ValidationError> {
        let locations = self
            .locations
            .into_iter()
            .enumerate()
            .map(|(i, l)| {
                Ok(ChannelLocation {
                    location: stockflow_domain::LocationId::parse(l.location).map_err(|e| {
                        ValidationError {
                            field: format!("locations[{i}].location"),
                            ..e
                        }
                    })?,
                    pickup_threshold: l.pickup_threshold,
                })
            })
            .collect::<Result<Vec<_>, ValidationError>>()?;
        Channel::new(
            id,
            locations,
            self.strategy.map_or(Strategy::Priority, Strategy::from),
            self.allow_split.unwrap_or(true),
        )
    }
}

/// A sales channel.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ChannelResponse {
    /// The channel.
    pub channel: String,
    /// Locations by priority.
    pub locations: Vec<ChannelLocationBody>,
    /// How region-level lines are sourced.
    pub strategy: StrategyName,
    /// Whether an order may come from more than one location.
    pub allow_split: bool,
    /// Revision, one up per change.
    pub version: u64,
}

impl From<Channel> for ChannelResponse {
    fn from(c: Channel) -> Self {
        Self {
            channel: c.id.to_string(),
            locations: c
                .locations
                .into_iter()
                .map(|l| ChannelLocationBody {
                    location: l.location.to_string(),
                    pickup_threshold: l.pickup_threshold,
                })
                .collect(),
            strategy: c.strategy.into(),
            allow_split: c.allow_split,
            version: c.version,
        }
    }
}

/// One region-level line: units of a SKU, from locations the platform chooses.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SourcedLineBody {
    /// SKU.
    #[schema(schema_with = docs::sku)]
    pub sku: String,
    /// Units, 1–1,000,000.
    #[schema(schema_with = docs::quantity)]
    pub qty: i64,
}

/// `POST /v1/reservations/sourced`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SourcedReservationRequest {
    /// Client-chosen id; generated when absent.
    #[schema(schema_with = docs::optional_reservation_id)]
    pub reservation_id: Option<String>,
    /// The sales channel: its locations, by priority, are the candidates, and its strategy
    /// and split rule apply. At least one of `channel` and `region` is required.
    #[schema(schema_with = docs::optional_channel)]
    pub channel: Option<String>,
    /// Only locations of this region (every location of it holding the SKU, when no
    /// channel is named).
    #[schema(schema_with = docs::optional_region)]
    pub region: Option<String>,
    /// Lines.
    #[schema(schema_with = demand_lines)]
    pub lines: Vec<SourcedLineBody>,
    /// Overrides the channel's strategy (default without a channel: `fewest_splits`).
    pub strategy: Option<StrategyName>,
    /// Overrides the channel's split rule (default without a channel: true).
    pub allow_split: Option<bool>,
    /// Seconds until the hold expires, 1–86,400; when absent, the region's reservation TTL.
    #[schema(schema_with = docs::ttl_seconds)]
    pub ttl_seconds: Option<u64>,
    /// External reference (order, cart).
    #[schema(schema_with = docs::reference)]
    pub reference: Option<String>,
}

/// A validated region-level reservation request.
pub(crate) struct SourcedRequest {
    pub id: Option<ReservationId>,
    pub channel: Option<ChannelId>,
    pub region: Option<Region>,
    pub demands: Vec<Demand>,
    pub strategy: Option<Strategy>,
    pub allow_split: Option<bool>,
    pub ttl_seconds: Option<u64>,
    pub reference: Option<String>,
}

impl SourcedReservationRequest {
    /// Validates the fields the reservation itself does not (it validates the rest once
    /// its lines are planned).
    pub fn validate(self) -> Result<SourcedRequest, ValidationError> {
        if self.channel.is_none() && self.region.is_none() {
            return Err(ValidationError::conflict(
                "channel",
                "name a channel, a region, or both: they say where the lines may be sourced",
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        let demands = self
            .lines
            .into_iter()
            .enumerate()
            .map(|(i, l)| {
                let sku = Sku::parse(l.sku).map_err(|e| ValidationError {
                    field: format!("lines[{i}].sku"),
                    ..e
                })?;
                if !seen.insert(sku.clone()) {
                    return Err(ValidationError::duplicate(
                        format!("lines[{i}]"),
                        format!("duplicate line for sku {sku}; merge the quantities"),
                    ));
                }
                if !(1..=MAX_LINE_QTY).contains(&l.qty) {
                    return Err(ValidationError::new(
                        format!("lines[{i}].qty"),
                        format!("must be between 1 and {MAX_LINE_QTY}"),
                    ));
                }
                Ok(Demand { sku, qty: l.qty })
            })
            .collect::<Result<Vec<_>, ValidationError>>()?;
        if demands.is_empty() || demands.len() > MAX_LINES {
            return Err(ValidationError::new(
                "lines",
                format!("must hold 1-{MAX_LINES} lines, got {}", demands.len()),
            ));
        }
        Ok(SourcedRequest {
            id: self.reservation_id.map(ReservationId::parse).transpose()?,
            channel: self.channel.map(ChannelId::parse).transpose()?,
            region: self.region.map(Region::parse).transpose()?,
            demands,
            strategy: self.strategy.map(Strategy::from),
            allow_split: self.allow_split,
            ttl_seconds: self.ttl_seconds,
            reference: self.reference,
        })
    }
}

/// Where one part of a line was sourced, and why.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct SourcedPartBody {
    /// SKU.
    pub sku: String,
    /// The location chosen.
    pub location: String,
    /// Units taken there.
    pub qty: i64,
    /// The strategy step that chose it: `priority`, `whole_order`, `fewest_splits`,
    /// `most_stock` or `most_stock_whole_order`.
    pub step: String,
    /// Why, in a sentence.
    pub reason: String,
}

impl From<Part> for SourcedPartBody {
    fn from(p: Part) -> Self {
        Self {
            sku: p.sku.to_string(),
            location: p.location.to_string(),
            qty: p.qty,
            step: p.step.name().to_string(),
            reason: p.step.explain(),
        }
    }
}

/// A region-level reservation: the reservation made, and how its lines were sourced.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct SourcedReservationResponse {
    /// The reservation, as `GET /v1/reservations/{id}` shows it.
    pub reservation: ReservationResponse,
    /// The plan, part by part; absent on a replayed answer (the reservation is the record).
    pub sourcing: Option<Vec<SourcedPartBody>>,
    /// Plans made: more than one when a concurrent checkout took planned stock first.
    pub attempts: u32,
}

/// A store that can hand a SKU over now.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct PickupStore {
    /// The store.
    pub location: String,
    /// Its region.
    pub region: String,
    /// Units available there.
    pub available: i64,
    /// Units it keeps back from pickup.
    pub pickup_threshold: i64,
}

/// `GET /v1/pickup/{sku}`: the stores that can hand the SKU over now.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct PickupResponse {
    /// SKU.
    pub sku: String,
    /// Stores with available above their pickup threshold, by channel priority (or most
    /// available first without a channel).
    pub stores: Vec<PickupStore>,
}

/// One location's share of a channel's availability.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ChannelLocationAvailability {
    /// The location.
    pub location: String,
    /// Units available there.
    pub available: i64,
}

/// `GET /v1/channels/{channel}/availability/{sku}`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ChannelAvailabilityResponse {
    /// SKU.
    pub sku: String,
    /// The channel.
    pub channel: String,
    /// What the channel may sell: the sum over its locations.
    pub total_available: i64,
    /// Per location, by channel priority.
    pub locations: Vec<ChannelLocationAvailability>,
}
