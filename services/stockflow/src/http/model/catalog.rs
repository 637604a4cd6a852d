//! Bodies of the catalog writes: locations and SKUs.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use stockflow_domain::{LocationId, LocationKind, Region, ValidationError};
use utoipa::ToSchema;

use super::super::docs;

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
