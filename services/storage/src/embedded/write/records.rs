//! The records of the write database besides stock rows and reservations: transfers, SKU
//! policies, and the reservations holding stock at a key (read for an oversold fact).

use rusqlite::{Connection, OptionalExtension, params};
use stockflow_domain::{
    ReservationId, Settings, Sku, SkuPolicy, StockKey, StockLevel, Transfer, TransferId,
};

use super::super::sqlite::{from_sql_u64, to_sql_u64};
use super::schema::SQL;
use crate::error::Context;
use crate::{Result, StoreError};

/// Writes a transfer as the domain left it.
pub(super) fn write_transfer(conn: &Connection, t: &Transfer) -> Result<()> {
    let body = serde_json::to_string(t).map_err(StoreError::encode("transfer"))?;
    conn.prepare_cached(
        "INSERT INTO transfers (id, status, body, updated_at_ms) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (id) DO UPDATE SET status = excluded.status, body = excluded.body,
             updated_at_ms = excluded.updated_at_ms",
    )
    .and_then(|mut s| {
        s.execute(params![
            t.id.as_str(),
            t.status.as_str(),
            body,
            t.updated_at_ms
        ])
    })
    .what("write a transfer")?;
    Ok(())
}

/// Transfer `id`, if it exists.
pub(super) fn load_transfer(conn: &Connection, id: &TransferId) -> Result<Option<Transfer>> {
    let body: Option<String> = conn
        .prepare_cached("SELECT body FROM transfers WHERE id = ?1")
        .and_then(|mut s| s.query_row([id.as_str()], |r| r.get(0)).optional())
        .what("load a transfer")?;
    body.map(|b| serde_json::from_str(&b).map_err(StoreError::corrupt("transfer")))
        .transpose()
}

/// The policy of `sku`, if one was ever set.
pub(super) fn load_sku_policy(conn: &Connection, sku: &Sku) -> Result<Option<SkuPolicy>> {
    let row: Option<(String, i64)> = conn
        .prepare_cached("SELECT settings, version FROM sku_policies WHERE sku = ?1")
        .and_then(|mut s| {
            s.query_row([sku.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
        })
        .what("load a sku policy")?;
    row.map(|(settings, version)| {
        let settings: Settings =
            serde_json::from_str(&settings).map_err(StoreError::corrupt("sku policy"))?;
        Ok(SkuPolicy {
            sku: sku.clone(),
            settings,
            version: from_sql_u64(version),
        })
    })
    .transpose()
}

/// Active reservations holding stock at `key`, oldest first.
pub(super) fn holders(conn: &Connection, key: &StockKey) -> Result<Vec<ReservationId>> {
    let ids: Vec<String> = conn
        .prepare_cached(&SQL.holders)
        .and_then(|mut s| {
            s.query_map([key.sku.as_str(), key.location.as_str()], |r| r.get(0))?
                .collect()
        })
        .what("find a key's reservations")?;
    ids.into_iter()
        .map(|id| ReservationId::parse(id).map_err(StoreError::corrupt("reservation id")))
        .collect()
}

/// `level` with its SKU's policy attached, as a decision on it sees it.
pub(super) fn attach_sku_policy(conn: &Connection, level: StockLevel) -> Result<StockLevel> {
    let settings = load_sku_policy(conn, &level.sku)?.map(|p| p.settings);
    Ok(level.with_sku_policy(settings))
}

/// Writes a SKU's policy record.
pub(super) fn write_sku_policy(conn: &Connection, policy: &SkuPolicy) -> Result<()> {
    let settings =
        serde_json::to_string(&policy.settings).map_err(StoreError::encode("sku policy"))?;
    conn.prepare_cached(
        "INSERT INTO sku_policies (sku, settings, version) VALUES (?1, ?2, ?3)
         ON CONFLICT (sku) DO UPDATE SET settings = excluded.settings, version = excluded.version",
    )
    .and_then(|mut s| {
        s.execute(params![
            policy.sku.as_str(),
            settings,
            to_sql_u64(policy.version)
        ])
    })
    .what("write a sku policy")?;
    Ok(())
}
