//! The read store's contract: version-guarded projection, region totals, search,
//! offsets and the DLQ.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use stockflow_domain::{
    AdjustReason, BusEvent, Detail, EventKind, EventMeta, Region, ScopedKey, StockEvent, StockLevel,
};

use super::*;
use crate::ports::{DeadLetter, ExportChunk, Provenance, ReadStore, SearchQuery};

pub(crate) fn stock_event(
    s: &str,
    l: &str,
    region: &str,
    version: u64,
    on_hand: i64,
    reserved: i64,
) -> BusEvent {
    let level = StockLevel {
        on_hand,
        reserved,
        version,
        ..StockLevel::empty(sku(s), loc(l), Region::parse(region).unwrap())
    };
    let detail = Detail {
        reason: Some(AdjustReason::Receipt),
        ..Detail::default()
    };
    let meta = EventMeta {
        occurred_at_ms: EventMeta::default().occurred_at_ms + i64::try_from(version).unwrap(),
        ..EventMeta::default()
    };
    BusEvent::Stock(StockEvent::for_level(
        EventKind::StockAdjusted,
        &level,
        detail,
        &meta,
    ))
}

/// An export sends the offsets, then the rows of the region asked for, in key order.
async fn export_reflects_offsets<R: ReadStore>(read: &R) {
    let offsets = read.consumer_offsets().await.unwrap();
    let mine: Vec<(u32, u64)> = offsets
        .iter()
        .filter(|o| o.consumer == "c")
        .map(|o| (o.partition, o.next_offset))
        .collect();
    assert_eq!(mine, vec![(0, 4), (1, 3)]);
    for (region, expected) in [
        (Some("north"), vec![("a", "s1", 3), ("a", "s2", 1)]),
        (None, vec![("a", "s1", 3), ("a", "s2", 1), ("a", "w1", 1)]),
        (Some("nowhere"), vec![]),
    ] {
        let (sink, mut chunks) = tokio::sync::mpsc::channel(4);
        read.export_stock(region.map(str::to_string), sink)
            .await
            .unwrap();
        let Some(ExportChunk::Offsets(first)) = chunks.recv().await else {
            panic!("an export opens with its offsets");
        };
        assert_eq!(first, offsets);
        let mut rows = Vec::new();
        while let Some(chunk) = chunks.recv().await {
            let ExportChunk::Rows(more) = chunk else {
                panic!("offsets come once, first");
            };
            rows.extend(more);
        }
        let got: Vec<(&str, &str, u64)> = rows
            .iter()
            .map(|r| (r.sku.as_str(), r.location.as_str(), r.version))
            .collect();
        assert_eq!(got, expected, "export of {region:?}");
    }
}

/// Version-guarded projection, region totals, search, offsets and the DLQ.
pub(crate) async fn read_store_contract<R: ReadStore>(read: Arc<R>) {
    let v1 = stock_event("a", "s1", "north", 1, 10, 0);
    let v2 = stock_event("a", "s1", "north", 2, 10, 4);
    let v3 = stock_event("a", "s1", "north", 3, 8, 2);
    let other = stock_event("a", "s2", "north", 1, 5, 0);
    let south = stock_event("a", "w1", "south", 1, 100, 0);
    // Out of order and duplicated: the newest version wins, totals stay exact.
    read.project(batch(
        "c",
        0,
        &[v1.clone(), v3.clone(), v2.clone(), v1.clone()],
        4,
    ))
    .await
    .unwrap();
    read.project(batch("c", 1, &[other, south, v3.clone()], 3))
        .await
        .unwrap();
    let row = read.stock_at("a", "s1").await.unwrap().unwrap();
    assert_eq!(
        (row.on_hand, row.reserved, row.available, row.version),
        (8, 2, 6, 3)
    );
    assert_eq!(read.stock_by_sku("a").await.unwrap().len(), 3);
    assert!(read.stock_at("a", "zz").await.unwrap().is_none());
    export_reflects_offsets(&*read).await;
    let all = read.availability("a", None).await.unwrap();
    let north = all.iter().find(|r| r.region == "north").unwrap();
    assert_eq!(
        (
            north.quantities.on_hand,
            north.quantities.reserved,
            north.available,
            north.locations
        ),
        (13, 2, 11, 2)
    );
    let only = read.availability("a", Some("south")).await.unwrap();
    assert_eq!(only.len(), 1);
    assert_eq!(only[0].available, 100);
    assert_eq!(read.offset("c", 0).await.unwrap(), 4);
    assert_eq!(read.offset("c", 1).await.unwrap(), 3);
    assert_eq!(read.offset("c", 9).await.unwrap(), 0);

    // The movement history holds every version once, in order, whatever order (and how
    // often) the events came; it pages by version.
    let history = read.movements("a", "s1", 0, 10).await.unwrap();
    assert_eq!(
        history
            .iter()
            .map(|m| (m.version, m.on_hand, m.reserved))
            .collect::<Vec<_>>(),
        [(1, 10, 0), (2, 10, 4), (3, 8, 2)]
    );
    assert_eq!(history[0].kind, "stock_adjusted");
    assert_eq!(history[0].reason.as_deref(), Some("receipt"));
    // Each movement says where its event was read at its latest projection, and by whom.
    let placed = |m: &crate::ports::Movement| {
        let p = m
            .projection
            .as_ref()
            .expect("a projected movement has its provenance");
        assert!(p.projected_at_ms > 0);
        (p.partition, p.offset, p.projected_by.clone())
    };
    assert_eq!(
        history.iter().map(placed).collect::<Vec<_>>(),
        [
            (0, 3, "r1".into()),
            (0, 2, "r1".into()),
            (1, 2, "r1".into())
        ],
        "v1 last read at 0/3, v2 at 0/2, v3 at 1/2"
    );
    // Replaying an event (a dead letter) keeps where it was projected from.
    read.replay(std::slice::from_ref(&v2)).await.unwrap();
    let again = read.movements("a", "s1", 1, 1).await.unwrap();
    assert_eq!(
        again[0].projection,
        Some(Provenance {
            projected_at_ms: again[0]
                .projection
                .as_ref()
                .map_or(0, |p| p.projected_at_ms),
            ..history[1].projection.clone().unwrap()
        })
    );
    let page = read.movements("a", "s1", 1, 1).await.unwrap();
    assert_eq!(page.iter().map(|m| m.version).collect::<Vec<_>>(), [2]);
    assert!(read.movements("a", "s1", 3, 10).await.unwrap().is_empty());
    assert!(read.movements("a", "zz", 0, 10).await.unwrap().is_empty());
    let mut audited = match stock_event("m", "s1", "north", 1, 3, 0) {
        BusEvent::Stock(e) => e,
        BusEvent::Catalog(_) | BusEvent::Policy(_) => unreachable!(),
    };
    audited.actor = Some(stockflow_domain::Actor {
        subject: "store-7-pos".into(),
        client_id: Some("pos".into()),
        store: Some(stockflow_domain::StoreOrigin {
            id: "store-7".into(),
            seq: Some(42),
        }),
    });
    audited.idempotency_key = Some(ScopedKey::parse("0123abcd~till-42").expect("scoped key"));
    audited.reference = Some("count-9".into());
    read.replay(&[BusEvent::Stock(audited)]).await.unwrap();
    let m = &read.movements("m", "s1", 0, 10).await.unwrap()[0];
    assert_eq!(
        m.projection, None,
        "a replayed event was read from no partition"
    );
    assert_eq!(
        (
            m.actor
                .as_ref()
                .map(|a| (a.subject.as_str(), a.client_id.as_deref())),
            m.idempotency_key.as_deref(),
            m.reference.as_deref()
        ),
        (
            Some(("store-7-pos", Some("pos"))),
            Some("till-42"),
            Some("count-9")
        ),
        "who asked, under the key the client sent"
    );
    assert_eq!(
        m.detail.store,
        Some(stockflow_domain::StoreOrigin {
            id: "store-7".into(),
            seq: Some(42)
        }),
        "the store the command came from, and its agent's sequence number"
    );

    // Catalog search with stock filters.
    let catalog = |s: &str, name: &str, brand: &str, version: u64| {
        BusEvent::Catalog(stockflow_domain::CatalogEvent {
            event_id: format!("{s}/catalog/{version}"),
            sku: sku(s),
            name: name.into(),
            attributes: BTreeMap::from([("brand".to_string(), brand.to_string())]),
            version,
            occurred_at_ms: 1,
        })
    };
    read.project(batch(
        "c",
        2,
        &[
            catalog("a", "Red running shoe", "Acme", 1),
            catalog("b", "Red rain coat", "Zed", 1),
            catalog("b", "Old name", "Zed", 0),
        ],
        3,
    ))
    .await
    .unwrap();
    let q = |text: &str, in_stock: bool, region: Option<&str>| SearchQuery {
        text: text.into(),
        in_stock,
        region: region.map(str::to_string),
        limit: 10,
    };
    let hits = read.search(&q("red", false, None)).await.unwrap();
    assert_eq!(
        hits.iter()
            .map(|h| h.sku.as_str())
            .collect::<Vec<_>>()
            .len(),
        2
    );
    let hits = read.search(&q("red", true, None)).await.unwrap();
    assert_eq!(hits.len(), 1);
    assert_eq!((hits[0].sku.as_str(), hits[0].available), ("a", 111));
    let hits = read
        .search(&q("acm", true, Some("south")).clone())
        .await
        .unwrap();
    assert_eq!((hits.len(), hits[0].available), (1, 100));
    assert!(
        read.search(&q("red", true, Some("west")))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        read.search(&q("coat", false, None)).await.unwrap()[0].name,
        "Red rain coat"
    );
    // A term shared by more SKUs than a page: hits come in SKU order, at most the limit,
    // every word matched.
    let boots: Vec<BusEvent> = (0..600)
        .map(|i| {
            let colour = if i % 3 == 0 { "Blue" } else { "Grey" };
            catalog(
                &format!("tb-{i:04}"),
                &format!("{colour} trail boot"),
                "Acme",
                1,
            )
        })
        .collect();
    read.project(batch("search", 0, &boots, 600)).await.unwrap();
    let many = |text: &str, limit: usize| SearchQuery {
        limit,
        ..q(text, false, None)
    };
    let hits = read.search(&many("trail boot", 200)).await.unwrap();
    let skus: Vec<&str> = hits.iter().map(|h| h.sku.as_str()).collect();
    let expected: Vec<String> = (0..200).map(|i| format!("tb-{i:04}")).collect();
    assert_eq!(
        skus,
        expected.iter().map(String::as_str).collect::<Vec<_>>()
    );
    let hits = read.search(&many("blue boot", 200)).await.unwrap();
    assert_eq!(hits.len(), 200);
    assert!(hits.iter().all(|h| h.name == "Blue trail boot"));
    assert_eq!(hits[199].sku.as_str(), "tb-0597");

    // The DLQ advances the offset with the letter.
    let letter = DeadLetter {
        id: 0,
        consumer: "c".into(),
        partition: 0,
        offset: 4,
        key: "a".into(),
        payload: "{not json".into(),
        error: "expected value".into(),
        attempts: 3,
        failed_at_ms: 0,
    };
    read.dead_letter(letter, 5).await.unwrap();
    assert_eq!(read.offset("c", 0).await.unwrap(), 5);
    let letters = read.dead_letters(10).await.unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!((letters[0].offset, letters[0].attempts), (4, 3));
    assert!(read.remove_dead_letter(letters[0].id).await.unwrap());
    assert!(!read.remove_dead_letter(letters[0].id).await.unwrap());
    read.reset_offset("c", 0, 0).await.unwrap();
    assert_eq!(read.offset("c", 0).await.unwrap(), 0);

    // Dead letters written at the same moment never overwrite each other (a burst of
    // poison records in one partition, or the same partition number of two consumers).
    let burst: Vec<DeadLetter> = (0..20u64)
        .map(|i| DeadLetter {
            id: 0,
            consumer: if i % 2 == 0 {
                "dlq-a".into()
            } else {
                "dlq-b".into()
            },
            partition: 1000 * u32::from(i % 4 == 1),
            offset: 100 + i,
            key: "a".into(),
            payload: format!("poison {i}"),
            error: "expected value".into(),
            attempts: 1,
            failed_at_ms: 0,
        })
        .collect();
    futures::future::join_all(burst.into_iter().map(|l| {
        let next = l.offset + 1;
        read.dead_letter(l, next)
    }))
    .await
    .into_iter()
    .collect::<crate::Result<Vec<()>>>()
    .unwrap();
    let letters = read.dead_letters(100).await.unwrap();
    let mut payloads: Vec<&str> = letters.iter().map(|l| l.payload.as_str()).collect();
    payloads.sort_unstable();
    payloads.dedup();
    assert_eq!(payloads.len(), 20, "every dead letter kept: {payloads:?}");
    for l in &letters {
        assert!(read.remove_dead_letter(l.id).await.unwrap());
    }

    // Retention removes old letters in batches, oldest first, and keeps the rest.
    for i in 0..3u64 {
        let letter = DeadLetter {
            id: 0,
            consumer: "old".into(),
            partition: 2,
            offset: i,
            key: "a".into(),
            payload: format!("old {i}"),
            error: "expected value".into(),
            attempts: 1,
            failed_at_ms: crate::now_ms(),
        };
        read.dead_letter(letter, i + 1).await.unwrap();
    }
    assert_eq!(read.dead_letter_count().await.unwrap(), 3);
    let long_ago = crate::now_ms() - 60_000;
    assert_eq!(read.purge_dead_letters(long_ago, 2).await.unwrap(), 0);
    tokio::time::sleep(Duration::from_millis(5)).await;
    let now = crate::now_ms();
    assert_eq!(read.purge_dead_letters(now, 2).await.unwrap(), 2);
    assert_eq!(read.dead_letter_count().await.unwrap(), 1);
    assert_eq!(read.purge_dead_letters(now, 2).await.unwrap(), 1);
    assert_eq!(read.dead_letter_count().await.unwrap(), 0);

    // An event that breaks the invariant is refused, not stored (reserved above on-hand
    // is a recorded oversell, a negative state is not).
    let bad = stock_event("a", "s1", "north", 9, 1, -5);
    assert!(read.project(batch("c", 0, &[bad], 1)).await.is_err());
    assert_eq!(read.stock_at("a", "s1").await.unwrap().unwrap().version, 3);
    assert_eq!(
        read.offset("c", 0).await.unwrap(),
        0,
        "a failed batch stores no offset"
    );

    batches_of_many_partitions_stand_or_fall_alone(&*read).await;
}

/// Sixteen partitions project at once and one batch breaks the invariant: that batch
/// applies nothing and stores no offset, every other applies whole. (The embedded store
/// commits concurrent batches together; a bad one must not take the others with it.)
async fn batches_of_many_partitions_stand_or_fall_alone<R: ReadStore>(read: &R) {
    const BAD: u32 = 7;
    let batches: Vec<Vec<BusEvent>> = (0..16u32)
        .map(|p| {
            (1..=5u64)
                .map(|v| {
                    let reserved = if p == BAD && v == 4 { -1 } else { 0 };
                    stock_event(&format!("g{p}"), "s1", "north", v, 10 + v as i64, reserved)
                })
                .collect()
        })
        .collect();
    let outcomes = futures::future::join_all(
        batches
            .iter()
            .enumerate()
            .map(|(p, events)| read.project(batch("g", p as u32, events, 5))),
    )
    .await;
    for (p, outcome) in (0u32..).zip(outcomes) {
        let (offset, row) = (
            read.offset("g", p).await.unwrap(),
            read.stock_at(&format!("g{p}"), "s1").await.unwrap(),
        );
        if p == BAD {
            assert!(outcome.is_err(), "the bad batch is refused");
            assert_eq!(offset, 0, "the bad batch stores no offset");
            assert_eq!(row, None, "nothing of the bad batch is applied");
        } else {
            outcome.unwrap_or_else(|e| panic!("partition {p}'s batch failed: {e}"));
            assert_eq!(offset, 5, "partition {p}'s offset");
            assert_eq!(row.map(|r| (r.version, r.on_hand)), Some((5, 15)));
        }
    }
}
