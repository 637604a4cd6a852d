//! Reads of the write side's state: a reservation (a saga's header, or its lines found
//! through the index), a key's level, and every level (a scan, for tests and audits).

use futures::StreamExt;
use stockflow_domain::{
    Extras, LocationId, Region, Reservation, ReservationId, Sku, SkuCatalog, StockKey, StockLevel,
};

use super::partition::Partitions;
use super::saga::{self, Located};
use crate::scylla::cql::errors::unreadable;
use crate::scylla::cql::rows::{KeyedCatalogRow, KeyedLevelRow};
use crate::scylla::cql::write_statements::{CATALOG, is_sku_partition};
use crate::{Result, StoreError};

/// A reservation, as clients may see it.
pub(super) async fn reservation(p: &Partitions, id: &ReservationId) -> Result<Option<Reservation>> {
    let keys = match saga::locate(p, id).await? {
        // A saga that is not active yet (or is being rolled back) does not exist for
        // clients.
        Located::Saga(h) if h.state.is_being_made() => return Ok(None),
        Located::Saga(h) => return Ok(Some(h.reservation)),
        Located::Lines(keys) => keys,
    };
    let lines = saga::single_lines(p, id, keys).await?;
    Ok(lines.into_values().reduce(|found, line| found.join(line)))
}

/// The level of `key`, if it was ever changed, with its SKU's policy attached.
pub(super) async fn stock_level(p: &Partitions, key: &StockKey) -> Result<Option<StockLevel>> {
    let (level, policy) = tokio::join!(p.level(key), p.sku_settings(&key.sku));
    let policy = policy?;
    Ok(level?
        .filter(|l| l.version > 0)
        .map(|l| l.with_sku_policy(policy)))
}

/// Every level, by key.
pub(super) async fn all_stock_levels(p: &Partitions) -> Result<Vec<StockLevel>> {
    let mut out = Vec::new();
    let mut pager = p
        .session
        .execute_iter(p.st.all_levels.clone(), ())
        .await
        .map_err(unreadable("scan levels"))?
        .rows_stream::<KeyedLevelRow>()
        .map_err(unreadable("scan levels"))?;
    while let Some(row) = pager.next().await {
        let row = row.map_err(unreadable("scan levels"))?;
        let version = row.version.unwrap_or(0);
        if is_sku_partition(&row.location) || version == 0 {
            continue;
        }
        const WHAT: &str = "stock level";
        out.push(StockLevel {
            extras: Extras::from_stored(row.extras.as_deref())
                .map_err(StoreError::corrupt(WHAT))?,
            on_hand: row.on_hand.unwrap_or(0),
            reserved: row.reserved.unwrap_or(0),
            version: u64::try_from(version).unwrap_or(0),
            ..StockLevel::empty(
                Sku::parse(row.sku).map_err(StoreError::corrupt(WHAT))?,
                LocationId::parse(row.location).map_err(StoreError::corrupt(WHAT))?,
                Region::parse(row.region.unwrap_or_default()).map_err(StoreError::corrupt(WHAT))?,
            )
        });
    }
    out.sort_by_key(StockLevel::key);
    Ok(out)
}

/// Every SKU's catalog data, in SKU order: the same scan, keeping the catalog partitions
/// (rebuilding the read models; never on a hot path).
pub(super) async fn all_skus(p: &Partitions) -> Result<Vec<SkuCatalog>> {
    let mut out = Vec::new();
    let mut pager = p
        .session
        .execute_iter(p.st.all_catalogs.clone(), ())
        .await
        .map_err(unreadable("scan catalogs"))?
        .rows_stream::<KeyedCatalogRow>()
        .map_err(unreadable("scan catalogs"))?;
    while let Some(row) = pager.next().await {
        let row = row.map_err(unreadable("scan catalogs"))?;
        let version = row.version.unwrap_or(0);
        if row.location != CATALOG || version <= 0 {
            continue;
        }
        out.push(SkuCatalog {
            sku: Sku::parse(row.sku).map_err(StoreError::corrupt("SKU"))?,
            name: row.catalog_name.unwrap_or_default(),
            attributes: row.catalog_attributes.unwrap_or_default(),
            version: u64::try_from(version).unwrap_or(0),
        });
    }
    out.sort_by(|a, b| a.sku.cmp(&b.sku));
    Ok(out)
}
