//! Bodies of the transfer commands and the transfer they answer with.
//!
//! The schemas' bounds come from the domain's constants, as in [`super::super::docs`], so
//! the document says what the domain enforces.

use serde::{Deserialize, Serialize};
use stockflow_domain::{
    CreateTransfer, Date, LocationId, MAX_LINE_QTY, ReceiveLine, ReceiveTransfer, Sku, Transfer,
    TransferId, TransferLineRequest, ValidationError,
};
use utoipa::ToSchema;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{
    AdditionalProperties, AnyOfBuilder, Array, ArrayBuilder, KnownFormat, Object, ObjectBuilder,
    Schema, SchemaFormat, Type,
};

use super::super::docs;
use super::rfc3339;

/// Lines one transfer may hold (the domain's rule).
const MAX_TRANSFER_LINES: usize = stockflow_domain::limits::MAX_TRANSFER_LINES;

/// A transfer's id.
pub(crate) fn transfer_id() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some("1-64 characters of A-Z a-z 0-9 . _ : -"))
        .pattern(Some(stockflow_domain::ID_PATTERN))
        .min_length(Some(1))
        .max_length(Some(stockflow_domain::MAX_ID_LEN))
        .examples(["tr-1"])
        .build()
}

fn transfer_lines() -> Array {
    docs::list_of(
        "TransferLineBody",
        MAX_TRANSFER_LINES,
        "1-100 lines, each SKU at most once (a repeat is refused with 422 duplicate_line)",
    )
}

fn units_from(min: i64, description: &str) -> Object {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
        .description(Some(description))
        .minimum(Some(min))
        .maximum(Some(MAX_LINE_QTY))
        .build()
}

/// One line of a receipt: units in good condition, damaged units, or both, never none.
/// Stated as the `anyOf` of "some good" and "some damaged", so the schema refuses an empty
/// line as the domain does.
fn receive_line() -> Schema {
    let variant = |title: &str, good_min: i64, damaged_min: i64, needs: &str| {
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .title(Some(title))
            .property("sku", docs::sku())
            .property(
                "received",
                units_from(
                    good_min,
                    "Units arrived in good condition (they become available); default 0",
                ),
            )
            .property(
                "damaged",
                units_from(
                    damaged_min,
                    "Units arrived damaged (they land in the damaged state); default 0",
                ),
            )
            .required("sku")
            .required(needs)
            .additional_properties(Some(AdditionalProperties::FreeForm(false)))
            .build()
    };
    Schema::AnyOf(
        AnyOfBuilder::new()
            .description(Some(
                "Units of one SKU arrived: at least one, good or damaged",
            ))
            .item(variant("some good", 1, 0, "received"))
            .item(variant("some damaged", 0, 1, "damaged"))
            .build(),
    )
}

/// A receipt: lines that arrived, or a close without lines (or both).
fn receive_request() -> Schema {
    let lines = |min: usize| {
        ArrayBuilder::new()
            .description(Some(
                "What arrived: each SKU at most once (a repeat is refused with 422 duplicate_line)",
            ))
            .items(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
                "ReceiveLineBody",
            )))
            .min_items(Some(min))
            .max_items(Some(MAX_TRANSFER_LINES))
            .build()
    };
    let close = |values: Option<Vec<bool>>| {
        ObjectBuilder::new()
            .schema_type(Type::Boolean)
            .description(Some(
                "Close the transfer after this receipt: what is still outstanding is recorded as missing (transfer_discrepancy)",
            ))
            .enum_values(values)
            .build()
    };
    let variant = |title: &str, min: usize, values: Option<Vec<bool>>, needs: &str| {
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .title(Some(title))
            .property("lines", lines(min))
            .property("close", close(values))
            .required(needs)
            .additional_properties(Some(AdditionalProperties::FreeForm(false)))
            .build()
    };
    Schema::AnyOf(
        AnyOfBuilder::new()
            .description(Some(
                "Units of a shipped transfer arrived at its destination, and/or its close",
            ))
            .item(variant("receipt", 1, None, "lines"))
            .item(variant("close", 0, Some(vec![true]), "close"))
            .build(),
    )
}

/// One SKU of a transfer as asked.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TransferLineBody {
    /// SKU.
    #[schema(schema_with = docs::sku)]
    pub sku: String,
    /// Units to send, 1-1,000,000.
    #[schema(schema_with = docs::quantity)]
    pub qty: i64,
}

/// `POST /v1/transfers`: a transfer from one location to another. Nothing moves until it
/// ships.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TransferRequest {
    /// Client-chosen id.
    #[schema(schema_with = transfer_id)]
    pub transfer_id: String,
    /// Where the units leave from (a store's token: one of its locations).
    #[schema(schema_with = docs::location)]
    pub from: String,
    /// Where they go (another location).
    #[schema(schema_with = docs::location)]
    pub to: String,
    /// The SKUs.
    #[schema(schema_with = transfer_lines)]
    pub lines: Vec<TransferLineBody>,
    /// The day the destination expects them: its `incoming` by date once shipped.
    #[schema(schema_with = docs::date)]
    pub expected_arrival: String,
    /// External reference.
    #[schema(schema_with = docs::reference)]
    pub reference: Option<String>,
}

fn prefixed(i: usize, e: ValidationError) -> ValidationError {
    ValidationError {
        field: format!("lines[{i}].{}", e.field),
        ..e
    }
}

impl TransferRequest {
    /// Validates into a domain command.
    pub fn into_command(self) -> Result<CreateTransfer, ValidationError> {
        let lines = self
            .lines
            .into_iter()
            .enumerate()
            .map(|(i, l)| {
                Ok(TransferLineRequest {
                    sku: Sku::parse(l.sku).map_err(|e| prefixed(i, e))?,
                    qty: l.qty,
                })
            })
            .collect::<Result<Vec<_>, ValidationError>>()?;
        CreateTransfer::new(
            TransferId::parse(self.transfer_id)?,
            LocationId::parse(self.from)?,
            LocationId::parse(self.to)?,
            lines,
            Date::parse("expected_arrival", &self.expected_arrival)?,
            self.reference,
        )
    }
}

/// Units of one SKU arrived. Documented by [`receive_line`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReceiveLineBody {
    /// SKU.
    pub sku: String,
    /// Units arrived in good condition.
    #[serde(default)]
    pub received: i64,
    /// Units arrived damaged.
    #[serde(default)]
    pub damaged: i64,
}

impl utoipa::PartialSchema for ReceiveLineBody {
    fn schema() -> RefOr<Schema> {
        receive_line().into()
    }
}

impl ToSchema for ReceiveLineBody {}

/// `POST /v1/transfers/{id}/receive`: (some of) a shipped transfer arrived. Receipts may
/// come in parts; the transfer closes when every shipped unit is accounted for, or when
/// `close` says nothing more will come (what never arrived is then recorded as a
/// `transfer_discrepancy` movement of its own). Documented by [`receive_request`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReceiveTransferRequest {
    /// What arrived.
    #[serde(default)]
    pub lines: Vec<ReceiveLineBody>,
    /// Close the transfer after this receipt: what is still outstanding is missing.
    #[serde(default)]
    pub close: bool,
}

impl utoipa::PartialSchema for ReceiveTransferRequest {
    fn schema() -> RefOr<Schema> {
        receive_request().into()
    }
}

impl ToSchema for ReceiveTransferRequest {}

impl ReceiveTransferRequest {
    /// Validates into a domain command for transfer `id`.
    pub fn into_command(self, id: TransferId) -> Result<ReceiveTransfer, ValidationError> {
        let lines = self
            .lines
            .into_iter()
            .enumerate()
            .map(|(i, l)| {
                Ok(ReceiveLine {
                    sku: Sku::parse(l.sku).map_err(|e| prefixed(i, e))?,
                    qty: l.received,
                    damaged: l.damaged,
                })
            })
            .collect::<Result<Vec<_>, ValidationError>>()?;
        ReceiveTransfer::new(id, lines, self.close)
    }
}

/// One SKU of a transfer and where its units are.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct TransferLineResponse {
    /// SKU.
    pub sku: String,
    /// Units asked for (and shipped, once shipped).
    pub qty: i64,
    /// Units received in good condition.
    pub received: i64,
    /// Units received damaged.
    pub damaged: i64,
    /// Units that never arrived (known at the close).
    pub missing: i64,
    /// Units shipped and not yet accounted for (in transit once shipped).
    pub outstanding: i64,
}

/// A transfer.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct TransferResponse {
    /// Id.
    pub transfer_id: String,
    /// Where the units leave from.
    pub from: String,
    /// Where they go.
    pub to: String,
    /// `created`, `in_transit`, `received` or `cancelled`.
    pub status: String,
    /// The day the destination expects them (YYYY-MM-DD).
    pub expected_arrival: String,
    /// External reference.
    pub reference: Option<String>,
    /// Receipts recorded so far.
    pub receipts: u32,
    /// Creation time (RFC 3339).
    pub created_at: String,
    /// Last change (RFC 3339).
    pub updated_at: String,
    /// Its SKUs.
    pub lines: Vec<TransferLineResponse>,
}

impl From<Transfer> for TransferResponse {
    fn from(t: Transfer) -> Self {
        Self {
            transfer_id: t.id.to_string(),
            from: t.from.to_string(),
            to: t.to.to_string(),
            status: t.status.as_str().to_string(),
            expected_arrival: t.expected_arrival.to_string(),
            reference: t.reference,
            receipts: t.receipts,
            created_at: rfc3339(t.created_at_ms),
            updated_at: rfc3339(t.updated_at_ms),
            lines: t
                .lines
                .into_iter()
                .map(|l| TransferLineResponse {
                    outstanding: l.outstanding(),
                    sku: l.sku.to_string(),
                    qty: l.qty,
                    received: l.received,
                    damaged: l.damaged,
                    missing: l.missing,
                })
                .collect(),
        }
    }
}
