//! Bodies of the commands: adjustments and reservations, and the answers they get.

use serde::{Deserialize, Serialize};
use stockflow_domain::{
    Adjust, AdjustReason, ChannelId, LocationId, Mode, Move, OnHandChange, Oversell, PoLine,
    PurchaseOrderId, Reservation, ReservationId, Reserve, ReserveLine, SetPolicy, Settings, Sku,
    SkuPolicy, State, StockKey, StockLevel, Target, ValidationError,
};
use utoipa::ToSchema;

use super::super::docs;
use super::incoming::PurchaseOrderLine;
use super::rfc3339;

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
    /// With `set_on_hand` only: apply only if on-hand is still this (the count the clerk
    /// started from); otherwise 409 `on_hand_conflict` naming the current value.
    pub expected_on_hand: Option<i64>,
    /// `check` (the default) or `record` (a fact: a store's token only).
    pub mode: Option<String>,
    /// The purchase-order line a receipt receives (reason `receipt`, a positive delta).
    pub purchase_order_line: Option<PurchaseOrderLine>,
}

impl utoipa::PartialSchema for AdjustmentRequest {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        docs::adjustment().into()
    }
}

impl ToSchema for AdjustmentRequest {}

fn parse_reason(reason: &str) -> Result<AdjustReason, ValidationError> {
    AdjustReason::parse(reason).ok_or_else(|| {
        let names: Vec<&str> = AdjustReason::ALL.iter().map(|r| r.as_str()).collect();
        ValidationError::new("reason", format!("must be one of {}", names.join(", ")))
    })
}

fn parse_mode(mode: Option<&str>) -> Result<Mode, ValidationError> {
    match mode {
        None | Some("check") => Ok(Mode::Check),
        Some("record") => Ok(Mode::Record),
        Some(_) => Err(ValidationError::new("mode", "must be check or record")),
    }
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
        let mut adjust = Adjust::new(
            StockKey::new(Sku::parse(self.sku)?, LocationId::parse(self.location)?),
            change,
            parse_reason(&self.reason)?,
            self.reference,
            self.expected_version,
        )?;
        if let Some(expected) = self.expected_on_hand {
            adjust = adjust.expecting_on_hand(expected)?;
        }
        if parse_mode(self.mode.as_deref())? == Mode::Record {
            adjust = adjust.recorded();
        }
        if let Some(po) = self.purchase_order_line {
            adjust = adjust.receiving(PoLine {
                purchase_order: PurchaseOrderId::parse(po.purchase_order)?,
                line: po.line,
            })?;
        }
        Ok(adjust)
    }
}

/// `POST /v1/moves`: units between states of one key. Documented as one variant per
/// source state ([`docs::move_request`]).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MoveRequest {
    /// SKU.
    pub sku: String,
    /// Location.
    pub location: String,
    /// The state the units leave.
    pub from: String,
    /// Where they go: a state, or `gone`.
    pub to: String,
    /// Units, 1-1,000,000.
    pub qty: i64,
    /// Why.
    pub reason: String,
    /// External reference.
    pub reference: Option<String>,
}

impl utoipa::PartialSchema for MoveRequest {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        docs::move_request().into()
    }
}

impl ToSchema for MoveRequest {}

impl MoveRequest {
    /// Validates into a domain command.
    pub fn into_command(self) -> Result<Move, ValidationError> {
        let from = State::parse(&self.from).ok_or_else(|| {
            ValidationError::new(
                "from",
                "must be available, damaged, quality_hold or safety_stock",
            )
        })?;
        let to = Target::parse(&self.to).ok_or_else(|| {
            ValidationError::new(
                "to",
                "must be available, damaged, quality_hold, safety_stock or gone",
            )
        })?;
        Move::new(
            StockKey::new(Sku::parse(self.sku)?, LocationId::parse(self.location)?),
            from,
            to,
            self.qty,
            parse_reason(&self.reason)?,
            self.reference,
        )
    }
}

/// `POST /v1/policies`: a SKU's oversell policy and low-stock threshold, or a location's
/// override of them. Each change is versioned and audited. Documented as one variant per
/// mode ([`docs::policy_request`]).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PolicyRequest {
    /// SKU.
    pub sku: String,
    /// The location whose override to set; absent: the SKU's own policy.
    pub location: Option<String>,
    /// `deny`, `backorder` or `track_only`.
    pub oversell: Option<String>,
    /// With `backorder`: how far below zero available may go.
    pub backorder_limit: Option<i64>,
    /// Emit `low_stock` at or below this.
    pub low_stock_threshold: Option<i64>,
    /// Apply only at this version (the SKU policy's, or the key's for a location).
    pub expected_version: Option<u64>,
    /// External reference.
    pub reference: Option<String>,
}

impl utoipa::PartialSchema for PolicyRequest {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        docs::policy_request().into()
    }
}

impl ToSchema for PolicyRequest {}

impl PolicyRequest {
    /// Validates into a domain command.
    pub fn into_command(self) -> Result<SetPolicy, ValidationError> {
        let oversell = match self.oversell.as_deref() {
            Some(mode) => Some(Oversell::parse(mode, self.backorder_limit)?),
            None if self.backorder_limit.is_some() => {
                return Err(ValidationError::new(
                    "backorder_limit",
                    "only the backorder mode takes a limit",
                ));
            }
            None => None,
        };
        let location = self.location.map(LocationId::parse).transpose()?;
        SetPolicy::new(
            Sku::parse(self.sku)?,
            location,
            Settings::new(oversell, self.low_stock_threshold)?,
            self.expected_version,
            self.reference,
        )
    }
}

/// A SKU's own policy after a change.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct PolicyResponse {
    /// SKU.
    pub sku: String,
    /// The location of an override; absent for the SKU's own policy.
    pub location: Option<String>,
    /// `deny`, `backorder` or `track_only`; absent: deny.
    pub oversell: Option<String>,
    /// With `backorder`: how far below zero available may go.
    pub backorder_limit: Option<i64>,
    /// The low-stock threshold.
    pub low_stock_threshold: Option<i64>,
    /// The SKU policy's version, or the key's for an override (+1 per change).
    pub version: u64,
}

impl PolicyResponse {
    /// A location's override as its key holds it.
    pub fn of_location(level: &StockLevel) -> Self {
        let settings = level.extras.policy;
        Self {
            sku: level.sku.to_string(),
            location: Some(level.location.to_string()),
            oversell: settings.oversell.map(|o| o.as_str().to_string()),
            backorder_limit: settings.oversell.and_then(Oversell::limit),
            low_stock_threshold: settings.low_stock_threshold,
            version: level.version,
        }
    }
}

impl From<SkuPolicy> for PolicyResponse {
    fn from(p: SkuPolicy) -> Self {
        Self {
            location: None,
            sku: p.sku.to_string(),
            oversell: p.settings.oversell.map(|o| o.as_str().to_string()),
            backorder_limit: p.settings.oversell.and_then(Oversell::limit),
            low_stock_threshold: p.settings.low_stock_threshold,
            version: p.version,
        }
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
    /// Broken units (on hand, never sold).
    pub damaged: i64,
    /// Units held for inspection.
    pub quality_hold: i64,
    /// Units kept back from channels.
    pub safety_stock: i64,
    /// What channels are offered: on-hand minus every other state, never below zero.
    pub available: i64,
    /// Units short beyond backorders after a recorded fact took more than there was
    /// (0 when nothing is oversold).
    pub shortfall: i64,
    /// Reservation units accepted beyond stock under a backorder policy.
    pub backordered: i64,
    /// Per-key version, +1 per applied change.
    pub version: u64,
    /// Each channel with an allocation or a hold here.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub channels: Vec<super::ChannelShareBody>,
}

impl From<StockLevel> for StockLevelResponse {
    fn from(l: StockLevel) -> Self {
        let q = l.quantities();
        Self {
            channels: l.channel_shares().into_iter().map(Into::into).collect(),
            available: q.channel_available(),
            shortfall: l.shortfall(),
            backordered: l.backordered(),
            damaged: q.damaged,
            quality_hold: q.quality_hold,
            safety_stock: q.safety_stock,
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
    /// The sales channel it holds stock for: every line's location must be one of the
    /// channel's, and the channel's allocations bind each line.
    #[schema(schema_with = docs::optional_channel)]
    pub channel: Option<String>,
}

impl ReservationRequest {
    /// The channel it names, if any.
    pub fn channel(&self) -> Result<Option<ChannelId>, ValidationError> {
        self.channel
            .clone()
            .map(ChannelId::parse)
            .transpose()
            .map_err(|e| ValidationError {
                field: "channel".into(),
                ..e
            })
    }

    /// Validates into a domain command; `generated` is used when no id was given, and
    /// `default_ttl_seconds` when no TTL was.
    pub fn into_command(
        self,
        generated: impl FnOnce() -> String,
        default_ttl_seconds: u64,
    ) -> Result<Reserve, ValidationError> {
        let channel = self.channel()?;
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
        Ok(Reserve::new(id, lines, ttl, self.reference)?.for_channel(channel))
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
    /// The sales channel it holds stock for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
}

impl From<Reservation> for ReservationResponse {
    fn from(r: Reservation) -> Self {
        Self {
            channel: r.channel().map(ToString::to_string),
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
