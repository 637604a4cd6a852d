//! Validated identifiers, and the stock key made of two of them.
//!
//! Every id that crosses the API boundary is 1–64 characters of `[A-Za-z0-9._:-]`: safe in
//! URLs, log lines, CQL keys and Fluvio record keys without escaping.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::validation::ValidationError;

/// Longest identifier accepted anywhere.
pub const MAX_ID_LEN: usize = 64;

/// The characters of an identifier as a regular expression (ECMA-262, for the API's
/// schema); lengths are stated apart (1 to [`MAX_ID_LEN`]). `validate_id` checks the same.
pub const ID_PATTERN: &str = "^[A-Za-z0-9._:-]+$";

pub(crate) fn validate_id(kind: &'static str, value: &str) -> Result<(), ValidationError> {
    if value.is_empty() || value.len() > MAX_ID_LEN {
        return Err(ValidationError::new(
            kind,
            format!("must be 1-{MAX_ID_LEN} characters, got {}", value.len()),
        ));
    }
    if let Some(bad) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-')))
    {
        return Err(ValidationError::new(
            kind,
            format!("may only contain A-Z a-z 0-9 . _ : - (found {bad:?})"),
        ));
    }
    Ok(())
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $field:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Validates and wraps `value`.
            pub fn parse(value: impl Into<String>) -> Result<Self, ValidationError> {
                let value = value.into();
                validate_id($field, &value)?;
                Ok(Self(value))
            }

            /// The identifier as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        // Written by hand: the derive would describe the `String` it converts through,
        // without the rule `parse` enforces.
        impl schemars::JsonSchema for $name {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }

            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!({
                    "type": "string",
                    "pattern": ID_PATTERN,
                    "minLength": 1,
                    "maxLength": MAX_ID_LEN,
                })
            }
        }

        impl TryFrom<String> for $name {
            type Error = ValidationError;
            fn try_from(value: String) -> Result<Self, Self::Error> {
                Self::parse(value)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

id_type!(
    /// A stock-keeping unit.
    Sku,
    "sku"
);
id_type!(
    /// A store or warehouse.
    LocationId,
    "location"
);
id_type!(
    /// A reservation, chosen by the client or generated.
    ReservationId,
    "reservation_id"
);
id_type!(
    /// The client's `Idempotency-Key`.
    IdempotencyKey,
    "Idempotency-Key"
);
id_type!(
    /// A region that groups locations.
    Region,
    "region"
);
id_type!(
    /// A transfer of stock between two locations, chosen by the client.
    TransferId,
    "transfer_id"
);
id_type!(
    /// A store, whose agent forwards its tills' commands (a token's `store_id` claim).
    StoreId,
    "store_id"
);
id_type!(
    /// A sales channel (web, marketplace, a store's counter) and the locations it sells from.
    ChannelId,
    "channel"
);
id_type!(
    /// A purchase order whose lines are expected at a location.
    PurchaseOrderId,
    "purchase_order"
);

/// The key of a stock aggregate: one SKU at one location; also its storage partition.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct StockKey {
    /// The SKU.
    pub sku: Sku,
    /// The location.
    pub location: LocationId,
}

impl StockKey {
    /// The key of `sku` at `location`.
    pub fn new(sku: Sku, location: LocationId) -> Self {
        Self { sku, location }
    }
}

impl fmt::Display for StockKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.sku, self.location)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_alphabet() {
        assert!(Sku::parse("SKU-1_a.b:c").is_ok());
        assert!(Sku::parse("x".repeat(64)).is_ok());
    }

    #[test]
    fn rejects_empty_long_and_foreign_characters() {
        assert!(Sku::parse("").is_err());
        assert!(Sku::parse("x".repeat(65)).is_err());
        assert!(Sku::parse("a b").is_err());
        assert!(Sku::parse("a/b").is_err());
        assert!(Sku::parse("é").is_err());
    }

    #[test]
    fn deserialization_validates() {
        assert!(serde_json::from_str::<Sku>("\"ok\"").is_ok());
        assert!(serde_json::from_str::<Sku>("\"not ok\"").is_err());
    }
}
