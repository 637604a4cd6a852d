//! The catalog on ScyllaDB: locations (one row each) and SKUs (a catalog partition per
//! SKU, revised by a conditional batch with its outbox row, like a stock change).

use std::collections::BTreeMap;

use scylla::statement::batch::{Batch, BatchType};
use stockflow_domain::{
    Answer, BusEvent, CatalogEvent, Location, LocationId, LocationKind, Region, Sku, SkuCatalog,
};

use super::backoff::{MAX_ATTEMPTS, jitter};
use super::partition::Partitions;
use crate::scylla::cql::errors::{cql, outcome_unknown};
use crate::scylla::cql::query;
use crate::scylla::cql::rows::{
    CatalogBatchRow, CatalogWrite, LocationRow, PayloadWrite, VersionRow,
};
use crate::scylla::cql::values::bigint;
use crate::scylla::cql::write_statements::CATALOG;
use crate::scylla::outbox::outbox_row_id;
use crate::{Result, StoreError, now_ms};

/// A location, if defined.
pub(super) async fn location(p: &Partitions, id: &LocationId) -> Result<Option<Location>> {
    let row: Option<LocationRow> = query::first(
        &p.session,
        "load location",
        &p.st.get_location,
        (id.as_str(),),
    )
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let kind = row.kind.unwrap_or_default();
    Ok(Some(Location {
        id: id.clone(),
        region: Region::parse(row.region.unwrap_or_default())
            .map_err(StoreError::corrupt("location region"))?,
        kind: LocationKind::parse(&kind)
            .ok_or_else(|| StoreError::unknown("location kind", kind))?,
        name: row.name.unwrap_or_default(),
    }))
}

/// Creates or updates a location, unless the domain refuses the change.
pub(super) async fn put_location(p: &Partitions, location: Location) -> Result<Answer<Location>> {
    if let Err(refusal) = location.may_replace(self::location(p, &location.id).await?.as_ref()) {
        return Ok(Err(refusal));
    }
    let values = (
        location.id.as_str(),
        location.region.as_str(),
        location.kind.as_str(),
        location.name.as_str(),
    );
    query::exec(&p.session, "put location", &p.st.put_location, values).await?;
    Ok(Ok(location))
}

/// Writes the next revision of a SKU's catalog data and its event, retrying while other
/// writers revise it at once.
pub(super) async fn put_sku(
    p: &Partitions,
    sku: Sku,
    name: String,
    attributes: BTreeMap<String, String>,
) -> Result<SkuCatalog> {
    for attempt in 0..MAX_ATTEMPTS {
        let current: Option<VersionRow> = query::first(
            &p.session,
            "load catalog",
            &p.st.get_catalog,
            (sku.as_str(),),
        )
        .await?;
        let previous = current.and_then(|row| row.version);
        let catalog = SkuCatalog::revised(
            sku.clone(),
            name.clone(),
            attributes.clone(),
            previous.map(|v| u64::try_from(v).unwrap_or(0)),
        );
        if write(p, &catalog, previous).await? {
            return Ok(catalog);
        }
        tokio::time::sleep(jitter(attempt)).await;
    }
    Err(StoreError::Contention {
        on: format!("the catalog of {sku}"),
    })
}

/// Writes `catalog` if the stored revision is still `previous`; whether it did (`false`
/// also when the outcome is unknown: the next attempt reads it back).
async fn write(p: &Partitions, catalog: &SkuCatalog, previous: Option<i64>) -> Result<bool> {
    let now = now_ms();
    let sku = catalog.sku.as_str();
    let version = bigint("revise a SKU's catalog revision", catalog.version)?;
    let payload = serde_json::to_vec(&BusEvent::Catalog(CatalogEvent::of(catalog, now)))
        .map_err(StoreError::encode("catalog event"))?;
    p.outbox.mark_partition(sku, CATALOG).await?;
    let mut batch = Batch::new(BatchType::Logged);
    batch.append_statement(p.st.write_catalog.clone());
    batch.append_statement(p.st.insert_outbox.clone());
    let values = [
        CatalogBatchRow::Catalog(CatalogWrite {
            catalog_name: &catalog.name,
            catalog_attributes: &catalog.attributes,
            version,
            sku,
            expected: previous,
        }),
        CatalogBatchRow::Payload(PayloadWrite {
            sku: sku.to_string(),
            location: CATALOG.to_string(),
            row_id: outbox_row_id(catalog.version),
            payload,
            created_at: now,
        }),
    ];
    match p.session.batch(&batch, &values[..]).await {
        Ok(result) => {
            let applied = query::applied("catalog batch", result)?.applied;
            if applied {
                p.outbox.committed(sku, CATALOG);
            }
            Ok(applied)
        }
        Err(e) if outcome_unknown(&e) => Ok(false),
        Err(e) => Err(cql("catalog batch")(e)),
    }
}
