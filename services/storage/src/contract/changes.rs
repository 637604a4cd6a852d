//! The change feed's contract: a snapshot and the cursor to follow from; pages of the asked
//! locations only, each key's changes in version order; an idle page that keeps its place;
//! a cursor the store never gave refused.

use std::sync::Arc;
use std::time::{Duration, Instant};

use stockflow_domain::{
    AdjustReason, BusEvent, Detail, EventKind, EventMeta, Region, StockEvent, StockLevel,
};

use super::*;
use crate::ports::{Changes, InventoryRow, ReadStore};

fn event(s: &str, l: &str, version: u64, on_hand: i64) -> BusEvent {
    let level = StockLevel {
        on_hand,
        version,
        ..StockLevel::empty(sku(s), loc(l), Region::parse("north").expect("region"))
    };
    let detail = Detail {
        reason: Some(AdjustReason::Receipt),
        ..Detail::default()
    };
    let meta = EventMeta {
        occurred_at_ms: EventMeta::default().occurred_at_ms + i64::try_from(version).unwrap_or(0),
        ..EventMeta::default()
    };
    BusEvent::Stock(StockEvent::for_level(
        EventKind::StockAdjusted,
        &level,
        detail,
        &meta,
    ))
}

/// Pages of `locations` from `cursor` until one holds rows (a store may hold changes back
/// for a few seconds before handing them out), for at most 20 s.
async fn next_rows<R: ReadStore>(
    read: &R,
    locations: &[String],
    cursor: &str,
) -> (Vec<InventoryRow>, String) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut cursor = cursor.to_string();
    loop {
        match read
            .changes(locations, Some(&cursor), 100)
            .await
            .expect("a page")
        {
            Changes::Page { rows, cursor: next } => {
                if !rows.is_empty() {
                    return (rows, next);
                }
                cursor = next;
            }
            other => panic!("expected a page, got {other:?}"),
        }
        assert!(Instant::now() < deadline, "no change reached the feed");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Snapshot, follow, filter by location, idle pages, refused cursors.
pub(crate) async fn change_feed_contract<R: ReadStore>(read: Arc<R>) {
    let s1 = vec!["s1".to_string()];
    read.project(batch(
        "c",
        0,
        &[
            event("a", "s1", 1, 10),
            event("b", "s1", 1, 5),
            event("a", "s2", 1, 7),
        ],
        3,
    ))
    .await
    .expect("projects");
    let snapshot = read.change_snapshot(&s1).await.expect("a snapshot");
    let mut rows: Vec<(String, i64)> = snapshot
        .rows
        .iter()
        .map(|r| (r.sku.clone(), r.on_hand))
        .collect();
    rows.sort();
    assert_eq!(
        rows,
        [("a".to_string(), 10), ("b".to_string(), 5)],
        "s1's rows only"
    );
    // Changes after the snapshot come through its cursor; s2's do not. Several keys of one
    // location in one batch each get their own entry (a store may write them together).
    read.project(batch(
        "c",
        0,
        &[
            event("a", "s1", 2, 9),
            event("a", "s2", 2, 6),
            event("b", "s1", 2, 4),
            event("a", "s1", 3, 8),
            event("c", "s1", 1, 3),
        ],
        8,
    ))
    .await
    .expect("projects");
    let (mut seen, mut cursor) = next_rows(read.as_ref(), &s1, &snapshot.cursor).await;
    // Everything after the snapshot's point arrives (maybe over several pages, and maybe
    // with rows the snapshot already had: they are version-guarded at the reader).
    let arrived = |seen: &[InventoryRow], sku: &str, version: u64| {
        seen.iter().any(|r| r.sku == sku && r.version == version)
    };
    while !(arrived(&seen, "a", 3) && arrived(&seen, "b", 2) && arrived(&seen, "c", 1)) {
        let (more, next) = next_rows(read.as_ref(), &s1, &cursor).await;
        seen.extend(more);
        cursor = next;
    }
    assert!(seen.iter().all(|r| r.location == "s1"), "{seen:?}");
    let versions: Vec<u64> = seen
        .iter()
        .filter(|r| r.sku == "a")
        .map(|r| r.version)
        .collect();
    let mut sorted = versions.clone();
    sorted.sort();
    assert_eq!(versions, sorted, "one key's changes in version order");
    // Nothing new: an empty page whose cursor still works.
    match read.changes(&s1, Some(&cursor), 100).await.expect("a page") {
        Changes::Page { rows, cursor: next } => {
            assert!(rows.iter().all(|r| r.version <= 3), "{rows:?}");
            assert!(matches!(
                read.changes(&s1, Some(&next), 100).await.expect("a page"),
                Changes::Page { .. }
            ));
        }
        other => panic!("expected a page, got {other:?}"),
    }
    assert!(matches!(
        read.changes(&s1, Some("not-a-cursor"), 100)
            .await
            .expect("answers"),
        Changes::BadCursor(_)
    ));
    // Well-formed cursors of either backend: this store's own reads as a page, the
    // other's as expired (the reader reloads the snapshot), never as a client error.
    for foreign in ["e:0", "s@0", "s:5e1b3c2a-0b7d-11ef-8000-000000000000"] {
        assert!(
            matches!(
                read.changes(&s1, Some(foreign), 100)
                    .await
                    .expect("answers"),
                Changes::Page { .. } | Changes::Expired
            ),
            "{foreign}"
        );
    }
}
