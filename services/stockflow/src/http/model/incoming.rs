//! The purchase-order shapes: lines expected at a location (`POST /v1/incoming`), closed
//! (`/close`), and the line a receipt names.

use serde::Deserialize;
use stockflow_domain::{
    CloseIncoming, Date, ExpectIncoming, LocationId, PoLine, PurchaseOrderId, Sku, StockKey,
    ValidationError,
};
use utoipa::ToSchema;

use super::super::docs;

/// The purchase-order line a receipt receives (reason `receipt` and a positive delta only,
/// otherwise 422): the units leave that line's incoming, a line received in full closes,
/// the rest stays expected until closed. 404 `incoming_not_found` when the line is not
/// open there.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PurchaseOrderLine {
    /// Purchase order.
    #[schema(schema_with = docs::purchase_order)]
    pub purchase_order: String,
    /// Its line.
    #[schema(schema_with = docs::po_line)]
    pub line: u32,
}

/// `POST /v1/incoming`: a purchase-order line expected at a location on a day (sent
/// again, it revises the line).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct IncomingRequest {
    /// SKU.
    #[schema(schema_with = docs::sku)]
    pub sku: String,
    /// Location expecting the units.
    #[schema(schema_with = docs::location)]
    pub location: String,
    /// Purchase order.
    #[schema(schema_with = docs::purchase_order)]
    pub purchase_order: String,
    /// Its line.
    #[schema(schema_with = docs::po_line)]
    pub line: u32,
    /// Units expected, 1-1,000,000.
    #[schema(schema_with = docs::quantity)]
    pub qty: i64,
    /// The day they are expected.
    #[schema(schema_with = docs::date)]
    pub expected_date: String,
    /// External reference.
    #[schema(schema_with = docs::reference)]
    pub reference: Option<String>,
}

impl IncomingRequest {
    /// Validates into a domain command.
    pub fn into_command(self) -> Result<ExpectIncoming, ValidationError> {
        ExpectIncoming::new(
            StockKey::new(Sku::parse(self.sku)?, LocationId::parse(self.location)?),
            PoLine {
                purchase_order: PurchaseOrderId::parse(self.purchase_order)?,
                line: self.line,
            },
            self.qty,
            Date::parse("expected_date", &self.expected_date)?,
            self.reference,
        )
    }
}

/// `POST /v1/incoming/close`: a purchase-order line closed (what was not received stops
/// being expected).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CloseIncomingRequest {
    /// SKU.
    #[schema(schema_with = docs::sku)]
    pub sku: String,
    /// Location.
    #[schema(schema_with = docs::location)]
    pub location: String,
    /// Purchase order.
    #[schema(schema_with = docs::purchase_order)]
    pub purchase_order: String,
    /// Its line.
    #[schema(schema_with = docs::po_line)]
    pub line: u32,
    /// External reference.
    #[schema(schema_with = docs::reference)]
    pub reference: Option<String>,
}

impl CloseIncomingRequest {
    /// Validates into a domain command.
    pub fn into_command(self) -> Result<CloseIncoming, ValidationError> {
        CloseIncoming::new(
            StockKey::new(Sku::parse(self.sku)?, LocationId::parse(self.location)?),
            PoLine {
                purchase_order: PurchaseOrderId::parse(self.purchase_order)?,
                line: self.line,
            },
            self.reference,
        )
    }
}
