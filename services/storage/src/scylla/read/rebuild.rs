//! Rebuilding the stock read models from the write side: the views are truncated (a
//! truncation drops every cell whatever its write timestamp, so rows a restored write
//! side never reached cannot shadow the rebuilt ones), then each key's row is written as
//! projection writes it, `USING TIMESTAMP <version>`.

use std::collections::BTreeSet;

use futures::FutureExt;
use stockflow_domain::read_model::InventoryRow;

use super::project::run_all;
use super::{ScyllaReadStore, timestamp};
use crate::Result;
use crate::scylla::cql::errors::unreadable;
use crate::scylla::cql::query;

/// The tables that hold what the write side's levels and catalog determine.
const STOCK_VIEWS: [&str; 6] = [
    "inventory_by_sku_location",
    "availability_by_region",
    "regions_by_sku",
    "inventory_by_location",
    "search_documents",
    "search_terms",
];

impl ScyllaReadStore {
    pub(super) async fn truncate_stock_views(&self) -> Result<()> {
        for table in STOCK_VIEWS {
            self.session
                .query_unpaged(format!("TRUNCATE {}.{table}", self.keyspace), ())
                .await
                .map_err(unreadable("truncate a read model"))?;
        }
        if let Ok(mut known) = self.known_regions.lock() {
            *known = super::KnownRegions::default();
        }
        Ok(())
    }

    pub(super) async fn write_restored(&self, rows: &[InventoryRow]) -> Result<()> {
        let regions: BTreeSet<(&str, &str)> = rows
            .iter()
            .map(|r| (r.sku.as_str(), r.region.as_str()))
            .collect();
        let mut writes = self.row_writes(rows, rows, &regions)?;
        writes.extend(rows.iter().map(|row| {
            query::exec(
                &self.session,
                "drop movements past the write side",
                &self.st.trim_movements,
                (
                    row.sku.as_str(),
                    row.location.as_str(),
                    timestamp(row.version),
                ),
            )
            .boxed()
        }));
        run_all(writes).await
    }
}
