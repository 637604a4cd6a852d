//! Rebuilding the read models from the write side: whatever the read side held (nothing,
//! rows a restored write side never reached, a key it never had), a rebuild, even one
//! interrupted and resumed, leaves exactly the rows, region totals and search documents
//! the write side's levels and catalog determine, and drops movements past each key's
//! write-side version.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use stockflow_domain::read_model::{InventoryRow, RegionAvailability};

use super::read::stock_event;
use super::*;
use crate::ports::{ReadStore, SearchQuery, WriteStore};
use crate::rebuild::{REBUILD_CONSUMER, rebuild_read_models};

/// A row without the moment it was written, which a rebuild sets to its own.
fn timeless(mut row: InventoryRow) -> InventoryRow {
    row.as_of_ms = 0;
    row
}

/// Every row the read side holds, timeless, in key order.
async fn held<R: ReadStore>(read: &R) -> Vec<InventoryRow> {
    let mut rows: Vec<InventoryRow> = read
        .all_inventory()
        .await
        .unwrap()
        .into_iter()
        .map(timeless)
        .collect();
    rows.sort_by(|a, b| (&a.sku, &a.location).cmp(&(&b.sku, &b.location)));
    rows
}

pub(crate) async fn rebuild_contract<W: WriteStore, R: ReadStore>(write: Arc<W>, read: Arc<R>) {
    for (l, region) in [("r1", "north"), ("r2", "north"), ("r3", "south")] {
        write
            .put_location(location(l, region))
            .await
            .unwrap()
            .unwrap();
    }
    for s in ["RB-1", "RB-2", "RB-3"] {
        write
            .put_sku(sku(s), format!("Rebuilt {s}"), BTreeMap::new())
            .await
            .unwrap();
        for (n, l) in ["r1", "r2", "r3"].into_iter().enumerate() {
            let qty = 5 + n as i64;
            write
                .exec(plain(adjust(s, l, OnHandChange::Delta(qty), None)))
                .await
                .unwrap();
        }
    }
    write
        .exec(plain(reserve(
            "rb-res",
            &[("RB-1", "r1", 2), ("RB-2", "r3", 1)],
            600,
        )))
        .await
        .unwrap();
    let levels = write.all_stock_levels().await.unwrap();
    assert_eq!(levels.len(), 9);

    // The read side holds what the write side never made: a key ahead of the write side
    // (its row and a movement at version 50), and a key the write side does not have.
    read.replay(&[
        stock_event("RB-1", "r1", "north", 50, 999, 0),
        stock_event("RB-9", "r1", "north", 3, 999, 0),
    ])
    .await
    .unwrap();

    // Interrupted after the first page of two keys, then resumed.
    let mut seen = Vec::new();
    let first = rebuild_read_models(write.as_ref(), read.as_ref(), 2, Some(2), |p| {
        seen.push(p.keys_done)
    })
    .await
    .unwrap();
    assert_eq!(first, None, "stopped as if killed");
    assert_eq!(read.offset(REBUILD_CONSUMER, 0).await.unwrap(), 3);
    assert_eq!(read.stock_at("RB-9", "r1").await.unwrap(), None, "cleared");
    let done = rebuild_read_models(write.as_ref(), read.as_ref(), 2, None, |p| {
        seen.push(p.keys_done)
    })
    .await
    .unwrap()
    .expect("finished");
    assert_eq!((done.keys, done.resumed_after, done.skus), (9, 2, 3));
    assert_eq!(
        seen,
        [2, 4, 6, 8, 9],
        "progress after every page, resumed where it stopped"
    );
    assert_eq!(read.offset(REBUILD_CONSUMER, 0).await.unwrap(), 0);

    // Every key: the row its level determines; nothing else.
    let expected: Vec<InventoryRow> = levels
        .iter()
        .map(|l| timeless(InventoryRow::of_level(l, 0)))
        .collect();
    assert_eq!(held(read.as_ref()).await, expected);
    let r1 = read.stock_at("RB-1", "r1").await.unwrap().expect("row");
    assert_eq!((r1.on_hand, r1.reserved, r1.available), (5, 2, 3));

    // Region totals are the sums of their rows.
    for s in ["RB-1", "RB-2", "RB-3"] {
        let regions: BTreeMap<String, RegionAvailability> = read
            .availability(s, None)
            .await
            .unwrap()
            .into_iter()
            .map(|a| (a.region.clone(), a))
            .collect();
        assert_eq!(
            regions.keys().cloned().collect::<BTreeSet<_>>(),
            BTreeSet::from(["north".to_string(), "south".to_string()])
        );
        for (region, a) in &regions {
            let rows: Vec<&InventoryRow> = expected
                .iter()
                .filter(|r| r.sku == s && &r.region == region)
                .collect();
            assert_eq!(a.available, rows.iter().map(|r| r.available).sum::<i64>());
            assert_eq!(
                a.quantities.on_hand,
                rows.iter().map(|r| r.on_hand).sum::<i64>()
            );
            assert_eq!(a.locations, rows.len() as u64);
        }
    }

    // Search holds the catalog, with stock.
    let hits = read
        .search(&SearchQuery {
            text: "rebuilt".into(),
            in_stock: true,
            region: None,
            limit: 10,
        })
        .await
        .unwrap();
    assert_eq!(
        hits.iter().map(|h| h.sku.as_str()).collect::<BTreeSet<_>>(),
        BTreeSet::from(["RB-1", "RB-2", "RB-3"])
    );

    // The movement the write side never made is gone.
    let movements = read.movements("RB-1", "r1", 0, 100).await.unwrap();
    assert!(
        movements.iter().all(|m| m.version <= r1.version),
        "{movements:?}"
    );

    // A second rebuild changes nothing.
    rebuild_read_models(write.as_ref(), read.as_ref(), 500, None, |_| {})
        .await
        .unwrap()
        .expect("finished");
    assert_eq!(held(read.as_ref()).await, expected);
}
