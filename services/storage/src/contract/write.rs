//! The write store's contract: commands, idempotency, reservations and the outbox.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use stockflow_domain::sourcing::{Bundle, Component, Strategy};
use stockflow_domain::{
    Channel, ChannelId, ChannelLocation, Command, EventKind, Location, OnHandChange, Refusal,
    ReservationId, ReservationStatus,
};

use super::*;
use crate::ports::{Outbox, WriteStore};

/// Commands, idempotency, reservations and the outbox.
pub(crate) async fn write_store_contract<S: WriteStore + Outbox>(store: Arc<S>) {
    // Unknown location.
    let err = store
        .exec(plain(adjust("a", "s1", OnHandChange::Delta(5), None)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), "location_not_found");

    store
        .put_location(location("s1", "north"))
        .await
        .unwrap()
        .unwrap();
    store
        .put_location(location("s2", "south"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        store.location(&loc("s1")).await.unwrap(),
        Some(location("s1", "north"))
    );

    // Adjust and its event.
    let out = store
        .exec(plain(adjust("a", "s1", OnHandChange::Delta(10), None)))
        .await
        .unwrap();
    let level = level_of(out.result);
    assert_eq!((level.on_hand, level.reserved, level.version), (10, 0, 1));
    assert_eq!(out.events, 1);
    let events = stock_events(&*store).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].kind, EventKind::StockAdjusted);
    assert_eq!(
        (
            events[0].version,
            events[0].on_hand,
            events[0].region.as_str()
        ),
        (1, 10, "north")
    );

    // A stale expected_version is refused and writes nothing.
    let err = store
        .exec(plain(adjust(
            "a",
            "s1",
            OnHandChange::SetOnHand(3),
            Some(0),
        )))
        .await
        .unwrap_err();
    assert!(matches!(err, Refusal::VersionConflict { current: 1, .. }));
    let out = store
        .exec(plain(adjust(
            "a",
            "s1",
            OnHandChange::SetOnHand(20),
            Some(1),
        )))
        .await
        .unwrap();
    assert_eq!(level_of(out.result).version, 2);
    assert_eq!(stock_events(&*store).await.len(), 2);

    // Idempotency: replay, reuse with another request.
    let first = store
        .exec(keyed(
            adjust("a", "s2", OnHandChange::Delta(7), None),
            "k-1",
            "fp-1",
        ))
        .await
        .unwrap();
    let again = store
        .exec(keyed(
            adjust("a", "s2", OnHandChange::Delta(7), None),
            "k-1",
            "fp-1",
        ))
        .await
        .unwrap();
    assert!(!first.replayed && again.replayed);
    assert_eq!(first.result, again.result);
    assert_eq!(again.events, 0);
    let level = store.stock_level(&key("a", "s2")).await.unwrap().unwrap();
    assert_eq!(
        (level.on_hand, level.version),
        (7, 1),
        "a replay applies nothing"
    );
    let err = store
        .exec(keyed(
            adjust("a", "s2", OnHandChange::Delta(1), None),
            "k-1",
            "fp-2",
        ))
        .await
        .unwrap_err();
    assert!(matches!(err, Refusal::IdempotencyKeyReused));
    // A key first used for a one-line reservation stands for it on every other key too.
    store
        .exec(plain(adjust("fpk", "s1", OnHandChange::Delta(5), None)))
        .await
        .unwrap();
    store
        .exec(keyed(
            reserve("r-fpk", &[("fpk", "s1", 1)], 600),
            "k-2",
            "fp-r",
        ))
        .await
        .unwrap();
    let err = store
        .exec(keyed(
            adjust("fpk", "s2", OnHandChange::Delta(1), None),
            "k-2",
            "fp-other",
        ))
        .await
        .unwrap_err();
    assert!(matches!(err, Refusal::IdempotencyKeyReused), "{err}");
    store
        .exec(plain(Command::Release {
            id: ReservationId::parse("r-fpk").unwrap(),
        }))
        .await
        .unwrap();

    // On-hand may not drop below reserved.
    let r = reservation_of(
        store
            .exec(plain(reserve("r-1", &[("a", "s1", 15)], 600)))
            .await
            .unwrap()
            .result,
    );
    assert_eq!(r.status, ReservationStatus::Active);
    let err = store
        .exec(plain(adjust("a", "s1", OnHandChange::Delta(-6), None)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), "insufficient_stock");

    // All or nothing across lines.
    let before = store.all_stock_levels().await.unwrap();
    let pending_before = store.backlog().await.unwrap();
    let err = store
        .exec(plain(reserve(
            "r-2",
            &[("a", "s1", 5), ("a", "s2", 8)],
            600,
        )))
        .await
        .unwrap_err();
    let Refusal::InsufficientStock { lines } = err else {
        panic!("expected insufficient stock")
    };
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0].location.as_str(), "s2");
    assert_eq!(
        store.all_stock_levels().await.unwrap(),
        before,
        "nothing stays reserved"
    );
    assert_eq!(
        store.backlog().await.unwrap(),
        pending_before,
        "a rejected command yields no event"
    );
    assert!(
        store
            .reservation(&ReservationId::parse("r-2").unwrap())
            .await
            .unwrap()
            .is_none()
    );

    // Multi-line success, then release.
    let r2 = reservation_of(
        store
            .exec(plain(reserve(
                "r-2",
                &[("a", "s1", 5), ("a", "s2", 7)],
                600,
            )))
            .await
            .unwrap()
            .result,
    );
    assert_eq!(r2.lines.len(), 2);
    let err = store
        .exec(plain(reserve("r-2", &[("a", "s1", 1)], 600)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), "reservation_exists");
    let released = reservation_of(
        store
            .exec(plain(Command::Release { id: r2.id.clone() }))
            .await
            .unwrap()
            .result,
    );
    assert_eq!(released.status, ReservationStatus::Released);
    assert_eq!(
        store
            .stock_level(&key("a", "s2"))
            .await
            .unwrap()
            .unwrap()
            .reserved,
        0
    );

    // Confirm is a sale; a second confirm is refused.
    let confirmed = reservation_of(
        store
            .exec(plain(Command::Confirm { id: r.id.clone() }))
            .await
            .unwrap()
            .result,
    );
    assert_eq!(confirmed.status, ReservationStatus::Confirmed);
    let level = store.stock_level(&key("a", "s1")).await.unwrap().unwrap();
    assert_eq!((level.on_hand, level.reserved), (5, 0));
    let err = store
        .exec(plain(Command::Confirm { id: r.id.clone() }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), "reservation_not_active");
    let err = store
        .exec(plain(Command::Confirm {
            id: ReservationId::parse("nope").unwrap(),
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), "reservation_not_found");

    // Expiry: not before the TTL, then with an event.
    let r3 = reservation_of(
        store
            .exec(plain(reserve("r-3", &[("a", "s1", 2)], 1)))
            .await
            .unwrap()
            .result,
    );
    let early = store
        .exec(plain(Command::Expire { id: r3.id.clone() }))
        .await
        .unwrap();
    assert_eq!(
        (reservation_of(early.result).status, early.events),
        (ReservationStatus::Active, 0)
    );
    // Not due yet: a round expires nothing and names its deadline as the next.
    let round = store.expire_due(crate::now_ms(), 10).await.unwrap();
    assert_eq!(
        (round.expired, round.failed, round.next_deadline_ms),
        (0, 0, Some(r3.expires_at_ms))
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let expired = store
        .exec(plain(Command::Expire { id: r3.id.clone() }))
        .await
        .unwrap();
    assert_eq!(expired.events, 1);
    assert_eq!(
        reservation_of(expired.result).status,
        ReservationStatus::Expired
    );
    assert_eq!(
        store
            .stock_level(&key("a", "s1"))
            .await
            .unwrap()
            .unwrap()
            .reserved,
        0
    );
    // The outbox orders events per key (partitions are scanned in no particular order).
    let last = stock_events(&*store)
        .await
        .into_iter()
        .rfind(|e| e.sku.as_str() == "a" && e.location.as_str() == "s1")
        .unwrap();
    assert_eq!(last.kind, EventKind::ReservationExpired);
    let round = store.expire_due(crate::now_ms(), 10).await.unwrap();
    assert_eq!(
        (
            round.expired,
            round.failed,
            round.next_deadline_ms,
            round.full
        ),
        (0, 0, None, false)
    );

    // A location's region is fixed once it exists, with or without stock there; its name
    // may change.
    let err = store
        .put_location(location("s1", "south"))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.code(), "location_region_immutable");
    store
        .put_location(location("empty", "north"))
        .await
        .unwrap()
        .unwrap();
    let err = store
        .put_location(location("empty", "south"))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.code(), "location_region_immutable");
    let renamed = Location {
        name: "Renamed".into(),
        ..location("empty", "north")
    };
    store.put_location(renamed.clone()).await.unwrap().unwrap();
    assert_eq!(store.location(&loc("empty")).await.unwrap(), Some(renamed));

    // Sales channels: stored whole, each change one revision up.
    let web = ChannelId::parse("web").unwrap();
    assert_eq!(store.channel(&web).await.unwrap(), None);
    let at = |l: &str, threshold| ChannelLocation {
        location: loc(l),
        pickup_threshold: threshold,
    };
    let first = Channel::new(
        web.clone(),
        vec![at("s2", 0), at("s1", 2)],
        Strategy::Priority,
        true,
    )
    .unwrap();
    let stored = store.put_channel(first).await.unwrap();
    assert_eq!(stored.version, 1);
    assert_eq!(store.channel(&web).await.unwrap(), Some(stored.clone()));
    let second = Channel::new(web.clone(), vec![at("s1", 5)], Strategy::MostStock, false).unwrap();
    let revised = store.put_channel(second).await.unwrap();
    assert_eq!(revised.version, 2);
    assert_eq!(revised.strategy, Strategy::MostStock);
    assert_eq!(store.channel(&web).await.unwrap(), Some(revised));

    // Bundles: stored whole, each change one revision up, listed together.
    assert!(store.bundles().await.unwrap().is_empty());
    let component = |s: &str, qty| Component { sku: sku(s), qty };
    let gift = Bundle::new(
        sku("gift"),
        vec![component("a", 1), component("b", 2)],
        &Default::default(),
    )
    .unwrap();
    assert_eq!(store.put_bundle(gift.clone()).await.unwrap().version, 1);
    let regift = Bundle {
        components: vec![component("a", 3)],
        ..gift
    };
    let stored = store.put_bundle(regift).await.unwrap();
    assert_eq!(stored.version, 2);
    assert_eq!(store.bundles().await.unwrap(), vec![stored]);

    // Catalog data travels through the outbox too.
    let attrs = BTreeMap::from([("brand".to_string(), "Acme".to_string())]);
    let cat = store
        .put_sku(sku("a"), "Anvil".into(), attrs.clone())
        .await
        .unwrap();
    assert_eq!(cat.version, 1);
    assert_eq!(
        store
            .put_sku(sku("a"), "Anvil".into(), attrs)
            .await
            .unwrap()
            .version,
        2
    );

    // Every applied change is in the outbox exactly once, in version order per key.
    let events = stock_events(&*store).await;
    for k in [key("a", "s1"), key("a", "s2")] {
        let versions: Vec<u64> = events
            .iter()
            .filter(|e| e.sku == k.sku && e.location == k.location)
            .map(|e| e.version)
            .collect();
        let level = store.stock_level(&k).await.unwrap().unwrap();
        assert_eq!(versions, (1..=level.version).collect::<Vec<_>>());
    }

    // Publishing removes entries; marking twice is harmless.
    let pending = store.pending(3).await.unwrap();
    assert_eq!(pending.len(), 3);
    let backlog = store.backlog().await.unwrap();
    let ids: Vec<String> = pending.iter().map(|e| e.id.clone()).collect();
    store.mark_published(&ids).await.unwrap();
    store.mark_published(&ids).await.unwrap();
    assert_eq!(store.backlog().await.unwrap(), backlog - 3);
    assert_ne!(store.pending(1).await.unwrap()[0].id, ids[0]);
}
