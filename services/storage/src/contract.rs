//! The contract every adapter of a port must honour. Each adapter's tests call these
//! functions on a fresh, empty store; the embedded adapters run them below, and the
//! distributed adapters run the same functions against their real servers.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use stockflow_domain::{
    Adjust, AdjustReason, BusEvent, Command, CommandResult, DomainError, EventKind, EventMeta,
    IdempotencyKey, Location, LocationGrant, LocationId, LocationKind, OnHandChange, Region,
    Reservation, ReservationId, ReservationStatus, Reserve, ReserveLine, Sku, StockEvent, StockKey,
    StockLevel,
};

mod expiry;
pub(crate) use expiry::write_store_expiry_contract;

use crate::StoreError;
use crate::ports::{
    Batch, CommandRequest, DeadLetter, IdempotencyToken, Outbox, Provenance, ReadStore,
    SearchQuery, WriteStore,
};

/// The records of `partition` ending just before `next_offset`, projected by replica `r1`.
pub(crate) fn batch<'a>(
    consumer: &'a str,
    partition: u32,
    events: &'a [BusEvent],
    next_offset: u64,
) -> Batch<'a> {
    Batch {
        consumer,
        replica: "r1",
        partition,
        first_offset: next_offset - events.len() as u64,
        events,
    }
}

fn sku(s: &str) -> Sku {
    Sku::parse(s).expect("valid sku")
}

fn loc(s: &str) -> LocationId {
    LocationId::parse(s).expect("valid location")
}

pub(crate) fn key(s: &str, l: &str) -> StockKey {
    StockKey::new(sku(s), loc(l))
}

pub(crate) fn location(id: &str, region: &str) -> Location {
    Location {
        id: loc(id),
        region: Region::parse(region).expect("valid region"),
        kind: LocationKind::Store,
        name: format!("Store {id}"),
    }
}

pub(crate) fn adjust(s: &str, l: &str, change: OnHandChange, expected: Option<u64>) -> Command {
    Command::Adjust(
        Adjust::new(key(s, l), change, AdjustReason::Receipt, None, expected)
            .expect("valid adjust"),
    )
}

pub(crate) fn reserve(id: &str, lines: &[(&str, &str, i64)], ttl: u64) -> Command {
    let lines = lines
        .iter()
        .map(|(s, l, qty)| ReserveLine {
            sku: sku(s),
            location: loc(l),
            qty: *qty,
        })
        .collect();
    Command::Reserve(
        Reserve::new(
            ReservationId::parse(id).expect("valid id"),
            lines,
            ttl,
            None,
        )
        .expect("valid reserve"),
    )
}

pub(crate) fn plain(command: Command) -> CommandRequest {
    CommandRequest {
        command,
        idempotency: None,
        trace_context: None,
        actor: None,
        grant: LocationGrant::Any,
    }
}

pub(crate) fn keyed(command: Command, k: &str, fingerprint: &str) -> CommandRequest {
    CommandRequest {
        command,
        idempotency: Some(IdempotencyToken {
            key: IdempotencyKey::parse(k).expect("valid key"),
            fingerprint: fingerprint.into(),
        }),
        trace_context: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
        actor: Some(stockflow_domain::Actor {
            subject: "contract".into(),
            client_id: Some("pos-7".into()),
        }),
        grant: LocationGrant::Any,
    }
}

fn domain_code(err: StoreError) -> &'static str {
    match err {
        StoreError::Domain(e) => e.code(),
        other => panic!("expected a domain error, got {other}"),
    }
}

fn reservation_of(result: CommandResult) -> Reservation {
    match result {
        CommandResult::Reservation(r) => r,
        other => panic!("expected a reservation, got {other:?}"),
    }
}

fn level_of(result: CommandResult) -> StockLevel {
    match result {
        CommandResult::Stock(l) => l,
        other => panic!("expected a stock level, got {other:?}"),
    }
}

pub(crate) async fn stock_events<S: Outbox + ?Sized>(store: &S) -> Vec<StockEvent> {
    store
        .pending(10_000)
        .await
        .expect("pending")
        .into_iter()
        .filter_map(
            |e| match serde_json::from_slice(&e.payload).expect("outbox payload decodes") {
                BusEvent::Stock(e) => Some(e),
                BusEvent::Catalog(_) => None,
            },
        )
        .collect()
}

/// Commands, idempotency, reservations and the outbox.
pub(crate) async fn write_store_contract<S: WriteStore + Outbox>(store: Arc<S>) {
    // Unknown location.
    let err = store
        .execute(plain(adjust("a", "s1", OnHandChange::Delta(5), None)))
        .await
        .unwrap_err();
    assert_eq!(domain_code(err), "location_not_found");

    store.put_location(location("s1", "north")).await.unwrap();
    store.put_location(location("s2", "south")).await.unwrap();
    assert_eq!(
        store.location(&loc("s1")).await.unwrap(),
        Some(location("s1", "north"))
    );

    // Adjust and its event.
    let out = store
        .execute(plain(adjust("a", "s1", OnHandChange::Delta(10), None)))
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
        .execute(plain(adjust(
            "a",
            "s1",
            OnHandChange::SetOnHand(3),
            Some(0),
        )))
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        StoreError::Domain(DomainError::VersionConflict { current: 1, .. })
    ));
    let out = store
        .execute(plain(adjust(
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
        .execute(keyed(
            adjust("a", "s2", OnHandChange::Delta(7), None),
            "k-1",
            "fp-1",
        ))
        .await
        .unwrap();
    let again = store
        .execute(keyed(
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
        .execute(keyed(
            adjust("a", "s2", OnHandChange::Delta(1), None),
            "k-1",
            "fp-2",
        ))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::IdempotencyKeyReused));
    // A key first used for a one-line reservation stands for it on every other key too.
    store
        .execute(plain(adjust("fpk", "s1", OnHandChange::Delta(5), None)))
        .await
        .unwrap();
    store
        .execute(keyed(
            reserve("r-fpk", &[("fpk", "s1", 1)], 600),
            "k-2",
            "fp-r",
        ))
        .await
        .unwrap();
    let err = store
        .execute(keyed(
            adjust("fpk", "s2", OnHandChange::Delta(1), None),
            "k-2",
            "fp-other",
        ))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::IdempotencyKeyReused), "{err}");
    store
        .execute(plain(Command::Release {
            id: ReservationId::parse("r-fpk").unwrap(),
        }))
        .await
        .unwrap();

    // On-hand may not drop below reserved.
    let r = reservation_of(
        store
            .execute(plain(reserve("r-1", &[("a", "s1", 15)], 600)))
            .await
            .unwrap()
            .result,
    );
    assert_eq!(r.status, ReservationStatus::Active);
    let err = store
        .execute(plain(adjust("a", "s1", OnHandChange::Delta(-6), None)))
        .await
        .unwrap_err();
    assert_eq!(domain_code(err), "insufficient_stock");

    // All or nothing across lines.
    let before = store.all_stock_levels().await.unwrap();
    let pending_before = store.backlog().await.unwrap();
    let err = store
        .execute(plain(reserve(
            "r-2",
            &[("a", "s1", 5), ("a", "s2", 8)],
            600,
        )))
        .await
        .unwrap_err();
    let StoreError::Domain(DomainError::InsufficientStock { lines }) = err else {
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
            .execute(plain(reserve(
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
        .execute(plain(reserve("r-2", &[("a", "s1", 1)], 600)))
        .await
        .unwrap_err();
    assert_eq!(domain_code(err), "reservation_exists");
    let released = reservation_of(
        store
            .execute(plain(Command::Release { id: r2.id.clone() }))
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
            .execute(plain(Command::Confirm { id: r.id.clone() }))
            .await
            .unwrap()
            .result,
    );
    assert_eq!(confirmed.status, ReservationStatus::Confirmed);
    let level = store.stock_level(&key("a", "s1")).await.unwrap().unwrap();
    assert_eq!((level.on_hand, level.reserved), (5, 0));
    let err = store
        .execute(plain(Command::Confirm { id: r.id.clone() }))
        .await
        .unwrap_err();
    assert_eq!(domain_code(err), "reservation_not_active");
    let err = store
        .execute(plain(Command::Confirm {
            id: ReservationId::parse("nope").unwrap(),
        }))
        .await
        .unwrap_err();
    assert_eq!(domain_code(err), "reservation_not_found");

    // Expiry: not before the TTL, then with an event.
    let r3 = reservation_of(
        store
            .execute(plain(reserve("r-3", &[("a", "s1", 2)], 1)))
            .await
            .unwrap()
            .result,
    );
    let early = store
        .execute(plain(Command::Expire { id: r3.id.clone() }))
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
        .execute(plain(Command::Expire { id: r3.id.clone() }))
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
        .unwrap_err();
    assert_eq!(domain_code(err), "location_region_immutable");
    store
        .put_location(location("empty", "north"))
        .await
        .unwrap();
    let err = store
        .put_location(location("empty", "south"))
        .await
        .unwrap_err();
    assert_eq!(domain_code(err), "location_region_immutable");
    let renamed = Location {
        name: "Renamed".into(),
        ..location("empty", "north")
    };
    store.put_location(renamed.clone()).await.unwrap();
    assert_eq!(store.location(&loc("empty")).await.unwrap(), Some(renamed));

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

/// Concurrent reservations never oversell.
pub(crate) async fn write_store_concurrency_contract<S: WriteStore>(store: Arc<S>) {
    store.put_location(location("c1", "north")).await.unwrap();
    store
        .execute(plain(adjust("hot", "c1", OnHandChange::Delta(20), None)))
        .await
        .unwrap();
    let tasks: Vec<_> = (0..60)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .execute(plain(reserve(&format!("c-{i}"), &[("hot", "c1", 1)], 600)))
                    .await
            })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(e) => assert_eq!(domain_code(e), "insufficient_stock"),
        }
    }
    assert_eq!(ok, 20);
    let level = store.stock_level(&key("hot", "c1")).await.unwrap().unwrap();
    assert_eq!((level.reserved, level.version), (20, 21));
}

/// Two store instances (two command-API replicas) running the same commands at once: each
/// command applies once, and both callers get its one answer.
pub(crate) async fn write_store_race_contract<S: WriteStore>(a: Arc<S>, b: Arc<S>) {
    a.put_location(location("d1", "north")).await.unwrap();
    a.execute(plain(adjust("dup", "d1", OnHandChange::Delta(100), None)))
        .await
        .unwrap();
    // The same keyed adjustment, twenty times on each instance at once, queued behind
    // another change of the key (so a coalescing store sees duplicates in one group).
    let other = {
        let a = a.clone();
        tokio::spawn(async move {
            a.execute(plain(adjust("dup", "d1", OnHandChange::Delta(1), None)))
                .await
        })
    };
    let runs: Vec<_> = (0..40)
        .map(|i| {
            let store = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move {
                store
                    .execute(keyed(
                        adjust("dup", "d1", OnHandChange::Delta(-3), None),
                        "same-adjust",
                        "fp-adjust",
                    ))
                    .await
            })
        })
        .collect();
    let mut answers = Vec::new();
    for run in runs {
        match run.await.unwrap() {
            Ok(out) => answers.push(out),
            // A duplicate may be told the first is still running; never anything else.
            Err(StoreError::InProgress) => {}
            Err(e) => panic!("a duplicate failed: {e}"),
        }
    }
    other.await.unwrap().unwrap();
    assert_eq!(answers.iter().filter(|o| !o.replayed).count(), 1);
    assert!(answers.iter().all(|o| o.result == answers[0].result));
    let level = a.stock_level(&key("dup", "d1")).await.unwrap().unwrap();
    assert_eq!(
        (level.on_hand, level.version),
        (98, 3),
        "applied exactly once"
    );

    // Reservations (one line, and two lines) settled at once from both instances by
    // expiry, release and confirm: one settlement wins, each line moves once. A long-lived
    // reservation on the same keys shows any second move (it would eat that one's hold).
    a.execute(plain(adjust("dup2", "d1", OnHandChange::Delta(100), None)))
        .await
        .unwrap();
    a.execute(plain(reserve(
        "keep",
        &[("dup", "d1", 5), ("dup2", "d1", 5)],
        600,
    )))
    .await
    .unwrap();
    for (victim, lines) in [
        ("one-line", vec![("dup", "d1", 7)]),
        ("two-lines", vec![("dup", "d1", 7), ("dup2", "d1", 7)]),
    ] {
        let before = (
            a.stock_level(&key("dup", "d1")).await.unwrap().unwrap(),
            a.stock_level(&key("dup2", "d1")).await.unwrap().unwrap(),
        );
        let r = reservation_of(
            a.execute(plain(reserve(victim, &lines, 1)))
                .await
                .unwrap()
                .result,
        );
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let settles: Vec<_> = (0..24)
            .map(|i| {
                let store = if i % 2 == 0 { a.clone() } else { b.clone() };
                let command = match i % 6 {
                    4 => Command::Release { id: r.id.clone() },
                    5 => Command::Confirm { id: r.id.clone() },
                    _ => Command::Expire { id: r.id.clone() },
                };
                tokio::spawn(async move { store.execute(plain(command)).await })
            })
            .collect();
        let mut events = 0;
        for s in settles {
            match s.await.unwrap() {
                Ok(out) => events += out.events,
                Err(e) => assert!(
                    matches!(
                        e,
                        StoreError::Domain(DomainError::ReservationNotActive { .. })
                    ),
                    "{victim}: {e}"
                ),
            }
        }
        assert_eq!(events, lines.len(), "{victim}: each line settles once");
        let after = (
            a.stock_level(&key("dup", "d1")).await.unwrap().unwrap(),
            a.stock_level(&key("dup2", "d1")).await.unwrap().unwrap(),
        );
        assert_eq!(
            (after.0.reserved, after.1.reserved),
            (5, 5),
            "{victim}: only the long-lived reservation still holds stock"
        );
        let moved = |b: &StockLevel, a: &StockLevel| a.version - b.version;
        assert_eq!(
            moved(&before.0, &after.0) + moved(&before.1, &after.1),
            2 * lines.len() as u64,
            "{victim}: a reserve and a settlement per line"
        );
    }
}

/// Multi-line reservations racing for a scarce key, then retried with the same ids (the
/// client retries a refused id after a restock): every line held is owned by exactly one
/// active reservation, so `reserved` always equals what the active reservations hold.
pub(crate) async fn write_store_saga_contract<S: WriteStore>(store: Arc<S>) {
    store.put_location(location("m1", "north")).await.unwrap();
    store.put_location(location("m2", "south")).await.unwrap();
    store
        .execute(plain(adjust(
            "plenty",
            "m1",
            OnHandChange::Delta(100),
            None,
        )))
        .await
        .unwrap();
    store
        .execute(plain(adjust("scarce", "m2", OnHandChange::Delta(2), None)))
        .await
        .unwrap();
    let ids: Vec<String> = (0..12).map(|i| format!("saga-{i}")).collect();
    let attempt = |round: usize| {
        let tasks: Vec<_> = ids
            .iter()
            .map(|id| {
                let (store, id) = (store.clone(), id.clone());
                tokio::spawn(async move {
                    let command = reserve(&id, &[("plenty", "m1", 1), ("scarce", "m2", 1)], 600);
                    let k = format!("{id}-try-{round}");
                    (id, store.execute(keyed(command, &k, &k)).await)
                })
            })
            .collect();
        tasks
    };
    let mut active = std::collections::BTreeSet::new();
    for t in attempt(0) {
        let (id, result) = t.await.unwrap();
        match result {
            Ok(_) => {
                active.insert(id);
            }
            Err(StoreError::Domain(DomainError::InsufficientStock { .. })) => {}
            Err(e) => panic!("{id}: {e}"),
        }
    }
    assert_eq!(active.len(), 2, "two units of the scarce key");
    let held = |s: &str, l: &str| {
        let store = store.clone();
        let k = key(s, l);
        async move { store.stock_level(&k).await.unwrap().unwrap().reserved }
    };
    assert_eq!(
        (held("plenty", "m1").await, held("scarce", "m2").await),
        (2, 2)
    );

    // Restock and retry every refused id with a new key: each now holds both lines.
    store
        .execute(plain(adjust("scarce", "m2", OnHandChange::Delta(20), None)))
        .await
        .unwrap();
    for t in attempt(1) {
        let (id, result) = t.await.unwrap();
        match result {
            Ok(_) => assert!(active.insert(id.clone()), "{id} reserved twice"),
            Err(StoreError::Domain(DomainError::ReservationExists(_))) => {
                assert!(active.contains(&id), "{id} refused as existing");
            }
            Err(e) => panic!("{id}: {e}"),
        }
    }
    assert_eq!(active.len(), 12);
    assert_eq!(
        (held("plenty", "m1").await, held("scarce", "m2").await),
        (12, 12)
    );
    for id in &ids {
        let r = store
            .reservation(&ReservationId::parse(id.as_str()).unwrap())
            .await
            .unwrap()
            .expect("reservation exists");
        assert_eq!((r.status, r.lines.len()), (ReservationStatus::Active, 2));
    }
    // Confirming every one consumes exactly what each held.
    for id in &ids {
        store
            .execute(plain(Command::Confirm {
                id: ReservationId::parse(id.as_str()).unwrap(),
            }))
            .await
            .unwrap();
    }
    let plenty = store
        .stock_level(&key("plenty", "m1"))
        .await
        .unwrap()
        .unwrap();
    let scarce = store
        .stock_level(&key("scarce", "m2"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((plenty.on_hand, plenty.reserved), (88, 0));
    assert_eq!((scarce.on_hand, scarce.reserved), (10, 0));
}

/// A keyed command refused after it ran answers the same refusal to every retry of its
/// key, from any store instance, even once the state would let it succeed; the same
/// command under a new key runs afresh.
pub(crate) async fn write_store_refusal_replay_contract<S: WriteStore>(a: Arc<S>, b: Arc<S>) {
    a.put_location(location("f1", "north")).await.unwrap();
    a.put_location(location("f2", "south")).await.unwrap();
    a.execute(plain(adjust("few", "f1", OnHandChange::Delta(2), None)))
        .await
        .unwrap();
    let confirm_ghost = || Command::Confirm {
        id: ReservationId::parse("ghost").unwrap(),
    };
    let refused: Vec<(&str, Command, &str)> = vec![
        (
            "k-short",
            reserve("short", &[("few", "f1", 5)], 600),
            "insufficient_stock",
        ),
        (
            "k-short-multi",
            reserve("short-multi", &[("few", "f1", 5), ("other", "f2", 1)], 600),
            "insufficient_stock",
        ),
        (
            "k-conflict",
            adjust("few", "f1", OnHandChange::Delta(1), Some(7)),
            "version_conflict",
        ),
        ("k-ghost", confirm_ghost(), "reservation_not_found"),
        (
            "k-nowhere",
            adjust("few", "f3", OnHandChange::Delta(1), None),
            "location_not_found",
        ),
    ];
    for (k, command, code) in &refused {
        let err = a.execute(keyed(command.clone(), k, k)).await.unwrap_err();
        assert_eq!(domain_code(err), *code, "{k}: first answer");
    }

    // Now every one of them could succeed if it ran again.
    a.execute(plain(adjust("few", "f1", OnHandChange::Delta(100), None)))
        .await
        .unwrap();
    a.execute(plain(adjust("other", "f2", OnHandChange::Delta(100), None)))
        .await
        .unwrap();
    a.put_location(location("f3", "north")).await.unwrap();
    a.execute(plain(reserve("ghost", &[("other", "f2", 1)], 600)))
        .await
        .unwrap();
    let before = a.stock_level(&key("few", "f1")).await.unwrap().unwrap();

    // Retries of the same keys, both instances at once: the recorded refusal every time.
    let retries: Vec<_> = refused
        .iter()
        .flat_map(|(k, command, code)| {
            [a.clone(), b.clone(), a.clone(), b.clone()]
                .into_iter()
                .map(move |store| {
                    let (k, command, code) = (k.to_string(), command.clone(), *code);
                    tokio::spawn(async move {
                        let answer = store.execute(keyed(command, &k, &k)).await;
                        (k, code, answer)
                    })
                })
        })
        .collect();
    for retry in retries {
        let (k, code, answer) = retry.await.unwrap();
        match answer {
            Err(err) => assert_eq!(domain_code(err), code, "{k}: retried"),
            Ok(outcome) => panic!("{k}: a retry of a refused command ran again: {outcome:?}"),
        }
    }
    let after = a.stock_level(&key("few", "f1")).await.unwrap().unwrap();
    assert_eq!(after, before, "retries of refused commands changed nothing");
    assert!(
        a.reservation(&ReservationId::parse("short").unwrap())
            .await
            .unwrap()
            .is_none()
    );
    let ghost = a
        .reservation(&ReservationId::parse("ghost").unwrap())
        .await
        .unwrap()
        .expect("ghost exists");
    assert_eq!(ghost.status, ReservationStatus::Active);

    // The key stands for its request: another request under it is refused as reuse.
    let err = a
        .execute(keyed(
            reserve("short", &[("few", "f1", 1)], 600),
            "k-short",
            "another-request",
        ))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::IdempotencyKeyReused),
        "reused key: {err}"
    );

    // Under new keys the same commands run afresh.
    let out = a
        .execute(keyed(
            reserve("short", &[("few", "f1", 5)], 600),
            "k-short-2",
            "k-short-2",
        ))
        .await
        .unwrap();
    assert_eq!(reservation_of(out.result).status, ReservationStatus::Active);
    let out = a
        .execute(keyed(confirm_ghost(), "k-ghost-2", "k-ghost-2"))
        .await
        .unwrap();
    assert_eq!(
        reservation_of(out.result).status,
        ReservationStatus::Confirmed
    );
}

/// Checks that every key's `reserved` equals what the active reservations among `ids` hold
/// there: no hold outlives its reservation, none is missing. `ids` must name every
/// reservation the test made on the store.
pub(crate) async fn assert_holds_match<S: WriteStore + ?Sized>(store: &S, ids: &[&str]) {
    let mut held: BTreeMap<StockKey, i64> = BTreeMap::new();
    for id in ids {
        let id = ReservationId::parse(*id).expect("valid id");
        if let Some(r) = store.reservation(&id).await.expect("read reservation")
            && r.status == ReservationStatus::Active
        {
            for line in &r.lines {
                *held.entry(line.key()).or_default() += line.qty;
            }
        }
    }
    for level in store.all_stock_levels().await.expect("levels") {
        assert_eq!(
            level.reserved,
            held.get(&level.key()).copied().unwrap_or(0),
            "reserved at {}@{} equals what active reservations hold there",
            level.sku,
            level.location
        );
    }
}

/// A store's token (a grant of some locations) changes stock only there, checked where the
/// command is decided: an adjustment or reservation naming another location, and the
/// confirm or release of a reservation held elsewhere (made by another caller), are refused
/// with `location_forbidden` and change nothing; an unknown reservation is still not found;
/// the refusal is not kept under the key, so a caller whose grant was widened runs it.
pub(crate) async fn write_store_location_grant_contract<S: WriteStore + Outbox>(store: Arc<S>) {
    store.put_location(location("g1", "north")).await.unwrap();
    store.put_location(location("g2", "south")).await.unwrap();
    for (s, l) in [("gs", "g1"), ("gs", "g2"), ("gt", "g2")] {
        store
            .execute(plain(adjust(s, l, OnHandChange::Delta(10), None)))
            .await
            .unwrap();
    }
    let store_1 = LocationGrant::only([loc("g1")]);
    let as_grant = |command: Command, k: &str, grant: &LocationGrant| CommandRequest {
        grant: grant.clone(),
        ..keyed(command, k, k)
    };
    // Another caller (a central one) reserves at g2, over both stores, and at g1.
    for (id, lines) in [
        ("central-g2", vec![("gs", "g2", 1)]),
        ("central-both", vec![("gs", "g1", 2), ("gt", "g2", 2)]),
        ("central-g1", vec![("gs", "g1", 1)]),
        ("central-done", vec![("gt", "g2", 1)]),
    ] {
        store
            .execute(keyed(reserve(id, &lines, 600), id, id))
            .await
            .unwrap();
    }
    store
        .execute(plain(Command::Release {
            id: ReservationId::parse("central-done").unwrap(),
        }))
        .await
        .unwrap();
    let levels = store.all_stock_levels().await.unwrap();
    let events = stock_events(&*store).await.len();
    let id = |s: &str| ReservationId::parse(s).unwrap();
    let forbidden_at = |l: &str| DomainError::LocationForbidden { location: loc(l) };
    let refused: Vec<(&str, Command, DomainError)> = vec![
        (
            "adjust-g2",
            adjust("gs", "g2", OnHandChange::Delta(-5), None),
            forbidden_at("g2"),
        ),
        // Whether g9 exists is none of this caller's business.
        (
            "adjust-g9",
            adjust("gs", "g9", OnHandChange::Delta(1), None),
            forbidden_at("g9"),
        ),
        (
            "reserve-g2",
            reserve("store-g2", &[("gs", "g2", 1)], 600),
            forbidden_at("g2"),
        ),
        (
            "reserve-both",
            reserve("store-both", &[("gs", "g1", 1), ("gt", "g2", 1)], 600),
            forbidden_at("g2"),
        ),
        // Forbidden before `reservation_exists` and `insufficient_stock`.
        (
            "reserve-taken",
            reserve("central-g2", &[("gs", "g2", 500)], 600),
            forbidden_at("g2"),
        ),
        (
            "confirm-g2",
            Command::Confirm {
                id: id("central-g2"),
            },
            forbidden_at("g2"),
        ),
        (
            "release-g2",
            Command::Release {
                id: id("central-g2"),
            },
            forbidden_at("g2"),
        ),
        // Allowed at one of its lines only: the whole reservation is refused.
        (
            "confirm-both",
            Command::Confirm {
                id: id("central-both"),
            },
            forbidden_at("g2"),
        ),
        (
            "release-both",
            Command::Release {
                id: id("central-both"),
            },
            forbidden_at("g2"),
        ),
        // Forbidden before `reservation_not_active`: its status is not told either.
        (
            "release-done",
            Command::Release {
                id: id("central-done"),
            },
            forbidden_at("g2"),
        ),
    ];
    for (k, command, refusal) in &refused {
        let err = store
            .execute(as_grant(command.clone(), k, &store_1))
            .await
            .unwrap_err();
        match err {
            StoreError::Domain(e) => assert_eq!(&e, refusal, "{k}"),
            other => panic!("{k}: {other}"),
        }
    }
    assert_eq!(
        store.all_stock_levels().await.unwrap(),
        levels,
        "a refused command changes no level, no version"
    );
    assert_eq!(
        stock_events(&*store).await.len(),
        events,
        "a refused command yields no event"
    );
    for (r, status) in [
        ("central-g2", ReservationStatus::Active),
        ("central-both", ReservationStatus::Active),
        ("central-done", ReservationStatus::Released),
    ] {
        let found = store.reservation(&id(r)).await.unwrap().expect(r);
        assert_eq!(found.status, status, "{r}");
    }
    for r in ["store-g2", "store-both"] {
        assert!(store.reservation(&id(r)).await.unwrap().is_none(), "{r}");
    }

    // An unknown reservation is not found, for this caller as for any other.
    for command in [
        Command::Confirm { id: id("ghost") },
        Command::Release { id: id("ghost") },
    ] {
        let err = store
            .execute(as_grant(command, "ghost", &store_1))
            .await
            .unwrap_err();
        assert_eq!(domain_code(err), "reservation_not_found");
    }

    // At its own locations the store acts as anyone: its own reservation, and another
    // caller's held at g1.
    store
        .execute(as_grant(
            reserve("store-g1", &[("gs", "g1", 3)], 600),
            "store-g1",
            &store_1,
        ))
        .await
        .unwrap();
    let out = store
        .execute(as_grant(
            Command::Confirm {
                id: id("central-g1"),
            },
            "confirm-g1",
            &store_1,
        ))
        .await
        .unwrap();
    assert_eq!(
        reservation_of(out.result).status,
        ReservationStatus::Confirmed
    );
    let out = store
        .execute(as_grant(
            adjust("gs", "g1", OnHandChange::Delta(1), None),
            "adjust-g1",
            &store_1,
        ))
        .await
        .unwrap();
    assert_eq!(out.events, 1);

    // The refusal was not kept: the same keys from the caller once its grant covers both
    // stores run (and apply once).
    let both = LocationGrant::only([loc("g1"), loc("g2")]);
    for k in ["release-both", "adjust-g2"] {
        let (_, command, _) = refused.iter().find(|(r, ..)| *r == k).expect(k);
        let first = store
            .execute(as_grant(command.clone(), k, &both))
            .await
            .unwrap();
        assert!(!first.replayed && first.events > 0, "{k} ran");
        let again = store
            .execute(as_grant(command.clone(), k, &both))
            .await
            .unwrap();
        assert!(again.replayed, "{k} is kept once it ran");
    }
    assert_eq!(
        store
            .reservation(&id("central-both"))
            .await
            .unwrap()
            .expect("central-both")
            .status,
        ReservationStatus::Released
    );
    assert_holds_match(
        &*store,
        &[
            "central-g2",
            "central-both",
            "central-g1",
            "central-done",
            "store-g1",
        ],
    )
    .await;
}

fn stock_event(
    s: &str,
    l: &str,
    region: &str,
    version: u64,
    on_hand: i64,
    reserved: i64,
) -> BusEvent {
    BusEvent::Stock(StockEvent {
        event_id: format!("{s}/{l}/{version}"),
        kind: EventKind::StockAdjusted,
        region: Region::parse(region).unwrap(),
        sku: sku(s),
        location: loc(l),
        version,
        on_hand,
        reserved,
        reservation_id: None,
        reason: Some(AdjustReason::Receipt),
        reference: None,
        idempotency_key: None,
        actor: None,
        occurred_at_ms: EventMeta::default().occurred_at_ms + i64::try_from(version).unwrap(),
        trace_context: None,
    })
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
    let all = read.availability("a", None).await.unwrap();
    let north = all.iter().find(|r| r.region == "north").unwrap();
    assert_eq!(
        (
            north.on_hand,
            north.reserved,
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
        BusEvent::Catalog(_) => unreachable!(),
    };
    audited.actor = Some(stockflow_domain::Actor {
        subject: "store-7-pos".into(),
        client_id: Some("pos".into()),
    });
    audited.idempotency_key = Some("0123abcd~till-42".into());
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
    .collect::<std::result::Result<Vec<()>, StoreError>>()
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

    // An event that breaks the invariant is refused, not stored.
    let bad = stock_event("a", "s1", "north", 9, 1, 5);
    assert!(read.project(batch("c", 0, &[bad], 1)).await.is_err());
    assert_eq!(read.stock_at("a", "s1").await.unwrap().unwrap().version, 3);
    assert_eq!(
        read.offset("c", 0).await.unwrap(),
        0,
        "a failed batch stores no offset"
    );
}
