//! One line of an import file: what it asks for, parsed with the same request types and
//! the same strict JSON as the HTTP API, so a row means exactly what the call it stands for
//! would.
//!
//! ```text
//! {"type":"location","location":"store-1","region":"north","kind":"store","name":"Store 1"}
//! {"type":"sku","sku":"MUG","name":"Mug","attributes":{"colour":"blue"}}
//! {"type":"count","sku":"MUG","location":"store-1","on_hand":40}
//! {"type":"adjustment","sku":"MUG","location":"store-1","delta":5,"reason":"receipt"}
//! ```
//!
//! Any row may name its own `idempotency_key`; without one, the key derives from the
//! file's digest and the row number, so uploading the same file again applies nothing
//! twice.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use stockflow_domain::{Adjust, IdempotencyKey, Location, LocationId, Sku, ValidationError};

use crate::error::ApiError;
use crate::http::model::{AdjustmentRequest, LocationRequest, SkuRequest};

/// The longest row, in bytes.
pub const MAX_ROW_BYTES: usize = 16 * 1024;

/// What one row does.
#[derive(Debug)]
pub enum Action {
    /// `PUT /v1/locations/{location}`.
    Location(Location),
    /// `PUT /v1/skus/{sku}`.
    Sku {
        /// The SKU.
        sku: Sku,
        /// Its name.
        name: String,
        /// Its attributes.
        attributes: std::collections::BTreeMap<String, String>,
    },
    /// `POST /v1/adjustments` (a count is an adjustment that sets on-hand).
    Adjust(Adjust),
}

/// A parsed row: the action, and what makes re-running it harmless.
#[derive(Debug)]
pub struct Row {
    /// What it does.
    pub action: Action,
    /// The key it runs under (stock rows; catalog upserts are idempotent by value).
    pub key: IdempotencyKey,
    /// The request's fingerprint: the same key with another row is refused.
    pub fingerprint: String,
    /// The `(sku, location)` it changes, `None` for catalog rows: rows of one key run in
    /// file order, rows of different keys may run side by side.
    pub stock_key: Option<(String, String)>,
}

/// Parses row `number` (from 1) of the file with digest `digest`; `Ok(None)` for a blank
/// line.
pub fn parse(line: &[u8], number: u64, digest: &str) -> Result<Option<Row>, ApiError> {
    if line.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    if line.len() > MAX_ROW_BYTES {
        return Err(ApiError::MalformedBody(format!(
            "a row holds at most {MAX_ROW_BYTES} bytes"
        )));
    }
    let mut json = crate::http::extract::strict_json(line)
        .map_err(|e| ApiError::MalformedBody(format!("row is not valid JSON: {e}")))?;
    crate::http::extract::integral_numbers(&mut json);
    let canonical = serde_json::to_vec(&json)
        .map_err(|e| ApiError::MalformedBody(format!("row is not valid JSON: {e}")))?;
    let Value::Object(mut fields) = json else {
        return Err(ApiError::MalformedBody("a row is a JSON object".into()));
    };
    let kind = take_string(&mut fields, "type")?.ok_or_else(|| {
        ValidationError::new(
            "type",
            "name the row's type: location, sku, count or adjustment",
        )
    })?;
    let key = match take_string(&mut fields, "idempotency_key")? {
        Some(key) => IdempotencyKey::parse(key)?,
        None => derived_key(digest, number)?,
    };
    let fingerprint = {
        let mut d = Sha256::new();
        d.update(b"IMPORT\n");
        d.update(&canonical);
        hex::encode(d.finalize())
    };
    let shape = |e: serde_json::Error| {
        ApiError::MalformedBody(format!("row does not match the {kind} schema: {e}"))
    };
    let (action, stock_key) = match kind.as_str() {
        "location" => {
            let id = take_string(&mut fields, "location")?
                .ok_or_else(|| ValidationError::new("location", "name the location"))?;
            let body: LocationRequest =
                serde_json::from_value(Value::Object(fields)).map_err(shape)?;
            (
                Action::Location(body.into_location(LocationId::parse(id)?)?),
                None,
            )
        }
        "sku" => {
            let sku = take_string(&mut fields, "sku")?
                .ok_or_else(|| ValidationError::new("sku", "name the SKU"))?;
            let body: SkuRequest = serde_json::from_value(Value::Object(fields)).map_err(shape)?;
            let (name, attributes) = body.validate()?;
            (
                Action::Sku {
                    sku: Sku::parse(sku)?,
                    name,
                    attributes,
                },
                None,
            )
        }
        "count" => {
            // A count is a set of on-hand with the reason `cycle_count`.
            if let Some(on_hand) = fields.remove("on_hand") {
                fields.insert("set_on_hand".into(), on_hand);
            }
            fields.insert("reason".into(), Value::String("cycle_count".into()));
            let body: AdjustmentRequest =
                serde_json::from_value(Value::Object(fields)).map_err(shape)?;
            if body.set_on_hand.is_none() {
                return Err(ValidationError::new("on_hand", "a count names on_hand").into());
            }
            let adjust = body.into_command()?;
            let at = (adjust.key.sku.to_string(), adjust.key.location.to_string());
            (Action::Adjust(adjust), Some(at))
        }
        "adjustment" => {
            let body: AdjustmentRequest =
                serde_json::from_value(Value::Object(fields)).map_err(shape)?;
            let adjust = body.into_command()?;
            let at = (adjust.key.sku.to_string(), adjust.key.location.to_string());
            (Action::Adjust(adjust), Some(at))
        }
        other => {
            return Err(ValidationError::new(
                "type",
                format!("{other:?} is not a row type: location, sku, count or adjustment"),
            )
            .into());
        }
    };
    Ok(Some(Row {
        action,
        key,
        fingerprint,
        stock_key,
    }))
}

/// The key of row `number` of the file with `digest`: the same file uploaded again gives
/// every row the key it had.
pub fn derived_key(digest: &str, number: u64) -> Result<IdempotencyKey, ValidationError> {
    IdempotencyKey::parse(format!(
        "import-{}-{number}",
        &digest[..digest.len().min(32)]
    ))
}

fn take_string(fields: &mut Map<String, Value>, name: &str) -> Result<Option<String>, ApiError> {
    match fields.remove(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ValidationError::new(name, "must be a string").into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn row(text: &str) -> Result<Option<Row>, ApiError> {
        parse(text.as_bytes(), 7, DIGEST)
    }

    #[test]
    fn each_row_type_parses_into_its_command() {
        let count = row(r#"{"type":"count","sku":"MUG","location":"s1","on_hand":40}"#)
            .unwrap()
            .unwrap();
        assert_eq!(count.stock_key, Some(("MUG".into(), "s1".into())));
        assert_eq!(
            count.key.as_str(),
            "import-0123456789abcdef0123456789abcdef-7"
        );
        let Action::Adjust(adjust) = count.action else {
            panic!("a count adjusts")
        };
        assert_eq!(adjust.reason, stockflow_domain::AdjustReason::CycleCount);
        let adjustment = row(
            r#"{"type":"adjustment","sku":"MUG","location":"s1","delta":-2,"reason":"damage","idempotency_key":"erp-1"}"#,
        )
        .unwrap()
        .unwrap();
        assert_eq!(adjustment.key.as_str(), "erp-1");
        assert!(matches!(
            row(r#"{"type":"sku","sku":"MUG","name":"Mug"}"#)
                .unwrap()
                .unwrap()
                .action,
            Action::Sku { .. }
        ));
        assert!(matches!(
            row(
                r#"{"type":"location","location":"s1","region":"north","kind":"store","name":"S1"}"#
            )
            .unwrap()
            .unwrap()
            .action,
            Action::Location(_)
        ));
        assert!(row("   ").unwrap().is_none());
    }

    #[test]
    fn the_same_row_has_the_same_fingerprint_whatever_its_spelling() {
        let a = row(r#"{"type":"count","sku":"MUG","location":"s1","on_hand":40}"#)
            .unwrap()
            .unwrap();
        let b = row(r#"{ "on_hand": 40.0, "location":"s1", "sku":"MUG", "type":"count" }"#)
            .unwrap()
            .unwrap();
        assert_eq!(a.fingerprint, b.fingerprint);
        let c = row(r#"{"type":"count","sku":"MUG","location":"s1","on_hand":41}"#)
            .unwrap()
            .unwrap();
        assert_ne!(a.fingerprint, c.fingerprint);
    }

    #[test]
    fn bad_rows_say_what_is_wrong() {
        for (text, code) in [
            ("not json", "malformed_body"),
            ("[1]", "malformed_body"),
            (r#"{"sku":"MUG"}"#, "invalid_request"),
            (r#"{"type":"teleport"}"#, "invalid_request"),
            (
                r#"{"type":"count","sku":"MUG","location":"s1"}"#,
                "invalid_request",
            ),
            (
                r#"{"type":"count","sku":"MUG","location":"s1","on_hand":1,"colour":"red"}"#,
                "malformed_body",
            ),
            (
                r#"{"type":"adjustment","sku":"MUG","location":"s1","delta":1,"reason":"magic"}"#,
                "invalid_request",
            ),
            (
                r#"{"type":"count","sku":"MUG","location":"s1","on_hand":1,"on_hand":2}"#,
                "malformed_body",
            ),
        ] {
            let e = row(text).expect_err(text);
            assert_eq!(e.code(), code, "{text}: {e}");
        }
    }
}
