//! The JSON shapes of the HTTP API, and their conversion to and from the domain.
//!
//! Request types refuse unknown fields; ids arrive as strings and are validated by the
//! domain types, so every message names the offending field.

use std::collections::BTreeMap;
use std::time::{Duration, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use stockflow_domain::{
    Adjust, AdjustReason, LocationId, LocationKind, OnHandChange, Region, Reservation,
    ReservationId, Reserve, ReserveLine, Sku, StockKey, StockLevel, ValidationError,
};
use stockflow_storage::ports::{InventoryRow, Movement, RegionAvailability, SearchHit};
use utoipa::ToSchema;

use super::docs;

/// RFC 3339 text of a Unix-millisecond timestamp.
pub(crate) fn rfc3339(ms: i64) -> String {
    let ms = u64::try_from(ms).unwrap_or(0);
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// `PUT /v1/locations/{location}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct LocationRequest {
    /// Region the location belongs to; fixed once set.
    #[schema(schema_with = docs::region)]
    pub region: String,
    /// `store` or `warehouse`.
    #[schema(schema_with = location_kind)]
    pub kind: String,
    /// Display name.
    #[schema(schema_with = docs::name)]
    pub name: String,
}

fn location_kind() -> utoipa::openapi::schema::Object {
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .enum_values(Some(["store", "warehouse"]))
        .build()
}

/// A location.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct LocationResponse {
    /// Location id.
    pub location: String,
    /// Region.
    pub region: String,
    /// `store` or `warehouse`.
    pub kind: String,
    /// Display name.
    pub name: String,
}

impl LocationRequest {
    /// Validates into a domain location.
    pub fn into_location(
        self,
        id: LocationId,
    ) -> Result<stockflow_domain::Location, ValidationError> {
        let kind = LocationKind::parse(&self.kind)
            .ok_or_else(|| ValidationError::new("kind", "must be \"store\" or \"warehouse\""))?;
        Ok(stockflow_domain::Location {
            id,
            region: Region::parse(self.region)?,
            kind,
            name: display_name(self.name)?,
        })
    }
}

fn display_name(name: String) -> Result<String, ValidationError> {
    if !docs::is_display_name(&name) {
        return Err(ValidationError::new(
            "name",
            "must be 1-200 characters without control characters, not only spaces",
        ));
    }
    Ok(name)
}

/// `PUT /v1/skus/{sku}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SkuRequest {
    /// Display name, searchable.
    #[schema(schema_with = docs::name)]
    pub name: String,
    /// Searchable attributes such as brand, colour, size.
    #[serde(default)]
    #[schema(schema_with = docs::attributes)]
    pub attributes: BTreeMap<String, String>,
}

impl SkuRequest {
    /// Validates name and attributes.
    pub fn validate(self) -> Result<(String, BTreeMap<String, String>), ValidationError> {
        let name = display_name(self.name)?;
        if self.attributes.len() > docs::MAX_ATTRIBUTES {
            return Err(ValidationError::new("attributes", "at most 50 attributes"));
        }
        for (k, v) in &self.attributes {
            let name = k.chars().count();
            if !(1..=docs::MAX_ATTRIBUTE_NAME_CHARS).contains(&name)
                || v.chars().count() > docs::MAX_ATTRIBUTE_VALUE_CHARS
            {
                return Err(ValidationError::new(
                    format!("attributes.{k}"),
                    "names are 1-64 characters, values at most 500 characters",
                ));
            }
        }
        Ok((name, self.attributes))
    }
}

/// A SKU's catalog entry.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct SkuResponse {
    /// SKU.
    pub sku: String,
    /// Display name.
    pub name: String,
    /// Attributes.
    pub attributes: BTreeMap<String, String>,
    /// Catalog revision.
    pub version: u64,
}

/// `POST /v1/adjustments`: exactly one of `delta` and `set_on_hand`. Parsed as one struct,
/// so a body giving both or neither gets a message naming them; documented as the `oneOf`
/// of the two modes ([`docs::adjustment`]).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AdjustmentRequest {
    /// SKU.
    pub sku: String,
    /// Location.
    pub location: String,
    /// Units to add (negative to remove), 1–1,000,000 either way.
    pub delta: Option<i64>,
    /// Counted on-hand to set.
    pub set_on_hand: Option<i64>,
    /// One of [`AdjustReason::ALL`], as the API spells them.
    pub reason: String,
    /// External reference (ASN, ticket).
    pub reference: Option<String>,
    /// Apply only if the key is at this version; otherwise 409 `version_conflict`.
    pub expected_version: Option<u64>,
}

impl utoipa::PartialSchema for AdjustmentRequest {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        docs::adjustment().into()
    }
}

impl ToSchema for AdjustmentRequest {}

fn parse_reason(reason: &str) -> Result<AdjustReason, ValidationError> {
    AdjustReason::parse(reason).ok_or_else(|| {
        ValidationError::new(
            "reason",
            "must be one of receipt, cycle_count, damage, correction, return",
        )
    })
}

impl AdjustmentRequest {
    /// Validates into a domain command.
    pub fn into_command(self) -> Result<Adjust, ValidationError> {
        let change = match (self.delta, self.set_on_hand) {
            (Some(d), None) => OnHandChange::Delta(d),
            (None, Some(n)) => OnHandChange::SetOnHand(n),
            _ => {
                return Err(ValidationError::new(
                    "delta",
                    "give exactly one of \"delta\" and \"set_on_hand\"",
                ));
            }
        };
        Adjust::new(
            StockKey::new(Sku::parse(self.sku)?, LocationId::parse(self.location)?),
            change,
            parse_reason(&self.reason)?,
            self.reference,
            self.expected_version,
        )
    }
}

/// The quantities of one `(sku, location)` after a change.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct StockLevelResponse {
    /// SKU.
    pub sku: String,
    /// Location.
    pub location: String,
    /// Units on hand.
    pub on_hand: i64,
    /// Units held by active reservations.
    pub reserved: i64,
    /// `on_hand - reserved`.
    pub available: i64,
    /// Per-key version, +1 per applied change.
    pub version: u64,
}

impl From<StockLevel> for StockLevelResponse {
    fn from(l: StockLevel) -> Self {
        Self {
            available: l.available(),
            sku: l.sku.to_string(),
            location: l.location.to_string(),
            on_hand: l.on_hand,
            reserved: l.reserved,
            version: l.version,
        }
    }
}

/// One line of a reservation.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct LineBody {
    /// SKU.
    #[schema(schema_with = docs::sku)]
    pub sku: String,
    /// Location.
    #[schema(schema_with = docs::location)]
    pub location: String,
    /// Units, 1–1,000,000.
    #[schema(schema_with = docs::quantity)]
    pub qty: i64,
}

/// `POST /v1/reservations`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReservationRequest {
    /// Client-chosen id; generated when absent.
    #[schema(schema_with = docs::optional_reservation_id)]
    pub reservation_id: Option<String>,
    /// 1–100 distinct `(sku, location)` lines, reserved all or nothing.
    #[schema(schema_with = docs::lines)]
    pub lines: Vec<LineBody>,
    /// Seconds until the hold expires, 1–86,400; when absent, the region's reservation TTL
    /// (`--reservation-ttl-seconds`, default 900).
    #[schema(schema_with = docs::ttl_seconds)]
    pub ttl_seconds: Option<u64>,
    /// External reference (order, cart).
    #[schema(schema_with = docs::reference)]
    pub reference: Option<String>,
}

impl ReservationRequest {
    /// Validates into a domain command; `generated` is used when no id was given, and
    /// `default_ttl_seconds` when no TTL was.
    pub fn into_command(
        self,
        generated: impl FnOnce() -> String,
        default_ttl_seconds: u64,
    ) -> Result<Reserve, ValidationError> {
        let id = ReservationId::parse(self.reservation_id.unwrap_or_else(generated))?;
        let lines = self
            .lines
            .into_iter()
            .enumerate()
            .map(|(i, l)| {
                Ok(ReserveLine {
                    sku: Sku::parse(l.sku).map_err(|e| prefix(i, e))?,
                    location: LocationId::parse(l.location).map_err(|e| prefix(i, e))?,
                    qty: l.qty,
                })
            })
            .collect::<Result<Vec<_>, ValidationError>>()?;
        let ttl = self.ttl_seconds.unwrap_or(default_ttl_seconds);
        Reserve::new(id, lines, ttl, self.reference)
    }
}

fn prefix(i: usize, e: ValidationError) -> ValidationError {
    ValidationError {
        field: format!("lines[{i}].{}", e.field),
        ..e
    }
}

/// A reservation.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ReservationResponse {
    /// Id.
    pub reservation_id: String,
    /// `active`, `confirmed`, `released` or `expired`.
    pub status: String,
    /// When an active reservation expires (RFC 3339).
    pub expires_at: String,
    /// Creation time (RFC 3339).
    pub created_at: String,
    /// Last status change (RFC 3339).
    pub updated_at: String,
    /// External reference.
    pub reference: Option<String>,
    /// Held lines.
    pub lines: Vec<LineBody>,
}

impl From<Reservation> for ReservationResponse {
    fn from(r: Reservation) -> Self {
        Self {
            reservation_id: r.id.to_string(),
            status: r.status.as_str().to_string(),
            expires_at: rfc3339(r.expires_at_ms),
            created_at: rfc3339(r.created_at_ms),
            updated_at: rfc3339(r.updated_at_ms),
            reference: r.reference,
            lines: r
                .lines
                .into_iter()
                .map(|l| LineBody {
                    sku: l.sku.to_string(),
                    location: l.location.to_string(),
                    qty: l.qty,
                })
                .collect(),
        }
    }
}

/// One location's stock in the read model.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct LocationStock {
    /// SKU.
    pub sku: String,
    /// Location.
    pub location: String,
    /// Region of the location.
    pub region: String,
    /// On hand.
    pub on_hand: i64,
    /// Reserved.
    pub reserved: i64,
    /// Available.
    pub available: i64,
    /// The write-side version reflected.
    pub version: u64,
    /// When that change happened (RFC 3339).
    pub as_of: String,
}

impl From<InventoryRow> for LocationStock {
    fn from(r: InventoryRow) -> Self {
        Self {
            sku: r.sku,
            location: r.location,
            region: r.region,
            on_hand: r.on_hand,
            reserved: r.reserved,
            available: r.available,
            version: r.version,
            as_of: rfc3339(r.as_of_ms),
        }
    }
}

/// `GET /v1/stock/{sku}`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct SkuStockResponse {
    /// SKU.
    pub sku: String,
    /// Every location with a stock row.
    pub locations: Vec<LocationStock>,
    /// Sum of available over the locations.
    pub total_available: i64,
    /// Newest change reflected (RFC 3339), absent when there is no row.
    pub as_of: Option<String>,
}

/// One region's availability.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct RegionAvailabilityBody {
    /// Region.
    pub region: String,
    /// On hand summed over the region's locations.
    pub on_hand: i64,
    /// Reserved, summed.
    pub reserved: i64,
    /// Available, summed.
    pub available: i64,
    /// Locations with a stock row.
    pub locations: u64,
    /// Newest change reflected (RFC 3339).
    pub as_of: String,
}

impl From<RegionAvailability> for RegionAvailabilityBody {
    fn from(r: RegionAvailability) -> Self {
        Self {
            region: r.region,
            on_hand: r.on_hand,
            reserved: r.reserved,
            available: r.available,
            locations: r.locations,
            as_of: rfc3339(r.as_of_ms),
        }
    }
}

/// `GET /v1/availability/{sku}`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct AvailabilityResponse {
    /// SKU.
    pub sku: String,
    /// Per region.
    pub regions: Vec<RegionAvailabilityBody>,
    /// Sum over the listed regions.
    pub total_available: i64,
}

/// Who asked for a change.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ActorBody {
    /// The token's subject (a client certificate's common name with mutual TLS alone;
    /// `anonymous` without authentication).
    pub subject: String,
    /// The OAuth2 client the token was issued to.
    pub client_id: Option<String>,
}

/// One change of a key.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct MovementBody {
    /// The key's version after the change.
    pub version: u64,
    /// `stock_adjusted`, `stock_reserved`, `reservation_confirmed`, `reservation_released`
    /// or `reservation_expired`.
    pub kind: String,
    /// On hand after the change.
    pub on_hand: i64,
    /// Reserved after the change.
    pub reserved: i64,
    /// The reservation involved.
    pub reservation_id: Option<String>,
    /// Why on-hand changed (adjustments).
    pub reason: Option<String>,
    /// The command's external reference.
    pub reference: Option<String>,
    /// Who asked; absent for expiry.
    pub actor: Option<ActorBody>,
    /// The Idempotency-Key the client sent.
    pub idempotency_key: Option<String>,
    /// When (RFC 3339).
    pub occurred_at: String,
    /// Where the read models read the event from the bus and which projector replica
    /// applied it, when (its latest projection); absent for a replayed dead letter.
    pub projection: Option<ProjectionBody>,
}

/// The bus record a movement was projected from.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ProjectionBody {
    /// Partition of the region's topic.
    pub partition: u32,
    /// Offset of the record in it.
    pub offset: u64,
    /// When the read models applied it (RFC 3339).
    pub projected_at: String,
    /// The projector replica (pod name, pid and start).
    pub projected_by: String,
}

impl From<Movement> for MovementBody {
    fn from(m: Movement) -> Self {
        Self {
            version: m.version,
            kind: m.kind,
            on_hand: m.on_hand,
            reserved: m.reserved,
            reservation_id: m.reservation_id,
            reason: m.reason,
            reference: m.reference,
            actor: m.actor.map(|a| ActorBody {
                subject: a.subject,
                client_id: a.client_id,
            }),
            idempotency_key: m.idempotency_key,
            occurred_at: rfc3339(m.occurred_at_ms),
            projection: m.projection.map(|p| ProjectionBody {
                partition: p.partition,
                offset: p.offset,
                projected_at: rfc3339(p.projected_at_ms),
                projected_by: p.projected_by,
            }),
        }
    }
}

/// `GET /v1/movements`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct MovementsResponse {
    /// SKU.
    pub sku: String,
    /// Location.
    pub location: String,
    /// Oldest first.
    pub movements: Vec<MovementBody>,
    /// Pass as `after` for the next page; absent on the last one.
    pub next_after: Option<u64>,
}

/// One search hit.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct SearchHitBody {
    /// SKU.
    pub sku: String,
    /// Display name.
    pub name: String,
    /// Attributes.
    pub attributes: BTreeMap<String, String>,
    /// Available units (in the region, if one was given).
    pub available: i64,
}

impl From<SearchHit> for SearchHitBody {
    fn from(h: SearchHit) -> Self {
        Self {
            sku: h.sku,
            name: h.name,
            attributes: h.attributes,
            available: h.available,
        }
    }
}

/// `GET /v1/search`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct SearchResponse {
    /// The query text.
    pub query: String,
    /// Hits, best first.
    pub hits: Vec<SearchHitBody>,
}
