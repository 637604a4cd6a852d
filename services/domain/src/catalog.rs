//! The catalog the stock refers to: locations (and the region each belongs to) and SKUs
//! with their searchable attributes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ids::{LocationId, Region, Sku};
use crate::refusal::{Answer, Refusal};

/// What kind of place a location is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LocationKind {
    /// A shop with a POS.
    Store,
    /// A distribution centre.
    Warehouse,
}

impl LocationKind {
    /// The API spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            LocationKind::Store => "store",
            LocationKind::Warehouse => "warehouse",
        }
    }

    /// Parses the API spelling.
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "store" => Some(LocationKind::Store),
            "warehouse" => Some(LocationKind::Warehouse),
            _ => None,
        }
    }
}

/// A store or warehouse and the region it belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Location {
    /// The location id.
    pub id: LocationId,
    /// Its region; fixed once the location exists.
    pub region: Region,
    /// Store or warehouse.
    pub kind: LocationKind,
    /// Display name.
    pub name: String,
}

impl Location {
    /// Whether `self` may replace `current` (the stored location of the same id, if any).
    ///
    /// Kind and name may change; the region may not, on every backend alike: stock levels,
    /// events and read models copy the region, and a backend without a location → stock
    /// index could not tell whether the location still holds stock.
    pub fn may_replace(&self, current: Option<&Location>) -> Answer<()> {
        match current {
            Some(current) if current.region != self.region => {
                Err(Refusal::LocationRegionImmutable {
                    location: self.id.clone(),
                    current: current.region.to_string(),
                })
            }
            _ => Ok(()),
        }
    }
}

/// Catalog data of a SKU, used by the search index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkuCatalog {
    /// The SKU.
    pub sku: Sku,
    /// Display name.
    pub name: String,
    /// Free-form attributes (brand, colour, size...).
    pub attributes: BTreeMap<String, String>,
    /// Catalog revision, +1 on every update.
    pub version: u64,
}

impl SkuCatalog {
    /// The catalog of `sku` after an update: the next revision after `previous` (the
    /// stored revision, `None` for a SKU never described).
    pub fn revised(
        sku: Sku,
        name: String,
        attributes: BTreeMap<String, String>,
        previous: Option<u64>,
    ) -> Self {
        Self {
            sku,
            name,
            attributes,
            version: previous.unwrap_or(0) + 1,
        }
    }
}
