//! The schemas of the OpenAPI document that derive cannot state: every bound comes from the
//! constant the validation uses (the domain's, or this module's for the API-only rules), so
//! the document says exactly what the server enforces. schemathesis checks the two agree
//! (`scripts/api-contract.sh`).

use serde::Deserialize;
use stockflow_domain::{ID_PATTERN, MAX_ID_LEN, MAX_LINE_QTY, MAX_ON_HAND, MAX_VERSION};
use utoipa::IntoParams;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{
    AdditionalProperties, ArrayBuilder, KnownFormat, Object, ObjectBuilder, OneOfBuilder, Schema,
    SchemaFormat, SchemaType, Type,
};

/// Longest display name (locations, SKUs), in characters.
pub(crate) const MAX_NAME_CHARS: usize = 200;
/// Longest free-text reference, in characters (the domain's rule).
pub(crate) const MAX_REFERENCE_CHARS: usize = 128;
/// Attributes one SKU may carry.
pub(crate) const MAX_ATTRIBUTES: usize = 50;
/// Longest attribute name, in characters.
pub(crate) const MAX_ATTRIBUTE_NAME_CHARS: usize = 64;
/// Longest attribute value, in characters.
pub(crate) const MAX_ATTRIBUTE_VALUE_CHARS: usize = 500;
/// Longest search text, in characters.
pub(crate) const MAX_QUERY_CHARS: usize = 200;

/// No C0 or C1 control character anywhere (Rust's `char::is_control`).
const NO_CONTROLS: &str = "^[^\\x00-\\x1F\\x7F-\\x9F]*$";
/// No control character, and at least one character that is neither a control nor a space.
const NOT_BLANK: &str =
    "^[^\\x00-\\x1F\\x7F-\\x9F]*[^\\x00-\\x20\\x7F-\\x9F][^\\x00-\\x1F\\x7F-\\x9F]*$";

/// Whether `text` is a display name: what [`name`] documents.
pub(crate) fn is_display_name(text: &str) -> bool {
    let chars = text.chars().count();
    (1..=MAX_NAME_CHARS).contains(&chars)
        && !text.chars().any(char::is_control)
        && text.chars().any(|c| c != ' ')
}

fn string(description: &str) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(description))
}

fn integer(description: &str, minimum: i64, maximum: i64) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
        .description(Some(description))
        .minimum(Some(minimum))
        .maximum(Some(maximum))
}

fn nullable(schema: ObjectBuilder) -> ObjectBuilder {
    schema.schema_type(SchemaType::from_iter([Type::String, Type::Null]))
}

/// An integer that may be null or absent.
pub(crate) fn nullable_integer(description: &str, minimum: i64, maximum: i64) -> ObjectBuilder {
    integer(description, minimum, maximum)
        .schema_type(SchemaType::from_iter([Type::Integer, Type::Null]))
}

fn id_builder(description: &str, example: &str) -> ObjectBuilder {
    string(description)
        .pattern(Some(ID_PATTERN))
        .min_length(Some(1))
        .max_length(Some(MAX_ID_LEN))
        .examples([example])
}

const ID_RULE: &str = "1-64 characters of A-Z a-z 0-9 . _ : -";

/// A SKU. The examples name what `scripts/api-contract.sh` seeds, so examples reach the
/// success paths.
pub(crate) fn sku() -> Object {
    id_builder(ID_RULE, "SKU-1").build()
}

/// A location.
pub(crate) fn location() -> Object {
    id_builder(ID_RULE, "store-1").build()
}

/// A region.
pub(crate) fn region() -> Object {
    id_builder(ID_RULE, "north").build()
}

/// A region, or none.
pub(crate) fn optional_region() -> Object {
    nullable(id_builder(ID_RULE, "north")).build()
}

/// A sales channel.
pub(crate) fn channel() -> Object {
    id_builder(ID_RULE, "web").build()
}

/// A sales channel, or none.
pub(crate) fn optional_channel() -> Object {
    nullable(id_builder(ID_RULE, "web")).build()
}

/// A reservation id.
pub(crate) fn reservation_id() -> Object {
    id_builder(ID_RULE, "cart-1").build()
}

/// A webhook subscription id.
pub(crate) fn subscription_id() -> Object {
    id_builder(ID_RULE, "sub_0123456789abcdef0123456789abcdef").build()
}

/// An import id.
pub(crate) fn import_id() -> Object {
    id_builder(ID_RULE, "0123456789abcdef0123456789abcdef").build()
}

/// An `Idempotency-Key`.
pub(crate) fn idempotency_key() -> Object {
    // No example: one fixed key on every operation would make every example after the
    // first a 422 idempotency_key_reused.
    string(ID_RULE)
        .pattern(Some(ID_PATTERN))
        .min_length(Some(1))
        .max_length(Some(MAX_ID_LEN))
        .build()
}

/// An optional client-chosen reservation id.
pub(crate) fn optional_reservation_id() -> Object {
    nullable(id_builder(
        "1-64 characters of A-Z a-z 0-9 . _ : -; generated when absent",
        "cart-1",
    ))
    .build()
}

/// A display name.
pub(crate) fn name() -> Object {
    string("1-200 characters, no control characters, not only spaces")
        .pattern(Some(NOT_BLANK))
        .min_length(Some(1))
        .max_length(Some(MAX_NAME_CHARS))
        .build()
}

/// An optional external reference.
pub(crate) fn reference() -> Object {
    nullable(string(
        "External reference (order, cart, ASN, ticket): 1-128 characters, no control characters",
    ))
    .pattern(Some(NO_CONTROLS))
    .min_length(Some(1))
    .max_length(Some(MAX_REFERENCE_CHARS))
    .build()
}

/// A SKU's searchable attributes.
pub(crate) fn attributes() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .description(Some(
            "Searchable attributes such as brand, colour, size: at most 50, names of 1-64 characters, values of at most 500",
        ))
        .max_properties(Some(MAX_ATTRIBUTES))
        .property_names(Some(
            string("attribute name")
                .min_length(Some(1))
                .max_length(Some(MAX_ATTRIBUTE_NAME_CHARS))
                .build(),
        ))
        .additional_properties(Some(AdditionalProperties::RefOr(RefOr::T(Schema::Object(
            string("attribute value")
                .max_length(Some(MAX_ATTRIBUTE_VALUE_CHARS))
                .build(),
        )))))
        .build()
}

/// Units of one reservation line.
pub(crate) fn quantity() -> Object {
    integer("Units, 1-1,000,000", 1, MAX_LINE_QTY).build()
}

/// `POST /v1/moves`: one variant per source state, so `to` is never `from` (a move to
/// where the units already are is refused with 400).
pub(crate) fn move_request() -> Schema {
    let mut variants = OneOfBuilder::new().description(Some(
        "Units between quantity states of one key: from a state to another state, or gone (a write-off: on-hand drops)",
    ));
    for from in stockflow_domain::State::ALL {
        let mut targets: Vec<&str> = stockflow_domain::State::ALL
            .iter()
            .filter(|s| **s != from)
            .map(|s| s.as_str())
            .collect();
        targets.push("gone");
        let variant = ObjectBuilder::new()
            .schema_type(Type::Object)
            .title(Some(from.as_str()))
            .property("sku", sku())
            .property("location", location())
            .property(
                "from",
                string("The state the units leave").enum_values(Some([from.as_str()])),
            )
            .property(
                "to",
                string("Where the units go: another state, or gone").enum_values(Some(targets)),
            )
            .property("qty", quantity())
            .property("reason", reason())
            .property("reference", reference())
            .required("sku")
            .required("location")
            .required("from")
            .required("to")
            .required("qty")
            .required("reason")
            .additional_properties(Some(AdditionalProperties::FreeForm(false)));
        variants = variants.item(variant.build());
    }
    Schema::OneOf(variants.build())
}

/// Why units moved or on-hand changed.
pub(crate) fn reason() -> Object {
    string("Why")
        .enum_values(Some(
            stockflow_domain::AdjustReason::ALL.map(stockflow_domain::AdjustReason::as_str),
        ))
        .build()
}

/// `POST /v1/policies`: one variant per oversell mode, so a backorder always names its
/// limit and no other mode takes one.
pub(crate) fn policy_request() -> Schema {
    let base = |title: &str| {
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .title(Some(title))
            .property("sku", sku())
            .property("location", optional_location())
            .property("low_stock_threshold", low_stock_threshold())
            .property("expected_version", expected_version())
            .property("reference", reference())
            .required("sku")
            .additional_properties(Some(AdditionalProperties::FreeForm(false)))
    };
    let mode = |modes: &[&str]| {
        string("deny (refuse what stock cannot cover), backorder (accept down to -backorder_limit) or track_only (never refuse)")
            .enum_values(Some(modes.to_vec()))
            .build()
    };
    let backorder = base("backorder")
        .property("oversell", mode(&["backorder"]))
        .property(
            "backorder_limit",
            integer(
                "How far below zero available may go, 1-1,000,000",
                1,
                MAX_LINE_QTY,
            ),
        )
        .required("oversell")
        .required("backorder_limit");
    let other = base("deny or track_only")
        .property("oversell", mode(&["deny", "track_only"]))
        .required("oversell");
    let threshold_only = base("threshold only");
    Schema::OneOf(
        OneOfBuilder::new()
            .description(Some(
                "A SKU's oversell policy and low-stock threshold, or (with location) a location's override",
            ))
            .item(backorder.build())
            .item(other.build())
            .item(threshold_only.build())
            .build(),
    )
}

/// A low-stock threshold.
pub(crate) fn low_stock_threshold() -> Object {
    nullable_integer(
        "Emit low_stock when what channels see drops to this or below",
        0,
        MAX_ON_HAND,
    )
    .build()
}

/// An optional optimistic-concurrency guard.
pub(crate) fn expected_version() -> Object {
    nullable_integer(
        "Apply only if the record is at this version; otherwise 409",
        0,
        max_version(),
    )
    .build()
}

/// An optional location.
pub(crate) fn optional_location() -> Object {
    nullable(id_builder(
        "The location whose override to set; absent: the SKU's own policy (not from a store's token)",
        "store-1",
    ))
    .build()
}

/// A purchase order's id.
pub(crate) fn purchase_order() -> Object {
    id_builder("Purchase order", "po-1").build()
}

/// A purchase-order line number.
pub(crate) fn po_line() -> Object {
    integer(
        "Line of the purchase order, 1 or more",
        1,
        i64::from(u32::MAX),
    )
    .build()
}

/// A calendar day.
pub(crate) fn date() -> Object {
    string("The day units are expected (YYYY-MM-DD, 2000-9999)")
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Date)))
        .pattern(Some(
            "^[2-9][0-9]{3}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$",
        ))
        .examples(["2026-12-12"])
        .build()
}

/// Seconds a reservation is held.
pub(crate) fn ttl_seconds() -> Object {
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Integer, Type::Null]))
        .description(Some(
            "Seconds until the hold expires, 1-86,400; when absent, the region's reservation TTL (--reservation-ttl-seconds, default 900)",
        ))
        .minimum(Some(1))
        .maximum(Some(i64::try_from(stockflow_domain::MAX_TTL_SECONDS).unwrap_or(i64::MAX)))
        .examples([900])
        .build()
}

/// An array of 1-`max` items of the named component schema `items`.
pub(crate) fn list_of(
    items: &str,
    max: usize,
    description: &str,
) -> utoipa::openapi::schema::Array {
    ArrayBuilder::new()
        .description(Some(description))
        .items(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(items)))
        .min_items(Some(1))
        .max_items(Some(max))
        .build()
}

/// The lines of a reservation.
pub(crate) fn lines() -> utoipa::openapi::schema::Array {
    list_of(
        "LineBody",
        stockflow_domain::MAX_LINES,
        "1-100 lines, reserved all or nothing; each (sku, location) at most once (a repeat is refused with 422 duplicate_line)",
    )
}

fn max_version() -> i64 {
    i64::try_from(MAX_VERSION).unwrap_or(i64::MAX)
}

/// `POST /v1/adjustments`: a delta or a counted on-hand, never both.
pub(crate) fn adjustment() -> Schema {
    let delta = OneOfBuilder::new()
        .description(Some(
            "Units to add (negative to remove), 1-1,000,000 either way",
        ))
        .item(integer("Units to remove", -MAX_LINE_QTY, -1).build())
        .item(integer("Units to add", 1, MAX_LINE_QTY).build())
        .build();
    let set_on_hand = integer(
        "Counted on-hand to set, 0-1,000,000,000,000",
        0,
        MAX_ON_HAND,
    )
    .build();
    Schema::OneOf(
        OneOfBuilder::new()
            .description(Some(
                "Exactly one of `delta` (units to add or remove) and `set_on_hand` (a counted value)",
            ))
            .item(
                adjustment_mode("delta", Schema::OneOf(delta))
                    .property(
                        "purchase_order_line",
                        RefOr::Ref(utoipa::openapi::Ref::from_schema_name("PurchaseOrderLine")),
                    )
                    .build(),
            )
            .item(
                adjustment_mode("set_on_hand", Schema::Object(set_on_hand))
                    .property(
                        "expected_on_hand",
                        ObjectBuilder::new()
                            .schema_type(SchemaType::from_iter([Type::Integer, Type::Null]))
                            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
                            .description(Some(
                                "The on-hand the count started from: apply only if on-hand is still this; otherwise 409 on_hand_conflict naming the current value",
                            ))
                            .minimum(Some(0))
                            .maximum(Some(MAX_ON_HAND))
                            .build(),
                    )
                    .build(),
            )
            .build(),
    )
}

/// One way of adjusting: the shared fields and `mode`, nothing else.
fn adjustment_mode(mode: &str, change: Schema) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .title(Some(mode))
        .property("sku", sku())
        .property("location", location())
        .property(mode, change)
        .property(
            "reason",
            string("Why on-hand changed")
                .enum_values(Some(
                    stockflow_domain::AdjustReason::ALL.map(stockflow_domain::AdjustReason::as_str),
                ))
                .build(),
        )
        .property("reference", reference())
        .property(
            "mode",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(["check", "record"]))
                .description(Some(
                    "check (default): refused when it conflicts or oversells. record: a fact that already happened (a sale at a till), applied even below zero with a stock_oversold event; only a store's token (one carrying a locations claim), at its own locations, may record (otherwise 403 record_mode_forbidden)",
                ))
                .build(),
        )
        .property(
            "expected_version",
            ObjectBuilder::new()
                .schema_type(SchemaType::from_iter([Type::Integer, Type::Null]))
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
                .description(Some(
                    "Apply only if the key is at this version; otherwise 409 version_conflict",
                ))
                .minimum(Some(0))
                .maximum(Some(max_version()))
                .build(),
        )
        .required("sku")
        .required("location")
        .required(mode)
        .required("reason")
        .additional_properties(Some(AdditionalProperties::FreeForm(false)))
}

/// The `Idempotency-Key` header of every command.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Header)]
pub(crate) struct IdempotencyKeyHeader {
    /// Described (and marked required) by `openapi::required_parameters`.
    #[serde(rename = "Idempotency-Key")]
    #[param(schema_with = idempotency_key)]
    #[allow(dead_code)]
    idempotency_key: String,
}

/// `{sku}` in a path.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub(crate) struct SkuPath {
    /// SKU.
    #[param(schema_with = sku)]
    pub sku: String,
}

/// `{location}` in a path.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub(crate) struct LocationPath {
    /// Location.
    #[param(schema_with = location)]
    pub location: String,
}

/// `{sku}/{location}` in a path.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub(crate) struct SkuLocationPath {
    /// SKU.
    #[param(schema_with = sku)]
    pub sku: String,
    /// Location.
    #[param(schema_with = location)]
    pub location: String,
}

/// `{id}` of a reservation in a path.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub(crate) struct ReservationPath {
    /// Reservation id.
    #[param(schema_with = reservation_id)]
    pub id: String,
}

/// `{id}` of a dead letter in a path.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub(crate) struct DeadLetterPath {
    /// Dead-letter id, as listed by `GET /admin/dead-letters`.
    pub id: i64,
}
