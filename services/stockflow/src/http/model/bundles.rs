//! Bodies of bundles (kits) and of what a bundle's components allow per location.

use serde::{Deserialize, Serialize};
use stockflow_domain::Sku;
use stockflow_domain::ValidationError;
use stockflow_domain::sourcing::bundle::{Bundle, Component, MAX_COMPONENT_QTY, MAX_COMPONENTS};
use utoipa::ToSchema;
use utoipa::openapi::schema::{Array, KnownFormat, Object, ObjectBuilder, SchemaFormat, Type};

use super::super::docs;

fn components() -> Array {
    docs::list_of(
        "ComponentBody",
        MAX_COMPONENTS,
        "1-20 components, each SKU once (a repeat is refused with 422 duplicate_line); none may be a bundle",
    )
}

fn component_qty() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
        .description(Some("Units of the component in one bundle, 1-1,000"))
        .minimum(Some(1))
        .maximum(Some(MAX_COMPONENT_QTY))
        .build()
}

/// One component of a bundle.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ComponentBody {
    /// The component SKU.
    #[schema(schema_with = docs::sku)]
    pub sku: String,
    /// Units of it per bundle.
    #[schema(schema_with = component_qty)]
    pub qty: i64,
}

/// `PUT /v1/bundles/{sku}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct BundleRequest {
    /// The components.
    #[schema(schema_with = components)]
    pub components: Vec<ComponentBody>,
}

impl BundleRequest {
    /// The components, validated as SKUs (the domain validates the set).
    pub fn into_components(self) -> Result<Vec<Component>, ValidationError> {
        self.components
            .into_iter()
            .enumerate()
            .map(|(i, c)| {
                Ok(Component {
                    sku: Sku::parse(c.sku).map_err(|e| ValidationError {
                        field: format!("components[{i}].sku"),
                        ..e
                    })?,
                    qty: c.qty,
                })
            })
            .collect()
    }
}

/// A bundle.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct BundleResponse {
    /// The bundle's SKU.
    pub sku: String,
    /// Its components.
    pub components: Vec<ComponentBody>,
    /// Revision, one up per change.
    pub version: u64,
}

impl From<Bundle> for BundleResponse {
    fn from(b: Bundle) -> Self {
        Self {
            sku: b.sku.to_string(),
            components: b
                .components
                .into_iter()
                .map(|c| ComponentBody {
                    sku: c.sku.to_string(),
                    qty: c.qty,
                })
                .collect(),
            version: b.version,
        }
    }
}

/// Bundles one location can sell.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct BundleLocationAvailability {
    /// The location.
    pub location: String,
    /// Its region.
    pub region: String,
    /// The least the components allow: min over components of ⌊available / qty⌋.
    pub available: i64,
}

/// `GET /v1/bundles/{sku}/availability`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct BundleAvailabilityResponse {
    /// The bundle's SKU.
    pub sku: String,
    /// The bundle revision the figures are computed with.
    pub version: u64,
    /// Sum over the locations.
    pub total_available: i64,
    /// Every location holding all components, most available first.
    pub locations: Vec<BundleLocationAvailability>,
}
